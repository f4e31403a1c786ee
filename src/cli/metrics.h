/* The node's metrics and status documents.
 *
 * A scrape is two steps so the writers can be tested without a network:
 * cli_metrics_collect reads a snapshot of the switch's and discovery's
 * counters and of every connected peer (tm2_switch_stats, tm2_peer_stats:
 * atomic reads and short locks, never waiting for the network thread), and
 * the writers turn a snapshot into a document, as pure functions of it:
 * Prometheus' text exposition format (version 0.0.4) for /metrics, JSON for
 * /status and /peers. Metric names and labels are listed in README.md
 * ("Metrics and status").
 *
 * Thread rules: collect from any thread while the switch (and discovery)
 * are not freed; a snapshot belongs to its caller. */
#ifndef TM2_CLI_METRICS_H
#define TM2_CLI_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/node_info.h"
#include "tm2p2p/stats.h"
#include "tm2p2p/switch.h"

/* ---- a growing text buffer ------------------------------------------------ */

/* ---- the snapshot ----------------------------------------------------------- */

/* NodeInfo monikers are printable ASCII; longer ones are cut here. */
#define CLI_METRICS_MONIKER_MAX 64

typedef struct cli_metrics_peer {
    tm2_id id;
    char addr[TM2_NETADDR_STRLEN];            /* socket address: dialled, or the remote end */
    char moniker[CLI_METRICS_MONIKER_MAX + 1];
    bool outbound, persistent, is_private, unconditional;
    tm2_peer_counters c;
} cli_metrics_peer;

typedef struct cli_metrics_snap {
    tm2_id id;
    const tm2_node_info *node_info;           /* ours; borrowed, may be NULL */
    char listen_addr[TM2_NETADDR_STRLEN];     /* "<id>@ip:port" bound; "" without a listener */
    char external_addr[TM2_NETADDR_STRLEN];   /* advertised (NodeInfo's address); may be "" */
    tm2_switch_counters sw;
    bool has_discovery;
    tm2_discovery_stats disc;
    size_t n_peers;
    cli_metrics_peer *peers;                  /* sorted by ID */
} cli_metrics_snap;

/* Fills *out (disc may be NULL). Peers that connect or go meanwhile may or
 * may not be listed. Returns 0 or TM2_ENOMEM; free with cli_metrics_snap_free
 * either way. */
int cli_metrics_collect(tm2_switch *sw, tm2_discovery *disc, cli_metrics_snap *out);
void cli_metrics_snap_free(cli_metrics_snap *s);

/* ---- the writers -------------------------------------------------------------- */

#define CLI_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends the exposition of s: every family with its HELP and TYPE lines,
 * then its samples; per-peer series only for the peers in s. */
void cli_metrics_write(const cli_metrics_snap *s, tm2__buf *out);

/* Appends v as a label value between double quotes, escaped as the format
 * wants (backslash, double quote, newline); bytes that are not printable
 * ASCII become '?', so the output is always valid UTF-8. */
void cli_metrics_label_value(tm2__buf *out, const char *v);

/* The /status and /peers documents (cJSON text, malloc'd; NULL when out of
 * memory). Layout in README.md. */
char *cli_metrics_status_json(const cli_metrics_snap *s);
char *cli_metrics_peers_json(const cli_metrics_snap *s);

#endif
