/* Switches on loopback: a star and a ring of 16 where every broadcast
 * reaches every direct peer exactly once, and the peer limits (inbound,
 * outbound, persistent peers exempt). Waits are on events and counters with
 * deadlines. */
#include "test_switch_support.h"

#define N_TOPO 16
#define K_MSGS 5

/* Everyone broadcasts K_MSGS on CH_A; each node must count exactly one copy
 * of each message of each neighbour, and none from anyone else. */
static void broadcast_round(node **ns, size_t n, bool (*adjacent)(size_t, size_t))
{
    for (size_t i = 0; i < n; i++) {
        size_t deg = npeers(ns[i]);
        for (unsigned s = 0; s < K_MSGS; s++)
            assert_int_equal(bcast(ns[i], s, 64 + s), (int)deg);
    }
    for (size_t i = 0; i < n; i++)
        wait_total(ns[i], (uint64_t)npeers(ns[i]) * K_MSGS, 20000);
    /* Stopping ends every callback: later duplicates would have been counted. */
    for (size_t i = 0; i < n; i++)
        node_stop(ns[i]);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            for (unsigned s = 0; s < K_MSGS; s++)
                assert_int_equal(receipts(ns[i], (int)j, s), adjacent(i, j) ? 1u : 0u);
    for (size_t i = 0; i < n; i++)
        node_free(ns[i]);
}

static bool star_adj(size_t i, size_t j) { return i != j && (i == 0 || j == 0); }

static bool ring_adj(size_t i, size_t j)
{
    return (i + 1) % N_TOPO == j || (j + 1) % N_TOPO == i;
}

static void test_star(void **state)
{
    (void)state;
    node *ns[N_TOPO];
    for (int i = 0; i < N_TOPO; i++)
        ns[i] = node_new(i, NULL);
    for (int i = 1; i < N_TOPO; i++)
        dial(ns[i], ns[0]);
    wait_peers(ns[0], N_TOPO - 1, 20000);
    for (int i = 1; i < N_TOPO; i++)
        wait_peers(ns[i], 1, 20000);
    size_t in, out, dialing;
    tm2_switch_counts(ns[0]->sw, &in, &out, &dialing);
    assert_int_equal(in, N_TOPO - 1);
    assert_int_equal(out, 0);
    tm2_switch_counts(ns[1]->sw, &in, &out, &dialing);
    assert_int_equal(in, 0);
    assert_int_equal(out, 1);
    assert_int_equal(dialing, 0);
    /* Connected events name the peer and its socket address. */
    wait_evs(ns[0], TM2_EVENT_PEER_CONNECTED, 0, tm2_switch_id(ns[5]->sw), 1, 5000);
    wait_evs(ns[5], TM2_EVENT_PEER_CONNECTED, 0, tm2_switch_id(ns[0]->sw), 1, 5000);
    for (size_t i = 0; i < ns[5]->n_evs; i++)
        if (ns[5]->evs[i].type == TM2_EVENT_PEER_CONNECTED) {
            assert_true(ns[5]->evs[i].outbound);
            assert_true(tm2_netaddr_equal(&ns[5]->evs[i].addr, &ns[0]->addr));
        }
    broadcast_round(ns, N_TOPO, star_adj);
}

static void test_ring(void **state)
{
    (void)state;
    node *ns[N_TOPO];
    for (int i = 0; i < N_TOPO; i++)
        ns[i] = node_new(i, NULL);
    for (int i = 0; i < N_TOPO; i++)
        dial(ns[i], ns[(i + 1) % N_TOPO]);
    for (int i = 0; i < N_TOPO; i++)
        wait_peers(ns[i], 2, 20000);
    for (int i = 0; i < N_TOPO; i++) {
        size_t in, out;
        tm2_switch_counts(ns[i]->sw, &in, &out, NULL);
        assert_int_equal(in, 1);
        assert_int_equal(out, 1);
    }
    broadcast_round(ns, N_TOPO, ring_adj);
}

/* ---- limits --------------------------------------------------------------------- */

static bool rejected_by(node *hub, const tm2_id *id)
{
    return count_evs(hub, TM2_EVENT_PEER_REJECTED, TM2_ELIMIT, id) > 0;
}

static void test_max_inbound(void **state)
{
    (void)state;
    node_opts ho = {.max_inbound = 3};
    node *hub = node_new(0, &ho);
    node *ds[6];
    for (int i = 0; i < 6; i++)
        ds[i] = node_new(1 + i, NULL);
    for (int i = 0; i < 6; i++)
        dial(ds[i], hub);
    wait_evs(hub, TM2_EVENT_PEER_REJECTED, TM2_ELIMIT, NULL, 3, 20000);
    wait_peers(hub, 3, 20000);
    /* The hub closes the sockets it refuses: those dialers see the end,
     * after a handshake that succeeded from their side or during it. */
    size_t kept = 0;
    for (int i = 0; i < 6; i++) {
        const tm2_id *id = tm2_switch_id(ds[i]->sw);
        if (rejected_by(hub, id)) {
            wait_peers(ds[i], 0, 20000);
            if (count_evs(ds[i], TM2_EVENT_DIAL_FAILED, 1, NULL) == 0)
                wait_evs(ds[i], TM2_EVENT_PEER_DISCONNECTED, 1, NULL, 1, 20000);
        } else {
            wait_peers(ds[i], 1, 20000);
            kept++;
        }
    }
    assert_int_equal(kept, 3);
    assert_int_equal(npeers(hub), 3);
    assert_int_equal(count_evs(hub, TM2_EVENT_PEER_REJECTED, TM2_ELIMIT, NULL), 3);
    size_t in, out;
    tm2_switch_counts(hub->sw, &in, &out, NULL);
    assert_int_equal(in, 3);
    assert_int_equal(out, 0);
    node_free(hub);
    for (int i = 0; i < 6; i++)
        node_free(ds[i]);
}

static void test_max_outbound(void **state)
{
    (void)state;
    node_opts o = {.max_outbound = 3};
    node *d = node_new(0, &o);
    node *ts[8];
    tm2_netaddr addrs[8];
    for (int i = 0; i < 8; i++) {
        ts[i] = node_new(1 + i, NULL);
        addrs[i] = ts[i]->addr;
    }
    assert_int_equal(tm2_switch_dial_peers(d->sw, addrs, 8), 8);
    wait_peers(d, 3, 20000);
    wait_evs(d, TM2_EVENT_DIAL_FAILED, TM2_ELIMIT, NULL, 5, 20000);
    size_t in, out, dialing;
    tm2_switch_counts(d->sw, &in, &out, &dialing);
    assert_int_equal(out, 3);
    assert_int_equal(dialing, 0);
    wait_evs(d, TM2_EVENT_PEER_CONNECTED, 0, NULL, 3, 20000);
    assert_int_equal(count_evs(d, TM2_EVENT_PEER_CONNECTED, 0, NULL), 3);
    /* At the cap, a new request is refused at once. */
    node *extra = node_new(9, NULL);
    dial(d, extra);
    wait_evs(d, TM2_EVENT_DIAL_FAILED, TM2_ELIMIT, &extra->addr.id, 1, 5000);
    assert_int_equal(npeers(d), 3);
    node_free(extra);
    node_free(d);
    for (int i = 0; i < 8; i++)
        node_free(ts[i]);
}

typedef struct settle_arg {
    node **ps;
    size_t n;
} settle_arg;

static bool pred_star_settled(node *hub, void *arg)
{
    settle_arg *sa = arg;
    if (npeers(hub) != sa->n)
        return false;
    bool ok = true;
    for (size_t i = 0; i < sa->n && ok; i++) {
        tm2_peer *p = peer_of(hub, tm2_switch_id(sa->ps[i]->sw));
        tm2_peer *q = npeers(sa->ps[i]) == 1 ? peer_of(sa->ps[i], NULL) : NULL;
        ok = p && q && tm2_peer_is_outbound(p) != tm2_peer_is_outbound(q);
        tm2_peer_unref(p);
        tm2_peer_unref(q);
    }
    return ok;
}

/* Caps of 1 both ways, four persistent peers (two of them dialling the hub
 * too, at the same time): all four connect. */
static void test_persistent_exempt(void **state)
{
    (void)state;
    node *ps[4];
    tm2_netaddr addrs[4];
    for (int i = 0; i < 4; i++) {
        ps[i] = node_new(1 + i, NULL);
        addrs[i] = ps[i]->addr;
    }
    node_opts ho = {.max_inbound = 1, .max_outbound = 1, .persistent = addrs, .n_persistent = 4,
                    .redial_base_ms = 50, .redial_max_ms = 200};
    node *hub = node_new(0, &ho);
    /* 0 when the hub's own dial already connected them. */
    assert_true(tm2_switch_dial_peers(ps[0]->sw, &hub->addr, 1) >= 0);
    assert_true(tm2_switch_dial_peers(ps[1]->sw, &hub->addr, 1) >= 0);
    /* Simultaneous dials settle on one connection per pair, the same on
     * both sides. */
    settle_arg sa = {ps, 4};
    if (!wait_node(hub, 20000, pred_star_settled, &sa))
        fail_msg("the hub has %zu peers", npeers(hub));
    for (int i = 0; i < 4; i++) {
        tm2_peer *p = peer_of(hub, &addrs[i].id);
        assert_non_null(p);
        assert_true(tm2_peer_is_persistent(p));
        tm2_peer_unref(p);
    }
    /* A non-persistent newcomer still meets the caps' usual rules: one
     * inbound slot, and none of the persistent peers take it. */
    node *np = node_new(7, NULL);
    dial(np, hub);
    wait_peers(hub, 5, 20000);
    node *np2 = node_new(8, NULL);
    dial(np2, hub);
    wait_evs(hub, TM2_EVENT_PEER_REJECTED, TM2_ELIMIT, &np2->addr.id, 1, 20000);
    node_free(np2);
    node_free(np);
    node_free(hub);
    for (int i = 0; i < 4; i++)
        node_free(ps[i]);
}

int main(void)
{
    /* SIGPIPE is left alone: tm2_switch_start must ignore it itself. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_star),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_max_inbound),
        cmocka_unit_test(test_max_outbound),
        cmocka_unit_test(test_persistent_exempt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
