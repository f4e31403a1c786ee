/* A six-host network cut in two and healed.
 *
 * Six `tm2p2p node` processes, each in a network namespace of its own with
 * an address from 198.18.0.0/15 (198.18.1.1-6/24) on a veth pair whose
 * other end is a port of bridge br0 in a seventh namespace. Persistent
 * peers form a ring (node i keeps node i+1); peer exchange finds the rest.
 * Duplicate IPs are refused, as the reference ships it: every node has its
 * own address here.
 *
 *   1. The network converges: every node reports a peer in each half and
 *      the graph is connected.
 *   2. The cut: the ports of nodes 3-5 move to a second bridge, br1, so the
 *      halves {0,1,2} and {3,4,5} cannot reach each other. The connections
 *      across the cut are reset (`ss -K` in every namespace), standing in
 *      for the keepalive timeout (a 60 s ping and 45 s pong) after which a
 *      real partition would drop them. For HOLD_MS every node is sampled:
 *      each half stays connected internally (its ring edges kept) and no
 *      node holds a peer of the other half, while the nodes keep failing to
 *      redial across.
 *   3. The heal: the ports go back to br0. Persistent peers redial (the
 *      ring edges 2->3 and 5->0 come back) and discovery merges the halves:
 *      every node holds a peer in the other half again and the graph is one.
 *
 * Every wait is a condition with a deadline (status files are rewritten
 * every 200 ms). Namespaces are named "tm2n<pid>-..." and removed by the
 * teardown, an exit handler and a SIGINT/SIGTERM handler; a start sweeps
 * those left by runs whose process is gone. Nothing is added to the host's
 * namespace. Needs root, iproute2 (`ip`, `ss` with socket destroy); skipped
 * (exit 77) with the reason otherwise. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "netns.h"
#include "nodeproc.h"
#include "tm2p2p/netaddr.h"
#include "tv.h"

#ifndef TM2P2P_PATH
#error "TM2P2P_PATH must be defined by the build"
#endif

#define N 6
#define HALF 3
#define NS_PREFIX "tm2n"
#define CONVERGE_MS 60000
#define CUT_MS 30000
#define HOLD_MS 5000
#define HEAL_MS 60000

static nodeproc procs[N];
static char homes[N][96], status[N][128], logs[N][128];
static tm2_id ids[N];
static char addrs[N][TM2_NETADDR_STRLEN];

/* Homes of earlier runs whose process is gone (a signal ends a run
 * without removing them: the handler does only what is safe there). */
static void sweep_stale_homes(void)
{
    DIR *d = opendir("/tmp");
    if (!d)
        return;
    struct dirent *e;
    const char *pre = "tm2-netns-";
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, pre, strlen(pre)) != 0)
            continue;
        long pid = strtol(e->d_name + strlen(pre), NULL, 10);
        if (pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            char p[300];
            snprintf(p, sizeof p, "/tmp/%s", e->d_name);
            np_rmtree(p);
        }
    }
    closedir(d);
}

/* ---- cleanup ------------------------------------------------------------------------------ */

/* Before the namespaces go (netns.h runs it from its exit and signal
 * handlers). */
static void kill_nodes(void)
{
    for (int i = 0; i < N; i++)
        np_kill(&procs[i]);
}

/* After them: atexit handlers run in reverse order, and this one is
 * registered before netns_begin registers its own. */
static void remove_homes(void)
{
    for (int i = 0; i < N; i++)
        if (homes[i][0])
            np_rmtree(homes[i]);
}

static void node_ip(int i, char *buf, size_t cap) { snprintf(buf, cap, "198.18.1.%d", i + 1); }

static const char *make_namespaces(void)
{
    const char *why = netns_begin(NS_PREFIX, 2, kill_nodes);
    for (int i = 0; !why && i < N; i++) {
        char ipb[32], cidr[40];
        node_ip(i, ipb, sizeof ipb);
        snprintf(cidr, sizeof cidr, "%s/24", ipb);
        why = netns_add_host(cidr);
    }
    return why;
}

/* ---- the network --------------------------------------------------------------------------- */

static int half_of(int i) { return i < HALF ? 0 : 1; }

static int find(const tm2_id *id)
{
    for (int i = 0; i < N; i++)
        if (!strcmp(ids[i].s, id->s))
            return i;
    return -1;
}

/* adj[i][j]: node i reports node j among its peers. False when a status
 * file cannot be read yet. */
static bool read_graph(bool adj[N][N])
{
    memset(adj, 0, sizeof(bool) * N * N);
    for (int i = 0; i < N; i++) {
        tm2_id p[64];
        int k = np_status_peers(status[i], p, 64);
        if (k < 0)
            return false;
        for (int j = 0; j < k && j < 64; j++) {
            int o = find(&p[j]);
            if (o >= 0)
                adj[i][o] = true;
        }
    }
    return true;
}

static bool edge(bool adj[N][N], int a, int b) { return adj[a][b] || adj[b][a]; }

/* Nodes [lo, hi) form one component over their own edges. */
static bool connected(bool adj[N][N], int lo, int hi)
{
    bool seen[N] = {false};
    int stack[N], sp = 0;
    stack[sp++] = lo;
    seen[lo] = true;
    while (sp) {
        int x = stack[--sp];
        for (int y = lo; y < hi; y++)
            if (!seen[y] && edge(adj, x, y)) {
                seen[y] = true;
                stack[sp++] = y;
            }
    }
    for (int y = lo; y < hi; y++)
        if (!seen[y])
            return false;
    return true;
}

static int cross_peers(bool adj[N][N], int i)
{
    int k = 0;
    for (int j = 0; j < N; j++)
        k += half_of(j) != half_of(i) && adj[i][j];
    return k;
}

static int peers_of(bool adj[N][N], int i)
{
    int k = 0;
    for (int j = 0; j < N; j++)
        k += adj[i][j];
    return k;
}

static void describe(bool adj[N][N], char *buf, size_t cap)
{
    size_t off = 0;
    for (int i = 0; i < N && off < cap; i++) {
        int w = snprintf(buf + off, cap - off, "%s%d:[", i ? " " : "", i);
        off += w > 0 ? (size_t)w : 0;
        for (int j = 0; j < N && off < cap; j++)
            if (adj[i][j]) {
                w = snprintf(buf + off, cap - off, "%d", j);
                off += w > 0 ? (size_t)w : 0;
            }
        if (off < cap) {
            w = snprintf(buf + off, cap - off, "]");
            off += w > 0 ? (size_t)w : 0;
        }
    }
}

/* The whole network is one: every node has a peer in each half, the graph
 * is connected. */
static bool merged(bool adj[N][N])
{
    for (int i = 0; i < N; i++)
        if (cross_peers(adj, i) < 1 || peers_of(adj, i) - cross_peers(adj, i) < 1)
            return false;
    return connected(adj, 0, N);
}

/* Each half is connected on its own and nobody holds a peer across. */
static bool split(bool adj[N][N])
{
    for (int i = 0; i < N; i++)
        if (cross_peers(adj, i))
            return false;
    return connected(adj, 0, HALF) && connected(adj, HALF, N);
}

/* Waits (re-reading every status interval) until pred holds; the elapsed
 * milliseconds, or fails the test with the last graph. */
static uint64_t wait_graph(bool (*pred)(bool adj[N][N]), int timeout_ms, const char *what)
{
    uint64_t start = tv_now_ms(), end = start + (uint64_t)timeout_ms;
    bool adj[N][N];
    for (;;) {
        for (int i = 0; i < N; i++)
            if (!np_alive(&procs[i]))
                fail_msg("%s: node %d exited (log: %s)", what, i, logs[i]);
        if (read_graph(adj) && pred(adj))
            return tv_now_ms() - start;
        if (tv_now_ms() >= end) {
            char d[512];
            describe(adj, d, sizeof d);
            fail_msg("%s: not within %d ms; peers: %s", what, timeout_ms, d);
        }
        /* The next status rewrite: the first node's pipe is silent after
         * its address line, so this is a wait of one status interval. */
        char junk[64];
        (void)np_line(&procs[0], junk, sizeof junk, 200);
    }
}

static void start_node(int i)
{
    char ipb[32], laddr[64], persistent[TM2_NETADDR_STRLEN + 32];
    node_ip(i, ipb, sizeof ipb);
    snprintf(laddr, sizeof laddr, "tcp://%s:26656", ipb);
    int next = (i + 1) % N;
    char nip[32];
    node_ip(next, nip, sizeof nip);
    snprintf(persistent, sizeof persistent, "%s@%s:26656", ids[next].s, nip);
    const char *argv[] = {"ip", "netns", "exec", netns_host(i), TM2P2P_PATH, "node",
                          "--home", homes[i], "--laddr", laddr, "--chain-id", "netns-split",
                          "--moniker", "host", "--persistent-peers", persistent,
                          "--pex-interval", "300", "--redial-base", "300", "--redial-max", "2000",
                          "--status-file", status[i], "--status-interval", "200",
                          "--log-level", "warn", NULL};
    int r = np_start(&procs[i], argv, logs[i], NULL);
    if (r)
        fail_msg("cannot start node %d: %s", i, strerror(r));
    char line[256];
    if (np_line(&procs[i], line, sizeof line, 20000) != 0)
        fail_msg("node %d printed no address (log: %s)", i, logs[i]);
    assert_true(strlen(line) < sizeof addrs[i]);
    memcpy(addrs[i], line, strlen(line) + 1);
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(line, 0, &a), 0);
    assert_string_equal(a.id.s, ids[i].s);
}

/* Moves the ports of the second half to bridge br (br0 or br1). */
static void move_half(const char *br)
{
    for (int i = HALF; i < N; i++)
        if (netns_cmd(false, "ip -n %s link set v%d master %s", netns_bridge(), i, br) != 0)
            fail_msg("cannot move v%d to %s", i, br);
}

/* Resets every TCP connection of node i with the other half. */
static void reset_across(int i)
{
    const char *argv[40] = {"ip", "netns", "exec", netns_host(i), "ss", "-K", "-t", "("};
    size_t n = 8;
    char ips[N][32];
    for (int j = 0; j < N; j++) {
        if (half_of(j) == half_of(i))
            continue;
        if (n > 8)
            argv[n++] = "or";
        node_ip(j, ips[j], sizeof ips[j]);
        argv[n++] = "dst";
        argv[n++] = ips[j];
    }
    argv[n++] = ")";
    argv[n] = NULL;
    if (netns_run(argv, true) != 0)
        fail_msg("ss -K failed in namespace %s", netns_host(i));
}

static void partition_and_heal(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(homes[i], sizeof homes[i], "/tmp/tm2-netns-%d-%d", (int)getpid(), i);
        snprintf(status[i], sizeof status[i], "%.96s/status.json", homes[i]);
        snprintf(logs[i], sizeof logs[i], "%.96s/node.log", homes[i]);
        ids[i] = np_make_key(homes[i], (unsigned)i);
    }
    for (int i = 0; i < N; i++)
        start_node(i);

    uint64_t t = wait_graph(merged, CONVERGE_MS, "convergence");
    fprintf(stderr, "netns: %d hosts connected in %llu ms\n", N, (unsigned long long)t);

    /* The cut. */
    move_half("br1");
    for (int i = 0; i < N; i++)
        reset_across(i);
    t = wait_graph(split, CUT_MS, "the cut");
    fprintf(stderr, "netns: cut; halves apart and each connected in %llu ms\n",
            (unsigned long long)t);
    /* Each half stays whole while its nodes keep trying the other half. */
    uint64_t end = tv_now_ms() + HOLD_MS;
    int samples = 0;
    while (tv_now_ms() < end) {
        bool adj[N][N];
        if (read_graph(adj)) {
            samples++;
            if (!connected(adj, 0, HALF) || !connected(adj, HALF, N)) {
                char d[512];
                describe(adj, d, sizeof d);
                fail_msg("a half fell apart during the cut: %s", d);
            }
            for (int i = 0; i < N; i++)
                if (cross_peers(adj, i))
                    fail_msg("node %d holds a peer across the cut", i);
        }
        char junk[64];
        (void)np_line(&procs[0], junk, sizeof junk, 200);
    }
    assert_true(samples > 0);
    fprintf(stderr, "netns: halves stayed connected internally for %d ms (%d samples)\n", HOLD_MS,
            samples);

    /* The heal. */
    move_half("br0");
    t = wait_graph(merged, HEAL_MS, "the heal");
    bool adj[N][N];
    assert_true(read_graph(adj));
    char d[512];
    describe(adj, d, sizeof d);
    fprintf(stderr, "netns: healed; every node has a peer in the other half after %llu ms: %s\n",
            (unsigned long long)t, d);
    /* The persistent ring edges across the cut came back. */
    assert_true(edge(adj, HALF - 1, HALF));
    assert_true(edge(adj, N - 1, 0));
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++)
        np_stop(&procs[i], SIGTERM, 5000);
    for (int i = 0; i < N; i++)
        if (homes[i][0]) {
            np_rmtree(homes[i]);
            homes[i][0] = '\0';
        }
    return 0;
}

int main(void)
{
    const char *why = netns_unavailable(true);
    if (why) {
        fprintf(stderr, "test_netns_partition: skipped: %s\n", why);
        return NETNS_SKIP;
    }
    for (int i = 0; i < N; i++)
        np_init(&procs[i]);
    sweep_stale_homes();
    atexit(remove_homes);
    why = make_namespaces();
    if (why) {
        netns_end();
        fprintf(stderr, "test_netns_partition: skipped: %s\n", why);
        return NETNS_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(partition_and_heal, teardown),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    netns_end();
    return r;
}
