/* Internal: whole networks of real switches in the simulated world
 * (sim/simnet.h), run by `tm2p2p sim` and the simulation tests.
 *
 * Every node is a real tm2_switch with real discovery and a flooding
 * gossip reactor, on a host of one simnet world: the same code as a node on
 * libuv, over virtual links, in virtual time, on the calling thread. A run
 * is a function of its configuration: the same seed gives the same run, and
 * the summary's digest (of the world's event trace and of every switch
 * event) says so.
 *
 * Nodes live on loopback addresses spread over /16 groups (127.G.x.y), never
 * dialled for real: the world is virtual. Switches group local addresses
 * like public ones (limit_local_addrs), so the group rules (outbound
 * diversity, eviction, the address book's buckets) act as on the internet.
 *
 * Threads: one; nothing here is thread-safe. */
#ifndef TM2_SIM_SIM_H
#define TM2_SIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/channel.h"

enum tm2__sim_scenario {
    TM2__SIM_BOOTSTRAP = 0,   /* every node starts from the seeds */
    TM2__SIM_CHURN,           /* then nodes crash and come back */
    TM2__SIM_PARTITION,       /* then the network is cut in two, then healed */
    TM2__SIM_ECLIPSE,         /* attackers answer discovery with their own addresses */
    TM2__SIM_SLOW,            /* slow, lossy, narrow links */
    TM2__SIM_SCENARIOS
};

/* "bootstrap", ... ; NULL for an unknown value. */
const char *tm2__sim_scenario_name(int scenario);
/* The scenario named s, or -1. */
int tm2__sim_scenario_parse(const char *s);

/* What progress and the summary report. */
typedef struct tm2__sim_progress {
    uint64_t now_ms;              /* virtual */
    uint64_t wall_ms;             /* since the run began */
    uint64_t events;              /* world events run */
    uint32_t live;                /* honest nodes up (the graph: but seeds) */
    uint32_t live_plain;          /* of those, not seeds */
    uint32_t at_target;           /* of those, with max_outbound outbound peers */
    uint32_t components;          /* of the honest graph (live nodes) */
    uint64_t edges;               /* honest peerings (each counted once) */
    uint64_t gossip_sent, gossip_delivered;
} tm2__sim_progress;

typedef struct tm2__sim_config {
    uint64_t seed;
    uint32_t nodes;               /* honest nodes, seeds included */
    uint32_t seeds;               /* the first nodes are seeds (3) */
    uint64_t duration_ms;         /* virtual */
    uint32_t lat_min_ms, lat_max_ms;   /* per link, from the seed */
    double loss;                  /* per segment, 0..1: a retransmission's delay */
    uint64_t bandwidth;           /* bytes/s per link direction; 0: unlimited */
    int scenario;                 /* enum tm2__sim_scenario */
    uint32_t max_inbound, max_outbound;
    uint32_t gossip_every_ms;     /* a message from a random live node; 0: none */
    uint32_t attackers;           /* eclipse: attacker nodes (two /16 groups) */
    uint32_t churn_every_ms;      /* churn: a random node crashes this often */
    uint32_t churn_down_ms;       /* and comes back this much later */
    uint64_t cut_at_ms, heal_at_ms;    /* partition */
    /* Check the properties at every switch event (limits, peers counted
     * once, counts equal to the switch's) and the graph every second;
     * the first violation ends the run with its description. */
    bool check;
    /* Called every progress_every_ms of virtual time (0: never). */
    uint32_t progress_every_ms;
    void (*progress)(void *user, const tm2__sim_progress *p);
    void *user;
} tm2__sim_config;

/* Defaults: 100 nodes, 3 seeds, 60 s, 20-200 ms, no loss, unlimited
 * bandwidth, bootstrap, 40 in / 10 out, gossip every 1 s, check off. */
void tm2__sim_config_default(tm2__sim_config *cfg);

#define TM2__SIM_DEG_MAX 128

typedef struct tm2__sim_channel {
    uint8_t id;
    uint64_t msgs, bytes;         /* sent, summed over nodes */
} tm2__sim_channel;

typedef struct tm2__sim_report {
    tm2__sim_progress last;
    int64_t t_connected_ms;       /* first time the honest graph was one component; -1 never */
    int64_t t_at_target_ms;       /* first time every live honest node had max_outbound; -1 */
    int64_t t_healed_ms;          /* partition: one component again after the heal; -1 */
    int64_t t_split_ms;           /* partition: first time after the cut with 2+ components */
    uint32_t deg_min, deg_p50, deg_p90, deg_max;
    double deg_mean;
    uint32_t deg_hist[TM2__SIM_DEG_MAX + 1];   /* the last bucket holds the rest */
    uint32_t diameter;            /* longest shortest path at the end */
    uint32_t diameter_sources;    /* nodes it was measured from (all, or a sample) */
    uint32_t components;
    uint64_t gossip_expected;     /* deliveries: live nodes (but the origin) at origination */
    uint64_t gossip_delivered;    /* first receipts */
    uint64_t lat_p50_ms, lat_p90_ms, lat_p99_ms, lat_max_ms;
    size_t n_channels;
    tm2__sim_channel channels[TM2_MCONN_MAX_CHANNELS];
    uint64_t crashes, restarts;
    /* eclipse: outbound peers of honest nodes at the end, and how many are
     * honest. */
    uint64_t outbound_total, outbound_honest;
    uint64_t world_events, switch_events;
    uint64_t wall_ms;
    uint64_t mem_bytes;           /* peak resident set growth over the run */
    uint8_t digest[32];
    bool violated;
    char violation[256];
} tm2__sim_report;

/* Runs the network of cfg to its end. 0, TM2_EINVAL (bad config: err says
 * which field), TM2_ENOMEM, or the error a node failed to start with.
 * A property violation is not an error: the report says it. */
int tm2__sim_run(const tm2__sim_config *cfg, tm2__sim_report *rep, char *err, size_t err_len);

#endif
