/* Address book loader on arbitrary file contents. A loaded book must pass
 * every internal invariant (tm2__addrbook_check), then it is saved to text
 * and loaded again: the second book must hold the same entries in the same
 * tables and buckets, be clean, and encode to the same bytes. Then the book
 * is driven a little (selection, dial record and connection marks, the
 * collision set, expire, add), a day later too: gossip never removes an
 * entry of the tried table that is not terrible, and a turned-away address
 * leaves the book as it was. */
#include <stdlib.h>
#include <string.h>

#include "discovery/addrbook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define NOW 1767225600
/* Small, so the bound, full buckets and collisions are reached. */
#define MAX 16

static const uint8_t KEY[TM2__ADDRBOOK_KEY_LEN] = {7, 1, 7, 1, 7, 1, 7, 1, 9};

static bool skip_odd(const tm2__addrbook_entry *e, void *user)
{
    (void)user;
    return (e->addr.id.s[39] & 1) != 0;
}

static void check_book(const tm2__addrbook *b, int64_t now)
{
    CHECK(tm2__addrbook_check(b) == 0);
    CHECK(tm2__addrbook_size(b) <= MAX);
    CHECK(tm2__addrbook_new_count(b) + tm2__addrbook_tried_count(b) == tm2__addrbook_size(b));
    for (size_t i = 0; i < tm2__addrbook_size(b); i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_at(b, i);
        CHECK(e != NULL);
        CHECK(tm2_netaddr_validate(&e->addr) == 0);
        CHECK(e->last_seen >= 0 && e->last_seen <= now);
        CHECK(e->last_attempt >= 0 && e->last_attempt <= now);
        CHECK(e->last_connected >= 0 && e->last_connected <= now);
        CHECK(tm2__addrbook_find(b, &e->addr.id) == e);
    }
}

static void same_entry(const tm2__addrbook_entry *x, const tm2__addrbook_entry *y)
{
    CHECK(y != NULL);
    CHECK(tm2_netaddr_equal(&x->addr, &y->addr));
    CHECK(x->last_seen == y->last_seen && x->attempts == y->attempts &&
          x->last_attempt == y->last_attempt && x->last_connected == y->last_connected);
    CHECK(x->tried == y->tried && x->refs == y->refs);
    CHECK(memcmp(x->buckets, y->buckets, sizeof x->buckets) == 0);
    CHECK(x->has_src == y->has_src && memcmp(x->src, y->src, sizeof x->src) == 0);
}

/* IDs no input names (from fixed key seeds), computed once. */
static tm2_id fresh_id(unsigned i)
{
    static tm2_id ids[8];
    static bool ready;
    if (!ready) {
        for (unsigned k = 0; k < 8; k++) {
            uint8_t seed[32] = {0};
            seed[0] = (uint8_t)k;
            seed[1] = 0xa7;
            tm2_node_key key;
            tm2_node_key_from_seed(&key, seed);
            tm2_node_key_id(&key, &ids[k]);
            tm2_node_key_wipe(&key);
        }
        ready = true;
    }
    return ids[i & 7];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 20)
        return 0;
    /* A private copy, so reads past the end hit the allocator's redzone. */
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);

    tm2_id self;
    memset(&self, 0, sizeof self);
    memcpy(self.s, "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl", TM2_ID_LEN);
    /* Half the inputs with the default shape for MAX (4 tried buckets of
     * 32), half with tiny buckets: collisions and full buckets. */
    bool tiny = size && (data[size - 1] & 1);
    tm2__addrbook_config cfg = {.max_entries = MAX, .key = KEY, .seed = 3};
    if (tiny) {
        cfg.new_buckets = 4;
        cfg.tried_buckets = 2;
        cfg.bucket_size = 2;
    }
    tm2__addrbook *b = NULL;
    CHECK(tm2__addrbook_new(&self, &cfg, &b) == 0);

    char why[256];
    int n = tm2__addrbook_load_buffer(b, copy, size, NOW, why, sizeof why);
    CHECK(strlen(why) < sizeof why);
    CHECK(n >= 0 || n == TM2_EDECODE || n == TM2_ENOMEM);
    if (n < 0) {
        CHECK(tm2__addrbook_size(b) == 0);
    } else {
        CHECK((size_t)n == tm2__addrbook_size(b));
        check_book(b, NOW);
        CHECK(tm2__addrbook_find(b, &self) == NULL);

        char *text;
        size_t len;
        CHECK(tm2__addrbook_encode(b, &text, &len, NULL) == 0);
        CHECK(strlen(text) == len && len <= TM2__ADDRBOOK_FILE_MAX);
        tm2__addrbook *c = NULL;
        tm2__addrbook_config cfg2 = cfg;
        cfg2.key = NULL;   /* the file's key must win */
        CHECK(tm2__addrbook_new(&self, &cfg2, &c) == 0);
        CHECK(tm2__addrbook_load_buffer(c, text, len, NOW, NULL, 0) == n);
        CHECK(!tm2__addrbook_dirty(c));
        CHECK(memcmp(tm2__addrbook_key(b), tm2__addrbook_key(c), TM2__ADDRBOOK_KEY_LEN) == 0);
        CHECK(tm2__addrbook_check(c) == 0);
        for (size_t i = 0; i < (size_t)n; i++) {
            const tm2__addrbook_entry *x = tm2__addrbook_at(b, i);
            same_entry(x, tm2__addrbook_find(c, &x->addr.id));
        }
        char *text2;
        size_t len2;
        CHECK(tm2__addrbook_encode(c, &text2, &len2, NULL) == 0);
        CHECK(len2 == len && memcmp(text, text2, len) == 0);
        free(text2);
        free(text);
        tm2__addrbook_free(c);
    }

    /* Drive it: every selected entry is in the book, past its back-off and
     * not skipped, and none twice. */
    int64_t now = NOW + (size ? (int64_t)data[0] * 1000 : 0);
    tm2_netaddr out[MAX];
    size_t k = tm2__addrbook_select(b, now, skip_odd, NULL, out, MAX);
    CHECK(k <= tm2__addrbook_size(b));
    for (size_t i = 0; i < k; i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_find(b, &out[i].id);
        CHECK(e != NULL && !skip_odd(e, NULL));
        CHECK(tm2__addrbook_retry_at(b, e) <= now);
        for (size_t j = 0; j < i; j++)
            CHECK(!tm2_netaddr_equal(&out[i], &out[j]));
    }
    for (size_t i = 0; i < k; i++) {
        CHECK(tm2__addrbook_mark_attempt(b, &out[i].id, now) == 0);
        if (i & 1) {
            CHECK(tm2__addrbook_mark_failure(b, &out[i].id, now) == 0);
        } else {
            CHECK(tm2__addrbook_mark_connected(b, &out[i], now) == 0);
            const tm2__addrbook_entry *e = tm2__addrbook_find(b, &out[i].id);
            CHECK(tm2__addrbook_connected(e, now) && e->attempts == 0);
            /* Tried, or waiting for a tried place. */
            CHECK(e->tried || tm2__addrbook_collisions(b) > 0);
        }
        check_book(b, now);
    }
    size_t tests = tm2__addrbook_collision_tests(b, now, NULL, NULL, out, MAX);
    for (size_t i = 0; i < tests; i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_find(b, &out[i].id);
        CHECK(e != NULL && e->tried);
        tm2__addrbook_mark_failure(b, &out[i].id, now + 1);
    }
    tm2__addrbook_resolve(b, now + 2);
    check_book(b, now + 2);
    tm2__addrbook_expire(b, now + TM2__ADDRBOOK_DEAD_AFTER);
    check_book(b, now + 2);
    /* Re-adding what is there never grows the book past its bound. */
    for (size_t i = 0; i < tm2__addrbook_size(b) && i < 4; i++) {
        tm2_netaddr a = tm2__addrbook_at(b, i)->addr;
        int rc = tm2__addrbook_add(b, &a, NULL, now + 3);
        CHECK(rc == TM2__AB_REFRESHED);
    }
    CHECK(tm2__addrbook_size(b) <= MAX);

    /* New addresses, now and a day later: gossip never takes a tried entry
     * that is not terrible, and a refused one changes nothing. */
    for (int round = 0; round < 2; round++) {
        int64_t t = now + 4 + (round ? TM2__ADDRBOOK_CONNECTED_TTL : 0);
        for (unsigned j = 0; j < 4; j++) {
            tm2_netaddr a;
            memset(&a, 0, sizeof a);
            a.id = fresh_id(j + 4 * (unsigned)round);
            a.ip[10] = a.ip[11] = 0xff;
            a.ip[12] = 127;
            a.ip[15] = (uint8_t)(j + 1);
            a.port = 26656;
            tm2_netaddr src = a;
            src.ip[13] = (uint8_t)(size ? data[j % size] : 0);
            if (tm2__addrbook_find(b, &a.id))
                continue;
            size_t before = tm2__addrbook_size(b), kept = 0;
            tm2_id keep[MAX];
            for (size_t i = 0; i < before; i++) {
                const tm2__addrbook_entry *e = tm2__addrbook_at(b, i);
                if (e->tried && !tm2__addrbook_terrible(e, t))
                    keep[kept++] = e->addr.id;
            }
            uint64_t gen = tm2__addrbook_gen(b);
            int rc = tm2__addrbook_add(b, &a, &src, t);
            if (rc == TM2_EFULL) {
                CHECK(tm2__addrbook_size(b) == before && tm2__addrbook_gen(b) == gen);
            } else {
                CHECK(rc == TM2__AB_ADDED);
                CHECK(tm2__addrbook_size(b) <= before + 1 && tm2__addrbook_size(b) <= MAX);
                CHECK(tm2__addrbook_find(b, &a.id) != NULL);
            }
            for (size_t i = 0; i < kept; i++) {
                const tm2__addrbook_entry *e = tm2__addrbook_find(b, &keep[i]);
                CHECK(e != NULL && e->tried);
            }
        }
        check_book(b, t);
    }
    tm2__addrbook_free(b);
    free(copy);
    return 0;
}
