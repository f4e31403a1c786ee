#include "net/sc_stream.h"

#include <stdlib.h>
#include <string.h>

#define PBUF_SIZE (64u * 1024u)
#define SBUF_SIZE (TM2__SC_SEAL_FRAMES * TM2__SC_FRAME_SIZE)

#define STREAM_OF(p, member) ((tm2__sc_stream *)((char *)(p) - offsetof(tm2__sc_stream, member)))

/* One uv_write of sealed bytes, data inline: one allocation per queued write. */
typedef struct wreq {
    uv_write_t req;
    tm2__sc_stream *s;
    size_t len;
    uint8_t data[];
} wreq;

/* A handshake job out with the pool. s is NULL once the stream let go of it
 * (failed or closed): the completion then only wipes and frees it. s is read
 * and written on the loop thread only; workers touch job alone. */
struct sc_hs_job {
    tm2__wpool_job pj;
    tm2__sc_stream *s;
    tm2__sc_job job;
};

/* ---- loop helper ------------------------------------------------------------- */

static void tick_cb(uv_prepare_t *h)
{
    tm2__sc_loop *l = h->data;
    l->epoch++;
}

static int read_start(tm2__sc_stream *s);
static void fail_stream(tm2__sc_stream *s, int err, bool notify);

static void resume_cb(uv_idle_t *h)
{
    tm2__sc_loop *l = h->data;
    tm2__sc_stream *list = l->deferred;
    l->deferred = NULL;
    uv_idle_stop(&l->resume);
    while (list) {
        tm2__sc_stream *s = list;
        list = s->next_deferred;
        s->next_deferred = NULL;
        s->deferred = false;
        if (read_start(s))
            fail_stream(s, TM2_EIO, true);
    }
}

static void loop_handle_closed(uv_handle_t *h)
{
    tm2__sc_loop *l = h->data;
    l->open_handles--;
}

int tm2__sc_loop_init(tm2__sc_loop *l, uv_loop_t *loop)
{
    memset(l, 0, sizeof *l);
    l->loop = loop;
    l->rbuf = malloc(TM2__SC_READ_BUF);
    l->pbuf = malloc(PBUF_SIZE);
    l->sbuf = malloc(SBUF_SIZE);
    if (!l->rbuf || !l->pbuf || !l->sbuf) {
        free(l->rbuf);
        free(l->pbuf);
        free(l->sbuf);
        return TM2_ENOMEM;
    }
    if (tm2__wpool_sink_init(&l->sink, loop) != 0) {
        free(l->rbuf);
        free(l->pbuf);
        free(l->sbuf);
        return TM2_EIO;
    }
    uv_prepare_init(loop, &l->tick);
    uv_idle_init(loop, &l->resume);
    l->tick.data = l;
    l->resume.data = l;
    l->sink.async.data = l;
    l->open_handles = 3;
    uv_prepare_start(&l->tick, tick_cb);
    /* The tick only counts iterations; it must not keep the loop running. */
    uv_unref((uv_handle_t *)&l->tick);
    return 0;
}

void tm2__sc_loop_close(tm2__sc_loop *l)
{
    if (!l->rbuf)
        return;
    uv_close((uv_handle_t *)&l->tick, loop_handle_closed);
    uv_close((uv_handle_t *)&l->resume, loop_handle_closed);
    tm2__wpool_sink_close(&l->sink, loop_handle_closed);
    free(l->rbuf);
    free(l->pbuf);
    free(l->sbuf);
    l->rbuf = l->pbuf = l->sbuf = NULL;
    l->deferred = NULL;
}

/* ---- stream internals -------------------------------------------------------- */

static bool live(const tm2__sc_stream *s)
{
    return s->phase == TM2__SCS_HANDSHAKE || s->phase == TM2__SCS_OPEN;
}

static void read_stop(tm2__sc_stream *s)
{
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
}

static void undefer(tm2__sc_stream *s)
{
    if (!s->deferred)
        return;
    for (tm2__sc_stream **p = &s->lp->deferred; *p; p = &(*p)->next_deferred) {
        if (*p == s) {
            *p = s->next_deferred;
            break;
        }
    }
    s->next_deferred = NULL;
    s->deferred = false;
    if (!s->lp->deferred)
        uv_idle_stop(&s->lp->resume);
}

static void job_free(struct sc_hs_job *j)
{
    tm2__sc_job_wipe(&j->job);
    free(j);
}

/* Lets go of the job in flight and of the input kept for after it. */
static void drop_job(tm2__sc_stream *s)
{
    if (s->job) {
        if (tm2__wpool_cancel(&s->job->pj))
            job_free(s->job);
        else
            s->job->s = NULL;           /* its completion frees it */
        s->job = NULL;
    }
    free(s->stash);
    s->stash = NULL;
    s->stash_len = 0;
}

/* Ends the session and reports err through the callback of the phase it
 * ended in. notify is false when the error is returned by the caller's own
 * call instead (no callback re-enters the caller). */
static void fail_stream(tm2__sc_stream *s, int err, bool notify)
{
    if (!live(s))
        return;
    int was = s->phase;
    s->phase = TM2__SCS_FAILED;
    s->err = err;
    read_stop(s);
    undefer(s);
    drop_job(s);
    uv_timer_stop(&s->timer);
    tm2__sc_close(&s->sc);
    if (!notify)
        return;
    if (was == TM2__SCS_HANDSHAKE) {
        if (s->cbs.on_handshake)
            s->cbs.on_handshake(s, err);
    } else if (s->cbs.on_error) {
        s->cbs.on_error(s, err);
    }
}

static void write_cb(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    tm2__sc_stream *s = w->s;
    s->queued -= w->len;
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED)
            fail_stream(s, TM2_EIO, true);
        return;
    }
    if (s->want_writable && s->phase == TM2__SCS_OPEN && s->queued <= s->cfg.max_queued / 2) {
        s->want_writable = false;
        if (s->cbs.on_writable)
            s->cbs.on_writable(s);
    }
}

static int submit(tm2__sc_stream *s, wreq *w)
{
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    w->s = s;
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, write_cb) != 0) {
        free(w);
        return TM2_EIO;
    }
    s->queued += w->len;
    return 0;
}

/* Queues what the handshake wants sent. */
static int flush_hs(tm2__sc_stream *s)
{
    size_t n = tm2__sc_hs_pending(&s->sc);
    if (!n)
        return 0;
    wreq *w = malloc(sizeof *w + n);
    if (!w)
        return TM2_ENOMEM;
    w->len = tm2__sc_hs_output(&s->sc, w->data, n);
    return submit(s, w);
}

static void timeout_cb(uv_timer_t *t)
{
    tm2__sc_stream *s = t->data;
    if (s->phase == TM2__SCS_HANDSHAKE)
        fail_stream(s, TM2_ETIMEDOUT, true);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    tm2__sc_loop *l = STREAM_OF(h, tcp)->lp;
    /* Reads of one loop are serial, so one buffer serves every stream;
     * busy only guards against an unexpected nested read. */
    if (l->rbuf_busy) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    l->rbuf_busy = true;
    *buf = uv_buf_init((char *)l->rbuf, TM2__SC_READ_BUF);
}

static int submit_job(tm2__sc_stream *s);

/* Runs received bytes through the core and hands out the plaintext. */
static void process(tm2__sc_stream *s, const uint8_t *in, size_t n)
{
    tm2__sc_loop *l = s->lp;
    size_t off = 0;
    int r;
    if (s->phase == TM2__SCS_HANDSHAKE) {
        r = tm2__sc_hs_input(&s->sc, in, n, &off);
        if (r < 0 && r != TM2_EAGAIN) {
            fail_stream(s, r, true);
            return;
        }
        int e = flush_hs(s);
        if (!e && r == TM2__SC_JOB) {
            /* Whatever follows the message waits for the job's result. */
            if (off < n) {
                if (!(s->stash = malloc(n - off)))
                    e = TM2_ENOMEM;
                else {
                    memcpy(s->stash, in + off, n - off);
                    s->stash_len = n - off;
                }
            }
            if (!e)
                e = submit_job(s);
        }
        if (e) {
            fail_stream(s, e, true);
            return;
        }
        if (r == TM2_EAGAIN || r == TM2__SC_JOB)
            return;
        uv_timer_stop(&s->timer);
        s->phase = TM2__SCS_OPEN;
        if (s->cbs.on_handshake)
            s->cbs.on_handshake(s, 0);
    }
    /* Plaintext may be pending from the auth frame even when no byte follows. */
    while (s->phase == TM2__SCS_OPEN && (off < n || tm2__sc_open_pending(&s->sc))) {
        size_t used;
        r = tm2__sc_open(&s->sc, in + off, n - off, &used, l->pbuf, PBUF_SIZE);
        if (r < 0) {
            fail_stream(s, r, true);
            return;
        }
        off += used;
        if (r > 0 && s->cbs.on_read)
            s->cbs.on_read(s, l->pbuf, (size_t)r);
        else if (r == 0 && used == 0)
            break;
    }
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    tm2__sc_stream *s = STREAM_OF(st, tcp);
    tm2__sc_loop *l = s->lp;
    if (buf->base == (char *)l->rbuf && nread <= 0)
        l->rbuf_busy = false;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            int e = tm2__sc_eof(&s->sc);
            fail_stream(s, e ? e : TM2_ECLOSED, true);
        } else {
            fail_stream(s, TM2_EIO, true);
        }
        return;
    }
    process(s, l->rbuf, (size_t)nread);
    l->rbuf_busy = false;

    /* Fairness: after read_budget bytes in this loop iteration, step aside
     * until the next one (libuv alone would read up to 32 times). */
    if (!s->reading)
        return;
    if (s->epoch != l->epoch) {
        s->epoch = l->epoch;
        s->epoch_bytes = 0;
    }
    s->epoch_bytes += (size_t)nread;
    if (s->epoch_bytes >= s->cfg.read_budget) {
        read_stop(s);
        s->deferred = true;
        s->next_deferred = l->deferred;
        l->deferred = s;
        uv_idle_start(&l->resume, resume_cb);
    }
}

/* Starts reading unless paused, out of budget or not live. 0 or TM2_EIO;
 * the caller decides whether the failure is reported through a callback. */
static int read_start(tm2__sc_stream *s)
{
    if (s->reading || s->paused || s->deferred || s->job || !live(s))
        return 0;
    if (uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb) != 0)
        return TM2_EIO;
    s->reading = true;
    return 0;
}

/* Worker thread. */
static void job_run(tm2__wpool_job *pj)
{
    tm2__sc_job_run(&((struct sc_hs_job *)pj)->job);
}

/* Loop thread: the job's result resumes the handshake where it stopped. */
static void job_done(tm2__wpool_job *pj, bool ran)
{
    struct sc_hs_job *j = (struct sc_hs_job *)pj;
    tm2__sc_stream *s = j->s;
    if (!s) {
        job_free(j);
        return;
    }
    s->job = NULL;
    if (!ran) {
        job_free(j);
        fail_stream(s, TM2_ECLOSED, true);
        return;
    }
    int e = tm2__sc_job_finish(&s->sc, &j->job);
    free(j);                            /* finish wiped it */
    if (!e)
        e = flush_hs(s);
    if (e) {
        fail_stream(s, e, true);
        return;
    }
    uint8_t *in = s->stash;
    size_t n = s->stash_len;
    s->stash = NULL;
    s->stash_len = 0;
    if (n || tm2__sc_established(&s->sc))
        process(s, in ? in : (const uint8_t *)"", n);
    free(in);
    if (!s->job && (e = read_start(s)) != 0)
        fail_stream(s, TM2_EIO, true);
}

/* Hands the core's pending job to the pool (or, with no workers, runs it
 * here and resumes at once). Stops reading until the result is back. */
static int submit_job(tm2__sc_stream *s)
{
    struct sc_hs_job *j = malloc(sizeof *j);
    if (!j)
        return TM2_ENOMEM;
    memset(&j->pj, 0, sizeof j->pj);
    j->s = s;
    int e = tm2__sc_job_take(&s->sc, &j->job);
    if (e) {
        free(j);
        return e;
    }
    read_stop(s);
    undefer(s);
    s->job = j;
    j->pj.run = job_run;
    j->pj.done = job_done;
    tm2__wpool_submit(&s->lp->sink, &j->pj);
    return 0;
}

/* Seals data behind pre (already sealed bytes) into one queued write. */
static int queue_sealed(tm2__sc_stream *s, const uint8_t *pre, size_t pre_len,
                        const uint8_t *data, size_t len)
{
    size_t sealed = tm2__sc_sealed_size(len);
    wreq *w = malloc(sizeof *w + pre_len + sealed);
    if (!w)
        return TM2_ENOMEM;
    if (pre_len)
        memcpy(w->data, pre, pre_len);
    w->len = pre_len + sealed;
    if (len) {
        size_t used;
        int r = tm2__sc_seal(&s->sc, data, len, &used, w->data + pre_len, sealed);
        if (r < 0) {
            free(w);
            return r;
        }
    }
    return submit(s, w);
}

/* ---- public ------------------------------------------------------------------ */

int tm2__sc_stream_init(tm2__sc_stream *s, tm2__sc_loop *l, const tm2__sc_stream_config *cfg,
                        const tm2__sc_stream_cbs *cbs)
{
    memset(s, 0, sizeof *s);
    s->lp = l;
    if (cfg)
        s->cfg = *cfg;
    if (!s->cfg.handshake_timeout_ms)
        s->cfg.handshake_timeout_ms = 3000;
    if (!s->cfg.max_queued)
        s->cfg.max_queued = 1024u * 1024u;
    if (!s->cfg.read_budget)
        s->cfg.read_budget = 64u * 1024u;
    if (cbs)
        s->cbs = *cbs;
    if (uv_tcp_init(l->loop, &s->tcp) != 0)
        return TM2_EIO;
    uv_timer_init(l->loop, &s->timer);
    s->timer.data = s;
    s->open_handles = 2;
    s->phase = TM2__SCS_IDLE;
    return 0;
}

uv_tcp_t *tm2__sc_stream_tcp(tm2__sc_stream *s) { return &s->tcp; }

int tm2__sc_stream_start(tm2__sc_stream *s, const tm2_node_key *key, const uint8_t eph_priv[32])
{
    if (s->phase != TM2__SCS_IDLE)
        return TM2_ESTATE;
    int e = tm2__sc_init_ex(&s->sc, key, eph_priv, !s->lp->sink.inline_only);
    if (e)
        return e;
    s->phase = TM2__SCS_HANDSHAKE;
    /* Frames are whole writes already; the mconn above does its own
     * coalescing, and the reference's sockets run without Nagle too. */
    uv_tcp_nodelay(&s->tcp, 1);
    if ((e = flush_hs(s)) == 0 &&
        uv_timer_start(&s->timer, timeout_cb, s->cfg.handshake_timeout_ms, 0) != 0)
        e = TM2_EIO;
    if (!e && tm2__sc_job_pending(&s->sc))
        e = submit_job(s);              /* our key pair first; reading waits */
    if (e) {
        fail_stream(s, e, false);
        return e;
    }
    if ((e = read_start(s))) {
        fail_stream(s, e, false);
        return e;
    }
    return 0;
}

int tm2__sc_stream_write(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    if (s->phase == TM2__SCS_FAILED)
        return s->err;
    if (s->phase == TM2__SCS_CLOSING)
        return TM2_ECLOSED;
    if (s->phase != TM2__SCS_OPEN)
        return TM2_ESTATE;
    if (len == 0)
        return 0;
    if (len > TM2__SC_STREAM_MAX_WRITE)
        return TM2_EINVAL;
    size_t need = tm2__sc_sealed_size(len);
    if (s->queued && (s->queued >= s->cfg.max_queued || need > s->cfg.max_queued - s->queued)) {
        s->want_writable = true;
        return TM2_EFULL;
    }

    int e = 0;
    if (s->queued == 0) {
        /* Nothing in flight: seal through the shared scratch and try the
         * socket directly; only what it does not take is copied to a queued
         * write. */
        uint8_t *sb = s->lp->sbuf;
        size_t off = 0;
        while (off < len) {
            size_t used;
            int w = tm2__sc_seal(&s->sc, data + off, len - off, &used, sb, SBUF_SIZE);
            if (w < 0) {
                e = w;
                break;
            }
            off += used;
            uv_buf_t b = uv_buf_init((char *)sb, (unsigned)w);
            int t = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
            if (t == w)
                continue;
            if (t < 0 && t != UV_EAGAIN) {
                e = TM2_EIO;
                break;
            }
            if (t < 0)
                t = 0;
            e = queue_sealed(s, sb + t, (size_t)(w - t), data + off, len - off);
            break;
        }
    } else {
        e = queue_sealed(s, NULL, 0, data, len);
    }
    if (e) {
        /* Part of the data may be on the wire with nonces spent: the
         * session cannot continue. */
        fail_stream(s, e, false);
        return e;
    }
    return 0;
}

size_t tm2__sc_stream_queued(const tm2__sc_stream *s) { return s->queued; }

int tm2__sc_stream_pause(tm2__sc_stream *s, bool paused)
{
    s->paused = paused;
    if (paused) {
        read_stop(s);
        return 0;
    }
    int e = read_start(s);
    if (e)
        fail_stream(s, e, false);
    return e;
}

const uint8_t *tm2__sc_stream_remote_pubkey(const tm2__sc_stream *s)
{
    return tm2__sc_remote_pubkey(&s->sc);
}

const tm2_id *tm2__sc_stream_remote_id(const tm2__sc_stream *s)
{
    return tm2__sc_remote_id(&s->sc);
}

static void stream_handle_closed(tm2__sc_stream *s)
{
    if (--s->open_handles == 0 && s->cbs.on_close)
        s->cbs.on_close(s);
}

static void tcp_closed(uv_handle_t *h) { stream_handle_closed(STREAM_OF(h, tcp)); }

static void timer_closed(uv_handle_t *h) { stream_handle_closed(h->data); }

void tm2__sc_stream_close(tm2__sc_stream *s)
{
    if (s->phase == TM2__SCS_CLOSING)
        return;
    s->phase = TM2__SCS_CLOSING;
    undefer(s);
    drop_job(s);
    s->reading = false;
    tm2__sc_close(&s->sc);
    uv_close((uv_handle_t *)&s->timer, timer_closed);
    uv_close((uv_handle_t *)&s->tcp, tcp_closed);
}
