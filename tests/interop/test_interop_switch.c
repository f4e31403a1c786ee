/* The whole stack against the reference: tm2p2p switches (with the
 * discovery reactor and a 0x70 test reactor) and the reference's own switch,
 * transport and discovery reactor (tm2ref node) on loopback.
 *
 * - Both dial directions: each side reports the other connected, so each
 *   accepted the other's NodeInfo and passed every transport check; 0x70
 *   messages flow both ways (the reference greets, counts and echoes).
 * - A different chain ID: each side refuses the other with a reason (ours
 *   carries TM2_EINCOMPAT), in both dial directions.
 * - Discovery across implementations: a tm2p2p node that knows only one
 *   reference node reaches a second one through that node's Response, and a
 *   reference node that knows only one tm2p2p node reaches a second tm2p2p
 *   node through our Response.
 *
 * Every wait has a deadline; tm2ref children are killed and reaped by the
 * teardown on every path. */
#include <stdlib.h>
#include <string.h>

#include "switchnode.h"
#include "tv.h"

#define WAIT_MS       20000
#define NREF          3
#define NT            2

typedef struct fixture {
    tnode t[NT];
    rnode r[NREF];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    for (int i = 0; i < NREF; i++)
        rnode_init(&f->r[i]);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < NREF; i++)
        rnode_stop(&f->r[i]);
    for (int i = 0; i < NT; i++)
        tnode_stop(&f->t[i]);
    free(f);
    return 0;
}

/* ---- connection and messages ----------------------------------------------------- */

/* What the reference's NodeInfo must hold as gno.land's makeNodeInfo builds
 * it (WIRE.md 5.2), and that the peer runs on both sides. */
static void check_ref_peer(tnode *t, rnode *r, bool outbound)
{
    const tm2_event *e = tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r->id, WAIT_MS);
    assert_non_null(e);
    assert_int_equal(e->outbound, outbound);
    assert_non_null(rnode_wait(r, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));

    tm2_peer *p = tnode_find_peer(t, &r->id);
    assert_non_null(p);
    assert_int_equal(tm2_peer_is_outbound(p), outbound);
    const tm2_node_info *ni = tm2_peer_node_info(p);
    assert_string_equal(ni->network, SN_CHAIN);
    assert_string_equal(ni->version, TM2_PROTOCOL_VERSION);
    assert_string_equal(ni->moniker, "tm2ref");
    assert_string_equal(ni->tx_index, "off");
    static const char *const names[5] = {"abci", "app", "bft", "blockchain", "p2p"};
    assert_int_equal(ni->n_versions, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(ni->versions[i].name, names[i]);
        assert_string_equal(ni->versions[i].version, i == 1 ? "" : TM2_PROTOCOL_VERSION);
        assert_false(ni->versions[i].optional);
    }
    assert_true(tm2_node_info_has_channel(ni, SN_TEST_CH));
    assert_true(tm2_node_info_has_channel(ni, TM2_DISCOVERY_CHANNEL));
    assert_true(ni->has_net_address);
    assert_true(tm2_netaddr_equal(&ni->net_address, &r->addr));

    /* The reference greets; we send; it reports the message and echoes it. */
    char hello[96];
    snprintf(hello, sizeof hello, "hello %s", r->id.s);
    assert_true(tnode_wait_msg(t, &r->id, hello, WAIT_MS));
    char msg[96];
    int len = snprintf(msg, sizeof msg, "from tm2p2p %s %s", t->id.s, outbound ? "out" : "in");
    assert_int_equal(tm2_peer_send(p, SN_TEST_CH, msg, (size_t)len, 10000), 0);
    assert_true(rnode_wait_recv(r, (size_t)len, &t->id, WAIT_MS));
    char echo[128];
    snprintf(echo, sizeof echo, "echo %s", msg);
    assert_true(tnode_wait_msg(t, &r->id, echo, WAIT_MS));
    tm2_peer_unref(p);
}

static void tm2p2p_dials_reference(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    rnode_start(r, 0x31, NULL);
    tnode_start(t, 0x41, NULL);
    assert_int_equal(tm2_switch_dial_peers(t->sw, &r->addr, 1), 1);
    check_ref_peer(t, r, true);
}

static void reference_dials_tm2p2p(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    tnode_start(t, 0x42, NULL);
    char dial[TM2_NETADDR_STRLEN];
    assert_true(tm2_netaddr_format(&t->addr, dial, sizeof dial) > 0);
    rnode_start(r, 0x32, (const char *const[]){"--dial", dial, NULL});
    check_ref_peer(t, r, false);
    /* We advertise what the reference dialled: our bound address. */
    assert_non_null(rnode_wait(r, "PEER_CONNECTED", t->id.s, NULL, NULL, 0));
}

/* ---- incompatible chain ID --------------------------------------------------------- */

static void incompatible_network_tm2p2p_dials(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    rnode_start(r, 0x33, (const char *const[]){"--chain-id", "other-chain", NULL});
    tnode_start(t, 0x43, NULL);
    assert_int_equal(tm2_switch_dial_peers(t->sw, &r->addr, 1), 1);
    const tm2_event *e =
        tnode_wait_event(t, TM2_EVENT_DIAL_FAILED | TM2_EVENT_PEER_REJECTED, &r->id, WAIT_MS);
    assert_non_null(e);
    assert_int_equal(e->reason, TM2_EINCOMPAT);
    assert_true(e->reason_text[0] != '\0');
    assert_non_null(rnode_wait(r, "REJECTED", NULL, NULL, "incompatible networks", WAIT_MS));
    assert_null(tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, NULL, 0));
    assert_null(rnode_wait(r, "PEER_CONNECTED", NULL, NULL, NULL, 0));
}

static void incompatible_network_reference_dials(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    tnode_start(t, 0x44, NULL);
    char dial[TM2_NETADDR_STRLEN];
    assert_true(tm2_netaddr_format(&t->addr, dial, sizeof dial) > 0);
    rnode_start(r, 0x34, (const char *const[]){"--chain-id", "other-chain", "--dial", dial, NULL});
    assert_non_null(rnode_wait(r, "DIAL_FAILED", dial, NULL, "incompatible networks", WAIT_MS));
    const tm2_event *e = tnode_wait_event(t, TM2_EVENT_PEER_REJECTED, &r->id, WAIT_MS);
    assert_non_null(e);
    assert_int_equal(e->reason, TM2_EINCOMPAT);
    assert_false(e->outbound);
    assert_true(e->reason_text[0] != '\0');
    assert_null(tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, NULL, 0));
    assert_null(rnode_wait(r, "PEER_CONNECTED", NULL, NULL, NULL, 0));
}

/* ---- discovery across implementations ------------------------------------------- */

/* R1 and R2 are connected; T knows only R1 and must reach R2 through R1's
 * Response. R2 runs without discovery, so it cannot learn T from R1 and dial
 * it first: the connection must be T's dial. */
static void tm2p2p_learns_reference_peer(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r1 = &f->r[0], *r2 = &f->r[1];
    rnode_start(r1, 0x35, NULL);
    rnode_start(r2, 0x36, (const char *const[]){"--dial", r1->addr_s, "--pex=false", NULL});
    assert_non_null(rnode_wait(r1, "PEER_CONNECTED", r2->id.s, NULL, NULL, WAIT_MS));
    assert_non_null(rnode_wait(r2, "PEER_CONNECTED", r1->id.s, NULL, NULL, WAIT_MS));

    tnode_start(t, 0x45, NULL);
    assert_int_equal(tm2_switch_dial_peers(t->sw, &r1->addr, 1), 1);
    assert_non_null(tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r1->id, WAIT_MS));
    const tm2_event *e = tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r2->id, WAIT_MS);
    assert_non_null(e);
    assert_true(e->outbound);
    assert_non_null(rnode_wait(r2, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));

    tm2_discovery_stats st;
    tm2_discovery_get_stats(t->disc, &st);
    assert_true(st.responses_received >= 1);
    assert_int_equal(st.responses_rejected, 0);
    assert_true(st.addrs_accepted >= 1);
}

/* T2 is connected to T; R knows only T and must reach T2 through our
 * Response. T2's one outbound slot is taken by T, so it cannot learn R from
 * T and dial it first: the connection must be R's dial. */
static void reference_learns_tm2p2p_peer(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0], *t2 = &f->t[1];
    rnode *r = &f->r[0];
    tnode_start(t, 0x46, NULL);
    tnode_start(t2, 0x47, &(tnode_opts){.max_outbound = 1});
    assert_int_equal(tm2_switch_dial_peers(t2->sw, &t->addr, 1), 1);
    assert_non_null(tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, &t2->id, WAIT_MS));
    assert_non_null(tnode_wait_event(t2, TM2_EVENT_PEER_CONNECTED, &t->id, WAIT_MS));

    char dial[TM2_NETADDR_STRLEN];
    assert_true(tm2_netaddr_format(&t->addr, dial, sizeof dial) > 0);
    rnode_start(r, 0x37, (const char *const[]){"--dial", dial, NULL});
    assert_non_null(rnode_wait(r, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));
    assert_non_null(rnode_wait(r, "PEER_CONNECTED", t2->id.s, NULL, NULL, WAIT_MS));
    const tm2_event *e = tnode_wait_event(t2, TM2_EVENT_PEER_CONNECTED, &r->id, WAIT_MS);
    assert_non_null(e);
    assert_false(e->outbound);

    tm2_discovery_stats st;
    tm2_discovery_get_stats(t->disc, &st);
    assert_true(st.requests_received >= 1);
    assert_true(st.requests_answered >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(tm2p2p_dials_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_dials_tm2p2p, setup, teardown),
        cmocka_unit_test_setup_teardown(incompatible_network_tm2p2p_dials, setup, teardown),
        cmocka_unit_test_setup_teardown(incompatible_network_reference_dials, setup, teardown),
        cmocka_unit_test_setup_teardown(tm2p2p_learns_reference_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_learns_tm2p2p_peer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
