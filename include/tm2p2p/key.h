/* Node identity: the Ed25519 node key and the peer ID derived from it.
 *
 * tm2_node_key is a value type holding the 64-byte private key in the
 * reference's layout (seed || public key). It is a secret: wipe it with
 * tm2_node_key_wipe() when done. All functions are thread-safe; none keeps a
 * pointer to its arguments. */
#ifndef TM2P2P_KEY_H
#define TM2P2P_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TM2_PUBKEY_SIZE   32
#define TM2_PRIVKEY_SIZE  64
#define TM2_SIG_SIZE      64
#define TM2_ADDRESS_SIZE  20
#define TM2_ID_LEN        40   /* "g1" + 32 data + 6 checksum characters */

/* A peer ID as a NUL-terminated string; an empty string means "no ID".
 * IDs compare as strings, like the reference does. */
typedef struct tm2_id {
    char s[TM2_ID_LEN + 1];
} tm2_id;

typedef struct tm2_node_key {
    uint8_t priv[TM2_PRIVKEY_SIZE];   /* seed(32) || public key(32) */
} tm2_node_key;

/* Makes a fresh random key. Returns 0 or TM2_EIO (no randomness). */
TM2_API int tm2_node_key_generate(tm2_node_key *key);

/* Deterministic key from a 32-byte seed (tests, vectors). */
TM2_API void tm2_node_key_from_seed(tm2_node_key *key, const uint8_t seed[32]);

/* The 32-byte public key inside key (points into key). */
TM2_API const uint8_t *tm2_node_key_pubkey(const tm2_node_key *key);

/* ID of the key: bech32("g", SHA-256(pubkey)[0:20]). */
TM2_API void tm2_node_key_id(const tm2_node_key *key, tm2_id *id);

/* RFC 8032 signature of msg. */
TM2_API void tm2_node_key_sign(const tm2_node_key *key, const uint8_t *msg, size_t len,
                               uint8_t sig[TM2_SIG_SIZE]);

/* Checks that the second half is the public key of the seed. 0 or TM2_EKEY. */
TM2_API int tm2_node_key_check(const tm2_node_key *key);

TM2_API void tm2_node_key_wipe(tm2_node_key *key);

/* Reads node_key.json at path, in the reference's format ({"priv_key":"<base64>"}),
 * also accepting the legacy wrapped form
 * {"priv_key":{"@type":"/tm.PrivKeyEd25519","value":"<base64>"}}.
 * Rules (WIRE.md 2.2): one JSON object whose only key is priv_key (unknown or
 * duplicate keys are errors), standard base64 with padding (line breaks
 * skipped, as Go does) of exactly 64 bytes, second half non-zero and equal to
 * the public key of the seed (the reference's own check of that compares the
 * half with itself, so a mismatched file would load there and sign badly).
 * Nothing may follow the object but whitespace.
 * On failure returns TM2_EKEYFILE (TM2_ENOTFOUND if the file does not exist,
 * TM2_ENOMEM, TM2_EINVAL for NULL arguments) and, if why is non-NULL, writes
 * a sentence naming the file and the problem into why (truncated to why_len).
 * *key is written only on success. */
TM2_API int tm2_node_key_load(const char *path, tm2_node_key *key, char *why, size_t why_len);

/* Writes key to path in the current format, byte for byte what the
 * reference writes (2-space indentation, no trailing newline), mode 0600,
 * atomically: temp file in the same directory, fsync, rename, fsync of the
 * directory. Never leaves a partial file at path; replaces an existing one.
 * Missing parent directories are created (the one holding the file 0700).
 * Returns 0, TM2_EKEY (the key fails tm2_node_key_check) or TM2_EIO, with
 * the reason in why. */
TM2_API int tm2_node_key_save(const char *path, const tm2_node_key *key, char *why, size_t why_len);

/* Loads path; if it does not exist, generates a key and saves it there
 * (creating parent directories). An existing bad file is an error, never
 * overwritten; if another process creates the file meanwhile, its key is
 * loaded instead. Returns what tm2_node_key_load/save return. */
TM2_API int tm2_node_key_load_or_generate(const char *path, tm2_node_key *key,
                                          char *why, size_t why_len);

/* ID of a raw 32-byte Ed25519 public key. */
TM2_API void tm2_id_from_pubkey(const uint8_t pub[TM2_PUBKEY_SIZE], tm2_id *id);

/* 0 if s is a valid ID by the reference's rules (WIRE.md 2.4), checked in its
 * order: TM2_EID (empty), the bech32 errors (TM2_EDECODE, TM2_ECHARSET,
 * TM2_ECASE, TM2_ECHECKSUM; bech32m checksums and all-upper case pass),
 * TM2_EHRP (prefix not "g"), TM2_EID (data not 20 bytes). TM2_EINVAL if s is
 * NULL. A valid ID is always TM2_ID_LEN characters, but only the lowercase
 * bech32 form equals the ID derived from a key. */
TM2_API int tm2_id_validate(const char *s);

#ifdef __cplusplus
}
#endif
#endif
