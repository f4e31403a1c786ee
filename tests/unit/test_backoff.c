#include <math.h> /* NAN */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tm2p2p/switch.h"
#include "tv.h"

#define VEC "upstream_backoff_vectors.txt"

/* Go duration text ("1600ms", "-10ns", "300h") in nanoseconds; only the
 * single-unit forms the vector file uses. */
static int64_t go_duration_ns(const char *s)
{
    int neg = 0;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    char *end;
    long long v = strtoll(s, &end, 10);
    assert_true(end != s);
    int64_t mul = 0;
    if (strcmp(end, "ns") == 0)
        mul = 1;
    else if (strcmp(end, "us") == 0)
        mul = 1000;
    else if (strcmp(end, "ms") == 0)
        mul = 1000000;
    else if (strcmp(end, "s") == 0)
        mul = 1000000000LL;
    else if (strcmp(end, "m") == 0)
        mul = 60LL * 1000000000LL;
    else if (strcmp(end, "h") == 0)
        mul = 3600LL * 1000000000LL;
    else
        fail_msg("unknown duration unit in '%s'", s);
    return (neg ? -1 : 1) * (int64_t)v * mul;
}

static void duration_parser(void **state)
{
    (void)state;
    assert_true(go_duration_ns("1s") == 1000000000LL);
    assert_true(go_duration_ns("100ms") == 100000000LL);
    assert_true(go_duration_ns("10m") == 600000000000LL);
    assert_true(go_duration_ns("300h") == 1080000000000000LL);
    assert_true(go_duration_ns("-10ns") == -10);
}

/* Milliseconds; sub-millisecond negative bases stay <= 0 so the default applies. */
static int64_t ns_to_ms(int64_t ns)
{
    return ns / 1000000;
}

/* Largest double below 1, i.e. the top of rnd01's range [0, 1). */
static double just_below_one(void)
{
    return 1.0 - 0x1p-53;
}

struct vec_stats {
    int lines;
};

static void check_vector(char *line, void *user)
{
    struct vec_stats *st = user;
    char *f[5];
    assert_int_equal(tv_split(line, '|', f, 5), 5);
    uint32_t attempts = (uint32_t)strtoul(f[0], NULL, 10);
    int64_t base = ns_to_ms(go_duration_ns(f[1]));
    int64_t max = ns_to_ms(go_duration_ns(f[2]));
    int64_t center_ns = go_duration_ns(f[3]);
    int64_t jitter_ns = go_duration_ns(f[4]);
    /* Every vector is a whole number of milliseconds. */
    assert_true(center_ns % 1000000 == 0);
    assert_true(jitter_ns % 1000000 == 0);
    int64_t center = center_ns / 1000000, jitter = jitter_ns / 1000000;
    int64_t lo = center - jitter, hi = center + jitter;

    /* The extremes and the middle are hit exactly. */
    assert_true(tm2_backoff_ms(attempts, base, max, 0.0) == lo);
    assert_true(tm2_backoff_ms(attempts, base, max, 0.5) == center);
    assert_true(tm2_backoff_ms(attempts, base, max, just_below_one()) == hi);

    int64_t v = tm2_backoff_ms(attempts, base, max, 0.999);
    assert_true(v >= lo && v <= hi);
    /* 0.999 sits 0.2% of the span below the top. */
    assert_true(v >= hi - (jitter * 2 + 999) / 1000 - 1);

    uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)st->lines;
    for (int i = 0; i < 2000; i++) {
        tv_xorshift(&x);
        double r = (double)(x >> 11) / 9007199254740992.0; /* [0, 1) */
        v = tm2_backoff_ms(attempts, base, max, r);
        if (v < lo || v > hi)
            fail_msg("vector %s|%s|%s: r=%f gave %lld outside [%lld, %lld]", f[0], f[1], f[2], r,
                     (long long)v, (long long)lo, (long long)hi);
    }
    st->lines++;
}

static void upstream_vectors(void **state)
{
    (void)state;
    struct vec_stats st = {0};
    int n = tv_lines(VEC, check_vector, &st);
    assert_int_equal(n, 17);
    assert_int_equal(st.lines, 17);
}

static void defaults_for_non_positive_base_and_max(void **state)
{
    (void)state;
    /* base <= 0 is 1 s, max <= 0 is 60 s. */
    assert_true(tm2_backoff_ms(0, 0, 0, 0.5) == 1000);
    assert_true(tm2_backoff_ms(3, -1, 0, 0.5) == 8000);
    assert_true(tm2_backoff_ms(6, 0, 0, 0.5) == 60000);
    assert_true(tm2_backoff_ms(6, 0, -5, 0.0) == 54000);
    assert_true(tm2_backoff_ms(6, 0, 0, just_below_one()) == 66000);
}

static void saturates_for_large_attempts(void **state)
{
    (void)state;
    /* Where the reference's shift overflows, the interval stays at max. */
    for (uint32_t a = 30; a < 200; a++) {
        assert_true(tm2_backoff_ms(a, 1000, 600000, 0.5) == 600000);
        assert_true(tm2_backoff_ms(a, 1000, 600000, 0.0) == 590000);
    }
    assert_true(tm2_backoff_ms(UINT32_MAX, 1000, 600000, 0.5) == 600000);
    assert_true(tm2_backoff_ms(62, 1, INT64_MAX, 0.5) == (int64_t)1 << 62);
    assert_true(tm2_backoff_ms(63, 1, INT64_MAX, 0.5) == INT64_MAX);
    /* Jitter on top of INT64_MAX saturates instead of wrapping. */
    assert_true(tm2_backoff_ms(63, 1, INT64_MAX, just_below_one()) == INT64_MAX);
    assert_true(tm2_backoff_ms(63, 1, INT64_MAX, 0.0) == INT64_MAX - 10000);
    /* Large base with few attempts: no overflow either. */
    assert_true(tm2_backoff_ms(2, INT64_MAX / 2, INT64_MAX, 0.5) == INT64_MAX);
}

static void monotone_in_attempts_at_fixed_random(void **state)
{
    (void)state;
    int64_t prev = 0;
    for (uint32_t a = 0; a < 40; a++) {
        int64_t v = tm2_backoff_ms(a, 1000, 600000, 0.5);
        assert_true(v >= prev);
        prev = v;
    }
}

static void bad_random_is_clamped(void **state)
{
    (void)state;
    assert_true(tm2_backoff_ms(0, 1000, 600000, -3.0) == 900);
    assert_true(tm2_backoff_ms(0, 1000, 600000, 7.0) == 1100);
    assert_true(tm2_backoff_ms(0, 1000, 600000, NAN) == 900);
}

static void small_intervals_have_no_jitter_below_a_millisecond(void **state)
{
    (void)state;
    /* 10% of 5 ms rounds down to 0 whole milliseconds. */
    assert_true(tm2_backoff_ms(0, 5, 100, 0.0) == 5);
    assert_true(tm2_backoff_ms(0, 5, 100, just_below_one()) == 5);
    assert_true(tm2_backoff_ms(0, 15, 100, 0.0) == 14);
    assert_true(tm2_backoff_ms(0, 15, 100, just_below_one()) == 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(duration_parser),
        cmocka_unit_test(upstream_vectors),
        cmocka_unit_test(defaults_for_non_positive_base_and_max),
        cmocka_unit_test(saturates_for_large_attempts),
        cmocka_unit_test(monotone_in_attempts_at_fixed_random),
        cmocka_unit_test(bad_random_is_clamped),
        cmocka_unit_test(small_intervals_have_no_jitter_below_a_millisecond),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
