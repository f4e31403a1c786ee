/* The switch's defences over loopback sockets, one test each: refusal at
 * accept when full, handshakes in flight per IP, accept rates per IP and
 * per /24, inbound peers per IP and per subnet, outbound diversity,
 * eviction, unconditional peers, and bans (misbehaviour, refusal at
 * accept and after the handshake, the ban file across a restart, expiry).
 *
 * Nodes and raw clients sit on distinct 127.x.y.z addresses (Linux binds
 * any of 127.0.0.0/8 as a source) and the switches under test group
 * loopback addresses like public ones (limit_local_addrs). Raw clients
 * are blocking sockets on the test thread; a client refused at accept
 * reads EOF before any byte, one taken into a handshake reads the node's
 * 35-byte key message. Every wait has a deadline; nothing sleeps. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conn/packet.h"
#include "net/engine_uv.h"
#include "net/sc_stream_uv.h"
#include "net/sc_stream.h"
#include "test_switch_support.h"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- raw clients ------------------------------------------------------------------ */

/* A TCP connection from src_ip (port chosen by the system) to a. */
static int raw_connect(const char *src_ip, const tm2_netaddr *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, src_ip, &src.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof src), 0);
    struct sockaddr_storage dst;
    assert_int_equal(tm2_netaddr_to_sockaddr(a, (struct sockaddr *)&dst, sizeof dst), 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&dst, sizeof(struct sockaddr_in)), 0);
    return fd;
}

enum { RAW_CLOSED = 0, RAW_GREETED = 1, RAW_SILENT = 2 };

/* What the node did with the socket within ms: closed it before sending
 * anything (refused at accept), or sent its 35-byte handshake message
 * (taken into a handshake). Closed after some bytes counts as greeted. */
static int raw_outcome(int fd, uint32_t ms)
{
    uint64_t deadline = tv_now_ms() + ms;
    size_t got = 0;
    for (;;) {
        uint64_t now = tv_now_ms();
        if (now >= deadline)
            return got ? RAW_GREETED : RAW_SILENT;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, (int)(deadline - now));
        if (r <= 0)
            continue;
        char buf[256];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            got += (size_t)n;
            if (got >= 35)
                return RAW_GREETED;
            continue;
        }
        if (n == 0 || (errno != EINTR && errno != EAGAIN))
            return got ? RAW_GREETED : RAW_CLOSED;
    }
}

/* Connects from src_ip and says what became of it; the socket is kept in
 * *fd (closed when refused). */
static int raw_try(const char *src_ip, const tm2_netaddr *a, int *fd)
{
    *fd = raw_connect(src_ip, a);
    int o = raw_outcome(*fd, 5000);
    assert_true(o != RAW_SILENT);
    if (o == RAW_CLOSED) {
        close(*fd);
        *fd = -1;
    }
    return o;
}

static uint32_t in_handshakes(node *n)
{
    tm2_switch_counters c;
    assert_int_equal(tm2_switch_stats(n->sw, &c), 0);
    return c.handshakes_inbound;
}

typedef struct u32_want {
    uint32_t (*get)(node *n);
    uint32_t want;
} u32_want;

static bool pred_u32(node *n, void *arg)
{
    u32_want *w = arg;
    return w->get(n) == w->want;
}

static void no_rates(tm2_switch_config *c, void *arg)
{
    (void)arg;
    c->accept_ip_rate = 0;
    c->accept_subnet_rate = 0;
}

/* ---- refusal at accept --------------------------------------------------------------- */

/* Full, with nothing to evict (one network group: loopback addresses are
 * one group by default) and no unconditional or persistent peer missing:
 * sockets are closed at accept, before any handshake byte, counted, and
 * summarised in one log line rather than one per socket. */
static void test_refuse_when_full(void **state)
{
    (void)state;
    node *hub = node_new(0, &(node_opts){.max_inbound = 1});
    node *filler = node_new(1, NULL);
    dial(filler, hub);
    wait_peers(hub, 1, 10000);
    tm2_switch_counters before;
    assert_int_equal(tm2_switch_stats(hub->sw, &before), 0);
    for (int i = 0; i < 20; i++) {
        int fd;
        assert_int_equal(raw_try("127.0.0.1", &hub->addr, &fd), RAW_CLOSED);
    }
    tm2_switch_counters after;
    assert_int_equal(tm2_switch_stats(hub->sw, &after), 0);
    assert_int_equal(after.inbound_refused[TM2_REFUSED_FULL], 20);
    assert_int_equal(after.inbound_accepted, before.inbound_accepted);
    assert_int_equal(after.handshakes_failed[TM2_STAGE_SECRET],
                     before.handshakes_failed[TM2_STAGE_SECRET]);
    assert_int_equal(count_evs(hub, TM2_EVENT_PEER_REJECTED, 1, NULL), 0);
    assert_int_equal(atomic_load(&hub->refusal_lines), 1);
    /* A peer leaving frees the slot: the next socket gets a handshake. */
    node_stop(filler);
    wait_peers(hub, 0, 10000);
    int fd;
    assert_int_equal(raw_try("127.0.0.1", &hub->addr, &fd), RAW_GREETED);
    close(fd);
    node_free(filler);
    node_free(hub);
}

/* ---- handshakes in flight per IP ----------------------------------------------------- */

static void test_pending_per_ip(void **state)
{
    (void)state;
    node *hub = node_new(0, &(node_opts){.limit_local = true, .handshake_ms = 20000,
                                         .tweak = no_rates});
    tm2_switch_config def;
    tm2_switch_config_default(&def);
    assert_int_equal(def.max_pending_inbound_per_ip, 4);
    int fds[6];
    for (int i = 0; i < 4; i++)
        assert_int_equal(raw_try("127.0.5.1", &hub->addr, &fds[i]), RAW_GREETED);
    for (int i = 4; i < 6; i++)
        assert_int_equal(raw_try("127.0.5.1", &hub->addr, &fds[i]), RAW_CLOSED);
    assert_int_equal(refused(hub, TM2_REFUSED_PENDING_IP), 2);
    /* Another IP is not held back. */
    int other;
    assert_int_equal(raw_try("127.0.6.1", &hub->addr, &other), RAW_GREETED);
    /* A handshake that ends frees a place for its IP. */
    close(fds[0]);
    u32_want w = {in_handshakes, 4};
    assert_true(wait_node(hub, 10000, pred_u32, &w));
    assert_int_equal(raw_try("127.0.5.1", &hub->addr, &fds[0]), RAW_GREETED);
    assert_int_equal(raw_try("127.0.5.1", &hub->addr, &fds[4]), RAW_CLOSED);
    assert_int_equal(refused(hub, TM2_REFUSED_PENDING_IP), 3);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    close(other);
    node_free(hub);
}

/* ---- accept rates ----------------------------------------------------------------------- */

static void slow_rates(tm2_switch_config *c, void *arg)
{
    (void)arg;
    c->max_pending_inbound_per_ip = 0;
    c->accept_ip_rate = 1;        /* a minute: nothing refills during the test */
    c->accept_ip_burst = 3;
    c->accept_subnet_rate = 1;
    c->accept_subnet_burst = 5;
}

static void test_accept_rate(void **state)
{
    (void)state;
    node *hub = node_new(0, &(node_opts){.limit_local = true, .handshake_ms = 20000,
                                         .tweak = slow_rates});
    int fds[16], k = 0;
    /* One IP: a burst of three. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(raw_try("127.0.7.1", &hub->addr, &fds[k++]), RAW_GREETED);
    for (int i = 0; i < 2; i++) {
        int fd;
        assert_int_equal(raw_try("127.0.7.1", &hub->addr, &fd), RAW_CLOSED);
    }
    assert_int_equal(refused(hub, TM2_REFUSED_RATE_IP), 2);
    /* One /24, an IP each: a burst of five for the subnet. */
    char ip[32];
    for (int i = 1; i <= 5; i++) {
        snprintf(ip, sizeof ip, "127.0.8.%d", i);
        assert_int_equal(raw_try(ip, &hub->addr, &fds[k++]), RAW_GREETED);
    }
    int fd;
    assert_int_equal(raw_try("127.0.8.6", &hub->addr, &fd), RAW_CLOSED);
    assert_int_equal(refused(hub, TM2_REFUSED_RATE_SUBNET), 1);
    /* The next /24 has its own bucket. */
    assert_int_equal(raw_try("127.0.9.1", &hub->addr, &fds[k++]), RAW_GREETED);
    /* Three refusals, one log line. */
    assert_int_equal(atomic_load(&hub->refusal_lines), 1);
    for (int i = 0; i < k; i++)
        close(fds[i]);
    node_free(hub);
}

/* ---- inbound peers per IP and per subnet ------------------------------------------------ */

static void per_ip_subnet(tm2_switch_config *c, void *arg)
{
    (void)arg;
    no_rates(c, NULL);
    c->max_inbound_per_ip = 2;
    c->max_inbound_per_subnet = 3;
}

static void test_inbound_per_ip_subnet(void **state)
{
    (void)state;
    node *hub = node_new(0, &(node_opts){.limit_local = true, .tweak = per_ip_subnet});
    static const char *const ips[] = {"127.0.11.1", "127.0.11.1", "127.0.11.1", "127.0.11.2",
                                      "127.0.11.3", "127.0.12.1"};
    node *ns[6];
    for (int i = 0; i < 6; i++)
        ns[i] = node_new(1 + i, &(node_opts){.bind_ip = ips[i]});
    dial(ns[0], hub);
    wait_peers(hub, 1, 10000);
    dial(ns[1], hub);
    wait_peers(hub, 2, 10000);
    /* A third from 127.0.11.1: refused at accept. */
    dial(ns[2], hub);
    wait_refused(hub, TM2_REFUSED_PER_IP, 1, 10000);
    wait_evs(ns[2], TM2_EVENT_DIAL_FAILED, 1, &hub->addr.id, 1, 10000);
    /* 127.0.11.2 is the subnet's third; 127.0.11.3 would be its fourth. */
    dial(ns[3], hub);
    wait_peers(hub, 3, 10000);
    dial(ns[4], hub);
    wait_refused(hub, TM2_REFUSED_PER_SUBNET, 1, 10000);
    wait_evs(ns[4], TM2_EVENT_DIAL_FAILED, 1, &hub->addr.id, 1, 10000);
    /* Another /24 is welcome. */
    dial(ns[5], hub);
    wait_peers(hub, 4, 10000);
    assert_int_equal(npeers(hub), 4);
    for (int i = 0; i < 6; i++)
        node_free(ns[i]);
    node_free(hub);
}

/* ---- outbound diversity ------------------------------------------------------------------ */

static bool pred_connected_or_failed(node *n, void *arg)
{
    size_t want = *(size_t *)arg;
    return count_evs(n, TM2_EVENT_PEER_CONNECTED, 0, NULL) + count_evs(n, TM2_EVENT_DIAL_FAILED, 1, NULL) >= want;
}

static void test_outbound_diversity(void **state)
{
    (void)state;
    /* Grouped like public addresses: 127.1/16 holds one outbound peer. */
    node *hub = node_new(0, &(node_opts){.limit_local = true, .bind_ip = "127.9.0.1"});
    node *t[4];
    static const char *const ips[] = {"127.1.0.1", "127.1.0.2", "127.2.0.1", "127.3.0.1"};
    tm2_netaddr addrs[4];
    for (int i = 0; i < 4; i++) {
        t[i] = node_new(1 + i, &(node_opts){.bind_ip = ips[i]});
        addrs[i] = t[i]->addr;
    }
    assert_int_equal(tm2_switch_dial_peers(hub->sw, addrs, 4), 4);
    size_t want = 4;
    assert_true(wait_node(hub, 10000, pred_connected_or_failed, &want));
    wait_peers(hub, 3, 10000);
    assert_int_equal(count_evs(hub, TM2_EVENT_DIAL_FAILED, TM2_ENETGROUP, NULL), 1);
    size_t in127_1 = 0;
    for (int i = 0; i < 2; i++) {
        tm2_peer *p = peer_of(hub, &addrs[i].id);
        in127_1 += p != NULL;
        if (p)
            tm2_peer_unref(p);
    }
    assert_int_equal(in127_1, 1);
    /* Asked again later, refused at once. */
    for (int i = 0; i < 2; i++) {
        tm2_peer *p = peer_of(hub, &addrs[i].id);
        if (!p) {
            dial(hub, t[i]);
            wait_evs(hub, TM2_EVENT_DIAL_FAILED, TM2_ENETGROUP, &addrs[i].id, 2, 10000);
        } else {
            tm2_peer_unref(p);
        }
    }
    node_free(hub);

    /* Persistent peers are dialled whatever their group, and hold it. */
    node *p1 = node_new(11, &(node_opts){.bind_ip = "127.4.0.1"});
    node *p2 = node_new(12, &(node_opts){.bind_ip = "127.4.0.2"});
    node *p3 = node_new(13, &(node_opts){.bind_ip = "127.4.0.3"});
    tm2_netaddr pers[2] = {p1->addr, p2->addr};
    node *hub2 = node_new(10, &(node_opts){.limit_local = true, .bind_ip = "127.9.0.2",
                                           .persistent = pers, .n_persistent = 2});
    wait_peers(hub2, 2, 10000);
    dial(hub2, p3);
    wait_evs(hub2, TM2_EVENT_DIAL_FAILED, TM2_ENETGROUP, &p3->addr.id, 1, 10000);
    node_free(hub2);

    /* By default loopback addresses are exempt: a local test network on
     * 127.0.0.1 dials every peer. */
    node *hub3 = node_new(20, &(node_opts){.bind_ip = "127.9.0.3"});
    assert_int_equal(tm2_switch_dial_peers(hub3->sw, addrs, 2), 2);
    wait_peers(hub3, 2, 10000);
    node_free(hub3);
    for (int i = 0; i < 4; i++)
        node_free(t[i]);
    node_free(p1);
    node_free(p2);
    node_free(p3);
}

/* ---- eviction --------------------------------------------------------------------------- */

static void evict_cfg(tm2_switch_config *c, void *arg)
{
    (void)arg;
    no_rates(c, NULL);
    c->max_inbound = 7;
    c->evict_protect_groups = 3;
    c->evict_protect_active = 1;
    c->evict_protect_oldest_pct = 34;
}

static bool pred_total(node *n, void *arg)
{
    uv_mutex_lock(&n->mu);
    bool ok = n->total >= *(uint64_t *)arg;
    uv_mutex_unlock(&n->mu);
    return ok;
}

static bool has_peer(node *hub, const node *n)
{
    tm2_peer *p = peer_of(hub, &n->addr.id);
    if (p)
        tm2_peer_unref(p);
    return p != NULL;
}

/* Seven inbound peers, in connection order: A 127.1, B C D 127.2, E 127.3,
 * F 127.2, G 127.3 (network groups /16). Protected: the oldest of each
 * group (A, B, E), the one that sent a message (D), the older third of
 * the rest (C). F and G are left; 127.2 has the most connections, so its
 * youngest, F, makes room for a newcomer from a fresh group. A newcomer
 * from a group already held is refused at accept. */
static void test_eviction(void **state)
{
    (void)state;
    node *hub = node_new(0, &(node_opts){.limit_local = true, .bind_ip = "127.8.0.1",
                                         .tweak = evict_cfg});
    static const char *const ips[] = {"127.1.0.1", "127.2.0.1", "127.2.0.2", "127.2.0.3",
                                      "127.3.0.1", "127.2.0.4", "127.3.0.2"};
    node *ns[7];
    for (int i = 0; i < 7; i++) {
        ns[i] = node_new(1 + i, &(node_opts){.bind_ip = ips[i]});
        dial(ns[i], hub);
        wait_peers(hub, (size_t)i + 1, 10000);
        wait_peers(ns[i], 1, 10000);
    }
    /* D delivers a message on a reactor channel. */
    tm2_peer *hp = peer_of(ns[3], &hub->addr.id);
    assert_non_null(hp);
    uint8_t msg[8] = {3, 0, 0};
    assert_int_equal(tm2_peer_send(hp, CH_A, msg, sizeof msg, 5000), 0);
    tm2_peer_unref(hp);
    uint64_t one = 1;
    assert_true(wait_node(hub, 10000, pred_total, &one));

    node *h = node_new(8, &(node_opts){.bind_ip = "127.4.0.1"});
    dial(h, hub);
    wait_evs(hub, TM2_EVENT_PEER_DISCONNECTED, TM2_EEVICTED, &ns[5]->addr.id, 1, 10000);
    wait_evs(hub, TM2_EVENT_PEER_CONNECTED, 0, &h->addr.id, 1, 10000);
    wait_peers(hub, 7, 10000);
    for (int i = 0; i < 7; i++)
        assert_int_equal(has_peer(hub, ns[i]), i != 5);
    assert_true(has_peer(hub, h));
    bool said = false;
    for (size_t i = 0; i < hub->n_evs; i++)
        if (hub->evs[i].type == TM2_EVENT_PEER_DISCONNECTED && hub->evs[i].reason == TM2_EEVICTED)
            said = strstr(hub->evs[i].reason_text, "evicted") != NULL;
    assert_true(said);
    tm2_switch_counters c;
    assert_int_equal(tm2_switch_stats(hub->sw, &c), 0);
    assert_int_equal(c.evicted[TM2_EVICTED_NEWCOMER], 1);
    assert_int_equal(c.peers_disconnected[-TM2_EEVICTED], 1);
    /* The evicted peer hears of it as a disconnect. */
    wait_peers(ns[5], 0, 10000);

    /* From 127.2 again: that group is held, nothing is evicted for it. */
    node *i2 = node_new(9, &(node_opts){.bind_ip = "127.2.0.9"});
    dial(i2, hub);
    wait_refused(hub, TM2_REFUSED_FULL, 1, 10000);
    assert_int_equal(npeers(hub), 7);
    assert_int_equal(tm2_switch_stats(hub->sw, &c), 0);
    assert_int_equal(c.evicted[TM2_EVICTED_NEWCOMER], 1);
    node_free(i2);
    node_free(h);
    for (int i = 0; i < 7; i++)
        node_free(ns[i]);
    node_free(hub);
}

/* A flood from one /16 fills the inbound side; an honest newcomer from a
 * fresh group still gets in, and the flood pays for it. */
static void flood_cfg(tm2_switch_config *c, void *arg)
{
    (void)arg;
    no_rates(c, NULL);
    c->max_inbound = 8;
    c->max_inbound_per_subnet = 0;
}

static void test_flood_cannot_lock_inbound(void **state)
{
    (void)state;
    node *hub = node_new(0, &(node_opts){.limit_local = true, .bind_ip = "127.8.0.2",
                                         .tweak = flood_cfg});
    node *honest = node_new(1, &(node_opts){.bind_ip = "127.20.0.1"});
    dial(honest, hub);
    wait_peers(hub, 1, 10000);
    node *fl[7];
    char ip[32];
    for (int i = 0; i < 7; i++) {
        snprintf(ip, sizeof ip, "127.66.%d.1", i);
        fl[i] = node_new(2 + i, &(node_opts){.bind_ip = ip});
        dial(fl[i], hub);
        wait_peers(hub, (size_t)i + 2, 10000);
    }
    node *newcomer = node_new(10, &(node_opts){.bind_ip = "127.21.0.1"});
    dial(newcomer, hub);
    wait_evs(hub, TM2_EVENT_PEER_CONNECTED, 0, &newcomer->addr.id, 1, 10000);
    wait_evs(hub, TM2_EVENT_PEER_DISCONNECTED, TM2_EEVICTED, NULL, 1, 10000);
    assert_true(has_peer(hub, honest));
    size_t flooders = 0;
    for (int i = 0; i < 7; i++)
        flooders += has_peer(hub, fl[i]);
    assert_int_equal(flooders, 6);
    node_free(newcomer);
    for (int i = 0; i < 7; i++)
        node_free(fl[i]);
    node_free(honest);
    node_free(hub);
}

/* ---- unconditional peers ------------------------------------------------------------------ */

typedef struct uncond_arg {
    tm2_id ids[2];
} uncond_arg;

static void uncond_cfg(tm2_switch_config *c, void *arg)
{
    uncond_arg *u = arg;
    no_rates(c, NULL);
    c->max_inbound = 1;
    c->max_outbound = 1;
    c->unconditional_peer_ids = u->ids;
    c->n_unconditional_peer_ids = 2;
    c->evict_protect_groups = 0;
    c->evict_protect_active = 0;
    c->evict_protect_oldest_pct = 0;
}

static void test_unconditional(void **state)
{
    (void)state;
    uncond_arg ua = {{key_id(5), key_id(6)}};
    node *hub = node_new(0, &(node_opts){.limit_local = true, .bind_ip = "127.8.0.3",
                                         .tweak = uncond_cfg, .tweak_arg = &ua});
    assert_true(tm2_switch_is_unconditional(hub->sw, &ua.ids[0]));
    assert_false(tm2_switch_is_unconditional(hub->sw, &hub->addr.id));
    node *filler = node_new(1, &(node_opts){.bind_ip = "127.30.0.1"});
    dial(filler, hub);
    wait_peers(hub, 1, 10000);
    /* Inbound full: the unconditional peer still comes in, over the cap. */
    node *u1 = node_new(5, &(node_opts){.bind_ip = "127.31.0.1"});
    dial(u1, hub);
    wait_peers(hub, 2, 10000);
    tm2_peer *p = peer_of(hub, &u1->addr.id);
    assert_non_null(p);
    assert_true(tm2_peer_is_unconditional(p));
    tm2_peer_unref(p);
    /* A newcomer from a fresh group evicts the filler, never it. */
    node *n = node_new(2, &(node_opts){.bind_ip = "127.32.0.1"});
    dial(n, hub);
    wait_evs(hub, TM2_EVENT_PEER_DISCONNECTED, TM2_EEVICTED, &filler->addr.id, 1, 10000);
    wait_evs(hub, TM2_EVENT_PEER_CONNECTED, 0, &n->addr.id, 1, 10000);
    assert_true(has_peer(hub, u1));
    /* Outbound full: an unconditional peer is still dialled. */
    node *t = node_new(3, &(node_opts){.bind_ip = "127.33.0.1"});
    node *u2 = node_new(6, &(node_opts){.bind_ip = "127.34.0.1"});
    dial(hub, t);
    wait_evs(hub, TM2_EVENT_PEER_CONNECTED, 0, &t->addr.id, 1, 10000);
    dial(hub, u2);
    wait_evs(hub, TM2_EVENT_PEER_CONNECTED, 0, &u2->addr.id, 1, 10000);
    size_t in, out;
    tm2_switch_counts(hub->sw, &in, &out, NULL);
    assert_int_equal(in, 2);
    assert_int_equal(out, 2);
    tm2_switch_counters c;
    assert_int_equal(tm2_switch_stats(hub->sw, &c), 0);
    assert_int_equal(c.peers_unconditional, 2);
    /* ... and a third ordinary outbound peer is not. */
    node *t2 = node_new(4, &(node_opts){.bind_ip = "127.35.0.1"});
    dial(hub, t2);
    wait_evs(hub, TM2_EVENT_DIAL_FAILED, TM2_ELIMIT, &t2->addr.id, 1, 10000);
    node_free(t2);
    node_free(t);
    node_free(u2);
    node_free(n);
    node_free(u1);
    node_free(filler);
    node_free(hub);
}

/* ---- bans ------------------------------------------------------------------------------------ */

/* A peer made by hand on its own libuv loop (the test thread's): a secret
 * connection, a NodeInfo, then whatever the test writes. */
typedef struct mpeer {
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__sc_loop scl;
    tm2__sc_stream s;
    uv_connect_t creq;
    uv_timer_t tick;
    tm2_node_key key;
    tm2_id id;
    size_t in_len;
    bool hs_done, closed, errored;
    int hs_err, err;
} mpeer;

static void mp_on_handshake(tm2__sc_stream *s, int err)
{
    mpeer *m = s->data;
    m->hs_done = true;
    m->hs_err = err;
    if (err) {
        tm2__sc_stream_close(s);
        return;
    }
    /* Our NodeInfo, as a test node's (network, versions, channels). */
    static const tm2_version_info versions[] = {
        {"abci", TM2_PROTOCOL_VERSION, false}, {"app", "", false},
        {"bft", TM2_PROTOCOL_VERSION, false},  {"blockchain", TM2_PROTOCOL_VERSION, false},
        {"p2p", TM2_PROTOCOL_VERSION, false},
    };
    static const uint8_t chans[] = {CH_A, CH_B};
    tm2_node_info ni;
    memset(&ni, 0, sizeof ni);
    ni.versions = versions;
    ni.n_versions = 5;
    ni.has_net_address = true;
    char spec[128];
    snprintf(spec, sizeof spec, "%s@127.0.0.1:26656", m->id.s);
    assert_int_equal(tm2_netaddr_parse(spec, 0, &ni.net_address), 0);
    ni.network = "test-chain";
    ni.version = TM2_PROTOCOL_VERSION;
    ni.channels = chans;
    ni.n_channels = 2;
    ni.moniker = "manual";
    ni.tx_index = "off";
    uint8_t buf[1024];
    int n = tm2_node_info_encode(&ni, buf, sizeof buf);
    assert_true(n > 0);
    (void)tm2__sc_stream_write(s, buf, (size_t)n);
}

static void mp_on_read(tm2__sc_stream *s, const uint8_t *d, size_t len)
{
    (void)d;
    ((mpeer *)s->data)->in_len += len;
}

static void mp_on_error(tm2__sc_stream *s, int err)
{
    mpeer *m = s->data;
    m->errored = true;
    m->err = err;
    tm2__sc_stream_close(s);
}

static void mp_on_close(tm2__sc_stream *s) { ((mpeer *)s->data)->closed = true; }

static const tm2__sc_stream_cbs mp_cbs = {
    .on_handshake = mp_on_handshake,
    .on_read = mp_on_read,
    .on_error = mp_on_error,
    .on_close = mp_on_close,
};

static void mp_connected(uv_connect_t *req, int status)
{
    mpeer *m = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(tm2__sc_stream_start(&m->s, &m->key, NULL), 0);
}

static void tick_cb(uv_timer_t *t) { (void)t; }

static void mp_start(mpeer *m, int seed, const char *src_ip, const tm2_netaddr *to)
{
    memset(m, 0, sizeof *m);
    assert_int_equal(uv_loop_init(&m->loop), 0);
    assert_int_equal(tm2__uv_engine_init(&m->ue, &m->loop), 0);
    assert_int_equal(tm2__sc_loop_init(&m->scl, &m->ue.e), 0);
    uv_timer_init(&m->loop, &m->tick);
    node_key(seed, &m->key);
    tm2_node_key_id(&m->key, &m->id);
    tm2__sc_stream_config cfg = {.handshake_timeout_ms = 10000};
    tm2__sc_stream_init(&m->s, &m->scl, &cfg, &mp_cbs);
    m->s.data = m;
    uv_tcp_t *tcp = tm2__sc_stream_uv_tcp(&m->s);
    struct sockaddr_in src = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, src_ip, &src.sin_addr), 1);
    assert_int_equal(uv_tcp_bind(tcp, (const struct sockaddr *)&src, 0), 0);
    struct sockaddr_storage ss;
    assert_int_equal(tm2_netaddr_to_sockaddr(to, (struct sockaddr *)&ss, sizeof ss), 0);
    m->creq.data = m;
    assert_int_equal(uv_tcp_connect(&m->creq, tcp, (const struct sockaddr *)&ss, mp_connected), 0);
}

/* Runs the peer's loop for up to ms (one turn at a time). */
static void mp_pump(mpeer *m, uint32_t ms)
{
    uv_timer_start(&m->tick, tick_cb, ms, 0);
    uv_run(&m->loop, UV_RUN_ONCE);
    uv_timer_stop(&m->tick);
}

/* Pumps the peer until cond or the deadline, reading hub events too. */
#define MP_UNTIL(m, hub, ms, cond)                                                  \
    do {                                                                            \
        uint64_t dl_ = tv_now_ms() + (ms);                                          \
        while (!(cond)) {                                                           \
            if (tv_now_ms() >= dl_)                                                 \
                fail_msg("timed out waiting for: %s", #cond);                       \
            mp_pump((m), 20);                                                       \
            tm2_event ev_;                                                          \
            while (tm2_subscription_next((hub)->sub, &ev_, 0) == 0)                 \
                if ((hub)->n_evs < MAX_EVS)                                         \
                    (hub)->evs[(hub)->n_evs++] = ev_;                               \
        }                                                                           \
    } while (0)

static void mp_finish(mpeer *m)
{
    if (!m->closed)
        tm2__sc_stream_close(&m->s);
    while (!m->closed)
        uv_run(&m->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&m->tick, NULL);
    tm2__sc_loop_close(&m->scl);
    tm2__uv_engine_close(&m->ue);
    uv_run(&m->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&m->loop), 0);
    tm2_node_key_wipe(&m->key);
}

typedef struct ban_cfg_arg {
    const char *file;
    uint64_t duration_ms;
} ban_cfg_arg;

static void ban_cfg(tm2_switch_config *c, void *arg)
{
    ban_cfg_arg *b = arg;
    no_rates(c, NULL);
    c->ban_file = b->file;
    c->ban_duration_ms = b->duration_ms;
}

static bool banned_ev(node *hub, const tm2_id *id, int reason)
{
    return count_evs(hub, TM2_EVENT_PEER_BANNED, reason, id) > 0;
}

static void test_ban_misbehaviour(void **state)
{
    (void)state;
    char dir[] = "/tmp/tm2-admit-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[128];
    snprintf(file, sizeof file, "%s/data/bans.json", dir);
    ban_cfg_arg ba = {file, 600000};
    node *hub = node_new(0, &(node_opts){.limit_local = true, .bind_ip = "127.8.0.4",
                                         .tweak = ban_cfg, .tweak_arg = &ba});

    /* A peer that sends a packet on a channel nobody advertised. */
    mpeer m;
    mp_start(&m, 40, "127.0.10.1", &hub->addr);
    MP_UNTIL(&m, hub, 10000, count_evs(hub, TM2_EVENT_PEER_CONNECTED, 0, &m.id) == 1);
    uint8_t pkt[64];
    static const uint8_t junk[] = {1, 2, 3};
    int n = tm2__packet_encode_msg(pkt, sizeof pkt, 0x77, 1, junk, sizeof junk);
    assert_true(n > 0);
    assert_int_equal(tm2__sc_stream_write(&m.s, pkt, (size_t)n), 0);
    MP_UNTIL(&m, hub, 10000, m.closed);
    mp_finish(&m);
    wait_evs(hub, TM2_EVENT_PEER_DISCONNECTED, TM2_ECHANNEL, &m.id, 1, 10000);
    wait_evs(hub, TM2_EVENT_PEER_BANNED, TM2_ECHANNEL, &m.id, 1, 10000);
    tm2_ban bans[4];
    assert_int_equal(tm2_switch_bans(hub->sw, bans, 4), 2);
    tm2_switch_counters c;
    assert_int_equal(tm2_switch_stats(hub->sw, &c), 0);
    assert_int_equal(c.bans_active, 2);
    assert_int_equal(c.bans_total, 2);
    char t[64];
    bool by_ip = false, by_id = false;
    for (int i = 0; i < 2; i++) {
        assert_true(tm2_ban_target_format(&bans[i], t, sizeof t) > 0);
        by_ip |= strcmp(t, "127.0.10.1") == 0;
        by_id |= strcmp(t, m.id.s) == 0;
        assert_non_null(strstr(bans[i].reason, "CHANNEL"));
        assert_true(bans[i].expires_unix_ms > bans[i].created_unix_ms);
    }
    assert_true(by_ip && by_id);

    /* Back from the banned IP: closed at accept, before the handshake. */
    int fd;
    assert_int_equal(raw_try("127.0.10.1", &hub->addr, &fd), RAW_CLOSED);
    assert_int_equal(refused(hub, TM2_REFUSED_BANNED), 1);
    /* The banned ID from another IP: refused after its handshake. */
    mp_start(&m, 40, "127.0.10.2", &hub->addr);
    MP_UNTIL(&m, hub, 10000, m.closed);
    mp_finish(&m);
    wait_evs(hub, TM2_EVENT_PEER_REJECTED, TM2_EBANNED, &m.id, 1, 10000);
    assert_int_equal(count_evs(hub, TM2_EVENT_PEER_CONNECTED, 0, &m.id), 1);

    /* A reactor stopping a peer for a protocol violation (discovery does
     * the same on a request flood) bans it too. */
    node *r = node_new(41, &(node_opts){.bind_ip = "127.0.13.1"});
    hub->kill_on_receive = true;
    dial(r, hub);
    wait_evs(hub, TM2_EVENT_PEER_CONNECTED, 0, &r->addr.id, 1, 10000);
    wait_peers(r, 1, 10000);
    tm2_peer *hp = peer_of(r, &hub->addr.id);
    assert_non_null(hp);
    uint8_t bad[4] = {0xee};
    assert_int_equal(tm2_peer_send(hp, CH_B, bad, sizeof bad, 5000), 0);
    tm2_peer_unref(hp);
    wait_evs(hub, TM2_EVENT_PEER_BANNED, TM2_EPROTO, &r->addr.id, 1, 10000);
    assert_true(banned_ev(hub, &r->addr.id, TM2_EPROTO));
    wait_peers(r, 0, 10000);
    dial(r, hub);
    wait_refused(hub, TM2_REFUSED_BANNED, 2, 10000);
    assert_int_equal(tm2_switch_bans(hub->sw, NULL, 0), 4);
    /* Neither is dialled. */
    dial(hub, r);
    wait_evs(hub, TM2_EVENT_DIAL_FAILED, TM2_EBANNED, &r->addr.id, 1, 10000);

    /* Bans outlive the switch: a new one on the same file refuses them. */
    node_free(hub);
    node_free(r);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    hub = node_new(0, &(node_opts){.limit_local = true, .bind_ip = "127.8.0.4",
                                   .tweak = ban_cfg, .tweak_arg = &ba});
    assert_int_equal(tm2_switch_bans(hub->sw, NULL, 0), 4);
    assert_int_equal(raw_try("127.0.10.1", &hub->addr, &fd), RAW_CLOSED);
    assert_int_equal(refused(hub, TM2_REFUSED_BANNED), 1);

    /* A ban ends with its duration; unban lifts one at once. */
    uint64_t t0 = tv_now_ms();
    assert_int_equal(tm2_switch_ban(hub->sw, "127.0.14.1", 400, "short"), 0);
    wait_evs(hub, TM2_EVENT_PEER_BANNED, TM2_EBANNED, NULL, 1, 10000);
    assert_int_equal(raw_try("127.0.14.1", &hub->addr, &fd), RAW_CLOSED);
    /* Tried again every 50 ms of waiting on the hub's events. */
    while (raw_try("127.0.14.1", &hub->addr, &fd) == RAW_CLOSED) {
        assert_true(tv_now_ms() - t0 < 10000);
        (void)wait_node(hub, 50, pred_never, NULL);
    }
    assert_true(tv_now_ms() - t0 >= 400);
    close(fd);
    assert_int_equal(tm2_switch_unban(hub->sw, "127.0.10.1"), 0);
    assert_int_equal(tm2_switch_unban(hub->sw, "127.0.10.1"), TM2_ENOTFOUND);
    assert_int_equal(tm2_switch_unban(hub->sw, "nonsense"), TM2_EINVAL);
    assert_int_equal(raw_try("127.0.10.1", &hub->addr, &fd), RAW_GREETED);
    close(fd);
    assert_int_equal(tm2_switch_ban(hub->sw, "nonsense", 0, NULL), TM2_EINVAL);
    node_free(hub);

    /* What the last switch saved: three bans left. */
    tm2_ban *saved = NULL;
    size_t ns = 0;
    char why[256];
    assert_int_equal(tm2_ban_file_load(file, &saved, &ns, why, sizeof why), 0);
    assert_int_equal(ns, 3);
    free(saved);
    unlink(file);
    char sub[160];
    snprintf(sub, sizeof sub, "%s/data", dir);
    rmdir(sub);
    rmdir(dir);
}

typedef struct redial_want {
    node *hub;
    size_t failed;
} redial_want;

/* The dial to the hub failed once more, or connected. */
static bool pred_failed_or_in(node *n, void *arg)
{
    redial_want *w = arg;
    return npeers(n) > 0 || count_evs(n, TM2_EVENT_DIAL_FAILED, 1, &w->hub->addr.id) >= w->failed;
}

/* A ban for misbehaviour ends with ban_duration: the peer, redialling,
 * is refused at accept until then and connects after. */
static void test_ban_expires(void **state)
{
    (void)state;
    ban_cfg_arg ba = {NULL, 1000};
    node *hub = node_new(0, &(node_opts){.limit_local = true, .bind_ip = "127.8.0.5",
                                         .tweak = ban_cfg, .tweak_arg = &ba});
    hub->kill_on_receive = true;
    node *r = node_new(42, &(node_opts){.bind_ip = "127.0.15.1"});
    dial(r, hub);
    wait_peers(r, 1, 10000);
    tm2_peer *hp = peer_of(r, &hub->addr.id);
    assert_non_null(hp);
    uint8_t bad[4] = {0xee};
    assert_int_equal(tm2_peer_send(hp, CH_B, bad, sizeof bad, 5000), 0);
    tm2_peer_unref(hp);
    wait_evs(hub, TM2_EVENT_PEER_BANNED, TM2_EPROTO, &r->addr.id, 1, 10000);
    uint64_t t0 = tv_now_ms();
    tm2_ban b[2];
    assert_int_equal(tm2_switch_bans(hub->sw, b, 2), 2);
    int64_t until = b[0].expires_unix_ms;
    assert_true(until - b[0].created_unix_ms == 1000);
    wait_peers(r, 0, 10000);
    wait_peers(hub, 0, 10000);
    hub->kill_on_receive = false;
    /* Redialled after each failure, with 50 ms of waiting on events in
     * between, until the ban is over. */
    int64_t first = wall_ms();
    while (npeers(r) == 0) {
        assert_true(tv_now_ms() - t0 < 10000);
        size_t failed = count_evs(r, TM2_EVENT_DIAL_FAILED, 1, &hub->addr.id);
        dial(r, hub);
        redial_want w = {hub, failed + 1};
        assert_true(wait_node(r, 10000, pred_failed_or_in, &w));
        if (npeers(r) == 0)
            (void)wait_node(hub, 50, pred_never, NULL);
    }
    wait_peers(hub, 1, 10000);
    /* Not before the end; and refused at accept while it lasted (unless
     * the machine was so slow that the first try came after it). */
    assert_true(wall_ms() >= until);
    if (first < until)
        assert_true(refused(hub, TM2_REFUSED_BANNED) >= 1);
    assert_int_equal(tm2_switch_bans(hub->sw, NULL, 0), 0);
    node_free(r);
    node_free(hub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refuse_when_full),
        cmocka_unit_test(test_pending_per_ip),
        cmocka_unit_test(test_accept_rate),
        cmocka_unit_test(test_inbound_per_ip_subnet),
        cmocka_unit_test(test_outbound_diversity),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_flood_cannot_lock_inbound),
        cmocka_unit_test(test_unconditional),
        cmocka_unit_test(test_ban_misbehaviour),
        cmocka_unit_test(test_ban_expires),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
