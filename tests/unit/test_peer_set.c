#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switch/peer_set.h"
#include "tm2p2p/error.h"
#include "tm2p2p/key.h"
#include "tv.h"


/* A real-looking ID for index i (bech32 of a hash of a made-up key). */
static void make_id(uint32_t i, tm2_id *id)
{
    uint8_t pub[TM2_PUBKEY_SIZE] = {0};
    memcpy(pub, &i, sizeof i);
    pub[31] = 0x5a;
    tm2_id_from_pubkey(pub, id);
}

/* Peer pointers are opaque to the set; tokens stand in for them. */
static char tokens[8192];
#define PEER(i) ((void *)&tokens[(i)])

static void add_find_remove(void **state)
{
    (void)state;
    tm2__peer_set ps;
    assert_int_equal(tm2__peer_set_init(&ps, NULL), 0);
    tm2_id a, b;
    make_id(1, &a);
    make_id(2, &b);

    assert_null(tm2__peer_set_find(&ps, &a));
    assert_int_equal(tm2__peer_set_add(&ps, &a, PEER(1), true), 0);
    assert_int_equal(tm2__peer_set_add(&ps, &b, PEER(2), false), 0);
    assert_ptr_equal(tm2__peer_set_find(&ps, &a), PEER(1));
    assert_ptr_equal(tm2__peer_set_find(&ps, &b), PEER(2));
    assert_true(tm2__peer_set_has(&ps, &a));
    assert_int_equal(tm2__peer_set_count(&ps), 2);
    assert_int_equal(tm2__peer_set_outbound(&ps), 1);
    assert_int_equal(tm2__peer_set_inbound(&ps), 1);

    assert_ptr_equal(tm2__peer_set_remove(&ps, &a), PEER(1));
    assert_null(tm2__peer_set_remove(&ps, &a));
    assert_null(tm2__peer_set_find(&ps, &a));
    assert_false(tm2__peer_set_has(&ps, &a));
    assert_int_equal(tm2__peer_set_count(&ps), 1);
    assert_int_equal(tm2__peer_set_outbound(&ps), 0);
    assert_int_equal(tm2__peer_set_inbound(&ps), 1);
    assert_ptr_equal(tm2__peer_set_find(&ps, &b), PEER(2));
    tm2__peer_set_free(&ps);
}

static void duplicate_id_is_eexist(void **state)
{
    (void)state;
    tm2__peer_set ps;
    assert_int_equal(tm2__peer_set_init(&ps, NULL), 0);
    tm2_id a;
    make_id(7, &a);
    assert_int_equal(tm2__peer_set_add(&ps, &a, PEER(7), false), 0);
    assert_int_equal(tm2__peer_set_add(&ps, &a, PEER(8), true), TM2_EEXIST);
    /* The first entry and the counts are untouched. */
    assert_ptr_equal(tm2__peer_set_find(&ps, &a), PEER(7));
    assert_int_equal(tm2__peer_set_count(&ps), 1);
    assert_int_equal(tm2__peer_set_outbound(&ps), 0);
    tm2__peer_set_free(&ps);
}

static void bad_arguments(void **state)
{
    (void)state;
    tm2__peer_set ps;
    assert_int_equal(tm2__peer_set_init(&ps, NULL), 0);
    tm2_id empty = {{0}};
    tm2_id unterminated;
    memset(unterminated.s, 'q', sizeof unterminated.s);
    tm2_id a;
    make_id(3, &a);
    assert_int_equal(tm2__peer_set_add(&ps, &empty, PEER(1), false), TM2_EINVAL);
    assert_int_equal(tm2__peer_set_add(&ps, &unterminated, PEER(1), false), TM2_EINVAL);
    assert_int_equal(tm2__peer_set_add(&ps, NULL, PEER(1), false), TM2_EINVAL);
    assert_int_equal(tm2__peer_set_add(&ps, &a, NULL, false), TM2_EINVAL);
    assert_null(tm2__peer_set_find(&ps, &unterminated));
    assert_null(tm2__peer_set_remove(&ps, &unterminated));
    assert_null(tm2__peer_set_find(&ps, NULL));
    assert_int_equal(tm2__peer_set_count(&ps), 0);
    assert_null(tm2__peer_set_random(&ps, 12345));
    assert_null(tm2__peer_set_at(&ps, 0));
    tm2__peer_set_free(&ps);
}

/* IDs are compared as whole strings: a prefix is another ID. */
static void ids_compare_as_strings(void **state)
{
    (void)state;
    tm2__peer_set ps;
    assert_int_equal(tm2__peer_set_init(&ps, NULL), 0);
    tm2_id a = {{0}}, b = {{0}};
    strcpy(a.s, "peer");
    strcpy(b.s, "peer2");
    assert_int_equal(tm2__peer_set_add(&ps, &a, PEER(1), false), 0);
    assert_int_equal(tm2__peer_set_add(&ps, &b, PEER(2), false), 0);
    assert_ptr_equal(tm2__peer_set_find(&ps, &a), PEER(1));
    assert_ptr_equal(tm2__peer_set_find(&ps, &b), PEER(2));
    tm2__peer_set_free(&ps);
}

static int count_cb(const tm2__peer_entry *e, void *user)
{
    size_t *n = user;
    assert_non_null(e->peer);
    (*n)++;
    return 0;
}

static int stop_at_third(const tm2__peer_entry *e, void *user)
{
    (void)e;
    size_t *n = user;
    return ++*n == 3 ? 42 : 0;
}

static void thousands_of_peers(void **state)
{
    (void)state;
    enum { N = 5000 };
    tm2__peer_set ps;
    assert_int_equal(tm2__peer_set_init(&ps, NULL), 0);
    static tm2_id ids[N];
    for (uint32_t i = 0; i < N; i++) {
        make_id(i, &ids[i]);
        assert_int_equal(tm2__peer_set_add(&ps, &ids[i], PEER(i), i % 3 == 0), 0);
    }
    assert_int_equal(tm2__peer_set_count(&ps), N);
    assert_int_equal(tm2__peer_set_outbound(&ps), (N + 2) / 3);
    for (uint32_t i = 0; i < N; i++)
        assert_ptr_equal(tm2__peer_set_find(&ps, &ids[i]), PEER(i));

    size_t seen = 0;
    assert_int_equal(tm2__peer_set_foreach(&ps, count_cb, &seen), 0);
    assert_int_equal(seen, N);
    seen = 0;
    assert_int_equal(tm2__peer_set_foreach(&ps, stop_at_third, &seen), 42);
    assert_int_equal(seen, 3);

    /* Snapshot: every peer once. */
    void **snap = calloc(N, sizeof *snap);
    assert_non_null(snap);
    assert_int_equal(tm2__peer_set_snapshot(&ps, snap, N), N);
    static unsigned char hit[N];
    memset(hit, 0, sizeof hit);
    for (size_t i = 0; i < N; i++) {
        size_t k = (size_t)((char *)snap[i] - tokens);
        assert_true(k < N);
        assert_int_equal(hit[k], 0);
        hit[k] = 1;
    }
    /* A short snapshot still reports the full count. */
    assert_int_equal(tm2__peer_set_snapshot(&ps, snap, 10), N);
    free(snap);

    /* Remove the even ones, walking from the end while removing. */
    for (size_t i = tm2__peer_set_count(&ps); i-- > 0;) {
        const tm2__peer_entry *e = tm2__peer_set_at(&ps, i);
        size_t k = (size_t)((char *)e->peer - tokens);
        if (k % 2 == 0) {
            tm2_id id = e->id;
            assert_ptr_equal(tm2__peer_set_remove(&ps, &id), PEER(k));
        }
    }
    assert_int_equal(tm2__peer_set_count(&ps), N / 2);
    for (uint32_t i = 0; i < N; i++) {
        if (i % 2 == 0)
            assert_null(tm2__peer_set_find(&ps, &ids[i]));
        else
            assert_ptr_equal(tm2__peer_set_find(&ps, &ids[i]), PEER(i));
    }
    size_t want_out = 0;
    for (uint32_t i = 1; i < N; i += 2)
        want_out += i % 3 == 0;
    assert_int_equal(tm2__peer_set_outbound(&ps), want_out);
    assert_int_equal(tm2__peer_set_inbound(&ps), N / 2 - want_out);
    tm2__peer_set_free(&ps);
}

static void random_pick_is_uniform(void **state)
{
    (void)state;
    enum { N = 10, DRAWS = 100000 };
    tm2__peer_set ps;
    assert_int_equal(tm2__peer_set_init(&ps, NULL), 0);
    tm2_id ids[N];
    for (uint32_t i = 0; i < N; i++) {
        make_id(100 + i, &ids[i]);
        assert_int_equal(tm2__peer_set_add(&ps, &ids[i], PEER(i), false), 0);
    }
    /* Consecutive random numbers cover every element. */
    unsigned char hit[N] = {0};
    for (uint64_t r = 0; r < N; r++)
        hit[(char *)tm2__peer_set_random(&ps, r) - tokens] = 1;
    for (int i = 0; i < N; i++)
        assert_int_equal(hit[i], 1);

    unsigned counts[N] = {0};
    uint64_t x = 0x1234567887654321ull;
    for (int d = 0; d < DRAWS; d++)
        counts[(char *)tm2__peer_set_random(&ps, tv_xorshift(&x)) - tokens]++;
    /* Expected 10000 each; 5 sigma is about 475. */
    for (int i = 0; i < N; i++)
        assert_true(counts[i] > DRAWS / N - 500 && counts[i] < DRAWS / N + 500);
    tm2__peer_set_free(&ps);
}

/* Random operations checked against a plain array. */
struct model {
    int present[2048];      /* 1 + outbound, or 0 */
};

static void random_model_check(void **state)
{
    (void)state;
    enum { IDS = 2048, OPS = 200000 };
    static tm2_id ids[IDS];
    for (uint32_t i = 0; i < IDS; i++)
        make_id(10000 + i, &ids[i]);
    static struct model m;
    memset(&m, 0, sizeof m);
    size_t n = 0, n_out = 0;

    tm2__peer_set ps;
    assert_int_equal(tm2__peer_set_init(&ps, NULL), 0);
    uint64_t x = 0xdeadbeefcafef00dull;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = tv_xorshift(&x);
        /* Skew the IDs so that the set grows, shrinks and grows again. */
        uint32_t span = (op / 20000) % 2 ? 256 : IDS;
        uint32_t k = (uint32_t)(r >> 20) % span;
        switch (r % 5) {
        case 0:
        case 1: {
            bool outb = (r >> 8) & 1;
            int got = tm2__peer_set_add(&ps, &ids[k], PEER(k), outb);
            if (m.present[k]) {
                assert_int_equal(got, TM2_EEXIST);
            } else {
                assert_int_equal(got, 0);
                m.present[k] = 1 + outb;
                n++;
                n_out += outb;
            }
            break;
        }
        case 2: {
            void *p = tm2__peer_set_remove(&ps, &ids[k]);
            if (m.present[k]) {
                assert_ptr_equal(p, PEER(k));
                n_out -= m.present[k] == 2;
                m.present[k] = 0;
                n--;
            } else {
                assert_null(p);
            }
            break;
        }
        case 3: {
            void *p = tm2__peer_set_find(&ps, &ids[k]);
            assert_ptr_equal(p, m.present[k] ? PEER(k) : NULL);
            break;
        }
        case 4: {
            void *p = tm2__peer_set_random(&ps, tv_xorshift(&x));
            if (n == 0) {
                assert_null(p);
            } else {
                size_t j = (size_t)((char *)p - tokens);
                assert_true(j < IDS && m.present[j]);
            }
            break;
        }
        }
        assert_int_equal(tm2__peer_set_count(&ps), n);
        assert_int_equal(tm2__peer_set_outbound(&ps), n_out);
        assert_int_equal(tm2__peer_set_inbound(&ps), n - n_out);
        if (op % 10000 == 0) {
            /* Full comparison, including the entries' IDs and flags. */
            for (size_t i = 0; i < n; i++) {
                const tm2__peer_entry *e = tm2__peer_set_at(&ps, i);
                size_t j = (size_t)((char *)e->peer - tokens);
                assert_true(m.present[j]);
                assert_string_equal(e->id.s, ids[j].s);
                assert_int_equal(e->outbound, m.present[j] == 2);
            }
            for (uint32_t i = 0; i < IDS; i++)
                assert_int_equal(tm2__peer_set_has(&ps, &ids[i]), m.present[i] != 0);
        }
    }
    tm2__peer_set_free(&ps);
}

/* The index alone, with values that are not positions. */
struct names {
    char s[64][8];
};

static const char *names_at(const void *owner, uint32_t v)
{
    const struct names *nm = owner;
    return nm->s[v % 64];
}

static void idmap_basics(void **state)
{
    (void)state;
    static struct names nm;
    for (int i = 0; i < 64; i++)
        snprintf(nm.s[i], sizeof nm.s[i], "n%d", i);
    tm2__idmap m;
    assert_int_equal(tm2__idmap_init(&m, 4, &nm, names_at, NULL), 0);
    /* Grows past the initial size. */
    for (uint32_t i = 0; i < 64; i++)
        assert_int_equal(tm2__idmap_insert(&m, nm.s[i], i + 640), 0);
    for (uint32_t i = 0; i < 64; i++)
        assert_int_equal(tm2__idmap_find(&m, nm.s[i]), i + 640);
    assert_int_equal(tm2__idmap_find(&m, "n64"), -1);
    assert_int_equal(tm2__idmap_update(&m, "n5", 5), 0);
    assert_int_equal(tm2__idmap_find(&m, "n5"), 5);
    assert_int_equal(tm2__idmap_update(&m, "nope", 5), TM2_ENOTFOUND);
    for (uint32_t i = 0; i < 64; i += 2)
        assert_true(tm2__idmap_remove(&m, nm.s[i]) >= 0);
    assert_int_equal(tm2__idmap_remove(&m, "n0"), TM2_ENOTFOUND);
    for (uint32_t i = 1; i < 64; i += 2)
        assert_int_equal(tm2__idmap_find(&m, nm.s[i]), i == 5 ? 5 : i + 640);
    assert_int_equal(tm2__idmap_insert(&m, "n0", UINT32_MAX), TM2_EINVAL);
    tm2__idmap_free(&m);
    assert_int_equal(tm2__idmap_init(&m, ((size_t)1 << 30) + 1, &nm, names_at, NULL), TM2_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_find_remove),
        cmocka_unit_test(duplicate_id_is_eexist),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(ids_compare_as_strings),
        cmocka_unit_test(thousands_of_peers),
        cmocka_unit_test(random_pick_is_uniform),
        cmocka_unit_test(random_model_check),
        cmocka_unit_test(idmap_basics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
