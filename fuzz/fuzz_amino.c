/* The amino reader on arbitrary bytes: walk fields (recursing into
 * length-delimited values), split sized messages under the real limits, and
 * decode Any bodies. Every pointer a call returns must lie inside the input,
 * and the results must agree with each other. */
#include <stdlib.h>
#include <string.h>

#include "codec/amino.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static const uint8_t *lo, *hi;

static void inside(const void *p, size_t n)
{
    const uint8_t *b = p;
    CHECK(b >= lo && b <= hi && n <= (size_t)(hi - b));
}

static void walk(const uint8_t *buf, size_t len, int depth)
{
    tm2__amino_rd r;
    tm2__amino_rd_init(&r, buf, len);
    while (!tm2__amino_rd_done(&r)) {
        uint32_t f;
        unsigned wt;
        const uint8_t *before = r.p;
        if (tm2__amino_key(&r, &f, &wt))
            return;
        CHECK(f >= 1 && f <= TM2_AMINO_MAX_FIELD);
        CHECK(wt == TM2_WT_VARINT || wt == TM2_WT_FIXED64 || wt == TM2_WT_BYTES ||
              wt == TM2_WT_FIXED32);
        CHECK(r.p > before && r.p - before <= TM2_UVARINT_MAX_LEN);
        inside(r.p, 0);
        if (wt == TM2_WT_BYTES) {
            const uint8_t *p;
            size_t n;
            if (tm2__amino_bytes(&r, &p, &n))
                return;
            inside(p, n);
            CHECK(p + n == r.p);
            if (depth < 8)
                walk(p, n, depth + 1);
        } else if (wt == TM2_WT_VARINT) {
            tm2__amino_rd r8 = r, rb = r;
            const uint8_t *start = r.p;
            uint64_t v;
            uint8_t u8;
            bool b;
            int rc = tm2__amino_uvarint(&r, &v);
            int rc8 = tm2__amino_u8(&r8, &u8);
            int rcb = tm2__amino_bool(&rb, &b);
            if (rc != 0) {
                CHECK(rc8 == rc);
                return;
            }
            CHECK((rc8 == 0) == (v <= 255));
            if (rc8 == 0)
                CHECK(u8 == v && r8.p == r.p);
            /* A bool is exactly one byte, 00 or 01. */
            CHECK((rcb == 0) == (start[0] <= 1));
            if (rcb == 0)
                CHECK(rb.p == start + 1 && r.p == start + 1 && v == (uint64_t)b);
        } else if (tm2__amino_skip(&r, wt)) {
            return;
        }
        inside(r.p, 0);
    }
}

static void check_uvarint(const uint8_t *data, size_t size)
{
    tm2__amino_rd r;
    uint64_t v, back;
    tm2__amino_rd_init(&r, data, size);
    if (tm2__amino_uvarint(&r, &v))
        return;
    size_t used = (size_t)(r.p - data);
    CHECK(used >= 1 && used <= TM2_UVARINT_MAX_LEN);
    /* The minimal re-encoding is never longer and decodes to the same value. */
    uint8_t enc[TM2_UVARINT_MAX_LEN];
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, enc, sizeof enc);
    tm2__amino_put_uvarint(&w, v);
    CHECK(w.err == 0 && w.len <= used && w.len == tm2__amino_uvarint_size(v));
    tm2__amino_rd_init(&r, enc, w.len);
    CHECK(tm2__amino_uvarint(&r, &back) == 0 && back == v && tm2__amino_rd_done(&r));
}

static void check_any(const uint8_t *buf, size_t len)
{
    const char *name;
    size_t name_len, value_len;
    const uint8_t *value;
    if (tm2__amino_any(buf, len, &name, &name_len, &value, &value_len))
        return;
    CHECK(len > 0);
    inside(name, name_len);
    inside(value, value_len);
    CHECK((const uint8_t *)name >= buf && value + value_len <= buf + len);
    CHECK(name_len > 0 && name[-1] == '/');
    for (size_t i = 0; i < name_len; i++)
        CHECK(name[i] >= 0x20 && name[i] <= 0x7e && name[i] != '/');

    /* Field 1 comes first: its bytes are the whole URL, which ends with the
     * name. Re-encoding URL and value decodes to the same name and value. */
    tm2__amino_rd r;
    uint32_t f;
    unsigned wt;
    const uint8_t *url;
    size_t url_len;
    tm2__amino_rd_init(&r, buf, len);
    CHECK(tm2__amino_key(&r, &f, &wt) == 0 && f == 1 && wt == TM2_WT_BYTES);
    CHECK(tm2__amino_bytes(&r, &url, &url_len) == 0);
    CHECK(url_len > name_len && (const uint8_t *)name + name_len == url + url_len);
    char *s = malloc(url_len + 1);
    CHECK(s != NULL);
    memcpy(s, url, url_len);
    s[url_len] = '\0';
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, NULL, 0);
    tm2__amino_put_any_header(&w, s, value_len);
    tm2__amino_put_raw(&w, value, value_len);
    CHECK(w.err == 0 && w.len <= len);
    uint8_t *enc = malloc(w.len);
    CHECK(enc != NULL);
    size_t need = w.len;
    tm2__amino_wr_init(&w, enc, need);
    tm2__amino_put_any_header(&w, s, value_len);
    tm2__amino_put_raw(&w, value, value_len);
    CHECK(w.err == 0 && w.len == need);
    const char *name2;
    size_t name2_len, value2_len;
    const uint8_t *value2;
    CHECK(tm2__amino_any(enc, need, &name2, &name2_len, &value2, &value2_len) == 0);
    CHECK(name2_len == name_len && memcmp(name2, name, name_len) == 0);
    CHECK(value2_len == value_len && memcmp(value2, value, value_len) == 0);
    free(enc);
    free(s);
}

static void check_sized(const uint8_t *data, size_t size, size_t max)
{
    const uint8_t *body;
    size_t body_len, consumed;
    int rc = tm2__amino_sized(data, size, max, &body, &body_len, &consumed);
    if (rc != 0) {
        CHECK(rc == TM2_EAGAIN || rc == TM2_ETOOBIG || rc == TM2_EOVERFLOW);
        /* More bytes never turn a definite error into success. */
        if (rc != TM2_EAGAIN && size > 0) {
            const uint8_t *b2;
            size_t bl2, c2;
            CHECK(tm2__amino_sized(data, size - 1, max, &b2, &bl2, &c2) != 0);
        }
        return;
    }
    inside(body, body_len);
    CHECK(consumed <= size && body + body_len == data + consumed);
    size_t prefix = (size_t)(body - data);
    CHECK(prefix >= 1 && prefix <= TM2_UVARINT_MAX_LEN);
    if (max)
        CHECK(consumed <= max);
    /* Any shorter input is a wait, and exactly the message is enough. */
    const uint8_t *b2;
    size_t bl2, c2;
    CHECK(tm2__amino_sized(data, consumed - 1, max, &b2, &bl2, &c2) == TM2_EAGAIN);
    CHECK(tm2__amino_sized(data, prefix - 1, max, &b2, &bl2, &c2) == TM2_EAGAIN);
    CHECK(tm2__amino_sized(data, consumed, max, &b2, &bl2, &c2) == 0);
    CHECK(b2 == body && bl2 == body_len && c2 == consumed);
    check_any(body, body_len);
    walk(body, body_len, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    /* A private copy, so reads past the end hit the allocator's redzone. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    lo = copy;
    hi = copy + size;

    check_uvarint(copy, size);
    walk(copy, size, 0);
    check_any(copy, size);
    check_sized(copy, size, 1056);
    check_sized(copy, size, 10240);
    check_sized(copy, size, 0);
    free(copy);
    return 0;
}
