/* The simulator's event queue against a plain model: events scheduled near
 * (the ring), far (the heap) and at the current time, re-scheduled and
 * cancelled at random, must come out in (due, seq) order, and the next due
 * time must be the model's. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_internal.h"
#include "tv.h"

enum { NEV = 400, STEPS = 200000 };

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) { return tv_xorshift(&g_rng); }

/* The model's next event: the queued one with the smallest (due, seq). */
static sim_ev *model_min(sim_ev *ev, const bool *queued)
{
    sim_ev *m = NULL;
    for (int i = 0; i < NEV; i++)
        if (queued[i] && (!m || ev[i].due < m->due || (ev[i].due == m->due && ev[i].seq < m->seq)))
            m = &ev[i];
    return m;
}

static void test_queue_matches_model(void **state)
{
    (void)state;
    sim_queue *q = calloc(1, sizeof *q);
    sim_ev *ev = calloc(NEV, sizeof *ev);
    bool *queued = calloc(NEV, sizeof *queued);
    assert_non_null(q);
    assert_non_null(ev);
    assert_non_null(queued);
    for (int i = 0; i < NEV; i++)
        ev[i].idx = SIM_NONE;
    uint64_t now = 0, seq = 0;
    unsigned pops = 0, far = 0;

    for (int step = 0; step < STEPS; step++) {
        uint64_t r = rnd();
        int i = (int)(r % NEV);
        switch ((r >> 16) % 8) {
        case 0: case 1: case 2: {   /* schedule or re-schedule */
            static const uint64_t spans[] = {1, 16, SIM_RING_MS, 4 * SIM_RING_MS, 100000};
            uint64_t span = spans[(r >> 24) % 5];
            sim_queue_remove(q, &ev[i]);
            ev[i].due = now + (r >> 32) % span;
            ev[i].seq = seq++;
            far += ev[i].due >= now + SIM_RING_MS;
            assert_int_equal(sim_queue_push(q, &ev[i]), 0);
            queued[i] = true;
            break;
        }
        case 3:   /* cancel */
            sim_queue_remove(q, &ev[i]);
            assert_int_equal(ev[i].idx, SIM_NONE);
            queued[i] = false;
            break;
        default: {   /* take the next one */
            sim_ev *want = model_min(ev, queued);
            uint64_t due = 0;
            assert_int_equal(sim_queue_next_due(q, &due), want != NULL);
            sim_ev *got = sim_queue_pop(q);
            assert_ptr_equal(got, want);
            if (!got)
                break;
            assert_int_equal(due, got->due);
            assert_true(got->due >= now);
            assert_int_equal(got->idx, SIM_NONE);
            now = got->due;
            queued[got - ev] = false;
            pops++;
            break;
        }
        }
    }
    /* Drain: what is left comes out in order too. */
    for (sim_ev *want; (want = model_min(ev, queued)) != NULL;) {
        assert_ptr_equal(sim_queue_pop(q), want);
        queued[want - ev] = false;
    }
    assert_null(sim_queue_pop(q));
    assert_true(pops > STEPS / 4);
    assert_true(far > 1000);   /* the heap's side was exercised */
    sim_queue_free(q);
    free(q);
    free(ev);
    free(queued);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_matches_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
