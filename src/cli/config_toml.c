/* config.toml reader: the document is parsed whole by cli/toml.c, then the
 * keys tm2p2p uses are read from the tree through the schema below. */
#include "cli/config_toml.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/toml.h"
#include "tm2p2p/defaults.h"

#define MAX_FILE (1u << 20)

/* ---- schema -------------------------------------------------------------- */

typedef enum {
    K_STR,     /* string, stored as a malloc'd char * */
    K_IGNORED, /* string, checked and not stored */
    K_U64,     /* integer, stored as uint64_t */
    K_I64,     /* integer, stored as int64_t */
    K_DUR,     /* Go duration string, or an integer of nanoseconds; int64_t ns */
    K_BOOL,
} kind;

enum {
    NONEMPTY = 1, /* K_STR: "" is refused */
    ZERO_OK = 2,  /* numbers: 0 (off) is allowed below min */
};

#define MS 1000000LL /* nanoseconds */

/* One row per key. Numbers must lie in [min, max] (except 0 with ZERO_OK);
 * negative values the reference refuses have min 0. */
static const struct field {
    const char *table; /* NULL: top level */
    const char *key;
    kind kind;
    size_t off;
    const char *def_str;
    int64_t def, min, max;
    unsigned flags;
} schema[] = {
#define STR(t, k, f, d, fl) {t, k, K_STR, offsetof(cli_config, f), d, 0, 0, 0, fl}
#define NUM(t, k, kd, f, d, lo, hi, fl) {t, k, kd, offsetof(cli_config, f), NULL, d, lo, hi, fl}
#define BOOL(t, k, f, d) {t, k, K_BOOL, offsetof(cli_config, f), NULL, d, 0, 1, 0}
    STR(NULL, "moniker", moniker, "", NONEMPTY),
    STR(NULL, "node_key_file", node_key_file, TM2_DEFAULT_NODE_KEY_FILE, 0),
    {"p2p", "home", K_IGNORED, 0, NULL, 0, 0, 0, 0},
    STR("p2p", "laddr", laddr, TM2_DEFAULT_LISTEN_ADDR, 0),
    STR("p2p", "external_address", external_address, "", 0),
    STR("p2p", "seeds", seeds, "", 0),
    STR("p2p", "persistent_peers", persistent_peers, "", 0),
    NUM("p2p", "max_num_inbound_peers", K_U64, max_num_inbound_peers, TM2_DEFAULT_MAX_INBOUND, 0, INT64_MAX, 0),
    NUM("p2p", "max_num_outbound_peers", K_U64, max_num_outbound_peers, TM2_DEFAULT_MAX_OUTBOUND, 0, INT64_MAX, 0),
    NUM("p2p", "flush_throttle_timeout", K_DUR, flush_throttle_timeout_ns, TM2_DEFAULT_FLUSH_THROTTLE_MS * MS, 0,
        INT64_MAX, 0),
    /* 0 or above what one receive read holds fails every peer later */
    NUM("p2p", "max_packet_msg_payload_size", K_I64, max_packet_msg_payload_size, TM2_DEFAULT_MAX_PACKET_PAYLOAD, 1,
        TM2_MAX_PACKET_PAYLOAD, 0),
    NUM("p2p", "send_rate", K_I64, send_rate, TM2_DEFAULT_SEND_RATE, 0, INT64_MAX, 0),
    NUM("p2p", "recv_rate", K_I64, recv_rate, TM2_DEFAULT_RECV_RATE, 0, INT64_MAX, 0),
    NUM("p2p", "recv_assembly_timeout", K_DUR, recv_assembly_timeout_ns, TM2_DEFAULT_RECV_ASSEMBLY_TIMEOUT_MS * MS, 0,
        INT64_MAX, 0),
    NUM("p2p", "max_recv_buffer_bytes", K_I64, max_recv_buffer_bytes, TM2_DEFAULT_MAX_RECV_BUFFER_BYTES,
        TM2_MIN_BUFFER_BYTES, INT64_MAX, ZERO_OK),
    NUM("p2p", "max_send_buffer_bytes", K_I64, max_send_buffer_bytes, TM2_DEFAULT_MAX_SEND_BUFFER_BYTES,
        TM2_MIN_BUFFER_BYTES, INT64_MAX, ZERO_OK),
    BOOL("p2p", "pex", pex, TM2_DEFAULT_PEX),
    STR("p2p", "private_peer_ids", private_peer_ids, "", 0),
    BOOL("p2p", "allow_duplicate_ip", allow_duplicate_ip, TM2_DEFAULT_ALLOW_DUPLICATE_IP),
    STR("p2p", "addr_book_file", addr_book_file, TM2_DEFAULT_ADDR_BOOK_FILE, 0),
    BOOL("p2p", "seed_mode", seed_mode, TM2_DEFAULT_SEED_MODE),
    /* Admission, limits, eviction and bans: CometBFT's name for the
     * unconditional peers; the rest are tm2p2p's (tm2p2p/switch.h). */
    STR("p2p", "unconditional_peer_ids", unconditional_peer_ids, "", 0),
    NUM("p2p", "max_pending_inbound_per_ip", K_U64, max_pending_inbound_per_ip,
        TM2_DEFAULT_MAX_PENDING_INBOUND_PER_IP, 0, 100000, 0),
    NUM("p2p", "accept_ip_rate", K_U64, accept_ip_rate, TM2_DEFAULT_ACCEPT_IP_RATE, 0, 1000000, 0),
    NUM("p2p", "accept_ip_burst", K_U64, accept_ip_burst, TM2_DEFAULT_ACCEPT_IP_BURST, 0, 1000000, 0),
    NUM("p2p", "accept_subnet_rate", K_U64, accept_subnet_rate, TM2_DEFAULT_ACCEPT_SUBNET_RATE, 0,
        1000000, 0),
    NUM("p2p", "accept_subnet_burst", K_U64, accept_subnet_burst, TM2_DEFAULT_ACCEPT_SUBNET_BURST, 0,
        1000000, 0),
    NUM("p2p", "max_inbound_per_ip", K_U64, max_inbound_per_ip, TM2_DEFAULT_MAX_INBOUND_PER_IP, 0,
        100000, 0),
    NUM("p2p", "max_inbound_per_subnet", K_U64, max_inbound_per_subnet,
        TM2_DEFAULT_MAX_INBOUND_PER_SUBNET, 0, 100000, 0),
    BOOL("p2p", "outbound_diversity", outbound_diversity, TM2_DEFAULT_OUTBOUND_DIVERSITY),
    BOOL("p2p", "evict_inbound", evict_inbound, TM2_DEFAULT_EVICT_INBOUND),
    NUM("p2p", "evict_protect_groups", K_U64, evict_protect_groups, TM2_DEFAULT_EVICT_PROTECT_GROUPS, 0,
        10000, 0),
    NUM("p2p", "evict_protect_latency", K_U64, evict_protect_latency, TM2_DEFAULT_EVICT_PROTECT_LATENCY,
        0, 10000, 0),
    NUM("p2p", "evict_protect_active", K_U64, evict_protect_active, TM2_DEFAULT_EVICT_PROTECT_ACTIVE, 0,
        10000, 0),
    NUM("p2p", "evict_protect_oldest_pct", K_U64, evict_protect_oldest_pct,
        TM2_DEFAULT_EVICT_PROTECT_OLDEST_PCT, 0, 100, 0),
    BOOL("p2p", "limit_local_addrs", limit_local_addrs, TM2_DEFAULT_LIMIT_LOCAL_ADDRS),
    NUM("p2p", "ban_duration", K_DUR, ban_duration_ns, TM2_DEFAULT_BAN_DURATION_MS * MS, 0,
        INT64_MAX, 0),
    STR("p2p", "ban_file", ban_file, TM2_DEFAULT_BAN_FILE, NONEMPTY),
    /* CometBFT's names and defaults: the /metrics, /status, /peers server. */
    BOOL("instrumentation", "prometheus", prometheus, false),
    STR("instrumentation", "prometheus_listen_addr", prometheus_listen_addr, ":26660", 0),
#undef STR
#undef NUM
#undef BOOL
};

#define N_SCHEMA (sizeof schema / sizeof schema[0])

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
    for (size_t k = 0; k < N_SCHEMA; k++) {
        const struct field *f = &schema[k];
        void *slot = (char *)c + f->off;
        switch (f->kind) {
        case K_STR:
            if (cli_config_set_str(slot, f->def_str)) {
                cli_config_free(c);
                return -1;
            }
            break;
        case K_IGNORED:
            break;
        case K_U64:
            *(uint64_t *)slot = (uint64_t)f->def;
            break;
        case K_I64:
        case K_DUR:
            *(int64_t *)slot = f->def;
            break;
        case K_BOOL:
            *(bool *)slot = f->def != 0;
            break;
        }
    }
    return 0;
}

void cli_config_free(cli_config *c)
{
    for (size_t k = 0; k < N_SCHEMA; k++) {
        if (schema[k].kind != K_STR)
            continue;
        char **slot = (char **)(void *)((char *)c + schema[k].off);
        free(*slot);
        *slot = NULL;
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

/* ---- reading the tree ---------------------------------------------------- */

typedef struct reader {
    const char *name;
    char *err;
    size_t err_len;
} reader;

__attribute__((format(printf, 4, 5))) static int rerr(const reader *r, unsigned line, const struct field *f,
                                                       const char *fmt, ...)
{
    int n = snprintf(r->err, r->err_len, "%s:%u: %s%s%s: ", r->name, line, f->table ? f->table : "",
                     f->table ? "." : "", f->key);
    if (n >= 0 && (size_t)n < r->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err + n, r->err_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A key as it would be written, printable, for messages. */
static void key_show(const toml_entry *e, char *out, size_t cap)
{
    bool bare = e->key_len > 0;
    for (size_t i = 0; i < e->key_len; i++) {
        char ch = e->key[i];
        bare = bare && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                        ch == '_' || ch == '-');
    }
    size_t o = 0;
    if (!bare && o + 1 < cap)
        out[o++] = '"';
    for (size_t i = 0; i < e->key_len && i < 100 && o + 2 < cap; i++) {
        unsigned char ch = (unsigned char)e->key[i];
        out[o++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    if (!bare && o + 1 < cap)
        out[o++] = '"';
    out[o] = '\0';
}

static int apply(const reader *r, cli_config *c, const struct field *f, const toml_value *v)
{
    void *slot = (char *)c + f->off;
    toml_type want = f->kind == K_STR || f->kind == K_IGNORED ? TOML_STRING
                     : f->kind == K_BOOL                      ? TOML_BOOL
                                                              : TOML_INTEGER;
    /* a duration may also be an integer count of nanoseconds, as go-toml reads it */
    if (f->kind == K_DUR && v->type != TOML_STRING && v->type != TOML_INTEGER)
        return rerr(r, v->line, f, "expected a duration such as \"100ms\", found %s", toml_type_name(v->type));
    if (f->kind != K_DUR && v->type != want)
        return rerr(r, v->line, f, "expected %s, found %s", toml_type_name(want), toml_type_name(v->type));
    if (v->type == TOML_STRING && strlen(v->u.s.ptr) != v->u.s.len)
        return rerr(r, v->line, f, "must not contain a NUL character");

    int64_t n = 0;
    switch (f->kind) {
    case K_IGNORED:
        return 0;
    case K_STR:
        if ((f->flags & NONEMPTY) && !v->u.s.len)
            return rerr(r, v->line, f, "must not be empty");
        if (cli_config_set_str(slot, v->u.s.ptr)) {
            snprintf(r->err, r->err_len, "%s: out of memory", r->name);
            return -1;
        }
        return 0;
    case K_BOOL:
        *(bool *)slot = v->u.b;
        return 0;
    case K_DUR:
        if (v->type == TOML_STRING && cli_parse_duration(v->u.s.ptr, &n))
            return rerr(r, v->line, f, "bad duration \"%.100s\" (use e.g. \"100ms\", \"10s\", \"1m30s\")", v->u.s.ptr);
        if (v->type == TOML_INTEGER)
            n = v->u.i;
        break;
    case K_U64:
    case K_I64:
        n = v->u.i;
        break;
    }
    if (n < 0 && f->min >= 0)
        return rerr(r, v->line, f, "must not be negative (got %" PRId64 ")", n);
    if ((n < f->min || n > f->max) && !(n == 0 && (f->flags & ZERO_OK))) {
        if (f->flags & ZERO_OK)
            return rerr(r, v->line, f, "must be 0 (off) or at least %" PRId64 " (got %" PRId64 ")", f->min, n);
        return rerr(r, v->line, f, "must be from %" PRId64 " to %" PRId64 " (got %" PRId64 ")", f->min, f->max, n);
    }
    if (f->kind == K_U64)
        *(uint64_t *)slot = (uint64_t)n;
    else
        *(int64_t *)slot = n;
    return 0;
}

static bool known(const char *table, const char *key, size_t key_len)
{
    for (size_t k = 0; k < N_SCHEMA; k++)
        if (schema[k].table && !strcmp(schema[k].table, table) && strlen(schema[k].key) == key_len &&
            !memcmp(schema[k].key, key, key_len))
            return true;
    return false;
}

int cli_config_parse(cli_config *c, const char *text, size_t len, const char *name,
                     cli_config_warn_fn warn, void *warn_user, char *err, size_t err_len)
{
    reader r = {.name = name, .err = err, .err_len = err_len};
    if (err_len)
        err[0] = '\0';
    toml_value *root;
    toml_error te;
    if (toml_parse(text, len, &root, &te)) {
        if (te.oom)
            snprintf(err, err_len, "%s: out of memory", name);
        else
            snprintf(err, err_len, "%s:%u: %s", name, te.line, te.msg);
        return -1;
    }
    int rc = 0;
    /* every table the schema reads from must be a table when present */
    for (size_t k = 0; k < N_SCHEMA && !rc; k++) {
        const toml_value *t = schema[k].table ? toml_get(root, schema[k].table) : root;
        if (t && t->type != TOML_TABLE) {
            snprintf(err, err_len, "%s:%u: %s: expected a table, found %s%s", name, t->line, schema[k].table,
                     toml_type_name(t->type), t->type == TOML_ARRAY && t->u.a.n ? " (of tables?)" : "");
            rc = -1;
            break;
        }
        const toml_value *v = toml_get(t, schema[k].key);
        if (v)
            rc = apply(&r, c, &schema[k], v);
    }
    const toml_value *p2p = toml_get(root, "p2p");
    for (size_t k = 0; !rc && warn && p2p && p2p->type == TOML_TABLE && k < p2p->u.t.n; k++) {
        const toml_entry *e = &p2p->u.t.items[k];
        if (known("p2p", e->key, e->key_len))
            continue;
        char key[256], msg[1400];
        key_show(e, key, sizeof key);
        snprintf(msg, sizeof msg, "%.1000s:%u: unknown key p2p.%s ignored", name, e->value->line, key);
        warn(warn_user, msg);
    }
    toml_free(root);
    return rc;
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
