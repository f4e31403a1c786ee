/* tm2p2p seed (the program, as a child process) serving 30 tm2p2p nodes
 * (in-process switches with discovery) that know nothing but the seed:
 * - every node reaches its outbound target among the other nodes;
 * - addresses that stopped answering are no longer handed out within
 *   --fresh (the stated bound; the re-check every --recheck usually drops
 *   them sooner), and never again after that;
 * - answers hold at most 30 verified addresses, one per node;
 * - SIGTERM ends the seed with status 0.
 * A small client switch asks the seed, as a node does at connect. */
#include <uv.h>

#include "cli/http.h"
#include "crawl_support.h"

#define NETWORK    "seed-test"
#define N_NODES    30
#define OUT_TARGET 3
#define N_STOP     3
#define RECHECK_MS 500
#define FRESH_MS   1500

typedef struct asker {
    tm2_switch *sw;
    tm2_subscription *sub;
    tm2_channel_desc ch;
    tm2_reactor reactor;
    uv_mutex_t mu;
    uv_cond_t cv;
    tm2_netaddr got[TM2__PEX_MAX_SHARED];
    size_t n_got;
    int answers;
} asker;

static void a_add_peer(tm2_peer *p, void *user)
{
    (void)user;
    uint8_t req[TM2__PEX_REQUEST_SIZE];
    assert_int_equal(tm2__pex_encode_request(req, sizeof req), TM2__PEX_REQUEST_SIZE);
    tm2_peer_try_send(p, 0x50, req, sizeof req);
}

static void a_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)p, (void)ch;
    asker *a = user;
    tm2__pex_msg m;
    tm2_netaddr addrs[TM2__PEX_MAX_SHARED];
    if (tm2__pex_decode(msg, len, &m, addrs, TM2__PEX_MAX_SHARED) != 0 || m.kind != TM2__PEX_RESPONSE)
        return;
    uv_mutex_lock(&a->mu);
    memcpy(a->got, addrs, m.n_addrs * sizeof *addrs);
    a->n_got = m.n_addrs;
    a->answers++;
    uv_cond_broadcast(&a->cv);
    uv_mutex_unlock(&a->mu);
}

static void asker_start(asker *a)
{
    memset(a, 0, sizeof *a);
    uv_mutex_init(&a->mu);
    uv_cond_init(&a->cv);
    a->ch = (tm2_channel_desc){.id = 0x50, .priority = 1, .send_queue_capacity = 4,
                               .recv_message_capacity = 65536};
    a->reactor = (tm2_reactor){.name = "asker", .channels = &a->ch, .n_channels = 1, .user = a,
                               .add_peer = a_add_peer, .receive = a_receive};
    tm2_switch_config sc;
    tm2_switch_config_default(&sc);
    assert_int_equal(tm2_node_key_generate(&sc.key), 0);
    sc.network = NETWORK;
    sc.moniker = "asker";
    sc.reactors = &a->reactor;
    sc.n_reactors = 1;
    assert_int_equal(tm2_switch_new(&sc, &a->sw), 0);
    assert_int_equal(tm2_switch_subscribe(a->sw, TM2_EVENT_ALL, NULL, 256, &a->sub), 0);
    assert_int_equal(tm2_switch_start(a->sw), 0);
}

static void asker_free(asker *a)
{
    tm2_switch_stop(a->sw);
    tm2_unsubscribe(a->sub);
    tm2_switch_free(a->sw);
    uv_cond_destroy(&a->cv);
    uv_mutex_destroy(&a->mu);
}

/* Connects to the seed, waits for its answer (none within the deadline
 * leaves *n at 0), and for the hang-up. */
static size_t ask(asker *a, const tm2_netaddr *seed, tm2_netaddr *out, uint64_t timeout_ms)
{
    uv_mutex_lock(&a->mu);
    int before = a->answers;
    uv_mutex_unlock(&a->mu);
    assert_int_equal(tm2_switch_dial_peers(a->sw, seed, 1), 1);
    uint64_t deadline = tv_now_ms() + timeout_ms;
    uv_mutex_lock(&a->mu);
    while (a->answers == before && tv_now_ms() < deadline)
        uv_cond_timedwait(&a->cv, &a->mu, 50u * 1000000u);
    size_t n = a->answers == before ? 0 : a->n_got;
    memcpy(out, a->got, n * sizeof *out);
    uv_mutex_unlock(&a->mu);
    /* The seed hangs up after its answer: wait for the disconnect. */
    for (;;) {
        size_t in = 0, o = 0, d = 0;
        tm2_switch_counts(a->sw, &in, &o, &d);
        if (!in && !o && !d)
            break;
        if (tv_now_ms() > deadline + 10000)
            fail_msg("the seed did not hang up");
        tm2_event ev;
        tm2_subscription_next(a->sub, &ev, 100);
    }
    return n;
}

typedef struct nodes_ctx {
    size_t target;
} nodes_ctx;

/* Every running node has target peers in outbound slots among the nodes
 * (the seed, which lets every peer go, does not count). */
static bool all_at_target(cs_node *nodes, size_t n, void *user)
{
    const nodes_ctx *c = user;
    for (size_t i = 0; i < n; i++) {
        if (nodes[i].stopped)
            continue;
        tm2_peer *ps[64];
        size_t got = tm2_switch_peers(nodes[i].sw, ps, 64);
        size_t out = 0;
        for (size_t j = 0; j < got && j < 64; j++) {
            if (tm2_peer_in_outbound_slot(ps[j]))
                for (size_t k = 0; k < n; k++)
                    out += !strcmp(tm2_peer_id(ps[j])->s, nodes[k].id.s);
            tm2_peer_unref(ps[j]);
        }
        if (out < c->target)
            return false;
    }
    return true;
}

static int node_of(cs_node *nodes, const tm2_netaddr *a)
{
    char s[TM2_NETADDR_STRLEN + 1];
    tm2_netaddr_format(a, s, sizeof s);
    for (int i = 0; i < N_NODES; i++)
        if (!strcmp(nodes[i].addr, s))
            return i;
    return -1;
}

static void seed_serves_thirty_nodes(void **state)
{
    (void)state;
    char home[128];
    cs_tmpdir(home, sizeof home, "seed");
    char recheck[16], fresh[16];
    snprintf(recheck, sizeof recheck, "%dms", RECHECK_MS);
    snprintf(fresh, sizeof fresh, "%dms", FRESH_MS);
    cs_proc seed;
    cs_start(&seed, (const char *const[]){
                        "seed", "--home", home, "--chain-id", NETWORK, "--laddr",
                        "tcp://127.0.0.1:0", "--allow", "127.0.0.0/8", "--recheck", recheck,
                        "--fresh", fresh, "--concurrency", "32", "--per-host", "64", "--host-gap",
                        "0", "--ask-timeout", "300ms", "--dial-timeout", "1s", "--linger", "100ms",
                        "--serve-timeout", "2s", "--prometheus-listen-addr", "127.0.0.1:0", NULL});
    char seed_addr[TM2_NETADDR_STRLEN + 1];
    const char *first = cs_first_line(&seed, 30000);
    assert_true(strlen(first) < sizeof seed_addr);
    memcpy(seed_addr, first, strlen(first) + 1);
    tm2_netaddr seed_na;
    assert_int_equal(tm2_netaddr_parse(seed_addr, 0, &seed_na), 0);

    static cs_node nodes[N_NODES];
    const char *seeds[1] = {seed_addr};
    for (int i = 0; i < N_NODES; i++)
        cs_node_start(&nodes[i], i,
                      &(cs_node_opts){.network = NETWORK, .max_outbound = OUT_TARGET,
                                      .max_inbound = 12, .pex_interval_ms = 300, .seeds = seeds,
                                      .n_seeds = 1, .seed_interval_ms = 500});
    uint64_t t0 = tv_now_ms();
    cs_wait(nodes, N_NODES, all_at_target, &(nodes_ctx){OUT_TARGET}, 90000,
            "every node at its outbound target from the seed alone");
    print_message("all %d nodes at %d outbound peers after %llu ms\n", N_NODES, OUT_TARGET,
                  (unsigned long long)(tv_now_ms() - t0));

    /* An answer: verified node addresses, one per node, at most 30. */
    asker a;
    asker_start(&a);
    tm2_netaddr got[TM2__PEX_MAX_SHARED];
    size_t n = ask(&a, &seed_na, got, 10000);
    assert_true(n >= 1 && n <= TM2__PEX_MAX_SHARED);
    for (size_t i = 0; i < n; i++) {
        char b[TM2_NETADDR_STRLEN + 1];
        tm2_netaddr_format(&got[i], b, sizeof b);
        if (node_of(nodes, &got[i]) < 0)
            fail_msg("the seed handed out %s, not one of the nodes", b);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(got[i].id.s, got[j].id.s);
    }

    /* Stop some nodes; within --fresh they are no longer handed out. */
    for (int i = N_NODES - N_STOP; i < N_NODES; i++)
        cs_node_stop(&nodes[i]);
    uint64_t stopped_at = tv_now_ms();
    uint64_t gone_at = 0;
    for (;;) {
        n = ask(&a, &seed_na, got, 5000);
        bool any = false;
        for (size_t i = 0; i < n; i++)
            any |= node_of(nodes, &got[i]) >= N_NODES - N_STOP;
        if (!any && n > 0) {
            gone_at = tv_now_ms();
            break;
        }
        if (tv_now_ms() - stopped_at > FRESH_MS + 10000)
            fail_msg("stopped nodes still handed out %llu ms after they stopped",
                     (unsigned long long)(tv_now_ms() - stopped_at));
    }
    uint64_t took = gone_at - stopped_at;
    print_message("stopped nodes left the answers after %llu ms (bound: --fresh %d ms)\n",
                  (unsigned long long)took, FRESH_MS);
    /* The answer that first lacked them was asked for at most one round
     * trip (under 1 s here, ASan included) after the seed dropped them. */
    assert_true(took <= FRESH_MS + 1000);
    for (int k = 0; k < 5; k++) {
        n = ask(&a, &seed_na, got, 5000);
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++)
            assert_true(node_of(nodes, &got[i]) < N_NODES - N_STOP);
    }
    asker_free(&a);

    /* Its /metrics counts what it did: at least the 6 answers asked above
     * and more besides (the nodes' own requests). */
    cs_wait_err(&seed, "msg=\"http endpoints listening\"", 5000);
    const char *at = strstr(seed.err, "msg=\"http endpoints listening\"");
    char url[128];
    assert_int_equal(sscanf(strstr(at, " addr=") + 6, "%100[0-9.:]", url + 7), 1);
    memcpy(url, "http://", 7);
    strcat(url, "/metrics");
    int code = 0;
    char *body = NULL, err[256];
    size_t blen = 0;
    assert_int_equal(cli_http_get(url, 5000, &code, &body, &blen, err, sizeof err), 0);
    assert_int_equal(code, 200);
    unsigned long long answers = 0, reachable = 0;
    const char *m = strstr(body, "\ntm2p2p_seed_answers_total ");
    assert_non_null(m);
    answers = strtoull(m + strlen("\ntm2p2p_seed_answers_total "), NULL, 10);
    m = strstr(body, "\ntm2p2p_crawl_addresses_reachable ");
    assert_non_null(m);
    reachable = strtoull(m + strlen("\ntm2p2p_crawl_addresses_reachable "), NULL, 10);
    assert_true(answers >= 6);
    assert_true(reachable >= 1 && reachable <= N_NODES);
    free(body);

    kill(seed.pid, SIGTERM);
    int st = cs_finish(&seed, 30000);
    if (st != 0)
        fail_msg("seed exited %d; stderr:\n%s", st, seed.err);
    cs_release(&seed);
    for (int i = 0; i < N_NODES; i++)
        cs_node_free(&nodes[i]);

    /* Its book is a crawl database the report reads. */
    char json[256];
    snprintf(json, sizeof json, "%s/map.json", home);
    CS_RUN_OK(60000, "crawl", "report", "--home", home, "--json", json, "--quiet");
    cJSON *rep = cs_read_json(json);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(rep, "nodes")) >= N_NODES);
    cJSON_Delete(rep);
    cs_rmdir(home);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed_serves_thirty_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
