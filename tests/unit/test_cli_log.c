/* The program's log lines: an overlong line is cut between whole escapes
 * and stays valid JSON (or parseable logfmt); short lines are untouched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "cli/log.c"

/* Runs one cli_log_kv (or, lib set, the library's sink) into a pipe and
 * returns the line (malloc'd). */
static char *log_line(cli_log_format fmt, const char *key, const char *value, bool lib)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    cli_log lg;
    cli_log_init(&lg, TM2_LOG_DEBUG, fmt, "n1");
    lg.fd = p[1];
    if (lib) {
        tm2_log_field f[] = {{key, value}, {"after", "x"}};
        cli_log_switch(&lg, TM2_LOG_INFO, "hello", f, 2);
    } else {
        cli_log_kv(&lg, TM2_LOG_INFO, "hello", key, value, "after", "x", (const char *)NULL);
    }
    close(p[1]);
    char *buf = calloc(1, 2 * LINE_MAX_BYTES);
    assert_non_null(buf);
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], buf + n, 2 * LINE_MAX_BYTES - 1 - n)) > 0)
        n += (size_t)r;
    close(p[0]);
    assert_true(n > 0 && buf[n - 1] == '\n');
    assert_true(n <= LINE_MAX_BYTES);
    buf[n - 1] = '\0';
    return buf;
}

static char *one_line(cli_log_format fmt, const char *key, const char *value)
{
    return log_line(fmt, key, value, false);
}

/* The library's fields go through the same escaping as the program's own:
 * a newline or quote from a peer is escaped once, the line stays one line. */
static void library_fields_escaped_once(void **state)
{
    (void)state;
    char *text = log_line(CLI_LOG_LOGFMT, "reason", "evil\"\nmsg=forged", true);
    assert_null(strchr(text, '\n'));
    assert_non_null(strstr(text, " msg=hello reason=\"evil\\\"\\nmsg=forged\" after=x"));
    free(text);
    text = log_line(CLI_LOG_JSON, "reason", "evil\"\nmsg=forged", true);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "reason")->valuestring, "evil\"\nmsg=forged");
    assert_string_equal(cJSON_GetObjectItem(j, "msg")->valuestring, "hello");
    cJSON_Delete(j);
    free(text);
}

static void json_cut_never_splits_an_escape(void **state)
{
    (void)state;
    /* Every offset of the cut against a run of 6-byte escapes. */
    for (size_t len = LINE_MAX_BYTES / 6 - 40; len < LINE_MAX_BYTES / 6 + 10; len++) {
        char *v = malloc(len + 1);
        assert_non_null(v);
        memset(v, 0x01, len);
        v[len] = '\0';
        char *text = one_line(CLI_LOG_JSON, "value", v);
        cJSON *j = cJSON_Parse(text);
        if (!j)
            fail_msg("invalid JSON for a %zu-byte value: ...%s", len, text + strlen(text) - 40);
        cJSON *f = cJSON_GetObjectItem(j, "value");
        assert_true(cJSON_IsString(f));
        /* What is there is a prefix of the value. */
        assert_true(strlen(f->valuestring) <= len);
        assert_int_equal(memcmp(f->valuestring, v, strlen(f->valuestring)), 0);
        cJSON_Delete(j);
        free(text);
        free(v);
    }
}

static void logfmt_cut_closes_the_quote(void **state)
{
    (void)state;
    char v[LINE_MAX_BYTES];
    memset(v, '"', sizeof v - 1);
    v[sizeof v - 1] = '\0';
    char *text = one_line(CLI_LOG_LOGFMT, "value", v);
    size_t n = strlen(text);
    assert_true(n > 16);
    assert_int_equal(text[n - 1], '"');
    assert_null(strstr(text, "after="));
    free(text);
}

static void short_lines_whole(void **state)
{
    (void)state;
    char *text = one_line(CLI_LOG_JSON, "peer", "a\nb\"c");
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "peer")->valuestring, "a\nb\"c");
    assert_string_equal(cJSON_GetObjectItem(j, "after")->valuestring, "x");
    assert_string_equal(cJSON_GetObjectItem(j, "node")->valuestring, "n1");
    cJSON_Delete(j);
    free(text);
    text = one_line(CLI_LOG_LOGFMT, "peer", "plain");
    assert_non_null(strstr(text, " peer=plain after=x"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_cut_never_splits_an_escape),
        cmocka_unit_test(logfmt_cut_closes_the_quote),
        cmocka_unit_test(short_lines_whole),
        cmocka_unit_test(library_fields_escaped_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
