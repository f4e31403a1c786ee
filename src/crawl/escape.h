/* Text output of the crawl report: the escapes that put
 * peer-supplied text (monikers, network names, software versions: any bytes
 * but NUL) into JSON, CSV and Graphviz DOT without breaking or forging the
 * format. Every byte outside printable ASCII is written as an escape, so the
 * output is always ASCII: JSON "\u00XX" (the byte read as Latin-1), CSV and
 * DOT "\xXX" (a backslash is "\\" there). Pure; fuzzed by
 * fuzz/fuzz_crawl_escape.c. */
#ifndef TM2_CRAWL_ESCAPE_H
#define TM2_CRAWL_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

/* A JSON string, quotes included. */
void crawl_esc_json(tm2__buf *b, const char *s, size_t n);
/* One CSV field (RFC 4180): quoted when it holds a comma, quote, space or
 * backslash escape; quotes doubled. */
void crawl_esc_csv(tm2__buf *b, const char *s, size_t n);
/* A DOT quoted string, quotes included. */
void crawl_esc_dot(tm2__buf *b, const char *s, size_t n);

#endif
