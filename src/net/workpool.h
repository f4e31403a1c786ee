/* Internal: the process's pool of worker threads for handshake crypto.
 *
 * A job is a pure computation (its inputs copied in, its outputs copied
 * back) run on a worker thread; its completion comes back on the thread of
 * the engine that submitted it, through that engine's sink (a tm2__waker).
 * The secret connection streams (net/sc_stream.h) hand out their handshake's
 * public-key work this way, so that a storm of new connections uses every
 * core and the network thread keeps serving established peers.
 *
 * One pool per process, not per loop: the CPUs are the process's, and a
 * process may run several switches (tests, the crawler next to a node); a
 * pool per loop would start cores x loops threads that only fight over the
 * same cores. Not libuv's own thread pool (uv_queue_work) either: that pool
 * is also process-wide but has 4 threads by default whatever the machine,
 * is sized only through UV_THREADPOOL_SIZE before its first use, and serves
 * name resolution (the switch resolves configured host names with
 * tm2__work, uv_queue_work on libuv) and file work: a storm of a thousand queued
 * handshakes would delay every dial to a named peer behind it, and a slow
 * resolver would hold handshake threads.
 *
 * The threads start with the first sink and are joined when the last sink
 * closes. Their number is tm2__wpool_configure's (default: the CPUs libuv
 * reports, uv_available_parallelism), read when the threads start.
 *
 * An engine without workers (tm2__engine_workers false: the simulator) gets
 * an inline_only sink that joins no pool: its streams compute on its thread.
 *
 * Threads: tm2__wpool_configure and tm2__wpool_threads from any thread. A
 * sink and its jobs belong to the thread of its engine: every other call is
 * made there, and done callbacks run there. A job's run callback runs on a
 * worker and must touch nothing but the job's own copied data. */
#ifndef TM2_NET_WORKPOOL_H
#define TM2_NET_WORKPOOL_H

#include <stdbool.h>
#include <stddef.h>

#include "net/engine.h"

typedef struct tm2__wpool_job tm2__wpool_job;
typedef struct tm2__wpool_sink tm2__wpool_sink;

struct tm2__wpool_job {
    /* Set by the submitter. */
    void (*run)(tm2__wpool_job *j);             /* on a worker */
    /* On the sink's loop thread, once per submitted job: ran is false when
     * the job was dropped unrun because its sink closed. Not called for a
     * job taken back by tm2__wpool_cancel. */
    void (*done)(tm2__wpool_job *j, bool ran);
    /* The pool's. */
    tm2__wpool_job *prev, *next;
    tm2__wpool_sink *sink;
    int where;
};

struct tm2__wpool_sink {
    tm2__waker waker;       /* its data field is the caller's (close callback) */
    bool inline_only;       /* no workers: the caller must compute on the loop */
    bool local;             /* the engine has no workers: no waker, no pool */
    bool closing;
    unsigned running;       /* jobs of this sink on a worker */
    tm2__wpool_job *done_head, *done_tail;
};

/* Worker threads for pools started from now on: 0 = one per CPU (the
 * default), a negative number = none (every sink is inline_only: the work is
 * done on the network thread, as a single-core device may prefer). Clamped
 * to 64. */
void tm2__wpool_configure(int threads);

/* Threads running now (0 when no sink is open). */
unsigned tm2__wpool_threads(void);

/* Opens a sink on e (starting the threads if it is the first). 0 or
 * TM2_EIO. When e has no workers, no thread could be started, or the pool
 * is configured with none, the sink is still opened with inline_only set:
 * jobs must not be submitted to it. On failure nothing needs closing. */
int tm2__wpool_sink_init(tm2__wpool_sink *k, tm2__engine *e);

/* Closes the sink: queued jobs are dropped (done(j, false)), jobs running on
 * a worker are waited for (one job's computation at most), finished ones are
 * delivered (done(j, true)); then its waker is closed with on_close (may be
 * NULL; k must stay valid until the engine's next turn) and the threads are
 * joined if it was the last sink. No done callback runs after this returns. */
void tm2__wpool_sink_close(tm2__wpool_sink *k, void (*on_close)(tm2__waker *w));

/* Queues j (run and done set) for a worker. The sink must be open and not
 * inline_only. */
void tm2__wpool_submit(tm2__wpool_sink *k, tm2__wpool_job *j);

/* Takes back a job that no worker has started: true, and j is the caller's
 * again (no done callback follows). False if it is running or finished: its
 * done callback still follows. */
bool tm2__wpool_cancel(tm2__wpool_job *j);

#endif
