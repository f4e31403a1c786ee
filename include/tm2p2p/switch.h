/* The switch: a node's peer manager (the reference's MultiplexSwitch).
 *
 * It owns the listener, the accept, dial and redial services, the peer set,
 * the reactors and the events. Each switch runs one libuv loop on its own
 * thread, the network thread, started by tm2_switch_start; every peer of the
 * switch lives there and every reactor callback runs there.
 *
 * Thread rules: every function may be called from any thread, including
 * reactor callbacks, except tm2_switch_stop and tm2_switch_free (not from the
 * network thread). Calls from other threads are queued to the network thread
 * and return without waiting for it, unless stated otherwise.
 *
 * Lifecycle: tm2_switch_new -> tm2_switch_start -> ... -> tm2_switch_stop
 * (closes every peer, calls reactor stop, joins the thread) -> tm2_switch_free.
 * Stop and free are idempotent. */
#ifndef TM2P2P_SWITCH_H
#define TM2P2P_SWITCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/channel.h"
#include "tm2p2p/error.h"
#include "tm2p2p/events.h"
#include "tm2p2p/key.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/node_info.h"
#include "tm2p2p/peer.h"
#include "tm2p2p/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm2_log_level {
    TM2_LOG_ERROR = 0,
    TM2_LOG_WARN = 1,
    TM2_LOG_INFO = 2,
    TM2_LOG_DEBUG = 3,
} tm2_log_level;

/* Log sink. Called on the network thread (or the caller's thread for errors
 * of tm2_switch_new/start); must not block for long. msg is a complete line
 * without a newline, in logfmt ("msg=... peer=... reason=..."). */
typedef void (*tm2_log_fn)(void *user, tm2_log_level level, const char *msg);

typedef struct tm2_switch_config {
    tm2_node_key key;                 /* copied; wiped by tm2_switch_free */

    const char *listen_addr;          /* "tcp://127.0.0.1:0" style; NULL: no listener */
    const char *external_addr;        /* advertised "host:port"; NULL: the listen address */
    const char *network;              /* chain ID */
    const char *moniker;
    const char *app_version;          /* NodeInfo "app" entry; NULL: "" like gno.land */
    const char *rpc_address;          /* NodeInfo Other.RPCAddress; NULL: "" */
    const char *tx_index;             /* NodeInfo Other.TxIndex; NULL: "off" */

    uint32_t max_inbound;             /* 0: 40 */
    uint32_t max_outbound;            /* 0: 10 */
    uint32_t max_pending_inbound;     /* handshakes in flight from accepted sockets; 0: 64 */
    uint32_t handshake_timeout_ms;    /* secret connection + NodeInfo, each; 0: 3000 */
    uint32_t dial_timeout_ms;         /* TCP connect; 0: 3000 */

    /* Persistent peers are dialled at start, redialled with back-off when
     * lost or when a dial fails, and exempt from the inbound and outbound
     * caps (as the reference's documentation says; its code applies the
     * outbound cap to them): they neither count against max_inbound /
     * max_outbound nor are refused by them. Each address must carry an ID. */
    const tm2_netaddr *persistent_peers;
    size_t n_persistent_peers;
    /* Redial back-off (tm2_backoff_ms): attempt n of a persistent peer waits
     * min(base * 2^n, max) +- jitter. 0: 1 s and 10 min like the reference. */
    uint32_t redial_base_ms;
    uint32_t redial_max_ms;
    /* Private peers are never shared by discovery. */
    const tm2_id *private_peer_ids;
    size_t n_private_peer_ids;

    tm2_mconn_config mconn;           /* zeroed: tm2_mconn_config_default */

    /* Channel IDs must be unique across reactors (TM2_EEXIST otherwise). */
    const tm2_reactor *reactors;
    size_t n_reactors;

    tm2_log_fn log;                   /* NULL: no logging */
    void *log_user;
    tm2_log_level log_level;
} tm2_switch_config;

typedef struct tm2_switch tm2_switch;

/* Validates cfg and builds a switch (not yet started). Returns 0 or
 * TM2_EINVAL, TM2_EEXIST (duplicate channel), TM2_EADDR, TM2_ENOMEM. */
TM2_API int tm2_switch_new(const tm2_switch_config *cfg, tm2_switch **out);

/* Binds the listener, starts reactors and the network thread, queues the
 * persistent peers. Waits until the listener is bound (so
 * tm2_switch_listen_addr is known on return). If the process's SIGPIPE
 * disposition is the default (terminate), it is set to ignore: a peer that
 * resets its connection must not kill the process; a handler or ignore set
 * by the application is left alone. Returns 0, TM2_ESTATE (started before),
 * a reactor's start error, the listen error (TM2_EIO, TM2_EHOST...),
 * TM2_ENOMEM, TM2_EIO. */
TM2_API int tm2_switch_start(tm2_switch *sw);

/* Closes every peer (remove_peer with reason 0), stops reactors, joins the
 * network thread. Waits for callbacks in flight. */
TM2_API void tm2_switch_stop(tm2_switch *sw);
TM2_API void tm2_switch_free(tm2_switch *sw);

/* Our ID, our NodeInfo (valid until free), and the bound listen address. */
TM2_API const tm2_id *tm2_switch_id(const tm2_switch *sw);
TM2_API const tm2_node_info *tm2_switch_node_info(const tm2_switch *sw);
TM2_API int tm2_switch_listen_addr(const tm2_switch *sw, tm2_netaddr *out);

/* Queues addresses for dialling (the reference's DialPeers). Ourselves,
 * connected peers and addresses without an ID are skipped; while the
 * outbound count is at its cap, non-persistent dials are dropped (with a
 * DIAL_FAILED event, TM2_ELIMIT). The cap is checked again when a queued dial
 * runs, counting dials in flight, so it is never overshot. An address whose
 * ID is a persistent peer's is dialled as persistent. Returns the number of
 * addresses taken (not skipped), TM2_EINVAL, TM2_ENOMEM or TM2_ECLOSED
 * (stopped). */
TM2_API int tm2_switch_dial_peers(tm2_switch *sw, const tm2_netaddr *addrs, size_t n);

/* Sends data on channel ch to every connected peer that advertised it,
 * without waiting: a peer whose queue is full misses the message (counted in
 * the returned value's complement: returns the number of peers queued). */
TM2_API int tm2_switch_broadcast(tm2_switch *sw, uint8_t ch, const void *data, size_t len);

/* Fills out with up to cap referenced peers (caller unrefs each); returns the
 * number connected (which may exceed cap). */
TM2_API size_t tm2_switch_peers(tm2_switch *sw, tm2_peer **out, size_t cap);

/* Counts of connected inbound and outbound peers and queued dials. */
TM2_API void tm2_switch_counts(tm2_switch *sw, size_t *inbound, size_t *outbound, size_t *dialing);

/* Disconnects p with reason err (a persistent peer is redialled). */
TM2_API void tm2_switch_stop_peer_for_error(tm2_switch *sw, tm2_peer *p, int err);

/* True if id is in the private peer list. */
TM2_API bool tm2_switch_is_private(const tm2_switch *sw, const tm2_id *id);

/* Subscribes to the event types in mask (TM2_EVENT_*); peer_id NULL for all
 * peers. queue_cap 0 means 100, like the reference. */
TM2_API int tm2_switch_subscribe(tm2_switch *sw, unsigned mask, const tm2_id *peer_id,
                                 size_t queue_cap, tm2_subscription **out);

/* Runs fn(sw, user) on the network thread every interval_ms (first run one
 * interval after the call, or after start if called before it) until
 * tm2_switch_stop. For reactors' periodic work (discovery's requests, seed
 * crawling); fn must not block. Any thread. 0 or TM2_EINVAL, TM2_ENOMEM,
 * TM2_ECLOSED (stopped). */
TM2_API int tm2_switch_every(tm2_switch *sw, uint32_t interval_ms,
                             void (*fn)(tm2_switch *sw, void *user), void *user);

/* The redial back-off: min(base * 2^attempts, max) + uniform jitter of
 * +-min(10% of that, 10 s). base <= 0 means 1 s, max <= 0 means 60 s.
 * rnd01 is a uniform random number in [0, 1). Milliseconds. */
TM2_API int64_t tm2_backoff_ms(uint32_t attempts, int64_t base_ms, int64_t max_ms, double rnd01);

#ifdef __cplusplus
}
#endif
#endif
