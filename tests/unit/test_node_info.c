#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/amino.h"
#include "tm2p2p/node_info.h"
#include "tv.h"

#define HS "derived_handshake_transcript.txt"

static const uint8_t gno_channels[] = {0x40, 0x20, 0x21, 0x22, 0x23, 0x30, 0x50};

static const tm2_version_info gno_versions[] = {
    {"abci", TM2_PROTOCOL_VERSION, false},
    {"app", "", false},
    {"bft", TM2_PROTOCOL_VERSION, false},
    {"blockchain", TM2_PROTOCOL_VERSION, false},
    {"p2p", TM2_PROTOCOL_VERSION, false},
};

/* The NodeInfo of WIRE.md 5.6, built field by field. */
static tm2_node_info gno_node_info(const char *addr, const char *moniker)
{
    tm2_node_info ni;
    memset(&ni, 0, sizeof ni);
    ni.versions = gno_versions;
    ni.n_versions = sizeof gno_versions / sizeof gno_versions[0];
    ni.has_net_address = true;
    assert_int_equal(tm2_netaddr_parse(addr, 0, &ni.net_address), 0);
    ni.network = "test-chain";
    ni.version = TM2_PROTOCOL_VERSION;
    ni.channels = gno_channels;
    ni.n_channels = sizeof gno_channels;
    ni.moniker = moniker;
    ni.tx_index = "off";
    ni.rpc_address = "tcp://127.0.0.1:26657";
    return ni;
}

static tm2_node_info node_a(void)
{
    return gno_node_info("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656", "node-a");
}

/* ---- byte helpers ------------------------------------------------------------ */

/* Wraps a body in its length prefix. */
static uint8_t *sized(const uint8_t *body, size_t n, size_t *len)
{
    uint8_t *out = malloc(n + TM2_UVARINT_MAX_LEN);
    assert_non_null(out);
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, out, n + TM2_UVARINT_MAX_LEN);
    tm2__amino_put_uvarint(&w, n);
    tm2__amino_put_raw(&w, body, n);
    assert_int_equal(w.err, 0);
    *len = w.len;
    return out;
}

static int decode_body_hex(const char *hex, tm2_node_info **out)
{
    size_t n, len, used = 0;
    uint8_t *body = tv_hex_alloc(hex, &n);
    uint8_t *msg = sized(body, n, &len);
    *out = NULL;
    int rc = tm2_node_info_decode(msg, len, out, &used);
    if (rc == 0)
        assert_int_equal(used, len);
    else
        assert_null(*out);
    free(msg);
    free(body);
    return rc;
}

/* The fields of node A's body, split as WIRE.md 5.6 lists them. */
#define F_VERS   "0a130a0461626369120b76312e302e302d72632e30" \
                 "0a050a03617070" \
                 "0a120a03626674120b76312e302e302d72632e30" \
                 "0a190a0a626c6f636b636861696e120b76312e302e302d72632e30" \
                 "0a120a03703270120b76312e302e302d72632e30"
#define F_ADDR   "1238" "6731783336736c7839617438373065397264353364323430356e383073346666393464783432646c" \
                 "403132372e302e302e313a3236363536"
#define F_NET    "1a0a746573742d636861696e"
#define F_VER    "2a0b76312e302e302d72632e30"
#define F_CHAN   "32074020212223305" "0"
#define F_MONI   "3a066e6f64652d61"
#define F_OTHER  "421c0a036f666612157463703a2f2f3132372e302e302e313a3236363537"
#define A_BODY   F_VERS F_ADDR F_NET F_VER F_CHAN F_MONI F_OTHER

/* ---- vectors ----------------------------------------------------------------- */

static void check_gno_fields(const tm2_node_info *ni, const char *id, const char *moniker)
{
    assert_int_equal(ni->n_versions, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(ni->versions[i].name, gno_versions[i].name);
        assert_string_equal(ni->versions[i].version, gno_versions[i].version);
        assert_false(ni->versions[i].optional);
    }
    assert_true(ni->has_net_address);
    assert_string_equal(ni->net_address.id.s, id);
    char s[TM2_NETADDR_STRLEN + 1], want[TM2_NETADDR_STRLEN + 1];
    assert_true(tm2_netaddr_format(&ni->net_address, s, sizeof s) > 0);
    snprintf(want, sizeof want, "%s@127.0.0.1:%s", id, moniker[5] == 'a' ? "26656" : "26666");
    assert_string_equal(s, want);
    assert_string_equal(ni->network, "test-chain");
    assert_string_equal(ni->software, "");
    assert_string_equal(ni->version, "v1.0.0-rc.0");
    assert_int_equal(ni->n_channels, sizeof gno_channels);
    assert_memory_equal(ni->channels, gno_channels, sizeof gno_channels);
    assert_string_equal(ni->moniker, moniker);
    assert_string_equal(ni->tx_index, "off");
    assert_string_equal(ni->rpc_address, "tcp://127.0.0.1:26657");
}

static void vector_round_trip(const char *name, const char *id_name, const char *moniker)
{
    size_t len;
    uint8_t *msg = tv_get_hex(HS, name, &len);
    char *id = tv_get(HS, id_name);
    /* The vector is the sized message itself: 2-byte prefix e1 01 (225). */
    assert_int_equal(len, 227);

    tm2_node_info *ni = NULL;
    size_t used = 0;
    assert_int_equal(tm2_node_info_decode(msg, len, &ni, &used), 0);
    assert_int_equal(used, len);
    check_gno_fields(ni, id, moniker);
    assert_int_equal(tm2_node_info_validate(ni, NULL, 0), 0);

    uint8_t out[512];
    assert_int_equal(tm2_node_info_encode(ni, out, sizeof out), (int)len);
    assert_memory_equal(out, msg, len);
    tm2_node_info_free(ni);
    free(id);
    free(msg);
}

static void decode_vector_a(void **state)
{
    (void)state;
    vector_round_trip("A_nodeinfo_plaintext", "A_id", "node-a");
}

static void decode_vector_b(void **state)
{
    (void)state;
    vector_round_trip("B_nodeinfo_plaintext", "B_id", "node-b");
}

static void encode_from_fields(void **state)
{
    (void)state;
    size_t len;
    uint8_t *want = tv_get_hex(HS, "A_nodeinfo_plaintext", &len);
    tm2_node_info ni = node_a();
    uint8_t out[512];
    assert_int_equal(tm2_node_info_encode(&ni, NULL, 0), (int)len);
    assert_int_equal(tm2_node_info_encode(&ni, out, sizeof out), (int)len);
    assert_memory_equal(out, want, len);
    assert_int_equal(tm2_node_info_encode(&ni, out, len - 1), TM2_ENOSPC);
    assert_int_equal(tm2_node_info_encode(&ni, out, len), (int)len);

    /* Body bytes match WIRE.md 5.6 piece by piece. */
    size_t bl;
    uint8_t *body = tv_hex_alloc(A_BODY, &bl);
    assert_int_equal(bl, 225);
    assert_memory_equal(out + 2, body, bl);
    free(body);
    free(want);
}

static void encode_defaults_omitted(void **state)
{
    (void)state;
    /* Everything default: an empty body. */
    tm2_node_info ni;
    memset(&ni, 0, sizeof ni);
    uint8_t out[64];
    assert_int_equal(tm2_node_info_encode(&ni, out, sizeof out), 1);
    assert_int_equal(out[0], 0);

    /* Optional=true is written as 18 01, an empty element as 0a 00, and
     * Other with only its RPC address. */
    const tm2_version_info vi[] = {{"x", "", true}, {"", "", false}};
    ni.versions = vi;
    ni.n_versions = 2;
    ni.rpc_address = "r";
    int n = tm2_node_info_encode(&ni, out, sizeof out);
    size_t wl;
    uint8_t *want = tv_hex_alloc("0e" "0a05" "0a0178" "1801" "0a00" "4203" "120172", &wl);
    assert_int_equal(n, (int)wl);
    assert_memory_equal(out, want, wl);
    free(want);

    /* NULL arrays with counts are caller errors. */
    ni.versions = NULL;
    assert_int_equal(tm2_node_info_encode(&ni, out, sizeof out), TM2_EINVAL);
    ni.n_versions = 0;
    ni.n_channels = 1;
    assert_int_equal(tm2_node_info_encode(&ni, out, sizeof out), TM2_EINVAL);
}

static void encode_too_big(void **state)
{
    (void)state;
    /* A 10240-byte message is the most a peer accepts: prefix 2 + body 10238. */
    char *moniker = malloc(10240);
    assert_non_null(moniker);
    tm2_node_info ni;
    memset(&ni, 0, sizeof ni);
    ni.moniker = moniker;
    /* body = 3a + 2-byte length + moniker */
    memset(moniker, 'm', 10235);
    moniker[10235] = '\0';
    uint8_t *out = malloc(TM2_NODE_INFO_MAX_SIZE + 16);
    assert_non_null(out);
    assert_int_equal(tm2_node_info_encode(&ni, out, TM2_NODE_INFO_MAX_SIZE + 16), 10240);
    tm2_node_info *back = NULL;
    size_t used;
    assert_int_equal(tm2_node_info_decode(out, 10240, &back, &used), 0);
    assert_int_equal(strlen(back->moniker), 10235);
    tm2_node_info_free(back);

    moniker[10235] = 'm';
    moniker[10236] = '\0';
    assert_int_equal(tm2_node_info_encode(&ni, out, TM2_NODE_INFO_MAX_SIZE + 16), TM2_ETOOBIG);
    free(out);
    free(moniker);
}

/* ---- decoding: stream behaviour ------------------------------------------------ */

static void decode_partial_and_following_bytes(void **state)
{
    (void)state;
    size_t len;
    uint8_t *msg = tv_get_hex(HS, "A_nodeinfo_plaintext", &len);
    tm2_node_info *ni = (tm2_node_info *)1;
    size_t used;
    for (size_t i = 0; i < len; i++) {
        assert_int_equal(tm2_node_info_decode(msg, i, &ni, &used), TM2_EAGAIN);
        assert_null(ni);
    }
    /* The next message's bytes are left for the caller. */
    uint8_t *two = malloc(len + 3);
    assert_non_null(two);
    memcpy(two, msg, len);
    memcpy(two + len, "\x0b\x0a\x09", 3);
    assert_int_equal(tm2_node_info_decode(two, len + 3, &ni, &used), 0);
    assert_int_equal(used, len);
    tm2_node_info_free(ni);
    free(two);
    free(msg);

    assert_int_equal(tm2_node_info_decode(NULL, 0, &ni, &used), TM2_EAGAIN);
    assert_int_equal(tm2_node_info_decode(NULL, 1, &ni, &used), TM2_EINVAL);
}

static void decode_empty_body(void **state)
{
    (void)state;
    tm2_node_info *ni;
    assert_int_equal(decode_body_hex("", &ni), 0);
    assert_int_equal(ni->n_versions, 0);
    assert_false(ni->has_net_address);
    assert_string_equal(ni->network, "");
    assert_string_equal(ni->software, "");
    assert_string_equal(ni->version, "");
    assert_string_equal(ni->moniker, "");
    assert_string_equal(ni->tx_index, "");
    assert_string_equal(ni->rpc_address, "");
    assert_int_equal(ni->n_channels, 0);
    /* Decodes, but is not a valid NodeInfo. */
    char why[128];
    assert_int_equal(tm2_node_info_validate(ni, why, sizeof why), TM2_ENODEINFO);
    assert_non_null(strstr(why, "net address"));
    tm2_node_info_free(ni);
}

static void decode_lenient_forms(void **state)
{
    (void)state;
    tm2_node_info *ni;
    /* An empty list element, explicit defaults (empty strings, false, empty
     * Other), a non-minimal key and a non-minimal length: all accepted like
     * the reference, and re-encoded in canonical form. */
    assert_int_equal(decode_body_hex("0a00" "0a070a017812001800" "1a00" "a20081006e" "4200", &ni), 0);
    assert_int_equal(ni->n_versions, 2);
    assert_string_equal(ni->versions[0].name, "");
    assert_string_equal(ni->versions[0].version, "");
    assert_string_equal(ni->versions[1].name, "x");
    assert_string_equal(ni->versions[1].version, "");
    assert_false(ni->versions[1].optional);
    assert_string_equal(ni->network, "");
    assert_string_equal(ni->software, "n");
    assert_string_equal(ni->tx_index, "");
    uint8_t out[64];
    size_t wl;
    uint8_t *want = tv_hex_alloc("0a" "0a00" "0a030a0178" "22016e", &wl);
    assert_int_equal(tm2_node_info_encode(ni, out, sizeof out), (int)wl);
    assert_memory_equal(out, want, wl);
    free(want);
    tm2_node_info_free(ni);
}

/* ---- decoding: rejections (WIRE.md 1.9) ----------------------------------------- */

static void reject_duplicate_field(void **state)
{
    (void)state;
    tm2_node_info *ni;
    assert_int_equal(decode_body_hex(F_VERS F_ADDR F_NET F_NET F_VER F_CHAN F_MONI F_OTHER, &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex(A_BODY F_OTHER, &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex(F_ADDR F_ADDR, &ni), TM2_EFIELD);
}

static void reject_out_of_order_field(void **state)
{
    (void)state;
    tm2_node_info *ni;
    assert_int_equal(decode_body_hex(F_VERS F_ADDR F_VER F_NET F_CHAN F_MONI F_OTHER, &ni), TM2_EFIELD);
    /* The repeated field 1 may only repeat consecutively, at the start. */
    assert_int_equal(decode_body_hex(F_ADDR F_VERS, &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex("0a00" F_NET "0a00", &ni), TM2_EFIELD);
    /* Inside VersionInfo and Other too. */
    assert_int_equal(decode_body_hex("0a06" "12017a" "0a0178", &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex("4206" "120172" "0a0178", &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex("0a06" "0a0178" "0a0178", &ni), TM2_EFIELD);
}

static void reject_unknown_field(void **state)
{
    (void)state;
    tm2_node_info *ni;
    assert_int_equal(decode_body_hex(A_BODY "4a00", &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex(A_BODY "4801", &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex(A_BODY "faffffff0f00", &ni), TM2_EFIELD);
    /* VersionInfo has 3 fields, Other has 2. */
    assert_int_equal(decode_body_hex("0a02" "2000", &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex("4202" "1a00", &ni), TM2_EFIELD);
    /* Field 0. */
    assert_int_equal(decode_body_hex("0200", &ni), TM2_EFIELD);
}

static void reject_wrong_wire_type(void **state)
{
    (void)state;
    tm2_node_info *ni;
    assert_int_equal(decode_body_hex("0801", &ni), TM2_EWIRETYPE);          /* versions as varint */
    assert_int_equal(decode_body_hex("1801", &ni), TM2_EWIRETYPE);          /* network as varint */
    assert_int_equal(decode_body_hex("3501020304", &ni), TM2_EWIRETYPE);    /* channels as fixed32 */
    assert_int_equal(decode_body_hex("410102030405060708", &ni), TM2_EWIRETYPE); /* other as fixed64 */
    assert_int_equal(decode_body_hex("1b", &ni), TM2_EWIRETYPE);            /* wire type 3 */
    assert_int_equal(decode_body_hex("0a02" "0801", &ni), TM2_EWIRETYPE);   /* name as varint */
    assert_int_equal(decode_body_hex("0a02" "1a00", &ni), TM2_EWIRETYPE);   /* optional as bytes */
    assert_int_equal(decode_body_hex("4202" "0800", &ni), TM2_EWIRETYPE);   /* tx_index as varint */
}

static void reject_trailing_bytes(void **state)
{
    (void)state;
    tm2_node_info *ni;
    /* After the last field, inside the body: a zero byte (field 0) or a
     * lone key with nothing after it. */
    assert_int_equal(decode_body_hex(A_BODY "00", &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex(A_BODY "42", &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex(F_VERS F_ADDR "80", &ni), TM2_ETRUNC);
    /* Inside a nested value. */
    assert_int_equal(decode_body_hex("0a04" "0a0178" "00", &ni), TM2_EFIELD);
    assert_int_equal(decode_body_hex("0a03" "180100", &ni), TM2_EFIELD);
}

static void reject_truncated(void **state)
{
    (void)state;
    tm2_node_info *ni;
    /* A length running past the body, in the body and in nested values. */
    assert_int_equal(decode_body_hex(F_VERS "1239", &ni), TM2_ETRUNC);
    assert_int_equal(decode_body_hex("1a0b746573742d636861696e", &ni), TM2_ETRUNC);
    assert_int_equal(decode_body_hex("0a03" "0a0561", &ni), TM2_ETRUNC);
    assert_int_equal(decode_body_hex("0a01" "18", &ni), TM2_ETRUNC);
    assert_int_equal(decode_body_hex("4203" "0a0561", &ni), TM2_ETRUNC);
    assert_int_equal(decode_body_hex("1a", &ni), TM2_ETRUNC);
    assert_int_equal(decode_body_hex("1affffffffffffffffff01", &ni), TM2_ETRUNC);
    assert_int_equal(decode_body_hex("1affffffffffffffffff02", &ni), TM2_EOVERFLOW);
}

static void reject_over_size(void **state)
{
    (void)state;
    /* A body of 10239 bytes: 2 + 10239 > 10240. Rejected from the prefix. */
    uint8_t pre[2] = {0xff, 0x4f};
    tm2_node_info *ni;
    size_t used;
    assert_int_equal(tm2_node_info_decode(pre, sizeof pre, &ni, &used), TM2_ETOOBIG);
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(tm2_node_info_decode(huge, sizeof huge, &ni, &used), TM2_ETOOBIG);
    /* 10238 is the largest body: ask for more, do not refuse. */
    uint8_t edge[2] = {0xfe, 0x4f};
    assert_int_equal(tm2_node_info_decode(edge, sizeof edge, &ni, &used), TM2_EAGAIN);
}

static void reject_host_name_address(void **state)
{
    (void)state;
    tm2_node_info *ni;
    char hex[512], *p = hex;
    const char *addr = "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@localhost:26656";
    p += sprintf(p, "12%02zx", strlen(addr));
    for (const char *c = addr; *c; c++)
        p += sprintf(p, "%02x", (unsigned char)*c);
    assert_int_equal(decode_body_hex(hex, &ni), TM2_ERESOLVE);
}

static int decode_addr(const char *addr)
{
    char hex[1024], *p = hex;
    p += sprintf(p, "12%02zx", strlen(addr));
    for (const char *c = addr; *c; c++)
        p += sprintf(p, "%02x", (unsigned char)*c);
    tm2_node_info *ni;
    int rc = decode_body_hex(hex, &ni);
    if (rc == 0)
        tm2_node_info_free(ni);
    return rc;
}

static void reject_bad_address(void **state)
{
    (void)state;
    /* Bad ID: wrong checksum, not bech32, wrong length, missing. */
    assert_int_equal(decode_addr("g1x36slx9at870e9rd53d2405n80s4ff94dx42dm@127.0.0.1:26656"), TM2_ECHECKSUM);
    assert_true(decode_addr("deadbeef@127.0.0.1:26656") < 0);
    assert_true(decode_addr("@127.0.0.1:26656") < 0);
    assert_int_equal(decode_addr("127.0.0.1:26656"), TM2_EADDR);
    assert_int_equal(decode_addr(""), TM2_EADDR);
    assert_int_equal(decode_addr("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:99999"), TM2_EPORT);
    /* Accepted forms: scheme prefix, IPv6, unspecified IP. */
    assert_int_equal(decode_addr("tcp://g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656"), 0);
    assert_int_equal(decode_addr("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@[::1]:26656"), 0);
    assert_int_equal(decode_addr("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@0.0.0.0:26656"), 0);
    /* A NUL inside the string is never a valid address. */
    tm2_node_info *ni;
    assert_int_equal(decode_body_hex("1203" "610062", &ni), TM2_EADDR);
}

static void reject_optional_out_of_range(void **state)
{
    (void)state;
    tm2_node_info *ni;
    /* VersionInfo.Optional is a bool: one byte, 00 or 01. */
    assert_int_equal(decode_body_hex("0a02" "1802", &ni), TM2_EDECODE);
    assert_int_equal(decode_body_hex("0a02" "18ff", &ni), TM2_EDECODE);
    assert_int_equal(decode_body_hex("0a03" "188001", &ni), TM2_EDECODE);
    assert_int_equal(decode_body_hex("0a03" "188000", &ni), TM2_EDECODE);
    assert_int_equal(decode_body_hex("0a02" "1801", &ni), 0);
    assert_true(ni->versions[0].optional);
    tm2_node_info_free(ni);
}

static void reject_nul_in_string(void **state)
{
    (void)state;
    tm2_node_info *ni;
    assert_int_equal(decode_body_hex("1a03" "610062", &ni), TM2_EDECODE);
    assert_int_equal(decode_body_hex("2201" "00", &ni), TM2_EDECODE);
    assert_int_equal(decode_body_hex("0a03" "0a0100", &ni), TM2_EDECODE);
    assert_int_equal(decode_body_hex("4203" "0a0100", &ni), TM2_EDECODE);
    /* Channels are bytes, so 00 is a channel. */
    assert_int_equal(decode_body_hex("32020050", &ni), 0);
    assert_int_equal(ni->n_channels, 2);
    assert_true(tm2_node_info_has_channel(ni, 0x00));
    assert_true(tm2_node_info_has_channel(ni, 0x50));
    assert_false(tm2_node_info_has_channel(ni, 0x40));
    tm2_node_info_free(ni);
}

/* ---- validation (WIRE.md 5.4) --------------------------------------------------- */

static int validate(const tm2_node_info *ni, const char *want_in_why)
{
    char why[256] = "unset";
    int rc = tm2_node_info_validate(ni, why, sizeof why);
    if (rc == 0)
        assert_string_equal(why, "");
    if (want_in_why) {
        if (!strstr(why, want_in_why))
            fail_msg("why \"%s\" does not mention \"%s\"", why, want_in_why);
    }
    return rc;
}

static void validate_ok(void **state)
{
    (void)state;
    tm2_node_info ni = node_a();
    assert_int_equal(validate(&ni, NULL), 0);
    /* Unspecified IPs are tolerated here (a node advertising its bind address). */
    ni = gno_node_info("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@0.0.0.0:26656", "m");
    assert_int_equal(validate(&ni, NULL), 0);
    ni = gno_node_info("g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@[::]:0", "m");
    assert_int_equal(validate(&ni, NULL), 0);
    /* Version and RPC address may be empty; Network, Software, TxIndex are free text. */
    ni.version = "";
    ni.rpc_address = NULL;
    ni.network = "\x01";
    ni.software = "\x7f";
    ni.tx_index = " ";
    assert_int_equal(validate(&ni, NULL), 0);
    assert_int_equal(tm2_node_info_validate(&ni, NULL, 0), 0);
    assert_int_equal(tm2_node_info_validate(NULL, NULL, 0), TM2_EINVAL);
}

static void validate_rule1_address_missing(void **state)
{
    (void)state;
    tm2_node_info ni = node_a();
    ni.has_net_address = false;
    assert_int_equal(validate(&ni, "net address missing"), TM2_ENODEINFO);
}

static void validate_rule2_address_reparse(void **state)
{
    (void)state;
    tm2_node_info ni = node_a();
    ni.net_address.id.s[0] = '\0';
    assert_int_equal(validate(&ni, "invalid net address"), TM2_ENODEINFO);
    ni = node_a();
    ni.net_address.id.s[5] = 'b';   /* not in the bech32 charset */
    assert_int_equal(validate(&ni, "invalid net address"), TM2_ENODEINFO);
    ni = node_a();
    ni.net_address.id.s[39] = 'm';  /* checksum */
    assert_int_equal(validate(&ni, "invalid net address"), TM2_ENODEINFO);
}

static void validate_rule3_version(void **state)
{
    (void)state;
    tm2_node_info ni = node_a();
    ni.version = "   ";
    assert_int_equal(validate(&ni, "invalid version"), TM2_ENODEINFO);
    ni.version = "v1\t";
    assert_int_equal(validate(&ni, "invalid version"), TM2_ENODEINFO);
    ni.version = "v1\x7f";
    assert_int_equal(validate(&ni, "invalid version"), TM2_ENODEINFO);
    ni.version = "v\xc3\xa9";
    assert_int_equal(validate(&ni, "invalid version"), TM2_ENODEINFO);
    ni.version = " x ";
    assert_int_equal(validate(&ni, NULL), 0);
}

static void validate_rule4_channels(void **state)
{
    (void)state;
    uint8_t ch[17];
    for (unsigned i = 0; i < sizeof ch; i++)
        ch[i] = (uint8_t)i;
    tm2_node_info ni = node_a();
    ni.channels = ch;
    ni.n_channels = 16;
    assert_int_equal(validate(&ni, NULL), 0);
    ni.n_channels = 17;
    assert_int_equal(validate(&ni, "too many channels"), TM2_ENODEINFO);
    ch[15] = 3;
    ni.n_channels = 16;
    assert_int_equal(validate(&ni, "duplicate channel 0x03"), TM2_ENODEINFO);
    ni.n_channels = 0;
    assert_int_equal(validate(&ni, NULL), 0);
}

static void validate_rule5_moniker(void **state)
{
    (void)state;
    tm2_node_info ni = node_a();
    ni.moniker = "";
    assert_int_equal(validate(&ni, "invalid moniker"), TM2_ENODEINFO);
    ni.moniker = NULL;
    assert_int_equal(validate(&ni, "invalid moniker"), TM2_ENODEINFO);
    ni.moniker = "  ";
    assert_int_equal(validate(&ni, "invalid moniker"), TM2_ENODEINFO);
    ni.moniker = "node\n";
    assert_int_equal(validate(&ni, "invalid moniker"), TM2_ENODEINFO);
    ni.moniker = "~ a !";
    assert_int_equal(validate(&ni, NULL), 0);
}

static void validate_rule6_rpc_address(void **state)
{
    (void)state;
    tm2_node_info ni = node_a();
    ni.rpc_address = " ";
    assert_int_equal(validate(&ni, "invalid RPC address"), TM2_ENODEINFO);
    ni.rpc_address = "tcp://\x01";
    assert_int_equal(validate(&ni, "invalid RPC address"), TM2_ENODEINFO);
    ni.rpc_address = "";
    assert_int_equal(validate(&ni, NULL), 0);
}

static void validate_rule_order(void **state)
{
    (void)state;
    /* With every rule broken, each fix reveals the next rule in order. */
    uint8_t dup[2] = {1, 1};
    tm2_node_info ni = node_a();
    ni.has_net_address = false;
    ni.net_address.id.s[0] = '\0';
    ni.version = " ";
    ni.channels = dup;
    ni.n_channels = 2;
    ni.moniker = "";
    ni.rpc_address = " ";
    assert_int_equal(validate(&ni, "net address missing"), TM2_ENODEINFO);
    ni.has_net_address = true;
    assert_int_equal(validate(&ni, "invalid net address"), TM2_ENODEINFO);
    ni.net_address = node_a().net_address;
    assert_int_equal(validate(&ni, "invalid version"), TM2_ENODEINFO);
    ni.version = "v";
    assert_int_equal(validate(&ni, "duplicate channel"), TM2_ENODEINFO);
    ni.n_channels = 1;
    assert_int_equal(validate(&ni, "invalid moniker"), TM2_ENODEINFO);
    ni.moniker = "m";
    assert_int_equal(validate(&ni, "invalid RPC address"), TM2_ENODEINFO);
    ni.rpc_address = "r";
    assert_int_equal(validate(&ni, NULL), 0);
}

/* ---- compatibility (WIRE.md 5.5) ------------------------------------------------ */

static int compat(const tm2_node_info *a, const tm2_node_info *b, const char *want_in_why)
{
    char why[256] = "unset";
    int rc = tm2_node_info_compatible(a, b, why, sizeof why);
    if (rc == 0)
        assert_string_equal(why, "");
    if (want_in_why && !strstr(why, want_in_why))
        fail_msg("why \"%s\" does not mention \"%s\"", why, want_in_why);
    return rc;
}

/* Two otherwise-compatible NodeInfos carrying the given version sets. */
static int compat_sets(const tm2_version_info *va, size_t na, const tm2_version_info *vb, size_t nb,
                       const char *want_in_why)
{
    tm2_node_info a = node_a(), b = node_a();
    a.versions = va;
    a.n_versions = na;
    b.versions = vb;
    b.n_versions = nb;
    return compat(&a, &b, want_in_why);
}

static int compat_versions(const char *va, const char *vb)
{
    tm2_version_info a = {"p2p", va, false}, b = {"p2p", vb, false};
    int rc = compat_sets(&a, 1, &b, 1, NULL);
    /* The relation is symmetric. */
    assert_int_equal(compat_sets(&b, 1, &a, 1, NULL), rc);
    return rc;
}

static void compat_vectors(void **state)
{
    (void)state;
    size_t la, lb, used;
    uint8_t *ma = tv_get_hex(HS, "A_nodeinfo_plaintext", &la);
    uint8_t *mb = tv_get_hex(HS, "B_nodeinfo_plaintext", &lb);
    tm2_node_info *a, *b;
    assert_int_equal(tm2_node_info_decode(ma, la, &a, &used), 0);
    assert_int_equal(tm2_node_info_decode(mb, lb, &b, &used), 0);
    assert_int_equal(compat(a, b, NULL), 0);
    assert_int_equal(compat(b, a, NULL), 0);
    assert_int_equal(tm2_node_info_compatible(a, b, NULL, 0), 0);
    tm2_node_info_free(a);
    tm2_node_info_free(b);
    free(ma);
    free(mb);
}

static void compat_required_entry_missing(void **state)
{
    (void)state;
    const tm2_version_info a[] = {{"p2p", "v1.0.0", false}, {"app", "", false}};
    const tm2_version_info b[] = {{"p2p", "v1.0.0", false}};
    assert_int_equal(compat_sets(a, 2, b, 1, "our version set requires app"), TM2_EINCOMPAT);
    assert_int_equal(compat_sets(b, 1, a, 2, "their version set requires app"), TM2_EINCOMPAT);
    assert_int_equal(compat_sets(a, 2, NULL, 0, "our version set requires"), TM2_EINCOMPAT);
}

static void compat_optional_entry_missing(void **state)
{
    (void)state;
    const tm2_version_info a[] = {{"p2p", "v1.0.0", false}, {"extra", "v7.0.0", true}};
    const tm2_version_info b[] = {{"p2p", "v1.3.0", false}};
    assert_int_equal(compat_sets(a, 2, b, 1, NULL), 0);
    assert_int_equal(compat_sets(b, 1, a, 2, NULL), 0);
    /* Optional on both sides but present on both: majors still compared. */
    const tm2_version_info c[] = {{"p2p", "v1.0.0", false}, {"extra", "v8.0.0", true}};
    assert_int_equal(compat_sets(a, 2, c, 2, "extra"), TM2_EINCOMPAT);
    /* Empty sets are compatible. */
    assert_int_equal(compat_sets(NULL, 0, NULL, 0, NULL), 0);
}

static void compat_semver_majors(void **state)
{
    (void)state;
    assert_int_equal(compat_versions("v1.0.0", "v1.9.3"), 0);
    assert_int_equal(compat_versions("v1.0.0-rc.0", "v1.2.0"), 0);
    assert_int_equal(compat_versions("v1", "v1.5"), 0);
    assert_int_equal(compat_versions("v0.1", "v0.9.0"), 0);
    assert_int_equal(compat_versions("v1.0.0+build", "v1.0.0-alpha"), 0);
    assert_int_equal(compat_versions("v1.0.0", "v2.0.0"), TM2_EINCOMPAT);
    assert_int_equal(compat_versions("v1", "v2"), TM2_EINCOMPAT);
    assert_int_equal(compat_versions("v0.1.0", "v1.1.0"), TM2_EINCOMPAT);
    assert_int_equal(compat_versions("v10.0.0", "v1.0.0"), TM2_EINCOMPAT);
    /* Invalid versions all map to "": equal to each other, to nothing else. */
    assert_int_equal(compat_versions("", ""), 0);
    assert_int_equal(compat_versions("", "garbage"), 0);
    assert_int_equal(compat_versions("1.0.0", "v1.2-pre"), 0);
    assert_int_equal(compat_versions("", "v1.0.0"), TM2_EINCOMPAT);
    assert_int_equal(compat_versions("1.0.0", "v1.0.0"), TM2_EINCOMPAT);
    assert_int_equal(compat_versions(NULL, ""), 0);
    /* The gno.land "app" entry with an empty version (WIRE.md 5.2). */
    const tm2_version_info a[] = {{"app", "", false}}, b[] = {{"app", "v1.0.0", false}};
    assert_int_equal(compat_sets(a, 1, b, 1, "version of app not compatible"), TM2_EINCOMPAT);
}

static void compat_semver_validity(void **state)
{
    (void)state;
    /* Valid versions (x/mod/semver) with major 1 match v1.0.0; invalid ones
     * match only invalid ones. */
    static const char *valid[] = {
        "v1", "v1.0", "v1.2", "v1.2.3", "v1.0.0-rc.0", "v1.0.0-alpha.1+build.5",
        "v1.0.0+001", "v1.0.0-0a", "v1.0.0-x-y", "v1.0.0--", "v1.0.0-0", "v1.0.0+a-b.c",
        "v1.10.20", "v1.0.0-A.B", "v1.0.0-rc.1+Z",
    };
    static const char *invalid[] = {
        "", "v", "V1.0.0", "1.0.0", "v1.", "v1.0.", "v1..0", "v01.0.0", "v1.02.0", "v1.0.00",
        "v1.2-pre", "v1-pre", "v1.2+b", "v1+b", "v1.0.0-", "v1.0.0+", "v1.0.0-01",
        "v1.0.0-a..b", "v1.0.0-a.", "v1.0.0+a..b", "v1.0.0.0", "v1.0.0-a_b", "v1.0.0+a b",
        "v1.0.0 ", " v1.0.0", "v1.0.0-rc.0+", "vx", "v-1", "v1.0.0-rc.00",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        if (compat_versions(valid[i], "v1.0.0") != 0)
            fail_msg("%s should be a valid v1 version", valid[i]);
        if (compat_versions(valid[i], "") != TM2_EINCOMPAT)
            fail_msg("%s should not match an invalid version", valid[i]);
    }
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        if (compat_versions(invalid[i], "v1.0.0") != TM2_EINCOMPAT)
            fail_msg("%s should be invalid", invalid[i]);
        if (compat_versions(invalid[i], "nonsense") != 0)
            fail_msg("%s should match another invalid version", invalid[i]);
    }
    /* Leading zeros are fine in build identifiers, and a zero major is v0. */
    assert_int_equal(compat_versions("v0.0.0+0001", "v0"), 0);
}

static void compat_duplicate_names_last_wins(void **state)
{
    (void)state;
    /* The reference keys the sets by name: the last entry of a name counts. */
    const tm2_version_info a[] = {{"p2p", "v2.0.0", false}, {"p2p", "v1.0.0", false}};
    const tm2_version_info b[] = {{"p2p", "v1.1.0", false}};
    assert_int_equal(compat_sets(a, 2, b, 1, NULL), 0);
    assert_int_equal(compat_sets(b, 1, a, 2, NULL), 0);
    const tm2_version_info c[] = {{"x", "v1", false}, {"x", "v1", true}};
    assert_int_equal(compat_sets(c, 2, NULL, 0, NULL), 0);
    assert_int_equal(compat_sets(NULL, 0, c, 2, NULL), 0);
}

static void compat_network(void **state)
{
    (void)state;
    tm2_node_info a = node_a(), b = node_a();
    b.network = "other-chain";
    assert_int_equal(compat(&a, &b, "different network"), TM2_EINCOMPAT);
    b.network = "test-chain ";
    assert_int_equal(compat(&a, &b, "different network"), TM2_EINCOMPAT);
    a.network = NULL;
    b.network = "";
    assert_int_equal(compat(&a, &b, NULL), 0);
    /* Versions are checked before the network. */
    const tm2_version_info v[] = {{"p2p", "v2.0.0", false}};
    b.network = "other-chain";
    b.versions = v;
    b.n_versions = 1;
    assert_int_equal(compat(&a, &b, "version"), TM2_EINCOMPAT);
}

static void compat_channels(void **state)
{
    (void)state;
    tm2_node_info a = node_a(), b = node_a();
    const uint8_t only_pex[] = {0x50}, other[] = {0x01, 0x02};
    b.channels = only_pex;
    b.n_channels = 1;
    assert_int_equal(compat(&a, &b, NULL), 0);
    b.channels = other;
    b.n_channels = 2;
    assert_int_equal(compat(&a, &b, "no common channel"), TM2_EINCOMPAT);
    b.n_channels = 0;
    assert_int_equal(compat(&a, &b, "no common channel"), TM2_EINCOMPAT);
    assert_int_equal(compat(&b, &a, "no common channel"), TM2_EINCOMPAT);
    /* The network is checked before the channels. */
    b.network = "x";
    assert_int_equal(compat(&a, &b, "different network"), TM2_EINCOMPAT);
    assert_int_equal(tm2_node_info_compatible(NULL, &b, NULL, 0), TM2_EINVAL);

    assert_true(tm2_node_info_has_channel(&a, 0x40));
    assert_true(tm2_node_info_has_channel(&a, 0x50));
    assert_false(tm2_node_info_has_channel(&a, 0x00));
    assert_false(tm2_node_info_has_channel(&b, 0x01));
    assert_false(tm2_node_info_has_channel(NULL, 0x01));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decode_vector_a),
        cmocka_unit_test(decode_vector_b),
        cmocka_unit_test(encode_from_fields),
        cmocka_unit_test(encode_defaults_omitted),
        cmocka_unit_test(encode_too_big),
        cmocka_unit_test(decode_partial_and_following_bytes),
        cmocka_unit_test(decode_empty_body),
        cmocka_unit_test(decode_lenient_forms),
        cmocka_unit_test(reject_duplicate_field),
        cmocka_unit_test(reject_out_of_order_field),
        cmocka_unit_test(reject_unknown_field),
        cmocka_unit_test(reject_wrong_wire_type),
        cmocka_unit_test(reject_trailing_bytes),
        cmocka_unit_test(reject_truncated),
        cmocka_unit_test(reject_over_size),
        cmocka_unit_test(reject_host_name_address),
        cmocka_unit_test(reject_bad_address),
        cmocka_unit_test(reject_optional_out_of_range),
        cmocka_unit_test(reject_nul_in_string),
        cmocka_unit_test(validate_ok),
        cmocka_unit_test(validate_rule1_address_missing),
        cmocka_unit_test(validate_rule2_address_reparse),
        cmocka_unit_test(validate_rule3_version),
        cmocka_unit_test(validate_rule4_channels),
        cmocka_unit_test(validate_rule5_moniker),
        cmocka_unit_test(validate_rule6_rpc_address),
        cmocka_unit_test(validate_rule_order),
        cmocka_unit_test(compat_vectors),
        cmocka_unit_test(compat_required_entry_missing),
        cmocka_unit_test(compat_optional_entry_missing),
        cmocka_unit_test(compat_semver_majors),
        cmocka_unit_test(compat_semver_validity),
        cmocka_unit_test(compat_duplicate_names_last_wins),
        cmocka_unit_test(compat_network),
        cmocka_unit_test(compat_channels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
