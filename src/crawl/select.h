/* The seed's answer to a discovery request: a varied selection of addresses.
 *
 * Given the candidates (addresses verified recently, the requester's own
 * already left out), crawl_select picks at most max of them, at most one per
 * node ID, spreading the picks over as many subnets as possible (IPv4 /16,
 * IPv6 /32): one from each subnet in random order, then a second from each,
 * and so on. Pure; the randomness comes from the caller (libsodium's
 * randombytes_uniform unless a test passes its own). */
#ifndef TM2_CRAWL_SELECT_H
#define TM2_CRAWL_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/netaddr.h"

/* IPv4 /16 or IPv6 /32 of a, as one number. */
uint64_t crawl_subnet_of(const tm2_netaddr *a);

/* Random number below n (n > 0). */
typedef uint32_t (*crawl_rand_fn)(void *user, uint32_t n);

/* Picks from cands[0..n) into out (indexes into cands, at most max), returns
 * how many. Returns 0 when n or max is 0, or memory runs out. rnd NULL means
 * randombytes_uniform. */
size_t crawl_select(const tm2_netaddr *cands, size_t n, size_t max, size_t *out,
                    crawl_rand_fn rnd, void *rnd_user);

#endif
