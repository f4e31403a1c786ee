#include "net/sc_stream.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define STREAM_OF(p, member) ((tm2__sc_stream *)((char *)(p) - offsetof(tm2__sc_stream, member)))

/* A handshake job out with the pool, with the input that followed the
 * message that started it and what was read since. s is NULL once the
 * stream let go of it (failed or closed): the completion then only wipes and
 * frees it. s and the stash are read and written on the engine's thread
 * only; workers touch job alone. */
struct sc_hs_job {
    tm2__wpool_job pj;
    tm2__sc_stream *s;
    uint8_t *stash;
    size_t stash_len;
    tm2__sc_job job;
};

/* While a job is out the stream goes on reading into the job's stash until
 * this much waits: the peer's next handshake message and a frame or so
 * after it, so a handshake normally never stops and restarts its socket's
 * reading (two epoll_ctl calls per job on libuv). The read that crosses it
 * is kept whole: a job holds less than this plus one read (64 KiB on
 * libuv). */
#define STASH_MAX (2u * TM2__SC_FRAME_SIZE)

/* A job is out and its stash holds enough: reading waits for the result. */
static bool stash_full(const tm2__sc_stream *s)
{
    return s->job && s->job->stash_len >= STASH_MAX;
}

/* ---- loop helper ------------------------------------------------------------- */

static int read_start(tm2__sc_stream *s);
static void fail_stream(tm2__sc_stream *s, int err, bool notify);
static void end_of_input(tm2__sc_stream *s, int err);

static void resume_fn(tm2__task *k)
{
    tm2__sc_loop *l = k->data;
    tm2__sc_stream *list = l->deferred;
    l->deferred = NULL;
    while (list) {
        tm2__sc_stream *s = list;
        list = s->next_deferred;
        s->next_deferred = NULL;
        s->deferred = false;
        if (read_start(s))
            fail_stream(s, TM2_EIO, true);
    }
}

int tm2__sc_loop_init(tm2__sc_loop *l, tm2__engine *e)
{
    memset(l, 0, sizeof *l);
    l->e = e;
    l->resume.fn = resume_fn;
    l->resume.data = l;
    if (tm2__wpool_sink_init(&l->sink, e) != 0)
        return TM2_EIO;
    l->live = true;
    return 0;
}

void tm2__sc_loop_close(tm2__sc_loop *l)
{
    if (!l->live)
        return;
    l->live = false;
    tm2__undefer(l->e, &l->resume);
    tm2__wpool_sink_close(&l->sink, NULL);
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
        (void)tm2__sock_read(&s->sock, false);
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
        tm2__undefer(s->lp->e, &s->lp->resume);
}

static void job_free(struct sc_hs_job *j)
{
    tm2__sc_job_wipe(&j->job);
    free(j->stash);
    free(j);
}

/* Lets go of the job in flight (and of the input kept for after it). */
static void drop_job(tm2__sc_stream *s)
{
    if (s->job) {
        if (tm2__wpool_cancel(&s->job->pj))
            job_free(s->job);
        else
            s->job->s = NULL;           /* its completion frees it */
        s->job = NULL;
    }
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
    tm2__timer_stop(&s->timer);
    tm2__sc_close(&s->sc);
    if (!notify || !s->cbs)
        return;
    if (was == TM2__SCS_HANDSHAKE) {
        if (s->cbs->on_handshake)
            s->cbs->on_handshake(s, err);
    } else if (s->cbs->on_error) {
        s->cbs->on_error(s, err);
    }
}

/* Writes what the handshake wants sent. Once the peer's end came (while a
 * job was out) nothing more reaches it: the handshake only reads on, up to
 * that end, so that an error in the input before it is the one reported. */
static int flush_hs(tm2__sc_stream *s)
{
    size_t n = tm2__sc_hs_pending(&s->sc);
    if (!n || s->end_pending)
        return 0;
    uint8_t *b = tm2__engine_scratch(s->lp->e, TM2__SCRATCH_SEAL);
    if (n > TM2__SC_SEAL_BUF)
        return TM2_EIO;                 /* handshake messages are far smaller */
    n = tm2__sc_hs_output(&s->sc, b, n);
    return tm2__sock_write(&s->sock, b, n);
}

static void timeout_cb(tm2__timer *t)
{
    tm2__sc_stream *s = STREAM_OF(t, timer);
    if (s->phase == TM2__SCS_HANDSHAKE)
        fail_stream(s, TM2_ETIMEDOUT, true);
}

static int submit_job(tm2__sc_stream *s, const uint8_t *rest, size_t rest_len);

/* Runs received bytes through the core and hands out the plaintext. */
static void process(tm2__sc_stream *s, const uint8_t *in, size_t n)
{
    tm2__engine *e = s->lp->e;
    size_t off = 0;
    int r;
    if (s->phase == TM2__SCS_HANDSHAKE) {
        r = tm2__sc_hs_input(&s->sc, in, n, &off);
        if (r < 0 && r != TM2_EAGAIN) {
            fail_stream(s, r, true);
            return;
        }
        int err = flush_hs(s);
        /* Whatever follows the message waits for the job's result. */
        if (!err && r == TM2__SC_JOB)
            err = submit_job(s, in + off, n - off);
        if (err) {
            fail_stream(s, err, true);
            return;
        }
        if (r == TM2_EAGAIN || r == TM2__SC_JOB)
            return;
        tm2__timer_stop(&s->timer);
        s->phase = TM2__SCS_OPEN;
        if (s->cbs && s->cbs->on_handshake)
            s->cbs->on_handshake(s, 0);
    }
    uint8_t *pbuf = tm2__engine_scratch(e, TM2__SCRATCH_PLAIN);
    /* Plaintext may be pending from the auth frame even when no byte follows. */
    while (s->phase == TM2__SCS_OPEN && (off < n || tm2__sc_open_pending(&s->sc))) {
        size_t used;
        r = tm2__sc_open(&s->sc, in + off, n - off, &used, pbuf, TM2__SC_PLAIN_BUF);
        if (r < 0) {
            fail_stream(s, r, true);
            return;
        }
        off += used;
        if (r > 0 && s->cbs && s->cbs->on_read)
            s->cbs->on_read(s, pbuf, (size_t)r);
        else if (r == 0 && used == 0)
            break;
    }
}

/* ---- socket callbacks ------------------------------------------------------------- */

static void sock_on_connect(tm2__sock *k, int err)
{
    tm2__sc_stream *s = STREAM_OF(k, sock);
    if (s->phase == TM2__SCS_IDLE && s->cbs && s->cbs->on_connect)
        s->cbs->on_connect(s, err);
}

/* Keeps what arrives while a job is out for after its result. */
static int stash(tm2__sc_stream *s, const uint8_t *data, size_t n)
{
    struct sc_hs_job *j = s->job;
    uint8_t *b = realloc(j->stash, j->stash_len + n);
    if (!b)
        return TM2_ENOMEM;
    memcpy(b + j->stash_len, data, n);
    j->stash = b;
    j->stash_len += n;
    if (stash_full(s))
        read_stop(s);
    return 0;
}

static void sock_on_read(tm2__sock *k, const uint8_t *data, size_t n)
{
    tm2__sc_stream *s = STREAM_OF(k, sock);
    tm2__sc_loop *l = s->lp;
    if (!s->job) {
        process(s, data, n);
    } else if (stash(s, data, n) != 0) {
        fail_stream(s, TM2_ENOMEM, true);
        return;
    }

    /* Fairness: after read_budget bytes in this turn, step aside until the
     * next one (libuv alone would read up to 32 times). */
    if (!s->reading)
        return;
    uint64_t turn = tm2__engine_turn(l->e);
    if (s->turn != turn) {
        s->turn = turn;
        s->turn_bytes = 0;
    }
    s->turn_bytes += n;
    if (s->turn_bytes >= s->cfg.read_budget) {
        read_stop(s);
        s->deferred = true;
        s->next_deferred = l->deferred;
        l->deferred = s;
        tm2__defer(l->e, &l->resume);
    }
}

static void sock_on_end(tm2__sock *k, int err)
{
    tm2__sc_stream *s = STREAM_OF(k, sock);
    s->reading = false;
    if (s->job) {
        /* What came before the end goes through the handshake first. */
        s->end_pending = true;
        s->end_err = err;
        return;
    }
    end_of_input(s, err);
}

static void end_of_input(tm2__sc_stream *s, int err)
{
    if (err == TM2_ECLOSED) {
        int e = tm2__sc_eof(&s->sc);
        fail_stream(s, e ? e : TM2_ECLOSED, true);
    } else {
        fail_stream(s, TM2_EIO, true);
    }
}

static void sock_on_sent(tm2__sock *k)
{
    tm2__sc_stream *s = STREAM_OF(k, sock);
    if (s->want_writable && s->phase == TM2__SCS_OPEN &&
        tm2__sock_queued(&s->sock) <= s->cfg.max_queued / 2) {
        s->want_writable = false;
        if (s->cbs && s->cbs->on_writable)
            s->cbs->on_writable(s);
    }
}

static void closed(tm2__sc_stream *s)
{
    if (s->cbs && s->cbs->on_close)
        s->cbs->on_close(s);
}

static void sock_on_close(tm2__sock *k) { closed(STREAM_OF(k, sock)); }

/* A stream closed before it had a socket: on_close still comes a turn later. */
static void late_close_cb(tm2__timer *t) { closed(STREAM_OF(t, timer)); }

static const tm2__sock_cbs sock_cbs = {
    .on_connect = sock_on_connect,
    .on_read = sock_on_read,
    .on_end = sock_on_end,
    .on_sent = sock_on_sent,
    .on_close = sock_on_close,
};

/* Starts reading unless paused, out of budget or not live. 0 or TM2_EIO;
 * the caller decides whether the failure is reported through a callback. */
static int read_start(tm2__sc_stream *s)
{
    if (s->reading || s->paused || s->deferred || s->end_pending || !live(s) || stash_full(s))
        return 0;
    if (tm2__sock_read(&s->sock, true) != 0)
        return TM2_EIO;
    s->reading = true;
    return 0;
}

/* ---- handshake jobs ---------------------------------------------------------------- */

/* Worker thread. */
static void job_run(tm2__wpool_job *pj)
{
    tm2__sc_job_run(&((struct sc_hs_job *)pj)->job);
}

/* Engine thread: the job's result resumes the handshake where it stopped. */
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
    uint8_t *in = j->stash;
    size_t n = j->stash_len;
    free(j);                            /* finish wiped it */
    if (!e)
        e = flush_hs(s);
    if (e) {
        free(in);
        fail_stream(s, e, true);
        return;
    }
    if (n || tm2__sc_established(&s->sc))
        process(s, in ? in : (const uint8_t *)"", n);
    free(in);
    if (!s->job && s->end_pending && live(s)) {
        s->end_pending = false;
        end_of_input(s, s->end_err);
    } else if ((e = read_start(s)) != 0) {
        fail_stream(s, TM2_EIO, true);
    }
}

/* Hands the core's pending job to the pool with the input that followed
 * (rest, copied); reading goes on into the job's stash. */
static int submit_job(tm2__sc_stream *s, const uint8_t *rest, size_t rest_len)
{
    struct sc_hs_job *j = calloc(1, sizeof *j);
    if (!j)
        return TM2_ENOMEM;
    if (rest_len) {
        if (!(j->stash = malloc(rest_len))) {
            free(j);
            return TM2_ENOMEM;
        }
        memcpy(j->stash, rest, rest_len);
        j->stash_len = rest_len;
    }
    j->s = s;
    int e = tm2__sc_job_take(&s->sc, &j->job);
    if (e) {
        free(j->stash);
        free(j);
        return e;
    }
    s->job = j;
    if (stash_full(s))
        read_stop(s);
    j->pj.run = job_run;
    j->pj.done = job_done;
    tm2__wpool_submit(&s->lp->sink, &j->pj);
    return 0;
}

/* ---- public ------------------------------------------------------------------ */

void tm2__sc_stream_init(tm2__sc_stream *s, tm2__sc_loop *l, const tm2__sc_stream_config *cfg,
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
    s->cbs = cbs;
    tm2__timer_init(l->e, &s->timer, timeout_cb);
    s->phase = TM2__SCS_IDLE;
}

int tm2__sc_stream_open(tm2__sc_stream *s)
{
    if (s->sock_open || s->phase != TM2__SCS_IDLE)
        return TM2_ESTATE;
    if (tm2__sock_init(s->lp->e, &s->sock, &sock_cbs) != 0)
        return TM2_EIO;
    s->sock_open = true;
    return 0;
}

int tm2__sc_stream_accept(tm2__sc_stream *s, tm2__listener *l, tm2_netaddr *remote)
{
    if (s->sock_open || s->phase != TM2__SCS_IDLE)
        return TM2_ESTATE;
    int e = tm2__listener_accept(l, &s->sock, &sock_cbs, remote);
    if (e)
        return e;
    s->sock_open = true;
    return 0;
}

int tm2__sc_stream_connect(tm2__sc_stream *s, const tm2_netaddr *to, const tm2_netaddr *from)
{
    int e = tm2__sc_stream_open(s);
    if (e)
        return e;
    return tm2__sock_connect(&s->sock, to, from);
}

int tm2__sc_stream_start(tm2__sc_stream *s, const tm2_node_key *key, const uint8_t eph_priv[32])
{
    if (s->phase != TM2__SCS_IDLE || !s->sock_open)
        return TM2_ESTATE;
    uint8_t eph[32];
    if (!eph_priv) {
        tm2__engine_random(s->lp->e, eph, sizeof eph);
        eph_priv = eph;
    }
    int e = tm2__sc_init_ex(&s->sc, key, eph_priv, !s->lp->sink.inline_only);
    sodium_memzero(eph, sizeof eph);
    if (e)
        return e;
    s->phase = TM2__SCS_HANDSHAKE;
    if ((e = flush_hs(s)) == 0)
        tm2__timer_start(&s->timer, tm2__engine_now_ms(s->lp->e) + s->cfg.handshake_timeout_ms);
    if (!e && tm2__sc_job_pending(&s->sc))
        e = submit_job(s, NULL, 0);     /* our key pair first; reading waits */
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
    size_t q = tm2__sock_queued(&s->sock);
    if (q && (q >= s->cfg.max_queued || need > s->cfg.max_queued - q)) {
        s->want_writable = true;
        return TM2_EFULL;
    }
    /* Sealed through the shared scratch, a pass at a time: the socket takes
     * what it can at once and copies only the rest. */
    uint8_t *sb = tm2__engine_scratch(s->lp->e, TM2__SCRATCH_SEAL);
    size_t off = 0;
    int e = 0;
    while (off < len) {
        size_t used;
        int w = tm2__sc_seal(&s->sc, data + off, len - off, &used, sb, TM2__SC_SEAL_BUF);
        if (w < 0) {
            e = w;
            break;
        }
        off += used;
        if ((e = tm2__sock_write(&s->sock, sb, (size_t)w)) != 0)
            break;
    }
    if (e) {
        /* Part of the data may be on the wire with nonces spent: the
         * session cannot continue. */
        fail_stream(s, e, false);
        return e;
    }
    return 0;
}

size_t tm2__sc_stream_queued(const tm2__sc_stream *s)
{
    return s->sock_open ? tm2__sock_queued(&s->sock) : 0;
}

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

void tm2__sc_stream_close(tm2__sc_stream *s)
{
    if (s->phase == TM2__SCS_CLOSING)
        return;
    s->phase = TM2__SCS_CLOSING;
    undefer(s);
    drop_job(s);
    s->reading = false;
    tm2__sc_close(&s->sc);
    tm2__timer_close(&s->timer);
    if (s->sock_open) {
        tm2__sock_close(&s->sock);
        return;
    }
    tm2__timer_init(s->lp->e, &s->timer, late_close_cb);
    tm2__timer_start(&s->timer, tm2__engine_now_ms(s->lp->e));
}
