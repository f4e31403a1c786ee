/* NodeInfo codec, validation and compatibility (WIRE.md sections 1.9, 5). */
#include "tm2p2p/node_info.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/amino.h"
#include "common/file.h"

/* Field numbers of NodeInfo, VersionInfo and NodeInfoOther. */
enum {
    NI_VERSIONS = 1, NI_NET_ADDRESS, NI_NETWORK, NI_SOFTWARE, NI_VERSION, NI_CHANNELS,
    NI_MONIKER, NI_OTHER,
    VI_NAME = 1, VI_VERSION, VI_OPTIONAL,
    OT_TX_INDEX = 1, OT_RPC_ADDRESS,
};

#define ADDR_BUF 128

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* ---- encoding -------------------------------------------------------------- */

static void put_string(tm2__amino_wr *w, uint32_t field, const char *s)
{
    s = str_or_empty(s);
    tm2__amino_put_bytes_field(w, field, s, strlen(s), false);
}

static void put_version_body(tm2__amino_wr *w, const tm2_version_info *vi)
{
    put_string(w, VI_NAME, vi->name);
    put_string(w, VI_VERSION, vi->version);
    tm2__amino_put_uvarint_field(w, VI_OPTIONAL, vi->optional ? 1 : 0);
}

static void put_other_body(tm2__amino_wr *w, const tm2_node_info *ni)
{
    put_string(w, OT_TX_INDEX, ni->tx_index);
    put_string(w, OT_RPC_ADDRESS, ni->rpc_address);
}

static void put_body(tm2__amino_wr *w, const tm2_node_info *ni, const char *addr, size_t addr_len)
{
    tm2__amino_wr c;
    for (size_t i = 0; i < ni->n_versions; i++) {
        /* Every list element is written, even an empty one ("0a 00"). */
        tm2__amino_wr_init(&c, NULL, 0);
        put_version_body(&c, &ni->versions[i]);
        tm2__amino_put_nested_header(w, NI_VERSIONS, c.len);
        put_version_body(w, &ni->versions[i]);
    }
    /* A non-nil pointer field is always written. */
    if (ni->has_net_address)
        tm2__amino_put_bytes_field(w, NI_NET_ADDRESS, addr, addr_len, true);
    put_string(w, NI_NETWORK, ni->network);
    put_string(w, NI_SOFTWARE, ni->software);
    put_string(w, NI_VERSION, ni->version);
    tm2__amino_put_bytes_field(w, NI_CHANNELS, ni->channels, ni->n_channels, false);
    put_string(w, NI_MONIKER, ni->moniker);
    /* A nested struct that encodes to nothing is omitted. */
    tm2__amino_wr_init(&c, NULL, 0);
    put_other_body(&c, ni);
    if (c.len) {
        tm2__amino_put_nested_header(w, NI_OTHER, c.len);
        put_other_body(w, ni);
    }
}

int tm2_node_info_encode(const tm2_node_info *ni, uint8_t *buf, size_t cap)
{
    if (!ni || (!buf && cap) || (!ni->versions && ni->n_versions) ||
        (!ni->channels && ni->n_channels))
        return TM2_EINVAL;
    char addr[ADDR_BUF];
    size_t addr_len = 0;
    if (ni->has_net_address) {
        int n = tm2_netaddr_format(&ni->net_address, addr, sizeof addr);
        if (n < 0)
            return n;
        addr_len = (size_t)n;
    }

    tm2__amino_wr w;
    tm2__amino_wr_init(&w, NULL, 0);
    put_body(&w, ni, addr, addr_len);
    if (w.err)
        return w.err;
    size_t body_len = w.len;
    size_t total = tm2__amino_uvarint_size(body_len) + body_len;
    if (body_len > TM2_NODE_INFO_MAX_SIZE || total > TM2_NODE_INFO_MAX_SIZE)
        return TM2_ETOOBIG;
    if (!buf)
        return (int)total;
    if (total > cap)
        return TM2_ENOSPC;

    tm2__amino_wr_init(&w, buf, cap);
    tm2__amino_put_uvarint(&w, body_len);
    put_body(&w, ni, addr, addr_len);
    if (w.err)
        return w.err;
    return (int)w.len;
}

/* ---- decoding -------------------------------------------------------------- *
 * Two passes over the body with the same parser: the first checks everything
 * and sizes the single allocation, the second fills it. */

struct dec {
    /* totals, from the first pass */
    size_t n_versions;
    size_t str_bytes;
    /* destination, second pass only (NULL on the first) */
    tm2_node_info *ni;
    tm2_version_info *vers;
    char *strs;
    size_t str_used;
    const char *empty;
};

/* Stores a string; a C string cannot hold a NUL, so one inside the value is a
 * decode error rather than a silent truncation. */
static int take_string(struct dec *d, const uint8_t *p, size_t n, const char **out)
{
    if (memchr(p, 0, n))
        return TM2_EDECODE;
    if (!d->ni) {
        d->str_bytes += n + 1;
        return 0;
    }
    char *s = d->strs + d->str_used;
    memcpy(s, p, n);
    s[n] = '\0';
    d->str_used += n + 1;
    *out = s;
    return 0;
}

/* Reads the next key of a struct whose fields are 1..max_field and checks the
 * reference's ordering rule: strictly ascending, except that repeat_field may
 * repeat while it is the latest field seen. */
static int next_key(tm2__amino_rd *r, uint32_t *last, uint32_t max_field, uint32_t repeat_field,
                    uint32_t *field, unsigned *wt)
{
    int rc = tm2__amino_key(r, field, wt);
    if (rc)
        return rc;
    if (*field > max_field)
        return TM2_EFIELD;
    if (*field < *last || (*field == *last && *field != repeat_field))
        return TM2_EFIELD;
    *last = *field;
    return 0;
}

static int expect_wt(unsigned wt, unsigned want)
{
    return wt == want ? 0 : TM2_EWIRETYPE;
}

static int dec_version(struct dec *d, const uint8_t *p, size_t n, tm2_version_info *vi)
{
    tm2__amino_rd r;
    uint32_t last = 0, f;
    unsigned wt;
    const uint8_t *s;
    size_t sl;
    bool opt;
    int rc;
    if (vi) {
        vi->name = d->empty;
        vi->version = d->empty;
        vi->optional = false;
    }
    tm2__amino_rd_init(&r, p, n);
    while (!tm2__amino_rd_done(&r)) {
        if ((rc = next_key(&r, &last, VI_OPTIONAL, 0, &f, &wt)))
            return rc;
        switch (f) {
        case VI_NAME:
        case VI_VERSION:
            if ((rc = expect_wt(wt, TM2_WT_BYTES)) || (rc = tm2__amino_bytes(&r, &s, &sl)))
                return rc;
            if ((rc = take_string(d, s, sl, vi ? (f == VI_NAME ? &vi->name : &vi->version) : NULL)))
                return rc;
            break;
        default: /* VI_OPTIONAL */
            if ((rc = expect_wt(wt, TM2_WT_VARINT)) || (rc = tm2__amino_bool(&r, &opt)))
                return rc;
            if (vi)
                vi->optional = opt;
            break;
        }
    }
    return 0;
}

static int dec_other(struct dec *d, const uint8_t *p, size_t n)
{
    tm2__amino_rd r;
    uint32_t last = 0, f;
    unsigned wt;
    const uint8_t *s;
    size_t sl;
    int rc;
    tm2__amino_rd_init(&r, p, n);
    while (!tm2__amino_rd_done(&r)) {
        if ((rc = next_key(&r, &last, OT_RPC_ADDRESS, 0, &f, &wt)))
            return rc;
        if ((rc = expect_wt(wt, TM2_WT_BYTES)) || (rc = tm2__amino_bytes(&r, &s, &sl)))
            return rc;
        const char **dst = NULL;
        if (d->ni)
            dst = f == OT_TX_INDEX ? &d->ni->tx_index : &d->ni->rpc_address;
        if ((rc = take_string(d, s, sl, dst)))
            return rc;
    }
    return 0;
}

/* The address is parsed on both passes (it is cheap and keeps the passes
 * identical); host names are refused, so no DNS happens here. */
static int dec_address(struct dec *d, const uint8_t *p, size_t n)
{
    if (memchr(p, 0, n))
        return TM2_EADDR;
    char small[ADDR_BUF];
    char *s = n < sizeof small ? small : malloc(n + 1);
    if (!s)
        return TM2_ENOMEM;
    memcpy(s, p, n);
    s[n] = '\0';
    tm2_netaddr a;
    int rc = tm2_netaddr_parse(s, 0, &a);
    if (s != small)
        free(s);
    if (rc)
        return rc;
    if (d->ni) {
        d->ni->has_net_address = true;
        d->ni->net_address = a;
    }
    return 0;
}

static int dec_body(struct dec *d, const uint8_t *body, size_t len)
{
    tm2__amino_rd r;
    uint32_t last = 0, f;
    unsigned wt;
    const uint8_t *p;
    size_t n;
    int rc;
    tm2_node_info *ni = d->ni;
    if (ni) {
        ni->versions = d->vers;
        ni->n_versions = 0;
        ni->has_net_address = false;
        memset(&ni->net_address, 0, sizeof ni->net_address);
        ni->network = ni->software = ni->version = ni->moniker = d->empty;
        ni->tx_index = ni->rpc_address = d->empty;
        ni->channels = (const uint8_t *)d->empty;
        ni->n_channels = 0;
    }
    tm2__amino_rd_init(&r, body, len);
    while (!tm2__amino_rd_done(&r)) {
        if ((rc = next_key(&r, &last, NI_OTHER, NI_VERSIONS, &f, &wt)))
            return rc;
        /* Every NodeInfo field is length-delimited. */
        if ((rc = expect_wt(wt, TM2_WT_BYTES)) || (rc = tm2__amino_bytes(&r, &p, &n)))
            return rc;
        switch (f) {
        case NI_VERSIONS:
            if (ni) {
                rc = dec_version(d, p, n, &d->vers[ni->n_versions]);
                ni->n_versions++;
            } else {
                rc = dec_version(d, p, n, NULL);
                d->n_versions++;
            }
            break;
        case NI_NET_ADDRESS:
            rc = dec_address(d, p, n);
            break;
        case NI_NETWORK:
            rc = take_string(d, p, n, ni ? &ni->network : NULL);
            break;
        case NI_SOFTWARE:
            rc = take_string(d, p, n, ni ? &ni->software : NULL);
            break;
        case NI_VERSION:
            rc = take_string(d, p, n, ni ? &ni->version : NULL);
            break;
        case NI_CHANNELS:
            if (ni) {
                uint8_t *c = (uint8_t *)d->strs + d->str_used;
                memcpy(c, p, n);
                d->str_used += n;
                ni->channels = c;
                ni->n_channels = n;
            } else {
                d->str_bytes += n;
            }
            break;
        case NI_MONIKER:
            rc = take_string(d, p, n, ni ? &ni->moniker : NULL);
            break;
        default: /* NI_OTHER */
            rc = dec_other(d, p, n);
            break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

int tm2_node_info_decode(const uint8_t *buf, size_t len, tm2_node_info **out, size_t *consumed)
{
    if (!out || !consumed || (!buf && len))
        return TM2_EINVAL;
    *out = NULL;
    if (len == 0)
        return TM2_EAGAIN;
    const uint8_t *body;
    size_t body_len, used;
    int rc = tm2__amino_sized(buf, len, TM2_NODE_INFO_MAX_SIZE, &body, &body_len, &used);
    if (rc)
        return rc;

    struct dec d;
    memset(&d, 0, sizeof d);
    if ((rc = dec_body(&d, body, body_len)))
        return rc;

    /* [tm2_node_info][versions][channels and strings, then one "" for absent
     * strings]. The version array follows a struct of pointers, so it is
     * aligned. */
    size_t vers_bytes = d.n_versions * sizeof(tm2_version_info);
    size_t total = sizeof(tm2_node_info) + vers_bytes + d.str_bytes + 1;
    uint8_t *block = malloc(total);
    if (!block)
        return TM2_ENOMEM;
    tm2_node_info *ni = (tm2_node_info *)(void *)block;
    d.ni = ni;
    d.vers = (tm2_version_info *)(void *)(block + sizeof *ni);
    d.strs = (char *)block + sizeof *ni + vers_bytes;
    d.str_used = 0;
    d.strs[d.str_bytes] = '\0';
    d.empty = d.strs + d.str_bytes;
    rc = dec_body(&d, body, body_len);
    if (rc) {
        /* Not reachable: the first pass accepted the same bytes. */
        free(block);
        return rc;
    }
    *out = ni;
    *consumed = used;
    return 0;
}

void tm2_node_info_free(tm2_node_info *ni)
{
    free(ni);
}

/* ---- validation ------------------------------------------------------------ */

#define fail tm2__fail

/* The reference's IsASCIIText (non-empty, bytes 0x20..0x7e) and
 * ASCIITrim(s) != "" (something besides spaces). */
static bool ascii_text(const char *s)
{
    if (!*s)
        return false;
    bool other = false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c > 0x7e)
            return false;
        if (c != ' ')
            other = true;
    }
    return other;
}

int tm2_node_info_validate(const tm2_node_info *ni, char *why, size_t why_len)
{
    if (!ni)
        return TM2_EINVAL;
    if (why && why_len)
        why[0] = '\0';

    /* 1. The address must be there at all. */
    if (!ni->has_net_address)
        return fail(TM2_ENODEINFO, why, why_len, "net address missing");

    /* 2. "<id>@<dialstring>" must parse again (unspecified IPs pass). The ID
     * is written even when empty, so an empty ID fails here. */
    char dial[ADDR_BUF], s[ADDR_BUF + TM2_ID_LEN + 2];
    int n = tm2_netaddr_dialstring(&ni->net_address, dial, sizeof dial);
    if (n < 0)
        return fail(TM2_ENODEINFO, why, why_len, "invalid net address: %s", tm2_strerror(n));
    snprintf(s, sizeof s, "%.*s@%s", (int)strnlen(ni->net_address.id.s, TM2_ID_LEN + 1),
             ni->net_address.id.s, dial);
    tm2_netaddr tmp;
    int rc = tm2_netaddr_parse(s, 0, &tmp);
    if (rc)
        return fail(TM2_ENODEINFO, why, why_len, "invalid net address %s: %s", s,
                    tm2_strerror(rc));

    /* 3. Software version, when set. */
    const char *version = str_or_empty(ni->version);
    if (*version && !ascii_text(version))
        return fail(TM2_ENODEINFO, why, why_len,
                    "invalid version: not printable ASCII or only spaces");

    /* 4. Channels: bounded and distinct. */
    if (ni->n_channels > TM2_NODE_INFO_MAX_CHANNELS)
        return fail(TM2_ENODEINFO, why, why_len, "too many channels: %zu > %d", ni->n_channels,
                    TM2_NODE_INFO_MAX_CHANNELS);
    if (ni->n_channels && !ni->channels)
        return TM2_EINVAL;
    bool seen[256] = {false};
    for (size_t i = 0; i < ni->n_channels; i++) {
        if (seen[ni->channels[i]])
            return fail(TM2_ENODEINFO, why, why_len, "duplicate channel 0x%02x", ni->channels[i]);
        seen[ni->channels[i]] = true;
    }

    /* 5. Moniker: required. */
    if (!ascii_text(str_or_empty(ni->moniker)))
        return fail(TM2_ENODEINFO, why, why_len,
                    "invalid moniker: empty, not printable ASCII or only spaces");

    /* 6. RPC address, when set. */
    const char *rpc = str_or_empty(ni->rpc_address);
    if (*rpc && !ascii_text(rpc))
        return fail(TM2_ENODEINFO, why, why_len,
                    "invalid RPC address: not printable ASCII or only spaces");
    return 0;
}

/* ---- compatibility ---------------------------------------------------------- */

static size_t digits(const char *s)
{
    size_t i = 0;
    while (s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

/* A number of MAJOR/MINOR/PATCH: digits, no leading zero unless just "0". */
static size_t semver_num(const char *s)
{
    size_t n = digits(s);
    if (n == 0 || (s[0] == '0' && n > 1))
        return 0;
    return n;
}

static bool ident_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* Dot-separated non-empty identifiers of [0-9A-Za-z-] up to stop or the end;
 * in a prerelease, all-digit identifiers may not have leading zeros.
 * Returns the length consumed, 0 if malformed. */
static size_t semver_idents(const char *s, char stop, bool prerelease)
{
    size_t i = 0, start = 0;
    for (;; i++) {
        char c = s[i];
        if (c == '\0' || c == stop || c == '.') {
            size_t len = i - start;
            if (len == 0)
                return 0;
            if (prerelease && s[start] == '0' && len > 1 && digits(s + start) == len)
                return 0;
            if (c != '.')
                return i;
            start = i + 1;
        } else if (!ident_char(c)) {
            return 0;
        }
    }
}

/* Length of the "vMAJOR" prefix of a valid semantic version in the rules of
 * golang.org/x/mod/semver (leading "v"; vMAJOR and vMAJOR.MINOR accepted as
 * short forms, without suffixes; otherwise vMAJOR.MINOR.PATCH, optional
 * -PRERELEASE, optional +BUILD), or 0 when v is not valid. This is what the
 * reference compares: Major(MajorMinor(v)), "" for invalid strings. */
static size_t semver_major_len(const char *v)
{
    if (v[0] != 'v')
        return 0;
    size_t major = semver_num(v + 1);
    if (!major)
        return 0;
    const char *p = v + 1 + major;
    for (int part = 0; part < 2; part++) {
        if (*p == '\0')
            return 1 + major; /* short form */
        if (*p != '.')
            return 0;
        size_t n = semver_num(p + 1);
        if (!n)
            return 0;
        p += 1 + n;
    }
    if (*p == '-') {
        size_t n = semver_idents(p + 1, '+', true);
        if (!n)
            return 0;
        p += 1 + n;
    }
    if (*p == '+') {
        size_t n = semver_idents(p + 1, '\0', false);
        if (!n)
            return 0;
        p += 1 + n;
    }
    return *p == '\0' ? 1 + major : 0;
}

static bool same_major(const char *a, const char *b)
{
    size_t la = semver_major_len(a), lb = semver_major_len(b);
    return la == lb && memcmp(a, b, la) == 0;
}

/* The reference builds a map by name, so with duplicate names the last entry
 * of a set wins. */
static const tm2_version_info *find_version(const tm2_node_info *ni, const char *name)
{
    const tm2_version_info *found = NULL;
    for (size_t i = 0; i < ni->n_versions; i++)
        if (strcmp(str_or_empty(ni->versions[i].name), name) == 0)
            found = &ni->versions[i];
    return found;
}

static int check_versions(const tm2_node_info *ours, const tm2_node_info *theirs, char *why,
                          size_t why_len)
{
    /* Each name once: at its last occurrence in our set, then the names only
     * they have, in their order. */
    for (size_t i = 0; i < ours->n_versions; i++) {
        const char *name = str_or_empty(ours->versions[i].name);
        const tm2_version_info *o = find_version(ours, name);
        if (o != &ours->versions[i])
            continue;
        const tm2_version_info *t = find_version(theirs, name);
        if (!t) {
            if (!o->optional)
                return fail(TM2_EINCOMPAT, why, why_len, "our version set requires %s %s", name,
                            str_or_empty(o->version));
            continue;
        }
        if (!same_major(str_or_empty(o->version), str_or_empty(t->version)))
            return fail(TM2_EINCOMPAT, why, why_len,
                        "version of %s not compatible: ours %s, theirs %s", name,
                        str_or_empty(o->version), str_or_empty(t->version));
    }
    for (size_t i = 0; i < theirs->n_versions; i++) {
        const char *name = str_or_empty(theirs->versions[i].name);
        const tm2_version_info *t = find_version(theirs, name);
        if (t != &theirs->versions[i] || find_version(ours, name))
            continue;
        if (!t->optional)
            return fail(TM2_EINCOMPAT, why, why_len, "their version set requires %s %s", name,
                        str_or_empty(t->version));
    }
    return 0;
}

int tm2_node_info_compatible(const tm2_node_info *ours, const tm2_node_info *theirs, char *why,
                             size_t why_len)
{
    if (!ours || !theirs || (!ours->versions && ours->n_versions) ||
        (!theirs->versions && theirs->n_versions) || (!ours->channels && ours->n_channels) ||
        (!theirs->channels && theirs->n_channels))
        return TM2_EINVAL;
    if (why && why_len)
        why[0] = '\0';

    int rc = check_versions(ours, theirs, why, why_len);
    if (rc)
        return rc;

    if (strcmp(str_or_empty(ours->network), str_or_empty(theirs->network)) != 0)
        return fail(TM2_EINCOMPAT, why, why_len, "different network: ours %s, theirs %s",
                    str_or_empty(ours->network), str_or_empty(theirs->network));

    for (size_t i = 0; i < ours->n_channels; i++)
        if (tm2_node_info_has_channel(theirs, ours->channels[i]))
            return 0;
    return fail(TM2_EINCOMPAT, why, why_len, "no common channel");
}

bool tm2_node_info_has_channel(const tm2_node_info *ni, uint8_t ch)
{
    if (!ni || !ni->channels)
        return false;
    return memchr(ni->channels, ch, ni->n_channels) != NULL;
}
