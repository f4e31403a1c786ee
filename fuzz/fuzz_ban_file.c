/* The ban file loader (tm2p2p/ban.h) on arbitrary bytes as the file's
 * content (the loader reads only from a path: the bytes go to a file in a
 * private temporary directory, on /dev/shm when there is one).
 *
 * Checked: the loader never crashes and answers 0, TM2_EDECODE or
 * TM2_ETOOBIG (never anything else for a regular file it can read); on 0,
 * at most TM2_BANS_MAX entries, each with a valid target (an ID that
 * validates, or an IP), times not negative, a NUL-terminated reason; the
 * list goes into a ban list (tm2__bans_replace) and comes back the same
 * (as many, each target banned); save → load gives the same entries in the
 * same order (targets, times, reasons), and a second save writes the same
 * bytes as the first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "switch/bans.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static char dir[64], in_path[96], out_path[96], out2_path[96];

static void cleanup(void)
{
    unlink(in_path);
    unlink(out_path);
    unlink(out2_path);
    rmdir(dir);
}

static void setup(void)
{
    if (dir[0])
        return;
    snprintf(dir, sizeof dir, "%s/tm2-fuzz-bans-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(in_path, sizeof in_path, "%s/in.json", dir);
    snprintf(out_path, sizeof out_path, "%s/out.json", dir);
    snprintf(out2_path, sizeof out2_path, "%s/out2.json", dir);
    atexit(cleanup);
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    CHECK(buf != NULL);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            CHECK(buf != NULL);
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        if (k == 0)
            break;
        n += k;
    }
    fclose(f);
    *len = n;
    return buf;
}

static void check_entry(const tm2_ban *b)
{
    if (b->is_ip) {
        char t[64];
        CHECK(tm2_ban_target_format(b, t, sizeof t) > 0);
    } else {
        CHECK(tm2_id_validate(b->id.s) == 0);
    }
    CHECK(b->created_unix_ms >= 0 && b->expires_unix_ms >= 0);
    CHECK(memchr(b->reason, '\0', sizeof b->reason) != NULL);
}

static bool same(const tm2_ban *a, const tm2_ban *b)
{
    if (a->is_ip != b->is_ip || a->created_unix_ms != b->created_unix_ms ||
        a->expires_unix_ms != b->expires_unix_ms || strcmp(a->reason, b->reason) != 0)
        return false;
    return a->is_ip ? memcmp(a->ip, b->ip, 16) == 0 : strcmp(a->id.s, b->id.s) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    setup();
    write_file(in_path, data, size);
    tm2_ban *bans = NULL;
    size_t n = 99;
    char why[256];
    int rc = tm2_ban_file_load(in_path, &bans, &n, why, sizeof why);
    CHECK(memchr(why, '\0', sizeof why) != NULL);
    if (rc != 0) {
        CHECK(rc == TM2_EDECODE || rc == TM2_ETOOBIG);
        CHECK(bans == NULL && n == 0);
        return 0;
    }
    CHECK(n <= TM2_BANS_MAX && (n == 0) == (bans == NULL));
    for (size_t i = 0; i < n; i++)
        check_entry(&bans[i]);

    /* Into a ban list: nothing expires at time 0 but what the file says. */
    tm2__bans list;
    CHECK(tm2__bans_init(&list) == 0);
    CHECK(tm2__bans_replace(&list, bans, n, 0) == 0);
    for (size_t i = 0; i < n; i++) {
        tm2_ban hit;
        if (bans[i].is_ip)
            CHECK(tm2__bans_has_ip(&list, bans[i].ip, 0, &hit));
        else
            CHECK(tm2__bans_has_id(&list, &bans[i].id, 0, &hit));
    }
    CHECK(tm2__bans_copy(&list, 0, NULL, 0) <= n);
    tm2__bans_free(&list);

    /* Round trip: keep every entry (now 0). */
    CHECK(tm2_ban_file_save(out_path, bans, n, 0, why, sizeof why) == 0);
    tm2_ban *back = NULL;
    size_t m = 0;
    CHECK(tm2_ban_file_load(out_path, &back, &m, why, sizeof why) == 0);
    CHECK(m == n);
    for (size_t i = 0; i < n; i++)
        CHECK(same(&bans[i], &back[i]));
    CHECK(tm2_ban_file_save(out2_path, back, m, 0, why, sizeof why) == 0);
    size_t l1, l2;
    uint8_t *t1 = read_all(out_path, &l1), *t2 = read_all(out2_path, &l2);
    CHECK(l1 == l2 && memcmp(t1, t2, l1) == 0);
    free(t1);
    free(t2);
    free(bans);
    free(back);
    return 0;
}
