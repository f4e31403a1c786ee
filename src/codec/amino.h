/* Internal: the amino/proto3 subset the p2p wire uses (WIRE.md section 1).
 * Bounds-checked, allocation-free, on caller buffers. */
#ifndef TM2_CODEC_AMINO_H
#define TM2_CODEC_AMINO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"

enum {
    TM2_WT_VARINT = 0,
    TM2_WT_FIXED64 = 1,
    TM2_WT_BYTES = 2,
    TM2_WT_FIXED32 = 5,
};

#define TM2_AMINO_MAX_FIELD ((1u << 29) - 1)
#define TM2_UVARINT_MAX_LEN 10

/* ---- reading ---------------------------------------------------------------
 * A reader is a cursor over [p, end). Every call either consumes a whole value
 * and returns 0, or returns a negative code and leaves the cursor unspecified
 * (callers abandon the message). */
typedef struct tm2__amino_rd {
    const uint8_t *p;
    const uint8_t *end;
} tm2__amino_rd;

static inline void tm2__amino_rd_init(tm2__amino_rd *r, const uint8_t *buf, size_t len)
{
    r->p = buf;
    r->end = buf + len;
}

static inline bool tm2__amino_rd_done(const tm2__amino_rd *r) { return r->p >= r->end; }

/* Unsigned LEB128, at most 10 bytes; over-long (non-minimal) forms are
 * accepted like Go does. TM2_ETRUNC, TM2_EOVERFLOW. */
int tm2__amino_uvarint(tm2__amino_rd *r, uint64_t *v);

/* A field key. Field 0 or > 2^29-1 is TM2_EFIELD; an unknown wire type
 * (3, 4, 6, 7) is TM2_EWIRETYPE. */
int tm2__amino_key(tm2__amino_rd *r, uint32_t *field, unsigned *wiretype);

/* A length-delimited value; *p points into the reader's buffer. TM2_ETRUNC. */
int tm2__amino_bytes(tm2__amino_rd *r, const uint8_t **p, size_t *len);

/* Skips one value of the given wire type. */
int tm2__amino_skip(tm2__amino_rd *r, unsigned wiretype);

/* A bool value: only 0 or 1 (TM2_EDECODE otherwise). */
int tm2__amino_bool(tm2__amino_rd *r, bool *v);

/* A uint8 value: over 255 is TM2_EOVERFLOW. */
int tm2__amino_u8(tm2__amino_rd *r, uint8_t *v);

/* Splits one "sized" message (uvarint length + body) off the front of buf.
 * max includes the prefix, as in the reference's reader: body_len > max or
 * prefix + body_len > max is TM2_ETOOBIG (max == 0 means no limit, as in the
 * reference). If buf ends before the message does, TM2_EAGAIN (a bad prefix is
 * still reported at once, even a partial one whose value is already too big,
 * so a peer cannot make us buffer more than max bytes). A prefix that
 * overflows 64 bits is TM2_EOVERFLOW. On success *body points into buf and
 * *consumed = prefix length + *body_len. */
int tm2__amino_sized(const uint8_t *buf, size_t len, size_t max,
                     const uint8_t **body, size_t *body_len, size_t *consumed);

/* Decodes a google.protobuf.Any body (the whole of [buf, buf+len)):
 * field 1 type URL (printable ASCII, required, first), optional field 2 value,
 * nothing after. *name, *name_len is the part after the last '/'; a URL that
 * is empty, has no '/' or ends with one is TM2_ETYPEURL, and so is an empty
 * Any. Without field 2, *value is buf + len and *value_len is 0; all results
 * point into buf. TM2_ETYPEURL, TM2_EFIELD, TM2_EWIRETYPE, TM2_ETRUNC,
 * TM2_EOVERFLOW, TM2_ETRAILING. */
int tm2__amino_any(const uint8_t *buf, size_t len, const char **name, size_t *name_len,
                   const uint8_t **value, size_t *value_len);

/* ---- writing ---------------------------------------------------------------
 * A writer appends to buf[0..cap). The first failure (TM2_ENOSPC, or
 * TM2_EINVAL for a field number outside 1..2^29-1) is sticky in err and later
 * calls do nothing, so an encoder checks once at the end.
 * A writer with buf == NULL only counts: len is the size the output needs. */
typedef struct tm2__amino_wr {
    uint8_t *buf;
    size_t cap;
    size_t len;
    int err;
} tm2__amino_wr;

static inline void tm2__amino_wr_init(tm2__amino_wr *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->err = 0;
}

size_t tm2__amino_uvarint_size(uint64_t v);
void tm2__amino_put_raw(tm2__amino_wr *w, const void *p, size_t len);
void tm2__amino_put_uvarint(tm2__amino_wr *w, uint64_t v);
void tm2__amino_put_key(tm2__amino_wr *w, uint32_t field, unsigned wiretype);
/* Field with a varint value; omitted when v == 0 (proto3 default). */
void tm2__amino_put_uvarint_field(tm2__amino_wr *w, uint32_t field, uint64_t v);
/* Length-delimited field; omitted when len == 0 unless always is set
 * (fixed-size arrays are always written). */
void tm2__amino_put_bytes_field(tm2__amino_wr *w, uint32_t field, const void *p, size_t len,
                                bool always);
/* Key and length of a nested message whose body (body_len bytes) the caller
 * writes next. */
void tm2__amino_put_nested_header(tm2__amino_wr *w, uint32_t field, size_t body_len);
/* Any header: field 1 type URL ("/" + name), and when value_len > 0 the key
 * and length of field 2 (caller writes the value next). */
void tm2__amino_put_any_header(tm2__amino_wr *w, const char *type_url, size_t value_len);

#endif
