/* NetAddress: "<id>@<ip>:<port>", the reference's peer address.
 *
 * tm2_netaddr is a plain value type: copy it freely. IPv4 is stored as an
 * IPv4-mapped IPv6 address, which is also how it prints ("a.b.c.d"), like the
 * reference. All functions are thread-safe. Only tm2_netaddr_parse with
 * TM2_NETADDR_RESOLVE may block (DNS): never call it on a network thread. */
#ifndef TM2P2P_NETADDR_H
#define TM2P2P_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"
#include "tm2p2p/key.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest canonical string: 40-char ID, '@', "[" 45-char IPv6 "]", ':', 5 digits. */
#define TM2_NETADDR_STRLEN 100

typedef struct tm2_netaddr {
    tm2_id id;          /* empty when the address carries no ID */
    uint8_t ip[16];     /* IPv6, or IPv4-mapped (::ffff:a.b.c.d) */
    uint16_t port;
} tm2_netaddr;

enum {
    TM2_NETADDR_RESOLVE = 1u << 0,  /* look up host names (blocking DNS) */
    TM2_NETADDR_NO_ID   = 1u << 1,  /* accept and require "host:port" without "id@" */
};

/* Parses s exactly like the reference's NewNetAddressFromString (WIRE.md 3.2):
 * the text between the first "://" and the next one (if any) is kept, then
 * "<id>@<host>:<port>" with exactly one '@', Go's SplitHostPort rules
 * ("[v6]:port", no bare IPv6), Go's ParseIP rules for the host (IPv4 with
 * exactly four decimal octets and no leading zeros; IPv6 incl. an IPv4 tail)
 * and a decimal port 0..65535 (leading zeros allowed, as strconv does).
 * An IPv6 literal with a "%zone" is accepted and the zone dropped, as the
 * reference's lookup fallback does without asking DNS.
 * A host that is not an IP literal is TM2_ERESOLVE unless flags has
 * TM2_NETADDR_RESOLVE; then the first getaddrinfo() result is used, except
 * that legacy numeric forms libc would read ("127.1", "0x7f.0.0.1") are
 * TM2_EHOST. The port is checked before any lookup.
 * With TM2_NETADDR_NO_ID the string must be "host:port" (no '@'; the ID of
 * *out is empty), e.g. a listen address "tcp://0.0.0.0:26656".
 * *out is written only on success. Returns 0 or TM2_EINVAL, TM2_EADDR (not
 * exactly one '@'), TM2_EID or a bech32 code (TM2_EDECODE, TM2_ECHECKSUM,
 * TM2_ECHARSET, TM2_ECASE, TM2_EHRP), TM2_EHOST (empty or malformed host),
 * TM2_EPORT (missing or bad port), TM2_ERESOLVE, TM2_ENOMEM. */
TM2_API int tm2_netaddr_parse(const char *s, unsigned flags, tm2_netaddr *out);

/* Canonical string, byte-identical to the reference's String():
 * "<id>@<dialstring>", or the bare dialstring when the ID is empty.
 * Returns the length or TM2_ENOSPC. */
TM2_API int tm2_netaddr_format(const tm2_netaddr *a, char *buf, size_t cap);

/* "ip:port" with brackets for IPv6 (Go's JoinHostPort of IP.String()).
 * Returns the length or TM2_ENOSPC. */
TM2_API int tm2_netaddr_dialstring(const tm2_netaddr *a, char *buf, size_t cap);

/* Builds an address from a socket address (AF_INET or AF_INET6) and an ID
 * (NULL or "" for none; any other ID must pass tm2_id_validate). Returns 0,
 * TM2_EINVAL (other family) or the ID's validation error. */
struct sockaddr;
TM2_API int tm2_netaddr_from_sockaddr(const struct sockaddr *sa, const tm2_id *id, tm2_netaddr *out);

/* Fills sa (cap bytes; a struct sockaddr_storage is always enough) for
 * connect()/bind(): AF_INET for IPv4-mapped addresses, else AF_INET6. The
 * length to pass along is sizeof the struct of sa->sa_family.
 * Returns 0, TM2_EINVAL or TM2_ENOSPC. */
TM2_API int tm2_netaddr_to_sockaddr(const tm2_netaddr *a, struct sockaddr *sa, size_t cap);

/* The reference's Validate() (WIRE.md 3.3): ID valid, IP not unspecified,
 * not 2001:db8::/32, not 255.255.255.255. Returns 0 or TM2_EID (or a bech32
 * code), TM2_EUNSPEC, TM2_ERESERVED. The port is not checked. */
TM2_API int tm2_netaddr_validate(const tm2_netaddr *a);

TM2_API bool tm2_netaddr_is_ipv4(const tm2_netaddr *a);
TM2_API bool tm2_netaddr_is_unspecified(const tm2_netaddr *a);
/* 127.0.0.0/8 or ::1. */
TM2_API bool tm2_netaddr_is_loopback(const tm2_netaddr *a);
/* Local(): loopback or 0.0.0.0/8. */
TM2_API bool tm2_netaddr_is_local(const tm2_netaddr *a);
/* 10/8, 172.16/12, 192.168/16 (RFC 1918), 169.254/16 (RFC 3927),
 * fe80::/64 (RFC 4862), fc00::/7 (RFC 4193), 2001:10::/28 (RFC 4843).
 * IPv4 ranges match only IPv4(-mapped) addresses, IPv6 ranges only others. */
TM2_API bool tm2_netaddr_is_private(const tm2_netaddr *a);
/* Routable(): valid, not private, not local. */
TM2_API bool tm2_netaddr_is_routable(const tm2_netaddr *a);

/* Equals(): canonical strings equal. */
TM2_API bool tm2_netaddr_equal(const tm2_netaddr *a, const tm2_netaddr *b);
/* Same(): dialstrings equal, or a has an ID and the IDs are equal. */
TM2_API bool tm2_netaddr_same(const tm2_netaddr *a, const tm2_netaddr *b);

#ifdef __cplusplus
}
#endif
#endif
