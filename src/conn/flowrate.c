/* Flow-rate monitor and limiter (see flowrate.h). */
#include "conn/flowrate.h"

/* exp(-ms / 1000) without libm: exp(-0.001) raised to ms by squaring. */
static double decay_weight(uint64_t ms)
{
    double base = 0.99900049983337499167, w = 1.0;
    if (ms > 100000)
        return 0.0;   /* below 1e-43: the old average no longer matters */
    while (ms) {
        if (ms & 1u)
            w *= base;
        base *= base;
        ms >>= 1;
    }
    return w;
}

static uint64_t window_allowance(uint64_t rate)
{
    uint64_t a = rate / 10u + (rate % 10u >= 5u);
    return a ? a : 1u;
}

void tm2__flow_init(tm2__flow *f, uint64_t rate, uint64_t now)
{
    *f = (tm2__flow){0};
    f->rate = rate;
    f->start = f->s_last = f->t_last = f->w_start = now;
}

/* Moves the limiter window up to now, crediting one allowance per window. */
static void limiter_advance(tm2__flow *f, uint64_t now)
{
    if (now < f->w_start + TM2__FLOW_SAMPLE_MS)
        return;
    uint64_t k = (now - f->w_start) / TM2__FLOW_SAMPLE_MS;
    uint64_t a = window_allowance(f->rate);
    if (k > f->w_used / a)
        f->w_used = 0;
    else
        f->w_used -= k * a;
    f->w_start += k * TM2__FLOW_SAMPLE_MS;
}

void tm2__flow_update(tm2__flow *f, size_t n, uint64_t now)
{
    if (now < f->s_last)
        now = f->s_last;
    if (n > 0)
        f->t_last = now;
    f->s_bytes += n;
    if (f->rate) {
        limiter_advance(f, now);
        f->w_used += n;
    }
    uint64_t st = now - f->s_last;
    if (st >= TM2__FLOW_SAMPLE_MS) {
        f->r_sample = (double)f->s_bytes * 1000.0 / (double)st;
        if (f->r_sample > f->r_peak)
            f->r_peak = f->r_sample;
        if (f->samples > 0)
            f->r_ema = f->r_sample + decay_weight(st) * (f->r_ema - f->r_sample);
        else
            f->r_ema = f->r_sample;
        f->bytes += f->s_bytes;
        f->samples++;
        f->s_bytes = 0;
        f->s_last = now;
    }
}

uint64_t tm2__flow_blocked_until(tm2__flow *f, uint64_t now)
{
    if (!f->rate)
        return 0;
    limiter_advance(f, now);
    uint64_t a = window_allowance(f->rate);
    if (f->w_used < a)
        return 0;
    /* After j more windows the debt left is w_used mod a, below one window. */
    return f->w_start + (f->w_used / a) * TM2__FLOW_SAMPLE_MS;
}

static uint64_t round_rate(double r)
{
    return r <= 0 ? 0 : (uint64_t)(r + 0.5);
}

void tm2__flow_status(tm2__flow *f, uint64_t now, tm2_flow_status *st)
{
    tm2__flow_update(f, 0, now);
    if (now < f->t_last)
        now = f->t_last;
    st->bytes = f->bytes + f->s_bytes;
    st->duration_ms = f->s_last - f->start;
    st->idle_ms = now - f->t_last;
    st->inst_rate = round_rate(f->r_sample);
    st->cur_rate = round_rate(f->r_ema);
    st->peak_rate = round_rate(f->r_peak);
    st->avg_rate = st->duration_ms ? round_rate((double)f->bytes * 1000.0 / (double)st->duration_ms) : 0;
}
