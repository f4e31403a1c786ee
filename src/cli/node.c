/* tm2p2p node: run one p2p node until SIGINT/SIGTERM.
 *
 * The node runtime (switch, discovery, gossip, event log, counters) is also
 * used by tm2p2p testnet to run many nodes in one process. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/file.h"
#include "cli/config_toml.h"
#include "cli/fdlimit.h"
#include "cli/gossip.h"
#include "cli/http.h"
#include "cli/log.h"
#include "tm2p2p/defaults.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/events.h"
#include "tm2p2p/peer.h"
#include "tm2p2p/version.h"

#define DEFAULT_NETWORK "dev"

/* ---- address and ID lists ------------------------------------------------ */

/* Calls fn on each trimmed, non-empty comma-separated entry. */
static int each_entry(const char *list, int (*fn)(const char *e, void *u), void *u)
{
    const char *s = list;
    while (*s) {
        const char *end = strchr(s, ',');
        if (!end)
            end = s + strlen(s);
        const char *a = s, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            char e[512];
            if ((size_t)(b - a) >= sizeof e)
                return TM2_ETOOBIG;
            memcpy(e, a, (size_t)(b - a));
            e[b - a] = '\0';
            int r = fn(e, u);
            if (r)
                return r;
        }
        s = *end ? end + 1 : end;
    }
    return 0;
}

typedef struct list_ctx {
    void *items;
    size_t n, cap, size;
    char *err;
    size_t err_len;
} list_ctx;

static int list_add(const char *e, void *u)
{
    list_ctx *c = u;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        void *p = realloc(c->items, cap * c->size);
        if (!p) {
            snprintf(c->err, c->err_len, "out of memory");
            return TM2_ENOMEM;
        }
        c->items = p;
        c->cap = cap;
    }
    tm2_id *id = (tm2_id *)c->items + c->n;
    int r = tm2_id_validate(e);
    if (r < 0 || strlen(e) != TM2_ID_LEN) {
        snprintf(c->err, c->err_len, "'%s' is not a peer ID (%s)", e,
                 tm2_strerror(r < 0 ? r : TM2_EID));
        return r < 0 ? r : TM2_EID;
    }
    snprintf(id->s, sizeof id->s, "%s", e);
    c->n++;
    return 0;
}

static int parse_list(const char *list, size_t size, void **out, char *err, size_t err_len)
{
    list_ctx c = {.size = size, .err = err, .err_len = err_len};
    int r = each_entry(list, list_add, &c);
    if (r == TM2_ETOOBIG)
        snprintf(err, err_len, "an entry is too long");
    if (r) {
        free(c.items);
        *out = NULL;
        return -1;
    }
    *out = c.items;
    return (int)c.n;
}

typedef struct peer_list_ctx {
    cli_peer_list *l;
    const char *where;
    cli_log *log;
    unsigned *problems;
    size_t pos;
} peer_list_ctx;

static int peer_add(const char *e, void *u)
{
    peer_list_ctx *c = u;
    cli_peer_list *l = c->l;
    c->pos++;
    tm2_id id;
    char host[256];
    uint16_t port;
    int r = tm2_peer_addr_parse(e, &id, host, sizeof host, &port);
    if (r) {
        /* Dropped, as gno drops a malformed entry; the rest still serve. */
        char pos[24];
        snprintf(pos, sizeof pos, "%zu", c->pos);
        cli_log_kv(c->log, TM2_LOG_WARN, "malformed peer address dropped", "in", c->where, "position",
                   pos, "entry", e, "reason", tm2_strerror(r), (const char *)NULL);
        (*c->problems)++;
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **p = realloc(l->items, cap * sizeof *p);
        if (!p)
            return TM2_ENOMEM;
        l->items = p;
        l->cap = cap;
    }
    if (!(l->items[l->n] = strdup(e)))
        return TM2_ENOMEM;
    l->n++;
    return 0;
}

int cli_parse_peer_list(const char *list, const char *where, cli_log *lg, cli_peer_list *out,
                        unsigned *problems)
{
    peer_list_ctx c = {.l = out, .where = where, .log = lg, .problems = problems};
    int r = each_entry(list, peer_add, &c);
    if (r == TM2_ETOOBIG) {
        cli_log_kv(lg, TM2_LOG_WARN, "peer list entry too long, dropped", "in", where,
                   (const char *)NULL);
        (*problems)++;
        r = 0;
    }
    if (r) {
        cli_log_kv(lg, TM2_LOG_ERROR, "out of memory reading a peer list", (const char *)NULL);
        cli_peer_list_free(out);
    }
    return r;
}

void cli_peer_list_free(cli_peer_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

int cli_parse_id_list(const char *list, tm2_id **out, char *err, size_t err_len)
{
    return parse_list(list, sizeof **out, (void **)out, err, err_len);
}

/* ---- the runtime ---------------------------------------------------------- */

struct cli_node {
    cli_log log;
    tm2_switch *sw;
    tm2_discovery *disc;
    struct cli_gossip *gossip;
    tm2_subscription *sub;
    cli_http *http;
    char *http_addr;               /* configured; NULL: no HTTP endpoints */
    tm2_reactor reactors[2];
    size_t n_reactors;
    uint32_t gossip_interval_ms;
    uint64_t gossip_until_ms;
    bool started, stopped;

    /* controlling thread */
    uint64_t events_dropped;
    /* Rejections before authentication, logged at most REJECT_BURST a window
     * each, the rest counted by reason and summarised when it ends: one
     * client failing handshakes in a loop must not flood the log. */
    uint64_t rej_window_ms;
    unsigned rej_logged;
    uint64_t rej_held[TM2_STATS_REASONS];
    uint64_t rej_held_total;
};

uint64_t cli_node_max_conns(const cli_node_opts *o)
{
    tm2_switch_config sc;
    cli_node_switch_config(o, &sc);
    return (uint64_t)sc.max_inbound + sc.max_pending_inbound + sc.max_outbound +
           sc.n_persistent_peers + sc.n_unconditional_peer_ids + sc.n_seeds;
}

static void add_reactor(cli_node *n, const tm2_reactor *r)
{
    n->reactors[n->n_reactors++] = *r;
}

void cli_node_switch_config(const cli_node_opts *o, tm2_switch_config *sc)
{
    tm2_switch_config_default(sc);
    sc->key = o->key;
    sc->listen_addr = o->listen_addr;
    sc->external_addr = o->external_addr;
    sc->network = o->network;
    sc->moniker = o->moniker;
    /* Free text peers never compare: the version set stays the protocol's. */
    sc->software = CLI_SOFTWARE;
    sc->version = cli_announced_version();
    sc->max_inbound = o->max_inbound;
    sc->max_outbound = o->max_outbound;
    sc->allow_duplicate_ip = o->allow_duplicate_ip;
    sc->persistent_peers = o->persistent;
    sc->n_persistent_peers = o->n_persistent;
    sc->seeds = o->seeds;
    sc->n_seeds = o->n_seeds;
    if (o->redial_base_ms)
        sc->redial_base_ms = o->redial_base_ms;
    if (o->redial_max_ms)
        sc->redial_max_ms = o->redial_max_ms;
    if (o->seed_interval_ms)
        sc->seed_interval_ms = o->seed_interval_ms;
    sc->private_peer_ids = o->private_ids;
    sc->n_private_peer_ids = o->n_private;
    sc->mconn = o->mconn;
    const cli_node_defences *d = o->defences;
    if (d) {
        sc->unconditional_peer_ids = d->unconditional;
        sc->n_unconditional_peer_ids = d->n_unconditional;
        sc->max_pending_inbound_per_ip = d->max_pending_inbound_per_ip;
        sc->accept_ip_rate = d->accept_ip_rate;
        sc->accept_ip_burst = d->accept_ip_burst;
        sc->accept_subnet_rate = d->accept_subnet_rate;
        sc->accept_subnet_burst = d->accept_subnet_burst;
        sc->max_inbound_per_ip = d->max_inbound_per_ip;
        sc->max_inbound_per_subnet = d->max_inbound_per_subnet;
        sc->outbound_diversity = d->outbound_diversity;
        sc->evict_inbound = d->evict_inbound;
        sc->evict_protect_groups = d->evict_protect_groups;
        sc->evict_protect_latency = d->evict_protect_latency;
        sc->evict_protect_active = d->evict_protect_active;
        sc->evict_protect_oldest_pct = d->evict_protect_oldest_pct;
        sc->limit_local_addrs = d->limit_local_addrs;
        sc->ban_duration_ms = d->ban_duration_ms;
        sc->ban_file = d->ban_file;
    }
}

int cli_node_create(const cli_node_opts *o, const cli_log *lg, cli_node **out, char *err, size_t err_len)
{
    cli_node *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, err_len, "out of memory");
        return TM2_ENOMEM;
    }
    n->log = *lg;
    int r;
    if (o->http_addr && !(n->http_addr = strdup(o->http_addr))) {
        snprintf(err, err_len, "out of memory");
        r = TM2_ENOMEM;
        goto fail;
    }
    if (o->pex) {
        tm2_discovery_config dc = {
            .interval_ms = o->pex_interval_ms,
            .addrbook_path = o->addrbook_path,
            .seed_mode = o->seed_mode,
            .seed_disconnect_ms = o->seed_disconnect_ms,
            .target_outbound = o->max_outbound,
            .log = cli_log_switch,
            .log_user = &n->log,
            .log_level = n->log.level,
        };
        if ((r = tm2_discovery_new(&dc, &n->disc)) < 0) {
            snprintf(err, err_len, "discovery: %s", tm2_strerror(r));
            goto fail;
        }
        add_reactor(n, tm2_discovery_reactor(n->disc));
    }
    if (o->gossip_interval_ms) {
        cli_gossip_config gc = {.origin = o->gossip_origin, .epoch_ms = o->gossip_epoch_ms,
                                .seconds = o->gossip_seconds, .log = cli_log_switch,
                                .log_user = &n->log, .log_level = n->log.level};
        if ((r = cli_gossip_new(&gc, &n->gossip)) < 0) {
            snprintf(err, err_len, "gossip: %s", tm2_strerror(r));
            goto fail;
        }
        add_reactor(n, cli_gossip_reactor(n->gossip));
        n->gossip_interval_ms = o->gossip_interval_ms;
        n->gossip_until_ms = o->gossip_until_ms;
    }
    tm2_switch_config sc;
    cli_node_switch_config(o, &sc);
    sc.reactors = n->reactors;
    sc.n_reactors = n->n_reactors;
    sc.log = cli_log_switch;
    sc.log_user = &n->log;
    sc.log_level = n->log.level;
    r = tm2_switch_new(&sc, &n->sw);
    tm2_node_key_wipe(&sc.key);
    if (r < 0) {
        snprintf(err, err_len, "switch: %s", tm2_strerror(r));
        goto fail;
    }
    if (o->log_events && (r = tm2_switch_subscribe(n->sw, TM2_EVENT_ALL, NULL, 1000, &n->sub)) < 0) {
        snprintf(err, err_len, "subscribe: %s", tm2_strerror(r));
        goto fail;
    }
    if (n->gossip && (r = cli_gossip_run(n->gossip, n->sw, n->gossip_interval_ms, n->gossip_until_ms)) < 0) {
        snprintf(err, err_len, "gossip: %s", tm2_strerror(r));
        goto fail;
    }
    *out = n;
    return 0;
fail:
    cli_node_free(n);
    return r;
}

int cli_node_start(cli_node *n, char *err, size_t err_len)
{
    int r = tm2_switch_start(n->sw);
    if (r < 0) {
        snprintf(err, err_len, "cannot start the switch: %s", tm2_strerror(r));
        return r;
    }
    n->started = true;
    /* After the switch: every request reads a running switch. */
    if (n->http_addr) {
        cli_http_config hc = {.listen_addr = n->http_addr, .sw = n->sw, .disc = n->disc, .log = &n->log};
        if (cli_http_start(&hc, &n->http, err, err_len) < 0)
            return TM2_EIO;
    }
    return 0;
}

void cli_node_stop(cli_node *n)
{
    if (!n || n->stopped)
        return;
    n->stopped = true;
    /* Before the switch: no request runs while it stops. */
    cli_http_stop(n->http);
    n->http = NULL;
    if (n->sw)
        tm2_switch_stop(n->sw);
    if (n->sub)
        cli_node_drain_events(n);
}

void cli_node_free(cli_node *n)
{
    if (!n)
        return;
    cli_node_stop(n);
    if (n->sub)
        tm2_unsubscribe(n->sub);
    tm2_switch_free(n->sw);
    tm2_discovery_free(n->disc);
    cli_gossip_free(n->gossip);
    free(n->http_addr);
    free(n);
}

tm2_switch *cli_node_switch(cli_node *n)
{
    return n->sw;
}

const tm2_id *cli_node_id(const cli_node *n)
{
    return tm2_switch_id(n->sw);
}

void cli_node_listen_addr(cli_node *n, char *buf, size_t cap)
{
    tm2_netaddr a;
    if (cap)
        buf[0] = '\0';
    if (tm2_switch_listen_addr(n->sw, &a) == 0) {
        a.id = *tm2_switch_id(n->sw);
        tm2_netaddr_format(&a, buf, cap);
    }
}

const char *cli_node_http_addr(const cli_node *n)
{
    return n->http ? cli_http_addr(n->http) : NULL;
}

struct cli_gossip *cli_node_gossip(cli_node *n)
{
    return n->gossip;
}

struct tm2_discovery *cli_node_discovery(cli_node *n)
{
    return n->disc;
}

int cli_node_event_fd(const cli_node *n)
{
    return n->sub ? tm2_subscription_fd(n->sub) : -1;
}

static const char *event_name(tm2_event_type t)
{
    switch (t) {
    case TM2_EVENT_PEER_CONNECTED: return "peer connected";
    case TM2_EVENT_PEER_DISCONNECTED: return "peer disconnected";
    case TM2_EVENT_DIAL_FAILED: return "dial failed";
    case TM2_EVENT_PEER_REJECTED: return "peer rejected";
    case TM2_EVENT_PEER_REPLACED: return "peer connection replaced";
    case TM2_EVENT_PEER_BANNED: return "peer banned";
    }
    return "event";
}

#define REJECT_BURST 10
#define REJECT_WINDOW_MS 10000

static void reject_summary(cli_node *n)
{
    if (!n->rej_held_total)
        return;
    char total[24], by[1024];
    size_t o = 0;
    by[0] = '\0';
    for (size_t k = 0; k < TM2_STATS_REASONS; k++) {
        if (!n->rej_held[k])
            continue;
        int w = snprintf(by + o, sizeof by - o, "%s%s:%llu", o ? "," : "", tm2_errname(-(int)k),
                         (unsigned long long)n->rej_held[k]);
        if (w < 0 || (size_t)w >= sizeof by - o)
            break;
        o += (size_t)w;
    }
    snprintf(total, sizeof total, "%llu", (unsigned long long)n->rej_held_total);
    cli_log_kv(&n->log, TM2_LOG_WARN, "connections rejected before authentication (not logged one by one)",
               "count", total, "by_reason", by, (const char *)NULL);
    memset(n->rej_held, 0, sizeof n->rej_held);
    n->rej_held_total = 0;
}

/* False when the line for ev is held back (and counted). */
static bool reject_may_log(cli_node *n, const tm2_event *ev, uint64_t now)
{
    if (now >= n->rej_window_ms + REJECT_WINDOW_MS) {
        reject_summary(n);
        n->rej_window_ms = now;
        n->rej_logged = 0;
    }
    if (ev->type != TM2_EVENT_PEER_REJECTED || ev->peer_id.s[0])
        return true;
    if (n->rej_logged < REJECT_BURST) {
        n->rej_logged++;
        return true;
    }
    int k = ev->reason <= 0 && ev->reason > -TM2_STATS_REASONS ? -ev->reason : TM2_STATS_REASONS - 1;
    n->rej_held[k]++;
    n->rej_held_total++;
    return false;
}

void cli_node_drain_events(cli_node *n)
{
    if (!n->sub)
        return;
    tm2_event ev;
    /* An empty drain still closes a window whose summary is due. */
    tm2_event none = {.type = TM2_EVENT_PEER_CONNECTED};
    reject_may_log(n, &none, cli_mono_ms());
    while (tm2_subscription_next(n->sub, &ev, 0) == 0) {
        if (!reject_may_log(n, &ev, ev.mono_ms))
            continue;
        char addr[TM2_NETADDR_STRLEN] = "";
        tm2_netaddr_format(&ev.addr, addr, sizeof addr);
        const char *reason = ev.reason_text[0] ? ev.reason_text : ev.reason ? tm2_strerror(ev.reason) : NULL;
        tm2_log_level lvl = TM2_LOG_INFO;
        if (ev.type == TM2_EVENT_PEER_DISCONNECTED && !ev.reason)
            reason = "stopped";
        cli_log_kv(&n->log, lvl, event_name(ev.type), "peer", ev.peer_id.s[0] ? ev.peer_id.s : NULL,
                   "addr", addr, "direction", ev.outbound ? "outbound" : "inbound", "reason", reason,
                   (const char *)NULL);
    }
    uint64_t dropped = tm2_subscription_dropped(n->sub);
    if (dropped > n->events_dropped) {
        char d[24];
        snprintf(d, sizeof d, "%llu", (unsigned long long)(dropped - n->events_dropped));
        cli_log_kv(&n->log, TM2_LOG_WARN, "events dropped (reader too slow)", "count", d, (const char *)NULL);
        n->events_dropped = dropped;
    }
}

size_t cli_node_peers(cli_node *n, tm2_id *ids, bool *outbound, size_t cap)
{
    tm2_peer *buf[256];
    tm2_peer **ps = buf;
    size_t want = sizeof buf / sizeof buf[0];
    size_t got = tm2_switch_peers(n->sw, ps, want);
    if (got > want) {
        /* more than fit on the stack: ask again with room to spare */
        size_t m = got;
        for (size_t i = 0; i < want; i++)
            tm2_peer_unref(ps[i]);
        want = m + 64;
        ps = malloc(want * sizeof *ps);
        if (!ps)
            return 0;
        got = tm2_switch_peers(n->sw, ps, want);
    }
    size_t k = got < want ? got : want;
    for (size_t i = 0; i < k; i++) {
        if (i < cap) {
            ids[i] = *tm2_peer_id(ps[i]);
            if (outbound)
                outbound[i] = tm2_peer_in_outbound_slot(ps[i]);
        }
        tm2_peer_unref(ps[i]);
    }
    if (ps != buf)
        free(ps);
    return got;
}

static uint64_t sum(const uint64_t *a, size_t n)
{
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += a[i];
    return t;
}

void cli_node_counters_get(cli_node *n, cli_node_counters *c)
{
    memset(c, 0, sizeof *c);
    tm2_switch_counters st;
    if (tm2_switch_stats(n->sw, &st) != 0)
        return;
    c->connects = st.peers_connected_inbound + st.peers_connected_outbound;
    c->disconnects = sum(st.peers_disconnected, TM2_STATS_REASONS);
    c->dial_failures = sum(st.dials_failed, TM2_STATS_REASONS);
    c->rejections = sum(st.rejected, TM2_STATS_REASONS);
    c->wire_sent = st.wire_bytes_sent;
    c->wire_recv = st.wire_bytes_recv;
    for (size_t i = 0; i < st.n_channels && c->n_channels < CLI_NODE_MAX_CHANNELS; i++) {
        cli_chan_count *k = &c->channels[c->n_channels++];
        k->id = st.channels[i].id;
        k->msgs = st.channels[i].msgs_recv;
        k->bytes = st.channels[i].bytes_recv;
    }
}

/* ---- tm2p2p node: flags ----------------------------------------------------- */

static const char node_usage[] =
    "usage: tm2p2p node --home DIR [options]\n"
    "\n"
    "Runs a Tendermint2 p2p node until SIGINT or SIGTERM, then closes its peers,\n"
    "saves the address book and exits 0. On first run it creates DIR and the node\n"
    "key. Settings come from DIR/config/config.toml when present (top-level\n"
    "moniker and node_key_file, the [p2p] section with gno's key names); flags\n"
    "override the file.\n"
    "\n"
    "  --home DIR                   node home directory (required)\n"
    "  --laddr ADDR                 listen address [p2p.laddr, tcp://0.0.0.0:26656]\n"
    "  --external-address HOST:PORT advertised address [p2p.external_address]\n"
    "  --seeds LIST                 bootstrap nodes, ID@HOST:PORT,... [p2p.seeds]\n"
    "  --persistent-peers LIST      peers kept connected, ID@HOST:PORT,... [p2p.persistent_peers]\n"
    "  --private-peer-ids LIST      peer IDs never shared with others [p2p.private_peer_ids]\n"
    "  --max-inbound N              inbound peer limit [p2p.max_num_inbound_peers, 40]\n"
    "  --allow-duplicate-ip[=BOOL]  admit several inbound peers from one IP [p2p.allow_duplicate_ip]\n"
    "  --max-outbound N             outbound peer limit and target [p2p.max_num_outbound_peers, 10]\n"
    "  --seed-mode[=BOOL]           crawl, answer discovery requests, then hang up [p2p.seed_mode]\n"
    "  --pex BOOL                   peer exchange and address book [p2p.pex, true]\n"
    "  --addrbook FILE              address book, relative to DIR [p2p.addr_book_file,\n"
    "                               config/addrbook.json]\n"
    "  --chain-id ID                network (chain ID) peers must share [" DEFAULT_NETWORK "]\n"
    "  --moniker NAME               node name [moniker, the host name]\n"
    "  --log-level LEVEL            error, warn, info or debug [info]\n"
    "  --log-format FORMAT          logfmt or json [logfmt]\n"
    "  --prometheus[=BOOL]          serve /metrics, /status and /peers over HTTP\n"
    "                               [instrumentation.prometheus, false]\n"
    "  --prometheus-listen-addr ADDR  their address, HOST:PORT; an empty host is 127.0.0.1\n"
    "                               [instrumentation.prometheus_listen_addr, " CLI_HTTP_DEFAULT_ADDR "]\n"
    "  --check-config               print every problem of the settings and exit (0: none, 2: some)\n"
    "\n"
    "Admission, limits, eviction and bans (0 turns a limit or rate off):\n"
    "  --unconditional-peer-ids LIST  peer IDs always admitted and dialled, never evicted,\n"
    "                               exempt from limits [p2p.unconditional_peer_ids]\n"
    "  --max-pending-inbound-per-ip N  handshakes in flight from one IP\n"
    "                               [p2p.max_pending_inbound_per_ip, 4]\n"
    "  --accept-ip-rate N, --accept-ip-burst N  sockets a minute from one IP, and bursts\n"
    "                               [p2p.accept_ip_rate 12, p2p.accept_ip_burst 12]\n"
    "  --accept-subnet-rate N, --accept-subnet-burst N  the same from one /24 (IPv6 /48)\n"
    "                               [p2p.accept_subnet_rate 60, p2p.accept_subnet_burst 60]\n"
    "  --max-inbound-per-ip N       inbound peers from one IP, with --allow-duplicate-ip\n"
    "                               [p2p.max_inbound_per_ip, 4]\n"
    "  --max-inbound-per-subnet N   inbound peers from one /24 (IPv6 /48)\n"
    "                               [p2p.max_inbound_per_subnet, 8]\n"
    "  --outbound-diversity[=BOOL]  one outbound peer per /16 (IPv6 /32) [p2p.outbound_diversity, true]\n"
    "  --evict-inbound[=BOOL]       when full, evict for a newcomer from a fresh /16\n"
    "                               [p2p.evict_inbound, true]\n"
    "  --evict-protect-groups N     kept from eviction: the oldest peer of each of N network groups\n"
    "                               [p2p.evict_protect_groups, 4]\n"
    "  --evict-protect-latency N    then the N peers with the smallest round trip\n"
    "                               [p2p.evict_protect_latency, 8]\n"
    "  --evict-protect-active N     then the N peers that most recently delivered a message\n"
    "                               [p2p.evict_protect_active, 4]\n"
    "  --evict-protect-oldest-pct P  then P% of the rest, those connected longest\n"
    "                               [p2p.evict_protect_oldest_pct, 50]\n"
    "  --limit-local-addrs[=BOOL]   apply the per-IP and per-subnet rules to loopback and private\n"
    "                               addresses too [p2p.limit_local_addrs, false]\n"
    "  --ban-duration DUR           ban for misbehaviour, e.g. 1h; 0: no such bans\n"
    "                               [p2p.ban_duration, 1h]\n"
    "  --ban-file FILE              bans kept across restarts, relative to DIR\n"
    "                               [p2p.ban_file, data/bans.json]; see 'tm2p2p ban'\n"
    "\n"
    "Tuning and test-network helpers:\n"
    "  --pex-interval MS            discovery tick [3000]\n"
    "  --seed-disconnect MS         seed mode: how long a peer may stay after the exchange [3000]\n"
    "  --redial-base MS, --redial-max MS   persistent peer back-off [1000, 30000]\n"
    "  --seed-interval MS           seed dial rounds [30000]\n"
    "  --gossip-interval MS         run the test gossip reactor, originating every MS [off]\n"
    "  --gossip-for S               originate only during the first S seconds [forever]\n"
    "  --gossip-origin N            origin index carried in our gossip messages [0]\n"
    "  --gossip-epoch MS            CLOCK_MONOTONIC ms where gossip's per-second counters start\n"
    "  --status-file FILE           rewrite FILE with a JSON status every --status-interval\n"
    "  --status-interval MS         [1000]\n"
    "  --log-node NAME              add node=NAME to every log line\n"
    "\n"
    "On start it prints \"<node ID>@<ip>:<port>\" (what peers dial) on standard output.\n"
    "Exit status: 0 after a signal, 1 on a runtime failure, 2 on a bad flag or config value.\n";

typedef struct node_flags {
    const char *home, *laddr, *external, *seeds, *persistent, *private_ids, *max_in, *max_out;
    const char *seed_mode, *pex, *addrbook, *chain_id, *moniker, *log_level, *log_format;
    const char *pex_interval, *seed_disconnect, *redial_base, *redial_max, *seed_interval;
    const char *allow_dup_ip, *check_config, *prometheus, *prometheus_addr;
    const char *gossip_interval, *gossip_for, *gossip_origin, *gossip_epoch;
    const char *status_file, *status_interval, *log_node;
    const char *uncond, *pending_ip, *ip_rate, *ip_burst, *net_rate, *net_burst, *in_ip, *in_net;
    const char *diversity, *evict, *limit_local, *ban_duration, *ban_file;
    const char *protect_groups, *protect_latency, *protect_active, *protect_oldest;
    bool help;
} node_flags;

static const struct flag_def {
    const char *name;
    size_t off;
    const char *implicit;   /* value when given without one; NULL: a value is required */
} node_flag_defs[] = {
    {"--home", offsetof(node_flags, home), NULL},
    {"--laddr", offsetof(node_flags, laddr), NULL},
    {"--external-address", offsetof(node_flags, external), NULL},
    {"--seeds", offsetof(node_flags, seeds), NULL},
    {"--persistent-peers", offsetof(node_flags, persistent), NULL},
    {"--private-peer-ids", offsetof(node_flags, private_ids), NULL},
    {"--max-inbound", offsetof(node_flags, max_in), NULL},
    {"--max-outbound", offsetof(node_flags, max_out), NULL},
    {"--seed-mode", offsetof(node_flags, seed_mode), "true"},
    {"--pex", offsetof(node_flags, pex), NULL},
    {"--addrbook", offsetof(node_flags, addrbook), NULL},
    {"--chain-id", offsetof(node_flags, chain_id), NULL},
    {"--network", offsetof(node_flags, chain_id), NULL},
    {"--moniker", offsetof(node_flags, moniker), NULL},
    {"--log-level", offsetof(node_flags, log_level), NULL},
    {"--log-format", offsetof(node_flags, log_format), NULL},
    {"--pex-interval", offsetof(node_flags, pex_interval), NULL},
    {"--seed-disconnect", offsetof(node_flags, seed_disconnect), NULL},
    {"--redial-base", offsetof(node_flags, redial_base), NULL},
    {"--redial-max", offsetof(node_flags, redial_max), NULL},
    {"--seed-interval", offsetof(node_flags, seed_interval), NULL},
    {"--allow-duplicate-ip", offsetof(node_flags, allow_dup_ip), "true"},
    {"--check-config", offsetof(node_flags, check_config), "true"},
    {"--prometheus", offsetof(node_flags, prometheus), "true"},
    {"--prometheus-listen-addr", offsetof(node_flags, prometheus_addr), NULL},
    {"--gossip-interval", offsetof(node_flags, gossip_interval), NULL},
    {"--gossip-for", offsetof(node_flags, gossip_for), NULL},
    {"--gossip-origin", offsetof(node_flags, gossip_origin), NULL},
    {"--gossip-epoch", offsetof(node_flags, gossip_epoch), NULL},
    {"--status-file", offsetof(node_flags, status_file), NULL},
    {"--status-interval", offsetof(node_flags, status_interval), NULL},
    {"--log-node", offsetof(node_flags, log_node), NULL},
    {"--unconditional-peer-ids", offsetof(node_flags, uncond), NULL},
    {"--max-pending-inbound-per-ip", offsetof(node_flags, pending_ip), NULL},
    {"--accept-ip-rate", offsetof(node_flags, ip_rate), NULL},
    {"--accept-ip-burst", offsetof(node_flags, ip_burst), NULL},
    {"--accept-subnet-rate", offsetof(node_flags, net_rate), NULL},
    {"--accept-subnet-burst", offsetof(node_flags, net_burst), NULL},
    {"--max-inbound-per-ip", offsetof(node_flags, in_ip), NULL},
    {"--max-inbound-per-subnet", offsetof(node_flags, in_net), NULL},
    {"--outbound-diversity", offsetof(node_flags, diversity), "true"},
    {"--evict-inbound", offsetof(node_flags, evict), "true"},
    {"--evict-protect-groups", offsetof(node_flags, protect_groups), NULL},
    {"--evict-protect-latency", offsetof(node_flags, protect_latency), NULL},
    {"--evict-protect-active", offsetof(node_flags, protect_active), NULL},
    {"--evict-protect-oldest-pct", offsetof(node_flags, protect_oldest), NULL},
    {"--limit-local-addrs", offsetof(node_flags, limit_local), "true"},
    {"--ban-duration", offsetof(node_flags, ban_duration), NULL},
    {"--ban-file", offsetof(node_flags, ban_file), NULL},
};

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    fputs("tm2p2p node: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see 'tm2p2p node --help')\n", stderr);
    return 2;
}

static int parse_flags(int argc, char **argv, node_flags *f)
{
    memset(f, 0, sizeof *f);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            f->help = true;
            continue;
        }
        const struct flag_def *d = NULL;
        const char *val = NULL;
        for (size_t k = 0; k < sizeof node_flag_defs / sizeof node_flag_defs[0]; k++) {
            size_t nl = strlen(node_flag_defs[k].name);
            if (!strncmp(a, node_flag_defs[k].name, nl) && (a[nl] == '\0' || a[nl] == '=')) {
                d = &node_flag_defs[k];
                if (a[nl] == '=')
                    val = a + nl + 1;
                break;
            }
        }
        if (!d)
            return usage_error("unknown %s '%s'", a[0] == '-' ? "option" : "argument", a);
        if (!val) {
            if (d->implicit)
                val = d->implicit;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                return usage_error("%s needs a value", d->name);
        }
        const char **slot = (const char **)(void *)((char *)f + d->off);
        if (*slot)
            return usage_error("%s given twice", d->name);
        *slot = val;
    }
    return 0;
}

/* Go's strconv.ParseBool spellings. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "true", "TRUE", "True"};
    static const char *const f[] = {"0", "f", "F", "false", "FALSE", "False"};
    for (size_t i = 0; i < 6; i++) {
        if (!strcmp(s, t[i])) {
            *out = true;
            return 0;
        }
        if (!strcmp(s, f[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!*s || *s == '-' || *s == '+' || *s == ' ')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int flag_u32(const char *flag, const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v;
    if (parse_u64(s, min, max, &v))
        return usage_error("%s: '%s' is not a whole number from %u to %u", flag, s, min, max);
    *out = (uint32_t)v;
    return 0;
}

/* ---- tm2p2p node: resolved settings --------------------------------------- */

typedef struct node_settings {
    cli_config cfg;
    char config_path[4096];
    bool config_found;
    cli_node_opts o;
    cli_log log;
    cli_peer_list persistent, seeds;
    tm2_id *private_ids;
    tm2_id *uncond_ids;
    cli_node_defences def;
    char ban_path[4096];
    bool checking;                 /* --check-config: report every problem, start nothing */
    unsigned problems;
    char moniker[256];
    char key_path[4096];
    char book_path[4096];
    char laddr_str[512];
    uint32_t status_interval_ms;
} node_settings;

static void settings_free(node_settings *s)
{
    cli_config_free(&s->cfg);
    cli_peer_list_free(&s->persistent);
    cli_peer_list_free(&s->seeds);
    free(s->private_ids);
    free(s->uncond_ids);
    tm2_node_key_wipe(&s->o.key);
}

/* "--flag" when the flag gave it, else "KEY in FILE". */
static const char *src(char *buf, size_t cap, const node_settings *s, const char *flag_val,
                       const char *flag, const char *key)
{
    if (flag_val)
        snprintf(buf, cap, "%s", flag);
    else
        snprintf(buf, cap, "%s in %s", key, s->config_path);
    return buf;
}

static void join_home(char *out, size_t cap, const char *home, const char *p)
{
    if (p[0] == '/')
        snprintf(out, cap, "%s", p);
    else
        snprintf(out, cap, "%s%s%s", home, home[strlen(home) - 1] == '/' ? "" : "/", p);
}

static void warn_to_stderr(void *user, const char *msg)
{
    cli_log *lg = user;
    cli_log_kv(lg, TM2_LOG_WARN, msg, (const char *)NULL);
}

/* The config.toml key (or flag) behind a switch config field. */
static const char *config_field_name(const char *field)
{
    static const struct { const char *field, *key; } map[] = {
        {"mconn.max_packet_payload", "p2p.max_packet_msg_payload_size (at most 65536)"},
        {"mconn.pong_timeout_ms", "pong timeout (must be below the ping interval)"},
        {"mconn.max_send_buffer_bytes", "p2p.max_send_buffer_bytes (0, or at least 8454144)"},
        {"mconn.max_recv_buffer_bytes", "p2p.max_recv_buffer_bytes (0, or at least 8454144)"},
        {"redial_max_ms", "--redial-max (at least --redial-base)"},
        {"accept_ip_burst", "p2p.accept_ip_burst (at least 1 while p2p.accept_ip_rate is on)"},
        {"accept_subnet_burst",
         "p2p.accept_subnet_burst (at least 1 while p2p.accept_subnet_rate is on)"},
    };
    for (size_t i = 0; field && i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i].field, field))
            return map[i].key;
    return field ? field : "?";
}

/* Counts a problem; true when it ends resolve() (not in --check-config). */
static bool fatal(node_settings *s, int status)
{
    (void)status;
    s->problems++;
    return !s->checking;
}

/* A count from a flag or the file, 0..max; true on a problem that ends
 * resolve(). */
static bool pick_u32(node_settings *s, const char *flag_val, const char *flag, uint64_t file_val,
                     const char *key, uint32_t max, uint32_t *out)
{
    if (flag_val)
        return flag_u32(flag, flag_val, 0, max, out) && fatal(s, 2);
    if (file_val > max)
        return fatal(s, usage_error("p2p.%s in %s: %llu is not from 0 to %u", key, s->config_path,
                                    (unsigned long long)file_val, max));
    *out = (uint32_t)file_val;
    return false;
}

static bool pick_bool(node_settings *s, const char *flag_val, const char *flag, bool file_val,
                      bool *out)
{
    *out = file_val;
    if (flag_val && parse_bool(flag_val, out))
        return fatal(s, usage_error("%s: '%s' is not true or false", flag, flag_val));
    return false;
}

/* The admission, limit, eviction and ban settings; 0 or 2. */
static int resolve_defences(const node_flags *f, node_settings *s, const char *home)
{
    const cli_config *c = &s->cfg;
    cli_node_defences *d = &s->def;
    char where[4200], err[1024];
    const char *uncond = f->uncond ? f->uncond : c->unconditional_peer_ids;
    int n = cli_parse_id_list(uncond, &s->uncond_ids, err, sizeof err);
    if (n < 0 && fatal(s, usage_error("%s: %s",
                                      src(where, sizeof where, s, f->uncond, "--unconditional-peer-ids",
                                          "p2p.unconditional_peer_ids"),
                                      err)))
        return 2;
    d->unconditional = s->uncond_ids;
    d->n_unconditional = n > 0 ? (size_t)n : 0;
    if (pick_u32(s, f->pending_ip, "--max-pending-inbound-per-ip", c->max_pending_inbound_per_ip,
                 "max_pending_inbound_per_ip", 100000, &d->max_pending_inbound_per_ip) ||
        pick_u32(s, f->ip_rate, "--accept-ip-rate", c->accept_ip_rate, "accept_ip_rate", 1000000,
                 &d->accept_ip_rate) ||
        pick_u32(s, f->ip_burst, "--accept-ip-burst", c->accept_ip_burst, "accept_ip_burst", 1000000,
                 &d->accept_ip_burst) ||
        pick_u32(s, f->net_rate, "--accept-subnet-rate", c->accept_subnet_rate, "accept_subnet_rate",
                 1000000, &d->accept_subnet_rate) ||
        pick_u32(s, f->net_burst, "--accept-subnet-burst", c->accept_subnet_burst,
                 "accept_subnet_burst", 1000000, &d->accept_subnet_burst) ||
        pick_u32(s, f->in_ip, "--max-inbound-per-ip", c->max_inbound_per_ip, "max_inbound_per_ip",
                 100000, &d->max_inbound_per_ip) ||
        pick_u32(s, f->in_net, "--max-inbound-per-subnet", c->max_inbound_per_subnet,
                 "max_inbound_per_subnet", 100000, &d->max_inbound_per_subnet) ||
        pick_bool(s, f->diversity, "--outbound-diversity", c->outbound_diversity,
                  &d->outbound_diversity) ||
        pick_bool(s, f->evict, "--evict-inbound", c->evict_inbound, &d->evict_inbound) ||
        pick_u32(s, f->protect_groups, "--evict-protect-groups", c->evict_protect_groups,
                 "evict_protect_groups", 10000, &d->evict_protect_groups) ||
        pick_u32(s, f->protect_latency, "--evict-protect-latency", c->evict_protect_latency,
                 "evict_protect_latency", 10000, &d->evict_protect_latency) ||
        pick_u32(s, f->protect_active, "--evict-protect-active", c->evict_protect_active,
                 "evict_protect_active", 10000, &d->evict_protect_active) ||
        pick_u32(s, f->protect_oldest, "--evict-protect-oldest-pct", c->evict_protect_oldest_pct,
                 "evict_protect_oldest_pct", 100, &d->evict_protect_oldest_pct) ||
        pick_bool(s, f->limit_local, "--limit-local-addrs", c->limit_local_addrs,
                  &d->limit_local_addrs))
        return 2;
    int64_t ns = c->ban_duration_ns;
    if (f->ban_duration && (cli_parse_duration(f->ban_duration, &ns) || ns < 0) &&
        fatal(s, usage_error("--ban-duration: '%s' is not a duration such as 1h or 30m",
                             f->ban_duration)))
        return 2;
    d->ban_duration_ms = ns > 0 ? (uint64_t)(ns + 999999) / 1000000u : 0;
    const char *bf = f->ban_file ? f->ban_file : c->ban_file;
    if (!bf[0] && fatal(s, usage_error("--ban-file: must not be empty")))
        return 2;
    join_home(s->ban_path, sizeof s->ban_path, home, bf[0] ? bf : TM2_DEFAULT_BAN_FILE);
    d->ban_file = s->ban_path;
    s->o.defences = d;
    return 0;
}

/* Builds the settings from the file and the flags; 0 or an exit status. */
static int resolve(const node_flags *f, node_settings *s)
{
    char where[4200], err[1024];
    s->checking = f->check_config != NULL;
    tm2_log_level lvl = TM2_LOG_INFO;
    cli_log_format fmt = CLI_LOG_LOGFMT;
    if (f->log_level && cli_log_parse_level(f->log_level, &lvl))
        if (fatal(s, usage_error("--log-level: '%s' is not one of error, warn, info, debug", f->log_level)))
            return 2;
    if (f->log_format && cli_log_parse_format(f->log_format, &fmt))
        if (fatal(s, usage_error("--log-format: '%s' is not one of logfmt, json", f->log_format)))
            return 2;
    cli_log_init(&s->log, lvl, fmt, f->log_node);

    if (!f->home || !f->home[0])
        return usage_error("--home DIR is required");
    if (cli_config_defaults(&s->cfg)) {
        fprintf(stderr, "tm2p2p node: out of memory\n");
        return 1;
    }
    join_home(s->config_path, sizeof s->config_path, f->home, "config/config.toml");
    if (cli_config_load(&s->cfg, s->config_path, &s->config_found, warn_to_stderr, &s->log, err, sizeof err))
        return usage_error("%s", err);
    const cli_config *c = &s->cfg;
    cli_node_opts *o = &s->o;

    /* listen and external addresses */
    const char *laddr = f->laddr ? f->laddr : c->laddr;
    tm2_netaddr na;
    int r = tm2_netaddr_parse(laddr, TM2_NETADDR_NO_ID, &na);
    if (r < 0)
        if (fatal(s, usage_error("%s: bad listen address '%s' (%s; an IP literal is needed)",
                           src(where, sizeof where, s, f->laddr, "--laddr", "p2p.laddr"), laddr, tm2_strerror(r))))
            return 2;
    snprintf(s->laddr_str, sizeof s->laddr_str, "%s", laddr);
    o->listen_addr = s->laddr_str;
    const char *ext = f->external ? f->external : c->external_address;
    if (ext[0]) {
        r = tm2_netaddr_parse(ext, TM2_NETADDR_NO_ID | TM2_NETADDR_RESOLVE, &na);
        if (r < 0)
            if (fatal(s, usage_error("%s: bad address '%s' (%s)",
                               src(where, sizeof where, s, f->external, "--external-address",
                                   "p2p.external_address"), ext, tm2_strerror(r))))
            return 2;
        o->external_addr = ext;
    }

    /* lists */
    const char *seeds = f->seeds ? f->seeds : c->seeds;
    src(where, sizeof where, s, f->seeds, "--seeds", "p2p.seeds");
    if (cli_parse_peer_list(seeds, where, &s->log, &s->seeds, &s->problems) < 0)
        return 1;
    const char *pp = f->persistent ? f->persistent : c->persistent_peers;
    src(where, sizeof where, s, f->persistent, "--persistent-peers", "p2p.persistent_peers");
    if (cli_parse_peer_list(pp, where, &s->log, &s->persistent, &s->problems) < 0)
        return 1;
    o->seeds = (const char *const *)s->seeds.items;
    o->n_seeds = s->seeds.n;
    o->persistent = (const char *const *)s->persistent.items;
    o->n_persistent = s->persistent.n;
    const char *priv = f->private_ids ? f->private_ids : c->private_peer_ids;
    int n = cli_parse_id_list(priv, &s->private_ids, err, sizeof err);
    if (n < 0)
        if (fatal(s, usage_error("%s: %s",
                           src(where, sizeof where, s, f->private_ids, "--private-peer-ids", "p2p.private_peer_ids"), err)))
            return 2;
    o->private_ids = s->private_ids;
    o->n_private = (size_t)n;

    /* limits: 0 means none, as in the reference */
    uint64_t v = 0;
    if (f->max_in) {
        if (flag_u32("--max-inbound", f->max_in, 0, 100000, &o->max_inbound) && fatal(s, 2))
            return 2;
    } else if (c->max_num_inbound_peers > 100000) {
        if (fatal(s, usage_error("p2p.max_num_inbound_peers in %s: %llu is not from 0 to 100000", s->config_path,
                           (unsigned long long)c->max_num_inbound_peers)))
            return 2;
    } else {
        o->max_inbound = (uint32_t)c->max_num_inbound_peers;
    }
    if (f->max_out) {
        if (flag_u32("--max-outbound", f->max_out, 0, 100000, &o->max_outbound) && fatal(s, 2))
            return 2;
    } else if (c->max_num_outbound_peers > 100000) {
        if (fatal(s, usage_error("p2p.max_num_outbound_peers in %s: %llu is not from 0 to 100000", s->config_path,
                           (unsigned long long)c->max_num_outbound_peers)))
            return 2;
    } else {
        o->max_outbound = (uint32_t)c->max_num_outbound_peers;
    }

    /* connection tuning from the file */
    tm2_mconn_config_default(&o->mconn);
    if (c->flush_throttle_timeout_ns / 1000000 > UINT32_MAX)
        if (fatal(s, usage_error("p2p.flush_throttle_timeout in %s: too long", s->config_path)))
            return 2;
    o->mconn.flush_throttle_ms = (uint32_t)((c->flush_throttle_timeout_ns + 999999) / 1000000);
    /* Range checked with the whole switch config below. */
    o->mconn.max_packet_payload = c->max_packet_msg_payload_size > 0 && c->max_packet_msg_payload_size <= INT32_MAX
                                      ? (size_t)c->max_packet_msg_payload_size
                                      : 0;
    o->mconn.send_rate = (uint64_t)c->send_rate;
    o->mconn.recv_rate = (uint64_t)c->recv_rate;
    o->mconn.max_send_buffer_bytes = (size_t)c->max_send_buffer_bytes;
    o->mconn.max_recv_buffer_bytes = (size_t)c->max_recv_buffer_bytes;
    if (c->recv_assembly_timeout_ns / 1000000 > UINT32_MAX)
        if (fatal(s, usage_error("p2p.recv_assembly_timeout in %s: too long", s->config_path)))
            return 2;
    o->mconn.recv_assembly_timeout_ms = (uint32_t)((c->recv_assembly_timeout_ns + 999999) / 1000000);

    /* booleans */
    o->pex = c->pex;
    if (f->pex && parse_bool(f->pex, &o->pex))
        if (fatal(s, usage_error("--pex: '%s' is not true or false", f->pex)))
            return 2;
    o->seed_mode = c->seed_mode;
    if (f->seed_mode && parse_bool(f->seed_mode, &o->seed_mode))
        if (fatal(s, usage_error("--seed-mode: '%s' is not true or false", f->seed_mode)))
            return 2;
    o->allow_duplicate_ip = c->allow_duplicate_ip;
    if (f->allow_dup_ip && parse_bool(f->allow_dup_ip, &o->allow_duplicate_ip))
        if (fatal(s, usage_error("--allow-duplicate-ip: '%s' is not true or false", f->allow_dup_ip)))
            return 2;
    bool prom = c->prometheus;
    if (f->prometheus && parse_bool(f->prometheus, &prom))
        if (fatal(s, usage_error("--prometheus: '%s' is not true or false", f->prometheus)))
            return 2;
    const char *paddr = f->prometheus_addr ? f->prometheus_addr : c->prometheus_listen_addr;
    if (cli_http_addr_check(paddr))
        if (fatal(s, usage_error("%s: bad address '%s' (want HOST:PORT, [IPv6]:PORT or :PORT)",
                                 src(where, sizeof where, s, f->prometheus_addr, "--prometheus-listen-addr",
                                     "instrumentation.prometheus_listen_addr"),
                                 paddr)))
            return 2;
    if (prom)
        o->http_addr = paddr;
    if (!o->pex && o->seed_mode)
        if (fatal(s, usage_error("seed mode needs peer exchange (pex is false)")))
            return 2;

    /* admission, limits, eviction, bans */
    if (resolve_defences(f, s, f->home))
        return 2;

    /* identity and names */
    const char *moniker = f->moniker ? f->moniker : c->moniker;
    if (f->moniker && !f->moniker[0])
        if (fatal(s, usage_error("--moniker: must not be empty")))
            return 2;
    if (!moniker[0] && gethostname(s->moniker, sizeof s->moniker - 1) == 0 && s->moniker[0])
        moniker = s->moniker;
    else if (!moniker[0])
        moniker = "tm2p2p";
    if (moniker != s->moniker)
        snprintf(s->moniker, sizeof s->moniker, "%s", moniker);
    o->moniker = s->moniker;
    o->network = f->chain_id ? f->chain_id : DEFAULT_NETWORK;
    if (!o->network[0])
        if (fatal(s, usage_error("--chain-id: must not be empty")))
            return 2;
    join_home(s->key_path, sizeof s->key_path, f->home, c->node_key_file);
    join_home(s->book_path, sizeof s->book_path, f->home, f->addrbook ? f->addrbook : c->addr_book_file);
    if (!(f->addrbook ? f->addrbook : c->addr_book_file)[0])
        if (fatal(s, usage_error("%s: must not be empty",
                           src(where, sizeof where, s, f->addrbook, "--addrbook", "p2p.addr_book_file"))))
            return 2;
    o->addrbook_path = s->book_path;

    /* helpers */
    if (f->pex_interval && flag_u32("--pex-interval", f->pex_interval, 10, 3600000, &o->pex_interval_ms))
        return 2;
    if (f->seed_disconnect && flag_u32("--seed-disconnect", f->seed_disconnect, 1, 3600000, &o->seed_disconnect_ms))
        return 2;
    if (f->redial_base && flag_u32("--redial-base", f->redial_base, 1, 3600000, &o->redial_base_ms))
        return 2;
    if (f->redial_max && flag_u32("--redial-max", f->redial_max, 1, 86400000, &o->redial_max_ms))
        return 2;
    if (f->seed_interval && flag_u32("--seed-interval", f->seed_interval, 10, 86400000, &o->seed_interval_ms))
        return 2;
    if (f->gossip_interval && flag_u32("--gossip-interval", f->gossip_interval, 0, 3600000, &o->gossip_interval_ms))
        return 2;
    uint32_t gfor = 0;
    if (f->gossip_for && flag_u32("--gossip-for", f->gossip_for, 0, 86400, &gfor))
        return 2;
    if (f->gossip_origin && flag_u32("--gossip-origin", f->gossip_origin, 0, UINT32_MAX, &o->gossip_origin))
        return 2;
    o->gossip_epoch_ms = cli_mono_ms();
    if (f->gossip_epoch) {
        if (parse_u64(f->gossip_epoch, 0, UINT64_MAX / 2, &v))
            if (fatal(s, usage_error("--gossip-epoch: '%s' is not a whole number", f->gossip_epoch)))
            return 2;
        o->gossip_epoch_ms = v;
    }
    o->gossip_until_ms = gfor ? cli_mono_ms() + (uint64_t)gfor * 1000u : 0;
    o->gossip_seconds = 3600;
    s->status_interval_ms = 1000;
    if (f->status_interval && flag_u32("--status-interval", f->status_interval, 10, 3600000, &s->status_interval_ms))
        return 2;
    if (f->status_file && !f->status_file[0])
        if (fatal(s, usage_error("--status-file: must not be empty")))
            return 2;
    o->log_events = true;

    /* What the switch would refuse, refused here, before anything is made;
     * a throwaway key stands in for the node's, read later. */
    tm2_switch_config sc;
    cli_node_switch_config(o, &sc);
    if (tm2_node_key_generate(&sc.key) != 0) {
        fprintf(stderr, "tm2p2p node: no randomness for a key\n");
        return 1;
    }
    const char *field = NULL;
    r = tm2_switch_config_check(&sc, &field);
    tm2_node_key_wipe(&sc.key);
    if (r && fatal(s, usage_error("invalid setting: %s (%s and flags)", config_field_name(field),
                                  s->config_path)))
        return 2;
    return s->checking && s->problems ? 2 : 0;
}


/* ---- tm2p2p node: status file ------------------------------------------------ */

static void write_status(cli_node *node, const char *path, const char *listen, const cli_node_opts *o)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return;
    size_t in = 0, out = 0, dialing = 0;
    tm2_switch_counts(cli_node_switch(node), &in, &out, &dialing);
    cli_node_counters c;
    cli_node_counters_get(node, &c);
    cJSON_AddStringToObject(j, "id", cli_node_id(node)->s);
    cJSON_AddStringToObject(j, "listen", listen);
    cJSON_AddNumberToObject(j, "pid", (double)getpid());
    cJSON_AddNumberToObject(j, "mono_ms", (double)cli_mono_ms());
    cJSON_AddBoolToObject(j, "seed_mode", o->seed_mode);
    cJSON_AddNumberToObject(j, "inbound", (double)in);
    cJSON_AddNumberToObject(j, "outbound", (double)out);
    cJSON_AddNumberToObject(j, "dialing", (double)dialing);
    tm2_id ids[512];
    bool dir[512];
    size_t np = cli_node_peers(node, ids, dir, 512);
    cJSON *peers = cJSON_AddArrayToObject(j, "peers");
    for (size_t i = 0; peers && i < np && i < 512; i++) {
        cJSON *p = cJSON_CreateObject();
        if (!p || !cJSON_AddItemToArray(peers, p)) {
            cJSON_Delete(p);
            break;
        }
        cJSON_AddStringToObject(p, "id", ids[i].s);
        cJSON_AddBoolToObject(p, "outbound", dir[i]);
    }
    cJSON_AddNumberToObject(j, "connects", (double)c.connects);
    cJSON_AddNumberToObject(j, "disconnects", (double)c.disconnects);
    cJSON_AddNumberToObject(j, "dial_failures", (double)c.dial_failures);
    cJSON_AddNumberToObject(j, "rejections", (double)c.rejections);
    cJSON_AddNumberToObject(j, "wire_sent", (double)c.wire_sent);
    cJSON_AddNumberToObject(j, "wire_recv", (double)c.wire_recv);
    cJSON *chans = cJSON_AddArrayToObject(j, "channels");
    for (size_t i = 0; chans && i < c.n_channels; i++) {
        cJSON *ch = cJSON_CreateObject();
        if (!ch || !cJSON_AddItemToArray(chans, ch)) {
            cJSON_Delete(ch);
            break;
        }
        cJSON_AddNumberToObject(ch, "id", c.channels[i].id);
        cJSON_AddNumberToObject(ch, "msgs", (double)c.channels[i].msgs);
        cJSON_AddNumberToObject(ch, "bytes", (double)c.channels[i].bytes);
    }
    if (cli_node_discovery(node)) {
        tm2_discovery_stats ds;
        tm2_discovery_get_stats(cli_node_discovery(node), &ds);
        cJSON *d = cJSON_AddObjectToObject(j, "discovery");
        if (d) {
            cJSON_AddNumberToObject(d, "requests_sent", (double)ds.requests_sent);
            cJSON_AddNumberToObject(d, "requests_answered", (double)ds.requests_answered);
            cJSON_AddNumberToObject(d, "responses_received", (double)ds.responses_received);
            cJSON_AddNumberToObject(d, "responses_rejected", (double)ds.responses_rejected);
            cJSON_AddNumberToObject(d, "dials", (double)ds.dials);
            cJSON_AddNumberToObject(d, "book_size", (double)ds.book_size);
        }
    }
    if (cli_node_gossip(node)) {
        cli_gossip_totals t;
        if (cli_gossip_totals_init(&t, o->gossip_seconds) == 0) {
            cli_gossip_add_totals(cli_node_gossip(node), &t);
            cJSON *g = cli_gossip_totals_to_json(&t);
            if (g && !cJSON_AddItemToObject(j, "gossip", g))
                cJSON_Delete(g);
            cli_gossip_totals_free(&t);
        }
    }
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text)
        return;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f) {
        bool ok = fputs(text, f) >= 0;
        ok = fclose(f) == 0 && ok;
        if (ok)
            rename(tmp, path);
        else
            unlink(tmp);
    }
    free(text);
}

/* ---- tm2p2p node ---------------------------------------------------------------- */

int cli_run_node(int argc, char **argv)
{
    node_flags f;
    int r = parse_flags(argc, argv, &f);
    if (r)
        return r;
    if (f.help) {
        fputs(node_usage, stdout);
        return 0;
    }
    node_settings *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "tm2p2p node: out of memory\n");
        return 1;
    }
    int status = resolve(&f, s);
    cli_node *node = NULL;
    int sfd = -1, ban_lock = -1;
    if (s->checking) {
        if (!status)
            printf("config ok: %s\n", s->config_found ? s->config_path : "defaults and flags");
        else
            fprintf(stderr, "tm2p2p node: %u problem%s\n", s->problems, s->problems == 1 ? "" : "s");
        goto out;
    }
    if (status)
        goto out;
    status = 1;

    /* Operators read from the journal which build ran. */
    tm2_build_info bi;
    tm2_build_info_get(&bi);
    cli_log_kv(&s->log, TM2_LOG_INFO, "starting tm2p2p", "version", bi.version, "commit", bi.commit,
               "protocol", bi.protocol, (const char *)NULL);

    char err[1024];
    char cfgdir[4200];
    join_home(cfgdir, sizeof cfgdir, f.home, "config");
    if (tm2__mkdirs(f.home, 0700) || tm2__mkdirs(cfgdir, 0755)) {
        cli_log_kv(&s->log, TM2_LOG_ERROR, "cannot create the node home", "dir", cfgdir, "reason",
                   strerror(errno), (const char *)NULL);
        goto out;
    }
    struct stat st;
    bool new_key = stat(s->key_path, &st) != 0;
    r = tm2_node_key_load_or_generate(s->key_path, &s->o.key, err, sizeof err);
    if (r < 0) {
        cli_log_kv(&s->log, TM2_LOG_ERROR, "cannot load the node key", "file", s->key_path, "reason", err,
                   (const char *)NULL);
        goto out;
    }
    if (new_key)
        cli_log_kv(&s->log, TM2_LOG_INFO, "created node key", "file", s->key_path, (const char *)NULL);
    if (!s->config_found)
        cli_log_kv(&s->log, TM2_LOG_DEBUG, "no config file, using defaults and flags", "file",
                   s->config_path, (const char *)NULL);

    /* One process at a time writes the ban file (tm2p2p ban waits for
     * the node to stop). */
    int r_lock = cli_ban_lock(s->ban_path, &ban_lock, err, sizeof err);
    if (r_lock) {
        cli_log_kv(&s->log, TM2_LOG_ERROR, "cannot take the ban file", "reason", err, (const char *)NULL);
        goto out;
    }

    /* Signals go to a descriptor; block them before any thread exists so
     * every thread inherits the mask. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0 || (sfd = signalfd(-1, &mask, SFD_CLOEXEC)) < 0) {
        cli_log_kv(&s->log, TM2_LOG_ERROR, "cannot set up signal handling", "reason", strerror(errno),
                   (const char *)NULL);
        goto out;
    }

    cli_fd_limit_ensure(&s->log, cli_node_max_conns(&s->o));
    r = cli_node_create(&s->o, &s->log, &node, err, sizeof err);
    if (r < 0) {
        cli_log_kv(&s->log, TM2_LOG_ERROR, "cannot create the node", "reason", err, (const char *)NULL);
        status = r == TM2_EINVAL ? 2 : 1;
        goto out;
    }
    r = cli_node_start(node, err, sizeof err);
    if (r < 0) {
        cli_node_drain_events(node);
        cli_log_kv(&s->log, TM2_LOG_ERROR, "cannot start the node", "laddr", s->o.listen_addr, "reason", err,
                   (const char *)NULL);
        goto out;
    }
    char listen[TM2_NETADDR_STRLEN];
    cli_node_listen_addr(node, listen, sizeof listen);
    /* Before "node listening", which tells a reader the node is up. */
    if (cli_node_http_addr(node))
        cli_log_kv(&s->log, TM2_LOG_INFO, "http endpoints listening", "addr", cli_node_http_addr(node), "paths",
                   "/metrics,/status,/peers", (const char *)NULL);
    char ns[16];
    snprintf(ns, sizeof ns, "%zu", s->o.n_persistent);
    cli_log_kv(&s->log, TM2_LOG_INFO, "node listening", "id", cli_node_id(node)->s, "addr", listen,
               "moniker", s->o.moniker, "network", s->o.network, "pex", s->o.pex ? "true" : "false",
               "seed_mode", s->o.seed_mode ? "true" : "false", "persistent_peers", ns,
               "addrbook", s->o.pex ? s->o.addrbook_path : NULL, (const char *)NULL);
    printf("%s\n", listen);
    fflush(stdout);

    uint64_t next_status = 0;
    for (;;) {
        if (f.status_file && cli_mono_ms() >= next_status) {
            write_status(node, f.status_file, listen, &s->o);
            next_status = cli_mono_ms() + s->status_interval_ms;
        }
        struct pollfd pf[2] = {{.fd = sfd, .events = POLLIN}, {.fd = cli_node_event_fd(node), .events = POLLIN}};
        int timeout = f.status_file ? (int)s->status_interval_ms : 1000;
        int pr = poll(pf, 2, timeout);
        if (pr < 0 && errno != EINTR) {
            cli_log_kv(&s->log, TM2_LOG_ERROR, "poll failed", "reason", strerror(errno), (const char *)NULL);
            break;
        }
        /* Also on a timeout: a held-back summary may be due. */
        cli_node_drain_events(node);
        if (pr > 0 && (pf[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                cli_log_kv(&s->log, TM2_LOG_INFO, "shutting down", "signal",
                           si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM", (const char *)NULL);
                status = 0;
                break;
            }
        }
    }
    cli_node_stop(node);
    if (f.status_file)
        write_status(node, f.status_file, listen, &s->o);
    cli_log_kv(&s->log, TM2_LOG_INFO, "stopped", "id", cli_node_id(node)->s, (const char *)NULL);
out:
    cli_node_free(node);
    if (sfd >= 0)
        close(sfd);
    if (ban_lock >= 0)
        close(ban_lock);
    settings_free(s);
    free(s);
    return status;
}
