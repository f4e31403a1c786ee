#include "crawl/allow.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tm2p2p/error.h"

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool is_v4(const uint8_t ip[16]) { return memcmp(ip, v4_prefix, 12) == 0; }

static void why_set(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void why_set(char *why, size_t len, const char *fmt, ...)
{
    if (!why || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
}

/* Copies the trimmed text [s, s+n) into buf (cap bytes); false if too long. */
static bool copy_trim(const char *s, size_t n, char *buf, size_t cap)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= cap)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return true;
}

int crawl_cidr_parse(const char *s, crawl_cidr *out, char *why, size_t why_len)
{
    if (!s || !out) {
        why_set(why, why_len, "%s", "no block given");
        return TM2_EINVAL;
    }
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hn = slash ? (size_t)(slash - s) : strlen(s);
    if (hn == 0 || hn >= sizeof host) {
        why_set(why, why_len, "'%s' is not an IP address or CIDR block", s);
        return TM2_EINVAL;
    }
    memcpy(host, s, hn);
    host[hn] = '\0';
    crawl_cidr c;
    memset(&c, 0, sizeof c);
    unsigned max;
    uint8_t a4[4];
    if (inet_pton(AF_INET, host, a4) == 1) {
        memcpy(c.ip, v4_prefix, 12);
        memcpy(c.ip + 12, a4, 4);
        c.v4 = true;
        max = 32;
    } else if (strchr(host, ':') && !strchr(host, '%') && inet_pton(AF_INET6, host, c.ip) == 1) {
        max = 128;
    } else {
        why_set(why, why_len, "'%s' is not an IP address or CIDR block", s);
        return TM2_EINVAL;
    }
    unsigned bits = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3) {
            why_set(why, why_len, "'%s': bad prefix length", s);
            return TM2_EINVAL;
        }
        bits = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9') {
                why_set(why, why_len, "'%s': bad prefix length", s);
                return TM2_EINVAL;
            }
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max || (slash[1] == '0' && slash[2] != '\0')) {
            why_set(why, why_len, "'%s': bad prefix length", s);
            return TM2_EINVAL;
        }
    }
    c.bits = (uint8_t)(c.v4 ? bits + 96 : bits);
    /* Host bits must be zero. */
    for (unsigned i = c.bits; i < 128; i++)
        if (c.ip[i / 8] & (0x80u >> (i % 8))) {
            why_set(why, why_len, "'%s': address has bits set beyond the prefix", s);
            return TM2_EINVAL;
        }
    *out = c;
    return 0;
}

int crawl_cidr_format(const crawl_cidr *c, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    unsigned bits = c->bits;
    if (c->v4) {
        inet_ntop(AF_INET, c->ip + 12, host, sizeof host);
        bits -= 96;
    } else {
        inet_ntop(AF_INET6, c->ip, host, sizeof host);
    }
    int n = snprintf(buf, cap, "%s/%u", host, bits);
    return n < 0 || (size_t)n >= cap ? TM2_ENOSPC : n;
}

bool crawl_cidr_contains(const crawl_cidr *c, const uint8_t ip[16])
{
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->ip, ip, full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (c->ip[full] & mask) == (ip[full] & mask);
}

void crawl_allow_default(crawl_allow *a)
{
    memset(a, 0, sizeof *a);
    a->public_ok = true;
}

int crawl_allow_parse(const char *list, crawl_allow *out, char *why, size_t why_len)
{
    if (!list) {
        why_set(why, why_len, "%s", "empty list");
        return TM2_EINVAL;
    }
    crawl_allow a;
    memset(&a, 0, sizeof a);
    const char *s = list;
    for (;;) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char item[80];
        if (!copy_trim(s, n, item, sizeof item)) {
            why_set(why, why_len, "%s", "an entry is too long");
            return TM2_EINVAL;
        }
        if (!item[0]) {
            why_set(why, why_len, "%s", "empty entry");
            return TM2_EINVAL;
        }
        if (!strcmp(item, "public")) {
            a.public_ok = true;
        } else {
            if (a.n == CRAWL_ALLOW_MAX) {
                why_set(why, why_len, "%s", "too many blocks");
                return TM2_EINVAL;
            }
            int r = crawl_cidr_parse(item, &a.cidrs[a.n], why, why_len);
            if (r)
                return r;
            a.n++;
        }
        if (!e)
            break;
        s = e + 1;
    }
    *out = a;
    return 0;
}

typedef struct range4 {
    uint8_t a, b, c, d;
    uint8_t bits;
} range4;

/* Special-purpose IPv4 ranges (RFC 6890 and friends). */
static const range4 not_public4[] = {
    {0, 0, 0, 0, 8},       {10, 0, 0, 0, 8},     {100, 64, 0, 0, 10},  {127, 0, 0, 0, 8},
    {169, 254, 0, 0, 16},  {172, 16, 0, 0, 12},  {192, 0, 0, 0, 24},   {192, 0, 2, 0, 24},
    {192, 88, 99, 0, 24},  {192, 168, 0, 0, 16}, {198, 18, 0, 0, 15},  {198, 51, 100, 0, 24},
    {203, 0, 113, 0, 24},  {224, 0, 0, 0, 4},    {240, 0, 0, 0, 4},
};

static bool in4(const uint8_t ip4[4], const range4 *r)
{
    uint32_t v = (uint32_t)ip4[0] << 24 | (uint32_t)ip4[1] << 16 | (uint32_t)ip4[2] << 8 | ip4[3];
    uint32_t n = (uint32_t)r->a << 24 | (uint32_t)r->b << 16 | (uint32_t)r->c << 8 | r->d;
    uint32_t mask = r->bits ? 0xffffffffu << (32 - r->bits) : 0;
    return (v & mask) == (n & mask);
}

bool crawl_ip_is_public(const uint8_t ip[16])
{
    if (is_v4(ip)) {
        for (size_t i = 0; i < sizeof not_public4 / sizeof not_public4[0]; i++)
            if (in4(ip + 12, &not_public4[i]))
                return false;
        return true;
    }
    if ((ip[0] & 0xe0) != 0x20)                            /* 2000::/3 */
        return false;
    if (ip[0] == 0x20 && ip[1] == 0x01 && ip[2] < 0x02)   /* 2001::/23 */
        return false;
    if (ip[0] == 0x20 && ip[1] == 0x01 && ip[2] == 0x0d && ip[3] == 0xb8)   /* 2001:db8::/32 */
        return false;
    if (ip[0] == 0x20 && ip[1] == 0x02)                    /* 2002::/16 */
        return false;
    return true;
}

static bool never(const uint8_t ip[16])
{
    static const uint8_t zero[16];
    if (memcmp(ip, zero, 16) == 0)
        return true;                                       /* :: */
    if (is_v4(ip)) {
        const uint8_t *v = ip + 12;
        if (v[0] == 0 && v[1] == 0 && v[2] == 0 && v[3] == 0)
            return true;                                   /* 0.0.0.0 */
        if (v[0] == 255 && v[1] == 255 && v[2] == 255 && v[3] == 255)
            return true;                                   /* broadcast */
        if ((v[0] & 0xf0) == 0xe0)
            return true;                                   /* 224/4 */
        return false;
    }
    return ip[0] == 0xff;                                  /* ff00::/8 */
}

bool crawl_allow_ip(const crawl_allow *a, const uint8_t ip[16])
{
    if (!a || never(ip))
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (crawl_cidr_contains(&a->cidrs[i], ip))
            return true;
    return a->public_ok && crawl_ip_is_public(ip);
}

bool crawl_allow_addr(const crawl_allow *a, const tm2_netaddr *addr)
{
    return addr && addr->port != 0 && crawl_allow_ip(a, addr->ip);
}

int crawl_allow_format(const crawl_allow *a, char *buf, size_t cap)
{
    size_t len = 0;
    if (!cap)
        return TM2_ENOSPC;
    buf[0] = '\0';
    if (a->public_ok) {
        int n = snprintf(buf, cap, "public");
        if (n < 0 || (size_t)n >= cap)
            return TM2_ENOSPC;
        len = (size_t)n;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (len) {
            if (len + 1 >= cap)
                return TM2_ENOSPC;
            buf[len++] = ',';
            buf[len] = '\0';
        }
        int n = crawl_cidr_format(&a->cidrs[i], buf + len, cap - len);
        if (n < 0)
            return n;
        len += (size_t)n;
    }
    return (int)len;
}
