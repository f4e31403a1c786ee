/* The switch's peer set and the ID index under it. */
#include "switch/peer_set.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "tm2p2p/error.h"

/* value + 1 so that a zeroed slot is empty; h is the low half of the hash,
 * which gives the home slot (tables stay below 2^32 slots) and a cheap
 * filter before the string comparison. */
struct tm2__idmap_slot {
    uint32_t vp1;
    uint32_t h;
};

#define IDMAP_MIN_SLOTS 16u
#define IDMAP_MAX_EXPECTED ((size_t)1 << 30)

static uint32_t idmap_hash(const tm2__idmap *m, const char *id)
{
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash(out, (const unsigned char *)id, strlen(id), m->key);
    return (uint32_t)out[0] | (uint32_t)out[1] << 8 | (uint32_t)out[2] << 16 |
           (uint32_t)out[3] << 24;
}

static size_t slots_for(size_t expected)
{
    size_t s = IDMAP_MIN_SLOTS;
    while (s < expected * 2)
        s <<= 1;
    return s;
}

int tm2__idmap_init(tm2__idmap *m, size_t expected, const void *owner, tm2__idmap_id_at_fn id_at,
                    const uint8_t key[16])
{
    memset(m, 0, sizeof *m);
    if (expected > IDMAP_MAX_EXPECTED || !id_at)
        return TM2_EINVAL;
    size_t s = slots_for(expected);
    m->slots = calloc(s, sizeof *m->slots);
    if (!m->slots)
        return TM2_ENOMEM;
    m->mask = s - 1;
    m->owner = owner;
    m->id_at = id_at;
    if (key)
        memcpy(m->key, key, sizeof m->key);
    else
        memset(m->key, 0, sizeof m->key);
    return 0;
}

void tm2__idmap_free(tm2__idmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->n = 0;
    m->mask = 0;
}

/* Slot index holding id, or SIZE_MAX. */
static size_t idmap_lookup(const tm2__idmap *m, const char *id, uint32_t h)
{
    if (!m->slots)
        return SIZE_MAX;
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const struct tm2__idmap_slot *s = &m->slots[i];
        if (s->vp1 == 0)
            return SIZE_MAX;
        if (s->h == h && strcmp(m->id_at(m->owner, s->vp1 - 1), id) == 0)
            return i;
    }
}

int64_t tm2__idmap_find(const tm2__idmap *m, const char *id)
{
    size_t i = idmap_lookup(m, id, idmap_hash(m, id));
    return i == SIZE_MAX ? -1 : (int64_t)m->slots[i].vp1 - 1;
}

static void idmap_place(struct tm2__idmap_slot *slots, size_t mask, struct tm2__idmap_slot s)
{
    size_t i = s.h & mask;
    while (slots[i].vp1 != 0)
        i = (i + 1) & mask;
    slots[i] = s;
}

static int idmap_grow(tm2__idmap *m)
{
    size_t old = m->mask + 1;
    if (old > ((size_t)1 << 31))
        return TM2_ENOMEM;
    struct tm2__idmap_slot *ns = calloc(old * 2, sizeof *ns);
    if (!ns)
        return TM2_ENOMEM;
    /* The stored hash half gives the new home slot without rehashing. */
    for (size_t i = 0; i < old; i++)
        if (m->slots[i].vp1 != 0)
            idmap_place(ns, old * 2 - 1, m->slots[i]);
    free(m->slots);
    m->slots = ns;
    m->mask = old * 2 - 1;
    return 0;
}

int tm2__idmap_insert(tm2__idmap *m, const char *id, uint32_t value)
{
    if (!m->slots || value == UINT32_MAX)
        return TM2_EINVAL;
    if ((m->n + 1) * 2 > m->mask + 1) {
        int r = idmap_grow(m);
        if (r < 0)
            return r;
    }
    struct tm2__idmap_slot s = {value + 1, idmap_hash(m, id)};
    idmap_place(m->slots, m->mask, s);
    m->n++;
    return 0;
}

int tm2__idmap_update(tm2__idmap *m, const char *id, uint32_t value)
{
    size_t i = idmap_lookup(m, id, idmap_hash(m, id));
    if (i == SIZE_MAX)
        return TM2_ENOTFOUND;
    m->slots[i].vp1 = value + 1;
    return 0;
}

int64_t tm2__idmap_remove(tm2__idmap *m, const char *id)
{
    size_t i = idmap_lookup(m, id, idmap_hash(m, id));
    if (i == SIZE_MAX)
        return TM2_ENOTFOUND;
    int64_t v = (int64_t)m->slots[i].vp1 - 1;
    /* Backward-shift deletion: pull later entries of the probe run into the
     * hole unless their home lies cyclically in (hole, j], so that no
     * tombstones accumulate. */
    size_t hole = i;
    for (size_t j = (i + 1) & m->mask; m->slots[j].vp1 != 0; j = (j + 1) & m->mask) {
        size_t home = m->slots[j].h & m->mask;
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].vp1 = 0;
    m->slots[hole].h = 0;
    m->n--;
    return v;
}

/* ---- peer set -------------------------------------------------------------- */

#define PEER_SET_INITIAL 16u

static const char *peer_id_at(const void *owner, uint32_t v)
{
    const tm2__peer_set *ps = owner;
    return ps->items[v].id.s;
}

int tm2__peer_set_init(tm2__peer_set *ps, const uint8_t key[16])
{
    memset(ps, 0, sizeof *ps);
    ps->items = calloc(PEER_SET_INITIAL, sizeof *ps->items);
    if (!ps->items)
        return TM2_ENOMEM;
    ps->cap = PEER_SET_INITIAL;
    int r = tm2__idmap_init(&ps->index, PEER_SET_INITIAL, ps, peer_id_at, key);
    if (r < 0) {
        free(ps->items);
        ps->items = NULL;
        return r;
    }
    return 0;
}

void tm2__peer_set_free(tm2__peer_set *ps)
{
    tm2__idmap_free(&ps->index);
    free(ps->items);
    memset(ps, 0, sizeof *ps);
}

static bool id_ok(const tm2_id *id)
{
    return id && id->s[0] != '\0' && memchr(id->s, '\0', sizeof id->s) != NULL;
}

int tm2__peer_set_add(tm2__peer_set *ps, const tm2_id *id, void *peer, bool outbound)
{
    if (!id_ok(id) || !peer)
        return TM2_EINVAL;
    if (tm2__idmap_find(&ps->index, id->s) >= 0)
        return TM2_EEXIST;
    if (ps->n == ps->cap) {
        if (ps->cap > UINT32_MAX / 4)
            return TM2_ENOMEM;
        tm2__peer_entry *ni = realloc(ps->items, ps->cap * 2 * sizeof *ni);
        if (!ni)
            return TM2_ENOMEM;
        ps->items = ni;
        ps->cap *= 2;
    }
    tm2__peer_entry *e = &ps->items[ps->n];
    memset(e, 0, sizeof *e);
    memcpy(e->id.s, id->s, strlen(id->s) + 1);
    e->peer = peer;
    e->outbound = outbound;
    int r = tm2__idmap_insert(&ps->index, e->id.s, (uint32_t)ps->n);
    if (r < 0)
        return r;
    ps->n++;
    if (outbound)
        ps->n_outbound++;
    return 0;
}

void *tm2__peer_set_remove(tm2__peer_set *ps, const tm2_id *id)
{
    if (!id_ok(id))
        return NULL;
    int64_t v = tm2__idmap_remove(&ps->index, id->s);
    if (v < 0)
        return NULL;
    size_t i = (size_t)v;
    void *peer = ps->items[i].peer;
    if (ps->items[i].outbound)
        ps->n_outbound--;
    size_t last = ps->n - 1;
    if (i != last) {
        ps->items[i] = ps->items[last];
        /* The moved entry is present, so this cannot fail. */
        (void)tm2__idmap_update(&ps->index, ps->items[i].id.s, (uint32_t)i);
    }
    ps->n--;
    return peer;
}

void *tm2__peer_set_find(const tm2__peer_set *ps, const tm2_id *id)
{
    if (!id_ok(id))
        return NULL;
    int64_t v = tm2__idmap_find(&ps->index, id->s);
    return v < 0 ? NULL : ps->items[v].peer;
}

bool tm2__peer_set_has(const tm2__peer_set *ps, const tm2_id *id)
{
    return tm2__peer_set_find(ps, id) != NULL;
}

size_t tm2__peer_set_count(const tm2__peer_set *ps)
{
    return ps->n;
}

size_t tm2__peer_set_inbound(const tm2__peer_set *ps)
{
    return ps->n - ps->n_outbound;
}

size_t tm2__peer_set_outbound(const tm2__peer_set *ps)
{
    return ps->n_outbound;
}

const tm2__peer_entry *tm2__peer_set_at(const tm2__peer_set *ps, size_t i)
{
    return i < ps->n ? &ps->items[i] : NULL;
}

int tm2__peer_set_foreach(const tm2__peer_set *ps,
                          int (*fn)(const tm2__peer_entry *e, void *user), void *user)
{
    for (size_t i = 0; i < ps->n; i++) {
        int r = fn(&ps->items[i], user);
        if (r != 0)
            return r;
    }
    return 0;
}

void *tm2__peer_set_random(const tm2__peer_set *ps, uint64_t rnd)
{
    if (ps->n == 0)
        return NULL;
    return ps->items[rnd % ps->n].peer;
}

size_t tm2__peer_set_snapshot(const tm2__peer_set *ps, void **out, size_t cap)
{
    size_t k = ps->n < cap ? ps->n : cap;
    for (size_t i = 0; i < k; i++)
        out[i] = ps->items[i].peer;
    return ps->n;
}
