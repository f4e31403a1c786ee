/* The secret connection over real loopback TCP with libuv: bulk transfer
 * both ways, handshake deadlines, peers that stop or leave mid-handshake,
 * back-pressure, pausing, the per-wake-up read bound and input that arrives
 * while a handshake job is out. Every wait is on a
 * loop event with a watchdog timer; nothing sleeps. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <uv.h>

#include "net/engine_uv.h"
#include "net/sc_stream.h"
#include "net/sc_stream_uv.h"
#include "net/workpool.h"
#include "tv.h"

#define MiB (1024u * 1024u)

/* ---- fixture ------------------------------------------------------------------ */

typedef struct endpoint endpoint;

typedef struct fixture {
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__sc_loop lp;
    uv_tcp_t listener;
    uv_timer_t watchdog;
    int port;
    bool timed_out;
    void (*on_accept)(struct fixture *f, uv_stream_t *server);
    void *user;
} fixture;

struct endpoint {
    fixture *f;
    tm2__sc_stream s;
    tm2_node_key key;
    tm2_id peer_id;          /* expected */
    int hs_err;
    bool hs_done;
    int err;
    bool errored;
    bool closed;
    uint64_t t_start, t_hs;
    /* sending */
    size_t total, sent;
    uint64_t rng;
    const uint8_t *pool;
    crypto_hash_sha256_state tx_hash;
    bool full_seen;
    size_t max_queued_seen;
    /* receiving */
    size_t received;
    crypto_hash_sha256_state rx_hash;
    size_t reads;
};

static void watchdog_cb(uv_timer_t *t)
{
    fixture *f = t->data;
    f->timed_out = true;
    uv_stop(&f->loop);
}

static void on_connection(uv_stream_t *server, int status)
{
    fixture *f = server->data;
    assert_int_equal(status, 0);
    f->on_accept(f, server);
}

static void fixture_init(fixture *f, uint64_t watchdog_ms)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(tm2__uv_engine_init(&f->ue, &f->loop), 0);
    assert_int_equal(tm2__sc_loop_init(&f->lp, &f->ue.e), 0);
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
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Runs until nothing is left; fails if the watchdog fired. */
static void fixture_run(fixture *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_false(f->timed_out);
}

static void fixture_close(fixture *f)
{
    if (!uv_is_closing((uv_handle_t *)&f->listener))
        uv_close((uv_handle_t *)&f->listener, NULL);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    tm2__sc_loop_close(&f->lp);
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

static endpoint *EP(tm2__sc_stream *s) { return s->data; }


/* ---- bulk transfer ------------------------------------------------------------- */

static void maybe_finish(fixture *f);

static void pump(endpoint *e)
{
    while (e->sent < e->total) {
        /* Log-uniform sizes from 1 byte to 1 MiB: many small writes and some
         * large ones. */
        unsigned bits = (unsigned)(tv_xorshift(&e->rng) % 21);
        size_t k = 1 + (size_t)(tv_xorshift(&e->rng) % ((size_t)1 << bits));
        if (k > MiB)
            k = MiB;
        if (k > e->total - e->sent)
            k = e->total - e->sent;
        const uint8_t *p = e->pool + tv_xorshift(&e->rng) % MiB;
        int r = tm2__sc_stream_write(&e->s, p, k);
        if (r == TM2_EFULL) {
            e->full_seen = true;
            return;
        }
        assert_int_equal(r, 0);
        crypto_hash_sha256_update(&e->tx_hash, p, k);
        e->sent += k;
        size_t q = tm2__sc_stream_queued(&e->s);
        if (q > e->max_queued_seen)
            e->max_queued_seen = q;
    }
}

static void bulk_on_handshake(tm2__sc_stream *s, int err)
{
    endpoint *e = EP(s);
    e->hs_done = true;
    e->hs_err = err;
    assert_int_equal(err, 0);
    assert_string_equal(tm2__sc_stream_remote_id(s)->s, e->peer_id.s);
    pump(e);
}

static void bulk_on_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    endpoint *e = EP(s);
    assert_true(len > 0);
    crypto_hash_sha256_update(&e->rx_hash, data, len);
    e->received += len;
    e->reads++;
    maybe_finish(e->f);
}

static void bulk_on_writable(tm2__sc_stream *s)
{
    endpoint *e = EP(s);
    assert_true(tm2__sc_stream_queued(s) <= s->cfg.max_queued / 2);
    pump(e);
}

static void on_error_record(tm2__sc_stream *s, int err)
{
    endpoint *e = EP(s);
    e->errored = true;
    e->err = err;
    tm2__sc_stream_close(s);
}

static void on_close_record(tm2__sc_stream *s) { EP(s)->closed = true; }

static const tm2__sc_stream_cbs bulk_cbs = {
    .on_handshake = bulk_on_handshake,
    .on_read = bulk_on_read,
    .on_error = on_error_record,
    .on_writable = bulk_on_writable,
    .on_close = on_close_record,
};

typedef struct bulk {
    endpoint cli, srv;
    uv_connect_t creq;
} bulk;

static void maybe_finish(fixture *f)
{
    bulk *b = f->user;
    if (b->cli.received == b->srv.total && b->srv.received == b->cli.total &&
        b->cli.sent == b->cli.total && b->srv.sent == b->srv.total) {
        tm2__sc_stream_close(&b->cli.s);
        tm2__sc_stream_close(&b->srv.s);
        uv_close((uv_handle_t *)&f->listener, NULL);
    }
}

static void endpoint_setup(endpoint *e, fixture *f, uint8_t seed_byte, uint8_t peer_seed_byte,
                           const uint8_t *pool, size_t total, const tm2__sc_stream_config *cfg,
                           const tm2__sc_stream_cbs *cbs)
{
    uint8_t seed[32];
    memset(e, 0, sizeof *e);
    e->f = f;
    memset(seed, seed_byte, 32);
    tm2_node_key_from_seed(&e->key, seed);
    tm2_node_key peer;
    memset(seed, peer_seed_byte, 32);
    tm2_node_key_from_seed(&peer, seed);
    tm2_node_key_id(&peer, &e->peer_id);
    e->pool = pool;
    e->total = total;
    randombytes_buf(&e->rng, sizeof e->rng);
    e->rng |= 1;
    crypto_hash_sha256_init(&e->tx_hash);
    crypto_hash_sha256_init(&e->rx_hash);
    tm2__sc_stream_init(&e->s, &f->lp, cfg, cbs);
    e->s.data = e;
    e->t_start = tv_now_ms();
}

static void bulk_accept(fixture *f, uv_stream_t *server)
{
    bulk *b = f->user;
    assert_int_equal(uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(&b->srv.s)), 0);
    assert_int_equal(tm2__sc_stream_start(&b->srv.s, &b->srv.key, NULL), 0);
}

static void bulk_connected(uv_connect_t *req, int status)
{
    bulk *b = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(tm2__sc_stream_start(&b->cli.s, &b->cli.key, NULL), 0);
}

static void bulk_64mib_both_ways(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 200000);
    bulk *b = calloc(1, sizeof *b);
    uint8_t *pool = malloc(2 * MiB);
    assert_non_null(b);
    assert_non_null(pool);
    randombytes_buf(pool, 2 * MiB);
    f.user = b;
    f.on_accept = bulk_accept;
    endpoint_setup(&b->cli, &f, 1, 2, pool, 64 * MiB, NULL, &bulk_cbs);
    endpoint_setup(&b->srv, &f, 2, 1, pool, 64 * MiB, NULL, &bulk_cbs);
    b->creq.data = b;
    connect_to(&f, tm2__sc_stream_uv_tcp(&b->cli.s), &b->creq, bulk_connected);
    fixture_run(&f);

    for (int i = 0; i < 2; i++) {
        endpoint *e = i ? &b->srv : &b->cli, *o = i ? &b->cli : &b->srv;
        assert_true(e->hs_done);
        assert_false(e->errored);
        assert_true(e->closed);
        assert_int_equal(e->sent, 64 * MiB);
        assert_int_equal(o->received, 64 * MiB);
        uint8_t h1[32], h2[32];
        crypto_hash_sha256_final(&e->tx_hash, h1);
        crypto_hash_sha256_final(&o->rx_hash, h2);
        assert_memory_equal(h1, h2, 32);
        /* Back-pressure was exercised and held: a write into a non-empty
         * queue never took it past the bound (one write into an empty
         * queue may exceed it by itself). */
        assert_true(e->full_seen);
        assert_true(e->max_queued_seen <= e->s.cfg.max_queued + tm2__sc_sealed_size(MiB));
    }
    fixture_close(&f);
    free(pool);
    free(b);
}

/* ---- handshake deadline and early close ----------------------------------------- */

typedef struct raw_peer {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t trickle;
    uint8_t msg[64];
    size_t msg_len, sent;
    size_t close_after;       /* close after this many bytes (0 = never) */
    bool one_at_a_time;
    bool eof_seen;
    bool closed;
} raw_peer;

typedef struct hs_case {
    endpoint srv;
    raw_peer peer;
    uint32_t timeout_ms;
} hs_case;

static void raw_closed(uv_handle_t *h)
{
    raw_peer *p = h->data;
    p->closed = true;
}

static void raw_close(raw_peer *p)
{
    if (!uv_is_closing((uv_handle_t *)&p->tcp))
        uv_close((uv_handle_t *)&p->tcp, raw_closed);
    if (!uv_is_closing((uv_handle_t *)&p->trickle))
        uv_close((uv_handle_t *)&p->trickle, NULL);
}

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)h;
    static char b[4096];
    (void)sz;
    *buf = uv_buf_init(b, sizeof b);
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    raw_peer *p = st->data;
    if (n < 0) {
        p->eof_seen = true;
        raw_close(p);
    }
}

static void raw_send_some(raw_peer *p, size_t n)
{
    if (n > p->msg_len - p->sent)
        n = p->msg_len - p->sent;
    if (n == 0 || uv_is_closing((uv_handle_t *)&p->tcp))
        return;
    uv_buf_t b = uv_buf_init((char *)p->msg + p->sent, (unsigned)n);
    /* A few bytes fit any socket buffer: try_write takes them whole, unless
     * the other side is already gone. */
    int r = uv_try_write((uv_stream_t *)&p->tcp, &b, 1);
    if (r < 0) {
        raw_close(p);
        return;
    }
    assert_int_equal(r, (int)n);
    p->sent += n;
    if (p->close_after && p->sent >= p->close_after)
        raw_close(p);
}

static void trickle_cb(uv_timer_t *t)
{
    raw_peer *p = t->data;
    raw_send_some(p, 1);
}

static void raw_connected(uv_connect_t *req, int status)
{
    raw_peer *p = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&p->tcp, raw_alloc, raw_read), 0);
    if (p->one_at_a_time)
        uv_timer_start(&p->trickle, trickle_cb, 0, 20);
    else
        raw_send_some(p, p->msg_len);
}

static void hs_on_handshake(tm2__sc_stream *s, int err)
{
    endpoint *e = EP(s);
    e->hs_done = true;
    e->hs_err = err;
    e->t_hs = tv_now_ms();
    tm2__sc_stream_close(s);
}

static const tm2__sc_stream_cbs hs_cbs = {
    .on_handshake = hs_on_handshake,
    .on_error = on_error_record,
    .on_close = on_close_record,
};

static void hs_accept(fixture *f, uv_stream_t *server)
{
    hs_case *c = f->user;
    assert_int_equal(uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(&c->srv.s)), 0);
    c->srv.t_start = tv_now_ms();
    assert_int_equal(tm2__sc_stream_start(&c->srv.s, &c->srv.key, NULL), 0);
    uv_close((uv_handle_t *)&f->listener, NULL);
}

/* A server stream against a raw client that sends msg as configured. */
static void run_hs_case(hs_case *c, const uint8_t *msg, size_t len)
{
    fixture f;
    fixture_init(&f, 30000);
    f.user = c;
    f.on_accept = hs_accept;
    tm2__sc_stream_config cfg = {.handshake_timeout_ms = c->timeout_ms};
    endpoint_setup(&c->srv, &f, 2, 1, NULL, 0, &cfg, &hs_cbs);
    raw_peer *p = &c->peer;
    memcpy(p->msg, msg, len);
    p->msg_len = len;
    assert_int_equal(uv_tcp_init(&f.loop, &p->tcp), 0);
    uv_timer_init(&f.loop, &p->trickle);
    p->tcp.data = p;
    p->trickle.data = p;
    p->creq.data = p;
    connect_to(&f, &p->tcp, &p->creq, raw_connected);
    fixture_run(&f);
    assert_true(c->srv.hs_done);
    assert_true(c->srv.closed);
    assert_true(p->closed);
    fixture_close(&f);
}

static const uint8_t peer_eph_msg[35] = {
    0x22, 0x0a, 0x20, 0xac, 0x01, 0xb2, 0x20, 0x9e, 0x86, 0x35, 0x4f, 0xb8, 0x53, 0x23, 0x7b, 0x5d, 0xe0,
    0xf4, 0xfa, 0xb1, 0x3c, 0x7f, 0xcb, 0xf4, 0x33, 0xa6, 0x1c, 0x01, 0x93, 0x69, 0x61, 0x7f, 0xec, 0xf1, 0x0b,
};

static void deadline_one_byte_at_a_time(void **state)
{
    (void)state;
    hs_case c;
    memset(&c, 0, sizeof c);
    c.timeout_ms = 300;
    c.peer.one_at_a_time = true;   /* a byte every 20 ms: 35 bytes take 700 ms */
    run_hs_case(&c, peer_eph_msg, sizeof peer_eph_msg);
    assert_int_equal(c.srv.hs_err, TM2_ETIMEDOUT);
    uint64_t took = c.srv.t_hs - c.srv.t_start;
    assert_true(took >= 290);
    assert_true(took < 1500);
    /* The peer was still trickling when it was cut: activity does not
     * extend the deadline. */
    assert_true(c.peer.sent >= 5);
    assert_true(c.peer.sent < sizeof peer_eph_msg);
    assert_true(c.peer.eof_seen);
}

static void deadline_silent_peer(void **state)
{
    (void)state;
    hs_case c;
    memset(&c, 0, sizeof c);
    c.timeout_ms = 250;
    run_hs_case(&c, peer_eph_msg, 0);
    assert_int_equal(c.srv.hs_err, TM2_ETIMEDOUT);
    uint64_t took = c.srv.t_hs - c.srv.t_start;
    assert_true(took >= 240);
    assert_true(took < 1500);
    assert_true(c.peer.eof_seen);
}

static void peer_closes_mid_handshake(void **state)
{
    (void)state;
    /* Inside the key message, and after it (waiting for the auth frame):
     * an error at once, long before the 20 s deadline. */
    static const size_t cut[] = {10, sizeof peer_eph_msg, 1};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        hs_case c;
        memset(&c, 0, sizeof c);
        c.timeout_ms = 20000;
        c.peer.close_after = cut[i];
        run_hs_case(&c, peer_eph_msg, cut[i]);
        /* Orderly close, or a reset when our bytes were still unread on
         * the other side: either way an error, not a wait. */
        assert_true(c.srv.hs_err == TM2_ECLOSED || c.srv.hs_err == TM2_EIO);
        assert_true(c.srv.t_hs - c.srv.t_start < 5000);
    }
}

static void peer_sends_garbage(void **state)
{
    (void)state;
    uint8_t bad[35];
    memcpy(bad, peer_eph_msg, sizeof bad);
    memset(bad + 3, 0, 32);   /* all-zero key: low order */
    hs_case c;
    memset(&c, 0, sizeof c);
    c.timeout_ms = 20000;
    run_hs_case(&c, bad, sizeof bad);
    assert_int_equal(c.srv.hs_err, TM2_ELOWORDER);
    assert_true(c.peer.eof_seen);
}

/* A dialing stream against a listener that accepts and closes at once. */
typedef struct dial_case {
    endpoint cli;
    uv_tcp_t accepted;
    uv_connect_t creq;
} dial_case;

static void dial_accept_and_drop(fixture *f, uv_stream_t *server)
{
    dial_case *d = f->user;
    uv_tcp_init(&f->loop, &d->accepted);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&d->accepted), 0);
    uv_close((uv_handle_t *)&d->accepted, NULL);
    uv_close((uv_handle_t *)&f->listener, NULL);
}

static void dial_connected(uv_connect_t *req, int status)
{
    dial_case *d = req->data;
    assert_int_equal(status, 0);
    d->cli.t_start = tv_now_ms();
    assert_int_equal(tm2__sc_stream_start(&d->cli.s, &d->cli.key, NULL), 0);
}

static void dialer_sees_close(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 30000);
    dial_case d;
    memset(&d, 0, sizeof d);
    f.user = &d;
    f.on_accept = dial_accept_and_drop;
    tm2__sc_stream_config cfg = {.handshake_timeout_ms = 20000};
    endpoint_setup(&d.cli, &f, 1, 2, NULL, 0, &cfg, &hs_cbs);
    d.creq.data = &d;
    connect_to(&f, tm2__sc_stream_uv_tcp(&d.cli.s), &d.creq, dial_connected);
    fixture_run(&f);
    assert_true(d.cli.hs_done);
    /* Reset or orderly close, depending on timing: never a hang. */
    assert_true(d.cli.hs_err == TM2_ECLOSED || d.cli.hs_err == TM2_EIO);
    assert_true(d.cli.closed);
    fixture_close(&f);
}

/* ---- pause, read bound, close from a callback -------------------------------------- */

typedef struct flow {
    endpoint cli, srv;
    uv_connect_t creq;
    uv_timer_t timer;
    int stage;
    size_t at_pause;
    uint64_t epoch;
    size_t epoch_bytes, max_epoch_bytes;
    bool close_in_read;
} flow;

static void flow_on_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    endpoint *e = EP(s);
    flow *fl = e->f->user;
    crypto_hash_sha256_update(&e->rx_hash, data, len);
    e->received += len;
    e->reads++;
    if (fl->epoch != e->f->ue.turn) {
        fl->epoch = e->f->ue.turn;
        fl->epoch_bytes = 0;
    }
    fl->epoch_bytes += len;
    if (fl->epoch_bytes > fl->max_epoch_bytes)
        fl->max_epoch_bytes = fl->epoch_bytes;
    if (fl->close_in_read && e == &fl->srv) {
        /* The stream must survive its own callback after this. */
        tm2__sc_stream_close(s);
        tm2__sc_stream_close(&fl->cli.s);
        uv_close((uv_handle_t *)&e->f->listener, NULL);
        uv_close((uv_handle_t *)&fl->timer, NULL);
        return;
    }
    if (e->received == e->total) {
        tm2__sc_stream_close(&fl->cli.s);
        tm2__sc_stream_close(&fl->srv.s);
        uv_close((uv_handle_t *)&e->f->listener, NULL);
        uv_close((uv_handle_t *)&fl->timer, NULL);
    }
}

static void flow_timer(uv_timer_t *t)
{
    flow *fl = t->data;
    if (fl->stage == 1) {
        /* What the read that completed the handshake carried is delivered
         * by now; from here on nothing may arrive while paused. */
        fl->at_pause = fl->srv.received;
        fl->stage = 2;
        uv_timer_start(&fl->timer, flow_timer, 150, 0);
    } else if (fl->stage == 2) {
        assert_int_equal(fl->srv.received, fl->at_pause);
        assert_true(fl->cli.sent > fl->at_pause);   /* data was waiting */
        fl->stage = 3;
        assert_int_equal(tm2__sc_stream_pause(&fl->srv.s, false), 0);
    }
}

static void flow_srv_handshake(tm2__sc_stream *s, int err)
{
    endpoint *e = EP(s);
    flow *fl = e->f->user;
    assert_int_equal(err, 0);
    e->hs_done = true;
    if (fl->stage == 0 && !fl->close_in_read) {
        assert_int_equal(tm2__sc_stream_pause(s, true), 0);
        fl->stage = 1;
        uv_timer_start(&fl->timer, flow_timer, 50, 0);
    }
}

static void flow_cli_handshake(tm2__sc_stream *s, int err)
{
    endpoint *e = EP(s);
    assert_int_equal(err, 0);
    e->hs_done = true;
    pump(e);
}

static void flow_cli_writable(tm2__sc_stream *s) { pump(EP(s)); }

static const tm2__sc_stream_cbs flow_srv_cbs = {
    .on_handshake = flow_srv_handshake,
    .on_read = flow_on_read,
    .on_error = on_error_record,
    .on_close = on_close_record,
};

static const tm2__sc_stream_cbs flow_cli_cbs = {
    .on_handshake = flow_cli_handshake,
    .on_error = on_error_record,
    .on_writable = flow_cli_writable,
    .on_close = on_close_record,
};

static void flow_accept(fixture *f, uv_stream_t *server)
{
    flow *fl = f->user;
    assert_int_equal(uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(&fl->srv.s)), 0);
    assert_int_equal(tm2__sc_stream_start(&fl->srv.s, &fl->srv.key, NULL), 0);
}

static void flow_connected(uv_connect_t *req, int status)
{
    flow *fl = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(tm2__sc_stream_start(&fl->cli.s, &fl->cli.key, NULL), 0);
}

static void run_flow(flow *fl, size_t budget)
{
    fixture f;
    fixture_init(&f, 60000);
    uint8_t *pool = malloc(2 * MiB);
    assert_non_null(pool);
    randombytes_buf(pool, 2 * MiB);
    f.user = fl;
    f.on_accept = flow_accept;
    tm2__sc_stream_config scfg = {.read_budget = budget};
    tm2__sc_stream_config ccfg = {.max_queued = 8 * MiB};
    endpoint_setup(&fl->srv, &f, 2, 1, pool, 4 * MiB, &scfg, &flow_srv_cbs);
    endpoint_setup(&fl->cli, &f, 1, 2, pool, 4 * MiB, &ccfg, &flow_cli_cbs);
    uv_timer_init(&f.loop, &fl->timer);
    fl->timer.data = fl;
    fl->creq.data = fl;
    connect_to(&f, tm2__sc_stream_uv_tcp(&fl->cli.s), &fl->creq, flow_connected);
    fixture_run(&f);
    assert_true(fl->srv.closed);
    assert_true(fl->cli.closed);
    assert_false(fl->srv.errored);
    fixture_close(&f);
    free(pool);
}

static void pause_and_read_bound(void **state)
{
    (void)state;
    flow *fl = calloc(1, sizeof *fl);
    assert_non_null(fl);
    run_flow(fl, 8192);
    assert_int_equal(fl->stage, 3);
    assert_int_equal(fl->srv.received, 4 * MiB);
    uint8_t h1[32], h2[32];
    crypto_hash_sha256_final(&fl->cli.tx_hash, h1);
    crypto_hash_sha256_final(&fl->srv.rx_hash, h2);
    assert_memory_equal(h1, h2, 32);
    /* One stream never takes more than its budget plus one socket read of
     * plaintext in a single loop iteration. */
    assert_true(fl->max_epoch_bytes <= 8192 + TM2__UV_READ_BUF);
    assert_true(fl->srv.reads >= 4 * MiB / TM2__UV_READ_BUF);
    free(fl);
}

static void close_inside_read_callback(void **state)
{
    (void)state;
    flow *fl = calloc(1, sizeof *fl);
    assert_non_null(fl);
    fl->close_in_read = true;
    run_flow(fl, 0);
    assert_true(fl->srv.received > 0);
    assert_true(fl->srv.received < 4 * MiB);
    free(fl);
}

/* Writes on a stream that is not (or no longer) open. */
static void write_states(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 10000);
    endpoint e;
    endpoint_setup(&e, &f, 1, 2, NULL, 0, NULL, &hs_cbs);
    uint8_t b[4] = {0};
    assert_int_equal(tm2__sc_stream_write(&e.s, b, sizeof b), TM2_ESTATE);
    tm2__sc_stream_close(&e.s);
    assert_int_equal(tm2__sc_stream_write(&e.s, b, sizeof b), TM2_ECLOSED);
    tm2__sc_stream_close(&e.s);   /* idempotent */
    uv_close((uv_handle_t *)&f.listener, NULL);
    fixture_run(&f);
    assert_true(e.closed);
    assert_false(e.hs_done);
    fixture_close(&f);
}

/* ---- streams closed while a handshake job is out --------------------------------- */

#define STORM_N 48

typedef struct storm {
    fixture *f;
    tm2__sc_stream cli[STORM_N], srv[STORM_N];
    uv_connect_t creq[STORM_N];
    tm2_node_key kc, ks;
    int accepted, closed, hs_ok, cli_hs_done;
} storm;

static void storm_on_close(tm2__sc_stream *s)
{
    storm *st = s->data;
    if (++st->closed == 2 * STORM_N && !uv_is_closing((uv_handle_t *)&st->f->listener))
        uv_close((uv_handle_t *)&st->f->listener, NULL);
}

static void storm_srv_hs(tm2__sc_stream *s, int err)
{
    storm *st = s->data;
    if (!err) {
        st->hs_ok++;
        /* The client may still be verifying us: close one of them now. */
        int k = (int)(s - st->srv);
        if (k % 3 == 1)
            tm2__sc_stream_close(&st->cli[k]);
    }
    tm2__sc_stream_close(s);
}

static void storm_cli_hs(tm2__sc_stream *s, int err)
{
    storm *st = s->data;
    (void)err;
    st->cli_hs_done++;
    tm2__sc_stream_close(s);
}

static void storm_accept(fixture *f, uv_stream_t *server)
{
    storm *st = f->user;
    tm2__sc_stream *s = &st->srv[st->accepted++];
    assert_int_equal(uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(s)), 0);
    assert_int_equal(tm2__sc_stream_start(s, &st->ks, NULL), 0);
}

static void storm_connected(uv_connect_t *req, int status)
{
    storm *st = req->data;
    int k = (int)(req - st->creq);
    tm2__sc_stream *s = &st->cli[k];
    if (status || uv_is_closing((uv_handle_t *)tm2__sc_stream_uv_tcp(s)))
        return;                     /* closed by a server callback first */
    assert_int_equal(tm2__sc_stream_start(s, &st->kc, NULL), 0);
    /* Our key pair is being made on a worker: close at once. */
    if (k % 3 == 0)
        tm2__sc_stream_close(s);
}

static void close_with_jobs_in_flight(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 60000);
    storm *st = calloc(1, sizeof *st);
    assert_non_null(st);
    st->f = &f;
    f.user = st;
    f.on_accept = storm_accept;
    tm2_node_key_generate(&st->kc);
    tm2_node_key_generate(&st->ks);
    static const tm2__sc_stream_cbs ccbs = {.on_handshake = storm_cli_hs,
                                            .on_close = storm_on_close};
    static const tm2__sc_stream_cbs scbs = {.on_handshake = storm_srv_hs,
                                            .on_close = storm_on_close};
    for (int k = 0; k < STORM_N; k++) {
        tm2__sc_stream_init(&st->cli[k], &f.lp, NULL, &ccbs);
        tm2__sc_stream_init(&st->srv[k], &f.lp, NULL, &scbs);
        st->cli[k].data = st->srv[k].data = st;
        st->creq[k].data = st;
        connect_to(&f, tm2__sc_stream_uv_tcp(&st->cli[k]), &st->creq[k], storm_connected);
    }
    /* Server streams that no connection reached are closed at the end. */
    fixture_run(&f);
    for (int k = st->accepted; k < STORM_N; k++)
        tm2__sc_stream_close(&st->srv[k]);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    assert_int_equal(st->closed, 2 * STORM_N);
    /* The untouched third completed on both sides. */
    assert_true(st->hs_ok >= STORM_N / 3);
    fixture_close(&f);
    free(st);
}

/* ---- input while a handshake job is out ------------------------------------------ */

/* Holds every worker of the pool, so that the jobs queued behind the gate's
 * stay out until it opens. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    tm2__wpool_sink sink;
    tm2__wpool_job jobs[64];
    unsigned n, done;
} gate;

static gate the_gate = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void gate_run(tm2__wpool_job *j)
{
    (void)j;
    pthread_mutex_lock(&the_gate.mu);
    while (!the_gate.open)
        pthread_cond_wait(&the_gate.cv, &the_gate.mu);
    pthread_mutex_unlock(&the_gate.mu);
}

static void gate_done(tm2__wpool_job *j, bool ran)
{
    (void)j;
    (void)ran;
    the_gate.done++;
}

static void gate_shut(fixture *f)
{
    gate *g = &the_gate;
    g->open = false;
    g->done = 0;
    assert_int_equal(tm2__wpool_sink_init(&g->sink, &f->ue.e), 0);
    assert_false(g->sink.inline_only);
    g->n = tm2__wpool_threads();
    assert_true(g->n > 0 && g->n <= 64);
    for (unsigned i = 0; i < g->n; i++) {
        g->jobs[i] = (tm2__wpool_job){.run = gate_run, .done = gate_done};
        tm2__wpool_submit(&g->sink, &g->jobs[i]);
    }
}

static void gate_open(void)
{
    pthread_mutex_lock(&the_gate.mu);
    the_gate.open = true;
    pthread_cond_broadcast(&the_gate.cv);
    pthread_mutex_unlock(&the_gate.mu);
}

typedef struct held {
    fixture f;
    endpoint srv;
    uv_tcp_t peer;
    uv_connect_t creq;
    uv_write_t wreq;
    uint8_t *out;
    size_t out_len;
    bool close_after;
    bool peer_closed;
} held;

static void held_peer_closed(uv_handle_t *h) { ((held *)h->data)->peer_closed = true; }

static void held_written(uv_write_t *w, int status)
{
    held *h = w->data;
    (void)status;                   /* the stream may have gone first */
    if (h->close_after && !uv_is_closing((uv_handle_t *)&h->peer))
        uv_close((uv_handle_t *)&h->peer, held_peer_closed);
}

static void held_connected(uv_connect_t *req, int status)
{
    held *h = req->data;
    assert_int_equal(status, 0);
    uv_buf_t b = uv_buf_init((char *)h->out, (unsigned)h->out_len);
    h->wreq.data = h;
    assert_int_equal(uv_write(&h->wreq, (uv_stream_t *)&h->peer, &b, 1, held_written), 0);
}

static void held_accept(fixture *f, uv_stream_t *server)
{
    held *h = f->user;
    assert_int_equal(uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(&h->srv.s)), 0);
    /* Behind the gate: our key pair job stays out. */
    assert_int_equal(tm2__sc_stream_start(&h->srv.s, &h->srv.key, NULL), 0);
    assert_non_null(h->srv.s.job);
    uv_close((uv_handle_t *)&f->listener, NULL);
}

/* One turn of the loop at a time until pred holds (the watchdog bounds it). */
static void run_until(fixture *f, bool (*pred)(held *h), held *h)
{
    while (!pred(h) && !f->timed_out)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_false(f->timed_out);
}

static bool end_seen(held *h) { return h->srv.s.end_pending; }
static bool reading_stopped(held *h) { return h->srv.s.job && !h->srv.s.reading; }

/* A server stream, its key pair job held, against a raw client that writes
 * out (closing after it when close_after). */
static void held_start(held *h, const uint8_t *out, size_t len, bool close_after)
{
    memset(h, 0, sizeof *h);
    fixture_init(&h->f, 30000);
    gate_shut(&h->f);
    h->f.user = h;
    h->f.on_accept = held_accept;
    tm2__sc_stream_config cfg = {.handshake_timeout_ms = 20000};
    endpoint_setup(&h->srv, &h->f, 2, 1, NULL, 0, &cfg, &hs_cbs);
    h->out = malloc(len);
    assert_non_null(h->out);
    memcpy(h->out, out, len);
    h->out_len = len;
    h->close_after = close_after;
    assert_int_equal(uv_tcp_init(&h->f.loop, &h->peer), 0);
    h->peer.data = h->creq.data = h;
    connect_to(&h->f, &h->peer, &h->creq, held_connected);
}

static bool hs_seen(held *h) { return h->srv.hs_done; }

static void held_finish(held *h)
{
    gate_open();
    run_until(&h->f, hs_seen, h);
    if (!uv_is_closing((uv_handle_t *)&h->peer))
        uv_close((uv_handle_t *)&h->peer, held_peer_closed);
    fixture_run(&h->f);
    assert_true(h->srv.hs_done);
    assert_true(h->srv.closed);
    tm2__wpool_sink_close(&the_gate.sink, NULL);
    assert_int_equal(the_gate.done, the_gate.n);
    fixture_close(&h->f);
    free(h->out);
}

/* The peer's key message, then its end, both while our key pair is being
 * made: the message still goes through the handshake first (its bad key is
 * the error reported, not the close). */
static void end_waits_for_the_input_before_it(void **state)
{
    (void)state;
    uint8_t bad[sizeof peer_eph_msg];
    memcpy(bad, peer_eph_msg, sizeof bad);
    memset(bad + 3, 0, 32);         /* all-zero key: low order */
    held h;
    held_start(&h, bad, sizeof bad, true);
    run_until(&h.f, end_seen, &h);
    assert_non_null(h.srv.s.job);
    assert_false(h.srv.hs_done);
    held_finish(&h);
    assert_int_equal(h.srv.hs_err, TM2_ELOWORDER);
}

/* A peer that floods while our job is out: the stream stops reading once a
 * couple of frames wait (its memory stays bounded), and after the job the
 * flood is judged as the auth frame it pretends to be. */
static void reading_stops_when_the_stash_is_full(void **state)
{
    (void)state;
    size_t len = sizeof peer_eph_msg + 16 * MiB;
    uint8_t *flood = malloc(len);
    assert_non_null(flood);
    memcpy(flood, peer_eph_msg, sizeof peer_eph_msg);
    memset(flood + sizeof peer_eph_msg, 0x55, len - sizeof peer_eph_msg);
    held h;
    held_start(&h, flood, len, false);
    free(flood);
    run_until(&h.f, reading_stopped, &h);
    assert_false(h.srv.s.end_pending);
    assert_false(h.srv.hs_done);
    /* More than the kernel's buffers hold: the peer still has some of its
     * 16 MiB, the stream stopped taking. */
    assert_true(uv_stream_get_write_queue_size((uv_stream_t *)&h.peer) > 0);
    held_finish(&h);
    assert_int_equal(h.srv.hs_err, TM2_EDECRYPT);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    /* Writes to a peer that left must fail with EPIPE, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bulk_64mib_both_ways),
        cmocka_unit_test(deadline_one_byte_at_a_time),
        cmocka_unit_test(deadline_silent_peer),
        cmocka_unit_test(peer_closes_mid_handshake),
        cmocka_unit_test(peer_sends_garbage),
        cmocka_unit_test(dialer_sees_close),
        cmocka_unit_test(pause_and_read_bound),
        cmocka_unit_test(close_inside_read_callback),
        cmocka_unit_test(write_states),
        cmocka_unit_test(close_with_jobs_in_flight),
        cmocka_unit_test(end_waits_for_the_input_before_it),
        cmocka_unit_test(reading_stops_when_the_stash_is_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
