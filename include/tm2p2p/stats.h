/* Counters of a switch and of its peers, for programs that embed tm2p2p
 * (the program's /metrics and /status read the same).
 *
 * The network thread keeps them as it works; reading them never waits for
 * it and never stops it: each value is read atomically, the whole is not one
 * instant's snapshot (a connect may show in one field and not yet in
 * another). Cumulative counters start at tm2_switch_new and never go down;
 * they include peers that are gone.
 *
 * Thread rules: tm2_switch_stats and tm2_peer_stats may be called from any
 * thread, reactor callbacks included, while the switch is not freed. */
#ifndef TM2P2P_STATS_H
#define TM2P2P_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/channel.h"
#include "tm2p2p/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Slots of the by-reason arrays below: entry k counts reason -k, a TM2_E*
 * code (tm2_errname names it); entry 0 counts clean stops. */
#define TM2_STATS_REASONS 128

/* Where a handshake failed; index of handshakes_failed. */
typedef enum tm2_handshake_stage {
    TM2_STAGE_CONNECT = 1,       /* TCP connect of a dial */
    TM2_STAGE_ACCEPT = 2,        /* accepted socket unusable, or duplicate ip:port */
    TM2_STAGE_SECRET = 3,        /* secret connection */
    TM2_STAGE_NODEINFO = 4,      /* NodeInfo exchange */
    TM2_STAGE_CHECK = 5,         /* NodeInfo checks, admission (limits, duplicates) */
} tm2_handshake_stage;
#define TM2_STAGES 6

/* Why an inbound socket was closed at accept, before any handshake work;
 * index of inbound_refused. tm2_refusal_name gives the label. */
typedef enum tm2_refusal {
    TM2_REFUSED_FULL = 0,        /* inbound full, nothing to evict, no slot for a missing
                                    unconditional or persistent peer */
    TM2_REFUSED_PENDING_IP = 1,  /* max_pending_inbound_per_ip handshakes from its IP */
    TM2_REFUSED_RATE_IP = 2,     /* accept_ip_rate */
    TM2_REFUSED_RATE_SUBNET = 3, /* accept_subnet_rate */
    TM2_REFUSED_PER_IP = 4,      /* max_inbound_per_ip peers from its IP */
    TM2_REFUSED_PER_SUBNET = 5,  /* max_inbound_per_subnet peers from its subnet */
    TM2_REFUSED_BANNED = 6,      /* its IP is banned */
} tm2_refusal;
#define TM2_REFUSALS 7

/* Why an inbound peer was evicted; index of evicted. */
typedef enum tm2_eviction {
    TM2_EVICTED_NEWCOMER = 0,    /* room for a newcomer from a network group not yet held */
    TM2_EVICTED_PERSISTENT = 1,  /* room for a persistent peer */
} tm2_eviction;
#define TM2_EVICTIONS 2

/* "full", "pending_ip", "rate_ip", "rate_subnet", "per_ip", "per_subnet",
 * "banned"; "newcomer", "persistent"; "?" for anything else. */
TM2_API const char *tm2_refusal_name(int refusal);
TM2_API const char *tm2_eviction_name(int eviction);

/* Messages are counted when a send queue takes them (sent) and when they
 * are handed to the reactor (received); bytes are message bytes. */
typedef struct tm2_channel_counts {
    uint8_t id;
    uint64_t msgs_sent, bytes_sent;
    uint64_t msgs_recv, bytes_recv;
} tm2_channel_counts;

typedef struct tm2_switch_counters {
    uint64_t uptime_ms;                  /* since tm2_switch_start; 0 before */

    /* Now. */
    uint32_t peers_inbound, peers_outbound;      /* by slot, as tm2_switch_counts */
    uint32_t peers_persistent, peers_private;    /* among the above */
    uint32_t peers_unconditional;                /* among the above */
    uint32_t bans_active;                /* bans in force */
    uint32_t dials_queued, dials_in_flight;
    uint32_t handshakes_inbound, handshakes_outbound;   /* upgrades in flight */

    /* Since tm2_switch_new. */
    uint64_t peers_connected_inbound, peers_connected_outbound;
    uint64_t peers_replaced;             /* simultaneous opens resolved */
    uint64_t peers_disconnected[TM2_STATS_REASONS];   /* by reason */
    uint64_t dials_started;              /* handed to the transport */
    uint64_t dials_failed[TM2_STATS_REASONS];         /* by reason */
    uint64_t inbound_accepted;           /* sockets taken into a handshake */
    uint64_t inbound_dropped;            /* closed at accept: too many handshakes in flight */
    uint64_t inbound_refused[TM2_REFUSALS];           /* closed at accept, by tm2_refusal */
    uint64_t evicted[TM2_EVICTIONS];                  /* inbound peers evicted, by tm2_eviction */
    uint64_t bans_total;                 /* bans made (by misbehaviour or tm2_switch_ban) */
    uint64_t handshakes_ok;              /* both directions */
    uint64_t handshakes_failed[TM2_STAGES];           /* by stage */
    uint64_t rejected[TM2_STATS_REASONS];             /* inbound peers refused, by reason */
    uint64_t recv_rate_stalls;           /* reads paused for a peer's receive rate */
    uint64_t wire_bytes_sent, wire_bytes_recv;   /* plaintext packet bytes, every connection */

    size_t n_channels;                   /* registration order */
    tm2_channel_counts channels[TM2_MCONN_MAX_CHANNELS];
} tm2_switch_counters;

typedef struct tm2_switch tm2_switch;
typedef struct tm2_peer tm2_peer;

/* Fills *out. Returns 0 or TM2_EINVAL. */
TM2_API int tm2_switch_stats(tm2_switch *sw, tm2_switch_counters *out);

typedef struct tm2_peer_counters {
    uint64_t uptime_ms;
    uint64_t wire_bytes_sent, wire_bytes_recv;   /* plaintext packets, as flow-rated */
    size_t n_channels;                   /* ours, registration order */
    tm2_channel_counts channels[TM2_MCONN_MAX_CHANNELS];
    size_t queue_size[TM2_MCONN_MAX_CHANNELS];   /* messages waiting, per channel */
    /* Round trip of the keepalive Ping (every ping_interval_ms) to the
     * first Pong after it: the last and the smallest; 0 = not measured yet
     * (or never will be: see tm2_mconn_status). Inbound eviction protects
     * the smallest (tm2_switch_config.evict_protect_latency). */
    uint32_t rtt_ms, min_rtt_ms;
} tm2_peer_counters;

/* Fills *out for a peer held by a reference. After the peer is gone the
 * message counts stay readable; uptime, wire bytes, queues and round trips
 * read 0.
 * Returns 0 or TM2_EINVAL. */
TM2_API int tm2_peer_stats(tm2_peer *p, tm2_peer_counters *out);

#ifdef __cplusplus
}
#endif
#endif
