/* The simulator's event queue, ordered by (due, seq). seq is unique and
 * grows with every scheduling, so the order is total and never depends on
 * where records happen to live in memory.
 *
 * Near events (due within SIM_RING_MS of the queue's time) sit in a ring of
 * one list per millisecond; far ones in a 4-ary min-heap. Appending to a
 * slot keeps the slot in seq order, so scheduling, cancelling and taking
 * the next event touch one or two records instead of a heap path of
 * scattered events. That holds because the ring always holds every event
 * due before cur + SIM_RING_MS: when cur moves, the heap hands over what
 * came into range before anything else can be scheduled there, and what it
 * hands over was scheduled earlier than anything scheduled into that slot
 * later. */
#include <stdlib.h>
#include <string.h>

#include "sim/sim_internal.h"

#define MASK (SIM_RING_MS - 1u)
#define WORDS (SIM_RING_MS / 64u)
enum { ARITY = 4 };

/* ---- the far heap: keys copied beside the event, so ordering reads the array ---- */

static bool before(const sim_heap_ent *a, const sim_heap_ent *b)
{
    return a->due != b->due ? a->due < b->due : a->seq < b->seq;
}

static void place(sim_queue *q, uint32_t i, sim_heap_ent e)
{
    q->a[i] = e;
    e.ev->idx = i;
}

static void sift_up(sim_queue *q, uint32_t i, sim_heap_ent e)
{
    while (i > 0) {
        uint32_t p = (i - 1) / ARITY;
        if (!before(&e, &q->a[p]))
            break;
        place(q, i, q->a[p]);
        i = p;
    }
    place(q, i, e);
}

static void sift_down(sim_queue *q, uint32_t i, sim_heap_ent e)
{
    for (;;) {
        uint32_t c = ARITY * i + 1;
        if (c >= q->n)
            break;
        uint32_t end = c + ARITY < q->n ? c + ARITY : q->n;
        uint32_t m = c;
        for (uint32_t k = c + 1; k < end; k++)
            if (before(&q->a[k], &q->a[m]))
                m = k;
        if (!before(&q->a[m], &e))
            break;
        place(q, i, q->a[m]);
        i = m;
    }
    place(q, i, e);
}

static void heap_remove(sim_queue *q, sim_ev *ev)
{
    uint32_t i = ev->idx;
    sim_heap_ent last = q->a[--q->n];
    if (last.ev != ev) {
        if (i > 0 && before(&last, &q->a[(i - 1) / ARITY]))
            sift_up(q, i, last);
        else
            sift_down(q, i, last);
    }
    ev->idx = SIM_NONE;
}

static int heap_push(sim_queue *q, sim_ev *ev)
{
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? 2 * q->cap : 256;
        sim_heap_ent *a = realloc(q->a, (size_t)cap * sizeof *a);
        if (!a)
            return -1;
        q->a = a;
        q->cap = cap;
    }
    sift_up(q, q->n++, (sim_heap_ent){ev->due, ev->seq, ev});
    return 0;
}

/* ---- the ring -------------------------------------------------------------------- */

static void ring_append(sim_queue *q, sim_ev *ev)
{
    uint32_t s = (uint32_t)(ev->due & MASK);
    sim_ev *t = q->slot[s].tail;
    ev->next = NULL;
    ev->prev = t;
    if (t)
        t->next = ev;
    else
        q->slot[s].head = ev;
    q->slot[s].tail = ev;
    q->bits[s / 64] |= 1ull << (s % 64);
    q->ring_n++;
    ev->idx = SIM_RING;
}

static void ring_unlink(sim_queue *q, sim_ev *ev)
{
    uint32_t s = (uint32_t)(ev->due & MASK);
    if (ev->prev)
        ev->prev->next = ev->next;
    else
        q->slot[s].head = ev->next;
    if (ev->next)
        ev->next->prev = ev->prev;
    else
        q->slot[s].tail = ev->prev;
    if (!q->slot[s].head)
        q->bits[s / 64] &= ~(1ull << (s % 64));
    q->ring_n--;
    ev->idx = SIM_NONE;
}

/* The first non-empty slot from cur's on: the ring holds [cur, cur + size),
 * so the scan order is due order. The caller knows the ring is not empty. */
static uint32_t first_slot(const sim_queue *q)
{
    uint32_t s = (uint32_t)(q->cur & MASK), w = s / 64;
    uint64_t m = q->bits[w] & (~0ull << (s % 64));
    while (!m) {
        w = (w + 1) % WORDS;
        m = q->bits[w];   /* back at the first word: its low bits are the latest */
    }
    return w * 64 + (uint32_t)__builtin_ctzll(m);
}

static uint64_t slot_due(const sim_queue *q, uint32_t s)
{
    return q->cur + ((s - (uint32_t)(q->cur & MASK)) & MASK);
}

static void advance(sim_queue *q, uint64_t t)
{
    q->cur = t;
    while (q->n && q->a[0].due < t + SIM_RING_MS) {
        sim_ev *ev = q->a[0].ev;
        heap_remove(q, ev);
        ring_append(q, ev);
    }
}

/* ---- the queue ------------------------------------------------------------------- */

int sim_queue_push(sim_queue *q, sim_ev *ev)
{
    /* Callers never schedule before now, and cur never passes now. */
    if (ev->due < q->cur + SIM_RING_MS) {
        ring_append(q, ev);
        return 0;
    }
    return heap_push(q, ev);
}

void sim_queue_remove(sim_queue *q, sim_ev *ev)
{
    if (ev->idx == SIM_RING)
        ring_unlink(q, ev);
    else if (ev->idx != SIM_NONE)
        heap_remove(q, ev);
}

bool sim_queue_next_due(const sim_queue *q, uint64_t *due)
{
    if (q->ring_n)
        *due = slot_due(q, first_slot(q));
    else if (q->n)
        *due = q->a[0].due;
    else
        return false;
    return true;
}

sim_ev *sim_queue_pop(sim_queue *q)
{
    if (!q->ring_n) {
        if (!q->n)
            return NULL;
        advance(q, q->a[0].due);
    }
    uint32_t s = first_slot(q);
    uint64_t t = slot_due(q, s);
    if (t != q->cur)
        advance(q, t);
    sim_ev *ev = q->slot[s].head;
    ring_unlink(q, ev);
    return ev;
}

size_t sim_queue_mem(const sim_queue *q)
{
    return (size_t)q->cap * sizeof *q->a;   /* the ring is inside the queue */
}

void sim_queue_free(sim_queue *q)
{
    free(q->a);
    memset(q, 0, sizeof *q);
}
