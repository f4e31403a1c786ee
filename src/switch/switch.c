/* The switch: lifecycle, the network thread, commands from other threads,
 * broadcast and the snapshot other threads read (see switch.h). The network
 * thread is its engine's: a libuv engine and a thread of its own, or a
 * given engine (switch/switch_engine.h). */
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/thread.h"
#include "switch/switch_engine.h"
#include "switch/switch_internal.h"

/* The libuv engine and thread of a switch made without an engine. */
struct tm2__sw_own {
    uv_loop_t loop;
    tm2__uv_engine ue;
    uv_thread_t thread;
};

/* Dial requests queued at once beyond the persistent peers and seeds. */
#define DIALQ_EXTRA           1024u

/* ---- logging ----------------------------------------------------------------------- */

bool tm2__sw_log_on(const tm2_switch *sw, tm2_log_level lv)
{
    return sw->log && lv <= sw->log_level;
}

void tm2__sw_log(tm2_switch *sw, tm2_log_level lv, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm2__vlog(sw->log, sw->log_user, sw->log_level, lv, msg, fmt, ap);
    va_end(ap);
}

const char *tm2__sw_addr_str(const tm2_netaddr *a, char *buf, size_t cap)
{
    if (tm2_netaddr_format(a, buf, cap) < 0)
        snprintf(buf, cap, "?");
    return buf;
}

void tm2__sw_publish(tm2_switch *sw, tm2_event_type type, const tm2_id *id,
                     const tm2_netaddr *addr, bool outbound, int reason, const char *text)
{
    tm2_event ev;
    tm2__event_fill(&ev, tm2__sw_now(sw), tm2__sw_wall(sw), type, id, addr, outbound, reason,
                    text);
    tm2__sw_count_event(sw, &ev);
    tm2__events_publish(sw->events, &ev);
    if (sw->event_hook)
        sw->event_hook(sw->event_hook_user, &ev);
    /* Published on the network thread only: discovery hears of failed
     * dials without polling a subscription. */
    if (type == TM2_EVENT_DIAL_FAILED && addr) {
        for (size_t i = 0; i < sw->n_reactors; i++) {
            tm2__reactor_slot *s = &sw->reactors[i];
            if (s->started && s->r.on_dial_failed)
                s->r.on_dial_failed(sw, addr, reason, s->r.user);
        }
    }
}

/* ---- small helpers --------------------------------------------------------------------- */

uint64_t tm2__sw_now(tm2_switch *sw) { return tm2__engine_now_ms(sw->e); }

int64_t tm2__sw_wall(tm2_switch *sw) { return tm2__engine_wall_ms(sw->e); }

double tm2__sw_rand01(tm2_switch *sw)
{
    uint32_t r;
    tm2__engine_random(sw->e, &r, sizeof r);
    return (double)r / 4294967296.0;
}

static tm2__configured *find_configured(tm2__configured *list, size_t n, const tm2_id *id,
                                        size_t *idx)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i].id.s, id->s) == 0) {
            if (idx)
                *idx = i;
            return &list[i];
        }
    }
    return NULL;
}

bool tm2__sw_is_persistent_id(const tm2_switch *sw, const tm2_id *id, size_t *idx)
{
    return find_configured(sw->persistent, sw->n_persistent, id, idx) != NULL;
}

tm2__configured *tm2__sw_configured(tm2_switch *sw, const tm2_id *id)
{
    tm2__configured *c = find_configured(sw->persistent, sw->n_persistent, id, NULL);
    return c ? c : find_configured(sw->seeds, sw->n_seeds, id, NULL);
}

/* The configured lists are immutable after tm2_switch_new: any thread. */
bool tm2_switch_is_persistent(const tm2_switch *sw, const tm2_id *id)
{
    return sw && id && tm2__sw_is_persistent_id(sw, id, NULL);
}

bool tm2_switch_is_seed(const tm2_switch *sw, const tm2_id *id)
{
    return sw && id && find_configured(sw->seeds, sw->n_seeds, id, NULL) != NULL;
}

bool tm2_switch_is_unconditional(const tm2_switch *sw, const tm2_id *id)
{
    if (!sw || !id)
        return false;
    for (size_t i = 0; i < sw->n_uncond; i++)
        if (strcmp(sw->uncond_ids[i].s, id->s) == 0)
            return true;
    return false;
}

bool tm2_switch_is_private(const tm2_switch *sw, const tm2_id *id)
{
    if (!sw || !id)
        return false;
    for (size_t i = 0; i < sw->n_priv; i++)
        if (strcmp(sw->priv_ids[i].s, id->s) == 0)
            return true;
    return false;
}

void tm2__sw_update_counts(tm2_switch *sw)
{
    uv_mutex_lock(&sw->snap_lock);
    sw->snap_in = sw->n_in;
    sw->snap_out = sw->n_out;
    sw->snap_queued = tm2__dialq_count(&sw->dialq);
    sw->snap_dialing = sw->snap_queued + tm2__peer_set_count(&sw->inflight);
    sw->snap_persistent = sw->n_persistent_up;
    sw->snap_private = sw->n_private_up;
    sw->snap_uncond = sw->n_uncond_in + sw->n_uncond_out;
    uv_mutex_unlock(&sw->snap_lock);
}

void tm2__sw_wake(tm2_switch *sw)
{
    /* On the network thread a task of its own: a waker alone need not keep
     * a loop running (the libuv engine's do not), a queued task does. */
    if (tm2__mcs_loop_on_thread(&sw->ml)) {
        if (!sw->finished)
            tm2__defer(sw->e, &sw->wake_task);
        return;
    }
    tm2__waker_send(&sw->wake);
}

/* ---- the own engine ------------------------------------------------------------------ */

static int own_new(tm2_switch *sw)
{
    struct tm2__sw_own *o = calloc(1, sizeof *o);
    if (!o)
        return TM2_ENOMEM;
    if (uv_loop_init(&o->loop) != 0) {
        free(o);
        return TM2_EIO;
    }
    int r = tm2__uv_engine_init(&o->ue, &o->loop);
    if (r) {
        uv_loop_close(&o->loop);
        free(o);
        return r;
    }
    sw->own = o;
    sw->e = &o->ue.e;
    return 0;
}

/* After the network thread ended (or never ran). */
static void own_free(tm2_switch *sw)
{
    struct tm2__sw_own *o = sw->own;
    if (!o)
        return;
    tm2__uv_engine_close(&o->ue);
    uv_run(&o->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&o->loop) != 0)
        tm2__sw_log(sw, TM2_LOG_ERROR, "switch loop closed with handles open", "");
    free(o);
    sw->own = NULL;
}

/* ---- tm2_switch_new ----------------------------------------------------------------- */

static char *dup_or(const char *s, const char *def)
{
    const char *v = s ? s : def;
    size_t n = strlen(v);
    char *d = malloc(n + 1);
    if (d)
        memcpy(d, v, n + 1);
    return d;
}

static void free_config_copies(tm2_switch *sw)
{
    free(sw->listen_addr);
    tm2__sw_configured_free(sw->persistent, sw->n_persistent);
    tm2__sw_configured_free(sw->seeds, sw->n_seeds);
    free(sw->priv_ids);
    free(sw->uncond_ids);
    free(sw->ban_file);
    tm2__rate_free(&sw->rate_ip);
    tm2__rate_free(&sw->rate_subnet);
    if (sw->reactors) {
        for (size_t i = 0; i < sw->n_reactors; i++) {
            free((char *)sw->reactors[i].r.name);
            free((tm2_channel_desc *)sw->reactors[i].r.channels);
        }
    }
    free(sw->reactors);
    free(sw->descs);
    free(sw->app_version);
    free(sw->network);
    free(sw->moniker);
    free(sw->tx_index);
    free(sw->rpc_address);
    free(sw->software);
    free(sw->version);
}

/* Copies a configured list: an ID listed twice keeps its last address (a
 * warning), ourselves are left out. */
static int copy_configured(tm2_switch *sw, const char *const *specs, size_t n, const char *what,
                           tm2__configured **out, size_t *n_out)
{
    if (!n)
        return 0;
    tm2__configured *list = calloc(n, sizeof *list);
    if (!list)
        return TM2_ENOMEM;
    *out = list;
    for (size_t i = 0; i < n; i++) {
        tm2__configured c;
        int r = tm2__sw_configured_init(&c, specs[i]);
        if (r)
            return r == TM2_ENOMEM ? r : TM2_EINVAL;
        if (strcmp(c.id.s, sw->id.s) == 0) {
            free(c.host);
            continue;
        }
        tm2__configured *dup = find_configured(list, *n_out, &c.id, NULL);
        if (dup) {
            tm2__sw_log(sw, TM2_LOG_WARN, "configured peer listed twice: the last address is kept",
                        "list=%s peer=%s", what, c.id.s);
            free(dup->host);
            *dup = c;
            continue;
        }
        list[(*n_out)++] = c;
    }
    return 0;
}

static int copy_reactors(tm2_switch *sw, const tm2_switch_config *cfg)
{
    for (int i = 0; i < 256; i++)
        sw->ch_owner[i] = -1;
    memset(sw->ch_index, -1, sizeof sw->ch_index);
    if (cfg->n_reactors && !cfg->reactors)
        return TM2_EINVAL;
    if (cfg->n_reactors > TM2_NODE_INFO_MAX_CHANNELS)
        return TM2_EINVAL;
    size_t total = 0;
    for (size_t i = 0; i < cfg->n_reactors; i++) {
        const tm2_reactor *r = &cfg->reactors[i];
        if (r->n_channels && !r->channels)
            return TM2_EINVAL;
        if (r->n_channels > TM2_NODE_INFO_MAX_CHANNELS)
            return TM2_EINVAL;
        for (size_t j = 0; j < r->n_channels; j++) {
            uint8_t ch = r->channels[j].id;
            if (sw->ch_owner[ch] >= 0)
                return TM2_EEXIST;
            sw->ch_owner[ch] = (int16_t)i;
            total++;
        }
    }
    /* A NodeInfo lists at most 16. With none, every peer is incompatible
     * (no common channel), but the node still listens and dials. */
    if (total > TM2_NODE_INFO_MAX_CHANNELS)
        return TM2_EINVAL;
    if (cfg->n_reactors && !(sw->reactors = calloc(cfg->n_reactors, sizeof *sw->reactors)))
        return TM2_ENOMEM;
    if (total && !(sw->descs = calloc(total, sizeof *sw->descs)))
        return TM2_ENOMEM;
    sw->n_reactors = cfg->n_reactors;
    for (size_t i = 0; i < cfg->n_reactors; i++) {
        const tm2_reactor *r = &cfg->reactors[i];
        tm2_reactor *d = &sw->reactors[i].r;
        *d = *r;
        d->name = dup_or(r->name, "");
        tm2_channel_desc *ch = NULL;
        if (r->n_channels && !(ch = malloc(r->n_channels * sizeof *ch)))
            return TM2_ENOMEM;
        if (ch)
            memcpy(ch, r->channels, r->n_channels * sizeof *ch);
        d->channels = ch;
        if (!d->name)
            return TM2_ENOMEM;
        for (size_t j = 0; j < r->n_channels; j++) {
            sw->ch_index[r->channels[j].id] = (int8_t)sw->n_descs;
            sw->descs[sw->n_descs] = r->channels[j];
            sw->ni_channels[sw->n_descs] = r->channels[j].id;
            tm2__bit_set(sw->our_ch, r->channels[j].id);
            sw->n_descs++;
        }
    }
    return 0;
}

static int build_node_info(tm2_switch *sw, const tm2_switch_config *cfg)
{
    sw->app_version = dup_or(cfg->app_version, "");
    sw->network = dup_or(cfg->network, "");
    sw->moniker = dup_or(cfg->moniker, "");
    sw->tx_index = dup_or(cfg->tx_index, "off");
    sw->rpc_address = dup_or(cfg->rpc_address, "");
    sw->software = dup_or(cfg->software, "");
    sw->version = dup_or(cfg->version, TM2_PROTOCOL_VERSION);
    if (!sw->app_version || !sw->network || !sw->moniker || !sw->tx_index || !sw->rpc_address ||
        !sw->software || !sw->version)
        return TM2_ENOMEM;
    static const char *const names[5] = {"abci", "app", "bft", "blockchain", "p2p"};
    for (size_t i = 0; i < 5; i++) {
        sw->versions[i].name = names[i];
        sw->versions[i].version = i == 1 ? sw->app_version : TM2_PROTOCOL_VERSION;
        sw->versions[i].optional = false;
    }
    tm2_node_info *ni = &sw->ni;
    ni->versions = sw->versions;
    ni->n_versions = 5;
    ni->has_net_address = true;
    /* Until bound: the external address, else the configured listen one
     * (port 0 included), else the unspecified address. */
    memset(&ni->net_address, 0, sizeof ni->net_address);
    if (sw->has_external) {
        ni->net_address = sw->external;
    } else if (sw->listen_addr) {
        int r = tm2_netaddr_parse(sw->listen_addr, TM2_NETADDR_NO_ID, &ni->net_address);
        if (r)
            return TM2_EADDR;
    } else {
        ni->net_address.ip[10] = 0xff;
        ni->net_address.ip[11] = 0xff;
    }
    ni->net_address.id = sw->id;
    ni->network = sw->network;
    ni->software = sw->software;
    ni->version = sw->version;
    ni->channels = sw->ni_channels;
    ni->n_channels = sw->n_descs;
    ni->moniker = sw->moniker;
    ni->tx_index = sw->tx_index;
    ni->rpc_address = sw->rpc_address;
    char why[128];
    if (tm2_node_info_validate(ni, why, sizeof why) != 0) {
        tm2__sw_log(sw, TM2_LOG_ERROR, "invalid switch config: node info", "reason=%s",
                    why);
        return TM2_EINVAL;
    }
    int n = tm2_node_info_encode(ni, NULL, 0);
    if (n < 0)
        return TM2_EINVAL;
    return 0;
}

/* Reads the ban file (the caller's thread): a missing file is an empty
 * list, one that does not parse is moved aside. */
static int load_bans(tm2_switch *sw)
{
    tm2_ban *b = NULL;
    size_t n = 0;
    char why[512];
    int r = tm2_ban_file_load(sw->ban_file, &b, &n, why, sizeof why);
    if (r == TM2_ENOTFOUND)
        return 0;
    if (r == TM2_EDECODE || r == TM2_ETOOBIG) {
        char bad[4200];
        snprintf(bad, sizeof bad, "%s.corrupt", sw->ban_file);
        bool moved = rename(sw->ban_file, bad) == 0;
        tm2__sw_log(sw, TM2_LOG_ERROR, "ban file unreadable, starting without bans",
                    "file=%s reason=%s moved_to=%s", sw->ban_file, why, moved ? bad : "(not moved)");
        return 0;
    }
    if (r) {
        tm2__sw_log(sw, TM2_LOG_ERROR, "cannot read the ban file", "file=%s reason=%s",
                    sw->ban_file, why);
        return r == TM2_ENOMEM ? r : TM2_EIO;
    }
    r = tm2__bans_replace(&sw->bans, b, n, tm2__sw_wall(sw));
    free(b);
    if (!r)
        sw->bans_saved_gen = tm2__bans_gen(&sw->bans);
    tm2__sw_log(sw, TM2_LOG_INFO, "bans loaded", "file=%s count=%zu", sw->ban_file,
                tm2__bans_copy(&sw->bans, tm2__sw_wall(sw), NULL, 0));
    return r;
}

static void stop_fn(tm2__task *k);
static void wake_fn(tm2__task *k);

static int switch_new(const tm2_switch_config *cfg, tm2__engine *e, tm2_switch **out)
{
    if (!cfg || !out)
        return TM2_EINVAL;
    *out = NULL;
    const char *field = NULL;
    if (tm2_switch_config_check(cfg, &field) != 0) {
        tm2__log(cfg->log, cfg->log_user, cfg->log_level, TM2_LOG_ERROR,
                  "invalid switch config", "field=%s", field);
        return TM2_EINVAL;
    }
    if (sodium_init() < 0)
        return TM2_EIO;
    tm2_switch *sw = calloc(1, sizeof *sw);
    if (!sw)
        return TM2_ENOMEM;
    sw->e = e;
    if (!e) {
        int r = own_new(sw);
        if (r) {
            free(sw);
            return r;
        }
    }
    sw->stop_task.fn = stop_fn;
    sw->stop_task.data = sw;
    sw->wake_task.fn = wake_fn;
    sw->wake_task.data = sw;
    sw->key = cfg->key;
    tm2_node_key_id(&sw->key, &sw->id);
    sw->log = cfg->log;
    sw->log_user = cfg->log_user;
    sw->log_level = cfg->log_level;
    sw->max_inbound = cfg->max_inbound;
    sw->max_outbound = cfg->max_outbound;
    sw->max_pending_inbound = cfg->max_pending_inbound;
    sw->handshake_timeout_ms = cfg->handshake_timeout_ms;
    sw->dial_timeout_ms = cfg->dial_timeout_ms;
    sw->allow_duplicate_ip = cfg->allow_duplicate_ip;
    sw->redial_base_ms = cfg->redial_base_ms;
    sw->redial_max_ms = cfg->redial_max_ms;
    sw->redial_stable_ms = cfg->redial_stable_ms;
    sw->redial_scan_ms = cfg->redial_scan_ms;
    sw->seed_interval_ms = cfg->seed_interval_ms;
    sw->resolve = cfg->resolve;
    sw->resolve_user = cfg->resolve_user;
    sw->mconn = cfg->mconn;
    sw->max_pending_in_ip = cfg->max_pending_inbound_per_ip;
    sw->accept_ip_rate = cfg->accept_ip_rate;
    sw->accept_ip_burst = cfg->accept_ip_burst;
    sw->accept_subnet_rate = cfg->accept_subnet_rate;
    sw->accept_subnet_burst = cfg->accept_subnet_burst;
    sw->max_in_ip = cfg->max_inbound_per_ip;
    sw->max_in_subnet = cfg->max_inbound_per_subnet;
    sw->outbound_diversity = cfg->outbound_diversity;
    sw->evict_inbound = cfg->evict_inbound;
    sw->limit_local = cfg->limit_local_addrs;
    sw->evict = (tm2__evict_params){.protect_groups = cfg->evict_protect_groups,
                                    .protect_latency = cfg->evict_protect_latency,
                                    .protect_active = cfg->evict_protect_active,
                                    .protect_oldest_pct = cfg->evict_protect_oldest_pct};
    sw->ban_duration_ms = cfg->ban_duration_ms;
    tm2__engine_random(sw->e, sw->group_hash_key, sizeof sw->group_hash_key);
    uint8_t hk[5][16];              /* hash keys of the tables */
    tm2__engine_random(sw->e, hk, sizeof hk);
    bool bans_init = false;

    int r = 0;
    if (cfg->listen_addr && !(sw->listen_addr = dup_or(cfg->listen_addr, ""))) {
        r = TM2_ENOMEM;
        goto fail;
    }
    if (cfg->external_addr) {
        /* The caller's thread: a host name may be resolved here, once. */
        if (tm2_netaddr_parse(cfg->external_addr, TM2_NETADDR_NO_ID | TM2_NETADDR_RESOLVE,
                              &sw->external) != 0) {
            r = TM2_EADDR;
            goto fail;
        }
        sw->has_external = true;
    }
    if ((r = copy_configured(sw, cfg->persistent_peers, cfg->n_persistent_peers,
                             "persistent peer", &sw->persistent, &sw->n_persistent)) != 0 ||
        (r = copy_configured(sw, cfg->seeds, cfg->n_seeds, "seed", &sw->seeds, &sw->n_seeds)) != 0)
        goto fail;
    if (cfg->n_private_peer_ids) {
        sw->priv_ids = calloc(cfg->n_private_peer_ids, sizeof *sw->priv_ids);
        if (!sw->priv_ids) {
            r = TM2_ENOMEM;
            goto fail;
        }
        for (size_t i = 0; i < cfg->n_private_peer_ids; i++) {
            sw->priv_ids[i] = cfg->private_peer_ids[i];
            sw->priv_ids[i].s[TM2_ID_LEN] = '\0';
        }
        sw->n_priv = cfg->n_private_peer_ids;
    }
    if (cfg->n_unconditional_peer_ids) {
        sw->uncond_ids = calloc(cfg->n_unconditional_peer_ids, sizeof *sw->uncond_ids);
        if (!sw->uncond_ids) {
            r = TM2_ENOMEM;
            goto fail;
        }
        for (size_t i = 0; i < cfg->n_unconditional_peer_ids; i++) {
            sw->uncond_ids[i] = cfg->unconditional_peer_ids[i];
            sw->uncond_ids[i].s[TM2_ID_LEN] = '\0';
        }
        sw->n_uncond = cfg->n_unconditional_peer_ids;
    }
    if ((sw->accept_ip_rate &&
         (r = tm2__rate_init(&sw->rate_ip, TM2_ACCEPT_TABLE_ENTRIES, hk[0])) != 0) ||
        (sw->accept_subnet_rate &&
         (r = tm2__rate_init(&sw->rate_subnet, TM2_ACCEPT_TABLE_ENTRIES, hk[1])) != 0))
        goto fail;
    if ((r = tm2__bans_init(&sw->bans)) != 0)
        goto fail;
    bans_init = true;
    if (cfg->ban_file && (!(sw->ban_file = dup_or(cfg->ban_file, "")) ||
                          (r = load_bans(sw)) != 0)) {
        r = sw->ban_file ? r : TM2_ENOMEM;
        goto fail;
    }
    if ((r = copy_reactors(sw, cfg)) != 0)
        goto fail;
    if ((r = build_node_info(sw, cfg)) != 0)
        goto fail;
    if ((r = tm2__events_new(&sw->events)) != 0)
        goto fail;
    if (uv_mutex_init(&sw->life_lock) != 0) {
        r = TM2_EIO;
        goto fail;
    }
    if (uv_cond_init(&sw->life_cond) != 0) {
        uv_mutex_destroy(&sw->life_lock);
        r = TM2_EIO;
        goto fail;
    }
    if (uv_mutex_init(&sw->cmd_lock) != 0) {
        r = TM2_EIO;
        goto fail_life;
    }
    if (uv_mutex_init(&sw->snap_lock) != 0) {
        uv_mutex_destroy(&sw->cmd_lock);
        r = TM2_EIO;
        goto fail_life;
    }
    sw->cmds_tail = &sw->cmds;
    if ((r = tm2__peer_set_init(&sw->peers, hk[2])) != 0)
        goto fail_locks;
    if ((r = tm2__peer_set_init(&sw->inflight, hk[3])) != 0) {
        tm2__peer_set_free(&sw->peers);
        goto fail_locks;
    }
    if ((r = tm2__dialq_init(&sw->dialq, DIALQ_EXTRA + sw->n_persistent + sw->n_seeds, hk[4])) !=
        0) {
        tm2__peer_set_free(&sw->inflight);
        tm2__peer_set_free(&sw->peers);
        goto fail_locks;
    }
    *out = sw;
    return 0;

fail_locks:
    uv_mutex_destroy(&sw->snap_lock);
    uv_mutex_destroy(&sw->cmd_lock);
fail_life:
    uv_cond_destroy(&sw->life_cond);
    uv_mutex_destroy(&sw->life_lock);
fail:
    if (bans_init)
        tm2__bans_free(&sw->bans);
    if (sw->events)
        tm2__events_free(sw->events);
    free_config_copies(sw);
    tm2_node_key_wipe(&sw->key);
    own_free(sw);
    free(sw);
    return r;
}

int tm2_switch_new(const tm2_switch_config *cfg, tm2_switch **out)
{
    return switch_new(cfg, NULL, out);
}

int tm2__switch_new_on(const tm2_switch_config *cfg, tm2__engine *e, tm2_switch **out)
{
    if (!e)
        return TM2_EINVAL;
    return switch_new(cfg, e, out);
}

tm2__engine *tm2__switch_engine(tm2_switch *sw) { return sw->e; }

void tm2__switch_set_event_hook(tm2_switch *sw, void (*fn)(void *user, const tm2_event *ev),
                                void *user)
{
    sw->event_hook = fn;
    sw->event_hook_user = user;
}

/* ---- accessors ---------------------------------------------------------------------- */

const tm2_id *tm2_switch_id(const tm2_switch *sw) { return sw ? &sw->id : NULL; }

const tm2_node_info *tm2_switch_node_info(const tm2_switch *sw) { return sw ? &sw->ni : NULL; }

int tm2_switch_listen_addr(const tm2_switch *sw, tm2_netaddr *out)
{
    if (!sw || !out)
        return TM2_EINVAL;
    uv_mutex_lock((uv_mutex_t *)&sw->life_lock);
    bool bound = sw->bound && sw->state == SW_RUNNING;
    if (bound)
        *out = sw->bound_addr;
    uv_mutex_unlock((uv_mutex_t *)&sw->life_lock);
    return bound ? 0 : TM2_ESTATE;
}

int tm2_switch_subscribe(tm2_switch *sw, unsigned mask, const tm2_id *peer_id, size_t queue_cap,
                         tm2_subscription **out)
{
    if (!sw)
        return TM2_EINVAL;
    return tm2__events_subscribe(sw->events, mask, peer_id, queue_cap, out);
}

size_t tm2_switch_peers(tm2_switch *sw, tm2_peer **out, size_t cap)
{
    if (!sw)
        return 0;
    uv_mutex_lock(&sw->snap_lock);
    size_t n = sw->n_snap;
    for (size_t i = 0; i < n && i < cap && out; i++)
        out[i] = tm2_peer_ref(sw->snap[i]);
    uv_mutex_unlock(&sw->snap_lock);
    return n;
}

void tm2_switch_counts(tm2_switch *sw, size_t *inbound, size_t *outbound, size_t *dialing)
{
    if (!sw)
        return;
    uv_mutex_lock(&sw->snap_lock);
    if (inbound)
        *inbound = sw->snap_in;
    if (outbound)
        *outbound = sw->snap_out;
    if (dialing)
        *dialing = sw->snap_dialing;
    uv_mutex_unlock(&sw->snap_lock);
}

/* Synchronous on the caller's thread: the bytes are copied once into one
 * shared message and queued on every peer without waiting; the snapshot
 * lock keeps each listed peer's connection alive meanwhile. */
int tm2_switch_broadcast(tm2_switch *sw, uint8_t ch, const void *data, size_t len)
{
    if (!sw || (len && !data))
        return TM2_EINVAL;
    if (!tm2__bit(sw->our_ch, ch))
        return TM2_ECHANNEL;
    tm2__msg *m = tm2__msg_new(data, len);
    if (!m)
        return TM2_ENOMEM;
    int queued = 0;
    uv_mutex_lock(&sw->snap_lock);
    for (size_t i = 0; i < sw->n_snap; i++) {
        tm2_peer *p = sw->snap[i];
        if (!tm2__bit(p->their_ch, ch) || !atomic_load(&p->running))
            continue;
        if (tm2__mcs_try_send(&p->conn->mcs, ch, m) == 0) {
            tm2__peer_count(p, ch, len, true);
            queued++;
        }
    }
    uv_mutex_unlock(&sw->snap_lock);
    tm2__msg_unref(m);
    return queued;
}

/* ---- commands ------------------------------------------------------------------------- */

/* Queues c for the loop; false (c not taken) once the loop takes no more.
 * On a given engine as on libuv, commands run on a later turn.
 * The wake-up is sent under cmd_lock: the loop closes its waker only
 * after closing the list under the same lock, so no send can hit a closed
 * handle. */
static bool post(tm2_switch *sw, tm2__cmd *c)
{
    c->next = NULL;
    uv_mutex_lock(&sw->cmd_lock);
    bool ok = !sw->cmd_closed;
    if (ok) {
        *sw->cmds_tail = c;
        sw->cmds_tail = &c->next;
        if (sw->cmd_live)
            tm2__waker_send(&sw->wake);
    }
    uv_mutex_unlock(&sw->cmd_lock);
    return ok;
}

static void cmd_free(tm2__cmd *c)
{
    if (c->peer)
        tm2_peer_unref(c->peer);
    free(c->addrs);
    free(c->every);
    free(c);
}

static bool our_addr(tm2_switch *sw, tm2_netaddr *a)
{
    uv_mutex_lock(&sw->life_lock);
    bool ok = sw->bound;
    if (ok)
        *a = sw->bound_addr;
    uv_mutex_unlock(&sw->life_lock);
    return ok;
}

static bool snap_has(tm2_switch *sw, const tm2_id *id)
{
    bool has = false;
    uv_mutex_lock(&sw->snap_lock);
    for (size_t i = 0; i < sw->n_snap && !has; i++)
        has = strcmp(sw->snap[i]->id.s, id->s) == 0;
    uv_mutex_unlock(&sw->snap_lock);
    return has;
}

bool tm2__sw_is_self(tm2_switch *sw, const tm2_netaddr *a)
{
    if (strcmp(a->id.s, sw->id.s) == 0)
        return true;
    tm2_netaddr mine;
    if (our_addr(sw, &mine) && tm2_netaddr_same(&mine, a))
        return true;
    mine = sw->ni.net_address;
    return !tm2_netaddr_is_unspecified(&mine) && mine.port && tm2_netaddr_same(&mine, a);
}

int tm2_switch_dial_peers(tm2_switch *sw, const tm2_netaddr *addrs, size_t n)
{
    if (!sw || (n && !addrs))
        return TM2_EINVAL;
    tm2__cmd *c = calloc(1, sizeof *c);
    if (!c)
        return TM2_ENOMEM;
    c->type = CMD_DIAL;
    c->addrs = n ? malloc(n * sizeof *c->addrs) : NULL;
    if (n && !c->addrs) {
        free(c);
        return TM2_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const tm2_netaddr *a = &addrs[i];
        if (!a->id.s[0] || tm2_id_validate(a->id.s) != 0) {
            tm2__sw_log(sw, TM2_LOG_DEBUG, "dial skipped: address without valid ID", "");
            continue;
        }
        if (tm2__sw_is_self(sw, a)) {
            char b[TM2_NETADDR_STRLEN + 1];
            tm2__sw_log(sw, TM2_LOG_DEBUG, "dial skipped: ourselves", "addr=%s",
                        tm2__sw_addr_str(a, b, sizeof b));
            continue;
        }
        if (snap_has(sw, &a->id) || tm2__sw_is_persistent_id(sw, &a->id, NULL))
            continue;
        c->addrs[c->n++] = *a;
    }
    int taken = (int)c->n;
    if (!c->n) {
        cmd_free(c);
        return 0;
    }
    uv_mutex_lock(&sw->life_lock);
    bool stopped = sw->state == SW_STOPPED;
    uv_mutex_unlock(&sw->life_lock);
    if (stopped || !post(sw, c)) {
        cmd_free(c);
        return TM2_ECLOSED;
    }
    return taken;
}

void tm2_switch_stop_peer_for_error(tm2_switch *sw, tm2_peer *p, int err)
{
    if (!sw || !p || p->sw != sw)
        return;
    uv_mutex_lock(&sw->life_lock);
    bool running = sw->state == SW_RUNNING && sw->handles_init;
    uv_mutex_unlock(&sw->life_lock);
    if (running && tm2__mcs_loop_on_thread(&sw->ml)) {
        tm2__sw_peer_remove(sw, p, err, NULL);
        return;
    }
    tm2__cmd *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->type = CMD_STOP_PEER;
    c->peer = tm2_peer_ref(p);
    c->err = err;
    if (!post(sw, c))
        cmd_free(c);
}

int tm2_switch_every(tm2_switch *sw, uint32_t interval_ms,
                     void (*fn)(tm2_switch *sw, void *user), void *user)
{
    if (!sw || !fn || !interval_ms)
        return TM2_EINVAL;
    tm2__cmd *c = calloc(1, sizeof *c);
    tm2__every *e = calloc(1, sizeof *e);
    if (!c || !e) {
        free(c);
        free(e);
        return TM2_ENOMEM;
    }
    e->interval_ms = interval_ms;
    e->fn = fn;
    e->user = user;
    e->sw = sw;
    c->type = CMD_EVERY;
    c->every = e;
    if (!post(sw, c)) {
        cmd_free(c);
        return TM2_ECLOSED;
    }
    return 0;
}

/* ---- bans ------------------------------------------------------------------------------- */

/* Tells a running loop that the ban list changed. */
static void post_bans(tm2_switch *sw)
{
    tm2__cmd *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->type = CMD_BANS;
    if (!post(sw, c))
        cmd_free(c);
}

int tm2_switch_ban(tm2_switch *sw, const char *target, uint64_t duration_ms, const char *reason)
{
    if (!sw || !target)
        return TM2_EINVAL;
    tm2_ban b;
    memset(&b, 0, sizeof b);
    if (tm2_ban_target_parse(target, &b) != 0)
        return TM2_EINVAL;
    if (!duration_ms)
        duration_ms = sw->ban_duration_ms;
    if (!duration_ms)
        return TM2_EINVAL;
    int64_t now = tm2__sw_wall(sw);
    b.created_unix_ms = now;
    b.expires_unix_ms = duration_ms == TM2_BAN_FOREVER || duration_ms > (uint64_t)(INT64_MAX - now)
                            ? 0
                            : now + (int64_t)duration_ms;
    snprintf(b.reason, sizeof b.reason, "%s", reason ? reason : "");
    int r = tm2__bans_put(&sw->bans, &b, now);
    if (r)
        return r;
    char text[TM2_EVENT_REASON_LEN];
    if (b.expires_unix_ms)
        snprintf(text, sizeof text, "banned for %" PRIu64 " ms%s%.100s", duration_ms,
                 b.reason[0] ? ": " : "", b.reason);
    else
        snprintf(text, sizeof text, "banned for good%s%.100s", b.reason[0] ? ": " : "", b.reason);
    tm2_netaddr a;
    memset(&a, 0, sizeof a);
    if (b.is_ip)
        memcpy(a.ip, b.ip, 16);
    tm2__sw_publish(sw, TM2_EVENT_PEER_BANNED, b.is_ip ? NULL : &b.id, &a, false, TM2_EBANNED,
                    text);
    post_bans(sw);
    return 0;
}

int tm2_switch_unban(tm2_switch *sw, const char *target)
{
    if (!sw || !target)
        return TM2_EINVAL;
    tm2_ban b;
    memset(&b, 0, sizeof b);
    if (tm2_ban_target_parse(target, &b) != 0)
        return TM2_EINVAL;
    int r = tm2__bans_del(&sw->bans, &b);
    if (!r)
        post_bans(sw);
    return r;
}

size_t tm2_switch_bans(tm2_switch *sw, tm2_ban *out, size_t cap)
{
    if (!sw)
        return 0;
    return tm2__bans_copy(&sw->bans, tm2__sw_wall(sw), out, cap);
}

int tm2__switch_set_dial_source(tm2_switch *sw, const char *ip)
{
    char spec[128];
    snprintf(spec, sizeof spec, "%s%s%s:1", strchr(ip, ':') ? "[" : "", ip,
             strchr(ip, ':') ? "]" : "");
    tm2_netaddr a;
    if (tm2_netaddr_parse(spec, TM2_NETADDR_NO_ID, &a) != 0)
        return TM2_EINVAL;
    uv_mutex_lock(&sw->life_lock);
    bool fresh = sw->state == SW_NEW;
    uv_mutex_unlock(&sw->life_lock);
    if (!fresh)
        return TM2_ESTATE;
    sw->dial_source = a;
    sw->has_dial_source = true;
    return 0;
}

/* ---- the network thread ----------------------------------------------------------------- */

static void transport_closed(tm2__transport *t)
{
    tm2_switch *sw = t->data;
    uv_mutex_lock(&sw->snap_lock);
    tm2__transport_get_stats(t, &sw->tp_last);
    sw->snap_tp = NULL;
    sw->transport = NULL;
    uv_mutex_unlock(&sw->snap_lock);
    tm2__sw_wake(sw);
}

static void wake_closed(tm2__waker *w)
{
    tm2_switch *sw = w->data;
    /* On a given engine the stop ends a turn later, when the mcs loop's
     * waker (closed on the same turn) is gone too. */
    if (!sw->own)
        tm2__defer(sw->e, &sw->stop_task);
}

/* Everything is closed once the transport is gone and every connection
 * reported on_close; the remaining handles close here, and the engine then
 * has nothing of ours left (uv_run returns on the own thread). */
static void maybe_finish(tm2_switch *sw)
{
    if (!sw->stopping || sw->finished || sw->transport || sw->open_conns || sw->n_resolving ||
        tm2__sw_ban_saving(sw))
        return;
    tm2__sw_release_peers(sw);
    sw->finished = true;
    tm2__undefer(sw->e, &sw->wake_task);
    tm2__sw_dial_clear(sw);
    tm2__timer_close(&sw->dial_timer);
    tm2__timer_close(&sw->redial_timer);
    tm2__timer_close(&sw->seed_timer);
    tm2__mcs_loop_close(&sw->ml);
    tm2__waker_close(&sw->wake, wake_closed);
    if (sw->own)
        tm2__uv_engine_hold(&sw->own->ue, false);
}

static void every_cb(tm2__timer *t)
{
    tm2__every *e = t->data;
    tm2_switch *sw = e->sw;
    if (sw->stopping)
        return;
    tm2__timer_start(t, tm2__sw_now(sw) + e->interval_ms);
    /* e may be gone when fn returns (fn may stop the switch). */
    e->fn(sw, e->user);
}

static void every_start(tm2_switch *sw, tm2__every *e)
{
    tm2__timer_init(sw->e, &e->timer, every_cb);
    e->timer.data = e;
    e->next = sw->everys;
    sw->everys = e;
    tm2__timer_start(&e->timer, tm2__sw_now(sw) + e->interval_ms);
}

static void redial_tick(tm2__timer *t)
{
    tm2_switch *sw = t->data;
    if (sw->stopping)
        return;
    tm2__timer_start(t, tm2__sw_now(sw) + sw->redial_scan_ms);
    tm2__sw_redial_scan(sw);
}

static void seed_tick(tm2__timer *t)
{
    tm2_switch *sw = t->data;
    if (sw->stopping)
        return;
    tm2__timer_start(t, tm2__sw_now(sw) + sw->seed_interval_ms);
    tm2__sw_seed_round(sw);
}

/* Stop on the loop: transport, peers, reactors, then the handles. */
static void begin_stop(tm2_switch *sw)
{
    if (sw->stopping)
        return;
    sw->stopping = true;
    uv_mutex_lock(&sw->cmd_lock);
    sw->cmd_closed = true;
    sw->cmd_live = false;
    uv_mutex_unlock(&sw->cmd_lock);
    if (sw->transport && !sw->transport_closing) {
        sw->transport_closing = true;
        tm2__transport_close(sw->transport, transport_closed);
    }
    /* In-flight dials are aborted without a word from the transport. */
    tm2__sw_dial_clear(sw);
    for (size_t i = tm2__peer_set_count(&sw->peers); i-- > 0;) {
        const tm2__peer_entry *e = tm2__peer_set_at(&sw->peers, i);
        if (e)
            tm2__sw_peer_remove(sw, e->peer, 0, NULL);
    }
    tm2__timer_stop(&sw->dial_timer);
    tm2__timer_stop(&sw->redial_timer);
    tm2__timer_stop(&sw->seed_timer);
    while (sw->everys) {
        tm2__every *e = sw->everys;
        sw->everys = e->next;
        tm2__timer_close(&e->timer);
        free(e);
    }
    for (size_t i = sw->n_reactors; i-- > 0;) {
        tm2__reactor_slot *s = &sw->reactors[i];
        if (s->started && s->r.stop)
            s->r.stop(sw, s->r.user);
        s->started = false;
    }
    tm2__sw_log(sw, TM2_LOG_INFO, "switch stopping", "");
    maybe_finish(sw);
}

static void run_commands(tm2_switch *sw)
{
    uv_mutex_lock(&sw->cmd_lock);
    tm2__cmd *list = sw->cmds;
    sw->cmds = NULL;
    sw->cmds_tail = &sw->cmds;
    bool stop = sw->stop_requested;
    uv_mutex_unlock(&sw->cmd_lock);
    while (list) {
        tm2__cmd *c = list;
        list = c->next;
        switch (c->type) {
        case CMD_DIAL:
            if (!sw->stopping)
                for (size_t i = 0; i < c->n; i++)
                    tm2__sw_dial_request(sw, &c->addrs[i]);
            break;
        case CMD_STOP_PEER:
            if (!sw->stopping)
                tm2__sw_peer_remove(sw, c->peer, c->err, NULL);
            break;
        case CMD_EVERY:
            if (!sw->stopping) {
                every_start(sw, c->every);
                c->every = NULL;
            }
            break;
        case CMD_BANS:
            tm2__sw_bans_changed(sw);
            break;
        default:
            break;
        }
        cmd_free(c);
    }
    if (stop)
        begin_stop(sw);
}

static void wake_cb(tm2__waker *w)
{
    tm2_switch *sw = w->data;
    if (sw->finished)
        return;
    run_commands(sw);
    tm2__sw_release_peers(sw);
    if (!sw->stopping)
        tm2__sw_arm_dial_timer(sw);
    maybe_finish(sw);
}

static void wake_fn(tm2__task *k)
{
    tm2_switch *sw = k->data;
    wake_cb(&sw->wake);
}

static void start_done(tm2_switch *sw, int err)
{
    uv_mutex_lock(&sw->life_lock);
    sw->start_err = err;
    sw->start_done = true;
    uv_cond_broadcast(&sw->life_cond);
    uv_mutex_unlock(&sw->life_lock);
}

/* Binds the listener and advertises what it got. */
static int bind_listener(tm2_switch *sw)
{
    if (!sw->listen_addr)
        return 0;
    int r = tm2__transport_listen(sw->transport, sw->listen_addr);
    if (r)
        return r;
    tm2_netaddr la;
    if ((r = tm2__transport_listen_addr(sw->transport, &la)) != 0)
        return r;
    uv_mutex_lock(&sw->life_lock);
    sw->bound_addr = la;
    sw->bound = true;
    if (!sw->has_external) {
        sw->ni.net_address = la;
        sw->ni.net_address.id = sw->id;
    }
    uv_mutex_unlock(&sw->life_lock);
    return tm2__transport_set_node_info(sw->transport, &sw->ni);
}

/* The first steps on the network thread: reactors, then the listener. */
static int start_reactors(tm2_switch *sw)
{
    int err = 0;
    for (size_t i = 0; i < sw->n_reactors && !err; i++) {
        tm2__reactor_slot *s = &sw->reactors[i];
        if (s->r.start && (err = s->r.start(sw, s->r.user)) != 0) {
            tm2__sw_log(sw, TM2_LOG_ERROR, "reactor failed to start", "reactor=%s err=%s",
                        s->r.name, tm2_strerror(err));
            if (err > 0)
                err = TM2_EINVAL;
            break;
        }
        s->started = true;
    }
    return err ? err : bind_listener(sw);
}

/* Started: the services run. */
static void start_services(tm2_switch *sw)
{
    atomic_store(&sw->started_ms, tm2__sw_now(sw));
    for (size_t i = 0; i < sw->n_persistent; i++)
        tm2__sw_redial(sw, i);
    tm2__timer_start(&sw->redial_timer, tm2__sw_now(sw) + sw->redial_scan_ms);
    tm2__sw_seed_round(sw);
    tm2__timer_start(&sw->seed_timer, tm2__sw_now(sw) + sw->seed_interval_ms);
    if (tm2__sw_log_on(sw, TM2_LOG_INFO)) {
        char b[TM2_NETADDR_STRLEN + 1];
        tm2__sw_log(sw, TM2_LOG_INFO, "switch started", "id=%s addr=%s", sw->id.s,
                    tm2__sw_addr_str(&sw->ni.net_address, b, sizeof b));
    }
    run_commands(sw);
    tm2__sw_bans_changed(sw);
    tm2__sw_arm_dial_timer(sw);
}

static void thread_main(void *arg)
{
    tm2_switch *sw = arg;
    tm2__mcs_loop_bind_thread(&sw->ml);
    int err = start_reactors(sw);
    start_done(sw, err);
    if (err)
        begin_stop(sw);
    else
        start_services(sw);
    uv_run(&sw->own->loop, UV_RUN_DEFAULT);
    /* Close callbacks queued by the last turn. */
    uv_run(&sw->own->loop, UV_RUN_NOWAIT);
}

/* The mcs loop, the transport, the waker and the timers on sw->e. On
 * failure nothing is left open but what closes on the engine's next turn. */
static int init_net(tm2_switch *sw)
{
    int r = tm2__mcs_loop_init(&sw->ml, sw->e);
    if (r)
        return r;
    tm2__tcp_transport_config tc;
    memset(&tc, 0, sizeof tc);
    tc.key = sw->key;
    tc.node_info = &sw->ni;
    tc.handshake_timeout_ms = sw->handshake_timeout_ms;
    tc.dial_timeout_ms = sw->dial_timeout_ms;
    tc.max_pending_inbound = sw->max_pending_inbound;
    tc.conn_cbs = tm2__sw_conn_cbs;
    tc.has_dial_source = sw->has_dial_source;
    tc.dial_source = sw->dial_source;
    tc.log = sw->log;
    tc.log_user = sw->log_user;
    tc.log_level = sw->log_level;
    r = tm2__tcp_transport_new(&sw->ml, &tc, &tm2__sw_transport_cbs, sw, &sw->transport);
    tm2_node_key_wipe(&tc.key);
    if (!r) {
        sw->wake.data = sw;
        if (tm2__waker_init(sw->e, &sw->wake, wake_cb) != 0) {
            tm2__transport_close(sw->transport, NULL);
            sw->transport = NULL;
            r = TM2_EIO;
        }
    }
    uv_mutex_lock(&sw->snap_lock);
    sw->snap_tp = sw->transport;
    uv_mutex_unlock(&sw->snap_lock);
    if (r) {
        tm2__mcs_loop_close(&sw->ml);
        return r;
    }
    tm2__timer_init(sw->e, &sw->dial_timer, tm2__sw_dial_timer_cb);
    sw->dial_timer.data = sw;
    tm2__timer_init(sw->e, &sw->redial_timer, redial_tick);
    sw->redial_timer.data = sw;
    tm2__timer_init(sw->e, &sw->seed_timer, seed_tick);
    sw->seed_timer.data = sw;
    return 0;
}

static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) != 0)
        return;
    if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigemptyset(&sa.sa_mask);
        (void)sigaction(SIGPIPE, &sa, NULL);
    }
}

static void set_state(tm2_switch *sw, int state)
{
    uv_mutex_lock(&sw->life_lock);
    sw->state = state;
    if (state != SW_RUNNING) {
        sw->handles_init = false;
        sw->bound = false;
    }
    uv_cond_broadcast(&sw->life_cond);
    uv_mutex_unlock(&sw->life_lock);
}

/* Commands that never ran (posted while stopping, or before a start that
 * failed) are freed here; none is taken afterwards. */
static void drain_commands(tm2_switch *sw)
{
    uv_mutex_lock(&sw->cmd_lock);
    sw->cmd_closed = true;
    sw->cmd_live = false;
    tm2__cmd *list = sw->cmds;
    sw->cmds = NULL;
    sw->cmds_tail = &sw->cmds;
    uv_mutex_unlock(&sw->cmd_lock);
    while (list) {
        tm2__cmd *c = list;
        list = c->next;
        cmd_free(c);
    }
}

/* The network side is gone (thread joined, or the engine closed our last
 * handle): what is left of the stop. */
static void stopped(tm2_switch *sw)
{
    drain_commands(sw);
    tm2__sw_bans_save_sync(sw);
    uv_mutex_lock(&sw->snap_lock);
    sw->n_snap = 0;
    sw->snap_in = sw->snap_out = sw->snap_dialing = 0;
    uv_mutex_unlock(&sw->snap_lock);
    tm2__events_close(sw->events);
    set_state(sw, SW_STOPPED);
}

static void stop_fn(tm2__task *k)
{
    tm2_switch *sw = k->data;
    uv_mutex_lock(&sw->life_lock);
    bool done = sw->state == SW_STOPPED;
    uv_mutex_unlock(&sw->life_lock);
    if (!done)
        stopped(sw);
    void (*fn)(tm2_switch *, void *) = sw->stop_done;
    sw->stop_done = NULL;
    /* Last: fn may free sw. */
    if (fn)
        fn(sw, sw->stop_done_user);
}

/* Claims NEW -> STARTING: a second starter gets false. */
static bool claim_start(tm2_switch *sw)
{
    uv_mutex_lock(&sw->life_lock);
    bool fresh = sw->state == SW_NEW;
    if (fresh)
        sw->state = SW_STARTING;
    uv_mutex_unlock(&sw->life_lock);
    return fresh;
}

static void net_live(tm2_switch *sw)
{
    uv_mutex_lock(&sw->life_lock);
    sw->handles_init = true;
    uv_mutex_unlock(&sw->life_lock);
    uv_mutex_lock(&sw->cmd_lock);
    sw->cmd_live = true;
    uv_mutex_unlock(&sw->cmd_lock);
}

/* On a given engine: everything inline, on the caller's (the engine's)
 * thread. A failure leaves the stop under way on later turns. */
static int start_on_engine(tm2_switch *sw)
{
    int r = init_net(sw);
    if (r) {
        set_state(sw, SW_NEW);
        return r;
    }
    net_live(sw);
    if ((r = start_reactors(sw)) != 0) {
        set_state(sw, SW_STOPPING);
        begin_stop(sw);
        return r;
    }
    uv_mutex_lock(&sw->life_lock);
    sw->state = SW_RUNNING;
    uv_cond_broadcast(&sw->life_cond);
    uv_mutex_unlock(&sw->life_lock);
    start_services(sw);
    return 0;
}

int tm2_switch_start(tm2_switch *sw)
{
    if (!sw)
        return TM2_EINVAL;
    if (!claim_start(sw))
        return TM2_ESTATE;
    ignore_sigpipe();
    if (!sw->own)
        return start_on_engine(sw);
    int r = init_net(sw);
    if (r) {
        uv_run(&sw->own->loop, UV_RUN_DEFAULT);
        set_state(sw, SW_NEW);
        return r;
    }
    net_live(sw);
    tm2__uv_engine_hold(&sw->own->ue, true);
    if (uv_thread_create(&sw->own->thread, thread_main, sw) != 0) {
        /* Nothing ran on the loop yet: tear it down here. */
        sw->stopping = true;
        uv_mutex_lock(&sw->cmd_lock);
        sw->cmd_live = false;
        sw->cmd_closed = true;
        uv_mutex_unlock(&sw->cmd_lock);
        tm2__transport_close(sw->transport, transport_closed);
        tm2__timer_close(&sw->dial_timer);
        tm2__timer_close(&sw->redial_timer);
        tm2__timer_close(&sw->seed_timer);
        tm2__waker_close(&sw->wake, NULL);
        tm2__mcs_loop_close(&sw->ml);
        tm2__uv_engine_hold(&sw->own->ue, false);
        uv_run(&sw->own->loop, UV_RUN_DEFAULT);
        drain_commands(sw);
        set_state(sw, SW_STOPPED);
        tm2__events_close(sw->events);
        return TM2_EIO;
    }
    tm2__thread_name(sw->own->thread, "tm2p2p-net");
    uv_mutex_lock(&sw->life_lock);
    while (!sw->start_done)
        uv_cond_wait(&sw->life_cond, &sw->life_lock);
    r = sw->start_err;
    if (!r) {
        sw->state = SW_RUNNING;
        uv_cond_broadcast(&sw->life_cond);
    }
    uv_mutex_unlock(&sw->life_lock);
    if (r) {
        uv_thread_join(&sw->own->thread);
        drain_commands(sw);
        set_state(sw, SW_STOPPED);
        tm2__events_close(sw->events);
    }
    return r;
}

void tm2__switch_stop_async(tm2_switch *sw, void (*done)(tm2_switch *sw, void *user), void *user)
{
    if (sw->own) {
        tm2__sw_log(sw, TM2_LOG_ERROR, "tm2__switch_stop_async on a switch with its own thread", "");
        return;
    }
    sw->stop_done = done;
    sw->stop_done_user = user;
    uv_mutex_lock(&sw->life_lock);
    int state = sw->state;
    if (state == SW_RUNNING)
        sw->state = SW_STOPPING;
    uv_mutex_unlock(&sw->life_lock);
    if (state == SW_RUNNING)
        begin_stop(sw);
    else if (state != SW_STOPPING)
        tm2__defer(sw->e, &sw->stop_task);   /* never started, or stopped */
    /* STOPPING: the stop under way (a failed start) calls done. */
}

void tm2_switch_stop(tm2_switch *sw)
{
    if (!sw)
        return;
    /* One stopper joins the thread; any other waits until it is done. */
    uv_mutex_lock(&sw->life_lock);
    if (!sw->own && sw->state != SW_NEW && sw->state != SW_STOPPED) {
        uv_mutex_unlock(&sw->life_lock);
        tm2__sw_log(sw, TM2_LOG_ERROR, "tm2_switch_stop on an engine's switch: use "
                    "tm2__switch_stop_async", "");
        return;
    }
    if ((sw->state == SW_STARTING || sw->state == SW_RUNNING) && sw->handles_init &&
        tm2__mcs_loop_on_thread(&sw->ml)) {
        uv_mutex_unlock(&sw->life_lock);
        tm2__sw_log(sw, TM2_LOG_ERROR, "tm2_switch_stop called on the network thread", "");
        return;
    }
    while (sw->state == SW_STARTING)
        uv_cond_wait(&sw->life_cond, &sw->life_lock);
    if (sw->state == SW_STOPPING || sw->state == SW_STOPPED) {
        while (sw->state != SW_STOPPED)
            uv_cond_wait(&sw->life_cond, &sw->life_lock);
        uv_mutex_unlock(&sw->life_lock);
        return;
    }
    bool running = sw->state == SW_RUNNING;
    sw->state = SW_STOPPING;
    uv_mutex_unlock(&sw->life_lock);
    if (running) {
        /* A flag, not a queued command: stopping needs no memory. */
        uv_mutex_lock(&sw->cmd_lock);
        sw->stop_requested = true;
        if (sw->cmd_live)
            tm2__waker_send(&sw->wake);
        uv_mutex_unlock(&sw->cmd_lock);
        uv_thread_join(&sw->own->thread);
    }
    stopped(sw);
}

void tm2_switch_free(tm2_switch *sw)
{
    if (!sw)
        return;
    tm2_switch_stop(sw);
    uv_mutex_lock(&sw->life_lock);
    bool stopped_now = sw->state == SW_STOPPED;
    uv_mutex_unlock(&sw->life_lock);
    if (!stopped_now)
        return;   /* called on the network thread, or an engine's switch still running: refused */
    drain_commands(sw);
    tm2__sw_bans_save_sync(sw);   /* bans made after stop */
    own_free(sw);
    tm2__events_free(sw->events);
    tm2__bans_free(&sw->bans);
    tm2__dialq_free(&sw->dialq);
    tm2__peer_set_free(&sw->inflight);
    tm2__peer_set_free(&sw->peers);
    free(sw->snap);
    uv_mutex_destroy(&sw->snap_lock);
    uv_mutex_destroy(&sw->cmd_lock);
    uv_cond_destroy(&sw->life_cond);
    uv_mutex_destroy(&sw->life_lock);
    free_config_copies(sw);
    tm2_node_key_wipe(&sw->key);
    sodium_memzero(sw, sizeof *sw);
    free(sw);
}
