/* The switch under load and at rest, over loopback TCP:
 *
 *   switch_broadcast_*       one hub switch broadcasts 256 B messages to 50
 *                            receiver switches (each its own network thread,
 *                            all in this process) from a thread of its own;
 *                            deliveries counted in the receivers' reactors
 *                            over a window after warm-up
 *   switch_1peer_*           the same harness with one receiver: the switch's
 *                            single-connection rate, the reference for the
 *                            ratio
 *   switch_idle_peer_*       memory of a connected, idle peer in a hub: its
 *                            resident set growth divided by 2,000 inbound
 *                            peers coming from a second process
 *
 * Broadcast: the hub's channel queues hold 8,192 messages, so queue size
 * does not throttle; tm2_switch_broadcast never waits and skips a peer whose
 * queue is full, so when it queues fewer than all peers the broadcaster
 * counts the misses as drops and backs off until every queue is at most half
 * full again. On 2 cores, 52 network threads and the broadcaster share the
 * CPU, so deliveries per second cannot reach 50 times the one-connection
 * rate; the comparable figure is deliveries per CPU second (process CPU time
 * over the window, both ends included), and the ratio compares that with
 * the one-receiver run.
 *
 * Idle peers: the child process is the peer driver (peer_driver.h): one
 * libuv loop with 2,000 transports, each with its own node key, each
 * dialling the hub once and then running an MConnection with the node's
 * channel set that stays idle (pings every 60 s, so none in the window).
 * That needs no switch per peer in the child, whose memory is not measured. The hub (this process) reads its own RSS with the
 * listener up, before any peer, and again once all 2,000 are connected and
 * one further second has passed (disconnects in it are counted); heap growth
 * (mallinfo2, every arena) is printed beside it to separate allocations from
 * page and allocator overhead. Kernel socket buffers are not in either. */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "net/transport.h"
#include "peer_driver.h"
#include "switch/switch_internal.h"
#include "tm2p2p/switch.h"

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double proc_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static tm2_switch *switch_new(const tm2_switch_config *c)
{
    tm2_switch *sw;
    int r = tm2_switch_new(c, &sw);
    if (r)
        DIE("switch_new: %s", tm2_strerror(r));
    if ((r = tm2_switch_start(sw)) != 0)
        DIE("switch_start: %s", tm2_strerror(r));
    return sw;
}

/* ---- broadcast ----------------------------------------------------------------------- */

#define BC_CH 0x40
#define BC_LEN 256
#define BC_PEERS 50
#define BC_SENDQ 8192
#define BC_WARM_S 1.0
#define BC_SECS 2.5
#define BC_ROUNDS 3

typedef struct counter {
    _Alignas(64) atomic_uint_fast64_t n;
} counter;

static void rx_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)p;
    (void)ch;
    (void)msg;
    (void)len;
    counter *c = user;
    atomic_fetch_add_explicit(&c->n, 1, memory_order_relaxed);
}

typedef struct bc_result {
    double deliveries_per_s, originated_per_s, deliveries_per_cpu_s, cores;
    uint64_t drops, attempts;
} bc_result;

static uint64_t delivered(counter *cs, int n)
{
    uint64_t s = 0;
    for (int i = 0; i < n; i++)
        s += atomic_load_explicit(&cs[i].n, memory_order_relaxed);
    return s;
}

static void wait_inbound(tm2_switch *sw, tm2_subscription *sub, size_t want, double secs)
{
    double deadline = now_s() + secs;
    for (;;) {
        size_t in, out, dialing;
        tm2_switch_counts(sw, &in, &out, &dialing);
        if (in >= want)
            return;
        double left = deadline - now_s();
        if (left <= 0)
            DIE("only %zu of %zu peers connected in %.0f s", in, want, secs);
        tm2_event ev;
        int r = tm2_subscription_next(sub, &ev, (int)(left * 1000) + 1);
        if (r == 0 && ev.type == TM2_EVENT_PEER_REJECTED)
            DIE("peer rejected: %s", ev.reason_text);
    }
}

static bc_result broadcast_run(int npeers)
{
    tm2_mconn_config mc;
    tm2_mconn_config_default(&mc);
    mc.send_rate = 0;
    mc.recv_rate = 0;

    counter *cs = aligned_alloc(_Alignof(counter), (size_t)npeers * sizeof *cs);
    if (!cs)
        DIE("oom");
    for (int i = 0; i < npeers; i++)
        atomic_init(&cs[i].n, 0);
    tm2_channel_desc hub_ch = {.id = BC_CH, .priority = 1, .send_queue_capacity = BC_SENDQ,
                               .recv_message_capacity = 4096};
    tm2_reactor hub_r = {.name = "bench", .channels = &hub_ch, .n_channels = 1};
    tm2_switch_config c;
    bench_switch_config(&c);
    c.listen_addr = "tcp://127.0.0.1:0";
    c.moniker = "hub";
    c.max_inbound = (uint32_t)npeers + 8;
    c.mconn = mc;
    c.reactors = &hub_r;
    c.n_reactors = 1;
    tm2_switch *hub = switch_new(&c);
    tm2_subscription *sub;
    if (tm2_switch_subscribe(hub, TM2_EVENT_ALL, NULL, 256, &sub))
        DIE("subscribe");
    tm2_netaddr hub_addr;
    if (tm2_switch_listen_addr(hub, &hub_addr))
        DIE("listen addr");

    tm2_switch **rx = calloc((size_t)npeers, sizeof *rx);
    tm2_reactor *rr = calloc((size_t)npeers, sizeof *rr);
    if (!rx || !rr)
        DIE("oom");
    tm2_channel_desc rx_ch = {.id = BC_CH, .priority = 1, .send_queue_capacity = 1,
                              .recv_message_capacity = 4096};
    for (int i = 0; i < npeers; i++) {
        rr[i] = (tm2_reactor){.name = "bench", .channels = &rx_ch, .n_channels = 1,
                              .user = &cs[i], .receive = rx_receive};
        bench_switch_config(&c);
        c.moniker = "receiver";
        c.mconn = mc;
        c.reactors = &rr[i];
        c.n_reactors = 1;
        rx[i] = switch_new(&c);
        if (tm2_switch_dial_peers(rx[i], &hub_addr, 1) != 1)
            DIE("dial");
    }
    wait_inbound(hub, sub, (size_t)npeers, 30);
    tm2_peer **ps = calloc((size_t)npeers, sizeof *ps);
    if (!ps || tm2_switch_peers(hub, ps, (size_t)npeers) != (size_t)npeers)
        DIE("peers");

    uint8_t msg[BC_LEN];
    randombytes_buf(msg, sizeof msg);
    uint64_t sent = 0, drops = 0, attempts = 0;
    uint64_t sent0 = 0, drops0 = 0, attempts0 = 0, got0 = 0;
    double t_start = now_s(), t0 = 0, cpu0 = 0, t1, cpu1;
    for (;;) {
        memcpy(msg, &sent, sizeof sent);
        int q = tm2_switch_broadcast(hub, BC_CH, msg, sizeof msg);
        if (q < 0)
            DIE("broadcast: %s", tm2_strerror(q));
        sent++;
        attempts += (uint64_t)npeers;
        if (q < npeers) {
            drops += (uint64_t)(npeers - q);
            bench_wait_queues(ps, (size_t)npeers, BC_CH, BC_SENDQ / 2);
        }
        if ((sent & 15) != 0)
            continue;
        double t = now_s();
        if (t0 == 0 && t - t_start >= BC_WARM_S) {
            t0 = t;
            cpu0 = proc_cpu_s();
            got0 = delivered(cs, npeers);
            sent0 = sent;
            drops0 = drops;
            attempts0 = attempts;
        } else if (t0 != 0 && t - t0 >= BC_SECS) {
            t1 = t;
            cpu1 = proc_cpu_s();
            break;
        }
    }
    uint64_t got = delivered(cs, npeers) - got0;
    double secs = t1 - t0, cpu = cpu1 - cpu0;
    bc_result res = {
        .deliveries_per_s = (double)got / secs,
        .originated_per_s = (double)(sent - sent0) / secs,
        .deliveries_per_cpu_s = (double)got / cpu,
        .cores = cpu / secs,
        .drops = drops - drops0,
        .attempts = attempts - attempts0,
    };

    for (int i = 0; i < npeers; i++)
        tm2_peer_unref(ps[i]);
    tm2_switch_stop(hub);
    for (int i = 0; i < npeers; i++)
        tm2_switch_stop(rx[i]);
    tm2_unsubscribe(sub);
    tm2_switch_free(hub);
    for (int i = 0; i < npeers; i++)
        tm2_switch_free(rx[i]);
    free(ps);
    free(rx);
    free(rr);
    free(cs);
    return res;
}

/* Best rate with its round's other figures; best CPU efficiency on its own
 * (other work on the machine lowers the rate more than the efficiency). */
static void keep_best(bc_result *best, bc_result r)
{
    double per_cpu = best->deliveries_per_cpu_s;
    if (r.deliveries_per_s > best->deliveries_per_s)
        *best = r;
    if (per_cpu > r.deliveries_per_cpu_s)
        best->deliveries_per_cpu_s = per_cpu;
    else
        best->deliveries_per_cpu_s = r.deliveries_per_cpu_s;
}

/* ---- idle peers ---------------------------------------------------------------------- */

#define IDLE_PEERS 2000
#define IDLE_INFLIGHT 128      /* dials in flight from the child, under the hub's pending cap */
#define IDLE_CONNECT_S 60.0
#define IDLE_SETTLE_S 1.0

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void idle_run(pid_t child, int ctl_fd)
{
    tm2_reactor r = {.name = "idle", .channels = bench_node_chans, .n_channels = BENCH_N_NODE_CHANS};
    tm2_switch_config c;
    bench_switch_config(&c);
    c.listen_addr = "tcp://127.0.0.1:0";
    c.moniker = "hub";
    c.max_inbound = IDLE_PEERS + 100;
    c.max_pending_inbound = 2 * IDLE_INFLIGHT;
    c.handshake_timeout_ms = 20000;
    c.reactors = &r;
    c.n_reactors = 1;
    tm2_switch *hub = switch_new(&c);
    /* A small ring, drained as events come: its pages are touched before
     * the first reading. */
    tm2_subscription *sub;
    if (tm2_switch_subscribe(hub, TM2_EVENT_ALL, NULL, 256, &sub))
        DIE("subscribe");
    tm2_netaddr hub_addr;
    if (tm2_switch_listen_addr(hub, &hub_addr))
        DIE("listen addr");

    char addr[TM2_NETADDR_STRLEN], cmd[TM2_NETADDR_STRLEN + 32];
    if (tm2_netaddr_format(&hub_addr, addr, sizeof addr) < 0)
        DIE("format");
    int n_cmd = snprintf(cmd, sizeof cmd, "idle %d %d %s\n", IDLE_PEERS, IDLE_INFLIGHT, addr);

    size_t rss0 = bench_rss_bytes(0), heap0 = heap_in_use();
    double t0 = now_s();
    if (write(ctl_fd, cmd, (size_t)n_cmd) != n_cmd)
        DIE("control socket");

    size_t in = 0, out, dialing, rejected = 0, disconnected = 0;
    double t_conn = 0, settle_end = 0;
    for (;;) {
        tm2_switch_counts(hub, &in, &out, &dialing);
        double t = now_s();
        if (t_conn == 0 && in >= IDLE_PEERS) {
            t_conn = t;
            settle_end = t + IDLE_SETTLE_S;
        }
        if (t_conn != 0 && t >= settle_end)
            break;
        double until = t_conn != 0 ? settle_end : t0 + IDLE_CONNECT_S;
        if (t >= until)
            break;
        tm2_event ev;
        if (tm2_subscription_next(sub, &ev, (int)((until - t) * 1000) + 1) == 0) {
            if (ev.type == TM2_EVENT_PEER_REJECTED && rejected++ < 5)
                fprintf(stderr, "idle hub: rejected: %s\n", ev.reason_text);
            if (ev.type == TM2_EVENT_PEER_DISCONNECTED)
                disconnected++;
        }
    }
    size_t rss1 = bench_rss_bytes(0), heap1 = heap_in_use();
    tm2_switch_counts(hub, &in, &out, &dialing);

    close(ctl_fd);
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "idle client process did not exit cleanly\n");
    tm2_switch_stop(hub);
    tm2_unsubscribe(sub);
    tm2_switch_free(hub);

    if (in == 0)
        DIE("no idle peer connected");
    double n = (double)in;
    printf("switch_idle_peers: %zu\n", in);
    if (t_conn != 0)
        printf("switch_idle_connect_all_s: %.2f s\n", t_conn - t0);
    else
        printf("switch_idle_connect_all_s: timeout after %.0f s\n", IDLE_CONNECT_S);
    printf("switch_idle_peer_disconnects: %zu\n", disconnected);
    printf("switch_idle_peer_bytes: %.0f\n", (double)(rss1 - rss0) / n);
    printf("switch_idle_peer_heap_bytes: %.0f\n",
           (double)((ptrdiff_t)heap1 - (ptrdiff_t)heap0) / n);
    printf("switch_idle_peer_structs_bytes: %zu\n",
           sizeof(tm2_peer) + sizeof(tm2__transport_conn));
    printf("switch_idle_peer_goal_ratio: %.3f\n", (double)(rss1 - rss0) / n / (32.0 * 1024));
    fflush(stdout);
}

/* ---- main ---------------------------------------------------------------------------- */

int main(void)
{
    if (sodium_init() < 0)
        DIE("sodium_init");
    signal(SIGPIPE, SIG_IGN);
    /* 2,000 sockets a side, plus the broadcast runs. */
    bench_raise_nofile(IDLE_PEERS + 200);

    /* The dialling process is forked first, while this one has no threads
     * and its heap is still small; one socket carries its commands. */
    bench_child drv = peer_driver_fork();
    idle_run(drv.pid, drv.in);

    bc_result one = {0}, many = {0};
    for (int round = 0; round < BC_ROUNDS; round++) {
        keep_best(&one, broadcast_run(1));
        keep_best(&many, broadcast_run(BC_PEERS));
    }
    printf("switch_broadcast_deliveries_per_s: %.0f\n", many.deliveries_per_s);
    printf("switch_broadcast_originated_per_s: %.0f\n", many.originated_per_s);
    printf("switch_broadcast_deliveries_per_cpu_s: %.0f\n", many.deliveries_per_cpu_s);
    printf("switch_broadcast_cpu_cores: %.2f\n", many.cores);
    printf("switch_broadcast_drops: %" PRIu64 " of %" PRIu64 "\n", many.drops, many.attempts);
    printf("switch_1peer_deliveries_per_s: %.0f\n", one.deliveries_per_s);
    printf("switch_1peer_deliveries_per_cpu_s: %.0f\n", one.deliveries_per_cpu_s);
    printf("switch_1peer_drops: %" PRIu64 " of %" PRIu64 "\n", one.drops, one.attempts);
    printf("switch_broadcast_per_cpu_ratio: %.3f\n",
           many.deliveries_per_cpu_s / one.deliveries_per_cpu_s);
    return 0;
}
