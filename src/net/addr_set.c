/* The transport's duplicate set; see addr_set.h. */
#include "net/addr_set.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "tm2p2p/error.h"

#define MIN_SLOTS 16u

static size_t home(const tm2__addr_set *s, const uint8_t ip[16], uint16_t port)
{
    uint8_t in[18], out[crypto_shorthash_BYTES];
    memcpy(in, ip, 16);
    in[16] = (uint8_t)(port >> 8);
    in[17] = (uint8_t)port;
    crypto_shorthash(out, in, sizeof in, s->key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return (size_t)h & s->mask;
}

int tm2__addr_set_init(tm2__addr_set *s, const uint8_t key[16])
{
    memset(s, 0, sizeof *s);
    if (key)
        memcpy(s->key, key, sizeof s->key);
    return 0;
}

void tm2__addr_set_free(tm2__addr_set *s)
{
    free(s->slots);
    s->slots = NULL;
    s->mask = 0;
    s->n = 0;
}

tm2__addr_key *tm2__addr_set_find(const tm2__addr_set *s, const uint8_t ip[16], uint16_t port)
{
    if (!s->slots)
        return NULL;
    for (size_t i = home(s, ip, port);; i = (i + 1) & s->mask) {
        tm2__addr_key *k = &s->slots[i];
        if (!k->used)
            return NULL;
        if (k->port == port && memcmp(k->ip, ip, 16) == 0)
            return k;
    }
}

static void place(tm2__addr_set *s, const tm2__addr_key *k)
{
    size_t i = home(s, k->ip, k->port);
    while (s->slots[i].used)
        i = (i + 1) & s->mask;
    s->slots[i] = *k;
}

static int grow(tm2__addr_set *s)
{
    size_t old = s->slots ? s->mask + 1 : 0, cap = old ? old * 2 : MIN_SLOTS;
    if (cap > SIZE_MAX / sizeof *s->slots)
        return TM2_ENOMEM;
    tm2__addr_key *ns = calloc(cap, sizeof *ns), *os = s->slots;
    if (!ns)
        return TM2_ENOMEM;
    s->slots = ns;
    s->mask = cap - 1;
    for (size_t i = 0; i < old; i++)
        if (os[i].used)
            place(s, &os[i]);
    free(os);
    return 0;
}

int tm2__addr_set_add(tm2__addr_set *s, const uint8_t ip[16], uint16_t port)
{
    if (!s->slots || (s->n + 1) * 2 > s->mask + 1) {
        int r = grow(s);
        if (r)
            return r;
    }
    tm2__addr_key k = {.port = port, .used = true};
    memcpy(k.ip, ip, 16);
    place(s, &k);
    s->n++;
    return 0;
}

void tm2__addr_set_del(tm2__addr_set *s, tm2__addr_key *k)
{
    size_t i = (size_t)(k - s->slots);
    s->slots[i].used = false;
    s->n--;
    /* Backward shift: move up each later entry of the run whose home slot
     * is not cyclically in (i, j]. */
    for (size_t j = (i + 1) & s->mask; s->slots[j].used; j = (j + 1) & s->mask) {
        size_t h = home(s, s->slots[j].ip, s->slots[j].port);
        bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (stays)
            continue;
        s->slots[i] = s->slots[j];
        s->slots[j].used = false;
        i = j;
    }
}
