#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/engine.h"
#include "sim/simnet.h"
#include "tm2p2p/error.h"
#include "tv.h"

/* Set around every engine call a test makes: a callback that sees it set
 * ran inside a call, which the engine promises never happens. */
static bool g_in_call;
#define CALL(x) (g_in_call = true, (x), g_in_call = false)
#define CALLR(r, x) (g_in_call = true, (r) = (x), g_in_call = false)

static tm2_netaddr ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port)
{
    tm2_netaddr n;
    memset(&n, 0, sizeof n);
    n.ip[10] = n.ip[11] = 0xff;
    n.ip[12] = a;
    n.ip[13] = b;
    n.ip[14] = c;
    n.ip[15] = d;
    n.port = port;
    return n;
}

static tm2_netaddr host_ip(uint32_t i, uint16_t port)
{
    return ip4(198, (uint8_t)(18 + (i >> 16)), (uint8_t)(i >> 8), (uint8_t)i, port);
}

/* ---- timers, tasks, wakers, work ----------------------------------------------------- */

static int g_order[32];
static int g_norder;
static uint64_t g_at[32];

typedef struct ttimer {
    tm2__timer t;
    int id;
} ttimer;

static void on_timer(tm2__timer *t)
{
    assert_false(g_in_call);
    ttimer *tt = (ttimer *)t;
    assert_false(tm2__timer_active(t));
    g_at[g_norder] = tm2__engine_now_ms(t->e);
    g_order[g_norder++] = tt->id;
}

static uint64_t g_hook_calls;

static void count_hook(void *user, tm2__simnet *w)
{
    (void)user;
    g_hook_calls++;
    assert_int_equal(g_hook_calls, tm2__simnet_events(w));
}

static void timers_fire_in_order(void **state)
{
    (void)state;
    tm2__simnet *w = tm2__simnet_new(NULL);
    assert_non_null(w);
    g_hook_calls = 0;
    tm2__simnet_set_hook(w, count_hook, NULL);
    tm2_netaddr a = host_ip(1, 0);
    tm2__engine *e = tm2__simnet_host_new(w, &a);
    assert_non_null(e);
    ttimer t[6];
    for (int i = 0; i < 6; i++) {
        t[i].id = i;
        CALL(tm2__timer_init(e, &t[i].t, on_timer));
    }
    g_norder = 0;
    CALL(tm2__timer_start(&t[0].t, 100));
    CALL(tm2__timer_start(&t[1].t, 50));
    CALL(tm2__timer_start(&t[2].t, 50));   /* tie with 1: after it */
    CALL(tm2__timer_start(&t[3].t, 100));  /* tie with 0: after it */
    CALL(tm2__timer_start(&t[4].t, 70));
    CALL(tm2__timer_stop(&t[4].t));        /* never fires */
    CALL(tm2__timer_start(&t[5].t, 500));
    CALL(tm2__timer_start(&t[5].t, 20));   /* re-armed earlier */
    assert_int_equal(g_norder, 0);
    while (tm2__simnet_step(w))
        ;
    int want[] = {5, 1, 2, 0, 3};
    uint64_t at[] = {20, 50, 50, 100, 100};
    assert_int_equal(g_norder, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(g_order[i], want[i]);
        assert_int_equal(g_at[i], at[i]);
    }
    assert_int_equal(tm2__simnet_now(w), 100);
    /* A due time in the past runs on the next turn, at the current time. */
    g_norder = 0;
    CALL(tm2__timer_start(&t[0].t, 3));
    assert_int_equal(g_norder, 0);
    assert_true(tm2__simnet_step(w));
    assert_int_equal(g_norder, 1);
    assert_int_equal(g_at[0], 100);
    assert_int_equal(g_hook_calls, 6);
    /* Idle, the clock still moves to where it is asked. */
    assert_false(tm2__simnet_step(w));
    tm2__simnet_run_until(w, 12345);
    assert_int_equal(tm2__simnet_now(w), 12345);
    assert_int_equal(tm2__engine_wall_ms(e), TM2__SIMNET_EPOCH_MS + 12345);
    for (int i = 0; i < 6; i++)
        CALL(tm2__timer_close(&t[i].t));
    tm2__simnet_host_free(e);
    tm2__simnet_free(w);
}

static int g_task_runs;
static uint64_t g_task_turn;
static tm2__task g_task2;

static void task_fn(tm2__task *k)
{
    assert_false(g_in_call);
    g_order[g_norder++] = 100 + (int)(intptr_t)k->data;
    g_task_runs++;
}

static void task_defers(tm2__task *k)
{
    tm2__engine *e = k->data;
    g_task_turn = tm2__engine_turn(e);
    g_order[g_norder++] = 99;
    g_in_call = true;
    tm2__defer(e, &g_task2);   /* from a callback: runs later, not inside */
    g_in_call = false;
    assert_int_equal(g_order[g_norder - 1], 99);
}

static int g_wakes, g_waker_closed;

static void on_wake(tm2__waker *wk)
{
    assert_false(g_in_call);
    (void)wk;
    g_wakes++;
}

static void on_waker_close(tm2__waker *wk)
{
    assert_false(g_in_call);
    (void)wk;
    g_waker_closed++;
}

static int g_work_log[8], g_nwork;

static void work_run(tm2__work *wk)
{
    assert_false(g_in_call);
    g_work_log[g_nwork++] = (int)(intptr_t)wk->data;
}

static void work_done(tm2__work *wk, bool cancelled)
{
    assert_false(g_in_call);
    g_work_log[g_nwork++] = (cancelled ? -100 : 100) - (int)(intptr_t)wk->data;
}

static void defer_waker_work(void **state)
{
    (void)state;
    tm2__simnet *w = tm2__simnet_new(NULL);
    tm2_netaddr a = host_ip(1, 0);
    tm2__engine *e = tm2__simnet_host_new(w, &a);
    tm2__task k1 = {.fn = task_fn, .data = (void *)1};
    tm2__task k0 = {.fn = task_defers, .data = e};
    tm2__task k3 = {.fn = task_fn, .data = (void *)3};
    g_task2 = (tm2__task){.fn = task_fn, .data = (void *)2};
    g_norder = 0;
    CALL(tm2__defer(e, &k1));
    CALL(tm2__defer(e, &k1));   /* once however often */
    CALL(tm2__defer(e, &k0));
    CALL(tm2__defer(e, &k3));
    CALL(tm2__undefer(e, &k3));
    assert_int_equal(g_norder, 0);
    while (tm2__simnet_step(w))
        ;
    assert_int_equal(g_norder, 3);
    assert_int_equal(g_order[0], 101);
    assert_int_equal(g_order[1], 99);
    assert_int_equal(g_order[2], 102);
    assert_int_equal(tm2__simnet_now(w), 0);   /* same virtual time */
    assert_true(tm2__engine_turn(e) > g_task_turn);

    tm2__waker wk;
    int rc;
    CALLR(rc, tm2__waker_init(e, &wk, on_wake));
    assert_int_equal(rc, 0);
    g_wakes = g_waker_closed = 0;
    CALL(tm2__waker_send(&wk));
    CALL(tm2__waker_send(&wk));
    CALL(tm2__waker_send(&wk));
    assert_int_equal(g_wakes, 0);
    while (tm2__simnet_step(w))
        ;
    assert_int_equal(g_wakes, 1);
    CALL(tm2__waker_send(&wk));
    CALL(tm2__waker_close(&wk, on_waker_close));   /* the pending send is dropped */
    while (tm2__simnet_step(w))
        ;
    assert_int_equal(g_wakes, 1);
    assert_int_equal(g_waker_closed, 1);

    tm2__work wa = {.run = work_run, .done = work_done, .data = (void *)1};
    tm2__work wb = {.run = work_run, .done = work_done, .data = (void *)2};
    tm2__work wc = {.run = work_run, .done = work_done, .data = (void *)3};
    g_nwork = 0;
    CALL(tm2__work_submit(e, &wa));
    CALL(tm2__work_submit(e, &wb));
    CALL(tm2__work_submit(e, &wc));
    bool took;
    CALLR(took, tm2__work_cancel(&wb));
    assert_true(took);
    assert_int_equal(g_nwork, 0);
    while (tm2__simnet_step(w))
        ;
    int want[] = {1, 99, -102, 3, 97};
    assert_int_equal(g_nwork, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(g_work_log[i], want[i]);
    CALLR(took, tm2__work_cancel(&wa));
    assert_false(took);

    /* Random bytes: the same seed and host, the same bytes. */
    tm2__simnet *w2 = tm2__simnet_new(NULL);
    tm2__engine *e2 = tm2__simnet_host_new(w2, &a);
    uint8_t r1[100], r2[100];
    tm2__engine_random(e, r1, 7);
    tm2__engine_random(e, r1 + 7, 93);
    tm2__engine_random(e2, r2, 100);
    assert_memory_equal(r1, r2, 100);
    for (int i = 0; i < 1000; i++)
        assert_true(tm2__engine_uniform(e, 7) < 7);
    assert_int_equal(tm2__engine_wall_ms(e), TM2__SIMNET_EPOCH_MS);
    assert_false(tm2__engine_workers(e));
    tm2__simnet_host_free(e2);
    tm2__simnet_free(w2);
    tm2__simnet_host_free(e);
    tm2__simnet_free(w);
}

/* ---- sockets ------------------------------------------------------------------------ */

typedef struct tconn {
    tm2__sock s;
    uint8_t *rx;
    size_t rxlen, rxcap;
    uint64_t first_rx, last_rx, conn_at, end_at;
    int conn_err, end_err;
    bool conn_done, ended, closed, echo;
    size_t sent_calls;
} tconn;

static void tc_read(tm2__sock *s, const uint8_t *data, size_t len)
{
    assert_false(g_in_call);
    tconn *c = s->data;
    assert_false(c->ended);
    assert_true(len > 0 && len <= 64 * 1024);
    if (c->rxlen + len > c->rxcap) {
        c->rxcap = (c->rxlen + len) * 2;
        c->rx = realloc(c->rx, c->rxcap);
        assert_non_null(c->rx);
    }
    memcpy(c->rx + c->rxlen, data, len);
    if (!c->rxlen)
        c->first_rx = tm2__engine_now_ms(s->e);
    c->rxlen += len;
    c->last_rx = tm2__engine_now_ms(s->e);
    if (c->echo)
        assert_int_equal(tm2__sock_write(s, data, len), 0);
}

static void tc_connect(tm2__sock *s, int err)
{
    assert_false(g_in_call);
    tconn *c = s->data;
    assert_false(c->conn_done);
    c->conn_done = true;
    c->conn_err = err;
    c->conn_at = tm2__engine_now_ms(s->e);
    if (!err)
        assert_int_equal(tm2__sock_read(s, true), 0);
}

static void tc_end(tm2__sock *s, int err)
{
    assert_false(g_in_call);
    tconn *c = s->data;
    assert_false(c->ended);
    c->ended = true;
    c->end_err = err;
    c->end_at = tm2__engine_now_ms(s->e);
}

static void tc_sent(tm2__sock *s)
{
    assert_false(g_in_call);
    ((tconn *)s->data)->sent_calls++;
}

static void tc_close(tm2__sock *s)
{
    assert_false(g_in_call);
    tconn *c = s->data;
    assert_false(c->closed);
    c->closed = true;
}

static const tm2__sock_cbs tc_cbs = {
    .on_connect = tc_connect,
    .on_read = tc_read,
    .on_end = tc_end,
    .on_sent = tc_sent,
    .on_close = tc_close,
};

typedef struct tlisten {
    tm2__listener l;
    tconn *accepted[8];
    int n;
    bool echo, closed;
    tm2_netaddr remote[8];
} tlisten;

static void tl_conn(tm2__listener *l, int err)
{
    assert_false(g_in_call);
    assert_int_equal(err, 0);
    tlisten *tl = l->data;
    assert_true(tl->n < 8);
    tconn *c = calloc(1, sizeof *c);
    c->s.data = c;
    c->echo = tl->echo;
    assert_int_equal(tm2__listener_accept(l, &c->s, &tc_cbs, &tl->remote[tl->n]), 0);
    assert_int_equal(tm2__sock_read(&c->s, true), 0);
    tl->accepted[tl->n++] = c;
}

static void tl_closed(tm2__listener *l)
{
    assert_false(g_in_call);
    ((tlisten *)l->data)->closed = true;
}

static void tl_free(tlisten *tl)
{
    for (int i = 0; i < tl->n; i++) {
        free(tl->accepted[i]->rx);
        free(tl->accepted[i]);
    }
}

static void run_idle(tm2__simnet *w)
{
    while (tm2__simnet_step(w))
        ;
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
}

/* Two hosts A (index 0) and B (index 1), B listening on 26656. */
typedef struct pair {
    tm2__simnet *w;
    tm2__engine *a, *b;
    tlisten tl;
    tm2_netaddr baddr;
} pair;

static void pair_open(pair *p, const tm2__simnet_config *cfg, bool echo)
{
    memset(p, 0, sizeof *p);
    p->w = tm2__simnet_new(cfg);
    assert_non_null(p->w);
    tm2_netaddr a = host_ip(1, 0);
    p->baddr = host_ip(2, 26656);
    p->a = tm2__simnet_host_new(p->w, &a);
    p->b = tm2__simnet_host_new(p->w, &p->baddr);
    assert_non_null(p->a);
    assert_non_null(p->b);
    p->tl.echo = echo;
    p->tl.l.data = &p->tl;
    p->tl.l.on_conn = tl_conn;
    tm2_netaddr any = ip4(0, 0, 0, 0, 26656), bound;
    int rc;
    CALLR(rc, tm2__listen(p->b, &p->tl.l, &any, &bound));
    assert_int_equal(rc, 0);
    assert_int_equal(bound.port, 26656);
}

static void dial(tm2__engine *e, tconn *c, const tm2_netaddr *to)
{
    memset(c, 0, sizeof *c);
    c->s.data = c;
    int rc;
    CALLR(rc, tm2__sock_init(e, &c->s, &tc_cbs));
    assert_int_equal(rc, 0);
    CALLR(rc, tm2__sock_connect(&c->s, to, NULL));
    assert_int_equal(rc, 0);
}

static void pair_close(pair *p, tconn *client)
{
    if (client && !client->closed)
        CALL(tm2__sock_close(&client->s));
    for (int i = 0; i < p->tl.n; i++)
        CALL(tm2__sock_close(&p->tl.accepted[i]->s));
    CALL(tm2__listener_close(&p->tl.l, tl_closed));
    run_idle(p->w);
    assert_true(p->tl.closed);
    if (client)
        assert_true(client->closed);
    for (int i = 0; i < p->tl.n; i++)
        assert_true(p->tl.accepted[i]->closed);
    tl_free(&p->tl);
    tm2__simnet_stats st;
    tm2__simnet_stats_get(p->w, &st);
    assert_int_equal(st.conns_live, 0);
    tm2__simnet_host_free(p->a);
    tm2__simnet_host_free(p->b);
    tm2__simnet_free(p->w);
}

static void echo_between_two_hosts(void **state)
{
    (void)state;
    tm2__simnet_config cfg = {.seed = 7, .latency_min_ms = 10, .latency_max_ms = 50};
    pair p;
    pair_open(&p, &cfg, true);
    tconn c;
    dial(p.a, &c, &p.baddr);
    run_idle(p.w);
    assert_true(c.conn_done);
    assert_int_equal(c.conn_err, 0);
    /* One round trip: two one-way latencies. */
    assert_in_range(c.conn_at, 20, 100);
    assert_int_equal(p.tl.n, 1);
    tm2_netaddr a_ip = host_ip(1, 0);
    assert_memory_equal(p.tl.remote[0].ip, a_ip.ip, 16);
    assert_true(p.tl.remote[0].port >= 32768);

    size_t n = 300 * 1000;
    uint8_t *buf = malloc(n);
    fill(buf, n, 1);
    uint64_t t0 = tm2__simnet_now(p.w);
    int rc;
    for (size_t off = 0; off < n; off += 1000)
        CALLR(rc, tm2__sock_write(&c.s, buf + off, 1000));
    assert_int_equal(rc, 0);
    assert_int_equal(tm2__sock_queued(&c.s), 0);   /* unlimited bandwidth */
    run_idle(p.w);
    tconn *srv = p.tl.accepted[0];
    assert_int_equal(srv->rxlen, n);
    assert_memory_equal(srv->rx, buf, n);
    assert_int_equal(c.rxlen, n);
    assert_memory_equal(c.rx, buf, n);
    uint64_t ab = srv->first_rx - t0, rtt = c.first_rx - t0;
    assert_in_range(ab, 10, 50);
    assert_in_range(rtt - ab, 10, 50);
    assert_int_equal(ab + (rtt - ab), c.conn_at);   /* the same pair's latencies */
    free(buf);
    free(c.rx);
    pair_close(&p, &c);
}

static void refused_and_unanswered(void **state)
{
    (void)state;
    tm2__simnet_config cfg = {.seed = 3, .latency_min_ms = 5, .latency_max_ms = 40};
    pair p;
    pair_open(&p, &cfg, false);
    tconn c, u, l;
    tm2_netaddr closed_port = host_ip(2, 1234);
    dial(p.a, &c, &closed_port);
    tm2_netaddr nobody = host_ip(77, 26656);
    dial(p.a, &u, &nobody);
    /* Loopback reaches the host itself: B dials its own listener. */
    tm2_netaddr lo = ip4(127, 0, 0, 1, 26656);
    dial(p.b, &l, &lo);
    ttimer deadline = {.id = 42};
    CALL(tm2__timer_init(p.a, &deadline.t, on_timer));
    CALL(tm2__timer_start(&deadline.t, 5000));
    g_norder = 0;
    run_idle(p.w);
    assert_true(c.conn_done);
    assert_int_equal(c.conn_err, TM2_ECONNREFUSED);
    assert_in_range(c.conn_at, 10, 80);
    assert_false(u.conn_done);
    assert_int_equal(g_norder, 1);
    assert_int_equal(g_order[0], 42);
    assert_int_equal(g_at[0], 5000);
    assert_true(l.conn_done);
    assert_int_equal(l.conn_err, 0);
    assert_int_equal(l.conn_at, 0);   /* no latency to itself */
    int rc;
    CALLR(rc, tm2__sock_write(&c.s, (const uint8_t *)"x", 1));
    assert_int_equal(rc, TM2_EIO);
    CALL(tm2__sock_close(&c.s));
    CALL(tm2__sock_close(&u.s));
    CALL(tm2__sock_close(&l.s));
    CALL(tm2__timer_close(&deadline.t));
    /* An address outside the simulated ranges is not a host's. */
    tm2_netaddr priv = ip4(10, 0, 0, 1, 0);
    assert_null(tm2__simnet_host_new(p.w, &priv));
    assert_null(tm2__simnet_host_new(p.w, &p.baddr));   /* taken */
    run_idle(p.w);
    assert_true(c.closed && u.closed && l.closed);
    pair_close(&p, NULL);
}

/* Writes n pseudo-random bytes in uneven pieces. */
static void write_pieces(tm2__sock *s, const uint8_t *buf, size_t n)
{
    uint32_t x = 99;
    for (size_t off = 0; off < n;) {
        x = x * 1103515245u + 12345u;
        size_t k = 1 + (x >> 8) % 20000;
        if (k > n - off)
            k = n - off;
        int rc;
        CALLR(rc, tm2__sock_write(s, buf + off, k));
        assert_int_equal(rc, 0);
        off += k;
    }
}

static uint64_t transfer_time(double loss, size_t n, uint8_t *buf)
{
    tm2__simnet_config cfg = {.seed = 11, .latency_min_ms = 30, .latency_max_ms = 30, .loss = loss};
    pair p;
    pair_open(&p, &cfg, false);
    tconn c;
    dial(p.a, &c, &p.baddr);
    run_idle(p.w);
    uint64_t t0 = tm2__simnet_now(p.w);
    write_pieces(&c.s, buf, n);
    run_idle(p.w);
    tconn *srv = p.tl.accepted[0];
    assert_int_equal(srv->rxlen, n);
    assert_memory_equal(srv->rx, buf, n);   /* nothing lost, nothing reordered */
    uint64_t t = srv->last_rx - t0;
    pair_close(&p, &c);
    return t;
}

static void loss_delays_never_drops(void **state)
{
    (void)state;
    size_t n = 2 * 1000 * 1000;
    uint8_t *buf = malloc(n);
    fill(buf, n, 5);
    uint64_t clean = transfer_time(0.0, n, buf);
    uint64_t lossy = transfer_time(0.3, n, buf);
    assert_int_equal(clean, 30);
    assert_true(lossy >= 30 + 200);   /* at least one retransmission timeout */
    free(buf);
}

static void bandwidth_paces(void **state)
{
    (void)state;
    tm2__simnet_config cfg = {.seed = 1, .latency_min_ms = 10, .latency_max_ms = 10,
                              .bandwidth = 1000 * 1000};
    pair p;
    pair_open(&p, &cfg, false);
    tconn c;
    dial(p.a, &c, &p.baddr);
    run_idle(p.w);
    size_t n = 1000 * 1000;
    uint8_t *buf = malloc(n);
    fill(buf, n, 9);
    uint64_t t0 = tm2__simnet_now(p.w);
    int rc;
    CALLR(rc, tm2__sock_write(&c.s, buf, n));
    assert_int_equal(rc, 0);
    assert_int_equal(tm2__sock_queued(&c.s), n);
    tm2__simnet_run_until(p.w, t0 + 500);
    size_t q = tm2__sock_queued(&c.s);
    assert_true(q > 400 * 1000 && q < 600 * 1000);
    assert_true(c.sent_calls > 0);
    run_idle(p.w);
    assert_int_equal(tm2__sock_queued(&c.s), 0);
    tconn *srv = p.tl.accepted[0];
    assert_int_equal(srv->rxlen, n);
    assert_memory_equal(srv->rx, buf, n);
    /* 1 MB at 1 MB/s: one second, plus the latency. */
    assert_in_range(srv->last_rx - t0, 1000, 1020);
    free(buf);
    pair_close(&p, &c);
}

static void close_ends_after_data(void **state)
{
    (void)state;
    tm2__simnet_config cfg = {.seed = 2, .latency_min_ms = 20, .latency_max_ms = 20};
    pair p;
    pair_open(&p, &cfg, false);
    tconn c;
    dial(p.a, &c, &p.baddr);
    run_idle(p.w);
    uint8_t buf[5000];
    fill(buf, sizeof buf, 3);
    uint64_t t0 = tm2__simnet_now(p.w);
    CALL(tm2__sock_write(&c.s, buf, sizeof buf));
    CALL(tm2__sock_close(&c.s));
    CALL(tm2__sock_close(&c.s));   /* idempotent */
    assert_false(c.closed);
    run_idle(p.w);
    assert_true(c.closed);
    assert_false(c.ended);
    tconn *srv = p.tl.accepted[0];
    assert_int_equal(srv->rxlen, sizeof buf);
    assert_memory_equal(srv->rx, buf, sizeof buf);
    assert_true(srv->ended);
    assert_int_equal(srv->end_err, TM2_ECLOSED);
    assert_int_equal(srv->end_at, t0 + 20);

    /* Reading off: data and the end wait at the receiver. */
    tconn d;
    dial(p.a, &d, &p.baddr);
    run_idle(p.w);
    tconn *srv2 = p.tl.accepted[1];
    CALL(tm2__sock_read(&srv2->s, false));
    CALL(tm2__sock_write(&d.s, buf, sizeof buf));
    CALL(tm2__sock_close(&d.s));
    tm2__simnet_run_until(p.w, tm2__simnet_now(p.w) + 1000);
    assert_int_equal(srv2->rxlen, 0);
    assert_false(srv2->ended);
    CALL(tm2__sock_read(&srv2->s, true));
    run_idle(p.w);
    assert_int_equal(srv2->rxlen, sizeof buf);
    assert_int_equal(srv2->end_err, TM2_ECLOSED);

    /* Writing to a closed peer: dropped, then a reset comes back. */
    tconn e;
    dial(p.a, &e, &p.baddr);
    run_idle(p.w);
    tconn *srv3 = p.tl.accepted[2];
    CALL(tm2__sock_close(&srv3->s));
    CALL(tm2__sock_read(&e.s, false));   /* does not see the FIN */
    t0 = tm2__simnet_now(p.w);
    tm2__simnet_run_until(p.w, t0 + 100);
    CALL(tm2__sock_write(&e.s, buf, 10));
    run_idle(p.w);
    assert_true(e.ended);
    assert_int_equal(e.end_err, TM2_EIO);
    assert_int_equal(e.end_at, t0 + 100 + 40);
    CALL(tm2__sock_close(&e.s));
    pair_close(&p, NULL);
}

static void crash_resets_the_network(void **state)
{
    (void)state;
    tm2__simnet_config cfg = {.seed = 4, .latency_min_ms = 25, .latency_max_ms = 25};
    pair p;
    pair_open(&p, &cfg, false);
    tconn c;
    dial(p.a, &c, &p.baddr);
    run_idle(p.w);
    ttimer t = {.id = 7};
    CALL(tm2__timer_init(p.a, &t.t, on_timer));
    CALL(tm2__timer_start(&t.t, tm2__simnet_now(p.w) + 1000));
    tm2__waker wk;
    CALL(tm2__waker_init(p.a, &wk, on_wake));
    g_wakes = g_waker_closed = 0;
    CALL(tm2__waker_send(&wk));
    uint64_t t0 = tm2__simnet_now(p.w);
    tm2__simnet_host_crash(p.a);
    tm2__simnet_host_crash(p.a);
    g_norder = 0;
    tm2__simnet_run_until(p.w, t0 + 5000);
    /* Its code runs on (so it can shut down): the timer fires, the waker
     * wakes; only its network is gone. */
    assert_int_equal(g_norder, 1);
    assert_int_equal(g_wakes, 1);
    tconn *srv = p.tl.accepted[0];
    assert_true(srv->ended);
    assert_int_equal(srv->end_err, TM2_EIO);
    assert_int_equal(srv->end_at, t0 + 25);
    /* Connects to a crashed host are refused. */
    tconn d;
    tm2_netaddr aaddr = host_ip(1, 26656);
    dial(p.b, &d, &aaddr);
    run_idle(p.w);
    assert_int_equal(d.conn_err, TM2_ECONNREFUSED);
    CALL(tm2__sock_close(&d.s));
    /* Its owner still tears down normally. */
    int rc;
    CALLR(rc, tm2__sock_write(&c.s, (const uint8_t *)"x", 1));
    assert_int_equal(rc, TM2_EIO);
    CALL(tm2__sock_close(&c.s));
    CALL(tm2__timer_close(&t.t));
    CALL(tm2__waker_close(&wk, on_waker_close));
    int rr = tm2__simnet_host_revive(p.a);
    assert_int_equal(rr, TM2_ESTATE);   /* its socket's close has not come yet */
    run_idle(p.w);
    assert_true(c.closed);
    assert_true(d.closed);
    assert_int_equal(g_waker_closed, 1);
    /* Revived, it answers again. */
    assert_int_equal(tm2__simnet_host_revive(p.a), 0);
    tlisten tl2 = {.echo = true};
    tl2.l.data = &tl2;
    tl2.l.on_conn = tl_conn;
    CALLR(rc, tm2__listen(p.a, &tl2.l, &aaddr, NULL));
    assert_int_equal(rc, 0);
    tconn f;
    dial(p.b, &f, &aaddr);
    run_idle(p.w);
    assert_int_equal(f.conn_err, 0);
    assert_int_equal(tl2.n, 1);
    CALL(tm2__sock_close(&f.s));
    CALL(tm2__sock_close(&tl2.accepted[0]->s));
    CALL(tm2__listener_close(&tl2.l, tl_closed));
    run_idle(p.w);
    assert_true(tl2.closed);
    tl_free(&tl2);
    pair_close(&p, NULL);
}

static void partition_holds_then_delivers(void **state)
{
    (void)state;
    tm2__simnet_config cfg = {.seed = 5, .latency_min_ms = 15, .latency_max_ms = 15};
    pair p;
    pair_open(&p, &cfg, false);
    tconn c;
    dial(p.a, &c, &p.baddr);
    run_idle(p.w);
    tm2__simnet_set_group(p.w, p.b, 1);
    tm2__simnet_cut(p.w, true);
    size_t n = 200 * 1000;
    uint8_t *buf = malloc(n);
    fill(buf, n, 8);
    write_pieces(&c.s, buf, n);
    tconn d;   /* no answer across the cut */
    dial(p.a, &d, &p.baddr);
    uint64_t t0 = tm2__simnet_now(p.w);
    tm2__simnet_run_until(p.w, t0 + 3000);
    tconn *srv = p.tl.accepted[0];
    assert_int_equal(srv->rxlen, 0);
    assert_false(d.conn_done);
    tm2__simnet_cut(p.w, false);
    run_idle(p.w);
    assert_int_equal(srv->rxlen, n);
    assert_memory_equal(srv->rx, buf, n);
    assert_int_equal(srv->first_rx, t0 + 3000 + 15);
    assert_false(d.conn_done);
    CALL(tm2__sock_close(&d.s));
    free(buf);
    pair_close(&p, &c);
}

/* ---- determinism: a random workload on many hosts ---------------------------------------- */

#define WL_HOSTS 40
#define WL_CONNS 12

typedef struct wl_node wl_node;
typedef struct wl_conn {
    tm2__sock s;
    wl_node *n;
    bool open, closing;
    uint64_t got;
} wl_conn;

struct wl_node {
    tm2__engine *e;
    tm2__listener l;
    tm2__timer t;
    wl_conn c[WL_CONNS];
    bool crashed, lclosed;
};

static uint64_t g_wl_bytes;

static void wl_read(tm2__sock *s, const uint8_t *d, size_t len)
{
    wl_conn *c = s->data;
    (void)d;
    c->got += len;
    g_wl_bytes += len;
}

static void wl_end(tm2__sock *s, int err)
{
    wl_conn *c = s->data;
    (void)err;
    if (!c->closing) {
        c->closing = true;
        tm2__sock_close(s);
    }
}

static void wl_connect(tm2__sock *s, int err)
{
    wl_conn *c = s->data;
    if (err) {
        c->closing = true;
        tm2__sock_close(s);
        return;
    }
    c->open = true;
    tm2__sock_read(s, true);
}

static void wl_closed(tm2__sock *s)
{
    wl_conn *c = s->data;
    c->open = c->closing = false;
    c->n = NULL;   /* free slot */
}

static const tm2__sock_cbs wl_cbs = {
    .on_connect = wl_connect, .on_read = wl_read, .on_end = wl_end, .on_close = wl_closed,
};

static wl_conn *wl_free_slot(wl_node *n)
{
    for (int i = 0; i < WL_CONNS; i++)
        if (!n->c[i].n)
            return &n->c[i];
    return NULL;
}

static void wl_accept(tm2__listener *l, int err)
{
    wl_node *n = l->data;
    (void)err;
    wl_conn *c = wl_free_slot(n);
    if (!c)
        return;   /* full: it waits in the backlog */
    if (tm2__listener_accept(l, &c->s, &wl_cbs, NULL) != 0)
        return;
    c->n = n;
    c->s.data = c;
    c->open = true;
    tm2__sock_read(&c->s, true);
}

static void wl_tick(tm2__timer *t)
{
    wl_node *n = t->data;
    tm2__engine *e = n->e;
    uint32_t what = tm2__engine_uniform(e, 10);
    if (what < 3) {
        wl_conn *c = wl_free_slot(n);
        if (c) {
            c->n = n;
            c->s.data = c;
            c->open = c->closing = false;
            c->got = 0;
            /* Now and then a host that does not exist. */
            tm2_netaddr to = host_ip(tm2__engine_uniform(e, WL_HOSTS + 3), 26656);
            if (tm2__sock_init(e, &c->s, &wl_cbs) != 0) {
                c->n = NULL;   /* a crashed host makes no socket */
            } else if (tm2__sock_connect(&c->s, &to, NULL) != 0) {
                c->closing = true;
                tm2__sock_close(&c->s);
            }
        }
    } else if (what < 9) {
        wl_conn *c = &n->c[tm2__engine_uniform(e, WL_CONNS)];
        if (c->n && c->open && !c->closing) {
            uint8_t buf[3000];
            size_t len = 1 + tm2__engine_uniform(e, sizeof buf);
            tm2__engine_random(e, buf, len);
            tm2__sock_write(&c->s, buf, len);
        }
    } else {
        wl_conn *c = &n->c[tm2__engine_uniform(e, WL_CONNS)];
        if (c->n && !c->closing && (c->open || tm2__engine_uniform(e, 2))) {
            c->closing = true;
            tm2__sock_close(&c->s);
        }
    }
    tm2__timer_start(t, tm2__engine_now_ms(e) + 1 + tm2__engine_uniform(e, 200));
}

static void wl_lclosed(tm2__listener *l)
{
    ((wl_node *)l->data)->lclosed = true;
}

static void workload(uint64_t seed, uint8_t digest[32], tm2__simnet_stats *st)
{
    tm2__simnet_config cfg = {.seed = seed, .latency_min_ms = 5, .latency_max_ms = 120,
                              .loss = 0.05, .bandwidth = 2 * 1000 * 1000};
    tm2__simnet *w = tm2__simnet_new(&cfg);
    wl_node *nodes = calloc(WL_HOSTS, sizeof *nodes);
    for (uint32_t i = 0; i < WL_HOSTS; i++) {
        wl_node *n = &nodes[i];
        tm2_netaddr ip = host_ip(i, 26656);
        n->e = tm2__simnet_host_new(w, &ip);
        assert_non_null(n->e);
        tm2__simnet_set_group(w, n->e, (int)(i % 2));
        n->l.data = n;
        n->l.on_conn = wl_accept;
        assert_int_equal(tm2__listen(n->e, &n->l, &ip, NULL), 0);
        tm2__timer_init(n->e, &n->t, wl_tick);
        n->t.data = n;
        tm2__timer_start(&n->t, 1 + tm2__engine_uniform(n->e, 100));
    }
    g_wl_bytes = 0;
    tm2__simnet_run_until(w, 4000);
    tm2__simnet_cut(w, true);
    tm2__simnet_host_crash(nodes[3].e);
    nodes[3].crashed = true;
    tm2__simnet_run_until(w, 6000);
    tm2__simnet_cut(w, false);
    tm2__simnet_run_until(w, 10000);
    assert_true(g_wl_bytes > 0);
    /* Tear down: close everything, let the closes come, free. */
    for (uint32_t i = 0; i < WL_HOSTS; i++) {
        wl_node *n = &nodes[i];
        tm2__timer_close(&n->t);
        tm2__listener_close(&n->l, wl_lclosed);
        for (int k = 0; k < WL_CONNS; k++)
            if (n->c[k].n && !n->c[k].closing) {
                n->c[k].closing = true;
                tm2__sock_close(&n->c[k].s);
            }
    }
    run_idle(w);
    for (uint32_t i = 0; i < WL_HOSTS; i++) {
        assert_true(nodes[i].lclosed);
        for (int k = 0; k < WL_CONNS; k++)
            assert_null(nodes[i].c[k].n);
        tm2__simnet_host_free(nodes[i].e);
    }
    tm2__simnet_stats_get(w, st);
    assert_int_equal(st->conns_live, 0);
    assert_int_equal(st->hosts_live, 0);
    tm2__simnet_digest(w, digest);
    tm2__simnet_free(w);
    free(nodes);
}

static void same_seed_same_run(void **state)
{
    (void)state;
    uint8_t d1[32], d2[32], d3[32];
    tm2__simnet_stats s1, s2, s3;
    workload(1234, d1, &s1);
    workload(1234, d2, &s2);
    workload(1235, d3, &s3);
    assert_memory_equal(d1, d2, 32);
    assert_int_equal(s1.events, s2.events);
    assert_int_equal(s1.bytes_delivered, s2.bytes_delivered);
    assert_memory_not_equal(d1, d3, 32);
    assert_true(s1.conns_opened > 50);
    assert_true(s1.bytes_delivered > 100 * 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timers_fire_in_order),
        cmocka_unit_test(defer_waker_work),
        cmocka_unit_test(echo_between_two_hosts),
        cmocka_unit_test(refused_and_unanswered),
        cmocka_unit_test(loss_delays_never_drops),
        cmocka_unit_test(bandwidth_paces),
        cmocka_unit_test(close_ends_after_data),
        cmocka_unit_test(crash_resets_the_network),
        cmocka_unit_test(partition_holds_then_delivers),
        cmocka_unit_test(same_seed_same_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
