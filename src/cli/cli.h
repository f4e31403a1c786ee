/* The tm2p2p program's subcommands. Each returns the process exit status:
 * 0 success, 1 runtime failure, 2 bad usage. */
#ifndef TM2_CLI_H
#define TM2_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/log.h"
#include "tm2p2p/channel.h"
#include "tm2p2p/key.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/switch.h"

int cli_keys(int argc, char **argv);
int cli_run_node(int argc, char **argv);
int cli_run_testnet(int argc, char **argv);
int cli_run_sim(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_run_crawl(int argc, char **argv);
int cli_run_seed(int argc, char **argv);
int cli_version(int argc, char **argv);
int cli_ban(int argc, char **argv);

/* Takes the lock that says a process writes ban_file ("<ban_file>.lock",
 * flock, held until *fd is closed; missing directories are made). 0, 1
 * when another process holds it, -1 on another failure; err says which. */
int cli_ban_lock(const char *ban_file, int *fd, char *err, size_t err_len);

/* What the program announces as its NodeInfo Version: "v<release>", plus
 * "+<12 hex digits of the commit>" (and ".dirty") when built from git.
 * A static string; any thread. */
const char *cli_announced_version(void);
#define CLI_SOFTWARE "tm2p2p"

/* ---- a running node: switch + discovery + optional gossip (node.c) -------
 *
 * Shared by `tm2p2p node` (one per process) and `tm2p2p testnet` (many per
 * process). Everything here is called from one controlling thread. */

/* The switch's admission, limit, eviction and ban settings as the program
 * sets them (tm2_switch_config's fields of the same names). */
typedef struct cli_node_defences {
    const tm2_id *unconditional;
    size_t n_unconditional;
    uint32_t max_pending_inbound_per_ip;
    uint32_t accept_ip_rate, accept_ip_burst;
    uint32_t accept_subnet_rate, accept_subnet_burst;
    uint32_t max_inbound_per_ip, max_inbound_per_subnet;
    bool outbound_diversity, evict_inbound, limit_local_addrs;
    uint32_t evict_protect_groups, evict_protect_latency, evict_protect_active;
    uint32_t evict_protect_oldest_pct;
    uint64_t ban_duration_ms;
    const char *ban_file;                      /* NULL: bans in memory only */
} cli_node_defences;

typedef struct cli_node_opts {
    tm2_node_key key;                 /* copied */
    const char *listen_addr;          /* "tcp://127.0.0.1:0" */
    const char *external_addr;        /* NULL: the listen address */
    const char *network;
    const char *moniker;
    uint32_t max_inbound, max_outbound;
    const char *const *persistent;    /* "ID@host:port" */
    size_t n_persistent;
    const char *const *seeds;
    size_t n_seeds;
    bool allow_duplicate_ip;
    const tm2_id *private_ids;
    size_t n_private;
    tm2_mconn_config mconn;
    const cli_node_defences *defences;        /* NULL: the library's defaults */
    uint32_t redial_base_ms, redial_max_ms;    /* 0: switch defaults */
    uint32_t seed_interval_ms;                 /* 0: switch default */

    bool pex;
    bool seed_mode;
    uint32_t pex_interval_ms;                  /* 0: 3000 */
    uint32_t seed_disconnect_ms;               /* 0: discovery default */
    const char *addrbook_path;                 /* NULL: in memory */

    uint32_t gossip_interval_ms;               /* 0: no gossip reactor */
    uint32_t gossip_origin;
    uint64_t gossip_until_ms;                  /* monotonic; 0: forever */
    uint64_t gossip_epoch_ms;                  /* monotonic second 0 of the counters */
    uint32_t gossip_seconds;                   /* per-second counters kept */

    bool log_events;                           /* subscribe and log every event */

    /* /metrics, /status and /peers on this address (cli/http.h); NULL: off.
     * Started after the switch, stopped before it. */
    const char *http_addr;
} cli_node_opts;

typedef struct cli_node cli_node;

/* Messages and bytes received per channel (the switch's counters). */
typedef struct cli_chan_count {
    uint8_t id;
    uint64_t msgs, bytes;
} cli_chan_count;

#define CLI_NODE_MAX_CHANNELS 8

typedef struct cli_node_counters {
    uint64_t connects, disconnects, dial_failures, rejections;
    uint64_t wire_sent, wire_recv;             /* secret-connection bytes, all connections so far */
    size_t n_channels;
    cli_chan_count channels[CLI_NODE_MAX_CHANNELS];
} cli_node_counters;

/* The switch config the node runs with (no reactors, no log sink). */
void cli_node_switch_config(const cli_node_opts *o, tm2_switch_config *sc);

/* The most connections the node's switch may hold at once, a descriptor
 * each: peers up to the limits, persistent and unconditional peers beyond
 * them, handshakes of accepted sockets, seeds being dialled. */
uint64_t cli_node_max_conns(const cli_node_opts *o);

/* Builds the node (switch not started). lg is copied. Returns 0 or a TM2_E*
 * code with a sentence in err. */
int cli_node_create(const cli_node_opts *o, const cli_log *lg, cli_node **out, char *err, size_t err_len);
int cli_node_start(cli_node *n, char *err, size_t err_len);
/* Stops the switch (peers closed, address book saved). Idempotent. */
void cli_node_stop(cli_node *n);
void cli_node_free(cli_node *n);

tm2_switch *cli_node_switch(cli_node *n);
const tm2_id *cli_node_id(const cli_node *n);
/* "<id>@<ip>:<port>" of the bound listener. */
void cli_node_listen_addr(cli_node *n, char *buf, size_t cap);
struct cli_gossip *cli_node_gossip(cli_node *n);
/* The HTTP endpoints' bound "ip:port"; NULL when they are off or not started. */
const char *cli_node_http_addr(const cli_node *n);
struct tm2_discovery *cli_node_discovery(cli_node *n);

/* -1 when events are not logged; readable when cli_node_drain_events has work. */
int cli_node_event_fd(const cli_node *n);
void cli_node_drain_events(cli_node *n);

/* Connected peers' IDs (and whether each is in an outbound slot,
 * tm2_peer_in_outbound_slot) into ids[0..cap); returns how many are
 * connected (may exceed cap). */
size_t cli_node_peers(cli_node *n, tm2_id *ids, bool *outbound, size_t cap);

/* Polls the peers' connection status to keep wire totals (call about once a
 * second; connections that closed between polls keep their last figures),
 * then fills c. */
void cli_node_counters_get(cli_node *n, cli_node_counters *c);

/* A list of configured peers, "ID@host:port" strings. */
typedef struct cli_peer_list {
    char **items;
    size_t n, cap;
} cli_peer_list;

/* Appends the entries of a comma-separated list (spaces trimmed, empty
 * entries skipped) to out. A malformed entry is logged with where and its
 * position, counted in *problems and dropped; host names are kept as they
 * are (the switch resolves them before each dial). 0, or TM2_ENOMEM. */
int cli_parse_peer_list(const char *list, const char *where, cli_log *lg, cli_peer_list *out,
                        unsigned *problems);
void cli_peer_list_free(cli_peer_list *l);
/* Same for a comma-separated list of peer IDs. */
int cli_parse_id_list(const char *list, tm2_id **out, char *err, size_t err_len);

#endif
