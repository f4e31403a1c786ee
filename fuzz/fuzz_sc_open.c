/* tm2__sc_open after a valid handshake, on a mix of arbitrary bytes and
 * frames the harness seals with the peer's real key (so the fuzzer gets past
 * the tag check and reaches the length rules and the reassembly).
 *
 * Session: local node A against peer B of the derived transcript (fixed node
 * and ephemeral keys); B's auth frame is computed once. The input is a list
 * of operations, each [op][args...]:
 *   op%6 == 0  [len][len bytes]          raw wire bytes
 *   op%6 == 1  [len][len bytes]          a valid frame with that payload
 *   op%6 == 2  [lo][hi][len][len bytes]  a valid frame, length field lo|hi<<8|(op>>3)<<16
 *   op%6 == 3  [c]                       output room per open call: c*5 + 1
 *   op%6 == 4  [lo][hi][len][len bytes]  a valid frame with one bit flipped at (lo|hi<<8) % 8352
 *   op%6 == 5                            end of stream
 * Wire bytes are fed to open split at (op>>3)-chosen boundaries. While only
 * well-formed frames were sent, the plaintext out must equal their payloads
 * in order; after any error, every call must return that same error. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "conn/secret_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static tm2_node_key key_a;
static uint8_t eph_a[32], b_eph_msg[TM2__SC_EPH_MSG_SIZE], b_send_key[32];
static uint8_t b_auth_frame[TM2__SC_FRAME_SIZE];

static void setup(void)
{
    static int done;
    if (done)
        return;
    CHECK(sodium_init() >= 0);
    tm2_node_key key_b;
    uint8_t seed[32], eph_b[32], a_pub[32], b_pub[32], dh[32], recv[32], ch[32], sig[64];
    memset(seed, 1, 32);
    tm2_node_key_from_seed(&key_a, seed);
    memset(seed, 2, 32);
    tm2_node_key_from_seed(&key_b, seed);
    memset(eph_a, 3, 32);
    memset(eph_b, 4, 32);
    CHECK(crypto_scalarmult_base(a_pub, eph_a) == 0);
    CHECK(crypto_scalarmult_base(b_pub, eph_b) == 0);
    tm2__sc_encode_eph(b_pub, b_eph_msg);
    CHECK(tm2__sc_dh(eph_b, a_pub, dh) == 0);
    tm2__sc_derive(dh, memcmp(b_pub, a_pub, 32) <= 0, recv, b_send_key, ch);
    tm2_node_key_sign(&key_b, ch, 32, sig);

    uint8_t nonce[TM2__AEAD_NONCE_SIZE];
    memset(b_auth_frame, 0, sizeof b_auth_frame);
    b_auth_frame[0] = TM2__SC_AUTH_MSG_SIZE;
    tm2__sc_encode_auth(tm2_node_key_pubkey(&key_b), sig, b_auth_frame + 4);
    tm2__aead aead;
    memset(&aead, 0, sizeof aead);
    CHECK(tm2__aead_init(&aead, b_send_key) == 0);
    tm2__sc_nonce(0, nonce);
    CHECK(tm2__aead_seal_frame(&aead, nonce, b_auth_frame, b_auth_frame) == 0);
    tm2__aead_wipe(&aead);
    done = 1;
}

typedef struct run {
    tm2__sc sc;
    tm2__aead peer;
    uint64_t peer_ctr;
    size_t room;
    int clean;          /* only well-formed frames so far */
    int err;            /* first error seen */
    uint8_t *want;      /* payloads of the frames sent while clean */
    size_t want_len, got_len;
    uint8_t *got;
    size_t cap;
} run;

static void feed(run *R, const uint8_t *p, size_t n, unsigned split)
{
    size_t off = 0;
    while (off < n || (R->err == 0 && tm2__sc_open_pending(&R->sc))) {
        size_t k = n - off;
        if (split && k > split)
            k = split;
        size_t room = R->room;
        if (room > R->cap - R->got_len)
            room = R->cap - R->got_len;
        CHECK(room > 0);
        size_t used;
        int r = tm2__sc_open(&R->sc, p + off, k, &used, R->got + R->got_len, room);
        CHECK(used <= k);
        if (r < 0) {
            CHECK(!R->clean);
            CHECK(r != TM2_EAGAIN && r != TM2_ENOSPC);
            if (R->err)
                CHECK(r == R->err);
            R->err = r;
            CHECK(tm2__sc_error(&R->sc) == r);
            return;
        }
        CHECK((size_t)r <= room);
        CHECK(used > 0 || r > 0 || k == 0);
        R->got_len += (size_t)r;
        off += used;
        if (k == 0 && r == 0)
            break;
    }
}

static void send_frame(run *R, const uint8_t *payload, size_t n, uint32_t len_field,
                       int flip, size_t flip_at, unsigned split)
{
    uint8_t frame[TM2__SC_FRAME_SIZE] = {0}, nonce[TM2__AEAD_NONCE_SIZE];
    frame[0] = (uint8_t)len_field;
    frame[1] = (uint8_t)(len_field >> 8);
    frame[2] = (uint8_t)(len_field >> 16);
    frame[3] = (uint8_t)(len_field >> 24);
    if (n)
        memcpy(frame + 4, payload, n);
    if (R->clean && !flip && len_field <= TM2__SC_DATA_MAX) {
        /* The receiver delivers the first len_field bytes of the data area
         * (payload, then zero padding when the field says more). */
        CHECK(R->want_len + len_field <= R->cap);
        memcpy(R->want + R->want_len, frame + 4, len_field);
        R->want_len += len_field;
    }
    tm2__sc_nonce(R->peer_ctr++, nonce);
    CHECK(tm2__aead_seal_frame(&R->peer, nonce, frame, frame) == 0);
    if (flip)
        frame[(flip_at / 8) % TM2__SC_FRAME_SIZE] ^= (uint8_t)(1u << (flip_at % 8));
    feed(R, frame, sizeof frame, split);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size > 8192)
        return 0;
    run R;
    memset(&R, 0, sizeof R);
    /* Every opened frame yields at most 1024 bytes and costs at least two
     * input bytes (a frame op) or 1044 (raw bytes). */
    R.cap = (size / 2 + 8) * TM2__SC_DATA_MAX;
    R.got = malloc(R.cap);
    R.want = malloc(R.cap);
    CHECK(R.got && R.want);
    R.room = R.cap;
    R.clean = 1;

    size_t used;
    uint8_t out[TM2__SC_EPH_MSG_SIZE + TM2__SC_FRAME_SIZE];
    CHECK(tm2__sc_init(&R.sc, &key_a, eph_a) == 0);
    CHECK(tm2__sc_hs_input(&R.sc, b_eph_msg, sizeof b_eph_msg, &used) == TM2_EAGAIN);
    CHECK(tm2__sc_hs_input(&R.sc, b_auth_frame, sizeof b_auth_frame, &used) == 0);
    CHECK(tm2__sc_hs_output(&R.sc, out, sizeof out) == sizeof out);
    CHECK(tm2__aead_init(&R.peer, b_send_key) == 0);
    R.peer_ctr = 1;

    size_t off = 0;
    int ended = 0;
    while (off < size && !ended) {
        uint8_t op = data[off++];
        unsigned split = op >> 3;
        uint32_t lf = 0;
        size_t flip_at = 0;
        switch (op % 6) {
        case 2:
        case 4:
            if (size - off < 2) {
                off = size;
                break;
            }
            lf = (uint32_t)data[off] | (uint32_t)data[off + 1] << 8;
            flip_at = lf;
            if (op % 6 == 2)
                lf |= (uint32_t)split << 16;
            off += 2;
            /* fall through */
        case 0:
        case 1: {
            if (off >= size)
                break;
            size_t len = data[off++];
            if (len > size - off)
                len = size - off;
            const uint8_t *p = data + off;
            off += len;
            if (op % 6 == 0) {
                if (len)
                    R.clean = 0;
                feed(&R, p, len, split);
            } else if (op % 6 == 1) {
                send_frame(&R, p, len, (uint32_t)len, 0, 0, split);
            } else if (op % 6 == 2) {
                if (lf > TM2__SC_DATA_MAX)
                    R.clean = 0;
                send_frame(&R, p, len, lf, 0, 0, split);
            } else {
                R.clean = 0;
                send_frame(&R, p, len, (uint32_t)len, 1, flip_at % (TM2__SC_FRAME_SIZE * 8), split);
            }
            break;
        }
        case 3:
            if (off < size)
                R.room = (size_t)data[off++] * 5 + 1;
            break;
        case 5: {
            int r = tm2__sc_eof(&R.sc);
            if (R.err)
                CHECK(r == R.err);
            else if (R.clean)
                CHECK(r == 0);
            ended = 1;
            break;
        }
        }
    }

    if (R.clean) {
        CHECK(!R.err);
        CHECK(R.got_len == R.want_len);
        CHECK(memcmp(R.got, R.want, R.want_len) == 0);
    }
    tm2__sc_close(&R.sc);
    tm2__aead_wipe(&R.peer);
    free(R.got);
    free(R.want);
    return 0;
}
