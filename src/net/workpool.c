#include "net/workpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <uv.h>   /* uv_available_parallelism: the CPUs, not world I/O */

#include "common/thread.h"
#include "tm2p2p/error.h"

#define MAX_THREADS 64

enum { W_IDLE = 0, W_QUEUED, W_RUNNING, W_DONE };

/* mu guards the queue, every sink's running count and done list, and every
 * job's where/prev/next. life serialises starting and stopping the threads
 * (taken before mu, never while holding it). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;   /* workers wait for jobs */
static pthread_cond_t idle_cv = PTHREAD_COND_INITIALIZER;   /* a closing sink waits */
static tm2__wpool_job *q_head, *q_tail;
static bool stopping;

static pthread_mutex_t life = PTHREAD_MUTEX_INITIALIZER;
static unsigned users;                  /* open sinks (life) */
static pthread_t workers[MAX_THREADS];  /* (life) */
static unsigned n_workers;              /* (life) */
static atomic_uint running_threads;
static atomic_int cfg_threads;          /* 0 default, < 0 none */

void tm2__wpool_configure(int threads)
{
    atomic_store(&cfg_threads, threads > MAX_THREADS ? MAX_THREADS : threads);
}

unsigned tm2__wpool_threads(void) { return atomic_load(&running_threads); }

static void q_unlink(tm2__wpool_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        q_head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        q_tail = j->prev;
    j->prev = j->next = NULL;
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!q_head && !stopping)
            pthread_cond_wait(&work_cv, &mu);
        if (!q_head)
            break;                          /* stopping, nothing left */
        tm2__wpool_job *j = q_head;
        q_unlink(j);
        j->where = W_RUNNING;
        tm2__wpool_sink *k = j->sink;
        k->running++;
        pthread_mutex_unlock(&mu);

        j->run(j);

        pthread_mutex_lock(&mu);
        j->where = W_DONE;
        if (k->done_tail)
            k->done_tail->next = j;
        else
            k->done_head = j;
        k->done_tail = j;
        /* Sent under mu: a sink is closed only after its running count fell
         * to zero under mu, so the waker is still open here. */
        tm2__waker_send(&k->waker);
        if (--k->running == 0 && k->closing)
            pthread_cond_broadcast(&idle_cv);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Engine thread: delivers finished jobs. */
static void deliver(tm2__waker *w)
{
    tm2__wpool_sink *k = (tm2__wpool_sink *)((char *)w - offsetof(tm2__wpool_sink, waker));
    pthread_mutex_lock(&mu);
    tm2__wpool_job *list = k->done_head;
    k->done_head = k->done_tail = NULL;
    for (tm2__wpool_job *j = list; j; j = j->next)
        j->where = W_IDLE;
    pthread_mutex_unlock(&mu);
    while (list) {
        tm2__wpool_job *j = list;
        list = j->next;
        j->next = NULL;
        j->done(j, true);
    }
}

static void stop_threads(void)
{
    pthread_mutex_lock(&mu);
    stopping = true;
    pthread_cond_broadcast(&work_cv);
    pthread_mutex_unlock(&mu);
    for (unsigned i = 0; i < n_workers; i++)
        pthread_join(workers[i], NULL);
    n_workers = 0;
    atomic_store(&running_threads, 0);
    pthread_mutex_lock(&mu);
    stopping = false;
    pthread_mutex_unlock(&mu);
}

int tm2__wpool_sink_init(tm2__wpool_sink *k, tm2__engine *e)
{
    *k = (tm2__wpool_sink){0};
    if (!tm2__engine_workers(e)) {
        k->inline_only = true;
        k->local = true;
        return 0;
    }
    if (tm2__waker_init(e, &k->waker, deliver) != 0)
        return TM2_EIO;
    pthread_mutex_lock(&life);
    if (users++ == 0) {
        int want = atomic_load(&cfg_threads);
        unsigned n = want < 0 ? 0 : want > 0 ? (unsigned)want : uv_available_parallelism();
        if (n > MAX_THREADS)
            n = MAX_THREADS;
        while (n_workers < n && pthread_create(&workers[n_workers], NULL, worker_main, NULL) == 0)
            tm2__thread_name(workers[n_workers++], "tm2p2p-hs");
        atomic_store(&running_threads, n_workers);
    }
    k->inline_only = n_workers == 0;
    pthread_mutex_unlock(&life);
    return 0;
}

void tm2__wpool_sink_close(tm2__wpool_sink *k, void (*on_close)(tm2__waker *w))
{
    if (k->local)
        return;
    tm2__wpool_job *drop = NULL;
    pthread_mutex_lock(&mu);
    k->closing = true;
    for (tm2__wpool_job *j = q_head, *nx; j; j = nx) {
        nx = j->next;
        if (j->sink != k)
            continue;
        q_unlink(j);
        j->where = W_IDLE;
        j->next = drop;
        drop = j;
    }
    while (k->running)
        pthread_cond_wait(&idle_cv, &mu);
    tm2__wpool_job *done = k->done_head;
    k->done_head = k->done_tail = NULL;
    for (tm2__wpool_job *j = done; j; j = j->next)
        j->where = W_IDLE;
    pthread_mutex_unlock(&mu);

    while (drop) {
        tm2__wpool_job *j = drop;
        drop = j->next;
        j->next = NULL;
        j->done(j, false);
    }
    while (done) {
        tm2__wpool_job *j = done;
        done = j->next;
        j->next = NULL;
        j->done(j, true);
    }
    tm2__waker_close(&k->waker, on_close);

    pthread_mutex_lock(&life);
    if (--users == 0 && n_workers)
        stop_threads();
    pthread_mutex_unlock(&life);
}

void tm2__wpool_submit(tm2__wpool_sink *k, tm2__wpool_job *j)
{
    j->sink = k;
    j->next = NULL;
    pthread_mutex_lock(&mu);
    j->prev = q_tail;
    if (q_tail)
        q_tail->next = j;
    else
        q_head = j;
    q_tail = j;
    j->where = W_QUEUED;
    pthread_cond_signal(&work_cv);
    pthread_mutex_unlock(&mu);
}

bool tm2__wpool_cancel(tm2__wpool_job *j)
{
    bool taken = false;
    pthread_mutex_lock(&mu);
    if (j->where == W_QUEUED) {
        q_unlink(j);
        j->where = W_IDLE;
        taken = true;
    }
    pthread_mutex_unlock(&mu);
    return taken;
}
