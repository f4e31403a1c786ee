/* The dial service (a queue ordered by due time, one timer armed at the
 * earliest), the redial service for persistent peers and the seed rounds,
 * as the reference v1.7.1 runs them (WIRE.md 8.2, 8.3):
 * - persistent peers are dialled only at their configured address: at once
 *   on a first attempt, then after a back-off of 1 s doubling to 30 s
 *   (+-10%); the back-off resets only when a connection lasted the stable
 *   uptime, so a flapping peer keeps backing off and a stable one that
 *   drops is redialled at once; a connect drops any dial still queued;
 * - one seed, picked at random, is dialled at start and every seed interval
 *   while the outbound count is below its cap and no other dial is due;
 * - configured host names are resolved before every dial, as engine work
 *   (libuv's thread pool), never on the network thread.
 *
 * Unlike the reference, the outbound cap is checked again when a queued
 * dial runs, counting the dials already in flight, so it is never
 * overshot. */
#include <inttypes.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "switch/switch_internal.h"

/* Addresses one resolution may return; the first is dialled. */
#define RESOLVE_MAX 4

static void dial_failed(tm2_switch *sw, const tm2_netaddr *addr, int err, const char *why)
{
    if (tm2__sw_log_on(sw, TM2_LOG_DEBUG)) {
        char a[TM2_NETADDR_STRLEN + 1];
        tm2__sw_log(sw, TM2_LOG_DEBUG, "dial failed", "peer=%s addr=%s err=%s reason=%s",
                    addr->id.s, tm2__sw_addr_str(addr, a, sizeof a), tm2_strerror(err),
                    why ? why : tm2_strerror(err));
    }
    tm2__sw_publish(sw, TM2_EVENT_DIAL_FAILED, &addr->id, addr, true, err, why);
}

/* A persistent peer's dial failed: the next one waits for the back-off. */
static void redial_after_failure(tm2_switch *sw, const tm2_id *id)
{
    size_t idx;
    if (!sw->stopping && tm2__sw_is_persistent_id(sw, id, &idx))
        tm2__sw_redial(sw, idx);
}

void tm2__sw_arm_dial_timer(tm2_switch *sw)
{
    if (sw->stopping)
        return;
    uint64_t due;
    if (!tm2__dialq_next_due(&sw->dialq, &due)) {
        tm2__timer_stop(&sw->dial_timer);
        return;
    }
    /* A simulated clock reads 0 at first: due 0 is armed as 1. */
    if (!tm2__timer_active(&sw->dial_timer) || sw->dial_timer.due != due)
        tm2__timer_start(&sw->dial_timer, due);
}

static void push(tm2_switch *sw, uint64_t due, const tm2_netaddr *addr, unsigned flags)
{
    int r = tm2__dialq_push(&sw->dialq, due, addr, flags);
    if (r < 0)
        dial_failed(sw, addr, r, "dial queue full");
    tm2__sw_update_counts(sw);
    tm2__sw_arm_dial_timer(sw);
}

void tm2__sw_dial_request(tm2_switch *sw, const tm2_netaddr *addr)
{
    /* Persistent peers are the redial service's alone: a learned address
     * must not replace the configured one. */
    if (sw->stopping || tm2__sw_is_self(sw, addr) || tm2__peer_set_has(&sw->peers, &addr->id) ||
        tm2__sw_is_persistent_id(sw, &addr->id, NULL) || tm2__dialq_contains(&sw->dialq, &addr->id))
        return;
    if (tm2__sw_banned_id(sw, &addr->id) || tm2__sw_banned_ip(sw, addr)) {
        dial_failed(sw, addr, TM2_EBANNED, "peer or address banned");
        return;
    }
    /* Unconditional peers are dialled whatever the limits. */
    if (tm2_switch_is_unconditional(sw, &addr->id)) {
        push(sw, tm2__sw_now(sw), addr, TM2__DIAL_UNCOND);
        return;
    }
    /* The reference's check at request time. */
    if (sw->n_out - sw->n_uncond_out >= sw->max_outbound) {
        dial_failed(sw, addr, TM2_ELIMIT, "outbound peer limit reached");
        return;
    }
    if (tm2__sw_group_taken(sw, addr)) {
        dial_failed(sw, addr, TM2_ENETGROUP, "an outbound peer of the same network group is connected or being dialled");
        return;
    }
    push(sw, tm2__sw_now(sw), addr, 0);
}

void tm2__sw_dial_done(tm2_switch *sw, tm2__dial_ctx *ctx)
{
    if (tm2__peer_set_find(&sw->inflight, &ctx->addr.id) == ctx)
        tm2__peer_set_remove(&sw->inflight, &ctx->addr.id);
    if (!(ctx->flags & (TM2__DIAL_PERSISTENT | TM2__DIAL_UNCOND)))
        sw->n_inflight_np--;
    free(ctx);
    tm2__sw_update_counts(sw);
}

static void transport_dial(tm2_switch *sw, tm2__dial_ctx *ctx)
{
    if (tm2__sw_log_on(sw, TM2_LOG_DEBUG)) {
        char a[TM2_NETADDR_STRLEN + 1];
        /* hostname: the configured name the address was resolved from, if any. */
        tm2__sw_log(sw, TM2_LOG_DEBUG, "dialing peer", "peer=%s addr=%s persistent=%s hostname=%s",
                    ctx->addr.id.s, tm2__sw_addr_str(&ctx->addr, a, sizeof a),
                    (ctx->flags & TM2__DIAL_PERSISTENT) ? "true" : "false", ctx->host);
    }
    int r = sw->transport ? tm2__transport_dial(sw->transport, &ctx->addr, ctx) : TM2_ECLOSED;
    if (r == 0)
        tm2__ctr_add(&sw->ctr.dials_started, 1);
    if (r) {
        tm2_netaddr copy = ctx->addr;
        tm2__sw_dial_done(sw, ctx);
        dial_failed(sw, &copy, r, NULL);
        redial_after_failure(sw, &copy.id);
    }
}

/* ---- host names -------------------------------------------------------------------------- */

static int system_resolve(const char *host, uint16_t port, tm2_netaddr *out, size_t cap)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return TM2_ERESOLVE;
    size_t n = 0;
    for (struct addrinfo *ai = res; ai && n < cap; ai = ai->ai_next) {
        if (tm2_netaddr_from_sockaddr(ai->ai_addr, NULL, &out[n]) == 0) {
            out[n].port = port;
            n++;
        }
    }
    freeaddrinfo(res);
    return n ? (int)n : TM2_ERESOLVE;
}

/* Off the network thread: may block. Touches only ctx and the immutable
 * resolver. */
static void resolve_work(tm2__work *w)
{
    tm2__dial_ctx *ctx = w->data;
    tm2_netaddr out[RESOLVE_MAX];
    uint16_t port = ctx->addr.port;
    int n = ctx->sw->resolve
                ? ctx->sw->resolve(ctx->sw->resolve_user, ctx->host, port, out, RESOLVE_MAX)
                : system_resolve(ctx->host, port, out, RESOLVE_MAX);
    if (n > RESOLVE_MAX)
        n = TM2_ERESOLVE;
    ctx->resolve_err = n > 0 ? 0 : (n < 0 ? n : TM2_ERESOLVE);
    /* A field of its own: the loop thread reads ctx->addr meanwhile. */
    if (n > 0)
        ctx->resolved = out[0];
}

static void resolve_done(tm2__work *w, bool cancelled)
{
    tm2__dial_ctx *ctx = w->data;
    tm2_switch *sw = ctx->sw;
    ctx->resolving = false;
    sw->n_resolving--;
    /* Dropped by a stop (dial_clear left it to us) or cancelled. */
    if (tm2__peer_set_find(&sw->inflight, &ctx->addr.id) != ctx || sw->stopping ||
        cancelled) {
        if (tm2__peer_set_find(&sw->inflight, &ctx->addr.id) == ctx)
            tm2__sw_dial_done(sw, ctx);
        else
            free(ctx);
        tm2__sw_wake(sw);
        return;
    }
    if (ctx->resolve_err) {
        char why[TM2__HOST_MAX + 48];
        snprintf(why, sizeof why, "host name %s did not resolve", ctx->host);
        tm2_netaddr copy = ctx->addr;
        int err = ctx->resolve_err;
        tm2__sw_dial_done(sw, ctx);
        dial_failed(sw, &copy, err, why);
        redial_after_failure(sw, &copy.id);
        return;
    }
    memcpy(ctx->addr.ip, ctx->resolved.ip, sizeof ctx->addr.ip);
    tm2__configured *c = tm2__sw_configured(sw, &ctx->addr.id);
    if (c)
        c->addr = ctx->addr;
    transport_dial(sw, ctx);
}

/* ---- running dials --------------------------------------------------------------------------- */

static void run_dial(tm2_switch *sw, const tm2__dial_item *it)
{
    const tm2_netaddr *addr = &it->addr;
    if (tm2__peer_set_has(&sw->peers, &addr->id) || tm2__peer_set_has(&sw->inflight, &addr->id) ||
        tm2__sw_is_self(sw, addr))
        return;
    bool persistent = it->flags & TM2__DIAL_PERSISTENT;
    unsigned flags = it->flags;
    if (tm2_switch_is_unconditional(sw, &addr->id))
        flags |= TM2__DIAL_UNCOND;
    bool exempt = flags & (TM2__DIAL_PERSISTENT | TM2__DIAL_UNCOND);
    if (tm2__sw_banned_id(sw, &addr->id) ||
        ((flags & TM2__DIAL_RESOLVE) == 0 && tm2__sw_banned_ip(sw, addr))) {
        dial_failed(sw, addr, TM2_EBANNED, "peer or address banned");
        if (persistent)
            redial_after_failure(sw, &addr->id);
        return;
    }
    if (!exempt && tm2__sw_outbound_full(sw)) {
        dial_failed(sw, addr, TM2_ELIMIT, "outbound peer limit reached");
        return;
    }
    if (!exempt && tm2__sw_group_taken(sw, addr)) {
        dial_failed(sw, addr, TM2_ENETGROUP,
                    "an outbound peer of the same network group is connected or being dialled");
        return;
    }
    tm2__dial_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx || tm2__peer_set_add(&sw->inflight, &addr->id, ctx, true) != 0) {
        free(ctx);
        dial_failed(sw, addr, TM2_ENOMEM, NULL);
        return;
    }
    ctx->sw = sw;
    ctx->addr = *addr;
    ctx->flags = flags;
    if (!exempt)
        sw->n_inflight_np++;
    tm2__configured *c = (it->flags & TM2__DIAL_RESOLVE) ? tm2__sw_configured(sw, &addr->id) : NULL;
    if (!c) {
        transport_dial(sw, ctx);
        return;
    }
    snprintf(ctx->host, sizeof ctx->host, "%s", c->host);
    ctx->addr.port = c->port;
    ctx->work.data = ctx;
    ctx->work.run = resolve_work;
    ctx->work.done = resolve_done;
    if (tm2__work_submit(sw->e, &ctx->work) != 0) {
        tm2_netaddr copy = ctx->addr;
        tm2__sw_dial_done(sw, ctx);
        dial_failed(sw, &copy, TM2_EIO, "resolver unavailable");
        redial_after_failure(sw, &copy.id);
        return;
    }
    ctx->resolving = true;
    sw->n_resolving++;
}

void tm2__sw_dial_timer_cb(tm2__timer *t)
{
    tm2_switch *sw = t->data;
    if (sw->stopping)
        return;
    uint64_t now = tm2__sw_now(sw);
    tm2__dial_item it;
    while (!sw->stopping && tm2__dialq_pop_due(&sw->dialq, now, &it))
        run_dial(sw, &it);
    tm2__sw_update_counts(sw);
    tm2__sw_arm_dial_timer(sw);
}

/* ---- persistent peers ------------------------------------------------------------------------- */

static unsigned configured_flags(const tm2__configured *c, unsigned flags)
{
    return flags | (c->literal ? 0 : TM2__DIAL_RESOLVE);
}

void tm2__sw_redial(tm2_switch *sw, size_t idx)
{
    if (sw->stopping || idx >= sw->n_persistent)
        return;
    tm2__configured *e = &sw->persistent[idx];
    if (tm2__peer_set_has(&sw->peers, &e->id) || tm2__peer_set_has(&sw->inflight, &e->id) ||
        tm2__dialq_contains(&sw->dialq, &e->id) || (e->literal && tm2__sw_is_self(sw, &e->addr)))
        return;
    /* A fresh clock reading: the back-off counts from now, not from the
     * start of this loop turn. */
    uint64_t due = tm2__sw_now(sw);
    int64_t delay = 0;
    if (e->attempted) {
        delay = tm2_backoff_ms(e->attempts, sw->redial_base_ms, sw->redial_max_ms,
                               tm2__sw_rand01(sw));
        if (delay < 0)
            delay = 0;
        if (e->attempts < 63)
            e->attempts++;
        due += (uint64_t)delay;
    } else {
        e->attempted = true;
        e->attempts = 0;
    }
    tm2__sw_log(sw, TM2_LOG_DEBUG, "redial scheduled", "peer=%s in_ms=%" PRId64 " attempt=%" PRIu32,
                e->id.s, delay, e->attempts);
    push(sw, due, &e->addr, configured_flags(e, TM2__DIAL_PERSISTENT));
}

void tm2__sw_persistent_up(tm2_switch *sw, size_t idx)
{
    tm2__configured *e = &sw->persistent[idx];
    uint64_t now = tm2__sw_now(sw);
    e->connected_at = now ? now : 1;
    /* A dial queued while another was in flight would outlive the
     * connection and delay the redial after a later loss. */
    (void)tm2__dialq_remove(&sw->dialq, &e->id, NULL);
    tm2__sw_arm_dial_timer(sw);
}

void tm2__sw_persistent_down(tm2_switch *sw, size_t idx)
{
    tm2__configured *e = &sw->persistent[idx];
    uint64_t since = e->connected_at;
    e->connected_at = 0;
    if (since && tm2__sw_now(sw) - since >= sw->redial_stable_ms) {
        e->attempted = false;
        (void)tm2__dialq_remove(&sw->dialq, &e->id, NULL);
    }
    tm2__sw_redial(sw, idx);
}

/* The redial service's tick: persistent peers neither connected, queued nor
 * being dialled (a redial that found the queue full) are queued again. */
void tm2__sw_redial_scan(tm2_switch *sw)
{
    tm2__sw_refusal_log_flush(sw);
    for (size_t i = 0; i < sw->n_persistent && !sw->stopping; i++)
        tm2__sw_redial(sw, i);
}

/* ---- seeds ------------------------------------------------------------------------------------- */

void tm2__sw_seed_round(tm2_switch *sw)
{
    if (sw->stopping || !sw->n_seeds || sw->n_out - sw->n_uncond_out >= sw->max_outbound)
        return;
    /* Seeds refill discovery: not needed while a discovered peer is due. */
    uint64_t now = tm2__sw_now(sw);
    if (tm2__dialq_has_due(&sw->dialq, now, TM2__DIAL_PERSISTENT))
        return;
    size_t pick = 0, n = 0;
    for (size_t i = 0; i < sw->n_seeds; i++) {
        const tm2__configured *s = &sw->seeds[i];
        if (tm2__peer_set_has(&sw->peers, &s->id) || tm2__peer_set_has(&sw->inflight, &s->id) ||
            tm2__dialq_contains(&sw->dialq, &s->id) || tm2__sw_is_persistent_id(sw, &s->id, NULL) ||
            (s->literal && tm2__sw_is_self(sw, &s->addr)))
            continue;
        /* Reservoir sampling: a uniform pick in one pass. */
        if (tm2__engine_uniform(sw->e, (uint32_t)++n) == 0)
            pick = i;
    }
    if (!n)
        return;
    const tm2__configured *s = &sw->seeds[pick];
    char a[TM2_NETADDR_STRLEN + 1];
    tm2__sw_log(sw, TM2_LOG_INFO, "dialing seed", "peer=%s host=%s addr=%s", s->id.s, s->host,
                tm2__sw_addr_str(&s->addr, a, sizeof a));
    push(sw, now, &s->addr, configured_flags(s, 0));
}

/* ---- stop --------------------------------------------------------------------------------------- */

void tm2__sw_dial_clear(tm2_switch *sw)
{
    tm2__dial_item it;
    while (tm2__dialq_pop_due(&sw->dialq, UINT64_MAX, &it)) {
    }
    for (size_t i = tm2__peer_set_count(&sw->inflight); i-- > 0;) {
        const tm2__peer_entry *e = tm2__peer_set_at(&sw->inflight, i);
        tm2_id id = e->id;
        tm2__dial_ctx *ctx = tm2__peer_set_remove(&sw->inflight, &id);
        /* A resolution in progress owns its ctx until resolve_done,
         * cancelled or not. */
        if (ctx && ctx->resolving)
            (void)tm2__work_cancel(&ctx->work);
        else
            free(ctx);
    }
    sw->n_inflight_np = 0;
    if (sw->handles_init)
        tm2__sw_update_counts(sw);
}
