/* Internal: a switch on an engine it is given (net/engine.h), for the
 * simulator: no thread of its own, everything on the engine's thread.
 *
 * tm2__switch_new_on makes it; tm2_switch_start runs the set-up inline (the
 * reactors' start, the listener) and returns 0 once started or the error; on
 * an error the stop is already under way: end it with tm2__switch_stop_async
 * before tm2_switch_free. Public calls that post a command to the network
 * thread (tm2_switch_dial_peers, tm2_switch_every, bans, a stop of a peer
 * from outside a callback) run on a later turn, in the order they were made.
 * tm2_switch_stop is refused on a started engine's switch (it would wait for
 * a thread that is the caller's): stop with tm2__switch_stop_async.
 *
 * Threads: every call here and every public call on such a switch is made
 * on the engine's thread. */
#ifndef TM2_SWITCH_SWITCH_ENGINE_H
#define TM2_SWITCH_SWITCH_ENGINE_H

#include "net/engine.h"
#include "tm2p2p/events.h"
#include "tm2p2p/switch.h"

/* Like tm2_switch_new, on e (which must outlive the switch). Clocks,
 * randomness (hash keys, handshake keys, discovery) and sockets are e's.
 * 0, TM2_EINVAL, TM2_ENOMEM, or a tm2_switch_new error. */
int tm2__switch_new_on(const tm2_switch_config *cfg, tm2__engine *e, tm2_switch **out);

/* The engine sw runs on (its own libuv engine when made without one). Its
 * clocks may be read from any thread on libuv. */
tm2__engine *tm2__switch_engine(tm2_switch *sw);

/* Begins the stop (as tm2_switch_stop: transport, peers, reactors); done
 * runs on a later turn once every handle of the switch is closed, and may
 * call tm2_switch_free. On a switch never started, or already stopped, done
 * still comes on a later turn. A second call replaces done. */
void tm2__switch_stop_async(tm2_switch *sw, void (*done)(tm2_switch *sw, void *user), void *user);

/* fn sees every event the switch publishes, inside the publish path (on the
 * network thread; PEER_BANNED from tm2_switch_ban on the caller's), besides
 * the subscriptions' queues: a simulator observes many switches without
 * polling them. fn must not call back into the switch. NULL removes it. */
void tm2__switch_set_event_hook(tm2_switch *sw, void (*fn)(void *user, const tm2_event *ev),
                                void *user);

/* Whether the peer connected under id counts as outbound (it was dialled,
 * or holds a dial's slot); false when none is. On the switch's thread, and
 * from the event hook. */
bool tm2__switch_counts_out(tm2_switch *sw, const tm2_id *id);

#endif
