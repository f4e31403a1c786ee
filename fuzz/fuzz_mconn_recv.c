/* The receive path of a connection core fed arbitrary bytes.
 * Input: 4 bytes of chunk-size pattern, then the stream. The stream is fed
 * in chunks whose sizes cycle through the pattern, with the clock moving and
 * produce/handle_expiry called in between, so Pings, Pongs, reassembly and
 * echoes from inside the receive callback all run. Budgets are small (a
 * 3000-byte receive budget under channel capacities summing to more, a
 * 2048-byte send budget the echoes can exceed) and messages must assemble
 * within 1 s (ten clock steps), so both budgets, the assembly deadline and
 * stall credits are reached. Must never crash or leak; once an error is
 * returned, every later call returns the same one; the budgets are never
 * overdrawn. */
#include <stdlib.h>
#include <string.h>

#include "conn/mconn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RECV_BUDGET 3000u
#define SEND_BUDGET 2048u

struct ctx {
    tm2__mconn *c;
};

static int on_receive(void *user, uint8_t ch, const uint8_t *d, size_t len)
{
    struct ctx *x = user;
    if (len > 4096)
        abort();   /* larger than every channel's capacity */
    if (len && d[0] == 0xee)
        return TM2_EPROTO;
    if (len && d[0] == 0xec) {
        tm2__msg *m = tm2__msg_new(d, len);
        if (m) {
            (void)tm2__mconn_try_send(x->c, ch, m);
            tm2__msg_unref(m);
        }
        /* Re-entering the core's I/O calls from a callback is refused. */
        if (tm2__mconn_feed(x->c, d, len, 0) != TM2_ESTATE)
            abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4 || size > 65536)
        return 0;
    uint8_t pattern[4];
    memcpy(pattern, data, 4);
    data += 4;
    size -= 4;

    static const tm2_channel_desc descs[] = {
        {.id = 0x00, .priority = 1, .recv_message_capacity = 16},
        {.id = 0x30, .priority = 5, .send_queue_capacity = 4, .recv_buffer_capacity = 16,
         .recv_message_capacity = 4096},
        {.id = 0x50, .priority = 1, .recv_message_capacity = 1500},
    };
    tm2_mconn_config cfg;
    tm2_mconn_config_default(&cfg);
    cfg.max_packet_payload = 64;
    cfg.ping_interval_ms = 1000;
    cfg.pong_timeout_ms = 500;
    cfg.recv_rate = 10000;
    cfg.max_recv_buffer_bytes = RECV_BUDGET;
    cfg.max_send_buffer_bytes = SEND_BUDGET;
    cfg.recv_assembly_timeout_ms = 1000;
    struct ctx x;
    tm2__mconn_callbacks cb = {.on_receive = on_receive};
    if (tm2__mconn_new(&x.c, &cfg, descs, 3, &cb, &x, 0) != 0)
        abort();

    uint8_t out[4096];
    uint64_t now = 0;
    int err = 0;
    for (size_t i = 0; size; i++) {
        size_t n = (size_t)(pattern[i % 4] & 0x3f) + 1;
        if (n > size)
            n = size;
        int e = tm2__mconn_feed(x.c, data, n, now);
        if (err && e != err)
            abort();
        if (e && !err)
            err = e;
        data += n;
        size -= n;
        if ((pattern[i % 4] & 0xc0) == 0xc0 && (i & 7) == 0)
            tm2__mconn_credit_stall(x.c, 50);   /* a slow handler elsewhere */
        if (pattern[i % 4] & 0x40) {
            now += 97;
            e = tm2__mconn_handle_expiry(x.c, now);
            if (e && !err)
                err = e;
            if (err && e != err)
                abort();
        }
        if (pattern[i % 4] & 0x80) {
            e = tm2__mconn_produce(x.c, out, sizeof out, now);
            if (err && e != err)
                abort();
            if (e < 0 && !err)
                err = e;
            tm2__mconn_flushed(x.c);
        }
        if (tm2__mconn_error(x.c, NULL) != err)
            abort();
        if (tm2__mconn_recv_buffered(x.c) > RECV_BUDGET ||
            tm2__mconn_send_buffered(x.c) > SEND_BUDGET)
            abort();
    }
    tm2_mconn_status st;
    tm2__mconn_status(x.c, now, &st);
    if (st.n_channels != 3)
        abort();
    (void)tm2__mconn_next_deadline(x.c, now);
    tm2__mconn_free(x.c);
    return 0;
}
