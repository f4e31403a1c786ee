/* Internal: which inbound peer to evict when a newcomer arrives and the
 * inbound side is full (pure). Bitcoin Core's AttemptToEvictConnection
 * model:
 *
 *   1. protect, from up to protect_groups network groups (picked in the
 *      order of a keyed hash of the group, which remote parties cannot
 *      predict), the longest-connected peer of each;
 *   2. protect the protect_latency peers with the smallest round trip
 *      (the minimum over their keepalive Pings; peers not measured yet are
 *      not protected; ties go to the older);
 *   3. protect the protect_active peers that most recently delivered a
 *      message on a reactor channel (peers that never did are not);
 *   4. protect the protect_oldest_pct percent of the rest that have been
 *      connected the longest;
 *   5. among the peers left, take the network group with the most inbound
 *      connections (counting every inbound peer of the group, protected or
 *      not; ties go to the group whose youngest candidate is the youngest)
 *      and evict its youngest candidate.
 *
 * The order is Bitcoin Core's (network groups, ping time, recent activity,
 * longevity); each rule protects among the peers the earlier ones left.
 * A round trip is easier to fake than in Bitcoin (the Pong carries no
 * nonce): a peer that guesses when our Ping leaves can answer early, but
 * one Pong before it and the peer is never measured again (conn/mconn.c).
 *
 * Thread rules: none. */
#ifndef TM2_SWITCH_EVICT_H
#define TM2_SWITCH_EVICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/netgroup.h"

typedef struct tm2__evict_peer {
    tm2__group_key group;      /* network group */
    uint64_t group_rank;       /* keyed hash of the group: protection order */
    uint64_t seq;              /* connection order: larger is younger */
    uint64_t last_msg_ms;      /* last reactor message received; 0: none */
    uint32_t min_rtt_ms;       /* smallest round trip; 0: not measured */
    bool candidate;            /* may be evicted (not persistent, unconditional, leaving) */
    size_t user;               /* the caller's index */
} tm2__evict_peer;

typedef struct tm2__evict_params {
    uint32_t protect_groups;
    uint32_t protect_latency;
    uint32_t protect_active;
    uint32_t protect_oldest_pct;    /* 0..100 */
} tm2__evict_params;

/* Picks a victim among p[0..n) (every inbound peer; only candidates can be
 * picked). Returns its index in p, or -1 when every candidate is protected
 * (or there is none). p is reordered. */
long tm2__evict_select(tm2__evict_peer *p, size_t n, const tm2__evict_params *params);

#endif
