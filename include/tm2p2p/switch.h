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

#include "tm2p2p/ban.h"
#include "tm2p2p/channel.h"
#include "tm2p2p/error.h"
#include "tm2p2p/events.h"
#include "tm2p2p/key.h"
#include "tm2p2p/log.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/node_info.h"
#include "tm2p2p/peer.h"
#include "tm2p2p/reactor.h"
#include "tm2p2p/stats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Resolves a configured peer's host name (persistent peers and seeds named
 * by name rather than by IP). Called on a worker thread, never the network
 * thread; may block. Writes up to cap addresses (IP and port; the ID is
 * ignored) and returns how many, or a negative TM2_E* code. */
typedef int (*tm2_resolve_fn)(void *user, const char *host, uint16_t port, tm2_netaddr *out,
                              size_t cap);

/* Fill it with tm2_switch_config_default() and then set what differs: every
 * field is taken literally (0 means 0: no inbound peers, no budget, ...), and
 * tm2_switch_new refuses a config that cannot work, naming the field. */
typedef struct tm2_switch_config {
    tm2_node_key key;                 /* copied; wiped by tm2_switch_free */

    const char *listen_addr;          /* "tcp://127.0.0.1:0" style, IP literal; NULL: no listener */
    const char *external_addr;        /* advertised "host:port"; NULL: the listen address */
    const char *network;              /* chain ID */
    const char *moniker;
    const char *app_version;          /* NodeInfo "app" entry; NULL: "" like gno.land */
    /* NodeInfo Software and Version: free text naming the program a node
     * runs, which peers show but never compare (the version set above is
     * what they check). Version, when not "", must be printable ASCII and
     * not only spaces. NULL: "" and TM2_PROTOCOL_VERSION, as gno.land sends. */
    const char *software;
    const char *version;
    const char *rpc_address;          /* NodeInfo Other.RPCAddress; NULL: "" */
    const char *tx_index;             /* NodeInfo Other.TxIndex; NULL: "off" */

    /* Inbound peers (40). Persistent peers count too, and pass a full
     * inbound side (taking an evicted peer's place when evict_inbound finds
     * one, else over the cap; the reference refuses them); unconditional
     * peers are neither counted nor limited. */
    uint32_t max_inbound;
    /* Outbound peers (10). Persistent peers count towards it, as in the
     * reference, but are dialled even when it is reached; unconditional
     * peers are neither counted nor limited. */
    uint32_t max_outbound;
    uint32_t max_pending_inbound;     /* handshakes in flight from accepted sockets (64), > 0 */
    uint32_t handshake_timeout_ms;    /* secret connection + NodeInfo, each (3000), > 0 */
    uint32_t dial_timeout_ms;         /* TCP connect (3000), > 0 */
    /* false (the reference's default): an inbound peer from an IP that
     * already holds a peer other than the arriving peer's own ID is refused.
     * Tests and local networks on one host set it. */
    bool allow_duplicate_ip;

    /* Persistent peers and seeds, "ID@host:port" with an IP literal or a host
     * name; copied. A name is resolved again before every dial, off the
     * network thread; one that does not resolve is kept and retried.
     * Persistent peers are dialled only at their configured address, by the
     * redial service: at start, then again when lost (at once if the
     * connection lasted redial_stable_ms, else after the back-off) and after
     * a failed dial (1 s doubling to redial_max_ms, +-10% jitter). An ID
     * listed twice keeps its last address. Each entry must parse
     * (tm2_peer_addr_parse): TM2_EINVAL otherwise. */
    const char *const *persistent_peers;
    size_t n_persistent_peers;
    /* Seeds (bootstrap peers): one, picked at random, is dialled at start and
     * every seed_interval_ms while the outbound count is below max_outbound
     * and no other dial is due. A seed is then an ordinary outbound peer. */
    const char *const *seeds;
    size_t n_seeds;
    uint32_t redial_base_ms;          /* 1000, > 0 */
    uint32_t redial_max_ms;           /* 30000, >= redial_base_ms */
    uint32_t redial_stable_ms;        /* 30000: uptime after which a loss resets the back-off */
    uint32_t redial_scan_ms;          /* 5000, > 0: missing persistent peers re-queued */
    uint32_t seed_interval_ms;        /* 30000, > 0 */
    tm2_resolve_fn resolve;           /* NULL: the system resolver (getaddrinfo) */
    void *resolve_user;

    /* Private peers are never shared by discovery. */
    const tm2_id *private_peer_ids;
    size_t n_private_peer_ids;

    /* ---- Admission, limits, eviction, bans (defaults in tm2p2p/defaults.h).
     * "Local" addresses below are those not reachable from the internet:
     * loopback, 0.0.0.0/8, RFC 1918, link-local, unique local, shared
     * (100.64.0.0/10) and benchmarking (198.18.0.0/15) ranges. */

    /* Unconditional peers (CometBFT's unconditional_peer_ids): always
     * admitted and dialled, even when the inbound or outbound side is full;
     * never evicted, never banned for misbehaviour; exempt from every limit
     * below and from allow_duplicate_ip, and not counted towards
     * max_inbound / max_outbound. Per-address rules that run before a
     * handshake (rates, the per-IP handshake cap, IP bans) see only an
     * address and apply to them too. */
    const tm2_id *unconditional_peer_ids;
    size_t n_unconditional_peer_ids;
    /* Handshakes in flight from one IP (4); 0: no cap. Counted before the
     * handshake; a socket over it is closed at once. */
    uint32_t max_pending_inbound_per_ip;
    /* Accepted sockets per minute from one IP (12, bursts of 12) and from
     * one subnet, IPv4 /24 or IPv6 /48 (60, bursts of 60): token buckets;
     * a socket without a token is closed at once. rate 0: no limit; burst
     * must then be > 0 where the rate is. */
    uint32_t accept_ip_rate, accept_ip_burst;
    uint32_t accept_subnet_rate, accept_subnet_burst;
    /* Inbound peers from one IP (4; applies when allow_duplicate_ip is on,
     * otherwise the reference's rule allows one) and from one subnet
     * (/24, /48: 8). 0: no limit. Persistent and unconditional peers are
     * neither limited nor counted. */
    uint32_t max_inbound_per_ip;
    uint32_t max_inbound_per_subnet;
    /* No two outbound peers from one network group (IPv4 /16, IPv6 /32;
     * Bitcoin Core's rule) (true): a dial into a group an outbound peer or
     * dial already holds fails with TM2_ENETGROUP. Persistent and
     * unconditional peers are dialled regardless (and hold their group). */
    bool outbound_diversity;
    /* Inbound eviction (true): when the inbound side is full, a newcomer
     * from a network group no inbound peer holds, or a persistent peer,
     * takes the place of an evicted peer (see evict_protect_*; reason
     * TM2_EEVICTED). Without a victim the newcomer is refused (a persistent
     * peer is then admitted over the cap). */
    bool evict_inbound;
    /* Protected from eviction, in this order: the oldest peer of each of up
     * to this many network groups (4), the peers with the smallest round
     * trip (the minimum over their keepalive Pings, tm2_peer_counters; 8;
     * peers not measured yet are not protected by it), the peers that most
     * recently delivered a reactor message (4), and this percentage of the
     * rest connected longest (50). */
    uint32_t evict_protect_groups;
    uint32_t evict_protect_latency;
    uint32_t evict_protect_active;
    uint32_t evict_protect_oldest_pct;   /* <= 100 */
    /* Misbehaviour (a protocol violation, a malformed message, an unknown
     * channel, an oversized message, discovery abuse: TM2_EPROTO,
     * TM2_ECHANNEL, TM2_EMSGSIZE, TM2_EABUSE, decoding errors, TM2_EFRAME)
     * after the handshake stops the peer and bans its ID and IP for this
     * long (3600000 = 1 h); 0: no bans for misbehaviour. Persistent and
     * unconditional peers are not banned, nor a local IP (the ID is) unless
     * limit_local_addrs. */
    uint64_t ban_duration_ms;
    /* Where bans are kept across restarts (tm2p2p/ban.h), e.g.
     * "<home>/data/bans.json"; NULL: in memory only. Read by tm2_switch_new
     * (a file that does not parse is moved to "<file>.corrupt" and the list
     * starts empty), written after each change off the network thread and
     * by tm2_switch_stop. */
    const char *ban_file;
    /* false (the default): local addresses are exempt from the per-IP and
     * per-subnet rules above (handshake cap, rates, peer limits, outbound
     * diversity), all form one network group for eviction, and a
     * misbehaving peer's ban takes its ID only (a local IP is often shared
     * by every node of a test network). true: they are grouped like public
     * addresses (127.1.2.3 in 127.1.2.0/24 and 127.1.0.0/16). */
    bool limit_local_addrs;

    tm2_mconn_config mconn;           /* tm2_mconn_config_default() */

    /* Channel IDs must be unique across reactors (TM2_EEXIST otherwise). */
    const tm2_reactor *reactors;
    size_t n_reactors;

    tm2_log_fn log;                   /* NULL: no logging */
    void *log_user;
    tm2_log_level log_level;
} tm2_switch_config;

/* The reference's defaults (include/tm2p2p/defaults.h), no listener, no
 * peers, no reactors, no key: set those. */
TM2_API void tm2_switch_config_default(tm2_switch_config *cfg);

/* Checks cfg as tm2_switch_new does, without building anything. Returns 0,
 * or TM2_EINVAL with *field (if not NULL) naming the first bad field
 * ("max_pending_inbound", "mconn.max_packet_payload", "persistent_peers[2]",
 * ...), a static string. */
TM2_API int tm2_switch_config_check(const tm2_switch_config *cfg, const char **field);

/* Parses "ID@host:port" (a configured peer): the ID must be valid, host an
 * IP literal (IPv6 in brackets) or a host name (RFC 1123 labels), port
 * 1..65535. host is NUL-terminated in host[0..host_cap). 0 or TM2_EINVAL,
 * TM2_EID, TM2_EADDR. */
TM2_API int tm2_peer_addr_parse(const char *s, tm2_id *id, char *host, size_t host_cap,
                                uint16_t *port);

typedef struct tm2_switch tm2_switch;

/* Validates cfg (tm2_switch_config_check; the bad field is logged) and
 * builds a switch (not yet started). Returns 0 or TM2_EINVAL, TM2_EEXIST
 * (duplicate channel), TM2_EADDR (external_addr), TM2_ENOMEM. */
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
 * connected peers, addresses already queued, addresses without an ID and
 * persistent peers' IDs (dialled only at their configured address) are
 * skipped; while the outbound count is at its cap, dials are dropped (with
 * a DIAL_FAILED event, TM2_ELIMIT). The cap is checked again when a queued
 * dial runs, counting dials in flight, so it is never overshot. Returns the
 * number of addresses taken (not skipped), TM2_EINVAL, TM2_ENOMEM or
 * TM2_ECLOSED (stopped). */
TM2_API int tm2_switch_dial_peers(tm2_switch *sw, const tm2_netaddr *addrs, size_t n);

/* Sends data on channel ch to every connected peer that advertised it,
 * without waiting: a peer whose queue is full misses the message (counted in
 * the returned value's complement: returns the number of peers queued). */
TM2_API int tm2_switch_broadcast(tm2_switch *sw, uint8_t ch, const void *data, size_t len);

/* Fills out with up to cap referenced peers (caller unrefs each); returns the
 * number connected (which may exceed cap). */
TM2_API size_t tm2_switch_peers(tm2_switch *sw, tm2_peer **out, size_t cap);

/* Counts of connected inbound and outbound peers and queued dials. Peers
 * are counted by the slot they hold (tm2_peer_in_outbound_slot): when a
 * peer's dial and ours cross and its connection survives, it keeps our
 * dial's outbound slot (tm2_peer_is_outbound still says who dialled). */
TM2_API void tm2_switch_counts(tm2_switch *sw, size_t *inbound, size_t *outbound, size_t *dialing);

/* Disconnects p with reason err (a persistent peer is redialled). A
 * misbehaviour code (TM2_EPROTO, TM2_ECHANNEL, TM2_EMSGSIZE, TM2_EABUSE,
 * TM2_EFRAME or a decoding error) also bans its ID and IP for
 * ban_duration_ms (see the config). */
TM2_API void tm2_switch_stop_peer_for_error(tm2_switch *sw, tm2_peer *p, int err);

/* Whether id is one of the private peer IDs, the persistent peers or the
 * seeds (one function each). Any thread. */
TM2_API bool tm2_switch_is_private(const tm2_switch *sw, const tm2_id *id);
TM2_API bool tm2_switch_is_persistent(const tm2_switch *sw, const tm2_id *id);
TM2_API bool tm2_switch_is_seed(const tm2_switch *sw, const tm2_id *id);
/* Whether id is one of the unconditional peer IDs. Any thread. */
TM2_API bool tm2_switch_is_unconditional(const tm2_switch *sw, const tm2_id *id);

/* Bans target, an IP literal or a peer ID (tm2_ban_target_parse), for
 * duration_ms (0: the configured ban_duration_ms, TM2_BAN_FOREVER: no
 * end); a ban already on it is renewed (the later end wins). Connected
 * peers it matches are stopped with TM2_EBANNED; while it lasts the IP is
 * refused at accept, before any handshake, the ID after its handshake, and
 * neither is dialled. Publishes TM2_EVENT_PEER_BANNED and schedules a save
 * of the ban file (a switch not running saves it when it starts, or in
 * tm2_switch_stop / tm2_switch_free). reason may be NULL. Any thread.
 * 0, TM2_EINVAL (not a target; or duration 0 while ban_duration_ms is 0)
 * or TM2_ENOMEM. */
TM2_API int tm2_switch_ban(tm2_switch *sw, const char *target, uint64_t duration_ms,
                           const char *reason);
/* Lifts the ban on target (and schedules a save). 0, TM2_EINVAL or
 * TM2_ENOTFOUND. Any thread. */
TM2_API int tm2_switch_unban(tm2_switch *sw, const char *target);
/* Copies up to cap active bans to out (latest expiry first, "never" first
 * of all); returns the number active, which may exceed cap. out may be
 * NULL with cap 0. Any thread. */
TM2_API size_t tm2_switch_bans(tm2_switch *sw, tm2_ban *out, size_t cap);

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
