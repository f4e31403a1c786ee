/* Internal: HKDF-SHA256 (RFC 5869) on libsodium's HMAC-SHA256. */
#ifndef TM2_CRYPTO_HKDF_H
#define TM2_CRYPTO_HKDF_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"

#define TM2__HKDF_SHA256_MAX_OUT (255u * 32u)

/* Extract-then-expand: out_len bytes of OKM from ikm. salt == NULL means the
 * RFC default (32 zero bytes). 0, or TM2_EINVAL when out_len is over
 * TM2__HKDF_SHA256_MAX_OUT. Intermediate secrets are wiped. */
int tm2__hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                     const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);

#endif
