/* Shared by tm2p2p crawl (crawl.c) and tm2p2p seed (seed.c): flags, settings
 * and the run loop around the crawler engine (src/crawl/engine.h). */
#ifndef TM2_CLI_CRAWL_CLI_H
#define TM2_CLI_CRAWL_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "cli/log.h"
#include "crawl/engine.h"

/* Every flag of crawl, seed and crawl report, as given (NULL: absent). */
typedef struct cli_crawl_flags {
    bool help;
    const char *home, *db, *seeds, *chain_id, *allow, *rounds, *interval, *gone_after;
    const char *concurrency, *per_host, *host_gap, *dial_timeout, *hs_timeout, *ask_timeout;
    const char *max_addrs, *moniker, *progress, *log_level, *log_format;
    const char *laddr, *external, *recheck, *fresh, *serve_timeout, *linger, *max_sessions;
    const char *json, *csv, *dot, *all_edges, *quiet;
    const char *prom_addr;
} cli_crawl_flags;

typedef struct cli_crawl_settings {
    crawl_config cfg;          /* strings point into argv */
    tm2_netaddr *seeds;
    size_t n_seeds;
    char home[4096];
    char db_path[4200];
    cli_log log;
    bool progress;
    const char *prom_addr;     /* NULL: no /metrics */
} cli_crawl_settings;

/* Reads argv into f; only the names in allowed (NULL-terminated) are
 * accepted. 0, or 2 after a usage message. */
int cli_crawl_parse_flags(const char *cmd, int argc, char **argv, const char *const *allowed,
                          cli_crawl_flags *f);

/* Checks the flags and fills s (seed: the seed's defaults and its flags).
 * 0, or 2 after a usage message. */
int cli_crawl_resolve(const char *cmd, const cli_crawl_flags *f, bool seed, cli_crawl_settings *s);
void cli_crawl_settings_free(cli_crawl_settings *s);

/* Opens the database, runs the engine until its rounds are done or
 * SIGINT/SIGTERM, records everything and returns the exit status. */
int cli_crawl_run(const char *cmd, cli_crawl_settings *s, bool seed);

int cli_crawl_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "500ms", "30s", "10m", "24h", or a bare number of milliseconds. 0 or -1. */
int cli_parse_duration_ms(const char *s, uint64_t *out);

#endif
