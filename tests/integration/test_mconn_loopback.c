/* The MConnection glue (net/mconn_stream) over real loopback TCP with
 * libuv: channels and message sizes byte-exact and in order, a 10 MiB
 * message, keepalive on an idle connection, pong timeouts against a peer
 * that stops reading and one that never answers, an unknown channel, the
 * receive rate pause, plaintext handed over from before the start, sends
 * from other threads, and close waking waiting senders. Every wait is on a
 * loop event, a loop timer that checks a condition, or a thread join, all
 * under a watchdog; nothing sleeps. */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <uv.h>

#include "conn/packet.h"
#include "net/engine_uv.h"
#include "net/mconn_stream.h"
#include "net/sc_stream_uv.h"
#include "tm2p2p/defaults.h"
#include "tv.h"

#define MiB (1024u * 1024u)

/* ---- fixture ------------------------------------------------------------------------ */

typedef struct ep ep;
typedef struct raw raw;

typedef struct fixture {
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__mcs_loop ml;
    uv_tcp_t listener;
    uv_timer_t watchdog;
    uv_timer_t poll;            /* per-test checks on a deadline */
    int port;
    bool timed_out;
    ep *server;                 /* accepted connections go here */
    void *user;
} fixture;

struct ep {
    fixture *f;
    const char *name;
    tm2__mcs c;
    tm2_node_key key;
    tm2_mconn_config cfg;
    tm2_channel_desc descs[4];
    size_t n_descs;
    tm2__sc_stream_config scfg;
    uv_connect_t creq;
    bool inited, started, closed, errored;
    int err;
    char reason[128];
    uint64_t t_start, t_err;
    /* hello mode: exchange a plaintext greeting before the start, with the
     * first mconn packet in the same write */
    bool hello;
    uint8_t hbuf[64];
    size_t hfill;
    size_t pre_len;
    /* test hooks */
    void (*on_started)(ep *e);
    int (*on_msg)(ep *e, uint8_t ch, const uint8_t *d, size_t n);
    void (*on_room)(ep *e, uint8_t ch);
    void (*on_err)(ep *e);
    void *user;
};

static void watchdog_cb(uv_timer_t *t)
{
    fixture *f = t->data;
    f->timed_out = true;
    uv_stop(&f->loop);
}

static void on_connection(uv_stream_t *server, int status);

static void fixture_init(fixture *f, uint64_t watchdog_ms)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(tm2__uv_engine_init(&f->ue, &f->loop), 0);
    assert_int_equal(tm2__mcs_loop_init(&f->ml, &f->ue.e), 0);
    assert_true(tm2__mcs_loop_on_thread(&f->ml));
    assert_int_equal(uv_tcp_init(&f->loop, &f->listener), 0);
    f->listener.data = f;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 16, on_connection), 0);
    struct sockaddr_in got;
    int len = sizeof got;
    assert_int_equal(uv_tcp_getsockname(&f->listener, (struct sockaddr *)&got, &len), 0);
    f->port = ntohs(got.sin_port);
    uv_timer_init(&f->loop, &f->watchdog);
    f->watchdog.data = f;
    uv_timer_start(&f->watchdog, watchdog_cb, watchdog_ms, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    uv_timer_init(&f->loop, &f->poll);
    f->poll.data = f;
}

static void close_listener(fixture *f)
{
    if (!uv_is_closing((uv_handle_t *)&f->listener))
        uv_close((uv_handle_t *)&f->listener, NULL);
    if (!uv_is_closing((uv_handle_t *)&f->poll))
        uv_close((uv_handle_t *)&f->poll, NULL);
}

static void fixture_run(fixture *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_false(f->timed_out);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void fixture_close(fixture *f)
{
    close_listener(f);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    tm2__mcs_loop_close(&f->ml);
    tm2__uv_engine_close(&f->ue);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_walk(&f->loop, close_walk, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void connect_to(fixture *f, uv_tcp_t *tcp, uv_connect_t *req, uv_connect_cb cb)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", f->port, &a);
    assert_int_equal(uv_tcp_connect(req, tcp, (const struct sockaddr *)&a, cb), 0);
}

/* ---- endpoints ------------------------------------------------------------------------- */

static ep *EP(tm2__mcs *c) { return c->data; }

static const char hello_text[5] = {'H', 'E', 'L', 'L', 'O'};
#define HELLO_CH 0x10

static void ep_start(ep *e, const uint8_t *pre, size_t n)
{
    assert_int_equal(tm2__mcs_start(&e->c, &e->cfg, e->descs, e->n_descs, pre, n), 0);
    e->started = true;
    e->pre_len = n;
    e->t_start = tv_now_ms();
    if (e->on_started)
        e->on_started(e);
}

static void pre_handshake(tm2__sc_stream *s, int err)
{
    ep *e = EP(tm2__mcs_of_stream(s));
    assert_int_equal(err, 0);
    if (!e->hello) {
        ep_start(e, NULL, 0);
        return;
    }
    /* The greeting and, in the same frame, a first packet for the peer's
     * mconn: the peer reads both at once and must hand the packet over. */
    uint8_t b[64];
    memcpy(b, hello_text, sizeof hello_text);
    int n = tm2__packet_encode_msg(b + 5, sizeof b - 5, HELLO_CH, 1, (const uint8_t *)"early", 5);
    assert_true(n > 0);
    assert_int_equal(tm2__sc_stream_write(s, b, 5 + (size_t)n), 0);
}

static void pre_read(tm2__sc_stream *s, const uint8_t *d, size_t n)
{
    ep *e = EP(tm2__mcs_of_stream(s));
    assert_true(e->hello);
    assert_false(e->started);
    size_t take = sizeof hello_text - e->hfill;
    if (take > n)
        take = n;
    memcpy(e->hbuf + e->hfill, d, take);
    e->hfill += take;
    if (e->hfill < sizeof hello_text)
        return;
    assert_memory_equal(e->hbuf, hello_text, sizeof hello_text);
    ep_start(e, d + take, n - take);
}

static void pre_error(tm2__sc_stream *s, int err)
{
    ep *e = EP(tm2__mcs_of_stream(s));
    e->errored = true;
    e->err = err;
    tm2__mcs_close(&e->c);
    if (e->on_err)
        e->on_err(e);
}

static const tm2__sc_stream_cbs pre_cbs = {
    .on_handshake = pre_handshake,
    .on_read = pre_read,
    .on_error = pre_error,
};

static int mcs_receive(tm2__mcs *c, uint8_t ch, const uint8_t *d, size_t n)
{
    ep *e = EP(c);
    return e->on_msg ? e->on_msg(e, ch, d, n) : 0;
}

static void mcs_room(tm2__mcs *c, uint8_t ch)
{
    ep *e = EP(c);
    if (e->on_room)
        e->on_room(e, ch);
}

static void mcs_error(tm2__mcs *c, int err, const char *reason)
{
    ep *e = EP(c);
    assert_false(e->errored);   /* once */
    e->errored = true;
    e->err = err;
    e->t_err = tv_now_ms();
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    if (e->on_err)
        e->on_err(e);
}

static void mcs_closed(tm2__mcs *c)
{
    ep *e = EP(c);
    assert_false(e->closed);
    e->closed = true;
}

static const tm2__mcs_cbs mcs_cbs = {
    .on_receive = mcs_receive,
    .on_send_room = mcs_room,
    .on_error = mcs_error,
    .on_close = mcs_closed,
};

/* Rate limits off, keepalive far away: tests that want them set them. */
static void ep_setup(ep *e, fixture *f, const char *name, uint8_t seed_byte)
{
    uint8_t seed[32];
    memset(e, 0, sizeof *e);
    e->f = f;
    e->name = name;
    memset(seed, seed_byte, 32);
    tm2_node_key_from_seed(&e->key, seed);
    tm2_mconn_config_default(&e->cfg);
    e->cfg.send_rate = 0;
    e->cfg.recv_rate = 0;
    e->cfg.flush_throttle_ms = 10;
}

static void ep_add_channel(ep *e, uint8_t id, uint32_t prio, size_t sendq, size_t recv_cap)
{
    e->descs[e->n_descs++] = (tm2_channel_desc){
        .id = id, .priority = prio, .send_queue_capacity = sendq, .recv_message_capacity = recv_cap};
}

static void ep_init(ep *e)
{
    assert_int_equal(tm2__mcs_init(&e->c, &e->f->ml, &e->scfg, &pre_cbs, &mcs_cbs), 0);
    e->c.data = e;
    e->inited = true;
}

static void on_connection(uv_stream_t *server, int status)
{
    fixture *f = server->data;
    assert_int_equal(status, 0);
    ep *e = f->server;
    assert_non_null(e);
    f->server = NULL;   /* one connection per test */
    ep_init(e);
    assert_int_equal(uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(tm2__mcs_stream(&e->c))), 0);
    assert_int_equal(tm2__sc_stream_start(tm2__mcs_stream(&e->c), &e->key, NULL), 0);
}

static void ep_connected(uv_connect_t *req, int status)
{
    ep *e = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(tm2__sc_stream_start(tm2__mcs_stream(&e->c), &e->key, NULL), 0);
}

/* a dials b. */
static void pair_connect(fixture *f, ep *a, ep *b)
{
    f->server = b;
    ep_init(a);
    a->creq.data = a;
    connect_to(f, tm2__sc_stream_uv_tcp(tm2__mcs_stream(&a->c)), &a->creq, ep_connected);
}

static void pair_close(ep *a, ep *b)
{
    tm2__mcs_close(&a->c);
    tm2__mcs_close(&b->c);
    close_listener(a->f);
}

static void ep_destroy(ep *e)
{
    if (e->inited) {
        assert_true(e->closed);
        tm2__mcs_destroy(&e->c);
    }
}

/* ---- message contents ------------------------------------------------------------------- */

static uint8_t gen_byte(uint8_t ch, uint32_t i, size_t j)
{
    uint32_t x = (uint32_t)j * 2654435761u ^ i * 40503u ^ (uint32_t)ch << 24;
    return (uint8_t)(x >> 13 ^ x >> 3);
}

static tm2__msg *gen_msg(uint8_t ch, uint32_t i, size_t len)
{
    tm2__msg *m = tm2__msg_alloc(len);
    assert_non_null(m);
    for (size_t j = 0; j < len; j++)
        m->data[j] = gen_byte(ch, i, j);
    return m;
}

static bool gen_check(uint8_t ch, uint32_t i, const uint8_t *d, size_t len)
{
    for (size_t j = 0; j < len; j++)
        if (d[j] != gen_byte(ch, i, j))
            return false;
    return true;
}

/* ---- three channels, sizes from 1 byte to the receive capacity -------------------------------- */

#define XF_CH 3
#define XF_MSGS 120

static const uint8_t xf_ids[XF_CH] = {0x20, 0x30, 0x40};
static const uint32_t xf_prio[XF_CH] = {1, 5, 10};
static const size_t xf_sendq[XF_CH] = {1, 4, 16};
static const size_t xf_cap[XF_CH] = {4096, 65536, 1 * MiB};

/* The i-th message size on channel k: the edges first, then log-uniform. */
static size_t xf_size(int k, uint32_t i)
{
    size_t cap = xf_cap[k];
    const size_t edges[] = {1, 2, 1023, 1024, 1025, 2047, 2048, cap - 1, cap, 1};
    if (i < sizeof edges / sizeof edges[0])
        return edges[i];
    uint32_t h = (i + 1) * 2246822519u ^ (uint32_t)k * 3266489917u;
    h ^= h >> 15;
    h *= 2654435761u;
    h ^= h >> 13;
    unsigned bits = 1 + h % 20;
    size_t s = 1 + (h >> 5) % ((size_t)1 << bits);
    return s > cap ? cap : s;
}

typedef struct xfer {
    ep a, b;
    uint32_t next_send[2][XF_CH];
    uint32_t next_recv[2][XF_CH];
    uint64_t bytes_sent[2];
    bool bad;
    bool done;
} xfer;

static int xf_side(xfer *x, ep *e) { return e == &x->a ? 0 : 1; }

static int xf_index(uint8_t ch)
{
    for (int k = 0; k < XF_CH; k++)
        if (xf_ids[k] == ch)
            return k;
    return -1;
}

static void xf_fill(ep *e, int k)
{
    xfer *x = e->user;
    int s = xf_side(x, e);
    while (x->next_send[s][k] < XF_MSGS) {
        uint32_t i = x->next_send[s][k];
        size_t len = xf_size(k, i);
        tm2__msg *m = gen_msg(xf_ids[k] ^ (uint8_t)s, i, len);
        int r = tm2__mcs_try_send(&e->c, xf_ids[k], m);
        tm2__msg_unref(m);
        if (r == TM2_EFULL)
            return;
        assert_int_equal(r, 0);
        x->next_send[s][k]++;
        x->bytes_sent[s] += len;
    }
}

static void xf_started(ep *e)
{
    for (int k = 0; k < XF_CH; k++)
        xf_fill(e, k);
}

static void xf_room(ep *e, uint8_t ch)
{
    int k = xf_index(ch);
    assert_true(k >= 0);
    xf_fill(e, k);
}

static void xf_check_status(ep *e)
{
    tm2_mconn_status st;
    assert_int_equal(tm2__mcs_status(&e->c, &st), 0);
    assert_int_equal(st.n_channels, XF_CH);
    for (int k = 0; k < XF_CH; k++) {
        assert_int_equal(st.channels[k].id, xf_ids[k]);
        assert_int_equal(st.channels[k].priority, xf_prio[k]);
        assert_int_equal(st.channels[k].send_queue_capacity, xf_sendq[k]);
    }
    xfer *x = e->user;
    assert_true(st.send.bytes >= x->bytes_sent[xf_side(x, e)]);
    assert_true(st.recv.bytes >= x->bytes_sent[!xf_side(x, e)]);
}

static int xf_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    xfer *x = e->user;
    int s = xf_side(x, e), from = !s;
    int k = xf_index(ch);
    assert_true(k >= 0);
    uint32_t i = x->next_recv[s][k]++;
    assert_true(i < XF_MSGS);
    assert_int_equal(n, xf_size(k, i));
    if (!gen_check(xf_ids[k] ^ (uint8_t)from, i, d, n))
        x->bad = true;
    for (int side = 0; side < 2; side++)
        for (int j = 0; j < XF_CH; j++)
            if (x->next_recv[side][j] < XF_MSGS)
                return 0;
    x->done = true;
    xf_check_status(&x->a);
    xf_check_status(&x->b);
    pair_close(&x->a, &x->b);
    return 0;
}

static void three_channels_all_sizes(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 120000);
    xfer *x = calloc(1, sizeof *x);
    assert_non_null(x);
    ep *eps[2] = {&x->a, &x->b};
    for (int s = 0; s < 2; s++) {
        ep *e = eps[s];
        ep_setup(e, &f, s ? "b" : "a", (uint8_t)(s + 1));
        for (int k = 0; k < XF_CH; k++)
            ep_add_channel(e, xf_ids[k], xf_prio[k], xf_sendq[k], xf_cap[k]);
        e->user = x;
        e->on_started = xf_started;
        e->on_room = xf_room;
        e->on_msg = xf_msg;
    }
    pair_connect(&f, &x->a, &x->b);
    fixture_run(&f);
    assert_true(x->done);
    assert_false(x->bad);
    assert_false(x->a.errored);
    assert_false(x->b.errored);
    assert_true(x->a.closed && x->b.closed);
    /* After close: sends and status say so. */
    tm2__msg *m = tm2__msg_new("x", 1);
    assert_int_equal(tm2__mcs_try_send(&x->a.c, xf_ids[0], m), TM2_ECLOSED);
    assert_int_equal(tm2__mcs_send(&x->a.c, xf_ids[0], m, 1000), TM2_ECLOSED);
    tm2__msg_unref(m);
    tm2_mconn_status st;
    assert_int_equal(tm2__mcs_status(&x->a.c, &st), TM2_ECLOSED);
    fixture_close(&f);
    ep_destroy(&x->a);
    ep_destroy(&x->b);
    free(x);
}

/* ---- a 10 MiB message each way, then a small one behind it -------------------------------------- */

#define BIG (10u * MiB)

typedef struct big {
    ep a, b;
    int got[2];
    bool bad;
} big;

static void big_started(ep *e)
{
    big *g = e->user;
    uint8_t s = e == &g->a ? 0 : 1;
    tm2__msg *m = gen_msg(0x40 + s, 0, BIG);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x40, m), 0);
    tm2__msg_unref(m);
    m = gen_msg(0x40 + s, 1, 3);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x40, m), 0);
    tm2__msg_unref(m);
}

static int big_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    big *g = e->user;
    int s = e == &g->a ? 0 : 1;
    assert_int_equal(ch, 0x40);
    int i = g->got[s]++;
    assert_int_equal(n, i == 0 ? BIG : 3);
    if (!gen_check((uint8_t)(0x40 + !s), (uint32_t)i, d, n))
        g->bad = true;
    if (g->got[0] == 2 && g->got[1] == 2)
        pair_close(&g->a, &g->b);
    return 0;
}

static void ten_mib_message(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 120000);
    big *g = calloc(1, sizeof *g);
    assert_non_null(g);
    ep *eps[2] = {&g->a, &g->b};
    for (int s = 0; s < 2; s++) {
        ep_setup(eps[s], &f, s ? "b" : "a", (uint8_t)(s + 1));
        ep_add_channel(eps[s], 0x40, 10, 2, BIG + MiB);
        eps[s]->user = g;
        eps[s]->on_started = big_started;
        eps[s]->on_msg = big_msg;
    }
    pair_connect(&f, &g->a, &g->b);
    fixture_run(&f);
    assert_int_equal(g->got[0], 2);
    assert_int_equal(g->got[1], 2);
    assert_false(g->bad);
    assert_false(g->a.errored || g->b.errored);
    fixture_close(&f);
    ep_destroy(&g->a);
    ep_destroy(&g->b);
    free(g);
}

/* ---- keepalive ----------------------------------------------------------------------------- */

#define PING_MS 100u
#define PONG_MS 80u

static void keepalive_cfg(ep *e)
{
    e->cfg.ping_interval_ms = PING_MS;
    e->cfg.pong_timeout_ms = PONG_MS;
}

typedef struct idle {
    ep a, b;
    uint64_t t0;
    uint64_t sent[2], recvd[2];
    bool done;
} idle;

/* Polled on a timer: an idle pair exchanges only Pings and Pongs (12 bytes
 * each); after three intervals each side sent at least 3 of each. */
static void idle_poll(uv_timer_t *t)
{
    fixture *f = t->data;
    idle *d = f->user;
    if (!d->a.started || !d->b.started)
        return;
    ep *eps[2] = {&d->a, &d->b};
    uint64_t now = tv_now_ms();
    for (int s = 0; s < 2; s++) {
        tm2_mconn_status st;
        assert_int_equal(tm2__mcs_status(&eps[s]->c, &st), 0);
        d->sent[s] = st.send.bytes;
        d->recvd[s] = st.recv.bytes;
    }
    uint64_t started = d->a.t_start > d->b.t_start ? d->a.t_start : d->b.t_start;
    if (now < started + 3 * PING_MS + PING_MS / 2)
        return;
    for (int s = 0; s < 2; s++)
        if (d->sent[s] < 6 * TM2__PACKET_PING_SIZE || d->recvd[s] < 6 * TM2__PACKET_PING_SIZE)
            return;
    d->done = true;
    d->t0 = now - started;
    uv_timer_stop(t);
    pair_close(&d->a, &d->b);
}

static void idle_three_intervals(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    idle *d = calloc(1, sizeof *d);
    assert_non_null(d);
    f.user = d;
    ep_setup(&d->a, &f, "a", 1);
    ep_setup(&d->b, &f, "b", 2);
    keepalive_cfg(&d->a);
    keepalive_cfg(&d->b);
    ep_add_channel(&d->a, 0x20, 1, 1, 0);
    ep_add_channel(&d->b, 0x20, 1, 1, 0);
    uv_timer_start(&f.poll, idle_poll, 25, 25);
    pair_connect(&f, &d->a, &d->b);
    fixture_run(&f);
    assert_true(d->done);
    assert_false(d->a.errored || d->b.errored);
    for (int s = 0; s < 2; s++) {
        /* Nothing but whole Pings and Pongs went either way. */
        assert_int_equal(d->sent[s] % TM2__PACKET_PING_SIZE, 0);
        assert_int_equal(d->recvd[s] % TM2__PACKET_PING_SIZE, 0);
    }
    fixture_close(&f);
    ep_destroy(&d->a);
    ep_destroy(&d->b);
    free(d);
}

/* A scripted peer: a bare secret connection that parses packets itself,
 * counts Pings and Pongs, answers Pings if told to and pings on its own
 * timer. */
struct raw {
    fixture *f;
    tm2__sc_stream s;
    tm2_node_key key;
    uv_connect_t creq;
    uv_timer_t ping;
    bool answer, pinging;
    uint8_t buf[2 * 1056];
    size_t fill;
    int pings_rx, pongs_rx, msgs_rx, pings_tx;
    bool hs_done, errored, closed;
    int err;
    /* test hooks: after the handshake; on a Ping instead of answering */
    void (*on_hs)(raw *r);
    void (*on_ping)(raw *r);
    void *user;
};

static raw *RAW(tm2__sc_stream *s) { return s->data; }

static void raw_write_ctl(raw *r, bool pong)
{
    uint8_t b[TM2__PACKET_PING_SIZE];
    int n = pong ? tm2__packet_encode_pong(b, sizeof b) : tm2__packet_encode_ping(b, sizeof b);
    assert_int_equal(n, TM2__PACKET_PING_SIZE);
    assert_int_equal(tm2__sc_stream_write(&r->s, b, (size_t)n), 0);
}

static void raw_ping_cb(uv_timer_t *t)
{
    raw *r = t->data;
    r->pings_tx++;
    raw_write_ctl(r, false);
}

static void raw_handshake(tm2__sc_stream *s, int err)
{
    raw *r = RAW(s);
    assert_int_equal(err, 0);
    r->hs_done = true;
    if (r->pinging)
        uv_timer_start(&r->ping, raw_ping_cb, PING_MS, PING_MS);
    if (r->on_hs)
        r->on_hs(r);
}

/* One data packet, written as is. */
static void raw_write_msg(raw *r, uint8_t ch, uint8_t eof, const char *data)
{
    uint8_t b[256];
    size_t len = strlen(data);
    int n = tm2__packet_encode_msg(b, sizeof b, ch, eof, (const uint8_t *)data, len);
    assert_true(n > 0);
    assert_int_equal(tm2__sc_stream_write(&r->s, b, (size_t)n), 0);
}

static void raw_write_zeros(raw *r, uint8_t ch, uint8_t eof, size_t len)
{
    uint8_t b[1100];
    static const uint8_t zero[1024];
    assert_true(len <= sizeof zero);
    int n = tm2__packet_encode_msg(b, sizeof b, ch, eof, zero, len);
    assert_true(n > 0);
    assert_int_equal(tm2__sc_stream_write(&r->s, b, (size_t)n), 0);
}

static void raw_read(tm2__sc_stream *s, const uint8_t *d, size_t n)
{
    raw *r = RAW(s);
    while (n) {
        size_t k = sizeof r->buf - r->fill;
        if (k > n)
            k = n;
        memcpy(r->buf + r->fill, d, k);
        r->fill += k;
        d += k;
        n -= k;
        for (;;) {
            tm2__packet p;
            size_t used;
            int e = tm2__packet_decode(r->buf, r->fill, 1056, &p, &used);
            if (e == TM2_EAGAIN)
                break;
            assert_int_equal(e, 0);
            if (p.type == TM2__PKT_PING) {
                r->pings_rx++;
                if (r->on_ping)
                    r->on_ping(r);
                else if (r->answer)
                    raw_write_ctl(r, true);
            } else if (p.type == TM2__PKT_PONG) {
                r->pongs_rx++;
            } else {
                r->msgs_rx++;
            }
            memmove(r->buf, r->buf + used, r->fill - used);
            r->fill -= used;
        }
    }
}

static void raw_error(tm2__sc_stream *s, int err)
{
    raw *r = RAW(s);
    r->errored = true;
    r->err = err;
}

static void raw_closed(tm2__sc_stream *s) { RAW(s)->closed = true; }

static const tm2__sc_stream_cbs raw_cbs = {
    .on_handshake = raw_handshake,
    .on_read = raw_read,
    .on_error = raw_error,
    .on_close = raw_closed,
};

static void raw_connected(uv_connect_t *req, int status)
{
    raw *r = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(tm2__sc_stream_start(&r->s, &r->key, NULL), 0);
}

/* r dials the server endpoint e. */
static void raw_connect(fixture *f, raw *r, ep *e)
{
    uint8_t seed[32];
    memset(seed, 9, sizeof seed);
    tm2_node_key_from_seed(&r->key, seed);
    r->f = f;
    tm2__sc_stream_init(&r->s, &f->ml.sc, NULL, &raw_cbs);
    r->s.data = r;
    uv_timer_init(&f->loop, &r->ping);
    r->ping.data = r;
    f->server = e;
    r->creq.data = r;
    connect_to(f, tm2__sc_stream_uv_tcp(&r->s), &r->creq, raw_connected);
}

static void raw_close(raw *r)
{
    tm2__sc_stream_close(&r->s);
    if (!uv_is_closing((uv_handle_t *)&r->ping))
        uv_close((uv_handle_t *)&r->ping, NULL);
}

typedef struct scripted {
    ep e;
    raw r;
    uint64_t t_done;
} scripted;

static void scripted_poll(uv_timer_t *t)
{
    fixture *f = t->data;
    scripted *sc = f->user;
    if (sc->r.pings_rx >= 3 && sc->r.pongs_rx >= 3) {
        sc->t_done = tv_now_ms();
        uv_timer_stop(t);
        tm2__mcs_close(&sc->e.c);
        raw_close(&sc->r);
        close_listener(f);
    }
}

/* Counted by an independent packet parser: our side pings on time and
 * answers every Ping. */
static void idle_counts_pings_and_pongs(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    scripted *sc = calloc(1, sizeof *sc);
    assert_non_null(sc);
    f.user = sc;
    ep_setup(&sc->e, &f, "e", 2);
    keepalive_cfg(&sc->e);
    ep_add_channel(&sc->e, 0x20, 1, 1, 0);
    sc->r.answer = true;
    sc->r.pinging = true;
    raw_connect(&f, &sc->r, &sc->e);
    uv_timer_start(&f.poll, scripted_poll, 10, 10);
    fixture_run(&f);
    assert_true(sc->r.closed);
    assert_false(sc->e.errored);
    assert_int_equal(sc->r.msgs_rx, 0);
    /* Three intervals passed; at most one more Ping could have been due. */
    assert_true(sc->t_done - sc->e.t_start >= 3 * PING_MS - 5);
    assert_true(sc->r.pings_rx >= 3);
    assert_true((uint64_t)sc->r.pings_rx <= (sc->t_done - sc->e.t_start) / PING_MS + 1);
    assert_true(sc->r.pongs_rx >= 3);
    assert_true(sc->r.pongs_rx <= sc->r.pings_tx);
    fixture_close(&f);
    ep_destroy(&sc->e);
    free(sc);
}

static void silent_err(ep *e)
{
    scripted *sc = e->f->user;
    raw_close(&sc->r);
    close_listener(e->f);
}

/* A peer that completes the handshake and then never answers. */
static void pong_timeout_silent_peer(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    scripted *sc = calloc(1, sizeof *sc);
    assert_non_null(sc);
    f.user = sc;
    ep_setup(&sc->e, &f, "e", 2);
    keepalive_cfg(&sc->e);
    ep_add_channel(&sc->e, 0x20, 1, 1, 0);
    sc->e.on_err = silent_err;
    raw_connect(&f, &sc->r, &sc->e);
    fixture_run(&f);
    assert_true(sc->e.errored);
    assert_int_equal(sc->e.err, TM2_EPONG);
    assert_non_null(strstr(sc->e.reason, "pong"));
    uint64_t took = sc->e.t_err - sc->e.t_start;
    assert_true(took >= PING_MS + PONG_MS - 5);
    assert_true(took < 5000);
    assert_true(sc->r.pings_rx >= 1);   /* it was asked */
    assert_true(sc->e.closed);
    assert_true(sc->r.closed);
    fixture_close(&f);
    ep_destroy(&sc->e);
    free(sc);
}

/* b stops reading: a's Pings go unanswered. */
typedef struct stall {
    ep a, b;
    uint32_t sent;
    bool saw_blocked;
} stall;

/* Small socket buffers and stream bound: the stall comes after a few
 * hundred kB, long before the pong deadline even on a slow machine. */
#define STALL_BUF      4096
#define STALL_QUEUED   (64u * 1024u)
#define STALL_PING_MS  500u
#define STALL_PONG_MS  200u

static void stall_small_buffers(ep *e)
{
    int v = STALL_BUF;
    uv_handle_t *h = (uv_handle_t *)tm2__sc_stream_uv_tcp(tm2__mcs_stream(&e->c));
    assert_int_equal(uv_send_buffer_size(h, &v), 0);
    v = STALL_BUF;
    assert_int_equal(uv_recv_buffer_size(h, &v), 0);
}

static void stall_b_started(ep *e)
{
    stall_small_buffers(e);
    assert_int_equal(tm2__sc_stream_pause(tm2__mcs_stream(&e->c), true), 0);
}

static void stall_a_err(ep *e)
{
    stall *st = e->user;
    tm2__mcs_close(&st->b.c);
    close_listener(e->f);
}

/* a also has more to send than b will ever read: its writes stall behind
 * the stopped reader, and the pong timeout still fires on time. */
static void stall_fill(ep *e)
{
    stall *st = e->user;
    for (;;) {
        tm2__msg *m = gen_msg(0x20, st->sent, 64 * 1024);
        int r = tm2__mcs_try_send(&e->c, 0x20, m);
        tm2__msg_unref(m);
        if (r == TM2_EFULL)
            return;
        assert_int_equal(r, 0);
        st->sent++;
    }
}

static void stall_a_started(ep *e)
{
    stall_small_buffers(e);
    stall_fill(e);
}

static void stall_room(ep *e, uint8_t ch)
{
    (void)ch;
    stall_fill(e);
}

static void stall_poll(uv_timer_t *t)
{
    fixture *f = t->data;
    stall *st = f->user;
    if (st->a.started && !st->a.errored && st->a.c.blocked)
        st->saw_blocked = true;
}

static void pong_timeout_while_writes_stall(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    stall *st = calloc(1, sizeof *st);
    assert_non_null(st);
    f.user = st;
    ep_setup(&st->a, &f, "a", 1);
    ep_setup(&st->b, &f, "b", 2);
    st->a.cfg.ping_interval_ms = STALL_PING_MS;
    st->a.cfg.pong_timeout_ms = STALL_PONG_MS;
    st->a.scfg.max_queued = STALL_QUEUED;
    st->b.cfg.ping_interval_ms = 60000;
    st->b.cfg.pong_timeout_ms = 45000;
    ep_add_channel(&st->a, 0x20, 1, 4, 0);
    ep_add_channel(&st->b, 0x20, 1, 4, 0);
    st->a.user = st->b.user = st;
    st->a.on_err = stall_a_err;
    st->a.on_started = stall_a_started;
    st->a.on_room = stall_room;
    st->b.on_started = stall_b_started;
    uv_timer_start(&f.poll, stall_poll, 5, 5);
    pair_connect(&f, &st->a, &st->b);
    fixture_run(&f);
    assert_true(st->saw_blocked);
    assert_int_equal(st->a.err, TM2_EPONG);
    uint64_t took = st->a.t_err - st->a.t_start;
    assert_true(took >= STALL_PING_MS + STALL_PONG_MS - 5);
    assert_true(took < 5000);
    assert_false(st->b.errored);
    fixture_close(&f);
    ep_destroy(&st->a);
    ep_destroy(&st->b);
    free(st);
}

static void pong_timeout_peer_stops_reading(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    stall *st = calloc(1, sizeof *st);
    assert_non_null(st);
    ep_setup(&st->a, &f, "a", 1);
    ep_setup(&st->b, &f, "b", 2);
    keepalive_cfg(&st->a);
    st->b.cfg.ping_interval_ms = 60000;
    st->b.cfg.pong_timeout_ms = 45000;
    ep_add_channel(&st->a, 0x20, 1, 1, 0);
    ep_add_channel(&st->b, 0x20, 1, 1, 0);
    st->a.user = st->b.user = st;
    st->a.on_err = stall_a_err;
    st->b.on_started = stall_b_started;
    pair_connect(&f, &st->a, &st->b);
    fixture_run(&f);
    assert_true(st->a.errored);
    assert_int_equal(st->a.err, TM2_EPONG);
    uint64_t took = st->a.t_err - st->a.t_start;
    assert_true(took >= PING_MS + PONG_MS - 5);
    assert_true(took < 5000);
    assert_false(st->b.errored);
    fixture_close(&f);
    ep_destroy(&st->a);
    ep_destroy(&st->b);
    free(st);
}

/* A sender driven by on_send_room alone (the switch's and the benchmark's
 * way): four channels whose queues together hold more than the budget.
 * try_send fails for budget on queues with room; the freed budget must still
 * bring the callback, or the sender stalls for good. */
#define RF_CH 4
#define RF_MSGS 200u
#define RF_LEN (16u * 1024u)

typedef struct refill {
    ep a, b;
    uint32_t sent[RF_CH], got[RF_CH];
    int budget_refusals;
} refill;

static void rf_fill(ep *e, uint8_t ch)
{
    refill *x = e->user;
    int k = ch - 0x30;
    while (x->sent[k] < RF_MSGS) {
        tm2__msg *m = gen_msg(ch, x->sent[k], RF_LEN);
        int r = tm2__mcs_try_send(&e->c, ch, m);
        tm2__msg_unref(m);
        if (r == TM2_EFULL) {
            tm2_mconn_status st;
            assert_int_equal(tm2__mcs_status(&e->c, &st), 0);
            if (st.channels[k].send_queue_size < st.channels[k].send_queue_capacity)
                x->budget_refusals++;
            return;
        }
        assert_int_equal(r, 0);
        x->sent[k]++;
    }
}

static void rf_started(ep *e)
{
    for (uint8_t ch = 0x30; ch < 0x30 + RF_CH; ch++)
        rf_fill(e, ch);
}

static void rf_room(ep *e, uint8_t ch) { rf_fill(e, ch); }

static int rf_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    refill *x = e->user;
    int k = ch - 0x30;
    assert_int_equal(n, RF_LEN);
    assert_true(gen_check(ch, x->got[k], d, n));
    x->got[k]++;
    for (int i = 0; i < RF_CH; i++)
        if (x->got[i] < RF_MSGS)
            return 0;
    pair_close(&x->a, &x->b);
    return 0;
}

static void budget_refusals_bring_send_room(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 60000);
    refill *x = calloc(1, sizeof *x);
    assert_non_null(x);
    ep_setup(&x->a, &f, "a", 1);
    ep_setup(&x->b, &f, "b", 2);
    x->a.cfg.max_send_buffer_bytes = 40 * RF_LEN;   /* the queues hold 400 */
    for (uint8_t ch = 0x30; ch < 0x30 + RF_CH; ch++) {
        ep_add_channel(&x->a, ch, 1, 100, 0);
        ep_add_channel(&x->b, ch, 1, 100, 0);
    }
    x->a.user = x->b.user = x;
    x->a.on_started = rf_started;
    x->a.on_room = rf_room;
    x->b.on_msg = rf_msg;
    pair_connect(&f, &x->a, &x->b);
    fixture_run(&f);
    for (int k = 0; k < RF_CH; k++)
        assert_int_equal(x->got[k], RF_MSGS);
    assert_true(x->budget_refusals > 0);
    assert_false(x->a.errored || x->b.errored);
    fixture_close(&f);
    ep_destroy(&x->a);
    ep_destroy(&x->b);
    free(x);
}

/* ---- the receive budget and the assembly deadline, from a scripted peer ---------------------------- */

typedef struct wire {
    ep e;
    raw r;
    uv_timer_t later;
    uint64_t t_first, t_orphan, t_stall_end;
    int got;
    char joined[64];
    bool whole_ok, stalled;
} wire;

static void wire_err(ep *e)
{
    wire *w = e->user;
    uv_timer_stop(&w->later);
    raw_close(&w->r);
    close_listener(e->f);
}

static void wire_setup(fixture *f, wire *w)
{
    f->user = w;
    ep_setup(&w->e, f, "e", 2);
    w->e.user = w;
    w->r.user = w;
    w->e.on_err = wire_err;
    uv_timer_init(&f->loop, &w->later);
    w->later.data = w;
}

static void wire_run(fixture *f, wire *w)
{
    raw_connect(f, &w->r, &w->e);
    fixture_run(f);
    assert_true(w->e.closed);
    assert_true(w->r.closed);
}

static void wire_done(fixture *f, wire *w)
{
    fixture_close(f);
    ep_destroy(&w->e);
    free(w);
}

/* The reference's TestMaxRecvBufferBudget over the wire. */
static void rb_hs(raw *r)
{
    raw_write_zeros(r, 0x01, 0, 60);
    raw_write_zeros(r, 0x02, 0, 50);
}

static void recv_budget_over_the_wire(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    wire *w = calloc(1, sizeof *w);
    assert_non_null(w);
    wire_setup(&f, w);
    w->e.cfg.max_recv_buffer_bytes = 100;
    ep_add_channel(&w->e, 0x01, 1, 1, 80);
    ep_add_channel(&w->e, 0x02, 1, 1, 80);
    w->r.on_hs = rb_hs;
    wire_run(&f, w);
    assert_int_equal(w->e.err, TM2_EMSGSIZE);
    assert_non_null(strstr(w->e.reason, "total receive buffer budget exceeded: 110 > 100"));
    wire_done(&f, w);
}

/* The reference's TestRecvAssemblyTimeoutNotResetByDribble: a partial
 * message, then empty partial packets every 50 ms, Pings answered all the
 * while; the deadline of the first packet still ends the connection. */
static void dribble_cb(uv_timer_t *t)
{
    wire *w = t->data;
    if (!w->r.errored && !w->r.closed && !w->e.errored)
        raw_write_zeros(&w->r, 0x01, 0, 0);
}

static void dribble_hs(raw *r)
{
    wire *w = r->user;
    raw_write_msg(r, 0x01, 0, "start");
    w->t_first = tv_now_ms();
    uv_timer_start(&w->later, dribble_cb, 50, 50);
}

static void assembly_timeout_despite_dribble(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    wire *w = calloc(1, sizeof *w);
    assert_non_null(w);
    wire_setup(&f, w);
    keepalive_cfg(&w->e);
    w->e.cfg.recv_assembly_timeout_ms = 400;
    ep_add_channel(&w->e, 0x01, 1, 1, MiB);
    w->r.answer = true;
    w->r.on_hs = dribble_hs;
    wire_run(&f, w);
    assert_int_equal(w->e.err, TM2_ETIMEDOUT);
    assert_non_null(strstr(w->e.reason, "recv assembly timeout: channel 0x01"));
    uint64_t took = w->e.t_err - w->t_first;
    assert_true(took >= 395);
    assert_true(took < 5000);
    assert_true(w->r.pings_rx >= 2);   /* kept alive, answering */
    assert_false(w->r.errored && w->r.err != TM2_ECLOSED && w->r.err != TM2_EIO);
    wire_done(&f, w);
}

/* The reference's TestRecvAssemblyDeadlineNotChargedForReactorStall: the
 * handler of channel 0x01 holds the loop for four times the deadline while
 * a message on 0x02 is half way; the peer's rest, sent after the stall,
 * still completes it. A fresh message the peer never finishes still times
 * out afterwards. */
#define ST_DEADLINE 300u

static void stall_rest_cb(uv_timer_t *t)
{
    wire *w = t->data;
    raw_write_msg(&w->r, 0x02, 0, "part-2");
    raw_write_msg(&w->r, 0x02, 1, "part-3");
}

static int stall_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    wire *w = e->user;
    w->got++;
    if (ch == 0x01) {
        w->whole_ok = n == 5 && memcmp(d, "whole", 5) == 0;
        /* The rest comes on the first loop turn after the stall. */
        uv_timer_start(&w->later, stall_rest_cb, 0, 0);
        /* A reactor blocking the network thread: the stall under test. */
        uv_sleep(4 * ST_DEADLINE);
        w->stalled = true;
        w->t_stall_end = tv_now_ms();
        return 0;
    }
    snprintf(w->joined, sizeof w->joined, "%.*s", (int)n, (const char *)d);
    raw_write_msg(&w->r, 0x02, 0, "orphan");
    w->t_orphan = tv_now_ms();
    return 0;
}

static void stall_hs(raw *r)
{
    raw_write_msg(r, 0x02, 0, "part-1");
    raw_write_msg(r, 0x01, 1, "whole");
}

static void assembly_deadline_not_charged_for_stall(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    wire *w = calloc(1, sizeof *w);
    assert_non_null(w);
    wire_setup(&f, w);
    w->e.cfg.recv_assembly_timeout_ms = ST_DEADLINE;
    ep_add_channel(&w->e, 0x01, 1, 1, 4096);
    ep_add_channel(&w->e, 0x02, 1, 1, 4096);
    w->e.on_msg = stall_msg;
    w->r.on_hs = stall_hs;
    wire_run(&f, w);
    assert_true(w->stalled);
    assert_true(w->whole_ok);
    assert_int_equal(w->got, 2);
    assert_string_equal(w->joined, "part-1part-2part-3");
    /* Then the orphan timed out, on its own deadline. */
    assert_int_equal(w->e.err, TM2_ETIMEDOUT);
    assert_non_null(strstr(w->e.reason, "channel 0x02"));
    assert_true(w->t_orphan > 0);
    assert_true(w->e.t_err - w->t_orphan >= ST_DEADLINE - 5);
    assert_true(w->e.t_err - w->t_orphan < 5000);
    wire_done(&f, w);
}

/* The reference's TestPongTimeoutNotChargedForReactorStall: the peer
 * answers the first Ping with a message whose handler holds the loop for
 * five pong timeouts, and with the Pong only after that stall. The
 * connection survives; the peer keeps answering. */
#define PS_PING_MS 200u
#define PS_PONG_MS 150u

static void pong_later_cb(uv_timer_t *t)
{
    wire *w = t->data;
    raw_write_ctl(&w->r, true);
}

static void ps_ping(raw *r)
{
    if (r->pings_rx == 1) {
        raw_write_msg(r, 0x01, 1, "go");   /* the Pong follows the stall */
        return;
    }
    raw_write_ctl(r, true);
}

static int ps_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    (void)ch;
    (void)d;
    (void)n;
    wire *w = e->user;
    /* The peer's Pong goes out on the first loop turn after the stall. */
    uv_timer_start(&w->later, pong_later_cb, 0, 0);
    uv_sleep(5 * PS_PONG_MS);   /* the stall under test */
    w->stalled = true;
    w->t_stall_end = tv_now_ms();
    return 0;
}

static void ps_poll(uv_timer_t *t)
{
    fixture *f = t->data;
    wire *w = f->user;
    if (!w->stalled || w->e.errored || tv_now_ms() < w->t_stall_end + 3 * PS_PING_MS)
        return;
    uv_timer_stop(t);
    uv_timer_stop(&w->later);
    tm2__mcs_close(&w->e.c);
    raw_close(&w->r);
    close_listener(f);
}

static void pong_timeout_not_charged_for_stall(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    wire *w = calloc(1, sizeof *w);
    assert_non_null(w);
    wire_setup(&f, w);
    w->e.cfg.ping_interval_ms = PS_PING_MS;
    w->e.cfg.pong_timeout_ms = PS_PONG_MS;
    ep_add_channel(&w->e, 0x01, 1, 1, 4096);
    w->e.on_msg = ps_msg;
    w->r.on_ping = ps_ping;
    uv_timer_start(&f.poll, ps_poll, 10, 10);
    wire_run(&f, w);
    assert_true(w->stalled);
    assert_false(w->e.errored);
    assert_true(w->r.pings_rx >= 3);   /* pinged on after the stall */
    wire_done(&f, w);
}

/* ---- the largest packet payload ------------------------------------------------------------------- */

typedef struct maxp {
    ep a, b;
    size_t payload;
    uint32_t got[2];
    bool bad;
} maxp;

#define MP_N 7

static size_t mp_size(size_t p, uint32_t i)
{
    const size_t sizes[MP_N] = {1, p - 1, p, p + 1, 3 * p + 7, MiB, 0};
    return sizes[i];
}

static void mp_started(ep *e)
{
    maxp *x = e->user;
    uint8_t s = e == &x->a ? 0 : 1;
    for (uint32_t i = 0; i < MP_N; i++) {
        tm2__msg *m = gen_msg((uint8_t)(0x40 + s), i, mp_size(x->payload, i));
        assert_int_equal(tm2__mcs_try_send(&e->c, 0x40, m), 0);
        tm2__msg_unref(m);
    }
}

static int mp_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    maxp *x = e->user;
    int s = e == &x->a ? 0 : 1;
    assert_int_equal(ch, 0x40);
    uint32_t i = x->got[s]++;
    if (i >= MP_N || n != mp_size(x->payload, i) || !gen_check((uint8_t)(0x40 + !s), i, d, n))
        x->bad = true;
    if (x->got[0] == MP_N && x->got[1] == MP_N)
        pair_close(&x->a, &x->b);
    return 0;
}

static void mp_run(size_t payload)
{
    fixture f;
    fixture_init(&f, 60000);
    maxp *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->payload = payload;
    ep *eps[2] = {&x->a, &x->b};
    for (int s = 0; s < 2; s++) {
        ep *e = eps[s];
        ep_setup(e, &f, s ? "b" : "a", (uint8_t)(s + 1));
        e->cfg.max_packet_payload = payload;
        ep_add_channel(e, 0x40, 1, MP_N, 2 * MiB);
        e->user = x;
        e->on_started = mp_started;
        e->on_msg = mp_msg;
    }
    pair_connect(&f, &x->a, &x->b);
    fixture_run(&f);
    assert_false(x->bad);
    assert_int_equal(x->got[0], MP_N);
    assert_int_equal(x->got[1], MP_N);
    assert_false(x->a.errored || x->b.errored);
    fixture_close(&f);
    ep_destroy(&x->a);
    ep_destroy(&x->b);
    free(x);
}

/* Payloads past a 62-frame batch (60000 failed every start before) up to
 * TM2_MAX_PACKET_PAYLOAD carry messages of every shape both ways. */
static void largest_payloads_end_to_end(void **state)
{
    (void)state;
    mp_run(60000);
    mp_run(TM2_MAX_PACKET_PAYLOAD);
}

/* ---- an unknown channel from the peer ------------------------------------------------------------- */

typedef struct unknown {
    ep a, b;
} unknown;

static void unknown_b_started(ep *e)
{
    tm2__msg *m = tm2__msg_new("who?", 4);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x77, m), 0);
    tm2__msg_unref(m);
}

static void unknown_err(ep *e)
{
    unknown *u = e->user;
    if (u->a.errored && u->b.errored)
        close_listener(e->f);
}

static void unknown_channel_closes(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    unknown *u = calloc(1, sizeof *u);
    assert_non_null(u);
    ep_setup(&u->a, &f, "a", 1);
    ep_setup(&u->b, &f, "b", 2);
    ep_add_channel(&u->a, 0x20, 1, 1, 0);
    ep_add_channel(&u->b, 0x20, 1, 1, 0);
    ep_add_channel(&u->b, 0x77, 1, 1, 0);
    u->a.user = u->b.user = u;
    u->a.on_err = u->b.on_err = unknown_err;
    u->b.on_started = unknown_b_started;
    pair_connect(&f, &u->a, &u->b);
    fixture_run(&f);
    assert_int_equal(u->a.err, TM2_ECHANNEL);
    assert_non_null(strstr(u->a.reason, "0x77"));
    /* b sees a leave. */
    assert_true(u->b.err == TM2_ECLOSED || u->b.err == TM2_EIO);
    assert_true(u->a.closed && u->b.closed);
    fixture_close(&f);
    ep_destroy(&u->a);
    ep_destroy(&u->b);
    free(u);
}

/* ---- receive rate: reads pause and resume ---------------------------------------------------------- */

#define RR_RATE 1000000u
#define RR_MSG 10000u
#define RR_COUNT 60u

typedef struct rrate {
    ep a, b;
    uint32_t sent, got;
    bool saw_pause, bad;
    uint64_t t_first, t_last;
} rrate;

static void rr_fill(ep *e)
{
    rrate *r = e->user;
    while (r->sent < RR_COUNT) {
        tm2__msg *m = gen_msg(0x20, r->sent, RR_MSG);
        int x = tm2__mcs_try_send(&e->c, 0x20, m);
        tm2__msg_unref(m);
        if (x == TM2_EFULL)
            return;
        assert_int_equal(x, 0);
        r->sent++;
    }
}

static void rr_room(ep *e, uint8_t ch)
{
    assert_int_equal(ch, 0x20);
    rr_fill(e);
}

static int rr_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    rrate *r = e->user;
    assert_int_equal(ch, 0x20);
    assert_int_equal(n, RR_MSG);
    if (!gen_check(0x20, r->got, d, n))
        r->bad = true;
    if (r->got++ == 0)
        r->t_first = tv_now_ms();
    if (r->got == RR_COUNT) {
        r->t_last = tv_now_ms();
        pair_close(&r->a, &r->b);
    }
    return 0;
}

/* Polled: the glue stopped reading for the rate between two reads. */
static void rr_poll(uv_timer_t *t)
{
    fixture *f = t->data;
    rrate *r = f->user;
    if (r->b.started && r->b.c.rpaused)
        r->saw_pause = true;
}

static void recv_rate_pauses_reading(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    rrate *r = calloc(1, sizeof *r);
    assert_non_null(r);
    f.user = r;
    uv_timer_start(&f.poll, rr_poll, 5, 5);
    ep_setup(&r->a, &f, "a", 1);
    ep_setup(&r->b, &f, "b", 2);
    r->b.cfg.recv_rate = RR_RATE;
    ep_add_channel(&r->a, 0x20, 1, 8, 0);
    ep_add_channel(&r->b, 0x20, 1, 8, 0);
    r->a.user = r->b.user = r;
    r->a.on_started = rr_fill;
    r->a.on_room = rr_room;
    r->b.on_msg = rr_msg;
    pair_connect(&f, &r->a, &r->b);
    fixture_run(&f);
    assert_int_equal(r->got, RR_COUNT);
    assert_false(r->bad);
    assert_true(r->saw_pause);
    /* 600 kB at 1 MB/s: about half a second (the first window is free). */
    uint64_t took = r->t_last - r->t_first;
    assert_true(took >= 350);
    assert_true(took < 5000);
    assert_false(r->a.errored || r->b.errored);
    fixture_close(&f);
    ep_destroy(&r->a);
    ep_destroy(&r->b);
    free(r);
}

/* ---- plaintext read before the start is handed over --------------------------------------------------- */

typedef struct handover {
    ep a, b;
    int got[2];
    bool bad;
} handover;

static void ho_started(ep *e)
{
    tm2__msg *m = tm2__msg_new("late", 4);
    assert_int_equal(tm2__mcs_try_send(&e->c, HELLO_CH, m), 0);
    tm2__msg_unref(m);
}

static int ho_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    handover *h = e->user;
    int s = e == &h->a ? 0 : 1;
    assert_int_equal(ch, HELLO_CH);
    const char *want = h->got[s]++ == 0 ? "early" : "late";
    if (n != strlen(want) || memcmp(d, want, n) != 0)
        h->bad = true;
    if (h->got[0] == 2 && h->got[1] == 2)
        pair_close(&h->a, &h->b);
    return 0;
}

static void preread_bytes_handed_over(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    handover *h = calloc(1, sizeof *h);
    assert_non_null(h);
    ep *eps[2] = {&h->a, &h->b};
    for (int s = 0; s < 2; s++) {
        ep_setup(eps[s], &f, s ? "b" : "a", (uint8_t)(s + 1));
        ep_add_channel(eps[s], HELLO_CH, 1, 2, 0);
        eps[s]->hello = true;
        eps[s]->user = h;
        eps[s]->on_started = ho_started;
        eps[s]->on_msg = ho_msg;
    }
    pair_connect(&f, &h->a, &h->b);
    fixture_run(&f);
    assert_int_equal(h->got[0], 2);
    assert_int_equal(h->got[1], 2);
    assert_false(h->bad);
    /* The packet really arrived with the greeting. */
    assert_true(h->a.pre_len > 0);
    assert_true(h->b.pre_len > 0);
    fixture_close(&f);
    ep_destroy(&h->a);
    ep_destroy(&h->b);
    free(h);
}

/* ---- senders on other threads ------------------------------------------------------------------- */

#define TH_N 4
#define TH_MSGS 3000u

typedef struct threads threads;

typedef struct sender {
    threads *t;
    uv_thread_t th;
    int idx;
    uint8_t ch;
    uint32_t sent;
    int efull;          /* try_send reported a full queue */
    int bad_rc;         /* any other unexpected result */
    int last_rc;
    uint64_t t_return;
} sender;

struct threads {
    ep a, b;
    sender s[TH_N];
    uint32_t next[TH_N];
    uint32_t got;
    bool bad;
    bool spawned;
    /* close-wakes-waiters */
    uint64_t t_close;
    uv_thread_t probe;
    bool probe_spawned;
    atomic_bool probe_done;
    int probe_rc;
    uint64_t probe_ms;
};

static size_t th_len(uint32_t i) { return 5 + (i % 13) * 97; }

static void sender_main(void *arg)
{
    sender *s = arg;
    ep *a = &s->t->a;
    for (uint32_t i = 0; i < TH_MSGS; i++) {
        size_t len = th_len(i);
        tm2__msg *m = gen_msg(s->ch, i, len);
        m->data[0] = (uint8_t)s->idx;
        m->data[1] = (uint8_t)(i >> 16);
        m->data[2] = (uint8_t)(i >> 8);
        m->data[3] = (uint8_t)i;
        int r;
        if (i % 2) {
            r = tm2__mcs_try_send(&a->c, s->ch, m);
            if (r == TM2_EFULL) {
                s->efull++;
                r = tm2__mcs_send(&a->c, s->ch, m, 20000);
            }
        } else {
            r = tm2__mcs_send(&a->c, s->ch, m, 20000);
        }
        tm2__msg_unref(m);
        if (r != 0) {
            s->bad_rc++;
            s->last_rc = r;
            break;
        }
        s->sent++;
    }
}

static void th_started(ep *e)
{
    threads *t = e->user;
    if (t->spawned)
        return;
    t->spawned = true;
    for (int i = 0; i < TH_N; i++) {
        t->s[i].t = t;
        t->s[i].idx = i;
        t->s[i].ch = (uint8_t)(0x30 + i % 2);
        assert_int_equal(uv_thread_create(&t->s[i].th, sender_main, &t->s[i]), 0);
    }
}

static int th_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    threads *t = e->user;
    assert_true(n >= 5);
    int idx = d[0];
    assert_true(idx < TH_N);
    assert_int_equal(ch, 0x30 + idx % 2);
    uint32_t i = (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    /* Each thread's messages arrive in its order. */
    bool ok = i == t->next[idx] && n == th_len(i);
    for (size_t j = 4; ok && j < n; j++)
        ok = d[j] == gen_byte(ch, i, j);
    if (!ok)
        t->bad = true;
    t->next[idx] = i + 1;
    if (++t->got == TH_N * TH_MSGS)
        pair_close(&t->a, &t->b);
    return 0;
}

static void threads_setup(fixture *f, threads *t, size_t cap)
{
    ep_setup(&t->a, f, "a", 1);
    ep_setup(&t->b, f, "b", 2);
    for (int c = 0; c < 2; c++) {
        ep_add_channel(&t->a, (uint8_t)(0x30 + c), 1, cap, 0);
        ep_add_channel(&t->b, (uint8_t)(0x30 + c), 1, cap, 0);
    }
    t->a.user = t->b.user = t;
}

static void four_threads_send(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 120000);
    threads *t = calloc(1, sizeof *t);
    assert_non_null(t);
    threads_setup(&f, t, 2);
    t->a.on_started = th_started;
    t->b.on_msg = th_msg;
    pair_connect(&f, &t->a, &t->b);
    fixture_run(&f);
    for (int i = 0; i < TH_N; i++)
        assert_int_equal(uv_thread_join(&t->s[i].th), 0);
    int efull = 0;
    for (int i = 0; i < TH_N; i++) {
        assert_int_equal(t->s[i].bad_rc, 0);
        assert_int_equal(t->s[i].sent, TH_MSGS);
        assert_int_equal(t->next[i], TH_MSGS);
        efull += t->s[i].efull;
    }
    assert_false(t->bad);
    assert_int_equal(t->got, TH_N * TH_MSGS);
    /* Queues of two slots against four threads: try_send saw them full. */
    assert_true(efull > 0);
    assert_false(t->a.errored || t->b.errored);
    fixture_close(&f);
    ep_destroy(&t->a);
    ep_destroy(&t->b);
    free(t);
}

/* ---- close while senders wait ------------------------------------------------------------------- */

static void waiter_main(void *arg)
{
    sender *s = arg;
    ep *a = &s->t->a;
    tm2__msg *m = gen_msg(0x30, 0, 100);
    for (;;) {
        int r = tm2__mcs_send(&a->c, 0x30, m, 60000);
        if (r) {
            s->last_rc = r;
            break;
        }
        s->sent++;
    }
    s->t_return = tv_now_ms();
    tm2__msg_unref(m);
}

static void cw_started(ep *e)
{
    threads *t = e->user;
    /* A big message crawls out at 2 kB/s; one more fills the queue. */
    tm2__msg *m = gen_msg(0x30, 0, 64 * 1024);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x30, m), 0);
    /* On the loop thread send never waits. */
    assert_int_equal(tm2__mcs_send(&e->c, 0x30, m, 60000), TM2_EFULL);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x30, m), TM2_EFULL);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x55, m), TM2_ECHANNEL);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x30, NULL), TM2_EINVAL);
    tm2__msg_unref(m);
    for (int i = 0; i < TH_N; i++) {
        t->s[i].t = t;
        t->s[i].idx = i;
        assert_int_equal(uv_thread_create(&t->s[i].th, waiter_main, &t->s[i]), 0);
    }
    t->spawned = true;
}

/* A fifth sender with a short timeout: still full at its deadline. */
static void probe_main(void *arg)
{
    threads *t = arg;
    tm2__msg *m = gen_msg(0x30, 0, 100);
    uint64_t t0 = tv_now_ms();
    t->probe_rc = tm2__mcs_send(&t->a.c, 0x30, m, 50);
    t->probe_ms = tv_now_ms() - t0;
    tm2__msg_unref(m);
    atomic_store(&t->probe_done, true);
}

/* Channel 0x30's queued messages plus the one being sent. */
static size_t cw_queue_size(ep *e)
{
    tm2_mconn_status st;
    assert_int_equal(tm2__mcs_status(&e->c, &st), 0);
    for (size_t i = 0; i < st.n_channels; i++)
        if (st.channels[i].id == 0x30)
            return st.channels[i].send_queue_size;
    fail();
    return 0;
}

/* Polled: once every thread is inside a wait and the slot the big message
 * freed when it started is taken (no other frees for half a minute), a
 * timed send runs out, then the close. */
static void cw_poll(uv_timer_t *tm)
{
    fixture *f = tm->data;
    threads *t = f->user;
    if (!t->spawned)
        return;
    if (!t->probe_spawned) {
        uv_mutex_lock(&t->a.c.lock);
        unsigned w = t->a.c.waiters;
        uv_mutex_unlock(&t->a.c.lock);
        if (w < TH_N || cw_queue_size(&t->a) < 2)
            return;
        t->probe_spawned = true;
        assert_int_equal(uv_thread_create(&t->probe, probe_main, t), 0);
        return;
    }
    if (!atomic_load(&t->probe_done))
        return;
    uv_timer_stop(tm);
    t->t_close = tv_now_ms();
    pair_close(&t->a, &t->b);
}

static void close_wakes_waiting_senders(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 60000);
    threads *t = calloc(1, sizeof *t);
    assert_non_null(t);
    f.user = t;
    threads_setup(&f, t, 1);
    t->a.cfg.send_rate = 2000;
    t->a.on_started = cw_started;
    uv_timer_start(&f.poll, cw_poll, 2, 2);
    pair_connect(&f, &t->a, &t->b);
    fixture_run(&f);
    for (int i = 0; i < TH_N; i++)
        assert_int_equal(uv_thread_join(&t->s[i].th), 0);
    assert_int_equal(uv_thread_join(&t->probe), 0);
    assert_int_equal(t->probe_rc, TM2_EFULL);
    assert_true(t->probe_ms >= 45);
    assert_true(t->probe_ms < 5000);
    assert_true(t->t_close > 0);
    int sent = 0;
    for (int i = 0; i < TH_N; i++) {
        assert_int_equal(t->s[i].last_rc, TM2_ECLOSED);
        /* Released by the close, far before their 60 s timeout. */
        assert_true(t->s[i].t_return - t->t_close < 5000);
        sent += (int)t->s[i].sent;
    }
    /* The queue gained one slot when the big message started: one thread
     * took it, the rest had to wait. */
    assert_int_equal(sent, 1);
    assert_false(t->a.errored);
    fixture_close(&f);
    ep_destroy(&t->a);
    ep_destroy(&t->b);
    free(t);
}

/* ---- the send budget ---------------------------------------------------------------------------- */

/* b stops reading, a's buffers are small: a's budget-sized message cannot
 * finish, so its bytes stay admitted until b reads again. */
#define SB_BUDGET (4u * MiB)
#define SB_SMALL 1000u

typedef struct bsend {
    ep a, b;
    int phase;
    uv_thread_t th[2];
    bool th_spawned[2];
    atomic_int rc[2];
    atomic_bool done[2];
    uint64_t t_call[2], t_ret[2];
    uint32_t timeout[2];
    int try_rc, big_rc;
    uint64_t big_ms;
    uint64_t t_resume, t_close;
    int got;
    size_t got_len[2];
    size_t buffered_after;
    bool close_mode;   /* close a while the waiter waits instead of resuming b */
} bsend;

typedef struct bs_arg {
    bsend *x;
    int i;
} bs_arg;

static bs_arg bs_args[2];

static void bs_waiter(void *arg)
{
    bs_arg *w = arg;
    bsend *x = w->x;
    tm2__msg *m = gen_msg(0x30, (uint32_t)w->i + 1, SB_SMALL);
    x->t_call[w->i] = tv_now_ms();
    int r = tm2__mcs_send(&x->a.c, 0x30, m, x->timeout[w->i]);
    x->t_ret[w->i] = tv_now_ms();
    tm2__msg_unref(m);
    atomic_store(&x->rc[w->i], r);
    atomic_store(&x->done[w->i], true);
}

static void bs_spawn(bsend *x, int i, uint32_t timeout_ms)
{
    x->timeout[i] = timeout_ms;
    bs_args[i] = (bs_arg){x, i};
    assert_int_equal(uv_thread_create(&x->th[i], bs_waiter, &bs_args[i]), 0);
    x->th_spawned[i] = true;
}

static void bs_big(void *arg)
{
    bsend *x = arg;
    /* Larger than the whole budget: refused at once, however long the
     * timeout. */
    tm2__msg *m = tm2__msg_alloc(SB_BUDGET + 1);
    assert_non_null(m);
    uint64_t t0 = tv_now_ms();
    x->big_rc = tm2__mcs_send(&x->a.c, 0x30, m, 60000);
    x->big_ms = tv_now_ms() - t0;
    tm2__msg_unref(m);
}

static size_t bs_buffered(ep *e, unsigned *waiters)
{
    uv_mutex_lock(&e->c.lock);
    size_t n = e->c.core ? tm2__mconn_send_buffered(e->c.core) : 0;
    if (waiters)
        *waiters = e->c.waiters;
    uv_mutex_unlock(&e->c.lock);
    return n;
}

/* b stops reading. Its receive buffer keeps its size: one set small would
 * clamp the window for good, and the transfer after the resume would crawl
 * at a few kB per delayed ACK. */
static void bs_b_started(ep *e)
{
    assert_int_equal(tm2__sc_stream_pause(tm2__mcs_stream(&e->c), true), 0);
}

static void bs_send_buffer(ep *e, int size)
{
    uv_handle_t *h = (uv_handle_t *)tm2__sc_stream_uv_tcp(tm2__mcs_stream(&e->c));
    assert_int_equal(uv_send_buffer_size(h, &size), 0);
}

static void bs_a_started(ep *e)
{
    bsend *x = e->user;
    bs_send_buffer(e, STALL_BUF);
    tm2__msg *m = gen_msg(0x30, 0, SB_BUDGET);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x30, m), 0);   /* exactly the budget */
    tm2__msg_unref(m);
    m = gen_msg(0x30, 9, 1);
    x->try_rc = tm2__mcs_try_send(&e->c, 0x30, m);            /* one byte over: at once */
    tm2__msg_unref(m);
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, bs_big, x), 0);
    assert_int_equal(uv_thread_join(&th), 0);
    x->phase = 1;
}

static int bs_b_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    bsend *x = e->user;
    assert_int_equal(ch, 0x30);
    assert_true(x->got < 2);
    x->got_len[x->got] = n;
    if (!gen_check(0x30, x->got ? 2 : 0, d, n))
        x->got_len[x->got] = 0;
    x->got++;
    return 0;
}

static void bs_poll(uv_timer_t *t)
{
    fixture *f = t->data;
    bsend *x = f->user;
    unsigned waiters;
    switch (x->phase) {
    case 1:
        /* A waiting send with a short timeout gives up while b is stopped. */
        bs_spawn(x, 0, 200);
        x->phase = 2;
        return;
    case 2:
        if (!atomic_load(&x->done[0]))
            return;
        /* It gave back nothing it did not hold. */
        assert_int_equal(bs_buffered(&x->a, NULL), SB_BUDGET);
        bs_spawn(x, 1, 60000);
        x->phase = 3;
        return;
    case 3:
        bs_buffered(&x->a, &waiters);
        if (waiters < 1 || tv_now_ms() < x->t_call[1] + 100)
            return;
        assert_false(atomic_load(&x->done[1]));
        if (x->close_mode) {
            x->t_close = tv_now_ms();
            pair_close(&x->a, &x->b);
            uv_timer_stop(t);
            return;
        }
        /* b reads again: the big message finishes and frees the budget. */
        x->t_resume = tv_now_ms();
        bs_send_buffer(&x->a, 1 * MiB);
        assert_int_equal(tm2__sc_stream_pause(tm2__mcs_stream(&x->b.c), false), 0);
        x->phase = 4;
        return;
    case 4:
        if (x->got < 2 || !atomic_load(&x->done[1]))
            return;
        x->buffered_after = bs_buffered(&x->a, NULL);
        uv_timer_stop(t);
        pair_close(&x->a, &x->b);
        return;
    default:
        return;
    }
}

static void bs_run(bsend *x)
{
    fixture f;
    fixture_init(&f, 60000);
    f.user = x;
    ep_setup(&x->a, &f, "a", 1);
    ep_setup(&x->b, &f, "b", 2);
    x->a.cfg.max_send_buffer_bytes = SB_BUDGET;
    x->a.scfg.max_queued = STALL_QUEUED;
    ep_add_channel(&x->a, 0x30, 1, 100, 0);
    ep_add_channel(&x->b, 0x30, 1, 100, 0);
    x->a.user = x->b.user = x;
    x->a.on_started = bs_a_started;
    x->b.on_started = bs_b_started;
    x->b.on_msg = bs_b_msg;
    uv_timer_start(&f.poll, bs_poll, 2, 2);
    pair_connect(&f, &x->a, &x->b);
    fixture_run(&f);
    for (int i = 0; i < 2; i++)
        if (x->th_spawned[i])
            assert_int_equal(uv_thread_join(&x->th[i]), 0);
    assert_int_equal(x->try_rc, TM2_EFULL);
    assert_int_equal(x->big_rc, TM2_ETOOBIG);
    assert_true(x->big_ms < 1000);
    /* The short wait timed out while the budget stayed taken. */
    assert_int_equal(atomic_load(&x->rc[0]), TM2_EFULL);
    assert_true(x->t_ret[0] - x->t_call[0] >= 195);
    assert_true(x->t_ret[0] - x->t_call[0] < 5000);
    assert_false(x->a.errored);
    fixture_close(&f);
}

static void send_budget_waits_for_the_peer(void **state)
{
    (void)state;
    bsend *x = calloc(1, sizeof *x);
    assert_non_null(x);
    bs_run(x);
    /* The long wait ended when b read again, with its message sent behind
     * the big one. */
    assert_int_equal(atomic_load(&x->rc[1]), 0);
    assert_true(x->t_ret[1] >= x->t_resume);
    assert_int_equal(x->got, 2);
    assert_int_equal(x->got_len[0], SB_BUDGET);
    assert_int_equal(x->got_len[1], SB_SMALL);
    assert_int_equal(x->buffered_after, 0);
    assert_false(x->b.errored);
    ep_destroy(&x->a);
    ep_destroy(&x->b);
    free(x);
}

/* The reference's TestSendGivesUpWhenConnectionStops, waiting for budget. */
static void send_budget_waiter_released_by_close(void **state)
{
    (void)state;
    bsend *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->close_mode = true;
    bs_run(x);
    assert_int_equal(atomic_load(&x->rc[1]), TM2_ECLOSED);
    assert_true(x->t_ret[1] - x->t_close < 5000);
    assert_int_equal(x->got, 0);
    ep_destroy(&x->a);
    ep_destroy(&x->b);
    free(x);
}

/* ---- closing from inside a callback, states ------------------------------------------------------ */

typedef struct cic {
    ep a, b;
    int got;
} cic;

static void cic_started(ep *e)
{
    for (int i = 0; i < 8; i++) {
        tm2__msg *m = gen_msg(0x20, (uint32_t)i, 10);
        assert_int_equal(tm2__mcs_try_send(&e->c, 0x20, m), 0);
        tm2__msg_unref(m);
    }
}

static int cic_msg(ep *e, uint8_t ch, const uint8_t *d, size_t n)
{
    (void)ch;
    (void)d;
    (void)n;
    cic *x = e->user;
    x->got++;
    /* A reply puts the connection on the loop's list; closing inside the
     * handler takes it off again. No further message is delivered, even
     * those already read, and no error is reported. */
    tm2__msg *m = tm2__msg_new("bye", 3);
    assert_int_equal(tm2__mcs_try_send(&e->c, 0x20, m), 0);
    tm2__msg_unref(m);
    tm2__mcs_close(&e->c);
    tm2__mcs_close(&e->c);
    tm2_mconn_status st;
    assert_int_equal(tm2__mcs_status(&e->c, &st), TM2_ECLOSED);
    return 0;
}

static void cic_err(ep *e)
{
    (void)e;
}

static void cic_closed_poll(uv_timer_t *t)
{
    fixture *f = t->data;
    cic *x = f->user;
    if (x->b.closed) {
        tm2__mcs_close(&x->a.c);
        close_listener(f);
    }
}

static void close_inside_receive(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    cic *x = calloc(1, sizeof *x);
    assert_non_null(x);
    f.user = x;
    ep_setup(&x->a, &f, "a", 1);
    ep_setup(&x->b, &f, "b", 2);
    ep_add_channel(&x->a, 0x20, 1, 8, 0);
    ep_add_channel(&x->b, 0x20, 1, 8, 0);
    x->a.user = x->b.user = x;
    x->a.on_started = cic_started;
    x->b.on_msg = cic_msg;
    x->a.on_err = cic_err;
    uv_timer_start(&f.poll, cic_closed_poll, 5, 5);
    pair_connect(&f, &x->a, &x->b);
    fixture_run(&f);
    assert_int_equal(x->got, 1);
    assert_false(x->b.errored);
    assert_true(x->b.closed);
    fixture_close(&f);
    ep_destroy(&x->a);
    ep_destroy(&x->b);
    free(x);
}

/* ---- close from another thread ------------------------------------------------------------------ */

typedef struct xclose {
    ep a, b;
    uv_thread_t th;
    int rc_after;
} xclose;

static void xclose_main(void *arg)
{
    xclose *x = arg;
    tm2__mcs_close(&x->a.c);
    tm2__msg *m = tm2__msg_new("x", 1);
    x->rc_after = tm2__mcs_try_send(&x->a.c, 0x20, m);
    tm2__msg_unref(m);
}

static void xclose_started(ep *e)
{
    xclose *x = e->user;
    assert_int_equal(uv_thread_create(&x->th, xclose_main, x), 0);
}

static void xclose_b_err(ep *e) { close_listener(e->f); }

static void close_from_other_thread(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    xclose *x = calloc(1, sizeof *x);
    assert_non_null(x);
    ep_setup(&x->a, &f, "a", 1);
    ep_setup(&x->b, &f, "b", 2);
    ep_add_channel(&x->a, 0x20, 1, 1, 0);
    ep_add_channel(&x->b, 0x20, 1, 1, 0);
    x->a.user = x->b.user = x;
    x->a.on_started = xclose_started;
    x->b.on_err = xclose_b_err;
    pair_connect(&f, &x->a, &x->b);
    fixture_run(&f);
    assert_int_equal(uv_thread_join(&x->th), 0);
    assert_int_equal(x->rc_after, TM2_ECLOSED);
    assert_true(x->a.closed);
    assert_false(x->a.errored);   /* a requested close is no error */
    assert_true(x->b.errored);
    assert_true(x->b.err == TM2_ECLOSED || x->b.err == TM2_EIO);
    fixture_close(&f);
    ep_destroy(&x->a);
    ep_destroy(&x->b);
    free(x);
}

/* Calls before the start and a close before the handshake. */
static void states_before_start(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 10000);
    ep e;
    ep_setup(&e, &f, "e", 1);
    ep_add_channel(&e, 0x20, 1, 1, 0);
    ep_init(&e);
    tm2__msg *m = tm2__msg_new("x", 1);
    assert_int_equal(tm2__mcs_try_send(&e.c, 0x20, m), TM2_ESTATE);
    tm2_mconn_status st;
    assert_int_equal(tm2__mcs_status(&e.c, &st), TM2_ESTATE);
    /* The stream is not open yet. */
    assert_int_equal(tm2__mcs_start(&e.c, &e.cfg, e.descs, e.n_descs, NULL, 0), TM2_ESTATE);
    tm2__mcs_close(&e.c);
    tm2__mcs_close(&e.c);
    assert_int_equal(tm2__mcs_try_send(&e.c, 0x20, m), TM2_ECLOSED);
    assert_int_equal(tm2__mcs_start(&e.c, &e.cfg, e.descs, e.n_descs, NULL, 0), TM2_ESTATE);
    tm2__msg_unref(m);
    close_listener(&f);
    fixture_run(&f);
    assert_true(e.closed);
    assert_false(e.errored);
    fixture_close(&f);
    ep_destroy(&e);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(three_channels_all_sizes),
        cmocka_unit_test(ten_mib_message),
        cmocka_unit_test(idle_three_intervals),
        cmocka_unit_test(idle_counts_pings_and_pongs),
        cmocka_unit_test(pong_timeout_silent_peer),
        cmocka_unit_test(pong_timeout_peer_stops_reading),
        cmocka_unit_test(pong_timeout_while_writes_stall),
        cmocka_unit_test(unknown_channel_closes),
        cmocka_unit_test(recv_rate_pauses_reading),
        cmocka_unit_test(preread_bytes_handed_over),
        cmocka_unit_test(four_threads_send),
        cmocka_unit_test(close_wakes_waiting_senders),
        cmocka_unit_test(close_inside_receive),
        cmocka_unit_test(close_from_other_thread),
        cmocka_unit_test(states_before_start),
        cmocka_unit_test(send_budget_waits_for_the_peer),
        cmocka_unit_test(send_budget_waiter_released_by_close),
        cmocka_unit_test(budget_refusals_bring_send_room),
        cmocka_unit_test(recv_budget_over_the_wire),
        cmocka_unit_test(assembly_timeout_despite_dribble),
        cmocka_unit_test(assembly_deadline_not_charged_for_stall),
        cmocka_unit_test(pong_timeout_not_charged_for_stall),
        cmocka_unit_test(largest_payloads_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
