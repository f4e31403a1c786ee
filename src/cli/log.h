/* Log lines of the tm2p2p program on standard error, in logfmt or JSON.
 *
 * Every line carries ts (UTC, RFC 3339 with milliseconds), level, an
 * optional node label, msg and key/value fields. Each line leaves in a single
 * write(2), so lines from several threads (or processes sharing the stream)
 * never interleave. Thread-safe; no allocation. */
#ifndef TM2_CLI_LOG_H
#define TM2_CLI_LOG_H

#include <stdbool.h>

#include "tm2p2p/switch.h"

typedef enum cli_log_format {
    CLI_LOG_LOGFMT = 0,
    CLI_LOG_JSON = 1,
} cli_log_format;

typedef struct cli_log {
    tm2_log_level level;      /* lines above this level are dropped */
    cli_log_format format;
    char node[48];            /* "" for none */
    int fd;                   /* 2 unless changed */
} cli_log;

/* "error", "warn", "info", "debug". 0 or -1. */
int cli_log_parse_level(const char *s, tm2_log_level *out);
/* "logfmt", "json". 0 or -1. */
int cli_log_parse_format(const char *s, cli_log_format *out);
const char *cli_log_level_name(tm2_log_level lvl);

void cli_log_init(cli_log *lg, tm2_log_level level, cli_log_format format, const char *node);

static inline bool cli_log_enabled(const cli_log *lg, tm2_log_level lvl)
{
    return lg && lvl <= lg->level;
}

/* Logs msg with the fields given as key, value string pairs ending in NULL.
 * A NULL value after a key is skipped. */
void cli_log_kv(const cli_log *lg, tm2_log_level lvl, const char *msg, ...)
    __attribute__((sentinel));

/* A tm2_log_fn for the library: user is a cli_log; the fields are written
 * after ours with this program's escaping. */
void cli_log_switch(void *user, tm2_log_level lvl, const char *msg, const tm2_log_field *fields,
                    size_t n_fields);

#endif
