/* Internal: the parts of tm2_netaddr_validate a caller can take separately. */
#ifndef TM2_CODEC_NETADDR_H
#define TM2_CODEC_NETADDR_H

#include "tm2p2p/netaddr.h"

/* tm2_netaddr_validate without the ID check, for addresses whose ID was
 * checked when they were parsed (tm2_netaddr_parse does): 0, TM2_EUNSPEC or
 * TM2_ERESERVED. */
int tm2__netaddr_validate_place(const tm2_netaddr *a);

#endif
