/* Internal: flow-rate monitor and limiter for one direction of a connection.
 *
 * The monitor measures like the reference's flow.Monitor: 100 ms samples, an
 * exponential moving average with a 1 s window, average and peak rates.
 *
 * The limiter grants rate/10 bytes per 100 ms window. A transfer may start
 * while the current window is not used up; what it takes beyond the window is
 * carried into the following ones, so the long-run rate is exact and a burst
 * overshoots by at most one transfer (the reference overshoots by up to a
 * batch of ten packets and forgets it).
 *
 * Pure: times are milliseconds passed in by the caller and must not go
 * backwards. Not thread-safe. */
#ifndef TM2_CONN_FLOWRATE_H
#define TM2_CONN_FLOWRATE_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/channel.h"

#define TM2__FLOW_SAMPLE_MS 100u

typedef struct tm2__flow {
    uint64_t rate;         /* bytes per second, 0 = unlimited */
    uint64_t start;        /* creation time */
    uint64_t s_last;       /* start of the current sample */
    uint64_t t_last;       /* last transfer of at least one byte */
    uint64_t bytes;        /* bytes of finished samples */
    uint64_t s_bytes;      /* bytes in the current sample */
    uint64_t samples;
    double r_sample, r_ema, r_peak;
    uint64_t w_start;      /* start of the current limiter window */
    uint64_t w_used;       /* bytes charged from w_start on (may exceed a window) */
} tm2__flow;

void tm2__flow_init(tm2__flow *f, uint64_t rate, uint64_t now);

/* Records n bytes transferred at now (n may be 0 to close a due sample). */
void tm2__flow_update(tm2__flow *f, size_t n, uint64_t now);

/* 0 if a transfer may start at now, else the time from which it may. */
uint64_t tm2__flow_blocked_until(tm2__flow *f, uint64_t now);

/* Totals and rates at now. */
void tm2__flow_status(tm2__flow *f, uint64_t now, tm2_flow_status *st);

#endif
