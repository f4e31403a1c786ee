#include <stdlib.h>
#include <string.h>

#include "tm2p2p/bech32.h"
#include "tv.h"

#define VEC "upstream_bech32_vectors.txt"

static void encode_upstream_gpub(void **state)
{
    (void)state;
    size_t n;
    uint8_t *payload = tv_get_hex(VEC, "payload_hex", &n);
    char *want = tv_get(VEC, "bech32");
    char out[256];
    int r = tm2_bech32_encode("gpub", payload, n, out, sizeof out);
    assert_int_equal(r, (int)strlen(want));
    assert_string_equal(out, want);

    char hrp[16];
    uint8_t back[128];
    size_t blen;
    assert_int_equal(tm2_bech32_decode(want, hrp, sizeof hrp, back, sizeof back, &blen), 0);
    assert_string_equal(hrp, "gpub");
    assert_int_equal(blen, n);
    assert_memory_equal(back, payload, n);
    free(payload);
    free(want);
}

static void encode_zero_address(void **state)
{
    (void)state;
    size_t n;
    uint8_t *addr = tv_get_hex(VEC, "zero_address_hex", &n);
    char *want = tv_get(VEC, "zero_address_bech32");
    char out[64];
    assert_int_equal(tm2_bech32_encode("g", addr, n, out, sizeof out), 40);
    assert_string_equal(out, want);
    free(addr);
    free(want);
}

static void decode_rules(void **state)
{
    (void)state;
    char hrp[16];
    uint8_t d[64];
    size_t n;
    /* All upper case is accepted and lowercased. */
    assert_int_equal(tm2_bech32_decode("G1X36SLX9AT870E9RD53D2405N80S4FF94DX42DL", hrp, sizeof hrp, d, sizeof d, &n), 0);
    assert_string_equal(hrp, "g");
    assert_int_equal(n, 20);
    /* Mixed case. */
    assert_int_equal(tm2_bech32_decode("g1X36slx9at870e9rd53d2405n80s4ff94dx42dl", hrp, sizeof hrp, d, sizeof d, &n), TM2_ECASE);
    /* Checksum (last char changed). */
    assert_int_equal(tm2_bech32_decode("g1x36slx9at870e9rd53d2405n80s4ff94dx42dm", hrp, sizeof hrp, d, sizeof d, &n), TM2_ECHECKSUM);
    /* Character outside the charset ('b' is not in it). */
    assert_int_equal(tm2_bech32_decode("g1b36slx9at870e9rd53d2405n80s4ff94dx42dl", hrp, sizeof hrp, d, sizeof d, &n), TM2_ECHARSET);
    /* Byte outside 0x21..0x7e. */
    assert_int_equal(tm2_bech32_decode("g1x36slx9at870e9rd53d 405n80s4ff94dx42dl", hrp, sizeof hrp, d, sizeof d, &n), TM2_ECHARSET);
    /* Too short, no separator, separator first, fewer than 6 chars after it. */
    assert_int_equal(tm2_bech32_decode("g1qqqqq", hrp, sizeof hrp, d, sizeof d, &n), TM2_EDECODE);
    assert_int_equal(tm2_bech32_decode("gqqqqqqqqqq", hrp, sizeof hrp, d, sizeof d, &n), TM2_EDECODE);
    assert_int_equal(tm2_bech32_decode("1qqqqqqqqqq", hrp, sizeof hrp, d, sizeof d, &n), TM2_EDECODE);
    assert_int_equal(tm2_bech32_decode("gggggggg1qqqqq", hrp, sizeof hrp, d, sizeof d, &n), TM2_EDECODE);
    /* Output too small. */
    assert_int_equal(tm2_bech32_decode("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl", hrp, sizeof hrp, d, 19, &n), TM2_ENOSPC);
}

static void decode_bech32m_accepted(void **state)
{
    (void)state;
    /* BIP-350 test vector: valid bech32m, accepted like btcutil DecodeNoLimit does. */
    char hrp[16];
    uint8_t d[64];
    size_t n;
    assert_int_equal(tm2_bech32_decode("a1lqfn3a", hrp, sizeof hrp, d, sizeof d, &n), 0);
    assert_string_equal(hrp, "a");
    assert_int_equal(n, 0);
}

static void no_upper_length_limit(void **state)
{
    (void)state;
    uint8_t data[200];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)i;
    char s[512], hrp[16];
    uint8_t back[256];
    size_t n;
    int len = tm2_bech32_encode("g", data, sizeof data, s, sizeof s);
    assert_true(len > 90);
    assert_int_equal(tm2_bech32_decode(s, hrp, sizeof hrp, back, sizeof back, &n), 0);
    assert_int_equal(n, sizeof data);
    assert_memory_equal(back, data, sizeof data);
    assert_int_equal(tm2_bech32_encode("g", data, sizeof data, s, (size_t)len), TM2_ENOSPC);
    assert_int_equal(tm2_bech32_encode("G", data, 1, s, sizeof s), TM2_EINVAL);
    assert_int_equal(tm2_bech32_encode("", data, 1, s, sizeof s), TM2_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_upstream_gpub),
        cmocka_unit_test(encode_zero_address),
        cmocka_unit_test(decode_rules),
        cmocka_unit_test(decode_bech32m_accepted),
        cmocka_unit_test(no_upper_length_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
