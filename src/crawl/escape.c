#include "crawl/escape.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool grow(crawl_buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (more > (size_t)-1 / 2 - b->n) {
        b->oom = true;
        return false;
    }
    if (b->n + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void crawl_buf_put(crawl_buf *b, const char *s, size_t n)
{
    if (!grow(b, n))
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void crawl_buf_puts(crawl_buf *b, const char *s) { crawl_buf_put(b, s, strlen(s)); }

void crawl_buf_printf(crawl_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        crawl_buf_put(b, tmp, (size_t)n);
        return;
    }
    if (!grow(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

void crawl_buf_free(crawl_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static const char hex[] = "0123456789abcdef";

void crawl_esc_json(crawl_buf *b, const char *s, size_t n)
{
    crawl_buf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[7];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            crawl_buf_put(b, e, 2);
        } else if (c >= 0x20 && c < 0x7f) {
            crawl_buf_put(b, (const char *)&s[i], 1);
        } else {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            crawl_buf_put(b, e, 6);
        }
    }
    crawl_buf_put(b, "\"", 1);
}

/* Printable ASCII kept, backslash doubled, the rest as \xXX. */
static void put_printable(crawl_buf *b, const char *s, size_t n, char quote, const char *quote_as)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (quote && c == (unsigned char)quote) {
            crawl_buf_puts(b, quote_as);
        } else if (c == '\\') {
            crawl_buf_put(b, "\\\\", 2);
        } else if (c >= 0x20 && c < 0x7f) {
            crawl_buf_put(b, (const char *)&s[i], 1);
        } else {
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            crawl_buf_put(b, e, 4);
        }
    }
}

void crawl_esc_csv(crawl_buf *b, const char *s, size_t n)
{
    bool quote = n == 0 ? false : (s[0] == ' ' || s[n - 1] == ' ');
    for (size_t i = 0; i < n && !quote; i++) {
        unsigned char c = (unsigned char)s[i];
        quote = c == ',' || c == '"' || c == '\\' || c < 0x20 || c >= 0x7f;
    }
    if (!quote) {
        crawl_buf_put(b, s, n);
        return;
    }
    crawl_buf_put(b, "\"", 1);
    put_printable(b, s, n, '"', "\"\"");
    crawl_buf_put(b, "\"", 1);
}

void crawl_esc_dot(crawl_buf *b, const char *s, size_t n)
{
    crawl_buf_put(b, "\"", 1);
    put_printable(b, s, n, '"', "\\\"");
    crawl_buf_put(b, "\"", 1);
}
