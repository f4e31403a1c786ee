#include "crawl/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "common/log.h"
#include "common/thread.h"
#include "conn/mconn.h"
#include "crawl/select.h"
#include "discovery/pex_msg.h"
#include "net/engine_uv.h"
#include "net/mconn_stream.h"
#include "net/transport.h"
#include "tm2p2p/channel.h"
#include "tm2p2p/node_info.h"

#define DEF_INFLIGHT      16u
#define DEF_PER_HOST      2u
#define DEF_TIMEOUT_MS    3000u
#define DEF_INTERVAL_MS   60000u
#define DEF_GONE_MS       (24ull * 3600 * 1000)
#define DEF_MAX_ADDRS     100000u
#define DEF_SERVE_MS      10000u
#define DEF_LINGER_MS     200u
#define DEF_SESSIONS      256u
#define MAX_VERSIONS      16
#define VERSION_TEXT_MAX  64
/* Least time between two probes of one address (or the round interval, if
 * shorter). */
#define REPROBE_GAP_MS    1000u
/* Largest discovery message accepted: 30 addresses of at most 100 bytes
 * and their framing fit in 4 KiB; more is refused by the connection. */
#define RECV_CAPACITY     (64u * 1024u)

enum ent_status {
    ST_NEW = 0,
    ST_REACHABLE,
    ST_UNREACHABLE,
    ST_GONE,
    ST_LIAR,
    ST_WRONG_ID,
    ST_INCOMPATIBLE,
    ST_INVALID,
    ST_REFUSED,
    ST_COUNT
};

static const char *const status_names[ST_COUNT] = {
    "new", "reachable", "unreachable", "gone", "liar", "wrong_id", "incompatible", "invalid",
    "refused",
};

const char *crawl_status_name(int status)
{
    return status >= 0 && status < ST_COUNT ? status_names[status] : "?";
}

static int status_of(const char *s)
{
    for (int i = 0; i < ST_COUNT; i++)
        if (!strcmp(s, status_names[i]))
            return i;
    return ST_NEW;
}

enum ent_source { SRC_SEED, SRC_PEX, SRC_SELF, SRC_INBOUND };
static const char *const source_names[] = {"seed", "pex", "self", "inbound"};

typedef struct host host;

typedef struct ent {
    tm2_netaddr a;
    char key[TM2_NETADDR_STRLEN + 1];
    uint8_t status;
    uint8_t source;
    bool allowed;
    bool queued, inflight;
    uint32_t round;              /* last round it was probed in */
    uint64_t last_start;         /* monotonic start of its last probe, 0 if none */
    int64_t first_seen, last_ok; /* Unix ms */
    uint32_t fails;
    struct ent *hnext;           /* hash chain */
    struct ent *qprev, *qnext;   /* probe queue */
} ent;

struct host {
    uint8_t ip[16];
    uint32_t inflight;
    uint64_t last_ms;            /* monotonic start of the last probe */
    bool used;
    host *hnext;
};

typedef struct crawl_engine crawl_engine;

/* One connection of ours: an outbound probe or an inbound seed session. */
typedef struct conn_rec {
    crawl_engine *e;
    bool probe;                  /* else: an inbound session */
    ent *ent;                    /* probe */
    host *host;                  /* probe */
    tm2__transport_conn *c;      /* once handed over */
    uv_timer_t timer;
    int open;                    /* timer + conn still to close */
    bool finished;               /* probe: outcome recorded */
    bool closing;
    bool answered;               /* session: one answer given */
    bool removed;                /* its ip:port left the transport's set */
    uint64_t start_ms;           /* monotonic */
    int64_t hs_wall;             /* Unix ms of the verified handshake */
    int64_t latency_ms;
    tm2_node_info *ni;           /* probe: the verified NodeInfo (owned) */
    struct conn_rec *prev, *next;
} conn_rec;

struct crawl_engine {
    crawl_config cfg;
    char *network;
    char *moniker;
    char *listen_addr;
    char *external_addr;
    tm2_netaddr *seeds;
    crawl_store *store;

    /* Our NodeInfo pieces. */
    tm2_version_info versions[MAX_VERSIONS];
    size_t n_versions;
    char vtext[MAX_VERSIONS][2][VERSION_TEXT_MAX + 1];
    uint8_t channels[1];
    tm2_id probe_id, serve_id;
    tm2_netaddr serve_addr;      /* advertised, once bound */
    bool calibrated;

    /* Address book. */
    ent **buckets;
    size_t n_buckets, n_ents;
    ent **ents;                  /* in insertion order */
    size_t cap_ents;
    host **hbuckets;
    size_t n_hbuckets, n_hosts;
    ent *qhead, *qtail;
    size_t queued;

    /* Loop. */
    uv_loop_t loop;
    tm2__uv_engine ue;          /* the transport's and the connections' engine */
    tm2__mcs_loop ml;
    bool loop_init;
    uv_thread_t thread;
    bool thread_live;
    uv_async_t wake;
    uv_timer_t round_timer, pump_timer;
    tm2__transport *tp, *ts;     /* probe and serve transports */
    int tp_open;                 /* transports not yet closed */
    conn_rec *conns;
    size_t inflight, sessions;
    bool stopping, finished_loop;

    /* Rounds. */
    uint32_t round;
    bool round_active;
    uint64_t round_start_ms;
    size_t round_probed, round_reachable;
    uint32_t rounds_done;
    uint64_t prog_ms;            /* last progress recount */

    /* Shared with other threads. */
    uv_mutex_t mu;
    uv_cond_t cv;
    crawl_progress prog;
    bool stop_requested;
    bool wake_closed;            /* no uv_async_send from here on */
    bool started, start_done;
    int start_err;
    char start_why[256];
    int done_fd;
};

/* ---- small helpers ------------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_ms(void) { return uv_hrtime() / 1000000u; }

static void elog(crawl_engine *e, tm2_log_level lv, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void elog(crawl_engine *e, tm2_log_level lv, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm2__vlog(e->cfg.log, e->cfg.log_user, e->cfg.log_level, lv, msg, fmt, ap);
    va_end(ap);
}

static bool log_on(const crawl_engine *e, tm2_log_level lv)
{
    return e->cfg.log && lv <= e->cfg.log_level;
}

static char *dup_str(const char *s) { return s ? strdup(s) : NULL; }

static void post(crawl_engine *e, crawl_op *op) { crawl_store_post(e->store, op); }

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ---- progress ------------------------------------------------------------------ */

/* Recounts at most every 100 ms (the book may be large); force at round
 * boundaries and the end. */
static void progress_update_full(crawl_engine *e, bool force)
{
    uint64_t now = mono_ms();
    if (!force && now - e->prog_ms < 100)
        return;
    e->prog_ms = now;
    size_t reach = 0, refused = 0, liars = 0;
    for (size_t i = 0; i < e->n_ents; i++) {
        const ent *x = e->ents[i];
        reach += x->status == ST_REACHABLE;
        refused += x->status == ST_REFUSED;
        liars += x->status == ST_LIAR;
    }
    uv_mutex_lock(&e->mu);
    crawl_progress *p = &e->prog;
    snprintf(p->network, sizeof p->network, "%s", e->network ? e->network : "");
    p->round = e->round;
    p->round_active = e->round_active;
    p->rounds_done = e->rounds_done;
    p->round_probed = e->round_probed;
    p->round_reachable = e->round_reachable;
    p->inflight = e->inflight;
    p->queued = e->queued;
    p->known = e->n_ents;
    p->reachable = reach;
    p->refused = refused;
    p->liars = liars;
    uv_mutex_unlock(&e->mu);
}

static void progress_update(crawl_engine *e) { progress_update_full(e, false); }

static void signal_done(crawl_engine *e, int err)
{
    uv_mutex_lock(&e->mu);
    bool was = e->prog.finished;
    e->prog.finished = true;
    if (err && !e->prog.error)
        e->prog.error = err;
    uv_mutex_unlock(&e->mu);
    if (!was) {
        uint64_t one = 1;
        ssize_t w = write(e->done_fd, &one, sizeof one);
        (void)w;
    }
}

/* ---- the address book ------------------------------------------------------------ */

static ent *ent_find(crawl_engine *e, const char *key)
{
    size_t b = hash_bytes(key, strlen(key)) & (e->n_buckets - 1);
    for (ent *x = e->buckets[b]; x; x = x->hnext)
        if (!strcmp(x->key, key))
            return x;
    return NULL;
}

static int ent_rehash(crawl_engine *e)
{
    size_t nb = e->n_buckets * 2;
    ent **b = calloc(nb, sizeof *b);
    if (!b)
        return TM2_ENOMEM;
    for (size_t i = 0; i < e->n_ents; i++) {
        ent *x = e->ents[i];
        size_t k = hash_bytes(x->key, strlen(x->key)) & (nb - 1);
        x->hnext = b[k];
        b[k] = x;
    }
    free(e->buckets);
    e->buckets = b;
    e->n_buckets = nb;
    return 0;
}

static host *host_get(crawl_engine *e, const uint8_t ip[16])
{
    size_t b = hash_bytes(ip, 16) & (e->n_hbuckets - 1);
    for (host *h = e->hbuckets[b]; h; h = h->hnext)
        if (!memcmp(h->ip, ip, 16))
            return h;
    if (e->n_hosts >= e->n_hbuckets) {
        size_t nb = e->n_hbuckets * 2;
        host **nbk = calloc(nb, sizeof *nbk);
        if (!nbk)
            return NULL;
        for (size_t i = 0; i < e->n_hbuckets; i++)
            for (host *h = e->hbuckets[i]; h;) {
                host *next = h->hnext;
                size_t k = hash_bytes(h->ip, 16) & (nb - 1);
                h->hnext = nbk[k];
                nbk[k] = h;
                h = next;
            }
        free(e->hbuckets);
        e->hbuckets = nbk;
        e->n_hbuckets = nb;
        b = hash_bytes(ip, 16) & (nb - 1);
    }
    host *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    memcpy(h->ip, ip, 16);
    h->hnext = e->hbuckets[b];
    e->hbuckets[b] = h;
    e->n_hosts++;
    return h;
}

/* Adds a (validated, ID-carrying) address; *created tells whether it is
 * new. NULL when the book is full or memory ran out. */
static ent *ent_add(crawl_engine *e, const tm2_netaddr *a, int source, int64_t first_seen,
                    bool *created)
{
    char key[TM2_NETADDR_STRLEN + 1];
    if (created)
        *created = false;
    if (tm2_netaddr_format(a, key, sizeof key) < 0)
        return NULL;
    ent *x = ent_find(e, key);
    if (x)
        return x;
    if (e->n_ents >= e->cfg.max_addrs) {
        uv_mutex_lock(&e->mu);
        e->prog.addrs_dropped++;
        uv_mutex_unlock(&e->mu);
        return NULL;
    }
    if (e->n_ents == e->cap_ents) {
        size_t cap = e->cap_ents ? e->cap_ents * 2 : 256;
        ent **v = realloc(e->ents, cap * sizeof *v);
        if (!v)
            return NULL;
        e->ents = v;
        e->cap_ents = cap;
    }
    if (e->n_ents >= e->n_buckets && ent_rehash(e) != 0)
        return NULL;
    x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->a = *a;
    memcpy(x->key, key, sizeof key);
    x->source = (uint8_t)source;
    x->allowed = crawl_allow_addr(&e->cfg.allow, a);
    x->status = x->allowed ? ST_NEW : ST_REFUSED;
    x->first_seen = first_seen;
    size_t b = hash_bytes(key, strlen(key)) & (e->n_buckets - 1);
    x->hnext = e->buckets[b];
    e->buckets[b] = x;
    e->ents[e->n_ents++] = x;
    if (created)
        *created = true;
    return x;
}

static void post_addr(crawl_engine *e, const ent *x, int64_t at)
{
    crawl_op *op = crawl_op_new(CROP_ADDR, at);
    if (!op)
        return;
    snprintf(op->addr, sizeof op->addr, "%s", x->key);
    op->status = status_names[x->status];
    op->what = source_names[x->source];
    op->allowed = x->allowed;
    post(e, op);
}

static void q_push(crawl_engine *e, ent *x, bool front)
{
    if (x->queued || x->inflight || !x->allowed)
        return;
    x->queued = true;
    x->qprev = x->qnext = NULL;
    if (!e->qhead) {
        e->qhead = e->qtail = x;
    } else if (front) {
        x->qnext = e->qhead;
        e->qhead->qprev = x;
        e->qhead = x;
    } else {
        x->qprev = e->qtail;
        e->qtail->qnext = x;
        e->qtail = x;
    }
    e->queued++;
}

static void q_remove(crawl_engine *e, ent *x)
{
    if (!x->queued)
        return;
    if (x->qprev)
        x->qprev->qnext = x->qnext;
    else
        e->qhead = x->qnext;
    if (x->qnext)
        x->qnext->qprev = x->qprev;
    else
        e->qtail = x->qprev;
    x->qprev = x->qnext = NULL;
    x->queued = false;
    e->queued--;
}

/* A new address from somewhere: recorded, and probed soon if allowed. */
static ent *learn(crawl_engine *e, const tm2_netaddr *a, int source, int64_t now)
{
    if (tm2_netaddr_validate(a) != 0 || !a->id.s[0])
        return NULL;
    /* Ourselves (nodes pass the seed's address on to each other). */
    if (!strcmp(a->id.s, e->probe_id.s) || (e->listen_addr && !strcmp(a->id.s, e->serve_id.s)))
        return NULL;
    bool created;
    ent *x = ent_add(e, a, source, now, &created);
    if (x && created) {
        post_addr(e, x, now);
        if (x->allowed)
            q_push(e, x, false);
        else if (log_on(e, TM2_LOG_DEBUG))
            elog(e, TM2_LOG_DEBUG, "address outside the allow policy, not dialled", "addr=%s",
                 x->key);
    }
    return x;
}

/* ---- our NodeInfo ----------------------------------------------------------------- */

static void versions_default(crawl_engine *e)
{
    static const char *const names[5] = {"abci", "app", "bft", "blockchain", "p2p"};
    e->n_versions = 5;
    for (size_t i = 0; i < 5; i++) {
        snprintf(e->vtext[i][0], sizeof e->vtext[i][0], "%s", names[i]);
        snprintf(e->vtext[i][1], sizeof e->vtext[i][1], "%s", i == 1 ? "" : TM2_PROTOCOL_VERSION);
    }
}

static void build_ni(crawl_engine *e, tm2_node_info *ni, const tm2_netaddr *addr)
{
    for (size_t i = 0; i < e->n_versions; i++) {
        e->versions[i].name = e->vtext[i][0];
        e->versions[i].version = e->vtext[i][1];
        /* Optional: a node that lacks an entry still accepts us. */
        e->versions[i].optional = true;
    }
    memset(ni, 0, sizeof *ni);
    ni->versions = e->versions;
    ni->n_versions = e->n_versions;
    ni->has_net_address = true;
    ni->net_address = *addr;
    ni->network = e->network ? e->network : "";
    ni->software = "tm2p2p";
    ni->version = TM2_PROTOCOL_VERSION;
    ni->channels = e->channels;
    ni->n_channels = 1;
    ni->moniker = e->moniker;
    ni->tx_index = "off";
    ni->rpc_address = "";
}

/* The prober advertises no address it listens on: 0.0.0.0:0 fails the
 * reference's Validate, so no node passes it on to others. */
static void probe_addr(crawl_engine *e, tm2_netaddr *a)
{
    memset(a, 0, sizeof *a);
    a->ip[10] = a->ip[11] = 0xff;
    a->id = e->probe_id;
}

static int apply_node_info(crawl_engine *e)
{
    tm2_node_info ni;
    tm2_netaddr a;
    probe_addr(e, &a);
    build_ni(e, &ni, &a);
    int r = e->tp ? tm2__transport_set_node_info(e->tp, &ni) : 0;
    if (!r && e->ts) {
        build_ni(e, &ni, &e->serve_addr);
        r = tm2__transport_set_node_info(e->ts, &ni);
    }
    return r;
}

/* Takes the network and version set of a NodeInfo that refused ours. */
static bool calibrate_from(crawl_engine *e, const tm2_node_info *ni)
{
    if (ni->n_versions > MAX_VERSIONS || strlen(ni->network) >= 64)
        return false;
    for (size_t i = 0; i < ni->n_versions; i++)
        if (strlen(ni->versions[i].name) > VERSION_TEXT_MAX ||
            strlen(ni->versions[i].version) > VERSION_TEXT_MAX)
            return false;
    char *net = strdup(ni->network);
    if (!net)
        return false;
    bool net_changed = !e->network || strcmp(e->network, net) != 0;
    free(e->network);
    e->network = net;
    e->n_versions = ni->n_versions;
    for (size_t i = 0; i < ni->n_versions; i++) {
        snprintf(e->vtext[i][0], sizeof e->vtext[i][0], "%s", ni->versions[i].name);
        snprintf(e->vtext[i][1], sizeof e->vtext[i][1], "%s", ni->versions[i].version);
    }
    int r = apply_node_info(e);
    if (r) {
        elog(e, TM2_LOG_ERROR, "cannot present the learnt node info", "err=%s",
             tm2_strerror(r));
        return false;
    }
    elog(e, TM2_LOG_INFO, "network learnt from the first node", "network=%s versions=%zu",
         net, ni->n_versions);
    if (net_changed) {
        crawl_op *op = crawl_op_new(CROP_NETWORK, wall_ms());
        if (op) {
            snprintf(op->text, sizeof op->text, "%s", net);
            post(e, op);
        }
    }
    return true;
}

/* ---- rounds and the queue ---------------------------------------------------------- */

static void pump(crawl_engine *e);
static void round_maybe_end(crawl_engine *e);

static void round_begin(crawl_engine *e)
{
    if (e->stopping)
        return;
    e->round++;
    e->round_active = true;
    e->round_start_ms = mono_ms();
    e->round_probed = e->round_reachable = 0;
    crawl_op *op = crawl_op_new(CROP_ROUND_BEGIN, wall_ms());
    if (op) {
        op->round = e->round;
        post(e, op);
    }
    for (size_t i = 0; i < e->n_ents; i++)
        q_push(e, e->ents[i], false);
    elog(e, TM2_LOG_INFO, "round started", "round=%" PRIu32 " addresses=%zu queued=%zu",
         e->round, e->n_ents, e->queued);
    progress_update_full(e, true);
    pump(e);
    round_maybe_end(e);
}

static void round_timer_cb(uv_timer_t *t)
{
    crawl_engine *e = t->data;
    round_begin(e);
}

static void round_maybe_end(crawl_engine *e)
{
    if (!e->round_active || e->queued || e->inflight || e->stopping)
        return;
    e->round_active = false;
    e->rounds_done++;
    crawl_op *op = crawl_op_new(CROP_ROUND_END, wall_ms());
    if (op) {
        op->round = e->round;
        op->probed = (uint32_t)e->round_probed;
        op->reachable = (uint32_t)e->round_reachable;
        post(e, op);
    }
    elog(e, TM2_LOG_INFO,
         "round finished", "round=%" PRIu32 " probed=%zu reachable=%zu addresses=%zu",
         e->round, e->round_probed, e->round_reachable, e->n_ents);
    progress_update_full(e, true);
    if (e->cfg.on_round) {
        crawl_progress p;
        crawl_engine_progress(e, &p);
        e->cfg.on_round(&p, e->cfg.hook_user);
    }
    if (e->cfg.rounds && e->rounds_done >= e->cfg.rounds && !e->cfg.listen_addr) {
        signal_done(e, 0);
        return;
    }
    uint64_t next = e->round_start_ms + e->cfg.interval_ms, now = mono_ms();
    uv_timer_start(&e->round_timer, round_timer_cb, next > now ? next - now : 0, 0);
}

/* ---- connections --------------------------------------------------------------------- */

static void rec_timer_closed(uv_handle_t *h);

static conn_rec *rec_new(crawl_engine *e, bool probe)
{
    conn_rec *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->e = e;
    r->probe = probe;
    uv_timer_init(&e->loop, &r->timer);
    r->timer.data = r;
    r->open = 1;
    r->start_ms = mono_ms();
    r->next = e->conns;
    if (e->conns)
        e->conns->prev = r;
    e->conns = r;
    if (!probe)
        e->sessions++;
    return r;
}

static void rec_release(conn_rec *r)
{
    if (--r->open > 0)
        return;
    crawl_engine *e = r->e;
    if (r->prev)
        r->prev->next = r->next;
    else
        e->conns = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (!r->probe)
        e->sessions--;
    tm2_node_info_free(r->ni);
    free(r);
    if (e->stopping)
        uv_async_send(&e->wake);   /* let the stop sequence look again */
}

static void rec_timer_closed(uv_handle_t *h) { rec_release(h->data); }

/* Closes the connection (if any) and the timer; the record goes once both
 * reported closed. */
static void rec_close(conn_rec *r)
{
    if (r->closing)
        return;
    r->closing = true;
    if (r->c) {
        /* Done with it: its ip:port may be dialled again at once. */
        tm2__transport *t = r->probe ? r->e->tp : r->e->ts;
        if (t && !r->removed)
            tm2__transport_remove(t, &r->c->socket_addr);
        r->removed = true;
        tm2__mcs_close(&r->c->mcs);
    }
    uv_close((uv_handle_t *)&r->timer, rec_timer_closed);
}

static void c_on_close(tm2__mcs *m)
{
    tm2__transport_conn *c = tm2__transport_conn_of(m);
    conn_rec *r = m->data;
    if (!r) {
        /* A connection turned away without a record (out of memory). */
        tm2__transport_conn_free(c);
        return;
    }
    crawl_engine *e = r->e;
    tm2__transport *t = r->probe ? e->tp : e->ts;
    if (t && !r->removed)
        tm2__transport_remove(t, &c->socket_addr);
    r->removed = true;
    tm2__transport_conn_free(c);
    r->c = NULL;
    rec_release(r);
}

static void probe_finish(conn_rec *r, int status, const char *err, const tm2_id *auth,
                         const tm2_id *claimed);

static int c_on_receive(tm2__mcs *m, uint8_t ch, const uint8_t *data, size_t len);

static void c_on_error(tm2__mcs *m, int err, const char *reason)
{
    conn_rec *r = m->data;
    if (r->probe && !r->finished) {
        char why[200];
        snprintf(why, sizeof why, "connection ended before an answer: %s", reason);
        /* Verified already: reachable, nothing learnt. */
        probe_finish(r, ST_REACHABLE, why, NULL, NULL);
    }
    (void)err;
    rec_close(r);
}

static const tm2__mcs_cbs conn_cbs = {
    .on_receive = c_on_receive,
    .on_error = c_on_error,
    .on_close = c_on_close,
};

static int start_conn(crawl_engine *e, conn_rec *r, tm2__transport_conn *c)
{
    r->c = c;
    r->open++;
    c->mcs.cbs = conn_cbs;
    c->mcs.data = r;
    tm2_mconn_config mc;
    tm2_mconn_config_default(&mc);
    mc.flush_throttle_ms = 0;
    tm2_channel_desc d = {
        .id = TM2__PEX_CHANNEL,
        .priority = 1,
        .send_queue_capacity = 4,
        .recv_message_capacity = RECV_CAPACITY,
    };
    (void)e;
    return tm2__mcs_start(&c->mcs, &mc, &d, 1, c->leftover, c->leftover_len);
}

/* ---- probes ---------------------------------------------------------------------------- */

static void probe_record_misbehavior(crawl_engine *e, const ent *x, const char *kind,
                                     const tm2_id *auth, const tm2_id *claimed, const char *why)
{
    crawl_op *op = crawl_op_new(CROP_MISBEHAVIOR, wall_ms());
    if (!op)
        return;
    snprintf(op->addr, sizeof op->addr, "%s", x->key);
    op->what = kind;
    if (auth)
        op->auth_id = *auth;
    if (claimed)
        op->claimed_id = *claimed;
    snprintf(op->text, sizeof op->text, "%s", why);
    post(e, op);
}

/* Records a probe's outcome once; frees the in-flight slot. */
static void probe_finish(conn_rec *r, int status, const char *err, const tm2_id *auth,
                         const tm2_id *claimed)
{
    if (r->finished)
        return;
    r->finished = true;
    crawl_engine *e = r->e;
    ent *x = r->ent;
    x->inflight = false;
    e->inflight--;
    if (r->host)
        r->host->inflight--;
    if (status == ST_NEW) {
        /* Not a probe of the round: it runs again (calibration: at once). */
        q_push(e, x, true);
        return;
    }
    int64_t now = wall_ms();
    bool ok = status == ST_REACHABLE || status == ST_INCOMPATIBLE;
    if (ok) {
        x->fails = 0;
        x->last_ok = r->hs_wall ? r->hs_wall : now;
    } else {
        x->fails++;
        if (status == ST_UNREACHABLE) {
            int64_t ref = x->last_ok ? x->last_ok : x->first_seen;
            if (now - ref >= (int64_t)e->cfg.gone_after_ms)
                status = ST_GONE;
        }
    }
    x->status = (uint8_t)status;
    x->round = e->round;
    e->round_probed++;
    e->round_reachable += status == ST_REACHABLE;
    uv_mutex_lock(&e->mu);
    e->prog.probes++;
    e->prog.verified += status == ST_REACHABLE;
    uv_mutex_unlock(&e->mu);

    crawl_op *op = crawl_op_new(CROP_ATTEMPT, r->hs_wall ? r->hs_wall : now);
    if (op) {
        snprintf(op->addr, sizeof op->addr, "%s", x->key);
        op->status = status_names[status];
        op->success = ok;
        op->failures = x->fails;
        op->latency_ms = ok ? r->latency_ms : -1;
        snprintf(op->text, sizeof op->text, "%s", err ? err : "");
        if (auth)
            op->auth_id = *auth;
        if (claimed)
            op->claimed_id = *claimed;
        op->ni = r->ni;
        r->ni = NULL;
        post(e, op);
    }
    if (log_on(e, TM2_LOG_DEBUG))
        elog(e, TM2_LOG_DEBUG, "probe done", "addr=%s status=%s latency_ms=%" PRId64 " err=%s",
             x->key, status_names[status], ok ? r->latency_ms : -1, err ? err : "");
    progress_update(e);
}

static void after_probe(crawl_engine *e)
{
    if (e->stopping)
        return;
    pump(e);
    round_maybe_end(e);
}

static void probe_timer_cb(uv_timer_t *t)
{
    conn_rec *r = t->data;
    crawl_engine *e = r->e;
    if (!r->finished)
        probe_finish(r, ST_REACHABLE, "no discovery response in time", NULL, NULL);
    rec_close(r);
    after_probe(e);
}

/* The node answered our Request. */
static void probe_response(conn_rec *r, const uint8_t *data, size_t len)
{
    crawl_engine *e = r->e;
    ent *x = r->ent;
    tm2_netaddr addrs[TM2__PEX_MAX_SHARED];
    tm2__pex_msg m;
    int d = tm2__pex_decode(data, len, &m, addrs, TM2__PEX_MAX_SHARED);
    if (!d && m.kind == TM2__PEX_REQUEST)
        return;   /* it asks us: we share nothing */
    size_t bad = 0;
    if (!d && m.kind == TM2__PEX_RESPONSE)
        d = tm2__pex_response_validate(addrs, m.n_addrs, &bad);
    if (d) {
        char why[160];
        snprintf(why, sizeof why, "bad discovery message: %s (%zu entries)", tm2_strerror(d),
                 m.n_addrs);
        if (log_on(e, TM2_LOG_INFO))
            elog(e, TM2_LOG_INFO, "peer sent a bad discovery message", "addr=%s err=%s",
                 x->key, tm2_strerror(d));
        probe_record_misbehavior(e, x, "bad_response", &x->a.id, NULL, why);
        probe_finish(r, ST_REACHABLE, why, NULL, NULL);
        rec_close(r);
        after_probe(e);
        return;
    }
    int64_t now = wall_ms();
    for (size_t i = 0; i < m.n_addrs; i++) {
        learn(e, &addrs[i], SRC_PEX, now);
        crawl_op *op = crawl_op_new(CROP_EDGE, now);
        if (op) {
            op->from_id = x->a.id;
            tm2_netaddr_format(&addrs[i], op->addr, sizeof op->addr);
            post(e, op);
        }
    }
    if (log_on(e, TM2_LOG_DEBUG))
        elog(e, TM2_LOG_DEBUG, "discovery response", "addr=%s addresses=%zu", x->key,
             m.n_addrs);
    probe_finish(r, ST_REACHABLE, NULL, NULL, NULL);
    rec_close(r);
    after_probe(e);
}

static void probe_on_conn(crawl_engine *e, conn_rec *r, tm2__transport_conn *c)
{
    ent *x = r->ent;
    r->hs_wall = wall_ms();
    r->latency_ms = (int64_t)(mono_ms() - r->start_ms);
    r->ni = c->node_info;   /* ours now */
    c->node_info = NULL;
    if (!e->calibrated) {
        e->calibrated = true;
        elog(e, TM2_LOG_INFO, "first node verified", "addr=%s", x->key);
    }
    /* Its own advertised address is a candidate too. */
    if (r->ni && tm2_netaddr_validate(&r->ni->net_address) == 0 && r->ni->net_address.port &&
        !tm2_netaddr_equal(&r->ni->net_address, &x->a))
        learn(e, &r->ni->net_address, SRC_SELF, r->hs_wall);
    int err = start_conn(e, r, c);
    uint8_t req[TM2__PEX_REQUEST_SIZE];
    if (!err && tm2__pex_encode_request(req, sizeof req) == TM2__PEX_REQUEST_SIZE) {
        tm2__msg *msg = tm2__msg_new(req, sizeof req);
        err = msg ? tm2__mcs_try_send(&c->mcs, TM2__PEX_CHANNEL, msg) : TM2_ENOMEM;
        tm2__msg_unref(msg);
    }
    if (err || uv_timer_start(&r->timer, probe_timer_cb, e->cfg.ask_timeout_ms, 0) != 0) {
        char why[128];
        snprintf(why, sizeof why, "cannot ask for addresses: %s", tm2_strerror(err ? err : TM2_EIO));
        probe_finish(r, ST_REACHABLE, why, NULL, NULL);
        rec_close(r);
        after_probe(e);
    }
}

/* Why a verified-looking peer failed the checks, from what it said. */
static void probe_on_reject(crawl_engine *e, conn_rec *r, const tm2__transport_reject *rj)
{
    ent *x = r->ent;
    const tm2_node_info *ni = rj->node_info;
    const tm2_id *auth = rj->auth_id;
    if (rj->stage != TM2__TSTAGE_CHECK || !ni || !auth) {
        probe_finish(r, ST_UNREACHABLE, rj->why, auth, NULL);
        rec_close(r);
        after_probe(e);
        return;
    }
    const tm2_id *claimed = &ni->net_address.id;
    bool self_consistent = strcmp(auth->s, claimed->s) == 0;
    bool dialled = strcmp(auth->s, x->a.id.s) == 0;
    if (rj->err == TM2_ENODEINFO) {
        probe_record_misbehavior(e, x, "invalid", auth, claimed, rj->why);
        probe_finish(r, ST_INVALID, rj->why, auth, claimed);
    } else if (!self_consistent) {
        elog(e, TM2_LOG_WARN,
             "peer lies about its ID: not trusted", "addr=%s key_id=%s claimed_id=%s reason=%s",
             x->key, auth->s, claimed->s, rj->why);
        probe_record_misbehavior(e, x, "liar", auth, claimed, rj->why);
        probe_finish(r, ST_LIAR, rj->why, auth, claimed);
    } else if (!dialled) {
        /* A consistent node, not the one advertised here: try it under its
         * own ID. */
        probe_record_misbehavior(e, x, "wrong_id", auth, claimed, rj->why);
        probe_finish(r, ST_WRONG_ID, rj->why, auth, claimed);
        tm2_netaddr own = x->a;
        own.id = *auth;
        learn(e, &own, SRC_SELF, wall_ms());
    } else if (rj->err == TM2_EINCOMPAT) {
        bool ours = !e->network || !e->network[0] || strcmp(e->network, ni->network) == 0;
        if (!e->calibrated && ours && calibrate_from(e, ni)) {
            e->calibrated = true;
            x->last_start = 0;
            probe_finish(r, ST_NEW, NULL, auth, NULL);
        } else {
            r->hs_wall = wall_ms();
            r->latency_ms = (int64_t)(mono_ms() - r->start_ms);
            /* A verified NodeInfo of another network or version set:
             * recorded, not asked. */
            tm2_node_info *copy = NULL;
            int n = tm2_node_info_encode(ni, NULL, 0);
            uint8_t *b = n > 0 ? malloc((size_t)n) : NULL;
            size_t used;
            if (b && tm2_node_info_encode(ni, b, (size_t)n) == n &&
                tm2_node_info_decode(b, (size_t)n, &copy, &used) == 0)
                r->ni = copy;
            free(b);
            probe_finish(r, ST_INCOMPATIBLE, rj->why, auth, NULL);
        }
    } else {
        probe_finish(r, ST_UNREACHABLE, rj->why, auth, claimed);
    }
    rec_close(r);
    after_probe(e);
}

static bool host_ready(const crawl_engine *e, const host *h, uint64_t now, uint64_t *wait)
{
    if (h->inflight >= e->cfg.per_host)
        return false;
    if (h->used && now - h->last_ms < e->cfg.host_gap_ms) {
        uint64_t w = e->cfg.host_gap_ms - (now - h->last_ms);
        if (!*wait || w < *wait)
            *wait = w;
        return false;
    }
    return true;
}

static void pump_timer_cb(uv_timer_t *t)
{
    crawl_engine *e = t->data;
    pump(e);
    round_maybe_end(e);
}

static void start_probe(crawl_engine *e, ent *x, host *h)
{
    conn_rec *r = rec_new(e, true);
    if (!r) {
        elog(e, TM2_LOG_ERROR, "out of memory starting a probe", "");
        return;
    }
    r->ent = x;
    r->host = h;
    x->inflight = true;
    x->last_start = mono_ms();
    h->inflight++;
    h->used = true;
    h->last_ms = mono_ms();
    e->inflight++;
    int err = tm2__transport_dial(e->tp, &x->a, r);
    if (err == TM2_EDUPLICATE) {
        /* Our last connection to it is still being torn down: again after
         * the re-probe gap. */
        probe_finish(r, ST_NEW, NULL, NULL, NULL);
        rec_close(r);
    } else if (err) {
        char why[128];
        snprintf(why, sizeof why, "dial refused: %s", tm2_strerror(err));
        probe_finish(r, ST_UNREACHABLE, why, NULL, NULL);
        rec_close(r);
    }
}

static void pump(crawl_engine *e)
{
    if (e->stopping)
        return;
    uint32_t limit = e->calibrated ? e->cfg.max_inflight : 1;
    uint64_t now = mono_ms(), wait = 0;
    ent *x = e->qhead;
    while (x && e->inflight < limit) {
        ent *next = x->qnext;
        if (!x->allowed) {   /* the policy never changes while running; defensive */
            q_remove(e, x);
            x = next;
            continue;
        }
        host *h = host_get(e, x->a.ip);
        if (!h) {
            elog(e, TM2_LOG_ERROR, "out of memory: probe queue stalled", "");
            break;
        }
        /* A node notices our last connection's end a moment after it: a
         * new one too soon would meet its duplicate-peer check. */
        uint64_t gap = e->cfg.interval_ms < REPROBE_GAP_MS ? e->cfg.interval_ms : REPROBE_GAP_MS;
        if (x->last_start && now - x->last_start < gap) {
            uint64_t w = gap - (now - x->last_start);
            if (!wait || w < wait)
                wait = w;
        } else if (host_ready(e, h, now, &wait)) {
            q_remove(e, x);
            start_probe(e, x, h);
        }
        x = next;
    }
    if (e->queued && e->inflight < limit && wait)
        uv_timer_start(&e->pump_timer, pump_timer_cb, wait, 0);
    progress_update(e);
}

/* ---- seed sessions ------------------------------------------------------------------- */

static void session_timer_cb(uv_timer_t *t)
{
    conn_rec *r = t->data;
    rec_close(r);
}

static void session_answer(conn_rec *r)
{
    crawl_engine *e = r->e;
    tm2__transport_conn *c = r->c;
    int64_t now = wall_ms();
    const tm2_netaddr *theirs = c->node_info ? &c->node_info->net_address : NULL;
    tm2_netaddr *cands = malloc((e->n_ents ? e->n_ents : 1) * sizeof *cands);
    size_t n = 0;
    for (size_t i = 0; cands && i < e->n_ents; i++) {
        const ent *x = e->ents[i];
        if (x->status != ST_REACHABLE || !x->allowed || now - x->last_ok > (int64_t)e->cfg.fresh_ms)
            continue;
        if (!strcmp(x->a.id.s, c->id.s))
            continue;
        if (theirs && x->a.port == theirs->port && !memcmp(x->a.ip, theirs->ip, 16))
            continue;
        cands[n++] = x->a;
    }
    size_t pick[TM2__PEX_MAX_SHARED];
    size_t k = cands ? crawl_select(cands, n, e->cfg.answer_max, pick, NULL, NULL) : 0;
    r->answered = true;
    if (!k) {
        free(cands);
        if (log_on(e, TM2_LOG_DEBUG))
            elog(e, TM2_LOG_DEBUG, "nothing verified to hand out", "peer=%s", c->id.s);
        rec_close(r);
        return;
    }
    tm2_netaddr out[TM2__PEX_MAX_SHARED];
    for (size_t i = 0; i < k; i++)
        out[i] = cands[pick[i]];
    free(cands);
    int len = tm2__pex_encode_response(out, k, NULL, 0);
    uint8_t *buf = len > 0 ? malloc((size_t)len) : NULL;
    int err = buf ? tm2__pex_encode_response(out, k, buf, (size_t)len) : TM2_ENOMEM;
    if (err > 0) {
        tm2__msg *m = tm2__msg_new(buf, (size_t)len);
        err = m ? tm2__mcs_try_send(&c->mcs, TM2__PEX_CHANNEL, m) : TM2_ENOMEM;
        tm2__msg_unref(m);
    }
    free(buf);
    if (err < 0) {
        elog(e, TM2_LOG_WARN, "cannot answer a discovery request", "peer=%s err=%s",
             c->id.s, tm2_strerror(err));
        rec_close(r);
        return;
    }
    uv_mutex_lock(&e->mu);
    e->prog.answers++;
    uv_mutex_unlock(&e->mu);
    if (log_on(e, TM2_LOG_DEBUG))
        elog(e, TM2_LOG_DEBUG, "discovery request answered", "peer=%s addresses=%zu", c->id.s, k);
    /* Hang up once the answer is out. */
    uv_timer_stop(&r->timer);
    uv_timer_start(&r->timer, session_timer_cb, e->cfg.linger_ms, 0);
}

static void session_receive(conn_rec *r, const uint8_t *data, size_t len)
{
    tm2__pex_msg m;
    int d = tm2__pex_decode(data, len, &m, NULL, 0);
    if (m.kind == TM2__PEX_REQUEST && !d) {
        if (!r->answered)
            session_answer(r);
        return;
    }
    /* A Response (we asked nothing) or noise: ignored, as the reference
     * ignores undecodable discovery messages. */
    if (log_on(r->e, TM2_LOG_DEBUG))
        elog(r->e, TM2_LOG_DEBUG, "discovery message ignored", "peer=%s kind=%d err=%s",
             r->c->id.s, m.kind, d ? tm2_strerror(d) : "unsolicited");
}

static void session_on_conn(crawl_engine *e, tm2__transport_conn *c)
{
    conn_rec *r = rec_new(e, false);
    if (!r) {
        elog(e, TM2_LOG_ERROR, "out of memory: inbound peer turned away", "peer=%s", c->id.s);
        tm2__transport_remove(e->ts, &c->socket_addr);
        c->mcs.data = NULL;
        tm2__mcs_close(&c->mcs);
        return;
    }
    if (e->sessions > e->cfg.max_sessions) {
        elog(e, TM2_LOG_INFO, "inbound peer turned away: too many sessions", "peer=%s",
             c->id.s);
        r->c = c;
        r->open++;
        c->mcs.data = r;
        rec_close(r);
        return;
    }
    uv_mutex_lock(&e->mu);
    e->prog.sessions++;
    uv_mutex_unlock(&e->mu);
    int err = start_conn(e, r, c);
    if (err || uv_timer_start(&r->timer, session_timer_cb, e->cfg.serve_timeout_ms, 0) != 0) {
        rec_close(r);
        return;
    }
    if (c->node_info)
        learn(e, &c->node_info->net_address, SRC_INBOUND, wall_ms());
    if (log_on(e, TM2_LOG_DEBUG))
        elog(e, TM2_LOG_DEBUG, "inbound peer", "peer=%s", c->id.s);
    pump(e);
}

static int c_on_receive(tm2__mcs *m, uint8_t ch, const uint8_t *data, size_t len)
{
    conn_rec *r = m->data;
    if (ch != TM2__PEX_CHANNEL || r->closing)
        return 0;
    if (r->probe) {
        if (!r->finished)
            probe_response(r, data, len);
    } else {
        session_receive(r, data, len);
    }
    return 0;
}

/* ---- transport callbacks ----------------------------------------------------------------- */

static void t_on_conn(tm2__transport *t, tm2__transport_conn *c)
{
    crawl_engine *e = t->data;
    if (c->outbound) {
        conn_rec *r = c->dial_user;
        probe_on_conn(e, r, c);
    } else {
        session_on_conn(e, c);
    }
}

static void t_on_reject(tm2__transport *t, const tm2__transport_reject *rj)
{
    crawl_engine *e = t->data;
    if (!rj->outbound) {
        if (log_on(e, TM2_LOG_DEBUG)) {
            elog(e, TM2_LOG_DEBUG, "inbound connection rejected", "reason=%s",
                 rj->why);
        }
        return;
    }
    conn_rec *r = rj->dial_user;
    if (r)
        probe_on_reject(e, r, rj);
}

static void transport_closed(tm2__transport *t)
{
    crawl_engine *e = t->data;
    if (t == e->tp)
        e->tp = NULL;
    else
        e->ts = NULL;
    e->tp_open--;
    uv_async_send(&e->wake);
}

/* ---- the loop thread -------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h) { (void)h; }

/* Once the transports are closed and every record is gone, the remaining
 * handles close and uv_run returns. */
static void maybe_finish_stop(crawl_engine *e)
{
    if (!e->stopping || e->finished_loop || e->tp_open)
        return;
    /* Probes still dialling were aborted by the transport without a word:
     * their records have only the timer left. */
    for (conn_rec *r = e->conns, *next; r; r = next) {
        next = r->next;
        if (!r->c && !r->closing)
            rec_close(r);
    }
    if (e->conns)
        return;
    e->finished_loop = true;
    uv_close((uv_handle_t *)&e->round_timer, handle_closed);
    uv_close((uv_handle_t *)&e->pump_timer, handle_closed);
    uv_mutex_lock(&e->mu);
    e->wake_closed = true;
    uv_close((uv_handle_t *)&e->wake, handle_closed);
    uv_mutex_unlock(&e->mu);
    tm2__mcs_loop_close(&e->ml);
    tm2__uv_engine_close(&e->ue);
}

static void begin_stop(crawl_engine *e)
{
    if (e->stopping)
        return;
    e->stopping = true;
    uv_timer_stop(&e->round_timer);
    uv_timer_stop(&e->pump_timer);
    for (conn_rec *r = e->conns; r; r = r->next)
        if (r->c && !r->closing)
            rec_close(r);
    if (e->tp)
        tm2__transport_close(e->tp, transport_closed);
    if (e->ts)
        tm2__transport_close(e->ts, transport_closed);
    maybe_finish_stop(e);
}

static void wake_cb(uv_async_t *a)
{
    crawl_engine *e = a->data;
    if (e->finished_loop)
        return;
    uv_mutex_lock(&e->mu);
    bool stop = e->stop_requested;
    uv_mutex_unlock(&e->mu);
    if (stop)
        begin_stop(e);
    maybe_finish_stop(e);
}

static int make_transport(crawl_engine *e, const tm2_node_key *key, const tm2_netaddr *addr,
                          tm2__transport **out)
{
    tm2_node_info ni;
    build_ni(e, &ni, addr);
    tm2__tcp_transport_config tc = {
        .key = *key,
        .node_info = &ni,
        .handshake_timeout_ms = e->cfg.handshake_timeout_ms,
        .dial_timeout_ms = e->cfg.dial_timeout_ms,
        .conn_cbs = conn_cbs,
        .log = e->cfg.log,
        .log_user = e->cfg.log_user,
        /* Every rejection is reported by us with its meaning. */
        .log_level = e->cfg.log_level < TM2_LOG_WARN ? e->cfg.log_level : TM2_LOG_WARN,
    };
    tm2__transport_cbs cbs = {.on_conn = t_on_conn, .on_reject = t_on_reject};
    int r = tm2__tcp_transport_new(&e->ml, &tc, &cbs, e, out);
    tm2_node_key_wipe(&tc.key);
    if (!r)
        e->tp_open++;
    return r;
}

static void start_result(crawl_engine *e, int err, const char *why)
{
    uv_mutex_lock(&e->mu);
    e->start_err = err;
    if (why)
        snprintf(e->start_why, sizeof e->start_why, "%s", why);
    e->start_done = true;
    uv_cond_broadcast(&e->cv);
    uv_mutex_unlock(&e->mu);
}

static int setup_serving(crawl_engine *e, char *why, size_t why_len)
{
    tm2_netaddr adv;
    memset(&adv, 0, sizeof adv);
    adv.ip[10] = adv.ip[11] = 0xff;
    adv.id = e->serve_id;
    int r = make_transport(e, &e->cfg.serve_key, &adv, &e->ts);
    if (r) {
        snprintf(why, why_len, "seed transport: %s", tm2_strerror(r));
        return r;
    }
    if ((r = tm2__transport_listen(e->ts, e->listen_addr)) != 0) {
        snprintf(why, why_len, "cannot listen on %s: %s", e->listen_addr, tm2_strerror(r));
        return r;
    }
    tm2_netaddr bound;
    if ((r = tm2__transport_listen_addr(e->ts, &bound)) != 0) {
        snprintf(why, why_len, "listener address: %s", tm2_strerror(r));
        return r;
    }
    if (e->external_addr) {
        if ((r = tm2_netaddr_parse(e->external_addr, TM2_NETADDR_NO_ID, &adv)) != 0) {
            snprintf(why, why_len, "external address '%s': %s", e->external_addr, tm2_strerror(r));
            return r;
        }
    } else {
        adv = bound;
    }
    adv.id = e->serve_id;
    uv_mutex_lock(&e->mu);
    e->serve_addr = adv;
    uv_mutex_unlock(&e->mu);
    tm2_node_info ni;
    build_ni(e, &ni, &adv);
    if ((r = tm2__transport_set_node_info(e->ts, &ni)) != 0) {
        snprintf(why, why_len, "our node info: %s", tm2_strerror(r));
        return r;
    }
    char b[TM2_NETADDR_STRLEN + 1];
    tm2_netaddr_format(&adv, b, sizeof b);
    elog(e, TM2_LOG_INFO, "seed listening", "addr=%s", b);
    return 0;
}

static void thread_main(void *arg)
{
    crawl_engine *e = arg;
    tm2__mcs_loop_bind_thread(&e->ml);
    char why[256] = "";
    tm2_netaddr pa;
    probe_addr(e, &pa);
    int r = make_transport(e, &e->cfg.probe_key, &pa, &e->tp);
    if (r)
        snprintf(why, sizeof why, "probe transport: %s", tm2_strerror(r));
    if (!r && e->listen_addr)
        r = setup_serving(e, why, sizeof why);
    start_result(e, r, why);
    if (r) {
        uv_mutex_lock(&e->mu);
        e->stop_requested = true;
        uv_mutex_unlock(&e->mu);
        begin_stop(e);
    } else {
        int64_t now = wall_ms();
        for (size_t i = 0; i < e->cfg.n_seeds; i++) {
            ent *x = learn(e, &e->seeds[i], SRC_SEED, now);
            if (!x)
                elog(e, TM2_LOG_WARN, "seed address not usable", "");
        }
        round_begin(e);
    }
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&e->loop) != 0)
        elog(e, TM2_LOG_ERROR, "crawler loop closed with handles open", "");
    e->loop_init = false;
    progress_update_full(e, true);
    signal_done(e, 0);
}

/* ---- public -------------------------------------------------------------------------------- */

int crawl_engine_new(const crawl_config *cfg, crawl_engine **out, char *err, size_t err_len)
{
    *out = NULL;
    if (sodium_init() < 0) {
        snprintf(err, err_len, "libsodium failed to start");
        return TM2_EIO;
    }
    if (tm2_node_key_check(&cfg->probe_key) != 0 ||
        (cfg->listen_addr && tm2_node_key_check(&cfg->serve_key) != 0)) {
        snprintf(err, err_len, "invalid node key");
        return TM2_EINVAL;
    }
    if (cfg->answer_max > TM2__PEX_MAX_SHARED || cfg->n_seeds > 100000 ||
        (cfg->n_seeds && !cfg->seeds)) {
        snprintf(err, err_len, "invalid crawler settings");
        return TM2_EINVAL;
    }
    if (cfg->network && strlen(cfg->network) >= 64) {
        snprintf(err, err_len, "network name too long");
        return TM2_EINVAL;
    }
    crawl_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, err_len, "out of memory");
        return TM2_ENOMEM;
    }
    e->cfg = *cfg;
    e->done_fd = -1;
    crawl_config *c = &e->cfg;
    if (!c->max_inflight)
        c->max_inflight = DEF_INFLIGHT;
    if (!c->per_host)
        c->per_host = DEF_PER_HOST;
    if (!c->dial_timeout_ms)
        c->dial_timeout_ms = DEF_TIMEOUT_MS;
    if (!c->handshake_timeout_ms)
        c->handshake_timeout_ms = DEF_TIMEOUT_MS;
    if (!c->ask_timeout_ms)
        c->ask_timeout_ms = DEF_TIMEOUT_MS;
    if (!c->interval_ms)
        c->interval_ms = DEF_INTERVAL_MS;
    if (!c->gone_after_ms)
        c->gone_after_ms = DEF_GONE_MS;
    if (!c->max_addrs)
        c->max_addrs = DEF_MAX_ADDRS;
    if (!c->serve_timeout_ms)
        c->serve_timeout_ms = DEF_SERVE_MS;
    if (!c->linger_ms)
        c->linger_ms = DEF_LINGER_MS;
    if (!c->fresh_ms)
        c->fresh_ms = 3ull * c->interval_ms;
    if (!c->max_sessions)
        c->max_sessions = DEF_SESSIONS;
    if (!c->answer_max)
        c->answer_max = TM2__PEX_MAX_SHARED;
    e->store = c->store;
    e->network = cfg->network && cfg->network[0] ? strdup(cfg->network) : NULL;
    e->moniker = strdup(cfg->moniker && cfg->moniker[0] ? cfg->moniker : "tm2p2p-crawler");
    e->listen_addr = dup_str(cfg->listen_addr);
    e->external_addr = dup_str(cfg->external_addr);
    c->network = c->moniker = c->listen_addr = c->external_addr = NULL;
    if (cfg->n_seeds) {
        e->seeds = malloc(cfg->n_seeds * sizeof *e->seeds);
        if (e->seeds)
            memcpy(e->seeds, cfg->seeds, cfg->n_seeds * sizeof *e->seeds);
    }
    c->seeds = e->seeds;
    e->n_buckets = 1024;
    e->buckets = calloc(e->n_buckets, sizeof *e->buckets);
    e->n_hbuckets = 64;
    e->hbuckets = calloc(e->n_hbuckets, sizeof *e->hbuckets);
    e->channels[0] = TM2__PEX_CHANNEL;
    tm2_node_key_id(&c->probe_key, &e->probe_id);
    if (cfg->listen_addr)
        tm2_node_key_id(&c->serve_key, &e->serve_id);
    versions_default(e);
    /* Without a network, nothing is trusted to run in parallel until the
     * first node told us which one. */
    e->calibrated = false;
    if ((cfg->network && cfg->network[0] && !e->network) || !e->moniker ||
        (cfg->listen_addr && !e->listen_addr) || (cfg->external_addr && !e->external_addr) ||
        (cfg->n_seeds && !e->seeds) || !e->buckets || !e->hbuckets) {
        snprintf(err, err_len, "out of memory");
        crawl_engine_free(e);
        return TM2_ENOMEM;
    }
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0 || uv_mutex_init(&e->mu) != 0) {
        snprintf(err, err_len, "cannot create an eventfd or a mutex: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        crawl_engine_free(e);
        return TM2_EIO;
    }
    if (uv_cond_init(&e->cv) != 0) {
        snprintf(err, err_len, "cannot create a condition variable");
        uv_mutex_destroy(&e->mu);
        close(fd);
        crawl_engine_free(e);
        return TM2_EIO;
    }
    e->done_fd = fd;
    *out = e;
    return 0;
}

uint64_t crawl_engine_max_conns(const crawl_engine *e)
{
    return (uint64_t)e->cfg.max_inflight + (e->listen_addr ? e->cfg.max_sessions : 0);
}

int crawl_engine_add_row(crawl_engine *e, const crawl_addr_row *row)
{
    tm2_netaddr a;
    if (tm2_netaddr_parse(row->addr, 0, &a) != 0 || tm2_netaddr_validate(&a) != 0)
        return TM2_EADDR;
    int src = SRC_PEX;
    for (int i = 0; i < 4; i++)
        if (!strcmp(row->source, source_names[i]))
            src = i;
    bool created;
    ent *x = ent_add(e, &a, src, row->first_seen, &created);
    if (!x)
        return TM2_ENOMEM;
    if (!created)
        return 0;
    x->status = (uint8_t)status_of(row->status);
    x->last_ok = row->last_success;
    x->fails = row->failures;
    /* The policy may have changed since. */
    if (!x->allowed)
        x->status = ST_REFUSED;
    else if (x->status == ST_REFUSED)
        x->status = ST_NEW;
    if (x->allowed != row->allowed)
        post_addr(e, x, row->first_seen);
    return 0;
}

int crawl_engine_start(crawl_engine *e, char *err, size_t err_len)
{
    if (e->started) {
        snprintf(err, err_len, "already started");
        return TM2_ESTATE;
    }
    if (uv_loop_init(&e->loop) != 0) {
        snprintf(err, err_len, "cannot create the event loop");
        return TM2_EIO;
    }
    int r = tm2__uv_engine_init(&e->ue, &e->loop);
    if (!r && (r = tm2__mcs_loop_init(&e->ml, &e->ue.e)) != 0) {
        tm2__uv_engine_close(&e->ue);
        uv_run(&e->loop, UV_RUN_DEFAULT);
    }
    if (r) {
        uv_loop_close(&e->loop);
        snprintf(err, err_len, "cannot set up the connection loop: %s", tm2_strerror(r));
        return r;
    }
    e->loop_init = true;
    uv_async_init(&e->loop, &e->wake, wake_cb);
    e->wake.data = e;
    uv_timer_init(&e->loop, &e->round_timer);
    e->round_timer.data = e;
    uv_timer_init(&e->loop, &e->pump_timer);
    e->pump_timer.data = e;
    e->started = true;
    if (uv_thread_create(&e->thread, thread_main, e) != 0) {
        uv_close((uv_handle_t *)&e->round_timer, handle_closed);
        uv_close((uv_handle_t *)&e->pump_timer, handle_closed);
        uv_close((uv_handle_t *)&e->wake, handle_closed);
        tm2__mcs_loop_close(&e->ml);
        tm2__uv_engine_close(&e->ue);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        uv_loop_close(&e->loop);
        e->loop_init = false;
        snprintf(err, err_len, "cannot start the crawler thread");
        return TM2_EIO;
    }
    e->thread_live = true;
    tm2__thread_name(e->thread, "tm2p2p-crawl");
    uv_mutex_lock(&e->mu);
    while (!e->start_done)
        uv_cond_wait(&e->cv, &e->mu);
    r = e->start_err;
    if (r)
        snprintf(err, err_len, "%s", e->start_why);
    uv_mutex_unlock(&e->mu);
    if (r)
        crawl_engine_stop(e);
    return r;
}

int crawl_engine_done_fd(const crawl_engine *e) { return e->done_fd; }

void crawl_engine_progress(crawl_engine *e, crawl_progress *out)
{
    uv_mutex_lock(&e->mu);
    *out = e->prog;
    uv_mutex_unlock(&e->mu);
}

int crawl_engine_listen_addr(crawl_engine *e, tm2_netaddr *out)
{
    uv_mutex_lock(&e->mu);
    bool ok = e->serve_addr.id.s[0] != '\0';
    if (ok)
        *out = e->serve_addr;
    uv_mutex_unlock(&e->mu);
    return ok ? 0 : TM2_ESTATE;
}

void crawl_engine_stop(crawl_engine *e)
{
    if (!e || !e->thread_live)
        return;
    uv_mutex_lock(&e->mu);
    e->stop_requested = true;
    if (!e->wake_closed)
        uv_async_send(&e->wake);
    uv_mutex_unlock(&e->mu);
    uv_thread_join(&e->thread);
    e->thread_live = false;
}

void crawl_engine_free(crawl_engine *e)
{
    if (!e)
        return;
    crawl_engine_stop(e);
    for (size_t i = 0; i < e->n_ents; i++)
        free(e->ents[i]);
    free(e->ents);
    free(e->buckets);
    if (e->hbuckets)
        for (size_t i = 0; i < e->n_hbuckets; i++)
            for (host *h = e->hbuckets[i]; h;) {
                host *next = h->hnext;
                free(h);
                h = next;
            }
    free(e->hbuckets);
    free(e->network);
    free(e->moniker);
    free(e->listen_addr);
    free(e->external_addr);
    free(e->seeds);
    tm2_node_key_wipe(&e->cfg.probe_key);
    tm2_node_key_wipe(&e->cfg.serve_key);
    if (e->done_fd >= 0) {
        close(e->done_fd);
        uv_cond_destroy(&e->cv);
        uv_mutex_destroy(&e->mu);
    }
    free(e);
}
