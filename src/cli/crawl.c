/* tm2p2p crawl: map a TM2 network into SQLite; tm2p2p crawl report: read
 * the map. The run loop here (flags, database, engine, signals, progress
 * line) is shared with tm2p2p seed (seed.c). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/file.h"
#include "cli/crawl_cli.h"
#include "cli/crawl_metrics.h"
#include "cli/fdlimit.h"
#include "cli/http.h"
#include "cli/gossip.h"
#include "crawl/allow.h"
#include "crawl/engine.h"
#include "crawl/report.h"
#include "crawl/store.h"

static const char crawl_usage[] =
    "usage: tm2p2p crawl --home DIR --seeds ID@HOST:PORT,... [options]\n"
    "       tm2p2p crawl report --home DIR [--json FILE] [--csv FILE] [--dot FILE]\n"
    "\n"
    "Maps a TM2 network: asks the seeds for addresses (discovery request and\n"
    "response), handshakes every address found, and records each node's NodeInfo,\n"
    "reachability, handshake latency, first and last seen, and who advertised whom\n"
    "in DIR/crawl.db (SQLite). Each connection is short: handshake, one request,\n"
    "hang up. Only addresses the --allow policy permits are dialled; by default\n"
    "that is public unicast addresses only. Runs --rounds rounds (0: until\n"
    "SIGINT/SIGTERM), one every --interval.\n"
    "\n"
    "  --home DIR              where crawl.db lives (created if missing; required)\n"
    "  --db FILE               the database [DIR/crawl.db]\n"
    "  --seeds LIST            nodes to start from, ID@HOST:PORT,... (host names are\n"
    "                          resolved once, at start)\n"
    "  --chain-id ID           network to crawl [the first node's]\n"
    "  --allow LIST            CIDR blocks that may be dialled, and/or 'public'\n"
    "                          [public]; e.g. --allow 127.0.0.0/8 or\n"
    "                          --allow public,10.0.0.0/8\n"
    "  --rounds N              rounds to run, 0 for until stopped [1]\n"
    "  --interval DUR          time between round starts [1m]\n"
    "  --gone-after DUR        unreachable this long: marked gone [24h]\n"
    "  --concurrency N         probes in flight [16]\n"
    "  --per-host N            probes in flight per IP [2]\n"
    "  --host-gap DUR          between probe starts to one IP [250ms]\n"
    "  --dial-timeout DUR      TCP connect [3s]\n"
    "  --handshake-timeout DUR secret connection, then NodeInfo, each [3s]\n"
    "  --ask-timeout DUR       wait for the discovery response [3s]\n"
    "  --max-addrs N           addresses kept [100000]\n"
    "  --moniker NAME          the name our NodeInfo carries [tm2p2p-crawler]\n"
    "  --progress              progress line on stderr even when it is not a terminal\n"
    "  --prometheus-listen-addr ADDR  serve /metrics there (host:port; ':port' is 127.0.0.1)\n"
    "  --log-level LEVEL       error, warn, info or debug [info]\n"
    "  --log-format FORMAT     logfmt or json [logfmt]\n"
    "\n"
    "Durations: a number with ms, s, m or h (a bare number is milliseconds).\n"
    "The crawler's key is new for every run; its NodeInfo advertises no address.\n"
    "\n"
    "report: prints a summary (nodes reachable and not, by network and by version,\n"
    "the largest connected component) and exports the map:\n"
    "  --json FILE, --csv FILE, --dot FILE   ('-' for standard output)\n"
    "  --all-edges             every advertised-by edge ever seen, not only each\n"
    "                          node's latest answer\n"
    "  --quiet                 no summary\n";

/* ---- flags ------------------------------------------------------------------------ */

typedef struct flag_def {
    const char *name;
    size_t off;
    const char *implicit;   /* value when given without one (boolean flags) */
} flag_def;

#define F(n, field, imp) {n, offsetof(cli_crawl_flags, field), imp}
static const flag_def flag_defs[] = {
    F("--home", home, NULL),
    F("--db", db, NULL),
    F("--seeds", seeds, NULL),
    F("--chain-id", chain_id, NULL),
    F("--allow", allow, NULL),
    F("--rounds", rounds, NULL),
    F("--interval", interval, NULL),
    F("--gone-after", gone_after, NULL),
    F("--concurrency", concurrency, NULL),
    F("--per-host", per_host, NULL),
    F("--host-gap", host_gap, NULL),
    F("--dial-timeout", dial_timeout, NULL),
    F("--handshake-timeout", hs_timeout, NULL),
    F("--ask-timeout", ask_timeout, NULL),
    F("--max-addrs", max_addrs, NULL),
    F("--moniker", moniker, NULL),
    F("--progress", progress, "true"),
    F("--log-level", log_level, NULL),
    F("--log-format", log_format, NULL),
    F("--prometheus-listen-addr", prom_addr, NULL),
    /* seed */
    F("--laddr", laddr, NULL),
    F("--external-address", external, NULL),
    F("--recheck", recheck, NULL),
    F("--fresh", fresh, NULL),
    F("--serve-timeout", serve_timeout, NULL),
    F("--linger", linger, NULL),
    F("--max-sessions", max_sessions, NULL),
    /* report */
    F("--json", json, NULL),
    F("--csv", csv, NULL),
    F("--dot", dot, NULL),
    F("--all-edges", all_edges, "true"),
    F("--quiet", quiet, "true"),
};
#undef F

int cli_crawl_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tm2p2p %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(tm2p2p %s --help lists the options)\n", cmd);
    va_end(ap);
    return 2;
}

int cli_crawl_parse_flags(const char *cmd, int argc, char **argv, const char *const *allowed,
                          cli_crawl_flags *f)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            f->help = true;
            continue;
        }
        const flag_def *d = NULL;
        const char *val = NULL;
        for (size_t k = 0; allowed[k] && !d; k++) {
            size_t nl = strlen(allowed[k]);
            if (strncmp(a, allowed[k], nl) || (a[nl] != '\0' && a[nl] != '='))
                continue;
            for (size_t j = 0; j < sizeof flag_defs / sizeof flag_defs[0]; j++)
                if (!strcmp(flag_defs[j].name, allowed[k]))
                    d = &flag_defs[j];
            if (d && a[nl] == '=')
                val = a + nl + 1;
        }
        if (!d)
            return cli_crawl_usage_error(cmd, "unknown %s '%s'", a[0] == '-' ? "option" : "argument", a);
        if (!val) {
            if (d->implicit)
                val = d->implicit;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                return cli_crawl_usage_error(cmd, "%s needs a value", d->name);
        }
        const char **slot = (const char **)(void *)((char *)f + d->off);
        if (*slot)
            return cli_crawl_usage_error(cmd, "%s given twice", d->name);
        *slot = val;
    }
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_duration_ms(const char *s, uint64_t *out)
{
    if (!s || !*s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    uint64_t mul;
    if (!*end || !strcmp(end, "ms"))
        mul = 1;
    else if (!strcmp(end, "s"))
        mul = 1000;
    else if (!strcmp(end, "m"))
        mul = 60000;
    else if (!strcmp(end, "h"))
        mul = 3600000;
    else
        return -1;
    if (v > UINT64_MAX / 4 / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static int flag_count(const char *cmd, const char *name, const char *v, uint64_t min, uint64_t max,
                      uint64_t *out)
{
    if (!v)
        return 0;
    uint64_t x;
    if (parse_u64(v, &x) || x < min || x > max)
        return cli_crawl_usage_error(cmd, "%s: '%s' is not a number from %" PRIu64 " to %" PRIu64,
                                     name, v, min, max);
    *out = x;
    return 0;
}

static int flag_dur(const char *cmd, const char *name, const char *v, uint64_t min, uint64_t max,
                    uint64_t *out)
{
    if (!v)
        return 0;
    uint64_t x;
    if (cli_parse_duration_ms(v, &x) || x < min || x > max)
        return cli_crawl_usage_error(cmd, "%s: '%s' is not a duration from %" PRIu64 " ms to %" PRIu64
                                     " ms (e.g. 500ms, 30s, 24h)",
                                     name, v, min, max);
    *out = x;
    return 0;
}

/* ---- settings -------------------------------------------------------------------------- */

void cli_crawl_settings_free(cli_crawl_settings *s)
{
    free(s->seeds);
    tm2_node_key_wipe(&s->cfg.probe_key);
    tm2_node_key_wipe(&s->cfg.serve_key);
}

static void join_path(char *out, size_t cap, const char *dir, const char *rel)
{
    if (rel[0] == '/')
        snprintf(out, cap, "%s", rel);
    else
        snprintf(out, cap, "%s/%s", dir, rel);
}

/* Resolves the seed list ("ID@HOST:PORT,..."); host names are looked up
 * here, once, on the calling thread. */
static int parse_seeds(const char *cmd, const char *list, cli_crawl_settings *s)
{
    size_t cap = 8;
    s->seeds = calloc(cap, sizeof *s->seeds);
    if (!s->seeds)
        return 1;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char item[512];
        while (n && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n >= sizeof item)
            return cli_crawl_usage_error(cmd, "--seeds: an entry is too long");
        memcpy(item, p, n);
        item[n] = '\0';
        if (n) {
            tm2_netaddr a;
            int r = tm2_netaddr_parse(item, TM2_NETADDR_RESOLVE, &a);
            if (r)
                return cli_crawl_usage_error(cmd, "--seeds: '%s': %s", item, tm2_strerror(r));
            if (!a.id.s[0])
                return cli_crawl_usage_error(cmd, "--seeds: '%s' has no ID", item);
            if (s->n_seeds == cap) {
                cap *= 2;
                tm2_netaddr *v = realloc(s->seeds, cap * sizeof *v);
                if (!v)
                    return 1;
                s->seeds = v;
            }
            s->seeds[s->n_seeds++] = a;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

int cli_crawl_resolve(const char *cmd, const cli_crawl_flags *f, bool seed, cli_crawl_settings *s)
{
    memset(s, 0, sizeof *s);
    crawl_config *c = &s->cfg;
    if (!f->home || !f->home[0])
        return cli_crawl_usage_error(cmd, "--home is required");
    tm2_log_level lvl = TM2_LOG_INFO;
    cli_log_format fmt = CLI_LOG_LOGFMT;
    if (f->log_level && cli_log_parse_level(f->log_level, &lvl))
        return cli_crawl_usage_error(cmd, "--log-level: '%s' is not error, warn, info or debug", f->log_level);
    if (f->log_format && cli_log_parse_format(f->log_format, &fmt))
        return cli_crawl_usage_error(cmd, "--log-format: '%s' is not logfmt or json", f->log_format);
    cli_log_init(&s->log, lvl, fmt, NULL);
    join_path(s->db_path, sizeof s->db_path, f->home, f->db ? f->db : "crawl.db");
    snprintf(s->home, sizeof s->home, "%s", f->home);

    char why[256];
    if (f->allow) {
        if (crawl_allow_parse(f->allow, &c->allow, why, sizeof why))
            return cli_crawl_usage_error(cmd, "--allow: %s", why);
    } else {
        crawl_allow_default(&c->allow);
    }
    if (f->seeds) {
        int r = parse_seeds(cmd, f->seeds, s);
        if (r)
            return r;
    }
    c->seeds = s->seeds;
    c->n_seeds = s->n_seeds;
    if (f->chain_id && (!f->chain_id[0] || strlen(f->chain_id) >= 64))
        return cli_crawl_usage_error(cmd, "--chain-id: must be 1 to 63 bytes");
    c->network = f->chain_id;
    if (f->moniker && !f->moniker[0])
        return cli_crawl_usage_error(cmd, "--moniker: must not be empty");
    c->moniker = f->moniker ? f->moniker : seed ? "tm2p2p-seed" : "tm2p2p-crawler";

    uint64_t v;
    v = seed ? 0 : 1;
    if (flag_count(cmd, "--rounds", f->rounds, 0, UINT32_MAX, &v))
        return 2;
    c->rounds = (uint32_t)v;
    v = seed ? 120000 : 60000;
    const char *interval = seed ? f->recheck : f->interval;
    if (flag_dur(cmd, seed ? "--recheck" : "--interval", interval, 10, 7ull * 24 * 3600 * 1000, &v))
        return 2;
    c->interval_ms = (uint32_t)v;
    v = 24ull * 3600 * 1000;
    if (flag_dur(cmd, "--gone-after", f->gone_after, 1, 365ull * 24 * 3600 * 1000, &v))
        return 2;
    c->gone_after_ms = v;
    v = 16;
    if (flag_count(cmd, "--concurrency", f->concurrency, 1, 4096, &v))
        return 2;
    c->max_inflight = (uint32_t)v;
    v = 2;
    if (flag_count(cmd, "--per-host", f->per_host, 1, 4096, &v))
        return 2;
    c->per_host = (uint32_t)v;
    v = 250;
    if (flag_dur(cmd, "--host-gap", f->host_gap, 0, 3600000, &v))
        return 2;
    c->host_gap_ms = (uint32_t)v;
    v = 3000;
    if (flag_dur(cmd, "--dial-timeout", f->dial_timeout, 1, 600000, &v))
        return 2;
    c->dial_timeout_ms = (uint32_t)v;
    v = 3000;
    if (flag_dur(cmd, "--handshake-timeout", f->hs_timeout, 1, 600000, &v))
        return 2;
    c->handshake_timeout_ms = (uint32_t)v;
    v = 3000;
    if (flag_dur(cmd, "--ask-timeout", f->ask_timeout, 1, 600000, &v))
        return 2;
    c->ask_timeout_ms = (uint32_t)v;
    v = 100000;
    if (flag_count(cmd, "--max-addrs", f->max_addrs, 1, 10000000, &v))
        return 2;
    c->max_addrs = (size_t)v;
    s->progress = f->progress != NULL || isatty(2);
    if (f->prom_addr && cli_http_addr_check(f->prom_addr))
        return cli_crawl_usage_error(cmd, "--prometheus-listen-addr: want host:port, [ip6]:port or :port (got '%s')",
                                     f->prom_addr);
    s->prom_addr = f->prom_addr;

    if (seed) {
        c->listen_addr = f->laddr ? f->laddr : "tcp://0.0.0.0:26656";
        c->external_addr = f->external;
        v = 3ull * c->interval_ms;
        if (flag_dur(cmd, "--fresh", f->fresh, 1, 30ull * 24 * 3600 * 1000, &v))
            return 2;
        c->fresh_ms = v;
        v = 10000;
        if (flag_dur(cmd, "--serve-timeout", f->serve_timeout, 1, 600000, &v))
            return 2;
        c->serve_timeout_ms = (uint32_t)v;
        v = 200;
        if (flag_dur(cmd, "--linger", f->linger, 1, 60000, &v))
            return 2;
        c->linger_ms = (uint32_t)v;
        v = 256;
        if (flag_count(cmd, "--max-sessions", f->max_sessions, 1, 100000, &v))
            return 2;
        c->max_sessions = (uint32_t)v;
        if (!f->chain_id)
            return cli_crawl_usage_error(cmd, "--chain-id is required (the seed must tell nodes its network)");
    } else if (!s->n_seeds) {
        return cli_crawl_usage_error(cmd, "--seeds is required (where the crawl starts)");
    }
    return 0;
}

/* ---- the run ---------------------------------------------------------------------------- */


static int load_row(const crawl_addr_row *row, void *user)
{
    int r = crawl_engine_add_row(user, row);
    return r == TM2_ENOMEM ? r : 0;
}

static void progress_line(const cli_crawl_settings *s, crawl_engine *e, bool tty, bool final)
{
    crawl_progress p;
    crawl_engine_progress(e, &p);
    char line[400];
    int n = snprintf(line, sizeof line,
                     "%sround %" PRIu32 "%s: probed %zu, verified %zu, in flight %zu, queued %zu | "
                     "addresses %zu, reachable %zu, refused %zu, liars %zu",
                     tty ? "\r\033[K" : "", p.round, p.round_active ? "" : " (done)", p.round_probed,
                     p.round_reachable, p.inflight, p.queued, p.known, p.reachable, p.refused,
                     p.liars);
    if (s->cfg.listen_addr && n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, " | served %" PRIu64 ", answered %" PRIu64,
                      p.sessions, p.answers);
    if (n > 0 && (size_t)n < sizeof line - 1) {
        if (!tty || final)
            line[n++] = '\n';
        ssize_t w = write(2, line, (size_t)n);
        (void)w;
    }
}

int cli_crawl_run(const char *cmd, cli_crawl_settings *s, bool seed)
{
    cli_log *lg = &s->log;
    crawl_config *c = &s->cfg;
    (void)cmd;
    if (tm2__mkdirs(s->home, 0700)) {
        cli_log_kv(lg, TM2_LOG_ERROR, "cannot create the home directory", "dir", s->home, "reason",
                   strerror(errno), (const char *)NULL);
        return 1;
    }
    if (tm2_node_key_generate(&c->probe_key) != 0) {
        cli_log_kv(lg, TM2_LOG_ERROR, "no randomness for a key", (const char *)NULL);
        return 1;
    }
    c->log = cli_log_switch;
    c->log_user = lg;
    c->log_level = lg->level;

    /* Signals go to a descriptor; blocked before any thread exists. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    int sfd = -1;
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0 || (sfd = signalfd(-1, &mask, SFD_CLOEXEC)) < 0) {
        cli_log_kv(lg, TM2_LOG_ERROR, "cannot set up signal handling", "reason", strerror(errno),
                   (const char *)NULL);
        return 1;
    }

    char err[512];
    crawl_store *st = NULL;
    crawl_engine *e = NULL;
    int status = 1;
    if (crawl_store_open(s->db_path, cli_log_switch, lg, lg->level, &st, err, sizeof err)) {
        cli_log_kv(lg, TM2_LOG_ERROR, "cannot open the crawl database", "file", s->db_path, "reason",
                   err, (const char *)NULL);
        goto out;
    }
    c->store = st;
    if (crawl_engine_new(c, &e, err, sizeof err)) {
        cli_log_kv(lg, TM2_LOG_ERROR, "cannot create the crawler", "reason", err, (const char *)NULL);
        goto out;
    }
    cli_fd_limit_ensure(lg, crawl_engine_max_conns(e));
    if (crawl_store_load_addrs(st, load_row, e)) {
        cli_log_kv(lg, TM2_LOG_ERROR, "cannot read the crawl database", "file", s->db_path,
                   (const char *)NULL);
        goto out;
    }
    if (crawl_store_start(st, seed ? "seed" : "crawl", c->network ? c->network : "")) {
        cli_log_kv(lg, TM2_LOG_ERROR, "cannot write the crawl database", "file", s->db_path,
                   (const char *)NULL);
        goto out;
    }
    char allow[512] = "";
    crawl_allow_format(&c->allow, allow, sizeof allow);
    if (crawl_engine_start(e, err, sizeof err)) {
        cli_log_kv(lg, TM2_LOG_ERROR, seed ? "cannot start the seed" : "cannot start the crawler",
                   "reason", err, (const char *)NULL);
        goto out;
    }
    char rounds[16], seeds[16];
    snprintf(rounds, sizeof rounds, "%" PRIu32, c->rounds);
    snprintf(seeds, sizeof seeds, "%zu", c->n_seeds);
    if (seed) {
        tm2_netaddr la;
        char b[TM2_NETADDR_STRLEN + 1] = "";
        if (crawl_engine_listen_addr(e, &la) == 0)
            tm2_netaddr_format(&la, b, sizeof b);
        cli_log_kv(lg, TM2_LOG_INFO, "seed running", "id", la.id.s, "addr", b, "network", c->network,
                   "allow", allow, "db", s->db_path, (const char *)NULL);
        printf("%s\n", b);
        fflush(stdout);
    } else {
        cli_log_kv(lg, TM2_LOG_INFO, "crawl running", "network", c->network ? c->network : "(learn)",
                   "seeds", seeds, "rounds", rounds, "allow", allow, "db", s->db_path,
                   (const char *)NULL);
    }

    cli_crawl_metrics_src msrc = {e, seed};
    cli_http *http = NULL;
    if (s->prom_addr) {
        cli_http_config hc = {.listen_addr = s->prom_addr, .render = cli_crawl_metrics_render,
                              .render_user = &msrc, .log = lg};
        if (cli_http_start(&hc, &http, err, sizeof err) < 0) {
            cli_log_kv(lg, TM2_LOG_ERROR, "cannot serve metrics", "reason", err, (const char *)NULL);
            crawl_engine_stop(e);
            goto out;
        }
        cli_log_kv(lg, TM2_LOG_INFO, "http endpoints listening", "addr", cli_http_addr(http), "paths",
                   "/metrics", (const char *)NULL);
    }

    bool tty = isatty(2);
    status = 0;
    for (;;) {
        struct pollfd pf[2] = {{.fd = sfd, .events = POLLIN},
                               {.fd = crawl_engine_done_fd(e), .events = POLLIN}};
        int pr = poll(pf, 2, s->progress ? (tty ? 500 : 1000) : -1);
        if (pr < 0 && errno != EINTR) {
            cli_log_kv(lg, TM2_LOG_ERROR, "poll failed", "reason", strerror(errno), (const char *)NULL);
            status = 1;
            break;
        }
        if (pr > 0 && (pf[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (s->progress)
                    progress_line(s, e, tty, true);
                cli_log_kv(lg, TM2_LOG_INFO, "shutting down", "signal",
                           si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM", (const char *)NULL);
                break;
            }
        }
        if (pr > 0 && (pf[1].revents & POLLIN)) {
            crawl_progress p;
            crawl_engine_progress(e, &p);
            if (s->progress)
                progress_line(s, e, tty, true);
            if (p.error)
                status = 1;
            break;
        }
        if (s->progress)
            progress_line(s, e, tty, false);
    }
    cli_http_stop(http);
    crawl_engine_stop(e);
    crawl_progress p;
    crawl_engine_progress(e, &p);
    crawl_store_sync(st);
    crawl_store_stats ss;
    crawl_store_get_stats(st, &ss);
    char a[24], b2[24], r2[24], d[24];
    snprintf(a, sizeof a, "%zu", p.known);
    snprintf(b2, sizeof b2, "%zu", p.reachable);
    snprintf(r2, sizeof r2, "%" PRIu32, p.rounds_done);
    snprintf(d, sizeof d, "%" PRIu64, ss.errors + ss.dropped);
    cli_log_kv(lg, TM2_LOG_INFO, "stopped", "rounds", r2, "addresses", a, "reachable", b2,
               "db_errors", d, (const char *)NULL);
    if (ss.errors || ss.dropped)
        status = 1;
out:
    crawl_engine_free(e);
    crawl_store_close(st);
    if (sfd >= 0)
        close(sfd);
    return status;
}

/* ---- commands ------------------------------------------------------------------------------ */

static int run_report(int argc, char **argv)
{
    static const char *const allowed[] = {"--home", "--db", "--json", "--csv", "--dot",
                                          "--all-edges", "--quiet", NULL};
    cli_crawl_flags f;
    memset(&f, 0, sizeof f);
    int r = cli_crawl_parse_flags("crawl report", argc, argv, allowed, &f);
    if (r)
        return r;
    if (f.help) {
        fputs(crawl_usage, stdout);
        return 0;
    }
    if (!f.home || !f.home[0])
        return cli_crawl_usage_error("crawl report", "--home is required");
    char db[4200];
    join_path(db, sizeof db, f.home, f.db ? f.db : "crawl.db");
    struct stat stt;
    if (stat(db, &stt) != 0) {
        fprintf(stderr, "tm2p2p crawl report: %s: %s\n", db, strerror(errno));
        return 1;
    }
    crawl_report_opts o = {.json_path = f.json, .csv_path = f.csv, .dot_path = f.dot,
                           .all_edges = f.all_edges != NULL};
    bool to_stdout = (f.json && !strcmp(f.json, "-")) || (f.csv && !strcmp(f.csv, "-")) ||
                     (f.dot && !strcmp(f.dot, "-"));
    char err[512];
    r = crawl_report(db, &o, f.quiet || to_stdout ? NULL : stdout, err, sizeof err);
    if (r) {
        fprintf(stderr, "tm2p2p crawl report: %s\n", err);
        return 1;
    }
    return 0;
}

int cli_run_crawl(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "report"))
        return run_report(argc - 2, argv + 2);
    static const char *const allowed[] = {
        "--home", "--db", "--seeds", "--chain-id", "--allow", "--rounds", "--interval",
        "--gone-after", "--concurrency", "--per-host", "--host-gap", "--dial-timeout",
        "--handshake-timeout", "--ask-timeout", "--max-addrs", "--moniker", "--progress",
        "--log-level", "--log-format", "--prometheus-listen-addr", NULL};
    cli_crawl_flags f;
    memset(&f, 0, sizeof f);
    int r = cli_crawl_parse_flags("crawl", argc - 1, argv + 1, allowed, &f);
    if (r)
        return r;
    if (f.help) {
        fputs(crawl_usage, stdout);
        return 0;
    }
    cli_crawl_settings *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    int status = cli_crawl_resolve("crawl", &f, false, s);
    if (!status)
        status = cli_crawl_run("crawl", s, false);
    cli_crawl_settings_free(s);
    free(s);
    return status;
}
