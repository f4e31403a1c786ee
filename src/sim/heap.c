/* The simulator's event queue: a binary min-heap on (due, seq) whose
 * entries know their index, so a timer re-armed or a socket closed leaves
 * no stale entry behind. seq is unique, so the order is total and never
 * depends on where records happen to live in memory. */
#include <stdlib.h>

#include "sim/sim_internal.h"

static bool before(const sim_ev *a, const sim_ev *b)
{
    return a->due != b->due ? a->due < b->due : a->seq < b->seq;
}

static void place(sim_heap *h, uint32_t i, sim_ev *ev)
{
    h->a[i] = ev;
    ev->idx = i;
}

static void sift_up(sim_heap *h, uint32_t i, sim_ev *ev)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!before(ev, h->a[p]))
            break;
        place(h, i, h->a[p]);
        i = p;
    }
    place(h, i, ev);
}

static void sift_down(sim_heap *h, uint32_t i, sim_ev *ev)
{
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && before(h->a[c + 1], h->a[c]))
            c++;
        if (!before(h->a[c], ev))
            break;
        place(h, i, h->a[c]);
        i = c;
    }
    place(h, i, ev);
}

int sim_heap_reserve(sim_heap *h, uint32_t n)
{
    if (n <= h->cap)
        return 0;
    uint32_t cap = h->cap ? h->cap : 256;
    while (cap < n)
        cap *= 2;
    sim_ev **a = realloc(h->a, (size_t)cap * sizeof *a);
    if (!a)
        return -1;
    h->a = a;
    h->cap = cap;
    return 0;
}

/* The caller reserved room (sim_at does). */
void sim_heap_push(sim_heap *h, sim_ev *ev)
{
    sift_up(h, h->n++, ev);
}

void sim_heap_remove(sim_heap *h, sim_ev *ev)
{
    uint32_t i = ev->idx;
    ev->idx = SIM_NONE;
    sim_ev *last = h->a[--h->n];
    if (last == ev)
        return;
    if (i > 0 && before(last, h->a[(i - 1) / 2]))
        sift_up(h, i, last);
    else
        sift_down(h, i, last);
}

sim_ev *sim_heap_pop(sim_heap *h)
{
    if (!h->n)
        return NULL;
    sim_ev *top = h->a[0];
    sim_heap_remove(h, top);
    return top;
}
