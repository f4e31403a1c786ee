#include "conn/secret_conn.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "codec/amino.h"
#include "crypto/hkdf.h"

static const char hkdf_info[] = "TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN";

/* libsodium's list of X25519 points of order 1, 2, 4 and 8, as the reference
 * compares them: byte for byte, top bit included. */
static const uint8_t low_order[7][32] = {
    {0},
    {1},
    {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
     0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
    {0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
     0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
    {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
};

static inline void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- building blocks -------------------------------------------------------- */

void tm2__sc_nonce(uint64_t ctr, uint8_t nonce[TM2__AEAD_NONCE_SIZE])
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (uint8_t)(ctr >> (8 * i));
}

bool tm2__sc_is_low_order(const uint8_t pub[32])
{
    /* Constant time: the key is the peer's, but there is no reason to leak
     * which entry matched. */
    int hit = 0;
    for (size_t i = 0; i < sizeof low_order / sizeof low_order[0]; i++)
        hit |= sodium_memcmp(pub, low_order[i], 32) == 0;
    return hit != 0;
}

int tm2__sc_dh(const uint8_t priv[32], const uint8_t remote_pub[32], uint8_t dh[32])
{
    if (tm2__sc_is_low_order(remote_pub))
        return TM2_ELOWORDER;
    /* libsodium refuses some more low-order inputs (top bit set) and an
     * all-zero result; the reference reaches the same verdict through its
     * all-zero check, so both end as TM2_ELOWORDER. */
    if (crypto_scalarmult(dh, priv, remote_pub) != 0 || sodium_is_zero(dh, 32)) {
        sodium_memzero(dh, 32);
        return TM2_ELOWORDER;
    }
    return 0;
}

void tm2__sc_derive(const uint8_t dh[32], bool loc_is_least, uint8_t recv_key[32],
                    uint8_t send_key[32], uint8_t challenge[32])
{
    uint8_t okm[96];
    tm2__hkdf_sha256(NULL, 0, dh, 32, (const uint8_t *)hkdf_info, sizeof hkdf_info - 1, okm,
                     sizeof okm);
    memcpy(recv_key, okm + (loc_is_least ? 0 : 32), 32);
    memcpy(send_key, okm + (loc_is_least ? 32 : 0), 32);
    memcpy(challenge, okm + 64, 32);
    sodium_memzero(okm, sizeof okm);
}

void tm2__sc_encode_eph(const uint8_t pub[32], uint8_t out[TM2__SC_EPH_MSG_SIZE])
{
    out[0] = 0x22;
    out[1] = 0x0a;
    out[2] = 0x20;
    memcpy(out + 3, pub, 32);
}

int tm2__sc_decode_eph_body(const uint8_t *body, size_t len, uint8_t pub[32])
{
    tm2__amino_rd r;
    tm2__amino_rd_init(&r, body, len);
    memset(pub, 0, 32);
    if (tm2__amino_rd_done(&r))
        return 0;
    uint32_t field;
    unsigned wt;
    int e = tm2__amino_key(&r, &field, &wt);
    if (e)
        return e;
    if (field != 1)
        return TM2_EFIELD;
    if (wt != TM2_WT_BYTES)
        return TM2_EWIRETYPE;
    const uint8_t *p;
    size_t n;
    if ((e = tm2__amino_bytes(&r, &p, &n)))
        return e;
    if (n != 32)
        return TM2_EDECODE;
    if (!tm2__amino_rd_done(&r)) {
        /* Whatever follows is a second field 1 or an unknown field. */
        if ((e = tm2__amino_key(&r, &field, &wt)))
            return e;
        return TM2_EFIELD;
    }
    memcpy(pub, p, 32);
    return 0;
}

void tm2__sc_encode_auth(const uint8_t pub[TM2_PUBKEY_SIZE], const uint8_t sig[TM2_SIG_SIZE],
                         uint8_t out[TM2__SC_AUTH_MSG_SIZE])
{
    out[0] = 0x64;
    out[1] = 0x0a;
    out[2] = 0x20;
    memcpy(out + 3, pub, 32);
    out[35] = 0x12;
    out[36] = 0x40;
    memcpy(out + 37, sig, 64);
}

int tm2__sc_decode_auth_body(const uint8_t *body, size_t len, uint8_t pub[TM2_PUBKEY_SIZE],
                             const uint8_t **sig, size_t *sig_len)
{
    tm2__amino_rd r;
    tm2__amino_rd_init(&r, body, len);
    memset(pub, 0, TM2_PUBKEY_SIZE);
    *sig = NULL;
    *sig_len = 0;
    uint32_t last = 0;
    while (!tm2__amino_rd_done(&r)) {
        uint32_t field;
        unsigned wt;
        int e = tm2__amino_key(&r, &field, &wt);
        if (e)
            return e;
        if (field <= last || field > 2)
            return TM2_EFIELD;
        last = field;
        if (wt != TM2_WT_BYTES)
            return TM2_EWIRETYPE;
        const uint8_t *p;
        size_t n;
        if ((e = tm2__amino_bytes(&r, &p, &n)))
            return e;
        if (field == 1) {
            if (n != TM2_PUBKEY_SIZE)
                return TM2_EDECODE;
            memcpy(pub, p, TM2_PUBKEY_SIZE);
        } else {
            *sig = p;
            *sig_len = n;
        }
    }
    return 0;
}

/* ---- session ---------------------------------------------------------------- */

struct tm2__sc_hs {
    /* Secrets; each is wiped as soon as it is used or handed to a job. */
    tm2_node_key key;
    uint8_t eph_priv[32];
    uint8_t challenge[32];
    uint8_t remote_eph[32];
    uint8_t local_pub[TM2_PUBKEY_SIZE];
    uint8_t remote_sig[TM2_SIG_SIZE];
    /* Output queue: our key message, then our sealed auth frame. */
    uint8_t tx[TM2__SC_EPH_MSG_SIZE + TM2__SC_FRAME_SIZE];
    uint16_t tx_len, tx_off;
    /* Input: the peer's key message, then its auth message reassembled
     * across frames. */
    uint8_t in[TM2__SC_AUTH_IN_MAX];
    uint16_t in_fill;
};

static void hs_free(tm2__sc *sc)
{
    if (!sc->hs)
        return;
    sodium_memzero(sc->hs, sizeof *sc->hs);
    free(sc->hs);
    sc->hs = NULL;
}

/* The frame buffer goes once nothing is in it: an idle connection keeps
 * none. */
static void rx_release(tm2__sc *sc)
{
    if (!sc->rx || sc->rx_fill || sc->plain_len)
        return;
    sodium_memzero(sc->rx, TM2__SC_FRAME_SIZE);
    free(sc->rx);
    sc->rx = NULL;
    sc->plain_off = 0;
}

static bool rx_get(tm2__sc *sc)
{
    return sc->rx || (sc->rx = malloc(TM2__SC_FRAME_SIZE)) != NULL;
}

static void wipe_secrets(tm2__sc *sc)
{
    tm2__aead_wipe(&sc->send_aead);
    tm2__aead_wipe(&sc->recv_aead);
    hs_free(sc);
    sc->rx_fill = sc->plain_len = 0;
    rx_release(sc);
}

/* Handshake output not yet taken. */
static bool hs_output_pending(const tm2__sc *sc)
{
    return sc->hs && sc->hs->tx_len != sc->hs->tx_off;
}

static int fail(tm2__sc *sc, int err)
{
    if (!sc->err)
        sc->err = err;
    sc->state = TM2__SC_DEAD;
    sc->job = 0;
    sc->job_taken = false;
    wipe_secrets(sc);
    return sc->err;
}

/* ---- jobs ------------------------------------------------------------------- */

void tm2__sc_job_wipe(tm2__sc_job *job) { sodium_memzero(job, sizeof *job); }

int tm2__sc_job_pending(const tm2__sc *sc) { return sc->job_taken ? 0 : sc->job; }

int tm2__sc_job_take(tm2__sc *sc, tm2__sc_job *job)
{
    if (!sc->job || sc->job_taken || !sc->hs)
        return TM2_ESTATE;
    tm2__sc_hs *h = sc->hs;
    memset(job, 0, sizeof *job);
    job->kind = sc->job;
    switch (sc->job) {
    case TM2__SC_JOB_KEYPAIR:
        /* The secret stays here too: AGREE needs it later. */
        memcpy(job->eph_priv, h->eph_priv, 32);
        break;
    case TM2__SC_JOB_AGREE:
        memcpy(job->eph_priv, h->eph_priv, 32);
        memcpy(job->eph_pub, sc->eph_pub, 32);
        memcpy(job->remote_eph, h->remote_eph, 32);
        job->key = h->key;
        sodium_memzero(h->eph_priv, sizeof h->eph_priv);
        sodium_memzero(&h->key, sizeof h->key);
        break;
    case TM2__SC_JOB_VERIFY:
        memcpy(job->remote_pub, sc->remote_pub, TM2_PUBKEY_SIZE);
        memcpy(job->sig, h->remote_sig, TM2_SIG_SIZE);
        memcpy(job->challenge, h->challenge, 32);
        sodium_memzero(h->challenge, sizeof h->challenge);
        break;
    default:
        return TM2_ESTATE;
    }
    sc->job_taken = true;
    return 0;
}

void tm2__sc_job_run(tm2__sc_job *job)
{
    uint8_t dh[32];
    job->result = 0;
    switch (job->kind) {
    case TM2__SC_JOB_KEYPAIR:
        if (crypto_scalarmult_base(job->eph_pub, job->eph_priv) != 0)
            job->result = TM2_ELOWORDER;
        sodium_memzero(job->eph_priv, sizeof job->eph_priv);
        break;
    case TM2__SC_JOB_AGREE:
        job->result = tm2__sc_dh(job->eph_priv, job->remote_eph, dh);
        sodium_memzero(job->eph_priv, sizeof job->eph_priv);
        if (!job->result) {
            /* Equal keys make both sides "least"; the auth frames then fail
             * to open, as in the reference. */
            job->loc_is_least = memcmp(job->eph_pub, job->remote_eph, 32) <= 0;
            tm2__sc_derive(dh, job->loc_is_least, job->recv_key, job->send_key,
                           job->challenge);
            sodium_memzero(dh, sizeof dh);
            tm2_node_key_sign(&job->key, job->challenge, sizeof job->challenge, job->sig);
        }
        sodium_memzero(&job->key, sizeof job->key);
        break;
    case TM2__SC_JOB_VERIFY:
        if (crypto_sign_verify_detached(job->sig, job->challenge, sizeof job->challenge,
                                        job->remote_pub) != 0)
            job->result = TM2_EAUTH;
        sodium_memzero(job->challenge, sizeof job->challenge);
        break;
    default:
        job->result = TM2_EINVAL;
        break;
    }
}

/* AGREE's results: the session keys, then our auth frame (nonce 0). */
static int agree_done(tm2__sc *sc, const tm2__sc_job *job)
{
    tm2__sc_hs *h = sc->hs;
    uint8_t *frame = h->tx + h->tx_len;
    uint8_t nonce[TM2__AEAD_NONCE_SIZE];
    sc->loc_is_least = job->loc_is_least;
    int e = tm2__aead_init(&sc->send_aead, job->send_key);
    if (!e)
        e = tm2__aead_init(&sc->recv_aead, job->recv_key);
    if (e)
        return e;
    memcpy(h->challenge, job->challenge, 32);
    put_le32(frame, TM2__SC_AUTH_MSG_SIZE);
    tm2__sc_encode_auth(h->local_pub, job->sig, frame + 4);
    memset(frame + 4 + TM2__SC_AUTH_MSG_SIZE, 0, TM2__SC_DATA_MAX - TM2__SC_AUTH_MSG_SIZE);
    tm2__sc_nonce(sc->send_ctr, nonce);
    if ((e = tm2__aead_seal_frame(&sc->send_aead, nonce, frame, frame)))
        return e;
    sc->send_ctr++;
    h->tx_len = (uint16_t)(h->tx_len + TM2__SC_FRAME_SIZE);
    return 0;
}

int tm2__sc_job_finish(tm2__sc *sc, tm2__sc_job *job)
{
    if (sc->err) {
        tm2__sc_job_wipe(job);
        return sc->err;
    }
    if (!sc->job || !sc->job_taken || job->kind != sc->job || !sc->hs) {
        tm2__sc_job_wipe(job);
        return TM2_ESTATE;
    }
    sc->job = 0;
    sc->job_taken = false;
    int e = job->result;
    tm2__sc_hs *h = sc->hs;
    if (!e) {
        switch (job->kind) {
        case TM2__SC_JOB_KEYPAIR:
            memcpy(sc->eph_pub, job->eph_pub, 32);
            tm2__sc_encode_eph(sc->eph_pub, h->tx);
            h->tx_len = TM2__SC_EPH_MSG_SIZE;
            break;
        case TM2__SC_JOB_AGREE:
            e = agree_done(sc, job);
            break;
        case TM2__SC_JOB_VERIFY:
            tm2_id_from_pubkey(sc->remote_pub, &sc->remote_id);
            sc->state = TM2__SC_OPEN;
            if (!hs_output_pending(sc))
                hs_free(sc);
            rx_release(sc);
            break;
        }
    }
    tm2__sc_job_wipe(job);
    return e ? fail(sc, e) : 0;
}

/* The handshake needs a job: hands it out (TM2__SC_JOB) or, without defer,
 * runs it here (0 or a fatal error). */
static int need_job(tm2__sc *sc, int kind)
{
    sc->job = (uint8_t)kind;
    sc->job_taken = false;
    if (sc->defer)
        return TM2__SC_JOB;
    tm2__sc_job job;
    int e = tm2__sc_job_take(sc, &job);
    if (e)
        return fail(sc, e);
    tm2__sc_job_run(&job);
    return tm2__sc_job_finish(sc, &job);
}

/* ---- session ---------------------------------------------------------------- */

int tm2__sc_init_ex(tm2__sc *sc, const tm2_node_key *key, const uint8_t eph_priv[32],
                    bool defer)
{
    if (!sc)
        return TM2_EINVAL;
    memset(sc, 0, sizeof *sc);
    sc->state = TM2__SC_DEAD;
    if (!key) {
        sc->err = TM2_EINVAL;
        return TM2_EINVAL;
    }
    if (sodium_init() < 0)
        return fail(sc, TM2_EIO);
    tm2__sc_hs *h = sc->hs = calloc(1, sizeof *sc->hs);
    if (!h)
        return fail(sc, TM2_ENOMEM);
    h->key = *key;
    memcpy(h->local_pub, tm2_node_key_pubkey(key), TM2_PUBKEY_SIZE);
    if (eph_priv)
        memcpy(h->eph_priv, eph_priv, 32);
    else
        randombytes_buf(h->eph_priv, 32);
    sc->defer = defer;
    sc->state = TM2__SC_HS_EPH;
    int e = need_job(sc, TM2__SC_JOB_KEYPAIR);
    return e == TM2__SC_JOB ? 0 : e;
}

int tm2__sc_init(tm2__sc *sc, const tm2_node_key *key, const uint8_t eph_priv[32])
{
    return tm2__sc_init_ex(sc, key, eph_priv, false);
}

size_t tm2__sc_hs_pending(const tm2__sc *sc)
{
    return sc->hs ? (size_t)(sc->hs->tx_len - sc->hs->tx_off) : 0;
}

size_t tm2__sc_hs_output(tm2__sc *sc, uint8_t *out, size_t cap)
{
    size_t n = tm2__sc_hs_pending(sc);
    if (n > cap)
        n = cap;
    if (!n)
        return 0;
    tm2__sc_hs *h = sc->hs;
    memcpy(out, h->tx + h->tx_off, n);
    h->tx_off = (uint16_t)(h->tx_off + n);
    if (h->tx_off == h->tx_len) {
        /* The auth frame is ciphertext; still, nothing stays that is not needed. */
        sodium_memzero(h->tx, h->tx_len);
        h->tx_off = h->tx_len = 0;
        if (sc->state == TM2__SC_OPEN)
            hs_free(sc);
    }
    return n;
}

/* Opens the complete frame in rx in place; its payload becomes rx[4..4+n). */
static int open_rx(tm2__sc *sc)
{
    uint8_t nonce[TM2__AEAD_NONCE_SIZE];
    if (sc->recv_ctr == UINT64_MAX)
        return TM2_ENONCE;
    tm2__sc_nonce(sc->recv_ctr, nonce);
    int e = tm2__aead_open_frame(&sc->recv_aead, nonce, sc->rx, sc->rx);
    if (e)
        return e;
    sc->recv_ctr++;
    sc->rx_fill = 0;
    uint32_t n = get_le32(sc->rx);
    if (n > TM2__SC_DATA_MAX)
        return TM2_EFRAME;
    sc->plain_off = 4;
    sc->plain_len = (uint16_t)n;
    return 0;
}

/* Appends the opened payload to the auth message; returns 0 when the message
 * is complete and decoded (left-over payload stays pending for open; the
 * signature is still to be verified), TM2_EAGAIN for more, or an error. */
static int absorb_auth(tm2__sc *sc)
{
    tm2__sc_hs *h = sc->hs;
    size_t room = sizeof h->in - h->in_fill;
    size_t take = sc->plain_len < room ? sc->plain_len : room;
    memcpy(h->in + h->in_fill, sc->rx + sc->plain_off, take);
    size_t have = h->in_fill + take;

    const uint8_t *body;
    size_t body_len, used;
    /* The limit is the largest auth message that can verify, far below the
     * reader's 1 MiB: a longer one is refused as soon as its prefix says so. */
    int e = tm2__amino_sized(h->in, have, sizeof h->in, &body, &body_len, &used);
    if (e == TM2_EAGAIN) {
        h->in_fill = (uint16_t)have;
        sc->plain_len = 0;
        return TM2_EAGAIN;
    }
    if (e)
        return e;
    size_t from_frame = used - h->in_fill;
    sc->plain_off = (uint16_t)(sc->plain_off + from_frame);
    sc->plain_len = (uint16_t)(sc->plain_len - from_frame);

    const uint8_t *sig;
    size_t sig_len;
    if ((e = tm2__sc_decode_auth_body(body, body_len, sc->remote_pub, &sig, &sig_len)))
        return e;
    if (sig_len != TM2_SIG_SIZE)
        return TM2_EAUTH;
    memcpy(h->remote_sig, sig, TM2_SIG_SIZE);
    return 0;
}

int tm2__sc_hs_input(tm2__sc *sc, const uint8_t *in, size_t len, size_t *consumed)
{
    *consumed = 0;
    if (sc->err)
        return sc->err;
    if (sc->state == TM2__SC_OPEN)
        return 0;
    if (sc->state == TM2__SC_DEAD)
        return TM2_ECLOSED;
    if (sc->job)
        return TM2_ESTATE;
    size_t used = 0;
    int e;

    tm2__sc_hs *h = sc->hs;
    if (sc->state == TM2__SC_HS_EPH) {
        size_t room = TM2__SC_EPH_IN_MAX - h->in_fill;
        size_t take = len < room ? len : room;
        memcpy(h->in + h->in_fill, in, take);
        size_t have = h->in_fill + take;
        const uint8_t *body;
        size_t body_len, msg_len;
        e = tm2__amino_sized(h->in, have, TM2__SC_EPH_IN_MAX, &body, &body_len, &msg_len);
        if (e == TM2_EAGAIN) {
            h->in_fill = (uint16_t)have;
            *consumed = take;
            return TM2_EAGAIN;
        }
        if (e)
            return fail(sc, e);
        used = msg_len - h->in_fill;
        e = tm2__sc_decode_eph_body(body, body_len, h->remote_eph);
        sodium_memzero(h->in, sizeof h->in);
        h->in_fill = 0;
        if (e)
            return fail(sc, e);
        sc->state = TM2__SC_HS_AUTH;
        *consumed = used;
        if ((e = need_job(sc, TM2__SC_JOB_AGREE)))
            return e;
    }

    for (;;) {
        size_t take = TM2__SC_FRAME_SIZE - sc->rx_fill;
        if (take > len - used)
            take = len - used;
        if (!take) {
            *consumed = used;
            return TM2_EAGAIN;   /* nothing to collect yet: no buffer either */
        }
        if (!rx_get(sc))
            return fail(sc, TM2_ENOMEM);
        memcpy(sc->rx + sc->rx_fill, in + used, take);
        sc->rx_fill = (uint16_t)(sc->rx_fill + take);
        used += take;
        *consumed = used;
        if (sc->rx_fill < TM2__SC_FRAME_SIZE)
            return TM2_EAGAIN;
        if ((e = open_rx(sc)))
            return fail(sc, e);
        e = absorb_auth(sc);
        if (e == TM2_EAGAIN)
            continue;
        if (e)
            return fail(sc, e);
        /* Inline: verified, and open now (0), or failed. */
        return need_job(sc, TM2__SC_JOB_VERIFY);
    }
}

bool tm2__sc_established(const tm2__sc *sc) { return sc->state == TM2__SC_OPEN && !sc->err; }

const uint8_t *tm2__sc_remote_pubkey(const tm2__sc *sc) { return sc->remote_pub; }

const tm2_id *tm2__sc_remote_id(const tm2__sc *sc) { return &sc->remote_id; }

const uint8_t *tm2__sc_local_eph_pub(const tm2__sc *sc) { return sc->eph_pub; }

int tm2__sc_error(const tm2__sc *sc) { return sc->err; }

size_t tm2__sc_sealed_size(size_t len)
{
    return (len + TM2__SC_DATA_MAX - 1) / TM2__SC_DATA_MAX * TM2__SC_FRAME_SIZE;
}

int tm2__sc_seal(tm2__sc *sc, const uint8_t *in, size_t len, size_t *consumed,
                 uint8_t *out, size_t cap)
{
    *consumed = 0;
    if (sc->err)
        return sc->err;
    if (sc->state != TM2__SC_OPEN || hs_output_pending(sc))
        return TM2_ESTATE;
    if (len == 0)
        return 0;
    if (cap < TM2__SC_FRAME_SIZE)
        return TM2_ENOSPC;
    if (cap > INT_MAX)
        cap = INT_MAX;

    size_t used = 0, w = 0;
    uint8_t nonce[TM2__AEAD_NONCE_SIZE];
    tm2__sc_nonce(0, nonce);
    while (used < len && cap - w >= TM2__SC_FRAME_SIZE) {
        if (sc->send_ctr == UINT64_MAX)
            return fail(sc, TM2_ENONCE);
        size_t n = len - used < TM2__SC_DATA_MAX ? len - used : TM2__SC_DATA_MAX;
        uint8_t *f = out + w;
        /* The frame is built where it is sealed: one copy, the one the
         * AEAD's contiguous input needs. */
        put_le32(f, (uint32_t)n);
        memcpy(f + 4, in + used, n);
        if (n < TM2__SC_DATA_MAX)
            memset(f + 4 + n, 0, TM2__SC_DATA_MAX - n);
        for (int i = 0; i < 8; i++)
            nonce[4 + i] = (uint8_t)(sc->send_ctr >> (8 * i));
        int e = tm2__aead_seal_frame(&sc->send_aead, nonce, f, f);
        if (e)
            return fail(sc, e);
        sc->send_ctr++;
        used += n;
        w += TM2__SC_FRAME_SIZE;
    }
    *consumed = used;
    return (int)w;
}

/* Hands out pending plaintext from rx; returns bytes copied. */
static size_t drain_plain(tm2__sc *sc, uint8_t *out, size_t room)
{
    size_t k = sc->plain_len < room ? sc->plain_len : room;
    memcpy(out, sc->rx + sc->plain_off, k);
    sc->plain_off = (uint16_t)(sc->plain_off + k);
    sc->plain_len = (uint16_t)(sc->plain_len - k);
    return k;
}

int tm2__sc_open(tm2__sc *sc, const uint8_t *in, size_t len, size_t *consumed,
                 uint8_t *out, size_t cap)
{
    *consumed = 0;
    if (sc->err)
        return sc->err;
    if (sc->state != TM2__SC_OPEN)
        return TM2_ESTATE;
    if (cap > INT_MAX)
        cap = INT_MAX;

    size_t used = 0, w = 0;
    uint8_t nonce[TM2__AEAD_NONCE_SIZE];
    int e;
    tm2__sc_nonce(0, nonce);
    for (;;) {
        if (sc->plain_len) {
            w += drain_plain(sc, out + w, cap - w);
            if (sc->plain_len)
                break;                      /* out is full */
        }
        size_t avail = len - used;
        if (sc->rx_fill || avail < TM2__SC_FRAME_SIZE || cap - w < TM2__SC_DATA_MAX + 4) {
            /* A frame split across calls, or too little room to open
             * straight into out: go through rx. */
            if (avail == 0)
                break;
            if (!rx_get(sc)) {
                e = TM2_ENOMEM;
                goto failed;
            }
            size_t take = TM2__SC_FRAME_SIZE - sc->rx_fill;
            if (take > avail)
                take = avail;
            memcpy(sc->rx + sc->rx_fill, in + used, take);
            sc->rx_fill = (uint16_t)(sc->rx_fill + take);
            used += take;
            if (sc->rx_fill < TM2__SC_FRAME_SIZE)
                break;
            if ((e = open_rx(sc)))
                goto failed;
            continue;
        }

        /* Fast path: a whole frame in the input and room for its full
         * plaintext in out. It is opened straight into out so that its
         * payload lands at out + w; the 4-byte length field then falls on
         * the last 4 bytes already produced, which are saved and put back. */
        if (sc->recv_ctr == UINT64_MAX) {
            e = TM2_ENONCE;
            goto failed;
        }
        for (int i = 0; i < 8; i++)
            nonce[4 + i] = (uint8_t)(sc->recv_ctr >> (8 * i));
        uint32_t n;
        if (w >= 4) {
            uint8_t *f = out + w - 4;
            uint8_t saved[4];
            memcpy(saved, f, 4);
            e = tm2__aead_open_frame(&sc->recv_aead, nonce, in + used, f);
            n = get_le32(f);
            memcpy(f, saved, 4);
        } else {
            uint8_t *f = out + w;
            e = tm2__aead_open_frame(&sc->recv_aead, nonce, in + used, f);
            n = get_le32(f);
            if (!e && n <= TM2__SC_DATA_MAX)
                memmove(f, f + 4, n);
        }
        if (e)
            goto failed;
        sc->recv_ctr++;
        used += TM2__SC_FRAME_SIZE;
        if (n > TM2__SC_DATA_MAX) {
            e = TM2_EFRAME;
            goto failed;
        }
        w += n;
    }
    rx_release(sc);
    *consumed = used;
    return (int)w;

failed:
    /* The failing frame's unauthenticated plaintext was already zeroed by
     * the backend; what was opened before it is the caller's to drop. */
    *consumed = used;
    return fail(sc, e);
}

size_t tm2__sc_open_pending(const tm2__sc *sc) { return sc->plain_len; }

int tm2__sc_eof(tm2__sc *sc)
{
    if (sc->err)
        return sc->err;
    if (sc->state == TM2__SC_OPEN)
        return sc->rx_fill ? fail(sc, TM2_ETRUNC) : 0;
    return fail(sc, TM2_ECLOSED);
}

void tm2__sc_close(tm2__sc *sc)
{
    if (!sc)
        return;
    wipe_secrets(sc);
    sc->state = TM2__SC_DEAD;
    sc->job = 0;
    sc->job_taken = false;
    if (!sc->err)
        sc->err = TM2_ECLOSED;
}

void tm2__sc_set_nonces(tm2__sc *sc, uint64_t send_ctr, uint64_t recv_ctr)
{
    sc->send_ctr = send_ctr;
    sc->recv_ctr = recv_ctr;
}
