/* MConnection throughput over loopback TCP, glue and core together, against
 * the bare secret connection measured in the same run:
 *
 *   mconn_<size>[_4ch]_*     one connection, rate limits off, sender and
 *                            receiver on their own loop threads; the sender
 *                            keeps every channel's queue full from
 *                            on_send_room (one shared message buffer, as a
 *                            broadcast does); messages per second, payload
 *                            MB/s, CPU seconds per GiB of payload per side
 *   sc_loopback_tcp          the same two threads moving 1 MiB writes over a
 *                            bare secret connection (what bench_secret_conn
 *                            measures), payload MB/s
 *   mconn_64KiB[_4ch]_ratio  64 KiB messages against that
 *   mconn_idle_conn_bytes    heap plus struct per idle started connection
 *
 * MB = 10^6 bytes. The 64 KiB ratio interleaves rounds with the bare
 * connection and keeps the best of each, so a busy machine skews both
 * alike. */
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <uv.h>

#include "bench_util.h"
#include "net/engine_uv.h"
#include "net/mconn_stream.h"
#include "net/sc_stream_uv.h"

#define ROUND_SEC 1.2
#define SC_WRITE (1024u * 1024u)
#define MAX_CH 4
#define SENDQ 100

/* ---- one side of a run: a loop on its own thread -------------------------------- */

typedef struct run run;

typedef struct side {
    run *r;
    bool tx;
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__mcs_loop ml;
    tm2__mcs c;                 /* mconn runs */
    tm2__sc_stream s;           /* bare runs */
    tm2_node_key key;
    uv_tcp_t listener;
    uv_connect_t creq;
    double cpu;
} side;

struct run {
    bool bare;
    bool xthread;               /* send from a thread of its own, not the loop */
    pthread_t sender;
    bool sender_started;
    double sender_cpu;
    size_t msg_size;
    int nch;
    double secs;
    tm2__msg *msg;
    const uint8_t *src;         /* SC_WRITE bytes */
    size_t write_len;           /* bare: bytes per stream write */
    side rx, tx;
    /* receiver */
    uint64_t msgs, bytes;
    double t_first, t_end;
    int err;
};

static const uint8_t ch_ids[MAX_CH] = {0x20, 0x21, 0x22, 0x23};

static void side_done(side *sd)
{
    if (sd->listener.loop && !uv_is_closing((uv_handle_t *)&sd->listener))
        uv_close((uv_handle_t *)&sd->listener, NULL);
}

/* The receiver decides when a run ends: after secs of traffic. */
static void rx_count(run *r, size_t len)
{
    if (r->msgs == 0)
        r->t_first = now_s();
    r->msgs++;
    r->bytes += len;
    if ((r->msgs & 255) == 0 && r->t_end == 0) {
        double t = now_s();
        if (t - r->t_first >= r->secs) {
            r->t_end = t;
            if (r->bare)
                tm2__sc_stream_close(&r->rx.s);
            else
                tm2__mcs_close(&r->rx.c);
            side_done(&r->rx);
        }
    }
}

/* ---- mconn --------------------------------------------------------------------- */

static void tx_fill(side *sd, uint8_t ch)
{
    for (;;) {
        int e = tm2__mcs_try_send(&sd->c, ch, sd->r->msg);
        if (e == TM2_EFULL)
            return;
        if (e)
            DIE("try_send: %s", tm2_strerror(e));
    }
}

static int m_receive(tm2__mcs *c, uint8_t ch, const uint8_t *data, size_t len)
{
    (void)ch;
    (void)data;
    side *sd = c->data;
    rx_count(sd->r, len);
    return 0;
}

static void m_room(tm2__mcs *c, uint8_t ch)
{
    side *sd = c->data;
    if (!sd->r->xthread)
        tx_fill(sd, ch);
}

/* A sender thread: waiting sends round-robin over the channels until the
 * connection closes. */
static void *xsender(void *arg)
{
    side *sd = arg;
    run *r = sd->r;
    double c0 = thread_cpu_s();
    for (unsigned i = 0;; i++) {
        int e = tm2__mcs_send(&sd->c, ch_ids[i % (unsigned)r->nch], r->msg, 10000);
        if (e == TM2_ECLOSED)
            break;
        if (e)
            DIE("send: %s", tm2_strerror(e));
    }
    r->sender_cpu = thread_cpu_s() - c0;
    return NULL;
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
    run *r = sd->r;
    if (err)
        DIE("handshake: %s", tm2_strerror(err));
    tm2_mconn_config cfg;
    tm2_mconn_config_default(&cfg);
    cfg.send_rate = 0;
    cfg.recv_rate = 0;
    tm2_channel_desc d[MAX_CH];
    for (int i = 0; i < r->nch; i++)
        d[i] = (tm2_channel_desc){.id = ch_ids[i], .priority = 1, .send_queue_capacity = SENDQ,
                                  .recv_message_capacity = 1u << 20};
    int e = tm2__mcs_start(c, &cfg, d, (size_t)r->nch, NULL, 0);
    if (e)
        DIE("start: %s", tm2_strerror(e));
    if (!sd->tx)
        return;
    if (r->xthread) {
        r->sender_started = true;
        pthread_create(&r->sender, NULL, xsender, sd);
        return;
    }
    for (int i = 0; i < r->nch; i++)
        tx_fill(sd, ch_ids[i]);
}

static void m_pre_error(tm2__sc_stream *s, int err)
{
    DIE("stream before start: %s", tm2_strerror(err));
    (void)s;
}

/* ---- bare secret connection ----------------------------------------------------------- */

static void b_pump(side *sd)
{
    for (;;) {
        int e = tm2__sc_stream_write(&sd->s, sd->r->src, sd->r->write_len);
        if (e == TM2_EFULL)
            return;
        if (e) {
            /* The receiver left; a failing write is reported here only. */
            tm2__sc_stream_close(&sd->s);
            side_done(sd);
            return;
        }
    }
}

static void b_handshake(tm2__sc_stream *s, int err)
{
    side *sd = s->data;
    if (err)
        DIE("bare handshake: %s", tm2_strerror(err));
    if (sd->tx)
        b_pump(sd);
}

static void b_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    (void)data;
    side *sd = s->data;
    rx_count(sd->r, len);
}

static void b_writable(tm2__sc_stream *s) { b_pump(s->data); }

static void b_error(tm2__sc_stream *s, int err)
{
    side *sd = s->data;
    if (!sd->tx)
        DIE("bare receiver: %s", tm2_strerror(err));
    tm2__sc_stream_close(s);
    side_done(sd);
}

static void b_close(tm2__sc_stream *s)
{
    side *sd = s->data;
    tm2__mcs_loop_close(&sd->ml);
    tm2__uv_engine_close(&sd->ue);
}

/* ---- running one configuration ---------------------------------------------------------- */

static tm2__sc_stream *side_stream(side *sd) { return sd->r->bare ? &sd->s : tm2__mcs_stream(&sd->c); }

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
        DIE("connect");
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

static void side_init(side *sd, run *r, bool tx)
{
    static const tm2__sc_stream_cbs m_pre = {.on_handshake = m_handshake, .on_error = m_pre_error};
    static const tm2__mcs_cbs m_cbs = {
        .on_receive = m_receive, .on_send_room = m_room, .on_error = m_error, .on_close = m_close};
    static const tm2__sc_stream_cbs b_cbs = {
        .on_handshake = b_handshake, .on_read = b_read, .on_error = b_error,
        .on_writable = b_writable, .on_close = b_close};
    memset(sd, 0, sizeof *sd);
    sd->r = r;
    sd->tx = tx;
    tm2_node_key_generate(&sd->key);
    if (uv_loop_init(&sd->loop) || tm2__uv_engine_init(&sd->ue, &sd->loop) ||
        tm2__mcs_loop_init(&sd->ml, &sd->ue.e))
        DIE("loop setup");
    if (r->bare) {
        tm2__sc_stream_init(&sd->s, &sd->ml.sc, NULL, &b_cbs);
        sd->s.data = sd;
    } else {
        if (tm2__mcs_init(&sd->c, &sd->ml, NULL, &m_pre, &m_cbs))
            DIE("mcs init");
        sd->c.data = sd;
    }
}

typedef struct result {
    double msgs_per_s, mb_per_s;
    double tx_cpu_gib, rx_cpu_gib;
} result;

/* bare: msg_size is the stream write size. */
static result run_one(bool bare, size_t msg_size, int nch, const uint8_t *src, bool xthread)
{
    run *r = calloc(1, sizeof *r);
    if (!r)
        DIE("oom");
    r->bare = bare;
    r->xthread = xthread;
    r->msg_size = msg_size;
    r->nch = nch;
    r->secs = ROUND_SEC;
    r->src = src;
    r->write_len = msg_size;
    if (!bare) {
        r->msg = tm2__msg_alloc(msg_size);
        if (!r->msg)
            DIE("oom");
        memcpy(r->msg->data, src, msg_size);
    }
    side_init(&r->rx, r, false);
    side_init(&r->tx, r, true);

    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&r->rx.loop, &r->rx.listener);
    r->rx.listener.data = &r->rx;
    if (uv_tcp_bind(&r->rx.listener, (const struct sockaddr *)&a, 0) ||
        uv_listen((uv_stream_t *)&r->rx.listener, 4, on_accept))
        DIE("listen");
    int alen = sizeof a;
    uv_tcp_getsockname(&r->rx.listener, (struct sockaddr *)&a, &alen);
    r->tx.creq.data = &r->tx;
    if (uv_tcp_connect(&r->tx.creq, tm2__sc_stream_uv_tcp(side_stream(&r->tx)),
                       (const struct sockaddr *)&a, on_connected))
        DIE("connect");

    pthread_t th[2];
    side *sides[2] = {&r->rx, &r->tx};
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, side_thread, sides[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    if (r->sender_started)
        pthread_join(r->sender, NULL);
    for (int i = 0; i < 2; i++) {
        uv_run(&sides[i]->loop, UV_RUN_DEFAULT);   /* the loop helper's handles */
        if (uv_loop_close(&sides[i]->loop)) {
            uv_print_all_handles(&sides[i]->loop, stderr);
            DIE("loop close (side %d)", i);
        }
        if (!bare)
            tm2__mcs_destroy(&sides[i]->c);
    }
    if (r->t_end == 0)
        DIE("run ended early after %" PRIu64 " messages", r->msgs);
    tm2__msg_unref(r->msg);

    double secs = r->t_end - r->t_first;
    double gib = (double)r->bytes / (1024.0 * 1024 * 1024);
    result res = {
        .msgs_per_s = (double)r->msgs / secs,
        .mb_per_s = (double)r->bytes / secs / 1e6,
        .tx_cpu_gib = (r->tx.cpu + r->sender_cpu) / gib,
        .rx_cpu_gib = r->rx.cpu / gib,
    };
    free(r);
    return res;
}

static void keep_best(result *best, result r)
{
    if (r.mb_per_s > best->mb_per_s)
        *best = r;
}

static void print_mconn(const char *name, result r)
{
    printf("mconn_%s_msgs_per_s: %.0f\n", name, r.msgs_per_s);
    printf("mconn_%s_MB_per_s: %.0f\n", name, r.mb_per_s);
    printf("mconn_%s_sender_cpu: %.3f s/GiB\n", name, r.tx_cpu_gib);
    printf("mconn_%s_receiver_cpu: %.3f s/GiB\n", name, r.rx_cpu_gib);
    fflush(stdout);
}

/* ---- memory of an idle connection ------------------------------------------------------- */

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

typedef struct idle_pair {
    tm2__mcs a, b;
    int started;
} idle_pair;

static void idle_handshake(tm2__sc_stream *s, int err)
{
    tm2__mcs *c = tm2__mcs_of_stream(s);
    idle_pair *p = c->data;
    if (err)
        DIE("idle handshake: %s", tm2_strerror(err));
    /* A node's channel set: mempool, blockchain, four consensus, discovery. */
    static const tm2_channel_desc d[] = {
        {0x30, 5, 0, 4096, 22020096},  {0x40, 10, 1000, 204800, 104857605},
        {0x20, 5, 100, 4096, 1048576}, {0x21, 10, 100, 204800, 1048576},
        {0x22, 5, 100, 10000, 1048576}, {0x23, 1, 2, 1024, 1048576},
        {0x50, 1, 20, 4096, 5242880},
    };
    if (tm2__mcs_start(c, NULL, d, sizeof d / sizeof d[0], NULL, 0))
        DIE("idle start");
    p->started++;
}

#define IDLE_PAIRS 200

/* Bytes one started, idle connection costs: its struct plus what the heap
 * grew by, averaged over many connections on one loop (both ends of each
 * pair count). Socket buffers are the kernel's and not included. */
static double idle_conn_bytes(void)
{
    static const tm2__sc_stream_cbs pre = {.on_handshake = idle_handshake};
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__mcs_loop ml;
    if (uv_loop_init(&loop) || tm2__uv_engine_init(&ue, &loop) || tm2__mcs_loop_init(&ml, &ue.e))
        DIE("idle loop");
    idle_pair *pairs = calloc(IDLE_PAIRS, sizeof *pairs);
    if (!pairs)
        DIE("oom");
    tm2_node_key key;
    tm2_node_key_generate(&key);

    size_t before = heap_in_use();
    int fds[2];
    for (int i = 0; i < IDLE_PAIRS; i++) {
        idle_pair *p = &pairs[i];
        if (uv_socketpair(SOCK_STREAM, 0, fds, 0, 0))
            DIE("socketpair");
        tm2__mcs *cs[2] = {&p->a, &p->b};
        for (int k = 0; k < 2; k++) {
            if (tm2__mcs_init(cs[k], &ml, NULL, &pre, NULL))
                DIE("idle init");
            cs[k]->data = p;
            if (uv_tcp_open(tm2__sc_stream_uv_tcp(tm2__mcs_stream(cs[k])), fds[k]) ||
                tm2__sc_stream_start(tm2__mcs_stream(cs[k]), &key, NULL))
                DIE("idle open");
        }
    }
    int done = 0;
    while (done < IDLE_PAIRS) {
        uv_run(&loop, UV_RUN_ONCE);
        done = 0;
        for (int i = 0; i < IDLE_PAIRS; i++)
            done += pairs[i].started == 2;
    }
    /* A few turns for the first passes. */
    for (int i = 0; i < 4; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    size_t after = heap_in_use();
    double per = (double)(after - before) / (2.0 * IDLE_PAIRS) + (double)sizeof(tm2__mcs);

    for (int i = 0; i < IDLE_PAIRS; i++) {
        tm2__mcs_close(&pairs[i].a);
        tm2__mcs_close(&pairs[i].b);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < IDLE_PAIRS; i++) {
        tm2__mcs_destroy(&pairs[i].a);
        tm2__mcs_destroy(&pairs[i].b);
    }
    tm2__mcs_loop_close(&ml);
    tm2__uv_engine_close(&ue);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop))
        DIE("idle loop close");
    free(pairs);
    return per;
}

/* ---- main ---------------------------------------------------------------------------- */

int main(void)
{
    if (sodium_init() < 0)
        DIE("sodium_init");
    /* A sender still writing when its receiver leaves must see EPIPE. */
    signal(SIGPIPE, SIG_IGN);
    uint8_t *src = malloc(SC_WRITE);
    if (!src)
        DIE("oom");
    randombytes_buf(src, SC_WRITE);

    result sc = {0}, scb = {0}, big1 = {0}, big4 = {0}, small1 = {0}, small4 = {0};
    for (int round = 0; round < 3; round++) {
        keep_best(&sc, run_one(true, SC_WRITE, 0, src, false));
        keep_best(&scb, run_one(true, TM2__MCS_BATCH, 0, src, false));
        keep_best(&big1, run_one(false, 64 * 1024, 1, src, false));
        keep_best(&big4, run_one(false, 64 * 1024, 4, src, false));
    }
    result smallx = {0};
    for (int round = 0; round < 2; round++) {
        keep_best(&small1, run_one(false, 256, 1, src, false));
        keep_best(&small4, run_one(false, 256, 4, src, false));
        keep_best(&smallx, run_one(false, 256, 1, src, true));
    }
    print_mconn("256B", small1);
    print_mconn("256B_4ch", small4);
    print_mconn("256B_xthread", smallx);
    print_mconn("64KiB", big1);
    print_mconn("64KiB_4ch", big4);
    printf("sc_loopback_tcp: %.0f MB/s\n", sc.mb_per_s);
    printf("sc_loopback_sender_cpu: %.3f s/GiB\n", sc.tx_cpu_gib);
    printf("sc_loopback_receiver_cpu: %.3f s/GiB\n", sc.rx_cpu_gib);
    printf("sc_loopback_tcp_62KiB_writes: %.0f MB/s\n", scb.mb_per_s);
    printf("sc_loopback_62KiB_writes_sender_cpu: %.3f s/GiB\n", scb.tx_cpu_gib);
    printf("sc_loopback_62KiB_writes_receiver_cpu: %.3f s/GiB\n", scb.rx_cpu_gib);
    /* Against the faster of the two ways to drive the bare connection. */
    double bare = sc.mb_per_s > scb.mb_per_s ? sc.mb_per_s : scb.mb_per_s;
    printf("mconn_64KiB_ratio: %.3f\n", big1.mb_per_s / bare);
    printf("mconn_64KiB_4ch_ratio: %.3f\n", big4.mb_per_s / bare);
    printf("mconn_256B_goal_ratio: %.3f\n", small1.msgs_per_s / 400000.0);
    printf("mconn_idle_conn_bytes: %.0f\n", idle_conn_bytes());
    free(src);
    return 0;
}
