/* The library's log lines (common/log.c): each "key=VALUE" of the field
 * format becomes one field, every printf conversion formatted with its own
 * argument type, values handed over raw. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"

typedef struct got {
    tm2_log_level lv;
    char msg[64];
    size_t n;
    char key[TM2__LOG_FIELDS][32];
    char val[TM2__LOG_FIELDS][TM2__LOG_VALUE];
    int calls;
} got;

static void sink(void *user, tm2_log_level lv, const char *msg, const tm2_log_field *f, size_t n)
{
    got *g = user;
    g->calls++;
    g->lv = lv;
    snprintf(g->msg, sizeof g->msg, "%s", msg);
    g->n = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(g->key[i], sizeof g->key[i], "%s", f[i].key);
        snprintf(g->val[i], sizeof g->val[i], "%s", f[i].value);
    }
}

static void conversions(void **state)
{
    (void)state;
    got g = {0};
    /* volatile: the library must cope with a NULL string the compiler cannot see. */
    const char *volatile none = NULL;
    tm2__log(sink, &g, TM2_LOG_DEBUG, TM2_LOG_WARN, "hello",
             "s=%s null=%s z=%zu u64=%" PRIu64 " i64=%" PRId64 " d=%d u32=%" PRIu32
             " pair=%s:%u pct=100%% lit=true prec=%.*s x=%02x",
             "a b\"\n", none, (size_t)12345, UINT64_MAX, INT64_MIN, -7, (uint32_t)4000000000u,
             "127.0.0.1", 26656u, 3, "abcdef", 10u);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.lv, TM2_LOG_WARN);
    assert_string_equal(g.msg, "hello");
    static const char *want[][2] = {
        {"s", "a b\"\n"}, {"null", ""}, {"z", "12345"}, {"u64", "18446744073709551615"},
        {"i64", "-9223372036854775808"}, {"d", "-7"}, {"u32", "4000000000"},
        {"pair", "127.0.0.1:26656"}, {"pct", "100%"}, {"lit", "true"}, {"prec", "abc"},
        {"x", "0a"},
    };
    assert_int_equal(g.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < g.n; i++) {
        assert_string_equal(g.key[i], want[i][0]);
        assert_string_equal(g.val[i], want[i][1]);
    }
}

static void levels_and_limits(void **state)
{
    (void)state;
    got g = {0};
    tm2__log(sink, &g, TM2_LOG_INFO, TM2_LOG_DEBUG, "quiet", "a=%d", 1);
    assert_int_equal(g.calls, 0);
    tm2__log(NULL, &g, TM2_LOG_DEBUG, TM2_LOG_ERROR, "nobody", "");
    tm2__log(sink, &g, TM2_LOG_INFO, TM2_LOG_INFO, "bare", "");
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.n, 0);
    /* A value longer than the bound is cut, not overrun. */
    char big[3 * TM2__LOG_VALUE];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    tm2__log(sink, &g, TM2_LOG_INFO, TM2_LOG_INFO, "big", "v=%s w=%s", big, big);
    assert_int_equal(g.n, 2);
    assert_int_equal(strlen(g.val[0]), TM2__LOG_VALUE - 1);
    /* Fields past the bound are dropped. */
    tm2__log(sink, &g, TM2_LOG_INFO, TM2_LOG_INFO, "many",
             "a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8 i=9 j=10 k=11 l=12 m=13 n=14");
    assert_int_equal(g.n, TM2__LOG_FIELDS);
    assert_string_equal(g.val[TM2__LOG_FIELDS - 1], "12");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conversions),
        cmocka_unit_test(levels_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
