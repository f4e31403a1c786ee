/* The TCP transport over real loopback sockets on one libuv loop: upgrades
 * both ways, every rejection rule, both deadlines, the NodeInfo size bound,
 * the pending-inbound cap, the duplicate ip:port rule, the owner's filter
 * and closing with work in flight. Every wait is on a loop event under a
 * watchdog; nothing sleeps. */
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "conn/packet.h"
#include "net/engine_uv.h"
#include "net/sc_stream_uv.h"
#include "net/transport.h"
#include "tv.h"

/* ---- the world: one loop, a watchdog ---------------------------------------------- */

typedef struct world {
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__mcs_loop ml;
    uv_timer_t watchdog;
    bool timed_out;
} world;

static void watchdog_cb(uv_timer_t *t)
{
    world *w = t->data;
    w->timed_out = true;
}

static void world_init(world *w)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    assert_int_equal(tm2__uv_engine_init(&w->ue, &w->loop), 0);
    assert_int_equal(tm2__mcs_loop_init(&w->ml, &w->ue.e), 0);
    uv_timer_init(&w->loop, &w->watchdog);
    w->watchdog.data = w;
}

/* Runs the loop until cond holds; fails the test after ms. */
#define WAIT_FOR(w, ms, cond)                                                   \
    do {                                                                        \
        (w)->timed_out = false;                                                 \
        uv_timer_start(&(w)->watchdog, watchdog_cb, (ms), 0);                   \
        while (!(cond)) {                                                       \
            if ((w)->timed_out)                                                 \
                fail_msg("timed out waiting for: %s", #cond);                   \
            uv_run(&(w)->loop, UV_RUN_ONCE);                                    \
        }                                                                       \
        uv_timer_stop(&(w)->watchdog);                                          \
    } while (0)

static void count_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        ++*(int *)arg;
}

/* Every transport, conn and peer must be closed by now: the loop then has
 * nothing left but its own helpers. */
static void world_finish(world *w)
{
    uv_close((uv_handle_t *)&w->watchdog, NULL);
    tm2__mcs_loop_close(&w->ml);
    tm2__uv_engine_close(&w->ue);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    int open = 0;
    uv_walk(&w->loop, count_walk, &open);
    assert_int_equal(open, 0);
    assert_int_equal(uv_loop_close(&w->loop), 0);
}

/* ---- NodeInfo helpers ------------------------------------------------------------- */

static const tm2_version_info versions[] = {
    {"abci", TM2_PROTOCOL_VERSION, false},
    {"app", "", false},
    {"bft", TM2_PROTOCOL_VERSION, false},
    {"blockchain", TM2_PROTOCOL_VERSION, false},
    {"p2p", TM2_PROTOCOL_VERSION, false},
};

static const uint8_t default_channels[] = {0x40, 0x50};

static void key_from_byte(tm2_node_key *k, tm2_id *id, uint8_t b)
{
    uint8_t seed[32];
    memset(seed, b, sizeof seed);
    tm2_node_key_from_seed(k, seed);
    tm2_node_key_id(k, id);
}

static void netaddr_at(tm2_netaddr *a, const tm2_id *id, const char *ip, int port)
{
    char s[160];
    snprintf(s, sizeof s, "%s@%s:%d", id->s, ip, port);
    assert_int_equal(tm2_netaddr_parse(s, 0, a), 0);
}

static void fill_ni(tm2_node_info *ni, const tm2_id *id, int port, const char *network,
                    const char *moniker, const uint8_t *ch, size_t nch)
{
    memset(ni, 0, sizeof *ni);
    ni->versions = versions;
    ni->n_versions = sizeof versions / sizeof versions[0];
    ni->has_net_address = true;
    netaddr_at(&ni->net_address, id, "127.0.0.1", port);
    ni->network = network;
    ni->version = TM2_PROTOCOL_VERSION;
    ni->channels = ch;
    ni->n_channels = nch;
    ni->moniker = moniker;
    ni->tx_index = "off";
}

/* ---- a node: a transport and its owner --------------------------------------------- */

#define MAX_CONNS 16
#define MAX_REJ   32

typedef struct node node;

#define GREET_CH 0x40

typedef struct conn_rec {
    node *n;
    tm2__transport_conn *c;     /* until closed */
    bool outbound;
    tm2_id id;
    tm2_netaddr socket_addr;
    void *dial_user;
    char moniker[64];
    char network[64];
    size_t moniker_len;
    size_t leftover_len;
    uint8_t leftover[256];      /* its first bytes */
    uint8_t rx[256];            /* messages received on GREET_CH, concatenated */
    size_t rx_len;
    int msgs;
    bool errored, closed;
    int err;
} conn_rec;

typedef struct rej_rec {
    tm2_netaddr addr;
    bool has_auth;
    tm2_id auth;
    bool outbound;
    int stage, err;
    char why[256];
    void *dial_user;
    uint64_t t_ms;
    bool has_ni;           /* the rejection carried the peer's NodeInfo */
    char ni_network[64];
    tm2_id ni_id;
} rej_rec;

typedef struct node_opts {
    const char *network;
    const char *moniker;
    const uint8_t *channels;
    size_t n_channels;
    uint32_t hs_timeout_ms, dial_timeout_ms, max_pending;
    const char *listen;         /* NULL: "127.0.0.1:0" */
    bool capture_log;           /* keep log lines (DEBUG and up) in the node */
} node_opts;

struct node {
    world *w;
    tm2__transport *t;
    tm2_node_key key;
    tm2_id id;
    char moniker[32], network[32];
    uint8_t channels[16];
    size_t n_channels;
    tm2_netaddr laddr;
    conn_rec conns[MAX_CONNS];
    int n_conns, n_conn_closed;
    rej_rec rej[MAX_REJ];
    int n_rej;
    bool closed;
    /* behaviour */
    bool greet;                 /* write "hello from <moniker>" once handed over */
    int filter_err;             /* accept_filter answer */
    const char *filter_why;
    bool filter_dup_ids;        /* reject IDs already connected */
    int filter_calls;
    bool close_in_reject, close_in_conn;
    /* captured log */
    char log[16384];
    size_t log_len;
    int log_lines;
    char rej_reason[512];          /* raw reason field of the last rejection line */
};

static void capture_log(void *user, tm2_log_level level, const char *m, const tm2_log_field *f,
                        size_t nf)
{
    node *n = user;
    (void)level;
    char msg[1024];
    tv_log_line(msg, sizeof msg, m, f, nf);
    for (size_t i = 0; i < nf; i++)
        if (!strcmp(m, "connection rejected") && !strcmp(f[i].key, "reason"))
            snprintf(n->rej_reason, sizeof n->rej_reason, "%s", f[i].value);
    /* One line per call in the capture, whatever the values hold. */
    for (char *c = msg; *c; c++)
        if (*c == '\n')
            *c = ' ';
    n->log_lines++;
    int k = snprintf(n->log + n->log_len, sizeof n->log - n->log_len, "%s\n", msg);
    if (k > 0 && (size_t)k < sizeof n->log - n->log_len)
        n->log_len += (size_t)k;
}

static int count_substr(const char *hay, const char *needle)
{
    int k = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        k++;
    return k;
}

static int own_on_receive(tm2__mcs *m, uint8_t ch, const uint8_t *d, size_t len)
{
    conn_rec *r = m->data;
    assert_int_equal(ch, GREET_CH);
    size_t room = sizeof r->rx - r->rx_len;
    if (len > room)
        len = room;
    if (len)
        memcpy(r->rx + r->rx_len, d, len);
    r->rx_len += len;
    r->msgs++;
    return 0;
}

static void own_on_error(tm2__mcs *m, int err, const char *reason)
{
    conn_rec *r = m->data;
    assert_non_null(reason);
    r->errored = true;
    r->err = err;
}

static void own_on_close(tm2__mcs *m)
{
    conn_rec *r = m->data;
    assert_ptr_equal(tm2__transport_conn_of(m), r->c);
    tm2__transport_conn_free(r->c);
    r->c = NULL;
    r->closed = true;
    r->n->n_conn_closed++;
}

static const tm2__mcs_cbs own_cbs = {
    .on_receive = own_on_receive,
    .on_error = own_on_error,
    .on_close = own_on_close,
};

static void n_on_closed(tm2__transport *t)
{
    node *n = t->data;
    n->closed = true;
    n->t = NULL;
}

static void n_on_conn(tm2__transport *t, tm2__transport_conn *c)
{
    node *n = t->data;
    assert_true(n->n_conns < MAX_CONNS);
    conn_rec *r = &n->conns[n->n_conns++];
    memset(r, 0, sizeof *r);
    r->n = n;
    r->c = c;
    r->outbound = c->outbound;
    r->id = c->id;
    r->socket_addr = c->socket_addr;
    r->dial_user = c->dial_user;
    assert_non_null(c->node_info);
    snprintf(r->moniker, sizeof r->moniker, "%s", c->node_info->moniker);
    snprintf(r->network, sizeof r->network, "%s", c->node_info->network);
    r->moniker_len = strlen(c->node_info->moniker);
    /* Handed over not started, its stream open, paused and bare, with the
     * configured callbacks. */
    tm2__sc_stream *s = tm2__mcs_stream(&c->mcs);
    assert_int_equal(c->mcs.phase, TM2__MCS_INIT);
    assert_int_equal(s->phase, TM2__SCS_OPEN);
    assert_true(s->paused);
    assert_null(s->data);
    assert_null(c->mcs.pre_cbs);
    assert_non_null(s->cbs->on_close);
    assert_null(c->mcs.data);
    assert_ptr_equal(c->mcs.cbs.on_receive, own_on_receive);
    assert_string_equal(tm2__sc_stream_remote_id(s)->s, c->id.s);
    assert_ptr_equal(tm2__transport_conn_of(&c->mcs), c);
    r->leftover_len = c->leftover_len;
    assert_true((c->leftover == NULL) == (c->leftover_len == 0));
    if (c->leftover_len)
        memcpy(r->leftover, c->leftover,
               c->leftover_len < sizeof r->leftover ? c->leftover_len : sizeof r->leftover);
    c->mcs.data = r;

    tm2_channel_desc descs[16];
    memset(descs, 0, sizeof descs);
    for (size_t i = 0; i < n->n_channels; i++) {
        descs[i].id = n->channels[i];
        descs[i].priority = 1;
    }
    tm2_mconn_config mc;
    tm2_mconn_config_default(&mc);
    mc.flush_throttle_ms = 0;
    assert_int_equal(tm2__mcs_start(&c->mcs, &mc, descs, n->n_channels, c->leftover,
                                    c->leftover_len),
                     0);
    if (n->greet) {
        char g[64];
        int k = snprintf(g, sizeof g, "hello from %s", n->moniker);
        tm2__msg *msg = tm2__msg_new(g, (size_t)k);
        assert_non_null(msg);
        assert_int_equal(tm2__mcs_try_send(&c->mcs, GREET_CH, msg), 0);
        tm2__msg_unref(msg);
    }
    if (n->close_in_conn)
        tm2__transport_close(t, n_on_closed);
}

static void n_on_reject(tm2__transport *t, const tm2__transport_reject *r)
{
    node *n = t->data;
    assert_true(n->n_rej < MAX_REJ);
    rej_rec *x = &n->rej[n->n_rej++];
    memset(x, 0, sizeof *x);
    x->addr = r->addr;
    x->has_auth = r->auth_id != NULL;
    if (r->auth_id)
        x->auth = *r->auth_id;
    x->outbound = r->outbound;
    x->stage = r->stage;
    x->err = r->err;
    assert_non_null(r->why);
    snprintf(x->why, sizeof x->why, "%s", r->why);
    x->dial_user = r->dial_user;
    x->t_ms = tv_now_ms();
    if (r->node_info) {
        assert_int_equal(r->stage, TM2__TSTAGE_CHECK);
        x->has_ni = true;
        snprintf(x->ni_network, sizeof x->ni_network, "%s", r->node_info->network);
        x->ni_id = r->node_info->net_address.id;
    }
    if (n->close_in_reject)
        tm2__transport_close(t, n_on_closed);
}

static int n_filter(tm2__transport *t, tm2__transport_conn *c, char *why, size_t why_len)
{
    node *n = t->data;
    n->filter_calls++;
    assert_non_null(c->node_info);
    if (n->filter_dup_ids) {
        for (int i = 0; i < n->n_conns; i++) {
            if (!n->conns[i].closed && strcmp(n->conns[i].id.s, c->id.s) == 0) {
                snprintf(why, why_len, "peer %s already connected", c->id.s);
                return TM2_EDUPLICATE;
            }
        }
    }
    if (n->filter_err && n->filter_why)
        snprintf(why, why_len, "%s", n->filter_why);
    return n->filter_err;
}

static const tm2__transport_cbs node_cbs = {
    .on_conn = n_on_conn,
    .on_reject = n_on_reject,
    .accept_filter = n_filter,
};

static node *node_new(world *w, uint8_t seed, const node_opts *o)
{
    node *n = calloc(1, sizeof *n);
    assert_non_null(n);
    n->w = w;
    key_from_byte(&n->key, &n->id, seed);
    snprintf(n->moniker, sizeof n->moniker, "%s", o && o->moniker ? o->moniker : "node");
    snprintf(n->network, sizeof n->network, "%s", o && o->network ? o->network : "test-chain");
    const uint8_t *ch = o && o->channels ? o->channels : default_channels;
    n->n_channels = o && o->channels ? o->n_channels : sizeof default_channels;
    memcpy(n->channels, ch, n->n_channels);

    tm2_node_info ni;
    fill_ni(&ni, &n->id, 0, n->network, n->moniker, n->channels, n->n_channels);
    tm2__tcp_transport_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.key = n->key;
    cfg.node_info = &ni;
    cfg.conn_cbs = own_cbs;
    if (o) {
        cfg.handshake_timeout_ms = o->hs_timeout_ms;
        cfg.dial_timeout_ms = o->dial_timeout_ms;
        cfg.max_pending_inbound = o->max_pending;
        if (o->capture_log) {
            cfg.log = capture_log;
            cfg.log_user = n;
            cfg.log_level = TM2_LOG_DEBUG;
        }
    }
    assert_int_equal(tm2__tcp_transport_new(&w->ml, &cfg, &node_cbs, n, &n->t), 0);
    assert_int_equal(tm2__transport_listen(n->t, o && o->listen ? o->listen : "127.0.0.1:0"), 0);
    assert_int_equal(tm2__transport_listen_addr(n->t, &n->laddr), 0);
    assert_string_equal(n->laddr.id.s, n->id.s);
    assert_int_not_equal(n->laddr.port, 0);
    /* Advertise the bound port, as a node does once it listens. */
    ni.net_address = n->laddr;
    assert_int_equal(tm2__transport_set_node_info(n->t, &ni), 0);
    return n;
}

static void node_close(node *n)
{
    for (int i = 0; i < n->n_conns; i++)
        if (n->conns[i].c)
            tm2__mcs_close(&n->conns[i].c->mcs);
    if (n->t)
        tm2__transport_close(n->t, n_on_closed);
}

static bool node_done(const node *n) { return n->closed && n->n_conn_closed == n->n_conns; }

static void nodes_finish(world *w, node **ns, size_t k)
{
    for (size_t i = 0; i < k; i++)
        node_close(ns[i]);
    for (size_t i = 0; i < k; i++)
        WAIT_FOR(w, 10000, node_done(ns[i]));
    for (size_t i = 0; i < k; i++) {
        tm2_node_key_wipe(&ns[i]->key);
        free(ns[i]);
    }
}

static tm2__transport_stats stats_of(const node *n)
{
    tm2__transport_stats st;
    tm2__transport_get_stats(n->t, &st);
    return st;
}

static const rej_rec *find_rej(const node *n, bool outbound)
{
    for (int i = 0; i < n->n_rej; i++)
        if (n->rej[i].outbound == outbound)
            return &n->rej[i];
    return NULL;
}

/* ---- a manual peer: a bare secret connection that sends what a test says ---------- */

typedef struct mpeer {
    world *w;
    tm2__sc_stream s;
    tm2_node_key key;
    tm2_id id;
    uv_connect_t creq;
    uint8_t *out;               /* written after the handshake */
    size_t out_len;
    size_t cuts[4];             /* write boundaries inside out, ascending */
    size_t n_cuts;
    uint8_t in[TM2_NODE_INFO_MAX_SIZE];
    size_t in_len;
    int src_port;
    uint32_t start_delay_ms;    /* wait this long after connecting before starting */
    uv_timer_t delay;
    bool has_delay;
    bool hs_done, errored, closed;
    int hs_err, err;
    uint64_t t_hs;
} mpeer;

static void mp_write(mpeer *m)
{
    size_t off = 0;
    for (size_t i = 0; i <= m->n_cuts; i++) {
        size_t end = i < m->n_cuts ? m->cuts[i] : m->out_len;
        if (end > off) {
            int r = tm2__sc_stream_write(&m->s, m->out + off, end - off);
            if (r)
                return;   /* the transport may already have cut us */
        }
        off = end;
    }
}

static void mp_on_handshake(tm2__sc_stream *s, int err)
{
    mpeer *m = s->data;
    m->hs_done = true;
    m->hs_err = err;
    m->t_hs = tv_now_ms();
    if (err) {
        tm2__sc_stream_close(s);
        return;
    }
    mp_write(m);
}

static void mp_on_read(tm2__sc_stream *s, const uint8_t *d, size_t len)
{
    mpeer *m = s->data;
    size_t room = sizeof m->in - m->in_len;
    if (len > room)
        len = room;
    memcpy(m->in + m->in_len, d, len);
    m->in_len += len;
}

static void mp_on_error(tm2__sc_stream *s, int err)
{
    mpeer *m = s->data;
    m->errored = true;
    m->err = err;
    tm2__sc_stream_close(s);
}

static void mp_on_close(tm2__sc_stream *s) { ((mpeer *)s->data)->closed = true; }

static const tm2__sc_stream_cbs mp_cbs = {
    .on_handshake = mp_on_handshake,
    .on_read = mp_on_read,
    .on_error = mp_on_error,
    .on_close = mp_on_close,
};

static void mp_start(uv_timer_t *t)
{
    mpeer *m = t->data;
    assert_int_equal(tm2__sc_stream_start(&m->s, &m->key, NULL), 0);
}

static void mp_connected(uv_connect_t *req, int status)
{
    mpeer *m = req->data;
    assert_int_equal(status, 0);
    if (m->start_delay_ms) {
        uv_timer_init(req->handle->loop, &m->delay);
        m->delay.data = m;
        m->has_delay = true;
        uv_timer_start(&m->delay, mp_start, m->start_delay_ms, 0);
        return;
    }
    assert_int_equal(tm2__sc_stream_start(&m->s, &m->key, NULL), 0);
}

/* src_port: -1 any (no bind), otherwise bind 127.0.0.1:src_port (0: any,
 * reported in m->src_port). */
static void mp_connect(mpeer *m, world *w, uint8_t seed, const tm2_netaddr *to, int src_port)
{
    m->w = w;
    key_from_byte(&m->key, &m->id, seed);
    tm2__sc_stream_config cfg = {.handshake_timeout_ms = 10000};
    tm2__sc_stream_init(&m->s, &w->ml.sc, &cfg, &mp_cbs);
    m->s.data = m;
    uv_tcp_t *tcp = tm2__sc_stream_uv_tcp(&m->s);
    if (src_port >= 0) {
        struct sockaddr_in a;
        uv_ip4_addr("127.0.0.1", src_port, &a);
        assert_int_equal(uv_tcp_bind(tcp, (const struct sockaddr *)&a, 0), 0);
        int len = sizeof a;
        assert_int_equal(uv_tcp_getsockname(tcp, (struct sockaddr *)&a, &len), 0);
        m->src_port = ntohs(a.sin_port);
    }
    struct sockaddr_storage ss;
    assert_int_equal(tm2_netaddr_to_sockaddr(to, (struct sockaddr *)&ss, sizeof ss), 0);
    m->creq.data = m;
    assert_int_equal(uv_tcp_connect(&m->creq, tcp, (const struct sockaddr *)&ss, mp_connected), 0);
}

/* The mpeer's NodeInfo (sized, malloc'd) claiming id, with x extra bytes
 * appended. */
static size_t mp_ni(uint8_t **out, const tm2_id *id, const char *network, const char *moniker,
                    const uint8_t *extra, size_t x)
{
    tm2_node_info ni;
    fill_ni(&ni, id, 26656, network, moniker, default_channels, sizeof default_channels);
    int n = tm2_node_info_encode(&ni, NULL, 0);
    assert_true(n > 0);
    *out = malloc((size_t)n + x);
    assert_non_null(*out);
    assert_int_equal(tm2_node_info_encode(&ni, *out, (size_t)n), n);
    if (x)
        memcpy(*out + n, extra, x);
    return (size_t)n + x;
}

/* A whole sized message is in buf. */
static bool sized_complete(const uint8_t *buf, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        v |= (uint64_t)(buf[i] & 0x7f) << (7 * i);
        if (!(buf[i] & 0x80))
            return len - (i + 1) >= v;
    }
    return false;
}

static void mp_free(mpeer *m)
{
    if (m->has_delay)
        uv_close((uv_handle_t *)&m->delay, NULL);
    free(m->out);
    tm2_node_key_wipe(&m->key);
}

/* ---- a raw TCP peer that never speaks ---------------------------------------------- */

typedef struct rawp {
    uv_tcp_t tcp;
    uv_connect_t creq;
    size_t got;
    bool connected, eof, closed;
    uint64_t t_conn, t_eof;
} rawp;

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)h;
    (void)sz;
    static char b[4096];
    *buf = uv_buf_init(b, sizeof b);
}

static void raw_closed(uv_handle_t *h) { ((rawp *)h->data)->closed = true; }

static void raw_close(rawp *r)
{
    if (!uv_is_closing((uv_handle_t *)&r->tcp))
        uv_close((uv_handle_t *)&r->tcp, raw_closed);
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    rawp *r = st->data;
    if (n > 0)
        r->got += (size_t)n;
    if (n < 0) {
        r->eof = true;
        r->t_eof = tv_now_ms();
        raw_close(r);
    }
}

static void raw_connected(uv_connect_t *req, int status)
{
    rawp *r = req->data;
    if (status < 0) {
        r->eof = true;
        raw_close(r);
        return;
    }
    r->connected = true;
    r->t_conn = tv_now_ms();
    assert_int_equal(uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read), 0);
}

static void raw_connect(rawp *r, world *w, const tm2_netaddr *to)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(uv_tcp_init(&w->loop, &r->tcp), 0);
    r->tcp.data = r;
    r->creq.data = r;
    struct sockaddr_storage ss;
    assert_int_equal(tm2_netaddr_to_sockaddr(to, (struct sockaddr *)&ss, sizeof ss), 0);
    assert_int_equal(uv_tcp_connect(&r->creq, &r->tcp, (const struct sockaddr *)&ss, raw_connected),
                     0);
}

/* ---- upgrades ------------------------------------------------------------------------ */

static void check_pair(const conn_rec *out, const conn_rec *in, const node *dialler,
                       const node *target, void *user)
{
    assert_true(out->outbound);
    assert_string_equal(out->id.s, target->id.s);
    assert_string_equal(out->moniker, target->moniker);
    assert_string_equal(out->network, target->network);
    assert_true(tm2_netaddr_equal(&out->socket_addr, &target->laddr));
    assert_ptr_equal(out->dial_user, user);

    assert_false(in->outbound);
    assert_string_equal(in->id.s, dialler->id.s);
    assert_string_equal(in->moniker, dialler->moniker);
    assert_null(in->dial_user);
    /* Inbound socket address: authenticated ID @ the remote ip:port. */
    assert_string_equal(in->socket_addr.id.s, dialler->id.s);
    assert_true(tm2_netaddr_is_loopback(&in->socket_addr));
    assert_int_not_equal(in->socket_addr.port, 0);
    assert_int_not_equal(in->socket_addr.port, dialler->laddr.port);
}

static void upgrade_both_ways(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, &(node_opts){.moniker = "node-a"});
    node *b = node_new(&w, 2, &(node_opts){.moniker = "node-b"});
    a->greet = b->greet = true;
    int tok1, tok2;

    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, &tok1), 0);
    assert_int_equal(stats_of(a).pending_outbound, 1);
    WAIT_FOR(&w, 5000, a->n_conns == 1 && b->n_conns == 1);
    check_pair(&a->conns[0], &b->conns[0], a, b, &tok1);

    assert_int_equal(tm2__transport_dial(b->t, &a->laddr, &tok2), 0);
    WAIT_FOR(&w, 5000, a->n_conns == 2 && b->n_conns == 2);
    check_pair(&b->conns[1], &a->conns[1], b, a, &tok2);

    /* The first message each owner sent arrives intact, whether its bytes
     * came as leftover with the NodeInfo or through reads after the
     * handover. */
    for (int i = 0; i < 2; i++) {
        node *n = i ? b : a, *o = i ? a : b;
        char want[64];
        int k = snprintf(want, sizeof want, "hello from %s", o->moniker);
        for (int j = 0; j < 2; j++) {
            conn_rec *r = &n->conns[j];
            WAIT_FOR(&w, 5000, r->msgs == 1);
            assert_int_equal(r->rx_len, k);
            assert_memory_equal(r->rx, want, (size_t)k);
        }
    }

    tm2__transport_stats st = stats_of(a);
    assert_int_equal(st.pending_inbound, 0);
    assert_int_equal(st.pending_outbound, 0);
    assert_int_equal(st.active, 2);
    assert_int_equal(st.upgraded, 2);
    assert_int_equal(st.accepted, 1);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(a->n_rej + b->n_rej, 0);
    assert_int_equal(a->filter_calls, 2);

    node *ns[] = {a, b};
    nodes_finish(&w, ns, 2);
    world_finish(&w);
}

static void upgrade_ipv6(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, &(node_opts){.moniker = "node-a"});
    node *b = node_new(&w, 2, &(node_opts){.moniker = "node-b", .listen = "tcp://[::1]:0"});
    assert_false(tm2_netaddr_is_ipv4(&b->laddr));
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, a->n_conns == 1 && b->n_conns == 1);
    assert_true(tm2_netaddr_equal(&a->conns[0].socket_addr, &b->laddr));
    assert_false(tm2_netaddr_is_ipv4(&b->conns[0].socket_addr));
    assert_string_equal(b->conns[0].id.s, a->id.s);
    node *ns[] = {a, b};
    nodes_finish(&w, ns, 2);
    world_finish(&w);
}

/* NodeInfo in pieces, with the first mconn bytes in the same frame as its
 * end: they come back as leftover, exactly. */
static void leftover_and_pieces(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, &(node_opts){.moniker = "node-a"});
    mpeer m;
    memset(&m, 0, sizeof m);
    key_from_byte(&m.key, &m.id, 9);
    /* Real mconn packets: the first rides with the NodeInfo, the second
     * comes after the handover. */
    uint8_t pkt1[64], pkt2[64];
    int k1 = tm2__packet_encode_msg(pkt1, sizeof pkt1, GREET_CH, 1,
                                    (const uint8_t *)"first mconn bytes", 17);
    int k2 = tm2__packet_encode_msg(pkt2, sizeof pkt2, GREET_CH, 1, (const uint8_t *)"later", 5);
    assert_true(k1 > 0 && k2 > 0);
    m.out_len = mp_ni(&m.out, &m.id, "test-chain", "manual", pkt1, (size_t)k1);
    size_t ni_len = m.out_len - (size_t)k1;
    m.cuts[0] = 1;              /* the size prefix's first byte alone */
    m.cuts[1] = 7;
    m.cuts[2] = ni_len / 2;
    m.n_cuts = 3;
    mp_connect(&m, &w, 9, &n->laddr, -1);
    WAIT_FOR(&w, 5000, n->n_conns == 1);
    conn_rec *r = &n->conns[0];
    assert_string_equal(r->id.s, m.id.s);
    assert_string_equal(r->moniker, "manual");
    assert_int_equal(r->leftover_len, k1);
    assert_memory_equal(r->leftover, pkt1, (size_t)k1);
    /* Fed to the mconn by tm2__mcs_start before anything read later. */
    WAIT_FOR(&w, 5000, r->msgs == 1);
    assert_int_equal(r->rx_len, 17);
    assert_memory_equal(r->rx, "first mconn bytes", 17);

    /* And the peer got our sized NodeInfo, whole. */
    WAIT_FOR(&w, 5000, sized_complete(m.in, m.in_len));
    tm2_node_info *theirs;
    size_t used;
    assert_int_equal(tm2_node_info_decode(m.in, m.in_len, &theirs, &used), 0);
    assert_int_equal(used, m.in_len);
    assert_string_equal(theirs->moniker, "node-a");
    assert_string_equal(theirs->net_address.id.s, n->id.s);
    assert_int_equal(theirs->net_address.port, n->laddr.port);
    tm2_node_info_free(theirs);

    /* Bytes sent after the handover arrive through the mconn's reads. */
    assert_int_equal(tm2__sc_stream_write(&m.s, pkt2, (size_t)k2), 0);
    WAIT_FOR(&w, 5000, r->msgs == 2);
    assert_int_equal(r->rx_len, 22);
    assert_memory_equal(r->rx + 17, "later", 5);

    tm2__sc_stream_close(&m.s);
    WAIT_FOR(&w, 5000, m.closed && r->closed);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&m);
    world_finish(&w);
}

/* ---- rejections ------------------------------------------------------------------------ */

static void dial_wrong_id(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, NULL);
    node *b = node_new(&w, 2, NULL);
    tm2_node_key other;
    tm2_id other_id;
    key_from_byte(&other, &other_id, 3);
    tm2_netaddr addr = b->laddr;
    addr.id = other_id;
    int tok;
    assert_int_equal(tm2__transport_dial(a->t, &addr, &tok), 0);
    WAIT_FOR(&w, 5000, a->n_rej == 1);
    const rej_rec *x = &a->rej[0];
    assert_int_equal(x->err, TM2_EIDMISMATCH);
    assert_int_equal(x->stage, TM2__TSTAGE_CHECK);
    assert_true(x->outbound);
    assert_ptr_equal(x->dial_user, &tok);
    assert_true(tm2_netaddr_equal(&x->addr, &addr));
    assert_true(x->has_auth);
    assert_string_equal(x->auth.s, b->id.s);
    assert_non_null(strstr(x->why, "dialed ID"));
    assert_non_null(strstr(x->why, other_id.s));
    assert_int_equal(a->n_conns, 0);
    assert_int_equal(stats_of(a).pending_outbound, 0);
    assert_int_equal(stats_of(a).active, 0);
    /* The address is free again: nothing stays keyed after a rejection. */
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, a->n_conns == 1);
    node *ns[] = {a, b};
    nodes_finish(&w, ns, 2);
    world_finish(&w);
}

static void incompatible_network(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, NULL);
    node *b = node_new(&w, 2, &(node_opts){.network = "other-net"});
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, a->n_rej == 1 && b->n_rej == 1);
    for (int i = 0; i < 2; i++) {
        const rej_rec *x = &(i ? b : a)->rej[0];
        assert_int_equal(x->err, TM2_EINCOMPAT);
        assert_int_equal(x->stage, TM2__TSTAGE_CHECK);
        assert_non_null(strstr(x->why, "network"));
        assert_non_null(strstr(x->why, "other-net"));
        assert_non_null(strstr(x->why, "test-chain"));
        assert_true(x->has_auth);
        assert_string_equal(x->auth.s, (i ? a : b)->id.s);
        /* The rejection carries what the peer said. */
        assert_true(x->has_ni);
        assert_string_equal(x->ni_network, i ? "test-chain" : "other-net");
        assert_string_equal(x->ni_id.s, (i ? a : b)->id.s);
    }
    assert_true(a->rej[0].outbound);
    assert_false(b->rej[0].outbound);
    assert_string_equal(b->rej[0].addr.id.s, a->id.s);
    assert_int_equal(a->n_conns + b->n_conns, 0);
    node *ns[] = {a, b};
    nodes_finish(&w, ns, 2);
    world_finish(&w);
}

static void no_common_channel(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    static const uint8_t ch_b[] = {0x99};
    node *a = node_new(&w, 1, NULL);
    node *b = node_new(&w, 2, &(node_opts){.channels = ch_b, .n_channels = 1});
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, a->n_rej == 1 && b->n_rej == 1);
    for (int i = 0; i < 2; i++) {
        const rej_rec *x = &(i ? b : a)->rej[0];
        assert_int_equal(x->err, TM2_EINCOMPAT);
        assert_non_null(strstr(x->why, "no common channel"));
    }
    node *ns[] = {a, b};
    nodes_finish(&w, ns, 2);
    world_finish(&w);
}

static void self_dial(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, NULL);
    assert_int_equal(tm2__transport_dial(a->t, &a->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, a->n_rej == 2);
    const rej_rec *o = find_rej(a, true), *i = find_rej(a, false);
    assert_non_null(o);
    assert_non_null(i);
    assert_int_equal(o->err, TM2_ESELF);
    assert_int_equal(i->err, TM2_ESELF);
    assert_int_equal(o->stage, TM2__TSTAGE_CHECK);
    assert_non_null(strstr(o->why, "ourselves"));
    assert_int_equal(a->n_conns, 0);
    assert_int_equal(a->filter_calls, 0);
    node *ns[] = {a};
    nodes_finish(&w, ns, 1);
    world_finish(&w);
}

static void silent_peer_cut_at_handshake_deadline(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, &(node_opts){.hs_timeout_ms = 300});
    rawp r;
    raw_connect(&r, &w, &n->laddr);
    WAIT_FOR(&w, 5000, n->n_rej == 1 && r.eof);
    const rej_rec *x = &n->rej[0];
    assert_int_equal(x->err, TM2_ETIMEDOUT);
    assert_int_equal(x->stage, TM2__TSTAGE_SECRET);
    assert_false(x->outbound);
    assert_false(x->has_auth);
    assert_true(r.connected);
    uint64_t took = x->t_ms - r.t_conn;
    assert_true(took >= 280);
    assert_true(took < 2000);
    /* Our key message went out; nothing else. */
    assert_int_equal(r.got, 35);
    WAIT_FOR(&w, 5000, r.closed);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    world_finish(&w);
}

static void no_nodeinfo_cut_at_second_deadline(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, &(node_opts){.hs_timeout_ms = 300});
    mpeer m;
    memset(&m, 0, sizeof m);
    /* The secret handshake takes 200 ms of its 300: a deadline shared with
     * the NodeInfo exchange would cut at 300 ms, a fresh one at 500. */
    m.start_delay_ms = 200;
    uint64_t t0 = tv_now_ms();
    mp_connect(&m, &w, 9, &n->laddr, -1);
    WAIT_FOR(&w, 5000, n->n_rej == 1 && m.closed);
    assert_true(m.hs_done);
    assert_int_equal(m.hs_err, 0);
    const rej_rec *x = &n->rej[0];
    assert_int_equal(x->err, TM2_ETIMEDOUT);
    assert_int_equal(x->stage, TM2__TSTAGE_NODEINFO);
    assert_true(x->has_auth);
    assert_string_equal(x->auth.s, m.id.s);
    assert_string_equal(x->addr.id.s, m.id.s);
    assert_true(m.t_hs - t0 >= 190);
    assert_true(x->t_ms - m.t_hs >= 250);
    assert_true(x->t_ms - m.t_hs < 2000);
    assert_true(x->t_ms - t0 >= 450);
    assert_true(m.errored);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&m);
    world_finish(&w);
}

/* A NodeInfo of exactly total bytes (prefix included) whose moniker fills it. */
static size_t big_ni(uint8_t **out, const tm2_id *id, size_t total)
{
    tm2_node_info ni;
    fill_ni(&ni, id, 26656, "test-chain", NULL, default_channels, sizeof default_channels);
    ni.tx_index = NULL;         /* moniker is then the last field */
    int n0 = tm2_node_info_encode(&ni, NULL, 0);
    assert_true(n0 > 2);
    uint8_t head[512];
    assert_int_equal(tm2_node_info_encode(&ni, head, sizeof head), n0);
    size_t p = 1;
    while (head[p - 1] & 0x80)
        p++;
    size_t body0 = (size_t)n0 - p;
    for (size_t m = total; m > 0; m--) {
        size_t mlen = m < 128 ? 1 : m < 16384 ? 2 : 3;
        size_t body = body0 + 1 + mlen + m;
        size_t blen = body < 128 ? 1 : body < 16384 ? 2 : 3;
        if (blen + body != total)
            continue;
        uint8_t *b = malloc(total);
        assert_non_null(b);
        size_t o = 0;
        b[o++] = (uint8_t)(body | 0x80);
        b[o++] = (uint8_t)(body >> 7);
        memcpy(b + o, head + p, body0);
        o += body0;
        b[o++] = 0x3a;
        b[o++] = (uint8_t)(m | 0x80);
        b[o++] = (uint8_t)(m >> 7);
        memset(b + o, 'm', m);
        o += m;
        assert_int_equal(o, total);
        *out = b;
        return total;
    }
    fail_msg("no moniker length gives %zu bytes", total);
    return 0;
}

static void nodeinfo_size_bound(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, NULL);
    mpeer ok, big;
    memset(&ok, 0, sizeof ok);
    memset(&big, 0, sizeof big);
    key_from_byte(&ok.key, &ok.id, 9);
    key_from_byte(&big.key, &big.id, 10);

    ok.out_len = big_ni(&ok.out, &ok.id, TM2_NODE_INFO_MAX_SIZE);
    mp_connect(&ok, &w, 9, &n->laddr, -1);
    WAIT_FOR(&w, 5000, n->n_conns == 1);
    assert_string_equal(n->conns[0].id.s, ok.id.s);
    assert_true(n->conns[0].moniker_len > 10000);
    assert_int_equal(n->conns[0].leftover_len, 0);

    big.out_len = big_ni(&big.out, &big.id, TM2_NODE_INFO_MAX_SIZE + 1);
    mp_connect(&big, &w, 10, &n->laddr, -1);
    WAIT_FOR(&w, 5000, n->n_rej == 1 && big.closed);
    assert_int_equal(n->rej[0].err, TM2_ETOOBIG);
    assert_int_equal(n->rej[0].stage, TM2__TSTAGE_NODEINFO);
    assert_non_null(strstr(n->rej[0].why, "10240"));
    assert_int_equal(n->n_conns, 1);

    tm2__sc_stream_close(&ok.s);
    WAIT_FOR(&w, 5000, ok.closed);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&ok);
    mp_free(&big);
    world_finish(&w);
}

/* One manual peer sending out; returns after the node rejected it. */
static const rej_rec *reject_manual(world *w, node *n, mpeer *m, uint8_t seed)
{
    int before = n->n_rej;
    mp_connect(m, w, seed, &n->laddr, -1);
    WAIT_FOR(w, 5000, n->n_rej == before + 1 && m->closed);
    assert_int_equal(n->n_conns, 0);
    return &n->rej[before];
}

static void invalid_nodeinfo_rejected(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, NULL);
    mpeer m;
    memset(&m, 0, sizeof m);
    key_from_byte(&m.key, &m.id, 9);
    m.out_len = mp_ni(&m.out, &m.id, "test-chain", "", NULL, 0);
    const rej_rec *x = reject_manual(&w, n, &m, 9);
    assert_int_equal(x->err, TM2_ENODEINFO);
    assert_int_equal(x->stage, TM2__TSTAGE_CHECK);
    assert_non_null(strstr(x->why, "moniker"));
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&m);
    world_finish(&w);
}

/* Peer-supplied text reaches the reason and the log as one raw field value
 * (the sink escapes it): it cannot add fields of its own. */
static void reason_text_is_logged_safely(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, &(node_opts){.capture_log = true});
    mpeer m;
    memset(&m, 0, sizeof m);
    key_from_byte(&m.key, &m.id, 9);
    m.out_len = mp_ni(&m.out, &m.id, "evil\"\nmsg=forged", "mallory", NULL, 0);
    const rej_rec *x = reject_manual(&w, n, &m, 9);
    assert_int_equal(x->err, TM2_EINCOMPAT);
    assert_non_null(strstr(x->why, "evil\"\nmsg=forged"));
    assert_non_null(strstr(n->log, "msg=\"connection rejected\""));
    assert_non_null(strstr(n->log, "stage=check"));
    assert_non_null(strstr(n->log, "reason=\"incompatible node info: different network"));
    assert_non_null(strstr(n->rej_reason, "evil\"\nmsg=forged"));
    assert_int_equal(count_substr(n->log, "\n"), n->log_lines);
    assert_non_null(strstr(n->log, "msg=\"listening\""));
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&m);
    world_finish(&w);
}

static void nodeinfo_id_mismatch(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, NULL);
    mpeer m;
    memset(&m, 0, sizeof m);
    tm2_node_key other;
    tm2_id other_id;
    key_from_byte(&other, &other_id, 33);
    m.out_len = mp_ni(&m.out, &other_id, "test-chain", "liar", NULL, 0);
    const rej_rec *x = reject_manual(&w, n, &m, 9);
    assert_int_equal(x->err, TM2_EIDMISMATCH);
    assert_non_null(strstr(x->why, "node info ID"));
    assert_non_null(strstr(x->why, other_id.s));
    /* The NodeInfo claims another ID than the key's, and the rejection
     * shows both. */
    assert_true(x->has_ni);
    assert_true(x->has_auth);
    assert_string_equal(x->ni_id.s, other_id.s);
    assert_string_not_equal(x->auth.s, other_id.s);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&m);
    world_finish(&w);
}

static void nodeinfo_undecodable(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, NULL);
    mpeer m;
    memset(&m, 0, sizeof m);
    /* Sized, but field 9 does not exist. */
    static const uint8_t junk[] = {0x03, 0x4a, 0x01, 0x00};
    m.out = malloc(sizeof junk);
    assert_non_null(m.out);
    memcpy(m.out, junk, sizeof junk);
    m.out_len = sizeof junk;
    const rej_rec *x = reject_manual(&w, n, &m, 9);
    assert_int_equal(x->err, TM2_EFIELD);
    assert_int_equal(x->stage, TM2__TSTAGE_NODEINFO);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&m);
    world_finish(&w);
}

static void peer_leaves_during_nodeinfo(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, NULL);
    mpeer m;
    memset(&m, 0, sizeof m);
    key_from_byte(&m.key, &m.id, 9);
    /* Half a NodeInfo, then gone: an error at once, not a deadline. */
    size_t full = mp_ni(&m.out, &m.id, "test-chain", "quitter", NULL, 0);
    m.out_len = full / 2;
    mp_connect(&m, &w, 9, &n->laddr, -1);
    WAIT_FOR(&w, 5000, m.hs_done);
    uint64_t t0 = tv_now_ms();
    tm2__sc_stream_close(&m.s);
    WAIT_FOR(&w, 5000, n->n_rej == 1 && m.closed);
    assert_true(n->rej[0].err == TM2_ECLOSED || n->rej[0].err == TM2_EIO);
    assert_int_equal(n->rej[0].stage, TM2__TSTAGE_NODEINFO);
    assert_true(n->rej[0].t_ms - t0 < 1000);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&m);
    world_finish(&w);
}

static void accept_filter_rejects(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, NULL);
    node *b = node_new(&w, 2, NULL);
    b->filter_err = TM2_ELIMIT;
    b->filter_why = "inbound limit 0 reached";
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, b->n_rej == 1 && a->n_conns == 1 && a->conns[0].closed);
    const rej_rec *x = &b->rej[0];
    assert_int_equal(x->err, TM2_ELIMIT);
    assert_int_equal(x->stage, TM2__TSTAGE_CHECK);
    assert_non_null(strstr(x->why, "inbound limit 0 reached"));
    assert_string_equal(x->auth.s, a->id.s);
    assert_int_equal(b->n_conns, 0);
    assert_int_equal(stats_of(b).active, 0);
    /* The dialler saw a verified connection, then the far end closing it. */
    assert_true(a->conns[0].errored);
    node *ns[] = {a, b};
    nodes_finish(&w, ns, 2);
    world_finish(&w);
}

static void dial_closed_port(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, NULL);
    /* A port that was just free: bind, read it, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    tm2_netaddr to;
    tm2_node_key k;
    tm2_id kid;
    key_from_byte(&k, &kid, 2);
    netaddr_at(&to, &kid, "127.0.0.1", ntohs(sa.sin_port));
    uint64_t t0 = tv_now_ms();
    assert_int_equal(tm2__transport_dial(a->t, &to, NULL), 0);
    WAIT_FOR(&w, 5000, a->n_rej == 1);
    const rej_rec *x = &a->rej[0];
    assert_true(x->err == TM2_ECONNREFUSED || x->err == TM2_EIO);
    assert_int_equal(x->stage, TM2__TSTAGE_CONNECT);
    assert_false(x->has_auth);
    assert_true(x->t_ms - t0 < 1000);   /* refused, not timed out (3 s) */
    node *ns[] = {a};
    nodes_finish(&w, ns, 1);
    world_finish(&w);
}

/* A listener with a full accept queue drops SYNs: the connect hangs until
 * the dial deadline. */
static void dial_timeout(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, &(node_opts){.dial_timeout_ms = 300});
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 0), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    tm2_netaddr to;
    tm2_node_key k;
    tm2_id kid;
    key_from_byte(&k, &kid, 2);
    netaddr_at(&to, &kid, "127.0.0.1", ntohs(sa.sin_port));
    rawp filler;
    raw_connect(&filler, &w, &to);
    WAIT_FOR(&w, 5000, filler.connected);
    uint64_t t0 = tv_now_ms();
    assert_int_equal(tm2__transport_dial(a->t, &to, NULL), 0);
    WAIT_FOR(&w, 5000, a->n_rej == 1);
    const rej_rec *x = &a->rej[0];
    assert_int_equal(x->err, TM2_ETIMEDOUT);
    assert_int_equal(x->stage, TM2__TSTAGE_CONNECT);
    assert_true(x->t_ms - t0 >= 280);
    assert_true(x->t_ms - t0 < 2000);
    raw_close(&filler);
    close(fd);
    WAIT_FOR(&w, 5000, filler.closed);
    node *ns[] = {a};
    nodes_finish(&w, ns, 1);
    world_finish(&w);
}

/* ---- the pending-inbound cap ------------------------------------------------------------ */

#define CAP 4
#define FLOOD (CAP + 10)

static size_t count_eof(const rawp *r, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += r[i].eof;
    return k;
}

static void pending_inbound_cap(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, &(node_opts){.max_pending = CAP, .hs_timeout_ms = 20000,
                                           .capture_log = true});
    rawp *r = calloc(FLOOD + 1, sizeof *r);
    assert_non_null(r);
    uint64_t t0 = tv_now_ms();
    for (size_t i = 0; i < FLOOD; i++)
        raw_connect(&r[i], &w, &n->laddr);
    /* The excess is closed at once, long before any deadline. */
    WAIT_FOR(&w, 5000, count_eof(r, FLOOD) == FLOOD - CAP);
    assert_true(tv_now_ms() - t0 < 3000);
    tm2__transport_stats st = stats_of(n);
    assert_int_equal(st.pending_inbound, CAP);
    assert_int_equal(st.accepted, CAP);
    assert_int_equal(st.dropped, FLOOD - CAP);
    assert_int_equal(n->n_rej, 0);
    /* Logged, but not once per socket. */
    assert_int_equal(count_substr(n->log, "too many handshakes in flight"), 1);
    assert_non_null(strstr(n->log, "max_pending=4"));
    /* The ones in flight got our key message; the dropped ones nothing. */
    for (size_t i = 0; i < FLOOD; i++) {
        if (!r[i].eof)
            WAIT_FOR(&w, 5000, r[i].got == 35);
        else
            assert_int_equal(r[i].got, 0);
    }

    /* A slot frees up when a handshake in flight ends. */
    size_t live = 0;
    while (r[live].eof)
        live++;
    raw_close(&r[live]);
    WAIT_FOR(&w, 5000, n->n_rej == 1);
    assert_int_equal(n->rej[0].stage, TM2__TSTAGE_SECRET);
    assert_int_equal(stats_of(n).pending_inbound, CAP - 1);
    raw_connect(&r[FLOOD], &w, &n->laddr);
    WAIT_FOR(&w, 5000, r[FLOOD].got == 35);
    st = stats_of(n);
    assert_int_equal(st.pending_inbound, CAP);
    assert_int_equal(st.accepted, CAP + 1);
    assert_int_equal(st.dropped, FLOOD - CAP);

    /* Closing aborts the rest: no rejection reported, every socket closed. */
    node_close(n);
    WAIT_FOR(&w, 5000, n->closed && count_eof(r, FLOOD + 1) == FLOOD);
    assert_int_equal(n->n_rej, 1);
    for (size_t i = 0; i <= FLOOD; i++)
        WAIT_FOR(&w, 5000, r[i].closed);
    free(r);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    world_finish(&w);
}

/* The drop path needs a handle for each excess socket; when malloc has
 * none, a spare serves one socket and the next waits for it. The listener
 * must take the waiting socket once the spare is back, or it accepts nothing
 * again. malloc is wrapped at link time (CMakeLists) so the test can refuse
 * exactly the drop path's allocation. */
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
static size_t malloc_refuse_size;
static unsigned malloc_refused;

void *__wrap_malloc(size_t n)
{
    if (malloc_refuse_size && n == malloc_refuse_size) {
        malloc_refused++;
        return NULL;
    }
    return __real_malloc(n);
}

#define OOM_FLOOD 6

static void drop_without_memory(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, &(node_opts){.max_pending = 1, .hs_timeout_ms = 20000,
                                           .capture_log = true});
    rawp *r = calloc(OOM_FLOOD + 2, sizeof *r);
    assert_non_null(r);
    raw_connect(&r[0], &w, &n->laddr);
    WAIT_FOR(&w, 5000, r[0].got == 35);

    /* Every excess socket waits in the backlog, so one accept pass meets
     * them all while the spare is taken by the first. */
    malloc_refuse_size = sizeof(tm2__sock);
    malloc_refused = 0;
    for (size_t i = 1; i <= OOM_FLOOD; i++)
        raw_connect(&r[i], &w, &n->laddr);
    WAIT_FOR(&w, 5000, count_eof(r + 1, OOM_FLOOD) == OOM_FLOOD);
    malloc_refuse_size = 0;
    assert_true(malloc_refused >= 2);
    assert_true(count_substr(n->log, "out of memory dropping an inbound connection") >= 1);
    assert_int_equal(stats_of(n).dropped, OOM_FLOOD);
    assert_int_equal(stats_of(n).pending_inbound, 1);

    /* With memory back the listener still works: a freed slot is taken. */
    raw_close(&r[0]);
    WAIT_FOR(&w, 5000, n->n_rej == 1);
    raw_connect(&r[OOM_FLOOD + 1], &w, &n->laddr);
    WAIT_FOR(&w, 5000, r[OOM_FLOOD + 1].got == 35);

    node_close(n);
    for (size_t i = 0; i < OOM_FLOOD + 2; i++)
        WAIT_FOR(&w, 5000, r[i].closed);
    free(r);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    world_finish(&w);
}

/* ---- duplicate ip:port ----------------------------------------------------------------- */

static void duplicate_dial(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, NULL);
    node *b = node_new(&w, 2, NULL);
    a->filter_dup_ids = b->filter_dup_ids = true;
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), 0);
    /* In flight. */
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), TM2_EDUPLICATE);
    WAIT_FOR(&w, 5000, a->n_conns == 1 && b->n_conns == 1);
    /* Active until removed. */
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), TM2_EDUPLICATE);
    tm2__transport_remove(a->t, &a->conns[0].socket_addr);
    assert_int_equal(stats_of(a).active, 0);
    /* Now the transport lets it through; the owner's filter (the switch's
     * duplicate-ID rule) rejects the second connection on both sides. */
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, a->n_rej == 1 && b->n_rej == 1);
    assert_int_equal(a->rej[0].err, TM2_EDUPLICATE);
    assert_non_null(strstr(a->rej[0].why, "already connected"));
    assert_int_equal(b->rej[0].err, TM2_EDUPLICATE);
    assert_int_equal(a->n_conns, 1);
    assert_int_equal(b->n_conns, 1);
    assert_false(a->conns[0].closed);
    /* Removing an address that is not active changes nothing. */
    tm2__transport_remove(b->t, &a->laddr);
    assert_int_equal(stats_of(b).active, 1);
    node *ns[] = {a, b};
    nodes_finish(&w, ns, 2);
    world_finish(&w);
}

/* Closes with a reset: no TIME_WAIT, so the source port is free at once. */
static void mp_reset(mpeer *m)
{
    uv_os_fd_t fd;
    assert_int_equal(uv_fileno((uv_handle_t *)tm2__sc_stream_uv_tcp(&m->s), &fd), 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    tm2__sc_stream_close(&m->s);
}

static void duplicate_inbound_addr(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *n = node_new(&w, 1, NULL);
    mpeer m1, m2, m3;
    memset(&m1, 0, sizeof m1);
    memset(&m2, 0, sizeof m2);
    memset(&m3, 0, sizeof m3);
    key_from_byte(&m1.key, &m1.id, 9);
    m1.out_len = mp_ni(&m1.out, &m1.id, "test-chain", "first", NULL, 0);
    mp_connect(&m1, &w, 9, &n->laddr, 0);
    WAIT_FOR(&w, 5000, n->n_conns == 1);
    int port = m1.src_port;
    assert_int_equal(n->conns[0].socket_addr.port, port);

    /* The connection goes away, but its owner has not removed it yet. */
    mp_reset(&m1);
    WAIT_FOR(&w, 5000, m1.closed && n->conns[0].closed);
    assert_int_equal(stats_of(n).active, 1);

    /* Same source ip:port again: a duplicate while still active. */
    key_from_byte(&m2.key, &m2.id, 10);
    m2.out_len = mp_ni(&m2.out, &m2.id, "test-chain", "second", NULL, 0);
    mp_connect(&m2, &w, 10, &n->laddr, port);
    WAIT_FOR(&w, 5000, n->n_rej == 1 && m2.closed);
    assert_int_equal(n->rej[0].err, TM2_EDUPLICATE);
    assert_int_equal(n->rej[0].stage, TM2__TSTAGE_ACCEPT);
    assert_int_equal(n->rej[0].addr.port, port);
    assert_true(m2.hs_err != 0 || m2.errored);

    /* Removed: the address may come back. */
    tm2__transport_remove(n->t, &n->conns[0].socket_addr);
    key_from_byte(&m3.key, &m3.id, 11);
    m3.out_len = mp_ni(&m3.out, &m3.id, "test-chain", "third", NULL, 0);
    mp_connect(&m3, &w, 11, &n->laddr, port);
    WAIT_FOR(&w, 5000, n->n_conns == 2);
    assert_int_equal(n->conns[1].socket_addr.port, port);
    assert_string_equal(n->conns[1].id.s, m3.id.s);

    tm2__sc_stream_close(&m3.s);
    WAIT_FOR(&w, 5000, m3.closed);
    node *ns[] = {n};
    nodes_finish(&w, ns, 1);
    mp_free(&m1);
    mp_free(&m2);
    mp_free(&m3);
    world_finish(&w);
}

/* ---- concurrency and closing ------------------------------------------------------------- */

typedef struct silent_listener {
    uv_tcp_t srv;
    uv_tcp_t conns[4];
    int n;
    tm2_netaddr addr;
} silent_listener;

static void silent_on_conn(uv_stream_t *s, int status)
{
    silent_listener *l = s->data;
    assert_int_equal(status, 0);
    assert_true(l->n < 4);
    uv_tcp_t *c = &l->conns[l->n++];
    uv_tcp_init(s->loop, c);
    assert_int_equal(uv_accept(s, (uv_stream_t *)c), 0);
}

static void silent_listen(silent_listener *l, world *w, const tm2_id *id)
{
    memset(l, 0, sizeof *l);
    uv_tcp_init(&w->loop, &l->srv);
    l->srv.data = l;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&l->srv, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&l->srv, 8, silent_on_conn), 0);
    int len = sizeof a;
    assert_int_equal(uv_tcp_getsockname(&l->srv, (struct sockaddr *)&a, &len), 0);
    netaddr_at(&l->addr, id, "127.0.0.1", ntohs(a.sin_port));
}

static void silent_close(silent_listener *l)
{
    uv_close((uv_handle_t *)&l->srv, NULL);
    for (int i = 0; i < l->n; i++)
        uv_close((uv_handle_t *)&l->conns[i], NULL);
}

#define PEERS 6

static void many_in_flight(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, &(node_opts){.hs_timeout_ms = 8000});
    /* Two upgrades that will hang: a silent inbound socket and a dial to a
     * listener that never speaks. */
    rawp stuck;
    raw_connect(&stuck, &w, &a->laddr);
    silent_listener sl;
    silent_listen(&sl, &w, &a->id);
    WAIT_FOR(&w, 5000, stuck.got == 35);
    assert_int_equal(tm2__transport_dial(a->t, &sl.addr, NULL), 0);
    WAIT_FOR(&w, 5000, sl.n == 1);

    node *ns[2 * PEERS + 1];
    ns[0] = a;
    uint64_t t0 = tv_now_ms();
    for (int i = 0; i < 2 * PEERS; i++) {
        ns[i + 1] = node_new(&w, (uint8_t)(10 + i), NULL);
        if (i < PEERS)
            assert_int_equal(tm2__transport_dial(a->t, &ns[i + 1]->laddr, NULL), 0);
        else
            assert_int_equal(tm2__transport_dial(ns[i + 1]->t, &a->laddr, NULL), 0);
    }
    WAIT_FOR(&w, 6000, a->n_conns == 2 * PEERS);
    assert_true(tv_now_ms() - t0 < 4000);
    int out = 0;
    for (int i = 0; i < a->n_conns; i++)
        out += a->conns[i].outbound;
    assert_int_equal(out, PEERS);
    tm2__transport_stats st = stats_of(a);
    assert_int_equal(st.pending_inbound, 1);
    assert_int_equal(st.pending_outbound, 1);
    assert_int_equal(a->n_rej, 0);

    raw_close(&stuck);
    silent_close(&sl);
    nodes_finish(&w, ns, 2 * PEERS + 1);
    world_finish(&w);
}

/* Close with every kind of work in flight: a dial still connecting, a dial
 * in the secret handshake, silent inbound sockets and an inbound peer past
 * the secret connection. No callback but on_closed; ASan checks the rest. */
static void close_with_handshakes_in_flight(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    node *a = node_new(&w, 1, NULL);
    node *b = node_new(&w, 2, NULL);
    silent_listener sl;
    silent_listen(&sl, &w, &b->id);
    rawp raw[3];
    for (int i = 0; i < 3; i++)
        raw_connect(&raw[i], &w, &a->laddr);
    assert_int_equal(tm2__transport_dial(a->t, &sl.addr, NULL), 0);
    mpeer m;
    memset(&m, 0, sizeof m);
    mp_connect(&m, &w, 9, &a->laddr, -1);   /* sends no NodeInfo */
    WAIT_FOR(&w, 5000, sl.n == 1 && m.hs_done && raw[0].got + raw[1].got + raw[2].got == 105);
    assert_int_equal(tm2__transport_dial(a->t, &b->laddr, NULL), 0);   /* still connecting */
    tm2__transport_stats st = stats_of(a);
    assert_int_equal(st.pending_inbound, 4);
    assert_int_equal(st.pending_outbound, 2);

    tm2__transport_close(a->t, n_on_closed);
    tm2__transport_close(a->t, NULL);   /* idempotent */
    WAIT_FOR(&w, 5000, a->closed && m.closed && raw[0].eof && raw[1].eof && raw[2].eof);
    assert_int_equal(a->n_rej, 0);
    assert_int_equal(a->n_conns, 0);
    for (int i = 0; i < 3; i++)
        WAIT_FOR(&w, 5000, raw[i].closed);
    silent_close(&sl);
    node *ns[] = {a, b};
    nodes_finish(&w, ns, 2);
    mp_free(&m);
    world_finish(&w);
}

/* Closing from inside the transport's own callbacks. */
static void close_inside_callbacks(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    /* In on_reject: the self-dial's two sides fail on the same turn; the
     * second is aborted by the close, not reported. */
    node *a = node_new(&w, 1, NULL);
    a->close_in_reject = true;
    assert_int_equal(tm2__transport_dial(a->t, &a->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, a->closed);
    assert_int_equal(a->n_rej, 1);
    assert_int_equal(a->rej[0].err, TM2_ESELF);

    /* In on_conn: the connection handed over stays the owner's and works. */
    node *b = node_new(&w, 2, NULL);
    node *c = node_new(&w, 3, NULL);
    c->close_in_conn = true;
    c->greet = true;
    assert_int_equal(tm2__transport_dial(b->t, &c->laddr, NULL), 0);
    WAIT_FOR(&w, 5000, c->closed && b->n_conns == 1 && b->conns[0].rx_len == 15);
    assert_memory_equal(b->conns[0].rx, "hello from node", 15);
    assert_int_equal(c->n_conns, 1);
    assert_false(c->conns[0].closed);
    node *ns[] = {a, b, c};
    nodes_finish(&w, ns, 3);
    world_finish(&w);
}

/* ---- API edges ----------------------------------------------------------------------- */

static void api_edges(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    tm2_node_key key;
    tm2_id id;
    key_from_byte(&key, &id, 1);
    tm2_node_info ni;
    fill_ni(&ni, &id, 0, "test-chain", "edges", default_channels, sizeof default_channels);
    tm2__tcp_transport_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.key = key;
    cfg.node_info = &ni;
    tm2__transport *t;
    tm2__transport_cbs no_conn = {0};
    assert_int_equal(tm2__tcp_transport_new(&w.ml, &cfg, &no_conn, NULL, &t), TM2_EINVAL);
    /* Our NodeInfo must carry our ID and be valid. */
    tm2_node_key k2;
    tm2_id id2;
    key_from_byte(&k2, &id2, 2);
    tm2_node_info bad = ni;
    netaddr_at(&bad.net_address, &id2, "127.0.0.1", 0);
    cfg.node_info = &bad;
    assert_int_equal(tm2__tcp_transport_new(&w.ml, &cfg, &node_cbs, NULL, &t), TM2_EINVAL);
    bad = ni;
    bad.moniker = "";
    assert_int_equal(tm2__tcp_transport_new(&w.ml, &cfg, &node_cbs, NULL, &t), TM2_ENODEINFO);
    cfg.node_info = &ni;
    node n;
    memset(&n, 0, sizeof n);
    assert_int_equal(tm2__tcp_transport_new(&w.ml, &cfg, &node_cbs, &n, &t), 0);
    n.t = t;

    tm2_netaddr la;
    assert_int_equal(tm2__transport_listen_addr(t, &la), TM2_ESTATE);
    assert_int_equal(tm2__transport_listen(t, "127.0.0.1"), TM2_EPORT);
    assert_int_equal(tm2__transport_listen(t, "localhost:0"), TM2_ERESOLVE);
    assert_int_equal(tm2__transport_listen(t, "tcp://127.0.0.1:0"), 0);
    assert_int_equal(tm2__transport_listen(t, "127.0.0.1:0"), TM2_ESTATE);
    assert_int_equal(tm2__transport_listen_addr(t, &la), 0);
    assert_string_equal(la.id.s, id.s);

    /* A port in use. */
    tm2__transport *t2;
    node n2;
    memset(&n2, 0, sizeof n2);
    assert_int_equal(tm2__tcp_transport_new(&w.ml, &cfg, &node_cbs, &n2, &t2), 0);
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%u", la.port);
    assert_int_equal(tm2__transport_listen(t2, busy), TM2_EIO);
    tm2__transport_close(t2, n_on_closed);

    /* Dials need an ID. */
    tm2_netaddr noid = la;
    noid.id.s[0] = '\0';
    assert_int_equal(tm2__transport_dial(t, &noid, NULL), TM2_EINVAL);
    assert_int_equal(tm2__transport_dial(t, NULL, NULL), TM2_EINVAL);
    tm2_node_info other = ni;
    netaddr_at(&other.net_address, &id2, "127.0.0.1", 1);
    assert_int_equal(tm2__transport_set_node_info(t, &other), TM2_EINVAL);

    tm2__transport_close(t, n_on_closed);
    assert_int_equal(tm2__transport_dial(t, &la, NULL), TM2_ECLOSED);
    WAIT_FOR(&w, 5000, n.closed && n2.closed);
    world_finish(&w);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(upgrade_both_ways),
        cmocka_unit_test(upgrade_ipv6),
        cmocka_unit_test(leftover_and_pieces),
        cmocka_unit_test(dial_wrong_id),
        cmocka_unit_test(incompatible_network),
        cmocka_unit_test(no_common_channel),
        cmocka_unit_test(self_dial),
        cmocka_unit_test(silent_peer_cut_at_handshake_deadline),
        cmocka_unit_test(no_nodeinfo_cut_at_second_deadline),
        cmocka_unit_test(nodeinfo_size_bound),
        cmocka_unit_test(invalid_nodeinfo_rejected),
        cmocka_unit_test(reason_text_is_logged_safely),
        cmocka_unit_test(nodeinfo_id_mismatch),
        cmocka_unit_test(nodeinfo_undecodable),
        cmocka_unit_test(peer_leaves_during_nodeinfo),
        cmocka_unit_test(accept_filter_rejects),
        cmocka_unit_test(dial_closed_port),
        cmocka_unit_test(dial_timeout),
        cmocka_unit_test(pending_inbound_cap),
        cmocka_unit_test(drop_without_memory),
        cmocka_unit_test(duplicate_dial),
        cmocka_unit_test(duplicate_inbound_addr),
        cmocka_unit_test(many_in_flight),
        cmocka_unit_test(close_with_handshakes_in_flight),
        cmocka_unit_test(close_inside_callbacks),
        cmocka_unit_test(api_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
