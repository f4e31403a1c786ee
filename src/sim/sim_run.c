/* A whole simulated network from start to end: nodes, scenario, clock. */
#include "sim/sim_node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char *const scenario_names[TM2__SIM_SCENARIOS] = {
    "bootstrap", "churn", "partition", "eclipse", "slow",
};

const char *tm2__sim_scenario_name(int scenario)
{
    return scenario >= 0 && scenario < TM2__SIM_SCENARIOS ? scenario_names[scenario] : NULL;
}

int tm2__sim_scenario_parse(const char *s)
{
    for (int i = 0; i < TM2__SIM_SCENARIOS; i++)
        if (strcmp(s, scenario_names[i]) == 0)
            return i;
    return -1;
}

void tm2__sim_config_default(tm2__sim_config *cfg)
{
    *cfg = (tm2__sim_config){
        .seed = 1, .nodes = 100, .seeds = 3, .duration_ms = 60000,
        .lat_min_ms = 20, .lat_max_ms = 200,
        .scenario = TM2__SIM_BOOTSTRAP,
        .max_inbound = 40, .max_outbound = 10,
        .gossip_every_ms = 1000,
        .attackers = 0, .churn_every_ms = 1000, .churn_down_ms = 10000,
    };
}

/* xoshiro256** seeded through splitmix64: the driver's own choices (which
 * node originates, which crashes), apart from the nodes' random streams. */
static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sim_rand(sim_run *r)
{
    uint64_t *s = r->rng, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (uint64_t)res * 4096u;
}

static int check_config(const tm2__sim_config *c, char *err, size_t len)
{
    const char *bad = NULL;
    if (c->nodes < 2 || c->nodes > 100000)
        bad = "nodes (2 to 100000)";
    else if (c->seeds < 1 || c->seeds >= c->nodes)
        bad = "seeds (1 to nodes - 1)";
    else if (c->duration_ms == 0)
        bad = "duration";
    else if (c->lat_min_ms > c->lat_max_ms || c->lat_max_ms > 10000)
        bad = "latency (min <= max <= 10 s)";
    else if (!(c->loss >= 0.0 && c->loss < 0.5))
        bad = "loss (0 to 50%)";
    else if (c->scenario < 0 || c->scenario >= TM2__SIM_SCENARIOS)
        bad = "scenario";
    else if (c->max_outbound == 0 || c->max_outbound >= c->nodes - c->seeds)
        bad = "max outbound (1 to non-seed nodes - 1)";
    else if (c->max_inbound < c->max_outbound)
        bad = "max inbound (at least max outbound)";
    else if (c->attackers > 100000)
        bad = "attackers";
    else if (c->scenario == TM2__SIM_CHURN && (c->churn_every_ms == 0 || c->churn_down_ms == 0))
        bad = "churn intervals";
    if (bad) {
        snprintf(err, len, "invalid %s", bad);
        return TM2_EINVAL;
    }
    return 0;
}

static void node_key(const sim_run *r, uint32_t idx, tm2_node_key *key)
{
    uint8_t in[20], seed[32];
    memcpy(in, "sim1", 4);
    memcpy(in + 4, &r->cfg.seed, 8);
    memcpy(in + 12, &idx, 4);
    memset(in + 16, 0, 4);
    crypto_generichash(seed, sizeof seed, in, sizeof in, NULL, 0);
    tm2_node_key_from_seed(key, seed);
    sodium_memzero(seed, sizeof seed);
}

static int build_nodes(sim_run *r)
{
    const tm2__sim_config *c = &r->cfg;
    r->n_nodes = c->nodes + (c->scenario == TM2__SIM_ECLIPSE ? c->attackers : 0);
    r->nodes = calloc(r->n_nodes, sizeof *r->nodes);
    r->seed_addrs = calloc(c->seeds, sizeof *r->seed_addrs);
    r->lat_hist = calloc(SIM_LAT_MAX_MS + 1u, sizeof *r->lat_hist);
    if (!r->nodes || !r->seed_addrs || !r->lat_hist)
        return TM2_ENOMEM;
    for (uint32_t i = 0; i < r->n_nodes; i++) {
        sim_node *n = &r->nodes[i];
        n->run = r;
        n->idx = i;
        n->seed = i < c->seeds;
        n->attacker = i >= c->nodes;
        /* Halves by index parity put the seeds on both sides. */
        n->group = (int)(i % 2u);
        node_key(r, i, &n->key);
        sim_node_ip(r, i, &n->addr);
        tm2_node_key_id(&n->key, &n->addr.id);
        tm2_netaddr_format(&n->addr, n->addr_s, sizeof n->addr_s);
        if (n->seed)
            r->seed_addrs[i] = n->addr_s;
    }
    /* Seeds keep each other as persistent peers, so their books mix and a
     * node that asks one hears of the others' nodes too. */
    for (uint32_t i = 0; i < c->seeds && c->seeds > 1; i++) {
        sim_node *n = &r->nodes[i];
        if (!(n->persistent = calloc(c->seeds - 1u, sizeof *n->persistent)))
            return TM2_ENOMEM;
        for (uint32_t j = 0; j < c->seeds; j++)
            if (j != i)
                n->persistent[n->n_persistent++] = r->seed_addrs[j];
    }
    if (c->scenario == TM2__SIM_PARTITION) {
        /* Each node keeps one peer of its own choosing, as operators do:
         * after the heal their redials join the halves. */
        uint32_t span = c->nodes - c->seeds;
        for (uint32_t i = c->seeds; i < c->nodes; i++) {
            uint32_t j = c->seeds + (uint32_t)((i - c->seeds + 1u + sim_uniform(r, span - 1u)) % span);
            sim_node *n = &r->nodes[i];
            if (!(n->persistent = calloc(1, sizeof *n->persistent)))
                return TM2_ENOMEM;
            n->persistent[n->n_persistent++] = r->nodes[j].addr_s;
        }
    }
    return 0;
}

/* Runs the world to t, ending early on a fatal start error. */
static void advance(sim_run *r, uint64_t t)
{
    tm2__simnet_run_until(r->world, t);
}

static int start_node(sim_run *r, sim_node *n)
{
    int rc = sim_node_start(n);
    if (rc < 0) {
        snprintf(r->err, r->err_len, "node %u (%s) failed to start: %s", n->idx, n->addr_s,
                 tm2_strerror(rc));
        r->fatal = rc;
    }
    return rc;
}

/* Picks a live honest non-seed node, or UINT32_MAX. */
static uint32_t pick_live(sim_run *r, bool with_seeds)
{
    uint32_t lo = with_seeds ? 0 : r->cfg.seeds, span = r->cfg.nodes - lo;
    for (int tries = 0; tries < 64; tries++) {
        uint32_t i = lo + sim_uniform(r, span);
        if (r->nodes[i].up)
            return i;
    }
    return UINT32_MAX;
}

static void originate(sim_run *r)
{
    uint32_t i = pick_live(r, true);
    if (i == UINT32_MAX)
        return;
    uint32_t live = 0;
    for (uint32_t k = 0; k < r->cfg.nodes; k++)
        live += r->nodes[k].up;
    r->rep->gossip_expected += live - 1u;
    r->rep->last.gossip_sent++;
    uint32_t msg = r->gossip_msgs++;
    sim_node_originate(&r->nodes[i], msg);
}

static void churn(sim_run *r, uint64_t now)
{
    for (uint32_t i = 0; i < r->cfg.nodes; i++) {
        sim_node *n = &r->nodes[i];
        if (n->restart_due && !n->up && !n->stopping && now >= n->restart_at) {
            n->restart_due = false;
            if (start_node(r, n) == 0)
                r->rep->restarts++;
        }
    }
    uint32_t v = pick_live(r, false);
    if (v == UINT32_MAX)
        return;
    sim_node *n = &r->nodes[v];
    sim_node_crash(n);
    n->restart_due = true;
    n->restart_at = now + r->cfg.churn_down_ms;
    r->rep->crashes++;
}

static void tick(sim_run *r, uint64_t now, uint64_t wall0)
{
    tm2__sim_progress *p = &r->rep->last;
    sim_graph_scan(r, p);
    p->now_ms = now;
    p->wall_ms = wall_ms() - wall0;
    p->events = tm2__simnet_events(r->world);
    p->gossip_delivered = r->rep->gossip_delivered;
    tm2__sim_report *rep = r->rep;
    bool one = p->components == 1 && p->live > 0;
    bool cut = r->cfg.scenario == TM2__SIM_PARTITION && now >= r->cfg.cut_at_ms &&
               now < r->cfg.heal_at_ms;
    if (one && rep->t_connected_ms < 0)
        rep->t_connected_ms = (int64_t)now;
    if (p->at_target == p->live_plain && p->live_plain > 0 && rep->t_at_target_ms < 0)
        rep->t_at_target_ms = (int64_t)now;
    if (cut && p->components >= 2 && rep->t_split_ms < 0)
        rep->t_split_ms = (int64_t)now;
    if (r->cfg.scenario == TM2__SIM_PARTITION && now >= r->cfg.heal_at_ms && one &&
        rep->t_healed_ms < 0)
        rep->t_healed_ms = (int64_t)now;
    if (r->cfg.check && r->cfg.scenario != TM2__SIM_PARTITION && rep->t_connected_ms >= 0 &&
        p->components > 1 && r->cfg.scenario != TM2__SIM_CHURN &&
        now > (uint64_t)rep->t_connected_ms + 60000u)
        sim_violation(r, "the graph split into %u components", p->components);
}

int tm2__sim_run(const tm2__sim_config *cfg, tm2__sim_report *rep, char *err, size_t err_len)
{
    memset(rep, 0, sizeof *rep);
    rep->t_connected_ms = rep->t_at_target_ms = rep->t_healed_ms = rep->t_split_ms = -1;
    int rc = check_config(cfg, err, err_len);
    if (rc)
        return rc;
    sim_run run = {.cfg = *cfg, .rep = rep, .err = err, .err_len = err_len};
    sim_run *r = &run;
    uint64_t x = cfg->seed ^ 0x73696d2d64726976u;
    for (int i = 0; i < 4; i++)
        r->rng[i] = splitmix(&x);
    crypto_generichash_init(&r->trace, NULL, 0, 32);
    uint64_t wall0 = wall_ms(), rss0 = rss_bytes(), rss_peak = rss0;

    tm2__simnet_config wc = {0};
    wc.seed = cfg->seed;
    wc.latency_min_ms = cfg->lat_min_ms;
    wc.latency_max_ms = cfg->lat_max_ms;
    wc.loss = cfg->loss;
    wc.bandwidth = cfg->bandwidth;
    if (!(r->world = tm2__simnet_new(&wc))) {
        snprintf(err, err_len, "out of memory");
        return TM2_ENOMEM;
    }
    if ((rc = build_nodes(r)) < 0) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    /* Seeds first, then the other nodes one by one over the first tenth
     * of the run, as a network that comes up over a while. */
    uint64_t step_ms = cfg->duration_ms / 10u / r->n_nodes, next_start = 0, now = 0;
    if (step_ms == 0)
        step_ms = 1;
    uint32_t started = 0;
    uint64_t next_tick = 1000, next_gossip = cfg->gossip_every_ms ? 5000 : UINT64_MAX;
    uint64_t next_churn = cfg->scenario == TM2__SIM_CHURN ? cfg->duration_ms / 4 : UINT64_MAX;
    uint64_t next_progress = cfg->progress_every_ms ? cfg->progress_every_ms : UINT64_MAX;
    bool cut_done = false, heal_done = false;
    while (now < cfg->duration_ms && !r->fatal) {
        while (started < r->n_nodes && next_start <= now) {
            if (start_node(r, &r->nodes[started]) < 0)
                break;
            started++;
            next_start = started < cfg->seeds ? 0 : next_start + step_ms;
        }
        if (r->fatal)
            break;
        if (cfg->scenario == TM2__SIM_PARTITION) {
            if (!cut_done && now >= cfg->cut_at_ms) {
                tm2__simnet_cut(r->world, true);
                cut_done = true;
            }
            if (!heal_done && now >= cfg->heal_at_ms) {
                tm2__simnet_cut(r->world, false);
                heal_done = true;
            }
        }
        if (now >= next_gossip) {
            originate(r);
            next_gossip += cfg->gossip_every_ms;
        }
        if (now >= next_churn) {
            churn(r, now);
            next_churn += cfg->churn_every_ms;
        }
        if (now >= next_tick) {
            tick(r, now, wall0);
            next_tick += 1000;
            uint64_t rs = rss_bytes();
            if (rs > rss_peak)
                rss_peak = rs;
        }
        if (now >= next_progress) {
            cfg->progress(cfg->user, &rep->last);
            next_progress += cfg->progress_every_ms;
        }
        uint64_t t = cfg->duration_ms;
        uint64_t cand[] = {started < r->n_nodes ? next_start : UINT64_MAX, next_gossip, next_churn,
                           next_tick, next_progress,
                           !cut_done && cfg->scenario == TM2__SIM_PARTITION ? cfg->cut_at_ms : UINT64_MAX,
                           !heal_done && cfg->scenario == TM2__SIM_PARTITION ? cfg->heal_at_ms : UINT64_MAX};
        for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++)
            if (cand[i] > now && cand[i] < t)
                t = cand[i];
        advance(r, t);
        now = t;
    }
    if (!r->fatal) {
        tick(r, now, wall0);
        if (cfg->progress)
            cfg->progress(cfg->user, &rep->last);
        sim_report_finish(r);
    }
    /* Tear everything down through the switches' own shutdown. */
    for (uint32_t i = 0; i < r->n_nodes; i++)
        if (r->nodes[i].sw && r->nodes[i].up)
            sim_node_stop(&r->nodes[i]);
    while (r->running > 0 && tm2__simnet_step(r->world))
        ;
    if (r->running > 0 && getenv("TM2_SIM_TRACE"))
        for (uint32_t i = 0; i < r->n_nodes; i++)
            if (r->nodes[i].sw)
                fprintf(stderr, "node %u never stopped (up %d stopping %d)\n", i, r->nodes[i].up,
                        r->nodes[i].stopping);
    rc = r->fatal;
    rep->world_events = tm2__simnet_events(r->world);
    rep->switch_events = r->switch_events;
    uint8_t world_digest[32];
    tm2__simnet_digest(r->world, world_digest);
    crypto_generichash_update(&r->trace, world_digest, sizeof world_digest);
    crypto_generichash_final(&r->trace, rep->digest, sizeof rep->digest);
    rep->wall_ms = wall_ms() - wall0;
    rep->mem_bytes = rss_peak > rss0 ? rss_peak - rss0 : 0;
out:
    if (r->nodes)
        for (uint32_t i = 0; i < r->n_nodes; i++)
            sim_node_free(&r->nodes[i]);
    free(r->nodes);
    free(r->seed_addrs);
    free(r->lat_hist);
    tm2__simnet_free(r->world);
    return rc;
}
