/* Classic BIP-173 bech32, as TM2 uses it for peer IDs.
 * Pure functions on caller buffers; thread-safe. */
#ifndef TM2P2P_BECH32_H
#define TM2P2P_BECH32_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Encodes data (8-bit bytes, regrouped to 5 bits with padding) under the
 * lowercase hrp as a NUL-terminated string in out.
 * Returns the string length, TM2_EINVAL (empty/invalid hrp) or TM2_ENOSPC. */
TM2_API int tm2_bech32_encode(const char *hrp, const uint8_t *data, size_t len,
                              char *out, size_t out_cap);

/* Decodes s the way the reference's ID check does: no upper length limit,
 * all-upper or all-lower case, last '1' separates the hrp, checksum valid as
 * bech32 or bech32m, 5-to-8 bit regrouping without padding.
 * hrp_out (lowercased, NUL-terminated) and data_out receive the parts;
 * *data_len their byte count. Returns 0 or TM2_EDECODE, TM2_ECHARSET,
 * TM2_ECASE, TM2_ECHECKSUM, TM2_ENOSPC. */
TM2_API int tm2_bech32_decode(const char *s, char *hrp_out, size_t hrp_cap,
                              uint8_t *data_out, size_t data_cap, size_t *data_len);

#ifdef __cplusplus
}
#endif
#endif
