/* The switch's configuration: defaults, validation naming the bad field, and
 * the "ID@host:port" form of configured peers (persistent peers and seeds). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn/mconn.h"
#include "switch/switch_internal.h"
#include "tm2p2p/defaults.h"

void tm2_switch_config_default(tm2_switch_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->max_inbound = TM2_DEFAULT_MAX_INBOUND;
    cfg->max_outbound = TM2_DEFAULT_MAX_OUTBOUND;
    cfg->max_pending_inbound = TM2_DEFAULT_MAX_PENDING_INBOUND;
    cfg->handshake_timeout_ms = TM2_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    cfg->dial_timeout_ms = TM2_DEFAULT_DIAL_TIMEOUT_MS;
    cfg->allow_duplicate_ip = TM2_DEFAULT_ALLOW_DUPLICATE_IP;
    cfg->redial_base_ms = TM2_DEFAULT_REDIAL_BASE_MS;
    cfg->redial_max_ms = TM2_DEFAULT_REDIAL_MAX_MS;
    cfg->redial_stable_ms = TM2_DEFAULT_REDIAL_STABLE_MS;
    cfg->redial_scan_ms = TM2_DEFAULT_REDIAL_SCAN_MS;
    cfg->seed_interval_ms = TM2_DEFAULT_SEED_INTERVAL_MS;
    cfg->max_pending_inbound_per_ip = TM2_DEFAULT_MAX_PENDING_INBOUND_PER_IP;
    cfg->accept_ip_rate = TM2_DEFAULT_ACCEPT_IP_RATE;
    cfg->accept_ip_burst = TM2_DEFAULT_ACCEPT_IP_BURST;
    cfg->accept_subnet_rate = TM2_DEFAULT_ACCEPT_SUBNET_RATE;
    cfg->accept_subnet_burst = TM2_DEFAULT_ACCEPT_SUBNET_BURST;
    cfg->max_inbound_per_ip = TM2_DEFAULT_MAX_INBOUND_PER_IP;
    cfg->max_inbound_per_subnet = TM2_DEFAULT_MAX_INBOUND_PER_SUBNET;
    cfg->outbound_diversity = TM2_DEFAULT_OUTBOUND_DIVERSITY;
    cfg->evict_inbound = TM2_DEFAULT_EVICT_INBOUND;
    cfg->evict_protect_groups = TM2_DEFAULT_EVICT_PROTECT_GROUPS;
    cfg->evict_protect_latency = TM2_DEFAULT_EVICT_PROTECT_LATENCY;
    cfg->evict_protect_active = TM2_DEFAULT_EVICT_PROTECT_ACTIVE;
    cfg->evict_protect_oldest_pct = TM2_DEFAULT_EVICT_PROTECT_OLDEST_PCT;
    cfg->ban_duration_ms = TM2_DEFAULT_BAN_DURATION_MS;
    cfg->limit_local_addrs = TM2_DEFAULT_LIMIT_LOCAL_ADDRS;
    tm2_mconn_config_default(&cfg->mconn);
    cfg->log_level = TM2_LOG_INFO;
}

/* RFC 1123 host name: dot-separated labels of letters, digits and '-', not
 * starting or ending with '-', 1..63 characters each, 253 in all. A
 * trailing dot (the root) is allowed. */
static bool host_name_ok(const char *h, size_t n)
{
    if (n && h[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (c != '-' || label == 0))
            return false;
        if (++label > 63)
            return false;
    }
    return h[n - 1] != '-';
}

int tm2_peer_addr_parse(const char *s, tm2_id *id, char *host, size_t host_cap, uint16_t *port)
{
    if (!s || !id || !host || !host_cap || !port)
        return TM2_EINVAL;
    const char *at = strchr(s, '@');
    if (!at || (size_t)(at - s) != TM2_ID_LEN)
        return TM2_EID;
    memcpy(id->s, s, TM2_ID_LEN);
    id->s[TM2_ID_LEN] = '\0';
    if (tm2_id_validate(id->s) != 0)
        return TM2_EID;
    const char *h = at + 1, *colon;
    size_t hn;
    if (*h == '[') {
        const char *close = strchr(h, ']');
        if (!close || close[1] != ':')
            return TM2_EADDR;
        colon = close + 1;
        hn = (size_t)(colon - h);
    } else {
        colon = strrchr(h, ':');
        if (!colon || strchr(h, ':') != colon)
            return TM2_EADDR;
        hn = (size_t)(colon - h);
    }
    const char *ps = colon + 1;
    if (!*ps || strlen(ps) > 5)
        return TM2_EADDR;
    unsigned long pv = 0;
    for (const char *q = ps; *q; q++) {
        if (*q < '0' || *q > '9')
            return TM2_EADDR;
        pv = pv * 10 + (unsigned long)(*q - '0');
    }
    if (pv == 0 || pv > 65535 || hn == 0 || hn >= host_cap)
        return TM2_EADDR;
    /* An IP literal parses as a NetAddress; anything else must be a name. */
    tm2_netaddr tmp;
    if (tm2_netaddr_parse(s, 0, &tmp) != 0) {
        if (*h == '[' || !host_name_ok(h, hn))
            return TM2_EADDR;
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = (uint16_t)pv;
    return 0;
}

static int check_peer_list(const char *const *list, size_t n, const char **field,
                           const char *name)
{
    static _Thread_local char buf[64];   /* the field name of a bad entry */
    if (n && !list) {
        *field = name;
        return TM2_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        tm2_id id;
        char host[TM2__HOST_MAX];
        uint16_t port;
        if (!list[i] || tm2_peer_addr_parse(list[i], &id, host, sizeof host, &port) != 0) {
            snprintf(buf, sizeof buf, "%s[%zu]", name, i);
            *field = buf;
            return TM2_EINVAL;
        }
    }
    return 0;
}

int tm2_switch_config_check(const tm2_switch_config *cfg, const char **field)
{
    const char *dummy;
    if (!field)
        field = &dummy;
    *field = NULL;
    if (!cfg) {
        *field = "config";
        return TM2_EINVAL;
    }
#define BAD(name)         \
    do {                  \
        *field = (name);  \
        return TM2_EINVAL; \
    } while (0)
    if (tm2_node_key_check(&cfg->key) != 0)
        BAD("key");
    if (cfg->listen_addr) {
        tm2_netaddr tmp;
        if (tm2_netaddr_parse(cfg->listen_addr, TM2_NETADDR_NO_ID, &tmp) != 0)
            BAD("listen_addr");
    }
    if (cfg->max_pending_inbound == 0)
        BAD("max_pending_inbound");
    if (cfg->handshake_timeout_ms == 0)
        BAD("handshake_timeout_ms");
    if (cfg->dial_timeout_ms == 0)
        BAD("dial_timeout_ms");
    if (cfg->redial_base_ms == 0)
        BAD("redial_base_ms");
    if (cfg->redial_max_ms < cfg->redial_base_ms)
        BAD("redial_max_ms");
    if (cfg->redial_scan_ms == 0)
        BAD("redial_scan_ms");
    if (cfg->seed_interval_ms == 0)
        BAD("seed_interval_ms");
    if (cfg->n_private_peer_ids && !cfg->private_peer_ids)
        BAD("private_peer_ids");
    for (size_t i = 0; i < cfg->n_private_peer_ids; i++)
        if (tm2_id_validate(cfg->private_peer_ids[i].s) != 0)
            BAD("private_peer_ids");
    if (cfg->n_reactors && !cfg->reactors)
        BAD("reactors");
    if (cfg->n_unconditional_peer_ids && !cfg->unconditional_peer_ids)
        BAD("unconditional_peer_ids");
    for (size_t i = 0; i < cfg->n_unconditional_peer_ids; i++)
        if (tm2_id_validate(cfg->unconditional_peer_ids[i].s) != 0)
            BAD("unconditional_peer_ids");
    if (cfg->accept_ip_rate && !cfg->accept_ip_burst)
        BAD("accept_ip_burst");
    if (cfg->accept_subnet_rate && !cfg->accept_subnet_burst)
        BAD("accept_subnet_burst");
    if (cfg->evict_protect_oldest_pct > 100)
        BAD("evict_protect_oldest_pct");
    if (cfg->ban_file && !cfg->ban_file[0])
        BAD("ban_file");
    const char *mf;
    if (tm2__mconn_config_check(&cfg->mconn, &mf) != 0) {
        static _Thread_local char name[64];
        snprintf(name, sizeof name, "mconn.%s", mf ? mf : "?");
        BAD(name);
    }
#undef BAD
    int r = check_peer_list(cfg->persistent_peers, cfg->n_persistent_peers, field,
                            "persistent_peers");
    if (r)
        return r;
    return check_peer_list(cfg->seeds, cfg->n_seeds, field, "seeds");
}

/* ---- configured peers -------------------------------------------------------------------- */

int tm2__sw_configured_init(tm2__configured *c, const char *spec)
{
    memset(c, 0, sizeof *c);
    char host[TM2__HOST_MAX];
    int r = tm2_peer_addr_parse(spec, &c->id, host, sizeof host, &c->port);
    if (r)
        return r;
    if (!(c->host = strdup(host)))
        return TM2_ENOMEM;
    /* An IP literal needs no resolver: its address is fixed. */
    c->literal = tm2_netaddr_parse(spec, 0, &c->addr) == 0;
    if (!c->literal) {
        c->addr.id = c->id;
        c->addr.port = c->port;
    }
    return 0;
}

void tm2__sw_configured_free(tm2__configured *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++)
        free(c[i].host);
    free(c);
}
