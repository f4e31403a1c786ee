/* One simulated node: a real switch with discovery and a gossip reactor
 * (or, for an attacker, a discovery impostor) on a host of the world. */
#include "sim/sim_node.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/pex_msg.h"
#include "discovery/discovery_engine.h"
#include "switch/switch_engine.h"

/* ---- addresses --------------------------------------------------------------- */

/* Honest node i: 127.(1 + i % 240).a.b with a.b numbering i / 240, so the
 * nodes spread over 240 /16 groups; attacker j: 127.(250 + j % 2).a.b, two
 * groups, as an attacker holding two ranges. */
#define HONEST_GROUPS 240u

static void ip4(tm2_netaddr *out, unsigned a, unsigned b, unsigned c, unsigned d)
{
    memset(out, 0, sizeof *out);
    out->ip[10] = out->ip[11] = 0xff;
    out->ip[12] = (uint8_t)a;
    out->ip[13] = (uint8_t)b;
    out->ip[14] = (uint8_t)c;
    out->ip[15] = (uint8_t)d;
    out->port = SIM_PORT;
}

void sim_node_ip(const sim_run *r, uint32_t idx, tm2_netaddr *out)
{
    uint32_t honest = r->cfg.nodes;
    if (idx < honest) {
        uint32_t h = idx / HONEST_GROUPS;
        ip4(out, 127, 1 + idx % HONEST_GROUPS, h / 250u, 1 + h % 250u);
    } else {
        uint32_t j = idx - honest, h = j / 2u;
        ip4(out, 127, 250 + j % 2u, h / 250u, 1 + h % 250u);
    }
}

uint32_t sim_node_of_ip(const sim_run *r, const tm2_netaddr *a)
{
    const uint8_t *ip = a->ip;
    if (ip[10] != 0xff || ip[11] != 0xff || ip[12] != 127 || ip[15] == 0)
        return UINT32_MAX;
    uint32_t h = (uint32_t)ip[14] * 250u + (ip[15] - 1u), idx;
    if (ip[13] >= 1 && ip[13] <= HONEST_GROUPS)
        idx = h * HONEST_GROUPS + (ip[13] - 1u);
    else if (ip[13] == 250 || ip[13] == 251)
        idx = r->cfg.nodes + h * 2u + (ip[13] - 250u);
    else
        return UINT32_MAX;
    return idx < r->n_nodes ? idx : UINT32_MAX;
}

void sim_violation(sim_run *r, const char *fmt, ...)
{
    if (r->rep->violated)
        return;
    r->rep->violated = true;
    int n = snprintf(r->rep->violation, sizeof r->rep->violation, "t=%llu ms: ",
                     (unsigned long long)tm2__simnet_now(r->world));
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof r->rep->violation)
        vsnprintf(r->rep->violation + n, sizeof r->rep->violation - (size_t)n, fmt, ap);
    va_end(ap);
}

/* ---- peerings from events ------------------------------------------------------ */

static sim_edge *edge_find(sim_node *n, uint32_t peer)
{
    for (uint32_t i = 0; i < n->n_edges; i++)
        if (n->edges[i].peer == peer)
            return &n->edges[i];
    return NULL;
}

static void edge_add(sim_node *n, uint32_t peer, bool outbound)
{
    if (n->n_edges == n->cap_edges) {
        uint32_t cap = n->cap_edges ? n->cap_edges * 2 : 16;
        sim_edge *e = realloc(n->edges, cap * sizeof *e);
        if (!e) {
            sim_violation(n->run, "out of memory for the peerings of node %u", n->idx);
            return;
        }
        n->edges = e;
        n->cap_edges = cap;
    }
    n->edges[n->n_edges++] = (sim_edge){.peer = peer, .outbound = outbound};
    outbound ? n->n_out++ : n->n_in++;
}

static void edge_remove(sim_node *n, sim_edge *e)
{
    e->outbound ? n->n_out-- : n->n_in--;
    *e = n->edges[--n->n_edges];
}

static const char *event_name(tm2_event_type t)
{
    switch (t) {
    case TM2_EVENT_PEER_CONNECTED: return "connected";
    case TM2_EVENT_PEER_DISCONNECTED: return "disconnected";
    case TM2_EVENT_DIAL_FAILED: return "dial failed";
    case TM2_EVENT_PEER_REJECTED: return "rejected";
    case TM2_EVENT_PEER_REPLACED: return "replaced";
    case TM2_EVENT_PEER_BANNED: return "banned";
    }
    return "?";
}

/* The properties every event must keep: a peer is counted once, the limits
 * hold, and the switch agrees with the events it published. */
static void check_node(sim_node *n, const tm2_event *ev)
{
    sim_run *r = n->run;
    size_t in = 0, out = 0, dialing = 0;
    tm2_switch_counts(n->sw, &in, &out, &dialing);
    /* A persistent peer passes a full inbound side (at most one each). */
    uint32_t max_in = n->seed ? r->n_nodes + 16u
                              : (n->attacker ? r->n_nodes : r->cfg.max_inbound + n->n_persistent);
    if (in > max_in || out > r->cfg.max_outbound + (n->seed ? 0u : 1u))
        sim_violation(r, "node %u over its limits: %zu in (max %u), %zu out (max %u) after %s",
                      n->idx, in, max_in, out, r->cfg.max_outbound, event_name(ev->type));
    if (n->n_in > max_in || n->n_out > r->cfg.max_outbound + 1u)
        sim_violation(r, "node %u: events count %u in, %u out", n->idx, n->n_in, n->n_out);
}

static void on_event(void *user, const tm2_event *ev)
{
    sim_node *n = user;
    sim_run *r = n->run;
    r->switch_events++;
    uint32_t peer = sim_node_of_ip(r, &ev->addr);
    uint8_t rec[24];
    uint64_t now = tm2__simnet_now(r->world);
    memcpy(rec, &now, 8);
    memcpy(rec + 8, &n->idx, 4);
    memcpy(rec + 12, &peer, 4);
    uint32_t t = (uint32_t)ev->type;
    memcpy(rec + 16, &t, 4);
    int32_t why = ev->reason;
    memcpy(rec + 20, &why, 4);
    crypto_generichash_update(&r->trace, rec, sizeof rec);
    if (getenv("TM2_SIM_TRACE"))
        fprintf(stderr, "t=%llu node %u: %s peer %u %s reason %d %s\n", (unsigned long long)now, n->idx,
                event_name(ev->type), peer, ev->outbound ? "out" : "in", ev->reason, ev->reason_text);
    if (!n->up)
        return;
    if (peer == UINT32_MAX) {
        if (ev->type & (TM2_EVENT_PEER_CONNECTED | TM2_EVENT_PEER_DISCONNECTED))
            sim_violation(r, "node %u: a peer at an address outside the network", n->idx);
        return;
    }
    sim_edge *e = edge_find(n, peer);
    switch (ev->type) {
    case TM2_EVENT_PEER_CONNECTED:
        if (e)
            sim_violation(r, "node %u counts peer %u twice", n->idx, peer);
        else
            edge_add(n, peer, tm2__switch_counts_out(n->sw, &ev->peer_id));
        break;
    case TM2_EVENT_PEER_DISCONNECTED:
        if (e)
            edge_remove(n, e);
        else
            sim_violation(r, "node %u: peer %u disconnected, never connected", n->idx, peer);
        break;
    case TM2_EVENT_PEER_REPLACED:
        if (!e) {
            sim_violation(r, "node %u: peer %u replaced, never connected", n->idx, peer);
        } else {
            bool out = tm2__switch_counts_out(n->sw, &ev->peer_id);
            if (e->outbound != out) {
                e->outbound ? n->n_out-- : n->n_in--;
                e->outbound = out;
                e->outbound ? n->n_out++ : n->n_in++;
            }
        }
        break;
    default:
        break;
    }
    if (r->cfg.check)
        check_node(n, ev);
}

/* ---- gossip ---------------------------------------------------------------------- */

static void put_be(uint8_t *p, uint64_t v, int len)
{
    for (int i = len - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int len)
{
    uint64_t v = 0;
    for (int i = 0; i < len; i++)
        v = v << 8 | p[i];
    return v;
}

/* True the first time msg is seen. */
static bool see(sim_node *n, uint32_t msg)
{
    size_t byte = msg / 8u;
    if (byte >= n->seen_bytes) {
        size_t nb = n->seen_bytes ? n->seen_bytes : 64;
        while (nb <= byte)
            nb *= 2;
        uint8_t *s = realloc(n->seen, nb);
        if (!s)
            return false;
        memset(s + n->seen_bytes, 0, nb - n->seen_bytes);
        n->seen = s;
        n->seen_bytes = nb;
    }
    uint8_t bit = (uint8_t)(1u << (msg % 8u));
    if (n->seen[byte] & bit)
        return false;
    n->seen[byte] |= bit;
    return true;
}

static void flood(sim_node *n, const uint8_t *m, const tm2_peer *except)
{
    tm2_msg *shared = tm2_msg_new(m, SIM_GOSSIP_SIZE);
    if (!shared)
        return;
    for (size_t i = 0; i < n->n_gpeers; i++)
        if (n->gpeers[i] != except)
            (void)tm2_peer_try_send_msg(n->gpeers[i], SIM_GOSSIP_CHANNEL, shared);
    tm2_msg_unref(shared);
}

void sim_node_originate(sim_node *n, uint32_t msg)
{
    uint8_t m[SIM_GOSSIP_SIZE];
    put_be(m, msg, 4);
    put_be(m + 4, tm2__simnet_now(n->run->world), 8);
    see(n, msg);
    flood(n, m, NULL);
}

static void g_add_peer(tm2_peer *p, void *user)
{
    sim_node *n = user;
    const tm2_node_info *ni = tm2_peer_node_info(p);
    if (!ni || !tm2_node_info_has_channel(ni, SIM_GOSSIP_CHANNEL))
        return;
    if (n->n_gpeers == n->cap_gpeers) {
        size_t cap = n->cap_gpeers ? n->cap_gpeers * 2 : 16;
        tm2_peer **np = realloc(n->gpeers, cap * sizeof *np);
        if (!np)
            return;
        n->gpeers = np;
        n->cap_gpeers = cap;
    }
    n->gpeers[n->n_gpeers++] = tm2_peer_ref(p);
}

static void g_remove_peer(tm2_peer *p, int reason, void *user)
{
    (void)reason;
    sim_node *n = user;
    for (size_t i = 0; i < n->n_gpeers; i++)
        if (n->gpeers[i] == p) {
            n->gpeers[i] = n->gpeers[--n->n_gpeers];
            tm2_peer_unref(p);
            return;
        }
}

static void g_stop(tm2_switch *sw, void *user)
{
    (void)sw;
    sim_node *n = user;
    for (size_t i = 0; i < n->n_gpeers; i++)
        tm2_peer_unref(n->gpeers[i]);
    n->n_gpeers = 0;
}

static void g_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)ch;
    sim_node *n = user;
    sim_run *r = n->run;
    if (len != SIM_GOSSIP_SIZE) {
        tm2_switch_stop_peer_for_error(n->sw, p, TM2_EPROTO);
        return;
    }
    uint32_t id = (uint32_t)get_be(msg, 4);
    if (n->attacker || id >= r->gossip_msgs || !see(n, id))
        return;
    uint64_t sent = get_be(msg + 4, 8), now = tm2__simnet_now(r->world);
    uint64_t lat = now > sent ? now - sent : 0;
    r->rep->gossip_delivered++;
    r->lat_hist[lat < SIM_LAT_MAX_MS ? lat : SIM_LAT_MAX_MS]++;
    flood(n, msg, p);
}

/* ---- the attacker's discovery: every answer lists attackers only ------------------ */

static void a_add_peer(tm2_peer *p, void *user)
{
    (void)user;
    uint8_t req[TM2__PEX_REQUEST_SIZE];
    int len = tm2__pex_encode_request(req, sizeof req);
    if (len > 0)
        (void)tm2_peer_try_send(p, TM2_DISCOVERY_CHANNEL, req, (size_t)len);
}

static void a_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)ch;
    sim_node *n = user;
    sim_run *r = n->run;
    tm2__pex_msg m;
    tm2_netaddr none[1];
    if (tm2__pex_decode(msg, len, &m, none, 0) < 0 || m.kind != TM2__PEX_REQUEST)
        return;
    uint32_t na = r->n_nodes - r->cfg.nodes;
    size_t k = na < TM2__PEX_MAX_SHARED ? na : TM2__PEX_MAX_SHARED;
    tm2_netaddr addrs[TM2__PEX_MAX_SHARED];
    uint32_t first = sim_uniform(r, na);
    for (size_t i = 0; i < k; i++)
        addrs[i] = r->nodes[r->cfg.nodes + (first + i) % na].addr;
    uint8_t out[TM2__PEX_MAX_SHARED * 128 + 64];
    int olen = tm2__pex_encode_response(addrs, k, out, sizeof out);
    if (olen > 0)
        (void)tm2_peer_try_send(p, TM2_DISCOVERY_CHANNEL, out, (size_t)olen);
}

/* ---- lifecycle --------------------------------------------------------------------- */

static const tm2_channel_desc attacker_pex_ch = {
    .id = TM2_DISCOVERY_CHANNEL, .priority = 1, .send_queue_capacity = 10,
    .recv_message_capacity = 128 * 1024,
};

static void build_reactors(sim_node *n)
{
    n->n_reactors = 0;
    if (n->attacker) {
        n->reactors[n->n_reactors++] = (tm2_reactor){
            .name = "impostor", .channels = &attacker_pex_ch, .n_channels = 1, .user = n,
            .add_peer = a_add_peer, .receive = a_receive};
    } else {
        n->reactors[n->n_reactors++] = *tm2_discovery_reactor(n->disc);
    }
    n->gossip_ch = (tm2_channel_desc){.id = SIM_GOSSIP_CHANNEL, .priority = 5,
                                      .send_queue_capacity = 100,
                                      .recv_message_capacity = 1024};
    n->reactors[n->n_reactors++] = (tm2_reactor){
        .name = "gossip", .channels = &n->gossip_ch, .n_channels = 1, .user = n,
        .stop = g_stop, .add_peer = g_add_peer, .remove_peer = g_remove_peer,
        .receive = g_receive};
}

/* TM2_SIM_LOG=<node index>: that node's library log on stderr, at debug
 * level, stamped with virtual time (for looking into one node of a run). */
static void node_log(void *user, tm2_log_level level, const char *msg, const tm2_log_field *f,
                     size_t nf)
{
    sim_node *n = user;
    (void)level;
    fprintf(stderr, "t=%llu node %u: %s", (unsigned long long)tm2__simnet_now(n->run->world),
            n->idx, msg);
    for (size_t i = 0; i < nf; i++)
        fprintf(stderr, " %s=%s", f[i].key, f[i].value);
    fputc('\n', stderr);
}

static bool node_logged(const sim_node *n)
{
    const char *v = getenv("TM2_SIM_LOG");
    return v && *v && strtoul(v, NULL, 10) == n->idx;
}

int sim_node_start(sim_node *n)
{
    sim_run *r = n->run;
    const tm2__sim_config *c = &r->cfg;
    n->e = tm2__simnet_host_new(r->world, &n->addr);
    if (!n->e)
        return TM2_ENOMEM;
    tm2__simnet_set_group(r->world, n->e, n->group);
    int rc;
    if (!n->attacker) {
        tm2_discovery_config dc = {
            .interval_ms = TM2_DISCOVERY_DEFAULT_INTERVAL_MS,
            .seed_mode = n->seed,
            .limit_local_addrs = true,
            .target_outbound = c->max_outbound,
        };
        if (node_logged(n)) {
            dc.log = node_log;
            dc.log_user = n;
            dc.log_level = TM2_LOG_DEBUG;
        }
        if ((rc = tm2__discovery_new_on(&dc, n->e, &n->disc)) < 0)
            return rc;
    }
    build_reactors(n);
    char listen[96], ip[64];
    tm2_netaddr bare = n->addr;
    memset(&bare.id, 0, sizeof bare.id);
    tm2_netaddr_format(&bare, ip, sizeof ip);
    snprintf(listen, sizeof listen, "tcp://%s", ip);
    tm2_switch_config sc;
    tm2_switch_config_default(&sc);
    sc.key = n->key;
    sc.listen_addr = listen;
    sc.network = "tm2p2p-sim";
    sc.moniker = n->attacker ? "attacker" : (n->seed ? "seed" : "node");
    sc.max_inbound = n->seed ? r->n_nodes + 16u : (n->attacker ? r->n_nodes : c->max_inbound);
    sc.max_outbound = c->max_outbound;
    sc.limit_local_addrs = true;
    sc.allow_duplicate_ip = false;
    if (!n->seed) {
        sc.seeds = r->seed_addrs;
        sc.n_seeds = c->seeds;
    }
    sc.persistent_peers = n->persistent;
    sc.n_persistent_peers = n->n_persistent;
    sc.reactors = n->reactors;
    sc.n_reactors = n->n_reactors;
    if (node_logged(n)) {
        sc.log = node_log;
        sc.log_user = n;
        sc.log_level = TM2_LOG_DEBUG;
    }
    rc = tm2__switch_new_on(&sc, n->e, &n->sw);
    if (rc < 0)
        return rc;
    tm2__switch_set_event_hook(n->sw, on_event, n);
    if ((rc = tm2_switch_start(n->sw)) < 0)
        return rc;
    n->up = true;
    r->running++;
    return 0;
}

static void stopped(tm2_switch *sw, void *user)
{
    sim_node *n = user;
    (void)sw;
    tm2_switch_free(n->sw);
    n->sw = NULL;
    if (n->disc) {
        tm2_discovery_free(n->disc);
        n->disc = NULL;
    }
    tm2__simnet_host_free(n->e);
    n->e = NULL;
    n->stopping = false;
    n->run->running--;
    free(n->seen);
    n->seen = NULL;
    n->seen_bytes = 0;
}

static void begin_stop(sim_node *n)
{
    n->up = false;
    n->stopping = true;
    n->n_edges = n->n_in = n->n_out = 0;
    tm2__switch_stop_async(n->sw, stopped, n);
}

void sim_node_crash(sim_node *n)
{
    if (!n->up)
        return;
    tm2__simnet_host_crash(n->e);
    begin_stop(n);
}

void sim_node_stop(sim_node *n)
{
    if (n->up)
        begin_stop(n);
}

void sim_node_free(sim_node *n)
{
    free(n->gpeers);
    free(n->seen);
    free(n->edges);
    free(n->persistent);
    tm2_node_key_wipe(&n->key);
}
