/* The switch's side of the transport (admission, rejections) and the
 * lifecycle of a peer: init_peer -> start -> add_peer -> receive ... ->
 * remove_peer -> on_close -> release on a later loop turn. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switch/switch_internal.h"

static bool wins(const tm2_switch *sw, const tm2_id *remote, bool outbound);
static void remember_lost(tm2_switch *sw, const tm2_peer *p);

/* ---- snapshot ------------------------------------------------------------------------ */

static int snap_reserve(tm2_switch *sw)
{
    uv_mutex_lock(&sw->snap_lock);
    int r = 0;
    if (sw->n_snap == sw->cap_snap) {
        size_t cap = sw->cap_snap ? sw->cap_snap * 2 : 16;
        tm2_peer **a = realloc(sw->snap, cap * sizeof *a);
        if (a) {
            sw->snap = a;
            sw->cap_snap = cap;
        } else {
            r = TM2_ENOMEM;
        }
    }
    uv_mutex_unlock(&sw->snap_lock);
    return r;
}

static void snap_add(tm2_switch *sw, tm2_peer *p)
{
    uv_mutex_lock(&sw->snap_lock);
    sw->snap[sw->n_snap++] = p;   /* room reserved by snap_reserve */
    uv_mutex_unlock(&sw->snap_lock);
}

static void snap_remove(tm2_switch *sw, tm2_peer *p)
{
    uv_mutex_lock(&sw->snap_lock);
    for (size_t i = 0; i < sw->n_snap; i++) {
        if (sw->snap[i] == p) {
            sw->snap[i] = sw->snap[--sw->n_snap];
            break;
        }
    }
    uv_mutex_unlock(&sw->snap_lock);
}

/* ---- removal -------------------------------------------------------------------------- */

static void log_peer(tm2_switch *sw, tm2_log_level lv, const char *what, const tm2_peer *p,
                     int reason, const char *text)
{
    if (!tm2__sw_log_on(sw, lv))
        return;
    char a[TM2_NETADDR_STRLEN + 1];
    const char *dir = p->outbound ? "outbound" : "inbound";
    tm2__sw_addr_str(&p->socket_addr, a, sizeof a);
    if (!text) {
        tm2__sw_log(sw, lv, what, "peer=%s addr=%s direction=%s persistent=%s", p->id.s, a, dir,
                    p->persistent ? "true" : "false");
        return;
    }
    tm2__sw_log(sw, lv, what, "peer=%s addr=%s direction=%s err=%s reason=%s", p->id.s, a, dir,
                reason ? tm2_strerror(reason) : "none", text);
}

/* The second half of a removal; for a peer still in its add_peer round it
 * runs once the round is over. A replaced connection gives back its reactor
 * state but announces nothing: its peer stays connected. */
/* The peer stops counting towards the limits and the counts: at once when
 * its removal begins, even if its add_peer round defers the rest, so a
 * newcomer that takes an evicted peer's place never shows one peer over
 * the cap. */
static void uncount(tm2_switch *sw, tm2_peer *p)
{
    if (!p->counted)
        return;
    p->counted = false;
    if (tm2__peer_counts_out(p))
        sw->n_out--;
    else
        sw->n_in--;
    sw->n_persistent_up -= p->persistent;
    sw->n_private_up -= p->priv;
    if (p->uncond) {
        if (p->outbound)
            sw->n_uncond_out--;
        else
            sw->n_uncond_in--;
    }
    tm2__sw_update_counts(sw);
}

static void finish_remove(tm2_switch *sw, tm2_peer *p)
{
    if (p->removed)
        return;
    p->removed = true;
    bool was_listed = p->listed;
    if (p->listed) {
        p->listed = false;
        if (tm2__peer_set_find(&sw->peers, &p->id) == p)
            tm2__peer_set_remove(&sw->peers, &p->id);
        snap_remove(sw, p);
        uncount(sw, p);
    }
    if (sw->transport && !sw->transport_closing)
        tm2__transport_remove(sw->transport, &p->socket_addr);
    if (p->n_added) {
        for (size_t i = 0; i < p->n_added; i++) {
            tm2__reactor_slot *s = &sw->reactors[i];
            if (s->r.remove_peer)
                s->r.remove_peer(p, p->reason, s->r.user);
        }
        if (!p->replaced) {
            const char *why = p->reason_text ? p->reason_text
                              : p->reason ? tm2_strerror(p->reason) : "";
            log_peer(sw, TM2_LOG_DEBUG, "peer disconnected", p, p->reason, why);
            tm2__sw_publish(sw, TM2_EVENT_PEER_DISCONNECTED, &p->id, &p->socket_addr,
                            p->outbound, p->reason, why);
        }
    }
    /* A lost connection may reset the back-off; one that never got going
     * is a failed dial. */
    size_t idx;
    if (p->persistent && !sw->stopping && !p->replaced &&
        tm2__sw_is_persistent_id(sw, &p->id, &idx)) {
        if (was_listed)
            tm2__sw_persistent_down(sw, idx);
        else
            tm2__sw_redial(sw, idx);
    }
}

void tm2__sw_peer_remove(tm2_switch *sw, tm2_peer *p, int reason, const char *text)
{
    if (p->removing)
        return;
    p->removing = true;
    atomic_store(&p->running, false);
    p->reason = reason;
    if (!text)
        text = reason ? tm2_strerror(reason) : "";
    /* Kept from here on only: a connected peer carries no text. */
    p->reason_text = strndup(text, TM2__SW_REASON_LEN - 1);
    /* No callback of this connection follows but on_close. */
    tm2__mcs_close(&p->conn->mcs);
    if (!p->in_add)
        finish_remove(sw, p);
    else
        uncount(sw, p);
    /* After the disconnect, so a subscriber sees the peer gone first. */
    tm2__sw_ban_misbehaving(sw, p, reason, p->reason_text);
}

/* ---- release ---------------------------------------------------------------------------- */

void tm2__sw_release_peers(tm2_switch *sw)
{
    tm2_peer *list = sw->release;
    sw->release = NULL;
    while (list) {
        tm2_peer *p = list;
        list = p->next_release;
        tm2_peer_unref(p);
    }
}

/* ---- mcs callbacks ------------------------------------------------------------------------- */

static int c_on_receive(tm2__mcs *m, uint8_t ch, const uint8_t *data, size_t len)
{
    tm2_peer *p = m->data;
    tm2_switch *sw = p->sw;
    if (p->removing)
        return 0;
    int16_t o = sw->ch_owner[ch];
    if (o < 0)
        return TM2_ECHANNEL;   /* the core knows only our channels: not reached */
    tm2__reactor_slot *s = &sw->reactors[o];
    tm2__peer_count(p, ch, len, false);
    p->last_msg_ms = tm2__sw_now(sw) | 1u;
    if (s->r.receive)
        s->r.receive(p, ch, data, len, s->r.user);
    return 0;
}

static void c_on_error(tm2__mcs *m, int err, const char *reason)
{
    tm2_peer *p = m->data;
    if (p->outbound && !wins(p->sw, &p->id, true))
        remember_lost(p->sw, p);
    tm2__sw_peer_remove(p->sw, p, err, reason);
}

static void c_on_close(tm2__mcs *m)
{
    tm2_peer *p = m->data;
    tm2_switch *sw = p->sw;
    tm2__peer_mark_gone(p);
    sw->open_conns--;
    /* The switch's reference goes on a later turn, never inside a callback
     * of the peer's own connection. */
    p->next_release = sw->release;
    sw->release = p;
    tm2__sw_wake(sw);
}

const tm2__mcs_cbs tm2__sw_conn_cbs = {
    .on_receive = c_on_receive,
    .on_error = c_on_error,
    .on_close = c_on_close,
};

/* A connection no peer could be made for: freed once closed (the glue
 * touches nothing after on_close, which the transport's contract allows). */
static void orphan_close(tm2__mcs *m)
{
    tm2_switch *sw = m->data;
    tm2__transport_conn_free(tm2__transport_conn_of(m));
    sw->open_conns--;
    tm2__sw_wake(sw);
}

static const tm2__mcs_cbs orphan_cbs = {
    .on_close = orphan_close,
};

/* ---- transport callbacks -------------------------------------------------------------------- */

/* Of two connections between the same two nodes, both sides keep the one
 * dialled by the node with the smaller ID, so a simultaneous dial ends with
 * the same single connection on each side. */
static bool wins(const tm2_switch *sw, const tm2_id *remote, bool outbound)
{
    bool we_lead = strcmp(sw->id.s, remote->s) < 0;
    return outbound == we_lead;
}

/* Our losing side of a simultaneous open may be closed by the peer before
 * its winning connection reaches us: remembered for a handshake's time.
 * Only a connection that ended within that time of starting can be one:
 * a peer that drops an older one and connects again (a seed's crawl does)
 * is a newcomer, under the inbound cap like any other. */
static void remember_lost(tm2_switch *sw, const tm2_peer *p)
{
    if (!p->listed_ms || tm2__sw_now(sw) - p->listed_ms > sw->handshake_timeout_ms)
        return;
    size_t n = sizeof sw->lost / sizeof sw->lost[0];
    sw->lost[sw->n_lost % n].id = p->id;
    sw->lost[sw->n_lost % n].at = tm2__sw_now(sw);
    sw->n_lost++;
}

static bool recently_lost(tm2_switch *sw, const tm2_id *id)
{
    uint64_t now = tm2__sw_now(sw);
    size_t n = sizeof sw->lost / sizeof sw->lost[0];
    for (size_t i = 0; i < n && i < sw->n_lost; i++)
        if (strcmp(sw->lost[i].id.s, id->s) == 0 && now - sw->lost[i].at <= 2u * sw->handshake_timeout_ms)
            return true;
    return false;
}

/* Another peer from the same IP, other than a connection of id itself
 * (which registration either replaces or refuses). */
static bool has_peer_from_ip(tm2_switch *sw, const tm2_netaddr *a, const tm2_id *id)
{
    for (size_t i = 0, n = tm2__peer_set_count(&sw->peers); i < n; i++) {
        const tm2_peer *p = tm2__peer_set_at(&sw->peers, i)->peer;
        if (memcmp(p->socket_addr.ip, a->ip, sizeof a->ip) == 0 && strcmp(p->id.s, id->s) != 0)
            return true;
    }
    return false;
}

/* Decides on a verified connection before it starts; a connection that
 * replaces its peer's registered one (a simultaneous open) is decided here
 * too, but the registered one is torn down only once the new one started
 * (t_on_conn), so a replacement that fails leaves it in place. */
static int t_accept_filter(tm2__transport *t, tm2__transport_conn *c, char *why, size_t why_len)
{
    tm2_switch *sw = t->data;
    if (sw->stopping)
        return TM2_ECLOSED;
    tm2_peer *old = tm2__peer_set_find(&sw->peers, &c->id);
    if (old && (old->outbound == c->outbound || old->removing || !wins(sw, &c->id, c->outbound))) {
        snprintf(why, why_len, "peer %s already connected (%s kept)", c->id.s,
                 old->outbound ? "outbound" : "inbound");
        return TM2_EDUPLICATE;
    }
    /* A replacement swaps one connection for another and changes no count
     * in total; refusing it for a full side would leave both nodes without
     * a connection, as the other side keeps the same one. The same holds
     * for a peer we are dialling at this moment whose connection wins the
     * tie-break (the other side will refuse our dial for it), or whose
     * winning connection closed our dial's moments ago while an outbound
     * slot is still free: either takes that outbound slot (below). */
    bool crossing = !c->outbound && wins(sw, &c->id, false) &&
                    (tm2__peer_set_has(&sw->inflight, &c->id) ||
                     (recently_lost(sw, &c->id) && !tm2__sw_outbound_full(sw)));
    /* Bans, the per-IP and per-subnet limits and the inbound cap (with
     * eviction), for connections that add a peer. */
    tm2_peer *victim = NULL;
    int evict_reason = 0;
    int r = tm2__sw_admit_verified(sw, c, why, why_len, &victim, &evict_reason);
    if (r == TM2_EBANNED || (r && !old && !crossing))
        return r;
    if (!c->outbound && !sw->allow_duplicate_ip && !tm2_switch_is_unconditional(sw, &c->id) &&
        has_peer_from_ip(sw, &c->socket_addr, &c->id)) {
        snprintf(why, why_len, "a peer from this IP is already connected");
        return TM2_EDUPLICATE;
    }
    if (victim && !old && !crossing)
        tm2__sw_evict(sw, victim, evict_reason, &c->id);
    /* The connection we keep of a simultaneous open takes the outbound slot
     * of the one we dialled: were it counted inbound, a full inbound side
     * would grow by one and our outbound side would dial again, so a peer
     * that answers each of our dials by dialling back could take inbound
     * slots past any limit. */
    if (!c->outbound && !tm2_switch_is_unconditional(sw, &c->id) &&
        (old ? tm2__peer_counts_out(old) : crossing))
        c->owner_flags |= TM2__CONN_SLOT_OUT;
    return 0;
}

static void t_on_reject(tm2__transport *t, const tm2__transport_reject *r)
{
    tm2_switch *sw = t->data;
    char a[TM2_NETADDR_STRLEN + 1];
    if (r->stage > 0 && r->stage < TM2_STAGES)
        tm2__ctr_add(&sw->ctr.handshakes_failed[r->stage], 1);
    if (r->outbound) {
        tm2__dial_ctx *ctx = r->dial_user;
        tm2__sw_log(sw, TM2_LOG_DEBUG, "dial failed", "peer=%s addr=%s err=%s reason=%s",
                    r->addr.id.s, tm2__sw_addr_str(&r->addr, a, sizeof a), tm2_strerror(r->err),
                    r->why);
        tm2__sw_publish(sw, TM2_EVENT_DIAL_FAILED, &r->addr.id, &r->addr, true, r->err, r->why);
        bool persistent = ctx && (ctx->flags & TM2__DIAL_PERSISTENT);
        tm2_id id = r->addr.id;
        if (ctx)
            tm2__sw_dial_done(sw, ctx);
        size_t idx;
        if (persistent && !sw->stopping && tm2__sw_is_persistent_id(sw, &id, &idx) &&
            !tm2__peer_set_has(&sw->peers, &id))
            tm2__sw_redial(sw, idx);
        tm2__sw_arm_dial_timer(sw);
        return;
    }
    tm2__sw_log(sw, TM2_LOG_DEBUG, "peer rejected", "peer=%s addr=%s err=%s reason=%s",
                r->auth_id ? r->auth_id->s : "", tm2__sw_addr_str(&r->addr, a, sizeof a),
                tm2_strerror(r->err), r->why);
    tm2__sw_publish(sw, TM2_EVENT_PEER_REJECTED, r->auth_id, &r->addr, false, r->err, r->why);
}

static void t_on_conn(tm2__transport *t, tm2__transport_conn *c)
{
    tm2_switch *sw = t->data;
    if (c->outbound && c->dial_user)
        tm2__sw_dial_done(sw, c->dial_user);
    c->dial_user = NULL;
    tm2_peer *p = tm2__peer_new(sw, c);
    if (!p) {
        char a[TM2_NETADDR_STRLEN + 1];
        tm2__sw_log(sw, TM2_LOG_ERROR, "out of memory adding a peer", "peer=%s addr=%s",
                    c->id.s, tm2__sw_addr_str(&c->socket_addr, a, sizeof a));
        tm2__sw_publish(sw, TM2_EVENT_PEER_REJECTED, &c->id, &c->socket_addr, c->outbound,
                        TM2_ENOMEM, NULL);
        if (sw->transport)
            tm2__transport_remove(sw->transport, &c->socket_addr);
        sw->open_conns++;
        c->mcs.data = sw;
        c->mcs.cbs = orphan_cbs;
        tm2__mcs_close(&c->mcs);
        return;
    }
    sw->open_conns++;
    c->mcs.data = p;
    c->mcs.cbs = tm2__sw_conn_cbs;
    if (snap_reserve(sw) != 0) {
        tm2__sw_publish(sw, TM2_EVENT_PEER_REJECTED, &p->id, &p->socket_addr, p->outbound,
                        TM2_ENOMEM, NULL);
        tm2__sw_peer_remove(sw, p, TM2_ENOMEM, NULL);
        return;
    }

    for (size_t i = 0; i < sw->n_reactors; i++) {
        tm2__reactor_slot *s = &sw->reactors[i];
        if (s->r.init_peer)
            s->r.init_peer(p, s->r.user);
    }
    int r = p->removing ? TM2_ECLOSED
                        : tm2__mcs_start(&c->mcs, &sw->mconn, sw->descs, sw->n_descs, c->leftover,
                                         c->leftover_len);
    free(c->leftover);
    c->leftover = NULL;
    c->leftover_len = 0;
    if (r) {
        /* Never added: no add_peer, no remove_peer, no CONNECTED. */
        tm2__sw_publish(sw, TM2_EVENT_PEER_REJECTED, &p->id, &p->socket_addr, p->outbound, r,
                        "connection failed to start");
        log_peer(sw, TM2_LOG_DEBUG, "peer failed to start", p, r, tm2_strerror(r));
        tm2__sw_peer_remove(sw, p, r, NULL);
        return;
    }
    p->started = true;
    atomic_store(&p->running, true);
    /* The replaced connection goes only now that its successor runs. */
    tm2_peer *old = tm2__peer_set_find(&sw->peers, &p->id);
    if (old) {
        old->replaced = true;
        tm2__sw_peer_remove(sw, old, TM2_EDUPLICATE, "replaced by the connection both sides keep");
        if (old->listed) {
            /* Still in its own add_peer round: it leaves once that is over,
             * and this connection with it. */
            tm2__sw_peer_remove(sw, p, TM2_EDUPLICATE, "simultaneous open during add_peer");
            return;
        }
    }
    if (tm2__peer_set_add(&sw->peers, &p->id, p, p->outbound) != 0) {
        tm2__sw_publish(sw, TM2_EVENT_PEER_REJECTED, &p->id, &p->socket_addr, p->outbound,
                        TM2_ENOMEM, NULL);
        tm2__sw_peer_remove(sw, p, TM2_ENOMEM, NULL);
        return;
    }
    p->listed = true;
    p->counted = true;
    p->seq = ++sw->peer_seq;
    p->listed_ms = tm2__sw_now(sw);
    snap_add(sw, p);
    if (tm2__peer_counts_out(p))
        sw->n_out++;
    else
        sw->n_in++;
    if (p->uncond) {
        if (p->outbound)
            sw->n_uncond_out++;
        else
            sw->n_uncond_in++;
    }
    sw->n_persistent_up += p->persistent;
    sw->n_private_up += p->priv;
    size_t idx;
    if (p->persistent && tm2__sw_is_persistent_id(sw, &p->id, &idx))
        tm2__sw_persistent_up(sw, idx);
    tm2__sw_update_counts(sw);

    /* A reactor may stop the peer from its add_peer: the reactors that
     * already got add_peer then get remove_peer once the round is over,
     * the others get neither. */
    p->in_add = true;
    for (size_t i = 0; i < sw->n_reactors && !p->removing; i++) {
        tm2__reactor_slot *s = &sw->reactors[i];
        p->n_added = i + 1;
        if (s->r.add_peer)
            s->r.add_peer(p, s->r.user);
    }
    p->in_add = false;
    if (old) {
        log_peer(sw, TM2_LOG_DEBUG, "peer connection replaced", p, 0, NULL);
        tm2__sw_publish(sw, TM2_EVENT_PEER_REPLACED, &p->id, &p->socket_addr, p->outbound, 0,
                        "simultaneous open: the connection the smaller ID dialled is kept");
    } else {
        log_peer(sw, TM2_LOG_DEBUG, "peer connected", p, 0, NULL);
        tm2__sw_publish(sw, TM2_EVENT_PEER_CONNECTED, &p->id, &p->socket_addr, p->outbound, 0,
                        "");
    }
    if (p->removing)
        finish_remove(sw, p);
}

const tm2__transport_cbs tm2__sw_transport_cbs = {
    .on_conn = t_on_conn,
    .on_reject = t_on_reject,
    .accept_filter = t_accept_filter,
    .admit = tm2__sw_admit,
};
