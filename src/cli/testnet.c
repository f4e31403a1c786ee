/* tm2p2p testnet: a local network on loopback, measured while it forms.
 *
 * Seed nodes (seed mode) start first; every other node knows only the seeds
 * and must find the rest through peer exchange. All non-seed nodes run the
 * gossip reactor. The network is sampled several times a second: peers per
 * node, whether the non-seed nodes form one connected graph, how many reached
 * their outbound target, gossip delivered. In-process mode runs one switch per
 * node in this process; --processes runs each node as `tm2p2p node` with its
 * own home, reading the nodes' status files. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/fdlimit.h"
#include "cli/gossip.h"
#include "cli/log.h"
#include "tm2p2p/discovery.h"

#define MAX_NODES 512
/* Seed rounds every this many discovery intervals (the reference: 30 s
 * against 3 s); sooner, a seed in seed mode is redialled while the book
 * already offers peers, and its hang-ups churn the outbound slots. */
#define SEED_INTERVALS 10u

static const char testnet_usage[] =
    "usage: tm2p2p testnet [options]\n"
    "\n"
    "Starts a network of nodes on 127.0.0.1: seed nodes in seed mode, and nodes\n"
    "that know only the seeds and find each other through peer exchange. Every\n"
    "non-seed node floods small gossip messages. Shows one progress line while it\n"
    "runs (peers per node, whether the graph is connected, nodes at their outbound\n"
    "target, gossip delivered) and a summary at the end: time until the graph was\n"
    "connected and until every node reached its outbound target, gossip delivery\n"
    "ratio and latency, messages and bytes per channel.\n"
    "\n"
    "  --nodes N            nodes in all, seeds included [16]\n"
    "  --seeds N            seed nodes [1]\n"
    "  --duration S         seconds to run [20]\n"
    "  --outbound N         outbound peers each node aims for [4]\n"
    "  --max-inbound N      inbound limit of non-seed nodes [40]\n"
    "  --pex-interval MS    discovery tick [1000]\n"
    "  --gossip-interval MS each node originates a message this often [250]\n"
    "  --base-port P        listen on P, P+1, ... [any free port]\n"
    "  --processes          run each node as a 'tm2p2p node' process with its own home;\n"
    "                       a node process that dies is restarted after --restart-delay\n"
    "                       and its ring neighbour (a persistent peer) redials it\n"
    "  --kill-one           with --processes: kill one node a third of the way in\n"
    "  --restart-delay MS   [1000]\n"
    "  --base-dir DIR       homes of --processes nodes [a new directory under /tmp]\n"
    "  --keep               keep the homes (and node logs) after the run\n"
    "  --chain-id ID        [tm2p2p-testnet]\n"
    "  --log-level LEVEL    node logs on standard error (in --processes mode, in each\n"
    "                       home's node.log) [error; info with --processes]\n"
    "  --log-format FORMAT  logfmt or json [logfmt]\n"
    "\n"
    "Exit status: 0 when the network converged (graph connected and every node at\n"
    "its outbound target, and with --kill-one the killed node back and redialled)\n"
    "within the duration, 1 otherwise, 2 on a bad flag.\n";

typedef struct tn_opts {
    uint32_t nodes, seeds, duration_s, outbound, max_inbound, pex_interval_ms, gossip_interval_ms;
    uint32_t base_port, restart_delay_ms;
    bool processes, kill_one, keep;
    const char *base_dir, *chain_id, *log_level, *log_format;
} tn_opts;

typedef struct tn_node {
    uint32_t idx;
    bool seed;
    tm2_node_key key;
    tm2_id id;
    uint16_t port;
    char listen[TM2_NETADDR_STRLEN];
    char name[16];

    /* in-process */
    cli_node *rt;
    cli_log log;

    /* --processes */
    char home[600];
    char status_path[700];
    char log_path[700];
    pid_t pid;
    bool alive;
    uint64_t restart_at_ms;     /* 0: none scheduled */
    unsigned restarts;
    cJSON *last;                /* last status of the current process */
    cli_gossip_totals dead_gossip;   /* counters of earlier lives */
    cli_node_counters dead_ctr;
    tm2_discovery_stats dead_disc;

    /* latest sample */
    size_t n_peers;
    size_t out_nonseed;
    int *adj;                   /* peer node indices (-1: not one of ours) */
    size_t n_adj;
} tn_node;

typedef struct tn {
    tn_opts o;
    tn_node *n;
    uint32_t count;
    uint64_t t0_ms, end_ms, gossip_until_ms;
    uint32_t gossip_seconds;
    char exe[PATH_MAX];
    char base[512];
    bool made_base;
    bool tty;
    cli_log log;

    /* results */
    uint64_t t_connected, t_target;     /* ms after t0; 0: not yet */
    bool connected_now;
    size_t at_target_now;
    int killed;                          /* node index or -1 */
    uint64_t t_killed, t_back, t_redialled;
    bool pred_lost;
    uint64_t next_wire_poll;
    bool line_open;             /* a live progress line waits for its end (TTY) */
} tn;

/* Ends a pending live progress line before other output. */
static void end_line(tn *t)
{
    if (t->line_open) {
        fputs("\n", stdout);
        fflush(stdout);
        t->line_open = false;
    }
}

__attribute__((format(printf, 1, 2))) static int tn_usage_error(const char *fmt, ...)
{
    fputs("tm2p2p testnet: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see 'tm2p2p testnet --help')\n", stderr);
    return 2;
}

static int tn_u32(const char *flag, const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return tn_usage_error("%s needs a whole number from %u to %u", flag, min, max);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return tn_usage_error("%s: '%s' is not a whole number from %u to %u", flag, s, min, max);
    *out = (uint32_t)v;
    return 0;
}

static int parse_tn_flags(int argc, char **argv, tn_opts *o, bool *help)
{
    *o = (tn_opts){.nodes = 16, .seeds = 1, .duration_s = 20, .outbound = 4, .max_inbound = 40,
                   .pex_interval_ms = 1000, .gossip_interval_ms = 250, .restart_delay_ms = 1000,
                   .chain_id = "tm2p2p-testnet", .log_format = "logfmt"};
    *help = false;
    static const struct {
        const char *name;
        size_t off;
        uint32_t min, max;
    } nums[] = {
        {"--nodes", offsetof(tn_opts, nodes), 2, MAX_NODES},
        {"--seeds", offsetof(tn_opts, seeds), 1, MAX_NODES},
        {"--duration", offsetof(tn_opts, duration_s), 1, 86400},
        {"--outbound", offsetof(tn_opts, outbound), 1, 100},
        {"--max-inbound", offsetof(tn_opts, max_inbound), 1, 10000},
        {"--pex-interval", offsetof(tn_opts, pex_interval_ms), 10, 600000},
        {"--gossip-interval", offsetof(tn_opts, gossip_interval_ms), 10, 600000},
        {"--base-port", offsetof(tn_opts, base_port), 1024, 65535},
        {"--restart-delay", offsetof(tn_opts, restart_delay_ms), 0, 600000},
    };
    static const struct {
        const char *name;
        size_t off;
    } strs[] = {
        {"--base-dir", offsetof(tn_opts, base_dir)},
        {"--chain-id", offsetof(tn_opts, chain_id)},
        {"--log-level", offsetof(tn_opts, log_level)},
        {"--log-format", offsetof(tn_opts, log_format)},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            *help = true;
            continue;
        }
        if (!strcmp(a, "--processes")) {
            o->processes = true;
            continue;
        }
        if (!strcmp(a, "--kill-one")) {
            o->kill_one = true;
            continue;
        }
        if (!strcmp(a, "--keep")) {
            o->keep = true;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        bool done = false;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0] && !done; k++) {
            if (strlen(nums[k].name) != nl || strncmp(a, nums[k].name, nl))
                continue;
            const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (tn_u32(nums[k].name, v, nums[k].min, nums[k].max, (uint32_t *)(void *)((char *)o + nums[k].off)))
                return 2;
            done = true;
        }
        for (size_t k = 0; k < sizeof strs / sizeof strs[0] && !done; k++) {
            if (strlen(strs[k].name) != nl || strncmp(a, strs[k].name, nl))
                continue;
            const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !*v)
                return tn_usage_error("%s needs a value", strs[k].name);
            *(const char **)(void *)((char *)o + strs[k].off) = v;
            done = true;
        }
        if (!done)
            return tn_usage_error("unknown %s '%s'", a[0] == '-' ? "option" : "argument", a);
    }
    if (*help)
        return 0;
    if (o->seeds >= o->nodes)
        return tn_usage_error("--seeds (%u) must be less than --nodes (%u)", o->seeds, o->nodes);
    if (o->nodes - o->seeds < 2)
        return tn_usage_error("at least two non-seed nodes are needed (--nodes minus --seeds)");
    if (o->outbound > o->nodes - o->seeds - 1)
        return tn_usage_error("--outbound %u cannot be met by %u non-seed nodes", o->outbound,
                              o->nodes - o->seeds);
    if (o->base_port && o->base_port + o->nodes - 1 > 65535)
        return tn_usage_error("--base-port %u leaves no room for %u nodes", o->base_port, o->nodes);
    if (o->kill_one && !o->processes)
        return tn_usage_error("--kill-one needs --processes");
    tm2_log_level lvl;
    cli_log_format fmt;
    if (o->log_level && cli_log_parse_level(o->log_level, &lvl))
        return tn_usage_error("--log-level: '%s' is not one of error, warn, info, debug", o->log_level);
    if (cli_log_parse_format(o->log_format, &fmt))
        return tn_usage_error("--log-format: '%s' is not one of logfmt, json", o->log_format);
    if (!o->log_level)
        o->log_level = o->processes ? "info" : "error";
    return 0;
}

static uint64_t since(const tn *t)
{
    return cli_mono_ms() - t->t0_ms;
}

static int node_of_id(const tn *t, const char *id)
{
    for (uint32_t i = 0; i < t->count; i++)
        if (!strcmp(t->n[i].id.s, id))
            return (int)i;
    return -1;
}

static void format_listen(tn_node *nd)
{
    tm2_netaddr a = {.id = nd->id, .port = nd->port};
    a.ip[10] = a.ip[11] = 0xff;
    a.ip[12] = 127;
    a.ip[15] = 1;
    tm2_netaddr_format(&a, nd->listen, sizeof nd->listen);
}

/* ---- ports ------------------------------------------------------------------- */

/* Free loopback ports: all bound at once so none repeats, then released. */
static int pick_ports(tn *t)
{
    if (t->o.base_port) {
        for (uint32_t i = 0; i < t->count; i++)
            t->n[i].port = (uint16_t)(t->o.base_port + i);
        return 0;
    }
    int *fds = calloc(t->count, sizeof *fds);
    if (!fds)
        return -1;
    int rc = 0;
    for (uint32_t i = 0; i < t->count; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sl = sizeof sa;
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof sa) ||
            getsockname(fds[i], (struct sockaddr *)&sa, &sl)) {
            rc = -1;
            break;
        }
        t->n[i].port = ntohs(sa.sin_port);
    }
    for (uint32_t i = 0; i < t->count; i++)
        if (fds[i] > 0)
            close(fds[i]);
    free(fds);
    return rc;
}

/* ---- in-process nodes -------------------------------------------------------- */

/* Node i's options, all but its key. */
static void inproc_opts(const tn *t, uint32_t i, const char **seeds, const char *laddr,
                        cli_node_opts *o)
{
    const tn_node *nd = &t->n[i];
    *o = (cli_node_opts){
        .listen_addr = laddr,
        .network = t->o.chain_id,
        .moniker = nd->name,
        .max_inbound = nd->seed ? t->count + 16 : t->o.max_inbound,
        .max_outbound = t->o.outbound,
        .seeds = nd->seed ? NULL : seeds,
        .n_seeds = nd->seed ? 0 : t->o.seeds,
        .allow_duplicate_ip = true,   /* every node is on 127.0.0.1 */
        .seed_interval_ms = SEED_INTERVALS * t->o.pex_interval_ms,
        .pex = true,
        .seed_mode = nd->seed,
        .pex_interval_ms = t->o.pex_interval_ms,
        .seed_disconnect_ms = t->o.pex_interval_ms > 1000 ? t->o.pex_interval_ms : 1000,
        .gossip_interval_ms = nd->seed ? 0 : t->o.gossip_interval_ms,
        .gossip_origin = i,
        .gossip_until_ms = t->gossip_until_ms,
        .gossip_epoch_ms = t->t0_ms,
        .gossip_seconds = t->gossip_seconds,
        .log_events = true,   /* counted always, logged at info */
    };
    tm2_mconn_config_default(&o->mconn);
    o->mconn.flush_throttle_ms = 10;   /* what gno deployments use */
}

static int start_inproc(tn *t, tm2_log_level lvl, cli_log_format fmt)
{
    /* Seeds start first: their listen addresses are known before the rest. */
    const char **seeds = calloc(t->o.seeds, sizeof *seeds);
    if (!seeds)
        return -1;
    /* Both ends of every connection are in this process. */
    uint64_t conns = 0;
    for (uint32_t i = 0; i < t->count; i++) {
        cli_node_opts o;
        inproc_opts(t, i, seeds, "", &o);
        conns += cli_node_max_conns(&o);
    }
    cli_fd_limit_ensure(&t->log, conns);
    int rc = 0;
    for (uint32_t i = 0; i < t->count && rc == 0; i++) {
        tn_node *nd = &t->n[i];
        cli_log_init(&nd->log, lvl, fmt, nd->name);
        char laddr[64];
        snprintf(laddr, sizeof laddr, "tcp://127.0.0.1:%u", t->o.base_port ? nd->port : 0u);
        cli_node_opts o;
        inproc_opts(t, i, seeds, laddr, &o);
        o.key = nd->key;
        char err[512];
        if (cli_node_create(&o, &nd->log, &nd->rt, err, sizeof err) < 0 ||
            cli_node_start(nd->rt, err, sizeof err) < 0) {
            cli_log_kv(&t->log, TM2_LOG_ERROR, "cannot start node", "node", nd->name, "reason", err,
                       (const char *)NULL);
            rc = -1;
            break;
        }
        tm2_node_key_wipe(&o.key);
        cli_node_listen_addr(nd->rt, nd->listen, sizeof nd->listen);
        if (nd->seed)
            seeds[i] = nd->listen;
        nd->alive = true;
    }
    free(seeds);
    return rc;
}

static void sample_inproc(tn *t)
{
    /* Wire totals come from polling connections; a connection's bytes are
     * kept from its last poll after it closes, so poll about once a second. */
    if (cli_mono_ms() >= t->next_wire_poll) {
        t->next_wire_poll = cli_mono_ms() + 1000;
        for (uint32_t i = 0; i < t->count; i++)
            if (t->n[i].rt) {
                cli_node_counters c;
                cli_node_counters_get(t->n[i].rt, &c);
            }
    }
    tm2_id *ids = malloc((t->count + 64) * sizeof *ids);
    bool *dir = malloc((t->count + 64) * sizeof *dir);
    if (!ids || !dir) {
        free(ids);
        free(dir);
        return;
    }
    for (uint32_t i = 0; i < t->count; i++) {
        tn_node *nd = &t->n[i];
        nd->n_adj = nd->out_nonseed = nd->n_peers = 0;
        if (!nd->rt)
            continue;
        cli_node_drain_events(nd->rt);
        size_t np = cli_node_peers(nd->rt, ids, dir, t->count + 64);
        nd->n_peers = np;
        for (size_t k = 0; k < np && k < t->count + 64; k++) {
            int j = node_of_id(t, ids[k].s);
            if (j >= 0 && nd->n_adj < t->count)
                nd->adj[nd->n_adj++] = j;
            if (dir[k] && j >= 0 && !t->n[j].seed)
                nd->out_nonseed++;
        }
    }
    free(ids);
    free(dir);
}

/* ---- node processes ------------------------------------------------------------ */

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int mk(const char *p)
{
    return mkdir(p, 0700) && errno != EEXIST ? -1 : 0;
}

/* Homes with keys and config.toml: seeds in seed mode; the others know the
 * seeds and their ring successor as a persistent peer. */
static int prepare_homes(tn *t)
{
    char seeds[MAX_NODES * (TM2_NETADDR_STRLEN + 1)] = "";
    for (uint32_t i = 0; i < t->o.seeds; i++) {
        if (i)
            strcat(seeds, ",");
        strcat(seeds, t->n[i].listen);
    }
    uint32_t first = t->o.seeds, g = t->count - t->o.seeds;
    for (uint32_t i = 0; i < t->count; i++) {
        tn_node *nd = &t->n[i];
        snprintf(nd->home, sizeof nd->home, "%s/%s", t->base, nd->name);
        snprintf(nd->status_path, sizeof nd->status_path, "%s/status.json", nd->home);
        snprintf(nd->log_path, sizeof nd->log_path, "%s/node.log", nd->home);
        char p[800], why[512];
        snprintf(p, sizeof p, "%s/config", nd->home);
        if (mk(nd->home) || mk(p))
            return -1;
        snprintf(p, sizeof p, "%s/secrets/node_key.json", nd->home);
        if (tm2_node_key_save(p, &nd->key, why, sizeof why) < 0) {
            cli_log_kv(&t->log, TM2_LOG_ERROR, "cannot write node key", "file", p, "reason", why,
                       (const char *)NULL);
            return -1;
        }
        char *cfg = malloc(sizeof seeds + 2048);
        if (!cfg)
            return -1;
        int len = snprintf(cfg, sizeof seeds + 2048,
                           "# written by tm2p2p testnet\n"
                           "moniker = \"%s\"\n"
                           "\n[p2p]\n"
                           "laddr = \"tcp://127.0.0.1:%u\"\n"
                           "max_num_inbound_peers = %u\n"
                           "max_num_outbound_peers = %u\n"
                           "flush_throttle_timeout = \"10ms\"\n"
                           "pex = true\n"
                           "allow_duplicate_ip = true\n"
                           "seed_mode = %s\n"
                           "seeds = \"%s\"\n"
                           "persistent_peers = \"%s\"\n",
                           nd->name, nd->port, nd->seed ? t->count + 16 : t->o.max_inbound, t->o.outbound,
                           nd->seed ? "true" : "false", nd->seed ? "" : seeds,
                           nd->seed ? "" : t->n[first + (i - first + 1) % g].listen);
        snprintf(p, sizeof p, "%s/config/config.toml", nd->home);
        int r = len > 0 ? write_text(p, cfg) : -1;
        free(cfg);
        if (r)
            return -1;
    }
    return 0;
}

static int spawn_node(tn *t, tn_node *nd)
{
    char a_interval[16], a_origin[16], a_epoch[32], a_for[32], a_pex[16], a_disc[16], a_seed[16];
    uint64_t now = cli_mono_ms();
    uint64_t gfor = t->gossip_until_ms > now ? (t->gossip_until_ms - now + 999) / 1000 : 0;
    snprintf(a_interval, sizeof a_interval, "%u", nd->seed || !gfor ? 0u : t->o.gossip_interval_ms);
    snprintf(a_origin, sizeof a_origin, "%u", nd->idx);
    snprintf(a_epoch, sizeof a_epoch, "%llu", (unsigned long long)t->t0_ms);
    snprintf(a_for, sizeof a_for, "%llu", (unsigned long long)gfor);
    snprintf(a_pex, sizeof a_pex, "%u", t->o.pex_interval_ms);
    snprintf(a_seed, sizeof a_seed, "%u", SEED_INTERVALS * t->o.pex_interval_ms);
    snprintf(a_disc, sizeof a_disc, "%u", t->o.pex_interval_ms > 1000 ? t->o.pex_interval_ms : 1000u);
    char *argv[] = {t->exe, "node", "--home", nd->home, "--chain-id", (char *)t->o.chain_id,
                    "--log-level", (char *)t->o.log_level, "--log-format", (char *)t->o.log_format,
                    "--pex-interval", a_pex, "--seed-disconnect", a_disc,
                    "--seed-interval", a_seed,
                    "--redial-base", "250", "--redial-max", "2000",
                    "--gossip-interval", a_interval, "--gossip-for", a_for, "--gossip-origin", a_origin,
                    "--gossip-epoch", a_epoch, "--status-file", nd->status_path,
                    "--status-interval", "200", NULL};
    unlink(nd->status_path);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Only async-signal-safe calls until exec. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        setpgid(0, 0);   /* a terminal's Ctrl-C reaches the testnet, which stops its nodes */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int fd = open(nd->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0 || dup2(fd, 2) < 0)
            _exit(1);
        execv(t->exe, argv);
        _exit(127);
    }
    nd->pid = pid;
    nd->alive = true;
    return 0;
}

static void add_counters(cli_node_counters *a, const cli_node_counters *b)
{
    a->connects += b->connects;
    a->disconnects += b->disconnects;
    a->dial_failures += b->dial_failures;
    a->rejections += b->rejections;
    a->wire_sent += b->wire_sent;
    a->wire_recv += b->wire_recv;
    for (size_t i = 0; i < b->n_channels; i++) {
        size_t k;
        for (k = 0; k < a->n_channels; k++)
            if (a->channels[k].id == b->channels[i].id)
                break;
        if (k == a->n_channels) {
            if (k == CLI_NODE_MAX_CHANNELS)
                continue;
            a->channels[k].id = b->channels[i].id;
            a->n_channels++;
        }
        a->channels[k].msgs += b->channels[i].msgs;
        a->channels[k].bytes += b->channels[i].bytes;
    }
}

/* Adds what a node's status reports to the sums. */
static void accumulate(const cJSON *st, cli_gossip_totals *g, cli_node_counters *c, tm2_discovery_stats *d)
{
    if (!st)
        return;
    const cJSON *gj = cJSON_GetObjectItemCaseSensitive(st, "gossip");
    if (gj)
        cli_gossip_totals_add_json(g, gj);
    const struct {
        const char *k;
        uint64_t *v;
    } f[] = {{"connects", &c->connects}, {"disconnects", &c->disconnects},
             {"dial_failures", &c->dial_failures}, {"rejections", &c->rejections},
             {"wire_sent", &c->wire_sent}, {"wire_recv", &c->wire_recv}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(st, f[i].k);
        if (cJSON_IsNumber(x) && x->valuedouble >= 0)
            *f[i].v += (uint64_t)x->valuedouble;
    }
    cli_node_counters chans = {0};
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(st, "channels"), *ch;
    cJSON_ArrayForEach(ch, arr) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(ch, "id");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(ch, "msgs");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(ch, "bytes");
        if (!cJSON_IsNumber(id) || !cJSON_IsNumber(m) || !cJSON_IsNumber(b) || id->valueint < 0 ||
            id->valueint > 255 || m->valuedouble < 0 || b->valuedouble < 0 ||
            chans.n_channels == CLI_NODE_MAX_CHANNELS)
            continue;
        chans.channels[chans.n_channels++] =
            (cli_chan_count){(uint8_t)id->valueint, (uint64_t)m->valuedouble, (uint64_t)b->valuedouble};
    }
    add_counters(c, &chans);
    const cJSON *dj = cJSON_GetObjectItemCaseSensitive(st, "discovery");
    const struct {
        const char *k;
        uint64_t *v;
    } df[] = {{"requests_sent", &d->requests_sent}, {"requests_answered", &d->requests_answered},
              {"responses_received", &d->responses_received}, {"responses_rejected", &d->responses_rejected},
              {"dials", &d->dials}};
    for (size_t k = 0; dj && k < sizeof df / sizeof df[0]; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(dj, df[k].k);
        if (cJSON_IsNumber(v) && v->valuedouble >= 0)
            *df[k].v += (uint64_t)v->valuedouble;
    }
}

/* Moves what the process behind nd->last counted into the earlier-lives sums. */
static void bank_life(tn_node *nd)
{
    accumulate(nd->last, &nd->dead_gossip, &nd->dead_ctr, &nd->dead_disc);
    cJSON_Delete(nd->last);
    nd->last = NULL;
}

static void read_status(tn_node *nd)
{
    FILE *f = fopen(nd->status_path, "r");
    if (!f)
        return;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!buf)
        return;
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(j, "pid");
    /* a file left by an earlier life of the node is ignored */
    if (!j || !cJSON_IsNumber(pid) || (pid_t)pid->valuedouble != nd->pid) {
        cJSON_Delete(j);
        return;
    }
    cJSON_Delete(nd->last);
    nd->last = j;
}

static void sample_procs(tn *t)
{
    for (uint32_t i = 0; i < t->count; i++) {
        tn_node *nd = &t->n[i];
        nd->n_adj = nd->out_nonseed = nd->n_peers = 0;
        if (!nd->alive)
            continue;
        read_status(nd);
        if (!nd->last)
            continue;
        const cJSON *peers = cJSON_GetObjectItemCaseSensitive(nd->last, "peers"), *p;
        cJSON_ArrayForEach(p, peers) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(p, "id");
            if (!cJSON_IsString(id))
                continue;
            nd->n_peers++;
            int j = node_of_id(t, id->valuestring);
            if (j >= 0 && nd->n_adj < t->count)
                nd->adj[nd->n_adj++] = j;
            if (j >= 0 && !t->n[j].seed && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "outbound")))
                nd->out_nonseed++;
        }
    }
}

/* Reaps exited node processes and restarts them after the delay. */
static void supervise(tn *t, bool stopping)
{
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid <= 0)
            break;
        for (uint32_t i = 0; i < t->count; i++) {
            tn_node *nd = &t->n[i];
            if (nd->pid != pid)
                continue;
            read_status(nd);   /* its last word, if newer */
            nd->alive = false;
            nd->pid = 0;
            bank_life(nd);
            if (stopping)
                break;
            char how[64];
            if (WIFSIGNALED(st))
                snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(st));
            else
                snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(st));
            char delay[32];
            snprintf(delay, sizeof delay, "%u", t->o.restart_delay_ms);
            end_line(t);
            cli_log_kv(&t->log, TM2_LOG_WARN, "node process ended; restarting", "node", nd->name, "how", how,
                       "restart_in_ms", delay, (const char *)NULL);
            nd->restart_at_ms = cli_mono_ms() + t->o.restart_delay_ms;
        }
    }
    if (stopping)
        return;
    for (uint32_t i = 0; i < t->count; i++) {
        tn_node *nd = &t->n[i];
        if (nd->alive || !nd->restart_at_ms || cli_mono_ms() < nd->restart_at_ms)
            continue;
        nd->restart_at_ms = 0;
        if (spawn_node(t, nd) == 0) {
            nd->restarts++;
            if ((int)i == t->killed && !t->t_back)
                t->t_back = since(t);
            end_line(t);
            cli_log_kv(&t->log, TM2_LOG_WARN, "node process restarted", "node", nd->name, (const char *)NULL);
        } else {
            nd->restart_at_ms = cli_mono_ms() + t->o.restart_delay_ms;
        }
    }
}

static void stop_procs(tn *t)
{
    for (uint32_t i = 0; i < t->count; i++)
        if (t->n[i].alive && t->n[i].pid > 0)
            kill(t->n[i].pid, SIGTERM);
    uint64_t deadline = cli_mono_ms() + 10000;
    for (;;) {
        bool any = false;
        for (uint32_t i = 0; i < t->count; i++)
            if (t->n[i].alive) {
                read_status(&t->n[i]);
                any = true;
            }
        if (!any)
            break;
        supervise(t, true);
        if (cli_mono_ms() > deadline) {
            for (uint32_t i = 0; i < t->count; i++)
                if (t->n[i].alive && t->n[i].pid > 0)
                    kill(t->n[i].pid, SIGKILL);
            deadline = UINT64_MAX;
        }
        poll(NULL, 0, 20);
    }
}

/* ---- measurement ----------------------------------------------------------------- */

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Are the non-seed nodes one connected graph (an edge when either side lists
 * the other)? */
static bool graph_connected(const tn *t, unsigned char *m, int *queue)
{
    uint32_t N = t->count, first = t->o.seeds;
    memset(m, 0, (size_t)N * N);
    for (uint32_t i = first; i < N; i++)
        for (size_t k = 0; k < t->n[i].n_adj; k++) {
            int j = t->n[i].adj[k];
            m[(size_t)i * N + (uint32_t)j] = m[(size_t)(uint32_t)j * N + i] = 1;
        }
    bool *seen = calloc(N, sizeof *seen);
    if (!seen)
        return false;
    size_t head = 0, tail = 0, reached = 1;
    queue[tail++] = (int)first;
    seen[first] = true;
    while (head < tail) {
        uint32_t u = (uint32_t)queue[head++];
        for (uint32_t v = first; v < N; v++)
            if (m[(size_t)u * N + v] && !seen[v]) {
                seen[v] = true;
                queue[tail++] = (int)v;
                reached++;
            }
    }
    free(seen);
    return reached == N - first;
}

typedef struct tn_totals {
    cli_gossip_totals g;
    cli_node_counters c;            /* channel entries summed by id */
    tm2_discovery_stats d;
    bool have_d;
} tn_totals;

/* Sums gossip (and, when full, the counters) over all nodes. */
static int totals(tn *t, tn_totals *x, bool full)
{
    memset(x, 0, sizeof *x);
    if (cli_gossip_totals_init(&x->g, t->gossip_seconds))
        return -1;
    for (uint32_t i = 0; i < t->count; i++) {
        tn_node *nd = &t->n[i];
        if (nd->rt) {
            if (cli_node_gossip(nd->rt))
                cli_gossip_add_totals(cli_node_gossip(nd->rt), &x->g);
            if (full) {
                cli_node_counters c;
                cli_node_counters_get(nd->rt, &c);
                add_counters(&x->c, &c);
                tm2_discovery_stats d;
                tm2_discovery_get_stats(cli_node_discovery(nd->rt), &d);
                x->d.requests_sent += d.requests_sent;
                x->d.requests_answered += d.requests_answered;
                x->d.responses_received += d.responses_received;
                x->d.responses_rejected += d.responses_rejected;
                x->d.dials += d.dials;
                x->have_d = true;
            }
            continue;
        }
        if (t->o.processes) {
            cli_gossip_totals_merge(&x->g, &nd->dead_gossip);
            cli_node_counters none = {0};
            tm2_discovery_stats dnone = {0};
            accumulate(nd->last, &x->g, full ? &x->c : &none, full ? &x->d : &dnone);
            if (full) {
                add_counters(&x->c, &nd->dead_ctr);
                x->d.requests_sent += nd->dead_disc.requests_sent;
                x->d.requests_answered += nd->dead_disc.requests_answered;
                x->d.responses_received += nd->dead_disc.responses_received;
                x->d.responses_rejected += nd->dead_disc.responses_rejected;
                x->d.dials += nd->dead_disc.dials;
                x->have_d = true;
            }
        }
    }
    return 0;
}

static void progress(tn *t, size_t pmin, size_t pmed, size_t pmax, const cli_gossip_totals *g, bool final)
{
    uint32_t gn = t->count - t->o.seeds;
    /* Messages originated up to the last whole second, which had at least a
     * second to spread (all of them at the end). */
    uint32_t upto = final ? g->seconds : (uint32_t)(since(t) / 1000u);
    uint64_t orig = 0, deliv = 0;
    for (uint32_t s = 0; s < upto && s < g->seconds; s++) {
        orig += g->orig_by_sec[s];
        deliv += g->deliv_by_sec[s];
    }
    double expected = (double)orig * (gn - 1);
    char gossip[64];
    if (expected > 0)
        snprintf(gossip, sizeof gossip, "%llu/%.0f (%.1f%%)", (unsigned long long)deliv, expected,
                 100.0 * (double)deliv / expected);
    else
        snprintf(gossip, sizeof gossip, "0/0");
    char alive[32] = "";
    if (t->o.processes) {
        uint32_t a = 0;
        for (uint32_t i = 0; i < t->count; i++)
            a += t->n[i].alive;
        snprintf(alive, sizeof alive, " | up %u/%u", a, t->count);
    }
    char line[256];
    snprintf(line, sizeof line, "[%5.1fs] peers min/med/max %zu/%zu/%zu | connected %s | at target %zu/%u%s | gossip %s",
             (double)since(t) / 1000.0, pmin, pmed, pmax, t->connected_now ? "yes" : "no ",
             t->at_target_now, gn, alive, gossip);
    if (t->tty) {
        printf("\r%s\x1b[K%s", line, final ? "\n" : "");
        t->line_open = !final;
    } else
        printf("%s\n", line);
    fflush(stdout);
}

/* A node is at its target with that many outbound non-seed peers, or when
 * it is connected to every other non-seed node (no one is left to dial:
 * in a small network the others may all have dialled it first). */
static bool at_target(const tn *t, const tn_node *nd)
{
    if (nd->out_nonseed >= t->o.outbound)
        return true;
    size_t others = 0;
    for (size_t k = 0; k < nd->n_adj; k++)
        others += !t->n[nd->adj[k]].seed;
    return others >= t->count - t->o.seeds - 1;
}

/* One sample of the network; prints progress when due. */
static void measure(tn *t, unsigned char *m, int *queue, size_t *peer_counts, bool print, bool final)
{
    if (t->o.processes)
        sample_procs(t);
    else
        sample_inproc(t);
    uint32_t first = t->o.seeds, gn = t->count - first;
    size_t at = 0;
    for (uint32_t i = first; i < t->count; i++) {
        peer_counts[i - first] = t->n[i].n_peers;
        at += at_target(t, &t->n[i]);
    }
    qsort(peer_counts, gn, sizeof *peer_counts, cmp_size);
    t->connected_now = graph_connected(t, m, queue);
    t->at_target_now = at;
    uint64_t now = since(t);
    if (t->connected_now && !t->t_connected)
        t->t_connected = now ? now : 1;
    if (at == gn && !t->t_target)
        t->t_target = now ? now : 1;
    if (t->killed >= 0 && !t->t_redialled) {
        /* The killed node is back once its ring predecessor, which has it as
         * a persistent peer, lists it again after having lost it. */
        uint32_t k = (uint32_t)t->killed;
        tn_node *pred = &t->n[first + (k - first + gn - 1) % gn];
        bool listed = false;
        for (size_t q = 0; q < pred->n_adj; q++)
            listed |= pred->adj[q] == t->killed;
        if (!listed && pred->last)
            t->pred_lost = true;
        else if (listed && t->pred_lost && t->t_back && t->n[k].alive)
            t->t_redialled = now;
    }
    if (print) {
        tn_totals x;
        if (totals(t, &x, false) == 0) {
            progress(t, peer_counts[0], peer_counts[gn / 2], peer_counts[gn - 1], &x.g, final);
            cli_gossip_totals_free(&x.g);
        }
    }
}

static void fmt_bytes(char *buf, size_t cap, uint64_t b)
{
    if (b >= 10ull << 20)
        snprintf(buf, cap, "%.1f MiB", (double)b / (1 << 20));
    else if (b >= 10ull << 10)
        snprintf(buf, cap, "%.1f KiB", (double)b / 1024);
    else
        snprintf(buf, cap, "%llu B", (unsigned long long)b);
}

static void fmt_secs(char *buf, size_t cap, uint64_t ms)
{
    if (ms)
        snprintf(buf, cap, "%.2f s", (double)ms / 1000.0);
    else
        snprintf(buf, cap, "never");
}

static const char *chan_name(uint8_t id)
{
    return id == TM2_DISCOVERY_CHANNEL ? "pex" : id == CLI_GOSSIP_CHANNEL ? "gossip" : "other";
}

/* Prints the summary; returns whether the network converged. */
static bool summary(tn *t, const tn_totals *x)
{
    uint32_t gn = t->count - t->o.seeds;
    char a[32], b[32];
    printf("\n== summary: %u nodes (%u seed%s, %u gossiping), outbound target %u, %s, %u s\n", t->count,
           t->o.seeds, t->o.seeds == 1 ? "" : "s", gn, t->o.outbound,
           t->o.processes ? "one process per node" : "in one process", t->o.duration_s);
    fmt_secs(a, sizeof a, t->t_connected);
    fmt_secs(b, sizeof b, t->t_target);
    printf("graph connected after            %s\n", a);
    printf("every node at outbound target    %s (or connected to all others)\n", b);
    printf("at the end                       connected %s, %zu/%u nodes at target\n",
           t->connected_now ? "yes" : "no", t->at_target_now, gn);

    const cli_gossip_totals *g = &x->g;
    double exp_all = (double)g->originated * (gn - 1);
    printf("gossip originated                %llu messages (every %u ms per node)\n",
           (unsigned long long)g->originated, t->o.gossip_interval_ms);
    if (exp_all > 0)
        printf("gossip delivered, all            %llu/%.0f (%.2f%%)\n", (unsigned long long)g->delivered, exp_all,
               100.0 * (double)g->delivered / exp_all);
    if (t->t_connected) {
        /* messages originated from the first whole second after the graph connected */
        uint32_t from = (uint32_t)((t->t_connected + 999) / 1000);
        uint64_t o = cli_gossip_sum(g->orig_by_sec, g->seconds, from);
        uint64_t d = cli_gossip_sum(g->deliv_by_sec, g->seconds, from);
        double e = (double)o * (gn - 1);
        if (e > 0)
            printf("gossip delivered, after connect  %llu/%.0f (%.2f%%) of messages sent from t=%u s\n",
                   (unsigned long long)d, e, 100.0 * (double)d / e, from);
    }
    if (cli_hist_count(g->hist))
        printf("gossip latency                   p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
               (double)cli_hist_quantile(g->hist, 0.5) / 1000.0, (double)cli_hist_quantile(g->hist, 0.99) / 1000.0,
               (double)cli_hist_quantile(g->hist, 1.0) / 1000.0);
    printf("gossip duplicates dropped        %llu; copies refused by full queues %llu\n",
           (unsigned long long)g->duplicates, (unsigned long long)g->send_failed);
    printf("per channel (received, all nodes):\n");
    for (size_t i = 0; i < x->c.n_channels; i++) {
        fmt_bytes(a, sizeof a, x->c.channels[i].bytes);
        printf("  0x%02x %-7s %10llu messages %12s\n", x->c.channels[i].id, chan_name(x->c.channels[i].id),
               (unsigned long long)x->c.channels[i].msgs, a);
    }
    fmt_bytes(a, sizeof a, x->c.wire_sent);
    fmt_bytes(b, sizeof b, x->c.wire_recv);
    printf("wire (secret connection)         sent %s, received %s\n", a, b);
    printf("peer events, all nodes           %llu connected, %llu disconnected, %llu failed dials, %llu rejected\n",
           (unsigned long long)x->c.connects, (unsigned long long)x->c.disconnects,
           (unsigned long long)x->c.dial_failures, (unsigned long long)x->c.rejections);
    if (x->have_d)
        printf("discovery                        %llu requests, %llu answered, %llu responses (%llu rejected), %llu dials\n",
               (unsigned long long)x->d.requests_sent, (unsigned long long)x->d.requests_answered,
               (unsigned long long)x->d.responses_received, (unsigned long long)x->d.responses_rejected,
               (unsigned long long)x->d.dials);
    bool ok = t->t_connected && t->t_target;
    if (t->killed >= 0) {
        char c[32];
        fmt_secs(a, sizeof a, t->t_killed);
        fmt_secs(b, sizeof b, t->t_back);
        fmt_secs(c, sizeof c, t->t_redialled);
        printf("node %s killed at %s, restarted at %s, redialled by its persistent peer at %s\n",
               t->n[t->killed].name, a, b, c);
        printf("  (gossip sent while it was down or reconnecting could not reach it)\n");
        ok = ok && t->t_redialled;
    }
    if (ok)
        printf("result: converged in %.2f s\n",
               (double)(t->t_connected > t->t_target ? t->t_connected : t->t_target) / 1000.0);
    else
        printf("result: did not converge within %u s\n", t->o.duration_s);
    fflush(stdout);
    return ok;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

int cli_run_testnet(int argc, char **argv)
{
    tn t;
    memset(&t, 0, sizeof t);
    bool help;
    int r = parse_tn_flags(argc, argv, &t.o, &help);
    if (r)
        return r;
    if (help) {
        fputs(testnet_usage, stdout);
        return 0;
    }
    tm2_log_level lvl;
    cli_log_format fmt;
    cli_log_parse_level(t.o.log_level, &lvl);
    cli_log_parse_format(t.o.log_format, &fmt);
    cli_log_init(&t.log, TM2_LOG_INFO, fmt, NULL);
    t.count = t.o.nodes;
    t.killed = -1;
    t.tty = isatty(1);
    t.gossip_seconds = t.o.duration_s + 60;

    int status = 1;
    int sfd = -1;
    unsigned char *m = NULL;
    int *queue = NULL;
    size_t *peer_counts = NULL;
    t.n = calloc(t.count, sizeof *t.n);
    m = malloc((size_t)t.count * t.count);
    queue = malloc(t.count * sizeof *queue);
    peer_counts = malloc(t.count * sizeof *peer_counts);
    if (!t.n || !m || !queue || !peer_counts)
        goto out;
    for (uint32_t i = 0; i < t.count; i++) {
        tn_node *nd = &t.n[i];
        nd->idx = i;
        nd->seed = i < t.o.seeds;
        snprintf(nd->name, sizeof nd->name, "%s%02u", nd->seed ? "seed" : "n", nd->seed ? i : i - t.o.seeds);
        nd->adj = calloc(t.count, sizeof *nd->adj);
        if (!nd->adj || tm2_node_key_generate(&nd->key) < 0 ||
            cli_gossip_totals_init(&nd->dead_gossip, t.gossip_seconds))
            goto out;
        tm2_node_key_id(&nd->key, &nd->id);
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    if (t.o.processes)
        sigaddset(&mask, SIGCHLD);
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0 || (sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
        goto out;

    printf("tm2p2p testnet: %u nodes (%u seed%s) on 127.0.0.1, outbound target %u, %u s%s\n", t.count, t.o.seeds,
           t.o.seeds == 1 ? "" : "s", t.o.outbound, t.o.duration_s,
           t.o.processes ? ", one process per node" : "");
    fflush(stdout);

    if (t.o.processes) {
        ssize_t el = readlink("/proc/self/exe", t.exe, sizeof t.exe - 1);
        if (el <= 0) {
            cli_log_kv(&t.log, TM2_LOG_ERROR, "cannot find the program", "reason", strerror(errno), (const char *)NULL);
            goto out;
        }
        t.exe[el] = '\0';
        if (t.o.base_dir) {
            if (strlen(t.o.base_dir) >= 400) {
                status = tn_usage_error("--base-dir: path too long");
                goto out;
            }
            snprintf(t.base, sizeof t.base, "%s", t.o.base_dir);
            if (mkdir(t.base, 0700) && errno != EEXIST) {
                cli_log_kv(&t.log, TM2_LOG_ERROR, "cannot create the base directory", "dir", t.base, "reason",
                           strerror(errno), (const char *)NULL);
                goto out;
            }
        } else {
            snprintf(t.base, sizeof t.base, "/tmp/tm2p2p-testnet-XXXXXX");
            if (!mkdtemp(t.base))
                goto out;
            t.made_base = true;
        }
        if (pick_ports(&t))
            goto out;
        for (uint32_t i = 0; i < t.count; i++)
            format_listen(&t.n[i]);
        if (prepare_homes(&t))
            goto out;
        printf("node homes in %s%s\n", t.base, t.o.keep || t.o.base_dir ? "" : " (removed at the end; --keep keeps them)");
    }

    t.t0_ms = cli_mono_ms();
    t.end_ms = t.t0_ms + (uint64_t)t.o.duration_s * 1000u;
    uint64_t grace = t.o.duration_s >= 12 ? 3000 : (uint64_t)t.o.duration_s * 250u;
    t.gossip_until_ms = t.end_ms - grace;

    if (t.o.processes) {
        for (uint32_t i = 0; i < t.count; i++)
            if (spawn_node(&t, &t.n[i]))
                goto out;
    } else if (start_inproc(&t, lvl, fmt)) {
        goto out;
    }

    uint64_t kill_at = t.o.kill_one ? t.t0_ms + (uint64_t)t.o.duration_s * 1000u / 3u : 0;
    uint64_t next_print = 0;
    bool interrupted = false;
    uint32_t sample_ms = t.o.processes ? 200 : 100;
    while (cli_mono_ms() < t.end_ms) {
        struct pollfd pf = {.fd = sfd, .events = POLLIN};
        poll(&pf, 1, (int)sample_ms);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
            if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM)
                interrupted = true;
        if (interrupted) {
            end_line(&t);
            cli_log_kv(&t.log, TM2_LOG_WARN, "interrupted; stopping the nodes", (const char *)NULL);
            break;
        }
        if (t.o.processes)
            supervise(&t, false);
        if (kill_at && cli_mono_ms() >= kill_at) {
            kill_at = 0;
            uint32_t k = t.o.seeds + (t.count - t.o.seeds) / 2;
            if (t.n[k].alive && t.n[k].pid > 0) {
                end_line(&t);
                cli_log_kv(&t.log, TM2_LOG_WARN, "killing a node process (SIGKILL)", "node", t.n[k].name,
                           (const char *)NULL);
                kill(t.n[k].pid, SIGKILL);
                t.killed = (int)k;
                t.t_killed = since(&t);
            }
        }
        uint64_t now = cli_mono_ms();
        bool print = now >= next_print;
        if (print)
            next_print = now + (t.tty ? 250 : 1000);
        measure(&t, m, queue, peer_counts, print, false);
    }
    measure(&t, m, queue, peer_counts, true, true);

    tn_totals x;
    if (!t.o.processes) {
        /* counters before the peers go away, then stop */
        if (totals(&t, &x, true))
            goto out;
        for (uint32_t i = 0; i < t.count; i++)
            cli_node_stop(t.n[i].rt);
    } else {
        stop_procs(&t);
        if (totals(&t, &x, true))
            goto out;
    }
    bool ok = summary(&t, &x);
    cli_gossip_totals_free(&x.g);
    status = interrupted ? 1 : ok ? 0 : 1;

out:
    if (t.n) {
        for (uint32_t i = 0; i < t.count; i++) {
            tn_node *nd = &t.n[i];
            if (nd->alive && nd->pid > 0) {
                kill(nd->pid, SIGKILL);
                waitpid(nd->pid, NULL, 0);
            }
            cli_node_free(nd->rt);
            tm2_node_key_wipe(&nd->key);
            cJSON_Delete(nd->last);
            cli_gossip_totals_free(&nd->dead_gossip);
            free(nd->adj);
        }
    }
    if (t.base[0] && !t.o.keep && t.made_base)
        nftw(t.base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (sfd >= 0)
        close(sfd);
    free(t.n);
    free(m);
    free(queue);
    free(peer_counts);
    return status;
}
