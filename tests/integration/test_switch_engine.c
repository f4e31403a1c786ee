/* Switches on a given engine (switch/switch_engine.h): two of them on one
 * libuv engine, driven by the test's own thread, connect over loopback,
 * exchange messages (copied, and one shared), are observed through the
 * event hook and the discovery reactor's dial-failed callback, and stop
 * with tm2__switch_stop_async. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "net/engine_uv.h"
#include "switch/switch_engine.h"
#include "tm2p2p/switch.h"

#define CH 0x40

typedef struct sim_node {
    tm2_switch *sw;
    tm2_node_key key;
    tm2_channel_desc chan;
    tm2_reactor reactor;
    int connected, disconnected, received, dial_failed, hook_failed;
    int hook_events;
    bool stopped;
    uint64_t last_mono;
} sim_node;

static void hook(void *user, const tm2_event *ev)
{
    sim_node *n = user;
    n->hook_events++;
    /* Stamped by the engine's clocks. */
    assert_true(ev->mono_ms >= n->last_mono);
    assert_true(ev->unix_ms > 1600000000000);
    n->last_mono = ev->mono_ms;
    if (ev->type == TM2_EVENT_PEER_CONNECTED)
        n->connected++;
    if (ev->type == TM2_EVENT_PEER_DISCONNECTED)
        n->disconnected++;
    if (ev->type == TM2_EVENT_DIAL_FAILED)
        n->hook_failed++;
}

static void on_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)p;
    sim_node *n = user;
    assert_int_equal(ch, CH);
    assert_int_equal(len, 5);
    assert_memory_equal(msg, "hello", 5);
    n->received++;
}

static void on_dial_failed(tm2_switch *sw, const tm2_netaddr *addr, int err, void *user)
{
    sim_node *n = user;
    assert_ptr_equal(sw, n->sw);
    assert_true(addr->id.s[0] != '\0');
    assert_true(err < 0);
    n->dial_failed++;
}

static void on_stopped(tm2_switch *sw, void *user)
{
    sim_node *n = user;
    assert_ptr_equal(sw, n->sw);
    n->stopped = true;
}

static void node_init(sim_node *n, tm2__engine *e, int seed)
{
    memset(n, 0, sizeof *n);
    uint8_t s[32] = {(uint8_t)seed, 0x77};
    tm2_node_key_from_seed(&n->key, s);
    n->chan = (tm2_channel_desc){.id = CH, .priority = 1, .send_queue_capacity = 16,
                                 .recv_message_capacity = 1024};
    n->reactor = (tm2_reactor){.name = "sim", .channels = &n->chan, .n_channels = 1, .user = n,
                               .receive = on_receive, .on_dial_failed = on_dial_failed};
    tm2_switch_config c;
    tm2_switch_config_default(&c);
    c.key = n->key;
    c.listen_addr = "tcp://127.0.0.1:0";
    c.network = "sim-chain";
    c.moniker = "sim";
    c.reactors = &n->reactor;
    c.n_reactors = 1;
    c.dial_timeout_ms = 1000;
    c.allow_duplicate_ip = true;
    c.mconn = (tm2_mconn_config){.max_packet_payload = 1024, .flush_throttle_ms = 1};
    assert_int_equal(tm2__switch_new_on(&c, e, &n->sw), 0);
    assert_ptr_equal(tm2__switch_engine(n->sw), e);
    tm2__switch_set_event_hook(n->sw, hook, n);
}

/* Runs the loop until cond or about ms of loop time. */
#define RUN_UNTIL(loop, ms, cond)                                                   \
    do {                                                                            \
        uint64_t end_ = uv_now(loop) + (ms);                                        \
        while (!(cond) && uv_now(loop) < end_) {                                    \
            uv_update_time(loop);                                                   \
            uv_run(loop, UV_RUN_NOWAIT);                                            \
        }                                                                           \
        assert_true(cond);                                                          \
    } while (0)

static void two_switches_one_engine(void **state)
{
    (void)state;
    uv_loop_t loop;
    tm2__uv_engine ue;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(tm2__uv_engine_init(&ue, &loop), 0);
    sim_node a, b;
    node_init(&a, &ue.e, 1);
    node_init(&b, &ue.e, 2);
    /* Set-up runs inline: listening once start returns. */
    assert_int_equal(tm2_switch_start(a.sw), 0);
    assert_int_equal(tm2_switch_start(b.sw), 0);
    tm2_netaddr la;
    assert_int_equal(tm2_switch_listen_addr(a.sw, &la), 0);
    /* The blocking stop is refused on an engine's switch. */
    tm2_switch_stop(a.sw);
    assert_int_equal(tm2_switch_dial_peers(b.sw, &la, 1), 1);
    /* A command: nothing happens before the engine turns. */
    assert_int_equal(b.connected, 0);
    RUN_UNTIL(&loop, 10000, a.connected == 1 && b.connected == 1);

    tm2_peer *p[1];
    assert_int_equal(tm2_switch_peers(b.sw, p, 1), 1);
    assert_int_equal(tm2_peer_try_send(p[0], CH, (const uint8_t *)"hello", 5), 0);
    RUN_UNTIL(&loop, 10000, a.received == 1);

    /* One shared message, queued twice without a copy; the caller's
     * reference goes before the bytes are written. */
    assert_null(tm2_msg_new(NULL, 5));
    tm2_msg *m = tm2_msg_new("hello", 5);
    assert_non_null(m);
    assert_int_equal(tm2_msg_len(m), 5);
    assert_memory_equal(tm2_msg_data(m), "hello", 5);
    assert_int_equal(tm2_peer_try_send_msg(p[0], CH, NULL), TM2_EINVAL);
    assert_int_equal(tm2_peer_try_send_msg(p[0], CH + 1, m), TM2_ECHANNEL);
    assert_int_equal(tm2_peer_try_send_msg(p[0], CH, m), 0);
    assert_int_equal(tm2_peer_send_msg(p[0], CH, m, 1000), 0);
    tm2_msg_unref(m);
    tm2_peer_unref(p[0]);
    RUN_UNTIL(&loop, 10000, a.received == 3);

    /* A dial nobody answers: the reactor hears of it as the event is published. */
    tm2_netaddr dead = la;
    dead.port = 1;
    tm2_node_key k3;
    uint8_t s3[32] = {3, 0x77};
    tm2_node_key_from_seed(&k3, s3);
    tm2_node_key_id(&k3, &dead.id);
    assert_int_equal(tm2_switch_dial_peers(b.sw, &dead, 1), 1);
    RUN_UNTIL(&loop, 10000, b.dial_failed >= 1);
    assert_int_equal(b.dial_failed, b.hook_failed);

    tm2__switch_stop_async(a.sw, on_stopped, &a);
    tm2__switch_stop_async(b.sw, on_stopped, &b);
    assert_false(a.stopped);
    RUN_UNTIL(&loop, 10000, a.stopped && b.stopped);
    assert_true(a.disconnected == 1 && b.disconnected == 1);
    tm2_switch_free(a.sw);
    tm2_switch_free(b.sw);
    tm2__uv_engine_close(&ue);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Stopping a switch never started still answers on a later turn. */
static void stop_before_start(void **state)
{
    (void)state;
    uv_loop_t loop;
    tm2__uv_engine ue;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(tm2__uv_engine_init(&ue, &loop), 0);
    sim_node a;
    node_init(&a, &ue.e, 4);
    tm2__switch_stop_async(a.sw, on_stopped, &a);
    assert_false(a.stopped);
    RUN_UNTIL(&loop, 1000, a.stopped);
    tm2_switch_free(a.sw);
    tm2__uv_engine_close(&ue);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_switches_one_engine),
        cmocka_unit_test(stop_before_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
