/* Peer-exchange message codec (see pex_msg.h). */
#include "discovery/pex_msg.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "codec/amino.h"
#include "codec/netaddr.h"

#define URL_REQUEST  "/p2p.Request"
#define URL_RESPONSE "/p2p.Response"
#define NAME_REQUEST  "p2p.Request"
#define NAME_RESPONSE "p2p.Response"

/* Fits every canonical address; longer entries (legal: the port may carry
 * any number of leading zeros) go to the heap. */
#define ADDR_BUF 128

int tm2__pex_encode_request(uint8_t *out, size_t cap)
{
    if (!out || cap < TM2__PEX_REQUEST_SIZE)
        return TM2_ENOSPC;
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, out, cap);
    tm2__amino_put_any_header(&w, URL_REQUEST, 0);
    return w.err ? w.err : (int)w.len;
}

static int format_entry(const tm2_netaddr *a, char buf[TM2_NETADDR_STRLEN + 1])
{
    if (a->id.s[0] == '\0')
        return TM2_EINVAL;
    return tm2_netaddr_format(a, buf, TM2_NETADDR_STRLEN + 1);
}

int tm2__pex_encode_response(const tm2_netaddr *addrs, size_t n, uint8_t *out, size_t cap)
{
    char s[TM2_NETADDR_STRLEN + 1];
    if ((n && !addrs) || (!out && cap))
        return TM2_EINVAL;

    /* Value size first: the Any header carries it. Each entry is under 128
     * bytes, so n is bounded well before the sum could wrap. */
    size_t value = 0;
    for (size_t i = 0; i < n; i++) {
        int len = format_entry(&addrs[i], s);
        if (len < 0)
            return len;
        value += 1 + tm2__amino_uvarint_size((uint64_t)len) + (size_t)len;
        if (value > INT32_MAX)
            return TM2_ETOOBIG;
    }
    size_t total = 2 + sizeof URL_RESPONSE - 1;
    if (value)
        total += 1 + tm2__amino_uvarint_size(value) + value;
    if (total > INT32_MAX)
        return TM2_ETOOBIG;
    if (!out)
        return (int)total;
    if (total > cap)
        return TM2_ENOSPC;

    tm2__amino_wr w;
    tm2__amino_wr_init(&w, out, cap);
    tm2__amino_put_any_header(&w, URL_RESPONSE, value);
    for (size_t i = 0; i < n; i++) {
        int len = format_entry(&addrs[i], s);
        tm2__amino_put_bytes_field(&w, 1, s, (size_t)len, true);
    }
    if (w.err)
        return w.err;
    return (int)w.len;
}

static bool name_is(const char *name, size_t len, const char *want)
{
    size_t n = strlen(want);
    return len == n && memcmp(name, want, n) == 0;
}

/* One entry: the reference parses the string with NewNetAddressFromString;
 * we do the same without DNS. A C string cannot hold a NUL, and no address
 * can contain one, so it is refused rather than truncated. */
static int parse_entry(const uint8_t *p, size_t n, tm2_netaddr *out)
{
    if (memchr(p, 0, n))
        return TM2_EADDR;
    char small[ADDR_BUF];
    char *s = n < sizeof small ? small : malloc(n + 1);
    if (!s)
        return TM2_ENOMEM;
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    int rc = tm2_netaddr_parse(s, 0, out);
    if (s != small)
        free(s);
    return rc;
}

/* Walks the Response value: only field 1, ByteLength, repeated. Any other
 * field number is either out of order or unknown to the reference (it stops
 * the list at a higher number and then rejects it as unknown), so both are
 * TM2_EFIELD. Counts entries; parses them into addrs when addrs is set. */
static int walk_response(const uint8_t *v, size_t vlen, tm2__pex_msg *m, tm2_netaddr *addrs)
{
    tm2__amino_rd r;
    tm2__amino_rd_init(&r, v, vlen);
    size_t count = 0;
    while (!tm2__amino_rd_done(&r)) {
        uint32_t field;
        unsigned wt;
        const uint8_t *p;
        size_t n;
        int e = tm2__amino_key(&r, &field, &wt);
        if (e)
            return e;
        if (field != 1)
            return TM2_EFIELD;
        if (wt != TM2_WT_BYTES)
            return TM2_EWIRETYPE;
        if ((e = tm2__amino_bytes(&r, &p, &n)))
            return e;
        if (addrs) {
            e = parse_entry(p, n, &addrs[count]);
            if (e) {
                m->bad = count;
                return e;
            }
        }
        count++;
    }
    m->n_addrs = count;
    return 0;
}

int tm2__pex_decode(const uint8_t *buf, size_t len, tm2__pex_msg *m, tm2_netaddr *addrs,
                    size_t max)
{
    if (!m || (!buf && len) || (!addrs && max))
        return TM2_EINVAL;
    *m = (tm2__pex_msg){0};
    const char *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
    int e = tm2__amino_any(buf, len, &name, &name_len, &value, &value_len);
    if (e)
        return e;
    if (name_is(name, name_len, NAME_REQUEST)) {
        m->kind = TM2__PEX_REQUEST;
        /* Request has no fields: any value content is an unknown field. */
        return value_len ? TM2_EFIELD : 0;
    }
    if (!name_is(name, name_len, NAME_RESPONSE))
        return TM2_ETYPEURL;
    m->kind = TM2__PEX_RESPONSE;
    /* Structure and count first, so an oversized answer costs no parsing. */
    if ((e = walk_response(value, value_len, m, NULL)))
        return e;
    if (m->n_addrs > max)
        return TM2_ETOOBIG;
    if (m->n_addrs == 0)
        return 0;
    return walk_response(value, value_len, m, addrs);
}

int tm2__pex_response_validate(const tm2_netaddr *addrs, size_t n, size_t *bad)
{
    if (n == 0)
        return TM2_EPROTO;
    if (!addrs)
        return TM2_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int e = tm2__netaddr_validate_place(&addrs[i]);
        if (e) {
            if (bad)
                *bad = i;
            return e;
        }
    }
    return 0;
}
