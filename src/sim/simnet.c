/* The simulated world: hosts, the clock, the event loop, and the engine
 * calls that are not about sockets (clock, random, timers, tasks, wakers,
 * work). Sockets and links are in link.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_internal.h"
#include "tm2p2p/error.h"

#define SIM_NET_BASE 0xC6120000u   /* 198.18.0.0 */
#define SIM_NET_SIZE (1u << 17)    /* /15 */

/* ---- memory, mixing --------------------------------------------------------------- */

void *sim_alloc(tm2__simnet *w, size_t n)
{
    void *p = malloc(n);
    if (p)
        w->mem += n;
    return p;
}

void *sim_calloc(tm2__simnet *w, size_t n)
{
    void *p = calloc(1, n);
    if (p)
        w->mem += n;
    return p;
}

void sim_free(tm2__simnet *w, void *p, size_t n)
{
    if (p) {
        w->mem -= n;
        free(p);
    }
}

static uint64_t fmix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A keyed hash of four words (splitmix64 rounds): draws that depend on
 * what they are about, not on the order in which they are made. */
uint64_t sim_mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    uint64_t x = fmix(a + 0x9e3779b97f4a7c15ull);
    x = fmix(x ^ (b + 0x632be59bd9b4e019ull));
    x = fmix(x ^ (c + 0x8cb92ba72f3d8dd7ull));
    return fmix(x ^ (d + 0xd6e8feb86659fd93ull));
}

/* ---- scheduling ------------------------------------------------------------------ */

void sim_at(tm2__simnet *w, sim_ev *ev, uint64_t due, uint32_t host, uint8_t kind)
{
    sim_queue_remove(&w->q, ev);
    ev->due = due < w->now ? w->now : due;
    ev->seq = w->seq++;
    ev->host = host;
    ev->kind = kind;
    if (sim_queue_push(&w->q, ev) != 0) {
        /* Engine calls cannot fail here; a simulation without its event
         * queue cannot go on. */
        fputs("simnet: out of memory for the event queue\n", stderr);
        abort();
    }
}

void sim_at_min(tm2__simnet *w, sim_ev *ev, uint64_t due, uint32_t host, uint8_t kind)
{
    if (sim_queued(ev) && ev->due <= (due < w->now ? w->now : due))
        return;
    sim_at(w, ev, due, host, kind);
}

void sim_cancel(tm2__simnet *w, sim_ev *ev)
{
    sim_queue_remove(&w->q, ev);
}

static void ev_init(sim_ev *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->idx = SIM_NONE;
}

/* ---- handle slots ---------------------------------------------------------------- */

/* The ordinal lives in the event (its padding): a timer slot is 32 bytes. */
typedef struct sim_timer {
    sim_ev ev;
} sim_timer;

typedef struct sim_waker {
    sim_ev ev;
    bool closing;
} sim_waker;

typedef struct sim_work {
    sim_ev ev;
    uint64_t ordinal;
    bool cancelled;
} sim_work;

_Static_assert(sizeof(sim_timer) <= TM2__ENGINE_SLOT_TIMER, "timer slot");
_Static_assert(sizeof(sim_waker) <= TM2__ENGINE_SLOT_WAKER, "waker slot");
_Static_assert(sizeof(sim_work) <= TM2__ENGINE_SLOT_WORK, "work slot");

#define SLOT_OF(h, type) ((type *)(void *)(h)->slot)
#define OWNER_OF(ev, type) ((type *)(void *)((unsigned char *)(ev) - offsetof(type, slot)))

/* ---- engine calls: clock, random ------------------------------------------------------ */

static uint64_t op_now_ms(tm2__engine *e)
{
    return sim_host_of(e)->w->now;
}

static int64_t op_wall_ms(tm2__engine *e)
{
    tm2__simnet *w = sim_host_of(e)->w;
    return w->cfg.epoch_ms + (int64_t)w->now;
}

static void op_random(tm2__engine *e, void *buf, size_t len)
{
    sim_host *h = sim_host_of(e);
    uint8_t *out = buf;
    while (len) {
        if (h->rpos == sizeof h->rbuf) {
            uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
            for (size_t i = 0; i < sizeof nonce; i++)
                nonce[i] = (uint8_t)(h->rblock >> (8 * i));
            h->rblock++;
            crypto_stream_chacha20(h->rbuf, sizeof h->rbuf, nonce, h->rkey);
            h->rpos = 0;
        }
        size_t n = sizeof h->rbuf - h->rpos;
        if (n > len)
            n = len;
        memcpy(out, h->rbuf + h->rpos, n);
        h->rpos = (uint8_t)(h->rpos + n);
        out += n;
        len -= n;
    }
}

static uint64_t op_turn(tm2__engine *e)
{
    return sim_host_of(e)->w->events;
}

static bool op_workers(tm2__engine *e)
{
    (void)e;
    return false;
}

/* ---- timers ------------------------------------------------------------------------- */

static void op_timer_init(tm2__engine *e, tm2__timer *t)
{
    sim_timer *st = SLOT_OF(t, sim_timer);
    ev_init(&st->ev);
    st->ev.ordinal = sim_host_of(e)->next_timer++;
}

static void op_timer_arm(tm2__timer *t)
{
    sim_host *h = sim_host_of(t->e);
    /* A fresh sequence number on every arm: ties fire in arming order. */
    sim_at(h->w, &SLOT_OF(t, sim_timer)->ev, t->due, h->index, EV_TIMER);
}

static void op_timer_disarm(tm2__timer *t)
{
    sim_cancel(sim_host_of(t->e)->w, &SLOT_OF(t, sim_timer)->ev);
}

/* ---- deferred tasks -------------------------------------------------------------------- */

static void op_defer(tm2__engine *e, tm2__task *k)
{
    sim_host *h = sim_host_of(e);
    k->queued = true;
    k->next = NULL;
    if (h->task_tail)
        h->task_tail->next = k;
    else
        h->task_head = k;
    h->task_tail = k;
    if (!sim_queued(&h->defer_ev))
        sim_at(h->w, &h->defer_ev, h->w->now, h->index, EV_DEFER);
}

static void op_undefer(tm2__engine *e, tm2__task *k)
{
    sim_host *h = sim_host_of(e);
    tm2__task *prev = NULL;
    for (tm2__task *p = h->task_head; p; prev = p, p = p->next) {
        if (p != k)
            continue;
        if (prev)
            prev->next = k->next;
        else
            h->task_head = k->next;
        if (h->task_tail == k)
            h->task_tail = prev;
        break;
    }
    k->queued = false;
    k->next = NULL;
    if (!h->task_head)
        sim_cancel(h->w, &h->defer_ev);
}

static void drop_tasks(sim_host *h)
{
    for (tm2__task *k = h->task_head, *n; k; k = n) {
        n = k->next;
        k->queued = false;
        k->next = NULL;
    }
    h->task_head = h->task_tail = NULL;
    sim_cancel(h->w, &h->defer_ev);
}

/* ---- wakers -------------------------------------------------------------------------- */

static int op_waker_init(tm2__engine *e, tm2__waker *wk)
{
    sim_host *h = sim_host_of(e);
    sim_waker *sw = SLOT_OF(wk, sim_waker);
    ev_init(&sw->ev);
    sw->closing = false;
    h->handles++;
    return 0;
}

static void op_waker_send(tm2__waker *wk)
{
    sim_host *h = sim_host_of(wk->e);
    sim_waker *sw = SLOT_OF(wk, sim_waker);
    if (sw->closing || sim_queued(&sw->ev))
        return;   /* coalesced with the one pending */
    sim_at(h->w, &sw->ev, h->w->now, h->index, EV_WAKER);
}

static void op_waker_close(tm2__waker *wk)
{
    sim_host *h = sim_host_of(wk->e);
    sim_waker *sw = SLOT_OF(wk, sim_waker);
    if (sw->closing)
        return;
    sw->closing = true;
    sim_at(h->w, &sw->ev, h->w->now, h->index, EV_WAKER_CLOSE);
}

/* ---- work ------------------------------------------------------------------------------ */

static int op_work_submit(tm2__engine *e, tm2__work *wk)
{
    sim_host *h = sim_host_of(e);
    sim_work *sw = SLOT_OF(wk, sim_work);
    ev_init(&sw->ev);
    sw->cancelled = false;
    sw->ordinal = h->w->seq;
    sim_at(h->w, &sw->ev, h->w->now, h->index, EV_WORK);
    return 0;
}

static bool op_work_cancel(tm2__work *wk)
{
    sim_work *sw = SLOT_OF(wk, sim_work);
    if (!sim_queued(&sw->ev) || sw->cancelled)
        return false;
    sw->cancelled = true;   /* keeps its place: done(w, true) comes in order */
    return true;
}

const tm2__engine_ops sim_ops = {
    .now_ms = op_now_ms,
    .wall_ms = op_wall_ms,
    .random = op_random,
    .turn = op_turn,
    .workers = op_workers,
    .timer_init = op_timer_init,
    .timer_arm = op_timer_arm,
    .timer_disarm = op_timer_disarm,
    .timer_close = op_timer_disarm,
    .defer = op_defer,
    .undefer = op_undefer,
    .waker_init = op_waker_init,
    .waker_send = op_waker_send,
    .waker_close = op_waker_close,
    .work_submit = op_work_submit,
    .work_cancel = op_work_cancel,
    .listen = sim_listen,
    .accept = sim_accept,
    .listener_close = sim_listener_close,
    .sock_init = sim_sock_init,
    .connect = sim_connect,
    .read = sim_read,
    .write = sim_write,
    .queued = sim_queued_bytes,
    .sock_close = sim_sock_close,
};

/* ---- the world ---------------------------------------------------------------------- */

tm2__simnet *tm2__simnet_new(const tm2__simnet_config *cfg)
{
    if (sodium_init() < 0)
        return NULL;
    /* The trace state wants 64-byte alignment. */
    size_t size = (sizeof(tm2__simnet) + 63) & ~(size_t)63;
    tm2__simnet *w = aligned_alloc(64, size);
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    w->mem = sizeof *w;
    if (cfg)
        w->cfg = *cfg;
    if (w->cfg.latency_max_ms < w->cfg.latency_min_ms)
        w->cfg.latency_max_ms = w->cfg.latency_min_ms;
    if (!w->cfg.epoch_ms)
        w->cfg.epoch_ms = TM2__SIMNET_EPOCH_MS;
    double loss = w->cfg.loss;
    if (loss > 0.0)
        w->loss_thr = loss >= 1.0 ? UINT32_MAX : (uint32_t)(loss * 4294967296.0);
    crypto_generichash_init(&w->trace, NULL, 0, 32);
    if (!(w->rscratch = sim_alloc(w, SIM_SEG_MAX)) || tm2__engine_alloc_scratch(&w->scratch) != 0) {
        tm2__simnet_free(w);
        return NULL;
    }
    for (int i = 0; i < TM2__SCRATCH_N; i++)
        w->mem += tm2__engine_scratch_size((enum tm2__scratch)i);
    return w;
}

/* ---- hosts on loopback addresses ------------------------------------------------------ */

static uint32_t loop_hash(uint32_t ip) { return (ip * 2654435761u) >> 7; }

/* The slot of ip, or the empty slot where it would go. */
static struct sim_loop_slot *loop_slot(const tm2__simnet *w, uint32_t ip)
{
    for (uint32_t i = loop_hash(ip) & (w->loop_cap - 1);; i = (i + 1) & (w->loop_cap - 1))
        if (w->loop_tab[i].ip == ip || w->loop_tab[i].ip == 0)
            return &w->loop_tab[i];
}

static sim_host *loop_find(const tm2__simnet *w, uint32_t ip)
{
    if (!w->loop_cap)
        return NULL;
    struct sim_loop_slot *sl = loop_slot(w, ip);
    return sl->ip == ip && sl->host1 ? w->hosts[sl->host1 - 1] : NULL;
}

/* Room for one more: the table stays at most half full. 0 or TM2_ENOMEM. */
static int loop_reserve(tm2__simnet *w)
{
    if ((w->loop_used + 1u) * 2u <= w->loop_cap)
        return 0;
    uint32_t cap = w->loop_cap ? w->loop_cap * 2u : 256u;
    struct sim_loop_slot *old = w->loop_tab, *t = calloc(cap, sizeof *t);
    if (!t)
        return TM2_ENOMEM;
    uint32_t ocap = w->loop_cap;
    w->loop_tab = t;
    w->loop_cap = cap;
    for (uint32_t i = 0; i < ocap; i++)
        if (old[i].ip)
            *loop_slot(w, old[i].ip) = old[i];
    w->mem += (size_t)(cap - ocap) * sizeof *t;
    free(old);
    return 0;
}

static void host_release(tm2__simnet *w, sim_host *h)
{
    if (h->ip >> 17 == SIM_NET_BASE >> 17 && w->by_ip)
        w->by_ip[h->ip - SIM_NET_BASE] = 0;
    if (h->ip >> 24 == 127 && w->loop_cap) {
        struct sim_loop_slot *sl = loop_slot(w, h->ip);
        if (sl->ip == h->ip && sl->host1 == h->index + 1u)
            sl->host1 = 0;
    }
    w->hosts[h->index] = NULL;
    w->live_hosts--;
    sim_free(w, h, sizeof *h);
}

void tm2__simnet_free(tm2__simnet *w)
{
    if (!w)
        return;
    sim_conn_free_all(w);
    for (uint32_t i = 0; i < w->nhosts; i++)
        if (w->hosts[i])
            host_release(w, w->hosts[i]);
    free(w->hosts);
    free(w->by_ip);
    free(w->loop_tab);
    sim_queue_free(&w->q);
    free(w->rscratch);
    tm2__engine_free_scratch(&w->scratch);
    free(w);
}

sim_host *sim_host_get(tm2__simnet *w, uint32_t index)
{
    return index < w->nhosts ? w->hosts[index] : NULL;
}

tm2__engine *tm2__simnet_host_new(tm2__simnet *w, const tm2_netaddr *addr)
{
    uint32_t ip;
    if (!sim_ip4_of(addr, &ip))
        return NULL;
    bool sim = ip >> 17 == SIM_NET_BASE >> 17, loop = ip >> 24 == 127;
    if (!sim && !loop)
        return NULL;
    if (sim) {
        if (!w->by_ip) {
            if (!(w->by_ip = calloc(SIM_NET_SIZE, sizeof *w->by_ip)))
                return NULL;
            w->mem += SIM_NET_SIZE * sizeof *w->by_ip;
        }
        if (w->by_ip[ip - SIM_NET_BASE])
            return NULL;
    } else if (loop_find(w, ip) || loop_reserve(w) < 0) {
        return NULL;
    }
    if (w->nhosts == w->cap_hosts) {
        uint32_t cap = w->cap_hosts ? 2 * w->cap_hosts : 64;
        sim_host **a = realloc(w->hosts, (size_t)cap * sizeof *a);
        if (!a)
            return NULL;
        w->mem += (size_t)(cap - w->cap_hosts) * sizeof *a;
        w->hosts = a;
        w->cap_hosts = cap;
    }
    sim_host *h = sim_calloc(w, sizeof *h);
    if (!h)
        return NULL;
    h->w = w;
    h->index = w->nhosts;
    h->ip = ip;
    h->next_port = 32768;
    h->rpos = sizeof h->rbuf;
    ev_init(&h->defer_ev);
    /* The host's key: BLAKE2b of (seed, index), so adding a host never
     * changes another's bytes. */
    uint8_t in[16];
    for (int i = 0; i < 8; i++)
        in[i] = (uint8_t)(w->cfg.seed >> (8 * i));
    for (int i = 0; i < 8; i++)
        in[8 + i] = (uint8_t)((uint64_t)h->index >> (8 * i));
    crypto_generichash(h->rkey, sizeof h->rkey, in, sizeof in, (const uint8_t *)"tm2-simnet-host", 15);
    h->eng.ops = &sim_ops;
    h->eng.data = h;
    for (int i = 0; i < TM2__SCRATCH_N; i++)
        h->eng.scratch[i] = w->scratch.scratch[i];
    w->hosts[w->nhosts++] = h;
    w->live_hosts++;
    if (sim) {
        w->by_ip[ip - SIM_NET_BASE] = h->index + 1;
    } else {
        struct sim_loop_slot *sl = loop_slot(w, ip);
        w->loop_used += sl->ip == 0;
        *sl = (struct sim_loop_slot){.ip = ip, .host1 = h->index + 1};
    }
    return &h->eng;
}

/* The host a connect to ip reaches from host `from`: the host on that
 * address; any other loopback address is the dialler itself. */
sim_host *sim_host_by_ip(tm2__simnet *w, sim_host *from, uint32_t ip)
{
    if (ip == from->ip)
        return from;
    if (ip >> 24 == 127) {
        sim_host *h = loop_find(w, ip);
        return h ? h : from;
    }
    if (ip >> 17 != SIM_NET_BASE >> 17 || !w->by_ip || !w->by_ip[ip - SIM_NET_BASE])
        return NULL;
    return w->hosts[w->by_ip[ip - SIM_NET_BASE] - 1];
}

void tm2__simnet_host_crash(tm2__engine *e)
{
    sim_host *h = sim_host_of(e);
    if (h->crashed)
        return;
    h->crashed = true;
    sim_link_crash(h->w, h);
}

int tm2__simnet_host_revive(tm2__engine *e)
{
    sim_host *h = sim_host_of(e);
    if (!h->crashed || h->handles || h->socks || h->listeners)
        return TM2_ESTATE;
    h->crashed = false;
    return 0;
}

void tm2__simnet_host_free(tm2__engine *e)
{
    if (!e)
        return;
    sim_host *h = sim_host_of(e);
    drop_tasks(h);
    host_release(h->w, h);
}

tm2__simnet *tm2__simnet_world(tm2__engine *e)
{
    return sim_host_of(e)->w;
}

uint32_t tm2__simnet_host_index(tm2__engine *e)
{
    return sim_host_of(e)->index;
}

void tm2__simnet_set_group(tm2__simnet *w, tm2__engine *e, int group)
{
    (void)w;
    sim_host_of(e)->group = group;
}

void tm2__simnet_cut(tm2__simnet *w, bool on)
{
    if (w->cut == on)
        return;
    w->cut = on;
    if (!on)
        sim_link_heal(w);
}

/* ---- running ---------------------------------------------------------------------------- */

static void run_timer(tm2__simnet *w, sim_ev *ev)
{
    sim_timer *st = (sim_timer *)(void *)ev;
    tm2__timer *t = OWNER_OF(st, tm2__timer);
    w->cur_a = st->ev.ordinal;
    t->due = 0;
    t->cb(t);
}

static void run_defer(tm2__simnet *w, sim_ev *ev)
{
    sim_host *h = (sim_host *)(void *)((unsigned char *)ev - offsetof(sim_host, defer_ev));
    tm2__task *k = h->task_head;
    if (!k)
        return;
    h->task_head = k->next;
    if (!h->task_head)
        h->task_tail = NULL;
    else
        sim_at(w, &h->defer_ev, w->now, h->index, EV_DEFER);
    k->next = NULL;
    k->queued = false;
    k->fn(k);
}

static void run_waker(tm2__simnet *w, sim_ev *ev, bool close)
{
    (void)w;
    tm2__waker *wk = OWNER_OF(ev, tm2__waker);
    sim_host *h = sim_host_of(wk->e);
    if (close) {
        h->handles--;
        if (wk->on_close)
            wk->on_close(wk);
    } else {
        wk->cb(wk);
    }
}

static void run_work(tm2__simnet *w, sim_ev *ev)
{
    sim_work *sw = (sim_work *)(void *)ev;
    tm2__work *wk = OWNER_OF(sw, tm2__work);
    w->cur_a = sw->ordinal;
    bool cancelled = sw->cancelled;
    w->cur_b = cancelled;
    if (!cancelled && wk->run)
        wk->run(wk);
    if (wk->done)
        wk->done(wk, cancelled);
}

bool tm2__simnet_step(tm2__simnet *w)
{
    sim_ev *ev = sim_queue_pop(&w->q);
    if (!ev)
        return false;
    if (ev->due > w->now)
        w->now = ev->due;
    w->events++;
    w->cur_a = w->cur_b = 0;
    uint64_t now = w->now;
    uint32_t host = ev->host;
    uint8_t kind = ev->kind;
    switch (kind) {
    case EV_TIMER: run_timer(w, ev); break;
    case EV_DEFER: run_defer(w, ev); break;
    case EV_WAKER: run_waker(w, ev, false); break;
    case EV_WAKER_CLOSE: run_waker(w, ev, true); break;
    case EV_WORK: run_work(w, ev); break;
    default: sim_link_dispatch(w, ev); break;
    }
    /* Only scalars copied before the handler ran, or set by it before its
     * callback: the event's record may be gone by now. */
    uint8_t rec[8 + 4 + 1 + 8 + 8];
    for (int i = 0; i < 8; i++)
        rec[i] = (uint8_t)(now >> (8 * i));
    for (int i = 0; i < 4; i++)
        rec[8 + i] = (uint8_t)(host >> (8 * i));
    rec[12] = kind;
    for (int i = 0; i < 8; i++) {
        rec[13 + i] = (uint8_t)(w->cur_a >> (8 * i));
        rec[21 + i] = (uint8_t)(w->cur_b >> (8 * i));
    }
    crypto_generichash_update(&w->trace, rec, sizeof rec);
    if (w->hook)
        w->hook(w->hook_user, w);
    return true;
}

void tm2__simnet_run_until(tm2__simnet *w, uint64_t t_ms)
{
    for (;;) {
        uint64_t due;
        if (!sim_queue_next_due(&w->q, &due) || due > t_ms)
            break;
        tm2__simnet_step(w);
    }
    if (w->now < t_ms)
        w->now = t_ms;
}

uint64_t tm2__simnet_now(const tm2__simnet *w)
{
    return w->now;
}

uint64_t tm2__simnet_events(const tm2__simnet *w)
{
    return w->events;
}

void tm2__simnet_set_hook(tm2__simnet *w, void (*fn)(void *user, tm2__simnet *w), void *user)
{
    w->hook = fn;
    w->hook_user = user;
}

void tm2__simnet_digest(const tm2__simnet *w, uint8_t out[32])
{
    crypto_generichash_state st = w->trace;
    crypto_generichash_final(&st, out, 32);
}

void tm2__simnet_stats_get(const tm2__simnet *w, tm2__simnet_stats *out)
{
    memset(out, 0, sizeof *out);
    out->events = w->events;
    out->bytes_delivered = w->bytes_delivered;
    out->segments_delivered = w->segments_delivered;
    out->conns_opened = w->conns_opened;
    out->conns_live = w->conns_live;
    out->hosts_live = w->live_hosts;
    out->mem_bytes = w->mem + sim_queue_mem(&w->q);
}
