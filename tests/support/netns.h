/* Test support: hosts in network namespaces on one machine.
 *
 * A test makes one network: a bridge namespace "<prefix><pid>-br" holding
 * bridges br0, br1, ... and hosts "<prefix><pid>-<i>", each with lo up and
 * eth0 at an address the test picks from 198.18.0.0/15, the other end of
 * its veth pair being port "v<i>" of br0 in the bridge namespace. The veth
 * pair is made inside the host's namespace with its peer moved straight
 * into the bridge's: nothing is ever added to the machine's own namespace.
 *
 * Every namespace is deleted again, also when the test fails: by
 * netns_end, by an exit handler and by a SIGINT/SIGTERM handler (which
 * then re-raises the signal); netns_begin sweeps namespaces of the same
 * prefix left by runs whose process is gone.
 *
 * One network per process; not thread-safe (the test thread drives it). */
#ifndef TM2_TEST_NETNS_H
#define TM2_TEST_NETNS_H

#include <stdbool.h>

/* CTest's skip code: where namespaces cannot be made. */
#define NETNS_SKIP 77
#define NETNS_MAX_HOSTS 32

/* Runs argv (argv[0] looked up in PATH; NULL-terminated) to completion,
 * with stdout and stderr on /dev/null if quiet. Its exit status, or -1. */
int netns_run(const char *const *argv, bool quiet);

/* netns_run of a printf-formatted line of space-separated words (none
 * holds a space). */
int netns_cmd(bool quiet, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* NULL when this process may make namespaces: root, and iproute2's `ip`
 * (and `ss` if need_ss) runs. Else the reason to skip. */
const char *netns_unavailable(bool need_ss);

/* Sweeps namespaces "<prefix><pid>..." of runs that are gone, installs
 * the exit and signal cleanup and makes the bridge namespace with
 * nbridges bridges. kill_children (NULL: none) runs first in the exit and
 * signal cleanup, before the namespaces go: it must be
 * async-signal-safe. NULL, or why the network cannot be made (the caller
 * skips; netns_end removes what was made). */
const char *netns_begin(const char *prefix, int nbridges, void (*kill_children)(void));

/* Adds the next host (index: the hosts made before it) with eth0 at cidr
 * ("198.18.1.1/24") on br0. NULL, or why it cannot be made. */
const char *netns_add_host(const char *cidr);

/* Namespace names, for `ip -n NAME` and `ip netns exec NAME`. */
const char *netns_host(int i);
const char *netns_bridge(void);

/* Deletes every namespace made (safe to call again). */
void netns_end(void);

/* Moves the calling thread into host i's namespace, or back into the one
 * the process started in (i < 0). Threads it creates there (a switch's
 * network thread) and sockets it opens there live in that namespace for
 * good. 0 or -1. */
int netns_enter(int i);

#endif
