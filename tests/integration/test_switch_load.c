/* Switches under load on loopback: a peer that stops reading fills its
 * queue without holding up broadcasts to the others, and a stop with a
 * broadcast in flight on another thread, a handshake hanging and a redial
 * queued is clean (ASan) and leaves held peer handles and subscriptions in
 * a defined state. */
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_switch_support.h"

#define N_FAST 10
#define M_BCAST 48
#define FILL_LEN (16u * 1024u)

/* S's reactor blocks in receive on the first message, so S's network
 * thread reads nothing more: the kernel buffers, the sending stream's
 * queue and finally S's channel queue at the center fill up. */
static void test_stalled_reader(void **state)
{
    (void)state;
    node_opts co = {.queue_cap = 64};
    node *c = node_new(0, &co);
    node *fast[N_FAST];
    for (int i = 0; i < N_FAST; i++)
        fast[i] = node_new(1 + i, NULL);
    node *s = node_new(N_FAST + 1, NULL);
    uv_mutex_lock(&s->mu);
    s->gate_closed = true;
    uv_mutex_unlock(&s->mu);
    for (int i = 0; i < N_FAST; i++)
        dial(fast[i], c);
    dial(s, c);
    wait_peers(c, N_FAST + 1, 20000);
    tm2_peer *ps = peer_of(c, tm2_switch_id(s->sw));
    assert_non_null(ps);

    uint8_t *big = malloc(FILL_LEN);
    assert_non_null(big);
    memset(big, 0x5c, FILL_LEN);
    big[0] = 0;
    big[1] = 0xe8;   /* seq 1000: not counted per sequence */
    big[2] = 0x03;
    int r = 0;
    size_t sent = 0;
    /* A send that found no room for half a second: the pipe is stuck. */
    for (int i = 0; i < 20000 && r == 0; i++) {
        r = tm2_peer_send(ps, CH_A, big, FILL_LEN, 500);
        if (r == 0)
            sent++;
    }
    free(big);
    assert_int_equal(r, TM2_EFULL);
    assert_true(sent > 64);
    uint8_t small[8] = {0, 0xe8, 0x03};
    assert_int_equal(tm2_peer_try_send(ps, CH_A, small, sizeof small), TM2_EFULL);
    tm2_mconn_status st;
    assert_int_equal(tm2_peer_status(ps, &st), 0);
    /* The queue holds its capacity, plus the message being split into packets. */
    assert_true(st.channels[0].send_queue_size >= st.channels[0].send_queue_capacity);

    /* Everyone else gets every broadcast; S misses them all. */
    for (unsigned m = 0; m < M_BCAST; m++)
        assert_int_equal(bcast(c, m, 200), N_FAST);
    for (int i = 0; i < N_FAST; i++)
        wait_total(fast[i], M_BCAST, 20000);
    for (int i = 0; i < N_FAST; i++)
        for (unsigned m = 0; m < M_BCAST; m++)
            assert_int_equal(receipts(fast[i], 0, m), 1);
    assert_int_equal(tm2_peer_try_send(ps, CH_A, small, sizeof small), TM2_EFULL);
    uv_mutex_lock(&s->mu);
    assert_true(s->gated);
    uv_mutex_unlock(&s->mu);
    assert_true(tm2_peer_is_running(ps));
    tm2_peer_unref(ps);

    node_free(c);
    node_free(s);
    for (int i = 0; i < N_FAST; i++)
        node_free(fast[i]);
}

/* ---- stop under load ------------------------------------------------------------- */

typedef struct bcaster {
    node *n;
    atomic_bool stop;
    atomic_ulong rounds;
} bcaster;

static void bcast_main(void *arg)
{
    bcaster *b = arg;
    while (!atomic_load(&b->stop)) {
        (void)bcast(b->n, 1000, 1024);
        atomic_fetch_add(&b->rounds, 1);
    }
}

typedef struct reader {
    tm2_subscription *sub;
    int last;
    size_t clean_disconnects;
} reader;

static void reader_main(void *arg)
{
    reader *rd = arg;
    for (;;) {
        tm2_event ev;
        int r = tm2_subscription_next(rd->sub, &ev, -1);
        rd->last = r;
        if (r != 0)
            break;
        if (ev.type == TM2_EVENT_PEER_DISCONNECTED && ev.reason == 0)
            rd->clean_disconnects++;
    }
}

/* A socket that listens and never accepts: dials to it connect, then the
 * handshake hangs. */
static int silent_listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_stop_under_load(void **state)
{
    (void)state;
    uint16_t silent_port;
    int silent = silent_listener(&silent_port);
    /* A persistent peer nobody answers for: its redial waits in the queue. */
    uint16_t dead_port;
    int dead = silent_listener(&dead_port);
    close(dead);
    tm2_netaddr pers;
    char s[96];
    tm2_id pid = key_id(50);
    snprintf(s, sizeof s, "%s@127.0.0.1:%u", pid.s, (unsigned)dead_port);
    assert_int_equal(tm2_netaddr_parse(s, 0, &pers), 0);
    node_opts co = {.persistent = &pers, .n_persistent = 1, .redial_base_ms = 60000,
                    .handshake_ms = 10000};
    node *c = node_new(0, &co);
    node *ls[6];
    for (int i = 0; i < 6; i++) {
        ls[i] = node_new(1 + i, NULL);
        dial(ls[i], c);
    }
    wait_peers(c, 6, 20000);
    wait_evs(c, TM2_EVENT_DIAL_FAILED, 1, &pid, 1, 20000);
    tm2_netaddr hang;
    tm2_id hid = key_id(51);
    snprintf(s, sizeof s, "%s@127.0.0.1:%u", hid.s, (unsigned)silent_port);
    assert_int_equal(tm2_netaddr_parse(s, 0, &hang), 0);
    assert_int_equal(tm2_switch_dial_peers(c->sw, &hang, 1), 1);

    reader rd = {0};
    assert_int_equal(tm2_switch_subscribe(c->sw, TM2_EVENT_PEER_DISCONNECTED, NULL, 0, &rd.sub), 0);
    uv_thread_t rt;
    assert_int_equal(uv_thread_create(&rt, reader_main, &rd), 0);
    bcaster b = {.n = c};
    atomic_init(&b.stop, false);
    atomic_init(&b.rounds, 0);
    uv_thread_t bt;
    assert_int_equal(uv_thread_create(&bt, bcast_main, &b), 0);
    /* Traffic flows before the stop. */
    wait_total(ls[0], 20, 20000);
    tm2_peer *held = peer_of(c, NULL);
    assert_non_null(held);
    size_t in, out, dialing;
    tm2_switch_counts(c->sw, &in, &out, &dialing);
    assert_int_equal(in, 6);
    assert_true(dialing >= 1);   /* the persistent peer's redial, at least */

    tm2_switch_stop(c->sw);

    uv_thread_join(&rt);
    assert_int_equal(rd.last, TM2_ECLOSED);
    assert_int_equal(rd.clean_disconnects, 6);
    uv_mutex_lock(&c->mu);
    assert_int_equal(c->n_removed, 6);
    for (size_t i = 0; i < c->n_removed; i++)
        assert_int_equal(c->removed_reasons[i], 0);
    uv_mutex_unlock(&c->mu);
    size_t rounds = atomic_load(&b.rounds);
    assert_int_equal(bcast(c, 1000, 64), 0);
    atomic_store(&b.stop, true);
    uv_thread_join(&bt);
    assert_true(atomic_load(&b.rounds) >= rounds);
    assert_int_equal(tm2_switch_dial_peers(c->sw, &ls[0]->addr, 1), TM2_ECLOSED);
    tm2_switch_counts(c->sw, &in, &out, &dialing);
    assert_int_equal(in + out + dialing, 0);

    uint8_t m[4] = {0};
    assert_false(tm2_peer_is_running(held));
    assert_int_equal(tm2_peer_send(held, CH_A, m, sizeof m, 1000), TM2_ECLOSED);
    tm2_unsubscribe(rd.sub);
    node_free(c);
    /* Still valid after the switch is gone. */
    assert_int_equal(tm2_peer_try_send(held, CH_A, m, sizeof m), TM2_ECLOSED);
    assert_int_equal(tm2_peer_send(held, CH_A, m, sizeof m, 1000), TM2_ECLOSED);
    assert_non_null(tm2_peer_node_info(held));
    assert_int_equal(strlen(tm2_peer_id(held)->s), TM2_ID_LEN);
    tm2_peer_unref(held);
    for (int i = 0; i < 6; i++) {
        wait_peers(ls[i], 0, 20000);
        node_free(ls[i]);
    }
    close(silent);
}

typedef struct ticker {
    uv_mutex_t mu;
    uv_cond_t cv;
    int ticks;
    bool off_thread;
    uv_thread_t test_thread;
} ticker;

static void tick(tm2_switch *sw, void *user)
{
    (void)sw;
    ticker *t = user;
    uv_thread_t self = uv_thread_self();
    uv_mutex_lock(&t->mu);
    t->ticks++;
    if (uv_thread_equal(&self, &t->test_thread))
        t->off_thread = false;
    uv_cond_broadcast(&t->cv);
    uv_mutex_unlock(&t->mu);
}

/* Periodic work runs on the network thread from start to stop; stopping
 * twice, stopping a switch that never started and freeing one with work
 * still queued are all clean. */
static void test_every_and_lifecycle(void **state)
{
    (void)state;
    node *a = node_new(1, NULL);
    node_stop(a);
    node_stop(a);
    node_free(a);

    tm2_switch_config cfg;
    tm2_switch_config_default(&cfg);
    cfg.allow_duplicate_ip = true;
    node_key(2, &cfg.key);
    tm2_channel_desc ch = {.id = CH_A, .priority = 1};
    tm2_reactor r = {.name = "r", .channels = &ch, .n_channels = 1};
    cfg.reactors = &r;
    cfg.n_reactors = 1;
    cfg.network = "n";
    cfg.moniker = "m";
    cfg.listen_addr = "tcp://127.0.0.1:0";
    ticker t = {.off_thread = true, .test_thread = uv_thread_self()};
    uv_mutex_init(&t.mu);
    uv_cond_init(&t.cv);
    tm2_switch *sw;
    assert_int_equal(tm2_switch_new(&cfg, &sw), 0);
    assert_int_equal(tm2_switch_every(sw, 0, tick, &t), TM2_EINVAL);
    assert_int_equal(tm2_switch_every(sw, 5, tick, &t), 0);   /* before start */
    assert_int_equal(tm2_switch_start(sw), 0);
    uint64_t deadline = tv_now_ms() + 10000;
    uv_mutex_lock(&t.mu);
    while (t.ticks < 3 && tv_now_ms() < deadline)
        uv_cond_timedwait(&t.cv, &t.mu, 100 * 1000000u);
    assert_true(t.ticks >= 3);
    assert_true(t.off_thread);
    uv_mutex_unlock(&t.mu);
    tm2_switch_stop(sw);
    uv_mutex_lock(&t.mu);
    int after_stop = t.ticks;
    uv_mutex_unlock(&t.mu);
    assert_int_equal(tm2_switch_every(sw, 5, tick, &t), TM2_ECLOSED);
    tm2_switch_free(sw);
    assert_int_equal(t.ticks, after_stop);

    /* Never started: queued work and subscriptions end with the switch. */
    cfg.listen_addr = NULL;
    assert_int_equal(tm2_switch_new(&cfg, &sw), 0);
    assert_int_equal(tm2_switch_every(sw, 5, tick, &t), 0);
    tm2_subscription *sub;
    assert_int_equal(tm2_switch_subscribe(sw, TM2_EVENT_ALL, NULL, 0, &sub), 0);
    tm2_switch_free(sw);
    tm2_event ev;
    assert_int_equal(tm2_subscription_next(sub, &ev, 1000), TM2_ECLOSED);
    tm2_unsubscribe(sub);
    assert_int_equal(t.ticks, after_stop);
    uv_cond_destroy(&t.cv);
    uv_mutex_destroy(&t.mu);
}

static int starts, stops;
static int start_ok(tm2_switch *sw, void *user)
{
    (void)sw;
    (void)user;
    starts++;
    return 0;
}
static int start_fail(tm2_switch *sw, void *user)
{
    (void)sw;
    (void)user;
    return TM2_EREJECTED;
}
static void stop_count(tm2_switch *sw, void *user)
{
    (void)sw;
    (void)user;
    stops++;
}

/* A reactor refusing to start, or a listen address in use, fail the start;
 * reactors already started are stopped again. */
static void test_start_failures(void **state)
{
    (void)state;
    tm2_channel_desc c1 = {.id = 0x30, .priority = 1}, c2 = {.id = 0x31, .priority = 1};
    tm2_reactor rs[2] = {
        {.name = "ok", .channels = &c1, .n_channels = 1, .start = start_ok, .stop = stop_count},
        {.name = "no", .channels = &c2, .n_channels = 1, .start = start_fail, .stop = stop_count},
    };
    tm2_switch_config cfg;
    tm2_switch_config_default(&cfg);
    cfg.allow_duplicate_ip = true;
    node_key(3, &cfg.key);
    cfg.reactors = rs;
    cfg.n_reactors = 2;
    cfg.network = "n";
    cfg.moniker = "m";
    cfg.listen_addr = "tcp://127.0.0.1:0";
    tm2_switch *sw;
    assert_int_equal(tm2_switch_new(&cfg, &sw), 0);
    assert_int_equal(tm2_switch_start(sw), TM2_EREJECTED);
    assert_int_equal(starts, 1);
    assert_int_equal(stops, 1);
    assert_int_equal(tm2_switch_start(sw), TM2_ESTATE);
    assert_int_equal(tm2_switch_dial_peers(sw, &(tm2_netaddr){.id = key_id(4)}, 1), TM2_ECLOSED);
    tm2_switch_free(sw);

    /* The port of a running node is taken. */
    node *a = node_new(5, NULL);
    char listen[64];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%u", (unsigned)a->addr.port);
    rs[1].start = start_ok;
    cfg.listen_addr = listen;
    assert_int_equal(tm2_switch_new(&cfg, &sw), 0);
    assert_int_equal(tm2_switch_start(sw), TM2_EIO);
    assert_int_equal(starts, 3);
    assert_int_equal(stops, 3);
    tm2_switch_free(sw);
    node_free(a);
}

typedef struct racer {
    tm2_switch *sw;
    uv_barrier_t *go;
    int result;
} racer;

static void start_racer(void *arg)
{
    racer *r = arg;
    uv_barrier_wait(r->go);
    r->result = tm2_switch_start(r->sw);
}

static void stop_racer(void *arg)
{
    racer *r = arg;
    uv_barrier_wait(r->go);
    tm2_switch_stop(r->sw);
    r->result = 1;
}

/* Start and stop from two threads at once: one start wins, the other gets
 * TM2_ESTATE; both stops return once the switch is stopped (the second no
 * longer joins the thread again and hangs). Commands posted before a start
 * that fails are freed (LeakSanitizer checks). */
static void test_concurrent_lifecycle(void **state)
{
    (void)state;
    tm2_switch_config cfg;
    tm2_switch_config_default(&cfg);
    node_key(5, &cfg.key);
    cfg.network = "n";
    cfg.moniker = "m";
    cfg.listen_addr = "tcp://127.0.0.1:0";
    for (int round = 0; round < 20; round++) {
        tm2_switch *sw;
        assert_int_equal(tm2_switch_new(&cfg, &sw), 0);
        uv_barrier_t go;
        uv_barrier_init(&go, 2);
        racer a = {sw, &go, 99}, b = {sw, &go, 99};
        uv_thread_t ta, tb;
        assert_int_equal(uv_thread_create(&ta, start_racer, &a), 0);
        assert_int_equal(uv_thread_create(&tb, start_racer, &b), 0);
        uv_thread_join(&ta);
        uv_thread_join(&tb);
        assert_true((a.result == 0 && b.result == TM2_ESTATE) ||
                    (b.result == 0 && a.result == TM2_ESTATE));
        uv_barrier_destroy(&go);
        uv_barrier_init(&go, 2);
        assert_int_equal(uv_thread_create(&ta, stop_racer, &a), 0);
        assert_int_equal(uv_thread_create(&tb, stop_racer, &b), 0);
        uv_thread_join(&ta);
        uv_thread_join(&tb);
        uv_barrier_destroy(&go);
        tm2_switch_free(sw);
    }

    /* The port is taken: start fails; the dial and periodic work posted
     * before it are freed with the switch. */
    node *holder = node_new(6, NULL);
    char taken[64];
    snprintf(taken, sizeof taken, "tcp://127.0.0.1:%u", (unsigned)holder->addr.port);
    cfg.listen_addr = taken;
    tm2_switch *sw;
    assert_int_equal(tm2_switch_new(&cfg, &sw), 0);
    tm2_netaddr peer = holder->addr;
    peer.port = 1;   /* not our own (the taken) address */
    assert_int_equal(tm2_switch_dial_peers(sw, &peer, 1), 1);
    ticker t = {.off_thread = true, .test_thread = uv_thread_self()};
    assert_int_equal(tm2_switch_every(sw, 5, tick, &t), 0);
    assert_true(tm2_switch_start(sw) < 0);
    tm2_switch_stop(sw);
    tm2_switch_free(sw);
    node_free(holder);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stalled_reader),
        cmocka_unit_test(test_stop_under_load),
        cmocka_unit_test(test_every_and_lifecycle),
        cmocka_unit_test(test_start_failures),
        cmocka_unit_test(test_concurrent_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
