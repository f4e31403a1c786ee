#include "nodeproc.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tv.h"

extern char **environ;

void np_init(nodeproc *p)
{
    memset(p, 0, sizeof *p);
    p->out = -1;
}

int np_start(nodeproc *p, const char *const *argv, const char *log_path, const char *extra_env)
{
    np_init(p);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    if (log_path)
        posix_spawn_file_actions_addopen(&fa, 2, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    char **envp = environ;
    char **mine = NULL;
    if (extra_env) {
        size_t n = 0;
        while (environ[n])
            n++;
        mine = calloc(n + 2, sizeof *mine);
        if (!mine) {
            posix_spawn_file_actions_destroy(&fa);
            close(fds[0]);
            close(fds[1]);
            return ENOMEM;
        }
        size_t k = 0, nl = strcspn(extra_env, "=") + 1;
        for (size_t i = 0; i < n; i++)
            if (strncmp(environ[i], extra_env, nl) != 0)
                mine[k++] = environ[i];
        mine[k++] = (char *)extra_env;
        mine[k] = NULL;
        envp = mine;
    }
    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(mine);
    close(fds[1]);
    if (r != 0) {
        close(fds[0]);
        return r;
    }
    p->pid = pid;
    p->out = fds[0];
    return 0;
}

int np_line(nodeproc *p, char *line, size_t cap, int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl) {
            size_t n = (size_t)(nl - p->buf);
            size_t k = n < cap - 1 ? n : cap - 1;
            memcpy(line, p->buf, k);
            line[k] = '\0';
            p->len -= n + 1;
            memmove(p->buf, nl + 1, p->len);
            return 0;
        }
        if (p->out < 0 || p->len == sizeof p->buf)
            return -1;
        uint64_t now = tv_now_ms();
        if (now >= deadline)
            return -1;
        struct pollfd pf = {.fd = p->out, .events = POLLIN};
        int r = poll(&pf, 1, (int)(deadline - now));
        if (r < 0 && errno != EINTR)
            return -1;
        if (r <= 0)
            continue;
        ssize_t k = read(p->out, p->buf + p->len, sizeof p->buf - p->len);
        if (k <= 0)
            return -1;
        p->len += (size_t)k;
    }
}

static int status_of(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int np_stop(nodeproc *p, int sig, int timeout_ms)
{
    int ret = -1;
    if (p->pid > 0) {
        /* A pidfd polls readable once the child has exited. */
        int pfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
        kill(p->pid, sig);
        int st;
        bool gone = false;
        if (pfd >= 0) {
            struct pollfd pf = {.fd = pfd, .events = POLLIN};
            uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
            for (;;) {
                uint64_t now = tv_now_ms();
                if (now >= deadline)
                    break;
                int r = poll(&pf, 1, (int)(deadline - now));
                if (r > 0) {
                    gone = true;
                    break;
                }
                if (r < 0 && errno != EINTR)
                    break;
            }
            close(pfd);
        }
        if (!gone)
            kill(p->pid, SIGKILL);
        if (waitpid(p->pid, &st, 0) == p->pid)
            ret = status_of(st);
        p->pid = 0;
    }
    if (p->out >= 0)
        close(p->out);
    p->out = -1;
    p->len = 0;
    return ret;
}

void np_kill(nodeproc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
}

bool np_alive(nodeproc *p)
{
    if (p->pid <= 0)
        return false;
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->pid = 0;
        return false;
    }
    return true;
}

int np_status_peers(const char *status_path, tm2_id *ids, int cap)
{
    FILE *f = fopen(status_path, "r");
    if (!f)
        return -1;
    static char buf[1 << 17];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    cJSON *j = cJSON_Parse(buf);
    if (!j)
        return -1;
    int k = 0;
    cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "peers"))
    {
        cJSON *id = cJSON_GetObjectItem(p, "id");
        if (!cJSON_IsString(id) || strlen(id->valuestring) >= sizeof ids[0].s)
            continue;
        if (k < cap) {
            memset(&ids[k], 0, sizeof ids[k]);
            memcpy(ids[k].s, id->valuestring, strlen(id->valuestring));
        }
        k++;
    }
    cJSON_Delete(j);
    return k;
}

double np_status_number(const char *status_path, const char *key)
{
    FILE *f = fopen(status_path, "r");
    if (!f)
        return -1;
    static char buf[1 << 17];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    cJSON *j = cJSON_Parse(buf);
    if (!j)
        return -1;
    cJSON *v = cJSON_GetObjectItem(j, key);
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    cJSON_Delete(j);
    return d;
}

size_t np_rss(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/statm", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long size = 0, res = 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

int np_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

tm2_id np_make_key(const char *home, unsigned seed)
{
    uint8_t s[32];
    memset(s, 0, sizeof s);
    s[0] = 0x4e;
    s[1] = (uint8_t)seed;
    s[2] = (uint8_t)(seed >> 8);
    tm2_node_key k;
    tm2_node_key_from_seed(&k, s);
    char path[512], why[256];
    snprintf(path, sizeof path, "%s/secrets/node_key.json", home);
    if (tm2_node_key_save(path, &k, why, sizeof why) != 0)
        fail_msg("cannot write %s: %s", path, why);
    tm2_id id;
    tm2_node_key_id(&k, &id);
    tm2_node_key_wipe(&k);
    return id;
}

static void rm_at(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_at(sub);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

void np_rmtree(const char *path) { rm_at(path); }
