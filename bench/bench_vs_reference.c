/* tm2p2p against the Go reference (tests/interop/cmd/tm2ref, gno v1.2.0) in
 * the same run, over loopback TCP, one connection, rate limits off:
 *
 *   vs_reference_mconn_256B_*   MConnection, one channel, 256 B messages
 *   vs_reference_mconn_64KiB_*  the same with 64 KiB messages
 *   vs_reference_sc_*           the bare secret connection, 1 MiB writes
 *
 * For each, <name>_{reference,tm2p2p}_{msgs_per_s,MB_per_s,sender_cpu,
 * receiver_cpu}: the reference is two tm2ref processes (mconn-bench or
 * sc-bench, one listening as receiver, one dialling as sender), tm2p2p two
 * loop threads of this process on the libuv glue (as bench_mconn). A run
 * moves a fixed count of messages; the rate is the receiver's, from the first
 * message to the last. CPU is seconds per GiB of payload: the whole process
 * for tm2ref (getrusage), the loop thread for tm2p2p.
 *
 *   <name>_ratio       tm2p2p / reference throughput (> 1: tm2p2p faster)
 *   <name>_{sender,receiver}_cpu_ratio
 *                      reference / tm2p2p CPU per GiB (> 1: tm2p2p cheaper)
 *   vs_reference_mixed_*  64 KiB MConnection messages from tm2p2p to the
 *                      reference and back: interop under load
 *
 * MB = 10^6 bytes. Each configuration runs three times, interleaved with the
 * others, and keeps its best.
 *
 * Peers: a hub accepts connections from the peer driver (peer_driver.h), a
 * process of its own whose tm2p2p transports dial both hubs alike. The hub
 * is tm2ref peer-hub (the reference's MultiplexSwitch) or a tm2p2p switch in
 * this process, each with a node's channel set and one reactor that counts:
 *
 *   vs_reference_handshake_*    peers per second: the driver keeps 32 dials
 *                               in flight, each closed as soon as it is
 *                               upgraded (TCP, secret connection, NodeInfo
 *                               exchange), so the hub adds and drops a peer
 *                               per dial; hub CPU per handshake beside it
 *   vs_reference_peer_memory_*  the hub's resident set growth over 1,000 idle
 *                               peers, per peer (heap growth beside it: Go
 *                               heap and stacks in use, or malloc's)
 *   vs_reference_broadcast_*    deliveries per second, counted by the driver,
 *                               of 256 B messages the hub broadcasts to 20
 *                               peers on one channel (1,000 queued messages a
 *                               peer) through its switch's broadcast call
 *
 * Ratios are tm2p2p / reference (memory: below 1, tm2p2p smaller). Memory
 * runs once per hub, first, while this process's heap is small; the others
 * keep the best of two interleaved rounds. Without tm2ref (Go missing, or
 * its build failed) the bench says it skipped and succeeds. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "bench_util.h"
#include "net/engine_uv.h"
#include "net/mconn_stream.h"
#include "net/sc_stream_uv.h"
#include "peer_driver.h"

#ifndef TM2REF_PATH
#error "TM2REF_PATH must be defined by the build"
#endif

extern char **environ;

#define CHANNEL 0x01            /* tm2ref mconn-bench's channel */
#define SENDQ 1000
#define RECV_CAP (4u << 20)
#define SC_WRITE (1024u * 1024u)
#define ROUNDS 3
#define REF_TIMEOUT "60s"       /* tm2ref's own watchdog: a stuck child exits */

typedef enum { IMPL_REF, IMPL_TM2 } impl;

typedef struct result {
    double msgs_per_s, mb_per_s;
    double tx_cpu_gib, rx_cpu_gib;
} result;

/* ---- a tm2p2p endpoint: one loop on its own thread ---------------------------------- */

typedef struct side {
    bool bare, tx;
    uint64_t count;             /* messages (mconn) or writes (bare) */
    size_t size;
    const uint8_t *src;         /* bare: size bytes */
    tm2__msg *msg;              /* mconn: the one message every send queues */
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__mcs_loop ml;
    tm2__mcs c;
    tm2__sc_stream s;
    tm2_node_key key;
    uv_tcp_t listener;
    uv_connect_t creq;
    pthread_t th;
    /* sender */
    uint64_t sent;
    /* receiver */
    uint64_t msgs, bytes;
    double t_first, t_last;
    double cpu;
} side;

static void side_done(side *sd)
{
    if (sd->listener.loop && !uv_is_closing((uv_handle_t *)&sd->listener))
        uv_close((uv_handle_t *)&sd->listener, NULL);
}

static void side_finish(side *sd)
{
    if (sd->bare)
        tm2__sc_stream_close(&sd->s);
    else
        tm2__mcs_close(&sd->c);
    side_done(sd);
}

/* The receiver ends the run once everything arrived; the sender then sees
 * the connection close. */
static void rx_count(side *sd, size_t len)
{
    double t = now_s();
    if (sd->msgs == 0 && sd->bytes == 0)
        sd->t_first = t;
    sd->bytes += len;
    sd->msgs += !sd->bare;
    if (sd->bare ? sd->bytes == sd->count * sd->size : sd->msgs == sd->count) {
        sd->t_last = t;
        sd->msgs = sd->count;
        side_finish(sd);
    }
}

static void tx_fill(side *sd)
{
    while (sd->sent < sd->count) {
        int e = tm2__mcs_try_send(&sd->c, CHANNEL, sd->msg);
        if (e == TM2_EFULL)
            return;
        if (e)
            DIE("try_send: %s", tm2_strerror(e));
        sd->sent++;
    }
}

static int m_receive(tm2__mcs *c, uint8_t ch, const uint8_t *data, size_t len)
{
    (void)ch;
    (void)data;
    rx_count(c->data, len);
    return 0;
}

static void m_room(tm2__mcs *c, uint8_t ch)
{
    (void)ch;
    tx_fill(c->data);
}

static void m_error(tm2__mcs *c, int err, const char *reason)
{
    side *sd = c->data;
    /* The sender sees the receiver leave; anything else is a failure. */
    if (!sd->tx || (err != TM2_ECLOSED && err != TM2_EIO))
        DIE("%s: %s (%s)", sd->tx ? "sender" : "receiver", tm2_strerror(err), reason);
    side_done(sd);
}

static void m_close(tm2__mcs *c)
{
    side *sd = c->data;
    tm2__mcs_loop_close(&sd->ml);
    tm2__uv_engine_close(&sd->ue);
}

static void m_handshake(tm2__sc_stream *s, int err)
{
    tm2__mcs *c = tm2__mcs_of_stream(s);
    side *sd = c->data;
    if (err)
        DIE("handshake: %s", tm2_strerror(err));
    tm2_mconn_config cfg;
    tm2_mconn_config_default(&cfg);
    cfg.send_rate = 0;
    cfg.recv_rate = 0;
    tm2_channel_desc d = {.id = CHANNEL, .priority = 1, .send_queue_capacity = SENDQ,
                          .recv_message_capacity = RECV_CAP};
    int e = tm2__mcs_start(c, &cfg, &d, 1, NULL, 0);
    if (e)
        DIE("start: %s", tm2_strerror(e));
    if (sd->tx)
        tx_fill(sd);
}

static void m_pre_error(tm2__sc_stream *s, int err)
{
    (void)s;
    DIE("stream before start: %s", tm2_strerror(err));
}

static void b_pump(side *sd)
{
    while (sd->sent < sd->count) {
        int e = tm2__sc_stream_write(&sd->s, sd->src, sd->size);
        if (e == TM2_EFULL)
            return;
        if (e) {
            /* The receiver left; a failing write is reported here only. */
            side_finish(sd);
            return;
        }
        sd->sent++;
    }
}

static void b_handshake(tm2__sc_stream *s, int err)
{
    if (err)
        DIE("bare handshake: %s", tm2_strerror(err));
    side *sd = s->data;
    if (sd->tx)
        b_pump(sd);
}

static void b_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    (void)data;
    rx_count(s->data, len);
}

static void b_writable(tm2__sc_stream *s) { b_pump(s->data); }

static void b_error(tm2__sc_stream *s, int err)
{
    side *sd = s->data;
    if (!sd->tx)
        DIE("bare receiver: %s", tm2_strerror(err));
    side_finish(sd);
}

static void b_close(tm2__sc_stream *s)
{
    side *sd = s->data;
    tm2__mcs_loop_close(&sd->ml);
    tm2__uv_engine_close(&sd->ue);
}

static tm2__sc_stream *side_stream(side *sd) { return sd->bare ? &sd->s : tm2__mcs_stream(&sd->c); }

static void on_accept(uv_stream_t *server, int status)
{
    side *sd = server->data;
    if (status || uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(side_stream(sd))) ||
        tm2__sc_stream_start(side_stream(sd), &sd->key, NULL))
        DIE("accept");
    uv_close((uv_handle_t *)&sd->listener, NULL);
}

static void on_connected(uv_connect_t *req, int status)
{
    side *sd = req->data;
    if (status || tm2__sc_stream_start(side_stream(sd), &sd->key, NULL))
        DIE("connect: %s", status ? uv_strerror(status) : "stream start");
}

static void *side_thread(void *arg)
{
    side *sd = arg;
    tm2__mcs_loop_bind_thread(&sd->ml);
    double c0 = thread_cpu_s();
    uv_run(&sd->loop, UV_RUN_DEFAULT);
    sd->cpu = thread_cpu_s() - c0;
    return NULL;
}

/* A receiver listens on 127.0.0.1 (the port goes to *port); a sender dials
 * port. The loop starts with side_go. */
static side *side_new(bool bare, bool tx, uint64_t count, size_t size, const uint8_t *src, int *port)
{
    static const tm2__sc_stream_cbs m_pre = {.on_handshake = m_handshake, .on_error = m_pre_error};
    static const tm2__mcs_cbs m_cbs = {
        .on_receive = m_receive, .on_send_room = m_room, .on_error = m_error, .on_close = m_close};
    static const tm2__sc_stream_cbs b_cbs = {
        .on_handshake = b_handshake, .on_read = b_read, .on_error = b_error,
        .on_writable = b_writable, .on_close = b_close};
    side *sd = calloc(1, sizeof *sd);
    if (!sd)
        DIE("oom");
    sd->bare = bare;
    sd->tx = tx;
    sd->count = count;
    sd->size = size;
    sd->src = src;
    tm2_node_key_generate(&sd->key);
    if (uv_loop_init(&sd->loop) || tm2__uv_engine_init(&sd->ue, &sd->loop) ||
        tm2__mcs_loop_init(&sd->ml, &sd->ue.e))
        DIE("loop setup");
    if (bare) {
        tm2__sc_stream_init(&sd->s, &sd->ml.sc, NULL, &b_cbs);
        sd->s.data = sd;
    } else {
        if (tm2__mcs_init(&sd->c, &sd->ml, NULL, &m_pre, &m_cbs))
            DIE("mcs init");
        sd->c.data = sd;
        if (tx) {
            sd->msg = tm2__msg_alloc(size);
            if (!sd->msg)
                DIE("oom");
            memset(sd->msg->data, 0x5a, size);
        }
    }
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", tx ? *port : 0, &a);
    if (tx) {
        sd->creq.data = sd;
        if (uv_tcp_connect(&sd->creq, tm2__sc_stream_uv_tcp(side_stream(sd)), (const struct sockaddr *)&a,
                           on_connected))
            DIE("connect");
        return sd;
    }
    uv_tcp_init(&sd->loop, &sd->listener);
    sd->listener.data = sd;
    if (uv_tcp_bind(&sd->listener, (const struct sockaddr *)&a, 0) ||
        uv_listen((uv_stream_t *)&sd->listener, 4, on_accept))
        DIE("listen");
    int alen = sizeof a;
    uv_tcp_getsockname(&sd->listener, (struct sockaddr *)&a, &alen);
    *port = ntohs(a.sin_port);
    return sd;
}

static void side_go(side *sd) { pthread_create(&sd->th, NULL, side_thread, sd); }

static void side_join(side *sd)
{
    pthread_join(sd->th, NULL);
    uv_run(&sd->loop, UV_RUN_DEFAULT);   /* the loop helper's handles */
    if (uv_loop_close(&sd->loop))
        DIE("loop close");
    if (!sd->bare)
        tm2__mcs_destroy(&sd->c);
    if (sd->msg)
        tm2__msg_unref(sd->msg);
}

/* ---- a tm2ref process ---------------------------------------------------------------- */

typedef struct ref {
    pid_t pid;
    FILE *out;
} ref;

typedef struct ref_result {
    uint64_t msgs, bytes;
    double secs, cpu;
} ref_result;

static void ref_start(ref *p, bool bare, bool tx, uint64_t count, size_t size, const char *dial)
{
    uint8_t seed[32];
    char seed_hex[65], count_s[24], size_s[24], dial_s[64] = "";
    randombytes_buf(seed, sizeof seed);
    sodium_bin2hex(seed_hex, sizeof seed_hex, seed, sizeof seed);
    snprintf(count_s, sizeof count_s, "%" PRIu64, count);
    snprintf(size_s, sizeof size_s, "%zu", size);
    if (dial)
        snprintf(dial_s, sizeof dial_s, "%s", dial);
    const char *argv[] = {TM2REF_PATH, bare ? "sc-bench" : "mconn-bench", "--seed", seed_hex,
                          "--role", tx ? "sender" : "receiver", "--count", count_s, "--size", size_s,
                          "--timeout", REF_TIMEOUT, dial ? "--dial" : "--listen",
                          dial ? dial_s : "127.0.0.1:0", NULL};
    int fds[2];
    if (pipe(fds))
        DIE("pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    int e = posix_spawn(&p->pid, TM2REF_PATH, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (e)
        DIE("spawn %s: %s", TM2REF_PATH, strerror(e));
    p->out = fdopen(fds[0], "r");
    if (!p->out)
        DIE("fdopen");
}

/* The next line starting with tag, or exit. tm2ref's watchdog bounds the
 * wait: a stuck child exits and closes its stdout. */
static void ref_expect(ref *p, const char *tag, char *line, size_t cap)
{
    size_t n = strlen(tag);
    while (fgets(line, (int)cap, p->out))
        if (strncmp(line, tag, n) == 0 && line[n] == ' ')
            return;
    DIE("tm2ref ended without a %s line", tag);
}

static ref_result ref_finish(ref *p)
{
    char line[256];
    ref_result r;
    ref_expect(p, "RESULT", line, sizeof line);
    if (sscanf(line, "RESULT msgs=%" SCNu64 " bytes=%" SCNu64 " secs=%lf cpu=%lf", &r.msgs, &r.bytes,
               &r.secs, &r.cpu) != 4)
        DIE("bad tm2ref line: %s", line);
    fclose(p->out);
    int st;
    if (waitpid(p->pid, &st, 0) != p->pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        DIE("tm2ref did not exit cleanly");
    return r;
}

/* ---- one run: a receiver listens, a sender dials ------------------------------------------ */

static double per_gib(double cpu, uint64_t bytes) { return cpu / ((double)bytes / (1024.0 * 1024 * 1024)); }

static result run_one(impl tx_impl, impl rx_impl, bool bare, uint64_t count, size_t size, const uint8_t *src)
{
    side *rx = NULL, *tx = NULL;
    ref rref = {0}, tref = {0};
    int port = 0;
    char addr[64];
    if (rx_impl == IMPL_TM2) {
        rx = side_new(bare, false, count, size, src, &port);
        side_go(rx);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    } else {
        char line[256];
        ref_start(&rref, bare, false, count, size, NULL);
        ref_expect(&rref, "LISTEN", line, sizeof line);
        if (sscanf(line, "LISTEN 127.0.0.1:%d", &port) != 1)
            DIE("bad tm2ref line: %s", line);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    }
    if (tx_impl == IMPL_TM2) {
        tx = side_new(bare, true, count, size, src, &port);
        side_go(tx);
    } else {
        ref_start(&tref, bare, true, count, size, addr);
    }

    result res;
    uint64_t bytes = count * size;
    if (rx) {
        side_join(rx);
        if (rx->bytes != bytes)
            DIE("receiver got %" PRIu64 " of %" PRIu64 " bytes", rx->bytes, bytes);
        double secs = rx->t_last - rx->t_first;
        res.msgs_per_s = (double)count / secs;
        res.mb_per_s = (double)bytes / secs / 1e6;
        res.rx_cpu_gib = per_gib(rx->cpu, bytes);
    } else {
        ref_result r = ref_finish(&rref);
        if (r.bytes != bytes || r.msgs != count)
            DIE("tm2ref receiver got %" PRIu64 " of %" PRIu64 " bytes", r.bytes, bytes);
        res.msgs_per_s = (double)count / r.secs;
        res.mb_per_s = (double)bytes / r.secs / 1e6;
        res.rx_cpu_gib = per_gib(r.cpu, bytes);
    }
    if (tx) {
        side_join(tx);
        res.tx_cpu_gib = per_gib(tx->cpu, bytes);
    } else {
        res.tx_cpu_gib = per_gib(ref_finish(&tref).cpu, bytes);
    }
    free(rx);
    free(tx);
    return res;
}

static void keep_best(result *best, result r)
{
    if (r.mb_per_s > best->mb_per_s)
        *best = r;
}

static void print_side(const char *name, const char *who, result r)
{
    printf("vs_reference_%s_%s_msgs_per_s: %.0f\n", name, who, r.msgs_per_s);
    printf("vs_reference_%s_%s_MB_per_s: %.1f\n", name, who, r.mb_per_s);
    printf("vs_reference_%s_%s_sender_cpu: %.3f s/GiB\n", name, who, r.tx_cpu_gib);
    printf("vs_reference_%s_%s_receiver_cpu: %.3f s/GiB\n", name, who, r.rx_cpu_gib);
}

static void print_pair(const char *name, result ref_r, result tm2_r)
{
    print_side(name, "reference", ref_r);
    print_side(name, "tm2p2p", tm2_r);
    printf("vs_reference_%s_ratio: %.3f\n", name, tm2_r.mb_per_s / ref_r.mb_per_s);
    printf("vs_reference_%s_sender_cpu_ratio: %.3f\n", name, ref_r.tx_cpu_gib / tm2_r.tx_cpu_gib);
    printf("vs_reference_%s_receiver_cpu_ratio: %.3f\n", name, ref_r.rx_cpu_gib / tm2_r.rx_cpu_gib);
    fflush(stdout);
}

/* ---- peers: a hub accepting the peer driver's connections ----------------------------- */

#define HS_CONC 32              /* handshakes in flight from the driver */
#define HS_WARM_S 0.5
#define HS_SECS 2.0
#define MEM_PEERS 1000
#define MEM_INFLIGHT 128
#define MEM_SETTLE_S 2.0
#define BC_PEERS 20
#define BC_CH 0x40              /* the node set's blockchain channel: 1,000 queued messages */
#define BC_LEN 256
#define BC_WARM_S 1.0
#define BC_SECS 2.0
#define PEER_ROUNDS 2

static char self_exe[4096];

typedef struct hub {
    impl kind;
    char addr[TM2_NETADDR_STRLEN];
    bench_child ref;            /* IMPL_REF: tm2ref peer-hub */
    tm2_switch *sw;             /* IMPL_TM2: a switch in this process */
    atomic_ullong added;
    pthread_t bc_th;
    atomic_bool bc_stop;
    bool bc_running;
} hub;

typedef struct hub_stats {
    size_t peers, rss, heap;
    unsigned long long added;
    double cpu;
} hub_stats;

static void hub_add_peer(tm2_peer *p, void *user)
{
    (void)p;
    atomic_fetch_add_explicit(&((hub *)user)->added, 1, memory_order_relaxed);
}

/* The tm2p2p hub: the node's channel set like tm2ref peer-hub, rate limits
 * off for broadcast (the reference's are set to their largest). */
static void tm2_hub_config(tm2_switch_config *c, const tm2_reactor *r, uint32_t max_inbound)
{
    bench_switch_config(c);
    c->listen_addr = "tcp://127.0.0.1:0";
    c->moniker = "hub";
    c->max_inbound = max_inbound;
    c->max_pending_inbound = 2 * MEM_INFLIGHT;
    c->handshake_timeout_ms = 20000;
    c->mconn.send_rate = 0;
    c->mconn.recv_rate = 0;
    c->reactors = r;
    c->n_reactors = 1;
}

static void hub_start(hub *h, impl kind, uint32_t max_inbound)
{
    memset(h, 0, sizeof *h);
    h->kind = kind;
    atomic_init(&h->added, 0);
    atomic_init(&h->bc_stop, false);
    if (kind == IMPL_TM2) {
        tm2_reactor r = {.name = "bench", .channels = bench_node_chans,
                         .n_channels = BENCH_N_NODE_CHANS, .user = h, .add_peer = hub_add_peer};
        tm2_switch_config c;
        tm2_hub_config(&c, &r, max_inbound);
        int e = tm2_switch_new(&c, &h->sw);
        tm2_node_key_wipe(&c.key);
        if (e || (e = tm2_switch_start(h->sw)) != 0)
            DIE("hub: %s", tm2_strerror(e));
        tm2_netaddr a;
        if (tm2_switch_listen_addr(h->sw, &a) || tm2_netaddr_format(&a, h->addr, sizeof h->addr) < 0)
            DIE("hub address");
        return;
    }
    uint8_t seed[32];
    char seed_hex[65], max_s[24], line[256];
    randombytes_buf(seed, sizeof seed);
    sodium_bin2hex(seed_hex, sizeof seed_hex, seed, sizeof seed);
    snprintf(max_s, sizeof max_s, "%" PRIu32, max_inbound);
    const char *argv[] = {TM2REF_PATH, "peer-hub", "--seed", seed_hex, "--chain-id", BENCH_NETWORK,
                          "--max-inbound", max_s, "--channel", "64", "--size", "256",
                          "--timeout", "90s", NULL};
    _Static_assert(BC_CH == 64 && BC_LEN == 256, "tm2ref's --channel and --size above");
    bench_child_spawn(&h->ref, argv);
    bench_child_expect(&h->ref, "LISTEN", line, sizeof line, 30000);
    if (sscanf(line, "LISTEN %99s", h->addr) != 1)
        DIE("bad tm2ref line: %s", line);
}

static hub_stats hub_get_stats(hub *h)
{
    hub_stats s = {0};
    if (h->kind == IMPL_TM2) {
        size_t out, dialing;
        struct mallinfo2 mi = mallinfo2();
        tm2_switch_counts(h->sw, &s.peers, &out, &dialing);
        s.added = atomic_load(&h->added);
        s.cpu = proc_cpu_s();
        s.heap = mi.uordblks + mi.hblkhd;
        s.rss = bench_rss_bytes(0);
        return s;
    }
    char line[256];
    bench_child_send(&h->ref, "stats");
    bench_child_expect(&h->ref, "STATS", line, sizeof line, 10000);
    if (sscanf(line, "STATS peers=%zu added=%llu removed=%*u broadcasts=%*u warnings=%*u cpu=%lf heap=%zu",
               &s.peers, &s.added, &s.cpu, &s.heap) != 4)
        DIE("bad tm2ref line: %s", line);
    s.rss = bench_rss_bytes(h->ref.pid);
    return s;
}

/* Broadcasts back to back; a peer with a full queue misses the message, and
 * then the broadcaster waits for every queue to be at most half full. */
static void *tm2_broadcaster(void *arg)
{
    hub *h = arg;
    tm2_peer *ps[BC_PEERS];
    size_t n = tm2_switch_peers(h->sw, ps, BC_PEERS);
    if (n != BC_PEERS)
        DIE("broadcast: %zu peers", n);
    uint8_t msg[BC_LEN];
    memset(msg, 0x5a, sizeof msg);
    while (!atomic_load_explicit(&h->bc_stop, memory_order_relaxed)) {
        int q = tm2_switch_broadcast(h->sw, BC_CH, msg, sizeof msg);
        if (q < 0)
            DIE("broadcast: %s", tm2_strerror(q));
        if ((size_t)q < n)
            bench_wait_queues(ps, n, BC_CH, bench_node_chans[1].send_queue_capacity / 2);
    }
    for (size_t i = 0; i < n; i++)
        tm2_peer_unref(ps[i]);
    return NULL;
}

static void hub_broadcast(hub *h, bool on)
{
    if (h->kind == IMPL_REF) {
        bench_child_send(&h->ref, on ? "broadcast" : "stop");
    } else if (on) {
        if (pthread_create(&h->bc_th, NULL, tm2_broadcaster, h))
            DIE("thread");
        h->bc_running = true;
    } else if (h->bc_running) {
        atomic_store(&h->bc_stop, true);
        pthread_join(h->bc_th, NULL);
        h->bc_running = false;
    }
}

static void hub_end(hub *h)
{
    if (h->kind == IMPL_TM2) {
        hub_broadcast(h, false);
        tm2_switch_stop(h->sw);
        tm2_switch_free(h->sw);
    } else {
        bench_child_end(&h->ref);
    }
}

/* Until the hub holds want peers; exits after secs. */
static hub_stats hub_wait_peers(hub *h, size_t want, double secs)
{
    double deadline = now_s() + secs;
    for (;;) {
        hub_stats s = hub_get_stats(h);
        if (s.peers >= want)
            return s;
        if (now_s() > deadline)
            DIE("hub holds %zu of %zu peers after %.0f s", s.peers, want, secs);
        nap_s(0.05);
    }
}

static void driver_spawn(bench_child *d)
{
    const char *argv[] = {self_exe, "peer-driver", NULL};
    bench_child_spawn(d, argv);
}

static unsigned long long driver_connected(bench_child *d, int timeout_ms, double *secs)
{
    char line[256];
    unsigned long long ok, failed;
    bench_child_expect(d, "CONNECTED", line, sizeof line, timeout_ms);
    if (sscanf(line, "CONNECTED ok=%llu failed=%llu secs=%lf", &ok, &failed, secs) != 3)
        DIE("bad driver line: %s", line);
    return ok;
}

static const char *who(impl k) { return k == IMPL_REF ? "ref" : "tm2p2p"; }

typedef struct hs_result {
    double per_s, hub_cpu_us, hub_added_per_s, driver_cores;
    unsigned long long failed;
} hs_result;

/* Handshakes per second: the driver keeps HS_CONC dials in flight against
 * the hub, each closed once upgraded; counted over HS_SECS after warm-up. */
static hs_result handshake_run(impl kind)
{
    hub h;
    bench_child d;
    hub_start(&h, kind, 4096);
    driver_spawn(&d);
    bench_child_send(&d, "loop %d %s", HS_CONC, h.addr);
    nap_s(HS_WARM_S);
    peer_count c0 = peer_driver_count(&d);
    hub_stats s0 = hub_get_stats(&h);
    nap_s(HS_SECS);
    peer_count c1 = peer_driver_count(&d);
    hub_stats s1 = hub_get_stats(&h);
    bench_child_end(&d);
    hub_end(&h);
    double secs = c1.t - c0.t;
    unsigned long long n = c1.ok - c0.ok;
    if (n == 0)
        DIE("handshake: none completed against the %s hub", who(kind));
    return (hs_result){
        .per_s = (double)n / secs,
        .hub_cpu_us = (s1.cpu - s0.cpu) / (double)n * 1e6,
        .hub_added_per_s = (double)(s1.added - s0.added) / secs,
        .driver_cores = (c1.cpu - c0.cpu) / secs,
        .failed = c1.failed - c0.failed,
    };
}

typedef struct mem_result {
    double bytes_per_peer, heap_per_peer, connect_s;
    size_t peers;
} mem_result;

/* Memory per idle peer: the hub's resident set growth from before the
 * first peer to MEM_SETTLE_S after the last, over the peers it holds. */
static mem_result memory_run(impl kind)
{
    hub h;
    bench_child d;
    mem_result r;
    hub_start(&h, kind, MEM_PEERS + 100);
    driver_spawn(&d);
    /* Freed memory of earlier runs in this process would hide the peers'
     * pages; hand it back first. */
    if (kind == IMPL_TM2)
        malloc_trim(0);
    hub_stats s0 = hub_get_stats(&h);
    bench_child_send(&d, "idle %d %d %s", MEM_PEERS, MEM_INFLIGHT, h.addr);
    unsigned long long ok = driver_connected(&d, 90000, &r.connect_s);
    if (ok < MEM_PEERS * 9 / 10)
        DIE("memory: only %llu of %d peers connected to the %s hub", ok, MEM_PEERS, who(kind));
    hub_wait_peers(&h, ok, 20);
    nap_s(MEM_SETTLE_S);
    hub_stats s1 = hub_get_stats(&h);
    bench_child_end(&d);
    hub_end(&h);
    r.peers = s1.peers;
    r.bytes_per_peer = ((double)s1.rss - (double)s0.rss) / (double)s1.peers;
    r.heap_per_peer = ((double)s1.heap - (double)s0.heap) / (double)s1.peers;
    return r;
}

typedef struct bc_result {
    double per_s, hub_cores, driver_cores;
} bc_result;

/* Broadcast: the hub sends 256 B messages to BC_PEERS driver peers as fast
 * as they take them; deliveries counted by the driver over BC_SECS. */
static bc_result broadcast_run(impl kind)
{
    hub h;
    bench_child d;
    double secs;
    hub_start(&h, kind, BC_PEERS + 8);
    driver_spawn(&d);
    bench_child_send(&d, "recv %d %s", BC_PEERS, h.addr);
    if (driver_connected(&d, 30000, &secs) != BC_PEERS)
        DIE("broadcast: not every peer connected to the %s hub", who(kind));
    hub_wait_peers(&h, BC_PEERS, 10);
    hub_broadcast(&h, true);
    nap_s(BC_WARM_S);
    peer_count c0 = peer_driver_count(&d);
    hub_stats s0 = hub_get_stats(&h);
    nap_s(BC_SECS);
    peer_count c1 = peer_driver_count(&d);
    hub_stats s1 = hub_get_stats(&h);
    hub_broadcast(&h, false);
    bench_child_end(&d);
    hub_end(&h);
    secs = c1.t - c0.t;
    return (bc_result){.per_s = (double)(c1.msgs - c0.msgs) / secs,
                       .hub_cores = (s1.cpu - s0.cpu) / secs,
                       .driver_cores = (c1.cpu - c0.cpu) / secs};
}

static void peer_benches(void)
{
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0 || (size_t)n >= sizeof self_exe - 1)
        DIE("readlink /proc/self/exe");
    self_exe[n] = '\0';
    bench_raise_nofile(MEM_PEERS + 256);

    /* First, while this process's heap is small. */
    mem_result mem[2];
    mem[IMPL_TM2] = memory_run(IMPL_TM2);
    mem[IMPL_REF] = memory_run(IMPL_REF);

    hs_result hs[2];
    bc_result bc[2];
    memset(hs, 0, sizeof hs);
    memset(bc, 0, sizeof bc);
    for (int round = 0; round < PEER_ROUNDS; round++)
        for (impl k = IMPL_REF; k <= IMPL_TM2; k++) {
            hs_result r = handshake_run(k);
            if (r.per_s > hs[k].per_s)
                hs[k] = r;
        }
    for (int round = 0; round < PEER_ROUNDS; round++)
        for (impl k = IMPL_REF; k <= IMPL_TM2; k++) {
            bc_result r = broadcast_run(k);
            if (r.per_s > bc[k].per_s)
                bc[k] = r;
        }

    for (impl k = IMPL_REF; k <= IMPL_TM2; k++) {
        printf("vs_reference_handshake_%s: %.0f /s\n", who(k), hs[k].per_s);
        printf("vs_reference_handshake_%s_hub_cpu: %.0f us per handshake\n", who(k), hs[k].hub_cpu_us);
        printf("vs_reference_handshake_%s_hub_peers_added: %.0f /s\n", who(k), hs[k].hub_added_per_s);
        printf("vs_reference_handshake_%s_driver_cpu: %.2f cores\n", who(k), hs[k].driver_cores);
        printf("vs_reference_handshake_%s_failed: %llu\n", who(k), hs[k].failed);
    }
    printf("vs_reference_handshake_ratio: %.3f\n", hs[IMPL_TM2].per_s / hs[IMPL_REF].per_s);
    printf("vs_reference_handshake_hub_cpu_ratio: %.3f\n",
           hs[IMPL_REF].hub_cpu_us / hs[IMPL_TM2].hub_cpu_us);
    for (impl k = IMPL_REF; k <= IMPL_TM2; k++) {
        printf("vs_reference_peer_memory_%s: %.0f bytes per peer\n", who(k), mem[k].bytes_per_peer);
        printf("vs_reference_peer_memory_%s_heap: %.0f bytes per peer\n", who(k), mem[k].heap_per_peer);
        printf("vs_reference_peer_memory_%s_peers: %zu\n", who(k), mem[k].peers);
        printf("vs_reference_peer_memory_%s_connect: %.2f s\n", who(k), mem[k].connect_s);
    }
    printf("vs_reference_peer_memory_ratio: %.3f\n",
           mem[IMPL_TM2].bytes_per_peer / mem[IMPL_REF].bytes_per_peer);
    for (impl k = IMPL_REF; k <= IMPL_TM2; k++) {
        printf("vs_reference_broadcast_%s: %.0f deliveries/s\n", who(k), bc[k].per_s);
        printf("vs_reference_broadcast_%s_hub_cpu: %.2f cores\n", who(k), bc[k].hub_cores);
        printf("vs_reference_broadcast_%s_driver_cpu: %.2f cores\n", who(k), bc[k].driver_cores);
    }
    printf("vs_reference_broadcast_ratio: %.3f\n", bc[IMPL_TM2].per_s / bc[IMPL_REF].per_s);
    fflush(stdout);
}

/* One configuration: the message size and how many each implementation
 * moves per run (about a second each; the reference is slower). */
typedef struct conf {
    const char *name;
    bool bare;
    size_t size;
    uint64_t ref_count, tm2_count;
    result ref, tm2;
} conf;

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "peer-driver") == 0)
        peer_driver_main(0, 1);
    if (access(TM2REF_PATH, X_OK) != 0) {
        printf("vs_reference: skipped (Go reference harness not built)\n");
        return 0;
    }
    if (sodium_init() < 0)
        DIE("sodium_init");
    /* A sender still writing when its receiver leaves must see EPIPE. */
    signal(SIGPIPE, SIG_IGN);
    peer_benches();
    uint8_t *src = malloc(SC_WRITE);
    if (!src)
        DIE("oom");
    randombytes_buf(src, SC_WRITE);

    conf confs[] = {
        {.name = "mconn_256B", .size = 256, .ref_count = 300000, .tm2_count = 1500000},
        {.name = "mconn_64KiB", .size = 64 * 1024, .ref_count = 3000, .tm2_count = 8000},
        {.name = "sc", .bare = true, .size = SC_WRITE, .ref_count = 192, .tm2_count = 768},
    };
    enum { NCONF = sizeof confs / sizeof confs[0] };
    result to_ref = {0}, from_ref = {0};
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NCONF; i++) {
            conf *c = &confs[i];
            keep_best(&c->ref, run_one(IMPL_REF, IMPL_REF, c->bare, c->ref_count, c->size, src));
            keep_best(&c->tm2, run_one(IMPL_TM2, IMPL_TM2, c->bare, c->tm2_count, c->size, src));
        }
        keep_best(&to_ref, run_one(IMPL_TM2, IMPL_REF, false, confs[1].ref_count, confs[1].size, src));
        keep_best(&from_ref, run_one(IMPL_REF, IMPL_TM2, false, confs[1].ref_count, confs[1].size, src));
    }
    for (int i = 0; i < NCONF; i++)
        print_pair(confs[i].name, confs[i].ref, confs[i].tm2);
    print_side("mixed_mconn_64KiB", "tm2p2p_to_reference", to_ref);
    print_side("mixed_mconn_64KiB", "reference_to_tm2p2p", from_ref);
    free(src);
    return 0;
}
