/* Attacks from a peer the node accepted: garbage after the handshake
 * (raw and sealed), frame and packet lengths over their limits, an
 * unknown channel, a message over a channel's receive capacity, and a ping
 * flood. Each runs while the node serves four honest peers exchanging
 * messages (attack_support.h); see tests/attack/README.md. */
#include "attack_support.h"

#define ROUNDS 10                /* attackers per attack, one after the other */
#define CLOSE_MS 5000            /* the node must cut a misbehaving peer within this */

typedef int (*misbehave_fn)(evil *e, int round);

/* ROUNDS attackers each join from their own address, misbehave, and must
 * be cut by the node: the connection closed, a PEER_DISCONNECTED event
 * with the reason (want, or any non-zero when want is 0), the reason
 * counted, and a "peer disconnected" log line naming the attacker and why. */
static void run_attack(arena *a, const char *what, const uint8_t *ch, size_t nch, misbehave_fn fn,
                       int want)
{
    tm2_switch_counters *c0 = target_stats(&a->t);
    int reasons[ROUNDS];
    arena_begin(a);
    for (int i = 0; i < ROUNDS; i++) {
        char src[32];
        snprintf(src, sizeof src, "127.70.%d.%d", (int)(want < 0 ? -want : 0), i + 1);
        evil *e = ev_new(6000 + (uint32_t)(-want) * 100 + (uint32_t)i, &a->t);
        int r = ev_join(e, src, &a->t, ch, nch, 5000);
        if (r != 0)
            fail_msg("%s: attacker %d was not admitted: %s", what, i, tm2_strerror(r));
        r = fn(e, i);
        if (r != 0 && r != -1)
            fail_msg("%s: attacker %d could not send: %s", what, i, tm2_strerror(r));
        if (!ev_wait_closed(e, CLOSE_MS))
            fail_msg("%s: the node kept attacker %d for %d ms", what, i, CLOSE_MS);
        char why[TM2_EVENT_REASON_LEN];
        if (!ev_wait_event(e, TM2_EVENT_PEER_DISCONNECTED, CLOSE_MS, &reasons[i], why, sizeof why))
            fail_msg("%s: no disconnect event for attacker %d", what, i);
        if (want ? reasons[i] != want : reasons[i] == 0)
            fail_msg("%s: attacker %d cut for %s (%s), want %s", what, i,
                     tm2_errname(reasons[i]), why, want ? tm2_errname(want) : "an error");
        if (!target_logged(&a->t, "peer disconnected", e->id.s, "reason="))
            fail_msg("%s: no log line for attacker %d", what, i);
        if (i == 0)
            fprintf(stderr, "%s: cut for %s: %s\n", what, tm2_errname(reasons[i]), why);
        ev_free(e);
    }
    arena_end(a, what);
    tm2_switch_counters *c1 = target_stats(&a->t);
    uint64_t counted = 0;
    for (int i = 0; i < ROUNDS; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = reasons[j] == reasons[i];
        if (!seen)
            counted += by_reason(c1->peers_disconnected, reasons[i]) -
                       by_reason(c0->peers_disconnected, reasons[i]);
    }
    assert_true(counted >= ROUNDS);
    free(c0);
    free(c1);
}

/* Random bytes where sealed frames belong. */
static int raw_garbage(evil *e, int round)
{
    (void)round;
    uint8_t junk[4096];
    randombytes_buf(junk, sizeof junk);
    return ev_write(e, junk, sizeof junk, 2000);
}

/* Well-sealed frames of random plaintext: not packets. */
static int sealed_garbage(evil *e, int round)
{
    (void)round;
    uint8_t junk[4096];
    randombytes_buf(junk, sizeof junk);
    junk[0] = 0x80 | junk[0];   /* never a short, valid-looking packet prefix */
    return ev_send(e, junk, sizeof junk, 2000);
}

/* A frame whose length field is over the 1024 bytes a frame can carry. */
static int frame_length(evil *e, int round)
{
    static const uint32_t lens[] = {1025, 0xffff, 0x7fffffff, 0xffffffff};
    return ev_send_bad_frame(e, lens[round % 4], 2000);
}

/* A packet whose length prefix is far over the packet limit (1056 bytes
 * for 1024-byte payloads), up to the largest a varint can say. */
static int packet_length(evil *e, int round)
{
    static const uint64_t lens[] = {1057, 1u << 20, 1ull << 31, 1ull << 40, UINT64_MAX};
    uint8_t p[16];
    size_t k = 0;
    uint64_t v = lens[round % 5];
    do {
        p[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            p[k] |= 0x80;
        k++;
    } while (v);
    memset(p + k, 0x0b, sizeof p - k);
    return ev_send(e, p, sizeof p, 2000);
}

static int unknown_channel(evil *e, int round)
{
    uint8_t msg[32];
    memset(msg, 0x33, sizeof msg);
    return ev_send_msg(e, (uint8_t)(0x70 + round), msg, sizeof msg, 2000);
}

/* A message one byte over CH_A's receive capacity (64 KiB on the node),
 * sent as a well-formed sequence of packets. */
static int over_capacity(evil *e, int round)
{
    (void)round;
    size_t n = RELAY_RECV_CAP + 1;
    uint8_t *msg = malloc(n);
    assert_non_null(msg);
    memset(msg, 0x44, n);
    int r = ev_send_msg(e, CH_A, msg, n, 5000);
    free(msg);
    return r;
}

static void garbage_raw(void **state)
{
    run_attack(*state, "garbage after the handshake (unsealed)", EV_CH_BOTH, 2, raw_garbage,
               TM2_EDECRYPT);
}

static void garbage_sealed(void **state)
{
    run_attack(*state, "garbage after the handshake (sealed)", EV_CH_BOTH, 2, sealed_garbage, 0);
}

static void oversized_frame_length(void **state)
{
    run_attack(*state, "frame length field over 1024", EV_CH_BOTH, 2, frame_length, TM2_EFRAME);
}

static void oversized_packet_length(void **state)
{
    run_attack(*state, "packet length prefix over the limit", EV_CH_BOTH, 2, packet_length, 0);
}

static void unknown_channel_msg(void **state)
{
    run_attack(*state, "message on an unknown channel", EV_CH_BOTH, 2, unknown_channel,
               TM2_ECHANNEL);
}

static void over_receive_capacity(void **state)
{
    run_attack(*state, "message over the receive capacity", EV_CH_BOTH, 2, over_capacity,
               TM2_EMSGSIZE);
}

/* The discovery channel's capacity is 5 MiB: the node holds that much of
 * one peer's message before it can tell it is too big, and gives it back. */
static void over_discovery_capacity(void **state)
{
    arena *a = *state;
    tm2_switch_counters *c0 = target_stats(&a->t);
    arena_begin(a);
    evil *e = ev_new(6900, &a->t);
    assert_int_equal(ev_join(e, "127.70.200.1", &a->t, EV_CH_PEX, 1, 5000), 0);
    size_t n = 5242880 + 1;
    uint8_t *msg = malloc(n);
    assert_non_null(msg);
    memset(msg, 0x0a, n);
    int r = ev_send_msg(e, TM2_DISCOVERY_CHANNEL, msg, n, 20000);
    free(msg);
    assert_true(r == 0 || r == -1);
    assert_true(ev_wait_closed(e, CLOSE_MS));
    int reason = 0;
    assert_true(ev_wait_event(e, TM2_EVENT_PEER_DISCONNECTED, CLOSE_MS, &reason, NULL, 0));
    assert_int_equal(reason, TM2_EMSGSIZE);
    ev_free(e);
    arena_end(a, "5 MiB + 1 on the discovery channel");
    tm2_switch_counters *c1 = target_stats(&a->t);
    assert_true(by_reason(c1->peers_disconnected, TM2_EMSGSIZE) >
                by_reason(c0->peers_disconnected, TM2_EMSGSIZE));
    free(c0);
    free(c1);
}

/* ---- messages started and never finished ------------------------------------------------ */

#define ASSEMBLY_MS 2000         /* the node's recv_assembly_timeout_ms in this test */

/* Attackers each start a 4 MiB message on the discovery channel (under its
 * 5 MiB capacity) and never send its last packet. The node holds each
 * partial message in the peer's receive budget and cuts the peer when the
 * message is not complete within the assembly timeout, which gives the
 * memory back; nothing lets a peer hold it longer by trickling more. */
static void unfinished_messages(void **state)
{
    arena *a = *state;
    enum { K = 4 };
    size_t n = 4u << 20;
    uint8_t *msg = malloc(n);
    assert_non_null(msg);
    memset(msg, 0x0a, n);
    tm2_switch_counters *c0 = target_stats(&a->t);
    arena_begin(a);
    evil *e[K];
    uint64_t t_first[K];
    for (int i = 0; i < K; i++) {
        char src[32];
        snprintf(src, sizeof src, "127.70.202.%d", i + 1);
        e[i] = ev_new(6960 + (uint32_t)i, &a->t);
        assert_int_equal(ev_join(e[i], src, &a->t, EV_CH_PEX, 1, 5000), 0);
        t_first[i] = tv_now_ms();
        int r = ev_send_packets(e[i], TM2_DISCOVERY_CHANNEL, msg, n, true, 10000);
        assert_true(r == 0 || r == -1);
    }
    free(msg);
    for (int i = 0; i < K; i++) {
        if (!ev_wait_closed(e[i], ASSEMBLY_MS + CLOSE_MS))
            fail_msg("unfinished message: attacker %d kept", i);
        uint64_t held = e[i]->t_closed - t_first[i];
        int reason = 0;
        char why[TM2_EVENT_REASON_LEN];
        assert_true(ev_wait_event(e[i], TM2_EVENT_PEER_DISCONNECTED, CLOSE_MS, &reason, why,
                                  sizeof why));
        if (i == 0)
            fprintf(stderr, "unfinished message: cut after %llu ms for %s: %s\n",
                    (unsigned long long)held, tm2_errname(reason), why);
        assert_int_equal(reason, TM2_ETIMEDOUT);
        assert_true(held <= ASSEMBLY_MS + 1000);
        assert_true(target_logged(&a->t, "peer disconnected", e[i]->id.s, "assembly"));
        ev_free(e[i]);
    }
    arena_end(a, "messages started and never finished");
    tm2_switch_counters *c1 = target_stats(&a->t);
    assert_true(by_reason(c1->peers_disconnected, TM2_ETIMEDOUT) -
                    by_reason(c0->peers_disconnected, TM2_ETIMEDOUT) >= K);
    free(c0);
    free(c1);
}

/* ---- ping flood -------------------------------------------------------------------- */

#define PING_FLOOD_MS 3000

/* Pings as fast as the socket takes them, never reading a pong. The node
 * owes one pong for any number of pings (they share it), and its receive
 * rate limit (5 MB/s) paces how fast it reads them: the attacker gets its
 * byte rate and no more, and costs the honest peers nothing. A node that
 * disconnects such a peer passes too (the reason is then counted). */
static void ping_flood(void **state)
{
    arena *a = *state;
    tm2_switch_counters *c0 = target_stats(&a->t);
    arena_begin(a);
    evil *e = ev_new(6950, &a->t);
    assert_int_equal(ev_join(e, "127.70.201.1", &a->t, EV_CH_BOTH, 2, 5000), 0);
    uint8_t pings[85 * TM2__PACKET_PING_SIZE];   /* one frame's worth */
    for (size_t i = 0; i < sizeof pings / TM2__PACKET_PING_SIZE; i++)
        assert_int_equal(tm2__packet_encode_ping(pings + i * TM2__PACKET_PING_SIZE,
                                                 TM2__PACKET_PING_SIZE),
                         TM2__PACKET_PING_SIZE);
    uint64_t start = tv_now_ms(), end = start + PING_FLOOD_MS, sent = 0;
    while (tv_now_ms() < end && !e->closed) {
        /* One frame at a time: the attacker is paced by the node. */
        if (ev_send(e, pings, sizeof pings, CLOSE_MS) != 0)
            break;
        sent += sizeof pings / TM2__PACKET_PING_SIZE;
    }
    uint64_t took = tv_now_ms() - start;
    int reason = 0;
    char why[TM2_EVENT_REASON_LEN] = "";
    if (e->closed && !ev_wait_event(e, TM2_EVENT_PEER_DISCONNECTED, CLOSE_MS, &reason, why,
                                    sizeof why))
        fail_msg("ping flood: the connection closed without a disconnect event");
    tm2_peer *p = target_peer(&a->t, &e->id);
    uint64_t recv_bytes = 0;
    if (p) {
        tm2_mconn_status st;
        if (tm2_peer_status(p, &st) == 0)
            recv_bytes = st.recv.bytes;
        tm2_peer_unref(p);
    }
    arena_end(a, "ping flood");
    tm2_switch_counters *c1 = target_stats(&a->t);
    uint64_t stalls = c1->recv_rate_stalls - c0->recv_rate_stalls;
    uint64_t cut = sum_u64(c1->peers_disconnected, TM2_STATS_REASONS) -
                   sum_u64(c0->peers_disconnected, TM2_STATS_REASONS);
    fprintf(stderr, "ping flood: %llu pings in %llu ms; node read %llu bytes from it, paused "
            "reading %llu times; %s\n",
            (unsigned long long)sent, (unsigned long long)took, (unsigned long long)recv_bytes,
            (unsigned long long)stalls, e->closed ? why : "attacker still connected");
    if (e->closed) {
        assert_true(cut >= 1);
    } else {
        /* Paced: read stalls counted, and no more than the receive rate
         * (5 MB/s, with one 100 ms window of overshoot) was read. */
        assert_true(stalls >= 1);
        assert_true(recv_bytes <= (uint64_t)TM2_DEFAULT_RECV_RATE * (took + 1000) / 1000);
    }
    ev_free(e);
    free(c0);
    free(c1);
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int setup(void **state)
{
    arena *a = calloc(1, sizeof *a);
    arena_start(a, NULL);
    *state = a;
    return 0;
}

static int setup_assembly(void **state)
{
    arena *a = calloc(1, sizeof *a);
    arena_start(a, &(target_opts){.assembly_ms = ASSEMBLY_MS});
    *state = a;
    return 0;
}

static int teardown(void **state)
{
    arena *a = *state;
    if (a) {
        arena_stop(a);
        free(a);
    }
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(garbage_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(garbage_sealed, setup, teardown),
        cmocka_unit_test_setup_teardown(oversized_frame_length, setup, teardown),
        cmocka_unit_test_setup_teardown(oversized_packet_length, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_channel_msg, setup, teardown),
        cmocka_unit_test_setup_teardown(over_receive_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(over_discovery_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(unfinished_messages, setup_assembly, teardown),
        cmocka_unit_test_setup_teardown(ping_flood, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
