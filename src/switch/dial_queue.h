/* Internal: the switch's dial queue (WIRE.md 8.2), ordered by due time.
 *
 * A binary min-heap on (due time, push order): items with equal due times
 * come out first in, first out. Each peer ID is queued at most once; the
 * capacity is fixed at init, so a full queue never allocates.
 *
 * Full queue: push returns TM2_EFULL and queues nothing. The switch should
 * drop the request and report it (log, dial-failed event with TM2_EFULL);
 * nothing is lost for good, because persistent peers are re-queued by the
 * redial scan once there is room, and discovery offers other addresses
 * again later. Size the queue above the number of persistent peers plus
 * the dials one discovery round may ask for.
 *
 * Times are caller-supplied monotonic milliseconds. Thread rules: network
 * thread only; nothing here locks. */
#ifndef TM2_SWITCH_DIAL_QUEUE_H
#define TM2_SWITCH_DIAL_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switch/peer_set.h"
#include "tm2p2p/netaddr.h"

/* Item flags, merged (OR) when a queued ID is pushed again. */
enum {
    TM2__DIAL_PERSISTENT = 1u << 0,   /* exempt from the outbound cap; redialled */
    TM2__DIAL_RESOLVE    = 1u << 1,   /* a configured host name, resolved before the dial */
    TM2__DIAL_UNCOND     = 1u << 2,   /* an unconditional peer: exempt from the cap and diversity */
};

typedef struct tm2__dial_item {
    uint64_t due_ms;
    tm2_netaddr addr;       /* carries the peer ID */
    unsigned flags;
} tm2__dial_item;

typedef struct tm2__dialq {
    struct tm2__dialq_node *nodes;   /* cap nodes; a node keeps its index while queued */
    uint32_t *heap;                  /* node indices, heap-ordered */
    uint32_t *free_list;             /* unused node indices (a stack) */
    size_t n, cap, n_free;
    uint64_t seq;                    /* push order, breaks due-time ties */
    tm2__idmap index;                /* peer ID -> node index */
} tm2__dialq;

#define TM2__DIALQ_MAX_CAP ((size_t)1 << 24)

/* cap: most items queued at once, 1..TM2__DIALQ_MAX_CAP; key: the index's
 * hash key (tm2__idmap_init). Returns 0, TM2_EINVAL, TM2_ENOMEM. */
int tm2__dialq_init(tm2__dialq *q, size_t cap, const uint8_t key[16]);
void tm2__dialq_free(tm2__dialq *q);

/* Queues a dial of addr at due_ms. If addr's ID is already queued, nothing
 * new is queued: the entry keeps the earlier of the two due times (taking
 * addr when the new time is strictly earlier) and gains flags.
 * Returns 0 (queued), 1 (merged into the queued entry), TM2_EINVAL (addr
 * without ID), TM2_EFULL (see above; never for an ID already queued). */
int tm2__dialq_push(tm2__dialq *q, uint64_t due_ms, const tm2_netaddr *addr, unsigned flags);

/* Takes the earliest item if it is due (due_ms <= now_ms).
 * Returns true and fills *out, or false if nothing is due. */
bool tm2__dialq_pop_due(tm2__dialq *q, uint64_t now_ms, tm2__dial_item *out);

/* The earliest due time (for arming a timer); false when empty. */
bool tm2__dialq_next_due(const tm2__dialq *q, uint64_t *due_ms);

/* Removes the item queued for id, copying it to *out if out is non-NULL.
 * Returns 0 or TM2_ENOTFOUND. */
int tm2__dialq_remove(tm2__dialq *q, const tm2_id *id, tm2__dial_item *out);

bool tm2__dialq_contains(const tm2__dialq *q, const tm2_id *id);

/* The item queued for id, or NULL; valid until the next change. */
const tm2__dial_item *tm2__dialq_find(const tm2__dialq *q, const tm2_id *id);

size_t tm2__dialq_count(const tm2__dialq *q);

/* True if an item is due at now_ms whose flags have none of without. */
bool tm2__dialq_has_due(const tm2__dialq *q, uint64_t now_ms, unsigned without);

#endif
