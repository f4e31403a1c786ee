/* The crawl report's escapes (src/crawl/escape.c) on arbitrary peer text
 * (monikers, network names, versions reach the report as any bytes but
 * NUL), and the --allow parser on arbitrary lists. Invariants: the output
 * is printable ASCII; the JSON string parses back (cJSON) to a string of the
 * same length; a CSV field is bare or wholly quoted with every inner quote
 * doubled; a DOT string has no unescaped quote inside; an accepted CIDR
 * prints and parses back to the same block. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "crawl/allow.h"
#include "crawl/escape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void ascii_only(const tm2__buf *b)
{
    for (size_t i = 0; i < b->len; i++)
        if ((unsigned char)b->p[i] < 0x20 || (unsigned char)b->p[i] > 0x7e)
            abort();
}

static void check_json(const char *s, size_t n)
{
    tm2__buf b = {0};
    crawl_esc_json(&b, s, n);
    if (b.oom)
        goto out;
    ascii_only(&b);
    cJSON *j = cJSON_ParseWithLength(b.p, b.len);
    if (!j || !cJSON_IsString(j))
        abort();
    /* Each input byte is one character: \u00XX for bytes >= 0x80 becomes a
     * two-byte UTF-8 sequence in cJSON's output. */
    size_t want = 0;
    for (size_t i = 0; i < n; i++)
        want += (unsigned char)s[i] >= 0x80 ? 2 : 1;
    if (strlen(j->valuestring) != want)
        abort();
    cJSON_Delete(j);
out:
    tm2__buf_free(&b);
}

static void check_csv(const char *s, size_t n)
{
    tm2__buf b = {0};
    crawl_esc_csv(&b, s, n);
    if (b.oom)
        goto out;
    ascii_only(&b);
    if (b.len && b.p[0] == '"') {
        if (b.len < 2 || b.p[b.len - 1] != '"')
            abort();
        for (size_t i = 1; i + 1 < b.len; i++)
            if (b.p[i] == '"') {
                if (i + 2 >= b.len || b.p[i + 1] != '"')
                    abort();
                i++;
            }
    } else {
        for (size_t i = 0; i < b.len; i++)
            if (b.p[i] == ',' || b.p[i] == '"')
                abort();
    }
out:
    tm2__buf_free(&b);
}

static void check_dot(const char *s, size_t n)
{
    tm2__buf b = {0};
    crawl_esc_dot(&b, s, n);
    if (b.oom)
        goto out;
    ascii_only(&b);
    if (b.len < 2 || b.p[0] != '"' || b.p[b.len - 1] != '"')
        abort();
    for (size_t i = 1; i + 1 < b.len; i++) {
        if (b.p[i] == '\\') {
            i++;   /* escaped character (possibly the closing quote's neighbour) */
            if (i >= b.len - 1)
                abort();
        } else if (b.p[i] == '"') {
            abort();
        }
    }
out:
    tm2__buf_free(&b);
}

static void check_allow(const char *s)
{
    crawl_allow a;
    char why[128];
    if (crawl_allow_parse(s, &a, why, sizeof why) != 0)
        return;
    char text[CRAWL_ALLOW_MAX * 64];
    if (crawl_allow_format(&a, text, sizeof text) < 0)
        abort();
    crawl_allow b;
    if (crawl_allow_parse(text, &b, why, sizeof why) != 0 || a.public_ok != b.public_ok || a.n != b.n)
        abort();
    for (size_t i = 0; i < a.n; i++)
        if (memcmp(a.cidrs[i].ip, b.cidrs[i].ip, 16) || a.cidrs[i].bits != b.cidrs[i].bits)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t n = strlen(s);   /* peer strings never hold NUL */
    check_json(s, n);
    check_csv(s, n);
    check_dot(s, n);
    check_allow(s);
    free(s);
    return 0;
}
