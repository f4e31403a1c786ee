/* One node with 10,000 peers: a hub switch (this process) accepts 10,000
 * inbound peers from the peer driver (peer_driver.h, a child process forked
 * before any thread), stays responsive, and broadcasts to all of them.
 *
 *   scale_connect_rate          peers per second from the first dial to all
 *                               10,000 connected (TCP, secret connection,
 *                               NodeInfo exchange, admission): 9,000 dialled
 *                               with SCALE_INFLIGHT at once, then the last
 *                               1,000 all at once (the storm)
 *   scale_peer_bytes            the hub's RSS growth over the 10,000 idle
 *                               peers divided by them, as bench_switch
 *                               measures it (kernel socket buffers are not in
 *                               it); goal 8 KiB (scale_peer_bytes_goal_ratio)
 *   scale_broadcast_deliveries_per_s
 *                               256 B messages broadcast from a thread of the
 *                               hub's process to all 10,000 peers on one
 *                               channel, counted as the driver receives them
 *   scale_probe_rtt_*           a probe peer (a switch of its own in this
 *                               process, on a channel only it and the hub
 *                               have) sends a message every 5 ms; the hub's
 *                               reactor echoes it from its network thread;
 *                               round trips, idle and during the broadcast
 *   scale_loop_stall_max_ms     a probe on the hub's network thread
 *                               (tm2_switch_every, 1 ms, as bench_metrics)
 *                               records how late each run is: the longest
 *                               while the 9,000 connect, and
 *   scale_storm_loop_stall_ms   the longest while the last 1,000 connect at
 *                               once
 *
 * Admission is opened for the benchmark: every peer comes from loopback
 * (127.0.0.2 .. 127.0.0.5, four source addresses so that no one address
 * runs out of ephemeral ports), which limit_local_addrs false already exempts
 * from the per-IP and per-subnet rules; they are also turned off
 * (max_pending_inbound_per_ip, accept_ip_rate, accept_subnet_rate,
 * max_inbound_per_ip, max_inbound_per_subnet all 0), allow_duplicate_ip is
 * on, max_inbound is above 10,000 and max_pending_inbound above the storm's
 * 1,000 handshakes. The hub's and the probe's flush throttle is 0 (a node's
 * 100 ms would be added to every round trip, and the figure is about the
 * network thread); the rest of the hub's connection settings are a node's.
 * Both processes raise RLIMIT_NOFILE (10,000 sockets a side). */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "bench_util.h"
#include "peer_driver.h"
#include "tm2p2p/switch.h"

#define PEERS 10000
#define STORM 1000
#define SCALE_INFLIGHT 256       /* dials in flight before the storm */
#define SOURCES 4                /* loopback source addresses of the driver */
#define PROBE_CH 0x7f
#define PROBE_EVERY_MS 5
#define IDLE_RTT_S 3.0
#define BC_CH 0x40               /* a node's channel (queue of 1,000 messages) */
#define BC_LEN 256
#define BC_WARM_S 1.0
#define BC_SECS 4.0
#define BC_SAMPLE 32             /* peers whose queues pace the broadcaster ... */
#define BC_QUEUE 16              /* ... to at most this many messages queued */
#define SETTLE_S 1.0
#define CONNECT_S 120.0

/* ---- the network-thread probe ------------------------------------------------------ */

enum { W_NONE, W_CONNECT, W_STORM, W_IDLE, W_BROADCAST, W_N };
#define HIST_US 100              /* histogram buckets of 0.1 ms ... */
#define HIST_N 20000             /* ... up to 2 s */

typedef struct loop_probe {
    atomic_int window;
    uint64_t last_ns;
    uint32_t max_us[W_N];
    uint32_t hist[W_N][HIST_N];
    uint64_t runs[W_N];
} loop_probe;

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void loop_probe_run(tm2_switch *sw, void *user)
{
    (void)sw;
    loop_probe *p = user;
    uint64_t now = mono_ns(), last = p->last_ns;
    p->last_ns = now;
    int w = atomic_load_explicit(&p->window, memory_order_relaxed);
    if (!last || w <= 0)
        return;
    uint64_t gap = now - last, late = gap > 1000000u ? (gap - 1000000u) / 1000 : 0;
    if (late > p->max_us[w])
        p->max_us[w] = (uint32_t)late;
    p->hist[w][late / HIST_US < HIST_N ? late / HIST_US : HIST_N - 1]++;
    p->runs[w]++;
}

static double loop_quantile_ms(const loop_probe *p, int w, double q)
{
    uint64_t want = (uint64_t)(q * (double)p->runs[w]), seen = 0;
    for (int i = 0; i < HIST_N; i++) {
        seen += p->hist[w][i];
        if (seen > want)
            return (i + 1) * HIST_US / 1000.0;
    }
    return p->max_us[w] / 1000.0;
}

/* ---- the probe peer ---------------------------------------------------------------- */

#define RTT_MAX 4096

typedef struct rtt_log {
    atomic_int phase;            /* 0: none, 1: idle, 2: broadcast */
    atomic_bool stop;
    tm2_peer *peer;              /* the probe's view of the hub */
    uint32_t us[3][RTT_MAX];
    atomic_size_t n[3];
    uint64_t sent[3], lost[3];
} rtt_log;

static void hub_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)user;
    if (ch == PROBE_CH)
        (void)tm2_peer_try_send(p, ch, msg, len);
}

static void probe_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)p;
    rtt_log *r = user;
    uint64_t sent_ns;
    int phase;
    if (ch != PROBE_CH || len != sizeof sent_ns + sizeof phase)
        return;
    memcpy(&sent_ns, msg, sizeof sent_ns);
    memcpy(&phase, msg + sizeof sent_ns, sizeof phase);
    if (phase < 1 || phase > 2)
        return;
    size_t i = atomic_load(&r->n[phase]);
    if (i < RTT_MAX) {
        r->us[phase][i] = (uint32_t)((mono_ns() - sent_ns) / 1000);
        atomic_store(&r->n[phase], i + 1);
    }
}

static void probe_thread(void *arg)
{
    rtt_log *r = arg;
    while (!atomic_load(&r->stop)) {
        int phase = atomic_load(&r->phase);
        if (phase) {
            uint8_t msg[sizeof(uint64_t) + sizeof(int)];
            uint64_t t = mono_ns();
            memcpy(msg, &t, sizeof t);
            memcpy(msg + sizeof t, &phase, sizeof phase);
            r->sent[phase]++;
            if (tm2_peer_try_send(r->peer, PROBE_CH, msg, sizeof msg) != 0)
                r->lost[phase]++;
        }
        nap_s(PROBE_EVERY_MS / 1000.0);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double rtt_quantile_ms(rtt_log *r, int phase, double q)
{
    size_t n = atomic_load(&r->n[phase]);
    if (!n)
        return -1;
    qsort(r->us[phase], n, sizeof r->us[phase][0], cmp_u32);
    return r->us[phase][(size_t)(q * (double)(n - 1) + 0.5)] / 1000.0;
}

/* ---- the hub ----------------------------------------------------------------------- */

static tm2_switch *switch_up(const tm2_switch_config *c)
{
    tm2_switch *sw;
    int r = tm2_switch_new(c, &sw);
    if (r)
        DIE("switch_new: %s", tm2_strerror(r));
    if ((r = tm2_switch_start(sw)) != 0)
        DIE("switch_start: %s", tm2_strerror(r));
    return sw;
}

static size_t inbound(tm2_switch *sw)
{
    size_t in = 0, out = 0, dialing = 0;
    tm2_switch_counts(sw, &in, &out, &dialing);
    return in;
}

/* Waits until the hub holds want inbound peers; drains the event ring on
 * the way (its pages were touched before the first reading). Exits with
 * the hub's counters if they do not come. */
static double wait_inbound(tm2_switch *sw, tm2_subscription *sub, size_t want, double secs,
                           size_t *rejected, size_t *disconnected)
{
    double deadline = now_s() + secs;
    for (;;) {
        size_t in = inbound(sw);
        if (in >= want)
            return now_s();
        double left = deadline - now_s();
        if (left <= 0) {
            tm2_switch_counters c;
            tm2_switch_stats(sw, &c);
            fprintf(stderr, "scale: %zu of %zu peers connected in %.0f s; dropped at accept %llu,"
                    " handshakes failed (secret %llu, nodeinfo %llu, check %llu)\n", in, want, secs,
                    (unsigned long long)c.inbound_dropped,
                    (unsigned long long)c.handshakes_failed[TM2_STAGE_SECRET],
                    (unsigned long long)c.handshakes_failed[TM2_STAGE_NODEINFO],
                    (unsigned long long)c.handshakes_failed[TM2_STAGE_CHECK]);
            for (int k = 0; k < TM2_REFUSALS; k++)
                if (c.inbound_refused[k])
                    fprintf(stderr, "  refused at accept (%d): %llu\n", k,
                            (unsigned long long)c.inbound_refused[k]);
            exit(1);
        }
        tm2_event ev;
        if (tm2_subscription_next(sub, &ev, left > 0.05 ? 50 : (int)(left * 1000) + 1) == 0) {
            if (ev.type == TM2_EVENT_PEER_REJECTED && (*rejected)++ < 5)
                fprintf(stderr, "scale hub: rejected: %s\n", ev.reason_text);
            if (ev.type == TM2_EVENT_PEER_DISCONNECTED)
                (*disconnected)++;
        }
    }
}

/* The longest queue on BC_CH among ps (peers without it count 0). */
static size_t longest_queue(tm2_peer **ps, size_t n)
{
    size_t most = 0;
    for (size_t i = 0; i < n; i++) {
        tm2_mconn_status st;
        if (tm2_peer_status(ps[i], &st) != 0)
            continue;
        for (size_t k = 0; k < st.n_channels; k++)
            if (st.channels[k].id == BC_CH && st.channels[k].send_queue_size > most)
                most = st.channels[k].send_queue_size;
    }
    return most;
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void drain(tm2_subscription *sub, size_t *rejected, size_t *disconnected)
{
    tm2_event ev;
    while (tm2_subscription_next(sub, &ev, 0) == 0) {
        if (ev.type == TM2_EVENT_PEER_REJECTED && (*rejected)++ < 5)
            fprintf(stderr, "scale hub: rejected: %s\n", ev.reason_text);
        if (ev.type == TM2_EVENT_PEER_DISCONNECTED)
            (*disconnected)++;
    }
}

int main(void)
{
    if (sodium_init() < 0)
        DIE("sodium_init");
    signal(SIGPIPE, SIG_IGN);
    /* Raised before the fork: the driver inherits it. */
    bench_raise_nofile(PEERS + 512);

    bench_child drv = peer_driver_fork();

    /* The hub: a node's channels and the probe's. */
    tm2_channel_desc hub_ch[BENCH_N_NODE_CHANS + 1];
    memcpy(hub_ch, bench_node_chans, BENCH_N_NODE_CHANS * sizeof bench_node_chans[0]);
    hub_ch[BENCH_N_NODE_CHANS] = (tm2_channel_desc){.id = PROBE_CH, .priority = 1,
                                                    .send_queue_capacity = 64,
                                                    .recv_message_capacity = 64};
    tm2_reactor hub_r = {.name = "scale", .channels = hub_ch, .n_channels = BENCH_N_NODE_CHANS + 1,
                         .receive = hub_receive};
    tm2_switch_config c;
    bench_switch_config(&c);
    c.listen_addr = "tcp://127.0.0.1:0";
    c.moniker = "hub";
    c.max_inbound = PEERS + 100;
    c.max_pending_inbound = STORM + 64;
    c.handshake_timeout_ms = 20000;
    c.allow_duplicate_ip = true;
    c.limit_local_addrs = false;
    c.max_pending_inbound_per_ip = 0;
    c.accept_ip_rate = 0;
    c.accept_subnet_rate = 0;
    c.max_inbound_per_ip = 0;
    c.max_inbound_per_subnet = 0;
    c.mconn.flush_throttle_ms = 0;
    c.reactors = &hub_r;
    c.n_reactors = 1;
    tm2_switch *hub = switch_up(&c);
    tm2_subscription *sub;
    if (tm2_switch_subscribe(hub, TM2_EVENT_PEER_REJECTED | TM2_EVENT_PEER_DISCONNECTED, NULL, 256,
                             &sub))
        DIE("subscribe");
    tm2_netaddr hub_addr;
    if (tm2_switch_listen_addr(hub, &hub_addr))
        DIE("listen addr");
    char addr[TM2_NETADDR_STRLEN];
    if (tm2_netaddr_format(&hub_addr, addr, sizeof addr) < 0)
        DIE("format");

    /* The probe peer, connected before anything is measured. */
    rtt_log *rl = calloc(1, sizeof *rl);
    loop_probe *lp = calloc(1, sizeof *lp);
    if (!rl || !lp)
        DIE("oom");
    memset(rl, 0, sizeof *rl);   /* touch the pages now, not during the readings */
    memset(lp, 0, sizeof *lp);
    tm2_channel_desc probe_ch = hub_ch[BENCH_N_NODE_CHANS];
    tm2_reactor probe_r = {.name = "probe", .channels = &probe_ch, .n_channels = 1,
                           .receive = probe_receive, .user = rl};
    bench_switch_config(&c);
    c.moniker = "probe";
    c.mconn.flush_throttle_ms = 0;
    c.reactors = &probe_r;
    c.n_reactors = 1;
    tm2_switch *probe = switch_up(&c);
    if (tm2_switch_dial_peers(probe, &hub_addr, 1) != 1)
        DIE("probe dial");
    size_t rejected = 0, disconnected = 0;
    wait_inbound(hub, sub, 1, 10, &rejected, &disconnected);
    if (tm2_switch_peers(probe, &rl->peer, 1) != 1)
        DIE("probe peer");
    uv_thread_t probe_tid;
    if (uv_thread_create(&probe_tid, probe_thread, rl))
        DIE("probe thread");
    if (tm2_switch_every(hub, 1, loop_probe_run, lp))
        DIE("loop probe");
    nap_s(0.3);

    /* Connect: 9,000 with SCALE_INFLIGHT in flight, then 1,000 at once. */
    char line[256];
    unsigned long long ok = 0, failed = 0;
    double secs_a = 0, secs_b = 0;
    size_t rss0 = bench_rss_bytes(0), heap0 = heap_in_use();
    atomic_store(&lp->window, W_CONNECT);
    double t0 = now_s();
    bench_child_send(&drv, "idle %d %d %s %d", PEERS - STORM, SCALE_INFLIGHT, addr, SOURCES);
    bench_child_expect(&drv, "CONNECTED", line, sizeof line, (int)(CONNECT_S * 1000));
    if (sscanf(line, "CONNECTED ok=%llu failed=%llu secs=%lf", &ok, &failed, &secs_a) != 3)
        DIE("driver: %s", line);
    double t_a = wait_inbound(hub, sub, 1 + PEERS - STORM, 30, &rejected, &disconnected);
    atomic_store(&lp->window, W_STORM);
    double t_storm = now_s();
    bench_child_send(&drv, "idle %d %d %s %d", STORM, STORM, addr, SOURCES);
    bench_child_expect(&drv, "CONNECTED", line, sizeof line, (int)(CONNECT_S * 1000));
    if (sscanf(line, "CONNECTED ok=%llu failed=%llu secs=%lf", &ok, &failed, &secs_b) != 3)
        DIE("driver: %s", line);
    double t_all = wait_inbound(hub, sub, 1 + PEERS, 30, &rejected, &disconnected);
    atomic_store(&lp->window, W_NONE);
    if (failed)
        fprintf(stderr, "scale: %llu dials failed\n", failed);
    nap_s(SETTLE_S);
    drain(sub, &rejected, &disconnected);
    size_t rss1 = bench_rss_bytes(0), heap1 = heap_in_use();
    size_t held = inbound(hub) - 1;

    /* Idle round trips. */
    atomic_store(&lp->window, W_IDLE);
    atomic_store(&rl->phase, 1);
    nap_s(IDLE_RTT_S);
    atomic_store(&rl->phase, 0);
    atomic_store(&lp->window, W_NONE);

    /* Broadcast: tm2_switch_broadcast never waits and skips a peer whose
     * queue (1,000 messages) is full. 10,000 such queues would hold 2.5 GB,
     * so the broadcaster paces itself as a node's reactor would: it watches
     * the queues of BC_SAMPLE peers spread over the set and waits while the
     * longest holds more than BC_QUEUE messages (and 1 ms after a skip).
     * Deliveries are the driver's count over the window. */
    tm2_peer **ps = calloc(held + 1, sizeof *ps);
    if (!ps)
        DIE("oom");
    size_t n_ps = tm2_switch_peers(hub, ps, held + 1);
    if (n_ps > held + 1)
        n_ps = held + 1;
    tm2_peer *sample[BC_SAMPLE];
    size_t n_sample = 0;
    for (size_t i = 0; i < n_ps && n_sample < BC_SAMPLE; i += n_ps / BC_SAMPLE + 1)
        if (ps[i] != NULL && tm2_peer_status(ps[i], &(tm2_mconn_status){0}) == 0)
            sample[n_sample++] = ps[i];
    uint8_t msg[BC_LEN];
    randombytes_buf(msg, sizeof msg);
    uint64_t sent = 0, skipped = 0, attempts = 0, sent0 = 0, skipped0 = 0, attempts0 = 0;
    peer_count pc0 = {0}, pc1;
    double t_bc = now_s(), tw0 = 0, tw1 = 0, cpu0 = 0, cpu1;
    for (;;) {
        memcpy(msg, &sent, sizeof sent);
        int q = tm2_switch_broadcast(hub, BC_CH, msg, sizeof msg);
        if (q < 0)
            DIE("broadcast: %s", tm2_strerror(q));
        sent++;
        attempts += held;
        if ((size_t)q < held) {
            skipped += held - (size_t)q;
            nap_s(0.001);
        }
        while (longest_queue(sample, n_sample) > BC_QUEUE)
            nap_s(200e-6);
        double t = now_s();
        if (tw0 == 0 && t - t_bc >= BC_WARM_S) {
            pc0 = peer_driver_count(&drv);
            tw0 = t;
            cpu0 = proc_cpu_s();
            sent0 = sent;
            skipped0 = skipped;
            attempts0 = attempts;
            atomic_store(&lp->window, W_BROADCAST);
            atomic_store(&rl->phase, 2);
        } else if (tw0 != 0 && t - tw0 >= BC_SECS) {
            atomic_store(&rl->phase, 0);
            atomic_store(&lp->window, W_NONE);
            tw1 = t;
            cpu1 = proc_cpu_s();
            pc1 = peer_driver_count(&drv);
            break;
        }
    }
    for (size_t i = 0; i < n_ps; i++)
        tm2_peer_unref(ps[i]);
    free(ps);
    double bc_secs = pc1.t - pc0.t;
    double deliveries = (double)(pc1.msgs - pc0.msgs);

    atomic_store(&rl->stop, true);
    uv_thread_join(&probe_tid);
    size_t held_end = inbound(hub) - 1;
    drain(sub, &rejected, &disconnected);
    tm2_peer_unref(rl->peer);
    tm2_switch_stop(probe);
    tm2_switch_stop(hub);
    bench_child_end(&drv);
    tm2_unsubscribe(sub);
    tm2_switch_free(probe);
    tm2_switch_free(hub);

    double n = (double)held;
    printf("scale_peers: %zu (at the end: %zu; disconnects %zu, rejected %zu)\n", held, held_end,
           disconnected, rejected);
    printf("scale_connect_all_s: %.2f s\n", t_all - t0);
    printf("scale_connect_rate: %.0f peers/s\n", PEERS / (t_all - t0));
    printf("scale_connect_first_rate: %.0f peers/s (%d peers, %d in flight)\n",
           (PEERS - STORM) / (t_a - t0), PEERS - STORM, SCALE_INFLIGHT);
    printf("scale_storm_connect_s: %.2f s (%d peers at once)\n", t_all - t_storm, STORM);
    printf("scale_peer_bytes: %.0f bytes\n", (double)(rss1 - rss0) / n);
    printf("scale_peer_heap_bytes: %.0f bytes\n", (double)((ptrdiff_t)heap1 - (ptrdiff_t)heap0) / n);
    printf("scale_peer_bytes_goal_ratio: %.3f\n", (double)(rss1 - rss0) / n / 8192.0);
    printf("scale_broadcast_deliveries_per_s: %.0f deliveries/s\n", deliveries / bc_secs);
    printf("scale_broadcast_originated_per_s: %.0f msgs/s\n", (double)(sent - sent0) / (tw1 - tw0));
    printf("scale_broadcast_skipped: %llu of %llu\n", (unsigned long long)(skipped - skipped0),
           (unsigned long long)(attempts - attempts0));
    printf("scale_broadcast_hub_cpu_cores: %.2f\n", (cpu1 - cpu0) / bc_secs);
    printf("scale_broadcast_driver_cpu_cores: %.2f\n", (pc1.cpu - pc0.cpu) / bc_secs);
    printf("scale_probe_rtt_p50_ms: %.3f ms (idle)\n", rtt_quantile_ms(rl, 1, 0.5));
    printf("scale_probe_rtt_p99_ms: %.3f ms (idle)\n", rtt_quantile_ms(rl, 1, 0.99));
    printf("scale_probe_rtt_broadcast_p50_ms: %.3f ms\n", rtt_quantile_ms(rl, 2, 0.5));
    printf("scale_probe_rtt_broadcast_p99_ms: %.3f ms\n", rtt_quantile_ms(rl, 2, 0.99));
    printf("scale_probe_rtt_samples: %zu idle (%llu not queued), %zu broadcast (%llu not queued)\n",
           atomic_load(&rl->n[1]), (unsigned long long)rl->lost[1], atomic_load(&rl->n[2]),
           (unsigned long long)rl->lost[2]);
    printf("scale_loop_stall_max_ms: %.3f ms\n", lp->max_us[W_CONNECT] / 1000.0);
    printf("scale_loop_stall_p99_ms: %.3f ms (while connecting)\n", loop_quantile_ms(lp, W_CONNECT, 0.99));
    printf("scale_storm_loop_stall_ms: %.3f ms\n", lp->max_us[W_STORM] / 1000.0);
    printf("scale_loop_stall_idle_max_ms: %.3f ms (p99 %.3f)\n", lp->max_us[W_IDLE] / 1000.0,
           loop_quantile_ms(lp, W_IDLE, 0.99));
    printf("scale_loop_stall_broadcast_max_ms: %.3f ms (p99 %.3f)\n",
           lp->max_us[W_BROADCAST] / 1000.0, loop_quantile_ms(lp, W_BROADCAST, 0.99));
    (void)secs_a;
    (void)secs_b;
    free(rl);
    free(lp);
    return 0;
}
