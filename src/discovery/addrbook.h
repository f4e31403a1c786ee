/* Internal: the address book (WIRE.md 9.7), the sans-I/O part of discovery.
 *
 * A bounded set of known peer addresses, each with a dial record, kept in
 * two tables of buckets after Bitcoin Core's addrman, and its file in the
 * reference's format. Time is always passed in (Unix seconds), so nothing
 * here reads a clock.
 *
 * One entry per peer ID. The reference keys its book by the whole
 * "<id>@<ip>:<port>" string, so one ID can hold many addresses; since a node
 * can only be connected once per ID and a dial to the wrong address fails the
 * ID check anyway, more than one address per ID only lets a peer fill the
 * book with one node.
 *
 * ---- tables -----------------------------------------------------------------
 * Every entry is in exactly one of two tables:
 * - new: addresses only heard of. An entry sits in 1..8 new buckets (one per
 *   source group it was heard from, a further one ever less likely: 2^refs
 *   times harder each time).
 * - tried: addresses we dialled and held a connection to. One bucket each.
 * A bucket holds at most bucket_size entries in no fixed order (addrman's
 * fixed slot per address loses honest addresses to birthday collisions at
 * TM2's sizes: 20 addresses from one source spread over 256 slots collide
 * about half the time).
 *
 * Placement is keyed by a secret (32 random bytes, kept in the book file so
 * it is stable across restarts; keyed BLAKE2b) and by groups:
 * - an address's group: IPv4 /16, IPv6 /32; a loopback or private address
 *   (RFC 1918, link-local, unique-local; tm2_netaddr_is_local/_private) is a
 *   group of its own, IP and port: that is where test networks and sentry
 *   set-ups put several nodes per host, told apart by port;
 * - a source's group: the group of the IP of the peer that told us (its
 *   connection's address, never what it claims), port left out (an inbound
 *   connection's port says nothing). An address with no source is its own.
 * new bucket   = H(key, "n", sgroup, H(key, "N", group, sgroup) mod P) mod new_buckets
 * tried bucket = H(key, "T", group, H(key, "K", ip, port) mod T) mod tried_buckets
 * with P = new_buckets / 16 (at least 1) buckets per source group and
 * T = tried_buckets / 8 (at least 1) buckets per address group.
 *
 * Bounds that follow (defaults in brackets):
 * - one (address group, source group) pair reaches one new bucket: at most
 *   bucket_size entries [32];
 * - one source group reaches P new buckets: at most P * bucket_size entries
 *   [8 * 32 = 256], whatever the addresses;
 * - one address group reaches T tried buckets: at most T * bucket_size tried
 *   entries [4 * 32 = 128];
 * - at most max_entries entries in all [1000], never more than the tables
 *   hold.
 * Defaults, scaled for TM2 networks (tens to hundreds of nodes, the book
 * bound 1000): bucket_size 32; tried_buckets the power of two at least
 * max_entries / 32 (at least 4) [32], new_buckets four times that [128], so
 * 5120 slots for 1000 entries. A source group gets 1/16 of the new table as
 * in addrman; an address group 1/8 of the tried table (addrman: 1/32), as TM2
 * validators cluster in a few cloud /16s.
 *
 * Adding (heard of an address): a known ID with the same address is
 * refreshed (last_seen) and may gain a new bucket. A known ID with another
 * address moves there only if its current address is terrible or, in the new
 * table, has failed since it last worked: gossip cannot redirect a working or
 * untried address, and never a tried one that is not terrible; only a
 * connection (mark_connected) proves a new address. A new ID enters its new
 * bucket if that has room and the book is below max_entries; a full bucket
 * takes it only in place of a terrible entry (dropped) or of one held in
 * other buckets too (that reference dropped); a full book only in place of a
 * terrible entry of that bucket. Else TM2_EFULL. So no source fills more than
 * its buckets, and none flushes a good entry.
 *
 * Terrible (addrman's IsTerrible): not attempted in the last minute, and
 * not seen nor held for 30 days, or never connected and failed 3 times, or
 * failed 10 times in a row with no connection for 7 days.
 *
 * Connection marks, as the reference v1.7.1 keeps them: mark_connected
 * records that we hold a connection we dialed to the address (on connect and
 * again every discovery round). A mark counts for TM2__ADDRBOOK_CONNECTED_TTL
 * (24 h) after it was set. The first mark moves the entry to the tried table
 * (test-before-evict below); a mark at another address of the ID moves the
 * entry there (tried if it has room, else new).
 *
 * Test-before-evict: an entry whose tried bucket is full stays in new and
 * joins a collision set (at most 16; a full set turns it away until later).
 * tm2__addrbook_resolve settles it against the bucket's occupant held
 * longest ago: occupant held in the last 4 h: the newcomer stays in new;
 * occupant failed since it last connected: the occupant goes back to new (or
 * out, when its new bucket is full) and the newcomer takes its place;
 * otherwise the occupant is to be dialled (tm2__addrbook_collision_tests)
 * and the collision waits for the outcome, for 40 minutes at most, after
 * which the occupant stays. A tried entry is thus never replaced before it
 * has been tried and failed.
 *
 * Dial record: mark_attempt when a dial starts (last_attempt = now),
 * mark_connected when it connected and every round while it is held
 * (attempts = 0, last_attempt = last_connected = now), mark_failure when it
 * failed (attempts += 1, last_attempt = now). After an attempt an entry is
 * not selected again for retry_base << attempts seconds (30 s while a dial is
 * in flight or after it connected, then 60 s, 120 s, ... capped at retry_max,
 * 1 h). Dead addresses age out: tm2__addrbook_expire drops entries with at
 * least dead_attempts (10) failed attempts in a row that were not seen in
 * gossip for dead_after (7 days).
 *
 * Memory: max_entries entries (about 200 bytes each), an ID index of
 * 2 * max_entries slots, and (new_buckets + tried_buckets) * bucket_size
 * entry slots; allocated once by tm2__addrbook_new. Every call but load,
 * encode, expire and the counting helpers does work bounded by bucket_size,
 * the collision set and its output size.
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
#define TM2__ADDRBOOK_FILE_MAX      (8u << 20)
#define TM2__ADDRBOOK_DEAD_ATTEMPTS 10
#define TM2__ADDRBOOK_DEAD_AFTER    (7 * 24 * 3600)
#define TM2__ADDRBOOK_RETRY_BASE    30
#define TM2__ADDRBOOK_RETRY_MAX     3600
/* Gossip refreshes last_seen all the time; only a move by at least this
 * much makes the book dirty, so a busy node does not rewrite its file on
 * every discovery tick. */
#define TM2__ADDRBOOK_SEEN_SLACK    600
/* How long a connection mark counts, and the renewal that makes the book
 * dirty (half of it): a held peer is re-marked every round, but its mark is
 * written at most twice a day. */
#define TM2__ADDRBOOK_CONNECTED_TTL (24 * 3600)
#define TM2__ADDRBOOK_MARK_SLACK    (TM2__ADDRBOOK_CONNECTED_TTL / 2)
/* Times are kept in [0, TIME_MAX]; larger or negative inputs are clamped. */
#define TM2__ADDRBOOK_TIME_MAX      ((int64_t)1 << 40)

/* Tables. */
#define TM2__ADDRBOOK_KEY_LEN       32
#define TM2__ADDRBOOK_BUCKET_SIZE   32      /* default */
#define TM2__ADDRBOOK_BUCKET_MAX    64      /* largest bucket_size */
#define TM2__ADDRBOOK_BUCKETS_MAX   4096    /* largest new_buckets or tried_buckets */
#define TM2__ADDRBOOK_MAX_REFS      8       /* new buckets per entry */
#define TM2__ADDRBOOK_COLLISIONS    16      /* the collision set */
/* addrman's constants. */
#define TM2__ADDRBOOK_HORIZON       (30 * 24 * 3600)
#define TM2__ADDRBOOK_RETRIES       3
#define TM2__ADDRBOOK_MAX_FAILURES  10
#define TM2__ADDRBOOK_MIN_FAIL      (7 * 24 * 3600)
#define TM2__ADDRBOOK_REPLACEMENT   (4 * 3600)
#define TM2__ADDRBOOK_TEST_WINDOW   (40 * 60)

typedef struct tm2__addrbook tm2__addrbook;

/* Zero fields take the defaults above. */
typedef struct tm2__addrbook_config {
    size_t max_entries;        /* at most TM2__ADDRBOOK_MAX_LIMIT */
    uint32_t dead_attempts;
    int64_t dead_after;        /* seconds */
    int64_t retry_base;        /* seconds */
    int64_t retry_max;         /* seconds, >= retry_base */
    /* Tables (see above): 0 = derived from max_entries. */
    uint32_t new_buckets;      /* at most TM2__ADDRBOOK_BUCKETS_MAX */
    uint32_t tried_buckets;    /* at most TM2__ADDRBOOK_BUCKETS_MAX */
    uint32_t bucket_size;      /* at most TM2__ADDRBOOK_BUCKET_MAX */
    /* The placement key (TM2__ADDRBOOK_KEY_LEN bytes, copied; the owner
     * draws it from its randomness, pex_core from its random op); NULL: all
     * zero (tests). A key in a loaded file replaces it. */
    const uint8_t *key;
    /* Seeds the book's own random choices (selection, samples, extra new
     * buckets); 0: a fixed seed (tests). */
    uint64_t seed;
    /* Group loopback and private addresses by network (/16, /32) like
     * public ones, instead of each address on its own (tests on 127/8). */
    bool group_local;
} tm2__addrbook_config;

typedef struct tm2__addrbook_entry {
    tm2_netaddr addr;          /* always has an ID and passes tm2_netaddr_validate */
    int64_t last_seen;         /* Unix seconds: last gossip or connection */
    uint32_t attempts;         /* failed dials since the last success */
    int64_t last_attempt;      /* 0 = never */
    int64_t last_connected;    /* Unix seconds: last held a connection we dialed; 0 = never */
    int64_t mark_saved;        /* not in the file: last_connected when it last dirtied the book */
    /* Where it is: tried (buckets[0]) or refs new buckets (buckets[0..refs)). */
    bool tried;
    uint8_t refs;              /* new buckets; 0 when tried */
    uint16_t buckets[TM2__ADDRBOOK_MAX_REFS];
    /* The IP that first told us of it (IPv4-mapped), when has_src; else the
     * address is its own source. All zero: unknown (one group for all). */
    bool has_src;
    uint8_t src[16];
} tm2__addrbook_entry;

/* What tm2__addrbook_add did. */
enum {
    TM2__AB_ADDED = 1,         /* new ID (possibly in place of a terrible entry) */
    TM2__AB_REFRESHED = 2,     /* same address: last_seen moved up to now */
    TM2__AB_REPLACED = 3,      /* known ID, new address; dial record reset */
    TM2__AB_KEPT = 4,          /* known ID, another address kept (see above) */
};

/* self (may be NULL) is our own ID, never stored. cfg NULL = defaults.
 * Returns 0, TM2_EINVAL (bad config) or TM2_ENOMEM. */
int tm2__addrbook_new(const tm2_id *self, const tm2__addrbook_config *cfg, tm2__addrbook **out);
void tm2__addrbook_free(tm2__addrbook *b);

size_t tm2__addrbook_size(const tm2__addrbook *b);
size_t tm2__addrbook_max(const tm2__addrbook *b);
/* Entries in each table (they add up to size). */
size_t tm2__addrbook_new_count(const tm2__addrbook *b);
size_t tm2__addrbook_tried_count(const tm2__addrbook *b);

/* The tables' shape after defaults, and the key. */
typedef struct tm2__addrbook_geometry {
    uint32_t new_buckets, tried_buckets, bucket_size;
    uint32_t new_per_source;   /* P above */
    uint32_t tried_per_group;  /* T above */
} tm2__addrbook_geometry;
void tm2__addrbook_get_geometry(const tm2__addrbook *b, tm2__addrbook_geometry *out);
const uint8_t *tm2__addrbook_key(const tm2__addrbook *b);

/* Placement (pure functions of the key and the addresses; src NULL: a is
 * its own source). */
uint32_t tm2__addrbook_new_bucket(const tm2__addrbook *b, const tm2_netaddr *a,
                                  const tm2_netaddr *src);
uint32_t tm2__addrbook_tried_bucket(const tm2__addrbook *b, const tm2_netaddr *a);
/* An address's group as bytes (at most TM2__ADDRBOOK_GROUP_MAX): its IPv4
 * /16 or IPv6 /32, or, for a loopback or private address without
 * group_local, the address itself (with its port unless with_port is
 * false, for a source's group). Returns the length. */
#define TM2__ADDRBOOK_GROUP_MAX 19
size_t tm2__addrbook_group(const tm2_netaddr *a, bool with_port, bool group_local, uint8_t *out);
/* Entries in bucket i of a table (tried or new). */
size_t tm2__addrbook_bucket_count(const tm2__addrbook *b, bool tried, uint32_t i);

/* Entries in no particular order: i < size. The pointer is valid until the
 * next call that changes the book. */
const tm2__addrbook_entry *tm2__addrbook_at(const tm2__addrbook *b, size_t i);
/* The entry of id, or NULL. */
const tm2__addrbook_entry *tm2__addrbook_find(const tm2__addrbook *b, const tm2_id *id);

/* True if e is terrible at now (see above). */
bool tm2__addrbook_terrible(const tm2__addrbook_entry *e, int64_t now);

/* Adds or refreshes an address heard of now from src (the telling peer's
 * connection address; NULL: a is its own source; an unspecified IP: an
 * unknown source). Returns a TM2__AB_* value, or TM2_ESELF (our ID),
 * TM2_EFULL (no room, see above), or the tm2_netaddr_validate code (no ID,
 * unspecified or reserved IP): such addresses never enter the book. */
int tm2__addrbook_add(tm2__addrbook *b, const tm2_netaddr *a, const tm2_netaddr *src,
                      int64_t now);

/* 0 or TM2_ENOTFOUND. */
int tm2__addrbook_remove(tm2__addrbook *b, const tm2_id *id);
int tm2__addrbook_mark_attempt(tm2__addrbook *b, const tm2_id *id, int64_t now);
/* Marks a's ID connected at a's address (see above). 0, TM2_ENOTFOUND (the
 * ID is not in the book: the reference also marks only what it holds),
 * TM2_EINVAL (a different address that fails tm2_netaddr_validate) or
 * TM2_EFULL (a different address for which neither table has room: the
 * entry is dropped). */
int tm2__addrbook_mark_connected(tm2__addrbook *b, const tm2_netaddr *a, int64_t now);
int tm2__addrbook_mark_failure(tm2__addrbook *b, const tm2_id *id, int64_t now);

/* True if e's connection mark is live at now. */
bool tm2__addrbook_connected(const tm2__addrbook_entry *e, int64_t now);
/* How many entries have a live connection mark at now (O(size)). */
size_t tm2__addrbook_count_connected(const tm2__addrbook *b, int64_t now);

/* When e may be dialled again (0 if it never was). */
int64_t tm2__addrbook_retry_at(const tm2__addrbook *b, const tm2__addrbook_entry *e);

/* Drops the dead entries (see above); returns how many. O(size). */
size_t tm2__addrbook_expire(tm2__addrbook *b, int64_t now);

/* Returns true for entries to leave out (connected, being dialled, banned,
 * private). It must not change the book. */
typedef bool (*tm2__addrbook_skip_fn)(const tm2__addrbook_entry *e, void *user);

/* Up to max dial candidates into out, no ID twice: each draw takes the new
 * or the tried table (even odds while both have entries), a uniformly drawn
 * non-empty bucket of it and an entry of that bucket; entries in back-off
 * (retry_at > now) or rejected by skip (may be NULL) are passed over, and an
 * entry is taken with chance 0.66^min(attempts, 8) times a factor that grows
 * by 1.2 with every refusal (addrman's GetChance). A source's share of the
 * draws is thus its share of non-empty buckets, not of entries. At most
 * 64 * max + 64 draws. Does not change the entries (mark the attempt when
 * dialling). Returns the number written. */
size_t tm2__addrbook_select(tm2__addrbook *b, int64_t now, tm2__addrbook_skip_fn skip,
                            void *user, tm2_netaddr *out, size_t max);

/* Up to max entries to share (a discovery answer) into out, no ID twice,
 * terrible ones and those skip rejects left out: drawn across the buckets
 * of both tables as select does, without the chance weighting (at most
 * 8 * max + 32 draws); every eligible entry when the book holds at most max.
 * Returns the number written. */
size_t tm2__addrbook_sample(tm2__addrbook *b, int64_t now, tm2__addrbook_skip_fn skip,
                            void *user, tm2_netaddr *out, size_t max);

/* Settles the collision set at now (see above). Returns how many
 * collisions ended (either way). */
size_t tm2__addrbook_resolve(tm2__addrbook *b, int64_t now);
/* Tried occupants still to be dialled for a waiting collision, each at most
 * once per collision, those skip rejects left out; up to max into out. The
 * caller marks the attempt and reports the outcome as for any dial.
 * Returns the number written. */
size_t tm2__addrbook_collision_tests(tm2__addrbook *b, int64_t now, tm2__addrbook_skip_fn skip,
                                     void *user, tm2_netaddr *out, size_t max);
/* Entries waiting in the collision set. */
size_t tm2__addrbook_collisions(const tm2__addrbook *b);

/* Checks every internal invariant (each entry in exactly one table, its
 * buckets and references consistent, no entry twice in a bucket, buckets
 * within bucket_size, counts, the ID index, the collision set); for tests
 * and fuzzing, O(size + slots). Returns 0, or the line number of the first
 * broken check. */
int tm2__addrbook_check(const tm2__addrbook *b);

/* ---- persistence ---------------------------------------------------------
 * The file is the reference's (v1.7.1 store.go): a JSON object {"peers":
 * [{"addr": "<id>@<ip>:<port>", "last_seen": <unix>, "last_connected":
 * <unix>}, ...]}, tab-indented, no trailing newline, newest first;
 * last_connected only when set, as the reference's omitempty. The
 * reference's loader ignores unknown keys (encoding/json without
 * DisallowUnknownFields), so ours ride along:
 * - per entry: "attempts" and "last_attempt" (each only when non-zero),
 *   "tm2p2p_src" (the source's IP, when not the address itself),
 *   "tm2p2p_tried" (its tried bucket) or "tm2p2p_new" ([new buckets]);
 * - top level, after "peers": "tm2p2p_key" (the key, 64 hex digits) and
 *   "tm2p2p_tables" ({"new_buckets", "tried_buckets", "bucket_size"}).
 * None of these keys matches a reference key case-insensitively. */

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
 * file corrupt: TM2_EDECODE, book left empty. Our own keys are never a
 * reason to refuse a file: a malformed one is ignored.
 * Entries whose address does not parse (host names are not resolved), fails
 * tm2_netaddr_validate or is ours are skipped; last_seen 0 means now; times
 * outside [1, now] are clamped into it (last_connected and the dial record
 * into [0, now]); a "last_success" (older tm2p2p files) stands for
 * last_connected when that is absent; of two entries for one ID, and beyond
 * max_entries, those held most recently, then seen most recently, are kept.
 * Placement: a file with our key and the book's table shape is restored as
 * written (a tried entry in its tried bucket, a new one in its listed
 * buckets). Any other file (the reference's, an older tm2p2p's, other
 * tables) is migrated: its key is kept if it has one, entries ever connected
 * go to the tried table (most recently held first) and the others to the new
 * table with their recorded source, or as their own; an entry that finds no
 * room is dropped. The book is dirty afterwards if anything was dropped,
 * changed or migrated. Returns the number of entries loaded, TM2_ETOOBIG
 * (over TM2__ADDRBOOK_FILE_MAX), TM2_EDECODE, TM2_ESTATE or TM2_ENOMEM, with
 * the reason in why. */
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
