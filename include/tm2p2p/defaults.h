/* Every default of tm2p2p in one place: the values gno v1.7.1 ships
 * (tm2/pkg/p2p/config DefaultP2PConfig, conn DefaultMConnConfig, the switch's
 * dial and redial constants), and the bounds their validation enforces.
 *
 * tm2_switch_config_default(), tm2_mconn_config_default(), the config.toml
 * reader and the program's flags all take their values from here, so adding an
 * option touches its struct, this header and the TOML schema. Plain macros:
 * usable in static initialisers and in #if. */
#ifndef TM2P2P_DEFAULTS_H
#define TM2P2P_DEFAULTS_H

/* [p2p] keys of config.toml, with the reference's defaults. */
#define TM2_DEFAULT_LISTEN_ADDR             "tcp://0.0.0.0:26656"
#define TM2_DEFAULT_MAX_INBOUND             40u
#define TM2_DEFAULT_MAX_OUTBOUND            10u
#define TM2_DEFAULT_FLUSH_THROTTLE_MS       100u
#define TM2_DEFAULT_MAX_PACKET_PAYLOAD      1024u
#define TM2_DEFAULT_SEND_RATE               5120000u      /* bytes per second */
#define TM2_DEFAULT_RECV_RATE               5120000u
#define TM2_DEFAULT_RECV_ASSEMBLY_TIMEOUT_MS 30000u       /* 0 disables it */
#define TM2_DEFAULT_MAX_RECV_BUFFER_BYTES   (20u << 20)   /* 0 disables the budget */
#define TM2_DEFAULT_MAX_SEND_BUFFER_BYTES   (20u << 20)   /* 0 disables the budget */
#define TM2_DEFAULT_PEX                     1
#define TM2_DEFAULT_ALLOW_DUPLICATE_IP      0
#define TM2_DEFAULT_SEED_MODE               0             /* `seed_mode`, CometBFT's key */
#define TM2_DEFAULT_ADDR_BOOK_FILE          "config/addrbook.json"
#define TM2_DEFAULT_NODE_KEY_FILE           "secrets/node_key.json"

/* The smallest non-zero send or receive budget: one maximum legal block
 * response (8 MiB of block data plus 64 KiB of framing). */
#define TM2_MIN_BUFFER_BYTES                ((8u << 20) + (64u << 10))

/* The largest packet payload tm2p2p accepts in its configuration (the
 * connection's write scratch is sized for one such packet; received packets
 * are reassembled across reads). The peer must use the same value, so
 * anything near the reference's 1024 is what networks run. */
#define TM2_MAX_PACKET_PAYLOAD              65536u

/* Keepalive (not in config.toml; the reference's constants). */
#define TM2_DEFAULT_PING_INTERVAL_MS        60000u
#define TM2_DEFAULT_PONG_TIMEOUT_MS         45000u

/* Switch services (the reference's constants). */
#define TM2_DEFAULT_MAX_PENDING_INBOUND     64u           /* handshakes in flight */
#define TM2_DEFAULT_HANDSHAKE_TIMEOUT_MS    3000u
#define TM2_DEFAULT_DIAL_TIMEOUT_MS         3000u
#define TM2_DEFAULT_REDIAL_BASE_MS          1000u         /* persistent peers: 1 s doubling */
#define TM2_DEFAULT_REDIAL_MAX_MS           30000u        /* ... to 30 s, +-10% jitter */
#define TM2_DEFAULT_REDIAL_STABLE_MS        30000u        /* uptime that resets the back-off */
#define TM2_DEFAULT_REDIAL_SCAN_MS          5000u         /* missing persistent peers re-queued */
#define TM2_DEFAULT_SEED_INTERVAL_MS        30000u        /* seed dial rounds */

/* Admission, limits, eviction and bans (tm2p2p/switch.h says what each
 * does). Each is also a [p2p] key of the program's config.toml named like
 * the switch field (ban_duration without _ms, a duration such as "1h"). */
#define TM2_DEFAULT_MAX_PENDING_INBOUND_PER_IP 4u         /* handshakes in flight from one IP */
#define TM2_DEFAULT_ACCEPT_IP_RATE          12u           /* sockets a minute from one IP */
#define TM2_DEFAULT_ACCEPT_IP_BURST         12u
#define TM2_DEFAULT_ACCEPT_SUBNET_RATE      60u           /* from one /24 (IPv6 /48) */
#define TM2_DEFAULT_ACCEPT_SUBNET_BURST     60u
#define TM2_DEFAULT_MAX_INBOUND_PER_IP      4u            /* with allow_duplicate_ip */
#define TM2_DEFAULT_MAX_INBOUND_PER_SUBNET  8u
#define TM2_DEFAULT_OUTBOUND_DIVERSITY      1             /* one outbound peer per /16 (/32) */
#define TM2_DEFAULT_EVICT_INBOUND           1
#define TM2_DEFAULT_EVICT_PROTECT_GROUPS    4u
#define TM2_DEFAULT_EVICT_PROTECT_LATENCY   8u
#define TM2_DEFAULT_EVICT_PROTECT_ACTIVE    4u
#define TM2_DEFAULT_EVICT_PROTECT_OLDEST_PCT 50u
#define TM2_DEFAULT_BAN_DURATION_MS         3600000u      /* 1 h; 0: no bans for misbehaviour */
#define TM2_DEFAULT_BAN_FILE                "data/bans.json"   /* the program's, in its home */
#define TM2_DEFAULT_LIMIT_LOCAL_ADDRS       0
/* Groups each accept-rate table remembers (fixed memory, stalest out). */
#define TM2_ACCEPT_TABLE_ENTRIES            4096u

/* Discovery (peer exchange) figures. */
#define TM2_DEFAULT_PEX_INTERVAL_MS         3000u
#define TM2_DEFAULT_PEX_ABUSE_LIMIT         10u
#define TM2_DEFAULT_SEED_DISCONNECT_MS      3000u
#define TM2_DEFAULT_ADDRBOOK_MAX            1000u

#endif
