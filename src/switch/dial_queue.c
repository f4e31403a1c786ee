/* The dial queue: a heap of node indices over a fixed slab of nodes, so
 * that the ID index (which maps to node indices) never changes while the
 * heap moves things around; only the nodes' heap positions do. */
#include "switch/dial_queue.h"

#include <stdlib.h>
#include <string.h>

#include "tm2p2p/error.h"

struct tm2__dialq_node {
    tm2__dial_item item;
    uint64_t seq;
    uint32_t pos;      /* index in heap while queued */
};

static const char *node_id_at(const void *owner, uint32_t v)
{
    const tm2__dialq *q = owner;
    return q->nodes[v].item.addr.id.s;
}

static bool id_ok(const tm2_id *id)
{
    return id && id->s[0] != '\0' && memchr(id->s, '\0', sizeof id->s) != NULL;
}

int tm2__dialq_init(tm2__dialq *q, size_t cap, const uint8_t key[16])
{
    memset(q, 0, sizeof *q);
    if (cap == 0 || cap > TM2__DIALQ_MAX_CAP)
        return TM2_EINVAL;
    q->nodes = calloc(cap, sizeof *q->nodes);
    q->heap = calloc(cap, sizeof *q->heap);
    q->free_list = calloc(cap, sizeof *q->free_list);
    int r = TM2_ENOMEM;
    if (q->nodes && q->heap && q->free_list)
        r = tm2__idmap_init(&q->index, cap, q, node_id_at, key);
    if (r < 0) {
        free(q->nodes);
        free(q->heap);
        free(q->free_list);
        memset(q, 0, sizeof *q);
        return r;
    }
    q->cap = cap;
    /* Hand out low indices first (popped from the top of the stack). */
    for (size_t i = 0; i < cap; i++)
        q->free_list[i] = (uint32_t)(cap - 1 - i);
    q->n_free = cap;
    return 0;
}

void tm2__dialq_free(tm2__dialq *q)
{
    tm2__idmap_free(&q->index);
    free(q->nodes);
    free(q->heap);
    free(q->free_list);
    memset(q, 0, sizeof *q);
}

static bool before(const tm2__dialq *q, uint32_t a, uint32_t b)
{
    const struct tm2__dialq_node *x = &q->nodes[a], *y = &q->nodes[b];
    if (x->item.due_ms != y->item.due_ms)
        return x->item.due_ms < y->item.due_ms;
    return x->seq < y->seq;
}

static void put(tm2__dialq *q, size_t pos, uint32_t node)
{
    q->heap[pos] = node;
    q->nodes[node].pos = (uint32_t)pos;
}

static void sift_up(tm2__dialq *q, size_t pos)
{
    uint32_t node = q->heap[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!before(q, node, q->heap[parent]))
            break;
        put(q, pos, q->heap[parent]);
        pos = parent;
    }
    put(q, pos, node);
}

static void sift_down(tm2__dialq *q, size_t pos)
{
    uint32_t node = q->heap[pos];
    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= q->n)
            break;
        if (child + 1 < q->n && before(q, q->heap[child + 1], q->heap[child]))
            child++;
        if (!before(q, q->heap[child], node))
            break;
        put(q, pos, q->heap[child]);
        pos = child;
    }
    put(q, pos, node);
}

/* Takes the node at heap position pos out of the heap, the index and the
 * slab. */
static void take(tm2__dialq *q, size_t pos, tm2__dial_item *out)
{
    uint32_t node = q->heap[pos];
    if (out)
        *out = q->nodes[node].item;
    /* While the node still holds its ID, so the index can compare. */
    (void)tm2__idmap_remove(&q->index, q->nodes[node].item.addr.id.s);
    q->n--;
    if (pos != q->n) {
        put(q, pos, q->heap[q->n]);
        /* The moved node may belong above or below pos. */
        if (pos > 0 && before(q, q->heap[pos], q->heap[(pos - 1) / 2]))
            sift_up(q, pos);
        else
            sift_down(q, pos);
    }
    memset(&q->nodes[node], 0, sizeof q->nodes[node]);
    q->free_list[q->n_free++] = node;
}

int tm2__dialq_push(tm2__dialq *q, uint64_t due_ms, const tm2_netaddr *addr, unsigned flags)
{
    if (!addr || !id_ok(&addr->id))
        return TM2_EINVAL;
    int64_t found = tm2__idmap_find(&q->index, addr->id.s);
    if (found >= 0) {
        struct tm2__dialq_node *nd = &q->nodes[found];
        nd->item.flags |= flags;
        if (due_ms < nd->item.due_ms) {
            nd->item.due_ms = due_ms;
            nd->item.addr = *addr;
            /* Among equal due times it now counts as pushed last. */
            nd->seq = q->seq++;
            sift_up(q, nd->pos);
        }
        return 1;
    }
    if (q->n == q->cap)
        return TM2_EFULL;
    uint32_t node = q->free_list[--q->n_free];
    struct tm2__dialq_node *nd = &q->nodes[node];
    nd->item.due_ms = due_ms;
    nd->item.addr = *addr;
    nd->item.flags = flags;
    nd->seq = q->seq++;
    /* Cannot fail: the index was sized for cap entries and never grows. */
    (void)tm2__idmap_insert(&q->index, nd->item.addr.id.s, node);
    put(q, q->n, node);
    q->n++;
    sift_up(q, q->n - 1);
    return 0;
}

bool tm2__dialq_pop_due(tm2__dialq *q, uint64_t now_ms, tm2__dial_item *out)
{
    if (q->n == 0 || q->nodes[q->heap[0]].item.due_ms > now_ms)
        return false;
    take(q, 0, out);
    return true;
}

bool tm2__dialq_next_due(const tm2__dialq *q, uint64_t *due_ms)
{
    if (q->n == 0)
        return false;
    *due_ms = q->nodes[q->heap[0]].item.due_ms;
    return true;
}

int tm2__dialq_remove(tm2__dialq *q, const tm2_id *id, tm2__dial_item *out)
{
    if (!id_ok(id))
        return TM2_ENOTFOUND;
    int64_t found = tm2__idmap_find(&q->index, id->s);
    if (found < 0)
        return TM2_ENOTFOUND;
    take(q, q->nodes[found].pos, out);
    return 0;
}

const tm2__dial_item *tm2__dialq_find(const tm2__dialq *q, const tm2_id *id)
{
    if (!id_ok(id))
        return NULL;
    int64_t found = tm2__idmap_find(&q->index, id->s);
    return found < 0 ? NULL : &q->nodes[found].item;
}

bool tm2__dialq_contains(const tm2__dialq *q, const tm2_id *id)
{
    return tm2__dialq_find(q, id) != NULL;
}

size_t tm2__dialq_count(const tm2__dialq *q)
{
    return q->n;
}

bool tm2__dialq_has_due(const tm2__dialq *q, uint64_t now_ms, unsigned without)
{
    for (size_t i = 0; i < q->n; i++) {
        const tm2__dial_item *it = &q->nodes[q->heap[i]].item;
        if (it->due_ms <= now_ms && !(it->flags & without))
            return true;
    }
    return false;
}
