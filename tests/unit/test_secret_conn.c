#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "conn/secret_conn.h"
#include "crypto/aead.h"
#include "crypto/hkdf.h"
#include "tm2p2p/key.h"
#include "tv.h"

#define GOLDEN "secret_conn_derive_golden.txt"
#define UPV "upstream_secret_conn_vectors.txt"
#define TR "derived_handshake_transcript.txt"
#define FRAME TM2__SC_FRAME_SIZE

/* ---- helpers ----------------------------------------------------------------- */

static void fill32(uint8_t b[32], uint8_t v) { memset(b, v, 32); }

static void get32(const char *file, const char *name, uint8_t out[32])
{
    char *v = tv_get(file, name);
    tv_hex(v, out, 32);
    free(v);
}

static void node_key(tm2_node_key *k, uint8_t seed_byte)
{
    uint8_t seed[32];
    fill32(seed, seed_byte);
    tm2_node_key_from_seed(k, seed);
}

/* Moves every pending handshake byte of a into b's input, in pieces of at
 * most chunk bytes (0: random piece sizes). Returns the last hs_input code. */
static int pump(tm2__sc *from, tm2__sc *to, size_t chunk)
{
    uint8_t buf[2048];
    size_t n = tm2__sc_hs_output(from, buf, sizeof buf);
    int r = tm2__sc_established(to) ? 0 : TM2_EAGAIN;
    size_t off = 0;
    while (off < n) {
        size_t k = chunk ? chunk : 1 + randombytes_uniform(300);
        if (k > n - off)
            k = n - off;
        size_t used;
        r = tm2__sc_hs_input(to, buf + off, k, &used);
        if (r != 0 && r != TM2_EAGAIN)
            return r;
        assert_int_equal(used, k);   /* nothing follows the handshake here */
        off += k;
    }
    return r;
}

/* Full in-memory handshake between a and b. */
static void handshake(tm2__sc *a, tm2__sc *b, size_t chunk)
{
    int ra = TM2_EAGAIN, rb = TM2_EAGAIN;
    for (int round = 0; round < 4 && (ra || rb); round++) {
        rb = pump(a, b, chunk);
        ra = pump(b, a, chunk);
        assert_true(ra == 0 || ra == TM2_EAGAIN);
        assert_true(rb == 0 || rb == TM2_EAGAIN);
    }
    assert_int_equal(ra, 0);
    assert_int_equal(rb, 0);
    assert_true(tm2__sc_established(a));
    assert_true(tm2__sc_established(b));
    assert_int_equal(tm2__sc_hs_pending(a), 0);
    assert_int_equal(tm2__sc_hs_pending(b), 0);
}

/* Opens everything in wire with s, in pieces, into out; returns plaintext
 * length or the first error. */
static int open_all(tm2__sc *s, const uint8_t *wire, size_t len, size_t piece, uint8_t *out,
                    size_t out_cap, size_t out_step)
{
    size_t off = 0, w = 0;
    while (off < len) {
        size_t k = piece ? piece : 1 + randombytes_uniform(5000);
        if (k > len - off)
            k = len - off;
        size_t sub = 0;
        while (sub < k) {
            size_t room = out_step ? out_step : 1 + randombytes_uniform(3000);
            if (room > out_cap - w)
                room = out_cap - w;
            size_t used;
            int r = tm2__sc_open(s, wire + off + sub, k - sub, &used, out + w, room);
            if (r < 0)
                return r;
            w += (size_t)r;
            sub += used;
            assert_true(used > 0 || r > 0 || room == 0);
        }
        off += k;
    }
    /* Plaintext still pending from the last frame. */
    while (tm2__sc_open_pending(s)) {
        size_t used;
        int r = tm2__sc_open(s, NULL, 0, &used, out + w, out_cap - w);
        assert_true(r > 0);
        w += (size_t)r;
    }
    return (int)w;
}

/* A peer played by hand with fixed keys, to send crafted frames. */
typedef struct manual_peer {
    uint8_t eph_priv[32], eph_pub[32];
    uint8_t recv_key[32], send_key[32], challenge[32];
    tm2__aead send;
    uint64_t ctr;
} manual_peer;

static void mp_init(manual_peer *m, uint8_t eph_byte, const uint8_t remote_eph_pub[32])
{
    memset(m, 0, sizeof *m);
    fill32(m->eph_priv, eph_byte);
    assert_int_equal(crypto_scalarmult_base(m->eph_pub, m->eph_priv), 0);
    uint8_t dh[32];
    assert_int_equal(tm2__sc_dh(m->eph_priv, remote_eph_pub, dh), 0);
    tm2__sc_derive(dh, memcmp(m->eph_pub, remote_eph_pub, 32) <= 0, m->recv_key, m->send_key,
                   m->challenge);
    assert_int_equal(tm2__aead_init(&m->send, m->send_key), 0);
}

/* One sealed frame carrying payload with the given length field. */
static void mp_frame(manual_peer *m, const uint8_t *payload, size_t n, uint32_t len_field,
                     uint8_t out[FRAME])
{
    uint8_t plain[TM2__FRAME_PLAIN] = {0};
    plain[0] = (uint8_t)len_field;
    plain[1] = (uint8_t)(len_field >> 8);
    plain[2] = (uint8_t)(len_field >> 16);
    plain[3] = (uint8_t)(len_field >> 24);
    if (n)
        memcpy(plain + 4, payload, n);
    uint8_t nonce[12];
    tm2__sc_nonce(m->ctr++, nonce);
    assert_int_equal(tm2__aead_seal_frame(&m->send, nonce, plain, out), 0);
}

static void mp_eph_msg(const manual_peer *m, uint8_t out[TM2__SC_EPH_MSG_SIZE])
{
    tm2__sc_encode_eph(m->eph_pub, out);
}

/* Local side A (seed 01, eph 03) has consumed the manual peer's key message. */
static void start_vs_manual(tm2__sc *a, manual_peer *m, uint8_t peer_eph_byte)
{
    tm2_node_key ka;
    node_key(&ka, 1);
    uint8_t eph[32];
    fill32(eph, 3);
    assert_int_equal(tm2__sc_init(a, &ka, eph), 0);
    mp_init(m, peer_eph_byte, tm2__sc_local_eph_pub(a));
    uint8_t msg[TM2__SC_EPH_MSG_SIZE];
    mp_eph_msg(m, msg);
    size_t used;
    assert_int_equal(tm2__sc_hs_input(a, msg, sizeof msg, &used), TM2_EAGAIN);
    assert_int_equal(used, sizeof msg);
    uint8_t out[2048];
    assert_int_equal(tm2__sc_hs_output(a, out, sizeof out), TM2__SC_EPH_MSG_SIZE + FRAME);
}

/* The manual peer's auth frame(s) for a node key signing sig_over. */
static void mp_auth_frame(manual_peer *m, const tm2_node_key *claimed, const tm2_node_key *signer,
                          uint8_t out[FRAME])
{
    uint8_t sig[64], msg[TM2__SC_AUTH_MSG_SIZE];
    tm2_node_key_sign(signer, m->challenge, 32, sig);
    tm2__sc_encode_auth(tm2_node_key_pubkey(claimed), sig, msg);
    mp_frame(m, msg, sizeof msg, sizeof msg, out);
}

/* Two established sessions, A and B, with fixed keys. */
static void pair(tm2__sc *a, tm2__sc *b)
{
    tm2_node_key ka, kb;
    node_key(&ka, 1);
    node_key(&kb, 2);
    assert_int_equal(tm2__sc_init(a, &ka, NULL), 0);
    assert_int_equal(tm2__sc_init(b, &kb, NULL), 0);
    handshake(a, b, 0);
}

/* ---- known-answer vectors ------------------------------------------------------ */

static void golden_line(char *line, void *user)
{
    int *count = user;
    char *f[6];
    assert_int_equal(tv_split(line, ',', f, 6), 5);
    uint8_t dh[32], recv[32], send[32], ch[32], grecv[32], gsend[32], gch[32];
    tv_hex(f[0], dh, 32);
    assert_true(strcmp(f[1], "true") == 0 || strcmp(f[1], "false") == 0);
    tv_hex(f[2], recv, 32);
    tv_hex(f[3], send, 32);
    tv_hex(f[4], ch, 32);
    tm2__sc_derive(dh, strcmp(f[1], "true") == 0, grecv, gsend, gch);
    assert_memory_equal(grecv, recv, 32);
    assert_memory_equal(gsend, send, 32);
    assert_memory_equal(gch, ch, 32);
    (*count)++;
}

static void derive_golden(void **state)
{
    (void)state;
    int count = 0;
    assert_int_equal(tv_lines(GOLDEN, golden_line, &count), 32);
    assert_int_equal(count, 32);
}

static void hkdf_vectors(void **state)
{
    (void)state;
    char *info = tv_get(UPV, "hkdf_info_ascii");
    size_t n;
    uint8_t *info_hex = tv_get_hex(UPV, "hkdf_info_hex", &n);
    assert_int_equal(n, strlen(info));
    assert_memory_equal(info_hex, info, n);

    uint8_t dh[32], out[96], recv[32], send[32], ch[32];
    for (int i = 0; i < 32; i++)
        dh[i] = (uint8_t)i;
    uint8_t *want = tv_get_hex(UPV, "hkdf96_dh_00_to_1f", &n);
    assert_int_equal(n, 96);
    assert_int_equal(tm2__hkdf_sha256(NULL, 0, dh, 32, (const uint8_t *)info, strlen(info), out, 96), 0);
    assert_memory_equal(out, want, 96);
    /* The split uses the same info string: recv || send || challenge when least. */
    tm2__sc_derive(dh, true, recv, send, ch);
    assert_memory_equal(recv, want, 32);
    assert_memory_equal(send, want + 32, 32);
    assert_memory_equal(ch, want + 64, 32);
    tm2__sc_derive(dh, false, recv, send, ch);
    assert_memory_equal(send, want, 32);
    assert_memory_equal(recv, want + 32, 32);
    free(want);

    fill32(dh, 0xab);
    want = tv_get_hex(UPV, "hkdf96_dh_ab_x32", &n);
    assert_int_equal(n, 96);
    /* An explicit all-zero salt equals the absent one (RFC 5869). */
    uint8_t zero[32] = {0};
    assert_int_equal(tm2__hkdf_sha256(zero, 32, dh, 32, (const uint8_t *)info, strlen(info), out, 96), 0);
    assert_memory_equal(out, want, 96);
    free(want);
    free(info);
    free(info_hex);

    /* RFC 5869 test case 1 (with salt) and the output-length limit. */
    uint8_t ikm[22], salt[13], inf[10], okm[42], exp[42];
    memset(ikm, 0x0b, sizeof ikm);
    for (int i = 0; i < 13; i++)
        salt[i] = (uint8_t)i;
    for (int i = 0; i < 10; i++)
        inf[i] = (uint8_t)(0xf0 + i);
    tv_hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865", exp, 42);
    assert_int_equal(tm2__hkdf_sha256(salt, 13, ikm, 22, inf, 10, okm, 42), 0);
    assert_memory_equal(okm, exp, 42);
    assert_int_equal(tm2__hkdf_sha256(NULL, 0, ikm, 22, NULL, 0, okm, 255 * 32 + 1), TM2_EINVAL);
}

static void nonce_layout(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        uint64_t ctr;
    } cases[] = {
        {"nonce_after_0_increments", 0},
        {"nonce_after_1_increments", 1},
        {"nonce_after_255_increments", 255},
        {"nonce_after_256_increments", 256},
        {"nonce_after_65536_increments", 65536},
        {"nonce_counter_0x0102030405060707_plus_1", 0x0102030405060708ull},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t want[12], got[12];
        char *v = tv_get(UPV, cases[i].name);
        tv_hex(v, want, 12);
        free(v);
        tm2__sc_nonce(cases[i].ctr, got);
        assert_memory_equal(got, want, 12);
    }
    char *fc = tv_get(UPV, "frame_constants");
    assert_string_equal(fc, "dataLenSize:4,dataMaxSize:1024,totalFrameSize:1028,aeadTag:16,sealedFrame:1044");
    free(fc);
    assert_int_equal(TM2__SC_DATA_MAX, 1024);
    assert_int_equal(TM2__FRAME_PLAIN, 1028);
    assert_int_equal(TM2__SC_FRAME_SIZE, 1044);
}

static void handshake_message_bytes(void **state)
{
    (void)state;
    size_t n;
    uint8_t pub[32], got[TM2__SC_AUTH_MSG_SIZE], sig[64], back[32];
    for (int i = 0; i < 32; i++)
        pub[i] = (uint8_t)i;
    uint8_t *want = tv_get_hex(UPV, "eph_msg_pub_00_to_1f", &n);
    assert_int_equal(n, TM2__SC_EPH_MSG_SIZE);
    tm2__sc_encode_eph(pub, got);
    assert_memory_equal(got, want, n);
    assert_int_equal(tm2__sc_decode_eph_body(want + 1, n - 1, back), 0);
    assert_memory_equal(back, pub, 32);
    free(want);

    for (int i = 0; i < 64; i++)
        sig[i] = (uint8_t)(0xff - i);
    want = tv_get_hex(UPV, "authsig_msg_tm2", &n);
    assert_int_equal(n, TM2__SC_AUTH_MSG_SIZE);
    tm2__sc_encode_auth(pub, sig, got);
    assert_memory_equal(got, want, n);
    const uint8_t *s;
    size_t slen;
    assert_int_equal(tm2__sc_decode_auth_body(want + 1, n - 1, back, &s, &slen), 0);
    assert_memory_equal(back, pub, 32);
    assert_int_equal(slen, 64);
    assert_memory_equal(s, sig, 64);
    free(want);

    for (int i = 0; i < 32; i++)
        pub[i] = (uint8_t)(0xa0 + i % 16);
    for (int i = 0; i < 64; i++)
        sig[i] = (uint8_t)(0x10 + i % 16);
    want = tv_get_hex(UPV, "authsig_msg_tm2_divergence_case", &n);
    tm2__sc_encode_auth(pub, sig, got);
    assert_int_equal(n, TM2__SC_AUTH_MSG_SIZE);
    assert_memory_equal(got, want, n);
    free(want);
    /* The Tendermint/tmkms form (key wrapped once more) is not ours: field 1
     * is 34 bytes, not a 32-byte key. */
    want = tv_get_hex(UPV, "authsig_msg_upstream_tendermint_divergence_case", &n);
    assert_int_equal(tm2__sc_decode_auth_body(want + 1, n - 1, back, &s, &slen), TM2_EDECODE);
    free(want);
}

static void blacklist_vectors(void **state)
{
    (void)state;
    uint8_t priv[32], dh[32];
    fill32(priv, 3);
    for (int i = 0; i < 7; i++) {
        char name[32];
        snprintf(name, sizeof name, "x25519_blacklist_%d", i);
        uint8_t p[32];
        get32(UPV, name, p);
        assert_true(tm2__sc_is_low_order(p));
        assert_int_equal(tm2__sc_dh(priv, p, dh), TM2_ELOWORDER);
        /* The comparison is byte for byte: a one-bit change is no longer listed. */
        p[10] ^= 0x01;
        assert_false(tm2__sc_is_low_order(p));
    }
}

/* ---- the derived transcript ------------------------------------------------------ */

static void check_frame(const uint8_t *got, const char *name)
{
    size_t n;
    uint8_t *want = tv_get_hex(TR, name, &n);
    assert_int_equal(n, FRAME);
    assert_memory_equal(got, want, FRAME);
    free(want);
}

static void seal_vector(tm2__sc *s, const char *plain_name, const char *frame_name,
                        const char *nonce_name, uint64_t ctr, tm2__sc *peer)
{
    size_t n, used;
    uint8_t nonce[12], want_nonce[12], out[FRAME], back[FRAME];
    char *v = tv_get(TR, nonce_name);
    tv_hex(v, want_nonce, 12);
    free(v);
    tm2__sc_nonce(ctr, nonce);
    assert_memory_equal(nonce, want_nonce, 12);
    uint8_t *plain = tv_get_hex(TR, plain_name, &n);
    assert_true(n <= TM2__SC_DATA_MAX);
    assert_int_equal(tm2__sc_seal(s, plain, n, &used, out, sizeof out), FRAME);
    assert_int_equal(used, n);
    check_frame(out, frame_name);
    assert_int_equal(tm2__sc_open(peer, out, FRAME, &used, back, sizeof back), (int)n);
    assert_int_equal(used, FRAME);
    assert_memory_equal(back, plain, n);
    free(plain);
}

static void derived_transcript(void **state)
{
    (void)state;
    tm2_node_key ka, kb;
    uint8_t seed[32], pub[32], eph_a[32], eph_b[32], x[32];
    get32(TR, "A_node_seed", seed);
    tm2_node_key_from_seed(&ka, seed);
    get32(TR, "B_node_seed", seed);
    tm2_node_key_from_seed(&kb, seed);
    get32(TR, "A_node_pubkey", pub);
    assert_memory_equal(tm2_node_key_pubkey(&ka), pub, 32);
    get32(TR, "B_node_pubkey", pub);
    assert_memory_equal(tm2_node_key_pubkey(&kb), pub, 32);
    get32(TR, "A_eph_priv", eph_a);
    get32(TR, "B_eph_priv", eph_b);

    tm2__sc a, b;
    assert_int_equal(tm2__sc_init(&a, &ka, eph_a), 0);
    assert_int_equal(tm2__sc_init(&b, &kb, eph_b), 0);
    get32(TR, "A_eph_pub", x);
    assert_memory_equal(tm2__sc_local_eph_pub(&a), x, 32);
    get32(TR, "B_eph_pub", x);
    assert_memory_equal(tm2__sc_local_eph_pub(&b), x, 32);

    uint8_t a_out[2048], b_out[2048];
    size_t n;
    uint8_t *want = tv_get_hex(TR, "A_sends_plain_eph_msg", &n);
    assert_int_equal(tm2__sc_hs_pending(&a), TM2__SC_EPH_MSG_SIZE);
    assert_int_equal(tm2__sc_hs_output(&a, a_out, sizeof a_out), n);
    assert_memory_equal(a_out, want, n);
    free(want);
    want = tv_get_hex(TR, "B_sends_plain_eph_msg", &n);
    assert_int_equal(tm2__sc_hs_output(&b, b_out, sizeof b_out), n);
    assert_memory_equal(b_out, want, n);
    free(want);

    /* Each intermediate value, through the building blocks. */
    uint8_t dh[32], dh2[32], recv[32], send[32], ch[32];
    get32(TR, "dh_secret", x);
    assert_int_equal(tm2__sc_dh(eph_a, tm2__sc_local_eph_pub(&b), dh), 0);
    assert_int_equal(tm2__sc_dh(eph_b, tm2__sc_local_eph_pub(&a), dh2), 0);
    assert_memory_equal(dh, x, 32);
    assert_memory_equal(dh2, x, 32);
    char *least = tv_get(TR, "A_is_least");
    assert_string_equal(least, "true");
    free(least);
    assert_true(memcmp(tm2__sc_local_eph_pub(&a), tm2__sc_local_eph_pub(&b), 32) < 0);
    tm2__sc_derive(dh, true, recv, send, ch);
    get32(TR, "hkdf_out_0_32", x);
    assert_memory_equal(recv, x, 32);
    get32(TR, "A_recv_key", x);
    assert_memory_equal(recv, x, 32);
    get32(TR, "hkdf_out_32_64", x);
    assert_memory_equal(send, x, 32);
    get32(TR, "A_send_key", x);
    assert_memory_equal(send, x, 32);
    get32(TR, "challenge", x);
    assert_memory_equal(ch, x, 32);
    tm2__sc_derive(dh, false, recv, send, ch);
    get32(TR, "B_send_key", x);
    assert_memory_equal(send, x, 32);
    get32(TR, "B_recv_key", x);
    assert_memory_equal(recv, x, 32);

    uint8_t sig[64], auth[TM2__SC_AUTH_MSG_SIZE];
    tm2_node_key_sign(&ka, ch, 32, sig);
    want = tv_get_hex(TR, "A_sig_over_challenge", &n);
    assert_int_equal(n, 64);
    assert_memory_equal(sig, want, 64);
    free(want);
    tm2__sc_encode_auth(tm2_node_key_pubkey(&ka), sig, auth);
    want = tv_get_hex(TR, "A_authsig_plaintext", &n);
    assert_int_equal(n, sizeof auth);
    assert_memory_equal(auth, want, n);
    free(want);
    tm2_node_key_sign(&kb, ch, 32, sig);
    want = tv_get_hex(TR, "B_sig_over_challenge", &n);
    assert_memory_equal(sig, want, 64);
    free(want);
    tm2__sc_encode_auth(tm2_node_key_pubkey(&kb), sig, auth);
    want = tv_get_hex(TR, "B_authsig_plaintext", &n);
    assert_memory_equal(auth, want, n);
    free(want);

    /* The state machines: each consumes the other's key message (one byte
     * at a time for A) and queues its sealed auth frame, nonce 0. */
    size_t used;
    for (size_t i = 0; i < TM2__SC_EPH_MSG_SIZE; i++) {
        int r = tm2__sc_hs_input(&a, b_out + i, 1, &used);
        assert_int_equal(r, TM2_EAGAIN);
        assert_int_equal(used, 1);
    }
    assert_int_equal(tm2__sc_hs_input(&b, a_out, TM2__SC_EPH_MSG_SIZE, &used), TM2_EAGAIN);
    assert_int_equal(used, TM2__SC_EPH_MSG_SIZE);
    assert_int_equal(tm2__sc_hs_output(&a, a_out, sizeof a_out), FRAME);
    assert_int_equal(tm2__sc_hs_output(&b, b_out, sizeof b_out), FRAME);
    check_frame(a_out, "A_authsig_frame0_sealed_1044");
    check_frame(b_out, "B_authsig_frame0_sealed_1044");
    char *nz = tv_get(TR, "A_authsig_frame0_nonce");
    assert_string_equal(nz, "000000000000000000000000");
    free(nz);

    /* Auth frames cross: both sides authenticate the other. */
    assert_int_equal(tm2__sc_hs_input(&a, b_out, FRAME, &used), 0);
    assert_int_equal(used, FRAME);
    for (size_t i = 0; i < FRAME - 1; i++) {
        assert_int_equal(tm2__sc_hs_input(&b, a_out + i, 1, &used), TM2_EAGAIN);
        assert_int_equal(used, 1);
    }
    assert_int_equal(tm2__sc_hs_input(&b, a_out + FRAME - 1, 1, &used), 0);
    assert_true(tm2__sc_established(&a));
    assert_true(tm2__sc_established(&b));
    assert_memory_equal(tm2__sc_remote_pubkey(&a), tm2_node_key_pubkey(&kb), 32);
    assert_memory_equal(tm2__sc_remote_pubkey(&b), tm2_node_key_pubkey(&ka), 32);
    char *id = tv_get(TR, "B_id");
    assert_string_equal(tm2__sc_remote_id(&a)->s, id);
    free(id);
    id = tv_get(TR, "A_id");
    assert_string_equal(tm2__sc_remote_id(&b)->s, id);
    free(id);
    /* Established: more input is left alone. */
    assert_int_equal(tm2__sc_hs_input(&a, b_out, 10, &used), 0);
    assert_int_equal(used, 0);

    /* NodeInfo at nonce 1, ping/pong at nonce 2, byte for byte. */
    seal_vector(&a, "A_nodeinfo_plaintext", "A_nodeinfo_frame1_sealed_1044", "A_nodeinfo_frame1_nonce", 1, &b);
    seal_vector(&b, "B_nodeinfo_plaintext", "B_nodeinfo_frame1_sealed_1044", "B_nodeinfo_frame1_nonce", 1, &a);
    seal_vector(&a, "A_ping_plaintext", "A_ping_frame2_sealed_1044", "A_ping_frame2_nonce", 2, &b);
    seal_vector(&b, "B_pong_plaintext", "B_pong_frame2_sealed_1044", "B_pong_frame2_nonce", 2, &a);

    tm2__sc_close(&a);
    tm2__sc_close(&b);
    assert_int_equal(tm2__sc_error(&a), TM2_ECLOSED);
    assert_int_equal(tm2__sc_seal(&a, sig, 1, &used, a_out, sizeof a_out), TM2_ECLOSED);
    tm2__sc_close(&a);   /* idempotent */
}

/* ---- sessions in memory --------------------------------------------------------- */

static void random_chunking(void **state)
{
    (void)state;
    static const size_t chunks[] = {1, 2, 3, 7, 35, 36, 1043, 1044, 1045, 0, 0, 0};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        tm2_node_key ka, kb;
        assert_int_equal(tm2_node_key_generate(&ka), 0);
        assert_int_equal(tm2_node_key_generate(&kb), 0);
        tm2__sc a, b;
        assert_int_equal(tm2__sc_init(&a, &ka, NULL), 0);
        assert_int_equal(tm2__sc_init(&b, &kb, NULL), 0);
        handshake(&a, &b, chunks[c]);
        tm2_id ida, idb;
        tm2_node_key_id(&ka, &ida);
        tm2_node_key_id(&kb, &idb);
        assert_string_equal(tm2__sc_remote_id(&a)->s, idb.s);
        assert_string_equal(tm2__sc_remote_id(&b)->s, ida.s);
        assert_memory_equal(tm2__sc_remote_pubkey(&b), tm2_node_key_pubkey(&ka), 32);

        /* Data both ways: random write sizes, random read pieces and out sizes. */
        for (int dir = 0; dir < 2; dir++) {
            tm2__sc *tx = dir ? &b : &a, *rx = dir ? &a : &b;
            size_t total = 0, wire_len = 0;
            uint8_t *plain = malloc(200000), *wire = malloc(tm2__sc_sealed_size(200000) + 64 * FRAME);
            uint8_t *got = malloc(200000);
            size_t wire_cap = tm2__sc_sealed_size(200000) + 64 * FRAME;
            while (total < 150000) {
                size_t k = randombytes_uniform(4000);
                if (wire_len + tm2__sc_sealed_size(k) > wire_cap)
                    break;
                randombytes_buf(plain + total, k);
                size_t used;
                int r = tm2__sc_seal(tx, plain + total, k, &used, wire + wire_len, tm2__sc_sealed_size(k));
                assert_int_equal(r, (int)tm2__sc_sealed_size(k));
                assert_int_equal(used, k);
                total += k;
                wire_len += (size_t)r;
            }
            size_t piece = chunks[c] == 1 ? 1 : 0;
            size_t step = chunks[c] == 2 ? 1 : 0;
            int r = open_all(rx, wire, wire_len, piece, got, 200000, step);
            assert_int_equal(r, (int)total);
            assert_memory_equal(got, plain, total);
            assert_int_equal(tm2__sc_eof(rx), 0);
            free(plain);
            free(wire);
            free(got);
        }
        tm2__sc_close(&a);
        tm2__sc_close(&b);
    }
}

static void seal_partial_progress(void **state)
{
    (void)state;
    tm2__sc a, b;
    pair(&a, &b);
    uint8_t in[5000], out[3 * FRAME], got[5000];
    randombytes_buf(in, sizeof in);
    size_t used;
    assert_int_equal(tm2__sc_seal(&a, in, sizeof in, &used, out, FRAME - 1), TM2_ENOSPC);
    assert_int_equal(tm2__sc_error(&a), 0);   /* not fatal */
    assert_int_equal(tm2__sc_seal(&a, in, sizeof in, &used, out, 2 * FRAME + 10), 2 * FRAME);
    assert_int_equal(used, 2048);
    assert_int_equal(tm2__sc_seal(&a, in, 0, &used, out, sizeof out), 0);
    /* Frames: full payload, zero padding after a short one. */
    assert_int_equal(tm2__sc_open(&b, out, 2 * FRAME, &used, got, sizeof got), 2048);
    assert_memory_equal(got, in, 2048);
    size_t rest = sizeof in - 2048;
    assert_int_equal(tm2__sc_seal(&a, in + 2048, rest, &used, out, sizeof out), 3 * FRAME);
    assert_int_equal(used, rest);
    assert_int_equal(tm2__sc_sealed_size(rest), 3 * FRAME);
    assert_int_equal(tm2__sc_sealed_size(0), 0);
    assert_int_equal(tm2__sc_sealed_size(1024), FRAME);
    assert_int_equal(tm2__sc_sealed_size(1025), 2 * FRAME);
    /* Out capacity of 1 byte at a time. */
    size_t w = 0, off = 0;
    while (off < 3 * FRAME || tm2__sc_open_pending(&b)) {
        int r = tm2__sc_open(&b, out + off, 3 * FRAME - off, &used, got + w, 1);
        assert_true(r == 0 || r == 1);
        w += (size_t)r;
        off += used;
    }
    assert_int_equal(w, rest);
    assert_memory_equal(got, in + 2048, rest);
    tm2__sc_close(&a);
    tm2__sc_close(&b);
}

/* ---- one test per rejection rule ---------------------------------------------- */

/* Seals frames of 100 bytes each with a; returns their bytes. */
static void three_frames(tm2__sc *a, uint8_t wire[3 * FRAME], uint8_t plain[300])
{
    randombytes_buf(plain, 300);
    for (int i = 0; i < 3; i++) {
        size_t used;
        assert_int_equal(tm2__sc_seal(a, plain + 100 * i, 100, &used, wire + i * FRAME, FRAME), FRAME);
    }
}

static void expect_dead(tm2__sc *s, int err)
{
    assert_int_equal(tm2__sc_error(s), err);
    assert_false(tm2__sc_established(s));
    uint8_t buf[FRAME], in[10] = {0};
    size_t used;
    assert_int_equal(tm2__sc_open(s, in, sizeof in, &used, buf, sizeof buf), err);
    assert_int_equal(used, 0);
    assert_int_equal(tm2__sc_seal(s, in, sizeof in, &used, buf, sizeof buf), err);
    assert_int_equal(tm2__sc_hs_input(s, in, sizeof in, &used), err);
    assert_int_equal(tm2__sc_eof(s), err);
    tm2__sc_close(s);
    assert_int_equal(tm2__sc_error(s), err);
}

static void reject_bit_flip(void **state)
{
    (void)state;
    /* Every region of a frame: length, data, padding, tag. */
    static const size_t where[] = {0, 3, 4, 100, 500, 1027, 1028, 1043};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        tm2__sc a, b;
        pair(&a, &b);
        uint8_t wire[3 * FRAME], plain[300], got[3000];
        three_frames(&a, wire, plain);
        wire[FRAME + where[i]] ^= 0x04;
        size_t used;
        int r = tm2__sc_open(&b, wire, FRAME, &used, got, sizeof got);
        assert_int_equal(r, 100);
        assert_int_equal(tm2__sc_open(&b, wire + FRAME, 2 * FRAME, &used, got, sizeof got), TM2_EDECRYPT);
        expect_dead(&b, TM2_EDECRYPT);
        tm2__sc_close(&a);
    }
}

static void reject_replay(void **state)
{
    (void)state;
    tm2__sc a, b;
    pair(&a, &b);
    uint8_t wire[3 * FRAME], plain[300], got[3000], replay[2 * FRAME];
    three_frames(&a, wire, plain);
    memcpy(replay, wire, FRAME);
    memcpy(replay + FRAME, wire, FRAME);
    assert_int_equal(open_all(&b, replay, sizeof replay, 0, got, sizeof got, 0), TM2_EDECRYPT);
    expect_dead(&b, TM2_EDECRYPT);
    tm2__sc_close(&a);
}

static void reject_reorder(void **state)
{
    (void)state;
    tm2__sc a, b;
    pair(&a, &b);
    uint8_t wire[3 * FRAME], plain[300], got[3000], swapped[3 * FRAME];
    three_frames(&a, wire, plain);
    memcpy(swapped, wire, FRAME);
    memcpy(swapped + FRAME, wire + 2 * FRAME, FRAME);
    memcpy(swapped + 2 * FRAME, wire + FRAME, FRAME);
    size_t used;
    /* Frame 0 is fine; frame 2 in the place of frame 1 is not. */
    assert_int_equal(tm2__sc_open(&b, swapped, FRAME, &used, got, sizeof got), 100);
    assert_int_equal(tm2__sc_open(&b, swapped + FRAME, 2 * FRAME, &used, got, sizeof got), TM2_EDECRYPT);
    expect_dead(&b, TM2_EDECRYPT);
    tm2__sc_close(&a);
}

static void reject_truncated(void **state)
{
    (void)state;
    tm2__sc a, b;
    pair(&a, &b);
    uint8_t wire[3 * FRAME], plain[300], got[3000];
    three_frames(&a, wire, plain);
    size_t used;
    int r = tm2__sc_open(&b, wire, FRAME + 500, &used, got, sizeof got);
    assert_int_equal(r, 100);
    assert_int_equal(used, FRAME + 500);
    assert_memory_equal(got, plain, 100);
    /* The stream ends inside frame 1. */
    assert_int_equal(tm2__sc_eof(&b), TM2_ETRUNC);
    expect_dead(&b, TM2_ETRUNC);
    tm2__sc_close(&a);

    /* A frame cut short and followed by the next frame misaligns the stream.
     * When frame 0's last byte equals frame 1's first (1 run in 256) the
     * cut would leave frame 0 intact: change that byte of frame 1 then, so
     * frame 0 always fails. */
    pair(&a, &b);
    three_frames(&a, wire, plain);
    if (wire[FRAME - 1] == wire[FRAME])
        wire[FRAME] ^= 1;
    uint8_t cut[2 * FRAME - 1];
    memcpy(cut, wire, FRAME - 1);
    memcpy(cut + FRAME - 1, wire + FRAME, FRAME);
    assert_int_equal(open_all(&b, cut, sizeof cut, 0, got, sizeof got, 0), TM2_EDECRYPT);
    tm2__sc_close(&a);
    tm2__sc_close(&b);
}

static void reject_oversized_length(void **state)
{
    (void)state;
    static const uint32_t bad[] = {1025, 1028, 0x10000, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0] + 1; i++) {
        tm2__sc a;
        manual_peer m;
        start_vs_manual(&a, &m, 4);
        tm2_node_key kb;
        node_key(&kb, 2);
        uint8_t f[2 * FRAME], got[4096], data[1024];
        mp_auth_frame(&m, &kb, &kb, f);
        randombytes_buf(data, sizeof data);
        size_t used;
        assert_int_equal(tm2__sc_hs_input(&a, f, FRAME, &used), 0);
        if (i == sizeof bad / sizeof bad[0]) {
            /* The limit itself and an empty frame are fine. */
            mp_frame(&m, data, 1024, 1024, f);
            mp_frame(&m, data, 0, 0, f + FRAME);
            assert_int_equal(tm2__sc_open(&a, f, 2 * FRAME, &used, got, sizeof got), 1024);
            assert_memory_equal(got, data, 1024);
            tm2__sc_close(&a);
            tm2__aead_wipe(&m.send);
            continue;
        }
        mp_frame(&m, data, 1024, bad[i], f);
        /* Both paths: straight into out, and through the partial-frame buffer. */
        if (i % 2)
            assert_int_equal(tm2__sc_open(&a, f, FRAME, &used, got, sizeof got), TM2_EFRAME);
        else
            assert_int_equal(open_all(&a, f, FRAME, 7, got, sizeof got, 0), TM2_EFRAME);
        expect_dead(&a, TM2_EFRAME);
        tm2__aead_wipe(&m.send);
    }
}

static void reject_wrong_signature(void **state)
{
    (void)state;
    tm2__sc a;
    manual_peer m;
    start_vs_manual(&a, &m, 4);
    tm2_node_key kb;
    node_key(&kb, 2);
    uint8_t sig[64], msg[TM2__SC_AUTH_MSG_SIZE], f[FRAME];
    tm2_node_key_sign(&kb, m.challenge, 32, sig);
    sig[20] ^= 0x80;
    tm2__sc_encode_auth(tm2_node_key_pubkey(&kb), sig, msg);
    mp_frame(&m, msg, sizeof msg, sizeof msg, f);
    size_t used;
    assert_int_equal(tm2__sc_hs_input(&a, f, FRAME, &used), TM2_EAUTH);
    expect_dead(&a, TM2_EAUTH);
    tm2__aead_wipe(&m.send);

    /* A signature over something else than the challenge. */
    start_vs_manual(&a, &m, 4);
    uint8_t other[32];
    memcpy(other, m.challenge, 32);
    other[0] ^= 1;
    tm2_node_key_sign(&kb, other, 32, sig);
    tm2__sc_encode_auth(tm2_node_key_pubkey(&kb), sig, msg);
    mp_frame(&m, msg, sizeof msg, sizeof msg, f);
    assert_int_equal(tm2__sc_hs_input(&a, f, FRAME, &used), TM2_EAUTH);
    tm2__sc_close(&a);
    tm2__aead_wipe(&m.send);

    /* A signature of 63 bytes, and none at all. */
    for (int k = 0; k < 2; k++) {
        start_vs_manual(&a, &m, 4);
        tm2_node_key_sign(&kb, m.challenge, 32, sig);
        uint8_t body[200];
        size_t bl = 0;
        body[bl++] = 0;   /* length, set below */
        body[bl++] = 0x0a;
        body[bl++] = 0x20;
        memcpy(body + bl, tm2_node_key_pubkey(&kb), 32);
        bl += 32;
        if (k == 0) {
            body[bl++] = 0x12;
            body[bl++] = 63;
            memcpy(body + bl, sig, 63);
            bl += 63;
        }
        body[0] = (uint8_t)(bl - 1);
        mp_frame(&m, body, bl, (uint32_t)bl, f);
        assert_int_equal(tm2__sc_hs_input(&a, f, FRAME, &used), TM2_EAUTH);
        tm2__sc_close(&a);
        tm2__aead_wipe(&m.send);
    }
}

static void reject_signature_by_other_key(void **state)
{
    (void)state;
    tm2__sc a;
    manual_peer m;
    start_vs_manual(&a, &m, 4);
    tm2_node_key kb, kc;
    node_key(&kb, 2);
    node_key(&kc, 9);
    uint8_t f[FRAME];
    /* Claims B's key, but the (valid) signature is C's. */
    mp_auth_frame(&m, &kb, &kc, f);
    size_t used;
    assert_int_equal(tm2__sc_hs_input(&a, f, FRAME, &used), TM2_EAUTH);
    expect_dead(&a, TM2_EAUTH);
    tm2__aead_wipe(&m.send);

    /* Control: claiming C with C's signature is accepted, and C is who A
     * then believes it talks to. */
    start_vs_manual(&a, &m, 4);
    mp_auth_frame(&m, &kc, &kc, f);
    assert_int_equal(tm2__sc_hs_input(&a, f, FRAME, &used), 0);
    assert_memory_equal(tm2__sc_remote_pubkey(&a), tm2_node_key_pubkey(&kc), 32);
    tm2__sc_close(&a);
    tm2__aead_wipe(&m.send);
}

static void feed_eph(const uint8_t *msg, size_t len, int want, size_t chunk)
{
    tm2__sc a;
    tm2_node_key ka;
    node_key(&ka, 1);
    assert_int_equal(tm2__sc_init(&a, &ka, NULL), 0);
    int r = TM2_EAGAIN;
    size_t off = 0;
    while (off < len && r == TM2_EAGAIN) {
        size_t k = chunk < len - off ? chunk : len - off, used;
        r = tm2__sc_hs_input(&a, msg + off, k, &used);
        off += used;
    }
    assert_int_equal(r, want);
    if (want != TM2_EAGAIN && want != 0)
        expect_dead(&a, want);
    else
        tm2__sc_close(&a);
}

static void reject_low_order_eph(void **state)
{
    (void)state;
    for (int i = 0; i < 7; i++) {
        char name[32];
        snprintf(name, sizeof name, "x25519_blacklist_%d", i);
        uint8_t p[32], msg[TM2__SC_EPH_MSG_SIZE];
        get32(UPV, name, p);
        tm2__sc_encode_eph(p, msg);
        feed_eph(msg, sizeof msg, TM2_ELOWORDER, i % 2 ? 1 : sizeof msg);
    }
}

static void reject_zero_dh(void **state)
{
    (void)state;
    /* Points of small order that are not on the byte-exact list (top bit
     * set, which X25519 ignores): the blacklist lets them through and the
     * all-zero shared secret stops them. */
    uint8_t p[32] = {0}, msg[TM2__SC_EPH_MSG_SIZE], priv[32], dh[32];
    p[31] = 0x80;
    assert_false(tm2__sc_is_low_order(p));
    fill32(priv, 3);
    assert_int_equal(tm2__sc_dh(priv, p, dh), TM2_ELOWORDER);
    assert_true(sodium_is_zero(dh, 32));
    tm2__sc_encode_eph(p, msg);
    feed_eph(msg, sizeof msg, TM2_ELOWORDER, sizeof msg);

    get32(UPV, "x25519_blacklist_2", p);
    p[31] |= 0x80;
    assert_false(tm2__sc_is_low_order(p));
    assert_int_equal(tm2__sc_dh(priv, p, dh), TM2_ELOWORDER);
    tm2__sc_encode_eph(p, msg);
    feed_eph(msg, sizeof msg, TM2_ELOWORDER, 3);
}

static void reject_malformed_eph(void **state)
{
    (void)state;
    uint8_t pub[32];
    fill32(pub, 0x42);
    uint8_t m[80];

    /* Wrong field number, wrong wire type, wrong array length. */
    tm2__sc_encode_eph(pub, m);
    m[1] = 0x12;
    feed_eph(m, 35, TM2_EFIELD, 35);
    tm2__sc_encode_eph(pub, m);
    m[1] = 0x0d;
    feed_eph(m, 35, TM2_EWIRETYPE, 35);
    m[0] = 0x21;
    m[1] = 0x0a;
    m[2] = 0x1f;
    feed_eph(m, 34, TM2_EDECODE, 1);
    m[0] = 0x23;
    m[2] = 0x21;
    memcpy(m + 3, pub, 32);
    m[35] = 0;
    feed_eph(m, 36, TM2_EDECODE, 36);
    /* Length prefix shorter than the field inside. */
    tm2__sc_encode_eph(pub, m);
    m[0] = 0x21;
    feed_eph(m, 35, TM2_ETRUNC, 35);
    /* A second field 1, and an unknown field 2, after the key. */
    tm2__sc_encode_eph(pub, m);
    m[0] = 0x24;
    m[35] = 0x0a;
    m[36] = 0x00;
    feed_eph(m, 37, TM2_EFIELD, 37);
    m[35] = 0x12;
    feed_eph(m, 37, TM2_EFIELD, 5);
    /* Field 0. */
    tm2__sc_encode_eph(pub, m);
    m[1] = 0x02;
    feed_eph(m, 35, TM2_EFIELD, 35);
    /* Declared longer than any well-formed key message: stopped as soon as
     * the prefix is known, without waiting for the body, both under and over
     * the reader's 1 MiB limit. */
    uint8_t big[3] = {0x80, 0x01, 0x0a};   /* 128 */
    feed_eph(big, sizeof big, TM2_ETOOBIG, 1);
    uint8_t edge[2] = {TM2__SC_EPH_IN_MAX - 1, 0x0a};   /* largest accepted prefix */
    feed_eph(edge, sizeof edge, TM2_EAGAIN, 1);
    edge[0]++;
    feed_eph(edge, sizeof edge, TM2_ETOOBIG, 1);
    /* An over-long prefix that never ends. */
    memset(m, 0x80, 12);
    feed_eph(m, 12, TM2_EOVERFLOW, 1);
    uint8_t huge[4] = {0x81, 0x80, 0x40, 0x00};   /* 1048577 */
    feed_eph(huge, sizeof huge, TM2_ETOOBIG, 1);
    /* An empty body is the all-zero key: low order. */
    uint8_t empty[1] = {0};
    feed_eph(empty, 1, TM2_ELOWORDER, 1);
}

static void eph_nonminimal_varints(void **state)
{
    (void)state;
    /* Go's reader tolerates over-long varints: prefix, key and length. */
    tm2__sc a, b;
    tm2_node_key ka, kb;
    node_key(&ka, 1);
    node_key(&kb, 2);
    assert_int_equal(tm2__sc_init(&a, &ka, NULL), 0);
    assert_int_equal(tm2__sc_init(&b, &kb, NULL), 0);
    uint8_t m[64], junk[64];
    size_t n = 0;
    m[n++] = 0;      /* two-byte form of the body length, set below */
    m[n++] = 0x00;
    m[n++] = 0x8a;
    m[n++] = 0x00;
    m[n++] = 0xa0;
    m[n++] = 0x80;
    m[n++] = 0x00;   /* 3-byte form of 32 */
    memcpy(m + n, tm2__sc_local_eph_pub(&b), 32);
    n += 32;
    m[0] = (uint8_t)(0x80 | (n - 2));
    assert_int_equal(tm2__sc_hs_output(&b, junk, sizeof junk), TM2__SC_EPH_MSG_SIZE);
    size_t used;
    assert_int_equal(tm2__sc_hs_input(&a, m, n, &used), TM2_EAGAIN);
    assert_int_equal(used, n);
    handshake(&a, &b, 0);
    tm2__sc_close(&a);
    tm2__sc_close(&b);
}

static void reject_closed_mid_handshake(void **state)
{
    (void)state;
    /* While waiting for the key message. */
    tm2__sc a;
    tm2_node_key ka;
    node_key(&ka, 1);
    assert_int_equal(tm2__sc_init(&a, &ka, NULL), 0);
    uint8_t part[10] = {0x22, 0x0a, 0x20, 1, 2, 3, 4, 5, 6, 7};
    size_t used;
    assert_int_equal(tm2__sc_hs_input(&a, part, sizeof part, &used), TM2_EAGAIN);
    assert_int_equal(tm2__sc_eof(&a), TM2_ECLOSED);
    expect_dead(&a, TM2_ECLOSED);

    /* While waiting for the auth frame (half of it arrived). */
    manual_peer m;
    start_vs_manual(&a, &m, 4);
    tm2_node_key kb;
    node_key(&kb, 2);
    uint8_t f[FRAME];
    mp_auth_frame(&m, &kb, &kb, f);
    assert_int_equal(tm2__sc_hs_input(&a, f, 600, &used), TM2_EAGAIN);
    assert_int_equal(tm2__sc_eof(&a), TM2_ECLOSED);
    expect_dead(&a, TM2_ECLOSED);
    tm2__aead_wipe(&m.send);
}

static void nonce_exhaustion(void **state)
{
    (void)state;
    tm2__sc a, b;
    pair(&a, &b);
    uint8_t in[10] = {1, 2, 3}, wire[2 * FRAME], got[2048];
    size_t used;
    tm2__sc_set_nonces(&a, UINT64_MAX - 1, 0);
    tm2__sc_set_nonces(&b, 0, UINT64_MAX - 1);
    /* The last usable counter works on both sides... */
    assert_int_equal(tm2__sc_seal(&a, in, sizeof in, &used, wire, sizeof wire), FRAME);
    assert_int_equal(tm2__sc_open(&b, wire, FRAME, &used, got, sizeof got), (int)sizeof in);
    assert_memory_equal(got, in, sizeof in);
    /* ...then the counter is spent: never reused, never wrapped. */
    assert_int_equal(tm2__sc_seal(&a, in, sizeof in, &used, wire, sizeof wire), TM2_ENONCE);
    assert_int_equal(used, 0);
    expect_dead(&a, TM2_ENONCE);
    uint8_t fake[FRAME] = {0};
    assert_int_equal(tm2__sc_open(&b, fake, FRAME, &used, got, sizeof got), TM2_ENONCE);
    expect_dead(&b, TM2_ENONCE);

    /* In the middle of a multi-frame seal. */
    pair(&a, &b);
    tm2__sc_set_nonces(&a, UINT64_MAX - 1, 0);
    uint8_t big[2048] = {0};
    assert_int_equal(tm2__sc_seal(&a, big, sizeof big, &used, wire, sizeof wire), TM2_ENONCE);
    tm2__sc_close(&a);
    tm2__sc_close(&b);
}

static void auth_split_and_followed_by_data(void **state)
{
    (void)state;
    /* The auth message spread over frames one byte each (legal for the
     * reference's stream reader), and application data behind it in the
     * last frame and in the same read. */
    tm2__sc a;
    manual_peer m;
    start_vs_manual(&a, &m, 4);
    tm2_node_key kb;
    node_key(&kb, 2);
    uint8_t sig[64], msg[TM2__SC_AUTH_MSG_SIZE + 5];
    tm2_node_key_sign(&kb, m.challenge, 32, sig);
    tm2__sc_encode_auth(tm2_node_key_pubkey(&kb), sig, msg);
    memcpy(msg + TM2__SC_AUTH_MSG_SIZE, "hello", 5);
    size_t nframes = TM2__SC_AUTH_MSG_SIZE;   /* last one carries 1 + 5 bytes */
    uint8_t *wire = malloc((nframes + 2) * FRAME);
    for (size_t i = 0; i < nframes - 1; i++)
        mp_frame(&m, msg + i, 1, 1, wire + i * FRAME);
    mp_frame(&m, msg + nframes - 1, 6, 6, wire + (nframes - 1) * FRAME);
    mp_frame(&m, (const uint8_t *)"world", 5, 5, wire + nframes * FRAME);
    mp_frame(&m, NULL, 0, 0, wire + (nframes + 1) * FRAME);   /* empty frame */
    size_t total = (nframes + 2) * FRAME, used;
    assert_int_equal(tm2__sc_hs_input(&a, wire, total, &used), 0);
    assert_int_equal(used, nframes * FRAME);
    assert_int_equal(tm2__sc_open_pending(&a), 5);
    uint8_t got[2048];
    size_t u2;
    assert_int_equal(tm2__sc_open(&a, wire + used, total - used, &u2, got, sizeof got), 10);
    assert_int_equal(u2, total - used);
    assert_memory_equal(got, "helloworld", 10);
    assert_int_equal(tm2__sc_eof(&a), 0);
    free(wire);
    tm2__sc_close(&a);
    tm2__aead_wipe(&m.send);
}

static void reject_malformed_auth(void **state)
{
    (void)state;
    tm2_node_key kb;
    node_key(&kb, 2);
    struct {
        uint8_t body[200];
        size_t len;
        int want;
    } cases[8];
    size_t nc = 0;
    uint8_t sig[64] = {0};
    /* Key of 31 bytes. */
    {
        uint8_t *b = cases[nc].body;
        size_t l = 1;
        b[l++] = 0x0a; b[l++] = 31; memcpy(b + l, tm2_node_key_pubkey(&kb), 31); l += 31;
        b[l++] = 0x12; b[l++] = 64; memcpy(b + l, sig, 64); l += 64;
        b[0] = (uint8_t)(l - 1);
        cases[nc].len = l;
        cases[nc++].want = TM2_EDECODE;
    }
    /* Fields out of order. */
    {
        uint8_t *b = cases[nc].body;
        size_t l = 1;
        b[l++] = 0x12; b[l++] = 64; memcpy(b + l, sig, 64); l += 64;
        b[l++] = 0x0a; b[l++] = 32; memcpy(b + l, tm2_node_key_pubkey(&kb), 32); l += 32;
        b[0] = (uint8_t)(l - 1);
        cases[nc].len = l;
        cases[nc++].want = TM2_EFIELD;
    }
    /* Unknown field 3. */
    {
        uint8_t *b = cases[nc].body;
        size_t l = 1;
        b[l++] = 0x0a; b[l++] = 32; memcpy(b + l, tm2_node_key_pubkey(&kb), 32); l += 32;
        b[l++] = 0x1a; b[l++] = 0;
        b[0] = (uint8_t)(l - 1);
        cases[nc].len = l;
        cases[nc++].want = TM2_EFIELD;
    }
    /* Wire type varint for the key. */
    {
        uint8_t *b = cases[nc].body;
        size_t l = 1;
        b[l++] = 0x08; b[l++] = 1;
        b[0] = (uint8_t)(l - 1);
        cases[nc].len = l;
        cases[nc++].want = TM2_EWIRETYPE;
    }
    /* Bytes after the declared length are left for open, but a length
     * cutting the signature short is a truncation. */
    {
        uint8_t *b = cases[nc].body;
        size_t l = 1;
        b[l++] = 0x0a; b[l++] = 32; memcpy(b + l, tm2_node_key_pubkey(&kb), 32); l += 32;
        b[l++] = 0x12; b[l++] = 64; memcpy(b + l, sig, 64); l += 64;
        b[0] = (uint8_t)(l - 2);
        cases[nc].len = l;
        cases[nc++].want = TM2_ETRUNC;
    }
    /* Over the largest verifiable size (a 200-byte signature field). */
    {
        uint8_t *b = cases[nc].body;
        size_t l = 0;
        b[l++] = 0xea; b[l++] = 0x01;   /* 234 */
        b[l++] = 0x0a; b[l++] = 32; memcpy(b + l, tm2_node_key_pubkey(&kb), 32); l += 32;
        b[l++] = 0x12; b[l++] = 0xc8; b[l++] = 0x01;
        memset(b + l, 0, 200 - l);
        cases[nc].len = 200;
        cases[nc++].want = TM2_ETOOBIG;
    }
    for (size_t i = 0; i < nc; i++) {
        tm2__sc a;
        manual_peer m;
        start_vs_manual(&a, &m, 4);
        uint8_t f[FRAME];
        mp_frame(&m, cases[i].body, cases[i].len, (uint32_t)cases[i].len, f);
        size_t used;
        assert_int_equal(tm2__sc_hs_input(&a, f, FRAME, &used), cases[i].want);
        expect_dead(&a, cases[i].want);
        tm2__aead_wipe(&m.send);
    }
}

static void reflected_eph_key(void **state)
{
    (void)state;
    /* A peer echoing our key message: both sides think they are "least", so
     * the keys do not match and the auth frame fails to open. */
    tm2__sc a;
    tm2_node_key ka;
    node_key(&ka, 1);
    assert_int_equal(tm2__sc_init(&a, &ka, NULL), 0);
    uint8_t out[2048];
    assert_int_equal(tm2__sc_hs_output(&a, out, sizeof out), TM2__SC_EPH_MSG_SIZE);
    size_t used;
    assert_int_equal(tm2__sc_hs_input(&a, out, TM2__SC_EPH_MSG_SIZE, &used), TM2_EAGAIN);
    assert_int_equal(tm2__sc_hs_output(&a, out, sizeof out), FRAME);
    assert_int_equal(tm2__sc_hs_input(&a, out, FRAME, &used), TM2_EDECRYPT);
    expect_dead(&a, TM2_EDECRYPT);
}

static void misuse_is_not_fatal(void **state)
{
    (void)state;
    tm2__sc a, b;
    tm2_node_key ka, kb;
    node_key(&ka, 1);
    node_key(&kb, 2);
    assert_int_equal(tm2__sc_init(&a, &ka, NULL), 0);
    assert_int_equal(tm2__sc_init(&b, &kb, NULL), 0);
    uint8_t buf[FRAME], in[4] = {0};
    size_t used;
    assert_int_equal(tm2__sc_seal(&a, in, 4, &used, buf, sizeof buf), TM2_ESTATE);
    assert_int_equal(tm2__sc_open(&a, in, 4, &used, buf, sizeof buf), TM2_ESTATE);
    assert_int_equal(tm2__sc_error(&a), 0);
    /* B established but its own auth frame still queued: seal must wait. */
    uint8_t ao[2048], bo[2048];
    size_t na = tm2__sc_hs_output(&a, ao, sizeof ao), nb = tm2__sc_hs_output(&b, bo, sizeof bo);
    assert_int_equal(tm2__sc_hs_input(&a, bo, nb, &used), TM2_EAGAIN);
    assert_int_equal(tm2__sc_hs_input(&b, ao, na, &used), TM2_EAGAIN);
    na = tm2__sc_hs_output(&a, ao, sizeof ao);
    assert_int_equal(tm2__sc_hs_input(&b, ao, na, &used), 0);
    assert_true(tm2__sc_established(&b));
    assert_int_equal(tm2__sc_seal(&b, in, 4, &used, buf, sizeof buf), TM2_ESTATE);
    assert_int_equal(tm2__sc_hs_output(&b, bo, 100), 100);
    assert_int_equal(tm2__sc_hs_output(&b, bo + 100, sizeof bo - 100), FRAME - 100);
    assert_int_equal(tm2__sc_seal(&b, in, 4, &used, buf, sizeof buf), FRAME);
    assert_int_equal(tm2__sc_init(NULL, &ka, NULL), TM2_EINVAL);
    tm2__sc c;
    assert_int_equal(tm2__sc_init(&c, NULL, NULL), TM2_EINVAL);
    tm2__sc_close(&c);
    tm2__sc_close(&a);
    tm2__sc_close(&b);
}

static void aead_backend(void **state)
{
    (void)state;
    /* RFC 8439 section 2.8.2 key/nonce on a full frame: the backend agrees
     * with libsodium, in place and out of place, and rejects a bad tag. */
    uint8_t key[32], nonce[12], pt[TM2__FRAME_PLAIN], ct[FRAME], ref[FRAME], back[FRAME];
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(0x80 + i);
    tv_hex("070000004041424344454647", nonce, 12);
    randombytes_buf(pt, sizeof pt);
    tm2__aead a;
    memset(&a, 0, sizeof a);
    assert_int_equal(tm2__aead_init(&a, key), 0);
    assert_int_equal(tm2__aead_seal_frame(&a, nonce, pt, ct), 0);
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(ref, ref + TM2__FRAME_PLAIN, NULL, pt,
                                                       sizeof pt, NULL, 0, NULL, nonce, key);
    assert_memory_equal(ct, ref, FRAME);
    memcpy(back, ct, FRAME);
    assert_int_equal(tm2__aead_open_frame(&a, nonce, back, back), 0);
    assert_memory_equal(back, pt, sizeof pt);
    memcpy(back, pt, sizeof pt);
    assert_int_equal(tm2__aead_seal_frame(&a, nonce, back, back), 0);
    assert_memory_equal(back, ref, FRAME);
    ct[FRAME - 1] ^= 1;
    memset(back, 0x55, sizeof back);
    assert_int_equal(tm2__aead_open_frame(&a, nonce, ct, back), TM2_EDECRYPT);
    assert_true(sodium_is_zero(back, TM2__FRAME_PLAIN));
    tm2__aead_wipe(&a);
    assert_int_equal(tm2__aead_seal_frame(&a, nonce, pt, ct), TM2_ESTATE);
    tm2__aead_wipe(&a);
    assert_non_null(tm2__aead_backend());
}

/* Deferred mode: the same bytes as inline, the jobs carry the work, and what
 * a job held is wiped once used. */
static void run_job(tm2__sc *sc, int kind)
{
    tm2__sc_job job;
    assert_int_equal(tm2__sc_job_pending(sc), kind);
    assert_int_equal(tm2__sc_job_take(sc, &job), 0);
    assert_int_equal(tm2__sc_job_pending(sc), 0);
    size_t used;
    assert_int_equal(tm2__sc_hs_input(sc, (const uint8_t *)"x", 1, &used), TM2_ESTATE);
    tm2__sc_job_run(&job);
    assert_int_equal(job.result, 0);
    assert_true(sodium_is_zero(job.eph_priv, sizeof job.eph_priv));
    assert_true(sodium_is_zero((const uint8_t *)&job.key, sizeof job.key));
    if (kind == TM2__SC_JOB_VERIFY)
        assert_true(sodium_is_zero(job.challenge, sizeof job.challenge));
    assert_int_equal(tm2__sc_job_finish(sc, &job), 0);
    assert_true(sodium_is_zero((const uint8_t *)&job, sizeof job));
}

static void deferred_jobs_match_inline(void **state)
{
    (void)state;
    tm2_node_key ka, kb;
    node_key(&ka, 1);
    node_key(&kb, 2);
    uint8_t ea[32], eb[32];
    fill32(ea, 3);
    fill32(eb, 4);
    tm2__sc a, b, ia, ib;
    uint8_t wa[2048], wb[2048], wia[2048];
    size_t used;

    assert_int_equal(tm2__sc_init_ex(&a, &ka, ea, true), 0);
    assert_int_equal(tm2__sc_init(&b, &kb, eb), 0);
    assert_int_equal(tm2__sc_init(&ia, &ka, ea), 0);
    assert_int_equal(tm2__sc_init(&ib, &kb, eb), 0);
    assert_int_equal(tm2__sc_hs_pending(&a), 0);
    run_job(&a, TM2__SC_JOB_KEYPAIR);
    size_t na = tm2__sc_hs_output(&a, wa, sizeof wa);
    assert_int_equal(na, TM2__SC_EPH_MSG_SIZE);
    assert_int_equal(tm2__sc_hs_output(&ia, wia, sizeof wia), na);
    assert_memory_equal(wa, wia, na);

    /* B's key message and its auth frame in one piece: A stops after the
     * key message for its AGREE job. */
    size_t nb = tm2__sc_hs_output(&b, wb, sizeof wb);
    assert_int_equal(tm2__sc_hs_input(&b, wa, na, &used), TM2_EAGAIN);
    nb += tm2__sc_hs_output(&b, wb + nb, sizeof wb - nb);
    assert_int_equal(nb, TM2__SC_EPH_MSG_SIZE + FRAME);
    assert_int_equal(tm2__sc_hs_input(&a, wb, nb, &used), TM2__SC_JOB);
    assert_int_equal(used, TM2__SC_EPH_MSG_SIZE);
    run_job(&a, TM2__SC_JOB_AGREE);
    na = tm2__sc_hs_output(&a, wa, sizeof wa);
    assert_int_equal(na, FRAME);
    assert_int_equal(tm2__sc_hs_input(&ia, wb, TM2__SC_EPH_MSG_SIZE, &used), TM2_EAGAIN);
    assert_int_equal(tm2__sc_hs_output(&ia, wia, sizeof wia), FRAME);
    assert_memory_equal(wa, wia, FRAME);

    size_t off = used;
    assert_int_equal(tm2__sc_hs_input(&a, wb + off, nb - off, &used), TM2__SC_JOB);
    assert_int_equal(used, FRAME);
    assert_false(tm2__sc_established(&a));
    run_job(&a, TM2__SC_JOB_VERIFY);
    assert_true(tm2__sc_established(&a));
    assert_memory_equal(tm2__sc_remote_pubkey(&a), tm2_node_key_pubkey(&kb), 32);
    assert_int_equal(tm2__sc_hs_input(&b, wa, na, &used), 0);
    /* And the session works both ways. */
    uint8_t sealed[FRAME], plain[64];
    int w = tm2__sc_seal(&a, (const uint8_t *)"ping", 4, &used, sealed, sizeof sealed);
    assert_int_equal(w, FRAME);
    assert_int_equal(tm2__sc_open(&b, sealed, FRAME, &used, plain, sizeof plain), 4);
    assert_memory_equal(plain, "ping", 4);
    tm2__sc_close(&a);
    tm2__sc_close(&b);
    tm2__sc_close(&ia);
    tm2__sc_close(&ib);
}

/* A failing VERIFY job ends the session like an inline one. */
static void deferred_bad_signature(void **state)
{
    (void)state;
    tm2__sc a;
    tm2_node_key ka;
    node_key(&ka, 1);
    assert_int_equal(tm2__sc_init_ex(&a, &ka, NULL, true), 0);
    tm2__sc_job job;
    assert_int_equal(tm2__sc_job_take(&a, &job), 0);
    job.result = TM2_EAUTH;         /* as a run that failed */
    assert_int_equal(tm2__sc_job_finish(&a, &job), TM2_EAUTH);
    assert_int_equal(tm2__sc_error(&a), TM2_EAUTH);
    assert_int_equal(tm2__sc_job_pending(&a), 0);
    assert_int_equal(tm2__sc_job_take(&a, &job), TM2_ESTATE);
    tm2__sc_close(&a);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(derive_golden),
        cmocka_unit_test(hkdf_vectors),
        cmocka_unit_test(nonce_layout),
        cmocka_unit_test(handshake_message_bytes),
        cmocka_unit_test(blacklist_vectors),
        cmocka_unit_test(derived_transcript),
        cmocka_unit_test(aead_backend),
        cmocka_unit_test(random_chunking),
        cmocka_unit_test(seal_partial_progress),
        cmocka_unit_test(auth_split_and_followed_by_data),
        cmocka_unit_test(eph_nonminimal_varints),
        cmocka_unit_test(reject_bit_flip),
        cmocka_unit_test(reject_replay),
        cmocka_unit_test(reject_reorder),
        cmocka_unit_test(reject_truncated),
        cmocka_unit_test(reject_oversized_length),
        cmocka_unit_test(reject_wrong_signature),
        cmocka_unit_test(reject_signature_by_other_key),
        cmocka_unit_test(reject_low_order_eph),
        cmocka_unit_test(reject_zero_dh),
        cmocka_unit_test(reject_malformed_eph),
        cmocka_unit_test(reject_malformed_auth),
        cmocka_unit_test(reject_closed_mid_handshake),
        cmocka_unit_test(reflected_eph_key),
        cmocka_unit_test(nonce_exhaustion),
        cmocka_unit_test(misuse_is_not_fatal),
        cmocka_unit_test(deferred_jobs_match_inline),
        cmocka_unit_test(deferred_bad_signature),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
