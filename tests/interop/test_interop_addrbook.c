/* The address book file both ways: a book written by tm2p2p loaded by the
 * reference's store (tm2ref addrbook), and a book the reference's store wrote
 * loaded by tm2p2p and written again, then loaded by the reference.
 *
 * The file per the reference's store (discovery/store.go): {"peers": [...]}
 * with, per entry, "addr" (<id>@<ip>:<port>), "last_seen" (Unix seconds, when
 * a peer last shared the address) and, from v1.7.1, "last_connected" (Unix
 * seconds, when the node last held a connection it dialled to the address;
 * left out when it never did). A dialled connection sets last_connected and
 * leaves last_seen alone. With v1.2.0 as the reference no entry has a mark and
 * only addresses and last_seen are compared. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "discovery/addrbook.h"
#include "refproc.h"
#include "tv.h"

#define WAIT_MS 20000
#define NADDR   3

typedef struct entry {
    char addr[TM2_NETADDR_STRLEN];
    long long last_seen;
    long long last_connected;
} entry;

typedef struct fixture {
    char dir[64];
    char path[128];
    char addrs[NADDR][TM2_NETADDR_STRLEN];   /* sorted as the reference prints them */
    tm2__addrbook *book;                      /* freed by the teardown on every path */
    char *text;
} fixture;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/tm2-interop-book-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/addrbook.json", f->dir);
    for (int i = 0; i < NADDR; i++) {
        uint8_t seed[32];
        memset(seed, 0x61 + i, sizeof seed);
        tm2_node_key k;
        tm2_node_key_from_seed(&k, seed);
        tm2_id id;
        tm2_node_key_id(&k, &id);
        snprintf(f->addrs[i], sizeof f->addrs[i], "%s@127.0.0.%d:%d", id.s, 10 + i, 26656 + i);
    }
    qsort(f->addrs, NADDR, sizeof f->addrs[0], cmp_str);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int r = system(cmd);
    if (f->book)
        tm2__addrbook_free(f->book);
    free(f->text);
    free(f);
    return r == 0 ? 0 : -1;
}

/* Runs tm2ref addrbook with args and reads its ENTRY lines (sorted by
 * address); returns their count. */
static size_t ref_book(const char *const *args, entry *out, size_t cap)
{
    refproc p;
    refproc_start(&p, args);
    char line[REFPROC_LINE_MAX], *w[5];
    int nw = refproc_expect(&p, "ENTRIES", line, sizeof line, w, 5, WAIT_MS);
    assert_int_equal(nw, 2);
    size_t n = (size_t)strtoul(w[1], NULL, 10);
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        nw = refproc_expect(&p, "ENTRY", line, sizeof line, w, 5, WAIT_MS);
        assert_int_equal(nw, 4);
        snprintf(out[i].addr, sizeof out[i].addr, "%s", w[1]);
        out[i].last_seen = strtoll(w[2], NULL, 10);
        out[i].last_connected = strtoll(w[3], NULL, 10);
    }
    nw = refproc_expect(&p, "SIZE", line, sizeof line, w, 5, WAIT_MS);
    assert_int_equal(nw, 2);
    assert_int_equal(strtoul(w[1], NULL, 10), n);
    assert_int_equal(refproc_wait(&p, WAIT_MS), 0);
    refproc_stop(&p);
    return n;
}

/* The entries of a book file's text as the reference's loader reads them
 * (field names matched case-insensitively, like encoding/json). */
static size_t parse_book(const char *text, entry *out, size_t cap)
{
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    cJSON *peers = cJSON_GetObjectItem(root, "peers");
    assert_true(cJSON_IsArray(peers));
    size_t n = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, peers)
    {
        assert_true(n < cap);
        cJSON *a = cJSON_GetObjectItem(e, "addr");
        cJSON *ls = cJSON_GetObjectItem(e, "last_seen");
        cJSON *lc = cJSON_GetObjectItem(e, "last_connected");
        assert_true(cJSON_IsString(a) && cJSON_IsNumber(ls));
        snprintf(out[n].addr, sizeof out[n].addr, "%s", a->valuestring);
        out[n].last_seen = (long long)ls->valuedouble;
        out[n].last_connected = lc ? (long long)lc->valuedouble : 0;
        if (lc)
            assert_true(cJSON_IsNumber(lc) && lc->valuedouble > 0); /* omitted when zero */
        n++;
    }
    cJSON_Delete(root);
    qsort(out, n, sizeof out[0], cmp_str);   /* addr is the first member */
    return n;
}

static void expect_entry(const entry *e, const char *addr, long long seen, long long connected)
{
    assert_string_equal(e->addr, addr);
    if (e->last_seen != seen)
        fail_msg("%s: last_seen %lld, want %lld", addr, e->last_seen, seen);
    if (e->last_connected != connected)
        fail_msg("%s: last_connected %lld, want %lld", addr, e->last_connected, connected);
}

/* tm2p2p's book: three addresses shared at t0 (the second by several peers,
 * so it sits in several new buckets with its source recorded), the first
 * dialled and connected at t1 (so in the tried table). The file carries all
 * of tm2p2p's own keys (key, tables, source, buckets, dial record); the
 * reference loads it with t0 as every last_seen and, from v1.7.1, t1 as the
 * first entry's last_connected. */
static void tm2p2p_book_loads_in_reference(void **state)
{
    fixture *f = *state;
    int64_t t1 = (int64_t)time(NULL) - 60, t0 = t1 - 3600;
    assert_int_equal(tm2__addrbook_new(NULL, NULL, &f->book), 0);
    tm2__addrbook *b = f->book;
    for (int i = 0; i < NADDR; i++) {
        tm2_netaddr a;
        assert_int_equal(tm2_netaddr_parse(f->addrs[i], 0, &a), 0);
        tm2_netaddr told_by;   /* the third heard of from another peer */
        assert_int_equal(tm2_netaddr_parse("127.9.99.1:0", TM2_NETADDR_NO_ID, &told_by), 0);
        assert_int_equal(tm2__addrbook_add(b, &a, i == 2 ? &told_by : NULL, t0), TM2__AB_ADDED);
        for (int k = 0; i == 1 && k < 40; k++) {
            char sip[40];
            snprintf(sip, sizeof sip, "127.9.%d.1:0", k);
            tm2_netaddr src;
            assert_int_equal(tm2_netaddr_parse(sip, TM2_NETADDR_NO_ID, &src), 0);
            assert_int_equal(tm2__addrbook_add(b, &a, &src, t0), TM2__AB_REFRESHED);
        }
    }
    tm2_netaddr a0;
    assert_int_equal(tm2_netaddr_parse(f->addrs[0], 0, &a0), 0);
    assert_int_equal(tm2__addrbook_mark_attempt(b, &a0.id, t1), 0);
    assert_true(tm2__addrbook_mark_connected(b, &a0, t1) >= 0);
    tm2_netaddr a2;
    assert_int_equal(tm2_netaddr_parse(f->addrs[2], 0, &a2), 0);
    assert_int_equal(tm2__addrbook_mark_failure(b, &a2.id, t1), 0);
    assert_true(tm2__addrbook_find(b, &a0.id)->tried);
    char why[256];
    assert_int_equal(tm2__addrbook_save(b, f->path, true, why, sizeof why), 1);
    size_t len;
    assert_int_equal(tm2__addrbook_encode(b, &f->text, &len, NULL), 0);
    static const char *const ours[] = {"\"tm2p2p_key\"", "\"tm2p2p_tables\"", "\"tm2p2p_tried\"",
                                       "\"tm2p2p_new\"", "\"tm2p2p_src\"", "\"attempts\""};
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (!strstr(f->text, ours[i]))
            fail_msg("tm2p2p's file lacks %s", ours[i]);

    const char *args[] = {"addrbook", "--file", f->path, NULL};
    entry e[8];
    assert_int_equal(ref_book(args, e, 8), NADDR);
    expect_entry(&e[0], f->addrs[0], t0, TM2REF_V171 ? t1 : 0);
    for (int i = 1; i < NADDR; i++)
        expect_entry(&e[i], f->addrs[i], t0, 0);
}

/* The reference's store adds three addresses and marks the first connected
 * (v1.7.1). tm2p2p loads that file and keeps every address, last_seen and
 * mark: its own file, written again, carries them, and the reference reads
 * that one back the same. */
static void reference_book_loads_in_tm2p2p(void **state)
{
    fixture *f = *state;
    char add[3 * TM2_NETADDR_STRLEN + 4];
    snprintf(add, sizeof add, "%s,%s,%s", f->addrs[0], f->addrs[1], f->addrs[2]);
    const char *args171[] = {"addrbook", "--file", f->path, "--add", add, "--mark", f->addrs[0],
                             NULL};
    const char *args120[] = {"addrbook", "--file", f->path, "--add", add, NULL};
    entry ref[8];
    assert_int_equal(ref_book(TM2REF_V171 ? args171 : args120, ref, 8), NADDR);
    assert_true(ref[0].last_connected > 0 || !TM2REF_V171);

    assert_int_equal(tm2__addrbook_new(NULL, NULL, &f->book), 0);
    tm2__addrbook *b = f->book;
    char why[256] = "";
    int n = tm2__addrbook_load(b, f->path, (int64_t)time(NULL), why, sizeof why);
    if (n != NADDR)
        fail_msg("tm2p2p loads %d entries of the reference's book: %s", n, why);
    for (int i = 0; i < NADDR; i++) {
        tm2_netaddr a;
        assert_int_equal(tm2_netaddr_parse(f->addrs[i], 0, &a), 0);
        const tm2__addrbook_entry *be = tm2__addrbook_find(b, &a.id);
        assert_non_null(be);
        assert_true(tm2_netaddr_equal(&be->addr, &a));
        /* Migrated into the tables: what the reference held goes to tried. */
        assert_int_equal(be->tried, be->last_connected != 0);
    }
    assert_true(tm2__addrbook_dirty(b));   /* the key and tables are to be written */

    /* What tm2p2p writes from it. */
    size_t len;
    uint64_t gen;
    assert_int_equal(tm2__addrbook_encode(b, &f->text, &len, &gen), 0);
    entry ours[8];
    assert_int_equal(parse_book(f->text, ours, 8), NADDR);
    for (int i = 0; i < NADDR; i++)
        expect_entry(&ours[i], ref[i].addr, ref[i].last_seen, ref[i].last_connected);

    /* Written by tm2p2p, read by the reference: the same entries again. */
    char path2[160];
    snprintf(path2, sizeof path2, "%s/addrbook2.json", f->dir);
    assert_int_equal(tm2__addrbook_save(b, path2, true, why, sizeof why), 1);
    const char *args2[] = {"addrbook", "--file", path2, NULL};
    entry back[8];
    assert_int_equal(ref_book(args2, back, 8), NADDR);
    for (int i = 0; i < NADDR; i++)
        expect_entry(&back[i], ref[i].addr, ref[i].last_seen, ref[i].last_connected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(tm2p2p_book_loads_in_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_book_loads_in_tm2p2p, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
