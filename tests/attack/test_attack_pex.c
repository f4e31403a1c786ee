/* Attacks on peer exchange: a Request flood, unsolicited and oversized
 * answers carrying 10,000 bogus addresses, and one peer announcing a
 * thousand addresses of one /24. Each runs while the node serves four
 * honest peers exchanging messages (attack_support.h); see
 * tests/attack/README.md. Bogus addresses are all in 127.0.0.0/8, on ports
 * where nothing listens. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <sys/stat.h>

#include "attack_support.h"

#define CLOSE_MS 5000
#define BOGUS 10000

/* ---- Request flood --------------------------------------------------------------------- */

/* Requests back to back, far closer than the node's minimum gap between
 * two Requests of one peer: each early one is ignored and is a strike,
 * and at the abuse limit (10) the node stops the peer. */
static void request_flood(void **state)
{
    arena *a = *state;
    enum { ROUNDS = 5, REQS = 1000 };
    tm2_discovery_stats d0 = target_pex(&a->t);
    tm2_switch_counters *c0 = target_stats(&a->t);
    uint8_t req[TM2__PEX_REQUEST_SIZE];
    assert_int_equal(tm2__pex_encode_request(req, sizeof req), TM2__PEX_REQUEST_SIZE);
    uint8_t *burst = malloc(REQS * 64);
    assert_non_null(burst);
    size_t blen = 0;
    for (int i = 0; i < REQS; i++) {
        int k = tm2__packet_encode_msg(burst + blen, 64, TM2_DISCOVERY_CHANNEL, 1, req, sizeof req);
        assert_true(k > 0);
        blen += (size_t)k;
    }
    arena_begin(a);
    for (int i = 0; i < ROUNDS; i++) {
        char src[32];
        snprintf(src, sizeof src, "127.71.0.%d", i + 1);
        evil *e = ev_new(7000 + (uint32_t)i, &a->t);
        assert_int_equal(ev_join(e, src, &a->t, EV_CH_PEX, 1, 5000), 0);
        int r = ev_send(e, burst, blen, 5000);
        assert_true(r == 0 || r == -1);
        if (!ev_wait_closed(e, CLOSE_MS))
            fail_msg("request flood: attacker %d still connected after %d ms", i, CLOSE_MS);
        int reason = 0;
        char why[TM2_EVENT_REASON_LEN];
        assert_true(ev_wait_event(e, TM2_EVENT_PEER_DISCONNECTED, CLOSE_MS, &reason, why, sizeof why));
        assert_int_not_equal(reason, 0);
        if (!target_logged(&a->t, "stopping peer for discovery abuse", e->id.s, NULL))
            fail_msg("request flood: no abuse log line for attacker %d", i);
        if (i == 0)
            fprintf(stderr, "request flood: cut for %s: %s\n", tm2_errname(reason), why);
        ev_free(e);
    }
    arena_end(a, "discovery request flood");
    free(burst);
    tm2_discovery_stats d1 = target_pex(&a->t);
    tm2_switch_counters *c1 = target_stats(&a->t);
    fprintf(stderr, "request flood: %llu requests received, %llu answered, %llu ignored, %llu "
            "peers stopped\n",
            (unsigned long long)(d1.requests_received - d0.requests_received),
            (unsigned long long)(d1.requests_answered - d0.requests_answered),
            (unsigned long long)(d1.requests_ignored - d0.requests_ignored),
            (unsigned long long)(d1.peers_stopped - d0.peers_stopped));
    assert_true(d1.peers_stopped - d0.peers_stopped >= ROUNDS);
    assert_true(d1.requests_ignored - d0.requests_ignored >= ROUNDS);
    /* Each answered at most a few times before it was cut. */
    assert_true(d1.requests_answered - d0.requests_answered <= 2 * ROUNDS);
    assert_true(sum_u64(c1->peers_disconnected, TM2_STATS_REASONS) -
                    sum_u64(c0->peers_disconnected, TM2_STATS_REASONS) >= ROUNDS);
    free(c0);
    free(c1);
}

/* ---- 10,000 bogus addresses ------------------------------------------------------------ */

/* Nothing from a rejected answer reaches the book or the dialler. */
static void assert_book_untouched(const tm2_discovery_stats *d0, const tm2_discovery_stats *d1)
{
    assert_int_equal(d1->addrs_received, d0->addrs_received);
    assert_int_equal(d1->addrs_accepted, d0->addrs_accepted);
    /* The book holds the honest peers' addresses at most (book_size is
     * published at each tick, so d0 may predate the first one). */
    assert_true(d1->book_size <= N_HONEST);
}

/* Unsolicited answers, each with 10,000 addresses (over 30, the most an
 * answer may carry), sent again and again: rejected whole without
 * parsing the entries, a strike each, and the peer is stopped. The node
 * runs the reference's 3 s discovery interval here: it forgives one strike
 * per interval, so a peer is stopped once it earns strikes faster than
 * that (at the receive rate, ten such answers take about a second). */
static void unsolicited_oversized(void **state)
{
    arena *a = *state;
    enum { ROUNDS = 2, SENDS = 15 };
    tm2_netaddr *bogus = bogus_addrs(BOGUS, 90, 0, false, 1);
    size_t mlen;
    uint8_t *msg = pex_response(bogus, BOGUS, &mlen);
    free(bogus);
    tm2_discovery_stats d0 = target_pex(&a->t);
    arena_begin(a);
    for (int i = 0; i < ROUNDS; i++) {
        char src[32];
        snprintf(src, sizeof src, "127.72.0.%d", i + 1);
        evil *e = ev_new(7100 + (uint32_t)i, &a->t);
        assert_int_equal(ev_join(e, src, &a->t, EV_CH_PEX, 1, 5000), 0);
        int sent = 0;
        for (; sent < SENDS && !e->closed; sent++)
            if (ev_send_msg(e, TM2_DISCOVERY_CHANNEL, msg, mlen, 10000) != 0)
                break;
        if (!ev_wait_closed(e, CLOSE_MS))
            fail_msg("unsolicited answers: attacker %d still connected after %d sends", i, sent);
        assert_true(ev_wait_event(e, TM2_EVENT_PEER_DISCONNECTED, CLOSE_MS, NULL, NULL, 0));
        assert_true(target_logged(&a->t, "stopping peer for discovery abuse", e->id.s, NULL));
        ev_free(e);
    }
    arena_end(a, "unsolicited answers with 10,000 addresses");
    free(msg);
    tm2_discovery_stats d1 = target_pex(&a->t);
    fprintf(stderr, "unsolicited answers (%zu bytes each): %llu rejected (%llu unsolicited, %llu "
            "oversized), %llu peers stopped, book %llu -> %llu\n",
            mlen, (unsigned long long)(d1.responses_rejected - d0.responses_rejected),
            (unsigned long long)(d1.responses_unsolicited - d0.responses_unsolicited),
            (unsigned long long)(d1.responses_oversized - d0.responses_oversized),
            (unsigned long long)(d1.peers_stopped - d0.peers_stopped),
            (unsigned long long)d0.book_size, (unsigned long long)d1.book_size);
    assert_true(d1.responses_unsolicited - d0.responses_unsolicited >= 1);
    assert_true(d1.responses_rejected - d0.responses_rejected >= 10 * ROUNDS);
    assert_true(d1.peers_stopped - d0.peers_stopped >= ROUNDS);
    assert_book_untouched(&d0, &d1);
}

/* Answers to the node's own Requests, each with 10,000 addresses:
 * rejected whole (oversized) and counted; the node's strikes for them are
 * forgiven as fast as one Request per interval earns them, so it may keep
 * the peer, but nothing of them reaches the book and memory stays flat. */
static void solicited_oversized(void **state)
{
    arena *a = *state;
    enum { ANSWERS = 8 };
    tm2_netaddr *bogus = bogus_addrs(BOGUS, 91, 0, false, 1);
    size_t mlen;
    uint8_t *msg = pex_response(bogus, BOGUS, &mlen);
    free(bogus);
    tm2_discovery_stats d0 = target_pex(&a->t);
    arena_begin(a);
    evil *e = ev_new(7200, &a->t);
    assert_int_equal(ev_join(e, "127.73.0.1", &a->t, EV_CH_PEX, 1, 5000), 0);
    int answered = 0;
    while (answered < ANSWERS) {
        int r = ev_next_request(e, 5000);
        if (r < 0)
            break;   /* cut: fine too */
        assert_int_equal(r, 1);
        if (ev_send_msg(e, TM2_DISCOVERY_CHANNEL, msg, mlen, 10000) != 0)
            break;
        answered++;
    }
    /* Let the node take in the last answer. */
    tm2_discovery_stats d1;
    uint64_t end = tv_now_ms() + CLOSE_MS;
    do {
        (void)ev_pump(e, 50);
        e->plain_len = 0;
        d1 = target_pex(&a->t);
    } while (!e->closed && d1.responses_oversized - d0.responses_oversized < (uint64_t)answered &&
             tv_now_ms() < end);
    arena_end(a, "answers with 10,000 addresses to the node's requests");
    fprintf(stderr, "solicited oversized answers: %d sent, %llu rejected as oversized, attacker %s\n",
            answered, (unsigned long long)(d1.responses_oversized - d0.responses_oversized),
            e->closed ? "cut" : "kept");
    assert_true(answered >= 1);
    assert_true(d1.responses_oversized - d0.responses_oversized >= (uint64_t)answered ||
                e->closed);
    assert_book_untouched(&d0, &d1);
    ev_free(e);
    free(msg);
}

/* ---- a thousand addresses of one /24 ----------------------------------------------------- */

#define GROUP_ADDRS 1000
#define GROUP_PREFIX "@127.88.5."

typedef struct book_count {
    size_t total, group, honest;
} book_count;

static book_count read_book(const char *path, const arena *a)
{
    book_count bc = {0};
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[4 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "peers"))
    {
        cJSON *addr = cJSON_GetObjectItem(p, "addr");
        if (!cJSON_IsString(addr))
            continue;
        bc.total++;
        if (strstr(addr->valuestring, GROUP_PREFIX))
            bc.group++;
        for (int i = 0; i < N_HONEST; i++)
            if (strstr(addr->valuestring, a->honest_id[i].s))
                bc.honest++;
    }
    cJSON_Delete(j);
    return bc;
}

/* A peer answers each of the node's Requests with 30 fresh addresses, all
 * in 127.88.5.0/24, until it has announced a thousand. The book stays
 * within its bound (1,000) and keeps the entries of the peers the node
 * holds. With 127/8 grouped like public addresses (group_loopback), the book's
 * buckets keep that /24 to one bucket and the honest entries in place. */
static void one_group_flood(void **state)
{
    arena *a = *state;
    tm2_discovery_stats d0 = target_pex(&a->t);
    tm2_netaddr *addrs = bogus_addrs(GROUP_ADDRS, 88, 5, true, 2);
    arena_begin(a);
    evil *e = ev_new(7300, &a->t);
    assert_int_equal(ev_join(e, "127.74.0.1", &a->t, EV_CH_PEX, 1, 5000), 0);
    size_t sent = 0;
    while (sent < GROUP_ADDRS) {
        int r = ev_next_request(e, 5000);
        if (r != 1)
            fail_msg("/24 flood: no request from the node after %zu addresses (%d)", sent, r);
        size_t k = GROUP_ADDRS - sent < TM2_DISCOVERY_MAX_ADDRS ? GROUP_ADDRS - sent
                                                                : TM2_DISCOVERY_MAX_ADDRS;
        size_t mlen;
        uint8_t *msg = pex_response(addrs + sent, k, &mlen);
        assert_int_equal(ev_send_msg(e, TM2_DISCOVERY_CHANNEL, msg, mlen, 5000), 0);
        free(msg);
        sent += k;
    }
    free(addrs);
    /* Until the node took them all in and wrote its book after that. */
    tm2_discovery_stats d1;
    uint64_t end = tv_now_ms() + 10000;
    for (;;) {
        d1 = target_pex(&a->t);
        if (d1.addrs_received - d0.addrs_received >= GROUP_ADDRS && d1.book_saves > d0.book_saves + 1)
            break;
        if (tv_now_ms() > end)
            fail_msg("/24 flood: the node took in %llu addresses, saved its book %llu times",
                     (unsigned long long)(d1.addrs_received - d0.addrs_received),
                     (unsigned long long)(d1.book_saves - d0.book_saves));
        (void)ev_pump(e, 50);
        e->plain_len = 0;
    }
    uint64_t save0 = d1.book_saves;
    while (target_pex(&a->t).book_saves < save0 + 1 && tv_now_ms() < end) {
        (void)ev_pump(e, 50);
        e->plain_len = 0;
    }
    arena_end(a, "a thousand addresses of one /24");
    ev_free(e);
    d1 = target_pex(&a->t);
    book_count bc = read_book(a->t.book_path, a);
    fprintf(stderr, "/24 flood: %zu announced, %llu accepted; book %zu entries (max %zu), %zu of "
            "them in the /24 (%.0f%%), %zu honest; %llu entries marked connected; node dialled "
            "%llu, %llu failed\n",
            sent, (unsigned long long)(d1.addrs_accepted - d0.addrs_accepted), bc.total,
            a->t.max_addrbook, bc.group, bc.total ? 100.0 * (double)bc.group / (double)bc.total : 0,
            bc.honest, (unsigned long long)d1.book_tried,
            (unsigned long long)(d1.dials - d0.dials),
            (unsigned long long)(d1.dial_failures - d0.dial_failures));
    /* Today: bounded by the book's size, and the held peers are kept. */
    assert_true(bc.total <= a->t.max_addrbook);
    assert_true(d1.book_size <= a->t.max_addrbook);
    assert_true(d1.book_tried >= N_HONEST - 1);
    assert_true(bc.honest >= N_HONEST - 1);
    /* One address group told by one source lands in one new bucket: at
     * most a bucket's 32 entries, whatever the book's size, and no honest
     * entry is pushed out for it. */
    assert_true(bc.group <= 32);
    assert_true(bc.honest == N_HONEST);
}

/* ---- fixtures --------------------------------------------------------------------------- */

static char book_dir[64];
static char book_path[128];

static int setup(void **state)
{
    arena *a = calloc(1, sizeof *a);
    arena_start(a, NULL);
    *state = a;
    return 0;
}

static int setup_slow_pex(void **state)
{
    arena *a = calloc(1, sizeof *a);
    arena_start(a, &(target_opts){.pex_interval_ms = TM2_DISCOVERY_DEFAULT_INTERVAL_MS});
    *state = a;
    return 0;
}

static int setup_book(void **state)
{
    snprintf(book_dir, sizeof book_dir, "/tmp/tm2-attack-pex-XXXXXX");
    assert_non_null(mkdtemp(book_dir));
    snprintf(book_path, sizeof book_path, "%s/addrbook.json", book_dir);
    arena *a = calloc(1, sizeof *a);
    arena_start(a, &(target_opts){.book_path = book_path, .pex_interval_ms = 100,
                                  .group_loopback = true});
    *state = a;
    return 0;
}

static int teardown(void **state)
{
    arena *a = *state;
    if (a) {
        arena_stop(a);
        free(a);
    }
    if (book_dir[0]) {
        /* The book and anything its writer left beside it. */
        DIR *d = opendir(book_dir);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            char p[512];
            if (de->d_name[0] == '.')
                continue;
            snprintf(p, sizeof p, "%s/%s", book_dir, de->d_name);
            unlink(p);
        }
        if (d)
            closedir(d);
        rmdir(book_dir);
        book_dir[0] = '\0';
    }
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(request_flood, setup, teardown),
        cmocka_unit_test_setup_teardown(unsolicited_oversized, setup_slow_pex, teardown),
        cmocka_unit_test_setup_teardown(solicited_oversized, setup, teardown),
        cmocka_unit_test_setup_teardown(one_group_flood, setup_book, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
