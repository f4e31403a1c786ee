/* BIP-173 bech32 with the reference's lenient decode rules (WIRE.md 2.4). */
#include "tm2p2p/bech32.h"

#include <string.h>

static const char charset[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

#define BECH32_CONST  1u
#define BECH32M_CONST 0x2bc830a3u

static uint32_t polymod_step(uint32_t chk, uint8_t v)
{
    static const uint32_t gen[5] = {0x3b6a57b2u, 0x26508e6du, 0x1ea119fau, 0x3d4233ddu, 0x2a1462b3u};
    uint32_t top = chk >> 25;
    chk = ((chk & 0x1ffffffu) << 5) ^ v;
    /* Masks, not branches: the bits are random, so branches mispredict. */
    for (int i = 0; i < 5; i++)
        chk ^= (0u - ((top >> i) & 1u)) & gen[i];
    return chk;
}

static uint32_t hrp_polymod(const char *hrp, size_t n)
{
    uint32_t chk = 1;
    for (size_t i = 0; i < n; i++)
        chk = polymod_step(chk, (uint8_t)((unsigned char)hrp[i] >> 5));
    chk = polymod_step(chk, 0);
    for (size_t i = 0; i < n; i++)
        chk = polymod_step(chk, (uint8_t)(hrp[i] & 31));
    return chk;
}

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Each charset character's value plus one (so 0 means "not in the
 * charset"): IDs are decoded for every address a peer sends, so a lookup,
 * not a search, per character. */
#define V(c, v) [c] = (v) + 1
static const int8_t charset_value1[128] = {
    V('q', 0),  V('p', 1),  V('z', 2),  V('r', 3),  V('y', 4),  V('9', 5),  V('x', 6),  V('8', 7),
    V('g', 8),  V('f', 9),  V('2', 10), V('t', 11), V('v', 12), V('d', 13), V('w', 14), V('0', 15),
    V('s', 16), V('3', 17), V('j', 18), V('n', 19), V('5', 20), V('4', 21), V('k', 22), V('h', 23),
    V('c', 24), V('e', 25), V('6', 26), V('m', 27), V('u', 28), V('a', 29), V('7', 30), V('l', 31),
};
#undef V

static int charset_rev(int c)
{
    return c > 0 && c < 128 ? charset_value1[c] - 1 : -1;
}

int tm2_bech32_encode(const char *hrp, const uint8_t *data, size_t len, char *out, size_t out_cap)
{
    size_t hlen = hrp ? strlen(hrp) : 0;
    if (hlen == 0 || (!data && len))
        return TM2_EINVAL;
    for (size_t i = 0; i < hlen; i++)
        if (hrp[i] < 33 || hrp[i] > 126 || (hrp[i] >= 'A' && hrp[i] <= 'Z'))
            return TM2_EINVAL;
    if (len > (SIZE_MAX - hlen - 8) / 2)
        return TM2_EINVAL;
    size_t ngroups = (len * 8 + 4) / 5;
    size_t total = hlen + 1 + ngroups + 6;
    if (total + 1 > out_cap)
        return TM2_ENOSPC;

    memcpy(out, hrp, hlen);
    out[hlen] = '1';
    char *dp = out + hlen + 1;
    uint32_t chk = hrp_polymod(hrp, hlen);
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8 | data[i]) & 0xfffu;
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            uint8_t v = (uint8_t)((acc >> bits) & 31u);
            chk = polymod_step(chk, v);
            dp[k++] = charset[v];
        }
    }
    if (bits) {
        uint8_t v = (uint8_t)((acc << (5 - bits)) & 31u);
        chk = polymod_step(chk, v);
        dp[k++] = charset[v];
    }
    for (int i = 0; i < 6; i++)
        chk = polymod_step(chk, 0);
    chk ^= BECH32_CONST;
    for (int i = 0; i < 6; i++)
        dp[k++] = charset[(chk >> (5 * (5 - i))) & 31u];
    dp[k] = '\0';
    return (int)total;
}

int tm2_bech32_decode(const char *s, char *hrp_out, size_t hrp_cap, uint8_t *data_out,
                      size_t data_cap, size_t *data_len)
{
    if (!s || !data_len)
        return TM2_EINVAL;
    size_t n = strlen(s);
    if (n < 8)
        return TM2_EDECODE;
    bool has_lower = false, has_upper = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 33 || c > 126)
            return TM2_ECHARSET;
        has_lower |= (c >= 'a' && c <= 'z');
        has_upper |= (c >= 'A' && c <= 'Z');
    }
    if (has_lower && has_upper)
        return TM2_ECASE;
    const char *sep = strrchr(s, '1');
    if (!sep || sep == s || (size_t)(s + n - sep - 1) < 6)
        return TM2_EDECODE;
    size_t hlen = (size_t)(sep - s);
    size_t dlen = n - hlen - 1;    /* data chars, checksum included */
    if (hrp_out && hlen + 1 > hrp_cap)
        return TM2_ENOSPC;

    uint32_t chk = 1;
    for (size_t i = 0; i < hlen; i++)
        chk = polymod_step(chk, (uint8_t)((unsigned char)lower(s[i]) >> 5));
    chk = polymod_step(chk, 0);
    for (size_t i = 0; i < hlen; i++)
        chk = polymod_step(chk, (uint8_t)(lower(s[i]) & 31));
    for (size_t i = 0; i < dlen; i++) {
        int v = charset_rev(lower(sep[1 + i]));
        if (v < 0)
            return TM2_ECHARSET;
        chk = polymod_step(chk, (uint8_t)v);
    }
    if (chk != BECH32_CONST && chk != BECH32M_CONST)
        return TM2_ECHECKSUM;

    /* 5-to-8 regrouping without padding: leftover bits must be < 5 and zero. */
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < dlen - 6; i++) {
        acc = (acc << 5 | (uint32_t)charset_rev(lower(sep[1 + i]))) & 0x1fffu;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            if (k >= data_cap)
                return TM2_ENOSPC;
            data_out[k++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits >= 5 || (acc & ((1u << bits) - 1u)))
        return TM2_EDECODE;
    if (hrp_out) {
        for (size_t i = 0; i < hlen; i++)
            hrp_out[i] = (char)lower(s[i]);
        hrp_out[hlen] = '\0';
    }
    *data_len = k;
    return 0;
}
