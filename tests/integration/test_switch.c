/* Switches on loopback: a star and a ring of 16 where every broadcast
 * reaches every direct peer exactly once, and the peer limits (inbound,
 * outbound, persistent peers exempt). Waits are on events and counters with
 * deadlines. */
#include "test_switch_support.h"

#include "net/workpool.h"

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
    /* Each switch's network thread, and the handshake workers they share,
     * carry their names. */
    assert_int_equal(tv_threads_named("tm2p2p-net"), N_TOPO);
    assert_true(tm2__wpool_threads() > 0);
    assert_int_equal(tv_threads_named("tm2p2p-hs"), (int)tm2__wpool_threads());
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

/* Refusals of the hub: after a handshake (an event naming the peer), or at
 * accept when it was already full (counted, no event). */
static size_t limit_refusals(node *hub)
{
    return count_evs(hub, TM2_EVENT_PEER_REJECTED, TM2_ELIMIT, NULL) +
           (size_t)refused(hub, TM2_REFUSED_FULL);
}

static bool pred_three_refused(node *hub, void *arg)
{
    (void)arg;
    return npeers(hub) == 3 && limit_refusals(hub) == 3;
}

static bool pred_dial_ended(node *n, void *arg)
{
    (void)arg;
    return count_evs(n, TM2_EVENT_DIAL_FAILED, 1, NULL) +
               count_evs(n, TM2_EVENT_PEER_DISCONNECTED, 1, NULL) >
           0;
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
    if (!wait_node(hub, 20000, pred_three_refused, NULL))
        fail_msg("hub: %zu peers, %zu refusals", npeers(hub), limit_refusals(hub));
    /* The hub closes the sockets it refuses: those dialers see the end,
     * after a handshake that succeeded from their side, during it, or
     * before it began. */
    size_t kept = 0;
    for (int i = 0; i < 6; i++) {
        const tm2_id *id = tm2_switch_id(ds[i]->sw);
        tm2_peer *p = peer_of(hub, id);
        bool connected = p != NULL;
        if (p)
            tm2_peer_unref(p);
        if (connected) {
            wait_peers(ds[i], 1, 20000);
            kept++;
        } else {
            /* Its dial failed, or its connection was closed: whichever it
             * saw, not before it saw it. */
            if (!wait_node(ds[i], 20000, pred_dial_ended, NULL))
                fail_msg("dialer %d: neither a failed dial nor a disconnect", i);
            wait_peers(ds[i], 0, 20000);
        }
        if (rejected_by(hub, id))
            assert_false(connected);
    }
    assert_int_equal(kept, 3);
    assert_int_equal(npeers(hub), 3);
    assert_int_equal(limit_refusals(hub), 3);
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

/* Caps of 1 both ways and four persistent peers: all four are dialled and
 * kept although the outbound cap is reached, and count towards it (as in
 * the reference v1.7.1): a discovered peer is then refused; a persistent
 * peer's ID learned at another address is not dialled there. */
static void test_persistent_over_caps(void **state)
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
    wait_peers(hub, 4, 20000);
    for (int i = 0; i < 4; i++) {
        tm2_peer *p = peer_of(hub, &addrs[i].id);
        assert_non_null(p);
        assert_true(tm2_peer_is_persistent(p));
        assert_true(tm2_peer_is_outbound(p));
        tm2_peer_unref(p);
    }
    node *other = node_new(9, NULL);
    dial(hub, other);
    wait_evs(hub, TM2_EVENT_DIAL_FAILED, TM2_ELIMIT, &other->addr.id, 1, 20000);
    tm2_netaddr wrong = other->addr;
    wrong.id = addrs[0].id;
    assert_int_equal(tm2_switch_dial_peers(hub->sw, &wrong, 1), 0);
    /* The inbound side has its one slot. */
    node *np = node_new(7, NULL);
    dial(np, hub);
    wait_peers(hub, 5, 20000);
    /* Full, and every persistent peer is there: refused at accept. */
    node *np2 = node_new(8, NULL);
    dial(np2, hub);
    wait_refused(hub, TM2_REFUSED_FULL, 1, 20000);
    wait_evs(np2, TM2_EVENT_DIAL_FAILED, 1, &hub->addr.id, 1, 20000);
    assert_int_equal(npeers(hub), 5);
    assert_int_equal(count_evs(other, TM2_EVENT_PEER_CONNECTED, 1, NULL), 0);
    node_free(np2);
    node_free(np);
    node_free(other);
    node_free(hub);
    for (int i = 0; i < 4; i++)
        node_free(ps[i]);
}

typedef struct pair_arg {
    node *b;
} pair_arg;

/* Exactly one connection between a and b, the same one on both sides. */
static bool pred_one_pair(node *a, void *arg)
{
    node *b = ((pair_arg *)arg)->b;
    tm2_peer *p = peer_of(a, tm2_switch_id(b->sw));
    tm2_peer *q = peer_of(b, tm2_switch_id(a->sw));
    bool ok = p && q && tm2_peer_is_outbound(p) != tm2_peer_is_outbound(q);
    tm2_peer_unref(p);
    tm2_peer_unref(q);
    return ok;
}

/* No dial and no handshake in flight: nothing more can arrive. */
static bool settled(node *x)
{
    size_t dialing = 1;
    tm2_switch_counts(x->sw, NULL, NULL, &dialing);
    tm2_switch_counters st;
    return dialing == 0 && tm2_switch_stats(x->sw, &st) == 0 && st.handshakes_inbound == 0 &&
           st.handshakes_outbound == 0;
}

/* x's last announcement of y (CONNECTED or REPLACED, read so far): 1
 * outbound, 0 inbound, -1 none. */
static int last_announced(node *x, node *y)
{
    for (size_t i = x->n_evs; i-- > 0;) {
        const tm2_event *e = &x->evs[i];
        if ((e->type == TM2_EVENT_PEER_CONNECTED || e->type == TM2_EVENT_PEER_REPLACED) &&
            !strcmp(e->peer_id.s, tm2_switch_id(y->sw)->s))
            return e->outbound;
    }
    return -1;
}

/* One connection, and both sides have announced it as the one they keep:
 * the state they end in. Peer lists change before the events announce it,
 * so pred_one_pair alone can catch the losing connection for a moment,
 * before the far end's swap reaches this side. (Usually the kept one is
 * the one the smaller ID dialled; when the full inbound side refused that
 * dial at accept, before any ID was known, it is the other.) */
static bool pred_kept(node *a, void *arg)
{
    node *b = ((pair_arg *)arg)->b;
    if (!pred_one_pair(a, arg))
        return false;
    tm2_peer *p = peer_of(a, tm2_switch_id(b->sw));
    int out = p ? tm2_peer_is_outbound(p) : -1;
    tm2_peer_unref(p);
    return last_announced(a, b) == out && last_announced(b, a) == !out && settled(a) && settled(b);
}

/* Simultaneous opens against a node whose inbound side is full: a
 * replacement passes the cap (it adds no peer), so both ends always keep
 * the same single connection; reactors see
 * each connection added once and removed once. The swap is a REPLACED
 * event where the winner arrives while the loser runs; where the far end
 * closed the loser first (a loaded machine), a disconnect and a connect.
 * A kept connection that the far end dialled holds the slot of a's dial:
 * a counts it outbound, and its inbound side stays at its cap. */
static void test_simultaneous_open_inbound_full(void **state)
{
    (void)state;
    node_opts ao = {.max_inbound = 1};
    node *a = node_new(20, &ao);
    node *filler = node_new(21, NULL);
    dial(filler, a);
    wait_peers(a, 1, 20000);
    int inbound_kept = 0;
    for (int round = 0; round < 6; round++) {
        node *b = node_new(22 + round, NULL);
        assert_true(tm2_switch_dial_peers(a->sw, &b->addr, 1) >= 0);
        assert_true(tm2_switch_dial_peers(b->sw, &a->addr, 1) >= 0);
        pair_arg pa = {b};
        if (!wait_two(a, b, 20000, pred_kept, &pa)) {
            for (size_t i = 0; i < a->n_evs; i++)
                fprintf(stderr, "a ev %d %s out=%d %s\n", a->evs[i].type, a->evs[i].peer_id.s, a->evs[i].outbound, a->evs[i].reason_text);
            for (size_t i = 0; i < b->n_evs; i++)
                fprintf(stderr, "b ev %d %s out=%d %s\n", b->evs[i].type, b->evs[i].peer_id.s, b->evs[i].outbound, b->evs[i].reason_text);
            fail_msg("round %d: no common connection (a %zu peers, b %zu)", round, npeers(a),
                     npeers(b));
        }
        tm2_peer *kept = peer_of(a, tm2_switch_id(b->sw));
        assert_non_null(kept);
        inbound_kept += !tm2_peer_is_outbound(kept);
        tm2_peer_unref(kept);
        size_t in = 0, out = 0;
        tm2_switch_counts(a->sw, &in, &out, NULL);
        assert_int_equal(in, 1);    /* the filler */
        assert_int_equal(out, 1);   /* b, whoever dialled */
        /* Held: a late close of the losing connection must not take the
         * kept one with it. (A dial refused for the full inbound side before
         * any connection was registered is a real loss and announced.) */
        size_t da = count_evs(a, TM2_EVENT_PEER_DISCONNECTED, 1, tm2_switch_id(b->sw));
        size_t db = count_evs(b, TM2_EVENT_PEER_DISCONNECTED, 1, tm2_switch_id(a->sw));
        uint64_t until = tv_now_ms() + 250;
        while (tv_now_ms() < until)
            (void)wait_two(a, b, (uint32_t)(until - tv_now_ms()), pred_never, NULL);
        assert_true(pred_one_pair(a, &pa));
        assert_int_equal(count_evs(a, TM2_EVENT_PEER_DISCONNECTED, 1, tm2_switch_id(b->sw)), da);
        assert_int_equal(count_evs(b, TM2_EVENT_PEER_DISCONNECTED, 1, tm2_switch_id(a->sw)), db);
        /* Every connect that was not a swap was announced once; each side
         * announced at most one more connect than disconnects. */
        size_t ca = count_evs(a, TM2_EVENT_PEER_CONNECTED, 0, tm2_switch_id(b->sw));
        size_t cb = count_evs(b, TM2_EVENT_PEER_CONNECTED, 0, tm2_switch_id(a->sw));
        assert_int_equal(ca, da + 1);
        assert_int_equal(cb, db + 1);
        node_free(b);
        wait_peers(a, 1, 20000);
    }
    print_message("kept connections dialled by the far end: %d of 6\n", inbound_kept);
    assert_true(inbound_kept > 0);
    node_free(filler);
    node_free(a);
}

/* The duplicate-IP guard (allow_duplicate_ip false): a second inbound peer
 * from 127.0.0.1 is refused, naming the IP; our own dial to a peer on that
 * IP is not an inbound peer and goes through. */
static void test_duplicate_ip(void **state)
{
    (void)state;
    node_opts ho = {.deny_duplicate_ip = true};
    node *hub = node_new(30, &ho);
    node *x = node_new(31, NULL), *y = node_new(32, NULL), *z = node_new(33, NULL);
    dial(x, hub);
    wait_peers(hub, 1, 20000);
    dial(y, hub);
    wait_evs(hub, TM2_EVENT_PEER_REJECTED, TM2_EDUPLICATE, &y->addr.id, 1, 20000);
    bool found = false;
    for (size_t i = 0; i < hub->n_evs; i++)
        if (hub->evs[i].type == TM2_EVENT_PEER_REJECTED && strstr(hub->evs[i].reason_text, "this IP"))
            found = true;
    assert_true(found);
    dial(hub, z);
    wait_peers(hub, 2, 20000);
    node_free(z);
    node_free(y);
    node_free(x);
    node_free(hub);
}

int main(void)
{
    /* SIGPIPE is left alone: tm2_switch_start must ignore it itself. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_star),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_max_inbound),
        cmocka_unit_test(test_max_outbound),
        cmocka_unit_test(test_persistent_over_caps),
        cmocka_unit_test(test_simultaneous_open_inbound_full),
        cmocka_unit_test(test_duplicate_ip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
