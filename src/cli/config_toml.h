/* The node's config.toml: the document is parsed as TOML 1.0 (cli/toml.h), then
 * the keys tm2p2p uses are read from the tree through one schema table in
 * config_toml.c (key, type, field, default, bounds). Everything else in the
 * document is checked for syntax and ignored, so a complete gno config.toml
 * loads; [p2p] may equally be written as an inline table or dotted keys.
 *
 * Keys read: top-level `moniker` and `node_key_file`; in [p2p] every key of
 * the reference's P2PConfig (gno v1.7.1), plus `seed_mode` and
 * `unconditional_peer_ids` (CometBFT's names) and the admission, eviction
 * and ban settings (`max_pending_inbound_per_ip`, `accept_ip_rate`,
 * `accept_ip_burst`, `accept_subnet_rate`, `accept_subnet_burst`,
 * `max_inbound_per_ip`, `max_inbound_per_subnet`, `outbound_diversity`,
 * `evict_inbound`, `evict_protect_groups`, `evict_protect_latency`,
 * `evict_protect_active`, `evict_protect_oldest_pct`, `limit_local_addrs`,
 * `ban_duration`, `ban_file`); in
 * [instrumentation] CometBFT's `prometheus` and
 * `prometheus_listen_addr` (the node's HTTP endpoints). A key with the wrong type, a value the
 * reference's ValidateBasic refuses (negative rates, timeouts and buffer
 * budgets, a buffer budget between 1 and TM2_MIN_BUFFER_BYTES - 1), a packet
 * payload of 0 or above TM2_MAX_PACKET_PAYLOAD, a bad duration and any TOML
 * error are errors; an unknown key in [p2p] goes to the warning callback. */
#ifndef TM2_CLI_CONFIG_TOML_H
#define TM2_CLI_CONFIG_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Strings are malloc'd and never NULL after cli_config_defaults. */
typedef struct cli_config {
    char *moniker;                 /* "" (the node then uses the host name) */
    char *node_key_file;           /* "secrets/node_key.json", relative to the home */

    char *laddr;                   /* "tcp://0.0.0.0:26656" */
    char *external_address;        /* "" */
    char *seeds;                   /* "" */
    char *persistent_peers;        /* "" */
    char *private_peer_ids;        /* "" */
    char *addr_book_file;          /* "config/addrbook.json", relative to the home */
    uint64_t max_num_inbound_peers;        /* 40 */
    uint64_t max_num_outbound_peers;       /* 10 */
    int64_t flush_throttle_timeout_ns;     /* 100 ms */
    int64_t max_packet_msg_payload_size;   /* 1024; 1..TM2_MAX_PACKET_PAYLOAD */
    int64_t send_rate;                     /* 5120000 bytes/s */
    int64_t recv_rate;                     /* 5120000 bytes/s */
    int64_t recv_assembly_timeout_ns;      /* 30 s; 0 disables it */
    int64_t max_recv_buffer_bytes;         /* 20 MiB; 0 (off) or >= TM2_MIN_BUFFER_BYTES */
    int64_t max_send_buffer_bytes;         /* 20 MiB; 0 (off) or >= TM2_MIN_BUFFER_BYTES */
    bool pex;                              /* true */
    bool allow_duplicate_ip;               /* false */
    bool seed_mode;                        /* false */
    /* Admission, limits, eviction and bans (tm2p2p/defaults.h). */
    char *unconditional_peer_ids;          /* "" (IDs, comma-separated) */
    uint64_t max_pending_inbound_per_ip;   /* 4 */
    uint64_t accept_ip_rate, accept_ip_burst;           /* 12 a minute, 12 */
    uint64_t accept_subnet_rate, accept_subnet_burst;   /* 60 a minute, 60 */
    uint64_t max_inbound_per_ip;           /* 4 (with allow_duplicate_ip) */
    uint64_t max_inbound_per_subnet;       /* 8 */
    bool outbound_diversity;               /* true */
    bool evict_inbound;                    /* true */
    uint64_t evict_protect_groups;         /* 4; 0..10000 */
    uint64_t evict_protect_latency;        /* 8; 0..10000 */
    uint64_t evict_protect_active;         /* 4; 0..10000 */
    uint64_t evict_protect_oldest_pct;     /* 50; 0..100 */
    bool limit_local_addrs;                /* false */
    int64_t ban_duration_ns;               /* 1 h; 0: no bans for misbehaviour */
    char *ban_file;                        /* "data/bans.json", relative to the home */
    bool prometheus;                       /* [instrumentation], false */
    char *prometheus_listen_addr;          /* [instrumentation], ":26660" */
} cli_config;

typedef void (*cli_config_warn_fn)(void *user, const char *msg);

/* Fills c with the defaults. 0 or -1 (out of memory). */
int cli_config_defaults(cli_config *c);
void cli_config_free(cli_config *c);

/* Replaces *slot with a copy of s. 0 or -1 (out of memory). */
int cli_config_set_str(char **slot, const char *s);

/* Applies the TOML text[0..len) (it need not be NUL-terminated) on top of c.
 * name labels messages ("config.toml:12: ..."). Returns 0, or -1 with one
 * line in err naming the line and the key ("out of memory" when that is the
 * cause); c may then be partly updated. */
int cli_config_parse(cli_config *c, const char *text, size_t len, const char *name,
                     cli_config_warn_fn warn, void *warn_user, char *err, size_t err_len);

/* Reads and applies the file at path. A missing file is not an error:
 * *found says whether it existed. Files over 1 MiB are refused. */
int cli_config_load(cli_config *c, const char *path, bool *found, cli_config_warn_fn warn,
                    void *warn_user, char *err, size_t err_len);

/* Go's time.ParseDuration: an optional sign, then one or more decimal
 * numbers (fractions allowed) each with a unit ns, us, µs, μs, ms, s, m, h;
 * "0" alone is allowed. 0, or -1 on bad syntax or int64 overflow. */
int cli_parse_duration(const char *s, int64_t *ns);

#endif
