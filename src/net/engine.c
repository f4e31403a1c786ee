/* The parts of every engine that do not depend on its backend (engine.h). */
#include "net/engine.h"

#include <stdlib.h>

#include "net/mconn_stream.h"
#include "tm2p2p/error.h"

size_t tm2__engine_scratch_size(enum tm2__scratch which)
{
    switch (which) {
    case TM2__SCRATCH_PLAIN:
        return TM2__SC_PLAIN_BUF;
    case TM2__SCRATCH_SEAL:
        return TM2__SC_SEAL_BUF;
    case TM2__SCRATCH_PRODUCE:
        return TM2__MCS_SCRATCH;
    default:
        return 0;
    }
}

int tm2__engine_alloc_scratch(tm2__engine *e)
{
    for (int i = 0; i < TM2__SCRATCH_N; i++) {
        e->scratch_busy[i] = false;
        if (!(e->scratch[i] = malloc(tm2__engine_scratch_size((enum tm2__scratch)i)))) {
            tm2__engine_free_scratch(e);
            return TM2_ENOMEM;
        }
    }
    return 0;
}

void tm2__engine_free_scratch(tm2__engine *e)
{
    for (int i = 0; i < TM2__SCRATCH_N; i++) {
        free(e->scratch[i]);
        e->scratch[i] = NULL;
    }
}

uint32_t tm2__engine_uniform(tm2__engine *e, uint32_t n)
{
    if (n < 2)
        return 0;
    /* Rejects the top (2^32 mod n) values so that every residue is equally
     * likely: at most half of the draws are rejected, for n just above 2^31. */
    uint32_t floor = (uint32_t)(-n) % n;
    for (;;) {
        uint32_t r;
        tm2__engine_random(e, &r, sizeof r);
        if (r >= floor)
            return r % n;
    }
}
