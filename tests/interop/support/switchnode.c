#include "switchnode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tv.h"


/* ---- tm2p2p nodes ---------------------------------------------------------- */

static void t_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    tnode *n = user;
    if (ch != SN_TEST_CH)
        return;
    uv_mutex_lock(&n->mu);
    if (n->n_msgs < SN_MAX_MSGS) {
        sn_msg *m = &n->msgs[n->n_msgs++];
        m->from = *tm2_peer_id(p);
        size_t k = len < sizeof m->text - 1 ? len : sizeof m->text - 1;
        memcpy(m->text, msg, k);
        m->text[k] = '\0';
    }
    uv_cond_broadcast(&n->cv);
    uv_mutex_unlock(&n->mu);
}

static void t_log(void *user, tm2_log_level level, const char *msg, const tm2_log_field *f,
                  size_t nf)
{
    (void)level;
    (void)user;
    char line[1024];
    if (getenv("TM2_TEST_LOG"))
        fprintf(stderr, "[tm2p2p] %s\n", tv_log_line(line, sizeof line, msg, f, nf));
}

void tnode_start(tnode *n, uint8_t seed_byte, const tnode_opts *o)
{
    static const tnode_opts none;
    if (!o)
        o = &none;
    sn_key(seed_byte, &n->key, &n->id);
    assert_int_equal(uv_mutex_init(&n->mu), 0);
    assert_int_equal(uv_cond_init(&n->cv), 0);

    tm2_switch_config cfg;
    tm2_switch_config_default(&cfg);
    if (o->max_outbound)
        cfg.max_outbound = o->max_outbound;

    tm2_discovery_config dc = {
        .interval_ms = SN_PEX_MS,
        .target_outbound = cfg.max_outbound,
        .log = t_log,
        .log_level = TM2_LOG_DEBUG,
    };
    assert_int_equal(tm2_discovery_new(&dc, &n->disc), 0);

    n->ch = (tm2_channel_desc){
        .id = SN_TEST_CH, .priority = 5, .send_queue_capacity = 64,
        .recv_message_capacity = 1u << 20,
    };
    n->reactors[0] = *tm2_discovery_reactor(n->disc);
    n->reactors[1] = (tm2_reactor){
        .name = "test", .channels = &n->ch, .n_channels = 1, .user = n, .receive = t_receive,
    };
    cfg.key = n->key;
    cfg.listen_addr = o->listen ? o->listen : "tcp://127.0.0.1:0";
    cfg.network = o->network ? o->network : SN_CHAIN;
    cfg.moniker = "tm2p2p-interop";
    cfg.allow_duplicate_ip = !o->refuse_duplicate_ip;
    cfg.persistent_peers = o->persistent;
    cfg.n_persistent_peers = o->n_persistent;
    cfg.seeds = o->seeds;
    cfg.n_seeds = o->n_seeds;
    cfg.reactors = n->reactors;
    cfg.n_reactors = 2;
    cfg.log = t_log;
    cfg.log_level = TM2_LOG_DEBUG;
    cfg.mconn.flush_throttle_ms = 10;
    const char *field = NULL;
    if (tm2_switch_config_check(&cfg, &field) != 0)
        fail_msg("switch config refused: %s", field ? field : "?");
    assert_int_equal(tm2_switch_new(&cfg, &n->sw), 0);
    assert_int_equal(tm2_switch_subscribe(n->sw, TM2_EVENT_ALL, NULL, 1000, &n->sub), 0);
    assert_int_equal(tm2_switch_start(n->sw), 0);
    assert_int_equal(tm2_switch_listen_addr(n->sw, &n->addr), 0);
    n->addr.id = n->id;
}

void tnode_stop(tnode *n)
{
    if (!n->sw)
        return;
    tm2_switch_stop(n->sw);
    tm2_unsubscribe(n->sub);
    tm2_switch_free(n->sw);
    tm2_discovery_free(n->disc);
    uv_cond_destroy(&n->cv);
    uv_mutex_destroy(&n->mu);
    n->sw = NULL;
}

/* Reads one event into evs; false if none came within timeout_ms. */
static bool next_event(tnode *n, int timeout_ms)
{
    tm2_event ev;
    if (tm2_subscription_next(n->sub, &ev, timeout_ms) != 0)
        return false;
    if (getenv("TM2_TEST_LOG"))
        fprintf(stderr, "[event %s] type=%u peer=%s out=%d reason=%d %s\n", n->id.s,
                (unsigned)ev.type, ev.peer_id.s, ev.outbound, ev.reason, ev.reason_text);
    n->evs[n->n_evs++] = ev;
    return true;
}

const tm2_event *tnode_wait_event_from(tnode *n, size_t *from, unsigned mask, const tm2_id *id,
                                       int timeout_ms)
{
    uint64_t end = tv_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    size_t i = from ? *from : 0;
    for (;;) {
        for (; i < n->n_evs; i++) {
            const tm2_event *e = &n->evs[i];
            if ((e->type & mask) && (!id || strcmp(e->peer_id.s, id->s) == 0)) {
                if (from)
                    *from = i + 1;
                return e;
            }
        }
        uint64_t now = tv_now_ms();
        if (now >= end || n->n_evs == SN_MAX_EVS)
            return NULL;
        if (!next_event(n, (int)(end - now)))
            return NULL;
    }
}

size_t tnode_drain(tnode *n)
{
    while (n->n_evs < SN_MAX_EVS && next_event(n, 0))
        ;
    return n->n_evs;
}

const tm2_event *tnode_wait_event(tnode *n, unsigned mask, const tm2_id *id, int timeout_ms)
{
    return tnode_wait_event_from(n, NULL, mask, id, timeout_ms);
}

bool tnode_wait_msg(tnode *n, const tm2_id *id, const char *prefix, int timeout_ms)
{
    uint64_t end = tv_now_ms() + (uint64_t)timeout_ms;
    bool found = false;
    uv_mutex_lock(&n->mu);
    for (;;) {
        for (size_t i = 0; i < n->n_msgs && !found; i++)
            found = strcmp(n->msgs[i].from.s, id->s) == 0 &&
                    strncmp(n->msgs[i].text, prefix, strlen(prefix)) == 0;
        uint64_t now = tv_now_ms();
        if (found || now >= end)
            break;
        (void)uv_cond_timedwait(&n->cv, &n->mu, (end - now) * 1000000u);
    }
    uv_mutex_unlock(&n->mu);
    return found;
}

tm2_peer *tnode_find_peer(tnode *n, const tm2_id *id)
{
    tm2_peer *ps[64];
    size_t k = tm2_switch_peers(n->sw, ps, 64);
    if (k > 64)
        k = 64;
    tm2_peer *found = NULL;
    for (size_t i = 0; i < k; i++) {
        if (!found && strcmp(tm2_peer_id(ps[i])->s, id->s) == 0)
            found = tm2_peer_ref(ps[i]);
        tm2_peer_unref(ps[i]);
    }
    return found;
}

size_t tnode_peer_count(tnode *n, const tm2_id *id, bool *has, bool *outbound)
{
    tm2_peer *ps[64];
    size_t total = tm2_switch_peers(n->sw, ps, 64);
    size_t k = total > 64 ? 64 : total;
    if (has)
        *has = false;
    for (size_t i = 0; i < k; i++) {
        if (id && strcmp(tm2_peer_id(ps[i])->s, id->s) == 0) {
            if (has)
                *has = true;
            if (outbound)
                *outbound = tm2_peer_is_outbound(ps[i]);
        }
        tm2_peer_unref(ps[i]);
    }
    return total;
}

void tnode_addr_string(const tnode *n, char *out, size_t cap)
{
    assert_true(tm2_netaddr_format(&n->addr, out, cap) > 0);
}

