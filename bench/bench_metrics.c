/* What a scrape of /metrics costs a node with 2,000 connected peers:
 *
 *   metrics_scrape_ms          one GET /metrics over loopback, connect to
 *                              last byte (median of the scrapes; the longest
 *                              beside it); metrics_collect_ms and
 *                              metrics_write_ms are its two halves (the
 *                              snapshot, the text), timed in-process
 *   metrics_loop_stall_ms      how long a scrape holds up the network
 *                              thread: a probe on it (tm2_switch_every,
 *                              every 1 ms) records how late each run is
 *                              against the previous one; per scrape its
 *                              longest lateness, the median over the
 *                              scrapes (the longest and p99 beside it).
 *                              Each scrape is followed by as long without
 *                              one, the baseline (metrics_loop_stall_idle_*):
 *                              the timer's own slack and other load on the
 *                              machine fall on both
 *   metrics_loop_blocked_ms    the longest lateness during scrapes that was
 *                              not spent waiting for a CPU (the thread's
 *                              run-queue wait, /proc/thread-self/schedstat,
 *                              taken out): what the scrape's locks (and
 *                              interrupts) cost
 *   metrics_loop_stall_goal_ratio   stall / 1 ms (goal: below 1)
 *
 * The scraper is this process's main thread. The headline figures come from
 * a pass where it runs at SCHED_IDLE, standing for a Prometheus on another
 * host; an earlier pass at normal priority, as a Prometheus on the same two
 * cores would compete, gives metrics_loop_stall_local_scraper_*.
 *
 * The hub is the program's node runtime (cli_node: switch, discovery, the
 * HTTP endpoints on their own thread) in this process; the 2,000 peers come
 * from the peer driver (peer_driver.h), a child process forked before any
 * thread, each an idle MConnection with a node's channel set. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "bench_util.h"
#include "cli/cli.h"
#include "cli/gossip.h"
#include "cli/http.h"
#include "cli/metrics.h"
#include "peer_driver.h"

#define PEERS 2000
#define INFLIGHT 16            /* dials in flight from the driver, well under the hub's 64 pending handshakes */
#define SCRAPES 60
#define PROBE_MS 1

/* Windows alternate: 2k+1 while scrape k runs, 2k+2 the same time after it
 * without one; scrapes 0..SCRAPES-1 are the first pass, the rest the second.
 * The probe logs every run: its window (a gap that began in a scrape window
 * is the scrape's), how late it was and how much of that it was not waiting
 * for a CPU. Written on the network thread; read once the switch stopped. */
#define WINDOWS (4 * SCRAPES + 2)
#define MAX_RUNS 400000

typedef struct probe_run_rec {
    int window;
    uint32_t late_us, blocked_us;
} probe_run_rec;

typedef struct probe {
    atomic_int window;
    int last_window;
    uint64_t last_ns, last_wait_ns;
    int schedstat_fd;                   /* the network thread's, opened by its first run */
    size_t n;
    probe_run_rec runs[MAX_RUNS];
} probe;

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Nanoseconds the calling thread has waited on a run queue so far. */
static uint64_t runqueue_wait_ns(probe *p)
{
    if (p->schedstat_fd < 0)
        p->schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    char b[128];
    ssize_t n = p->schedstat_fd >= 0 ? pread(p->schedstat_fd, b, sizeof b - 1, 0) : -1;
    unsigned long long cpu, wait;
    if (n <= 0)
        return 0;
    b[n] = '\0';
    return sscanf(b, "%llu %llu", &cpu, &wait) == 2 ? wait : 0;
}

/* How late this run is against the previous run plus the interval, and how
 * much of that the thread was not runnable-and-waiting for a CPU. */
static void probe_run(tm2_switch *sw, void *user)
{
    (void)sw;
    probe *p = user;
    uint64_t now = mono_ns(), last = p->last_ns, wait = runqueue_wait_ns(p), last_wait = p->last_wait_ns;
    int w = atomic_load_explicit(&p->window, memory_order_relaxed), w0 = p->last_window;
    p->last_ns = now;
    p->last_wait_ns = wait;
    p->last_window = w;
    if (!last || w <= 0 || p->n == MAX_RUNS)
        return;
    if (w0 > 0 && (w0 & 1))
        w = w0;
    uint64_t gap = now - last, late = gap > PROBE_MS * 1000000u ? gap - PROBE_MS * 1000000u : 0;
    uint64_t waited = wait - last_wait, blocked = late > waited ? late - waited : 0;
    p->runs[p->n++] = (probe_run_rec){w, (uint32_t)(late / 1000), (uint32_t)(blocked / 1000)};
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of v[0..n) in ms (sorts v). */
static double quantile_ms(uint32_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_u32);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i] / 1000.0;
}

/* One pass's figures: per scrape (and per window after one) its longest
 * lateness, and over all runs p99 and the longest not spent waiting. */
typedef struct pass_figures {
    double stall_ms, stall_max_ms, stall_p99_ms, blocked_ms;
    double idle_ms, idle_max_ms, idle_p99_ms, blocked_idle_ms;
} pass_figures;

static pass_figures figures(const probe *p, int pass)
{
    static uint32_t per[2][SCRAPES], all[2][MAX_RUNS];
    size_t n_all[2] = {0, 0};
    uint32_t blocked[2] = {0, 0};
    memset(per, 0, sizeof per);
    int w_lo = 2 * pass * SCRAPES + 1, w_hi = w_lo + 2 * SCRAPES;
    for (size_t i = 0; i < p->n; i++) {
        const probe_run_rec *r = &p->runs[i];
        if (r->window < w_lo || r->window >= w_hi)
            continue;
        int k = (r->window - w_lo) / 2, scr = (r->window - w_lo) % 2 == 0;
        if (r->late_us > per[scr][k])
            per[scr][k] = r->late_us;
        all[scr][n_all[scr]++] = r->late_us;
        if (r->blocked_us > blocked[scr])
            blocked[scr] = r->blocked_us;
    }
    pass_figures f = {
        .stall_p99_ms = quantile_ms(all[1], n_all[1], 0.99),
        .idle_p99_ms = quantile_ms(all[0], n_all[0], 0.99),
        .blocked_ms = blocked[1] / 1000.0,
        .blocked_idle_ms = blocked[0] / 1000.0,
    };
    f.stall_ms = quantile_ms(per[1], SCRAPES, 0.5);
    f.stall_max_ms = quantile_ms(per[1], SCRAPES, 1.0);
    f.idle_ms = quantile_ms(per[0], SCRAPES, 0.5);
    f.idle_max_ms = quantile_ms(per[0], SCRAPES, 1.0);
    return f;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One scrape; its time in ms, its body's size and sample lines. */
static double scrape(const char *url, size_t *bytes, size_t *samples)
{
    int code;
    char *body, err[256];
    size_t len;
    double t0 = now_s();
    if (cli_http_get(url, 30000, &code, &body, &len, err, sizeof err))
        DIE("GET %s: %s", url, err);
    double ms = (now_s() - t0) * 1000;
    if (code != 200)
        DIE("GET %s: HTTP %d", url, code);
    size_t n = 0;
    for (const char *s = body; *s; s++)
        n += *s == '\n' && s[1] && s[1] != '#';
    *bytes = len;
    *samples = n + (body[0] != '#');
    free(body);
    return ms;
}

int main(void)
{
    if (sodium_init() < 0)
        DIE("sodium_init");
    signal(SIGPIPE, SIG_IGN);
    bench_raise_nofile(2 * PEERS + 200);
    bench_child drv = peer_driver_fork();

    cli_log lg;
    cli_log_init(&lg, TM2_LOG_ERROR, CLI_LOG_LOGFMT, "hub");
    cli_node_opts o = {
        .listen_addr = "tcp://127.0.0.1:0",
        .network = BENCH_NETWORK,
        .moniker = "hub",
        .max_inbound = PEERS + 100,
        .max_outbound = 10,
        .allow_duplicate_ip = true,
        .pex = true,
        .http_addr = "127.0.0.1:0",
    };
    tm2_node_key_generate(&o.key);
    tm2_mconn_config_default(&o.mconn);
    cli_node *hub;
    char err[512];
    if (cli_node_create(&o, &lg, &hub, err, sizeof err) < 0 || cli_node_start(hub, err, sizeof err) < 0)
        DIE("hub: %s", err);
    tm2_node_key_wipe(&o.key);
    tm2_switch *sw = cli_node_switch(hub);
    char listen[TM2_NETADDR_STRLEN], url[128];
    cli_node_listen_addr(hub, listen, sizeof listen);
    snprintf(url, sizeof url, "http://%s/metrics", cli_node_http_addr(hub));

    bench_child_send(&drv, "idle %d %d %s", PEERS, INFLIGHT, listen);
    char line[256];
    bench_child_expect(&drv, "CONNECTED", line, sizeof line, 120000);
    size_t in = 0, out = 0;
    double deadline = now_s() + 30;
    unsigned long long ok = 0, failed = 0;
    double secs = 0;
    if (sscanf(line, "CONNECTED ok=%llu failed=%llu secs=%lf", &ok, &failed, &secs) != 3)
        DIE("driver: %s", line);
    do {
        tm2_switch_counts(sw, &in, &out, NULL);
        if (in >= ok)
            break;
        nap_s(0.01);
    } while (now_s() < deadline);
    if (in < PEERS) {
        tm2_switch_counters c;
        tm2_switch_stats(sw, &c);
        fprintf(stderr, "metrics bench: %zu of %d peers connected (%llu dials failed); hub: dropped at accept %llu,"
                " handshakes failed (secret %llu, nodeinfo %llu, check %llu)\n",
                in, PEERS, failed, (unsigned long long)c.inbound_dropped,
                (unsigned long long)c.handshakes_failed[TM2_STAGE_SECRET],
                (unsigned long long)c.handshakes_failed[TM2_STAGE_NODEINFO],
                (unsigned long long)c.handshakes_failed[TM2_STAGE_CHECK]);
        for (int k = 0; k < TM2_STATS_REASONS; k++)
            if (c.rejected[k])
                fprintf(stderr, "  rejected %s: %llu\n", tm2_errname(-k), (unsigned long long)c.rejected[k]);
    }

    probe *pr = calloc(1, sizeof *pr);
    if (pr)
        pr->schedstat_fd = -1;
    if (!pr || tm2_switch_every(sw, PROBE_MS, probe_run, pr) != 0)
        DIE("probe");
    /* The probe runs a while first; one scrape warms the allocator. */
    size_t bytes, samples;
    nap_s(0.5);
    scrape(url, &bytes, &samples);

    /* Each scrape, then as long without one: load from elsewhere falls on
     * both alike, and the windows without scrapes are the baseline. First
     * pass: this thread, the scraper, at normal priority, as a Prometheus on
     * the same two cores would be. Second pass: at SCHED_IDLE, standing for
     * a scraper on another host, so the figure is what the node's own
     * serving costs its network thread. */
    double times[2 * SCRAPES];
    for (int k = 0; k < 2 * SCRAPES; k++) {
        if (k == SCRAPES && sched_setscheduler(0, SCHED_IDLE, &(struct sched_param){0}) != 0)
            DIE("SCHED_IDLE: %s", strerror(errno));
        atomic_store(&pr->window, 2 * k + 1);
        times[k] = scrape(url, &bytes, &samples);
        atomic_store(&pr->window, 2 * k + 2);
        nap_s(times[k] / 1000 > 0.005 ? times[k] / 1000 : 0.005);
    }
    atomic_store(&pr->window, 0);

    /* The two halves of a scrape, on this thread: the snapshot and the text. */
    double t_collect = 1e9, t_write = 1e9;
    for (int i = 0; i < 5; i++) {
        cli_metrics_snap snap;
        tm2__buf b = {0};
        double t0 = now_s();
        if (cli_metrics_collect(sw, cli_node_discovery(hub), &snap))
            DIE("collect");
        double t1 = now_s();
        cli_metrics_write(&snap, &b);
        double t2 = now_s();
        t_collect = t1 - t0 < t_collect ? t1 - t0 : t_collect;
        t_write = t2 - t1 < t_write ? t2 - t1 : t_write;
        tm2__buf_free(&b);
        cli_metrics_snap_free(&snap);
    }

    size_t in_end = 0;
    tm2_switch_counts(sw, &in_end, &out, NULL);
    cli_node_stop(hub);
    bench_child_end(&drv);
    cli_node_free(hub);

    pass_figures local = figures(pr, 0), remote = figures(pr, 1);
    qsort(times, SCRAPES, sizeof times[0], cmp_double);
    printf("metrics_peers: %zu (at the end: %zu)\n", in, in_end);
    printf("metrics_scrape_bytes: %zu\n", bytes);
    printf("metrics_scrape_samples: %zu\n", samples);
    printf("metrics_scrape_ms: %.2f ms\n", times[SCRAPES / 2]);
    printf("metrics_scrape_max_ms: %.2f ms\n", times[SCRAPES - 1]);
    printf("metrics_collect_ms: %.2f ms\n", t_collect * 1000);
    printf("metrics_write_ms: %.2f ms\n", t_write * 1000);
    printf("metrics_loop_stall_ms: %.3f ms\n", remote.stall_ms);
    printf("metrics_loop_stall_max_ms: %.3f ms\n", remote.stall_max_ms);
    printf("metrics_loop_stall_p99_ms: %.3f ms\n", remote.stall_p99_ms);
    printf("metrics_loop_stall_idle_ms: %.3f ms\n", remote.idle_ms);
    printf("metrics_loop_stall_idle_max_ms: %.3f ms\n", remote.idle_max_ms);
    printf("metrics_loop_stall_idle_p99_ms: %.3f ms\n", remote.idle_p99_ms);
    printf("metrics_loop_blocked_ms: %.3f ms\n", remote.blocked_ms);
    printf("metrics_loop_blocked_idle_ms: %.3f ms\n", remote.blocked_idle_ms);
    printf("metrics_loop_stall_local_scraper_ms: %.3f ms\n", local.stall_ms);
    printf("metrics_loop_stall_local_scraper_max_ms: %.3f ms\n", local.stall_max_ms);
    printf("metrics_loop_stall_local_scraper_idle_ms: %.3f ms\n", local.idle_ms);
    printf("metrics_probe_runs: %zu\n", pr->n);
    printf("metrics_loop_stall_goal_ratio: %.3f\n", remote.stall_ms / 1.0);
    free(pr);
    return 0;
}
