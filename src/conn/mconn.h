/* Internal: the MConnection core (WIRE.md section 6), sans I/O.
 *
 * One tm2__mconn multiplexes prioritised channels over one decrypted byte
 * stream. It owns no socket, clock, thread or global: the glue hands it the
 * bytes it read (feed), asks it for bytes to write (produce), and passes the
 * current time to every call that needs one. All times are milliseconds of a
 * monotonic clock chosen by the caller (uv_now() in the libuv glue); they must
 * never go backwards.
 *
 * Single-threaded: every call on one core must come from one thread at a
 * time (the glue serialises cross-thread sends). Inside a callback only
 * tm2__mconn_try_send, tm2__mconn_send_room, tm2__mconn_error and
 * tm2__mconn_status may be called on the same core; feed, produce,
 * handle_expiry and free return TM2_ESTATE or must not be called.
 *
 * Errors are sticky: the first fatal error (malformed packet, unknown
 * channel, oversize message, pong timeout, allocation failure, a failing
 * receive handler) is returned by every later feed, produce, handle_expiry
 * and try_send, with a short reason from tm2__mconn_error(). The glue then
 * closes the connection.
 *
 * A glue loop:
 *   on bytes read:    feed(); stop reading while recv_paused_until(now) > now
 *   when writable:    while want_produce(now) and the write queue is below its
 *                     bound: produce() into the plaintext buffer;
 *                     seal and write full frames; if flush_due(now), seal the
 *                     partial frame too and call flushed()
 *   on the timer:     handle_expiry(now), resume reading if no longer paused,
 *                     write as above, re-arm at next_deadline(now)
 *   after try_send:   write as above
 * Feeding large contiguous pieces (everything decrypted from one socket read)
 * keeps packets whole in the input, which avoids a copy: a packet split
 * across feed calls is gathered in a packet-sized staging buffer. */
#ifndef TM2_CONN_MCONN_H
#define TM2_CONN_MCONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/channel.h"
#include "tm2p2p/error.h"

/* ---- messages ----------------------------------------------------------------
 * An immutable, reference-counted message: one allocation with the bytes
 * inline, so one broadcast buffer can wait in many peers' queues without
 * copies. The reference count is atomic: refs and unrefs may happen on any
 * thread; the bytes must not change once the message is shared. */
typedef struct tm2__msg {
    atomic_size_t refs;
    size_t len;
    uint8_t data[];
} tm2__msg;

/* A message of len bytes with one reference; the caller fills data before
 * sharing it. NULL when out of memory. */
tm2__msg *tm2__msg_alloc(size_t len);

/* tm2__msg_alloc + copy of data[0..len). */
tm2__msg *tm2__msg_new(const void *data, size_t len);

static inline tm2__msg *tm2__msg_ref(tm2__msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

/* Drops one reference; frees the message with the last one. NULL is a no-op. */
void tm2__msg_unref(tm2__msg *m);

/* ---- the core ------------------------------------------------------------- */
typedef struct tm2__mconn tm2__mconn;

/* Callbacks; NULL entries are skipped. */
typedef struct tm2__mconn_callbacks {
    /* A whole message arrived on channel ch. data is valid only during the
     * call (it may point into the caller's input or the reassembly buffer);
     * copy what must outlive it. A non-zero return is a fatal error for the
     * connection: a negative TM2_E* code is kept as is, anything else becomes
     * TM2_EPROTO. */
    int (*on_receive)(void *user, uint8_t ch, const uint8_t *data, size_t len);
    /* The send queue of channel ch was full and now has room again (called
     * from produce). A glue that makes senders wait wakes them here. */
    void (*on_send_room)(void *user, uint8_t ch);
} tm2__mconn_callbacks;

/* Creates a core for the channels in descs (registration order = scheduler
 * scan order), started at now. cfg NULL means tm2_mconn_config_default().
 * Descriptor fields that are 0 take the reference defaults.
 * Returns 0 or TM2_EINVAL (no or over TM2_MCONN_MAX_CHANNELS channels, a
 * duplicate channel id, priority 0, max_packet_payload 0 or over 16 MiB,
 * pong_timeout 0 or >= ping_interval while pinging) or TM2_ENOMEM. */
int tm2__mconn_new(tm2__mconn **out, const tm2_mconn_config *cfg, const tm2_channel_desc *descs,
                   size_t n_descs, const tm2__mconn_callbacks *cb, void *user, uint64_t now);

/* Frees the core and drops the references of every queued message. */
void tm2__mconn_free(tm2__mconn *c);

/* Queues m on channel ch, taking a new reference (the caller keeps its own).
 * Never waits. Returns 0, TM2_EFULL (queue at capacity; the message being
 * split into packets does not count, like in the reference), TM2_ECHANNEL
 * (no such channel), TM2_EINVAL, or the sticky error. */
int tm2__mconn_try_send(tm2__mconn *c, uint8_t ch, tm2__msg *m);

/* Free slots in channel ch's send queue, or TM2_ECHANNEL. */
int tm2__mconn_send_room(const tm2__mconn *c, uint8_t ch);

/* True when produce would write something at now: a ping or pong is owed,
 * or data is queued and the send rate allows it. */
bool tm2__mconn_want_produce(tm2__mconn *c, uint64_t now);

/* Writes as many whole sized packets into out[0..cap) as fit and the send
 * rate allows: an owed Pong, then a due Ping (neither rate-limited), then
 * data packets chosen by the reference's scheduler. Returns the number of
 * bytes written (0 when nothing is due or the next packet does not fit),
 * or the sticky error, or TM2_ESTATE from inside a callback. */
int tm2__mconn_produce(tm2__mconn *c, uint8_t *out, size_t cap, uint64_t now);

/* True when what produce wrote should reach the socket now: a Ping or Pong
 * was written, or data has waited flush_throttle_ms. Data alone may be held
 * to coalesce until then (the secret connection pads partial frames). */
bool tm2__mconn_flush_due(const tm2__mconn *c, uint64_t now);

/* The glue flushed everything produce wrote so far. */
void tm2__mconn_flushed(tm2__mconn *c);

/* Consumes len decrypted stream bytes, in pieces of any size (one byte at a
 * time works). Whole messages go to on_receive, Pings owe a Pong (at most one
 * pending), Pongs stop the pong timer. All bytes are consumed even when the
 * receive rate is exceeded; see recv_paused_until. Returns 0 or the sticky
 * error (TM2_ECHANNEL, TM2_EMSGSIZE, TM2_ETOOBIG, a packet decode error,
 * TM2_ENOMEM, a handler's error), or TM2_ESTATE from inside a callback. */
int tm2__mconn_feed(tm2__mconn *c, const uint8_t *in, size_t len, uint64_t now);

/* 0 if the glue may read, else the time until which it should stop reading
 * to keep to recv_rate. */
uint64_t tm2__mconn_recv_paused_until(tm2__mconn *c, uint64_t now);

/* The earliest time the glue must call handle_expiry (ping due, pong
 * timeout, flush throttle, send or receive rate window), UINT64_MAX if none.
 * A time <= now means "now". */
uint64_t tm2__mconn_next_deadline(tm2__mconn *c, uint64_t now);

/* Runs the timers due at now: a due Ping is owed (and its pong timer
 * started); an expired pong timer is TM2_EPONG. Returns 0 or the sticky
 * error. */
int tm2__mconn_handle_expiry(tm2__mconn *c, uint64_t now);

/* The sticky error (0 if none); *reason (if reason is non-NULL) receives a
 * short text for logs, valid until the core is freed. */
int tm2__mconn_error(const tm2__mconn *c, const char **reason);

/* Status snapshot at now. */
void tm2__mconn_status(tm2__mconn *c, uint64_t now, tm2_mconn_status *st);

/* The receiver's packet size limit this core applies (1056 for 1024). */
size_t tm2__mconn_max_packet_size(const tm2__mconn *c);

/* 0, or TM2_EINVAL with *field naming the first value a connection cannot
 * run with ("mconn.max_packet_payload", ...). */
int tm2__mconn_config_check(const tm2_mconn_config *c, const char **field);

#endif
