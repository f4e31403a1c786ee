/* Ban lists and ban files (tm2p2p/ban.h, switch/bans.h). */
#include "switch/bans.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "common/file.h"
#include "tm2p2p/netaddr.h"

#define BAN_FILE_MAX (4u << 20)

/* ---- targets ------------------------------------------------------------------ */

int tm2_ban_target_parse(const char *s, tm2_ban *out)
{
    if (!s || !out)
        return TM2_EINVAL;
    size_t n = strlen(s);
    if (n == TM2_ID_LEN && tm2_id_validate(s) == 0) {
        out->is_ip = false;
        memset(out->ip, 0, sizeof out->ip);
        memcpy(out->id.s, s, TM2_ID_LEN + 1);
        return 0;
    }
    char buf[INET6_ADDRSTRLEN + 2];
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof buf)
        return TM2_EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    uint8_t ip[16];
    struct in_addr v4;
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        memset(ip, 0, 10);
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &v4, 4);
    } else if (inet_pton(AF_INET6, buf, ip) != 1) {
        return TM2_EINVAL;
    }
    out->is_ip = true;
    memcpy(out->ip, ip, 16);
    memset(&out->id, 0, sizeof out->id);
    return 0;
}

int tm2_ban_target_format(const tm2_ban *b, char *buf, size_t cap)
{
    if (!b || !buf)
        return TM2_EINVAL;
    char t[INET6_ADDRSTRLEN];
    const char *s;
    if (!b->is_ip) {
        s = b->id.s;
    } else {
        static const uint8_t v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        bool is4 = memcmp(b->ip, v4, 12) == 0;
        if (!inet_ntop(is4 ? AF_INET : AF_INET6, is4 ? b->ip + 12 : b->ip, t, sizeof t))
            return TM2_EINVAL;
        s = t;
    }
    size_t n = strnlen(s, TM2_ID_LEN + 1);
    if (n + 1 > cap)
        return TM2_ENOSPC;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return (int)n;
}

static bool same_target(const tm2_ban *a, const tm2_ban *b)
{
    if (a->is_ip != b->is_ip)
        return false;
    return a->is_ip ? memcmp(a->ip, b->ip, 16) == 0 : strcmp(a->id.s, b->id.s) == 0;
}

static bool expired(const tm2_ban *b, int64_t now)
{
    return b->expires_unix_ms != 0 && b->expires_unix_ms <= now;
}

/* Expiry order, "never" last. */
static int64_t expiry_key(const tm2_ban *b)
{
    return b->expires_unix_ms ? b->expires_unix_ms : INT64_MAX;
}

static int by_expiry_desc(const void *a, const void *b)
{
    int64_t x = expiry_key(a), y = expiry_key(b);
    return x > y ? -1 : x < y;
}

/* ---- files -------------------------------------------------------------------- */

static int fail(int code, char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int code, char *why, size_t why_len, const char *fmt, ...)
{
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

static bool as_int64(const cJSON *j, int64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0))
        return false;
    int64_t v = (int64_t)d;
    if ((double)v != d)
        return false;
    *out = v;
    return true;
}

static int parse_entry(const cJSON *it, size_t i, tm2_ban *b, char *why, size_t why_len)
{
    memset(b, 0, sizeof *b);
    if (!cJSON_IsObject(it))
        return fail(TM2_EDECODE, why, why_len, "entry %zu is not an object", i);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "target");
    if (!cJSON_IsString(t) || tm2_ban_target_parse(t->valuestring, b) != 0)
        return fail(TM2_EDECODE, why, why_len, "entry %zu: no valid \"target\" (an IP or a peer ID)",
                    i);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "created");
    if (c && (!as_int64(c, &b->created_unix_ms) || b->created_unix_ms < 0))
        return fail(TM2_EDECODE, why, why_len, "entry %zu: \"created\" is not a time in ms", i);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(it, "expires");
    if (!e || !as_int64(e, &b->expires_unix_ms) || b->expires_unix_ms < 0)
        return fail(TM2_EDECODE, why, why_len,
                    "entry %zu: \"expires\" is not a time in ms (0: never)", i);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(it, "reason");
    if (r && !cJSON_IsString(r) && !cJSON_IsNull(r))
        return fail(TM2_EDECODE, why, why_len, "entry %zu: \"reason\" is not a string", i);
    if (cJSON_IsString(r))
        snprintf(b->reason, sizeof b->reason, "%s", r->valuestring);
    return 0;
}

int tm2_ban_file_load(const char *path, tm2_ban **out, size_t *n, char *why, size_t why_len)
{
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!path || !out || !n)
        return fail(TM2_EINVAL, why, why_len, "no path or output");
    char *buf;
    size_t len;
    int os_err = 0;
    int rc = tm2__file_read(path, BAN_FILE_MAX, &buf, &len, &os_err);
    if (rc == TM2_ENOTFOUND)
        return fail(rc, why, why_len, "%s does not exist", path);
    if (rc == TM2_ETOOBIG)
        return fail(rc, why, why_len, "%s is larger than %u bytes", path, BAN_FILE_MAX);
    if (rc == TM2_ENOMEM)
        return fail(rc, why, why_len, "out of memory reading %s", path);
    if (rc < 0)
        return fail(TM2_EIO, why, why_len, "cannot read %s: %s", path,
                    os_err == EINVAL ? "not a regular file" : strerror(os_err));
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!root)
        return fail(TM2_EDECODE, why, why_len, "%s is not JSON", path);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "bans");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(list)) {
        cJSON_Delete(root);
        return fail(TM2_EDECODE, why, why_len, "%s has no \"bans\" list", path);
    }
    size_t total = (size_t)cJSON_GetArraySize(list);
    if (total > 4u * TM2_BANS_MAX) {
        cJSON_Delete(root);
        return fail(TM2_ETOOBIG, why, why_len, "%s holds %zu bans, more than %u", path, total,
                    4u * TM2_BANS_MAX);
    }
    tm2_ban *b = total ? calloc(total, sizeof *b) : NULL;
    if (total && !b) {
        cJSON_Delete(root);
        return fail(TM2_ENOMEM, why, why_len, "out of memory reading %s", path);
    }
    size_t k = 0;
    char ewhy[160];
    for (const cJSON *it = list->child; it; it = it->next, k++) {
        if ((rc = parse_entry(it, k, &b[k], ewhy, sizeof ewhy)) != 0) {
            cJSON_Delete(root);
            free(b);
            return fail(rc, why, why_len, "%s: %s", path, ewhy);
        }
    }
    cJSON_Delete(root);
    if (k > TM2_BANS_MAX) {
        qsort(b, k, sizeof *b, by_expiry_desc);
        k = TM2_BANS_MAX;
    }
    *out = b;
    *n = k;
    if (!k) {
        free(b);
        *out = NULL;
    }
    return fail(0, why, why_len, "%zu bans read from %s", k, path);
}

int tm2_ban_file_save(const char *path, const tm2_ban *b, size_t n, int64_t now_unix_ms, char *why,
                      size_t why_len)
{
    if (!path || (n && !b))
        return fail(TM2_EINVAL, why, why_len, "no path or bans");
    cJSON *root = cJSON_CreateObject();
    cJSON *list = root ? cJSON_AddArrayToObject(root, "bans") : NULL;
    bool oom = !list;
    for (size_t i = 0; i < n && !oom; i++) {
        if (now_unix_ms && expired(&b[i], now_unix_ms))
            continue;
        char t[64];
        if (tm2_ban_target_format(&b[i], t, sizeof t) < 0)
            continue;
        char reason[TM2_BAN_REASON_LEN];
        snprintf(reason, sizeof reason, "%s", b[i].reason);
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(list, e)) {
            cJSON_Delete(e);
            oom = true;
            break;
        }
        /* Times as integer literals: cJSON prints numbers with 15
         * significant digits, which loses ms beyond 10^15. */
        char created[24], expires[24];
        snprintf(created, sizeof created, "%" PRId64, b[i].created_unix_ms);
        snprintf(expires, sizeof expires, "%" PRId64, b[i].expires_unix_ms);
        oom = !cJSON_AddStringToObject(e, "target", t) ||
              !cJSON_AddRawToObject(e, "created", created) ||
              !cJSON_AddRawToObject(e, "expires", expires) ||
              !cJSON_AddStringToObject(e, "reason", reason);
    }
    char *text = oom ? NULL : cJSON_Print(root);
    cJSON_Delete(root);
    if (!text)
        return fail(TM2_ENOMEM, why, why_len, "out of memory writing %s", path);
    size_t len = strlen(text);
    char *withnl = realloc(text, len + 2);
    if (withnl) {
        text = withnl;
        text[len++] = '\n';
        text[len] = '\0';
    }
    int rc = tm2__mkdir_parents(path, 0700, why, why_len);
    if (rc == 0) {
        const char *what = "write";
        int os_err = 0;
        rc = tm2__file_write_atomic(path, text, len, 0600, true, &what, &os_err);
        if (rc)
            rc = fail(TM2_EIO, why, why_len, "cannot write %s (%s): %s", path, what,
                      strerror(os_err));
    }
    free(text);
    return rc ? rc : fail(0, why, why_len, "bans written to %s", path);
}

/* ---- the list ------------------------------------------------------------------- */

int tm2__bans_init(tm2__bans *b)
{
    memset(b, 0, sizeof *b);
    atomic_init(&b->total, 0);
    return uv_mutex_init(&b->mu) == 0 ? 0 : TM2_EIO;
}

void tm2__bans_free(tm2__bans *b)
{
    free(b->e);
    uv_mutex_destroy(&b->mu);
    memset(b, 0, sizeof *b);
}

static int reserve(tm2__bans *b, size_t want)
{
    if (want <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 16;
    while (cap < want)
        cap *= 2;
    if (cap > TM2_BANS_MAX)
        cap = TM2_BANS_MAX;
    tm2_ban *e = realloc(b->e, cap * sizeof *e);
    if (!e)
        return TM2_ENOMEM;
    b->e = e;
    b->cap = cap;
    return 0;
}

/* Drops expired entries (mu held). */
static void purge(tm2__bans *b, int64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (!expired(&b->e[i], now))
            b->e[k++] = b->e[i];
    if (k != b->n)
        b->gen++;
    b->n = k;
}

int tm2__bans_replace(tm2__bans *b, const tm2_ban *bans, size_t n, int64_t now)
{
    uv_mutex_lock(&b->mu);
    int r = reserve(b, n < TM2_BANS_MAX ? n : TM2_BANS_MAX);
    if (!r) {
        b->n = 0;
        for (size_t i = 0; i < n && b->n < b->cap; i++)
            if (!expired(&bans[i], now))
                b->e[b->n++] = bans[i];
        b->gen++;
    }
    uv_mutex_unlock(&b->mu);
    return r;
}

int tm2__bans_put(tm2__bans *b, const tm2_ban *ban, int64_t now)
{
    uv_mutex_lock(&b->mu);
    purge(b, now);
    int r = 0;
    tm2_ban *slot = NULL;
    for (size_t i = 0; i < b->n && !slot; i++)
        if (same_target(&b->e[i], ban))
            slot = &b->e[i];
    if (slot) {
        if (expiry_key(ban) > expiry_key(slot))
            slot->expires_unix_ms = ban->expires_unix_ms;
        slot->created_unix_ms = ban->created_unix_ms;
        memcpy(slot->reason, ban->reason, sizeof slot->reason);
        slot->reason[sizeof slot->reason - 1] = '\0';
    } else if (b->n < TM2_BANS_MAX && (r = reserve(b, b->n + 1)) == 0) {
        slot = &b->e[b->n++];
        *slot = *ban;
    } else if (b->n == TM2_BANS_MAX) {
        /* Full: the entry expiring first makes room. */
        slot = &b->e[0];
        for (size_t i = 1; i < b->n; i++)
            if (expiry_key(&b->e[i]) < expiry_key(slot))
                slot = &b->e[i];
        *slot = *ban;
        r = 0;
    }
    if (slot) {
        slot->reason[sizeof slot->reason - 1] = '\0';
        b->gen++;
        atomic_fetch_add(&b->total, 1);
    }
    uv_mutex_unlock(&b->mu);
    return slot ? 0 : (r ? r : TM2_ENOMEM);
}

int tm2__bans_del(tm2__bans *b, const tm2_ban *target)
{
    uv_mutex_lock(&b->mu);
    int r = TM2_ENOTFOUND;
    for (size_t i = 0; i < b->n; i++) {
        if (same_target(&b->e[i], target)) {
            b->e[i] = b->e[--b->n];
            b->gen++;
            r = 0;
            break;
        }
    }
    uv_mutex_unlock(&b->mu);
    return r;
}

static bool has(tm2__bans *b, const tm2_ban *probe, int64_t now, tm2_ban *hit)
{
    bool found = false;
    uv_mutex_lock(&b->mu);
    for (size_t i = 0; i < b->n && !found; i++) {
        if (same_target(&b->e[i], probe) && !expired(&b->e[i], now)) {
            found = true;
            if (hit)
                *hit = b->e[i];
        }
    }
    uv_mutex_unlock(&b->mu);
    return found;
}

bool tm2__bans_has_ip(tm2__bans *b, const uint8_t ip[16], int64_t now, tm2_ban *hit)
{
    tm2_ban probe = {.is_ip = true};
    memcpy(probe.ip, ip, 16);
    return has(b, &probe, now, hit);
}

bool tm2__bans_has_id(tm2__bans *b, const tm2_id *id, int64_t now, tm2_ban *hit)
{
    tm2_ban probe = {.is_ip = false, .id = *id};
    probe.id.s[TM2_ID_LEN] = '\0';
    return has(b, &probe, now, hit);
}

size_t tm2__bans_copy(tm2__bans *b, int64_t now, tm2_ban *out, size_t cap)
{
    uv_mutex_lock(&b->mu);
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (expired(&b->e[i], now))
            continue;
        if (out && k < cap)
            out[k] = b->e[i];
        k++;
    }
    uv_mutex_unlock(&b->mu);
    if (out && k > 1)
        qsort(out, k < cap ? k : cap, sizeof *out, by_expiry_desc);
    return k;
}

uint64_t tm2__bans_gen(tm2__bans *b)
{
    uv_mutex_lock(&b->mu);
    uint64_t g = b->gen;
    uv_mutex_unlock(&b->mu);
    return g;
}
