#include "refproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tv.h"

extern char **environ;

void refproc_init(refproc *p)
{
    memset(p, 0, sizeof *p);
    p->out = -1;
    p->exit_status = -1;
}

void refproc_start_cmd(refproc *p, const char *const *argv)
{
    refproc_init(p);

    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);

    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0), 0);
    /* dup2 clears close-on-exec on the child's copy only. */
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, fds[1], 1), 0);

    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (r != 0) {
        close(fds[0]);
        fail_msg("cannot start %s: %s", argv[0], strerror(r));
    }
    p->pid = pid;
    p->out = fds[0];
}

void refproc_start(refproc *p, const char *const *args)
{
    const char *argv[64];
    size_t n = 0;
    argv[n++] = TM2REF_PATH;
    for (; args[n - 1] != NULL; n++) {
        assert_true(n < sizeof argv / sizeof argv[0] - 1);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    refproc_start_cmd(p, argv);
}

/* Waits for the pipe to be readable until deadline_ms; 0 ready, -1 timeout. */
static int wait_readable(int fd, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = tv_now_ms();
        if (now >= deadline_ms)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)(deadline_ms - now));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* Reads more output into buf; 1 data, 0 EOF, -1 deadline or error. */
static int fill(refproc *p, uint64_t deadline_ms)
{
    if (p->out < 0 || p->len == sizeof p->buf)
        return -1;
    if (wait_readable(p->out, deadline_ms) != 0)
        return -1;
    ssize_t r;
    do {
        r = read(p->out, p->buf + p->len, sizeof p->buf - p->len);
    } while (r < 0 && errno == EINTR);
    if (r <= 0)
        return r == 0 ? 0 : -1;
    p->len += (size_t)r;
    return 1;
}

static int line_until(refproc *p, char *line, size_t cap, uint64_t deadline_ms)
{
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - p->buf);
            if (n >= cap)
                return -1;
            memcpy(line, p->buf, n);
            line[n] = '\0';
            p->len -= n + 1;
            memmove(p->buf, nl + 1, p->len);
            return 0;
        }
        if (fill(p, deadline_ms) != 1)
            return -1;
    }
}

int refproc_line(refproc *p, char *line, size_t cap, int timeout_ms)
{
    return line_until(p, line, cap, tv_now_ms() + (uint64_t)timeout_ms);
}

int refproc_expect(refproc *p, const char *tag, char *line, size_t cap, char **words, int max,
                   int timeout_ms)
{
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    size_t tlen = strlen(tag);
    while (line_until(p, line, cap, deadline) == 0) {
        if (strncmp(line, tag, tlen) == 0 && (line[tlen] == ' ' || line[tlen] == '\0'))
            return tv_split(line, ' ', words, max);
    }
    return -1;
}

static void reap(refproc *p)
{
    int st;
    pid_t r;
    do {
        r = waitpid(p->pid, &st, 0);
    } while (r < 0 && errno == EINTR);
    p->exit_status = (r == p->pid && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
    p->pid = 0;
}

int refproc_wait(refproc *p, int timeout_ms)
{
    if (p->pid == 0)
        return p->exit_status;
    uint64_t deadline = tv_now_ms() + (uint64_t)timeout_ms;
    int r;
    /* The child holds stdout until it exits, so EOF on the pipe means the
     * wait below will not block. */
    do {
        p->len = 0;
        r = fill(p, deadline);
    } while (r == 1);
    if (r != 0) {
        refproc_stop(p);
        return -1;
    }
    close(p->out);
    p->out = -1;
    reap(p);
    return p->exit_status;
}

void refproc_stop(refproc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        reap(p);
        p->exit_status = -1;
    }
    if (p->out >= 0) {
        close(p->out);
        p->out = -1;
    }
    p->len = 0;
}

int refproc_run(const char *const *args, const char *tag, char *line, size_t cap, char **words,
                int max, int *nwords, int timeout_ms)
{
    refproc p;
    refproc_start(&p, args);
    if (tag != NULL) {
        int n = refproc_expect(&p, tag, line, cap, words, max, timeout_ms);
        if (nwords != NULL)
            *nwords = n;
    }
    int st = refproc_wait(&p, timeout_ms);
    refproc_stop(&p);
    return st;
}
