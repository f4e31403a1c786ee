/* Address book: add/replace/evict rules, dial record and back-off, candidate
 * order, aging out, and the file: exact bytes, atomic replace, the
 * reference's load rules, corrupt and oversized files (WIRE.md 9.7); the
 * reference v1.7.1 store's connection marks (its store_test.go scenarios)
 * and a book it wrote. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "discovery/addrbook.h"
#include "tv.h"

#define T0 1767225600   /* 2026-01-01T00:00:00Z */
#define DAY (24 * 3600)

/* ---- helpers ---------------------------------------------------------------- */

static void make_id(unsigned i, tm2_id *id)
{
    /* Key generation dominates the big-book tests: remember the IDs. */
    static tm2_id cache[8192];
    if (i < 8192 && cache[i].s[0]) {
        *id = cache[i];
        return;
    }
    uint8_t seed[32] = {0};
    seed[0] = (uint8_t)i;
    seed[1] = (uint8_t)(i >> 8);
    seed[31] = 0xab;
    tm2_node_key k;
    tm2_node_key_from_seed(&k, seed);
    tm2_node_key_id(&k, id);
    tm2_node_key_wipe(&k);
    if (i < 8192)
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

static tm2_netaddr parse(const char *s)
{
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(s, 0, &a), 0);
    return a;
}

static tm2__addrbook *book(const tm2_id *self, size_t max)
{
    tm2__addrbook_config c = {.max_entries = max};
    tm2__addrbook *b = NULL;
    assert_int_equal(tm2__addrbook_new(self, &c, &b), 0);
    assert_non_null(b);
    return b;
}

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
    tm2__addrbook_free(b);

    tm2__addrbook_config c = {.max_entries = TM2__ADDRBOOK_MAX_LIMIT + 1};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    assert_null(b);
    c = (tm2__addrbook_config){.retry_base = 100, .retry_max = 50};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    c = (tm2__addrbook_config){.dead_after = -1};
    assert_int_equal(tm2__addrbook_new(NULL, &c, &b), TM2_EINVAL);
    assert_int_equal(tm2__addrbook_new(NULL, NULL, NULL), TM2_EINVAL);
}

/* ---- adding ---------------------------------------------------------------------- */

static void add_new_and_refresh(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1);
    assert_int_equal(tm2__addrbook_add(b, &a, T0), TM2__AB_ADDED);
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
    assert_int_equal(tm2__addrbook_add(b, &a, T0 + 5), TM2__AB_REFRESHED);
    assert_int_equal(entry(b, 1)->last_seen, T0 + 5);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_add(b, &a, T0 + 5 + TM2__ADDRBOOK_SEEN_SLACK), TM2__AB_REFRESHED);
    assert_true(tm2__addrbook_dirty(b));
    /* An older sighting never moves it back. */
    assert_int_equal(tm2__addrbook_add(b, &a, T0), TM2__AB_REFRESHED);
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
    assert_int_equal(tm2__addrbook_add(b, &self, T0), TM2_ESELF);
    tm2_netaddr other_port = self;
    other_port.port = 1;
    assert_int_equal(tm2__addrbook_add(b, &other_port, T0), TM2_ESELF);
    /* Addresses that fail the reference's Validate(). */
    tm2_netaddr a = addr_of(1);
    char s[TM2_NETADDR_STRLEN + 1];
    snprintf(s, sizeof s, "%s@0.0.0.0:26656", a.id.s);
    tm2_netaddr bad = parse(s);
    assert_int_equal(tm2__addrbook_add(b, &bad, T0), TM2_EUNSPEC);
    snprintf(s, sizeof s, "%s@[2001:db8::1]:26656", a.id.s);
    bad = parse(s);
    assert_int_equal(tm2__addrbook_add(b, &bad, T0), TM2_ERESERVED);
    bad = a;
    bad.id.s[0] = '\0';
    assert_true(tm2__addrbook_add(b, &bad, T0) < 0);
    assert_int_equal(tm2__addrbook_size(b), 0);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_add(b, NULL, T0), TM2_EINVAL);
    tm2__addrbook_free(b);
}

static void new_address_for_known_id(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1), moved = a;
    moved.port = 40000;
    assert_int_equal(tm2__addrbook_add(b, &a, T0), TM2__AB_ADDED);
    /* Never connected: the new address replaces it and its record. */
    assert_int_equal(tm2__addrbook_mark_attempt(b, &a.id, T0 + 1), 0);
    assert_int_equal(tm2__addrbook_mark_failure(b, &a.id, T0 + 2), 0);
    assert_int_equal(tm2__addrbook_add(b, &moved, T0 + 10), TM2__AB_REPLACED);
    const tm2__addrbook_entry *e = entry(b, 1);
    assert_int_equal(e->addr.port, 40000);
    assert_int_equal(e->attempts, 0);
    assert_int_equal(e->last_attempt, 0);
    assert_int_equal(e->last_seen, T0 + 10);
    assert_int_equal(tm2__addrbook_size(b), 1);

    /* Proven (connected, no failure since): gossip cannot move it. */
    assert_int_equal(tm2__addrbook_mark_connected(b, &moved, T0 + 20), 0);
    assert_int_equal(tm2__addrbook_add(b, &a, T0 + 30), TM2__AB_KEPT);
    e = entry(b, 1);
    assert_int_equal(e->addr.port, 40000);
    assert_int_equal(e->last_seen, T0 + 10);
    assert_int_equal(e->last_connected, T0 + 20);
    /* Once it fails, the next address wins. */
    assert_int_equal(tm2__addrbook_mark_failure(b, &a.id, T0 + 40), 0);
    assert_int_equal(tm2__addrbook_add(b, &a, T0 + 50), TM2__AB_REPLACED);
    e = entry(b, 1);
    assert_int_equal(e->addr.port, a.port);
    assert_int_equal(e->last_connected, 0);
    /* A connection to another address of the ID proves that one. */
    assert_int_equal(tm2__addrbook_mark_failure(b, &a.id, T0 + 60), 0);
    assert_int_equal(tm2__addrbook_mark_connected(b, &moved, T0 + 70), 0);
    e = entry(b, 1);
    assert_int_equal(e->addr.port, 40000);
    assert_int_equal(e->attempts, 0);
    assert_int_equal(e->last_connected, T0 + 70);
    tm2__addrbook_free(b);
}

static void bound_and_eviction(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 3);
    for (unsigned i = 1; i <= 3; i++) {
        tm2_netaddr a = addr_of(i);
        assert_int_equal(tm2__addrbook_add(b, &a, T0 + 100 * i), TM2__AB_ADDED);
    }
    /* Full: the entry seen longest ago (1) goes. */
    tm2_netaddr a4 = addr_of(4);
    assert_int_equal(tm2__addrbook_add(b, &a4, T0 + 400), TM2__AB_ADDED);
    assert_int_equal(tm2__addrbook_size(b), 3);
    assert_null(entry(b, 1));
    assert_non_null(entry(b, 2));

    /* A peer we connected to outlives fresher strangers. */
    tm2_netaddr a2 = addr_of(2);
    assert_int_equal(tm2__addrbook_mark_connected(b, &a2, T0 + 200), 0);
    tm2_netaddr a5 = addr_of(5);
    assert_int_equal(tm2__addrbook_add(b, &a5, T0 + 500), TM2__AB_ADDED);
    assert_non_null(entry(b, 2));
    assert_null(entry(b, 3));
    tm2_netaddr a6 = addr_of(6);
    assert_int_equal(tm2__addrbook_add(b, &a6, T0 + 600), TM2__AB_ADDED);
    assert_non_null(entry(b, 2));
    assert_null(entry(b, 4));

    /* Every entry marked: a new address is turned away, nothing evicted. */
    tm2_netaddr a5b = addr_of(5), a6b = addr_of(6);
    assert_int_equal(tm2__addrbook_mark_connected(b, &a5b, T0 + 700), 0);
    assert_int_equal(tm2__addrbook_mark_connected(b, &a6b, T0 + 800), 0);
    tm2_netaddr a7 = addr_of(7);
    assert_int_equal(tm2__addrbook_add(b, &a7, T0 + 900), TM2_EFULL);
    assert_null(entry(b, 7));
    assert_int_equal(tm2__addrbook_size(b), 3);
    assert_int_equal(tm2__addrbook_count_connected(b, T0 + 900), 3);

    /* A mark lapses after a day: 2's (set at T0 + 200) first. */
    assert_true(tm2__addrbook_connected(entry(b, 2), T0 + 200 + DAY - 1));
    assert_false(tm2__addrbook_connected(entry(b, 2), T0 + 200 + DAY));
    assert_int_equal(tm2__addrbook_count_connected(b, T0 + 200 + DAY), 2);
    assert_int_equal(tm2__addrbook_add(b, &a7, T0 + 200 + DAY), TM2__AB_ADDED);
    assert_null(entry(b, 2));
    assert_non_null(entry(b, 5));
    assert_non_null(entry(b, 6));
    assert_non_null(entry(b, 7));

    /* Re-adding a known ID never evicts. */
    assert_int_equal(tm2__addrbook_add(b, &a7, T0 + 200 + DAY + 50), TM2__AB_REFRESHED);
    assert_int_equal(tm2__addrbook_size(b), 3);
    tm2__addrbook_free(b);
}

static void remove_and_iterate(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    for (unsigned i = 1; i <= 5; i++) {
        tm2_netaddr a = addr_of(i);
        tm2__addrbook_add(b, &a, T0 + i);
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
    tm2__addrbook_add(b, &a, T0);
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

static bool skip_cb(const tm2_id *id, void *user)
{
    struct skip_set *s = user;
    s->calls++;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->ids[i].s, id->s) == 0)
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

static void pick_candidates(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    /* 1: seen long ago; 2, 3: recent; 4: recent but failed once;
     * 5: recent, in back-off; 6: connected. */
    int64_t now = T0 + 10 * DAY;
    tm2_netaddr a[7];
    for (unsigned i = 1; i <= 6; i++) {
        a[i] = addr_of(i);
        tm2__addrbook_add(b, &a[i], i == 1 ? T0 : now - 60);
    }
    tm2__addrbook_mark_attempt(b, &a[4].id, now - 200);
    tm2__addrbook_mark_failure(b, &a[4].id, now - 100);   /* retry at now - 40 */
    tm2__addrbook_mark_attempt(b, &a[5].id, now - 10);    /* retry at now + 20 */
    struct skip_set skip = {.n = 1};
    skip.ids[0] = a[6].id;

    tm2_netaddr out[8];
    size_t n = tm2__addrbook_pick(b, now, 1, skip_cb, &skip, out, 8);
    assert_int_equal(n, 4);
    assert_true(skip.calls >= 5);
    /* Recent ones first, the failed one after its peers, the old one last. */
    unsigned first = index_of(&out[0]), second = index_of(&out[1]);
    assert_true((first == 2 && second == 3) || (first == 3 && second == 2));
    assert_int_equal(index_of(&out[2]), 4);
    assert_int_equal(index_of(&out[3]), 1);

    /* max bounds the answer; later the back-off of 5 has run out. */
    assert_int_equal(tm2__addrbook_pick(b, now, 1, skip_cb, &skip, out, 2), 2);
    n = tm2__addrbook_pick(b, now + 20, 1, NULL, NULL, out, 8);
    assert_int_equal(n, 6);
    assert_int_equal(tm2__addrbook_pick(b, now, 1, NULL, NULL, out, 0), 0);
    tm2__addrbook_free(b);
}

static void pick_spreads_ties(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a;
    for (unsigned i = 1; i <= 20; i++) {
        a = addr_of(i);
        tm2__addrbook_add(b, &a, T0);
    }
    tm2_netaddr x[20], y[20], z[20];
    assert_int_equal(tm2__addrbook_pick(b, T0, 7, NULL, NULL, x, 20), 20);
    assert_int_equal(tm2__addrbook_pick(b, T0, 7, NULL, NULL, y, 20), 20);
    assert_int_equal(tm2__addrbook_pick(b, T0, 8, NULL, NULL, z, 20), 20);
    /* Same seed, same order; another seed, another order. */
    assert_memory_equal(x, y, sizeof x);
    assert_true(memcmp(x, z, sizeof x) != 0);
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
        tm2__addrbook_add(b, &a, i == 3 ? now - DAY : now - TM2__ADDRBOOK_DEAD_AFTER);
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
    tm2__addrbook_add(b, &a, T0);
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

    /* Empty book. */
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 0);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(tm2__addrbook_save(b, path, true, NULL, 0), 1);
    size_t len;
    char *got = read_all(path, &len);
    assert_string_equal(got, "{\n\t\"peers\": []\n}");
    free(got);

    tm2_netaddr a = parse("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656");
    tm2_netaddr v6 = parse("g1dguq840stxgz58rd477fhfrjjgf00j4vt9mdlh@[::1]:26657");
    assert_int_equal(tm2__addrbook_add(b, &a, T0), TM2__AB_ADDED);
    assert_int_equal(tm2__addrbook_add(b, &v6, T0 + 60), TM2__AB_ADDED);
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 1);
    got = read_all(path, &len);
    static const char want[] =
        "{\n"
        "\t\"peers\": [\n"
        "\t\t{\n"
        "\t\t\t\"addr\": \"g1dguq840stxgz58rd477fhfrjjgf00j4vt9mdlh@[::1]:26657\",\n"
        "\t\t\t\"last_seen\": 1767225660\n"
        "\t\t},\n"
        "\t\t{\n"
        "\t\t\t\"addr\": \"g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656\",\n"
        "\t\t\t\"last_seen\": 1767225600\n"
        "\t\t}\n"
        "\t]\n"
        "}";
    assert_int_equal(len, sizeof want - 1);
    assert_string_equal(got, want);
    free(got);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_false(tm2__addrbook_dirty(b));
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 0);

    /* A dial record adds our keys, each only when set. */
    tm2__addrbook_mark_attempt(b, &a.id, T0 + 100);
    tm2__addrbook_mark_failure(b, &a.id, T0 + 101);
    tm2__addrbook_mark_connected(b, &v6, T0 + 102);
    assert_int_equal(tm2__addrbook_save(b, path, false, NULL, 0), 1);
    got = read_all(path, &len);
    static const char want2[] =
        "{\n"
        "\t\"peers\": [\n"
        "\t\t{\n"
        "\t\t\t\"addr\": \"g1dguq840stxgz58rd477fhfrjjgf00j4vt9mdlh@[::1]:26657\",\n"
        "\t\t\t\"last_seen\": 1767225660,\n"
        "\t\t\t\"last_connected\": 1767225702,\n"
        "\t\t\t\"last_attempt\": 1767225702\n"
        "\t\t},\n"
        "\t\t{\n"
        "\t\t\t\"addr\": \"g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656\",\n"
        "\t\t\t\"last_seen\": 1767225600,\n"
        "\t\t\t\"attempts\": 1,\n"
        "\t\t\t\"last_attempt\": 1767225701\n"
        "\t\t}\n"
        "\t]\n"
        "}";
    assert_string_equal(got, want2);
    free(got);

    /* Atomic replace leaves only the file behind. */
    char *names = listing(dir);
    assert_string_equal(names, "addrbook.json");
    free(names);
    tm2__addrbook_free(b);
    free(path);
    rm_dir(dir);
}

static void file_round_trip(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char *path = join(dir, "config/addrbook.json");   /* parent created */
    tm2_netaddr self = addr_of(0);
    tm2__addrbook *b = book(&self.id, 0);
    for (unsigned i = 1; i <= 40; i++) {
        tm2_netaddr a = addr_of(i);
        assert_int_equal(tm2__addrbook_add(b, &a, T0 + i), TM2__AB_ADDED);
        if (i % 3 == 0)
            tm2__addrbook_mark_failure(b, &a.id, T0 + 100 + i);
        if (i % 5 == 0)
            tm2__addrbook_mark_connected(b, &a, T0 + 200 + i);
    }
    char why[256];
    assert_int_equal(tm2__addrbook_save(b, path, false, why, sizeof why), 1);

    tm2__addrbook *c = book(&self.id, 0);
    int n = tm2__addrbook_load(c, path, T0 + 1000, why, sizeof why);
    assert_int_equal(n, 40);
    assert_non_null(strstr(why, "loaded 40 of 40"));
    assert_false(tm2__addrbook_dirty(c));
    for (unsigned i = 1; i <= 40; i++) {
        const tm2__addrbook_entry *x = entry(b, i), *y = entry(c, i);
        assert_non_null(y);
        assert_true(tm2_netaddr_equal(&x->addr, &y->addr));
        assert_int_equal(x->last_seen, y->last_seen);
        assert_int_equal(x->attempts, y->attempts);
        assert_int_equal(x->last_attempt, y->last_attempt);
        assert_int_equal(x->last_connected, y->last_connected);
    }
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
    tm2__addrbook_free(b);
    tm2__addrbook_free(c);
    free(path);
    rm_dir(dir);
}

static void save_generation(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1), a2 = addr_of(2);
    tm2__addrbook_add(b, &a, T0);
    char *text;
    size_t len;
    uint64_t gen;
    assert_int_equal(tm2__addrbook_encode(b, &text, &len, &gen), 0);
    free(text);
    /* A change between the encode and the write keeps the book dirty. */
    tm2__addrbook_add(b, &a2, T0);
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
        assert_int_equal(tm2__addrbook_add(b, &a, TM2__ADDRBOOK_TIME_MAX), TM2__AB_ADDED);
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
    assert_int_equal(load_text(b, text, T0 + 3600, NULL, 0), 2);
    assert_false(tm2__addrbook_dirty(b));
    tm2_netaddr a = parse("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656");
    const tm2__addrbook_entry *e = tm2__addrbook_find(b, &a.id);
    assert_non_null(e);
    assert_int_equal(e->last_seen, T0);
    assert_int_equal(e->attempts, 0);
    /* Re-encoded it is the same file, newest first. */
    char *out;
    size_t len;
    assert_int_equal(tm2__addrbook_encode(b, &out, &len, NULL), 0);
    assert_non_null(strstr(out, "[::1]:26657\",\n\t\t\t\"last_seen\": 1767225660\n\t\t},"));
    assert_int_equal(len, sizeof text - 1);
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
        assert_int_equal(tm2__addrbook_add(b, &a1, T0), TM2__AB_ADDED);
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
    tm2__addrbook_add(b, &a, T0);
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

/* Peers [from, from + n) added at now, each marked connected. */
static void add_marked(tm2__addrbook *b, unsigned from, unsigned n, int64_t now)
{
    for (unsigned i = from; i < from + n; i++) {
        tm2_netaddr a = addr_of(i);
        assert_int_equal(tm2__addrbook_add(b, &a, now), TM2__AB_ADDED);
        assert_int_equal(tm2__addrbook_mark_connected(b, &a, now), 0);
    }
}

/* Gossip of n fresh addresses from peer number from on, at now. */
static void share(tm2__addrbook *b, unsigned from, unsigned n, int64_t now)
{
    for (unsigned i = from; i < from + n; i++) {
        tm2_netaddr a = addr_of(i);
        int rc = tm2__addrbook_add(b, &a, now);
        assert_true(rc == TM2__AB_ADDED || rc == TM2__AB_REFRESHED || rc == TM2_EFULL);
    }
}

static unsigned held(const tm2__addrbook *b, unsigned from, unsigned n)
{
    unsigned k = 0;
    for (unsigned i = from; i < from + n; i++)
        k += entry(b, i) != NULL;
    return k;
}

static tm2__addrbook *reload(tm2__addrbook *b, const char *path, size_t max, int64_t now)
{
    char why[256];
    assert_int_equal(tm2__addrbook_save(b, path, true, why, sizeof why), 1);
    tm2__addrbook_free(b);
    tm2__addrbook *c = book(NULL, max);
    assert_true(tm2__addrbook_load(c, path, now, why, sizeof why) >= 0);
    return c;
}

#define FULL TM2__ADDRBOOK_DEFAULT_MAX
#define SHARED 5000u    /* first peer number of gossiped strangers */

/* TestStore_Eviction_KeepsConnected: lapsed marks, in memory and read back. */
static void marks_lapsed_do_not_keep(void **state)
{
    (void)state;
    char *dir = tmpdir(), *path = join(dir, "addrbook.json");
    for (int restart = 0; restart < 2; restart++) {
        tm2__addrbook *b = book(NULL, 0);
        add_marked(b, 1, 30, T0);           /* 30 sybils, each connected once */
        int64_t later = T0 + DAY + 60;      /* their marks lapsed */
        if (restart)
            b = reload(b, path, 0, later);
        share(b, SHARED, 2010, later + 1);
        assert_int_equal(held(b, 1, 30), 0);
        assert_int_equal(tm2__addrbook_size(b), FULL);
        tm2__addrbook_free(b);
    }
    free(path);
    rm_dir(dir);
}

static void marks_lapsed_give_way_to_live(void **state)
{
    (void)state;
    char *dir = tmpdir(), *path = join(dir, "addrbook.json");
    tm2__addrbook *b = book(NULL, 0);
    add_marked(b, 1, FULL, T0);             /* full, every entry marked */
    int64_t later = T0 + DAY + 60;
    for (unsigned i = 0; i < 50; i++) {
        tm2_netaddr a = addr_of(2000 + i);
        assert_int_equal(tm2__addrbook_add(b, &a, later), TM2__AB_ADDED);
        assert_int_equal(tm2__addrbook_mark_connected(b, &a, later), 0);
    }
    assert_int_equal(held(b, 2000, 50), 50);
    b = reload(b, path, 0, later + 1);
    assert_int_equal(held(b, 2000, 50), 50);
    tm2__addrbook_free(b);
    free(path);
    rm_dir(dir);
}

static void marks_keep_connected_against_gossip(void **state)
{
    (void)state;
    char *dir = tmpdir(), *path = join(dir, "addrbook.json");
    /* Shared addresses do not displace connected ones. */
    tm2__addrbook *b = book(NULL, 0);
    add_marked(b, 1, FULL, T0);
    share(b, SHARED, 1020, T0 + 10);
    assert_int_equal(tm2__addrbook_size(b), FULL);
    assert_int_equal(held(b, 1, FULL), FULL);
    assert_int_equal(held(b, SHARED, 1020), 0);
    tm2__addrbook_free(b);

    /* A connected address shared again stays connected. */
    b = book(NULL, 0);
    add_marked(b, 1, FULL, T0);
    share(b, 1, FULL, T0 + 5);
    assert_true(tm2__addrbook_connected(entry(b, 1), T0 + 10));
    share(b, SHARED, 1020, T0 + 10);
    assert_int_equal(held(b, 1, FULL), FULL);

    /* The marks survive a restart. */
    b = reload(b, path, 0, T0 + 20);
    assert_int_equal(entry(b, 7)->last_connected, T0);
    share(b, SHARED, 1020, T0 + 30);
    assert_int_equal(held(b, 1, FULL), FULL);
    tm2__addrbook_free(b);
    free(path);
    rm_dir(dir);
}

static void marks_eviction_order(void **state)
{
    (void)state;
    /* Never-connected addresses go first, oldest seen first. */
    tm2__addrbook *b = book(NULL, 3);
    share(b, 1, 3, T0);
    tm2_netaddr a1 = addr_of(1);
    assert_int_equal(tm2__addrbook_mark_connected(b, &a1, T0), 0);
    share(b, 4, 2, T0 + 1);
    assert_int_equal(held(b, 1, 1), 1);
    assert_int_equal(held(b, 2, 2), 0);
    assert_int_equal(held(b, 4, 2), 2);
    tm2__addrbook_free(b);

    /* A file holding more connected addresses than the book keeps: the
     * oldest connection goes, and a stranger does not displace the rest. */
    char text[2048];
    size_t n = (size_t)snprintf(text, sizeof text, "{\"peers\":[");
    for (unsigned i = 0; i < 4; i++) {
        tm2_netaddr a = addr_of(10 + i);
        char as[TM2_NETADDR_STRLEN + 1];
        assert_true(tm2_netaddr_format(&a, as, sizeof as) > 0);
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "%s{\"addr\":\"%s\",\"last_seen\":1000,\"last_connected\":%d}",
                              i ? "," : "", as, T0 - 10 + (int)i);
    }
    snprintf(text + n, sizeof text - n, "]}");
    b = book(NULL, 3);
    assert_int_equal(load_text(b, text, T0, NULL, 0), 3);
    tm2_netaddr stranger = addr_of(20);
    assert_int_equal(tm2__addrbook_add(b, &stranger, T0), TM2_EFULL);
    assert_int_equal(held(b, 10, 1), 0);
    assert_int_equal(held(b, 11, 3), 3);
    assert_int_equal(held(b, 20, 1), 0);
    tm2__addrbook_free(b);
}

/* Marks are renewed every round; only a new one, or one half a lifetime
 * newer than the last written, makes the book dirty. */
static void marks_saved_twice_a_day(void **state)
{
    (void)state;
    tm2__addrbook *b = book(NULL, 0);
    tm2_netaddr a = addr_of(1);
    tm2__addrbook_add(b, &a, T0);
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
 * every entry and mark as it wrote them, and written back the same. */
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
    assert_false(tm2__addrbook_dirty(b));
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
    }
    /* Written back: the same entries and fields (ours newest first). */
    char *out;
    size_t out_len;
    assert_int_equal(tm2__addrbook_encode(b, &out, &out_len, NULL), 0);
    assert_int_equal(out_len, len);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char ent[256];
        if (want[i].connected)
            snprintf(ent, sizeof ent,
                     "\"addr\": \"%s\",\n\t\t\t\"last_seen\": %lld,\n\t\t\t\"last_connected\": %lld\n",
                     want[i].addr, (long long)want[i].seen, (long long)want[i].connected);
        else
            snprintf(ent, sizeof ent, "\"addr\": \"%s\",\n\t\t\t\"last_seen\": %lld\n",
                     want[i].addr, (long long)want[i].seen);
        assert_non_null(strstr(text, ent));
        assert_non_null(strstr(out, ent));
    }
    free(out);
    free(text);
    tm2__addrbook_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_rules),
        cmocka_unit_test(add_new_and_refresh),
        cmocka_unit_test(add_rejects),
        cmocka_unit_test(new_address_for_known_id),
        cmocka_unit_test(bound_and_eviction),
        cmocka_unit_test(remove_and_iterate),
        cmocka_unit_test(backoff_schedule),
        cmocka_unit_test(pick_candidates),
        cmocka_unit_test(pick_spreads_ties),
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
        cmocka_unit_test(marks_lapsed_do_not_keep),
        cmocka_unit_test(marks_lapsed_give_way_to_live),
        cmocka_unit_test(marks_keep_connected_against_gossip),
        cmocka_unit_test(marks_eviction_order),
        cmocka_unit_test(marks_saved_twice_a_day),
        cmocka_unit_test(marks_in_the_file),
        cmocka_unit_test(upstream_v171_book),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
