#include "crawl/select.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct item {
    size_t idx;
    uint64_t subnet;
    uint32_t key;       /* random order within a subnet */
    uint32_t gkey;      /* random order of the subnets */
    size_t rank;        /* position within its subnet */
} item;

uint64_t crawl_subnet_of(const tm2_netaddr *a)
{
    if (tm2_netaddr_is_ipv4(a))
        return 1ull << 32 | (uint64_t)a->ip[12] << 8 | a->ip[13];
    return 2ull << 32 | (uint64_t)a->ip[0] << 24 | (uint64_t)a->ip[1] << 16 |
           (uint64_t)a->ip[2] << 8 | a->ip[3];
}

static uint32_t sodium_rand(void *user, uint32_t n)
{
    (void)user;
    return randombytes_uniform(n);
}

static int by_subnet(const void *pa, const void *pb)
{
    const item *a = pa, *b = pb;
    if (a->subnet != b->subnet)
        return a->subnet < b->subnet ? -1 : 1;
    return a->key < b->key ? -1 : a->key > b->key;
}

static int by_rank(const void *pa, const void *pb)
{
    const item *a = pa, *b = pb;
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->gkey != b->gkey)
        return a->gkey < b->gkey ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

size_t crawl_select(const tm2_netaddr *cands, size_t n, size_t max, size_t *out,
                    crawl_rand_fn rnd, void *rnd_user)
{
    if (!n || !max || !cands || !out)
        return 0;
    if (!rnd)
        rnd = sodium_rand;
    item *it = malloc(n * sizeof *it);
    if (!it)
        return 0;
    for (size_t i = 0; i < n; i++) {
        it[i].idx = i;
        it[i].subnet = crawl_subnet_of(&cands[i]);
        it[i].key = rnd(rnd_user, UINT32_MAX);
    }
    qsort(it, n, sizeof *it, by_subnet);
    /* Rank within the subnet, and one random key per subnet. */
    uint32_t g = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || it[i].subnet != it[i - 1].subnet) {
            it[i].rank = 0;
            g = rnd(rnd_user, UINT32_MAX);
        } else {
            it[i].rank = it[i - 1].rank + 1;
        }
        it[i].gkey = g;
    }
    qsort(it, n, sizeof *it, by_rank);
    size_t k = 0;
    for (size_t i = 0; i < n && k < max; i++) {
        const tm2_id *id = &cands[it[i].idx].id;
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = strcmp(cands[out[j]].id.s, id->s) == 0;
        if (!dup)
            out[k++] = it[i].idx;
    }
    free(it);
    return k;
}
