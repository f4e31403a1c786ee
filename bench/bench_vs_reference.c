/* tm2p2p against the Go reference (tests/interop/cmd/tm2ref, gno v1.2.0) in
 * the same run, over loopback TCP, one connection, rate limits off:
 *
 *   vs_reference_mconn_256B_*   MConnection, one channel, 256 B messages
 *   vs_reference_mconn_64KiB_*  the same with 64 KiB messages
 *   vs_reference_sc_*           the bare secret connection, 1 MiB writes
 *
 * For each, <name>_{reference,tm2p2p}_{msgs_per_s,MB_per_s,sender_cpu,
 * receiver_cpu}: the reference is two tm2ref processes (mconn-bench or
 * sc-bench, one listening as receiver, one dialling as sender), tm2p2p two
 * loop threads of this process on the libuv glue (as bench_mconn). A run
 * moves a fixed count of messages; the rate is the receiver's, from the first
 * message to the last. CPU is seconds per GiB of payload: the whole process
 * for tm2ref (getrusage), the loop thread for tm2p2p.
 *
 *   <name>_ratio       tm2p2p / reference throughput (> 1: tm2p2p faster)
 *   <name>_{sender,receiver}_cpu_ratio
 *                      reference / tm2p2p CPU per GiB (> 1: tm2p2p cheaper)
 *   vs_reference_mixed_*  64 KiB MConnection messages from tm2p2p to the
 *                      reference and back: interop under load
 *
 * MB = 10^6 bytes. Each configuration runs three times, interleaved with the
 * others, and keeps its best. Without tm2ref (Go missing, or its build
 * failed) the bench says it skipped and succeeds. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "bench_util.h"
#include "net/mconn_stream.h"

#ifndef TM2REF_PATH
#error "TM2REF_PATH must be defined by the build"
#endif

extern char **environ;

#define CHANNEL 0x01            /* tm2ref mconn-bench's channel */
#define SENDQ 1000
#define RECV_CAP (4u << 20)
#define SC_WRITE (1024u * 1024u)
#define ROUNDS 3
#define REF_TIMEOUT "60s"       /* tm2ref's own watchdog: a stuck child exits */

typedef enum { IMPL_REF, IMPL_TM2 } impl;

typedef struct result {
    double msgs_per_s, mb_per_s;
    double tx_cpu_gib, rx_cpu_gib;
} result;

/* ---- a tm2p2p endpoint: one loop on its own thread ---------------------------------- */

typedef struct side {
    bool bare, tx;
    uint64_t count;             /* messages (mconn) or writes (bare) */
    size_t size;
    const uint8_t *src;         /* bare: size bytes */
    tm2__msg *msg;              /* mconn: the one message every send queues */
    uv_loop_t loop;
    tm2__mcs_loop ml;
    tm2__mcs c;
    tm2__sc_stream s;
    tm2_node_key key;
    uv_tcp_t listener;
    uv_connect_t creq;
    pthread_t th;
    /* sender */
    uint64_t sent;
    /* receiver */
    uint64_t msgs, bytes;
    double t_first, t_last;
    double cpu;
} side;

static void side_done(side *sd)
{
    if (sd->listener.loop && !uv_is_closing((uv_handle_t *)&sd->listener))
        uv_close((uv_handle_t *)&sd->listener, NULL);
}

static void side_finish(side *sd)
{
    if (sd->bare)
        tm2__sc_stream_close(&sd->s);
    else
        tm2__mcs_close(&sd->c);
    side_done(sd);
}

/* The receiver ends the run once everything arrived; the sender then sees
 * the connection close. */
static void rx_count(side *sd, size_t len)
{
    double t = now_s();
    if (sd->msgs == 0 && sd->bytes == 0)
        sd->t_first = t;
    sd->bytes += len;
    sd->msgs += !sd->bare;
    if (sd->bare ? sd->bytes == sd->count * sd->size : sd->msgs == sd->count) {
        sd->t_last = t;
        sd->msgs = sd->count;
        side_finish(sd);
    }
}

static void tx_fill(side *sd)
{
    while (sd->sent < sd->count) {
        int e = tm2__mcs_try_send(&sd->c, CHANNEL, sd->msg);
        if (e == TM2_EFULL)
            return;
        if (e)
            DIE("try_send: %s", tm2_strerror(e));
        sd->sent++;
    }
}

static int m_receive(tm2__mcs *c, uint8_t ch, const uint8_t *data, size_t len)
{
    (void)ch;
    (void)data;
    rx_count(c->data, len);
    return 0;
}

static void m_room(tm2__mcs *c, uint8_t ch)
{
    (void)ch;
    tx_fill(c->data);
}

static void m_error(tm2__mcs *c, int err, const char *reason)
{
    side *sd = c->data;
    /* The sender sees the receiver leave; anything else is a failure. */
    if (!sd->tx || (err != TM2_ECLOSED && err != TM2_EIO))
        DIE("%s: %s (%s)", sd->tx ? "sender" : "receiver", tm2_strerror(err), reason);
    side_done(sd);
}

static void m_close(tm2__mcs *c)
{
    side *sd = c->data;
    tm2__mcs_loop_close(&sd->ml);
}

static void m_handshake(tm2__sc_stream *s, int err)
{
    tm2__mcs *c = tm2__mcs_of_stream(s);
    side *sd = c->data;
    if (err)
        DIE("handshake: %s", tm2_strerror(err));
    tm2_mconn_config cfg;
    tm2_mconn_config_default(&cfg);
    cfg.send_rate = 0;
    cfg.recv_rate = 0;
    tm2_channel_desc d = {.id = CHANNEL, .priority = 1, .send_queue_capacity = SENDQ,
                          .recv_message_capacity = RECV_CAP};
    int e = tm2__mcs_start(c, &cfg, &d, 1, NULL, 0);
    if (e)
        DIE("start: %s", tm2_strerror(e));
    if (sd->tx)
        tx_fill(sd);
}

static void m_pre_error(tm2__sc_stream *s, int err)
{
    (void)s;
    DIE("stream before start: %s", tm2_strerror(err));
}

static void b_pump(side *sd)
{
    while (sd->sent < sd->count) {
        int e = tm2__sc_stream_write(&sd->s, sd->src, sd->size);
        if (e == TM2_EFULL)
            return;
        if (e) {
            /* The receiver left; a failing write is reported here only. */
            side_finish(sd);
            return;
        }
        sd->sent++;
    }
}

static void b_handshake(tm2__sc_stream *s, int err)
{
    if (err)
        DIE("bare handshake: %s", tm2_strerror(err));
    side *sd = s->data;
    if (sd->tx)
        b_pump(sd);
}

static void b_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    (void)data;
    rx_count(s->data, len);
}

static void b_writable(tm2__sc_stream *s) { b_pump(s->data); }

static void b_error(tm2__sc_stream *s, int err)
{
    side *sd = s->data;
    if (!sd->tx)
        DIE("bare receiver: %s", tm2_strerror(err));
    side_finish(sd);
}

static void b_close(tm2__sc_stream *s)
{
    side *sd = s->data;
    tm2__mcs_loop_close(&sd->ml);
}

static tm2__sc_stream *side_stream(side *sd) { return sd->bare ? &sd->s : tm2__mcs_stream(&sd->c); }

static void on_accept(uv_stream_t *server, int status)
{
    side *sd = server->data;
    if (status || uv_accept(server, (uv_stream_t *)tm2__sc_stream_tcp(side_stream(sd))) ||
        tm2__sc_stream_start(side_stream(sd), &sd->key, NULL))
        DIE("accept");
    uv_close((uv_handle_t *)&sd->listener, NULL);
}

static void on_connected(uv_connect_t *req, int status)
{
    side *sd = req->data;
    if (status || tm2__sc_stream_start(side_stream(sd), &sd->key, NULL))
        DIE("connect: %s", status ? uv_strerror(status) : "stream start");
}

static void *side_thread(void *arg)
{
    side *sd = arg;
    tm2__mcs_loop_bind_thread(&sd->ml);
    double c0 = thread_cpu_s();
    uv_run(&sd->loop, UV_RUN_DEFAULT);
    sd->cpu = thread_cpu_s() - c0;
    return NULL;
}

/* A receiver listens on 127.0.0.1 (the port goes to *port); a sender dials
 * port. The loop starts with side_go. */
static side *side_new(bool bare, bool tx, uint64_t count, size_t size, const uint8_t *src, int *port)
{
    static const tm2__sc_stream_cbs m_pre = {.on_handshake = m_handshake, .on_error = m_pre_error};
    static const tm2__mcs_cbs m_cbs = {
        .on_receive = m_receive, .on_send_room = m_room, .on_error = m_error, .on_close = m_close};
    static const tm2__sc_stream_cbs b_cbs = {
        .on_handshake = b_handshake, .on_read = b_read, .on_error = b_error,
        .on_writable = b_writable, .on_close = b_close};
    side *sd = calloc(1, sizeof *sd);
    if (!sd)
        DIE("oom");
    sd->bare = bare;
    sd->tx = tx;
    sd->count = count;
    sd->size = size;
    sd->src = src;
    tm2_node_key_generate(&sd->key);
    if (uv_loop_init(&sd->loop) || tm2__mcs_loop_init(&sd->ml, &sd->loop))
        DIE("loop setup");
    if (bare) {
        if (tm2__sc_stream_init(&sd->s, &sd->ml.sc, NULL, &b_cbs))
            DIE("stream init");
        sd->s.data = sd;
    } else {
        if (tm2__mcs_init(&sd->c, &sd->ml, NULL, &m_pre, &m_cbs))
            DIE("mcs init");
        sd->c.data = sd;
        if (tx) {
            sd->msg = tm2__msg_alloc(size);
            if (!sd->msg)
                DIE("oom");
            memset(sd->msg->data, 0x5a, size);
        }
    }
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", tx ? *port : 0, &a);
    if (tx) {
        sd->creq.data = sd;
        if (uv_tcp_connect(&sd->creq, tm2__sc_stream_tcp(side_stream(sd)), (const struct sockaddr *)&a,
                           on_connected))
            DIE("connect");
        return sd;
    }
    uv_tcp_init(&sd->loop, &sd->listener);
    sd->listener.data = sd;
    if (uv_tcp_bind(&sd->listener, (const struct sockaddr *)&a, 0) ||
        uv_listen((uv_stream_t *)&sd->listener, 4, on_accept))
        DIE("listen");
    int alen = sizeof a;
    uv_tcp_getsockname(&sd->listener, (struct sockaddr *)&a, &alen);
    *port = ntohs(a.sin_port);
    return sd;
}

static void side_go(side *sd) { pthread_create(&sd->th, NULL, side_thread, sd); }

static void side_join(side *sd)
{
    pthread_join(sd->th, NULL);
    uv_run(&sd->loop, UV_RUN_DEFAULT);   /* the loop helper's handles */
    if (uv_loop_close(&sd->loop))
        DIE("loop close");
    if (!sd->bare)
        tm2__mcs_destroy(&sd->c);
    if (sd->msg)
        tm2__msg_unref(sd->msg);
}

/* ---- a tm2ref process ---------------------------------------------------------------- */

typedef struct ref {
    pid_t pid;
    FILE *out;
} ref;

typedef struct ref_result {
    uint64_t msgs, bytes;
    double secs, cpu;
} ref_result;

static void ref_start(ref *p, bool bare, bool tx, uint64_t count, size_t size, const char *dial)
{
    uint8_t seed[32];
    char seed_hex[65], count_s[24], size_s[24], dial_s[64] = "";
    randombytes_buf(seed, sizeof seed);
    sodium_bin2hex(seed_hex, sizeof seed_hex, seed, sizeof seed);
    snprintf(count_s, sizeof count_s, "%" PRIu64, count);
    snprintf(size_s, sizeof size_s, "%zu", size);
    if (dial)
        snprintf(dial_s, sizeof dial_s, "%s", dial);
    const char *argv[] = {TM2REF_PATH, bare ? "sc-bench" : "mconn-bench", "--seed", seed_hex,
                          "--role", tx ? "sender" : "receiver", "--count", count_s, "--size", size_s,
                          "--timeout", REF_TIMEOUT, dial ? "--dial" : "--listen",
                          dial ? dial_s : "127.0.0.1:0", NULL};
    int fds[2];
    if (pipe(fds))
        DIE("pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    int e = posix_spawn(&p->pid, TM2REF_PATH, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (e)
        DIE("spawn %s: %s", TM2REF_PATH, strerror(e));
    p->out = fdopen(fds[0], "r");
    if (!p->out)
        DIE("fdopen");
}

/* The next line starting with tag, or exit. tm2ref's watchdog bounds the
 * wait: a stuck child exits and closes its stdout. */
static void ref_expect(ref *p, const char *tag, char *line, size_t cap)
{
    size_t n = strlen(tag);
    while (fgets(line, (int)cap, p->out))
        if (strncmp(line, tag, n) == 0 && line[n] == ' ')
            return;
    DIE("tm2ref ended without a %s line", tag);
}

static ref_result ref_finish(ref *p)
{
    char line[256];
    ref_result r;
    ref_expect(p, "RESULT", line, sizeof line);
    if (sscanf(line, "RESULT msgs=%" SCNu64 " bytes=%" SCNu64 " secs=%lf cpu=%lf", &r.msgs, &r.bytes,
               &r.secs, &r.cpu) != 4)
        DIE("bad tm2ref line: %s", line);
    fclose(p->out);
    int st;
    if (waitpid(p->pid, &st, 0) != p->pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        DIE("tm2ref did not exit cleanly");
    return r;
}

/* ---- one run: a receiver listens, a sender dials ------------------------------------------ */

static double per_gib(double cpu, uint64_t bytes) { return cpu / ((double)bytes / (1024.0 * 1024 * 1024)); }

static result run_one(impl tx_impl, impl rx_impl, bool bare, uint64_t count, size_t size, const uint8_t *src)
{
    side *rx = NULL, *tx = NULL;
    ref rref = {0}, tref = {0};
    int port = 0;
    char addr[64];
    if (rx_impl == IMPL_TM2) {
        rx = side_new(bare, false, count, size, src, &port);
        side_go(rx);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    } else {
        char line[256];
        ref_start(&rref, bare, false, count, size, NULL);
        ref_expect(&rref, "LISTEN", line, sizeof line);
        if (sscanf(line, "LISTEN 127.0.0.1:%d", &port) != 1)
            DIE("bad tm2ref line: %s", line);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    }
    if (tx_impl == IMPL_TM2) {
        tx = side_new(bare, true, count, size, src, &port);
        side_go(tx);
    } else {
        ref_start(&tref, bare, true, count, size, addr);
    }

    result res;
    uint64_t bytes = count * size;
    if (rx) {
        side_join(rx);
        if (rx->bytes != bytes)
            DIE("receiver got %" PRIu64 " of %" PRIu64 " bytes", rx->bytes, bytes);
        double secs = rx->t_last - rx->t_first;
        res.msgs_per_s = (double)count / secs;
        res.mb_per_s = (double)bytes / secs / 1e6;
        res.rx_cpu_gib = per_gib(rx->cpu, bytes);
    } else {
        ref_result r = ref_finish(&rref);
        if (r.bytes != bytes || r.msgs != count)
            DIE("tm2ref receiver got %" PRIu64 " of %" PRIu64 " bytes", r.bytes, bytes);
        res.msgs_per_s = (double)count / r.secs;
        res.mb_per_s = (double)bytes / r.secs / 1e6;
        res.rx_cpu_gib = per_gib(r.cpu, bytes);
    }
    if (tx) {
        side_join(tx);
        res.tx_cpu_gib = per_gib(tx->cpu, bytes);
    } else {
        res.tx_cpu_gib = per_gib(ref_finish(&tref).cpu, bytes);
    }
    free(rx);
    free(tx);
    return res;
}

static void keep_best(result *best, result r)
{
    if (r.mb_per_s > best->mb_per_s)
        *best = r;
}

static void print_side(const char *name, const char *who, result r)
{
    printf("vs_reference_%s_%s_msgs_per_s: %.0f\n", name, who, r.msgs_per_s);
    printf("vs_reference_%s_%s_MB_per_s: %.1f\n", name, who, r.mb_per_s);
    printf("vs_reference_%s_%s_sender_cpu: %.3f s/GiB\n", name, who, r.tx_cpu_gib);
    printf("vs_reference_%s_%s_receiver_cpu: %.3f s/GiB\n", name, who, r.rx_cpu_gib);
}

static void print_pair(const char *name, result ref_r, result tm2_r)
{
    print_side(name, "reference", ref_r);
    print_side(name, "tm2p2p", tm2_r);
    printf("vs_reference_%s_ratio: %.3f\n", name, tm2_r.mb_per_s / ref_r.mb_per_s);
    printf("vs_reference_%s_sender_cpu_ratio: %.3f\n", name, ref_r.tx_cpu_gib / tm2_r.tx_cpu_gib);
    printf("vs_reference_%s_receiver_cpu_ratio: %.3f\n", name, ref_r.rx_cpu_gib / tm2_r.rx_cpu_gib);
    fflush(stdout);
}

/* One configuration: the message size and how many each implementation
 * moves per run (about a second each; the reference is slower). */
typedef struct conf {
    const char *name;
    bool bare;
    size_t size;
    uint64_t ref_count, tm2_count;
    result ref, tm2;
} conf;

int main(void)
{
    if (access(TM2REF_PATH, X_OK) != 0) {
        printf("vs_reference: skipped (Go reference harness not built)\n");
        return 0;
    }
    if (sodium_init() < 0)
        DIE("sodium_init");
    /* A sender still writing when its receiver leaves must see EPIPE. */
    signal(SIGPIPE, SIG_IGN);
    uint8_t *src = malloc(SC_WRITE);
    if (!src)
        DIE("oom");
    randombytes_buf(src, SC_WRITE);

    conf confs[] = {
        {.name = "mconn_256B", .size = 256, .ref_count = 300000, .tm2_count = 1500000},
        {.name = "mconn_64KiB", .size = 64 * 1024, .ref_count = 3000, .tm2_count = 8000},
        {.name = "sc", .bare = true, .size = SC_WRITE, .ref_count = 192, .tm2_count = 768},
    };
    enum { NCONF = sizeof confs / sizeof confs[0] };
    result to_ref = {0}, from_ref = {0};
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NCONF; i++) {
            conf *c = &confs[i];
            keep_best(&c->ref, run_one(IMPL_REF, IMPL_REF, c->bare, c->ref_count, c->size, src));
            keep_best(&c->tm2, run_one(IMPL_TM2, IMPL_TM2, c->bare, c->tm2_count, c->size, src));
        }
        keep_best(&to_ref, run_one(IMPL_TM2, IMPL_REF, false, confs[1].ref_count, confs[1].size, src));
        keep_best(&from_ref, run_one(IMPL_REF, IMPL_TM2, false, confs[1].ref_count, confs[1].size, src));
    }
    for (int i = 0; i < NCONF; i++)
        print_pair(confs[i].name, confs[i].ref, confs[i].tm2);
    print_side("mixed_mconn_64KiB", "tm2p2p_to_reference", to_ref);
    print_side("mixed_mconn_64KiB", "reference_to_tm2p2p", from_ref);
    free(src);
    return 0;
}
