/* Runs the TOML parser over the toml-test corpus (TOML 1.0 file list):
 * every invalid document must be refused, and every valid one must parse to
 * exactly the tree its tagged JSON describes, or be refused with an
 * "unsupported: ..." error (counted and listed).
 *
 * usage: toml_test_runner TESTS_DIR   (the corpus's tests/ directory, with
 * files-toml-1.0.0 listing the documents that apply to TOML 1.0) */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/toml.h"

/* cJSON strings end at NUL, and TOML strings may hold "\u0000": both sides
 * map NUL to U+10FFFE (UTF-8 f4 8f bf be), which the corpus never uses. */
#define NUL_STAND_IN     "\xf4\x8f\xbf\xbe"
#define NUL_STAND_IN_ESC "\\udbff\\udffe"

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        free(b);
        return NULL;
    }
    b[n < cap ? n : cap - 1] = '\0';
    *len = n;
    return b;
}

/* The JSON text with every \u0000 escape replaced by the stand-in's. */
static char *json_map_nul(const char *j)
{
    size_t n = strlen(j);
    char *out = malloc(n * 2 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (j[i] == '\\' && !strncmp(j + i, "\\u0000", 6)) {
            memcpy(out + o, NUL_STAND_IN_ESC, strlen(NUL_STAND_IN_ESC));
            o += strlen(NUL_STAND_IN_ESC);
            i += 5;
        } else if (j[i] == '\\' && i + 1 < n) {
            out[o++] = j[i++];
            out[o++] = j[i];
        } else {
            out[o++] = j[i];
        }
    }
    out[o] = '\0';
    return out;
}

static char *map_nul(const char *s, size_t len)
{
    char *out = malloc(len * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i]) {
            out[o++] = s[i];
        } else {
            memcpy(out + o, NUL_STAND_IN, 4);
            o += 4;
        }
    }
    out[o] = '\0';
    return out;
}

/* Date-time text in one form: 'T' and 'Z' upper-case, a space separator as
 * 'T', trailing zeros of the fraction (and a bare '.') dropped. */
static void norm_datetime(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; in[i] && o + 1 < cap; i++) {
        char c = in[i];
        if (c == 't' || c == ' ')
            c = 'T';
        if (c == 'z')
            c = 'Z';
        out[o++] = c;
        if (c == '.') {
            size_t st = o - 1, e = i + 1;
            while (in[e] >= '0' && in[e] <= '9')
                e++;
            size_t last = e;
            while (last > i + 1 && in[last - 1] == '0')
                last--;
            if (last == i + 1) {
                o = st; /* ".000" says nothing */
            } else {
                for (size_t k = i + 1; k < last && o + 1 < cap; k++)
                    out[o++] = in[k];
            }
            i = e - 1;
        }
    }
    out[o] = '\0';
}

static bool is_tag(const cJSON *j)
{
    if (!cJSON_IsObject(j) || cJSON_GetArraySize(j) != 2)
        return false;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "value");
    return cJSON_IsString(t) && cJSON_IsString(v);
}

static double parse_float(const char *s)
{
    const char *t = s;
    bool neg = *t == '-';
    if (*t == '+' || *t == '-')
        t++;
    if (!strcmp(t, "inf"))
        return neg ? -INFINITY : INFINITY;
    if (!strcmp(t, "nan"))
        return NAN;
    return strtod(s, NULL);
}

static bool same(const toml_value *v, const cJSON *j, char *why, size_t cap)
{
    static const char *const tags[] = {
        [TOML_STRING] = "string",   [TOML_INTEGER] = "integer",        [TOML_FLOAT] = "float",
        [TOML_BOOL] = "bool",       [TOML_DATETIME] = "datetime",      [TOML_DATETIME_LOCAL] = "datetime-local",
        [TOML_DATE_LOCAL] = "date-local", [TOML_TIME_LOCAL] = "time-local",
    };
    if (v->type == TOML_TABLE) {
        if (!cJSON_IsObject(j) || is_tag(j)) {
            snprintf(why, cap, "line %u: table where JSON has something else", v->line);
            return false;
        }
        if ((size_t)cJSON_GetArraySize(j) != v->u.t.n) {
            snprintf(why, cap, "line %u: table with %zu keys, JSON has %d", v->line, v->u.t.n,
                     cJSON_GetArraySize(j));
            return false;
        }
        for (size_t k = 0; k < v->u.t.n; k++) {
            char *key = map_nul(v->u.t.items[k].key, v->u.t.items[k].key_len);
            const cJSON *c = key ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
            if (!c) {
                snprintf(why, cap, "key '%s' not in the JSON", key ? key : "?");
                free(key);
                return false;
            }
            free(key);
            if (!same(v->u.t.items[k].value, c, why, cap))
                return false;
        }
        return true;
    }
    if (v->type == TOML_ARRAY) {
        if (!cJSON_IsArray(j) || (size_t)cJSON_GetArraySize(j) != v->u.a.n) {
            snprintf(why, cap, "line %u: array of %zu where JSON differs", v->line, v->u.a.n);
            return false;
        }
        size_t k = 0;
        for (const cJSON *c = j->child; c; c = c->next, k++)
            if (!same(v->u.a.items[k], c, why, cap))
                return false;
        return true;
    }
    if (!is_tag(j)) {
        snprintf(why, cap, "line %u: %s where JSON has no tagged value", v->line, tags[v->type]);
        return false;
    }
    const char *type = cJSON_GetObjectItemCaseSensitive(j, "type")->valuestring;
    const char *want = cJSON_GetObjectItemCaseSensitive(j, "value")->valuestring;
    if (strcmp(type, tags[v->type])) {
        snprintf(why, cap, "line %u: %s, JSON says %s", v->line, tags[v->type], type);
        return false;
    }
    bool ok = false;
    char got[128];
    switch (v->type) {
    case TOML_STRING: {
        char *m = map_nul(v->u.s.ptr, v->u.s.len);
        ok = m && !strcmp(m, want);
        free(m);
        snprintf(got, sizeof got, "%.100s", v->u.s.ptr);
        break;
    }
    case TOML_INTEGER:
        ok = strtoll(want, NULL, 10) == v->u.i;
        snprintf(got, sizeof got, "%lld", (long long)v->u.i);
        break;
    case TOML_FLOAT: {
        double w = parse_float(want);
        ok = (isnan(w) && isnan(v->u.f)) || w == v->u.f;
        snprintf(got, sizeof got, "%.17g", v->u.f);
        break;
    }
    case TOML_BOOL:
        ok = !strcmp(want, v->u.b ? "true" : "false");
        snprintf(got, sizeof got, "%s", v->u.b ? "true" : "false");
        break;
    default: {
        char a[128], b[128];
        norm_datetime(v->u.s.ptr, a, sizeof a);
        norm_datetime(want, b, sizeof b);
        ok = !strcmp(a, b);
        snprintf(got, sizeof got, "%.100s", v->u.s.ptr);
        break;
    }
    }
    if (!ok)
        snprintf(why, cap, "line %u: got %s, want %.100s", v->line, got, want);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s TESTS_DIR\n", argv[0]);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/files-toml-1.0.0", argv[1]);
    FILE *list = fopen(path, "r");
    if (!list) {
        fprintf(stderr, "toml-test: cannot open %s\n", path);
        return 2;
    }
    unsigned passed = 0, failed = 0, unsupported = 0;
    char line[1024];
    while (fgets(line, sizeof line, list)) {
        line[strcspn(line, "\r\n")] = '\0';
        size_t ll = strlen(line);
        if (ll < 5 || strcmp(line + ll - 5, ".toml"))
            continue;
        bool valid = !strncmp(line, "valid/", 6);
        snprintf(path, sizeof path, "%s/%s", argv[1], line);
        size_t len = 0;
        char *text = read_all(path, &len);
        if (!text) {
            printf("FAIL %s: cannot read\n", line);
            failed++;
            continue;
        }
        toml_value *root = NULL;
        toml_error err;
        int r = toml_parse(text, len, &root, &err);
        free(text);
        if (!valid) {
            if (r == 0) {
                printf("FAIL %s: accepted an invalid document\n", line);
                failed++;
            } else {
                passed++;
            }
            toml_free(root);
            continue;
        }
        if (r != 0) {
            if (!strncmp(err.msg, "unsupported", 11)) {
                printf("UNSUPPORTED %s: line %u: %s\n", line, err.line, err.msg);
                unsupported++;
            } else {
                printf("FAIL %s: refused: line %u: %s\n", line, err.line, err.msg);
                failed++;
            }
            continue;
        }
        snprintf(path + strlen(path) - 5, 6, ".json");
        char *json = read_all(path, &len);
        char *mapped = json ? json_map_nul(json) : NULL;
        cJSON *want = mapped ? cJSON_Parse(mapped) : NULL;
        free(json);
        free(mapped);
        char why[512] = "";
        if (!want) {
            printf("FAIL %s: cannot read the expected JSON\n", line);
            failed++;
        } else if (!same(root, want, why, sizeof why)) {
            printf("FAIL %s: %s\n", line, why);
            failed++;
        } else {
            passed++;
        }
        cJSON_Delete(want);
        toml_free(root);
    }
    fclose(list);
    printf("toml-test: %u passed, %u failed, %u unsupported\n", passed, failed, unsupported);
    return failed ? 1 : 0;
}
