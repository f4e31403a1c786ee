/* Peer management against the reference's switch (tm2ref node) on loopback:
 *
 * - Simultaneous open (v1.7.1; the v1.2.0 switch has no tie-break): a tm2p2p
 *   switch and a reference node dial each other at the same moment, 30 rounds
 *   with fresh keys. Each side must end with exactly one connection to the
 *   other, the one dialled by the node with the smaller ID, and still have it
 *   after holding 250 ms. A round in which one dial found the other
 *   connection already up (no crossing on either side) is not counted; it
 *   must still end with one connection.
 * - The duplicate-IP guard, both ways: a reference node with
 *   allow_duplicate_ip=false keeps the first tm2p2p peer from 127.0.0.1 and
 *   refuses the second; a tm2p2p switch with allow_duplicate_ip=false does the
 *   same to two reference nodes. (On loopback every dial comes from
 *   127.0.0.1, since neither implementation binds a dial's source address;
 *   test_interop_netns shows that peers from other IPs are accepted.)
 * - A persistent reference peer killed and started again on the same port is
 *   redialled by tm2p2p at its configured address, twice.
 *
 * Every wait has a deadline; children are killed and reaped by the teardown
 * on every path. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchnode.h"
#include "tv.h"

#define WAIT_MS   20000
#define ROUNDS    30
#define HOLD_MS   250

typedef struct fixture {
    tnode t[2];
    rnode r[2];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    for (int i = 0; i < 2; i++)
        rnode_init(&f->r[i]);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 2; i++)
        rnode_stop(&f->r[i]);
    for (int i = 0; i < 2; i++)
        tnode_stop(&f->t[i]);
    free(f);
    return 0;
}

/* ---- simultaneous open ------------------------------------------------------- */

/* True when t holds exactly one peer, r, in direction t_out, and r holds
 * exactly one peer, t, in the other direction. */
static bool settled(tnode *t, rnode *r, bool t_out)
{
    bool has = false, out = false;
    if (tnode_peer_count(t, &r->id, &has, &out) != 1 || !has || out != t_out)
        return false;
    bool rhas = false, rout = false;
    int n = rnode_peers(r, &t->id, &rhas, &rout, 5000);
    return n == 1 && rhas && rout == !t_out;
}

/* Whether our dial to r ran: every dial that runs ends in an event marked
 * outbound (connected, failed or refused, replaced). A dial queued while the
 * reference's connection came up is dropped when it is due, silently. */
static bool our_dial_ran(tnode *t, const rnode *r)
{
    tnode_drain(t);
    for (size_t i = 0; i < t->n_evs; i++)
        if (t->evs[i].outbound && strcmp(t->evs[i].peer_id.s, r->id.s) == 0)
            return true;
    return false;
}

static void simultaneous_open(void **state)
{
    if (!TM2REF_V171)
        skip();   /* v1.2.0 keeps whichever connection registered first */
    fixture *f = *state;
    int done = 0, lower_ours = 0, skipped = 0;
    for (int attempt = 0; done < ROUNDS; attempt++) {
        if (attempt >= 2 * ROUNDS)
            fail_msg("only %d of %d attempts were simultaneous", done, attempt);
        tnode *t = &f->t[0];
        rnode *r = &f->r[0];
        uint8_t tseed = (uint8_t)(0x80 + attempt), rseed = (uint8_t)(0x10 + attempt);
        tnode_start(t, tseed, NULL);
        char dial[TM2_NETADDR_STRLEN];
        tnode_addr_string(t, dial, sizeof dial);

        /* Both dials go out together: the reference queues its dial on
         * SIGUSR2, ours follows as soon as it says so (DIAL_QUEUED), long
         * before either handshake can finish. If ours still wins the race to
         * its dial loop, it reports DIAL_SKIPPED. */
        rnode_start(r, rseed, (const char *const[]){"--dial", dial, "--dial-on-signal", NULL});
        assert_int_equal(kill(r->p.pid, SIGUSR2), 0);
        assert_non_null(rnode_wait(r, "DIAL_QUEUED", NULL, NULL, NULL, WAIT_MS));
        /* 0: the reference's connection was up already, nothing to dial. */
        int ours = tm2_switch_dial_peers(t->sw, &r->addr, 1);
        assert_true(ours == 0 || ours == 1);

        bool t_out = strcmp(t->id.s, r->id.s) < 0;   /* the smaller ID dials the kept one */
        assert_non_null(tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r->id, WAIT_MS));
        assert_non_null(rnode_wait(r, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));

        /* Wait until both sides hold the smaller ID's connection, re-checking
         * on every event. If one side skipped its dial because the other
         * connection was up already (ours returned 0 or never ran, the
         * reference printed DIAL_SKIPPED), the round was not simultaneous: it
         * must still settle on one connection, the other side's. */
        uint64_t end = tv_now_ms() + WAIT_MS, wrong_since = 0;
        size_t ev_from = 0;
        bool kept_out = t_out;
        for (;;) {
            if (ours == 1 && settled(t, r, t_out))
                break;
            bool theirs = settled(t, r, false);
            if (ours == 0 && theirs) {
                kept_out = false;
                break;
            }
            /* Our dial runs within milliseconds of the call; one that left
             * no trace in a second was dropped. */
            wrong_since = theirs ? (wrong_since ? wrong_since : tv_now_ms()) : 0;
            if (theirs && !our_dial_ran(t, r) && tv_now_ms() - wrong_since >= 1000) {
                kept_out = false;
                break;
            }
            if (rnode_wait(r, "DIAL_SKIPPED", NULL, NULL, t->id.s, 0) && settled(t, r, true)) {
                kept_out = true;
                break;
            }
            if (tv_now_ms() >= end)
                fail_msg("attempt %d: %s and %s do not settle on the connection %s dialled",
                         attempt, t->id.s, r->id.s, t_out ? t->id.s : r->id.s);
            (void)tnode_wait_event_from(t, &ev_from, TM2_EVENT_ALL, NULL, 50);
        }
        bool simultaneous = ours == 1 && our_dial_ran(t, r) &&
                            !rnode_wait(r, "DIAL_SKIPPED", NULL, NULL, t->id.s, 0);

        /* Hold, then check again: nothing dropped, nothing replaced. Events
         * up to the one announcing the kept connection belong to the
         * settling (a side may have seen a connection close there: when the
         * other side resolved first and closed the losing connection before
         * this side's own dial finished, as the reference itself would).
         * That announcement (CONNECTED, or REPLACED when the kept connection
         * took the other one's place) can come after the first check: the
         * switch lists a peer before its reactors' add_peer round and
         * announces it after, as the reference does, so a check made in
         * between sees the settled state with the REPLACED still to come.
         * Each side dials once, so the round has one connection in each
         * direction at most and the kept one is announced once. The
         * reference prints its events from a goroutine of their own, so a
         * line from the settling can come after its PEERS answer: its side
         * is judged by its peer set, ours by events too (a connection lost
         * and made again during the hold would show there). */
        ev_from = 0;
        const tm2_event *kept;
        do {
            kept = tnode_wait_event_from(t, &ev_from,
                                         TM2_EVENT_PEER_CONNECTED | TM2_EVENT_PEER_REPLACED,
                                         &r->id, WAIT_MS);
            if (!kept)
                fail_msg("attempt %d: the kept connection (%s) was never announced", attempt,
                         kept_out ? "outbound" : "inbound");
        } while (kept->outbound != kept_out);
        assert_null(tnode_wait_event_from(t, &ev_from,
                                          TM2_EVENT_PEER_DISCONNECTED | TM2_EVENT_PEER_REPLACED,
                                          NULL, HOLD_MS));
        if (!settled(t, r, kept_out))
            fail_msg("attempt %d: the connection did not last %d ms", attempt, HOLD_MS);

        if (simultaneous) {
            done++;
            lower_ours += t_out;
        } else {
            skipped++;
        }
        rnode_stop(r);
        tnode_stop(t);
        memset(t, 0, sizeof *t);
    }
    if (skipped)
        print_message("%d attempts where one dial found the other connection up were not "
                      "counted\n", skipped);
    /* Both orders of IDs were exercised. */
    assert_true(lower_ours > 0 && lower_ours < ROUNDS);
}

/* ---- duplicate IP -------------------------------------------------------------- */

static void reference_refuses_second_peer_from_ip(void **state)
{
    fixture *f = *state;
    rnode *r = &f->r[0];
    tnode *t1 = &f->t[0], *t2 = &f->t[1];
    rnode_start(r, 0x21, (const char *const[]){"--allow-duplicate-ip=false", NULL});
    tnode_start(t1, 0x51, NULL);
    tnode_start(t2, 0x52, NULL);

    assert_int_equal(tm2_switch_dial_peers(t1->sw, &r->addr, 1), 1);
    assert_non_null(rnode_wait(r, "PEER_CONNECTED", t1->id.s, NULL, NULL, WAIT_MS));
    assert_non_null(tnode_wait_event(t1, TM2_EVENT_PEER_CONNECTED, &r->id, WAIT_MS));

    assert_int_equal(tm2_switch_dial_peers(t2->sw, &r->addr, 1), 1);
    assert_non_null(rnode_wait(r, "REJECTED", NULL, NULL, "peer from this IP", WAIT_MS));
    /* Our side may have finished its handshake before the reference's switch
     * refused the connection, and seen the peer briefly; either way the dial
     * ends in a failure or a disconnect, and without the peer. */
    assert_non_null(tnode_wait_event(
        t2, TM2_EVENT_PEER_DISCONNECTED | TM2_EVENT_DIAL_FAILED | TM2_EVENT_PEER_REJECTED, &r->id,
        WAIT_MS));
    bool has = true;
    tnode_peer_count(t2, &r->id, &has, NULL);
    assert_false(has);
    assert_int_equal(rnode_peers(r, &t1->id, &has, NULL, WAIT_MS), 1);
    assert_true(has);
    assert_null(rnode_wait(r, "PEER_CONNECTED", t2->id.s, NULL, NULL, 0));
}

static void tm2p2p_refuses_second_peer_from_ip(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r1 = &f->r[0], *r2 = &f->r[1];
    tnode_start(t, 0x53, &(tnode_opts){.refuse_duplicate_ip = true});
    char dial[TM2_NETADDR_STRLEN];
    tnode_addr_string(t, dial, sizeof dial);

    rnode_start(r1, 0x22, (const char *const[]){"--dial", dial, NULL});
    assert_non_null(tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r1->id, WAIT_MS));
    assert_non_null(rnode_wait(r1, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));

    rnode_start(r2, 0x23, (const char *const[]){"--dial", dial, NULL});
    const tm2_event *e = tnode_wait_event(t, TM2_EVENT_PEER_REJECTED, &r2->id, WAIT_MS);
    assert_non_null(e);
    assert_false(e->outbound);
    assert_true(e->reason_text[0] != '\0');
    assert_null(tnode_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r2->id, 0));
    bool has = false;
    assert_int_equal(tnode_peer_count(t, &r1->id, &has, NULL), 1);
    assert_true(has);
    /* The reference's dial ends in a failure or, if it saw us briefly, a
     * disconnect, and without us. A connection its switch was still adding
     * when we closed it is announced neither way: tm2ref reports that one
     * as a failed dial too (about one run in fifty here). */
    uint64_t end = tv_now_ms() + WAIT_MS;
    while (!rnode_wait(r2, "PEER_DISCONNECTED", t->id.s, NULL, NULL, 0) &&
           !rnode_wait(r2, "DIAL_FAILED", dial, NULL, NULL, 0)) {
        assert_true(tv_now_ms() < end);
        (void)rnode_next_line(r2, 100);
    }
    bool rhas = true;
    assert_int_equal(rnode_peers(r2, &t->id, &rhas, NULL, WAIT_MS), 0);
    assert_false(rhas);
}

/* ---- persistent peer restarted ----------------------------------------------- */

static void persistent_reference_peer_redialled(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    rnode_start(r, 0x24, NULL);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)r->addr.port);
    const char *persistent[] = {r->addr_s};
    tnode_start(t, 0x54, &(tnode_opts){.persistent = persistent, .n_persistent = 1});
    assert_true(tm2_switch_is_persistent(t->sw, &r->id));

    size_t from = 0;
    const tm2_event *e = tnode_wait_event_from(t, &from, TM2_EVENT_PEER_CONNECTED, &r->id, WAIT_MS);
    assert_non_null(e);
    assert_true(e->outbound);
    for (int restart = 0; restart < 2; restart++) {
        rnode_stop(r);
        assert_non_null(
            tnode_wait_event_from(t, &from, TM2_EVENT_PEER_DISCONNECTED, &r->id, WAIT_MS));
        /* A new process, same key, same port. */
        rnode_start(r, 0x24, (const char *const[]){"--listen", listen, NULL});
        e = tnode_wait_event_from(t, &from, TM2_EVENT_PEER_CONNECTED, &r->id, WAIT_MS);
        assert_non_null(e);
        assert_true(e->outbound);
        assert_int_equal(e->addr.port, r->addr.port);
        const char *l = rnode_wait(r, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS);
        assert_non_null(l);
        assert_non_null(strstr(l, " in"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(simultaneous_open, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_refuses_second_peer_from_ip, setup, teardown),
        cmocka_unit_test_setup_teardown(tm2p2p_refuses_second_peer_from_ip, setup, teardown),
        cmocka_unit_test_setup_teardown(persistent_reference_peer_redialled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
