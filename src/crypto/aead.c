#include "crypto/aead.h"

#include <string.h>

#include <sodium.h>

#if defined(TM2_AEAD_OPENSSL)
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

const char *tm2__aead_backend(void) { return "openssl"; }

/* A cipher context costs about 1 KiB and a connection needs two, so
 * contexts are per thread, not per key: one sealing and one opening, each
 * loaded with the key of the last tm2__aead that used it. A connection's
 * frames go through one call per socket read or write, so a thread serving
 * many connections re-keys (about 80 ns) at most once per call, against
 * about 1 us per frame. */
enum { ENC = 1, DEC = 0 };

/* initial-exec: a plain offset from the thread pointer, no lookup call per
 * frame (the library is linked, not loaded late with dlopen). */
static _Thread_local __attribute__((tls_model("initial-exec"))) struct {
    EVP_CIPHER_CTX *ctx[2];     /* [DEC], [ENC] */
    uint64_t owner[2];          /* serial of the key loaded, 0 = none */
} tl;

static atomic_uint_fast64_t serials;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static bool tl_key_ok;

/* At thread exit: the contexts go with the thread (freeing clears the key). */
static void tl_free(void *unused)
{
    (void)unused;
    for (int i = 0; i < 2; i++) {
        EVP_CIPHER_CTX_free(tl.ctx[i]);
        tl.ctx[i] = NULL;
        tl.owner[i] = 0;
    }
}

static void tl_key_init(void) { tl_key_ok = pthread_key_create(&tl_key, tl_free) == 0; }

/* Sets *out to this thread's context for direction enc, loaded with a's
 * key and the frame's nonce: one initialisation, the key only when the
 * context last served another connection. */
static int ctx_for(const tm2__aead *a, int enc, const uint8_t *nonce, EVP_CIPHER_CTX **out)
{
    EVP_CIPHER_CTX *c = tl.ctx[enc];
    if (!c) {
        pthread_once(&tl_once, tl_key_init);
        /* Without a destructor the contexts would outlive the thread. */
        if (!tl_key_ok || pthread_setspecific(tl_key, &tl) != 0)
            return TM2_ENOMEM;
        if (!(c = EVP_CIPHER_CTX_new()))
            return TM2_ENOMEM;
        if (EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), NULL, NULL, NULL, enc) != 1) {
            EVP_CIPHER_CTX_free(c);
            return TM2_ENOMEM;
        }
        tl.ctx[enc] = c;
    }
    const uint8_t *key = tl.owner[enc] == a->serial ? NULL : a->key;
    if (EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) != 1) {
        tl.owner[enc] = 0;
        return TM2_EIO;
    }
    tl.owner[enc] = a->serial;
    *out = c;
    return 0;
}

int tm2__aead_init(tm2__aead *a, const uint8_t key[TM2__AEAD_KEY_SIZE])
{
    memcpy(a->key, key, TM2__AEAD_KEY_SIZE);
    a->serial = atomic_fetch_add_explicit(&serials, 1, memory_order_relaxed) + 1;
    a->ready = 1;
    return 0;
}

int tm2__aead_seal_frame(tm2__aead *a, const uint8_t nonce[TM2__AEAD_NONCE_SIZE],
                         const uint8_t *in, uint8_t *out)
{
    if (!a->ready)
        return TM2_ESTATE;
    EVP_CIPHER_CTX *c = NULL;
    int e = ctx_for(a, ENC, nonce, &c);
    if (e)
        return e;
    int l1 = 0, l2 = 0;
    if (EVP_CipherUpdate(c, out, &l1, in, TM2__FRAME_PLAIN) != 1 ||
        EVP_CipherFinal_ex(c, out + l1, &l2) != 1 || l1 + l2 != TM2__FRAME_PLAIN ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TM2__AEAD_TAG_SIZE,
                            out + TM2__FRAME_PLAIN) != 1)
        return TM2_EIO;
    return 0;
}

int tm2__aead_open_frame(tm2__aead *a, const uint8_t nonce[TM2__AEAD_NONCE_SIZE],
                         const uint8_t *in, uint8_t *out)
{
    if (!a->ready)
        return TM2_ESTATE;
    EVP_CIPHER_CTX *c = NULL;
    int e = ctx_for(a, DEC, nonce, &c);
    if (e == TM2_ENOMEM)
        return e;
    uint8_t tag[TM2__AEAD_TAG_SIZE];
    int l1 = 0, l2 = 0;
    /* The tag is copied first: with out == in the update overwrites only
     * the first 1028 bytes, but keep the order independent of that. */
    memcpy(tag, in + TM2__FRAME_PLAIN, sizeof tag);
    if (e || EVP_CipherUpdate(c, out, &l1, in, TM2__FRAME_PLAIN) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TM2__AEAD_TAG_SIZE, tag) != 1) {
        sodium_memzero(out, TM2__FRAME_PLAIN);
        return TM2_EIO;
    }
    /* libcrypto decrypts before it checks the tag. */
    if (EVP_CipherFinal_ex(c, out + l1, &l2) != 1 || l1 + l2 != TM2__FRAME_PLAIN) {
        sodium_memzero(out, TM2__FRAME_PLAIN);
        return TM2_EDECRYPT;
    }
    return 0;
}

void tm2__aead_wipe(tm2__aead *a)
{
    /* A context of this thread still holding the key gets a zero key. */
    static const uint8_t zero[TM2__AEAD_KEY_SIZE];
    for (int enc = 0; a->serial && enc < 2; enc++) {
        if (tl.owner[enc] == a->serial) {
            EVP_CipherInit_ex(tl.ctx[enc], NULL, NULL, zero, NULL, enc);
            tl.owner[enc] = 0;
        }
    }
    sodium_memzero(a->key, sizeof a->key);
    a->serial = 0;
    a->ready = 0;
}

#else /* libsodium */

const char *tm2__aead_backend(void) { return "libsodium"; }

int tm2__aead_init(tm2__aead *a, const uint8_t key[TM2__AEAD_KEY_SIZE])
{
    memcpy(a->key, key, TM2__AEAD_KEY_SIZE);
    a->ready = 1;
    return 0;
}

int tm2__aead_seal_frame(tm2__aead *a, const uint8_t nonce[TM2__AEAD_NONCE_SIZE],
                         const uint8_t *in, uint8_t *out)
{
    if (!a->ready)
        return TM2_ESTATE;
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(out, out + TM2__FRAME_PLAIN, NULL,
                                                       in, TM2__FRAME_PLAIN, NULL, 0,
                                                       NULL, nonce, a->key);
    return 0;
}

int tm2__aead_open_frame(tm2__aead *a, const uint8_t nonce[TM2__AEAD_NONCE_SIZE],
                         const uint8_t *in, uint8_t *out)
{
    if (!a->ready)
        return TM2_ESTATE;
    /* libsodium verifies the tag before it writes any plaintext. */
    if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(out, NULL, in, TM2__FRAME_PLAIN,
                                                           in + TM2__FRAME_PLAIN, NULL, 0,
                                                           nonce, a->key) != 0) {
        sodium_memzero(out, TM2__FRAME_PLAIN);
        return TM2_EDECRYPT;
    }
    return 0;
}

void tm2__aead_wipe(tm2__aead *a)
{
    sodium_memzero(a->key, sizeof a->key);
    a->ready = 0;
}

#endif
