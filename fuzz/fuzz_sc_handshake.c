/* The secret-connection handshake fed the remote side's bytes.
 *
 * The local side is node A of the derived transcript (node seed 01..,
 * ephemeral key 03..). The first input byte picks a mode:
 *   even: the rest is raw wire bytes, as records [len][len bytes], each record
 *         one hs_input call (so the fuzzer chooses the read boundaries);
 *   odd:  the harness plays peer B's valid key message (ephemeral key 04..),
 *         then each record is the payload of one frame it seals with B's real
 *         send key, so the fuzzer reaches the auth-message decoder and the
 *         signature check. The transcript's B auth plaintext is a valid seed.
 * After an error every call must repeat it; the handshake must never accept a
 * key that did not sign the challenge; nothing may crash or leak. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "conn/secret_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static tm2_node_key key_a, key_b;
static uint8_t eph_a[32], eph_b[32], eph_b_pub[32], eph_b_msg[TM2__SC_EPH_MSG_SIZE];
static uint8_t b_send_key[32];

static void setup(void)
{
    static int done;
    if (done)
        return;
    CHECK(sodium_init() >= 0);
    uint8_t seed[32], eph_a_pub[32], dh[32], recv[32], ch[32];
    memset(seed, 1, 32);
    tm2_node_key_from_seed(&key_a, seed);
    memset(seed, 2, 32);
    tm2_node_key_from_seed(&key_b, seed);
    memset(eph_a, 3, 32);
    memset(eph_b, 4, 32);
    CHECK(crypto_scalarmult_base(eph_a_pub, eph_a) == 0);
    CHECK(crypto_scalarmult_base(eph_b_pub, eph_b) == 0);
    tm2__sc_encode_eph(eph_b_pub, eph_b_msg);
    CHECK(tm2__sc_dh(eph_b, eph_a_pub, dh) == 0);
    tm2__sc_derive(dh, memcmp(eph_b_pub, eph_a_pub, 32) <= 0, recv, b_send_key, ch);
    done = 1;
}

/* Feeds bytes; returns the hs_input result of the last call. */
static int feed(tm2__sc *sc, const uint8_t *p, size_t n)
{
    size_t used;
    int r = tm2__sc_hs_input(sc, p, n, &used);
    CHECK(used <= n);
    if (r == TM2_EAGAIN)
        CHECK(used == n);
    if (r < 0 && r != TM2_EAGAIN)
        CHECK(tm2__sc_error(sc) == r);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 1)
        return 0;
    int framed = data[0] & 1;
    size_t off = 1;

    tm2__sc sc;
    CHECK(tm2__sc_init(&sc, &key_a, eph_a) == 0);
    uint8_t out[TM2__SC_EPH_MSG_SIZE + TM2__SC_FRAME_SIZE];
    size_t total_out = tm2__sc_hs_output(&sc, out, sizeof out);
    CHECK(total_out == TM2__SC_EPH_MSG_SIZE);

    tm2__aead peer;
    uint64_t peer_ctr = 0;
    memset(&peer, 0, sizeof peer);
    int r = TM2_EAGAIN;
    if (framed) {
        CHECK(tm2__aead_init(&peer, b_send_key) == 0);
        r = feed(&sc, eph_b_msg, sizeof eph_b_msg);
        CHECK(r == TM2_EAGAIN);
    }

    while (off < size && r == TM2_EAGAIN) {
        size_t len = data[off++];
        if (len > size - off)
            len = size - off;
        const uint8_t *rec = data + off;
        off += len;
        if (!framed) {
            r = feed(&sc, rec, len);
        } else {
            uint8_t frame[TM2__SC_FRAME_SIZE] = {0}, nonce[TM2__AEAD_NONCE_SIZE];
            frame[0] = (uint8_t)len;
            if (len)
                memcpy(frame + 4, rec, len);
            tm2__sc_nonce(peer_ctr++, nonce);
            CHECK(tm2__aead_seal_frame(&peer, nonce, frame, frame) == 0);
            /* Split at a fuzzer-chosen point: reassembly inside a frame. */
            size_t cut = len % TM2__SC_FRAME_SIZE;
            r = feed(&sc, frame, cut);
            if (r == TM2_EAGAIN)
                r = feed(&sc, frame + cut, sizeof frame - cut);
        }
        total_out += tm2__sc_hs_output(&sc, out, sizeof out);
        CHECK(total_out <= TM2__SC_EPH_MSG_SIZE + TM2__SC_FRAME_SIZE);
    }

    if (r == 0) {
        CHECK(tm2__sc_established(&sc));
        /* Only B can have signed A's challenge. */
        CHECK(memcmp(tm2__sc_remote_pubkey(&sc), tm2_node_key_pubkey(&key_b), 32) == 0);
        /* Whatever came behind the auth message is plaintext for open. */
        uint8_t plain[TM2__SC_DATA_MAX], none = 0;
        size_t used, pending = tm2__sc_open_pending(&sc);
        int n = tm2__sc_open(&sc, &none, 0, &used, plain, sizeof plain);
        CHECK(n >= 0 && (size_t)n == pending);
    } else if (r != TM2_EAGAIN) {
        size_t used;
        uint8_t b = 0;
        CHECK(!tm2__sc_established(&sc));
        CHECK(tm2__sc_hs_input(&sc, &b, 1, &used) == r && used == 0);
        CHECK(tm2__sc_eof(&sc) == r);
    } else {
        CHECK(tm2__sc_eof(&sc) == TM2_ECLOSED);
    }
    tm2__sc_close(&sc);
    tm2__aead_wipe(&peer);
    return 0;
}
