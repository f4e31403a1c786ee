#include "crawl/escape.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char hex[] = "0123456789abcdef";

void crawl_esc_json(tm2__buf *b, const char *s, size_t n)
{
    tm2__buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[7];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            tm2__buf_add(b, e, 2);
        } else if (c >= 0x20 && c < 0x7f) {
            tm2__buf_add(b, (const char *)&s[i], 1);
        } else {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            tm2__buf_add(b, e, 6);
        }
    }
    tm2__buf_add(b, "\"", 1);
}

/* Printable ASCII kept, backslash doubled, the rest as \xXX. */
static void put_printable(tm2__buf *b, const char *s, size_t n, char quote, const char *quote_as)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (quote && c == (unsigned char)quote) {
            tm2__buf_puts(b, quote_as);
        } else if (c == '\\') {
            tm2__buf_add(b, "\\\\", 2);
        } else if (c >= 0x20 && c < 0x7f) {
            tm2__buf_add(b, (const char *)&s[i], 1);
        } else {
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            tm2__buf_add(b, e, 4);
        }
    }
}

void crawl_esc_csv(tm2__buf *b, const char *s, size_t n)
{
    bool quote = n == 0 ? false : (s[0] == ' ' || s[n - 1] == ' ');
    for (size_t i = 0; i < n && !quote; i++) {
        unsigned char c = (unsigned char)s[i];
        quote = c == ',' || c == '"' || c == '\\' || c < 0x20 || c >= 0x7f;
    }
    if (!quote) {
        tm2__buf_add(b, s, n);
        return;
    }
    tm2__buf_add(b, "\"", 1);
    put_printable(b, s, n, '"', "\"\"");
    tm2__buf_add(b, "\"", 1);
}

void crawl_esc_dot(tm2__buf *b, const char *s, size_t n)
{
    tm2__buf_add(b, "\"", 1);
    put_printable(b, s, n, '"', "\\\"");
    tm2__buf_add(b, "\"", 1);
}
