/* What the peer benchmarks (bench_switch, bench_vs_reference) share: a
 * node's channel set, the switch configuration they start from, readers of
 * /proc, child processes spoken to in lines, and the peer driver.
 *
 * The peer driver is a process of its own that dials a hub over loopback
 * with tm2p2p transports on one libuv loop, so the hub's memory and CPU are
 * measured without the dialling side's. The same driver dials tm2p2p and
 * the Go reference alike. It takes one command per line on its input and
 * answers on its output:
 *
 *   idle N INFLIGHT ADDR [SRCS]
 *                          dial ADDR N times, at most INFLIGHT at once, each
 *                          with its own node key, then run an MConnection
 *                          with the node's channel set that stays idle
 *                          (pings every 60 s); answers
 *                          CONNECTED ok=.. failed=.. secs=.. (ok and failed
 *                          over every batch, secs of this one). With SRCS,
 *                          dials leave in turn from 127.0.0.2 ..
 *                          127.0.0.(1+SRCS) (bound before connect: each
 *                          source has its own ephemeral ports). Once a
 *                          batch has settled, another idle command adds
 *                          its peers to them
 *   recv N ADDR            the same with N peers at once and rate limits
 *                          off, counting every message received
 *   loop CONC ADDR         handshakes back to back: CONC dials in flight,
 *                          each closed as soon as it is upgraded (TCP,
 *                          secret connection, NodeInfo exchange) and
 *                          replaced by the next; no answer
 *   count                  COUNT ok=.. failed=.. msgs=.. t=.. cpu=..: peers
 *                          upgraded, dials failed, messages received, its
 *                          monotonic clock and process CPU, in seconds
 *
 * ADDR is ID@127.0.0.1:port. The end of its input ends the driver at once
 * (exit 0), as does a watchdog (exit 3) after PEER_DRIVER_MAX_S. */
#ifndef TM2_BENCH_PEER_DRIVER_H
#define TM2_BENCH_PEER_DRIVER_H

#include <stddef.h>
#include <sys/types.h>

#include "tm2p2p/channel.h"
#include "tm2p2p/switch.h"

#define BENCH_NETWORK "bench-chain"
#define PEER_DRIVER_MAX_S 170

/* A node's channels: mempool, blockchain, four consensus, discovery
 * (tm2ref peer-hub registers the same). */
extern const tm2_channel_desc bench_node_chans[];
#define BENCH_N_NODE_CHANS 7

/* Every switch of the benchmarks starts from this: a fresh key, the bench
 * network, a node's connection settings. */
void bench_switch_config(tm2_switch_config *c);

/* Raises RLIMIT_NOFILE to its hard limit; exits if that is below need. */
void bench_raise_nofile(size_t need);

/* Resident set of a process (0: this one), from /proc/PID/statm. */
size_t bench_rss_bytes(pid_t pid);

/* For a broadcaster that missed peers with full queues: waits until every
 * peer's queue on channel ch holds at most limit messages (exits after 10 s). */
void bench_wait_queues(tm2_peer **ps, size_t n, uint8_t ch, size_t limit);

/* ---- a child process, spoken to in lines ------------------------------------------- */

typedef struct bench_child {
    pid_t pid;
    int in;                       /* its stdin; -1 once closed */
    int out;                      /* its stdout */
    size_t len;
    char buf[4096];
} bench_child;

/* Spawns argv[0] with its stdin and stdout on pipes (stderr shared). */
void bench_child_spawn(bench_child *c, const char *const argv[]);
void bench_child_send(bench_child *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Reads lines until one starts with tag and a space; exits if the child
 * ends or timeout_ms passes first. */
void bench_child_expect(bench_child *c, const char *tag, char *line, size_t cap, int timeout_ms);
/* Closes its stdin (which ends the driver and tm2ref peer-hub) and reaps
 * it, killing it if it is still there after 10 s. */
void bench_child_end(bench_child *c);

/* ---- the driver ---------------------------------------------------------------------- */

/* Runs the driver on these descriptors (they may be the same socket); never
 * returns. */
_Noreturn void peer_driver_main(int in_fd, int out_fd);

/* A driver's COUNT answer. */
typedef struct peer_count {
    unsigned long long ok, failed, msgs;
    double t, cpu;
} peer_count;

peer_count peer_driver_count(bench_child *d);

/* Forks a driver speaking over one socket pair: call it before this process
 * starts threads (and while its heap is small), after raising the
 * descriptor limit the driver inherits. */
bench_child peer_driver_fork(void);

#endif
