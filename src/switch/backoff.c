/* Redial back-off of persistent peers (WIRE.md 8.3).
 *
 * The reference computes base << attempts in int64 nanoseconds, which
 * overflows from about 34 attempts on; here the interval saturates at max
 * instead, so any attempt count gives max +- jitter. */
#include <stdint.h>

#include "tm2p2p/switch.h"

#define BACKOFF_DEFAULT_BASE_MS 1000
#define BACKOFF_DEFAULT_MAX_MS  60000
#define BACKOFF_JITTER_CAP_MS   10000

int64_t tm2_backoff_ms(uint32_t attempts, int64_t base_ms, int64_t max_ms, double rnd01)
{
    if (base_ms <= 0)
        base_ms = BACKOFF_DEFAULT_BASE_MS;
    if (max_ms <= 0)
        max_ms = BACKOFF_DEFAULT_MAX_MS;

    /* base * 2^attempts > max exactly when base > floor(max / 2^attempts). */
    int64_t interval;
    if (attempts >= 63 || base_ms > (max_ms >> attempts))
        interval = max_ms;
    else
        interval = base_ms << attempts;

    /* Whole milliseconds, so the rounded jitter below never leaves +-jmax. */
    int64_t jmax = interval / 10;
    if (jmax > BACKOFF_JITTER_CAP_MS)
        jmax = BACKOFF_JITTER_CAP_MS;

    /* NaN and out-of-range inputs are clamped rather than trusted. */
    if (!(rnd01 >= 0.0))
        rnd01 = 0.0;
    if (rnd01 > 1.0)
        rnd01 = 1.0;
    /* Rounding (not truncation) lets rnd01 close to 1 reach +jmax, as the
     * reference's nanosecond arithmetic does in effect. */
    double j = (2.0 * rnd01 - 1.0) * (double)jmax;
    int64_t jitter = (int64_t)(j < 0.0 ? j - 0.5 : j + 0.5);

    if (jitter > 0 && interval > INT64_MAX - jitter)
        return INT64_MAX;
    return interval + jitter;
}
