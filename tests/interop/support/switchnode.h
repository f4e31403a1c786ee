/* Interop test support: whole nodes on both sides. A tnode is a tm2p2p switch
 * in this process (discovery reactor plus a 0x70 test reactor); an rnode is a
 * `tm2ref node` child process (the reference's switch, discovery and a 0x70
 * echo reactor), whose stdout lines are kept so waits can look back.
 *
 * Every wait has a deadline and fails nothing itself: it returns NULL/false
 * and the test asserts. Functions that set things up fail the running cmocka
 * test on error. tnode_stop / rnode_stop release everything and are no-ops on
 * a node never started (zeroed / rnode_init'ed), so teardowns call them
 * unconditionally. One test thread drives them. */
#ifndef TM2_INTEROP_SWITCHNODE_H
#define TM2_INTEROP_SWITCHNODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "refproc.h"
#include "tm2p2p/discovery.h"
#include "tm2p2p/switch.h"

#define SN_TEST_CH      0x70
#define SN_CHAIN        "tm2-interop"
#define SN_PEX_MS       500               /* discovery interval on both sides */
#define SN_MAX_MSGS     64
#define SN_MAX_EVS      512
#define SN_MAX_HIST     1024

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

/* The key and ID made from a seed of 32 bytes seed_byte. */
void sn_key(uint8_t seed_byte, tm2_node_key *key, tm2_id *id);

typedef struct rnode {
    refproc p;
    tm2_id id;
    tm2_netaddr addr;
    char addr_s[TM2_NETADDR_STRLEN];
    char *hist[SN_MAX_HIST];            /* every stdout line read so far */
    size_t n_hist;
    char *last_peers;                   /* the last PEERS line rnode_peers read */
} rnode;

void rnode_init(rnode *r);

/* Starts `tm2ref node` with the key of seed_byte, a SN_PEX_MS discovery
 * interval, the chain SN_CHAIN unless args set --chain-id, and the extra
 * args (NULL-terminated array, may be NULL), through `prefix` (NULL or a
 * NULL-terminated command such as {"ip", "netns", "exec", "ns1", NULL});
 * reads its LISTEN line and checks its ID. */
void rnode_start(rnode *r, uint8_t seed_byte, const char *const *args);
void rnode_start_in(rnode *r, const char *const *prefix, uint8_t seed_byte,
                    const char *const *args);

/* SIGKILL and reap; frees the history. */
void rnode_stop(rnode *r);

/* Waits for a line whose words start with w0 [w1 [w2]] (NULL: any) and, if
 * contains is set, which holds that text; lines already read are searched
 * first, from index *from when from is not NULL (then moved past the
 * match). Returns the line or NULL at the deadline. */
const char *rnode_wait(rnode *r, const char *w0, const char *w1, const char *w2,
                       const char *contains, int timeout_ms);
const char *rnode_wait_from(rnode *r, size_t *from, const char *w0, const char *w1,
                            const char *w2, const char *contains, int timeout_ms);

/* Reads one more line into the history; false at the deadline or the end
 * of output. */
bool rnode_next_line(rnode *r, int timeout_ms);

/* RECV 0x70 <len> <from>: the reference got a 0x70 message of len bytes. */
bool rnode_wait_recv(rnode *r, size_t len, const tm2_id *from, int timeout_ms);

/* The reference's peer set now (SIGUSR1 -> PEERS): count, and whether id is
 * in it and its direction. Returns -1 if no answer came by the deadline. */
int rnode_peers(rnode *r, const tm2_id *id, bool *has, bool *outbound, int timeout_ms);

/* ID and direction of the i-th entry of the last rnode_peers answer. */
bool rnode_peer_at(const rnode *r, size_t i, tm2_id *id, bool *outbound);

/* "<id>@<ip>:<port>" of a tnode's listen address. */
void tnode_addr_string(const tnode *n, char *out, size_t cap);

#endif
