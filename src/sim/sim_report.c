/* What a simulated network looks like: its graph now and the summary. */
#include "sim/sim_node.h"

#include <stdlib.h>
#include <string.h>

/* The graph is the honest nodes' but the seeds': seed mode sheds every
 * peer after an exchange. */
static bool in_graph(const sim_run *r, uint32_t i)
{
    return i < r->cfg.nodes && i >= r->cfg.seeds && r->nodes[i].up;
}

static uint32_t uf_find(uint32_t *parent, uint32_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

void sim_graph_scan(sim_run *r, tm2__sim_progress *p)
{
    uint32_t n = r->cfg.nodes;
    uint32_t *parent = malloc(n * sizeof *parent);
    if (!parent)
        return;
    uint32_t live = 0, at_target = 0, live_plain = 0;
    uint64_t ends = 0;
    for (uint32_t i = 0; i < n; i++)
        parent[i] = i;
    for (uint32_t i = 0; i < n; i++) {
        const sim_node *a = &r->nodes[i];
        if (!a->up)
            continue;
        live++;
        if (a->seed)
            continue;
        live_plain++;
        at_target += a->n_out >= r->cfg.max_outbound;
        for (uint32_t k = 0; k < a->n_edges; k++) {
            uint32_t j = a->edges[k].peer;
            if (!in_graph(r, j))
                continue;
            ends++;
            uint32_t x = uf_find(parent, i), y = uf_find(parent, j);
            if (x != y)
                parent[x] = y;
        }
    }
    uint32_t comps = 0;
    for (uint32_t i = 0; i < n; i++)
        comps += in_graph(r, i) && uf_find(parent, i) == i;
    free(parent);
    p->live = live;
    p->at_target = at_target;
    p->live_plain = live_plain;
    p->components = comps;
    p->edges = ends / 2u;
}

/* Undirected adjacency of the live honest nodes (CSR). */
typedef struct graph {
    uint32_t *start, *adj;
} graph;

static int graph_build(const sim_run *r, graph *g)
{
    uint32_t n = r->cfg.nodes;
    g->start = calloc(n + 1u, sizeof *g->start);
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        if (in_graph(r, i))
            total += 2u * r->nodes[i].n_edges;
    g->adj = malloc((total ? total : 1) * sizeof *g->adj);
    uint32_t *fill = calloc(n + 1u, sizeof *fill);
    if (!g->start || !g->adj || !fill) {
        free(fill);
        return TM2_ENOMEM;
    }
    /* An edge either side lists counts once per direction. */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < n; i++) {
            const sim_node *a = &r->nodes[i];
            if (!in_graph(r, i))
                continue;
            for (uint32_t k = 0; k < a->n_edges; k++) {
                uint32_t j = a->edges[k].peer;
                if (!in_graph(r, j))
                    continue;
                if (pass == 0) {
                    g->start[i + 1]++;
                    g->start[j + 1]++;
                } else {
                    g->adj[g->start[i] + fill[i]++] = j;
                    g->adj[g->start[j] + fill[j]++] = i;
                }
            }
        }
        if (pass == 0)
            for (uint32_t i = 0; i < n; i++)
                g->start[i + 1] += g->start[i];
    }
    free(fill);
    return 0;
}

/* Distinct neighbours of i (both directions of one peering count once). */
static uint32_t degree(const graph *g, uint32_t i, uint32_t *mark, uint32_t stamp)
{
    uint32_t d = 0;
    for (uint32_t k = g->start[i]; k < g->start[i + 1]; k++) {
        uint32_t j = g->adj[k];
        if (mark[j] != stamp) {
            mark[j] = stamp;
            d++;
        }
    }
    return d;
}

/* Eccentricity of s within its component. */
static uint32_t bfs(const graph *g, uint32_t n, uint32_t s, uint32_t *dist, uint32_t *queue)
{
    for (uint32_t i = 0; i < n; i++)
        dist[i] = UINT32_MAX;
    uint32_t head = 0, tail = 0, far = 0;
    dist[s] = 0;
    queue[tail++] = s;
    while (head < tail) {
        uint32_t u = queue[head++];
        far = dist[u];
        for (uint32_t k = g->start[u]; k < g->start[u + 1]; k++) {
            uint32_t v = g->adj[k];
            if (dist[v] == UINT32_MAX) {
                dist[v] = dist[u] + 1u;
                queue[tail++] = v;
            }
        }
    }
    return far;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t hist_quantile(const uint32_t *h, size_t n, uint64_t total, double q)
{
    if (!total)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;
    if (want >= total)
        want = total - 1;
    for (size_t i = 0; i < n; i++) {
        seen += h[i];
        if (seen > want)
            return i;
    }
    return n - 1;
}

/* Diameter from every node up to this many; past it, from a sample (a lower
 * bound, as the summary says). */
#define DIAMETER_ALL 4000u
#define DIAMETER_SAMPLE 64u

static void degrees_and_diameter(sim_run *r)
{
    tm2__sim_report *rep = r->rep;
    uint32_t n = r->cfg.nodes;
    graph g = {0};
    uint32_t *mark = calloc(n, sizeof *mark), *deg = malloc(n * sizeof *deg);
    uint32_t *dist = malloc(n * sizeof *dist), *queue = malloc(n * sizeof *queue);
    if (graph_build(r, &g) < 0 || !mark || !deg || !dist || !queue)
        goto out;
    uint32_t nd = 0;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!in_graph(r, i))
            continue;
        uint32_t d = degree(&g, i, mark, i + 1u);
        deg[nd++] = d;
        sum += d;
        rep->deg_hist[d < TM2__SIM_DEG_MAX ? d : TM2__SIM_DEG_MAX]++;
    }
    if (nd) {
        qsort(deg, nd, sizeof *deg, cmp_u32);
        rep->deg_min = deg[0];
        rep->deg_p50 = deg[nd / 2];
        rep->deg_p90 = deg[(uint32_t)((uint64_t)nd * 9u / 10u)];
        rep->deg_max = deg[nd - 1];
        rep->deg_mean = (double)sum / nd;
    }
    uint32_t sources = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!in_graph(r, i))
            continue;
        if (nd > DIAMETER_ALL && sim_uniform(r, nd) >= DIAMETER_SAMPLE)
            continue;
        uint32_t e = bfs(&g, n, i, dist, queue);
        if (e > rep->diameter)
            rep->diameter = e;
        sources++;
    }
    rep->diameter_sources = sources;
out:
    free(g.start);
    free(g.adj);
    free(mark);
    free(deg);
    free(dist);
    free(queue);
}

static void channels(sim_run *r)
{
    tm2__sim_report *rep = r->rep;
    tm2_switch_counters *c = malloc(sizeof *c);
    if (!c)
        return;
    for (uint32_t i = 0; i < r->n_nodes; i++) {
        if (!r->nodes[i].up || tm2_switch_stats(r->nodes[i].sw, c) < 0)
            continue;
        for (size_t k = 0; k < c->n_channels; k++) {
            size_t j = 0;
            while (j < rep->n_channels && rep->channels[j].id != c->channels[k].id)
                j++;
            if (j == rep->n_channels) {
                if (rep->n_channels == TM2_MCONN_MAX_CHANNELS)
                    continue;
                rep->channels[rep->n_channels++].id = c->channels[k].id;
            }
            rep->channels[j].msgs += c->channels[k].msgs_sent;
            rep->channels[j].bytes += c->channels[k].bytes_sent;
        }
    }
    free(c);
}

void sim_report_finish(sim_run *r)
{
    tm2__sim_report *rep = r->rep;
    sim_graph_scan(r, &rep->last);
    rep->components = rep->last.components;
    degrees_and_diameter(r);
    channels(r);
    uint64_t total = 0;
    for (uint32_t i = 0; i <= SIM_LAT_MAX_MS; i++)
        total += r->lat_hist[i];
    rep->lat_p50_ms = hist_quantile(r->lat_hist, SIM_LAT_MAX_MS + 1u, total, 0.50);
    rep->lat_p90_ms = hist_quantile(r->lat_hist, SIM_LAT_MAX_MS + 1u, total, 0.90);
    rep->lat_p99_ms = hist_quantile(r->lat_hist, SIM_LAT_MAX_MS + 1u, total, 0.99);
    for (uint32_t i = SIM_LAT_MAX_MS + 1u; i-- > 0;)
        if (r->lat_hist[i]) {
            rep->lat_max_ms = i;
            break;
        }
    for (uint32_t i = r->cfg.seeds; i < r->cfg.nodes; i++) {
        const sim_node *a = &r->nodes[i];
        if (!a->up)
            continue;
        for (uint32_t k = 0; k < a->n_edges; k++) {
            if (!a->edges[k].outbound)
                continue;
            rep->outbound_total++;
            rep->outbound_honest += a->edges[k].peer < r->cfg.nodes;
        }
    }
}
