/* The accept-rate token buckets (switch/ratelimit.h) driven by a sequence of
 * operations read from the input: take or peek a token for an address from
 * a small pool (public IPv4 in two /24s and two /16s, IPv6 in two /48s,
 * loopback, private, benchmarking, IPv4-mapped IPv6, unique local), grouped
 * by IP or by subnet, local addresses as one group or not, and time steps
 * from a millisecond to an hour. The first bytes choose the table's size
 * (1 to 64 entries: full sets and evictions come quickly), the rate (0: no
 * limit) and the burst (0: refuse everything).
 *
 * Checked after every operation: every used entry holds at most burst
 * tokens (units never above burst * 60000, so never wrapped below zero) and
 * its last refill is not in the future; the table has the size init
 * promised (a power of two of sets, at least `entries`, less than twice it
 * plus a set) and no key twice; entries once used stay used; the evicted
 * counter grows by at most one a take, and only when the key was new and
 * its set full. Per operation, against a model of the bucket kept for each
 * key while it stays in the table (a key pushed out starts again full):
 * peek answers what take then does; take's answer and the bucket after it
 * match the model exactly; a rate of 0 admits everything and stores
 * nothing; a burst of 0 refuses everything and stores nothing. */
#include <stdlib.h>
#include <string.h>

#include "switch/ratelimit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define UNIT 60000u
#define N_ADDRS 16
#define N_KEYS (N_ADDRS * 4)

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

static void set_v4(tm2_netaddr *a, uint8_t x, uint8_t y, uint8_t z, uint8_t w)
{
    memset(a->ip, 0, 10);
    a->ip[10] = a->ip[11] = 0xff;
    a->ip[12] = x;
    a->ip[13] = y;
    a->ip[14] = z;
    a->ip[15] = w;
}

static void set_v6(tm2_netaddr *a, uint16_t p0, uint16_t p1, uint16_t p2, uint8_t last)
{
    memset(a->ip, 0, 16);
    a->ip[0] = (uint8_t)(p0 >> 8);
    a->ip[1] = (uint8_t)p0;
    a->ip[2] = (uint8_t)(p1 >> 8);
    a->ip[3] = (uint8_t)p1;
    a->ip[4] = (uint8_t)(p2 >> 8);
    a->ip[5] = (uint8_t)p2;
    a->ip[15] = last;
}

/* The pool: several addresses per /24, /48 and local kind. */
static tm2_netaddr pool_addr(unsigned i)
{
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    a.port = 26656;
    switch (i % N_ADDRS) {
    case 0: set_v4(&a, 8, 8, 8, 8); break;
    case 1: set_v4(&a, 8, 8, 8, 9); break;          /* same /24 */
    case 2: set_v4(&a, 8, 8, 9, 1); break;          /* same /16, other /24 */
    case 3: set_v4(&a, 93, 184, 216, 34); break;
    case 4: set_v6(&a, 0x2a01, 0x4f8, 0x10, 1); break;
    case 5: set_v6(&a, 0x2a01, 0x4f8, 0x10, 2); break;   /* same /48 */
    case 6: set_v6(&a, 0x2a01, 0x4f8, 0x11, 1); break;   /* other /48 */
    case 7: set_v4(&a, 127, 0, 0, 1); break;
    case 8: set_v4(&a, 127, 0, 0, 2); break;
    case 9: set_v4(&a, 10, 1, 2, 3); break;
    case 10: set_v4(&a, 192, 168, 1, 1); break;
    case 11: set_v4(&a, 198, 18, 0, 7); break;
    case 12: set_v4(&a, 100, 64, 0, 1); break;
    case 13: set_v6(&a, 0, 0, 0, 1); break;                /* ::1 */
    case 14: set_v6(&a, 0xfd00, 0, 0, 5); break;           /* unique local */
    default:                                               /* 2a01:… /48 of case 4, its own IP */
        set_v6(&a, 0x2a01, 0x4f8, 0x10, 0x77);
        break;
    }
    return a;
}

/* The model: each key's bucket while it is in the table. */
typedef struct model {
    tm2__group_key key;
    bool in;
    uint64_t units, last_ms;
} model;

static model *model_of(model *m, size_t *n, const tm2__group_key *k)
{
    for (size_t i = 0; i < *n; i++)
        if (tm2__group_eq(&m[i].key, k))
            return &m[i];
    CHECK(*n < N_KEYS);
    m[*n].key = *k;
    m[*n].in = false;
    return &m[(*n)++];
}

static uint64_t model_level(const model *e, uint64_t now, uint32_t per_min, uint32_t burst)
{
    uint64_t full = (uint64_t)burst * UNIT;
    if (!e->in)
        return full;
    uint64_t dt = now > e->last_ms ? now - e->last_ms : 0;
    /* Saturating: dt * per_min may be huge over an hour of steps. */
    if (dt > full)
        return full;
    uint64_t m = e->units + dt * per_min;
    return m > full ? full : m;
}

static const tm2__rate_entry *entry_of(const tm2__rate_table *t, const tm2__group_key *k)
{
    const tm2__rate_entry *hit = NULL;
    for (size_t i = 0; i < t->n_sets * TM2__RATE_WAYS; i++)
        if (t->e[i].used && tm2__group_eq(&t->e[i].key, k)) {
            CHECK(hit == NULL);
            hit = &t->e[i];
        }
    return hit;
}

static size_t used_count(const tm2__rate_table *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_sets * TM2__RATE_WAYS; i++)
        n += t->e[i].used;
    return n;
}

static void check_table(const tm2__rate_table *t, size_t entries, uint64_t now, uint32_t burst)
{
    size_t slots = t->n_sets * TM2__RATE_WAYS;
    CHECK(t->n_sets > 0 && (t->n_sets & (t->n_sets - 1)) == 0);
    CHECK(slots >= entries && slots < 2 * entries + TM2__RATE_WAYS);
    for (size_t i = 0; i < slots; i++) {
        const tm2__rate_entry *e = &t->e[i];
        if (!e->used)
            continue;
        CHECK(e->units <= (uint64_t)burst * UNIT);
        CHECK(e->last_ms <= now);
        for (size_t j = i + 1; j < slots; j++)
            CHECK(!t->e[j].used || !tm2__group_eq(&t->e[j].key, &e->key));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    reader r = {data, size};
    uint8_t g0 = take(&r), g1 = take(&r), g2 = take(&r);
    size_t entries = 1 + (g0 & 63);
    /* Rates from 0 (no limit) through 1 a minute to 60000 a minute. */
    static const uint32_t rates[8] = {0, 1, 2, 7, 60, 600, 6000, 60000};
    uint32_t per_min = (g1 & 0x80) ? rates[g1 & 7] : (uint32_t)(g1 & 0x7f);
    uint32_t burst = g2 & 15;
    if (g2 & 0x80)
        burst = UINT32_MAX >> (g2 & 7);     /* huge bursts: no overflow */
    tm2__rate_table t;
    CHECK(tm2__rate_init(&t, entries, NULL) == 0);
    model m[N_KEYS];
    size_t nm = 0;
    uint64_t now = (uint64_t)take(&r) << 20;     /* the loop clock starts anywhere */

    while (r.n > 0) {
        uint8_t op = take(&r);
        switch (op & 3) {
        case 0: {   /* time: 1 ms .. an hour */
            uint8_t s = take(&r);
            static const uint64_t unit[4] = {1, 100, 10000, 1000000};
            now += (uint64_t)(s & 63) * unit[s >> 6];
            break;
        }
        default: {  /* take (1, 2) or peek alone (3) */
            tm2_netaddr a = pool_addr(take(&r));
            tm2__group_key k;
            tm2__group_key_of(&a, (op & 4) ? TM2__BY_SUBNET : TM2__BY_IP, (op & 8) != 0, &k);
            model *e = model_of(m, &nm, &k);
            /* The model forgets what the table pushed out. */
            const tm2__rate_entry *te = entry_of(&t, &k);
            if (!te)
                e->in = false;
            else
                CHECK(e->in && te->units == e->units && te->last_ms == e->last_ms);
            bool peek = tm2__rate_peek(&t, &k, now, per_min, burst);
            uint64_t lvl = model_level(e, now, per_min, burst);
            bool want = per_min == 0 || (burst > 0 && lvl >= UNIT);
            CHECK(peek == want);
            if ((op & 3) == 3)
                break;
            size_t used = used_count(&t);
            uint64_t evicted = t.evicted;
            bool got = tm2__rate_take(&t, &k, now, per_min, burst);
            CHECK(got == peek);
            te = entry_of(&t, &k);
            if (per_min == 0 || burst == 0) {
                CHECK(used_count(&t) == used && t.evicted == evicted);
                CHECK((te != NULL) == e->in);
                break;
            }
            CHECK(te != NULL);
            e->in = true;
            e->units = got ? lvl - UNIT : lvl;
            e->last_ms = now;
            CHECK(te->units == e->units && te->last_ms == e->last_ms);
            CHECK(used_count(&t) >= used && used_count(&t) <= used + 1);
            CHECK(t.evicted == evicted || t.evicted == evicted + 1);
            if (t.evicted != evicted)
                CHECK(used_count(&t) == used);
            break;
        }
        }
        check_table(&t, entries, now, burst);
        /* Keys the table dropped are out of the model too. */
        for (size_t i = 0; i < nm; i++)
            if (m[i].in && !entry_of(&t, &m[i].key))
                m[i].in = false;
    }
    tm2__rate_free(&t);
    return 0;
}
