/* tm2p2p crawl against reference nodes (`tm2ref node`, the reference's
 * switch and discovery) on loopback: three reference nodes, two of them
 * given only the first, are crawled from the first without --chain-id (the
 * crawler learns the network and version set from the first NodeInfo). The
 * map must equal the ground truth: every node with the reference's NodeInfo
 * (moniker, network, the five-entry version set), and every advertised-by
 * edge, read from the reference's own peer sets. Then one node is killed
 * and the next crawl marks it unreachable.
 * The seed: a reference node given only a tm2p2p seed (the program) gets
 * from it the address of another reference node the seed verified, and
 * connects to that node; the seed hangs up after its answer. */
#include "../integration/crawl_support.h"
#include "refnode.h"

#define N_REF 3

typedef struct world {
    char home[128];
    rnode r[N_REF];
} world;

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    cs_tmpdir(w->home, sizeof w->home, "interop-crawl");
    for (int i = 0; i < N_REF; i++)
        rnode_init(&w->r[i]);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    for (int i = 0; i < N_REF; i++)
        rnode_stop(&w->r[i]);
    cs_rmdir(w->home);
    free(w);
    return 0;
}

/* peers[i][j]: reference node i holds a connection to node j. */
static void ground_truth(world *w, bool peers[N_REF][N_REF])
{
    memset(peers, 0, sizeof(bool) * N_REF * N_REF);
    for (int i = 0; i < N_REF; i++) {
        int n = rnode_peers(&w->r[i], NULL, NULL, NULL, 5000);
        assert_true(n >= 0);
        for (size_t k = 0; k < (size_t)n; k++) {
            tm2_id id;
            bool out;
            assert_true(rnode_peer_at(&w->r[i], k, &id, &out));
            for (int j = 0; j < N_REF; j++)
                if (!strcmp(id.s, w->r[j].id.s))
                    peers[i][j] = true;
        }
    }
}

static bool complete(bool p[N_REF][N_REF])
{
    for (int i = 0; i < N_REF; i++)
        for (int j = 0; j < N_REF; j++)
            if (i != j && !p[i][j])
                return false;
    return true;
}

static void crawl_once(world *w)
{
    CS_RUN_OK(120000, "crawl", "--home", w->home, "--seeds", w->r[0].addr_s, "--allow",
              "127.0.0.0/8", "--rounds", "1", "--per-host", "8", "--host-gap", "0",
              "--ask-timeout", "2s", "--log-level", "debug");
}

static cJSON *report(world *w)
{
    char json[256];
    snprintf(json, sizeof json, "%s/map.json", w->home);
    CS_RUN_OK(60000, "crawl", "report", "--home", w->home, "--json", json, "--quiet");
    return cs_read_json(json);
}

static void crawl_reference_nodes(void **state)
{
    world *w = *state;
    rnode_start(&w->r[0], 0x31, NULL);
    for (int i = 1; i < N_REF; i++)
        rnode_start(&w->r[i], (uint8_t)(0x31 + i),
                    (const char *const[]){"--persistent-peers", w->r[0].addr_s, NULL});
    /* Discovery connects the two others as well: wait for the full mesh. */
    bool before[N_REF][N_REF];
    uint64_t deadline = tv_now_ms() + 30000;
    for (;;) {
        ground_truth(w, before);
        if (complete(before))
            break;
        if (tv_now_ms() > deadline)
            fail_msg("the reference nodes did not connect to each other");
        rnode_next_line(&w->r[1], 200);
    }

    crawl_once(w);
    bool after[N_REF][N_REF];
    ground_truth(w, after);
    assert_memory_equal(before, after, sizeof before);

    cJSON *rep = report(w);
    assert_string_equal(cs_str(rep, "network"), SN_CHAIN);
    static const char *const names[5] = {"abci", "app", "bft", "blockchain", "p2p"};
    for (int i = 0; i < N_REF; i++) {
        cJSON *x = cs_report_node(rep, w->r[i].id.s);
        if (!x)
            fail_msg("reference node %d missing from the map", i);
        assert_string_equal(cs_str(x, "status"), "reachable");
        assert_string_equal(cs_str(x, "moniker"), "tm2ref");
        assert_string_equal(cs_str(x, "network"), SN_CHAIN);
        assert_string_equal(cs_str(x, "version"), TM2_PROTOCOL_VERSION);
        assert_string_equal(cs_str(x, "net_address"), w->r[i].addr_s);
        assert_string_equal(cs_str(x, "rpc_address"), "tcp://127.0.0.1:26657");
        cJSON *vs = cJSON_GetObjectItem(x, "versions");
        assert_int_equal(cJSON_GetArraySize(vs), 5);
        for (int k = 0; k < 5; k++) {
            cJSON *v = cJSON_GetArrayItem(vs, k);
            assert_string_equal(cs_str(v, "name"), names[k]);
            assert_string_equal(cs_str(v, "version"), k == 1 ? "" : TM2_PROTOCOL_VERSION);
        }
    }
    size_t expected = 0;
    for (int i = 0; i < N_REF; i++)
        for (int j = 0; j < N_REF; j++)
            if (before[i][j]) {
                expected++;
                if (!cs_report_has_edge(rep, w->r[i].id.s, w->r[j].id.s))
                    fail_msg("edge %d -> %d missing", i, j);
            }
    assert_int_equal((size_t)cJSON_GetArraySize(cJSON_GetObjectItem(rep, "edges")), expected);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(rep, "nodes")), N_REF);
    assert_int_equal(cJSON_GetObjectItem(rep, "largest_component")->valueint, N_REF);
    cJSON_Delete(rep);

    /* One node gone: the next crawl finds it unreachable. */
    rnode_stop(&w->r[N_REF - 1]);
    crawl_once(w);
    rep = report(w);
    assert_string_equal(cs_str(cs_report_node(rep, w->r[N_REF - 1].id.s), "status"), "unreachable");
    for (int i = 0; i < N_REF - 1; i++)
        assert_string_equal(cs_str(cs_report_node(rep, w->r[i].id.s), "status"), "reachable");
    cJSON_Delete(rep);
}

static void reference_bootstraps_from_seed(void **state)
{
    world *w = *state;
    rnode_start(&w->r[0], 0x41, NULL);
    cs_proc seed;
    cs_start(&seed, (const char *const[]){"seed", "--home", w->home, "--chain-id", SN_CHAIN,
                                          "--laddr", "tcp://127.0.0.1:0", "--allow", "127.0.0.0/8",
                                          "--seeds", w->r[0].addr_s, "--recheck", "500ms",
                                          "--host-gap", "0", "--ask-timeout", "1s", NULL});
    char seed_addr[TM2_NETADDR_STRLEN + 1];
    snprintf(seed_addr, sizeof seed_addr, "%s", cs_first_line(&seed, 30000));
    /* Once the seed verified the first node, a second one knowing only the
     * seed is started. */
    cs_wait_err(&seed, "reachable=1", 30000);
    rnode_start(&w->r[1], 0x42, (const char *const[]){"--seeds", seed_addr, NULL});
    tm2_netaddr sa;
    assert_int_equal(tm2_netaddr_parse(seed_addr, 0, &sa), 0);
    /* It connects to the seed, then to the node the seed handed out. */
    assert_non_null(rnode_wait(&w->r[1], "PEER_CONNECTED", sa.id.s, NULL, NULL, 20000));
    assert_non_null(rnode_wait(&w->r[1], "PEER_CONNECTED", w->r[0].id.s, NULL, NULL, 20000));
    assert_non_null(rnode_wait(&w->r[1], "PEER_DISCONNECTED", sa.id.s, NULL, NULL, 20000));
    kill(seed.pid, SIGTERM);
    int st = cs_finish(&seed, 30000);
    if (st != 0)
        fail_msg("seed exited %d; stderr:\n%s", st, seed.err);
    cs_release(&seed);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(crawl_reference_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_bootstraps_from_seed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
