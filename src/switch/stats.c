/* Counters of the switch and its peers (tm2p2p/stats.h): events counted as
 * they are published, messages as queues take them and reactors get them.
 * Readers take only the snapshot lock, which the network thread holds for
 * a few stores at a time. */
#include <string.h>

#include "switch/switch_internal.h"

_Static_assert((int)TM2_STAGE_CONNECT == (int)TM2__TSTAGE_CONNECT &&
                   (int)TM2_STAGE_CHECK == (int)TM2__TSTAGE_CHECK &&
                   TM2_STAGES == (int)TM2__TSTAGE_CHECK + 1,
               "handshake stages follow the transport's");

static size_t reason_slot(int reason)
{
    return reason <= 0 && reason > -TM2_STATS_REASONS ? (size_t)-reason : TM2_STATS_REASONS - 1;
}

void tm2__sw_count_event(tm2_switch *sw, const tm2_event *ev)
{
    size_t k = reason_slot(ev->reason);
    switch (ev->type) {
    case TM2_EVENT_PEER_CONNECTED:
        tm2__ctr_add(ev->outbound ? &sw->ctr.connected_out : &sw->ctr.connected_in, 1);
        break;
    case TM2_EVENT_PEER_DISCONNECTED: tm2__ctr_add(&sw->ctr.disconnected[k], 1); break;
    case TM2_EVENT_DIAL_FAILED: tm2__ctr_add(&sw->ctr.dials_failed[k], 1); break;
    case TM2_EVENT_PEER_REJECTED: tm2__ctr_add(&sw->ctr.rejected[k], 1); break;
    case TM2_EVENT_PEER_REPLACED: tm2__ctr_add(&sw->ctr.replaced, 1); break;
    case TM2_EVENT_PEER_BANNED: break;   /* the ban list counts bans */
    }
}

void tm2__peer_count(tm2_peer *p, uint8_t ch, size_t len, bool sent)
{
    int i = p->sw->ch_index[ch];
    if (i < 0)
        return;
    tm2__chan_ctr *c[2] = {&p->ctr[i], &p->sw->ctr.ch[i]};
    for (size_t j = 0; j < 2; j++) {
        tm2__ctr_add(sent ? &c[j]->msgs_sent : &c[j]->msgs_recv, 1);
        tm2__ctr_add(sent ? &c[j]->bytes_sent : &c[j]->bytes_recv, len);
    }
}

static uint64_t ld(const atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void read_channels(const tm2__chan_ctr *c, const tm2_channel_desc *d, size_t n,
                          tm2_channel_counts *out)
{
    for (size_t i = 0; i < n; i++) {
        out[i].id = d[i].id;
        out[i].msgs_sent = ld(&c[i].msgs_sent);
        out[i].bytes_sent = ld(&c[i].bytes_sent);
        out[i].msgs_recv = ld(&c[i].msgs_recv);
        out[i].bytes_recv = ld(&c[i].bytes_recv);
    }
}

int tm2_switch_stats(tm2_switch *sw, tm2_switch_counters *out)
{
    if (!sw || !out)
        return TM2_EINVAL;
    memset(out, 0, sizeof *out);
    tm2__transport_stats tp;
    uv_mutex_lock(&sw->snap_lock);
    out->peers_inbound = (uint32_t)sw->snap_in;
    out->peers_outbound = (uint32_t)sw->snap_out;
    out->peers_persistent = (uint32_t)sw->snap_persistent;
    out->peers_private = (uint32_t)sw->snap_private;
    out->peers_unconditional = (uint32_t)sw->snap_uncond;
    out->dials_queued = (uint32_t)sw->snap_queued;
    out->dials_in_flight = (uint32_t)(sw->snap_dialing - sw->snap_queued);
    if (sw->snap_tp)
        tm2__transport_get_stats(sw->snap_tp, &tp);
    else
        tp = sw->tp_last;
    uv_mutex_unlock(&sw->snap_lock);

    uint64_t t0 = atomic_load(&sw->started_ms);
    if (t0) {
        uint64_t now = tm2__sw_now(sw);
        out->uptime_ms = now > t0 ? now - t0 : 0;
    }
    out->handshakes_inbound = (uint32_t)tp.pending_inbound;
    out->handshakes_outbound = (uint32_t)tp.pending_outbound;
    out->inbound_accepted = tp.accepted;
    out->inbound_dropped = tp.dropped;
    out->handshakes_ok = tp.upgraded;
    out->peers_connected_inbound = ld(&sw->ctr.connected_in);
    out->peers_connected_outbound = ld(&sw->ctr.connected_out);
    out->peers_replaced = ld(&sw->ctr.replaced);
    out->dials_started = ld(&sw->ctr.dials_started);
    for (size_t i = 0; i < TM2_STAGES; i++)
        out->handshakes_failed[i] = ld(&sw->ctr.handshakes_failed[i]);
    for (size_t i = 0; i < TM2_STATS_REASONS; i++) {
        out->peers_disconnected[i] = ld(&sw->ctr.disconnected[i]);
        out->dials_failed[i] = ld(&sw->ctr.dials_failed[i]);
        out->rejected[i] = ld(&sw->ctr.rejected[i]);
    }
    for (size_t i = 0; i < TM2_REFUSALS; i++)
        out->inbound_refused[i] = ld(&sw->ctr.refused[i]);
    for (size_t i = 0; i < TM2_EVICTIONS; i++)
        out->evicted[i] = ld(&sw->ctr.evicted[i]);
    out->bans_total = ld(&sw->bans.total);
    size_t active = tm2__bans_copy(&sw->bans, tm2__sw_wall(sw), NULL, 0);
    out->bans_active = active > UINT32_MAX ? UINT32_MAX : (uint32_t)active;
    out->recv_rate_stalls = atomic_load_explicit(&sw->ml.recv_stalls, memory_order_relaxed);
    out->wire_bytes_sent = atomic_load_explicit(&sw->ml.wire_sent, memory_order_relaxed);
    out->wire_bytes_recv = atomic_load_explicit(&sw->ml.wire_recv, memory_order_relaxed);
    out->n_channels = sw->n_descs;
    read_channels(sw->ctr.ch, sw->descs, sw->n_descs, out->channels);
    return 0;
}

int tm2_peer_stats(tm2_peer *p, tm2_peer_counters *out)
{
    if (!p || !out)
        return TM2_EINVAL;
    memset(out, 0, sizeof *out);
    tm2_switch *sw = p->sw;
    out->n_channels = sw->n_descs;
    read_channels(p->ctr, sw->descs, sw->n_descs, out->channels);
    tm2_mconn_status st;
    if (tm2_peer_status(p, &st) != 0)
        return 0;
    out->uptime_ms = st.duration_ms;
    out->wire_bytes_sent = st.send.bytes;
    out->wire_bytes_recv = st.recv.bytes;
    out->rtt_ms = st.rtt_ms;
    out->min_rtt_ms = st.min_rtt_ms;
    for (size_t i = 0; i < st.n_channels && i < TM2_MCONN_MAX_CHANNELS; i++) {
        int k = sw->ch_index[st.channels[i].id];
        if (k >= 0)
            out->queue_size[k] = st.channels[i].send_queue_size;
    }
    return 0;
}
