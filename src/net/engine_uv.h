/* Internal: the libuv engine (net/engine.h on a uv_loop_t).
 *
 * Real sockets, the monotonic clock (uv_hrtime in ms; timers are kept in a
 * heap of their own and run from one uv_timer_t armed for the earliest,
 * relative to uv_now), libsodium randomness, uv_queue_work for tm2__work.
 * Sockets write with uv_try_write first and copy only what the socket did
 * not take into a queued uv_write; reads land in the engine's one 64 KiB read
 * buffer (reads of one loop are serial).
 *
 * What stays libuv-only (the switch's own thread, file writers, the CLI,
 * the crawler) reaches the loop through tm2__uv_engine_loop.
 *
 * Threads: the loop's thread, as for every engine; now_ms, wall_ms and
 * random are also safe from other threads here (mconn_stream's status and
 * waiting senders read the clock there).
 *
 * Loop lifetime: the engine's own handles (turn counter, deferred tasks,
 * timer clock) never keep uv_run going by themselves, and neither do wakers:
 * sockets, listeners, work, armed timers and queued tasks do. A loop that
 * must run while it has nothing of that kind (a switch thread waiting for
 * commands) holds it with tm2__uv_engine_hold. */
#ifndef TM2_NET_ENGINE_UV_H
#define TM2_NET_ENGINE_UV_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "net/engine.h"

typedef struct tm2__uv_engine {
    tm2__engine e;              /* first: the engine is this struct */
    uv_loop_t *loop;
    uv_prepare_t tick;          /* advances turn; unref'd unless held */
    uint64_t turn;
    uv_idle_t idle;             /* runs deferred tasks */
    tm2__task *tasks, **tasks_tail;
    tm2__task *running;         /* this turn's tasks not yet run */
    uv_timer_t clock;           /* armed for the earliest timer */
    uint64_t clock_due;         /* 0: stopped */
    tm2__timer *timers;         /* pairing heap by (due, arming order) */
    uint64_t timer_seq;
    uint8_t *rbuf;              /* socket reads, TM2__UV_READ_BUF */
    bool rbuf_busy;
    bool live;
} tm2__uv_engine;

#define TM2__UV_READ_BUF (64u * 1024u)

/* Makes an engine on loop (which must outlive it). 0, TM2_ENOMEM, TM2_EIO;
 * on failure nothing needs closing. */
int tm2__uv_engine_init(tm2__uv_engine *ue, uv_loop_t *loop);

/* Closes the engine's handles and frees its buffers. Every socket, waker
 * and listener made on it must be closed first and no timer left armed
 * (they are disarmed here). ue must stay valid until the loop has run once
 * more (its handles close on the next turn). Idempotent. */
void tm2__uv_engine_close(tm2__uv_engine *ue);

/* Keeps uv_run going while nothing else would (hold true) or no longer. */
void tm2__uv_engine_hold(tm2__uv_engine *ue, bool hold);

static inline uv_loop_t *tm2__uv_engine_loop(tm2__engine *e)
{
    return ((tm2__uv_engine *)e)->loop;
}

#endif
