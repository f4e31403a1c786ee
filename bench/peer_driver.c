/* The peer benchmarks' shared pieces; see peer_driver.h. */
#include "peer_driver.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "bench_util.h"
#include "net/engine_uv.h"
#include "net/transport.h"

extern char **environ;

const tm2_channel_desc bench_node_chans[BENCH_N_NODE_CHANS] = {
    {0x30, 5, 0, 4096, 22020096},  {0x40, 10, 1000, 204800, 104857605},
    {0x20, 5, 100, 4096, 1048576}, {0x21, 10, 100, 204800, 1048576},
    {0x22, 5, 100, 10000, 1048576}, {0x23, 1, 2, 1024, 1048576},
    {0x50, 1, 20, 4096, 5242880},
};

void bench_switch_config(tm2_switch_config *c)
{
    tm2_switch_config_default(c);
    /* Every peer of a benchmark comes from 127.0.0.1. */
    c->allow_duplicate_ip = true;
    tm2_node_key_generate(&c->key);
    c->network = BENCH_NETWORK;
}

void bench_raise_nofile(size_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < need)
        DIE("RLIMIT_NOFILE %lu is below the %zu descriptors needed", (unsigned long)rl.rlim_cur, need);
}

size_t bench_rss_bytes(pid_t pid)
{
    char path[64];
    if (pid)
        snprintf(path, sizeof path, "/proc/%ld/statm", (long)pid);
    else
        snprintf(path, sizeof path, "/proc/self/statm");
    FILE *f = fopen(path, "r");
    unsigned long size = 0, res = 0;
    if (!f || fscanf(f, "%lu %lu", &size, &res) != 2)
        DIE("%s: cannot read", path);
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

void bench_wait_queues(tm2_peer **ps, size_t n, uint8_t ch, size_t limit)
{
    double deadline = now_s() + 10.0;
    for (;;) {
        size_t i = 0;
        for (; i < n; i++) {
            tm2_mconn_status st;
            if (tm2_peer_status(ps[i], &st) != 0)
                DIE("broadcast: peer status failed (peer gone?)");
            size_t k = 0;
            while (k < st.n_channels && st.channels[k].id != ch)
                k++;
            if (k == st.n_channels)
                DIE("broadcast: peer has no channel 0x%02x", ch);
            if (st.channels[k].send_queue_size > limit)
                break;
        }
        if (i == n)
            return;
        if (now_s() > deadline)
            DIE("broadcast: queues did not drain in 10 s");
        nap_s(200e-6);
    }
}

/* ---- child processes ------------------------------------------------------------------- */

void bench_child_spawn(bench_child *c, const char *const argv[])
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
        DIE("pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    int e = posix_spawn(&c->pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (e)
        DIE("spawn %s: %s", argv[0], strerror(e));
    c->in = in[1];
    c->out = out[0];
    c->len = 0;
}

void bench_child_send(bench_child *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 1)
        DIE("command too long");
    line[n++] = '\n';
    if (write(c->in, line, (size_t)n) != n)
        DIE("child %ld: write: %s", (long)c->pid, strerror(errno));
}

void bench_child_expect(bench_child *c, const char *tag, char *line, size_t cap, int timeout_ms)
{
    size_t tlen = strlen(tag);
    double deadline = now_s() + timeout_ms / 1000.0;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            bool hit = n > tlen && strncmp(c->buf, tag, tlen) == 0 && c->buf[tlen] == ' ';
            if (hit) {
                if (n >= cap)
                    DIE("line too long: %.40s...", c->buf);
                memcpy(line, c->buf, n);
                line[n] = '\0';
            }
            c->len -= n + 1;
            memmove(c->buf, nl + 1, c->len);
            if (hit)
                return;
            continue;
        }
        if (c->len == sizeof c->buf)
            DIE("child %ld: line too long", (long)c->pid);
        double left = deadline - now_s();
        if (left <= 0)
            DIE("child %ld: no %s line within %d ms", (long)c->pid, tag, timeout_ms);
        struct pollfd p = {.fd = c->out, .events = POLLIN};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR)
            DIE("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        ssize_t k = read(c->out, c->buf + c->len, sizeof c->buf - c->len);
        if (k <= 0)
            DIE("child %ld ended without a %s line", (long)c->pid, tag);
        c->len += (size_t)k;
    }
}

void bench_child_end(bench_child *c)
{
    if (c->in >= 0)
        close(c->in);
    c->in = -1;
    pid_t r = 0;
    for (int i = 0; i < 1000 && r == 0; i++) {   /* 10 s */
        r = waitpid(c->pid, NULL, WNOHANG);
        if (r == 0)
            nap_s(0.01);
        else if (r < 0 && errno == EINTR)
            r = 0;
    }
    if (r == 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
    }
    close(c->out);
}

peer_count peer_driver_count(bench_child *d)
{
    char line[256];
    peer_count pc;
    bench_child_send(d, "count");
    bench_child_expect(d, "COUNT", line, sizeof line, 10000);
    if (sscanf(line, "COUNT ok=%llu failed=%llu msgs=%llu t=%lf cpu=%lf", &pc.ok, &pc.failed,
               &pc.msgs, &pc.t, &pc.cpu) != 5)
        DIE("bad driver line: %s", line);
    return pc;
}

/* ---- the driver ------------------------------------------------------------------------ */

enum { MODE_NONE, MODE_IDLE, MODE_RECV, MODE_LOOP };

#define KEY_POOL 2048   /* loop: a key returns after 2,048 dials, long after its peer left */

typedef struct driver {
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__mcs_loop ml;
    uv_poll_t ctl;
    uv_timer_t watchdog;
    int in_fd, out_fd;
    size_t clen;
    char cbuf[512];
    int mode;
    tm2_netaddr hub;
    int target, max_inflight;    /* idle/recv: peers; every mode: dials at once */
    int started, inflight;
    unsigned long long ok, failed, msgs;
    double t_start;
    tm2_mconn_config mconn;
    tm2_node_key *keys;
    size_t next_key;
    int n_src;                   /* idle: dials leave from 127.0.0.2 .. 127.0.0.(1+n_src); 0: any */
} driver;

/* The process has one driver; connections reach it from callbacks that carry
 * no user pointer of ours. */
static driver *g_drv;

static void drv_out(driver *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void drv_out(driver *d, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 1)
        _exit(1);
    line[n++] = '\n';
    if (write(d->out_fd, line, (size_t)n) != n)
        _exit(1);
}

static void drv_next(driver *d);

static int cl_receive(tm2__mcs *m, uint8_t ch, const uint8_t *data, size_t len)
{
    (void)m;
    (void)ch;
    (void)data;
    (void)len;
    g_drv->msgs++;
    return 0;
}

static void cl_close(tm2__mcs *m) { tm2__transport_conn_free(tm2__transport_conn_of(m)); }

static void drv_settled(driver *d)
{
    if (d->mode != MODE_LOOP && d->started == d->target && d->inflight == 0)
        drv_out(d, "CONNECTED ok=%llu failed=%llu secs=%.3f", d->ok, d->failed, now_s() - d->t_start);
}

static void cl_conn(tm2__transport *t, tm2__transport_conn *c)
{
    driver *d = t->data;
    d->inflight--;
    if (d->mode == MODE_LOOP) {
        /* The handshake is what is measured: close at once, and the
         * transport with it (the connection is ours, not the transport's). */
        d->ok++;
        tm2__mcs_close(&c->mcs);
        tm2__transport_close(t, NULL);
    } else {
        int r = tm2__mcs_start(&c->mcs, &d->mconn, bench_node_chans, BENCH_N_NODE_CHANS,
                               c->leftover, c->leftover_len);
        if (r) {
            fprintf(stderr, "peer driver: start: %s\n", tm2_strerror(r));
            tm2__mcs_close(&c->mcs);
            d->failed++;
        } else {
            d->ok++;
        }
        drv_settled(d);
    }
    drv_next(d);
}

static void cl_reject(tm2__transport *t, const tm2__transport_reject *r)
{
    driver *d = t->data;
    if (d->failed++ < 5)
        fprintf(stderr, "peer driver: dial failed: %s\n", r->why);
    d->inflight--;
    if (d->mode == MODE_LOOP)
        tm2__transport_close(t, NULL);
    else
        drv_settled(d);
    drv_next(d);
}

/* One transport per dial: the key, and so the ID, belongs to the transport,
 * and a transport dials an address once at a time. */
static void drv_next(driver *d)
{
    static const tm2__transport_cbs cbs = {.on_conn = cl_conn, .on_reject = cl_reject};
    static const tm2_version_info vers[5] = {
        {"abci", TM2_PROTOCOL_VERSION, false}, {"app", "", false},
        {"bft", TM2_PROTOCOL_VERSION, false},  {"blockchain", TM2_PROTOCOL_VERSION, false},
        {"p2p", TM2_PROTOCOL_VERSION, false},
    };
    uint8_t chans[BENCH_N_NODE_CHANS];
    for (size_t i = 0; i < BENCH_N_NODE_CHANS; i++)
        chans[i] = bench_node_chans[i].id;
    while (d->inflight < d->max_inflight && (d->mode == MODE_LOOP || d->started < d->target)) {
        tm2__tcp_transport_config tc;
        memset(&tc, 0, sizeof tc);
        if (d->keys)
            tc.key = d->keys[d->next_key++ % KEY_POOL];
        else
            tm2_node_key_generate(&tc.key);
        tm2_node_info ni = {
            .versions = vers, .n_versions = 5, .has_net_address = true,
            .network = BENCH_NETWORK, .software = "", .version = TM2_PROTOCOL_VERSION,
            .channels = chans, .n_channels = BENCH_N_NODE_CHANS, .moniker = "driver",
            .tx_index = "off", .rpc_address = "",
        };
        ni.net_address.ip[10] = 0xff;   /* ::ffff:0.0.0.0, no listener */
        ni.net_address.ip[11] = 0xff;
        tm2_node_key_id(&tc.key, &ni.net_address.id);
        tc.node_info = &ni;
        tc.handshake_timeout_ms = 20000;
        tc.dial_timeout_ms = 20000;
        tc.conn_cbs = (tm2__mcs_cbs){.on_receive = cl_receive, .on_close = cl_close};
        if (d->n_src > 0) {
            /* One source address per dial in turn: each has its own
             * ephemeral ports, bound before connect. */
            tc.has_dial_source = true;
            tc.dial_source.ip[10] = 0xff;
            tc.dial_source.ip[11] = 0xff;
            tc.dial_source.ip[12] = 127;
            tc.dial_source.ip[15] = (uint8_t)(2 + d->started % d->n_src);
        }
        tm2__transport *t;
        int r = tm2__tcp_transport_new(&d->ml, &tc, &cbs, d, &t);
        tm2_node_key_wipe(&tc.key);
        if (r) {
            fprintf(stderr, "peer driver: transport: %s\n", tm2_strerror(r));
            _exit(1);
        }
        d->started++;
        if ((r = tm2__transport_dial(t, &d->hub, d)) != 0) {
            fprintf(stderr, "peer driver: dial: %s\n", tm2_strerror(r));
            _exit(1);
        }
        d->inflight++;
    }
}

static void drv_command(driver *d, char *line)
{
    char mode[16], addr[160];
    int a = 0, b = 0;
    if (strcmp(line, "count") == 0) {
        drv_out(d, "COUNT ok=%llu failed=%llu msgs=%llu t=%.6f cpu=%.6f", d->ok, d->failed, d->msgs,
                now_s(), proc_cpu_s());
        return;
    }
    int src = 0, nf;
    /* Another idle batch once the last one settled: its peers are added. */
    bool more = d->mode == MODE_IDLE && d->started == d->target && d->inflight == 0;
    if (d->mode != MODE_NONE && !more)
        goto bad;
    if ((nf = sscanf(line, "%15s %d %d %159s %d", mode, &a, &b, addr, &src)) >= 4 &&
        strcmp(mode, "idle") == 0) {
        if (src < 0 || src > 250)
            goto bad;
        d->mode = MODE_IDLE;
        d->target += a;
        d->max_inflight = b;
        d->n_src = src;
    } else if (more) {
        goto bad;
    } else if (sscanf(line, "%15s %d %159s", mode, &a, addr) == 3 && strcmp(mode, "recv") == 0) {
        d->mode = MODE_RECV;
        d->target = d->max_inflight = a;
        d->mconn.send_rate = 0;
        d->mconn.recv_rate = 0;
    } else if (sscanf(line, "%15s %d %159s", mode, &a, addr) == 3 && strcmp(mode, "loop") == 0) {
        d->mode = MODE_LOOP;
        d->max_inflight = a;
        d->keys = malloc(KEY_POOL * sizeof *d->keys);
        if (!d->keys)
            _exit(1);
        for (size_t i = 0; i < KEY_POOL; i++)
            tm2_node_key_generate(&d->keys[i]);
    } else {
        goto bad;
    }
    (void)nf;
    if (a <= 0 || d->max_inflight <= 0 || tm2_netaddr_parse(addr, 0, &d->hub) != 0 ||
        !tm2_netaddr_is_loopback(&d->hub))
        goto bad;
    d->t_start = now_s();
    drv_next(d);
    return;
bad:
    fprintf(stderr, "peer driver: bad command: %s\n", line);
    _exit(2);
}

static void drv_ctl(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    driver *d = h->data;
    ssize_t n = read(d->in_fd, d->cbuf + d->clen, sizeof d->cbuf - d->clen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0)
        _exit(0);   /* the parent has measured, or died */
    d->clen += (size_t)n;
    char *nl;
    while ((nl = memchr(d->cbuf, '\n', d->clen)) != NULL) {
        *nl = '\0';
        drv_command(d, d->cbuf);
        d->clen -= (size_t)(nl + 1 - d->cbuf);
        memmove(d->cbuf, nl + 1, d->clen);
    }
    if (d->clen == sizeof d->cbuf)
        _exit(2);
}

static void drv_watchdog(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "peer driver: watchdog: still running after %d s\n", PEER_DRIVER_MAX_S);
    _exit(3);
}

_Noreturn void peer_driver_main(int in_fd, int out_fd)
{
    signal(SIGPIPE, SIG_IGN);
    driver *d = calloc(1, sizeof *d);
    if (!d)
        DIE("oom");
    g_drv = d;
    d->in_fd = in_fd;
    d->out_fd = out_fd;
    tm2_mconn_config_default(&d->mconn);
    if (uv_loop_init(&d->loop) || tm2__uv_engine_init(&d->ue, &d->loop) ||
        tm2__mcs_loop_init(&d->ml, &d->ue.e))
        DIE("peer driver: loop");
    d->ctl.data = d;
    if (uv_poll_init(&d->loop, &d->ctl, in_fd) ||
        uv_poll_start(&d->ctl, UV_READABLE | UV_DISCONNECT, drv_ctl))
        DIE("peer driver: poll");
    uv_timer_init(&d->loop, &d->watchdog);
    uv_timer_start(&d->watchdog, drv_watchdog, PEER_DRIVER_MAX_S * 1000u, 0);
    uv_unref((uv_handle_t *)&d->watchdog);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    _exit(1);
}

bench_child peer_driver_fork(void)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        DIE("socketpair");
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        DIE("fork");
    if (child == 0) {
        close(fds[1]);
        peer_driver_main(fds[0], fds[0]);
    }
    close(fds[0]);
    return (bench_child){.pid = child, .in = fds[1], .out = fds[1]};
}
