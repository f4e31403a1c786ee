/* Peer discovery: the peer-exchange reactor (channel 0x50), seed mode and
 * the address book (WIRE.md section 9).
 *
 * A tm2_discovery is a reactor: build it, put tm2_discovery_reactor() in the
 * switch config's reactors, and free it after the switch. One discovery
 * object serves one switch, once.
 *
 * What it does, all on the switch's network thread:
 * - Every interval it asks one random connected peer that advertised 0x50
 *   (and was not asked in the last interval) for its peers, and asks every
 *   new outbound peer at once (as the reference does).
 * - It answers a Request with at most max_addrs addresses: the advertised
 *   NodeInfo addresses of its connected peers that pass tm2_netaddr_validate,
 *   shuffled, never a private peer's and never the asker's own; nothing is
 *   sent when there is none. A seed-mode node also answers from its book.
 * - A Response is accepted only if that peer has a Request of ours not yet
 *   answered (up to 4 are remembered; a peer with nothing to share sends
 *   nothing) and it carries 1..max_addrs valid addresses. Its addresses,
 *   but ours and the switch's seeds', go to the address book (connected
 *   peers' too, so a restart finds them), and those we are not connected to
 *   are dialled while the outbound count is below target_outbound. Rejected
 *   messages (oversized, unsolicited, malformed, failing validation) are
 *   ignored, counted and logged, and the connection is kept, as the
 *   reference does; but each one is a strike against the peer (see
 *   abuse_limit).
 * - Requests from one peer closer together than request_min_gap_ms are
 *   ignored (a strike each).
 * - Below target_outbound it dials candidates from the address book.
 * - Seeds are the switch's (tm2_switch_config.seeds): the switch dials them
 *   and keeps a seed as an ordinary outbound peer, which counts towards
 *   target_outbound and is asked for peers like any other. Discovery never
 *   dials them and keeps them out of the book (tm2_switch_is_seed).
 * - Persistent peers are the switch's too: discovery never hands their IDs
 *   to tm2_switch_dial_peers (tm2_switch_is_persistent), wherever it heard
 *   of them.
 * - The book also learns the addresses we dialled successfully and those
 *   inbound peers advertise (private peers' excepted). Each outbound peer's
 *   address is marked connected when it connects and again every interval;
 *   a mark lapses 24 h after it was last renewed.
 * - The book resists eclipse attacks as Bitcoin Core's addrman does: a
 *   "new" table of addresses heard of and a "tried" table of addresses we
 *   dialled and held, each of buckets, placement keyed by a per-node secret
 *   (kept in the book file), by the address's group (IPv4 /16, IPv6 /32;
 *   loopback and private addresses one each) and, for "new", by the group
 *   of the peer that told us (its connection's IP). So one source group
 *   reaches a bounded number of buckets (by default 8 of 128, at most 256
 *   entries), one address group from one source one bucket (32 entries); a
 *   full bucket takes a newcomer only in place of a terrible entry, and a
 *   tried entry is replaced only after it was dialled and failed
 *   (test-before-evict: the occupant is dialled first). Dials are drawn
 *   across the tables' buckets, weighted against recent failures; a seed's
 *   answers are a sample across buckets.
 * - Seed mode (this node is a seed; CometBFT's model): every
 *   non-persistent peer is disconnected seed_disconnect_ms after the first
 *   exchange with it (we answered its Request or got its Response), and
 *   seed_disconnect_ms + 2 * interval_ms after it connected at the latest,
 *   so inbound slots stay free. Every peer is asked at connect, and the
 *   peers it keeps (persistent: other seeds) again each interval, as a
 *   node asks its peers, so that seeds keep trading what they learn. The
 *   node crawls: each interval it dials up to target_outbound book entries
 *   (minus those connected or being dialled), asks each for its peers and
 *   lets it go after the answer; dial results keep the book's records
 *   fresh. Its answers draw on connected peers and the book alike (entries
 *   that failed twice in a row left out).
 *
 * Address book: loaded by tm2_discovery_new (a missing file is a fresh
 * book; a corrupt one is logged, renamed to "<path>.corrupt" and replaced by
 * an empty book), its entries dialled at start regardless of back-off
 * (up to target_outbound; never persistent peers or seeds), saved on a tick when it changed and always when
 * the switch stops. Only the encoding runs on the network thread; the write
 * (temporary file, fsync, rename, fsync of the directory) runs on a writer
 * thread the discovery object owns when a book path is set, so a slow disk
 * never stalls the peers. At most one encoded book waits for that thread
 * (a newer one replaces it); a change made during a write keeps the book
 * marked changed, and a failed write is retried on the next tick
 * (book_save_errors, logged). book_saves counts writes as the tick after
 * them learns of them. At stop the final book is written and waited for
 * (the one blocking write) and the thread joined.
 *
 * Thread rules: tm2_discovery_new, _free and _get_stats may be called from any
 * thread (free only after tm2_switch_free); _get_stats is safe while the switch
 * runs. The book writer thread touches only the file, never the book or the
 * switch. */
#ifndef TM2P2P_DISCOVERY_H
#define TM2P2P_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/reactor.h"
#include "tm2p2p/switch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The discovery channel and the reference's figures (WIRE.md 9.1, 9.3). */
#define TM2_DISCOVERY_CHANNEL              0x50
#define TM2_DISCOVERY_DEFAULT_INTERVAL_MS  3000
/* The reference v1.2.0 rejects a Response with more entries than this, so
 * it is also the largest max_addrs. */
#define TM2_DISCOVERY_MAX_ADDRS            30

typedef struct tm2_discovery_config {
    /* The request/dial/save tick; 0: 3000. A book address is retried ten
     * intervals after an attempt at the soonest (1 s to 30 s), twice that
     * after each failure in a row, up to an hour. */
    uint32_t interval_ms;
    uint32_t max_addrs;            /* per Response, sent and accepted; 0: 30; at most 30 */
    /* Requests from one peer closer together than this are ignored;
     * 0: interval_ms / 2. */
    uint32_t request_min_gap_ms;
    /* A peer is stopped (logged) once it has this many strikes: one per
     * ignored Request and per rejected message, one forgiven per interval.
     * An honest peer stays near zero. 0: 10. */
    uint32_t abuse_limit;

    const char *addrbook_path;     /* copied; NULL: in memory only */
    /* Entries; 0: 1000; at most 10000. The book's tables scale with it
     * (tried buckets: the power of two >= addrbook_max / 32, new: four
     * times as many, 32 entries a bucket). */
    size_t addrbook_max;

    /* This node is a seed (see above). Seeds to dial are the switch's. */
    bool seed_mode;
    /* The book groups loopback and private addresses by network (IPv4 /16)
     * like public ones, instead of each address on its own: as the switch's
     * limit_local_addrs, for tests of the group bounds on 127.0.0.0/8. */
    bool limit_local_addrs;
    /* Seed mode: how long a peer stays after the first exchange; keep it
     * well above the connection's flush throttle so the answer leaves
     * before the close. 0: 3000. */
    uint32_t seed_disconnect_ms;

    /* Outbound peers the node aims for: set it to the switch's
     * max_outbound. In seed mode, the most crawl dials in flight. 0: 10.
     * In a network of n nodes every node can reach it only if inbound
     * peers cannot crowd it out: target <= max_inbound <= n - 1 - target. */
    uint32_t target_outbound;

    tm2_log_fn log;                /* NULL: no logging */
    void *log_user;
    tm2_log_level log_level;
} tm2_discovery_config;

/* Counters since tm2_discovery_new. */
typedef struct tm2_discovery_stats {
    uint64_t requests_sent;
    uint64_t requests_received;
    uint64_t requests_answered;     /* a Response was queued */
    uint64_t requests_ignored;      /* rate-limited */
    uint64_t responses_received;
    uint64_t responses_rejected;    /* sum of the four below */
    uint64_t responses_oversized;   /* more than max_addrs entries */
    uint64_t responses_unsolicited;
    uint64_t responses_malformed;   /* a Response that did not decode */
    uint64_t responses_invalid;     /* decoded, failed ValidateBasic */
    uint64_t messages_undecodable;  /* not a Request or Response, or a bad Request */
    uint64_t addrs_received;        /* entries of accepted Responses */
    uint64_t addrs_accepted;        /* entered or refreshed the book */
    uint64_t addrs_rejected;        /* ours, or refused by the book (the switch's seeds: neither) */
    uint64_t dials;                 /* addresses handed to the switch */
    uint64_t dial_failures;         /* book addresses the switch could not reach */
    uint64_t peers_stopped;         /* for abuse */
    uint64_t peers_released;        /* seed-mode disconnects */
    uint64_t book_saves;
    uint64_t book_save_errors;
    uint64_t book_size;             /* entries at the last tick */
    /* Of book_size, entries in the tried table (we dialled and held them);
     * the rest, the new table, were only heard of. */
    uint64_t book_tried;
} tm2_discovery_stats;

typedef struct tm2_discovery tm2_discovery;

/* Validates cfg, copies it and loads the address book (blocking file I/O
 * on the caller's thread). Returns 0 or TM2_EINVAL, TM2_ENOMEM, TM2_EIO
 * (the book file exists but cannot be read). A corrupt book is not an
 * error: it is logged and moved aside. */
TM2_API int tm2_discovery_new(const tm2_discovery_config *cfg, tm2_discovery **out);

/* The reactor to put in tm2_switch_config.reactors: channel 0x50,
 * priority 1, send queue 20, receive capacity 5242880 (WIRE.md 9.1). Valid
 * until tm2_discovery_free. */
TM2_API const tm2_reactor *tm2_discovery_reactor(tm2_discovery *d);

/* A snapshot of the counters. Any thread. */
TM2_API void tm2_discovery_get_stats(const tm2_discovery *d, tm2_discovery_stats *out);

/* After tm2_switch_free (or if the reactor was never used). NULL is fine. */
TM2_API void tm2_discovery_free(tm2_discovery *d);

#ifdef __cplusplus
}
#endif
#endif
