/* Test support: `tm2p2p node` processes (the multi-host and soak tests).
 *
 * A nodeproc is one child started with posix_spawnp: stdin /dev/null, stdout
 * a pipe the test reads lines from with a deadline (the program prints its
 * listen address "ID@ip:port" there once it runs), stderr appended to a log
 * file. Its JSON status file (--status-file) gives the peers it holds. The
 * /proc readers give a process's resident memory and open descriptors.
 *
 * Not thread-safe: one thread drives its nodeprocs. Every started nodeproc
 * must be ended (np_stop or np_kill) on every path; np_kill is also safe
 * from a signal handler or an atexit hook (kill and waitpid only). */
#ifndef TM2_TEST_NODEPROC_H
#define TM2_TEST_NODEPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "tm2p2p/key.h"

typedef struct nodeproc {
    pid_t pid;                 /* 0 when not running */
    int out;                   /* stdout pipe; -1 when closed */
    size_t len;
    char buf[1024];
} nodeproc;

void np_init(nodeproc *p);

/* Starts argv (argv[0] looked up in PATH; NULL-terminated) with its stderr
 * appended to log_path (NULL: the test's stderr) and extra_env (NULL or
 * "NAME=value", e.g. sanitizer options) added to the environment. 0 or an
 * errno value. */
int np_start(nodeproc *p, const char *const *argv, const char *log_path, const char *extra_env);

/* Next stdout line without its newline. 0, or -1 at end of output or when
 * timeout_ms passes first. */
int np_line(nodeproc *p, char *line, size_t cap, int timeout_ms);

/* Sends sig and reaps the child (SIGKILL after timeout_ms if it has not
 * exited); closes the pipe. Returns the exit status, 128+signal when it
 * died from a signal, -1 when not running. Safe to call twice. */
int np_stop(nodeproc *p, int sig, int timeout_ms);

/* SIGKILL and reap, for cleanup paths (async-signal-safe). */
void np_kill(nodeproc *p);

/* True while the child has not exited (reaps it when it has). */
bool np_alive(nodeproc *p);

/* Peer IDs in a node's status file: up to cap into ids; returns how many
 * it holds (may exceed cap), or -1 when the file cannot be read yet. */
int np_status_peers(const char *status_path, tm2_id *ids, int cap);

/* A top-level number of a node's status file ("outbound", "mono_ms", ...);
 * -1 when the file or the field cannot be read. */
double np_status_number(const char *status_path, const char *key);

/* Resident bytes (/proc/PID/statm) and open descriptors (/proc/PID/fd) of
 * pid; 0 / -1 when it cannot be read. */
size_t np_rss(pid_t pid);
int np_fds(pid_t pid);

/* Writes a node key made from seed (32 bytes from the byte) into
 * home/secrets/node_key.json, creating directories, and returns its ID. */
tm2_id np_make_key(const char *home, unsigned seed);

/* rm -rf path (no-op when it does not exist). */
void np_rmtree(const char *path);

#endif
