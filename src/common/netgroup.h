/* Internal: address groups for the admission rules and the address book (pure).
 *
 * A group key names a set of addresses: one IP, a subnet (IPv4 /24, IPv6
 * /48: the accept-rate and per-subnet rules) or a network group (IPv4 /16,
 * IPv6 /32: outbound diversity and eviction, Bitcoin Core's netgroup).
 * IPv4-mapped addresses are grouped as IPv4. Addresses that are not
 * reachable from the internet (loopback, 0.0.0.0/8, RFC 1918, link-local,
 * unique local, shared 100.64.0.0/10, benchmarking 198.18.0.0/15;
 * tm2_netaddr_is_local or tm2_netaddr_is_private, and the last two) form
 * one group of their own, "local", unless the caller asks for them to be
 * grouped like public ones (limit_local_addrs).
 *
 * Thread rules: none (pure functions of their arguments). */
#ifndef TM2_COMMON_NETGROUP_H
#define TM2_COMMON_NETGROUP_H

#include <stdbool.h>
#include <stdint.h>

#include "tm2p2p/netaddr.h"

/* What a key groups by; the first byte of every key. */
enum tm2__group_kind {
    TM2__GROUP_LOCAL = 1,   /* every non-routable address */
    TM2__GROUP_IP4, TM2__GROUP_IP6,
    TM2__GROUP_SUBNET4, TM2__GROUP_SUBNET6,       /* /24, /48 */
    TM2__GROUP_NET4, TM2__GROUP_NET6,             /* /16, /32 */
};

#define TM2__GROUP_KEY_LEN 17

typedef struct tm2__group_key {
    uint8_t b[TM2__GROUP_KEY_LEN];   /* kind, then the masked address bytes */
} tm2__group_key;

enum tm2__group_by { TM2__BY_IP, TM2__BY_SUBNET, TM2__BY_NETGROUP };

/* True for addresses that are not publicly routable (see above). */
bool tm2__addr_is_local(const tm2_netaddr *a);

/* The key of a's group of the given granularity. A local address gives
 * the one LOCAL key unless group_local. */
void tm2__group_key_of(const tm2_netaddr *a, int by, bool group_local, tm2__group_key *out);

static inline bool tm2__group_eq(const tm2__group_key *a, const tm2__group_key *b)
{
    for (int i = 0; i < TM2__GROUP_KEY_LEN; i++)
        if (a->b[i] != b->b[i])
            return false;
    return true;
}

#endif
