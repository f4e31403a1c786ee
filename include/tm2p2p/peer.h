/* A connected, verified peer (the reference's Peer).
 *
 * A tm2_peer is opaque and reference-counted. The switch holds one reference
 * while the peer is connected; reactor callbacks receive a borrowed pointer
 * valid for the call; anyone keeping it longer (another thread, a timer)
 * takes tm2_peer_ref() and later tm2_peer_unref(). A referenced peer stays
 * valid after it disconnects: its getters keep answering and sends fail with
 * TM2_ECLOSED.
 *
 * Thread rules: every function here may be called from any thread.
 * tm2_peer_send() may wait and therefore must not be called on the switch's
 * network thread (there it behaves like tm2_peer_try_send()). */
#ifndef TM2P2P_PEER_H
#define TM2P2P_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/channel.h"
#include "tm2p2p/error.h"
#include "tm2p2p/msg.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/node_info.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm2_peer tm2_peer;

TM2_API tm2_peer *tm2_peer_ref(tm2_peer *p);
TM2_API void tm2_peer_unref(tm2_peer *p);

/* The authenticated ID (the ID of the key that signed the handshake). */
TM2_API const tm2_id *tm2_peer_id(const tm2_peer *p);
/* The address we dialled (outbound) or "<id>@<remote ip>:<remote port>" (inbound). */
TM2_API void tm2_peer_socket_addr(const tm2_peer *p, tm2_netaddr *out);
/* We dialled it. */
TM2_API bool tm2_peer_is_outbound(const tm2_peer *p);
/* It holds one of the switch's outbound slots, as tm2_switch_counts counts:
 * we dialled it, or its own dial crossed ours and its connection is the one
 * both sides kept (it keeps our dial's slot, and no inbound one). */
TM2_API bool tm2_peer_in_outbound_slot(const tm2_peer *p);
TM2_API bool tm2_peer_is_persistent(const tm2_peer *p);
TM2_API bool tm2_peer_is_private(const tm2_peer *p);
/* One of the switch's unconditional_peer_ids. */
TM2_API bool tm2_peer_is_unconditional(const tm2_peer *p);
/* False once the peer is stopping or gone. */
TM2_API bool tm2_peer_is_running(const tm2_peer *p);
/* The peer's NodeInfo, owned by the peer, valid while you hold a reference. */
TM2_API const tm2_node_info *tm2_peer_node_info(const tm2_peer *p);
/* A snapshot of the connection's channels and rates. */
TM2_API int tm2_peer_status(tm2_peer *p, tm2_mconn_status *st);

/* Queues a copy of data[0..len) on channel ch, waiting up to timeout_ms
 * (the reference waits 10 s): first for len bytes of the connection's send
 * budget (max_send_buffer_bytes, shared by all channels; a message holds
 * its bytes from admission until its last packet is written), then, holding
 * them, for room in the channel's queue, as the reference does. Budget comes
 * free as the peer reads; a send that fails gives back what it held.
 * Returns 0, TM2_ECHANNEL (the peer did not advertise ch, or we do not
 * have it), TM2_EFULL (no budget or no queue room at the deadline),
 * TM2_ETOOBIG (len is over the whole budget: refused at once, without
 * waiting), TM2_ECLOSED (also at once when the peer closes while waiting). */
TM2_API int tm2_peer_send(tm2_peer *p, uint8_t ch, const void *data, size_t len,
                          uint32_t timeout_ms);

/* Like tm2_peer_send but never waits: TM2_EFULL at once when the queue is
 * full or less than len bytes of send budget are left, TM2_ETOOBIG when len
 * is over the whole budget. */
TM2_API int tm2_peer_try_send(tm2_peer *p, uint8_t ch, const void *data, size_t len);

/* tm2_peer_send and tm2_peer_try_send for a shared message: m is queued
 * as it is, not copied (the queue takes its own reference; the caller keeps
 * its own). TM2_EINVAL when m is NULL. */
TM2_API int tm2_peer_send_msg(tm2_peer *p, uint8_t ch, tm2_msg *m, uint32_t timeout_ms);
TM2_API int tm2_peer_try_send_msg(tm2_peer *p, uint8_t ch, tm2_msg *m);

/* The reference's per-peer key-value store, kept for parity. Discouraged:
 * a reactor should key its own state by peer ID. set replaces (and frees
 * with the previous free_fn) any value under key; values are freed with
 * free_fn when the peer is destroyed. get returns NULL if absent. */
TM2_API int tm2_peer_set(tm2_peer *p, const char *key, void *value, void (*free_fn)(void *));
TM2_API void *tm2_peer_get(tm2_peer *p, const char *key);

#ifdef __cplusplus
}
#endif
#endif
