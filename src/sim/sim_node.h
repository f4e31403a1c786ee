/* Internal to sim/: one simulated node and the run that holds them. */
#ifndef TM2_SIM_SIM_NODE_H
#define TM2_SIM_SIM_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "net/engine.h"
#include "sim/sim.h"
#include "sim/simnet.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/switch.h"

#define SIM_PORT 26656u
#define SIM_GOSSIP_CHANNEL 0x71u
#define SIM_GOSSIP_SIZE 12u            /* message number (4), origin time (8) */
#define SIM_LAT_MAX_MS 60000u           /* latencies above count here */

typedef struct sim_run sim_run;

/* A peering as one node sees it. */
typedef struct sim_edge {
    uint32_t peer;                      /* node index */
    bool outbound;                      /* in an outbound slot (dialled, or the
                                         * survivor of a simultaneous open) */
} sim_edge;

typedef struct sim_node {
    sim_run *run;
    uint32_t idx;
    bool seed, attacker;
    bool up;                            /* running (not crashed, not stopping) */
    bool stopping;                      /* crashed, its switch still closing */
    bool restart_due;                   /* come back once stopped */
    int group;                          /* partition half */
    tm2_netaddr addr;                   /* ID@127.G.a.b:26656 */
    char addr_s[128];
    tm2_node_key key;
    /* Seeds: the other seeds; partition: one peer it keeps (addr_s of
     * others). */
    const char **persistent;
    size_t n_persistent;
    tm2__engine *e;
    tm2_switch *sw;
    tm2_discovery *disc;
    tm2_reactor reactors[2];
    size_t n_reactors;
    tm2_channel_desc gossip_ch;
    /* Gossip: peers that speak it (references), messages seen (bits). */
    tm2_peer **gpeers;
    size_t n_gpeers, cap_gpeers;
    uint8_t *seen;
    size_t seen_bytes;
    /* Peerings, from the switch's events. */
    sim_edge *edges;
    uint32_t n_edges, cap_edges;
    uint32_t n_in, n_out;
    uint64_t restart_at;                /* churn: when it comes back */
} sim_node;

struct sim_run {
    tm2__sim_config cfg;
    tm2__sim_report *rep;
    tm2__simnet *world;
    sim_node *nodes;                    /* honest first, then attackers */
    uint32_t n_nodes;                   /* honest + attackers */
    const char **seed_addrs;            /* the seeds' "ID@ip:port" */
    uint64_t rng[4];                    /* the driver's own choices */
    crypto_generichash_state trace;     /* switch events */
    uint64_t switch_events;
    uint32_t gossip_msgs;               /* originated so far */
    uint32_t gossip_cap;                /* message numbers that fit the seen bits */
    uint32_t *lat_hist;                 /* [SIM_LAT_MAX_MS + 1], ms */
    uint32_t running;                   /* switches not yet fully stopped */
    int fatal;                          /* a node failed to start */
    char *err;
    size_t err_len;
};

/* ---- sim_node.c ---- */
int sim_node_start(sim_node *n);
/* Crash: the host dies at once, the switch is torn down behind it. */
void sim_node_crash(sim_node *n);
/* The node's switch stops and is freed (end of the run). */
void sim_node_stop(sim_node *n);
void sim_node_free(sim_node *n);
void sim_node_originate(sim_node *n, uint32_t msg);
void sim_violation(sim_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Node index of an address of the run, or UINT32_MAX. */
uint32_t sim_node_of_ip(const sim_run *r, const tm2_netaddr *a);
void sim_node_ip(const sim_run *r, uint32_t idx, tm2_netaddr *out);

/* ---- sim_report.c ---- */
/* The graph of live honest nodes now: components, edges, nodes at target. */
void sim_graph_scan(sim_run *r, tm2__sim_progress *p);
/* Degrees, diameter, latencies, channels, eclipse shares into r->rep. */
void sim_report_finish(sim_run *r);

uint64_t sim_rand(sim_run *r);
static inline uint32_t sim_uniform(sim_run *r, uint32_t n) { return n ? (uint32_t)(sim_rand(r) % n) : 0; }

#endif
