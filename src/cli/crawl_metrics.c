#include "cli/crawl_metrics.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void one(tm2__buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    tm2__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name, v);
}

void cli_crawl_metrics_write(const crawl_progress *p, bool seed, tm2__buf *b)
{
    one(b, "tm2p2p_crawl_addresses", "gauge", "Addresses known to the crawler.", p->known);
    one(b, "tm2p2p_crawl_addresses_reachable", "gauge",
        "Addresses whose last probe verified the node.", p->reachable);
    one(b, "tm2p2p_crawl_addresses_refused", "gauge", "Addresses outside the allow policy.",
        p->refused);
    one(b, "tm2p2p_crawl_addresses_liars", "gauge",
        "Addresses whose last probe found a node lying about its ID.", p->liars);
    one(b, "tm2p2p_crawl_probes_in_flight", "gauge", "Probes running now.", p->inflight);
    one(b, "tm2p2p_crawl_probes_queued", "gauge", "Probes waiting for a slot.", p->queued);
    one(b, "tm2p2p_crawl_probes_total", "counter", "Probes finished since start.", p->probes);
    one(b, "tm2p2p_crawl_probes_verified_total", "counter",
        "Probes that verified their node since start.", p->verified);
    one(b, "tm2p2p_crawl_rounds_total", "counter", "Rounds finished since start.", p->rounds_done);
    one(b, "tm2p2p_crawl_addresses_dropped_total", "counter",
        "New addresses dropped over the address limit.", p->addrs_dropped);
    if (seed) {
        one(b, "tm2p2p_seed_sessions_total", "counter", "Inbound peers served since start.",
            p->sessions);
        one(b, "tm2p2p_seed_answers_total", "counter",
            "Discovery answers sent to inbound peers since start.", p->answers);
    }
}

int cli_crawl_metrics_render(void *user, const char *path, char **body, size_t *len,
                             const char **type)
{
    const cli_crawl_metrics_src *src = user;
    if (strcmp(path, "/metrics") != 0)
        return 1;
    crawl_progress p;
    crawl_engine_progress(src->e, &p);
    tm2__buf b = {0};
    cli_crawl_metrics_write(&p, src->seed, &b);
    if (b.oom || !b.p) {
        tm2__buf_free(&b);
        return -1;
    }
    *body = b.p;
    *len = b.len;
    *type = CLI_METRICS_CONTENT_TYPE;
    return 0;
}
