/* tm2p2p: the Tendermint2 peer-to-peer layer. Umbrella header. */
#ifndef TM2P2P_H
#define TM2P2P_H

#include "tm2p2p/error.h"
#include "tm2p2p/bech32.h"
#include "tm2p2p/key.h"
#include "tm2p2p/netaddr.h"
#include "tm2p2p/node_info.h"
#include "tm2p2p/channel.h"
#include "tm2p2p/msg.h"
#include "tm2p2p/defaults.h"
#include "tm2p2p/log.h"
#include "tm2p2p/events.h"
#include "tm2p2p/stats.h"
#include "tm2p2p/ban.h"
#include "tm2p2p/switch.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/version.h"

#endif
