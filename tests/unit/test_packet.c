/* MConnection packet codec: known-answer vectors, round trips, and one test
 * per rejection rule (WIRE.md 6.2-6.4, 1.5, 1.7, 1.9). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn/packet.h"
#include "tv.h"

#define MCONN_VEC "derived_mconn_packets.txt"
#define MISC_VEC "derived_discovery_and_misc.txt"

/* ---- reading the vector files ---------------------------------------------- */

typedef struct want {
    int type;
    uint8_t channel, eof;
    uint8_t *data;
    size_t len;
} want;

struct find_ctx {
    const char *name;
    char *hex;
};

static void find_cb(char *line, void *user)
{
    struct find_ctx *f = user;
    char *fields[6];
    if (f->hex || tv_split(line, '|', fields, 6) < 3)
        return;
    if (strcmp(fields[0], f->name) == 0)
        f->hex = strdup(fields[2]);
}

/* Hex column of the line named name in file. */
static uint8_t *vector_bytes(const char *file, const char *name, size_t *len)
{
    struct find_ctx f = {name, NULL};
    tv_lines(file, find_cb, &f);
    if (!f.hex)
        fail_msg("vector %s not in %s", name, file);
    uint8_t *b = tv_hex_alloc(f.hex, len);
    free(f.hex);
    return b;
}

/* Parses the Go value column: PacketPing{}, PacketPong{}, or
 * PacketMsg{ChannelID:n,EOF:n,Bytes:<"text" | {0x..,..} | N zero bytes |
 * msg[a:b] (all 0xXX) | name of another vector in the file>}. */
static void parse_value(const char *file, const char *v, want *w)
{
    memset(w, 0, sizeof *w);
    if (strncmp(v, "PacketPing{}", 12) == 0) {
        w->type = TM2__PKT_PING;
        return;
    }
    if (strncmp(v, "PacketPong{}", 12) == 0) {
        w->type = TM2__PKT_PONG;
        return;
    }
    if (strncmp(v, "PacketMsg{", 10) != 0)
        fail_msg("unparsed Go value: %s", v);
    w->type = TM2__PKT_MSG;
    const char *p;
    if ((p = strstr(v, "ChannelID:")))
        w->channel = (uint8_t)strtoul(p + 10, NULL, 0);
    if ((p = strstr(v, "EOF:")))
        w->eof = (uint8_t)strtoul(p + 4, NULL, 0);
    if (!(p = strstr(v, "Bytes:")))
        return;
    p += 6;
    if (*p == '"') {
        const char *q = strchr(p + 1, '"');
        assert_non_null(q);
        w->len = (size_t)(q - p - 1);
        w->data = malloc(w->len + 1);
        memcpy(w->data, p + 1, w->len);
    } else if (*p == '{') {
        w->data = malloc(strlen(p));
        for (p++; *p && *p != '}';) {
            char *end;
            w->data[w->len++] = (uint8_t)strtoul(p, &end, 0);
            p = *end == ',' ? end + 1 : end;
        }
    } else if (*p >= '0' && *p <= '9') {
        w->len = strtoul(p, NULL, 10);
        assert_non_null(strstr(p, "zero bytes"));
        w->data = calloc(1, w->len + 1);
    } else if (strncmp(p, "msg[", 4) == 0) {
        char *end;
        size_t a = strtoul(p + 4, &end, 10);
        size_t b = strtoul(end + 1, NULL, 10);
        const char *all = strstr(p, "(all ");
        assert_non_null(all);
        w->len = b - a;
        w->data = malloc(w->len + 1);
        memset(w->data, (int)strtoul(all + 5, NULL, 0), w->len);
    } else {
        char name[64];
        size_t n = strcspn(p, ",}");
        assert_true(n < sizeof name);
        memcpy(name, p, n);
        name[n] = '\0';
        w->data = vector_bytes(file, name, &w->len);
    }
}

/* The hex column: plain hex, or "<hex>...(N zero bytes)" (only the start is
 * given) or "<hex>" followed by a column "then N bytes of XX". */
static uint8_t *parse_bytes(char **fields, int nf, size_t *len, bool *partial)
{
    char *hex = fields[2];
    *partial = false;
    char *dots = strstr(hex, "...");
    if (dots) {
        *dots = '\0';
        *partial = true;
    }
    uint8_t *b = tv_hex_alloc(hex, len);
    for (int i = 3; i < nf; i++) {
        unsigned n, byte;
        if (sscanf(fields[i], "then %u bytes of %x", &n, &byte) == 2) {
            b = realloc(b, *len + n);
            memset(b + *len, (int)byte, n);
            *len += n;
        }
    }
    return b;
}

static void expect_decoded(const tm2__packet *p, const want *w)
{
    assert_int_equal(p->type, w->type);
    if (w->type != TM2__PKT_MSG)
        return;
    assert_int_equal(p->channel, w->channel);
    assert_int_equal(p->eof, w->eof);
    assert_int_equal(p->len, w->len);
    if (w->len)
        assert_memory_equal(p->data, w->data, w->len);
    else
        assert_null(p->data);
}

struct vec_ctx {
    const char *file;
    int checked;
};

static void check_vector(char *line, void *user)
{
    struct vec_ctx *ctx = user;
    char *fields[6];
    int nf = tv_split(line, '|', fields, 6);
    if (nf < 3 || strncmp(fields[1], "Packet", 6) != 0)
        return;   /* not a packet line (PEX messages, keys) */
    want w;
    parse_value(ctx->file, fields[1], &w);
    size_t len;
    bool partial;
    uint8_t *bytes = parse_bytes(fields, nf, &len, &partial);

    uint8_t enc[4096];
    int n = tm2__packet_encode(&(tm2__packet){w.type, w.channel, w.eof, w.data, w.len}, enc, sizeof enc);
    assert_true(n > 0);
    if (strstr(fields[0], "bare_value")) {
        /* The value alone (amino.Marshal): the tail of the packet's Any. */
        assert_true((size_t)n > len);
        assert_memory_equal(enc + (size_t)n - len, bytes, len);
    } else if (partial) {
        /* Only the start is given, then the payload (zero bytes). */
        assert_memory_equal(enc, bytes, len);
        const char *sz = strstr(fields[1], "sized length=");
        if (sz)
            assert_int_equal(n, (int)strtoul(sz + 13, NULL, 10));
        assert_memory_equal(enc + (size_t)n - w.len, w.data, w.len);
        const char *lim = strstr(fields[1], "receiver limit = ");
        if (lim) {
            lim = strrchr(lim, '=');
            assert_int_equal(tm2__packet_max_size(1024), strtoul(lim + 1, NULL, 10));
        }
    } else {
        assert_int_equal(n, (int)len);
        assert_memory_equal(enc, bytes, len);
        if (w.type == TM2__PKT_MSG)
            assert_int_equal(tm2__packet_msg_size(w.channel, w.eof, w.len), len);
        tm2__packet p;
        size_t used = 0;
        assert_int_equal(tm2__packet_decode(bytes, len, tm2__packet_max_size(1024), &p, &used), 0);
        assert_int_equal(used, len);
        expect_decoded(&p, &w);
        /* Every strict prefix is incomplete, never an error. */
        for (size_t k = 0; k < len; k++)
            assert_int_equal(tm2__packet_decode(bytes, k, 1056, &p, &used), TM2_EAGAIN);
    }
    free(bytes);
    free(w.data);
    ctx->checked++;
}

static void mconn_vectors(void **state)
{
    (void)state;
    struct vec_ctx ctx = {MCONN_VEC, 0};
    tv_lines(MCONN_VEC, check_vector, &ctx);
    assert_int_equal(ctx.checked, 11);
}

static void misc_packet_vectors(void **state)
{
    (void)state;
    struct vec_ctx ctx = {MISC_VEC, 0};
    tv_lines(MISC_VEC, check_vector, &ctx);
    assert_int_equal(ctx.checked, 1);
}

static void transcript_ping_pong(void **state)
{
    (void)state;
    const char *file = "derived_handshake_transcript.txt";
    size_t n;
    uint8_t buf[32];
    uint8_t *ping = tv_get_hex(file, "A_ping_plaintext", &n);
    assert_int_equal(tm2__packet_encode_ping(buf, sizeof buf), (int)n);
    assert_memory_equal(buf, ping, n);
    free(ping);
    uint8_t *pong = tv_get_hex(file, "B_pong_plaintext", &n);
    assert_int_equal(tm2__packet_encode_pong(buf, sizeof buf), (int)n);
    assert_memory_equal(buf, pong, n);
    free(pong);
    assert_int_equal(tm2__packet_encode_ping(buf, TM2__PACKET_PING_SIZE - 1), TM2_ENOSPC);
}

/* ---- round trips ----------------------------------------------------------- */

static void round_trips(void **state)
{
    (void)state;
    static const uint8_t channels[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    static const size_t sizes[] = {0, 1, 127, 128, 1023, 1024};
    uint8_t payload[1024], out[1100];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    for (size_t c = 0; c < sizeof channels; c++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (uint8_t eof = 0; eof <= 2; eof++) {
                size_t len = sizes[s];
                int n = tm2__packet_encode_msg(out, sizeof out, channels[c], eof, payload, len);
                assert_true(n > 0);
                assert_int_equal((size_t)n, tm2__packet_msg_size(channels[c], eof, len));
                tm2__packet p;
                size_t used;
                assert_int_equal(tm2__packet_decode(out, (size_t)n, 1056, &p, &used), 0);
                assert_int_equal(used, (size_t)n);
                assert_int_equal(p.type, TM2__PKT_MSG);
                assert_int_equal(p.channel, channels[c]);
                assert_int_equal(p.eof, eof);
                assert_int_equal(p.len, len);
                if (len)
                    assert_memory_equal(p.data, payload, len);
                /* The encoder never writes past what it reports, and refuses
                 * a buffer one byte short. */
                assert_int_equal(tm2__packet_encode_msg(out, (size_t)n - 1, channels[c], eof, payload, len),
                                 TM2_ENOSPC);
            }
    /* Ping and pong decode back. */
    tm2__packet p;
    size_t used;
    assert_int_equal(tm2__packet_encode_ping(out, sizeof out), TM2__PACKET_PING_SIZE);
    assert_int_equal(tm2__packet_decode(out, sizeof out, 1056, &p, &used), 0);
    assert_int_equal(p.type, TM2__PKT_PING);
    assert_int_equal(used, TM2__PACKET_PING_SIZE);
    assert_int_equal(tm2__packet_encode_pong(out, sizeof out), TM2__PACKET_PING_SIZE);
    assert_int_equal(tm2__packet_decode(out, sizeof out, 1056, &p, &used), 0);
    assert_int_equal(p.type, TM2__PKT_PONG);
}

static void max_size(void **state)
{
    (void)state;
    assert_int_equal(tm2__packet_max_size(1024), 1056);
    assert_int_equal(tm2__packet_msg_size(1, 1, 1024), 1046);
    assert_int_equal(tm2__packet_msg_size(0x30, 0, 1024), 1044);
    /* The limit has 10 bytes of slack: a 1034-byte payload on channel 1 is
     * exactly 1056 bytes and passes, one more byte does not. */
    static uint8_t payload[1100];
    uint8_t out[1200];
    tm2__packet p;
    size_t used;
    int n = tm2__packet_encode_msg(out, sizeof out, 1, 1, payload, 1034);
    assert_int_equal(n, 1056);
    assert_int_equal(tm2__packet_decode(out, (size_t)n, 1056, &p, &used), 0);
    n = tm2__packet_encode_msg(out, sizeof out, 1, 1, payload, 1035);
    assert_int_equal(n, 1057);
    assert_int_equal(tm2__packet_decode(out, (size_t)n, 1056, &p, &used), TM2_ETOOBIG);
    /* Already the prefix alone is refused. */
    assert_int_equal(tm2__packet_decode(out, 2, 1056, &p, &used), TM2_ETOOBIG);
}

/* ---- rejections: one test per rule --------------------------------------------- */

/* Decodes a whole hex packet with the default limit. */
static int decode_hex(const char *hex, tm2__packet *p)
{
    size_t len, used;
    uint8_t *b = tv_hex_alloc(hex, &len);
    int e = tm2__packet_decode(b, len, 1056, p, &used);
    if (e == 0)
        assert_int_equal(used, len);
    free(b);
    return e;
}

#define MSG_URL "0a082f7032702e4d7367"   /* field 1: "/p2p.Msg" */
#define PING_URL "0a092f7032702e50696e67"

static void reject_bad_prefix(void **state)
{
    (void)state;
    tm2__packet p;
    /* A prefix that overflows 64 bits. */
    assert_int_equal(decode_hex("ffffffffffffffffffff01", &p), TM2_EOVERFLOW);
    /* A prefix longer than the limit allows, complete or not. */
    assert_int_equal(decode_hex("ffffffffffffffff7f", &p), TM2_ETOOBIG);
    assert_int_equal(decode_hex("ffff", &p), TM2_ETOOBIG);
    /* A zero-length packet is an empty Any: no type. */
    assert_int_equal(decode_hex("00", &p), TM2_ETYPEURL);
    /* Over-long prefix forms are tolerated, like Go's reader does. */
    assert_int_equal(decode_hex("8b00" PING_URL, &p), 0);
    assert_int_equal(p.type, TM2__PKT_PING);
}

static void reject_over_max_size(void **state)
{
    (void)state;
    tm2__packet p;
    size_t used;
    uint8_t out[64];
    int n = tm2__packet_encode_msg(out, sizeof out, 1, 1, (const uint8_t *)"0123456789", 10);
    assert_true(n > 0);
    assert_int_equal(tm2__packet_decode(out, (size_t)n, (size_t)n, &p, &used), 0);
    assert_int_equal(tm2__packet_decode(out, (size_t)n, (size_t)n - 1, &p, &used), TM2_ETOOBIG);
}

static void reject_malformed_any(void **state)
{
    (void)state;
    tm2__packet p;
    /* Type URL not first. */
    assert_int_equal(decode_hex("04" "12020801", &p), TM2_EFIELD);
    /* Type URL with the wrong wire type. */
    assert_int_equal(decode_hex("02" "0801", &p), TM2_EWIRETYPE);
    /* Value with the wrong wire type. */
    assert_int_equal(decode_hex("0c" MSG_URL "1007", &p), TM2_EWIRETYPE);
    /* A field after the value. */
    assert_int_equal(decode_hex("10" MSG_URL "12020807" "1a00", &p), TM2_ETRAILING);
    /* A field 3 instead of the value. */
    assert_int_equal(decode_hex("0c" MSG_URL "1a00", &p), TM2_EFIELD);
    /* Value length past the end of the packet. */
    assert_int_equal(decode_hex("0e" MSG_URL "12050807", &p), TM2_ETRUNC);
    /* URL length past the end. */
    assert_int_equal(decode_hex("04" "0a092f70", &p), TM2_ETRUNC);
    /* Unprintable type URL. */
    assert_int_equal(decode_hex("0b" "0a092f7032702e50696e07", &p), TM2_ETYPEURL);
    /* The corrupted empty Msg of the reference's TestMConnectionReadErrorBadEncoding. */
    assert_true(decode_hex("0a0a082f7032702e4d7367", &p) == 0);
    assert_true(decode_hex("0a0a082f0032702e4d7367", &p) < 0);
}

static void reject_unknown_type_url(void **state)
{
    (void)state;
    tm2__packet p;
    /* /p2p.Pang */
    assert_int_equal(decode_hex("0b0a092f7032702e50616e67", &p), TM2_ETYPEURL);
    /* /p2p.Request is a registered type, but not a packet. */
    assert_int_equal(decode_hex("0e0a0c2f7032702e52657175657374", &p), TM2_ETYPEURL);
    /* No '/' at all. */
    assert_int_equal(decode_hex("0a0a087032702e4d736778", &p), TM2_ETYPEURL);
    /* Only the text after the last '/' counts: "x/p2p.Ping" is a Ping. */
    assert_int_equal(decode_hex("0c0a0a782f7032702e50696e67", &p), 0);
    assert_int_equal(p.type, TM2__PKT_PING);
}

static void reject_unknown_field(void **state)
{
    (void)state;
    tm2__packet p;
    /* Field 4 in a Msg. */
    assert_int_equal(decode_hex("10" MSG_URL "12042001" "0807", &p), TM2_EFIELD);
    assert_int_equal(decode_hex("0e" MSG_URL "12022001", &p), TM2_EFIELD);
    /* Any field in a Ping. */
    assert_int_equal(decode_hex("0f" PING_URL "12020801", &p), TM2_EFIELD);
    /* An empty value is fine for a Ping. */
    assert_int_equal(decode_hex("0d" PING_URL "1200", &p), 0);
    /* Field 1 with the wrong wire type. */
    assert_int_equal(decode_hex("0f" MSG_URL "1203" "0a0107", &p), TM2_EWIRETYPE);
    /* Field 3 with the wrong wire type. */
    assert_int_equal(decode_hex("0e" MSG_URL "1202" "1801", &p), TM2_EWIRETYPE);
}

static void reject_duplicate_field(void **state)
{
    (void)state;
    tm2__packet p;
    assert_int_equal(decode_hex("10" MSG_URL "1204" "08070807", &p), TM2_EFIELD);
    assert_int_equal(decode_hex("12" MSG_URL "1206" "1a01aa1a01bb", &p), TM2_EFIELD);
}

static void reject_out_of_order_field(void **state)
{
    (void)state;
    tm2__packet p;
    assert_int_equal(decode_hex("10" MSG_URL "1204" "10010807", &p), TM2_EFIELD);
    /* Bytes must be last: a field after it is out of order. */
    assert_int_equal(decode_hex("11" MSG_URL "1205" "1a01aa0807", &p), TM2_EFIELD);
}

static void reject_trailing_bytes(void **state)
{
    (void)state;
    tm2__packet p;
    /* Bytes after the Any's value inside the packet. */
    assert_int_equal(decode_hex("0f" MSG_URL "12020807" "00", &p), TM2_ETRAILING);
    /* Bytes after a Ping's type URL. */
    assert_true(decode_hex("0c" PING_URL "00", &p) < 0);
    /* A Msg value whose bytes field is shorter than the value. */
    assert_true(decode_hex("10" MSG_URL "1204" "1a01aa" "00", &p) < 0);
    /* The sized reader itself takes exactly one packet and leaves the rest. */
    size_t len, used;
    uint8_t *b = tv_hex_alloc("0b" PING_URL "0b" PING_URL, &len);
    assert_int_equal(tm2__packet_decode(b, len, 1056, &p, &used), 0);
    assert_int_equal(used, 12);
    free(b);
}

static void reject_uint8_over_255(void **state)
{
    (void)state;
    tm2__packet p;
    /* ChannelID 256. */
    assert_int_equal(decode_hex("0f" MSG_URL "1203" "088002", &p), TM2_EOVERFLOW);
    /* EOF 256. */
    assert_int_equal(decode_hex("0f" MSG_URL "1203" "108002", &p), TM2_EOVERFLOW);
    /* 255 is fine, also in an over-long form. */
    assert_int_equal(decode_hex("0f" MSG_URL "1203" "08ff01", &p), 0);
    assert_int_equal(p.channel, 0xff);
    assert_int_equal(decode_hex("10" MSG_URL "1204" "08818000", &p), 0);
    assert_int_equal(p.channel, 1);
}

static void eof_values_other_than_one(void **state)
{
    (void)state;
    tm2__packet p;
    /* EOF is a plain uint8: 2 decodes and is carried as is ("not last"). */
    assert_int_equal(decode_hex("10" MSG_URL "1204" "08071002", &p), 0);
    assert_int_equal(p.eof, 2);
    uint8_t out[64];
    assert_int_equal(tm2__packet_encode(&p, out, sizeof out), 17);
    /* Explicit zero values are accepted too. */
    assert_int_equal(decode_hex("12" MSG_URL "1206" "080010001a00", &p), 0);
    assert_int_equal(p.channel, 0);
    assert_int_equal(p.eof, 0);
    assert_int_equal(p.len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mconn_vectors),
        cmocka_unit_test(misc_packet_vectors),
        cmocka_unit_test(transcript_ping_pong),
        cmocka_unit_test(round_trips),
        cmocka_unit_test(max_size),
        cmocka_unit_test(reject_bad_prefix),
        cmocka_unit_test(reject_over_max_size),
        cmocka_unit_test(reject_malformed_any),
        cmocka_unit_test(reject_unknown_type_url),
        cmocka_unit_test(reject_unknown_field),
        cmocka_unit_test(reject_duplicate_field),
        cmocka_unit_test(reject_out_of_order_field),
        cmocka_unit_test(reject_trailing_bytes),
        cmocka_unit_test(reject_uint8_over_255),
        cmocka_unit_test(eof_values_other_than_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
