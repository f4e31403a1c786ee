/* Simulated TCP: listeners, connections and the byte streams between
 * hosts (latency, loss as late delivery, bandwidth, partitions, resets).
 *
 * Every callback is the last thing its event handler does, so a callback
 * that closes its socket (or anything else) never leaves the handler
 * touching a record that changed under it. A connection is freed only
 * when both of its ends are finished, from a close callback's event or a
 * call that cannot be running inside one of its own handlers. */
#include <string.h>

#include "sim/sim_internal.h"
#include "tm2p2p/error.h"

typedef struct sim_sock {
    sim_ev ev;               /* EV_SOCK_CLOSE */
    sim_conn *c;
    uint8_t side;
    bool init;
    bool closing;
} sim_sock;

_Static_assert(sizeof(sim_sock) <= TM2__ENGINE_SLOT_SOCK, "sock slot");
_Static_assert(sizeof(sim_listener) <= TM2__ENGINE_SLOT_SOCK, "listener slot");

#define SSOCK(s) ((sim_sock *)(void *)(s)->slot)
#define SLIST(l) ((sim_listener *)(void *)(l)->slot)
#define OWNER_OF(ev, type) ((type *)(void *)((unsigned char *)(ev) - offsetof(type, slot)))

static sim_conn *conn_of_side(sim_side *s)
{
    return (sim_conn *)(void *)((unsigned char *)(s - s->idx) - offsetof(sim_conn, side));
}

static sim_conn *conn_of_dir(sim_dir *d, unsigned i)
{
    return (sim_conn *)(void *)((unsigned char *)(d - i) - offsetof(sim_conn, dir));
}

static uint64_t max64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* One-way latency of the ordered pair (a, b); a host to itself is 0. */
static uint32_t latency(tm2__simnet *w, uint32_t a, uint32_t b)
{
    if (a == b)
        return 0;
    uint32_t span = w->cfg.latency_max_ms - w->cfg.latency_min_ms;
    uint64_t r = sim_mix(w->cfg.seed, 0x11a7, a, b);
    return w->cfg.latency_min_ms + (uint32_t)(r % ((uint64_t)span + 1));
}

static bool cut_between(tm2__simnet *w, uint32_t a, uint32_t b)
{
    if (!w->cut)
        return false;
    sim_host *ha = sim_host_get(w, a), *hb = sim_host_get(w, b);
    return ha && hb && ha->group != hb->group;
}

/* ---- hosts' lists ----------------------------------------------------------------- */

static void host_link(sim_host *h, sim_side *s)
{
    s->hprev = NULL;
    s->hnext = h->socks;
    if (h->socks)
        h->socks->hprev = s;
    h->socks = s;
}

static void host_unlink(tm2__simnet *w, sim_side *s)
{
    sim_host *h = sim_host_get(w, s->host);
    if (s->hprev)
        s->hprev->hnext = s->hnext;
    else if (h && h->socks == s)
        h->socks = s->hnext;
    if (s->hnext)
        s->hnext->hprev = s->hprev;
    s->hnext = s->hprev = NULL;
}

static void hold_add(tm2__simnet *w, sim_dir *d)
{
    if (d->held)
        return;
    d->held = true;
    d->hold_prev = NULL;
    d->hold_next = w->held;
    if (w->held)
        w->held->hold_prev = d;
    w->held = d;
}

static void hold_del(tm2__simnet *w, sim_dir *d)
{
    if (!d->held)
        return;
    if (d->hold_prev)
        d->hold_prev->hold_next = d->hold_next;
    else
        w->held = d->hold_next;
    if (d->hold_next)
        d->hold_next->hold_prev = d->hold_prev;
    d->hold_next = d->hold_prev = NULL;
    d->held = false;
}

/* ---- connections -------------------------------------------------------------------- */

static void ev_reset(sim_ev *ev, uint8_t sub)
{
    memset(ev, 0, sizeof *ev);
    ev->idx = SIM_NONE;
    ev->sub = sub;
}

static sim_conn *conn_new(tm2__simnet *w)
{
    sim_conn *c = sim_calloc(w, sizeof *c);
    if (!c)
        return NULL;
    ev_reset(&c->ctl, 0);
    for (uint8_t i = 0; i < 2; i++) {
        c->side[i].idx = i;
        c->side[i].host = SIM_NONE;
        ev_reset(&c->dir[i].rx, i);
        ev_reset(&c->dir[i].tx, i);
    }
    c->ordinal = w->next_conn++;
    c->wnext = w->conns;
    if (w->conns)
        w->conns->wprev = c;
    w->conns = c;
    w->conns_live++;
    return c;
}

static sim_seg *seg_alloc(tm2__simnet *w, size_t n)
{
    if (n > SIM_SEG_SMALL)
        return sim_alloc(w, sizeof(sim_seg) + n);
    sim_seg *s = w->spare_segs;
    if (!s)
        return sim_alloc(w, sizeof(sim_seg) + SIM_SEG_SMALL);
    w->spare_segs = s->next;
    w->n_spare_segs--;
    return s;
}

static void seg_free(tm2__simnet *w, sim_seg *s)
{
    if (s->len > SIM_SEG_SMALL) {
        sim_free(w, s, sizeof *s + s->len);
    } else if (w->n_spare_segs < SIM_SEG_SPARE_MAX) {
        s->next = w->spare_segs;
        w->spare_segs = s;
        w->n_spare_segs++;
    } else {
        sim_free(w, s, sizeof *s + SIM_SEG_SMALL);
    }
}

static void free_spare_segs(tm2__simnet *w)
{
    while (w->spare_segs) {
        sim_seg *s = w->spare_segs;
        w->spare_segs = s->next;
        sim_free(w, s, sizeof *s + SIM_SEG_SMALL);
    }
    w->n_spare_segs = 0;
}

static void conn_free(tm2__simnet *w, sim_conn *c)
{
    sim_cancel(w, &c->ctl);
    for (int i = 0; i < 2; i++) {
        sim_dir *d = &c->dir[i];
        sim_cancel(w, &d->rx);
        sim_cancel(w, &d->tx);
        hold_del(w, d);
        for (sim_seg *s = d->head, *n; s; s = n) {
            n = s->next;
            seg_free(w, s);
        }
    }
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        w->conns = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    w->conns_live--;
    sim_free(w, c, sizeof *c);
}

void sim_conn_free_all(tm2__simnet *w)
{
    while (w->conns)
        conn_free(w, w->conns);
    w->held = NULL;
    free_spare_segs(w);
}

static bool side_done(const sim_side *s)
{
    return s->state == S_NONE || (s->state == S_CLOSED && !s->sock);
}

static void conn_check(tm2__simnet *w, sim_conn *c)
{
    if (side_done(&c->side[0]) && side_done(&c->side[1]))
        conn_free(w, c);
}

/* ---- one direction's segments --------------------------------------------------------- */

/* Schedules the direction's next arrival (segment, FIN or RST). */
static void dir_sched(tm2__simnet *w, sim_conn *c, unsigned i)
{
    sim_dir *d = &c->dir[i];
    uint64_t t;
    if (d->pending)
        t = d->pending->arrive;
    else if (d->fin_at && !d->fin_in)
        t = d->fin_at;
    else if (d->rst_at && !d->rst_in)
        t = d->rst_at;
    else
        return;
    sim_at_min(w, &d->rx, t, c->side[1 - i].host, EV_RX);
}

static void dir_kick(tm2__simnet *w, sim_conn *c, unsigned i)
{
    sim_at_min(w, &c->dir[i].rx, w->now, c->side[1 - i].host, EV_RX);
}

/* Frees the arrived, unread segments. */
static void discard_ready(tm2__simnet *w, sim_dir *d)
{
    while (d->head && d->head != d->pending) {
        sim_seg *s = d->head;
        d->head = s->next;
        seg_free(w, s);
    }
    if (!d->head)
        d->tail = NULL;
    d->ready = 0;
}

/* Drops what the sender has not yet put on the link (a close drops its
 * queue). The unsent segments are a suffix of the list. */
static void drop_unsent(tm2__simnet *w, sim_dir *d)
{
    sim_cancel(w, &d->tx);
    if (!d->unsent)
        return;
    sim_seg *prev = NULL;
    for (sim_seg *s = d->head; s != d->unsent; s = s->next)
        prev = s;
    if (d->pending == d->unsent)
        d->pending = NULL;
    for (sim_seg *s = d->unsent, *n; s; s = n) {
        n = s->next;
        seg_free(w, s);
    }
    if (prev)
        prev->next = NULL;
    else
        d->head = NULL;
    d->tail = prev;
    d->unsent = NULL;
    d->unsent_bytes = 0;
}

/* Copies up to cap arrived bytes out, freeing what was read whole. */
static size_t copy_ready(tm2__simnet *w, sim_dir *d, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    while (n < cap && d->head && d->head != d->pending) {
        sim_seg *s = d->head;
        size_t k = s->len - s->off;
        if (k > cap - n)
            k = cap - n;
        memcpy(buf + n, s->data + s->off, k);
        n += k;
        s->off += (uint32_t)k;
        if (s->off == s->len) {
            d->head = s->next;
            seg_free(w, s);
        }
    }
    if (!d->head)
        d->tail = NULL;
    d->ready -= n;
    return n;
}

/* The ready bytes when one segment holds them all (the common case: a
 * frame written at once), unlinked: the reader gets them in place, without
 * the copy into the world's read buffer. The caller frees it after the
 * read callback. NULL otherwise. */
static sim_seg *take_lone(sim_dir *d)
{
    sim_seg *s = d->head;
    if (!s || s->next != d->pending || s->len - s->off != d->ready)
        return NULL;
    d->head = s->next;
    if (!d->head)
        d->tail = NULL;
    d->ready = 0;
    return s;
}

/* Extra delay of segment n of direction i: each loss costs a retransmission
 * timeout, doubling. Drawn from (seed, connection, direction, segment), so
 * one connection's draws do not depend on another's. */
static uint64_t loss_delay(tm2__simnet *w, sim_conn *c, unsigned i, uint32_t n, uint32_t lat)
{
    if (!w->loss_thr)
        return 0;
    uint64_t rto = max64(200, 2ull * lat), delay = 0;
    for (uint32_t k = 0; k < 8; k++) {
        uint64_t r = sim_mix(w->cfg.seed, c->ordinal, (uint64_t)i << 32 | k, n);
        if ((uint32_t)r >= w->loss_thr)
            break;
        delay += rto;
        rto *= 2;
    }
    return delay;
}

/* Resets direction i (side i's end went away abruptly): the far end sees
 * on_end(TM2_EIO) once what is already on the wire has arrived. */
static void send_rst(tm2__simnet *w, sim_conn *c, unsigned i)
{
    sim_dir *d = &c->dir[i];
    if (d->rst_at)
        return;
    drop_unsent(w, d);
    d->rst_at = max64(d->last_arrive, w->now + d->lat);
    if (!d->rst_at)
        d->rst_at = 1;
    dir_sched(w, c, i);
}

static void send_fin(tm2__simnet *w, sim_conn *c, unsigned i)
{
    sim_dir *d = &c->dir[i];
    if (d->fin_at || d->rst_at)
        return;
    d->fin_at = max64(d->last_arrive, w->now + d->lat);
    if (!d->fin_at)
        d->fin_at = 1;
    dir_sched(w, c, i);
}

/* ---- event handlers --------------------------------------------------------------------- */

static void run_rx(tm2__simnet *w, sim_conn *c, unsigned i)
{
    sim_dir *d = &c->dir[i];
    sim_side *s = &c->side[i], *r = &c->side[1 - i];
    uint64_t now = w->now;
    w->cur_a = c->ordinal;
    if (cut_between(w, s->host, r->host)) {
        if (d->pending || (d->fin_at && !d->fin_in) || (d->rst_at && !d->rst_in))
            hold_add(w, d);
    } else {
        while (d->pending && d->pending->arrive <= now) {
            d->ready += d->pending->len;
            d->pending = d->pending->next;
            w->segments_delivered++;
        }
        if (!d->pending) {
            if (d->fin_at && d->fin_at <= now)
                d->fin_in = true;
            if (d->rst_at && d->rst_at <= now)
                d->rst_in = true;
        }
        dir_sched(w, c, i);
    }

    if (r->state == S_CLOSED || r->dead) {
        /* Data reaching a closed socket is answered with a reset. */
        bool had = d->ready > 0;
        discard_ready(w, d);
        if (had && !r->dead && s->state == S_OPEN && !s->dead)
            send_rst(w, c, 1 - i);
        return;
    }
    if (r->state != S_OPEN || !r->connected)
        return;   /* not accepted or not connected yet: it waits */
    tm2__sock *rs = r->sock;
    if (r->ended) {
        discard_ready(w, d);
        return;
    }
    if (d->rst_in) {
        discard_ready(w, d);
        r->ended = true;
        r->reading = false;
        w->cur_b = 1;
        if (rs->cbs->on_end)
            rs->cbs->on_end(rs, TM2_EIO);
        return;
    }
    if (!r->reading)
        return;
    if (d->ready) {
        sim_seg *lone = take_lone(d);
        const uint8_t *data = lone ? lone->data + lone->off : w->rscratch;
        size_t n = lone ? lone->len - lone->off : copy_ready(w, d, w->rscratch, SIM_SEG_MAX);
        w->bytes_delivered += n;
        w->cur_b = n << 2;
        if (d->ready || d->fin_in)
            sim_at_min(w, &d->rx, now, r->host, EV_RX);
        if (rs->cbs->on_read)
            rs->cbs->on_read(rs, data, n);
        if (lone)
            seg_free(w, lone);
        return;
    }
    if (d->fin_in) {
        r->ended = true;
        r->reading = false;
        w->cur_b = 2;
        if (rs->cbs->on_end)
            rs->cbs->on_end(rs, TM2_ECLOSED);
    }
}

static void run_tx(tm2__simnet *w, sim_conn *c, unsigned i)
{
    sim_dir *d = &c->dir[i];
    sim_side *s = &c->side[i];
    w->cur_a = c->ordinal;
    while (d->unsent && d->unsent->depart <= w->now) {
        d->unsent_bytes -= d->unsent->len;
        d->unsent = d->unsent->next;
    }
    if (d->unsent)
        sim_at(w, &d->tx, d->unsent->depart, s->host, EV_TX);
    w->cur_b = d->unsent_bytes;
    if (s->state == S_OPEN && !s->dead && s->sock && s->sock->cbs->on_sent)
        s->sock->cbs->on_sent(s->sock);
}

static sim_listener *find_listener(sim_host *h, uint32_t ip, uint16_t port)
{
    for (sim_listener *l = h->listeners; l; l = l->next)
        if (l->port == port && (l->ip == 0 || l->ip == ip))
            return l;
    return NULL;
}

static void run_syn(tm2__simnet *w, sim_conn *c)
{
    sim_side *a = &c->side[0], *b = &c->side[1];
    w->cur_a = c->ordinal;
    if (a->state != S_OPEN || a->dead) {
        /* The dialler gave up or died before the SYN got there. */
        b->state = S_NONE;
        conn_check(w, c);
        return;
    }
    sim_host *ha = sim_host_get(w, a->host);
    sim_host *hb = ha ? sim_host_by_ip(w, ha, c->dst_ip) : NULL;
    if (!hb || cut_between(w, ha->index, hb->index))
        return;   /* nothing answers */
    c->dir[0].lat = latency(w, ha->index, hb->index);
    c->dir[1].lat = latency(w, hb->index, ha->index);
    b->host = hb->index;
    sim_listener *l = hb->crashed ? NULL : find_listener(hb, c->dst_ip, c->dst_port);
    if (!l) {
        w->cur_b = 1;
        b->state = S_CLOSED;
        sim_at(w, &c->ctl, w->now + c->dir[1].lat, a->host, EV_REFUSED);
        return;
    }
    if (l->nbacklog >= SIM_BACKLOG_MAX) {
        w->cur_b = 2;
        return;   /* a full SYN queue drops */
    }
    b->ip = c->dst_ip;
    b->port = c->dst_port;
    b->state = S_BACKLOG;
    b->connected = true;
    c->lst = l;
    c->bnext = NULL;
    if (l->btail)
        l->btail->bnext = c;
    else
        l->bhead = c;
    l->btail = c;
    l->nbacklog++;
    l->notify++;
    w->conns_opened++;
    if (!sim_queued(&l->ev))
        sim_at(w, &l->ev, w->now, hb->index, EV_LISTEN_CONN);
    /* Nothing the acceptor writes can overtake the SYN-ACK. */
    c->dir[1].last_arrive = w->now + c->dir[1].lat;
    sim_at(w, &c->ctl, c->dir[1].last_arrive, a->host, EV_SYNACK);
}

static void run_connected(tm2__simnet *w, sim_conn *c, bool refused)
{
    sim_side *a = &c->side[0];
    w->cur_a = c->ordinal;
    w->cur_b = refused;
    if (a->state != S_OPEN || a->dead)
        return;
    tm2__sock *s = a->sock;
    if (refused) {
        a->ended = true;
    } else {
        a->connected = true;
        dir_kick(w, c, 1);
    }
    if (s->cbs->on_connect)
        s->cbs->on_connect(s, refused ? TM2_ECONNREFUSED : 0);
}

static void run_listen_conn(tm2__simnet *w, sim_listener *l)
{
    w->cur_a = l->port;
    if (l->notify > l->nbacklog)
        l->notify = l->nbacklog;
    if (l->closing || l->h->crashed || !l->notify)
        return;
    l->notify--;
    if (l->notify)
        sim_at(w, &l->ev, w->now, l->h->index, EV_LISTEN_CONN);
    l->l->on_conn(l->l, 0);
}

static void run_listen_close(tm2__simnet *w, sim_listener *l)
{
    w->cur_a = l->port;
    tm2__listener *tl = l->l;
    l->h->handles--;
    if (tl->on_close)
        tl->on_close(tl);
}

static void run_sock_close(tm2__simnet *w, sim_sock *ss)
{
    tm2__sock *s = OWNER_OF(ss, tm2__sock);
    sim_host_of(s->e)->handles--;
    sim_conn *c = ss->c;
    if (c) {
        w->cur_a = c->ordinal;
        c->side[ss->side].sock = NULL;
        ss->c = NULL;
        conn_check(w, c);
    }
    ss->init = false;
    if (s->cbs && s->cbs->on_close)
        s->cbs->on_close(s);
}

void sim_link_dispatch(tm2__simnet *w, sim_ev *ev)
{
    switch (ev->kind) {
    case EV_RX:
        run_rx(w, conn_of_dir((sim_dir *)(void *)((unsigned char *)ev - offsetof(sim_dir, rx)), ev->sub),
               ev->sub);
        break;
    case EV_TX:
        run_tx(w, conn_of_dir((sim_dir *)(void *)((unsigned char *)ev - offsetof(sim_dir, tx)), ev->sub),
               ev->sub);
        break;
    case EV_SYN:
        run_syn(w, (sim_conn *)(void *)((unsigned char *)ev - offsetof(sim_conn, ctl)));
        break;
    case EV_SYNACK:
    case EV_REFUSED:
        run_connected(w, (sim_conn *)(void *)((unsigned char *)ev - offsetof(sim_conn, ctl)),
                      ev->kind == EV_REFUSED);
        break;
    case EV_LISTEN_CONN:
        run_listen_conn(w, (sim_listener *)(void *)((unsigned char *)ev - offsetof(sim_listener, ev)));
        break;
    case EV_LISTEN_CLOSE:
        run_listen_close(w, (sim_listener *)(void *)((unsigned char *)ev - offsetof(sim_listener, ev)));
        break;
    case EV_SOCK_CLOSE:
        run_sock_close(w, (sim_sock *)(void *)ev);
        break;
    default:
        break;
    }
}

/* ---- crash, heal ------------------------------------------------------------------------- */

/* A connection waiting in a backlog whose listener went away: reset. */
static void backlog_reset(tm2__simnet *w, sim_conn *c)
{
    c->lst = NULL;
    c->side[1].state = S_CLOSED;
    if (c->side[0].state == S_OPEN && !c->side[0].dead)
        send_rst(w, c, 1);
    conn_check(w, c);
}

static void backlog_drop_all(tm2__simnet *w, sim_listener *l)
{
    sim_conn *c = l->bhead;
    l->bhead = l->btail = NULL;
    l->nbacklog = l->notify = 0;
    while (c) {
        sim_conn *n = c->bnext;
        backlog_reset(w, c);
        c = n;
    }
}

void sim_link_crash(tm2__simnet *w, sim_host *h)
{
    for (sim_side *s = h->socks; s; s = s->hnext) {
        sim_conn *c = conn_of_side(s);
        unsigned i = s->idx;
        s->dead = true;
        s->reading = false;
        sim_side *p = &c->side[1 - i];
        if (p->state == S_OPEN || p->state == S_BACKLOG)
            send_rst(w, c, i);
        else
            drop_unsent(w, &c->dir[i]);
        discard_ready(w, &c->dir[1 - i]);
    }
    for (sim_listener *l = h->listeners; l; l = l->next) {
        sim_cancel(w, &l->ev);
        backlog_drop_all(w, l);
    }
}

/* After a cut: what was held arrives one latency from now, in order. */
void sim_link_heal(tm2__simnet *w)
{
    while (w->held) {
        sim_dir *d = w->held;
        unsigned i = d->rx.sub;
        sim_conn *c = conn_of_dir(d, i);
        hold_del(w, d);
        uint64_t t = w->now + d->lat;
        for (sim_seg *s = d->pending; s; s = s->next)
            s->arrive = max64(s->arrive, t);
        if (d->fin_at && !d->fin_in)
            d->fin_at = max64(d->fin_at, t);
        if (d->rst_at && !d->rst_in)
            d->rst_at = max64(d->rst_at, t);
        d->last_arrive = max64(d->last_arrive, t);
        dir_sched(w, c, i);
    }
}

/* ---- engine calls: listeners ------------------------------------------------------------- */

static void ip4_set(tm2_netaddr *a, uint32_t ip, uint16_t port)
{
    memset(a, 0, sizeof *a);
    a->ip[10] = a->ip[11] = 0xff;
    a->ip[12] = (uint8_t)(ip >> 24);
    a->ip[13] = (uint8_t)(ip >> 16);
    a->ip[14] = (uint8_t)(ip >> 8);
    a->ip[15] = (uint8_t)ip;
    a->port = port;
}

static uint16_t ephemeral(sim_host *h)
{
    uint16_t p = h->next_port;
    h->next_port = p >= 60999 ? 32768 : (uint16_t)(p + 1);
    return p;
}

static bool port_taken(sim_host *h, uint32_t ip, uint16_t port)
{
    for (sim_listener *l = h->listeners; l; l = l->next)
        if (l->port == port && (l->ip == 0 || ip == 0 || l->ip == ip))
            return true;
    return false;
}

int sim_listen(tm2__engine *e, tm2__listener *tl, const tm2_netaddr *addr, tm2_netaddr *bound)
{
    sim_host *h = sim_host_of(e);
    uint32_t ip = 0;
    if (h->crashed)
        return TM2_EIO;
    if (!tm2_netaddr_is_unspecified(addr)) {
        if (!sim_ip4_of(addr, &ip) || (ip != h->ip && ip >> 24 != 127))
            return TM2_EIO;   /* not an address of this host */
    }
    uint16_t port = addr->port;
    if (port == 0) {
        for (uint32_t tries = 0; port == 0 || port_taken(h, ip, port); tries++) {
            if (tries > 28232)
                return TM2_EIO;
            port = ephemeral(h);
        }
    } else if (port_taken(h, ip, port)) {
        return TM2_EIO;
    }
    sim_listener *l = SLIST(tl);
    memset(l, 0, sizeof *l);
    l->l = tl;
    l->h = h;
    l->ip = ip;
    l->port = port;
    ev_reset(&l->ev, 0);
    l->next = h->listeners;
    h->listeners = l;
    h->handles++;
    if (bound) {
        *bound = *addr;
        memset(&bound->id, 0, sizeof bound->id);
        bound->port = port;
    }
    return 0;
}

int sim_accept(tm2__listener *tl, tm2__sock *s, const tm2__sock_cbs *cbs, tm2_netaddr *remote)
{
    (void)cbs;
    sim_listener *l = SLIST(tl);
    sim_host *h = l->h;
    if (l->closing || h->crashed)
        return TM2_EIO;
    sim_conn *c = l->bhead;
    if (!c)
        return TM2_EAGAIN;
    l->bhead = c->bnext;
    if (!l->bhead)
        l->btail = NULL;
    l->nbacklog--;
    c->lst = NULL;
    c->bnext = NULL;
    sim_side *b = &c->side[1];
    b->sock = s;
    b->state = S_OPEN;
    b->reading = false;
    host_link(h, b);
    sim_sock *ss = SSOCK(s);
    ev_reset(&ss->ev, 0);
    ss->c = c;
    ss->side = 1;
    ss->init = true;
    ss->closing = false;
    h->handles++;
    if (remote)
        ip4_set(remote, c->side[0].ip, c->side[0].port);
    /* An end or reset that came while it waited is due now. */
    dir_kick(h->w, c, 0);
    return 0;
}

void sim_listener_close(tm2__listener *tl)
{
    sim_listener *l = SLIST(tl);
    sim_host *h = l->h;
    if (l->closing)
        return;
    l->closing = true;
    for (sim_listener **p = &h->listeners; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    backlog_drop_all(h->w, l);
    sim_at(h->w, &l->ev, h->w->now, h->index, EV_LISTEN_CLOSE);
}

/* ---- engine calls: sockets ---------------------------------------------------------------- */

int sim_sock_init(tm2__engine *e, tm2__sock *s, const tm2__sock_cbs *cbs)
{
    (void)cbs;
    sim_host *h = sim_host_of(e);
    if (h->crashed)
        return TM2_EIO;
    sim_sock *ss = SSOCK(s);
    ev_reset(&ss->ev, 0);
    ss->c = NULL;
    ss->side = 0;
    ss->init = true;
    ss->closing = false;
    h->handles++;
    return 0;
}

int sim_connect(tm2__sock *s, const tm2_netaddr *to, const tm2_netaddr *from)
{
    sim_host *h = sim_host_of(s->e);
    tm2__simnet *w = h->w;
    sim_sock *ss = SSOCK(s);
    if (h->crashed || !ss->init || ss->closing || ss->c)
        return TM2_EIO;
    uint32_t dst = 0, src;
    if (!sim_ip4_of(to, &dst))
        dst = 0;   /* no IPv6 host exists: nothing will answer */
    /* Loopback to no other host's address is the host itself, from the
     * address dialled, as the kernel picks it. */
    bool loop = dst >> 24 == 127 && sim_host_by_ip(w, h, dst) == h;
    src = loop ? dst : h->ip;
    if (from && !tm2_netaddr_is_unspecified(from)) {
        uint32_t f;
        if (!sim_ip4_of(from, &f) || (f != h->ip && !(loop && f >> 24 == 127)))
            return TM2_EIO;
        src = f;
    }
    sim_conn *c = conn_new(w);
    if (!c)
        return TM2_EIO;
    sim_side *a = &c->side[0];
    a->sock = s;
    a->host = h->index;
    a->ip = src;
    a->port = ephemeral(h);
    a->state = S_OPEN;
    host_link(h, a);
    c->dst_ip = dst;
    c->dst_port = to->port;
    sim_host *t = sim_host_by_ip(w, h, dst);
    uint32_t lat = t ? latency(w, h->index, t->index) : w->cfg.latency_min_ms;
    sim_at(w, &c->ctl, w->now + lat, t ? t->index : SIM_NONE, EV_SYN);
    ss->c = c;
    ss->side = 0;
    return 0;
}

static sim_side *open_side(tm2__sock *s, sim_conn **cp)
{
    sim_sock *ss = SSOCK(s);
    sim_conn *c = ss->c;
    if (!c || ss->closing)
        return NULL;
    sim_side *sd = &c->side[ss->side];
    if (sd->state != S_OPEN || sd->dead)
        return NULL;
    *cp = c;
    return sd;
}

int sim_read(tm2__sock *s, bool on)
{
    sim_conn *c;
    sim_side *sd = open_side(s, &c);
    if (!sd || (on && sd->ended))
        return TM2_EIO;
    sd->reading = on;
    if (on)
        dir_kick(sim_host_of(s->e)->w, c, 1u - sd->idx);
    return 0;
}

int sim_write(tm2__sock *s, const uint8_t *data, size_t len)
{
    sim_conn *c;
    sim_side *sd = open_side(s, &c);
    if (!sd || !sd->connected || c->dir[1 - sd->idx].rst_in)
        return TM2_EIO;
    if (len == 0)
        return 0;
    tm2__simnet *w = sim_host_of(s->e)->w;
    unsigned i = sd->idx;
    sim_dir *d = &c->dir[i];
    /* All or nothing: allocate every segment before linking any. */
    sim_seg *first = NULL, *last = NULL;
    for (size_t off = 0; off < len;) {
        size_t n = len - off > SIM_SEG_MAX ? SIM_SEG_MAX : len - off;
        sim_seg *g = seg_alloc(w, n);
        if (!g) {
            for (sim_seg *x = first, *y; x; x = y) {
                y = x->next;
                seg_free(w, x);
            }
            return TM2_ENOMEM;
        }
        memcpy(g->data, data + off, n);
        g->len = (uint32_t)n;
        g->off = 0;
        g->next = NULL;
        if (last)
            last->next = g;
        else
            first = g;
        last = g;
        off += n;
    }
    uint64_t now = w->now, bw = w->cfg.bandwidth;
    for (sim_seg *g = first; g; g = g->next) {
        uint64_t depart = now;
        if (bw) {
            /* Serialization at the link's rate, FIFO, in microseconds so
             * small segments add up right. */
            uint64_t start = max64(now * 1000, d->tx_free_us);
            d->tx_free_us = start + ((uint64_t)g->len * 1000000 + bw - 1) / bw;
            depart = (d->tx_free_us + 999) / 1000;
        }
        g->depart = depart;
        g->arrive = max64(d->last_arrive, depart + d->lat + loss_delay(w, c, i, d->nseg++, d->lat));
        d->last_arrive = g->arrive;
        if (!d->pending)
            d->pending = g;
        if (depart > now) {
            if (!d->unsent)
                d->unsent = g;
            d->unsent_bytes += g->len;
        }
    }
    if (d->tail)
        d->tail->next = first;
    else
        d->head = first;
    d->tail = last;
    if (d->unsent)
        sim_at_min(w, &d->tx, d->unsent->depart, sd->host, EV_TX);
    dir_sched(w, c, i);
    return 0;
}

size_t sim_queued_bytes(const tm2__sock *s)
{
    const sim_sock *ss = (const sim_sock *)(const void *)s->slot;
    if (!ss->c || ss->closing)
        return 0;
    return (size_t)ss->c->dir[ss->side].unsent_bytes;
}

void sim_sock_close(tm2__sock *s)
{
    sim_host *h = sim_host_of(s->e);
    tm2__simnet *w = h->w;
    sim_sock *ss = SSOCK(s);
    if (!ss->init || ss->closing)
        return;
    ss->closing = true;
    sim_conn *c = ss->c;
    if (c) {
        unsigned i = ss->side;
        sim_side *sd = &c->side[i], *p = &c->side[1 - i];
        if (sd->state == S_OPEN) {
            sd->state = S_CLOSED;
            sd->reading = false;
            host_unlink(w, sd);
            if (!sd->dead) {
                drop_unsent(w, &c->dir[i]);
                if (p->state == S_BACKLOG || p->state == S_OPEN)
                    send_fin(w, c, i);
            }
            discard_ready(w, &c->dir[1 - i]);
        }
    }
    sim_at(w, &ss->ev, w->now, h->index, EV_SOCK_CLOSE);
}
