/* Internal: ChaCha20-Poly1305 (IETF, RFC 8439) on whole secret-connection
 * frames, behind one interface so the backend is a build-time choice.
 *
 * The backend is OpenSSL libcrypto when the build found it (about 1.35x faster
 * than libsodium 1.0.18 on 1028-byte frames on x86-64 with AVX-512; see
 * bench/bench_secret_conn.c), libsodium otherwise. Either way a tm2__aead
 * holds one key and allocates nothing; seal and open may be used on the same
 * object. With libcrypto, each thread has one sealing and one opening cipher
 * context, allocated on first use and freed at thread exit, that take the
 * key of whichever tm2__aead uses them (wipe clears this thread's copy; a
 * context on another thread keeps it until its next re-key or exit). */
#ifndef TM2_CRYPTO_AEAD_H
#define TM2_CRYPTO_AEAD_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"

#define TM2__AEAD_KEY_SIZE   32
#define TM2__AEAD_NONCE_SIZE 12
#define TM2__AEAD_TAG_SIZE   16
#define TM2__FRAME_PLAIN     1028   /* 4-byte length + 1024 data */
#define TM2__FRAME_SEALED    (TM2__FRAME_PLAIN + TM2__AEAD_TAG_SIZE)

/* The layout does not depend on the backend, so code built without the
 * library's private definitions embeds it safely. */
typedef struct tm2__aead {
    uint8_t key[TM2__AEAD_KEY_SIZE];
    uint64_t serial;                      /* libcrypto: names the key in the
                                           * per-thread contexts; 0 = none */
    int ready;
} tm2__aead;

/* Name of the frame backend ("openssl" or "libsodium"). */
const char *tm2__aead_backend(void);

/* Sets up a with key. 0 (the signature keeps room for a backend that
 * can fail). a must be wiped afterwards. */
int tm2__aead_init(tm2__aead *a, const uint8_t key[TM2__AEAD_KEY_SIZE]);

/* Seals one 1028-byte plaintext frame into 1044 bytes (ciphertext || tag),
 * empty AAD. out may equal in (in place); other overlaps are not allowed.
 * 0 or TM2_ESTATE (a not initialised) / TM2_ENOMEM (no cipher context for
 * this thread) / TM2_EIO (backend failure). */
int tm2__aead_seal_frame(tm2__aead *a, const uint8_t nonce[TM2__AEAD_NONCE_SIZE],
                         const uint8_t *in, uint8_t *out);

/* Opens one 1044-byte sealed frame into 1028 bytes of plaintext; out may
 * equal in. On TM2_EDECRYPT the 1028 output bytes are zeroed (unauthenticated
 * plaintext never survives). */
int tm2__aead_open_frame(tm2__aead *a, const uint8_t nonce[TM2__AEAD_NONCE_SIZE],
                         const uint8_t *in, uint8_t *out);

/* Forgets the key (and this thread's context copy of it). Idempotent; safe
 * on a zeroed struct. */
void tm2__aead_wipe(tm2__aead *a);

#endif
