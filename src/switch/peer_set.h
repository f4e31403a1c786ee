/* Internal: the switch's set of connected peers, keyed by peer ID, and the
 * ID index it is built on (also used by the dial queue).
 *
 * Thread rules: network thread only. Nothing here locks; the switch answers
 * other threads from snapshots it takes on the network thread.
 *
 * The set stores an opaque pointer per ID (the switch's peer) and never
 * dereferences, references or frees it. */
#ifndef TM2_SWITCH_PEER_SET_H
#define TM2_SWITCH_PEER_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/key.h"

/* ---- ID index ---------------------------------------------------------------
 * An open-addressing (linear probing, backward-shift deletion) map from an
 * ID string to a uint32_t value the owner chooses, typically a position in
 * its own array. The index does not store IDs: it asks the owner for the ID
 * behind a value (id_at) when it needs to compare. Hashing is SipHash with a
 * per-index random key, so IDs chosen by remote nodes cannot be made to
 * collide. Load is kept at most 1/2; expected O(1) per operation. */

typedef const char *(*tm2__idmap_id_at_fn)(const void *owner, uint32_t value);

typedef struct tm2__idmap {
    struct tm2__idmap_slot *slots;
    size_t mask;            /* slot count - 1 (a power of two) */
    size_t n;
    const void *owner;
    tm2__idmap_id_at_fn id_at;
    uint8_t key[16];
} tm2__idmap;

/* Sizes the index for expected entries (it grows beyond that on insert).
 * key: the 16-byte key of the keyed hash (from the engine's randomness, so
 * that peers cannot choose colliding IDs; NULL: all zero, for tests). 
 * Returns 0, TM2_ENOMEM or TM2_EINVAL (expected over 2^30). */
int tm2__idmap_init(tm2__idmap *m, size_t expected, const void *owner, tm2__idmap_id_at_fn id_at,
                    const uint8_t key[16]);
void tm2__idmap_free(tm2__idmap *m);

/* The value stored for id, or -1. */
int64_t tm2__idmap_find(const tm2__idmap *m, const char *id);

/* Adds id -> value; id must not be present. Returns 0, TM2_EINVAL (value
 * UINT32_MAX, or the index is not initialised) or TM2_ENOMEM (the index is
 * unchanged). */
int tm2__idmap_insert(tm2__idmap *m, const char *id, uint32_t value);

/* Replaces the value stored for id. Returns 0 or TM2_ENOTFOUND. */
int tm2__idmap_update(tm2__idmap *m, const char *id, uint32_t value);

/* Removes id. Call it while id_at still answers for the entries (before
 * the owner moves or reuses the removed value's storage).
 * Returns the removed value, or TM2_ENOTFOUND. */
int64_t tm2__idmap_remove(tm2__idmap *m, const char *id);

/* ---- peer set -------------------------------------------------------------- */

typedef struct tm2__peer_entry {
    tm2_id id;
    void *peer;
    bool outbound;
} tm2__peer_entry;

/* Entries are kept dense in an array (so iteration, snapshots and random
 * picks are O(1) per element); removal moves the last entry into the hole. */
typedef struct tm2__peer_set {
    tm2__peer_entry *items;
    size_t n, cap;
    size_t n_outbound;
    tm2__idmap index;
} tm2__peer_set;

/* key: the index's hash key (tm2__idmap_init). Returns 0 or TM2_ENOMEM. */
int tm2__peer_set_init(tm2__peer_set *ps, const uint8_t key[16]);
/* Frees the set's memory; the stored peer pointers are left alone. */
void tm2__peer_set_free(tm2__peer_set *ps);

/* Adds peer under id. Returns 0, TM2_EEXIST (id already present; the set is
 * unchanged), TM2_EINVAL (id empty or not NUL-terminated, or peer NULL),
 * TM2_ENOMEM. */
int tm2__peer_set_add(tm2__peer_set *ps, const tm2_id *id, void *peer, bool outbound);

/* Removes id and returns its peer, or NULL if absent. */
void *tm2__peer_set_remove(tm2__peer_set *ps, const tm2_id *id);

/* The peer stored under id, or NULL. */
void *tm2__peer_set_find(const tm2__peer_set *ps, const tm2_id *id);
bool tm2__peer_set_has(const tm2__peer_set *ps, const tm2_id *id);

size_t tm2__peer_set_count(const tm2__peer_set *ps);
size_t tm2__peer_set_inbound(const tm2__peer_set *ps);
size_t tm2__peer_set_outbound(const tm2__peer_set *ps);

/* Entry i, 0 <= i < count; NULL otherwise. The order is arbitrary and
 * changes on removal (the last entry moves into the hole), so a loop that
 * removes as it goes must walk from the end. */
const tm2__peer_entry *tm2__peer_set_at(const tm2__peer_set *ps, size_t i);

/* Calls fn for each entry until it returns non-zero (which is returned);
 * fn must not add or remove. Returns 0 when every entry was visited. */
int tm2__peer_set_foreach(const tm2__peer_set *ps,
                          int (*fn)(const tm2__peer_entry *e, void *user), void *user);

/* A uniformly random peer, chosen by rnd (a uniform 64-bit random number
 * from the caller; the bias of rnd mod count is below count / 2^64).
 * NULL if the set is empty. */
void *tm2__peer_set_random(const tm2__peer_set *ps, uint64_t rnd);

/* Copies up to cap peer pointers into out; returns the count (which may
 * exceed cap). */
size_t tm2__peer_set_snapshot(const tm2__peer_set *ps, void **out, size_t cap);

#endif
