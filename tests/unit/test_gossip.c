/* The test-network gossip reactor's pure parts: message header, one test per
 * rejection rule, seen-set bound, latency histogram, totals and their JSON. */
#include <stdlib.h>
#include <string.h>

#include "tv.h"

/* The reactor is part of the program, not the library: compile it in. */
#include "cli/gossip.c"

static void header_round_trip(void **state)
{
    (void)state;
    cli_gossip_msg m = {.hops = 3, .origin = 0x01020304u, .seq = 0x1122334455667788ull,
                        .sent_us = 0x0102030405060708ull};
    uint8_t b[CLI_GOSSIP_HEADER + 5] = {0};
    cli_gossip_encode_header(&m, b);
    static const uint8_t want[CLI_GOSSIP_HEADER] = {
        0x01, 0x03, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x11, 0x22, 0x33, 0x44,
        0x55, 0x66, 0x77, 0x88, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    assert_memory_equal(b, want, sizeof want);
    cli_gossip_msg d;
    assert_int_equal(cli_gossip_decode(b, sizeof b, &d), 0);
    assert_int_equal(d.hops, 3);
    assert_int_equal(d.origin, m.origin);
    assert_true(d.seq == m.seq);
    assert_true(d.sent_us == m.sent_us);
    assert_int_equal(d.payload_len, 5);
    /* header only, and the largest payload */
    assert_int_equal(cli_gossip_decode(b, CLI_GOSSIP_HEADER, &d), 0);
    assert_int_equal(d.payload_len, 0);
    uint8_t *big = calloc(1, CLI_GOSSIP_HEADER + CLI_GOSSIP_MAX_PAYLOAD + 1);
    assert_non_null(big);
    cli_gossip_encode_header(&m, big);
    assert_int_equal(cli_gossip_decode(big, CLI_GOSSIP_HEADER + CLI_GOSSIP_MAX_PAYLOAD, &d), 0);
    assert_int_equal(cli_gossip_decode(big, CLI_GOSSIP_HEADER + CLI_GOSSIP_MAX_PAYLOAD + 1, &d), TM2_EPROTO);
    free(big);
}

static void reject_short(void **state)
{
    (void)state;
    uint8_t b[CLI_GOSSIP_HEADER] = {1};
    cli_gossip_msg d;
    assert_int_equal(cli_gossip_decode(b, CLI_GOSSIP_HEADER - 1, &d), TM2_EPROTO);
    assert_int_equal(cli_gossip_decode(b, 0, &d), TM2_EPROTO);
}

static void reject_version(void **state)
{
    (void)state;
    uint8_t b[CLI_GOSSIP_HEADER] = {0};
    cli_gossip_msg d;
    assert_int_equal(cli_gossip_decode(b, sizeof b, &d), TM2_EPROTO);
    b[0] = 2;
    assert_int_equal(cli_gossip_decode(b, sizeof b, &d), TM2_EPROTO);
}

static void reject_hops(void **state)
{
    (void)state;
    uint8_t b[CLI_GOSSIP_HEADER] = {1, CLI_GOSSIP_MAX_HOPS};
    cli_gossip_msg d;
    assert_int_equal(cli_gossip_decode(b, sizeof b, &d), 0);
    b[1] = CLI_GOSSIP_MAX_HOPS + 1;
    assert_int_equal(cli_gossip_decode(b, sizeof b, &d), TM2_EPROTO);
}

static void reject_reserved(void **state)
{
    (void)state;
    uint8_t b[CLI_GOSSIP_HEADER] = {1, 0, 1, 0};
    cli_gossip_msg d;
    assert_int_equal(cli_gossip_decode(b, sizeof b, &d), TM2_EPROTO);
    b[2] = 0;
    b[3] = 0x80;
    assert_int_equal(cli_gossip_decode(b, sizeof b, &d), TM2_EPROTO);
}

/* The seen-set remembers at least seen_cap / 2 IDs and forgets the oldest
 * half at once; key 0 is an ID like any other. */
static void seen_set_bound(void **state)
{
    (void)state;
    cli_gossip_config cfg = {.origin = 1, .seen_cap = 8, .seconds = 4};
    cli_gossip *g;
    assert_int_equal(cli_gossip_new(&cfg, &g), 0);
    assert_false(seen_check_insert(g, 0));
    assert_true(seen_check_insert(g, 0));
    for (uint64_t k = 1; k <= 4; k++)
        assert_false(seen_check_insert(g, k));
    for (uint64_t k = 0; k <= 4; k++)
        assert_true(seen_check_insert(g, k));
    /* 5 fill the first generation (max 5); the next 5 go to a fresh one,
     * the first 5 still remembered in the old generation */
    for (uint64_t k = 100; k < 105; k++)
        assert_false(seen_check_insert(g, k));
    assert_true(seen_check_insert(g, 0));
    assert_true(seen_check_insert(g, 104));
    /* a third generation drops the first */
    for (uint64_t k = 200; k < 205; k++)
        assert_false(seen_check_insert(g, k));
    assert_true(seen_check_insert(g, 100));
    assert_true(seen_check_insert(g, 204));
    assert_false(seen_check_insert(g, 3));
    cli_gossip_free(g);
    cli_gossip_free(NULL);
}

static void config_checks(void **state)
{
    (void)state;
    cli_gossip_config cfg = {.payload = CLI_GOSSIP_MAX_PAYLOAD + 1};
    cli_gossip *g = NULL;
    assert_int_equal(cli_gossip_new(&cfg, &g), TM2_EINVAL);
    assert_null(g);
    cfg.payload = 10;
    assert_int_equal(cli_gossip_new(&cfg, &g), 0);
    const tm2_reactor *r = cli_gossip_reactor(g);
    assert_int_equal(r->n_channels, 1);
    assert_int_equal(r->channels[0].id, CLI_GOSSIP_CHANNEL);
    assert_true(r->channels[0].recv_message_capacity >= CLI_GOSSIP_HEADER + CLI_GOSSIP_MAX_PAYLOAD);
    /* per-second counters: before the epoch is second 0, past the end the last */
    g->cfg.epoch_ms = 10000;
    g->cfg.seconds = 5;
    assert_int_equal(sec_of(g, 0), 0);
    assert_int_equal(sec_of(g, 11999), 1);
    assert_int_equal(sec_of(g, 10000 + 4999), 4);
    assert_int_equal(sec_of(g, UINT64_MAX), 4);
    cli_gossip_free(g);
}

static void histogram(void **state)
{
    (void)state;
    assert_int_equal(cli_hist_bucket(0), 0);
    assert_int_equal(cli_hist_bucket(63), 63);
    assert_int_equal(cli_hist_bucket(64), 64);
    assert_int_equal(cli_hist_bucket(UINT64_MAX), CLI_HIST_BUCKETS - 1);
    unsigned prev = 0;
    for (uint64_t v = 1; v < (1ull << 41); v = v * 3 / 2 + 1) {
        unsigned b = cli_hist_bucket(v);
        assert_true(b >= prev);
        prev = b;
        uint64_t lo = cli_hist_lower(b);
        assert_true(lo <= v);
        assert_true((double)(v - lo) <= (double)v / 32.0 + 1);
        assert_int_equal(cli_hist_bucket(lo), b);
    }
    uint64_t h[CLI_HIST_BUCKETS] = {0};
    assert_int_equal(cli_hist_quantile(h, 0.5), 0);
    for (uint64_t v = 1; v <= 100; v++)
        h[cli_hist_bucket(v * 1000)]++;
    assert_int_equal(cli_hist_count(h), 100);
    uint64_t p50 = cli_hist_quantile(h, 0.5), p99 = cli_hist_quantile(h, 0.99);
    assert_true(p50 <= 50000 && p50 >= 50000 - 50000 / 32);
    assert_true(p99 <= 99000 && p99 >= 99000 - 99000 / 32);
    assert_true(cli_hist_quantile(h, 1.0) <= 100000);
    assert_true(cli_hist_quantile(h, 0.0) <= 1000);
}

static void totals_json_round_trip(void **state)
{
    (void)state;
    cli_gossip_totals a, b;
    assert_int_equal(cli_gossip_totals_init(&a, 10), 0);
    assert_int_equal(cli_gossip_totals_init(&b, 4), 0);
    a.originated = 7;
    a.delivered = 60;
    a.duplicates = 5;
    a.forwarded = 100;
    a.send_failed = 1;
    a.malformed = 2;
    a.orig_by_sec[0] = 3;
    a.orig_by_sec[9] = 4;
    a.deliv_by_sec[2] = 60;
    a.hist[cli_hist_bucket(12345)] = 60;
    cJSON *j = cli_gossip_totals_to_json(&a);
    assert_non_null(j);
    /* into a shorter range: later seconds add to the last */
    assert_int_equal(cli_gossip_totals_add_json(&b, j), 0);
    assert_int_equal(b.originated, 7);
    assert_int_equal(b.delivered, 60);
    assert_int_equal(b.duplicates, 5);
    assert_int_equal(b.forwarded, 100);
    assert_int_equal(b.send_failed, 1);
    assert_int_equal(b.malformed, 2);
    assert_int_equal(b.orig_by_sec[0], 3);
    assert_int_equal(b.orig_by_sec[3], 4);
    assert_int_equal(b.deliv_by_sec[2], 60);
    assert_memory_equal(b.hist, a.hist, sizeof a.hist);
    assert_int_equal(cli_gossip_sum(b.orig_by_sec, b.seconds, 1), 4);
    /* merge adds */
    cli_gossip_totals_merge(&b, &a);
    assert_int_equal(b.originated, 14);
    assert_int_equal(b.orig_by_sec[3], 8);
    assert_int_equal(b.hist[cli_hist_bucket(12345)], 120);
    cJSON_Delete(j);

    /* malformed status text is refused */
    static const char *const bad[] = {
        "[]",
        "{}",
        "{\"originated\":-1,\"delivered\":0,\"duplicates\":0,\"forwarded\":0,\"send_failed\":0,\"malformed\":0,"
        "\"orig_by_sec\":[],\"deliv_by_sec\":[],\"latency_us_hist\":[]}",
        "{\"originated\":1,\"delivered\":0,\"duplicates\":0,\"forwarded\":0,\"send_failed\":0,\"malformed\":0,"
        "\"orig_by_sec\":[[0]],\"deliv_by_sec\":[],\"latency_us_hist\":[]}",
        "{\"originated\":1,\"delivered\":0,\"duplicates\":0,\"forwarded\":0,\"send_failed\":0,\"malformed\":0,"
        "\"orig_by_sec\":[],\"deliv_by_sec\":[],\"latency_us_hist\":[[99999,1]]}",
        "{\"originated\":1,\"delivered\":0,\"duplicates\":0,\"forwarded\":0,\"send_failed\":0,\"malformed\":0,"
        "\"orig_by_sec\":[[-1,1]],\"deliv_by_sec\":[],\"latency_us_hist\":[]}",
        "{\"originated\":1,\"delivered\":0,\"duplicates\":0,\"forwarded\":0,\"send_failed\":0,\"malformed\":0,"
        "\"orig_by_sec\":{},\"deliv_by_sec\":[],\"latency_us_hist\":[]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *x = cJSON_Parse(bad[i]);
        assert_non_null(x);
        if (cli_gossip_totals_add_json(&b, x) != -1)
            fail_msg("accepted %s", bad[i]);
        cJSON_Delete(x);
    }
    cli_gossip_totals_free(&a);
    cli_gossip_totals_free(&b);
}

static void totals_from_reactor(void **state)
{
    (void)state;
    cli_gossip_config cfg = {.origin = 2, .seconds = 3, .epoch_ms = 0};
    cli_gossip *g;
    assert_int_equal(cli_gossip_new(&cfg, &g), 0);
    g->originated = 4;
    g->delivered = 9;
    g->orig_by_sec[2] = 4;
    g->deliv_by_sec[1] = 9;
    g->hist[70] = 9;
    cli_gossip_totals t;
    assert_int_equal(cli_gossip_totals_init(&t, 2), 0);
    cli_gossip_add_totals(g, &t);
    cli_gossip_add_totals(g, &t);
    assert_int_equal(t.originated, 8);
    assert_int_equal(t.delivered, 18);
    assert_int_equal(t.orig_by_sec[1], 8);   /* second 2 clamps into the last */
    assert_int_equal(t.deliv_by_sec[1], 18);
    assert_int_equal(t.hist[70], 18);
    cli_gossip_totals_free(&t);
    cli_gossip_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_round_trip),
        cmocka_unit_test(reject_short),
        cmocka_unit_test(reject_version),
        cmocka_unit_test(reject_hops),
        cmocka_unit_test(reject_reserved),
        cmocka_unit_test(seen_set_bound),
        cmocka_unit_test(config_checks),
        cmocka_unit_test(histogram),
        cmocka_unit_test(totals_json_round_trip),
        cmocka_unit_test(totals_from_reactor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
