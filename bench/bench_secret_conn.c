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
 *
 * Throughput figures are payload bytes (1024 per frame), MB = 10^6 bytes.
 * Each ratio compares rounds interleaved with its reference and keeps the
 * best of each, so a busy machine skews both alike. */
#include <inttypes.h>
#include <pthread.h>
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

#include "conn/secret_conn.h"
#include "net/sc_stream.h"

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

/* ---- loopback TCP ----------------------------------------------------------- */

#define LB_BYTES (2048ull * 1024 * 1024)
#define LB_WRITE (1024u * 1024u)

typedef struct side {
    uv_loop_t loop;
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
    if (status || uv_accept(server, (uv_stream_t *)tm2__sc_stream_tcp(&sd->s)) ||
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
        if (uv_loop_init(&sd->loop) || tm2__sc_loop_init(&sd->lp, &sd->loop) ||
            tm2__sc_stream_init(&sd->s, &sd->lp, NULL, i ? &tx_cbs : &rx_cbs))
            DIE("loop setup");
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
    if (uv_tcp_connect(&tx_side.creq, tm2__sc_stream_tcp(&tx_side.s), (const struct sockaddr *)&a,
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

/* ---- main ------------------------------------------------------------------- */

int main(void)
{
    if (sodium_init() < 0)
        DIE("sodium_init");
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

    loopback();

    free(plain_frames);
    free(sealed_frames);
    free(out_frames);
    free(sc_plain);
    free(sc_wire);
    free(sc_out);
    return 0;
}
