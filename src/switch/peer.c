/* tm2_peer: a verified connection of a switch (see peer.h).
 *
 * Lifetime: the switch holds one reference from on_conn until a loop turn
 * after the connection's on_close; whoever holds the last reference frees
 * the peer, the connection struct with it (its handles are closed by then).
 *
 * Calls from other threads into the connection (send, status) are counted
 * under the peer's lock: on_close marks the peer gone and waits for the
 * count to drop to zero, so no such call is still inside the connection,
 * or can enter it, once the switch's loop may go away. The wait is short:
 * the connection is closed by then, which wakes any sender waiting for room. */
#include <stdlib.h>
#include <string.h>

#include "switch/switch_engine.h"
#include "switch/switch_internal.h"

tm2_peer *tm2__peer_new(tm2_switch *sw, tm2__transport_conn *conn)
{
    tm2_peer *p = calloc(1, sizeof *p + sw->n_descs * sizeof p->ctr[0]);
    if (!p)
        return NULL;
    if (uv_mutex_init(&p->lock) != 0) {
        free(p);
        return NULL;
    }
    if (uv_cond_init(&p->idle) != 0) {
        uv_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    atomic_init(&p->refs, 1);
    atomic_init(&p->running, false);
    p->sw = sw;
    p->conn = conn;
    p->id = conn->id;
    p->socket_addr = conn->socket_addr;
    p->outbound = conn->outbound;
    p->slot_out = (conn->owner_flags & TM2__CONN_SLOT_OUT) != 0;   /* inbound only */
    p->persistent = tm2__sw_is_persistent_id(sw, &conn->id, NULL);
    p->priv = tm2_switch_is_private(sw, &conn->id);
    p->uncond = tm2_switch_is_unconditional(sw, &conn->id);
    memcpy(p->our_ch, sw->our_ch, sizeof p->our_ch);
    const tm2_node_info *ni = conn->node_info;
    for (size_t i = 0; ni && i < ni->n_channels; i++)
        tm2__bit_set(p->their_ch, ni->channels[i]);
    return p;
}

void tm2__peer_mark_gone(tm2_peer *p)
{
    atomic_store(&p->running, false);
    uv_mutex_lock(&p->lock);
    p->gone = true;
    while (p->inflight)
        uv_cond_wait(&p->idle, &p->lock);
    uv_mutex_unlock(&p->lock);
}

/* Enters the connection; false once it is gone. */
static bool enter(tm2_peer *p)
{
    uv_mutex_lock(&p->lock);
    bool ok = !p->gone;
    if (ok)
        p->inflight++;
    uv_mutex_unlock(&p->lock);
    return ok;
}

static void leave(tm2_peer *p)
{
    uv_mutex_lock(&p->lock);
    if (--p->inflight == 0 && p->gone)
        uv_cond_signal(&p->idle);
    uv_mutex_unlock(&p->lock);
}

tm2_peer *tm2_peer_ref(tm2_peer *p)
{
    if (p)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void tm2_peer_unref(tm2_peer *p)
{
    if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    tm2__kv *kv = p->kv;
    while (kv) {
        tm2__kv *n = kv->next;
        if (kv->free_fn)
            kv->free_fn(kv->value);
        free(kv->key);
        free(kv);
        kv = n;
    }
    tm2__transport_conn_free(p->conn);
    free(p->reason_text);
    uv_cond_destroy(&p->idle);
    uv_mutex_destroy(&p->lock);
    free(p);
}

const tm2_id *tm2_peer_id(const tm2_peer *p) { return p ? &p->id : NULL; }

void tm2_peer_socket_addr(const tm2_peer *p, tm2_netaddr *out)
{
    if (p && out)
        *out = p->socket_addr;
}

bool tm2_peer_is_outbound(const tm2_peer *p) { return p && p->outbound; }

bool tm2_peer_in_outbound_slot(const tm2_peer *p) { return p && tm2__peer_counts_out(p); }

bool tm2__switch_counts_out(tm2_switch *sw, const tm2_id *id)
{
    tm2_peer *p = tm2__peer_set_find(&sw->peers, id);
    return p && tm2__peer_counts_out(p);
}

bool tm2_peer_is_persistent(const tm2_peer *p) { return p && p->persistent; }
bool tm2_peer_is_private(const tm2_peer *p) { return p && p->priv; }
bool tm2_peer_is_unconditional(const tm2_peer *p) { return p && p->uncond; }
bool tm2_peer_is_running(const tm2_peer *p) { return p && atomic_load(&p->running); }

const tm2_node_info *tm2_peer_node_info(const tm2_peer *p) { return p ? p->conn->node_info : NULL; }

int tm2_peer_status(tm2_peer *p, tm2_mconn_status *st)
{
    if (!p || !st)
        return TM2_EINVAL;
    if (!enter(p))
        return TM2_ECLOSED;
    int r = tm2__mcs_status(&p->conn->mcs, st);
    leave(p);
    return r;
}

/* What refuses a send before any copy is made. */
static int send_check(const tm2_peer *p, uint8_t ch)
{
    if (!tm2__bit(p->our_ch, ch) || !tm2__bit(p->their_ch, ch))
        return TM2_ECHANNEL;
    if (!atomic_load(&p->running))
        return TM2_ECLOSED;
    return 0;
}

static int queue_msg(tm2_peer *p, uint8_t ch, tm2__msg *m, uint32_t timeout_ms, bool wait)
{
    int r = TM2_ECLOSED;
    if (enter(p)) {
        r = wait ? tm2__mcs_send(&p->conn->mcs, ch, m, timeout_ms)
                 : tm2__mcs_try_send(&p->conn->mcs, ch, m);
        if (r == 0)
            tm2__peer_count(p, ch, m->len, true);
        leave(p);
    }
    /* Not started yet or already stopping: the peer is not running. */
    return r == TM2_ESTATE ? TM2_ECLOSED : r;
}

static int do_send(tm2_peer *p, uint8_t ch, const void *data, size_t len, uint32_t timeout_ms,
                   bool wait)
{
    if (!p || (len && !data))
        return TM2_EINVAL;
    int r = send_check(p, ch);
    if (r)
        return r;
    tm2__msg *m = tm2__msg_new(data, len);
    if (!m)
        return TM2_ENOMEM;
    r = queue_msg(p, ch, m, timeout_ms, wait);
    tm2__msg_unref(m);
    return r;
}

static int do_send_msg(tm2_peer *p, uint8_t ch, tm2_msg *m, uint32_t timeout_ms, bool wait)
{
    if (!p || !m)
        return TM2_EINVAL;
    int r = send_check(p, ch);
    return r ? r : queue_msg(p, ch, m, timeout_ms, wait);
}

int tm2_peer_send(tm2_peer *p, uint8_t ch, const void *data, size_t len, uint32_t timeout_ms)
{
    return do_send(p, ch, data, len, timeout_ms, true);
}

int tm2_peer_try_send(tm2_peer *p, uint8_t ch, const void *data, size_t len)
{
    return do_send(p, ch, data, len, 0, false);
}

int tm2_peer_send_msg(tm2_peer *p, uint8_t ch, tm2_msg *m, uint32_t timeout_ms)
{
    return do_send_msg(p, ch, m, timeout_ms, true);
}

int tm2_peer_try_send_msg(tm2_peer *p, uint8_t ch, tm2_msg *m)
{
    return do_send_msg(p, ch, m, 0, false);
}

int tm2_peer_set(tm2_peer *p, const char *key, void *value, void (*free_fn)(void *))
{
    if (!p || !key)
        return TM2_EINVAL;
    size_t kl = strlen(key);
    tm2__kv *fresh = malloc(sizeof *fresh);
    char *k = malloc(kl + 1);
    if (!fresh || !k) {
        free(fresh);
        free(k);
        return TM2_ENOMEM;
    }
    memcpy(k, key, kl + 1);
    void *old = NULL;
    void (*old_free)(void *) = NULL;
    bool replaced = false;
    uv_mutex_lock(&p->lock);
    for (tm2__kv *kv = p->kv; kv; kv = kv->next) {
        if (strcmp(kv->key, key) == 0) {
            old = kv->value;
            old_free = kv->free_fn;
            kv->value = value;
            kv->free_fn = free_fn;
            replaced = true;
            break;
        }
    }
    if (!replaced) {
        fresh->key = k;
        fresh->value = value;
        fresh->free_fn = free_fn;
        fresh->next = p->kv;
        p->kv = fresh;
    }
    uv_mutex_unlock(&p->lock);
    if (replaced) {
        free(fresh);
        free(k);
        /* Outside the lock: free_fn may call back into the store. */
        if (old_free && old != value)
            old_free(old);
    }
    return 0;
}

void *tm2_peer_get(tm2_peer *p, const char *key)
{
    if (!p || !key)
        return NULL;
    void *v = NULL;
    uv_mutex_lock(&p->lock);
    for (tm2__kv *kv = p->kv; kv; kv = kv->next) {
        if (strcmp(kv->key, key) == 0) {
            v = kv->value;
            break;
        }
    }
    uv_mutex_unlock(&p->lock);
    return v;
}
