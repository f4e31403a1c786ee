/* The address book's background writer (see book_writer.h). */
#include "discovery/book_writer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/thread.h"
#include "discovery/addrbook.h"

struct tm2__book_writer {
    uv_thread_t thread;
    uv_mutex_t lock;
    uv_cond_t wake;              /* to the thread: a buffer waits, or quit */
    uv_cond_t idle;              /* to drain: nothing waits or is being written */
    char *path;
    tm2__book_write_fn write;
    void *user;
    /* Under lock: */
    char *text;                  /* the waiting buffer; NULL: none */
    size_t len;
    uint64_t gen;
    bool busy;                   /* the thread is writing */
    bool quit;
    uint64_t replaced;
    tm2__pex_save_result res;    /* since the last collect */
};

static int default_write(void *user, const char *path, const char *text, size_t len, char *why,
                         size_t why_len)
{
    (void)user;
    return tm2__addrbook_write_file(path, text, len, why, why_len);
}

static void writer_main(void *arg)
{
    tm2__book_writer *w = arg;
    uv_mutex_lock(&w->lock);
    for (;;) {
        while (!w->text && !w->quit)
            uv_cond_wait(&w->wake, &w->lock);
        /* A waiting buffer is written even when quitting: it is the final
         * state the owner wants on disk. */
        if (!w->text)
            break;
        char *text = w->text;
        size_t len = w->len;
        uint64_t gen = w->gen;
        w->text = NULL;
        w->busy = true;
        uv_mutex_unlock(&w->lock);

        char why[sizeof w->res.why];
        why[0] = '\0';
        int rc = w->write(w->user, w->path, text, len, why, sizeof why);
        free(text);

        uv_mutex_lock(&w->lock);
        w->busy = false;
        w->res.gen = gen;
        w->res.rc = rc;
        if (rc < 0) {
            w->res.errors++;
            w->res.err = rc;
            memcpy(w->res.why, why, sizeof why);
        } else {
            w->res.saves++;
        }
        if (!w->text)
            uv_cond_broadcast(&w->idle);
    }
    uv_mutex_unlock(&w->lock);
}

int tm2__book_writer_new(const char *path, tm2__book_write_fn write_fn, void *user,
                         tm2__book_writer **out)
{
    if (!path || !*path || !out)
        return TM2_EINVAL;
    *out = NULL;
    tm2__book_writer *w = calloc(1, sizeof *w);
    if (!w)
        return TM2_ENOMEM;
    w->path = strdup(path);
    w->write = write_fn ? write_fn : default_write;
    w->user = user;
    if (!w->path)
        goto no_lock;
    if (uv_mutex_init(&w->lock) != 0)
        goto no_lock;
    if (uv_cond_init(&w->wake) != 0)
        goto no_wake;
    if (uv_cond_init(&w->idle) != 0)
        goto no_idle;
    if (uv_thread_create(&w->thread, writer_main, w) != 0)
        goto no_thread;
    tm2__thread_name(w->thread, "tm2p2p-book");
    *out = w;
    return 0;
no_thread:
    uv_cond_destroy(&w->idle);
no_idle:
    uv_cond_destroy(&w->wake);
no_wake:
    uv_mutex_destroy(&w->lock);
no_lock:
    free(w->path);
    free(w);
    return TM2_ENOMEM;
}

int tm2__book_writer_submit(tm2__book_writer *w, char *text, size_t len, uint64_t gen)
{
    if (!w || !text) {
        free(text);
        return TM2_EINVAL;
    }
    uv_mutex_lock(&w->lock);
    char *old = w->text;
    if (old)
        w->replaced++;
    w->text = text;
    w->len = len;
    w->gen = gen;
    uv_cond_signal(&w->wake);
    uv_mutex_unlock(&w->lock);
    free(old);   /* never written: a newer book replaced it */
    return 0;
}

void tm2__book_writer_collect(tm2__book_writer *w, tm2__pex_save_result *out)
{
    memset(out, 0, sizeof *out);
    if (!w)
        return;
    uv_mutex_lock(&w->lock);
    *out = w->res;
    memset(&w->res, 0, sizeof w->res);
    uv_mutex_unlock(&w->lock);
}

void tm2__book_writer_drain(tm2__book_writer *w)
{
    if (!w)
        return;
    uv_mutex_lock(&w->lock);
    while (w->text || w->busy)
        uv_cond_wait(&w->idle, &w->lock);
    uv_mutex_unlock(&w->lock);
}

uint64_t tm2__book_writer_replaced(tm2__book_writer *w)
{
    uv_mutex_lock(&w->lock);
    uint64_t n = w->replaced;
    uv_mutex_unlock(&w->lock);
    return n;
}

void tm2__book_writer_free(tm2__book_writer *w)
{
    if (!w)
        return;
    uv_mutex_lock(&w->lock);
    w->quit = true;
    uv_cond_signal(&w->wake);
    uv_mutex_unlock(&w->lock);
    uv_thread_join(&w->thread);
    free(w->text);
    uv_cond_destroy(&w->idle);
    uv_cond_destroy(&w->wake);
    uv_mutex_destroy(&w->lock);
    free(w->path);
    free(w);
}
