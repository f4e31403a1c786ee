/* Address groups (common/netgroup.h). */
#include "common/netgroup.h"

#include <string.h>

bool tm2__addr_is_local(const tm2_netaddr *a)
{
    if (tm2_netaddr_is_local(a) || tm2_netaddr_is_private(a) || tm2_netaddr_is_unspecified(a))
        return true;
    if (!tm2_netaddr_is_ipv4(a))
        return false;
    const uint8_t *v4 = a->ip + 12;
    /* Shared address space (RFC 6598, carrier-grade NAT) and the
     * benchmarking range (RFC 2544): not reachable from the internet. */
    return (v4[0] == 100 && (v4[1] & 0xc0) == 64) || (v4[0] == 198 && (v4[1] & 0xfe) == 18);
}

void tm2__group_key_of(const tm2_netaddr *a, int by, bool group_local, tm2__group_key *out)
{
    memset(out, 0, sizeof *out);
    if (!group_local && tm2__addr_is_local(a)) {
        out->b[0] = TM2__GROUP_LOCAL;
        return;
    }
    bool v4 = tm2_netaddr_is_ipv4(a);
    const uint8_t *ip = v4 ? a->ip + 12 : a->ip;
    size_t keep;   /* whole bytes of the address kept */
    switch (by) {
    case TM2__BY_SUBNET:
        out->b[0] = v4 ? TM2__GROUP_SUBNET4 : TM2__GROUP_SUBNET6;
        keep = v4 ? 3 : 6;
        break;
    case TM2__BY_NETGROUP:
        out->b[0] = v4 ? TM2__GROUP_NET4 : TM2__GROUP_NET6;
        keep = v4 ? 2 : 4;
        break;
    default:
        out->b[0] = v4 ? TM2__GROUP_IP4 : TM2__GROUP_IP6;
        keep = v4 ? 4 : 16;
        break;
    }
    memcpy(out->b + 1, ip, keep);
}
