/* Interop test support: runs the Go reference harness tm2ref (built from
 * tests/interop/cmd/tm2ref) as a child process.
 *
 * The child's stdout is a pipe read line by line, always with a deadline; its
 * stderr is the test's stderr, so the reference's own error messages land in
 * the test log. A refproc must be stopped with refproc_stop() on every path
 * (cmocka teardowns do it), which kills and reaps a child that is still
 * running. Not thread-safe; one refproc per thread. */
#ifndef TM2_TEST_REFPROC_H
#define TM2_TEST_REFPROC_H

#include <stddef.h>
#include <sys/types.h>

/* Path of the tm2ref binary (set by tests/interop/CMakeLists.txt). */
#ifndef TM2REF_PATH
#error "TM2REF_PATH must be defined by the build"
#endif

/* Longest stdout line kept; longer lines are an error. */
#define REFPROC_LINE_MAX 1024

typedef struct refproc {
    pid_t pid;                   /* 0 once reaped or never started */
    int out;                     /* read end of the child's stdout; -1 when closed */
    size_t len;                  /* bytes buffered in buf */
    char buf[REFPROC_LINE_MAX];
    int exit_status;             /* exit status once reaped; -1 if killed by a signal */
} refproc;

/* A refproc that owns nothing; refproc_stop() on it is a no-op. */
void refproc_init(refproc *p);

/* Starts tm2ref with args (NULL-terminated, without argv[0]); stdin is
 * /dev/null. Fails the running test if the process cannot be started. */
void refproc_start(refproc *p, const char *const *args);

/* Starts any program the same way: argv[0] is looked up in PATH (for `ip
 * netns exec ...` or the tm2p2p program), argv is NULL-terminated. */
void refproc_start_cmd(refproc *p, const char *const *argv);

/* Next stdout line, without its newline, into line. Returns 0, or -1 at end
 * of output or when timeout_ms passes first. */
int refproc_line(refproc *p, char *line, size_t cap, int timeout_ms);

/* Skips lines until one whose first word is tag; splits that line in place
 * into at most max words (the tag is word 0). Returns the word count, or -1
 * at end of output or deadline. */
int refproc_expect(refproc *p, const char *tag, char *line, size_t cap, char **words, int max,
                   int timeout_ms);

/* Reads the remaining output (discarding it) until the child closes stdout,
 * then reaps it. Returns its exit status, or -1 if it did not exit within
 * timeout_ms (it is then killed) or died from a signal. */
int refproc_wait(refproc *p, int timeout_ms);

/* Kills (SIGKILL) and reaps the child if it is still there; closes the pipe. */
void refproc_stop(refproc *p);

/* Runs tm2ref to completion. If tag is non-NULL, the first line starting with
 * it is split into words as in refproc_expect() (line must outlive words).
 * Returns the exit status (-1 on deadline or signal); *nwords receives the
 * word count, or -1 if no such line appeared. */
int refproc_run(const char *const *args, const char *tag, char *line, size_t cap, char **words,
                int max, int *nwords, int timeout_ms);

#endif
