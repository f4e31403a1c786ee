/* The backend-independent helpers of net/engine.h. */
#include "net/engine.h"

#include <stdlib.h>

#include "conn/secret_conn.h"
#include "net/sc_stream.h"
#include "tm2p2p/error.h"

/* SEAL holds TM2__SC_SEAL_FRAMES sealed frames plus room for a length
 * prefix per frame; PRODUCE a generous bound on one mconn produce pass. */
size_t tm2__engine_scratch_size(enum tm2__scratch which)
{
    switch (which) {
    case TM2__SCRATCH_PLAIN: return 64u * 1024u;
    case TM2__SCRATCH_SEAL: return (size_t)TM2__SC_SEAL_FRAMES * 1070u;
    case TM2__SCRATCH_PRODUCE: return 2u * 1024u * 1024u;
    default: return 0;
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

/* Rejection sampling: draws below 2^32 mod n are redrawn. */
uint32_t tm2__engine_uniform(tm2__engine *e, uint32_t n)
{
    if (n == 0)
        return 0;
    uint32_t floor = (uint32_t)(-n) % n;
    for (;;) {
        uint32_t r;
        tm2__engine_random(e, &r, sizeof r);
        if (r >= floor)
            return r % n;
    }
}
