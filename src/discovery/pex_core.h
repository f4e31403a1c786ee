/* Internal: the discovery reactor's logic without the switch (see
 * include/tm2p2p/discovery.h for the behaviour).
 *
 * The core knows peers as opaque handles plus a tm2__pex_peer_info, reaches
 * the switch only through tm2__pex_ops, and is told the time at every
 * call, so it can be driven by unit tests with fake peers and a fake clock.
 * pex_reactor.c binds it to a real switch.
 *
 * Re-entrancy: the core asks the switch to stop peers only at the end of
 * an entry point, one at a time, re-reading its peer table after each, so
 * ops->stop may call tm2__pex_remove_peer synchronously. No other op may
 * call back into the core.
 *
 * Book saves: the core encodes the book on the network thread (cheap) and
 * hands the text to ops->save_submit, which writes it elsewhere (the
 * reactor: a book_writer thread; tests: at once). Finished writes come back
 * through ops->save_collect at the next tick (and right after a submit),
 * and only then is the book marked clean (tm2__addrbook_saved with the
 * written generation), so a change made while a write is under way is never
 * lost. A generation that is waiting, being written or written is not
 * submitted again; a failed one is, on the next tick. Without save ops the
 * core writes the file itself, blocking.
 *
 * Thread rules: one thread at a time (the network thread); only
 * tm2__pex_stats may run concurrently with the rest. The save ops are
 * called on that thread; what they do with the text is theirs. */
#ifndef TM2_DISCOVERY_PEX_CORE_H
#define TM2_DISCOVERY_PEX_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "discovery/addrbook.h"
#include "tm2p2p/discovery.h"

/* Monotonic milliseconds for deadlines, Unix seconds for the book. */
typedef struct tm2__pex_time {
    uint64_t ms;
    int64_t unix_s;
} tm2__pex_time;

typedef struct tm2__pex_peer_info {
    tm2_id id;
    bool outbound;
    bool slot_out;            /* inbound in an outbound slot (tm2_peer_in_outbound_slot):
                               * counts toward the outbound target */
    bool persistent;
    bool is_private;
    bool has_channel;         /* advertised 0x50 */
    bool has_addr;            /* advertised address passes tm2_netaddr_validate */
    tm2_netaddr addr;         /* the advertised NodeInfo address */
    tm2_netaddr dialled;      /* outbound: the address dialled */
    /* The connection's remote address (outbound: the address dialled;
     * inbound: the socket's peer): the source group of the addresses the
     * peer tells us. Unspecified: outbound peers fall back to dialled,
     * inbound ones count as one unknown source. */
    tm2_netaddr remote;
} tm2__pex_peer_info;

/* Book writes finished since the last collect. */
typedef struct tm2__pex_save_result {
    uint32_t saves;           /* writes that succeeded */
    uint32_t errors;          /* writes that failed */
    uint64_t gen;             /* generation of the latest finished write */
    int rc;                   /* its outcome: 0 or a TM2_E* code */
    int err;                  /* the latest failure's code (errors > 0) */
    char why[256];            /* and its reason */
} tm2__pex_save_result;

typedef struct tm2__pex_ops {
    void *user;
    /* Queue msg on channel 0x50 without waiting; 0 or a TM2_E* code. */
    int (*send)(void *user, void *peer, const uint8_t *msg, size_t len);
    void (*dial)(void *user, const tm2_netaddr *addrs, size_t n);
    /* Disconnect; reason 0 for a release, else why. */
    void (*stop)(void *user, void *peer, int reason);
    void (*counts)(void *user, size_t *inbound, size_t *outbound, size_t *dialing);
    bool (*is_private)(void *user, const tm2_id *id);
    /* The switch's seeds (kept out of the book) and persistent peers (never
     * dialled by discovery: the switch dials them at their configured
     * address). Either may be NULL: none. */
    bool (*is_seed)(void *user, const tm2_id *id);
    bool (*is_persistent)(void *user, const tm2_id *id);
    /* Called by tm2__pex_free for each peer still known (may be NULL). */
    void (*forget)(void *user, void *peer);
    /* Book writes: all three or none (then the core writes, blocking).
     * save_submit takes text (malloc'd, len bytes plus a NUL; the callee's
     * in every case, even on error) of generation gen, to be written to
     * the config's addrbook_path without blocking; it may replace a
     * submission not yet written. 0 or a TM2_E* code.
     * save_collect fills out with what finished since its last call
     * (zeroes if nothing). save_drain blocks until everything submitted is
     * written (only at stop). */
    int (*save_submit)(void *user, char *text, size_t len, uint64_t gen);
    void (*save_collect)(void *user, tm2__pex_save_result *out);
    void (*save_drain)(void *user);
    /* len random bytes (the switch's engine: reproducible in the
     * simulator): the book's key and seed at tm2__pex_new, every random
     * pick after. NULL: a fixed sequence (tests, fuzzing). */
    void (*random)(void *user, void *buf, size_t len);
} tm2__pex_ops;

typedef struct tm2__pex tm2__pex;

/* Checks and copies cfg (defaults filled in) and loads the book from its
 * path at unix_now. Returns 0, TM2_EINVAL (also: some but not all save
 * ops), TM2_ENOMEM or TM2_EIO. */
int tm2__pex_new(const tm2_discovery_config *cfg, const tm2__pex_ops *ops, int64_t unix_now,
                 tm2__pex **out);
void tm2__pex_free(tm2__pex *x);

/* The configuration with defaults filled in. */
const tm2_discovery_config *tm2__pex_config(const tm2__pex *x);

/* The switch started: self is our ID (dropped from the book); the book's
 * entries are dialled. */
void tm2__pex_start(tm2__pex *x, const tm2_id *self, tm2__pex_time t);
/* The switch stops: the book is submitted (path set, changed or not) and
 * waited for (save_drain), and the outcome collected. */
void tm2__pex_stop(tm2__pex *x, tm2__pex_time t);

/* A peer's connection runs (peer is its handle, unique while connected).
 * 0 or TM2_ENOMEM (then the peer is unknown to discovery). */
int tm2__pex_add_peer(tm2__pex *x, void *peer, const tm2__pex_peer_info *info, tm2__pex_time t);
/* The peer is gone; false if it was not known. */
bool tm2__pex_remove_peer(tm2__pex *x, void *peer);
/* A message on channel 0x50 from peer. */
void tm2__pex_receive(tm2__pex *x, void *peer, const uint8_t *msg, size_t len, tm2__pex_time t);
/* The periodic work (every interval_ms). */
void tm2__pex_tick(tm2__pex *x, tm2__pex_time t);
/* The switch could not connect to id. */
void tm2__pex_dial_failed(tm2__pex *x, const tm2_id *id, tm2__pex_time t);

void tm2__pex_stats(const tm2__pex *x, tm2_discovery_stats *out);

/* For tests: the book (owned by the core) and a peer's strike count
 * (-1 if unknown). */
tm2__addrbook *tm2__pex_book(tm2__pex *x);
int tm2__pex_strikes(const tm2__pex *x, void *peer);

#endif
