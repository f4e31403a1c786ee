/* The node's /metrics read by a real Prometheus server (Debian's prometheus
 * package; scripts/deps.sh --test installs it): the test starts one with a
 * temporary config that scrapes a hub on 127.0.0.1 every second and asks it
 * through its HTTP API (/api/v1/query) for the hub's peer count, which must
 * come to the switch's own count; promtool check metrics accepts the
 * output; and when 500 peers come and go (the peer driver of the benchmarks,
 * a child process, handshaking back to back) the per-peer series leave with
 * them: series are counted before and after, in the text and in Prometheus.
 * Exits 77 (skipped) with a message when prometheus or promtool cannot run. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "peer_driver.h"
#include "test_metrics_support.h"

#define CHURN 500
#define STEADY 3

extern char **environ;

/* The peer driver, forked before any thread exists. */
static pid_t g_driver = -1;
static int g_driver_fd = -1;

/* ---- small process helpers --------------------------------------------------------------- */

/* Runs argv to its end with output discarded; its exit status, or -1. */
static int run_quiet(const char *const *argv)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int e = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e)
        return -1;
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* Feeds input to argv's stdin and collects stdout and stderr; exit status. */
static int run_with_input(const char *const *argv, const char *input, char *out, size_t cap)
{
    char path[] = "/tmp/tm2-promtool-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(input);
    assert_int_equal(write(fd, input, len), (ssize_t)len);
    int o[2];
    assert_int_equal(pipe2(o, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, path, O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    posix_spawn_file_actions_adddup2(&fa, o[1], 2);
    pid_t pid;
    int e = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(o[1]);
    close(fd);
    unlink(path);
    assert_int_equal(e, 0);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(o[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(o[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* A free port on 127.0.0.1 now (the server binds it a moment later). */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- a Prometheus server ------------------------------------------------------------------ */

typedef struct prom {
    pid_t pid;
    char dir[64];
    char addr[32];
} prom;

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return strdup("");
    char *b = calloc(1, 65537);
    assert_non_null(b);
    size_t n = fread(b, 1, 65536, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

static bool prom_ready(prom *p)
{
    char url[128], err[256], *body;
    int code;
    size_t len;
    snprintf(url, sizeof url, "http://%s/-/ready", p->addr);
    if (cli_http_get(url, 2000, &code, &body, &len, err, sizeof err))
        return false;
    free(body);
    return code == 200;
}

/* Starts prometheus scraping target every second; waits until it is ready. */
static void prom_start(prom *p, const char *target)
{
    memset(p, 0, sizeof *p);
    strcpy(p->dir, "/tmp/tm2-prom-XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    char cfg[128], data[128], logf[128];
    snprintf(cfg, sizeof cfg, "%s/prometheus.yml", p->dir);
    snprintf(data, sizeof data, "%s/data", p->dir);
    snprintf(logf, sizeof logf, "%s/prometheus.log", p->dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: tm2p2p\n    static_configs:\n      - targets: ['%s']\n",
            target);
    assert_int_equal(fclose(f), 0);
    /* A port taken between free_port and the bind: try another. */
    for (int attempt = 0; attempt < 3; attempt++) {
        snprintf(p->addr, sizeof p->addr, "127.0.0.1:%u", free_port());
        char a_cfg[160], a_data[160], a_web[64];
        snprintf(a_cfg, sizeof a_cfg, "--config.file=%s", cfg);
        snprintf(a_data, sizeof a_data, "--storage.tsdb.path=%s", data);
        snprintf(a_web, sizeof a_web, "--web.listen-address=%s", p->addr);
        const char *argv[] = {"prometheus", a_cfg, a_data, a_web, "--log.level=warn", NULL};
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
        posix_spawn_file_actions_addopen(&fa, 2, logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int e = posix_spawnp(&p->pid, "prometheus", &fa, NULL, (char *const *)argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        assert_int_equal(e, 0);
        uint64_t deadline = tv_now_ms() + 60000;
        for (;;) {
            if (prom_ready(p))
                return;
            int st;
            if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
                p->pid = -1;
                break;
            }
            if (tv_now_ms() > deadline) {
                char *log = read_file(logf);
                fail_msg("prometheus not ready in 60 s; its log:\n%s", log);
            }
            (void)poll(NULL, 0, 50);
        }
    }
    char *log = read_file(logf);
    fail_msg("prometheus exited at start; its log:\n%s", log);
}

static void prom_stop(prom *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        uint64_t deadline = tv_now_ms() + 20000;
        while (waitpid(p->pid, NULL, WNOHANG) == 0) {
            if (tv_now_ms() > deadline) {
                kill(p->pid, SIGKILL);
                waitpid(p->pid, NULL, 0);
                break;
            }
            (void)poll(NULL, 0, 20);
        }
        p->pid = -1;
    }
    if (p->dir[0])
        nftw(p->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    p->dir[0] = '\0';
}

/* Runs an instant PromQL query; true with *v when it returns one sample. */
static bool prom_value(prom *p, const char *q, double *v)
{
    char url[1024];
    int n = snprintf(url, sizeof url, "http://%s/api/v1/query?query=", p->addr);
    for (const unsigned char *s = (const unsigned char *)q; *s && n < (int)sizeof url - 4; s++)
        n += isalnum(*s) || strchr("-_.~", *s) ? snprintf(url + n, sizeof url - (size_t)n, "%c", *s)
                                               : snprintf(url + n, sizeof url - (size_t)n, "%%%02X", *s);
    char *body = get(url, 200);
    cJSON *j = cJSON_Parse(body);
    if (!j || strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "success"))
        fail_msg("query %s: %s", q, body);
    free(body);
    cJSON *res = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "result");
    bool one = cJSON_GetArraySize(res) == 1;
    if (one)
        *v = strtod(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(res, 0), "value"), 1)->valuestring,
                    NULL);
    cJSON_Delete(j);
    return one;
}

typedef struct prom_want {
    prom *p;
    const char *q;
    tnode *t;          /* want its peer count (when set) */
    const char *http;  /* or the samples its /metrics shows now (when set) */
    double want;
    double last;
} prom_want;

static bool pred_prom(void *arg)
{
    prom_want *w = arg;
    if (w->http) {
        char *text = get_path(w->http, "/metrics", 200);
        w->want = (double)count_samples(text, "");
        free(text);
    } else if (w->t) {
        w->want = (double)tpeers(w->t);
    }
    w->last = -1;
    return prom_value(w->p, w->q, &w->last) && w->last == w->want;
}

static void wait_prom_for(prom *p, tnode *t, prom_want *w, uint32_t ms)
{
    w->p = p;
    w->last = -1;
    if (!twait(t, ms, pred_prom, w))
        fail_msg("prometheus: %s = %g, want %g", w->q, w->last, w->want);
}

static void wait_prom(prom *p, tnode *t, const char *q, tnode *truth, double want, uint32_t ms)
{
    prom_want w = {.q = q, .t = truth, .want = want};
    wait_prom_for(p, t, &w, ms);
}

/* ---- the world -------------------------------------------------------------------------------- */

typedef struct world {
    tnode *hub;
    tnode *steady[STEADY + 1];
    size_t n_steady;
    char http[64];
    prom prom;
} world;

static void add_steady(world *w, const char *moniker)
{
    tnode *t = tnode_new(&(tnode_opts){.moniker = moniker, .network = BENCH_NETWORK});
    assert_int_equal(tm2_switch_dial_peers(tsw(t), &w->hub->addr, 1), 1);
    w->steady[w->n_steady++] = t;
}

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->hub = tnode_new(&(tnode_opts){.moniker = "hub", .network = BENCH_NETWORK, .http = "127.0.0.1:0",
                                     .max_inbound = 64});
    snprintf(w->http, sizeof w->http, "%s", cli_node_http_addr(w->hub->n));
    for (int i = 0; i < STEADY; i++)
        add_steady(w, "steady");
    twait_peers(w->hub, STEADY, 20000);
    prom_start(&w->prom, w->http);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    prom_stop(&w->prom);
    tnode_free(w->hub);
    for (size_t i = 0; i < w->n_steady; i++)
        tnode_free(w->steady[i]);
    free(w);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void query_returns_true_peer_count(void **state)
{
    world *w = *state;
    wait_prom(&w->prom, w->hub, "up{job=\"tm2p2p\"}", NULL, 1, 60000);
    wait_prom(&w->prom, w->hub, "sum(tm2p2p_peers)", w->hub, 0, 60000);
    assert_int_equal(tpeers(w->hub), STEADY);
    /* one more peer: the answer follows the switch */
    add_steady(w, "late");
    twait_peers(w->hub, STEADY + 1, 20000);
    wait_prom(&w->prom, w->hub, "sum(tm2p2p_peers)", w->hub, 0, 60000);
    wait_prom(&w->prom, w->hub, "count(tm2p2p_peer_info)", w->hub, 0, 60000);
    wait_prom(&w->prom, w->hub, "tm2p2p_peers{direction=\"inbound\"}", w->hub, 0, 60000);
}

static void promtool_accepts_output(void **state)
{
    world *w = *state;
    char *text = get_path(w->http, "/metrics", 200);
    static char out[65536];
    const char *argv[] = {"promtool", "check", "metrics", NULL};
    int rc = run_with_input(argv, text, out, sizeof out);
    if (rc != 0)
        fail_msg("promtool check metrics: exit %d:\n%s", rc, out);
    free(text);
}

/* Sample keys (the line up to its value) not in before and not peer series. */
static size_t new_node_series(const char *before, const char *after, bool *only_reasons)
{
    size_t n = 0;
    *only_reasons = true;
    for (const char *s = after; *s;) {
        const char *e = strchr(s, '\n');
        assert_non_null(e);
        if (*s != '#') {
            const char *sp = e;
            while (sp > s && *sp != ' ')
                sp--;
            char key[512];
            size_t kl = (size_t)(sp - s);
            assert_true(kl < sizeof key - 2);
            key[0] = '\n';
            memcpy(key + 1, s, kl);
            key[kl + 1] = ' ';
            key[kl + 2] = '\0';
            if (!strstr(key + 1, "peer_id=") && !strstr(before, key)) {
                n++;
                if (!strstr(key, "reason=\""))
                    *only_reasons = false;
            }
        }
        s = e + 1;
    }
    return n;
}

typedef struct churn {
    world *w;
    uint64_t want;
    size_t scrapes, max_peer_series;
} churn;

/* Scrapes while peers come and go; true once enough have been added. */
static bool pred_churned(void *arg)
{
    churn *c = arg;
    char *text = get_path(c->w->http, "/metrics", 200);
    size_t ps = count_samples(text, "peer_id=");
    if (ps > c->max_peer_series)
        c->max_peer_series = ps;
    c->scrapes++;
    free(text);
    tm2_switch_counters s;
    tm2_switch_stats(tsw(c->w->hub), &s);
    return s.peers_connected_inbound >= c->want;
}

static void series_bounded_when_peers_churn(void **state)
{
    world *w = *state;
    size_t steady = tpeers(w->hub);
    char *before = get_path(w->http, "/metrics", 200);
    size_t lines0 = count_samples(before, ""), peer0 = count_samples(before, "peer_id=");
    assert_int_equal(peer0, steady * (2 + 5 * 1));   /* one channel: pex */
    char q[64];
    wait_prom(&w->prom, w->hub, "count({__name__=~\"tm2p2p_.+\"})", NULL, (double)lines0, 60000);

    tm2_switch_counters s0;
    tm2_switch_stats(tsw(w->hub), &s0);
    char addr[TM2_NETADDR_STRLEN], cmd[TM2_NETADDR_STRLEN + 32];
    assert_true(tm2_netaddr_format(&w->hub->addr, addr, sizeof addr) > 0);
    int n = snprintf(cmd, sizeof cmd, "loop 8 %s\n", addr);
    assert_int_equal(write(g_driver_fd, cmd, (size_t)n), n);
    uint64_t t0 = tv_now_ms();
    churn c = {.w = w, .want = s0.peers_connected_inbound + CHURN};
    if (!twait(w->hub, 240000, pred_churned, &c)) {
        tm2_switch_counters s;
        tm2_switch_stats(tsw(w->hub), &s);
        fail_msg("only %llu of %d peers came in 240 s",
                 (unsigned long long)(s.peers_connected_inbound - s0.peers_connected_inbound), CHURN);
    }
    tm2_switch_counters s1;
    tm2_switch_stats(tsw(w->hub), &s1);
    printf("churn: %llu peers came and went in %llu ms; %zu scrapes meanwhile saw at most %zu per-peer series\n",
           (unsigned long long)(s1.peers_connected_inbound - s0.peers_connected_inbound),
           (unsigned long long)(tv_now_ms() - t0), c.scrapes, c.max_peer_series);
    /* The driver's end closes its connections. */
    close(g_driver_fd);
    g_driver_fd = -1;
    assert_int_equal(waitpid(g_driver, NULL, 0), g_driver);
    g_driver = -1;
    twait_peers(w->hub, steady, 30000);
    /* never more per-peer series than peers the hub admits */
    assert_true(c.max_peer_series <= (64 + STEADY + 1) * (2 + 5 * 1));
    assert_true(c.scrapes > 0);

    char *after = get_path(w->http, "/metrics", 200);
    size_t lines1 = count_samples(after, ""), peer1 = count_samples(after, "peer_id=");
    assert_int_equal(peer1, peer0);
    bool only_reasons;
    size_t added = new_node_series(before, after, &only_reasons);
    /* new series are only reasons seen for the first time (disconnects,
     * failed handshakes): bounded by the reason table */
    assert_true(only_reasons);
    assert_int_equal(lines1, lines0 + added);
    assert_true(added <= 3 * TM2_STATS_REASONS);
    /* Prometheus, too, ends with the series of the steady peers only: as
     * many as the exporter shows (a late handshake failure of the churn
     * may still add its reason's series after the scrape above). */
    prom_want all = {.q = "count({__name__=~\"tm2p2p_.+\"})", .http = w->http};
    wait_prom_for(&w->prom, w->hub, &all, 60000);
    snprintf(q, sizeof q, "count({peer_id!=\"\"})");
    wait_prom(&w->prom, w->hub, q, NULL, (double)peer1, 60000);
    wait_prom(&w->prom, w->hub, "sum(tm2p2p_peers)", w->hub, 0, 60000);
    double seen;
    assert_true(prom_value(&w->prom, "tm2p2p_peers_connected_total{direction=\"inbound\"}", &seen));
    assert_true(seen >= (double)(s0.peers_connected_inbound + CHURN));
    free(before);
    free(after);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *pv[] = {"prometheus", "--version", NULL}, *tv[] = {"promtool", "--version", NULL};
    if (run_quiet(pv) != 0 || run_quiet(tv) != 0) {
        printf("SKIP: the prometheus server or promtool cannot run here (Debian package prometheus; "
               "scripts/deps.sh --test installs it)\n");
        return 77;
    }
    /* Forked while this process has one thread. */
    bench_raise_nofile(1024);
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    fflush(stdout);
    g_driver = fork();
    assert_true(g_driver >= 0);
    if (g_driver == 0) {
        close(fds[1]);
        peer_driver_main(fds[0], fds[0]);
    }
    close(fds[0]);
    g_driver_fd = fds[1];

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(query_returns_true_peer_count),
        cmocka_unit_test(promtool_accepts_output),
        cmocka_unit_test(series_bounded_when_peers_churn),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    if (g_driver_fd >= 0)
        close(g_driver_fd);
    if (g_driver > 0)
        waitpid(g_driver, NULL, 0);
    return rc;
}
