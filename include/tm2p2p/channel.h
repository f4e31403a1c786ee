/* Channels of a multiplexed connection (WIRE.md section 6): the channel
 * descriptor a reactor registers, the connection's tuning knobs and the
 * status snapshot a peer reports.
 *
 * Plain value types: copy them freely; nothing here keeps pointers. */
#ifndef TM2P2P_CHANNEL_H
#define TM2P2P_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A connection carries at most this many channels (a NodeInfo lists at most
 * 16 channel bytes, so no peer can use more). */
#define TM2_MCONN_MAX_CHANNELS 16

/* Reference defaults used when a descriptor field is 0 (WIRE.md 6.5). */
#define TM2_CHANNEL_DEFAULT_SEND_QUEUE_CAPACITY   1
#define TM2_CHANNEL_DEFAULT_RECV_BUFFER_CAPACITY  4096
#define TM2_CHANNEL_DEFAULT_RECV_MESSAGE_CAPACITY 22020096   /* 21 MiB */

typedef struct tm2_channel_desc {
    uint8_t id;                    /* channel byte on the wire */
    uint32_t priority;             /* scheduling weight; must be > 0 */
    size_t send_queue_capacity;    /* messages waiting to be sent (0: 1) */
    size_t recv_buffer_capacity;   /* initial reassembly allocation, not a limit (0: 4096) */
    size_t recv_message_capacity;  /* largest message accepted; larger is fatal (0: 21 MiB) */
} tm2_channel_desc;

/* Connection tuning. Time values are milliseconds, rates bytes per second. */
typedef struct tm2_mconn_config {
    uint64_t send_rate;            /* 0 = unlimited */
    uint64_t recv_rate;            /* 0 = unlimited */
    size_t max_packet_payload;     /* bytes per packet; must match the peer's (1024) */
    uint32_t flush_throttle_ms;    /* longest time data waits to be coalesced; 0 = flush at once */
    uint32_t ping_interval_ms;     /* 0 = no keepalive */
    uint32_t pong_timeout_ms;      /* must be > 0 and < ping_interval_ms when pinging */
    /* Payload bytes of outgoing messages admitted across all channels:
     * waiting for a queue slot, queued, or being sent. A send waits (or
     * try-send fails) while the rest of the budget is too small; a message
     * larger than the whole budget is refused. 0 = no budget. */
    size_t max_send_buffer_bytes;
    /* Bytes of partially assembled incoming messages across all channels; a
     * peer going over it is a protocol error. 0 = no budget. */
    size_t max_recv_buffer_bytes;
    /* A message split into packets must be complete within this time of its
     * first packet (later packets do not extend it); otherwise the
     * connection fails. 0 = no deadline. */
    uint32_t recv_assembly_timeout_ms;
} tm2_mconn_config;

/* The defaults a node uses (the reference's config.toml defaults, see
 * tm2p2p/defaults.h): 5120000 B/s both ways, 1024-byte payloads, 100 ms
 * flush throttle, ping every 60 s, pong within 45 s, 20 MiB send and
 * receive budgets, 30 s to assemble a message. */
TM2_API void tm2_mconn_config_default(tm2_mconn_config *cfg);

/* Throughput of one direction, like the reference's flow.Status. Rates are
 * bytes per second, measured over 100 ms samples. */
typedef struct tm2_flow_status {
    uint64_t bytes;                /* total transferred */
    uint64_t duration_ms;          /* time covered by the samples */
    uint64_t idle_ms;              /* time since the last non-empty transfer */
    uint64_t inst_rate;            /* last sample */
    uint64_t cur_rate;             /* exponential moving average (1 s window) */
    uint64_t avg_rate;             /* bytes / duration */
    uint64_t peak_rate;            /* highest sample */
} tm2_flow_status;

typedef struct tm2_channel_status {
    uint8_t id;
    uint32_t priority;
    size_t send_queue_capacity;
    size_t send_queue_size;        /* waiting messages plus the one being sent */
    int64_t recently_sent;         /* decaying byte count the scheduler uses */
} tm2_channel_status;

typedef struct tm2_mconn_status {
    uint64_t duration_ms;          /* since the connection started */
    tm2_flow_status send;
    tm2_flow_status recv;
    size_t n_channels;             /* entries used in channels[], registration order */
    tm2_channel_status channels[TM2_MCONN_MAX_CHANNELS];
    /* Round trip of our keepalive Ping to the first Pong after it: the last
     * one and the smallest seen (under 1 ms reads 1). 0: none yet, no
     * keepalive, or the peer sent a Pong we had not asked for, after which
     * it is never measured (a Pong carries no nonce: one sent ahead of our
     * Ping would fake a short trip). */
    uint32_t rtt_ms, min_rtt_ms;
} tm2_mconn_status;

#ifdef __cplusplus
}
#endif
#endif
