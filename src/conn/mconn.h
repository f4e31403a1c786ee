/* Internal: the MConnection core (WIRE.md section 6), sans I/O.
 *
 * One tm2__mconn multiplexes prioritised channels over one decrypted byte
 * stream. It owns no socket, clock, thread or global: the glue hands it the
 * bytes it read (feed), asks it for bytes to write (produce), and passes the
 * current time to every call that needs one. All times are milliseconds of a
 * monotonic clock chosen by the caller (the engine's now_ms in the glue); they must
 * never go backwards.
 *
 * Single-threaded: every call on one core must come from one thread at a
 * time (the glue serialises cross-thread sends). Inside a callback only
 * tm2__mconn_try_send, the reservation calls, tm2__mconn_send_room,
 * tm2__mconn_error and tm2__mconn_status may be called on the same core;
 * feed, produce, handle_expiry and free return TM2_ESTATE or must not be
 * called.
 *
 * Budgets (tm2_mconn_config): max_send_buffer_bytes bounds the payload bytes
 * admitted for sending across channels, from admission until the message's
 * last packet is produced; max_recv_buffer_bytes bounds the bytes of
 * partially assembled incoming messages across channels (every data packet
 * is checked against it, as in the reference); recv_assembly_timeout_ms
 * bounds the time from a message's first partial packet to its last.
 *
 * Errors are sticky: the first fatal error (malformed packet, unknown
 * channel, oversize message, receive budget exceeded, assembly or pong
 * timeout, allocation failure, a failing receive handler) is returned by every later feed, produce, handle_expiry
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
#include "tm2p2p/msg.h"

/* ---- messages ----------------------------------------------------------------
 * An immutable, reference-counted message: one allocation with the bytes
 * inline, so one broadcast buffer can wait in many peers' queues without
 * copies. The reference count is atomic: refs and unrefs may happen on any
 * thread; the bytes must not change once the message is shared. */
typedef struct tm2_msg {
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
    /* The send queue of channel ch was full, or a try_send on ch was
     * refused for send budget, and there is room (or budget) again (called
     * from produce). A glue that makes senders wait wakes them here. */
    void (*on_send_room)(void *user, uint8_t ch);
    /* Send budget was released after a reservation had been refused for
     * lack of it (called from produce, after on_send_room for the channels
     * concerned). A glue that makes senders wait wakes them. */
    void (*on_send_budget)(void *user);
} tm2__mconn_callbacks;

/* Checks a configuration: 0, or TM2_EINVAL with *field (if field is
 * non-NULL) set to the name of the first offending field:
 * "max_packet_payload" (0 or over TM2_MAX_PACKET_PAYLOAD), "pong_timeout_ms"
 * (0 or not below ping_interval_ms while pinging), "max_send_buffer_bytes" /
 * "max_recv_buffer_bytes" (non-zero and below TM2_MIN_BUFFER_BYTES). *field
 * is NULL on success. */
int tm2__mconn_config_check(const tm2_mconn_config *c, const char **field);

/* Creates a core for the channels in descs (registration order = scheduler
 * scan order), started at now. cfg NULL means tm2_mconn_config_default().
 * Descriptor fields that are 0 take the reference defaults.
 * Returns 0 or TM2_EINVAL (no or over TM2_MCONN_MAX_CHANNELS channels, a
 * duplicate channel id, priority 0, or a config tm2__mconn_config_check
 * refuses other than for the budgets' floor: any budget works here) or
 * TM2_ENOMEM. */
int tm2__mconn_new(tm2__mconn **out, const tm2_mconn_config *cfg, const tm2_channel_desc *descs,
                   size_t n_descs, const tm2__mconn_callbacks *cb, void *user, uint64_t now);

/* Frees the core and drops the references of every queued message. */
void tm2__mconn_free(tm2__mconn *c);

/* Queues m on channel ch, taking a new reference (the caller keeps its own)
 * and m->len bytes of the send budget. Never waits. Returns 0, TM2_EFULL
 * (queue at capacity, the message being split into packets not counting,
 * like in the reference; or the budget left is smaller than m->len),
 * TM2_ETOOBIG (m->len over the whole budget), TM2_ECHANNEL (no such
 * channel), TM2_EINVAL, or the sticky error. */
int tm2__mconn_try_send(tm2__mconn *c, uint8_t ch, tm2__msg *m);

/* A waiting sender's two steps (the reference admits bytes before it waits
 * for a queue slot). reserve takes len bytes of the send budget: 0,
 * TM2_EFULL (not enough left now), TM2_ETOOBIG (over the whole budget), or
 * the sticky error. send_reserved queues m like try_send with its bytes
 * already reserved: on 0 they belong to the message; on any error the
 * caller still holds them and gives them back with unreserve. unreserve
 * calls nothing: who was refused meanwhile is told by the next produce
 * (want_produce says so; see budget_notify_pending). */
int tm2__mconn_reserve(tm2__mconn *c, size_t len);
int tm2__mconn_send_reserved(tm2__mconn *c, uint8_t ch, tm2__msg *m);
void tm2__mconn_unreserve(tm2__mconn *c, size_t len);

/* True when budget was freed after a refusal and produce has not yet told
 * the refused senders (on_send_room, on_send_budget). */
bool tm2__mconn_budget_notify_pending(const tm2__mconn *c);

/* Bytes admitted to the send budget / buffered in partial messages. */
size_t tm2__mconn_send_buffered(const tm2__mconn *c);
size_t tm2__mconn_recv_buffered(const tm2__mconn *c);

/* Free slots in channel ch's send queue, or TM2_ECHANNEL. */
int tm2__mconn_send_room(const tm2__mconn *c, uint8_t ch);

/* True when produce would write something at now (a ping or pong is owed,
 * or data is queued and the send rate allows it) or has budget
 * notifications to make. */
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
 * pending), Pongs stop the pong timer and close a round trip (see
 * tm2_mconn_status.rtt_ms). All bytes are consumed even when the
 * receive rate is exceeded; see recv_paused_until. Returns 0 or the sticky
 * error (TM2_ECHANNEL, TM2_EMSGSIZE for a channel's capacity or the receive
 * budget, TM2_ETIMEDOUT for an assembly deadline, TM2_ETOOBIG, a packet
 * decode error, TM2_ENOMEM, a handler's error), or TM2_ESTATE from inside a
 * callback. */
int tm2__mconn_feed(tm2__mconn *c, const uint8_t *in, size_t len, uint64_t now);

/* 0 if the glue may read, else the time until which it should stop reading
 * to keep to recv_rate. */
uint64_t tm2__mconn_recv_paused_until(tm2__mconn *c, uint64_t now);

/* The earliest time the glue must call handle_expiry (ping due, pong
 * timeout, assembly deadline, flush throttle, send or receive rate window),
 * UINT64_MAX if none.
 * A time <= now means "now". */
uint64_t tm2__mconn_next_deadline(tm2__mconn *c, uint64_t now);

/* Runs the timers due at now: a due Ping is owed (and its pong timer
 * started); an expired pong timer is TM2_EPONG; a message still incomplete
 * at its assembly deadline is TM2_ETIMEDOUT (feed checks that too, so a
 * late last packet does not save it). Returns 0 or the sticky error. */
int tm2__mconn_handle_expiry(tm2__mconn *c, uint64_t now);

/* The glue was not reading for ms (a receive handler, or other work on its
 * thread, held it up): time the peer cannot be blamed for. Moves the
 * running assembly deadlines and the pong deadline back by ms, as the
 * reference credits time spent in its receive callbacks. */
void tm2__mconn_credit_stall(tm2__mconn *c, uint64_t ms);

/* The sticky error (0 if none); *reason (if reason is non-NULL) receives a
 * short text for logs, valid until the core is freed. */
int tm2__mconn_error(const tm2__mconn *c, const char **reason);

/* Status snapshot at now. */
void tm2__mconn_status(tm2__mconn *c, uint64_t now, tm2_mconn_status *st);

/* The smallest round trip measured so far (tm2_mconn_status.min_rtt_ms), 0
 * if none. */
uint32_t tm2__mconn_min_rtt(const tm2__mconn *c);

/* The receiver's packet size limit this core applies (1056 for 1024). */
size_t tm2__mconn_max_packet_size(const tm2__mconn *c);

#endif
