/* Blocking-free loopback TCP on poll() for the interop tests that drive the
 * sans-I/O cores directly (no libuv): sockets, bounded sends and reads, and
 * the secret-connection handshake under a deadline. Every function fails the
 * running cmocka test on an unexpected error or a passed deadline. */
#ifndef TM2_INTEROP_POLLTCP_H
#define TM2_INTEROP_POLLTCP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conn/secret_conn.h"

/* Milliseconds left until deadline (tv_now_ms() time); fails once passed. */
int pt_remaining_ms(uint64_t deadline);

/* A non-blocking socket connected to 127.0.0.1:port. */
int pt_connect_loopback(uint16_t port);

/* A non-blocking listening socket on 127.0.0.1 with a free port (*port). */
int pt_listen_loopback(uint16_t *port);

/* The first connection accepted on lfd before deadline, non-blocking. */
int pt_accept_one(int lfd, uint64_t deadline);

/* Writes what it can without blocking; returns bytes written. */
size_t pt_send_some(int fd, const uint8_t *p, size_t len);

/* Bytes read, 0 at end of stream, -1 when nothing is there yet. */
ssize_t pt_recv_some(int fd, uint8_t *p, size_t cap);

/* Runs the handshake of sc (already tm2__sc_init'ed) over fd before
 * deadline. Bytes that arrived behind the peer's auth frame belong to the
 * stream: they are left in rx[0..*rx_len). */
void pt_sc_handshake(tm2__sc *sc, int fd, uint8_t *rx, size_t rx_cap, size_t *rx_len,
                     uint64_t deadline);

#endif
