#include <stdlib.h>
#include <string.h>

#include "codec/amino.h"
#include "tv.h"

#define PACKETS "derived_mconn_packets.txt"

/* ---- helpers ---------------------------------------------------------------- */

static int uvarint_of(const char *hex, uint64_t *v, size_t *used)
{
    size_t n;
    uint8_t *b = tv_hex_alloc(hex, &n);
    tm2__amino_rd r;
    tm2__amino_rd_init(&r, b, n);
    int rc = tm2__amino_uvarint(&r, v);
    *used = (size_t)(r.p - b);
    free(b);
    return rc;
}

static int key_of(const char *hex, uint32_t *field, unsigned *wt)
{
    size_t n;
    uint8_t *b = tv_hex_alloc(hex, &n);
    tm2__amino_rd r;
    tm2__amino_rd_init(&r, b, n);
    int rc = tm2__amino_key(&r, field, wt);
    free(b);
    return rc;
}

struct packet_find {
    const char *name;
    char *hex;
};

static void packet_cb(char *line, void *user)
{
    struct packet_find *pf = user;
    char *f[3];
    if (pf->hex || tv_split(line, '|', f, 3) != 3)
        return;
    /* Names may carry a parenthesised note after a space. */
    size_t n = strlen(pf->name);
    if (strncmp(f[0], pf->name, n) == 0 && (f[0][n] == '\0' || f[0][n] == ' '))
        pf->hex = strdup(f[2]);
}

/* Bytes of a packet line in the mconn vector file (sized Any). */
static uint8_t *packet_vector(const char *name, size_t *len)
{
    struct packet_find pf = {name, NULL};
    tv_lines(PACKETS, packet_cb, &pf);
    assert_non_null(pf.hex);
    uint8_t *b = tv_hex_alloc(pf.hex, len);
    free(pf.hex);
    return b;
}

/* ---- uvarint ---------------------------------------------------------------- */

static void uvarint_round_trip(void **state)
{
    (void)state;
    static const struct {
        uint64_t v;
        const char *hex;
    } cases[] = {
        {0, "00"},
        {1, "01"},
        {127, "7f"},
        {128, "8001"},
        {300, "ac02"},
        {16383, "ff7f"},
        {16384, "808001"},
        {UINT32_MAX, "ffffffff0f"},
        {1ull << 63, "80808080808080808001"},
        {UINT64_MAX, "ffffffffffffffffff01"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        uint8_t *want = tv_hex_alloc(cases[i].hex, &n);
        uint8_t buf[16];
        tm2__amino_wr w;
        tm2__amino_wr_init(&w, buf, sizeof buf);
        tm2__amino_put_uvarint(&w, cases[i].v);
        assert_int_equal(w.err, 0);
        assert_int_equal(w.len, n);
        assert_int_equal(tm2__amino_uvarint_size(cases[i].v), n);
        assert_memory_equal(buf, want, n);

        uint64_t v = 1;
        size_t used;
        assert_int_equal(uvarint_of(cases[i].hex, &v, &used), 0);
        assert_true(v == cases[i].v);
        assert_int_equal(used, n);
        free(want);
    }
}

static void uvarint_non_minimal_accepted(void **state)
{
    (void)state;
    uint64_t v;
    size_t used;
    assert_int_equal(uvarint_of("8000", &v, &used), 0);
    assert_true(v == 0);
    assert_int_equal(used, 2);
    assert_int_equal(uvarint_of("ff00", &v, &used), 0);
    assert_true(v == 127);
    /* Ten bytes, padded with zero groups up to the last allowed byte. */
    assert_int_equal(uvarint_of("81808080808080808000", &v, &used), 0);
    assert_true(v == 1);
    assert_int_equal(used, 10);
    /* Only the value is consumed; what follows stays. */
    assert_int_equal(uvarint_of("0105", &v, &used), 0);
    assert_true(v == 1);
    assert_int_equal(used, 1);
}

static void uvarint_overflow_and_truncation(void **state)
{
    (void)state;
    uint64_t v;
    size_t used;
    /* The tenth byte may only be 0 or 1. */
    assert_int_equal(uvarint_of("ffffffffffffffffff02", &v, &used), TM2_EOVERFLOW);
    assert_int_equal(uvarint_of("80808080808080808080", &v, &used), TM2_EOVERFLOW);
    /* Eleven bytes, even with a zero value. */
    assert_int_equal(uvarint_of("8080808080808080808000", &v, &used), TM2_EOVERFLOW);
    /* Input ends inside the value. */
    assert_int_equal(uvarint_of("", &v, &used), TM2_ETRUNC);
    assert_int_equal(uvarint_of("80", &v, &used), TM2_ETRUNC);
    assert_int_equal(uvarint_of("808080808080808080", &v, &used), TM2_ETRUNC);
}

/* ---- keys ------------------------------------------------------------------- */

static void key_rules(void **state)
{
    (void)state;
    uint32_t f;
    unsigned wt;
    assert_int_equal(key_of("08", &f, &wt), 0);
    assert_int_equal(f, 1);
    assert_int_equal(wt, TM2_WT_VARINT);
    assert_int_equal(key_of("42", &f, &wt), 0);
    assert_int_equal(f, 8);
    assert_int_equal(wt, TM2_WT_BYTES);
    assert_int_equal(key_of("09", &f, &wt), 0);
    assert_int_equal(wt, TM2_WT_FIXED64);
    assert_int_equal(key_of("0d", &f, &wt), 0);
    assert_int_equal(wt, TM2_WT_FIXED32);
    /* Non-minimal key. */
    assert_int_equal(key_of("8a00", &f, &wt), 0);
    assert_int_equal(f, 1);
    assert_int_equal(wt, TM2_WT_BYTES);
    /* Largest field number: (2^29-1) << 3 | 2. */
    assert_int_equal(key_of("faffffff0f", &f, &wt), 0);
    assert_int_equal(f, TM2_AMINO_MAX_FIELD);
    /* 2^29 is one too many. */
    assert_int_equal(key_of("8280808010", &f, &wt), TM2_EFIELD);
    assert_int_equal(key_of("ffffffffffffffffff01", &f, &wt), TM2_EFIELD);
    /* Field 0, whatever the wire type. */
    assert_int_equal(key_of("00", &f, &wt), TM2_EFIELD);
    assert_int_equal(key_of("02", &f, &wt), TM2_EFIELD);
    /* Wire types 3, 4, 6, 7. */
    assert_int_equal(key_of("0b", &f, &wt), TM2_EWIRETYPE);
    assert_int_equal(key_of("0c", &f, &wt), TM2_EWIRETYPE);
    assert_int_equal(key_of("0e", &f, &wt), TM2_EWIRETYPE);
    assert_int_equal(key_of("0f", &f, &wt), TM2_EWIRETYPE);
    /* Bad varint in the key. */
    assert_int_equal(key_of("", &f, &wt), TM2_ETRUNC);
    assert_int_equal(key_of("8a", &f, &wt), TM2_ETRUNC);
    assert_int_equal(key_of("8080808080808080808000", &f, &wt), TM2_EOVERFLOW);
}

/* ---- values ----------------------------------------------------------------- */

static void bytes_values(void **state)
{
    (void)state;
    const uint8_t ok[] = {0x03, 'a', 'b', 'c', 0x00};
    tm2__amino_rd r;
    const uint8_t *p;
    size_t n;
    tm2__amino_rd_init(&r, ok, sizeof ok);
    assert_int_equal(tm2__amino_bytes(&r, &p, &n), 0);
    assert_int_equal(n, 3);
    assert_ptr_equal(p, ok + 1);
    assert_int_equal(tm2__amino_bytes(&r, &p, &n), 0);
    assert_int_equal(n, 0);
    assert_true(tm2__amino_rd_done(&r));
    assert_int_equal(tm2__amino_bytes(&r, &p, &n), TM2_ETRUNC);

    const uint8_t short_[] = {0x04, 'a', 'b', 'c'};
    tm2__amino_rd_init(&r, short_, sizeof short_);
    assert_int_equal(tm2__amino_bytes(&r, &p, &n), TM2_ETRUNC);

    /* A length near 2^64 must not wrap the bounds check. */
    const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'x'};
    tm2__amino_rd_init(&r, huge, sizeof huge);
    assert_int_equal(tm2__amino_bytes(&r, &p, &n), TM2_ETRUNC);
}

static void skip_values(void **state)
{
    (void)state;
    const uint8_t all[] = {
        0xac, 0x02,                                     /* varint */
        1, 2, 3, 4, 5, 6, 7, 8,                         /* fixed64 */
        0x02, 'h', 'i',                                 /* bytes */
        1, 2, 3, 4,                                     /* fixed32 */
    };
    tm2__amino_rd r;
    tm2__amino_rd_init(&r, all, sizeof all);
    assert_int_equal(tm2__amino_skip(&r, TM2_WT_VARINT), 0);
    assert_ptr_equal(r.p, all + 2);
    assert_int_equal(tm2__amino_skip(&r, TM2_WT_FIXED64), 0);
    assert_ptr_equal(r.p, all + 10);
    assert_int_equal(tm2__amino_skip(&r, TM2_WT_BYTES), 0);
    assert_ptr_equal(r.p, all + 13);
    assert_int_equal(tm2__amino_skip(&r, TM2_WT_FIXED32), 0);
    assert_true(tm2__amino_rd_done(&r));

    tm2__amino_rd_init(&r, all, 7);
    assert_int_equal(tm2__amino_skip(&r, TM2_WT_FIXED64), TM2_ETRUNC);
    tm2__amino_rd_init(&r, all, 3);
    assert_int_equal(tm2__amino_skip(&r, TM2_WT_FIXED32), TM2_ETRUNC);
    tm2__amino_rd_init(&r, all, sizeof all);
    for (unsigned wt = 3; wt <= 7; wt++)
        if (wt != TM2_WT_FIXED32)
            assert_int_equal(tm2__amino_skip(&r, wt), TM2_EWIRETYPE);
}

static void bool_values(void **state)
{
    (void)state;
    tm2__amino_rd r;
    bool b = true;
    const uint8_t f[] = {0x00}, t[] = {0x01}, two[] = {0x02}, longzero[] = {0x80, 0x00};
    tm2__amino_rd_init(&r, f, 1);
    assert_int_equal(tm2__amino_bool(&r, &b), 0);
    assert_false(b);
    tm2__amino_rd_init(&r, t, 1);
    assert_int_equal(tm2__amino_bool(&r, &b), 0);
    assert_true(b);
    tm2__amino_rd_init(&r, two, 1);
    assert_int_equal(tm2__amino_bool(&r, &b), TM2_EDECODE);
    /* A bool is one raw byte, so an over-long varint 0 is not a bool. */
    tm2__amino_rd_init(&r, longzero, 2);
    assert_int_equal(tm2__amino_bool(&r, &b), TM2_EDECODE);
    tm2__amino_rd_init(&r, f, 0);
    assert_int_equal(tm2__amino_bool(&r, &b), TM2_ETRUNC);
}

static void u8_values(void **state)
{
    (void)state;
    tm2__amino_rd r;
    uint8_t v;
    const uint8_t max[] = {0xff, 0x01}, over[] = {0x80, 0x02}, longone[] = {0x81, 0x00},
                  huge[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    tm2__amino_rd_init(&r, max, sizeof max);
    assert_int_equal(tm2__amino_u8(&r, &v), 0);
    assert_int_equal(v, 255);
    tm2__amino_rd_init(&r, longone, sizeof longone);
    assert_int_equal(tm2__amino_u8(&r, &v), 0);
    assert_int_equal(v, 1);
    tm2__amino_rd_init(&r, over, sizeof over);
    assert_int_equal(tm2__amino_u8(&r, &v), TM2_EOVERFLOW);
    tm2__amino_rd_init(&r, huge, sizeof huge);
    assert_int_equal(tm2__amino_u8(&r, &v), TM2_EOVERFLOW);
    tm2__amino_rd_init(&r, max, 1);
    assert_int_equal(tm2__amino_u8(&r, &v), TM2_ETRUNC);
}

/* ---- sized ------------------------------------------------------------------ */

/* A sized message with a body of body_len bytes (0x5a) and a minimal prefix. */
static uint8_t *make_sized(size_t body_len, size_t *total)
{
    size_t pl = tm2__amino_uvarint_size(body_len);
    uint8_t *b = malloc(pl + body_len);
    assert_non_null(b);
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, b, pl);
    tm2__amino_put_uvarint(&w, body_len);
    assert_int_equal(w.err, 0);
    memset(b + pl, 0x5a, body_len);
    *total = pl + body_len;
    return b;
}

static int sized(const uint8_t *b, size_t len, size_t max, size_t *body_len, size_t *consumed)
{
    const uint8_t *body = NULL;
    int rc = tm2__amino_sized(b, len, max, &body, body_len, consumed);
    if (rc == 0) {
        assert_true(body >= b && body + *body_len <= b + len);
        assert_ptr_equal(body + *body_len, b + *consumed);
    }
    return rc;
}

static void sized_basic(void **state)
{
    (void)state;
    size_t len, bl, used;
    uint8_t *ping = packet_vector("ping", &len);
    assert_int_equal(sized(ping, len, 1056, &bl, &used), 0);
    assert_int_equal(bl, 11);
    assert_int_equal(used, 12);
    /* Every proper prefix is "more please". */
    for (size_t i = 0; i < len; i++)
        assert_int_equal(sized(ping, i, 1056, &bl, &used), TM2_EAGAIN);
    free(ping);

    /* Several messages back to back: only the first is split off. */
    const uint8_t two[] = {0x01, 0xaa, 0x00, 0x02, 0xbb};
    assert_int_equal(sized(two, sizeof two, 100, &bl, &used), 0);
    assert_int_equal(bl, 1);
    assert_int_equal(used, 2);
    assert_int_equal(sized(two + 2, 3, 100, &bl, &used), 0);
    assert_int_equal(bl, 0);
    assert_int_equal(used, 1);
    assert_int_equal(sized(two + 3, 2, 100, &bl, &used), TM2_EAGAIN);

    /* A non-minimal prefix is accepted and counts toward the limit. */
    const uint8_t nm[] = {0x81, 0x00, 0xcc};
    assert_int_equal(sized(nm, sizeof nm, 3, &bl, &used), 0);
    assert_int_equal(bl, 1);
    assert_int_equal(used, 3);
    assert_int_equal(sized(nm, sizeof nm, 2, &bl, &used), TM2_ETOOBIG);

    /* An overflowing prefix is an error, not a wait. */
    const uint8_t ov[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    assert_int_equal(sized(ov, sizeof ov, 0, &bl, &used), TM2_EOVERFLOW);
    assert_int_equal(sized(ov, 9, 0, &bl, &used), TM2_EAGAIN);
}

static void sized_packet_limit_1056(void **state)
{
    (void)state;
    /* WIRE.md 6.4: the default receive limit is 1056 bytes, prefix included.
     * A body of 1054 bytes has a 2-byte prefix: exactly 1056. */
    size_t total, bl, used;
    uint8_t *b = make_sized(1054, &total);
    assert_int_equal(total, 1056);
    assert_int_equal(sized(b, total, 1056, &bl, &used), 0);
    assert_int_equal(bl, 1054);
    assert_int_equal(used, 1056);
    assert_int_equal(sized(b, total, 1055, &bl, &used), TM2_ETOOBIG);
    free(b);

    b = make_sized(1055, &total);
    assert_int_equal(sized(b, total, 1056, &bl, &used), TM2_ETOOBIG);
    /* Known from the prefix alone, before any body byte arrives. */
    assert_int_equal(sized(b, 2, 1056, &bl, &used), TM2_ETOOBIG);
    free(b);

    /* The largest real packet (1024-byte chunk) is 1046 bytes and fits. */
    b = make_sized(1044, &total);
    assert_int_equal(total, 1046);
    assert_int_equal(sized(b, total, 1056, &bl, &used), 0);
    assert_int_equal(sized(b, total - 1, 1056, &bl, &used), TM2_EAGAIN);
    free(b);
}

static void sized_node_info_limit_10240(void **state)
{
    (void)state;
    size_t total, bl, used;
    uint8_t *b = make_sized(10238, &total);
    assert_int_equal(total, 10240);
    assert_int_equal(sized(b, total, 10240, &bl, &used), 0);
    free(b);
    b = make_sized(10239, &total);
    assert_int_equal(sized(b, total, 10240, &bl, &used), TM2_ETOOBIG);
    free(b);
}

static void sized_prefix_boundaries(void **state)
{
    (void)state;
    size_t total, bl, used;
    /* max 128: body 127 + 1-byte prefix = 128 fits; body 128 needs a
     * 2-byte prefix (130 bytes) and does not. */
    uint8_t *b = make_sized(127, &total);
    assert_int_equal(sized(b, total, 128, &bl, &used), 0);
    free(b);
    b = make_sized(128, &total);
    assert_int_equal(total, 130);
    assert_int_equal(sized(b, total, 128, &bl, &used), TM2_ETOOBIG);
    assert_int_equal(sized(b, total, 130, &bl, &used), 0);
    assert_int_equal(sized(b, total, 129, &bl, &used), TM2_ETOOBIG);
    free(b);

    /* body_len > max by itself (a huge length). */
    const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(sized(huge, sizeof huge, 10240, &bl, &used), TM2_ETOOBIG);
    /* A partial prefix that already says too much. */
    assert_int_equal(sized(huge, 2, 10240, &bl, &used), TM2_ETOOBIG);
    /* A partial prefix that might still be small is a wait. */
    const uint8_t part[] = {0x80, 0x80};
    assert_int_equal(sized(part, 2, 10240, &bl, &used), TM2_EAGAIN);
    /* ...unless even its length cannot fit. */
    assert_int_equal(sized(part, 2, 2, &bl, &used), TM2_ETOOBIG);
    /* max == 0: no limit, as in the reference. */
    b = make_sized(20000, &total);
    assert_int_equal(sized(b, total, 0, &bl, &used), 0);
    assert_int_equal(bl, 20000);
    assert_int_equal(sized(b, 10, 0, &bl, &used), TM2_EAGAIN);
    free(b);
    /* Empty input. */
    assert_int_equal(sized(NULL, 0, 100, &bl, &used), TM2_EAGAIN);
}

/* ---- Any -------------------------------------------------------------------- */

static int any_hex(const char *hex, char *name, size_t name_cap, size_t *value_off, size_t *value_len)
{
    size_t n;
    uint8_t *b = tv_hex_alloc(hex, &n);
    const char *nm = NULL;
    size_t nl = 0;
    const uint8_t *v = NULL;
    int rc = tm2__amino_any(b, n, &nm, &nl, &v, value_len);
    if (rc == 0) {
        assert_true((const uint8_t *)nm >= b && (const uint8_t *)nm + nl <= b + n);
        assert_true(v >= b && v + *value_len <= b + n);
        assert_true(nl < name_cap);
        memcpy(name, nm, nl);
        name[nl] = '\0';
        *value_off = (size_t)(v - b);
    }
    free(b);
    return rc;
}

static void any_decode_vectors(void **state)
{
    (void)state;
    size_t len, bl, used, voff, vlen;
    char name[64];
    const uint8_t *body;

    uint8_t *pkt = packet_vector("pong", &len);
    assert_int_equal(tm2__amino_sized(pkt, len, 1056, &body, &bl, &used), 0);
    const char *nm;
    size_t nl;
    const uint8_t *v;
    assert_int_equal(tm2__amino_any(body, bl, &nm, &nl, &v, &vlen), 0);
    assert_int_equal(nl, 8);
    assert_memory_equal(nm, "p2p.Pong", 8);
    assert_int_equal(vlen, 0);
    assert_ptr_equal(v, body + bl);
    free(pkt);

    pkt = packet_vector("msg_payload", &len);
    assert_int_equal(tm2__amino_sized(pkt, len, 1056, &body, &bl, &used), 0);
    assert_int_equal(used, len);
    assert_int_equal(tm2__amino_any(body, bl, &nm, &nl, &v, &vlen), 0);
    assert_int_equal(nl, 7);
    assert_memory_equal(nm, "p2p.Msg", 7);
    size_t bare_len;
    uint8_t *bare = packet_vector("msg_payload_bare_value", &bare_len);
    assert_int_equal(vlen, bare_len);
    assert_memory_equal(v, bare, bare_len);
    free(bare);
    free(pkt);

    /* Only the text after the last '/' names the type. */
    assert_int_equal(any_hex("0a0c78797a2f7032702e50696e67", name, sizeof name, &voff, &vlen), 0);
    assert_string_equal(name, "p2p.Ping");
    assert_int_equal(any_hex("0a0b2f612f2f7032702e4d7367", name, sizeof name, &voff, &vlen), 0);
    assert_string_equal(name, "p2p.Msg");
    /* Field 2 present but empty. */
    assert_int_equal(any_hex("0a092f7032702e50696e671200", name, sizeof name, &voff, &vlen), 0);
    assert_int_equal(vlen, 0);
    assert_int_equal(voff, 13);
}

static void any_rejections(void **state)
{
    (void)state;
    size_t voff, vlen;
    char name[64];
    /* Empty Any (nil interface). */
    assert_int_equal(any_hex("", name, sizeof name, &voff, &vlen), TM2_ETYPEURL);
    /* Field 2 first. */
    assert_int_equal(any_hex("12020801", name, sizeof name, &voff, &vlen), TM2_EFIELD);
    /* Field 1 with the wrong wire type. */
    assert_int_equal(any_hex("0801", name, sizeof name, &voff, &vlen), TM2_EWIRETYPE);
    /* Field 2 with the wrong wire type. */
    assert_int_equal(any_hex("0a092f7032702e50696e671001", name, sizeof name, &voff, &vlen), TM2_EWIRETYPE);
    /* Field 1 twice, field 3 after field 1. */
    assert_int_equal(any_hex("0a092f7032702e50696e670a00", name, sizeof name, &voff, &vlen), TM2_EFIELD);
    assert_int_equal(any_hex("0a092f7032702e50696e671a00", name, sizeof name, &voff, &vlen), TM2_EFIELD);
    /* Anything after field 2. */
    assert_int_equal(any_hex("0a092f7032702e50696e6712000800", name, sizeof name, &voff, &vlen), TM2_ETRAILING);
    assert_int_equal(any_hex("0a092f7032702e50696e67120100ff", name, sizeof name, &voff, &vlen), TM2_ETRAILING);
    /* Truncated URL, truncated value, bad key after the URL. */
    assert_int_equal(any_hex("0a0a2f7032702e50696e67", name, sizeof name, &voff, &vlen), TM2_ETRUNC);
    assert_int_equal(any_hex("0a092f7032702e50696e671202aa", name, sizeof name, &voff, &vlen), TM2_ETRUNC);
    assert_int_equal(any_hex("0a092f7032702e50696e670b", name, sizeof name, &voff, &vlen), TM2_EWIRETYPE);
    assert_int_equal(any_hex("0a092f7032702e50696e6700", name, sizeof name, &voff, &vlen), TM2_EFIELD);
    /* Type URL: non-printable bytes (0x1f, 0x7f, 0x80), empty, no '/', ends with '/'. */
    assert_int_equal(any_hex("0a092f7032702e50696e1f", name, sizeof name, &voff, &vlen), TM2_ETYPEURL);
    assert_int_equal(any_hex("0a092f7032702e50696e7f", name, sizeof name, &voff, &vlen), TM2_ETYPEURL);
    assert_int_equal(any_hex("0a092f7032702e50696e80", name, sizeof name, &voff, &vlen), TM2_ETYPEURL);
    assert_int_equal(any_hex("0a00", name, sizeof name, &voff, &vlen), TM2_ETYPEURL);
    assert_int_equal(any_hex("0a087032702e50696e67", name, sizeof name, &voff, &vlen), TM2_ETYPEURL);
    assert_int_equal(any_hex("0a047032702f", name, sizeof name, &voff, &vlen), TM2_ETYPEURL);
    /* Spaces are printable ASCII. */
    assert_int_equal(any_hex("0a032f2061", name, sizeof name, &voff, &vlen), 0);
    assert_string_equal(name, " a");
}

/* ---- writer ----------------------------------------------------------------- */

static void writer_packets(void **state)
{
    (void)state;
    size_t len;
    uint8_t *want = packet_vector("msg_payload", &len);
    /* Encode PacketMsg{ChannelID:7, EOF:1, Bytes:"hello world"} as a sized Any. */
    uint8_t value[64], any[64], out[64];
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, value, sizeof value);
    tm2__amino_put_uvarint_field(&w, 1, 7);
    tm2__amino_put_uvarint_field(&w, 2, 1);
    tm2__amino_put_bytes_field(&w, 3, "hello world", 11, false);
    assert_int_equal(w.err, 0);
    size_t vlen = w.len;

    tm2__amino_wr_init(&w, any, sizeof any);
    tm2__amino_put_any_header(&w, "/p2p.Msg", vlen);
    tm2__amino_put_raw(&w, value, vlen);
    assert_int_equal(w.err, 0);
    size_t alen = w.len;

    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_uvarint(&w, alen);
    tm2__amino_put_raw(&w, any, alen);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, len);
    assert_memory_equal(out, want, len);
    free(want);

    /* Ping: no field 2 at all. */
    want = packet_vector("ping", &len);
    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_uvarint(&w, 11);
    tm2__amino_put_any_header(&w, "/p2p.Ping", 0);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, len);
    assert_memory_equal(out, want, len);
    free(want);

    /* Channel 0x80 takes a two-byte varint. */
    want = packet_vector("msg_channel_0x80", &len);
    tm2__amino_wr_init(&w, value, sizeof value);
    tm2__amino_put_uvarint_field(&w, 1, 0x80);
    tm2__amino_put_uvarint_field(&w, 2, 1);
    tm2__amino_put_bytes_field(&w, 3, "\x01", 1, false);
    vlen = w.len;
    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_uvarint(&w, 10 + tm2__amino_uvarint_size(vlen) + 1 + vlen);
    tm2__amino_put_any_header(&w, "/p2p.Msg", vlen);
    tm2__amino_put_raw(&w, value, vlen);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, len);
    assert_memory_equal(out, want, len);
    free(want);
}

static void writer_defaults_and_fixed(void **state)
{
    (void)state;
    uint8_t out[64];
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_uvarint_field(&w, 1, 0);          /* omitted */
    tm2__amino_put_bytes_field(&w, 2, "", 0, false);  /* omitted */
    assert_int_equal(w.len, 0);
    tm2__amino_put_bytes_field(&w, 2, "", 0, true);   /* fixed array: written */
    assert_int_equal(w.len, 2);
    assert_memory_equal(out, "\x12\x00", 2);
    tm2__amino_put_nested_header(&w, 8, 300);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 5);
    assert_memory_equal(out + 2, "\x42\xac\x02", 3);
    /* Large field numbers take multi-byte keys. */
    tm2__amino_put_key(&w, 16, TM2_WT_VARINT);
    assert_memory_equal(out + 5, "\x80\x01", 2);
    tm2__amino_put_key(&w, TM2_AMINO_MAX_FIELD, TM2_WT_BYTES);
    assert_int_equal(w.err, 0);
    assert_memory_equal(out + 7, "\xfa\xff\xff\xff\x0f", 5);
}

static void writer_counting_and_sticky(void **state)
{
    (void)state;
    /* Counting mode: buf == NULL. */
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, NULL, 0);
    tm2__amino_put_any_header(&w, "/p2p.Msg", 300);
    tm2__amino_put_raw(&w, NULL, 300);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 10 + 1 + 2 + 300);

    /* Out of room: the error sticks and nothing more is written. */
    uint8_t out[4] = {0};
    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_raw(&w, "abc", 3);
    tm2__amino_put_raw(&w, "de", 2);
    assert_int_equal(w.err, TM2_ENOSPC);
    assert_int_equal(w.len, 3);
    tm2__amino_put_raw(&w, "f", 1);
    tm2__amino_put_uvarint(&w, 1);
    assert_int_equal(w.err, TM2_ENOSPC);
    assert_int_equal(w.len, 3);
    assert_int_equal(out[3], 0);

    /* Exactly full is fine. */
    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_raw(&w, "abcd", 4);
    assert_int_equal(w.err, 0);
    tm2__amino_put_uvarint(&w, 0);
    assert_int_equal(w.err, TM2_ENOSPC);

    /* Invalid field numbers are a caller error. */
    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_key(&w, 0, TM2_WT_BYTES);
    assert_int_equal(w.err, TM2_EINVAL);
    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_key(&w, TM2_AMINO_MAX_FIELD + 1, TM2_WT_BYTES);
    assert_int_equal(w.err, TM2_EINVAL);
}

static void reader_walks_written_fields(void **state)
{
    (void)state;
    uint8_t out[128];
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, out, sizeof out);
    tm2__amino_put_uvarint_field(&w, 1, UINT64_MAX);
    tm2__amino_put_bytes_field(&w, 2, "xyz", 3, false);
    tm2__amino_put_uvarint_field(&w, 3, 200);
    tm2__amino_put_key(&w, 4, TM2_WT_VARINT);
    tm2__amino_put_uvarint(&w, 1);
    assert_int_equal(w.err, 0);

    tm2__amino_rd r;
    uint32_t f;
    unsigned wt;
    uint64_t v;
    const uint8_t *p;
    size_t n;
    uint8_t u8;
    bool b;
    tm2__amino_rd_init(&r, out, w.len);
    assert_int_equal(tm2__amino_key(&r, &f, &wt), 0);
    assert_int_equal(f, 1);
    assert_int_equal(tm2__amino_uvarint(&r, &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(tm2__amino_key(&r, &f, &wt), 0);
    assert_int_equal(f, 2);
    assert_int_equal(tm2__amino_bytes(&r, &p, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "xyz", 3);
    assert_int_equal(tm2__amino_key(&r, &f, &wt), 0);
    assert_int_equal(f, 3);
    assert_int_equal(tm2__amino_u8(&r, &u8), 0);
    assert_int_equal(u8, 200);
    assert_int_equal(tm2__amino_key(&r, &f, &wt), 0);
    assert_int_equal(f, 4);
    assert_int_equal(tm2__amino_bool(&r, &b), 0);
    assert_true(b);
    assert_true(tm2__amino_rd_done(&r));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uvarint_round_trip),
        cmocka_unit_test(uvarint_non_minimal_accepted),
        cmocka_unit_test(uvarint_overflow_and_truncation),
        cmocka_unit_test(key_rules),
        cmocka_unit_test(bytes_values),
        cmocka_unit_test(skip_values),
        cmocka_unit_test(bool_values),
        cmocka_unit_test(u8_values),
        cmocka_unit_test(sized_basic),
        cmocka_unit_test(sized_packet_limit_1056),
        cmocka_unit_test(sized_node_info_limit_10240),
        cmocka_unit_test(sized_prefix_boundaries),
        cmocka_unit_test(any_decode_vectors),
        cmocka_unit_test(any_rejections),
        cmocka_unit_test(writer_packets),
        cmocka_unit_test(writer_defaults_and_fixed),
        cmocka_unit_test(writer_counting_and_sticky),
        cmocka_unit_test(reader_walks_written_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
