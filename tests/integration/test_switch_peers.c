/* Switch peers on loopback: redial of a persistent peer with the back-off
 * of tm2_backoff_ms (and none for a non-persistent one), channel checks of
 * sends, simultaneous dials, dials that do not starve each other,
 * self-dial, a wrong ID at an address, an incompatible network, private
 * peers and the per-peer store. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_switch_support.h"

#define BASE_MS 40
#define MAX_MS  320
/* Scheduling latency allowed above a back-off's upper bound (sanitizers). */
#define SLACK_MS 400

static int64_t lo(uint32_t a) { return tm2_backoff_ms(a, BASE_MS, MAX_MS, 0.0); }
static int64_t hi(uint32_t a) { return tm2_backoff_ms(a, BASE_MS, MAX_MS, 1.0); }

/* Times of the events of type t for id, in order (the events the test
 * has read so far). */
static size_t ev_times(node *n, tm2_event_type t, const tm2_id *id, uint64_t *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n_evs && k < cap; i++)
        if (n->evs[i].type == t && strcmp(n->evs[i].peer_id.s, id->s) == 0)
            out[k++] = n->evs[i].mono_ms;
    return k;
}

/* From the loss of the peer (the last disconnect) on: each failed
 * dial comes after the back-off of its attempt, within its bounds. */
static void check_spacing(node *a, const tm2_id *id, size_t n_fails)
{
    uint64_t d[16], f[64];
    size_t nd = ev_times(a, TM2_EVENT_PEER_DISCONNECTED, id, d, 16);
    size_t nf = ev_times(a, TM2_EVENT_DIAL_FAILED, id, f, 64);
    assert_true(nd >= 1);
    uint64_t t0 = d[nd - 1];
    size_t first = 0;
    while (first < nf && f[first] < t0)
        first++;
    assert_true(nf - first >= n_fails);
    uint64_t prev = t0;
    for (size_t k = 0; k < n_fails; k++) {
        int64_t gap = (int64_t)(f[first + k] - prev);
        /* 2 ms for the millisecond clocks' rounding on both ends. */
        if (gap < lo((uint32_t)k) - 2 || gap > hi((uint32_t)k) + SLACK_MS)
            fail_msg("redial %zu after %lld ms, want %lld..%lld", k, (long long)gap,
                     (long long)lo((uint32_t)k), (long long)hi((uint32_t)k));
        prev = f[first + k];
    }
}

static void test_redial(void **state)
{
    (void)state;
    node *b = node_new(2, NULL);
    node *c = node_new(3, NULL);
    tm2_netaddr baddr = b->addr;
    tm2_id bid = baddr.id, cid = c->addr.id;
    char listen[64];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%u", (unsigned)baddr.port);
    node_opts ao = {.persistent = &baddr, .n_persistent = 1, .redial_base_ms = BASE_MS,
                    .redial_max_ms = MAX_MS};
    node *a = node_new(1, &ao);
    dial(a, c);
    wait_peers(a, 2, 20000);
    tm2_peer *pb = peer_of(a, &bid);
    assert_non_null(pb);
    assert_true(tm2_peer_is_persistent(pb));
    assert_true(tm2_peer_is_outbound(pb));
    tm2_peer_unref(pb);

    /* Both go away: only B is dialled again, with growing back-off. */
    node_free(b);
    node_free(c);
    wait_evs(a, TM2_EVENT_PEER_DISCONNECTED, 1, &cid, 1, 20000);
    wait_evs(a, TM2_EVENT_DIAL_FAILED, TM2_ECONNREFUSED, &bid, 5, 20000);
    check_spacing(a, &bid, 5);
    assert_int_equal(count_evs(a, TM2_EVENT_DIAL_FAILED, 1, &cid), 0);

    /* Same key, same port: reconnected. */
    node_opts bo = {.listen = listen};
    b = node_new(2, &bo);
    wait_peers(a, 1, 20000);
    pb = peer_of(a, &bid);
    assert_non_null(pb);
    tm2_peer_unref(pb);
    assert_int_equal(count_evs(a, TM2_EVENT_DIAL_FAILED, 1, &cid), 0);
    assert_int_equal(count_evs(a, TM2_EVENT_PEER_CONNECTED, 0, &cid), 1);

    /* A connection shorter than the stable uptime (30 s) does not reset
     * the back-off (the reference v1.7.1): after the next loss the redial
     * waits the ceiling it had reached, not the first step again. */
    size_t fails = count_evs(a, TM2_EVENT_DIAL_FAILED, 1, &bid);
    node_free(b);
    wait_evs(a, TM2_EVENT_DIAL_FAILED, TM2_ECONNREFUSED, &bid, fails + 1, 20000);
    uint64_t d[16], f[64];
    size_t nd = ev_times(a, TM2_EVENT_PEER_DISCONNECTED, &bid, d, 16);
    size_t nf = ev_times(a, TM2_EVENT_DIAL_FAILED, &bid, f, 64);
    assert_true(nd >= 2 && nf > fails);
    int64_t gap = (int64_t)(f[fails] - d[nd - 1]);
    if (gap < lo(4) - 2)
        fail_msg("redial %lld ms after a short connection, want at least %lld", (long long)gap,
                 (long long)lo(4));
    node_free(a);
}

/* The connection to the only peer has lasted at least 5 ms. */
static bool pred_lasted(node *n, void *arg)
{
    (void)arg;
    tm2_peer *p = peer_of(n, NULL);
    tm2_mconn_status st;
    bool ok = p && tm2_peer_status(p, &st) == 0 && st.duration_ms >= 5;
    tm2_peer_unref(p);
    return ok;
}

/* A connection that lasted the stable uptime resets the back-off: the lost
 * peer is dialled again at once, then with the first steps. */
static void test_redial_stable(void **state)
{
    (void)state;
    node *b = node_new(2, NULL);
    tm2_netaddr baddr = b->addr;
    tm2_id bid = baddr.id;
    enum { BASE = 2000 };
    node_opts ao = {.persistent = &baddr, .n_persistent = 1, .redial_base_ms = BASE,
                    .redial_max_ms = 4 * BASE, .redial_stable_ms = 1};
    node *a = node_new(1, &ao);
    wait_peers(a, 1, 20000);
    /* Past the stable uptime (1 ms) on the loop's clock too. */
    assert_true(wait_node(a, 20000, pred_lasted, NULL));
    node_free(b);
    wait_evs(a, TM2_EVENT_DIAL_FAILED, TM2_ECONNREFUSED, &bid, 2, 20000);
    uint64_t d[4], f[8];
    assert_true(ev_times(a, TM2_EVENT_PEER_DISCONNECTED, &bid, d, 4) == 1);
    assert_true(ev_times(a, TM2_EVENT_DIAL_FAILED, &bid, f, 8) >= 2);
    if (f[0] - d[0] >= BASE / 2)
        fail_msg("first redial after %llu ms, want at once", (unsigned long long)(f[0] - d[0]));
    int64_t gap = (int64_t)(f[1] - f[0]);
    assert_true(gap >= tm2_backoff_ms(0, BASE, 4 * BASE, 0.0) - 2);
    node_free(a);
}

typedef struct resolver {
    atomic_int calls;
    int fail_first;
    uint16_t port;
} resolver;

/* Fails the first calls, then answers 127.0.0.1; runs on the thread pool. */
static int test_resolve(void *user, const char *host, uint16_t port, tm2_netaddr *out, size_t cap)
{
    resolver *r = user;
    if (strcmp(host, "node-b.test") != 0 || cap < 1 || port != r->port)
        return TM2_EINVAL;
    if (atomic_fetch_add(&r->calls, 1) < r->fail_first)
        return TM2_ERESOLVE;
    assert_int_equal(tm2_netaddr_parse("127.0.0.1:1", TM2_NETADDR_NO_ID, out), 0);
    out->port = port;
    return 1;
}

/* Persistent peers named by host name: localhost through the system
 * resolver; a name the resolver hook cannot resolve yet is kept and
 * resolved again on every dial until it connects. */
static void test_named_peers(void **state)
{
    (void)state;
    node *b = node_new(2, NULL);
    node *c = node_new(3, NULL);
    char spec_b[128], spec_c[128];
    snprintf(spec_b, sizeof spec_b, "%s@node-b.test:%u", b->addr.id.s, (unsigned)b->addr.port);
    snprintf(spec_c, sizeof spec_c, "%s@localhost:%u", c->addr.id.s, (unsigned)c->addr.port);
    const char *specs[] = {spec_b};
    resolver r = {.fail_first = 2, .port = b->addr.port};
    atomic_init(&r.calls, 0);
    node_opts ao = {.specs = specs, .n_specs = 1, .redial_base_ms = 20, .redial_max_ms = 40,
                    .resolve = test_resolve, .resolve_user = &r};
    node *a = node_new(1, &ao);
    wait_evs(a, TM2_EVENT_DIAL_FAILED, TM2_ERESOLVE, &b->addr.id, 2, 20000);
    wait_evs(a, TM2_EVENT_PEER_CONNECTED, 0, &b->addr.id, 1, 20000);
    assert_true(atomic_load(&r.calls) >= 3);
    /* Without a hook: the system resolver, asked only for localhost. */
    const char *specs_d[] = {spec_c};
    node_opts do_ = {.specs = specs_d, .n_specs = 1};
    node *d = node_new(4, &do_);
    wait_evs(d, TM2_EVENT_PEER_CONNECTED, 0, &c->addr.id, 1, 20000);
    tm2_peer *p = peer_of(d, &c->addr.id);
    assert_non_null(p);
    assert_true(tm2_peer_is_persistent(p));
    tm2_peer_unref(p);
    node_free(d);
    node_free(a);
    node_free(c);
    node_free(b);
}

/* A peer that did not advertise a channel cannot be sent to on it, nor can
 * a channel we do not have; both fail at once. */
static void test_channels(void **state)
{
    (void)state;
    node *x = node_new(1, NULL);
    node_opts yo = {.only_ch_a = true, .software = "test-sw", .version = "v9.8.7+0123abcd"};
    node *y = node_new(2, &yo);
    dial(x, y);
    wait_peers(x, 1, 20000);
    wait_peers(y, 1, 20000);
    tm2_peer *p = peer_of(x, NULL);
    assert_non_null(p);
    uint8_t msg[8] = {0};
    assert_int_equal(tm2_peer_send(p, CH_B, msg, sizeof msg, 10000), TM2_ECHANNEL);
    assert_int_equal(tm2_peer_try_send(p, CH_B, msg, sizeof msg), TM2_ECHANNEL);
    assert_int_equal(tm2_peer_send(p, 0x77, msg, sizeof msg, 10000), TM2_ECHANNEL);
    assert_int_equal(tm2_switch_broadcast(x->sw, CH_B, msg, sizeof msg), 0);
    assert_int_equal(tm2_switch_broadcast(x->sw, 0x77, msg, sizeof msg), TM2_ECHANNEL);
    msg[0] = 1;
    assert_int_equal(tm2_peer_send(p, CH_A, msg, sizeof msg, 10000), 0);
    wait_total(y, 1, 10000);
    assert_int_equal(receipts(y, 1, 0), 1);
    /* The peer's view of the other side. */
    const tm2_node_info *ni = tm2_peer_node_info(p);
    assert_non_null(ni);
    assert_string_equal(ni->moniker, "node-2");
    assert_true(tm2_node_info_has_channel(ni, CH_A));
    assert_false(tm2_node_info_has_channel(ni, CH_B));
    /* Software and Version cross as set; the version set stays the protocol's. */
    assert_string_equal(ni->software, "test-sw");
    assert_string_equal(ni->version, "v9.8.7+0123abcd");
    assert_int_equal(ni->n_versions, 5);
    assert_string_equal(ni->versions[4].name, "p2p");
    assert_string_equal(ni->versions[4].version, TM2_PROTOCOL_VERSION);
    tm2_peer *q = peer_of(y, NULL);
    assert_non_null(q);
    assert_string_equal(tm2_peer_node_info(q)->software, "");
    assert_string_equal(tm2_peer_node_info(q)->version, TM2_PROTOCOL_VERSION);
    tm2_peer_unref(q);
    tm2_mconn_status st;
    assert_int_equal(tm2_peer_status(p, &st), 0);
    assert_int_equal(st.n_channels, 2);
    assert_true(tm2_peer_is_running(p));
    assert_false(tm2_peer_is_private(p));
    tm2_peer_unref(p);
    node_free(y);
    node_free(x);
}

/* Both nodes dial each other at the same moment; each side must end with
 * one peer, the same connection (outbound on one side, inbound on the
 * other). Fresh pairs each round, alternating which ID is smaller. */
typedef struct pair_arg {
    node *other;
} pair_arg;

static bool pred_settled(node *n, void *arg)
{
    node *o = ((pair_arg *)arg)->other;
    if (npeers(n) != 1 || npeers(o) != 1)
        return false;
    tm2_peer *p = peer_of(n, NULL), *q = peer_of(o, NULL);
    bool ok = p && q && tm2_peer_is_outbound(p) != tm2_peer_is_outbound(q);
    tm2_peer_unref(p);
    tm2_peer_unref(q);
    return ok;
}

static void test_simultaneous_dial(void **state)
{
    (void)state;
    for (int round = 0; round < 6; round++) {
        node *a = node_new(10 + 2 * round, NULL);
        node *b = node_new(11 + 2 * round, NULL);
        assert_int_equal(tm2_switch_dial_peers(a->sw, &b->addr, 1), 1);
        assert_int_equal(tm2_switch_dial_peers(b->sw, &a->addr, 1), 1);
        pair_arg pa = {b};
        if (!wait_two(a, b, 20000, pred_settled, &pa))
            fail_msg("round %d: %zu and %zu peers", round, npeers(a), npeers(b));
        /* The loser's handshakes end without disturbing the winner. */
        size_t in_a, out_a, dialing;
        tm2_switch_counts(a->sw, &in_a, &out_a, &dialing);
        assert_int_equal(in_a + out_a, 1);
        node_free(a);
        node_free(b);
    }
}

/* A TCP listener that never accepts: dials to it connect, then hang in the
 * handshake until its deadline. */
static int silent_listener(tm2_netaddr *at, int seed_idx)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char spec[TM2_NETADDR_STRLEN + 1];
    tm2_id id = key_id(seed_idx);
    snprintf(spec, sizeof spec, "%s@127.0.0.1:%u", id.s, (unsigned)ntohs(sa.sin_port));
    assert_int_equal(tm2_netaddr_parse(spec, 0, at), 0);
    return fd;
}

typedef struct dialing_arg {
    size_t want;
} dialing_arg;

static bool pred_dialing(node *n, void *arg)
{
    size_t in, out, dialing;
    tm2_switch_counts(n->sw, &in, &out, &dialing);
    return dialing == ((dialing_arg *)arg)->want;
}

/* The reference dials one peer at a time and takes turns between its
 * persistent and discovered queues so neither starves. Here every due dial
 * runs at once: persistent peers stuck in their handshakes, more of them
 * than the outbound cap, hold back neither a discovered peer nor each
 * other. */
static void test_dials_not_starved(void **state)
{
    (void)state;
    enum { N = 16 };
    tm2_netaddr stuck[N];
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = silent_listener(&stuck[i], 40 + i);
    node *b = node_new(2, NULL);
    node_opts ao = {.persistent = stuck, .n_persistent = N, .max_outbound = 4,
                    .handshake_ms = 20000};
    node *a = node_new(1, &ao);
    dialing_arg all = {N};
    if (!wait_node(a, 10000, pred_dialing, &all))
        fail_msg("persistent dials in flight: want %d", N);

    dial(a, b);
    wait_evs(a, TM2_EVENT_PEER_CONNECTED, 1, &b->addr.id, 1, 5000);
    assert_int_equal(count_evs(a, TM2_EVENT_DIAL_FAILED, 1, NULL), 0);
    size_t in, out, dialing;
    tm2_switch_counts(a->sw, &in, &out, &dialing);
    assert_int_equal(out, 1);
    assert_int_equal(dialing, N);
    node_free(a);
    node_free(b);
    for (int i = 0; i < N; i++)
        close(fds[i]);
}

static void test_self_dial(void **state)
{
    (void)state;
    node *a = node_new(1, NULL);
    assert_int_equal(tm2_switch_dial_peers(a->sw, &a->addr, 1), 0);
    tm2_netaddr other_port = a->addr;
    other_port.port = (uint16_t)(other_port.port + 1);
    assert_int_equal(tm2_switch_dial_peers(a->sw, &other_port, 1), 0);
    /* Our address under another ID is ourselves too (Same()). */
    tm2_netaddr other_id = a->addr;
    other_id.id = key_id(99);
    assert_int_equal(tm2_switch_dial_peers(a->sw, &other_id, 1), 0);
    /* No ID: skipped. */
    tm2_netaddr no_id = a->addr;
    memset(&no_id.id, 0, sizeof no_id.id);
    assert_int_equal(tm2_switch_dial_peers(a->sw, &no_id, 1), 0);
    size_t in, out, dialing;
    tm2_switch_counts(a->sw, &in, &out, &dialing);
    assert_int_equal(dialing, 0);
    assert_int_equal(a->n_evs, 0);
    node_free(a);
}

static void test_wrong_id(void **state)
{
    (void)state;
    node *a = node_new(1, NULL);
    node *b = node_new(2, NULL);
    tm2_netaddr wrong = b->addr;
    wrong.id = key_id(3);
    assert_int_equal(tm2_switch_dial_peers(a->sw, &wrong, 1), 1);
    wait_evs(a, TM2_EVENT_DIAL_FAILED, TM2_EIDMISMATCH, &wrong.id, 1, 20000);
    assert_int_equal(npeers(a), 0);
    for (size_t i = 0; i < a->n_evs; i++)
        if (a->evs[i].type == TM2_EVENT_DIAL_FAILED) {
            assert_true(tm2_netaddr_equal(&a->evs[i].addr, &wrong));
            assert_non_null(strstr(a->evs[i].reason_text, "dialed ID"));
        }
    node_free(b);
    node_free(a);
}

static void test_incompatible_network(void **state)
{
    (void)state;
    node *a = node_new(1, NULL);
    node_opts bo = {.network = "other-chain"};
    node *b = node_new(2, &bo);
    dial(a, b);
    wait_evs(a, TM2_EVENT_DIAL_FAILED, TM2_EINCOMPAT, &b->addr.id, 1, 20000);
    wait_evs(b, TM2_EVENT_PEER_REJECTED, TM2_EINCOMPAT, &a->addr.id, 1, 20000);
    for (size_t i = 0; i < a->n_evs; i++)
        if (a->evs[i].type == TM2_EVENT_DIAL_FAILED)
            assert_non_null(strstr(a->evs[i].reason_text, "network"));
    for (size_t i = 0; i < b->n_evs; i++)
        if (b->evs[i].type == TM2_EVENT_PEER_REJECTED)
            assert_non_null(strstr(b->evs[i].reason_text, "network"));
    assert_int_equal(npeers(a), 0);
    assert_int_equal(npeers(b), 0);
    node_free(b);
    node_free(a);
}

/* Private peers are flagged; stop_peer_for_error disconnects with the
 * reason on both sides; the per-peer store replaces and frees values. */
static int frees;
static void count_free(void *v)
{
    (void)v;
    frees++;
}

static void test_private_and_stop_for_error(void **state)
{
    (void)state;
    tm2_id bid = key_id(2);
    node_opts ao = {.priv = &bid, .n_priv = 1};
    node *a = node_new(1, &ao);
    node *b = node_new(2, NULL);
    assert_true(tm2_switch_is_private(a->sw, &bid));
    assert_false(tm2_switch_is_private(b->sw, &bid));
    dial(b, a);
    wait_peers(a, 1, 20000);
    wait_peers(b, 1, 20000);
    /* Connected: a second request for it is skipped. */
    assert_int_equal(tm2_switch_dial_peers(b->sw, &a->addr, 1), 0);
    tm2_peer *p = peer_of(a, &bid);
    assert_non_null(p);
    assert_true(tm2_peer_is_private(p));
    assert_false(tm2_peer_is_outbound(p));
    tm2_netaddr sa;
    tm2_peer_socket_addr(p, &sa);
    assert_string_equal(sa.id.s, bid.s);
    assert_true(tm2_netaddr_is_loopback(&sa));

    static int v1, v2;
    assert_int_equal(tm2_peer_set(p, "k", &v1, count_free), 0);
    assert_ptr_equal(tm2_peer_get(p, "k"), &v1);
    assert_int_equal(tm2_peer_set(p, "k", &v2, count_free), 0);
    assert_int_equal(frees, 1);
    assert_ptr_equal(tm2_peer_get(p, "k"), &v2);
    assert_null(tm2_peer_get(p, "missing"));

    tm2_switch_stop_peer_for_error(a->sw, p, TM2_EPROTO);
    wait_evs(a, TM2_EVENT_PEER_DISCONNECTED, TM2_EPROTO, &bid, 1, 20000);
    wait_peers(b, 0, 20000);
    wait_peers(a, 0, 20000);
    assert_false(tm2_peer_is_running(p));
    uint8_t m[4] = {0};
    assert_int_equal(tm2_peer_try_send(p, CH_A, m, sizeof m), TM2_ECLOSED);
    assert_int_equal(tm2_peer_send(p, CH_A, m, sizeof m, 100), TM2_ECLOSED);
    tm2_mconn_status st;
    assert_int_equal(tm2_peer_status(p, &st), TM2_ECLOSED);
    uv_mutex_lock(&a->mu);
    assert_int_equal(a->n_removed, 1);
    assert_int_equal(a->removed_reasons[0], TM2_EPROTO);
    uv_mutex_unlock(&a->mu);
    tm2_peer_unref(p);
    node_free(b);
    node_free(a);
    assert_int_equal(frees, 2);   /* freed with the peer, by its last holder */
}

/* A reactor stops the peer from inside its receive (remove_peer runs
 * nested, nothing is freed under it; later messages of the same read are
 * not delivered) and from inside add_peer (remove_peer follows the round). */
static void test_stop_in_callbacks(void **state)
{
    (void)state;
    node *a = node_new(1, NULL);
    node *b = node_new(2, NULL);
    a->kill_on_receive = true;
    dial(b, a);
    wait_peers(a, 1, 20000);
    wait_peers(b, 1, 20000);
    tm2_peer *p = peer_of(b, NULL);
    assert_non_null(p);
    uint8_t kill[4] = {0xee}, after[4] = {0x01};
    assert_int_equal(tm2_peer_send(p, CH_B, kill, sizeof kill, 10000), 0);
    int r = tm2_peer_send(p, CH_B, after, sizeof after, 10000);
    assert_true(r == 0 || r == TM2_ECLOSED);   /* a may have closed already */
    tm2_peer_unref(p);
    wait_evs(a, TM2_EVENT_PEER_DISCONNECTED, TM2_EPROTO, tm2_switch_id(b->sw), 1, 20000);
    wait_peers(b, 0, 20000);
    wait_total(a, 1, 20000);   /* the event came from inside the callback */
    assert_true(a->loop_send == 0 || a->loop_send == TM2_EFULL);
    uv_mutex_lock(&a->mu);
    assert_int_equal(a->total, 1);
    assert_int_equal(a->n_removed, 1);
    assert_int_equal(a->removed_reasons[0], TM2_EPROTO);
    uv_mutex_unlock(&a->mu);

    node *c = node_new(3, NULL);
    c->kill_on_add = true;
    dial(b, c);
    wait_evs(c, TM2_EVENT_PEER_DISCONNECTED, TM2_EREJECTED, tm2_switch_id(b->sw), 1, 20000);
    /* Connected, then disconnected: the events keep the reactor's order. */
    assert_int_equal(count_evs(c, TM2_EVENT_PEER_CONNECTED, 0, NULL), 1);
    size_t ic = SIZE_MAX, id = SIZE_MAX;
    for (size_t i = 0; i < c->n_evs; i++) {
        if (c->evs[i].type == TM2_EVENT_PEER_CONNECTED)
            ic = i;
        if (c->evs[i].type == TM2_EVENT_PEER_DISCONNECTED)
            id = i;
    }
    assert_true(ic < id);
    uv_mutex_lock(&c->mu);
    assert_int_equal(c->n_removed, 1);
    assert_int_equal(c->removed_reasons[0], TM2_EREJECTED);
    uv_mutex_unlock(&c->mu);
    assert_int_equal(npeers(c), 0);
    node_free(c);
    node_free(b);
    node_free(a);
}

/* Config errors. */
static void test_config(void **state)
{
    (void)state;
    tm2_channel_desc ch1 = {.id = 0x30, .priority = 1};
    tm2_channel_desc ch2 = {.id = 0x30, .priority = 1};
    tm2_reactor rs[2] = {{.name = "one", .channels = &ch1, .n_channels = 1},
                         {.name = "two", .channels = &ch2, .n_channels = 1}};
    tm2_switch_config c;
    tm2_switch_config_default(&c);
    c.allow_duplicate_ip = true;
    node_key(1, &c.key);
    c.network = "n";
    c.moniker = "m";
    c.reactors = rs;
    c.n_reactors = 2;
    tm2_switch *sw = NULL;
    assert_int_equal(tm2_switch_new(&c, &sw), TM2_EEXIST);
    ch2.id = 0x31;
    c.listen_addr = "tcp://not-an-ip:1";
    assert_int_equal(tm2_switch_new(&c, &sw), TM2_EINVAL);
    c.listen_addr = NULL;
    c.moniker = "";
    assert_int_equal(tm2_switch_new(&c, &sw), TM2_EINVAL);
    c.moniker = "m";
    assert_int_equal(tm2_switch_new(&c, &sw), 0);
    /* Our NodeInfo as the reference builds it. */
    const tm2_node_info *ni = tm2_switch_node_info(sw);
    assert_int_equal(ni->n_versions, 5);
    assert_string_equal(ni->versions[1].name, "app");
    assert_string_equal(ni->versions[1].version, "");
    assert_string_equal(ni->versions[4].version, TM2_PROTOCOL_VERSION);
    assert_string_equal(ni->software, "");
    assert_string_equal(ni->version, TM2_PROTOCOL_VERSION);
    assert_int_equal(ni->n_channels, 2);
    assert_int_equal(ni->channels[0], 0x30);
    assert_int_equal(ni->channels[1], 0x31);
    assert_string_equal(ni->tx_index, "off");
    tm2_netaddr la;
    assert_int_equal(tm2_switch_listen_addr(sw, &la), TM2_ESTATE);
    tm2_switch_free(sw);
    /* Software and Version are free text, but Version must pass the
     * reference's NodeInfo check; "" is allowed there. */
    c.software = "any \x01 text";
    c.version = "v1.2.3+abc.dirty";
    assert_int_equal(tm2_switch_new(&c, &sw), 0);
    ni = tm2_switch_node_info(sw);
    assert_string_equal(ni->software, "any \x01 text");
    assert_string_equal(ni->version, "v1.2.3+abc.dirty");
    assert_string_equal(ni->versions[4].version, TM2_PROTOCOL_VERSION);
    tm2_switch_free(sw);
    c.version = "";
    assert_int_equal(tm2_switch_new(&c, &sw), 0);
    tm2_switch_free(sw);
    c.version = "   ";
    assert_int_equal(tm2_switch_new(&c, &sw), TM2_EINVAL);
    c.version = "v1\n";
    assert_int_equal(tm2_switch_new(&c, &sw), TM2_EINVAL);
    c.software = NULL;
    c.version = NULL;

    /* 0.0.0.0 is advertised as is; an external address wins. */
    c.listen_addr = "tcp://0.0.0.0:0";
    assert_int_equal(tm2_switch_new(&c, &sw), 0);
    assert_int_equal(tm2_switch_start(sw), 0);
    assert_int_equal(tm2_switch_start(sw), TM2_ESTATE);
    assert_int_equal(tm2_switch_listen_addr(sw, &la), 0);
    assert_true(la.port != 0);
    ni = tm2_switch_node_info(sw);
    assert_true(tm2_netaddr_is_unspecified(&ni->net_address));
    assert_int_equal(ni->net_address.port, la.port);
    tm2_switch_stop(sw);
    tm2_switch_stop(sw);
    tm2_switch_free(sw);
    c.external_addr = "127.0.0.9:4242";
    assert_int_equal(tm2_switch_new(&c, &sw), 0);
    assert_int_equal(tm2_switch_start(sw), 0);
    ni = tm2_switch_node_info(sw);
    char buf[TM2_NETADDR_STRLEN + 1];
    assert_true(tm2_netaddr_dialstring(&ni->net_address, buf, sizeof buf) > 0);
    assert_string_equal(buf, "127.0.0.9:4242");
    tm2_switch_free(sw);   /* stops first */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redial),
        cmocka_unit_test(test_redial_stable),
        cmocka_unit_test(test_named_peers),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_simultaneous_dial),
        cmocka_unit_test(test_dials_not_starved),
        cmocka_unit_test(test_self_dial),
        cmocka_unit_test(test_wrong_id),
        cmocka_unit_test(test_incompatible_network),
        cmocka_unit_test(test_private_and_stop_for_error),
        cmocka_unit_test(test_stop_in_callbacks),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
