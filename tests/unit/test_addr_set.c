#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr_set.h"
#include "tm2p2p/error.h"
#include "tv.h"

/* Address i: 127.0.0.(1 + i % 4) (IPv4-mapped), port 20000 + i / 4: what a
 * hub sees from a few loopback sources. */
static void addr_of(uint32_t i, uint8_t ip[16], uint16_t *port)
{
    memset(ip, 0, 16);
    ip[10] = ip[11] = 0xff;
    ip[12] = 127;
    ip[15] = (uint8_t)(1 + i % 4);
    *port = (uint16_t)(20000 + i / 4);
}

static void add_find_delete(void **state)
{
    (void)state;
    tm2__addr_set s;
    assert_int_equal(tm2__addr_set_init(&s, NULL), 0);
    uint8_t ip[16];
    uint16_t port;
    addr_of(0, ip, &port);
    assert_null(tm2__addr_set_find(&s, ip, port));
    assert_int_equal(tm2__addr_set_add(&s, ip, port), 0);
    tm2__addr_key *k = tm2__addr_set_find(&s, ip, port);
    assert_non_null(k);
    assert_false(k->active);
    k->active = true;
    assert_true(tm2__addr_set_find(&s, ip, port)->active);
    /* Same IP, other port; same port, other IP: distinct. */
    assert_null(tm2__addr_set_find(&s, ip, (uint16_t)(port + 1)));
    ip[15]++;
    assert_null(tm2__addr_set_find(&s, ip, port));
    ip[15]--;
    tm2__addr_set_del(&s, tm2__addr_set_find(&s, ip, port));
    assert_null(tm2__addr_set_find(&s, ip, port));
    assert_int_equal(s.n, 0);
    tm2__addr_set_free(&s);
    tm2__addr_set_free(&s);
}

/* 20,000 entries, deleted in a random order interleaved with re-adds,
 * checked against a model after every step (growth and backward-shift
 * deletion keep every entry findable, and nothing else). */
static void many_against_model(void **state)
{
    (void)state;
    enum { N = 20000 };
    tm2__addr_set s;
    assert_int_equal(tm2__addr_set_init(&s, NULL), 0);
    bool *in = calloc(N, sizeof *in);
    assert_non_null(in);
    uint8_t ip[16];
    uint16_t port;
    for (uint32_t i = 0; i < N; i++) {
        addr_of(i, ip, &port);
        assert_int_equal(tm2__addr_set_add(&s, ip, port), 0);
        in[i] = true;
    }
    assert_int_equal(s.n, N);
    uint64_t x = 0x9e3779b97f4a7c15u;
    size_t n = N;
    for (int step = 0; step < 4 * N; step++) {
        tv_xorshift(&x);
        uint32_t i = (uint32_t)(x % N);
        addr_of(i, ip, &port);
        tm2__addr_key *k = tm2__addr_set_find(&s, ip, port);
        assert_int_equal(k != NULL, in[i]);
        if (k) {
            tm2__addr_set_del(&s, k);
            n--;
        } else {
            assert_int_equal(tm2__addr_set_add(&s, ip, port), 0);
            n++;
        }
        in[i] = !in[i];
        assert_int_equal(s.n, n);
        if (step % 4096 == 0)
            for (uint32_t j = 0; j < N; j++) {
                addr_of(j, ip, &port);
                assert_int_equal(tm2__addr_set_find(&s, ip, port) != NULL, in[j]);
            }
    }
    for (uint32_t j = 0; j < N; j++) {
        addr_of(j, ip, &port);
        assert_int_equal(tm2__addr_set_find(&s, ip, port) != NULL, in[j]);
    }
    free(in);
    tm2__addr_set_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_find_delete),
        cmocka_unit_test(many_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
