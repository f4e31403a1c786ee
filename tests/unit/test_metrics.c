/* The program's metrics writer (cli/metrics.h) on hand-made snapshots: every
 * line parses as Prometheus' text format 0.0.4, names follow the
 * conventions (tm2p2p_ prefix, counters end in _total, HELP and TYPE once per
 * family, before its samples), label values are escaped and read back, no
 * series is listed twice, values are the snapshot's; and the /status and
 * /peers JSON and the listen-address syntax. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/crawl_metrics.h"
#include "cli/http.h"
#include "cli/metrics.h"
#include "tv.h"

/* ---- a strict reader of the exposition ------------------------------------------ */

#define MAX_LABELS 8

typedef struct series {
    char name[128];
    size_t n_labels;
    char keys[MAX_LABELS][32];
    char vals[MAX_LABELS][256];
    double value;
} series;

typedef struct parsed {
    series *s;
    size_t n, cap;
    char families[256][128];
    char types[256][16];
    size_t n_families;
} parsed;

static bool name_ok(const char *s, size_t n, bool colon)
{
    if (!n || isdigit((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || (colon && s[i] == ':')))
            return false;
    return true;
}

static size_t family_of(const parsed *p, const char *name)
{
    for (size_t i = 0; i < p->n_families; i++)
        if (!strcmp(p->families[i], name))
            return i;
    return SIZE_MAX;
}

/* Parses one sample line into *out; fails the test on any deviation. */
static void parse_sample(const char *line, series *out)
{
    memset(out, 0, sizeof *out);
    const char *s = line;
    size_t nl = strcspn(s, "{ ");
    if (!name_ok(s, nl, true) || nl >= sizeof out->name)
        fail_msg("bad metric name in: %s", line);
    memcpy(out->name, s, nl);
    s += nl;
    if (*s == '{') {
        s++;
        while (*s != '}') {
            size_t kl = strcspn(s, "=");
            if (!name_ok(s, kl, false) || kl >= 32 || s[kl + 1] != '"' || out->n_labels == MAX_LABELS)
                fail_msg("bad label in: %s", line);
            memcpy(out->keys[out->n_labels], s, kl);
            s += kl + 2;
            char *v = out->vals[out->n_labels];
            size_t vl = 0;
            for (; *s != '"'; s++) {
                if (!*s || *s == '\n' || vl + 1 >= 256)
                    fail_msg("unterminated label value in: %s", line);
                if (*s == '\\') {
                    s++;
                    if (*s != '\\' && *s != '"' && *s != 'n')
                        fail_msg("bad escape in: %s", line);
                    v[vl++] = *s == 'n' ? '\n' : *s;
                } else {
                    if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
                        fail_msg("unprintable byte in a label value: %s", line);
                    v[vl++] = *s;
                }
            }
            v[vl] = '\0';
            out->n_labels++;
            s++;
            if (*s == ',')
                s++;
            else if (*s != '}')
                fail_msg("bad label list in: %s", line);
        }
        s++;
    }
    if (*s != ' ')
        fail_msg("no value in: %s", line);
    s++;
    char *end;
    out->value = strtod(s, &end);
    if (end == s || *end != '\0')
        fail_msg("bad value in: %s", line);
}

/* Reads the whole text; every line must end in '\n'. */
static void parse_text(const char *text, parsed *p)
{
    memset(p, 0, sizeof *p);
    const char *cur_family = NULL;
    bool saw_help = false;
    for (const char *s = text; *s;) {
        const char *e = strchr(s, '\n');
        if (!e)
            fail_msg("last line without a newline: %s", s);
        char line[2048];
        size_t n = (size_t)(e - s);
        assert_true(n < sizeof line);
        memcpy(line, s, n);
        line[n] = '\0';
        s = e + 1;
        if (!strncmp(line, "# HELP ", 7)) {
            char *name = line + 7, *sp = strchr(name, ' ');
            if (!sp || !name_ok(name, (size_t)(sp - name), true) || !sp[1])
                fail_msg("bad HELP line: %s", line);
            *sp = '\0';
            if (family_of(p, name) != SIZE_MAX)
                fail_msg("family %s listed twice", name);
            assert_true(p->n_families < 256 && strlen(name) < 128);
            memcpy(p->families[p->n_families++], name, strlen(name) + 1);
            cur_family = p->families[p->n_families - 1];
            saw_help = true;
        } else if (!strncmp(line, "# TYPE ", 7)) {
            char *name = line + 7, *sp = strchr(name, ' ');
            if (!sp || !saw_help)
                fail_msg("TYPE without its HELP: %s", line);
            *sp = '\0';
            if (!cur_family || strcmp(name, cur_family))
                fail_msg("TYPE for %s after HELP of %s", name, cur_family ? cur_family : "-");
            if (strcmp(sp + 1, "counter") && strcmp(sp + 1, "gauge"))
                fail_msg("type %s of %s", sp + 1, name);
            memcpy(p->types[p->n_families - 1], sp + 1, strlen(sp + 1) + 1);
            saw_help = false;
        } else if (line[0] == '#' || line[0] == '\0') {
            fail_msg("unexpected line: '%s'", line);
        } else {
            if (p->n == p->cap) {
                p->cap = p->cap ? 2 * p->cap : 256;
                p->s = realloc(p->s, p->cap * sizeof *p->s);
                assert_non_null(p->s);
            }
            series *x = &p->s[p->n++];
            parse_sample(line, x);
            if (!cur_family || strcmp(x->name, cur_family) || !p->types[p->n_families - 1][0])
                fail_msg("sample of %s outside its family", x->name);
        }
    }
}

static const char *label(const series *x, const char *k)
{
    for (size_t i = 0; i < x->n_labels; i++)
        if (!strcmp(x->keys[i], k))
            return x->vals[i];
    return NULL;
}

/* The value of the one series with name and (if k) label k=v; fails if absent. */
static double value(const parsed *p, const char *name, const char *k, const char *v)
{
    for (size_t i = 0; i < p->n; i++) {
        const series *x = &p->s[i];
        if (!strcmp(x->name, name) && (!k || (label(x, k) && !strcmp(label(x, k), v))))
            return x->value;
    }
    fail_msg("no series %s{%s=%s}", name, k ? k : "", v ? v : "");
    return 0;
}

static size_t count(const parsed *p, const char *name)
{
    size_t c = 0;
    for (size_t i = 0; i < p->n; i++)
        c += !strcmp(p->s[i].name, name);
    return c;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Conventions over the whole document. */
static void check_conventions(const parsed *p)
{
    for (size_t i = 0; i < p->n_families; i++) {
        const char *f = p->families[i];
        if (strncmp(f, "tm2p2p_", 7))
            fail_msg("%s: no tm2p2p_ prefix", f);
        bool total = strlen(f) > 6 && !strcmp(f + strlen(f) - 6, "_total");
        if (!strcmp(p->types[i], "counter") != total)
            fail_msg("%s: counters and only counters end in _total", f);
    }
    for (size_t i = 0; i < p->n; i++) {
        for (size_t j = 0; j < p->s[i].n_labels; j++)
            for (size_t k = j + 1; k < p->s[i].n_labels; k++)
                if (!strcmp(p->s[i].keys[j], p->s[i].keys[k]))
                    fail_msg("%s: label %s twice", p->s[i].name, p->s[i].keys[j]);
    }
    /* no series twice: sorted keys, neighbours differ */
    char **keys = calloc(p->n ? p->n : 1, sizeof *keys);
    assert_non_null(keys);
    for (size_t i = 0; i < p->n; i++) {
        tm2__buf b = {0};
        tm2__buf_puts(&b, p->s[i].name);
        for (size_t j = 0; j < p->s[i].n_labels; j++)
            tm2__buf_printf(&b, "|%s=%s", p->s[i].keys[j], p->s[i].vals[j]);
        assert_false(b.oom);
        keys[i] = b.p;
    }
    qsort(keys, p->n, sizeof *keys, cmp_str);
    for (size_t i = 1; i < p->n; i++)
        if (!strcmp(keys[i - 1], keys[i]))
            fail_msg("series %s listed twice", keys[i]);
    for (size_t i = 0; i < p->n; i++)
        free(keys[i]);
    free(keys);
}

/* ---- snapshots ------------------------------------------------------------------------ */

static const tm2_version_info versions[] = {{"p2p", "v1.0.0-rc.0", false}};
static const uint8_t node_chans[] = {0x50, 0x70};

static tm2_node_info our_info(void)
{
    return (tm2_node_info){.versions = versions, .n_versions = 1, .network = "test\"net",
                           .version = "v1.0.0-rc.0", .channels = node_chans, .n_channels = 2,
                           .moniker = "back\\slash \"quoted\"\nline", .tx_index = "off", .rpc_address = ""};
}

static void peer_id(int i, tm2_id *id)
{
    tm2_node_key k;
    uint8_t seed[32] = {(uint8_t)i, (uint8_t)(i >> 8), 0x77};
    tm2_node_key_from_seed(&k, seed);
    tm2_node_key_id(&k, id);
}

static cli_metrics_snap full_snap(tm2_node_info *ni, size_t n_peers)
{
    cli_metrics_snap s;
    memset(&s, 0, sizeof s);
    peer_id(100, &s.id);
    s.node_info = ni;
    snprintf(s.listen_addr, sizeof s.listen_addr, "%s@127.0.0.1:26656", s.id.s);
    snprintf(s.external_addr, sizeof s.external_addr, "%s@127.0.0.1:26656", s.id.s);
    tm2_switch_counters *c = &s.sw;
    c->uptime_ms = 12345;
    c->peers_inbound = 2;
    c->peers_outbound = 1;
    c->peers_persistent = 1;
    c->peers_private = 1;
    c->peers_unconditional = 2;
    c->bans_active = 3;
    c->bans_total = 41;
    c->inbound_refused[TM2_REFUSED_RATE_IP] = 42;
    c->inbound_refused[TM2_REFUSED_BANNED] = 43;
    c->evicted[TM2_EVICTED_NEWCOMER] = 44;
    c->peers_disconnected[-TM2_EEVICTED] = 44;
    c->dials_queued = 3;
    c->dials_in_flight = 4;
    c->handshakes_inbound = 5;
    c->handshakes_outbound = 6;
    c->peers_connected_inbound = 7;
    c->peers_connected_outbound = 8;
    c->peers_disconnected[0] = 9;
    c->peers_disconnected[-TM2_EPONG] = 10;
    c->dials_failed[-TM2_ECONNREFUSED] = 11;
    c->dials_failed[-TM2_ELIMIT] = 12;
    c->rejected[-TM2_ELIMIT] = 13;
    c->rejected[TM2_STATS_REASONS - 1] = 1;   /* a reason past the table */
    c->handshakes_ok = 14;
    c->handshakes_failed[TM2_STAGE_SECRET] = 15;
    c->handshakes_failed[TM2_STAGE_CHECK] = 16;
    c->inbound_accepted = 17;
    c->inbound_dropped = 18;
    c->recv_rate_stalls = 19;
    c->wire_bytes_sent = 1ull << 40;
    c->wire_bytes_recv = 21;
    c->n_channels = 2;
    c->channels[0] = (tm2_channel_counts){0x50, 1, 2, 3, 4};
    c->channels[1] = (tm2_channel_counts){0x70, 5, 6, 7, 8};
    s.has_discovery = true;
    s.disc = (tm2_discovery_stats){.requests_sent = 31, .requests_received = 32, .responses_rejected = 3,
                                   .responses_oversized = 1, .responses_invalid = 2, .book_size = 40,
                                   .book_tried = 15, .book_saves = 2};
    s.n_peers = n_peers;
    s.peers = calloc(n_peers ? n_peers : 1, sizeof *s.peers);
    assert_non_null(s.peers);
    for (size_t i = 0; i < n_peers; i++) {
        cli_metrics_peer *p = &s.peers[i];
        peer_id((int)i, &p->id);
        snprintf(p->addr, sizeof p->addr, "%s@127.0.0.1:%zu", p->id.s, 30000 + i);
        snprintf(p->moniker, sizeof p->moniker, i == 0 ? "a \"b\" \\c" : "peer-%zu", i);
        p->outbound = i == 0;
        p->persistent = i == 0;
        p->is_private = i == 1;
        p->unconditional = i == 2;
        p->c.uptime_ms = 1000 * i + 5;
        p->c.rtt_ms = i ? 30 * (uint32_t)i + 7 : 0;   /* peer 0 not measured */
        p->c.min_rtt_ms = i ? 20 * (uint32_t)i + 1 : 0;
        p->c.n_channels = 2;
        p->c.channels[0] = (tm2_channel_counts){0x50, i, 10 * i, i + 1, 10 * i + 1};
        p->c.channels[1] = (tm2_channel_counts){0x70, 2 * i, 20 * i, 2 * i + 1, 20 * i + 1};
        p->c.queue_size[0] = i;
        p->c.queue_size[1] = 1;
    }
    return s;
}

static char *write_text(const cli_metrics_snap *s)
{
    tm2__buf b = {0};
    cli_metrics_write(s, &b);
    assert_false(b.oom);
    assert_non_null(b.p);
    return b.p;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void every_line_parses(void **state)
{
    (void)state;
    tm2_node_info ni = our_info();
    cli_metrics_snap s = full_snap(&ni, 3);
    char *text = write_text(&s);
    parsed p;
    parse_text(text, &p);
    check_conventions(&p);

    /* the node's own line, its escaped strings read back */
    assert_int_equal(count(&p, "tm2p2p_node_info"), 1);
    assert_string_equal(label(&p.s[0], "moniker"), "back\\slash \"quoted\"\nline");
    assert_string_equal(label(&p.s[0], "network"), "test\"net");
    assert_string_equal(label(&p.s[0], "node_id"), s.id.s);
    assert_true(value(&p, "tm2p2p_uptime_seconds", NULL, NULL) == 12.345);
    assert_non_null(strstr(text, "\ntm2p2p_uptime_seconds 12.345\n"));

    assert_int_equal(value(&p, "tm2p2p_peers", "direction", "inbound"), 2);
    assert_int_equal(value(&p, "tm2p2p_peers", "direction", "outbound"), 1);
    assert_int_equal(value(&p, "tm2p2p_peers_by_kind", "kind", "persistent"), 1);
    assert_int_equal(value(&p, "tm2p2p_peers_by_kind", "kind", "unconditional"), 2);
    assert_int_equal(value(&p, "tm2p2p_peers_by_kind", "kind", "private"), 1);
    assert_int_equal(value(&p, "tm2p2p_pending_handshakes", "direction", "inbound"), 5);
    assert_int_equal(value(&p, "tm2p2p_pending_handshakes", "direction", "outbound"), 6);
    assert_int_equal(value(&p, "tm2p2p_dials_queued", NULL, NULL), 3);
    assert_int_equal(value(&p, "tm2p2p_dials_in_flight", NULL, NULL), 4);
    assert_int_equal(value(&p, "tm2p2p_peers_connected_total", "direction", "outbound"), 8);

    /* reasons by tm2_errname, only those seen */
    assert_int_equal(value(&p, "tm2p2p_peers_disconnected_total", "reason", "OK"), 9);
    assert_int_equal(value(&p, "tm2p2p_peers_disconnected_total", "reason", tm2_errname(TM2_EPONG)), 10);
    assert_int_equal(count(&p, "tm2p2p_peers_disconnected_total"), 3);
    assert_int_equal(value(&p, "tm2p2p_peers_disconnected_total", "reason", "EVICTED"), 44);
    /* Refusals at accept and evictions: every reason, zeros included. */
    assert_int_equal(count(&p, "tm2p2p_inbound_refused_total"), TM2_REFUSALS);
    assert_int_equal(value(&p, "tm2p2p_inbound_refused_total", "reason", "rate_ip"), 42);
    assert_int_equal(value(&p, "tm2p2p_inbound_refused_total", "reason", "banned"), 43);
    assert_int_equal(value(&p, "tm2p2p_inbound_refused_total", "reason", "full"), 0);
    assert_int_equal(count(&p, "tm2p2p_peers_evicted_total"), TM2_EVICTIONS);
    assert_int_equal(value(&p, "tm2p2p_peers_evicted_total", "reason", "newcomer"), 44);
    assert_int_equal(value(&p, "tm2p2p_peers_evicted_total", "reason", "persistent"), 0);
    assert_int_equal(value(&p, "tm2p2p_bans", NULL, NULL), 3);
    assert_int_equal(value(&p, "tm2p2p_bans_total", NULL, NULL), 41);
    assert_int_equal(value(&p, "tm2p2p_dials_failed_total", "reason", "CONNREFUSED"), 11);
    assert_int_equal(value(&p, "tm2p2p_dials_failed_total", "reason", "LIMIT"), 12);
    assert_int_equal(value(&p, "tm2p2p_peers_rejected_total", "reason", "LIMIT"), 13);
    assert_int_equal(value(&p, "tm2p2p_peers_rejected_total", "reason", "UNKNOWN"), 1);
    assert_int_equal(value(&p, "tm2p2p_dials_total", "outcome", "connected"), 8);
    assert_int_equal(value(&p, "tm2p2p_dials_total", "outcome", "failed"), 23);
    assert_int_equal(value(&p, "tm2p2p_handshakes_total", "outcome", "ok"), 14);
    assert_int_equal(value(&p, "tm2p2p_handshakes_total", "outcome", "failed"), 31);
    assert_int_equal(value(&p, "tm2p2p_handshake_failures_total", "stage", "secret_connection"), 15);
    assert_int_equal(value(&p, "tm2p2p_handshake_failures_total", "stage", "check"), 16);
    assert_int_equal(value(&p, "tm2p2p_handshake_failures_total", "stage", "connect"), 0);
    assert_int_equal(count(&p, "tm2p2p_handshake_failures_total"), 5);
    assert_int_equal(value(&p, "tm2p2p_inbound_connections_total", "outcome", "dropped"), 18);
    assert_int_equal(value(&p, "tm2p2p_receive_rate_stalls_total", NULL, NULL), 19);
    /* large counters are printed whole, not in exponent form */
    assert_non_null(strstr(text, "\ntm2p2p_wire_sent_bytes_total 1099511627776\n"));

    /* channels */
    assert_int_equal(value(&p, "tm2p2p_channel_sent_messages_total", "channel", "0x50"), 1);
    assert_int_equal(value(&p, "tm2p2p_channel_sent_bytes_total", "channel", "0x70"), 6);
    assert_int_equal(value(&p, "tm2p2p_channel_received_messages_total", "channel", "0x70"), 7);
    assert_int_equal(value(&p, "tm2p2p_channel_received_bytes_total", "channel", "0x50"), 4);
    assert_int_equal(value(&p, "tm2p2p_channel_send_queue_messages", "channel", "0x50"), 0 + 1 + 2);
    assert_int_equal(value(&p, "tm2p2p_channel_send_queue_messages", "channel", "0x70"), 3);

    /* discovery */
    assert_int_equal(value(&p, "tm2p2p_discovery_requests_total", "direction", "sent"), 31);
    assert_int_equal(value(&p, "tm2p2p_discovery_requests_total", "direction", "received"), 32);
    assert_int_equal(value(&p, "tm2p2p_discovery_responses_rejected_total", "reason", "invalid"), 2);
    assert_int_equal(value(&p, "tm2p2p_addrbook_size", "table", "tried"), 15);
    assert_int_equal(value(&p, "tm2p2p_addrbook_size", "table", "new"), 25);
    assert_int_equal(value(&p, "tm2p2p_addrbook_saves_total", "outcome", "ok"), 2);

    /* per peer: every peer, every channel, labels read back */
    assert_int_equal(count(&p, "tm2p2p_peer_info"), 3);
    assert_int_equal(count(&p, "tm2p2p_peer_uptime_seconds"), 3);
    assert_int_equal(count(&p, "tm2p2p_peer_sent_bytes_total"), 6);
    assert_int_equal(count(&p, "tm2p2p_peer_send_queue_messages"), 6);
    for (size_t i = 0; i < p.n; i++) {
        series *x = &p.s[i];
        if (strcmp(x->name, "tm2p2p_peer_info"))
            continue;
        const cli_metrics_peer *sp = NULL;
        for (size_t k = 0; k < s.n_peers; k++)
            if (!strcmp(s.peers[k].id.s, label(x, "peer_id")))
                sp = &s.peers[k];
        assert_non_null(sp);
        assert_string_equal(label(x, "moniker"), sp->moniker);
        assert_string_equal(label(x, "direction"), sp->outbound ? "outbound" : "inbound");
        assert_string_equal(label(x, "private"), sp->is_private ? "true" : "false");
        assert_string_equal(label(x, "unconditional"), sp->unconditional ? "true" : "false");
    }
    assert_true(value(&p, "tm2p2p_peer_uptime_seconds", "peer_id", s.peers[2].id.s) == 2.005);
    assert_int_equal(count(&p, "tm2p2p_peer_rtt_seconds"), 2);
    assert_true(value(&p, "tm2p2p_peer_rtt_seconds", "peer_id", s.peers[2].id.s) == 0.067);
    for (size_t i = 0; i < p.n; i++)   /* peer 0, not measured, has none */
        if (!strcmp(p.s[i].name, "tm2p2p_peer_rtt_seconds"))
            assert_string_not_equal(label(&p.s[i], "peer_id"), s.peers[0].id.s);
    assert_int_equal(value(&p, "tm2p2p_peer_received_bytes_total", "peer_id", s.peers[2].id.s), 21);
    free(p.s);
    free(text);
    cli_metrics_snap_free(&s);
}

/* Peer series vanish with their peers; the rest of the document keeps its
 * shape, and without discovery its families are left out. */
static void bounded_series(void **state)
{
    (void)state;
    tm2_node_info ni = our_info();
    cli_metrics_snap many = full_snap(&ni, 500), none = full_snap(&ni, 0);
    none.has_discovery = false;
    char *t1 = write_text(&many), *t2 = write_text(&none);
    parsed p1, p2;
    parse_text(t1, &p1);
    parse_text(t2, &p2);
    check_conventions(&p1);
    check_conventions(&p2);
    size_t with_peer_id = 0;
    for (size_t i = 0; i < p1.n; i++)
        with_peer_id += label(&p1.s[i], "peer_id") != NULL;
    /* info, uptime, 4 counters and a queue per channel (2); a round trip
     * for all but peer 0 */
    assert_int_equal(with_peer_id, 500 * (2 + 5 * 2) + 499);
    for (size_t i = 0; i < p2.n; i++) {
        assert_null(label(&p2.s[i], "peer_id"));
        assert_true(strncmp(p2.s[i].name, "tm2p2p_discovery_", 17) && strncmp(p2.s[i].name, "tm2p2p_addrbook_", 16));
    }
    /* the node's own series are the same either way, discovery aside */
    size_t node1 = 0;
    for (size_t i = 0; i < p1.n; i++)
        node1 += !label(&p1.s[i], "peer_id") && strncmp(p1.s[i].name, "tm2p2p_discovery_", 17) &&
                 strncmp(p1.s[i].name, "tm2p2p_addrbook_", 16);
    assert_int_equal(node1, p2.n);
    free(p1.s);
    free(p2.s);
    free(t1);
    free(t2);
    cli_metrics_snap_free(&many);
    cli_metrics_snap_free(&none);
}

static void label_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", "\"\""},
        {"plain", "\"plain\""},
        {"a\\b", "\"a\\\\b\""},
        {"say \"hi\"", "\"say \\\"hi\\\"\""},
        {"two\nlines", "\"two\\nlines\""},
        {"tab\there", "\"tab?here\""},
        {"caf\xc3\xa9", "\"caf??\""},
        {"\x7f", "\"?\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tm2__buf b = {0};
        tm2__buf_puts(&b, "x=");
        cli_metrics_label_value(&b, cases[i].in);
        assert_false(b.oom);
        assert_string_equal(b.p + 2, cases[i].out);
        tm2__buf_free(&b);
    }
}

static void status_and_peers_json(void **state)
{
    (void)state;
    tm2_node_info ni = our_info();
    cli_metrics_snap s = full_snap(&ni, 2);
    char *st = cli_metrics_status_json(&s), *pj = cli_metrics_peers_json(&s);
    assert_non_null(st);
    assert_non_null(pj);
    cJSON *a = cJSON_Parse(st), *b = cJSON_Parse(pj);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(cJSON_GetObjectItem(a, "node_id")->valuestring, s.id.s);
    assert_string_equal(cJSON_GetObjectItem(a, "listen_addr")->valuestring, s.listen_addr);
    assert_string_equal(cJSON_GetObjectItem(a, "external_addr")->valuestring, s.external_addr);
    cJSON *n = cJSON_GetObjectItem(a, "node_info");
    assert_string_equal(cJSON_GetObjectItem(n, "moniker")->valuestring, ni.moniker);
    assert_string_equal(cJSON_GetObjectItem(n, "network")->valuestring, "test\"net");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(n, "channels"), 1)->valuestring, "0x70");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "peers"), "inbound")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "peers"), "unconditional")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "bans"), "active")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "bans"), "total")->valueint, 41);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "addrbook"), "new")->valueint, 25);
    assert_true(cJSON_GetObjectItem(a, "uptime_seconds")->valuedouble == 12.345);

    assert_int_equal(cJSON_GetObjectItem(b, "n_peers")->valueint, 2);
    cJSON *peers = cJSON_GetObjectItem(b, "peers");
    assert_int_equal(cJSON_GetArraySize(peers), 2);
    cJSON *p1 = cJSON_GetArrayItem(peers, 1);
    assert_string_equal(cJSON_GetObjectItem(p1, "id")->valuestring, s.peers[1].id.s);
    assert_string_equal(cJSON_GetObjectItem(p1, "address")->valuestring, s.peers[1].addr);
    assert_string_equal(cJSON_GetObjectItem(p1, "direction")->valuestring, "inbound");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(p1, "unconditional")));
    assert_true(cJSON_GetObjectItem(p1, "uptime_seconds")->valuedouble == 1.005);
    assert_true(cJSON_GetObjectItem(p1, "rtt_seconds")->valuedouble == 0.037);
    assert_true(cJSON_GetObjectItem(p1, "min_rtt_seconds")->valuedouble == 0.021);
    cJSON *p0 = cJSON_GetArrayItem(peers, 0);
    assert_null(cJSON_GetObjectItem(p0, "rtt_seconds"));   /* not measured */
    assert_null(cJSON_GetObjectItem(p0, "min_rtt_seconds"));
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(p1, "channels"), 1);
    assert_string_equal(cJSON_GetObjectItem(ch, "id")->valuestring, "0x70");
    assert_int_equal(cJSON_GetObjectItem(ch, "sent_bytes")->valueint, 20);
    assert_int_equal(cJSON_GetObjectItem(ch, "received_bytes")->valueint, 21);
    assert_int_equal(cJSON_GetObjectItem(ch, "send_queue")->valueint, 1);
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(st);
    free(pj);
    cli_metrics_snap_free(&s);
}

/* The crawler's and the seed's /metrics follow the same conventions. */
static void crawl_families(void **state)
{
    (void)state;
    crawl_progress pr = {.known = 40, .reachable = 31, .refused = 2, .liars = 1, .inflight = 3,
                         .queued = 5, .probes = 900, .verified = 870, .rounds_done = 12,
                         .sessions = 77, .answers = 75, .addrs_dropped = 4};
    for (int seed = 0; seed < 2; seed++) {
        tm2__buf b = {0};
        cli_crawl_metrics_write(&pr, seed, &b);
        assert_false(b.oom);
        parsed p;
        parse_text(b.p, &p);
        check_conventions(&p);
        assert_true(value(&p, "tm2p2p_crawl_addresses_reachable", NULL, NULL) == 31);
        assert_true(value(&p, "tm2p2p_crawl_probes_verified_total", NULL, NULL) == 870);
        assert_int_equal(count(&p, "tm2p2p_seed_answers_total"), seed ? 1 : 0);
        if (seed)
            assert_true(value(&p, "tm2p2p_seed_answers_total", NULL, NULL) == 75);
        free(p.s);
        tm2__buf_free(&b);
    }
}

static void listen_address_syntax(void **state)
{
    (void)state;
    static const char *const good[] = {":26660", "127.0.0.1:0", "0.0.0.0:26660", "[::1]:9100", "tcp://127.0.0.1:1",
                                       "localhost:26660"};
    static const char *const bad[] = {"", "26660", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "::1:80",
                                      "[::1]80", "127.0.0.1:8x", "127.0.0.1:-1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (cli_http_addr_check(good[i]))
            fail_msg("refused %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (!cli_http_addr_check(bad[i]))
            fail_msg("accepted %s", bad[i]);
    int code;
    char *body, err[256];
    size_t len;
    assert_int_equal(cli_http_get("https://127.0.0.1:1/", 100, &code, &body, &len, err, sizeof err), -1);
    assert_non_null(strstr(err, "only http://"));
    assert_int_equal(cli_http_get("http:///metrics", 100, &code, &body, &len, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_line_parses),
        cmocka_unit_test(bounded_series),
        cmocka_unit_test(label_escaping),
        cmocka_unit_test(status_and_peers_json),
        cmocka_unit_test(listen_address_syntax),
        cmocka_unit_test(crawl_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
