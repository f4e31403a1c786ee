/* The discovery reactor's logic (src/discovery/pex_core.c) with fake peers,
 * a fake switch and a fake clock: what an answer holds, the request rate
 * limit, one test per Response rejection rule, strikes and their decay,
 * requests on connect and on the tick, dialling from responses, the book,
 * the switch's seeds (kept, never in the book) and persistent peers (never
 * dialled), connection marks, seed mode, dial failures, the book file
 * (written synchronously by the fake switch, by the core itself without
 * save ops, and by a real book_writer thread held on a gate, which the
 * tick never waits for) and the configuration checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "discovery/book_writer.h"
#include "discovery/pex_core.h"
#include "discovery/pex_msg.h"
#include "tv.h"

/* ---- the fake switch ------------------------------------------------------------- */

#define MAX_SENT 512
#define MAX_DIALLED 1024
#define MAX_STOPS 64

typedef struct sent_msg {
    void *peer;
    uint8_t msg[4096];
    size_t len;
} sent_msg;

typedef struct fake {
    sent_msg *sent;
    size_t n_sent;
    tm2_netaddr dialled[MAX_DIALLED];
    size_t n_dialled;
    struct {
        void *peer;
        int reason;
    } stops[MAX_STOPS];
    size_t n_stops;
    size_t dialing;
    tm2_id privates[8];
    size_t n_privates;
    tm2_id seeds[4];       /* the switch's seeds and persistent peers */
    size_t n_seeds;
    tm2_id persistents[4];
    size_t n_persistents;
    int send_rc;           /* what send returns (after recording the message) */
    size_t forgotten;
    bool remove_on_stop;   /* call back into the core from stop, as a switch may */
    tm2__pex *x;
    /* Book writes: at once to path (failing with fail_write), or through
     * writer when set. */
    const char *path;
    tm2__book_writer *writer;
    int fail_write;
    size_t submits, drains;
    tm2__pex_save_result res;
} fake;

static int f_send(void *user, void *peer, const uint8_t *msg, size_t len)
{
    fake *f = user;
    assert_true(f->n_sent < MAX_SENT);
    assert_true(len <= sizeof f->sent[0].msg);
    f->sent[f->n_sent].peer = peer;
    memcpy(f->sent[f->n_sent].msg, msg, len);
    f->sent[f->n_sent].len = len;
    f->n_sent++;
    return f->send_rc;
}

static void f_dial(void *user, const tm2_netaddr *addrs, size_t n)
{
    fake *f = user;
    assert_true(n > 0);
    assert_true(f->n_dialled + n <= MAX_DIALLED);
    memcpy(&f->dialled[f->n_dialled], addrs, n * sizeof *addrs);
    f->n_dialled += n;
}

static void f_stop(void *user, void *peer, int reason)
{
    fake *f = user;
    assert_true(f->n_stops < MAX_STOPS);
    f->stops[f->n_stops].peer = peer;
    f->stops[f->n_stops].reason = reason;
    f->n_stops++;
    if (f->remove_on_stop)
        assert_true(tm2__pex_remove_peer(f->x, peer));
}

static void f_counts(void *user, size_t *in, size_t *out, size_t *dialing)
{
    fake *f = user;
    *in = 0;
    *out = 0;
    *dialing = f->dialing;
}

static bool f_is_private(void *user, const tm2_id *id)
{
    fake *f = user;
    for (size_t i = 0; i < f->n_privates; i++)
        if (strcmp(f->privates[i].s, id->s) == 0)
            return true;
    return false;
}

static bool id_in(const tm2_id *list, size_t n, const tm2_id *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].s, id->s) == 0)
            return true;
    return false;
}

static bool f_is_seed(void *user, const tm2_id *id)
{
    fake *f = user;
    return id_in(f->seeds, f->n_seeds, id);
}

static bool f_is_persistent(void *user, const tm2_id *id)
{
    fake *f = user;
    return id_in(f->persistents, f->n_persistents, id);
}

static void f_forget(void *user, void *peer)
{
    (void)peer;
    ((fake *)user)->forgotten++;
}

static int f_save_submit(void *user, char *text, size_t len, uint64_t gen)
{
    fake *f = user;
    f->submits++;
    assert_non_null(text);
    assert_int_equal(text[len], '\0');
    if (f->writer)
        return tm2__book_writer_submit(f->writer, text, len, gen);
    char why[sizeof f->res.why] = "";
    int rc = f->fail_write;
    if (rc < 0)
        snprintf(why, sizeof why, "disk says no");
    else
        rc = tm2__addrbook_write_file(f->path, text, len, why, sizeof why);
    free(text);
    f->res.gen = gen;
    f->res.rc = rc;
    if (rc < 0) {
        f->res.errors++;
        f->res.err = rc;
        memcpy(f->res.why, why, sizeof why);
    } else {
        f->res.saves++;
    }
    return 0;
}

static void f_save_collect(void *user, tm2__pex_save_result *out)
{
    fake *f = user;
    if (f->writer) {
        tm2__book_writer_collect(f->writer, out);
        return;
    }
    *out = f->res;
    memset(&f->res, 0, sizeof f->res);
}

static void f_save_drain(void *user)
{
    fake *f = user;
    f->drains++;
    tm2__book_writer_drain(f->writer);
}

/* ---- ids, addresses, peers, time ------------------------------------------------- */

static void make_id(unsigned i, tm2_id *id)
{
    uint8_t seed[32] = {0};
    seed[0] = (uint8_t)i;
    seed[1] = (uint8_t)(i >> 8);
    seed[31] = 0xd1;
    tm2_node_key k;
    tm2_node_key_from_seed(&k, seed);
    tm2_node_key_id(&k, id);
    tm2_node_key_wipe(&k);
}

/* Node i lives at 127.0.<i/250>.<i%250+1>:<20000+i>. */
static tm2_netaddr addr_of(unsigned i)
{
    tm2_id id;
    make_id(i, &id);
    char s[TM2_NETADDR_STRLEN + 1];
    snprintf(s, sizeof s, "%s@127.0.%u.%u:%u", id.s, i / 250, i % 250 + 1, 20000 + i);
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(s, 0, &a), 0);
    return a;
}

static tm2_netaddr addr_str(const char *s)
{
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(s, 0, &a), 0);
    return a;
}

/* Fake peer handles: addresses of these, index = node number. */
static char handles[1024];
#define H(i) ((void *)&handles[i])

static tm2__pex_time T(uint64_t ms)
{
    return (tm2__pex_time){.ms = 1000000 + ms, .unix_s = 1700000000 + (int64_t)(ms / 1000)};
}

#define SELF 999u

typedef struct env {
    fake f;
    tm2__pex *x;
    tm2_discovery_config cfg;
    bool core_writes;      /* no save ops: the core writes the book itself */
} env;

static void env_cfg(env *e)
{
    memset(e, 0, sizeof *e);
    e->f.sent = calloc(MAX_SENT, sizeof *e->f.sent);
    assert_non_null(e->f.sent);
    e->cfg.interval_ms = 1000;
}

static void env_start(env *e)
{
    tm2__pex_ops ops = {
        .user = &e->f,
        .send = f_send,
        .dial = f_dial,
        .stop = f_stop,
        .counts = f_counts,
        .is_private = f_is_private,
        .is_seed = f_is_seed,
        .is_persistent = f_is_persistent,
        .forget = f_forget,
        .save_submit = f_save_submit,
        .save_collect = f_save_collect,
        .save_drain = f_save_drain,
    };
    if (e->core_writes) {
        ops.save_submit = NULL;
        ops.save_collect = NULL;
        ops.save_drain = NULL;
    }
    e->f.path = e->cfg.addrbook_path;
    assert_int_equal(tm2__pex_new(&e->cfg, &ops, T(0).unix_s, &e->x), 0);
    e->f.x = e->x;
    tm2_id self;
    make_id(SELF, &self);
    tm2__pex_start(e->x, &self, T(0));
}

static void env_init(env *e)
{
    env_cfg(e);
    env_start(e);
}

static void env_free(env *e)
{
    tm2__pex_free(e->x);
    free(e->f.sent);
}

static tm2__pex_peer_info info_of(unsigned i, bool outbound)
{
    tm2__pex_peer_info in;
    memset(&in, 0, sizeof in);
    in.addr = addr_of(i);
    in.dialled = in.addr;
    /* The connection's address: the one dialled, or the peer's IP at an
     * ephemeral port. */
    in.remote = in.addr;
    if (!outbound)
        in.remote.port = (uint16_t)(40000 + i);
    in.id = in.addr.id;
    in.outbound = outbound;
    in.has_channel = true;
    in.has_addr = true;
    return in;
}

static void connect_peer(env *e, unsigned i, bool outbound, uint64_t ms)
{
    tm2__pex_peer_info in = info_of(i, outbound);
    assert_int_equal(tm2__pex_add_peer(e->x, H(i), &in, T(ms)), 0);
}

static tm2_discovery_stats stats(env *e)
{
    tm2_discovery_stats s;
    tm2__pex_stats(e->x, &s);
    return s;
}

static void send_request(env *e, unsigned from, uint64_t ms)
{
    uint8_t req[TM2__PEX_REQUEST_SIZE];
    assert_int_equal(tm2__pex_encode_request(req, sizeof req), TM2__PEX_REQUEST_SIZE);
    tm2__pex_receive(e->x, H(from), req, sizeof req, T(ms));
}

static void send_response(env *e, unsigned from, const tm2_netaddr *a, size_t n, uint64_t ms)
{
    uint8_t buf[8192];
    int len = tm2__pex_encode_response(a, n, buf, sizeof buf);
    assert_true(len > 0);
    tm2__pex_receive(e->x, H(from), buf, (size_t)len, T(ms));
}

/* Messages sent to peer i since index from. */
static size_t sent_to(const env *e, unsigned i, size_t from)
{
    size_t n = 0;
    for (size_t k = from; k < e->f.n_sent; k++)
        n += e->f.sent[k].peer == H(i);
    return n;
}

static bool is_request(const sent_msg *m)
{
    tm2__pex_msg pm;
    return tm2__pex_decode(m->msg, m->len, &pm, NULL, 0) == 0 && pm.kind == TM2__PEX_REQUEST;
}

/* Decodes a sent Response into a (30 or fewer) and returns the count. */
static size_t decode_answer(const sent_msg *m, tm2_netaddr *a)
{
    tm2__pex_msg pm;
    assert_int_equal(tm2__pex_decode(m->msg, m->len, &pm, a, TM2__PEX_MAX_SHARED), 0);
    assert_int_equal(pm.kind, TM2__PEX_RESPONSE);
    return pm.n_addrs;
}

static bool contains_id(const tm2_netaddr *a, size_t n, unsigned node)
{
    tm2_id id;
    make_id(node, &id);
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].id.s, id.s) == 0)
            return true;
    return false;
}

static bool dialled_node(const env *e, unsigned node, size_t from)
{
    tm2_id id;
    make_id(node, &id);
    for (size_t i = from; i < e->f.n_dialled; i++)
        if (strcmp(e->f.dialled[i].id.s, id.s) == 0)
            return true;
    return false;
}

static const tm2__addrbook_entry *book_entry(env *e, unsigned node)
{
    tm2_id id;
    make_id(node, &id);
    return tm2__addrbook_find(tm2__pex_book(e->x), &id);
}

/* An outbound peer we asked at connect time, so its next Response is solicited. */
static void asked_peer(env *e, unsigned i, uint64_t ms)
{
    size_t before = e->f.n_sent;
    connect_peer(e, i, true, ms);
    assert_int_equal(sent_to(e, i, before), 1);
    assert_true(is_request(&e->f.sent[e->f.n_sent - 1]));
}

/* ---- answering requests ---------------------------------------------------------- */

static void test_request_bytes_on_outbound_connect(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    connect_peer(&e, 1, true, 0);
    assert_int_equal(e.f.n_sent, 1);
    assert_ptr_equal(e.f.sent[0].peer, H(1));
    uint8_t want[TM2__PEX_REQUEST_SIZE];
    tv_hex("0a0c2f7032702e52657175657374", want, sizeof want);
    assert_int_equal(e.f.sent[0].len, sizeof want);
    assert_memory_equal(e.f.sent[0].msg, want, sizeof want);
    assert_int_equal(stats(&e).requests_sent, 1);

    /* Inbound peers are not asked on connect (outside seed mode), nor is a
     * peer that did not advertise the channel. */
    connect_peer(&e, 2, false, 0);
    tm2__pex_peer_info in = info_of(3, true);
    in.has_channel = false;
    assert_int_equal(tm2__pex_add_peer(e.x, H(3), &in, T(0)), 0);
    assert_int_equal(e.f.n_sent, 1);

    /* An inbound peer in the outbound slot of our crossing dial is asked. */
    in = info_of(4, false);
    in.slot_out = true;
    assert_int_equal(tm2__pex_add_peer(e.x, H(4), &in, T(0)), 0);
    assert_int_equal(e.f.n_sent, 2);
    assert_ptr_equal(e.f.sent[1].peer, H(4));
    assert_true(is_request(&e.f.sent[1]));
    env_free(&e);
}

static void test_answer_content(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    for (unsigned i = 1; i <= 40; i++) {
        tm2__pex_peer_info in = info_of(i, false);
        if (i == 5)
            in.is_private = true;        /* the peer says so */
        if (i == 7) {
            in.has_addr = false;         /* advertised an address that fails Validate */
            in.addr = addr_str("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@0.0.0.0:26656");
        }
        assert_int_equal(tm2__pex_add_peer(e.x, H(i), &in, T(0)), 0);
    }
    make_id(6, &e.f.privates[e.f.n_privates++]);   /* the switch's list says so */

    send_request(&e, 1, 10);
    send_request(&e, 2, 10);
    assert_int_equal(e.f.n_sent, 2);
    tm2_netaddr a1[TM2__PEX_MAX_SHARED], a2[TM2__PEX_MAX_SHARED];
    assert_ptr_equal(e.f.sent[0].peer, H(1));
    size_t n1 = decode_answer(&e.f.sent[0], a1);
    size_t n2 = decode_answer(&e.f.sent[1], a2);
    assert_int_equal(n1, 30);
    assert_int_equal(n2, 30);
    assert_false(contains_id(a1, n1, 1));   /* never the asker */
    assert_false(contains_id(a2, n2, 2));
    for (unsigned bad = 5; bad <= 7; bad++) {
        assert_false(contains_id(a1, n1, bad));
        assert_false(contains_id(a2, n2, bad));
    }
    for (size_t i = 0; i < n1; i++) {
        assert_int_equal(tm2_netaddr_validate(&a1[i]), 0);
        for (size_t j = i + 1; j < n1; j++)
            assert_string_not_equal(a1[i].id.s, a1[j].id.s);
    }
    /* Drawn at random: two answers of 30 out of 36 are (all but surely) not equal. */
    assert_false(e.f.sent[0].len == e.f.sent[1].len &&
                 memcmp(e.f.sent[0].msg, e.f.sent[1].msg, e.f.sent[0].len) == 0);
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.requests_received, 2);
    assert_int_equal(s.requests_answered, 2);
    env_free(&e);
}

static void test_answer_max_addrs(void **state)
{
    (void)state;
    env e;
    env_cfg(&e);
    e.cfg.max_addrs = 5;
    env_start(&e);
    for (unsigned i = 1; i <= 10; i++)
        connect_peer(&e, i, false, 0);
    send_request(&e, 1, 0);
    assert_int_equal(e.f.n_sent, 1);
    tm2_netaddr a[TM2__PEX_MAX_SHARED];
    assert_int_equal(decode_answer(&e.f.sent[0], a), 5);
    env_free(&e);
}

static void test_answer_nothing_to_share(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    connect_peer(&e, 1, false, 0);
    tm2__pex_peer_info in = info_of(2, false);
    in.is_private = true;
    assert_int_equal(tm2__pex_add_peer(e.x, H(2), &in, T(0)), 0);
    send_request(&e, 1, 0);
    assert_int_equal(e.f.n_sent, 0);
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.requests_received, 1);
    assert_int_equal(s.requests_answered, 0);
    env_free(&e);
}

static void test_request_rate_limit(void **state)
{
    (void)state;
    env e;
    env_init(&e);                          /* interval 1000: gap 500 */
    connect_peer(&e, 1, false, 0);
    connect_peer(&e, 2, false, 0);
    send_request(&e, 1, 0);
    send_request(&e, 1, 100);              /* too soon: ignored */
    send_request(&e, 1, 499);              /* still too soon */
    send_request(&e, 1, 500);              /* answered */
    assert_int_equal(sent_to(&e, 1, 0), 2);
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.requests_received, 4);
    assert_int_equal(s.requests_ignored, 2);
    assert_int_equal(s.requests_answered, 2);
    assert_int_equal(tm2__pex_strikes(e.x, H(1)), 2);
    assert_int_equal(e.f.n_stops, 0);
    /* Peers are limited one by one. */
    send_request(&e, 2, 501);
    assert_int_equal(sent_to(&e, 2, 0), 1);
    env_free(&e);
}

static void test_request_flood_stops_peer(void **state)
{
    (void)state;
    env e;
    env_init(&e);                          /* abuse limit 10 */
    connect_peer(&e, 1, false, 0);
    connect_peer(&e, 2, false, 0);
    for (uint64_t ms = 0; ms <= 10; ms++)
        send_request(&e, 1, ms);
    assert_int_equal(e.f.n_stops, 1);
    assert_ptr_equal(e.f.stops[0].peer, H(1));
    assert_int_equal(e.f.stops[0].reason, TM2_EABUSE);
    assert_int_equal(stats(&e).peers_stopped, 1);
    /* A stopping peer is no longer served, nor stopped twice. */
    send_request(&e, 1, 5000);
    assert_int_equal(sent_to(&e, 1, 0), 1);
    assert_int_equal(e.f.n_stops, 1);
    env_free(&e);
}

/* ---- responses ----------------------------------------------------------------- */

static void test_response_accepted(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    connect_peer(&e, 50, false, 0);        /* connected: not dialled */
    asked_peer(&e, 1, 0);
    tm2_netaddr a[6] = {addr_of(SELF), addr_of(50), addr_of(11), addr_of(12), addr_of(13),
                        addr_of(1)};
    send_response(&e, 1, a, 6, 10);
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.responses_received, 1);
    assert_int_equal(s.responses_rejected, 0);
    assert_int_equal(s.addrs_received, 6);
    assert_int_equal(s.addrs_rejected, 1);    /* ourselves */
    assert_int_equal(s.addrs_accepted, 5);
    assert_int_equal(e.f.n_dialled, 3);
    for (unsigned i = 11; i <= 13; i++) {
        assert_true(dialled_node(&e, i, 0));
        const tm2__addrbook_entry *be = book_entry(&e, i);
        assert_non_null(be);
        assert_true(be->last_attempt > 0);    /* marked as being dialled */
    }
    assert_false(dialled_node(&e, 50, 0));
    assert_false(dialled_node(&e, 1, 0));
    assert_false(dialled_node(&e, SELF, 0));
    assert_null(book_entry(&e, SELF));
    /* The same answer again is unsolicited: we asked once. */
    send_response(&e, 1, a + 2, 3, 20);
    s = stats(&e);
    assert_int_equal(s.responses_unsolicited, 1);
    assert_int_equal(s.responses_rejected, 1);
    env_free(&e);
}

static void test_responses_match_requests(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    asked_peer(&e, 1, 0);                  /* asked on connect */
    tm2__pex_tick(e.x, T(999));            /* too soon to ask it again */
    assert_int_equal(sent_to(&e, 1, 0), 1);
    tm2__pex_tick(e.x, T(1000));           /* now it may be asked */
    assert_int_equal(sent_to(&e, 1, 0), 2);
    tm2_netaddr a[2] = {addr_of(11), addr_of(12)};
    send_response(&e, 1, a, 1, 1010);
    send_response(&e, 1, a + 1, 1, 1020);  /* two asked, two answers */
    send_response(&e, 1, a, 2, 1030);      /* the third was not asked for */
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.responses_received, 3);
    assert_int_equal(s.responses_unsolicited, 1);
    assert_int_equal(s.addrs_accepted, 2);
    env_free(&e);
}

static void test_response_dials_only_what_is_needed(void **state)
{
    (void)state;
    env e;
    env_cfg(&e);
    e.cfg.target_outbound = 4;
    env_start(&e);
    e.f.dialing = 1;
    asked_peer(&e, 1, 0);                  /* 1 outbound + 1 dialling: 2 more wanted */
    tm2_netaddr a[10];
    for (unsigned i = 0; i < 10; i++)
        a[i] = addr_of(100 + i);
    send_response(&e, 1, a, 10, 10);
    assert_int_equal(e.f.n_dialled, 2);
    assert_int_equal(tm2__addrbook_size(tm2__pex_book(e.x)), 11);
    env_free(&e);
}

static void test_response_unsolicited(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    connect_peer(&e, 1, false, 0);         /* inbound: never asked */
    tm2_netaddr a[2] = {addr_of(11), addr_of(12)};
    send_response(&e, 1, a, 2, 10);
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.responses_unsolicited, 1);
    assert_int_equal(s.responses_rejected, 1);
    assert_int_equal(s.addrs_received, 0);
    assert_null(book_entry(&e, 11));
    assert_int_equal(e.f.n_dialled, 0);
    assert_int_equal(tm2__pex_strikes(e.x, H(1)), 1);
    env_free(&e);
}

static void test_response_oversized(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    asked_peer(&e, 1, 0);
    tm2_netaddr a[31];
    for (unsigned i = 0; i < 31; i++)
        a[i] = addr_of(100 + i);
    send_response(&e, 1, a, 31, 10);
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.responses_oversized, 1);
    assert_int_equal(s.responses_rejected, 1);
    assert_null(book_entry(&e, 100));
    assert_int_equal(e.f.n_dialled, 0);
    env_free(&e);

    /* The limit is max_addrs, both ways. */
    env_cfg(&e);
    e.cfg.max_addrs = 5;
    env_start(&e);
    asked_peer(&e, 1, 0);
    send_response(&e, 1, a, 6, 10);
    assert_int_equal(stats(&e).responses_oversized, 1);
    asked_peer(&e, 2, 20);
    send_response(&e, 2, a, 5, 30);
    assert_int_equal(stats(&e).responses_rejected, 1);
    assert_non_null(book_entry(&e, 104));
    env_free(&e);
}

static void test_response_malformed(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    asked_peer(&e, 1, 0);
    /* A Response whose value holds field 2. */
    uint8_t bad[] = {0x0a, 0x0d, '/', 'p', '2', 'p', '.', 'R', 'e', 's', 'p', 'o',
                     'n',  's',  'e', 0x12, 0x03, 0x12, 0x01, 'x'};
    tm2__pex_receive(e.x, H(1), bad, sizeof bad, T(10));
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.responses_malformed, 1);
    assert_int_equal(s.responses_rejected, 1);
    /* An entry that is a host name, not an IP: the whole message goes. */
    asked_peer(&e, 2, 20);
    char host[TM2_NETADDR_STRLEN + 32];
    tm2_netaddr ok = addr_of(11);
    snprintf(host, sizeof host, "%s@localhost:26656", ok.id.s);
    uint8_t msg[256];
    size_t hl = strlen(host);
    size_t n = 0;
    static const char url[] = "/p2p.Response";
    msg[n++] = 0x0a;
    msg[n++] = (uint8_t)(sizeof url - 1);
    memcpy(msg + n, url, sizeof url - 1);
    n += sizeof url - 1;
    msg[n++] = 0x12;
    msg[n++] = (uint8_t)(hl + 2);
    msg[n++] = 0x0a;
    msg[n++] = (uint8_t)hl;
    memcpy(msg + n, host, hl);
    n += hl;
    tm2__pex_receive(e.x, H(2), msg, n, T(30));
    assert_int_equal(stats(&e).responses_malformed, 2);
    assert_int_equal(e.f.n_dialled, 0);
    /* Unknown message types and garbage are counted and ignored too. */
    uint8_t other[] = {0x0a, 0x08, '/', 'p', '2', 'p', '.', 'F', 'o', 'o'};
    tm2__pex_receive(e.x, H(2), other, sizeof other, T(40));
    uint8_t junk[] = {0xff, 0xff, 0xff};
    tm2__pex_receive(e.x, H(2), junk, sizeof junk, T(40));
    tm2__pex_receive(e.x, H(2), junk, 0, T(40));
    tm2_discovery_stats s2 = stats(&e);
    assert_int_equal(s2.responses_malformed, 2);
    assert_int_equal(s2.messages_undecodable, 3);
    assert_int_equal(s2.responses_rejected, 2);
    assert_int_equal(e.f.n_stops, 0);      /* logged and ignored, like the reference */
    env_free(&e);
}

static void test_response_invalid(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    /* One address failing Validate rejects the whole answer. */
    asked_peer(&e, 1, 0);
    tm2_netaddr a[3] = {addr_of(11), addr_of(12), addr_of(13)};
    a[1].ip[15] = 0;
    a[1].ip[14] = 0;
    a[1].ip[13] = 0;
    a[1].ip[12] = 0;   /* ::ffff:0.0.0.0 */
    assert_int_equal(tm2_netaddr_validate(&a[1]), TM2_EUNSPEC);
    send_response(&e, 1, a, 3, 10);
    tm2_discovery_stats s = stats(&e);
    assert_int_equal(s.responses_invalid, 1);
    assert_null(book_entry(&e, 11));
    /* A documentation-range address too. */
    asked_peer(&e, 2, 20);
    tm2_netaddr doc = addr_str("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@[2001:db8::1]:26656");
    send_response(&e, 2, &doc, 1, 30);
    assert_int_equal(stats(&e).responses_invalid, 2);
    /* And an empty answer (ValidateBasic wants at least one). */
    asked_peer(&e, 3, 40);
    send_response(&e, 3, NULL, 0, 50);
    s = stats(&e);
    assert_int_equal(s.responses_invalid, 3);
    assert_int_equal(s.responses_rejected, 3);
    assert_int_equal(e.f.n_dialled, 0);
    env_free(&e);
}

static void test_strikes_decay_and_stop(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    connect_peer(&e, 1, false, 0);
    connect_peer(&e, 2, false, 0);
    uint8_t junk[] = {0x0a, 0x01};
    for (int i = 0; i < 9; i++)
        tm2__pex_receive(e.x, H(1), junk, sizeof junk, T(10));
    assert_int_equal(tm2__pex_strikes(e.x, H(1)), 9);
    tm2__pex_tick(e.x, T(1000));            /* one forgiven */
    tm2__pex_receive(e.x, H(1), junk, sizeof junk, T(1010));
    assert_int_equal(e.f.n_stops, 0);
    tm2__pex_receive(e.x, H(1), junk, sizeof junk, T(1020));
    assert_int_equal(e.f.n_stops, 1);
    assert_ptr_equal(e.f.stops[0].peer, H(1));
    assert_int_equal(e.f.stops[0].reason, TM2_EPROTO);
    /* The other peer is untouched. */
    assert_int_equal(tm2__pex_strikes(e.x, H(2)), 0);
    env_free(&e);
}

static void test_stop_may_reenter(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    e.f.remove_on_stop = true;
    for (unsigned i = 1; i <= 5; i++)
        connect_peer(&e, i, false, 0);
    uint8_t junk[] = {0x01};
    for (unsigned i = 1; i <= 5; i += 2)
        for (int k = 0; k < 10; k++)
            tm2__pex_receive(e.x, H(i), junk, sizeof junk, T(10));
    assert_int_equal(e.f.n_stops, 3);
    assert_int_equal(tm2__pex_strikes(e.x, H(1)), -1);   /* gone */
    assert_int_equal(tm2__pex_strikes(e.x, H(2)), 0);
    tm2__pex_tick(e.x, T(1000));
    env_free(&e);
    assert_int_equal(e.f.forgotten, 2);
}

/* ---- the tick ------------------------------------------------------------------ */

static void test_tick_asks_a_random_peer_with_the_channel(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    tm2_discovery_stats s0 = stats(&e);
    tm2__pex_tick(e.x, T(1000));            /* nobody connected: nothing */
    assert_int_equal(stats(&e).requests_sent, s0.requests_sent);

    connect_peer(&e, 1, false, 0);
    connect_peer(&e, 2, false, 0);
    tm2__pex_peer_info in = info_of(3, false);
    in.has_channel = false;
    assert_int_equal(tm2__pex_add_peer(e.x, H(3), &in, T(0)), 0);
    for (int k = 0; k < 64; k++)
        tm2__pex_tick(e.x, T(1000 * (uint64_t)(k + 2)));
    size_t to1 = sent_to(&e, 1, 0), to2 = sent_to(&e, 2, 0);
    assert_int_equal(to1 + to2, 64);
    assert_true(to1 > 0 && to2 > 0);        /* 2^-63 odds of failing */
    assert_int_equal(sent_to(&e, 3, 0), 0);
    env_free(&e);
}

/* A seed the switch dialled is an ordinary outbound peer: asked at once,
 * kept after its answer, counted towards the target; it never enters the
 * book, neither on connect nor when gossip names it. */
static void test_seed_kept_after_answer(void **state)
{
    (void)state;
    env e;
    env_cfg(&e);
    make_id(500, &e.f.seeds[e.f.n_seeds++]);
    e.cfg.target_outbound = 3;
    env_start(&e);
    assert_int_equal(e.f.n_dialled, 0);     /* the switch dials seeds, not discovery */
    asked_peer(&e, 500, 100);
    assert_null(book_entry(&e, 500));

    tm2_netaddr a[5];
    for (unsigned i = 0; i < 5; i++)
        a[i] = addr_of(10 + i);
    send_response(&e, 500, a, 5, 200);
    assert_int_equal(e.f.n_stops, 0);       /* kept after it answered */
    assert_int_equal(stats(&e).peers_released, 0);
    assert_int_equal(e.f.n_dialled, 2);     /* target 3, the seed is one */
    for (unsigned i = 0; i < 5; i++)
        assert_non_null(book_entry(&e, 10 + i));

    /* Gossip naming the seed leaves it out of the book and undialled. */
    asked_peer(&e, 20, 300);
    tm2_netaddr s500 = addr_of(500);
    size_t d0 = e.f.n_dialled;
    send_response(&e, 20, &s500, 1, 310);
    assert_null(book_entry(&e, 500));
    assert_false(dialled_node(&e, 500, d0));

    /* Seed, 20 and one more: the target is met, and it stays so for good. */
    connect_peer(&e, 10, true, 400);
    d0 = e.f.n_dialled;
    for (uint64_t k = 1; k <= 100; k++)
        tm2__pex_tick(e.x, T(400 + 1000 * k));
    assert_int_equal(e.f.n_stops, 0);
    assert_int_equal(e.f.n_dialled, d0);
    assert_null(book_entry(&e, 500));
    env_free(&e);
}

/* Persistent peers are the switch's to dial (at their configured address):
 * discovery never hands their IDs over, from the book at start, on the tick
 * or from a Response, though gossip may put them in the book. */
static void test_persistent_peers_never_dialled(void **state)
{
    (void)state;
    char dir[] = "/tmp/tm2-pex-persist-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/addrbook.json", dir);

    /* A book naming peers 1..4; 2 and 4 are persistent. */
    tm2__addrbook *b = NULL;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b), 0);
    for (unsigned i = 1; i <= 4; i++) {
        tm2_netaddr a = addr_of(i);
        assert_true(tm2__addrbook_add(b, &a, NULL, T(0).unix_s) > 0);
    }
    char why[256];
    assert_int_equal(tm2__addrbook_save(b, path, true, why, sizeof why), 1);
    tm2__addrbook_free(b);

    env e;
    env_cfg(&e);
    e.cfg.addrbook_path = path;
    make_id(2, &e.f.persistents[e.f.n_persistents++]);
    make_id(4, &e.f.persistents[e.f.n_persistents++]);
    make_id(6, &e.f.persistents[e.f.n_persistents++]);
    env_start(&e);
    assert_int_equal(e.f.n_dialled, 2);     /* at start: 1 and 3 */
    assert_true(dialled_node(&e, 1, 0));
    assert_true(dialled_node(&e, 3, 0));

    for (uint64_t k = 1; k <= 200; k++)     /* past every back-off */
        tm2__pex_tick(e.x, T(1000 * k));
    asked_peer(&e, 9, 200000);
    tm2_netaddr a[3] = {addr_of(5), addr_of(6), addr_of(4)};
    send_response(&e, 9, a, 3, 200100);
    assert_non_null(book_entry(&e, 6));     /* in the book like any address */
    for (uint64_t k = 1; k <= 200; k++)
        tm2__pex_tick(e.x, T(200100 + 1000 * k));
    assert_true(dialled_node(&e, 5, 0));
    assert_false(dialled_node(&e, 2, 0));
    assert_false(dialled_node(&e, 4, 0));
    assert_false(dialled_node(&e, 6, 0));

    /* A persistent peer that connects is still marked connected. */
    tm2__pex_peer_info in = info_of(2, true);
    in.persistent = true;
    assert_int_equal(tm2__pex_add_peer(e.x, H(2), &in, T(500000)), 0);
    assert_int_equal(book_entry(&e, 2)->last_connected, T(500000).unix_s);
    env_free(&e);
    unlink(path);
    rmdir(dir);
}

/* The reference v1.7.1 marks the address of a peer it dialled when the peer
 * is added, not an inbound peer's; and every round it marks again each
 * outbound peer it still holds, so a long connection's mark never lapses. */
static void test_connection_marks(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    connect_peer(&e, 1, false, 0);          /* inbound first, as in the reference */
    connect_peer(&e, 2, true, 0);
    assert_int_equal(book_entry(&e, 1)->last_connected, 0);
    assert_int_equal(book_entry(&e, 2)->last_connected, T(0).unix_s);

    /* A day and an hour later the connect-time mark alone would have lapsed;
     * the round renews it (and leaves the inbound one unmarked). */
    const uint64_t later = (uint64_t)(TM2__ADDRBOOK_CONNECTED_TTL + 3600) * 1000;
    tm2__pex_time t = T(later);
    assert_false(tm2__addrbook_connected(book_entry(&e, 2), t.unix_s));
    tm2__pex_tick(e.x, t);
    assert_int_equal(book_entry(&e, 2)->last_connected, t.unix_s);
    assert_true(tm2__addrbook_connected(book_entry(&e, 2), t.unix_s));
    assert_int_equal(book_entry(&e, 1)->last_connected, 0);

    /* Once gone, the mark is no longer renewed. */
    assert_true(tm2__pex_remove_peer(e.x, H(2)));
    tm2__pex_tick(e.x, T(later + 1000 * 3600));
    assert_int_equal(book_entry(&e, 2)->last_connected, t.unix_s);
    env_free(&e);
}

/* The answer goes out without waiting: a full send queue drops it (the
 * reference's TrySend), once, and the peer stays. */
static void test_full_send_queue_drops_the_answer(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    connect_peer(&e, 1, false, 0);
    connect_peer(&e, 2, false, 0);
    e.f.send_rc = TM2_EFULL;
    size_t s0 = e.f.n_sent;
    send_request(&e, 1, 10);
    assert_int_equal(sent_to(&e, 1, s0), 1);
    assert_int_equal(stats(&e).requests_received, 1);
    assert_int_equal(stats(&e).requests_answered, 0);
    assert_int_equal(e.f.n_stops, 0);
    assert_int_equal(tm2__pex_strikes(e.x, H(1)), 0);
    env_free(&e);
}

static void test_outbound_connect_and_dial_failure_recorded(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    connect_peer(&e, 1, true, 0);
    const tm2__addrbook_entry *be = book_entry(&e, 1);
    assert_non_null(be);
    assert_int_equal(be->last_connected, T(0).unix_s);
    /* An inbound peer's advertised address is remembered, a private one's is not. */
    connect_peer(&e, 2, false, 0);
    assert_non_null(book_entry(&e, 2));
    tm2__pex_peer_info in = info_of(3, false);
    in.is_private = true;
    assert_int_equal(tm2__pex_add_peer(e.x, H(3), &in, T(0)), 0);
    assert_null(book_entry(&e, 3));

    tm2_id id;
    make_id(2, &id);
    tm2__pex_dial_failed(e.x, &id, T(5000));
    be = book_entry(&e, 2);
    assert_int_equal(be->attempts, 1);
    assert_int_equal(stats(&e).dial_failures, 1);
    make_id(77, &id);                       /* not ours: not counted */
    tm2__pex_dial_failed(e.x, &id, T(5000));
    assert_int_equal(stats(&e).dial_failures, 1);
    env_free(&e);
}

/* ---- seed mode ----------------------------------------------------------------- */

static void test_seed_mode(void **state)
{
    (void)state;
    env e;
    env_cfg(&e);
    e.cfg.seed_mode = true;
    e.cfg.seed_disconnect_ms = 500;
    e.cfg.target_outbound = 2;
    env_start(&e);

    /* Its book: three gossiped addresses, one of them a private peer's. */
    asked_peer(&e, 1, 0);                   /* outbound: a crawl peer */
    tm2_netaddr a[3] = {addr_of(11), addr_of(12), addr_of(13)};
    make_id(13, &e.f.privates[e.f.n_privates++]);
    send_response(&e, 1, a, 3, 100);
    assert_int_equal(e.f.n_dialled, 0);     /* seeds crawl on the tick, not on answers */

    /* Inbound peers are asked too, and answered from the book. */
    size_t s0 = e.f.n_sent;
    connect_peer(&e, 2, false, 100);
    assert_int_equal(sent_to(&e, 2, s0), 1);
    send_request(&e, 2, 200);
    assert_int_equal(sent_to(&e, 2, s0), 2);
    tm2_netaddr got[TM2__PEX_MAX_SHARED];
    size_t n = decode_answer(&e.f.sent[e.f.n_sent - 1], got);
    assert_int_equal(n, 3);                 /* 11, 12 and peer 1 */
    assert_true(contains_id(got, n, 11));
    assert_true(contains_id(got, n, 12));
    assert_true(contains_id(got, n, 1));
    assert_false(contains_id(got, n, 13));
    assert_false(contains_id(got, n, 2));

    /* A peer that never exchanges anything, and a persistent one. */
    connect_peer(&e, 3, false, 100);
    tm2__pex_peer_info in = info_of(4, false);
    in.persistent = true;
    assert_int_equal(tm2__pex_add_peer(e.x, H(4), &in, T(100)), 0);
    size_t s1 = e.f.n_sent;                 /* both were asked on connect */

    /* Peer 1 answered at 100 and goes at 600, peer 2 was answered at 200
     * and goes at 700, peer 3 at 100 + 500 + 2 * 1000. */
    tm2__pex_tick(e.x, T(599));
    assert_int_equal(e.f.n_stops, 0);
    tm2__pex_tick(e.x, T(600));
    assert_int_equal(e.f.n_stops, 1);
    assert_ptr_equal(e.f.stops[0].peer, H(1));
    assert_int_equal(e.f.stops[0].reason, 0);
    tm2__pex_remove_peer(e.x, H(1));
    tm2__pex_tick(e.x, T(700));
    assert_int_equal(e.f.n_stops, 2);
    assert_ptr_equal(e.f.stops[1].peer, H(2));
    tm2__pex_remove_peer(e.x, H(2));
    assert_int_equal(e.f.n_sent, s1);       /* none asked within an interval */
    tm2__pex_tick(e.x, T(2599));
    assert_int_equal(e.f.n_stops, 2);
    /* The tick asks the kept peer again (seeds that keep each other go on
     * trading what they learn), never one it lets go. */
    assert_int_equal(sent_to(&e, 4, s1), 1);
    assert_int_equal(sent_to(&e, 3, s1), 0);
    tm2__pex_tick(e.x, T(2600));
    assert_int_equal(e.f.n_stops, 3);
    assert_ptr_equal(e.f.stops[2].peer, H(3));
    tm2__pex_remove_peer(e.x, H(3));
    tm2__pex_tick(e.x, T(60000));
    assert_int_equal(e.f.n_stops, 3);
    assert_int_equal(stats(&e).peers_released, 3);
    assert_int_equal(sent_to(&e, 4, s1), 2);
    assert_int_equal(e.f.n_sent, s1 + 2);
    env_free(&e);
}

static void test_seed_mode_crawls_the_book(void **state)
{
    (void)state;
    env e;
    env_cfg(&e);
    e.cfg.seed_mode = true;
    e.cfg.target_outbound = 2;
    env_start(&e);
    asked_peer(&e, 1, 0);
    tm2_netaddr a[5];
    for (unsigned i = 0; i < 5; i++)
        a[i] = addr_of(10 + i);
    send_response(&e, 1, a, 5, 10);
    tm2__pex_remove_peer(e.x, H(1));
    /* Up to target_outbound dials per tick, each address once per back-off. */
    tm2__pex_tick(e.x, T(1000));
    assert_int_equal(e.f.n_dialled, 2);
    tm2__pex_tick(e.x, T(2000));
    assert_int_equal(e.f.n_dialled, 4);
    tm2__pex_tick(e.x, T(3000));
    assert_int_equal(e.f.n_dialled, 5);
    for (unsigned i = 10; i < 15; i++)
        assert_true(dialled_node(&e, i, 0));
    /* Peer 1 was connected at 0 and waits its back-off (ten intervals:
     * 10 s), like the addresses just tried (from 11 s on). */
    assert_false(dialled_node(&e, 1, 0));
    tm2__pex_tick(e.x, T(4000));
    assert_int_equal(e.f.n_dialled, 5);
    tm2__pex_tick(e.x, T(9999));
    assert_int_equal(e.f.n_dialled, 5);
    tm2__pex_tick(e.x, T(10000));
    assert_int_equal(e.f.n_dialled, 6);
    assert_true(dialled_node(&e, 1, 5));
    env_free(&e);
}

/* ---- the book file --------------------------------------------------------------- */

static char *tmp_dir(void)
{
    char tmpl[] = "/tmp/tm2_pex_XXXXXX";
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

static void test_book_saved_and_reloaded(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/config/addrbook.json", dir);

    env e;
    env_cfg(&e);
    e.cfg.addrbook_path = path;
    e.cfg.target_outbound = 2;
    env_start(&e);
    asked_peer(&e, 1, 0);
    tm2_netaddr a[4] = {addr_of(11), addr_of(12), addr_of(13), addr_of(14)};
    send_response(&e, 1, a, 4, 10);
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
    tm2__pex_tick(e.x, T(1000));
    assert_int_equal(e.f.submits, 1);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(stats(&e).book_saves, 1);
    assert_int_equal(stats(&e).book_size, 5);
    assert_int_equal(stats(&e).book_tried, 1);    /* the asked outbound peer */
    assert_false(tm2__addrbook_dirty(tm2__pex_book(e.x)));
    tm2__pex_tick(e.x, T(2000));            /* nothing changed: not written */
    assert_int_equal(e.f.submits, 1);
    assert_int_equal(stats(&e).book_saves, 1);
    assert_int_equal(e.f.drains, 0);
    tm2__pex_stop(e.x, T(3000));            /* always on stop, and waited for */
    assert_int_equal(e.f.submits, 2);
    assert_int_equal(e.f.drains, 1);
    assert_int_equal(stats(&e).book_saves, 2);
    assert_int_equal(stats(&e).book_save_errors, 0);
    env_free(&e);

    /* A restart without seeds dials from the book at once, back-off or not. */
    env_cfg(&e);
    e.cfg.addrbook_path = path;
    e.cfg.target_outbound = 10;
    env_start(&e);
    assert_int_equal(tm2__addrbook_size(tm2__pex_book(e.x)), 5);
    assert_int_equal(e.f.n_dialled, 5);
    for (unsigned i = 11; i <= 14; i++)
        assert_true(dialled_node(&e, i, 0));
    assert_true(dialled_node(&e, 1, 0));
    env_free(&e);

    /* Our own ID in a book file is dropped at start. */
    tm2__addrbook *b;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b), 0);
    tm2_netaddr me = addr_of(SELF), other = addr_of(20);
    assert_int_equal(tm2__addrbook_add(b, &me, NULL, T(0).unix_s), TM2__AB_ADDED);
    assert_int_equal(tm2__addrbook_add(b, &other, NULL, T(0).unix_s), TM2__AB_ADDED);
    char why[256];
    assert_int_equal(tm2__addrbook_save(b, path, true, why, sizeof why), 1);
    tm2__addrbook_free(b);
    env_cfg(&e);
    e.cfg.addrbook_path = path;
    env_start(&e);
    assert_null(book_entry(&e, SELF));
    assert_non_null(book_entry(&e, 20));
    assert_false(dialled_node(&e, SELF, 0));
    env_free(&e);
    rm_dir(dir);
    free(dir);
}

/* A failed write is counted and logged, leaves the book dirty and is tried
 * again on the next tick. */
static void test_book_save_failure_retried(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/addrbook.json", dir);

    env e;
    env_cfg(&e);
    e.cfg.addrbook_path = path;
    env_start(&e);
    tm2_netaddr a = addr_of(11);
    assert_int_equal(tm2__addrbook_add(tm2__pex_book(e.x), &a, NULL, T(0).unix_s), TM2__AB_ADDED);
    e.f.fail_write = TM2_EIO;
    tm2__pex_tick(e.x, T(1000));
    assert_int_equal(e.f.submits, 1);
    assert_int_equal(stats(&e).book_saves, 0);
    assert_int_equal(stats(&e).book_save_errors, 1);
    assert_true(tm2__addrbook_dirty(tm2__pex_book(e.x)));
    e.f.fail_write = 0;
    tm2__pex_tick(e.x, T(2000));            /* the same generation, again */
    assert_int_equal(e.f.submits, 2);
    assert_int_equal(stats(&e).book_saves, 1);
    assert_int_equal(stats(&e).book_save_errors, 1);
    assert_false(tm2__addrbook_dirty(tm2__pex_book(e.x)));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    env_free(&e);
    rm_dir(dir);
    free(dir);
}

/* A write function that waits while the gate is held, like a stalled disk. */
typedef struct gate {
    uv_mutex_t lock;
    uv_cond_t cond;
    bool hold;
    int fail;
    unsigned entered;
} gate;

static int gated_write(void *user, const char *path, const char *text, size_t len, char *why,
                       size_t why_len)
{
    gate *g = user;
    uv_mutex_lock(&g->lock);
    g->entered++;
    uv_cond_broadcast(&g->cond);
    while (g->hold)
        uv_cond_wait(&g->cond, &g->lock);
    int fail = g->fail;
    uv_mutex_unlock(&g->lock);
    if (fail < 0) {
        snprintf(why, why_len, "disk says no");
        return fail;
    }
    return tm2__addrbook_write_file(path, text, len, why, why_len);
}

static void gate_wait_entered(gate *g, unsigned n)
{
    uv_mutex_lock(&g->lock);
    while (g->entered < n)
        uv_cond_wait(&g->cond, &g->lock);
    uv_mutex_unlock(&g->lock);
}

static void gate_set(gate *g, bool hold, int fail)
{
    uv_mutex_lock(&g->lock);
    g->hold = hold;
    g->fail = fail;
    uv_cond_broadcast(&g->cond);
    uv_mutex_unlock(&g->lock);
}

static void add_node(env *e, unsigned i, uint64_t ms)
{
    tm2_netaddr a = addr_of(i);
    assert_int_equal(tm2__addrbook_add(tm2__pex_book(e->x), &a, NULL, T(ms).unix_s), TM2__AB_ADDED);
}

static size_t file_entries(const char *path)
{
    tm2__addrbook *b;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b), 0);
    char why[512];
    int n = tm2__addrbook_load(b, path, T(100000).unix_s, why, sizeof why);
    assert_true(n >= 0);
    tm2__addrbook_free(b);
    return (size_t)n;
}

/* The real writer thread: ticks return while a write is stuck; a waiting
 * or unchanged generation is not submitted again; the newest waiting
 * buffer replaces an older one; the book turns clean only when a tick
 * collects the outcome; stop waits for the final book. */
static void test_book_written_off_the_network_thread(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/config/addrbook.json", dir);
    gate g = {.hold = true};
    assert_int_equal(uv_mutex_init(&g.lock), 0);
    assert_int_equal(uv_cond_init(&g.cond), 0);

    env e;
    env_cfg(&e);
    e.cfg.addrbook_path = path;
    assert_int_equal(tm2__book_writer_new(path, gated_write, &g, &e.f.writer), 0);
    env_start(&e);
    tm2__addrbook *book = tm2__pex_book(e.x);
    add_node(&e, 11, 0);
    add_node(&e, 12, 0);
    tm2__pex_tick(e.x, T(1000));            /* returns with the write stuck */
    gate_wait_entered(&g, 1);
    assert_int_equal(e.f.submits, 1);
    assert_int_equal(stats(&e).book_saves, 0);
    assert_true(tm2__addrbook_dirty(book));
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);

    tm2__pex_tick(e.x, T(2000));            /* same generation under way */
    assert_int_equal(e.f.submits, 1);

    add_node(&e, 13, 2000);
    tm2__pex_tick(e.x, T(3000));            /* waits behind the stuck write */
    assert_int_equal(e.f.submits, 2);
    add_node(&e, 14, 3000);
    tm2__pex_tick(e.x, T(4000));            /* replaces the waiting one */
    assert_int_equal(e.f.submits, 3);
    assert_int_equal(tm2__book_writer_replaced(e.f.writer), 1);
    assert_int_equal(stats(&e).book_saves, 0);

    gate_set(&g, false, 0);
    tm2__book_writer_drain(e.f.writer);
    assert_int_equal(g.entered, 2);         /* the first and the newest */
    assert_true(tm2__addrbook_dirty(book)); /* until the network thread collects */
    assert_int_equal(file_entries(path), 4);
    tm2__pex_tick(e.x, T(5000));
    assert_int_equal(stats(&e).book_saves, 2);
    assert_false(tm2__addrbook_dirty(book));
    assert_int_equal(e.f.submits, 3);

    /* A change made while a write is under way keeps the book dirty. */
    gate_set(&g, true, 0);
    add_node(&e, 15, 5000);
    tm2__pex_tick(e.x, T(6000));
    gate_wait_entered(&g, 3);
    add_node(&e, 16, 6000);
    gate_set(&g, false, 0);
    tm2__book_writer_drain(e.f.writer);
    gate_set(&g, true, 0);
    tm2__pex_tick(e.x, T(7000));            /* collects 15, submits 16 */
    assert_int_equal(stats(&e).book_saves, 3);
    assert_true(tm2__addrbook_dirty(book));
    assert_int_equal(e.f.submits, 5);
    gate_set(&g, false, 0);
    tm2__book_writer_drain(e.f.writer);
    tm2__pex_tick(e.x, T(8000));
    assert_int_equal(stats(&e).book_saves, 4);
    assert_false(tm2__addrbook_dirty(book));
    assert_int_equal(file_entries(path), 6);

    /* Failures come back on a tick; the generation is tried again. */
    gate_set(&g, false, TM2_EIO);
    add_node(&e, 17, 8000);
    tm2__pex_tick(e.x, T(9000));
    tm2__book_writer_drain(e.f.writer);
    gate_set(&g, false, 0);
    tm2__pex_tick(e.x, T(10000));           /* collects the error, retries */
    assert_int_equal(stats(&e).book_save_errors, 1);
    assert_int_equal(e.f.submits, 7);
    tm2__book_writer_drain(e.f.writer);
    tm2__pex_tick(e.x, T(11000));
    assert_int_equal(stats(&e).book_saves, 5);
    assert_false(tm2__addrbook_dirty(book));

    /* Stop submits the final book and waits for it. */
    add_node(&e, 18, 11000);
    tm2__pex_stop(e.x, T(12000));
    assert_int_equal(e.f.drains, 1);
    assert_int_equal(stats(&e).book_saves, 6);
    assert_false(tm2__addrbook_dirty(book));
    assert_int_equal(file_entries(path), 8);
    assert_int_equal(stats(&e).book_save_errors, 1);
    tm2__book_writer_free(e.f.writer);
    env_free(&e);
    uv_cond_destroy(&g.cond);
    uv_mutex_destroy(&g.lock);
    rm_dir(dir);
    free(dir);
}

/* The writer alone: free writes what still waits. */
static void test_book_writer_free_writes_the_waiting_book(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/addrbook.json", dir);
    gate g = {.hold = true};
    assert_int_equal(uv_mutex_init(&g.lock), 0);
    assert_int_equal(uv_cond_init(&g.cond), 0);
    tm2__book_writer *w;
    assert_int_equal(tm2__book_writer_new(NULL, NULL, NULL, &w), TM2_EINVAL);
    assert_int_equal(tm2__book_writer_new(path, gated_write, &g, &w), 0);
    assert_int_equal(tm2__book_writer_submit(w, NULL, 0, 1), TM2_EINVAL);
    assert_int_equal(tm2__book_writer_submit(w, strdup("{}"), 2, 1), 0);
    gate_wait_entered(&g, 1);
    assert_int_equal(tm2__book_writer_submit(w, strdup("{\"peers\": []}"), 13, 2), 0);
    tm2__pex_save_result r;
    tm2__book_writer_collect(w, &r);
    assert_int_equal(r.saves + r.errors, 0);
    gate_set(&g, false, 0);
    tm2__book_writer_free(w);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[64] = {0};
    assert_int_equal(fread(buf, 1, sizeof buf - 1, f), 13);
    fclose(f);
    assert_string_equal(buf, "{\"peers\": []}");
    assert_int_equal(g.entered, 2);
    uv_cond_destroy(&g.cond);
    uv_mutex_destroy(&g.lock);
    rm_dir(dir);
    free(dir);
}

static void test_corrupt_book_moved_aside(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char path[512], aside[600];
    snprintf(path, sizeof path, "%s/addrbook.json", dir);
    snprintf(aside, sizeof aside, "%s.corrupt", path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"peers\": 42", f);
    fclose(f);

    env e;
    env_cfg(&e);
    e.cfg.addrbook_path = path;
    e.core_writes = true;                   /* the core's own blocking write */
    env_start(&e);
    struct stat st;
    assert_int_equal(stat(aside, &st), 0);
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_equal(tm2__addrbook_size(tm2__pex_book(e.x)), 0);
    assert_int_equal(e.f.n_dialled, 0);
    tm2__pex_stop(e.x, T(10));              /* a fresh, empty book is written */
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(stats(&e).book_saves, 1);
    assert_int_equal(e.f.submits, 0);
    env_free(&e);
    rm_dir(dir);
    free(dir);
}

/* ---- configuration --------------------------------------------------------------- */

static void test_config_checks(void **state)
{
    (void)state;
    fake f = {0};
    tm2__pex_ops ops = {.user = &f, .send = f_send};
    tm2__pex *x = NULL;
    tm2_discovery_config c = {0};
    assert_int_equal(tm2__pex_new(&c, &ops, 0, &x), 0);
    const tm2_discovery_config *d = tm2__pex_config(x);
    assert_int_equal(d->interval_ms, 3000);
    assert_int_equal(d->max_addrs, 30);
    assert_int_equal(d->request_min_gap_ms, 1500);
    assert_int_equal(d->abuse_limit, 10);
    assert_int_equal(d->addrbook_max, 1000);
    assert_int_equal(d->seed_disconnect_ms, 3000);
    assert_int_equal(d->target_outbound, 10);
    tm2__pex_free(x);

    c.max_addrs = 31;
    assert_int_equal(tm2__pex_new(&c, &ops, 0, &x), TM2_EINVAL);
    c.max_addrs = 0;
    c.addrbook_max = TM2__ADDRBOOK_MAX_LIMIT + 1;
    assert_int_equal(tm2__pex_new(&c, &ops, 0, &x), TM2_EINVAL);
    c.addrbook_max = 0;
    assert_null(x);
    ops.save_submit = f_save_submit;         /* save ops: all or none */
    assert_int_equal(tm2__pex_new(&c, &ops, 0, &x), TM2_EINVAL);
    ops.save_collect = f_save_collect;
    assert_int_equal(tm2__pex_new(&c, &ops, 0, &x), TM2_EINVAL);
    ops.save_drain = f_save_drain;
    assert_int_equal(tm2__pex_new(&c, &ops, 0, &x), 0);
    tm2__pex_free(x);
    x = NULL;
    ops.send = NULL;
    assert_int_equal(tm2__pex_new(&c, &ops, 0, &x), TM2_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_bytes_on_outbound_connect),
        cmocka_unit_test(test_answer_content),
        cmocka_unit_test(test_answer_max_addrs),
        cmocka_unit_test(test_answer_nothing_to_share),
        cmocka_unit_test(test_request_rate_limit),
        cmocka_unit_test(test_request_flood_stops_peer),
        cmocka_unit_test(test_response_accepted),
        cmocka_unit_test(test_responses_match_requests),
        cmocka_unit_test(test_response_dials_only_what_is_needed),
        cmocka_unit_test(test_response_unsolicited),
        cmocka_unit_test(test_response_oversized),
        cmocka_unit_test(test_response_malformed),
        cmocka_unit_test(test_response_invalid),
        cmocka_unit_test(test_strikes_decay_and_stop),
        cmocka_unit_test(test_stop_may_reenter),
        cmocka_unit_test(test_tick_asks_a_random_peer_with_the_channel),
        cmocka_unit_test(test_seed_kept_after_answer),
        cmocka_unit_test(test_persistent_peers_never_dialled),
        cmocka_unit_test(test_connection_marks),
        cmocka_unit_test(test_full_send_queue_drops_the_answer),
        cmocka_unit_test(test_outbound_connect_and_dial_failure_recorded),
        cmocka_unit_test(test_seed_mode),
        cmocka_unit_test(test_seed_mode_crawls_the_book),
        cmocka_unit_test(test_book_saved_and_reloaded),
        cmocka_unit_test(test_book_save_failure_retried),
        cmocka_unit_test(test_book_written_off_the_network_thread),
        cmocka_unit_test(test_book_writer_free_writes_the_waiting_book),
        cmocka_unit_test(test_corrupt_book_moved_aside),
        cmocka_unit_test(test_config_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
