/* MConnection packet codec (see packet.h). */
#include "conn/packet.h"

#include <string.h>

#include "codec/amino.h"

/* Type URLs; decoding compares only the name after the last '/'. */
#define URL_PING "/p2p.Ping"
#define URL_PONG "/p2p.Pong"
#define URL_MSG "/p2p.Msg"
#define NAME_PING "p2p.Ping"
#define NAME_PONG "p2p.Pong"
#define NAME_MSG "p2p.Msg"

/* Length of the Msg value (the Any's field 2 content). */
static size_t msg_value_size(uint8_t channel, uint8_t eof, size_t len)
{
    size_t v = 0;
    if (channel)
        v += 1 + tm2__amino_uvarint_size(channel);
    if (eof)
        v += 1 + tm2__amino_uvarint_size(eof);
    if (len)
        v += 1 + tm2__amino_uvarint_size(len) + len;
    return v;
}

/* Length of the Any body: field 1 type URL, then field 2 when non-empty. */
static size_t msg_any_size(size_t value_len)
{
    size_t n = 2 + sizeof URL_MSG - 1;
    if (value_len)
        n += 1 + tm2__amino_uvarint_size(value_len) + value_len;
    return n;
}

size_t tm2__packet_msg_size(uint8_t channel, uint8_t eof, size_t len)
{
    size_t any = msg_any_size(msg_value_size(channel, eof, len));
    return tm2__amino_uvarint_size(any) + any;
}

size_t tm2__packet_max_size(size_t max_payload)
{
    return tm2__packet_msg_size(1, 1, max_payload) + 10;
}

int tm2__packet_encode_msg(uint8_t *out, size_t cap, uint8_t channel, uint8_t eof,
                           const uint8_t *data, size_t len)
{
    size_t value = msg_value_size(channel, eof, len);
    size_t any = msg_any_size(value);
    size_t total = tm2__amino_uvarint_size(any) + any;
    if (total > cap || total > (size_t)INT32_MAX)
        return TM2_ENOSPC;
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, out, cap);
    tm2__amino_put_uvarint(&w, any);
    tm2__amino_put_any_header(&w, URL_MSG, value);
    tm2__amino_put_uvarint_field(&w, 1, channel);
    tm2__amino_put_uvarint_field(&w, 2, eof);
    tm2__amino_put_bytes_field(&w, 3, data, len, false);
    if (w.err)
        return w.err;
    return (int)w.len;
}

static int encode_empty(uint8_t *out, size_t cap, const char *url)
{
    if (cap < TM2__PACKET_PING_SIZE)
        return TM2_ENOSPC;
    tm2__amino_wr w;
    tm2__amino_wr_init(&w, out, cap);
    tm2__amino_put_uvarint(&w, TM2__PACKET_PING_SIZE - 1);
    tm2__amino_put_any_header(&w, url, 0);
    if (w.err)
        return w.err;
    return (int)w.len;
}

int tm2__packet_encode_ping(uint8_t *out, size_t cap) { return encode_empty(out, cap, URL_PING); }

int tm2__packet_encode_pong(uint8_t *out, size_t cap) { return encode_empty(out, cap, URL_PONG); }

int tm2__packet_encode(const tm2__packet *p, uint8_t *out, size_t cap)
{
    switch (p->type) {
    case TM2__PKT_PING:
        return tm2__packet_encode_ping(out, cap);
    case TM2__PKT_PONG:
        return tm2__packet_encode_pong(out, cap);
    case TM2__PKT_MSG:
        return tm2__packet_encode_msg(out, cap, p->channel, p->eof, p->data, p->len);
    default:
        return TM2_EINVAL;
    }
}

static bool name_is(const char *name, size_t len, const char *want)
{
    size_t n = strlen(want);
    return len == n && memcmp(name, want, n) == 0;
}

/* The Msg value: fields 1, 2, 3 at most once each, ascending, nothing else
 * (the reference's generated decoder has the same rules). */
static int decode_msg(const uint8_t *v, size_t vlen, tm2__packet *p)
{
    tm2__amino_rd r;
    tm2__amino_rd_init(&r, v, vlen);
    uint32_t last = 0;
    while (!tm2__amino_rd_done(&r)) {
        uint32_t field;
        unsigned wt;
        int e = tm2__amino_key(&r, &field, &wt);
        if (e)
            return e;
        if (field <= last)
            return TM2_EFIELD;
        last = field;
        switch (field) {
        case 1:
        case 2:
            if (wt != TM2_WT_VARINT)
                return TM2_EWIRETYPE;
            e = tm2__amino_u8(&r, field == 1 ? &p->channel : &p->eof);
            break;
        case 3:
            if (wt != TM2_WT_BYTES)
                return TM2_EWIRETYPE;
            e = tm2__amino_bytes(&r, &p->data, &p->len);
            break;
        default:
            return TM2_EFIELD;
        }
        if (e)
            return e;
    }
    if (p->len == 0)
        p->data = NULL;
    return 0;
}

int tm2__packet_decode_body(const uint8_t *body, size_t len, tm2__packet *p)
{
    const char *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
    *p = (tm2__packet){0};
    int e = tm2__amino_any(body, len, &name, &name_len, &value, &value_len);
    if (e)
        return e;
    if (name_is(name, name_len, NAME_MSG)) {
        p->type = TM2__PKT_MSG;
        return decode_msg(value, value_len, p);
    }
    if (name_is(name, name_len, NAME_PING))
        p->type = TM2__PKT_PING;
    else if (name_is(name, name_len, NAME_PONG))
        p->type = TM2__PKT_PONG;
    else
        return TM2_ETYPEURL;
    /* Ping and Pong have no fields: any value content is an unknown field. */
    return value_len ? TM2_EFIELD : 0;
}

int tm2__packet_decode(const uint8_t *buf, size_t len, size_t max, tm2__packet *p,
                       size_t *consumed)
{
    const uint8_t *body;
    size_t body_len, used;
    int e = tm2__amino_sized(buf, len, max, &body, &body_len, &used);
    if (e)
        return e;
    e = tm2__packet_decode_body(body, body_len, p);
    if (e)
        return e;
    *consumed = used;
    return 0;
}
