#include "tv.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *tv_path(const char *file)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", TM2_VECTORS_DIR, file);
    return path;
}

int tv_lines(const char *file, void (*cb)(char *line, void *user), void *user)
{
    FILE *f = fopen(tv_path(file), "r");
    if (!f)
        fail_msg("cannot open vector file %s", tv_path(file));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int count = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        cb(line, user);
        count++;
    }
    free(line);
    fclose(f);
    return count;
}

struct get_ctx {
    const char *name;
    char *value;
};

static void get_cb(char *line, void *user)
{
    struct get_ctx *c = user;
    size_t nl = strlen(c->name);
    if (!c->value && strncmp(line, c->name, nl) == 0 && line[nl] == '=')
        c->value = strdup(line + nl + 1);
}

char *tv_get(const char *file, const char *name)
{
    struct get_ctx c = {name, NULL};
    tv_lines(file, get_cb, &c);
    if (!c.value)
        fail_msg("vector %s not found in %s", name, file);
    return c.value;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

uint8_t *tv_hex_alloc(const char *hex, size_t *len)
{
    size_t n = strlen(hex);
    if (n % 2)
        fail_msg("odd-length hex: %s", hex);
    uint8_t *out = malloc(n / 2 + 1);
    assert_non_null(out);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            fail_msg("bad hex: %s", hex);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return out;
}

void tv_hex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n;
    uint8_t *b = tv_hex_alloc(hex, &n);
    if (n != cap)
        fail_msg("hex has %zu bytes, want %zu", n, cap);
    memcpy(out, b, n);
    free(b);
}

uint8_t *tv_get_hex(const char *file, const char *name, size_t *len)
{
    char *v = tv_get(file, name);
    uint8_t *b = tv_hex_alloc(v, len);
    free(v);
    return b;
}

int tv_split(char *line, char sep, char **fields, int max)
{
    int n = 0;
    char *p = line;
    while (n < max) {
        fields[n++] = p;
        char *q = strchr(p, sep);
        if (!q)
            break;
        *q = '\0';
        p = q + 1;
    }
    return n;
}

uint64_t tv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *tv_log_line(char *buf, size_t cap, const char *msg, const tm2_log_field *f, size_t n)
{
    size_t o = 0;
    int k = snprintf(buf, cap, "msg=\"%s\"", msg);
    o = k > 0 && (size_t)k < cap ? (size_t)k : cap - 1;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        bool q = !f[i].value[0] || strchr(f[i].value, ' ');
        k = snprintf(buf + o, cap - o, q ? " %s=\"%s\"" : " %s=%s", f[i].key, f[i].value);
        o = k > 0 && (size_t)k < cap - o ? o + (size_t)k : cap - 1;
    }
    return buf;
}

int tv_threads_named(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;               /* the thread ended meanwhile */
        if (fgets(comm, sizeof comm, f)) {
            comm[strcspn(comm, "\n")] = 0;
            n += strcmp(comm, name) == 0;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}
