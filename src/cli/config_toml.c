/* config.toml reader: a strict recursive-descent parser for the TOML subset
 * TM2 config files use, applied key by key onto a cli_config. */
#include "cli/config_toml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FILE   (1u << 20)
#define MAX_DEPTH  32        /* nested arrays / inline tables */
#define MAX_KEYS   10000     /* distinct keys and tables tracked for duplicates */
#define MAX_PATH   512       /* longest dotted key */

/* ---- defaults ------------------------------------------------------------ */

int cli_config_set_str(char **slot, const char *s)
{
    char *d = strdup(s);
    if (!d)
        return -1;
    free(*slot);
    *slot = d;
    return 0;
}

int cli_config_defaults(cli_config *c)
{
    memset(c, 0, sizeof *c);
    c->max_num_inbound_peers = 40;
    c->max_num_outbound_peers = 10;
    c->flush_throttle_timeout_ns = 100 * 1000000LL;
    c->max_packet_msg_payload_size = 1024;
    c->send_rate = 5120000;
    c->recv_rate = 5120000;
    c->pex = true;
    if (cli_config_set_str(&c->moniker, "") || cli_config_set_str(&c->node_key_file, "secrets/node_key.json") ||
        cli_config_set_str(&c->laddr, "tcp://0.0.0.0:26656") ||
        cli_config_set_str(&c->external_address, "") || cli_config_set_str(&c->seeds, "") ||
        cli_config_set_str(&c->persistent_peers, "") || cli_config_set_str(&c->private_peer_ids, "") ||
        cli_config_set_str(&c->addr_book_file, "config/addrbook.json")) {
        cli_config_free(c);
        return -1;
    }
    return 0;
}

void cli_config_free(cli_config *c)
{
    char **strs[] = {&c->moniker, &c->node_key_file, &c->laddr, &c->external_address, &c->seeds,
                     &c->persistent_peers, &c->private_peer_ids, &c->addr_book_file};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

/* ---- durations ----------------------------------------------------------- */

int cli_parse_duration(const char *s, int64_t *ns)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1ULL},           {"us", 1000ULL},         {"\xc2\xb5s", 1000ULL}, {"\xce\xbcs", 1000ULL},
        {"ms", 1000000ULL},     {"s", 1000000000ULL},    {"m", 60000000000ULL},  {"h", 3600000000000ULL},
    };
    const uint64_t limit = 1ULL << 63;
    bool neg = false;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (!strcmp(s, "0")) {
        *ns = 0;
        return 0;
    }
    if (!*s)
        return -1;
    uint64_t total = 0;
    while (*s) {
        uint64_t v = 0;
        const char *start = s;
        while (*s >= '0' && *s <= '9') {
            if (v > (limit - (uint64_t)(*s - '0')) / 10)
                return -1;
            v = v * 10 + (uint64_t)(*s++ - '0');
        }
        bool had_int = s != start;
        uint64_t frac = 0;
        double scale = 1;
        bool had_frac = false;
        if (*s == '.') {
            s++;
            const char *fs = s;
            bool overflow = false;
            while (*s >= '0' && *s <= '9') {
                /* Like Go, extra fraction digits past int64 range are dropped. */
                if (!overflow && frac <= (UINT64_MAX - 9) / 10 && scale < 1e18) {
                    frac = frac * 10 + (uint64_t)(*s - '0');
                    scale *= 10;
                } else {
                    overflow = true;
                }
                s++;
            }
            had_frac = s != fs;
        }
        if (!had_int && !had_frac)
            return -1;
        size_t ul = 0;
        while (s[ul] && s[ul] != '.' && !(s[ul] >= '0' && s[ul] <= '9'))
            ul++;
        if (ul == 0)
            return -1; /* missing unit */
        uint64_t unit = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strlen(units[i].name) == ul && !memcmp(units[i].name, s, ul))
                unit = units[i].ns;
        if (!unit)
            return -1;
        s += ul;
        if (v > limit / unit)
            return -1;
        v *= unit;
        if (frac) {
            double add = (double)frac * ((double)unit / scale);
            if (add >= (double)limit)
                return -1;
            v += (uint64_t)add;
            if (v > limit)
                return -1;
        }
        if (total > limit - v)
            return -1;
        total += v;
    }
    if (!neg && total > limit - 1)
        return -1;
    *ns = neg ? (int64_t)(0 - total) : (int64_t)total;
    return 0;
}

/* ---- parser -------------------------------------------------------------- */

typedef enum { V_STRING, V_INT, V_FLOAT, V_BOOL, V_ARRAY, V_TABLE } vtype;

typedef struct value {
    vtype t;
    char *str;      /* V_STRING, malloc'd */
    int64_t i;
    bool b;
} value;

typedef struct parser {
    const char *s;
    size_t n, i;
    unsigned line;
    const char *name;
    char *err;
    size_t err_len;
    bool failed;
    char table[MAX_PATH];   /* current table; "" for the root */
    bool array_table;       /* inside [[...]]: keys repeat per element */
    char **seen;
    size_t n_seen, cap_seen;
    cli_config *c;
    cli_config_warn_fn warn;
    void *warn_user;
} parser;

__attribute__((format(printf, 2, 3))) static int perr(parser *p, const char *fmt, ...)
{
    if (p->failed)
        return -1;
    p->failed = true;
    int n = snprintf(p->err, p->err_len, "%s:%u: ", p->name, p->line);
    if (n < 0 || (size_t)n >= p->err_len)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->err_len - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int peek(const parser *p)
{
    return p->i < p->n ? (unsigned char)p->s[p->i] : -1;
}

static int peek_at(const parser *p, size_t k)
{
    return p->i + k < p->n ? (unsigned char)p->s[p->i + k] : -1;
}

static void skip_ws(parser *p)
{
    while (peek(p) == ' ' || peek(p) == '\t')
        p->i++;
}

static bool at_newline(const parser *p)
{
    return peek(p) == '\n' || (peek(p) == '\r' && peek_at(p, 1) == '\n');
}

static void eat_newline(parser *p)
{
    p->i += peek(p) == '\r' ? 2 : 1;
    p->line++;
}

/* A comment runs to the end of the line; control characters other than tab
 * are not allowed in it. */
static int skip_comment(parser *p)
{
    if (peek(p) != '#')
        return 0;
    while (p->i < p->n && !at_newline(p)) {
        int ch = peek(p);
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return perr(p, "control character in a comment");
        p->i++;
    }
    return 0;
}

/* Whitespace, comments and newlines (inside arrays). */
static int skip_blank(parser *p)
{
    for (;;) {
        skip_ws(p);
        if (skip_comment(p))
            return -1;
        if (!at_newline(p))
            return 0;
        eat_newline(p);
    }
}

static int end_of_line(parser *p)
{
    skip_ws(p);
    if (skip_comment(p))
        return -1;
    if (p->i >= p->n)
        return 0;
    if (!at_newline(p))
        return perr(p, "unexpected '%c' after the value (one key = value per line)", p->s[p->i]);
    eat_newline(p);
    return 0;
}

/* ---- strings ---- */

typedef struct sbuf {
    char *d;
    size_t n, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *d = realloc(b->d, cap);
        if (!d)
            return -1;
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->n, s, n);
    b->n += n;
    b->d[b->n] = '\0';
    return 0;
}

static int sb_utf8(sbuf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return sb_put(b, u, n);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A one-line basic ("...") or literal ('...') string; *out is malloc'd. */
static int parse_string(parser *p, char **out)
{
    int q = peek(p);
    if (peek_at(p, 1) == q && peek_at(p, 2) == q)
        return perr(p, "multi-line strings are not supported");
    p->i++;
    sbuf b = {0};
    if (sb_put(&b, "", 0))
        return perr(p, "out of memory");
    for (;;) {
        int ch = peek(p);
        if (ch < 0 || ch == '\n' || ch == '\r') {
            free(b.d);
            return perr(p, "unterminated string");
        }
        p->i++;
        if (ch == q)
            break;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            free(b.d);
            return perr(p, "control character in a string (escape it)");
        }
        if (ch != '\\' || q == '\'') {
            char c8 = (char)ch;
            if (sb_put(&b, &c8, 1))
                goto oom;
            continue;
        }
        int e = peek(p);
        p->i++;
        const char *rep = NULL;
        switch (e) {
        case 'b': rep = "\b"; break;
        case 't': rep = "\t"; break;
        case 'n': rep = "\n"; break;
        case 'f': rep = "\f"; break;
        case 'r': rep = "\r"; break;
        case '"': rep = "\""; break;
        case '\\': rep = "\\"; break;
        case 'u':
        case 'U': {
            int digits = e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int k = 0; k < digits; k++) {
                int h = hexval(peek(p));
                if (h < 0) {
                    free(b.d);
                    return perr(p, "bad \\%c escape in a string", e);
                }
                cp = cp << 4 | (uint32_t)h;
                p->i++;
            }
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
                free(b.d);
                return perr(p, "\\%c escape is not a Unicode scalar value", e);
            }
            if (cp == 0) {
                free(b.d);
                return perr(p, "NUL character in a string");
            }
            if (sb_utf8(&b, cp))
                goto oom;
            continue;
        }
        default:
            free(b.d);
            return perr(p, "unknown escape sequence in a string");
        }
        if (sb_put(&b, rep, 1))
            goto oom;
    }
    *out = b.d;
    return 0;
oom:
    free(b.d);
    return perr(p, "out of memory");
}

/* ---- keys ---- */

static bool bare_char(int ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-';
}

/* A dotted key ("a.b", "a . \"b c\"") joined with '.' into out. */
static int parse_key(parser *p, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (;;) {
        skip_ws(p);
        int ch = peek(p);
        char *part = NULL;
        const char *text;
        size_t len;
        if (ch == '"' || ch == '\'') {
            if (parse_string(p, &part))
                return -1;
            text = part;
            len = strlen(part);
        } else if (bare_char(ch)) {
            size_t st = p->i;
            while (bare_char(peek(p)))
                p->i++;
            text = p->s + st;
            len = p->i - st;
        } else {
            if (ch < 0 || at_newline(p) || ch == '=' || ch == ']')
                return perr(p, "missing key");
            return perr(p, "bad character '%c' in a key", ch);
        }
        if (n + len + 2 > cap) {
            free(part);
            return perr(p, "key too long");
        }
        if (n)
            out[n++] = '.';
        memcpy(out + n, text, len);
        n += len;
        out[n] = '\0';
        free(part);
        skip_ws(p);
        if (peek(p) != '.')
            return 0;
        p->i++;
    }
}

static int remember(parser *p, const char *kind, const char *path)
{
    char full[MAX_PATH + 8];
    snprintf(full, sizeof full, "%s:%s", kind, path);
    for (size_t k = 0; k < p->n_seen; k++)
        if (!strcmp(p->seen[k], full))
            return 1;
    if (p->n_seen == MAX_KEYS)
        return perr(p, "too many keys");
    if (p->n_seen == p->cap_seen) {
        size_t cap = p->cap_seen ? p->cap_seen * 2 : 64;
        char **s = realloc(p->seen, cap * sizeof *s);
        if (!s)
            return perr(p, "out of memory");
        p->seen = s;
        p->cap_seen = cap;
    }
    if (!(p->seen[p->n_seen] = strdup(full)))
        return perr(p, "out of memory");
    p->n_seen++;
    return 0;
}

/* ---- values ---- */

static int parse_value(parser *p, value *v, int depth);

static bool token_char(int ch)
{
    return bare_char(ch) || ch == '+' || ch == '.' || ch == ':';
}

/* Integers and floats by TOML's rules; date-times are refused. */
static int parse_number(parser *p, value *v)
{
    size_t st = p->i;
    while (token_char(peek(p)))
        p->i++;
    size_t len = p->i - st;
    char tok[128];
    if (len == 0)
        return perr(p, "missing value");
    if (len >= sizeof tok)
        return perr(p, "value too long");
    memcpy(tok, p->s + st, len);
    tok[len] = '\0';
    if ((tok[0] >= 'a' && tok[0] <= 'z') || (tok[0] >= 'A' && tok[0] <= 'Z')) {
        if (strcmp(tok, "inf") && strcmp(tok, "nan")) {
            size_t e = st;
            while (e < p->n && e - st < 60 && !strchr(" \t\r\n#,]}", p->s[e]))
                e++;
            return perr(p, "unquoted value '%.*s' (strings need quotes)", (int)(e - st), p->s + st);
        }
    }
    if (strchr(tok, ':') || (len >= 5 && tok[4] == '-' && tok[0] >= '0' && tok[0] <= '9'))
        return perr(p, "date-time values are not supported");

    const char *t = tok;
    bool neg = false, sign = false;
    if (*t == '+' || *t == '-') {
        sign = true;
        neg = *t++ == '-';
    }
    if (!strcmp(t, "inf") || !strcmp(t, "nan")) {
        v->t = V_FLOAT;
        return 0;
    }
    int base = 10;
    if (t[0] == '0' && (t[1] == 'x' || t[1] == 'o' || t[1] == 'b')) {
        if (sign)
            return perr(p, "a sign is not allowed on a hexadecimal, octal or binary integer");
        base = t[1] == 'x' ? 16 : t[1] == 'o' ? 8 : 2;
        t += 2;
    }
    bool is_float = base == 10 && strpbrk(t, ".eE") != NULL;
    /* Underscores only between digits; digits valid for the base. */
    char clean[128];
    size_t cn = 0;
    for (const char *q = t; *q; q++) {
        if (*q == '_') {
            bool ok = q > t && hexval((unsigned char)q[-1]) >= 0 && hexval((unsigned char)q[1]) >= 0;
            if (!ok || (is_float && (q[-1] == 'e' || q[-1] == 'E' || q[1] == 'e' || q[1] == 'E')))
                return perr(p, "misplaced '_' in a number");
            continue;
        }
        clean[cn++] = *q;
    }
    clean[cn] = '\0';
    if (cn == 0)
        return perr(p, "missing digits in a number");
    if (is_float) {
        /* digits [. digits] [e [sign] digits], no leading zeros */
        const char *q = clean;
        size_t d = 0;
        while (q[d] >= '0' && q[d] <= '9')
            d++;
        if (d == 0 || (d > 1 && q[0] == '0'))
            return perr(p, "bad number '%s'", tok);
        q += d;
        if (*q == '.') {
            q++;
            d = 0;
            while (q[d] >= '0' && q[d] <= '9')
                d++;
            if (d == 0)
                return perr(p, "bad number '%s'", tok);
            q += d;
        }
        if (*q == 'e' || *q == 'E') {
            q++;
            if (*q == '+' || *q == '-')
                q++;
            d = 0;
            while (q[d] >= '0' && q[d] <= '9')
                d++;
            if (d == 0)
                return perr(p, "bad number '%s'", tok);
            q += d;
        }
        if (*q)
            return perr(p, "bad number '%s'", tok);
        v->t = V_FLOAT;
        return 0;
    }
    if (base == 10 && cn > 1 && clean[0] == '0')
        return perr(p, "leading zeros are not allowed in '%s'", tok);
    uint64_t limit = neg ? 1ULL << 63 : (1ULL << 63) - 1, acc = 0;
    for (size_t k = 0; k < cn; k++) {
        int dv = hexval((unsigned char)clean[k]);
        if (dv < 0 || dv >= base)
            return perr(p, "bad number '%s'", tok);
        if (acc > (limit - (uint64_t)dv) / (uint64_t)base)
            return perr(p, "integer '%s' does not fit in 64 bits", tok);
        acc = acc * (uint64_t)base + (uint64_t)dv;
    }
    v->t = V_INT;
    v->i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return 0;
}

static int parse_array(parser *p, int depth)
{
    p->i++;
    for (;;) {
        if (skip_blank(p))
            return -1;
        if (peek(p) == ']') {
            p->i++;
            return 0;
        }
        value el = {0};
        if (parse_value(p, &el, depth + 1))
            return -1;
        free(el.str);
        if (skip_blank(p))
            return -1;
        if (peek(p) == ',') {
            p->i++;
            continue;
        }
        if (peek(p) == ']') {
            p->i++;
            return 0;
        }
        return perr(p, "expected ',' or ']' in an array");
    }
}

static int parse_inline_table(parser *p, int depth)
{
    p->i++;
    skip_ws(p);
    if (peek(p) == '}') {
        p->i++;
        return 0;
    }
    for (;;) {
        char key[MAX_PATH];
        if (parse_key(p, key, sizeof key))
            return -1;
        if (peek(p) != '=')
            return perr(p, "expected '=' after key '%s'", key);
        p->i++;
        skip_ws(p);
        value el = {0};
        if (parse_value(p, &el, depth + 1))
            return -1;
        free(el.str);
        skip_ws(p);
        if (peek(p) == ',') {
            p->i++;
            continue;
        }
        if (peek(p) == '}') {
            p->i++;
            return 0;
        }
        return perr(p, "expected ',' or '}' in an inline table");
    }
}

static int parse_value(parser *p, value *v, int depth)
{
    if (depth > MAX_DEPTH)
        return perr(p, "arrays or inline tables nested too deeply");
    int ch = peek(p);
    if (ch == '"' || ch == '\'') {
        v->t = V_STRING;
        return parse_string(p, &v->str);
    }
    if (ch == '[') {
        v->t = V_ARRAY;
        return parse_array(p, depth);
    }
    if (ch == '{') {
        v->t = V_TABLE;
        return parse_inline_table(p, depth);
    }
    if (ch == 't' || ch == 'f') {
        const char *w = ch == 't' ? "true" : "false";
        size_t wl = strlen(w);
        if (p->n - p->i >= wl && !memcmp(p->s + p->i, w, wl) && !token_char(peek_at(p, wl))) {
            p->i += wl;
            v->t = V_BOOL;
            v->b = ch == 't';
            return 0;
        }
    }
    if (ch < 0 || at_newline(p) || ch == '#')
        return perr(p, "missing value");
    return parse_number(p, v);
}

/* ---- keys tm2p2p reads ---- */

typedef enum { F_STR, F_MONIKER, F_UINT, F_NONNEG, F_DUR, F_BOOL, F_IGNORED_STR } ftype;

static const struct field {
    const char *key;
    ftype type;
    size_t off;
} fields[] = {
    {"moniker", F_MONIKER, offsetof(cli_config, moniker)},
    {"node_key_file", F_STR, offsetof(cli_config, node_key_file)},
    {"p2p.home", F_IGNORED_STR, 0},
    {"p2p.laddr", F_STR, offsetof(cli_config, laddr)},
    {"p2p.external_address", F_STR, offsetof(cli_config, external_address)},
    {"p2p.seeds", F_STR, offsetof(cli_config, seeds)},
    {"p2p.persistent_peers", F_STR, offsetof(cli_config, persistent_peers)},
    {"p2p.max_num_inbound_peers", F_UINT, offsetof(cli_config, max_num_inbound_peers)},
    {"p2p.max_num_outbound_peers", F_UINT, offsetof(cli_config, max_num_outbound_peers)},
    {"p2p.flush_throttle_timeout", F_DUR, offsetof(cli_config, flush_throttle_timeout_ns)},
    {"p2p.max_packet_msg_payload_size", F_NONNEG, offsetof(cli_config, max_packet_msg_payload_size)},
    {"p2p.send_rate", F_NONNEG, offsetof(cli_config, send_rate)},
    {"p2p.recv_rate", F_NONNEG, offsetof(cli_config, recv_rate)},
    {"p2p.pex", F_BOOL, offsetof(cli_config, pex)},
    {"p2p.private_peer_ids", F_STR, offsetof(cli_config, private_peer_ids)},
    {"p2p.addr_book_file", F_STR, offsetof(cli_config, addr_book_file)},
    {"p2p.seed_mode", F_BOOL, offsetof(cli_config, seed_mode)},
};

static const char *type_name(vtype t)
{
    static const char *const names[] = {"a string", "an integer", "a float", "a boolean",
                                        "an array", "a table"};
    return names[t];
}

static int apply(parser *p, const char *key, value *v)
{
    const struct field *f = NULL;
    for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++)
        if (!strcmp(fields[k].key, key))
            f = &fields[k];
    if (!f) {
        if (!strncmp(key, "p2p.", 4) && !strchr(key + 4, '.') && p->warn) {
            char msg[4 * MAX_PATH];
            snprintf(msg, sizeof msg, "%.1000s:%u: unknown key %.600s ignored", p->name, p->line, key);
            p->warn(p->warn_user, msg);
        }
        return 0;
    }
    char *base = (char *)p->c + f->off;
    static const vtype want[] = {
        [F_STR] = V_STRING, [F_MONIKER] = V_STRING, [F_UINT] = V_INT, [F_NONNEG] = V_INT,
        [F_DUR] = V_STRING, [F_BOOL] = V_BOOL, [F_IGNORED_STR] = V_STRING,
    };
    /* A duration may also be an integer count of nanoseconds, as go-toml reads it. */
    if (v->t != want[f->type] && !(f->type == F_DUR && v->t == V_INT))
        return perr(p, "%s: expected %s%s, found %s", key, type_name(want[f->type]),
                    f->type == F_DUR ? " duration such as \"100ms\"" : "", type_name(v->t));
    if (f->type == F_MONIKER && !v->str[0])
        return perr(p, "%s: must not be empty", key);
    switch (f->type) {
    case F_MONIKER:
    case F_STR: {
        char **slot = (char **)(void *)base;
        free(*slot);
        *slot = v->str;
        v->str = NULL;
        return 0;
    }
    case F_IGNORED_STR:
        return 0;
    case F_UINT:
        if (v->i < 0)
            return perr(p, "%s: must not be negative (got %lld)", key, (long long)v->i);
        *(uint64_t *)(void *)base = (uint64_t)v->i;
        return 0;
    case F_NONNEG:
        if (v->i < 0)
            return perr(p, "%s: must not be negative (got %lld)", key, (long long)v->i);
        *(int64_t *)(void *)base = v->i;
        return 0;
    case F_DUR: {
        int64_t ns = v->i;
        if (v->t == V_STRING && cli_parse_duration(v->str, &ns))
            return perr(p, "%s: bad duration \"%s\" (use e.g. \"100ms\", \"10s\", \"1m30s\")", key, v->str);
        if (ns < 0)
            return perr(p, "%s: must not be negative", key);
        *(int64_t *)(void *)base = ns;
        return 0;
    }
    case F_BOOL:
        *(bool *)(void *)base = v->b;
        return 0;
    }
    return 0;
}

static int parse_table_header(parser *p)
{
    bool array = peek_at(p, 1) == '[';
    p->i += array ? 2 : 1;
    char path[MAX_PATH];
    if (parse_key(p, path, sizeof path))
        return -1;
    if (peek(p) != ']' || (array && peek_at(p, 1) != ']'))
        return perr(p, "expected '%s' after table name '%s'", array ? "]]" : "]", path);
    p->i += array ? 2 : 1;
    snprintf(p->table, sizeof p->table, "%s", path);
    p->array_table = array;
    if (!array) {
        int r = remember(p, "table", path);
        if (r < 0)
            return -1;
        if (r > 0)
            return perr(p, "table [%s] defined twice", path);
    }
    return end_of_line(p);
}

static int parse_keyval(parser *p)
{
    char key[MAX_PATH], full[2 * MAX_PATH + 1];
    if (parse_key(p, key, sizeof key))
        return -1;
    if (peek(p) != '=')
        return perr(p, "expected '=' after key '%s'", key);
    p->i++;
    skip_ws(p);
    if (p->table[0])
        snprintf(full, sizeof full, "%s.%s", p->table, key);
    else
        snprintf(full, sizeof full, "%s", key);
    value v = {0};
    int r = parse_value(p, &v, 0);
    if (r == 0 && !p->array_table) {
        int dup = remember(p, "key", full);
        if (dup > 0)
            r = perr(p, "%s: defined twice", full);
        else
            r = dup;
    }
    if (r == 0 && !p->array_table)
        r = apply(p, full, &v);
    free(v.str);
    if (r)
        return -1;
    return end_of_line(p);
}

int cli_config_parse(cli_config *c, const char *text, size_t len, const char *name,
                     cli_config_warn_fn warn, void *warn_user, char *err, size_t err_len)
{
    parser p = {.s = text, .n = len, .line = 1, .name = name, .err = err, .err_len = err_len,
                .c = c, .warn = warn, .warn_user = warn_user};
    if (err_len)
        err[0] = '\0';
    /* A UTF-8 byte order mark is allowed at the very start. */
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        p.i = 3;
    if (memchr(text, '\0', len))
        perr(&p, "NUL byte in the file");
    while (!p.failed) {
        if (skip_blank(&p))
            break;
        if (p.i >= p.n)
            break;
        if (peek(&p) == '[')
            parse_table_header(&p);
        else
            parse_keyval(&p);
    }
    for (size_t k = 0; k < p.n_seen; k++)
        free(p.seen[k]);
    free(p.seen);
    return p.failed ? -1 : 0;
}

int cli_config_load(cli_config *c, const char *path, bool *found, cli_config_warn_fn warn,
                    void *warn_user, char *err, size_t err_len)
{
    *found = false;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    *found = true;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        snprintf(err, err_len, "%s: is a directory", path);
        return -1;
    }
    char *buf = malloc(MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, err_len, "%s: out of memory", path);
        return -1;
    }
    size_t n = fread(buf, 1, MAX_FILE + 1, f);
    bool bad = ferror(f);
    fclose(f);
    int r = -1;
    if (bad)
        snprintf(err, err_len, "%s: read error", path);
    else if (n > MAX_FILE)
        snprintf(err, err_len, "%s: larger than %u bytes", path, MAX_FILE);
    else
        r = cli_config_parse(c, buf, n, path, warn, warn_user, err, err_len);
    free(buf);
    return r;
}
