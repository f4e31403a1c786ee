/* The built tm2p2p program's "keys" command, run as a child process on a
 * temporary node home. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tv.h"

#define PROGRAM TM2_BINARY_DIR "/tm2p2p"
#define IDV "upstream_identity_vectors.txt"

extern char **environ;

struct run {
    int status;     /* exit code, or -1 if the child did not exit normally */
    char out[8192];
    char err[8192];
};

struct home {
    char dir[64];
    char key[256];
    char out[256];
    char err[256];
};

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs the program with args (NULL-terminated), output captured in files. */
static void run(struct home *h, struct run *r, const char *const *args)
{
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)PROGRAM;
    for (; *args; args++) {
        assert_true(n < 15);
        argv[n++] = (char *)*args;
    }
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, h->out, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 2, h->err, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    pid_t pid;
    int e = posix_spawn(&pid, PROGRAM, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0)
        fail_msg("cannot run %s: %s", PROGRAM, strerror(e));
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    slurp(h->out, r->out, sizeof r->out);
    slurp(h->err, r->err, sizeof r->err);
}

#define RUN(h, r, ...) run(h, r, (const char *const[]){__VA_ARGS__, NULL})

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    struct home *h = calloc(1, sizeof *h);
    assert_non_null(h);
    strcpy(h->dir, "/tmp/tm2-cli-keys-XXXXXX");
    assert_non_null(mkdtemp(h->dir));
    snprintf(h->key, sizeof h->key, "%s/home/secrets/node_key.json", h->dir);
    snprintf(h->out, sizeof h->out, "%s/stdout", h->dir);
    snprintf(h->err, sizeof h->err, "%s/stderr", h->dir);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    struct home *h = *state;
    nftw(h->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(h);
    return 0;
}

static const char *home_of(struct home *h)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/home", h->dir);
    return p;
}

static void write_file(const char *path, const char *text)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    char *s = strrchr(dir, '/');
    *s = '\0';
    mkdir(dir, 0700);
    *s = '/';
    mkdir(dir, 0700);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static bool is_id_line(const char *s)
{
    return strlen(s) == 41 && !strncmp(s, "g1", 2) && s[40] == '\n';
}

/* ---- tests -------------------------------------------------------------------- */

static void gen_then_show(void **state)
{
    struct home *h = *state;
    struct run r;
    RUN(h, &r, "keys", "gen", "--home", home_of(h));
    assert_int_equal(r.status, 0);
    assert_true(is_id_line(r.out));
    assert_non_null(strstr(r.err, h->key));
    char id[64];
    strcpy(id, r.out);

    struct stat st;
    assert_int_equal(stat(h->key, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    char secrets[512];
    snprintf(secrets, sizeof secrets, "%s/secrets", home_of(h));
    assert_int_equal(stat(secrets, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    RUN(h, &r, "keys", "show", "--home", home_of(h));
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, id);
    char opt[512];
    snprintf(opt, sizeof opt, "--home=%s/", home_of(h));    /* trailing '/' is fine */
    RUN(h, &r, "keys", "show", opt);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, id);
}

static void gen_refuses_to_overwrite(void **state)
{
    struct home *h = *state;
    struct run r;
    RUN(h, &r, "keys", "gen", "--home", home_of(h));
    assert_int_equal(r.status, 0);
    char first[64], before[512], after[512];
    strcpy(first, r.out);
    slurp(h->key, before, sizeof before);

    RUN(h, &r, "keys", "gen", "--home", home_of(h));
    assert_int_equal(r.status, 1);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "--force"));
    slurp(h->key, after, sizeof after);
    assert_string_equal(before, after);

    RUN(h, &r, "keys", "gen", "--force", "--home", home_of(h));
    assert_int_equal(r.status, 0);
    assert_true(is_id_line(r.out));
    assert_string_not_equal(r.out, first);
    char second[64];
    strcpy(second, r.out);
    RUN(h, &r, "keys", "show", "--home", home_of(h));
    assert_string_equal(r.out, second);
}

/* The reference-written key of misc/deployments/test7 ('After' format). */
static void show_reference_key(void **state)
{
    struct home *h = *state;
    char *line = NULL;
    FILE *f = fopen(tv_path(IDV), "r");
    assert_non_null(f);
    size_t cap = 0;
    char b64[128] = "", pub[80] = "", id[64] = "";
    while (getline(&line, &cap, f) > 0) {
        if (strncmp(line, "misc/deployments/test7.gno.land/README.md ('After' format)", 58) != 0)
            continue;
        line[strcspn(line, "\r\n")] = '\0';
        char *fld[5];
        assert_int_equal(tv_split(line, '|', fld, 5), 5);
        snprintf(b64, sizeof b64, "%s", fld[1]);
        snprintf(pub, sizeof pub, "%s", fld[3]);
        snprintf(id, sizeof id, "%s", fld[4]);
    }
    free(line);
    fclose(f);
    assert_string_equal(id, "g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y");

    char text[256];
    snprintf(text, sizeof text, "{\n  \"priv_key\": \"%s\"\n}", b64);
    write_file(h->key, text);
    struct run r;
    RUN(h, &r, "keys", "show", "--home", home_of(h));
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y\n");

    RUN(h, &r, "keys", "show", "--json", "--home", home_of(h));
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(j), 3);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "id")), id);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "pub_key_hex")), pub);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "pub_key_base64")),
                        "4qRAODdGXpLfx/F0pBHG+hY1neSHNd2Y3n2CZ7FAms4=");
    cJSON_Delete(j);

    /* The same key in the legacy (Jan-2025) wrapped form. */
    snprintf(text, sizeof text,
             "{\n  \"priv_key\": {\n    \"@type\": \"/tm.PrivKeyEd25519\",\n    \"value\": \"%s\"\n  }\n}",
             b64);
    write_file(h->key, text);
    RUN(h, &r, "keys", "show", "--home", home_of(h));
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y\n");
}

/* --addr prints the canonical NetAddress of this node for a dial address. */
static void show_net_address(void **state)
{
    struct home *h = *state;
    struct run r;
    RUN(h, &r, "keys", "gen", "--home", home_of(h));
    assert_int_equal(r.status, 0);
    char id[64], want[256];
    snprintf(id, sizeof id, "%.40s", r.out);

    static const struct {
        const char *in, *out;
    } cases[] = {
        {"127.0.0.1:26656", "127.0.0.1:26656"},
        {"tcp://127.0.0.1:26656", "127.0.0.1:26656"},
        {"[::ffff:127.0.0.1]:026656", "127.0.0.1:26656"},
        {"[0:0:0:0:0:0:0:1]:1", "[::1]:1"},
        {"localhost:7", NULL},                           /* resolved: 127.0.0.1 or ::1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        RUN(h, &r, "keys", "show", "--home", home_of(h), "--addr", cases[i].in);
        assert_int_equal(r.status, 0);
        if (cases[i].out) {
            snprintf(want, sizeof want, "%s@%s\n", id, cases[i].out);
            assert_string_equal(r.out, want);
        } else {
            char v4[256], v6[256];
            snprintf(v4, sizeof v4, "%s@127.0.0.1:7\n", id);
            snprintf(v6, sizeof v6, "%s@[::1]:7\n", id);
            if (strcmp(r.out, v4) && strcmp(r.out, v6))
                fail_msg("localhost printed as %s", r.out);
        }
        assert_string_equal(r.err, "");
    }

    RUN(h, &r, "keys", "show", "--home", home_of(h), "--json", "--addr", "127.0.0.1:26656");
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    snprintf(want, sizeof want, "%s@127.0.0.1:26656", id);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "net_address")), want);
    cJSON_Delete(j);

    /* Parses, but peers could not dial it: printed with a warning. */
    RUN(h, &r, "keys", "show", "--home", home_of(h), "--addr", "0.0.0.0:26656");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "not dialable"));

    /* A malformed address is a usage error. */
    static const char *const bad[] = {"127.0.0.1", "::1:26656", "127.0.0.1:65536", "01.2.3.4:1",
                                      "x@127.0.0.1:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        RUN(h, &r, "keys", "show", "--home", home_of(h), "--addr", bad[i]);
        if (r.status != 2)
            fail_msg("--addr %s: exit %d, want 2", bad[i], r.status);
        assert_non_null(strstr(r.err, "--addr"));
        assert_string_equal(r.out, "");
    }
}

static void show_errors(void **state)
{
    struct home *h = *state;
    struct run r;
    RUN(h, &r, "keys", "show", "--home", home_of(h));
    assert_int_equal(r.status, 1);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, h->key));
    assert_non_null(strstr(r.err, "does not exist"));

    write_file(h->key, "{\"priv_key\":\"AAAA\"}");
    RUN(h, &r, "keys", "show", "--home", home_of(h));
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, h->key));
    assert_non_null(strstr(r.err, "holds 3 bytes"));
    /* gen does not touch the bad file either. */
    RUN(h, &r, "keys", "gen", "--home", home_of(h));
    assert_int_equal(r.status, 1);
    char text[128];
    slurp(h->key, text, sizeof text);
    assert_string_equal(text, "{\"priv_key\":\"AAAA\"}");
}

static void usage_errors(void **state)
{
    struct home *h = *state;
    struct run r;
    static const char *const bad[][5] = {
        {"keys", NULL},
        {"keys", "frobnicate", NULL},
        {"keys", "gen", NULL},                          /* no --home */
        {"keys", "show", NULL},
        {"keys", "gen", "--home", NULL},                /* --home without value */
        {"keys", "show", "--home=", NULL},
        {"keys", "gen", "--home", "HOME", "--bogus"},
        {"keys", "show", "--home", "HOME", "--force"},  /* gen's flag */
        {"keys", "gen", "--home", "HOME", "--json"},    /* show's flag */
        {"keys", "show", "--home", "HOME", "extra"},
        {"keys", "show", "--home", "HOME", "--addr"},
        {"keys", "gen", "--home", "HOME", "--addr"},   /* show's option */
        {"keys", "gen", "HOME", NULL},
        {"nosuchcommand", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[6] = {0};
        for (int k = 0; k < 5 && bad[i][k]; k++)
            args[k] = strcmp(bad[i][k], "HOME") ? bad[i][k] : home_of(h);
        run(h, &r, args);
        if (r.status != 2)
            fail_msg("case %zu (%s %s): exit %d, want 2", i, args[0], args[1] ? args[1] : "",
                     r.status);
        assert_string_equal(r.out, "");
        /* One message saying what is wrong, from the program. */
        assert_true(strlen(r.err) > 20);
        assert_int_equal(strncmp(r.err, "tm2p2p", 6), 0);
    }
    /* Nothing was created by the rejected runs. */
    assert_int_equal(access(home_of(h), F_OK), -1);
}

static void help(void **state)
{
    struct home *h = *state;
    struct run r;
    static const char *const cases[][3] = {
        {"keys", "--help", NULL}, {"keys", "gen", "--help"}, {"keys", "show", "-h"},
    };
    for (size_t i = 0; i < 3; i++) {
        const char *args[4] = {cases[i][0], cases[i][1], cases[i][2], NULL};
        run(h, &r, args);
        assert_int_equal(r.status, 0);
        assert_non_null(strstr(r.out, "usage: tm2p2p keys"));
        assert_string_equal(r.err, "");
    }
    RUN(h, &r, "keys", "gen", "--help");
    assert_non_null(strstr(r.out, "--force"));
    RUN(h, &r, "keys", "show", "--help");
    assert_non_null(strstr(r.out, "--json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(gen_then_show, setup, teardown),
        cmocka_unit_test_setup_teardown(gen_refuses_to_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(show_reference_key, setup, teardown),
        cmocka_unit_test_setup_teardown(show_net_address, setup, teardown),
        cmocka_unit_test_setup_teardown(show_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(usage_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(help, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
