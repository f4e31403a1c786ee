/* Internal: discovery on an engine given from the start (the simulator),
 * so that the book's placement key and seed, like every later pick, come
 * from the engine's randomness and its times from the engine's clocks.
 * tm2_discovery_new is this without an engine: the book's key then comes
 * from the process's randomness, and the engine is the switch's from
 * start on. */
#ifndef TM2_DISCOVERY_DISCOVERY_ENGINE_H
#define TM2_DISCOVERY_DISCOVERY_ENGINE_H

#include "net/engine.h"
#include "tm2p2p/discovery.h"

/* Like tm2_discovery_new; e (NULL: the switch's at start) must outlive it
 * and be the engine of the switch it is registered with. */
int tm2__discovery_new_on(const tm2_discovery_config *cfg, tm2__engine *e, tm2_discovery **out);

#endif
