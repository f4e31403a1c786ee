/* Internal: token buckets keyed by address group (the accept-rate limits),
 * in a table of fixed size (pure; the time is an argument).
 *
 * The table is set-associative: a group's key hashes (SipHash, keyed at
 * random per table, so remote parties cannot aim at a set) to one set of
 * TM2__RATE_WAYS entries. A group new to its set takes a free entry, or one
 * whose bucket has refilled (it then behaves as a fresh one would), or else
 * the stalest entry of the set (the one least recently used). Memory is
 * fixed at init; a lookup or an insertion costs TM2__RATE_WAYS comparisons.
 * A flood of new groups can push an idle group's bucket out early, which
 * only gives that group a full bucket again: the table never refuses more
 * than an unbounded one would.
 *
 * A bucket holds at most `burst` tokens and regains `per_min` a minute;
 * taking one token admits one connection. Tokens are counted in
 * 1/60000ths, so any rate refills exactly.
 *
 * Thread rules: none; the owner serialises calls (the switch: network
 * thread). */
#ifndef TM2_SWITCH_RATELIMIT_H
#define TM2_SWITCH_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/netgroup.h"

#define TM2__RATE_WAYS 8

typedef struct tm2__rate_entry {
    tm2__group_key key;
    bool used;
    uint64_t units;             /* tokens in 1/60000ths */
    uint64_t last_ms;           /* last refill (and use) */
} tm2__rate_entry;

typedef struct tm2__rate_table {
    tm2__rate_entry *e;
    size_t n_sets;              /* a power of two */
    uint8_t key[16];            /* hash key */
    uint64_t evicted;           /* live entries pushed out (for tests and tuning) */
} tm2__rate_table;

/* Room for about `entries` groups (rounded up to a power of two sets of
 * TM2__RATE_WAYS).
 * key: the 16-byte key of the keyed hash (from the engine's randomness, so
 * that peers cannot choose colliding IDs; NULL: all zero, for tests). 
 * 0, TM2_EINVAL (0 entries) or TM2_ENOMEM. */
int tm2__rate_init(tm2__rate_table *t, size_t entries, const uint8_t key[16]);
void tm2__rate_free(tm2__rate_table *t);

/* Takes a token from key's bucket at now_ms: true if there was one. A
 * group not in the table starts with a full bucket. per_min 0 means no
 * limit (always true, nothing stored). burst 0 refuses everything. */
bool tm2__rate_take(tm2__rate_table *t, const tm2__group_key *key, uint64_t now_ms,
                    uint32_t per_min, uint32_t burst);

/* True if key's bucket has a token at now_ms, without taking it. */
bool tm2__rate_peek(const tm2__rate_table *t, const tm2__group_key *key, uint64_t now_ms,
                    uint32_t per_min, uint32_t burst);

#endif
