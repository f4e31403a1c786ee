/* Shared pieces of the attack tests (tests/attack/README.md says what each
 * test proves).
 *
 * The arena: a node under attack (a real switch with peer exchange and a
 * relay reactor, listening on 127.0.0.1) that serves four honest peers (real
 * switches; three the node dials as persistent peers, one that dials it),
 * which exchange messages through it all the time: every honest peer sends
 * one small message every TRAFFIC_PERIOD_MS on CH_A, the node relays each to
 * every peer, and each honest peer counts what it receives from the others.
 * A monitor on the traffic thread records, per honest peer, the longest time
 * without a message from another honest peer, and the process's peak RSS.
 *
 * The attacker: `evil`, a misbehaving peer built from the internal codecs
 * over a plain non-blocking socket bound to a chosen 127.a.b.c source
 * address: it runs as much of the real protocol (secret connection,
 * NodeInfo, packets, discovery messages) as an attack needs and then does
 * what the attack is. Every wait is poll() with a deadline.
 *
 * Header-only: each test_attack_*.c is its own program. */
#ifndef TM2_ATTACK_SUPPORT_H
#define TM2_ATTACK_SUPPORT_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "conn/packet.h"
#include "conn/secret_conn.h"
#include "discovery/pex_msg.h"
#include "test_switch_support.h"
#include "tm2p2p/defaults.h"
#include "tm2p2p/discovery.h"

#define ASH static __attribute__((unused))

/* Under AddressSanitizer, freed memory waits in a quarantine (256 MiB by
 * default) before it is reused, so a process that allocates and frees a
 * lot grows by up to that much whatever it keeps: the RSS bounds below
 * would measure the quarantine. 8 MiB keeps use-after-free detection for
 * recent frees and makes RSS track what is really held. */
const char *__asan_default_options(void);
__attribute__((used)) const char *__asan_default_options(void)
{
    return "quarantine_size_mb=8";
}

#define ATTACK_NETWORK "attack-net"
#define N_HONEST 4
#define TRAFFIC_PERIOD_MS 10
#define RELAY_RECV_CAP (64u << 10)   /* CH_A's receive capacity on the node */

/* An honest peer normally hears from the others every few milliseconds;
 * this is the longest silence allowed during an attack (a node whose
 * network thread is kept busy by an attacker starves its peers far longer;
 * a loaded 2-core machine with sanitizers stays well under it). */
#define STALL_MAX_MS 2000

/* How much the process's resident memory may grow during one attack, over
 * its level when the arena was settled. The process holds the node, the
 * four honest peers and the attacker, so the bound covers the node's
 * legitimate worst case plus slack: one peer may make the node hold up to
 * its whole receive budget (max_recv_buffer_bytes, 20 MiB) of partial
 * messages; a few MiB are sanitizer bookkeeping (the 8 MiB quarantine set
 * above, redzones, per-thread caches). Anything unbounded — a buffer
 * sized by a length an attacker chose, state kept per connection of a
 * flood, addresses kept per rejected message — goes far past it. */
#define RSS_GROWTH_MAX (40u << 20)

/* ---- small utilities ------------------------------------------------------------ */

/* Resident bytes of pid (0: this process). */
ASH size_t rss_bytes(pid_t pid)
{
    char path[64];
    if (pid)
        snprintf(path, sizeof path, "/proc/%ld/statm", (long)pid);
    else
        snprintf(path, sizeof path, "/proc/self/statm");
    FILE *f = fopen(path, "r");
    unsigned long size = 0, res = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* Raises the soft descriptor limit to the hard one; fails the test if that
 * is below need. */
ASH void raise_nofile(rlim_t need)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    if (rl.rlim_cur < need)
        fail_msg("RLIMIT_NOFILE is %lu, the test needs %lu", (unsigned long)rl.rlim_cur,
                 (unsigned long)need);
}

ASH bool env_on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

/* The sum of the by-reason or by-stage counters. */
ASH uint64_t sum_u64(const uint64_t *a, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i];
    return s;
}

ASH uint64_t by_reason(const uint64_t *a, int err) { return a[-err]; }

/* Reads events from s until n came or timeout_ms passed; returns how many. */
ASH size_t wait_events(tm2_subscription *s, size_t n, int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    size_t k = 0;
    tm2_event ev;
    while (k < n) {
        uint64_t now = tv_now_ms();
        if (now >= deadline || tm2_subscription_next(s, &ev, (int)(deadline - now)) != 0)
            break;
        k++;
    }
    return k;
}

/* ---- the node under attack ------------------------------------------------------- */

#define TARGET_LOG_CAP (2u << 20)

typedef struct target_opts {
    uint32_t handshake_ms;         /* 0: 3000 */
    bool allow_dup_ip;             /* false: the reference's default */
    uint32_t pex_interval_ms;      /* 0: 200 */
    size_t addrbook_max;           /* 0: 1000 */
    const char *book_path;         /* NULL: in memory */
    uint32_t max_inbound, max_outbound;   /* 0: 40, 10 */
    const char *const *persistent; /* "ID@ip:port" */
    size_t n_persistent;
    /* Arena: every honest peer dials the node (from 127.0.0.1, so duplicate
     * IPs are allowed) and the node dials none: its outbound slots are
     * free for the test. */
    bool honest_inbound;
    uint32_t assembly_ms;          /* recv_assembly_timeout_ms; 0: 30000 */
    /* Group 127.x.y.z addresses by /16 like public ones (the switch's
     * limit_local_addrs and the book's): the group-bound attacks. */
    bool group_loopback;
} target_opts;

typedef struct target {
    tm2_switch *sw;
    tm2_discovery *disc;
    tm2_node_key key;
    tm2_netaddr addr;
    tm2_channel_desc chan;
    tm2_reactor reactors[2];
    size_t max_addrbook;
    const char *book_path;         /* as configured (NULL: in memory) */
    atomic_ullong relayed;

    /* Log lines at INFO and above, and the switch's "peer disconnected"
     * lines (DEBUG: the event is the record, the line says why too). */
    pthread_mutex_t log_mu;
    char *log;
    size_t log_len;
} target;

ASH void target_log(void *user, tm2_log_level level, const char *msg, const tm2_log_field *f,
                    size_t nf)
{
    target *t = user;
    if (level > TM2_LOG_INFO && strcmp(msg, "peer disconnected") != 0)
        return;
    char line[1024];
    tv_log_line(line, sizeof line, msg, f, nf);
    if (getenv("TM2_TEST_LOG"))
        fprintf(stderr, "[target] %s\n", line);
    pthread_mutex_lock(&t->log_mu);
    size_t k = strlen(line);
    if (t->log_len + k + 2 < TARGET_LOG_CAP) {
        memcpy(t->log + t->log_len, line, k);
        t->log[t->log_len + k] = '\n';
        t->log_len += k + 1;
        t->log[t->log_len] = '\0';
    }
    pthread_mutex_unlock(&t->log_mu);
}

/* A captured line holding every one of the (NULL-terminated) substrings. */
ASH bool target_logged(target *t, const char *a, const char *b, const char *c)
{
    bool found = false;
    pthread_mutex_lock(&t->log_mu);
    for (char *line = t->log; line && *line && !found;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        found = strstr(line, a) && (!b || strstr(line, b)) && (!c || strstr(line, c));
        if (nl)
            *nl = '\n';
        line = nl ? nl + 1 : NULL;
    }
    pthread_mutex_unlock(&t->log_mu);
    return found;
}

/* The relay: every message on CH_A goes to every peer that has CH_A. */
ASH void relay_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)p;
    target *t = user;
    atomic_fetch_add(&t->relayed, 1);
    (void)tm2_switch_broadcast(t->sw, ch, msg, len);
}

ASH void target_start(target *t, const target_opts *o)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->log_mu, NULL);
    /* Touched now, so the capture is part of the baseline, not growth. */
    t->log = calloc(1, TARGET_LOG_CAP);
    assert_non_null(t->log);
    memset(t->log, 0, TARGET_LOG_CAP);
    atomic_init(&t->relayed, 0);
    uint8_t seed[32];
    memset(seed, 0xa0, sizeof seed);
    tm2_node_key_from_seed(&t->key, seed);

    tm2_discovery_config dc = {
        .interval_ms = o->pex_interval_ms ? o->pex_interval_ms : 200,
        .addrbook_path = o->book_path,
        .addrbook_max = o->addrbook_max,
        .target_outbound = o->max_outbound ? o->max_outbound : 10,
        .log = target_log,
        .log_user = t,
        .log_level = TM2_LOG_DEBUG,
        .limit_local_addrs = o->group_loopback,
    };
    t->max_addrbook = o->addrbook_max ? o->addrbook_max : 1000;
    t->book_path = o->book_path;
    assert_int_equal(tm2_discovery_new(&dc, &t->disc), 0);

    t->chan = (tm2_channel_desc){.id = CH_A, .priority = 5, .send_queue_capacity = 256,
                                 .recv_message_capacity = RELAY_RECV_CAP};
    t->reactors[0] = (tm2_reactor){.name = "relay", .channels = &t->chan, .n_channels = 1,
                                   .user = t, .receive = relay_receive};
    t->reactors[1] = *tm2_discovery_reactor(t->disc);

    tm2_switch_config c;
    tm2_switch_config_default(&c);
    c.key = t->key;
    c.listen_addr = "tcp://127.0.0.1:0";
    c.network = ATTACK_NETWORK;
    c.moniker = "target";
    c.handshake_timeout_ms = o->handshake_ms ? o->handshake_ms : 3000;
    c.dial_timeout_ms = 2000;
    c.allow_duplicate_ip = o->allow_dup_ip;
    if (o->max_inbound)
        c.max_inbound = o->max_inbound;
    if (o->max_outbound)
        c.max_outbound = o->max_outbound;
    c.persistent_peers = o->persistent;
    c.n_persistent_peers = o->n_persistent;
    c.redial_base_ms = 200;
    c.redial_max_ms = 1000;
    tm2_mconn_config_default(&c.mconn);
    c.mconn.flush_throttle_ms = 5;
    if (o->assembly_ms)
        c.mconn.recv_assembly_timeout_ms = o->assembly_ms;
    c.limit_local_addrs = o->group_loopback;
    c.reactors = t->reactors;
    c.n_reactors = 2;
    c.log = target_log;
    c.log_user = t;
    c.log_level = TM2_LOG_DEBUG;
    assert_int_equal(tm2_switch_new(&c, &t->sw), 0);
    assert_int_equal(tm2_switch_start(t->sw), 0);
    assert_int_equal(tm2_switch_listen_addr(t->sw, &t->addr), 0);
}

ASH void target_free(target *t)
{
    if (t->sw) {
        tm2_switch_stop(t->sw);
        tm2_switch_free(t->sw);
    }
    tm2_discovery_free(t->disc);
    tm2_node_key_wipe(&t->key);
    free(t->log);
    pthread_mutex_destroy(&t->log_mu);
    memset(t, 0, sizeof *t);
}

ASH tm2_switch_counters *target_stats(target *t)
{
    tm2_switch_counters *c = calloc(1, sizeof *c);
    assert_non_null(c);
    assert_int_equal(tm2_switch_stats(t->sw, c), 0);
    return c;
}

ASH tm2_discovery_stats target_pex(target *t)
{
    tm2_discovery_stats s;
    tm2_discovery_get_stats(t->disc, &s);
    return s;
}

/* Connected peers of the target whose ID is id (NULL: any) and whose
 * socket IP is ip (NULL: any). */
ASH size_t target_count_peers(target *t, const tm2_id *id, const char *ip)
{
    tm2_peer *ps[256];
    size_t n = tm2_switch_peers(t->sw, ps, 256), k = 0;
    uint8_t want[16] = {0};
    if (ip) {
        want[10] = want[11] = 0xff;
        assert_int_equal(inet_pton(AF_INET, ip, want + 12), 1);
    }
    for (size_t i = 0; i < n && i < 256; i++) {
        tm2_netaddr a;
        tm2_peer_socket_addr(ps[i], &a);
        if ((!id || strcmp(tm2_peer_id(ps[i])->s, id->s) == 0) &&
            (!ip || memcmp(a.ip, want, 16) == 0))
            k++;
        tm2_peer_unref(ps[i]);
    }
    return k;
}

/* A referenced peer of the target with ID id, or NULL. */
ASH tm2_peer *target_peer(target *t, const tm2_id *id)
{
    tm2_peer *ps[256], *found = NULL;
    size_t n = tm2_switch_peers(t->sw, ps, 256);
    for (size_t i = 0; i < n && i < 256; i++) {
        if (!found && strcmp(tm2_peer_id(ps[i])->s, id->s) == 0)
            found = ps[i];
        else
            tm2_peer_unref(ps[i]);
    }
    return found;
}

/* ---- the arena: the target and four honest peers exchanging messages ------------- */

typedef struct arena {
    target t;
    node *h[N_HONEST];
    tm2_id honest_id[N_HONEST];
    pthread_t thr;
    bool thr_running;
    atomic_bool stop;

    /* The monitor, written by the traffic thread. */
    pthread_mutex_t mu;
    uint64_t last_val[N_HONEST];     /* messages from the other honest peers */
    uint64_t last_change[N_HONEST];  /* when last_val last grew */
    uint64_t max_gap[N_HONEST];      /* longest silence since arena_begin */
    uint64_t begin_val[N_HONEST];
    size_t rss_base, rss_peak;
    uint64_t t_begin;
    bool measuring;
} arena;

/* Messages honest peer n received from the other honest peers. */
ASH uint64_t from_others(node *n)
{
    uint64_t s = 0;
    uv_mutex_lock(&n->mu);
    for (int o = 0; o < N_HONEST; o++)
        if (o != n->idx)
            for (int q = 0; q < MAX_SEQ; q++)
                s += n->counts[o][q];
    uv_mutex_unlock(&n->mu);
    return s;
}

ASH void arena_sample(arena *a)
{
    size_t rss = rss_bytes(0);
    pthread_mutex_lock(&a->mu);
    /* Read under the lock: arena_begin may have stamped last_change after
     * a reading taken before it, and the gap would wrap. */
    uint64_t now = tv_now_ms();
    for (int i = 0; i < N_HONEST; i++) {
        uint64_t v = from_others(a->h[i]);
        if (v != a->last_val[i]) {
            a->last_val[i] = v;
            a->last_change[i] = now;
        } else if (a->measuring && now - a->last_change[i] > a->max_gap[i]) {
            a->max_gap[i] = now - a->last_change[i];
        }
    }
    if (a->measuring && rss > a->rss_peak)
        a->rss_peak = rss;
    pthread_mutex_unlock(&a->mu);
}

ASH void *traffic_main(void *arg)
{
    arena *a = arg;
    unsigned seq = 0;
    while (!atomic_load(&a->stop)) {
        for (int i = 0; i < N_HONEST; i++) {
            uint8_t msg[64];
            memset(msg, 0xab, sizeof msg);
            msg[0] = (uint8_t)i;
            msg[1] = (uint8_t)(seq % MAX_SEQ);
            msg[2] = 0;
            (void)tm2_switch_broadcast(a->h[i]->sw, CH_A, msg, sizeof msg);
        }
        seq++;
        arena_sample(a);
        (void)poll(NULL, 0, TRAFFIC_PERIOD_MS);   /* pacing, not waiting for a condition */
    }
    return NULL;
}

ASH size_t honest_connected(arena *a)
{
    size_t k = 0;
    for (int i = 0; i < N_HONEST; i++)
        k += target_count_peers(&a->t, &a->honest_id[i], NULL) == 1;
    return k;
}

/* Sets up the node (with extra options o, NULL for the defaults) and the
 * honest peers, waits until they are all connected and messages flow,
 * and records the baseline RSS. */
ASH void arena_start(arena *a, const target_opts *o)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    atomic_init(&a->stop, false);
    /* Honest peers 1..3 listen on addresses of their own; the node dials
     * them as persistent peers. Honest peer 0 dials the node from
     * 127.0.0.1, so the node has peers in both directions. */
    target_opts to = o ? *o : (target_opts){0};
    bool all_in = to.honest_inbound;
    char listen[N_HONEST][48];
    char spec[N_HONEST][TM2_NETADDR_STRLEN + 1];
    const char *pp[N_HONEST];
    for (int i = 1; i < N_HONEST && !all_in; i++) {
        snprintf(listen[i], sizeof listen[i], "tcp://127.77.0.%d:0", i);
        node_opts no = {.listen = listen[i], .network = ATTACK_NETWORK, .only_ch_a = true};
        a->h[i] = node_new(i, &no);
        assert_true(tm2_netaddr_format(&a->h[i]->addr, spec[i], sizeof spec[i]) > 0);
        pp[i - 1] = spec[i];
    }
    if (all_in) {
        to.allow_dup_ip = true;
    } else {
        to.persistent = pp;
        to.n_persistent = N_HONEST - 1;
    }
    target_start(&a->t, &to);
    for (int i = 0; i < (all_in ? N_HONEST : 1); i++) {
        node_opts ni = {.network = ATTACK_NETWORK, .only_ch_a = true, .persistent = &a->t.addr,
                        .n_persistent = 1};
        a->h[i] = node_new(i, &ni);
    }
    for (int i = 0; i < N_HONEST; i++) {
        a->honest_id[i] = a->h[i]->addr.id;
        wait_peers(a->h[i], 1, 15000);
    }
    uint64_t end = tv_now_ms() + 15000;
    while (honest_connected(a) < N_HONEST) {
        if (tv_now_ms() > end)
            fail_msg("the node holds %zu of the %d honest peers", honest_connected(a), N_HONEST);
        /* Look again when honest peer 0 sees anything, at the latest in 50 ms. */
        (void)wait_node(a->h[0], 50, pred_never, NULL);
    }
    assert_int_equal(pthread_create(&a->thr, NULL, traffic_main, a), 0);
    a->thr_running = true;
    /* Settled: every honest peer has heard plenty from the others. */
    for (int i = 0; i < N_HONEST; i++)
        wait_total(a->h[i], 300, 15000);
    a->rss_base = rss_bytes(0);
}

/* The attack starts: the monitor's window opens. */
ASH void arena_begin(arena *a)
{
    pthread_mutex_lock(&a->mu);
    uint64_t now = tv_now_ms();
    for (int i = 0; i < N_HONEST; i++) {
        a->begin_val[i] = a->last_val[i];
        a->last_change[i] = now;
        a->max_gap[i] = 0;
    }
    a->rss_peak = rss_bytes(0);
    a->t_begin = now;
    a->measuring = true;
    pthread_mutex_unlock(&a->mu);
}

/* The attack is over: every honest peer kept receiving from the others
 * (no silence over STALL_MAX_MS) and is still connected to the node, and
 * RSS stayed within RSS_GROWTH_MAX of the baseline. */
ASH void arena_end(arena *a, const char *what)
{
    arena_sample(a);
    pthread_mutex_lock(&a->mu);
    a->measuring = false;
    uint64_t got[N_HONEST], gap = 0;
    for (int i = 0; i < N_HONEST; i++) {
        got[i] = a->last_val[i] - a->begin_val[i];
        if (a->max_gap[i] > gap)
            gap = a->max_gap[i];
    }
    size_t base = a->rss_base, peak = a->rss_peak;
    uint64_t dur = tv_now_ms() - a->t_begin;
    pthread_mutex_unlock(&a->mu);
    uint64_t lo = got[0];
    for (int i = 1; i < N_HONEST; i++)
        lo = got[i] < lo ? got[i] : lo;
    long growth_kib = ((long)peak - (long)base) / 1024;
    fprintf(stderr,
            "attack %s: %llu ms; honest peers got >= %llu messages from each other each, "
            "longest silence %llu ms; RSS %zu MiB at start, peak %+ld KiB\n",
            what, (unsigned long long)dur, (unsigned long long)lo, (unsigned long long)gap,
            base >> 20, growth_kib);
    for (int i = 0; i < N_HONEST; i++) {
        if (got[i] == 0)
            fail_msg("%s: honest peer %d received nothing during the attack", what, i);
        if (target_count_peers(&a->t, &a->honest_id[i], NULL) != 1)
            fail_msg("%s: honest peer %d is no longer connected to the node", what, i);
    }
    if (gap > STALL_MAX_MS)
        fail_msg("%s: an honest peer heard nothing for %llu ms (bound %d ms)", what,
                 (unsigned long long)gap, STALL_MAX_MS);
    if (peak > base && peak - base > RSS_GROWTH_MAX)
        fail_msg("%s: RSS grew by %zu KiB (bound %u KiB)", what, (peak - base) >> 10,
                 RSS_GROWTH_MAX >> 10);
}

ASH void arena_stop(arena *a)
{
    atomic_store(&a->stop, true);
    if (a->thr_running)
        pthread_join(a->thr, NULL);
    a->thr_running = false;
    /* The node first: honest peers then see a clean close, not a redial. */
    target_free(&a->t);
    for (int i = 0; i < N_HONEST; i++)
        node_free(a->h[i]);
    pthread_mutex_destroy(&a->mu);
}

/* ---- the attacker: a misbehaving peer over a plain socket ----------------------- */

#define EV_PLAIN_CAP (16u << 10)
#define EV_RX_CAP (8u * TM2__SC_FRAME_SIZE)

typedef struct evil {
    int fd;
    tm2_node_key key;
    tm2_id id;
    tm2__sc sc;
    bool sc_init, sc_up;
    bool closed;                   /* the node ended the connection */
    uint64_t t_open, t_closed;
    tm2_subscription *sub;         /* the target's events for our ID, when asked */
    size_t rx_len, plain_len;
    uint8_t rx[EV_RX_CAP];         /* wire bytes not yet opened */
    uint8_t plain[EV_PLAIN_CAP];   /* opened plaintext not yet consumed */
} evil;

/* A deterministic key per number (distinct from the honest peers' and the
 * node's). */
ASH void evil_key(tm2_node_key *k, uint32_t n)
{
    uint8_t seed[32];
    memset(seed, 0, sizeof seed);
    seed[0] = 0xe7;
    seed[1] = (uint8_t)n;
    seed[2] = (uint8_t)(n >> 8);
    seed[3] = (uint8_t)(n >> 16);
    tm2_node_key_from_seed(k, seed);
}

ASH tm2_id evil_id(uint32_t n)
{
    tm2_node_key k;
    tm2_id id;
    evil_key(&k, n);
    tm2_node_key_id(&k, &id);
    tm2_node_key_wipe(&k);
    return id;
}

/* A non-blocking TCP socket bound to src (an IPv4 literal; NULL: none),
 * its connect to `to` started. Returns the descriptor or -errno. */
ASH int sock_connect_from(const char *src, const tm2_netaddr *to)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (src) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, src, &sa.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            int e = errno ? errno : EINVAL;
            close(fd);
            return -e;
        }
    }
    struct sockaddr_storage ss;
    if (tm2_netaddr_to_sockaddr(to, (struct sockaddr *)&ss, sizeof ss) != 0) {
        close(fd);
        return -EINVAL;
    }
    if (connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) != 0 &&
        errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

ASH int ms_left(uint64_t deadline)
{
    uint64_t now = tv_now_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

/* A fresh attacker with key number keyno; sub_target (may be NULL) gets a
 * subscription to its events on that node. */
ASH evil *ev_new(uint32_t keyno, target *sub_target)
{
    evil *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->fd = -1;
    evil_key(&e->key, keyno);
    tm2_node_key_id(&e->key, &e->id);
    if (sub_target)
        assert_int_equal(tm2_switch_subscribe(sub_target->sw, TM2_EVENT_ALL, &e->id, 64,
                                              &e->sub),
                         0);
    return e;
}

ASH void ev_close(evil *e)
{
    if (e->fd >= 0)
        close(e->fd);
    e->fd = -1;
    if (e->sc_init)
        tm2__sc_close(&e->sc);
    e->sc_init = e->sc_up = false;
}

ASH void ev_free(evil *e)
{
    if (!e)
        return;
    ev_close(e);
    if (e->sub)
        tm2_unsubscribe(e->sub);
    tm2_node_key_wipe(&e->key);
    free(e);
}

ASH void ev_mark_closed(evil *e)
{
    if (!e->closed) {
        e->closed = true;
        e->t_closed = tv_now_ms();
    }
}

/* Connects from src to the node. 0 or -errno. */
ASH int ev_connect(evil *e, const char *src, const tm2_netaddr *to, int timeout_ms)
{
    e->fd = sock_connect_from(src, to);
    if (e->fd < 0)
        return e->fd;
    struct pollfd p = {.fd = e->fd, .events = POLLOUT};
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    if (r == 0)
        return -ETIMEDOUT;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    e->t_open = tv_now_ms();
    return -err;
}

/* Reads what the socket has (waiting up to timeout_ms for something) and,
 * once the secret connection is up, opens it into plain. Returns 1 when
 * bytes came, 0 on timeout, -1 when the node closed the connection (or a
 * frame failed to open, which ends it too). */
ASH int ev_pump(evil *e, int timeout_ms)
{
    if (e->closed)
        return -1;
    if (e->rx_len == sizeof e->rx || e->plain_len == sizeof e->plain)
        return 1;   /* the caller has to consume first */
    struct pollfd p = {.fd = e->fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0)
        return 0;
    ssize_t n = recv(e->fd, e->rx + e->rx_len, sizeof e->rx - e->rx_len, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        ev_mark_closed(e);
        return -1;
    }
    if (n < 0)
        return 0;
    e->rx_len += (size_t)n;
    if (e->sc_up) {
        size_t used = 0;
        int k = tm2__sc_open(&e->sc, e->rx, e->rx_len, &used, e->plain + e->plain_len,
                             sizeof e->plain - e->plain_len);
        if (k < 0) {
            ev_mark_closed(e);
            return -1;
        }
        e->plain_len += (size_t)k;
        memmove(e->rx, e->rx + used, e->rx_len - used);
        e->rx_len -= used;
    }
    return 1;
}

ASH void ev_consume(evil *e, size_t n)
{
    memmove(e->plain, e->plain + n, e->plain_len - n);
    e->plain_len -= n;
}

/* Writes all of p raw (no sealing). 0, -1 when the node closed the
 * connection, or TM2_ETIMEDOUT. Whatever the node sends meanwhile is read
 * and dropped, so neither side can block the other. */
ASH int ev_write(evil *e, const uint8_t *p, size_t len, int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    size_t off = 0;
    while (off < len) {
        if (e->closed)
            return -1;
        ssize_t n = send(e->fd, p + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            ev_mark_closed(e);
            return -1;
        }
        int left = ms_left(deadline);
        if (left == 0)
            return TM2_ETIMEDOUT;
        struct pollfd q = {.fd = e->fd, .events = POLLOUT | POLLIN};
        if (poll(&q, 1, left) > 0 && (q.revents & (POLLIN | POLLHUP | POLLERR))) {
            if (ev_pump(e, 0) < 0)
                return -1;
            if (e->sc_up)
                e->plain_len = 0;   /* the attacker does not care */
            if (e->rx_len == sizeof e->rx && !e->sc_up)
                e->rx_len = 0;
        }
    }
    return 0;
}

/* The secret-connection handshake as the owner of e->key. 0, -1 (closed)
 * or TM2_ETIMEDOUT / a handshake error. */
ASH int ev_handshake(evil *e, int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    if (tm2__sc_init(&e->sc, &e->key, NULL) != 0)
        return TM2_EIO;
    e->sc_init = true;
    for (;;) {
        uint8_t out[256];
        size_t k;
        while ((k = tm2__sc_hs_output(&e->sc, out, sizeof out)) > 0) {
            int r = ev_write(e, out, k, ms_left(deadline));
            if (r)
                return r;
        }
        if (tm2__sc_established(&e->sc))
            break;
        int r = ev_pump(e, ms_left(deadline));
        if (r < 0)
            return -1;
        if (r == 0 && ms_left(deadline) == 0)
            return TM2_ETIMEDOUT;
        size_t used = 0;
        int hr = tm2__sc_hs_input(&e->sc, e->rx, e->rx_len, &used);
        memmove(e->rx, e->rx + used, e->rx_len - used);
        e->rx_len -= used;
        if (hr != 0 && hr != TM2_EAGAIN)
            return hr;
    }
    e->sc_up = true;
    /* Frames that came right behind the node's auth message. */
    if (e->rx_len) {
        size_t used = 0;
        int k = tm2__sc_open(&e->sc, e->rx, e->rx_len, &used, e->plain, sizeof e->plain);
        if (k < 0)
            return k;
        e->plain_len = (size_t)k;
        memmove(e->rx, e->rx + used, e->rx_len - used);
        e->rx_len -= used;
    }
    return 0;
}

/* Seals plaintext into frames and writes them. A failure (the deadline
 * included) may leave part of a frame unwritten: the stream is then
 * unusable for anything but waiting for the node to close it. */
ASH int ev_send(evil *e, const uint8_t *p, size_t len, int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    static _Thread_local uint8_t out[32 * TM2__SC_FRAME_SIZE];
    while (len) {
        size_t used = 0;
        int k = tm2__sc_seal(&e->sc, p, len, &used, out, sizeof out);
        if (k < 0)
            return k;
        int r = ev_write(e, out, (size_t)k, ms_left(deadline));
        if (r)
            return r;
        p += used;
        len -= used;
    }
    return 0;
}

/* Seals one frame whose length field says len_field (the reference
 * accepts at most 1024) and writes it. */
ASH int ev_send_bad_frame(evil *e, uint32_t len_field, int timeout_ms)
{
    uint8_t f[TM2__SC_FRAME_SIZE];
    memset(f, 0x5a, sizeof f);
    f[0] = (uint8_t)len_field;
    f[1] = (uint8_t)(len_field >> 8);
    f[2] = (uint8_t)(len_field >> 16);
    f[3] = (uint8_t)(len_field >> 24);
    uint8_t nonce[TM2__AEAD_NONCE_SIZE];
    tm2__sc_nonce(e->sc.send_ctr++, nonce);
    assert_int_equal(tm2__aead_seal_frame(&e->sc.send_aead, nonce, f, f), 0);
    return ev_write(e, f, sizeof f, timeout_ms);
}

/* A message as mconn packets on channel ch: EOF on the last unless
 * unfinished (then the message is left open). */
ASH int ev_send_packets(evil *e, uint8_t ch, const uint8_t *msg, size_t len, bool unfinished,
                        int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    static _Thread_local uint8_t buf[64 << 10];
    size_t fill = 0, off = 0;
    do {
        size_t n = len - off > 1024 ? 1024 : len - off;
        uint8_t eof = off + n == len && !unfinished;
        if (sizeof buf - fill < 1100) {
            int r = ev_send(e, buf, fill, ms_left(deadline));
            if (r)
                return r;
            fill = 0;
        }
        int k = tm2__packet_encode_msg(buf + fill, sizeof buf - fill, ch, eof, msg + off, n);
        assert_true(k > 0);
        fill += (size_t)k;
        off += n;
    } while (off < len);
    return ev_send(e, buf, fill, ms_left(deadline));
}

ASH int ev_send_msg(evil *e, uint8_t ch, const uint8_t *msg, size_t len, int timeout_ms)
{
    return ev_send_packets(e, ch, msg, len, false, timeout_ms);
}

/* The attacker's NodeInfo: it claims id (NULL: its own), on the node's
 * network, with the given channels, advertising no address anyone would
 * dial (0.0.0.0:0, which never enters an address book). */
ASH size_t ev_node_info(evil *e, const tm2_id *claim, const uint8_t *ch, size_t nch, uint8_t *out,
                        size_t cap)
{
    static const tm2_version_info vers[] = {
        {"abci", TM2_PROTOCOL_VERSION, false}, {"app", "", false},
        {"bft", TM2_PROTOCOL_VERSION, false},  {"blockchain", TM2_PROTOCOL_VERSION, false},
        {"p2p", TM2_PROTOCOL_VERSION, false},
    };
    tm2_node_info ni = {
        .versions = vers, .n_versions = 5, .has_net_address = true, .network = ATTACK_NETWORK,
        .software = "", .version = TM2_PROTOCOL_VERSION, .channels = ch, .n_channels = nch,
        .moniker = "attacker", .tx_index = "off", .rpc_address = "",
    };
    ni.net_address.id = claim ? *claim : e->id;
    ni.net_address.ip[10] = ni.net_address.ip[11] = 0xff;
    int n = tm2_node_info_encode(&ni, out, cap);
    assert_true(n > 0);
    return (size_t)n;
}

/* A whole sized message at the front of buf? Its total length, else 0. */
ASH size_t sized_len(const uint8_t *buf, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        v |= (uint64_t)(buf[i] & 0x7f) << (7 * i);
        if (!(buf[i] & 0x80))
            return len - (i + 1) >= v ? (size_t)v + i + 1 : 0;
    }
    return 0;
}

/* Sends our NodeInfo and reads the node's. 0, -1 (closed), TM2_ETIMEDOUT. */
ASH int ev_exchange(evil *e, const tm2_id *claim, const uint8_t *ch, size_t nch, int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    uint8_t ni[1024];
    size_t n = ev_node_info(e, claim, ch, nch, ni, sizeof ni);
    int r = ev_send(e, ni, n, timeout_ms);
    if (r)
        return r;
    size_t k;
    while ((k = sized_len(e->plain, e->plain_len)) == 0) {
        r = ev_pump(e, ms_left(deadline));
        if (r < 0)
            return -1;
        if (r == 0 && ms_left(deadline) == 0)
            return TM2_ETIMEDOUT;
    }
    ev_consume(e, k);
    return 0;
}

static const uint8_t EV_CH_PEX[] = {TM2_DISCOVERY_CHANNEL};
static const uint8_t EV_CH_BOTH[] = {CH_A, TM2_DISCOVERY_CHANNEL};

/* Connects from src, runs the handshake and the NodeInfo exchange, and
 * (with a subscription) waits for the node's verdict on our ID: returns 0
 * once we are its peer, TM2_EREJECTED when it refused us, -1 when it
 * closed before, or another error. */
ASH int ev_join(evil *e, const char *src, target *t, const uint8_t *ch, size_t nch,
                int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    int r = ev_connect(e, src, &t->addr, timeout_ms);
    if (r)
        return r;
    if ((r = ev_handshake(e, ms_left(deadline))) != 0)
        return r;
    if ((r = ev_exchange(e, NULL, ch, nch, ms_left(deadline))) != 0)
        return r;
    if (!e->sub)
        return 0;
    for (;;) {
        tm2_event ev;
        int left = ms_left(deadline);
        if (left == 0)
            return TM2_ETIMEDOUT;
        r = tm2_subscription_next(e->sub, &ev, left);
        if (r == TM2_ETIMEDOUT)
            return r;
        if (r)
            return r;
        if (ev.type == TM2_EVENT_PEER_CONNECTED)
            return 0;
        if (ev.type == TM2_EVENT_PEER_REJECTED)
            return TM2_EREJECTED;
    }
}

/* Waits for the node to close the connection, reading and dropping what
 * it sends. True when it did within timeout_ms. */
ASH bool ev_wait_closed(evil *e, int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    while (!e->closed) {
        int left = ms_left(deadline);
        if (left == 0)
            return false;
        (void)ev_pump(e, left);
        e->plain_len = 0;
        if (!e->sc_up)
            e->rx_len = 0;
    }
    return true;
}

/* Waits for an event of type on our subscription; its reason in *reason
 * and its text in why (may be NULL). True when it came. */
ASH bool ev_wait_event(evil *e, tm2_event_type type, int timeout_ms, int *reason, char *why,
                       size_t cap)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        tm2_event ev;
        int left = ms_left(deadline);
        if (tm2_subscription_next(e->sub, &ev, left) != 0)
            return false;
        if (ev.type != type)
            continue;
        if (reason)
            *reason = ev.reason;
        if (why)
            snprintf(why, cap, "%s", ev.reason_text);
        return true;
    }
}

/* The next discovery Request from the node: packets that are not one are
 * skipped. 1 when one came, 0 on timeout, -1 when closed. */
ASH int ev_next_request(evil *e, int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        while (e->plain_len) {
            tm2__packet p;
            size_t used = 0;
            int r = tm2__packet_decode(e->plain, e->plain_len, tm2__packet_max_size(1024), &p,
                                       &used);
            if (r == TM2_EAGAIN)
                break;
            if (r)
                return -1;
            bool req = false;
            if (p.type == TM2__PKT_MSG && p.channel == TM2_DISCOVERY_CHANNEL && p.eof == 1) {
                tm2__pex_msg m;
                req = tm2__pex_decode(p.data, p.len, &m, NULL, 0) == 0 &&
                      m.kind == TM2__PEX_REQUEST;
            }
            ev_consume(e, used);
            if (req)
                return 1;
        }
        int left = ms_left(deadline);
        if (left == 0)
            return 0;
        int r = ev_pump(e, left);
        if (r < 0)
            return -1;
    }
}

/* n random valid IDs with addresses in 127.a.b.0/24 (one_24), or spread
 * over 127.a.0.0/16, on ports from port0 up: what a liar gossips. Nothing
 * listens on those ports. */
ASH tm2_netaddr *bogus_addrs(size_t n, uint8_t a, uint8_t b, bool one_24, uint16_t port0)
{
    tm2_netaddr *v = calloc(n, sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        uint8_t pub[32];
        randombytes_buf(pub, sizeof pub);
        tm2_id_from_pubkey(pub, &v[i].id);
        v[i].ip[10] = v[i].ip[11] = 0xff;
        v[i].ip[12] = 127;
        v[i].ip[13] = a;
        v[i].ip[14] = one_24 ? b : (uint8_t)(i / 254);
        v[i].ip[15] = (uint8_t)(1 + i % 254);
        v[i].port = (uint16_t)(port0 + (one_24 ? i / 254 : 0));
    }
    return v;
}

/* A discovery Response carrying addrs[0..n), malloc'd. */
ASH uint8_t *pex_response(const tm2_netaddr *addrs, size_t n, size_t *len)
{
    int k = tm2__pex_encode_response(addrs, n, NULL, 0);
    assert_true(k > 0);
    uint8_t *buf = malloc((size_t)k);
    assert_non_null(buf);
    assert_int_equal(tm2__pex_encode_response(addrs, n, buf, (size_t)k), k);
    *len = (size_t)k;
    return buf;
}

#endif
