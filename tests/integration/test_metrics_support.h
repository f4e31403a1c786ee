/* Shared helpers of the HTTP endpoint tests: nodes of the program's runtime
 * (cli_node, in this process) on loopback, GETs over real sockets, readers of
 * the exposition text, and waits with deadlines (never sleeps).
 * Header-only: each test is its own program. */
#ifndef TM2_TEST_METRICS_SUPPORT_H
#define TM2_TEST_METRICS_SUPPORT_H

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/gossip.h"
#include "cli/http.h"
#include "tm2p2p/peer.h"
#include "tv.h"

#define MSH static __attribute__((unused))

typedef struct tnode_opts {
    const char *moniker;
    const char *network;            /* NULL: metrics-test */
    const char *http;               /* NULL: no endpoints */
    const char *const *persistent;  /* "ID@ip:port" */
    size_t n_persistent;
    const tm2_id *priv;
    size_t n_priv;
    uint32_t gossip_ms;             /* 0: no gossip */
    uint32_t max_inbound;           /* 0: 40 */
} tnode_opts;

typedef struct tnode {
    cli_node *n;
    cli_log log;
    char listen[TM2_NETADDR_STRLEN];
    tm2_netaddr addr;
} tnode;

/* A started node: pex (channel 0x50, a long interval so it stays quiet) and
 * optional gossip (0x70); every peer may come from 127.0.0.1. */
MSH tnode *tnode_new(const tnode_opts *to)
{
    tnode *t = calloc(1, sizeof *t);
    assert_non_null(t);
    cli_log_init(&t->log, getenv("TM2_TEST_LOG") ? TM2_LOG_DEBUG : TM2_LOG_ERROR, CLI_LOG_LOGFMT, to->moniker);
    cli_node_opts o = {
        .listen_addr = "tcp://127.0.0.1:0",
        .network = to->network ? to->network : "metrics-test",
        .moniker = to->moniker,
        .max_inbound = to->max_inbound ? to->max_inbound : 40,
        .max_outbound = 10,
        .persistent = to->persistent,
        .n_persistent = to->n_persistent,
        .allow_duplicate_ip = true,
        .private_ids = to->priv,
        .n_private = to->n_priv,
        .redial_base_ms = 100,
        .redial_max_ms = 1000,
        .pex = true,
        .pex_interval_ms = 600000,
        .gossip_interval_ms = to->gossip_ms,
        .gossip_epoch_ms = cli_mono_ms(),
        .gossip_seconds = 60,
        .http_addr = to->http,
        .log_events = true,   /* its descriptor wakes the waits */
    };
    assert_int_equal(tm2_node_key_generate(&o.key), 0);
    tm2_mconn_config_default(&o.mconn);
    o.mconn.flush_throttle_ms = 5;
    char err[512];
    if (cli_node_create(&o, &t->log, &t->n, err, sizeof err) < 0 || cli_node_start(t->n, err, sizeof err) < 0)
        fail_msg("node %s: %s", to->moniker, err);
    tm2_node_key_wipe(&o.key);
    cli_node_listen_addr(t->n, t->listen, sizeof t->listen);
    assert_int_equal(tm2_netaddr_parse(t->listen, 0, &t->addr), 0);
    return t;
}

MSH void tnode_free(tnode *t)
{
    if (!t)
        return;
    cli_node_free(t->n);
    free(t);
}

MSH tm2_switch *tsw(tnode *t) { return cli_node_switch(t->n); }

MSH size_t tpeers(tnode *t)
{
    size_t in = 0, out = 0;
    tm2_switch_counts(tsw(t), &in, &out, NULL);
    return in + out;
}

/* Sleeps nothing: waits on the node's event descriptor (any peer change)
 * for at most 20 ms at a time until pred holds. */
typedef bool (*tpred)(void *arg);

MSH bool twait(tnode *t, uint32_t ms, tpred pred, void *arg)
{
    uint64_t deadline = tv_now_ms() + ms;
    for (;;) {
        if (pred(arg))
            return true;
        uint64_t now = tv_now_ms();
        if (now >= deadline)
            return false;
        struct pollfd pf = {.fd = t ? cli_node_event_fd(t->n) : -1, .events = POLLIN};
        (void)poll(&pf, 1, deadline - now < 20 ? (int)(deadline - now) : 20);
        if (t)
            cli_node_drain_events(t->n);
    }
}

typedef struct peers_want {
    tnode *t;
    size_t n;
} peers_want;

MSH bool pred_peers(void *arg)
{
    peers_want *w = arg;
    return tpeers(w->t) == w->n;
}

MSH void twait_peers(tnode *t, size_t n, uint32_t ms)
{
    peers_want w = {t, n};
    if (!twait(t, ms, pred_peers, &w))
        fail_msg("%zu peers, want %zu", tpeers(t), n);
}

/* ---- HTTP ------------------------------------------------------------------------ */

/* GETs url; fails the test unless the answer is want_code. Body malloc'd. */
MSH char *get(const char *url, int want_code)
{
    int code;
    char *body, err[512];
    size_t len;
    if (cli_http_get(url, 10000, &code, &body, &len, err, sizeof err))
        fail_msg("GET %s: %s", url, err);
    if (code != want_code)
        fail_msg("GET %s: HTTP %d, want %d: %s", url, code, want_code, body);
    assert_int_equal(strlen(body), len);
    return body;
}

MSH char *get_path(const char *hostport, const char *path, int want_code)
{
    char url[512];
    snprintf(url, sizeof url, "http://%s%s", hostport, path);
    return get(url, want_code);
}

/* ---- the exposition ------------------------------------------------------------ */

/* The sample line "<series> value": series written as the writer does
 * ("tm2p2p_peers{direction=\"inbound\"}"). Returns NULL when absent. */
MSH const char *find_series(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *s = text; s && *s; s = strchr(s, '\n'), s = s ? s + 1 : NULL)
        if (!strncmp(s, series, n) && s[n] == ' ')
            return s + n + 1;
    return NULL;
}

MSH double metric(const char *text, const char *series)
{
    const char *v = find_series(text, series);
    if (!v)
        fail_msg("no series %s in:\n%.4000s", series, text);
    return strtod(v, NULL);
}

/* Sample lines (not comments) holding frag; all of them with frag "". */
MSH size_t count_samples(const char *text, const char *frag)
{
    size_t c = 0;
    for (const char *s = text; s && *s; s = strchr(s, '\n'), s = s ? s + 1 : NULL) {
        if (*s == '#')
            continue;
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        const char *hit = frag[0] ? strstr(s, frag) : s;
        c += hit && hit < s + n;
    }
    return c;
}

#endif
