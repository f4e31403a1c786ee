/* Internal: the transport's duplicate set, one entry per remote ip:port
 * (an upgrade in flight or a connection handed over).
 *
 * An open-addressing table (linear probing, backward-shift deletion, load
 * at most 1/2) hashed with SipHash under a per-set random key, so addresses
 * and ports chosen by remote nodes cannot be made to collide: expected O(1)
 * per operation however many connections the transport holds.
 *
 * Thread rules: the owner's loop thread only; nothing here locks. */
#ifndef TM2_NET_ADDR_SET_H
#define TM2_NET_ADDR_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tm2__addr_key {
    uint8_t ip[16];
    uint16_t port;
    bool used;                  /* the slot holds an entry */
    bool active;                /* the owner's flag (handed over, else in flight) */
} tm2__addr_key;

typedef struct tm2__addr_set {
    tm2__addr_key *slots;       /* NULL until the first add */
    size_t mask;                /* slot count - 1 (a power of two) */
    size_t n;
    uint8_t key[16];
} tm2__addr_set;

/* An empty set (allocates nothing).
 * key: the 16-byte key of the keyed hash (from the engine's randomness, so
 * that peers cannot choose colliding IDs; NULL: all zero, for tests). 
 * Returns 0. */
int tm2__addr_set_init(tm2__addr_set *s, const uint8_t key[16]);
void tm2__addr_set_free(tm2__addr_set *s);

/* The entry for ip:port, or NULL. Valid until the next add or delete. */
tm2__addr_key *tm2__addr_set_find(const tm2__addr_set *s, const uint8_t ip[16], uint16_t port);

/* Adds ip:port (inactive); it must not be present. 0 or TM2_ENOMEM (the
 * set is unchanged). */
int tm2__addr_set_add(tm2__addr_set *s, const uint8_t ip[16], uint16_t port);

/* Deletes the entry k (from find). */
void tm2__addr_set_del(tm2__addr_set *s, tm2__addr_key *k);

#endif
