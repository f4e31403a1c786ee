/* The crawler's SQLite database: schema migrations, the writer thread and the
 * reads the engine needs at start.
 *
 * crawl_store_open creates or opens the file, switches it to WAL and applies
 * the embedded migrations (migrations.h) above its schema_version, each in a
 * transaction; a database newer than this program is refused. Records are
 * posted as crawl_op values from any thread (the network thread never waits
 * on the disk): one writer thread owns the connection from crawl_store_start
 * on and writes what is queued in one transaction per batch. Readers (the
 * report) open their own read-only connection; WAL lets them read while a
 * crawl writes.
 *
 * Thread rules: open, load and start on one thread before anything is
 * posted; post and sync from any thread; close once, after the last post. */
#ifndef TM2_CRAWL_STORE_H
#define TM2_CRAWL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/netaddr.h"
#include "tm2p2p/node_info.h"
#include "tm2p2p/switch.h"

/* Ops waiting for the writer beyond this are dropped (counted, logged). */
#define CRAWL_STORE_MAX_QUEUE 200000

typedef struct crawl_store crawl_store;

enum crawl_op_kind {
    CROP_NETWORK = 1,    /* the run's network is known: text */
    CROP_ROUND_BEGIN,    /* round number */
    CROP_ROUND_END,      /* round, probed, reachable */
    CROP_ADDR,           /* insert or update an address: addr, status, source (text), allowed */
    CROP_ATTEMPT,        /* a probe's outcome (see below) */
    CROP_EDGE,           /* from_id advertised addr */
    CROP_MISBEHAVIOR,    /* addr, auth_id, claimed_id, kind, text (reason) */
};

typedef struct crawl_op {
    struct crawl_op *next;
    int kind;
    int64_t at;                  /* Unix ms */
    uint32_t round, probed, reachable;
    char addr[TM2_NETADDR_STRLEN + 1];
    const char *status;          /* static string */
    const char *what;            /* static string: ADDR source, MISBEHAVIOR kind */
    bool allowed;
    /* ATTEMPT: success means a verified handshake (ni is then the NodeInfo,
     * owned by the op); failures counts failures in a row after it;
     * latency_ms < 0 when none; text is the error ("" on success). */
    bool success;
    uint32_t failures;
    int64_t latency_ms;
    tm2_node_info *ni;
    tm2_id from_id;              /* EDGE */
    tm2_id auth_id, claimed_id;  /* ATTEMPT, MISBEHAVIOR ("" when unknown) */
    char text[256];
} crawl_op;

/* A zeroed op of the given kind and time (NULL when out of memory). */
crawl_op *crawl_op_new(int kind, int64_t at);
void crawl_op_free(crawl_op *op);

/* Opens (creating) path and migrates it. Returns 0 or TM2_EIO / TM2_ENOMEM /
 * TM2_EINVAL with a sentence in err. */
int crawl_store_open(const char *path, tm2_log_fn log, void *log_user, tm2_log_level log_level,
                     crawl_store **out, char *err, size_t err_len);

/* The schema version after migration. */
int crawl_store_schema_version(const crawl_store *st);

/* One address row, as loaded at start. */
typedef struct crawl_addr_row {
    char addr[TM2_NETADDR_STRLEN + 1];
    char status[16];
    char source[16];
    bool allowed;
    int64_t first_seen, last_attempt, last_success, last_failure;   /* 0: never */
    uint32_t failures;
    int64_t latency_ms;   /* -1: none */
} crawl_addr_row;

/* Calls fn for every stored address (before crawl_store_start). A non-zero
 * return from fn stops and is returned. */
int crawl_store_load_addrs(crawl_store *st, int (*fn)(const crawl_addr_row *row, void *user),
                           void *user);

/* Starts a run (mode "crawl" or "seed") and the writer thread. 0 or TM2_EIO. */
int crawl_store_start(crawl_store *st, const char *mode, const char *network);

/* Queues op for the writer (takes it; NULL is ignored). Any thread. */
void crawl_store_post(crawl_store *st, crawl_op *op);

/* Waits until everything posted before the call is written (or failed). */
void crawl_store_sync(crawl_store *st);

typedef struct crawl_store_stats {
    uint64_t written;    /* ops applied */
    uint64_t errors;     /* ops or commits that failed */
    uint64_t dropped;    /* ops over CRAWL_STORE_MAX_QUEUE */
} crawl_store_stats;

void crawl_store_get_stats(crawl_store *st, crawl_store_stats *out);

/* Ends the run (finished_at), stops the writer after the queue is written
 * and closes the database. NULL is fine. */
void crawl_store_close(crawl_store *st);

/* Opens path read-only for reports (no migration: a database of another
 * schema version is refused). NULL with a sentence in err on failure. */
struct sqlite3;
struct sqlite3 *crawl_store_open_ro(const char *path, char *err, size_t err_len);

#endif
