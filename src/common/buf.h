/* Internal: a growing text buffer for output built in memory (metrics,
 * reports). Appends never fail visibly: after an allocation failure the
 * buffer stops growing and oom is set, so a writer checks once at the end. */
#ifndef TM2_COMMON_BUF_H
#define TM2_COMMON_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tm2__buf {
    char *p;                  /* NUL-terminated once anything was written */
    size_t len, cap;
    bool oom;
} tm2__buf;

void tm2__buf_add(tm2__buf *b, const char *s, size_t n);
void tm2__buf_puts(tm2__buf *b, const char *s);
void tm2__buf_printf(tm2__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tm2__buf_free(tm2__buf *b);

#endif
