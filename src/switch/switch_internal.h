/* Internal: the switch's state, shared by switch.c (lifecycle, commands,
 * broadcast), switch_peer.c (transport callbacks, peer lifecycle),
 * switch_dial.c (dial and redial services) and peer.c (the tm2_peer API).
 *
 * The network thread is the thread of the switch's engine (net/engine.h):
 * its own libuv thread, or the caller's for a switch made on a given engine
 * (switch/switch_engine.h).
 *
 * Threads: fields marked "loop" are touched only on the network thread;
 * "snap" fields are under snap_lock, "cmd" fields under cmd_lock, "life"
 * fields under life_lock. A peer's "lock" fields are under its own mutex. */
#ifndef TM2_SWITCH_INTERNAL_H
#define TM2_SWITCH_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>   /* uv_mutex_t, uv_cond_t, uv_thread_t: thread primitives */

#include "common/log.h"
#include "net/engine_uv.h"
#include "net/mconn_stream.h"
#include "net/transport.h"
#include "switch/bans.h"
#include "switch/dial_queue.h"
#include "switch/evict.h"
#include "common/netgroup.h"
#include "switch/ratelimit.h"
#include "switch/events.h"
#include "switch/peer_set.h"
#include "tm2p2p/switch.h"

#define TM2__SW_REASON_LEN TM2_EVENT_REASON_LEN

/* ---- peers --------------------------------------------------------------------- */

typedef struct tm2__kv {
    char *key;
    void *value;
    void (*free_fn)(void *);
    struct tm2__kv *next;
} tm2__kv;

/* Message counters of one channel (tm2_channel_counts). Added to with
 * relaxed atomics: sends come from any thread. */
typedef struct tm2__chan_ctr {
    atomic_uint_fast64_t msgs_sent, bytes_sent, msgs_recv, bytes_recv;
} tm2__chan_ctr;

static inline void tm2__ctr_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

struct tm2_peer {
    atomic_size_t refs;
    tm2_switch *sw;                 /* loop paths only, while the switch lives */
    tm2__transport_conn *conn;      /* owns the mcs and the NodeInfo */
    tm2_id id;
    tm2_netaddr socket_addr;
    bool outbound, persistent, priv, uncond;
    /* Inbound, yet in an outbound slot: the connection that won a
     * simultaneous open against our dial (or replaced our outbound one)
     * keeps that dial's slot, so neither side's limit moves. */
    bool slot_out;
    atomic_bool running;
    uint8_t our_ch[32];             /* bitmaps of channel bytes */
    uint8_t their_ch[32];

    uv_mutex_t lock;
    uv_cond_t idle;
    unsigned inflight;              /* lock: calls inside the mcs from other threads */
    bool gone;                      /* lock: the mcs reported on_close */
    tm2__kv *kv;                    /* lock */

    /* loop */
    bool started;                   /* mcs started */
    bool listed;                    /* in the peer set and the snapshot */
    bool counted;                   /* in n_in / n_out and the counts */
    bool in_add;                    /* add_peer callbacks running */
    bool removing;                  /* removal begun */
    bool removed;                   /* removal done */
    bool replaced;                  /* lost to a simultaneous dial: no redial */
    size_t n_added;                 /* reactors that got add_peer */
    uint64_t seq;                   /* connection order (larger: younger) */
    uint64_t last_msg_ms;           /* last reactor message received; 0: none */
    uint64_t listed_ms;             /* when it joined the peer set */
    int reason;
    char *reason_text;              /* set on removal (NULL: no memory for it) */
    struct tm2_peer *next_release;
    tm2__chan_ctr ctr[];            /* one per switch channel (sw->n_descs) */
};

/* Counted in n_out (the outbound limit, tm2_switch_counts), not n_in. */
static inline bool tm2__peer_counts_out(const tm2_peer *p)
{
    return p->outbound || p->slot_out;
}

/* tm2__transport_conn.owner_flags: the accept filter gave it slot_out. */
#define TM2__CONN_SLOT_OUT 1u

static inline bool tm2__bit(const uint8_t map[32], uint8_t ch)
{
    return (map[ch >> 3] >> (ch & 7)) & 1u;
}

static inline void tm2__bit_set(uint8_t map[32], uint8_t ch)
{
    map[ch >> 3] = (uint8_t)(map[ch >> 3] | (1u << (ch & 7)));
}

/* Counts one message on channel ch of p and of its switch (sent or
 * received). p->sw must be alive. */
void tm2__peer_count(tm2_peer *p, uint8_t ch, size_t len, bool sent);

/* A peer for conn with one reference (the switch's); NULL on ENOMEM. */
tm2_peer *tm2__peer_new(tm2_switch *sw, tm2__transport_conn *conn);

/* The mcs reported on_close: no sender from another thread is inside the
 * mcs once this returns, and none will enter it again. Loop thread. */
void tm2__peer_mark_gone(tm2_peer *p);

/* ---- the switch ------------------------------------------------------------------- */

/* STARTING and STOPPING make start and stop single-owner: the thread that
 * moved the state there finishes the transition, others wait for it. */
enum tm2__sw_state { SW_NEW = 0, SW_STARTING, SW_RUNNING, SW_STOPPING, SW_STOPPED };

enum tm2__cmd_type { CMD_DIAL = 1, CMD_STOP_PEER, CMD_EVERY, CMD_BANS };

/* Periodic work of tm2_switch_every. */
typedef struct tm2__every {
    tm2__timer timer;
    uint32_t interval_ms;
    void (*fn)(tm2_switch *sw, void *user);
    void *user;
    tm2_switch *sw;
    struct tm2__every *next;
} tm2__every;

typedef struct tm2__cmd {
    int type;
    tm2_peer *peer;                 /* CMD_STOP_PEER: a reference */
    int err;
    tm2_netaddr *addrs;             /* CMD_DIAL */
    size_t n;
    tm2__every *every;              /* CMD_EVERY */
    struct tm2__cmd *next;
} tm2__cmd;

/* Longest host name of a configured peer, with its NUL (IPv6 literals in
 * brackets included). */
#define TM2__HOST_MAX 256

/* A configured peer (persistent peer or seed), "ID@host:port". */
typedef struct tm2__configured {
    tm2_id id;
    char *host;
    uint16_t port;
    bool literal;                   /* host is an IP: addr is the dial address */
    tm2_netaddr addr;               /* literal: fixed; named: the last resolved */
    /* loop: the redial state of a persistent peer (the reference's) */
    bool attempted;                 /* dialled since the back-off was last reset */
    uint32_t attempts;              /* back-off exponent of the next dial */
    uint64_t connected_at;          /* 0: not connected */
} tm2__configured;

/* Parses spec into c (host copied). 0 or a tm2_peer_addr_parse error, TM2_ENOMEM. */
int tm2__sw_configured_init(tm2__configured *c, const char *spec);
void tm2__sw_configured_free(tm2__configured *c, size_t n);

/* A dial handed to the resolver, then the transport (its dial_user). */
typedef struct tm2__dial_ctx {
    tm2_netaddr addr;
    unsigned flags;
    tm2_switch *sw;
    tm2__work work;                 /* resolving a configured host name */
    char host[TM2__HOST_MAX];
    bool resolving;                 /* on the thread pool: resolve_done frees it */
    int resolve_err;                /* written by the pool, read after it */
    tm2_netaddr resolved;
} tm2__dial_ctx;

typedef struct tm2__reactor_slot {
    tm2_reactor r;                  /* name and channels point into this switch's copies */
    bool started;
} tm2__reactor_slot;

struct tm2_switch {
    /* Immutable after tm2_switch_new (our address: after start). */
    tm2_node_key key;
    tm2_id id;
    char *listen_addr;
    bool has_external;
    tm2_netaddr external;
    uint32_t max_inbound, max_outbound, max_pending_inbound;
    uint32_t handshake_timeout_ms, dial_timeout_ms;
    bool allow_duplicate_ip;
    int64_t redial_base_ms, redial_max_ms;
    uint64_t redial_stable_ms;
    uint32_t redial_scan_ms, seed_interval_ms;
    tm2__configured *persistent;    /* redial state: loop */
    size_t n_persistent;
    tm2__configured *seeds;
    size_t n_seeds;
    tm2_resolve_fn resolve;
    void *resolve_user;
    tm2_id *priv_ids;
    size_t n_priv;
    tm2_id *uncond_ids;
    size_t n_uncond;
    /* Admission, limits, eviction, bans (tm2_switch_config). */
    uint32_t max_pending_in_ip, accept_ip_rate, accept_ip_burst;
    uint32_t accept_subnet_rate, accept_subnet_burst;
    uint32_t max_in_ip, max_in_subnet;
    bool outbound_diversity, evict_inbound, limit_local;
    tm2__evict_params evict;
    uint64_t ban_duration_ms;
    char *ban_file;
    uint8_t group_hash_key[16];     /* keyed order of network groups (eviction) */
    bool has_dial_source;           /* tests: dials leave from this IP */
    tm2_netaddr dial_source;
    tm2_mconn_config mconn;
    tm2__reactor_slot *reactors;
    size_t n_reactors;
    tm2_channel_desc *descs;        /* all channels, registration order */
    size_t n_descs;
    int16_t ch_owner[256];          /* channel byte -> reactor index, -1 */
    uint8_t our_ch[32];
    tm2_log_fn log;
    void *log_user;
    tm2_log_level log_level;

    /* Our NodeInfo and the strings it points at. */
    tm2_node_info ni;
    tm2_version_info versions[5];
    char *app_version, *network, *moniker, *tx_index, *rpc_address, *software, *version;
    uint8_t ni_channels[TM2_NODE_INFO_MAX_CHANNELS];
    bool bound;
    tm2_netaddr bound_addr;         /* our ID @ the bound listen address */

    tm2__events *events;
    tm2__bans bans;                 /* any thread (own lock) */

    /* Cumulative counters (tm2_switch_stats): any thread reads, the
     * network thread and senders add. */
    struct {
        atomic_uint_fast64_t connected_in, connected_out, replaced, dials_started;
        atomic_uint_fast64_t handshakes_failed[TM2_STAGES];
        atomic_uint_fast64_t disconnected[TM2_STATS_REASONS], dials_failed[TM2_STATS_REASONS],
            rejected[TM2_STATS_REASONS];
        atomic_uint_fast64_t refused[TM2_REFUSALS], evicted[TM2_EVICTIONS];
        tm2__chan_ctr ch[TM2_MCONN_MAX_CHANNELS];
    } ctr;
    int8_t ch_index[256];           /* channel byte -> index in descs, -1 */
    atomic_uint_fast64_t started_ms; /* tm2__sw_now at start; 0 before */

    /* The network thread. */
    tm2__engine *e;                 /* the engine everything runs on */
    struct tm2__sw_own *own;        /* its own libuv engine and thread; NULL
                                     * on a given engine */
    tm2__mcs_loop ml;
    tm2__waker wake;
    tm2__timer dial_timer;
    tm2__timer redial_timer;
    tm2__timer seed_timer;
    bool handles_init;
    /* On a given engine (loop): observers of tm2__switch_new_on. */
    void (*event_hook)(void *user, const tm2_event *ev);
    void *event_hook_user;
    void (*stop_done)(tm2_switch *sw, void *user);
    void *stop_done_user;
    tm2__task stop_task;            /* stop_done's own turn */
    tm2__task wake_task;            /* tm2__sw_wake on the network thread */

    /* life */
    uv_mutex_t life_lock;
    uv_cond_t life_cond;
    int state;                      /* enum tm2__sw_state; life_cond signals changes */
    bool start_done;
    int start_err;
    bool freed_events;

    /* cmd */
    uv_mutex_t cmd_lock;
    tm2__cmd *cmds, **cmds_tail;
    bool cmd_closed;                /* the loop no longer takes commands */
    bool cmd_live;                  /* the async handle may be signalled */
    bool stop_requested;

    /* snap: what other threads may read. */
    uv_mutex_t snap_lock;
    tm2_peer **snap;
    size_t n_snap, cap_snap;
    size_t snap_in, snap_out, snap_dialing;
    size_t snap_queued, snap_persistent, snap_private, snap_uncond;
    tm2__transport *snap_tp;        /* the transport while it is open, for its stats */
    tm2__transport_stats tp_last;   /* its stats when it closed */

    /* loop */
    tm2__transport *transport;      /* NULL once closed */
    bool transport_closing;
    tm2__peer_set peers;
    tm2__peer_set inflight;         /* ID -> tm2__dial_ctx */
    size_t n_in, n_out;             /* listed inbound / outbound peers */
    size_t n_persistent_up, n_private_up;   /* among them */
    size_t n_uncond_in, n_uncond_out;       /* among them: not counted by the limits */
    uint64_t peer_seq;                      /* last tm2_peer.seq given */
    tm2__rate_table rate_ip, rate_subnet;   /* accept rates (empty when off) */
    /* Refusals at accept not yet logged (one summary line at a time). */
    uint64_t refused_unlogged[TM2_REFUSALS];
    uint64_t refused_log_ms;
    bool refused_log_started;
    /* The ban file: the list's change counter last written, a write on
     * the thread pool. */
    uint64_t bans_saved_gen;
    struct tm2__ban_save *ban_save;         /* in flight; NULL: none */
    size_t n_inflight_np;           /* non-persistent dials in flight (resolving included) */
    size_t n_resolving;             /* resolver work not yet returned */
    /* Connections that lost a simultaneous open's tie-break and were closed
     * by the peer: its winning connection may still be on its way. */
    struct {
        tm2_id id;
        uint64_t at;
    } lost[8];
    size_t n_lost;
    tm2__dialq dialq;
    size_t open_conns;              /* peers whose mcs has not reported on_close */
    tm2_peer *release;              /* peers whose switch reference goes next turn */
    tm2__every *everys;             /* running periodic timers */
    bool stopping;
    bool finished;
};

/* Every outbound slot taken by a peer or a dial in flight (persistent and
 * unconditional ones are outside the limit). Loop thread. */
static inline bool tm2__sw_outbound_full(const tm2_switch *sw)
{
    return sw->n_out - sw->n_uncond_out + sw->n_inflight_np >= sw->max_outbound;
}

/* ---- switch.c ------------------------------------------------------------------------- */

void tm2__sw_log(tm2_switch *sw, tm2_log_level lv, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool tm2__sw_log_on(const tm2_switch *sw, tm2_log_level lv);
const char *tm2__sw_addr_str(const tm2_netaddr *a, char *buf, size_t cap);
void tm2__sw_publish(tm2_switch *sw, tm2_event_type type, const tm2_id *id,
                     const tm2_netaddr *addr, bool outbound, int reason, const char *text);
/* Counts a published event (stats.c). Loop thread. */
void tm2__sw_count_event(tm2_switch *sw, const tm2_event *ev);
/* Refreshes the counts other threads read. Loop thread. */
void tm2__sw_update_counts(tm2_switch *sw);
/* Wakes the loop for the release list / commands (a later turn). Any
 * thread. */
void tm2__sw_wake(tm2_switch *sw);
bool tm2__sw_is_persistent_id(const tm2_switch *sw, const tm2_id *id, size_t *idx);
/* The configured entry of a persistent peer or a seed with this ID, or NULL. */
tm2__configured *tm2__sw_configured(tm2_switch *sw, const tm2_id *id);
/* The engine's clocks: monotonic ms (network thread) and Unix ms (any
 * thread on libuv; the public calls that read it on a given engine are made
 * on its thread). */
uint64_t tm2__sw_now(tm2_switch *sw);
int64_t tm2__sw_wall(tm2_switch *sw);
/* Ourselves: our ID, or our bound or advertised dial address. */
bool tm2__sw_is_self(tm2_switch *sw, const tm2_netaddr *a);
/* Uniform in [0, 1), from the engine's randomness. */
double tm2__sw_rand01(tm2_switch *sw);

/* Tests: dials leave from this IP (before tm2_switch_start). 0, TM2_EINVAL
 * or TM2_ESTATE. */
int tm2__switch_set_dial_source(tm2_switch *sw, const char *ip);

/* ---- switch_peer.c ----------------------------------------------------------------------- */

extern const tm2__transport_cbs tm2__sw_transport_cbs;
extern const tm2__mcs_cbs tm2__sw_conn_cbs;
/* Removes p (reactors' remove_peer, DISCONNECTED event, redial of a
 * persistent peer). Idempotent. Loop thread. */
void tm2__sw_peer_remove(tm2_switch *sw, tm2_peer *p, int reason, const char *text);
/* Processes the release list. Loop thread. */
void tm2__sw_release_peers(tm2_switch *sw);

/* ---- switch_admit.c ---------------------------------------------------------------------- */

/* Whether a peer or an address is exempt from the per-IP and per-subnet
 * rules (local addresses without limit_local_addrs). */
bool tm2__sw_addr_exempt(const tm2_switch *sw, const tm2_netaddr *a);
/* The transport's admit callback: refusals before the handshake. */
int tm2__sw_admit(tm2__transport *t, const tm2_netaddr *remote, size_t pending_from_ip);
/* After the handshake, for a verified inbound connection that is not a
 * replacement: 0, or TM2_ELIMIT / TM2_EBANNED with why written; *victim
 * gets a peer to evict first (NULL: none) and *evict_reason its reason. */
int tm2__sw_admit_verified(tm2_switch *sw, const tm2__transport_conn *c, char *why,
                           size_t why_len, tm2_peer **victim, int *evict_reason);
/* Evicts victim to make room (reason: tm2_eviction). Loop thread. */
void tm2__sw_evict(tm2_switch *sw, tm2_peer *victim, int reason, const tm2_id *for_id);
/* Whether an outbound dial to addr is refused by outbound diversity
 * (persistent and unconditional dials never are). */
bool tm2__sw_group_taken(tm2_switch *sw, const tm2_netaddr *addr);
/* Flushes the summary of refusals at accept (the redial tick). */
void tm2__sw_refusal_log_flush(tm2_switch *sw);
/* A peer stopped with reason: banned when reason is misbehaviour. */
void tm2__sw_ban_misbehaving(tm2_switch *sw, tm2_peer *p, int reason, const char *text);
/* The ban list changed: stops connected peers it now bans, saves the file.
 * Loop thread. */
void tm2__sw_bans_changed(tm2_switch *sw);
/* A ban file write in flight (stop waits for it). */
bool tm2__sw_ban_saving(const tm2_switch *sw);
/* Writes the ban file now if the list changed since the last write (stop,
 * after the loop ended). */
void tm2__sw_bans_save_sync(tm2_switch *sw);
/* Whether id / the IP of a is banned now. */
bool tm2__sw_banned_id(tm2_switch *sw, const tm2_id *id);
bool tm2__sw_banned_ip(tm2_switch *sw, const tm2_netaddr *a);

/* ---- switch_dial.c ------------------------------------------------------------------------- */

/* Queues a dial request (the reference's DialPeers, on the loop). */
void tm2__sw_dial_request(tm2_switch *sw, const tm2_netaddr *addr);
/* Queues a dial of the persistent peer idx at its configured address: at
 * once on a first attempt, else after the back-off. Skipped when it is
 * connected, queued or being dialled. */
void tm2__sw_redial(tm2_switch *sw, size_t idx);
/* The persistent peer idx connected / was lost (not replaced). */
void tm2__sw_persistent_up(tm2_switch *sw, size_t idx);
void tm2__sw_persistent_down(tm2_switch *sw, size_t idx);
/* One seed round (the seed timer's tick). */
void tm2__sw_seed_round(tm2_switch *sw);
/* Re-arms the dial timer at the queue's next due time. */
void tm2__sw_arm_dial_timer(tm2_switch *sw);
void tm2__sw_dial_timer_cb(tm2__timer *t);
/* The redial service's tick. */
void tm2__sw_redial_scan(tm2_switch *sw);
/* A dial handed to the transport ended (ctx freed). */
void tm2__sw_dial_done(tm2_switch *sw, tm2__dial_ctx *ctx);
/* Drops every queued and in-flight dial (stop). */
void tm2__sw_dial_clear(tm2_switch *sw);

#endif
