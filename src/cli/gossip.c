/* Flooding gossip reactor for test networks: originate, forward once,
 * count deliveries and latencies. */
#include "cli/gossip.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "tm2p2p/node_info.h"
#include "tm2p2p/peer.h"

#define MAX_PAYLOAD CLI_GOSSIP_MAX_PAYLOAD
#define VERSION 1

uint64_t cli_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t cli_mono_ms(void)
{
    return cli_mono_us() / 1000u;
}

/* ---- histogram ----------------------------------------------------------- */

unsigned cli_hist_bucket(uint64_t us)
{
    if (us < 64)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us);
    unsigned idx = 64u + (e - 6u) * 32u + (unsigned)((us >> (e - 5u)) & 31u);
    return idx < CLI_HIST_BUCKETS ? idx : CLI_HIST_BUCKETS - 1;
}

uint64_t cli_hist_lower(unsigned b)
{
    if (b < 64)
        return b;
    unsigned e = 6u + (b - 64u) / 32u, sub = (b - 64u) % 32u;
    return (uint64_t)(32u + sub) << (e - 5u);
}

uint64_t cli_hist_count(const uint64_t *hist)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < CLI_HIST_BUCKETS; i++)
        n += hist[i];
    return n;
}

uint64_t cli_hist_quantile(const uint64_t *hist, double q)
{
    uint64_t n = cli_hist_count(hist);
    if (n == 0)
        return 0;
    /* the smallest value with at least ceil(q * n) samples at or below it */
    uint64_t rank = (uint64_t)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t acc = 0;
    for (unsigned i = 0; i < CLI_HIST_BUCKETS; i++) {
        acc += hist[i];
        if (acc >= rank)
            return cli_hist_lower(i);
    }
    return cli_hist_lower(CLI_HIST_BUCKETS - 1);
}

/* ---- seen-set: two generations, so the oldest half is forgotten at once -- */

typedef struct gen {
    uint64_t *slot;     /* 0 = empty; key 0 itself is kept in has_zero */
    size_t mask, used, max;
    bool has_zero;
} gen;

static int gen_init(gen *g, size_t max)
{
    size_t cap = 16;
    while (cap < max * 2)
        cap *= 2;
    g->slot = calloc(cap, sizeof *g->slot);
    if (!g->slot)
        return -1;
    g->mask = cap - 1;
    g->used = 0;
    g->max = max;
    g->has_zero = false;
    return 0;
}

static size_t hash64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k;
}

static bool gen_has(const gen *g, uint64_t k)
{
    if (k == 0)
        return g->has_zero;
    for (size_t i = hash64(k) & g->mask;; i = (i + 1) & g->mask) {
        if (g->slot[i] == k)
            return true;
        if (g->slot[i] == 0)
            return false;
    }
}

static void gen_put(gen *g, uint64_t k)
{
    g->used++;
    if (k == 0) {
        g->has_zero = true;
        return;
    }
    size_t i = hash64(k) & g->mask;
    while (g->slot[i] != 0)
        i = (i + 1) & g->mask;
    g->slot[i] = k;
}

/* ---- reactor ------------------------------------------------------------- */

struct cli_gossip {
    cli_gossip_config cfg;
    tm2_reactor reactor;
    tm2_channel_desc chan;
    tm2_switch *sw;

    /* network thread only */
    tm2_peer **peers;
    size_t n_peers, cap_peers;
    gen cur, old;
    uint64_t seq;
    uint64_t until_ms;
    uint8_t *scratch;

    _Atomic uint64_t originated, delivered, duplicates, forwarded, send_failed, malformed;
    _Atomic uint64_t *orig_by_sec;
    _Atomic uint64_t *deliv_by_sec;
    _Atomic uint64_t hist[CLI_HIST_BUCKETS];
};

#define INC(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)
#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void logf_(cli_gossip *g, tm2_log_level lvl, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void logf_(cli_gossip *g, tm2_log_level lvl, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm2__vlog(g->cfg.log, g->cfg.log_user, g->cfg.log_level, lvl, msg, fmt, ap);
    va_end(ap);
}

static bool seen_check_insert(cli_gossip *g, uint64_t k)
{
    if (gen_has(&g->cur, k) || gen_has(&g->old, k))
        return true;
    if (g->cur.used >= g->cur.max) {
        gen t = g->old;
        g->old = g->cur;
        g->cur = t;
        memset(g->cur.slot, 0, (g->cur.mask + 1) * sizeof *g->cur.slot);
        g->cur.used = 0;
        g->cur.has_zero = false;
    }
    gen_put(&g->cur, k);
    return false;
}

static uint32_t sec_of(const cli_gossip *g, uint64_t mono_ms)
{
    uint64_t s = mono_ms > g->cfg.epoch_ms ? (mono_ms - g->cfg.epoch_ms) / 1000u : 0;
    return s < g->cfg.seconds ? (uint32_t)s : g->cfg.seconds - 1;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

int cli_gossip_decode(const uint8_t *msg, size_t len, cli_gossip_msg *out)
{
    if (len < CLI_GOSSIP_HEADER || len > CLI_GOSSIP_HEADER + MAX_PAYLOAD || msg[0] != VERSION ||
        msg[1] > CLI_GOSSIP_MAX_HOPS || msg[2] || msg[3])
        return TM2_EPROTO;
    out->hops = msg[1];
    out->origin = (uint32_t)get_be(msg + 4, 4);
    out->seq = get_be(msg + 8, 8);
    out->sent_us = get_be(msg + 16, 8);
    out->payload_len = len - CLI_GOSSIP_HEADER;
    return 0;
}

void cli_gossip_encode_header(const cli_gossip_msg *m, uint8_t *buf)
{
    buf[0] = VERSION;
    buf[1] = m->hops;
    buf[2] = buf[3] = 0;
    put_be(buf + 4, m->origin, 4);
    put_be(buf + 8, m->seq, 8);
    put_be(buf + 16, m->sent_us, 8);
}

static uint64_t msg_key(uint32_t origin, uint64_t seq)
{
    return (uint64_t)origin << 32 | (seq & 0xffffffffu);
}

/* One copy of the bytes, shared by every peer's queue. */
static void flood(cli_gossip *g, const uint8_t *msg, size_t len, const tm2_peer *except)
{
    tm2_msg *m = tm2_msg_new(msg, len);
    for (size_t i = 0; i < g->n_peers; i++) {
        if (g->peers[i] == except)
            continue;
        int r = m ? tm2_peer_try_send_msg(g->peers[i], CLI_GOSSIP_CHANNEL, m) : TM2_ENOMEM;
        if (r == 0)
            INC(g->forwarded);
        else if (r == TM2_EFULL || r == TM2_ENOMEM)
            INC(g->send_failed);
    }
    tm2_msg_unref(m);
}

static void tick(tm2_switch *sw, void *user)
{
    (void)sw;
    cli_gossip *g = user;
    uint64_t now_us = cli_mono_us();
    if (g->until_ms && now_us / 1000u >= g->until_ms)
        return;
    uint64_t seq = ++g->seq;
    uint8_t *m = g->scratch;
    memset(m, 0, CLI_GOSSIP_HEADER + g->cfg.payload);
    cli_gossip_msg hdr = {.origin = g->cfg.origin, .seq = seq, .sent_us = now_us};
    cli_gossip_encode_header(&hdr, m);
    seen_check_insert(g, msg_key(g->cfg.origin, seq));
    INC(g->originated);
    INC(g->orig_by_sec[sec_of(g, now_us / 1000u)]);
    flood(g, m, CLI_GOSSIP_HEADER + g->cfg.payload, NULL);
}

static int r_start(tm2_switch *sw, void *user)
{
    cli_gossip *g = user;
    g->sw = sw;
    return 0;
}

static void r_stop(tm2_switch *sw, void *user)
{
    (void)sw;
    cli_gossip *g = user;
    for (size_t i = 0; i < g->n_peers; i++)
        tm2_peer_unref(g->peers[i]);
    g->n_peers = 0;
}

static void r_add_peer(tm2_peer *p, void *user)
{
    cli_gossip *g = user;
    const tm2_node_info *ni = tm2_peer_node_info(p);
    if (!ni || !tm2_node_info_has_channel(ni, CLI_GOSSIP_CHANNEL))
        return;
    if (g->n_peers == g->cap_peers) {
        size_t cap = g->cap_peers ? g->cap_peers * 2 : 16;
        tm2_peer **np = realloc(g->peers, cap * sizeof *np);
        if (!np) {
            logf_(g, TM2_LOG_ERROR, "gossip: out of memory, peer not added", "peer=%s",
                  tm2_peer_id(p)->s);
            return;
        }
        g->peers = np;
        g->cap_peers = cap;
    }
    g->peers[g->n_peers++] = tm2_peer_ref(p);
}

static void r_remove_peer(tm2_peer *p, int reason, void *user)
{
    (void)reason;
    cli_gossip *g = user;
    for (size_t i = 0; i < g->n_peers; i++)
        if (g->peers[i] == p) {
            g->peers[i] = g->peers[--g->n_peers];
            tm2_peer_unref(p);
            return;
        }
}

static void r_receive(tm2_peer *p, uint8_t ch, const uint8_t *msg, size_t len, void *user)
{
    (void)ch;
    cli_gossip *g = user;
    cli_gossip_msg m;
    if (cli_gossip_decode(msg, len, &m) < 0) {
        INC(g->malformed);
        logf_(g, TM2_LOG_WARN, "gossip: malformed message, stopping peer", "peer=%s len=%zu",
              tm2_peer_id(p)->s, len);
        if (g->sw)
            tm2_switch_stop_peer_for_error(g->sw, p, TM2_EPROTO);
        return;
    }
    if (m.origin == g->cfg.origin || seen_check_insert(g, msg_key(m.origin, m.seq))) {
        INC(g->duplicates);
        return;
    }
    uint64_t sent_us = m.sent_us;
    uint64_t now_us = cli_mono_us();
    INC(g->delivered);
    INC(g->deliv_by_sec[sec_of(g, sent_us / 1000u)]);
    INC(g->hist[cli_hist_bucket(now_us > sent_us ? now_us - sent_us : 0)]);
    if (m.hops >= CLI_GOSSIP_MAX_HOPS)
        return;
    memcpy(g->scratch, msg, len);
    g->scratch[1]++;
    flood(g, g->scratch, len, p);
}

int cli_gossip_new(const cli_gossip_config *cfg, cli_gossip **out)
{
    if (cfg->payload > MAX_PAYLOAD)
        return TM2_EINVAL;
    cli_gossip *g = calloc(1, sizeof *g);
    if (!g)
        return TM2_ENOMEM;
    g->cfg = *cfg;
    if (!g->cfg.seen_cap)
        g->cfg.seen_cap = 16384;
    if (!g->cfg.seconds)
        g->cfg.seconds = 3600;
    /* Sequence numbers start at the monotonic clock in ms, so a restarted
     * node's messages never reuse IDs its earlier life put in seen-sets. */
    g->seq = cli_mono_ms();
    g->orig_by_sec = calloc(g->cfg.seconds, sizeof *g->orig_by_sec);
    g->deliv_by_sec = calloc(g->cfg.seconds, sizeof *g->deliv_by_sec);
    g->scratch = malloc(CLI_GOSSIP_HEADER + MAX_PAYLOAD);
    if (!g->orig_by_sec || !g->deliv_by_sec || !g->scratch ||
        gen_init(&g->cur, g->cfg.seen_cap / 2 + 1) || gen_init(&g->old, g->cfg.seen_cap / 2 + 1)) {
        cli_gossip_free(g);
        return TM2_ENOMEM;
    }
    g->chan = (tm2_channel_desc){.id = CLI_GOSSIP_CHANNEL, .priority = 5, .send_queue_capacity = 256,
                                 .recv_message_capacity = CLI_GOSSIP_HEADER + MAX_PAYLOAD};
    g->reactor = (tm2_reactor){.name = "gossip", .channels = &g->chan, .n_channels = 1, .user = g,
                               .start = r_start, .stop = r_stop, .add_peer = r_add_peer,
                               .remove_peer = r_remove_peer, .receive = r_receive};
    *out = g;
    return 0;
}

void cli_gossip_free(cli_gossip *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_peers; i++)
        tm2_peer_unref(g->peers[i]);
    free(g->peers);
    free(g->cur.slot);
    free(g->old.slot);
    free(g->scratch);
    free((void *)g->orig_by_sec);
    free((void *)g->deliv_by_sec);
    free(g);
}

const tm2_reactor *cli_gossip_reactor(cli_gossip *g)
{
    return &g->reactor;
}

int cli_gossip_run(cli_gossip *g, tm2_switch *sw, uint32_t interval_ms, uint64_t until_ms)
{
    g->until_ms = until_ms;
    return tm2_switch_every(sw, interval_ms, tick, g);
}

/* ---- totals -------------------------------------------------------------- */

int cli_gossip_totals_init(cli_gossip_totals *t, uint32_t seconds)
{
    memset(t, 0, sizeof *t);
    t->seconds = seconds ? seconds : 1;
    t->orig_by_sec = calloc(t->seconds, sizeof *t->orig_by_sec);
    t->deliv_by_sec = calloc(t->seconds, sizeof *t->deliv_by_sec);
    if (!t->orig_by_sec || !t->deliv_by_sec) {
        cli_gossip_totals_free(t);
        return -1;
    }
    return 0;
}

void cli_gossip_totals_free(cli_gossip_totals *t)
{
    free(t->orig_by_sec);
    free(t->deliv_by_sec);
    t->orig_by_sec = t->deliv_by_sec = NULL;
}

static uint32_t clamp_sec(const cli_gossip_totals *t, uint64_t s)
{
    return s < t->seconds ? (uint32_t)s : t->seconds - 1;
}

void cli_gossip_add_totals(const cli_gossip *gc, cli_gossip_totals *t)
{
    cli_gossip *g = (cli_gossip *)gc;   /* atomics are read, not changed */
    t->originated += LOAD(g->originated);
    t->delivered += LOAD(g->delivered);
    t->duplicates += LOAD(g->duplicates);
    t->forwarded += LOAD(g->forwarded);
    t->send_failed += LOAD(g->send_failed);
    t->malformed += LOAD(g->malformed);
    for (uint32_t s = 0; s < g->cfg.seconds; s++) {
        t->orig_by_sec[clamp_sec(t, s)] += LOAD(g->orig_by_sec[s]);
        t->deliv_by_sec[clamp_sec(t, s)] += LOAD(g->deliv_by_sec[s]);
    }
    for (unsigned i = 0; i < CLI_HIST_BUCKETS; i++)
        t->hist[i] += LOAD(g->hist[i]);
}

void cli_gossip_totals_merge(cli_gossip_totals *a, const cli_gossip_totals *b)
{
    a->originated += b->originated;
    a->delivered += b->delivered;
    a->duplicates += b->duplicates;
    a->forwarded += b->forwarded;
    a->send_failed += b->send_failed;
    a->malformed += b->malformed;
    for (uint32_t s = 0; s < b->seconds; s++) {
        a->orig_by_sec[clamp_sec(a, s)] += b->orig_by_sec[s];
        a->deliv_by_sec[clamp_sec(a, s)] += b->deliv_by_sec[s];
    }
    for (unsigned i = 0; i < CLI_HIST_BUCKETS; i++)
        a->hist[i] += b->hist[i];
}

uint64_t cli_gossip_sum(const uint64_t *by_sec, uint32_t seconds, uint32_t from)
{
    uint64_t n = 0;
    for (uint32_t s = from; s < seconds; s++)
        n += by_sec[s];
    return n;
}

static cJSON *sparse(const uint64_t *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    if (!a)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!v[i])
            continue;
        cJSON *pair = cJSON_CreateArray();
        if (!pair || !cJSON_AddItemToArray(a, pair)) {
            cJSON_Delete(pair);
            cJSON_Delete(a);
            return NULL;
        }
        cJSON *k = cJSON_CreateNumber((double)i), *c = cJSON_CreateNumber((double)v[i]);
        if (!cJSON_AddItemToArray(pair, k)) {
            cJSON_Delete(k);
            cJSON_Delete(c);
            cJSON_Delete(a);
            return NULL;
        }
        if (!cJSON_AddItemToArray(pair, c)) {
            cJSON_Delete(c);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

cJSON *cli_gossip_totals_to_json(const cli_gossip_totals *t)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    const struct {
        const char *k;
        uint64_t v;
    } nums[] = {{"originated", t->originated}, {"delivered", t->delivered},
                {"duplicates", t->duplicates}, {"forwarded", t->forwarded},
                {"send_failed", t->send_failed}, {"malformed", t->malformed}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        if (!cJSON_AddNumberToObject(o, nums[i].k, (double)nums[i].v))
            goto fail;
    const struct {
        const char *k;
        const uint64_t *v;
        size_t n;
    } arrs[] = {{"orig_by_sec", t->orig_by_sec, t->seconds},
                {"deliv_by_sec", t->deliv_by_sec, t->seconds},
                {"latency_us_hist", t->hist, CLI_HIST_BUCKETS}};
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) {
        cJSON *a = sparse(arrs[i].v, arrs[i].n);
        if (!a)
            goto fail;
        if (!cJSON_AddItemToObject(o, arrs[i].k, a)) {
            cJSON_Delete(a);
            goto fail;
        }
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static int add_sparse(const cJSON *a, uint64_t *v, size_t n, bool clamp)
{
    if (!cJSON_IsArray(a))
        return -1;
    const cJSON *pair;
    cJSON_ArrayForEach(pair, a) {
        const cJSON *k = cJSON_GetArrayItem(pair, 0), *c = cJSON_GetArrayItem(pair, 1);
        if (!cJSON_IsArray(pair) || cJSON_GetArraySize(pair) != 2 || !cJSON_IsNumber(k) ||
            !cJSON_IsNumber(c) || k->valuedouble < 0 || c->valuedouble < 0 || k->valuedouble >= 1e15)
            return -1;
        size_t i = (size_t)k->valuedouble;
        if (i >= n) {
            if (!clamp)
                return -1;
            i = n - 1;
        }
        v[i] += (uint64_t)c->valuedouble;
    }
    return 0;
}

int cli_gossip_totals_add_json(cli_gossip_totals *t, const cJSON *j)
{
    uint64_t *fields[] = {&t->originated, &t->delivered, &t->duplicates,
                          &t->forwarded, &t->send_failed, &t->malformed};
    static const char *const names[] = {"originated", "delivered", "duplicates",
                                        "forwarded", "send_failed", "malformed"};
    if (!cJSON_IsObject(j))
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, names[i]);
        if (!cJSON_IsNumber(n) || n->valuedouble < 0)
            return -1;
        *fields[i] += (uint64_t)n->valuedouble;
    }
    if (add_sparse(cJSON_GetObjectItemCaseSensitive(j, "orig_by_sec"), t->orig_by_sec, t->seconds, true) ||
        add_sparse(cJSON_GetObjectItemCaseSensitive(j, "deliv_by_sec"), t->deliv_by_sec, t->seconds, true) ||
        add_sparse(cJSON_GetObjectItemCaseSensitive(j, "latency_us_hist"), t->hist, CLI_HIST_BUCKETS, false))
        return -1;
    return 0;
}
