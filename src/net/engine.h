/* Internal: the engine, everything the network shell needs from the world.
 *
 * The switch, the transport and the streams (sc_stream, mconn_stream) reach
 * clocks, randomness, timers, sockets and threads only through this
 * interface, so the same objects run on libuv (net/engine_uv.h: real
 * sockets, one loop thread) or inside the simulator (sim/, virtual time, many
 * nodes on one thread, reproducible from a seed).
 *
 * Clock: tm2__engine_now_ms is the only clock the network code reads:
 * monotonic milliseconds from an arbitrary origin. Timers are armed at an
 * absolute time on it. tm2__engine_wall_ms is Unix time in milliseconds, for
 * what is stored or shown (address book times, bans, event stamps).
 *
 * Turns: the engine runs callbacks one at a time, in turns. No callback
 * ever runs inside a call made to the engine: a call that fails returns an
 * error and nothing follows; a call that succeeds has its outcome reported
 * on a later turn. Close callbacks always come on a later turn, so an
 * object is never freed under a caller's feet.
 *
 * Handles (tm2__timer, tm2__task, tm2__waker, tm2__listener, tm2__sock,
 * tm2__work) are caller-allocated: the caller embeds them in its own
 * structs (one allocation per connection, as before the seam) and the
 * backend keeps its state in the handle's slot. A handle must stay valid
 * until its close callback ran (timers and tasks need no close).
 *
 * Threads: every call is made on the engine's thread, callbacks included,
 * except tm2__waker_send (any thread) and what tm2__work runs. The
 * simulator's engine has one thread for every node of the world.
 *
 * Memory: scratch buffers shared by every stream of an engine (read,
 * plaintext, seal, produce) belong to the engine (tm2__engine_scratch), not
 * to each node, so a thousand simulated nodes share one set. */
#ifndef TM2_NET_ENGINE_H
#define TM2_NET_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/netaddr.h"

typedef struct tm2__engine tm2__engine;
typedef struct tm2__engine_ops tm2__engine_ops;

/* Backend storage inside each handle, as small as the backends allow (a
 * connection embeds a socket and a timer: memory per idle peer). The libuv
 * backend static-asserts that its state fits: a uv_tcp_t and a flag for
 * sockets and listeners, a uv_async_t, a uv_work_t, and for a timer only
 * its place in the engine's heap (its timers share one uv_timer_t). Timers
 * are sized for the simulator's, which link into its event lists. */
#define TM2__ENGINE_SLOT_TIMER 48u
#define TM2__ENGINE_SLOT_WAKER 128u
#define TM2__ENGINE_SLOT_SOCK 256u
#define TM2__ENGINE_SLOT_WORK 128u

#define TM2__SLOT(n) _Alignas(16) unsigned char slot[n]

/* ---- timers ------------------------------------------------------------------ */

typedef struct tm2__timer tm2__timer;
struct tm2__timer {
    tm2__engine *e;
    void (*cb)(tm2__timer *t);
    void *data;                /* the caller's */
    uint64_t due;              /* armed for this now_ms; 0 = stopped */
    TM2__SLOT(TM2__ENGINE_SLOT_TIMER);
};

/* ---- deferred work: "run this on a later turn" ---------------------------------- */

typedef struct tm2__task tm2__task;
struct tm2__task {
    void (*fn)(tm2__task *t);
    void *data;                /* the caller's */
    tm2__task *next;           /* the engine's */
    bool queued;               /* the engine's */
};

/* ---- the cross-thread wake-up ------------------------------------------------ */

/* Sends coalesce: several sends before the callback ran give one call. */
typedef struct tm2__waker tm2__waker;
struct tm2__waker {
    tm2__engine *e;
    void (*cb)(tm2__waker *w);
    void (*on_close)(tm2__waker *w);
    void *data;
    TM2__SLOT(TM2__ENGINE_SLOT_WAKER);
};

/* ---- blocking work off the engine's thread ----------------------------------------- */

/* run happens on some other thread (libuv: its thread pool; the simulator:
 * inline, on a later turn, in submission order), then done on the engine's
 * thread. cancelled is true when tm2__work_cancel took it back before run. */
typedef struct tm2__work tm2__work;
struct tm2__work {
    tm2__engine *e;
    void (*run)(tm2__work *w);
    void (*done)(tm2__work *w, bool cancelled);
    void *data;
    TM2__SLOT(TM2__ENGINE_SLOT_WORK);
};

/* ---- stream sockets ------------------------------------------------------------- */

typedef struct tm2__sock tm2__sock;
typedef struct tm2__listener tm2__listener;

/* Callbacks of a socket; NULL entries are skipped. */
typedef struct tm2__sock_cbs {
    /* tm2__sock_connect finished: 0, TM2_ECONNREFUSED, TM2_ETIMEDOUT,
     * TM2_EIO. */
    void (*on_connect)(tm2__sock *s, int err);
    /* Bytes from the peer while reading is on. data lies in the engine's read
     * scratch and is valid during the call only. */
    void (*on_read)(tm2__sock *s, const uint8_t *data, size_t len);
    /* The stream ended: TM2_ECLOSED (the peer's clean end), TM2_EIO (reset
     * or other error). Reading stops; close the socket. */
    void (*on_end)(tm2__sock *s, int err);
    /* Queued bytes went down (tm2__sock_queued tells how many are left). */
    void (*on_sent)(tm2__sock *s);
    /* Closed: the handle may be released. */
    void (*on_close)(tm2__sock *s);
} tm2__sock_cbs;

struct tm2__sock {
    tm2__engine *e;
    const tm2__sock_cbs *cbs;
    void *data;                /* the caller's */
    TM2__SLOT(TM2__ENGINE_SLOT_SOCK);
};

struct tm2__listener {
    tm2__engine *e;
    /* A connection is waiting: take it with tm2__listener_accept (or it
     * stays in the backlog). err != 0: accepting failed (descriptors out). */
    void (*on_conn)(tm2__listener *l, int err);
    void (*on_close)(tm2__listener *l);
    void *data;
    TM2__SLOT(TM2__ENGINE_SLOT_SOCK);
};

/* ---- the engine ------------------------------------------------------------------ */

/* Scratch buffers of an engine (see Memory above). */
enum tm2__scratch {
    TM2__SCRATCH_PLAIN = 0,    /* opened plaintext, 64 KiB */
    TM2__SCRATCH_SEAL,         /* sealed frames before a write */
    TM2__SCRATCH_PRODUCE,      /* mconn produce output */
    TM2__SCRATCH_N
};

struct tm2__engine_ops {
    uint64_t (*now_ms)(tm2__engine *e);
    int64_t (*wall_ms)(tm2__engine *e);
    void (*random)(tm2__engine *e, void *buf, size_t len);
    uint64_t (*turn)(tm2__engine *e);
    bool (*workers)(tm2__engine *e);

    void (*timer_init)(tm2__engine *e, tm2__timer *t);
    void (*timer_arm)(tm2__timer *t);          /* t->due set */
    void (*timer_disarm)(tm2__timer *t);
    void (*timer_close)(tm2__timer *t);

    void (*defer)(tm2__engine *e, tm2__task *k);
    void (*undefer)(tm2__engine *e, tm2__task *k);

    int (*waker_init)(tm2__engine *e, tm2__waker *w);
    void (*waker_send)(tm2__waker *w);
    void (*waker_close)(tm2__waker *w);

    int (*work_submit)(tm2__engine *e, tm2__work *w);
    bool (*work_cancel)(tm2__work *w);

    int (*listen)(tm2__engine *e, tm2__listener *l, const tm2_netaddr *addr,
                  tm2_netaddr *bound);
    int (*accept)(tm2__listener *l, tm2__sock *s, const tm2__sock_cbs *cbs,
                  tm2_netaddr *remote);
    void (*listener_close)(tm2__listener *l);

    int (*sock_init)(tm2__engine *e, tm2__sock *s, const tm2__sock_cbs *cbs);
    int (*connect)(tm2__sock *s, const tm2_netaddr *to, const tm2_netaddr *from);
    int (*read)(tm2__sock *s, bool on);
    int (*write)(tm2__sock *s, const uint8_t *data, size_t len);
    size_t (*queued)(const tm2__sock *s);
    void (*sock_close)(tm2__sock *s);
};

struct tm2__engine {
    const tm2__engine_ops *ops;
    uint8_t *scratch[TM2__SCRATCH_N];
    bool scratch_busy[TM2__SCRATCH_N];
    void *data;                /* the backend's */
};

/* Scratch sizes (each buffer is at least this large). */
size_t tm2__engine_scratch_size(enum tm2__scratch which);

/* Allocates the shared scratch buffers: 0 or TM2_ENOMEM. Backends call it
 * when they are made, tm2__engine_free_scratch when they go. */
int tm2__engine_alloc_scratch(tm2__engine *e);
void tm2__engine_free_scratch(tm2__engine *e);

static inline uint8_t *tm2__engine_scratch(tm2__engine *e, enum tm2__scratch which)
{
    return e->scratch[which];
}

/* ---- the calls ---------------------------------------------------------------- */

static inline uint64_t tm2__engine_now_ms(tm2__engine *e) { return e->ops->now_ms(e); }
static inline int64_t tm2__engine_wall_ms(tm2__engine *e) { return e->ops->wall_ms(e); }

/* Random bytes: the simulator's come from (seed, node, counter). Every random
 * choice the network code makes (keys of hash tables, ephemeral keys,
 * discovery's picks) reads them here. */
static inline void tm2__engine_random(tm2__engine *e, void *buf, size_t len)
{
    e->ops->random(e, buf, len);
}

/* Uniform in [0, n) (0 for n == 0), without modulo bias. */
uint32_t tm2__engine_uniform(tm2__engine *e, uint32_t n);

/* A counter that advances once per turn of the engine (read budgets). */
static inline uint64_t tm2__engine_turn(tm2__engine *e) { return e->ops->turn(e); }

/* True when tm2__work and worker threads may be used for CPU work
 * (handshake crypto); false in the simulator, which computes inline. */
static inline bool tm2__engine_workers(tm2__engine *e) { return e->ops->workers(e); }

static inline void tm2__timer_init(tm2__engine *e, tm2__timer *t, void (*cb)(tm2__timer *t))
{
    t->e = e;
    t->cb = cb;
    t->due = 0;
    e->ops->timer_init(e, t);
}

/* Arms (or re-arms) t for now_ms == due; a due time past runs on the next
 * turn. */
static inline void tm2__timer_start(tm2__timer *t, uint64_t due)
{
    t->due = due ? due : 1;
    t->e->ops->timer_arm(t);
}

static inline void tm2__timer_stop(tm2__timer *t)
{
    if (t->due) {
        t->due = 0;
        t->e->ops->timer_disarm(t);
    }
}

static inline bool tm2__timer_active(const tm2__timer *t) { return t->due != 0; }

/* Stops t for good; it needs no close callback and may be freed on return. */
static inline void tm2__timer_close(tm2__timer *t)
{
    t->due = 0;
    t->e->ops->timer_close(t);
}

/* Runs k->fn on a later turn (once, however many times it is deferred
 * before that). */
static inline void tm2__defer(tm2__engine *e, tm2__task *k)
{
    if (!k->queued)
        e->ops->defer(e, k);
}

static inline void tm2__undefer(tm2__engine *e, tm2__task *k)
{
    if (k->queued)
        e->ops->undefer(e, k);
}

/* 0 or TM2_EIO. */
static inline int tm2__waker_init(tm2__engine *e, tm2__waker *w, void (*cb)(tm2__waker *w))
{
    w->e = e;
    w->cb = cb;
    return e->ops->waker_init(e, w);
}

/* The one call any thread may make. */
static inline void tm2__waker_send(tm2__waker *w) { w->e->ops->waker_send(w); }

static inline void tm2__waker_close(tm2__waker *w, void (*on_close)(tm2__waker *w))
{
    w->on_close = on_close;
    w->e->ops->waker_close(w);
}

/* 0 or TM2_EIO (nothing follows). */
static inline int tm2__work_submit(tm2__engine *e, tm2__work *w)
{
    w->e = e;
    return e->ops->work_submit(e, w);
}

/* True when w had not started: its done(w, true) still follows. */
static inline bool tm2__work_cancel(tm2__work *w) { return w->e->ops->work_cancel(w); }

/* Listens on addr (an IP literal and port; port 0 picks one, bound gets the
 * address in use). 0, TM2_EIO (address in use, ...). l->on_conn set first. */
static inline int tm2__listen(tm2__engine *e, tm2__listener *l, const tm2_netaddr *addr,
                              tm2_netaddr *bound)
{
    l->e = e;
    return e->ops->listen(e, l, addr, bound);
}

/* Takes a waiting connection into s (not initialised before; it is now, with
 * cbs) and tells its remote address. 0 or TM2_EIO / TM2_EAGAIN (nothing
 * waiting); on failure s needs no close. */
static inline int tm2__listener_accept(tm2__listener *l, tm2__sock *s, const tm2__sock_cbs *cbs,
                                       tm2_netaddr *remote)
{
    s->e = l->e;
    s->cbs = cbs;
    return l->e->ops->accept(l, s, cbs, remote);
}

static inline void tm2__listener_close(tm2__listener *l, void (*on_close)(tm2__listener *l))
{
    l->on_close = on_close;
    l->e->ops->listener_close(l);
}

/* Prepares s for tm2__sock_connect. 0 or TM2_EIO; after a failure s needs no
 * close. */
static inline int tm2__sock_init(tm2__engine *e, tm2__sock *s, const tm2__sock_cbs *cbs)
{
    s->e = e;
    s->cbs = cbs;
    return e->ops->sock_init(e, s, cbs);
}

/* Connects to `to`, leaving from `from`'s IP when not NULL. 0 (on_connect
 * follows) or TM2_EIO. The caller bounds the time with a timer of its own. */
static inline int tm2__sock_connect(tm2__sock *s, const tm2_netaddr *to, const tm2_netaddr *from)
{
    return s->e->ops->connect(s, to, from);
}

/* Turns delivery of on_read on or off. 0 or TM2_EIO. */
static inline int tm2__sock_read(tm2__sock *s, bool on) { return s->e->ops->read(s, on); }

/* Writes len bytes, all or nothing: what the socket does not take at once
 * is copied and queued (tm2__sock_queued), and on_sent reports progress.
 * The caller bounds the queue. 0, TM2_EIO, TM2_ENOMEM. */
static inline int tm2__sock_write(tm2__sock *s, const uint8_t *data, size_t len)
{
    return s->e->ops->write(s, data, len);
}

static inline size_t tm2__sock_queued(const tm2__sock *s) { return s->e->ops->queued(s); }

/* Closes at once (queued bytes are dropped); on_close follows on a later
 * turn. Idempotent. */
static inline void tm2__sock_close(tm2__sock *s) { s->e->ops->sock_close(s); }

#endif
