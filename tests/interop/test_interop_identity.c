/* Node identity against the reference: the same seed gives the same public
 * key and ID on both sides, and each side loads the other's node_key.json. */
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "refproc.h"
#include "tm2p2p/key.h"
#include "tv.h"

#define VEC        "upstream_identity_vectors.txt"
#define TIMEOUT_MS 30000

/* ---- helpers ---------------------------------------------------------------- */

typedef struct ref_key {
    char pub[2 * TM2_PUBKEY_SIZE + 1];
    char id[TM2_ID_LEN + 1];
} ref_key;

/* Runs tm2ref with args; it must exit 0 after printing "KEY <pub> <id>". */
static void ref_key_run(const char *const *args, ref_key *out)
{
    char line[REFPROC_LINE_MAX];
    char *w[4];
    int nw;
    int st = refproc_run(args, "KEY", line, sizeof line, w, 4, &nw, TIMEOUT_MS);
    assert_int_equal(st, 0);
    assert_int_equal(nw, 3);
    assert_int_equal(strlen(w[1]), 2 * TM2_PUBKEY_SIZE);
    assert_int_equal(strlen(w[2]), TM2_ID_LEN);
    strcpy(out->pub, w[1]);
    strcpy(out->id, w[2]);
}

static void hex32(const uint8_t *b, char out[2 * 32 + 1])
{
    sodium_bin2hex(out, 2 * 32 + 1, b, 32);
}

/* Asserts that the C key has exactly the reference's public key and ID. */
static void assert_same_key(const tm2_node_key *key, const ref_key *ref)
{
    char pub[2 * TM2_PUBKEY_SIZE + 1];
    tm2_id id;
    hex32(tm2_node_key_pubkey(key), pub);
    tm2_node_key_id(key, &id);
    assert_string_equal(pub, ref->pub);
    assert_string_equal(id.s, ref->id);
}

static void ref_keyinfo_seed(const uint8_t seed[32], ref_key *out)
{
    char hex[2 * 32 + 1];
    hex32(seed, hex);
    const char *args[] = {"keyinfo", "--seed", hex, NULL};
    ref_key_run(args, out);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Temporary node homes, removed by the teardown even when a test fails. */
typedef struct homes {
    char a[64];
    char b[64];
} homes;

static int homes_setup(void **state)
{
    homes *h = calloc(1, sizeof *h);
    if (h == NULL)
        return -1;
    strcpy(h->a, "/tmp/tm2-interop-XXXXXX");
    strcpy(h->b, "/tmp/tm2-interop-XXXXXX");
    if (mkdtemp(h->a) == NULL || mkdtemp(h->b) == NULL)
        return -1;
    *state = h;
    return 0;
}

static int homes_teardown(void **state)
{
    homes *h = *state;
    nftw(h->a, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    nftw(h->b, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(h);
    return 0;
}

static void key_path(const char *home, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/secrets/node_key.json", home);
    assert_true(n > 0 && (size_t)n < cap);
}

static void make_secrets_dir(const char *home)
{
    char d[128];
    snprintf(d, sizeof d, "%s/secrets", home);
    assert_int_equal(mkdir(d, 0700), 0);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(4096);
    assert_non_null(buf);
    *len = fread(buf, 1, 4096, f);
    assert_true(feof(f));
    fclose(f);
    return buf;
}

/* ---- ID derivation ---------------------------------------------------------- */

struct seed_list {
    uint8_t seeds[16][32];
    char want_id[16][TM2_ID_LEN + 1]; /* empty when the vector file has none */
    int n;
};

/* node_key.json vectors: SOURCE|priv base64|seed hex|pubkey hex|id */
static void collect_seed(char *line, void *user)
{
    struct seed_list *l = user;
    char *f[6];
    if (tv_split(line, '|', f, 6) != 5)
        return;
    assert_true(l->n < 16);
    tv_hex(f[2], l->seeds[l->n], 32);
    assert_int_equal(strlen(f[4]), TM2_ID_LEN);
    strcpy(l->want_id[l->n], f[4]);
    l->n++;
}

static void keyinfo_same_id_for_seeds(void **state)
{
    (void)state;
    struct seed_list l = {.n = 0};
    memset(l.seeds[l.n++], 0x01, 32);
    memset(l.seeds[l.n++], 0x02, 32);
    int from_file = l.n;
    tv_lines(VEC, collect_seed, &l);
    assert_true(l.n - from_file >= 2);
    for (int i = 0; i < 4; i++)
        randombytes_buf(l.seeds[l.n++], 32);

    for (int i = 0; i < l.n; i++) {
        ref_key ref;
        tm2_node_key key;
        ref_keyinfo_seed(l.seeds[i], &ref);
        tm2_node_key_from_seed(&key, l.seeds[i]);
        assert_same_key(&key, &ref);
        assert_int_equal(tm2_node_key_check(&key), 0);
        if (l.want_id[i][0] != '\0')
            assert_string_equal(ref.id, l.want_id[i]);
        tm2_node_key_wipe(&key);
    }
}

static void keyinfo_seed_01_matches_spec(void **state)
{
    (void)state;
    uint8_t seed[32];
    memset(seed, 0x01, sizeof seed);
    ref_key ref;
    ref_keyinfo_seed(seed, &ref);
    assert_string_equal(ref.pub, "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
    assert_string_equal(ref.id, "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl");
}

/* pubkey vectors: SOURCE|pubkey hex|address hex|id */
static void check_pubkey_line(char *line, void *user)
{
    int *count = user;
    char *f[5];
    if (tv_split(line, '|', f, 5) != 4 || strlen(f[1]) != 2 * TM2_PUBKEY_SIZE)
        return;
    uint8_t pub[TM2_PUBKEY_SIZE];
    tv_hex(f[1], pub, sizeof pub);

    ref_key ref;
    const char *args[] = {"keyinfo", "--pubkey", f[1], NULL};
    ref_key_run(args, &ref);
    tm2_id id;
    tm2_id_from_pubkey(pub, &id);
    assert_string_equal(id.s, ref.id);
    assert_string_equal(ref.id, f[3]);
    ++*count;
}

static void keyinfo_same_id_for_pubkeys(void **state)
{
    (void)state;
    int count = 0;
    tv_lines(VEC, check_pubkey_line, &count);
    assert_true(count >= 3);
}

/* ---- node_key.json in both directions --------------------------------------- */

static void c_saved_file_loads_in_reference(void **state)
{
    homes *h = *state;
    char path[128];
    key_path(h->a, path, sizeof path);
    make_secrets_dir(h->a);

    uint8_t seeds[3][32];
    memset(seeds[0], 0x01, 32);
    memset(seeds[1], 0x02, 32);
    randombytes_buf(seeds[2], 32);
    for (int i = 0; i < 3; i++) {
        tm2_node_key key;
        char why[256];
        tm2_node_key_from_seed(&key, seeds[i]);
        assert_int_equal(tm2_node_key_save(path, &key, why, sizeof why), 0);

        ref_key ref;
        const char *args[] = {"node-key", "--home", h->a, "--no-create", NULL};
        ref_key_run(args, &ref);
        assert_same_key(&key, &ref);
        tm2_node_key_wipe(&key);
    }
}

static void c_generated_file_loads_in_reference(void **state)
{
    homes *h = *state;
    char path[128];
    char why[256];
    key_path(h->a, path, sizeof path);

    /* No secrets/ directory yet: the C side creates it, like a node's first start. */
    tm2_node_key key;
    assert_int_equal(tm2_node_key_load_or_generate(path, &key, why, sizeof why), 0);

    ref_key ref;
    const char *args[] = {"node-key", "--home", h->a, "--no-create", NULL};
    ref_key_run(args, &ref);
    assert_same_key(&key, &ref);
    tm2_node_key_wipe(&key);
}

static void reference_file_loads_in_c(void **state)
{
    homes *h = *state;
    char ref_path[128], c_path[128];
    char why[256];
    key_path(h->a, ref_path, sizeof ref_path);
    key_path(h->b, c_path, sizeof c_path);

    /* The reference generates a random key and writes it with its own writer. */
    ref_key ref;
    const char *args[] = {"node-key", "--home", h->a, NULL};
    ref_key_run(args, &ref);

    tm2_node_key key;
    assert_int_equal(tm2_node_key_load(ref_path, &key, why, sizeof why), 0);
    assert_int_equal(tm2_node_key_check(&key), 0);
    assert_same_key(&key, &ref);

    tm2_node_key again;
    assert_int_equal(tm2_node_key_load_or_generate(ref_path, &again, why, sizeof why), 0);
    assert_memory_equal(again.priv, key.priv, TM2_PRIVKEY_SIZE);
    tm2_node_key_wipe(&again);

    /* Written back by tm2p2p, the same key gives the same bytes and mode. */
    make_secrets_dir(h->b);
    assert_int_equal(tm2_node_key_save(c_path, &key, why, sizeof why), 0);
    size_t rlen, clen;
    char *rbytes = slurp(ref_path, &rlen);
    char *cbytes = slurp(c_path, &clen);
    assert_int_equal(clen, rlen);
    assert_memory_equal(cbytes, rbytes, rlen);
    free(rbytes);
    free(cbytes);

    struct stat rst, cst;
    assert_int_equal(stat(ref_path, &rst), 0);
    assert_int_equal(stat(c_path, &cst), 0);
    assert_int_equal(rst.st_mode & 0777, 0600);
    assert_int_equal(cst.st_mode & 0777, 0600);
    tm2_node_key_wipe(&key);
}

/* The pre-2025-07 wrapped form: the reference refuses it, tm2p2p reads it as
 * a migration aid (include/tm2p2p/key.h). */
static void legacy_file_rejected_by_reference_read_by_c(void **state)
{
    homes *h = *state;
    char path[128];
    char why[256];
    key_path(h->a, path, sizeof path);
    make_secrets_dir(h->a);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\n  \"priv_key\": {\n    \"@type\": \"/tm.PrivKeyEd25519\",\n    \"value\": "
          "\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA==\"\n"
          "  }\n}", f);
    fclose(f);

    const char *args[] = {"node-key", "--home", h->a, "--no-create", NULL};
    assert_int_equal(refproc_run(args, NULL, NULL, 0, NULL, 0, NULL, TIMEOUT_MS), 1);

    tm2_node_key key;
    assert_int_equal(tm2_node_key_load(path, &key, why, sizeof why), 0);
    uint8_t seed[32];
    memset(seed, 0x01, sizeof seed);
    ref_key ref;
    ref_keyinfo_seed(seed, &ref);
    assert_same_key(&key, &ref);
    tm2_node_key_wipe(&key);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keyinfo_seed_01_matches_spec),
        cmocka_unit_test(keyinfo_same_id_for_seeds),
        cmocka_unit_test(keyinfo_same_id_for_pubkeys),
        cmocka_unit_test_setup_teardown(c_saved_file_loads_in_reference, homes_setup, homes_teardown),
        cmocka_unit_test_setup_teardown(c_generated_file_loads_in_reference, homes_setup, homes_teardown),
        cmocka_unit_test_setup_teardown(reference_file_loads_in_c, homes_setup, homes_teardown),
        cmocka_unit_test_setup_teardown(legacy_file_rejected_by_reference_read_by_c, homes_setup,
                                        homes_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
