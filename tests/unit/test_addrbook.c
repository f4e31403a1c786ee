/* Address book: the new and tried tables (groups, keyed placement, floods
 * from one source bounded, terrible entries first, test-before-evict),
 * add/replace rules, dial record and back-off, selection and samples across
 * buckets, aging out, and the file: exact bytes, atomic replace, tables read
 * back as written, the reference's load rules and decoding, corrupt and
 * oversized files (WIRE.md 9.7); the reference v1.7.1 store's connection
 * marks and a book it wrote (migrated into the tables). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "discovery/addrbook.h"
#include "tv.h"

#define T0 1767225600   /* 2026-01-01T00:00:00Z */
#define DAY (24 * 3600)

/* ---- helpers ---------------------------------------------------------------- */

#define ID_CACHE 16384

static void make_id(unsigned i, tm2_id *id)
{
    /* Key generation dominates the big-book tests: remember the IDs. */
    static tm2_id cache[ID_CACHE];
    if (i < ID_CACHE && cache[i].s[0]) {
        *id = cache[i];
        return;
    }
    uint8_t seed[32] = {0};
    seed[0] = (uint8_t)i;
    seed[1] = (uint8_t)(i >> 8);
    seed[2] = (uint8_t)(i >> 16);
    seed[31] = 0xab;
    tm2_node_key k;
    tm2_node_key_from_seed(&k, seed);
    tm2_node_key_id(&k, id);
    tm2_node_key_wipe(&k);
    if (i < ID_CACHE)
        cache[i] = *id;
}

/* Peer i at 127.0.x.y, port 26656 + i (loopback, never dialled). */
static tm2_netaddr addr_of(unsigned i)
{
    tm2_id id;
    make_id(i, &id);
    char s[TM2_NETADDR_STRLEN + 1];
    snprintf(s, sizeof s, "%s@127.0.%u.%u:%u", id.s, i / 250, i % 250 + 1, 26656 + i % 1000);
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(s, 0, &a), 0);
    return a;
}

/* Peer i at 198.<b>.<c>.<d>:<port>, in the benchmarking range 198.18.0.0/15
 * (RFC 2544): the book treats it as a routable IPv4 address, grouped by /16,
 * and nothing here dials it. */
static tm2_netaddr bench_addr(unsigned i, unsigned b, unsigned c, unsigned d, unsigned port)
{
    tm2_id id;
    make_id(i, &id);
    char s[TM2_NETADDR_STRLEN + 1];
    snprintf(s, sizeof s, "%s@198.%u.%u.%u:%u", id.s, b, c, d, port);
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(s, 0, &a), 0);
    return a;
}

/* A source: an IP without ID or port. */
static tm2_netaddr ip_only(const char *ip)
{
    char s[80];
    snprintf(s, sizeof s, strchr(ip, ':') ? "[%s]:0" : "%s:0", ip);
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(s, TM2_NETADDR_NO_ID, &a), 0);
    return a;
}

static tm2_netaddr parse(const char *s)
{
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(s, 0, &a), 0);
    return a;
}

static const uint8_t KEY[TM2__ADDRBOOK_KEY_LEN] = {
    0x6b, 0x1f, 0x5c, 0x9e, 0x02, 0x41, 0xd3, 0x77, 0x18, 0xaa, 0x3b, 0xc4, 0x5d, 0x90, 0x0e, 0x61,
    0xf2, 0x27, 0x8c, 0x35, 0xb9, 0x4a, 0xe0, 0x13, 0x76, 0xd8, 0x29, 0x6f, 0xa1, 0x54, 0xc7, 0x3e,
};

/* A book with the tables' shape given (0: defaults), the fixed key and a
 * fixed seed, so every run places and draws alike. */
static tm2__addrbook *book_geo(const tm2_id *self, size_t max, uint32_t nb, uint32_t tb, uint32_t bs)
{
    tm2__addrbook_config c = {.max_entries = max, .new_buckets = nb, .tried_buckets = tb,
                              .bucket_size = bs, .key = KEY, .seed = 1};
    tm2__addrbook *b = NULL;
    assert_int_equal(tm2__addrbook_new(self, &c, &b), 0);
    assert_non_null(b);
    return b;
}

static tm2__addrbook *book(const tm2_id *self, size_t max)
{
    return book_geo(self, max, 0, 0, 0);
}

#define CHECK_BOOK(b) assert_int_equal(tm2__addrbook_check(b), 0)

static const tm2__addrbook_entry *entry(const tm2__addrbook *b, unsigned i)
{
    tm2_netaddr a = addr_of(i);
    return tm2__addrbook_find(b, &a.id);
}

static char *tmpdir(void)
{
    char *d = strdup("/tmp/tm2-addrbook-XXXXXX");
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

static char *join(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Names in dir, sorted into one string "a,b,c". */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *listing(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *names[64];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            assert_true(n < 64);
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_str);
    char *out = calloc(1, 64 * 256);
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(out, ",");
        strcat(out, names[i]);
        free(names[i]);
    }
    return out;
}

static void rm_dir(char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *p = join(dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                rm_dir(p);
            else
                unlink(p), free(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

/* ---- configuration ------------------------------------------------------------- */

static void config_rules(void **state)
{
    (void)state;
    tm2__addrbook *b = NULL;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b), 0);
    assert_int_equal(tm2__addrbook_max(b), TM2__ADDRBOOK_DEFAULT_MAX);
    assert_int_equal(tm2__addrbook_size(b), 0);
    assert_false(tm2__addrbook_dirty(b));
    /* The default tables for 1000 entries. */
    tm2__addrbook_geometry g;
    tm2__addrbook_get_geometry(b, &g);
    assert_int_equal(g.new_buckets, 128);
    assert_int_equal(g.tried_buckets, 32);
    assert_int_equal(g.bucket_size, 32);
    assert_int_equal(g.new_per_source, 8);
    assert_int_equal(g.tried_per_group, 4);
    CHECK_BOOK(b);
    /* No key given: all zero (the owner draws one from its randomness). */
    tm2__addrbook *b2 = NULL;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &b2), 0);
    static const uint8_t zero[TM2__ADDRBOOK_KEY_LEN];
    assert_memory_equal(tm2__addrbook_key(b2), zero, TM2__ADDRBOOK_KEY_LEN);
    tm2__addrbook_free(b2);
    tm2__addrbook_free(b);

    /* The tables grow with the bound. */
    tm2__addrbook_config c = {.max_entries = TM2__ADDRBOOK_MAX_LIMIT};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), 0);
    tm2__addrbook_get_geometry(b, &g);
    assert_int_equal(g.tried_buckets, 512);
    assert_int_equal(g.new_buckets, 2048);
    assert_int_equal(g.new_per_source, 128);
    tm2__addrbook_free(b);
    c = (tm2__addrbook_config){.max_entries = 16};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), 0);
    tm2__addrbook_get_geometry(b, &g);
    assert_int_equal(g.tried_buckets, 4);
    assert_int_equal(g.new_buckets, 16);
    assert_int_equal(g.new_per_source, 1);
    assert_int_equal(g.tried_per_group, 1);
    tm2__addrbook_free(b);

    c = (tm2__addrbook_config){.max_entries = TM2__ADDRBOOK_MAX_LIMIT + 1};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    assert_null(b);
    c = (tm2__addrbook_config){.retry_base = 100, .retry_max = 50};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    c = (tm2__addrbook_config){.dead_after = -1};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    c = (tm2__addrbook_config){.bucket_size = TM2__ADDRBOOK_BUCKET_MAX + 1};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    c = (tm2__addrbook_config){.new_buckets = TM2__ADDRBOOK_BUCKETS_MAX + 1};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    c = (tm2__addrbook_config){.tried_buckets = TM2__ADDRBOOK_BUCKETS_MAX + 1};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    assert_int_equal(tm2__addrbook_new(NULL, NULL, NULL), TM2_EINVAL);
}

/* ---- adding ---------------------------------------------------------------------- */

static void add_new_and_refresh(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1);
    assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0), TM2__AB_ADDED);
    assert_int_equal(tm2__addrbook_size(b), 1);
    assert_true(tm2__addrbook_dirty(b));
    const tm2__addrbook_entry *e = entry(b, 1);
    assert_non_null(e);
    assert_int_equal(e->last_seen, T0);
    assert_int_equal(e->attempts, 0);
    assert_int_equal(e->last_attempt, 0);
    assert_int_equal(e->last_connected, 0);
    assert_true(tm2_netaddr_equal(&e->addr, &a));

    /* Re-adding moves last_seen up; only a move of >= SEEN_SLACK dirties. */
    tm2__addrbook_saved(b, 0);
    char *text;
    size_t len;
    uint64_t gen;
    assert_int_equal(tm2__addrbook_encode(b, &text, &len, &gen), 0);
    free(text);
    tm2__addrbook_saved(b, gen);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0 + 5), TM2__AB_REFRESHED);
    assert_int_equal(entry(b, 1)->last_seen, T0 + 5);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0 + 5 + TM2__ADDRBOOK_SEEN_SLACK), TM2__AB_REFRESHED);
    assert_true(tm2__addrbook_dirty(b));
    /* An older sighting never moves it back. */
    assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0), TM2__AB_REFRESHED);
    assert_int_equal(entry(b, 1)->last_seen, T0 + 5 + TM2__ADDRBOOK_SEEN_SLACK);
    assert_int_equal(tm2__addrbook_size(b), 1);
    tm2__addrbook_free(b);
}

static void add_rejects(void **state)
{
    (void)state;
    tm2_netaddr self = addr_of(0);
    tm2__addrbook *b = book(&self.id, 0);
    /* Our own ID, at any address. */
    assert_int_equal(tm2__addrbook_add(b, &self, NULL, T0), TM2_ESELF);
    tm2_netaddr other_port = self;
    other_port.port = 1;
    assert_int_equal(tm2__addrbook_add(b, &other_port, NULL, T0), TM2_ESELF);
    /* Addresses that fail the reference's Validate(). */
    tm2_netaddr a = addr_of(1);
    char s[TM2_NETADDR_STRLEN + 1];
    snprintf(s, sizeof s, "%s@0.0.0.0:26656", a.id.s);
    tm2_netaddr bad = parse(s);
    assert_int_equal(tm2__addrbook_add(b, &bad, NULL, T0), TM2_EUNSPEC);
    snprintf(s, sizeof s, "%s@[2001:db8::1]:26656", a.id.s);
    bad = parse(s);
    assert_int_equal(tm2__addrbook_add(b, &bad, NULL, T0), TM2_ERESERVED);
    bad = a;
    bad.id.s[0] = '\0';
    assert_true(tm2__addrbook_add(b, &bad, NULL, T0) < 0);
    assert_int_equal(tm2__addrbook_size(b), 0);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_add(b, NULL, NULL, T0), TM2_EINVAL);
    tm2__addrbook_free(b);
}

static void new_address_for_known_id(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1), moved = a;
    moved.port = 40000;
    assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0), TM2__AB_ADDED);
    /* Untried and never failed: gossip cannot redirect it. */
    assert_int_equal(tm2__addrbook_add(b, &moved, NULL, T0 + 5), TM2__AB_KEPT);
    assert_int_equal(entry(b, 1)->addr.port, a.port);
    /* Failed since: the new address replaces it and its record. */
    assert_int_equal(tm2__addrbook_mark_attempt(b, &a.id, T0 + 1), 0);
    assert_int_equal(tm2__addrbook_mark_failure(b, &a.id, T0 + 2), 0);
    assert_int_equal(tm2__addrbook_add(b, &moved, NULL, T0 + 10), TM2__AB_REPLACED);
    const tm2__addrbook_entry *e = entry(b, 1);
    assert_int_equal(e->addr.port, 40000);
    assert_int_equal(e->attempts, 0);
    assert_int_equal(e->last_attempt, 0);
    assert_int_equal(e->last_seen, T0 + 10);
    assert_false(e->tried);
    assert_int_equal(e->refs, 1);
    assert_int_equal(e->buckets[0], tm2__addrbook_new_bucket(b, &moved, NULL));
    assert_int_equal(tm2__addrbook_size(b), 1);
    CHECK_BOOK(b);

    /* Proven: in the tried table, and gossip cannot move it, failed or not. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &moved, T0 + 20), 0);
    e = entry(b, 1);
    assert_true(e->tried);
    assert_int_equal(e->buckets[0], tm2__addrbook_tried_bucket(b, &moved));
    assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0 + 30), TM2__AB_KEPT);
    e = entry(b, 1);
    assert_int_equal(e->addr.port, 40000);
    assert_int_equal(e->last_seen, T0 + 10);
    assert_int_equal(e->last_connected, T0 + 20);
    assert_int_equal(tm2__addrbook_mark_failure(b, &a.id, T0 + 40), 0);
    assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0 + 50), TM2__AB_KEPT);
    assert_int_equal(entry(b, 1)->addr.port, 40000);
    /* A connection to another address of the ID proves that one. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &a, T0 + 70), 0);
    e = entry(b, 1);
    assert_int_equal(e->addr.port, a.port);
    assert_int_equal(e->attempts, 0);
    assert_int_equal(e->last_connected, T0 + 70);
    assert_true(e->tried);
    assert_int_equal(e->buckets[0], tm2__addrbook_tried_bucket(b, &a));
    CHECK_BOOK(b);
    /* A tried address gone bad for good (ten failures, a week without a
     * connection) is terrible: then gossip moves it, back to new. */
    int64_t t = T0 + 70 + 8 * DAY;
    for (int i = 0; i < TM2__ADDRBOOK_MAX_FAILURES; i++)
        tm2__addrbook_mark_failure(b, &a.id, t - 3600);
    assert_true(tm2__addrbook_terrible(entry(b, 1), t));
    assert_int_equal(tm2__addrbook_add(b, &moved, NULL, t), TM2__AB_REPLACED);
    e = entry(b, 1);
    assert_int_equal(e->addr.port, 40000);
    assert_false(e->tried);
    assert_int_equal(e->last_connected, 0);
    assert_int_equal(tm2__addrbook_tried_count(b), 0);
    assert_int_equal(tm2__addrbook_new_count(b), 1);
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
}

/* max_entries bounds the pool: once full, a newcomer enters only in place
 * of a terrible entry of its own bucket. */
static void pool_bound(void **state)
{
    (void)state;
    /* One new bucket per source group (P = 1) and room for three entries. */
    tm2__addrbook *b = book(NULL, 3);
    tm2__addrbook_geometry g;
    tm2__addrbook_get_geometry(b, &g);
    assert_int_equal(g.new_per_source, 1);
    tm2_netaddr s1 = ip_only("198.19.1.1"), s2 = ip_only("198.18.1.1");
    for (unsigned i = 1; i <= 3; i++) {
        tm2_netaddr a = addr_of(i);
        assert_int_equal(tm2__addrbook_add(b, &a, &s1, T0 + 100 * i), TM2__AB_ADDED);
    }
    uint32_t bk = entry(b, 1)->buckets[0];
    assert_int_equal(tm2__addrbook_bucket_count(b, false, bk), 3);
    /* Full, nothing terrible: turned away, whatever its source. */
    tm2_netaddr a4 = addr_of(4), a5 = addr_of(5);
    assert_int_equal(tm2__addrbook_add(b, &a4, &s1, T0 + 400), TM2_EFULL);
    assert_int_equal(tm2__addrbook_add(b, &a5, &s2, T0 + 400), TM2_EFULL);
    assert_int_equal(tm2__addrbook_size(b), 3);

    /* 2 failed three times and was never reached: terrible, so 4 (same
     * source, same bucket) takes its place. */
    tm2_netaddr a2 = addr_of(2);
    for (int i = 0; i < TM2__ADDRBOOK_RETRIES; i++)
        tm2__addrbook_mark_failure(b, &a2.id, T0 + 500);
    assert_false(tm2__addrbook_terrible(entry(b, 2), T0 + 559));   /* tried in the last minute */
    assert_true(tm2__addrbook_terrible(entry(b, 2), T0 + 560));
    assert_int_equal(tm2__addrbook_add(b, &a4, &s1, T0 + 560), TM2__AB_ADDED);
    assert_null(entry(b, 2));
    assert_non_null(entry(b, 1));
    assert_non_null(entry(b, 3));
    assert_non_null(entry(b, 4));
    /* 5's bucket (another source) has nothing terrible. */
    assert_int_equal(tm2__addrbook_add(b, &a5, &s2, T0 + 600), TM2_EFULL);
    CHECK_BOOK(b);

    /* Not heard of for 30 days is terrible too. */
    int64_t later = T0 + 400 + TM2__ADDRBOOK_HORIZON + 1;
    assert_true(tm2__addrbook_terrible(entry(b, 1), later));
    assert_false(tm2__addrbook_terrible(entry(b, 4), later));
    assert_int_equal(tm2__addrbook_add(b, &a5, &s1, later), TM2__AB_ADDED);
    assert_null(entry(b, 1));
    /* Re-adding a known ID never evicts. */
    assert_int_equal(tm2__addrbook_add(b, &a5, &s1, later + 50), TM2__AB_REFRESHED);
    assert_int_equal(tm2__addrbook_size(b), 3);
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
}

static void remove_and_iterate(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    for (unsigned i = 1; i <= 5; i++) {
        tm2_netaddr a = addr_of(i);
        tm2__addrbook_add(b, &a, NULL, T0 + i);
    }
    tm2_netaddr a3 = addr_of(3);
    assert_int_equal(tm2__addrbook_remove(b, &a3.id), 0);
    assert_int_equal(tm2__addrbook_remove(b, &a3.id), TM2_ENOTFOUND);
    assert_int_equal(tm2__addrbook_size(b), 4);
    unsigned seen = 0;
    for (size_t i = 0; i < tm2__addrbook_size(b); i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_at(b, i);
        assert_non_null(e);
        for (unsigned k = 1; k <= 5; k++) {
            tm2_netaddr a = addr_of(k);
            if (tm2_netaddr_equal(&a, &e->addr))
                seen |= 1u << k;
        }
    }
    assert_int_equal(seen, (1u << 1) | (1u << 2) | (1u << 4) | (1u << 5));
    assert_null(tm2__addrbook_at(b, 4));
    tm2_id unknown;
    make_id(99, &unknown);
    assert_int_equal(tm2__addrbook_mark_attempt(b, &unknown, T0), TM2_ENOTFOUND);
    tm2_netaddr unknown_addr = addr_of(99);
    assert_int_equal(tm2__addrbook_mark_connected(b, &unknown_addr, T0), TM2_ENOTFOUND);
    assert_int_equal(tm2__addrbook_size(b), 4);
    assert_int_equal(tm2__addrbook_mark_failure(b, &unknown, T0), TM2_ENOTFOUND);
    tm2__addrbook_free(b);
}

/* ---- dial record, back-off, candidates --------------------------------------- */

static void backoff_schedule(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1);
    tm2__addrbook_add(b, &a, NULL, T0);
    const tm2__addrbook_entry *e = entry(b, 1);
    assert_int_equal(tm2__addrbook_retry_at(b, e), 0);

    /* In flight: not again for retry_base. */
    tm2__addrbook_saved(b, 0);
    uint64_t gen;
    char *text;
    size_t len;
    tm2__addrbook_encode(b, &text, &len, &gen);
    free(text);
    tm2__addrbook_saved(b, gen);
    assert_int_equal(tm2__addrbook_mark_attempt(b, &a.id, T0 + 10), 0);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_retry_at(b, e), T0 + 10 + 30);

    /* Failures double the wait up to an hour. */
    static const int64_t waits[] = {60, 120, 240, 480, 960, 1920, 3600, 3600, 3600};
    int64_t t = T0 + 100;
    for (size_t i = 0; i < sizeof waits / sizeof waits[0]; i++) {
        assert_int_equal(tm2__addrbook_mark_failure(b, &a.id, t), 0);
        assert_int_equal(e->attempts, i + 1);
        assert_int_equal(tm2__addrbook_retry_at(b, e), t + waits[i]);
        t += waits[i];
    }
    assert_true(tm2__addrbook_dirty(b));
    /* A connection resets the count. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &a, t), 0);
    assert_int_equal(e->attempts, 0);
    assert_int_equal(e->last_connected, t);
    assert_int_equal(e->last_seen, T0);
    assert_int_equal(tm2__addrbook_retry_at(b, e), t + 30);
    tm2__addrbook_free(b);
}

struct skip_set {
    tm2_id ids[8];
    size_t n;
    size_t calls;
};

static bool skip_cb(const tm2__addrbook_entry *e, void *user)
{
    struct skip_set *s = user;
    s->calls++;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->ids[i].s, e->addr.id.s) == 0)
            return true;
    return false;
}

static unsigned index_of(const tm2_netaddr *a)
{
    for (unsigned i = 0; i < 100; i++) {
        tm2_netaddr c = addr_of(i);
        if (tm2_netaddr_equal(&c, a))
            return i;
    }
    fail_msg("unknown address");
    return 0;
}

static void select_candidates(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    /* 1: seen long ago; 2, 3: recent; 4: failed once, back-off over;
     * 5: in back-off; 6: skipped (connected). */
    int64_t now = T0 + 10 * DAY;
    tm2_netaddr a[7];
    for (unsigned i = 1; i <= 6; i++) {
        a[i] = addr_of(i);
        tm2__addrbook_add(b, &a[i], NULL, i == 1 ? T0 : now - 60);
    }
    tm2__addrbook_mark_attempt(b, &a[4].id, now - 200);
    tm2__addrbook_mark_failure(b, &a[4].id, now - 100);   /* retry at now - 40 */
    tm2__addrbook_mark_attempt(b, &a[5].id, now - 10);    /* retry at now + 20 */
    struct skip_set skip = {.n = 1};
    skip.ids[0] = a[6].id;

    for (int round = 0; round < 20; round++) {
        tm2_netaddr out[8];
        skip.calls = 0;
        size_t n = tm2__addrbook_select(b, now, skip_cb, &skip, out, 8);
        assert_int_equal(n, 4);
        assert_true(skip.calls >= 4);
        unsigned seen = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned k = index_of(&out[i]);
            assert_true(k == 1 || k == 2 || k == 3 || k == 4);
            assert_false(seen & (1u << k));   /* no ID twice */
            seen |= 1u << k;
        }
    }
    /* max bounds the answer; later the back-off of 5 has run out. */
    tm2_netaddr out[8];
    assert_int_equal(tm2__addrbook_select(b, now, skip_cb, &skip, out, 2), 2);
    assert_int_equal(tm2__addrbook_select(b, now + 20, NULL, NULL, out, 8), 6);
    assert_int_equal(tm2__addrbook_select(b, now, NULL, NULL, out, 0), 0);
    /* Nothing changed. */
    assert_int_equal(entry(b, 5)->last_attempt, now - 10);
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
    /* An empty book selects nothing. */
    b = book(NULL, 0);
    assert_int_equal(tm2__addrbook_select(b, now, NULL, NULL, out, 8), 0);
    assert_int_equal(tm2__addrbook_sample(b, now, NULL, NULL, out, 8), 0);
    tm2__addrbook_free(b);
}

/* Failures make an entry less likely, never impossible (GetChance). */
static void select_chance(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr good = addr_of(1), bad = addr_of(2);
    tm2__addrbook_add(b, &good, NULL, T0);
    tm2__addrbook_add(b, &bad, NULL, T0);
    for (int i = 0; i < 8; i++)
        tm2__addrbook_mark_failure(b, &bad.id, T0);
    int64_t now = T0 + DAY;   /* past every back-off */
    unsigned bad_first = 0, both = 0;
    for (int i = 0; i < 2000; i++) {
        tm2_netaddr out[2];
        size_t n = tm2__addrbook_select(b, now, NULL, NULL, out, 1);
        assert_int_equal(n, 1);
        bad_first += tm2_netaddr_equal(&out[0], &bad);
        both += tm2__addrbook_select(b, now, NULL, NULL, out, 2) == 2;
    }
    /* 0.66^8 = 0.036 against 1, raised by the factor after refusals. */
    assert_true(bad_first > 0);
    assert_true(bad_first < 2000 / 4);
    assert_int_equal(both, 2000);
    tm2__addrbook_free(b);
}

/* A source that floods its buckets gets its share of buckets, not of
 * entries, in selections and in shared samples. */
static void select_spreads_across_groups(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    /* 40 honest addresses, each its own source (loopback addresses are
     * groups of their own), spread over the new table. */
    for (unsigned i = 1; i <= 40; i++) {
        tm2_netaddr a = addr_of(i);
        assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0), TM2__AB_ADDED);
    }
    /* One loopback source announces 1,000 loopback addresses: its eight
     * buckets fill (256 entries), the rest is turned away. */
    tm2_netaddr src = ip_only("127.9.9.9");
    size_t flooded = 0;
    for (unsigned i = 0; i < 1000; i++) {
        tm2_netaddr a = addr_of(1000 + i);
        int rc = tm2__addrbook_add(b, &a, &src, T0);
        assert_true(rc == TM2__AB_ADDED || rc == TM2_EFULL);
        flooded += rc == TM2__AB_ADDED;
    }
    tm2__addrbook_geometry g;
    tm2__addrbook_get_geometry(b, &g);
    assert_true(flooded <= (size_t)g.new_per_source * g.bucket_size);
    assert_true(flooded > 200);
    CHECK_BOOK(b);

    unsigned honest_hits[41] = {0}, flood_hits = 0;
    const unsigned draws = 4000;
    for (unsigned d = 0; d < draws; d++) {
        tm2_netaddr out[1];
        assert_int_equal(tm2__addrbook_select(b, T0, NULL, NULL, out, 1), 1);
        const tm2__addrbook_entry *e = tm2__addrbook_find(b, &out[0].id);
        assert_non_null(e);
        if (e->has_src) {
            flood_hits++;
        } else {
            unsigned k = index_of(&out[0]);
            assert_true(k >= 1 && k <= 40);
            honest_hits[k]++;
        }
    }
    /* The flood holds 86% of the entries but 8 of about 45 non-empty
     * buckets: its share of draws is near 18%; 40% is far beyond chance. */
    assert_true(flood_hits < draws * 40 / 100);
    for (unsigned k = 1; k <= 40; k++)
        if (honest_hits[k] == 0)
            fail_msg("honest address %u never selected", k);

    /* Answers to share draw across buckets as well. */
    unsigned shared = 0, shared_flood = 0;
    for (int round = 0; round < 200; round++) {
        tm2_netaddr out[30];
        size_t n = tm2__addrbook_sample(b, T0, NULL, NULL, out, 30);
        assert_true(n <= 30);
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < i; j++)
                assert_false(tm2_netaddr_equal(&out[i], &out[j]));
            shared++;
            shared_flood += tm2__addrbook_find(b, &out[i].id)->has_src;
        }
    }
    assert_true(shared > 200 * 25);
    assert_true(shared_flood < shared / 2);
    tm2__addrbook_free(b);
}

/* Samples leave out terrible entries and what skip rejects; a book no
 * larger than the answer gives every eligible entry. */
static void sample_rules(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    for (unsigned i = 1; i <= 5; i++) {
        tm2_netaddr a = addr_of(i);
        tm2__addrbook_add(b, &a, NULL, T0);
    }
    tm2_netaddr a3 = addr_of(3);
    for (int i = 0; i < TM2__ADDRBOOK_RETRIES; i++)
        tm2__addrbook_mark_failure(b, &a3.id, T0);
    struct skip_set skip = {.n = 1};
    skip.ids[0] = addr_of(5).id;
    tm2_netaddr out[30];
    size_t n = tm2__addrbook_sample(b, T0 + 3600, skip_cb, &skip, out, 30);
    assert_int_equal(n, 3);
    unsigned seen = 0;
    for (size_t i = 0; i < n; i++)
        seen |= 1u << index_of(&out[i]);
    assert_int_equal(seen, (1u << 1) | (1u << 2) | (1u << 4));
    assert_int_equal(tm2__addrbook_sample(b, T0 + 3600, skip_cb, &skip, out, 2), 2);
    tm2__addrbook_free(b);
}

/* ---- placement ------------------------------------------------------------------ */

static void groups(void **state)
{
    (void)state;
    uint8_t g1[TM2__ADDRBOOK_GROUP_MAX], g2[TM2__ADDRBOOK_GROUP_MAX];
    size_t n1, n2;
#define SAME(x, y, wp)                                                                       \
    do {                                                                                       \
        tm2_netaddr ax = ip_only(x), ay = ip_only(y);                                          \
        ax.port = 1;                                                                           \
        ay.port = 2;                                                                           \
        n1 = tm2__addrbook_group(&ax, wp, false, g1);                                               \
        n2 = tm2__addrbook_group(&ay, wp, false, g2);                                               \
    } while (0)
    /* IPv4 by /16. */
    SAME("198.18.5.1", "198.18.200.9", true);
    assert_int_equal(n1, 3);
    assert_true(n1 == n2 && memcmp(g1, g2, n1) == 0);
    SAME("198.18.5.1", "198.19.5.1", true);
    assert_false(n1 == n2 && memcmp(g1, g2, n1) == 0);
    /* IPv6 by /32 (the documentation prefix: pure computation, no dial). */
    SAME("2001:db8:1::1", "2001:db8:ffff::2", true);
    assert_int_equal(n1, 5);
    assert_true(n1 == n2 && memcmp(g1, g2, n1) == 0);
    SAME("2001:db8::1", "2001:db9::1", true);
    assert_false(n1 == n2 && memcmp(g1, g2, n1) == 0);
    /* Loopback and private: each address (IP and port) its own group; as a
     * source, each IP. */
    SAME("127.0.0.1", "127.0.0.1", true);
    assert_false(n1 == n2 && memcmp(g1, g2, n1) == 0);
    SAME("127.0.0.1", "127.0.0.1", false);
    assert_true(n1 == n2 && memcmp(g1, g2, n1) == 0);
    SAME("127.0.0.1", "127.0.0.2", false);
    assert_false(n1 == n2 && memcmp(g1, g2, n1) == 0);
    SAME("fd00::1", "fd00::1", true);
    assert_false(n1 == n2 && memcmp(g1, g2, n1) == 0);
    SAME("fd00::1", "fd00::2", false);
    assert_false(n1 == n2 && memcmp(g1, g2, n1) == 0);
    SAME("::1", "127.0.0.1", false);
    assert_false(n1 == n2 && memcmp(g1, g2, n1) == 0);
    /* Loopback and private never share a group with a routable range. */
    SAME("127.0.0.1", "127.0.0.1", false);
    assert_int_equal(g1[0], 3);
    SAME("fd00::1", "fd00::1", false);
    assert_int_equal(g1[0], 4);
    /* Unspecified: the unknown source, one group. */
    SAME("0.0.0.0", "::", false);
    assert_int_equal(n1, 1);
    assert_true(n1 == n2 && memcmp(g1, g2, n1) == 0);
#undef SAME
}

static void placement_deterministic(void **state)
{
    (void)state;
    static const uint8_t other_key[TM2__ADDRBOOK_KEY_LEN] = {1, 2, 3};
    tm2__addrbook *b1 = book(NULL, 0), *b2 = book(NULL, 0), *b3 = NULL;
    tm2__addrbook_config c = {.key = other_key};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b3), 0);
    assert_memory_equal(tm2__addrbook_key(b1), KEY, sizeof KEY);
    tm2__addrbook_geometry g;
    tm2__addrbook_get_geometry(b1, &g);
    unsigned differ_new = 0, differ_tried = 0;
    for (unsigned i = 0; i < 200; i++) {
        tm2_netaddr a = bench_addr(i, 18 + i % 2, i % 7, i % 250 + 1, 26656 + i);
        char sip[32];
        snprintf(sip, sizeof sip, "127.3.%u.1", i % 50);   /* 50 source groups */
        tm2_netaddr src = ip_only(sip);
        uint32_t nb = tm2__addrbook_new_bucket(b1, &a, &src);
        uint32_t tb = tm2__addrbook_tried_bucket(b1, &a);
        assert_true(nb < g.new_buckets && tb < g.tried_buckets);
        /* Same key, same place; again and again. */
        assert_int_equal(nb, tm2__addrbook_new_bucket(b2, &a, &src));
        assert_int_equal(nb, tm2__addrbook_new_bucket(b1, &a, &src));
        assert_int_equal(tb, tm2__addrbook_tried_bucket(b2, &a));
        differ_new += nb != tm2__addrbook_new_bucket(b3, &a, &src);
        differ_tried += tb != tm2__addrbook_tried_bucket(b3, &a);
        /* Adding puts the entry where the functions say. */
        assert_int_equal(tm2__addrbook_add(b1, &a, &src, T0), TM2__AB_ADDED);
        const tm2__addrbook_entry *e = tm2__addrbook_find(b1, &a.id);
        assert_int_equal(e->refs, 1);
        assert_int_equal(e->buckets[0], nb);
        assert_true(e->has_src);
        assert_memory_equal(e->src, src.ip, 16);
        /* A /16 reaches 4 tried buckets of 32: connect 40 of 200. */
        if (i < 40) {
            assert_int_equal(tm2__addrbook_mark_connected(b1, &a, T0), 0);
            assert_true(e->tried);
            assert_int_equal(e->buckets[0], tb);
        }
    }
    /* Another key, another place (1 in 128 or 32 agree by chance). */
    assert_true(differ_new > 150);
    assert_true(differ_tried > 150);
    CHECK_BOOK(b1);

    /* One source group reaches P new buckets whatever the addresses; one
     * (address group, source group) pair one; one address group T tried
     * buckets. */
    tm2_netaddr src = ip_only("198.19.77.1");
    tm2_netaddr src_same_group = ip_only("198.19.3.3");
    uint8_t seen_src[TM2__ADDRBOOK_BUCKETS_MAX] = {0}, seen_pair[TM2__ADDRBOOK_BUCKETS_MAX] = {0},
            seen_tried[TM2__ADDRBOOK_BUCKETS_MAX] = {0};
    unsigned n_src = 0, n_pair = 0, n_tried = 0;
    for (unsigned i = 0; i < 2000; i++) {
        tm2_netaddr lo = addr_of(i);   /* loopback: 2000 address groups */
        uint32_t k = tm2__addrbook_new_bucket(b1, &lo, &src);
        assert_int_equal(k, tm2__addrbook_new_bucket(b1, &lo, &src_same_group));
        n_src += !seen_src[k];
        seen_src[k] = 1;
        tm2_netaddr one16 = bench_addr(i, 18, i / 250, i % 250 + 1, 26656 + i % 7);
        k = tm2__addrbook_new_bucket(b1, &one16, &src);
        n_pair += !seen_pair[k];
        seen_pair[k] = 1;
        k = tm2__addrbook_tried_bucket(b1, &one16);
        n_tried += !seen_tried[k];
        seen_tried[k] = 1;
    }
    assert_int_equal(n_src, g.new_per_source);   /* 2000 draws hit all 8 */
    assert_int_equal(n_pair, 1);
    assert_int_equal(n_tried, g.tried_per_group);
    tm2__addrbook_free(b1);
    tm2__addrbook_free(b2);
    tm2__addrbook_free(b3);
}

/* ---- floods ----------------------------------------------------------------------- */

/* Honest addresses 1..n, each heard of from a peer of its own (loopback:
 * one group per address), and the first `tried` of them connected. */
static void honest(tm2__addrbook *b, unsigned n, unsigned tried)
{
    for (unsigned i = 1; i <= n; i++) {
        tm2_netaddr a = addr_of(i);
        char sip[32];
        snprintf(sip, sizeof sip, "127.5.%u.%u", i / 250, i % 250 + 1);
        tm2_netaddr src = ip_only(sip);
        assert_int_equal(tm2__addrbook_add(b, &a, &src, T0), TM2__AB_ADDED);
        if (i <= tried)
            assert_int_equal(tm2__addrbook_mark_connected(b, &a, T0), 0);
    }
}

static void all_honest_there(const tm2__addrbook *b, unsigned n, unsigned tried)
{
    for (unsigned i = 1; i <= n; i++) {
        const tm2__addrbook_entry *e = entry(b, i);
        if (!e)
            fail_msg("honest address %u was flushed", i);
        assert_int_equal(e->tried, i <= tried);
    }
}

static size_t count_in(const tm2__addrbook *b, unsigned o2, unsigned o3_lo, unsigned o3_hi)
{
    size_t n = 0;
    for (size_t i = 0; i < tm2__addrbook_size(b); i++) {
        const uint8_t *ip = tm2__addrbook_at(b, i)->addr.ip;
        n += ip[12] == 198 && ip[13] >= o2 && ip[13] <= o2 + 1 && ip[14] >= o3_lo && ip[14] <= o3_hi;
    }
    return n;
}

/* One source /16 announces 1,000 addresses of one /24: one address group
 * from one source group lands in exactly one new bucket, so at most
 * bucket_size (32) of them stay, and nothing else moves. */
static void flood_one_source_one_24(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    honest(b, 300, 60);
    tm2_netaddr src = ip_only("198.19.0.1");
    unsigned added = 0, full = 0;
    for (unsigned i = 0; i < 1000; i++) {
        tm2_netaddr a = bench_addr(2000 + i, 18, 5, i % 250 + 1, 26656 + i / 250);
        int rc = tm2__addrbook_add(b, &a, &src, T0 + 1);
        assert_true(rc == TM2__AB_ADDED || rc == TM2_EFULL);
        added += rc == TM2__AB_ADDED;
        full += rc == TM2_EFULL;
    }
    tm2__addrbook_geometry g;
    tm2__addrbook_get_geometry(b, &g);
    size_t share = count_in(b, 18, 5, 5);
    assert_int_equal(share, added);
    assert_true(share <= g.bucket_size);
    assert_true(full >= 1000 - g.bucket_size);
    /* All in the one bucket the pair maps to. */
    tm2_netaddr any = bench_addr(2000, 18, 5, 1, 26656);
    uint32_t bk = tm2__addrbook_new_bucket(b, &any, &src);
    for (size_t i = 0; i < tm2__addrbook_size(b); i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_at(b, i);
        if (e->addr.ip[12] == 198)
            assert_true(e->refs == 1 && e->buckets[0] == bk);
    }
    all_honest_there(b, 300, 60);
    assert_int_equal(tm2__addrbook_tried_count(b), 60);
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
}

/* 10,000 bogus addresses across 198.18.0.0/15 (two /16 groups) from one
 * source: at most 2 * bucket_size (64) stay; the honest book is untouched.
 * The same flood from a loopback source with loopback addresses (each
 * address a group of its own): at most P * bucket_size (256). */
static void flood_bogus_across_15(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    honest(b, 300, 60);
    tm2__addrbook_geometry g;
    tm2__addrbook_get_geometry(b, &g);
    tm2_netaddr src = ip_only("198.19.255.1");
    for (unsigned i = 0; i < 10000; i++) {
        tm2_netaddr a = bench_addr(3000 + i, 18 + (i & 1), (i >> 1) % 256, i % 250 + 1,
                                   1024 + i % 50000);
        int rc = tm2__addrbook_add(b, &a, &src, T0 + 1 + i / 1000);
        assert_true(rc == TM2__AB_ADDED || rc == TM2_EFULL);
    }
    size_t share = count_in(b, 18, 0, 255);
    assert_true(share > 0);
    assert_true(share <= 2 * g.bucket_size);
    all_honest_there(b, 300, 60);
    CHECK_BOOK(b);

    /* Loopback addresses from one loopback source. */
    tm2_netaddr lsrc = ip_only("127.66.0.1");
    size_t before = tm2__addrbook_size(b), lo_added = 0;
    for (unsigned i = 0; i < 3000; i++) {
        tm2_netaddr a = addr_of(400 + i);
        lo_added += tm2__addrbook_add(b, &a, &lsrc, T0 + 20) == TM2__AB_ADDED;
    }
    assert_int_equal(tm2__addrbook_size(b), before + lo_added);
    assert_true(lo_added <= (size_t)g.new_per_source * g.bucket_size);
    all_honest_there(b, 300, 60);
    assert_true(tm2__addrbook_size(b) <= tm2__addrbook_max(b));
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
}

/* An address heard of from many sources sits in up to 8 new buckets, each
 * further one half as likely. */
static void refs_from_many_sources(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1);
    for (unsigned s = 0; s < 256; s++) {
        char sip[32];
        snprintf(sip, sizeof sip, "198.%u.%u.1", 18 + s % 2, s);
        tm2_netaddr src = ip_only(sip);
        int rc = tm2__addrbook_add(b, &a, &src, T0 + s);
        assert_int_equal(rc, s ? TM2__AB_REFRESHED : TM2__AB_ADDED);
        CHECK_BOOK(b);
    }
    const tm2__addrbook_entry *e = entry(b, 1);
    /* 256 sources in 2 groups (198.18 and 198.19): at most 2 buckets. */
    assert_true(e->refs >= 1 && e->refs <= 2);
    /* Sources in many groups: loopback IPs, one group each. */
    for (unsigned s = 0; s < 2000; s++) {
        char sip[32];
        snprintf(sip, sizeof sip, "127.7.%u.%u", s / 250, s % 250 + 1);
        tm2_netaddr src = ip_only(sip);
        tm2__addrbook_add(b, &a, &src, T0 + 300);
        assert_true(e->refs <= TM2__ADDRBOOK_MAX_REFS);
    }
    assert_true(e->refs >= 4);
    assert_int_equal(tm2__addrbook_size(b), 1);
    CHECK_BOOK(b);
    /* Connected: one tried bucket, no new ones. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &a, T0 + 400), 0);
    assert_true(e->tried);
    assert_int_equal(e->refs, 0);
    assert_int_equal(tm2__addrbook_new_count(b), 0);
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
}

/* ---- the tried table: test-before-evict ---------------------------------------- */

/* Loopback peers from `from` on whose tried bucket is tb, n of them. */
static void same_tried_bucket(const tm2__addrbook *b, uint32_t tb, unsigned from, unsigned *out,
                              unsigned n)
{
    unsigned k = 0;
    for (unsigned i = from; k < n; i++) {
        assert_true(i < from + 5000);
        tm2_netaddr a = addr_of(i);
        if (tm2__addrbook_tried_bucket(b, &a) == tb)
            out[k++] = i;
    }
}

static void tried_test_before_evict(void **state)
{
    (void)state;
    /* Two tried buckets of two: easy to fill. */
    tm2__addrbook *b = book_geo(NULL, 64, 16, 2, 2);
    unsigned p[5];   /* o1, o2 (occupants), n1, n2, n3 */
    same_tried_bucket(b, 0, 1, p, 5);
    tm2_netaddr o1 = addr_of(p[0]), o2 = addr_of(p[1]), n1 = addr_of(p[2]), n2 = addr_of(p[3]);
    for (int i = 0; i < 5; i++) {
        tm2_netaddr a = addr_of(p[i]);
        assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0), TM2__AB_ADDED);
    }
    assert_int_equal(tm2__addrbook_mark_connected(b, &o1, T0), 0);
    assert_int_equal(tm2__addrbook_mark_connected(b, &o2, T0 + 1), 0);
    assert_int_equal(tm2__addrbook_bucket_count(b, true, 0), 2);

    /* n1 connects: its bucket is full, it waits in new. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &n1, T0 + 2), 0);
    assert_false(tm2__addrbook_find(b, &n1.id)->tried);
    assert_int_equal(tm2__addrbook_collisions(b), 1);
    CHECK_BOOK(b);
    /* Both occupants were held in the last 4 h: they stay. */
    assert_int_equal(tm2__addrbook_resolve(b, T0 + 3), 1);
    assert_int_equal(tm2__addrbook_collisions(b), 0);
    assert_true(tm2__addrbook_find(b, &o1.id)->tried && tm2__addrbook_find(b, &o2.id)->tried);

    /* Five hours on, n1 connects again: o1, held longest ago and never
     * failed, must be dialled first. */
    int64_t now = T0 + 5 * 3600;
    assert_int_equal(tm2__addrbook_mark_connected(b, &n1, now), 0);
    assert_int_equal(tm2__addrbook_resolve(b, now), 0);
    tm2_netaddr out[4];
    assert_int_equal(tm2__addrbook_collision_tests(b, now, NULL, NULL, out, 4), 1);
    assert_true(tm2_netaddr_equal(&out[0], &o1));
    assert_int_equal(tm2__addrbook_collision_tests(b, now, NULL, NULL, out, 4), 0);   /* once */
    /* A flood of gossip meanwhile changes nothing in tried. */
    tm2_netaddr src = ip_only("198.19.9.9");
    for (unsigned i = 0; i < 500; i++) {
        tm2_netaddr a = bench_addr(6000 + i, 18, i % 3, i % 250 + 1, 26656);
        tm2__addrbook_add(b, &a, &src, now);
    }
    assert_true(tm2__addrbook_find(b, &o1.id)->tried && tm2__addrbook_find(b, &o2.id)->tried);
    /* o1 answers: it stays, n1 stays in new. */
    tm2__addrbook_mark_attempt(b, &o1.id, now + 5);
    assert_int_equal(tm2__addrbook_mark_connected(b, &o1, now + 10), 0);
    assert_int_equal(tm2__addrbook_resolve(b, now + 11), 1);
    assert_true(tm2__addrbook_find(b, &o1.id)->tried);
    assert_false(tm2__addrbook_find(b, &n1.id)->tried);
    CHECK_BOOK(b);

    /* n1 again: now o2 is held longest ago; it fails, so n1 takes its
     * place and o2 goes back to new. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &n1, now + 20), 0);
    assert_int_equal(tm2__addrbook_collision_tests(b, now + 20, NULL, NULL, out, 4), 1);
    assert_true(tm2_netaddr_equal(&out[0], &o2));
    assert_int_equal(tm2__addrbook_resolve(b, now + 25), 0);   /* not failed yet */
    tm2__addrbook_mark_attempt(b, &o2.id, now + 25);
    assert_int_equal(tm2__addrbook_mark_failure(b, &o2.id, now + 30), 0);
    assert_int_equal(tm2__addrbook_resolve(b, now + 31), 1);
    assert_true(tm2__addrbook_find(b, &n1.id)->tried);
    const tm2__addrbook_entry *eo2 = tm2__addrbook_find(b, &o2.id);
    assert_true(eo2 == NULL || !eo2->tried);
    assert_int_equal(tm2__addrbook_bucket_count(b, true, 0), 2);
    assert_int_equal(tm2__addrbook_tried_count(b), 2);
    CHECK_BOOK(b);

    /* n2 connects ten hours later; nobody dials the occupant: after 40
     * minutes the collision ends and the occupants stay. */
    int64_t later = now + 10 * 3600;
    assert_int_equal(tm2__addrbook_mark_connected(b, &n2, later), 0);
    assert_int_equal(tm2__addrbook_collisions(b), 1);
    assert_int_equal(tm2__addrbook_resolve(b, later + TM2__ADDRBOOK_TEST_WINDOW - 1), 0);
    assert_int_equal(tm2__addrbook_resolve(b, later + TM2__ADDRBOOK_TEST_WINDOW), 1);
    assert_false(tm2__addrbook_find(b, &n2.id)->tried);
    assert_true(tm2__addrbook_find(b, &o1.id)->tried && tm2__addrbook_find(b, &n1.id)->tried);

    /* A newcomer that fails itself while waiting gives up. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &n2, later + 7200), 0);
    assert_int_equal(tm2__addrbook_collisions(b), 1);
    tm2__addrbook_mark_failure(b, &n2.id, later + 7201);
    assert_int_equal(tm2__addrbook_resolve(b, later + 7202), 1);
    assert_false(tm2__addrbook_find(b, &n2.id)->tried);
    /* A skipped occupant is not handed out. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &n2, later + 7300), 0);
    struct skip_set skip = {.n = 2};
    skip.ids[0] = o1.id;
    skip.ids[1] = n1.id;
    assert_int_equal(tm2__addrbook_collision_tests(b, later + 7300, skip_cb, &skip, out, 4), 0);
    /* Removing the waiting entry ends its collision. */
    assert_int_equal(tm2__addrbook_remove(b, &n2.id), 0);
    assert_int_equal(tm2__addrbook_collisions(b), 0);
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
}

/* Tried entries are never evicted by gossip, however much of it. */
static void tried_survive_flood(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    honest(b, 200, 200);
    assert_int_equal(tm2__addrbook_tried_count(b), 200);
    for (unsigned s = 0; s < 20; s++) {
        char sip[32];
        snprintf(sip, sizeof sip, "198.%u.%u.1", 18 + s % 2, s);
        tm2_netaddr src = ip_only(sip);
        for (unsigned i = 0; i < 500; i++) {
            tm2_netaddr a = bench_addr(7000 + s * 500 + i, 18 + i % 2, i / 2 % 256, s + 1, 26656);
            tm2__addrbook_add(b, &a, &src, T0 + 10);
        }
    }
    all_honest_there(b, 200, 200);
    assert_int_equal(tm2__addrbook_tried_count(b), 200);
    /* The flood: at most two buckets per source (two address groups). */
    tm2__addrbook_geometry g;
    tm2__addrbook_get_geometry(b, &g);
    assert_true(tm2__addrbook_new_count(b) <= 20 * 2 * g.bucket_size);
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
}

static void aging_out(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    /* 1: 10 failures, unseen for 7 days: dead. 2: 9 failures. 3: 10
     * failures but gossiped recently. 4: old, never tried. */
    int64_t now = T0 + 8 * DAY;
    for (unsigned i = 1; i <= 4; i++) {
        tm2_netaddr a = addr_of(i);
        tm2__addrbook_add(b, &a, NULL, i == 3 ? now - DAY : now - TM2__ADDRBOOK_DEAD_AFTER);
        unsigned fails = i == 2 ? 9 : i == 4 ? 0 : 10;
        for (unsigned k = 0; k < fails; k++)
            tm2__addrbook_mark_failure(b, &a.id, now - 100);
    }
    assert_int_equal(tm2__addrbook_expire(b, now - 1), 0);
    assert_int_equal(tm2__addrbook_expire(b, now), 1);
    assert_null(entry(b, 1));
    assert_non_null(entry(b, 2));
    assert_non_null(entry(b, 3));
    assert_non_null(entry(b, 4));
    assert_int_equal(tm2__addrbook_expire(b, now), 0);
    tm2__addrbook_free(b);

    /* Thresholds are configurable. */
    tm2__addrbook_config c = {.dead_attempts = 2, .dead_after = 60};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), 0);
    tm2_netaddr a = addr_of(1);
    tm2__addrbook_add(b, &a, NULL, T0);
    tm2__addrbook_mark_failure(b, &a.id, T0 + 1);
    assert_int_equal(tm2__addrbook_expire(b, T0 + 61), 0);
    tm2__addrbook_mark_failure(b, &a.id, T0 + 2);
    assert_int_equal(tm2__addrbook_expire(b, T0 + 59), 0);
    assert_int_equal(tm2__addrbook_expire(b, T0 + 60), 1);
    assert_int_equal(tm2__addrbook_size(b), 0);
    tm2__addrbook_free(b);
}

/* ---- the file ------------------------------------------------------------------ */

static void file_bytes_exact(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char *path = join(dir, "addrbook.json");
    tm2__addrbook *b = book(NULL, 0);
    char hex[2 * TM2__ADDRBOOK_KEY_LEN + 1];
    sodium_bin2hex(hex, sizeof hex, KEY, sizeof KEY);
    char tail[512];
    snprintf(tail, sizeof tail,
             ",\n\t\"tm2p2p_key\": \"%s\",\n\t\"tm2p2p_tables\": {\n\t\t\"new_buckets\": 128,\n"
             "\t\t\"tried_buckets\": 32,\n\t\t\"bucket_size\": 32\n\t}\n}",
             hex);

    /* Empty book. */
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 0);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(tm2__addrbook_save(b, path, true, NULL, 0), 1);
    size_t len;
    char *got = read_all(path, &len);
    char want[4096];
    snprintf(want, sizeof want, "{\n\t\"peers\": []%s", tail);
    assert_string_equal(got, want);
    free(got);

    tm2_netaddr a = parse("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656");
    tm2_netaddr v6 = parse("g1dguq840stxgz58rd477fhfrjjgf00j4vt9mdlh@[::1]:26657");
    tm2_netaddr src = ip_only("198.18.0.7");
    assert_int_equal(tm2__addrbook_add(b, &a, NULL, T0), TM2__AB_ADDED);
    assert_int_equal(tm2__addrbook_add(b, &v6, &src, T0 + 60), TM2__AB_ADDED);
    unsigned ba = tm2__addrbook_new_bucket(b, &a, NULL), bv = tm2__addrbook_new_bucket(b, &v6, &src);
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 1);
    got = read_all(path, &len);
    snprintf(want, sizeof want,
             "{\n"
             "\t\"peers\": [\n"
             "\t\t{\n"
             "\t\t\t\"addr\": \"g1dguq840stxgz58rd477fhfrjjgf00j4vt9mdlh@[::1]:26657\",\n"
             "\t\t\t\"last_seen\": 1767225660,\n"
             "\t\t\t\"tm2p2p_src\": \"198.18.0.7\",\n"
             "\t\t\t\"tm2p2p_new\": [%u]\n"
             "\t\t},\n"
             "\t\t{\n"
             "\t\t\t\"addr\": \"g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656\",\n"
             "\t\t\t\"last_seen\": 1767225600,\n"
             "\t\t\t\"tm2p2p_new\": [%u]\n"
             "\t\t}\n"
             "\t]%s",
             bv, ba, tail);
    assert_int_equal(len, strlen(want));
    assert_string_equal(got, want);
    free(got);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 0);

    /* A dial record adds our keys, each only when set; a connection moves
     * the entry to its tried bucket. */
    tm2__addrbook_mark_attempt(b, &a.id, T0 + 100);
    tm2__addrbook_mark_failure(b, &a.id, T0 + 101);
    tm2__addrbook_mark_connected(b, &v6, T0 + 102);
    unsigned tv = tm2__addrbook_tried_bucket(b, &v6);
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 1);
    got = read_all(path, &len);
    snprintf(want, sizeof want,
             "{\n"
             "\t\"peers\": [\n"
             "\t\t{\n"
             "\t\t\t\"addr\": \"g1dguq840stxgz58rd477fhfrjjgf00j4vt9mdlh@[::1]:26657\",\n"
             "\t\t\t\"last_seen\": 1767225660,\n"
             "\t\t\t\"last_connected\": 1767225702,\n"
             "\t\t\t\"last_attempt\": 1767225702,\n"
             "\t\t\t\"tm2p2p_src\": \"198.18.0.7\",\n"
             "\t\t\t\"tm2p2p_tried\": %u\n"
             "\t\t},\n"
             "\t\t{\n"
             "\t\t\t\"addr\": \"g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656\",\n"
             "\t\t\t\"last_seen\": 1767225600,\n"
             "\t\t\t\"attempts\": 1,\n"
             "\t\t\t\"last_attempt\": 1767225701,\n"
             "\t\t\t\"tm2p2p_new\": [%u]\n"
             "\t\t}\n"
             "\t]%s",
             tv, ba, tail);
    assert_string_equal(got, want);
    free(got);

    /* Atomic replace leaves only the file behind. */
    char *names = listing(dir);
    assert_string_equal(names, "addrbook.json");
    free(names);
    tm2__addrbook_free(b);
    free(path);
    rm_dir(dir);
}

static void expect_same_entry(const tm2__addrbook_entry *x, const tm2__addrbook_entry *y)
{
    assert_non_null(y);
    assert_true(tm2_netaddr_equal(&x->addr, &y->addr));
    assert_int_equal(x->last_seen, y->last_seen);
    assert_int_equal(x->attempts, y->attempts);
    assert_int_equal(x->last_attempt, y->last_attempt);
    assert_int_equal(x->last_connected, y->last_connected);
    assert_int_equal(x->tried, y->tried);
    assert_int_equal(x->refs, y->refs);
    assert_memory_equal(x->buckets, y->buckets, sizeof x->buckets);
    assert_int_equal(x->has_src, y->has_src);
    assert_memory_equal(x->src, y->src, sizeof x->src);
}

static void file_round_trip(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char *path = join(dir, "config/addrbook.json");   /* parent created */
    tm2_netaddr self = addr_of(0);
    tm2__addrbook_config cfg = {.seed = 5};           /* a random key */
    tm2__addrbook *b = NULL;
    assert_int_equal(tm2__addrbook_new(&self.id, &cfg, &b), 0);
    for (unsigned i = 1; i <= 40; i++) {
        tm2_netaddr a = addr_of(i);
        char sip[32];
        snprintf(sip, sizeof sip, "198.%u.%u.9", 18 + i % 2, i % 3);
        tm2_netaddr src = ip_only(sip);
        assert_int_equal(tm2__addrbook_add(b, &a, i % 4 ? &src : NULL, T0 + i), TM2__AB_ADDED);
        /* Heard of from more sources: more buckets. */
        for (unsigned k = 0; k < 30 && i % 7 == 0; k++) {
            snprintf(sip, sizeof sip, "127.8.%u.%u", i, k + 1);
            tm2_netaddr more = ip_only(sip);
            tm2__addrbook_add(b, &a, &more, T0 + i);
        }
        if (i % 3 == 0)
            tm2__addrbook_mark_failure(b, &a.id, T0 + 100 + i);
        if (i % 5 == 0)
            tm2__addrbook_mark_connected(b, &a, T0 + 200 + i);
    }
    unsigned multi = 0;
    for (size_t i = 0; i < tm2__addrbook_size(b); i++)
        multi += tm2__addrbook_at(b, i)->refs > 1;
    assert_true(multi > 0);
    assert_int_equal(tm2__addrbook_tried_count(b), 8);
    char why[256];
    assert_int_equal(tm2__addrbook_save(b, path, false, why, sizeof why), 1);

    /* Read back by a book with another key: the file's key wins and every
     * entry is where it was. */
    tm2__addrbook *c = book(&self.id, 0);
    int n = tm2__addrbook_load(c, path, T0 + 1000, why, sizeof why);
    assert_int_equal(n, 40);
    assert_non_null(strstr(why, "loaded 40 of 40 entries (8 tried)"));
    assert_false(tm2__addrbook_dirty(c));
    assert_memory_equal(tm2__addrbook_key(b), tm2__addrbook_key(c), TM2__ADDRBOOK_KEY_LEN);
    CHECK_BOOK(c);
    for (unsigned i = 1; i <= 40; i++)
        expect_same_entry(entry(b, i), entry(c, i));
    assert_int_equal(tm2__addrbook_new_count(c), tm2__addrbook_new_count(b));
    tm2__addrbook_geometry g;
    tm2__addrbook_get_geometry(b, &g);
    for (uint32_t k = 0; k < g.new_buckets; k++)
        assert_int_equal(tm2__addrbook_bucket_count(b, false, k), tm2__addrbook_bucket_count(c, false, k));
    for (uint32_t k = 0; k < g.tried_buckets; k++)
        assert_int_equal(tm2__addrbook_bucket_count(b, true, k), tm2__addrbook_bucket_count(c, true, k));
    /* Same book, same bytes. */
    char *t1, *t2;
    size_t l1, l2;
    assert_int_equal(tm2__addrbook_encode(b, &t1, &l1, NULL), 0);
    assert_int_equal(tm2__addrbook_encode(c, &t2, &l2, NULL), 0);
    assert_int_equal(l1, l2);
    assert_string_equal(t1, t2);
    free(t1);
    free(t2);

    /* Loading needs an empty book. */
    assert_int_equal(tm2__addrbook_load(c, path, T0, why, sizeof why), TM2_ESTATE);
    assert_int_equal(tm2__addrbook_load_buffer(c, "{}", 2, T0, NULL, 0), TM2_ESTATE);
    tm2__addrbook_free(c);

    /* Other tables: the key stays, the entries are placed anew. */
    c = book_geo(&self.id, 0, 64, 16, 16);
    assert_int_equal(tm2__addrbook_load(c, path, T0 + 1000, why, sizeof why), 40);
    assert_true(tm2__addrbook_dirty(c));
    assert_memory_equal(tm2__addrbook_key(b), tm2__addrbook_key(c), TM2__ADDRBOOK_KEY_LEN);
    assert_int_equal(tm2__addrbook_tried_count(c), 8);
    for (unsigned i = 1; i <= 40; i++) {
        const tm2__addrbook_entry *y = entry(c, i);
        assert_non_null(y);
        if (!y->tried) {
            /* One bucket, from its recorded source. */
            tm2_netaddr s;
            memset(&s, 0, sizeof s);
            memcpy(s.ip, y->src, 16);
            assert_int_equal(y->refs, 1);
            assert_int_equal(y->buckets[0], tm2__addrbook_new_bucket(c, &y->addr, y->has_src ? &s : NULL));
        }
    }
    CHECK_BOOK(c);
    tm2__addrbook_free(c);
    tm2__addrbook_free(b);
    free(path);
    rm_dir(dir);
}

static void save_generation(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1), a2 = addr_of(2);
    tm2__addrbook_add(b, &a, NULL, T0);
    char *text;
    size_t len;
    uint64_t gen;
    assert_int_equal(tm2__addrbook_encode(b, &text, &len, &gen), 0);
    free(text);
    /* A change between the encode and the write keeps the book dirty. */
    tm2__addrbook_add(b, &a2, NULL, T0);
    tm2__addrbook_saved(b, gen);
    assert_true(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_encode(b, &text, &len, &gen), 0);
    free(text);
    tm2__addrbook_saved(b, gen);
    assert_false(tm2__addrbook_dirty(b));
    tm2__addrbook_free(b);
}

static void write_failures(void **state)
{
    (void)state;
    char *dir = tmpdir();
    /* The parent is a regular file: nothing can be created. */
    char *blocker = join(dir, "notadir");
    write_text(blocker, "x", 1);
    char *path = join(blocker, "addrbook.json");
    char why[256];
    assert_int_equal(tm2__addrbook_write_file(path, "{}", 2, why, sizeof why), TM2_EIO);
    assert_true(strlen(why) > 0);
    /* The target is a directory: the rename fails, the temp file goes. */
    char *d2 = join(dir, "target");
    assert_int_equal(mkdir(d2, 0755), 0);
    char *inner = join(d2, "keep");
    write_text(inner, "x", 1);
    assert_int_equal(tm2__addrbook_write_file(d2, "{}", 2, why, sizeof why), TM2_EIO);
    char *names = listing(dir);
    assert_string_equal(names, "notadir,target");
    free(names);
    free(inner);
    free(d2);
    free(path);
    free(blocker);
    rm_dir(dir);
}

/* The bound keeps a full book's file under the loader's limit. */
static void full_book_fits(void **state)
{
    (void)state;
    tm2__addrbook_config c = {.max_entries = TM2__ADDRBOOK_MAX_LIMIT};
    tm2__addrbook *b = NULL;
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), 0);
    tm2_id id;
    make_id(1, &id);
    /* Longest texts: full IPv6, five-digit port, every number huge. The
     * IDs only need to differ, so vary the last data character. */
    for (unsigned i = 0; i < TM2__ADDRBOOK_MAX_LIMIT; i++) {
        char s[TM2_NETADDR_STRLEN + 1];
        snprintf(s, sizeof s, "%s@[fd00:1234:5678:9abc:def0:1234:%x:%x]:65535", id.s,
                 0x1000 + i / 4096, 0x1000 + i % 4096);
        tm2_netaddr a = parse(s);
        /* Distinct IDs: flip bytes of the key seed. */
        make_id(i + 1, &a.id);
        assert_int_equal(tm2__addrbook_add(b, &a, NULL, TM2__ADDRBOOK_TIME_MAX), TM2__AB_ADDED);
        tm2__addrbook_mark_failure(b, &a.id, TM2__ADDRBOOK_TIME_MAX);
        tm2__addrbook_mark_connected(b, &a, TM2__ADDRBOOK_TIME_MAX);
        tm2__addrbook_mark_failure(b, &a.id, TM2__ADDRBOOK_TIME_MAX);
    }
    char *text;
    size_t len;
    assert_int_equal(tm2__addrbook_encode(b, &text, &len, NULL), 0);
    assert_true(len <= TM2__ADDRBOOK_FILE_MAX);
    tm2__addrbook *l = NULL;
    assert_int_equal(tm2__addrbook_new(NULL, &c, &l), 0);
    assert_int_equal(tm2__addrbook_load_buffer(l, text, len, TM2__ADDRBOOK_TIME_MAX, NULL, 0),
                     TM2__ADDRBOOK_MAX_LIMIT);
    free(text);
    tm2__addrbook_free(l);
    tm2__addrbook_free(b);
}

/* ---- loading --------------------------------------------------------------------- */

static int load_text(tm2__addrbook *b, const char *text, int64_t now, char *why, size_t why_len)
{
    return tm2__addrbook_load_buffer(b, text, strlen(text), now, why, why_len);
}

static void load_reference_file(void **state)
{
    (void)state;
    /* What the reference writes (its entry order is random). */
    static const char text[] =
        "{\n"
        "\t\"peers\": [\n"
        "\t\t{\n"
        "\t\t\t\"addr\": \"g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656\",\n"
        "\t\t\t\"last_seen\": 1767225600\n"
        "\t\t},\n"
        "\t\t{\n"
        "\t\t\t\"addr\": \"g1dguq840stxgz58rd477fhfrjjgf00j4vt9mdlh@[::1]:26657\",\n"
        "\t\t\t\"last_seen\": 1767225660\n"
        "\t\t}\n"
        "\t]\n"
        "}";
    tm2__addrbook *b = book(NULL, 0);
    char why[256];
    assert_int_equal(load_text(b, text, T0 + 3600, why, sizeof why), 2);
    /* Migrated: placed by our key, which the file lacks, so it is to be
     * written. */
    assert_true(tm2__addrbook_dirty(b));
    assert_memory_equal(tm2__addrbook_key(b), KEY, sizeof KEY);
    tm2_netaddr a = parse("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656");
    const tm2__addrbook_entry *e = tm2__addrbook_find(b, &a.id);
    assert_non_null(e);
    assert_int_equal(e->last_seen, T0);
    assert_int_equal(e->attempts, 0);
    assert_false(e->tried);
    assert_false(e->has_src);
    assert_int_equal(e->refs, 1);
    assert_int_equal(e->buckets[0], tm2__addrbook_new_bucket(b, &a, NULL));
    CHECK_BOOK(b);
    /* Re-encoded it is the reference's entries, newest first, and ours. */
    char *out;
    size_t len;
    assert_int_equal(tm2__addrbook_encode(b, &out, &len, NULL), 0);
    const char *v6 = strstr(out, "[::1]:26657\",\n\t\t\t\"last_seen\": 1767225660,\n\t\t\t\"tm2p2p_new\": [");
    const char *v4 = strstr(out, "127.0.0.1:26656\",\n\t\t\t\"last_seen\": 1767225600,\n\t\t\t\"tm2p2p_new\": [");
    assert_true(v6 && v4 && v6 < v4);
    assert_non_null(strstr(out, "\"tm2p2p_key\": \""));
    free(out);
    tm2__addrbook_free(b);
}

static void load_skips_bad_entries(void **state)
{
    (void)state;
    tm2_netaddr self = addr_of(0), a1 = addr_of(1), a2 = addr_of(2);
    char text[4096], why[256];
    snprintf(text, sizeof text,
             "{\"peers\": ["
             "{\"addr\": \"%s@localhost:26656\", \"last_seen\": 5},"      /* host name */
             "{\"addr\": \"not an address\"},"
             "{\"addr\": \"%s@0.0.0.0:26656\", \"last_seen\": 5},"        /* unspecified */
             "{\"addr\": \"%s@[2001:db8::5]:26656\", \"last_seen\": 5},"  /* documentation */
             "{\"addr\": \"%s@127.0.0.1:1\", \"last_seen\": 5},"          /* ourselves */
             "{\"last_seen\": 5},"                                          /* no addr */
             "null,"
             "{\"addr\": \"%s@127.0.0.1:26657\", \"last_seen\": %d},"
             "{\"addr\": \"%s@127.0.0.2:26658\", \"last_seen\": 0}"         /* 0 -> now */
             "]}",
             a1.id.s, a1.id.s, a1.id.s, self.id.s, a1.id.s, T0, a2.id.s);
    tm2__addrbook *b = book(&self.id, 0);
    assert_int_equal(load_text(b, text, T0 + 50, why, sizeof why), 2);
    assert_non_null(strstr(why, "loaded 2 of 9"));
    assert_true(tm2__addrbook_dirty(b));
    assert_int_equal(entry(b, 1)->addr.port, 26657);
    assert_int_equal(entry(b, 1)->last_seen, T0);
    assert_int_equal(entry(b, 2)->last_seen, T0 + 50);
    tm2__addrbook_free(b);
}

static void load_times_clamped(void **state)
{
    (void)state;
    tm2_netaddr a1 = addr_of(1), a2 = addr_of(2);
    char text[2048];
    snprintf(text, sizeof text,
             "{\"peers\": ["
             "{\"addr\": \"%s@127.0.0.1:1\", \"last_seen\": %d, \"attempts\": 3,"
             " \"last_attempt\": %d, \"last_connected\": -7},"
             "{\"addr\": \"%s@127.0.0.1:2\", \"last_seen\": -5}"
             "]}",
             a1.id.s, T0 + 999, T0 + 999, a2.id.s);
    tm2__addrbook *b = book(NULL, 0);
    assert_int_equal(load_text(b, text, T0, NULL, 0), 2);
    const tm2__addrbook_entry *e = entry(b, 1);
    assert_int_equal(e->last_seen, T0);
    assert_int_equal(e->attempts, 3);
    assert_int_equal(e->last_attempt, T0);
    assert_int_equal(e->last_connected, 0);
    assert_int_equal(entry(b, 2)->last_seen, 1);
    assert_true(tm2__addrbook_dirty(b));
    tm2__addrbook_free(b);
}

static void load_duplicates_and_bound(void **state)
{
    (void)state;
    tm2_netaddr a1 = addr_of(1);
    char text[8192];
    size_t n = (size_t)snprintf(text, sizeof text,
                                "{\"peers\": ["
                                "{\"addr\": \"%s@127.0.0.1:1\", \"last_seen\": %d},"
                                "{\"addr\": \"%s@127.0.0.1:2\", \"last_seen\": %d}",
                                a1.id.s, T0 + 1, a1.id.s, T0 + 2);
    for (unsigned i = 2; i <= 6; i++) {
        tm2_netaddr a = addr_of(i);
        n += (size_t)snprintf(text + n, sizeof text - n,
                              ",{\"addr\": \"%s@127.0.0.%u:26656\", \"last_seen\": %u}", a.id.s,
                              i, T0 + 10 * i);
    }
    snprintf(text + n, sizeof text - n, "]}");
    /* Bound 4: one entry per ID (the newer address of 1), then the four
     * newest: 6, 5, 4, 3. */
    tm2__addrbook *b = book(NULL, 4);
    char why[256];
    assert_int_equal(load_text(b, text, T0 + 100, why, sizeof why), 4);
    assert_non_null(strstr(why, "loaded 4 of 7"));
    assert_null(entry(b, 1));
    assert_null(entry(b, 2));
    for (unsigned i = 3; i <= 6; i++)
        assert_non_null(entry(b, i));
    tm2__addrbook_free(b);

    b = book(NULL, 0);
    assert_int_equal(load_text(b, text, T0 + 100, NULL, 0), 6);
    assert_int_equal(entry(b, 1)->addr.port, 2);
    tm2__addrbook_free(b);
}

static void load_go_json_rules(void **state)
{
    (void)state;
    tm2_netaddr a1 = addr_of(1), a2 = addr_of(2);
    char text[2048];
    tm2__addrbook *b;

    /* Keys match case-insensitively; unknown keys are ignored, whatever
     * they hold (our own keys too, if malformed); a later duplicate wins. */
    snprintf(text, sizeof text,
             "{\"extra\": {\"x\": [1, 2]}, \"PEERS\": [], \"Peers\": ["
             "{\"ADDR\": \"%s@127.0.0.1:1\", \"Last_Seen\": %d, \"attempts\": \"lots\","
             " \"last_attempt\": 1.5, \"note\": null}]}",
             a1.id.s, T0);
    b = book(NULL, 0);
    assert_int_equal(load_text(b, text, T0, NULL, 0), 1);
    assert_int_equal(entry(b, 1)->attempts, 0);
    assert_int_equal(entry(b, 1)->last_attempt, 0);
    assert_true(tm2__addrbook_dirty(b));   /* the first "peers" was dropped */
    tm2__addrbook_free(b);

    /* null leaves a field as it was. */
    snprintf(text, sizeof text,
             "{\"peers\": [{\"addr\": \"%s@127.0.0.1:1\", \"addr\": null, \"last_seen\": %d,"
             " \"last_seen\": null}]}",
             a2.id.s, T0);
    b = book(NULL, 0);
    assert_int_equal(load_text(b, text, T0 + 9, NULL, 0), 1);
    assert_int_equal(entry(b, 2)->last_seen, T0);
    tm2__addrbook_free(b);

    /* Empty shapes that Go accepts. */
    static const char *const empty[] = {
        "null", "{}", "{\"peers\": null}", "{\"peers\": []}", " \n{\"other\": 1}\n\t ",
    };
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        b = book(NULL, 0);
        assert_int_equal(load_text(b, empty[i], T0, NULL, 0), 0);
        tm2__addrbook_free(b);
    }
    /* A trailing null "peers" empties the list. */
    snprintf(text, sizeof text,
             "{\"peers\": [{\"addr\": \"%s@127.0.0.1:1\", \"last_seen\": 1}], \"peers\": null}",
             a1.id.s);
    b = book(NULL, 0);
    assert_int_equal(load_text(b, text, T0, NULL, 0), 0);
    assert_true(tm2__addrbook_dirty(b));
    tm2__addrbook_free(b);
}

/* Copies fmt into out with each '$' replaced by arg. */
static void subst(const char *fmt, const char *arg, char *out, size_t cap)
{
    size_t n = 0, al = strlen(arg);
    for (; *fmt; fmt++) {
        if (*fmt == '$') {
            assert_true(n + al < cap);
            memcpy(out + n, arg, al);
            n += al;
        } else {
            assert_true(n + 1 < cap);
            out[n++] = *fmt;
        }
    }
    out[n] = '\0';
}

static void load_corrupt_shapes(void **state)
{
    (void)state;
    tm2_netaddr a1 = addr_of(1);
    char good[256];
    snprintf(good, sizeof good, "{\"addr\": \"%s@127.0.0.1:1\", \"last_seen\": 1}", a1.id.s);
    /* Each is a type error somewhere, which makes Go reject the whole file,
     * good entries included. */
    static const char *const fmt[] = {
        "",
        "   ",
        "not json",
        "{\"peers\": [$]",
        "{\"peers\": [$]} x",
        "{\"peers\": [$]}{}",
        "[$]",
        "\"$\"",
        "42",
        "{\"peers\": \"$\"}",
        "{\"peers\": {\"a\": $}}",
        "{\"peers\": [$, 7]}",
        "{\"peers\": [$, [1]]}",
        "{\"peers\": [$, {\"addr\": 5}]}",
        "{\"peers\": [$, {\"addr\": [\"x\"]}]}",
        "{\"peers\": [$, {\"last_seen\": \"1\"}]}",
        "{\"peers\": [$, {\"last_seen\": 1.5}]}",
        "{\"peers\": [$, {\"last_seen\": 1e300}]}",
        "{\"peers\": [$, {\"last_seen\": true}]}",
        "{\"peers\": [1], \"peers\": [$]}",
    };
    for (size_t i = 0; i < sizeof fmt / sizeof fmt[0]; i++) {
        char text[512], why[256];
        subst(fmt[i], good, text, sizeof text);
        tm2__addrbook *b = book(NULL, 0);
        int rc = load_text(b, text, T0, why, sizeof why);
        if (rc != TM2_EDECODE)
            fail_msg("case %zu (%s): got %d", i, text, rc);
        assert_non_null(strstr(why, "corrupt"));
        assert_int_equal(tm2__addrbook_size(b), 0);
        /* Still usable. */
        assert_int_equal(tm2__addrbook_add(b, &a1, NULL, T0), TM2__AB_ADDED);
        tm2__addrbook_free(b);
    }
}

static void corrupt_file_moved_aside(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char *path = join(dir, "addrbook.json");
    char *bad = join(dir, "addrbook.json.corrupt");
    static const char junk[] = "{\"peers\": [ this is not json";
    write_text(path, junk, sizeof junk - 1);

    tm2__addrbook *b = book(NULL, 0);
    char why[512];
    assert_int_equal(tm2__addrbook_load(b, path, T0, why, sizeof why), TM2_EDECODE);
    assert_non_null(strstr(why, "corrupt"));
    assert_non_null(strstr(why, bad));
    assert_int_equal(access(path, F_OK), -1);
    size_t len;
    char *moved = read_all(bad, &len);
    assert_int_equal(len, sizeof junk - 1);
    assert_memory_equal(moved, junk, len);
    free(moved);
    assert_int_equal(tm2__addrbook_size(b), 0);

    /* The node carries on with an empty book and saves a good one. */
    tm2_netaddr a = addr_of(1);
    tm2__addrbook_add(b, &a, NULL, T0);
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 1);
    tm2__addrbook_free(b);
    b = book(NULL, 0);
    assert_int_equal(tm2__addrbook_load(b, path, T0, NULL, 0), 1);
    tm2__addrbook_free(b);

    /* A second corrupt file replaces the older copy. */
    write_text(path, "[]", 2);
    b = book(NULL, 0);
    assert_int_equal(tm2__addrbook_load(b, path, T0, why, sizeof why), TM2_EDECODE);
    moved = read_all(bad, &len);
    assert_string_equal(moved, "[]");
    free(moved);
    char *names = listing(dir);
    assert_string_equal(names, "addrbook.json.corrupt");
    free(names);
    tm2__addrbook_free(b);
    free(bad);
    free(path);
    rm_dir(dir);
}

static void oversize_file(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char *path = join(dir, "addrbook.json");
    /* Valid JSON, but padded past the limit. */
    size_t len = TM2__ADDRBOOK_FILE_MAX + 1;
    char *big = malloc(len + 1);
    memset(big, ' ', len);
    memcpy(big, "{\"peers\": []}", 13);
    big[len] = '\0';
    write_text(path, big, len);

    tm2__addrbook *b = book(NULL, 0);
    char why[512];
    assert_int_equal(tm2__addrbook_load(b, path, T0, why, sizeof why), TM2_ETOOBIG);
    assert_non_null(strstr(why, ".corrupt"));
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(tm2__addrbook_load_buffer(b, big, len, T0, why, sizeof why), TM2_ETOOBIG);
    /* At the limit it is read. */
    assert_int_equal(tm2__addrbook_load_buffer(b, big, len - 1, T0, NULL, 0), 0);
    tm2__addrbook_free(b);
    free(big);
    free(path);
    rm_dir(dir);
}

static void missing_and_unreadable(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char *path = join(dir, "addrbook.json");
    tm2__addrbook *b = book(NULL, 0);
    char why[256];
    assert_int_equal(tm2__addrbook_load(b, path, T0, why, sizeof why), TM2_ENOTFOUND);
    assert_non_null(strstr(why, "does not exist"));
    /* A directory in its place is an I/O error and is left alone. */
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(tm2__addrbook_load(b, path, T0, why, sizeof why), TM2_EIO);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    tm2__addrbook_free(b);
    free(path);
    rm_dir(dir);
}

/* ---- connection marks (the reference v1.7.1 store) ---------------------------- */













/* Marks are renewed every round; only a new one, or one half a lifetime
 * newer than the last written, makes the book dirty. */
static void marks_saved_twice_a_day(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1);
    tm2__addrbook_add(b, &a, NULL, T0);
    assert_int_equal(tm2__addrbook_mark_connected(b, &a, T0), 0);
    assert_true(tm2__addrbook_dirty(b));
    char *text;
    size_t len;
    uint64_t gen;
    assert_int_equal(tm2__addrbook_encode(b, &text, &len, &gen), 0);
    free(text);
    tm2__addrbook_saved(b, gen);

    assert_int_equal(tm2__addrbook_mark_connected(b, &a, T0 + 3), 0);
    assert_int_equal(entry(b, 1)->last_connected, T0 + 3);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_mark_connected(b, &a, T0 + TM2__ADDRBOOK_MARK_SLACK - 1), 0);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_mark_connected(b, &a, T0 + TM2__ADDRBOOK_MARK_SLACK), 0);
    assert_true(tm2__addrbook_dirty(b));

    /* A connection after failures is saved at once (the count reset). */
    assert_int_equal(tm2__addrbook_encode(b, &text, &len, &gen), 0);
    free(text);
    tm2__addrbook_saved(b, gen);
    tm2__addrbook_mark_failure(b, &a.id, T0 + TM2__ADDRBOOK_MARK_SLACK + 5);
    tm2__addrbook_saved(b, tm2__addrbook_gen(b));
    assert_int_equal(tm2__addrbook_mark_connected(b, &a, T0 + TM2__ADDRBOOK_MARK_SLACK + 9), 0);
    assert_true(tm2__addrbook_dirty(b));

    /* An address the book does not hold is left out. */
    tm2__addrbook *c = book(NULL, 0);
    assert_int_equal(tm2__addrbook_mark_connected(c, &a, T0), TM2_ENOTFOUND);
    assert_int_equal(tm2__addrbook_size(c), 0);
    assert_false(tm2__addrbook_dirty(c));
    tm2__addrbook_free(c);
    tm2__addrbook_free(b);
}

/* The file's mark: the reference's "last_connected", typed like last_seen;
 * "last_success" of older tm2p2p files stands in when it is absent. */
static void marks_in_the_file(void **state)
{
    (void)state;
    tm2_netaddr a1 = addr_of(1), a2 = addr_of(2), a3 = addr_of(3);
    char text[2048];
    snprintf(text, sizeof text,
             "{\"peers\": ["
             "{\"addr\": \"%s@127.0.0.1:1\", \"last_seen\": %d, \"last_connected\": %d},"
             "{\"addr\": \"%s@127.0.0.1:2\", \"last_seen\": %d, \"last_success\": %d},"
             "{\"addr\": \"%s@127.0.0.1:3\", \"last_seen\": %d, \"last_success\": %d,"
             " \"last_connected\": %d}]}",
             a1.id.s, T0, T0 + 5, a2.id.s, T0, T0 + 6, a3.id.s, T0, T0 + 7, T0 + 8);
    tm2__addrbook *b = book(NULL, 0);
    assert_int_equal(load_text(b, text, T0 + 100, NULL, 0), 3);
    assert_int_equal(entry(b, 1)->last_connected, T0 + 5);
    assert_int_equal(entry(b, 2)->last_connected, T0 + 6);
    assert_int_equal(entry(b, 3)->last_connected, T0 + 8);
    assert_true(tm2__addrbook_dirty(b));    /* rewritten under the reference's name */
    char *out;
    size_t len;
    assert_int_equal(tm2__addrbook_encode(b, &out, &len, NULL), 0);
    assert_null(strstr(out, "last_success"));
    assert_non_null(strstr(out, "\"last_connected\": 1767225606"));
    free(out);
    tm2__addrbook_free(b);

    /* A wrong type makes the reference reject the file, and so do we. */
    static const char *const bad[] = {"\"soon\"", "1.5", "true", "[1]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text,
                 "{\"peers\": [{\"addr\": \"%s@127.0.0.1:1\", \"last_connected\": %s}]}", a1.id.s,
                 bad[i]);
        b = book(NULL, 0);
        assert_int_equal(load_text(b, text, T0, NULL, 0), TM2_EDECODE);
        assert_int_equal(tm2__addrbook_size(b), 0);
        tm2__addrbook_free(b);
    }
    /* null leaves it unset. */
    snprintf(text, sizeof text,
             "{\"peers\": [{\"addr\": \"%s@127.0.0.1:1\", \"last_connected\": null}]}", a1.id.s);
    b = book(NULL, 0);
    assert_int_equal(load_text(b, text, T0, NULL, 0), 1);
    assert_int_equal(entry(b, 1)->last_connected, 0);
    tm2__addrbook_free(b);
}

/* A book the reference v1.7.1 wrote (tests/vectors/upstream_v1.7.1_addrbook.json):
 * every entry and mark as it wrote them; the entries it held a connection to
 * go to the tried table, the rest to new; written back, the same fields and
 * ours, and read back as written. */
static void upstream_v171_book(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        int64_t seen, connected;
    } want[] = {
        {"g1xdaasmj4yr0ywstapyxw2xx9cmjcpcrtr7wjhv@198.18.0.4:26656", 1796610690, 1796610690},
        {"g17yzcpcgqswzzz95e50gd25u4u5e9wvkahk86k8@127.0.0.5:26657", 1796610690, 0},
        {"g1rs8s0ssrg4den206a3vvnyygy5x3cgpgag6jn8@127.0.0.1:26656", 1767225600, 1767225700},
        {"g1472x3rwt3dulachmxakh4yu7xrxddvycyrjzcz@127.0.0.2:26656", 1796610690, 0},
        {"g1jm8d2t72rxltukpvnj3du37z7fw9a3wdyetlg6@198.18.0.3:26656", 1767229200, 1796610690},
    };
    const int64_t now = 1796610690 + 3600;
    size_t len;
    char *text = read_all(tv_path("upstream_v1.7.1_addrbook.json"), &len);
    tm2__addrbook *b = book(NULL, 0);
    char why[256];
    assert_int_equal(tm2__addrbook_load_buffer(b, text, len, now, why, sizeof why), 5);
    assert_non_null(strstr(why, "loaded 5 of 5 entries (3 tried)"));
    assert_true(tm2__addrbook_dirty(b));   /* migrated */
    assert_int_equal(tm2__addrbook_tried_count(b), 3);
    assert_int_equal(tm2__addrbook_new_count(b), 2);
    CHECK_BOOK(b);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        tm2_netaddr a = parse(want[i].addr);
        const tm2__addrbook_entry *e = tm2__addrbook_find(b, &a.id);
        assert_non_null(e);
        assert_true(tm2_netaddr_equal(&e->addr, &a));
        assert_int_equal(e->last_seen, want[i].seen);
        assert_int_equal(e->last_connected, want[i].connected);
        assert_int_equal(e->attempts, 0);
        assert_int_equal(e->last_attempt, 0);
        /* The marks from the file count: two live, one lapsed, two never. */
        assert_true(tm2__addrbook_connected(e, now) == (want[i].connected == 1796610690));
        /* Ever connected: tried, in its bucket; else new, its own source. */
        assert_int_equal(e->tried, want[i].connected != 0);
        if (e->tried)
            assert_int_equal(e->buckets[0], tm2__addrbook_tried_bucket(b, &a));
        else
            assert_true(e->refs == 1 && e->buckets[0] == tm2__addrbook_new_bucket(b, &a, NULL));
    }
    /* Written back: the same entries and fields, plus ours. */
    char *out;
    size_t out_len;
    assert_int_equal(tm2__addrbook_encode(b, &out, &out_len, NULL), 0);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char ent[256];
        if (want[i].connected)
            snprintf(ent, sizeof ent,
                     "\"addr\": \"%s\",\n\t\t\t\"last_seen\": %lld,\n\t\t\t\"last_connected\": %lld",
                     want[i].addr, (long long)want[i].seen, (long long)want[i].connected);
        else
            snprintf(ent, sizeof ent, "\"addr\": \"%s\",\n\t\t\t\"last_seen\": %lld",
                     want[i].addr, (long long)want[i].seen);
        assert_non_null(strstr(text, ent));
        assert_non_null(strstr(out, ent));
    }
    /* Read back as written: clean, the same tables, the same bytes. */
    tm2__addrbook *c = book_geo(NULL, 0, 0, 0, 0);
    assert_int_equal(tm2__addrbook_load_buffer(c, out, out_len, now, NULL, 0), 5);
    assert_false(tm2__addrbook_dirty(c));
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        tm2_netaddr a = parse(want[i].addr);
        expect_same_entry(tm2__addrbook_find(b, &a.id), tm2__addrbook_find(c, &a.id));
    }
    char *out2;
    size_t out2_len;
    assert_int_equal(tm2__addrbook_encode(c, &out2, &out2_len, NULL), 0);
    assert_int_equal(out2_len, out_len);
    assert_string_equal(out2, out);
    free(out2);
    free(out);
    free(text);
    tm2__addrbook_free(c);
    tm2__addrbook_free(b);
}

/* What the reference's decoder (encoding/json into its storeJSON, keys
 * matched case-insensitively, unknown keys skipped) sees in our file: one
 * "peers" list; per entry one "addr" string, one integer "last_seen", and
 * "last_connected" only as a positive integer; none of our keys matches
 * one of its names. */
static void file_decodes_as_reference(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    honest(b, 50, 10);
    tm2_netaddr a = addr_of(3);
    tm2__addrbook_mark_failure(b, &a.id, T0 + 5);
    char *text;
    size_t len;
    assert_int_equal(tm2__addrbook_encode(b, &text, &len, NULL), 0);
    cJSON *root = cJSON_ParseWithLength(text, len);
    assert_non_null(root);
    assert_true(cJSON_IsObject(root));
    static const char *const ref_top[] = {"peers"};
    static const char *const ref_entry[] = {"addr", "last_seen", "last_connected"};
    unsigned peers_keys = 0;
    const cJSON *peers = NULL;
    for (const cJSON *f = root->child; f; f = f->next) {
        if (strcasecmp(f->string, ref_top[0]) == 0) {
            peers_keys++;
            peers = f;
        } else {
            assert_int_equal(strncmp(f->string, "tm2p2p_", 7), 0);
        }
    }
    assert_int_equal(peers_keys, 1);
    assert_true(cJSON_IsArray(peers));
    size_t n = 0;
    for (const cJSON *e = peers->child; e; e = e->next, n++) {
        assert_true(cJSON_IsObject(e));
        unsigned seen[3] = {0};
        for (const cJSON *f = e->child; f; f = f->next) {
            for (int k = 0; k < 3; k++) {
                if (strcasecmp(f->string, ref_entry[k]) != 0)
                    continue;
                seen[k]++;
                if (k == 0) {
                    assert_true(cJSON_IsString(f));
                } else {
                    assert_true(cJSON_IsNumber(f));
                    assert_true(f->valuedouble == (double)(int64_t)f->valuedouble);
                    if (k == 2)
                        assert_true(f->valuedouble > 0);   /* omitempty */
                }
            }
        }
        assert_int_equal(seen[0], 1);
        assert_int_equal(seen[1], 1);
        assert_true(seen[2] <= 1);
        tm2_netaddr x;
        assert_int_equal(tm2_netaddr_parse(cJSON_GetObjectItem(e, "addr")->valuestring, 0, &x), 0);
    }
    assert_int_equal(n, 50);
    cJSON_Delete(root);
    free(text);
    tm2__addrbook_free(b);
}

/* Our keys, when malformed, are ignored (the reference would skip them):
 * the book is placed anew, never refused. */
static void load_our_keys_malformed(void **state)
{
    (void)state;
    tm2_netaddr a1 = addr_of(1), a2 = addr_of(2);
    char text[2048];
    snprintf(text, sizeof text,
             "{\"tm2p2p_key\": \"nothex\", \"tm2p2p_tables\": [1, 2], \"peers\": ["
             "{\"addr\": \"%s@127.0.0.1:1\", \"last_seen\": %d, \"tm2p2p_src\": \"localhost\","
             " \"tm2p2p_new\": \"lots\", \"tm2p2p_tried\": -4},"
             "{\"addr\": \"%s@127.0.0.2:2\", \"last_seen\": %d, \"tm2p2p_src\": [1],"
             " \"tm2p2p_new\": [1e9, -1, 3.5, \"x\", null, 7, 7], \"last_connected\": %d}]}",
             a1.id.s, T0, a2.id.s, T0, T0);
    tm2__addrbook *b = book(NULL, 0);
    assert_int_equal(load_text(b, text, T0 + 10, NULL, 0), 2);
    assert_true(tm2__addrbook_dirty(b));
    assert_memory_equal(tm2__addrbook_key(b), KEY, sizeof KEY);
    assert_false(entry(b, 1)->has_src);
    assert_false(entry(b, 1)->tried);
    assert_true(entry(b, 2)->tried);   /* connected once: migrated to tried */
    CHECK_BOOK(b);
    tm2__addrbook_free(b);

    /* A good key with a tried bucket that does not match: placed where the
     * key says, and rewritten. */
    char hex[2 * TM2__ADDRBOOK_KEY_LEN + 1];
    sodium_bin2hex(hex, sizeof hex, KEY, sizeof KEY);
    b = book(NULL, 0);
    char as[TM2_NETADDR_STRLEN + 1];
    snprintf(as, sizeof as, "%s@127.0.0.1:1", a1.id.s);
    a1 = parse(as);
    unsigned tb = tm2__addrbook_tried_bucket(b, &a1);
    snprintf(text, sizeof text,
             "{\"peers\": [{\"addr\": \"%s\", \"last_seen\": %d, \"last_connected\": %d,"
             " \"tm2p2p_tried\": %u}], \"tm2p2p_key\": \"%s\", \"tm2p2p_tables\":"
             " {\"new_buckets\": 128, \"tried_buckets\": 32, \"bucket_size\": 32}}",
             as, T0, T0, (tb + 1) % 32, hex);
    assert_int_equal(load_text(b, text, T0 + 10, NULL, 0), 1);
    const tm2__addrbook_entry *e = tm2__addrbook_find(b, &a1.id);
    assert_non_null(e);
    assert_true(e->tried);
    assert_int_equal(e->buckets[0], tm2__addrbook_tried_bucket(b, &e->addr));
    assert_true(tm2__addrbook_dirty(b));
    CHECK_BOOK(b);
    tm2__addrbook_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_rules),
        cmocka_unit_test(add_new_and_refresh),
        cmocka_unit_test(add_rejects),
        cmocka_unit_test(new_address_for_known_id),
        cmocka_unit_test(pool_bound),
        cmocka_unit_test(remove_and_iterate),
        cmocka_unit_test(backoff_schedule),
        cmocka_unit_test(select_candidates),
        cmocka_unit_test(select_chance),
        cmocka_unit_test(select_spreads_across_groups),
        cmocka_unit_test(sample_rules),
        cmocka_unit_test(groups),
        cmocka_unit_test(placement_deterministic),
        cmocka_unit_test(flood_one_source_one_24),
        cmocka_unit_test(flood_bogus_across_15),
        cmocka_unit_test(refs_from_many_sources),
        cmocka_unit_test(tried_test_before_evict),
        cmocka_unit_test(tried_survive_flood),
        cmocka_unit_test(aging_out),
        cmocka_unit_test(file_bytes_exact),
        cmocka_unit_test(file_round_trip),
        cmocka_unit_test(save_generation),
        cmocka_unit_test(write_failures),
        cmocka_unit_test(full_book_fits),
        cmocka_unit_test(load_reference_file),
        cmocka_unit_test(load_skips_bad_entries),
        cmocka_unit_test(load_times_clamped),
        cmocka_unit_test(load_duplicates_and_bound),
        cmocka_unit_test(load_go_json_rules),
        cmocka_unit_test(load_corrupt_shapes),
        cmocka_unit_test(corrupt_file_moved_aside),
        cmocka_unit_test(oversize_file),
        cmocka_unit_test(missing_and_unreadable),
        cmocka_unit_test(marks_saved_twice_a_day),
        cmocka_unit_test(marks_in_the_file),
        cmocka_unit_test(upstream_v171_book),
        cmocka_unit_test(file_decodes_as_reference),
        cmocka_unit_test(load_our_keys_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
