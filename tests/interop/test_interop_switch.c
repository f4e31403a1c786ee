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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "refproc.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/switch.h"
#include "tv.h"

#define TEST_CH       0x70
#define CHAIN         "tm2-interop"
#define WAIT_MS       20000
#define PEX_MS        500               /* discovery interval on both sides */
#define REF_PEX       "500ms"
#define REF_WATCHDOG  "120s"
#define MAX_MSGS      64
#define MAX_EVS       256
#define MAX_HIST      512
#define NREF          3
#define NT            2

/* ---- tm2p2p nodes -------------------------------------------------------------- */

typedef struct rx_msg {
    tm2_id from;
    char text[128];
} rx_msg;

typedef struct tnode {
    tm2_switch *sw;
    tm2_discovery *disc;
    tm2_node_key key;
    tm2_id id;
    tm2_netaddr addr;                   /* bound listen address with our ID */
    tm2_subscription *sub;
    tm2_channel_desc ch;
    tm2_reactor reactors[2];

    uv_mutex_t mu;
    uv_cond_t cv;
    rx_msg msgs[MAX_MSGS];
    size_t n_msgs;

    tm2_event evs[MAX_EVS];             /* read so far by the test thread */
    size_t n_evs;
} tnode;

static void t_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    tnode *n = user;
    if (ch != TEST_CH)
        return;
    uv_mutex_lock(&n->mu);
    if (n->n_msgs < MAX_MSGS) {
        rx_msg *m = &n->msgs[n->n_msgs++];
        m->from = *tm2_peer_id(p);
        size_t k = len < sizeof m->text - 1 ? len : sizeof m->text - 1;
        memcpy(m->text, msg, k);
        m->text[k] = '\0';
    }
    uv_cond_broadcast(&n->cv);
    uv_mutex_unlock(&n->mu);
}

static void t_log(void *user, tm2_log_level level, const char *msg)
{
    (void)level;
    (void)user;
    if (getenv("TM2_TEST_LOG"))
        fprintf(stderr, "[tm2p2p] %s\n", msg);
}

static void tnode_start(tnode *n, uint8_t seed_byte, const char *network, uint32_t max_out)
{
    uint8_t seed[32];
    memset(seed, seed_byte, sizeof seed);
    tm2_node_key_from_seed(&n->key, seed);
    tm2_node_key_id(&n->key, &n->id);
    assert_int_equal(uv_mutex_init(&n->mu), 0);
    assert_int_equal(uv_cond_init(&n->cv), 0);

    tm2_discovery_config dc = {
        .interval_ms = PEX_MS,
        .target_outbound = max_out,
        .log = t_log,
        .log_level = TM2_LOG_DEBUG,
    };
    assert_int_equal(tm2_discovery_new(&dc, &n->disc), 0);

    n->ch = (tm2_channel_desc){
        .id = TEST_CH, .priority = 5, .send_queue_capacity = 64,
        .recv_message_capacity = 1u << 20,
    };
    n->reactors[0] = *tm2_discovery_reactor(n->disc);
    n->reactors[1] = (tm2_reactor){
        .name = "test", .channels = &n->ch, .n_channels = 1, .user = n, .receive = t_receive,
    };
    tm2_switch_config cfg;
    tm2_switch_config_default(&cfg);
    cfg.key = n->key;
    cfg.listen_addr = "tcp://127.0.0.1:0";
    cfg.network = network;
    cfg.moniker = "tm2p2p-interop";
    cfg.allow_duplicate_ip = true;
    if (max_out)
        cfg.max_outbound = max_out;
    cfg.reactors = n->reactors;
    cfg.n_reactors = 2;
    cfg.log = t_log;
    cfg.log_level = TM2_LOG_DEBUG;
    cfg.mconn.flush_throttle_ms = 10;
    assert_int_equal(tm2_switch_new(&cfg, &n->sw), 0);
    assert_int_equal(tm2_switch_subscribe(n->sw, TM2_EVENT_ALL, NULL, 1000, &n->sub), 0);
    assert_int_equal(tm2_switch_start(n->sw), 0);
    assert_int_equal(tm2_switch_listen_addr(n->sw, &n->addr), 0);
    n->addr.id = n->id;
}

static void tnode_stop(tnode *n)
{
    if (!n->sw)
        return;
    tm2_switch_stop(n->sw);
    tm2_unsubscribe(n->sub);
    tm2_switch_free(n->sw);
    tm2_discovery_free(n->disc);
    uv_cond_destroy(&n->cv);
    uv_mutex_destroy(&n->mu);
    n->sw = NULL;
}

/* Waits for an event of one of the types in mask about peer id (NULL: any
 * peer); events already read are searched first. */
static const tm2_event *t_wait_event(tnode *n, unsigned mask, const tm2_id *id, int timeout_ms)
{
    uint64_t end = tv_now_ms() + (uint64_t)timeout_ms;
    size_t i = 0;
    for (;;) {
        for (; i < n->n_evs; i++) {
            const tm2_event *e = &n->evs[i];
            if ((e->type & mask) && (!id || strcmp(e->peer_id.s, id->s) == 0))
                return e;
        }
        uint64_t now = tv_now_ms();
        if (now >= end || n->n_evs == MAX_EVS)
            return NULL;
        tm2_event ev;
        if (tm2_subscription_next(n->sub, &ev, (int)(end - now)) != 0)
            return NULL;
        if (getenv("TM2_TEST_LOG"))
            fprintf(stderr, "[event] type=%u peer=%s reason=%d %s\n", (unsigned)ev.type,
                    ev.peer_id.s, ev.reason, ev.reason_text);
        n->evs[n->n_evs++] = ev;
    }
}

/* Waits until a 0x70 message from id whose text starts with prefix arrived. */
static bool t_wait_msg(tnode *n, const tm2_id *id, const char *prefix, int timeout_ms)
{
    uint64_t end = tv_now_ms() + (uint64_t)timeout_ms;
    bool found = false;
    uv_mutex_lock(&n->mu);
    for (;;) {
        for (size_t i = 0; i < n->n_msgs && !found; i++)
            found = strcmp(n->msgs[i].from.s, id->s) == 0 &&
                    strncmp(n->msgs[i].text, prefix, strlen(prefix)) == 0;
        uint64_t now = tv_now_ms();
        if (found || now >= end)
            break;
        (void)uv_cond_timedwait(&n->cv, &n->mu, (end - now) * 1000000u);
    }
    uv_mutex_unlock(&n->mu);
    return found;
}

static tm2_peer *t_find_peer(tnode *n, const tm2_id *id)
{
    tm2_peer *ps[32];
    size_t k = tm2_switch_peers(n->sw, ps, 32);
    if (k > 32)
        k = 32;
    tm2_peer *found = NULL;
    for (size_t i = 0; i < k; i++) {
        if (!found && strcmp(tm2_peer_id(ps[i])->s, id->s) == 0)
            found = tm2_peer_ref(ps[i]);
        tm2_peer_unref(ps[i]);
    }
    return found;
}

/* ---- reference nodes --------------------------------------------------------------- */

typedef struct rnode {
    refproc p;
    tm2_id id;
    tm2_netaddr addr;
    char addr_s[TM2_NETADDR_STRLEN];
    char *hist[MAX_HIST];               /* every stdout line read so far */
    size_t n_hist;
} rnode;

typedef struct fixture {
    tnode t[NT];
    rnode r[NREF];
} fixture;

/* Starts a reference node with the key from seed_byte (a byte; unsigned
 * for va_start) and extra flags
 * (NULL-terminated) and reads its LISTEN line. */
static void rnode_start(rnode *r, unsigned seed_byte, ...)
{
    char seed[65];
    for (int i = 0; i < 32; i++)
        snprintf(seed + 2 * i, 3, "%02x", seed_byte);
    const char *args[32] = {"node", "--seed", seed, "--discovery-interval", REF_PEX,
                            "--peers-interval", "2s", "--timeout", REF_WATCHDOG};
    size_t n = 9;
    va_list ap;
    va_start(ap, seed_byte);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        assert_true(n < 31);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    refproc_start(&r->p, args);

    char line[REFPROC_LINE_MAX], *w[4];
    int nw = refproc_expect(&r->p, "LISTEN", line, sizeof line, w, 4, WAIT_MS);
    assert_int_equal(nw, 2);
    assert_int_equal(tm2_netaddr_parse(w[1], 0, &r->addr), 0);
    r->id = r->addr.id;
    snprintf(r->addr_s, sizeof r->addr_s, "%s", w[1]);
    uint8_t s[32];
    memset(s, (int)seed_byte, sizeof s);
    tm2_node_key k;
    tm2_node_key_from_seed(&k, s);
    tm2_id want;
    tm2_node_key_id(&k, &want);
    assert_string_equal(r->id.s, want.s);
}

static void rnode_stop(rnode *r)
{
    refproc_stop(&r->p);
    for (size_t i = 0; i < r->n_hist; i++)
        free(r->hist[i]);
    r->n_hist = 0;
}

/* Waits for a line whose words start with w0 [w1 [w2]] (NULL: any) and,
 * if contains is set, which holds that text; lines already read are
 * searched first. Returns the line or NULL at the deadline. */
static const char *r_wait(rnode *r, const char *w0, const char *w1, const char *w2,
                          const char *contains, int timeout_ms)
{
    uint64_t end = tv_now_ms() + (uint64_t)timeout_ms;
    size_t i = 0;
    for (;;) {
        for (; i < r->n_hist; i++) {
            char copy[REFPROC_LINE_MAX];
            snprintf(copy, sizeof copy, "%s", r->hist[i]);
            char *save = NULL;
            const char *a = strtok_r(copy, " ", &save);
            const char *b = strtok_r(NULL, " ", &save);
            const char *c = strtok_r(NULL, " ", &save);
            if (a && strcmp(a, w0) == 0 && (!w1 || (b && strcmp(b, w1) == 0)) &&
                (!w2 || (c && strcmp(c, w2) == 0)) && (!contains || strstr(r->hist[i], contains)))
                return r->hist[i];
        }
        uint64_t now = tv_now_ms();
        if (now >= end || r->n_hist == MAX_HIST)
            return NULL;
        char line[REFPROC_LINE_MAX];
        if (refproc_line(&r->p, line, sizeof line, (int)(end - now)) != 0)
            return NULL;
        if (getenv("TM2_TEST_LOG"))
            fprintf(stderr, "[tm2ref %s] %s\n", r->id.s, line);
        r->hist[r->n_hist] = strdup(line);
        assert_non_null(r->hist[r->n_hist]);
        r->n_hist++;
    }
}

/* RECV 0x70 <len> <from>: the reference got a 0x70 message of len bytes. */
static bool r_wait_recv(rnode *r, size_t len, const tm2_id *from, int timeout_ms)
{
    char lens[24];
    snprintf(lens, sizeof lens, "%zu", len);
    return r_wait(r, "RECV", "0x70", lens, from->s, timeout_ms) != NULL;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    for (int i = 0; i < NREF; i++)
        refproc_init(&f->r[i].p);
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
    const tm2_event *e = t_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r->id, WAIT_MS);
    assert_non_null(e);
    assert_int_equal(e->outbound, outbound);
    assert_non_null(r_wait(r, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));

    tm2_peer *p = t_find_peer(t, &r->id);
    assert_non_null(p);
    assert_int_equal(tm2_peer_is_outbound(p), outbound);
    const tm2_node_info *ni = tm2_peer_node_info(p);
    assert_string_equal(ni->network, CHAIN);
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
    assert_true(tm2_node_info_has_channel(ni, TEST_CH));
    assert_true(tm2_node_info_has_channel(ni, TM2_DISCOVERY_CHANNEL));
    assert_true(ni->has_net_address);
    assert_true(tm2_netaddr_equal(&ni->net_address, &r->addr));

    /* The reference greets; we send; it reports the message and echoes it. */
    char hello[96];
    snprintf(hello, sizeof hello, "hello %s", r->id.s);
    assert_true(t_wait_msg(t, &r->id, hello, WAIT_MS));
    char msg[96];
    int len = snprintf(msg, sizeof msg, "from tm2p2p %s %s", t->id.s, outbound ? "out" : "in");
    assert_int_equal(tm2_peer_send(p, TEST_CH, msg, (size_t)len, 10000), 0);
    assert_true(r_wait_recv(r, (size_t)len, &t->id, WAIT_MS));
    char echo[128];
    snprintf(echo, sizeof echo, "echo %s", msg);
    assert_true(t_wait_msg(t, &r->id, echo, WAIT_MS));
    tm2_peer_unref(p);
}

static void tm2p2p_dials_reference(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    rnode_start(r, 0x31, "--chain-id", CHAIN, NULL);
    tnode_start(t, 0x41, CHAIN, 10);
    assert_int_equal(tm2_switch_dial_peers(t->sw, &r->addr, 1), 1);
    check_ref_peer(t, r, true);
}

static void reference_dials_tm2p2p(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    tnode_start(t, 0x42, CHAIN, 10);
    char dial[TM2_NETADDR_STRLEN];
    assert_true(tm2_netaddr_format(&t->addr, dial, sizeof dial) > 0);
    rnode_start(r, 0x32, "--chain-id", CHAIN, "--dial", dial, NULL);
    check_ref_peer(t, r, false);
    /* We advertise what the reference dialled: our bound address. */
    assert_non_null(r_wait(r, "PEER_CONNECTED", t->id.s, NULL, NULL, 0));
}

/* ---- incompatible chain ID --------------------------------------------------------- */

static void incompatible_network_tm2p2p_dials(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    rnode_start(r, 0x33, "--chain-id", "other-chain", NULL);
    tnode_start(t, 0x43, CHAIN, 10);
    assert_int_equal(tm2_switch_dial_peers(t->sw, &r->addr, 1), 1);
    const tm2_event *e =
        t_wait_event(t, TM2_EVENT_DIAL_FAILED | TM2_EVENT_PEER_REJECTED, &r->id, WAIT_MS);
    assert_non_null(e);
    assert_int_equal(e->reason, TM2_EINCOMPAT);
    assert_true(e->reason_text[0] != '\0');
    assert_non_null(r_wait(r, "REJECTED", NULL, NULL, "incompatible networks", WAIT_MS));
    assert_null(t_wait_event(t, TM2_EVENT_PEER_CONNECTED, NULL, 0));
    assert_null(r_wait(r, "PEER_CONNECTED", NULL, NULL, NULL, 0));
}

static void incompatible_network_reference_dials(void **state)
{
    fixture *f = *state;
    tnode *t = &f->t[0];
    rnode *r = &f->r[0];
    tnode_start(t, 0x44, CHAIN, 10);
    char dial[TM2_NETADDR_STRLEN];
    assert_true(tm2_netaddr_format(&t->addr, dial, sizeof dial) > 0);
    rnode_start(r, 0x34, "--chain-id", "other-chain", "--dial", dial, NULL);
    assert_non_null(r_wait(r, "DIAL_FAILED", dial, NULL, "incompatible networks", WAIT_MS));
    const tm2_event *e = t_wait_event(t, TM2_EVENT_PEER_REJECTED, &r->id, WAIT_MS);
    assert_non_null(e);
    assert_int_equal(e->reason, TM2_EINCOMPAT);
    assert_false(e->outbound);
    assert_true(e->reason_text[0] != '\0');
    assert_null(t_wait_event(t, TM2_EVENT_PEER_CONNECTED, NULL, 0));
    assert_null(r_wait(r, "PEER_CONNECTED", NULL, NULL, NULL, 0));
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
    rnode_start(r1, 0x35, "--chain-id", CHAIN, NULL);
    rnode_start(r2, 0x36, "--chain-id", CHAIN, "--dial", r1->addr_s, "--pex=false", NULL);
    assert_non_null(r_wait(r1, "PEER_CONNECTED", r2->id.s, NULL, NULL, WAIT_MS));
    assert_non_null(r_wait(r2, "PEER_CONNECTED", r1->id.s, NULL, NULL, WAIT_MS));

    tnode_start(t, 0x45, CHAIN, 10);
    assert_int_equal(tm2_switch_dial_peers(t->sw, &r1->addr, 1), 1);
    assert_non_null(t_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r1->id, WAIT_MS));
    const tm2_event *e = t_wait_event(t, TM2_EVENT_PEER_CONNECTED, &r2->id, WAIT_MS);
    assert_non_null(e);
    assert_true(e->outbound);
    assert_non_null(r_wait(r2, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));

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
    tnode_start(t, 0x46, CHAIN, 10);
    tnode_start(t2, 0x47, CHAIN, 1);
    assert_int_equal(tm2_switch_dial_peers(t2->sw, &t->addr, 1), 1);
    assert_non_null(t_wait_event(t, TM2_EVENT_PEER_CONNECTED, &t2->id, WAIT_MS));
    assert_non_null(t_wait_event(t2, TM2_EVENT_PEER_CONNECTED, &t->id, WAIT_MS));

    char dial[TM2_NETADDR_STRLEN];
    assert_true(tm2_netaddr_format(&t->addr, dial, sizeof dial) > 0);
    rnode_start(r, 0x37, "--chain-id", CHAIN, "--dial", dial, NULL);
    assert_non_null(r_wait(r, "PEER_CONNECTED", t->id.s, NULL, NULL, WAIT_MS));
    assert_non_null(r_wait(r, "PEER_CONNECTED", t2->id.s, NULL, NULL, WAIT_MS));
    const tm2_event *e = t_wait_event(t2, TM2_EVENT_PEER_CONNECTED, &r->id, WAIT_MS);
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
