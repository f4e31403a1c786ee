#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switch/dial_queue.h"
#include "tm2p2p/error.h"
#include "tm2p2p/key.h"
#include "tv.h"


/* Address i: a real-looking ID and 127.0.0.1:port (never dialled). */
static tm2_netaddr addr_of(uint32_t i, uint16_t port)
{
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    uint8_t pub[TM2_PUBKEY_SIZE] = {0};
    memcpy(pub, &i, sizeof i);
    pub[31] = 0xd1;
    tm2_id_from_pubkey(pub, &a.id);
    a.ip[10] = 0xff;
    a.ip[11] = 0xff;
    a.ip[12] = 127;
    a.ip[15] = 1;
    a.port = port;
    return a;
}

static void orders_by_due_time(void **state)
{
    (void)state;
    tm2__dialq q;
    assert_int_equal(tm2__dialq_init(&q, 16, NULL), 0);
    const uint64_t due[] = {50, 10, 40, 30, 20, 0, 60};
    for (uint32_t i = 0; i < 7; i++) {
        tm2_netaddr a = addr_of(i, (uint16_t)(1000 + i));
        assert_int_equal(tm2__dialq_push(&q, due[i], &a, 0), 0);
    }
    assert_int_equal(tm2__dialq_count(&q), 7);
    uint64_t next;
    assert_true(tm2__dialq_next_due(&q, &next));
    assert_true(next == 0);

    tm2__dial_item it;
    uint64_t prev = 0;
    for (int k = 0; k < 7; k++) {
        assert_true(tm2__dialq_pop_due(&q, 1000, &it));
        assert_true(it.due_ms >= prev);
        assert_true(it.due_ms == (uint64_t)k * 10);
        prev = it.due_ms;
    }
    assert_false(tm2__dialq_pop_due(&q, 1000, &it));
    assert_false(tm2__dialq_next_due(&q, &next));
    tm2__dialq_free(&q);
}

static void pops_only_due_items(void **state)
{
    (void)state;
    tm2__dialq q;
    assert_int_equal(tm2__dialq_init(&q, 4, NULL), 0);
    tm2_netaddr a = addr_of(1, 1), b = addr_of(2, 2);
    assert_int_equal(tm2__dialq_push(&q, 100, &a, 0), 0);
    assert_int_equal(tm2__dialq_push(&q, 200, &b, 0), 0);
    tm2__dial_item it;
    assert_false(tm2__dialq_pop_due(&q, 99, &it));
    assert_true(tm2__dialq_pop_due(&q, 100, &it));
    assert_string_equal(it.addr.id.s, a.id.s);
    assert_false(tm2__dialq_pop_due(&q, 150, &it));
    uint64_t next;
    assert_true(tm2__dialq_next_due(&q, &next));
    assert_true(next == 200);
    assert_true(tm2__dialq_pop_due(&q, 500, &it));
    assert_string_equal(it.addr.id.s, b.id.s);
    assert_int_equal(tm2__dialq_count(&q), 0);
    tm2__dialq_free(&q);
}

static void equal_times_are_fifo(void **state)
{
    (void)state;
    tm2__dialq q;
    assert_int_equal(tm2__dialq_init(&q, 64, NULL), 0);
    /* Three due times, pushed interleaved: within each time, push order. */
    for (uint32_t i = 0; i < 48; i++) {
        tm2_netaddr a = addr_of(i, (uint16_t)i);
        assert_int_equal(tm2__dialq_push(&q, 1000 + (i % 3) * 10, &a, 0), 0);
    }
    tm2__dial_item it;
    for (uint32_t t = 0; t < 3; t++) {
        for (uint32_t k = 0; k < 16; k++) {
            assert_true(tm2__dialq_pop_due(&q, 5000, &it));
            assert_true(it.due_ms == 1000 + t * 10);
            assert_int_equal(it.addr.port, k * 3 + t);
        }
    }
    tm2__dialq_free(&q);
}

static void dedupe_keeps_earlier_time(void **state)
{
    (void)state;
    tm2__dialq q;
    assert_int_equal(tm2__dialq_init(&q, 8, NULL), 0);
    tm2_netaddr a1 = addr_of(1, 1111), a2 = addr_of(1, 2222), a3 = addr_of(1, 3333);
    tm2_netaddr b = addr_of(2, 5);
    assert_int_equal(tm2__dialq_push(&q, 500, &a1, 0), 0);
    assert_int_equal(tm2__dialq_push(&q, 300, &b, 0), 0);

    /* Later time: merged, nothing changes but the flags. */
    assert_int_equal(tm2__dialq_push(&q, 900, &a2, TM2__DIAL_PERSISTENT), 1);
    assert_int_equal(tm2__dialq_count(&q), 2);
    const tm2__dial_item *f = tm2__dialq_find(&q, &a1.id);
    assert_non_null(f);
    assert_true(f->due_ms == 500);
    assert_int_equal(f->addr.port, 1111);
    assert_int_equal(f->flags, TM2__DIAL_PERSISTENT);

    /* Earlier time: the entry moves up and takes the new address. */
    assert_int_equal(tm2__dialq_push(&q, 100, &a3, 0), 1);
    assert_int_equal(tm2__dialq_count(&q), 2);
    f = tm2__dialq_find(&q, &a1.id);
    assert_true(f->due_ms == 100);
    assert_int_equal(f->addr.port, 3333);
    assert_int_equal(f->flags, TM2__DIAL_PERSISTENT);

    tm2__dial_item it;
    assert_true(tm2__dialq_pop_due(&q, 1000, &it));
    assert_string_equal(it.addr.id.s, a1.id.s);
    assert_true(it.due_ms == 100);
    assert_true(tm2__dialq_pop_due(&q, 1000, &it));
    assert_string_equal(it.addr.id.s, b.id.s);
    assert_false(tm2__dialq_contains(&q, &a1.id));

    /* Equal time merges too; the position among equals is kept. */
    tm2_netaddr c = addr_of(3, 3), d = addr_of(4, 4);
    assert_int_equal(tm2__dialq_push(&q, 50, &c, 0), 0);
    assert_int_equal(tm2__dialq_push(&q, 50, &d, 0), 0);
    assert_int_equal(tm2__dialq_push(&q, 50, &c, 0), 1);
    assert_true(tm2__dialq_pop_due(&q, 50, &it));
    assert_string_equal(it.addr.id.s, c.id.s);
    tm2__dialq_free(&q);
}

static void capacity(void **state)
{
    (void)state;
    tm2__dialq q;
    assert_int_equal(tm2__dialq_init(&q, 3, NULL), 0);
    tm2_netaddr a[5];
    for (uint32_t i = 0; i < 5; i++)
        a[i] = addr_of(i, (uint16_t)i);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tm2__dialq_push(&q, 10, &a[i], 0), 0);
    assert_int_equal(tm2__dialq_push(&q, 10, &a[3], 0), TM2_EFULL);
    assert_false(tm2__dialq_contains(&q, &a[3].id));
    assert_int_equal(tm2__dialq_count(&q), 3);
    /* A queued ID still merges while full. */
    assert_int_equal(tm2__dialq_push(&q, 5, &a[2], 0), 1);
    tm2__dial_item it;
    assert_true(tm2__dialq_pop_due(&q, 10, &it));
    assert_string_equal(it.addr.id.s, a[2].id.s);
    assert_int_equal(tm2__dialq_push(&q, 10, &a[3], 0), 0);
    assert_int_equal(tm2__dialq_push(&q, 10, &a[4], 0), TM2_EFULL);
    assert_int_equal(tm2__dialq_remove(&q, &a[0].id, NULL), 0);
    assert_int_equal(tm2__dialq_push(&q, 10, &a[4], 0), 0);
    assert_int_equal(tm2__dialq_count(&q), 3);
    tm2__dialq_free(&q);
}

static void remove_and_contains(void **state)
{
    (void)state;
    tm2__dialq q;
    assert_int_equal(tm2__dialq_init(&q, 16, NULL), 0);
    tm2_netaddr a[10];
    for (uint32_t i = 0; i < 10; i++) {
        a[i] = addr_of(i, (uint16_t)(i + 1));
        assert_int_equal(tm2__dialq_push(&q, 100 - i * 10, &a[i], i == 4 ? TM2__DIAL_PERSISTENT : 0), 0);
    }
    for (int i = 0; i < 10; i++)
        assert_true(tm2__dialq_contains(&q, &a[i].id));
    tm2__dial_item it;
    assert_int_equal(tm2__dialq_remove(&q, &a[4].id, &it), 0);
    assert_int_equal(it.addr.port, 5);
    assert_true(it.due_ms == 60);
    assert_int_equal(it.flags, TM2__DIAL_PERSISTENT);
    assert_false(tm2__dialq_contains(&q, &a[4].id));
    assert_null(tm2__dialq_find(&q, &a[4].id));
    assert_int_equal(tm2__dialq_remove(&q, &a[4].id, &it), TM2_ENOTFOUND);
    /* Remove the head too; the rest still comes out in order. */
    assert_int_equal(tm2__dialq_remove(&q, &a[9].id, NULL), 0);
    uint64_t prev = 0;
    int n = 0;
    while (tm2__dialq_pop_due(&q, 1000, &it)) {
        assert_true(it.due_ms > prev);
        prev = it.due_ms;
        n++;
    }
    assert_int_equal(n, 8);
    tm2__dialq_free(&q);
}

static void rejects_bad_input(void **state)
{
    (void)state;
    tm2__dialq q;
    assert_int_equal(tm2__dialq_init(&q, 0, NULL), TM2_EINVAL);
    assert_int_equal(tm2__dialq_init(&q, TM2__DIALQ_MAX_CAP + 1, NULL), TM2_EINVAL);
    assert_int_equal(tm2__dialq_init(&q, 2, NULL), 0);
    tm2_netaddr noid = addr_of(1, 1);
    noid.id.s[0] = '\0';
    assert_int_equal(tm2__dialq_push(&q, 0, &noid, 0), TM2_EINVAL);
    assert_int_equal(tm2__dialq_push(&q, 0, NULL, 0), TM2_EINVAL);
    tm2_netaddr unterminated = addr_of(1, 1);
    memset(unterminated.id.s, 'q', sizeof unterminated.id.s);
    assert_int_equal(tm2__dialq_push(&q, 0, &unterminated, 0), TM2_EINVAL);
    assert_false(tm2__dialq_contains(&q, &unterminated.id));
    assert_int_equal(tm2__dialq_remove(&q, &noid.id, NULL), TM2_ENOTFOUND);
    assert_int_equal(tm2__dialq_count(&q), 0);
    tm2__dialq_free(&q);
}

/* Random operations against a plain array that finds the minimum by scan. */
enum { M_IDS = 300, M_CAP = 128 };

struct m_item {
    int queued;
    uint64_t due, seq;
    uint16_t port;
    unsigned flags;
};

static void random_model_check(void **state)
{
    (void)state;
    static tm2_netaddr ids[M_IDS];
    for (uint32_t i = 0; i < M_IDS; i++)
        ids[i] = addr_of(i, 0);
    static struct m_item m[M_IDS];
    memset(m, 0, sizeof m);
    size_t n = 0;
    uint64_t seq = 0, now = 0, x = 0x0123456789abcdefull;
    uint16_t port = 0;
    unsigned fulls = 0, merges = 0, moved_up = 0, pops = 0, removes = 0;

    tm2__dialq q;
    assert_int_equal(tm2__dialq_init(&q, M_CAP, NULL), 0);
    for (int op = 0; op < 300000; op++) {
        uint64_t r = tv_xorshift(&x);
        uint32_t k = (uint32_t)((r >> 16) % M_IDS);
        /* Alternate phases: in a filling phase time stands still and new
         * items are not yet due, so the queue reaches its capacity. */
        bool filling = (op / 15000) % 2 == 1;
        switch ((r >> 8) % 8) {
        case 0:
        case 1:
        case 2: {
            /* Due times in a narrow window so that ties are common. */
            uint64_t due = now + filling + (r >> 40) % 16;
            unsigned flags = (r >> 36) & 1u;
            tm2_netaddr a = ids[k];
            a.port = ++port;
            int got = tm2__dialq_push(&q, due, &a, flags);
            if (m[k].queued) {
                assert_int_equal(got, 1);
                merges++;
                m[k].flags |= flags;
                if (due < m[k].due) {
                    moved_up++;
                    m[k].due = due;
                    m[k].port = port;
                    m[k].seq = seq++;
                }
            } else if (n == M_CAP) {
                assert_int_equal(got, TM2_EFULL);
                fulls++;
            } else {
                assert_int_equal(got, 0);
                m[k] = (struct m_item){1, due, seq++, port, flags};
                n++;
            }
            break;
        }
        case 3:
        case 4: {
            /* Model: the smallest (due, seq) among items due by now. */
            int best = -1;
            for (int i = 0; i < M_IDS; i++) {
                if (!m[i].queued || m[i].due > now)
                    continue;
                if (best < 0 || m[i].due < m[best].due ||
                    (m[i].due == m[best].due && m[i].seq < m[best].seq))
                    best = i;
            }
            tm2__dial_item it;
            bool got = tm2__dialq_pop_due(&q, now, &it);
            assert_int_equal(got, best >= 0);
            if (best >= 0) {
                assert_string_equal(it.addr.id.s, ids[best].id.s);
                assert_true(it.due_ms == m[best].due);
                assert_int_equal(it.addr.port, m[best].port);
                assert_int_equal(it.flags, m[best].flags);
                m[best].queued = 0;
                n--;
                pops++;
            }
            break;
        }
        case 5: {
            tm2__dial_item it;
            int got = tm2__dialq_remove(&q, &ids[k].id, &it);
            if (m[k].queued) {
                assert_int_equal(got, 0);
                assert_int_equal(it.addr.port, m[k].port);
                assert_true(it.due_ms == m[k].due);
                m[k].queued = 0;
                n--;
                removes++;
            } else {
                assert_int_equal(got, TM2_ENOTFOUND);
            }
            break;
        }
        case 6: {
            const tm2__dial_item *f = tm2__dialq_find(&q, &ids[k].id);
            assert_int_equal(f != NULL, m[k].queued);
            assert_int_equal(tm2__dialq_contains(&q, &ids[k].id), m[k].queued);
            if (f) {
                assert_true(f->due_ms == m[k].due);
                assert_int_equal(f->flags, m[k].flags);
            }
            break;
        }
        case 7:
            if (!filling)
                now += (r >> 48) % 4;
            break;
        }
        assert_int_equal(tm2__dialq_count(&q), n);
        uint64_t next, want = UINT64_MAX;
        for (int i = 0; i < M_IDS; i++)
            if (m[i].queued && m[i].due < want)
                want = m[i].due;
        assert_int_equal(tm2__dialq_next_due(&q, &next), n > 0);
        if (n > 0)
            assert_true(next == want);
    }
    /* Every path was taken many times. */
    assert_true(fulls > 1000 && merges > 1000 && moved_up > 1000 && pops > 1000 && removes > 1000);
    tm2__dialq_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(orders_by_due_time),
        cmocka_unit_test(pops_only_due_items),
        cmocka_unit_test(equal_times_are_fifo),
        cmocka_unit_test(dedupe_keeps_earlier_time),
        cmocka_unit_test(capacity),
        cmocka_unit_test(remove_and_contains),
        cmocka_unit_test(rejects_bad_input),
        cmocka_unit_test(random_model_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
