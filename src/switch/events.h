/* Internal: the switch's side of events (the public side is
 * include/tm2p2p/events.h): a registry of subscriptions that the network
 * thread publishes into.
 *
 * Thread rules: every function here may be called from any thread.
 * Publishing never waits for a reader: it takes the registry lock and each
 * matching subscription's lock only long enough to copy an event (readers
 * never hold a subscription lock while blocked), and a full queue drops the
 * new event and counts it.
 *
 * Lifetimes: the registry and each subscription are reference-counted. The
 * registry holds a reference on every subscription it lists and each listed
 * subscription holds one on the registry, so tm2_unsubscribe, publish,
 * tm2__events_close and tm2__events_free may run concurrently in any order
 * and the last one out frees. Lock order: registry, then subscription. */
#ifndef TM2_SWITCH_EVENTS_H
#define TM2_SWITCH_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/events.h"

#define TM2__EVENTS_DEFAULT_QUEUE 100u
#define TM2__EVENTS_MAX_QUEUE 65536u

typedef struct tm2__events tm2__events;

/* Returns 0 or TM2_ENOMEM. */
int tm2__events_new(tm2__events **out);

/* Closes the registry (see tm2__events_close) and drops the owner's
 * reference. Memory lives on until the last subscription lets go. */
void tm2__events_free(tm2__events *r);

/* Ends publishing: every subscription is closed (its reader drains what is
 * queued, then gets TM2_ECLOSED; its descriptor turns readable) and later
 * subscribes fail with TM2_ECLOSED. Idempotent. */
void tm2__events_close(tm2__events *r);

/* A subscription to the types in mask (TM2_EVENT_*, at least one, no other
 * bits), for one peer ID or all (peer_id NULL), with a queue of queue_cap
 * events (0: TM2__EVENTS_DEFAULT_QUEUE; at most TM2__EVENTS_MAX_QUEUE).
 * Returns 0, TM2_EINVAL, TM2_ECLOSED, TM2_ENOMEM, TM2_EIO (no descriptor). */
int tm2__events_subscribe(tm2__events *r, unsigned mask, const tm2_id *peer_id, size_t queue_cap,
                          tm2_subscription **out);

/* Copies ev into every matching open subscription. */
void tm2__events_publish(tm2__events *r, const tm2_event *ev);

/* Number of subscriptions listed (not yet unsubscribed or closed). */
size_t tm2__events_count(tm2__events *r);

/* Fills an event stamped mono_ms / unix_ms (the publisher's engine clocks):
 * peer_id and addr may be NULL (left empty); text NULL means the name of
 * reason (tm2_strerror), or "" for reason 0. Text is truncated to fit. */
void tm2__event_fill(tm2_event *ev, uint64_t mono_ms, int64_t unix_ms, tm2_event_type type,
                     const tm2_id *peer_id, const tm2_netaddr *addr, bool outbound, int reason,
                     const char *text);

/* True while a reader is blocked in tm2_subscription_next (for tests that
 * must publish only once the reader waits). */
bool tm2__subscription_waiting(tm2_subscription *s);

#endif
