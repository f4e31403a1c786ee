/* Internal: the secret connection (WIRE.md section 4) as a sans-I/O core.
 *
 * One tm2__sc is one side of one connection. It owns no socket, clock or
 * thread: the caller moves bytes between it and the network and enforces the
 * handshake deadline. The struct is caller-allocated and small: the
 * handshake's state is allocated by tm2__sc_init and released when the
 * handshake is over, and a frame buffer only while a frame arrived in part
 * (or its plaintext was not all handed out); tm2__sc_close() frees both.
 *
 * Life cycle
 *   tm2__sc_init()             ephemeral key chosen, 35-byte key message queued
 *   loop: tm2__sc_hs_output()  bytes to send (copy out, any piece size)
 *         tm2__sc_hs_input()   received bytes (any piece size) until it returns 0
 *   drain tm2__sc_hs_output()  our auth frame may still be queued
 *   tm2__sc_seal() / tm2__sc_open() for the rest of the session
 *   tm2__sc_close()            always, also after an error
 *
 * Deferred public-key work (tm2__sc_init_ex with defer): the three expensive
 * steps of a handshake are handed out as pure jobs instead of being computed
 * inside the calls above, so that the caller can run them on other threads:
 *   KEYPAIR  X25519 public key of our ephemeral secret     (after init)
 *   AGREE    X25519 agreement, HKDF split, Ed25519 signature of the challenge
 *            (after the peer's key message)
 *   VERIFY   Ed25519 verification of the peer's signature  (after its auth)
 * When tm2__sc_job_pending() says a job waits, the caller copies it out with
 * tm2__sc_job_take(), runs tm2__sc_job_run() on the copy (any thread; it
 * touches nothing but the copy) and hands the result back with
 * tm2__sc_job_finish() on the struct's thread; then it drains
 * tm2__sc_hs_output() and resumes tm2__sc_hs_input(). Without defer the same
 * jobs run inline and none is ever pending. AGREE is one job, not three
 * (agreement, derivation, signature): each step needs the previous one's
 * output and none of the session's state, so splitting it would only add
 * round trips through the caller's queue.
 *
 * Errors: every negative code except TM2_EAGAIN, TM2_ENOSPC, TM2_EINVAL and
 * TM2_ESTATE ends the session: it is sticky (every later call returns it) and
 * all key material is wiped at once. Protocol errors: TM2_EDECODE, TM2_EFIELD,
 * TM2_EWIRETYPE, TM2_ETRUNC, TM2_ETRAILING, TM2_EOVERFLOW, TM2_ETOOBIG
 * (malformed or oversized handshake message), TM2_ELOWORDER, TM2_EAUTH,
 * TM2_EDECRYPT, TM2_EFRAME, TM2_ENONCE, TM2_ECLOSED (stream ended early),
 * plus TM2_ENOMEM (no memory for a buffer) / TM2_EIO from the frame backend.
 *
 * Not thread-safe: one thread at a time per struct (the libuv loop thread). */
#ifndef TM2_CONN_SECRET_CONN_H
#define TM2_CONN_SECRET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/aead.h"
#include "tm2p2p/error.h"
#include "tm2p2p/key.h"

#define TM2__SC_DATA_MAX     1024                 /* payload bytes per frame */
#define TM2__SC_FRAME_SIZE   TM2__FRAME_SEALED    /* 1044 bytes on the wire per frame */
#define TM2__SC_EPH_MSG_SIZE 35                   /* sized amino [32]byte */
#define TM2__SC_AUTH_MSG_SIZE 101                 /* sized amino auth message we send */
#define TM2__SC_MAX_MSG      (1024u * 1024u)      /* reader limit for both handshake messages */

/* Largest well-formed handshake messages a peer can send (prefix included):
 * every varint may be over-long (10 bytes) as Go tolerates. Anything longer
 * cannot decode (key message) or cannot carry a 64-byte signature (auth), so
 * it is rejected as TM2_ETOOBIG without being buffered. */
#define TM2__SC_EPH_IN_MAX   (10 + 10 + 10 + 32)
#define TM2__SC_AUTH_IN_MAX  (10 + 10 + 10 + 32 + 10 + 10 + 64)

enum tm2__sc_state {
    TM2__SC_HS_EPH = 1,   /* waiting for the peer's ephemeral key */
    TM2__SC_HS_AUTH,      /* waiting for the peer's auth message */
    TM2__SC_OPEN,         /* authenticated; seal/open */
    TM2__SC_DEAD,         /* failed or closed */
};

/* Handshake-only state (keys, queues), allocated by tm2__sc_init. */
typedef struct tm2__sc_hs tm2__sc_hs;

enum tm2__sc_job_kind {
    TM2__SC_JOB_KEYPAIR = 1,
    TM2__SC_JOB_AGREE,
    TM2__SC_JOB_VERIFY,
};

/* tm2__sc_hs_input's return value when it stopped for a job (deferred mode). */
#define TM2__SC_JOB 1

/* One job with its inputs and outputs copied in: it shares no memory with the
 * session it came from. Holds secrets (our ephemeral secret, the node key,
 * session keys): tm2__sc_job_run wipes each input secret once used and
 * tm2__sc_job_finish wipes the whole job; a job that is dropped instead must
 * be wiped with tm2__sc_job_wipe. */
typedef struct tm2__sc_job {
    int kind;                           /* enum tm2__sc_job_kind */
    int result;                         /* set by tm2__sc_job_run: 0 or an error */
    bool loc_is_least;                  /* AGREE out */
    uint8_t eph_priv[32];               /* KEYPAIR, AGREE in */
    uint8_t eph_pub[32];                /* KEYPAIR out, AGREE in */
    uint8_t remote_eph[32];             /* AGREE in */
    tm2_node_key key;                   /* AGREE in */
    uint8_t send_key[32], recv_key[32]; /* AGREE out */
    uint8_t challenge[32];              /* AGREE out, VERIFY in */
    uint8_t sig[TM2_SIG_SIZE];          /* AGREE out, VERIFY in */
    uint8_t remote_pub[TM2_PUBKEY_SIZE];/* VERIFY in */
} tm2__sc_job;

typedef struct tm2__sc {
    int state;
    int err;                        /* sticky error, 0 if none */
    bool loc_is_least;
    bool defer;                     /* hand jobs out instead of running them */
    uint8_t job;                    /* kind of the job the handshake waits for, 0 if none */
    bool job_taken;                 /* ... and it was taken (runs elsewhere) */

    tm2__aead send_aead;
    tm2__aead recv_aead;
    uint64_t send_ctr;              /* nonce of the next frame sealed */
    uint64_t recv_ctr;              /* nonce of the next frame opened */

    uint8_t eph_pub[32];
    uint8_t remote_pub[TM2_PUBKEY_SIZE];
    tm2_id remote_id;

    /* Wiped and freed once the peer is authenticated and our handshake
     * output was taken, or at the first error. */
    tm2__sc_hs *hs;

    /* One sealed frame being collected, or once opened in place, the
     * plaintext of that frame not yet handed out (rx[plain_off..+plain_len)).
     * Allocated while either is pending only: frames that arrive whole
     * are opened straight from the input. */
    uint8_t *rx;
    uint16_t rx_fill;
    uint16_t plain_off, plain_len;
} tm2__sc;

/* Starts a handshake as the owner of key (copied; wiped once the challenge is
 * signed). eph_priv == NULL picks a random ephemeral key; tests pass a fixed
 * one. 0, TM2_EINVAL (NULL sc/key), TM2_ENOMEM or TM2_ELOWORDER (unusable
 * eph_priv). On failure sc is still safe to close. */
int tm2__sc_init(tm2__sc *sc, const tm2_node_key *key, const uint8_t eph_priv[32]);

/* tm2__sc_init, with defer: the public-key work is handed out as jobs (see
 * the top of this file). Right after a successful init the KEYPAIR job is
 * pending and nothing is queued for output yet. */
int tm2__sc_init_ex(tm2__sc *sc, const tm2_node_key *key, const uint8_t eph_priv[32],
                    bool defer);

/* Kind of the job the handshake waits for and that was not taken yet; 0 if
 * none. */
int tm2__sc_job_pending(const tm2__sc *sc);

/* Copies the pending job's inputs to *job (and wipes from sc the secrets that
 * only that job needs). 0 or TM2_ESTATE (no job pending). */
int tm2__sc_job_take(tm2__sc *sc, tm2__sc_job *job);

/* Runs a taken job: pure computation on *job alone, thread-safe for distinct
 * jobs. Sets job->result. */
void tm2__sc_job_run(tm2__sc_job *job);

/* Applies a run job to the session it was taken from and wipes *job. 0, or
 * the session's (sticky, fatal) error: TM2_ELOWORDER, TM2_EAUTH, ... After
 * KEYPAIR the key message is queued; after AGREE our auth frame; after VERIFY
 * the peer is authenticated (tm2__sc_established). TM2_ESTATE (non-fatal) if
 * sc does not wait for this job. */
int tm2__sc_job_finish(tm2__sc *sc, tm2__sc_job *job);

/* Wipes a job that will not be finished. */
void tm2__sc_job_wipe(tm2__sc_job *job);

/* Bytes the handshake wants sent, not yet taken. */
size_t tm2__sc_hs_pending(const tm2__sc *sc);

/* Copies up to cap pending handshake bytes to out and marks them taken;
 * returns how many. Works in every state (0 when nothing is queued). */
size_t tm2__sc_hs_output(tm2__sc *sc, uint8_t *out, size_t cap);

/* Feeds len received bytes. *consumed is set to how many were taken; bytes
 * after the end of the peer's auth frame are left for tm2__sc_open (a peer
 * may send data right behind its handshake). Returns 0 when the peer is
 * authenticated (call again: 0 with nothing consumed), TM2_EAGAIN when more
 * input is needed, or a fatal error. Deferred mode: TM2__SC_JOB when it
 * stopped for a job (the input after *consumed was not looked at: feed it
 * again once the job is finished), TM2_ESTATE (non-fatal) while a job is
 * pending or out. */
int tm2__sc_hs_input(tm2__sc *sc, const uint8_t *in, size_t len, size_t *consumed);

/* True once the peer is authenticated (and no error happened). */
bool tm2__sc_established(const tm2__sc *sc);

/* The peer's authenticated Ed25519 key and ID; valid once established. */
const uint8_t *tm2__sc_remote_pubkey(const tm2__sc *sc);
const tm2_id *tm2__sc_remote_id(const tm2__sc *sc);

/* Our ephemeral public key (what the 35-byte message carries). */
const uint8_t *tm2__sc_local_eph_pub(const tm2__sc *sc);

/* The sticky error, 0 if none. */
int tm2__sc_error(const tm2__sc *sc);

/* Wire bytes that sealing len plaintext bytes produces: ceil(len/1024)*1044. */
size_t tm2__sc_sealed_size(size_t len);

/* Seals plaintext into 1044-byte frames written to out (zero padding; a new
 * frame per call, as the reference does per write). Stops when the input is
 * used up or the next frame does not fit: *consumed says how much input was
 * sealed. Returns the bytes written (a multiple of 1044, at most INT_MAX).
 * TM2_ENOSPC (non-fatal) when input remains and cap < 1044; TM2_ESTATE before
 * the handshake ends or while handshake output is still pending; TM2_ENONCE
 * when the send counter is exhausted (no nonce is ever reused). in and out
 * must not overlap. */
int tm2__sc_seal(tm2__sc *sc, const uint8_t *in, size_t len, size_t *consumed,
                 uint8_t *out, size_t cap);

/* Opens received wire bytes into plaintext written to out. Frames may be
 * split anywhere across calls; at most one partial frame is kept inside sc.
 * Stops when the input is used up or out is full (*consumed < len then: call
 * again with the rest). Returns the plaintext bytes written (at most INT_MAX).
 * out[ret..cap) may be overwritten with scratch. Fatal: TM2_EDECRYPT (tag
 * mismatch: tampered, replayed, reordered or misaligned frame), TM2_EFRAME
 * (length field > 1024), TM2_ENONCE, TM2_ENOMEM; the plaintext of that call
 * must then be discarded. TM2_ESTATE before the handshake ends. in and out
 * must not overlap. */
int tm2__sc_open(tm2__sc *sc, const uint8_t *in, size_t len, size_t *consumed,
                 uint8_t *out, size_t cap);

/* Plaintext already opened but not yet handed out by tm2__sc_open. */
size_t tm2__sc_open_pending(const tm2__sc *sc);

/* The peer ended its stream. 0 if that happened at a frame boundary after the
 * handshake; TM2_ETRUNC if a partial frame was pending, TM2_ECLOSED if the
 * handshake had not finished (both fatal, sticky). */
int tm2__sc_eof(tm2__sc *sc);

/* Wipes every secret and buffer and frees the backend contexts. Idempotent;
 * safe after a failed init. Later calls return TM2_ECLOSED. */
void tm2__sc_close(tm2__sc *sc);

/* Tests only: positions both nonce counters (exercises exhaustion). */
void tm2__sc_set_nonces(tm2__sc *sc, uint64_t send_ctr, uint64_t recv_ctr);

/* ---- building blocks, exposed for known-answer tests and benches ---------- */

/* 12-byte nonce: four zero bytes, then the counter little-endian. */
void tm2__sc_nonce(uint64_t ctr, uint8_t nonce[TM2__AEAD_NONCE_SIZE]);

/* True if pub is byte-for-byte one of the 7 blacklisted X25519 points. */
bool tm2__sc_is_low_order(const uint8_t pub[32]);

/* dh = X25519(priv, remote_pub) after the blacklist check; TM2_ELOWORDER for
 * a blacklisted key or an all-zero result. */
int tm2__sc_dh(const uint8_t priv[32], const uint8_t remote_pub[32], uint8_t dh[32]);

/* HKDF split of WIRE.md 4.2 step 7. */
void tm2__sc_derive(const uint8_t dh[32], bool loc_is_least, uint8_t recv_key[32],
                    uint8_t send_key[32], uint8_t challenge[32]);

/* 35-byte key message for pub. */
void tm2__sc_encode_eph(const uint8_t pub[32], uint8_t out[TM2__SC_EPH_MSG_SIZE]);

/* Decodes a key message body (after the length prefix). An empty body is the
 * all-zero key, as in the reference. Amino error codes. */
int tm2__sc_decode_eph_body(const uint8_t *body, size_t len, uint8_t pub[32]);

/* 101-byte auth message for pub and sig. */
void tm2__sc_encode_auth(const uint8_t pub[TM2_PUBKEY_SIZE], const uint8_t sig[TM2_SIG_SIZE],
                         uint8_t out[TM2__SC_AUTH_MSG_SIZE]);

/* Decodes an auth message body; *sig points into body. An absent key is all
 * zeros and an absent signature is empty (both then fail verification). */
int tm2__sc_decode_auth_body(const uint8_t *body, size_t len, uint8_t pub[TM2_PUBKEY_SIZE],
                             const uint8_t **sig, size_t *sig_len);

#endif
