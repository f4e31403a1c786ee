/* The switch's admission limits against peers from real, distinct source
 * addresses.
 *
 * Five hosts in network namespaces on one bridge, every address from
 * 198.18.0.0/15 and on-link for the others (/15): the node under test on
 * 198.18.0.1, attackers on 198.18.1.1, .1.2 and .1.3 (one /24) and on
 * 198.18.2.1 (another /24). The node is a tm2p2p switch whose network
 * thread was started inside its namespace; each client is a switch of its
 * own started inside an attacker's namespace (netns_enter), so every
 * socket, listener and dial lives in its host's namespace and the node
 * sees the attacker's address as the source, over the bridge. All of them
 * run in this process, so the node's counters (tm2_switch_stats) and
 * events are read directly.
 *
 * 198.18.0.0/15 is a local range, exempt from the per-IP and per-subnet
 * rules unless limit_local_addrs is on: the node turns it on, and
 * allow_duplicate_ip (so that the per-IP peer limit, not the reference's
 * one-peer-per-IP rule, is what refuses). Peers connect one at a time, so
 * the check that refuses is the one under test (the order at accept is
 * handshakes in flight per IP, peers per IP, peers per subnet, full, then
 * the rate buckets):
 *   - peers per IP (4): four from one IP get in, the fifth is refused at
 *     accept, another IP of the /24 still gets in;
 *   - peers per /24 (8) across three IPs, while another /24 gets in;
 *   - the accept-rate buckets per IP and per /24 (bursts made small, the
 *     refill a minute for one token so that none comes during the test);
 *   - handshakes in flight per IP (4), with raw sockets that never speak.
 *
 * Every wait is on events or counters with a deadline. Namespaces are
 * named "tm2l<pid>-..." and removed by netns_end, an exit handler and a
 * SIGINT/SIGTERM handler (tests/support/netns.h). Needs root and iproute2;
 * skipped (exit 77) with the reason otherwise. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netns.h"
#include "test_switch_support.h"

#define NS_PREFIX "tm2l"
#define WAIT_MS 10000
#define MAX_MADE 32

enum { HUB, A1, A2, A3, B1, NHOSTS };
static const char *const host_ip[NHOSTS] = {"198.18.0.1", "198.18.1.1", "198.18.1.2",
                                            "198.18.1.3", "198.18.2.1"};

/* Every switch a test started, freed by the teardown even after a failure. */
static node *made[MAX_MADE];
static int n_made;

/* ---- switches in namespaces ----------------------------------------------------------- */

static void enter(int host)
{
    if (netns_enter(host) != 0)
        fail_msg("cannot enter the namespace of host %d: %s", host, strerror(errno));
}

/* A switch (test_switch_support.h) whose sockets and network thread live in
 * host's namespace, listening on and dialling from its address. */
static node *start_in(int host, node_opts o)
{
    assert_true(n_made < MAX_MADE);
    o.bind_ip = host_ip[host];
    enter(host);
    node *n = node_new(n_made, &o);
    made[n_made++] = n;
    enter(-1);
    return n;
}

static void hub_limits(tm2_switch_config *c, void *arg)
{
    (void)arg;
    c->limit_local_addrs = true;
    c->allow_duplicate_ip = true;
}

/* Small bursts, one token a minute: nothing refills during the test. */
static void hub_slow_rates(tm2_switch_config *c, void *arg)
{
    hub_limits(c, arg);
    c->accept_ip_rate = 1;
    c->accept_ip_burst = 3;
    c->accept_subnet_rate = 1;
    c->accept_subnet_burst = 6;
}

static node *hub_new(void (*tweak)(tm2_switch_config *, void *), uint32_t handshake_ms)
{
    return start_in(HUB, (node_opts){.tweak = tweak, .handshake_ms = handshake_ms});
}

static int teardown(void **state)
{
    (void)state;
    (void)netns_enter(-1);
    while (n_made > 0)
        node_free(made[--n_made]);
    return 0;
}

/* ---- peers -------------------------------------------------------------------------------- */

/* The hub holds c as a peer whose socket comes from host's address. */
static void assert_peer_from(node *hub, const node *c, int host)
{
    tm2_peer *p = peer_of(hub, &c->addr.id);
    if (!p)
        fail_msg("the node does not hold the peer from %s", host_ip[host]);
    tm2_netaddr a;
    tm2_peer_socket_addr(p, &a);
    tm2_peer_unref(p);
    struct in_addr want;
    assert_int_equal(inet_pton(AF_INET, host_ip[host], &want), 1);
    assert_true(tm2_netaddr_is_ipv4(&a));
    assert_memory_equal(a.ip + 12, &want, 4);
}

/* A new client on host dials the hub and is admitted: the hub then holds
 * want peers. */
static void admitted(node *hub, int host, size_t want)
{
    node *c = start_in(host, (node_opts){0});
    dial(c, hub);
    wait_evs(c, TM2_EVENT_PEER_CONNECTED, 1, &hub->addr.id, 1, WAIT_MS);
    wait_peers(hub, want, WAIT_MS);
    assert_peer_from(hub, c, host);
}

/* A new client on host dials the hub and is refused at accept for reason:
 * its dial fails and the hub never lists it. */
static void refused_at_accept(node *hub, int host, int reason)
{
    uint64_t before = refused(hub, reason);
    size_t peers = npeers(hub);
    node *c = start_in(host, (node_opts){0});
    dial(c, hub);
    wait_refused(hub, reason, before + 1, WAIT_MS);
    wait_evs(c, TM2_EVENT_DIAL_FAILED, 1, &hub->addr.id, 1, WAIT_MS);
    assert_int_equal(count_evs(c, TM2_EVENT_PEER_CONNECTED, 1, NULL), 0);
    assert_int_equal(count_evs(hub, TM2_EVENT_PEER_CONNECTED, 1, &c->addr.id), 0);
    assert_int_equal(npeers(hub), peers);
}

/* The hub refused exactly want[r] sockets at accept for each reason r,
 * dropped none, and rejected n_rejected inbound sockets in or after their
 * handshake (the limits refuse at accept: none there). */
static void refusals_are(node *hub, const uint64_t want[TM2_REFUSALS], uint64_t n_rejected)
{
    tm2_switch_counters c;
    assert_int_equal(tm2_switch_stats(hub->sw, &c), 0);
    for (int r = 0; r < TM2_REFUSALS; r++)
        if (c.inbound_refused[r] != want[r])
            fail_msg("refused for %s: %llu, want %llu", tm2_refusal_name(r),
                     (unsigned long long)c.inbound_refused[r], (unsigned long long)want[r]);
    assert_int_equal(c.inbound_dropped, 0);
    uint64_t rejected = 0;
    for (int k = 0; k < TM2_STATS_REASONS; k++)
        rejected += c.rejected[k];
    assert_int_equal(rejected, n_rejected);
}

/* ---- the limits ----------------------------------------------------------------------------- */

static void test_inbound_per_ip(void **state)
{
    (void)state;
    tm2_switch_config def;
    tm2_switch_config_default(&def);
    assert_int_equal(def.max_inbound_per_ip, 4);
    node *hub = hub_new(hub_limits, 0);
    for (size_t k = 1; k <= 4; k++)
        admitted(hub, A1, k);
    refused_at_accept(hub, A1, TM2_REFUSED_PER_IP);
    /* The IP next door, same /24, is not held back. */
    admitted(hub, A2, 5);
    admitted(hub, A2, 6);
    refusals_are(hub, (uint64_t[TM2_REFUSALS]){[TM2_REFUSED_PER_IP] = 1}, 0);
}

static void test_inbound_per_subnet(void **state)
{
    (void)state;
    tm2_switch_config def;
    tm2_switch_config_default(&def);
    assert_int_equal(def.max_inbound_per_subnet, 8);
    node *hub = hub_new(hub_limits, 0);
    /* 3 + 3 + 2 peers from three IPs of 198.18.1.0/24, none at its IP's
     * limit: the ninth is refused for the subnet. */
    static const int from[] = {A1, A2, A3, A1, A2, A3, A1, A2};
    for (size_t k = 0; k < 8; k++)
        admitted(hub, from[k], k + 1);
    refused_at_accept(hub, A3, TM2_REFUSED_PER_SUBNET);
    refused_at_accept(hub, A1, TM2_REFUSED_PER_SUBNET);
    /* 198.18.2.0/24 gets in. */
    admitted(hub, B1, 9);
    refusals_are(hub, (uint64_t[TM2_REFUSALS]){[TM2_REFUSED_PER_SUBNET] = 2}, 0);
}

static void test_accept_rates(void **state)
{
    (void)state;
    node *hub = hub_new(hub_slow_rates, 0);
    /* One IP: its burst of three, then no token (its peers, 3, are under
     * the per-IP limit). */
    for (size_t k = 1; k <= 3; k++)
        admitted(hub, A1, k);
    refused_at_accept(hub, A1, TM2_REFUSED_RATE_IP);
    /* One /24: three more from a second IP empty its burst of six; a third
     * IP, its own bucket full, finds the subnet's empty. */
    for (size_t k = 4; k <= 6; k++)
        admitted(hub, A2, k);
    refused_at_accept(hub, A3, TM2_REFUSED_RATE_SUBNET);
    /* Another /24 has buckets of its own. */
    admitted(hub, B1, 7);
    refusals_are(hub, (uint64_t[TM2_REFUSALS]){[TM2_REFUSED_RATE_IP] = 1,
                                               [TM2_REFUSED_RATE_SUBNET] = 1},
                 0);
}

/* ---- handshakes in flight per IP ------------------------------------------------------------ */

/* A TCP connection to a from host's namespace (and so its address). */
static int raw_connect(int host, const tm2_netaddr *a)
{
    enter(host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int err = errno;
    enter(-1);
    if (fd < 0)
        fail_msg("socket in host %d: %s", host, strerror(err));
    struct sockaddr_storage dst;
    assert_int_equal(tm2_netaddr_to_sockaddr(a, (struct sockaddr *)&dst, sizeof dst), 0);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(struct sockaddr_in)) != 0)
        fail_msg("connect from %s: %s", host_ip[host], strerror(errno));
    return fd;
}

/* Whether the node took the socket into a handshake (sent its 35-byte key
 * message) rather than closing it before any byte. */
static bool greeted(int fd)
{
    uint64_t deadline = tv_now_ms() + WAIT_MS;
    size_t got = 0;
    for (;;) {
        uint64_t now = tv_now_ms();
        if (now >= deadline)
            fail_msg("the node neither greeted nor closed a socket in %d ms", WAIT_MS);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(deadline - now)) <= 0)
            continue;
        char buf[64];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0 && (got += (size_t)n) >= 35)
            return true;
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return got > 0;
    }
}

static uint32_t in_handshakes(node *n)
{
    tm2_switch_counters c;
    assert_int_equal(tm2_switch_stats(n->sw, &c), 0);
    return c.handshakes_inbound;
}

static bool pred_handshakes(node *n, void *arg)
{
    return in_handshakes(n) == *(uint32_t *)arg;
}

static void test_pending_per_ip(void **state)
{
    (void)state;
    tm2_switch_config def;
    tm2_switch_config_default(&def);
    assert_int_equal(def.max_pending_inbound_per_ip, 4);
    /* Sockets that never speak stay in their handshake for the test. */
    node *hub = hub_new(hub_limits, 20000);
    int fds[5];
    for (int i = 0; i < 4; i++) {
        fds[i] = raw_connect(A1, &hub->addr);
        assert_true(greeted(fds[i]));
    }
    fds[4] = raw_connect(A1, &hub->addr);
    assert_false(greeted(fds[4]));
    close(fds[4]);
    wait_refused(hub, TM2_REFUSED_PENDING_IP, 1, WAIT_MS);
    /* Another IP of the /24 is not held back. */
    int other = raw_connect(A2, &hub->addr);
    assert_true(greeted(other));
    /* A handshake that ends frees its IP's place. */
    close(fds[0]);
    uint32_t want = 4;
    if (!wait_node(hub, WAIT_MS, pred_handshakes, &want))
        fail_msg("%u inbound handshakes, want %u", in_handshakes(hub), want);
    fds[0] = raw_connect(A1, &hub->addr);
    assert_true(greeted(fds[0]));
    /* The socket closed in its handshake is the one rejection. */
    refusals_are(hub, (uint64_t[TM2_REFUSALS]){[TM2_REFUSED_PENDING_IP] = 1}, 1);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    close(other);
}

/* ---- main ------------------------------------------------------------------------------------ */

static const char *make_namespaces(void)
{
    const char *why = netns_begin(NS_PREFIX, 1, NULL);
    for (int i = 0; !why && i < NHOSTS; i++) {
        char cidr[40];
        snprintf(cidr, sizeof cidr, "%s/15", host_ip[i]);
        why = netns_add_host(cidr);
    }
    return why;
}

int main(void)
{
    const char *why = netns_unavailable(false);
    if (why) {
        fprintf(stderr, "test_netns_limits: skipped: %s\n", why);
        return NETNS_SKIP;
    }
    why = make_namespaces();
    if (why) {
        netns_end();
        fprintf(stderr, "test_netns_limits: skipped: %s\n", why);
        return NETNS_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_inbound_per_ip, teardown),
        cmocka_unit_test_teardown(test_inbound_per_subnet, teardown),
        cmocka_unit_test_teardown(test_accept_rates, teardown),
        cmocka_unit_test_teardown(test_pending_per_ip, teardown),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    netns_end();
    return r;
}
