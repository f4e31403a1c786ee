/* The amino/proto3 subset of the p2p wire (WIRE.md section 1). */
#include "codec/amino.h"

#include <string.h>

/* ---- reading --------------------------------------------------------------- */

int tm2__amino_uvarint(tm2__amino_rd *r, uint64_t *v)
{
    uint64_t acc = 0;
    const uint8_t *p = r->p;
    for (unsigned i = 0; i < TM2_UVARINT_MAX_LEN; i++) {
        if (p >= r->end)
            return TM2_ETRUNC;
        uint8_t b = *p++;
        /* The tenth byte carries bit 63 only; anything more (including a
         * continuation bit) cannot fit, as in Go's binary.Uvarint. */
        if (i == TM2_UVARINT_MAX_LEN - 1 && b > 1)
            return TM2_EOVERFLOW;
        acc |= (uint64_t)(b & 0x7fu) << (7 * i);
        if (!(b & 0x80u)) {
            r->p = p;
            *v = acc;
            return 0;
        }
    }
    return TM2_EOVERFLOW; /* not reached: the tenth byte always ends the loop */
}

int tm2__amino_key(tm2__amino_rd *r, uint32_t *field, unsigned *wiretype)
{
    uint64_t v;
    int rc = tm2__amino_uvarint(r, &v);
    if (rc)
        return rc;
    uint64_t f = v >> 3;
    unsigned wt = (unsigned)(v & 7u);
    /* Field 0 is never valid: the reference rejects it as "already seen"
     * (last field number starts at 0) or as not the expected field. */
    if (f == 0 || f > TM2_AMINO_MAX_FIELD)
        return TM2_EFIELD;
    if (wt != TM2_WT_VARINT && wt != TM2_WT_FIXED64 && wt != TM2_WT_BYTES && wt != TM2_WT_FIXED32)
        return TM2_EWIRETYPE;
    *field = (uint32_t)f;
    *wiretype = wt;
    return 0;
}

int tm2__amino_bytes(tm2__amino_rd *r, const uint8_t **p, size_t *len)
{
    uint64_t n;
    int rc = tm2__amino_uvarint(r, &n);
    if (rc)
        return rc;
    if (n > (uint64_t)(r->end - r->p))
        return TM2_ETRUNC;
    *p = r->p;
    *len = (size_t)n;
    r->p += n;
    return 0;
}

static int skip_fixed(tm2__amino_rd *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return TM2_ETRUNC;
    r->p += n;
    return 0;
}

int tm2__amino_skip(tm2__amino_rd *r, unsigned wiretype)
{
    uint64_t v;
    const uint8_t *p;
    size_t n;
    switch (wiretype) {
    case TM2_WT_VARINT:
        return tm2__amino_uvarint(r, &v);
    case TM2_WT_FIXED64:
        return skip_fixed(r, 8);
    case TM2_WT_BYTES:
        return tm2__amino_bytes(r, &p, &n);
    case TM2_WT_FIXED32:
        return skip_fixed(r, 4);
    default:
        return TM2_EWIRETYPE;
    }
}

int tm2__amino_bool(tm2__amino_rd *r, bool *v)
{
    /* A single raw byte, not a varint: the reference reads exactly one byte,
     * so an over-long form such as 80 00 is rejected too. */
    if (r->p >= r->end)
        return TM2_ETRUNC;
    uint8_t b = *r->p;
    if (b > 1)
        return TM2_EDECODE;
    r->p++;
    *v = b == 1;
    return 0;
}

int tm2__amino_u8(tm2__amino_rd *r, uint8_t *v)
{
    uint64_t x;
    int rc = tm2__amino_uvarint(r, &x);
    if (rc)
        return rc;
    if (x > UINT8_MAX)
        return TM2_EOVERFLOW;
    *v = (uint8_t)x;
    return 0;
}

int tm2__amino_sized(const uint8_t *buf, size_t len, size_t max,
                     const uint8_t **body, size_t *body_len, size_t *consumed)
{
    uint64_t v = 0;
    size_t i = 0;
    for (;;) {
        if (i == len) {
            /* Prefix incomplete. What is there already bounds the final
             * value and prefix length from below; refuse now if even that
             * bound is over the limit. */
            if (max && (v > max || (uint64_t)i + 1 > max - v))
                return TM2_ETOOBIG;
            return TM2_EAGAIN;
        }
        uint8_t b = buf[i];
        /* The reference tolerates an overflowing prefix by reading it as 0
         * and then fails on the empty message; rejecting it here ends the
         * connection the same way, one step earlier. */
        if (i == TM2_UVARINT_MAX_LEN - 1 && b > 1)
            return TM2_EOVERFLOW;
        v |= (uint64_t)(b & 0x7fu) << (7 * i);
        i++;
        if (!(b & 0x80u))
            break;
    }
    if (max && (v > max || i > max || v > max - i))
        return TM2_ETOOBIG;
    if (v > (uint64_t)(len - i))
        return TM2_EAGAIN;
    *body = buf + i;
    *body_len = (size_t)v;
    *consumed = i + (size_t)v;
    return 0;
}

static bool printable_ascii(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

int tm2__amino_any(const uint8_t *buf, size_t len, const char **name, size_t *name_len,
                   const uint8_t **value, size_t *value_len)
{
    tm2__amino_rd r;
    uint32_t f;
    unsigned wt;
    const uint8_t *url, *val;
    size_t url_len, vlen = 0;
    int rc;

    /* The reference decodes an empty Any as a nil interface, which no p2p
     * position accepts. */
    if (len == 0)
        return TM2_ETYPEURL;
    tm2__amino_rd_init(&r, buf, len);
    if ((rc = tm2__amino_key(&r, &f, &wt)))
        return rc;
    if (f != 1)
        return TM2_EFIELD;
    if (wt != TM2_WT_BYTES)
        return TM2_EWIRETYPE;
    if ((rc = tm2__amino_bytes(&r, &url, &url_len)))
        return rc;
    val = r.end;
    if (!tm2__amino_rd_done(&r)) {
        if ((rc = tm2__amino_key(&r, &f, &wt)))
            return rc;
        if (f != 2)
            return TM2_EFIELD;
        if (wt != TM2_WT_BYTES)
            return TM2_EWIRETYPE;
        if ((rc = tm2__amino_bytes(&r, &val, &vlen)))
            return rc;
        if (!tm2__amino_rd_done(&r))
            return TM2_ETRAILING;
    }
    /* Non-empty printable ASCII; the name is what follows the last '/'
     * (the reference panics on a URL without one, and no type has an empty
     * name). */
    if (url_len == 0 || !printable_ascii(url, url_len))
        return TM2_ETYPEURL;
    size_t slash = url_len;
    while (slash > 0 && url[slash - 1] != '/')
        slash--;
    if (slash == 0 || slash == url_len)
        return TM2_ETYPEURL;
    *name = (const char *)url + slash;
    *name_len = url_len - slash;
    *value = val;
    *value_len = vlen;
    return 0;
}

/* ---- writing --------------------------------------------------------------- */

size_t tm2__amino_uvarint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80u) {
        v >>= 7;
        n++;
    }
    return n;
}

void tm2__amino_put_raw(tm2__amino_wr *w, const void *p, size_t len)
{
    if (w->err)
        return;
    if (len > SIZE_MAX - w->len || (w->buf && w->len + len > w->cap)) {
        w->err = TM2_ENOSPC;
        return;
    }
    if (w->buf && len)
        memcpy(w->buf + w->len, p, len);
    w->len += len;
}

void tm2__amino_put_uvarint(tm2__amino_wr *w, uint64_t v)
{
    uint8_t tmp[TM2_UVARINT_MAX_LEN];
    size_t n = 0;
    while (v >= 0x80u) {
        tmp[n++] = (uint8_t)(v | 0x80u);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    tm2__amino_put_raw(w, tmp, n);
}

void tm2__amino_put_key(tm2__amino_wr *w, uint32_t field, unsigned wiretype)
{
    if (w->err)
        return;
    if (field == 0 || field > TM2_AMINO_MAX_FIELD || wiretype > 7) {
        w->err = TM2_EINVAL;
        return;
    }
    tm2__amino_put_uvarint(w, (uint64_t)field << 3 | wiretype);
}

void tm2__amino_put_uvarint_field(tm2__amino_wr *w, uint32_t field, uint64_t v)
{
    if (v == 0)
        return;
    tm2__amino_put_key(w, field, TM2_WT_VARINT);
    tm2__amino_put_uvarint(w, v);
}

void tm2__amino_put_bytes_field(tm2__amino_wr *w, uint32_t field, const void *p, size_t len,
                                bool always)
{
    if (len == 0 && !always)
        return;
    tm2__amino_put_key(w, field, TM2_WT_BYTES);
    tm2__amino_put_uvarint(w, len);
    tm2__amino_put_raw(w, p, len);
}

void tm2__amino_put_nested_header(tm2__amino_wr *w, uint32_t field, size_t body_len)
{
    tm2__amino_put_key(w, field, TM2_WT_BYTES);
    tm2__amino_put_uvarint(w, body_len);
}

void tm2__amino_put_any_header(tm2__amino_wr *w, const char *type_url, size_t value_len)
{
    tm2__amino_put_bytes_field(w, 1, type_url, strlen(type_url), true);
    if (value_len > 0)
        tm2__amino_put_nested_header(w, 2, value_len);
}
