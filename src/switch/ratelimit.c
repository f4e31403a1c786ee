/* Token buckets in a fixed-size set-associative table (switch/ratelimit.h). */
#include "switch/ratelimit.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tm2p2p/error.h"

int tm2__rate_init(tm2__rate_table *t, size_t entries, const uint8_t key[16])
{
    memset(t, 0, sizeof *t);
    if (!entries || entries > ((size_t)1 << 30))
        return TM2_EINVAL;
    size_t sets = 1;
    while (sets * TM2__RATE_WAYS < entries)
        sets *= 2;
    t->e = calloc(sets * TM2__RATE_WAYS, sizeof *t->e);
    if (!t->e)
        return TM2_ENOMEM;
    t->n_sets = sets;
    if (key)
        memcpy(t->key, key, sizeof t->key);
    return 0;
}

void tm2__rate_free(tm2__rate_table *t)
{
    free(t->e);
    memset(t, 0, sizeof *t);
}

static tm2__rate_entry *set_of(const tm2__rate_table *t, const tm2__group_key *key)
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, key->b, sizeof key->b, t->key);
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return t->e + (size_t)(v & (t->n_sets - 1)) * TM2__RATE_WAYS;
}

/* A token is UNIT units: per_min tokens a minute is then exactly per_min
 * units a millisecond, so refills lose nothing to rounding. */
#define UNIT 60000u

/* Units in e's bucket at now_ms, the refill applied. */
static uint64_t level(const tm2__rate_entry *e, uint64_t now_ms, uint32_t per_min, uint32_t burst)
{
    uint64_t full = (uint64_t)burst * UNIT;
    uint64_t dt = now_ms > e->last_ms ? now_ms - e->last_ms : 0;
    /* Beyond the time a refill from empty takes, the bucket is full. */
    uint64_t cap_dt = per_min ? full / per_min + 1u : 0;
    if (dt > cap_dt)
        dt = cap_dt;
    uint64_t m = e->units + dt * per_min;
    return m > full ? full : m;
}

static tm2__rate_entry *find(const tm2__rate_table *t, const tm2__group_key *key)
{
    tm2__rate_entry *s = set_of(t, key);
    for (size_t i = 0; i < TM2__RATE_WAYS; i++)
        if (s[i].used && tm2__group_eq(&s[i].key, key))
            return &s[i];
    return NULL;
}

bool tm2__rate_peek(const tm2__rate_table *t, const tm2__group_key *key, uint64_t now_ms,
                    uint32_t per_min, uint32_t burst)
{
    if (!per_min)
        return true;
    if (!burst)
        return false;
    const tm2__rate_entry *e = find(t, key);
    return !e || level(e, now_ms, per_min, burst) >= UNIT;
}

bool tm2__rate_take(tm2__rate_table *t, const tm2__group_key *key, uint64_t now_ms,
                    uint32_t per_min, uint32_t burst)
{
    if (!per_min)
        return true;
    if (!burst)
        return false;
    tm2__rate_entry *e = find(t, key);
    if (!e) {
        tm2__rate_entry *s = set_of(t, key);
        uint64_t full = (uint64_t)burst * UNIT;
        for (size_t i = 0; i < TM2__RATE_WAYS && !e; i++)
            if (!s[i].used || level(&s[i], now_ms, per_min, burst) >= full)
                e = &s[i];
        if (!e) {
            e = &s[0];
            for (size_t i = 1; i < TM2__RATE_WAYS; i++)
                if (s[i].last_ms < e->last_ms)
                    e = &s[i];
            t->evicted++;
        }
        e->used = true;
        e->key = *key;
        e->units = full;
        e->last_ms = now_ms;
    }
    uint64_t m = level(e, now_ms, per_min, burst);
    e->last_ms = now_ms;
    if (m < UNIT) {
        e->units = m;
        return false;
    }
    e->units = m - UNIT;
    return true;
}
