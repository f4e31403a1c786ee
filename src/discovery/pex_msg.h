/* Internal: peer-exchange (discovery) message codec (WIRE.md 9.2).
 *
 * A discovery message is the bare payload of a PacketMsg on channel 0x50 (not
 * sized): an Any of "/p2p.Request" (no value) or "/p2p.Response" whose value
 * is field 1 repeated, one "<ID>@<ip>:<port>" string per peer. The decoder is
 * as strict as the reference's reflect decoder and never resolves host names;
 * the encoders write the reference's exact bytes. Pure, thread-safe, and
 * allocation-free except for address strings too long for a stack buffer. */
#ifndef TM2_DISCOVERY_PEX_MSG_H
#define TM2_DISCOVERY_PEX_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"
#include "tm2p2p/netaddr.h"

#define TM2__PEX_CHANNEL      0x50
/* Most addresses the reference puts in one response. */
#define TM2__PEX_MAX_SHARED   30
/* A Request is always these 14 bytes: 0a 0c "/p2p.Request". */
#define TM2__PEX_REQUEST_SIZE 14

enum {
    TM2__PEX_REQUEST = 1,
    TM2__PEX_RESPONSE = 2,
};

typedef struct tm2__pex_msg {
    int kind;         /* TM2__PEX_*, 0 while the type is unknown */
    size_t n_addrs;   /* entries of a response (also set on TM2_ETOOBIG) */
    size_t bad;       /* index of the entry that failed to parse */
} tm2__pex_msg;

/* Writes a Request. Returns TM2__PEX_REQUEST_SIZE or TM2_ENOSPC. */
int tm2__pex_encode_request(uint8_t *out, size_t cap);

/* Writes a Response carrying addrs[0..n) as canonical strings (n == 0 gives
 * an Any without a value, as the reference writes an empty list). With
 * out == NULL and cap == 0 only the size is computed. Every address needs an
 * ID (TM2_EINVAL otherwise: it could not be decoded back). Returns the length,
 * TM2_ENOSPC, TM2_EINVAL or TM2_ETOOBIG (over INT32_MAX bytes). */
int tm2__pex_encode_response(const tm2_netaddr *addrs, size_t n, uint8_t *out, size_t cap);

/* Decodes one discovery message, the whole of [buf, buf+len).
 *
 * On return m->kind names the message type when it was recognised (even if
 * decoding then failed). A Response's entries are parsed into addrs[0..max)
 * (addrs may be NULL when max is 0) and m->n_addrs is their count.
 * The message structure is checked in full before any address is parsed:
 * only field 1 with wire type 2, repeated; nothing after the Any's value.
 * A structurally sound Response with more than max entries is TM2_ETOOBIG,
 * with m->n_addrs set to the count and no address parsed, so the caller can
 * apply its own policy to oversized answers. An entry that is not an IP-
 * literal NetAddress (WIRE.md 3.2; host names are TM2_ERESOLVE, a NUL byte is
 * TM2_EADDR) rejects the whole message, as the reference ignores the whole
 * message; m->bad is its index.
 * Returns 0 or TM2_ETYPEURL (not a discovery type), TM2_EFIELD (unknown or
 * out-of-place field, or a value on a Request), TM2_EWIRETYPE, TM2_ETRUNC,
 * TM2_ETRAILING, TM2_EOVERFLOW, TM2_ETOOBIG, TM2_ENOMEM, or the
 * tm2_netaddr_parse code of the bad entry. addrs contents are unspecified
 * after a failure. */
int tm2__pex_decode(const uint8_t *buf, size_t len, tm2__pex_msg *m, tm2_netaddr *addrs,
                    size_t max);

/* The reference's Response.ValidateBasic on addresses from tm2__pex_decode:
 * at least one address (TM2_EPROTO otherwise) and every address passes
 * tm2_netaddr_validate (its code is returned and *bad, if non-NULL, is the
 * index). The IDs are not checked again: decoding did. */
int tm2__pex_response_validate(const tm2_netaddr *addrs, size_t n, size_t *bad);

#endif
