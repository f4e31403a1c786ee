/* logfmt and JSON log lines for the tm2p2p program. */
#include "cli/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int cli_log_parse_level(const char *s, tm2_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, level_names[i])) {
            *out = (tm2_log_level)i;
            return 0;
        }
    return -1;
}

int cli_log_parse_format(const char *s, cli_log_format *out)
{
    if (!strcmp(s, "logfmt"))
        *out = CLI_LOG_LOGFMT;
    else if (!strcmp(s, "json"))
        *out = CLI_LOG_JSON;
    else
        return -1;
    return 0;
}

const char *cli_log_level_name(tm2_log_level lvl)
{
    return (unsigned)lvl < 4 ? level_names[lvl] : "debug";
}

void cli_log_init(cli_log *lg, tm2_log_level level, cli_log_format format, const char *node)
{
    memset(lg, 0, sizeof *lg);
    lg->level = level;
    lg->format = format;
    lg->fd = 2;
    if (node)
        snprintf(lg->node, sizeof lg->node, "%s", node);
}

/* A line under construction. An overlong line is cut between whole
 * characters and escapes, and its last value is closed, so a JSON line
 * stays valid JSON and a logfmt line stays parseable; later fields are
 * left out. */
typedef struct line {
    char b[LINE_MAX_BYTES];
    size_t n;
    bool json;
    bool first;
    bool cut;
} line;

/* Kept free for what a value and the line need after the last key: two
 * quotes, '}' and '\n'. */
#define LINE_RESERVE 4

static bool put(line *l, const char *s, size_t n)
{
    if (l->cut || n > sizeof l->b - LINE_RESERVE - l->n) {
        l->cut = true;
        return false;
    }
    memcpy(l->b + l->n, s, n);
    l->n += n;
    return true;
}

static bool puts_(line *l, const char *s)
{
    return put(l, s, strlen(s));
}

/* Writes v escaped, each escape whole or not at all; false once cut. */
static bool put_escaped(line *l, const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        char esc[8];
        size_t en = 2;
        esc[0] = '\\';
        if (c == '"' || c == '\\')
            esc[1] = (char)c;
        else if (c == '\n')
            esc[1] = 'n';
        else if (c == '\t')
            esc[1] = 't';
        else if (c == '\r')
            esc[1] = 'r';
        else if (c < 0x20 || c == 0x7f)
            en = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
        else
            esc[0] = (char)c, en = 1;
        if (!put(l, esc, en))
            return false;
    }
    return true;
}

static bool needs_quotes(const char *v, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

/* A quoted value after a key that fitted: both quotes always fit
 * (LINE_RESERVE), the text between them as far as it goes. */
static void quoted(line *l, const char *v, size_t n)
{
    l->b[l->n++] = '"';
    bool whole = put_escaped(l, v, n);
    l->b[l->n++] = '"';
    l->cut = !whole;
}

static void field(line *l, const char *k, size_t kn, const char *v, size_t vn)
{
    if (l->cut)
        return;
    size_t mark = l->n;
    /* A key is written whole with its separator, or the field not at all. */
    bool ok = l->json ? puts_(l, l->first ? "{\"" : ",\"") && put_escaped(l, k, kn) &&
                            puts_(l, "\":")
                      : (l->first || puts_(l, " ")) && put(l, k, kn) && puts_(l, "=");
    if (!ok) {
        l->n = mark;
        l->cut = true;
        return;
    }
    if (l->json || needs_quotes(v, vn))
        quoted(l, v, vn);
    else
        (void)put(l, v, vn);   /* too long: the line ends with "key=" */
    l->first = false;
}

static void fieldz(line *l, const char *k, const char *v)
{
    field(l, k, strlen(k), v, strlen(v));
}

static void begin(line *l, const cli_log *lg, tm2_log_level lvl)
{
    l->n = 0;
    l->json = lg->format == CLI_LOG_JSON;
    l->first = true;
    l->cut = false;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char t[64];
    snprintf(t, sizeof t, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000) % 1000);
    fieldz(l, "ts", t);
    fieldz(l, "level", cli_log_level_name(lvl));
    if (lg->node[0])
        fieldz(l, "node", lg->node);
}

static void finish(line *l, int fd)
{
    if (l->json && l->first) {
        l->b[l->n++] = '{';   /* not even a first field fitted */
        l->first = false;
    }
    if (l->json)
        l->b[l->n++] = '}';
    l->b[l->n++] = '\n';
    size_t off = 0;
    while (off < l->n) {
        ssize_t w = write(fd, l->b + off, l->n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

void cli_log_kv(const cli_log *lg, tm2_log_level lvl, const char *msg, ...)
{
    if (!cli_log_enabled(lg, lvl))
        return;
    line l;
    begin(&l, lg, lvl);
    fieldz(&l, "msg", msg);
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        if (v)
            fieldz(&l, k, v);
    }
    va_end(ap);
    finish(&l, lg->fd);
}

void cli_log_switch(void *user, tm2_log_level lvl, const char *msg, const tm2_log_field *fields,
                    size_t n_fields)
{
    const cli_log *lg = user;
    if (!cli_log_enabled(lg, lvl))
        return;
    line l;
    begin(&l, lg, lvl);
    fieldz(&l, "msg", msg);
    for (size_t i = 0; i < n_fields; i++)
        fieldz(&l, fields[i].key, fields[i].value);
    finish(&l, lg->fd);
}
