#include "common/log.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct val {
    char *b;
    size_t n;
} val;

static void put(val *v, const char *s, size_t n)
{
    size_t room = TM2__LOG_VALUE - 1 - v->n;
    if (n > room)
        n = room;
    memcpy(v->b + v->n, s, n);
    v->n += n;
    v->b[v->n] = '\0';
}

/* The format is the library's own, a string literal the compiler checked:
 * each conversion is handed to snprintf with the argument type it names. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static const char *conversion(val *v, const char *p, va_list *ap)
{
    const char *s0 = p++;
    int star[2], n_star = 0;
    while (*p && strchr("-+#0", *p))
        p++;
    for (int part = 0; part < 2; part++) {
        if (part == 1) {
            if (*p != '.')
                break;
            p++;
        }
        if (*p == '*') {
            star[n_star++] = va_arg(*ap, int);
            p++;
        }
        while (isdigit((unsigned char)*p))
            p++;
    }
    int len = 0;   /* 0 none, 1 l, 2 ll, 3 z, 4 j, 5 h/hh, 6 t */
    if (*p == 'l') {
        len = p[1] == 'l' ? 2 : 1;
        p += len;
    } else if (*p == 'z' || *p == 'j' || *p == 't') {
        len = *p == 'z' ? 3 : *p == 'j' ? 4 : 6;
        p++;
    } else if (*p == 'h') {
        len = 5;
        p += p[1] == 'h' ? 2 : 1;
    }
    char c = *p ? *p++ : 's';
    char spec[24], out[TM2__LOG_VALUE];
    size_t sl = (size_t)(p - s0);
    if (sl >= sizeof spec)
        return p;
    memcpy(spec, s0, sl);
    spec[sl] = '\0';
#define EMIT(arg)                                                                    \
    (n_star == 2   ? snprintf(out, sizeof out, spec, star[0], star[1], arg)          \
     : n_star == 1 ? snprintf(out, sizeof out, spec, star[0], arg)                   \
                   : snprintf(out, sizeof out, spec, arg))
    int w = 0;
    switch (c) {
    case 's': {
        const char *s = va_arg(*ap, const char *);
        w = EMIT(s ? s : "");
        break;
    }
    case 'c': w = EMIT(va_arg(*ap, int)); break;
    case 'p': w = EMIT(va_arg(*ap, void *)); break;
    case 'd':
    case 'i':
        switch (len) {
        case 1: w = EMIT(va_arg(*ap, long)); break;
        case 2: w = EMIT(va_arg(*ap, long long)); break;
        case 3: w = EMIT(va_arg(*ap, ptrdiff_t)); break;
        case 4: w = EMIT(va_arg(*ap, intmax_t)); break;
        case 6: w = EMIT(va_arg(*ap, ptrdiff_t)); break;
        default: w = EMIT(va_arg(*ap, int)); break;
        }
        break;
    default:   /* u x X o */
        switch (len) {
        case 1: w = EMIT(va_arg(*ap, unsigned long)); break;
        case 2: w = EMIT(va_arg(*ap, unsigned long long)); break;
        case 3: w = EMIT(va_arg(*ap, size_t)); break;
        case 4: w = EMIT(va_arg(*ap, uintmax_t)); break;
        case 6: w = EMIT(va_arg(*ap, ptrdiff_t)); break;
        default: w = EMIT(va_arg(*ap, unsigned)); break;
        }
        break;
    }
#undef EMIT
    if (w > 0)
        put(v, out, (size_t)w < sizeof out ? (size_t)w : sizeof out - 1);
    return p;
}
#pragma GCC diagnostic pop

void tm2__vlog(tm2_log_fn fn, void *user, tm2_log_level max, tm2_log_level lv, const char *msg,
               const char *fmt, va_list ap)
{
    if (!fn || lv > max)
        return;
    char keys[TM2__LOG_FIELDS][32];
    char vals[TM2__LOG_FIELDS][TM2__LOG_VALUE];
    tm2_log_field f[TM2__LOG_FIELDS];
    size_t n = 0;
    va_list aq;
    va_copy(aq, ap);
    const char *p = fmt;
    while (*p && n < TM2__LOG_FIELDS) {
        while (*p == ' ')
            p++;
        const char *k = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        if (*p != '=' || p == k)
            break;
        size_t kl = (size_t)(p - k) < sizeof keys[n] ? (size_t)(p - k) : sizeof keys[n] - 1;
        memcpy(keys[n], k, kl);
        keys[n][kl] = '\0';
        p++;
        val v = {vals[n], 0};
        vals[n][0] = '\0';
        while (*p && *p != ' ') {
            if (*p == '%' && p[1] == '%') {
                put(&v, "%", 1);
                p += 2;
            } else if (*p == '%') {
                p = conversion(&v, p, &aq);
            } else {
                put(&v, p, 1);
                p++;
            }
        }
        f[n] = (tm2_log_field){keys[n], vals[n]};
        n++;
    }
    va_end(aq);
    fn(user, lv, msg, f, n);
}

void tm2__log(tm2_log_fn fn, void *user, tm2_log_level max, tm2_log_level lv, const char *msg,
              const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm2__vlog(fn, user, max, lv, msg, fmt, ap);
    va_end(ap);
}
