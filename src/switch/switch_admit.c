/* The switch's defences for a node facing the public internet:
 *   - admission before the handshake (the transport's admit hook): IP bans,
 *     handshakes in flight per IP, inbound peers per IP and per subnet, a
 *     full inbound side with nothing to evict, accept rates per IP and per
 *     subnet (token buckets);
 *   - admission after the handshake: ID bans, the per-IP and per-subnet
 *     limits again (for handshakes that raced), the inbound cap, with
 *     unconditional peers exempt and eviction (switch/evict.h) making room;
 *   - outbound diversity (one outbound peer per network group);
 *   - bans for misbehaviour, and the ban file.
 * Everything here runs on the network thread unless it says otherwise. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "switch/switch_internal.h"

/* One summary line of refusals at accept at most this often. */
#define REFUSAL_LOG_INTERVAL_MS 10000u

/* ---- labels --------------------------------------------------------------------------- */

const char *tm2_refusal_name(int refusal)
{
    static const char *const names[TM2_REFUSALS] = {
        "full", "pending_ip", "rate_ip", "rate_subnet", "per_ip", "per_subnet", "banned",
    };
    return refusal >= 0 && refusal < TM2_REFUSALS ? names[refusal] : "?";
}

const char *tm2_eviction_name(int eviction)
{
    static const char *const names[TM2_EVICTIONS] = {"newcomer", "persistent"};
    return eviction >= 0 && eviction < TM2_EVICTIONS ? names[eviction] : "?";
}

/* ---- groups and counts ------------------------------------------------------------------ */

bool tm2__sw_addr_exempt(const tm2_switch *sw, const tm2_netaddr *a)
{
    return !sw->limit_local && tm2__addr_is_local(a);
}

/* Inbound peers the limits count: listed, staying, neither unconditional
 * nor persistent. */
static bool limited_inbound(const tm2_peer *p)
{
    return p->listed && !p->removing && !tm2__peer_counts_out(p) && !p->uncond && !p->persistent;
}

/* Limited inbound peers in a's group of granularity by. */
static size_t count_in_group(tm2_switch *sw, const tm2_netaddr *a, int by)
{
    tm2__group_key k, pk;
    tm2__group_key_of(a, by, sw->limit_local, &k);
    size_t c = 0;
    for (size_t i = 0, n = tm2__peer_set_count(&sw->peers); i < n; i++) {
        const tm2_peer *p = tm2__peer_set_at(&sw->peers, i)->peer;
        if (!limited_inbound(p))
            continue;
        tm2__group_key_of(&p->socket_addr, by, sw->limit_local, &pk);
        c += tm2__group_eq(&k, &pk);
    }
    return c;
}

/* Inbound peers counted by max_inbound. */
static size_t inbound_used(const tm2_switch *sw)
{
    return sw->n_in - sw->n_uncond_in;
}

/* A configured unconditional or persistent peer not connected: a socket
 * may be it, which only its handshake tells. */
static bool reserved_missing(tm2_switch *sw)
{
    for (size_t i = 0; i < sw->n_uncond; i++)
        if (strcmp(sw->uncond_ids[i].s, sw->id.s) != 0 &&
            !tm2__peer_set_has(&sw->peers, &sw->uncond_ids[i]))
            return true;
    for (size_t i = 0; i < sw->n_persistent; i++)
        if (!tm2__peer_set_has(&sw->peers, &sw->persistent[i].id))
            return true;
    return false;
}

/* A dial of ours to this IP in flight: the socket may be the other half of
 * a simultaneous open, which passes a full inbound side. */
static bool dialling_ip(tm2_switch *sw, const tm2_netaddr *a)
{
    for (size_t i = 0, n = tm2__peer_set_count(&sw->inflight); i < n; i++) {
        const tm2__dial_ctx *ctx = tm2__peer_set_at(&sw->inflight, i)->peer;
        if (!ctx->resolving && memcmp(ctx->addr.ip, a->ip, 16) == 0)
            return true;
    }
    return false;
}

/* ---- eviction ------------------------------------------------------------------------------ */

static uint64_t group_rank(const tm2_switch *sw, const tm2__group_key *k)
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, k->b, sizeof k->b, sw->group_hash_key);
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return v;
}

/* The peer to evict for a newcomer, or NULL. */
static tm2_peer *pick_victim(tm2_switch *sw)
{
    size_t n = tm2__peer_set_count(&sw->peers);
    tm2__evict_peer *ev = n ? malloc(n * sizeof *ev) : NULL;
    if (!ev)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        tm2_peer *p = tm2__peer_set_at(&sw->peers, i)->peer;
        if (!p->listed || p->removing || tm2__peer_counts_out(p) || p->uncond)
            continue;
        tm2__evict_peer *e = &ev[k++];
        tm2__group_key_of(&p->socket_addr, TM2__BY_NETGROUP, sw->limit_local, &e->group);
        e->group_rank = group_rank(sw, &e->group);
        e->seq = p->seq;
        e->last_msg_ms = p->last_msg_ms;
        e->min_rtt_ms = tm2__mcs_min_rtt(&p->conn->mcs);
        e->candidate = !p->persistent;
        e->user = i;
    }
    long v = tm2__evict_select(ev, k, &sw->evict);
    tm2_peer *victim = v >= 0 ? tm2__peer_set_at(&sw->peers, ev[v].user)->peer : NULL;
    free(ev);
    return victim;
}

/* No limited inbound peer holds a's network group. */
static bool fresh_group(tm2_switch *sw, const tm2_netaddr *a)
{
    return count_in_group(sw, a, TM2__BY_NETGROUP) == 0;
}

void tm2__sw_evict(tm2_switch *sw, tm2_peer *victim, int reason, const tm2_id *for_id)
{
    if (reason >= 0 && reason < TM2_EVICTIONS)
        tm2__ctr_add(&sw->ctr.evicted[reason], 1);
    char why[TM2__SW_REASON_LEN];
    snprintf(why, sizeof why, "evicted: inbound peers full, room made for %s %s",
             reason == TM2_EVICTED_PERSISTENT ? "persistent peer" : "newcomer",
             for_id ? for_id->s : "");
    tm2__sw_peer_remove(sw, victim, TM2_EEVICTED, why);
}

/* ---- refusals at accept -------------------------------------------------------------------------- */

static void refusal_log(tm2_switch *sw, bool flush)
{
    uint64_t total = 0;
    for (size_t i = 0; i < TM2_REFUSALS; i++)
        total += sw->refused_unlogged[i];
    if (!total)
        return;
    uint64_t now = tm2__sw_now(sw);
    if (sw->refused_log_started && now - sw->refused_log_ms < REFUSAL_LOG_INTERVAL_MS)
        return;
    if (flush && !sw->refused_log_started)
        return;   /* the first line is written by the refusal itself */
    sw->refused_log_started = true;
    sw->refused_log_ms = now;
    char by[256];
    size_t o = 0;
    by[0] = '\0';
    for (size_t i = 0; i < TM2_REFUSALS; i++) {
        if (!sw->refused_unlogged[i])
            continue;
        int w = snprintf(by + o, sizeof by - o, "%s%s:%" PRIu64, o ? "," : "", tm2_refusal_name((int)i),
                         sw->refused_unlogged[i]);
        if (w < 0 || (size_t)w >= sizeof by - o)
            break;
        o += (size_t)w;
    }
    tm2__sw_log(sw, TM2_LOG_WARN, "inbound connections refused before the handshake",
                "count=%" PRIu64 " by_reason=%s", total, by);
    memset(sw->refused_unlogged, 0, sizeof sw->refused_unlogged);
}

void tm2__sw_refusal_log_flush(tm2_switch *sw)
{
    refusal_log(sw, true);
}

static int refuse(tm2_switch *sw, int why)
{
    tm2__ctr_add(&sw->ctr.refused[why], 1);
    sw->refused_unlogged[why]++;
    refusal_log(sw, false);
    return why + 1;
}

int tm2__sw_admit(tm2__transport *t, const tm2_netaddr *remote, size_t pending_from_ip)
{
    tm2_switch *sw = t->data;
    if (sw->stopping)
        return 0;   /* the transport closes it soon */
    if (tm2__sw_banned_ip(sw, remote))
        return refuse(sw, TM2_REFUSED_BANNED);
    bool exempt = tm2__sw_addr_exempt(sw, remote);
    if (!exempt) {
        if (sw->max_pending_in_ip && pending_from_ip >= sw->max_pending_in_ip)
            return refuse(sw, TM2_REFUSED_PENDING_IP);
        if (sw->allow_duplicate_ip && sw->max_in_ip &&
            count_in_group(sw, remote, TM2__BY_IP) >= sw->max_in_ip)
            return refuse(sw, TM2_REFUSED_PER_IP);
        if (sw->max_in_subnet && count_in_group(sw, remote, TM2__BY_SUBNET) >= sw->max_in_subnet)
            return refuse(sw, TM2_REFUSED_PER_SUBNET);
    }
    if (inbound_used(sw) >= sw->max_inbound && !reserved_missing(sw) && !dialling_ip(sw, remote) &&
        !(sw->evict_inbound && fresh_group(sw, remote) && pick_victim(sw)))
        return refuse(sw, TM2_REFUSED_FULL);
    if (!exempt) {
        /* Last: a token goes only to a socket that starts a handshake. */
        tm2__group_key ip, net;
        tm2__group_key_of(remote, TM2__BY_IP, true, &ip);
        tm2__group_key_of(remote, TM2__BY_SUBNET, true, &net);
        uint64_t now = tm2__sw_now(sw);
        if (sw->rate_ip.e && !tm2__rate_peek(&sw->rate_ip, &ip, now, sw->accept_ip_rate,
                                             sw->accept_ip_burst))
            return refuse(sw, TM2_REFUSED_RATE_IP);
        if (sw->rate_subnet.e && !tm2__rate_peek(&sw->rate_subnet, &net, now,
                                                 sw->accept_subnet_rate, sw->accept_subnet_burst))
            return refuse(sw, TM2_REFUSED_RATE_SUBNET);
        if (sw->rate_ip.e)
            (void)tm2__rate_take(&sw->rate_ip, &ip, now, sw->accept_ip_rate, sw->accept_ip_burst);
        if (sw->rate_subnet.e)
            (void)tm2__rate_take(&sw->rate_subnet, &net, now, sw->accept_subnet_rate,
                                 sw->accept_subnet_burst);
    }
    return 0;
}

/* ---- admission after the handshake ------------------------------------------------------------ */

static void ban_until_text(const tm2_ban *b, int64_t now, char *out, size_t cap)
{
    if (!b->expires_unix_ms) {
        snprintf(out, cap, "for good");
        return;
    }
    int64_t left = b->expires_unix_ms - now;
    snprintf(out, cap, "for %" PRId64 " s more", left > 0 ? (left + 999) / 1000 : 0);
}

int tm2__sw_admit_verified(tm2_switch *sw, const tm2__transport_conn *c, char *why,
                           size_t why_len, tm2_peer **victim, int *evict_reason)
{
    *victim = NULL;
    tm2_ban hit;
    if (tm2__bans_has_id(&sw->bans, &c->id, tm2__sw_wall(sw), &hit)) {
        char until[48];
        ban_until_text(&hit, tm2__sw_wall(sw), until, sizeof until);
        snprintf(why, why_len, "peer ID banned %s", until);
        return TM2_EBANNED;
    }
    if (c->outbound)
        return 0;
    if (tm2_switch_is_unconditional(sw, &c->id))
        return 0;
    bool persistent = tm2__sw_is_persistent_id(sw, &c->id, NULL);
    if (!persistent && !tm2__sw_addr_exempt(sw, &c->socket_addr)) {
        size_t k;
        if (sw->allow_duplicate_ip && sw->max_in_ip &&
            (k = count_in_group(sw, &c->socket_addr, TM2__BY_IP)) >= sw->max_in_ip) {
            snprintf(why, why_len, "too many inbound peers from this IP (%zu of %u)", k,
                     (unsigned)sw->max_in_ip);
            return TM2_ELIMIT;
        }
        if (sw->max_in_subnet &&
            (k = count_in_group(sw, &c->socket_addr, TM2__BY_SUBNET)) >= sw->max_in_subnet) {
            snprintf(why, why_len, "too many inbound peers from this subnet (%zu of %u)", k,
                     (unsigned)sw->max_in_subnet);
            return TM2_ELIMIT;
        }
    }
    if (inbound_used(sw) < sw->max_inbound)
        return 0;
    if (persistent) {
        /* Room is made if something may go; else it is admitted over the
         * cap (the operator chose it; at most one per persistent peer). */
        if (sw->evict_inbound && (*victim = pick_victim(sw)) != NULL)
            *evict_reason = TM2_EVICTED_PERSISTENT;
        return 0;
    }
    if (sw->evict_inbound && fresh_group(sw, &c->socket_addr) &&
        (*victim = pick_victim(sw)) != NULL) {
        *evict_reason = TM2_EVICTED_NEWCOMER;
        return 0;
    }
    snprintf(why, why_len, "too many inbound peers (%zu of %u)", inbound_used(sw),
             (unsigned)sw->max_inbound);
    return TM2_ELIMIT;
}

/* ---- outbound diversity ------------------------------------------------------------------------- */

bool tm2__sw_group_taken(tm2_switch *sw, const tm2_netaddr *addr)
{
    if (!sw->outbound_diversity || tm2__sw_addr_exempt(sw, addr))
        return false;
    tm2__group_key k, pk;
    tm2__group_key_of(addr, TM2__BY_NETGROUP, sw->limit_local, &k);
    for (size_t i = 0, n = tm2__peer_set_count(&sw->peers); i < n; i++) {
        const tm2_peer *p = tm2__peer_set_at(&sw->peers, i)->peer;
        if (!tm2__peer_counts_out(p) || !p->listed || p->removing || strcmp(p->id.s, addr->id.s) == 0)
            continue;
        tm2__group_key_of(&p->socket_addr, TM2__BY_NETGROUP, sw->limit_local, &pk);
        if (tm2__group_eq(&k, &pk))
            return true;
    }
    for (size_t i = 0, n = tm2__peer_set_count(&sw->inflight); i < n; i++) {
        const tm2__dial_ctx *ctx = tm2__peer_set_at(&sw->inflight, i)->peer;
        if (ctx->resolving || strcmp(ctx->addr.id.s, addr->id.s) == 0)
            continue;
        tm2__group_key_of(&ctx->addr, TM2__BY_NETGROUP, sw->limit_local, &pk);
        if (tm2__group_eq(&k, &pk))
            return true;
    }
    return false;
}

/* ---- bans ---------------------------------------------------------------------------------------- */

bool tm2__sw_banned_id(tm2_switch *sw, const tm2_id *id)
{
    return tm2__bans_has_id(&sw->bans, id, tm2__sw_wall(sw), NULL);
}

bool tm2__sw_banned_ip(tm2_switch *sw, const tm2_netaddr *a)
{
    return tm2__bans_has_ip(&sw->bans, a->ip, tm2__sw_wall(sw), NULL);
}

/* Errors that only a peer breaking the protocol causes. A frame that fails
 * authentication (TM2_EDECRYPT) is not one: anyone on the path can inject
 * bytes into a TCP stream, and a ban would punish the peer for them. */
static bool misbehaviour(int reason)
{
    switch (reason) {
    case TM2_EPROTO:
    case TM2_ECHANNEL:
    case TM2_EMSGSIZE:
    case TM2_EABUSE:
    case TM2_EFRAME:
    case TM2_EDECODE:
    case TM2_ETOOBIG:
    case TM2_ETRUNC:
    case TM2_ETRAILING:
    case TM2_EFIELD:
    case TM2_EWIRETYPE:
    case TM2_EOVERFLOW:
    case TM2_ETYPEURL:
        return true;
    default:
        return false;
    }
}

/* "1h", "90s", "250ms": for texts. */
static void duration_text(uint64_t ms, char *out, size_t cap)
{
    if (ms % 3600000u == 0)
        snprintf(out, cap, "%" PRIu64 "h", ms / 3600000u);
    else if (ms % 60000u == 0)
        snprintf(out, cap, "%" PRIu64 "m", ms / 60000u);
    else if (ms % 1000u == 0)
        snprintf(out, cap, "%" PRIu64 "s", ms / 1000u);
    else
        snprintf(out, cap, "%" PRIu64 "ms", ms);
}

void tm2__sw_ban_misbehaving(tm2_switch *sw, tm2_peer *p, int reason, const char *text)
{
    if (!sw->ban_duration_ms || !misbehaviour(reason) || p->persistent || p->uncond ||
        p->replaced || sw->stopping)
        return;
    int64_t now = tm2__sw_wall(sw);
    tm2_ban b;
    memset(&b, 0, sizeof b);
    b.created_unix_ms = now;
    b.expires_unix_ms = sw->ban_duration_ms > (uint64_t)(INT64_MAX - now)
                            ? 0
                            : now + (int64_t)sw->ban_duration_ms;
    snprintf(b.reason, sizeof b.reason, "%s: %s", tm2_errname(reason), text ? text : "");
    b.id = p->id;
    bool ok = tm2__bans_put(&sw->bans, &b, now) == 0;
    bool ip = !tm2__sw_addr_exempt(sw, &p->socket_addr);
    if (ip) {
        tm2_ban bi = b;
        bi.is_ip = true;
        memcpy(bi.ip, p->socket_addr.ip, 16);
        memset(&bi.id, 0, sizeof bi.id);
        ok = tm2__bans_put(&sw->bans, &bi, now) == 0 && ok;
    }
    if (!ok)
        tm2__sw_log(sw, TM2_LOG_ERROR, "out of memory banning a peer", "peer=%s", p->id.s);
    char dur[32], msg[TM2__SW_REASON_LEN];
    duration_text(sw->ban_duration_ms, dur, sizeof dur);
    snprintf(msg, sizeof msg, "banned for %s (%s): %s", dur, ip ? "ID and IP" : "ID",
             text ? text : tm2_strerror(reason));
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    if (ip)
        memcpy(a.ip, p->socket_addr.ip, 16);
    tm2__sw_publish(sw, TM2_EVENT_PEER_BANNED, &p->id, &a, p->outbound, reason, msg);
    tm2__sw_bans_changed(sw);
}

/* A write of the ban file as engine work (libuv's thread pool). */
typedef struct tm2__ban_save {
    tm2__work work;
    tm2_switch *sw;
    tm2_ban *b;
    size_t n;
    uint64_t gen;
    int64_t now;                    /* the wall clock when the copy was taken */
    int rc;
    char why[512];
} tm2__ban_save;

static void save_work(tm2__work *w)
{
    tm2__ban_save *s = w->data;
    s->rc = tm2_ban_file_save(s->sw->ban_file, s->b, s->n, s->now, s->why, sizeof s->why);
}

static void save_start(tm2_switch *sw);

static void save_done(tm2__work *w, bool cancelled)
{
    tm2__ban_save *s = w->data;
    tm2_switch *sw = s->sw;
    sw->ban_save = NULL;
    if (!cancelled && s->rc == 0)
        sw->bans_saved_gen = s->gen;
    else
        tm2__sw_log(sw, TM2_LOG_ERROR, "cannot save the ban file", "file=%s reason=%s",
                    sw->ban_file, cancelled ? "cancelled" : s->why);
    free(s->b);
    free(s);
    if (!sw->stopping)
        save_start(sw);
    tm2__sw_wake(sw);   /* a stop may be waiting for this write */
}

static void save_start(tm2_switch *sw)
{
    if (!sw->ban_file || sw->ban_save || sw->stopping)
        return;
    uint64_t gen = tm2__bans_gen(&sw->bans);
    if (gen == sw->bans_saved_gen)
        return;
    tm2__ban_save *s = calloc(1, sizeof *s);
    if (!s)
        return;
    int64_t now = tm2__sw_wall(sw);
    size_t n = tm2__bans_copy(&sw->bans, now, NULL, 0);
    s->b = n ? calloc(n, sizeof *s->b) : NULL;
    if (n && !s->b) {
        free(s);
        return;
    }
    s->n = tm2__bans_copy(&sw->bans, now, s->b, n);
    if (s->n > n)
        s->n = n;
    s->gen = gen;
    s->sw = sw;
    s->now = now;
    s->work.data = s;
    s->work.run = save_work;
    s->work.done = save_done;
    if (tm2__work_submit(sw->e, &s->work) != 0) {
        free(s->b);
        free(s);
        return;
    }
    sw->ban_save = s;
}

bool tm2__sw_ban_saving(const tm2_switch *sw)
{
    return sw->ban_save != NULL;
}

void tm2__sw_bans_changed(tm2_switch *sw)
{
    if (sw->stopping)
        return;
    int64_t now = tm2__sw_wall(sw);
    for (size_t i = tm2__peer_set_count(&sw->peers); i-- > 0;) {
        const tm2__peer_entry *e = tm2__peer_set_at(&sw->peers, i);
        if (!e)
            continue;
        tm2_peer *p = e->peer;
        if (p->removing)
            continue;
        if (tm2__bans_has_id(&sw->bans, &p->id, now, NULL) ||
            tm2__bans_has_ip(&sw->bans, p->socket_addr.ip, now, NULL))
            tm2__sw_peer_remove(sw, p, TM2_EBANNED, "banned");
    }
    save_start(sw);
}

void tm2__sw_bans_save_sync(tm2_switch *sw)
{
    if (!sw->ban_file)
        return;
    uint64_t gen = tm2__bans_gen(&sw->bans);
    if (gen == sw->bans_saved_gen)
        return;
    int64_t now = tm2__sw_wall(sw);
    size_t n = tm2__bans_copy(&sw->bans, now, NULL, 0);
    tm2_ban *b = n ? calloc(n, sizeof *b) : NULL;
    if (n && !b) {
        tm2__sw_log(sw, TM2_LOG_ERROR, "cannot save the ban file", "file=%s reason=%s",
                    sw->ban_file, "out of memory");
        return;
    }
    size_t k = tm2__bans_copy(&sw->bans, now, b, n);
    char why[512];
    int rc = tm2_ban_file_save(sw->ban_file, b, k < n ? k : n, now, why, sizeof why);
    free(b);
    if (rc)
        tm2__sw_log(sw, TM2_LOG_ERROR, "cannot save the ban file", "file=%s reason=%s",
                    sw->ban_file, why);
    else
        sw->bans_saved_gen = gen;
}
