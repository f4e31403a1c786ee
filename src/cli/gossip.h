/* A small flooding gossip reactor, for measuring a test network.
 *
 * Nodes originate messages (origin index, sequence number, monotonic send
 * time) that every node forwards once to all its other peers; a bounded
 * seen-set drops repeats. Each first delivery is counted per second of
 * origination and its latency (now - send time, CLOCK_MONOTONIC, which is
 * shared by every process of the host) goes into a histogram, so a test
 * network can compute the delivery ratio over any period and latency
 * percentiles, in one process or summed over many.
 *
 * Message (channel CLI_GOSSIP_CHANNEL), big-endian:
 *   u8 version (1) | u8 hops | u16 zero | u32 origin | u64 seq | u64 sent_us | payload
 * A malformed message stops the peer (TM2_EPROTO).
 *
 * Threads: the reactor runs on the switch's network thread; counters are
 * atomics, so cli_gossip_add_totals may run on any thread at any time. */
#ifndef TM2_CLI_GOSSIP_H
#define TM2_CLI_GOSSIP_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/reactor.h"
#include "tm2p2p/switch.h"

#define CLI_GOSSIP_CHANNEL 0x70
#define CLI_GOSSIP_HEADER  24
#define CLI_GOSSIP_MAX_HOPS 64
#define CLI_GOSSIP_MAX_PAYLOAD 16384

/* Log-linear latency histogram over microseconds: exact below 64 us, then
 * 32 buckets per power of two (about 3% wide). */
#define CLI_HIST_BUCKETS (64 + 36 * 32)

typedef struct cli_gossip_config {
    uint32_t origin;        /* this node's index, carried in its messages */
    size_t seen_cap;        /* message IDs remembered; 0: 16384 */
    size_t payload;         /* extra bytes per message; 0: none; at most 16384 */
    uint64_t epoch_ms;      /* CLOCK_MONOTONIC ms where second 0 of the counters starts */
    uint32_t seconds;       /* per-second counters kept; later seconds add to the last; 0: 3600 */
    tm2_log_fn log;
    void *log_user;
    tm2_log_level log_level;
} cli_gossip_config;

/* Sums over one or many nodes. by_sec arrays have `seconds` entries. */
typedef struct cli_gossip_totals {
    uint64_t originated;
    uint64_t delivered;     /* first receptions of other nodes' messages */
    uint64_t duplicates;    /* receptions dropped by the seen-set */
    uint64_t forwarded;     /* copies queued to peers, own messages included */
    uint64_t send_failed;   /* copies a full queue refused */
    uint64_t malformed;
    uint32_t seconds;
    uint64_t *orig_by_sec;
    uint64_t *deliv_by_sec;
    uint64_t hist[CLI_HIST_BUCKETS];
} cli_gossip_totals;

typedef struct cli_gossip cli_gossip;

/* A message's header fields. */
typedef struct cli_gossip_msg {
    uint8_t hops;
    uint32_t origin;
    uint64_t seq;
    uint64_t sent_us;
    size_t payload_len;
} cli_gossip_msg;

/* Checks and reads a received message: 0, or TM2_EPROTO (short, oversized,
 * unknown version, non-zero reserved bits, too many hops). */
int cli_gossip_decode(const uint8_t *msg, size_t len, cli_gossip_msg *out);
/* Writes the header of m into buf[0..CLI_GOSSIP_HEADER). */
void cli_gossip_encode_header(const cli_gossip_msg *m, uint8_t *buf);

uint64_t cli_mono_ms(void);
uint64_t cli_mono_us(void);

int cli_gossip_new(const cli_gossip_config *cfg, cli_gossip **out);
/* After the switch is stopped. NULL is fine. */
void cli_gossip_free(cli_gossip *g);
const tm2_reactor *cli_gossip_reactor(cli_gossip *g);

/* Originates one message every interval_ms on sw's network thread until the
 * monotonic time until_ms (0: forever). Call once, after tm2_switch_new. */
int cli_gossip_run(cli_gossip *g, tm2_switch *sw, uint32_t interval_ms, uint64_t until_ms);

/* Totals: init allocates the arrays (0 or -1), free releases them. */
int cli_gossip_totals_init(cli_gossip_totals *t, uint32_t seconds);
void cli_gossip_totals_free(cli_gossip_totals *t);
/* Adds g's counters into t (seconds beyond t's range add to its last). */
void cli_gossip_add_totals(const cli_gossip *g, cli_gossip_totals *t);
/* Adds b into a. */
void cli_gossip_totals_merge(cli_gossip_totals *a, const cli_gossip_totals *b);

/* JSON form (sparse arrays) for status files, and back (adding into t).
 * to_json returns NULL when out of memory; add_json returns 0 or -1. */
cJSON *cli_gossip_totals_to_json(const cli_gossip_totals *t);
int cli_gossip_totals_add_json(cli_gossip_totals *t, const cJSON *j);

/* Sums of t's by_sec arrays over seconds [from, end). */
uint64_t cli_gossip_sum(const uint64_t *by_sec, uint32_t seconds, uint32_t from);

/* Histogram helpers. */
unsigned cli_hist_bucket(uint64_t us);
uint64_t cli_hist_lower(unsigned bucket);
uint64_t cli_hist_count(const uint64_t *hist);
/* The q-quantile (0..1) in microseconds (a bucket's lower bound); 0 if empty. */
uint64_t cli_hist_quantile(const uint64_t *hist, double q);

#endif
