/* Helpers the benchmarks share: fatal errors and clocks. */
#ifndef TM2_BENCH_UTIL_H
#define TM2_BENCH_UTIL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static inline double bench_ts(struct timespec t) { return (double)t.tv_sec + (double)t.tv_nsec * 1e-9; }

static inline double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return bench_ts(t);
}

/* CPU seconds of the whole process. */
static inline double proc_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return bench_ts(t);
}

static inline void nap_s(double s)
{
    struct timespec t = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* CPU seconds of the calling thread. */
static inline double thread_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return bench_ts(t);
}

#endif
