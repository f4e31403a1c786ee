/* The program's open-file limit. A switch holds a descriptor for every peer,
 * handshake in flight and dial, and the usual soft limit (1024) is below the
 * peer counts a node may be configured for; running short shows only as
 * failed accepts and dials, so it is checked once, at start. Like the Go
 * runtime under the reference's node, the program raises its soft limit to
 * the hard one; what stays short is a warning that names both figures. */
#ifndef TM2_CLI_FDLIMIT_H
#define TM2_CLI_FDLIMIT_H

#include <stdint.h>

#include "cli/log.h"

/* Beside the connections: listeners, each loop's own descriptors, files,
 * HTTP clients, the signal and event descriptors. */
#define CLI_FD_RESERVE 64u

/* Raises the soft RLIMIT_NOFILE to the hard limit and warns on lg when the
 * limit in force is below conns + CLI_FD_RESERVE. Returns that limit
 * (UINT64_MAX: unlimited), or 0 when it cannot be read (nothing logged). */
uint64_t cli_fd_limit_ensure(const cli_log *lg, uint64_t conns);

#endif
