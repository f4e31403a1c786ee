/* The node key (WIRE.md 2.1, 2.2): Ed25519 through libsodium, whose 64-byte
 * secret key has the reference's seed || public key layout, and the
 * node_key.json file. */
#include "crypto/node_key.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"

#define KEY_TYPE_LEGACY "/tm.PrivKeyEd25519"
/* A real file is about 110 bytes; the cap only bounds what we read. */
#define KEY_FILE_MAX    (64 * 1024)

/* ---- keys ------------------------------------------------------------------ */

/* Only libsodium's RNG can fail to initialise; signing and key derivation
 * from a seed do not use it, and generation checks the result itself. */
static void sodium_ready(void)
{
    int r = sodium_init();
    (void)r;
}

int tm2_node_key_generate(tm2_node_key *key)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    if (!key)
        return TM2_EINVAL;
    if (sodium_init() < 0)
        return TM2_EIO;
    crypto_sign_keypair(pk, key->priv);
    return 0;
}

void tm2_node_key_from_seed(tm2_node_key *key, const uint8_t seed[32])
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    sodium_ready();
    crypto_sign_seed_keypair(pk, key->priv, seed);
}

const uint8_t *tm2_node_key_pubkey(const tm2_node_key *key)
{
    return key->priv + 32;
}

void tm2_node_key_id(const tm2_node_key *key, tm2_id *id)
{
    tm2_id_from_pubkey(tm2_node_key_pubkey(key), id);
}

void tm2_node_key_sign(const tm2_node_key *key, const uint8_t *msg, size_t len,
                       uint8_t sig[TM2_SIG_SIZE])
{
    sodium_ready();
    crypto_sign_detached(sig, NULL, msg, len, key->priv);
}

/* The reference signs with whatever the second half holds, so a half that
 * is not the seed's public key yields signatures nobody can verify. */
static int check_priv(const uint8_t priv[TM2_PRIVKEY_SIZE])
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    sodium_ready();
    crypto_sign_seed_keypair(pk, sk, priv);
    int ok = sodium_memcmp(pk, priv + 32, sizeof pk) == 0;
    sodium_memzero(sk, sizeof sk);
    return ok ? 0 : TM2_EKEY;
}

int tm2_node_key_check(const tm2_node_key *key)
{
    return key ? check_priv(key->priv) : TM2_EINVAL;
}

void tm2_node_key_wipe(tm2_node_key *key)
{
    if (key)
        sodium_memzero(key, sizeof *key);
}

/* ---- messages -------------------------------------------------------------- */

#define fail tm2__fail

/* A JSON key from the file, made safe to print. */
static void printable(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && n + 4 < cap; s++)
        out[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    if (*s)
        out[n++] = '.', out[n++] = '.', out[n++] = '.';
    out[n] = '\0';
}

/* ---- reading --------------------------------------------------------------- */

/* Go's base64.StdEncoding, as encoding/json applies it to []byte values:
 * '\r' and '\n' are skipped anywhere, '=' padding is required, and the
 * unused low bits of the last character are ignored. Counts the full decoded
 * length in *len even past cap (bytes past cap are not stored). */
static int b64_decode(const char *s, uint8_t *out, size_t cap, size_t *len)
{
    uint8_t v[4] = {0};
    unsigned q = 0;
    size_t n = 0;
    bool half_pad = false, done = false;
    int r = -1;

#define EMIT(b) do { if (n < cap) out[n] = (uint8_t)(b); n++; } while (0)
    for (; *s; s++) {
        char c = *s;
        if (c == '\r' || c == '\n')
            continue;
        if (done)
            goto out;
        if (half_pad) {             /* "xx=" must be followed by '=' */
            if (c != '=')
                goto out;
            EMIT(v[0] << 2 | v[1] >> 4);
            half_pad = false;
            done = true;
            continue;
        }
        if (c == '=') {
            if (q == 2) {
                half_pad = true;
            } else if (q == 3) {
                EMIT(v[0] << 2 | v[1] >> 4);
                EMIT((v[1] & 0xf) << 4 | v[2] >> 2);
                done = true;
            } else {
                goto out;
            }
            continue;
        }
        int d;
        if (c >= 'A' && c <= 'Z') d = c - 'A';
        else if (c >= 'a' && c <= 'z') d = c - 'a' + 26;
        else if (c >= '0' && c <= '9') d = c - '0' + 52;
        else if (c == '+') d = 62;
        else if (c == '/') d = 63;
        else goto out;
        v[q++] = (uint8_t)d;
        if (q == 4) {
            EMIT(v[0] << 2 | v[1] >> 4);
            EMIT((v[1] & 0xf) << 4 | v[2] >> 2);
            EMIT((v[2] & 0x3) << 6 | v[3]);
            q = 0;
        }
    }
#undef EMIT
    if (!half_pad && (done || q == 0))
        r = 0;
out:
    sodium_memzero(v, sizeof v);
    *len = n;
    return r;
}

/* cJSON is more lenient than Go's decoder in two ways that matter for a
 * hand-edited file: it skips any control byte as whitespace and takes raw
 * control bytes inside strings (and a leading byte-order mark). Reject those
 * the way the reference does before cJSON sees the text. */
static bool json_bytes_ok(const char *buf, size_t len)
{
    bool in_str = false, esc = false;
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (in_str) {
            if (c < 0x20)
                return false;
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            return false;
        }
    }
    return true;
}

static void wipe_json(cJSON *j)
{
    for (; j; j = j->next) {
        if (j->valuestring)
            sodium_memzero(j->valuestring, strlen(j->valuestring));
        wipe_json(j->child);
    }
}

/* The base64 text of the key: the current form's string, or the "value" of
 * the legacy {"@type": "/tm.PrivKeyEd25519", "value": ...} object. */
static int priv_key_text(const char *path, const cJSON *pk, const char **b64, char *why,
                         size_t why_len)
{
    char name[40];
    if (cJSON_IsString(pk)) {
        *b64 = pk->valuestring;
        return 0;
    }
    if (cJSON_IsNull(pk))
        return fail(TM2_EKEYFILE, why, why_len, "node key file %s: priv_key is null", path);
    if (!cJSON_IsObject(pk))
        return fail(TM2_EKEYFILE, why, why_len,
                    "node key file %s: priv_key must be a base64 string", path);
    const cJSON *type = NULL, *value = NULL;
    for (const cJSON *c = pk->child; c; c = c->next) {
        const cJSON **slot = !strcmp(c->string, "@type") ? &type
                           : !strcmp(c->string, "value") ? &value : NULL;
        printable(c->string, name, sizeof name);
        if (!slot)
            return fail(TM2_EKEYFILE, why, why_len,
                        "node key file %s: unknown key \"%s\" in priv_key", path, name);
        if (*slot)
            return fail(TM2_EKEYFILE, why, why_len,
                        "node key file %s: duplicate key \"%s\" in priv_key", path, name);
        *slot = c;
    }
    if (!cJSON_IsString(type) || strcmp(type->valuestring, KEY_TYPE_LEGACY) != 0)
        return fail(TM2_EKEYFILE, why, why_len,
                    "node key file %s: legacy priv_key needs \"@type\": \"" KEY_TYPE_LEGACY "\"",
                    path);
    if (!cJSON_IsString(value))
        return fail(TM2_EKEYFILE, why, why_len,
                    "node key file %s: legacy priv_key needs a base64 string \"value\"", path);
    *b64 = value->valuestring;
    return 0;
}

static int parse_key_json(const char *path, const char *buf, size_t len,
                          uint8_t priv[TM2_PRIVKEY_SIZE], char *why, size_t why_len)
{
    char name[40];
    int r;
    if (len == 0)
        return fail(TM2_EKEYFILE, why, why_len, "node key file %s is empty", path);
    if (!json_bytes_ok(buf, len))
        return fail(TM2_EKEYFILE, why, why_len, "node key file %s is not valid JSON", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
        return fail(TM2_EKEYFILE, why, why_len,
                    "node key file %s is not valid JSON (error near byte %zu)", path, at);
    }
    for (; end < buf + len; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            r = fail(TM2_EKEYFILE, why, why_len,
                     "node key file %s has data after the JSON object", path);
            goto out;
        }
    }
    if (!cJSON_IsObject(root)) {
        r = fail(TM2_EKEYFILE, why, why_len, "node key file %s does not hold a JSON object", path);
        goto out;
    }
    const cJSON *pk = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        printable(c->string, name, sizeof name);
        if (strcmp(c->string, "priv_key") != 0) {
            r = fail(TM2_EKEYFILE, why, why_len, "node key file %s has unknown key \"%s\"", path,
                     name);
            goto out;
        }
        if (pk) {
            r = fail(TM2_EKEYFILE, why, why_len, "node key file %s has a duplicate \"priv_key\"",
                     path);
            goto out;
        }
        pk = c;
    }
    if (!pk) {
        r = fail(TM2_EKEYFILE, why, why_len, "node key file %s has no \"priv_key\"", path);
        goto out;
    }
    const char *b64 = NULL;
    r = priv_key_text(path, pk, &b64, why, why_len);
    if (r < 0)
        goto out;
    size_t n = 0;
    if (b64_decode(b64, priv, TM2_PRIVKEY_SIZE, &n) < 0) {
        r = fail(TM2_EKEYFILE, why, why_len, "node key file %s: priv_key is not valid base64",
                 path);
        goto out;
    }
    if (n != TM2_PRIVKEY_SIZE) {
        r = fail(TM2_EKEYFILE, why, why_len,
                 "node key file %s: priv_key holds %zu bytes, want %d", path, n, TM2_PRIVKEY_SIZE);
        goto out;
    }
    static const uint8_t zero[32];
    if (sodium_memcmp(priv + 32, zero, 32) == 0) {
        r = fail(TM2_EKEYFILE, why, why_len,
                 "node key file %s: the public key half of priv_key is all zero", path);
        goto out;
    }
    if (check_priv(priv) < 0) {
        r = fail(TM2_EKEYFILE, why, why_len,
                 "node key file %s: the public key half of priv_key does not match its seed",
                 path);
        goto out;
    }
    r = 0;
out:
    wipe_json(root);
    cJSON_Delete(root);
    return r;
}

int tm2_node_key_load(const char *path, tm2_node_key *key, char *why, size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    if (!path || !key)
        return fail(TM2_EINVAL, why, why_len, "no node key path");
    char *buf;
    size_t len;
    int os_err;
    int r = tm2__file_read(path, KEY_FILE_MAX, &buf, &len, &os_err);
    if (r == TM2_ENOTFOUND)
        return fail(r, why, why_len, "node key file %s does not exist", path);
    if (r == TM2_ETOOBIG)
        return fail(TM2_EKEYFILE, why, why_len, "node key file %s is larger than %d bytes", path,
                    KEY_FILE_MAX);
    if (r == TM2_ENOMEM)
        return fail(r, why, why_len, "out of memory reading %s", path);
    if (r < 0 && os_err == EINVAL)
        return fail(TM2_EKEYFILE, why, why_len, "node key file %s is not a regular file", path);
    if (r < 0)
        return fail(TM2_EKEYFILE, why, why_len, "cannot read node key file %s: %s", path,
                    strerror(os_err));
    uint8_t priv[TM2_PRIVKEY_SIZE];
    r = parse_key_json(path, buf, len, priv, why, why_len);
    if (r == 0)
        memcpy(key->priv, priv, sizeof priv);
    sodium_memzero(priv, sizeof priv);
    sodium_memzero(buf, len);
    free(buf);
    return r;
}

/* ---- writing --------------------------------------------------------------- */

static int write_key_file(const char *path, const char *data, size_t len, bool overwrite,
                          char *why, size_t why_len)
{
    const char *what;
    int os_err;
    int r = tm2__file_write_atomic(path, data, len, 0600, overwrite, &what, &os_err);
    if (r == TM2_EEXIST)
        return fail(r, why, why_len, "node key file %s already exists", path);
    if (r < 0)
        return fail(r, why, why_len, "cannot %s %s: %s", what, path, strerror(os_err));
    return 0;
}

int tm2__node_key_write(const char *path, const tm2_node_key *key, bool overwrite, char *why,
                        size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    if (!path || !key)
        return fail(TM2_EINVAL, why, why_len, "no node key path");
    if (tm2_node_key_check(key) < 0)
        return fail(TM2_EKEY, why, why_len,
                    "refusing to write %s: the key's public half does not match its seed", path);
    int r = tm2__mkdir_parents(path, 0700, why, why_len);
    if (r < 0)
        return r;
    /* Byte for byte what the reference writes: 2-space indent, no newline. */
    static const char head[] = "{\n  \"priv_key\": \"", tail[] = "\"\n}";
    char text[sizeof head - 1 + sodium_base64_ENCODED_LEN(TM2_PRIVKEY_SIZE,
                                                          sodium_base64_VARIANT_ORIGINAL) +
              sizeof tail];
    memcpy(text, head, sizeof head - 1);
    sodium_bin2base64(text + sizeof head - 1, sizeof text - (sizeof head - 1), key->priv,
                      TM2_PRIVKEY_SIZE, sodium_base64_VARIANT_ORIGINAL);
    size_t n = strlen(text);
    memcpy(text + n, tail, sizeof tail);
    n += sizeof tail - 1;
    r = write_key_file(path, text, n, overwrite, why, why_len);
    sodium_memzero(text, sizeof text);
    return r;
}

int tm2_node_key_save(const char *path, const tm2_node_key *key, char *why, size_t why_len)
{
    return tm2__node_key_write(path, key, true, why, why_len);
}

int tm2_node_key_load_or_generate(const char *path, tm2_node_key *key, char *why, size_t why_len)
{
    int r = tm2_node_key_load(path, key, why, why_len);
    if (r != TM2_ENOTFOUND)
        return r;
    tm2_node_key fresh;
    r = tm2_node_key_generate(&fresh);
    if (r < 0)
        return fail(r, why, why_len, "no randomness to generate a node key for %s", path);
    r = tm2__node_key_write(path, &fresh, false, why, why_len);
    if (r == 0)
        *key = fresh;
    tm2_node_key_wipe(&fresh);
    /* Someone else created the file meanwhile: theirs is the key. */
    if (r == TM2_EEXIST)
        return tm2_node_key_load(path, key, why, why_len);
    return r;
}
