/* TOML 1.0 parser: one pass of recursive descent over the text (after a UTF-8
 * check of the whole input), building the tree as it goes. The redefinition
 * rules are enforced by recording on every table how it came to be. */
#include "cli/toml.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How a table or array was created; decides what may extend it later. */
enum {
    ORIG_ROOT,
    ORIG_IMPLICIT, /* [a.b] created 'a' without defining it: [a] may still come */
    ORIG_HEADER,   /* defined by [a] */
    ORIG_DOTTED,   /* created by a dotted key a.b = 1: only more dotted keys extend it */
    ORIG_INLINE,   /* { ... }: closed once written */
    ORIG_AOT_ELEM, /* one [[a]] element */
    ORIG_STATIC,   /* an array value [ ... ]: closed */
    ORIG_AOT,      /* the array behind [[a]]: each [[a]] appends */
};

#define INDEX_FROM 8 /* tables with this many keys get a hash index */

typedef struct parser {
    const char *s;
    size_t n, i;
    unsigned line;
    toml_error *err;
    bool failed;
    toml_value *root, *cur;
    char cur_name[300]; /* header of the current table, for messages */
} parser;

typedef struct keypart {
    char *s;
    size_t len;
} keypart;

typedef struct keypath {
    keypart p[TOML_MAX_KEY_PARTS];
    size_t n;
    unsigned line;
} keypath;

typedef struct sbuf {
    char *d;
    size_t n, cap;
    bool oom;
} sbuf;

__attribute__((format(printf, 3, 4))) static void fail_at(parser *p, unsigned line, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    p->err->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
    va_end(ap);
}

#define perr(p, ...) fail_at((p), (p)->line, __VA_ARGS__)

static void fail_oom(parser *p)
{
    perr(p, "out of memory");
    p->err->oom = true;
}

static int peek(const parser *p)
{
    return p->i < p->n ? (unsigned char)p->s[p->i] : -1;
}

static int peek_at(const parser *p, size_t k)
{
    return p->i + k < p->n ? (unsigned char)p->s[p->i + k] : -1;
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_bare(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '-';
}

/* Control characters TOML forbids in strings and comments (tab is allowed). */
static bool is_ctrl(int c)
{
    return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
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

/* A comment runs to the end of the line. */
static int skip_comment(parser *p)
{
    if (peek(p) != '#')
        return 0;
    p->i++;
    while (p->i < p->n && !at_newline(p)) {
        if (is_ctrl(peek(p))) {
            perr(p, "control character in a comment");
            return -1;
        }
        p->i++;
    }
    return 0;
}

/* Whitespace, comments and newlines, as allowed inside arrays. */
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

/* After a key/value pair or a header: a comment, then a newline or the end. */
static int end_of_line(parser *p, const char *what)
{
    skip_ws(p);
    if (skip_comment(p))
        return -1;
    if (p->i >= p->n)
        return 0;
    if (!at_newline(p)) {
        int c = peek(p);
        if (c >= 0x20 && c < 0x7f)
            perr(p, "unexpected '%c' after the %s (one key = value per line)", c, what);
        else
            perr(p, "unexpected byte 0x%02x after the %s", (unsigned)c, what);
        return -1;
    }
    eat_newline(p);
    return 0;
}

/* ---- UTF-8 --------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int check_utf8(parser *p)
{
    const unsigned char *s = (const unsigned char *)p->s;
    unsigned line = 1;
    for (size_t i = 0; i < p->n;) {
        if (s[i] == '\n')
            line++;
        if (s[i] == 0) {
            fail_at(p, line, "NUL byte in the document");
            return -1;
        }
        size_t l = utf8_len(s + i, p->n - i);
        if (!l) {
            fail_at(p, line, "invalid UTF-8 (byte 0x%02x)", s[i]);
            return -1;
        }
        i += l;
    }
    return 0;
}

/* ---- string buffers ------------------------------------------------------ */

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *d = realloc(b->d, cap);
        if (!d) {
            b->oom = true;
            return;
        }
        b->d = d;
        b->cap = cap;
    }
    if (n)
        memcpy(b->d + b->n, s, n);
    b->n += n;
    b->d[b->n] = '\0';
}

static void sb_char(sbuf *b, char c)
{
    sb_put(b, &c, 1);
}

static void sb_utf8(sbuf *b, uint32_t cp)
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
    sb_put(b, u, n);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- strings ------------------------------------------------------------- */

/* One escape; p->i is just past the backslash. */
static int escape(parser *p, sbuf *b)
{
    int e = peek(p);
    char rep;
    switch (e) {
    case 'b': rep = '\b'; break;
    case 't': rep = '\t'; break;
    case 'n': rep = '\n'; break;
    case 'f': rep = '\f'; break;
    case 'r': rep = '\r'; break;
    case '"': rep = '"'; break;
    case '\\': rep = '\\'; break;
    case 'u':
    case 'U': {
        p->i++;
        int digits = e == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (int k = 0; k < digits; k++) {
            int h = hexval(peek(p));
            if (h < 0) {
                perr(p, "bad \\%c escape in a string (needs %d hex digits)", e, digits);
                return -1;
            }
            cp = cp << 4 | (uint32_t)h;
            p->i++;
        }
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            perr(p, "\\%c escape is not a Unicode scalar value", e);
            return -1;
        }
        sb_utf8(b, cp);
        return 0;
    }
    default:
        if (e >= 0x20 && e < 0x7f)
            perr(p, "unknown escape sequence '\\%c' in a string", e);
        else
            perr(p, "unknown escape sequence in a string");
        return -1;
    }
    p->i++;
    sb_char(b, rep);
    return 0;
}

/* A one-line basic ("...") or literal ('...') string; p->i at the quote. */
static int string_line(parser *p, sbuf *b)
{
    int q = peek(p);
    p->i++;
    sb_put(b, "", 0);
    for (;;) {
        int c = peek(p);
        if (c < 0 || c == '\n' || (c == '\r' && peek_at(p, 1) == '\n')) {
            perr(p, "unterminated string");
            return -1;
        }
        if (c == q) {
            p->i++;
            return 0;
        }
        if (is_ctrl(c)) {
            perr(p, "control character 0x%02x in a string (escape it)", (unsigned)c);
            return -1;
        }
        p->i++;
        if (c == '\\' && q == '"') {
            if (escape(p, b))
                return -1;
        } else {
            sb_char(b, (char)c);
        }
    }
}

/* A multi-line string; p->i at the first of the three quotes. Newlines are
 * kept as written (LF or CRLF). */
static int string_multi(parser *p, sbuf *b)
{
    int q = peek(p);
    p->i += 3;
    sb_put(b, "", 0);
    if (at_newline(p))
        eat_newline(p); /* a newline right after the opening quotes is trimmed */
    for (;;) {
        int c = peek(p);
        if (c < 0) {
            perr(p, "unterminated multi-line string");
            return -1;
        }
        if (c == q) {
            size_t k = 0;
            while (peek_at(p, k) == q)
                k++;
            if (k < 3) {
                sb_put(b, p->s + p->i, k);
                p->i += k;
                continue;
            }
            if (k > 5) {
                perr(p, "too many quotes at the end of a multi-line string");
                return -1;
            }
            sb_put(b, p->s + p->i, k - 3); /* up to two quotes end the content */
            p->i += k;
            return 0;
        }
        if (at_newline(p)) {
            sb_put(b, p->s + p->i, c == '\r' ? 2 : 1);
            eat_newline(p);
            continue;
        }
        if (is_ctrl(c)) {
            perr(p, "control character 0x%02x in a string (escape it)", (unsigned)c);
            return -1;
        }
        p->i++;
        if (c != '\\' || q == '\'') {
            sb_char(b, (char)c);
            continue;
        }
        /* A backslash ending a line (maybe followed by blanks) trims every
         * blank and newline up to the next other character. */
        size_t save = p->i;
        skip_ws(p);
        if (at_newline(p)) {
            while (peek(p) == ' ' || peek(p) == '\t' || at_newline(p)) {
                if (at_newline(p))
                    eat_newline(p);
                else
                    p->i++;
            }
            continue;
        }
        p->i = save;
        if (escape(p, b))
            return -1;
    }
}

/* Any string value; p->i at its opening quote. */
static int string_any(parser *p, sbuf *b)
{
    int q = peek(p);
    int r = peek_at(p, 1) == q && peek_at(p, 2) == q ? string_multi(p, b) : string_line(p, b);
    if (r == 0 && b->oom) {
        fail_oom(p);
        return -1;
    }
    return r;
}

/* ---- tree ---------------------------------------------------------------- */

static toml_value *new_value(parser *p, toml_type t, unsigned depth)
{
    if (depth > TOML_MAX_DEPTH) {
        perr(p, "tables, arrays or inline tables nested too deeply (more than %d levels)", TOML_MAX_DEPTH);
        return NULL;
    }
    toml_value *v = calloc(1, sizeof *v);
    if (!v) {
        fail_oom(p);
        return NULL;
    }
    v->type = t;
    v->line = p->line;
    v->depth = depth;
    return v;
}

void toml_free(toml_value *v)
{
    if (!v)
        return;
    switch (v->type) {
    case TOML_TABLE:
        for (size_t k = 0; k < v->u.t.n; k++) {
            free(v->u.t.items[k].key);
            toml_free(v->u.t.items[k].value);
        }
        free(v->u.t.items);
        free(v->u.t.index);
        break;
    case TOML_ARRAY:
        for (size_t k = 0; k < v->u.a.n; k++)
            toml_free(v->u.a.items[k]);
        free(v->u.a.items);
        break;
    case TOML_STRING:
    case TOML_DATETIME:
    case TOML_DATETIME_LOCAL:
    case TOML_DATE_LOCAL:
    case TOML_TIME_LOCAL:
        free(v->u.s.ptr);
        break;
    default:
        break;
    }
    free(v);
}

static uint32_t key_hash(const char *k, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

static toml_value *tab_find(const toml_value *t, const char *k, size_t kl)
{
    if (t->u.t.index) {
        size_t mask = t->u.t.index_cap - 1;
        for (size_t s = key_hash(k, kl) & mask;; s = (s + 1) & mask) {
            uint32_t ix = t->u.t.index[s];
            if (!ix)
                return NULL;
            const toml_entry *e = &t->u.t.items[ix - 1];
            if (e->key_len == kl && !memcmp(e->key, k, kl))
                return e->value;
        }
    }
    for (size_t i = 0; i < t->u.t.n; i++) {
        const toml_entry *e = &t->u.t.items[i];
        if (e->key_len == kl && !memcmp(e->key, k, kl))
            return e->value;
    }
    return NULL;
}

static void index_put(toml_value *t, size_t item)
{
    const toml_entry *e = &t->u.t.items[item];
    size_t mask = t->u.t.index_cap - 1;
    size_t s = key_hash(e->key, e->key_len) & mask;
    while (t->u.t.index[s])
        s = (s + 1) & mask;
    t->u.t.index[s] = (uint32_t)(item + 1);
}

/* Adds key -> v (the key is copied; v is owned by t on success). */
static int tab_add(parser *p, toml_value *t, const char *k, size_t kl, toml_value *v)
{
    if (t->u.t.n == UINT32_MAX - 1) {
        perr(p, "too many keys in one table");
        return -1;
    }
    if (t->u.t.n == t->u.t.cap) {
        size_t cap = t->u.t.cap ? t->u.t.cap * 2 : 8;
        toml_entry *it = realloc(t->u.t.items, cap * sizeof *it);
        if (!it) {
            fail_oom(p);
            return -1;
        }
        t->u.t.items = it;
        t->u.t.cap = cap;
    }
    char *kc = malloc(kl + 1);
    if (!kc) {
        fail_oom(p);
        return -1;
    }
    memcpy(kc, k, kl);
    kc[kl] = '\0';
    size_t n = t->u.t.n;
    if (n + 1 >= INDEX_FROM && (n + 1) * 2 > t->u.t.index_cap) {
        size_t cap = 32;
        while (cap < (n + 1) * 4)
            cap *= 2;
        uint32_t *ix = calloc(cap, sizeof *ix);
        if (!ix) {
            free(kc);
            fail_oom(p);
            return -1;
        }
        free(t->u.t.index);
        t->u.t.index = ix;
        t->u.t.index_cap = cap;
        for (size_t i = 0; i < n; i++)
            index_put(t, i);
    }
    t->u.t.items[n] = (toml_entry){.key = kc, .key_len = kl, .value = v};
    t->u.t.n = n + 1;
    if (t->u.t.index)
        index_put(t, n);
    return 0;
}

static int arr_push(parser *p, toml_value *a, toml_value *v)
{
    if (a->u.a.n == a->u.a.cap) {
        size_t cap = a->u.a.cap ? a->u.a.cap * 2 : 4;
        toml_value **it = realloc(a->u.a.items, cap * sizeof *it);
        if (!it) {
            fail_oom(p);
            return -1;
        }
        a->u.a.items = it;
        a->u.a.cap = cap;
    }
    a->u.a.items[a->u.a.n++] = v;
    return 0;
}

/* Closes an inline table and everything written inside it. A sealed value's
 * contents are sealed already, so nested inline tables cost one visit. */
static void seal(toml_value *v)
{
    if (v->sealed)
        return;
    v->sealed = true;
    if (v->type == TOML_TABLE)
        for (size_t k = 0; k < v->u.t.n; k++)
            seal(v->u.t.items[k].value);
    else if (v->type == TOML_ARRAY)
        for (size_t k = 0; k < v->u.a.n; k++)
            seal(v->u.a.items[k]);
}

/* ---- keys ---------------------------------------------------------------- */

static void key_free(keypath *kp)
{
    for (size_t k = 0; k < kp->n; k++)
        free(kp->p[k].s);
    kp->n = 0;
}

/* kp->p[0..upto] as text for messages, quoting parts that are not bare. */
static const char *key_text(const keypath *kp, size_t upto, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < upto && k < kp->n && o + 1 < cap; k++) {
        const keypart *kpart = &kp->p[k];
        bool bare = kpart->len > 0;
        for (size_t i = 0; i < kpart->len; i++)
            bare = bare && is_bare((unsigned char)kpart->s[i]);
        int w = snprintf(buf + o, cap - o, "%s%s%.*s%s", k ? "." : "", bare ? "" : "\"",
                         (int)(kpart->len > 60 ? 60 : kpart->len), kpart->s, bare ? "" : "\"");
        if (w < 0)
            break;
        o += (size_t)w;
        if (o >= cap)
            o = cap - 1;
    }
    /* parts may hold control characters or NUL: keep messages printable */
    for (size_t i = 0; i < o; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            buf[i] = '?';
    buf[o] = '\0';
    return buf;
}

/* A key of one or more parts joined by '.'. */
static int parse_key(parser *p, keypath *kp)
{
    kp->n = 0;
    kp->line = p->line;
    for (;;) {
        skip_ws(p);
        int c = peek(p);
        sbuf b = {0};
        if (c == '"' || c == '\'') {
            if (peek_at(p, 1) == c && peek_at(p, 2) == c) {
                perr(p, "a multi-line string cannot be a key");
                return -1;
            }
            if (string_line(p, &b) || b.oom) {
                if (b.oom)
                    fail_oom(p);
                free(b.d);
                return -1;
            }
        } else if (is_bare(c)) {
            size_t st = p->i;
            while (is_bare(peek(p)))
                p->i++;
            sb_put(&b, p->s + st, p->i - st);
            if (b.oom) {
                free(b.d);
                fail_oom(p);
                return -1;
            }
        } else {
            if (c < 0 || at_newline(p) || c == '=' || c == ']' || c == '.' || c == '#')
                perr(p, "missing key");
            else if (c > 0x20 && c < 0x7f)
                perr(p, "bad character '%c' in a key", c);
            else
                perr(p, "bad byte 0x%02x in a key", (unsigned)c);
            return -1;
        }
        if (kp->n == TOML_MAX_KEY_PARTS) {
            free(b.d);
            perr(p, "key with more than %d parts", TOML_MAX_KEY_PARTS);
            return -1;
        }
        kp->p[kp->n++] = (keypart){b.d, b.n};
        skip_ws(p);
        if (peek(p) != '.')
            return 0;
        p->i++;
    }
}

/* Puts v at the dotted key kp under table t (v is freed on failure). */
static int insert(parser *p, toml_value *t, const keypath *kp, toml_value *v, const char *where)
{
    char kt[300];
    for (size_t k = 0; k + 1 < kp->n; k++) {
        toml_value *x = tab_find(t, kp->p[k].s, kp->p[k].len);
        if (!x) {
            x = new_value(p, TOML_TABLE, t->depth + 1);
            if (!x || tab_add(p, t, kp->p[k].s, kp->p[k].len, x)) {
                toml_free(x);
                toml_free(v);
                return -1;
            }
            x->origin = ORIG_DOTTED;
            x->line = kp->line;
        } else if (x->type != TOML_TABLE || x->origin != ORIG_DOTTED || x->sealed) {
            fail_at(p, kp->line, "%s%s%s: cannot add keys to it here (already defined as %s%s)", where,
                    where[0] ? "." : "", key_text(kp, k + 1, kt, sizeof kt),
                    x->type == TOML_TABLE && x->origin == ORIG_INLINE ? "an inline " : "",
                    x->type == TOML_TABLE && x->origin == ORIG_INLINE ? "table" : toml_type_name(x->type));
            toml_free(v);
            return -1;
        }
        t = x;
    }
    const keypart *last = &kp->p[kp->n - 1];
    if (tab_find(t, last->s, last->len)) {
        fail_at(p, kp->line, "%s%s%s: defined twice", where, where[0] ? "." : "", key_text(kp, kp->n, kt, sizeof kt));
        toml_free(v);
        return -1;
    }
    if (tab_add(p, t, last->s, last->len, v)) {
        toml_free(v);
        return -1;
    }
    return 0;
}

/* ---- numbers and date-times ---------------------------------------------- */

static bool token_char(int c)
{
    return is_bare(c) || c == '+' || c == '.' || c == ':';
}

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_digit((unsigned char)s[i]))
            return false;
    return true;
}

static unsigned num2(const char *s)
{
    return (unsigned)(s[0] - '0') * 10 + (unsigned)(s[1] - '0');
}

/* "HH:MM:SS[.frac]" at s: its length, or 0. */
static size_t parse_time(const char *s, size_t n)
{
    if (n < 8 || !digits(s, 2) || s[2] != ':' || !digits(s + 3, 2) || s[5] != ':' || !digits(s + 6, 2))
        return 0;
    /* second 60 is RFC 3339's leap second */
    if (num2(s) > 23 || num2(s + 3) > 59 || num2(s + 6) > 60)
        return 0;
    size_t l = 8;
    if (l < n && s[l] == '.') {
        size_t f = l + 1;
        while (f < n && is_digit((unsigned char)s[f]))
            f++;
        if (f == l + 1)
            return 0;
        l = f;
    }
    return l;
}

static int parse_datetime(parser *p, const char *tok, size_t n, toml_value *v)
{
    /* the normalised text is never longer than the token */
    char *out = malloc(n + 1);
    if (!out) {
        fail_oom(p);
        return -1;
    }
    size_t o = 0;
    toml_type t;
    if (n >= 3 && tok[2] == ':') {
        size_t l = parse_time(tok, n);
        if (!l || l != n)
            goto bad;
        memcpy(out, tok, l);
        o = l;
        t = TOML_TIME_LOCAL;
    } else {
        if (n < 10 || !digits(tok, 4) || tok[4] != '-' || !digits(tok + 5, 2) || tok[7] != '-' ||
            !digits(tok + 8, 2))
            goto bad;
        unsigned y = (unsigned)(tok[0] - '0') * 1000 + (unsigned)(tok[1] - '0') * 100 + num2(tok + 2);
        unsigned m = num2(tok + 5), d = num2(tok + 8);
        static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1] + (m == 2 && leap))
            goto bad;
        memcpy(out, tok, 10);
        o = 10;
        t = TOML_DATE_LOCAL;
        if (n > 10) {
            if (tok[10] != 'T' && tok[10] != 't' && tok[10] != ' ')
                goto bad;
            size_t l = parse_time(tok + 11, n - 11);
            if (!l)
                goto bad;
            out[o++] = 'T';
            memcpy(out + o, tok + 11, l);
            o += l;
            size_t r = 11 + l;
            t = TOML_DATETIME_LOCAL;
            if (r < n) {
                t = TOML_DATETIME;
                if ((tok[r] == 'Z' || tok[r] == 'z') && r + 1 == n) {
                    out[o++] = 'Z';
                } else if ((tok[r] == '+' || tok[r] == '-') && n - r == 6 && digits(tok + r + 1, 2) &&
                           tok[r + 3] == ':' && digits(tok + r + 4, 2) && num2(tok + r + 1) <= 23 &&
                           num2(tok + r + 4) <= 59) {
                    memcpy(out + o, tok + r, 6);
                    o += 6;
                } else {
                    goto bad;
                }
            }
        }
    }
    out[o] = '\0';
    v->type = t;
    v->u.s.ptr = out;
    v->u.s.len = o;
    return 0;
bad:
    free(out);
    perr(p, "bad date or time '%.*s'", (int)(n > 60 ? 60 : n), tok);
    return -1;
}

/* Digits of the given base with '_' only between two digits; copied to out
 * without the underscores. 0, -1 (not a digit, or none) or -2 (misplaced '_'). */
static int digit_run(const char *s, size_t n, int base, char *out, size_t *on)
{
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '_') {
            if (i == 0 || i + 1 == n || s[i - 1] == '_')
                return -2;
            continue;
        }
        int d = hexval((unsigned char)s[i]);
        if (d < 0 || d >= base)
            return -1;
        out[(*on)++] = s[i];
    }
    return 0;
}

static int parse_number(parser *p, const char *tok, size_t n, toml_value *v)
{
    char clean[300];
    size_t cn = 0;
    const char *t = tok;
    size_t tn = n;
    bool neg = false, sign = false;
    int dr = 0;
    if (n >= sizeof clean) {
        perr(p, "unsupported: number of more than %zu characters", sizeof clean - 1);
        return -1;
    }
    if (*t == '+' || *t == '-') {
        sign = true;
        neg = *t == '-';
        t++;
        tn--;
    }
    if (tn == 3 && (!memcmp(t, "inf", 3) || !memcmp(t, "nan", 3))) {
        v->type = TOML_FLOAT;
        v->u.f = t[0] == 'i' ? (neg ? -INFINITY : INFINITY) : (neg ? -NAN : NAN);
        return 0;
    }
    if (tn >= 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'o' || t[1] == 'b')) {
        if (sign) {
            perr(p, "a sign is not allowed on a hexadecimal, octal or binary integer");
            return -1;
        }
        int base = t[1] == 'x' ? 16 : t[1] == 'o' ? 8 : 2;
        if ((dr = digit_run(t + 2, tn - 2, base, clean, &cn)))
            goto bad;
        uint64_t acc = 0;
        for (size_t k = 0; k < cn; k++) {
            uint64_t d = (uint64_t)hexval((unsigned char)clean[k]);
            if (acc > ((uint64_t)INT64_MAX - d) / (uint64_t)base) {
                perr(p, "integer '%.*s' does not fit in 64 bits", (int)(n > 60 ? 60 : n), tok);
                return -1;
            }
            acc = acc * (uint64_t)base + d;
        }
        v->type = TOML_INTEGER;
        v->u.i = (int64_t)acc;
        return 0;
    }
    /* decimal: integer part, then an optional fraction and exponent */
    size_t ip = 0;
    while (ip < tn && t[ip] != '.' && t[ip] != 'e' && t[ip] != 'E')
        ip++;
    if (neg)
        clean[cn++] = '-';
    size_t int_start = cn;
    if ((dr = digit_run(t, ip, 10, clean, &cn)))
        goto bad;
    if (cn - int_start > 1 && clean[int_start] == '0') {
        perr(p, "leading zeros are not allowed in '%.*s'", (int)(n > 60 ? 60 : n), tok);
        return -1;
    }
    if (ip == tn) {
        uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, acc = 0;
        for (size_t k = int_start; k < cn; k++) {
            uint64_t d = (uint64_t)(clean[k] - '0');
            if (acc > (limit - d) / 10) {
                perr(p, "integer '%.*s' does not fit in 64 bits", (int)(n > 60 ? 60 : n), tok);
                return -1;
            }
            acc = acc * 10 + d;
        }
        v->type = TOML_INTEGER;
        v->u.i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
        return 0;
    }
    size_t r = ip;
    if (t[r] == '.') {
        size_t fs = ++r;
        while (r < tn && t[r] != 'e' && t[r] != 'E')
            r++;
        clean[cn++] = '.';
        if ((dr = digit_run(t + fs, r - fs, 10, clean, &cn)))
            goto bad;
    }
    if (r < tn) {
        r++; /* e or E */
        clean[cn++] = 'e';
        if (r < tn && (t[r] == '+' || t[r] == '-'))
            clean[cn++] = t[r++];
        if ((dr = digit_run(t + r, tn - r, 10, clean, &cn)))
            goto bad;
    }
    clean[cn] = '\0';
    char *end;
    double d = strtod(clean, &end);
    if (*end)
        goto bad;
    if (isinf(d)) {
        perr(p, "float '%.*s' is out of range", (int)(n > 60 ? 60 : n), tok);
        return -1;
    }
    v->type = TOML_FLOAT;
    v->u.f = d;
    return 0;
bad:
    if (dr == -2)
        perr(p, "misplaced '_' in the number '%.*s'", (int)(n > 60 ? 60 : n), tok);
    else
        perr(p, "bad number '%.*s'", (int)(n > 60 ? 60 : n), tok);
    return -1;
}

/* A number, date-time, inf or nan; p->i at its first character. */
static int parse_scalar(parser *p, toml_value *v)
{
    size_t st = p->i;
    while (token_char(peek(p)))
        p->i++;
    /* a date, a space, then a time is one date-time */
    if (p->i - st == 10 && p->s[st + 4] == '-' && peek(p) == ' ' && is_digit(peek_at(p, 1)) &&
        is_digit(peek_at(p, 2)) && peek_at(p, 3) == ':') {
        p->i++;
        while (token_char(peek(p)))
            p->i++;
    }
    const char *tok = p->s + st;
    size_t n = p->i - st;
    if (n == 0) {
        int c = peek(p);
        if (c < 0 || at_newline(p) || c == '#' || c == ',' || c == ']' || c == '}')
            perr(p, "missing value");
        else if (c > 0x20 && c < 0x7f)
            perr(p, "unexpected '%c' where a value should be", c);
        else
            perr(p, "unexpected byte 0x%02x where a value should be", (unsigned)c);
        return -1;
    }
    char c0 = tok[0];
    bool alpha = (c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z');
    if (alpha && !(n == 3 && (!memcmp(tok, "inf", 3) || !memcmp(tok, "nan", 3)))) {
        size_t e = st;
        while (e < p->n && e - st < 60 && !strchr(" \t\r\n#,]}", p->s[e]) && p->s[e])
            e++;
        perr(p, "unquoted value '%.*s' (strings need quotes)", (int)(e - st), p->s + st);
        return -1;
    }
    /* date-times have a '-' after four digits or a ':' after two */
    if ((n >= 5 && digits(tok, 4) && tok[4] == '-') || (n >= 3 && digits(tok, 2) && tok[2] == ':'))
        return parse_datetime(p, tok, n, v);
    return parse_number(p, tok, n, v);
}

/* ---- values -------------------------------------------------------------- */

static toml_value *parse_value(parser *p, unsigned depth);

static toml_value *parse_array(parser *p, unsigned depth)
{
    toml_value *a = new_value(p, TOML_ARRAY, depth);
    if (!a)
        return NULL;
    a->origin = ORIG_STATIC;
    p->i++;
    for (;;) {
        if (skip_blank(p))
            goto fail;
        if (peek(p) == ']') {
            p->i++;
            return a;
        }
        toml_value *el = parse_value(p, depth + 1);
        if (!el)
            goto fail;
        if (arr_push(p, a, el)) {
            toml_free(el);
            goto fail;
        }
        if (skip_blank(p))
            goto fail;
        if (peek(p) == ',') {
            p->i++;
            continue;
        }
        if (peek(p) == ']') {
            p->i++;
            return a;
        }
        if (p->i >= p->n)
            perr(p, "unterminated array (expected ',' or ']')");
        else
            perr(p, "expected ',' or ']' in an array");
        goto fail;
    }
fail:
    toml_free(a);
    return NULL;
}

static toml_value *parse_inline_table(parser *p, unsigned depth)
{
    toml_value *t = new_value(p, TOML_TABLE, depth);
    if (!t)
        return NULL;
    t->origin = ORIG_INLINE;
    p->i++;
    skip_ws(p);
    if (peek(p) == '}') {
        p->i++;
        seal(t);
        return t;
    }
    for (;;) {
        keypath kp;
        if (at_newline(p)) {
            perr(p, "newline inside an inline table (TOML 1.0 keeps them on one line)");
            goto fail;
        }
        if (parse_key(p, &kp))
            goto fail_key;
        if (peek(p) != '=') {
            char kt[300];
            perr(p, "expected '=' after key '%s'", key_text(&kp, kp.n, kt, sizeof kt));
            goto fail_key;
        }
        p->i++;
        skip_ws(p);
        toml_value *v = parse_value(p, depth + (unsigned)kp.n);
        if (!v || insert(p, t, &kp, v, ""))
            goto fail_key;
        key_free(&kp);
        skip_ws(p);
        if (peek(p) == ',') {
            p->i++;
            skip_ws(p);
            if (peek(p) == '}') {
                perr(p, "trailing ',' in an inline table");
                goto fail;
            }
            continue;
        }
        if (peek(p) == '}') {
            p->i++;
            seal(t);
            return t;
        }
        if (at_newline(p))
            perr(p, "newline inside an inline table (TOML 1.0 keeps them on one line)");
        else
            perr(p, "expected ',' or '}' in an inline table");
        goto fail;
    fail_key:
        key_free(&kp);
        goto fail;
    }
fail:
    toml_free(t);
    return NULL;
}

static bool word_at(const parser *p, const char *w)
{
    size_t wl = strlen(w);
    return p->n - p->i >= wl && !memcmp(p->s + p->i, w, wl) && !token_char(peek_at(p, wl));
}

static toml_value *parse_value(parser *p, unsigned depth)
{
    int c = peek(p);
    toml_value *v = new_value(p, TOML_STRING, depth);
    if (!v)
        return NULL;
    if (c == '"' || c == '\'') {
        sbuf b = {0};
        if (string_any(p, &b)) {
            free(b.d);
            free(v);
            return NULL;
        }
        v->u.s.ptr = b.d;
        v->u.s.len = b.n;
        return v;
    }
    if (c == '[' || c == '{') {
        free(v);
        return c == '[' ? parse_array(p, depth) : parse_inline_table(p, depth);
    }
    if (word_at(p, "true") || word_at(p, "false")) {
        v->type = TOML_BOOL;
        v->u.b = c == 't';
        p->i += v->u.b ? 4 : 5;
        return v;
    }
    v->type = TOML_INTEGER;
    if (parse_scalar(p, v)) {
        free(v);
        return NULL;
    }
    return v;
}

/* ---- document ------------------------------------------------------------ */

/* [a.b] or [[a.b]]; p->i at the first '['. */
static int parse_header(parser *p)
{
    bool aot = peek_at(p, 1) == '[';
    p->i += aot ? 2 : 1;
    keypath kp;
    char kt[300];
    if (parse_key(p, &kp))
        goto fail;
    key_text(&kp, kp.n, kt, sizeof kt);
    if (peek(p) != ']' || (aot && peek_at(p, 1) != ']')) {
        perr(p, "expected '%s' after table name '%s'", aot ? "]]" : "]", kt);
        goto fail;
    }
    p->i += aot ? 2 : 1;
    toml_value *t = p->root;
    for (size_t k = 0; k < kp.n; k++) {
        bool last = k + 1 == kp.n;
        toml_value *x = tab_find(t, kp.p[k].s, kp.p[k].len);
        if (!x) {
            x = new_value(p, last && aot ? TOML_ARRAY : TOML_TABLE, t->depth + 1);
            if (!x || tab_add(p, t, kp.p[k].s, kp.p[k].len, x)) {
                toml_free(x);
                goto fail;
            }
            x->line = kp.line;
            x->origin = last && aot ? ORIG_AOT : last ? ORIG_HEADER : ORIG_IMPLICIT;
        } else if (last && !aot) {
            if (x->type != TOML_TABLE || x->origin != ORIG_IMPLICIT) {
                if (x->type == TOML_TABLE && (x->origin == ORIG_HEADER || x->origin == ORIG_AOT_ELEM))
                    fail_at(p, kp.line, "table [%s] defined twice", kt);
                else if (x->type == TOML_ARRAY && x->origin == ORIG_AOT)
                    fail_at(p, kp.line, "[%s] after [[%s]]: it is an array of tables", kt, kt);
                else
                    fail_at(p, kp.line, "table [%s] defined twice (already %s%s)", kt,
                            x->type == TOML_TABLE && x->origin == ORIG_DOTTED ? "defined by dotted keys, " : "",
                            x->type == TOML_TABLE && x->origin == ORIG_INLINE ? "an inline table"
                                                                              : toml_type_name(x->type));
                goto fail;
            }
            x->origin = ORIG_HEADER;
            x->line = kp.line;
        } else if (last) {
            if (x->type != TOML_ARRAY || x->origin != ORIG_AOT) {
                fail_at(p, kp.line, "[[%s]]: '%s' is already defined as %s", kt, kt,
                        x->type == TOML_TABLE ? "a table" : toml_type_name(x->type));
                goto fail;
            }
        } else if (x->type == TOML_ARRAY && x->origin == ORIG_AOT) {
            x = x->u.a.items[x->u.a.n - 1]; /* into the latest [[x]] element */
        } else if (x->type != TOML_TABLE || x->sealed) {
            char pt[300];
            fail_at(p, kp.line, "[%s]: '%s' is already defined as %s", kt, key_text(&kp, k + 1, pt, sizeof pt),
                    x->type == TOML_TABLE ? "an inline table" : toml_type_name(x->type));
            goto fail;
        }
        if (last && aot) {
            toml_value *el = new_value(p, TOML_TABLE, x->depth + 1);
            if (!el || arr_push(p, x, el)) {
                toml_free(el);
                goto fail;
            }
            el->origin = ORIG_AOT_ELEM;
            el->line = kp.line;
            x = el;
        }
        t = x;
    }
    p->cur = t;
    snprintf(p->cur_name, sizeof p->cur_name, "%s", kt);
    key_free(&kp);
    return end_of_line(p, "table header");
fail:
    key_free(&kp);
    return -1;
}

static int parse_keyval(parser *p)
{
    keypath kp;
    if (parse_key(p, &kp))
        goto fail;
    if (peek(p) != '=') {
        char kt[300];
        perr(p, "expected '=' after key '%s'", key_text(&kp, kp.n, kt, sizeof kt));
        goto fail;
    }
    p->i++;
    skip_ws(p);
    toml_value *v = parse_value(p, p->cur->depth + (unsigned)kp.n);
    if (!v)
        goto fail;
    v->line = kp.line;
    if (insert(p, p->cur, &kp, v, p->cur_name))
        goto fail;
    key_free(&kp);
    return end_of_line(p, "value");
fail:
    key_free(&kp);
    return -1;
}

int toml_parse(const char *text, size_t len, toml_value **root, toml_error *err)
{
    *root = NULL;
    memset(err, 0, sizeof *err);
    parser p = {.s = text, .n = len, .line = 1, .err = err};
    if (check_utf8(&p))
        return -1;
    p.root = p.cur = new_value(&p, TOML_TABLE, 0);
    if (!p.root)
        return -1;
    p.root->origin = ORIG_ROOT;
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        p.i = 3; /* a byte order mark */
    while (!p.failed) {
        skip_ws(&p);
        if (p.i >= p.n)
            break;
        int c = peek(&p);
        if (c == '#') {
            if (skip_comment(&p) == 0)
                end_of_line(&p, "comment");
        } else if (at_newline(&p)) {
            eat_newline(&p);
        } else if (c == '[') {
            parse_header(&p);
        } else {
            parse_keyval(&p);
        }
    }
    if (p.failed) {
        toml_free(p.root);
        return -1;
    }
    *root = p.root;
    return 0;
}

const toml_value *toml_get(const toml_value *t, const char *key)
{
    if (!t || t->type != TOML_TABLE)
        return NULL;
    return tab_find(t, key, strlen(key));
}

const char *toml_type_name(toml_type t)
{
    switch (t) {
    case TOML_TABLE: return "a table";
    case TOML_ARRAY: return "an array";
    case TOML_STRING: return "a string";
    case TOML_INTEGER: return "an integer";
    case TOML_FLOAT: return "a float";
    case TOML_BOOL: return "a boolean";
    case TOML_DATETIME: return "a date-time";
    case TOML_DATETIME_LOCAL: return "a local date-time";
    case TOML_DATE_LOCAL: return "a local date";
    case TOML_TIME_LOCAL: return "a local time";
    }
    return "a value";
}
