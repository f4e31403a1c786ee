/* The TOML parser's own guarantees beyond the toml-test corpus
 * (tests/toml): the tree's shape and lines, strings with NUL, newlines kept as
 * written, the depth and key-part bounds, large tables, and messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tv.h"

#include "cli/toml.c"

static toml_value *ok(const char *text)
{
    toml_value *root = NULL;
    toml_error err;
    if (toml_parse(text, strlen(text), &root, &err))
        fail_msg("refused '%s': line %u: %s", text, err.line, err.msg);
    return root;
}

static void refused(const char *text, unsigned line, const char *frag)
{
    toml_value *root = (toml_value *)1;
    toml_error err;
    if (toml_parse(text, strlen(text), &root, &err) != -1)
        fail_msg("accepted '%s'", text);
    assert_null(root);
    if (err.line != line || !strstr(err.msg, frag))
        fail_msg("'%s': line %u '%s', wanted line %u '%s'", text, err.line, err.msg, line, frag);
    assert_false(err.oom);
}

static void tree_and_lines(void **state)
{
    (void)state;
    toml_value *r = ok("a = 1\n\n[t]\nb.c = 'x'\n[[arr]]\n[[arr]]\nd = 2.5\n");
    assert_int_equal(r->type, TOML_TABLE);
    assert_int_equal(r->u.t.n, 3);
    assert_string_equal(r->u.t.items[0].key, "a");
    assert_int_equal(toml_get(r, "a")->u.i, 1);
    const toml_value *t = toml_get(r, "t");
    assert_int_equal(t->line, 3);
    const toml_value *c = toml_get(toml_get(t, "b"), "c");
    assert_int_equal(c->type, TOML_STRING);
    assert_int_equal(c->line, 4);
    assert_string_equal(c->u.s.ptr, "x");
    const toml_value *arr = toml_get(r, "arr");
    assert_int_equal(arr->type, TOML_ARRAY);
    assert_int_equal(arr->u.a.n, 2);
    assert_int_equal(arr->u.a.items[1]->line, 6);
    assert_true(toml_get(arr->u.a.items[1], "d")->u.f == 2.5);
    assert_null(toml_get(r, "missing"));
    assert_null(toml_get(toml_get(r, "a"), "x")); /* not a table */
    assert_null(toml_get(NULL, "a"));
    toml_free(r);
}

static void strings_exact(void **state)
{
    (void)state;
    toml_value *r = ok("n = \"a\\u0000b\"\n\"k\\u0000\" = 1\ncrlf = \"\"\"\r\nx\r\ny\"\"\"\r\n"
                       "lit = '''\nq''''\n");
    const toml_value *n = toml_get(r, "n");
    assert_int_equal(n->u.s.len, 3);
    assert_memory_equal(n->u.s.ptr, "a\0b", 3);
    assert_int_equal(r->u.t.items[1].key_len, 2);
    assert_memory_equal(r->u.t.items[1].key, "k\0", 2);
    assert_string_equal(toml_get(r, "crlf")->u.s.ptr, "x\r\ny"); /* as written; first newline trimmed */
    assert_string_equal(toml_get(r, "lit")->u.s.ptr, "q'");
    toml_free(r);
}

static void numbers_and_times(void **state)
{
    (void)state;
    toml_value *r = ok("i = -9223372036854775808\nh = 0xdead_BEEF\nf = -0.0\nn = -nan\n"
                       "d = 1979-05-27t07:32:00.250z\nl = 1979-05-27 07:32:00\nt = 00:00:60\n");
    assert_true(toml_get(r, "i")->u.i == INT64_MIN);
    assert_int_equal(toml_get(r, "h")->u.i, 0xdeadbeef);
    assert_int_equal(toml_get(r, "n")->type, TOML_FLOAT);
    assert_int_equal(toml_get(r, "d")->type, TOML_DATETIME);
    assert_string_equal(toml_get(r, "d")->u.s.ptr, "1979-05-27T07:32:00.250Z");
    assert_int_equal(toml_get(r, "l")->type, TOML_DATETIME_LOCAL);
    assert_string_equal(toml_get(r, "l")->u.s.ptr, "1979-05-27T07:32:00");
    assert_int_equal(toml_get(r, "t")->type, TOML_TIME_LOCAL);
    toml_free(r);
    refused("d = 1900-02-29\n", 1, "bad date");
    refused("d = 2000-02-30\n", 1, "bad date");
    refused("d = 1979-05-27T24:00:00\n", 1, "bad date");
    refused("d = 1979-05-27T07:32:00+24:00\n", 1, "bad date");
    refused("t = 07:32:00Z\n", 1, "bad date");
}

/* The nesting bound holds for headers, dotted keys, arrays and inline tables. */
static void depth_bound(void **state)
{
    (void)state;
    char text[2048];
    for (int kind = 0; kind < 4; kind++) {
        for (int n = TOML_MAX_DEPTH - 1; n <= TOML_MAX_DEPTH + 1; n++) {
            size_t o = 0;
            if (kind == 0 || kind == 1) {
                /* an array-of-tables element is one level below its array */
                if (kind == 0)
                    o += (size_t)sprintf(text + o, "[[x]]\n[x");
                else
                    o += (size_t)sprintf(text + o, "[x]\n");
                for (int i = kind == 0 ? 2 : 1; i < n; i++)
                    o += (size_t)sprintf(text + o, "%sa", i > 1 || kind == 0 ? "." : "");
                o += (size_t)sprintf(text + o, kind == 0 ? "]\n" : " = 1\n");
            } else {
                o += (size_t)sprintf(text + o, "x = ");
                for (int i = 1; i < n; i++)
                    o += (size_t)sprintf(text + o, kind == 2 ? "[" : "{a = ");
                o += (size_t)sprintf(text + o, "1");
                for (int i = 1; i < n; i++)
                    o += (size_t)sprintf(text + o, kind == 2 ? "]" : "}");
                text[o++] = '\n';
            }
            text[o] = '\0';
            toml_value *r = NULL;
            toml_error err;
            int rc = toml_parse(text, o, &r, &err);
            if (n <= TOML_MAX_DEPTH) {
                if (rc)
                    fail_msg("kind %d depth %d refused: %s", kind, n, err.msg);
                toml_free(r);
            } else if (rc != -1 || !strstr(err.msg, "nested too deeply")) {
                fail_msg("kind %d depth %d: %d %s", kind, n, rc, rc ? err.msg : "");
            }
        }
    }
    char many[TOML_MAX_KEY_PARTS * 2 + 16] = "";
    for (int i = 0; i <= TOML_MAX_KEY_PARTS; i++)
        strcat(many, i ? ".a" : "a");
    strcat(many, " = 1\n");
    refused(many, 1, "parts");
}

/* Thousands of keys in one table go through the hash index. */
static void large_table(void **state)
{
    (void)state;
    size_t cap = 5000 * 24, o = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int i = 0; i < 5000; i++)
        o += (size_t)snprintf(text + o, cap - o, "k%d = %d\n", i, i);
    toml_value *r = NULL;
    toml_error err;
    assert_int_equal(toml_parse(text, o, &r, &err), 0);
    assert_int_equal(r->u.t.n, 5000);
    for (int i = 0; i < 5000; i += 123) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(toml_get(r, k)->u.i, i);
    }
    toml_free(r);
    o += (size_t)snprintf(text + o, cap - o, "k4321 = 0\n");
    assert_int_equal(toml_parse(text, o, &r, &err), -1);
    assert_int_equal(err.line, 5001);
    assert_non_null(strstr(err.msg, "k4321: defined twice"));
    free(text);
}

static void messages(void **state)
{
    (void)state;
    refused("a = {\nb = 1}\n", 1, "newline inside an inline table");
    refused("a = {b = 1,\nc = 2}\n", 1, "newline inside an inline table");
    refused("[a]\nb = 1\n[a.b]\n", 3, "[a.b] defined twice");
    refused("[a]\nb.c = 1\n[a.b]\n", 3, "dotted keys");
    refused("a = [1]\n[[a]]\n", 2, "already defined as an array");
    refused("[[a]]\n[a]\n", 2, "array of tables");
    refused("a = {}\na.b = 1\n", 2, "inline table");
    refused("[x.y]\n[x]\ny.z = 1\n", 3, "x.y: cannot add keys");
    refused("a = \"\x01\"\n", 1, "control character 0x01");
    refused("\n\na = \"\xc0\xaf\"\n", 3, "invalid UTF-8");
    refused("a = \"\xed\xa0\x80\"\n", 1, "invalid UTF-8"); /* a surrogate */
    refused("a = 0x_1\n", 1, "misplaced '_'");
    refused("a = 1\r\n\rb = 2\n", 2, "byte 0x0d");
    refused("a = 1\rb = 2\n", 1, "unexpected byte 0x0d after the value");
    toml_value *r = NULL;
    toml_error err;
    assert_int_equal(toml_parse("a = 1\n\0\n", 8, &r, &err), -1);
    assert_int_equal(err.line, 2);
    assert_non_null(strstr(err.msg, "NUL byte"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tree_and_lines), cmocka_unit_test(strings_exact), cmocka_unit_test(numbers_and_times),
        cmocka_unit_test(depth_bound),    cmocka_unit_test(large_table),   cmocka_unit_test(messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
