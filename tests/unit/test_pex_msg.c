/* Discovery message codec: the derived vectors both ways, round trips, sizes
 * 0/1/30/31, IPv6 entries, and one test per rejection rule (WIRE.md 9.2,
 * 9.5, 1.5, 1.9). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/pex_msg.h"
#include "tm2p2p/key.h"
#include "tv.h"

#define VEC "derived_discovery_and_misc.txt"

/* ---- helpers ---------------------------------------------------------------- */

struct find_ctx {
    const char *name;
    char *desc, *hex;
};

static void find_cb(char *line, void *user)
{
    struct find_ctx *f = user;
    char *fields[4];
    if (f->hex || tv_split(line, '|', fields, 4) < 3)
        return;
    if (strcmp(fields[0], f->name) == 0) {
        f->desc = strdup(fields[1]);
        f->hex = strdup(fields[2]);
    }
}

/* Bytes of the vector named name; its description column in *desc if asked. */
static uint8_t *vector(const char *name, size_t *len, char **desc)
{
    struct find_ctx f = {name, NULL, NULL};
    tv_lines(VEC, find_cb, &f);
    if (!f.hex)
        fail_msg("vector %s not in %s", name, VEC);
    uint8_t *b = tv_hex_alloc(f.hex, len);
    free(f.hex);
    if (desc)
        *desc = f.desc;
    else
        free(f.desc);
    return b;
}

/* A distinct valid ID per index, from a deterministic key. */
static void make_id(unsigned i, tm2_id *id)
{
    uint8_t seed[32] = {0};
    seed[0] = (uint8_t)i;
    seed[1] = (uint8_t)(i >> 8);
    seed[31] = 0x5a;
    tm2_node_key k;
    tm2_node_key_from_seed(&k, seed);
    tm2_node_key_id(&k, id);
    tm2_node_key_wipe(&k);
}

/* Loopback or ULA literals only; every third one IPv6. */
static void make_addr(unsigned i, tm2_netaddr *a)
{
    char text[TM2_NETADDR_STRLEN + 1];
    tm2_id id;
    make_id(i, &id);
    if (i % 3 == 2)
        snprintf(text, sizeof text, "%s@[fd00::%x]:%u", id.s, i + 1, 26656 + i);
    else
        snprintf(text, sizeof text, "%s@127.0.%u.%u:%u", id.s, i / 250, i % 250 + 1, 26656 + i);
    assert_int_equal(tm2_netaddr_parse(text, 0, a), 0);
}

static void assert_addr_equal(const tm2_netaddr *a, const tm2_netaddr *b)
{
    assert_string_equal(a->id.s, b->id.s);
    assert_memory_equal(a->ip, b->ip, 16);
    assert_int_equal(a->port, b->port);
}

/* Encodes a response of the given addresses into a malloc'd buffer. */
static uint8_t *encode(const tm2_netaddr *addrs, size_t n, size_t *len)
{
    int need = tm2__pex_encode_response(addrs, n, NULL, 0);
    assert_true(need > 0);
    uint8_t *b = malloc((size_t)need);
    assert_non_null(b);
    assert_int_equal(tm2__pex_encode_response(addrs, n, b, (size_t)need), need);
    *len = (size_t)need;
    return b;
}

/* Hand-built message: Any("/p2p.Response", value). */
static size_t response_with_value(const uint8_t *value, size_t vlen, uint8_t *out, size_t cap)
{
    static const char url[] = "/p2p.Response";
    size_t n = 0;
    assert_true(vlen < 128 && cap >= 4 + sizeof url + vlen);
    out[n++] = 0x0a;
    out[n++] = (uint8_t)(sizeof url - 1);
    memcpy(out + n, url, sizeof url - 1);
    n += sizeof url - 1;
    out[n++] = 0x12;
    out[n++] = (uint8_t)vlen;
    if (vlen)
        memcpy(out + n, value, vlen);
    return n + vlen;
}

/* Value holding one entry of the given text. */
static size_t one_entry_value(const char *text, size_t tlen, uint8_t *out)
{
    out[0] = 0x0a;
    out[1] = (uint8_t)tlen;
    memcpy(out + 2, text, tlen);
    return 2 + tlen;
}

static int decode_text_entry(const char *text, size_t tlen, tm2__pex_msg *m)
{
    uint8_t value[128], msg[192];
    tm2_netaddr out[2];
    size_t vlen = one_entry_value(text, tlen, value);
    size_t len = response_with_value(value, vlen, msg, sizeof msg);
    return tm2__pex_decode(msg, len, m, out, 2);
}

/* ---- vectors ---------------------------------------------------------------- */

static void request_vector(void **state)
{
    (void)state;
    size_t len;
    uint8_t *want = vector("pex_request", &len, NULL);
    assert_int_equal(len, TM2__PEX_REQUEST_SIZE);

    uint8_t out[32];
    assert_int_equal(tm2__pex_encode_request(out, sizeof out), TM2__PEX_REQUEST_SIZE);
    assert_memory_equal(out, want, len);
    assert_int_equal(tm2__pex_encode_request(out, TM2__PEX_REQUEST_SIZE - 1), TM2_ENOSPC);

    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(want, len, &m, NULL, 0), 0);
    assert_int_equal(m.kind, TM2__PEX_REQUEST);
    assert_int_equal(m.n_addrs, 0);
    free(want);
}

/* The description column lists the addresses: Response{Peers:[a , b]}. */
static size_t vector_addrs(const char *desc, tm2_netaddr *out, size_t max)
{
    const char *p = strstr(desc, "Peers:[");
    const char *end = strrchr(desc, ']');
    assert_non_null(p);
    assert_non_null(end);
    p += 7;
    size_t n = 0;
    while (p < end) {
        const char *sep = strstr(p, " , ");
        const char *stop = sep && sep < end ? sep : end;
        char text[TM2_NETADDR_STRLEN + 1];
        assert_true((size_t)(stop - p) < sizeof text && n < max);
        memcpy(text, p, (size_t)(stop - p));
        text[stop - p] = '\0';
        assert_int_equal(tm2_netaddr_parse(text, 0, &out[n]), 0);
        n++;
        p = stop == end ? end : stop + 3;
    }
    return n;
}

static void response_vector(void **state)
{
    (void)state;
    size_t len;
    char *desc;
    uint8_t *want = vector("pex_response", &len, &desc);
    tm2_netaddr expect[4], got[4];
    size_t n = vector_addrs(desc, expect, 4);
    assert_int_equal(n, 2);

    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(want, len, &m, got, 4), 0);
    assert_int_equal(m.kind, TM2__PEX_RESPONSE);
    assert_int_equal(m.n_addrs, 2);
    assert_addr_equal(&got[0], &expect[0]);
    assert_addr_equal(&got[1], &expect[1]);
    assert_false(tm2_netaddr_is_ipv4(&got[1]));
    assert_int_equal(tm2__pex_response_validate(got, 2, NULL), 0);

    size_t elen;
    uint8_t *enc = encode(expect, n, &elen);
    assert_int_equal(elen, len);
    assert_memory_equal(enc, want, len);
    assert_int_equal(tm2__pex_encode_response(expect, n, enc, len - 1), TM2_ENOSPC);
    free(enc);
    free(want);
    free(desc);
}

/* ---- round trips -------------------------------------------------------------- */

static void round_trip_sizes(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 30, 31};
    tm2_netaddr in[31], out[31];
    for (unsigned i = 0; i < 31; i++)
        make_addr(i, &in[i]);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s], len;
        uint8_t *b = encode(in, n, &len);
        tm2__pex_msg m;
        memset(out, 0, sizeof out);
        assert_int_equal(tm2__pex_decode(b, len, &m, out, 31), 0);
        assert_int_equal(m.kind, TM2__PEX_RESPONSE);
        assert_int_equal(m.n_addrs, n);
        for (size_t i = 0; i < n; i++)
            assert_addr_equal(&out[i], &in[i]);
        /* ValidateBasic: the empty answer is the only invalid one here. */
        assert_int_equal(tm2__pex_response_validate(out, n, NULL), n ? 0 : TM2_EPROTO);

        /* Re-encoding what was decoded gives the same bytes. */
        size_t len2;
        uint8_t *b2 = encode(out, n, &len2);
        assert_int_equal(len2, len);
        assert_memory_equal(b2, b, len);
        free(b2);
        free(b);
    }
}

static void empty_response_bytes(void **state)
{
    (void)state;
    /* An empty list is omitted, so the Any has no value field. */
    uint8_t b[32];
    int n = tm2__pex_encode_response(NULL, 0, b, sizeof b);
    assert_int_equal(n, 15);
    assert_memory_equal(b, "\x0a\x0d/p2p.Response", 15);
    /* An explicit empty value ("12 00") decodes the same way. */
    uint8_t msg[32];
    size_t len = response_with_value(NULL, 0, msg, sizeof msg);
    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(msg, len, &m, NULL, 0), 0);
    assert_int_equal(m.kind, TM2__PEX_RESPONSE);
    assert_int_equal(m.n_addrs, 0);
}

static void ipv6_entries(void **state)
{
    (void)state;
    tm2_id id;
    make_id(7, &id);
    /* Parsed text -> canonical text on the wire. */
    static const char *const hosts[][2] = {
        {"[::1]", "[::1]"},
        {"[fd00:0:0:0:0:0:0:1]", "[fd00::1]"},
        {"[FD00::ABCD]", "[fd00::abcd]"},
        {"[::ffff:127.0.0.1]", "127.0.0.1"},
        {"[fe80::1%eth0]", "[fe80::1]"},
    };
    size_t n = sizeof hosts / sizeof hosts[0];
    tm2_netaddr in[8], out[8];
    for (size_t i = 0; i < n; i++) {
        char text[TM2_NETADDR_STRLEN + 1];
        snprintf(text, sizeof text, "%s@%s:26656", id.s, hosts[i][0]);
        assert_int_equal(tm2_netaddr_parse(text, 0, &in[i]), 0);
    }
    size_t len;
    uint8_t *b = encode(in, n, &len);
    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(b, len, &m, out, 8), 0);
    assert_int_equal(m.n_addrs, n);
    /* Walk the value: each entry is the canonical string. */
    /* 0a 0d "/p2p.Response" 12 <2-byte length> */
    assert_int_equal(b[15], 0x12);
    assert_true(b[16] & 0x80);
    assert_int_equal((size_t)((b[16] & 0x7f) | b[17] << 7), len - 18);
    const uint8_t *p = b + 18;
    for (size_t i = 0; i < n; i++) {
        char want[TM2_NETADDR_STRLEN + 1];
        int wl = snprintf(want, sizeof want, "%s@%s:26656", id.s, hosts[i][1]);
        assert_int_equal(p[0], 0x0a);
        assert_int_equal(p[1], wl);
        assert_memory_equal(p + 2, want, (size_t)wl);
        p += 2 + wl;
        assert_addr_equal(&out[i], &in[i]);
    }
    assert_ptr_equal(p, b + len);
    free(b);
}

/* Go's reader takes over-long varints and a type URL with any prefix before
 * the last '/'; so do we. */
static void reference_leniencies(void **state)
{
    (void)state;
    tm2_netaddr a, out[2];
    make_addr(0, &a);
    char text[TM2_NETADDR_STRLEN + 1];
    int tl = tm2_netaddr_format(&a, text, sizeof text);
    assert_true(tl > 0 && tl < 127);

    uint8_t value[160], msg[256];
    size_t v = 0;
    value[v++] = 0x0a;
    value[v++] = (uint8_t)(0x80 | tl);   /* length in two bytes */
    value[v++] = 0x00;
    memcpy(value + v, text, (size_t)tl);
    v += (size_t)tl;
    size_t len = response_with_value(value, v, msg, sizeof msg);
    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 2), 0);
    assert_int_equal(m.n_addrs, 1);
    assert_addr_equal(&out[0], &a);

    static const uint8_t req[] = "\x0a\x0fxyz/p2p.Request";
    assert_int_equal(tm2__pex_decode(req, sizeof req - 1, &m, NULL, 0), 0);
    assert_int_equal(m.kind, TM2__PEX_REQUEST);

    /* A scheme prefix is stripped by the parser, as the reference does. */
    char schemed[TM2_NETADDR_STRLEN + 8];
    int sl = snprintf(schemed, sizeof schemed, "tcp://%s", text);
    assert_int_equal(decode_text_entry(schemed, (size_t)sl, &m), 0);
}

/* An address longer than any stack buffer is still one address: the port
 * may carry leading zeros. */
static void long_entry(void **state)
{
    (void)state;
    tm2_id id;
    make_id(3, &id);
    char text[400];
    int n = snprintf(text, sizeof text, "%s@127.0.0.1:", id.s);
    memset(text + n, '0', 250);
    snprintf(text + n + 250, sizeof text - (size_t)n - 250, "26656");
    size_t tl = strlen(text);
    assert_true(tl > 255);

    uint8_t value[512], msg[600];
    size_t v = 0;
    value[v++] = 0x0a;
    value[v++] = (uint8_t)(0x80 | (tl & 0x7f));
    value[v++] = (uint8_t)(tl >> 7);
    memcpy(value + v, text, tl);
    v += tl;
    /* value is over 127 bytes: build the Any by hand. */
    size_t len = 0;
    msg[len++] = 0x0a;
    msg[len++] = 13;
    memcpy(msg + len, "/p2p.Response", 13);
    len += 13;
    msg[len++] = 0x12;
    msg[len++] = (uint8_t)(0x80 | (v & 0x7f));
    msg[len++] = (uint8_t)(v >> 7);
    memcpy(msg + len, value, v);
    len += v;

    tm2_netaddr out[1];
    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 1), 0);
    assert_int_equal(out[0].port, 26656);
    assert_string_equal(out[0].id.s, id.s);
}

/* ---- rejection rules ---------------------------------------------------------- */

static void reject_not_discovery(void **state)
{
    (void)state;
    tm2__pex_msg m;
    /* Empty input: the reference decodes a nil interface, no message. */
    assert_int_equal(tm2__pex_decode(NULL, 0, &m, NULL, 0), TM2_ETYPEURL);
    assert_int_equal(m.kind, 0);
    static const uint8_t ping[] = "\x0a\x09/p2p.Ping";
    assert_int_equal(tm2__pex_decode(ping, sizeof ping - 1, &m, NULL, 0), TM2_ETYPEURL);
    static const uint8_t resp_case[] = "\x0a\x0d/p2p.response";
    assert_int_equal(tm2__pex_decode(resp_case, sizeof resp_case - 1, &m, NULL, 0), TM2_ETYPEURL);
    static const uint8_t no_slash[] = "\x0a\x0bp2p.Request";
    assert_int_equal(tm2__pex_decode(no_slash, sizeof no_slash - 1, &m, NULL, 0), TM2_ETYPEURL);
}

static void reject_any_structure(void **state)
{
    (void)state;
    tm2__pex_msg m;
    /* Field 2 before field 1. */
    static const uint8_t value_first[] = "\x12\x00\x0a\x0c/p2p.Request";
    assert_int_equal(tm2__pex_decode(value_first, sizeof value_first - 1, &m, NULL, 0), TM2_EFIELD);
    /* Type URL with the wrong wire type. */
    static const uint8_t url_varint[] = "\x08\x01";
    assert_int_equal(tm2__pex_decode(url_varint, 2, &m, NULL, 0), TM2_EWIRETYPE);
    /* Type URL longer than the message. */
    static const uint8_t url_trunc[] = "\x0a\x20/p2p.Request";
    assert_int_equal(tm2__pex_decode(url_trunc, sizeof url_trunc - 1, &m, NULL, 0), TM2_ETRUNC);
    /* Bytes after the value field. */
    static const uint8_t trailing[] = "\x0a\x0c/p2p.Request\x12\x00\x00";
    assert_int_equal(tm2__pex_decode(trailing, sizeof trailing - 1, &m, NULL, 0), TM2_ETRAILING);
    /* A third Any field. */
    static const uint8_t field3[] = "\x0a\x0c/p2p.Request\x1a\x00";
    assert_int_equal(tm2__pex_decode(field3, sizeof field3 - 1, &m, NULL, 0), TM2_EFIELD);
}

static void reject_request_with_value(void **state)
{
    (void)state;
    static const uint8_t req[] = "\x0a\x0c/p2p.Request\x12\x02\x0a\x00";
    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(req, sizeof req - 1, &m, NULL, 0), TM2_EFIELD);
    assert_int_equal(m.kind, TM2__PEX_REQUEST);
    /* Even a single zero byte is a (bad) field key. */
    static const uint8_t zero[] = "\x0a\x0c/p2p.Request\x12\x01\x00";
    assert_int_equal(tm2__pex_decode(zero, sizeof zero - 1, &m, NULL, 0), TM2_EFIELD);
}

static void reject_unknown_field(void **state)
{
    (void)state;
    tm2_netaddr a;
    make_addr(0, &a);
    char text[TM2_NETADDR_STRLEN + 1];
    int tl = tm2_netaddr_format(&a, text, sizeof text);
    uint8_t value[128], msg[192];
    tm2_netaddr out[4];
    tm2__pex_msg m;

    /* Field 2 after an entry. */
    size_t v = one_entry_value(text, (size_t)tl, value);
    value[v++] = 0x12;
    value[v++] = 0x00;
    size_t len = response_with_value(value, v, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 4), TM2_EFIELD);
    assert_int_equal(m.kind, TM2__PEX_RESPONSE);

    /* Field 2 alone (a varint one, too). */
    static const uint8_t f2[] = {0x10, 0x01};
    len = response_with_value(f2, 2, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 4), TM2_EFIELD);

    /* Field 0. */
    static const uint8_t f0[] = {0x02, 0x00};
    len = response_with_value(f0, 2, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 4), TM2_EFIELD);
}

static void reject_wrong_wire_type(void **state)
{
    (void)state;
    uint8_t msg[64];
    tm2_netaddr out[4];
    tm2__pex_msg m;
    static const uint8_t varint[] = {0x08, 0x01};
    size_t len = response_with_value(varint, sizeof varint, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 4), TM2_EWIRETYPE);
    static const uint8_t fixed32[] = {0x0d, 1, 2, 3, 4};
    len = response_with_value(fixed32, sizeof fixed32, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 4), TM2_EWIRETYPE);
    /* Wire type 3 (group start) is no wire type amino knows. */
    static const uint8_t group[] = {0x0b};
    len = response_with_value(group, sizeof group, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 4), TM2_EWIRETYPE);
}

static void reject_truncated(void **state)
{
    (void)state;
    uint8_t msg[64];
    tm2_netaddr out[4];
    tm2__pex_msg m;
    /* Entry length beyond the value. */
    static const uint8_t entry[] = {0x0a, 0x10, 'a', 'b'};
    size_t len = response_with_value(entry, sizeof entry, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 4), TM2_ETRUNC);
    /* Key cut inside a varint. */
    static const uint8_t key[] = {0x8a};
    len = response_with_value(key, sizeof key, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 4), TM2_ETRUNC);
    /* Value length beyond the message. */
    len = response_with_value(entry, sizeof entry, msg, sizeof msg);
    assert_int_equal(tm2__pex_decode(msg, len - 3, &m, out, 4), TM2_ETRUNC);
}

static void reject_too_many(void **state)
{
    (void)state;
    tm2_netaddr in[31], out[31];
    for (unsigned i = 0; i < 31; i++)
        make_addr(i, &in[i]);
    size_t len;
    uint8_t *b = encode(in, 31, &len);
    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(b, len, &m, out, TM2__PEX_MAX_SHARED), TM2_ETOOBIG);
    assert_int_equal(m.kind, TM2__PEX_RESPONSE);
    assert_int_equal(m.n_addrs, 31);
    /* A caller that only wants the count passes no array. */
    assert_int_equal(tm2__pex_decode(b, len, &m, NULL, 0), TM2_ETOOBIG);
    assert_int_equal(m.n_addrs, 31);
    /* A bigger cap takes it. */
    assert_int_equal(tm2__pex_decode(b, len, &m, out, 31), 0);
    free(b);

    /* Structure errors win over the count: 31 entries plus a stray field. */
    b = encode(in, 31, &len);
    uint8_t *bad = malloc(len + 2);
    memcpy(bad, b, len);
    /* The value length is a 2-byte varint at offset 16; grow it by 2. */
    assert_int_equal(bad[15], 0x12);
    unsigned vlen = (unsigned)(bad[16] & 0x7f) | (unsigned)bad[17] << 7;
    vlen += 2;
    bad[16] = (uint8_t)(0x80 | (vlen & 0x7f));
    bad[17] = (uint8_t)(vlen >> 7);
    bad[len] = 0x10;
    bad[len + 1] = 0x01;
    assert_int_equal(tm2__pex_decode(bad, len + 2, &m, out, 30), TM2_EFIELD);
    free(bad);
    free(b);
}

static void reject_bad_entry(void **state)
{
    (void)state;
    tm2_id id;
    make_id(1, &id);
    char text[200];
    tm2__pex_msg m;
    int n;

    /* A host name would need DNS: never on this path. */
    n = snprintf(text, sizeof text, "%s@localhost:26656", id.s);
    assert_int_equal(decode_text_entry(text, (size_t)n, &m), TM2_ERESOLVE);
    assert_int_equal(m.bad, 0);
    /* No ID. */
    assert_int_equal(decode_text_entry("127.0.0.1:26656", 15, &m), TM2_EADDR);
    /* Empty entry ("0a 00"). */
    assert_int_equal(decode_text_entry("", 0, &m), TM2_EADDR);
    /* Bad port. */
    n = snprintf(text, sizeof text, "%s@127.0.0.1:70000", id.s);
    assert_int_equal(decode_text_entry(text, (size_t)n, &m), TM2_EPORT);
    /* Bad ID. */
    assert_int_equal(decode_text_entry("deadbeef@127.0.0.1:26656", 24, &m) < 0, 1);
    /* A NUL inside the string. */
    n = snprintf(text, sizeof text, "%s@127.0.0.1:26656", id.s);
    text[n] = '\0';
    assert_int_equal(decode_text_entry(text, (size_t)n + 1, &m), TM2_EADDR);
    /* Legacy numeric host forms libc would take. */
    n = snprintf(text, sizeof text, "%s@127.1:26656", id.s);
    assert_true(decode_text_entry(text, (size_t)n, &m) < 0);

    /* One bad entry among good ones rejects the whole message. */
    tm2_netaddr in[3], out[3];
    for (unsigned i = 0; i < 3; i++)
        make_addr(i, &in[i]);
    char good[3][TM2_NETADDR_STRLEN + 1];
    uint8_t value[200], msg[300];
    size_t v = 0;
    for (unsigned i = 0; i < 3; i++) {
        int gl = tm2_netaddr_format(&in[i], good[i], sizeof good[i]);
        if (i == 1)
            gl = snprintf(good[i], sizeof good[i], "%s@example.invalid:1", id.s);
        v += one_entry_value(good[i], (size_t)gl, value + v);
    }
    assert_true(v < 128 * 2);
    /* Value over 127 bytes: build the Any by hand. */
    size_t len = 0;
    msg[len++] = 0x0a;
    msg[len++] = 13;
    memcpy(msg + len, "/p2p.Response", 13);
    len += 13;
    msg[len++] = 0x12;
    msg[len++] = (uint8_t)(0x80 | (v & 0x7f));
    msg[len++] = (uint8_t)(v >> 7);
    memcpy(msg + len, value, v);
    len += v;
    assert_int_equal(tm2__pex_decode(msg, len, &m, out, 3), TM2_ERESOLVE);
    assert_int_equal(m.bad, 1);
}

/* ---- ValidateBasic and encoder arguments ---------------------------------------- */

static void validate_basic(void **state)
{
    (void)state;
    tm2_netaddr a[3];
    for (unsigned i = 0; i < 3; i++)
        make_addr(i, &a[i]);
    size_t bad = 99;
    assert_int_equal(tm2__pex_response_validate(a, 0, &bad), TM2_EPROTO);
    assert_int_equal(tm2__pex_response_validate(a, 3, &bad), 0);
    assert_int_equal(bad, 99);

    static const struct { const char *host; int err; } cases[] = {
        {"0.0.0.0", TM2_EUNSPEC},
        {"[::]", TM2_EUNSPEC},
        {"[2001:db8::1]", TM2_ERESERVED},
        {"255.255.255.255", TM2_ERESERVED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[TM2_NETADDR_STRLEN + 1];
        snprintf(text, sizeof text, "%s@%s:26656", a[2].id.s, cases[i].host);
        tm2_netaddr saved = a[2];
        assert_int_equal(tm2_netaddr_parse(text, 0, &a[2]), 0);
        assert_int_equal(tm2__pex_response_validate(a, 3, &bad), cases[i].err);
        assert_int_equal(bad, 2);
        a[2] = saved;
    }
    /* Port 0 passes, as in the reference. */
    a[1].port = 0;
    assert_int_equal(tm2__pex_response_validate(a, 3, NULL), 0);
}

static void encoder_arguments(void **state)
{
    (void)state;
    tm2_netaddr a[2];
    make_addr(0, &a[0]);
    make_addr(1, &a[1]);
    uint8_t b[512];
    assert_int_equal(tm2__pex_encode_response(NULL, 1, b, sizeof b), TM2_EINVAL);
    assert_int_equal(tm2__pex_encode_response(a, 1, NULL, 10), TM2_EINVAL);
    int need = tm2__pex_encode_response(a, 2, NULL, 0);
    assert_true(need > 0);
    assert_int_equal(tm2__pex_encode_response(a, 2, b, (size_t)need - 1), TM2_ENOSPC);
    assert_int_equal(tm2__pex_encode_response(a, 2, b, (size_t)need), need);
    /* No ID: could not be decoded back. */
    a[1].id.s[0] = '\0';
    assert_int_equal(tm2__pex_encode_response(a, 2, b, sizeof b), TM2_EINVAL);
    assert_int_equal(tm2__pex_encode_request(NULL, 0), TM2_ENOSPC);
    tm2__pex_msg m;
    assert_int_equal(tm2__pex_decode(b, 4, NULL, NULL, 0), TM2_EINVAL);
    assert_int_equal(tm2__pex_decode(b, 4, &m, NULL, 3), TM2_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_vector),
        cmocka_unit_test(response_vector),
        cmocka_unit_test(round_trip_sizes),
        cmocka_unit_test(empty_response_bytes),
        cmocka_unit_test(ipv6_entries),
        cmocka_unit_test(reference_leniencies),
        cmocka_unit_test(long_entry),
        cmocka_unit_test(reject_not_discovery),
        cmocka_unit_test(reject_any_structure),
        cmocka_unit_test(reject_request_with_value),
        cmocka_unit_test(reject_unknown_field),
        cmocka_unit_test(reject_wrong_wire_type),
        cmocka_unit_test(reject_truncated),
        cmocka_unit_test(reject_too_many),
        cmocka_unit_test(reject_bad_entry),
        cmocka_unit_test(validate_basic),
        cmocka_unit_test(encoder_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
