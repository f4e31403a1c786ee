/* The node's HTTP endpoints over real sockets on loopback: a hub of the
 * program's runtime with three peers (two dial it, one of them private; it
 * dials the third, a persistent peer; everyone gossips), GET /metrics,
 * /status and /peers, every figure checked against tm2_switch_stats and
 * tm2_peer_stats read just before and just after; a peer's series leave with
 * it; `tm2p2p status --url` prints the table; errors (404, a taken port, a
 * stopped server). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "test_metrics_support.h"

#define PROGRAM TM2_BINARY_DIR "/tm2p2p"

typedef struct world {
    tnode *hub, *p[3];
    char http[64];
} world;

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->p[2] = tnode_new(&(tnode_opts){.moniker = "p3-persistent", .gossip_ms = 50});
    w->p[0] = tnode_new(&(tnode_opts){.moniker = "p1", .gossip_ms = 50});
    w->p[1] = tnode_new(&(tnode_opts){.moniker = "p2 \"private\"", .gossip_ms = 50});
    const char *pers[] = {w->p[2]->listen};
    tm2_id priv = *tm2_switch_id(tsw(w->p[1]));
    w->hub = tnode_new(&(tnode_opts){.moniker = "hub", .http = "127.0.0.1:0", .persistent = pers,
                                     .n_persistent = 1, .priv = &priv, .n_priv = 1, .gossip_ms = 50});
    assert_non_null(cli_node_http_addr(w->hub->n));
    snprintf(w->http, sizeof w->http, "%s", cli_node_http_addr(w->hub->n));
    assert_int_equal(strncmp(w->http, "127.0.0.1:", 10), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(tm2_switch_dial_peers(tsw(w->p[i]), &w->hub->addr, 1), 1);
    twait_peers(w->hub, 3, 20000);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    tnode_free(w->hub);
    for (int i = 0; i < 3; i++)
        tnode_free(w->p[i]);
    free(w);
    return 0;
}

static bool gossip_flowing(void *arg)
{
    world *w = arg;
    tm2_switch_counters c;
    tm2_switch_stats(tsw(w->hub), &c);
    for (size_t i = 0; i < c.n_channels; i++)
        if (c.channels[i].id == 0x70)
            return c.channels[i].msgs_recv >= 10 && c.channels[i].msgs_sent >= 10;
    return false;
}

/* lo <= the series' value <= hi */
static void within(const char *text, const char *series, uint64_t lo, uint64_t hi)
{
    double v = metric(text, series);
    if (v < (double)lo || v > (double)hi)
        fail_msg("%s = %.0f, not within [%llu, %llu]", series, v, (unsigned long long)lo, (unsigned long long)hi);
}

static uint64_t reasons_total(const uint64_t *a)
{
    uint64_t t = 0;
    for (int i = 0; i < TM2_STATS_REASONS; i++)
        t += a[i];
    return t;
}

/* Peers of the hub by ID, referenced; n set. */
static size_t hub_peers(world *w, tm2_peer **ps, size_t cap)
{
    size_t n = tm2_switch_peers(tsw(w->hub), ps, cap);
    assert_true(n <= cap);
    return n;
}

static void metrics_match_counters(void **state)
{
    world *w = *state;
    assert_true(twait(w->hub, 20000, gossip_flowing, w));
    tm2_peer *ps[8];
    size_t np = hub_peers(w, ps, 8);
    assert_int_equal(np, 3);
    tm2_peer_counters pc1[3], pc2[3];
    tm2_switch_counters s1, s2;
    for (size_t i = 0; i < np; i++)
        assert_int_equal(tm2_peer_stats(ps[i], &pc1[i]), 0);
    assert_int_equal(tm2_switch_stats(tsw(w->hub), &s1), 0);
    char *text = get_path(w->http, "/metrics", 200);
    assert_int_equal(tm2_switch_stats(tsw(w->hub), &s2), 0);
    for (size_t i = 0; i < np; i++)
        assert_int_equal(tm2_peer_stats(ps[i], &pc2[i]), 0);

    /* who is connected does not change here */
    assert_int_equal(s1.peers_inbound, 2);
    assert_int_equal(s1.peers_outbound, 1);
    assert_int_equal(metric(text, "tm2p2p_peers{direction=\"inbound\"}"), s1.peers_inbound);
    assert_int_equal(metric(text, "tm2p2p_peers{direction=\"outbound\"}"), s1.peers_outbound);
    assert_int_equal(metric(text, "tm2p2p_peers_by_kind{kind=\"persistent\"}"), 1);
    assert_int_equal(metric(text, "tm2p2p_peers_by_kind{kind=\"private\"}"), 1);
    assert_int_equal(metric(text, "tm2p2p_peers_by_kind{kind=\"unconditional\"}"), 0);
    within(text, "tm2p2p_peers_connected_total{direction=\"inbound\"}", s1.peers_connected_inbound,
           s2.peers_connected_inbound);
    within(text, "tm2p2p_dials_total{outcome=\"connected\"}", s1.peers_connected_outbound,
           s2.peers_connected_outbound);
    within(text, "tm2p2p_handshakes_total{outcome=\"ok\"}", s1.handshakes_ok, s2.handshakes_ok);
    within(text, "tm2p2p_inbound_connections_total{outcome=\"accepted\"}", s1.inbound_accepted,
           s2.inbound_accepted);
    within(text, "tm2p2p_dials_started_total", s1.dials_started, s2.dials_started);
    within(text, "tm2p2p_wire_sent_bytes_total", s1.wire_bytes_sent, s2.wire_bytes_sent);
    within(text, "tm2p2p_wire_received_bytes_total", s1.wire_bytes_recv, s2.wire_bytes_recv);
    within(text, "tm2p2p_uptime_seconds", s1.uptime_ms / 1000, s2.uptime_ms / 1000 + 1);
    assert_int_equal(metric(text, "tm2p2p_pending_handshakes{direction=\"inbound\"}"), 0);
    assert_int_equal(s1.n_channels, 2);
    for (size_t i = 0; i < s1.n_channels; i++) {
        char k[160];
        const tm2_channel_counts *a = &s1.channels[i], *b = &s2.channels[i];
        snprintf(k, sizeof k, "tm2p2p_channel_sent_messages_total{channel=\"0x%02x\"}", a->id);
        within(text, k, a->msgs_sent, b->msgs_sent);
        snprintf(k, sizeof k, "tm2p2p_channel_sent_bytes_total{channel=\"0x%02x\"}", a->id);
        within(text, k, a->bytes_sent, b->bytes_sent);
        snprintf(k, sizeof k, "tm2p2p_channel_received_messages_total{channel=\"0x%02x\"}", a->id);
        within(text, k, a->msgs_recv, b->msgs_recv);
        snprintf(k, sizeof k, "tm2p2p_channel_received_bytes_total{channel=\"0x%02x\"}", a->id);
        within(text, k, a->bytes_recv, b->bytes_recv);
        snprintf(k, sizeof k, "tm2p2p_channel_send_queue_messages{channel=\"0x%02x\"}", a->id);
        assert_non_null(find_series(text, k));
    }
    assert_true(metric(text, "tm2p2p_channel_received_messages_total{channel=\"0x70\"}") >= 10);

    /* per peer: one set of series each, values between the two readings */
    assert_int_equal(count_samples(text, "tm2p2p_peer_info{"), 3);
    assert_int_equal(count_samples(text, "peer_id="), 3 * (2 + 5 * 2));
    for (size_t i = 0; i < np; i++) {
        const tm2_id *id = tm2_peer_id(ps[i]);
        char k[256];
        snprintf(k, sizeof k, "tm2p2p_peer_info{peer_id=\"%s\",direction=\"%s\",persistent=\"%s\",private=\"%s\",",
                 id->s, tm2_peer_is_outbound(ps[i]) ? "outbound" : "inbound",
                 tm2_peer_is_persistent(ps[i]) ? "true" : "false", tm2_peer_is_private(ps[i]) ? "true" : "false");
        assert_int_equal(count_samples(text, k), 1);
        snprintf(k, sizeof k, "tm2p2p_peer_uptime_seconds{peer_id=\"%s\"}", id->s);
        double up = metric(text, k);
        assert_true(up * 1000 >= (double)pc1[i].uptime_ms - 1 && up * 1000 <= (double)pc2[i].uptime_ms + 1);
        for (size_t c = 0; c < pc1[i].n_channels; c++) {
            const tm2_channel_counts *a = &pc1[i].channels[c], *b = &pc2[i].channels[c];
            snprintf(k, sizeof k, "tm2p2p_peer_sent_bytes_total{peer_id=\"%s\",channel=\"0x%02x\"}", id->s, a->id);
            within(text, k, a->bytes_sent, b->bytes_sent);
            snprintf(k, sizeof k, "tm2p2p_peer_received_bytes_total{peer_id=\"%s\",channel=\"0x%02x\"}", id->s,
                     a->id);
            within(text, k, a->bytes_recv, b->bytes_recv);
            snprintf(k, sizeof k, "tm2p2p_peer_sent_messages_total{peer_id=\"%s\",channel=\"0x%02x\"}", id->s,
                     a->id);
            within(text, k, a->msgs_sent, b->msgs_sent);
            snprintf(k, sizeof k, "tm2p2p_peer_received_messages_total{peer_id=\"%s\",channel=\"0x%02x\"}",
                     id->s, a->id);
            within(text, k, a->msgs_recv, b->msgs_recv);
        }
    }
    /* the private peer's moniker, escaped */
    assert_int_equal(count_samples(text, "moniker=\"p2 \\\"private\\\"\"} 1"), 1);
    /* and ourselves */
    char k[256];
    snprintf(k, sizeof k, "tm2p2p_node_info{node_id=\"%s\",moniker=\"hub\",network=\"metrics-test\",",
             tm2_switch_id(tsw(w->hub))->s);
    assert_int_equal(count_samples(text, k), 1);
    for (size_t i = 0; i < np; i++)
        tm2_peer_unref(ps[i]);
    free(text);
}

static cJSON *get_json(const char *hostport, const char *path)
{
    char *body = get_path(hostport, path, 200);
    cJSON *j = cJSON_Parse(body);
    if (!j)
        fail_msg("%s: not JSON: %s", path, body);
    free(body);
    return j;
}

static void status_and_peers(void **state)
{
    world *w = *state;
    cJSON *st = get_json(w->http, "/status");
    assert_string_equal(cJSON_GetObjectItem(st, "node_id")->valuestring, tm2_switch_id(tsw(w->hub))->s);
    assert_string_equal(cJSON_GetObjectItem(st, "listen_addr")->valuestring, w->hub->listen);
    /* no external address configured: the listen address is advertised */
    assert_string_equal(cJSON_GetObjectItem(st, "external_addr")->valuestring, w->hub->listen);
    cJSON *ni = cJSON_GetObjectItem(st, "node_info");
    assert_string_equal(cJSON_GetObjectItem(ni, "moniker")->valuestring, "hub");
    assert_string_equal(cJSON_GetObjectItem(ni, "network")->valuestring, "metrics-test");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ni, "channels")), 2);
    cJSON *p = cJSON_GetObjectItem(st, "peers");
    assert_int_equal(cJSON_GetObjectItem(p, "inbound")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(p, "outbound")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(p, "persistent")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(p, "private")->valueint, 1);
    assert_non_null(cJSON_GetObjectItem(st, "addrbook"));
    cJSON_Delete(st);

    tm2_peer *ps[8];
    size_t np = hub_peers(w, ps, 8);
    tm2_peer_counters before[8], after[8];
    for (size_t i = 0; i < np; i++)
        tm2_peer_stats(ps[i], &before[i]);
    cJSON *pj = get_json(w->http, "/peers");
    for (size_t i = 0; i < np; i++)
        tm2_peer_stats(ps[i], &after[i]);
    assert_int_equal(cJSON_GetObjectItem(pj, "n_peers")->valueint, 3);
    cJSON *arr = cJSON_GetObjectItem(pj, "peers");
    assert_int_equal(cJSON_GetArraySize(arr), 3);
    for (size_t i = 0; i < np; i++) {
        cJSON *x = NULL, *it;
        cJSON_ArrayForEach(it, arr)
        if (!strcmp(cJSON_GetObjectItem(it, "id")->valuestring, tm2_peer_id(ps[i])->s))
            x = it;
        assert_non_null(x);
        tm2_netaddr a;
        char as[TM2_NETADDR_STRLEN];
        tm2_peer_socket_addr(ps[i], &a);
        assert_true(tm2_netaddr_format(&a, as, sizeof as) > 0);
        assert_string_equal(cJSON_GetObjectItem(x, "address")->valuestring, as);
        assert_string_equal(cJSON_GetObjectItem(x, "direction")->valuestring,
                            tm2_peer_is_outbound(ps[i]) ? "outbound" : "inbound");
        double up = cJSON_GetObjectItem(x, "uptime_seconds")->valuedouble;
        assert_true(up * 1000 >= (double)before[i].uptime_ms - 1 && up * 1000 <= (double)after[i].uptime_ms + 1);
        if (!after[i].rtt_ms)   /* absent until measured */
            assert_null(cJSON_GetObjectItem(x, "rtt_seconds"));
        cJSON *chs = cJSON_GetObjectItem(x, "channels");
        assert_int_equal(cJSON_GetArraySize(chs), before[i].n_channels);
        for (size_t c = 0; c < before[i].n_channels; c++) {
            cJSON *ch = cJSON_GetArrayItem(chs, (int)c);
            double sb = cJSON_GetObjectItem(ch, "sent_bytes")->valuedouble;
            double rb = cJSON_GetObjectItem(ch, "received_bytes")->valuedouble;
            assert_true(sb >= (double)before[i].channels[c].bytes_sent && sb <= (double)after[i].channels[c].bytes_sent);
            assert_true(rb >= (double)before[i].channels[c].bytes_recv && rb <= (double)after[i].channels[c].bytes_recv);
            assert_true(cJSON_GetObjectItem(ch, "send_queue")->valuedouble >= 0);
        }
        tm2_peer_unref(ps[i]);
    }
    cJSON_Delete(pj);
}

static void status_command_table(void **state)
{
    world *w = *state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s status --url http://%s/ 2>&1", PROGRAM, w->http);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char out[16384];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    assert_int_equal(pclose(f), 0);
    assert_non_null(strstr(out, tm2_switch_id(tsw(w->hub))->s));
    assert_non_null(strstr(out, "peers       3 (inbound 2, outbound 1; persistent 1, unconditional 0, private 1)"));
    assert_non_null(strstr(out, "PEER "));
    assert_non_null(strstr(out, " RTT_MS "));
    for (int i = 0; i < 3; i++)
        assert_non_null(strstr(out, tm2_switch_id(tsw(w->p[i]))->s));
    assert_non_null(strstr(out, "0x70"));

    /* a node that is not there: exit 1 with the reason; bad usage: 2 */
    snprintf(cmd, sizeof cmd, "%s status --url http://127.0.0.1:1 --timeout 2000 2>&1", PROGRAM);
    f = popen(cmd, "r");
    n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    assert_non_null(strstr(out, "cannot connect"));
    snprintf(cmd, sizeof cmd, "%s status --url https://x 2>/dev/null", PROGRAM);
    st = system(cmd);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}

typedef struct gone_want {
    world *w;
    tm2_id id;
} gone_want;

static void peer_series_leave(void **state)
{
    world *w = *state;
    tm2_id id = *tm2_switch_id(tsw(w->p[0]));
    char *text = get_path(w->http, "/metrics", 200);
    assert_int_equal(count_samples(text, id.s), 2 + 5 * 2);
    free(text);
    tm2_switch_counters s0;
    tm2_switch_stats(tsw(w->hub), &s0);

    cli_node_stop(w->p[0]->n);
    twait_peers(w->hub, 2, 20000);
    text = get_path(w->http, "/metrics", 200);
    tm2_switch_counters s1;
    tm2_switch_stats(tsw(w->hub), &s1);
    assert_int_equal(count_samples(text, id.s), 0);
    assert_int_equal(count_samples(text, "peer_id="), 2 * (2 + 5 * 2));
    assert_int_equal(metric(text, "tm2p2p_peers{direction=\"inbound\"}"), 1);
    double gone = 0;
    for (const char *s = strstr(text, "\ntm2p2p_peers_disconnected_total{"); s;
         s = strstr(s + 1, "\ntm2p2p_peers_disconnected_total{"))
        gone += strtod(strchr(s, '}') + 2, NULL);
    assert_true(gone == (double)reasons_total(s1.peers_disconnected));
    assert_int_equal(reasons_total(s1.peers_disconnected), reasons_total(s0.peers_disconnected) + 1);
    free(text);
    cJSON *pj = get_json(w->http, "/peers");
    assert_int_equal(cJSON_GetObjectItem(pj, "n_peers")->valueint, 2);
    cJSON_Delete(pj);
}

static void http_errors(void **state)
{
    world *w = *state;
    free(get_path(w->http, "/nope", 404));
    char *idx = get_path(w->http, "/", 200);
    assert_non_null(strstr(idx, "/metrics"));
    free(idx);

    /* a taken port: the node does not start, and says why */
    cli_log lg;
    cli_log_init(&lg, TM2_LOG_ERROR, CLI_LOG_LOGFMT, "x");
    cli_node_opts o = {.listen_addr = "tcp://127.0.0.1:0", .network = "metrics-test", .moniker = "x",
                       .max_inbound = 1, .max_outbound = 1, .http_addr = w->http};
    assert_int_equal(tm2_node_key_generate(&o.key), 0);
    tm2_mconn_config_default(&o.mconn);
    cli_node *n;
    char err[512];
    assert_int_equal(cli_node_create(&o, &lg, &n, err, sizeof err), 0);
    assert_true(cli_node_start(n, err, sizeof err) < 0);
    assert_non_null(strstr(err, "cannot listen"));
    assert_null(cli_node_http_addr(n));
    cli_node_free(n);
    tm2_node_key_wipe(&o.key);

    /* stopping the node stops the endpoints first */
    cli_node_stop(w->hub->n);
    int code;
    char *body;
    size_t len;
    char url[128];
    snprintf(url, sizeof url, "http://%s/metrics", w->http);
    assert_int_equal(cli_http_get(url, 2000, &code, &body, &len, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(metrics_match_counters),
        cmocka_unit_test(status_and_peers),
        cmocka_unit_test(status_command_table),
        cmocka_unit_test(peer_series_leave),
        cmocka_unit_test(http_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
