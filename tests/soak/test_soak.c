/* Soak: 32 `tm2p2p node` processes on loopback with persistent peers and
 * peer exchange; every second the node killed the second before is started
 * again and another, picked at random, is killed (SIGKILL: a crash, no
 * goodbye). Node 0 is never killed: it is the long-lived node watched for
 * leaks.
 *
 * At the end the last victim is started again and, within a deadline,
 * every node must hold every one of its persistent peers (node i keeps
 * nodes i+1 and i+2, all alive by then). Node 0's open descriptors beyond
 * its connections and its resident memory must be back within a stated
 * margin of where they were once the network first converged, and every
 * node must stop cleanly on SIGTERM (exit 0: under the sanitizers that also
 * means LeakSanitizer found nothing at exit).
 *
 * Length: --duration SECONDS, or TM2_SOAK_SECONDS (default 20, what
 * `make test` runs; `make soak` runs 180). The seed of the victims' order
 * is printed; TM2_SOAK_SEED replays one. Nodes listen on 127.90.x.(i+1),
 * a port derived from the process ID; their homes and logs are under
 * /tmp/tm2-soak-<pid>, removed at the end (kept when the test fails). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nodeproc.h"
#include "tm2p2p/netaddr.h"
#include "tv.h"

#ifndef TM2P2P_PATH
#error "TM2P2P_PATH must be defined by the build"
#endif

#define N 32
#define KEEP 2                   /* persistent peers per node: the next two */
#define OUTBOUND 10              /* every node's outbound target (the default) */
#define START_MS 20000
#define CONVERGE_MS 90000
#define RECOVER_MS 90000

/* Node 0's margins, end against start (both measured with every node
 * holding all its persistent peers and at its outbound target):
 * - descriptors beyond its peer connections: +8 (listener, event and
 *   wake-up descriptors, the status file being rewritten, a dial or
 *   handshake in flight at the moment of reading; a descriptor leaked per
 *   restart of a peer would be +duration);
 * - resident memory: +10%, and at least +6 MiB. A release build's node 0
 *   sits near 10 MiB and grows about 2% in 150 restarts (its heap in use,
 *   from malloc_stats, by 42 KiB over 120: tables reaching new high-water
 *   marks as peer counts peak). Under the sanitizers it starts near
 *   25 MiB, mostly the sanitizer's own, and its allocator keeps every size
 *   class at its high-water mark: +3.6 MiB after 180 restarts. Memory kept
 *   per peer connection that came and went would grow with the run's
 *   length past either. */
#define FD_MARGIN 8
#define RSS_MARGIN_PCT 10
#define RSS_MARGIN_MIN (6u << 20)

static nodeproc procs[N];
static char root[64];
static char homes[N][96], status[N][128], logs[N][128];
static tm2_id ids[N];
static char ip[N][32];
static int port;
static char asan_env[512];
static bool failed_keep;

static uint64_t rng;
/* The program run: this build's, or TM2P2P_PROGRAM (another build of it,
 * e.g. a release build to see memory without the sanitizers' own). */
static const char *program = TM2P2P_PATH;

static uint64_t next_rand(void) { return tv_xorshift(&rng); }

static void start_node(int i)
{
    char laddr[64], persistent[(TM2_NETADDR_STRLEN + 1) * KEEP], portb[16];
    snprintf(laddr, sizeof laddr, "tcp://%s:%d", ip[i], port);
    snprintf(portb, sizeof portb, "%d", port);
    size_t off = 0;
    for (int k = 1; k <= KEEP; k++) {
        int j = (i + k) % N;
        int w = snprintf(persistent + off, sizeof persistent - off, "%s%s@%s:%d", k > 1 ? "," : "",
                         ids[j].s, ip[j], port);
        assert_true(w > 0 && (size_t)w < sizeof persistent - off);
        off += (size_t)w;
    }
    const char *argv[] = {program, "node", "--home", homes[i], "--laddr", laddr,
                          "--chain-id", "soak", "--moniker", "soak", "--persistent-peers",
                          persistent, "--allow-duplicate-ip", "--pex-interval", "1000",
                          "--redial-base", "500", "--redial-max", "2000", "--status-file",
                          status[i], "--status-interval", "500", "--log-level", "warn", NULL};
    int r = np_start(&procs[i], argv, logs[i], asan_env[0] ? asan_env : NULL);
    if (r)
        fail_msg("cannot start node %d: %s", i, strerror(r));
    char line[256];
    if (np_line(&procs[i], line, sizeof line, START_MS) != 0)
        fail_msg("node %d printed no address within %d ms (log: %s)", i, START_MS, logs[i]);
    tm2_netaddr a;
    if (tm2_netaddr_parse(line, 0, &a) != 0 || strcmp(a.id.s, ids[i].s) != 0)
        fail_msg("node %d printed '%s'", i, line);
}

/* Persistent peers node i does not hold (-1 when its status cannot be
 * read); *npeers gets how many peers it holds. */
static int missing(int i, int *npeers)
{
    tm2_id p[128];
    int k = np_status_peers(status[i], p, 128);
    if (npeers)
        *npeers = k;
    if (k < 0)
        return -1;
    int miss = 0;
    for (int d = 1; d <= KEEP; d++) {
        int j = (i + d) % N;
        bool found = false;
        for (int x = 0; x < k && x < 128 && !found; x++)
            found = strcmp(p[x].s, ids[j].s) == 0;
        miss += !found;
    }
    return miss;
}

/* CLOCK_MONOTONIC milliseconds, the clock of the status files' mono_ms. */
static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Node i's status was written after t (so after its last start, when t is
 * later than that). */
static bool status_after(int i, uint64_t t)
{
    return np_status_number(status[i], "mono_ms") >= (double)t;
}

/* Waits until every node holds all its persistent peers and has reached
 * its outbound target (so node 0 is measured in the same state at the
 * start and at the end), by status files written after since. The elapsed
 * milliseconds, or fails. */
static uint64_t wait_all_kept(uint64_t since, int timeout_ms, const char *what)
{
    uint64_t start = tv_now_ms(), end = start + (uint64_t)timeout_ms;
    for (;;) {
        int bad = -1, miss = 0;
        for (int i = 0; i < N && bad < 0; i++) {
            if (!np_alive(&procs[i]))
                fail_msg("%s: node %d exited (log: %s)", what, i, logs[i]);
            int m = status_after(i, since) ? missing(i, NULL) : -1;
            if (m == 0 && np_status_number(status[i], "outbound") < OUTBOUND)
                m = -2;
            if (m != 0) {
                bad = i;
                miss = m;
            }
        }
        if (bad < 0)
            return tv_now_ms() - start;
        if (tv_now_ms() >= end) {
            if (miss == -2)
                fail_msg("%s: node %d has fewer than %d outbound peers after %d ms (log: %s)",
                         what, bad, OUTBOUND, timeout_ms, logs[bad]);
            fail_msg("%s: node %d misses %d of its %d persistent peers after %d ms (log: %s)",
                     what, bad, miss, KEEP, timeout_ms, logs[bad]);
        }
        /* One status interval: node 0's pipe is silent after its address. */
        char junk[64];
        (void)np_line(&procs[0], junk, sizeof junk, 250);
    }
}

typedef struct footprint {
    int fds, peers;
    size_t rss;
} footprint;

static footprint measure(void)
{
    footprint f;
    (void)missing(0, &f.peers);
    f.fds = np_fds(procs[0].pid);
    f.rss = np_rss(procs[0].pid);
    assert_true(f.fds > 0 && f.rss > 0 && f.peers >= 0);
    return f;
}

static int soak_seconds(void)
{
    const char *e = getenv("TM2_SOAK_SECONDS");
    int s = e ? atoi(e) : 20;
    return s > 0 ? s : 20;
}

static int g_seconds;

static void soak(void **state)
{
    (void)state;
    const char *se = getenv("TM2_SOAK_SEED");
    uint64_t seed = se ? strtoull(se, NULL, 0) : ((uint64_t)time(NULL) << 16) ^ (uint64_t)getpid();
    if (!seed)
        seed = 1;
    rng = seed;
    fprintf(stderr, "soak: %d nodes, %d s, seed %llu (TM2_SOAK_SEED=%llu replays the victims)\n",
            N, g_seconds, (unsigned long long)seed, (unsigned long long)seed);

    port = 20000 + (int)(getpid() % 10000);
    int net = 1 + (int)(getpid() % 250);
    snprintf(root, sizeof root, "/tmp/tm2-soak-%d", (int)getpid());
    for (int i = 0; i < N; i++) {
        snprintf(homes[i], sizeof homes[i], "%s/%d", root, i);
        snprintf(status[i], sizeof status[i], "%.96s/status.json", homes[i]);
        snprintf(logs[i], sizeof logs[i], "%.96s/node.log", homes[i]);
        snprintf(ip[i], sizeof ip[i], "127.90.%d.%d", net, i + 1);
        ids[i] = np_make_key(homes[i], 0x100u + (unsigned)i);
    }
    uint64_t t0 = mono_ms();
    for (int i = 0; i < N; i++)
        start_node(i);
    uint64_t took = wait_all_kept(t0, CONVERGE_MS, "start");
    footprint f0 = measure();
    fprintf(stderr, "soak: converged in %llu ms; node 0: %d peers, %d descriptors, %zu KiB\n",
            (unsigned long long)took, f0.peers, f0.fds, f0.rss >> 10);

    int victim = -1, kills = 0;
    uint64_t next_report = tv_now_ms() + 10000;
    uint64_t end = tv_now_ms() + (uint64_t)g_seconds * 1000u, next = tv_now_ms();
    while (tv_now_ms() < end) {
        /* Once a second; between ticks, wait on node 0's (silent) pipe. */
        char junk[64];
        uint64_t now = tv_now_ms();
        if (now < next) {
            (void)np_line(&procs[0], junk, sizeof junk, (int)(next - now));
            continue;
        }
        next += 1000;
        if (now >= next_report) {
            next_report += 10000;
            int np = 0;
            (void)missing(0, &np);
            fprintf(stderr, "soak: %d kills; node 0: %d peers, %d descriptors, %zu KiB\n", kills,
                    np, np_fds(procs[0].pid), np_rss(procs[0].pid) >> 10);
        }
        for (int i = 0; i < N; i++)
            if (i != victim && !np_alive(&procs[i]))
                fail_msg("node %d died (log: %s)", i, logs[i]);
        if (victim >= 0)
            start_node(victim);
        victim = 1 + (int)(next_rand() % (N - 1));
        np_kill(&procs[victim]);
        kills++;
    }
    uint64_t t1 = mono_ms();
    if (victim >= 0)
        start_node(victim);
    took = wait_all_kept(t1, RECOVER_MS, "recovery");
    footprint f1 = measure();
    fprintf(stderr, "soak: %d kills; every node holds its persistent peers again %llu ms after "
            "the last restart; node 0: %d peers, %d descriptors (%+d beyond its peers), %zu KiB "
            "(%+.1f%%)\n",
            kills, (unsigned long long)took, f1.peers, f1.fds,
            (f1.fds - f1.peers) - (f0.fds - f0.peers), f1.rss >> 10,
            100.0 * ((double)f1.rss - (double)f0.rss) / (double)f0.rss);
    failed_keep = true;
    if ((f1.fds - f1.peers) - (f0.fds - f0.peers) > FD_MARGIN)
        fail_msg("node 0: %d descriptors beyond its %d peers, %d at the start", f1.fds - f1.peers,
                 f1.peers, f0.fds - f0.peers);
    size_t margin = f0.rss / 100 * RSS_MARGIN_PCT;
    if (margin < RSS_MARGIN_MIN)
        margin = RSS_MARGIN_MIN;
    if (f1.rss > f0.rss + margin)
        fail_msg("node 0: resident memory %zu KiB, %zu KiB at the start (margin %zu KiB)",
                 f1.rss >> 10, f0.rss >> 10, margin >> 10);
    /* Every node stops cleanly (and, under the sanitizers, leak-free). */
    for (int i = 0; i < N; i++) {
        int st = np_stop(&procs[i], SIGTERM, 20000);
        if (st != 0)
            fail_msg("node %d exited with status %d on SIGTERM (log: %s)", i, st, logs[i]);
    }
    failed_keep = false;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++)
        np_stop(&procs[i], SIGKILL, 5000);
    if (failed_keep)
        fprintf(stderr, "soak: logs kept in %s\n", root);
    else if (root[0])
        np_rmtree(root);
    return 0;
}

static void on_exit_cleanup(void)
{
    for (int i = 0; i < N; i++)
        np_kill(&procs[i]);
}

static void on_signal(int sig)
{
    on_exit_cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv)
{
    g_seconds = soak_seconds();
    if (getenv("TM2P2P_PROGRAM") && *getenv("TM2P2P_PROGRAM"))
        program = getenv("TM2P2P_PROGRAM");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--duration") && i + 1 < argc) {
            g_seconds = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--duration SECONDS]\n", argv[0]);
            return 2;
        }
    }
    if (g_seconds <= 0) {
        fprintf(stderr, "--duration: a positive number of seconds\n");
        return 2;
    }
    /* Sanitized nodes run without AddressSanitizer's quarantine here: it
     * keeps freed memory on purpose, up to its size (8 MiB takes node 0
     * about 100 s to fill at a restart a second), so RSS would measure the
     * quarantine filling rather than what the node holds. The other tests
     * keep one for use-after-free detection. The user's own ASAN_OPTIONS
     * come after and win. */
    const char *user = getenv("ASAN_OPTIONS");
    snprintf(asan_env, sizeof asan_env, "ASAN_OPTIONS=quarantine_size_mb=0%s%s",
             user && *user ? ":" : "", user ? user : "");
    for (int i = 0; i < N; i++)
        np_init(&procs[i]);
    atexit(on_exit_cleanup);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(soak, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
