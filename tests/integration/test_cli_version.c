/* The built tm2p2p program's "version" command: the shape of each line, and
 * that the libraries it reports are the ones this test runs with. */
#include <regex.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <uv.h>
#if defined(TM2_TEST_OPENSSL)
#include <openssl/crypto.h>
#endif

#include "tm2p2p/node_info.h"
#include "tm2p2p/version.h"
#include "tv.h"

#define PROGRAM TM2_BINARY_DIR "/tm2p2p"

/* Runs the program with args; returns its exit code, stdout in out. */
static int run(const char *args, char *out, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", PROGRAM, args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void match(const char *s, const char *re)
{
    regex_t rx;
    assert_int_equal(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
    int r = regexec(&rx, s, 0, NULL, 0);
    regfree(&rx);
    if (r != 0)
        fail_msg("'%s' does not match %s", s, re);
}

static void version_lines(void **state)
{
    (void)state;
    char out[4096];
    assert_int_equal(run("version", out, sizeof out), 0);
    char *lines[8];
    size_t n = 0;
    for (char *s = out, *e; *s && (e = strchr(s, '\n')); s = e + 1) {
        assert_true(n < 8);
        *e = '\0';
        lines[n++] = s;
    }
    assert_int_equal(n, 6);

    tm2_build_info bi;
    tm2_build_info_get(&bi);
    char want[512];
    match(lines[0], "^tm2p2p [0-9]+\\.[0-9]+\\.[0-9]+$");
    snprintf(want, sizeof want, "tm2p2p %s", tm2_version());
    assert_string_equal(lines[0], want);

    match(lines[1], "^commit ([0-9a-f]{40}(-dirty)?|unknown)$");
    snprintf(want, sizeof want, "commit %s", bi.commit);
    assert_string_equal(lines[1], want);

    snprintf(want, sizeof want, "protocol %s", TM2_PROTOCOL_VERSION);
    assert_string_equal(lines[2], want);

    /* What this process has loaded, asked directly, not through tm2p2p. */
    match(lines[3], "^libsodium [0-9]+\\.[0-9]+\\.[0-9]+");
    snprintf(want, sizeof want, "libsodium %s", sodium_version_string());
    assert_string_equal(lines[3], want);
#if defined(TM2_TEST_OPENSSL)
    match(lines[4], "^OpenSSL [0-9]+\\.[0-9]+\\.[0-9]+");
    assert_string_equal(lines[4], OpenSSL_version(OPENSSL_VERSION));
#else
    assert_string_equal(lines[4], "OpenSSL not used");
#endif
    match(lines[5], "^libuv [0-9]+\\.[0-9]+\\.[0-9]+");
    snprintf(want, sizeof want, "libuv %s", uv_version_string());
    assert_string_equal(lines[5], want);
}

static void version_flag_and_usage(void **state)
{
    (void)state;
    char a[4096], b[4096];
    assert_int_equal(run("version", a, sizeof a), 0);
    assert_int_equal(run("--version", b, sizeof b), 0);
    assert_string_equal(a, b);
    assert_int_equal(run("version --help", b, sizeof b), 0);
    assert_non_null(strstr(b, "usage: tm2p2p version"));
    assert_int_equal(run("version extra", b, sizeof b), 2);
    assert_int_equal(run("--help", b, sizeof b), 0);
    assert_non_null(strstr(b, "version"));
}

/* The library's own answer: static strings, the version tm2_version() gives. */
static void build_info(void **state)
{
    (void)state;
    tm2_build_info bi;
    memset(&bi, 0, sizeof bi);
    tm2_build_info_get(&bi);
    assert_ptr_equal(bi.version, tm2_version());
    assert_string_equal(bi.protocol, TM2_PROTOCOL_VERSION);
    assert_string_equal(bi.libsodium, sodium_version_string());
    assert_string_equal(bi.libuv, uv_version_string());
#if defined(TM2_TEST_OPENSSL)
    assert_string_equal(bi.openssl, OpenSSL_version(OPENSSL_VERSION));
#else
    assert_null(bi.openssl);
#endif
    tm2_build_info_get(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(version_lines),
        cmocka_unit_test(version_flag_and_usage),
        cmocka_unit_test(build_info),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
