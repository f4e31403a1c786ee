/* Shared helpers of the switch integration tests: nodes (a switch with a
 * counting test reactor, an event recorder and a log recorder) on loopback,
 * and waits on events and counters with deadlines (never sleeps).
 * Header-only: each test_switch*.c is its own program. */
#ifndef TM2_TEST_SWITCH_SUPPORT_H
#define TM2_TEST_SWITCH_SUPPORT_H

#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "tm2p2p/switch.h"
#include "tv.h"

/* Internal (switch/switch_internal.h): dials leave from this IP. */
int tm2__switch_set_dial_source(tm2_switch *sw, const char *ip);

#define CH_A 0x40          /* counted broadcast channel */
#define CH_B 0x41          /* second channel, not advertised by every node */
#define MAX_NODES 24
#define MAX_SEQ 256
#define MAX_EVS 4096

/* Every program uses a different subset of these helpers. */
#define TSH static __attribute__((unused))

typedef struct node {
    int idx;
    tm2_switch *sw;
    tm2_node_key key;
    tm2_netaddr addr;      /* bound listen address with our ID */
    tm2_subscription *sub;
    tm2_channel_desc chans[2];
    tm2_reactor reactor;

    uv_mutex_t mu;
    uv_cond_t cv;
    uint32_t counts[MAX_NODES][MAX_SEQ];   /* receipts on CH_A by sender and seq */
    uint64_t total;
    int removed_reasons[64];
    size_t n_removed;
    atomic_int order_errors;
    atomic_int adds;
    /* A gate that blocks receive (a reader that never drains). */
    bool gate_closed;
    bool gated;
    /* Stop the peer from inside its own callbacks. */
    bool kill_on_add;
    bool kill_on_receive;          /* a CH_B message starting with 0xee */
    int loop_send;                 /* what a send from the network thread returned */

    /* Log lines summarising refusals at accept. */
    atomic_int refusal_lines;

    /* Events read so far by the test thread. */
    tm2_event evs[MAX_EVS];
    size_t n_evs;
} node;

/* ---- the test reactor ---------------------------------------------------------- */

TSH void peer_state_free(void *v) { free(v); }

TSH int *peer_state(tm2_peer *p) { return tm2_peer_get(p, "test.state"); }

TSH void r_init_peer(tm2_peer *p, void *user)
{
    (void)user;
    int *s = malloc(sizeof *s);
    assert_non_null(s);
    *s = 1;
    assert_int_equal(tm2_peer_set(p, "test.state", s, peer_state_free), 0);
}

TSH void r_add_peer(tm2_peer *p, void *user)
{
    node *n = user;
    int *s = peer_state(p);
    if (!s || *s != 1)
        atomic_fetch_add(&n->order_errors, 1);
    else
        *s = 2;
    atomic_fetch_add(&n->adds, 1);
    if (n->kill_on_add)
        tm2_switch_stop_peer_for_error(n->sw, p, TM2_EREJECTED);
}

TSH void r_remove_peer(tm2_peer *p, int reason, void *user)
{
    node *n = user;
    int *s = peer_state(p);
    if (!s || *s != 2)
        atomic_fetch_add(&n->order_errors, 1);
    else
        *s = 3;
    uv_mutex_lock(&n->mu);
    if (n->n_removed < 64)
        n->removed_reasons[n->n_removed++] = reason;
    uv_cond_broadcast(&n->cv);
    uv_mutex_unlock(&n->mu);
}

TSH void r_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    node *n = user;
    int *s = peer_state(p);
    if (!s || *s != 2)
        atomic_fetch_add(&n->order_errors, 1);
    if (n->kill_on_receive && ch == CH_B && len >= 1 && msg[0] == 0xee) {
        /* On the network thread a send never waits. */
        uint8_t back[4] = {0xee};
        n->loop_send = tm2_peer_send(p, CH_B, back, sizeof back, 10000);
        tm2_switch_stop_peer_for_error(n->sw, p, TM2_EPROTO);
        /* The peer is gone for the reactor already, and stays valid. */
        if (tm2_peer_is_running(p) || *peer_state(p) != 3)
            atomic_fetch_add(&n->order_errors, 1);
        if (tm2_peer_try_send(p, CH_B, back, sizeof back) != TM2_ECLOSED)
            atomic_fetch_add(&n->order_errors, 1);
    }
    uv_mutex_lock(&n->mu);
    if (n->gate_closed) {
        n->gated = true;
        uv_cond_broadcast(&n->cv);
        while (n->gate_closed)
            uv_cond_wait(&n->cv, &n->mu);
    }
    if (ch == CH_A && len >= 3 && msg[0] < MAX_NODES) {
        unsigned seq = (unsigned)msg[1] | (unsigned)msg[2] << 8;
        if (seq < MAX_SEQ)
            n->counts[msg[0]][seq]++;
    }
    n->total++;
    uv_cond_broadcast(&n->cv);
    uv_mutex_unlock(&n->mu);
}

/* ---- logging ------------------------------------------------------------------ */

TSH void node_log(void *user, tm2_log_level level, const char *msg, const tm2_log_field *f,
                 size_t nf)
{
    (void)level;
    node *n = user;
    char line[1024];
    if (strcmp(msg, "inbound connections refused before the handshake") == 0)
        atomic_fetch_add(&n->refusal_lines, 1);
    if (getenv("TM2_TEST_LOG"))
        fprintf(stderr, "[node %d] %s\n", n->idx, tv_log_line(line, sizeof line, msg, f, nf));
}

/* ---- nodes ------------------------------------------------------------------------ */

typedef struct node_opts {
    const char *listen;            /* NULL: tcp://127.0.0.1:0 */
    const char *network;           /* NULL: test-chain */
    uint32_t max_inbound, max_outbound;   /* 0: the defaults (40, 10) */
    const tm2_netaddr *persistent;
    size_t n_persistent;
    const tm2_id *priv;
    size_t n_priv;
    uint32_t redial_base_ms, redial_max_ms;   /* 0: the defaults */
    uint32_t redial_stable_ms;     /* 0: the default */
    bool deny_duplicate_ip;        /* the reference's default; tests on 127.0.0.1 allow them */
    const char *const *specs;      /* more persistent peers, "ID@host:port" */
    size_t n_specs;
    tm2_resolve_fn resolve;
    void *resolve_user;
    bool only_ch_a;                /* advertise CH_A only */
    size_t queue_cap;              /* send queue capacity of CH_A; 0: 256 */
    uint32_t handshake_ms;         /* 0: 3000 */
    const char *software, *version;   /* NodeInfo free text; NULL: the switch's defaults */
    /* Listen on this IP (port 0) and dial from it: nodes on distinct
     * 127.x.y.z addresses. NULL: 127.0.0.1, dials from the system's choice. */
    const char *bind_ip;
    bool limit_local;              /* limit_local_addrs: 127/8 grouped like public IPs */
    bool no_evict;                 /* evict_inbound off */
    /* Last word on the config. */
    void (*tweak)(tm2_switch_config *c, void *arg);
    void *tweak_arg;
} node_opts;

TSH void node_key(int seed_idx, tm2_node_key *k)
{
    uint8_t seed[32];
    memset(seed, 0, sizeof seed);
    seed[0] = (uint8_t)seed_idx;
    seed[1] = 0x5a;
    tm2_node_key_from_seed(k, seed);
}

TSH tm2_id key_id(int seed_idx)
{
    tm2_node_key k;
    tm2_id id;
    node_key(seed_idx, &k);
    tm2_node_key_id(&k, &id);
    return id;
}

TSH node *node_new(int idx, const node_opts *o)
{
    node_opts def;
    if (!o) {
        memset(&def, 0, sizeof def);
        o = &def;
    }
    node *n = calloc(1, sizeof *n);
    assert_non_null(n);
    n->idx = idx;
    uv_mutex_init(&n->mu);
    uv_cond_init(&n->cv);
    atomic_init(&n->order_errors, 0);
    atomic_init(&n->adds, 0);
    atomic_init(&n->refusal_lines, 0);
    node_key(idx, &n->key);

    n->chans[0] = (tm2_channel_desc){.id = CH_A, .priority = 5,
                                     .send_queue_capacity = o->queue_cap ? o->queue_cap : 256,
                                     .recv_message_capacity = 1u << 20};
    n->chans[1] = (tm2_channel_desc){.id = CH_B, .priority = 1, .send_queue_capacity = 16,
                                     .recv_message_capacity = 1u << 20};
    n->reactor = (tm2_reactor){.name = "test", .channels = n->chans,
                               .n_channels = o->only_ch_a ? 1 : 2, .user = n,
                               .init_peer = r_init_peer, .add_peer = r_add_peer,
                               .remove_peer = r_remove_peer, .receive = r_receive};
    char moniker[32];
    snprintf(moniker, sizeof moniker, "node-%d", idx);
    tm2_switch_config c;
    tm2_switch_config_default(&c);
    c.key = n->key;
    char listen[64];
    snprintf(listen, sizeof listen, "tcp://%s:0", o->bind_ip ? o->bind_ip : "127.0.0.1");
    c.listen_addr = o->listen ? o->listen : listen;
    c.network = o->network ? o->network : "test-chain";
    c.moniker = moniker;
    c.software = o->software;
    c.version = o->version;
    if (o->max_inbound)
        c.max_inbound = o->max_inbound;
    if (o->max_outbound)
        c.max_outbound = o->max_outbound;
    c.handshake_timeout_ms = o->handshake_ms ? o->handshake_ms : 3000;
    c.dial_timeout_ms = 2000;
    c.allow_duplicate_ip = !o->deny_duplicate_ip;
    char pspec[16][TM2_NETADDR_STRLEN + 1];
    const char *pp[32];
    assert_true(o->n_persistent <= 16 && o->n_specs <= 16);
    for (size_t i = 0; i < o->n_persistent; i++) {
        assert_true(tm2_netaddr_format(&o->persistent[i], pspec[i], sizeof pspec[i]) > 0);
        pp[i] = pspec[i];
    }
    for (size_t i = 0; i < o->n_specs; i++)
        pp[o->n_persistent + i] = o->specs[i];
    c.persistent_peers = pp;
    c.n_persistent_peers = o->n_persistent + o->n_specs;
    c.resolve = o->resolve;
    c.resolve_user = o->resolve_user;
    c.private_peer_ids = o->priv;
    c.n_private_peer_ids = o->n_priv;
    if (o->redial_base_ms)
        c.redial_base_ms = o->redial_base_ms;
    if (o->redial_max_ms)
        c.redial_max_ms = o->redial_max_ms;
    if (c.redial_max_ms < c.redial_base_ms)
        c.redial_max_ms = c.redial_base_ms;
    if (o->redial_stable_ms)
        c.redial_stable_ms = o->redial_stable_ms;
    c.mconn = (tm2_mconn_config){.max_packet_payload = 1024, .flush_throttle_ms = 1};
    c.reactors = &n->reactor;
    c.n_reactors = 1;
    c.log = node_log;
    c.log_user = n;
    c.log_level = TM2_LOG_DEBUG;
    c.limit_local_addrs = o->limit_local;
    if (o->no_evict)
        c.evict_inbound = false;
    if (o->tweak)
        o->tweak(&c, o->tweak_arg);
    assert_int_equal(tm2_switch_new(&c, &n->sw), 0);
    if (o->bind_ip)
        assert_int_equal(tm2__switch_set_dial_source(n->sw, o->bind_ip), 0);
    assert_int_equal(tm2_switch_subscribe(n->sw, TM2_EVENT_ALL, NULL, 4096, &n->sub), 0);
    assert_int_equal(tm2_switch_start(n->sw), 0);
    assert_int_equal(tm2_switch_listen_addr(n->sw, &n->addr), 0);
    assert_string_equal(n->addr.id.s, tm2_switch_id(n->sw)->s);
    return n;
}

/* Stops the switch (the node's counters stay readable). */
TSH void node_stop(node *n)
{
    uv_mutex_lock(&n->mu);
    n->gate_closed = false;
    uv_cond_broadcast(&n->cv);
    uv_mutex_unlock(&n->mu);
    tm2_switch_stop(n->sw);
}

TSH void node_free(node *n)
{
    if (!n)
        return;
    node_stop(n);
    tm2_unsubscribe(n->sub);
    tm2_switch_free(n->sw);
    assert_int_equal(atomic_load(&n->order_errors), 0);
    uv_mutex_destroy(&n->mu);
    uv_cond_destroy(&n->cv);
    tm2_node_key_wipe(&n->key);
    free(n);
}

TSH size_t npeers(node *n) { return tm2_switch_peers(n->sw, NULL, 0); }

/* Reads events (kept in n->evs) until pred holds; false at the deadline. */
typedef bool (*node_pred)(node *n, void *arg);

TSH bool wait_node(node *n, uint32_t ms, node_pred pred, void *arg)
{
    uint64_t deadline = tv_now_ms() + ms;
    for (;;) {
        if (pred(n, arg))
            return true;
        uint64_t now = tv_now_ms();
        if (now >= deadline)
            return false;
        /* Predicates may look at other nodes too, whose changes raise no
         * event here: look again at least every 50 ms. */
        uint64_t slice = deadline - now < 50 ? deadline - now : 50;
        tm2_event ev;
        int r = tm2_subscription_next(n->sub, &ev, (int)slice);
        if (r == 0 && n->n_evs < MAX_EVS)
            n->evs[n->n_evs++] = ev;
        else if (r == TM2_ECLOSED)
            return pred(n, arg);
    }
}

/* Like wait_node, for a predicate over two nodes: wakes on either's events. */
TSH bool wait_two(node *a, node *b, uint32_t ms, node_pred pred, void *arg)
{
    uint64_t deadline = tv_now_ms() + ms;
    node *ns[2] = {a, b};
    for (;;) {
        if (pred(a, arg))
            return true;
        uint64_t now = tv_now_ms();
        if (now >= deadline)
            return false;
        struct pollfd pf[2] = {{.fd = tm2_subscription_fd(a->sub), .events = POLLIN},
                               {.fd = tm2_subscription_fd(b->sub), .events = POLLIN}};
        (void)poll(pf, 2, (int)(deadline - now));
        for (int i = 0; i < 2; i++) {
            tm2_event ev;
            while (tm2_subscription_next(ns[i]->sub, &ev, 0) == 0)
                if (ns[i]->n_evs < MAX_EVS)
                    ns[i]->evs[ns[i]->n_evs++] = ev;
        }
    }
}

TSH bool pred_peers(node *n, void *arg) { return npeers(n) == *(size_t *)arg; }

TSH bool pred_never(node *n, void *arg)
{
    (void)n;
    (void)arg;
    return false;
}

TSH void wait_peers(node *n, size_t want, uint32_t ms)
{
    if (!wait_node(n, ms, pred_peers, &want))
        fail_msg("node %d: %zu peers, want %zu", n->idx, npeers(n), want);
}

/* Events of type t (and reason, unless 1) recorded for id (NULL: any). */
TSH size_t count_evs(node *n, tm2_event_type t, int reason, const tm2_id *id)
{
    size_t c = 0;
    for (size_t i = 0; i < n->n_evs; i++) {
        const tm2_event *e = &n->evs[i];
        if (e->type == t && (reason == 1 || e->reason == reason) &&
            (!id || strcmp(e->peer_id.s, id->s) == 0))
            c++;
    }
    return c;
}

typedef struct ev_want {
    tm2_event_type type;
    int reason;
    const tm2_id *id;
    size_t n;
} ev_want;

TSH bool pred_evs(node *n, void *arg)
{
    ev_want *w = arg;
    return count_evs(n, w->type, w->reason, w->id) >= w->n;
}

TSH void wait_evs(node *n, tm2_event_type t, int reason, const tm2_id *id, size_t want,
                     uint32_t ms)
{
    ev_want w = {t, reason, id, want};
    if (!wait_node(n, ms, pred_evs, &w))
        fail_msg("node %d: %zu events of type %d reason %d, want %zu", n->idx,
                 count_evs(n, t, reason, id), (int)t, reason, want);
}

/* Sockets the node refused at accept for reason (tm2_refusal). */
TSH uint64_t refused(node *n, int reason)
{
    tm2_switch_counters c;
    assert_int_equal(tm2_switch_stats(n->sw, &c), 0);
    return c.inbound_refused[reason];
}

typedef struct refused_want {
    int reason;
    uint64_t n;
} refused_want;

TSH bool pred_refused(node *n, void *arg)
{
    refused_want *w = arg;
    return refused(n, w->reason) >= w->n;
}

/* Waits until the node refused at least want sockets for reason. */
TSH void wait_refused(node *n, int reason, uint64_t want, uint32_t ms)
{
    refused_want w = {reason, want};
    if (!wait_node(n, ms, pred_refused, &w))
        fail_msg("node %d: %llu refused for %s, want %llu", n->idx,
                 (unsigned long long)refused(n, reason), tm2_refusal_name(reason),
                 (unsigned long long)want);
}

/* Waits until the reactor counted at least want receipts. */
TSH void wait_total(node *n, uint64_t want, uint32_t ms)
{
    uint64_t deadline = tv_now_ms() + ms;
    uv_mutex_lock(&n->mu);
    while (n->total < want) {
        uint64_t now = tv_now_ms();
        if (now >= deadline)
            break;
        uv_cond_timedwait(&n->cv, &n->mu, (deadline - now) * 1000000u);
    }
    uint64_t got = n->total;
    uv_mutex_unlock(&n->mu);
    if (got < want)
        fail_msg("node %d: %llu messages, want %llu", n->idx, (unsigned long long)got,
                 (unsigned long long)want);
}

/* A referenced peer of n with id (NULL: the first one). */
TSH tm2_peer *peer_of(node *n, const tm2_id *id)
{
    tm2_peer *ps[64];
    size_t k = tm2_switch_peers(n->sw, ps, 64);
    tm2_peer *found = NULL;
    for (size_t i = 0; i < k && i < 64; i++) {
        if (!found && (!id || strcmp(tm2_peer_id(ps[i])->s, id->s) == 0))
            found = ps[i];
        else
            tm2_peer_unref(ps[i]);
    }
    return found;
}

TSH void dial(node *from, const node *to)
{
    assert_int_equal(tm2_switch_dial_peers(from->sw, &to->addr, 1), 1);
}

/* A broadcast message on CH_A: sender, seq, padding. */
TSH int bcast(node *n, unsigned seq, size_t len)
{
    uint8_t buf[2048];
    assert_true(len >= 3 && len <= sizeof buf);
    memset(buf, 0xab, len);
    buf[0] = (uint8_t)n->idx;
    buf[1] = (uint8_t)seq;
    buf[2] = (uint8_t)(seq >> 8);
    return tm2_switch_broadcast(n->sw, CH_A, buf, len);
}

TSH uint32_t receipts(node *n, int sender, unsigned seq)
{
    uv_mutex_lock(&n->mu);
    uint32_t c = n->counts[sender][seq];
    uv_mutex_unlock(&n->mu);
    return c;
}

#endif
