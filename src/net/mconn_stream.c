/* MConnection glue over the secret connection (see mconn_stream.h). */
#include "net/mconn_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATA TM2__SC_DATA_MAX
#define FRAME TM2__SC_FRAME_SIZE

/* While waiting for on_writable with a deadline already due (the partial
 * frame cannot be flushed yet), the core's other deadlines are hidden behind
 * it; the timer then polls at an eighth of the pong timeout (within these
 * bounds) so a pong timeout is still caught behind a stalled socket. */
#define BLOCKED_POLL_MIN_MS 5u
#define BLOCKED_POLL_MAX_MS 1000u

static void pass(tm2__mcs *c, const uint8_t *in, size_t len, bool from_list);

/* ---- small helpers -------------------------------------------------------------- */

bool tm2__mcs_loop_on_thread(const tm2__mcs_loop *l)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &l->owner) != 0;
}

/* Takes c's lock unless the loop thread already holds it (a callback made
 * from inside a pass). Returns whether it was taken. */
static bool lock_c(tm2__mcs *c)
{
    if (tm2__mcs_loop_on_thread(c->lp) && c->held)
        return false;
    uv_mutex_lock(&c->lock);
    return true;
}

/* The engine's clock. Readings are made under c's lock and clamped, so the
 * core never sees time go backwards even when other threads read it too
 * (tm2__mcs_status; the libuv engine's clock is safe there). */
static uint64_t clock_now(tm2__mcs *c)
{
    uint64_t t = tm2__engine_now_ms(c->lp->sc.e);
    if (t < c->last_now)
        t = c->last_now;
    c->last_now = t;
    return t;
}

/* Puts c on the loop's list for the next turn; one wake-up per batch of
 * listings (the engine coalesces the rest anyway). */
static void schedule(tm2__mcs *c)
{
    if (atomic_exchange_explicit(&c->scheduled, true, memory_order_acq_rel))
        return;
    tm2__mcs_loop *l = c->lp;
    bool wake = false;
    uv_mutex_lock(&l->lock);
    if (!c->detached) {
        wake = l->pending == NULL;
        c->next_pending = NULL;
        *l->pending_tail = c;
        l->pending_tail = &c->next_pending;
    }
    uv_mutex_unlock(&l->lock);
    if (wake)
        tm2__waker_send(&l->wake);
}

/* ---- loop helper ------------------------------------------------------------------- */

/* A turn drives scheduled connections for at most about this long (a
 * broadcast to thousands of peers schedules them all at once); the rest go
 * back to the front of the list for the next turn, so timers and reads of
 * the loop run in between. */
#define WAKE_TURN_MS 2u
#define WAKE_CHECK_EVERY 32u

/* Puts list (still flagged scheduled) back in front of the loop's list and
 * wakes the loop for it. */
static void requeue_front(tm2__mcs_loop *l, tm2__mcs *list)
{
    tm2__mcs *last = list;
    while (last->next_pending)
        last = last->next_pending;
    uv_mutex_lock(&l->lock);
    last->next_pending = l->pending;
    if (!l->pending)
        l->pending_tail = &last->next_pending;
    l->pending = list;
    uv_mutex_unlock(&l->lock);
    tm2__waker_send(&l->wake);
}

static void wake_cb(tm2__waker *w)
{
    tm2__mcs_loop *l = w->data;
    uv_mutex_lock(&l->lock);
    tm2__mcs *list = l->pending;
    l->pending = NULL;
    l->pending_tail = &l->pending;
    uv_mutex_unlock(&l->lock);
    /* Closes complete on a later turn, so no connection on this private
     * list can be released while it is walked. */
    tm2__engine *e = l->sc.e;
    uint64_t t0 = tm2__engine_now_ms(e);
    for (unsigned k = 1; list; k++) {
        tm2__mcs *c = list;
        list = c->next_pending;
        c->next_pending = NULL;
        pass(c, NULL, 0, true);
        if (list && k % WAKE_CHECK_EVERY == 0 && tm2__engine_now_ms(e) - t0 >= WAKE_TURN_MS) {
            requeue_front(l, list);
            return;
        }
    }
}

int tm2__mcs_loop_init(tm2__mcs_loop *l, tm2__engine *e)
{
    memset(l, 0, sizeof *l);
    int r = tm2__sc_loop_init(&l->sc, e);
    if (r)
        return r;
    if (uv_mutex_init(&l->lock) != 0) {
        tm2__sc_loop_close(&l->sc);
        return TM2_EIO;
    }
    if (tm2__waker_init(e, &l->wake, wake_cb) != 0) {
        uv_mutex_destroy(&l->lock);
        tm2__sc_loop_close(&l->sc);
        return TM2_EIO;
    }
    l->wake.data = l;
    l->scratch = tm2__engine_scratch(e, TM2__SCRATCH_PRODUCE);
    l->pending_tail = &l->pending;
    l->owner = uv_thread_self();
    l->live = true;
    return 0;
}

void tm2__mcs_loop_bind_thread(tm2__mcs_loop *l) { l->owner = uv_thread_self(); }

void tm2__mcs_loop_close(tm2__mcs_loop *l)
{
    if (!l->live)
        return;
    l->live = false;
    while (l->n_spare_tails)
        free(l->spare_tails[--l->n_spare_tails]);
    tm2__waker_close(&l->wake, NULL);
    uv_mutex_destroy(&l->lock);
    tm2__sc_loop_close(&l->sc);
    l->scratch = NULL;
}

static uint8_t *tail_get(tm2__mcs_loop *l)
{
    return l->n_spare_tails ? l->spare_tails[--l->n_spare_tails] : malloc(DATA);
}

static void tail_put(tm2__mcs_loop *l, uint8_t *b)
{
    if (b && l->live && l->n_spare_tails < TM2__MCS_SPARE_TAILS)
        l->spare_tails[l->n_spare_tails++] = b;
    else
        free(b);
}

/* ---- closing ------------------------------------------------------------------------- */

static void handle_closed(tm2__mcs *c)
{
    uv_mutex_lock(&c->lock);
    tm2__mconn *core = c->core;
    c->core = NULL;
    uv_mutex_unlock(&c->lock);
    tm2__mconn_free(core);

    tm2__mcs_loop *l = c->lp;
    uv_mutex_lock(&l->lock);
    c->detached = true;
    /* Only a listed connection is flagged scheduled (the flag is cleared
     * after the list is taken), so most closes skip the walk. */
    bool listed = atomic_load_explicit(&c->scheduled, memory_order_relaxed);
    for (tm2__mcs **p = &l->pending; listed && *p; p = &(*p)->next_pending) {
        if (*p == c) {
            *p = c->next_pending;
            if (l->pending_tail == &c->next_pending)
                l->pending_tail = p;
            break;
        }
    }
    uv_mutex_unlock(&l->lock);
    c->phase = TM2__MCS_CLOSED;
    if (c->cbs.on_close)
        c->cbs.on_close(c);
}

static void st_on_close(tm2__sc_stream *s) { handle_closed(tm2__mcs_of_stream(s)); }

/* Loop thread: releases waiting senders and closes the stream (with its
 * timer, which the core's deadlines used). */
static void close_now(tm2__mcs *c)
{
    if (c->phase == TM2__MCS_CLOSING || c->phase == TM2__MCS_CLOSED)
        return;
    bool took = lock_c(c);
    c->closed = true;
    if (c->waiters)
        uv_cond_broadcast(&c->room);
    if (took)
        uv_mutex_unlock(&c->lock);
    c->phase = TM2__MCS_CLOSING;
    free(c->pre);
    c->pre = NULL;
    tail_put(c->lp, c->tail);
    c->tail = NULL;
    c->tail_len = 0;
    tm2__sc_stream_close(&c->s);
}

/* Reports err once and closes. reason NULL: the core's text when the error
 * is the core's (its first error stops the glue, so a different code came
 * from the stream), else the code's name. */
static void fail(tm2__mcs *c, int err, const char *reason)
{
    if (c->phase != TM2__MCS_RUNNING)
        return;
    const char *core_reason = NULL;
    if (!reason && c->core && tm2__mconn_error(c->core, &core_reason) == err)
        reason = core_reason;
    if (!reason) {
        snprintf(c->lp->reason, sizeof c->lp->reason, "secret connection: %s", tm2_strerror(err));
        reason = c->lp->reason;
    }
    c->err = err;
    close_now(c);
    /* The core, and with it its reason text, lives until on_close. */
    if (c->cbs.on_error)
        c->cbs.on_error(c, err, reason);
}

/* ---- core callbacks ------------------------------------------------------------------- */

static int core_receive(void *user, uint8_t ch, const uint8_t *data, size_t len)
{
    tm2__mcs *c = user;
    if (c->phase != TM2__MCS_RUNNING || c->closed)
        return TM2_ECLOSED;
    if (!c->cbs.on_receive)
        return 0;
    /* Senders on other threads need not wait for a reactor's handler. */
    c->held = false;
    uv_mutex_unlock(&c->lock);
    int r = c->cbs.on_receive(c, ch, data, len);
    uv_mutex_lock(&c->lock);
    c->held = true;
    /* A close from the handler ends delivery within this read too. */
    if (!r && (c->phase != TM2__MCS_RUNNING || c->closed))
        r = TM2_ECLOSED;
    return r;
}

static void core_budget(void *user)
{
    tm2__mcs *c = user;
    c->room_signal = true;   /* wakes waiting senders after the batch too */
}

static void core_room(void *user, uint8_t ch)
{
    tm2__mcs *c = user;
    /* Waiting senders are woken once per batch, not per packet: by then
     * every slot freed by the batch is open to them. */
    c->room_signal = true;
    if (c->cbs.on_send_room && c->phase == TM2__MCS_RUNNING && !c->closed)
        c->cbs.on_send_room(c, ch);
}

static const tm2__mconn_callbacks core_cbs = {
    .on_receive = core_receive,
    .on_send_room = core_room,
    .on_send_budget = core_budget,
};

/* ---- the pass ---------------------------------------------------------------------------- */

/* Writes to the stream with c's lock released: a socket write must not hold
 * up senders on other threads. */
static int put(tm2__mcs *c, const uint8_t *data, size_t len)
{
    c->held = false;
    uv_mutex_unlock(&c->lock);
    int e = tm2__sc_stream_write(&c->s, data, len);
    uv_mutex_lock(&c->lock);
    c->held = true;
    return e;
}

/* Stops producing until the stream drains. The stream only announces
 * on_writable after refusing a write, so it is handed one it must refuse:
 * more frames than the room left under its bound while bytes are queued
 * (refused writes are all-or-nothing: nothing is read or sent). */
static int wait_writable(tm2__mcs *c, size_t q, size_t mq)
{
    size_t room = q < mq ? mq - q : 0;
    /* Fits the scratch: write_out calls this only when room / FRAME whole
     * frames hold less than the tail plus a packet. */
    size_t len = (room / FRAME + 1) * DATA;
    int e = tm2__sc_stream_write(&c->s, c->lp->scratch, len);
    c->blocked = true;
    if (e == TM2_EFULL)
        return 0;
    return e ? e : TM2_EIO;
}

/* Produces and writes while the core has something to send, the stream has
 * room and this turn's budget lasts. Lock held. */
static int write_out(tm2__mcs *c, uint64_t now)
{
    size_t mq = c->s.cfg.max_queued;
    size_t budget = TM2__MCS_TURN_BUDGET;
    uint8_t *sb = c->lp->scratch;
    c->blocked = false;
    while (!c->closed && tm2__mconn_want_produce(c->core, now)) {
        if (!budget) {
            schedule(c);
            break;
        }
        size_t q = tm2__sc_stream_queued(&c->s);
        /* A batch, or one packet when packets are larger. */
        size_t need = c->tail_len + c->max_pkt;
        size_t max = need > TM2__MCS_BATCH ? need : TM2__MCS_BATCH;
        if (q) {
            /* Whole frames only, within the stream's bound: the write of
             * what is produced can then never be refused. */
            size_t frames = (q < mq ? mq - q : 0) / FRAME;
            if (frames * DATA < max)
                max = frames * DATA;
        }
        if (max < need)
            return wait_writable(c, q, mq);   /* q > 0: an empty queue takes a packet */
        if (c->tail_len)
            memcpy(sb, c->tail, c->tail_len);
        int n = tm2__mconn_produce(c->core, sb + c->tail_len, max - c->tail_len, now);
        if (c->room_signal) {
            c->room_signal = false;
            if (c->waiters)
                uv_cond_broadcast(&c->room);
        }
        if (n < 0)
            return n;
        if (n == 0)
            break;
        atomic_fetch_add_explicit(&c->lp->wire_sent, (uint64_t)n, memory_order_relaxed);
        if (c->phase != TM2__MCS_RUNNING || c->closed)
            return 0;   /* closed from on_send_room */
        size_t total = c->tail_len + (size_t)n;
        size_t whole = total - total % DATA;
        c->tail_len = total - whole;
        if (c->tail_len) {
            if (!c->tail && !(c->tail = tail_get(c->lp))) {
                c->tail_len = 0;   /* the connection fails: the bytes are dropped */
                return TM2_ENOMEM;
            }
            memcpy(c->tail, sb + whole, c->tail_len);
        }
        budget = (size_t)n < budget ? budget - (size_t)n : 0;
        if (whole) {
            int e = put(c, sb, whole);
            if (e)
                return e;
        }
    }
    /* Everything produced is out as whole frames: nothing is left to flush,
     * so the throttle need not wake us. Otherwise the partial frame goes
     * when the core says it is due. */
    if (c->tail_len == 0 || tm2__mconn_flush_due(c->core, now)) {
        if (c->tail_len) {
            int e = put(c, c->tail, c->tail_len);
            if (e == TM2_EFULL) {
                c->blocked = true;   /* the refusal armed on_writable */
                return 0;
            }
            if (e)
                return e;
            c->tail_len = 0;
        }
        tm2__mconn_flushed(c->core);
    }
    if (!c->tail_len) {
        tail_put(c->lp, c->tail);   /* an idle connection keeps no tail buffer */
        c->tail = NULL;
    }
    return 0;
}

static void timer_cb(tm2__timer *t)
{
    pass(tm2__mcs_of_stream(tm2__sc_stream_of_timer(t)), NULL, 0, false);
}

static void arm_timer(tm2__mcs *c, uint64_t now)
{
    uint64_t d = tm2__mconn_next_deadline(c->core, now);
    tm2__timer *t = &c->s.timer;
    if (d == UINT64_MAX) {
        tm2__timer_stop(t);
        return;
    }
    if (d <= now && c->blocked) {
        d = now + c->blocked_poll_ms;
        uint64_t r = tm2__mconn_recv_paused_until(c->core, now);
        if (r && r < d)
            d = r;
    } else if (d <= now) {
        d = now + 1;
    }
    if (d == t->due)
        return;
    t->cb = timer_cb;
    tm2__timer_start(t, d);
}

/* One turn of the glue loop for c: feed what was read, run the timers,
 * follow the receive pause, write, re-arm. */
static void pass(tm2__mcs *c, const uint8_t *in, size_t len, bool from_list)
{
    if (c->phase == TM2__MCS_CLOSING || c->phase == TM2__MCS_CLOSED)
        return;
    uv_mutex_lock(&c->lock);
    if (from_list)
        atomic_store_explicit(&c->scheduled, false, memory_order_release);
    if (c->closed || c->phase != TM2__MCS_RUNNING) {
        bool closed = c->closed;
        uv_mutex_unlock(&c->lock);
        if (closed)
            close_now(c);   /* requested from another thread */
        return;
    }
    c->held = true;
    uint64_t now = clock_now(c);
    uint64_t stalled = c->lp->stalled_ms;
    if (stalled != c->stall_seen) {
        tm2__mconn_credit_stall(c->core, stalled - c->stall_seen);
        c->stall_seen = stalled;
    }
    int e = 0;
    const char *why = NULL;
    if (c->pre) {
        uint8_t *p = c->pre;
        c->pre = NULL;
        /* Counted first: the reactors see the messages inside feed. */
        atomic_fetch_add_explicit(&c->lp->wire_recv, c->pre_len, memory_order_relaxed);
        e = tm2__mconn_feed(c->core, p, c->pre_len, now);
        free(p);
    }
    if (!e && len) {
        atomic_fetch_add_explicit(&c->lp->wire_recv, len, memory_order_relaxed);
        e = tm2__mconn_feed(c->core, in, len, now);
    }
    if (!e)
        e = tm2__mconn_handle_expiry(c->core, now);
    if (!e && c->phase == TM2__MCS_RUNNING && !c->closed) {
        bool pause = tm2__mconn_recv_paused_until(c->core, now) != 0;
        if (pause != c->rpaused) {
            c->rpaused = pause;
            if (pause)
                atomic_fetch_add_explicit(&c->lp->recv_stalls, 1, memory_order_relaxed);
            if ((e = tm2__sc_stream_pause(&c->s, pause)) != 0)
                why = "secret connection: cannot resume reading";
        }
    }
    if (!e && c->phase == TM2__MCS_RUNNING && !c->closed)
        e = write_out(c, now);
    bool closed = c->closed;
    /* A pass this long was a stall (a slow receive handler): nothing of
     * the loop was read meanwhile. Every connection's next pass credits it,
     * this one's too. It can only push deadlines back, so the timer armed
     * below may fire early; the pass then re-arms. */
    uint64_t took = tm2__engine_now_ms(c->lp->sc.e) - now;
    if (took >= TM2__MCS_STALL_GRACE_MS && took < UINT64_MAX / 2)
        c->lp->stalled_ms += took;
    if (!e && c->phase == TM2__MCS_RUNNING && !closed)
        arm_timer(c, now);
    c->held = false;
    uv_mutex_unlock(&c->lock);
    if (closed) {
        close_now(c);   /* silently: a requested close is no error */
        return;
    }
    if (e)
        fail(c, e, why);
}

/* ---- stream callbacks once started ----------------------------------------------------- */

static void st_on_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    pass(tm2__mcs_of_stream(s), data, len, false);
}

static void st_on_error(tm2__sc_stream *s, int err)
{
    fail(tm2__mcs_of_stream(s), err, err == TM2_ECLOSED ? "peer closed the connection" : NULL);
}

static void st_on_writable(tm2__sc_stream *s) { pass(tm2__mcs_of_stream(s), NULL, 0, false); }

/* ---- stream callbacks before start: the caller's, through c->pre_cbs ---------------------- */

#define PRE(s) (tm2__mcs_of_stream(s)->pre_cbs)

static void pre_on_connect(tm2__sc_stream *s, int err)
{
    if (PRE(s) && PRE(s)->on_connect)
        PRE(s)->on_connect(s, err);
}

static void pre_on_handshake(tm2__sc_stream *s, int err)
{
    if (PRE(s) && PRE(s)->on_handshake)
        PRE(s)->on_handshake(s, err);
}

static void pre_on_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    if (PRE(s) && PRE(s)->on_read)
        PRE(s)->on_read(s, data, len);
}

static void pre_on_error(tm2__sc_stream *s, int err)
{
    if (PRE(s) && PRE(s)->on_error)
        PRE(s)->on_error(s, err);
}

static void pre_on_writable(tm2__sc_stream *s)
{
    if (PRE(s) && PRE(s)->on_writable)
        PRE(s)->on_writable(s);
}

static const tm2__sc_stream_cbs pre_cbs_fwd = {
    .on_connect = pre_on_connect,
    .on_handshake = pre_on_handshake,
    .on_read = pre_on_read,
    .on_error = pre_on_error,
    .on_writable = pre_on_writable,
    .on_close = st_on_close,
};

/* ---- connections -------------------------------------------------------------------------- */

int tm2__mcs_init(tm2__mcs *c, tm2__mcs_loop *l, const tm2__sc_stream_config *scfg,
                  const tm2__sc_stream_cbs *pre_cbs, const tm2__mcs_cbs *cbs)
{
    memset(c, 0, sizeof *c);
    c->lp = l;
    if (cbs)
        c->cbs = *cbs;
    c->pre_cbs = pre_cbs;
    if (uv_mutex_init(&c->lock) != 0)
        return TM2_EIO;
    if (uv_cond_init(&c->room) != 0) {
        uv_mutex_destroy(&c->lock);
        return TM2_EIO;
    }
    tm2__sc_stream_init(&c->s, &l->sc, scfg, &pre_cbs_fwd);
    atomic_init(&c->scheduled, false);
    c->phase = TM2__MCS_INIT;
    return 0;
}

tm2__sc_stream *tm2__mcs_stream(tm2__mcs *c) { return &c->s; }

tm2__mcs *tm2__mcs_of_stream(tm2__sc_stream *s)
{
    return (tm2__mcs *)((char *)s - offsetof(tm2__mcs, s));
}

int tm2__mcs_start(tm2__mcs *c, const tm2_mconn_config *cfg, const tm2_channel_desc *descs,
                   size_t n_descs, const uint8_t *pre, size_t pre_len)
{
    if (c->phase != TM2__MCS_INIT)
        return TM2_ESTATE;
    if (c->s.phase == TM2__SCS_FAILED)
        return c->s.err;
    if (c->s.phase != TM2__SCS_OPEN)
        return TM2_ESTATE;
    tm2_mconn_config def;
    if (!cfg) {
        tm2_mconn_config_default(&def);
        cfg = &def;
    }
    uint8_t *copy = NULL;
    if (pre_len) {
        if (!pre)
            return TM2_EINVAL;
        if (!(copy = malloc(pre_len)))
            return TM2_ENOMEM;
        memcpy(copy, pre, pre_len);
    }
    tm2__mconn *core = NULL;
    uv_mutex_lock(&c->lock);
    int e = c->closed ? TM2_ESTATE
                      : tm2__mconn_new(&core, cfg, descs, n_descs, &core_cbs, c, clock_now(c));
    uv_mutex_unlock(&c->lock);
    if (!e && (e = tm2__sc_stream_pause(&c->s, false)) != 0)
        tm2__mconn_free(core);
    if (e) {
        free(copy);
        return e;
    }
    uv_mutex_lock(&c->lock);
    c->core = core;
    uv_mutex_unlock(&c->lock);
    c->max_pkt = tm2__mconn_max_packet_size(core);
    c->stall_seen = c->lp->stalled_ms;
    uint32_t poll = cfg->ping_interval_ms ? cfg->pong_timeout_ms / 8 : BLOCKED_POLL_MAX_MS;
    c->blocked_poll_ms = poll < BLOCKED_POLL_MIN_MS ? BLOCKED_POLL_MIN_MS
                         : poll > BLOCKED_POLL_MAX_MS ? BLOCKED_POLL_MAX_MS : poll;
    c->pre = copy;
    c->pre_len = pre_len;
    static const tm2__sc_stream_cbs run_cbs = {
        .on_read = st_on_read,
        .on_error = st_on_error,
        .on_writable = st_on_writable,
        .on_close = st_on_close,
    };
    c->pre_cbs = NULL;
    tm2__sc_stream_set_cbs(&c->s, &run_cbs);
    c->phase = TM2__MCS_RUNNING;
    schedule(c);
    return 0;
}

/* What a sender sees of the core's answer: a failed core is a closing
 * connection. */
static int send_result(int r)
{
    switch (r) {
    case 0:
    case TM2_EFULL:
    case TM2_ETOOBIG:
    case TM2_ECHANNEL:
    case TM2_EINVAL:
    case TM2_ENOMEM:
        return r;
    default:
        return TM2_ECLOSED;
    }
}

/* One attempt of a waiting sender: budget first (kept across attempts in
 * *reserved), then a queue slot. */
static int send_step(tm2__mcs *c, uint8_t ch, tm2__msg *m, bool *reserved)
{
    if (!m)
        return TM2_EINVAL;
    int r = 0;
    if (!*reserved) {
        r = tm2__mconn_reserve(c->core, m->len);
        *reserved = r == 0;
    }
    if (*reserved && (r = tm2__mconn_send_reserved(c->core, ch, m)) == 0)
        *reserved = false;   /* the bytes are the queued message's now */
    return send_result(r);
}

static int do_send(tm2__mcs *c, uint8_t ch, tm2__msg *m, uint32_t timeout_ms)
{
    bool loop = tm2__mcs_loop_on_thread(c->lp);
    bool nested = loop && c->held;
    bool wait = !loop && timeout_ms;
    if (!nested)
        uv_mutex_lock(&c->lock);
    int r;
    bool reserved = false;
    uint64_t deadline = 0;
    for (;;) {
        if (c->closed) {
            r = TM2_ECLOSED;
            break;
        }
        if (!c->core) {
            r = TM2_ESTATE;
            break;
        }
        r = wait ? send_step(c, ch, m, &reserved) : send_result(tm2__mconn_try_send(c->core, ch, m));
        if (r != TM2_EFULL || !wait)
            break;
        /* A sender on another thread blocks on a condition variable: its
         * deadline is on the real clock the wait uses, not the engine's
         * (which only the engine's thread may read in general). */
        uint64_t t = uv_hrtime();
        if (!deadline)
            deadline = t + (uint64_t)timeout_ms * 1000000u;
        else if (t >= deadline)
            break;
        c->waiters++;
        uv_cond_timedwait(&c->room, &c->lock, deadline - t);
        c->waiters--;
    }
    bool kick = false;
    if (reserved && c->core) {
        /* Giving up: the bytes may be what another sender waits for. A
         * refused try-sender hears of them from the loop's next pass. */
        tm2__mconn_unreserve(c->core, m->len);
        if (c->waiters)
            uv_cond_broadcast(&c->room);
        kick = tm2__mconn_budget_notify_pending(c->core);
    }
    if (!nested)
        uv_mutex_unlock(&c->lock);
    /* Inside a pass the message joins the batch being written. */
    if ((r == 0 || kick) && !nested)
        schedule(c);
    return r;
}

int tm2__mcs_try_send(tm2__mcs *c, uint8_t ch, tm2__msg *m) { return do_send(c, ch, m, 0); }

int tm2__mcs_send(tm2__mcs *c, uint8_t ch, tm2__msg *m, uint32_t timeout_ms)
{
    return do_send(c, ch, m, timeout_ms);
}

int tm2__mcs_status(tm2__mcs *c, tm2_mconn_status *st)
{
    bool took = lock_c(c);
    int r = 0;
    if (c->closed)
        r = TM2_ECLOSED;
    else if (!c->core)
        r = TM2_ESTATE;
    else
        tm2__mconn_status(c->core, clock_now(c), st);
    if (took)
        uv_mutex_unlock(&c->lock);
    return r;
}

uint32_t tm2__mcs_min_rtt(tm2__mcs *c)
{
    bool took = lock_c(c);
    uint32_t v = !c->closed && c->core ? tm2__mconn_min_rtt(c->core) : 0;
    if (took)
        uv_mutex_unlock(&c->lock);
    return v;
}

void tm2__mcs_close(tm2__mcs *c)
{
    if (tm2__mcs_loop_on_thread(c->lp)) {
        close_now(c);
        return;
    }
    uv_mutex_lock(&c->lock);
    bool was = c->closed;
    c->closed = true;
    if (c->waiters)
        uv_cond_broadcast(&c->room);
    uv_mutex_unlock(&c->lock);
    if (!was)
        schedule(c);
}

void tm2__mcs_destroy(tm2__mcs *c)
{
    uv_cond_destroy(&c->room);
    uv_mutex_destroy(&c->lock);
}
