/* The address book's tables driven by a sequence of operations read from
 * the input: add (addresses and sources from small pools spanning loopback,
 * benchmarking, private, IPv6 and refused ranges), mark attempt / failure /
 * connected (at the known address or another), select, sample, settle and
 * test collisions, expire, remove, time steps, and a save/load round trip.
 * The first bytes choose the tables' shape (tiny buckets reach full buckets,
 * collisions and the bound quickly).
 *
 * After every operation: tm2__addrbook_check (each entry in one table, no
 * duplicates in a bucket, references and counts consistent, buckets within
 * their size, the ID index whole), size within max_entries. Per operation:
 * a refused add changes nothing; an add never removes a tried entry that is
 * not terrible (but the one re-addressed); select and sample answer entries
 * of the book, each once, within max, not skipped (select: past back-off;
 * sample: not terrible); collision tests name tried entries; a round trip
 * through the file keeps every entry and its tables. */
#include <stdlib.h>
#include <string.h>

#include "discovery/addrbook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define T0 1767225600
#define N_IDS 48
#define MAX_OUT 16

static const uint8_t KEY[TM2__ADDRBOOK_KEY_LEN] = {0x33, 0x44, 0x55};

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t take(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static const tm2_id *id_of(unsigned i)
{
    static tm2_id ids[N_IDS];
    static bool ready;
    if (!ready) {
        for (unsigned k = 0; k < N_IDS; k++) {
            uint8_t seed[32] = {0};
            seed[0] = (uint8_t)k;
            seed[1] = 0x5e;
            tm2_node_key key;
            tm2_node_key_from_seed(&key, seed);
            tm2_node_key_id(&key, &ids[k]);
            tm2_node_key_wipe(&key);
        }
        ready = true;
    }
    return &ids[i % N_IDS];
}

static void set_v4(tm2_netaddr *a, uint8_t x, uint8_t y, uint8_t z, uint8_t w)
{
    memset(a->ip, 0, 10);
    a->ip[10] = a->ip[11] = 0xff;
    a->ip[12] = x;
    a->ip[13] = y;
    a->ip[14] = z;
    a->ip[15] = w;
}

/* An IP from two bytes: kind in the high bits of k. Never dialled. */
static void pick_ip(tm2_netaddr *a, uint8_t k, uint8_t v)
{
    switch (k >> 5) {
    case 0: set_v4(a, 127, 0, k & 3, v & 7); break;                   /* loopback */
    case 1: set_v4(a, 198, 18 + (k & 1), v & 3, (uint8_t)(k & 7)); break; /* 198.18.0.0/15 */
    case 2: set_v4(a, 198, 18, 5, v); break;                          /* one /24 */
    case 3:                                                           /* unique local */
        memset(a->ip, 0, 16);
        a->ip[0] = 0xfd;
        a->ip[15] = v & 15;
        break;
    case 4:                                                           /* IPv6 doc: refused */
        memset(a->ip, 0, 16);
        a->ip[0] = 0x20;
        a->ip[1] = 0x01;
        a->ip[2] = 0x0d;
        a->ip[3] = 0xb8;
        a->ip[15] = v;
        break;
    case 5: memset(a->ip, 0, 16); break;                              /* unspecified */
    case 6: memset(a->ip, 0, 16); a->ip[15] = 1; break;               /* ::1 */
    default: set_v4(a, 255, 255, 255, 255); break;                    /* broadcast: refused */
    }
}

static tm2_netaddr make_addr(reader *r)
{
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    a.id = *id_of(take(r));
    uint8_t k = take(r), v = take(r);
    pick_ip(&a, k, v);
    a.port = (uint16_t)(26656 + (v >> 4));
    return a;
}

static bool skip_some(const tm2__addrbook_entry *e, void *user)
{
    const uint8_t *mask = user;
    return (e->addr.id.s[38] & *mask) != 0;
}

static void check(const tm2__addrbook *b, size_t max)
{
    CHECK(tm2__addrbook_check(b) == 0);
    CHECK(tm2__addrbook_size(b) <= max);
    CHECK(tm2__addrbook_new_count(b) + tm2__addrbook_tried_count(b) == tm2__addrbook_size(b));
    CHECK(tm2__addrbook_collisions(b) <= TM2__ADDRBOOK_COLLISIONS);
}

static void check_out(const tm2__addrbook *b, const tm2_netaddr *out, size_t k, size_t max)
{
    CHECK(k <= max);
    for (size_t i = 0; i < k; i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_find(b, &out[i].id);
        CHECK(e != NULL && tm2_netaddr_equal(&e->addr, &out[i]));
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(out[i].id.s, out[j].id.s) != 0);
    }
}

static tm2__addrbook *round_trip(tm2__addrbook *b, const tm2__addrbook_config *cfg, int64_t now)
{
    char *text;
    size_t len;
    CHECK(tm2__addrbook_encode(b, &text, &len, NULL) == 0);
    CHECK(len <= TM2__ADDRBOOK_FILE_MAX);
    tm2__addrbook *c = NULL;
    CHECK(tm2__addrbook_new(NULL, cfg, &c) == 0);
    /* Times are clamped to the load time: load at or after every mark. */
    int rc = tm2__addrbook_load_buffer(c, text, len, now, NULL, 0);
    CHECK(rc >= 0 && (size_t)rc == tm2__addrbook_size(b));
    CHECK(!tm2__addrbook_dirty(c));
    for (size_t i = 0; i < tm2__addrbook_size(b); i++) {
        const tm2__addrbook_entry *x = tm2__addrbook_at(b, i);
        const tm2__addrbook_entry *y = tm2__addrbook_find(c, &x->addr.id);
        CHECK(y != NULL && tm2_netaddr_equal(&x->addr, &y->addr));
        CHECK(x->tried == y->tried && x->refs == y->refs);
        CHECK(memcmp(x->buckets, y->buckets, sizeof x->buckets) == 0);
        CHECK(x->has_src == y->has_src && memcmp(x->src, y->src, 16) == 0);
        CHECK(x->last_seen == y->last_seen && x->attempts == y->attempts &&
              x->last_attempt == y->last_attempt && x->last_connected == y->last_connected);
    }
    free(text);
    tm2__addrbook_free(b);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    reader r = {data, size};
    uint8_t g0 = take(&r), g1 = take(&r);
    tm2__addrbook_config cfg = {
        .max_entries = 1 + (g0 & 63),
        .new_buckets = 1 + (g1 & 15),
        .tried_buckets = 1 + ((g1 >> 4) & 7),
        .bucket_size = 1 + ((g0 >> 6) | ((g1 >> 7) << 2)),
        .key = KEY,
        .seed = 1 + take(&r),
    };
    tm2__addrbook *b = NULL;
    CHECK(tm2__addrbook_new(NULL, &cfg, &b) == 0);
    int64_t now = T0;

    while (r.n > 0) {
        uint8_t op = take(&r);
        switch (op % 13) {
        case 0:
        case 1: {   /* add */
            tm2_netaddr a = make_addr(&r);
            uint8_t sk = take(&r), sv = take(&r);
            tm2_netaddr src;
            memset(&src, 0, sizeof src);
            pick_ip(&src, sk, sv);
            const tm2_netaddr *sp = op & 16 ? NULL : &src;
            size_t before = tm2__addrbook_size(b), kept = 0;
            tm2_id keep[64];
            for (size_t i = 0; i < before; i++) {
                const tm2__addrbook_entry *e = tm2__addrbook_at(b, i);
                if (e->tried && !tm2__addrbook_terrible(e, now) && strcmp(e->addr.id.s, a.id.s))
                    keep[kept++] = e->addr.id;
            }
            uint64_t gen = tm2__addrbook_gen(b);
            int rc = tm2__addrbook_add(b, &a, sp, now);
            if (rc < 0) {
                CHECK(tm2__addrbook_size(b) == before && tm2__addrbook_gen(b) == gen);
                CHECK(rc == TM2_EFULL || tm2_netaddr_validate(&a) != 0);
            } else {
                CHECK(rc >= TM2__AB_ADDED && rc <= TM2__AB_KEPT);
                const tm2__addrbook_entry *e = tm2__addrbook_find(b, &a.id);
                CHECK(e != NULL);
                if (rc != TM2__AB_KEPT)
                    CHECK(tm2_netaddr_equal(&e->addr, &a));
                CHECK(tm2__addrbook_size(b) <= before + (rc == TM2__AB_ADDED));
            }
            for (size_t i = 0; i < kept; i++) {
                const tm2__addrbook_entry *e = tm2__addrbook_find(b, &keep[i]);
                CHECK(e != NULL && e->tried);
            }
            break;
        }
        case 2:
            tm2__addrbook_mark_attempt(b, id_of(take(&r)), now);
            break;
        case 3: {
            const tm2_id *id = id_of(take(&r));
            bool known = tm2__addrbook_find(b, id) != NULL;
            CHECK((tm2__addrbook_mark_failure(b, id, now) == 0) == known);
            break;
        }
        case 4: {   /* connected: at the known address, or the one read */
            tm2_netaddr a = make_addr(&r);
            const tm2__addrbook_entry *e = tm2__addrbook_find(b, &a.id);
            if (e && (op & 32))
                a = e->addr;
            int rc = tm2__addrbook_mark_connected(b, &a, now);
            if (!e) {
                CHECK(rc == TM2_ENOTFOUND);
            } else if (rc == 0) {
                e = tm2__addrbook_find(b, &a.id);
                CHECK(e && tm2_netaddr_equal(&e->addr, &a) && e->attempts == 0 &&
                      e->last_connected == now);
                CHECK(e->tried || tm2__addrbook_collisions(b) > 0);
            } else {
                CHECK(rc == TM2_EINVAL || rc == TM2_EFULL);
                if (rc == TM2_EFULL)
                    CHECK(tm2__addrbook_find(b, &a.id) == NULL);
            }
            break;
        }
        case 5: {   /* select */
            uint8_t mask = take(&r) & 3;
            size_t max = take(&r) % MAX_OUT;
            tm2_netaddr out[MAX_OUT];
            size_t k = tm2__addrbook_select(b, now, skip_some, &mask, out, max);
            check_out(b, out, k, max);
            for (size_t i = 0; i < k; i++) {
                const tm2__addrbook_entry *e = tm2__addrbook_find(b, &out[i].id);
                CHECK(!skip_some(e, &mask) && tm2__addrbook_retry_at(b, e) <= now);
            }
            break;
        }
        case 6: {   /* sample */
            uint8_t mask = take(&r) & 3;
            size_t max = take(&r) % MAX_OUT;
            tm2_netaddr out[MAX_OUT];
            size_t k = tm2__addrbook_sample(b, now, skip_some, &mask, out, max);
            check_out(b, out, k, max);
            for (size_t i = 0; i < k; i++) {
                const tm2__addrbook_entry *e = tm2__addrbook_find(b, &out[i].id);
                CHECK(!skip_some(e, &mask) && !tm2__addrbook_terrible(e, now));
            }
            break;
        }
        case 7: {
            size_t before = tm2__addrbook_collisions(b);
            size_t done = tm2__addrbook_resolve(b, now);
            CHECK(tm2__addrbook_collisions(b) + done == before);
            break;
        }
        case 8: {
            tm2_netaddr out[MAX_OUT];
            size_t k = tm2__addrbook_collision_tests(b, now, NULL, NULL, out, MAX_OUT);
            check_out(b, out, k, MAX_OUT);
            for (size_t i = 0; i < k; i++)
                CHECK(tm2__addrbook_find(b, &out[i].id)->tried);
            break;
        }
        case 9:
            tm2__addrbook_expire(b, now);
            break;
        case 10: {
            const tm2_id *id = id_of(take(&r));
            bool known = tm2__addrbook_find(b, id) != NULL;
            CHECK((tm2__addrbook_remove(b, id) == 0) == known);
            CHECK(tm2__addrbook_find(b, id) == NULL);
            break;
        }
        case 11: {   /* time: seconds to weeks */
            uint8_t s = take(&r);
            static const int64_t unit[4] = {1, 60, 3600, 24 * 3600};
            now += (int64_t)(s & 63) * unit[s >> 6];
            break;
        }
        default:
            b = round_trip(b, &cfg, now);
            break;
        }
        check(b, cfg.max_entries);
    }
    tm2__addrbook_free(b);
    return 0;
}
