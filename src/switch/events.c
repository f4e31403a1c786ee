/* Event subscriptions: bounded queues filled by the network thread, read
 * with a timeout or through a descriptor, closable from anywhere. */
#include "switch/events.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include "tm2p2p/error.h"

struct tm2_subscription {
    atomic_uint refs;            /* the user's handle, the registry's listing, readers in next() */
    uv_mutex_t mu;
    uv_cond_t cond;

    /* Under mu. */
    tm2_event *ring;
    size_t cap, head, count;
    bool fd_armed;               /* the descriptor is signalled */
    bool closed;                 /* no more events will come */
    bool unsubscribed;           /* the user let go: queued events are discarded */
    unsigned waiting;            /* readers blocked in next() */
    tm2__events *reg;            /* non-NULL while listed */

    /* Fixed at creation. */
    unsigned mask;
    bool has_peer;
    tm2_id peer;
    int rfd, wfd;                /* one eventfd on Linux, else a pipe */

    atomic_uint_fast64_t dropped;

    /* Under the registry's mu. */
    bool linked;
    struct tm2_subscription *prev, *next;
};

struct tm2__events {
    atomic_uint refs;            /* the owner, and each listed subscription */
    uv_mutex_t mu;
    /* Under mu. */
    bool closed;
    tm2_subscription *head;
    size_t n;
};

/* ---- descriptor --------------------------------------------------------------
 * Signalled exactly while the queue is non-empty or the subscription is
 * closed. The descriptor is non-blocking, so a signal never waits. */

static int fd_open(tm2_subscription *s)
{
#ifdef __linux__
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return TM2_EIO;
    s->rfd = s->wfd = fd;
#else
    int p[2];
    if (pipe(p) < 0)
        return TM2_EIO;
    for (int i = 0; i < 2; i++) {
        if (fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK) < 0 ||
            fcntl(p[i], F_SETFD, FD_CLOEXEC) < 0) {
            close(p[0]);
            close(p[1]);
            return TM2_EIO;
        }
    }
    s->rfd = p[0];
    s->wfd = p[1];
#endif
    return 0;
}

static void fd_close(tm2_subscription *s)
{
    if (s->rfd >= 0)
        close(s->rfd);
    if (s->wfd >= 0 && s->wfd != s->rfd)
        close(s->wfd);
    s->rfd = s->wfd = -1;
}

static void fd_arm(tm2_subscription *s)
{
    if (s->fd_armed)
        return;
    uint64_t one = 1;
    ssize_t w;
    do
        w = write(s->wfd, &one, s->wfd == s->rfd ? sizeof one : 1);
    while (w < 0 && errno == EINTR);
    s->fd_armed = true;
}

static void fd_disarm(tm2_subscription *s)
{
    if (!s->fd_armed)
        return;
    uint64_t v;
    ssize_t r;
    do
        r = read(s->rfd, &v, s->wfd == s->rfd ? sizeof v : 1);
    while (r < 0 && errno == EINTR);
    s->fd_armed = false;
}

/* ---- reference counting ----------------------------------------------------- */

static void sub_ref(tm2_subscription *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void sub_unref(tm2_subscription *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    fd_close(s);
    uv_cond_destroy(&s->cond);
    uv_mutex_destroy(&s->mu);
    free(s->ring);
    free(s);
}

static void reg_ref(tm2__events *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

static void reg_unref(tm2__events *r)
{
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    uv_mutex_destroy(&r->mu);
    free(r);
}

/* ---- registry ---------------------------------------------------------------- */

int tm2__events_new(tm2__events **out)
{
    *out = NULL;
    tm2__events *r = calloc(1, sizeof *r);
    if (!r)
        return TM2_ENOMEM;
    if (uv_mutex_init(&r->mu) != 0) {
        free(r);
        return TM2_ENOMEM;
    }
    atomic_init(&r->refs, 1);
    *out = r;
    return 0;
}

/* Marks s closed and wakes its reader; under s->mu. */
static void sub_close_locked(tm2_subscription *s)
{
    s->closed = true;
    fd_arm(s);
    uv_cond_broadcast(&s->cond);
}

void tm2__events_close(tm2__events *r)
{
    if (!r)
        return;
    uv_mutex_lock(&r->mu);
    if (r->closed) {
        uv_mutex_unlock(&r->mu);
        return;
    }
    r->closed = true;
    tm2_subscription *list = r->head;
    r->head = NULL;
    r->n = 0;
    for (tm2_subscription *s = list; s; s = s->next) {
        s->linked = false;
        uv_mutex_lock(&s->mu);
        s->reg = NULL;
        sub_close_locked(s);
        uv_mutex_unlock(&s->mu);
    }
    uv_mutex_unlock(&r->mu);
    /* Unlinked under the lock, so no one else walks this list any more; the
     * listing references keep each node alive until it is released here. */
    while (list) {
        tm2_subscription *next = list->next;
        sub_unref(list);
        reg_unref(r);
        list = next;
    }
}

void tm2__events_free(tm2__events *r)
{
    if (!r)
        return;
    tm2__events_close(r);
    reg_unref(r);
}

static bool id_ok(const tm2_id *id)
{
    return id->s[0] != '\0' && memchr(id->s, '\0', sizeof id->s) != NULL;
}

int tm2__events_subscribe(tm2__events *r, unsigned mask, const tm2_id *peer_id, size_t queue_cap,
                          tm2_subscription **out)
{
    if (out)
        *out = NULL;
    if (!r || !out || (mask & TM2_EVENT_ALL) == 0 || (mask & ~TM2_EVENT_ALL) != 0 ||
        queue_cap > TM2__EVENTS_MAX_QUEUE || (peer_id && !id_ok(peer_id)))
        return TM2_EINVAL;
    if (queue_cap == 0)
        queue_cap = TM2__EVENTS_DEFAULT_QUEUE;

    tm2_subscription *s = calloc(1, sizeof *s);
    if (!s)
        return TM2_ENOMEM;
    s->rfd = s->wfd = -1;
    s->ring = calloc(queue_cap, sizeof *s->ring);
    if (!s->ring) {
        free(s);
        return TM2_ENOMEM;
    }
    if (uv_mutex_init(&s->mu) != 0) {
        free(s->ring);
        free(s);
        return TM2_ENOMEM;
    }
    if (uv_cond_init(&s->cond) != 0) {
        uv_mutex_destroy(&s->mu);
        free(s->ring);
        free(s);
        return TM2_ENOMEM;
    }
    int rc = fd_open(s);
    if (rc < 0) {
        uv_cond_destroy(&s->cond);
        uv_mutex_destroy(&s->mu);
        free(s->ring);
        free(s);
        return rc;
    }
    s->cap = queue_cap;
    s->mask = mask;
    if (peer_id) {
        s->has_peer = true;
        memcpy(s->peer.s, peer_id->s, strlen(peer_id->s) + 1);
    }
    atomic_init(&s->dropped, 0);
    atomic_init(&s->refs, 2); /* the user's handle and the registry's listing */

    uv_mutex_lock(&r->mu);
    if (r->closed) {
        uv_mutex_unlock(&r->mu);
        atomic_store(&s->refs, 1);
        sub_unref(s);
        return TM2_ECLOSED;
    }
    s->reg = r;
    s->linked = true;
    s->next = r->head;
    if (r->head)
        r->head->prev = s;
    r->head = s;
    r->n++;
    reg_ref(r);
    uv_mutex_unlock(&r->mu);
    *out = s;
    return 0;
}

static bool matches(const tm2_subscription *s, const tm2_event *ev)
{
    if ((s->mask & (unsigned)ev->type) == 0)
        return false;
    return !s->has_peer || strncmp(s->peer.s, ev->peer_id.s, sizeof s->peer.s) == 0;
}

void tm2__events_publish(tm2__events *r, const tm2_event *ev)
{
    if (!r || !ev)
        return;
    uv_mutex_lock(&r->mu);
    for (tm2_subscription *s = r->head; s; s = s->next) {
        if (!matches(s, ev))
            continue;
        uv_mutex_lock(&s->mu);
        if (!s->closed) {
            if (s->count == s->cap) {
                atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
            } else {
                s->ring[(s->head + s->count) % s->cap] = *ev;
                if (s->count++ == 0) {
                    fd_arm(s);
                    uv_cond_broadcast(&s->cond);
                }
            }
        }
        uv_mutex_unlock(&s->mu);
    }
    uv_mutex_unlock(&r->mu);
}

size_t tm2__events_count(tm2__events *r)
{
    uv_mutex_lock(&r->mu);
    size_t n = r->n;
    uv_mutex_unlock(&r->mu);
    return n;
}

void tm2__event_fill(tm2_event *ev, uint64_t mono_ms, int64_t unix_ms, tm2_event_type type,
                     const tm2_id *peer_id, const tm2_netaddr *addr, bool outbound, int reason,
                     const char *text)
{
    memset(ev, 0, sizeof *ev);
    ev->type = type;
    ev->mono_ms = mono_ms;
    ev->unix_ms = unix_ms;
    if (peer_id)
        snprintf(ev->peer_id.s, sizeof ev->peer_id.s, "%s", peer_id->s);
    if (addr)
        ev->addr = *addr;
    ev->outbound = outbound;
    ev->reason = reason;
    if (!text)
        text = reason != 0 ? tm2_strerror(reason) : "";
    snprintf(ev->reason_text, sizeof ev->reason_text, "%s", text);
}

/* ---- the public side ------------------------------------------------------------ */

int tm2_subscription_next(tm2_subscription *s, tm2_event *ev, int timeout_ms)
{
    if (!s || !ev)
        return TM2_EINVAL;
    /* A reader's own reference lets tm2_unsubscribe from another thread
     * wake it without freeing the memory under it. */
    sub_ref(s);
    /* The reader is another thread blocked on a condition variable: its
     * deadline is on the real clock the wait uses, not on an engine's. */
    uint64_t deadline = timeout_ms > 0 ? uv_hrtime() + (uint64_t)timeout_ms * 1000000u : 0;
    int rc;
    uv_mutex_lock(&s->mu);
    for (;;) {
        if (s->unsubscribed) {
            rc = TM2_ECLOSED;
            break;
        }
        if (s->count > 0) {
            *ev = s->ring[s->head];
            s->head = (s->head + 1) % s->cap;
            if (--s->count == 0 && !s->closed)
                fd_disarm(s);
            rc = 0;
            break;
        }
        if (s->closed) {
            rc = TM2_ECLOSED;
            break;
        }
        if (timeout_ms == 0) {
            rc = TM2_ETIMEDOUT;
            break;
        }
        s->waiting++;
        if (timeout_ms < 0) {
            uv_cond_wait(&s->cond, &s->mu);
        } else {
            uint64_t now = uv_hrtime();
            /* Spurious and early wake-ups loop back; the deadline is fixed. */
            if (now < deadline)
                (void)uv_cond_timedwait(&s->cond, &s->mu, deadline - now);
        }
        s->waiting--;
        if (timeout_ms > 0 && s->count == 0 && !s->closed && !s->unsubscribed &&
            uv_hrtime() >= deadline) {
            rc = TM2_ETIMEDOUT;
            break;
        }
    }
    uv_mutex_unlock(&s->mu);
    sub_unref(s);
    return rc;
}

int tm2_subscription_fd(const tm2_subscription *s)
{
    return s ? s->rfd : TM2_EINVAL;
}

uint64_t tm2_subscription_dropped(const tm2_subscription *s)
{
    return s ? atomic_load_explicit(&s->dropped, memory_order_relaxed) : 0;
}

bool tm2__subscription_waiting(tm2_subscription *s)
{
    uv_mutex_lock(&s->mu);
    bool w = s->waiting > 0;
    uv_mutex_unlock(&s->mu);
    return w;
}

void tm2_unsubscribe(tm2_subscription *s)
{
    if (!s)
        return;
    uv_mutex_lock(&s->mu);
    if (s->unsubscribed) {
        uv_mutex_unlock(&s->mu);
        return;
    }
    s->unsubscribed = true;
    s->count = 0;
    sub_close_locked(s);
    /* s->reg is non-NULL only while the listing's reference on the registry
     * is held, so the registry is alive for the reference taken here. */
    tm2__events *r = s->reg;
    if (r)
        reg_ref(r);
    uv_mutex_unlock(&s->mu);

    if (r) {
        uv_mutex_lock(&r->mu);
        bool was_linked = s->linked;
        if (was_linked) {
            if (s->prev)
                s->prev->next = s->next;
            else
                r->head = s->next;
            if (s->next)
                s->next->prev = s->prev;
            s->linked = false;
            r->n--;
            uv_mutex_lock(&s->mu);
            s->reg = NULL;
            uv_mutex_unlock(&s->mu);
        }
        uv_mutex_unlock(&r->mu);
        if (was_linked) {
            sub_unref(s); /* the listing's reference */
            reg_unref(r); /* the listing's reference on the registry */
        }
        reg_unref(r);
    }
    sub_unref(s); /* the user's */
}
