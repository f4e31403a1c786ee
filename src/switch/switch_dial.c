/* The dial service (a queue ordered by due time, one timer armed at the
 * earliest) and the redial service for persistent peers (WIRE.md 8.2, 8.3).
 *
 * Unlike the reference, the outbound cap is checked again when a queued
 * dial runs, counting the dials already in flight, so it is never
 * overshot; and persistent peers are exempt from it (the reference's
 * documentation promises that, its code does not). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "switch/switch_internal.h"

static void dial_failed(tm2_switch *sw, const tm2_netaddr *addr, int err, const char *why)
{
    if (tm2__sw_log_on(sw, TM2_LOG_INFO)) {
        char a[TM2_NETADDR_STRLEN + 1], q[2 * TM2__SW_REASON_LEN + 8];
        tm2__sw_log(sw, TM2_LOG_INFO, "msg=\"dial failed\" peer=%s addr=%s err=\"%s\" reason=%s",
                    addr->id.s, tm2__sw_addr_str(addr, a, sizeof a), tm2_strerror(err),
                    tm2__sw_quote(why ? why : tm2_strerror(err), q, sizeof q));
    }
    tm2__sw_publish(sw, TM2_EVENT_DIAL_FAILED, &addr->id, addr, true, err, why);
}

static bool is_persistent(tm2_switch *sw, const tm2_netaddr *addr, unsigned flags)
{
    return (flags & TM2__DIAL_PERSISTENT) || tm2__sw_is_persistent_id(sw, &addr->id, NULL);
}

void tm2__sw_arm_dial_timer(tm2_switch *sw)
{
    if (sw->stopping)
        return;
    uint64_t due;
    if (!tm2__dialq_next_due(&sw->dialq, &due)) {
        if (sw->dial_timer_due) {
            uv_timer_stop(&sw->dial_timer);
            sw->dial_timer_due = 0;
        }
        return;
    }
    if (sw->dial_timer_due == due && uv_is_active((uv_handle_t *)&sw->dial_timer))
        return;
    uint64_t now = uv_now(&sw->loop);
    uv_timer_start(&sw->dial_timer, tm2__sw_dial_timer_cb, due > now ? due - now : 0, 0);
    sw->dial_timer_due = due;
}

void tm2__sw_dial_request(tm2_switch *sw, const tm2_netaddr *addr)
{
    if (sw->stopping || tm2__sw_is_self(sw, addr) || tm2__peer_set_has(&sw->peers, &addr->id))
        return;
    unsigned flags = tm2__sw_is_persistent_id(sw, &addr->id, NULL) ? TM2__DIAL_PERSISTENT : 0;
    /* The reference's check at request time. */
    if (!flags && sw->n_out_np >= sw->max_outbound) {
        dial_failed(sw, addr, TM2_ELIMIT, "outbound peer limit reached");
        return;
    }
    int r = tm2__dialq_push(&sw->dialq, tm2__sw_now(sw), addr, flags);
    if (r < 0)
        dial_failed(sw, addr, r, "dial queue full");
    tm2__sw_update_counts(sw);
}

void tm2__sw_dial_done(tm2_switch *sw, tm2__dial_ctx *ctx)
{
    if (tm2__peer_set_find(&sw->inflight, &ctx->addr.id) == ctx)
        tm2__peer_set_remove(&sw->inflight, &ctx->addr.id);
    if (!(ctx->flags & TM2__DIAL_PERSISTENT))
        sw->n_inflight_np--;
    free(ctx);
    tm2__sw_update_counts(sw);
}

static void run_dial(tm2_switch *sw, const tm2__dial_item *it)
{
    const tm2_netaddr *addr = &it->addr;
    if (tm2__peer_set_has(&sw->peers, &addr->id) || tm2__peer_set_has(&sw->inflight, &addr->id) ||
        tm2__sw_is_self(sw, addr))
        return;
    bool persistent = is_persistent(sw, addr, it->flags);
    if (!persistent && sw->n_out_np + sw->n_inflight_np >= sw->max_outbound) {
        dial_failed(sw, addr, TM2_ELIMIT, "outbound peer limit reached");
        return;
    }
    tm2__dial_ctx *ctx = malloc(sizeof *ctx);
    if (!ctx || tm2__peer_set_add(&sw->inflight, &addr->id, ctx, true) != 0) {
        free(ctx);
        dial_failed(sw, addr, TM2_ENOMEM, NULL);
        return;
    }
    ctx->addr = *addr;
    ctx->flags = persistent ? TM2__DIAL_PERSISTENT : 0;
    if (!persistent)
        sw->n_inflight_np++;
    if (tm2__sw_log_on(sw, TM2_LOG_DEBUG)) {
        char a[TM2_NETADDR_STRLEN + 1];
        tm2__sw_log(sw, TM2_LOG_DEBUG, "msg=\"dialing peer\" peer=%s addr=%s persistent=%s",
                    addr->id.s, tm2__sw_addr_str(addr, a, sizeof a),
                    persistent ? "true" : "false");
    }
    int r = sw->transport ? tm2__transport_dial(sw->transport, addr, ctx) : TM2_ECLOSED;
    if (r) {
        tm2_netaddr copy = *addr;
        tm2__sw_dial_done(sw, ctx);
        dial_failed(sw, &copy, r, NULL);
        size_t idx;
        if (persistent && tm2__sw_is_persistent_id(sw, &copy.id, &idx))
            tm2__sw_redial(sw, idx);
    }
}

void tm2__sw_dial_timer_cb(uv_timer_t *t)
{
    tm2_switch *sw = t->data;
    sw->dial_timer_due = 0;
    if (sw->stopping)
        return;
    uint64_t now = tm2__sw_now(sw);
    tm2__dial_item it;
    while (!sw->stopping && tm2__dialq_pop_due(&sw->dialq, now, &it))
        run_dial(sw, &it);
    tm2__sw_update_counts(sw);
    tm2__sw_arm_dial_timer(sw);
}

void tm2__sw_redial(tm2_switch *sw, size_t idx)
{
    if (sw->stopping || idx >= sw->n_persistent)
        return;
    tm2__persistent *e = &sw->persistent[idx];
    if (tm2__peer_set_has(&sw->peers, &e->addr.id))
        return;
    int64_t delay = tm2_backoff_ms(e->attempts, sw->redial_base_ms, sw->redial_max_ms,
                                   tm2__sw_rand01());
    if (delay < 0)
        delay = 0;
    if (e->attempts < UINT32_MAX)
        e->attempts++;
    /* A fresh clock reading: the back-off counts from now, not from the
     * start of this loop turn. */
    uint64_t due = tm2__sw_now(sw) + (uint64_t)delay;
    int r = tm2__dialq_push(&sw->dialq, due, &e->addr, TM2__DIAL_PERSISTENT);
    if (r < 0) {
        tm2__sw_log(sw, TM2_LOG_WARN, "msg=\"redial not queued\" peer=%s err=\"%s\"",
                    e->addr.id.s, tm2_strerror(r));
    } else {
        tm2__sw_log(sw, TM2_LOG_DEBUG,
                    "msg=\"redial scheduled\" peer=%s in_ms=%" PRId64 " attempt=%" PRIu32,
                    e->addr.id.s, delay, e->attempts);
    }
    tm2__sw_update_counts(sw);
    tm2__sw_arm_dial_timer(sw);
}

/* Persistent peers neither connected, queued nor being dialled (a redial
 * that found the queue full) are queued again with their back-off. */
void tm2__sw_redial_scan_cb(uv_timer_t *t)
{
    tm2_switch *sw = t->data;
    if (sw->stopping)
        return;
    for (size_t i = 0; i < sw->n_persistent; i++) {
        const tm2_id *id = &sw->persistent[i].addr.id;
        if (!tm2__peer_set_has(&sw->peers, id) && !tm2__peer_set_has(&sw->inflight, id) &&
            !tm2__dialq_contains(&sw->dialq, id))
            tm2__sw_redial(sw, i);
    }
}

void tm2__sw_dial_clear(tm2_switch *sw)
{
    tm2__dial_item it;
    while (tm2__dialq_pop_due(&sw->dialq, UINT64_MAX, &it)) {
    }
    for (size_t i = tm2__peer_set_count(&sw->inflight); i-- > 0;) {
        const tm2__peer_entry *e = tm2__peer_set_at(&sw->inflight, i);
        tm2_id id = e->id;
        free(tm2__peer_set_remove(&sw->inflight, &id));
    }
    sw->n_inflight_np = 0;
    if (sw->handles_init)
        tm2__sw_update_counts(sw);
}
