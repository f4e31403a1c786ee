/* Text output of the crawl report: a growing buffer and the escapes that put
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

typedef struct crawl_buf {
    char *p;          /* NUL-terminated once anything was written */
    size_t n, cap;
    bool oom;         /* an allocation failed: the content is incomplete */
} crawl_buf;

void crawl_buf_put(crawl_buf *b, const char *s, size_t n);
void crawl_buf_puts(crawl_buf *b, const char *s);
void crawl_buf_printf(crawl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void crawl_buf_free(crawl_buf *b);

/* A JSON string, quotes included. */
void crawl_esc_json(crawl_buf *b, const char *s, size_t n);
/* One CSV field (RFC 4180): quoted when it holds a comma, quote, space or
 * backslash escape; quotes doubled. */
void crawl_esc_csv(crawl_buf *b, const char *s, size_t n);
/* A DOT quoted string, quotes included. */
void crawl_esc_dot(crawl_buf *b, const char *s, size_t n);

#endif
