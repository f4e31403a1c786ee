/* Interop test support: a tnode is a tm2p2p switch in this process
 * (discovery reactor plus a 0x70 test reactor), the counterpart of refnode.h's
 * rnode.
 *
 * Every wait has a deadline and fails nothing itself: it returns NULL/false
 * and the test asserts. Functions that set things up fail the running cmocka
 * test on error. tnode_stop releases everything and is a no-op on a zeroed
 * node, so teardowns call it unconditionally. One test thread drives them. */
#ifndef TM2_INTEROP_SWITCHNODE_H
#define TM2_INTEROP_SWITCHNODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "refnode.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/switch.h"

#define SN_MAX_MSGS     64
#define SN_MAX_EVS      512

typedef struct sn_msg {
    tm2_id from;
    char text[128];
} sn_msg;

typedef struct tnode {
    tm2_switch *sw;
    tm2_discovery *disc;
    tm2_node_key key;
    tm2_id id;
    tm2_netaddr addr;                   /* bound listen address with our ID */
    tm2_subscription *sub;
    tm2_channel_desc ch;
    tm2_reactor reactors[2];

    uv_mutex_t mu;
    uv_cond_t cv;
    sn_msg msgs[SN_MAX_MSGS];
    size_t n_msgs;

    tm2_event evs[SN_MAX_EVS];          /* read so far by the test thread */
    size_t n_evs;
} tnode;

/* What differs from a default test node; zeroed is the default. */
typedef struct tnode_opts {
    const char *network;                /* NULL: SN_CHAIN */
    const char *listen;                 /* NULL: tcp://127.0.0.1:0 */
    uint32_t max_outbound;              /* 0: the default (10) */
    /* On loopback every peer shares one IP, so test nodes allow duplicate
     * IPs unless this is set (the library's default refuses them). */
    bool refuse_duplicate_ip;
    const char *const *persistent;      /* "ID@host:port" */
    size_t n_persistent;
    const char *const *seeds;
    size_t n_seeds;
} tnode_opts;

/* Starts a tm2p2p node whose key has every seed byte seed_byte. */
void tnode_start(tnode *n, uint8_t seed_byte, const tnode_opts *o);
void tnode_stop(tnode *n);

/* Waits for an event of one of the types in mask about peer id (NULL: any
 * peer); events already read are searched first, from index *from when
 * from is not NULL (and *from is then moved past the match). */
const tm2_event *tnode_wait_event(tnode *n, unsigned mask, const tm2_id *id, int timeout_ms);
const tm2_event *tnode_wait_event_from(tnode *n, size_t *from, unsigned mask, const tm2_id *id,
                                       int timeout_ms);

/* Waits until a 0x70 message from id whose text starts with prefix arrived. */
bool tnode_wait_msg(tnode *n, const tm2_id *id, const char *prefix, int timeout_ms);

/* The connected peer with this ID (referenced; caller unrefs), or NULL. */
tm2_peer *tnode_find_peer(tnode *n, const tm2_id *id);

/* Number of connected peers; *has (if not NULL) says whether id is one of
 * them and *outbound (if not NULL) its direction. */
size_t tnode_peer_count(tnode *n, const tm2_id *id, bool *has, bool *outbound);

/* "<id>@<ip>:<port>" of a tnode's listen address. */
void tnode_addr_string(const tnode *n, char *out, size_t cap);

#endif
