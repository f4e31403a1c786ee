/* The built tm2p2p program's "node" and "testnet" commands, run as child
 * processes on temporary homes, all on loopback. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/fdlimit.h"
#include "cli/http.h"
#include "tm2p2p/defaults.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/peer.h"
#include "tm2p2p/switch.h"
#include "tm2p2p/version.h"
#include "tv.h"
#include "tvproc.h"

#define PROGRAM TM2_BINARY_DIR "/tm2p2p"
#define START_DEADLINE_MS 20000

extern char **environ;

typedef tv_proc proc;

typedef struct home {
    char dir[64];
} home;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    home *h = calloc(1, sizeof *h);
    assert_non_null(h);
    strcpy(h->dir, "/tmp/tm2-cli-node-XXXXXX");
    assert_non_null(mkdtemp(h->dir));
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    home *h = *state;
    nftw(h->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(h);
    return 0;
}

static const char *path_in(const home *h, const char *rel)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", h->dir, rel);
    return p[k];
}

static void write_file(const char *path, const char *text)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *s = dir + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(dir, 0700);
            *s = '/';
        }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The program with args (NULL-terminated); output goes to pipes. */
static void start(proc *p, const char *const *args) { tv_proc_start(p, PROGRAM, args); }

#define START(p, ...) start(p, (const char *const[]){__VA_ARGS__, NULL})
#define pump tv_proc_pump
#define wait_line tv_proc_wait_line
#define finish tv_proc_finish
#define release tv_proc_release

/* Runs to completion; returns the exit code. */
static int run(proc *p, const char *const *args)
{
    start(p, args);
    return finish(p, tv_now_ms() + 60000);
}

#define RUN(p, ...) run(p, (const char *const[]){__VA_ARGS__, NULL})

/* The value of key=VALUE in a logfmt line (static buffer). */
static const char *field(const char *line, const char *key)
{
    static char v[512];
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *s = strstr(line, pat);
    assert_non_null(s);
    s += strlen(pat);
    size_t n = strcspn(s, " ");
    assert_true(n < sizeof v);
    memcpy(v, s, n);
    v[n] = '\0';
    return v;
}

/* ---- tests ------------------------------------------------------------------ */

static void start_sigterm_exit0(void **state)
{
    home *h = *state;
    proc p;
    const char *hd = path_in(h, "a");
    START(&p, "node", "--home", hd, "--laddr", "127.0.0.1:0", "--chain-id", "cli-test");
    const char *line = wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    char addr[256];
    snprintf(addr, sizeof addr, "%s", field(line, "addr"));
    assert_true(!strncmp(addr, "g1", 2));
    assert_non_null(strstr(addr, "@127.0.0.1:"));
    assert_string_not_equal(strstr(addr, "@127.0.0.1:"), "@127.0.0.1:0");
    /* the node ID and address also go to stdout, for scripts */
    while (!strchr(p.out, '\n'))
        pump(&p, 100);
    char want[300];
    snprintf(want, sizeof want, "%s\n", addr);
    assert_string_equal(p.out, want);
    assert_true(file_exists(path_in(h, "a/secrets/node_key.json")));

    assert_int_equal(kill(p.pid, SIGTERM), 0);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    assert_non_null(strstr(p.err, "msg=\"shutting down\" signal=SIGTERM"));
    assert_non_null(strstr(p.err, "msg=stopped"));
    assert_true(file_exists(path_in(h, "a/config/addrbook.json")));
    release(&p);

    /* a second run reuses the key: same ID */
    START(&p, "node", "--home", hd, "--laddr", "tcp://127.0.0.1:0", "--chain-id", "cli-test");
    line = wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_memory_equal(field(line, "addr"), addr, 40);
    assert_null(strstr(p.err, "created node key"));
    assert_int_equal(kill(p.pid, SIGINT), 0);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    assert_non_null(strstr(p.err, "signal=SIGINT"));
    release(&p);
}

static void json_logs(void **state)
{
    home *h = *state;
    proc p;
    START(&p, "node", "--home", path_in(h, "j"), "--laddr", "127.0.0.1:0", "--log-format", "json",
          "--pex", "false");
    const char *line = wait_line(&p, "\"msg\":\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_true(line[0] == '{' && line[strlen(line) - 1] == '}');
    assert_non_null(strstr(line, "\"level\":\"info\""));
    assert_non_null(strstr(line, "\"addr\":\"g1"));
    assert_int_equal(kill(p.pid, SIGTERM), 0);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    /* without pex there is no address book */
    assert_false(file_exists(path_in(h, "j/config/addrbook.json")));
    release(&p);
}

static void expect_usage_error(home *h, const char *frag, const char *const *args)
{
    proc p;
    int st = run(&p, args);
    if (st != 2 || !strstr(p.err, frag))
        fail_msg("exit %d, wanted 2 with '%s' in:\n%s", st, frag, p.err);
    (void)h;
    release(&p);
}

#define USAGE_ERROR(h, frag, ...) expect_usage_error(h, frag, (const char *const[]){__VA_ARGS__, NULL})

static void bad_flags_exit2(void **state)
{
    home *h = *state;
    const char *hd = path_in(h, "b");
    USAGE_ERROR(h, "--home DIR is required", "node");
    USAGE_ERROR(h, "unknown option '--bogus'", "node", "--home", hd, "--bogus");
    USAGE_ERROR(h, "unknown argument 'extra'", "node", "--home", hd, "extra");
    USAGE_ERROR(h, "--laddr needs a value", "node", "--home", hd, "--laddr");
    USAGE_ERROR(h, "--laddr: bad listen address", "node", "--home", hd, "--laddr", "127.0.0.1");
    USAGE_ERROR(h, "--laddr: bad listen address", "node", "--home", hd, "--laddr", "300.1.1.1:5");
    USAGE_ERROR(h, "--external-address: bad address", "node", "--home", hd, "--external-address", "x:y:z");
    USAGE_ERROR(h, "--max-inbound: 'many'", "node", "--home", hd, "--max-inbound", "many");
    USAGE_ERROR(h, "--max-outbound: '-1'", "node", "--home", hd, "--max-outbound", "-1");
    USAGE_ERROR(h, "--log-level: 'loud'", "node", "--home", hd, "--log-level", "loud");
    USAGE_ERROR(h, "--log-format: 'xml'", "node", "--home", hd, "--log-format", "xml");
    USAGE_ERROR(h, "--pex: 'maybe'", "node", "--home", hd, "--pex", "maybe");
    USAGE_ERROR(h, "--seed-mode: 'x'", "node", "--home", hd, "--seed-mode=x");
    USAGE_ERROR(h, "--laddr: bad listen address 'tcp://localhost:0'", "node", "--home", hd, "--laddr",
                "tcp://localhost:0");
    /* A malformed peer entry is dropped with a warning, as gno does; the
     * check reports it. */
    USAGE_ERROR(h, "entry=127.0.0.1:5", "node", "--home", hd, "--check-config", "--seeds",
                "127.0.0.1:5");
    USAGE_ERROR(h, "position=2", "node", "--home", hd, "--check-config", "--persistent-peers",
                "g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y@127.0.0.1:5,g1bad@127.0.0.1:5");
    USAGE_ERROR(h, "--private-peer-ids: 'nope'", "node", "--home", hd, "--private-peer-ids", "nope");
    USAGE_ERROR(h, "--moniker given twice", "node", "--home", hd, "--moniker", "a", "--moniker", "b");
    USAGE_ERROR(h, "seed mode needs peer exchange", "node", "--home", hd, "--seed-mode", "--pex", "false");
    USAGE_ERROR(h, "unknown command 'nodes'", "nodes");
    USAGE_ERROR(h, "--nodes: '1'", "testnet", "--nodes", "1");
    USAGE_ERROR(h, "--seeds (4) must be less than --nodes (4)", "testnet", "--nodes", "4", "--seeds", "4");
    USAGE_ERROR(h, "--kill-one needs --processes", "testnet", "--kill-one");
    USAGE_ERROR(h, "unknown option '--fast'", "testnet", "--fast");
    /* nothing was created by the refused runs */
    assert_false(file_exists(path_in(h, "b/secrets/node_key.json")));
}

static void bad_config_exit2(void **state)
{
    home *h = *state;
    const char *hd = path_in(h, "c");
    const char *cfg = path_in(h, "c/config/config.toml");
    static const struct {
        const char *text, *frag;
    } cases[] = {
        {"[p2p]\nsend_rate = -1\n", "p2p.send_rate: must not be negative"},
        {"[p2p]\nrecv_rate = -1\n", "p2p.recv_rate: must not be negative"},
        {"[p2p]\nflush_throttle_timeout = \"soon\"\n", "p2p.flush_throttle_timeout: bad duration"},
        {"[p2p]\npex = \"yes\"\n", "p2p.pex: expected a boolean"},
        {"[p2p]\nmax_num_inbound_peers = 100001\n", "p2p.max_num_inbound_peers in"},
        {"[p2p]\nladdr = \"nowhere\"\n", "p2p.laddr in"},
        {"[p2p]\nmax_packet_msg_payload_size = 0\n", "p2p.max_packet_msg_payload_size: must be from 1 to 65536"},
        {"[p2p]\nmax_recv_buffer_bytes = 1\n", "p2p.max_recv_buffer_bytes: must be 0 (off) or at least"},
        {"[p2p]\naccept_subnet_burst = 0\n", "p2p.accept_subnet_burst (at least 1"},
        {"[p2p]\nban_duration = \"a while\"\n", "p2p.ban_duration: bad duration"},
        {"[p2p]\nban_file = \"\"\n", "p2p.ban_file: must not be empty"},
        {"[p2p]\nunconditional_peer_ids = \"g1x\"\n", "p2p.unconditional_peer_ids in"},
        {"[p2p]\nmax_inbound_per_subnet = 100001\n", "p2p.max_inbound_per_subnet: must be from 0 to 100000"},
        {"[p2p]\nevict_inbound = 1\n", "p2p.evict_inbound: expected a boolean"},
        {"[p2p]\nevict_protect_oldest_pct = 101\n", "p2p.evict_protect_oldest_pct: must be from 0 to 100"},
        {"[p2p]\nevict_protect_latency = 10001\n", "p2p.evict_protect_latency: must be from 0 to 10000"},
        {"[[p2p]]\n", "p2p: expected a table"},
        {"moniker = \"\"\n", "moniker: must not be empty"},
        {"[p2p\n", "config.toml:1:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(cfg, cases[i].text);
        proc p;
        int st = RUN(&p, "node", "--home", hd);
        if (st != 2 || !strstr(p.err, cases[i].frag) || !strstr(p.err, "config.toml"))
            fail_msg("config %s: exit %d, wanted 2 with '%s' in:\n%s", cases[i].text, st, cases[i].frag, p.err);
        release(&p);
    }
    /* a flag overrides the file's bad value */
    write_file(cfg, "[p2p]\nladdr = \"nowhere\"\nupnp = true\n");
    proc p;
    START(&p, "node", "--home", hd, "--laddr", "127.0.0.1:0");
    wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_non_null(strstr(p.err, "unknown key p2p.upnp ignored"));
    kill(p.pid, SIGTERM);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    release(&p);
}

static void config_file_is_read(void **state)
{
    home *h = *state;
    const char *hd = path_in(h, "d");
    write_file(path_in(h, "d/config/config.toml"),
               "moniker = \"from-file\"\nnode_key_file = \"keys/k.json\"\n"
               "[p2p]\nladdr = \"tcp://127.0.0.1:0\"\naddr_book_file = \"book.json\"\n");
    proc p;
    START(&p, "node", "--home", hd);
    const char *line = wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_non_null(strstr(line, "moniker=from-file"));
    wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_true(file_exists(path_in(h, "d/keys/k.json")));
    kill(p.pid, SIGTERM);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    assert_true(file_exists(path_in(h, "d/book.json")));
    release(&p);
}

/* The eviction protection counts: accepted from the file and the flags, and
 * carried by the defences into the switch's config. */
static void eviction_protection_settings(void **state)
{
    home *h = *state;
    const char *hd = path_in(h, "e");
    write_file(path_in(h, "e/config/config.toml"),
               "[p2p]\nevict_protect_groups = 0\nevict_protect_latency = 10000\n"
               "evict_protect_active = 1\nevict_protect_oldest_pct = 100\n");
    proc p;
    int st = RUN(&p, "node", "--home", hd, "--check-config", "--evict-protect-oldest-pct", "0");
    if (st != 0 || !strstr(p.out, "config ok"))
        fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", st, p.out, p.err);
    release(&p);

    cli_node_defences d = {.evict_inbound = true, .evict_protect_groups = 3, .evict_protect_latency = 0,
                           .evict_protect_active = 9, .evict_protect_oldest_pct = 25};
    cli_node_opts o = {.listen_addr = "tcp://127.0.0.1:0", .network = "t", .moniker = "m",
                       .defences = &d};
    tm2_switch_config sc;
    cli_node_switch_config(&o, &sc);
    assert_true(sc.evict_inbound);
    assert_int_equal(sc.evict_protect_groups, 3);
    assert_int_equal(sc.evict_protect_latency, 0);
    assert_int_equal(sc.evict_protect_active, 9);
    assert_int_equal(sc.evict_protect_oldest_pct, 25);
    /* without defences, the library's defaults */
    o.defences = NULL;
    cli_node_switch_config(&o, &sc);
    assert_int_equal(sc.evict_protect_groups, TM2_DEFAULT_EVICT_PROTECT_GROUPS);
    assert_int_equal(sc.evict_protect_latency, TM2_DEFAULT_EVICT_PROTECT_LATENCY);
    assert_int_equal(sc.evict_protect_active, TM2_DEFAULT_EVICT_PROTECT_ACTIVE);
    assert_int_equal(sc.evict_protect_oldest_pct, TM2_DEFAULT_EVICT_PROTECT_OLDEST_PCT);
}

static void help_texts(void **state)
{
    (void)state;
    proc p;
    assert_int_equal(RUN(&p, "node", "--help"), 0);
    assert_non_null(strstr(p.out, "usage: tm2p2p node --home DIR"));
    assert_non_null(strstr(p.out, "--persistent-peers"));
    assert_non_null(strstr(p.out, "--prometheus-listen-addr"));
    release(&p);
    assert_int_equal(RUN(&p, "testnet", "--help"), 0);
    assert_non_null(strstr(p.out, "usage: tm2p2p testnet"));
    release(&p);
    assert_int_equal(RUN(&p, "--help"), 0);
    assert_non_null(strstr(p.out, "testnet"));
    assert_non_null(strstr(p.out, "status"));
    release(&p);
    assert_int_equal(RUN(&p, "status", "--help"), 0);
    assert_non_null(strstr(p.out, "usage: tm2p2p status"));
    release(&p);
}

/* GETs http://addr/metrics until it holds frag (the node's counters are
 * read as they are, so a connect may take a moment to show). */
static char *metrics_with(proc *p, const char *addr, const char *frag, uint64_t deadline_ms)
{
    char url[128], err[256];
    snprintf(url, sizeof url, "http://%s/metrics", addr);
    for (;;) {
        int code;
        char *body;
        size_t len;
        if (cli_http_get(url, 5000, &code, &body, &len, err, sizeof err))
            fail_msg("GET %s: %s", url, err);
        assert_int_equal(code, 200);
        if (strstr(body, frag))
            return body;
        if (tv_now_ms() > deadline_ms)
            fail_msg("no '%s' in:\n%s", frag, body);
        free(body);
        pump(p, 50);
    }
}

/* [instrumentation] in config.toml and the flags start the HTTP endpoints;
 * the flag overrides the file; a bad address is a usage error. */
static void prometheus_endpoints(void **state)
{
    home *h = *state;
    write_file(path_in(h, "pa/config/config.toml"),
               "[instrumentation]\nprometheus = true\nprometheus_listen_addr = \"127.0.0.1:0\"\n");
    proc a, b;
    START(&a, "node", "--home", path_in(h, "pa"), "--laddr", "127.0.0.1:0", "--moniker", "pa");
    const char *line = wait_line(&a, "msg=\"http endpoints listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    char a_http[64], a_addr[256], frag[128];
    snprintf(a_http, sizeof a_http, "%s", field(line, "addr"));
    assert_int_equal(strncmp(a_http, "127.0.0.1:", 10), 0);
    line = wait_line(&a, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    snprintf(a_addr, sizeof a_addr, "%s", field(line, "addr"));
    snprintf(frag, sizeof frag, "tm2p2p_node_info{node_id=\"%.40s\",moniker=\"pa\"", a_addr);
    free(metrics_with(&a, a_http, frag, tv_now_ms() + START_DEADLINE_MS));

    START(&b, "node", "--home", path_in(h, "pb"), "--laddr", "127.0.0.1:0", "--prometheus",
          "--prometheus-listen-addr", "127.0.0.1:0", "--persistent-peers", a_addr);
    line = wait_line(&b, "msg=\"http endpoints listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    char b_http[64];
    snprintf(b_http, sizeof b_http, "%s", field(line, "addr"));
    free(metrics_with(&a, a_http, "tm2p2p_peers{direction=\"inbound\"} 1\n", tv_now_ms() + START_DEADLINE_MS));
    free(metrics_with(&b, b_http, "tm2p2p_peers_by_kind{kind=\"persistent\"} 1\n", tv_now_ms() + START_DEADLINE_MS));
    kill(b.pid, SIGTERM);
    assert_int_equal(finish(&b, tv_now_ms() + 20000), 0);
    kill(a.pid, SIGTERM);
    assert_int_equal(finish(&a, tv_now_ms() + 20000), 0);
    release(&a);
    release(&b);

    /* the flag turns off what the file turns on */
    START(&a, "node", "--home", path_in(h, "pa"), "--laddr", "127.0.0.1:0", "--prometheus=false");
    wait_line(&a, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_null(strstr(a.err, "http endpoints listening"));
    kill(a.pid, SIGTERM);
    assert_int_equal(finish(&a, tv_now_ms() + 20000), 0);
    release(&a);

    USAGE_ERROR(h, "--prometheus-listen-addr: bad address '26660'", "node", "--home", path_in(h, "pc"),
                "--prometheus", "--prometheus-listen-addr", "26660");
    USAGE_ERROR(h, "--prometheus: 'maybe'", "node", "--home", path_in(h, "pc"), "--prometheus=maybe");
    write_file(path_in(h, "pd/config/config.toml"), "[instrumentation]\nprometheus_listen_addr = \"nowhere\"\n");
    USAGE_ERROR(h, "instrumentation.prometheus_listen_addr in", "node", "--home", path_in(h, "pd"));
}

/* B knows A only as a persistent peer; both log the connection. */
static void two_nodes_persistent(void **state)
{
    home *h = *state;
    proc a, b;
    START(&a, "node", "--home", path_in(h, "na"), "--laddr", "127.0.0.1:0", "--moniker", "a");
    const char *line = wait_line(&a, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    char a_addr[256], a_id[64];
    snprintf(a_addr, sizeof a_addr, "%s", field(line, "addr"));
    snprintf(a_id, sizeof a_id, "%.40s", a_addr);

    START(&b, "node", "--home", path_in(h, "nb"), "--laddr", "127.0.0.1:0", "--moniker", "b",
          "--persistent-peers", a_addr);
    line = wait_line(&b, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    char b_id[64];
    snprintf(b_id, sizeof b_id, "%.40s", field(line, "addr"));

    char pa[80], pb[80];
    snprintf(pa, sizeof pa, "peer=%s", a_id);
    snprintf(pb, sizeof pb, "peer=%s", b_id);
    line = wait_line(&b, "msg=\"peer connected\"", pa, tv_now_ms() + START_DEADLINE_MS);
    assert_non_null(strstr(line, "direction=outbound"));
    line = wait_line(&a, "msg=\"peer connected\"", pb, tv_now_ms() + START_DEADLINE_MS);
    assert_non_null(strstr(line, "direction=inbound"));
    assert_non_null(strstr(line, "addr="));

    /* A stops: B logs the disconnect with a reason */
    kill(a.pid, SIGTERM);
    assert_int_equal(finish(&a, tv_now_ms() + 20000), 0);
    wait_line(&b, "msg=\"peer disconnected\"", pa, tv_now_ms() + START_DEADLINE_MS);
    assert_non_null(strstr(wait_line(&b, "msg=\"peer disconnected\"", pa, tv_now_ms()), "reason="));
    kill(b.pid, SIGTERM);
    assert_int_equal(finish(&b, tv_now_ms() + 20000), 0);
    release(&a);
    release(&b);
}

static size_t count_lines(const proc *p, const char *frag)
{
    size_t k = 0;
    for (const char *s = p->err; (s = strstr(s, frag)) != NULL; s += strlen(frag))
        k++;
    return k;
}

/* Connections that fail before authentication are logged one by one only
 * up to a burst a window, then summarised by reason. */
static void rejections_summarised(void **state)
{
    home *h = *state;
    proc a;
    START(&a, "node", "--home", path_in(h, "flood"), "--laddr", "127.0.0.1:0");
    const char *line = wait_line(&a, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    char addr[256];
    snprintf(addr, sizeof addr, "%s", strchr(field(line, "addr"), '@') + 1);
    tm2_netaddr to;
    assert_int_equal(tm2_netaddr_parse(addr, TM2_NETADDR_NO_ID, &to), 0);
    struct sockaddr_storage ss;
    assert_int_equal(tm2_netaddr_to_sockaddr(&to, (struct sockaddr *)&ss, sizeof ss), 0);
    enum { FLOOD = 60 };
    for (int i = 0; i < FLOOD; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
        close(fd);
    }
    line = wait_line(&a, "connections rejected before authentication", NULL,
                     tv_now_ms() + START_DEADLINE_MS);
    size_t one_by_one = count_lines(&a, "msg=\"peer rejected\"");
    unsigned long held = strtoul(field(line, "count"), NULL, 10);
    assert_true(one_by_one <= 10);
    assert_int_equal(one_by_one + held, FLOOD);
    assert_non_null(strstr(line, "by_reason="));
    kill(a.pid, SIGTERM);
    assert_int_equal(finish(&a, tv_now_ms() + 20000), 0);
    release(&a);
}

/* What a listener did with a fresh connection from 127.0.0.1 within 10 s:
 * 0 closed before sending a byte (refused at accept), 1 sent its handshake
 * message. */
static int raw_outcome(const tm2_netaddr *to)
{
    struct sockaddr_storage ss;
    assert_int_equal(tm2_netaddr_to_sockaddr(to, (struct sockaddr *)&ss, sizeof ss), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
    uint64_t deadline = tv_now_ms() + 10000;
    int got = -1;
    while (got < 0) {
        uint64_t now = tv_now_ms();
        assert_true(now < deadline);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(deadline - now)) <= 0)
            continue;
        char b[64];
        ssize_t n = recv(fd, b, sizeof b, 0);
        if (n > 0)
            got = 1;
        else if (n == 0 || errno != EINTR)
            got = 0;
    }
    close(fd);
    return got;
}

/* tm2p2p ban: add, list and remove on a stopped node's home; a node
 * started on it refuses the banned address at accept, and while it runs
 * the command leaves the file alone. */
static void ban_command(void **state)
{
    home *h = *state;
    const char *hd = path_in(h, "ban");
    proc p;
    assert_int_equal(RUN(&p, "ban", "list", "--home", hd), 0);
    assert_non_null(strstr(p.err, "no bans"));
    release(&p);
    assert_int_equal(RUN(&p, "ban", "add", "--home", hd, "127.0.0.1", "--reason", "test ban"), 0);
    assert_non_null(strstr(p.err, "banned 127.0.0.1 until 20"));
    release(&p);
    assert_int_equal(RUN(&p, "ban", "add", "--home", hd, "g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y",
                         "--duration", "forever"),
                     0);
    release(&p);
    assert_int_equal(RUN(&p, "ban", "list", "--home", hd), 0);
    assert_non_null(strstr(p.out, "127.0.0.1"));
    assert_non_null(strstr(p.out, "test ban"));
    assert_non_null(strstr(p.out, "g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y"));
    assert_non_null(strstr(p.out, "until never"));
    release(&p);
    assert_true(file_exists(path_in(h, "ban/data/bans.json")));

    START(&p, "node", "--home", hd, "--laddr", "127.0.0.1:0");
    const char *line = wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    char addr[256];
    snprintf(addr, sizeof addr, "%s", strchr(field(line, "addr"), '@') + 1);
    line = wait_line(&p, "msg=\"bans loaded\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_non_null(strstr(line, "count=2"));
    tm2_netaddr to;
    assert_int_equal(tm2_netaddr_parse(addr, TM2_NETADDR_NO_ID, &to), 0);
    assert_int_equal(raw_outcome(&to), 0);
    line = wait_line(&p, "refused before the handshake", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_non_null(strstr(line, "by_reason=banned:1"));
    /* The running node owns the file. */
    proc q;
    assert_int_equal(RUN(&q, "ban", "remove", "--home", hd, "127.0.0.1"), 1);
    assert_non_null(strstr(q.err, "in use by a running node"));
    release(&q);
    assert_int_equal(RUN(&q, "ban", "list", "--home", hd), 0);
    assert_non_null(strstr(q.out, "127.0.0.1"));
    release(&q);
    kill(p.pid, SIGTERM);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    release(&p);

    assert_int_equal(RUN(&p, "ban", "remove", "--home", hd, "127.0.0.1"), 0);
    release(&p);
    assert_int_equal(RUN(&p, "ban", "list", "--home", hd), 0);
    assert_null(strstr(p.out, "127.0.0.1"));
    assert_non_null(strstr(p.out, "g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y"));
    release(&p);
    /* Unbanned, the address gets a handshake. */
    START(&p, "node", "--home", hd, "--laddr", "127.0.0.1:0", "--ban-duration", "10m");
    line = wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    snprintf(addr, sizeof addr, "%s", strchr(field(line, "addr"), '@') + 1);
    assert_int_equal(tm2_netaddr_parse(addr, TM2_NETADDR_NO_ID, &to), 0);
    assert_int_equal(raw_outcome(&to), 1);
    kill(p.pid, SIGTERM);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    release(&p);

    USAGE_ERROR(h, "a TARGET", "ban", "add", "--home", hd);
    USAGE_ERROR(h, "neither an IP address nor a peer ID", "ban", "add", "--home", hd, "host.example");
    USAGE_ERROR(h, "--duration: 'soon'", "ban", "add", "--home", hd, "1.2.3.4", "--duration", "soon");
    USAGE_ERROR(h, "unknown command 'frob'", "ban", "frob");
    USAGE_ERROR(h, "--home DIR is required", "ban", "list");
    USAGE_ERROR(h, "--ban-duration: 'x'", "node", "--home", hd, "--ban-duration", "x");
    USAGE_ERROR(h, "--unconditional-peer-ids: 'nope'", "node", "--home", hd,
                "--unconditional-peer-ids", "nope");
    USAGE_ERROR(h, "--accept-ip-rate: 'fast'", "node", "--home", hd, "--accept-ip-rate", "fast");
    USAGE_ERROR(h, "--evict-inbound: 'maybe'", "node", "--home", hd, "--evict-inbound=maybe");
    USAGE_ERROR(h, "--evict-protect-oldest-pct: '101' is not a whole number from 0 to 100", "node",
                "--home", hd, "--evict-protect-oldest-pct", "101");
    USAGE_ERROR(h, "--evict-protect-groups: 'all'", "node", "--home", hd, "--evict-protect-groups", "all");
    USAGE_ERROR(h, "p2p.accept_ip_burst (at least 1", "node", "--home", hd, "--accept-ip-burst", "0");
}

/* A node with a different chain ID is rejected, and the rejection logged. */
static void rejection_logged(void **state)
{
    home *h = *state;
    proc a, b;
    START(&a, "node", "--home", path_in(h, "ra"), "--laddr", "127.0.0.1:0", "--chain-id", "one");
    const char *line = wait_line(&a, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    char a_addr[256];
    snprintf(a_addr, sizeof a_addr, "%s", field(line, "addr"));
    START(&b, "node", "--home", path_in(h, "rb"), "--laddr", "127.0.0.1:0", "--chain-id", "two",
          "--persistent-peers", a_addr);
    line = wait_line(&b, "msg=\"dial failed\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_non_null(strstr(line, "reason="));
    assert_non_null(strstr(line, a_addr));
    wait_line(&a, "msg=\"peer rejected\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    kill(a.pid, SIGTERM);
    kill(b.pid, SIGTERM);
    assert_int_equal(finish(&a, tv_now_ms() + 20000), 0);
    assert_int_equal(finish(&b, tv_now_ms() + 20000), 0);
    release(&a);
    release(&b);
}

/* The node names itself in its NodeInfo (Software "tm2p2p", Version the
 * release and commit) and keeps the protocol's version set, so a library
 * switch with the defaults connects to it. */
static void node_info_names_the_program(void **state)
{
    home *h = *state;
    proc p;
    START(&p, "node", "--home", path_in(h, "v"), "--laddr", "127.0.0.1:0", "--chain-id", "cli-test");
    const char *line = wait_line(&p, "msg=\"starting tm2p2p\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    tm2_build_info bi;
    tm2_build_info_get(&bi);
    assert_string_equal(field(line, "version"), bi.version);
    assert_string_equal(field(line, "commit"), bi.commit);
    line = wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    tm2_netaddr na;
    assert_int_equal(tm2_netaddr_parse(field(line, "addr"), 0, &na), 0);

    tm2_channel_desc ch = {.id = TM2_DISCOVERY_CHANNEL, .priority = 1, .send_queue_capacity = 16,
                           .recv_message_capacity = 1u << 16};
    tm2_reactor r = {.name = "quiet-pex", .channels = &ch, .n_channels = 1};
    tm2_switch_config c;
    tm2_switch_config_default(&c);
    uint8_t seed[32] = {7};
    tm2_node_key_from_seed(&c.key, seed);
    c.network = "cli-test";
    c.moniker = "probe";
    c.reactors = &r;
    c.n_reactors = 1;
    tm2_switch *sw = NULL;
    assert_int_equal(tm2_switch_new(&c, &sw), 0);
    assert_int_equal(tm2_switch_start(sw), 0);
    assert_int_equal(tm2_switch_dial_peers(sw, &na, 1), 1);
    tm2_peer *peer = NULL;
    for (uint64_t end = tv_now_ms() + START_DEADLINE_MS; !peer;) {
        if (tm2_switch_peers(sw, &peer, 1) == 0) {
            if (tv_now_ms() > end)
                fail_msg("no connection to the node; its stderr:\n%s", p.err);
            pump(&p, 20);
        }
    }
    const tm2_node_info *ni = tm2_peer_node_info(peer);
    assert_string_equal(ni->software, "tm2p2p");
    char want[128];
    size_t hex = strspn(bi.commit, "0123456789abcdef");
    if (hex == 40)
        snprintf(want, sizeof want, "v%s+%.12s%s", bi.version, bi.commit,
                 strstr(bi.commit, "-dirty") ? ".dirty" : "");
    else
        snprintf(want, sizeof want, "v%s", bi.version);
    assert_string_equal(ni->version, want);
    const tm2_node_info *ours = tm2_switch_node_info(sw);
    assert_int_equal(ni->n_versions, ours->n_versions);
    for (size_t i = 0; i < ni->n_versions; i++) {
        assert_string_equal(ni->versions[i].name, ours->versions[i].name);
        assert_string_equal(ni->versions[i].version, ours->versions[i].version);
    }
    tm2_peer_unref(peer);
    tm2_switch_stop(sw);
    tm2_switch_free(sw);
    kill(p.pid, SIGTERM);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    release(&p);
}

/* The "Max open files" soft and hard limits of process pid. */
static void proc_nofile(pid_t pid, unsigned long *soft, unsigned long *hard)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "Max open files %lu %lu", soft, hard) == 2;
    fclose(f);
    assert_true(found);
}

static void open_file_limit(void **state)
{
    home *h = *state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 1024)
        skip();   /* the test lowers the limits below 1024 */
    proc p;
    unsigned long soft, hard;

    /* A soft limit below the hard one is raised to it. */
    tv_proc_start_ulimit(&p, "ulimit -Sn 128", PROGRAM,
                         (const char *const[]){"node", "--home", path_in(h, "f1"), "--laddr",
                                               "127.0.0.1:0", "--log-level", "debug", NULL});
    const char *line = wait_line(&p, "msg=\"open-file limit raised\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    assert_string_equal(field(line, "from"), "128");
    wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    proc_nofile(p.pid, &soft, &hard);
    assert_true(soft == hard && soft >= 1024);
    /* the defaults fit: no warning */
    assert_null(strstr(p.err, "open-file limit below"));
    assert_int_equal(kill(p.pid, SIGTERM), 0);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    release(&p);

    /* A hard limit below what the configuration may use is named in a
     * warning; the node runs on. 1000 inbound + 64 handshakes + 10
     * outbound + the reserve. */
    tv_proc_start_ulimit(&p, "ulimit -Sn 100 && ulimit -Hn 200", PROGRAM,
                         (const char *const[]){"node", "--home", path_in(h, "f2"), "--laddr",
                                               "127.0.0.1:0", "--max-inbound", "1000", NULL});
    line = wait_line(&p, "msg=\"open-file limit below what the configuration may use\"", NULL,
                     tv_now_ms() + START_DEADLINE_MS);
    assert_string_equal(field(line, "limit"), "200");
    char need[16];
    snprintf(need, sizeof need, "%u", 1000u + TM2_DEFAULT_MAX_PENDING_INBOUND + TM2_DEFAULT_MAX_OUTBOUND + CLI_FD_RESERVE);
    assert_string_equal(field(line, "need"), need);
    wait_line(&p, "msg=\"node listening\"", NULL, tv_now_ms() + START_DEADLINE_MS);
    proc_nofile(p.pid, &soft, &hard);
    assert_true(soft == 200 && hard == 200);
    assert_int_equal(kill(p.pid, SIGTERM), 0);
    assert_int_equal(finish(&p, tv_now_ms() + 20000), 0);
    release(&p);
}

static void testnet_smoke(void **state)
{
    (void)state;
    proc p;
    int st = RUN(&p, "testnet", "--nodes", "10", "--seeds", "1", "--duration", "8", "--outbound", "3",
                 "--pex-interval", "300", "--gossip-interval", "100");
    if (st != 0 || !strstr(p.out, "result: converged"))
        fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", st, p.out, p.err);
    assert_non_null(strstr(p.out, "graph connected after"));
    assert_non_null(strstr(p.out, "gossip latency"));
    assert_non_null(strstr(p.out, "0x70 gossip"));
    assert_non_null(strstr(p.out, "0x50 pex"));
    /* not a terminal: one progress line per second */
    assert_non_null(strstr(p.out, "peers min/med/max"));
    release(&p);
}

static void testnet_processes_kill_one(void **state)
{
    home *h = *state;
    proc p;
    int st = RUN(&p, "testnet", "--processes", "--kill-one", "--nodes", "6", "--seeds", "1", "--duration",
                 "12", "--outbound", "2", "--pex-interval", "300", "--gossip-interval", "100",
                 "--restart-delay", "500", "--base-dir", path_in(h, "tn"), "--keep");
    if (st != 0 || !strstr(p.out, "result: converged"))
        fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", st, p.out, p.err);
    assert_non_null(strstr(p.out, "redialled by its persistent peer at"));
    assert_non_null(strstr(p.err, "node process restarted"));
    /* each node had a home with its own config and log */
    assert_true(file_exists(path_in(h, "tn/n00/config/config.toml")));
    assert_true(file_exists(path_in(h, "tn/n00/node.log")));
    assert_true(file_exists(path_in(h, "tn/seed00/config/addrbook.json")));
    release(&p);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(start_sigterm_exit0, setup, teardown),
        cmocka_unit_test_setup_teardown(json_logs, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_flags_exit2, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_config_exit2, setup, teardown),
        cmocka_unit_test_setup_teardown(config_file_is_read, setup, teardown),
        cmocka_unit_test_setup_teardown(eviction_protection_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(help_texts, setup, teardown),
        cmocka_unit_test_setup_teardown(two_nodes_persistent, setup, teardown),
        cmocka_unit_test_setup_teardown(prometheus_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(rejection_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(rejections_summarised, setup, teardown),
        cmocka_unit_test_setup_teardown(ban_command, setup, teardown),
        cmocka_unit_test_setup_teardown(node_info_names_the_program, setup, teardown),
        cmocka_unit_test_setup_teardown(open_file_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(testnet_smoke, setup, teardown),
        cmocka_unit_test_setup_teardown(testnet_processes_kill_one, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
