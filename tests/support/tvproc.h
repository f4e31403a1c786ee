/* A program run by a test as a child process, its stdout and stderr read
 * through pipes into memory. Every wait has a deadline and fails the test
 * (with the child's stderr) when it passes. */
#ifndef TM2_TEST_TVPROC_H
#define TM2_TEST_TVPROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tv_proc {
    pid_t pid;
    int out_fd, err_fd;        /* read ends; -1 once at EOF */
    char *out, *err;           /* everything read so far, NUL-terminated */
    size_t out_n, err_n;
    int status;                /* exit code, -1 if killed, -2 while running */
} tv_proc;

/* Starts program with args (NULL-terminated, without argv[0]). */
void tv_proc_start(tv_proc *p, const char *program, const char *const *args);
/* The same under /bin/sh, which first runs ulimits (shell commands such as
 * "ulimit -Sn 100 && ulimit -Hn 200"), so the limits apply to the child
 * alone; p->pid is the program's, as the shell execs it. */
void tv_proc_start_ulimit(tv_proc *p, const char *ulimits, const char *program,
                          const char *const *args);
/* Reads whatever the child wrote, waiting up to timeout_ms for more. */
void tv_proc_pump(tv_proc *p, int timeout_ms);
/* Waits until stderr has a line holding f1 and (if not NULL) f2; returns
 * the line (static buffer). */
const char *tv_proc_wait_line(tv_proc *p, const char *f1, const char *f2, uint64_t deadline_ms);
/* Waits for the first stdout line; returns it (static buffer). */
const char *tv_proc_first_line(tv_proc *p, uint64_t deadline_ms);
/* Reads to EOF and reaps the child: its exit code, -1 if killed. */
int tv_proc_finish(tv_proc *p, uint64_t deadline_ms);
/* Kills a child still running, closes and frees everything. */
void tv_proc_release(tv_proc *p);

#endif
