/* Helpers of the crawler and seed tests (header-only; each test is its own
 * program): tm2p2p nodes as in-process switches with discovery, waits on
 * their events with deadlines (never sleeps), the tm2p2p program as a child
 * process, the crawl report's JSON, and a misbehaving peer built from the
 * library's sans-I/O secret connection and packet codec. Loopback only. */
#ifndef TM2_TEST_CRAWL_SUPPORT_H
#define TM2_TEST_CRAWL_SUPPORT_H

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conn/packet.h"
#include "conn/secret_conn.h"
#include "discovery/pex_msg.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/events.h"
#include "tm2p2p/peer.h"
#include "tm2p2p/switch.h"
#include "tv.h"
#include "tvproc.h"

#define CS static __attribute__((unused))
#define CS_PROGRAM TM2_BINARY_DIR "/tm2p2p"

extern char **environ;

/* ---- temporary directories ------------------------------------------------- */

static int cs_rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

CS void cs_tmpdir(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "/tmp/tm2-%s-XXXXXX", tag);
    assert_non_null(mkdtemp(buf));
}

CS void cs_rmdir(const char *dir) { nftw(dir, cs_rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- nodes --------------------------------------------------------------------- */

typedef struct cs_node {
    int idx;
    tm2_switch *sw;
    tm2_discovery *disc;
    tm2_subscription *sub;
    tm2_id id;
    char addr[TM2_NETADDR_STRLEN + 1];   /* ID@127.0.0.1:port */
    char moniker[32];
    bool stopped;
} cs_node;

typedef struct cs_node_opts {
    const char *network;
    uint32_t max_outbound, max_inbound;
    uint32_t pex_interval_ms;
    const char *const *persistent;
    size_t n_persistent;
    const char *const *seeds;
    size_t n_seeds;
    uint32_t seed_interval_ms;
} cs_node_opts;

static void cs_log_sink(void *user, tm2_log_level lv, const char *msg, const tm2_log_field *f,
                        size_t nf)
{
    const cs_node *n = user;
    char line[1024];
    if (getenv("TM2_TEST_LOG"))
        fprintf(stderr, "[node %d] %d %s\n", n->idx, (int)lv, tv_log_line(line, sizeof line, msg, f, nf));
}

CS void cs_node_start(cs_node *n, int idx, const cs_node_opts *o)
{
    memset(n, 0, sizeof *n);
    n->idx = idx;
    snprintf(n->moniker, sizeof n->moniker, "node-%d", idx);
    tm2_discovery_config dc = {
        .interval_ms = o->pex_interval_ms,
        .target_outbound = o->max_outbound,
        .log = cs_log_sink,
        .log_user = n,
        .log_level = TM2_LOG_DEBUG,
    };
    assert_int_equal(tm2_discovery_new(&dc, &n->disc), 0);
    tm2_switch_config sc;
    tm2_switch_config_default(&sc);
    assert_int_equal(tm2_node_key_generate(&sc.key), 0);
    sc.listen_addr = "tcp://127.0.0.1:0";
    sc.network = o->network;
    sc.moniker = n->moniker;
    sc.max_outbound = o->max_outbound;
    sc.max_inbound = o->max_inbound;
    sc.allow_duplicate_ip = true;   /* every loopback peer shares 127.0.0.1 */
    sc.persistent_peers = o->persistent;
    sc.n_persistent_peers = o->n_persistent;
    sc.seeds = o->seeds;
    sc.n_seeds = o->n_seeds;
    if (o->seed_interval_ms)
        sc.seed_interval_ms = o->seed_interval_ms;
    sc.reactors = tm2_discovery_reactor(n->disc);
    sc.n_reactors = 1;
    sc.log = cs_log_sink;
    sc.log_user = n;
    sc.log_level = TM2_LOG_DEBUG;
    assert_int_equal(tm2_switch_new(&sc, &n->sw), 0);
    n->id = *tm2_switch_id(n->sw);
    assert_int_equal(tm2_switch_subscribe(n->sw, TM2_EVENT_ALL, NULL, 4096, &n->sub), 0);
    assert_int_equal(tm2_switch_start(n->sw), 0);
    tm2_netaddr la;
    assert_int_equal(tm2_switch_listen_addr(n->sw, &la), 0);
    la.id = n->id;
    assert_true(tm2_netaddr_format(&la, n->addr, sizeof n->addr) > 0);
}

CS void cs_node_stop(cs_node *n)
{
    if (n->stopped || !n->sw)
        return;
    n->stopped = true;
    tm2_switch_stop(n->sw);
}

CS void cs_node_free(cs_node *n)
{
    if (!n->sw)
        return;
    cs_node_stop(n);
    tm2_unsubscribe(n->sub);
    tm2_switch_free(n->sw);
    tm2_discovery_free(n->disc);
    n->sw = NULL;
}

/* Waits until pred(nodes, user) holds, waking on any node's events (and at
 * least every 200 ms, for conditions no event announces). Fails at the
 * deadline with what. */
CS void cs_wait(cs_node *nodes, size_t n, bool (*pred)(cs_node *, size_t, void *), void *user,
                uint64_t timeout_ms, const char *what)
{
    uint64_t deadline = tv_now_ms() + timeout_ms;
    for (;;) {
        if (pred(nodes, n, user))
            return;
        if (tv_now_ms() > deadline)
            fail_msg("timed out waiting for %s", what);
        struct pollfd pf[64];
        size_t k = 0;
        for (size_t i = 0; i < n && k < 64; i++)
            if (!nodes[i].stopped)
                pf[k++] = (struct pollfd){.fd = tm2_subscription_fd(nodes[i].sub), .events = POLLIN};
        poll(pf, k, 200);
        for (size_t i = 0; i < n; i++) {
            if (nodes[i].stopped)
                continue;
            tm2_event ev;
            while (tm2_subscription_next(nodes[i].sub, &ev, 0) == 0) {
            }
        }
    }
}

typedef struct cs_target {
    size_t min_out;
} cs_target;

CS bool cs_all_at_outbound(cs_node *nodes, size_t n, void *user)
{
    const cs_target *t = user;
    for (size_t i = 0; i < n; i++) {
        if (nodes[i].stopped)
            continue;
        size_t in = 0, out = 0, dialing = 0;
        tm2_switch_counts(nodes[i].sw, &in, &out, &dialing);
        /* A node already connected to every other one cannot dial more. */
        if ((out < t->min_out && in + out < n - 1) || dialing)
            return false;
    }
    return true;
}

/* The node's connected peers that are among nodes (IDs), as indexes. */
CS size_t cs_peer_set(cs_node *nodes, size_t n, size_t i, bool *out /* n entries */)
{
    memset(out, 0, n * sizeof *out);
    tm2_peer *ps[256];
    size_t got = tm2_switch_peers(nodes[i].sw, ps, 256);
    size_t k = 0;
    for (size_t j = 0; j < got && j < 256; j++) {
        for (size_t m = 0; m < n; m++)
            if (!strcmp(tm2_peer_id(ps[j])->s, nodes[m].id.s)) {
                out[m] = true;
                k++;
            }
        tm2_peer_unref(ps[j]);
    }
    return k;
}

/* ---- the program as a child process ------------------------------------------------ */

typedef tv_proc cs_proc;

CS void cs_start(cs_proc *p, const char *const *args) { tv_proc_start(p, CS_PROGRAM, args); }
CS void cs_pump(cs_proc *p, int timeout_ms) { tv_proc_pump(p, timeout_ms); }

/* The first stdout line (the program's listen address), waiting for it. */
CS const char *cs_first_line(cs_proc *p, uint64_t timeout_ms)
{
    return tv_proc_first_line(p, tv_now_ms() + timeout_ms);
}

/* Waits until the program's stderr holds text. */
CS void cs_wait_err(cs_proc *p, const char *text, uint64_t timeout_ms)
{
    tv_proc_wait_line(p, text, NULL, tv_now_ms() + timeout_ms);
}

CS int cs_finish(cs_proc *p, uint64_t timeout_ms) { return tv_proc_finish(p, tv_now_ms() + timeout_ms); }
CS void cs_release(cs_proc *p) { tv_proc_release(p); }

/* Runs the program to completion; fails unless it exits 0. */
CS void cs_run_ok(const char *const *args, uint64_t timeout_ms)
{
    cs_proc p;
    cs_start(&p, args);
    int st = cs_finish(&p, timeout_ms);
    if (st != 0)
        fail_msg("%s %s exited %d; its stderr:\n%s", CS_PROGRAM, args[0], st, p.err);
    cs_release(&p);
}

#define CS_RUN_OK(timeout, ...) cs_run_ok((const char *const[]){__VA_ARGS__, NULL}, timeout)

CS cJSON *cs_read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    b[len] = '\0';
    fclose(f);
    cJSON *j = cJSON_Parse(b);
    if (!j)
        fail_msg("report JSON does not parse: %.400s", b);
    free(b);
    return j;
}

/* The report's node entry of id, or NULL. */
CS cJSON *cs_report_node(cJSON *rep, const char *id)
{
    cJSON *n;
    cJSON_ArrayForEach(n, cJSON_GetObjectItem(rep, "nodes"))
    {
        cJSON *x = cJSON_GetObjectItem(n, "id");
        if (cJSON_IsString(x) && !strcmp(x->valuestring, id))
            return n;
    }
    return NULL;
}

CS const char *cs_str(cJSON *o, const char *k)
{
    cJSON *x = cJSON_GetObjectItem(o, k);
    if (!cJSON_IsString(x))
        fail_msg("report: no string '%s'", k);
    return x->valuestring;
}

CS bool cs_report_has_edge(cJSON *rep, const char *from, const char *to)
{
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(rep, "edges"))
    if (!strcmp(cs_str(e, "from"), from) && !strcmp(cs_str(e, "to"), to)) return true;
    return false;
}

/* ---- a misbehaving peer ------------------------------------------------------------- */

/* Listens on 127.0.0.1; every connection gets the secret-connection
 * handshake with key, then a NodeInfo claiming claimed_id (not the key's),
 * then at once an unsolicited discovery Response listing bait; then it waits
 * for the other side to hang up. */
typedef struct cs_liar {
    tm2_node_key key;
    tm2_id key_id;
    tm2_id claimed_id;
    char network[64];
    tm2_netaddr bait;
    int lfd;
    uint16_t port;
    int stop_pipe[2];
    pthread_t thread;
    atomic_int conns;
} cs_liar;

static int cs_listen_loopback(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static bool cs_send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool cs_seal_send(int fd, tm2__sc *sc, const uint8_t *p, size_t n)
{
    uint8_t out[8 * TM2__SC_FRAME_SIZE];
    while (n) {
        size_t used = 0;
        int w = tm2__sc_seal(sc, p, n, &used, out, sizeof out);
        if (w <= 0 || !cs_send_all(fd, out, (size_t)w))
            return false;
        p += used;
        n -= used;
    }
    return true;
}

static void cs_liar_serve(cs_liar *l, int fd)
{
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    tm2__sc sc;
    if (tm2__sc_init(&sc, &l->key, NULL) != 0)
        return;
    uint8_t buf[4096];
    bool ok = true;
    for (;;) {
        uint8_t out[2048];
        size_t n = tm2__sc_hs_output(&sc, out, sizeof out);
        if (n && !cs_send_all(fd, out, n)) {
            ok = false;
            break;
        }
        if (tm2__sc_established(&sc))
            break;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0) {
            ok = false;
            break;
        }
        size_t off = 0;
        int e = TM2_EAGAIN;
        while (off < (size_t)r) {
            size_t used = 0;
            e = tm2__sc_hs_input(&sc, buf + off, (size_t)r - off, &used);
            off += used;
            if (e != TM2_EAGAIN || !used)
                break;
        }
        if (e != 0 && e != TM2_EAGAIN) {
            ok = false;
            break;
        }
    }
    if (ok) {
        uint8_t out[2048];
        size_t n = tm2__sc_hs_output(&sc, out, sizeof out);
        if (n)
            ok = cs_send_all(fd, out, n);
    }
    if (ok) {
        /* A NodeInfo in every way valid, but for the ID. */
        static const tm2_version_info vers[5] = {{"abci", TM2_PROTOCOL_VERSION, false},
                                                 {"app", "", false},
                                                 {"bft", TM2_PROTOCOL_VERSION, false},
                                                 {"blockchain", TM2_PROTOCOL_VERSION, false},
                                                 {"p2p", TM2_PROTOCOL_VERSION, false}};
        static const uint8_t chans[1] = {0x50};
        tm2_node_info ni = {.versions = vers, .n_versions = 5, .has_net_address = true,
                            .network = l->network, .software = "", .version = TM2_PROTOCOL_VERSION,
                            .channels = chans, .n_channels = 1, .moniker = "liar",
                            .tx_index = "off", .rpc_address = ""};
        tm2_netaddr_parse("127.0.0.1:1", TM2_NETADDR_NO_ID, &ni.net_address);
        ni.net_address.port = l->port;
        ni.net_address.id = l->claimed_id;
        uint8_t nib[1024];
        int nl = tm2_node_info_encode(&ni, nib, sizeof nib);
        uint8_t resp[512], pkt[600];
        int rl = tm2__pex_encode_response(&l->bait, 1, resp, sizeof resp);
        int pl = rl > 0 ? tm2__packet_encode_msg(pkt, sizeof pkt, 0x50, 1, resp, (size_t)rl) : -1;
        uint8_t both[2048];
        if (nl > 0 && pl > 0) {
            memcpy(both, nib, (size_t)nl);
            memcpy(both + nl, pkt, (size_t)pl);
            cs_seal_send(fd, &sc, both, (size_t)nl + (size_t)pl);
        }
        /* Until the other side hangs up. */
        while (recv(fd, buf, sizeof buf, 0) > 0) {
        }
    }
    tm2__sc_close(&sc);
}

static void *cs_liar_main(void *arg)
{
    cs_liar *l = arg;
    for (;;) {
        struct pollfd pf[2] = {{.fd = l->lfd, .events = POLLIN}, {.fd = l->stop_pipe[0], .events = POLLIN}};
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            break;
        if (pf[1].revents)
            break;
        if (!(pf[0].revents & POLLIN))
            continue;
        int fd = accept4(l->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        atomic_fetch_add(&l->conns, 1);
        cs_liar_serve(l, fd);
        close(fd);
    }
    return NULL;
}

/* bait: an address the liar advertises (must never be dialled). */
CS void cs_liar_start(cs_liar *l, const char *network, const tm2_netaddr *bait)
{
    memset(l, 0, sizeof *l);
    assert_int_equal(tm2_node_key_generate(&l->key), 0);
    tm2_node_key_id(&l->key, &l->key_id);
    tm2_node_key other;
    assert_int_equal(tm2_node_key_generate(&other), 0);
    tm2_node_key_id(&other, &l->claimed_id);
    snprintf(l->network, sizeof l->network, "%s", network);
    l->bait = *bait;
    l->lfd = cs_listen_loopback(&l->port);
    assert_int_equal(pipe2(l->stop_pipe, O_CLOEXEC), 0);
    assert_int_equal(pthread_create(&l->thread, NULL, cs_liar_main, l), 0);
}

/* "<claimed ID>@127.0.0.1:port": how the liar presents itself. */
CS void cs_liar_addr(const cs_liar *l, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s@127.0.0.1:%u", l->claimed_id.s, l->port);
}

CS void cs_liar_stop(cs_liar *l)
{
    assert_int_equal(write(l->stop_pipe[1], "x", 1), 1);
    pthread_join(l->thread, NULL);
    close(l->stop_pipe[0]);
    close(l->stop_pipe[1]);
    close(l->lfd);
}

#endif
