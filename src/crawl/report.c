#include "crawl/report.h"

#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crawl/escape.h"
#include "crawl/store.h"
#include "tm2p2p/error.h"

typedef struct r_version {
    char *name, *version;
    bool optional;
} r_version;

typedef struct r_addr {
    char *addr, *node_id, *status, *source, *last_error, *auth_id, *claimed_id;
    int64_t first_seen, last_attempt, last_success, last_failure, latency_ms, failures;
    bool allowed;
} r_addr;

typedef struct r_node {
    char *id;
    bool verified;                 /* has a node row */
    char *moniker, *network, *software, *version, *channels, *rpc, *tx_index, *net_address;
    int64_t first_seen, last_seen;
    r_version *versions;
    size_t n_versions;
    const char *status;
    size_t *addrs;                 /* indexes into rep.addrs */
    size_t n_addrs;
    size_t comp;                   /* union-find parent */
    bool reachable;
} r_node;

typedef struct r_edge {
    size_t from, to;               /* node indexes */
    char *to_addr;
    int64_t first_seen, last_seen;
} r_edge;

typedef struct r_misb {
    int64_t at;
    char *addr, *auth_id, *claimed_id, *kind, *reason;
} r_misb;

typedef struct rep {
    sqlite3 *db;
    r_node *nodes;
    size_t n_nodes, cap_nodes;
    r_addr *addrs;
    size_t n_addrs;
    r_edge *edges;
    size_t n_edges;
    r_misb *misb;
    size_t n_misb;
    char network[128];
    int64_t run_started, run_finished, last_round_end;
    int64_t rounds;
    bool oom;
} rep;

static char *cdup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    int n = sqlite3_column_bytes(s, i);
    char *p = malloc((size_t)n + 1);
    if (!p)
        return NULL;
    if (t)
        memcpy(p, t, (size_t)n);
    p[n] = '\0';
    return p;
}

static int cmp_node_id(const void *a, const void *b)
{
    return strcmp(((const r_node *)a)->id, ((const r_node *)b)->id);
}

static r_node *node_find(rep *r, const char *id)
{
    if (!r->n_nodes || !id)
        return NULL;
    r_node key = {.id = (char *)id};
    return bsearch(&key, r->nodes, r->n_nodes, sizeof *r->nodes, cmp_node_id);
}

static r_node *node_push(rep *r)
{
    if (r->n_nodes == r->cap_nodes) {
        size_t cap = r->cap_nodes ? r->cap_nodes * 2 : 64;
        r_node *v = realloc(r->nodes, cap * sizeof *v);
        if (!v) {
            r->oom = true;
            return NULL;
        }
        r->nodes = v;
        r->cap_nodes = cap;
    }
    r_node *n = &r->nodes[r->n_nodes++];
    memset(n, 0, sizeof *n);
    return n;
}

#define STEP_ROWS(s) while (sqlite3_step(s) == SQLITE_ROW)

static int prep(rep *r, const char *sql, sqlite3_stmt **s, char *err, size_t err_len)
{
    if (sqlite3_prepare_v2(r->db, sql, -1, s, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "reading the database: %s", sqlite3_errmsg(r->db));
        return TM2_EIO;
    }
    return 0;
}

static int load(rep *r, char *err, size_t err_len)
{
    sqlite3_stmt *s;
    int e;
    /* The latest run. */
    if ((e = prep(r, "SELECT network, started_at, COALESCE(finished_at, 0) FROM run "
                     "ORDER BY id DESC LIMIT 1",
                  &s, err, err_len)))
        return e;
    if (sqlite3_step(s) == SQLITE_ROW) {
        snprintf(r->network, sizeof r->network, "%s",
                 sqlite3_column_text(s, 0) ? (const char *)sqlite3_column_text(s, 0) : "");
        r->run_started = sqlite3_column_int64(s, 1);
        r->run_finished = sqlite3_column_int64(s, 2);
    }
    sqlite3_finalize(s);
    if ((e = prep(r, "SELECT COUNT(*), COALESCE(MAX(finished_at), 0) FROM round "
                     "WHERE finished_at IS NOT NULL",
                  &s, err, err_len)))
        return e;
    if (sqlite3_step(s) == SQLITE_ROW) {
        r->rounds = sqlite3_column_int64(s, 0);
        r->last_round_end = sqlite3_column_int64(s, 1);
    }
    sqlite3_finalize(s);

    /* Verified nodes. */
    if ((e = prep(r, "SELECT id, moniker, network, software, version, channels, rpc_address, "
                     "tx_index, net_address, first_seen, last_seen FROM node",
                  &s, err, err_len)))
        return e;
    STEP_ROWS(s)
    {
        r_node *n = node_push(r);
        if (!n)
            break;
        n->verified = true;
        n->id = cdup(s, 0);
        n->moniker = cdup(s, 1);
        n->network = cdup(s, 2);
        n->software = cdup(s, 3);
        n->version = cdup(s, 4);
        n->channels = cdup(s, 5);
        n->rpc = cdup(s, 6);
        n->tx_index = cdup(s, 7);
        n->net_address = cdup(s, 8);
        n->first_seen = sqlite3_column_int64(s, 9);
        n->last_seen = sqlite3_column_int64(s, 10);
        if (!n->id || !n->moniker || !n->network || !n->software || !n->version || !n->channels ||
            !n->rpc || !n->tx_index || !n->net_address)
            r->oom = true;
    }
    sqlite3_finalize(s);

    /* Addresses, and the IDs known only from them. */
    if ((e = prep(r, "SELECT COUNT(*) FROM address", &s, err, err_len)))
        return e;
    size_t na = sqlite3_step(s) == SQLITE_ROW ? (size_t)sqlite3_column_int64(s, 0) : 0;
    sqlite3_finalize(s);
    r->addrs = calloc(na ? na : 1, sizeof *r->addrs);
    if (!r->addrs) {
        r->oom = true;
        return TM2_ENOMEM;
    }
    if ((e = prep(r, "SELECT addr, node_id, status, source, COALESCE(last_error, ''), "
                     "COALESCE(auth_id, ''), COALESCE(claimed_id, ''), first_seen, "
                     "COALESCE(last_attempt, 0), COALESCE(last_success, 0), "
                     "COALESCE(last_failure, 0), COALESCE(latency_ms, -1), failures, allowed "
                     "FROM address ORDER BY addr",
                  &s, err, err_len)))
        return e;
    while (r->n_addrs < na && sqlite3_step(s) == SQLITE_ROW) {
        r_addr *a = &r->addrs[r->n_addrs++];
        a->addr = cdup(s, 0);
        a->node_id = cdup(s, 1);
        a->status = cdup(s, 2);
        a->source = cdup(s, 3);
        a->last_error = cdup(s, 4);
        a->auth_id = cdup(s, 5);
        a->claimed_id = cdup(s, 6);
        a->first_seen = sqlite3_column_int64(s, 7);
        a->last_attempt = sqlite3_column_int64(s, 8);
        a->last_success = sqlite3_column_int64(s, 9);
        a->last_failure = sqlite3_column_int64(s, 10);
        a->latency_ms = sqlite3_column_int64(s, 11);
        a->failures = sqlite3_column_int64(s, 12);
        a->allowed = sqlite3_column_int(s, 13) != 0;
        if (!a->addr || !a->node_id || !a->status || !a->source || !a->last_error ||
            !a->auth_id || !a->claimed_id)
            r->oom = true;
    }
    sqlite3_finalize(s);
    if (r->oom)
        return TM2_ENOMEM;

    if (r->n_nodes)
        qsort(r->nodes, r->n_nodes, sizeof *r->nodes, cmp_node_id);
    for (size_t i = 0; i < r->n_addrs; i++) {
        if (node_find(r, r->addrs[i].node_id))
            continue;
        r_node *n = node_push(r);
        if (!n || !(n->id = strdup(r->addrs[i].node_id)))
            return TM2_ENOMEM;
        qsort(r->nodes, r->n_nodes, sizeof *r->nodes, cmp_node_id);
    }
    for (size_t i = 0; i < r->n_addrs; i++) {
        r_node *n = node_find(r, r->addrs[i].node_id);
        size_t *v = realloc(n->addrs, (n->n_addrs + 1) * sizeof *v);
        if (!v)
            return TM2_ENOMEM;
        v[n->n_addrs++] = i;
        n->addrs = v;
    }

    /* Versions. */
    if ((e = prep(r, "SELECT node_id, name, version, optional FROM node_version "
                     "ORDER BY node_id, name",
                  &s, err, err_len)))
        return e;
    STEP_ROWS(s)
    {
        r_node *n = node_find(r, (const char *)sqlite3_column_text(s, 0));
        if (!n)
            continue;
        r_version *v = realloc(n->versions, (n->n_versions + 1) * sizeof *v);
        if (!v) {
            r->oom = true;
            break;
        }
        n->versions = v;
        r_version *x = &v[n->n_versions++];
        x->name = cdup(s, 1);
        x->version = cdup(s, 2);
        x->optional = sqlite3_column_int(s, 3) != 0;
        if (!x->name || !x->version)
            r->oom = true;
    }
    sqlite3_finalize(s);

    /* Edges: from a verified node to an address (and so an ID). */
    if ((e = prep(r, "SELECT e.from_id, e.to_addr, a.node_id, e.first_seen, e.last_seen, "
                     "COALESCE(n.last_seen, 0) FROM edge e JOIN address a ON a.addr = e.to_addr "
                     "LEFT JOIN node n ON n.id = e.from_id ORDER BY e.from_id, e.to_addr",
                  &s, err, err_len)))
        return e;
    size_t cap = 0;
    STEP_ROWS(s)
    {
        int64_t last_seen = sqlite3_column_int64(s, 4), from_seen = sqlite3_column_int64(s, 5);
        if (!r->nodes)
            break;
        r_node *f = node_find(r, (const char *)sqlite3_column_text(s, 0));
        r_node *t = node_find(r, (const char *)sqlite3_column_text(s, 2));
        if (!f || !t)
            continue;
        (void)from_seen;
        if (r->n_edges == cap) {
            cap = cap ? cap * 2 : 64;
            r_edge *v = realloc(r->edges, cap * sizeof *v);
            if (!v) {
                r->oom = true;
                break;
            }
            r->edges = v;
        }
        r_edge *x = &r->edges[r->n_edges++];
        x->from = (size_t)(f - r->nodes);
        x->to = (size_t)(t - r->nodes);
        x->to_addr = cdup(s, 1);
        x->first_seen = sqlite3_column_int64(s, 3);
        x->last_seen = last_seen;
        if (!x->to_addr)
            r->oom = true;
    }
    sqlite3_finalize(s);

    if ((e = prep(r, "SELECT at, addr, COALESCE(auth_id, ''), COALESCE(claimed_id, ''), kind, "
                     "reason FROM misbehavior ORDER BY id",
                  &s, err, err_len)))
        return e;
    cap = 0;
    STEP_ROWS(s)
    {
        if (r->n_misb == cap) {
            cap = cap ? cap * 2 : 16;
            r_misb *v = realloc(r->misb, cap * sizeof *v);
            if (!v) {
                r->oom = true;
                break;
            }
            r->misb = v;
        }
        r_misb *m = &r->misb[r->n_misb++];
        m->at = sqlite3_column_int64(s, 0);
        m->addr = cdup(s, 1);
        m->auth_id = cdup(s, 2);
        m->claimed_id = cdup(s, 3);
        m->kind = cdup(s, 4);
        m->reason = cdup(s, 5);
        if (!m->addr || !m->auth_id || !m->claimed_id || !m->kind || !m->reason)
            r->oom = true;
    }
    sqlite3_finalize(s);
    return r->oom ? TM2_ENOMEM : 0;
}

static bool edge_current(const rep *r, const r_edge *e)
{
    return e->last_seen >= r->nodes[e->from].last_seen;
}

static void classify(rep *r)
{
    for (size_t i = 0; i < r->n_nodes; i++) {
        r_node *n = &r->nodes[i];
        size_t reach = 0, gone = 0, bad = 0, refused = 0;
        for (size_t k = 0; k < n->n_addrs; k++) {
            const char *st = r->addrs[n->addrs[k]].status;
            reach += !strcmp(st, "reachable") || !strcmp(st, "incompatible");
            gone += !strcmp(st, "gone");
            bad += !strcmp(st, "liar") || !strcmp(st, "wrong_id") || !strcmp(st, "invalid");
            refused += !strcmp(st, "refused");
        }
        n->reachable = reach > 0 && n->verified;
        if (n->reachable)
            n->status = "reachable";
        else if (n->verified)
            n->status = n->n_addrs && gone == n->n_addrs ? "gone" : "unreachable";
        else if (n->n_addrs && bad == n->n_addrs)
            n->status = "untrusted";
        else if (n->n_addrs && refused == n->n_addrs)
            n->status = "refused";
        else
            n->status = "never_reached";
        n->comp = i;
    }
}

static size_t uf_find(rep *r, size_t i)
{
    while (r->nodes[i].comp != i) {
        r->nodes[i].comp = r->nodes[r->nodes[i].comp].comp;
        i = r->nodes[i].comp;
    }
    return i;
}

/* Size of the largest component of current edges between reachable nodes. */
static size_t largest_component(rep *r, const crawl_report_opts *o)
{
    for (size_t i = 0; i < r->n_nodes; i++)
        r->nodes[i].comp = i;
    for (size_t i = 0; i < r->n_edges; i++) {
        const r_edge *e = &r->edges[i];
        if (!o->all_edges && !edge_current(r, e))
            continue;
        if (!r->nodes[e->from].reachable || !r->nodes[e->to].reachable)
            continue;
        size_t a = uf_find(r, e->from), b = uf_find(r, e->to);
        if (a != b)
            r->nodes[a].comp = b;
    }
    size_t *count = calloc(r->n_nodes ? r->n_nodes : 1, sizeof *count);
    if (!count)
        return 0;
    size_t best = 0;
    for (size_t i = 0; i < r->n_nodes; i++) {
        if (!r->nodes[i].reachable)
            continue;
        size_t c = ++count[uf_find(r, i)];
        if (c > best)
            best = c;
    }
    free(count);
    return best;
}

/* ---- summary ---------------------------------------------------------------------- */

typedef struct tally {
    const char *key;
    size_t yes, no;
} tally;

static void tally_add(tally *t, size_t *n, size_t cap, const char *key, bool yes)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(t[i].key, key)) {
            t[i].yes += yes;
            t[i].no += !yes;
            return;
        }
    if (*n == cap)
        return;
    t[*n] = (tally){.key = key, .yes = yes, .no = !yes};
    (*n)++;
}

static void print_tally(tm2__buf *b, const char *title, const tally *t, size_t n)
{
    tm2__buf_printf(b, "%s:\n", title);
    if (!n)
        tm2__buf_puts(b, "  (none)\n");
    for (size_t i = 0; i < n; i++) {
        tm2__buf_puts(b, "  ");
        crawl_esc_dot(b, t[i].key, strlen(t[i].key));
        tm2__buf_printf(b, "  reachable %zu  not reachable %zu\n", t[i].yes, t[i].no);
    }
}

static void fmt_time(int64_t ms, char *buf, size_t cap)
{
    if (!ms) {
        snprintf(buf, cap, "never");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void summary(rep *r, const crawl_report_opts *o, tm2__buf *b)
{
    size_t reach = 0, unreach = 0, gone = 0, never = 0, untrusted = 0, refused = 0;
    for (size_t i = 0; i < r->n_nodes; i++) {
        const char *st = r->nodes[i].status;
        reach += !strcmp(st, "reachable");
        unreach += !strcmp(st, "unreachable");
        gone += !strcmp(st, "gone");
        never += !strcmp(st, "never_reached");
        untrusted += !strcmp(st, "untrusted");
        refused += !strcmp(st, "refused");
    }
    char t1[32], t2[32];
    fmt_time(r->run_started, t1, sizeof t1);
    fmt_time(r->last_round_end, t2, sizeof t2);
    tm2__buf_puts(b, "network ");
    crawl_esc_dot(b, r->network, strlen(r->network));
    tm2__buf_printf(b, "\nlast run started %s; %lld rounds finished, the last at %s\n", t1,
                     (long long)r->rounds, t2);
    tm2__buf_printf(b,
                     "nodes: %zu known, %zu reachable, %zu not reachable (%zu unreachable, %zu "
                     "gone, %zu never reached, %zu untrusted, %zu refused by --allow)\n",
                     r->n_nodes, reach, r->n_nodes - reach, unreach, gone, never, untrusted, refused);
    size_t cap = r->n_nodes ? r->n_nodes : 1;
    tally *nets = calloc(cap, sizeof *nets), *vers = calloc(cap, sizeof *vers);
    size_t nn = 0, nv = 0;
    for (size_t i = 0; nets && vers && i < r->n_nodes; i++) {
        const r_node *n = &r->nodes[i];
        if (!n->verified)
            continue;
        tally_add(nets, &nn, cap, n->network, n->reachable);
        tally_add(vers, &nv, cap, n->version, n->reachable);
    }
    print_tally(b, "by network (verified nodes)", nets, nn);
    print_tally(b, "by version", vers, nv);
    free(nets);
    free(vers);
    size_t lcc = largest_component(r, o);
    tm2__buf_printf(b, "largest connected component: %zu of %zu reachable nodes (%s edges)\n",
                     lcc, reach, o->all_edges ? "all" : "current");
    size_t cur = 0;
    for (size_t i = 0; i < r->n_edges; i++)
        cur += edge_current(r, &r->edges[i]);
    tm2__buf_printf(b, "advertised-by edges: %zu current, %zu ever seen\n", cur, r->n_edges);
    tm2__buf_printf(b, "addresses: %zu\n", r->n_addrs);
    if (r->n_misb) {
        tm2__buf_printf(b, "misbehaviour: %zu events\n", r->n_misb);
        for (size_t i = 0; i < r->n_misb && i < 20; i++) {
            const r_misb *m = &r->misb[i];
            tm2__buf_printf(b, "  %s %s", m->kind, m->addr);
            if (m->auth_id[0])
                tm2__buf_printf(b, " key_id=%s", m->auth_id);
            if (m->claimed_id[0])
                tm2__buf_printf(b, " claimed_id=%s", m->claimed_id);
            tm2__buf_puts(b, " ");
            crawl_esc_dot(b, m->reason, strlen(m->reason));
            tm2__buf_puts(b, "\n");
        }
    }
}

/* ---- exports ------------------------------------------------------------------------ */

static void jkey(tm2__buf *b, const char *k) { tm2__buf_printf(b, "\"%s\":", k); }

static void jstr(tm2__buf *b, const char *k, const char *v)
{
    jkey(b, k);
    crawl_esc_json(b, v ? v : "", v ? strlen(v) : 0);
    tm2__buf_puts(b, ",");
}

static void jint(tm2__buf *b, const char *k, int64_t v)
{
    jkey(b, k);
    tm2__buf_printf(b, "%lld,", (long long)v);
}

static void jopt(tm2__buf *b, const char *k, int64_t v)
{
    jkey(b, k);
    if (v)
        tm2__buf_printf(b, "%lld,", (long long)v);
    else
        tm2__buf_puts(b, "null,");
}

/* Drops the comma before a closing bracket. */
static void jclose(tm2__buf *b, char c)
{
    if (b->len && b->p[b->len - 1] == ',')
        b->len--;
    tm2__buf_add(b, &c, 1);
    tm2__buf_puts(b, ",");
}

static void json_addr(tm2__buf *b, const r_addr *a)
{
    tm2__buf_puts(b, "{");
    jstr(b, "addr", a->addr);
    jstr(b, "id", a->node_id);
    jstr(b, "status", a->status);
    jstr(b, "source", a->source);
    jkey(b, "allowed");
    tm2__buf_puts(b, a->allowed ? "true," : "false,");
    jint(b, "first_seen", a->first_seen);
    jopt(b, "last_attempt", a->last_attempt);
    jopt(b, "last_success", a->last_success);
    jopt(b, "last_failure", a->last_failure);
    jint(b, "failures", a->failures);
    jkey(b, "latency_ms");
    if (a->latency_ms >= 0)
        tm2__buf_printf(b, "%lld,", (long long)a->latency_ms);
    else
        tm2__buf_puts(b, "null,");
    jstr(b, "last_error", a->last_error);
    jstr(b, "auth_id", a->auth_id);
    jstr(b, "claimed_id", a->claimed_id);
    jclose(b, '}');
}

static void export_json(rep *r, const crawl_report_opts *o, tm2__buf *b)
{
    tm2__buf_puts(b, "{");
    jstr(b, "network", r->network);
    jint(b, "rounds", r->rounds);
    jint(b, "largest_component", (int64_t)largest_component(r, o));
    jkey(b, "nodes");
    tm2__buf_puts(b, "[");
    for (size_t i = 0; i < r->n_nodes; i++) {
        const r_node *n = &r->nodes[i];
        tm2__buf_puts(b, "{");
        jstr(b, "id", n->id);
        jstr(b, "status", n->status);
        jkey(b, "verified");
        tm2__buf_puts(b, n->verified ? "true," : "false,");
        if (n->verified) {
            jstr(b, "moniker", n->moniker);
            jstr(b, "network", n->network);
            jstr(b, "software", n->software);
            jstr(b, "version", n->version);
            jstr(b, "channels", n->channels);
            jstr(b, "rpc_address", n->rpc);
            jstr(b, "tx_index", n->tx_index);
            jstr(b, "net_address", n->net_address);
            jint(b, "first_seen", n->first_seen);
            jint(b, "last_seen", n->last_seen);
            jkey(b, "versions");
            tm2__buf_puts(b, "[");
            for (size_t k = 0; k < n->n_versions; k++) {
                tm2__buf_puts(b, "{");
                jstr(b, "name", n->versions[k].name);
                jstr(b, "version", n->versions[k].version);
                jkey(b, "optional");
                tm2__buf_puts(b, n->versions[k].optional ? "true" : "false");
                tm2__buf_puts(b, "},");
            }
            jclose(b, ']');
        }
        jkey(b, "addresses");
        tm2__buf_puts(b, "[");
        for (size_t k = 0; k < n->n_addrs; k++)
            json_addr(b, &r->addrs[n->addrs[k]]);
        jclose(b, ']');
        jclose(b, '}');
    }
    jclose(b, ']');
    jkey(b, "edges");
    tm2__buf_puts(b, "[");
    for (size_t i = 0; i < r->n_edges; i++) {
        const r_edge *e = &r->edges[i];
        if (!o->all_edges && !edge_current(r, e))
            continue;
        tm2__buf_puts(b, "{");
        jstr(b, "from", r->nodes[e->from].id);
        jstr(b, "to", r->nodes[e->to].id);
        jstr(b, "to_addr", e->to_addr);
        jint(b, "first_seen", e->first_seen);
        jint(b, "last_seen", e->last_seen);
        jclose(b, '}');
    }
    jclose(b, ']');
    jkey(b, "misbehavior");
    tm2__buf_puts(b, "[");
    for (size_t i = 0; i < r->n_misb; i++) {
        const r_misb *m = &r->misb[i];
        tm2__buf_puts(b, "{");
        jint(b, "at", m->at);
        jstr(b, "kind", m->kind);
        jstr(b, "addr", m->addr);
        jstr(b, "auth_id", m->auth_id);
        jstr(b, "claimed_id", m->claimed_id);
        jstr(b, "reason", m->reason);
        jclose(b, '}');
    }
    jclose(b, ']');
    jclose(b, '}');
    if (b->len && b->p[b->len - 1] == ',')
        b->len--;
    tm2__buf_puts(b, "\n");
}

static void csv_field(tm2__buf *b, const char *s, bool last)
{
    crawl_esc_csv(b, s ? s : "", s ? strlen(s) : 0);
    tm2__buf_puts(b, last ? "\r\n" : ",");
}

static void export_csv(rep *r, tm2__buf *b)
{
    tm2__buf_puts(b, "id,status,moniker,network,version,software,channels,rpc_address,"
                      "net_address,first_seen,last_seen,latency_ms,addresses,versions\r\n");
    for (size_t i = 0; i < r->n_nodes; i++) {
        const r_node *n = &r->nodes[i];
        char num[3][24] = {"", "", ""};
        int64_t lat = -1;
        tm2__buf addrs = {0}, vers = {0};
        for (size_t k = 0; k < n->n_addrs; k++) {
            const r_addr *a = &r->addrs[n->addrs[k]];
            tm2__buf_printf(&addrs, "%s%s=%s", k ? " " : "", a->addr, a->status);
            if (!strcmp(a->status, "reachable") && a->latency_ms >= 0 && (lat < 0 || a->latency_ms < lat))
                lat = a->latency_ms;
        }
        for (size_t k = 0; k < n->n_versions; k++)
            tm2__buf_printf(&vers, "%s%s=%s", k ? " " : "", n->versions[k].name,
                             n->versions[k].version);
        if (n->verified) {
            snprintf(num[0], sizeof num[0], "%lld", (long long)n->first_seen);
            snprintf(num[1], sizeof num[1], "%lld", (long long)n->last_seen);
        }
        if (lat >= 0)
            snprintf(num[2], sizeof num[2], "%lld", (long long)lat);
        csv_field(b, n->id, false);
        csv_field(b, n->status, false);
        csv_field(b, n->moniker, false);
        csv_field(b, n->network, false);
        csv_field(b, n->version, false);
        csv_field(b, n->software, false);
        csv_field(b, n->channels, false);
        csv_field(b, n->rpc, false);
        csv_field(b, n->net_address, false);
        csv_field(b, num[0], false);
        csv_field(b, num[1], false);
        csv_field(b, num[2], false);
        csv_field(b, addrs.p, false);
        csv_field(b, vers.p, true);
        if (addrs.oom || vers.oom)
            b->oom = true;
        tm2__buf_free(&addrs);
        tm2__buf_free(&vers);
    }
}

static void export_dot(rep *r, const crawl_report_opts *o, tm2__buf *b)
{
    tm2__buf_puts(b, "digraph tm2 {\n  graph [label=");
    crawl_esc_dot(b, r->network, strlen(r->network));
    tm2__buf_puts(b, "];\n  node [shape=box, fontname=\"monospace\"];\n");
    for (size_t i = 0; i < r->n_nodes; i++) {
        const r_node *n = &r->nodes[i];
        tm2__buf_puts(b, "  ");
        crawl_esc_dot(b, n->id, strlen(n->id));
        tm2__buf_puts(b, " [label=");
        /* moniker, short ID and status on three lines (DOT's \n). */
        tm2__buf_puts(b, "\"");
        if (n->verified) {
            tm2__buf esc = {0};
            crawl_esc_dot(&esc, n->moniker, strlen(n->moniker));
            if (esc.p)
                tm2__buf_add(b, esc.p + 1, esc.len - 2);
            tm2__buf_free(&esc);
            tm2__buf_puts(b, "\\n");
        }
        tm2__buf_add(b, n->id, strlen(n->id) > 12 ? 12 : strlen(n->id));
        tm2__buf_printf(b, "...\\n%s\"", n->status);
        const char *color = n->reachable ? "darkgreen" : !strcmp(n->status, "untrusted") ? "red" : "gray";
        tm2__buf_printf(b, ", color=%s];\n", color);
    }
    for (size_t i = 0; i < r->n_edges; i++) {
        const r_edge *e = &r->edges[i];
        if (!o->all_edges && !edge_current(r, e))
            continue;
        tm2__buf_puts(b, "  ");
        crawl_esc_dot(b, r->nodes[e->from].id, strlen(r->nodes[e->from].id));
        tm2__buf_puts(b, " -> ");
        crawl_esc_dot(b, r->nodes[e->to].id, strlen(r->nodes[e->to].id));
        tm2__buf_puts(b, ";\n");
    }
    tm2__buf_puts(b, "}\n");
}

static int write_out(const char *path, const tm2__buf *b, char *err, size_t err_len)
{
    if (b->oom) {
        snprintf(err, err_len, "out of memory");
        return TM2_ENOMEM;
    }
    FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
    if (!f) {
        snprintf(err, err_len, "cannot write %s", path);
        return TM2_EIO;
    }
    bool ok = !b->len || fwrite(b->p, 1, b->len, f) == b->len;
    ok = (f == stdout ? fflush(f) == 0 : fclose(f) == 0) && ok;
    if (!ok) {
        snprintf(err, err_len, "cannot write %s", path);
        return TM2_EIO;
    }
    return 0;
}

static void rep_free(rep *r)
{
    for (size_t i = 0; i < r->n_nodes; i++) {
        r_node *n = &r->nodes[i];
        free(n->id);
        free(n->moniker);
        free(n->network);
        free(n->software);
        free(n->version);
        free(n->channels);
        free(n->rpc);
        free(n->tx_index);
        free(n->net_address);
        for (size_t k = 0; k < n->n_versions; k++) {
            free(n->versions[k].name);
            free(n->versions[k].version);
        }
        free(n->versions);
        free(n->addrs);
    }
    free(r->nodes);
    for (size_t i = 0; i < r->n_addrs; i++) {
        r_addr *a = &r->addrs[i];
        free(a->addr);
        free(a->node_id);
        free(a->status);
        free(a->source);
        free(a->last_error);
        free(a->auth_id);
        free(a->claimed_id);
    }
    free(r->addrs);
    for (size_t i = 0; i < r->n_edges; i++)
        free(r->edges[i].to_addr);
    free(r->edges);
    for (size_t i = 0; i < r->n_misb; i++) {
        free(r->misb[i].addr);
        free(r->misb[i].auth_id);
        free(r->misb[i].claimed_id);
        free(r->misb[i].kind);
        free(r->misb[i].reason);
    }
    free(r->misb);
    sqlite3_close(r->db);
}

int crawl_report(const char *db_path, const crawl_report_opts *o, FILE *out, char *err,
                 size_t err_len)
{
    rep r;
    memset(&r, 0, sizeof r);
    if (!(r.db = crawl_store_open_ro(db_path, err, err_len)))
        return TM2_EIO;
    /* One consistent snapshot while a crawl may be writing. */
    sqlite3_exec(r.db, "BEGIN", NULL, NULL, NULL);
    int e = load(&r, err, err_len);
    sqlite3_exec(r.db, "COMMIT", NULL, NULL, NULL);
    if (e) {
        if (e == TM2_ENOMEM)
            snprintf(err, err_len, "out of memory");
        rep_free(&r);
        return e;
    }
    classify(&r);
    if (out) {
        tm2__buf b = {0};
        summary(&r, o, &b);
        if (b.oom || (b.len && fwrite(b.p, 1, b.len, out) != b.len)) {
            snprintf(err, err_len, "cannot write the summary");
            e = TM2_EIO;
        }
        fflush(out);
        tm2__buf_free(&b);
    }
    if (!e && o->json_path) {
        tm2__buf b = {0};
        export_json(&r, o, &b);
        e = write_out(o->json_path, &b, err, err_len);
        tm2__buf_free(&b);
    }
    if (!e && o->csv_path) {
        tm2__buf b = {0};
        export_csv(&r, &b);
        e = write_out(o->csv_path, &b, err, err_len);
        tm2__buf_free(&b);
    }
    if (!e && o->dot_path) {
        tm2__buf b = {0};
        export_dot(&r, o, &b);
        e = write_out(o->dot_path, &b, err, err_len);
        tm2__buf_free(&b);
    }
    rep_free(&r);
    return e;
}
