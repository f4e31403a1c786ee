/* Node identity: keys, IDs and node_key.json (WIRE.md 2). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/node_key.h"
#include "tm2p2p/bech32.h"
#include "tm2p2p/key.h"
#include "tv.h"

#define IDV "upstream_identity_vectors.txt"
#define EDV "upstream_ed25519_golden.txt"
#define HSV "derived_handshake_transcript.txt"

/* WIRE.md 2.2 example, seed 01 * 32, exactly as the reference writes it. */
static const char seed01_file[] =
    "{\n"
    "  \"priv_key\": \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA==\"\n"
    "}";
#define SEED01_B64 "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA=="
#define SEED01_ID "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl"

/* ---- temporary directories ------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup_dir(void **state)
{
    char *dir = strdup("/tmp/tm2-node-key-XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    *state = dir;
    return 0;
}

static int teardown_dir(void **state)
{
    nftw(*state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static const char *in_dir(void **state, const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", (const char *)*state, name);
    return path;
}

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(65536);
    assert_non_null(buf);
    *len = fread(buf, 1, 65535, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static char *json_with(const char *b64)
{
    char *s = malloc(strlen(b64) + 64);
    assert_non_null(s);
    sprintf(s, "{\"priv_key\":\"%s\"}", b64);
    return s;
}

/* ---- known answers ----------------------------------------------------------- */

static void identity_line(char *line, void *user)
{
    int *count = user;
    char *f[5];
    int n = tv_split(line, '|', f, 5);
    if (n == 4) {           /* SOURCE|pubkey|address|id */
        uint8_t pub[32], addr[20], h[32];
        tm2_id id;
        tv_hex(f[1], pub, sizeof pub);
        tv_hex(f[2], addr, sizeof addr);
        crypto_hash_sha256(h, pub, sizeof pub);
        assert_memory_equal(h, addr, sizeof addr);
        tm2_id_from_pubkey(pub, &id);
        assert_string_equal(id.s, f[3]);
        assert_int_equal(tm2_id_validate(f[3]), 0);
    } else if (n == 3) {    /* SOURCE|address|id */
        uint8_t addr[20];
        char enc[64];
        tv_hex(f[1], addr, sizeof addr);
        assert_int_equal(tm2_bech32_encode("g", addr, sizeof addr, enc, sizeof enc), TM2_ID_LEN);
        assert_string_equal(enc, f[2]);
        assert_int_equal(tm2_id_validate(f[2]), 0);
    } else if (n == 5) {    /* SOURCE|priv_key base64|seed|pubkey|id, as a node_key.json */
        char path[] = "/tmp/tm2-idvec-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        char *json = json_with(f[1]);
        write_text(path, json, strlen(json));
        free(json);
        tm2_node_key k, s;
        char why[256];
        int r = tm2_node_key_load(path, &k, why, sizeof why);
        unlink(path);
        if (r != 0)
            fail_msg("%s: %s", f[0], why);
        uint8_t seed[32], pub[32];
        tv_hex(f[2], seed, sizeof seed);
        tv_hex(f[3], pub, sizeof pub);
        assert_memory_equal(k.priv, seed, 32);
        assert_memory_equal(tm2_node_key_pubkey(&k), pub, 32);
        tm2_node_key_from_seed(&s, seed);
        assert_memory_equal(s.priv, k.priv, sizeof k.priv);
        tm2_id id;
        tm2_node_key_id(&k, &id);
        assert_string_equal(id.s, f[4]);
    } else {
        fail_msg("unexpected identity vector line: %s", line);
    }
    (*count)++;
}

static void upstream_identity(void **state)
{
    (void)state;
    int count = 0;
    assert_int_equal(tv_lines(IDV, identity_line, &count), 10);
    assert_int_equal(count, 10);
}

static void upstream_ed25519_golden(void **state)
{
    (void)state;
    char *secret = tv_get(EDV, "secret_ascii"), *msg = tv_get(EDV, "msg_ascii");
    size_t n;
    uint8_t *seed = tv_get_hex(EDV, "seed_hex", &n);
    assert_int_equal(n, 32);
    uint8_t *pub = tv_get_hex(EDV, "pubkey_hex", &n);
    uint8_t *want = tv_get_hex(EDV, "signature_hex", &n);
    assert_int_equal(n, TM2_SIG_SIZE);

    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)secret, strlen(secret));
    assert_memory_equal(h, seed, 32);                   /* seed = SHA256(secret) */

    tm2_node_key k;
    tm2_node_key_from_seed(&k, seed);
    assert_memory_equal(tm2_node_key_pubkey(&k), pub, 32);
    assert_int_equal(tm2_node_key_check(&k), 0);
    uint8_t sig[TM2_SIG_SIZE];
    tm2_node_key_sign(&k, (const uint8_t *)msg, strlen(msg), sig);
    assert_memory_equal(sig, want, TM2_SIG_SIZE);
    assert_int_equal(crypto_sign_verify_detached(sig, (const uint8_t *)msg, strlen(msg), pub), 0);
    tm2_node_key_wipe(&k);
    static const tm2_node_key zero;
    assert_memory_equal(&k, &zero, sizeof k);
    free(secret), free(msg), free(seed), free(pub), free(want);
}

static void derived_transcript_keys(void **state)
{
    static const char *sides[] = {"A", "B"};
    for (int i = 0; i < 2; i++) {
        char name[64];
        uint8_t seed[32], priv[64], pub[32], addr[20], h[32], chal[32], sig[64], want_sig[64];
#define GET(field, buf)                                      \
    do {                                                     \
        snprintf(name, sizeof name, "%s_" field, sides[i]);  \
        char *v = tv_get(HSV, name);                         \
        tv_hex(v, buf, sizeof buf);                          \
        free(v);                                             \
    } while (0)
        GET("node_seed", seed);
        GET("node_privkey64", priv);
        GET("node_pubkey", pub);
        GET("address", addr);
        GET("sig_over_challenge", want_sig);
#undef GET
        char *v = tv_get(HSV, "challenge");
        tv_hex(v, chal, sizeof chal);
        free(v);

        tm2_node_key k;
        tm2_node_key_from_seed(&k, seed);
        assert_memory_equal(k.priv, priv, 64);
        assert_memory_equal(tm2_node_key_pubkey(&k), pub, 32);
        crypto_hash_sha256(h, pub, 32);
        assert_memory_equal(h, addr, 20);
        tm2_id id;
        tm2_node_key_id(&k, &id);
        snprintf(name, sizeof name, "%s_id", sides[i]);
        char *want_id = tv_get(HSV, name);
        assert_string_equal(id.s, want_id);
        free(want_id);
        tm2_node_key_sign(&k, chal, sizeof chal, sig);
        assert_memory_equal(sig, want_sig, 64);

        /* The node_key.json we write carries the transcript's base64. */
        const char *path = in_dir(state, "node_key.json");
        char why[256];
        assert_int_equal(tm2_node_key_save(path, &k, why, sizeof why), 0);
        size_t len;
        char *text = read_text(path, &len);
        snprintf(name, sizeof name, "%s_node_key_json_priv_key_base64", sides[i]);
        char *b64 = tv_get(HSV, name);
        char want[256];
        snprintf(want, sizeof want, "{\n  \"priv_key\": \"%s\"\n}", b64);
        assert_string_equal(text, want);
        free(text), free(b64);
    }
}

/* ---- writing ------------------------------------------------------------------- */

static void save_exact_bytes_and_mode(void **state)
{
    uint8_t seed[32];
    memset(seed, 1, sizeof seed);
    tm2_node_key k;
    tm2_node_key_from_seed(&k, seed);
    const char *path = in_dir(state, "node_key.json");
    char why[256];
    mode_t old = umask(0);      /* the mode must not depend on the umask */
    int r = tm2_node_key_save(path, &k, why, sizeof why);
    umask(old);
    assert_int_equal(r, 0);
    size_t len;
    char *text = read_text(path, &len);
    assert_int_equal(len, sizeof seed01_file - 1);
    assert_memory_equal(text, seed01_file, len);       /* no trailing newline */
    free(text);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    /* Overwrite keeps the mode and leaves no temporary file behind. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(tm2_node_key_generate(&k), 0);
    assert_int_equal(tm2_node_key_save(path, &k, why, sizeof why), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    DIR *d = opendir(*state);
    assert_non_null(d);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            entries++, assert_string_equal(e->d_name, "node_key.json");
    closedir(d);
    assert_int_equal(entries, 1);
}

static void save_load_roundtrip(void **state)
{
    tm2_node_key k, back;
    char why[256];
    assert_int_equal(tm2_node_key_generate(&k), 0);
    assert_int_equal(tm2_node_key_check(&k), 0);
    const char *path = in_dir(state, "deep/er/secrets/node_key.json");
    assert_int_equal(tm2_node_key_save(path, &k, why, sizeof why), 0);
    assert_int_equal(tm2_node_key_load(path, &back, why, sizeof why), 0);
    assert_memory_equal(&k, &back, sizeof k);
    struct stat st;
    assert_int_equal(stat(in_dir(state, "deep/er/secrets"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    /* Two fresh keys differ. */
    tm2_node_key k2;
    assert_int_equal(tm2_node_key_generate(&k2), 0);
    assert_memory_not_equal(k.priv, k2.priv, 64);
}

static void save_refuses_inconsistent_key(void **state)
{
    tm2_node_key k;
    char why[256];
    assert_int_equal(tm2_node_key_generate(&k), 0);
    k.priv[40] ^= 1;
    assert_int_equal(tm2_node_key_check(&k), TM2_EKEY);
    const char *path = in_dir(state, "node_key.json");
    assert_int_equal(tm2_node_key_save(path, &k, why, sizeof why), TM2_EKEY);
    assert_non_null(strstr(why, path));
    assert_int_equal(access(path, F_OK), -1);
}

static void write_without_overwrite(void **state)
{
    tm2_node_key a, b, back;
    char why[256];
    const char *path = in_dir(state, "node_key.json");
    assert_int_equal(tm2_node_key_generate(&a), 0);
    assert_int_equal(tm2_node_key_generate(&b), 0);
    assert_int_equal(tm2__node_key_write(path, &a, false, why, sizeof why), 0);
    assert_int_equal(tm2__node_key_write(path, &b, false, why, sizeof why), TM2_EEXIST);
    assert_non_null(strstr(why, "already exists"));
    assert_int_equal(tm2_node_key_load(path, &back, why, sizeof why), 0);
    assert_memory_equal(&a, &back, sizeof a);
    assert_int_equal(tm2__node_key_write(path, &b, true, why, sizeof why), 0);
    assert_int_equal(tm2_node_key_load(path, &back, why, sizeof why), 0);
    assert_memory_equal(&b, &back, sizeof b);
}

static void save_io_error(void **state)
{
    tm2_node_key k;
    char why[256];
    assert_int_equal(tm2_node_key_generate(&k), 0);
    /* The parent "directory" is a regular file. */
    write_text(in_dir(state, "file"), "x", 1);
    assert_int_equal(tm2_node_key_save(in_dir(state, "file/node_key.json"), &k, why, sizeof why),
                     TM2_EIO);
    assert_non_null(strstr(why, "cannot create directory"));
}

/* ---- reading --------------------------------------------------------------------- */

/* Writes text to a file, loads it, expects code and (if non-NULL) a phrase in why. */
static void expect_load(void **state, const char *text, size_t len, int code, const char *phrase)
{
    const char *path = in_dir(state, "node_key.json");
    write_text(path, text, len);
    tm2_node_key k;
    memset(&k, 0x5a, sizeof k);
    tm2_node_key before = k;
    char why[512];
    int r = tm2_node_key_load(path, &k, why, sizeof why);
    if (r != code)
        fail_msg("loading %.*s: got %d (%s: %s), want %d", (int)len, text, r, tm2_strerror(r),
                 why, code);
    if (code != 0) {
        assert_memory_equal(&k, &before, sizeof k);
        assert_non_null(strstr(why, path));
        if (phrase && !strstr(why, phrase))
            fail_msg("why \"%s\" lacks \"%s\"", why, phrase);
    }
}

#define LOAD_OK(text) expect_load(state, text, strlen(text), 0, NULL)
#define LOAD_BAD(text, phrase) expect_load(state, text, strlen(text), TM2_EKEYFILE, phrase)

static void load_missing(void **state)
{
    tm2_node_key k;
    char why[256];
    const char *path = in_dir(state, "absent.json");
    assert_int_equal(tm2_node_key_load(path, &k, why, sizeof why), TM2_ENOTFOUND);
    assert_non_null(strstr(why, path));
    assert_int_equal(tm2_node_key_load(path, &k, NULL, 0), TM2_ENOTFOUND);
    /* A directory is no key file. */
    assert_int_equal(tm2_node_key_load(*state, &k, why, sizeof why), TM2_EKEYFILE);
    assert_non_null(strstr(why, "regular file"));
    /* Nor is a FIFO, and opening one must not wait for a writer. */
    const char *fifo = in_dir(state, "fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(tm2_node_key_load(fifo, &k, why, sizeof why), TM2_EKEYFILE);
    assert_non_null(strstr(why, "regular file"));
}

static void load_current_and_legacy(void **state)
{
    LOAD_OK(seed01_file);
    LOAD_OK("{\"priv_key\":\"" SEED01_B64 "\"}");
    LOAD_OK(" \t\r\n{ \"priv_key\" : \"" SEED01_B64 "\" }\n\n");
    /* The legacy (Jan-2025) wrapped form, in either key order. */
    LOAD_OK("{\"priv_key\":{\"@type\":\"/tm.PrivKeyEd25519\",\"value\":\"" SEED01_B64 "\"}}");
    LOAD_OK("{\"priv_key\":{\"value\":\"" SEED01_B64 "\",\"@type\":\"/tm.PrivKeyEd25519\"}}");
    /* JSON escapes, and line breaks inside the base64 (Go skips them). */
    LOAD_OK("{\"priv_key\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08\\n"
            "ul1yymcJvx2UEhvzdIgBtA9vXA\\r\\n==\"}");
    LOAD_OK("{\"priv\\u005fkey\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08"
            "ul1yymcJvx2UEhvzdIgBtA9v\\u0058A==\"}");
}

static void load_checks_the_loaded_key(void **state)
{
    /* Loading really yields seed 01 * 32. */
    const char *path = in_dir(state, "node_key.json");
    write_text(path, seed01_file, sizeof seed01_file - 1);
    tm2_node_key k;
    char why[256];
    assert_int_equal(tm2_node_key_load(path, &k, why, sizeof why), 0);
    for (int i = 0; i < 32; i++)
        assert_int_equal(k.priv[i], 1);
    tm2_id id;
    tm2_node_key_id(&k, &id);
    assert_string_equal(id.s, SEED01_ID);
}

static void load_bad_json(void **state)
{
    expect_load(state, "", 0, TM2_EKEYFILE, "empty");
    LOAD_BAD("{\"priv_key\":\"" SEED01_B64 "\"", "not valid JSON");      /* truncated */
    LOAD_BAD("{\"priv_key\":\"AQEB", "not valid JSON");
    LOAD_BAD("{", "not valid JSON");
    LOAD_BAD("{\"priv_key\":\"" SEED01_B64 "\",}", "not valid JSON");
    LOAD_BAD("\xef\xbb\xbf{\"priv_key\":\"" SEED01_B64 "\"}", "not valid JSON");  /* BOM */
    LOAD_BAD("{\f\"priv_key\":\"" SEED01_B64 "\"}", "not valid JSON");     /* not JSON space */
    LOAD_BAD("{\"priv_key\":\"AQEB\tAQ==\"}", "not valid JSON");           /* raw control */
    static const char nul_after[] = "{\"priv_key\":\"" SEED01_B64 "\"}\0";
    expect_load(state, nul_after, sizeof nul_after - 1, TM2_EKEYFILE, "not valid JSON");
    LOAD_BAD("{\"priv_key\":\"" SEED01_B64 "\"} {}", "after the JSON object");
    LOAD_BAD("[]", "JSON object");
    LOAD_BAD("\"" SEED01_B64 "\"", "JSON object");
    LOAD_BAD("null", "JSON object");
    LOAD_BAD("42", "JSON object");
}

static void load_bad_keys(void **state)
{
    LOAD_BAD("{}", "no \"priv_key\"");
    LOAD_BAD("{\"priv_key\":\"" SEED01_B64 "\",\"extra\":1}", "unknown key \"extra\"");
    LOAD_BAD("{\"pub_key\":\"" SEED01_B64 "\"}", "unknown key \"pub_key\"");
    LOAD_BAD("{\"Priv_Key\":\"" SEED01_B64 "\"}", "unknown key");         /* case matters */
    LOAD_BAD("{\"priv_key\":\"" SEED01_B64 "\",\"priv_key\":\"" SEED01_B64 "\"}", "duplicate");
    LOAD_BAD("{\"priv_key\":null}", "null");
    LOAD_BAD("{\"priv_key\":42}", "base64 string");
    LOAD_BAD("{\"priv_key\":true}", "base64 string");
    LOAD_BAD("{\"priv_key\":[1,2,3]}", "base64 string");
}

static void load_bad_legacy(void **state)
{
    LOAD_BAD("{\"priv_key\":{\"@type\":\"/tm.PubKeyEd25519\",\"value\":\"" SEED01_B64 "\"}}",
             "@type");
    LOAD_BAD("{\"priv_key\":{\"value\":\"" SEED01_B64 "\"}}", "@type");
    LOAD_BAD("{\"priv_key\":{\"@type\":\"/tm.PrivKeyEd25519\"}}", "value");
    LOAD_BAD("{\"priv_key\":{\"@type\":\"/tm.PrivKeyEd25519\",\"value\":1}}", "value");
    LOAD_BAD("{\"priv_key\":{\"@type\":\"/tm.PrivKeyEd25519\",\"value\":\"" SEED01_B64
             "\",\"x\":1}}", "unknown key \"x\"");
    LOAD_BAD("{\"priv_key\":{\"@type\":\"/tm.PrivKeyEd25519\",\"@type\":\"/tm.PrivKeyEd25519\","
             "\"value\":\"" SEED01_B64 "\"}}", "duplicate key \"@type\"");
    LOAD_BAD("{\"priv_key\":{\"@type\":\"/tm.PrivKeyEd25519\",\"value\":\"AQEB\"}}", "holds 3 bytes");
}

static void load_bad_base64(void **state)
{
    /* Alphabet, padding placement and missing padding. */
    LOAD_BAD("{\"priv_key\":\"!QEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA==\"}",
             "not valid base64");
    LOAD_BAD("{\"priv_key\":\"-QEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9v_A==\"}",
             "not valid base64");                                       /* URL alphabet */
    LOAD_BAD("{\"priv_key\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA\"}",
             "not valid base64");                                       /* no padding */
    LOAD_BAD("{\"priv_key\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA=\"}",
             "not valid base64");                                       /* half padding */
    LOAD_BAD("{\"priv_key\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA===\"}",
             "not valid base64");
    LOAD_BAD("{\"priv_key\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA==AA==\"}",
             "not valid base64");                                       /* data after padding */
    LOAD_BAD("{\"priv_key\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA= =\"}",
             "not valid base64");
    LOAD_BAD("{\"priv_key\":\"A===\"}", "not valid base64");
    LOAD_BAD("{\"priv_key\":\"====\"}", "not valid base64");
    LOAD_BAD("{\"priv_key\":\"A\"}", "not valid base64");
    /* Go ignores the unused low bits of the last character: so do we
     * ('A' and 'P' differ only in those four bits here). */
    LOAD_OK("{\"priv_key\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXP==\"}");
}

static void load_bad_length_and_halves(void **state)
{
    uint8_t priv[65];
    char b64[128], *json;
    uint8_t seed[32];
    memset(seed, 1, 32);
    tm2_node_key k;
    tm2_node_key_from_seed(&k, seed);

    memcpy(priv, k.priv, 64);
    sodium_bin2base64(b64, sizeof b64, priv, 63, sodium_base64_VARIANT_ORIGINAL);
    json = json_with(b64);
    LOAD_BAD(json, "holds 63 bytes, want 64");
    free(json);
    priv[64] = 0;
    sodium_bin2base64(b64, sizeof b64, priv, 65, sodium_base64_VARIANT_ORIGINAL);
    json = json_with(b64);
    LOAD_BAD(json, "holds 65 bytes, want 64");
    free(json);
    LOAD_BAD("{\"priv_key\":\"\"}", "holds 0 bytes");

    memset(priv + 32, 0, 32);                           /* second half zero */
    sodium_bin2base64(b64, sizeof b64, priv, 64, sodium_base64_VARIANT_ORIGINAL);
    json = json_with(b64);
    LOAD_BAD(json, "all zero");
    free(json);

    memcpy(priv, k.priv, 64);                           /* second half of another key */
    priv[63] ^= 0x80;
    sodium_bin2base64(b64, sizeof b64, priv, 64, sodium_base64_VARIANT_ORIGINAL);
    json = json_with(b64);
    LOAD_BAD(json, "does not match");
    free(json);
}

static void load_or_generate(void **state)
{
    tm2_node_key a, b;
    char why[256];
    char path[4096];
    snprintf(path, sizeof path, "%s", in_dir(state, "home/secrets/node_key.json"));
    assert_int_equal(tm2_node_key_load_or_generate(path, &a, why, sizeof why), 0);
    assert_int_equal(tm2_node_key_check(&a), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(in_dir(state, "home/secrets"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    /* The second call loads the same key. */
    assert_int_equal(tm2_node_key_load_or_generate(path, &b, why, sizeof why), 0);
    assert_memory_equal(&a, &b, sizeof a);

    /* A bad existing file is reported and left exactly as it was. */
    static const char bad[] = "{\"priv_key\":\"oops\"}";
    write_text(path, bad, sizeof bad - 1);
    assert_int_equal(tm2_node_key_load_or_generate(path, &b, why, sizeof why), TM2_EKEYFILE);
    assert_non_null(strstr(why, path));
    size_t len;
    char *text = read_text(path, &len);
    assert_int_equal(len, sizeof bad - 1);
    assert_memory_equal(text, bad, len);
    free(text);
    /* An empty file is bad too, and stays empty. */
    expect_load(state, "", 0, TM2_EKEYFILE, "empty");
    snprintf(path, sizeof path, "%s", in_dir(state, "node_key.json"));
    assert_int_equal(tm2_node_key_load_or_generate(path, &b, why, sizeof why), TM2_EKEYFILE);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 0);
}

static void bad_arguments(void **state)
{
    (void)state;
    tm2_node_key k;
    char why[64];
    assert_int_equal(tm2_node_key_generate(NULL), TM2_EINVAL);
    assert_int_equal(tm2_node_key_check(NULL), TM2_EINVAL);
    assert_int_equal(tm2_node_key_load(NULL, &k, why, sizeof why), TM2_EINVAL);
    assert_int_equal(tm2_node_key_load("/x", NULL, why, sizeof why), TM2_EINVAL);
    assert_int_equal(tm2_node_key_save(NULL, &k, why, sizeof why), TM2_EINVAL);
    tm2_node_key_wipe(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(upstream_identity),
        cmocka_unit_test(upstream_ed25519_golden),
        cmocka_unit_test_setup_teardown(derived_transcript_keys, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(save_exact_bytes_and_mode, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(save_load_roundtrip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(save_refuses_inconsistent_key, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(write_without_overwrite, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(save_io_error, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_missing, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_current_and_legacy, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_checks_the_loaded_key, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_bad_json, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_bad_keys, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_bad_legacy, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_bad_base64, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_bad_length_and_halves, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(load_or_generate, setup_dir, teardown_dir),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
