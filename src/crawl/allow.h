/* The crawler's dial policy: which IP addresses it may connect to.
 *
 * A policy is a list of CIDR blocks ("10.0.0.0/8", "fd00::/8", a bare IP for
 * one host) and the keyword "public" (every public unicast address, see
 * crawl_ip_is_public). The default policy is "public" alone, so private,
 * loopback, link-local, shared, documentation, benchmark, multicast and
 * reserved ranges are refused unless a CIDR names them. Whatever the list,
 * the unspecified, broadcast and multicast addresses and port 0 are never
 * dialled. IPv4 is handled as IPv4-mapped IPv6 (the form tm2_netaddr
 * stores), so "127.0.0.0/8" and "::ffff:127.0.0.0/104" are the same block.
 *
 * Pure functions on caller memory; thread-safe. */
#ifndef TM2_CRAWL_ALLOW_H
#define TM2_CRAWL_ALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/netaddr.h"

#define CRAWL_ALLOW_MAX 64   /* CIDR blocks in one policy */

typedef struct crawl_cidr {
    uint8_t ip[16];          /* network address, host bits zero */
    uint8_t bits;            /* prefix length over the 128-bit form */
    bool v4;                 /* written as IPv4 (for printing) */
} crawl_cidr;

typedef struct crawl_allow {
    bool public_ok;          /* "public" is in the list */
    size_t n;
    crawl_cidr cidrs[CRAWL_ALLOW_MAX];
} crawl_allow;

/* Parses one block: "a.b.c.d/n" (n 0..32), "v6/n" (n 0..128), or a bare
 * address (/32, /128). Host bits must be zero ("10.1.0.0/8" is refused, so a
 * typo cannot widen the policy silently). Returns 0 or TM2_EINVAL (why gets a
 * sentence, may be NULL). */
int crawl_cidr_parse(const char *s, crawl_cidr *out, char *why, size_t why_len);

/* Formats a block back ("127.0.0.0/8", "fd00::/8"). Length or TM2_ENOSPC. */
int crawl_cidr_format(const crawl_cidr *c, char *buf, size_t cap);

bool crawl_cidr_contains(const crawl_cidr *c, const uint8_t ip[16]);

/* The default policy: public unicast only. */
void crawl_allow_default(crawl_allow *a);

/* Parses a comma-separated list of blocks and "public" (spaces around items
 * ignored, at least one item, at most CRAWL_ALLOW_MAX blocks) into a fresh
 * policy. 0 or TM2_EINVAL with a sentence in why. */
int crawl_allow_parse(const char *list, crawl_allow *out, char *why, size_t why_len);

/* Public unicast: IPv4 outside 0/8, 10/8, 100.64/10, 127/8, 169.254/16,
 * 172.16/12, 192.0.0/24, 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15,
 * 198.51.100/24, 203.0.113/24, 224/4 and 240/4 (255.255.255.255 included);
 * IPv6 inside 2000::/3 and outside 2001::/23 (special purpose, Teredo
 * included), 2001:db8::/32 (documentation) and 2002::/16 (6to4, which embeds
 * an IPv4 address of any kind). */
bool crawl_ip_is_public(const uint8_t ip[16]);

/* May the crawler dial ip? Never the unspecified, broadcast or a multicast
 * address; otherwise a listed block must hold it, or "public" be listed and
 * the address be public. */
bool crawl_allow_ip(const crawl_allow *a, const uint8_t ip[16]);

/* crawl_allow_ip and a non-zero port. */
bool crawl_allow_addr(const crawl_allow *a, const tm2_netaddr *addr);

/* "public,127.0.0.0/8" for logs. Length or TM2_ENOSPC. */
int crawl_allow_format(const crawl_allow *a, char *buf, size_t cap);

#endif
