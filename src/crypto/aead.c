#include "crypto/aead.h"

#include <string.h>

#include <sodium.h>

#if defined(TM2_AEAD_OPENSSL)
#include <openssl/evp.h>

const char *tm2__aead_backend(void) { return "openssl"; }

int tm2__aead_init(tm2__aead *a, const uint8_t key[TM2__AEAD_KEY_SIZE])
{
    a->ready = 0;
    a->u.ctx = NULL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return TM2_ENOMEM;
    a->u.ctx = c;
    /* The cipher and key are bound once; each frame only sets its nonce,
     * which skips the key schedule and the provider lookup per frame. */
    if (EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), NULL, key, NULL, 1) != 1)
        return TM2_ENOMEM;
    a->ready = 1;
    return 0;
}

int tm2__aead_seal_frame(tm2__aead *a, const uint8_t nonce[TM2__AEAD_NONCE_SIZE],
                         const uint8_t *in, uint8_t *out)
{
    if (!a->ready)
        return TM2_ESTATE;
    EVP_CIPHER_CTX *c = a->u.ctx;
    int l1 = 0, l2 = 0;
    if (EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, 1) != 1 ||
        EVP_CipherUpdate(c, out, &l1, in, TM2__FRAME_PLAIN) != 1 ||
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
    EVP_CIPHER_CTX *c = a->u.ctx;
    uint8_t tag[TM2__AEAD_TAG_SIZE];
    int l1 = 0, l2 = 0;
    /* The tag is copied first: with out == in the update overwrites only
     * the first 1028 bytes, but keep the order independent of that. */
    memcpy(tag, in + TM2__FRAME_PLAIN, sizeof tag);
    if (EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, 0) != 1 ||
        EVP_CipherUpdate(c, out, &l1, in, TM2__FRAME_PLAIN) != 1 ||
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
    if (a->u.ctx)
        EVP_CIPHER_CTX_free(a->u.ctx);   /* clears the key schedule */
    a->u.ctx = NULL;
    a->ready = 0;
}

#else /* libsodium */

const char *tm2__aead_backend(void) { return "libsodium"; }

int tm2__aead_init(tm2__aead *a, const uint8_t key[TM2__AEAD_KEY_SIZE])
{
    memcpy(a->u.key, key, TM2__AEAD_KEY_SIZE);
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
                                                       NULL, nonce, a->u.key);
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
                                                           nonce, a->u.key) != 0) {
        sodium_memzero(out, TM2__FRAME_PLAIN);
        return TM2_EDECRYPT;
    }
    return 0;
}

void tm2__aead_wipe(tm2__aead *a)
{
    sodium_memzero(a->u.key, sizeof a->u.key);
    a->ready = 0;
}

#endif
