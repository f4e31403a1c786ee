/* Internal: the address book (WIRE.md 9.7), the sans-I/O part of discovery.
 *
 * A bounded in-memory set of known peer addresses with a dial record per
 * entry, and its file in the reference's format. Time is always passed in
 * (Unix seconds), so nothing here reads a clock.
 *
 * One entry per peer ID. The reference keys its book by the whole
 * "<id>@<ip>:<port>" string, so one ID can hold many addresses; since a node
 * can only be connected once per ID and a dial to the wrong address fails
 * the ID check anyway, more than one address per ID only lets a peer fill the
 * book with one node. A new address for a known ID replaces the old one,
 * except when the old one is proven (we held a connection we dialed to it
 * and no dial has failed since): then it is kept, so gossip cannot redirect us away from a
 * working address. Once that address fails, the next gossiped one wins.
 *
 * Connection marks, as the reference v1.7.1 keeps them: mark_connected
 * records that we hold a connection we dialed to the address (on connect and
 * again every discovery round). A mark counts for TM2__ADDRBOOK_CONNECTED_TTL
 * (24 h) after it was set; then the entry is like one never connected to.
 *
 * Bound: max_entries (default 1000). When a new ID arrives in a full book,
 * an entry without a live mark goes, the one seen longest ago first (then
 * the most failures, then the larger ID); only a book whose every entry has a
 * live mark turns the new address away (TM2_EFULL), so addresses peers only
 * gossip never displace ones we held within a day. Loading keeps the entries
 * that order would evict last.
 *
 * Dial record: mark_attempt when a dial starts (last_attempt = now),
 * mark_connected when it connected and every round while it is held
 * (attempts = 0, last_attempt = last_connected = now; a
 * different address of the ID replaces the entry's, since the connection
 * just proved it), mark_failure when it failed (attempts += 1,
 * last_attempt = now).
 * After an attempt an entry is not picked again for retry_base << attempts
 * seconds (30 s while a dial is in flight or after it connected, then 60 s,
 * 120 s, ... capped at retry_max, 1 h).
 * Dead addresses age out: tm2__addrbook_expire drops entries with at least
 * dead_attempts (10) failed attempts in a row that were not seen in gossip
 * for dead_after (7 days). A peer that gossip still reports is alive
 * somewhere, so it stays (at most one try an hour).
 *
 * Not thread-safe: one owner (the discovery reactor, on the network thread).
 * Saving has a thread-safe blocking half (write_file) so the fsync can run
 * off the network thread. */
#ifndef TM2_DISCOVERY_ADDRBOOK_H
#define TM2_DISCOVERY_ADDRBOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"
#include "tm2p2p/key.h"
#include "tm2p2p/netaddr.h"

#define TM2__ADDRBOOK_DEFAULT_MAX   1000
/* Largest bound: a full book's file stays well under the load limit. */
#define TM2__ADDRBOOK_MAX_LIMIT     10000
/* Files over this are refused (and moved aside) by the loader. */
#define TM2__ADDRBOOK_FILE_MAX      (4u << 20)
#define TM2__ADDRBOOK_DEAD_ATTEMPTS 10
#define TM2__ADDRBOOK_DEAD_AFTER    (7 * 24 * 3600)
#define TM2__ADDRBOOK_RETRY_BASE    30
#define TM2__ADDRBOOK_RETRY_MAX     3600
/* Gossip refreshes last_seen all the time; only a move by at least this
 * much makes the book dirty, so a busy node does not rewrite its file on
 * every discovery tick. */
#define TM2__ADDRBOOK_SEEN_SLACK    600
/* How long a connection mark keeps an entry ahead of gossiped ones, and
 * the renewal that makes the book dirty (half of it): a held peer is
 * re-marked every round, but its mark is written at most twice a day. */
#define TM2__ADDRBOOK_CONNECTED_TTL (24 * 3600)
#define TM2__ADDRBOOK_MARK_SLACK    (TM2__ADDRBOOK_CONNECTED_TTL / 2)
/* Times are kept in [0, TIME_MAX]; larger or negative inputs are clamped. */
#define TM2__ADDRBOOK_TIME_MAX      ((int64_t)1 << 40)

typedef struct tm2__addrbook tm2__addrbook;

/* Zero fields take the defaults above. */
typedef struct tm2__addrbook_config {
    size_t max_entries;        /* at most TM2__ADDRBOOK_MAX_LIMIT */
    uint32_t dead_attempts;
    int64_t dead_after;        /* seconds */
    int64_t retry_base;        /* seconds */
    int64_t retry_max;         /* seconds, >= retry_base */
} tm2__addrbook_config;

typedef struct tm2__addrbook_entry {
    tm2_netaddr addr;          /* always has an ID and passes tm2_netaddr_validate */
    int64_t last_seen;         /* Unix seconds: last gossip or connection */
    uint32_t attempts;         /* failed dials since the last success */
    int64_t last_attempt;      /* 0 = never */
    int64_t last_connected;    /* Unix seconds: last held a connection we dialed; 0 = never */
    int64_t mark_saved;        /* not in the file: last_connected when it last dirtied the book */
} tm2__addrbook_entry;

/* What tm2__addrbook_add did. */
enum {
    TM2__AB_ADDED = 1,         /* new ID (possibly evicting another) */
    TM2__AB_REFRESHED = 2,     /* same address: last_seen moved up to now */
    TM2__AB_REPLACED = 3,      /* known ID, new address; dial record reset */
    TM2__AB_KEPT = 4,          /* known ID with a proven address: unchanged */
};

/* self (may be NULL) is our own ID, never stored. cfg NULL = defaults.
 * Returns 0, TM2_EINVAL (bad config) or TM2_ENOMEM. */
int tm2__addrbook_new(const tm2_id *self, const tm2__addrbook_config *cfg, tm2__addrbook **out);
void tm2__addrbook_free(tm2__addrbook *b);

size_t tm2__addrbook_size(const tm2__addrbook *b);
size_t tm2__addrbook_max(const tm2__addrbook *b);

/* Entries in no particular order: i < size. The pointer is valid until the
 * next call that changes the book. */
const tm2__addrbook_entry *tm2__addrbook_at(const tm2__addrbook *b, size_t i);
/* The entry of id, or NULL. */
const tm2__addrbook_entry *tm2__addrbook_find(const tm2__addrbook *b, const tm2_id *id);

/* Adds or refreshes an address heard of now. Returns a TM2__AB_* value, or
 * TM2_ESELF (our ID), TM2_EFULL (a new ID and every entry of the full book
 * has a live connection mark), or the tm2_netaddr_validate code (no ID,
 * unspecified or reserved IP): such addresses never enter the book. */
int tm2__addrbook_add(tm2__addrbook *b, const tm2_netaddr *a, int64_t now);

/* 0 or TM2_ENOTFOUND. */
int tm2__addrbook_remove(tm2__addrbook *b, const tm2_id *id);
int tm2__addrbook_mark_attempt(tm2__addrbook *b, const tm2_id *id, int64_t now);
/* Marks a's ID connected at a's address (see above). 0, TM2_ENOTFOUND (the
 * ID is not in the book: the reference also marks only what it holds) or
 * TM2_EINVAL (a different address that fails tm2_netaddr_validate). */
int tm2__addrbook_mark_connected(tm2__addrbook *b, const tm2_netaddr *a, int64_t now);
int tm2__addrbook_mark_failure(tm2__addrbook *b, const tm2_id *id, int64_t now);

/* True if e's connection mark is live at now. */
bool tm2__addrbook_connected(const tm2__addrbook_entry *e, int64_t now);
/* How many entries have a live connection mark at now (the book's "tried"
 * part, for the size by table that metrics report). */
size_t tm2__addrbook_count_connected(const tm2__addrbook *b, int64_t now);

/* When e may be dialled again (0 if it never was). */
int64_t tm2__addrbook_retry_at(const tm2__addrbook *b, const tm2__addrbook_entry *e);

/* Drops the dead entries (see above); returns how many. */
size_t tm2__addrbook_expire(tm2__addrbook *b, int64_t now);

/* Returns true for IDs not to dial (connected, being dialled, banned). It
 * must not change the book. */
typedef bool (*tm2__addrbook_skip_fn)(const tm2_id *id, void *user);

/* Up to max dial candidates into out, best first: entries whose back-off has
 * elapsed and that skip (may be NULL) does not reject, most recently seen
 * first (in 10-minute steps), then fewest failed attempts, then an order
 * drawn from seed, so that nodes with the same book do not all dial the same
 * peers. Does not change the book (mark the attempt when dialling).
 * Returns the number written. */
size_t tm2__addrbook_pick(tm2__addrbook *b, int64_t now, uint64_t seed,
                          tm2__addrbook_skip_fn skip, void *user, tm2_netaddr *out, size_t max);

/* ---- persistence ---------------------------------------------------------
 * The file is the reference's (v1.7.1 store.go): a JSON object {"peers":
 * [{"addr": "<id>@<ip>:<port>", "last_seen": <unix>, "last_connected":
 * <unix>}, ...]}, tab-indented, no trailing newline, newest first;
 * last_connected only when set, as the reference's omitempty. Entries with
 * a dial record also carry "attempts" and "last_attempt" (each only when
 * non-zero); the reference's loader ignores unknown keys, and a book with no
 * dial record is the reference's format exactly. */

/* True if the book changed since it was loaded or last saved. */
bool tm2__addrbook_dirty(const tm2__addrbook *b);

/* The file text (malloc'd, NUL-terminated; *len excludes the NUL) and the
 * book's change generation, for tm2__addrbook_saved. 0 or TM2_ENOMEM. */
int tm2__addrbook_encode(const tm2__addrbook *b, char **text, size_t *len, uint64_t *gen);

/* The book's current change generation (what encode would report). */
uint64_t tm2__addrbook_gen(const tm2__addrbook *b);

/* Writes text to path atomically: a temporary file in the same directory,
 * mode 0644, fsync, rename over path, fsync of the directory; missing parent
 * directories are created. Never leaves a partial file or a temporary file
 * behind. Blocking; thread-safe (touches no book). 0 or TM2_EIO with why. */
int tm2__addrbook_write_file(const char *path, const char *text, size_t len, char *why,
                             size_t why_len);

/* Marks the book clean if it did not change since the encode that returned
 * gen. */
void tm2__addrbook_saved(tm2__addrbook *b, uint64_t gen);

/* encode + write_file + saved, when dirty (or force). Returns 1 if written,
 * 0 if there was nothing to write, TM2_ENOMEM or TM2_EIO. */
int tm2__addrbook_save(tm2__addrbook *b, const char *path, bool force, char *why, size_t why_len);

/* Loads file text into an empty book (TM2_ESTATE otherwise).
 * The reference's rules (WIRE.md 9.7), read as Go's encoding/json would:
 * top-level null, a missing or null "peers", and null entries are fine;
 * keys match case-insensitively and the last duplicate wins; unknown keys
 * are ignored. Anything else of the wrong JSON type (the top level not an
 * object, "peers" not an array, an entry not an object, "addr" not a
 * string, "last_seen" or "last_connected" not an integer) makes the whole
 * file corrupt: TM2_EDECODE, book left empty. Entries whose address does not
 * parse (host names are not resolved), fails tm2_netaddr_validate or is ours
 * are skipped; last_seen 0 means now; times outside [1, now] are clamped into
 * it (last_connected and the dial record into [0, now]); a "last_success"
 * (older tm2p2p files) stands for last_connected when that is absent; of two
 * entries for one ID, and beyond max_entries, those eviction would take last
 * are kept. The book is dirty afterwards if anything was dropped or
 * changed. Returns the number of entries loaded, TM2_ETOOBIG (over
 * TM2__ADDRBOOK_FILE_MAX), TM2_EDECODE, TM2_ESTATE or TM2_ENOMEM, with the
 * reason in why. */
int tm2__addrbook_load_buffer(tm2__addrbook *b, const char *buf, size_t len, int64_t now,
                              char *why, size_t why_len);

/* Loads the file at path with tm2__addrbook_load_buffer. A missing file is
 * TM2_ENOTFOUND (a fresh node; the book stays empty). A corrupt or oversized
 * file is renamed to "<path>.corrupt" (replacing an older one; the reference
 * copies instead, renaming keeps the bad file from being read again) and
 * TM2_EDECODE or TM2_ETOOBIG is returned with why naming both paths; the book
 * is empty and usable. TM2_EIO if the file cannot be read (left in place).
 * Blocking. */
int tm2__addrbook_load(tm2__addrbook *b, const char *path, int64_t now, char *why,
                       size_t why_len);

#endif
