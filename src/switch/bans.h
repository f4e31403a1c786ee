/* Internal: a switch's ban list (tm2p2p/ban.h has the entry type and the
 * file functions).
 *
 * Thread rules: every function may be called from any thread; the list is
 * under its own mutex, held only for a scan or a copy (at most TM2_BANS_MAX
 * entries). Times are wall-clock milliseconds (bans outlive the process). */
#ifndef TM2_SWITCH_BANS_H
#define TM2_SWITCH_BANS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tm2p2p/ban.h"

typedef struct tm2__bans {
    uv_mutex_t mu;
    tm2_ban *e;                 /* mu */
    size_t n, cap;              /* mu */
    uint64_t gen;               /* mu: bumped by every change */
    atomic_uint_fast64_t total; /* bans made (new or renewed), since init */
} tm2__bans;

/* 0 or TM2_EIO. */
int tm2__bans_init(tm2__bans *b);
void tm2__bans_free(tm2__bans *b);

/* Sets the list to bans[0..n) (a file just read); expired entries are
 * dropped. Not counted in total. 0 or TM2_ENOMEM. */
int tm2__bans_replace(tm2__bans *b, const tm2_ban *bans, size_t n, int64_t now);

/* Adds a ban, or renews the one on the same target (the later expiry wins,
 * "never" over any; the reason is replaced). A full list drops the entry
 * expiring first. Counted in total. 0 or TM2_ENOMEM. */
int tm2__bans_put(tm2__bans *b, const tm2_ban *ban, int64_t now);

/* Removes the ban on target's IP or ID. 0 or TM2_ENOTFOUND. */
int tm2__bans_del(tm2__bans *b, const tm2_ban *target);

/* Whether the IP or the ID is banned at now; *hit (may be NULL) gets the
 * entry. */
bool tm2__bans_has_ip(tm2__bans *b, const uint8_t ip[16], int64_t now, tm2_ban *hit);
bool tm2__bans_has_id(tm2__bans *b, const tm2_id *id, int64_t now, tm2_ban *hit);

/* Copies up to cap active bans (soonest expiry last); returns how many are
 * active. out may be NULL with cap 0. */
size_t tm2__bans_copy(tm2__bans *b, int64_t now, tm2_ban *out, size_t cap);

/* The change counter (a save is due while it differs from the saved one). */
uint64_t tm2__bans_gen(tm2__bans *b);


#endif
