#include "common/log.h"

#include <stdio.h>

void tm2__vlogf(tm2_log_fn fn, void *user, tm2_log_level max, tm2_log_level lv,
                const char *fmt, va_list ap)
{
    if (!fn || lv > max)
        return;
    char line[TM2__LOG_LINE];
    vsnprintf(line, sizeof line, fmt, ap);
    fn(user, lv, line);
}

const char *tm2__log_quote(const char *s, char *buf, size_t cap)
{
    size_t o = 0;
    buf[o++] = '"';
    for (; *s && o + 6 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)ch;
        } else if (ch < 0x20 || ch > 0x7e) {
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
        } else {
            buf[o++] = (char)ch;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void tm2__logf(tm2_log_fn fn, void *user, tm2_log_level max, tm2_log_level lv, const char *fmt,
               ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm2__vlogf(fn, user, max, lv, fmt, ap);
    va_end(ap);
}
