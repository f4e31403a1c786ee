/* Internal: a secret connection over a libuv TCP stream.
 *
 * The thin shell around the sans-I/O core of conn/secret_conn.h: it runs the
 * handshake under a deadline, then moves plaintext in and out.
 *
 * Handshake crypto runs off the loop: the core is started in deferred mode
 * and each of its jobs (ephemeral key pair; agreement, key derivation and
 * signature; verification) is copied to the process's worker pool
 * (net/workpool.h). While a job is out the stream does not read (what the
 * last read brought beyond the handshake message is kept with the stream,
 * at most one read) and the deadline keeps running; the completion resumes
 * the handshake on the loop. A stream that fails or is closed meanwhile takes
 * its job back if no worker started it, else leaves it to be wiped and freed
 * when it completes. With the pool configured to no threads the jobs run
 * inline, on the loop.
 *
 * Threads: everything here, callbacks included, runs on the thread of the
 * loop the stream belongs to. No call is thread-safe; other threads must hop
 * onto the loop (uv_async_t) first. Worker threads see copies of a job's
 * inputs only, never a stream or its loop helper.
 *
 * Memory: tm2__sc_loop and tm2__sc_stream are caller-allocated and must stay
 * valid until their close callbacks ran (libuv handles live inside them).
 * Read, plaintext and seal scratch buffers are shared by all streams of a
 * loop (callbacks on one loop never overlap), so a stream costs its struct
 * plus the write data it has queued.
 *
 * Callbacks may call any function of this file on any stream, including
 * tm2__sc_stream_close() on their own stream; the stream is never freed
 * inside one of its callbacks: on_close comes on a later loop turn. */
#ifndef TM2_NET_SC_STREAM_H
#define TM2_NET_SC_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "conn/secret_conn.h"
#include "net/workpool.h"
#include "tm2p2p/error.h"
#include "tm2p2p/key.h"

/* ---- per-loop shared state -------------------------------------------------- */

#define TM2__SC_READ_BUF   (64u * 1024u)           /* one socket read */
#define TM2__SC_SEAL_FRAMES 62u                     /* frames sealed per scratch pass */

typedef struct tm2__sc_stream tm2__sc_stream;

typedef struct tm2__sc_loop {
    uv_loop_t *loop;
    uint8_t *rbuf;              /* socket reads land here */
    uint8_t *pbuf;              /* opened plaintext handed to on_read */
    uint8_t *sbuf;              /* frames sealed before a direct write attempt */
    bool rbuf_busy;
    uint64_t epoch;             /* loop iterations, for per-wake-up read budgets */
    uv_prepare_t tick;          /* advances epoch; does not keep the loop alive */
    uv_idle_t resume;           /* restarts streams that used up their budget */
    tm2__sc_stream *deferred;   /* streams waiting for resume */
    tm2__wpool_sink sink;       /* handshake jobs come back here */
    int open_handles;
} tm2__sc_loop;

/* 0 or TM2_ENOMEM / TM2_EIO. On failure nothing needs closing. Joins the
 * worker pool (starting its threads if this is the first user). */
int tm2__sc_loop_init(tm2__sc_loop *l, uv_loop_t *loop);

/* Closes the helper's handles and frees its buffers. Every stream using it
 * must be closed first; jobs they left with the pool are waited for or
 * dropped here. l must stay valid until the loop has run once more (its
 * handles close on the next turn). */
void tm2__sc_loop_close(tm2__sc_loop *l);

/* ---- streams ------------------------------------------------------------- */

typedef struct tm2__sc_stream_config {
    uint32_t handshake_timeout_ms;  /* whole handshake; 0 = 3000 as the reference */
    size_t max_queued;              /* sealed bytes queued for the socket before
                                     * writes are refused with TM2_EFULL; 0 = 1 MiB */
    size_t read_budget;             /* wire bytes processed per loop iteration
                                     * before yielding to other streams; 0 = 64 KiB */
} tm2__sc_stream_config;

/* Callbacks; NULL entries are skipped. */
typedef struct tm2__sc_stream_cbs {
    /* The handshake ended: err 0 means the peer is authenticated
     * (tm2__sc_stream_remote_*), otherwise TM2_ETIMEDOUT, TM2_ECLOSED (peer
     * ended the stream), TM2_EIO or a protocol error of secret_conn.h. On
     * error the stream does nothing more; close it. */
    void (*on_handshake)(tm2__sc_stream *s, int err);
    /* Plaintext from the peer, in order. data is valid during the call only. */
    void (*on_read)(tm2__sc_stream *s, const uint8_t *data, size_t len);
    /* The session ended after the handshake: TM2_ECLOSED (clean end of
     * stream), TM2_ETRUNC (ended inside a frame), TM2_EIO, or a frame error
     * (TM2_EDECRYPT, TM2_EFRAME, TM2_ENONCE). Called once; close the stream. */
    void (*on_error)(tm2__sc_stream *s, int err);
    /* After a write was refused with TM2_EFULL: the queue has drained to
     * half of max_queued or less. */
    void (*on_writable)(tm2__sc_stream *s);
    /* The stream is fully closed; its memory may be released now. */
    void (*on_close)(tm2__sc_stream *s);
} tm2__sc_stream_cbs;

enum tm2__sc_stream_phase {
    TM2__SCS_IDLE = 1,     /* initialised, TCP not yet handed over */
    TM2__SCS_HANDSHAKE,
    TM2__SCS_OPEN,
    TM2__SCS_FAILED,       /* error reported, waiting for close */
    TM2__SCS_CLOSING,
};

struct tm2__sc_stream {
    void *data;                     /* for the caller */
    uv_tcp_t tcp;
    uv_timer_t timer;
    tm2__sc_loop *lp;
    tm2__sc_stream_config cfg;
    tm2__sc_stream_cbs cbs;
    int phase;
    int err;
    bool reading;                   /* uv_read_start is in effect */
    bool paused;                    /* the caller asked to stop reading */
    bool deferred;                  /* out of budget, on lp->deferred */
    bool want_writable;
    int open_handles;
    uint64_t epoch;
    size_t epoch_bytes;
    size_t queued;                  /* sealed bytes handed to uv_write, not yet done */
    tm2__sc_stream *next_deferred;
    struct sc_hs_job *job;          /* handshake job out with the pool */
    uint8_t *stash;                 /* input after the message that started it */
    size_t stash_len;
    tm2__sc sc;
};

/* Prepares s on the loop of l: initialises s->tcp (to be accepted or
 * connected into by the caller, see tm2__sc_stream_tcp) and the deadline
 * timer. cfg may be NULL for defaults. 0 or TM2_EIO; after a failure s needs
 * no close. */
int tm2__sc_stream_init(tm2__sc_stream *s, tm2__sc_loop *l, const tm2__sc_stream_config *cfg,
                        const tm2__sc_stream_cbs *cbs);

/* The TCP handle to uv_accept() or uv_tcp_connect() into. Its data field is
 * left to the caller. */
uv_tcp_t *tm2__sc_stream_tcp(tm2__sc_stream *s);

/* Once the handshake ended (on_handshake called), the stream no longer uses
 * s->timer: the caller may start and stop it with callbacks of its own (one
 * timer less per connection), leaving its data field alone; it is closed
 * with the stream. */
static inline tm2__sc_stream *tm2__sc_stream_of_timer(uv_timer_t *t)
{
    return (tm2__sc_stream *)((char *)t - offsetof(tm2__sc_stream, timer));
}

/* The TCP connection is up: sends our key message, starts reading and arms
 * the handshake deadline. eph_priv NULL = random (tests may fix it).
 * 0, TM2_ESTATE (called twice), TM2_EIO; on error on_handshake is not
 * called: close the stream. */
int tm2__sc_stream_start(tm2__sc_stream *s, const tm2_node_key *key, const uint8_t eph_priv[32]);

/* Largest single write (libuv buffers carry an unsigned int length). */
#define TM2__SC_STREAM_MAX_WRITE (1u << 30)

/* Seals len plaintext bytes (frames of 1024) and writes them, all or nothing.
 * Refused with TM2_EFULL while the queue holds bytes and this write would take
 * it over max_queued (a write into an empty queue is always taken); on_writable
 * then follows. TM2_EINVAL over TM2__SC_STREAM_MAX_WRITE, TM2_ESTATE before
 * the handshake ended, TM2_ECLOSED after close, the session's error after it
 * failed. A fatal error found by this call (TM2_EIO, TM2_ENOMEM, TM2_ENONCE)
 * ends the session and is returned here only, not also through on_error. */
int tm2__sc_stream_write(tm2__sc_stream *s, const uint8_t *data, size_t len);

/* Sealed bytes waiting for the socket. */
size_t tm2__sc_stream_queued(const tm2__sc_stream *s);

/* Stops / resumes delivering plaintext (for receive rate limits). A pause
 * takes effect at the next socket read: what was read in the current one
 * (at most 64 KiB) is still delivered. 0, or TM2_EIO when reading cannot
 * resume (the session then ends; no on_error follows). */
int tm2__sc_stream_pause(tm2__sc_stream *s, bool paused);

/* The authenticated peer; valid after on_handshake(s, 0). */
const uint8_t *tm2__sc_stream_remote_pubkey(const tm2__sc_stream *s);
const tm2_id *tm2__sc_stream_remote_id(const tm2__sc_stream *s);

/* Closes at once (queued writes are dropped), wipes the session and calls
 * on_close on a later loop turn. Idempotent; valid in every phase after a
 * successful init. */
void tm2__sc_stream_close(tm2__sc_stream *s);

#endif
