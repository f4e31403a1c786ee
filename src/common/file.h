/* Internal: the few file-system operations the library needs (node key,
 * address book), done once and carefully: bounded reads that never block on
 * a FIFO, atomic replacement that survives a crash, and failure texts.
 * These block: never call them on a network thread with a slow disk in the
 * path of peers (the address book writes from a timer tick, see discovery). */
#ifndef TM2_COMMON_FILE_H
#define TM2_COMMON_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "tm2p2p/error.h"

/* Writes fmt into why (if why and why_len) and returns code: the one way
 * functions with a `why` buffer report a failure. */
int tm2__fail(int code, char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Creates the missing parent directories of path: the one that will hold
 * the file with last_mode, the others 0755. 0 or TM2_EIO (why says which). */
int tm2__mkdir_parents(const char *path, mode_t last_mode, char *why, size_t why_len);

/* mkdir -p: dir and its missing parents, each with mode (existing ones are
 * left as they are). 0, or -1 with errno set. */
int tm2__mkdirs(const char *dir, mode_t mode);

/* Reads the regular file at path, at most max bytes, into a malloc'd buffer
 * with a NUL after the data (not counted in *len). The buffer passes through
 * no other memory, and is wiped on every failure path, so callers may read
 * secrets with it (and wipe it themselves after use).
 * Returns 0, TM2_ENOTFOUND, TM2_ETOOBIG (over max), TM2_ENOMEM, or TM2_EIO
 * with *os_err set (EINVAL for something that is not a regular file). */
int tm2__file_read(const char *path, size_t max, char **buf, size_t *len, int *os_err);

/* Replaces path with data atomically: a temporary file next to it with the
 * given mode, written, fsynced, renamed over path, then the directory
 * fsynced. Without overwrite an existing path is kept and TM2_EEXIST
 * returned (no window in which two writers both succeed). Never leaves a
 * partial file at path, nor the temporary file behind.
 * Returns 0, TM2_EEXIST, or TM2_EIO with *what naming the failed step and
 * *os_err its errno. */
int tm2__file_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                           bool overwrite, const char **what, int *os_err);

#endif
