/* Internal: node key file helpers shared with the tm2p2p program. */
#ifndef TM2_CRYPTO_NODE_KEY_H
#define TM2_CRYPTO_NODE_KEY_H

#include <stdbool.h>
#include <stddef.h>

#include "tm2p2p/key.h"

/* Like tm2_node_key_save(), but when overwrite is false an existing file at
 * path is left alone and TM2_EEXIST is returned (atomically: no window in
 * which two writers both succeed). Missing parent directories are created,
 * the one holding the file with mode 0700. */
int tm2__node_key_write(const char *path, const tm2_node_key *key, bool overwrite,
                        char *why, size_t why_len);

#endif
