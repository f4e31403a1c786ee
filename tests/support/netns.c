#include "netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char prefix_s[16];
static char bridge_ns[32];
static char host_ns[NETNS_MAX_HOSTS][32];
/* What the cleanup deletes: read by the signal handler. */
static volatile sig_atomic_t hosts_made, bridge_made;
static int n_bridges;
static void (*kill_hook)(void);
static int home_fd = -1;   /* the namespace the process started in */

/* ---- commands ---------------------------------------------------------------------- */

/* The cleanup runs in a signal handler too: it passes quiet == false, so
 * nothing is allocated for file actions. */
int netns_run(const char *const *argv, bool quiet)
{
    pid_t pid;
    int r;
    if (quiet) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
        posix_spawn_file_actions_destroy(&fa);
    } else {
        r = posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
    }
    if (r != 0)
        return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int netns_cmd(bool quiet, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    const char *argv[40];
    size_t n = 0;
    char *save = NULL;
    for (char *w = strtok_r(buf, " ", &save); w && n < 39; w = strtok_r(NULL, " ", &save))
        argv[n++] = w;
    argv[n] = NULL;
    return netns_run(argv, quiet);
}

const char *netns_unavailable(bool need_ss)
{
    if (geteuid() != 0)
        return "needs root to create network namespaces";
    const char *v[] = {"ip", "-V", NULL};
    const char *ssv[] = {"ss", "-V", NULL};
    if (netns_run(v, true) != 0)
        return need_ss ? "iproute2 (`ip`, `ss`) not found" : "iproute2 (`ip`) not found";
    if (need_ss && netns_run(ssv, true) != 0)
        return "iproute2 (`ip`, `ss`) not found";
    return NULL;
}

/* ---- cleanup ----------------------------------------------------------------------- */

static void delete_all(void)
{
    for (int i = (int)hosts_made - 1; i >= 0; i--) {
        const char *argv[] = {"ip", "netns", "delete", host_ns[i], NULL};
        netns_run(argv, false);
    }
    hosts_made = 0;
    if (bridge_made) {
        const char *argv[] = {"ip", "netns", "delete", bridge_ns, NULL};
        netns_run(argv, false);
        bridge_made = 0;
    }
}

static void on_exit_cleanup(void)
{
    if (kill_hook)
        kill_hook();
    delete_all();
}

static void on_signal(int sig)
{
    on_exit_cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

void netns_end(void)
{
    (void)netns_enter(-1);
    delete_all();
}

/* Namespaces of earlier runs with this prefix whose process is gone (our
 * own pid too: we have made none yet, so they are a dead run's). */
static void sweep_stale(void)
{
    DIR *d = opendir("/run/netns");
    if (!d)
        return;
    struct dirent *e;
    size_t pl = strlen(prefix_s);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix_s, pl) != 0)
            continue;
        long pid = strtol(e->d_name + pl, NULL, 10);
        if (pid <= 0 || pid == (long)getpid() || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
            const char *argv[] = {"ip", "netns", "delete", e->d_name, NULL};
            netns_run(argv, true);
        }
    }
    closedir(d);
}

/* ---- the network ------------------------------------------------------------------- */

const char *netns_begin(const char *prefix, int nbridges, void (*kill_children)(void))
{
    snprintf(prefix_s, sizeof prefix_s, "%s", prefix);
    kill_hook = kill_children;
    sweep_stale();
    atexit(on_exit_cleanup);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    snprintf(bridge_ns, sizeof bridge_ns, "%s%d-br", prefix_s, (int)getpid());
    if (netns_cmd(true, "ip netns add %s", bridge_ns) != 0)
        return "cannot create a network namespace (ip netns add failed)";
    bridge_made = 1;
    if (netns_cmd(false, "ip -n %s link set lo up", bridge_ns))
        return "cannot create a bridge in a namespace";
    for (int b = 0; b < nbridges; b++)
        if (netns_cmd(false, "ip -n %s link add br%d type bridge", bridge_ns, b) ||
            netns_cmd(false, "ip -n %s link set br%d up", bridge_ns, b))
            return "cannot create a bridge in a namespace";
    n_bridges = nbridges;
    return NULL;
}

const char *netns_add_host(const char *cidr)
{
    int i = (int)hosts_made;
    if (!bridge_made || n_bridges < 1 || i >= NETNS_MAX_HOSTS)
        return "no bridge to join, or too many hosts";
    snprintf(host_ns[i], sizeof host_ns[i], "%s%d-%d", prefix_s, (int)getpid(), i);
    if (netns_cmd(false, "ip netns add %s", host_ns[i]) != 0)
        return "cannot create a network namespace";
    hosts_made = i + 1;
    if (netns_cmd(false, "ip -n %s link set lo up", host_ns[i]) ||
        netns_cmd(false, "ip -n %s link add eth0 type veth peer name v%d netns %s", host_ns[i], i,
                  bridge_ns) ||
        netns_cmd(false, "ip -n %s link set v%d master br0 up", bridge_ns, i) ||
        netns_cmd(false, "ip -n %s addr add %s dev eth0", host_ns[i], cidr) ||
        netns_cmd(false, "ip -n %s link set eth0 up", host_ns[i]))
        return "cannot wire a namespace to the bridge (veth)";
    return NULL;
}

const char *netns_host(int i)
{
    return i >= 0 && i < (int)hosts_made ? host_ns[i] : "";
}

const char *netns_bridge(void)
{
    return bridge_ns;
}

int netns_enter(int i)
{
    if (home_fd < 0) {
        if (i < 0)
            return 0;   /* never left */
        home_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (home_fd < 0)
            return -1;
    }
    if (i < 0)
        return setns(home_fd, CLONE_NEWNET);
    if (i >= (int)hosts_made)
        return -1;
    char path[64];
    snprintf(path, sizeof path, "/run/netns/%s", host_ns[i]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = setns(fd, CLONE_NEWNET);
    close(fd);
    return r;
}
