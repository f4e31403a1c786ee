/* Switch and peer counters (tm2_switch_stats, tm2_peer_stats) and event
 * timestamps, on loopback: messages and bytes per channel both ways, peers
 * by direction, disconnects, failed dials and rejections by reason,
 * handshake failures by stage, counts that outlive their peer, and the
 * keepalive round trip. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "test_switch_support.h"

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static tm2_switch_counters stats_of(node *n)
{
    tm2_switch_counters s;
    assert_int_equal(tm2_switch_stats(n->sw, &s), 0);
    return s;
}

static const tm2_channel_counts *chan(const tm2_channel_counts *c, size_t n, uint8_t id)
{
    for (size_t i = 0; i < n; i++)
        if (c[i].id == id)
            return &c[i];
    fail_msg("channel 0x%02x not listed", id);
    return NULL;
}

static size_t by_reason(const uint64_t *a, int err)
{
    return (size_t)a[-err];
}

static void test_traffic_and_peers(void **state)
{
    (void)state;
    int64_t w0 = wall_ms();
    uint64_t m0 = tv_now_ms();
    node *a = node_new(1, NULL);
    node *b = node_new(2, NULL);
    dial(a, b);
    wait_peers(a, 1, 20000);
    wait_peers(b, 1, 20000);
    wait_evs(a, TM2_EVENT_PEER_CONNECTED, 1, &b->addr.id, 1, 5000);

    /* The event carries when it happened, on both clocks. */
    const tm2_event *ev = &a->evs[0];
    assert_int_equal(ev->type, TM2_EVENT_PEER_CONNECTED);
    assert_true(ev->unix_ms >= w0 - 5 && ev->unix_ms <= wall_ms() + 5);
    assert_true(ev->mono_ms + 5 >= m0 && ev->mono_ms <= tv_now_ms() + 5);

    tm2_switch_counters sa = stats_of(a), sb = stats_of(b);
    assert_int_equal(sa.peers_outbound, 1);
    assert_int_equal(sa.peers_inbound, 0);
    assert_int_equal(sb.peers_inbound, 1);
    assert_int_equal(sa.peers_connected_outbound, 1);
    assert_int_equal(sb.peers_connected_inbound, 1);
    assert_int_equal(sa.dials_started, 1);
    assert_true(sa.handshakes_ok >= 1 && sb.handshakes_ok >= 1);
    assert_int_equal(sb.inbound_accepted, 1);
    assert_true(sa.uptime_ms > 0);
    assert_int_equal(sa.n_channels, 2);

    /* 10 messages of 100 bytes a -> b, 3 of 50 b -> a. */
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(bcast(a, i, 100), 1);
    wait_total(b, 10, 10000);
    tm2_peer *pb = peer_of(b, &a->addr.id);
    assert_non_null(pb);
    for (unsigned i = 0; i < 3; i++) {
        uint8_t msg[50];
        memset(msg, 0xab, sizeof msg);
        msg[0] = 2;
        msg[1] = (uint8_t)(100 + i);
        msg[2] = 0;
        assert_int_equal(tm2_peer_send(pb, CH_A, msg, sizeof msg, 5000), 0);
    }
    wait_total(a, 3, 10000);

    sa = stats_of(a);
    sb = stats_of(b);
    const tm2_channel_counts *ca = chan(sa.channels, sa.n_channels, CH_A);
    const tm2_channel_counts *cb = chan(sb.channels, sb.n_channels, CH_A);
    assert_int_equal(ca->msgs_sent, 10);
    assert_int_equal(ca->bytes_sent, 1000);
    assert_int_equal(ca->msgs_recv, 3);
    assert_int_equal(ca->bytes_recv, 150);
    assert_int_equal(cb->msgs_sent, 3);
    assert_int_equal(cb->bytes_sent, 150);
    assert_int_equal(cb->msgs_recv, 10);
    assert_int_equal(cb->bytes_recv, 1000);
    assert_int_equal(chan(sa.channels, sa.n_channels, CH_B)->msgs_sent, 0);
    /* Packet bytes: the messages plus their framing. */
    assert_true(sa.wire_bytes_sent > 1000 && sa.wire_bytes_recv > 150);
    assert_true(sb.wire_bytes_recv > 1000 && sb.wire_bytes_sent > 150);

    tm2_peer_counters pc;
    assert_int_equal(tm2_peer_stats(pb, &pc), 0);
    const tm2_channel_counts *pca = chan(pc.channels, pc.n_channels, CH_A);
    assert_int_equal(pca->msgs_recv, 10);
    assert_int_equal(pca->msgs_sent, 3);
    assert_true(pc.wire_bytes_recv >= 1000 && pc.wire_bytes_sent >= 150);
    assert_true(pc.uptime_ms > 0);

    /* a goes: b counts one disconnect under its reason; traffic counts stay. */
    node_free(a);
    wait_evs(b, TM2_EVENT_PEER_DISCONNECTED, 1, NULL, 1, 10000);
    sb = stats_of(b);
    assert_int_equal(sb.peers_inbound, 0);
    size_t gone = 0;
    for (size_t i = 0; i < TM2_STATS_REASONS; i++)
        gone += sb.peers_disconnected[i];
    assert_int_equal(gone, 1);
    assert_int_equal(by_reason(sb.peers_disconnected, b->evs[b->n_evs - 1].reason), 1);
    cb = chan(sb.channels, sb.n_channels, CH_A);
    assert_int_equal(cb->msgs_recv, 10);
    assert_int_equal(cb->bytes_sent, 150);
    assert_true(stats_of(b).wire_bytes_recv >= sb.wire_bytes_recv);
    /* The peer's own counts outlive its connection. */
    assert_int_equal(tm2_peer_stats(pb, &pc), 0);
    assert_int_equal(chan(pc.channels, pc.n_channels, CH_A)->msgs_recv, 10);
    assert_int_equal(pc.uptime_ms, 0);
    tm2_peer_unref(pb);
    node_free(b);
}

static void test_failures(void **state)
{
    (void)state;
    node *b = node_new(2, &(node_opts){.max_inbound = 1});
    node *c = node_new(3, NULL);
    node *d = node_new(4, NULL);

    /* A closed port: a failed dial at the connect stage. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    tm2_netaddr closed = c->addr;
    closed.id = key_id(77);
    closed.port = ntohs(sa.sin_port);
    assert_int_equal(tm2_switch_dial_peers(c->sw, &closed, 1), 1);
    wait_evs(c, TM2_EVENT_DIAL_FAILED, TM2_ECONNREFUSED, &closed.id, 1, 10000);
    close(fd);
    tm2_switch_counters sc = stats_of(c);
    assert_int_equal(by_reason(sc.dials_failed, TM2_ECONNREFUSED), 1);
    assert_int_equal(sc.handshakes_failed[TM2_STAGE_CONNECT], 1);

    /* b takes one inbound peer: the second is refused at accept, before
     * any handshake (nothing could make room: both are on 127.0.0.1, one
     * network group), and counted by reason; its dial fails. */
    dial(c, b);
    wait_peers(b, 1, 10000);
    dial(d, b);
    wait_refused(b, TM2_REFUSED_FULL, 1, 10000);
    wait_evs(d, TM2_EVENT_DIAL_FAILED, 1, &b->addr.id, 1, 10000);
    tm2_switch_counters sb = stats_of(b);
    assert_int_equal(sb.inbound_refused[TM2_REFUSED_FULL], 1);
    assert_int_equal(by_reason(sb.rejected, TM2_ELIMIT), 0);
    assert_int_equal(sb.handshakes_failed[TM2_STAGE_CHECK], 0);
    assert_int_equal(sb.inbound_accepted, 1);
    assert_int_equal(sb.peers_connected_inbound, 1);
    assert_string_equal(tm2_refusal_name(TM2_REFUSED_FULL), "full");
    assert_string_equal(tm2_refusal_name(TM2_REFUSALS), "?");
    assert_string_equal(tm2_eviction_name(TM2_EVICTED_PERSISTENT), "persistent");
    assert_int_equal(tm2_switch_stats(NULL, &sb), TM2_EINVAL);
    assert_int_equal(tm2_peer_stats(NULL, NULL), TM2_EINVAL);
    node_free(d);
    node_free(c);
    node_free(b);
}

/* Keepalive every 500 ms (the harness turns it off), the pong timeout as
 * long as it may be: a loaded sanitizer run must not lose the peer. */
static void fast_ping(tm2_switch_config *c, void *arg)
{
    (void)arg;
    c->mconn.ping_interval_ms = 500;
    c->mconn.pong_timeout_ms = 499;
}

typedef struct rtt_arg {
    tm2_peer *p;
    tm2_peer_counters pc;
    uint32_t min0;
    uint64_t until_ms;             /* peer uptime to reach */
} rtt_arg;

static bool pred_measured(node *n, void *arg)
{
    (void)n;
    rtt_arg *r = arg;
    assert_int_equal(tm2_peer_stats(r->p, &r->pc), 0);
    return r->pc.min_rtt_ms > 0;
}

static bool pred_later(node *n, void *arg)
{
    rtt_arg *r = arg;
    assert_true(pred_measured(n, arg));
    assert_true(r->pc.min_rtt_ms <= r->min0 && r->pc.min_rtt_ms <= r->pc.rtt_ms);
    return r->pc.uptime_ms >= r->until_ms;
}

/* a pings b every 500 ms: a's counters for b carry a round trip (at least
 * 1 ms, loopback being faster), the minimum no larger than the last. b,
 * without keepalive, answers but measures nothing. */
static void test_round_trip(void **state)
{
    (void)state;
    node *a = node_new(1, &(node_opts){.tweak = fast_ping});
    node *b = node_new(2, NULL);
    dial(a, b);
    wait_peers(a, 1, 20000);
    wait_peers(b, 1, 20000);
    rtt_arg r = {.p = peer_of(a, &b->addr.id)};
    assert_non_null(r.p);
    assert_true(wait_node(a, 10000, pred_measured, &r));
    assert_true(r.pc.rtt_ms >= 1 && r.pc.min_rtt_ms <= r.pc.rtt_ms);
    /* Two more trips: the minimum never grows, nor passes the last. */
    r.min0 = r.pc.min_rtt_ms;
    r.until_ms = r.pc.uptime_ms + 1000;
    assert_true(wait_node(a, 10000, pred_later, &r));
    tm2_peer *pa = peer_of(b, &a->addr.id);
    assert_non_null(pa);
    tm2_peer_counters pc;
    assert_int_equal(tm2_peer_stats(pa, &pc), 0);
    assert_int_equal(pc.rtt_ms, 0);
    assert_int_equal(pc.min_rtt_ms, 0);
    tm2_peer_unref(pa);
    /* Gone: reads 0. */
    node_free(b);
    wait_peers(a, 0, 10000);
    assert_int_equal(tm2_peer_stats(r.p, &pc), 0);
    assert_int_equal(pc.min_rtt_ms, 0);
    tm2_peer_unref(r.p);
    node_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traffic_and_peers),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
