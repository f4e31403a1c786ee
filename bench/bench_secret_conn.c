/* Secret connection throughput and handshake rate against their physical
 * limits, measured in the same run:
 *
 *   sc_seal / sc_open        in-memory tm2__sc_seal / tm2__sc_open, payload MB/s,
 *                            vs the fastest raw ChaCha20-Poly1305 available
 *                            (libsodium, and libcrypto when built with it) on
 *                            the same 1028-byte frames over the same buffers
 *   sc_handshake             full handshakes per second, both sides in this
 *                            thread, in memory, vs the bare public-key work
 *                            (per side: X25519 keygen + agreement, Ed25519
 *                            sign + verify)
 *   sc_loopback_*            one secret connection over loopback TCP, one
 *                            direction, sender and receiver on their own loop
 *                            threads; CPU seconds per GiB per side
 *   sc_handshakes_per_s_*    a storm: STORM loopback TCP connections are set
 *                            up first (not timed), then both ends start every
 *                            handshake at once, each end on its own loop
 *                            thread; handshakes completed (both sides) per
 *                            second with the handshake crypto on 1 and on 2
 *                            worker threads; sc_handshake_2core_ratio is the
 *                            median over STORM_PAIRS interleaved pairs of
 *                            the 2-worker rate over the 1-worker rate, and
 *                            pk_2thread_ratio the same for the bare
 *                            public-key work on 2 threads over 1: what this
 *                            machine's cores give pure computation, the
 *                            storm's ceiling
 *   sc_storm_cpus_1w, _2w    CPUs the process kept busy during those storms
 *                            (medians): with one worker, what the loops
 *                            (TCP writes, reads, wake-ups) take beside it;
 *                            with two, that share comes out of theirs
 *   sc_storm_worker_us_*,    CPU time per handshake side of the workers and
 *   sc_storm_loop_us_*       of the two loop threads (Linux schedstat)
 *   sc_storm_2cpu_bound_ratio what two CPUs allow at those costs: one worker
 *                            does a side per worker_us_1w, two CPUs one per
 *                            worker_us_2w + loop_us_2w (median of pairs)
 *   sc_storm_loop_stall_ms   the longest time the accepting end's loop thread
 *                            went without polling its sockets during such a
 *                            storm, crypto inline on the loop ("before") and
 *                            on the pool (one worker per CPU)
 *
 * Throughput figures are payload bytes (1024 per frame), MB = 10^6 bytes.
 * Each ratio compares rounds interleaved with its reference and keeps the
 * best of each (the 2-core ratios: the median of pairs), so a busy machine
 * skews both alike. */
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <sodium.h>
#include <uv.h>

#if defined(TM2_HAVE_OPENSSL)
#include <openssl/evp.h>
#endif

#include <stdatomic.h>

#include "common/thread.h"
#include "conn/secret_conn.h"
#include "net/engine_uv.h"
#include "net/sc_stream.h"
#include "net/sc_stream_uv.h"
#include "net/workpool.h"

#define FRAME TM2__SC_FRAME_SIZE
#define PLAIN TM2__FRAME_PLAIN
#define NFRAMES 248                      /* frames per buffer pass (~259 KB) */
#define CHUNK_FRAMES 62                  /* frames per seal call, as the stream does */
#define ROUNDS 7
#define ROUND_SEC 0.25

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double thread_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint8_t key32[32];
static uint8_t *plain_frames;   /* NFRAMES plaintext frames */
static uint8_t *sealed_frames;  /* NFRAMES sealed frames, nonce = index */
static uint8_t *out_frames;     /* NFRAMES frame slots */

static void nonce_of(uint64_t i, uint8_t n[12]) { tm2__sc_nonce(i, n); }

/* ---- raw AEAD: frames per second ------------------------------------------- */

typedef double (*round_fn)(double secs);

static double raw_sodium_seal(double secs)
{
    uint8_t n[12];
    uint64_t frames = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < NFRAMES; i++) {
            nonce_of((uint64_t)i, n);
            crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                out_frames + (size_t)i * FRAME, out_frames + (size_t)i * FRAME + PLAIN, NULL,
                plain_frames + (size_t)i * PLAIN, PLAIN, NULL, 0, NULL, n, key32);
        }
        frames += NFRAMES;
    } while ((t = now_s() - t0) < secs);
    return (double)frames / t;
}

static double raw_sodium_open(double secs)
{
    uint8_t n[12];
    uint64_t frames = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < NFRAMES; i++) {
            nonce_of((uint64_t)i, n);
            if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                    out_frames + (size_t)i * FRAME, NULL, sealed_frames + (size_t)i * FRAME, PLAIN,
                    sealed_frames + (size_t)i * FRAME + PLAIN, NULL, 0, n, key32) != 0)
                DIE("raw libsodium open failed");
        }
        frames += NFRAMES;
    } while ((t = now_s() - t0) < secs);
    return (double)frames / t;
}

#if defined(TM2_HAVE_OPENSSL)
static EVP_CIPHER_CTX *ossl;

static double raw_ossl_seal(double secs)
{
    uint8_t n[12];
    uint64_t frames = 0;
    int l1, l2;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < NFRAMES; i++) {
            uint8_t *o = out_frames + (size_t)i * FRAME;
            nonce_of((uint64_t)i, n);
            if (EVP_CipherInit_ex(ossl, NULL, NULL, NULL, n, 1) != 1 ||
                EVP_CipherUpdate(ossl, o, &l1, plain_frames + (size_t)i * PLAIN, PLAIN) != 1 ||
                EVP_CipherFinal_ex(ossl, o + l1, &l2) != 1 ||
                EVP_CIPHER_CTX_ctrl(ossl, EVP_CTRL_AEAD_GET_TAG, 16, o + PLAIN) != 1)
                DIE("raw libcrypto seal failed");
        }
        frames += NFRAMES;
    } while ((t = now_s() - t0) < secs);
    return (double)frames / t;
}

static double raw_ossl_open(double secs)
{
    uint8_t n[12];
    uint64_t frames = 0;
    int l1, l2;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < NFRAMES; i++) {
            const uint8_t *c = sealed_frames + (size_t)i * FRAME;
            nonce_of((uint64_t)i, n);
            if (EVP_CipherInit_ex(ossl, NULL, NULL, NULL, n, 0) != 1 ||
                EVP_CipherUpdate(ossl, out_frames + (size_t)i * FRAME, &l1, c, PLAIN) != 1 ||
                EVP_CIPHER_CTX_ctrl(ossl, EVP_CTRL_AEAD_SET_TAG, 16, (void *)(c + PLAIN)) != 1 ||
                EVP_CipherFinal_ex(ossl, out_frames + (size_t)i * FRAME + l1, &l2) != 1)
                DIE("raw libcrypto open failed");
        }
        frames += NFRAMES;
    } while ((t = now_s() - t0) < secs);
    return (double)frames / t;
}
#endif

/* ---- the session: frames per second ---------------------------------------- */

static tm2__sc A, B;
static uint8_t *sc_plain;       /* CHUNK_FRAMES * 1024 payload bytes */
static uint8_t *sc_wire;        /* NFRAMES sealed frames from A at counters WIRE_CTR.. */
static uint8_t *sc_out;         /* 64 KiB of opened plaintext, as the stream uses */
#define WIRE_CTR 1000u
#define OPEN_OUT (64u * 1024u)

static void hs_pair(tm2__sc *a, tm2__sc *b, const tm2_node_key *ka, const tm2_node_key *kb)
{
    uint8_t buf[2 * FRAME];
    size_t used, n;
    if (tm2__sc_init(a, ka, NULL) || tm2__sc_init(b, kb, NULL))
        DIE("init failed");
    n = tm2__sc_hs_output(a, buf, sizeof buf);
    if (tm2__sc_hs_input(b, buf, n, &used) != TM2_EAGAIN)
        DIE("handshake b1");
    n = tm2__sc_hs_output(b, buf, sizeof buf);
    if (tm2__sc_hs_input(a, buf, n, &used) != 0)
        DIE("handshake a");
    n = tm2__sc_hs_output(a, buf, sizeof buf);
    if (tm2__sc_hs_input(b, buf, n, &used) != 0)
        DIE("handshake b2");
}

static double sc_seal_round(double secs)
{
    uint64_t frames = 0;
    size_t used;
    double t0 = now_s(), t;
    do {
        for (int k = 0; k < NFRAMES / CHUNK_FRAMES; k++) {
            int w = tm2__sc_seal(&A, sc_plain, CHUNK_FRAMES * TM2__SC_DATA_MAX, &used,
                                 out_frames + (size_t)k * CHUNK_FRAMES * FRAME,
                                 (size_t)CHUNK_FRAMES * FRAME);
            if (w != CHUNK_FRAMES * FRAME)
                DIE("sc seal failed: %d", w);
        }
        frames += NFRAMES;
    } while ((t = now_s() - t0) < secs);
    return (double)frames / t;
}

static double sc_open_round(double secs)
{
    uint64_t frames = 0;
    double t0 = now_s(), t;
    do {
        tm2__sc_set_nonces(&B, B.send_ctr, WIRE_CTR);
        size_t off = 0, total = (size_t)NFRAMES * FRAME;
        while (off < total) {
            size_t used;
            int r = tm2__sc_open(&B, sc_wire + off, total - off, &used, sc_out, OPEN_OUT);
            if (r < 0)
                DIE("sc open failed: %d", r);
            off += used;
        }
        frames += NFRAMES;
    } while ((t = now_s() - t0) < secs);
    return (double)frames / t;
}

/* Best of ROUNDS for each function, rounds interleaved. */
static void best_of(round_fn *fns, double *best, int n)
{
    for (int i = 0; i < n; i++)
        best[i] = 0;
    for (int r = 0; r < ROUNDS; r++)
        for (int i = 0; i < n; i++) {
            double v = fns[i](ROUND_SEC);
            if (v > best[i])
                best[i] = v;
        }
}

static double mbps(double frames_per_s) { return frames_per_s * TM2__SC_DATA_MAX / 1e6; }

/* ---- handshakes ------------------------------------------------------------- */

static tm2_node_key hk_a, hk_b;

static double hs_round(double secs)
{
    uint64_t n = 0;
    double t0 = now_s(), t;
    do {
        tm2__sc a, b;
        hs_pair(&a, &b, &hk_a, &hk_b);
        tm2__sc_close(&a);
        tm2__sc_close(&b);
        n++;
    } while ((t = now_s() - t0) < secs);
    return (double)n / t;
}

/* The public-key work of one handshake, both sides. */
static double pk_round(double secs)
{
    uint64_t n = 0;
    uint8_t priv[2][32], pub[2][32], dh[32], msg[32], sig[64];
    uint8_t pk[2][32], sk[2][64];
    crypto_sign_keypair(pk[0], sk[0]);
    crypto_sign_keypair(pk[1], sk[1]);
    randombytes_buf(msg, sizeof msg);
    double t0 = now_s(), t;
    do {
        for (int side = 0; side < 2; side++) {
            randombytes_buf(priv[side], 32);
            if (crypto_scalarmult_base(pub[side], priv[side]) != 0)
                DIE("keygen");
        }
        for (int side = 0; side < 2; side++) {
            if (crypto_scalarmult(dh, priv[side], pub[1 - side]) != 0)
                DIE("dh");
            msg[0] ^= dh[0];
            crypto_sign_detached(sig, NULL, msg, sizeof msg, sk[side]);
            if (crypto_sign_verify_detached(sig, msg, sizeof msg, pk[side]) != 0)
                DIE("verify");
        }
        n++;
    } while ((t = now_s() - t0) < secs);
    return (double)n / t;
}

/* PK_BATCH handshakes' public-key work on each of n threads at once;
 * returns handshakes per second over all of them. */
#define PK_BATCH 400

static void *pk_batch(void *arg)
{
    (void)arg;
    uint8_t priv[32], pub[32], dh[32], msg[32] = {1}, sig[64], pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    for (int i = 0; i < 2 * PK_BATCH; i++) {
        randombytes_buf(priv, sizeof priv);
        if (crypto_scalarmult_base(pub, priv) != 0 || crypto_scalarmult(dh, priv, pub) != 0)
            DIE("dh");
        msg[0] ^= dh[0];
        crypto_sign_detached(sig, NULL, msg, sizeof msg, sk);
        if (crypto_sign_verify_detached(sig, msg, sizeof msg, pk) != 0)
            DIE("verify");
    }
    return NULL;
}

static double pk_threads(int n)
{
    pthread_t th[2];
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, pk_batch, NULL))
            DIE("pthread_create");
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    return (double)n * PK_BATCH / (now_s() - t0);
}

/* ---- loopback TCP ----------------------------------------------------------- */

#define LB_BYTES (2048ull * 1024 * 1024)
#define LB_WRITE (1024u * 1024u)

typedef struct side {
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__sc_loop lp;
    tm2__sc_stream s;
    tm2_node_key key;
    uv_tcp_t listener;
    uv_connect_t creq;
    int port;
    uint64_t bytes;
    double t_first, t_end, cpu;
    int err;
    const uint8_t *src;
} side;

static side rx_side, tx_side;

static void lb_close_all(side *sd)
{
    tm2__sc_stream_close(&sd->s);
    if (sd->listener.loop && !uv_is_closing((uv_handle_t *)&sd->listener))
        uv_close((uv_handle_t *)&sd->listener, NULL);
}

static void lb_on_close(tm2__sc_stream *s)
{
    side *sd = s->data;
    tm2__sc_loop_close(&sd->lp);
    tm2__uv_engine_close(&sd->ue);
}

static void lb_rx_handshake(tm2__sc_stream *s, int err)
{
    side *sd = s->data;
    if (err)
        DIE("loopback handshake (receiver): %s", tm2_strerror(err));
    sd->t_first = now_s();
}

static void lb_rx_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    (void)data;
    side *sd = s->data;
    sd->bytes += len;
    if (sd->bytes >= LB_BYTES) {
        sd->t_end = now_s();
        lb_close_all(sd);
    }
}

static void lb_error(tm2__sc_stream *s, int err)
{
    side *sd = s->data;
    sd->err = err;
    lb_close_all(sd);
}

static void lb_pump(side *sd)
{
    while (sd->bytes < LB_BYTES) {
        int r = tm2__sc_stream_write(&sd->s, sd->src, LB_WRITE);
        if (r == TM2_EFULL)
            return;
        if (r)
            DIE("loopback write: %s", tm2_strerror(r));
        sd->bytes += LB_WRITE;
    }
}

static void lb_tx_handshake(tm2__sc_stream *s, int err)
{
    if (err)
        DIE("loopback handshake (sender): %s", tm2_strerror(err));
    lb_pump(s->data);
}

static void lb_tx_writable(tm2__sc_stream *s) { lb_pump(s->data); }

static void lb_accept(uv_stream_t *server, int status)
{
    side *sd = server->data;
    if (status || uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(&sd->s)) ||
        tm2__sc_stream_start(&sd->s, &sd->key, NULL))
        DIE("accept");
    uv_close((uv_handle_t *)&sd->listener, NULL);
}

static void lb_connected(uv_connect_t *req, int status)
{
    side *sd = req->data;
    if (status || tm2__sc_stream_start(&sd->s, &sd->key, NULL))
        DIE("connect");
}

static void *lb_thread(void *arg)
{
    side *sd = arg;
    double c0 = thread_cpu_s();
    uv_run(&sd->loop, UV_RUN_DEFAULT);
    sd->cpu = thread_cpu_s() - c0;
    return NULL;
}

static void loopback(void)
{
    static const tm2__sc_stream_cbs rx_cbs = {
        .on_handshake = lb_rx_handshake, .on_read = lb_rx_read, .on_error = lb_error,
        .on_close = lb_on_close};
    static const tm2__sc_stream_cbs tx_cbs = {
        .on_handshake = lb_tx_handshake, .on_error = lb_error, .on_writable = lb_tx_writable,
        .on_close = lb_on_close};
    uint8_t *src = malloc(LB_WRITE);
    if (!src)
        DIE("oom");
    randombytes_buf(src, LB_WRITE);
    side *sides[2] = {&rx_side, &tx_side};
    for (int i = 0; i < 2; i++) {
        side *sd = sides[i];
        if (uv_loop_init(&sd->loop) || tm2__uv_engine_init(&sd->ue, &sd->loop) ||
            tm2__sc_loop_init(&sd->lp, &sd->ue.e))
            DIE("loop setup");
        tm2__sc_stream_init(&sd->s, &sd->lp, NULL, i ? &tx_cbs : &rx_cbs);
        sd->s.data = sd;
        sd->src = src;
        tm2_node_key_generate(&sd->key);
    }
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&rx_side.loop, &rx_side.listener);
    rx_side.listener.data = &rx_side;
    if (uv_tcp_bind(&rx_side.listener, (const struct sockaddr *)&a, 0) ||
        uv_listen((uv_stream_t *)&rx_side.listener, 4, lb_accept))
        DIE("listen");
    int alen = sizeof a;
    uv_tcp_getsockname(&rx_side.listener, (struct sockaddr *)&a, &alen);
    tx_side.creq.data = &tx_side;
    if (uv_tcp_connect(&tx_side.creq, tm2__sc_stream_uv_tcp(&tx_side.s), (const struct sockaddr *)&a,
                       lb_connected))
        DIE("connect");

    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, lb_thread, sides[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    getrusage(RUSAGE_SELF, &r1);
    for (int i = 0; i < 2; i++)
        uv_loop_close(&sides[i]->loop);
    if (rx_side.bytes < LB_BYTES)
        DIE("loopback receiver got %" PRIu64 " bytes (%s)", rx_side.bytes, tm2_strerror(rx_side.err));

    double secs = rx_side.t_end - rx_side.t_first;
    double gib = (double)rx_side.bytes / (1024.0 * 1024 * 1024);
    double proc = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec -
                           r0.ru_stime.tv_sec) +
                  (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec -
                           r0.ru_stime.tv_usec) * 1e-6;
    printf("sc_loopback_tcp: %.0f MB/s\n", (double)rx_side.bytes / secs / 1e6);
    printf("sc_loopback_sender_cpu: %.3f s/GiB\n", tx_side.cpu / gib);
    printf("sc_loopback_receiver_cpu: %.3f s/GiB\n", rx_side.cpu / gib);
    printf("sc_loopback_process_cpu: %.3f s/GiB\n", proc / gib);
    free(src);
}

/* ---- handshake storm ---------------------------------------------------------- */

#define STORM 1000
#define STORM_ROUNDS 3
#define STORM_PAIRS 9

typedef struct storm_side {
    uv_loop_t loop;
    tm2__uv_engine ue;
    tm2__sc_loop lp;
    tm2__sc_stream *s;          /* STORM streams */
    tm2_node_key key;
    uv_tcp_t listener;
    uv_async_t go, finish;
    uv_prepare_t prep;
    uint64_t t_prep, t_idle, max_stall;  /* ns */
    bool measuring;
    int accepted, connected, done, closed;
    bool server;
} storm_side;

static storm_side st_srv, st_cli;
static atomic_int st_ready, st_done;
static uint64_t st_t0, st_t1, st_c0, st_c1;   /* wall, and the process's CPU time */
static uv_connect_t st_creq[STORM];

/* CPU time the process's threads named prefix* have had, from
 * /proc/self/task/<tid>/schedstat; 0 where the kernel keeps none. */
static uint64_t named_threads_ns(const char *prefix)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    uint64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], comm[32] = "";
        unsigned long long run = 0;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        bool match = fgets(comm, sizeof comm, f) && strncmp(comm, prefix, strlen(prefix)) == 0;
        fclose(f);
        snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
        if (match && (f = fopen(path, "r")) != NULL) {
            if (fscanf(f, "%llu", &run) == 1)
                sum += run;
            fclose(f);
        }
    }
    closedir(d);
    return sum;
}

typedef struct {
    uint64_t worker, loop;   /* ns */
} storm_cpu;

static storm_cpu storm_cpu_now(void)
{
    return (storm_cpu){named_threads_ns("tm2p2p-hs"), named_threads_ns("storm-")};
}

static storm_cpu st_th0, st_th1;   /* at the storm's start and end */

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Runs just before the loop polls: the time since the last poll began, less
 * the time spent blocked in it, is how long the loop went without looking at
 * its sockets (callbacks, timers, and waiting for a CPU). */
static void st_prep(uv_prepare_t *h)
{
    storm_side *sd = h->data;
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(&sd->loop);
    uint64_t busy = now - sd->t_prep - (idle - sd->t_idle);
    if (sd->measuring && sd->t_prep && busy > sd->max_stall)
        sd->max_stall = busy;
    sd->t_prep = now;
    sd->t_idle = idle;
}

static void st_ready_one(void)
{
    if (atomic_fetch_add(&st_ready, 1) + 1 == 2 * STORM) {
        uv_async_send(&st_srv.go);
        uv_async_send(&st_cli.go);
    }
}

static void st_on_hs(tm2__sc_stream *s, int err)
{
    storm_side *sd = s->data;
    if (err)
        DIE("storm handshake (%s): %s", sd->server ? "server" : "client", tm2_strerror(err));
    sd->done++;
    if (atomic_fetch_add(&st_done, 1) + 1 == 2 * STORM) {
        st_t1 = uv_hrtime();
        st_c1 = cpu_ns();
        st_th1 = storm_cpu_now();
        uv_async_send(&st_srv.finish);
        uv_async_send(&st_cli.finish);
    }
}

static void st_on_error(tm2__sc_stream *s, int err)
{
    (void)s;
    (void)err;   /* the other end closing first: nothing to do */
}

static void st_async_closed(uv_handle_t *h) { (void)h; }

static void st_on_close(tm2__sc_stream *s)
{
    storm_side *sd = s->data;
    if (++sd->closed == STORM) {
        tm2__sc_loop_close(&sd->lp);
        tm2__uv_engine_close(&sd->ue);
        uv_close((uv_handle_t *)&sd->go, st_async_closed);
        uv_close((uv_handle_t *)&sd->finish, st_async_closed);
        uv_close((uv_handle_t *)&sd->prep, NULL);
    }
}

static void st_go(uv_async_t *a)
{
    storm_side *sd = a->data;
    if (sd->server)
        st_th0 = storm_cpu_now(), st_t0 = uv_hrtime(), st_c0 = cpu_ns();
    sd->measuring = true;
    for (int i = 0; i < STORM; i++)
        if (tm2__sc_stream_start(&sd->s[i], &sd->key, NULL))
            DIE("storm start");
}

static void st_finish(uv_async_t *a)
{
    storm_side *sd = a->data;
    sd->measuring = false;
    for (int i = 0; i < STORM; i++)
        tm2__sc_stream_close(&sd->s[i]);
}

static void st_accept(uv_stream_t *server, int status)
{
    storm_side *sd = server->data;
    if (status || uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(&sd->s[sd->accepted])))
        DIE("storm accept");
    if (++sd->accepted == STORM)
        uv_close((uv_handle_t *)&sd->listener, NULL);
    st_ready_one();
}

static void st_connected(uv_connect_t *req, int status)
{
    if (status)
        DIE("storm connect: %s", uv_strerror(status));
    st_cli.connected++;
    (void)req;
    st_ready_one();
}

static void *st_thread(void *arg)
{
    storm_side *sd = arg;
    tm2__thread_name(pthread_self(), sd->server ? "storm-srv" : "storm-cli");
    uv_run(&sd->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* CPUs the process kept busy during the last storm's timed part, and the
 * workers' and loops' CPU microseconds per handshake side. */
static double st_cpus, st_worker_us, st_loop_us;

/* One storm with the pool configured to workers threads (< 0: inline).
 * Returns handshakes (both sides) per second; *stall_ms is the accepting
 * end's longest loop stall. */
static double storm(int workers, double *stall_ms)
{
    static const tm2__sc_stream_cbs cbs = {
        .on_handshake = st_on_hs, .on_error = st_on_error, .on_close = st_on_close};
    tm2__sc_stream_config cfg = {.handshake_timeout_ms = 60000};
    tm2__wpool_configure(workers);
    atomic_store(&st_ready, 0);
    atomic_store(&st_done, 0);
    storm_side *sides[2] = {&st_srv, &st_cli};
    for (int i = 0; i < 2; i++) {
        storm_side *sd = sides[i];
        tm2__sc_stream *streams = sd->s ? sd->s : calloc(STORM, sizeof *streams);
        tm2_node_key key = sd->key;
        memset(sd, 0, sizeof *sd);
        sd->s = streams;
        sd->key = key;
        sd->server = i == 0;
        if (!sd->s || uv_loop_init(&sd->loop) || tm2__uv_engine_init(&sd->ue, &sd->loop) ||
            tm2__sc_loop_init(&sd->lp, &sd->ue.e))
            DIE("storm setup");
        uv_loop_configure(&sd->loop, UV_METRICS_IDLE_TIME);
        uv_async_init(&sd->loop, &sd->go, st_go);
        uv_async_init(&sd->loop, &sd->finish, st_finish);
        uv_prepare_init(&sd->loop, &sd->prep);
        sd->go.data = sd->finish.data = sd->prep.data = sd;
        uv_prepare_start(&sd->prep, st_prep);
        for (int k = 0; k < STORM; k++) {
            tm2__sc_stream_init(&sd->s[k], &sd->lp, &cfg, &cbs);
            sd->s[k].data = sd;
        }
    }
    if (workers >= 0 && tm2__wpool_threads() != (unsigned)workers && workers != 0)
        DIE("pool has %u threads, want %d", tm2__wpool_threads(), workers);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&st_srv.loop, &st_srv.listener);
    st_srv.listener.data = &st_srv;
    if (uv_tcp_bind(&st_srv.listener, (const struct sockaddr *)&a, 0) ||
        uv_listen((uv_stream_t *)&st_srv.listener, STORM, st_accept))
        DIE("storm listen");
    int alen = sizeof a;
    uv_tcp_getsockname(&st_srv.listener, (struct sockaddr *)&a, &alen);
    for (int k = 0; k < STORM; k++)
        if (uv_tcp_connect(&st_creq[k], tm2__sc_stream_uv_tcp(&st_cli.s[k]),
                           (const struct sockaddr *)&a, st_connected))
            DIE("storm connect");
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, st_thread, sides[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++)
        if (uv_loop_close(&sides[i]->loop))
            DIE("storm loop close");
    *stall_ms = (double)st_srv.max_stall / 1e6;
    st_cpus = (double)(st_c1 - st_c0) / (double)(st_t1 - st_t0);
    st_worker_us = (double)(st_th1.worker - st_th0.worker) / 1e3 / (2.0 * STORM);
    st_loop_us = (double)(st_th1.loop - st_th0.loop) / 1e3 / (2.0 * STORM);
    return 2.0 * STORM / ((double)(st_t1 - st_t0) / 1e9);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct {
    double rate, cpus, worker_us, loop_us;
} storm_run;

static storm_run storm_with(int workers)
{
    double stall;
    storm_run r = {.rate = storm(workers, &stall)};
    r.cpus = st_cpus, r.worker_us = st_worker_us, r.loop_us = st_loop_us;
    return r;
}

/* The median of one figure (a double at offset off) over the runs. */
static double median_of(const storm_run *runs, size_t off, double *tmp)
{
    for (int r = 0; r < STORM_PAIRS; r++)
        memcpy(&tmp[r], (const char *)&runs[r] + off, sizeof tmp[r]);
    return median(tmp, STORM_PAIRS);
}

/* One worker is busy all the time, so it does a side per worker_us; two
 * CPUs, fully used, do one per worker_us + loop_us of the two-worker run. */
static double cpu_bound(const storm_run *one, const storm_run *two)
{
    double per_side = two->worker_us + two->loop_us;
    return per_side > 0 ? 2.0 * one->worker_us / per_side : 0;
}

/* The machine's speed drifts by tens of percent within seconds on a shared
 * host, so the 2-core ratios come from adjacent pairs, run in alternating
 * order, and their median, not from the best of each side. */
static void storms(void)
{
    tm2_node_key_generate(&st_srv.key);
    tm2_node_key_generate(&st_cli.key);
    storm_run r1[STORM_PAIRS], r2[STORM_PAIRS];
    double ratio[STORM_PAIRS], bound[STORM_PAIRS], pk[STORM_PAIRS], tmp[STORM_PAIRS];
    double st_in[STORM_ROUNDS], st_pool[STORM_ROUNDS];
    for (int r = 0; r < STORM_PAIRS; r++) {
        bool two_first = r % 2;
        double p1, p2;
        if (two_first)
            r2[r] = storm_with(2), p2 = pk_threads(2);
        r1[r] = storm_with(1);
        p1 = pk_threads(1);
        if (!two_first)
            r2[r] = storm_with(2), p2 = pk_threads(2);
        ratio[r] = r2[r].rate / r1[r].rate;
        bound[r] = cpu_bound(&r1[r], &r2[r]);
        pk[r] = p2 / p1;
    }
    for (int r = 0; r < STORM_ROUNDS; r++) {
        storm(-1, &st_in[r]);
        storm(0, &st_pool[r]);
    }
    tm2__wpool_configure(0);
#define MEDIAN(runs, field) median_of(runs, offsetof(storm_run, field), tmp)
    printf("sc_handshakes_per_s_1w: %.0f\n", MEDIAN(r1, rate));
    printf("sc_handshakes_per_s_2w: %.0f\n", MEDIAN(r2, rate));
    printf("sc_handshake_2core_ratio: %.3f\n", median(ratio, STORM_PAIRS));
    printf("pk_2thread_ratio: %.3f\n", median(pk, STORM_PAIRS));
    printf("sc_storm_cpus_1w: %.2f CPUs\n", MEDIAN(r1, cpus));
    printf("sc_storm_cpus_2w: %.2f CPUs\n", MEDIAN(r2, cpus));
    if (r1[0].worker_us > 0) {
        printf("sc_storm_worker_us_1w: %.1f us\n", MEDIAN(r1, worker_us));
        printf("sc_storm_worker_us_2w: %.1f us\n", MEDIAN(r2, worker_us));
        printf("sc_storm_loop_us_1w: %.1f us\n", MEDIAN(r1, loop_us));
        printf("sc_storm_loop_us_2w: %.1f us\n", MEDIAN(r2, loop_us));
        printf("sc_storm_2cpu_bound_ratio: %.3f\n", median(bound, STORM_PAIRS));
    }
#undef MEDIAN
    printf("sc_storm_loop_stall_ms_inline: %.2f\n", median(st_in, STORM_ROUNDS));
    printf("sc_storm_loop_stall_ms: %.2f\n", median(st_pool, STORM_ROUNDS));
    fflush(stdout);
    for (int i = 0; i < 2; i++)
        free((i ? &st_cli : &st_srv)->s);
}

/* ---- main ------------------------------------------------------------------- */

/* "bench_secret_conn storm" runs the handshake storms only. */
int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        DIE("sodium_init");
    if (argc > 1 && strcmp(argv[1], "storm") == 0) {
        storms();
        return 0;
    }
    plain_frames = malloc((size_t)NFRAMES * PLAIN);
    sealed_frames = malloc((size_t)NFRAMES * FRAME);
    out_frames = malloc((size_t)NFRAMES * FRAME);
    sc_plain = malloc((size_t)CHUNK_FRAMES * TM2__SC_DATA_MAX);
    sc_wire = malloc((size_t)NFRAMES * FRAME);
    sc_out = malloc(OPEN_OUT);
    if (!plain_frames || !sealed_frames || !out_frames || !sc_plain || !sc_wire || !sc_out)
        DIE("oom");
    randombytes_buf(key32, sizeof key32);
    randombytes_buf(sc_plain, (size_t)CHUNK_FRAMES * TM2__SC_DATA_MAX);
    for (int i = 0; i < NFRAMES; i++) {
        uint8_t *p = plain_frames + (size_t)i * PLAIN, n[12];
        p[0] = 0x00;
        p[1] = 0x04;   /* full frames: length 1024 */
        p[2] = p[3] = 0;
        randombytes_buf(p + 4, TM2__SC_DATA_MAX);
        nonce_of((uint64_t)i, n);
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            sealed_frames + (size_t)i * FRAME, sealed_frames + (size_t)i * FRAME + PLAIN, NULL, p,
            PLAIN, NULL, 0, NULL, n, key32);
    }

    tm2_node_key ka, kb;
    tm2_node_key_generate(&ka);
    tm2_node_key_generate(&kb);
    hs_pair(&A, &B, &ka, &kb);
    tm2__sc_set_nonces(&A, WIRE_CTR, A.recv_ctr);
    for (int k = 0; k < NFRAMES / CHUNK_FRAMES; k++) {
        size_t used;
        if (tm2__sc_seal(&A, sc_plain, CHUNK_FRAMES * TM2__SC_DATA_MAX, &used,
                         sc_wire + (size_t)k * CHUNK_FRAMES * FRAME,
                         (size_t)CHUNK_FRAMES * FRAME) != CHUNK_FRAMES * FRAME)
            DIE("wire seal");
    }

    printf("aead_backend: %s\n", tm2__aead_backend());
#if defined(TM2_HAVE_OPENSSL)
    ossl = EVP_CIPHER_CTX_new();
    if (!ossl || EVP_CipherInit_ex(ossl, EVP_chacha20_poly1305(), NULL, key32, NULL, 1) != 1)
        DIE("libcrypto setup");
    round_fn seal_fns[] = {raw_sodium_seal, raw_ossl_seal, sc_seal_round};
    round_fn open_fns[] = {raw_sodium_open, raw_ossl_open, sc_open_round};
    const int nraw = 2;
#else
    round_fn seal_fns[] = {raw_sodium_seal, sc_seal_round};
    round_fn open_fns[] = {raw_sodium_open, sc_open_round};
    const int nraw = 1;
#endif
    double sb[3], ob[3];
    best_of(seal_fns, sb, nraw + 1);
    best_of(open_fns, ob, nraw + 1);
    double raw_seal = 0, raw_open = 0;
    for (int i = 0; i < nraw; i++) {
        raw_seal = sb[i] > raw_seal ? sb[i] : raw_seal;
        raw_open = ob[i] > raw_open ? ob[i] : raw_open;
    }
    printf("raw_libsodium_seal: %.0f MB/s\n", mbps(sb[0]));
    printf("raw_libsodium_open: %.0f MB/s\n", mbps(ob[0]));
#if defined(TM2_HAVE_OPENSSL)
    printf("raw_openssl_seal: %.0f MB/s\n", mbps(sb[1]));
    printf("raw_openssl_open: %.0f MB/s\n", mbps(ob[1]));
    EVP_CIPHER_CTX_free(ossl);
#endif
    printf("raw_best_seal: %.0f MB/s\n", mbps(raw_seal));
    printf("raw_best_open: %.0f MB/s\n", mbps(raw_open));
    printf("sc_seal: %.0f MB/s\n", mbps(sb[nraw]));
    printf("sc_open: %.0f MB/s\n", mbps(ob[nraw]));
    printf("sc_seal_ratio: %.3f\n", sb[nraw] / raw_seal);
    printf("sc_open_ratio: %.3f\n", ob[nraw] / raw_open);
    fflush(stdout);
    tm2__sc_close(&A);
    tm2__sc_close(&B);

    tm2_node_key_generate(&hk_a);
    tm2_node_key_generate(&hk_b);
    round_fn hs_fns[] = {pk_round, hs_round};
    double hb[2];
    best_of(hs_fns, hb, 2);
    printf("pk_ops_bound: %.0f handshakes/s\n", hb[0]);
    printf("sc_handshake: %.0f handshakes/s\n", hb[1]);
    printf("sc_handshake_ratio: %.3f\n", hb[1] / hb[0]);
    fflush(stdout);

    storms();
    loopback();

    free(plain_frames);
    free(sealed_frames);
    free(out_frames);
    free(sc_plain);
    free(sc_wire);
    free(sc_out);
    return 0;
}
