/* Eviction choice (switch/evict.h). */
#include "switch/evict.h"

#include <stdlib.h>
#include <string.h>

static int by_rank_then_age(const void *a, const void *b)
{
    const tm2__evict_peer *x = a, *y = b;
    if (x->group_rank != y->group_rank)
        return x->group_rank < y->group_rank ? -1 : 1;
    int c = memcmp(x->group.b, y->group.b, sizeof x->group.b);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Smallest round trip first, unmeasured (0) last; ties to the older. */
static int by_min_rtt(const void *a, const void *b)
{
    const tm2__evict_peer *x = a, *y = b;
    if (x->min_rtt_ms != y->min_rtt_ms) {
        if (!x->min_rtt_ms || !y->min_rtt_ms)
            return x->min_rtt_ms ? -1 : 1;
        return x->min_rtt_ms < y->min_rtt_ms ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_recent_msg(const void *a, const void *b)
{
    const tm2__evict_peer *x = a, *y = b;
    if (x->last_msg_ms != y->last_msg_ms)
        return x->last_msg_ms > y->last_msg_ms ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_group_then_age(const void *a, const void *b)
{
    const tm2__evict_peer *x = a, *y = b;
    int c = memcmp(x->group.b, y->group.b, sizeof x->group.b);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_age(const void *a, const void *b)
{
    const tm2__evict_peer *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Moves the candidates to the front; returns how many there are. */
static size_t candidates_first(tm2__evict_peer *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i].candidate) {
            tm2__evict_peer t = p[k];
            p[k] = p[i];
            p[i] = t;
            k++;
        }
    }
    return k;
}

long tm2__evict_select(tm2__evict_peer *p, size_t n, const tm2__evict_params *params)
{
    size_t k = candidates_first(p, n);
    if (!k)
        return -1;

    /* 1. One peer (the oldest) of each of the first protect_groups groups. */
    qsort(p, k, sizeof *p, by_rank_then_age);
    uint32_t groups = 0;
    for (size_t i = 0; i < k && groups < params->protect_groups; i++) {
        if (i > 0 && tm2__group_eq(&p[i].group, &p[i - 1].group) &&
            p[i].group_rank == p[i - 1].group_rank)
            continue;
        p[i].candidate = false;
        groups++;
    }
    k = candidates_first(p, k);

    /* 2. The nearest. */
    qsort(p, k, sizeof *p, by_min_rtt);
    for (size_t i = 0; i < k && i < params->protect_latency && p[i].min_rtt_ms; i++)
        p[i].candidate = false;
    k = candidates_first(p, k);

    /* 3. The most recently active. */
    qsort(p, k, sizeof *p, by_recent_msg);
    for (size_t i = 0; i < k && i < params->protect_active && p[i].last_msg_ms; i++)
        p[i].candidate = false;
    k = candidates_first(p, k);

    /* 4. The longest connected share of the rest. */
    qsort(p, k, sizeof *p, by_age);
    uint32_t pct = params->protect_oldest_pct > 100 ? 100 : params->protect_oldest_pct;
    size_t keep = k * pct / 100;
    for (size_t i = 0; i < keep; i++)
        p[i].candidate = false;
    k = candidates_first(p, k);
    if (!k)
        return -1;

    /* 5. The youngest candidate of the group with the most connections:
     * every peer sorted by group, one pass over the runs. */
    qsort(p, n, sizeof *p, by_group_then_age);
    long best = -1;
    size_t best_count = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        long young = -1;
        while (j < n && tm2__group_eq(&p[j].group, &p[i].group)) {
            if (p[j].candidate)
                young = (long)j;   /* sorted by age: the last one is the youngest */
            j++;
        }
        size_t count = j - i;
        if (young >= 0 && (best < 0 || count > best_count ||
                           (count == best_count && p[young].seq > p[best].seq))) {
            best = young;
            best_count = count;
        }
        i = j;
    }
    return best;
}
