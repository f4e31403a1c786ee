/* Internal: a secret connection over an engine's stream socket
 * (net/engine.h).
 *
 * The thin shell around the sans-I/O core of conn/secret_conn.h: it runs the
 * handshake under a deadline, then moves plaintext in and out.
 *
 * Handshake crypto runs off the engine's thread when the engine has workers
 * (tm2__engine_workers): the core is started in deferred mode and each of its
 * jobs (ephemeral key pair; agreement, key derivation and signature;
 * verification) is copied to the process's worker pool (net/workpool.h).
 * While a job is out the stream keeps what it reads with the job (a couple
 * of frames; beyond that it stops reading until the result is back) and
 * the deadline keeps running; the completion resumes the handshake on the
 * engine's thread, then sees the end of the input if it came meanwhile. A
 * stream that fails or is closed meanwhile takes its job back if no worker
 * started it, else leaves it to be wiped and freed when it completes.
 * Without workers (the simulator, or the pool configured to no threads) the
 * jobs run inline. The ephemeral key comes from tm2__engine_random.
 *
 * Threads: everything here, callbacks included, runs on the engine's
 * thread. No call is thread-safe; other threads must hop onto the engine
 * (tm2__waker) first. Worker threads see copies of a job's inputs only,
 * never a stream or its loop helper.
 *
 * Memory: tm2__sc_loop and tm2__sc_stream are caller-allocated and must stay
 * valid until their close callbacks ran (engine handles live inside them).
 * Read, plaintext and seal scratch buffers are the engine's, shared by all
 * streams (callbacks never overlap), so a stream costs its struct plus the
 * write data its socket has queued.
 *
 * Callbacks may call any function of this file on any stream, including
 * tm2__sc_stream_close() on their own stream; the stream is never freed
 * inside one of its callbacks: on_close comes on a later turn. */
#ifndef TM2_NET_SC_STREAM_H
#define TM2_NET_SC_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn/secret_conn.h"
#include "net/engine.h"
#include "net/workpool.h"
#include "tm2p2p/error.h"
#include "tm2p2p/key.h"

/* ---- per-engine shared state ------------------------------------------------- */

#define TM2__SC_SEAL_FRAMES 62u                     /* frames sealed per scratch pass */
#define TM2__SC_PLAIN_BUF   (64u * 1024u)           /* opened plaintext per pass */
#define TM2__SC_SEAL_BUF    (TM2__SC_SEAL_FRAMES * TM2__SC_FRAME_SIZE)

typedef struct tm2__sc_stream tm2__sc_stream;

typedef struct tm2__sc_loop {
    tm2__engine *e;
    tm2__task resume;           /* restarts streams that used up their budget */
    tm2__sc_stream *deferred;   /* streams waiting for resume */
    tm2__wpool_sink sink;       /* handshake jobs come back here */
    bool live;
} tm2__sc_loop;

/* 0 or TM2_EIO. On failure nothing needs closing. Joins the worker pool
 * (starting its threads if this is the first user) when e has workers. */
int tm2__sc_loop_init(tm2__sc_loop *l, tm2__engine *e);

/* Closes the helper. Every stream using it must be closed first; jobs they
 * left with the pool are waited for or dropped here. l must stay valid
 * until the engine has run one more turn (its waker closes then). */
void tm2__sc_loop_close(tm2__sc_loop *l);

/* ---- streams ------------------------------------------------------------- */

typedef struct tm2__sc_stream_config {
    uint32_t handshake_timeout_ms;  /* whole handshake; 0 = 3000 as the reference */
    size_t max_queued;              /* sealed bytes queued for the socket before
                                     * writes are refused with TM2_EFULL; 0 = 1 MiB */
    size_t read_budget;             /* wire bytes processed per engine turn
                                     * before yielding to other streams; 0 = 64 KiB */
} tm2__sc_stream_config;

/* Callbacks; NULL entries are skipped. */
typedef struct tm2__sc_stream_cbs {
    /* tm2__sc_stream_connect finished: 0, or TM2_ECONNREFUSED,
     * TM2_ETIMEDOUT, TM2_EIO (then close the stream). */
    void (*on_connect)(tm2__sc_stream *s, int err);
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
    tm2__sock sock;
    tm2__timer timer;
    tm2__sc_loop *lp;
    const tm2__sc_stream_cbs *cbs;  /* the caller's table, not copied */
    tm2__sc_stream_config cfg;
    int8_t phase;
    bool sock_open;                 /* accepted or connecting: closes through it */
    bool reading;                   /* tm2__sock_read is on */
    bool paused;                    /* the caller asked to stop reading */
    bool deferred;                  /* out of budget, on lp->deferred */
    bool want_writable;
    int err;
    uint64_t turn;
    size_t turn_bytes;
    tm2__sc_stream *next_deferred;
    struct sc_hs_job *job;          /* handshake job out with the pool */
    bool end_pending;               /* the input ended while job was out ... */
    int end_err;                    /* ... with this (sock on_end's err) */
    tm2__sc sc;
};

/* Prepares s on l: the deadline timer, no socket yet (see
 * tm2__sc_stream_accept, _connect). cfg may be NULL for defaults; cbs (NULL:
 * none) is used in place and must outlive the stream or be replaced
 * (tm2__sc_stream_set_cbs). Cannot fail; s is closed with
 * tm2__sc_stream_close. */
void tm2__sc_stream_init(tm2__sc_stream *s, tm2__sc_loop *l, const tm2__sc_stream_config *cfg,
                         const tm2__sc_stream_cbs *cbs);

static inline void tm2__sc_stream_set_cbs(tm2__sc_stream *s, const tm2__sc_stream_cbs *cbs)
{
    s->cbs = cbs;
}

/* Takes a connection waiting on l into s and tells its remote address (all
 * zero when it cannot be read). 0, TM2_EAGAIN (none waiting), TM2_EIO. */
int tm2__sc_stream_accept(tm2__sc_stream *s, tm2__listener *l, tm2_netaddr *remote);

/* Connects s to `to`, leaving from from's IP when not NULL; on_connect
 * follows. 0 or TM2_EIO (nothing follows; close the stream). The caller
 * bounds the time. */
int tm2__sc_stream_connect(tm2__sc_stream *s, const tm2_netaddr *to, const tm2_netaddr *from);

/* Opens the socket for a connection made by other means (libuv tests and
 * tools that uv_accept or uv_tcp_connect into it, net/sc_stream_uv.h).
 * 0 or TM2_EIO. */
int tm2__sc_stream_open(tm2__sc_stream *s);

/* Once the handshake ended (on_handshake called), the stream no longer uses
 * s->timer: the caller may set its cb and start and stop it (one timer less
 * per connection), leaving its data field alone; it is closed with the
 * stream. */
static inline tm2__sc_stream *tm2__sc_stream_of_timer(tm2__timer *t)
{
    return (tm2__sc_stream *)((char *)t - offsetof(tm2__sc_stream, timer));
}

/* The connection is up (accepted, or on_connect(s, 0)): sends our key
 * message, starts reading and arms the handshake deadline. eph_priv NULL =
 * from the engine's randomness (tests may fix it).
 * 0, TM2_ESTATE (called twice, or no connection), TM2_EIO; on error
 * on_handshake is not called: close the stream. */
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
 * (at most one socket read, 64 KiB) is still delivered. 0, or TM2_EIO when reading cannot
 * resume (the session then ends; no on_error follows). */
int tm2__sc_stream_pause(tm2__sc_stream *s, bool paused);

/* The authenticated peer; valid after on_handshake(s, 0). */
const uint8_t *tm2__sc_stream_remote_pubkey(const tm2__sc_stream *s);
const tm2_id *tm2__sc_stream_remote_id(const tm2__sc_stream *s);

/* Closes at once (queued writes are dropped), wipes the session and calls
 * on_close on a later turn. Idempotent; valid in every phase after init. */
void tm2__sc_stream_close(tm2__sc_stream *s);

#endif
