/* Interop test support: an rnode is a `tm2ref node` child process (the
 * reference's switch, discovery and a 0x70 echo reactor), whose stdout lines
 * are kept so waits can look back.
 *
 * Every wait has a deadline and fails nothing itself: it returns NULL/false
 * and the test asserts. rnode_start fails the running cmocka test on error.
 * rnode_stop releases everything and is a no-op on a node only
 * rnode_init'ed, so teardowns call it unconditionally. One test thread
 * drives them. */
#ifndef TM2_INTEROP_REFNODE_H
#define TM2_INTEROP_REFNODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refproc.h"
#include "tm2p2p/key.h"
#include "tm2p2p/netaddr.h"

#define SN_TEST_CH      0x70
#define SN_CHAIN        "tm2-interop"
#define SN_PEX_MS       500               /* discovery interval on both sides */
#define SN_MAX_HIST     4096

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

#endif
