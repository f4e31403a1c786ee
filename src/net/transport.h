/* Internal: the transport (the reference's MultiplexTransport): listens,
 * accepts and dials TCP connections and upgrades each into a verified peer
 * connection (WIRE.md 7): secret connection, NodeInfo exchange, checks.
 * Every connection lives in a tm2__mcs (net/mconn_stream.h) from its first
 * byte: the upgrade runs on that connection's stream, and what is handed
 * over is the connection ready for tm2__mcs_start.
 *
 * The seam is a small vtable (tm2__transport_ops) so that tests and a
 * simulator can plug their own transport under the switch; the switch only
 * calls the tm2__transport_* wrappers below. tm2__tcp_transport_new() builds
 * the real one on the engine of a tm2__mcs_loop (net/engine.h: libuv or the
 * simulator).
 *
 * Threads: everything here, callbacks included, runs on the thread of the
 * engine the transport was created on. No call is thread-safe; other threads
 * hop onto the engine first (tm2__waker).
 *
 * Re-entrancy: callbacks may call any function here on any transport,
 * including tm2__transport_close() on their own; nothing is freed inside one
 * of its own callbacks. No callback ever runs inside a call made by the
 * owner: a call either returns an error (and nothing follows) or returns 0
 * and its outcome comes later through a callback.
 *
 * Upgrade of every connection, inbound and outbound, in this order:
 *   1. (dial) TCP connect under dial_timeout_ms.
 *   2. (accept) duplicate check on the remote "ip:port" (dial: on the dialled
 *      "ip:port", at tm2__transport_dial time) among handshakes in flight
 *      and connections handed over and not yet removed.
 *   3. Secret connection handshake under handshake_timeout_ms.
 *   4. NodeInfo exchange under a fresh deadline of the same length: ours is
 *      written as one sized message, theirs read (at most
 *      TM2_NODE_INFO_MAX_SIZE bytes with the prefix, in as many pieces as it
 *      comes) and decoded.
 *   5. Checks: tm2_node_info_validate; authenticated ID == NodeInfo ID;
 *      tm2_node_info_compatible with ours; (dial) authenticated ID == dialled
 *      ID; not ourselves; then the owner's accept_filter.
 * Any failure closes the socket and is reported once through on_reject;
 * success hands a tm2__transport_conn to on_conn. */
#ifndef TM2_NET_TRANSPORT_H
#define TM2_NET_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/mconn_stream.h"
#include "net/sc_stream.h"
#include "tm2p2p/error.h"
#include "tm2p2p/key.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/node_info.h"
#include "tm2p2p/switch.h"

typedef struct tm2__transport tm2__transport;

/* ---- the upgraded connection ------------------------------------------------ */

/* A verified connection, handed to the owner by on_conn.
 *
 * Ownership: from on_conn on, the owner owns the whole object and
 * everything in it; the transport keeps no pointer to it (only its
 * "ip:port" in the duplicate set, until tm2__transport_remove).
 *
 * State at on_conn: mcs is initialised, not started (TM2__MCS_INIT); its
 * stream is open (authenticated) and paused, with no callbacks left but the
 * glue's own on_close, and data == NULL. mcs.cbs holds the transport
 * config's conn_cbs and mcs.data is NULL. The owner sets mcs.data (and may
 * replace mcs.cbs), then either starts it, normally before on_conn returns:
 *     tm2__mcs_start(&c->mcs, cfg, descs, n, c->leftover, c->leftover_len)
 * (which copies the leftover and resumes reading), or closes it
 * (tm2__mcs_close). Either way the end is mcs.cbs.on_close(&c->mcs), from
 * which (or later) the owner calls
 * tm2__transport_conn_free(tm2__transport_conn_of(m)).
 * The owner may take node_info or leftover for itself by setting the field
 * to NULL (leftover_len to 0); it then frees them itself
 * (tm2_node_info_free, free). The connection stays on the tm2__mcs_loop the
 * transport was built on, which must outlive it. */
typedef struct tm2__transport_conn {
    tm2__mcs mcs;                 /* the connection; mcs.s is the secret connection */
    tm2_node_info *node_info;     /* the peer's NodeInfo, validated and checked */
    uint8_t *leftover;            /* plaintext that followed the NodeInfo (the
                                   * first mconn bytes); NULL when none */
    size_t leftover_len;
    bool outbound;
    /* The reference's socket address (WIRE.md 7.1, 7.2): outbound, the
     * address dialled; inbound, "<authenticated ID>@<remote ip>:<remote port>".
     * Its ip:port is the duplicate-set key to pass to tm2__transport_remove. */
    tm2_netaddr socket_addr;
    tm2_id id;                    /* authenticated ID (== node_info's, == socket_addr's) */
    void *dial_user;              /* outbound: what tm2__transport_dial got; else NULL */
    uint32_t owner_flags;         /* the owner's own notes, from accept_filter to on_conn */
} tm2__transport_conn;

/* The conn holding m (an mcs handed over by this transport). */
tm2__transport_conn *tm2__transport_conn_of(tm2__mcs *m);

/* Destroys c->mcs (tm2__mcs_destroy) and frees c, its NodeInfo and
 * leftover bytes. Only after mcs.cbs.on_close ran, once no other thread can
 * still be inside a call on the mcs. NULL is a no-op. */
void tm2__transport_conn_free(tm2__transport_conn *c);

/* ---- callbacks -------------------------------------------------------------- */

/* Where an upgrade failed. */
enum tm2__transport_stage {
    TM2__TSTAGE_CONNECT = 1,     /* TCP connect: refused, timed out, I/O error */
    TM2__TSTAGE_ACCEPT,          /* accepted socket unusable, or duplicate ip:port */
    TM2__TSTAGE_SECRET,          /* secret connection handshake */
    TM2__TSTAGE_NODEINFO,        /* NodeInfo exchange: deadline, size, decode, stream error */
    TM2__TSTAGE_CHECK,           /* validation, ID checks, compatibility, self, accept_filter */
};

typedef struct tm2__transport_reject {
    /* Outbound: the address dialled. Inbound: the remote "ip:port", with the
     * authenticated ID once the secret connection is up (else no ID). */
    tm2_netaddr addr;
    const tm2_id *auth_id;        /* authenticated ID; NULL until the secret connection is up */
    bool outbound;
    int stage;                    /* enum tm2__transport_stage */
    int err;                      /* TM2_E* */
    const char *why;              /* human-readable reason, never NULL */
    void *dial_user;              /* outbound: what tm2__transport_dial got */
    /* The peer's NodeInfo when it was received and decoded before the
     * failure (stage TM2__TSTAGE_CHECK), else NULL. Not validated when the
     * check that failed is validation itself. Read-only, valid during the
     * call. The crawler records what a peer that fails the checks claims
     * (its network, or an ID that is not its key's). */
    const tm2_node_info *node_info;
} tm2__transport_reject;

/* Pointers passed to callbacks are valid during the call only. */
typedef struct tm2__transport_cbs {
    /* Required. A verified connection; the owner now owns c (see above). */
    void (*on_conn)(tm2__transport *t, tm2__transport_conn *c);
    /* A connection failed or was rejected; its socket is already closed.
     * Not called for handshakes aborted by tm2__transport_close, nor for
     * sockets over max_pending_inbound (counted and logged instead). */
    void (*on_reject)(tm2__transport *t, const tm2__transport_reject *r);
    /* Asked last, just before on_conn, with every check passed (the switch
     * rejects duplicate IDs and peers over its limits here). Returns 0 to
     * accept or a TM2_E code to reject (TM2_EDUPLICATE, TM2_ELIMIT,
     * TM2_EREJECTED...), optionally with a reason written to why (NUL-
     * terminated, at most why_len bytes). c is the transport's during the
     * call; it must not be kept or closed, and only owner_flags may be
     * written (on_conn, if it comes, follows in the same call). */
    int (*accept_filter)(tm2__transport *t, tm2__transport_conn *c, char *why, size_t why_len);
    /* Optional. Asked for every accepted socket (within
     * max_pending_inbound) before any handshake work: remote is its
     * ip:port (no ID), pending_from_ip the inbound handshakes in flight from
     * the same IP (this one not included). Returns 0 to go on with the
     * upgrade, or a refusal (any other value, the owner's): the socket is
     * then closed at once, without on_reject (the owner counts and logs its
     * refusals), and is not counted as accepted. */
    int (*admit)(tm2__transport *t, const tm2_netaddr *remote, size_t pending_from_ip);
} tm2__transport_cbs;

/* Any thread may read them (tm2__transport_get_stats), while the transport
 * is open: each field is read atomically, the set is not a snapshot. */
typedef struct tm2__transport_stats {
    size_t pending_inbound;       /* accepted, upgrade in flight */
    size_t pending_outbound;      /* dialled, connect or upgrade in flight */
    size_t active;                /* handed over, ip:port not yet removed */
    uint64_t accepted;            /* inbound sockets taken into an upgrade (admitted) */
    uint64_t refused;             /* inbound sockets the owner's admit refused */
    uint64_t dropped;             /* inbound sockets closed at once: over max_pending_inbound */
    uint64_t upgraded;            /* handed over, both directions */
    uint64_t rejected;            /* reported through on_reject */
} tm2__transport_stats;

/* ---- the vtable ------------------------------------------------------------- */

typedef struct tm2__transport_ops {
    int (*listen)(tm2__transport *t, const char *addr);
    int (*listen_addr)(const tm2__transport *t, tm2_netaddr *out);
    int (*set_node_info)(tm2__transport *t, const tm2_node_info *ni);
    int (*dial)(tm2__transport *t, const tm2_netaddr *addr, void *dial_user);
    void (*remove)(tm2__transport *t, const tm2_netaddr *socket_addr);
    void (*stats)(const tm2__transport *t, tm2__transport_stats *st);
    void (*close)(tm2__transport *t, void (*on_closed)(tm2__transport *t));
} tm2__transport_ops;

/* The base every implementation embeds first. */
struct tm2__transport {
    const tm2__transport_ops *ops;
    tm2__transport_cbs cbs;
    void *data;                   /* for the owner */
};

/* ---- the calls (dispatch through t->ops) ------------------------------------ */

/* Starts listening on "tcp://host:port" or "host:port" (an IP literal; host
 * names are not resolved here, as DNS would block the loop). Port 0 picks a
 * free port; tm2__transport_listen_addr reports the bound one.
 * Returns 0, TM2_ESTATE (already listening, or closing), the
 * tm2_netaddr_parse() error (TM2_EHOST, TM2_EPORT, TM2_ERESOLVE...), or
 * TM2_EIO (bind/listen failed, e.g. address in use). */
static inline int tm2__transport_listen(tm2__transport *t, const char *addr)
{
    return t->ops->listen(t, addr);
}

/* Our ID @ the bound ip:port. 0 or TM2_ESTATE (not listening). */
static inline int tm2__transport_listen_addr(const tm2__transport *t, tm2_netaddr *out)
{
    return t->ops->listen_addr(t, out);
}

/* Replaces the NodeInfo we send and check against (e.g. once the listener
 * has its port). Handshakes that already sent theirs keep what they sent but
 * are checked against the new one. ni is copied. 0, TM2_EINVAL (its address
 * carries another ID than our key's), TM2_ENODEINFO (fails validation, with
 * the reason logged), TM2_ETOOBIG, TM2_ENOMEM. */
static inline int tm2__transport_set_node_info(tm2__transport *t, const tm2_node_info *ni)
{
    return t->ops->set_node_info(t, ni);
}

/* Starts dialling addr (which must carry an ID: the one the peer must
 * authenticate as); dial_user comes back in the conn or the rejection.
 * Returns 0 (the outcome follows through on_conn or on_reject), or without
 * any callback: TM2_EINVAL (no or invalid ID), TM2_EDUPLICATE (its ip:port is
 * in flight or active), TM2_ECLOSED (closing), TM2_ENOMEM, TM2_EIO. Dials are
 * not capped here (the switch bounds them); none waits for another. */
static inline int tm2__transport_dial(tm2__transport *t, const tm2_netaddr *addr, void *dial_user)
{
    return t->ops->dial(t, addr, dial_user);
}

/* The reference's Remove: forgets the ip:port of a connection handed over
 * (socket_addr of the conn; its ID is ignored), so that address may connect
 * or be dialled again. Call it when the connection is gone; unknown
 * addresses are ignored. */
static inline void tm2__transport_remove(tm2__transport *t, const tm2_netaddr *socket_addr)
{
    t->ops->remove(t, socket_addr);
}

static inline void tm2__transport_get_stats(const tm2__transport *t, tm2__transport_stats *st)
{
    t->ops->stats(t, st);
}

/* Stops listening and aborts every handshake and dial in flight (no
 * on_reject for them; no callback at all but on_closed from here on).
 * Connections already handed over are the owner's and stay open. on_closed
 * (may be NULL) runs on a later loop turn once every handle is closed; t is
 * freed when it returns, so t->data is the last thing to read there.
 * Idempotent: a second call changes nothing (the first on_closed stays). */
static inline void tm2__transport_close(tm2__transport *t, void (*on_closed)(tm2__transport *t))
{
    t->ops->close(t, on_closed);
}

/* ---- the TCP transport ------------------------------------------------------ */

typedef struct tm2__tcp_transport_config {
    tm2_node_key key;                 /* copied; wiped when the transport is freed */
    const tm2_node_info *node_info;   /* ours; copied (see set_node_info) */
    uint32_t handshake_timeout_ms;    /* secret connection, then NodeInfo, each; 0: 3000 */
    uint32_t dial_timeout_ms;         /* TCP connect; 0: 3000 */
    uint32_t max_pending_inbound;     /* inbound upgrades in flight; 0: 64 */
    /* Applied to every stream (its handshake_timeout_ms is replaced by the
     * one above); max_queued and read_budget stay in force after handover. */
    tm2__sc_stream_config stream;
    /* Installed as mcs.cbs of every connection handed over (the owner's
     * receive, send-room, error and close callbacks). */
    tm2__mcs_cbs conn_cbs;
    /* Dials leave from this IP (its port is ignored; the system picks
     * one) rather than the one the system chooses. Tests use it to put
     * nodes on distinct loopback addresses. */
    bool has_dial_source;
    tm2_netaddr dial_source;
    tm2_log_fn log;                   /* NULL: no logging */
    void *log_user;
    tm2_log_level log_level;
} tm2__tcp_transport_config;

/* Builds a TCP transport on ml's engine (ml must outlive it and every
 * connection it hands over). cbs->on_conn is required. data goes to
 * (*out)->data. Returns 0, TM2_EINVAL, TM2_EKEY, TM2_ENOMEM, or a
 * set_node_info error. The transport is released only through
 * tm2__transport_close, and the engine must run for that. */
int tm2__tcp_transport_new(tm2__mcs_loop *ml, const tm2__tcp_transport_config *cfg,
                           const tm2__transport_cbs *cbs, void *data, tm2__transport **out);

#endif
