#include "tvproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tv.h"

extern char **environ;

void tv_proc_start(tv_proc *p, const char *program, const char *const *args)
{
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)program;
    for (; *args; args++) {
        assert_true(n < 63);
        argv[n++] = (char *)*args;
    }
    argv[n] = NULL;
    int o[2], e[2];
    assert_int_equal(pipe2(o, O_CLOEXEC), 0);
    assert_int_equal(pipe2(e, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, o[1], 1), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, e[1], 2), 0);
    memset(p, 0, sizeof *p);
    int r = posix_spawn(&p->pid, program, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        fail_msg("cannot run %s: %s", program, strerror(r));
    close(o[1]);
    close(e[1]);
    p->out_fd = o[0];
    p->err_fd = e[0];
    p->out = calloc(1, 1);
    p->err = calloc(1, 1);
    assert_non_null(p->out);
    assert_non_null(p->err);
    p->status = -2;
}

static void append(int *fd, char **buf, size_t *n)
{
    char tmp[8192];
    ssize_t r = read(*fd, tmp, sizeof tmp);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (r <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    char *b = realloc(*buf, *n + (size_t)r + 1);
    assert_non_null(b);
    memcpy(b + *n, tmp, (size_t)r);
    *n += (size_t)r;
    b[*n] = '\0';
    *buf = b;
    if (getenv("TM2_TEST_LOG"))
        fwrite(tmp, 1, (size_t)r, stderr);
}

void tv_proc_start_ulimit(tv_proc *p, const char *ulimits, const char *program,
                          const char *const *args)
{
    char script[256];
    assert_true((size_t)snprintf(script, sizeof script, "%s && exec \"$0\" \"$@\"", ulimits) <
                sizeof script);
    const char *argv[64] = {"-c", script, program};
    size_t n = 3;
    for (; *args; args++) {
        assert_true(n < 63);
        argv[n++] = *args;
    }
    argv[n] = NULL;
    tv_proc_start(p, "/bin/sh", argv);
}

void tv_proc_pump(tv_proc *p, int timeout_ms)
{
    struct pollfd pf[2] = {{.fd = p->out_fd, .events = POLLIN}, {.fd = p->err_fd, .events = POLLIN}};
    if (p->out_fd < 0 && p->err_fd < 0)
        return;
    if (poll(pf, 2, timeout_ms) <= 0)
        return;
    if (p->out_fd >= 0 && (pf[0].revents & (POLLIN | POLLHUP)))
        append(&p->out_fd, &p->out, &p->out_n);
    if (p->err_fd >= 0 && (pf[1].revents & (POLLIN | POLLHUP)))
        append(&p->err_fd, &p->err, &p->err_n);
}

const char *tv_proc_wait_line(tv_proc *p, const char *f1, const char *f2, uint64_t deadline_ms)
{
    static char line[2048];
    for (;;) {
        const char *s = p->err;
        while (*s) {
            const char *e = strchr(s, '\n');
            if (!e)
                break;
            size_t n = (size_t)(e - s) < sizeof line - 1 ? (size_t)(e - s) : sizeof line - 1;
            memcpy(line, s, n);
            line[n] = '\0';
            if (strstr(line, f1) && (!f2 || strstr(line, f2)))
                return line;
            s = e + 1;
        }
        if (tv_now_ms() > deadline_ms || (p->out_fd < 0 && p->err_fd < 0))
            fail_msg("no line with '%s' '%s' from the program; its stderr:\n%s", f1, f2 ? f2 : "",
                     p->err);
        tv_proc_pump(p, 100);
    }
}

const char *tv_proc_first_line(tv_proc *p, uint64_t deadline_ms)
{
    static char line[256];
    for (;;) {
        const char *nl = strchr(p->out, '\n');
        if (nl) {
            size_t n = (size_t)(nl - p->out);
            assert_true(n < sizeof line);
            memcpy(line, p->out, n);
            line[n] = '\0';
            return line;
        }
        if (tv_now_ms() > deadline_ms || (p->out_fd < 0 && p->err_fd < 0))
            fail_msg("no first line from the program; its stderr:\n%s", p->err);
        tv_proc_pump(p, 100);
    }
}

int tv_proc_finish(tv_proc *p, uint64_t deadline_ms)
{
    while (p->out_fd >= 0 || p->err_fd >= 0) {
        if (tv_now_ms() > deadline_ms) {
            kill(p->pid, SIGKILL);
            fail_msg("the program did not finish in time; its stderr:\n%s", p->err);
        }
        tv_proc_pump(p, 100);
    }
    int st;
    assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
    p->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return p->status;
}

void tv_proc_release(tv_proc *p)
{
    if (p->status == -2) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    free(p->out);
    free(p->err);
    memset(p, 0, sizeof *p);
}
