/* NetAddress (WIRE.md section 3): parsing, canonical text, classification.
 *
 * Parsing follows the reference's NewNetAddressFromString step by step,
 * including the Go standard library pieces it relies on (net.SplitHostPort,
 * net.ParseIP, strconv.ParseUint), so that a string one side accepts the other
 * accepts too and both print it the same way. */
#include "codec/netaddr.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ---- IP literals (Go net.ParseIP / netip.ParseAddr) ---------------------- */

/* Dotted decimal: exactly four fields of 1-3 digits, each <= 255, no leading
 * zeros (rejected since Go 1.17: "010" could mean octal elsewhere). */
static bool parse_ipv4(const char *s, size_t n, uint8_t out[4])
{
    unsigned val = 0, digits = 0, pos = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (digits == 1 && val == 0)
                return false;
            val = val * 10 + (unsigned)(c - '0');
            digits++;
            if (val > 255)
                return false;
        } else if (c == '.') {
            if (i == 0 || i == n - 1 || s[i - 1] == '.' || pos == 3)
                return false;
            out[pos++] = (uint8_t)val;
            val = 0;
            digits = 0;
        } else {
            return false;
        }
    }
    if (pos < 3)
        return false;
    out[3] = (uint8_t)val;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Textual IPv6: groups of 1-4 hex digits, at most one "::", an optional
 * dotted IPv4 tail in place of the last two groups, an optional non-empty
 * "%zone" (reported through *zoned, never stored). */
static bool parse_ipv6(const char *in, size_t n, uint8_t ip[16], bool *zoned)
{
    const char *pct = memchr(in, '%', n);
    *zoned = false;
    if (pct) {
        if (pct + 1 == in + n)
            return false;
        *zoned = true;
        n = (size_t)(pct - in);
    }
    const char *s = in, *end = in + n;
    int ellipsis = -1;
    int i = 0;
    memset(ip, 0, 16);

    if (end - s >= 2 && s[0] == ':' && s[1] == ':') {
        ellipsis = 0;
        s += 2;
        if (s == end)
            return true;
    }
    while (i < 16) {
        size_t off = 0;
        unsigned acc = 0;
        for (; s + off < end; off++) {
            int v = hexval(s[off]);
            if (v < 0)
                break;
            if (off > 3)
                return false;
            acc = (acc << 4) | (unsigned)v;
        }
        if (off == 0)
            return false;
        if (s + off < end && s[off] == '.') {
            /* The group just read is really the start of a dotted IPv4. */
            if ((ellipsis < 0 && i != 12) || i + 4 > 16)
                return false;
            if (!parse_ipv4(s, (size_t)(end - s), ip + i))
                return false;
            s = end;
            i += 4;
            break;
        }
        ip[i] = (uint8_t)(acc >> 8);
        ip[i + 1] = (uint8_t)acc;
        i += 2;
        s += off;
        if (s == end)
            break;
        if (s[0] != ':' || s + 1 == end)
            return false;
        s++;
        if (s[0] == ':') {
            if (ellipsis >= 0)
                return false;
            ellipsis = i;
            s++;
            if (s == end)
                break;
        }
    }
    if (s != end)
        return false;
    if (i < 16) {
        if (ellipsis < 0)
            return false;
        int k = 16 - i;
        memmove(ip + ellipsis + k, ip + ellipsis, (size_t)(i - ellipsis));
        memset(ip + ellipsis, 0, (size_t)k);
    } else if (ellipsis >= 0) {
        return false;       /* "::" must stand for at least one group */
    }
    return true;
}

/* Go netip.ParseAddr: the first '.', ':' or '%' decides the family. */
static bool parse_ip(const char *s, size_t n, uint8_t ip[16], bool *zoned)
{
    *zoned = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            memcpy(ip, v4_prefix, 12);
            return parse_ipv4(s, n, ip + 12);
        }
        if (s[i] == ':')
            return parse_ipv6(s, n, ip, zoned);
        if (s[i] == '%')
            return false;
    }
    return false;
}

/* ---- parsing --------------------------------------------------------------- */

/* strconv.ParseUint(s, 10, 16): digits only, leading zeros allowed. */
static bool parse_port(const char *s, size_t n, uint16_t *port)
{
    unsigned v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > 65535)
            return false;
    }
    *port = (uint16_t)v;
    return true;
}

/* Go net.SplitHostPort on [hp, hp+n). */
static int split_host_port(const char *hp, size_t n, const char **host, size_t *hlen,
                           const char **port, size_t *plen)
{
    const char *last = n ? memrchr(hp, ':', n) : NULL;
    size_t j = 0, k = 0;
    if (!last)
        return TM2_EPORT;
    size_t i = (size_t)(last - hp);
    if (hp[0] == '[') {
        const char *rb = memchr(hp, ']', n);
        if (!rb)
            return TM2_EHOST;
        size_t e = (size_t)(rb - hp);
        if (e + 1 == n)
            return TM2_EPORT;
        if (e + 1 != i)
            return hp[e + 1] == ':' ? TM2_EHOST : TM2_EPORT;
        *host = hp + 1;
        *hlen = e - 1;
        j = 1;
        k = e + 1;
    } else {
        *host = hp;
        *hlen = i;
        if (memchr(hp, ':', i))
            return TM2_EHOST;   /* "too many colons": unbracketed IPv6 */
    }
    if (memchr(hp + j, '[', n - j) || memchr(hp + k, ']', n - k))
        return TM2_EHOST;
    *port = hp + i + 1;
    *plen = n - i - 1;
    return 0;
}

static int resolve(const char *host, size_t hlen, uint8_t ip[16])
{
    char *name = strndup(host, hlen);
    if (!name)
        return TM2_ENOMEM;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* Legacy numeric forms ("127.1", "0x7f.0.0.1", "010.0.0.1") are not IP
     * literals to the reference and would mean different addresses to
     * different resolvers: refuse them instead of letting libc read them. */
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(name, NULL, &hints, &res) == 0) {
        freeaddrinfo(res);
        free(name);
        return TM2_EHOST;
    }
    hints.ai_flags = 0;
    res = NULL;
    int r = getaddrinfo(name, NULL, &hints, &res);
    free(name);
    if (r != 0 || !res)
        return TM2_ERESOLVE;
    tm2_netaddr tmp;
    r = tm2_netaddr_from_sockaddr(res->ai_addr, NULL, &tmp);
    freeaddrinfo(res);
    if (r < 0)
        return TM2_ERESOLVE;
    memcpy(ip, tmp.ip, 16);
    return 0;
}

static int set_id(tm2_netaddr *out, const char *id, size_t len)
{
    char small[TM2_ID_LEN + 1];
    if (len <= TM2_ID_LEN) {
        memcpy(small, id, len);
        small[len] = '\0';
        int r = tm2_id_validate(small);
        if (r == 0)
            memcpy(out->id.s, small, len + 1);
        return r;
    }
    /* Longer than any valid ID, but decode it anyway for the precise error. */
    char *big = strndup(id, len);
    if (!big)
        return TM2_ENOMEM;
    int r = tm2_id_validate(big);
    free(big);
    return r < 0 ? r : TM2_EID;
}

int tm2_netaddr_parse(const char *s, unsigned flags, tm2_netaddr *out)
{
    if (!s || !out)
        return TM2_EINVAL;
    tm2_netaddr a;
    memset(&a, 0, sizeof a);

    /* The reference keeps the text between the first "://" and the next one. */
    const char *p = s, *end = s + strlen(s);
    const char *sch = strstr(s, "://");
    if (sch) {
        p = sch + 3;
        const char *next = strstr(p, "://");
        if (next)
            end = next;
    }

    const char *at = memchr(p, '@', (size_t)(end - p));
    const char *hp = p;
    if (flags & TM2_NETADDR_NO_ID) {
        if (at)
            return TM2_EADDR;
    } else {
        if (!at || memchr(at + 1, '@', (size_t)(end - at - 1)))
            return TM2_EADDR;
        int r = set_id(&a, p, (size_t)(at - p));
        if (r < 0)
            return r;
        hp = at + 1;
    }

    const char *host, *port;
    size_t hlen, plen;
    int r = split_host_port(hp, (size_t)(end - hp), &host, &hlen, &port, &plen);
    if (r < 0)
        return r;
    if (hlen == 0)
        return TM2_EHOST;

    /* A zoned IPv6 literal is no IP to ParseIP, but the reference's fallback
     * lookup returns it (zone dropped) without asking DNS; so do we. */
    bool zoned;
    bool literal = parse_ip(host, hlen, a.ip, &zoned);
    /* The port is checked before any lookup, so a bad port never costs a
     * blocking DNS query. */
    if (!parse_port(port, plen, &a.port))
        return TM2_EPORT;
    if (!literal) {
        if (!(flags & TM2_NETADDR_RESOLVE))
            return TM2_ERESOLVE;
        r = resolve(host, hlen, a.ip);
        if (r < 0)
            return r;
    }
    *out = a;
    return 0;
}

/* ---- text ------------------------------------------------------------------ */

/* Text is built by hand, not with snprintf: discovery formats every
 * address it sends twice (the size, then the bytes). */
static size_t put_dec(char *p, unsigned v)
{
    char t[10];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = t[n - 1 - i];
    return n;
}

static size_t put_hex(char *p, unsigned v)   /* v < 0x10000, no leading zeros */
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (int sh = 12; sh >= 0; sh -= 4)
        if ((v >> sh) || sh == 0 || n)
            p[n++] = hex[(v >> sh) & 15];
    return n;
}

#define IP_TEXT_MAX 40   /* the longest IPv6 text, 39 characters, and a NUL */

/* Go net.IP.String(): dotted quad for IPv4-mapped, else RFC 5952. */
static size_t ip_text(const uint8_t ip[16], char out[IP_TEXT_MAX])
{
    size_t n = 0;
    if (memcmp(ip, v4_prefix, 12) == 0) {
        for (int i = 12; i < 16; i++) {
            if (i > 12)
                out[n++] = '.';
            n += put_dec(out + n, ip[i]);
        }
        out[n] = '\0';
        return n;
    }
    unsigned g[8];
    for (int i = 0; i < 8; i++)
        g[i] = (unsigned)ip[2 * i] << 8 | ip[2 * i + 1];
    /* Longest run of two or more zero groups; the first one on ties. */
    int zs = -1, ze = -1;
    for (int i = 0; i < 8; i++) {
        int j = i;
        while (j < 8 && g[j] == 0)
            j++;
        if (j - i >= 2 && j - i > ze - zs) {
            zs = i;
            ze = j;
        }
    }
    for (int i = 0; i < 8; i++) {
        if (i == zs) {
            out[n++] = ':';
            out[n++] = ':';
            i = ze;
            if (i >= 8)
                break;
        } else if (i > 0) {
            out[n++] = ':';
        }
        n += put_hex(out + n, g[i]);
    }
    out[n] = '\0';
    return n;
}

/* "[ip]:port" or "ip:port" into t (at least 48 bytes); its length. */
static size_t dial_text(const tm2_netaddr *a, char *t)
{
    bool v6 = memcmp(a->ip, v4_prefix, 12) != 0;
    size_t n = 0;
    if (v6)
        t[n++] = '[';
    n += ip_text(a->ip, t + n);
    if (v6)
        t[n++] = ']';
    t[n++] = ':';
    n += put_dec(t + n, a->port);
    t[n] = '\0';
    return n;
}

static int give(const char *t, size_t n, char *buf, size_t cap)
{
    if (n >= cap)
        return TM2_ENOSPC;
    memcpy(buf, t, n + 1);
    return (int)n;
}

int tm2_netaddr_dialstring(const tm2_netaddr *a, char *buf, size_t cap)
{
    if (!a || (!buf && cap))
        return TM2_EINVAL;
    char t[48];
    return give(t, dial_text(a, t), buf, cap);
}

int tm2_netaddr_format(const tm2_netaddr *a, char *buf, size_t cap)
{
    if (!a || (!buf && cap))
        return TM2_EINVAL;
    char t[sizeof a->id.s + 1 + 48];
    size_t idlen = strnlen(a->id.s, sizeof a->id.s), n = 0;
    if (idlen) {
        memcpy(t, a->id.s, idlen);
        t[idlen] = '@';
        n = idlen + 1;
    }
    n += dial_text(a, t + n);
    return give(t, n, buf, cap);
}

/* ---- socket addresses ------------------------------------------------------ */

int tm2_netaddr_from_sockaddr(const struct sockaddr *sa, const tm2_id *id, tm2_netaddr *out)
{
    if (!sa || !out)
        return TM2_EINVAL;
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)sa;
        memcpy(a.ip, v4_prefix, 12);
        memcpy(a.ip + 12, &in4->sin_addr, 4);
        a.port = ntohs(in4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(a.ip, &in6->sin6_addr, 16);
        a.port = ntohs(in6->sin6_port);
    } else {
        return TM2_EINVAL;
    }
    if (id && id->s[0]) {
        size_t len = strnlen(id->s, sizeof id->s);
        if (len == sizeof id->s)
            return TM2_EID;
        int r = tm2_id_validate(id->s);
        if (r < 0)
            return r;
        memcpy(a.id.s, id->s, len + 1);
    }
    *out = a;
    return 0;
}

int tm2_netaddr_to_sockaddr(const tm2_netaddr *a, struct sockaddr *sa, size_t cap)
{
    if (!a || !sa)
        return TM2_EINVAL;
    if (tm2_netaddr_is_ipv4(a)) {
        struct sockaddr_in in4;
        if (cap < sizeof in4)
            return TM2_ENOSPC;
        memset(&in4, 0, sizeof in4);
        in4.sin_family = AF_INET;
        in4.sin_port = htons(a->port);
        memcpy(&in4.sin_addr, a->ip + 12, 4);
        memcpy(sa, &in4, sizeof in4);
    } else {
        struct sockaddr_in6 in6;
        if (cap < sizeof in6)
            return TM2_ENOSPC;
        memset(&in6, 0, sizeof in6);
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(a->port);
        memcpy(&in6.sin6_addr, a->ip, 16);
        memcpy(sa, &in6, sizeof in6);
    }
    return 0;
}

/* ---- classification (Go net.IP predicates and IPNet.Contains) -------------- */

bool tm2_netaddr_is_ipv4(const tm2_netaddr *a)
{
    return memcmp(a->ip, v4_prefix, 12) == 0;
}

bool tm2_netaddr_is_unspecified(const tm2_netaddr *a)
{
    static const uint8_t zero[16];
    return memcmp(a->ip, zero, 16) == 0 ||
           (tm2_netaddr_is_ipv4(a) && memcmp(a->ip + 12, zero, 4) == 0);
}

bool tm2_netaddr_is_loopback(const tm2_netaddr *a)
{
    static const uint8_t one[16] = {[15] = 1};
    if (tm2_netaddr_is_ipv4(a))
        return a->ip[12] == 127;
    return memcmp(a->ip, one, 16) == 0;
}

bool tm2_netaddr_is_local(const tm2_netaddr *a)
{
    return tm2_netaddr_is_loopback(a) || (tm2_netaddr_is_ipv4(a) && a->ip[12] == 0);
}

/* An IPv4 network only contains IPv4(-mapped) addresses and an IPv6 network
 * only contains the others, as with Go's IPNet.Contains. */
static bool in_net(const tm2_netaddr *a, const uint8_t *net, unsigned bits, bool v4)
{
    if (tm2_netaddr_is_ipv4(a) != v4)
        return false;
    const uint8_t *ip = v4 ? a->ip + 12 : a->ip;
    for (unsigned i = 0; bits; i++) {
        unsigned take = bits < 8 ? bits : 8;
        uint8_t mask = (uint8_t)(0xff00u >> take);
        if ((ip[i] & mask) != (net[i] & mask))
            return false;
        bits -= take;
    }
    return true;
}

bool tm2_netaddr_is_private(const tm2_netaddr *a)
{
    static const uint8_t rfc1918_10[] = {10}, rfc1918_172[] = {172, 16}, rfc1918_192[] = {192, 168};
    static const uint8_t rfc3927[] = {169, 254};
    static const uint8_t rfc4862[] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0};
    static const uint8_t rfc4193[] = {0xfc};
    static const uint8_t rfc4843[] = {0x20, 0x01, 0x00, 0x10};
    return in_net(a, rfc1918_10, 8, true) || in_net(a, rfc1918_172, 12, true) ||
           in_net(a, rfc1918_192, 16, true) || in_net(a, rfc3927, 16, true) ||
           in_net(a, rfc4862, 64, false) || in_net(a, rfc4193, 7, false) ||
           in_net(a, rfc4843, 28, false);
}

int tm2__netaddr_validate_place(const tm2_netaddr *a)
{
    static const uint8_t rfc3849[] = {0x20, 0x01, 0x0d, 0xb8};
    static const uint8_t bcast[] = {255, 255, 255, 255};
    if (tm2_netaddr_is_unspecified(a))
        return TM2_EUNSPEC;
    if (in_net(a, rfc3849, 32, false) || in_net(a, bcast, 32, true))
        return TM2_ERESERVED;
    return 0;
}

int tm2_netaddr_validate(const tm2_netaddr *a)
{
    if (!a)
        return TM2_EINVAL;
    if (strnlen(a->id.s, sizeof a->id.s) == sizeof a->id.s)
        return TM2_EID;
    int r = tm2_id_validate(a->id.s);
    if (r < 0)
        return r;
    return tm2__netaddr_validate_place(a);
}

bool tm2_netaddr_is_routable(const tm2_netaddr *a)
{
    return tm2_netaddr_validate(a) == 0 && !tm2_netaddr_is_private(a) && !tm2_netaddr_is_local(a);
}

bool tm2_netaddr_equal(const tm2_netaddr *a, const tm2_netaddr *b)
{
    return strncmp(a->id.s, b->id.s, sizeof a->id.s) == 0 && memcmp(a->ip, b->ip, 16) == 0 &&
           a->port == b->port;
}

bool tm2_netaddr_same(const tm2_netaddr *a, const tm2_netaddr *b)
{
    if (memcmp(a->ip, b->ip, 16) == 0 && a->port == b->port)
        return true;
    return a->id.s[0] && strncmp(a->id.s, b->id.s, sizeof a->id.s) == 0;
}
