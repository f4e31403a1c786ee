/* MConnection against the reference, over real loopback TCP: tm2p2p dials
 * the reference's mconn-echo and the reference dials tm2p2p. Three channels
 * (priorities 1, 5, 10) carry messages from 0 bytes to the receive capacity,
 * which must come back byte-exact and in order per channel; then the
 * connection idles across three ping intervals (1 s instead of 60 s, on both
 * sides) and both ends must see every Ping answered and no error.
 *
 * The tm2p2p side runs twice. First as the sans-I/O mconn core over the
 * sans-I/O secret connection core, driven by a plain poll() loop, so a
 * failure points at the protocol rather than at an event loop; Ping and Pong
 * packets are counted in the plaintext stream in both directions on both
 * sides, and the reference's counts (its STATS line) must equal ours after
 * the orderly close. Then through the libuv glue a node uses
 * (net/mconn_stream.h); see the comment above its part.
 *
 * Empty messages are exchanged one at a time with nothing else queued: the
 * reference drops an empty message (and leaks its queue count) when another
 * channel's packet is chosen right after the empty one was taken from its
 * queue, so with other traffic in flight its echo may legitimately never
 * come. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "conn/mconn.h"
#include "conn/packet.h"
#include "conn/secret_conn.h"
#include "net/engine_uv.h"
#include "net/mconn_stream.h"
#include "net/sc_stream_uv.h"
#include "polltcp.h"
#include "refproc.h"
#include "tm2p2p/channel.h"
#include "tm2p2p/key.h"
#include "tv.h"

#define NCH            3
#define RECV_CAP_BYTES 4194304           /* receive capacity on both sides (4 MiB) */
#define RECV_CAP       ((size_t)RECV_CAP_BYTES)
#define SEND_QUEUE     4                 /* our per-channel send queue */
#define WINDOW         4                 /* messages per channel sent but not yet echoed */
/* Keepalive on both sides. The pong timeout bounds the Ping-Pong round trip
 * during the bulk phase too, where a Ping waits behind the MiB of data
 * already in the socket buffers: on a loaded two-core machine that reached
 * ~280 ms, so 200/150 ms intervals failed there and these leave a margin. */
#define PING_MS        1000
#define PONG_MS        900
#define FLUSH_MS       10
#define IDLE_PINGS     3

#define LINE_MS        30000
#define HANDSHAKE_MS   15000
#define TRANSFER_MS    150000
#define IDLE_MS        (PING_MS * (IDLE_PINGS + 1) * 5)
#define REF_WATCHDOG   "240s"            /* tm2ref gives up after this; > the above */

#define PBUF_CAP       (64u << 10)       /* plaintext produced per seal */
#define RX_CAP         (64u << 10)       /* wire bytes per read */

/* Our channels and the reference's, in the same registration order. */
static const uint8_t chan_id[NCH] = {0x01, 0x02, 0x03};
static const uint32_t chan_prio[NCH] = {1, 5, 10};
#define REF_CHANNELS   "01:1,02:5,03:10"
#define REF_SEND_QUEUE "16"              /* > WINDOW: its echo Send never waits */

/* Message sizes of the bulk phase: around multiples of the 1024-byte packet
 * payload, a few MiB-sized ones, and the capacity itself. Each channel walks
 * the list from a different starting point so big messages on different
 * channels overlap. */
static const size_t sizes[] = {
    1, 2, 100, 1023, 1024, 1025, 2047, 2048, 2049, 3071, 3072, 3073, 4095, 4096, 4097,
    8191, 8192, 8193, 65535, 65536, 65537, (1u << 20) - 1, 1u << 20, (1u << 20) + 1,
    (2u << 20) + 1, RECV_CAP - 1, RECV_CAP,
};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define NMSG   (1 + NSIZES)              /* the empty message first */

/* Counts Ping and Pong packets in one direction of the plaintext stream. */
typedef struct tap {
    uint64_t prefix;
    unsigned shift;
    bool in_body;
    uint64_t left;
    bool is_short;
    uint8_t small[TM2__PACKET_PING_SIZE];
    size_t small_len;
    bool broken;
    uint64_t pings, pongs, bytes;
} tap;

typedef struct chan_plan {
    tm2__msg *msg[NMSG];
    size_t next_send;                 /* next msg[] to queue */
    size_t next_echo;                 /* next msg[] expected back */
} chan_plan;

typedef struct glue glue;

typedef struct fixture {
    refproc ref;
    glue *g;                          /* the libuv side, when the test uses it */
    int lfd, fd;
    tm2__sc sc;
    bool sc_used;
    tm2_node_key key;
    tm2__mconn *mc;
    chan_plan ch[NCH];
    size_t send_limit;                /* queue msg[] below this index only */
    uint64_t msgs_total, bytes_total;
    uint64_t wire_total;              /* sized Msg packets carrying them, one way */

    uint8_t *pbuf;                    /* produced plaintext not yet sealed */
    size_t pfill;
    uint8_t *tx;                      /* sealed, not yet written */
    size_t tx_len, tx_off;
    uint8_t *rx;
    size_t rx_len;                    /* handshake leftovers in rx */
    uint8_t *plain;
    bool wr_shut, eof;

    tap tap_out, tap_in;              /* what we sent / received */
    uint64_t ping_sent_at;            /* 0: no Ping of ours outstanding */
    uint64_t max_rtt, rtts;

    int cb_err;                       /* first failure seen in a callback */
    char cb_what[160];
    uint64_t rng;
} fixture;

static const uint8_t *ping_body(void)
{
    static uint8_t b[TM2__PACKET_PING_SIZE];
    tm2__packet_encode_ping(b, sizeof b);
    return b + 1;
}

static const uint8_t *pong_body(void)
{
    static uint8_t b[TM2__PACKET_PING_SIZE];
    tm2__packet_encode_pong(b, sizeof b);
    return b + 1;
}

/* Follows sized packets (uvarint length, body); bodies as long as a Ping are
 * compared with the Ping and Pong encodings. *pings and *pongs receive the
 * counts p added. */
static void tap_observe(tap *t, const uint8_t *p, size_t len, uint64_t *pings, uint64_t *pongs)
{
    const size_t body_len = TM2__PACKET_PING_SIZE - 1;
    *pings = *pongs = 0;
    t->bytes += len;
    while (len > 0 && !t->broken) {
        if (!t->in_body) {
            uint8_t b = *p++;
            len--;
            if (t->shift > 63) {
                t->broken = true;
                return;
            }
            t->prefix |= (uint64_t)(b & 0x7f) << t->shift;
            t->shift += 7;
            if (b & 0x80)
                continue;
            t->in_body = true;
            t->left = t->prefix;
            t->is_short = t->prefix == body_len;
            t->small_len = 0;
            t->prefix = 0;
            t->shift = 0;
        } else {
            size_t n = len < t->left ? len : (size_t)t->left;
            if (t->is_short) {
                memcpy(t->small + t->small_len, p, n);
                t->small_len += n;
            }
            t->left -= n;
            p += n;
            len -= n;
        }
        if (t->in_body && t->left == 0) {
            if (t->is_short && memcmp(t->small, ping_body(), body_len) == 0)
                (*pings)++;
            else if (t->is_short && memcmp(t->small, pong_body(), body_len) == 0)
                (*pongs)++;
            t->in_body = false;
        }
    }
    t->pings += *pings;
    t->pongs += *pongs;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static int cb_fail(fixture *f, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int cb_fail(fixture *f, int code, const char *fmt, ...)
{
    if (f->cb_err == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->cb_what, sizeof f->cb_what, fmt, ap);
        va_end(ap);
        f->cb_err = code;
    }
    return code;
}

/* An echo must be the next message expected on its channel, byte for byte.
 * Failures are recorded and returned, so the connection stops; the test
 * reports them after the call. */
static int check_echo(fixture *f, uint8_t id, const uint8_t *data, size_t len)
{
    size_t k = 0;
    while (k < NCH && chan_id[k] != id)
        k++;
    if (k == NCH)
        return cb_fail(f, TM2_ECHANNEL, "message on channel 0x%02x we never sent on", id);
    chan_plan *c = &f->ch[k];
    if (c->next_echo >= c->next_send)
        return cb_fail(f, TM2_EPROTO, "channel 0x%02x: %zu-byte message beyond the %zu sent", id,
                       len, c->next_send);
    const tm2__msg *want = c->msg[c->next_echo];
    if (len != want->len)
        return cb_fail(f, TM2_EPROTO, "channel 0x%02x: echo %zu is %zu bytes, sent %zu", id,
                       c->next_echo, len, want->len);
    if (len > 0 && memcmp(data, want->data, len) != 0)
        return cb_fail(f, TM2_EPROTO, "channel 0x%02x: echo %zu (%zu bytes) differs", id,
                       c->next_echo, len);
    c->next_echo++;
    return 0;
}

static int on_receive(void *user, uint8_t id, const uint8_t *data, size_t len)
{
    return check_echo(user, id, data, len);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    refproc_init(&f->ref);
    f->lfd = f->fd = -1;
    f->pbuf = malloc(PBUF_CAP);
    f->tx = malloc(tm2__sc_sealed_size(PBUF_CAP));
    f->rx = malloc(RX_CAP);
    f->plain = malloc(RX_CAP);
    if (!f->pbuf || !f->tx || !f->rx || !f->plain)
        return -1;

    const char *env = getenv("TM2_INTEROP_SEED");
    uint64_t seed;
    if (env != NULL)
        seed = strtoull(env, NULL, 0);
    else
        randombytes_buf(&seed, sizeof seed);
    print_message("TM2_INTEROP_SEED=%" PRIu64 "\n", seed);
    f->rng = seed;

    /* Message j of channel k: the empty message, then the sizes from a
     * per-channel offset, with contents from one key per message. */
    for (size_t k = 0; k < NCH; k++) {
        for (size_t j = 0; j < NMSG; j++) {
            size_t len = j == 0 ? 0 : sizes[(j - 1 + k * NSIZES / NCH) % NSIZES];
            tm2__msg *m = tm2__msg_alloc(len);
            if (m == NULL)
                return -1;
            uint8_t key[randombytes_SEEDBYTES];
            for (size_t i = 0; i < sizeof key; i += 8) {
                uint64_t r = splitmix64(&f->rng);
                memcpy(key + i, &r, 8);
            }
            randombytes_buf_deterministic(m->data, len, key);
            f->ch[k].msg[j] = m;
            f->msgs_total++;
            f->bytes_total += len;
            size_t off = 0;
            do {
                size_t chunk = len - off < 1024 ? len - off : 1024;
                off += chunk;
                f->wire_total += tm2__packet_msg_size(chan_id[k], off == len, chunk);
            } while (off < len);
        }
    }
    *state = f;
    return 0;
}

static void glue_release(glue *g);

static int teardown(void **state)
{
    fixture *f = *state;
    refproc_stop(&f->ref);
    if (f->g != NULL) {
        glue_release(f->g);
        free(f->g);
    }
    if (f->mc != NULL)
        tm2__mconn_free(f->mc);
    if (f->fd >= 0)
        close(f->fd);
    if (f->lfd >= 0)
        close(f->lfd);
    if (f->sc_used)
        tm2__sc_close(&f->sc);
    tm2_node_key_wipe(&f->key);
    for (size_t k = 0; k < NCH; k++)
        for (size_t j = 0; j < NMSG; j++)
            tm2__msg_unref(f->ch[k].msg[j]);
    free(f->pbuf);
    free(f->tx);
    free(f->rx);
    free(f->plain);
    free(f);
    return 0;
}

static void handshake(fixture *f, uint64_t deadline)
{
    f->sc_used = true;
    assert_int_equal(tm2__sc_init(&f->sc, &f->key, NULL), 0);
    pt_sc_handshake(&f->sc, f->fd, f->rx, RX_CAP, &f->rx_len, deadline);
}

static void check_core(fixture *f)
{
    if (f->cb_err != 0)
        fail_msg("%s", f->cb_what);
    const char *why = NULL;
    int e = tm2__mconn_error(f->mc, &why);
    if (e != 0)
        fail_msg("mconn failed: %s (%s)", tm2_strerror(e), why ? why : "");
}

/* Our side's settings, matching what start_reference gives the reference. */
static void mconn_settings(tm2_mconn_config *cfg, tm2_channel_desc d[NCH])
{
    tm2_mconn_config_default(cfg);
    cfg->send_rate = 0;
    cfg->recv_rate = 0;
    cfg->flush_throttle_ms = FLUSH_MS;
    cfg->ping_interval_ms = PING_MS;
    cfg->pong_timeout_ms = PONG_MS;
    for (size_t k = 0; k < NCH; k++)
        d[k] = (tm2_channel_desc){.id = chan_id[k], .priority = chan_prio[k],
                                  .send_queue_capacity = SEND_QUEUE,
                                  .recv_buffer_capacity = 4096,
                                  .recv_message_capacity = RECV_CAP};
}

static void start_mconn(fixture *f)
{
    tm2_mconn_config cfg;
    tm2_channel_desc d[NCH];
    mconn_settings(&cfg, d);
    tm2__mconn_callbacks cb = {.on_receive = on_receive};
    assert_int_equal(tm2__mconn_new(&f->mc, &cfg, d, NCH, &cb, f, tv_now_ms()), 0);
}

/* Opens len wire bytes from rx and feeds the plaintext to the core. */
static void feed_wire(fixture *f, const uint8_t *in, size_t len)
{
    size_t off = 0;
    while (off < len || tm2__sc_open_pending(&f->sc) > 0) {
        size_t used = 0;
        int r = tm2__sc_open(&f->sc, in + off, len - off, &used, f->plain, RX_CAP);
        if (r < 0)
            fail_msg("open: %s", tm2_strerror(r));
        off += used;
        if (r == 0 && used == 0)
            break;
        uint64_t now = tv_now_ms(), pings, pongs;
        tap_observe(&f->tap_in, f->plain, (size_t)r, &pings, &pongs);
        if (pongs > 0 && f->ping_sent_at != 0) {
            if (now - f->ping_sent_at > f->max_rtt)
                f->max_rtt = now - f->ping_sent_at;
            f->ping_sent_at = 0;
            f->rtts++;
        }
        int fr = tm2__mconn_feed(f->mc, f->plain, (size_t)r, now);
        if (fr != 0)
            check_core(f);
        assert_int_equal(fr, 0);
    }
}

typedef int (*try_send_fn)(void *conn, uint8_t ch, tm2__msg *m);

/* Queues what the current phase allows: the messages below send_limit, at
 * most WINDOW per channel not yet echoed. 0 or the first error other than a
 * full queue. */
static int queue_messages(fixture *f, try_send_fn try_send, void *conn)
{
    for (size_t k = 0; k < NCH; k++) {
        chan_plan *c = &f->ch[k];
        while (c->next_send < f->send_limit && c->next_send - c->next_echo < WINDOW) {
            int r = try_send(conn, chan_id[k], c->msg[c->next_send]);
            if (r == TM2_EFULL)
                break;
            if (r != 0)
                return r;
            c->next_send++;
        }
    }
    return 0;
}

static int core_try_send(void *conn, uint8_t ch, tm2__msg *m)
{
    return tm2__mconn_try_send(conn, ch, m);
}

/* Produces into pbuf and seals it: whole frames at once, the partial last
 * frame only when the core says the data must go out now. */
static void produce(fixture *f, uint64_t now)
{
    size_t max_pkt = tm2__mconn_max_packet_size(f->mc);
    while (tm2__mconn_want_produce(f->mc, now) && f->pfill + max_pkt <= PBUF_CAP) {
        int n = tm2__mconn_produce(f->mc, f->pbuf + f->pfill, PBUF_CAP - f->pfill, now);
        if (n < 0)
            check_core(f);
        assert_true(n >= 0);
        if (n == 0)
            break;
        uint64_t pings, pongs;
        tap_observe(&f->tap_out, f->pbuf + f->pfill, (size_t)n, &pings, &pongs);
        if (pings > 0 && f->ping_sent_at == 0)
            f->ping_sent_at = now;
        f->pfill += (size_t)n;
    }
    bool flush = tm2__mconn_flush_due(f->mc, now);
    size_t take = flush ? f->pfill : f->pfill - f->pfill % TM2__SC_DATA_MAX;
    if (take > 0) {
        size_t used = 0;
        int w = tm2__sc_seal(&f->sc, f->pbuf, take, &used, f->tx, tm2__sc_sealed_size(PBUF_CAP));
        if (w < 0)
            fail_msg("seal: %s", tm2_strerror(w));
        assert_int_equal(used, take);
        memmove(f->pbuf, f->pbuf + take, f->pfill - take);
        f->pfill -= take;
        f->tx_len = (size_t)w;
        f->tx_off = 0;
    }
    if (flush && f->pfill == 0)
        tm2__mconn_flushed(f->mc);
}

/* One turn of the loop: timers, production, then one poll() for the socket
 * until whichever comes first of I/O, the core's next deadline or the
 * phase's deadline. */
static void step(fixture *f, uint64_t deadline)
{
    uint64_t now = tv_now_ms();
    if (!f->wr_shut) {
        if (tm2__mconn_next_deadline(f->mc, now) <= now) {
            int r = tm2__mconn_handle_expiry(f->mc, now);
            if (r != 0)
                check_core(f);
        }
        int qr = queue_messages(f, core_try_send, f->mc);
        if (qr != 0)
            check_core(f);
        assert_int_equal(qr, 0);
        if (f->tx_off == f->tx_len)
            produce(f, now);
    }
    int timeout = pt_remaining_ms(deadline);
    if (!f->wr_shut && f->tx_off == f->tx_len) {
        uint64_t d = tm2__mconn_next_deadline(f->mc, now);
        if (tm2__mconn_want_produce(f->mc, now))
            d = now;
        if (d < now + (uint64_t)timeout)
            timeout = d <= now ? 0 : (int)(d - now);
    }
    struct pollfd p = {.fd = f->fd,
                       .events = (short)((f->eof ? 0 : POLLIN) | (f->tx_off < f->tx_len ? POLLOUT : 0))};
    int r = poll(&p, 1, timeout);
    if (r < 0 && errno == EINTR)
        return;
    assert_true(r >= 0);
    if (p.revents & POLLOUT)
        f->tx_off += pt_send_some(f->fd, f->tx + f->tx_off, f->tx_len - f->tx_off);
    if (!f->eof && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = pt_recv_some(f->fd, f->rx, RX_CAP);
        if (n == 0) {
            f->eof = true;
            int e = tm2__sc_eof(&f->sc);
            if (e != 0)
                fail_msg("stream ended badly: %s", tm2_strerror(e));
        } else if (n > 0) {
            feed_wire(f, f->rx, (size_t)n);
        }
    }
    if (f->eof && !f->wr_shut)
        fail_msg("reference closed the connection early");
}

static bool all_echoed(const fixture *f, size_t upto)
{
    for (size_t k = 0; k < NCH; k++)
        if (f->ch[k].next_echo < upto)
            return false;
    return true;
}

/* Phase 1: one empty message per channel, each alone on the connection. */
static void exchange_empty(fixture *f)
{
    uint64_t deadline = tv_now_ms() + LINE_MS;
    if (f->rx_len > 0)
        feed_wire(f, f->rx, f->rx_len);
    f->send_limit = 0;   /* queued by hand below, one at a time */
    for (size_t k = 0; k < NCH; k++) {
        chan_plan *c = &f->ch[k];
        assert_int_equal(tm2__mconn_try_send(f->mc, chan_id[k], c->msg[0]), 0);
        c->next_send = 1;
        while (c->next_echo < 1)
            step(f, deadline);
    }
    check_core(f);
}

/* Phase 2: every size on all three channels at once. */
static void exchange_bulk(fixture *f)
{
    uint64_t t0 = tv_now_ms();
    f->send_limit = NMSG;
    f->rtts = f->max_rtt = 0;
    while (!all_echoed(f, NMSG))
        step(f, t0 + TRANSFER_MS);
    check_core(f);
    uint64_t ms = tv_now_ms() - t0;
    print_message("%" PRIu64 " messages, %" PRIu64 " bytes echoed on %d channels in %" PRIu64
                  " ms; %" PRIu64 " Pings answered meanwhile, longest round trip %" PRIu64 " ms\n",
                  f->msgs_total, f->bytes_total, NCH, ms, f->rtts, f->max_rtt);
}

/* Phase 3: idle for three ping intervals, and at least until three Pings
 * each way were answered. */
static void idle(fixture *f)
{
    tap out0 = f->tap_out, in0 = f->tap_in;
    uint64_t t0 = tv_now_ms();
    while (tv_now_ms() - t0 < IDLE_PINGS * PING_MS ||
           f->tap_out.pings - out0.pings < IDLE_PINGS || f->tap_in.pongs - in0.pongs < IDLE_PINGS ||
           f->tap_in.pings - in0.pings < IDLE_PINGS || f->tap_out.pongs - out0.pongs < IDLE_PINGS)
        step(f, t0 + IDLE_MS);
    check_core(f);
    /* Idle means idle: only Pings and Pongs crossed. */
    assert_int_equal(f->tap_out.bytes - out0.bytes,
                     TM2__PACKET_PING_SIZE * (f->tap_out.pings - out0.pings + f->tap_out.pongs - out0.pongs));
    assert_int_equal(f->tap_in.bytes - in0.bytes,
                     TM2__PACKET_PING_SIZE * (f->tap_in.pings - in0.pings + f->tap_in.pongs - in0.pongs));
    /* The core timed its Pings: the reference sent no Pong it was not asked
     * for (that would have ended the measuring). */
    tm2_mconn_status st;
    tm2__mconn_status(f->mc, tv_now_ms(), &st);
    assert_true(st.min_rtt_ms >= 1 && st.min_rtt_ms <= st.rtt_ms && st.rtt_ms <= PONG_MS);
    print_message("idle %" PRIu64 " ms: %" PRIu64 " Pings each way answered; round trip %" PRIu32
                  " ms, smallest %" PRIu32 " ms\n",
                  tv_now_ms() - t0, f->tap_out.pings - out0.pings, st.rtt_ms, st.min_rtt_ms);
}

/* Phase 4: everything written, then our end of the stream; the reference
 * sees EOF at a packet boundary, stops and closes, and we read to the end. */
static void close_orderly(fixture *f)
{
    uint64_t deadline = tv_now_ms() + LINE_MS;
    while (f->tx_off < f->tx_len || f->pfill > 0)
        step(f, deadline);
    assert_int_equal(shutdown(f->fd, SHUT_WR), 0);
    f->wr_shut = true;
    while (!f->eof)
        step(f, deadline);
    check_core(f);

    tm2_mconn_status st;
    tm2__mconn_status(f->mc, tv_now_ms(), &st);
    assert_int_equal(st.n_channels, NCH);
    for (size_t k = 0; k < NCH; k++) {
        assert_int_equal(st.channels[k].id, chan_id[k]);
        assert_int_equal(st.channels[k].priority, chan_prio[k]);
        assert_int_equal(st.channels[k].send_queue_size, 0);
    }
    assert_int_equal(st.send.bytes, f->tap_out.bytes);
    assert_int_equal(st.recv.bytes, f->tap_in.bytes);
    /* Both sides cut the messages into the same packets. */
    assert_int_equal(f->tap_out.bytes - f->wire_total,
                     TM2__PACKET_PING_SIZE * (f->tap_out.pings + f->tap_out.pongs));
    assert_int_equal(f->tap_in.bytes - f->wire_total,
                     TM2__PACKET_PING_SIZE * (f->tap_in.pings + f->tap_in.pongs));
}

static uint64_t stat_field(char **w, int n, const char *name)
{
    size_t len = strlen(name);
    for (int i = 1; i < n; i++)
        if (strncmp(w[i], name, len) == 0 && w[i][len] == '=')
            return strtoull(w[i] + len + 1, NULL, 10);
    fail_msg("STATS line has no %s", name);
    return 0;
}

/* What the reference saw in the Ping/Pong counts of its final STATS line. */
typedef struct ref_counts {
    uint64_t pings_in, pongs_in, pings_out, pongs_out;
} ref_counts;

/* The reference's own account, its last STATS line: every message and byte
 * echoed, nothing left queued. Then it must report how the stream ended
 * (DONE eof, or with allow_reset also DONE reset) and exit with status 0. */
static ref_counts check_reference(fixture *f, bool allow_reset)
{
    char line[REFPROC_LINE_MAX];
    char *w[16];
    int n = refproc_expect(&f->ref, "STATS", line, sizeof line, w, 16, LINE_MS);
    assert_true(n > 1);
    assert_int_equal(stat_field(w, n, "msgs"), f->msgs_total);
    assert_int_equal(stat_field(w, n, "bytes"), f->bytes_total);
    assert_int_equal(stat_field(w, n, "echoed"), f->msgs_total);
    assert_int_equal(stat_field(w, n, "queued"), 0);
    ref_counts rc = {
        .pings_in = stat_field(w, n, "pings_in"),
        .pongs_in = stat_field(w, n, "pongs_in"),
        .pings_out = stat_field(w, n, "pings_out"),
        .pongs_out = stat_field(w, n, "pongs_out"),
    };
    print_message("reference: %" PRIu64 " Pings in, %" PRIu64 " Pongs in, %" PRIu64
                  " Pings out, %" PRIu64 " Pongs out\n",
                  rc.pings_in, rc.pongs_in, rc.pings_out, rc.pongs_out);

    n = refproc_expect(&f->ref, "DONE", line, sizeof line, w, 3, LINE_MS);
    assert_int_equal(n, 2);
    if (!(strcmp(w[1], "eof") == 0 || (allow_reset && strcmp(w[1], "reset") == 0)))
        fail_msg("reference ended with DONE %s", w[1]);
    print_message("reference saw the stream end: %s\n", w[1]);
    assert_int_equal(refproc_wait(&f->ref, LINE_MS), 0);
    return rc;
}

/* After the orderly close the counts are exact: the reference saw the Pings
 * and Pongs we sent and sent the ones we received. */
static void check_reference_core(fixture *f)
{
    ref_counts rc = check_reference(f, false);
    assert_int_equal(rc.pings_in, f->tap_out.pings);
    assert_int_equal(rc.pongs_in, f->tap_out.pongs);
    assert_int_equal(rc.pings_out, f->tap_in.pings);
    assert_int_equal(rc.pongs_out, f->tap_in.pongs);
}

static void hex32(const uint8_t *b, char out[65])
{
    sodium_bin2hex(out, 65, b, 32);
}

static void expect_key_line(fixture *f, const char *tag, char pub[65], char id[TM2_ID_LEN + 1])
{
    char line[REFPROC_LINE_MAX];
    char *w[4];
    int n = refproc_expect(&f->ref, tag, line, sizeof line, w, 4, LINE_MS);
    if (n != 3)
        fail_msg("no %s line from the reference", tag);
    assert_int_equal(strlen(w[1]), 64);
    assert_int_equal(strlen(w[2]), TM2_ID_LEN);
    strcpy(pub, w[1]);
    strcpy(id, w[2]);
}

/* Each side authenticated the other's key (remote_pub and remote_id are
 * what tm2p2p authenticated); then the reference started its MConnection. */
static void check_identities(fixture *f, const uint8_t *remote_pub, const char *remote_id,
                             const char *ref_pub, const char *ref_id)
{
    char pub[65];
    hex32(remote_pub, pub);
    assert_string_equal(pub, ref_pub);
    assert_string_equal(remote_id, ref_id);

    char seen_pub[65], seen_id[TM2_ID_LEN + 1];
    expect_key_line(f, "REMOTE", seen_pub, seen_id);
    hex32(tm2_node_key_pubkey(&f->key), pub);
    tm2_id mine;
    tm2_node_key_id(&f->key, &mine);
    assert_string_equal(seen_pub, pub);
    assert_string_equal(seen_id, mine.s);

    char line[REFPROC_LINE_MAX];
    char *w[3];
    assert_int_equal(refproc_expect(&f->ref, "MCONN", line, sizeof line, w, 3, LINE_MS), 2);
    assert_string_equal(w[1], "started");
}

static uint16_t expect_listen(fixture *f)
{
    char line[REFPROC_LINE_MAX];
    char *w[3];
    assert_int_equal(refproc_expect(&f->ref, "LISTEN", line, sizeof line, w, 3, LINE_MS), 2);
    char *colon = strrchr(w[1], ':');
    assert_non_null(colon);
    *colon = '\0';
    assert_string_equal(w[1], "127.0.0.1");
    long port = strtol(colon + 1, NULL, 10);
    assert_true(port > 0 && port < 65536);
    return (uint16_t)port;
}

static void keys(fixture *f, uint8_t c_byte, uint8_t ref_byte, char ref_seed[65])
{
    uint8_t seed[32];
    memset(seed, c_byte, sizeof seed);
    tm2_node_key_from_seed(&f->key, seed);
    memset(seed, ref_byte, sizeof seed);
    hex32(seed, ref_seed);
}

#define STR_(x) #x
#define STR(x)  STR_(x)

/* mconn-echo with the same channels, capacity and keepalive as our side and
 * no rate limits; addr_flag is --listen or --dial. */
static void start_reference(fixture *f, const char *addr_flag, const char *addr, const char *seed)
{
    const char *args[] = {"mconn-echo", addr_flag, addr, "--seed", seed,
                          "--channels", REF_CHANNELS,
                          "--send-queue", REF_SEND_QUEUE,
                          "--recv-cap", STR(RECV_CAP_BYTES),
                          "--ping-interval", STR(PING_MS) "ms",
                          "--pong-timeout", STR(PONG_MS) "ms",
                          "--flush-throttle", STR(FLUSH_MS) "ms",
                          "--send-rate", "0", "--recv-rate", "0",
                          "--timeout", REF_WATCHDOG, NULL};
    refproc_start(&f->ref, args);
}

static void run_exchange(fixture *f, const char *ref_pub, const char *ref_id)
{
    handshake(f, tv_now_ms() + HANDSHAKE_MS);
    check_identities(f, tm2__sc_remote_pubkey(&f->sc), tm2__sc_remote_id(&f->sc)->s, ref_pub,
                     ref_id);
    start_mconn(f);
    exchange_empty(f);
    exchange_bulk(f);
    idle(f);
    close_orderly(f);
    check_reference_core(f);
}

static void core_dials_reference(void **state)
{
    fixture *f = *state;
    char ref_seed[65], ref_pub[65], ref_id[TM2_ID_LEN + 1];
    keys(f, 0x11, 0x12, ref_seed);
    start_reference(f, "--listen", "127.0.0.1:0", ref_seed);
    uint16_t port = expect_listen(f);
    expect_key_line(f, "LOCAL", ref_pub, ref_id);
    f->fd = pt_connect_loopback(port);
    run_exchange(f, ref_pub, ref_id);
}

static void reference_dials_core(void **state)
{
    fixture *f = *state;
    char ref_seed[65], ref_pub[65], ref_id[TM2_ID_LEN + 1];
    keys(f, 0x13, 0x14, ref_seed);
    uint16_t port;
    f->lfd = pt_listen_loopback(&port);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    start_reference(f, "--dial", addr, ref_seed);
    expect_key_line(f, "LOCAL", ref_pub, ref_id);
    f->fd = pt_accept_one(f->lfd, tv_now_ms() + HANDSHAKE_MS);
    run_exchange(f, ref_pub, ref_id);
}

/* ---- the libuv glue (net/mconn_stream.h) -------------------------------------
 *
 * The same exchange through the glue a node uses: the secret-connection
 * stream runs the handshake, tm2__mcs_start takes it over. The phases follow
 * the echoes from the callbacks; a one-shot timer ends the idle phase and
 * another bounds the whole run. Callbacks only record what happened (a
 * mismatch is returned from on_receive, which closes the connection);
 * assertions run after the loop has stopped, so a failure never unwinds
 * through libuv.
 *
 * The glue has no Ping/Pong counters and no half-close, so the idle phase is
 * judged by time and bytes: it lasts three ping intervals plus a pong
 * timeout, so every Ping sent in those intervals either was answered or would
 * have failed the connection, and the core's byte counts may grow only by
 * whole 12-byte Pings and Pongs. The reference's counts must then match ours
 * up to the packets in flight when the connection closed. */

enum { G_HANDSHAKE, G_EMPTY, G_BULK, G_IDLE, G_DONE };

struct glue {
    fixture *f;
    uv_loop_t loop;
    bool loop_ok;
    tm2__uv_engine ue;
    tm2__mcs_loop l;
    bool l_ok;
    tm2__mcs c;
    bool c_ok;
    uv_tcp_t server;
    bool server_ok;
    uv_connect_t creq;
    uv_timer_t deadline, idle_end;
    bool timers_ok;

    int phase;
    size_t empty_k;                   /* channel whose empty message is out */
    int err;                          /* first failure, 0 if none */
    char what[192];
    bool closed;                      /* on_close came */
    uint64_t bulk_t0, bulk_ms;
    uint8_t remote_pub[TM2_PUBKEY_SIZE];  /* copied at the handshake */
    tm2_id remote_id;
    tm2_mconn_status idle0, last;     /* status at the start and end of idle */
    uint64_t idle_t0, idle_ms;
};

static void glue_fail(glue *g, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void glue_fail(glue *g, int err, const char *fmt, ...)
{
    if (g->err == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->what, sizeof g->what, fmt, ap);
        va_end(ap);
        g->err = err;
    }
    if (g->c_ok)
        tm2__mcs_close(&g->c);
}

static int glue_try_send(void *conn, uint8_t ch, tm2__msg *m)
{
    return tm2__mcs_try_send(conn, ch, m);
}

/* Three ping intervals and a pong timeout after the last echo. */
static void glue_on_idle_end(uv_timer_t *t)
{
    glue *g = t->data;
    if (g->phase != G_IDLE)
        return;
    int r = tm2__mcs_status(&g->c, &g->last);
    if (r != 0) {
        glue_fail(g, r, "status at the end of the idle phase");
        return;
    }
    g->idle_ms = uv_now(&g->loop) - g->idle_t0;
    g->phase = G_DONE;
    tm2__mcs_close(&g->c);
}

/* Moves the phases on after an echo, a freed queue slot or the start. */
static void glue_advance(glue *g)
{
    fixture *f = g->f;
    if (g->phase == G_EMPTY) {
        while (g->empty_k < NCH && f->ch[g->empty_k].next_echo == 1)
            g->empty_k++;
        if (g->empty_k < NCH) {
            chan_plan *c = &f->ch[g->empty_k];
            if (c->next_send == 0) {
                int r = tm2__mcs_try_send(&g->c, chan_id[g->empty_k], c->msg[0]);
                if (r != 0) {
                    glue_fail(g, r, "sending the empty message on channel 0x%02x", chan_id[g->empty_k]);
                    return;
                }
                c->next_send = 1;
            }
            return;
        }
        g->phase = G_BULK;
        g->bulk_t0 = uv_now(&g->loop);
        f->send_limit = NMSG;
    }
    if (g->phase == G_BULK) {
        int r = queue_messages(f, glue_try_send, &g->c);
        if (r != 0) {
            glue_fail(g, r, "queueing messages");
            return;
        }
        if (!all_echoed(f, NMSG))
            return;
        uv_update_time(&g->loop);
        g->bulk_ms = uv_now(&g->loop) - g->bulk_t0;
        r = tm2__mcs_status(&g->c, &g->idle0);
        if (r != 0) {
            glue_fail(g, r, "status at the start of the idle phase");
            return;
        }
        g->phase = G_IDLE;
        g->idle_t0 = uv_now(&g->loop);
        uv_timer_start(&g->idle_end, glue_on_idle_end, IDLE_PINGS * PING_MS + PONG_MS, 0);
    }
}

static int glue_on_receive(tm2__mcs *c, uint8_t ch, const uint8_t *data, size_t len)
{
    glue *g = c->data;
    if (g->phase != G_EMPTY && g->phase != G_BULK) {
        glue_fail(g, TM2_EPROTO, "%zu-byte message on channel 0x%02x while idle", len, ch);
        return TM2_EPROTO;
    }
    int r = check_echo(g->f, ch, data, len);
    if (r != 0) {
        glue_fail(g, r, "%s", g->f->cb_what);
        return r;
    }
    glue_advance(g);
    return 0;
}

static void glue_on_send_room(tm2__mcs *c, uint8_t ch)
{
    (void)ch;
    glue_advance(c->data);
}

static void glue_on_error(tm2__mcs *c, int err, const char *reason)
{
    glue_fail(c->data, err, "connection failed: %s", reason ? reason : tm2_strerror(err));
}

static void glue_handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* Everything else is closed once the connection is. */
static void glue_on_close(tm2__mcs *c)
{
    glue *g = c->data;
    g->closed = true;
    if (g->server_ok && !uv_is_closing((uv_handle_t *)&g->server))
        uv_close((uv_handle_t *)&g->server, glue_handle_closed);
    if (g->timers_ok) {
        uv_close((uv_handle_t *)&g->deadline, glue_handle_closed);
        uv_close((uv_handle_t *)&g->idle_end, glue_handle_closed);
        g->timers_ok = false;
    }
    if (g->l_ok) {
        tm2__mcs_loop_close(&g->l);
        tm2__uv_engine_close(&g->ue);
        g->l_ok = false;
    }
}

static void glue_on_deadline(uv_timer_t *t)
{
    glue *g = t->data;
    glue_fail(g, TM2_ETIMEDOUT, "deadline passed in phase %d", g->phase);
}

static void glue_on_handshake(tm2__sc_stream *s, int err)
{
    glue *g = tm2__mcs_of_stream(s)->data;
    if (err != 0) {
        glue_fail(g, err, "handshake failed");
        return;
    }
    memcpy(g->remote_pub, tm2__sc_stream_remote_pubkey(s), TM2_PUBKEY_SIZE);
    g->remote_id = *tm2__sc_stream_remote_id(s);

    tm2_mconn_config cfg;
    tm2_channel_desc d[NCH];
    mconn_settings(&cfg, d);
    /* Nothing was read past the handshake: the reference speaks only when
     * spoken to, and a Ping needs a whole interval. */
    int r = tm2__mcs_start(&g->c, &cfg, d, NCH, NULL, 0);
    if (r != 0) {
        glue_fail(g, r, "start");
        return;
    }
    g->phase = G_EMPTY;
    glue_advance(g);
}

/* Plaintext before the start would be lost; there must be none. */
static void glue_on_pre_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    (void)data;
    glue_fail(tm2__mcs_of_stream(s)->data, TM2_EPROTO, "%zu bytes before the start", len);
}

static void glue_on_pre_error(tm2__sc_stream *s, int err)
{
    glue_fail(tm2__mcs_of_stream(s)->data, err, "stream failed before the start");
}

static void glue_start_stream(glue *g)
{
    int r = tm2__sc_stream_start(tm2__mcs_stream(&g->c), &g->f->key, NULL);
    if (r != 0)
        glue_fail(g, r, "stream start");
}

static void glue_on_connect(uv_connect_t *req, int status)
{
    glue *g = req->data;
    if (status != 0) {
        glue_fail(g, TM2_EIO, "connect: %s", uv_strerror(status));
        return;
    }
    glue_start_stream(g);
}

static void glue_on_connection(uv_stream_t *server, int status)
{
    glue *g = server->data;
    if (status != 0 ||
        uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(tm2__mcs_stream(&g->c))) != 0) {
        glue_fail(g, TM2_EIO, "accept");
        return;
    }
    /* One connection is all this test takes. */
    uv_close((uv_handle_t *)&g->server, glue_handle_closed);
    g->server_ok = false;
    glue_start_stream(g);
}

/* Heap state owned by the fixture, so the teardown can still close it after
 * an assertion left the test function. */
static glue *glue_new(fixture *f)
{
    glue *g = calloc(1, sizeof *g);
    assert_non_null(g);
    g->f = f;
    f->g = g;
    g->phase = G_HANDSHAKE;
    assert_int_equal(uv_loop_init(&g->loop), 0);
    g->loop_ok = true;
    assert_int_equal(tm2__uv_engine_init(&g->ue, &g->loop), 0);
    assert_int_equal(tm2__mcs_loop_init(&g->l, &g->ue.e), 0);
    g->l_ok = true;

    tm2__sc_stream_config scfg = {.handshake_timeout_ms = HANDSHAKE_MS};
    static const tm2__sc_stream_cbs pre = {
        .on_handshake = glue_on_handshake,
        .on_read = glue_on_pre_read,
        .on_error = glue_on_pre_error,
    };
    tm2__mcs_cbs cbs = {
        .on_receive = glue_on_receive,
        .on_send_room = glue_on_send_room,
        .on_error = glue_on_error,
        .on_close = glue_on_close,
    };
    assert_int_equal(tm2__mcs_init(&g->c, &g->l, &scfg, &pre, &cbs), 0);
    g->c.data = g;
    g->c_ok = true;

    assert_int_equal(uv_timer_init(&g->loop, &g->deadline), 0);
    assert_int_equal(uv_timer_init(&g->loop, &g->idle_end), 0);
    g->deadline.data = g->idle_end.data = g;
    g->timers_ok = true;
    assert_int_equal(uv_timer_start(&g->deadline, glue_on_deadline, TRANSFER_MS, 0), 0);
    return g;
}

static void glue_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, glue_handle_closed);
}

/* Closes whatever is still open and ends the loop; after a normal run and
 * from the teardown when an assertion stopped the test half-way. */
static void glue_release(glue *g)
{
    if (!g->loop_ok)
        return;
    if (g->c_ok && !g->closed)
        tm2__mcs_close(&g->c);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    if (g->c_ok && g->closed) {
        tm2__mcs_destroy(&g->c);
        g->c_ok = false;
    }
    if (g->l_ok) {
        tm2__mcs_loop_close(&g->l);
        tm2__uv_engine_close(&g->ue);
        g->l_ok = false;
    }
    uv_walk(&g->loop, glue_walk_close, NULL);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&g->loop) == 0)
        g->loop_ok = false;
}

static void glue_run(glue *g)
{
    uv_run(&g->loop, UV_RUN_DEFAULT);
    glue_release(g);
    assert_false(g->loop_ok);
}

/* After the loop: every echo came back, the idle phase held, identities, and
 * the reference's account. */
static void glue_check(glue *g, const char *ref_pub, const char *ref_id)
{
    fixture *f = g->f;
    if (g->err != 0)
        fail_msg("glue: %s: %s (phase %d)", g->what, tm2_strerror(g->err), g->phase);
    assert_true(g->closed);
    assert_int_equal(g->phase, G_DONE);
    assert_true(all_echoed(f, NMSG));
    print_message("%" PRIu64 " messages, %" PRIu64 " bytes echoed on %d channels in %" PRIu64 " ms\n",
                  f->msgs_total, f->bytes_total, NCH, g->bulk_ms);

    /* Idle: only whole Pings and Pongs, at least one per interval each way. */
    const uint64_t P = TM2__PACKET_PING_SIZE;
    uint64_t sent = g->last.send.bytes - g->idle0.send.bytes;
    uint64_t recvd = g->last.recv.bytes - g->idle0.recv.bytes;
    assert_true(g->idle_ms >= IDLE_PINGS * PING_MS + PONG_MS);
    assert_int_equal(sent % P, 0);
    assert_int_equal(recvd % P, 0);
    assert_true(sent >= 2 * IDLE_PINGS * P);
    assert_true(recvd >= 2 * IDLE_PINGS * P);
    print_message("idle %" PRIu64 " ms: %" PRIu64 " Pings and Pongs sent, %" PRIu64 " received\n",
                  g->idle_ms, sent / P, recvd / P);
    assert_int_equal(g->last.n_channels, NCH);
    for (size_t k = 0; k < NCH; k++)
        assert_int_equal(g->last.channels[k].send_queue_size, 0);

    check_identities(f, g->remote_pub, g->remote_id.s, ref_pub, ref_id);

    /* Whole run: the data packets are the same both ways; the rest are
     * Pings and Pongs, which the reference counted too, give or take the
     * ones in flight at the close (a reset may also drop what it had not
     * read yet). */
    assert_true(g->last.send.bytes >= f->wire_total);
    assert_true(g->last.recv.bytes >= f->wire_total);
    uint64_t ctl_sent = g->last.send.bytes - f->wire_total;
    uint64_t ctl_recvd = g->last.recv.bytes - f->wire_total;
    assert_int_equal(ctl_sent % P, 0);
    assert_int_equal(ctl_recvd % P, 0);
    ref_counts rc = check_reference(f, true);
    assert_true(rc.pings_in + rc.pongs_in <= ctl_sent / P);
    assert_true(rc.pings_out + rc.pongs_out >= ctl_recvd / P);
    assert_true(rc.pings_out + rc.pongs_out <= ctl_recvd / P + 2);
    assert_true(rc.pings_in >= IDLE_PINGS);
    assert_true(rc.pings_out >= IDLE_PINGS);
    assert_true(rc.pongs_in + 1 >= rc.pings_out);
    assert_true(rc.pongs_out + 1 >= rc.pings_in);
}

static void glue_dials_reference(void **state)
{
    fixture *f = *state;
    char ref_seed[65], ref_pub[65], ref_id[TM2_ID_LEN + 1];
    keys(f, 0x15, 0x16, ref_seed);
    start_reference(f, "--listen", "127.0.0.1:0", ref_seed);
    uint16_t port = expect_listen(f);
    expect_key_line(f, "LOCAL", ref_pub, ref_id);

    glue *g = glue_new(f);
    struct sockaddr_in a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", port, &a), 0);
    g->creq.data = g;
    assert_int_equal(uv_tcp_connect(&g->creq, tm2__sc_stream_uv_tcp(tm2__mcs_stream(&g->c)),
                                    (struct sockaddr *)&a, glue_on_connect), 0);
    glue_run(g);
    glue_check(g, ref_pub, ref_id);
}

static void reference_dials_glue(void **state)
{
    fixture *f = *state;
    char ref_seed[65], ref_pub[65], ref_id[TM2_ID_LEN + 1];
    keys(f, 0x17, 0x18, ref_seed);

    glue *g = glue_new(f);
    struct sockaddr_in a;
    int alen = sizeof a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
    assert_int_equal(uv_tcp_init(&g->loop, &g->server), 0);
    g->server.data = g;
    g->server_ok = true;
    assert_int_equal(uv_tcp_bind(&g->server, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&g->server, 4, glue_on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&g->server, (struct sockaddr *)&a, &alen), 0);

    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", ntohs(a.sin_port));
    start_reference(f, "--dial", addr, ref_seed);
    expect_key_line(f, "LOCAL", ref_pub, ref_id);

    glue_run(g);
    glue_check(g, ref_pub, ref_id);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(core_dials_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_dials_core, setup, teardown),
        cmocka_unit_test_setup_teardown(glue_dials_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_dials_glue, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
