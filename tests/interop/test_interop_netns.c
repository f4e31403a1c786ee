/* A mixed network in network namespaces: 6 tm2p2p nodes (the `tm2p2p node`
 * program) and 6 reference nodes (tm2ref node, allow_duplicate_ip=false as
 * the reference ships it), each in its own namespace with its own address
 * from 198.18.0.0/15, joined by veth pairs to a bridge in a namespace of its
 * own. All of it is made by this test and removed again, also when it fails:
 * the teardown, an exit handler and a SIGINT/SIGTERM handler delete every
 * namespace (their interfaces go with them; nothing is added to the host's
 * own namespace), and a start sweeps namespaces left by runs that died.
 *
 * The network starts twice: once from a reference seed, once from a tm2p2p
 * seed (every other node is given only the seed). Within the deadline the
 * graph must be connected and every node must hold at least 2 peers, as the
 * node itself reports them (tm2ref's PEERS, the program's status file).
 *
 * Needs root and iproute2 (`ip`); without them, or where namespaces cannot be
 * made, it exits with the CTest skip code 77 and says why. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "netns.h"
#include "refnode.h"
#include "tv.h"

#ifndef TM2P2P_PATH
#error "TM2P2P_PATH must be defined by the build"
#endif

#define NREF        6
#define NT          6
#define NNODES      (NREF + NT)
#define PORT        "26656"
#define CONVERGE_MS 60000
#define WAIT_MS     20000
#define NS_PREFIX   "tm2i"

/* ---- nodes ------------------------------------------------------------------------ */

typedef struct node {
    bool ref;
    rnode r;                       /* ref: tm2ref node */
    refproc t;                     /* !ref: tm2p2p node */
    char home[96];
    char status[128];
    tm2_id id;
    char addr[TM2_NETADDR_STRLEN]; /* ID@198.18.0.x:26656 */
} node;

static node nodes[NNODES];

static void nodes_stop(void)
{
    for (int i = 0; i < NNODES; i++) {
        if (nodes[i].ref)
            rnode_stop(&nodes[i].r);
        else
            refproc_stop(&nodes[i].t);
        if (nodes[i].home[0]) {
            const char *argv[] = {"rm", "-rf", nodes[i].home, NULL};
            netns_run(argv, true);
            nodes[i].home[0] = '\0';
        }
    }
}

/* Before the namespaces go (netns.h runs it from its exit and signal
 * handlers). */
static void kill_nodes(void)
{
    for (int i = 0; i < NNODES; i++) {
        pid_t p = nodes[i].ref ? nodes[i].r.p.pid : nodes[i].t.pid;
        if (p > 0)
            kill(p, SIGKILL);
    }
}

static const char *node_ip(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "198.18.0.%d", i + 1);
    return buf;
}

/* Node slot i as a reference node in namespace ns on port, given flag
 * (NULL: none) set to value. */
static void start_ref_at(int i, int ns, const char *port, const char *flag, const char *value)
{
    node *n = &nodes[i];
    n->ref = true;
    char ipb[32], listen[48];
    snprintf(listen, sizeof listen, "%s:%s", node_ip(ns, ipb, sizeof ipb), port);
    const char *prefix[] = {"ip", "netns", "exec", netns_host(ns), NULL};
    const char *args[] = {"--listen", listen, "--allow-duplicate-ip=false", flag, value, NULL};
    rnode_start_in(&n->r, prefix, (uint8_t)(0xa0 + i), args);
    n->id = n->r.id;
    memcpy(n->addr, n->r.addr_s, sizeof n->addr);
}

static void start_ref(int i, const char *seed)
{
    start_ref_at(i, i, PORT, seed ? "--seeds" : NULL, seed);
}

/* Node slot i as a tm2p2p node in namespace ns on port, given flag (NULL:
 * none) set to value. */
static void start_tm2p2p_at(int i, int ns, const char *port, const char *flag,
                            const char *value)
{
    node *n = &nodes[i];
    n->ref = false;
    snprintf(n->home, sizeof n->home, "/tmp/tm2-interop-netns-%d-%d", (int)getpid(), i);
    snprintf(n->status, sizeof n->status, "/tmp/tm2-interop-netns-%d-%d/status.json",
             (int)getpid(), i);
    char ipb[32], laddr[64];
    snprintf(laddr, sizeof laddr, "tcp://%s:%s", node_ip(ns, ipb, sizeof ipb), port);
    const char *argv[] = {"ip", "netns", "exec", netns_host(ns), TM2P2P_PATH, "node",
                          "--home", n->home, "--laddr", laddr, "--chain-id", SN_CHAIN,
                          "--pex-interval", "500", "--status-file", n->status,
                          "--status-interval", "200", "--log-level", "warn",
                          flag, value, NULL};
    refproc_start_cmd(&n->t, argv);
    /* The program prints its listen address (ID@ip:port) once it runs. */
    char line[REFPROC_LINE_MAX];
    assert_int_equal(refproc_line(&n->t, line, sizeof line, WAIT_MS), 0);
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(line, 0, &a), 0);
    n->id = a.id;
    assert_true(strlen(line) < sizeof n->addr);
    memcpy(n->addr, line, strlen(line) + 1);
}

static void start_tm2p2p(int i, const char *seed)
{
    start_tm2p2p_at(i, i, PORT, seed ? "--seeds" : NULL, seed);
}

/* The peers a node reports: IDs into ids (up to cap); returns the count or
 * -1 when it could not be read. */
static int node_peers(node *n, tm2_id *ids, int cap)
{
    if (n->ref) {
        if (rnode_peers(&n->r, NULL, NULL, NULL, 5000) < 0)
            return -1;
        int k = 0;
        bool out;
        while (k < cap && rnode_peer_at(&n->r, (size_t)k, &ids[k], &out))
            k++;
        return k;
    }
    FILE *f = fopen(n->status, "r");
    if (!f)
        return -1;   /* not written yet */
    char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    cJSON *j = cJSON_Parse(buf);
    if (!j)
        return -1;
    int k = 0;
    cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "peers"))
    {
        cJSON *id = cJSON_GetObjectItem(p, "id");
        if (k < cap && cJSON_IsString(id) && strlen(id->valuestring) < sizeof ids[k].s) {
            memset(&ids[k], 0, sizeof ids[k]);
            memcpy(ids[k].s, id->valuestring, strlen(id->valuestring));
            k++;
        }
    }
    cJSON_Delete(j);
    return k;
}

static int find_node(const tm2_id *id)
{
    for (int i = 0; i < NNODES; i++)
        if (!strcmp(nodes[i].id.s, id->s))
            return i;
    return -1;
}

static int uf_find(int *parent, int x)
{
    while (parent[x] != x)
        x = parent[x] = parent[parent[x]];
    return x;
}

/* True when every node reports >= 2 peers and the graph (an edge wherever
 * either end reports it) is connected; *why says what is missing. */
static bool converged(char *why, size_t cap)
{
    int parent[NNODES];
    for (int i = 0; i < NNODES; i++)
        parent[i] = i;
    bool ok = true;
    why[0] = '\0';
    for (int i = 0; i < NNODES; i++) {
        tm2_id ids[64];
        int k = node_peers(&nodes[i], ids, 64);
        if (k < 2) {
            if (ok)
                snprintf(why, cap, "node %d (%s, %s) has %d peers", i,
                         nodes[i].ref ? "reference" : "tm2p2p", nodes[i].id.s, k);
            ok = false;
        }
        for (int j = 0; j < k; j++) {
            int o = find_node(&ids[j]);
            if (o >= 0)
                parent[uf_find(parent, i)] = uf_find(parent, o);
        }
    }
    for (int i = 1; i < NNODES && ok; i++) {
        if (uf_find(parent, i) != uf_find(parent, 0)) {
            snprintf(why, cap, "node %d is not connected to node 0", i);
            ok = false;
        }
    }
    return ok;
}

static void run_network(int seed_index)
{
    /* The seed starts first; everybody else knows only its address. */
    if (seed_index < NREF)
        start_ref(seed_index, NULL);
    else
        start_tm2p2p(seed_index, NULL);
    char seed[TM2_NETADDR_STRLEN];
    memcpy(seed, nodes[seed_index].addr, sizeof seed);
    for (int i = 0; i < NNODES; i++) {
        if (i == seed_index)
            continue;
        if (i < NREF)
            start_ref(i, seed);
        else
            start_tm2p2p(i, seed);
    }

    uint64_t start = tv_now_ms(), end = start + CONVERGE_MS;
    char why[256];
    while (!converged(why, sizeof why)) {
        if (tv_now_ms() >= end)
            fail_msg("no convergence in %d ms from a %s seed: %s", CONVERGE_MS,
                     seed_index < NREF ? "reference" : "tm2p2p", why);
        /* Check again when the first reference node reports anything, at
         * the latest after 200 ms (tm2p2p nodes rewrite their status then). */
        (void)rnode_next_line(&nodes[0].r, 200);
    }
    fprintf(stderr, "netns: %d + %d nodes from a %s seed connected in %llu ms\n", NREF, NT,
            seed_index < NREF ? "reference" : "tm2p2p",
            (unsigned long long)(tv_now_ms() - start));
}

/* ---- the duplicate-IP guard by source address ------------------------------------
 * On loopback every connection comes from 127.0.0.1 (test_interop_peers);
 * here peers come from distinct addresses: two from 198.18.0.2 (one
 * namespace) and one from 198.18.0.3. The second from .2 is refused, the
 * one from .3 accepted. */

static bool node_has_peer(node *n, const tm2_id *id, int *count)
{
    tm2_id ids[64];
    int k = node_peers(n, ids, 64);
    if (count)
        *count = k;
    for (int i = 0; i < k; i++)
        if (!strcmp(ids[i].s, id->s))
            return true;
    return false;
}

/* Waits until node n's peers are exactly want[0..nwant), re-checking when
 * reference node pace reports anything or every 200 ms. */
static bool wait_peer_set(node *n, node *pace, const tm2_id *want, int nwant, int timeout_ms)
{
    uint64_t end = tv_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int k = 0;
        bool all = true;
        for (int i = 0; i < nwant; i++)
            all &= node_has_peer(n, &want[i], &k);
        if (all && k == nwant)
            return true;
        if (tv_now_ms() >= end)
            return false;
        (void)rnode_next_line(&pace->r, 200);
    }
}

static void reference_guard_by_source_ip(void **state)
{
    (void)state;
    node *r = &nodes[0], *t1 = &nodes[1], *t2 = &nodes[2], *t3 = &nodes[3];
    start_ref_at(0, 0, PORT, NULL, NULL);
    /* As persistent peers, the tm2p2p nodes keep dialling the reference. */
    start_tm2p2p_at(1, 1, "26656", "--persistent-peers", r->addr);
    assert_non_null(rnode_wait(&r->r, "PEER_CONNECTED", t1->id.s, NULL, NULL, WAIT_MS));
    start_tm2p2p_at(2, 1, "26657", "--persistent-peers", r->addr);
    const char *l = rnode_wait(&r->r, "REJECTED", NULL, NULL, "peer from this IP", WAIT_MS);
    assert_non_null(l);
    assert_non_null(strstr(l, t2->id.s));
    start_tm2p2p_at(3, 2, "26656", "--persistent-peers", r->addr);
    assert_non_null(rnode_wait(&r->r, "PEER_CONNECTED", t3->id.s, NULL, NULL, WAIT_MS));
    const tm2_id want[] = {t1->id, t3->id};
    assert_true(wait_peer_set(r, r, want, 2, WAIT_MS));
    assert_null(rnode_wait(&r->r, "PEER_CONNECTED", t2->id.s, NULL, NULL, 0));
}

static void tm2p2p_guard_by_source_ip(void **state)
{
    (void)state;
    node *t = &nodes[0], *r1 = &nodes[1], *r2 = &nodes[2], *r3 = &nodes[3];
    /* The program refuses duplicate IPs by default (the reference's default). */
    start_tm2p2p_at(0, 0, PORT, NULL, NULL);
    start_ref_at(1, 1, "26656", "--dial", t->addr);
    assert_non_null(rnode_wait(&r1->r, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));
    start_ref_at(2, 1, "26657", "--dial", t->addr);
    /* r2's dial ends in a failure, or a disconnect if it saw us briefly. */
    uint64_t end = tv_now_ms() + WAIT_MS;
    while (!rnode_wait(&r2->r, "PEER_DISCONNECTED", t->id.s, NULL, NULL, 0) &&
           !rnode_wait(&r2->r, "DIAL_FAILED", t->addr, NULL, NULL, 0)) {
        assert_true(tv_now_ms() < end);
        (void)rnode_next_line(&r2->r, 100);
    }
    start_ref_at(3, 2, "26656", "--dial", t->addr);
    assert_non_null(rnode_wait(&r3->r, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));
    const tm2_id want[] = {r1->id, r3->id};
    if (!wait_peer_set(t, r3, want, 2, WAIT_MS))
        fail_msg("the tm2p2p node does not hold exactly the peers from .2 (first) and .3");
}

static int setup(void **state)
{
    (void)state;
    memset(nodes, 0, sizeof nodes);
    for (int i = 0; i < NNODES; i++) {
        rnode_init(&nodes[i].r);
        refproc_init(&nodes[i].t);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nodes_stop();
    return 0;
}

static void from_reference_seed(void **state)
{
    (void)state;
    run_network(0);
}

static void from_tm2p2p_seed(void **state)
{
    (void)state;
    run_network(NREF);
}

/* ---- namespace setup ------------------------------------------------------------- */

static const char *make_namespaces(void)
{
    const char *why = netns_begin(NS_PREFIX, 1, kill_nodes);
    for (int i = 0; !why && i < NNODES; i++) {
        char ipb[32], cidr[40];
        snprintf(cidr, sizeof cidr, "%s/24", node_ip(i, ipb, sizeof ipb));
        why = netns_add_host(cidr);
    }
    return why;
}

int main(void)
{
    const char *why = netns_unavailable(false);
    if (why) {
        fprintf(stderr, "test_interop_netns: skipped: %s\n", why);
        return NETNS_SKIP;
    }
    why = make_namespaces();
    if (why) {
        netns_end();
        fprintf(stderr, "test_interop_netns: skipped: %s\n", why);
        return NETNS_SKIP;
    }

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(reference_guard_by_source_ip, setup, teardown),
        cmocka_unit_test_setup_teardown(tm2p2p_guard_by_source_ip, setup, teardown),
        cmocka_unit_test_setup_teardown(from_reference_seed, setup, teardown),
        cmocka_unit_test_setup_teardown(from_tm2p2p_seed, setup, teardown),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    netns_end();
    return r;
}
