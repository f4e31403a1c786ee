/* /metrics of `tm2p2p crawl` and `tm2p2p seed`: the crawler engine's
 * progress in Prometheus' text format, served by cli/http.c. */
#ifndef TM2_CLI_CRAWL_METRICS_H
#define TM2_CLI_CRAWL_METRICS_H

#include <stdbool.h>

#include "cli/metrics.h"
#include "crawl/engine.h"

/* Writes p's figures (tm2p2p_crawl_* families; seed adds tm2p2p_seed_*). */
void cli_crawl_metrics_write(const crawl_progress *p, bool seed, tm2__buf *out);

typedef struct cli_crawl_metrics_src {
    crawl_engine *e;             /* started; outlives the server */
    bool seed;
} cli_crawl_metrics_src;

/* A cli_http render function (user: a cli_crawl_metrics_src): /metrics
 * only. Returns 0 with *body malloc'd, 1 for an unknown path, -1 when out
 * of memory. Any thread. */
int cli_crawl_metrics_render(void *user, const char *path, char **body, size_t *len,
                             const char **type);

#endif
