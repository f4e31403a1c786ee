/* A message for many peers: its bytes are copied once and every send queue
 * it waits in (tm2_peer_send_msg) shares them, so relaying to a hundred
 * peers costs one allocation, not a hundred. Freed with its last reference;
 * a queued message holds its own.
 *
 * Thread rules: every function may be called from any thread. The bytes
 * never change after tm2_msg_new. */
#ifndef TM2P2P_MSG_H
#define TM2P2P_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "tm2p2p/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm2_msg tm2_msg;

/* A copy of data[0..len) with one reference (the caller's). NULL when out of
 * memory or when len is non-zero and data NULL. */
TM2_API tm2_msg *tm2_msg_new(const void *data, size_t len);
TM2_API tm2_msg *tm2_msg_ref(tm2_msg *m);
/* NULL is a no-op. */
TM2_API void tm2_msg_unref(tm2_msg *m);
TM2_API const uint8_t *tm2_msg_data(const tm2_msg *m);
TM2_API size_t tm2_msg_len(const tm2_msg *m);

#ifdef __cplusplus
}
#endif
#endif
