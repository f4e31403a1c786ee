/* The discovery reactor's logic (see pex_core.h and tm2p2p/discovery.h). */
#include "discovery/pex_core.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/log.h"
#include "discovery/pex_msg.h"

#define DEF_ABUSE_LIMIT        10
#define DEF_SEED_DISCONNECT_MS 3000
#define DEF_TARGET_OUTBOUND    10
/* Dials handed to the switch per tick, so one tick stays short whatever
 * target_outbound is; the next tick dials more. */
#define MAX_DIALS_PER_TICK     64
/* Entries a seed-mode answer takes from the book skip addresses that
 * failed this many dials in a row. */
#define SHARE_MAX_ATTEMPTS     2
/* Unanswered Requests remembered per peer: that many Responses may still
 * come (a peer with nothing to share sends none), no more. */
#define MAX_ASKED              4
/* Every encoded Response with at most TM2_DISCOVERY_MAX_ADDRS entries fits:
 * each entry is under TM2_NETADDR_STRLEN + 3 bytes. */
#define RESPONSE_BUF           4096

#define STATS(X)                                                                             \
    X(requests_sent) X(requests_received) X(requests_answered) X(requests_ignored)           \
    X(responses_received) X(responses_rejected) X(responses_oversized)                       \
    X(responses_unsolicited) X(responses_malformed) X(responses_invalid)                     \
    X(messages_undecodable) X(addrs_received)                                                \
    X(addrs_accepted) X(addrs_rejected) X(dials) X(dial_failures)                            \
    X(peers_stopped) X(peers_released) X(book_saves) X(book_save_errors) X(book_size) X(book_tried)

enum {
#define X(n) ST_##n,
    STATS(X)
#undef X
    ST_COUNT
};

typedef struct pex_peer {
    void *h;
    tm2__pex_peer_info info;
    uint8_t asked;        /* Requests sent and not yet answered (capped) */
    bool req_seen;
    bool exchanged;       /* seed mode: the release clock runs */
    bool stop_pending;
    bool stop_sent;
    int stop_reason;
    uint32_t strikes;
    uint64_t asked_ms;    /* when we last sent it a Request (0: never) */
    uint64_t last_req_ms;
    uint64_t release_at;  /* 0: none */
} pex_peer;

struct tm2__pex {
    tm2_discovery_config cfg;   /* addrbook_path points into this object */
    char *path;
    tm2__pex_ops ops;
    uint64_t rng;               /* picks without ops.random (tests) */
    tm2__addrbook *book;
    tm2_id self;
    pex_peer **peers;
    size_t n_peers, cap_peers;
    /* The latest book generation handed to the writer and its fate. */
    uint64_t save_gen;
    bool save_sent;
    bool save_done;             /* its outcome was collected */
    int save_rc;                /* that outcome (save_done) */
    _Atomic uint64_t st[ST_COUNT];
};

/* ---- small helpers ------------------------------------------------------------- */

static void plog(const tm2__pex *x, tm2_log_level lv, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void plog(const tm2__pex *x, tm2_log_level lv, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm2__vlog(x->cfg.log, x->cfg.log_user, x->cfg.log_level, lv, msg, fmt, ap);
    va_end(ap);
}

static void bump(tm2__pex *x, int i, uint64_t by)
{
    atomic_fetch_add_explicit(&x->st[i], by, memory_order_relaxed);
}

static bool id_eq(const tm2_id *a, const tm2_id *b) { return strcmp(a->s, b->s) == 0; }

/* Uniform in [0, n) (n >= 1) without modulo bias, from ops->random or,
 * without one, a fixed splitmix64 sequence. */
static uint32_t uniform(tm2__pex *x, uint32_t n)
{
    uint32_t floor = (uint32_t)(-n) % n;
    for (;;) {
        uint32_t r;
        if (x->ops.random) {
            x->ops.random(x->ops.user, &r, sizeof r);
        } else {
            uint64_t z = (x->rng += 0x9e3779b97f4a7c15u);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
            r = (uint32_t)((z ^ (z >> 31)) >> 32);
        }
        if (r >= floor)
            return r % n;
    }
}

static void shuffle(tm2__pex *x, tm2_netaddr *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = uniform(x, (uint32_t)i);
        tm2_netaddr t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static pex_peer *find_peer(const tm2__pex *x, const void *h)
{
    for (size_t i = 0; i < x->n_peers; i++)
        if (x->peers[i]->h == h)
            return x->peers[i];
    return NULL;
}

static pex_peer *find_peer_id(const tm2__pex *x, const tm2_id *id)
{
    for (size_t i = 0; i < x->n_peers; i++)
        if (id_eq(&x->peers[i]->info.id, id))
            return x->peers[i];
    return NULL;
}

static bool is_self(const tm2__pex *x, const tm2_id *id)
{
    return x->self.s[0] && id_eq(&x->self, id);
}

static bool is_private(const tm2__pex *x, const tm2_id *id)
{
    return x->ops.is_private && x->ops.is_private(x->ops.user, id);
}

/* The switch's seeds stay out of the book: it dials them itself. */
static bool is_seed(const tm2__pex *x, const tm2_id *id)
{
    return x->ops.is_seed && x->ops.is_seed(x->ops.user, id);
}

/* The switch dials persistent peers at their configured address only. */
static bool is_persistent(const tm2__pex *x, const tm2_id *id)
{
    return x->ops.is_persistent && x->ops.is_persistent(x->ops.user, id);
}

/* Outbound peers that count towards the target: all but those leaving
 * (a seed we dialled is an ordinary outbound peer). */
static size_t outbound_peers(const tm2__pex *x)
{
    size_t n = 0;
    for (size_t i = 0; i < x->n_peers; i++) {
        const pex_peer *p = x->peers[i];
        n += (p->info.outbound || p->info.slot_out) && !p->stop_pending;
    }
    return n;
}

static size_t dials_in_flight(const tm2__pex *x)
{
    size_t in = 0, out = 0, dialing = 0;
    if (x->ops.counts)
        x->ops.counts(x->ops.user, &in, &out, &dialing);
    return dialing;
}

static size_t dial_need(const tm2__pex *x)
{
    size_t have = outbound_peers(x) + dials_in_flight(x);
    size_t need = x->cfg.target_outbound > have ? x->cfg.target_outbound - have : 0;
    return need < MAX_DIALS_PER_TICK ? need : MAX_DIALS_PER_TICK;
}

static void dial(tm2__pex *x, const tm2_netaddr *a, size_t n)
{
    if (n == 0)
        return;
    bump(x, ST_dials, n);
    if (x->ops.dial)
        x->ops.dial(x->ops.user, a, n);
}

/* ---- stopping peers: deferred to the end of each entry point ------------------- */

static void mark_stop(pex_peer *p, int reason)
{
    if (p->stop_pending)
        return;
    p->stop_pending = true;
    p->stop_reason = reason;
}

/* Re-scans after every stop: ops->stop may remove peers synchronously. */
static void flush_stops(tm2__pex *x)
{
    for (;;) {
        pex_peer *p = NULL;
        for (size_t i = 0; i < x->n_peers && !p; i++)
            if (x->peers[i]->stop_pending && !x->peers[i]->stop_sent)
                p = x->peers[i];
        if (!p)
            return;
        p->stop_sent = true;
        if (x->ops.stop)
            x->ops.stop(x->ops.user, p->h, p->stop_reason);
    }
}

static void release(tm2__pex *x, pex_peer *p, const char *why)
{
    if (p->stop_pending)
        return;
    mark_stop(p, 0);
    bump(x, ST_peers_released, 1);
    plog(x, TM2_LOG_DEBUG, "discovery releases peer", "peer=%s reason=%s", p->info.id.s,
         why);
}

static void strike(tm2__pex *x, pex_peer *p, int reason, const char *what)
{
    p->strikes++;
    if (p->strikes < x->cfg.abuse_limit || p->stop_pending)
        return;
    mark_stop(p, reason);
    bump(x, ST_peers_stopped, 1);
    plog(x, TM2_LOG_WARN,
         "stopping peer for discovery abuse", "peer=%s strikes=%" PRIu32 " last=%s",
         p->info.id.s, p->strikes, what);
}

/* ---- book ----------------------------------------------------------------------- */

static bool skip_for_dial(const tm2__addrbook_entry *e, void *user)
{
    const tm2__pex *x = user;
    const tm2_id *id = &e->addr.id;
    return is_self(x, id) || find_peer_id(x, id) || is_seed(x, id) || is_persistent(x, id);
}

/* The source of what a peer tells us, for the book's placement: its
 * connection's address (the address dialled, or the socket's peer), never
 * the address it advertises. */
static const tm2_netaddr *source_of(const pex_peer *p)
{
    static const tm2_netaddr unknown;
    if (!tm2_netaddr_is_unspecified(&p->info.remote))
        return &p->info.remote;
    return p->info.outbound ? &p->info.dialled : &unknown;
}

/* Picks up to max book entries (back-off honoured unless ignore_backoff),
 * marks them attempted and hands them to the switch. Tried-table
 * occupants that a newcomer waits to replace are dialled first, so the
 * book learns whether they still work (test-before-evict). */
static size_t dial_from_book(tm2__pex *x, tm2__pex_time t, size_t max, bool ignore_backoff)
{
    tm2_netaddr c[MAX_DIALS_PER_TICK];
    if (max > MAX_DIALS_PER_TICK)
        max = MAX_DIALS_PER_TICK;
    if (max == 0)
        return 0;
    int64_t now = ignore_backoff ? TM2__ADDRBOOK_TIME_MAX : t.unix_s;
    size_t n = tm2__addrbook_collision_tests(x->book, t.unix_s, skip_for_dial, x, c, max);
    if (n < max) {
        /* Not the collision tests again (select leaves out what c holds
         * only within its own answer). */
        size_t m = tm2__addrbook_select(x->book, now, skip_for_dial, x, c + n, max - n);
        size_t k = n;
        for (size_t i = n; i < n + m; i++) {
            bool dup = false;
            for (size_t j = 0; j < n && !dup; j++)
                dup = id_eq(&c[j].id, &c[i].id);
            if (!dup)
                c[k++] = c[i];
        }
        n = k;
    }
    for (size_t i = 0; i < n; i++)
        tm2__addrbook_mark_attempt(x->book, &c[i].id, t.unix_s);
    if (n)
        plog(x, TM2_LOG_DEBUG, "dialling from the address book", "count=%zu", n);
    dial(x, c, n);
    return n;
}

static void save_error(tm2__pex *x, uint32_t n, int rc, const char *why)
{
    bump(x, ST_book_save_errors, n);
    plog(x, TM2_LOG_ERROR, "cannot save the address book", "err=%s reason=%s",
         tm2_strerror(rc), why);
}

static void apply_saves(tm2__pex *x, const tm2__pex_save_result *r)
{
    if (r->saves + r->errors == 0)
        return;
    if (r->saves)
        bump(x, ST_book_saves, r->saves);
    if (r->errors)
        save_error(x, r->errors, r->err, r->why);
    /* Clean only if nothing changed since that encode. */
    if (r->rc == 0)
        tm2__addrbook_saved(x->book, r->gen);
    if (x->save_sent && r->gen == x->save_gen) {
        x->save_done = true;
        x->save_rc = r->rc;
    }
}

static void collect_saves(tm2__pex *x)
{
    if (!x->ops.save_collect)
        return;
    tm2__pex_save_result r;
    x->ops.save_collect(x->ops.user, &r);
    apply_saves(x, &r);
}

/* The book's size, whole and its tried part, for readers on other threads. */
static void publish_book_size(tm2__pex *x)
{
    atomic_store_explicit(&x->st[ST_book_size], tm2__addrbook_size(x->book), memory_order_relaxed);
    atomic_store_explicit(&x->st[ST_book_tried], tm2__addrbook_tried_count(x->book),
                          memory_order_relaxed);
}

/* Encoding stays here (the book is the network thread's); the write goes
 * to ops->save_submit. force: also when clean (at stop). */
static void save_book(tm2__pex *x, bool force)
{
    if (!x->path)
        return;
    collect_saves(x);
    if (!force && !tm2__addrbook_dirty(x->book))
        return;
    /* That generation waits or is being written (or, unless forced, is
     * written and not yet collected): another copy would add nothing, so
     * it is not even encoded. A failed one is tried again. */
    uint64_t gen = tm2__addrbook_gen(x->book);
    if (x->save_sent && gen == x->save_gen &&
        (!x->save_done || (!force && x->save_rc == 0)))
        return;
    char *text;
    size_t len;
    if (tm2__addrbook_encode(x->book, &text, &len, &gen) < 0) {
        save_error(x, 1, TM2_ENOMEM, "out of memory encoding the address book");
        return;
    }
    x->save_sent = true;
    x->save_gen = gen;
    x->save_done = false;
    x->save_rc = 0;
    if (!x->ops.save_submit) {
        tm2__pex_save_result r = {.gen = gen};
        r.rc = tm2__addrbook_write_file(x->path, text, len, r.why, sizeof r.why);
        free(text);
        if (r.rc < 0) {
            r.errors = 1;
            r.err = r.rc;
        } else {
            r.saves = 1;
        }
        apply_saves(x, &r);
        return;
    }
    int rc = x->ops.save_submit(x->ops.user, text, len, gen);
    if (rc < 0) {
        x->save_done = true;
        x->save_rc = rc;
        save_error(x, 1, rc, "the address book writer refused it");
        return;
    }
    collect_saves(x);   /* a synchronous writer has finished already */
}

/* ---- requests and answers --------------------------------------------------------- */

static void send_request(tm2__pex *x, pex_peer *p, tm2__pex_time t)
{
    uint8_t req[TM2__PEX_REQUEST_SIZE];
    int len = tm2__pex_encode_request(req, sizeof req);
    int rc = len < 0 ? len : x->ops.send(x->ops.user, p->h, req, (size_t)len);
    if (rc == 0) {
        if (p->asked < MAX_ASKED)
            p->asked++;
        p->asked_ms = t.ms;
        bump(x, ST_requests_sent, 1);
        plog(x, TM2_LOG_DEBUG, "discovery request sent", "peer=%s", p->info.id.s);
    } else {
        plog(x, TM2_LOG_DEBUG, "discovery request not sent", "peer=%s err=%s",
             p->info.id.s, tm2_strerror(rc));
    }
}

/* Reservoir of at most max addresses, uniformly drawn from what is offered. */
typedef struct pick {
    tm2__pex *x;
    tm2_netaddr *out;
    size_t max, n, seen;
} pick;

static void offer(pick *k, const tm2_netaddr *a)
{
    if (k->n < k->max) {
        k->out[k->n++] = *a;
    } else {
        /* seen is bounded by the book and the peer set, far below 2^32. */
        uint32_t j = uniform(k->x, (uint32_t)(k->seen + 1));
        if (j < k->max)
            k->out[j] = *a;
    }
    k->seen++;
}

static bool shareable_peer(const tm2__pex *x, const pex_peer *asker, const pex_peer *p)
{
    return p != asker && !p->stop_pending && p->info.has_addr && !p->info.is_private &&
           !id_eq(&p->info.id, &asker->info.id) && !is_self(x, &p->info.id) &&
           !is_private(x, &p->info.id);
}

typedef struct share_filter {
    const tm2__pex *x;
    const pex_peer *asker;
} share_filter;

/* Book entries a seed leaves out of answers: the asker, us, connected
 * peers (offered from the peer set), private peers, and addresses that
 * failed twice in a row. */
static bool skip_for_share(const tm2__addrbook_entry *e, void *user)
{
    const share_filter *f = user;
    const tm2_id *id = &e->addr.id;
    return e->attempts >= SHARE_MAX_ATTEMPTS || id_eq(id, &f->asker->info.id) ||
           is_self(f->x, id) || find_peer_id(f->x, id) || is_private(f->x, id);
}

static size_t select_answer(tm2__pex *x, const pex_peer *asker, int64_t now, tm2_netaddr *out)
{
    pick k = {.x = x, .out = out, .max = x->cfg.max_addrs};
    for (size_t i = 0; i < x->n_peers; i++)
        if (shareable_peer(x, asker, x->peers[i]))
            offer(&k, &x->peers[i]->info.addr);
    if (x->cfg.seed_mode) {
        /* A seed's peers come and go; its book is what it knows: a sample
         * drawn across its buckets, so no source's share of the answer
         * exceeds its share of the buckets. */
        tm2_netaddr from_book[TM2_DISCOVERY_MAX_ADDRS];
        share_filter f = {.x = x, .asker = asker};
        size_t n = tm2__addrbook_sample(x->book, now, skip_for_share, &f, from_book,
                                        x->cfg.max_addrs);
        for (size_t i = 0; i < n; i++)
            offer(&k, &from_book[i]);
    }
    shuffle(x, out, k.n);
    return k.n;
}

/* Seed mode: the peer leaves seed_disconnect_ms after the first exchange. */
static void exchanged(tm2__pex *x, pex_peer *p, tm2__pex_time t)
{
    if (!x->cfg.seed_mode || p->info.persistent || p->exchanged)
        return;
    p->exchanged = true;
    uint64_t at = t.ms + x->cfg.seed_disconnect_ms;
    if (p->release_at == 0 || at < p->release_at)
        p->release_at = at;
}

static void handle_request(tm2__pex *x, pex_peer *p, tm2__pex_time t)
{
    bump(x, ST_requests_received, 1);
    if (p->req_seen && t.ms - p->last_req_ms < x->cfg.request_min_gap_ms) {
        bump(x, ST_requests_ignored, 1);
        plog(x, TM2_LOG_DEBUG, "discovery request ignored: too soon", "peer=%s",
             p->info.id.s);
        strike(x, p, TM2_EABUSE, "requests too often");
        return;
    }
    p->req_seen = true;
    p->last_req_ms = t.ms;

    tm2_netaddr sel[TM2_DISCOVERY_MAX_ADDRS];
    size_t n = select_answer(x, p, t.unix_s, sel);
    if (n == 0) {
        plog(x, TM2_LOG_DEBUG, "no peers to share", "peer=%s", p->info.id.s);
    } else {
        uint8_t buf[RESPONSE_BUF];
        int len = tm2__pex_encode_response(sel, n, buf, sizeof buf);
        int rc = len < 0 ? len : x->ops.send(x->ops.user, p->h, buf, (size_t)len);
        if (rc == 0) {
            bump(x, ST_requests_answered, 1);
            plog(x, TM2_LOG_DEBUG, "discovery request answered", "peer=%s count=%zu",
                 p->info.id.s, n);
        } else {
            plog(x, TM2_LOG_DEBUG, "discovery response not sent", "peer=%s err=%s",
                 p->info.id.s, tm2_strerror(rc));
        }
    }
    exchanged(x, p, t);
}

static void reject(tm2__pex *x, pex_peer *p, int counter, const char *what, int err)
{
    bump(x, counter, 1);
    bump(x, ST_responses_rejected, 1);
    plog(x, TM2_LOG_WARN, "discovery response rejected", "peer=%s reason=%s err=%s",
         p->info.id.s, what, tm2_strerror(err));
    strike(x, p, TM2_EPROTO, what);
}

static void handle_response(tm2__pex *x, pex_peer *p, const tm2_netaddr *addrs, size_t n,
                            tm2__pex_time t)
{
    bump(x, ST_addrs_received, n);
    /* A seed-mode node crawls the book on its own schedule; others dial
     * what they hear while below the target. */
    size_t need = x->cfg.seed_mode ? 0 : dial_need(x);
    tm2_netaddr to_dial[TM2_DISCOVERY_MAX_ADDRS];
    size_t k = 0, added = 0, accepted = 0;
    for (size_t i = 0; i < n; i++) {
        const tm2_netaddr *a = &addrs[i];
        if (is_self(x, &a->id)) {
            bump(x, ST_addrs_rejected, 1);
            continue;
        }
        /* The switch dials its seeds itself; they stay out of the book. */
        if (is_seed(x, &a->id))
            continue;
        int r = tm2__addrbook_add(x->book, a, source_of(p), t.unix_s);
        if (r < 0) {
            bump(x, ST_addrs_rejected, 1);
            continue;
        }
        accepted++;
        added += r == TM2__AB_ADDED;
        if (k >= need || find_peer_id(x, &a->id) || is_persistent(x, &a->id))
            continue;
        /* The book may keep a proven address for this ID: dial that one. */
        const tm2__addrbook_entry *e = tm2__addrbook_find(x->book, &a->id);
        if (!e || tm2__addrbook_retry_at(x->book, e) > t.unix_s)
            continue;
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = id_eq(&to_dial[j].id, &e->addr.id);
        if (dup)
            continue;
        to_dial[k++] = e->addr;
        tm2__addrbook_mark_attempt(x->book, &a->id, t.unix_s);
    }
    bump(x, ST_addrs_accepted, accepted);
    plog(x, TM2_LOG_DEBUG,
         "discovery response", "peer=%s count=%zu accepted=%zu new=%zu dial=%zu",
         p->info.id.s, n, accepted, added, k);
    dial(x, to_dial, k);
}

void tm2__pex_receive(tm2__pex *x, void *peer, const uint8_t *msg, size_t len, tm2__pex_time t)
{
    pex_peer *p = x ? find_peer(x, peer) : NULL;
    if (!p || p->stop_pending)
        return;
    tm2__pex_msg m;
    tm2_netaddr addrs[TM2_DISCOVERY_MAX_ADDRS];
    int rc = tm2__pex_decode(msg, len, &m, addrs, x->cfg.max_addrs);

    if (m.kind == TM2__PEX_REQUEST && rc == 0) {
        handle_request(x, p, t);
    } else if (m.kind == TM2__PEX_RESPONSE) {
        bump(x, ST_responses_received, 1);
        if (p->asked == 0) {
            reject(x, p, ST_responses_unsolicited, "unsolicited", TM2_EPROTO);
        } else {
            p->asked--;
            size_t bad = 0;
            if (rc == TM2_ETOOBIG) {
                reject(x, p, ST_responses_oversized, "too many addresses", rc);
            } else if (rc < 0) {
                reject(x, p, ST_responses_malformed, "malformed", rc);
            } else if ((rc = tm2__pex_response_validate(addrs, m.n_addrs, &bad)) < 0) {
                reject(x, p, ST_responses_invalid, "invalid address list", rc);
            } else {
                exchanged(x, p, t);
                handle_response(x, p, addrs, m.n_addrs, t);
            }
        }
    } else {
        /* The reference logs and ignores undecodable messages; so do we,
         * up to the strike limit. */
        bump(x, ST_messages_undecodable, 1);
        plog(x, TM2_LOG_WARN, "undecodable discovery message", "peer=%s len=%zu err=%s",
             p->info.id.s, len, tm2_strerror(rc < 0 ? rc : TM2_EPROTO));
        strike(x, p, TM2_EPROTO, "undecodable message");
    }
    flush_stops(x);
}

/* ---- peers -------------------------------------------------------------------- */

int tm2__pex_add_peer(tm2__pex *x, void *peer, const tm2__pex_peer_info *info, tm2__pex_time t)
{
    if (!x || !peer || !info)
        return TM2_EINVAL;
    if (find_peer(x, peer))
        return TM2_EEXIST;
    if (x->n_peers == x->cap_peers) {
        size_t cap = x->cap_peers ? 2 * x->cap_peers : 16;
        pex_peer **np = realloc(x->peers, cap * sizeof *np);
        if (!np)
            return TM2_ENOMEM;
        x->peers = np;
        x->cap_peers = cap;
    }
    pex_peer *p = calloc(1, sizeof *p);
    if (!p)
        return TM2_ENOMEM;
    p->h = peer;
    p->info = *info;
    x->peers[x->n_peers++] = p;

    /* The book learns addresses known to work (the one we dialled, marked
     * connected as the reference does) and what inbound peers advertise;
     * the switch's seeds stay out of it, and so do private peers. */
    if (!is_seed(x, &info->id) && !info->is_private && !is_private(x, &info->id) &&
        !is_self(x, &info->id)) {
        if (info->outbound) {
            if (tm2__addrbook_add(x->book, &info->dialled, NULL, t.unix_s) >= 0)
                tm2__addrbook_mark_connected(x->book, &info->dialled, t.unix_s);
        } else if (info->has_addr) {
            tm2__addrbook_add(x->book, &info->addr, source_of(p), t.unix_s);
        }
    }

    if (x->cfg.seed_mode && !info->persistent)
        p->release_at = t.ms + x->cfg.seed_disconnect_ms + 2 * (uint64_t)x->cfg.interval_ms;
    /* New outbound peers are asked at once (as the reference v1.2.0 does),
     * and so is the survivor of a crossing that holds the slot of our dial
     * to it: we chose it as much as one we dialled. A seed-mode node asks
     * everyone, since it keeps no one for long. */
    if (info->has_channel && (info->outbound || info->slot_out || x->cfg.seed_mode))
        send_request(x, p, t);
    flush_stops(x);
    return 0;
}

bool tm2__pex_remove_peer(tm2__pex *x, void *peer)
{
    if (!x)
        return false;
    for (size_t i = 0; i < x->n_peers; i++) {
        if (x->peers[i]->h != peer)
            continue;
        free(x->peers[i]);
        x->peers[i] = x->peers[--x->n_peers];
        return true;
    }
    return false;
}

void tm2__pex_dial_failed(tm2__pex *x, const tm2_id *id, tm2__pex_time t)
{
    if (!x || !id)
        return;
    if (tm2__addrbook_mark_failure(x->book, id, t.unix_s) == 0) {
        bump(x, ST_dial_failures, 1);
        plog(x, TM2_LOG_DEBUG, "discovery dial failed", "peer=%s", id->s);
    }
}

/* ---- the tick -------------------------------------------------------------------- */

/* A peer asked less than an interval ago (on connect, typically) is left
 * out, so its rate limit does not count the second Request against it. A
 * seed mode node asks only the peers it keeps (persistent: other seeds),
 * the rest having been asked on connect and soon let go. */
static bool askable(const tm2__pex *x, const pex_peer *p, tm2__pex_time t)
{
    return p->info.has_channel && !p->stop_pending &&
           (!x->cfg.seed_mode || p->release_at == 0) &&
           (p->asked_ms == 0 || t.ms - p->asked_ms >= x->cfg.interval_ms);
}

static void request_random(tm2__pex *x, tm2__pex_time t)
{
    size_t n = 0;
    for (size_t i = 0; i < x->n_peers; i++)
        n += askable(x, x->peers[i], t);
    if (n == 0)
        return;
    size_t pickno = uniform(x, (uint32_t)n);
    for (size_t i = 0; i < x->n_peers; i++) {
        pex_peer *p = x->peers[i];
        if (!askable(x, p, t))
            continue;
        if (pickno-- == 0) {
            send_request(x, p, t);
            return;
        }
    }
}

void tm2__pex_tick(tm2__pex *x, tm2__pex_time t)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n_peers; i++)
        if (x->peers[i]->strikes)
            x->peers[i]->strikes--;

    /* Every outbound peer still held keeps its connection mark fresh (a
     * mark lapses a day after it was last renewed). */
    for (size_t i = 0; i < x->n_peers; i++) {
        const pex_peer *p = x->peers[i];
        if (p->info.outbound && !p->stop_pending)
            tm2__addrbook_mark_connected(x->book, &p->info.dialled, t.unix_s);
    }

    if (x->cfg.seed_mode) {
        for (size_t i = 0; i < x->n_peers; i++) {
            pex_peer *p = x->peers[i];
            if (p->release_at && t.ms >= p->release_at)
                release(x, p, "seed mode");
        }
    }
    /* Seeds too: asked only on connect, seeds that keep each other would
     * trade what they knew then, when they knew little, and never again:
     * each would hand its own part of the network to the nodes it meets. */
    request_random(x, t);
    flush_stops(x);

    size_t settled = tm2__addrbook_resolve(x->book, t.unix_s);
    if (settled)
        plog(x, TM2_LOG_DEBUG, "tried-table collisions settled", "count=%zu", settled);
    dial_from_book(x, t, dial_need(x), false);

    size_t gone = tm2__addrbook_expire(x->book, t.unix_s);
    if (gone)
        plog(x, TM2_LOG_DEBUG, "dead addresses dropped", "count=%zu", gone);
    save_book(x, false);
    publish_book_size(x);
    flush_stops(x);
}

/* ---- lifecycle ------------------------------------------------------------------ */

void tm2__pex_start(tm2__pex *x, const tm2_id *self, tm2__pex_time t)
{
    if (!x)
        return;
    if (self)
        x->self = *self;
    tm2__addrbook_remove(x->book, &x->self);
    /* A restart is a fresh situation: every remembered address may be
     * tried at once, whatever its back-off said. */
    size_t n = dial_from_book(x, t, x->cfg.target_outbound, true);
    publish_book_size(x);
    plog(x, TM2_LOG_INFO, "discovery started", "book=%zu book_dials=%zu seed_mode=%s",
         tm2__addrbook_size(x->book), n, x->cfg.seed_mode ? "true" : "false");
}

void tm2__pex_stop(tm2__pex *x, tm2__pex_time t)
{
    (void)t;
    if (!x)
        return;
    save_book(x, true);
    /* Shutdown may block: the book on disk must be the final one. */
    if (x->path && x->ops.save_drain) {
        x->ops.save_drain(x->ops.user);
        collect_saves(x);
    }
    plog(x, TM2_LOG_INFO, "discovery stopped", "book=%zu", tm2__addrbook_size(x->book));
}

static int fill_config(tm2_discovery_config *c)
{
    if (c->interval_ms == 0)
        c->interval_ms = TM2_DISCOVERY_DEFAULT_INTERVAL_MS;
    if (c->max_addrs == 0)
        c->max_addrs = TM2_DISCOVERY_MAX_ADDRS;
    if (c->max_addrs > TM2_DISCOVERY_MAX_ADDRS)
        return TM2_EINVAL;
    if (c->request_min_gap_ms == 0)
        c->request_min_gap_ms = c->interval_ms / 2;
    if (c->abuse_limit == 0)
        c->abuse_limit = DEF_ABUSE_LIMIT;
    if (c->addrbook_max == 0)
        c->addrbook_max = TM2__ADDRBOOK_DEFAULT_MAX;
    if (c->addrbook_max > TM2__ADDRBOOK_MAX_LIMIT)
        return TM2_EINVAL;
    if (c->seed_disconnect_ms == 0)
        c->seed_disconnect_ms = DEF_SEED_DISCONNECT_MS;
    if (c->target_outbound == 0)
        c->target_outbound = DEF_TARGET_OUTBOUND;
    return 0;
}

static void load_book(tm2__pex *x, int64_t unix_now, int *err)
{
    char why[512];
    int rc = tm2__addrbook_load(x->book, x->path, unix_now, why, sizeof why);
    if (rc >= 0) {
        plog(x, TM2_LOG_INFO, "address book loaded", "path=%s entries=%d", x->path, rc);
    } else if (rc == TM2_ENOTFOUND) {
        plog(x, TM2_LOG_INFO, "no address book yet", "path=%s", x->path);
    } else if (rc == TM2_EDECODE || rc == TM2_ETOOBIG) {
        plog(x, TM2_LOG_WARN, "corrupt address book moved aside", "reason=%s", why);
    } else {
        plog(x, TM2_LOG_ERROR, "cannot load the address book", "err=%s reason=%s",
             tm2_strerror(rc), why);
        *err = rc == TM2_ENOMEM ? TM2_ENOMEM : TM2_EIO;
    }
}

int tm2__pex_new(const tm2_discovery_config *cfg, const tm2__pex_ops *ops, int64_t unix_now,
                 tm2__pex **out)
{
    if (!cfg || !ops || !ops->send || !out)
        return TM2_EINVAL;
    *out = NULL;
    int n_save = !!ops->save_submit + !!ops->save_collect + !!ops->save_drain;
    if (n_save != 0 && n_save != 3)
        return TM2_EINVAL;
    tm2__pex *x = calloc(1, sizeof *x);
    if (!x)
        return TM2_ENOMEM;
    x->cfg = *cfg;
    x->ops = *ops;
    int rc = fill_config(&x->cfg);
    if (rc < 0)
        goto fail;
    rc = TM2_ENOMEM;
    if (cfg->addrbook_path) {
        x->path = strdup(cfg->addrbook_path);
        if (!x->path)
            goto fail;
    }
    x->cfg.addrbook_path = x->path;
    /* An address is tried again ten intervals after an attempt at the
     * soonest (doubling per failure): 30 s at the reference's 3 s interval,
     * proportionally less on a faster test network. */
    int64_t retry = (int64_t)x->cfg.interval_ms * 10 / 1000;
    uint8_t key[TM2__ADDRBOOK_KEY_LEN] = {0};
    uint64_t seed = 0;
    if (ops->random) {
        ops->random(ops->user, key, sizeof key);
        ops->random(ops->user, &seed, sizeof seed);
    }
    tm2__addrbook_config bc = {
        .key = key,
        .seed = seed,
        .max_entries = x->cfg.addrbook_max,
        .retry_base = retry < 1 ? 1 : retry > TM2__ADDRBOOK_RETRY_BASE ? TM2__ADDRBOOK_RETRY_BASE
                                                                      : retry,
        .group_local = x->cfg.limit_local_addrs,
    };
    rc = tm2__addrbook_new(NULL, &bc, &x->book);
    sodium_memzero(key, sizeof key);
    if (rc < 0)
        goto fail;
    if (x->path) {
        rc = 0;
        load_book(x, unix_now, &rc);
        if (rc < 0)
            goto fail;
    }
    *out = x;
    return 0;
fail:
    tm2__pex_free(x);
    return rc;
}

void tm2__pex_free(tm2__pex *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n_peers; i++) {
        if (x->ops.forget)
            x->ops.forget(x->ops.user, x->peers[i]->h);
        free(x->peers[i]);
    }
    free(x->peers);
    tm2__addrbook_free(x->book);
    free(x->path);
    free(x);
}

const tm2_discovery_config *tm2__pex_config(const tm2__pex *x) { return &x->cfg; }

void tm2__pex_stats(const tm2__pex *x, tm2_discovery_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!x)
        return;
#define X(n) out->n = atomic_load_explicit(&x->st[ST_##n], memory_order_relaxed);
    STATS(X)
#undef X
}

tm2__addrbook *tm2__pex_book(tm2__pex *x) { return x ? x->book : NULL; }

int tm2__pex_strikes(const tm2__pex *x, void *peer)
{
    const pex_peer *p = x ? find_peer(x, peer) : NULL;
    return p ? (int)p->strikes : -1;
}
