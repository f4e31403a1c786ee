/* Internal: the MConnection core (conn/mconn.h) driven over a secret
 * connection on an engine (net/sc_stream.h, net/engine.h).
 *
 * A tm2__mcs owns one tm2__sc_stream and, once started, one tm2__mconn. The
 * transport runs the handshake and the NodeInfo exchange on the stream
 * (tm2__mcs_stream) with its own callbacks, then hands the open stream over
 * with tm2__mcs_start, passing any plaintext it read past the NodeInfo. From
 * then on the glue runs the loop described in mconn.h: what the stream reads
 * is fed to the core; the core produces into the engine's scratch buffer;
 * whole 1024-byte frames go to the stream at once and only the tail of a
 * partial frame (< 1 KiB) waits in the connection until the flush throttle
 * says it is due. Production stops while the stream's write queue has no room
 * for another batch and resumes when it drains (on_writable). The stream's
 * timer, idle once its handshake is over, follows the core's next deadline;
 * a receive rate pause stops the stream's reads until it ends.
 *
 * Threads: the engine's thread (the "loop thread" below) runs every
 * connection of a tm2__mcs_loop. Only
 * tm2__mcs_send, tm2__mcs_try_send, tm2__mcs_close and tm2__mcs_status may be
 * called from other threads (and tm2__mcs_destroy as documented). A send from
 * another thread queues the message under the connection's mutex and puts
 * the connection on the loop's "needs writing" list; one tm2__waker per
 * loop wakes it. Sends made in one loop turn are written together on the next.
 * Callbacks run on the loop thread, never with a lock a caller could need:
 * inside any callback every function of this file may be called on any
 * connection of the loop.
 *
 * Memory: tm2__mcs_loop and tm2__mcs are caller-allocated. An idle
 * connection costs its struct (stream included) and the core's allocation;
 * the partial-frame tail is allocated only while one waits for its flush,
 * and scratch and read buffers are the engine's. Messages are
 * tm2__msg (reference-counted): one broadcast buffer is shared by every
 * queue it waits in.
 *
 * Lifetime: init, [stream work by the caller], start, ..., close (by the
 * caller, or by the glue on an error it reports once through on_error),
 * on_close on a later loop turn, destroy. The glue never frees anything
 * inside a callback of the same connection. */
#ifndef TM2_NET_MCONN_STREAM_H
#define TM2_NET_MCONN_STREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>   /* uv_mutex_t, uv_cond_t, uv_thread_t: thread primitives */

#include "conn/mconn.h"
#include "net/sc_stream.h"
#include "tm2p2p/channel.h"
#include "tm2p2p/defaults.h"
#include "tm2p2p/error.h"

/* Plaintext produced per pass through the scratch buffer: the frames the
 * stream seals in one pass, so every batch is one socket write. */
#define TM2__MCS_BATCH (TM2__SC_SEAL_FRAMES * TM2__SC_DATA_MAX)

/* The largest packet of any valid config (TM2_MAX_PACKET_PAYLOAD plus its
 * framing, which tm2__packet_max_size keeps far below this). */
#define TM2__MCS_PKT_MAX (TM2_MAX_PACKET_PAYLOAD + 256u)

/* The scratch buffer: a batch, or the partial-frame tail plus one packet
 * when packets are larger than a batch, and the frame a refused write
 * needs beyond either (see wait_writable). */
#define TM2__MCS_SCRATCH (TM2__MCS_BATCH + TM2__MCS_PKT_MAX + 2u * TM2__SC_DATA_MAX)

/* A pass that kept the loop thread this long (a slow receive handler) is
 * time no connection of the loop was reading: it is credited to their
 * assembly and pong deadlines (tm2__mconn_credit_stall), like the reference
 * credits time its read loop spends in a callback. */
#define TM2__MCS_STALL_GRACE_MS 50u

/* Plaintext one connection may produce per loop turn before yielding to the
 * others (it is put back on the list for the next turn). */
#define TM2__MCS_TURN_BUDGET (4u * TM2__MCS_BATCH)

typedef struct tm2__mcs tm2__mcs;

/* ---- per-loop shared state ------------------------------------------------- */

#define TM2__MCS_SPARE_TAILS 16

typedef struct tm2__mcs_loop {
    tm2__sc_loop sc;            /* streams of this loop use &sc */
    tm2__waker wake;            /* the only cross-thread wake-up */
    uv_mutex_t lock;            /* guards pending, pending_tail and each
                                 * connection's next_pending / detached */
    tm2__mcs *pending;          /* connections to drive on the next turn */
    tm2__mcs **pending_tail;
    uint8_t *scratch;           /* the engine's produce scratch (TM2__MCS_SCRATCH) */
    uint64_t stalled_ms;        /* total of passes over TM2__MCS_STALL_GRACE_MS */
    /* Any thread reads these: */
    atomic_uint_fast64_t recv_stalls;   /* reads paused for a receive rate */
    atomic_uint_fast64_t wire_sent, wire_recv;   /* plaintext packet bytes, all connections */
    char reason[128];           /* error text handed to on_error */
    /* Partial-frame buffers of connections that flushed, for the next one
     * that needs one (loop thread): a small send on an idle connection
     * would otherwise cost a malloc and a free. */
    uint8_t *spare_tails[TM2__MCS_SPARE_TAILS];
    unsigned n_spare_tails;
    uv_thread_t owner;          /* the loop thread */
    bool live;
} tm2__mcs_loop;

/* Initialises the helper (and its tm2__sc_loop) on e. The calling thread
 * is taken as the loop thread; if another thread will run the loop, call
 * tm2__mcs_loop_bind_thread from it before any connection is started.
 * 0 or TM2_ENOMEM / TM2_EIO; on failure nothing needs closing. */
int tm2__mcs_loop_init(tm2__mcs_loop *l, tm2__engine *e);


/* Makes the calling thread the loop thread. */
void tm2__mcs_loop_bind_thread(tm2__mcs_loop *l);

/* True on the loop thread of l. */
bool tm2__mcs_loop_on_thread(const tm2__mcs_loop *l);

/* Closes the helper's handles and frees its buffers. Every connection must
 * have reported on_close first, and no other thread may still be inside a
 * call on one of them (a send wakes the loop through l). l must stay valid
 * until the engine has run one more turn. Loop thread. */
void tm2__mcs_loop_close(tm2__mcs_loop *l);

/* ---- connections -------------------------------------------------------------- */

/* Callbacks; NULL entries are skipped. All run on the loop thread. */
typedef struct tm2__mcs_cbs {
    /* A whole message on channel ch; data is valid during the call only. A
     * non-zero return is fatal for the connection (a negative TM2_E* code
     * is kept, anything else becomes TM2_EPROTO). Messages of a connection
     * stop as soon as it is closed, also within one read. */
    int (*on_receive)(tm2__mcs *c, uint8_t ch, const uint8_t *data, size_t len);
    /* Channel ch's send queue was full, or a try-send on ch was refused for
     * send budget, and there is room again. Called while the glue is
     * writing: a tm2__mcs_try_send from here is taken into the same batch. */
    void (*on_send_room)(tm2__mcs *c, uint8_t ch);
    /* The connection failed after start and is already closing: err is the
     * core's error (TM2_EPONG, TM2_ECHANNEL, TM2_EMSGSIZE for a
     * channel's capacity or the receive budget, TM2_ETIMEDOUT for an
     * assembly deadline, a packet decode
     * error, a handler's error, TM2_ENOMEM) or the stream's (TM2_ECLOSED
     * when the peer ended the stream, TM2_ETRUNC, TM2_EIO, TM2_EDECRYPT, ...).
     * reason is a short text for logs, valid during the call. Called at most
     * once, and never after tm2__mcs_close. */
    void (*on_error)(tm2__mcs *c, int err, const char *reason);
    /* Everything is closed and released except the struct itself: it may be
     * destroyed once no other thread can still be inside a call on it. */
    void (*on_close)(tm2__mcs *c);
} tm2__mcs_cbs;

enum tm2__mcs_phase {
    TM2__MCS_INIT = 1,          /* the stream belongs to the caller */
    TM2__MCS_RUNNING,
    TM2__MCS_CLOSING,
    TM2__MCS_CLOSED,
};

struct tm2__mcs {
    void *data;                 /* for the caller */
    tm2__sc_stream s;           /* its data field is the caller's too */
    tm2__mcs_loop *lp;
    tm2__mcs_cbs cbs;
    const tm2__sc_stream_cbs *pre_cbs;  /* the caller's stream callbacks until
                                         * start (NULL: none); not copied */

    /* Shared with other threads, under lock. */
    uv_mutex_t lock;
    uv_cond_t room;             /* waiting senders: queue room, budget or close */
    tm2__mconn *core;
    uint64_t last_now;          /* clock readings never go backwards */
    unsigned waiters;
    bool closed;                /* no more sends; close requested or done */

    /* Loop thread only. */
    int phase;                  /* enum tm2__mcs_phase */
    int err;                    /* what on_error reported, 0 if none */
    bool held;                  /* the loop thread holds lock outside a callback */
    bool rpaused;               /* reads paused for the receive rate */
    bool blocked;               /* waiting for on_writable */
    bool room_signal;           /* a queue gained room during produce */
    uint64_t stall_seen;        /* lp->stalled_ms already credited to the core */
    uint8_t *pre;               /* plaintext read before start, not yet fed */
    size_t pre_len;
    size_t max_pkt;
    uint32_t blocked_poll_ms;
    size_t tail_len;
    uint8_t *tail;              /* produced, not yet a whole frame: DATA_MAX
                                 * bytes while tail_len > 0, else NULL */

    /* The loop's pending list (lp->lock). */
    atomic_bool scheduled;      /* on the list, or its pass has not begun */
    bool detached;              /* closed for good: never listed again */
    tm2__mcs *next_pending;
};

/* Prepares c on loop l: the stream is initialised (tm2__sc_stream_init) with
 * scfg and the caller's stream callbacks pre_cbs (used in place until start,
 * or until the caller sets c->pre_cbs to NULL), except on_close: closing is
 * always through tm2__mcs_close and ends with cbs->on_close. cbs, pre_cbs
 * and scfg may be NULL. 0 or TM2_EIO; after a failure c needs neither close
 * nor destroy. Loop thread. */
int tm2__mcs_init(tm2__mcs *c, tm2__mcs_loop *l, const tm2__sc_stream_config *scfg,
                  const tm2__sc_stream_cbs *pre_cbs, const tm2__mcs_cbs *cbs);

/* The stream, for the caller's handshake and NodeInfo exchange
 * (tm2__sc_stream_accept, _connect, _start, _write, _pause, _remote_id ...). */
tm2__sc_stream *tm2__mcs_stream(tm2__mcs *c);

/* The connection that owns stream s (in the caller's stream callbacks). */
tm2__mcs *tm2__mcs_of_stream(tm2__sc_stream *s);

/* Takes over the open stream and starts the MConnection with cfg (NULL =
 * tm2_mconn_config_default) and the channels in descs. pre[0..pre_len) is
 * plaintext the caller read from the stream and did not consume; it is fed
 * before anything read later. The stream's callbacks become the glue's
 * (its data field stays the caller's). Reading is resumed if the caller
 * paused it.
 * Nothing is delivered and nothing written before start returns: the first
 * pass runs on a later loop turn.
 * 0, TM2_ESTATE (started twice, closed, or the stream not open), the
 * stream's error when it failed, TM2_EINVAL (bad config or channels, see
 * tm2__mconn_new), TM2_ENOMEM. On error nothing changed: close c. Loop
 * thread. */
int tm2__mcs_start(tm2__mcs *c, const tm2_mconn_config *cfg, const tm2_channel_desc *descs,
                   size_t n_descs, const uint8_t *pre, size_t pre_len);

/* Queues m on channel ch (taking a reference; the caller keeps its own)
 * without waiting. 0, TM2_EFULL (queue at capacity, or less send budget
 * left than m->len), TM2_ETOOBIG (m->len over the whole send budget),
 * TM2_ECHANNEL (not one of our channels), TM2_EINVAL (m NULL), TM2_ESTATE
 * (not started), TM2_ECLOSED (closing or closed, or the connection failed).
 * Any thread. */
int tm2__mcs_try_send(tm2__mcs *c, uint8_t ch, tm2__msg *m);

/* Like tm2__mcs_try_send but waits up to timeout_ms, first for m->len bytes
 * of send budget, then (holding them) for a queue slot, as the reference
 * does; what it held is given back when it fails. TM2_ETOOBIG comes at
 * once. On the loop thread, or with timeout_ms 0, it never waits. A close
 * while waiting returns TM2_ECLOSED at once. Any thread. */
int tm2__mcs_send(tm2__mcs *c, uint8_t ch, tm2__msg *m, uint32_t timeout_ms);

/* Status snapshot of the core. 0, TM2_ESTATE (not started), TM2_ECLOSED.
 * Any thread. */
int tm2__mcs_status(tm2__mcs *c, tm2_mconn_status *st);

/* The core's smallest round trip (tm2__mconn_min_rtt); 0 when none, not
 * started or closed. Any thread. */
uint32_t tm2__mcs_min_rtt(tm2__mcs *c);

/* Closes the connection: queued data is dropped, waiting senders return
 * TM2_ECLOSED at once, no callback but on_close follows (on a later loop
 * turn). Idempotent; valid in every phase after init. On the loop thread the
 * stream closes at once; from another thread the close is done by the loop
 * on its next turn (senders are released at once either way). */
void tm2__mcs_close(tm2__mcs *c);

/* Releases the mutex and condition variable. After on_close, once no other
 * thread is or will be inside a call on c. Any thread. */
void tm2__mcs_destroy(tm2__mcs *c);

#endif
