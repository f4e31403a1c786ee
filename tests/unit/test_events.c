#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "switch/events.h"
#include "tm2p2p/error.h"
#include "tm2p2p/events.h"
#include "tv.h"

/* How long a test waits for another thread before it fails (never a sleep:
 * loops poll a condition until this deadline). */
#define WAIT_MS 10000

static void make_id(uint32_t i, tm2_id *id)
{
    uint8_t pub[TM2_PUBKEY_SIZE] = {0};
    memcpy(pub, &i, sizeof i);
    pub[31] = 0xe7;
    tm2_id_from_pubkey(pub, id);
}

static tm2_event event_for(tm2_event_type type, uint32_t peer, int reason)
{
    tm2_id id;
    make_id(peer, &id);
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    a.id = id;
    a.ip[10] = a.ip[11] = 0xff;
    a.ip[12] = 127;
    a.ip[15] = 1;
    a.port = (uint16_t)(20000 + peer);
    tm2_event ev;
    tm2__event_fill(&ev, 1000u + (uint64_t)peer, 1700000000000 + peer, type, &id, &a, peer % 2 == 0,
                    reason, NULL);
    return ev;
}

static bool fd_readable(tm2_subscription *s)
{
    struct pollfd p = {.fd = tm2_subscription_fd(s), .events = POLLIN};
    int n = poll(&p, 1, 0);
    assert_true(n >= 0);
    return n == 1 && (p.revents & POLLIN);
}

/* Spins (yielding) until s has a reader blocked in next(). */
static void wait_until_waiting(tm2_subscription *s)
{
    uint64_t end = tv_now_ms() + WAIT_MS;
    while (!tm2__subscription_waiting(s)) {
        assert_true(tv_now_ms() < end);
        sched_yield();
    }
}

static void fill_event(void **state)
{
    (void)state;
    tm2_event ev = event_for(TM2_EVENT_PEER_DISCONNECTED, 3, TM2_EPONG);
    assert_int_equal(ev.type, TM2_EVENT_PEER_DISCONNECTED);
    assert_int_equal(ev.reason, TM2_EPONG);
    assert_string_equal(ev.reason_text, tm2_strerror(TM2_EPONG));
    assert_int_equal(ev.addr.port, 20003);
    assert_false(ev.outbound);
    tm2_event e2;
    tm2__event_fill(&e2, 7, 8, TM2_EVENT_PEER_CONNECTED, NULL, NULL, true, 0, NULL);
    assert_int_equal(e2.mono_ms, 7);
    assert_int_equal(e2.unix_ms, 8);
    assert_string_equal(e2.peer_id.s, "");
    assert_string_equal(e2.reason_text, "");
    assert_true(e2.outbound);
    char long_text[400];
    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    tm2__event_fill(&e2, 0, 0, TM2_EVENT_PEER_REJECTED, NULL, NULL, false, TM2_ELIMIT, long_text);
    assert_int_equal(strlen(e2.reason_text), TM2_EVENT_REASON_LEN - 1);
}

static void filter_by_mask(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *conn, *fails;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_PEER_CONNECTED, NULL, 0, &conn), 0);
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_DIAL_FAILED | TM2_EVENT_PEER_REJECTED, NULL, 0,
                                           &fails), 0);
    assert_int_equal(tm2__events_count(r), 2);

    tm2_event in[4] = {
        event_for(TM2_EVENT_PEER_CONNECTED, 1, 0),
        event_for(TM2_EVENT_PEER_DISCONNECTED, 1, TM2_EPONG),
        event_for(TM2_EVENT_DIAL_FAILED, 2, TM2_ECONNREFUSED),
        event_for(TM2_EVENT_PEER_REJECTED, 3, TM2_EINCOMPAT),
    };
    for (int i = 0; i < 4; i++)
        tm2__events_publish(r, &in[i]);

    tm2_event ev;
    assert_int_equal(tm2_subscription_next(conn, &ev, 0), 0);
    assert_memory_equal(&ev, &in[0], sizeof ev);
    assert_int_equal(tm2_subscription_next(conn, &ev, 0), TM2_ETIMEDOUT);

    assert_int_equal(tm2_subscription_next(fails, &ev, 0), 0);
    assert_memory_equal(&ev, &in[2], sizeof ev);
    assert_int_equal(tm2_subscription_next(fails, &ev, 0), 0);
    assert_memory_equal(&ev, &in[3], sizeof ev);
    assert_int_equal(tm2_subscription_next(fails, &ev, 0), TM2_ETIMEDOUT);
    assert_int_equal(tm2_subscription_dropped(conn), 0);

    tm2_unsubscribe(conn);
    assert_int_equal(tm2__events_count(r), 1);
    tm2_unsubscribe(fails);
    assert_int_equal(tm2__events_count(r), 0);
    tm2__events_free(r);
}

static void filter_by_peer(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_id a;
    make_id(1, &a);
    tm2_subscription *sa, *all;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, &a, 0, &sa), 0);
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &all), 0);
    for (uint32_t p = 0; p < 4; p++) {
        tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, p, 0);
        tm2__events_publish(r, &e);
    }
    tm2_event ev;
    assert_int_equal(tm2_subscription_next(sa, &ev, 0), 0);
    assert_string_equal(ev.peer_id.s, a.s);
    assert_int_equal(tm2_subscription_next(sa, &ev, 0), TM2_ETIMEDOUT);
    for (uint32_t p = 0; p < 4; p++) {
        assert_int_equal(tm2_subscription_next(all, &ev, 0), 0);
        assert_int_equal(ev.addr.port, 20000 + p);
    }
    assert_int_equal(tm2_subscription_next(all, &ev, 0), TM2_ETIMEDOUT);
    tm2_unsubscribe(sa);
    tm2_unsubscribe(all);
    tm2__events_free(r);
}

static void bad_arguments(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s = (tm2_subscription *)1;
    assert_int_equal(tm2__events_subscribe(r, 0, NULL, 0, &s), TM2_EINVAL);
    assert_null(s);
    assert_int_equal(tm2__events_subscribe(r, 1u << 6, NULL, 0, &s), TM2_EINVAL);
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL | 1u << 7, NULL, 0, &s), TM2_EINVAL);
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, TM2__EVENTS_MAX_QUEUE + 1, &s),
                     TM2_EINVAL);
    tm2_id empty = {{0}};
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, &empty, 0, &s), TM2_EINVAL);
    tm2_id unterminated;
    memset(unterminated.s, 'q', sizeof unterminated.s);
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, &unterminated, 0, &s), TM2_EINVAL);
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, NULL), TM2_EINVAL);
    assert_int_equal(tm2__events_count(r), 0);
    tm2_event ev;
    assert_int_equal(tm2_subscription_next(NULL, &ev, 0), TM2_EINVAL);
    assert_int_equal(tm2_subscription_fd(NULL), TM2_EINVAL);
    tm2_unsubscribe(NULL);
    tm2__events_free(r);
    tm2__events_free(NULL);
}

static void overflow_drops_newest(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 3, &s), 0);
    for (uint32_t p = 0; p < 5; p++) {
        tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, p, 0);
        tm2__events_publish(r, &e);
    }
    assert_int_equal(tm2_subscription_dropped(s), 2);
    tm2_event ev;
    for (uint32_t p = 0; p < 3; p++) {
        assert_int_equal(tm2_subscription_next(s, &ev, 0), 0);
        assert_int_equal(ev.addr.port, 20000 + p);
    }
    assert_int_equal(tm2_subscription_next(s, &ev, 0), TM2_ETIMEDOUT);
    /* Room again: the ring wraps around correctly. */
    for (uint32_t p = 10; p < 13; p++) {
        tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, p, 0);
        tm2__events_publish(r, &e);
    }
    assert_int_equal(tm2_subscription_next(s, &ev, 0), 0);
    assert_int_equal(ev.addr.port, 20010);
    tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, 13, 0);
    tm2__events_publish(r, &e);
    tm2__events_publish(r, &e);
    assert_int_equal(tm2_subscription_dropped(s), 3);
    for (uint32_t p = 11; p < 14; p++) {
        assert_int_equal(tm2_subscription_next(s, &ev, 0), 0);
        assert_int_equal(ev.addr.port, 20000 + p);
    }
    tm2_unsubscribe(s);

    /* The default queue holds 100, like the reference. */
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &s), 0);
    for (uint32_t p = 0; p < 150; p++) {
        tm2_event x = event_for(TM2_EVENT_DIAL_FAILED, p, TM2_ETIMEDOUT);
        tm2__events_publish(r, &x);
    }
    assert_int_equal(tm2_subscription_dropped(s), 50);
    int got = 0;
    while (tm2_subscription_next(s, &ev, 0) == 0)
        got++;
    assert_int_equal(got, 100);
    tm2_unsubscribe(s);
    tm2__events_free(r);
}

static void timeout_is_bounded(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &s), 0);
    tm2_event ev;
    uint64_t t0 = tv_now_ms();
    assert_int_equal(tm2_subscription_next(s, &ev, 0), TM2_ETIMEDOUT);
    assert_true(tv_now_ms() - t0 < 1000);

    t0 = tv_now_ms();
    assert_int_equal(tm2_subscription_next(s, &ev, 50), TM2_ETIMEDOUT);
    uint64_t took = tv_now_ms() - t0;
    assert_true(took >= 49);
    assert_true(took < 50 + 2000);
    tm2_unsubscribe(s);
    tm2__events_free(r);
}

static void fd_readable_exactly_while_queued(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_PEER_CONNECTED, NULL, 4, &s), 0);
    assert_true(tm2_subscription_fd(s) >= 0);
    assert_false(fd_readable(s));

    tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, 1, 0);
    tm2_event other = event_for(TM2_EVENT_DIAL_FAILED, 1, TM2_ETIMEDOUT);
    tm2__events_publish(r, &other); /* filtered out: stays quiet */
    assert_false(fd_readable(s));
    tm2__events_publish(r, &e);
    assert_true(fd_readable(s));
    tm2__events_publish(r, &e);
    assert_true(fd_readable(s));

    tm2_event ev;
    assert_int_equal(tm2_subscription_next(s, &ev, 0), 0);
    assert_true(fd_readable(s));
    assert_int_equal(tm2_subscription_next(s, &ev, 0), 0);
    assert_false(fd_readable(s));
    assert_int_equal(tm2_subscription_next(s, &ev, 0), TM2_ETIMEDOUT);
    assert_false(fd_readable(s));

    /* Full queue and drops keep it readable until drained. */
    for (int i = 0; i < 6; i++)
        tm2__events_publish(r, &e);
    assert_true(fd_readable(s));
    for (int i = 0; i < 4; i++) {
        assert_true(fd_readable(s));
        assert_int_equal(tm2_subscription_next(s, &ev, 0), 0);
    }
    assert_false(fd_readable(s));

    /* Closing makes it readable for good, after the queue drains. */
    tm2__events_publish(r, &e);
    tm2__events_close(r);
    assert_true(fd_readable(s));
    assert_int_equal(tm2_subscription_next(s, &ev, 0), 0);
    assert_true(fd_readable(s));
    assert_int_equal(tm2_subscription_next(s, &ev, 0), TM2_ECLOSED);
    assert_true(fd_readable(s));
    assert_int_equal(tm2_subscription_next(s, &ev, -1), TM2_ECLOSED);
    tm2_unsubscribe(s);
    tm2__events_free(r);
}

static void closed_registry(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s, *t;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &s), 0);
    tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, 1, 0);
    tm2__events_publish(r, &e);
    tm2__events_close(r);
    tm2__events_close(r); /* idempotent */
    assert_int_equal(tm2__events_count(r), 0);
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &t), TM2_ECLOSED);
    assert_null(t);
    tm2__events_publish(r, &e); /* ignored */
    /* The registry may go before its subscriptions. */
    tm2__events_free(r);
    tm2_event ev;
    assert_int_equal(tm2_subscription_next(s, &ev, 0), 0);
    assert_int_equal(tm2_subscription_next(s, &ev, 1000), TM2_ECLOSED);
    assert_int_equal(tm2_subscription_dropped(s), 0);
    tm2_unsubscribe(s);
}

/* ---- cross-thread --------------------------------------------------------------- */

struct reader {
    tm2_subscription *s;
    int timeout_ms;
    int events;
    int last_rc;
    uint16_t ports[16];
};

/* Reads until an error; records the events and the final code. */
static void reader_main(void *arg)
{
    struct reader *rd = arg;
    tm2_event ev;
    for (;;) {
        int rc = tm2_subscription_next(rd->s, &ev, rd->timeout_ms);
        if (rc != 0) {
            rd->last_rc = rc;
            return;
        }
        if (rd->events < 16)
            rd->ports[rd->events] = ev.addr.port;
        rd->events++;
    }
}

struct one_read {
    tm2_subscription *s;
    int timeout_ms;
    int rc;
    tm2_event ev;
};

static void one_read_main(void *arg)
{
    struct one_read *o = arg;
    o->rc = tm2_subscription_next(o->s, &o->ev, o->timeout_ms);
}

static void blocked_reader_woken_by_publish(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &s), 0);
    /* Forever, and with a long timeout: both wake on publish. */
    const int timeouts[] = {-1, 60000};
    for (int k = 0; k < 2; k++) {
        struct one_read o = {.s = s, .timeout_ms = timeouts[k], .rc = 1};
        uv_thread_t th;
        assert_int_equal(uv_thread_create(&th, one_read_main, &o), 0);
        wait_until_waiting(s);
        uint64_t t0 = tv_now_ms();
        tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, (uint32_t)(7 + k), 0);
        tm2__events_publish(r, &e);
        assert_int_equal(uv_thread_join(&th), 0);
        assert_true(tv_now_ms() - t0 < WAIT_MS);
        assert_int_equal(o.rc, 0);
        assert_memory_equal(&o.ev, &e, sizeof e);
    }
    tm2_unsubscribe(s);
    tm2__events_free(r);
}

static void blocked_reader_drains_then_closed(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &s), 0);
    struct reader rd = {.s = s, .timeout_ms = -1};
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, reader_main, &rd), 0);
    wait_until_waiting(s);
    for (uint32_t p = 0; p < 3; p++) {
        tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, p, 0);
        tm2__events_publish(r, &e);
    }
    /* The switch goes away: the reader gets what was queued, then ECLOSED. */
    tm2__events_free(r);
    assert_int_equal(uv_thread_join(&th), 0);
    assert_int_equal(rd.events, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rd.ports[i], 20000 + i);
    assert_int_equal(rd.last_rc, TM2_ECLOSED);
    tm2_unsubscribe(s);
}

static void blocked_reader_woken_by_close(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &s), 0);
    struct one_read o = {.s = s, .timeout_ms = 60000, .rc = 1};
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, one_read_main, &o), 0);
    wait_until_waiting(s);
    uint64_t t0 = tv_now_ms();
    tm2__events_close(r);
    assert_int_equal(uv_thread_join(&th), 0);
    assert_true(tv_now_ms() - t0 < WAIT_MS);
    assert_int_equal(o.rc, TM2_ECLOSED);
    tm2_unsubscribe(s);
    tm2__events_free(r);
}

static void blocked_reader_woken_by_unsubscribe(void **state)
{
    (void)state;
    tm2__events *r;
    assert_int_equal(tm2__events_new(&r), 0);
    tm2_subscription *s;
    assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 0, &s), 0);
    tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, 1, 0);
    struct one_read o = {.s = s, .timeout_ms = -1, .rc = 1};
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, one_read_main, &o), 0);
    wait_until_waiting(s);
    /* The reader still holds its own reference, so the memory it is
     * blocked on outlives the handle (ASan would see otherwise). */
    tm2_unsubscribe(s);
    assert_int_equal(uv_thread_join(&th), 0);
    assert_int_equal(o.rc, TM2_ECLOSED);
    assert_int_equal(tm2__events_count(r), 0);
    tm2__events_publish(r, &e);
    tm2__events_free(r);
}

/* Publisher on one thread, subscribers coming and going on others. */
struct race {
    tm2__events *r;
    atomic_bool stop;
    atomic_ulong published;
    atomic_int failures;    /* cmocka asserts only on the main thread */
};

static void publisher_main(void *arg)
{
    struct race *rc = arg;
    uint32_t p = 0;
    while (!atomic_load(&rc->stop)) {
        tm2_event e = event_for((tm2_event_type)(1u << (p % 4)), p % 8, 0);
        tm2__events_publish(rc->r, &e);
        atomic_fetch_add(&rc->published, 1);
        p++;
    }
}

static void churn_main(void *arg)
{
    struct race *rc = arg;
    tm2_id id;
    make_id(3, &id);
    for (int i = 0; i < 1500; i++) {
        tm2_subscription *s;
        int got = tm2__events_subscribe(rc->r, i % 2 ? TM2_EVENT_ALL : TM2_EVENT_PEER_CONNECTED,
                                        i % 3 ? NULL : &id, (size_t)(1 + i % 5), &s);
        if (got != 0) {
            atomic_fetch_add(&rc->failures, 1);
            continue;
        }
        tm2_event ev;
        for (int k = 0; k < i % 4; k++)
            (void)tm2_subscription_next(s, &ev, 0);
        tm2_unsubscribe(s);
    }
}

static void unsubscribe_races_publish(void **state)
{
    (void)state;
    struct race rc;
    assert_int_equal(tm2__events_new(&rc.r), 0);
    atomic_init(&rc.stop, false);
    atomic_init(&rc.published, 0);
    atomic_init(&rc.failures, 0);
    uv_thread_t pub, churn[3];
    assert_int_equal(uv_thread_create(&pub, publisher_main, &rc), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(uv_thread_create(&churn[i], churn_main, &rc), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(uv_thread_join(&churn[i]), 0);
    atomic_store(&rc.stop, true);
    assert_int_equal(uv_thread_join(&pub), 0);
    assert_int_equal(atomic_load(&rc.failures), 0);
    assert_true(atomic_load(&rc.published) > 0);
    assert_int_equal(tm2__events_count(rc.r), 0);
    tm2__events_free(rc.r);
}

/* The registry freed while subscribers unsubscribe and read concurrently. */
struct teardown {
    tm2_subscription *subs[8];
    int n;
    atomic_int ready;
};

static void unsubscriber_main(void *arg)
{
    struct teardown *td = arg;
    atomic_fetch_add(&td->ready, 1);
    tm2_event ev;
    for (int i = 0; i < td->n; i++) {
        /* Some drain until closed first, some let go at once. */
        if (i % 2 == 0)
            while (tm2_subscription_next(td->subs[i], &ev, 0) == 0)
                ;
        tm2_unsubscribe(td->subs[i]);
    }
}

static void free_races_unsubscribe(void **state)
{
    (void)state;
    for (int round = 0; round < 300; round++) {
        tm2__events *r;
        assert_int_equal(tm2__events_new(&r), 0);
        struct teardown td = {.n = 8};
        atomic_init(&td.ready, 0);
        for (int i = 0; i < td.n; i++)
            assert_int_equal(tm2__events_subscribe(r, TM2_EVENT_ALL, NULL, 2, &td.subs[i]), 0);
        tm2_event e = event_for(TM2_EVENT_PEER_CONNECTED, 1, 0);
        tm2__events_publish(r, &e);
        uv_thread_t th;
        assert_int_equal(uv_thread_create(&th, unsubscriber_main, &td), 0);
        if (round % 2)
            while (atomic_load(&td.ready) == 0)
                sched_yield();
        tm2__events_publish(r, &e);
        tm2__events_free(r);
        assert_int_equal(uv_thread_join(&th), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fill_event),
        cmocka_unit_test(filter_by_mask),
        cmocka_unit_test(filter_by_peer),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(overflow_drops_newest),
        cmocka_unit_test(timeout_is_bounded),
        cmocka_unit_test(fd_readable_exactly_while_queued),
        cmocka_unit_test(closed_registry),
        cmocka_unit_test(blocked_reader_woken_by_publish),
        cmocka_unit_test(blocked_reader_drains_then_closed),
        cmocka_unit_test(blocked_reader_woken_by_close),
        cmocka_unit_test(blocked_reader_woken_by_unsubscribe),
        cmocka_unit_test(unsubscribe_races_publish),
        cmocka_unit_test(free_races_unsubscribe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
