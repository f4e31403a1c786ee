/* Switch events and subscriptions (the reference's events package, plus
 * dial-failed and peer-rejected so operators can see why a peer never came).
 *
 * A subscription has a bounded queue filled by the network thread without
 * ever waiting: when it is full, new events are dropped and counted
 * (tm2_subscription_dropped). Read events with a timeout, or poll the file
 * descriptor. A subscription may be read by one thread at a time; it may be
 * closed from any thread at any time (also after the switch stopped, which
 * wakes readers with TM2_ECLOSED once the queue is drained). */
#ifndef TM2P2P_EVENTS_H
#define TM2P2P_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"
#include "tm2p2p/netaddr.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm2_event_type {
    TM2_EVENT_PEER_CONNECTED    = 1u << 0,
    TM2_EVENT_PEER_DISCONNECTED = 1u << 1,
    TM2_EVENT_DIAL_FAILED       = 1u << 2,
    TM2_EVENT_PEER_REJECTED     = 1u << 3,
    /* A simultaneous open resolved: the peer stays connected, on the
     * connection in the other direction (outbound says which one is kept).
     * Reactors see no removal and no second add. */
    TM2_EVENT_PEER_REPLACED     = 1u << 4,
    /* A ban was made (tm2_switch_ban, or misbehaviour: reason is the
     * offence). peer_id is set for an ID ban, addr's IP (port 0) for an IP
     * ban; a misbehaving peer's ban names both. reason_text says what and
     * for how long. */
    TM2_EVENT_PEER_BANNED       = 1u << 5,
} tm2_event_type;

#define TM2_EVENT_ALL 0x3fu
#define TM2_EVENT_REASON_LEN 160

/* Carried by value: nothing in it points elsewhere. */
typedef struct tm2_event {
    tm2_event_type type;
    /* When it happened: wall clock (for logs) and the monotonic clock of
     * libuv's uv_hrtime, in milliseconds (for intervals). */
    int64_t unix_ms;
    uint64_t mono_ms;
    tm2_id peer_id;          /* empty when not known (a dial that failed before the handshake
                                to an address without ID cannot happen: dial addresses carry IDs) */
    tm2_netaddr addr;        /* socket address of the peer or the dialled address */
    bool outbound;
    int reason;              /* 0 on a clean stop, else a TM2_E* code */
    char reason_text[TM2_EVENT_REASON_LEN];
} tm2_event;

typedef struct tm2_subscription tm2_subscription;

/* Waits up to timeout_ms (0: don't wait, <0: forever) for the next event.
 * Returns 0, TM2_ETIMEDOUT, or TM2_ECLOSED (unsubscribed or switch freed and
 * nothing left to read). */
TM2_API int tm2_subscription_next(tm2_subscription *s, tm2_event *ev, int timeout_ms);

/* A descriptor that polls readable while events are queued, and from the
 * moment the subscription is closed (so a poller calls
 * tm2_subscription_next and sees TM2_ECLOSED rather than waiting forever).
 * Owned by the subscription and closed with it: stop polling it before
 * tm2_unsubscribe. */
TM2_API int tm2_subscription_fd(const tm2_subscription *s);

/* Events dropped because the queue was full. */
TM2_API uint64_t tm2_subscription_dropped(const tm2_subscription *s);

/* Ends the subscription and frees it. A reader blocked in
 * tm2_subscription_next on another thread returns TM2_ECLOSED; s must not
 * be used once this returns. */
TM2_API void tm2_unsubscribe(tm2_subscription *s);

#ifdef __cplusplus
}
#endif
#endif
