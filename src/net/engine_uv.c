/* The libuv engine (see engine_uv.h). */
#include "net/engine_uv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <sys/socket.h>

#include "tm2p2p/error.h"

#define LISTEN_BACKLOG 511

#define UE(e) ((tm2__uv_engine *)(e))

/* ---- slots --------------------------------------------------------------------- */

/* A timer's place in the heap (a pairing heap: no allocation, O(1) arming).
 * prev is the parent for a first child, else the previous sibling. */
typedef struct uvt {
    tm2__timer *child, *sibling, *prev;
    uint64_t seq;               /* arming order; 0: not in the heap */
} uvt;

typedef struct uvs {
    uv_tcp_t tcp;
    bool ended;                 /* on_end reported */
} uvs;

_Static_assert(sizeof(uvt) <= TM2__ENGINE_SLOT_TIMER, "timer slot too small");
_Static_assert(sizeof(uv_async_t) <= TM2__ENGINE_SLOT_WAKER, "waker slot too small");
_Static_assert(sizeof(uvs) <= TM2__ENGINE_SLOT_SOCK, "socket slot too small");
_Static_assert(sizeof(uv_work_t) <= TM2__ENGINE_SLOT_WORK, "work slot too small");

#define T(t) ((uvt *)(void *)(t)->slot)
#define S(s) ((uvs *)(void *)(s)->slot)
#define TCP(s) (&S(s)->tcp)
#define ASYNC(w) ((uv_async_t *)(void *)(w)->slot)
#define WORK(w) ((uv_work_t *)(void *)(w)->slot)

static int map_uv(int err)
{
    switch (err) {
    case UV_ECONNREFUSED: return TM2_ECONNREFUSED;
    case UV_ETIMEDOUT:    return TM2_ETIMEDOUT;
    case UV_ENOMEM:       return TM2_ENOMEM;
    default:              return TM2_EIO;
    }
}

/* ---- clocks, randomness, turns ---------------------------------------------------- */

static uint64_t e_now_ms(tm2__engine *e)
{
    (void)e;
    return uv_hrtime() / 1000000u;
}

static int64_t e_wall_ms(tm2__engine *e)
{
    (void)e;
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return 0;
    return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void e_random(tm2__engine *e, void *buf, size_t len)
{
    (void)e;
    randombytes_buf(buf, len);
}

static uint64_t e_turn(tm2__engine *e) { return UE(e)->turn; }

static bool e_workers(tm2__engine *e)
{
    (void)e;
    return true;
}

static void tick_cb(uv_prepare_t *h)
{
    tm2__uv_engine *ue = h->data;
    ue->turn++;
}

/* ---- timers ---------------------------------------------------------------------- */

static bool t_less(const tm2__timer *a, const tm2__timer *b)
{
    return a->due < b->due || (a->due == b->due && T(a)->seq < T(b)->seq);
}

/* Two roots (detached) into one. */
static tm2__timer *meld(tm2__timer *a, tm2__timer *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (t_less(b, a)) {
        tm2__timer *x = a;
        a = b;
        b = x;
    }
    T(b)->sibling = T(a)->child;
    if (T(a)->child)
        T(T(a)->child)->prev = b;
    T(b)->prev = a;
    T(a)->child = b;
    return a;
}

/* The two-pass merge of a list of siblings into one root. */
static tm2__timer *merge_pairs(tm2__timer *first)
{
    tm2__timer *acc = NULL;         /* melded pairs, last first */
    while (first) {
        tm2__timer *a = first, *b = T(a)->sibling;
        first = b ? T(b)->sibling : NULL;
        T(a)->sibling = T(a)->prev = NULL;
        if (b)
            T(b)->sibling = T(b)->prev = NULL;
        tm2__timer *m = meld(a, b);
        T(m)->sibling = acc;
        acc = m;
    }
    tm2__timer *root = NULL;
    while (acc) {
        tm2__timer *nx = T(acc)->sibling;
        T(acc)->sibling = NULL;
        root = meld(root, acc);
        acc = nx;
    }
    return root;
}

static void heap_remove(tm2__uv_engine *ue, tm2__timer *t)
{
    uvt *n = T(t);
    tm2__timer *sub = merge_pairs(n->child);
    if (t == ue->timers) {
        ue->timers = sub;
    } else {
        if (T(n->prev)->child == t)
            T(n->prev)->child = n->sibling;
        else
            T(n->prev)->sibling = n->sibling;
        if (n->sibling)
            T(n->sibling)->prev = n->prev;
        ue->timers = meld(ue->timers, sub);
    }
    n->child = n->sibling = n->prev = NULL;
    n->seq = 0;
}

static void clock_cb(uv_timer_t *h);

/* Arms the clock for the earliest timer (absolute on the loop's time,
 * which never runs ahead of now_ms: it cannot fire before the due time). */
static void clock_sync(tm2__uv_engine *ue)
{
    if (!ue->timers) {
        if (ue->clock_due) {
            uv_timer_stop(&ue->clock);
            ue->clock_due = 0;
        }
        return;
    }
    uint64_t due = ue->timers->due;
    if (due == ue->clock_due)
        return;
    uint64_t ln = uv_now(ue->loop);
    uv_timer_start(&ue->clock, clock_cb, due > ln ? due - ln : 0, 0);
    ue->clock_due = due;
}

static void clock_cb(uv_timer_t *h)
{
    tm2__uv_engine *ue = h->data;
    ue->clock_due = 0;
    uint64_t now = e_now_ms(&ue->e);
    /* Timers armed by these callbacks wait for the next pass. */
    uint64_t last = ue->timer_seq;
    while (ue->timers && ue->timers->due <= now && T(ue->timers)->seq <= last) {
        tm2__timer *t = ue->timers;
        heap_remove(ue, t);
        t->due = 0;
        t->cb(t);
    }
    clock_sync(ue);
}

static void e_timer_init(tm2__engine *e, tm2__timer *t)
{
    (void)e;
    memset(T(t), 0, sizeof *T(t));
}

static void e_timer_arm(tm2__timer *t)
{
    tm2__uv_engine *ue = UE(t->e);
    if (T(t)->seq)
        heap_remove(ue, t);
    T(t)->seq = ++ue->timer_seq;
    ue->timers = meld(ue->timers, t);
    clock_sync(ue);
}

static void e_timer_disarm(tm2__timer *t)
{
    tm2__uv_engine *ue = UE(t->e);
    if (!T(t)->seq)
        return;
    heap_remove(ue, t);
    clock_sync(ue);
}

/* ---- deferred tasks ----------------------------------------------------------------- */

static void idle_cb(uv_idle_t *h)
{
    tm2__uv_engine *ue = h->data;
    ue->running = ue->tasks;
    ue->tasks = NULL;
    ue->tasks_tail = &ue->tasks;
    uv_idle_stop(&ue->idle);
    /* What these defer runs on the next turn; what they undefer is taken
     * off ue->running. */
    while (ue->running) {
        tm2__task *k = ue->running;
        ue->running = k->next;
        k->next = NULL;
        k->queued = false;
        k->fn(k);
    }
}

static void e_defer(tm2__engine *e, tm2__task *k)
{
    tm2__uv_engine *ue = UE(e);
    k->next = NULL;
    k->queued = true;
    if (!ue->tasks)
        uv_idle_start(&ue->idle, idle_cb);
    *ue->tasks_tail = k;
    ue->tasks_tail = &k->next;
}

static void e_undefer(tm2__engine *e, tm2__task *k)
{
    tm2__uv_engine *ue = UE(e);
    for (tm2__task **p = &ue->running; *p; p = &(*p)->next) {
        if (*p == k) {
            *p = k->next;
            k->next = NULL;
            k->queued = false;
            return;
        }
    }
    tm2__task *prev = NULL;
    for (tm2__task **p = &ue->tasks; *p; prev = *p, p = &(*p)->next) {
        if (*p != k)
            continue;
        *p = k->next;
        if (ue->tasks_tail == &k->next)
            ue->tasks_tail = prev ? &prev->next : &ue->tasks;
        break;
    }
    k->next = NULL;
    k->queued = false;
    if (!ue->tasks)
        uv_idle_stop(&ue->idle);
}

/* ---- wakers ---------------------------------------------------------------------- */

static void async_cb(uv_async_t *a)
{
    tm2__waker *w = a->data;
    w->cb(w);
}

static int e_waker_init(tm2__engine *e, tm2__waker *w)
{
    if (uv_async_init(UE(e)->loop, ASYNC(w), async_cb) != 0)
        return TM2_EIO;
    ASYNC(w)->data = w;
    uv_unref((uv_handle_t *)ASYNC(w));
    return 0;
}

static void e_waker_send(tm2__waker *w) { uv_async_send(ASYNC(w)); }

static void async_closed(uv_handle_t *h)
{
    tm2__waker *w = h->data;
    if (w->on_close)
        w->on_close(w);
}

static void e_waker_close(tm2__waker *w) { uv_close((uv_handle_t *)ASYNC(w), async_closed); }

/* ---- work ------------------------------------------------------------------------- */

static void work_run(uv_work_t *r)
{
    tm2__work *w = r->data;
    w->run(w);
}

static void work_after(uv_work_t *r, int status)
{
    tm2__work *w = r->data;
    w->done(w, status == UV_ECANCELED);
}

static int e_work_submit(tm2__engine *e, tm2__work *w)
{
    WORK(w)->data = w;
    return uv_queue_work(UE(e)->loop, WORK(w), work_run, work_after) == 0 ? 0 : TM2_EIO;
}

static bool e_work_cancel(tm2__work *w) { return uv_cancel((uv_req_t *)WORK(w)) == 0; }

/* ---- sockets ----------------------------------------------------------------------- */

static void report_end(tm2__sock *s, int err)
{
    if (S(s)->ended || uv_is_closing((uv_handle_t *)TCP(s)))
        return;
    S(s)->ended = true;
    uv_read_stop((uv_stream_t *)TCP(s));
    if (s->cbs->on_end)
        s->cbs->on_end(s, err);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    tm2__uv_engine *ue = UE(((tm2__sock *)h->data)->e);
    /* Reads of one loop are serial, so one buffer serves every socket;
     * busy only guards against an unexpected nested read. */
    if (ue->rbuf_busy) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    ue->rbuf_busy = true;
    *buf = uv_buf_init((char *)ue->rbuf, TM2__UV_READ_BUF);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    tm2__sock *s = st->data;
    tm2__uv_engine *ue = UE(s->e);
    if (buf->base == (char *)ue->rbuf)
        ue->rbuf_busy = false;
    if (nread > 0) {
        if (s->cbs->on_read)
            s->cbs->on_read(s, ue->rbuf, (size_t)nread);
    } else if (nread < 0) {
        report_end(s, nread == UV_EOF ? TM2_ECLOSED : TM2_EIO);
    }
}

static int e_read(tm2__sock *s, bool on)
{
    if (!on) {
        uv_read_stop((uv_stream_t *)TCP(s));
        return 0;
    }
    if (S(s)->ended)
        return TM2_EIO;
    int r = uv_read_start((uv_stream_t *)TCP(s), alloc_cb, read_cb);
    return r == 0 || r == UV_EALREADY ? 0 : TM2_EIO;
}

/* A queued write, its bytes inline: one allocation. */
typedef struct wreq {
    uv_write_t req;
    tm2__sock *s;
    uint8_t data[];
} wreq;

static void write_cb(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    tm2__sock *s = w->s;
    free(w);
    if (uv_is_closing((uv_handle_t *)TCP(s)))
        return;
    if (status < 0)
        report_end(s, TM2_EIO);
    else if (s->cbs->on_sent)
        s->cbs->on_sent(s);
}

static int e_write(tm2__sock *s, const uint8_t *data, size_t len)
{
    uv_stream_t *st = (uv_stream_t *)TCP(s);
    if (S(s)->ended || uv_is_closing((uv_handle_t *)st))
        return TM2_EIO;
    if (len == 0)
        return 0;
    /* uv_try_write refuses (UV_EAGAIN) while writes are queued: order holds. */
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int t = uv_try_write(st, &b, 1);
    if (t >= 0 && (size_t)t == len)
        return 0;
    if (t < 0 && t != UV_EAGAIN)
        return TM2_EIO;
    size_t done = t < 0 ? 0 : (size_t)t;
    wreq *w = malloc(sizeof *w + (len - done));
    if (!w)
        return TM2_ENOMEM;
    memcpy(w->data, data + done, len - done);
    w->s = s;
    b = uv_buf_init((char *)w->data, (unsigned)(len - done));
    if (uv_write(&w->req, st, &b, 1, write_cb) != 0) {
        free(w);
        return TM2_EIO;
    }
    return 0;
}

static size_t e_queued(const tm2__sock *s)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)TCP(s));
}

static void sock_closed(uv_handle_t *h)
{
    tm2__sock *s = h->data;
    if (s->cbs->on_close)
        s->cbs->on_close(s);
}

static void e_sock_close(tm2__sock *s)
{
    if (!uv_is_closing((uv_handle_t *)TCP(s)))
        uv_close((uv_handle_t *)TCP(s), sock_closed);
}

static int e_sock_init(tm2__engine *e, tm2__sock *s, const tm2__sock_cbs *cbs)
{
    (void)cbs;
    memset(S(s), 0, sizeof *S(s));
    if (uv_tcp_init(UE(e)->loop, TCP(s)) != 0)
        return TM2_EIO;
    TCP(s)->data = s;
    return 0;
}

static void connect_cb(uv_connect_t *req, int status)
{
    tm2__sock *s = req->data;
    free(req);
    if (status == UV_ECANCELED || uv_is_closing((uv_handle_t *)TCP(s)))
        return;
    if (status == 0)
        uv_tcp_nodelay(TCP(s), 1);
    if (s->cbs->on_connect)
        s->cbs->on_connect(s, status ? map_uv(status) : 0);
}

static int e_connect(tm2__sock *s, const tm2_netaddr *to, const tm2_netaddr *from)
{
    struct sockaddr_storage ss;
    if (tm2_netaddr_to_sockaddr(to, (struct sockaddr *)&ss, sizeof ss) != 0)
        return TM2_EIO;
    if (from) {
        struct sockaddr_storage src;
        tm2_netaddr f = *from;
        f.port = 0;
        if (tm2_netaddr_to_sockaddr(&f, (struct sockaddr *)&src, sizeof src) != 0 ||
            uv_tcp_bind(TCP(s), (const struct sockaddr *)&src, 0) != 0)
            return TM2_EIO;
    }
    uv_connect_t *req = malloc(sizeof *req);
    if (!req)
        return TM2_EIO;
    req->data = s;
    int r = uv_tcp_connect(req, TCP(s), (const struct sockaddr *)&ss, connect_cb);
    if (r) {
        free(req);
        return TM2_EIO;
    }
    return 0;
}

/* ---- listeners ----------------------------------------------------------------------- */

static void connection_cb(uv_stream_t *server, int status)
{
    tm2__listener *l = server->data;
    l->on_conn(l, status < 0 ? map_uv(status) : 0);
}

/* Bound and listening with plain system calls first, so that every likely
 * failure (address in use, no permission) comes before the uv handle exists
 * and nothing needs closing. */
static int e_listen(tm2__engine *e, tm2__listener *l, const tm2_netaddr *addr,
                    tm2_netaddr *bound)
{
    struct sockaddr_storage ss;
    if (tm2_netaddr_to_sockaddr(addr, (struct sockaddr *)&ss, sizeof ss) != 0)
        return TM2_EIO;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return TM2_EIO;
    int one = 1;
    socklen_t len = sizeof ss;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)&ss,
             ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) != 0 ||
        listen(fd, LISTEN_BACKLOG) != 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        tm2_netaddr_from_sockaddr((const struct sockaddr *)&ss, NULL, bound) != 0) {
        close(fd);
        return TM2_EIO;
    }
    uvs *u = (uvs *)(void *)l->slot;
    memset(u, 0, sizeof *u);
    if (uv_tcp_init(UE(e)->loop, &u->tcp) != 0) {
        close(fd);
        return TM2_EIO;
    }
    u->tcp.data = l;
    /* Neither can fail on a listening socket of ours; were one to, the
     * handle closes on the next turn, which l outlives in every caller. */
    if (uv_tcp_open(&u->tcp, fd) != 0) {
        close(fd);
        uv_close((uv_handle_t *)&u->tcp, NULL);
        return TM2_EIO;
    }
    if (uv_listen((uv_stream_t *)&u->tcp, LISTEN_BACKLOG, connection_cb) != 0) {
        uv_close((uv_handle_t *)&u->tcp, NULL);
        return TM2_EIO;
    }
    return 0;
}

/* A socket whose remote address cannot be read (reset before we got to it)
 * is still handed over, with remote all zero: it fails on first use. */
static int e_accept(tm2__listener *l, tm2__sock *s, const tm2__sock_cbs *cbs,
                    tm2_netaddr *remote)
{
    (void)cbs;
    uv_tcp_t *server = &((uvs *)(void *)l->slot)->tcp;
    memset(remote, 0, sizeof *remote);
    if (server->accepted_fd < 0)
        return TM2_EAGAIN;
    memset(S(s), 0, sizeof *S(s));
    if (uv_tcp_init(UE(l->e)->loop, TCP(s)) != 0)
        return TM2_EIO;
    TCP(s)->data = s;
    struct sockaddr_storage ss;
    int len = (int)sizeof ss;
    if (uv_accept((uv_stream_t *)server, (uv_stream_t *)TCP(s)) != 0) {
        S(s)->ended = true;
        return 0;
    }
    uv_tcp_nodelay(TCP(s), 1);
    if (uv_tcp_getpeername(TCP(s), (struct sockaddr *)&ss, &len) != 0 ||
        tm2_netaddr_from_sockaddr((const struct sockaddr *)&ss, NULL, remote) != 0)
        memset(remote, 0, sizeof *remote);
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    tm2__listener *l = h->data;
    if (l->on_close)
        l->on_close(l);
}

static void e_listener_close(tm2__listener *l)
{
    uv_tcp_t *t = &((uvs *)(void *)l->slot)->tcp;
    if (!uv_is_closing((uv_handle_t *)t))
        uv_close((uv_handle_t *)t, listener_closed);
}

/* ---- the engine ----------------------------------------------------------------------- */

static const tm2__engine_ops uv_ops = {
    .now_ms = e_now_ms,
    .wall_ms = e_wall_ms,
    .random = e_random,
    .turn = e_turn,
    .workers = e_workers,
    .timer_init = e_timer_init,
    .timer_arm = e_timer_arm,
    .timer_disarm = e_timer_disarm,
    .timer_close = e_timer_disarm,
    .defer = e_defer,
    .undefer = e_undefer,
    .waker_init = e_waker_init,
    .waker_send = e_waker_send,
    .waker_close = e_waker_close,
    .work_submit = e_work_submit,
    .work_cancel = e_work_cancel,
    .listen = e_listen,
    .accept = e_accept,
    .listener_close = e_listener_close,
    .sock_init = e_sock_init,
    .connect = e_connect,
    .read = e_read,
    .write = e_write,
    .queued = e_queued,
    .sock_close = e_sock_close,
};

int tm2__uv_engine_init(tm2__uv_engine *ue, uv_loop_t *loop)
{
    memset(ue, 0, sizeof *ue);
    ue->e.ops = &uv_ops;
    ue->e.data = ue;
    ue->loop = loop;
    ue->tasks_tail = &ue->tasks;
    if (sodium_init() < 0)
        return TM2_EIO;
    if (!(ue->rbuf = malloc(TM2__UV_READ_BUF)))
        return TM2_ENOMEM;
    if (tm2__engine_alloc_scratch(&ue->e) != 0) {
        free(ue->rbuf);
        ue->rbuf = NULL;
        return TM2_ENOMEM;
    }
    uv_prepare_init(loop, &ue->tick);
    uv_idle_init(loop, &ue->idle);
    uv_timer_init(loop, &ue->clock);
    ue->tick.data = ue->idle.data = ue->clock.data = ue;
    uv_prepare_start(&ue->tick, tick_cb);
    /* The tick only counts iterations; it must not keep the loop running. */
    uv_unref((uv_handle_t *)&ue->tick);
    ue->live = true;
    return 0;
}

void tm2__uv_engine_hold(tm2__uv_engine *ue, bool hold)
{
    if (hold)
        uv_ref((uv_handle_t *)&ue->tick);
    else
        uv_unref((uv_handle_t *)&ue->tick);
}

void tm2__uv_engine_close(tm2__uv_engine *ue)
{
    if (!ue->live)
        return;
    ue->live = false;
    while (ue->timers) {
        tm2__timer *t = ue->timers;
        heap_remove(ue, t);
        t->due = 0;
    }
    ue->tasks = NULL;
    ue->tasks_tail = &ue->tasks;
    uv_close((uv_handle_t *)&ue->tick, NULL);
    uv_close((uv_handle_t *)&ue->idle, NULL);
    uv_close((uv_handle_t *)&ue->clock, NULL);
    free(ue->rbuf);
    ue->rbuf = NULL;
    tm2__engine_free_scratch(&ue->e);
}
