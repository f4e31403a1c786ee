#include "net/transport.h"
#include "net/addr_set.h"

#include "common/log.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#define DEFAULT_TIMEOUT_MS          3000u
#define DEFAULT_MAX_PENDING_INBOUND 64u
#define WHY_LEN                     256
#define RX_INITIAL                  512u
/* Plaintext kept after the NodeInfo. Once the NodeInfo is complete the
 * stream is paused, and a pause still lets the rest of the current socket
 * read through (at most one socket read of wire bytes, 64 KiB on libuv):
 * anything beyond twice that is a bug, not traffic. */
#define LEFTOVER_MAX (2u * 64u * 1024u)
/* Events a flood can repeat (drops over the cap, accept errors) are logged
 * at most this often, with a count of what was not logged. */
#define FLOOD_LOG_INTERVAL_MS 1000u

enum hs_phase {
    HS_CONNECT = 1,   /* dial: TCP connect in flight */
    HS_SECRET,        /* secret connection handshake */
    HS_NODEINFO,      /* ours sent, theirs being read */
    HS_HANDOVER,      /* checked; handed over on the next loop turn */
    HS_DONE,          /* handed over */
    HS_FAILED,        /* rejected or aborted; closing */
};

enum listener_state { LST_NONE = 0, LST_OPEN, LST_CLOSING };

typedef struct tcpt tcpt;

typedef struct ratelimit {
    bool started;
    uint64_t last_ms;
    uint64_t unlogged;          /* events since the last line, this one included */
} ratelimit;

/* One upgrade in flight. Separate from the conn so that the conn handed
 * over carries nothing of the upgrade. Until the handover, both the
 * stream's data and the mcs's data point here. */
typedef struct hs {
    tcpt *t;
    tm2__transport_conn *c;
    struct hs *prev, *next;     /* t->pending */
    tm2__timer timer;           /* connect deadline, NodeInfo deadline */
    tm2__task handover;         /* the handover turn */
    int phase;
    bool outbound;
    bool authed;                /* secret connection up: c->id is known */
    bool keyed;                 /* c->socket_addr's ip:port is in t->keys (in flight) */
    bool handed_over;
    bool conn_closed;           /* the mcs reported on_close */
    uint8_t *rx;                /* NodeInfo bytes, then what followed them */
    size_t rx_len, rx_cap;
    size_t ni_len;              /* length of the sized NodeInfo at the front of rx */
} hs;

typedef tm2__addr_key addr_key;

struct tcpt {
    tm2__transport base;
    tm2__mcs_loop *ml;
    tm2__engine *e;
    tm2_node_key key;
    tm2_id self_id;
    tm2_node_info *ni;          /* ours, owned */
    uint8_t *ni_bytes;          /* ours, sized, as sent */
    size_t ni_bytes_len;
    uint32_t hs_timeout_ms, dial_timeout_ms, max_pending_in;
    bool has_dial_source;
    tm2_netaddr dial_source;
    tm2__sc_stream_config scfg;
    tm2__mcs_cbs conn_cbs;
    tm2_log_fn log;
    void *log_user;
    tm2_log_level log_level;

    tm2__listener listener;
    int lstate;
    tm2_netaddr laddr;
    tm2__task anchor;           /* open until the turn after close: completion is
                                 * never synchronous */
    tm2__sock spare;            /* drops an over-cap socket when malloc fails */
    bool spare_busy;
    bool accept_stalled;        /* a socket waits for the spare to be dropped */

    hs *pending;
    /* Written on the loop, read by t_stats from any thread. */
    atomic_size_t pending_in, pending_out, active;
    tm2__addr_set keys;         /* the duplicate set: one entry per ip:port */

    struct {
        atomic_uint_fast64_t accepted, dropped, upgraded, rejected, refused;
    } st;
    ratelimit drop_log, accept_err_log;

    int open;                   /* anchor, listener, spare, live hs records */
    bool closing;
    void (*on_closed)(tm2__transport *t);
};

static const tm2__transport_ops tcp_ops;

/* ---- logging ------------------------------------------------------------------ */

static bool log_on(const tcpt *t, tm2_log_level lv) { return t->log && lv <= t->log_level; }

static void tlog(tcpt *t, tm2_log_level lv, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void tlog(tcpt *t, tm2_log_level lv, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm2__vlog(t->log, t->log_user, t->log_level, lv, msg, fmt, ap);
    va_end(ap);
}


/* Counts one event; true when it should be logged now (rl->unlogged then
 * says how many it stands for; reset it after logging). */
static bool rl_tick(const tcpt *t, ratelimit *rl)
{
    uint64_t now = tm2__engine_now_ms(t->e);
    rl->unlogged++;
    if (rl->started && now - rl->last_ms < FLOOD_LOG_INTERVAL_MS)
        return false;
    rl->started = true;
    rl->last_ms = now;
    return true;
}

static const char *addr_str(const tm2_netaddr *a, char *buf, size_t cap)
{
    if (tm2_netaddr_format(a, buf, cap) < 0)
        snprintf(buf, cap, "?");
    return buf;
}

static const char *stage_name(int stage)
{
    switch (stage) {
    case TM2__TSTAGE_CONNECT:  return "connect";
    case TM2__TSTAGE_ACCEPT:   return "accept";
    case TM2__TSTAGE_SECRET:   return "secret";
    case TM2__TSTAGE_NODEINFO: return "nodeinfo";
    case TM2__TSTAGE_CHECK:    return "check";
    default:                   return "?";
    }
}

/* ---- duplicate set ------------------------------------------------------------ *
 * The upgrades in flight and the connections handed over, one per ip:port
 * (net/addr_set.h: hashed, so a hub of many peers pays O(1) per connection). */

static addr_key *key_find(tcpt *t, const tm2_netaddr *a)
{
    return tm2__addr_set_find(&t->keys, a->ip, a->port);
}

static int key_add(tcpt *t, const tm2_netaddr *a)
{
    return tm2__addr_set_add(&t->keys, a->ip, a->port);
}

static void key_del(tcpt *t, addr_key *k)
{
    tm2__addr_set_del(&t->keys, k);
}

/* ---- teardown ----------------------------------------------------------------- */

static void maybe_finish(tcpt *t)
{
    if (!t->closing || t->open > 0)
        return;
    if (t->on_closed)
        t->on_closed(&t->base);
    tm2_node_info_free(t->ni);
    free(t->ni_bytes);
    tm2__addr_set_free(&t->keys);
    tm2_node_key_wipe(&t->key);
    free(t);
}

tm2__transport_conn *tm2__transport_conn_of(tm2__mcs *m)
{
    return (tm2__transport_conn *)(void *)((char *)m - offsetof(tm2__transport_conn, mcs));
}

void tm2__transport_conn_free(tm2__transport_conn *c)
{
    if (!c)
        return;
    tm2__mcs_destroy(&c->mcs);
    tm2_node_info_free(c->node_info);
    free(c->leftover);
    free(c);
}

static tm2__sc_stream *stream_of(tm2__transport_conn *c) { return tm2__mcs_stream(&c->mcs); }

static void hs_maybe_free(hs *h)
{
    if (!h->handed_over && !h->conn_closed)
        return;
    tcpt *t = h->t;
    if (!h->handed_over)
        tm2__transport_conn_free(h->c);
    free(h->rx);
    free(h);
    t->open--;
    maybe_finish(t);
}

static void hs_unlink(hs *h)
{
    tcpt *t = h->t;
    if (h->prev)
        h->prev->next = h->next;
    else
        t->pending = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    if (h->outbound)
        t->pending_out--;
    else
        t->pending_in--;
}

/* Ends an upgrade in flight without a word to the owner. */
static void hs_abort(hs *h)
{
    if (h->phase == HS_FAILED || h->phase == HS_DONE)
        return;
    tcpt *t = h->t;
    h->phase = HS_FAILED;
    hs_unlink(h);
    if (h->keyed) {
        addr_key *k = key_find(t, &h->c->socket_addr);
        if (k && !k->active)
            key_del(t, k);
        h->keyed = false;
    }
    tm2__timer_close(&h->timer);
    tm2__undefer(t->e, &h->handover);
    tm2__mcs_close(&h->c->mcs);
}

static void hs_fail(hs *h, int stage, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Ends an upgrade in flight and reports it. Everything is closed before the
 * owner hears of it, so the callback may close the transport. */
static void hs_fail(hs *h, int stage, int err, const char *fmt, ...)
{
    if (h->phase == HS_FAILED || h->phase == HS_DONE)
        return;
    tcpt *t = h->t;
    char why[WHY_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);

    tm2_id auth = h->c->id;
    tm2__transport_reject r = {
        .addr = h->c->socket_addr,
        .auth_id = h->authed ? &auth : NULL,
        .outbound = h->outbound,
        .stage = stage,
        .err = err,
        .why = why,
        .dial_user = h->c->dial_user,
        .node_info = h->c->node_info,
    };
    hs_abort(h);
    t->st.rejected++;
    /* The owner's event is the record; this line is for tracing. */
    if (log_on(t, TM2_LOG_DEBUG)) {
        char a[TM2_NETADDR_STRLEN + 1];
        tlog(t, TM2_LOG_DEBUG, "connection rejected", "addr=%s outbound=%s stage=%s err=%s reason=%s",
             addr_str(&r.addr, a, sizeof a), r.outbound ? "true" : "false", stage_name(stage),
             tm2_strerror(err), why);
    }
    if (t->base.cbs.on_reject)
        t->base.cbs.on_reject(&t->base, &r);
}

/* ---- the upgrade -------------------------------------------------------------- */

static void s_on_connect(tm2__sc_stream *s, int err);
static void s_on_handshake(tm2__sc_stream *s, int err);
static void s_on_read(tm2__sc_stream *s, const uint8_t *data, size_t len);
static void s_on_error(tm2__sc_stream *s, int err);
static void c_on_close(tm2__mcs *m);

/* The mcs keeps its own stream on_close. */
static const tm2__sc_stream_cbs hs_stream_cbs = {
    .on_connect = s_on_connect,
    .on_handshake = s_on_handshake,
    .on_read = s_on_read,
    .on_error = s_on_error,
};

/* Before start the glue reports nothing but on_close. */
static const tm2__mcs_cbs hs_conn_cbs = {
    .on_close = c_on_close,
};

static void hs_timer_cb(tm2__timer *tm);
static void hs_handover_fn(tm2__task *k);

static hs *hs_new(tcpt *t, bool outbound)
{
    hs *h = calloc(1, sizeof *h);
    tm2__transport_conn *c = calloc(1, sizeof *c);
    if (!h || !c) {
        free(h);
        free(c);
        return NULL;
    }
    tm2__sc_stream_config sc = t->scfg;
    sc.handshake_timeout_ms = t->hs_timeout_ms;
    if (tm2__mcs_init(&c->mcs, t->ml, &sc, &hs_stream_cbs, &hs_conn_cbs) != 0) {
        free(h);
        free(c);
        return NULL;
    }
    c->mcs.data = h;
    stream_of(c)->data = h;
    c->outbound = outbound;
    h->t = t;
    h->c = c;
    h->outbound = outbound;
    tm2__timer_init(t->e, &h->timer, hs_timer_cb);
    h->timer.data = h;
    h->handover.fn = hs_handover_fn;
    h->handover.data = h;
    h->next = t->pending;
    if (t->pending)
        t->pending->prev = h;
    t->pending = h;
    if (outbound)
        t->pending_out++;
    else
        t->pending_in++;
    t->open++;
    return h;
}

static int rx_append(hs *h, const uint8_t *data, size_t len, size_t limit)
{
    if (len > limit - h->rx_len)
        return TM2_ETOOBIG;
    if (h->rx_len + len > h->rx_cap) {
        size_t cap = h->rx_cap ? h->rx_cap : RX_INITIAL;
        while (cap < h->rx_len + len)
            cap *= 2;
        uint8_t *b = realloc(h->rx, cap);
        if (!b)
            return TM2_ENOMEM;
        h->rx = b;
        h->rx_cap = cap;
    }
    memcpy(h->rx + h->rx_len, data, len);
    h->rx_len += len;
    return 0;
}

/* WIRE.md 5.4 and 5.5 in order, then ourselves. 0, or the rejection was
 * reported. */
static int hs_check(hs *h)
{
    tcpt *t = h->t;
    tm2__transport_conn *c = h->c;
    const tm2_node_info *ni = c->node_info;
    char why[WHY_LEN];
    int r = tm2_node_info_validate(ni, why, sizeof why);
    if (r) {
        hs_fail(h, TM2__TSTAGE_CHECK, r, "invalid node info: %s", why);
        return r;
    }
    if (strcmp(c->id.s, ni->net_address.id.s) != 0) {
        hs_fail(h, TM2__TSTAGE_CHECK, TM2_EIDMISMATCH,
                "connection ID does not match node info ID (expected %s got %s)", c->id.s,
                ni->net_address.id.s);
        return TM2_EIDMISMATCH;
    }
    r = tm2_node_info_compatible(t->ni, ni, why, sizeof why);
    if (r) {
        hs_fail(h, TM2__TSTAGE_CHECK, r, "incompatible node info: %s", why);
        return r;
    }
    if (h->outbound && strcmp(c->id.s, c->socket_addr.id.s) != 0) {
        hs_fail(h, TM2__TSTAGE_CHECK, TM2_EIDMISMATCH,
                "connection ID does not match dialed ID (expected %s got %s)",
                c->socket_addr.id.s, c->id.s);
        return TM2_EIDMISMATCH;
    }
    if (strcmp(c->id.s, t->self_id.s) == 0) {
        hs_fail(h, TM2__TSTAGE_CHECK, TM2_ESELF, "connection to ourselves (%s)", c->id.s);
        return TM2_ESELF;
    }
    return 0;
}

static void hs_handover(hs *h)
{
    tcpt *t = h->t;
    tm2__transport_conn *c = h->c;
    if (t->base.cbs.accept_filter) {
        char why[WHY_LEN] = "";
        int r = t->base.cbs.accept_filter(&t->base, c, why, sizeof why);
        if (h->phase != HS_HANDOVER)
            return;   /* the filter closed the transport */
        if (r) {
            if (r > 0)
                r = TM2_EREJECTED;
            why[sizeof why - 1] = '\0';
            hs_fail(h, TM2__TSTAGE_CHECK, r, "rejected by the switch: %s",
                    why[0] ? why : tm2_strerror(r));
            return;
        }
    }
    size_t n = h->rx_len - h->ni_len;
    if (n) {
        c->leftover = malloc(n);
        if (!c->leftover) {
            hs_fail(h, TM2__TSTAGE_CHECK, TM2_ENOMEM, "out of memory");
            return;
        }
        memcpy(c->leftover, h->rx + h->ni_len, n);
        c->leftover_len = n;
    }
    free(h->rx);
    h->rx = NULL;
    h->rx_len = h->rx_cap = 0;

    hs_unlink(h);
    addr_key *k = key_find(t, &c->socket_addr);
    if (k)
        k->active = true;
    h->keyed = false;
    t->active++;
    t->st.upgraded++;
    h->phase = HS_DONE;
    h->handed_over = true;
    /* Nothing may call back into h from here: the stream keeps only the
     * glue's on_close (tm2__mcs_start installs the rest), the mcs gets the
     * owner's callbacks. */
    stream_of(c)->data = NULL;
    c->mcs.pre_cbs = NULL;
    c->mcs.cbs = t->conn_cbs;
    c->mcs.data = NULL;
    tm2__timer_close(&h->timer);
    if (log_on(t, TM2_LOG_DEBUG)) {
        char a[TM2_NETADDR_STRLEN + 1];
        tlog(t, TM2_LOG_DEBUG, "connection upgraded", "peer=%s addr=%s outbound=%s", c->id.s,
             addr_str(&c->socket_addr, a, sizeof a), c->outbound ? "true" : "false");
    }
    /* h goes first: the owner may close the transport from on_conn, whose
     * completion still waits for the anchor's turn. */
    hs_maybe_free(h);
    t->base.cbs.on_conn(&t->base, c);
}

static void hs_handover_fn(tm2__task *k)
{
    hs *h = k->data;
    if (h->phase == HS_HANDOVER)
        hs_handover(h);
}

static void hs_timer_cb(tm2__timer *tm)
{
    hs *h = tm->data;
    switch (h->phase) {
    case HS_CONNECT:
        hs_fail(h, TM2__TSTAGE_CONNECT, TM2_ETIMEDOUT, "dial timed out after %" PRIu32 " ms",
                h->t->dial_timeout_ms);
        break;
    case HS_NODEINFO:
        hs_fail(h, TM2__TSTAGE_NODEINFO, TM2_ETIMEDOUT,
                "node info exchange timed out after %" PRIu32 " ms", h->t->hs_timeout_ms);
        break;
    default:
        break;
    }
}

static void s_on_handshake(tm2__sc_stream *s, int err)
{
    hs *h = s->data;
    tcpt *t = h->t;
    if (err) {
        hs_fail(h, TM2__TSTAGE_SECRET, err, "secret connection handshake failed: %s",
                tm2_strerror(err));
        return;
    }
    tm2__transport_conn *c = h->c;
    c->id = *tm2__sc_stream_remote_id(s);
    h->authed = true;
    if (!h->outbound)
        c->socket_addr.id = c->id;
    h->phase = HS_NODEINFO;
    int e = tm2__sc_stream_write(s, t->ni_bytes, t->ni_bytes_len);
    if (e) {
        hs_fail(h, TM2__TSTAGE_NODEINFO, e, "sending our node info failed: %s", tm2_strerror(e));
        return;
    }
    tm2__timer_start(&h->timer, tm2__engine_now_ms(t->e) + t->hs_timeout_ms);
}

static void s_on_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    hs *h = s->data;
    if (h->phase == HS_HANDOVER) {
        /* The rest of the read that completed the NodeInfo, after the pause. */
        int e = rx_append(h, data, len, h->ni_len + LEFTOVER_MAX);
        if (e)
            hs_fail(h, TM2__TSTAGE_NODEINFO, e, "too much data after the node info");
        return;
    }
    if (h->phase != HS_NODEINFO)
        return;
    /* Before completion rx holds less than one NodeInfo (the size prefix
     * bounds it), so this limit only ever cuts a read that could not fit. */
    int e = rx_append(h, data, len, (size_t)TM2_NODE_INFO_MAX_SIZE + LEFTOVER_MAX);
    if (e) {
        hs_fail(h, TM2__TSTAGE_NODEINFO, e, "reading node info: %s", tm2_strerror(e));
        return;
    }
    tm2_node_info *ni;
    size_t used;
    int r = tm2_node_info_decode(h->rx, h->rx_len, &ni, &used);
    if (r == TM2_EAGAIN)
        return;
    if (r == TM2_ETOOBIG) {
        hs_fail(h, TM2__TSTAGE_NODEINFO, r, "node info larger than %d bytes",
                TM2_NODE_INFO_MAX_SIZE);
        return;
    }
    if (r) {
        hs_fail(h, TM2__TSTAGE_NODEINFO, r, "decoding node info: %s", tm2_strerror(r));
        return;
    }
    h->c->node_info = ni;
    h->ni_len = used;
    if (hs_check(h))
        return;
    /* Hand over on a later turn, once this read is fully delivered: what
     * follows the NodeInfo is collected as leftover meanwhile. */
    tm2__timer_stop(&h->timer);
    h->phase = HS_HANDOVER;
    (void)tm2__sc_stream_pause(s, true);
    tm2__defer(h->t->e, &h->handover);
}

static void s_on_error(tm2__sc_stream *s, int err)
{
    hs *h = s->data;
    hs_fail(h, TM2__TSTAGE_NODEINFO, err, "connection failed during node info exchange: %s",
            tm2_strerror(err));
}

static void c_on_close(tm2__mcs *m)
{
    hs *h = m->data;
    h->conn_closed = true;
    hs_maybe_free(h);
}

/* ---- accept ------------------------------------------------------------------- */

static void drop_closed(tm2__sock *k) { free(k); }

static void drop_conn(tcpt *t);

static void spare_closed(tm2__sock *k)
{
    tcpt *t = k->data;
    t->spare_busy = false;
    t->open--;
    /* The listener accepts nothing more until the waiting socket is taken. */
    if (t->accept_stalled && !t->closing) {
        t->accept_stalled = false;
        drop_conn(t);
    }
    maybe_finish(t);
}

static const tm2__sock_cbs drop_cbs = {.on_close = drop_closed};
static const tm2__sock_cbs spare_cbs = {.on_close = spare_closed};

/* Over the cap: the socket must still be accepted (the listener stops
 * accepting until it is), then it is closed at once. */
static void drop_conn(tcpt *t)
{
    tm2__sock *k = malloc(sizeof *k);
    const tm2__sock_cbs *cbs = &drop_cbs;
    if (!k) {
        if (t->spare_busy) {
            /* Taken when the spare comes back (spare_closed), so the
             * listener does not stop for good. */
            tlog(t, TM2_LOG_ERROR, "out of memory dropping an inbound connection", "");
            t->accept_stalled = true;
            return;
        }
        k = &t->spare;
        cbs = &spare_cbs;
    }
    tm2_netaddr remote;
    if (tm2__listener_accept(&t->listener, k, cbs, &remote) != 0) {
        if (k != &t->spare)
            free(k);
        return;
    }
    k->data = t;
    if (k == &t->spare) {
        t->spare_busy = true;
        t->open++;
    }
    tm2__sock_close(k);
    t->st.dropped++;
    if (rl_tick(t, &t->drop_log)) {
        tlog(t, TM2_LOG_WARN,
             "inbound connection closed: too many handshakes in flight", "pending=%zu "
             "max_pending=%" PRIu32 " dropped=%" PRIu64 " dropped_total=%" PRIu64,
             (size_t)t->pending_in, t->max_pending_in, t->drop_log.unlogged,
             (uint64_t)t->st.dropped);
        t->drop_log.unlogged = 0;
    }
}

static void on_connection(tm2__listener *l, int err)
{
    tcpt *t = l->data;
    if (err) {
        /* Out of descriptors, typically: the engine sheds the socket. */
        if (rl_tick(t, &t->accept_err_log)) {
            tlog(t, TM2_LOG_WARN, "accept failed", "err=%s count=%" PRIu64,
                 tm2_strerror(err), t->accept_err_log.unlogged);
            t->accept_err_log.unlogged = 0;
        }
        return;
    }
    if (t->pending_in >= t->max_pending_in) {
        drop_conn(t);
        return;
    }
    hs *h = hs_new(t, false);
    if (!h) {
        tlog(t, TM2_LOG_ERROR, "out of memory accepting a connection", "");
        drop_conn(t);
        return;
    }
    tm2__transport_conn *c = h->c;
    h->phase = HS_SECRET;
    int r = tm2__sc_stream_accept(stream_of(c), l, &c->socket_addr);
    if (r) {
        hs_fail(h, TM2__TSTAGE_ACCEPT, r, "accept failed: %s", tm2_strerror(r));
        return;
    }
    if (c->socket_addr.port == 0) {
        t->st.accepted++;
        hs_fail(h, TM2__TSTAGE_ACCEPT, TM2_EIO, "remote address unknown");
        return;
    }
    if (t->base.cbs.admit) {
        size_t same = 0;
        for (const hs *o = t->pending; o; o = o->next)
            if (o != h && !o->outbound && memcmp(o->c->socket_addr.ip, c->socket_addr.ip, 16) == 0)
                same++;
        if (t->base.cbs.admit(&t->base, &c->socket_addr, same) != 0) {
            /* Closed before any handshake work, and not reported. */
            t->st.refused++;
            hs_abort(h);
            return;
        }
        if (h->phase != HS_SECRET)
            return;   /* the owner closed the transport */
    }
    t->st.accepted++;
    if (key_find(t, &c->socket_addr)) {
        char a[TM2_NETADDR_STRLEN + 1];
        hs_fail(h, TM2__TSTAGE_ACCEPT, TM2_EDUPLICATE, "duplicate connection from %s",
                addr_str(&c->socket_addr, a, sizeof a));
        return;
    }
    if ((r = key_add(t, &c->socket_addr))) {
        hs_fail(h, TM2__TSTAGE_ACCEPT, r, "out of memory");
        return;
    }
    h->keyed = true;
    if ((r = tm2__sc_stream_start(stream_of(c), &t->key, NULL)))
        hs_fail(h, TM2__TSTAGE_SECRET, r, "cannot start the handshake: %s", tm2_strerror(r));
}

/* ---- operations --------------------------------------------------------------- */

static void listener_closed(tm2__listener *l)
{
    tcpt *t = l->data;
    t->lstate = LST_NONE;
    t->open--;
    maybe_finish(t);
}

static int t_listen(tm2__transport *base, const char *addr)
{
    tcpt *t = (tcpt *)base;
    if (t->closing || t->lstate != LST_NONE)
        return TM2_ESTATE;
    if (!addr)
        return TM2_EINVAL;
    tm2_netaddr a;
    int r = tm2_netaddr_parse(addr, TM2_NETADDR_NO_ID, &a);
    if (r)
        return r;
    t->listener.on_conn = on_connection;
    t->listener.data = t;
    if ((r = tm2__listen(t->e, &t->listener, &a, &t->laddr)) != 0) {
        tlog(t, TM2_LOG_ERROR, "cannot listen", "addr=%s err=%s", addr, tm2_strerror(r));
        return TM2_EIO;
    }
    t->lstate = LST_OPEN;
    t->open++;
    t->laddr.id = t->self_id;
    if (log_on(t, TM2_LOG_INFO)) {
        char b[TM2_NETADDR_STRLEN + 1];
        tlog(t, TM2_LOG_INFO, "listening", "addr=%s", addr_str(&t->laddr, b, sizeof b));
    }
    return 0;
}

static int t_listen_addr(const tm2__transport *base, tm2_netaddr *out)
{
    const tcpt *t = (const tcpt *)base;
    if (t->lstate != LST_OPEN || t->closing)
        return TM2_ESTATE;
    *out = t->laddr;
    return 0;
}

static int t_set_node_info(tm2__transport *base, const tm2_node_info *ni)
{
    tcpt *t = (tcpt *)base;
    if (!ni)
        return TM2_EINVAL;
    char why[WHY_LEN];
    int r = tm2_node_info_validate(ni, why, sizeof why);
    if (r) {
        tlog(t, TM2_LOG_ERROR, "our node info is invalid", "reason=%s", why);
        return r;
    }
    if (strcmp(ni->net_address.id.s, t->self_id.s) != 0)
        return TM2_EINVAL;
    int n = tm2_node_info_encode(ni, NULL, 0);
    if (n < 0)
        return n;
    uint8_t *b = malloc((size_t)n);
    if (!b)
        return TM2_ENOMEM;
    if ((r = tm2_node_info_encode(ni, b, (size_t)n)) < 0) {
        free(b);
        return r;
    }
    /* Our own copy, decoded from what goes on the wire: checks compare the
     * peer against exactly what it received. */
    tm2_node_info *copy;
    size_t used;
    if ((r = tm2_node_info_decode(b, (size_t)n, &copy, &used))) {
        free(b);
        return r;
    }
    tm2_node_info_free(t->ni);
    free(t->ni_bytes);
    t->ni = copy;
    t->ni_bytes = b;
    t->ni_bytes_len = (size_t)n;
    return 0;
}

static void s_on_connect(tm2__sc_stream *s, int err)
{
    hs *h = s->data;
    if (h->phase != HS_CONNECT)
        return;
    if (err) {
        hs_fail(h, TM2__TSTAGE_CONNECT, err, "dial failed: %s", tm2_strerror(err));
        return;
    }
    tm2__timer_stop(&h->timer);
    h->phase = HS_SECRET;
    int r = tm2__sc_stream_start(stream_of(h->c), &h->t->key, NULL);
    if (r)
        hs_fail(h, TM2__TSTAGE_SECRET, r, "cannot start the handshake: %s", tm2_strerror(r));
}

static int t_dial(tm2__transport *base, const tm2_netaddr *addr, void *dial_user)
{
    tcpt *t = (tcpt *)base;
    if (t->closing)
        return TM2_ECLOSED;
    if (!addr || !addr->id.s[0] || tm2_id_validate(addr->id.s) != 0)
        return TM2_EINVAL;
    if (key_find(t, addr))
        return TM2_EDUPLICATE;
    struct sockaddr_storage ss;
    if (tm2_netaddr_to_sockaddr(addr, (struct sockaddr *)&ss, sizeof ss) != 0)
        return TM2_EINVAL;
    hs *h = hs_new(t, true);
    if (!h)
        return TM2_ENOMEM;
    tm2__transport_conn *c = h->c;
    c->socket_addr = *addr;
    c->dial_user = dial_user;
    h->phase = HS_CONNECT;
    int r = key_add(t, addr);
    if (r) {
        hs_abort(h);
        return r;
    }
    h->keyed = true;
    if ((r = tm2__sc_stream_connect(stream_of(c), addr,
                                    t->has_dial_source ? &t->dial_source : NULL)) != 0) {
        hs_abort(h);
        return r;
    }
    tm2__timer_start(&h->timer, tm2__engine_now_ms(t->e) + t->dial_timeout_ms);
    return 0;
}

static void t_remove(tm2__transport *base, const tm2_netaddr *socket_addr)
{
    tcpt *t = (tcpt *)base;
    if (!socket_addr)
        return;
    addr_key *k = key_find(t, socket_addr);
    if (k && k->active) {
        key_del(t, k);
        t->active--;
    }
}

static void t_stats(const tm2__transport *base, tm2__transport_stats *st)
{
    const tcpt *t = (const tcpt *)base;
    st->accepted = t->st.accepted;
    st->refused = t->st.refused;
    st->dropped = t->st.dropped;
    st->upgraded = t->st.upgraded;
    st->rejected = t->st.rejected;
    st->pending_inbound = t->pending_in;
    st->pending_outbound = t->pending_out;
    st->active = t->active;
}

static void anchor_fn(tm2__task *k)
{
    tcpt *t = k->data;
    t->open--;
    maybe_finish(t);
}

static void t_close(tm2__transport *base, void (*on_closed)(tm2__transport *t))
{
    tcpt *t = (tcpt *)base;
    if (t->closing)
        return;
    t->closing = true;
    t->on_closed = on_closed;
    if (t->lstate == LST_OPEN) {
        t->lstate = LST_CLOSING;
        tm2__listener_close(&t->listener, listener_closed);
    }
    while (t->pending)
        hs_abort(t->pending);
    tm2__defer(t->e, &t->anchor);
}

static const tm2__transport_ops tcp_ops = {
    .listen = t_listen,
    .listen_addr = t_listen_addr,
    .set_node_info = t_set_node_info,
    .dial = t_dial,
    .remove = t_remove,
    .stats = t_stats,
    .close = t_close,
};

int tm2__tcp_transport_new(tm2__mcs_loop *ml, const tm2__tcp_transport_config *cfg,
                           const tm2__transport_cbs *cbs, void *data, tm2__transport **out)
{
    if (!ml || !cfg || !cbs || !cbs->on_conn || !out || !cfg->node_info)
        return TM2_EINVAL;
    *out = NULL;
    int r = tm2_node_key_check(&cfg->key);
    if (r)
        return r;
    tcpt *t = calloc(1, sizeof *t);
    if (!t)
        return TM2_ENOMEM;
    uint8_t hkey[16];
    tm2__engine_random(ml->sc.e, hkey, sizeof hkey);
    if ((r = tm2__addr_set_init(&t->keys, hkey)) != 0) {
        free(t);
        return r;
    }
    t->base.ops = &tcp_ops;
    t->base.cbs = *cbs;
    t->base.data = data;
    t->ml = ml;
    t->e = ml->sc.e;
    t->key = cfg->key;
    tm2_node_key_id(&t->key, &t->self_id);
    t->hs_timeout_ms = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : DEFAULT_TIMEOUT_MS;
    t->dial_timeout_ms = cfg->dial_timeout_ms ? cfg->dial_timeout_ms : DEFAULT_TIMEOUT_MS;
    t->max_pending_in = cfg->max_pending_inbound ? cfg->max_pending_inbound
                                                 : DEFAULT_MAX_PENDING_INBOUND;
    t->scfg = cfg->stream;
    t->has_dial_source = cfg->has_dial_source;
    t->dial_source = cfg->dial_source;
    t->conn_cbs = cfg->conn_cbs;
    t->log = cfg->log;
    t->log_user = cfg->log_user;
    t->log_level = cfg->log_level;
    if ((r = t_set_node_info(&t->base, cfg->node_info))) {
        tm2_node_key_wipe(&t->key);
        free(t);
        return r;
    }
    t->anchor.fn = anchor_fn;
    t->anchor.data = t;
    t->open = 1;
    *out = &t->base;
    return 0;
}
