/* Internal: names for the library's threads, so that an operator's top -H,
 * perf or /proc/<pid>/task/<tid>/comm tells the network thread from the
 * handshake workers and the writers. At most 15 characters; a name that does
 * not take is only a lost label. */
#ifndef TM2_COMMON_THREAD_H
#define TM2_COMMON_THREAD_H

#include <pthread.h>

static inline void tm2__thread_name(const char *name)
{
#if defined(__linux__)
    (void)pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}

#endif
