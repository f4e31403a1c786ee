/* An attacker with 200 addresses in two /16s (127.10.0.0/16 and
 * 127.11.0.0/16), every one a live listener with an ID of its own, tries
 * to take every outbound slot of a node that just started. Its addresses
 * are in the node's book, fresher than those of four honest nodes it also
 * knows (127.31/16 .. 127.34/16): an attacker keeps its addresses fresh by
 * gossiping them, and the book dials the most recently seen first. The node
 * serves four honest inbound peers exchanging messages meanwhile.
 *
 * The node spreads its outbound peers over address groups (outbound
 * diversity, with 127/8 grouped like public addresses here), so two /16s,
 * however many addresses they hold, cannot have the majority of its
 * outbound slots, and honest nodes in other groups get theirs. */
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

#include "attack_support.h"
#include "net/engine_uv.h"
#include "net/transport.h"

#define SYBILS 200
#define OUT_HONEST 4
#define MAX_OUT 10
#define SETTLE_MS 15000
#define OBSERVE_MS 3000

/* ---- the attacker's listeners --------------------------------------------------------- */

typedef struct sybil {
    pthread_t thr;
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__mcs_loop ml;
    uv_async_t quit;
    tm2__transport *t[SYBILS];
    tm2_netaddr addr[SYBILS];
    tm2__mcs *conns[4 * SYBILS];
    size_t n_conns;
    int open_transports;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
    int err;
    atomic_int accepted;
} sybil;

static const tm2_channel_desc sy_chans[] = {
    {.id = CH_A, .priority = 1},
    {.id = TM2_DISCOVERY_CHANNEL, .priority = 1},
};

static int sy_receive(tm2__mcs *m, uint8_t ch, const uint8_t *d, size_t len)
{
    (void)m, (void)ch, (void)d, (void)len;
    return 0;
}

static void sy_conn_closed(tm2__mcs *m)
{
    sybil *s = m->data;
    for (size_t i = 0; i < s->n_conns; i++)
        if (s->conns[i] == m)
            s->conns[i] = s->conns[--s->n_conns];
    tm2__transport_conn_free(tm2__transport_conn_of(m));
}

static void sy_on_conn(tm2__transport *t, tm2__transport_conn *c)
{
    sybil *s = t->data;
    c->mcs.data = s;
    tm2_mconn_config mc;
    tm2_mconn_config_default(&mc);
    if (s->n_conns == sizeof s->conns / sizeof s->conns[0] ||
        tm2__mcs_start(&c->mcs, &mc, sy_chans, 2, c->leftover, c->leftover_len) != 0) {
        tm2__mcs_close(&c->mcs);
        return;
    }
    s->conns[s->n_conns++] = &c->mcs;
    atomic_fetch_add(&s->accepted, 1);
}

static void sy_transport_closed(tm2__transport *t)
{
    sybil *s = t->data;
    s->open_transports--;
}

static void sy_quit(uv_async_t *h)
{
    sybil *s = h->data;
    while (s->n_conns)
        tm2__mcs_close(s->conns[--s->n_conns]);
    for (int i = 0; i < SYBILS; i++)
        if (s->t[i])
            tm2__transport_close(s->t[i], sy_transport_closed);
    uv_close((uv_handle_t *)&s->quit, NULL);
}

static void *sy_main(void *arg)
{
    sybil *s = arg;
    static const tm2__transport_cbs cbs = {.on_conn = sy_on_conn};
    static const tm2_version_info vers[] = {
        {"abci", TM2_PROTOCOL_VERSION, false}, {"app", "", false},
        {"bft", TM2_PROTOCOL_VERSION, false},  {"blockchain", TM2_PROTOCOL_VERSION, false},
        {"p2p", TM2_PROTOCOL_VERSION, false},
    };
    static const uint8_t chans[] = {CH_A, TM2_DISCOVERY_CHANNEL};
    int err = uv_loop_init(&s->loop) || tm2__uv_engine_init(&s->ue, &s->loop) ||
              tm2__mcs_loop_init(&s->ml, &s->ue.e) ||
              uv_async_init(&s->loop, &s->quit, sy_quit);
    s->quit.data = s;
    for (int i = 0; i < SYBILS && !err; i++) {
        tm2__tcp_transport_config tc;
        memset(&tc, 0, sizeof tc);
        evil_key(&tc.key, 9000 + (uint32_t)i);
        tm2_id id;
        tm2_node_key_id(&tc.key, &id);
        char laddr[48];
        /* Two /16s, a hundred addresses each. */
        snprintf(laddr, sizeof laddr, "127.%d.%d.%d:0", 10 + i % 2, i / 2 / 250, 1 + i / 2 % 250);
        tm2_node_info ni = {
            .versions = vers, .n_versions = 5, .has_net_address = true,
            .network = ATTACK_NETWORK, .version = TM2_PROTOCOL_VERSION, .channels = chans,
            .n_channels = 2, .moniker = "sybil", .tx_index = "off",
        };
        ni.net_address.id = id;
        ni.net_address.ip[10] = ni.net_address.ip[11] = 0xff;
        tc.node_info = &ni;
        tc.conn_cbs = (tm2__mcs_cbs){.on_receive = sy_receive, .on_close = sy_conn_closed};
        if (tm2__tcp_transport_new(&s->ml, &tc, &cbs, s, &s->t[i]) != 0 ||
            tm2__transport_listen(s->t[i], laddr) != 0 ||
            tm2__transport_listen_addr(s->t[i], &s->addr[i]) != 0) {
            err = 1;
            break;
        }
        s->open_transports++;
        ni.net_address = s->addr[i];
        (void)tm2__transport_set_node_info(s->t[i], &ni);
        tm2_node_key_wipe(&tc.key);
    }
    pthread_mutex_lock(&s->mu);
    s->ready = true;
    s->err = err;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    tm2__mcs_loop_close(&s->ml);
    tm2__uv_engine_close(&s->ue);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    return NULL;
}

static void sybil_start(sybil *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    atomic_init(&s->accepted, 0);
    assert_int_equal(pthread_create(&s->thr, NULL, sy_main, s), 0);
    pthread_mutex_lock(&s->mu);
    while (!s->ready)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    assert_int_equal(s->err, 0);
}

static void sybil_stop(sybil *s)
{
    uv_async_send(&s->quit);
    pthread_join(s->thr, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

/* ---- the test ------------------------------------------------------------------------- */

static char dir[64], book[128];
static sybil sy;
static node *out_honest[OUT_HONEST];
static arena ar;
static bool ar_started;

static void write_book(void)
{
    FILE *f = fopen(book, "w");
    assert_non_null(f);
    long now = (long)time(NULL);
    fprintf(f, "{\"peers\":[");
    for (int i = 0; i < SYBILS; i++) {
        char a[TM2_NETADDR_STRLEN + 1];
        assert_true(tm2_netaddr_format(&sy.addr[i], a, sizeof a) > 0);
        fprintf(f, "%s{\"addr\":\"%s\",\"last_seen\":%ld}", i ? "," : "", a, now - 60);
    }
    for (int i = 0; i < OUT_HONEST; i++) {
        char a[TM2_NETADDR_STRLEN + 1];
        assert_true(tm2_netaddr_format(&out_honest[i]->addr, a, sizeof a) > 0);
        fprintf(f, ",{\"addr\":\"%s\",\"last_seen\":%ld}", a, now - 3600);
    }
    fprintf(f, "]}");
    assert_int_equal(fclose(f), 0);
}

static bool in_sybil_groups(const tm2_netaddr *a)
{
    return a->ip[12] == 127 && (a->ip[13] == 10 || a->ip[13] == 11);
}

static void outbound_slots(void **state)
{
    (void)state;
    raise_nofile(4 * SYBILS + 512);
    sybil_start(&sy);
    for (int i = 0; i < OUT_HONEST; i++) {
        char listen[48];
        snprintf(listen, sizeof listen, "tcp://127.%d.0.1:0", 31 + i);
        node_opts no = {.listen = listen, .network = ATTACK_NETWORK, .only_ch_a = true};
        out_honest[i] = node_new(10 + i, &no);
    }
    snprintf(dir, sizeof dir, "/tmp/tm2-attack-out-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(book, sizeof book, "%s/addrbook.json", dir);
    write_book();

    arena *a_ = &ar;
    ar_started = true;
    arena_start(a_, &(target_opts){.honest_inbound = true, .book_path = book,
                                   .max_outbound = MAX_OUT, .group_loopback = true});
    arena_begin(a_);
    size_t in = 0, out = 0, dialing = 0;
    /* Until the slots are taken and at least OBSERVE_MS have passed (a
     * node may also rotate outbound peers after they connected). */
    uint64_t t0 = tv_now_ms(), end = t0 + SETTLE_MS;
    do {
        (void)wait_node(a_->h[0], 100, pred_never, NULL);
        tm2_switch_counts(a_->t.sw, &in, &out, &dialing);
    } while ((out < MAX_OUT || dialing || tv_now_ms() < t0 + OBSERVE_MS) && tv_now_ms() < end);
    tm2_peer *ps[64];
    size_t n = tm2_switch_peers(a_->t.sw, ps, 64);
    int bad = 0, good = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        if (tm2_peer_is_outbound(ps[i])) {
            tm2_netaddr sa;
            tm2_peer_socket_addr(ps[i], &sa);
            if (in_sybil_groups(&sa))
                bad++;
            else
                good++;
        }
        tm2_peer_unref(ps[i]);
    }
    arena_end(a_, "200 addresses in two /16s against the outbound slots");
    fprintf(stderr, "outbound slots: %zu outbound (max %d): %d to the attacker's two /16s, %d to "
            "honest nodes; the attacker accepted %d connections\n",
            out, MAX_OUT, bad, good, atomic_load(&sy.accepted));
    assert_true(out <= MAX_OUT);
    /* The diversity rule: two groups never hold the majority, and the
     * honest groups get slots. */
    assert_true(bad <= MAX_OUT / 2);
    assert_true(good >= 2);
}

static int teardown(void **state)
{
    (void)state;
    if (ar_started)
        arena_stop(&ar);
    for (int i = 0; i < OUT_HONEST; i++)
        node_free(out_honest[i]);
    sybil_stop(&sy);
    if (dir[0]) {
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            char p[512];
            if (de->d_name[0] == '.')
                continue;
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
        if (d)
            closedir(d);
        rmdir(dir);
    }
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(outbound_slots, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
