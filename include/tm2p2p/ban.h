/* Bans: peer IDs and IP addresses a switch refuses and never dials, each
 * until its expiry, and the JSON file that keeps them across restarts.
 *
 * A switch holds its ban list (tm2_switch_ban, tm2_switch_unban,
 * tm2_switch_bans in tm2p2p/switch.h). With tm2_switch_config.ban_file set,
 * it reads the file in tm2_switch_new and writes it whenever the list
 * changes (off the network thread) and when it stops. The functions here
 * read and write such a file without a switch (the program's
 * `tm2p2p ban`).
 *
 * File format (UTF-8 JSON, written atomically):
 *   {"bans": [{"target": "1.2.3.4" | "g1…", "created": <unix ms>,
 *              "expires": <unix ms, 0: never>, "reason": "…"}, …]}
 * Unknown fields are ignored; an entry that does not parse makes the whole
 * file invalid (TM2_EDECODE).
 *
 * Thread rules: the file functions block on the disk; call them from any
 * thread but a switch's network thread. tm2_ban_target_parse and
 * tm2_ban_target_format are pure. */
#ifndef TM2P2P_BAN_H
#define TM2P2P_BAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"
#include "tm2p2p/key.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TM2_BAN_REASON_LEN 128
/* Entries a ban list or file holds at most; beyond, a new ban replaces the
 * one that expires first. */
#define TM2_BANS_MAX 4096
/* A duration that never ends (tm2_switch_ban). */
#define TM2_BAN_FOREVER UINT64_MAX

typedef struct tm2_ban {
    bool is_ip;                        /* an IP address, else a peer ID */
    uint8_t ip[16];                    /* IPv6, or IPv4-mapped */
    tm2_id id;
    int64_t created_unix_ms;
    int64_t expires_unix_ms;           /* 0: never */
    char reason[TM2_BAN_REASON_LEN];   /* NUL-terminated, may be "" */
} tm2_ban;

/* Parses a target: an IP literal (IPv4, or IPv6 with or without brackets)
 * or a peer ID. Fills is_ip and ip or id of *out; leaves the rest alone.
 * 0 or TM2_EINVAL (neither). */
TM2_API int tm2_ban_target_parse(const char *s, tm2_ban *out);

/* Writes the target ("1.2.3.4", "::1" or the ID) to buf. Returns its length
 * or TM2_ENOSPC. 64 bytes always suffice. */
TM2_API int tm2_ban_target_format(const tm2_ban *b, char *buf, size_t cap);

/* Reads a ban file: *out (malloc'd, free() it; NULL when empty) and *n.
 * Entries beyond TM2_BANS_MAX are dropped (the ones expiring first).
 * Returns 0, TM2_ENOTFOUND (no file: *n is 0), TM2_EDECODE (not a ban file),
 * TM2_ETOOBIG (over 4 MiB, or over 4 * TM2_BANS_MAX entries), TM2_EIO or
 * TM2_ENOMEM; why (may be NULL) then says what. */
TM2_API int tm2_ban_file_load(const char *path, tm2_ban **out, size_t *n, char *why,
                              size_t why_len);

/* Writes n bans to path atomically (a temporary file renamed over it, mode
 * 0600), creating missing parent directories. Entries already expired at
 * now_unix_ms are left out (0: keep every entry). 0, TM2_EINVAL, TM2_EIO or
 * TM2_ENOMEM; why says what. */
TM2_API int tm2_ban_file_save(const char *path, const tm2_ban *b, size_t n, int64_t now_unix_ms,
                              char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif
