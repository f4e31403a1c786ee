/* The inbound eviction choice (switch/evict.h) on peer sets read from the
 * input: up to 64 inbound peers, each with a network group from a small
 * pool (public IPv4 /16s, IPv6 /32s, the local group), a connection order,
 * a last-message time (often 0: never), a minimum round trip (often 0: not
 * measured; ties and values near UINT32_MAX too) and the persistent /
 * unconditional / leaving flags (each makes a peer no candidate), and the
 * protection parameters (groups, nearest peers, active peers, oldest
 * percent, out-of-range percents too). Connection orders are distinct, as
 * the switch's are.
 *
 * Checked: the victim, if any, is an index into the set naming an original
 * candidate (never persistent, unconditional or leaving); it is not
 * protected by any of the four rules, as a plain model of them computes;
 * its group has the most inbound peers (every peer counted) of the groups
 * that still have an unprotected candidate, and it is its group's youngest
 * unprotected candidate; -1 exactly when the model leaves no candidate;
 * the answer names the same peer when the same set is given again in the
 * same order and in the reverse order; the set is only reordered (the same
 * peers come back). */
#include <stdlib.h>
#include <string.h>

#include "switch/evict.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define MAX_PEERS 64
#define N_GROUPS 12

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t take(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static tm2_netaddr group_addr(unsigned g)
{
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    a.port = 26656;
    g %= N_GROUPS;
    if (g < 6) {                    /* IPv4: 8.8/16, 9.9/16, ... */
        a.ip[10] = a.ip[11] = 0xff;
        a.ip[12] = (uint8_t)(8 + g);
        a.ip[13] = (uint8_t)(8 + g);
        a.ip[14] = 1;
        a.ip[15] = 1;
    } else if (g < 10) {            /* IPv6 /32s */
        a.ip[0] = 0x2a;
        a.ip[1] = 0x01;
        a.ip[2] = (uint8_t)g;
        a.ip[15] = 1;
    } else if (g == 10) {
        a.ip[10] = a.ip[11] = 0xff;
        a.ip[12] = 127;
        a.ip[15] = 1;
    } else {
        a.ip[0] = 0xfd;
        a.ip[15] = 1;
    }
    return a;
}

typedef struct desc {
    tm2__evict_peer p;
    bool persistent, uncond, leaving;
} desc;

/* The protection rules, written plainly. prot[i] for d[i]. */
static void model(const desc *d, size_t n, const tm2__evict_params *par, bool *prot)
{
    bool cand[MAX_PEERS];
    for (size_t i = 0; i < n; i++) {
        cand[i] = d[i].p.candidate;
        prot[i] = false;
    }
    /* 1: groups in (rank, key) order, the oldest candidate of each of the
     * first protect_groups of them. */
    bool done[MAX_PEERS] = {false};
    for (uint32_t g = 0; g < par->protect_groups; g++) {
        long first = -1;   /* the smallest (rank, key) group not done */
        for (size_t i = 0; i < n; i++) {
            if (!cand[i] || done[i])
                continue;
            if (first < 0 || d[i].p.group_rank < d[first].p.group_rank ||
                (d[i].p.group_rank == d[first].p.group_rank &&
                 memcmp(d[i].p.group.b, d[first].p.group.b, TM2__GROUP_KEY_LEN) < 0))
                first = (long)i;
        }
        if (first < 0)
            break;
        long oldest = -1;
        for (size_t i = 0; i < n; i++) {
            if (!cand[i] || done[i] || !tm2__group_eq(&d[i].p.group, &d[first].p.group))
                continue;
            done[i] = true;
            if (oldest < 0 || d[i].p.seq < d[oldest].p.seq)
                oldest = (long)i;
        }
        prot[oldest] = true;
    }
    for (size_t i = 0; i < n; i++)
        if (prot[i])
            cand[i] = false;
    /* 2: the protect_latency smallest round trips (never 0), ties to the older. */
    for (uint32_t a = 0; a < par->protect_latency; a++) {
        long best = -1;
        for (size_t i = 0; i < n; i++) {
            if (!cand[i] || !d[i].p.min_rtt_ms)
                continue;
            if (best < 0 || d[i].p.min_rtt_ms < d[best].p.min_rtt_ms ||
                (d[i].p.min_rtt_ms == d[best].p.min_rtt_ms && d[i].p.seq < d[best].p.seq))
                best = (long)i;
        }
        if (best < 0)
            break;
        cand[best] = false;
        prot[best] = true;
    }
    /* 3: the protect_active most recent messages (never 0), ties to the older. */
    for (uint32_t a = 0; a < par->protect_active; a++) {
        long best = -1;
        for (size_t i = 0; i < n; i++) {
            if (!cand[i] || !d[i].p.last_msg_ms)
                continue;
            if (best < 0 || d[i].p.last_msg_ms > d[best].p.last_msg_ms ||
                (d[i].p.last_msg_ms == d[best].p.last_msg_ms && d[i].p.seq < d[best].p.seq))
                best = (long)i;
        }
        if (best < 0)
            break;
        cand[best] = false;
        prot[best] = true;
    }
    /* 4: the oldest pct percent of the rest. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += cand[i];
    uint32_t pct = par->protect_oldest_pct > 100 ? 100 : par->protect_oldest_pct;
    size_t keep = k * pct / 100;
    for (size_t j = 0; j < keep; j++) {
        long oldest = -1;
        for (size_t i = 0; i < n; i++)
            if (cand[i] && (oldest < 0 || d[i].p.seq < d[oldest].p.seq))
                oldest = (long)i;
        cand[oldest] = false;
        prot[oldest] = true;
    }
}

static size_t group_count(const desc *d, size_t n, const tm2__group_key *g)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += tm2__group_eq(&d[i].p.group, g);
    return c;
}

/* Runs the selection on a copy of d (reversed or not); returns the victim's
 * user index (its position in d) or -1. */
static long run(const desc *d, size_t n, const tm2__evict_params *par, bool reverse)
{
    tm2__evict_peer p[MAX_PEERS];
    for (size_t i = 0; i < n; i++)
        p[i] = d[reverse ? n - 1 - i : i].p;
    long v = tm2__evict_select(p, n, par);
    CHECK(v >= -1 && v < (long)n);
    /* Only reordered: every user index once, the same peer under it. */
    bool seen[MAX_PEERS] = {false};
    for (size_t i = 0; i < n; i++) {
        CHECK(p[i].user < n && !seen[p[i].user]);
        seen[p[i].user] = true;
        const tm2__evict_peer *o = &d[p[i].user].p;
        CHECK(p[i].seq == o->seq && p[i].last_msg_ms == o->last_msg_ms &&
              p[i].min_rtt_ms == o->min_rtt_ms &&
              p[i].group_rank == o->group_rank && tm2__group_eq(&p[i].group, &o->group));
        CHECK(!p[i].candidate || o->candidate);
    }
    if (v < 0)
        return -1;
    CHECK(p[v].candidate);
    return (long)p[v].user;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024)
        return 0;
    reader r = {data, size};
    uint8_t g0 = take(&r), g1 = take(&r), g2 = take(&r), g3 = take(&r), g4 = take(&r);
    tm2__evict_params par = {
        .protect_groups = g0 & 7,
        .protect_latency = g4 & 15,
        .protect_active = g1 & 15,
        .protect_oldest_pct = (g2 & 0x80) ? g2 : g2 % 101,
    };
    if (g0 & 0x80)
        par.protect_groups = UINT32_MAX;
    if (g1 & 0x80)
        par.protect_active = UINT32_MAX;
    if (g4 & 0x80)
        par.protect_latency = UINT32_MAX;
    /* Group ranks: a keyed hash in the switch; here from g3 (rank ties too). */
    uint64_t rank_of[N_GROUPS];
    for (unsigned g = 0; g < N_GROUPS; g++)
        rank_of[g] = (g3 & 1) ? (uint64_t)((g * 0x9e3779b9u + g3) % 5)
                              : (uint64_t)(g ^ g3) * 0x9e3779b97f4a7c15ull;

    desc d[MAX_PEERS];
    size_t n = 0;
    while (r.n > 0 && n < MAX_PEERS) {
        uint8_t a = take(&r), b = take(&r), c = take(&r), e = take(&r);
        desc *x = &d[n];
        memset(x, 0, sizeof *x);
        unsigned g = a % N_GROUPS;
        tm2_netaddr addr = group_addr(g);
        tm2__group_key_of(&addr, TM2__BY_NETGROUP, (a & 0x80) != 0 && g >= 10, &x->p.group);
        x->p.group_rank = rank_of[g];
        x->p.seq = ((uint64_t)b << 8) | n;        /* distinct, in any order */
        x->p.last_msg_ms = (c & 0x80) ? 0 : (uint64_t)(c & 0x1f) * 1000;
        /* 0 (not measured) from a quarter of the inputs and from e & 15 == 0;
         * small values tie often; a quarter sit at the top of the range. */
        x->p.min_rtt_ms = (e & 0xc0) == 0 ? 0
                          : (e & 0xc0) == 0xc0 ? UINT32_MAX - (e & 3u) : (uint32_t)(e & 15);
        x->persistent = (c & 0x60) == 0x20;
        x->uncond = (c & 0x60) == 0x40;
        x->leaving = (a & 0x70) == 0x70;
        x->p.candidate = !x->persistent && !x->uncond && !x->leaving;
        x->p.user = n;
        n++;
    }
    /* The same key of one group from two addresses (the local group with
     * group_local off) must rank alike, as the switch's keyed hash does. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (tm2__group_eq(&d[i].p.group, &d[j].p.group))
                d[i].p.group_rank = d[j].p.group_rank;

    bool prot[MAX_PEERS];
    model(d, n, &par, prot);

    long v = run(d, n, &par, false);
    CHECK(run(d, n, &par, false) == v);
    CHECK(run(d, n, &par, true) == v);

    /* What the model leaves. */
    bool any = false;
    size_t best_count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!d[i].p.candidate || prot[i])
            continue;
        any = true;
        size_t c = group_count(d, n, &d[i].p.group);
        if (c > best_count)
            best_count = c;
    }
    if (!any) {
        CHECK(v == -1);
        return 0;
    }
    CHECK(v >= 0);
    const desc *x = &d[v];
    CHECK(!x->persistent && !x->uncond && !x->leaving && !prot[v]);
    CHECK(group_count(d, n, &x->p.group) == best_count);
    for (size_t i = 0; i < n; i++) {
        if (!d[i].p.candidate || prot[i] || (size_t)v == i)
            continue;
        /* The youngest unprotected candidate of its group ... */
        if (tm2__group_eq(&d[i].p.group, &x->p.group))
            CHECK(d[i].p.seq < x->p.seq);
        /* ... and of the tied groups, the one whose youngest is youngest. */
        else if (group_count(d, n, &d[i].p.group) == best_count)
            CHECK(d[i].p.seq < x->p.seq);
    }
    return 0;
}
