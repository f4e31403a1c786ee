/* A reactor: a module that talks to peers over its own channels (the
 * reference's Reactor). Discovery is one; a node adds its own.
 *
 * A tm2_reactor is a table of callbacks plus user data; unset callbacks are
 * skipped. The switch copies the table (and the channel descriptors) at
 * tm2_switch_new. Every callback runs on the switch's network thread and must
 * not block; it may call any tm2_switch_ / tm2_peer_ function except
 * tm2_switch_stop/free and a waiting tm2_peer_send.
 *
 * Order per peer: init_peer, then add_peer (only once the peer's connection
 * runs), receive (any number), remove_peer (only after add_peer). A peer that
 * failed to start never reaches add_peer or remove_peer. */
#ifndef TM2P2P_REACTOR_H
#define TM2P2P_REACTOR_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/channel.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/peer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm2_switch tm2_switch;

typedef struct tm2_reactor {
    const char *name;                    /* for logs */
    const tm2_channel_desc *channels;    /* the channels this reactor owns */
    size_t n_channels;
    void *user;

    /* The switch is starting; non-zero aborts tm2_switch_start. */
    int (*start)(tm2_switch *sw, void *user);
    /* The switch is stopping; no further callbacks follow. */
    void (*stop)(tm2_switch *sw, void *user);
    /* A verified peer is about to start; set up per-peer state here. */
    void (*init_peer)(tm2_peer *p, void *user);
    /* The peer's connection runs; it may be sent to. */
    void (*add_peer)(tm2_peer *p, void *user);
    /* The peer is gone; reason is 0 on a clean stop, else a TM2_E* code. */
    void (*remove_peer)(tm2_peer *p, int reason, void *user);
    /* A whole message arrived on one of this reactor's channels. msg is valid
     * only during the call. */
    void (*receive)(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user);
    /* A dial failed (the TM2_EVENT_DIAL_FAILED event, published at the same
     * moment): addr is the address dialled (with its ID), err the TM2_E*
     * reason. Valid during the call; on the network thread, between start
     * and stop. Discovery marks the address's attempt here. */
    void (*on_dial_failed)(tm2_switch *sw, const tm2_netaddr *addr, int err, void *user);
} tm2_reactor;

#ifdef __cplusplus
}
#endif
#endif
