/* `tm2p2p crawl report`: reads a crawl database (read-only, while a crawl
 * may be writing it) and prints a summary, or exports the map as JSON, CSV
 * or Graphviz DOT.
 *
 * Nodes are keyed by ID. An ID is 'reachable' when one of its addresses was
 * verified on its last probe (an 'incompatible' node, verified but of
 * another network or version set, counts as reachable in its network);
 * otherwise a node verified before is 'unreachable' ('gone' once every
 * address is gone), and an ID never verified is 'never_reached',
 * 'untrusted' (every attempt met a liar, a wrong ID or an invalid NodeInfo)
 * or 'refused' (outside the allow policy).
 *
 * Edges (advertised-by): "A -> B" when verified node A listed an address of
 * B. By default only each node's current word: the edges of its latest
 * answer (last_seen not older than its last verified handshake); all_edges
 * keeps every edge ever seen. The largest connected component is that of
 * the undirected graph of current edges between reachable nodes. */
#ifndef TM2_CRAWL_REPORT_H
#define TM2_CRAWL_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct crawl_report_opts {
    const char *json_path;    /* "-": stdout; NULL: none */
    const char *csv_path;     /* nodes, one row per ID */
    const char *dot_path;     /* the advertised-by graph */
    bool all_edges;
} crawl_report_opts;

/* Writes the summary to out (NULL: none) and the exports asked for.
 * 0, or TM2_EIO / TM2_ENOMEM / TM2_EINVAL with a sentence in err. */
int crawl_report(const char *db_path, const crawl_report_opts *o, FILE *out, char *err,
                 size_t err_len);

#endif
