/* Snapshot of the node's counters and its documents (cli/metrics.h). */
#include "cli/metrics.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm2p2p/peer.h"

/* ---- collecting ------------------------------------------------------------------- */

static int by_id(const void *a, const void *b)
{
    return strcmp(((const cli_metrics_peer *)a)->id.s, ((const cli_metrics_peer *)b)->id.s);
}

/* Copies what the documents need of a referenced peer, so nothing of it is
 * read after its reference is dropped. */
static void fill_peer(tm2_peer *p, cli_metrics_peer *out)
{
    memset(out, 0, sizeof *out);
    out->id = *tm2_peer_id(p);
    tm2_netaddr a;
    tm2_peer_socket_addr(p, &a);
    if (tm2_netaddr_format(&a, out->addr, sizeof out->addr) < 0)
        out->addr[0] = '\0';
    const tm2_node_info *ni = tm2_peer_node_info(p);
    if (ni && ni->moniker)
        snprintf(out->moniker, sizeof out->moniker, "%s", ni->moniker);
    out->outbound = tm2_peer_is_outbound(p);
    out->persistent = tm2_peer_is_persistent(p);
    out->is_private = tm2_peer_is_private(p);
    out->unconditional = tm2_peer_is_unconditional(p);
    tm2_peer_stats(p, &out->c);
}

int cli_metrics_collect(tm2_switch *sw, tm2_discovery *disc, cli_metrics_snap *out)
{
    memset(out, 0, sizeof *out);
    out->id = *tm2_switch_id(sw);
    out->node_info = tm2_switch_node_info(sw);
    tm2_netaddr a;
    if (tm2_switch_listen_addr(sw, &a) == 0) {
        a.id = out->id;
        if (tm2_netaddr_format(&a, out->listen_addr, sizeof out->listen_addr) < 0)
            out->listen_addr[0] = '\0';
    }
    if (out->node_info && out->node_info->has_net_address &&
        tm2_netaddr_format(&out->node_info->net_address, out->external_addr, sizeof out->external_addr) < 0)
        out->external_addr[0] = '\0';
    tm2_switch_stats(sw, &out->sw);
    if (disc) {
        out->has_discovery = true;
        tm2_discovery_get_stats(disc, &out->disc);
    }

    /* The switch's peer list is read under its snapshot lock, which the
     * network thread holds only to publish changes; ask again with more room
     * if peers arrived in between. */
    size_t cap = tm2_switch_peers(sw, NULL, 0) + 16;
    tm2_peer **ps = NULL;
    size_t got;
    for (;;) {
        tm2_peer **np = realloc(ps, cap * sizeof *ps);
        if (!np) {
            free(ps);
            return TM2_ENOMEM;
        }
        ps = np;
        got = tm2_switch_peers(sw, ps, cap);
        if (got <= cap)
            break;
        for (size_t i = 0; i < cap; i++)
            tm2_peer_unref(ps[i]);
        cap = got + 64;
    }
    out->peers = got ? calloc(got, sizeof *out->peers) : NULL;
    for (size_t i = 0; i < got; i++) {
        if (out->peers)
            fill_peer(ps[i], &out->peers[i]);
        tm2_peer_unref(ps[i]);
    }
    free(ps);
    if (got && !out->peers)
        return TM2_ENOMEM;
    out->n_peers = got;
    if (out->n_peers > 1)
        qsort(out->peers, out->n_peers, sizeof *out->peers, by_id);
    return 0;
}

/* The peers are the only allocation; the node info is borrowed. */
void cli_metrics_snap_free(cli_metrics_snap *s)
{
    free(s->peers);
    memset(s, 0, sizeof *s);
}

/* ---- exposition ------------------------------------------------------------------- */

void cli_metrics_label_value(tm2__buf *out, const char *v)
{
    tm2__buf_add(out, "\"", 1);
    for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
        if (*s == '\\' || *s == '"')
            tm2__buf_add(out, (const char[]){'\\', (char)*s}, 2);
        else if (*s == '\n')
            tm2__buf_add(out, "\\n", 2);
        else
            tm2__buf_add(out, *s >= 0x20 && *s < 0x7f ? (const char *)s : "?", 1);
    }
    tm2__buf_add(out, "\"", 1);
}

typedef struct label {
    const char *k, *v;
} label;

/* A family's HELP and TYPE lines, which must come before its samples. */
static void family(tm2__buf *b, const char *name, const char *type, const char *help)
{
    tm2__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A sample's name and label set, as name{k="v",...}. */
static void head(tm2__buf *b, const char *name, const label *ls, size_t n)
{
    tm2__buf_puts(b, name);
    if (!n)
        return;
    tm2__buf_add(b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            tm2__buf_add(b, ",", 1);
        tm2__buf_puts(b, ls[i].k);
        tm2__buf_add(b, "=", 1);
        cli_metrics_label_value(b, ls[i].v);
    }
    tm2__buf_add(b, "}", 1);
}

/* A sample with an integer value, written whole (a double would round above 2^53). */
static void sample(tm2__buf *b, const char *name, const label *ls, size_t n, uint64_t v)
{
    head(b, name, ls, n);
    char num[24], *e = num + sizeof num, *d = e;
    *--d = '\n';
    do
        *--d = (char)('0' + v % 10);
    while (v /= 10);
    *--d = ' ';
    tm2__buf_add(b, d, (size_t)(e - d));
}

/* A sample in seconds from milliseconds, without floating point. */
static void sample_s(tm2__buf *b, const char *name, const label *ls, size_t n, uint64_t ms)
{
    head(b, name, ls, n);
    tm2__buf_printf(b, " %llu.%03u\n", (unsigned long long)(ms / 1000), (unsigned)(ms % 1000));
}

/* One family without labels. */
static void single(tm2__buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    family(b, name, type, help);
    sample(b, name, NULL, 0, v);
}

/* One family with one label and its values. */
static void by_label(tm2__buf *b, const char *name, const char *type, const char *help, const char *key,
                     const char *const *vals, const uint64_t *v, size_t n)
{
    family(b, name, type, help);
    for (size_t i = 0; i < n; i++)
        sample(b, name, &(label){key, vals[i]}, 1, v[i]);
}

/* A by-reason array (tm2p2p/stats.h): the reasons seen so far. */
static void by_reason(tm2__buf *b, const char *name, const char *help, const uint64_t *a)
{
    family(b, name, "counter", help);
    for (int k = 0; k < TM2_STATS_REASONS; k++)
        if (a[k])
            sample(b, name, &(label){"reason", tm2_errname(-k)}, 1, a[k]);
}

/* The sum of a by-reason or by-stage array (the outcome totals). */
static uint64_t total(const uint64_t *a, size_t n)
{
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += a[i];
    return t;
}

/* Channels are labelled as the reference writes them, "0x50". */
static void chan_name(char out[8], uint8_t id)
{
    snprintf(out, 8, "0x%02x", id);
}

enum { MSGS_SENT, BYTES_SENT, MSGS_RECV, BYTES_RECV };

/* One of a channel's four counters, so the families share one loop. */
static uint64_t chan_field(const tm2_channel_counts *c, int f)
{
    switch (f) {
    case MSGS_SENT: return c->msgs_sent;
    case BYTES_SENT: return c->bytes_sent;
    case MSGS_RECV: return c->msgs_recv;
    default: return c->bytes_recv;
    }
}

static const struct {
    int field;
    const char *node, *peer, *help;
} chan_families[] = {
    {MSGS_SENT, "tm2p2p_channel_sent_messages_total", "tm2p2p_peer_sent_messages_total",
     "Messages queued for sending (taken by a send queue)."},
    {BYTES_SENT, "tm2p2p_channel_sent_bytes_total", "tm2p2p_peer_sent_bytes_total",
     "Message bytes queued for sending."},
    {MSGS_RECV, "tm2p2p_channel_received_messages_total", "tm2p2p_peer_received_messages_total",
     "Messages received and handed to the channel's reactor."},
    {BYTES_RECV, "tm2p2p_channel_received_bytes_total", "tm2p2p_peer_received_bytes_total",
     "Message bytes received and handed to the channel's reactor."},
};

/* The switch's families: peers, dials, handshakes, reasons, channels. */
static void write_node(const cli_metrics_snap *s, tm2__buf *b)
{
    const tm2_switch_counters *c = &s->sw;
    const tm2_node_info *ni = s->node_info;
    family(b, "tm2p2p_node_info", "gauge", "This node: its ID, moniker, network and version; always 1.");
    label nl[] = {{"node_id", s->id.s},
                  {"moniker", ni && ni->moniker ? ni->moniker : ""},
                  {"network", ni && ni->network ? ni->network : ""},
                  {"version", ni && ni->version ? ni->version : ""}};
    sample(b, "tm2p2p_node_info", nl, 4, 1);
    family(b, "tm2p2p_uptime_seconds", "gauge", "Time since the switch started.");
    sample_s(b, "tm2p2p_uptime_seconds", NULL, 0, c->uptime_ms);

    static const char *const dirs[] = {"inbound", "outbound"};
    by_label(b, "tm2p2p_peers", "gauge", "Connected peers by direction.", "direction", dirs,
             (uint64_t[]){c->peers_inbound, c->peers_outbound}, 2);
    static const char *const kinds[] = {"persistent", "unconditional", "private"};
    by_label(b, "tm2p2p_peers_by_kind", "gauge",
             "Connected peers of a configured kind (a peer may be of several).", "kind", kinds,
             (uint64_t[]){c->peers_persistent, c->peers_unconditional, c->peers_private}, 3);
    by_label(b, "tm2p2p_pending_handshakes", "gauge",
             "Connections in their handshake (secret connection, NodeInfo), by direction.", "direction", dirs,
             (uint64_t[]){c->handshakes_inbound, c->handshakes_outbound}, 2);
    single(b, "tm2p2p_dials_queued", "gauge", "Dials waiting for their turn.", c->dials_queued);
    single(b, "tm2p2p_dials_in_flight", "gauge", "Dials handed to the transport and not finished.",
           c->dials_in_flight);

    by_label(b, "tm2p2p_peers_connected_total", "counter", "Peers added, by direction.", "direction", dirs,
             (uint64_t[]){c->peers_connected_inbound, c->peers_connected_outbound}, 2);
    single(b, "tm2p2p_peers_replaced_total", "counter",
           "Simultaneous opens resolved by keeping one of two connections to a peer.", c->peers_replaced);
    by_reason(b, "tm2p2p_peers_disconnected_total", "Peers removed, by reason (OK: stopped cleanly).",
              c->peers_disconnected);
    by_reason(b, "tm2p2p_peers_rejected_total", "Inbound peers refused after their handshake, by reason.",
              c->rejected);
    single(b, "tm2p2p_dials_started_total", "counter", "Dials handed to the transport.", c->dials_started);
    static const char *const outcomes[] = {"connected", "failed"};
    by_label(b, "tm2p2p_dials_total", "counter",
             "Finished dials by outcome (connected: an outbound peer was added).", "outcome", outcomes,
             (uint64_t[]){c->peers_connected_outbound, total(c->dials_failed, TM2_STATS_REASONS)}, 2);
    by_reason(b, "tm2p2p_dials_failed_total", "Failed dials, by reason.", c->dials_failed);

    static const char *const hs[] = {"ok", "failed"};
    by_label(b, "tm2p2p_handshakes_total", "counter", "Finished handshakes, both directions, by outcome.",
             "outcome", hs, (uint64_t[]){c->handshakes_ok, total(c->handshakes_failed, TM2_STAGES)}, 2);
    static const char *const stages[] = {"connect", "accept", "secret_connection", "node_info", "check"};
    by_label(b, "tm2p2p_handshake_failures_total", "counter",
             "Failed handshakes by the stage that failed (connect: TCP connect of a dial; check: NodeInfo "
             "checks and admission).",
             "stage", stages, c->handshakes_failed + TM2_STAGE_CONNECT, 5);
    static const char *const acc[] = {"accepted", "dropped"};
    by_label(b, "tm2p2p_inbound_connections_total", "counter",
             "Accepted sockets: taken into a handshake, or closed at once (too many handshakes in flight).",
             "outcome", acc, (uint64_t[]){c->inbound_accepted, c->inbound_dropped}, 2);
    const char *refusals[TM2_REFUSALS];
    for (int i = 0; i < TM2_REFUSALS; i++)
        refusals[i] = tm2_refusal_name(i);
    by_label(b, "tm2p2p_inbound_refused_total", "counter",
             "Accepted sockets closed before any handshake work, by reason (full: no slot and nothing to "
             "evict; pending_ip, rate_ip, rate_subnet, per_ip, per_subnet: the per-address limits; banned: a "
             "banned IP).",
             "reason", refusals, c->inbound_refused, TM2_REFUSALS);
    const char *evictions[TM2_EVICTIONS];
    for (int i = 0; i < TM2_EVICTIONS; i++)
        evictions[i] = tm2_eviction_name(i);
    by_label(b, "tm2p2p_peers_evicted_total", "counter",
             "Inbound peers evicted to make room, by whom for (newcomer: from a network group not yet held; "
             "persistent: a persistent peer).",
             "reason", evictions, c->evicted, TM2_EVICTIONS);
    single(b, "tm2p2p_bans", "gauge", "Bans in force (peer IDs and IP addresses).", c->bans_active);
    single(b, "tm2p2p_bans_total", "counter", "Bans made: for misbehaviour or by the operator.",
           c->bans_total);
    single(b, "tm2p2p_receive_rate_stalls_total", "counter",
           "Times reading from a peer paused for its receive rate limit.", c->recv_rate_stalls);
    single(b, "tm2p2p_wire_sent_bytes_total", "counter", "Packet bytes sent, every connection.",
           c->wire_bytes_sent);
    single(b, "tm2p2p_wire_received_bytes_total", "counter", "Packet bytes received, every connection.",
           c->wire_bytes_recv);

    char names[TM2_MCONN_MAX_CHANNELS][8];
    size_t nch = c->n_channels < TM2_MCONN_MAX_CHANNELS ? c->n_channels : TM2_MCONN_MAX_CHANNELS;
    for (size_t i = 0; i < nch; i++)
        chan_name(names[i], c->channels[i].id);
    for (size_t f = 0; f < sizeof chan_families / sizeof chan_families[0]; f++) {
        family(b, chan_families[f].node, "counter", chan_families[f].help);
        for (size_t i = 0; i < nch; i++)
            sample(b, chan_families[f].node, &(label){"channel", names[i]}, 1,
                   chan_field(&c->channels[i], chan_families[f].field));
    }
    family(b, "tm2p2p_channel_send_queue_messages", "gauge",
           "Messages waiting in the channel's send queues, all connected peers.");
    for (size_t i = 0; i < nch; i++) {
        uint64_t q = 0;
        for (size_t p = 0; p < s->n_peers; p++)
            q += s->peers[p].c.queue_size[i];
        sample(b, "tm2p2p_channel_send_queue_messages", &(label){"channel", names[i]}, 1, q);
    }
}

/* Peer exchange and the address book, when discovery runs. */
static void write_discovery(const tm2_discovery_stats *d, tm2__buf *b)
{
    static const char *const dirs[] = {"sent", "received"};
    by_label(b, "tm2p2p_discovery_requests_total", "counter", "Peer-exchange requests, by direction.",
             "direction", dirs, (uint64_t[]){d->requests_sent, d->requests_received}, 2);
    single(b, "tm2p2p_discovery_requests_answered_total", "counter", "Requests answered with addresses.",
           d->requests_answered);
    single(b, "tm2p2p_discovery_requests_ignored_total", "counter",
           "Requests ignored for coming too often.", d->requests_ignored);
    single(b, "tm2p2p_discovery_responses_received_total", "counter", "Peer-exchange answers received.",
           d->responses_received);
    static const char *const why[] = {"oversized", "unsolicited", "malformed", "invalid"};
    by_label(b, "tm2p2p_discovery_responses_rejected_total", "counter", "Answers rejected, by reason.",
             "reason", why,
             (uint64_t[]){d->responses_oversized, d->responses_unsolicited, d->responses_malformed,
                          d->responses_invalid},
             4);
    single(b, "tm2p2p_discovery_messages_undecodable_total", "counter",
           "Messages on the discovery channel that were neither a request nor an answer.",
           d->messages_undecodable);
    static const char *const addrs[] = {"received", "accepted", "rejected"};
    by_label(b, "tm2p2p_discovery_addresses_total", "counter",
             "Addresses in accepted answers: received, entered or refreshed in the book, or refused.", "outcome",
             addrs, (uint64_t[]){d->addrs_received, d->addrs_accepted, d->addrs_rejected}, 3);
    single(b, "tm2p2p_discovery_dials_total", "counter", "Addresses discovery handed to the switch to dial.",
           d->dials);
    single(b, "tm2p2p_discovery_dial_failures_total", "counter", "Address book entries that could not be reached.",
           d->dial_failures);
    single(b, "tm2p2p_discovery_peers_stopped_total", "counter", "Peers stopped for abusing discovery.",
           d->peers_stopped);
    single(b, "tm2p2p_discovery_peers_released_total", "counter",
           "Peers let go after the exchange (seed mode).", d->peers_released);
    static const char *const saves[] = {"ok", "error"};
    by_label(b, "tm2p2p_addrbook_saves_total", "counter", "Address book writes, by outcome.", "outcome", saves,
             (uint64_t[]){d->book_saves, d->book_save_errors}, 2);
    static const char *const tables[] = {"tried", "new"};
    uint64_t tried = d->book_tried <= d->book_size ? d->book_tried : d->book_size;
    by_label(b, "tm2p2p_addrbook_size", "gauge",
             "Address book entries by table (tried: dialled and held; new: only heard of).", "table",
             tables, (uint64_t[]){tried, d->book_size - tried}, 2);
}

/* Per-peer families: each family's samples together, as the format wants. */
static void write_peers(const cli_metrics_snap *s, tm2__buf *b)
{
    size_t nch = s->sw.n_channels < TM2_MCONN_MAX_CHANNELS ? s->sw.n_channels : TM2_MCONN_MAX_CHANNELS;
    char names[TM2_MCONN_MAX_CHANNELS][8];
    for (size_t i = 0; i < nch; i++)
        chan_name(names[i], s->sw.channels[i].id);

    family(b, "tm2p2p_peer_info", "gauge", "A connected peer: direction, kind and moniker; always 1.");
    for (size_t p = 0; p < s->n_peers; p++) {
        const cli_metrics_peer *x = &s->peers[p];
        label ls[] = {{"peer_id", x->id.s},
                      {"direction", x->outbound ? "outbound" : "inbound"},
                      {"persistent", x->persistent ? "true" : "false"},
                      {"private", x->is_private ? "true" : "false"},
                      {"unconditional", x->unconditional ? "true" : "false"},
                      {"moniker", x->moniker}};
        sample(b, "tm2p2p_peer_info", ls, 6, 1);
    }
    family(b, "tm2p2p_peer_uptime_seconds", "gauge", "Time since the peer's connection started.");
    for (size_t p = 0; p < s->n_peers; p++)
        sample_s(b, "tm2p2p_peer_uptime_seconds", &(label){"peer_id", s->peers[p].id.s}, 1,
                 s->peers[p].c.uptime_ms);
    /* Only measured peers: 0 would read as an instant round trip. */
    family(b, "tm2p2p_peer_rtt_seconds", "gauge",
           "Round trip of the last keepalive Ping to the peer; absent until measured.");
    for (size_t p = 0; p < s->n_peers; p++)
        if (s->peers[p].c.rtt_ms)
            sample_s(b, "tm2p2p_peer_rtt_seconds", &(label){"peer_id", s->peers[p].id.s}, 1,
                     s->peers[p].c.rtt_ms);
    for (size_t f = 0; f < sizeof chan_families / sizeof chan_families[0]; f++) {
        const char *name = chan_families[f].peer;
        family(b, name, "counter", chan_families[f].help);
        for (size_t p = 0; p < s->n_peers; p++) {
            const cli_metrics_peer *x = &s->peers[p];
            for (size_t i = 0; i < nch && i < x->c.n_channels; i++) {
                label ls[] = {{"peer_id", x->id.s}, {"channel", names[i]}};
                sample(b, name, ls, 2, chan_field(&x->c.channels[i], chan_families[f].field));
            }
        }
    }
    family(b, "tm2p2p_peer_send_queue_messages", "gauge", "Messages waiting in the peer's send queue.");
    for (size_t p = 0; p < s->n_peers; p++) {
        const cli_metrics_peer *x = &s->peers[p];
        for (size_t i = 0; i < nch && i < x->c.n_channels; i++) {
            label ls[] = {{"peer_id", x->id.s}, {"channel", names[i]}};
            sample(b, "tm2p2p_peer_send_queue_messages", ls, 2, x->c.queue_size[i]);
        }
    }
}

void cli_metrics_write(const cli_metrics_snap *s, tm2__buf *out)
{
    write_node(s, out);
    if (s->has_discovery)
        write_discovery(&s->disc, out);
    write_peers(s, out);
}

/* ---- JSON ------------------------------------------------------------------------ */

static void add_u64(cJSON *o, const char *k, uint64_t v)
{
    cJSON_AddNumberToObject(o, k, (double)v);
}

/* Durations go out in seconds, like the metrics. */
static void add_secs(cJSON *o, const char *k, uint64_t ms)
{
    cJSON_AddNumberToObject(o, k, (double)ms / 1000.0);
}

/* Our NodeInfo with the reference's field names. */
static cJSON *node_info_json(const tm2_node_info *ni)
{
    cJSON *j = cJSON_CreateObject();
    if (!j || !ni)
        return j;
    cJSON *vs = cJSON_AddArrayToObject(j, "versions");
    for (size_t i = 0; vs && i < ni->n_versions; i++) {
        cJSON *v = cJSON_CreateObject();
        if (!v || !cJSON_AddItemToArray(vs, v)) {
            cJSON_Delete(v);
            break;
        }
        cJSON_AddStringToObject(v, "name", ni->versions[i].name ? ni->versions[i].name : "");
        cJSON_AddStringToObject(v, "version", ni->versions[i].version ? ni->versions[i].version : "");
        cJSON_AddBoolToObject(v, "optional", ni->versions[i].optional);
    }
    char a[TM2_NETADDR_STRLEN] = "";
    if (ni->has_net_address && tm2_netaddr_format(&ni->net_address, a, sizeof a) < 0)
        a[0] = '\0';
    cJSON_AddStringToObject(j, "net_address", a);
    cJSON_AddStringToObject(j, "network", ni->network ? ni->network : "");
    cJSON_AddStringToObject(j, "software", ni->software ? ni->software : "");
    cJSON_AddStringToObject(j, "version", ni->version ? ni->version : "");
    cJSON *ch = cJSON_AddArrayToObject(j, "channels");
    for (size_t i = 0; ch && i < ni->n_channels; i++) {
        char n[8];
        chan_name(n, ni->channels[i]);
        cJSON_AddItemToArray(ch, cJSON_CreateString(n));
    }
    cJSON_AddStringToObject(j, "moniker", ni->moniker ? ni->moniker : "");
    cJSON *other = cJSON_AddObjectToObject(j, "other");
    if (other) {
        cJSON_AddStringToObject(other, "tx_index", ni->tx_index ? ni->tx_index : "");
        cJSON_AddStringToObject(other, "rpc_address", ni->rpc_address ? ni->rpc_address : "");
    }
    return j;
}

/* Prints j (taking it) or returns NULL. */
static char *print(cJSON *j)
{
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return t;
}

char *cli_metrics_status_json(const cli_metrics_snap *s)
{
    const tm2_switch_counters *c = &s->sw;
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "node_id", s->id.s);
    cJSON *ni = node_info_json(s->node_info);
    if (ni && !cJSON_AddItemToObject(j, "node_info", ni))
        cJSON_Delete(ni);
    cJSON_AddStringToObject(j, "listen_addr", s->listen_addr);
    cJSON_AddStringToObject(j, "external_addr", s->external_addr);
    add_secs(j, "uptime_seconds", c->uptime_ms);
    cJSON *p = cJSON_AddObjectToObject(j, "peers");
    if (p) {
        add_u64(p, "inbound", c->peers_inbound);
        add_u64(p, "outbound", c->peers_outbound);
        add_u64(p, "persistent", c->peers_persistent);
        add_u64(p, "private", c->peers_private);
        add_u64(p, "unconditional", c->peers_unconditional);
    }
    cJSON *bn = cJSON_AddObjectToObject(j, "bans");
    if (bn) {
        add_u64(bn, "active", c->bans_active);
        add_u64(bn, "total", c->bans_total);
    }
    add_u64(j, "dials_queued", c->dials_queued);
    add_u64(j, "dials_in_flight", c->dials_in_flight);
    cJSON *h = cJSON_AddObjectToObject(j, "pending_handshakes");
    if (h) {
        add_u64(h, "inbound", c->handshakes_inbound);
        add_u64(h, "outbound", c->handshakes_outbound);
    }
    add_u64(j, "wire_sent_bytes", c->wire_bytes_sent);
    add_u64(j, "wire_received_bytes", c->wire_bytes_recv);
    if (s->has_discovery) {
        uint64_t tried = s->disc.book_tried <= s->disc.book_size ? s->disc.book_tried : s->disc.book_size;
        cJSON *b = cJSON_AddObjectToObject(j, "addrbook");
        if (b) {
            add_u64(b, "tried", tried);
            add_u64(b, "new", s->disc.book_size - tried);
        }
    }
    return print(j);
}

/* One /peers entry; channels in registration order, like the counters. */
static cJSON *peer_json(const cli_metrics_peer *x)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "id", x->id.s);
    cJSON_AddStringToObject(o, "address", x->addr);
    cJSON_AddStringToObject(o, "direction", x->outbound ? "outbound" : "inbound");
    cJSON_AddBoolToObject(o, "persistent", x->persistent);
    cJSON_AddBoolToObject(o, "private", x->is_private);
    cJSON_AddBoolToObject(o, "unconditional", x->unconditional);
    cJSON_AddStringToObject(o, "moniker", x->moniker);
    add_secs(o, "uptime_seconds", x->c.uptime_ms);
    if (x->c.rtt_ms) {   /* absent until measured */
        add_secs(o, "rtt_seconds", x->c.rtt_ms);
        add_secs(o, "min_rtt_seconds", x->c.min_rtt_ms);
    }
    add_u64(o, "wire_sent_bytes", x->c.wire_bytes_sent);
    add_u64(o, "wire_received_bytes", x->c.wire_bytes_recv);
    cJSON *chs = cJSON_AddArrayToObject(o, "channels");
    size_t n = x->c.n_channels < TM2_MCONN_MAX_CHANNELS ? x->c.n_channels : TM2_MCONN_MAX_CHANNELS;
    for (size_t i = 0; chs && i < n; i++) {
        const tm2_channel_counts *k = &x->c.channels[i];
        cJSON *ch = cJSON_CreateObject();
        if (!ch || !cJSON_AddItemToArray(chs, ch)) {
            cJSON_Delete(ch);
            break;
        }
        char name[8];
        chan_name(name, k->id);
        cJSON_AddStringToObject(ch, "id", name);
        add_u64(ch, "sent_bytes", k->bytes_sent);
        add_u64(ch, "received_bytes", k->bytes_recv);
        add_u64(ch, "sent_messages", k->msgs_sent);
        add_u64(ch, "received_messages", k->msgs_recv);
        add_u64(ch, "send_queue", x->c.queue_size[i]);
    }
    return o;
}

char *cli_metrics_peers_json(const cli_metrics_snap *s)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "node_id", s->id.s);
    add_u64(j, "n_peers", s->n_peers);
    cJSON *arr = cJSON_AddArrayToObject(j, "peers");
    for (size_t i = 0; arr && i < s->n_peers; i++) {
        cJSON *o = peer_json(&s->peers[i]);
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            cJSON_Delete(j);
            return NULL;
        }
    }
    return print(j);
}
