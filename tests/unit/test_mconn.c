/* MConnection core: two cores wired back to back in memory, on a virtual
 * clock. No sockets, no sleeps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn/mconn.h"
#include "conn/packet.h"
#include "tm2p2p/defaults.h"
#include "tv.h"

/* ---- harness ----------------------------------------------------------------- */

typedef struct rx_item {
    uint8_t ch;
    uint8_t *data;
    size_t len;
} rx_item;

typedef struct side {
    tm2__mconn *c;
    rx_item *items;
    size_t count, cap;
    int room_calls, budget_calls;
    uint8_t room_ch;
    int fail_with;            /* on_receive returns this when non-zero */
    tm2__msg *echo;           /* queued from inside on_receive when set */
    int echo_result, reenter_result;
    const uint8_t *last_data;  /* where the last delivered message was */
} side;

static int on_receive(void *user, uint8_t ch, const uint8_t *data, size_t len)
{
    side *s = user;
    assert_non_null(data);
    if (s->count == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->items = realloc(s->items, s->cap * sizeof *s->items);
        assert_non_null(s->items);
    }
    s->last_data = data;
    rx_item *it = &s->items[s->count++];
    it->ch = ch;
    it->len = len;
    it->data = malloc(len ? len : 1);
    assert_non_null(it->data);
    memcpy(it->data, data, len);
    if (s->echo) {
        s->echo_result = tm2__mconn_try_send(s->c, ch, s->echo);
        s->reenter_result = tm2__mconn_produce(s->c, it->data, 0, 0);
    }
    return s->fail_with;
}

static void on_send_room(void *user, uint8_t ch)
{
    side *s = user;
    s->room_calls++;
    s->room_ch = ch;
}

static void on_send_budget(void *user)
{
    side *s = user;
    s->budget_calls++;
}

static const tm2__mconn_callbacks callbacks = {on_receive, on_send_room, on_send_budget};

static void side_open(side *s, const tm2_mconn_config *cfg, const tm2_channel_desc *d, size_t n,
                      uint64_t now)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(tm2__mconn_new(&s->c, cfg, d, n, &callbacks, s, now), 0);
}

static void side_close(side *s)
{
    tm2__mconn_free(s->c);
    for (size_t i = 0; i < s->count; i++)
        free(s->items[i].data);
    free(s->items);
}

/* No limits, no keepalive: tests turn on what they check. */
static tm2_mconn_config plain_config(void)
{
    tm2_mconn_config cfg;
    tm2_mconn_config_default(&cfg);
    cfg.send_rate = cfg.recv_rate = 0;
    cfg.ping_interval_ms = 0;
    cfg.flush_throttle_ms = 0;
    return cfg;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) { return tv_xorshift(&rng_state); }

static tm2__msg *random_msg(size_t len)
{
    tm2__msg *m = tm2__msg_alloc(len);
    assert_non_null(m);
    for (size_t i = 0; i < len; i++)
        m->data[i] = (uint8_t)rnd();
    return m;
}

enum { CHUNK_WHOLE, CHUNK_ONE, CHUNK_RANDOM };

/* Feeds buf to s in pieces; returns the feed result. */
static int feed_chunks(side *s, const uint8_t *buf, size_t len, int mode, uint64_t now)
{
    while (len) {
        size_t n = mode == CHUNK_WHOLE ? len : mode == CHUNK_ONE ? 1 : 1 + (size_t)(rnd() % 3000);
        if (n > len)
            n = len;
        int e = tm2__mconn_feed(s->c, buf, n, now);
        if (e)
            return e;
        buf += n;
        len -= n;
    }
    return 0;
}

/* Moves everything a can produce now into b; returns the bytes moved. */
static size_t pump(side *a, side *b, int mode, uint64_t now)
{
    static uint8_t buf[65536];
    size_t total = 0;
    for (;;) {
        int n = tm2__mconn_produce(a->c, buf, sizeof buf, now);
        assert_true(n >= 0);
        if (n == 0)
            break;
        tm2__mconn_flushed(a->c);
        assert_int_equal(feed_chunks(b, buf, (size_t)n, mode, now), 0);
        total += (size_t)n;
    }
    return total;
}

/* ---- delivery ------------------------------------------------------------------ */

static const tm2_channel_desc three[] = {
    {.id = 0x01, .priority = 1, .send_queue_capacity = 100, .recv_message_capacity = 5000},
    {.id = 0x20, .priority = 5, .send_queue_capacity = 100, .recv_message_capacity = 5000},
    {.id = 0xff, .priority = 10, .send_queue_capacity = 100, .recv_message_capacity = 5000},
};

static void three_channels_in_order_mode(int mode)
{
    static const size_t sizes[] = {1, 0, 2, 100, 1023, 1024, 1025, 2047, 2048, 2049, 4999, 5000};
    const size_t ns = sizeof sizes / sizeof sizes[0];
    tm2_mconn_config cfg = plain_config();
    side a, b;
    side_open(&a, &cfg, three, 3, 0);
    side_open(&b, &cfg, three, 3, 0);
    tm2__msg *sent[3][sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < ns; i++)
        for (size_t c = 0; c < 3; c++) {
            sent[c][i] = random_msg(sizes[(i + c * 5) % ns]);
            assert_int_equal(tm2__mconn_try_send(a.c, three[c].id, sent[c][i]), 0);
        }
    pump(&a, &b, mode, 0);
    assert_int_equal(b.count, 3 * ns);
    size_t next[3] = {0, 0, 0};
    for (size_t k = 0; k < b.count; k++) {
        size_t c = b.items[k].ch == 0x01 ? 0 : b.items[k].ch == 0x20 ? 1 : 2;
        assert_int_equal(b.items[k].ch, three[c].id);
        tm2__msg *m = sent[c][next[c]++];
        assert_int_equal(b.items[k].len, m->len);
        assert_memory_equal(b.items[k].data, m->data, m->len);
    }
    for (size_t c = 0; c < 3; c++) {
        assert_int_equal(next[c], ns);
        for (size_t i = 0; i < ns; i++) {
            /* The core dropped its references once the messages were sent. */
            assert_int_equal(atomic_load(&sent[c][i]->refs), 1);
            tm2__msg_unref(sent[c][i]);
        }
    }
    side_close(&a);
    side_close(&b);
}

static void three_channels_in_order(void **state)
{
    (void)state;
    three_channels_in_order_mode(CHUNK_WHOLE);
}

static void three_channels_one_byte_feeds(void **state)
{
    (void)state;
    three_channels_in_order_mode(CHUNK_ONE);
}

static void three_channels_random_feeds(void **state)
{
    (void)state;
    three_channels_in_order_mode(CHUNK_RANDOM);
}

static void ten_mib_message(void **state)
{
    (void)state;
    const size_t size = 10u << 20;
    tm2_channel_desc d = {.id = 0x40, .priority = 10, .recv_message_capacity = size};
    tm2_mconn_config cfg = plain_config();
    side a, b;
    side_open(&a, &cfg, &d, 1, 0);
    side_open(&b, &cfg, &d, 1, 0);
    tm2__msg *m = random_msg(size);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x40, m), 0);
    size_t wire = pump(&a, &b, CHUNK_RANDOM, 0);
    assert_int_equal(wire, 10239 * tm2__packet_msg_size(0x40, 0, 1024) + tm2__packet_msg_size(0x40, 1, 1024));
    assert_int_equal(b.count, 1);
    assert_int_equal(b.items[0].len, size);
    assert_memory_equal(b.items[0].data, m->data, size);
    tm2__msg_unref(m);
    side_close(&a);
    side_close(&b);
}

static void empty_message_and_split_vectors(void **state)
{
    (void)state;
    tm2_channel_desc d[] = {{.id = 0x30, .priority = 5, .send_queue_capacity = 4},
                            {.id = 0x50, .priority = 1}};
    tm2_mconn_config cfg = plain_config();
    side a, b;
    side_open(&a, &cfg, d, 2, 0);
    side_open(&b, &cfg, d, 2, 0);
    /* A 2500-byte message of 0xab on channel 0x30 is exactly the three
     * packets of the derived vectors. */
    tm2__msg *m = tm2__msg_alloc(2500);
    memset(m->data, 0xab, 2500);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    uint8_t out[4096];
    size_t off = 0;
    for (int part = 0; part < 3; part++) {
        int n = tm2__mconn_produce(a.c, out + off, part < 2 ? 1044 : sizeof out - off, 0);
        assert_int_equal(n, part < 2 ? 1044 : 474);
        off += (size_t)n;
    }
    static const char *heads[] = {"92080a082f7032702e4d736712850808301a8008",
                                  "92080a082f7032702e4d736712850808301a8008",
                                  "d8030a082f7032702e4d736712cb03083010011ac403"};
    uint8_t *p = out;
    for (int part = 0; part < 3; part++) {
        size_t hl;
        uint8_t *h = tv_hex_alloc(heads[part], &hl);
        assert_memory_equal(p, h, hl);
        size_t body = part < 2 ? 1024 : 452;
        for (size_t i = 0; i < body; i++)
            assert_int_equal(p[hl + i], 0xab);
        p += hl + body;
        free(h);
    }
    assert_int_equal(tm2__mconn_feed(b.c, out, off, 0), 0);
    /* An empty message is one packet with EOF and no bytes, delivered empty. */
    tm2__msg *e = tm2__msg_new(NULL, 0);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x50, e), 0);
    int n = tm2__mconn_produce(a.c, out, sizeof out, 0);
    size_t vl;
    uint8_t *v = tv_hex_alloc("100a082f7032702e4d7367120408501001", &vl);
    assert_int_equal(n, (int)vl);
    assert_memory_equal(out, v, vl);
    free(v);
    assert_int_equal(tm2__mconn_feed(b.c, out, (size_t)n, 0), 0);
    assert_int_equal(b.count, 2);
    assert_int_equal(b.items[0].len, 2500);
    assert_memory_equal(b.items[0].data, m->data, 2500);
    assert_int_equal(b.items[1].ch, 0x50);
    assert_int_equal(b.items[1].len, 0);
    tm2__msg_unref(m);
    tm2__msg_unref(e);
    side_close(&a);
    side_close(&b);
}

/* A message that arrives whole in one packet is handed over straight from
 * the input; one split over packets or feed calls comes from a buffer. */
static void single_packet_messages_are_not_copied(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x07, .priority = 1};
    tm2_mconn_config cfg = plain_config();
    side b;
    side_open(&b, &cfg, &d, 1, 0);
    uint8_t buf[3000];
    static uint8_t payload[2000];
    int n = tm2__packet_encode_msg(buf, sizeof buf, 7, 1, payload, 256);
    assert_int_equal(tm2__mconn_feed(b.c, buf, (size_t)n, 0), 0);
    assert_true(b.last_data > buf && b.last_data < buf + n);
    /* Split across two feed calls: delivered from the core's own memory. */
    assert_int_equal(tm2__mconn_feed(b.c, buf, 10, 0), 0);
    assert_int_equal(tm2__mconn_feed(b.c, buf + 10, (size_t)n - 10, 0), 0);
    assert_int_equal(b.count, 2);
    assert_false(b.last_data >= buf && b.last_data < buf + sizeof buf);
    /* Two packets in one piece: reassembled. */
    size_t off = (size_t)tm2__packet_encode_msg(buf, sizeof buf, 7, 0, payload, 1024);
    off += (size_t)tm2__packet_encode_msg(buf + off, sizeof buf - off, 7, 1, payload, 10);
    assert_int_equal(tm2__mconn_feed(b.c, buf, off, 0), 0);
    assert_int_equal(b.count, 3);
    assert_int_equal(b.items[2].len, 1034);
    assert_false(b.last_data >= buf && b.last_data < buf + sizeof buf);
    side_close(&b);
}

static void eof_other_than_one_is_not_last(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x07, .priority = 1};
    tm2_mconn_config cfg = plain_config();
    side b;
    side_open(&b, &cfg, &d, 1, 0);
    uint8_t buf[256];
    size_t off = 0;
    off += (size_t)tm2__packet_encode_msg(buf + off, sizeof buf - off, 7, 2, (const uint8_t *)"ab", 2);
    off += (size_t)tm2__packet_encode_msg(buf + off, sizeof buf - off, 7, 0xff, (const uint8_t *)"cd", 2);
    off += (size_t)tm2__packet_encode_msg(buf + off, sizeof buf - off, 7, 0, NULL, 0);
    off += (size_t)tm2__packet_encode_msg(buf + off, sizeof buf - off, 7, 1, (const uint8_t *)"e", 1);
    assert_int_equal(tm2__mconn_feed(b.c, buf, off, 0), 0);
    assert_int_equal(b.count, 1);
    assert_int_equal(b.items[0].len, 5);
    assert_memory_equal(b.items[0].data, "abcde", 5);
    side_close(&b);
}

/* ---- scheduling ------------------------------------------------------------------- */

/* Saturates three channels of priorities 1, 5, 10 with full packets and
 * checks every choice against an independent model of the reference's rule
 * (least recentlySent/priority as float32, first on ties, +packet length,
 * x0.8 truncated every 2 s), then the long-run byte shares. */
static void priority_shares(void **state)
{
    (void)state;
    tm2_channel_desc d[] = {
        {.id = 0x01, .priority = 1, .send_queue_capacity = 64},
        {.id = 0x02, .priority = 5, .send_queue_capacity = 64},
        {.id = 0x03, .priority = 10, .send_queue_capacity = 64},
    };
    tm2_mconn_config cfg = plain_config();
    side a;
    side_open(&a, &cfg, d, 3, 0);
    tm2__msg *m = random_msg(4 * 1024);   /* four full packets each */
    const size_t pkt = tm2__packet_msg_size(1, 0, 1024);
    assert_int_equal(tm2__packet_msg_size(1, 1, 1024), pkt + 2);
    int64_t model[3] = {0, 0, 0};
    uint64_t bytes[3] = {0, 0, 0};
    uint64_t next_decay = 2000;
    uint8_t out[2048];
    const int steps = 30000;
    for (int i = 0; i < steps; i++) {
        uint64_t now = (uint64_t)i;   /* 1 ms per packet: 15 decay ticks */
        for (size_t c = 0; c < 3; c++)
            while (tm2__mconn_send_room(a.c, d[c].id) > 0)
                assert_int_equal(tm2__mconn_try_send(a.c, d[c].id, m), 0);
        while (now >= next_decay) {
            for (size_t c = 0; c < 3; c++)
                model[c] = (int64_t)((double)model[c] * 0.8);
            next_decay += 2000;
        }
        size_t want = 0;
        float best = (float)model[0] / 1.0f;
        for (size_t c = 1; c < 3; c++) {
            float r = (float)model[c] / (float)d[c].priority;
            if (r < best) {
                best = r;
                want = c;
            }
        }
        /* Room for exactly one packet. */
        int n = tm2__mconn_produce(a.c, out, pkt + 2, now);
        assert_true(n == (int)pkt || n == (int)pkt + 2);
        tm2__packet p;
        size_t used;
        assert_int_equal(tm2__packet_decode(out, (size_t)n, 1056, &p, &used), 0);
        assert_int_equal(p.channel, d[want].id);
        model[want] += n;
        bytes[want] += (uint64_t)n;
        tm2__mconn_flushed(a.c);
    }
    uint64_t total = bytes[0] + bytes[1] + bytes[2];
    for (size_t c = 0; c < 3; c++) {
        double share = (double)bytes[c] / (double)total;
        double expect = d[c].priority / 16.0;
        if (share < expect - 0.01 || share > expect + 0.01)
            fail_msg("channel %u share %.4f, expected %.4f", d[c].id, share, expect);
    }
    /* The snapshot reports the same decayed counters as the model. */
    tm2_mconn_status st;
    tm2__mconn_status(a.c, (uint64_t)steps - 1, &st);
    for (size_t c = 0; c < 3; c++)
        assert_int_equal(st.channels[c].recently_sent, model[c]);
    tm2__msg_unref(m);
    side_close(&a);
}

/* ---- rate limits ---------------------------------------------------------------- */

static void send_rate_limit(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x30, .priority = 1, .send_queue_capacity = 1000};
    tm2_mconn_config cfg = plain_config();
    cfg.send_rate = 1000000;
    cfg.flush_throttle_ms = 100;
    side a, b;
    side_open(&a, &cfg, &d, 1, 0);
    cfg.send_rate = 0;
    side_open(&b, &cfg, &d, 1, 0);
    /* 5 MB of payload in 500 messages of 10,000 bytes. */
    tm2__msg *m = random_msg(10000);
    for (int i = 0; i < 500; i++)
        assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    static uint8_t buf[65536];
    uint64_t now = 0, wire = 0, last_write = 0;
    int wakeups = 0;
    while (b.count < 500) {
        int n = tm2__mconn_produce(a.c, buf, sizeof buf, now);
        assert_true(n >= 0);
        if (n > 0) {
            wire += (uint64_t)n;
            last_write = now;
            if (tm2__mconn_flush_due(a.c, now))
                tm2__mconn_flushed(a.c);
            assert_int_equal(tm2__mconn_feed(b.c, buf, (size_t)n, now), 0);
            continue;
        }
        assert_false(tm2__mconn_want_produce(a.c, now));
        uint64_t next = tm2__mconn_next_deadline(a.c, now);
        assert_true(next > now && next != UINT64_MAX);
        now = next;
        assert_int_equal(tm2__mconn_handle_expiry(a.c, now), 0);
        if (tm2__mconn_flush_due(a.c, now))
            tm2__mconn_flushed(a.c);
        wakeups++;
    }
    /* The wire carries 5,000,000 payload bytes plus packet overhead. */
    double expect_ms = (double)wire / 1000.0;
    if ((double)last_write < expect_ms * 0.97 || (double)last_write > expect_ms * 1.03)
        fail_msg("last write at %llu ms for %llu bytes", (unsigned long long)last_write,
                 (unsigned long long)wire);
    if (last_write < 4850 || last_write > 5250)
        fail_msg("5 MB took %llu ms at 1 MB/s", (unsigned long long)last_write);
    assert_true(wakeups >= 49);
    tm2_mconn_status st;
    tm2__mconn_status(a.c, now, &st);
    assert_int_equal(st.send.bytes, wire);
    assert_true(st.send.avg_rate > 950000 && st.send.avg_rate < 1050000);
    assert_true(st.send.peak_rate < 1100000);
    tm2__msg_unref(m);
    side_close(&a);
    side_close(&b);
}

static void recv_rate_limit(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x30, .priority = 1, .send_queue_capacity = 1000};
    tm2_mconn_config cfg = plain_config();
    side a, b;
    side_open(&a, &cfg, &d, 1, 0);
    cfg.recv_rate = 1000000;
    side_open(&b, &cfg, &d, 1, 0);
    tm2__msg *m = random_msg(10000);
    for (int i = 0; i < 500; i++)
        assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    /* Everything is produced at once; the reader respects its pauses and
     * reads at most 8 KiB at a time, like a socket read. */
    size_t cap = 6 << 20, len = 0, off = 0;
    uint8_t *wire = malloc(cap);
    int n;
    while ((n = tm2__mconn_produce(a.c, wire + len, cap - len, 0)) > 0)
        len += (size_t)n;
    uint64_t now = 0;
    while (off < len) {
        uint64_t until = tm2__mconn_recv_paused_until(b.c, now);
        if (until) {
            assert_true(until > now);
            assert_true(tm2__mconn_next_deadline(b.c, now) <= until);
            now = until;
            continue;
        }
        size_t k = len - off < 8192 ? len - off : 8192;
        assert_int_equal(tm2__mconn_feed(b.c, wire + off, k, now), 0);
        off += k;
    }
    assert_int_equal(b.count, 500);
    double expect_ms = (double)len / 1000.0;
    if ((double)now < expect_ms * 0.97 || (double)now > expect_ms * 1.03)
        fail_msg("read %zu bytes by %llu ms at 1 MB/s", len, (unsigned long long)now);
    free(wire);
    tm2__msg_unref(m);
    side_close(&a);
    side_close(&b);
}

/* ---- keepalive ---------------------------------------------------------------- */

static tm2_mconn_config keepalive_config(void)
{
    tm2_mconn_config cfg = plain_config();
    cfg.ping_interval_ms = 1000;
    cfg.pong_timeout_ms = 500;
    cfg.flush_throttle_ms = 100;
    return cfg;
}

static void ping_pong_and_idle(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x50, .priority = 1};
    tm2_mconn_config cfg = keepalive_config();
    side a, b;
    side_open(&a, &cfg, &d, 1, 0);
    side_open(&b, &cfg, &d, 1, 0);
    uint8_t buf[64];
    uint8_t ping[TM2__PACKET_PING_SIZE], pong[TM2__PACKET_PING_SIZE];
    tm2__packet_encode_ping(ping, sizeof ping);
    tm2__packet_encode_pong(pong, sizeof pong);
    assert_int_equal(tm2__mconn_next_deadline(a.c, 0), 1000);
    assert_int_equal(tm2__mconn_handle_expiry(a.c, 999), 0);
    assert_false(tm2__mconn_want_produce(a.c, 999));
    assert_int_equal(tm2__mconn_produce(a.c, buf, sizeof buf, 999), 0);
    /* Three ping intervals, both sides answering: the connection stays up. */
    for (uint64_t t = 1000; t <= 3000; t += 1000) {
        assert_int_equal(tm2__mconn_handle_expiry(a.c, t), 0);
        assert_int_equal(tm2__mconn_handle_expiry(b.c, t), 0);
        assert_int_equal(tm2__mconn_next_deadline(a.c, t), t + 500);
        assert_true(tm2__mconn_want_produce(a.c, t));
        int n = tm2__mconn_produce(a.c, buf, sizeof buf, t);
        assert_int_equal(n, TM2__PACKET_PING_SIZE);
        assert_memory_equal(buf, ping, sizeof ping);
        assert_true(tm2__mconn_flush_due(a.c, t));
        tm2__mconn_flushed(a.c);
        /* b sent its own ping too; a answers it. */
        n = tm2__mconn_produce(b.c, buf, sizeof buf, t);
        assert_int_equal(n, TM2__PACKET_PING_SIZE);
        tm2__mconn_flushed(b.c);
        assert_int_equal(tm2__mconn_feed(a.c, buf, (size_t)n, t + 10), 0);
        assert_int_equal(tm2__mconn_feed(b.c, ping, sizeof ping, t + 10), 0);
        n = tm2__mconn_produce(b.c, buf, sizeof buf, t + 10);
        assert_int_equal(n, TM2__PACKET_PING_SIZE);
        assert_memory_equal(buf, pong, sizeof pong);
        assert_true(tm2__mconn_flush_due(b.c, t + 10));
        tm2__mconn_flushed(b.c);
        assert_int_equal(tm2__mconn_feed(a.c, buf, (size_t)n, t + 20), 0);
        n = tm2__mconn_produce(a.c, buf, sizeof buf, t + 20);
        assert_int_equal(n, TM2__PACKET_PING_SIZE);
        assert_memory_equal(buf, pong, sizeof pong);
        tm2__mconn_flushed(a.c);
        assert_int_equal(tm2__mconn_feed(b.c, buf, (size_t)n, t + 20), 0);
        /* Pongs stopped both timers: the next deadline is the next ping. */
        assert_int_equal(tm2__mconn_next_deadline(a.c, t + 20), t + 1000);
        assert_int_equal(tm2__mconn_handle_expiry(a.c, t + 600), 0);
        assert_int_equal(tm2__mconn_handle_expiry(b.c, t + 600), 0);
    }
    side_close(&a);
    side_close(&b);
}

static void pong_timeout_closes(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x50, .priority = 1};
    tm2_mconn_config cfg = keepalive_config();
    side a;
    side_open(&a, &cfg, &d, 1, 0);
    uint8_t buf[64];
    assert_int_equal(tm2__mconn_handle_expiry(a.c, 1000), 0);
    assert_int_equal(tm2__mconn_produce(a.c, buf, sizeof buf, 1000), TM2__PACKET_PING_SIZE);
    assert_int_equal(tm2__mconn_next_deadline(a.c, 1000), 1500);
    assert_int_equal(tm2__mconn_handle_expiry(a.c, 1499), 0);
    assert_int_equal(tm2__mconn_handle_expiry(a.c, 1500), TM2_EPONG);
    const char *why;
    assert_int_equal(tm2__mconn_error(a.c, &why), TM2_EPONG);
    assert_string_equal(why, "pong timeout");
    /* Sticky. */
    assert_int_equal(tm2__mconn_produce(a.c, buf, sizeof buf, 1501), TM2_EPONG);
    assert_int_equal(tm2__mconn_feed(a.c, buf, 1, 1501), TM2_EPONG);
    tm2__msg *m = tm2__msg_new("x", 1);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x50, m), TM2_EPONG);
    tm2__msg_unref(m);
    assert_int_equal(tm2__mconn_next_deadline(a.c, 1501), UINT64_MAX);
    side_close(&a);
}

static void pings_share_one_pong(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x50, .priority = 1};
    tm2_mconn_config cfg = keepalive_config();
    side b;
    side_open(&b, &cfg, &d, 1, 0);
    uint8_t in[3 * TM2__PACKET_PING_SIZE], buf[64];
    for (int i = 0; i < 3; i++)
        tm2__packet_encode_ping(in + i * TM2__PACKET_PING_SIZE, TM2__PACKET_PING_SIZE);
    assert_int_equal(tm2__mconn_feed(b.c, in, sizeof in, 5), 0);
    assert_int_equal(tm2__mconn_produce(b.c, buf, sizeof buf, 5), TM2__PACKET_PING_SIZE);
    assert_int_equal(tm2__mconn_produce(b.c, buf, sizeof buf, 5), 0);
    /* An unsolicited pong is ignored. */
    tm2__packet_encode_pong(in, sizeof in);
    assert_int_equal(tm2__mconn_feed(b.c, in, TM2__PACKET_PING_SIZE, 6), 0);
    assert_int_equal(tm2__mconn_error(b.c, NULL), 0);
    /* A pong that does not fit is kept for the next call. */
    assert_int_equal(tm2__mconn_feed(b.c, in + 0, 0, 7), 0);
    tm2__packet_encode_ping(in, sizeof in);
    assert_int_equal(tm2__mconn_feed(b.c, in, TM2__PACKET_PING_SIZE, 7), 0);
    assert_int_equal(tm2__mconn_produce(b.c, buf, TM2__PACKET_PING_SIZE - 1, 7), 0);
    assert_int_equal(tm2__mconn_produce(b.c, buf, sizeof buf, 7), TM2__PACKET_PING_SIZE);
    side_close(&b);
}

/* ---- round trips -------------------------------------------------------------- */

/* a's ping interval passes at t and produce writes the Ping at w (>= t). */
static void ping_out(side *a, uint64_t t, uint64_t w)
{
    uint8_t buf[64];
    assert_int_equal(tm2__mconn_handle_expiry(a->c, t), 0);
    assert_int_equal(tm2__mconn_produce(a->c, buf, sizeof buf, w), TM2__PACKET_PING_SIZE);
    tm2__mconn_flushed(a->c);
}

static void pong_in(side *a, uint64_t t)
{
    uint8_t pong[TM2__PACKET_PING_SIZE];
    tm2__packet_encode_pong(pong, sizeof pong);
    assert_int_equal(tm2__mconn_feed(a->c, pong, sizeof pong, t), 0);
}

static void assert_rtt(side *a, uint64_t now, uint32_t rtt, uint32_t min)
{
    tm2_mconn_status st;
    tm2__mconn_status(a->c, now, &st);
    assert_int_equal(st.rtt_ms, rtt);
    assert_int_equal(st.min_rtt_ms, min);
    assert_int_equal(tm2__mconn_min_rtt(a->c), min);
}

static void round_trip_times(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x50, .priority = 1};
    tm2_mconn_config cfg = keepalive_config();   /* ping every 1 s, pong within 500 ms */
    side a;
    side_open(&a, &cfg, &d, 1, 0);
    assert_rtt(&a, 0, 0, 0);
    /* Sent at 1000, answered at 1037. */
    ping_out(&a, 1000, 1000);
    assert_rtt(&a, 1036, 0, 0);
    pong_in(&a, 1037);
    assert_rtt(&a, 1037, 37, 37);
    /* The minimum stays while later trips are longer, follows shorter ones. */
    ping_out(&a, 2000, 2000);
    pong_in(&a, 2090);
    assert_rtt(&a, 2090, 90, 37);
    ping_out(&a, 3000, 3000);
    pong_in(&a, 3012);
    assert_rtt(&a, 3012, 12, 12);
    /* Timed from the write, not from when the Ping fell due. */
    ping_out(&a, 4000, 4030);
    pong_in(&a, 4050);
    assert_rtt(&a, 4050, 20, 12);
    /* A second Pong to one Ping is not a second trip... */
    ping_out(&a, 5000, 5000);
    pong_in(&a, 5010);
    assert_rtt(&a, 5010, 10, 10);
    pong_in(&a, 5011);
    assert_rtt(&a, 5011, 0, 0);
    /* ... it was never asked for: no trip is measured again. */
    ping_out(&a, 6000, 6000);
    pong_in(&a, 6005);
    assert_rtt(&a, 6005, 0, 0);
    assert_int_equal(tm2__mconn_error(a.c, NULL), 0);
    side_close(&a);

    /* A Pong before any Ping produces nothing, now or later. */
    side_open(&a, &cfg, &d, 1, 0);
    pong_in(&a, 500);
    assert_rtt(&a, 500, 0, 0);
    ping_out(&a, 1000, 1000);
    pong_in(&a, 1037);
    assert_rtt(&a, 1037, 0, 0);
    side_close(&a);

    /* Under a millisecond reads 1: 0 means none. */
    side_open(&a, &cfg, &d, 1, 0);
    ping_out(&a, 1000, 1000);
    pong_in(&a, 1000);
    assert_rtt(&a, 1000, 1, 1);
    side_close(&a);

    /* Without keepalive nothing is measured. */
    tm2_mconn_config plain = plain_config();
    side_open(&a, &plain, &d, 1, 0);
    assert_int_equal(tm2__mconn_handle_expiry(a.c, 5000), 0);
    assert_false(tm2__mconn_want_produce(a.c, 5000));
    assert_rtt(&a, 5000, 0, 0);
    side_close(&a);
}

/* Two Pings out at once (stalls credited to the pong deadline): the trip is
 * timed from the earlier one, whether the peer answers each or both with one
 * Pong, and the answer to the later one is not taken for unasked. */
static void round_trip_two_pings_out(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x50, .priority = 1};
    tm2_mconn_config cfg = keepalive_config();
    side a;
    for (int shared = 0; shared < 2; shared++) {
        side_open(&a, &cfg, &d, 1, 0);
        ping_out(&a, 1000, 1000);
        tm2__mconn_credit_stall(a.c, 1200);
        ping_out(&a, 2000, 2000);
        pong_in(&a, 2030);
        assert_rtt(&a, 2030, 1030, 1030);
        if (!shared) {
            pong_in(&a, 2031);
            assert_rtt(&a, 2031, 1030, 1030);
        }
        ping_out(&a, 3000, 3000);
        pong_in(&a, 3020);
        assert_rtt(&a, 3020, 20, 20);
        assert_int_equal(tm2__mconn_error(a.c, NULL), 0);
        side_close(&a);
    }
}

/* ---- flush throttle -------------------------------------------------------------- */

static void flush_throttle(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x30, .priority = 1, .send_queue_capacity = 8};
    tm2_mconn_config cfg = keepalive_config();   /* throttle 100 ms, ping every 1 s */
    side a, b;
    side_open(&a, &cfg, &d, 1, 0);
    side_open(&b, &cfg, &d, 1, 0);
    uint8_t buf[4096];
    tm2__msg *m = tm2__msg_new("data", 4);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    assert_true(tm2__mconn_produce(a.c, buf, sizeof buf, 20) > 0);
    /* Data waits up to the throttle time. */
    assert_false(tm2__mconn_flush_due(a.c, 20));
    assert_int_equal(tm2__mconn_next_deadline(a.c, 20), 120);
    assert_false(tm2__mconn_flush_due(a.c, 119));
    /* More data does not move the deadline. */
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    assert_true(tm2__mconn_produce(a.c, buf, sizeof buf, 50) > 0);
    assert_int_equal(tm2__mconn_next_deadline(a.c, 50), 120);
    assert_true(tm2__mconn_flush_due(a.c, 120));
    tm2__mconn_flushed(a.c);
    assert_false(tm2__mconn_flush_due(a.c, 500));
    assert_int_equal(tm2__mconn_next_deadline(a.c, 500), 1000);
    /* A ping goes at once, and takes pending data with it. */
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    assert_int_equal(tm2__mconn_handle_expiry(a.c, 1000), 0);
    int n = tm2__mconn_produce(a.c, buf, sizeof buf, 1000);
    assert_true(n > TM2__PACKET_PING_SIZE);
    assert_true(tm2__mconn_flush_due(a.c, 1000));
    tm2__mconn_flushed(a.c);
    /* So does a pong. */
    assert_int_equal(tm2__mconn_feed(b.c, buf, (size_t)n, 1001), 0);
    assert_int_equal(tm2__mconn_produce(b.c, buf, sizeof buf, 1001), TM2__PACKET_PING_SIZE);
    assert_true(tm2__mconn_flush_due(b.c, 1001));
    /* With throttle 0 data is due at once. */
    tm2_mconn_config now_cfg = plain_config();
    side c;
    side_open(&c, &now_cfg, &d, 1, 0);
    assert_int_equal(tm2__mconn_try_send(c.c, 0x30, m), 0);
    assert_true(tm2__mconn_produce(c.c, buf, sizeof buf, 3) > 0);
    assert_true(tm2__mconn_flush_due(c.c, 3));
    tm2__msg_unref(m);
    side_close(&a);
    side_close(&b);
    side_close(&c);
}

/* ---- queues and errors ------------------------------------------------------------- */

static void queue_full(void **state)
{
    (void)state;
    tm2_channel_desc d[] = {{.id = 0x30, .priority = 1, .send_queue_capacity = 3},
                            {.id = 0x31, .priority = 1}};
    tm2_mconn_config cfg = plain_config();
    side a;
    side_open(&a, &cfg, d, 2, 0);
    tm2__msg *m = tm2__msg_new("0123456789", 10);
    assert_int_equal(tm2__mconn_send_room(a.c, 0x30), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), TM2_EFULL);
    assert_int_equal(tm2__mconn_send_room(a.c, 0x30), 0);
    assert_int_equal(atomic_load(&m->refs), 4);
    /* A descriptor capacity of 0 means the reference's default of 1. */
    assert_int_equal(tm2__mconn_try_send(a.c, 0x31, m), 0);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x31, m), TM2_EFULL);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x32, m), TM2_ECHANNEL);
    assert_int_equal(tm2__mconn_send_room(a.c, 0x32), TM2_ECHANNEL);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, NULL), TM2_EINVAL);
    /* A buffer too small for any packet takes messages off the queues (as
     * the reference's scan does) but writes nothing; the full queues gain
     * room and the glue hears of it once per queue. */
    uint8_t buf[4096];
    assert_int_equal(tm2__mconn_produce(a.c, buf, 8, 0), 0);
    assert_int_equal(a.room_calls, 2);
    assert_int_equal(tm2__mconn_send_room(a.c, 0x30), 1);
    tm2_mconn_status st;
    tm2__mconn_status(a.c, 0, &st);
    assert_int_equal(st.channels[0].send_queue_size, 3);
    assert_int_equal(st.channels[1].send_queue_size, 1);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), TM2_EFULL);
    assert_true(tm2__mconn_produce(a.c, buf, sizeof buf, 0) > 0);
    assert_int_equal(a.room_calls, 3);
    assert_int_equal(a.room_ch, 0x30);
    assert_int_equal(tm2__mconn_send_room(a.c, 0x30), 3);
    assert_int_equal(atomic_load(&m->refs), 1);
    /* Messages still queued are released with the core. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    side_close(&a);
    assert_int_equal(atomic_load(&m->refs), 1);
    tm2__msg_unref(m);
}

static void unknown_channel_error(void **state)
{
    (void)state;
    tm2_channel_desc da[] = {{.id = 0x30, .priority = 1}, {.id = 0x31, .priority = 1}};
    tm2_mconn_config cfg = plain_config();
    side a, b;
    side_open(&a, &cfg, da, 2, 0);
    side_open(&b, &cfg, da, 1, 0);
    tm2__msg *m = tm2__msg_new("hi", 2);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, m), 0);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x31, m), 0);
    uint8_t buf[256];
    int n = tm2__mconn_produce(a.c, buf, sizeof buf, 0);
    assert_true(n > 0);
    assert_int_equal(tm2__mconn_feed(b.c, buf, (size_t)n, 0), TM2_ECHANNEL);
    assert_int_equal(b.count, 1);   /* the packet before it was delivered */
    const char *why;
    assert_int_equal(tm2__mconn_error(b.c, &why), TM2_ECHANNEL);
    assert_string_equal(why, "unknown channel 0x31");
    assert_int_equal(tm2__mconn_feed(b.c, buf, (size_t)n, 1), TM2_ECHANNEL);
    assert_int_equal(tm2__mconn_produce(b.c, buf, sizeof buf, 1), TM2_ECHANNEL);
    assert_int_equal(tm2__mconn_handle_expiry(b.c, 1), TM2_ECHANNEL);
    tm2__msg_unref(m);
    side_close(&a);
    side_close(&b);
}

static void oversize_message_error(void **state)
{
    (void)state;
    tm2_channel_desc big = {.id = 0x30, .priority = 1, .send_queue_capacity = 4};
    tm2_channel_desc small = {.id = 0x30, .priority = 1, .recv_message_capacity = 100,
                              .recv_buffer_capacity = 16};
    tm2_mconn_config cfg = plain_config();
    cfg.max_packet_payload = 64;
    side a, b, c;
    side_open(&a, &cfg, &big, 1, 0);
    side_open(&b, &cfg, &small, 1, 0);
    tm2_mconn_config wide = plain_config();
    side_open(&c, &wide, &small, 1, 0);
    /* Exactly the capacity, in two packets, is fine. */
    tm2__msg *fits = random_msg(100);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, fits), 0);
    pump(&a, &b, CHUNK_RANDOM, 0);
    assert_int_equal(b.count, 1);
    assert_memory_equal(b.items[0].data, fits->data, 100);
    /* One byte more fails on the packet that crosses the capacity. */
    tm2__msg *over = random_msg(101);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x30, over), 0);
    uint8_t buf[512];
    int n = tm2__mconn_produce(a.c, buf, sizeof buf, 0);
    assert_true(n > 0);
    assert_int_equal(tm2__mconn_feed(b.c, buf, (size_t)n, 0), TM2_EMSGSIZE);
    const char *why;
    tm2__mconn_error(b.c, &why);
    assert_string_equal(why, "message on channel 0x30 over its capacity of 100 bytes");
    /* A single packet over the capacity fails too. */
    tm2__msg *one = random_msg(101);
    size_t k = (size_t)tm2__packet_encode_msg(buf, sizeof buf, 0x30, 1, one->data, one->len);
    assert_int_equal(tm2__mconn_feed(c.c, buf, k, 0), TM2_EMSGSIZE);
    assert_int_equal(c.count, 0);
    tm2__msg_unref(fits);
    tm2__msg_unref(over);
    tm2__msg_unref(one);
    side_close(&a);
    side_close(&b);
    side_close(&c);
}

static void malformed_and_oversized_packets(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x07, .priority = 1};
    tm2_mconn_config cfg = plain_config();
    side s;
    const char *why;
    /* A bad packet, fed one byte at a time, fails on its last byte. */
    side_open(&s, &cfg, &d, 1, 0);
    size_t len;
    uint8_t *bad = tv_hex_alloc("100a082f7032702e4d7367120408070807", &len);
    for (size_t i = 0; i + 1 < len; i++)
        assert_int_equal(tm2__mconn_feed(s.c, bad + i, 1, 0), 0);
    assert_int_equal(tm2__mconn_feed(s.c, bad + len - 1, 1, 0), TM2_EFIELD);
    tm2__mconn_error(s.c, &why);
    assert_non_null(strstr(why, "malformed packet"));
    free(bad);
    side_close(&s);
    /* A length prefix over the limit fails as soon as it is seen. */
    side_open(&s, &cfg, &d, 1, 0);
    static const uint8_t big[] = {0xa1, 0x08};   /* 1057 */
    assert_int_equal(tm2__mconn_feed(s.c, big, 1, 0), 0);
    assert_int_equal(tm2__mconn_feed(s.c, big + 1, 1, 0), TM2_ETOOBIG);
    tm2__mconn_error(s.c, &why);
    assert_string_equal(why, "packet over 1056 bytes");
    side_close(&s);
    /* Exactly the limit is accepted. */
    side_open(&s, &cfg, &d, 1, 0);
    assert_int_equal(tm2__mconn_max_packet_size(s.c), 1056);
    uint8_t pkt[1100];
    static uint8_t payload[1034];
    int n = tm2__packet_encode_msg(pkt, sizeof pkt, 7, 1, payload, sizeof payload);
    assert_int_equal(n, 1056);
    assert_int_equal(feed_chunks(&s, pkt, (size_t)n, CHUNK_ONE, 0), 0);
    assert_int_equal(s.count, 1);
    side_close(&s);
}

static void receive_handler_rules(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x07, .priority = 1, .send_queue_capacity = 4};
    tm2_mconn_config cfg = plain_config();
    side s;
    side_open(&s, &cfg, &d, 1, 0);
    uint8_t buf[64];
    int n = tm2__packet_encode_msg(buf, sizeof buf, 7, 1, (const uint8_t *)"q", 1);
    /* try_send works from inside the handler; produce does not. */
    s.echo = tm2__msg_new("echo", 4);
    assert_int_equal(tm2__mconn_feed(s.c, buf, (size_t)n, 0), 0);
    assert_int_equal(s.echo_result, 0);
    assert_int_equal(s.reenter_result, TM2_ESTATE);
    tm2__msg_unref(s.echo);
    s.echo = NULL;
    uint8_t out[64];
    assert_true(tm2__mconn_produce(s.c, out, sizeof out, 0) > 0);
    /* A failing handler closes the connection with its code. */
    s.fail_with = TM2_EREJECTED;
    assert_int_equal(tm2__mconn_feed(s.c, buf, (size_t)n, 0), TM2_EREJECTED);
    assert_int_equal(tm2__mconn_feed(s.c, buf, (size_t)n, 0), TM2_EREJECTED);
    side_close(&s);
    /* A positive return becomes TM2_EPROTO. */
    side_open(&s, &cfg, &d, 1, 0);
    s.fail_with = 1;
    assert_int_equal(tm2__mconn_feed(s.c, buf, (size_t)n, 0), TM2_EPROTO);
    side_close(&s);
}

static void config_rules(void **state)
{
    (void)state;
    tm2_mconn_config cfg;
    tm2_mconn_config_default(&cfg);
    assert_int_equal(cfg.send_rate, 5120000);
    assert_int_equal(cfg.recv_rate, 5120000);
    assert_int_equal(cfg.max_packet_payload, 1024);
    assert_int_equal(cfg.flush_throttle_ms, 100);
    assert_int_equal(cfg.ping_interval_ms, 60000);
    assert_int_equal(cfg.pong_timeout_ms, 45000);

    tm2__mconn *c;
    tm2_channel_desc d[TM2_MCONN_MAX_CHANNELS + 1];
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        d[i] = (tm2_channel_desc){.id = (uint8_t)i, .priority = 1};
    assert_int_equal(tm2__mconn_new(&c, NULL, d, TM2_MCONN_MAX_CHANNELS, NULL, NULL, 0), 0);
    assert_int_equal(tm2__mconn_next_deadline(c, 0), 60000);
    tm2__mconn_free(c);
    assert_int_equal(tm2__mconn_new(&c, NULL, d, TM2_MCONN_MAX_CHANNELS + 1, NULL, NULL, 0), TM2_EINVAL);
    assert_int_equal(tm2__mconn_new(&c, NULL, d, 0, NULL, NULL, 0), TM2_EINVAL);
    tm2_channel_desc dup[] = {{.id = 5, .priority = 1}, {.id = 5, .priority = 2}};
    assert_int_equal(tm2__mconn_new(&c, NULL, dup, 2, NULL, NULL, 0), TM2_EINVAL);
    tm2_channel_desc zero = {.id = 5, .priority = 0};
    assert_int_equal(tm2__mconn_new(&c, NULL, &zero, 1, NULL, NULL, 0), TM2_EINVAL);
    tm2_mconn_config bad = cfg;
    bad.pong_timeout_ms = bad.ping_interval_ms;
    assert_int_equal(tm2__mconn_new(&c, &bad, d, 1, NULL, NULL, 0), TM2_EINVAL);
    bad = cfg;
    bad.pong_timeout_ms = 0;
    assert_int_equal(tm2__mconn_new(&c, &bad, d, 1, NULL, NULL, 0), TM2_EINVAL);
    bad.ping_interval_ms = 0;   /* no keepalive: the pong timeout does not matter */
    assert_int_equal(tm2__mconn_new(&c, &bad, d, 1, NULL, NULL, 0), 0);
    assert_int_equal(tm2__mconn_next_deadline(c, 0), UINT64_MAX);
    tm2__mconn_free(c);
    bad = cfg;
    bad.max_packet_payload = 0;
    assert_int_equal(tm2__mconn_new(&c, &bad, d, 1, NULL, NULL, 0), TM2_EINVAL);
    tm2__mconn_free(NULL);
}

/* ---- budgets and the assembly deadline ------------------------------------------------ */

/* One packet of data on channel ch: eof 1 ends a message. */
static size_t put_pkt(uint8_t *out, uint8_t ch, uint8_t eof, size_t len)
{
    static uint8_t zero[4096];
    assert_true(len <= sizeof zero);
    int n = tm2__packet_encode_msg(out, 8192, ch, eof, zero, len);
    assert_true(n > 0);
    return (size_t)n;
}

static int feed_pkt(side *s, uint8_t ch, uint8_t eof, size_t len, uint64_t now)
{
    uint8_t buf[8192];
    size_t n = put_pkt(buf, ch, eof, len);
    return tm2__mconn_feed(s->c, buf, n, now);
}

static tm2__msg *zero_msg(size_t len)
{
    tm2__msg *m = tm2__msg_alloc(len);
    assert_non_null(m);
    memset(m->data, 0, len);
    return m;
}

/* Produces the next packet, expected on ch with eof and len bytes (the
 * buffer given to produce holds no more), and decodes it. */
static tm2__packet one_packet(side *s, uint8_t *buf, uint8_t ch, uint8_t eof, size_t len)
{
    size_t size = tm2__packet_msg_size(ch, eof, len);
    int n = tm2__mconn_produce(s->c, buf, size, 0);
    assert_int_equal(n, size);
    tm2__packet p;
    size_t used;
    assert_int_equal(tm2__packet_decode(buf, (size_t)n, 1056, &p, &used), 0);
    assert_int_equal(used, (size_t)n);
    assert_int_equal(p.channel, ch);
    assert_int_equal(p.eof, eof);
    assert_int_equal(p.len, len);
    return p;
}

static void send_budget_limits(void **state)
{
    (void)state;
    tm2_channel_desc d[] = {{.id = 0x01, .priority = 1, .send_queue_capacity = 100},
                            {.id = 0x02, .priority = 1, .send_queue_capacity = 100}};
    tm2_mconn_config cfg = plain_config();
    cfg.max_send_buffer_bytes = 3000;
    side a;
    side_open(&a, &cfg, d, 2, 0);
    tm2__msg *m1000 = zero_msg(1000), *m2000 = zero_msg(2000), *m1 = zero_msg(1),
             *m3001 = zero_msg(3001), *m0 = zero_msg(0);
    /* Larger than the whole budget: refused at once, nothing charged. */
    assert_int_equal(tm2__mconn_try_send(a.c, 0x01, m3001), TM2_ETOOBIG);
    assert_int_equal(tm2__mconn_reserve(a.c, 3001), TM2_ETOOBIG);
    assert_int_equal(tm2__mconn_send_buffered(a.c), 0);
    /* Exactly at the limit, shared by the channels. */
    assert_int_equal(tm2__mconn_try_send(a.c, 0x01, m1000), 0);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x02, m2000), 0);
    assert_int_equal(tm2__mconn_send_buffered(a.c), 3000);
    /* One byte over, on either channel; an empty message still fits. */
    assert_int_equal(tm2__mconn_try_send(a.c, 0x01, m1), TM2_EFULL);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x02, m1), TM2_EFULL);
    assert_int_equal(tm2__mconn_reserve(a.c, 1), TM2_EFULL);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x01, m0), 0);
    assert_int_equal(tm2__mconn_send_buffered(a.c), 3000);
    /* Released when a message's last packet is produced, not before. */
    uint8_t buf[1100];
    one_packet(&a, buf, 0x01, 1, 1000);   /* the whole first message */
    assert_int_equal(tm2__mconn_send_buffered(a.c), 2000);
    assert_int_equal(a.budget_calls, 1);   /* a reservation had been refused */
    /* Both channels were refused: both hear of it, as from a full queue. */
    assert_int_equal(a.room_calls, 2);
    one_packet(&a, buf, 0x02, 0, 1024);   /* first of 2000 */
    assert_int_equal(tm2__mconn_send_buffered(a.c), 2000);
    one_packet(&a, buf, 0x01, 1, 0);      /* the empty message */
    assert_int_equal(a.budget_calls, 1);  /* nobody was refused since */
    one_packet(&a, buf, 0x02, 1, 976);    /* the rest */
    assert_int_equal(tm2__mconn_send_buffered(a.c), 0);
    assert_int_equal(a.budget_calls, 1);
    assert_int_equal(a.room_calls, 2);
    /* A full queue takes nothing of the budget. */
    tm2_channel_desc one = {.id = 0x01, .priority = 1, .send_queue_capacity = 1};
    side b;
    side_open(&b, &cfg, &one, 1, 0);
    assert_int_equal(tm2__mconn_try_send(b.c, 0x01, m1000), 0);
    assert_int_equal(tm2__mconn_try_send(b.c, 0x01, m1000), TM2_EFULL);
    assert_int_equal(tm2__mconn_send_buffered(b.c), 1000);
    /* A waiting sender's steps: reserved bytes are held across a full
     * queue, belong to the message once queued, and can be given back. */
    assert_int_equal(tm2__mconn_reserve(b.c, 2000), 0);
    assert_int_equal(tm2__mconn_send_reserved(b.c, 0x01, m2000), TM2_EFULL);
    assert_int_equal(tm2__mconn_send_reserved(b.c, 0x07, m2000), TM2_ECHANNEL);
    assert_int_equal(tm2__mconn_send_buffered(b.c), 3000);
    assert_int_equal(tm2__mconn_try_send(b.c, 0x01, m0), TM2_EFULL);
    one_packet(&b, buf, 0x01, 1, 1000);   /* frees the queue slot and 1000 bytes */
    assert_int_equal(tm2__mconn_send_buffered(b.c), 2000);
    assert_int_equal(tm2__mconn_send_reserved(b.c, 0x01, m2000), 0);
    assert_int_equal(tm2__mconn_send_buffered(b.c), 2000);
    assert_int_equal(tm2__mconn_reserve(b.c, 1000), 0);
    assert_int_equal(tm2__mconn_reserve(b.c, 1), TM2_EFULL);
    int budget_calls = b.budget_calls;
    tm2__mconn_unreserve(b.c, 1000);
    assert_int_equal(tm2__mconn_send_buffered(b.c), 2000);
    /* Given back after a refusal: the next produce says so, even with
     * nothing to write. */
    assert_true(tm2__mconn_budget_notify_pending(b.c));
    assert_int_equal(b.budget_calls, budget_calls);
    assert_true(tm2__mconn_want_produce(b.c, 0));
    uint8_t none[4];
    assert_int_equal(tm2__mconn_produce(b.c, none, sizeof none, 0), 0);
    assert_int_equal(b.budget_calls, budget_calls + 1);
    assert_false(tm2__mconn_budget_notify_pending(b.c));
    /* Freed with queued and half-sent messages: their references go. */
    one_packet(&b, buf, 0x01, 0, 1024);
    assert_int_equal(atomic_load(&m2000->refs), 2);
    side_close(&b);
    assert_int_equal(atomic_load(&m2000->refs), 1);
    /* A failed core refuses reservations with its error. */
    assert_int_equal(feed_pkt(&a, 0x07, 1, 1, 0), TM2_ECHANNEL);
    int err = TM2_ECHANNEL;
    assert_int_equal(tm2__mconn_reserve(a.c, 1), err);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x01, m1), err);
    side_close(&a);
    tm2__msg_unref(m1000);
    tm2__msg_unref(m2000);
    tm2__msg_unref(m1);
    tm2__msg_unref(m3001);
    tm2__msg_unref(m0);
}

static void send_budget_off(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x01, .priority = 1, .send_queue_capacity = 64};
    tm2_mconn_config cfg = plain_config();
    cfg.max_send_buffer_bytes = 0;
    side a, b;
    side_open(&a, &cfg, &d, 1, 0);
    side_open(&b, &cfg, &d, 1, 0);
    tm2__msg *m = zero_msg(1u << 20);   /* 64 MiB admitted with no budget */
    for (int i = 0; i < 64; i++)
        assert_int_equal(tm2__mconn_try_send(a.c, 0x01, m), 0);
    assert_int_equal(tm2__mconn_reserve(a.c, SIZE_MAX), 0);
    assert_int_equal(tm2__mconn_send_buffered(a.c), 0);
    pump(&a, &b, CHUNK_WHOLE, 0);
    assert_int_equal(b.count, 64);
    assert_int_equal(a.budget_calls, 0);
    tm2__msg_unref(m);
    side_close(&a);
    side_close(&b);
}

static void recv_budget_across_channels(void **state)
{
    (void)state;
    /* The reference's TestMaxRecvBufferBudget: each channel under its own
     * capacity, together over the connection's budget. */
    tm2_channel_desc d[] = {{.id = 0x01, .priority = 1, .recv_message_capacity = 80},
                            {.id = 0x02, .priority = 1, .recv_message_capacity = 80},
                            {.id = 0x03, .priority = 1}};
    tm2_mconn_config cfg = plain_config();
    cfg.max_recv_buffer_bytes = 100;
    side s;
    side_open(&s, &cfg, d, 3, 0);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 60, 0), 0);
    assert_int_equal(tm2__mconn_recv_buffered(s.c), 60);
    assert_int_equal(feed_pkt(&s, 0x02, 0, 50, 0), TM2_EMSGSIZE);
    const char *why;
    tm2__mconn_error(s.c, &why);
    assert_non_null(strstr(why, "total receive buffer budget exceeded: 110 > 100"));
    side_close(&s);

    /* Exactly at the limit is fine; a byte more is not, whole one-packet
     * messages included (they are buffered while handled, as in the
     * reference). */
    side_open(&s, &cfg, d, 3, 0);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 60, 0), 0);
    assert_int_equal(feed_pkt(&s, 0x03, 1, 40, 0), 0);   /* 100: delivered */
    assert_int_equal(s.count, 1);
    assert_int_equal(feed_pkt(&s, 0x02, 0, 40, 0), 0);   /* 100 buffered */
    assert_int_equal(tm2__mconn_recv_buffered(s.c), 100);
    assert_int_equal(feed_pkt(&s, 0x03, 1, 0, 0), 0);    /* empty: fits */
    /* Completing releases the whole message. */
    assert_int_equal(feed_pkt(&s, 0x01, 1, 0, 0), 0);
    assert_int_equal(s.count, 3);
    assert_int_equal(s.items[2].len, 60);
    assert_int_equal(tm2__mconn_recv_buffered(s.c), 40);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 60, 0), 0);
    assert_int_equal(feed_pkt(&s, 0x03, 1, 1, 0), TM2_EMSGSIZE);   /* 101 */
    side_close(&s);

    /* The channel's own capacity still applies, and first. */
    side_open(&s, &cfg, d, 3, 0);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 70, 0), 0);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 11, 0), TM2_EMSGSIZE);
    tm2__mconn_error(s.c, &why);
    assert_non_null(strstr(why, "capacity of 80"));
    side_close(&s);

    /* 0 disables the budget: only the capacities are left. */
    cfg.max_recv_buffer_bytes = 0;
    side_open(&s, &cfg, d, 3, 0);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 80, 0), 0);
    assert_int_equal(feed_pkt(&s, 0x02, 0, 80, 0), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(feed_pkt(&s, 0x03, 0, 1024, 0), 0);
    assert_int_equal(feed_pkt(&s, 0x03, 1, 1024, 0), 0);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.items[0].len, 11 * 1024);
    side_close(&s);
}

static void assembly_deadline(void **state)
{
    (void)state;
    tm2_channel_desc d[] = {{.id = 0x01, .priority = 1}, {.id = 0x02, .priority = 1}};
    tm2_mconn_config cfg = plain_config();
    cfg.recv_assembly_timeout_ms = 1000;
    side s;
    side_open(&s, &cfg, d, 2, 0);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 0), UINT64_MAX);
    /* Anchored to the first partial packet; dribbled ones, empty or not,
     * do not move it (the reference's NotResetByDribble). */
    assert_int_equal(feed_pkt(&s, 0x01, 0, 7, 100), 0);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 100), 1100);
    for (uint64_t t = 200; t < 1100; t += 100) {
        assert_int_equal(feed_pkt(&s, 0x01, 0, t % 200 ? 0 : 5, t), 0);
        assert_int_equal(tm2__mconn_handle_expiry(s.c, t), 0);
        assert_int_equal(tm2__mconn_next_deadline(s.c, t), 1100);
    }
    assert_int_equal(tm2__mconn_handle_expiry(s.c, 1099), 0);
    assert_int_equal(tm2__mconn_handle_expiry(s.c, 1100), TM2_ETIMEDOUT);
    const char *why;
    assert_int_equal(tm2__mconn_error(s.c, &why), TM2_ETIMEDOUT);
    assert_non_null(strstr(why, "recv assembly timeout: channel 0x01"));
    assert_int_equal(feed_pkt(&s, 0x01, 1, 1, 1101), TM2_ETIMEDOUT);
    side_close(&s);

    /* Completing clears it (the reference's ClearedOnCompletion): messages
     * spaced beyond the deadline never trip it. */
    side_open(&s, &cfg, d, 2, 0);
    for (uint64_t t = 0; t < 10000; t += 3000) {
        assert_int_equal(feed_pkt(&s, 0x01, 0, 5, t), 0);
        assert_int_equal(feed_pkt(&s, 0x01, 1, 3, t + 999), 0);
        assert_int_equal(tm2__mconn_next_deadline(s.c, t + 999), UINT64_MAX);
        assert_int_equal(tm2__mconn_handle_expiry(s.c, t + 2000), 0);
    }
    assert_int_equal(s.count, 4);
    /* Empty partial packets start it too, and a last packet ends it. */
    assert_int_equal(feed_pkt(&s, 0x02, 0, 0, 20000), 0);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 20000), 21000);
    assert_int_equal(feed_pkt(&s, 0x02, 1, 0, 20001), 0);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 20001), UINT64_MAX);
    /* Two channels: the earliest deadline first; finishing it hands over to
     * the other's. */
    assert_int_equal(feed_pkt(&s, 0x01, 0, 5, 30000), 0);
    assert_int_equal(feed_pkt(&s, 0x02, 0, 5, 30400), 0);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 30400), 31000);
    assert_int_equal(feed_pkt(&s, 0x01, 1, 5, 30500), 0);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 30500), 31400);
    /* A last packet after the deadline is too late, whether the timer ran
     * first or not. */
    assert_int_equal(feed_pkt(&s, 0x02, 1, 5, 31400), TM2_ETIMEDOUT);
    tm2__mconn_error(s.c, &why);
    assert_non_null(strstr(why, "channel 0x02 did not complete a message within 1000 ms"));
    side_close(&s);

    /* 0 disables it. */
    cfg.recv_assembly_timeout_ms = 0;
    side_open(&s, &cfg, d, 2, 0);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 5, 0), 0);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 0), UINT64_MAX);
    assert_int_equal(tm2__mconn_handle_expiry(s.c, 1000000000), 0);
    assert_int_equal(feed_pkt(&s, 0x01, 1, 5, 2000000000), 0);
    assert_int_equal(s.count, 1);
    side_close(&s);
}

static void stall_credit_moves_deadlines(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x01, .priority = 1};
    tm2_mconn_config cfg = keepalive_config();   /* ping every 1 s, pong within 500 ms */
    cfg.recv_assembly_timeout_ms = 300;
    side s;
    side_open(&s, &cfg, &d, 1, 0);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 5, 900), 0);
    assert_int_equal(tm2__mconn_handle_expiry(s.c, 1000), 0);   /* ping due, pong by 1500 */
    /* Time the glue spent not reading is not the peer's. */
    tm2__mconn_credit_stall(s.c, 1200);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 1000), 2000);   /* next ping: unmoved */
    assert_int_equal(tm2__mconn_handle_expiry(s.c, 1999), 0);
    uint8_t buf[64];
    assert_true(tm2__mconn_produce(s.c, buf, sizeof buf, 1999) > 0);
    assert_int_equal(tm2__mconn_feed(s.c, buf, 0, 1999), 0);
    assert_int_equal(feed_pkt(&s, 0x01, 1, 5, 2300), 0);   /* in time: 900 + 300 + 1200 */
    assert_int_equal(s.count, 1);
    /* The ping due at 2000 leaves the earlier pong deadline in place. */
    assert_int_equal(tm2__mconn_handle_expiry(s.c, 2699), 0);
    assert_int_equal(tm2__mconn_handle_expiry(s.c, 2700), TM2_EPONG);   /* 1000 + 500 + 1200 */
    side_close(&s);
    /* It only ever moves them back, and nothing else. */
    side_open(&s, &cfg, &d, 1, 0);
    tm2__mconn_credit_stall(s.c, 5000);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 0), 1000);
    assert_int_equal(feed_pkt(&s, 0x01, 0, 5, 10), 0);
    assert_int_equal(tm2__mconn_next_deadline(s.c, 10), 310);
    side_close(&s);
}

/* The largest payload a config may set carries messages end to end. */
static void max_payload_end_to_end(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x01, .priority = 1, .send_queue_capacity = 4};
    tm2_mconn_config cfg = plain_config();
    cfg.max_packet_payload = TM2_MAX_PACKET_PAYLOAD;
    side a, b;
    side_open(&a, &cfg, &d, 1, 0);
    side_open(&b, &cfg, &d, 1, 0);
    size_t pkt = tm2__mconn_max_packet_size(a.c);
    assert_true(pkt > TM2_MAX_PACKET_PAYLOAD);
    tm2__msg *m = random_msg(3 * TM2_MAX_PACKET_PAYLOAD + 5);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x01, m), 0);
    uint8_t *buf = malloc(pkt);
    assert_non_null(buf);
    /* One whole packet or none. */
    size_t first = tm2__packet_msg_size(0x01, 0, TM2_MAX_PACKET_PAYLOAD);
    assert_int_equal(tm2__mconn_produce(a.c, buf, first - 1, 0), 0);
    for (int mode = CHUNK_WHOLE; mode <= CHUNK_RANDOM; mode++) {
        if (mode != CHUNK_WHOLE)
            assert_int_equal(tm2__mconn_try_send(a.c, 0x01, m), 0);
        int n;
        while ((n = tm2__mconn_produce(a.c, buf, pkt, 0)) > 0)
            assert_int_equal(feed_chunks(&b, buf, (size_t)n, mode, 0), 0);
        assert_int_equal(n, 0);
    }
    assert_int_equal(b.count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(b.items[i].len, m->len);
        assert_memory_equal(b.items[i].data, m->data, m->len);
    }
    free(buf);
    tm2__msg_unref(m);
    side_close(&a);
    side_close(&b);
    cfg.max_packet_payload = TM2_MAX_PACKET_PAYLOAD + 1;
    tm2__mconn *c;
    assert_int_equal(tm2__mconn_new(&c, &cfg, &d, 1, NULL, NULL, 0), TM2_EINVAL);
}

static void config_check_fields(void **state)
{
    (void)state;
    tm2_mconn_config def, cfg;
    tm2_mconn_config_default(&def);
    /* Every default from defaults.h. */
    assert_int_equal(def.send_rate, TM2_DEFAULT_SEND_RATE);
    assert_int_equal(def.recv_rate, TM2_DEFAULT_RECV_RATE);
    assert_int_equal(def.max_packet_payload, TM2_DEFAULT_MAX_PACKET_PAYLOAD);
    assert_int_equal(def.flush_throttle_ms, TM2_DEFAULT_FLUSH_THROTTLE_MS);
    assert_int_equal(def.ping_interval_ms, TM2_DEFAULT_PING_INTERVAL_MS);
    assert_int_equal(def.pong_timeout_ms, TM2_DEFAULT_PONG_TIMEOUT_MS);
    assert_int_equal(def.max_send_buffer_bytes, TM2_DEFAULT_MAX_SEND_BUFFER_BYTES);
    assert_int_equal(def.max_recv_buffer_bytes, TM2_DEFAULT_MAX_RECV_BUFFER_BYTES);
    assert_int_equal(def.recv_assembly_timeout_ms, TM2_DEFAULT_RECV_ASSEMBLY_TIMEOUT_MS);
    assert_int_equal(def.max_send_buffer_bytes, 20u << 20);
    assert_int_equal(def.recv_assembly_timeout_ms, 30000);

    const char *field = "unset";
    assert_int_equal(tm2__mconn_config_check(&def, &field), 0);
    assert_null(field);
    assert_int_equal(tm2__mconn_config_check(&def, NULL), 0);
    /* Payload: 1 .. TM2_MAX_PACKET_PAYLOAD. */
    cfg = def;
    cfg.max_packet_payload = 0;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), TM2_EINVAL);
    assert_string_equal(field, "max_packet_payload");
    cfg.max_packet_payload = TM2_MAX_PACKET_PAYLOAD + 1;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), TM2_EINVAL);
    assert_string_equal(field, "max_packet_payload");
    cfg.max_packet_payload = TM2_MAX_PACKET_PAYLOAD;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), 0);
    cfg.max_packet_payload = 1;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), 0);
    /* Pong: non-zero and below the ping interval while pinging. */
    cfg = def;
    cfg.pong_timeout_ms = cfg.ping_interval_ms;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), TM2_EINVAL);
    assert_string_equal(field, "pong_timeout_ms");
    cfg.pong_timeout_ms = 0;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), TM2_EINVAL);
    assert_string_equal(field, "pong_timeout_ms");
    cfg.ping_interval_ms = 0;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), 0);
    cfg = def;
    cfg.pong_timeout_ms = cfg.ping_interval_ms - 1;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), 0);
    /* Budgets: 0 or at least TM2_MIN_BUFFER_BYTES. */
    static const size_t bad_budgets[] = {1, 100, TM2_MIN_BUFFER_BYTES - 1};
    for (size_t i = 0; i < sizeof bad_budgets / sizeof bad_budgets[0]; i++) {
        cfg = def;
        cfg.max_send_buffer_bytes = bad_budgets[i];
        assert_int_equal(tm2__mconn_config_check(&cfg, &field), TM2_EINVAL);
        assert_string_equal(field, "max_send_buffer_bytes");
        cfg = def;
        cfg.max_recv_buffer_bytes = bad_budgets[i];
        assert_int_equal(tm2__mconn_config_check(&cfg, &field), TM2_EINVAL);
        assert_string_equal(field, "max_recv_buffer_bytes");
        /* The core itself takes any budget (tests and fuzzing go small). */
        tm2_channel_desc d = {.id = 1, .priority = 1};
        tm2__mconn *c;
        assert_int_equal(tm2__mconn_new(&c, &cfg, &d, 1, NULL, NULL, 0), 0);
        tm2__mconn_free(c);
    }
    cfg = def;
    cfg.max_send_buffer_bytes = TM2_MIN_BUFFER_BYTES;
    cfg.max_recv_buffer_bytes = TM2_MIN_BUFFER_BYTES;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), 0);
    cfg.max_send_buffer_bytes = 0;
    cfg.max_recv_buffer_bytes = 0;
    cfg.recv_assembly_timeout_ms = 0;
    assert_int_equal(tm2__mconn_config_check(&cfg, &field), 0);
    assert_null(field);
}

/* ---- status ------------------------------------------------------------------------- */

static void status_snapshot(void **state)
{
    (void)state;
    tm2_channel_desc d[] = {{.id = 0x40, .priority = 10, .send_queue_capacity = 1000},
                            {.id = 0x50, .priority = 1, .send_queue_capacity = 20}};
    tm2_mconn_config cfg = plain_config();
    side a, b;
    side_open(&a, &cfg, d, 2, 1000);
    side_open(&b, &cfg, d, 2, 1000);
    tm2__msg *m = random_msg(3000);   /* 3 packets: 1024, 1024, 952 bytes */
    for (int i = 0; i < 5; i++)
        assert_int_equal(tm2__mconn_try_send(a.c, 0x40, m), 0);
    assert_int_equal(tm2__mconn_try_send(a.c, 0x50, m), 0);
    tm2_mconn_status st;
    tm2__mconn_status(a.c, 1000, &st);
    assert_int_equal(st.n_channels, 2);
    assert_int_equal(st.channels[0].id, 0x40);
    assert_int_equal(st.channels[0].priority, 10);
    assert_int_equal(st.channels[0].send_queue_capacity, 1000);
    assert_int_equal(st.channels[0].send_queue_size, 5);
    assert_int_equal(st.channels[1].id, 0x50);
    assert_int_equal(st.channels[1].send_queue_capacity, 20);
    assert_int_equal(st.channels[1].send_queue_size, 1);
    assert_int_equal(st.channels[0].recently_sent, 0);
    /* Six packets, one per call: 0x40 runs ahead of 0x50 ten to one. */
    static const uint8_t order[] = {0x40, 0x50, 0x40, 0x40, 0x40, 0x40};
    uint8_t buf[65536];
    size_t total = 0;
    int64_t per[2] = {0, 0};
    for (int i = 0; i < 6; i++) {
        int n = tm2__mconn_produce(a.c, buf + total, 1100, 1050);
        assert_true(n > 0);
        tm2__packet p;
        size_t used;
        assert_int_equal(tm2__packet_decode(buf + total, (size_t)n, 1056, &p, &used), 0);
        assert_int_equal(p.channel, order[i]);
        per[p.channel == 0x50] += n;
        total += (size_t)n;
    }
    tm2__mconn_status(a.c, 1100, &st);
    assert_int_equal(st.duration_ms, 100);
    assert_int_equal(st.channels[0].recently_sent, per[0]);
    assert_int_equal(st.channels[1].recently_sent, per[1]);
    /* 0x40: one message done, one in flight, three waiting; 0x50: in flight. */
    assert_int_equal(st.channels[0].send_queue_size, 4);
    assert_int_equal(st.channels[1].send_queue_size, 1);
    assert_int_equal(st.send.bytes, total);
    assert_int_equal(st.send.idle_ms, 50);
    assert_int_equal(st.send.avg_rate, total * 10);   /* one 100 ms sample */
    assert_int_equal(st.send.cur_rate, total * 10);
    assert_int_equal(st.send.inst_rate, total * 10);
    /* After the 2 s tick the counters decay by 0.8, truncated. */
    tm2__mconn_status(a.c, 3000, &st);
    assert_int_equal(st.channels[0].recently_sent, (int64_t)((double)per[0] * 0.8));
    assert_int_equal(st.channels[1].recently_sent, (int64_t)((double)per[1] * 0.8));
    assert_int_equal(st.send.idle_ms, 1950);
    /* The receiver counts what it read. */
    assert_int_equal(tm2__mconn_feed(b.c, buf, total, 1500), 0);
    tm2__mconn_status(b.c, 1600, &st);
    assert_int_equal(st.recv.bytes, total);
    assert_int_equal(st.recv.peak_rate, total * 1000 / 500);
    assert_int_equal(b.count, 1);
    assert_int_equal(b.items[0].len, 3000);
    tm2__msg_unref(m);
    side_close(&a);
    side_close(&b);
}

static void broadcast_shares_one_buffer(void **state)
{
    (void)state;
    tm2_channel_desc d = {.id = 0x30, .priority = 1, .send_queue_capacity = 2};
    tm2_mconn_config cfg = plain_config();
    side a1, a2, b;
    side_open(&a1, &cfg, &d, 1, 0);
    side_open(&a2, &cfg, &d, 1, 0);
    side_open(&b, &cfg, &d, 1, 0);
    tm2__msg *m = random_msg(5000);
    assert_int_equal(tm2__mconn_try_send(a1.c, 0x30, m), 0);
    assert_int_equal(tm2__mconn_try_send(a2.c, 0x30, m), 0);
    assert_int_equal(atomic_load(&m->refs), 3);
    pump(&a1, &b, CHUNK_WHOLE, 0);
    assert_int_equal(atomic_load(&m->refs), 2);
    pump(&a2, &b, CHUNK_WHOLE, 0);
    assert_int_equal(atomic_load(&m->refs), 1);
    assert_int_equal(b.count, 2);
    assert_memory_equal(b.items[1].data, m->data, 5000);
    tm2__msg_unref(m);
    side_close(&a1);
    side_close(&a2);
    side_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(three_channels_in_order),
        cmocka_unit_test(three_channels_one_byte_feeds),
        cmocka_unit_test(three_channels_random_feeds),
        cmocka_unit_test(ten_mib_message),
        cmocka_unit_test(empty_message_and_split_vectors),
        cmocka_unit_test(single_packet_messages_are_not_copied),
        cmocka_unit_test(eof_other_than_one_is_not_last),
        cmocka_unit_test(priority_shares),
        cmocka_unit_test(send_rate_limit),
        cmocka_unit_test(recv_rate_limit),
        cmocka_unit_test(ping_pong_and_idle),
        cmocka_unit_test(pong_timeout_closes),
        cmocka_unit_test(pings_share_one_pong),
        cmocka_unit_test(round_trip_times),
        cmocka_unit_test(round_trip_two_pings_out),
        cmocka_unit_test(flush_throttle),
        cmocka_unit_test(queue_full),
        cmocka_unit_test(unknown_channel_error),
        cmocka_unit_test(oversize_message_error),
        cmocka_unit_test(malformed_and_oversized_packets),
        cmocka_unit_test(receive_handler_rules),
        cmocka_unit_test(config_rules),
        cmocka_unit_test(status_snapshot),
        cmocka_unit_test(broadcast_shares_one_buffer),
        cmocka_unit_test(send_budget_limits),
        cmocka_unit_test(send_budget_off),
        cmocka_unit_test(recv_budget_across_channels),
        cmocka_unit_test(assembly_deadline),
        cmocka_unit_test(stall_credit_moves_deadlines),
        cmocka_unit_test(max_payload_end_to_end),
        cmocka_unit_test(config_check_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
