/* The address book (see addrbook.h): an entry pool of max_entries, an ID
 * index, and the new and tried tables of buckets. */
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

#include <sodium.h>

#include "common/file.h"

/* Generous bound on one encoded entry: the longest address is 100 bytes,
 * each number at most 20 digits, the source's IP at most 45 characters,
 * eight bucket numbers of at most 4 digits. */
#define ENTRY_TEXT_MAX 512
/* The top level around the entries: the key and the tables' shape. */
#define HEAD_TEXT_MAX  320
/* A full book's file is always read back. */
_Static_assert(HEAD_TEXT_MAX + (uint64_t)TM2__ADDRBOOK_MAX_LIMIT * ENTRY_TEXT_MAX <=
                   TM2__ADDRBOOK_FILE_MAX,
               "the largest book must fit the load limit");

/* ---- the book ------------------------------------------------------------------ */

typedef struct ent {
    tm2__addrbook_entry pub;   /* first: a public pointer converts back */
    uint64_t idh;              /* the ID's index hash */
    int32_t live_pos;          /* position in live[]; -1 while free */
} ent;

/* A table of buckets. Bucket i's entries are slot[i * S .. i * S + count[i]),
 * the rest of its slots -1. ne lists the non-empty buckets (ne_pos[i] is
 * bucket i's place there), so a uniform draw among them is O(1). */
typedef struct table {
    uint32_t nb;
    int32_t *slot;
    uint8_t *count;
    uint32_t *ne;
    uint32_t *ne_pos;
    uint32_t n_ne;
    size_t entries;            /* entries with a reference here */
} table;

typedef struct coll {
    int32_t e;                 /* the entry waiting for its tried bucket */
    int32_t victim;            /* the occupant it is settled against; -1: to choose */
    int64_t since;
    int64_t tested;            /* when the occupant was handed out to dial; 0: not yet */
} coll;

struct tm2__addrbook {
    tm2__addrbook_config cfg;  /* defaults filled in; key NULL */
    tm2_id self;               /* empty: none */
    uint8_t key[TM2__ADDRBOOK_KEY_LEN];
    uint8_t idx_key[crypto_shorthash_KEYBYTES];
    uint64_t rng;
    uint32_t S, P, T;          /* bucket size, new buckets per source group, tried per group */
    ent *e;                    /* max_entries */
    int32_t *freel;
    size_t n_free;
    int32_t *live;             /* the entries in use, dense */
    size_t n;
    int32_t *index;            /* open addressing by ID hash, linear probing */
    size_t index_mask;
    table nw, tr;
    coll coll[TM2__ADDRBOOK_COLLISIONS];
    size_t n_coll;
    uint64_t gen, saved_gen;   /* dirty while they differ */
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

static bool same_place(const tm2_netaddr *a, const tm2_netaddr *b)
{
    return memcmp(a->ip, b->ip, sizeof a->ip) == 0 && a->port == b->port;
}

static void touch(tm2__addrbook *b) { b->gen++; }

static int32_t idx_of(const tm2__addrbook *b, const ent *x) { return (int32_t)(x - b->e); }

/* ---- randomness and hashing ------------------------------------------------------ */

/* splitmix64: the book's own choices (selection, samples, extra buckets). */
static uint64_t rnd(tm2__addrbook *b)
{
    uint64_t z = (b->rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0. */
static uint32_t rnd_below(tm2__addrbook *b, uint32_t n)
{
    return (uint32_t)(((rnd(b) >> 32) * (uint64_t)n) >> 32);
}

static double rnd_unit(tm2__addrbook *b) { return (double)(rnd(b) >> 11) * 0x1.0p-53; }

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* What a placement hash covers: a tag and length-prefixed parts. */
typedef struct hbuf {
    uint8_t b[64];
    size_t n;
} hbuf;

static void hput(hbuf *h, const void *p, size_t n)
{
    if (n > sizeof h->b - h->n)   /* cannot happen: every caller stays under 64 bytes */
        n = sizeof h->b - h->n;
    memcpy(h->b + h->n, p, n);
    h->n += n;
}

static void hbyte(hbuf *h, uint8_t v) { hput(h, &v, 1); }

static void hu32(hbuf *h, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    hput(h, p, 4);
}

/* Keyed BLAKE2b, the first 8 of 16 bytes. */
static uint64_t hsum(const tm2__addrbook *b, const hbuf *h)
{
    uint8_t out[crypto_generichash_BYTES_MIN];
    crypto_generichash(out, sizeof out, h->b, h->n, b->key, sizeof b->key);
    return le64(out);
}

static void set_key(tm2__addrbook *b, const uint8_t *key)
{
    memcpy(b->key, key, sizeof b->key);
    static const char tag[] = "tm2p2p addrbook index";
    uint8_t out[crypto_generichash_BYTES_MIN];
    crypto_generichash(out, sizeof out, (const uint8_t *)tag, sizeof tag - 1, b->key,
                       sizeof b->key);
    memcpy(b->idx_key, out, sizeof b->idx_key);
}

static uint64_t id_hash(const tm2__addrbook *b, const tm2_id *id)
{
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash(out, (const uint8_t *)id->s, strnlen(id->s, sizeof id->s), b->idx_key);
    return le64(out);
}

/* ---- groups and placement ------------------------------------------------------------ */

size_t tm2__addrbook_group(const tm2_netaddr *a, bool with_port, bool group_local, uint8_t *g)
{
    if (tm2_netaddr_is_unspecified(a)) {
        g[0] = 0;
        return 1;
    }
    /* Loopback and private: every node of a local network shares its /16
     * (a testnet: one IP), so each address is a group of its own. */
    bool local = tm2_netaddr_is_local(a);
    if (!group_local && (local || tm2_netaddr_is_private(a))) {
        uint16_t port = with_port ? a->port : 0;
        g[0] = local ? 3 : 4;
        memcpy(g + 1, a->ip, 16);
        g[17] = (uint8_t)(port >> 8);
        g[18] = (uint8_t)port;
        return 19;
    }
    if (tm2_netaddr_is_ipv4(a)) {
        g[0] = 1;
        g[1] = a->ip[12];
        g[2] = a->ip[13];
        return 3;
    }
    g[0] = 2;
    memcpy(g + 1, a->ip, 4);
    return 5;
}

/* sip: the source's IP, NULL for a itself. */
static uint32_t new_bucket_ip(const tm2__addrbook *b, const tm2_netaddr *a, const uint8_t *sip)
{
    tm2_netaddr s;
    memset(&s, 0, sizeof s);
    memcpy(s.ip, sip ? sip : a->ip, 16);
    uint8_t ga[TM2__ADDRBOOK_GROUP_MAX], gs[TM2__ADDRBOOK_GROUP_MAX];
    size_t na = tm2__addrbook_group(a, true, b->cfg.group_local, ga),
           ns = tm2__addrbook_group(&s, false, b->cfg.group_local, gs);
    hbuf h = {.n = 0};
    hbyte(&h, 'N');
    hbyte(&h, (uint8_t)na);
    hput(&h, ga, na);
    hbyte(&h, (uint8_t)ns);
    hput(&h, gs, ns);
    uint32_t h1 = (uint32_t)(hsum(b, &h) % b->P);
    hbuf h2 = {.n = 0};
    hbyte(&h2, 'n');
    hbyte(&h2, (uint8_t)ns);
    hput(&h2, gs, ns);
    hu32(&h2, h1);
    return (uint32_t)(hsum(b, &h2) % b->nw.nb);
}

uint32_t tm2__addrbook_new_bucket(const tm2__addrbook *b, const tm2_netaddr *a,
                                  const tm2_netaddr *src)
{
    return new_bucket_ip(b, a, src ? src->ip : NULL);
}

uint32_t tm2__addrbook_tried_bucket(const tm2__addrbook *b, const tm2_netaddr *a)
{
    hbuf h = {.n = 0};
    hbyte(&h, 'K');
    hput(&h, a->ip, 16);
    hbyte(&h, (uint8_t)(a->port >> 8));
    hbyte(&h, (uint8_t)a->port);
    uint32_t h1 = (uint32_t)(hsum(b, &h) % b->T);
    uint8_t ga[TM2__ADDRBOOK_GROUP_MAX];
    size_t na = tm2__addrbook_group(a, true, b->cfg.group_local, ga);
    hbuf h2 = {.n = 0};
    hbyte(&h2, 'T');
    hbyte(&h2, (uint8_t)na);
    hput(&h2, ga, na);
    hu32(&h2, h1);
    return (uint32_t)(hsum(b, &h2) % b->tr.nb);
}

/* The source IP an entry's new bucket is computed from (NULL: itself). */
static const uint8_t *src_of(const tm2__addrbook_entry *e) { return e->has_src ? e->src : NULL; }

/* ---- the ID index ---------------------------------------------------------------- */

static int32_t index_find(const tm2__addrbook *b, const tm2_id *id)
{
    uint64_t h = id_hash(b, id);
    for (size_t i = h & b->index_mask;; i = (i + 1) & b->index_mask) {
        int32_t k = b->index[i];
        if (k < 0)
            return -1;
        if (b->e[k].idh == h && id_eq(&b->e[k].pub.addr.id, id))
            return k;
    }
}

static void index_insert(tm2__addrbook *b, int32_t k)
{
    size_t i = b->e[k].idh & b->index_mask;
    while (b->index[i] >= 0)
        i = (i + 1) & b->index_mask;
    b->index[i] = k;
}

/* Backward-shift deletion keeps every probe chain whole. */
static void index_delete(tm2__addrbook *b, int32_t k)
{
    size_t mask = b->index_mask, i = b->e[k].idh & mask;
    while (b->index[i] != k)
        i = (i + 1) & mask;
    for (size_t j = (i + 1) & mask; b->index[j] >= 0; j = (j + 1) & mask) {
        size_t home = b->e[b->index[j]].idh & mask;
        /* j's entry may move back to i if its home is not in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            b->index[i] = b->index[j];
            i = j;
        }
    }
    b->index[i] = -1;
}

static ent *find_ent(const tm2__addrbook *b, const tm2_id *id)
{
    if (!b || !id || memchr(id->s, 0, sizeof id->s) == NULL)
        return NULL;
    int32_t k = index_find(b, id);
    return k < 0 ? NULL : &b->e[k];
}

/* ---- buckets --------------------------------------------------------------------- */

static int32_t *bucket(const tm2__addrbook *b, const table *t, uint32_t bk)
{
    return t->slot + (size_t)bk * b->S;
}

static void bucket_put(tm2__addrbook *b, table *t, uint32_t bk, int32_t k)
{
    if (t->count[bk] == 0) {
        t->ne_pos[bk] = t->n_ne;
        t->ne[t->n_ne++] = bk;
    }
    bucket(b, t, bk)[t->count[bk]++] = k;
}

static void bucket_take(tm2__addrbook *b, table *t, uint32_t bk, int32_t k)
{
    int32_t *s = bucket(b, t, bk);
    uint32_t c = t->count[bk];
    for (uint32_t i = 0; i < c; i++) {
        if (s[i] != k)
            continue;
        s[i] = s[c - 1];
        s[c - 1] = -1;
        t->count[bk] = (uint8_t)(c - 1);
        if (c == 1) {
            uint32_t p = t->ne_pos[bk], last = t->ne[--t->n_ne];
            t->ne[p] = last;
            t->ne_pos[last] = p;
        }
        return;
    }
}

static bool has_ref(const tm2__addrbook_entry *e, uint32_t bk)
{
    for (unsigned i = 0; i < e->refs; i++)
        if (e->buckets[i] == bk)
            return true;
    return false;
}

static void new_ref_add(tm2__addrbook *b, ent *x, uint32_t bk)
{
    bucket_put(b, &b->nw, bk, idx_of(b, x));
    x->pub.buckets[x->pub.refs++] = (uint16_t)bk;
    if (x->pub.refs == 1)
        b->nw.entries++;
}

static void new_ref_del(tm2__addrbook *b, ent *x, uint32_t bk)
{
    bucket_take(b, &b->nw, bk, idx_of(b, x));
    tm2__addrbook_entry *e = &x->pub;
    for (unsigned i = 0; i < e->refs; i++) {
        if (e->buckets[i] != bk)
            continue;
        memmove(&e->buckets[i], &e->buckets[i + 1], (e->refs - i - 1) * sizeof e->buckets[0]);
        e->buckets[--e->refs] = 0;
        if (e->refs == 0)
            b->nw.entries--;
        return;
    }
}

static void tried_put(tm2__addrbook *b, ent *x, uint32_t bk)
{
    bucket_put(b, &b->tr, bk, idx_of(b, x));
    x->pub.tried = true;
    x->pub.refs = 0;
    memset(x->pub.buckets, 0, sizeof x->pub.buckets);
    x->pub.buckets[0] = (uint16_t)bk;
    b->tr.entries++;
}

static void coll_del(tm2__addrbook *b, size_t i)
{
    b->coll[i] = b->coll[--b->n_coll];
}

static void coll_forget(tm2__addrbook *b, int32_t k)
{
    for (size_t i = 0; i < b->n_coll; i++) {
        if (b->coll[i].e == k) {
            coll_del(b, i);
            return;
        }
    }
}

/* Out of every table and the collision set. */
static void detach(tm2__addrbook *b, ent *x)
{
    if (x->pub.tried) {
        bucket_take(b, &b->tr, x->pub.buckets[0], idx_of(b, x));
        x->pub.tried = false;
        x->pub.buckets[0] = 0;
        b->tr.entries--;
    }
    while (x->pub.refs)
        new_ref_del(b, x, x->pub.buckets[x->pub.refs - 1]);
    coll_forget(b, idx_of(b, x));
}

/* ---- entries ------------------------------------------------------------------------- */

/* A fresh entry for a (in no table yet), or NULL when the pool is full. */
static ent *ent_alloc(tm2__addrbook *b, const tm2_netaddr *a)
{
    if (b->n_free == 0)
        return NULL;
    int32_t k = b->freel[--b->n_free];
    ent *x = &b->e[k];
    memset(x, 0, sizeof *x);
    x->pub.addr = *a;
    x->idh = id_hash(b, &a->id);
    x->live_pos = (int32_t)b->n;
    b->live[b->n++] = k;
    index_insert(b, k);
    return x;
}

static void ent_drop(tm2__addrbook *b, ent *x)
{
    int32_t k = idx_of(b, x);
    detach(b, x);
    index_delete(b, k);
    int32_t last = b->live[--b->n];
    b->live[x->live_pos] = last;
    b->e[last].live_pos = x->live_pos;
    x->live_pos = -1;
    b->freel[b->n_free++] = k;
    touch(b);
}

static void set_src(tm2__addrbook_entry *e, const uint8_t *sip)
{
    e->has_src = sip != NULL;
    if (sip)
        memcpy(e->src, sip, 16);
    else
        memset(e->src, 0, 16);
}

/* ---- lifetime ------------------------------------------------------------------------- */

static uint32_t pow2_at_least(size_t v)
{
    uint32_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

static int fill_config(tm2__addrbook_config *c)
{
    if (!c->max_entries)
        c->max_entries = TM2__ADDRBOOK_DEFAULT_MAX;
    if (!c->dead_attempts)
        c->dead_attempts = TM2__ADDRBOOK_DEAD_ATTEMPTS;
    if (!c->dead_after)
        c->dead_after = TM2__ADDRBOOK_DEAD_AFTER;
    if (!c->retry_base)
        c->retry_base = TM2__ADDRBOOK_RETRY_BASE;
    if (!c->retry_max)
        c->retry_max = c->retry_base > TM2__ADDRBOOK_RETRY_MAX ? c->retry_base
                                                               : TM2__ADDRBOOK_RETRY_MAX;
    if (c->max_entries > TM2__ADDRBOOK_MAX_LIMIT || c->dead_after < 0 ||
        c->dead_after > TM2__ADDRBOOK_TIME_MAX || c->retry_base < 0 ||
        c->retry_max < c->retry_base || c->retry_max > TM2__ADDRBOOK_TIME_MAX)
        return TM2_EINVAL;
    if (!c->bucket_size)
        c->bucket_size = TM2__ADDRBOOK_BUCKET_SIZE;
    if (!c->tried_buckets) {
        uint32_t t = pow2_at_least((c->max_entries + c->bucket_size - 1) / c->bucket_size);
        c->tried_buckets = t < 4 ? 4 : t;
    }
    if (!c->new_buckets)
        c->new_buckets = 4 * c->tried_buckets;
    if (c->bucket_size > TM2__ADDRBOOK_BUCKET_MAX || c->tried_buckets > TM2__ADDRBOOK_BUCKETS_MAX ||
        c->new_buckets > TM2__ADDRBOOK_BUCKETS_MAX)
        return TM2_EINVAL;
    return 0;
}

static int table_init(table *t, uint32_t nb, uint32_t S)
{
    t->nb = nb;
    t->slot = malloc((size_t)nb * S * sizeof *t->slot);
    t->count = calloc(nb, sizeof *t->count);
    t->ne = calloc(nb, sizeof *t->ne);
    t->ne_pos = calloc(nb, sizeof *t->ne_pos);
    if (!t->slot || !t->count || !t->ne || !t->ne_pos)
        return TM2_ENOMEM;
    for (size_t i = 0; i < (size_t)nb * S; i++)
        t->slot[i] = -1;
    return 0;
}

static void table_free(table *t)
{
    free(t->slot);
    free(t->count);
    free(t->ne);
    free(t->ne_pos);
}

int tm2__addrbook_new(const tm2_id *self, const tm2__addrbook_config *cfg, tm2__addrbook **out)
{
    if (!out)
        return TM2_EINVAL;
    *out = NULL;
    tm2__addrbook_config c = cfg ? *cfg : (tm2__addrbook_config){0};
    if (fill_config(&c) < 0)
        return TM2_EINVAL;
    if (self && self->s[0] && memchr(self->s, 0, sizeof self->s) == NULL)
        return TM2_EINVAL;
    tm2__addrbook *b = calloc(1, sizeof *b);
    if (!b)
        return TM2_ENOMEM;
    uint8_t key[TM2__ADDRBOOK_KEY_LEN] = {0};
    if (c.key)
        memcpy(key, c.key, sizeof key);
    set_key(b, key);
    sodium_memzero(key, sizeof key);
    b->rng = c.seed ? c.seed : 0x746d32626f6f6bu;
    c.key = NULL;
    b->cfg = c;
    if (self)
        b->self = *self;
    b->S = c.bucket_size;
    b->P = c.new_buckets / 16 ? c.new_buckets / 16 : 1;
    b->T = c.tried_buckets / 8 ? c.tried_buckets / 8 : 1;

    size_t icap = pow2_at_least(2 * c.max_entries);
    if (icap < 16)
        icap = 16;
    b->index_mask = icap - 1;
    b->e = calloc(c.max_entries, sizeof *b->e);
    b->freel = malloc(c.max_entries * sizeof *b->freel);
    b->live = malloc(c.max_entries * sizeof *b->live);
    b->index = malloc(icap * sizeof *b->index);
    if (!b->e || !b->freel || !b->live || !b->index ||
        table_init(&b->nw, c.new_buckets, b->S) < 0 || table_init(&b->tr, c.tried_buckets, b->S) < 0) {
        tm2__addrbook_free(b);
        return TM2_ENOMEM;
    }
    for (size_t i = 0; i < icap; i++)
        b->index[i] = -1;
    /* Handed out lowest index first. */
    for (size_t i = 0; i < c.max_entries; i++) {
        b->freel[i] = (int32_t)(c.max_entries - 1 - i);
        b->e[i].live_pos = -1;
    }
    b->n_free = c.max_entries;
    *out = b;
    return 0;
}

void tm2__addrbook_free(tm2__addrbook *b)
{
    if (!b)
        return;
    sodium_memzero(b->key, sizeof b->key);
    free(b->e);
    free(b->freel);
    free(b->live);
    free(b->index);
    table_free(&b->nw);
    table_free(&b->tr);
    free(b);
}

size_t tm2__addrbook_size(const tm2__addrbook *b) { return b ? b->n : 0; }

size_t tm2__addrbook_max(const tm2__addrbook *b) { return b ? b->cfg.max_entries : 0; }

size_t tm2__addrbook_new_count(const tm2__addrbook *b) { return b ? b->nw.entries : 0; }

size_t tm2__addrbook_tried_count(const tm2__addrbook *b) { return b ? b->tr.entries : 0; }

void tm2__addrbook_get_geometry(const tm2__addrbook *b, tm2__addrbook_geometry *out)
{
    *out = (tm2__addrbook_geometry){
        .new_buckets = b->nw.nb,
        .tried_buckets = b->tr.nb,
        .bucket_size = b->S,
        .new_per_source = b->P,
        .tried_per_group = b->T,
    };
}

const uint8_t *tm2__addrbook_key(const tm2__addrbook *b) { return b->key; }

size_t tm2__addrbook_bucket_count(const tm2__addrbook *b, bool tried, uint32_t i)
{
    const table *t = tried ? &b->tr : &b->nw;
    return i < t->nb ? t->count[i] : 0;
}

size_t tm2__addrbook_collisions(const tm2__addrbook *b) { return b ? b->n_coll : 0; }

const tm2__addrbook_entry *tm2__addrbook_at(const tm2__addrbook *b, size_t i)
{
    return b && i < b->n ? &b->e[b->live[i]].pub : NULL;
}

const tm2__addrbook_entry *tm2__addrbook_find(const tm2__addrbook *b, const tm2_id *id)
{
    ent *x = find_ent(b, id);
    return x ? &x->pub : NULL;
}

/* ---- judging entries ------------------------------------------------------------------- */

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
        n += tm2__addrbook_connected(&b->e[b->live[i]].pub, now);
    return n;
}

static int64_t heard(const tm2__addrbook_entry *e)
{
    return e->last_seen > e->last_connected ? e->last_seen : e->last_connected;
}

bool tm2__addrbook_terrible(const tm2__addrbook_entry *e, int64_t now)
{
    if (e->last_attempt && now - e->last_attempt < 60)
        return false;
    if (now - heard(e) > TM2__ADDRBOOK_HORIZON)
        return true;
    if (e->last_connected == 0 && e->attempts >= TM2__ADDRBOOK_RETRIES)
        return true;
    if (now - e->last_connected > TM2__ADDRBOOK_MIN_FAIL &&
        e->attempts >= TM2__ADDRBOOK_MAX_FAILURES)
        return true;
    return false;
}

/* > 0 if x should go before y: heard of longest ago, then most failures,
 * then the larger ID (only to be independent of the layout). */
static int worse(const tm2__addrbook_entry *x, const tm2__addrbook_entry *y)
{
    if (heard(x) != heard(y))
        return heard(x) < heard(y) ? 1 : -1;
    if (x->attempts != y->attempts)
        return x->attempts > y->attempts ? 1 : -1;
    return strcmp(x->addr.id.s, y->addr.id.s);
}

/* The entry of new bucket bk to give way, other than ex: a terrible one
 * (*drop: the whole entry goes), else, unless need_free (the pool must
 * gain a place), one held in other buckets too (only this reference goes).
 * -1 if none. */
static int32_t new_victim(const tm2__addrbook *b, uint32_t bk, int32_t ex, bool need_free,
                          int64_t now, bool *drop)
{
    const int32_t *s = bucket(b, &b->nw, bk);
    int32_t best = -1;
    int best_rank = 0;
    for (uint32_t i = 0; i < b->nw.count[bk]; i++) {
        if (s[i] == ex)
            continue;
        const tm2__addrbook_entry *e = &b->e[s[i]].pub;
        int rank = tm2__addrbook_terrible(e, now) ? 2 : !need_free && e->refs > 1 ? 1 : 0;
        if (rank == 0 || rank < best_rank)
            continue;
        if (rank > best_rank || worse(e, &b->e[best].pub) > 0) {
            best = s[i];
            best_rank = rank;
        }
    }
    *drop = best_rank == 2;
    return best;
}

/* Makes room in new bucket bk for one more reference (and, with need_free,
 * one more entry in the pool), never at ex's expense. True if there is. */
static bool new_room(tm2__addrbook *b, uint32_t bk, int32_t ex, bool need_free, int64_t now)
{
    if (!need_free && b->nw.count[bk] < b->S)
        return true;
    bool drop;
    int32_t v = new_victim(b, bk, ex, need_free, now, &drop);
    if (v < 0)
        return false;
    if (drop)
        ent_drop(b, &b->e[v]);
    else
        new_ref_del(b, &b->e[v], bk);
    touch(b);
    return true;
}

/* ---- adding ------------------------------------------------------------------------------ */

/* One more new bucket for a known new-table entry heard of from sip. */
static void add_ref(tm2__addrbook *b, ent *x, const uint8_t *sip, int64_t now)
{
    uint32_t bk = new_bucket_ip(b, &x->pub.addr, sip);
    if (has_ref(&x->pub, bk))
        return;
    /* Each further bucket is twice as hard to get. */
    if (rnd(b) & ((1u << x->pub.refs) - 1))
        return;
    if (!new_room(b, bk, idx_of(b, x), false, now))
        return;
    new_ref_add(b, x, bk);
    touch(b);
}

/* Whether gossip may move x to another address (see addrbook.h). */
static bool movable(const tm2__addrbook_entry *e, int64_t now)
{
    return tm2__addrbook_terrible(e, now) || (!e->tried && e->attempts > 0);
}

int tm2__addrbook_add(tm2__addrbook *b, const tm2_netaddr *a, const tm2_netaddr *src,
                      int64_t now)
{
    if (!b || !a)
        return TM2_EINVAL;
    if (is_self(b, &a->id))
        return TM2_ESELF;
    now = clamp_time(now);
    const uint8_t *sip = src && memcmp(src->ip, a->ip, 16) != 0 ? src->ip : NULL;

    /* An address equal to an entry's was valid when the entry came in: the
     * common case (a peer telling us what we know) skips validation. */
    ent *x = find_ent(b, &a->id);
    bool known = x && same_place(&x->pub.addr, a);
    if (!known) {
        int rc = tm2_netaddr_validate(a);
        if (rc)
            return rc;
    }
    if (x) {
        if (known) {
            if (now > x->pub.last_seen) {
                if (now - x->pub.last_seen >= TM2__ADDRBOOK_SEEN_SLACK)
                    touch(b);
                x->pub.last_seen = now;
            }
            if (!x->pub.tried && x->pub.refs < TM2__ADDRBOOK_MAX_REFS)
                add_ref(b, x, sip, now);
            return TM2__AB_REFRESHED;
        }
        if (!movable(&x->pub, now))
            return TM2__AB_KEPT;
        uint32_t bk = new_bucket_ip(b, a, sip);
        bool in_bk = !x->pub.tried && has_ref(&x->pub, bk);
        if (!in_bk && !new_room(b, bk, idx_of(b, x), false, now))
            return TM2__AB_KEPT;
        detach(b, x);
        x->pub = (tm2__addrbook_entry){.addr = *a, .last_seen = now};
        set_src(&x->pub, sip);
        new_ref_add(b, x, bk);
        touch(b);
        return TM2__AB_REPLACED;
    }

    uint32_t bk = new_bucket_ip(b, a, sip);
    if (!new_room(b, bk, -1, b->n_free == 0, now))
        return TM2_EFULL;
    x = ent_alloc(b, a);
    if (!x)   /* cannot happen: new_room freed a place */
        return TM2_EFULL;
    x->pub.last_seen = now;
    set_src(&x->pub, sip);
    new_ref_add(b, x, bk);
    touch(b);
    return TM2__AB_ADDED;
}

int tm2__addrbook_remove(tm2__addrbook *b, const tm2_id *id)
{
    ent *x = find_ent(b, id);
    if (!x)
        return TM2_ENOTFOUND;
    ent_drop(b, x);
    return 0;
}

/* ---- the dial record and the tried table --------------------------------------------- */

/* An attempt alone is not saved: it is in flight, and its outcome is. */
int tm2__addrbook_mark_attempt(tm2__addrbook *b, const tm2_id *id, int64_t now)
{
    ent *x = find_ent(b, id);
    if (!x)
        return TM2_ENOTFOUND;
    x->pub.last_attempt = clamp_time(now);
    return 0;
}

int tm2__addrbook_mark_failure(tm2__addrbook *b, const tm2_id *id, int64_t now)
{
    ent *x = find_ent(b, id);
    if (!x)
        return TM2_ENOTFOUND;
    if (x->pub.attempts < UINT32_MAX)
        x->pub.attempts++;
    x->pub.last_attempt = clamp_time(now);
    touch(b);
    return 0;
}

static int32_t tried_victim(const tm2__addrbook *b, uint32_t tb);

static void coll_add(tm2__addrbook *b, ent *x, uint32_t tb, int64_t now)
{
    int32_t k = idx_of(b, x);
    for (size_t i = 0; i < b->n_coll; i++)
        if (b->coll[i].e == k)
            return;
    if (b->n_coll == TM2__ADDRBOOK_COLLISIONS)
        return;
    b->coll[b->n_coll++] = (coll){.e = k, .victim = tried_victim(b, tb), .since = now};
}

/* A new-table entry to tried: at once if its bucket has room, else it
 * waits in the collision set. True if it moved. */
static bool promote(tm2__addrbook *b, ent *x, int64_t now)
{
    uint32_t tb = tm2__addrbook_tried_bucket(b, &x->pub.addr);
    if (b->tr.count[tb] < b->S) {
        detach(b, x);
        tried_put(b, x, tb);
        return true;
    }
    coll_add(b, x, tb, now);
    return false;
}

int tm2__addrbook_mark_connected(tm2__addrbook *b, const tm2_netaddr *a, int64_t now)
{
    ent *x = a ? find_ent(b, &a->id) : NULL;
    if (!x)
        return TM2_ENOTFOUND;
    now = clamp_time(now);
    bool moved = !same_place(&x->pub.addr, a);
    if (moved && tm2_netaddr_validate(a) != 0)
        return TM2_EINVAL;
    bool changed = moved || x->pub.attempts != 0;
    if (moved) {
        /* The connection proves the address: tried if its bucket has room,
         * else new as its own source. */
        detach(b, x);
        x->pub.addr = *a;
        set_src(&x->pub, NULL);
        uint32_t tb = tm2__addrbook_tried_bucket(b, a);
        if (b->tr.count[tb] < b->S) {
            tried_put(b, x, tb);
        } else {
            uint32_t bk = new_bucket_ip(b, a, NULL);
            if (!new_room(b, bk, idx_of(b, x), false, now)) {
                ent_drop(b, x);
                return TM2_EFULL;
            }
            new_ref_add(b, x, bk);
        }
    }
    x->pub.attempts = 0;
    x->pub.last_attempt = now;   /* a held peer is not dialled again until it has been gone a while */
    x->pub.last_connected = now;
    if (!x->pub.tried)
        changed |= promote(b, x, now);
    /* Renewed every round; written when new or half a lifetime newer than
     * the mark last written, as the reference does. */
    if (changed || now - x->pub.mark_saved >= TM2__ADDRBOOK_MARK_SLACK) {
        x->pub.mark_saved = now;
        touch(b);
    }
    return 0;
}

/* The occupant of a full tried bucket to test against a newcomer: the one
 * held longest ago. */
static int32_t tried_victim(const tm2__addrbook *b, uint32_t tb)
{
    const int32_t *s = bucket(b, &b->tr, tb);
    int32_t best = -1;
    for (uint32_t i = 0; i < b->tr.count[tb]; i++) {
        const tm2__addrbook_entry *e = &b->e[s[i]].pub;
        if (best < 0) {
            best = s[i];
            continue;
        }
        const tm2__addrbook_entry *o = &b->e[best].pub;
        if (e->last_connected != o->last_connected ? e->last_connected < o->last_connected
            : e->attempts != o->attempts             ? e->attempts > o->attempts
                                                     : strcmp(e->addr.id.s, o->addr.id.s) > 0)
            best = s[i];
    }
    return best;
}

/* A tried entry that failed goes back to the new table, or out when its new
 * bucket is full. */
static void demote(tm2__addrbook *b, ent *o)
{
    detach(b, o);
    uint32_t bk = new_bucket_ip(b, &o->pub.addr, src_of(&o->pub));
    if (b->nw.count[bk] < b->S)
        new_ref_add(b, o, bk);
    else
        ent_drop(b, o);
    touch(b);
}

/* What a waiting collision needs now. */
enum { C_WAIT, C_PROMOTE, C_EVICT, C_DROP };

/* The occupant is chosen once (the one held longest ago) and kept while it
 * is in the bucket: if it answers the test, the collision ends; another
 * occupant is not tried in its place. */
static int coll_state(tm2__addrbook *b, coll *c, int64_t now, int32_t *victim)
{
    const ent *x = &b->e[c->e];
    *victim = -1;
    if (x->live_pos < 0 || x->pub.tried || x->pub.attempts > 0)
        return C_DROP;   /* gone, moved, or failed itself since */
    uint32_t tb = tm2__addrbook_tried_bucket(b, &x->pub.addr);
    if (b->tr.count[tb] < b->S)
        return C_PROMOTE;
    const ent *pinned = c->victim >= 0 ? &b->e[c->victim] : NULL;
    if (!pinned || pinned->live_pos < 0 || !pinned->pub.tried || pinned->pub.buckets[0] != tb) {
        c->victim = tried_victim(b, tb);
        c->tested = 0;
    }
    *victim = c->victim;
    const tm2__addrbook_entry *o = &b->e[*victim].pub;
    if (o->last_connected && now - o->last_connected < TM2__ADDRBOOK_REPLACEMENT)
        return C_DROP;   /* every occupant was held lately */
    if (o->attempts > 0)
        return C_EVICT;  /* tried and failed since it last connected */
    if (now - c->since >= TM2__ADDRBOOK_TEST_WINDOW)
        return C_DROP;   /* never tested: the occupant stays */
    return C_WAIT;
}

size_t tm2__addrbook_resolve(tm2__addrbook *b, int64_t now)
{
    if (!b)
        return 0;
    now = clamp_time(now);
    size_t done = 0;
    for (size_t i = 0; i < b->n_coll;) {
        int32_t v;
        int st = coll_state(b, &b->coll[i], now, &v);
        if (st == C_WAIT) {
            i++;
            continue;
        }
        ent *x = &b->e[b->coll[i].e];
        coll_del(b, i);
        done++;
        if (st == C_EVICT)
            demote(b, &b->e[v]);
        if (st == C_EVICT || st == C_PROMOTE) {
            detach(b, x);
            tried_put(b, x, tm2__addrbook_tried_bucket(b, &x->pub.addr));
            touch(b);
        }
    }
    return done;
}

static bool in_out(const tm2_netaddr *out, size_t k, const tm2_id *id)
{
    for (size_t i = 0; i < k; i++)
        if (id_eq(&out[i].id, id))
            return true;
    return false;
}

size_t tm2__addrbook_collision_tests(tm2__addrbook *b, int64_t now, tm2__addrbook_skip_fn skip,
                                     void *user, tm2_netaddr *out, size_t max)
{
    if (!b || !out)
        return 0;
    now = clamp_time(now);
    size_t k = 0;
    for (size_t i = 0; i < b->n_coll && k < max; i++) {
        coll *c = &b->coll[i];
        int32_t v;
        if (c->tested || coll_state(b, c, now, &v) != C_WAIT)
            continue;
        const tm2__addrbook_entry *o = &b->e[v].pub;
        if (in_out(out, k, &o->addr.id) || (skip && skip(o, user)))
            continue;
        out[k++] = o->addr;
        c->tested = now ? now : 1;
    }
    return k;
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
    /* Dropping moves the last live entry into the hole: walk downwards. */
    for (size_t i = b->n; i-- > 0;) {
        ent *x = &b->e[b->live[i]];
        if (x->pub.attempts >= b->cfg.dead_attempts && now - x->pub.last_seen >= b->cfg.dead_after) {
            ent_drop(b, x);
            dropped++;
        }
    }
    return dropped;
}

/* ---- selection --------------------------------------------------------------------------- */

/* 0.66^min(attempts, 8): addrman's GetChance without its recent-try term
 * (entries in back-off are not drawn at all). */
static double chance(const tm2__addrbook_entry *e)
{
    double c = 1.0;
    for (uint32_t i = 0; i < e->attempts && i < 8; i++)
        c *= 0.66;
    return c;
}

/* A uniformly drawn non-empty bucket of t, and an entry of it. */
static const tm2__addrbook_entry *draw(tm2__addrbook *b, const table *t)
{
    uint32_t bk = t->ne[rnd_below(b, t->n_ne)];
    return &b->e[bucket(b, t, bk)[rnd_below(b, t->count[bk])]].pub;
}

size_t tm2__addrbook_select(tm2__addrbook *b, int64_t now, tm2__addrbook_skip_fn skip,
                            void *user, tm2_netaddr *out, size_t max)
{
    if (!b || !out || max == 0)
        return 0;
    now = clamp_time(now);
    if (max > b->n)
        max = b->n;
    size_t k = 0, budget = 64 * max + 64;
    double factor = 1.0;
    while (k < max && budget-- > 0) {
        bool has_new = b->nw.n_ne > 0, has_tried = b->tr.n_ne > 0;
        if (!has_new && !has_tried)
            break;
        const table *t = has_tried && (!has_new || (rnd(b) & 1)) ? &b->tr : &b->nw;
        const tm2__addrbook_entry *e = draw(b, t);
        if (now < tm2__addrbook_retry_at(b, e) || in_out(out, k, &e->addr.id) ||
            (skip && skip(e, user)))
            continue;
        if (rnd_unit(b) >= factor * chance(e)) {
            factor *= 1.2;
            continue;
        }
        out[k++] = e->addr;
        factor = 1.0;
    }
    return k;
}

size_t tm2__addrbook_sample(tm2__addrbook *b, int64_t now, tm2__addrbook_skip_fn skip,
                            void *user, tm2_netaddr *out, size_t max)
{
    if (!b || !out || max == 0)
        return 0;
    now = clamp_time(now);
    size_t k = 0;
    if (b->n <= max) {
        for (size_t i = 0; i < b->n; i++) {
            const tm2__addrbook_entry *e = &b->e[b->live[i]].pub;
            if (!tm2__addrbook_terrible(e, now) && !(skip && skip(e, user)))
                out[k++] = e->addr;
        }
        for (size_t i = k; i > 1; i--) {
            uint32_t j = rnd_below(b, (uint32_t)i);
            tm2_netaddr t = out[i - 1];
            out[i - 1] = out[j];
            out[j] = t;
        }
        return k;
    }
    size_t budget = 8 * max + 32;
    while (k < max && budget-- > 0) {
        uint32_t nne = b->nw.n_ne + b->tr.n_ne;
        if (nne == 0)
            break;
        uint32_t r = rnd_below(b, nne);
        const table *t = r < b->nw.n_ne ? &b->nw : &b->tr;
        uint32_t bk = t->ne[r < b->nw.n_ne ? r : r - b->nw.n_ne];
        const tm2__addrbook_entry *e = &b->e[bucket(b, t, bk)[rnd_below(b, t->count[bk])]].pub;
        if (in_out(out, k, &e->addr.id) || tm2__addrbook_terrible(e, now) || (skip && skip(e, user)))
            continue;
        out[k++] = e->addr;
    }
    return k;
}

/* ---- invariants -------------------------------------------------------------------------- */

#define REQUIRE(c)               \
    do {                         \
        if (!(c))                \
            return __LINE__;     \
    } while (0)

static int check_table(const tm2__addrbook *b, const table *t, bool tried)
{
    size_t ne = 0;
    for (uint32_t bk = 0; bk < t->nb; bk++) {
        const int32_t *s = bucket(b, t, bk);
        uint32_t c = t->count[bk];
        REQUIRE(c <= b->S);
        for (uint32_t i = 0; i < b->S; i++) {
            if (i >= c) {
                REQUIRE(s[i] == -1);
                continue;
            }
            REQUIRE(s[i] >= 0 && (size_t)s[i] < b->cfg.max_entries);
            const ent *x = &b->e[s[i]];
            REQUIRE(x->live_pos >= 0);
            REQUIRE(x->pub.tried == tried);
            if (tried)
                REQUIRE(x->pub.buckets[0] == bk);
            else
                REQUIRE(has_ref(&x->pub, bk));
            for (uint32_t j = 0; j < i; j++)
                REQUIRE(s[j] != s[i]);
        }
        if (c) {
            REQUIRE(t->ne_pos[bk] < t->n_ne && t->ne[t->ne_pos[bk]] == bk);
            ne++;
        }
    }
    REQUIRE(ne == t->n_ne);
    return 0;
}

int tm2__addrbook_check(const tm2__addrbook *b)
{
    REQUIRE(b);
    REQUIRE(b->n + b->n_free == b->cfg.max_entries);
    size_t in_new = 0, in_tried = 0, indexed = 0;
    for (size_t i = 0; i <= b->index_mask; i++)
        indexed += b->index[i] >= 0;
    REQUIRE(indexed == b->n);
    for (size_t i = 0; i < b->n; i++) {
        int32_t k = b->live[i];
        REQUIRE(k >= 0 && (size_t)k < b->cfg.max_entries);
        const ent *x = &b->e[k];
        const tm2__addrbook_entry *e = &x->pub;
        REQUIRE(x->live_pos == (int32_t)i);
        REQUIRE(index_find(b, &e->addr.id) == k);
        REQUIRE(x->idh == id_hash(b, &e->addr.id));
        /* Validated on the way in (tm2_netaddr_validate, whose bech32 check
         * would dominate here): only what the book itself could break. */
        REQUIRE(e->addr.id.s[0] && memchr(e->addr.id.s, 0, sizeof e->addr.id.s));
        REQUIRE(!tm2_netaddr_is_unspecified(&e->addr));
        REQUIRE(!is_self(b, &e->addr.id));
        REQUIRE(e->last_seen >= 0 && e->last_seen <= TM2__ADDRBOOK_TIME_MAX);
        REQUIRE(e->last_connected >= 0 && e->last_attempt >= 0);
        if (e->tried) {
            in_tried++;
            REQUIRE(e->refs == 0);
            REQUIRE(e->buckets[0] == tm2__addrbook_tried_bucket(b, &e->addr));
            const int32_t *s = bucket(b, &b->tr, e->buckets[0]);
            bool found = false;
            for (uint32_t j = 0; j < b->tr.count[e->buckets[0]]; j++)
                found |= s[j] == k;
            REQUIRE(found);
        } else {
            in_new++;
            REQUIRE(e->refs >= 1 && e->refs <= TM2__ADDRBOOK_MAX_REFS);
            for (unsigned r = 0; r < e->refs; r++) {
                REQUIRE(e->buckets[r] < b->nw.nb);
                for (unsigned q = 0; q < r; q++)
                    REQUIRE(e->buckets[q] != e->buckets[r]);
                const int32_t *s = bucket(b, &b->nw, e->buckets[r]);
                bool found = false;
                for (uint32_t j = 0; j < b->nw.count[e->buckets[r]]; j++)
                    found |= s[j] == k;
                REQUIRE(found);
            }
        }
    }
    REQUIRE(in_new == b->nw.entries && in_tried == b->tr.entries);
    for (size_t i = 0; i < b->n_free; i++)
        REQUIRE(b->e[b->freel[i]].live_pos == -1);
    int r = check_table(b, &b->nw, false);
    if (r)
        return r;
    r = check_table(b, &b->tr, true);
    if (r)
        return r;
    REQUIRE(b->n_coll <= TM2__ADDRBOOK_COLLISIONS);
    for (size_t i = 0; i < b->n_coll; i++) {
        const ent *x = &b->e[b->coll[i].e];
        REQUIRE(x->live_pos >= 0 && !x->pub.tried);
        REQUIRE(b->coll[i].victim >= -1 && b->coll[i].victim < (int32_t)b->cfg.max_entries);
        for (size_t j = 0; j < i; j++)
            REQUIRE(b->coll[j].e != b->coll[i].e);
    }
    return 0;
}

/* ---- writing the file ---------------------------------------------------------------------- */

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

/* An IP as Go's IP.String() writes it (no brackets, no port). */
static void ip_text(const uint8_t ip[16], char *out, size_t cap)
{
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    memcpy(a.ip, ip, 16);
    char ds[TM2_NETADDR_STRLEN + 1];
    int n = tm2_netaddr_dialstring(&a, ds, sizeof ds);
    if (n < 3) {   /* cannot happen */
        snprintf(out, cap, "::");
        return;
    }
    ds[n - 2] = '\0';   /* ":0" */
    bool v6 = ds[0] == '[';
    snprintf(out, cap, "%.*s", (int)(v6 ? n - 4 : n - 2), v6 ? ds + 1 : ds);
}

static bool ip_parse(const char *s, uint8_t ip[16])
{
    char buf[80];
    if (strlen(s) > 60)
        return false;
    snprintf(buf, sizeof buf, strchr(s, ':') ? "[%s]:0" : "%s:0", s);
    tm2_netaddr a;
    if (tm2_netaddr_parse(buf, TM2_NETADDR_NO_ID, &a) < 0)
        return false;
    memcpy(ip, a.ip, 16);
    return true;
}

/* Go's json.MarshalIndent(v, "", "\t") of {"peers": [...]}: an empty list
 * stays "[]", and canonical addresses need no escaping. Our keys follow in
 * the same layout, bucket lists on one line. */
int tm2__addrbook_encode(const tm2__addrbook *b, char **text, size_t *len, uint64_t *gen)
{
    if (!b || !text || !len)
        return TM2_EINVAL;
    const tm2__addrbook_entry **v = malloc((b->n ? b->n : 1) * sizeof *v);
    size_t cap = HEAD_TEXT_MAX + b->n * ENTRY_TEXT_MAX;
    char *t = malloc(cap);
    if (!v || !t) {
        free(v);
        free(t);
        return TM2_ENOMEM;
    }
    for (size_t i = 0; i < b->n; i++)
        v[i] = &b->e[b->live[i]].pub;
    qsort(v, b->n, sizeof *v, cmp_file);

    struct out o = {t, cap, 0};
    put(&o, "{\n\t\"peers\": [");
    for (size_t i = 0; i < b->n; i++) {
        const tm2__addrbook_entry *e = v[i];
        char addr[TM2_NETADDR_STRLEN + 1];
        if (tm2_netaddr_format(&e->addr, addr, sizeof addr) < 0)
            addr[0] = '\0';   /* cannot happen: entries are validated */
        put(&o, "%s\n\t\t{\n\t\t\t\"addr\": \"%s\",\n\t\t\t\"last_seen\": %" PRId64,
            i ? "," : "", addr, e->last_seen);
        if (e->last_connected)
            put(&o, ",\n\t\t\t\"last_connected\": %" PRId64, e->last_connected);
        if (e->attempts)
            put(&o, ",\n\t\t\t\"attempts\": %" PRIu32, e->attempts);
        if (e->last_attempt)
            put(&o, ",\n\t\t\t\"last_attempt\": %" PRId64, e->last_attempt);
        if (e->has_src) {
            char ip[64];
            ip_text(e->src, ip, sizeof ip);
            put(&o, ",\n\t\t\t\"tm2p2p_src\": \"%s\"", ip);
        }
        if (e->tried) {
            put(&o, ",\n\t\t\t\"tm2p2p_tried\": %u", (unsigned)e->buckets[0]);
        } else {
            put(&o, ",\n\t\t\t\"tm2p2p_new\": [");
            for (unsigned r = 0; r < e->refs; r++)
                put(&o, "%s%u", r ? ", " : "", (unsigned)e->buckets[r]);
            put(&o, "]");
        }
        put(&o, "\n\t\t}");
    }
    char hex[2 * TM2__ADDRBOOK_KEY_LEN + 1];
    sodium_bin2hex(hex, sizeof hex, b->key, sizeof b->key);
    put(&o, "%s,\n\t\"tm2p2p_key\": \"%s\",\n\t\"tm2p2p_tables\": {\n\t\t\"new_buckets\": %" PRIu32
            ",\n\t\t\"tried_buckets\": %" PRIu32 ",\n\t\t\"bucket_size\": %" PRIu32 "\n\t}\n}",
        b->n ? "\n\t]" : "]", hex, b->nw.nb, b->tr.nb, b->S);
    sodium_memzero(hex, sizeof hex);
    size_t n = o.len;
    free(v);
    if (o.len >= cap) {   /* cannot happen: ENTRY_TEXT_MAX bounds every entry */
        sodium_memzero(t, cap);
        free(t);
        return TM2_ENOMEM;
    }
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

/* ---- reading the file ----------------------------------------------------------------------- */

/* A file entry that passed the type checks and address rules. */
struct cand {
    tm2__addrbook_entry e;       /* with has_src/src, and its recorded tables: */
    bool has_tried;              /* "tm2p2p_tried" */
    uint32_t tried_bk;
    uint8_t n_new;               /* "tm2p2p_new", the usable numbers */
    uint16_t new_bk[TM2__ADDRBOOK_MAX_REFS];
    bool live;                   /* its connection mark is live at load time */
    bool placed;
    size_t order;                /* position in the file */
};

struct loader {
    struct cand *c;
    size_t n, cap;
    size_t entries;              /* list elements in the file, null ones too */
    bool changed;                /* something was dropped or clamped */
    int64_t now;
    bool has_key;                /* "tm2p2p_key" held a key */
    uint8_t key[TM2__ADDRBOOK_KEY_LEN];
    uint32_t tables[3];          /* "tm2p2p_tables": new, tried, size; 0 unknown */
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

/* "tm2p2p_new": the bucket numbers that can be ours, without repeats. */
static void take_new_list(struct cand *c, const cJSON *f)
{
    c->n_new = 0;
    if (!cJSON_IsArray(f))
        return;
    for (const cJSON *j = f->child; j && c->n_new < TM2__ADDRBOOK_MAX_REFS; j = j->next) {
        int64_t v;
        if (!as_int64(j, &v) || v < 0 || v >= TM2__ADDRBOOK_BUCKETS_MAX)
            continue;
        bool dup = false;
        for (unsigned i = 0; i < c->n_new; i++)
            dup |= c->new_bk[i] == v;
        if (!dup)
            c->new_bk[c->n_new++] = (uint16_t)v;
    }
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
    struct cand c = {.order = l->n};
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
             * so a bad value only loses what it would have said. */
            if (as_int64(f, &v) && v >= 0 && v <= UINT32_MAX)
                fails = v;
        } else if (key_is(f, "last_attempt")) {
            if (as_int64(f, &v))
                tried = v;
        } else if (key_is(f, "last_success")) {
            /* What older tm2p2p files call the connection mark. */
            if (as_int64(f, &v))
                legacy = v;
        } else if (key_is(f, "tm2p2p_src")) {
            c.e.has_src = cJSON_IsString(f) && ip_parse(f->valuestring, c.e.src);
            if (!c.e.has_src)
                memset(c.e.src, 0, sizeof c.e.src);
        } else if (key_is(f, "tm2p2p_tried")) {
            c.has_tried = as_int64(f, &v) && v >= 0 && v < TM2__ADDRBOOK_BUCKETS_MAX;
            c.tried_bk = c.has_tried ? (uint32_t)v : 0;
        } else if (key_is(f, "tm2p2p_new")) {
            take_new_list(&c, f);
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
        struct cand *nca = realloc(l->c, nc * sizeof *nca);
        if (!nca)
            return fail(TM2_ENOMEM, why, why_len, "out of memory");
        l->c = nca;
        l->cap = nc;
    }
    if (!has_conn && legacy) {
        conn = legacy;
        l->changed = true;   /* rewritten under the reference's name */
    }
    if (c.e.has_src && memcmp(c.e.src, a.ip, 16) == 0) {
        c.e.has_src = false;   /* its own source is said by leaving it out */
        memset(c.e.src, 0, sizeof c.e.src);
        l->changed = true;
    }
    c.e.addr = a;
    c.e.last_seen = seen;
    c.e.attempts = (uint32_t)fails;
    c.e.last_attempt = record_time(l, tried);
    c.e.last_connected = record_time(l, conn);
    c.live = tm2__addrbook_connected(&c.e, l->now);
    l->c[l->n++] = c;
    return 0;
}

/* Kept first: a live mark (the newest first), then the newest seen, as
 * the reference's eviction would decide; then the file order. */
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

/* Tried candidates: held most recently first. */
static int cmp_cand_tried(const void *pa, const void *pb)
{
    const struct cand *a = *(const struct cand *const *)pa, *b = *(const struct cand *const *)pb;
    if (a->e.last_connected != b->e.last_connected)
        return a->e.last_connected > b->e.last_connected ? -1 : 1;
    return cmp_keep(a, b);
}

static void take_key(struct loader *l, const cJSON *f)
{
    size_t got = 0;
    l->has_key = cJSON_IsString(f) && strlen(f->valuestring) == 2 * TM2__ADDRBOOK_KEY_LEN &&
                 sodium_hex2bin(l->key, sizeof l->key, f->valuestring, 2 * TM2__ADDRBOOK_KEY_LEN,
                                NULL, &got, NULL) == 0 &&
                 got == sizeof l->key;
}

static void take_tables(struct loader *l, const cJSON *f)
{
    static const char *const names[3] = {"new_buckets", "tried_buckets", "bucket_size"};
    memset(l->tables, 0, sizeof l->tables);
    if (!cJSON_IsObject(f))
        return;
    for (const cJSON *j = f->child; j; j = j->next) {
        int64_t v;
        for (int i = 0; i < 3; i++)
            if (key_is(j, names[i]) && as_int64(j, &v) && v > 0 && v <= TM2__ADDRBOOK_BUCKETS_MAX)
                l->tables[i] = (uint32_t)v;
    }
}

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
        if (key_is(f, "tm2p2p_key")) {
            take_key(l, f);
            continue;
        }
        if (key_is(f, "tm2p2p_tables")) {
            take_tables(l, f);
            continue;
        }
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

/* Puts the kept candidates into the tables (see tm2__addrbook_load_buffer). */
static int place_all(tm2__addrbook *b, struct loader *l, size_t kept, bool trust, char *why,
                     size_t why_len)
{
    struct cand **tried = malloc((kept ? kept : 1) * sizeof *tried);
    if (!tried)
        return fail(TM2_ENOMEM, why, why_len, "out of memory");
    size_t nt = 0;
    for (size_t j = 0; j < kept; j++)
        if (trust ? l->c[j].has_tried : l->c[j].e.last_connected > 0)
            tried[nt++] = &l->c[j];
    qsort(tried, nt, sizeof *tried, cmp_cand_tried);
    for (size_t j = 0; j < nt; j++) {
        struct cand *c = tried[j];
        uint32_t tb = tm2__addrbook_tried_bucket(b, &c->e.addr);
        l->changed |= trust && c->tried_bk != tb;
        if (b->tr.count[tb] >= b->S) {
            l->changed = true;   /* no room: it goes to new */
            c->has_tried = false;
            c->n_new = 0;
            continue;
        }
        ent *x = ent_alloc(b, &c->e.addr);
        if (!x)   /* cannot happen: kept <= max_entries */
            break;
        x->pub.last_seen = c->e.last_seen;
        x->pub.attempts = c->e.attempts;
        x->pub.last_attempt = c->e.last_attempt;
        x->pub.last_connected = c->e.last_connected;
        set_src(&x->pub, c->e.has_src ? c->e.src : NULL);
        tried_put(b, x, tb);
        c->placed = true;
    }
    free(tried);

    for (size_t j = 0; j < kept; j++) {
        struct cand *c = &l->c[j];
        if (c->placed)
            continue;
        ent *x = ent_alloc(b, &c->e.addr);
        if (!x)
            break;
        x->pub.last_seen = c->e.last_seen;
        x->pub.attempts = c->e.attempts;
        x->pub.last_attempt = c->e.last_attempt;
        x->pub.last_connected = c->e.last_connected;
        set_src(&x->pub, c->e.has_src ? c->e.src : NULL);
        uint16_t list[TM2__ADDRBOOK_MAX_REFS];
        unsigned n = 0;
        for (unsigned r = 0; trust && r < c->n_new; r++)
            if (c->new_bk[r] < b->nw.nb)
                list[n++] = c->new_bk[r];
        if (trust && (n != c->n_new || n == 0 || c->has_tried))
            l->changed = true;
        if (n == 0)
            list[n++] = (uint16_t)new_bucket_ip(b, &c->e.addr, src_of(&x->pub));
        for (unsigned r = 0; r < n; r++) {
            if (b->nw.count[list[r]] < b->S)
                new_ref_add(b, x, list[r]);
            else
                l->changed = true;
        }
        if (x->pub.refs == 0)
            ent_drop(b, x);   /* no room anywhere */
        else
            c->placed = true;
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
        sodium_memzero(l.key, sizeof l.key);
        return rc;
    }

    /* The file's key places the entries as before; without one, ours
     * stays and is written next time. */
    if (l.has_key)
        set_key(b, l.key);
    sodium_memzero(l.key, sizeof l.key);
    bool trust = l.has_key && l.tables[0] == b->nw.nb && l.tables[1] == b->tr.nb &&
                 l.tables[2] == b->S;
    l.changed |= !trust;

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
        rc = place_all(b, &l, kept, trust, why, why_len);
        if (rc < 0) {
            free(l.c);
            while (b->n)
                ent_drop(b, &b->e[b->live[b->n - 1]]);
            return rc;
        }
    }
    free(l.c);
    if (l.changed || b->n != l.entries)
        touch(b);
    else
        b->saved_gen = b->gen;
    fail(0, why, why_len, "loaded %zu of %zu entries (%zu tried)", b->n, l.entries,
         b->tr.entries);
    return (int)b->n;
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
    sodium_memzero(buf, len);
    free(buf);
    if (rc == TM2_EDECODE || rc == TM2_ETOOBIG)
        return move_aside(path, rc, reason, why, why_len);
    return fail(rc, why, why_len, "address book %s: %s", path, reason);
}
