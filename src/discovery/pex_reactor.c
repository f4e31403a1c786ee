/* The discovery reactor bound to a switch (see tm2p2p/discovery.h): the
 * logic is pex_core.c; this file turns reactor callbacks (dial failures
 * included), the switch's periodic tick and its dial-failed events into core
 * calls, and core operations into switch and peer calls. Clocks and
 * randomness are the switch's engine's (net/engine.h). Book writes go to a
 * book_writer thread (created with the object when a book path is set,
 * joined at stop or free), so the network thread never waits on the disk
 * but at stop. */
#include "tm2p2p/discovery.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "discovery/book_writer.h"
#include "discovery/discovery_engine.h"
#include "discovery/pex_core.h"
#include "switch/switch_engine.h"

#define RECV_MESSAGE_CAPACITY 5242880
#define SEND_QUEUE_CAPACITY   20

struct tm2_discovery {
    tm2__pex *core;
    tm2__book_writer *writer;   /* NULL: no book path, or stopped */
    tm2_reactor reactor;
    tm2_channel_desc channel;
    tm2_switch *sw;
    tm2__engine *e;             /* the switch's, from start (or given) */
    bool started;
};

static tm2__pex_time now(tm2_discovery *d)
{
    return (tm2__pex_time){.ms = tm2__engine_now_ms(d->e),
                           .unix_s = tm2__engine_wall_ms(d->e) / 1000};
}

static void dlog(tm2_discovery *d, tm2_log_level lv, const char *msg)
{
    const tm2_discovery_config *c = tm2__pex_config(d->core);
    if (c->log && lv <= c->log_level)
        c->log(c->log_user, lv, msg, NULL, 0);
}

/* ---- core operations ------------------------------------------------------------ */

static int op_send(void *user, void *peer, const uint8_t *msg, size_t len)
{
    (void)user;
    return tm2_peer_try_send(peer, TM2_DISCOVERY_CHANNEL, msg, len);
}

static void op_dial(void *user, const tm2_netaddr *addrs, size_t n)
{
    tm2_discovery *d = user;
    if (tm2_switch_dial_peers(d->sw, addrs, n) < 0)
        dlog(d, TM2_LOG_DEBUG, "discovery dials not queued");
}

static void op_stop(void *user, void *peer, int reason)
{
    tm2_discovery *d = user;
    tm2_switch_stop_peer_for_error(d->sw, peer, reason);
}

static void op_counts(void *user, size_t *inbound, size_t *outbound, size_t *dialing)
{
    tm2_discovery *d = user;
    tm2_switch_counts(d->sw, inbound, outbound, dialing);
}

static bool op_is_private(void *user, const tm2_id *id)
{
    tm2_discovery *d = user;
    return tm2_switch_is_private(d->sw, id);
}

static bool op_is_seed(void *user, const tm2_id *id)
{
    tm2_discovery *d = user;
    return tm2_switch_is_seed(d->sw, id);
}

static bool op_is_persistent(void *user, const tm2_id *id)
{
    tm2_discovery *d = user;
    return tm2_switch_is_persistent(d->sw, id);
}

static void op_forget(void *user, void *peer)
{
    (void)user;
    tm2_peer_unref(peer);
}

static int op_save_submit(void *user, char *text, size_t len, uint64_t gen)
{
    tm2_discovery *d = user;
    if (!d->writer) {
        free(text);
        return TM2_ECLOSED;
    }
    return tm2__book_writer_submit(d->writer, text, len, gen);
}

static void op_save_collect(void *user, tm2__pex_save_result *out)
{
    tm2_discovery *d = user;
    tm2__book_writer_collect(d->writer, out);
}

static void op_save_drain(void *user)
{
    tm2_discovery *d = user;
    tm2__book_writer_drain(d->writer);
}

/* Before the switch's engine is known (tm2_discovery_new making the book:
 * its placement key and seed), the process's randomness. */
static void op_random(void *user, void *buf, size_t len)
{
    tm2_discovery *d = user;
    if (d->e)
        tm2__engine_random(d->e, buf, len);
    else
        randombytes_buf(buf, len);
}

/* ---- reactor callbacks --------------------------------------------------------- */

/* Failures that say nothing about the address (our own limits, a queue,
 * the peer already connected through another dial, a network group we
 * already hold) leave the book alone. */
static bool address_failed(int reason)
{
    switch (reason) {
    case TM2_ENETGROUP:
    case TM2_ELIMIT:
    case TM2_EFULL:
    case TM2_ECLOSED:
    case TM2_ENOMEM:
    case TM2_EDUPLICATE:
        return false;
    default:
        return true;
    }
}

static void on_tick(tm2_switch *sw, void *user)
{
    (void)sw;
    tm2_discovery *d = user;
    tm2__pex_tick(d->core, now(d));
}

static void r_dial_failed(tm2_switch *sw, const tm2_netaddr *addr, int err, void *user)
{
    (void)sw;
    tm2_discovery *d = user;
    if (d->started && addr->id.s[0] && address_failed(err))
        tm2__pex_dial_failed(d->core, &addr->id, now(d));
}

static int r_start(tm2_switch *sw, void *user)
{
    tm2_discovery *d = user;
    if (d->started)
        return TM2_ESTATE;
    d->started = true;
    d->sw = sw;
    if (!d->e)
        d->e = tm2__switch_engine(sw);
    int rc = tm2_switch_every(sw, tm2__pex_config(d->core)->interval_ms, on_tick, d);
    if (rc < 0)
        return rc;
    tm2__pex_start(d->core, tm2_switch_id(sw), now(d));
    return 0;
}

static void r_stop(tm2_switch *sw, void *user)
{
    (void)sw;
    tm2_discovery *d = user;
    if (!d->started)
        return;
    tm2__pex_stop(d->core, now(d));
    /* The final book is written (the core drained the writer). */
    tm2__book_writer_free(d->writer);
    d->writer = NULL;
}

static void r_add_peer(tm2_peer *p, void *user)
{
    tm2_discovery *d = user;
    tm2__pex_peer_info info;
    memset(&info, 0, sizeof info);
    info.id = *tm2_peer_id(p);
    info.outbound = tm2_peer_is_outbound(p);
    info.slot_out = !info.outbound && tm2_peer_in_outbound_slot(p);
    info.persistent = tm2_peer_is_persistent(p);
    info.is_private = tm2_peer_is_private(p);
    const tm2_node_info *ni = tm2_peer_node_info(p);
    if (ni) {
        info.has_channel = tm2_node_info_has_channel(ni, TM2_DISCOVERY_CHANNEL);
        /* Only an address of the peer's own ID is its address to share. */
        info.has_addr = ni->has_net_address && strcmp(ni->net_address.id.s, info.id.s) == 0 &&
                        tm2_netaddr_validate(&ni->net_address) == 0;
        if (info.has_addr)
            info.addr = ni->net_address;
    }
    tm2_peer_socket_addr(p, &info.remote);
    if (info.outbound)
        info.dialled = info.remote;
    tm2_peer_ref(p);
    if (tm2__pex_add_peer(d->core, p, &info, now(d)) < 0) {
        tm2_peer_unref(p);
        dlog(d, TM2_LOG_ERROR, "discovery cannot track a peer: out of memory");
    }
}

static void r_remove_peer(tm2_peer *p, int reason, void *user)
{
    (void)reason;
    tm2_discovery *d = user;
    if (tm2__pex_remove_peer(d->core, p))
        tm2_peer_unref(p);
}

static void r_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    tm2_discovery *d = user;
    if (ch == TM2_DISCOVERY_CHANNEL)
        tm2__pex_receive(d->core, p, msg, len, now(d));
}

/* ---- public API -------------------------------------------------------------- */

int tm2__discovery_new_on(const tm2_discovery_config *cfg, tm2__engine *e, tm2_discovery **out)
{
    if (!cfg || !out)
        return TM2_EINVAL;
    *out = NULL;
    tm2_discovery *d = calloc(1, sizeof *d);
    if (!d)
        return TM2_ENOMEM;
    d->e = e;
    tm2__pex_ops ops = {
        .user = d,
        .send = op_send,
        .dial = op_dial,
        .stop = op_stop,
        .counts = op_counts,
        .is_private = op_is_private,
        .is_seed = op_is_seed,
        .is_persistent = op_is_persistent,
        .forget = op_forget,
        .save_submit = op_save_submit,
        .save_collect = op_save_collect,
        .save_drain = op_save_drain,
        .random = op_random,
    };
    /* The book's times are checked against this (no engine yet: the
     * system's clock). */
    int64_t unix_now = e ? tm2__engine_wall_ms(e) / 1000 : (int64_t)time(NULL);
    int rc = tm2__pex_new(cfg, &ops, unix_now, &d->core);
    if (rc < 0) {
        free(d);
        return rc;
    }
    const char *path = tm2__pex_config(d->core)->addrbook_path;
    if (path) {
        rc = tm2__book_writer_new(path, NULL, NULL, &d->writer);
        if (rc < 0) {
            tm2__pex_free(d->core);
            free(d);
            return rc;
        }
    }
    d->channel = (tm2_channel_desc){
        .id = TM2_DISCOVERY_CHANNEL,
        .priority = 1,
        .send_queue_capacity = SEND_QUEUE_CAPACITY,
        .recv_message_capacity = RECV_MESSAGE_CAPACITY,
    };
    d->reactor = (tm2_reactor){
        .name = "discovery",
        .channels = &d->channel,
        .n_channels = 1,
        .user = d,
        .start = r_start,
        .stop = r_stop,
        .add_peer = r_add_peer,
        .remove_peer = r_remove_peer,
        .receive = r_receive,
        .on_dial_failed = r_dial_failed,
    };
    *out = d;
    return 0;
}

int tm2_discovery_new(const tm2_discovery_config *cfg, tm2_discovery **out)
{
    return tm2__discovery_new_on(cfg, NULL, out);
}

const tm2_reactor *tm2_discovery_reactor(tm2_discovery *d) { return d ? &d->reactor : NULL; }

void tm2_discovery_get_stats(const tm2_discovery *d, tm2_discovery_stats *out)
{
    if (!out)
        return;
    tm2__pex_stats(d ? d->core : NULL, out);
}

void tm2_discovery_free(tm2_discovery *d)
{
    if (!d)
        return;
    tm2__book_writer_free(d->writer);
    tm2__pex_free(d->core);
    free(d);
}
