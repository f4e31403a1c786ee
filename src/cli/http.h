/* The node's HTTP endpoints on one listener (libmicrohttpd, one thread of
 * its own): /metrics (Prometheus text format), /status and /peers (JSON).
 * Each request collects a fresh snapshot (cli/metrics.h), so a scrape reads
 * what the network thread published and never waits for it.
 *
 * Also a small HTTP/1.1 GET client (http:// only), for `tm2p2p status` and
 * the tests. */
#ifndef TM2_CLI_HTTP_H
#define TM2_CLI_HTTP_H

#include <stddef.h>

#include "cli/log.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/switch.h"

/* CometBFT's default prometheus_listen_addr. */
#define CLI_HTTP_DEFAULT_ADDR ":26660"

typedef struct cli_http cli_http;

typedef struct cli_http_config {
    /* "host:port", "[v6]:port" or ":port", optionally after "tcp://"; an
     * empty host means 127.0.0.1 (write 0.0.0.0 to serve every interface);
     * port 0 picks a free one (cli_http_addr tells which). */
    const char *listen_addr;
    tm2_switch *sw;                /* started; outlives the server; NULL: render */
    tm2_discovery *disc;           /* NULL without discovery */
    /* Without a switch (crawl, seed): answers every path but "/". Returns 0
     * with *body malloc'd (taken), 1 for a path it does not serve (404), -1
     * on failure (503). Called on the server's thread. */
    int (*render)(void *user, const char *path, char **body, size_t *len, const char **type);
    void *render_user;
    const cli_log *log;            /* NULL: no logging */
} cli_http_config;

/* Checks the syntax of a listen address as cli_http_start reads it (for
 * config checks before anything starts). 0 or -1. */
int cli_http_addr_check(const char *listen_addr);

/* Binds and starts serving. Returns 0, or -1 with a sentence in err. */
int cli_http_start(const cli_http_config *c, cli_http **out, char *err, size_t err_len);
/* The bound address, "ip:port" ("[v6]:port"). */
const char *cli_http_addr(const cli_http *h);
/* Stops serving (requests in progress finish first), joins its thread and
 * frees h. NULL is fine. */
void cli_http_stop(cli_http *h);

/* ---- client ------------------------------------------------------------------ */

/* GETs url ("http://host[:port]/path"; port 80 by default) with one
 * connection, waiting at most timeout_ms in all. On 0, *body (malloc'd,
 * NUL-terminated) holds the body of any status, *status the code. Returns 0
 * or -1 with a sentence in err. */
int cli_http_get(const char *url, int timeout_ms, int *status, char **body, size_t *body_len, char *err,
                 size_t err_len);

#endif
