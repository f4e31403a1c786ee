/* The address book (see addrbook.h). Entries live in one array of at most
 * max_entries; lookups are linear, which at the default bound costs less
 * than decoding the message that triggered them. */
#include "discovery/addrbook.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"

/* Last-seen granularity of the dial order: peers seen within the same ten
 * minutes are equally fresh, and the seed decides among them. */
#define PICK_BUCKET 600
/* Generous bound on one encoded entry (the longest address is 100 bytes,
 * each number at most 20 digits). */
#define ENTRY_TEXT_MAX 320

struct tm2__addrbook {
    tm2__addrbook_config cfg;
    tm2_id self;                 /* empty: none */
    tm2__addrbook_entry *e;
    size_t n;
    struct rank *scratch;        /* pick's sort space, max_entries long */
    uint64_t gen, saved_gen;     /* dirty while they differ */
};

struct rank {
    int64_t bucket;
    uint64_t tie;
    uint32_t attempts;
    const tm2__addrbook_entry *e;
};

#define fail tm2__fail

static int64_t clamp_time(int64_t t)
{
    return t < 0 ? 0 : t > TM2__ADDRBOOK_TIME_MAX ? TM2__ADDRBOOK_TIME_MAX : t;
}

static bool id_eq(const tm2_id *a, const tm2_id *b)
{
    return strncmp(a->s, b->s, sizeof a->s) == 0;
}

static void touch(tm2__addrbook *b) { b->gen++; }

/* ---- lifetime ------------------------------------------------------------- */

int tm2__addrbook_new(const tm2_id *self, const tm2__addrbook_config *cfg, tm2__addrbook **out)
{
    if (!out)
        return TM2_EINVAL;
    *out = NULL;
    tm2__addrbook_config c = cfg ? *cfg : (tm2__addrbook_config){0};
    if (!c.max_entries)
        c.max_entries = TM2__ADDRBOOK_DEFAULT_MAX;
    if (!c.dead_attempts)
        c.dead_attempts = TM2__ADDRBOOK_DEAD_ATTEMPTS;
    if (!c.dead_after)
        c.dead_after = TM2__ADDRBOOK_DEAD_AFTER;
    if (!c.retry_base)
        c.retry_base = TM2__ADDRBOOK_RETRY_BASE;
    if (!c.retry_max)
        c.retry_max = c.retry_base > TM2__ADDRBOOK_RETRY_MAX ? c.retry_base
                                                             : TM2__ADDRBOOK_RETRY_MAX;
    if (c.max_entries > TM2__ADDRBOOK_MAX_LIMIT || c.dead_after < 0 ||
        c.dead_after > TM2__ADDRBOOK_TIME_MAX || c.retry_base < 0 ||
        c.retry_max < c.retry_base || c.retry_max > TM2__ADDRBOOK_TIME_MAX)
        return TM2_EINVAL;
    if (self && self->s[0] && memchr(self->s, 0, sizeof self->s) == NULL)
        return TM2_EINVAL;

    tm2__addrbook *b = calloc(1, sizeof *b);
    if (!b)
        return TM2_ENOMEM;
    b->cfg = c;
    if (self)
        b->self = *self;
    b->e = calloc(c.max_entries, sizeof *b->e);
    b->scratch = calloc(c.max_entries, sizeof *b->scratch);
    if (!b->e || !b->scratch) {
        tm2__addrbook_free(b);
        return TM2_ENOMEM;
    }
    *out = b;
    return 0;
}

void tm2__addrbook_free(tm2__addrbook *b)
{
    if (!b)
        return;
    free(b->e);
    free(b->scratch);
    free(b);
}

size_t tm2__addrbook_size(const tm2__addrbook *b) { return b ? b->n : 0; }

size_t tm2__addrbook_max(const tm2__addrbook *b) { return b ? b->cfg.max_entries : 0; }

const tm2__addrbook_entry *tm2__addrbook_at(const tm2__addrbook *b, size_t i)
{
    return b && i < b->n ? &b->e[i] : NULL;
}

static tm2__addrbook_entry *find_mut(const tm2__addrbook *b, const tm2_id *id)
{
    if (!b || !id)
        return NULL;
    for (size_t i = 0; i < b->n; i++)
        if (id_eq(&b->e[i].addr.id, id))
            return &b->e[i];
    return NULL;
}

const tm2__addrbook_entry *tm2__addrbook_find(const tm2__addrbook *b, const tm2_id *id)
{
    return find_mut(b, id);
}

/* Order does not matter, so the last entry fills the hole. */
static void remove_at(tm2__addrbook *b, size_t i)
{
    b->e[i] = b->e[--b->n];
    touch(b);
}

/* ---- changes ------------------------------------------------------------- */

static bool is_self(const tm2__addrbook *b, const tm2_id *id)
{
    return b->self.s[0] && id_eq(id, &b->self);
}

bool tm2__addrbook_connected(const tm2__addrbook_entry *e, int64_t now)
{
    return e && e->last_connected != 0 && now - e->last_connected < TM2__ADDRBOOK_CONNECTED_TTL;
}

size_t tm2__addrbook_count_connected(const tm2__addrbook *b, int64_t now)
{
    size_t n = 0;
    for (size_t i = 0; b && i < b->n; i++)
        n += tm2__addrbook_connected(&b->e[i], now);
    return n;
}

/* Eviction order: > 0 if x goes before y. Entries without a live mark go
 * first, seen longest ago leading, then the ones held longest ago; the
 * rest only makes the choice independent of the array order. */
static int evict_first(const tm2__addrbook_entry *x, const tm2__addrbook_entry *y, int64_t now)
{
    bool cx = tm2__addrbook_connected(x, now), cy = tm2__addrbook_connected(y, now);
    if (cx != cy)
        return cx ? -1 : 1;
    if (cx && x->last_connected != y->last_connected)
        return x->last_connected < y->last_connected ? 1 : -1;
    if (x->last_seen != y->last_seen)
        return x->last_seen < y->last_seen ? 1 : -1;
    if (x->attempts != y->attempts)
        return x->attempts > y->attempts ? 1 : -1;
    return strcmp(x->addr.id.s, y->addr.id.s);
}

/* The entry to evict for a new one (never connected, seen now), or
 * SIZE_MAX when every entry has a live mark: then the new one goes. */
static size_t victim(const tm2__addrbook *b, int64_t now)
{
    size_t v = SIZE_MAX;
    for (size_t i = 0; i < b->n; i++) {
        if (tm2__addrbook_connected(&b->e[i], now))
            continue;
        if (v == SIZE_MAX || evict_first(&b->e[i], &b->e[v], now) > 0)
            v = i;
    }
    return v;
}

int tm2__addrbook_add(tm2__addrbook *b, const tm2_netaddr *a, int64_t now)
{
    if (!b || !a)
        return TM2_EINVAL;
    int rc = tm2_netaddr_validate(a);
    if (rc)
        return rc;
    if (is_self(b, &a->id))
        return TM2_ESELF;
    now = clamp_time(now);

    tm2__addrbook_entry *x = find_mut(b, &a->id);
    if (x) {
        if (memcmp(x->addr.ip, a->ip, sizeof a->ip) == 0 && x->addr.port == a->port) {
            if (now > x->last_seen) {
                if (now - x->last_seen >= TM2__ADDRBOOK_SEEN_SLACK)
                    touch(b);
                x->last_seen = now;
            }
            return TM2__AB_REFRESHED;
        }
        if (x->last_connected && x->attempts == 0)
            return TM2__AB_KEPT;
        *x = (tm2__addrbook_entry){.addr = *a, .last_seen = now};
        touch(b);
        return TM2__AB_REPLACED;
    }
    if (b->n == b->cfg.max_entries) {
        size_t v = victim(b, now);
        if (v == SIZE_MAX)
            return TM2_EFULL;
        remove_at(b, v);
    }
    b->e[b->n++] = (tm2__addrbook_entry){.addr = *a, .last_seen = now};
    touch(b);
    return TM2__AB_ADDED;
}

int tm2__addrbook_remove(tm2__addrbook *b, const tm2_id *id)
{
    tm2__addrbook_entry *x = find_mut(b, id);
    if (!x)
        return TM2_ENOTFOUND;
    remove_at(b, (size_t)(x - b->e));
    return 0;
}

/* An attempt alone is not saved: it is in flight, and its outcome is. */
int tm2__addrbook_mark_attempt(tm2__addrbook *b, const tm2_id *id, int64_t now)
{
    tm2__addrbook_entry *x = find_mut(b, id);
    if (!x)
        return TM2_ENOTFOUND;
    x->last_attempt = clamp_time(now);
    return 0;
}

int tm2__addrbook_mark_connected(tm2__addrbook *b, const tm2_netaddr *a, int64_t now)
{
    tm2__addrbook_entry *x = a ? find_mut(b, &a->id) : NULL;
    if (!x)
        return TM2_ENOTFOUND;
    now = clamp_time(now);
    bool moved = memcmp(x->addr.ip, a->ip, sizeof a->ip) != 0 || x->addr.port != a->port;
    if (moved && tm2_netaddr_validate(a) != 0)
        return TM2_EINVAL;
    bool changed = moved || x->attempts != 0;
    if (moved)
        x->addr = *a;
    x->attempts = 0;
    x->last_attempt = now;   /* a held peer is not dialled again until it has been gone a while */
    x->last_connected = now;
    /* Renewed every round; written when new or half a lifetime newer than
     * the mark last written, as the reference does. */
    if (changed || now - x->mark_saved >= TM2__ADDRBOOK_MARK_SLACK) {
        x->mark_saved = now;
        touch(b);
    }
    return 0;
}

int tm2__addrbook_mark_failure(tm2__addrbook *b, const tm2_id *id, int64_t now)
{
    tm2__addrbook_entry *x = find_mut(b, id);
    if (!x)
        return TM2_ENOTFOUND;
    if (x->attempts < UINT32_MAX)
        x->attempts++;
    x->last_attempt = clamp_time(now);
    touch(b);
    return 0;
}

int64_t tm2__addrbook_retry_at(const tm2__addrbook *b, const tm2__addrbook_entry *e)
{
    if (!b || !e || e->last_attempt == 0)
        return 0;
    /* Doubling stops at the cap, so it never overflows. */
    int64_t wait = b->cfg.retry_base;
    for (uint32_t k = 0; k < e->attempts && wait < b->cfg.retry_max; k++)
        wait = wait ? wait * 2 : 1;
    if (wait > b->cfg.retry_max)
        wait = b->cfg.retry_max;
    return e->last_attempt + wait;
}

size_t tm2__addrbook_expire(tm2__addrbook *b, int64_t now)
{
    if (!b)
        return 0;
    now = clamp_time(now);
    size_t dropped = 0;
    for (size_t i = b->n; i-- > 0;) {
        const tm2__addrbook_entry *x = &b->e[i];
        if (x->attempts >= b->cfg.dead_attempts && now - x->last_seen >= b->cfg.dead_after) {
            remove_at(b, i);
            dropped++;
        }
    }
    return dropped;
}

/* ---- dial candidates ------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static uint64_t id_hash(const tm2_id *id, uint64_t seed)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < sizeof id->s && id->s[i]; i++)
        h = (h ^ (uint8_t)id->s[i]) * 0x100000001b3u;
    return mix64(h ^ mix64(seed));
}

static int cmp_pick(const void *pa, const void *pb)
{
    const struct rank *a = pa, *b = pb;
    if (a->bucket != b->bucket)
        return a->bucket > b->bucket ? -1 : 1;
    if (a->attempts != b->attempts)
        return a->attempts < b->attempts ? -1 : 1;
    if (a->tie != b->tie)
        return a->tie < b->tie ? -1 : 1;
    return strcmp(a->e->addr.id.s, b->e->addr.id.s);
}

size_t tm2__addrbook_pick(tm2__addrbook *b, int64_t now, uint64_t seed,
                          tm2__addrbook_skip_fn skip, void *user, tm2_netaddr *out, size_t max)
{
    if (!b || !out || max == 0)
        return 0;
    now = clamp_time(now);
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        const tm2__addrbook_entry *x = &b->e[i];
        if (now < tm2__addrbook_retry_at(b, x))
            continue;
        if (skip && skip(&x->addr.id, user))
            continue;
        b->scratch[k++] = (struct rank){
            .bucket = x->last_seen / PICK_BUCKET,
            .tie = id_hash(&x->addr.id, seed),
            .attempts = x->attempts,
            .e = x,
        };
    }
    qsort(b->scratch, k, sizeof *b->scratch, cmp_pick);
    size_t n = k < max ? k : max;
    for (size_t i = 0; i < n; i++)
        out[i] = b->scratch[i].e->addr;
    return n;
}

/* ---- writing the file ------------------------------------------------------- */

bool tm2__addrbook_dirty(const tm2__addrbook *b) { return b && b->gen != b->saved_gen; }

uint64_t tm2__addrbook_gen(const tm2__addrbook *b) { return b->gen; }

void tm2__addrbook_saved(tm2__addrbook *b, uint64_t gen)
{
    if (b && b->gen == gen)
        b->saved_gen = gen;
}

/* Newest first; IDs are unique, so the order is total. */
static int cmp_file(const void *pa, const void *pb)
{
    const tm2__addrbook_entry *a = *(const tm2__addrbook_entry *const *)pa;
    const tm2__addrbook_entry *b = *(const tm2__addrbook_entry *const *)pb;
    if (a->last_seen != b->last_seen)
        return a->last_seen > b->last_seen ? -1 : 1;
    return strcmp(a->addr.id.s, b->addr.id.s);
}

struct out {
    char *p;
    size_t cap, len;       /* len >= cap once anything did not fit */
};

__attribute__((format(printf, 2, 3)))
static void put(struct out *o, const char *fmt, ...)
{
    if (o->len >= o->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    o->len = n < 0 ? o->cap : o->len + (size_t)n;
}

/* Go's json.MarshalIndent(v, "", "\t") of {"peers": [...]}: an empty list
 * stays "[]", and canonical addresses need no escaping. */
int tm2__addrbook_encode(const tm2__addrbook *b, char **text, size_t *len, uint64_t *gen)
{
    if (!b || !text || !len)
        return TM2_EINVAL;
    const tm2__addrbook_entry **v = malloc((b->n ? b->n : 1) * sizeof *v);
    size_t cap = 64 + b->n * ENTRY_TEXT_MAX;
    char *t = malloc(cap);
    if (!v || !t) {
        free(v);
        free(t);
        return TM2_ENOMEM;
    }
    for (size_t i = 0; i < b->n; i++)
        v[i] = &b->e[i];
    qsort(v, b->n, sizeof *v, cmp_file);

    struct out o = {t, cap, 0};
    put(&o, "{\n\t\"peers\": [");
    for (size_t i = 0; i < b->n; i++) {
        char addr[TM2_NETADDR_STRLEN + 1];
        if (tm2_netaddr_format(&v[i]->addr, addr, sizeof addr) < 0)
            addr[0] = '\0';   /* cannot happen: entries are validated */
        put(&o, "%s\n\t\t{\n\t\t\t\"addr\": \"%s\",\n\t\t\t\"last_seen\": %" PRId64,
            i ? "," : "", addr, v[i]->last_seen);
        if (v[i]->last_connected)
            put(&o, ",\n\t\t\t\"last_connected\": %" PRId64, v[i]->last_connected);
        if (v[i]->attempts)
            put(&o, ",\n\t\t\t\"attempts\": %" PRIu32, v[i]->attempts);
        if (v[i]->last_attempt)
            put(&o, ",\n\t\t\t\"last_attempt\": %" PRId64, v[i]->last_attempt);
        put(&o, "\n\t\t}");
    }
    put(&o, b->n ? "\n\t]\n}" : "]\n}");
    size_t n = o.len;
    if (o.len >= cap) {   /* cannot happen: ENTRY_TEXT_MAX bounds every entry */
        free(v);
        free(t);
        return TM2_ENOMEM;
    }
    free(v);
    *text = t;
    *len = n;
    if (gen)
        *gen = b->gen;
    return 0;
}

int tm2__addrbook_write_file(const char *path, const char *text, size_t len, char *why,
                             size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    if (!path || !*path || (!text && len))
        return fail(TM2_EINVAL, why, why_len, "no address book path");
    int rc = tm2__mkdir_parents(path, 0755, why, why_len);
    if (rc < 0)
        return rc;
    const char *what;
    int os_err;
    if (tm2__file_write_atomic(path, text, len, 0644, true, &what, &os_err) < 0)
        return fail(TM2_EIO, why, why_len, "cannot %s address book %s: %s", what, path,
                    strerror(os_err));
    return 0;
}

int tm2__addrbook_save(tm2__addrbook *b, const char *path, bool force, char *why, size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    if (!b || !path)
        return fail(TM2_EINVAL, why, why_len, "no address book or path");
    if (!force && !tm2__addrbook_dirty(b))
        return 0;
    char *text;
    size_t len;
    uint64_t gen;
    if (tm2__addrbook_encode(b, &text, &len, &gen) < 0)
        return fail(TM2_ENOMEM, why, why_len, "out of memory encoding the address book");
    int rc = tm2__addrbook_write_file(path, text, len, why, why_len);
    free(text);
    if (rc < 0)
        return rc;
    tm2__addrbook_saved(b, gen);
    return 1;
}

/* ---- reading the file ------------------------------------------------------- */

/* A file entry that passed the type checks and address rules. */
struct cand {
    tm2__addrbook_entry e;
    bool live;                   /* its connection mark is live at load time */
    size_t order;                /* position in the file */
};

struct loader {
    struct cand *c;
    size_t n, cap;
    size_t entries;              /* list elements in the file, null ones too */
    bool changed;                /* something was dropped or clamped */
    int64_t now;
};

/* Go decodes a JSON number into int64 only if it is an integer in range.
 * cJSON keeps only the double, so integral doubles in range pass. */
static bool as_int64(const cJSON *j, int64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return false;
    int64_t v = (int64_t)d;
    if ((double)v != d)
        return false;
    *out = v;
    return true;
}

static bool key_is(const cJSON *j, const char *name)
{
    return j->string && strcasecmp(j->string, name) == 0;
}

/* Clamps a dial-record time into [0, now]. */
static int64_t record_time(struct loader *l, int64_t t)
{
    int64_t c = t < 0 ? 0 : t > l->now ? l->now : t;
    l->changed |= c != t;
    return c;
}

static int take_entry(tm2__addrbook *b, struct loader *l, const cJSON *item, char *why,
                      size_t why_len)
{
    l->entries++;
    /* A null element decodes to an empty entry, whose address fails. */
    if (cJSON_IsNull(item)) {
        l->changed = true;
        return 0;
    }
    if (!cJSON_IsObject(item))
        return fail(TM2_EDECODE, why, why_len, "peers[%zu] is not an object", l->entries - 1);

    const char *addr = NULL;
    int64_t seen = 0, tried = 0, conn = 0, legacy = 0, fails = 0;
    bool has_conn = false;
    for (const cJSON *f = item->child; f; f = f->next) {
        int64_t v;
        /* null leaves a Go field as it was. */
        if (key_is(f, "addr")) {
            if (cJSON_IsString(f))
                addr = f->valuestring;
            else if (!cJSON_IsNull(f))
                return fail(TM2_EDECODE, why, why_len, "peers[%zu].addr is not a string",
                            l->entries - 1);
        } else if (key_is(f, "last_seen")) {
            if (as_int64(f, &v))
                seen = v;
            else if (!cJSON_IsNull(f))
                return fail(TM2_EDECODE, why, why_len, "peers[%zu].last_seen is not an integer",
                            l->entries - 1);
        } else if (key_is(f, "last_connected")) {
            /* The reference's field: typed like last_seen. */
            if (as_int64(f, &v)) {
                conn = v;
                has_conn = true;
            } else if (!cJSON_IsNull(f)) {
                return fail(TM2_EDECODE, why, why_len,
                            "peers[%zu].last_connected is not an integer", l->entries - 1);
            }
        } else if (key_is(f, "attempts")) {
            /* Our own keys: the reference ignores them, whatever they hold,
             * so a bad value only loses the dial record. */
            if (as_int64(f, &v) && v >= 0 && v <= UINT32_MAX)
                fails = v;
        } else if (key_is(f, "last_attempt")) {
            if (as_int64(f, &v))
                tried = v;
        } else if (key_is(f, "last_success")) {
            /* What older tm2p2p files call the connection mark. */
            if (as_int64(f, &v))
                legacy = v;
        }
    }

    tm2_netaddr a;
    if (!addr || tm2_netaddr_parse(addr, 0, &a) < 0 || tm2_netaddr_validate(&a) < 0 ||
        is_self(b, &a.id)) {
        l->changed = true;
        return 0;
    }
    if (seen == 0 || seen > l->now) {
        l->changed = true;
        seen = l->now;
    } else if (seen < 1) {
        l->changed = true;
        seen = 1;
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 64;
        struct cand *c = realloc(l->c, nc * sizeof *c);
        if (!c)
            return fail(TM2_ENOMEM, why, why_len, "out of memory");
        l->c = c;
        l->cap = nc;
    }
    if (!has_conn && legacy) {
        conn = legacy;
        l->changed = true;   /* rewritten under the reference's name */
    }
    l->c[l->n] = (struct cand){
        .e = {
            .addr = a,
            .last_seen = seen,
            .attempts = (uint32_t)fails,
            .last_attempt = record_time(l, tried),
            .last_connected = record_time(l, conn),
        },
        .order = l->n,
    };
    l->c[l->n].live = tm2__addrbook_connected(&l->c[l->n].e, l->now);
    l->n++;
    return 0;
}

/* Kept first: a live mark (the newest first), then the newest seen, as
 * eviction would decide; then the file order. */
static int cmp_keep(const struct cand *a, const struct cand *b)
{
    if (a->live != b->live)
        return a->live ? -1 : 1;
    if (a->live && a->e.last_connected != b->e.last_connected)
        return a->e.last_connected > b->e.last_connected ? -1 : 1;
    if (a->e.last_seen != b->e.last_seen)
        return a->e.last_seen > b->e.last_seen ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* Same ID together, the one to keep first. */
static int cmp_cand_id(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    int c = strcmp(a->e.addr.id.s, b->e.addr.id.s);
    return c ? c : cmp_keep(a, b);
}

static int cmp_cand_keep(const void *pa, const void *pb) { return cmp_keep(pa, pb); }

/* Checks the whole document the way Go's decoder would before taking any
 * entry: one type error anywhere makes Go reject the file. */
static int walk(tm2__addrbook *b, struct loader *l, const cJSON *root, char *why, size_t why_len)
{
    if (cJSON_IsNull(root))
        return 0;
    if (!cJSON_IsObject(root))
        return fail(TM2_EDECODE, why, why_len, "the top level is not a JSON object");
    bool seen = false;
    for (const cJSON *f = root->child; f; f = f->next) {
        if (!key_is(f, "peers"))
            continue;
        if (!cJSON_IsNull(f) && !cJSON_IsArray(f))
            return fail(TM2_EDECODE, why, why_len, "\"peers\" is not a list");
        /* A later "peers" (null too) replaces an earlier one, which is still
         * type-checked; what it held is dropped. */
        l->changed |= seen;
        l->n = 0;
        l->entries = 0;
        seen = true;
        for (const cJSON *item = f->child; item; item = item->next) {
            int rc = take_entry(b, l, item, why, why_len);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int parse(tm2__addrbook *b, const char *buf, size_t len, int64_t now, char *why,
                 size_t why_len)
{
    if (len > TM2__ADDRBOOK_FILE_MAX)
        return fail(TM2_ETOOBIG, why, why_len, "%zu bytes, over the %u-byte limit", len,
                    TM2__ADDRBOOK_FILE_MAX);
    size_t i = 0;
    while (i < len && json_space(buf[i]))
        i++;
    if (i == len)
        return fail(TM2_EDECODE, why, why_len, "empty file, not JSON");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
        return fail(TM2_EDECODE, why, why_len, "not valid JSON (error near byte %zu)", at);
    }
    for (; end < buf + len; end++) {
        if (!json_space(*end)) {
            cJSON_Delete(root);
            return fail(TM2_EDECODE, why, why_len, "data after the JSON value");
        }
    }

    struct loader l = {.now = clamp_time(now)};
    int rc = walk(b, &l, root, why, why_len);
    cJSON_Delete(root);
    if (rc < 0) {
        free(l.c);
        return rc;
    }

    /* One entry per ID, then max_entries, both in keeping order. */
    size_t kept = 0;
    if (l.n) {
        qsort(l.c, l.n, sizeof *l.c, cmp_cand_id);
        for (size_t j = 0; j < l.n; j++)
            if (kept == 0 || !id_eq(&l.c[j].e.addr.id, &l.c[kept - 1].e.addr.id))
                l.c[kept++] = l.c[j];
        qsort(l.c, kept, sizeof *l.c, cmp_cand_keep);
        if (kept > b->cfg.max_entries)
            kept = b->cfg.max_entries;
        for (size_t j = 0; j < kept; j++)
            b->e[j] = l.c[j].e;
    }
    b->n = kept;
    free(l.c);
    if (l.changed || kept != l.entries)
        touch(b);
    else
        b->saved_gen = b->gen;
    fail(0, why, why_len, "loaded %zu of %zu entries", kept, l.entries);
    return (int)kept;
}

int tm2__addrbook_load_buffer(tm2__addrbook *b, const char *buf, size_t len, int64_t now,
                              char *why, size_t why_len)
{
    char reason[160];
    if (why && why_len)
        why[0] = '\0';
    if (!b || (!buf && len))
        return fail(TM2_EINVAL, why, why_len, "no address book or buffer");
    if (b->n)
        return fail(TM2_ESTATE, why, why_len, "address book: load needs an empty book");
    int rc = parse(b, buf ? buf : "", len, now, reason, sizeof reason);
    if (rc < 0)
        return fail(rc, why, why_len, "address book is corrupt: %s", reason);
    return fail(rc, why, why_len, "address book: %s", reason);
}

static int move_aside(const char *path, int code, const char *reason, char *why, size_t why_len)
{
    char bad[PATH_MAX];
    if ((size_t)snprintf(bad, sizeof bad, "%s.corrupt", path) >= sizeof bad)
        return fail(code, why, why_len, "address book %s is corrupt (%s); path too long to move it",
                    path, reason);
    if (rename(path, bad) < 0)
        return fail(code, why, why_len,
                    "address book %s is corrupt (%s); could not move it to %s: %s", path,
                    reason, bad, strerror(errno));
    return fail(code, why, why_len,
                "address book %s is corrupt (%s); moved it to %s and started empty", path,
                reason, bad);
}

int tm2__addrbook_load(tm2__addrbook *b, const char *path, int64_t now, char *why,
                       size_t why_len)
{
    char reason[160];
    if (why && why_len)
        why[0] = '\0';
    if (!b || !path)
        return fail(TM2_EINVAL, why, why_len, "no address book or path");
    if (b->n)
        return fail(TM2_ESTATE, why, why_len, "address book: load needs an empty book");
    char *buf;
    size_t len;
    int os_err;
    int rc = tm2__file_read(path, TM2__ADDRBOOK_FILE_MAX, &buf, &len, &os_err);
    if (rc == TM2_ENOTFOUND)
        return fail(rc, why, why_len, "address book %s does not exist", path);
    if (rc == TM2_ETOOBIG) {
        snprintf(reason, sizeof reason, "larger than %u bytes", TM2__ADDRBOOK_FILE_MAX);
        return move_aside(path, rc, reason, why, why_len);
    }
    if (rc == TM2_ENOMEM)
        return fail(rc, why, why_len, "out of memory reading %s", path);
    if (rc < 0 && os_err == EINVAL)
        return fail(TM2_EIO, why, why_len, "address book %s is not a regular file", path);
    if (rc < 0)
        return fail(TM2_EIO, why, why_len, "cannot read address book %s: %s", path,
                    strerror(os_err));
    rc = parse(b, buf, len, now, reason, sizeof reason);
    free(buf);
    if (rc == TM2_EDECODE || rc == TM2_ETOOBIG)
        return move_aside(path, rc, reason, why, why_len);
    return fail(rc, why, why_len, "address book %s: %s", path, reason);
}
