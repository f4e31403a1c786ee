/* Internal: the simulated network, the second backend of net/engine.h.
 *
 * One world holds many hosts, each a tm2__engine, on one thread and in
 * virtual time. Events run one at a time in (due time, sequence) order, so
 * the same seed and the same calls give the same run, bit for bit: every
 * random choice (link latencies, losses, the hosts' random bytes) derives
 * from the seed, and nothing depends on pointer values or the real clock.
 *
 * Links: each ordered pair of hosts has a latency drawn from the configured
 * range. A connection is two byte streams; writes are cut into segments of
 * at most 64 KiB that leave the sender at the configured bandwidth, FIFO
 * per connection and direction (until then they are the sender's queued
 * bytes, and a close drops them), and arrive one latency later, in order.
 * With unlimited bandwidth a write leaves at once: nothing is queued. A lost
 * segment is not lost data: it arrives one retransmission timeout late
 * (max(200 ms, 2 x latency), doubling when lost again) and holds back what
 * follows it. Hosts live on 198.18.0.0/15 or on loopback addresses; a
 * loopback address no host holds reaches the dialler itself.
 *
 * Connects: a SYN to a host without a listener on the port is refused after
 * one round trip; to an unknown host or across a cut nothing answers (the
 * dialler bounds the wait with a timer of its own).
 *
 * Partitions: hosts carry a group (0 by default). While the world is cut,
 * segments between hosts of different groups are held and arrive, in order,
 * one latency after the heal.
 *
 * Crash: the host falls off the network at once. Its sockets are reset
 * (the far ends see on_end TM2_EIO one latency later) and say nothing more
 * to it, its listeners refuse, its connects and writes fail. Its timers,
 * tasks, wakers and work still run and close callbacks still come, so the
 * code on it (a switch) can shut down and be freed as usual.
 *
 * Threads: one. tm2__waker_send too must be called on it. */
#ifndef TM2_SIM_SIMNET_H
#define TM2_SIM_SIMNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/engine.h"
#include "tm2p2p/netaddr.h"

typedef struct tm2__simnet tm2__simnet;

/* 2026-01-01T00:00:00Z in Unix milliseconds: the default wall time at
 * virtual time 0. */
#define TM2__SIMNET_EPOCH_MS INT64_C(1767225600000)

typedef struct tm2__simnet_config {
    uint64_t seed;
    uint32_t latency_min_ms;   /* one-way latency per ordered host pair */
    uint32_t latency_max_ms;   /* < min is taken as min */
    double loss;               /* probability a segment is retransmitted, [0, 1) */
    uint64_t bandwidth;        /* bytes/s of each connection's each direction; 0 = unlimited */
    int64_t epoch_ms;          /* wall_ms at virtual time 0; 0 = TM2__SIMNET_EPOCH_MS */
} tm2__simnet_config;

typedef struct tm2__simnet_stats {
    uint64_t events;           /* events run */
    uint64_t bytes_delivered;  /* stream bytes handed to on_read */
    uint64_t segments_delivered; /* segments that reached their receiver */
    uint64_t conns_opened;     /* connections a listener took into its backlog */
    uint64_t conns_live;       /* connection records held now */
    uint64_t hosts_live;
    uint64_t mem_bytes;        /* memory the simulator holds (not the hosts' own code) */
} tm2__simnet_stats;

/* A new world; cfg NULL for the defaults (seed 0, latency 0 ms, no loss,
 * unlimited bandwidth). NULL when out of memory. */
tm2__simnet *tm2__simnet_new(const tm2__simnet_config *cfg);

/* Frees the world and whatever hosts and connections are left, without
 * calling any callback. */
void tm2__simnet_free(tm2__simnet *w);

/* A host with its IP (IPv4 in 198.18.0.0/15 or 127.0.0.0/8, unique in the
 * world); its engine. NULL for other addresses, a taken one, or no memory. */
tm2__engine *tm2__simnet_host_new(tm2__simnet *w, const tm2_netaddr *ip);

/* The host dies abruptly (see Crash above). Idempotent. */
void tm2__simnet_host_crash(tm2__engine *e);

/* Brings a crashed host back, with the same address and index and an empty
 * state, once every socket, listener and waker of it is closed (their
 * close callbacks ran) and its timers are closed: 0, or TM2_ESTATE when it
 * is not crashed or something is still open. */
int tm2__simnet_host_revive(tm2__engine *e);

/* Frees a host whose sockets, listeners and wakers are all closed (their
 * close callbacks ran) and whose timers are closed. */
void tm2__simnet_host_free(tm2__engine *e);

tm2__simnet *tm2__simnet_world(tm2__engine *e);
/* The host's index in the world, in creation order from 0. */
uint32_t tm2__simnet_host_index(tm2__engine *e);

/* Partitions (see above). */
void tm2__simnet_set_group(tm2__simnet *w, tm2__engine *e, int group);
void tm2__simnet_cut(tm2__simnet *w, bool on);

/* Runs the next event; false when there is none. */
bool tm2__simnet_step(tm2__simnet *w);
/* Runs every event due up to t_ms, then sets the clock to t_ms if it is
 * behind. */
void tm2__simnet_run_until(tm2__simnet *w, uint64_t t_ms);
uint64_t tm2__simnet_now(const tm2__simnet *w);
uint64_t tm2__simnet_events(const tm2__simnet *w);

/* fn(user, w) after every event (property checks); NULL to remove. */
void tm2__simnet_set_hook(tm2__simnet *w, void (*fn)(void *user, tm2__simnet *w), void *user);

/* BLAKE2b-256 over the trace so far: per event its virtual time, host
 * index, kind and ordinals or byte counts. Equal digests, equal runs. */
void tm2__simnet_digest(const tm2__simnet *w, uint8_t out[32]);

void tm2__simnet_stats_get(const tm2__simnet *w, tm2__simnet_stats *out);

#endif
