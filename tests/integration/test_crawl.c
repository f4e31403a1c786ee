/* tm2p2p crawl against a local network of tm2p2p nodes (in-process switches
 * with discovery) on 127.0.0.1, the crawler being the tm2p2p program as a
 * child process with --allow 127.0.0.0/8:
 * - the map equals the ground truth: every node, its moniker and version set,
 *   every advertised-by edge (each node's peers at the time of the crawl);
 * - a node stopped is marked unreachable by the next crawl, and gone once
 *   --gone-after has passed;
 * - a peer whose NodeInfo carries another ID than its key's is recorded as a
 *   liar with both IDs, not counted reachable under either, and the address
 *   it advertises is neither recorded nor dialled. */
#include "cli/fdlimit.h"
#include "crawl_support.h"

#define NETWORK   "crawl-test"
#define N_NODES   6
#define OUT_TARGET 2

typedef struct world {
    char home[128];
    cs_node nodes[N_NODES];
    cs_liar liar;
    int bait_fd;
    uint16_t bait_port;
    tm2_id bait_id;
    char seeds[2048];
    bool truth[N_NODES][N_NODES];
} world;

static void snapshot(world *w, bool out[N_NODES][N_NODES])
{
    for (size_t i = 0; i < N_NODES; i++)
        cs_peer_set(w->nodes, N_NODES, i, out[i]);
}

static size_t bait_accepts(world *w)
{
    size_t n = 0;
    for (;;) {
        struct pollfd pf = {.fd = w->bait_fd, .events = POLLIN};
        if (poll(&pf, 1, 0) <= 0)
            return n;
        int fd = accept4(w->bait_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            close(fd);
        n++;
    }
}

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    cs_tmpdir(w->home, sizeof w->home, "crawl");
    /* Node 0 is every other node's persistent peer; discovery does the rest. */
    cs_node_start(&w->nodes[0], 0,
                  &(cs_node_opts){.network = NETWORK, .max_outbound = OUT_TARGET, .max_inbound = 16,
                                  .pex_interval_ms = 200});
    const char *pp[1] = {w->nodes[0].addr};
    for (int i = 1; i < N_NODES; i++)
        cs_node_start(&w->nodes[i], i,
                      &(cs_node_opts){.network = NETWORK, .max_outbound = OUT_TARGET,
                                      .max_inbound = 16, .pex_interval_ms = 200, .persistent = pp,
                                      .n_persistent = 1});
    /* Node 0 dials nobody by itself until discovery gives it addresses. */
    cs_wait(w->nodes, N_NODES, cs_all_at_outbound, &(cs_target){OUT_TARGET}, 30000,
            "every node at its outbound target");

    /* The bait: a listener nobody should ever connect to. */
    w->bait_fd = cs_listen_loopback(&w->bait_port);
    tm2_node_key bk;
    assert_int_equal(tm2_node_key_generate(&bk), 0);
    tm2_node_key_id(&bk, &w->bait_id);
    tm2_netaddr bait;
    assert_int_equal(tm2_netaddr_parse("127.0.0.1:1", TM2_NETADDR_NO_ID, &bait), 0);
    bait.port = w->bait_port;
    bait.id = w->bait_id;
    cs_liar_start(&w->liar, NETWORK, &bait);
    char la[TM2_NETADDR_STRLEN + 1];
    cs_liar_addr(&w->liar, la, sizeof la);
    snprintf(w->seeds, sizeof w->seeds, "%s,%s", w->nodes[0].addr, la);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    for (int i = 0; i < N_NODES; i++)
        cs_node_free(&w->nodes[i]);
    cs_liar_stop(&w->liar);
    close(w->bait_fd);
    cs_rmdir(w->home);
    free(w);
    return 0;
}

static void crawl_once(world *w, const char *gone_after)
{
    CS_RUN_OK(120000, "crawl", "--home", w->home, "--seeds", w->seeds, "--chain-id", NETWORK,
              "--allow", "127.0.0.0/8", "--rounds", "1", "--per-host", "16", "--host-gap", "0",
              "--ask-timeout", "2s", "--gone-after", gone_after, "--log-level", "debug");
}

static cJSON *report(world *w)
{
    char json[256];
    snprintf(json, sizeof json, "%s/map.json", w->home);
    CS_RUN_OK(60000, "crawl", "report", "--home", w->home, "--json", json, "--quiet");
    return cs_read_json(json);
}

static void check_node(cJSON *rep, const cs_node *n, const char *status)
{
    cJSON *x = cs_report_node(rep, n->id.s);
    if (!x)
        fail_msg("node %d (%s) missing from the map", n->idx, n->id.s);
    if (strcmp(cs_str(x, "status"), status))
        fail_msg("node %d: status %s, expected %s", n->idx, cs_str(x, "status"), status);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(x, "verified")));
    assert_string_equal(cs_str(x, "moniker"), n->moniker);
    assert_string_equal(cs_str(x, "network"), NETWORK);
    assert_string_equal(cs_str(x, "version"), TM2_PROTOCOL_VERSION);
    assert_string_equal(cs_str(x, "net_address"), n->addr);
    /* The version set the switch sends, name by name. */
    static const char *const names[5] = {"abci", "app", "bft", "blockchain", "p2p"};
    cJSON *vs = cJSON_GetObjectItem(x, "versions");
    assert_int_equal(cJSON_GetArraySize(vs), 5);
    for (int k = 0; k < 5; k++) {
        cJSON *v = cJSON_GetArrayItem(vs, k);
        assert_string_equal(cs_str(v, "name"), names[k]);
        assert_string_equal(cs_str(v, "version"), k == 1 ? "" : TM2_PROTOCOL_VERSION);
        assert_true(cJSON_IsFalse(cJSON_GetObjectItem(v, "optional")));
    }
}

static void map_equals_ground_truth(void **state)
{
    world *w = *state;
    bool before[N_NODES][N_NODES], after[N_NODES][N_NODES];
    /* The ground truth holds only if the network held still while it was
     * crawled; on a loaded machine discovery may still be moving a link, and
     * then the map is made again from nothing. */
    for (int attempt = 0;; attempt++) {
        snapshot(w, before);
        crawl_once(w, "24h");
        snapshot(w, after);
        if (!memcmp(before, after, sizeof before))
            break;
        if (attempt == 4)
            fail_msg("the network kept changing under five crawls");
        cs_rmdir(w->home);
    }

    cJSON *rep = report(w);
    assert_string_equal(cs_str(rep, "network"), NETWORK);
    for (int i = 0; i < N_NODES; i++)
        check_node(rep, &w->nodes[i], "reachable");
    /* Every edge of the ground truth, and nothing else. */
    size_t expected = 0;
    for (int i = 0; i < N_NODES; i++)
        for (int j = 0; j < N_NODES; j++) {
            if (!before[i][j])
                continue;
            expected++;
            if (!cs_report_has_edge(rep, w->nodes[i].id.s, w->nodes[j].id.s))
                fail_msg("edge %d -> %d missing", i, j);
        }
    assert_int_equal((size_t)cJSON_GetArraySize(cJSON_GetObjectItem(rep, "edges")), expected);
    assert_true(expected >= (size_t)N_NODES * OUT_TARGET);
    assert_int_equal(cJSON_GetObjectItem(rep, "largest_component")->valueint, N_NODES);

    /* The liar: recorded under the ID it claims, with its key's ID beside
     * it, trusted under neither. */
    cJSON *lx = cs_report_node(rep, w->liar.claimed_id.s);
    assert_non_null(lx);
    assert_string_equal(cs_str(lx, "status"), "untrusted");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(lx, "verified")));
    cJSON *la = cJSON_GetArrayItem(cJSON_GetObjectItem(lx, "addresses"), 0);
    assert_non_null(la);
    assert_string_equal(cs_str(la, "status"), "liar");
    assert_string_equal(cs_str(la, "auth_id"), w->liar.key_id.s);
    assert_string_equal(cs_str(la, "claimed_id"), w->liar.claimed_id.s);
    assert_null(cs_report_node(rep, w->liar.key_id.s));
    bool misb = false;
    cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(rep, "misbehavior"))
    misb |= !strcmp(cs_str(m, "kind"), "liar") && !strcmp(cs_str(m, "auth_id"), w->liar.key_id.s);
    assert_true(misb);
    assert_true(atomic_load(&w->liar.conns) >= 1);
    /* What the liar advertised was not followed. */
    assert_null(cs_report_node(rep, w->bait_id.s));
    assert_int_equal(bait_accepts(w), 0);
    /* Nodes == the six, the liar's claimed ID; nothing else. */
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(rep, "nodes")), N_NODES + 1);
    cJSON_Delete(rep);

    /* Exports: CSV and DOT are written and name every node. */
    char csv[256], dot[256];
    snprintf(csv, sizeof csv, "%s/map.csv", w->home);
    snprintf(dot, sizeof dot, "%s/map.dot", w->home);
    CS_RUN_OK(60000, "crawl", "report", "--home", w->home, "--csv", csv, "--dot", dot);
    FILE *f = fopen(dot, "r");
    assert_non_null(f);
    char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    assert_non_null(strstr(text, "digraph"));
    for (int i = 0; i < N_NODES; i++)
        assert_non_null(strstr(text, w->nodes[i].id.s));
    f = fopen(csv, "r");
    assert_non_null(f);
    n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    assert_int_equal(strncmp(text, "id,status,moniker", 17), 0);
    for (int i = 0; i < N_NODES; i++)
        assert_non_null(strstr(text, w->nodes[i].moniker));

    /* Stop one node: the next crawl finds it unreachable, the others not. */
    cs_node_stop(&w->nodes[N_NODES - 1]);
    crawl_once(w, "24h");
    rep = report(w);
    cJSON *x = cs_report_node(rep, w->nodes[N_NODES - 1].id.s);
    assert_non_null(x);
    assert_string_equal(cs_str(x, "status"), "unreachable");
    cJSON *xa = cJSON_GetArrayItem(cJSON_GetObjectItem(x, "addresses"), 0);
    assert_string_equal(cs_str(xa, "status"), "unreachable");
    assert_true(cJSON_GetObjectItem(xa, "failures")->valueint >= 1);
    /* Still known by its NodeInfo from the first crawl. */
    assert_string_equal(cs_str(x, "moniker"), w->nodes[N_NODES - 1].moniker);
    for (int i = 0; i < N_NODES - 1; i++)
        assert_string_equal(cs_str(cs_report_node(rep, w->nodes[i].id.s), "status"), "reachable");
    cJSON_Delete(rep);

    /* Unreachable for longer than --gone-after: gone. */
    crawl_once(w, "1ms");
    rep = report(w);
    x = cs_report_node(rep, w->nodes[N_NODES - 1].id.s);
    assert_string_equal(cs_str(x, "status"), "gone");
    for (int i = 0; i < N_NODES - 1; i++)
        assert_string_equal(cs_str(cs_report_node(rep, w->nodes[i].id.s), "status"), "reachable");
    cJSON_Delete(rep);
    assert_int_equal(bait_accepts(w), 0);
}

static void refuses_outside_allow(void **state)
{
    world *w = *state;
    /* The default policy (public unicast only) dials nothing here; a crawl of
     * loopback seeds records them as refused and makes no connection. */
    char home[256];
    snprintf(home, sizeof home, "%s/refused", w->home);
    int before = atomic_load(&w->liar.conns);
    CS_RUN_OK(60000, "crawl", "--home", home, "--seeds", w->seeds, "--chain-id", NETWORK,
              "--rounds", "1");
    assert_int_equal(atomic_load(&w->liar.conns), before);
    char json[300];
    snprintf(json, sizeof json, "%s/map.json", home);
    CS_RUN_OK(60000, "crawl", "report", "--home", home, "--json", json, "--quiet");
    cJSON *rep = cs_read_json(json);
    cJSON *x = cs_report_node(rep, w->nodes[0].id.s);
    assert_non_null(x);
    assert_string_equal(cs_str(x, "status"), "refused");
    cJSON_Delete(rep);
}

static void sigint_ends_cleanly(void **state)
{
    world *w = *state;
    /* Rounds without end, every 100 ms; SIGINT after the second one. */
    cs_proc p;
    cs_start(&p, (const char *const[]){"crawl", "--home", w->home, "--seeds", w->seeds, "--chain-id",
                                       NETWORK, "--allow", "127.0.0.0/8", "--rounds", "0",
                                       "--interval", "100ms", "--per-host", "16", "--host-gap", "0",
                                       "--progress", NULL});
    cs_wait_err(&p, "round=2 probed", 60000);
    kill(p.pid, SIGINT);
    int st = cs_finish(&p, 30000);
    if (st != 0)
        fail_msg("crawl exited %d after SIGINT; stderr:\n%s", st, p.err);
    assert_non_null(strstr(p.err, "shutting down"));
    /* The progress line (not a terminal: there because of --progress). */
    assert_non_null(strstr(p.err, ": probed "));
    cs_release(&p);
    cJSON *rep = report(w);
    for (int i = 0; i < N_NODES; i++)
        assert_string_equal(cs_str(cs_report_node(rep, w->nodes[i].id.s), "status"), "reachable");
    assert_true(cJSON_GetObjectItem(rep, "rounds")->valueint >= 2);
    cJSON_Delete(rep);
}

/* Probes in flight and sessions served hold a descriptor each: a hard limit
 * below them (and the reserve) is named in a warning, and the crawl runs on.
 * Loopback seeds outside the default policy: nothing is dialled. */
static void open_file_limit(void **state)
{
    (void)state;
    char home[128], seeds[200];
    cs_tmpdir(home, sizeof home, "crawl-fd");
    tm2_node_key k;
    uint8_t seed[32] = {9};
    tm2_node_key_from_seed(&k, seed);
    tm2_id id;
    tm2_node_key_id(&k, &id);
    snprintf(seeds, sizeof seeds, "%s@127.0.0.1:9", id.s);
    cs_proc p;
    tv_proc_start_ulimit(&p, "ulimit -Sn 100 && ulimit -Hn 200", CS_PROGRAM,
                         (const char *const[]){"crawl", "--home", home, "--seeds", seeds, "--chain-id",
                                               NETWORK, "--rounds", "1", "--concurrency", "1000",
                                               NULL});
    const char *line = tv_proc_wait_line(&p, "msg=\"open-file limit below what the configuration may use\"",
                                         NULL, tv_now_ms() + 30000);
    assert_non_null(strstr(line, " limit=200 "));
    char need[32];
    snprintf(need, sizeof need, " need=%u ", 1000u + CLI_FD_RESERVE);   /* no listener: no sessions */
    assert_non_null(strstr(line, need));
    int st = cs_finish(&p, 60000);
    if (st != 0)
        fail_msg("crawl exited %d; stderr:\n%s", st, p.err);
    cs_release(&p);
    cs_rmdir(home);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(map_equals_ground_truth, setup, teardown),
        cmocka_unit_test_setup_teardown(refuses_outside_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(sigint_ends_cleanly, setup, teardown),
        cmocka_unit_test(open_file_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
