/* NodeInfo: what two nodes tell each other right after the secret connection
 * is up (WIRE.md section 5).
 *
 * Ownership: a tm2_node_info you build yourself points at your own strings
 * and arrays; tm2p2p only reads them during the call. A tm2_node_info
 * returned by tm2_node_info_decode() owns one allocation holding all of its
 * strings; release it with tm2_node_info_free(). Strings are NUL-terminated
 * and never NULL in a decoded value (absent fields are ""). Thread-safe. */
#ifndef TM2P2P_NODE_INFO_H
#define TM2P2P_NODE_INFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"
#include "tm2p2p/netaddr.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TM2_NODE_INFO_MAX_SIZE     10240  /* sized message, prefix included */
#define TM2_NODE_INFO_MAX_CHANNELS 16
#define TM2_PROTOCOL_VERSION       "v1.0.0-rc.0"

typedef struct tm2_version_info {
    const char *name;
    const char *version;
    bool optional;
} tm2_version_info;

typedef struct tm2_node_info {
    const tm2_version_info *versions;   /* field 1, in order */
    size_t n_versions;
    bool has_net_address;               /* field 2 present */
    tm2_netaddr net_address;            /* advertised dial address; its ID is the node ID */
    const char *network;                /* chain ID */
    const char *software;
    const char *version;
    const uint8_t *channels;
    size_t n_channels;
    const char *moniker;
    const char *tx_index;               /* Other.TxIndex */
    const char *rpc_address;            /* Other.RPCAddress */
} tm2_node_info;

/* Encodes ni as the sized amino message sent on the wire (length prefix
 * included): fields 1..8 in order, defaults omitted, the address as its
 * canonical string. NULL strings are treated as "". With buf == NULL and
 * cap == 0 nothing is written and the size needed is returned.
 * Returns the length written or TM2_ENOSPC, TM2_ETOOBIG (over
 * TM2_NODE_INFO_MAX_SIZE), TM2_EINVAL (NULL array with a non-zero count), or
 * the tm2_netaddr_format() error. */
TM2_API int tm2_node_info_encode(const tm2_node_info *ni, uint8_t *buf, size_t cap);

/* Decodes one sized NodeInfo from buf[0..len) with the reference decoder's
 * strictness (WIRE.md 1.9): fields in ascending order (field 1 may repeat),
 * no unknown fields, right wire types, bools only 00/01. Bytes after the
 * message are left alone (*consumed says where it ends). On success *out owns
 * its memory. Returns TM2_EAGAIN if buf holds only part of the message,
 * TM2_ETOOBIG if it is over the limit, a decode error (TM2_EFIELD,
 * TM2_EWIRETYPE, TM2_ETRUNC, TM2_EOVERFLOW, TM2_EDECODE, which includes a
 * string holding a NUL byte) or the tm2_netaddr_parse() error for the
 * address. Host names in the address are rejected (TM2_ERESOLVE; no DNS
 * here). */
TM2_API int tm2_node_info_decode(const uint8_t *buf, size_t len, tm2_node_info **out,
                                 size_t *consumed);

TM2_API void tm2_node_info_free(tm2_node_info *ni);

/* The reference's Validate() on a received NodeInfo (WIRE.md 5.4), rules in
 * its order: address present, address re-parses, version text, channels
 * (at most TM2_NODE_INFO_MAX_CHANNELS, no duplicates), moniker, RPC address.
 * Returns 0 or TM2_ENODEINFO with the failed rule in why (may be NULL). */
TM2_API int tm2_node_info_validate(const tm2_node_info *ni, char *why, size_t why_len);

/* The reference's CompatibleWith (WIRE.md 5.5): versions (an entry only one
 * side has must be optional on that side; shared entries need the same
 * golang.org/x/mod/semver major, invalid versions matching only invalid
 * ones), then equal networks, then at least one common channel.
 * Returns 0 or TM2_EINCOMPAT with the reason in why (may be NULL). */
TM2_API int tm2_node_info_compatible(const tm2_node_info *ours, const tm2_node_info *theirs,
                                     char *why, size_t why_len);

/* True if ni advertises channel ch. */
TM2_API bool tm2_node_info_has_channel(const tm2_node_info *ni, uint8_t ch);

#ifdef __cplusplus
}
#endif
#endif
