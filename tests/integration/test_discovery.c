/* Discovery on loopback with real switches: nodes bootstrapping from one
 * seed-mode node (the switch's seed) reach a connected graph and their
 * outbound targets (10 nodes, and 32); private peers never appear in any
 * answer, in normal and in seed mode (a raw test peer asks and records); a
 * flood of bogus answers of every kind is rejected and counted, and an
 * abusive peer is stopped while the honest peers stay; a seed not in seed
 * mode is kept as an outbound peer after it answered and stays out of the
 * book; the address book, with its connection marks, survives a restart
 * that then reconnects without seeds; a corrupt book is moved aside.
 *
 * Every wait is on a condition with a deadline: the nodes' log callbacks
 * (every connect, disconnect and discovery step logs a line) write to a
 * pipe that the test thread polls. Every address used is loopback, or an
 * invalid literal that is rejected before any dial. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "discovery/addrbook.h"
#include "discovery/pex_msg.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/switch.h"
#include "tv.h"

#define INTERVAL_MS 100
#define MAX_NODES   40

/* ---- wake-ups: a pipe written by every log line ------------------------------------ */

static int kick_fd[2] = {-1, -1};

/* Keys differ between runs, so two copies of this program running at once
 * never share an ID (a reused port could otherwise join their networks). */
static uint8_t key_salt[16];

static void kick(void)
{
    char c = 1;
    ssize_t r = write(kick_fd[1], &c, 1);
    (void)r;   /* a full pipe already wakes the reader */
}

static int setup_kick(void **state)
{
    (void)state;
    if (pipe(kick_fd) != 0)
        return -1;
    FILE *r = fopen("/dev/urandom", "rb");
    if (!r || fread(key_salt, 1, sizeof key_salt, r) != sizeof key_salt)
        return -1;
    fclose(r);
    for (int i = 0; i < 2; i++)
        fcntl(kick_fd[i], F_SETFL, fcntl(kick_fd[i], F_GETFL) | O_NONBLOCK);
    return 0;
}

static int teardown_kick(void **state)
{
    (void)state;
    close(kick_fd[0]);
    close(kick_fd[1]);
    return 0;
}

typedef bool (*pred_fn)(void *arg);

/* Re-checks pred after every wake-up (and at least every 200 ms, in case a
 * change logs nothing); false at the deadline. */
static bool wait_until(uint32_t ms, pred_fn pred, void *arg)
{
    uint64_t deadline = tv_now_ms() + ms;
    for (;;) {
        if (pred(arg))
            return true;
        uint64_t now = tv_now_ms();
        if (now >= deadline)
            return false;
        uint64_t left = deadline - now;
        struct pollfd p = {.fd = kick_fd[0], .events = POLLIN};
        (void)poll(&p, 1, (int)(left < 200 ? left : 200));
        char buf[256];
        while (read(kick_fd[0], buf, sizeof buf) > 0) {
        }
    }
}

/* ---- nodes ------------------------------------------------------------------------- */

typedef struct raw raw;
typedef struct node node;

typedef struct node_opts {
    bool seed_mode;
    const node *seed;              /* the switch's one seed, "ID@127.0.0.1:port" */
    uint32_t target;               /* discovery target and switch max outbound; 0: 10 */
    uint32_t max_inbound;          /* 0: 40 */
    const char *book;
    const tm2_id *priv;
    size_t n_priv;
    uint32_t abuse_limit;
    uint32_t min_gap_ms;
    uint32_t seed_disconnect_ms;
    raw *raw;                      /* a raw 0x50 test peer instead of discovery */
} node_opts;

struct node {
    int idx;
    tm2_node_key key;
    tm2_id id;
    tm2_switch *sw;
    tm2_discovery *d;
    tm2_netaddr addr;
};

static void test_log(void *user, tm2_log_level level, const char *msg, const tm2_log_field *f,
                     size_t nf)
{
    (void)level;
    node *n = user;
    char line[1024];
    if (getenv("TM2_TEST_LOG"))
        fprintf(stderr, "[%d] %s\n", n->idx, tv_log_line(line, sizeof line, msg, f, nf));
    kick();
}

static void key_of(int idx, tm2_node_key *k)
{
    uint8_t seed[32] = {0};
    seed[0] = (uint8_t)idx;
    seed[1] = 0xd5;
    memcpy(seed + 16, key_salt, sizeof key_salt);
    tm2_node_key_from_seed(k, seed);
}

static tm2_id id_of(int idx)
{
    tm2_node_key k;
    tm2_id id;
    key_of(idx, &k);
    tm2_node_key_id(&k, &id);
    tm2_node_key_wipe(&k);
    return id;
}

static const tm2_reactor *raw_reactor(raw *r);

static node *node_new(int idx, const node_opts *o)
{
    node_opts def = {0};
    if (!o)
        o = &def;
    node *n = calloc(1, sizeof *n);
    assert_non_null(n);
    n->idx = idx;
    key_of(idx, &n->key);
    tm2_node_key_id(&n->key, &n->id);

    const tm2_reactor *r;
    if (o->raw) {
        r = raw_reactor(o->raw);
    } else {
        tm2_discovery_config dc = {
            .interval_ms = INTERVAL_MS,
            .request_min_gap_ms = o->min_gap_ms,
            .abuse_limit = o->abuse_limit,
            .addrbook_path = o->book,
            .seed_mode = o->seed_mode,
            .seed_disconnect_ms = o->seed_disconnect_ms ? o->seed_disconnect_ms : 300,
            .target_outbound = o->target,
            .log = test_log,
            .log_user = n,
            .log_level = TM2_LOG_DEBUG,
        };
        assert_int_equal(tm2_discovery_new(&dc, &n->d), 0);
        r = tm2_discovery_reactor(n->d);
    }
    char moniker[32];
    snprintf(moniker, sizeof moniker, "disc-%d", idx);
    char seed[TM2_NETADDR_STRLEN + 1];
    const char *seeds[1] = {seed};
    tm2_switch_config c;
    tm2_switch_config_default(&c);
    c.key = n->key;
    c.listen_addr = "tcp://127.0.0.1:0";
    c.network = "disc-test";
    c.moniker = moniker;
    if (o->max_inbound)
        c.max_inbound = o->max_inbound;
    if (o->target)
        c.max_outbound = o->target;
    c.handshake_timeout_ms = 5000;
    c.allow_duplicate_ip = true;   /* every node is on 127.0.0.1 */
    if (o->seed) {
        assert_true(tm2_netaddr_format(&o->seed->addr, seed, sizeof seed) > 0);
        c.seeds = seeds;
        c.n_seeds = 1;
        c.seed_interval_ms = 500;  /* the seed-mode seed lets nodes go; they come back soon */
    }
    c.private_peer_ids = o->priv;
    c.n_private_peer_ids = o->n_priv;
    c.mconn.flush_throttle_ms = 2;
    c.reactors = r;
    c.n_reactors = 1;
    c.log = test_log;
    c.log_user = n;
    c.log_level = TM2_LOG_DEBUG;
    assert_int_equal(tm2_switch_new(&c, &n->sw), 0);
    assert_int_equal(tm2_switch_start(n->sw), 0);
    assert_int_equal(tm2_switch_listen_addr(n->sw, &n->addr), 0);
    assert_string_equal(n->addr.id.s, n->id.s);
    return n;
}

static void node_free(node *n)
{
    if (!n)
        return;
    tm2_switch_stop(n->sw);
    tm2_switch_free(n->sw);
    tm2_discovery_free(n->d);
    tm2_node_key_wipe(&n->key);
    free(n);
}

static void dial(node *from, const node *to)
{
    assert_int_equal(tm2_switch_dial_peers(from->sw, &to->addr, 1), 1);
}

static tm2_discovery_stats stats_of(const node *n)
{
    tm2_discovery_stats s;
    tm2_discovery_get_stats(n->d, &s);
    return s;
}

/* Connected peer IDs of n (and which are outbound). */
static size_t peers_of(node *n, tm2_id *ids, bool *outbound, size_t cap)
{
    tm2_peer *ps[64];
    size_t k = tm2_switch_peers(n->sw, ps, 64);
    if (k > 64)
        k = 64;
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (m < cap && tm2_peer_is_running(ps[i])) {
            ids[m] = *tm2_peer_id(ps[i]);
            /* In an outbound slot, as discovery's target counts: dialled,
             * or the survivor of a simultaneous open with our dial. */
            if (outbound)
                outbound[m] = tm2_peer_in_outbound_slot(ps[i]);
            m++;
        }
        tm2_peer_unref(ps[i]);
    }
    return m;
}

static bool has_peer(node *n, const tm2_id *id, bool want_outbound)
{
    tm2_id ids[64];
    bool out[64];
    size_t k = peers_of(n, ids, out, 64);
    for (size_t i = 0; i < k; i++)
        if (strcmp(ids[i].s, id->s) == 0 && (!want_outbound || out[i]))
            return true;
    return false;
}

typedef struct peer_want {
    node *n;
    const tm2_id *ids;
    size_t n_ids;
    bool outbound;
} peer_want;

static bool pred_has_peers(void *arg)
{
    peer_want *w = arg;
    for (size_t i = 0; i < w->n_ids; i++)
        if (!has_peer(w->n, &w->ids[i], w->outbound))
            return false;
    return true;
}

static void wait_peers(node *n, const tm2_id *ids, size_t n_ids, bool outbound, uint32_t ms)
{
    peer_want w = {n, ids, n_ids, outbound};
    if (!wait_until(ms, pred_has_peers, &w))
        fail_msg("node %d lacks some of its %zu expected peers", n->idx, n_ids);
}

static char *tmp_dir(void)
{
    char tmpl[] = "/tmp/tm2_disc_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void rm_dir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- the raw 0x50 test peer: a recorder or a liar ---------------------------------- */

enum { RAW_RECORD = 1, RAW_BOGUS = 2 };

#define RAW_MAX_IDS 64

struct raw {
    int mode;
    tm2_channel_desc ch;
    tm2_reactor r;
    uv_mutex_t mu;
    size_t responses;              /* recorder: answers received */
    size_t want;                   /* recorder: stop asking after this many */
    tm2_id seen[RAW_MAX_IDS];      /* recorder: every ID in any answer */
    size_t n_seen;
    tm2_id target;                 /* recorder: the node it asks; others are ignored */
    size_t bad_answers;            /* recorder: answers that did not decode or had >30 */
    unsigned flood;                /* liar: unsolicited answers sent on connect */
    atomic_uint rot;               /* liar: next kind of lie */
    atomic_uint sent;              /* liar: lies sent */
};

static void raw_send_request(tm2_peer *p)
{
    uint8_t req[TM2__PEX_REQUEST_SIZE];
    assert_int_equal(tm2__pex_encode_request(req, sizeof req), TM2__PEX_REQUEST_SIZE);
    (void)tm2_peer_try_send(p, TM2_DISCOVERY_CHANNEL, req, sizeof req);
}

/* Loopback addresses of made-up nodes on ports nothing listens on. */
static tm2_netaddr fake_addr(unsigned i)
{
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    a.id = id_of(200 + (int)i);
    a.ip[10] = a.ip[11] = 0xff;
    a.ip[12] = 127;
    a.ip[13] = 77;
    a.ip[15] = (uint8_t)(1 + i);
    a.port = 9;
    return a;
}

/* A lie of kind k, in buf; returns its length. */
static size_t make_lie(unsigned k, uint8_t *buf, size_t cap)
{
    tm2_netaddr a[31];
    int len = 0;
    switch (k % 5) {
    case 0:   /* oversized: 31 loopback entries */
        for (unsigned i = 0; i < 31; i++)
            a[i] = fake_addr(i);
        len = tm2__pex_encode_response(a, 31, buf, cap);
        break;
    case 1: { /* malformed: a Response with a field 2 */
        static const uint8_t m[] = {0x0a, 0x0d, '/', 'p', '2', 'p', '.', 'R', 'e', 's', 'p',
                                    'o', 'n', 's', 'e', 0x12, 0x03, 0x12, 0x01, 'x'};
        memcpy(buf, m, sizeof m);
        len = (int)sizeof m;
        break;
    }
    case 2:   /* invalid: one unspecified address among loopback ones */
        a[0] = fake_addr(40);
        a[1] = fake_addr(41);
        memset(a[1].ip + 12, 0, 4);
        len = tm2__pex_encode_response(a, 2, buf, cap);
        break;
    case 3:   /* invalid: only documentation-range addresses */
        assert_int_equal(tm2_netaddr_parse("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@[2001:db8::7]:26656",
                                           0, &a[0]), 0);
        len = tm2__pex_encode_response(a, 1, buf, cap);
        break;
    default:  /* not a discovery message at all */
        memcpy(buf, "\x0a\x08/p2p.Foo", 10);
        len = 10;
        break;
    }
    assert_true(len > 0);
    return (size_t)len;
}

static void raw_add_peer(tm2_peer *p, void *user)
{
    raw *r = user;
    if (r->mode == RAW_RECORD) {
        /* Others learn our address and connect; only the target is asked. */
        if (strcmp(tm2_peer_id(p)->s, r->target.s) == 0)
            raw_send_request(p);
        return;
    }
    /* Unsolicited answers before anyone asked: all invalid anyway, so an
     * unlucky request crossing them still gets nothing accepted. */
    uint8_t buf[4096];
    for (unsigned i = 0; i < r->flood; i++) {
        size_t len = make_lie(3, buf, sizeof buf);
        if (tm2_peer_try_send(p, TM2_DISCOVERY_CHANNEL, buf, len) == 0)
            atomic_fetch_add(&r->sent, 1);
    }
}

static void raw_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    raw *r = user;
    if (ch != TM2_DISCOVERY_CHANNEL)
        return;
    tm2__pex_msg m;
    tm2_netaddr a[TM2__PEX_MAX_SHARED];
    int rc = tm2__pex_decode(msg, len, &m, a, TM2__PEX_MAX_SHARED);
    if (r->mode == RAW_BOGUS) {
        if (rc == 0 && m.kind == TM2__PEX_REQUEST) {
            uint8_t buf[4096];
            size_t n = make_lie(atomic_fetch_add(&r->rot, 1), buf, sizeof buf);
            if (tm2_peer_try_send(p, TM2_DISCOVERY_CHANNEL, buf, n) == 0)
                atomic_fetch_add(&r->sent, 1);
        }
        return;
    }
    if (m.kind != TM2__PEX_RESPONSE || strcmp(tm2_peer_id(p)->s, r->target.s) != 0)
        return;
    bool again;
    uv_mutex_lock(&r->mu);
    r->responses++;
    if (rc != 0)
        r->bad_answers++;
    for (size_t i = 0; rc == 0 && i < m.n_addrs; i++) {
        bool dup = false;
        for (size_t j = 0; j < r->n_seen && !dup; j++)
            dup = strcmp(r->seen[j].s, a[i].id.s) == 0;
        if (!dup && r->n_seen < RAW_MAX_IDS)
            r->seen[r->n_seen++] = a[i].id;
    }
    again = r->responses < r->want;
    uv_mutex_unlock(&r->mu);
    kick();
    if (again)
        raw_send_request(p);
}

/* On the heap: a failing test leaves its nodes running, and their reactor
 * must not point into a stack frame the next test reuses. */
static raw *raw_new(int mode)
{
    raw *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->mode = mode;
    uv_mutex_init(&r->mu);
    r->ch = (tm2_channel_desc){.id = TM2_DISCOVERY_CHANNEL, .priority = 1,
                               .send_queue_capacity = 64, .recv_message_capacity = 5242880};
    r->r = (tm2_reactor){.name = mode == RAW_RECORD ? "recorder" : "liar", .channels = &r->ch,
                         .n_channels = 1, .user = r, .add_peer = raw_add_peer,
                         .receive = raw_receive};
    return r;
}

static void raw_free(raw *r)
{
    uv_mutex_destroy(&r->mu);
    free(r);
}

static const tm2_reactor *raw_reactor(raw *r) { return &r->r; }

static bool raw_seen(raw *r, const tm2_id *id)
{
    bool found = false;
    uv_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_seen && !found; i++)
        found = strcmp(r->seen[i].s, id->s) == 0;
    uv_mutex_unlock(&r->mu);
    return found;
}

static bool pred_raw_done(void *arg)
{
    raw *r = arg;
    uv_mutex_lock(&r->mu);
    bool done = r->responses >= r->want;
    uv_mutex_unlock(&r->mu);
    return done;
}

/* ---- bootstrap from one seed ----------------------------------------------------------- */

typedef struct net {
    node *seed;
    node *n[MAX_NODES];
    size_t count;
    uint32_t target;
} net;

static int index_of(const net *w, const tm2_id *id)
{
    for (size_t i = 0; i < w->count; i++)
        if (strcmp(w->n[i]->id.s, id->s) == 0)
            return (int)i;
    return -1;
}

static int uf_find(int *parent, int x)
{
    while (parent[x] != x)
        x = parent[x] = parent[parent[x]];
    return x;
}

/* Every node has target outbound peers other than the seed, and the
 * nodes' connections (the seed left out) form one component. */
static bool pred_converged(void *arg)
{
    net *w = arg;
    int parent[MAX_NODES];
    for (size_t i = 0; i < MAX_NODES; i++)
        parent[i] = (int)i;
    bool all_out = true;
    for (size_t i = 0; i < w->count; i++) {
        tm2_id ids[64];
        bool out[64];
        size_t k = peers_of(w->n[i], ids, out, 64);
        size_t outbound = 0;
        for (size_t j = 0; j < k; j++) {
            int o = index_of(w, &ids[j]);
            if (o < 0)
                continue;
            outbound += out[j];
            int a = uf_find(parent, (int)i), b = uf_find(parent, o);
            if (a != b)
                parent[a] = b;
        }
        if (outbound < w->target)
            all_out = false;
    }
    if (!all_out)
        return false;
    int root = uf_find(parent, 0);
    for (size_t i = 1; i < w->count; i++)
        if (uf_find(parent, (int)i) != root)
            return false;
    return true;
}

static bool pred_seed_free(void *arg)
{
    node *seed = arg;
    size_t in, out, dialing;
    tm2_switch_counts(seed->sw, &in, &out, &dialing);
    return in == 0 && stats_of(seed).peers_released > 0;
}

/* Each node aims for target outbound peers and takes at most max_in
 * inbound ones: with target <= max_in <= count - 1 - target, no node can be
 * crowded out of its target by inbound peers, and there is room for all. */
static void run_bootstrap(size_t count, uint32_t target, uint32_t max_in, uint32_t deadline_ms)
{
    net w = {.count = count, .target = target};
    node_opts so = {.seed_mode = true, .target = 4, .max_inbound = 64, .seed_disconnect_ms = 300};
    w.seed = node_new(1, &so);
    assert_true(target <= max_in && max_in <= count - 1 - target);
    node_opts o = {.seed = w.seed, .target = target, .max_inbound = max_in};
    uint64_t t0 = tv_now_ms();
    for (size_t i = 0; i < count; i++)
        w.n[i] = node_new(10 + (int)i, &o);
    if (!wait_until(deadline_ms, pred_converged, &w)) {
        for (size_t i = 0; i < count; i++) {
            size_t in, out, dialing;
            tm2_switch_counts(w.n[i]->sw, &in, &out, &dialing);
            fprintf(stderr, "node %zu: in=%zu out=%zu dialing=%zu\n", i, in, out, dialing);
        }
        fail_msg("%zu nodes did not converge in %u ms", count, deadline_ms);
    }
    fprintf(stderr, "%zu nodes: connected, each with %u outbound peers, after %llu ms\n", count,
            target, (unsigned long long)(tv_now_ms() - t0));

    /* Everyone learnt its peers through discovery, and the seed let go. */
    for (size_t i = 0; i < count; i++) {
        tm2_discovery_stats s = stats_of(w.n[i]);
        assert_true(s.requests_sent > 0);
        assert_int_equal(s.responses_rejected, 0);
        assert_int_equal(s.peers_stopped, 0);
    }
    tm2_discovery_stats ss = stats_of(w.seed);
    assert_true(ss.requests_answered > 0);
    assert_int_equal(ss.responses_rejected, 0);
    /* Nobody relies on the seed any more, and it lets its crawl peers go. */
    if (!wait_until(20000, pred_seed_free, w.seed))
        fail_msg("the seed still has inbound peers or released none");
    for (size_t i = 0; i < count; i++)
        node_free(w.n[i]);
    node_free(w.seed);
}

static void test_bootstrap_10(void **state)
{
    (void)state;
    run_bootstrap(10, 3, 5, 60000);
}

static void test_bootstrap_32(void **state)
{
    (void)state;
    run_bootstrap(32, 4, 8, 120000);
}

/* ---- private peers -------------------------------------------------------------------- */

typedef struct stat_want {
    node *n;
    size_t min_accepted;
} stat_want;

static bool pred_accepted(void *arg)
{
    stat_want *w = arg;
    return stats_of(w->n).addrs_accepted >= w->min_accepted;
}

static void run_private(bool seed_mode)
{
    /* P is private to A. H1 is also connected to P and tells A about it. */
    node *p = node_new(2, NULL);
    node *h1 = node_new(3, NULL);
    node *h2 = node_new(4, NULL);
    dial(h1, p);
    wait_peers(h1, &p->id, 1, true, 20000);

    node_opts ao = {.priv = &p->id, .n_priv = 1, .seed_mode = seed_mode, .min_gap_ms = 1,
                    .seed_disconnect_ms = 60000};
    node *a = node_new(1, &ao);
    dial(p, a);
    dial(h1, a);
    dial(h2, a);
    tm2_id want[3] = {p->id, h1->id, h2->id};
    wait_peers(a, want, 3, false, 20000);
    /* A heard of P through H1, and of H1 through P (asked by A's tick, or
     * at once in seed mode, where the book feeds the answers). */
    stat_want sw = {a, 2};
    if (!wait_until(20000, pred_accepted, &sw))
        fail_msg("A never accepted an answer");

    raw *rec = raw_new(RAW_RECORD);
    rec->want = 20;
    rec->target = a->id;
    node_opts ro = {.raw = rec};
    node *r = node_new(5, &ro);
    dial(r, a);
    if (!wait_until(30000, pred_raw_done, rec))
        fail_msg("recorder got %zu answers", rec->responses);
    assert_int_equal(rec->bad_answers, 0);
    assert_false(raw_seen(rec, &p->id));    /* never the private peer */
    assert_false(raw_seen(rec, &r->id));    /* never the asker */
    assert_false(raw_seen(rec, &a->id));
    assert_true(raw_seen(rec, &h1->id));    /* but the others, so the check means something */
    assert_true(raw_seen(rec, &h2->id));
    node_free(r);
    node_free(a);
    node_free(h2);
    node_free(h1);
    node_free(p);
    raw_free(rec);
}

static void test_private_never_shared(void **state)
{
    (void)state;
    run_private(false);
}

static void test_private_never_shared_seed_mode(void **state)
{
    (void)state;
    run_private(true);
}

/* ---- bogus answers ---------------------------------------------------------------------- */

/* The book A wrote at stop holds only nodes of the test (the liar's own
 * advertised address included), none of the addresses it made up. */
static void check_book_honest(const char *path, const tm2_id *ok, size_t n_ok)
{
    tm2__addrbook *b;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b), 0);
    char why[512];
    assert_true(tm2__addrbook_load(b, path, (int64_t)time(NULL) + 60, why, sizeof why) >= 1);
    for (size_t i = 0; i < tm2__addrbook_size(b); i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_at(b, i);
        bool known = false;
        for (size_t j = 0; j < n_ok && !known; j++)
            known = strcmp(e->addr.id.s, ok[j].s) == 0;
        if (!known)
            fail_msg("the book holds %s", e->addr.id.s);
    }
    tm2__addrbook_free(b);
}

typedef struct lie_want {
    node *a;
} lie_want;

static bool pred_every_lie_seen(void *arg)
{
    lie_want *w = arg;
    tm2_discovery_stats s = stats_of(w->a);
    return s.responses_oversized >= 1 && s.responses_malformed >= 1 && s.responses_invalid >= 2 &&
           s.responses_unsolicited >= 3 && s.messages_undecodable >= 1;
}

static void test_bogus_answers_rejected(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/addrbook.json", dir);
    node *h1 = node_new(3, NULL);
    node *h2 = node_new(4, NULL);
    node_opts ao = {.abuse_limit = 1000, .book = path};
    node *a = node_new(1, &ao);
    dial(a, h1);
    dial(a, h2);
    tm2_id honest[2] = {h1->id, h2->id};
    wait_peers(a, honest, 2, true, 20000);

    raw *liar = raw_new(RAW_BOGUS);
    liar->flood = 6;
    node_opts lo = {.raw = liar};
    node *l = node_new(6, &lo);
    dial(l, a);
    lie_want w = {a};
    if (!wait_until(60000, pred_every_lie_seen, &w)) {
        tm2_discovery_stats s = stats_of(a);
        fail_msg("oversized %llu malformed %llu invalid %llu unsolicited %llu undecodable %llu",
                 (unsigned long long)s.responses_oversized,
                 (unsigned long long)s.responses_malformed,
                 (unsigned long long)s.responses_invalid,
                 (unsigned long long)s.responses_unsolicited,
                 (unsigned long long)s.messages_undecodable);
    }
    tm2_discovery_stats s = stats_of(a);
    /* Nothing of it was believed: nothing dialled (and nothing in the book,
     * checked below). */
    assert_int_equal(s.dials, 0);
    assert_int_equal(s.dial_failures, 0);
    assert_int_equal(s.responses_rejected, s.responses_oversized + s.responses_unsolicited +
                                               s.responses_invalid + s.responses_malformed);
    assert_true(s.responses_rejected >= 8);
    /* The reference keeps such a peer; so does A below the strike limit. */
    assert_int_equal(s.peers_stopped, 0);
    tm2_id all[3] = {h1->id, h2->id, l->id};
    wait_peers(a, all, 3, false, 1000);
    node_free(l);
    node_free(a);
    check_book_honest(path, all, 3);
    node_free(h2);
    node_free(h1);
    raw_free(liar);
    rm_dir(dir);
    free(dir);
}

typedef struct gone_want {
    node *a;
    const tm2_id *id;
} gone_want;

static bool pred_stopped(void *arg)
{
    gone_want *w = arg;
    return stats_of(w->a).peers_stopped >= 1 && !has_peer(w->a, w->id, false);
}

static void test_abusive_peer_stopped(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/addrbook.json", dir);
    node *h1 = node_new(3, NULL);
    node *h2 = node_new(4, NULL);
    node_opts ao = {.book = path};            /* default strike limit: 10 */
    node *a = node_new(1, &ao);
    dial(a, h1);
    dial(a, h2);
    tm2_id honest[2] = {h1->id, h2->id};
    wait_peers(a, honest, 2, true, 20000);

    /* Strikes are forgiven one per interval: a burst is what gets a peer
     * stopped. */
    raw *liar = raw_new(RAW_BOGUS);
    liar->flood = 40;
    node_opts lo = {.raw = liar};
    node *l = node_new(6, &lo);
    dial(l, a);
    gone_want w = {a, &l->id};
    if (!wait_until(60000, pred_stopped, &w))
        fail_msg("the liar was not stopped (%llu rejected)",
                 (unsigned long long)stats_of(a).responses_rejected);
    tm2_discovery_stats s = stats_of(a);
    assert_int_equal(s.peers_stopped, 1);
    assert_true(s.responses_rejected >= 10);
    /* The honest peers stay. */
    assert_true(has_peer(a, &h1->id, true));
    assert_true(has_peer(a, &h2->id, true));
    tm2_id all[3] = {h1->id, h2->id, l->id};
    node_free(l);
    node_free(a);
    check_book_honest(path, all, 3);
    node_free(h2);
    node_free(h1);
    raw_free(liar);
    rm_dir(dir);
    free(dir);
}

/* ---- the address book -------------------------------------------------------------------- */

static bool pred_answered(void *arg)
{
    return stats_of(arg).responses_received >= 1;
}

static void test_book_round_trip_and_restart(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/config/addrbook.json", dir);

    /* H1 is the bootnode; H2 and H3 are known to it. */
    node *h1 = node_new(3, NULL);
    node *h2 = node_new(4, NULL);
    node *h3 = node_new(5, NULL);
    dial(h2, h1);
    dial(h3, h1);
    tm2_id known[2] = {h2->id, h3->id};
    wait_peers(h1, known, 2, false, 20000);

    /* A learns H2 and H3 from its seed; which side dials first is a race
     * (H2 and H3 hear of A from H1 too), either way A's book gets them.
     * The seed (not in seed mode) answered and stays an outbound peer. */
    node_opts ao = {.book = path, .seed = h1, .target = 3};
    node *a = node_new(1, &ao);
    wait_peers(a, known, 2, false, 30000);
    if (!wait_until(20000, pred_answered, a))
        fail_msg("the seed never answered");
    wait_peers(a, &h1->id, 1, true, 1000);
    tm2_discovery_stats s = stats_of(a);
    assert_int_equal(s.peers_released, 0);
    node_free(a);

    /* The file holds H2 and H3 at their advertised addresses; not the
     * seed, not us. */
    tm2__addrbook *b;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b), 0);
    char why[512];
    assert_true(tm2__addrbook_load(b, path, (int64_t)time(NULL) + 60, why, sizeof why) >= 2);
    const tm2__addrbook_entry *e2 = tm2__addrbook_find(b, &h2->id);
    const tm2__addrbook_entry *e3 = tm2__addrbook_find(b, &h3->id);
    assert_non_null(e2);
    assert_non_null(e3);
    assert_true(tm2_netaddr_equal(&e2->addr, &h2->addr));
    assert_true(tm2_netaddr_equal(&e3->addr, &h3->addr));
    assert_null(tm2__addrbook_find(b, &h1->id));
    tm2_id aid = id_of(1);
    assert_null(tm2__addrbook_find(b, &aid));
    tm2__addrbook_free(b);

    /* Restarted without seeds: back to H2 and H3 from the book alone. */
    node_opts ro = {.book = path, .target = 2};
    a = node_new(1, &ro);
    wait_peers(a, known, 2, true, 30000);
    s = stats_of(a);
    assert_true(s.dials >= 2);
    node_free(a);

    /* Both were dialled and held: the book marks them connected, in the
     * reference's "last_connected". */
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b), 0);
    assert_true(tm2__addrbook_load(b, path, now + 60, why, sizeof why) >= 2);
    for (int i = 0; i < 2; i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_find(b, &known[i]);
        assert_non_null(e);
        assert_true(e->last_connected > 0 && tm2__addrbook_connected(e, now));
    }
    tm2__addrbook_free(b);
    node_free(h3);
    node_free(h2);
    node_free(h1);
    rm_dir(dir);
    free(dir);
}

static void test_corrupt_book(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512], aside[600];
    snprintf(path, sizeof path, "%s/addrbook.json", dir);
    snprintf(aside, sizeof aside, "%s.corrupt", path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"peers\": [{\"addr\": 12}", f);
    fclose(f);

    node *h1 = node_new(3, NULL);
    node_opts ao = {.book = path, .seed = h1};
    node *a = node_new(1, &ao);
    struct stat st;
    assert_int_equal(stat(aside, &st), 0);
    /* The node runs: it reaches its seed. */
    wait_peers(a, &h1->id, 1, false, 20000);
    node_free(a);
    /* And a readable book was written at stop. */
    tm2__addrbook *b;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b), 0);
    char why[512];
    assert_true(tm2__addrbook_load(b, path, (int64_t)time(NULL) + 60, why, sizeof why) >= 0);
    tm2__addrbook_free(b);
    node_free(h1);
    rm_dir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bootstrap_10),
        cmocka_unit_test(test_private_never_shared),
        cmocka_unit_test(test_private_never_shared_seed_mode),
        cmocka_unit_test(test_bogus_answers_rejected),
        cmocka_unit_test(test_abusive_peer_stopped),
        cmocka_unit_test(test_book_round_trip_and_restart),
        cmocka_unit_test(test_corrupt_book),
        cmocka_unit_test(test_bootstrap_32),
    };
    /* TM2_TEST_FILTER=test_bootstrap_10 runs one test; TM2_TEST_LOG=1 prints the logs. */
    if (getenv("TM2_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TM2_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup_kick, teardown_kick);
}
