/* Internal: names for the library's threads, so that an operator's top -H,
 * perf or /proc/<pid>/task/<tid>/comm tells the network thread from the
 * handshake workers and the writers. At most 15 characters; a name that does
 * not take is only a lost label. The creator names each thread right after
 * creating it (t: a pthread_t, as libuv's uv_thread_t is on Unix), so that
 * it carries its name from the moment the call that started it returns. */
#ifndef TM2_COMMON_THREAD_H
#define TM2_COMMON_THREAD_H

#include <pthread.h>

static inline void tm2__thread_name(pthread_t t, const char *name)
{
#if defined(__linux__)
    (void)pthread_setname_np(t, name);
#else
    (void)t;
    (void)name;
#endif
}

#endif
