/* The crawler engine: probes addresses of a TM2 network and (as a seed)
 * answers discovery requests, on one libuv loop thread of its own.
 *
 * A probe is short on purpose: TCP connect, secret connection and NodeInfo
 * exchange through the library's transport (net/transport.h), then one
 * discovery Request on channel 0x50; the probe hangs up as soon as the
 * Response arrives, or after ask_timeout_ms when the node has nothing to
 * share. Every address is probed once per round; rounds start every
 * interval_ms (or when the previous one ends, if later). Addresses found in
 * responses are probed in the same round. Nothing is dialled outside the
 * allow policy (allow.h); at most max_inflight probes run at once, at most
 * per_host per IP, and probes of one IP start host_gap_ms apart. Two probes
 * of one address start at least 1 s apart (interval_ms if shorter): a node
 * removes our last connection a moment after it ends, and a new one in
 * that moment would be refused as a duplicate peer.
 *
 * Trust: a node is recorded (its NodeInfo, and as reachable) only when the
 * key it authenticated with, the ID its NodeInfo carries and the ID we
 * dialled are one; only such a node is asked for addresses, and only its
 * answers make advertised-by edges. A peer whose NodeInfo names another ID
 * than its key's is a 'liar' (recorded with both IDs, never asked, never
 * counted reachable under either); a consistent node answering at an
 * address advertised with another ID makes that address 'wrong_id' (and its
 * own ID at that address a new candidate). A NodeInfo of another network is
 * recorded as 'incompatible'.
 *
 * Network: with no network configured, probes run one at a time until a
 * node answers; the first NodeInfo received gives the network (and the
 * version set we present, every entry marked optional), and that node is
 * probed again at once. The same calibration adopts the version set of the
 * first node of our network that refuses ours.
 *
 * Seed: with a listen address, inbound peers are served: each may send one
 * Request and gets at most answer_max addresses verified within fresh_ms
 * (crawl_select: one per node, varied subnets, never its own), then the
 * connection is closed linger_ms after the answer (at once when there is
 * nothing to give; serve_timeout_ms when it asks nothing). Inbound peers'
 * advertised addresses become candidates, probed like any other.
 *
 * Records go to the store (store.h) as they happen; the engine keeps its own
 * view in memory and never waits on the disk.
 *
 * Threads: new, add_row and start on one thread; progress, listen_addr and
 * the done descriptor from any; stop from any thread but the engine's. */
#ifndef TM2_CRAWL_ENGINE_H
#define TM2_CRAWL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crawl/allow.h"
#include "crawl/store.h"
#include "tm2p2p/key.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/switch.h"

typedef struct crawl_progress {
    char network[64];            /* "" until known */
    uint32_t round;              /* current or last round, 0 before the first */
    bool round_active;
    uint32_t rounds_done;
    size_t round_probed;         /* probes finished in the round */
    size_t round_reachable;      /* of which verified */
    size_t inflight, queued;
    size_t known;                /* addresses */
    size_t reachable;            /* addresses whose last probe was verified */
    size_t refused;              /* addresses outside the allow policy */
    size_t liars;                /* addresses whose last probe found a liar */
    uint64_t probes, verified;   /* since start */
    uint64_t sessions, answers;  /* seed: inbound peers served, answers sent */
    uint64_t addrs_dropped;      /* new addresses over max_addrs */
    bool finished;               /* every round run (or a fatal error) */
    int error;                   /* the fatal error, 0 if none */
} crawl_progress;

typedef struct crawl_config {
    tm2_node_key probe_key;      /* the prober's identity (copied) */
    const char *network;         /* NULL or "": learn from the first node */
    const char *moniker;         /* NULL: "tm2p2p-crawler" */
    crawl_allow allow;
    const tm2_netaddr *seeds;    /* where to start (with IDs) */
    size_t n_seeds;
    uint32_t max_inflight;       /* 0: 16 */
    uint32_t per_host;           /* 0: 2 */
    uint32_t host_gap_ms;        /* 250 by convention (0 is allowed) */
    uint32_t dial_timeout_ms;    /* 0: 3000 */
    uint32_t handshake_timeout_ms; /* each of secret connection and NodeInfo; 0: 3000 */
    uint32_t ask_timeout_ms;     /* wait for a Response; 0: 3000 */
    uint32_t interval_ms;        /* between round starts; 0: 60000 */
    uint32_t rounds;             /* 0: until stopped */
    uint64_t gone_after_ms;      /* unreachable this long: gone; 0: 24 h */
    size_t max_addrs;            /* 0: 100000 */

    /* Seed serving: on when listen_addr is set. */
    tm2_node_key serve_key;      /* the seed's node key (copied) */
    const char *listen_addr;     /* "tcp://ip:port" */
    const char *external_addr;   /* advertised "ip:port"; NULL: the bound address */
    uint32_t serve_timeout_ms;   /* 0: 10000 */
    uint32_t linger_ms;          /* 0: 200 */
    uint64_t fresh_ms;           /* 0: 3 * interval_ms */
    uint32_t max_sessions;       /* 0: 256 */
    uint32_t answer_max;         /* 0: 30 (at most 30) */

    crawl_store *store;          /* NULL: nothing recorded */
    tm2_log_fn log;
    void *log_user;
    tm2_log_level log_level;

    /* Called on the engine thread at the end of every round (metrics). */
    void (*on_round)(const crawl_progress *p, void *user);
    void *hook_user;
} crawl_config;

typedef struct crawl_engine crawl_engine;

/* Copies cfg. 0, or TM2_EINVAL / TM2_ENOMEM / TM2_EIO with a sentence in err. */
int crawl_engine_new(const crawl_config *cfg, crawl_engine **out, char *err, size_t err_len);

/* The most connections the engine holds at once, a descriptor each:
 * probes in flight and, when it listens, the sessions it serves. */
uint64_t crawl_engine_max_conns(const crawl_engine *e);

/* A stored address (before start); its status is kept, its allow flag
 * re-evaluated against the current policy. 0, TM2_EADDR (row skipped) or
 * TM2_ENOMEM. */
int crawl_engine_add_row(crawl_engine *e, const crawl_addr_row *row);

/* Starts the thread (and the listener). 0, or the listen error. */
int crawl_engine_start(crawl_engine *e, char *err, size_t err_len);

/* Readable (eventfd) once progress.finished is true. */
int crawl_engine_done_fd(const crawl_engine *e);

void crawl_engine_progress(crawl_engine *e, crawl_progress *out);

/* The seed's bound address with its ID. 0 or TM2_ESTATE. */
int crawl_engine_listen_addr(crawl_engine *e, tm2_netaddr *out);

/* Closes every connection, stops the thread and returns once it ended.
 * Records made so far are posted to the store. Idempotent. */
void crawl_engine_stop(crawl_engine *e);

/* After stop (or if never started). NULL is fine. */
void crawl_engine_free(crawl_engine *e);

/* Status names stored in the database. */
const char *crawl_status_name(int status);

#endif
