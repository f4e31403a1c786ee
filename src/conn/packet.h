/* Internal: MConnection packet codec (WIRE.md 6.2-6.4).
 *
 * A packet on the decrypted stream is "sized": uvarint(len) || Any, where the
 * Any is /p2p.Ping, /p2p.Pong or /p2p.Msg{1: channel uint8, 2: EOF uint8,
 * 3: bytes}. Encoders write the reference's exact bytes straight into the
 * caller's buffer; the decoder is as strict as the reference's and never
 * copies (data points into the input). Pure and allocation-free. */
#ifndef TM2_CONN_PACKET_H
#define TM2_CONN_PACKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"

enum {
    TM2__PKT_PING = 1,
    TM2__PKT_PONG = 2,
    TM2__PKT_MSG = 3,
};

/* Sized Ping and Pong are always this long (0b 0a 09 "/p2p.Ping"). */
#define TM2__PACKET_PING_SIZE 12

typedef struct tm2__packet {
    int type;               /* TM2__PKT_* */
    uint8_t channel;        /* Msg only */
    uint8_t eof;            /* Msg only: raw value; only 1 means "last packet" */
    const uint8_t *data;    /* Msg only: payload (NULL when len is 0) */
    size_t len;
} tm2__packet;

/* Size of the sized encoding of Msg{channel, eof, len payload bytes}. */
size_t tm2__packet_msg_size(uint8_t channel, uint8_t eof, size_t len);

/* Receiver limit for a given max payload, prefix included: the sized size of
 * Msg{1, 1, max_payload bytes} + 10, as the reference computes it
 * (1056 for 1024). */
size_t tm2__packet_max_size(size_t max_payload);

/* Writes the sized Msg packet to out. Returns its length or TM2_ENOSPC
 * (nothing useful is written then). */
int tm2__packet_encode_msg(uint8_t *out, size_t cap, uint8_t channel, uint8_t eof,
                           const uint8_t *data, size_t len);

/* Writes a sized Ping or Pong (TM2__PACKET_PING_SIZE bytes). Returns the
 * length or TM2_ENOSPC. */
int tm2__packet_encode_ping(uint8_t *out, size_t cap);
int tm2__packet_encode_pong(uint8_t *out, size_t cap);

/* Encodes any decoded packet back (Msg with its raw EOF value). */
int tm2__packet_encode(const tm2__packet *p, uint8_t *out, size_t cap);

/* Decodes the Any body of one packet (what follows the length prefix; the
 * whole of [body, body+len)). Returns 0 or TM2_ETYPEURL (unknown type),
 * TM2_EFIELD (unknown, duplicate or out-of-order field), TM2_EWIRETYPE,
 * TM2_EOVERFLOW (uint8 field over 255, varint over 64 bits), TM2_ETRUNC,
 * TM2_ETRAILING, TM2_EDECODE. */
int tm2__packet_decode_body(const uint8_t *body, size_t len, tm2__packet *p);

/* Decodes one sized packet from the front of buf, accepting at most max
 * bytes including the prefix. On success *consumed is its length. Returns
 * TM2_EAGAIN if buf holds only the beginning of a packet (a prefix that is
 * already bad or over max is reported at once), TM2_ETOOBIG, or a
 * tm2__packet_decode_body error. */
int tm2__packet_decode(const uint8_t *buf, size_t len, size_t max, tm2__packet *p,
                       size_t *consumed);

#endif
