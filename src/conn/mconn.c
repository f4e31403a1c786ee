/* MConnection core (see mconn.h). */
#include "conn/mconn.h"
#include "tm2p2p/defaults.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/amino.h"
#include "conn/flowrate.h"
#include "conn/packet.h"
#include "tm2p2p/defaults.h"

#define STATS_DECAY_MS 2000u            /* reference: recentlySent *= 0.8 every 2 s */
#define RING_MIN 8u
#define RECV_KEEP_MAX (1u << 20)        /* larger reassembly buffers are freed after use */

void tm2_mconn_config_default(tm2_mconn_config *cfg)
{
    *cfg = (tm2_mconn_config){
        .send_rate = TM2_DEFAULT_SEND_RATE,
        .recv_rate = TM2_DEFAULT_RECV_RATE,
        .max_packet_payload = TM2_DEFAULT_MAX_PACKET_PAYLOAD,
        .flush_throttle_ms = TM2_DEFAULT_FLUSH_THROTTLE_MS,
        .ping_interval_ms = TM2_DEFAULT_PING_INTERVAL_MS,
        .pong_timeout_ms = TM2_DEFAULT_PONG_TIMEOUT_MS,
        .max_send_buffer_bytes = TM2_DEFAULT_MAX_SEND_BUFFER_BYTES,
        .max_recv_buffer_bytes = TM2_DEFAULT_MAX_RECV_BUFFER_BYTES,
        .recv_assembly_timeout_ms = TM2_DEFAULT_RECV_ASSEMBLY_TIMEOUT_MS,
    };
}

/* The rules every core obeys; budgets additionally have a floor for node
 * configurations (a smaller budget could never carry one maximum block
 * response), which tests and fuzzing are free to go below. */
static int check_config(const tm2_mconn_config *c, bool budget_floor, const char **field)
{
    const char *bad = NULL;
    if (c->max_packet_payload == 0 || c->max_packet_payload > TM2_MAX_PACKET_PAYLOAD)
        bad = "max_packet_payload";
    else if (c->ping_interval_ms &&
             (c->pong_timeout_ms == 0 || c->pong_timeout_ms >= c->ping_interval_ms))
        bad = "pong_timeout_ms";
    else if (budget_floor && c->max_send_buffer_bytes &&
             c->max_send_buffer_bytes < TM2_MIN_BUFFER_BYTES)
        bad = "max_send_buffer_bytes";
    else if (budget_floor && c->max_recv_buffer_bytes &&
             c->max_recv_buffer_bytes < TM2_MIN_BUFFER_BYTES)
        bad = "max_recv_buffer_bytes";
    if (field)
        *field = bad;
    return bad ? TM2_EINVAL : 0;
}

int tm2__mconn_config_check(const tm2_mconn_config *c, const char **field)
{
    return check_config(c, true, field);
}

/* ---- messages ------------------------------------------------------------ */

tm2__msg *tm2__msg_alloc(size_t len)
{
    if (len > SIZE_MAX - sizeof(tm2__msg))
        return NULL;
    tm2__msg *m = malloc(sizeof(tm2__msg) + len);
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    m->len = len;
    return m;
}

tm2__msg *tm2__msg_new(const void *data, size_t len)
{
    tm2__msg *m = tm2__msg_alloc(len);
    if (m && len)
        memcpy(m->data, data, len);
    return m;
}

void tm2__msg_unref(tm2__msg *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

tm2_msg *tm2_msg_new(const void *data, size_t len)
{
    return len && !data ? NULL : tm2__msg_new(data, len);
}

tm2_msg *tm2_msg_ref(tm2_msg *m) { return m ? tm2__msg_ref(m) : NULL; }
void tm2_msg_unref(tm2_msg *m) { tm2__msg_unref(m); }
const uint8_t *tm2_msg_data(const tm2_msg *m) { return m ? m->data : NULL; }
size_t tm2_msg_len(const tm2_msg *m) { return m ? m->len : 0; }

/* ---- the core ------------------------------------------------------------- */

typedef struct chan {
    tm2_channel_desc d;            /* defaults filled in */
    /* send side: a ring of waiting messages, grown on demand up to capacity */
    tm2__msg **q;
    size_t q_size, q_head, q_count;
    tm2__msg *sending;             /* message being split into packets */
    size_t sent;                   /* bytes of it already in packets */
    int64_t recently_sent;
    /* receive side */
    uint8_t *rbuf;
    size_t rlen, rcap;
    bool assembling;               /* a partial packet arrived, EOF not yet */
    uint64_t asm_deadline;         /* when that message must be complete */
} chan;

/* Sized for an idle connection: the channels registered only, and buffers
 * (send rings, reassembly, staging, the error text) allocated when used. */
struct tm2__mconn {
    tm2_mconn_config cfg;
    tm2__mconn_callbacks cb;
    void *user;
    size_t n;
    uint8_t ids[TM2_MCONN_MAX_CHANNELS];   /* ch[i].d.id, scanned by lookup */
    size_t max_pkt;
    uint64_t created;
    uint64_t next_decay;
    tm2__flow send_flow, recv_flow;
    /* keepalive */
    uint64_t next_ping, pong_deadline;
    bool ping_owed, pong_owed, pong_armed;
    /* Round trips: a Pong carries nothing, so the first one after a Ping
     * closes it. pings_out counts Pings written and not answered (a peer
     * may answer several with one Pong); ping_sent is the low 32 bits of
     * when the earliest of them was written, while rtt_open. A Pong with
     * none out was never asked for: its sender could be timing Pongs to
     * look near, so it gets no measurement again (rtt_off). */
    bool rtt_open, rtt_off;
    uint8_t pings_out;
    uint32_t ping_sent;
    uint32_t rtt_ms, min_rtt_ms;   /* 0: none yet */
    /* flush throttle */
    bool unflushed, flush_now;
    uint64_t unflushed_since;
    /* budgets: payload bytes admitted for sending, bytes of partial messages */
    size_t send_buffered, recv_buffered;
    bool budget_refused;           /* a reservation failed since the last release */
    uint32_t refused_ch;           /* channels (by index) whose try_send it refused */
    bool budget_notify;            /* budget freed since: tell them in produce */
    /* the earliest assembly deadline, UINT64_MAX when nothing is assembling */
    uint64_t asm_next;
    uint64_t feed_now;
    bool in_cb;
    int err;
    char *reason;                  /* NULL: none, or no memory for it */
    /* a packet split across feed calls (max_pkt bytes while one is);
     * total is 0 until its prefix is known */
    uint8_t *stage;
    size_t stage_len, stage_total;
    chan ch[];
};

#define REASON_LEN 96

static int fail(tm2__mconn *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(tm2__mconn *c, int err, const char *fmt, ...)
{
    if (!c->err) {
        c->err = err;
        if ((c->reason = malloc(REASON_LEN)) != NULL) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->reason, REASON_LEN, fmt, ap);
            va_end(ap);
        }
    }
    return c->err;
}

static chan *lookup(const tm2__mconn *c, uint8_t id)
{
    /* At most 16 bytes to scan: cheaper to keep than a 256-entry table. */
    for (size_t i = 0; i < c->n; i++)
        if (c->ids[i] == id)
            return (chan *)&c->ch[i];
    return NULL;
}

int tm2__mconn_new(tm2__mconn **out, const tm2_mconn_config *cfg, const tm2_channel_desc *descs,
                   size_t n_descs, const tm2__mconn_callbacks *cb, void *user, uint64_t now)
{
    tm2_mconn_config def;
    if (!out || !descs || n_descs == 0 || n_descs > TM2_MCONN_MAX_CHANNELS)
        return TM2_EINVAL;
    *out = NULL;
    if (!cfg) {
        tm2_mconn_config_default(&def);
        cfg = &def;
    }
    int e = check_config(cfg, false, NULL);
    if (e)
        return e;
    tm2__mconn *c = calloc(1, sizeof *c + n_descs * sizeof(chan));
    if (!c)
        return TM2_ENOMEM;
    c->cfg = *cfg;
    if (cb)
        c->cb = *cb;
    c->user = user;
    c->max_pkt = tm2__packet_max_size(cfg->max_packet_payload);
    for (size_t i = 0; i < n_descs; i++) {
        tm2_channel_desc d = descs[i];
        c->n = i;   /* lookup sees the channels so far */
        if (d.priority == 0 || lookup(c, d.id)) {
            free(c);
            return TM2_EINVAL;
        }
        if (!d.send_queue_capacity)
            d.send_queue_capacity = TM2_CHANNEL_DEFAULT_SEND_QUEUE_CAPACITY;
        if (!d.recv_buffer_capacity)
            d.recv_buffer_capacity = TM2_CHANNEL_DEFAULT_RECV_BUFFER_CAPACITY;
        if (!d.recv_message_capacity)
            d.recv_message_capacity = TM2_CHANNEL_DEFAULT_RECV_MESSAGE_CAPACITY;
        c->ch[i].d = d;
        c->ids[i] = d.id;
    }
    c->n = n_descs;
    c->created = now;
    c->next_decay = now + STATS_DECAY_MS;
    c->next_ping = now + cfg->ping_interval_ms;
    c->asm_next = UINT64_MAX;
    tm2__flow_init(&c->send_flow, cfg->send_rate, now);
    tm2__flow_init(&c->recv_flow, cfg->recv_rate, now);
    *out = c;
    return 0;
}

void tm2__mconn_free(tm2__mconn *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        chan *ch = &c->ch[i];
        for (size_t k = 0, j = ch->q_head; k < ch->q_count; k++) {
            tm2__msg_unref(ch->q[j]);
            if (++j == ch->q_size)
                j = 0;
        }
        tm2__msg_unref(ch->sending);
        free(ch->q);
        free(ch->rbuf);
    }
    free(c->stage);
    free(c->reason);
    free(c);
}

int tm2__mconn_error(const tm2__mconn *c, const char **reason)
{
    if (reason)
        *reason = c->reason ? c->reason : "";
    return c->err;
}

size_t tm2__mconn_max_packet_size(const tm2__mconn *c) { return c->max_pkt; }

/* ---- sending -------------------------------------------------------------- */

static int ring_grow(chan *ch)
{
    size_t cap = ch->d.send_queue_capacity;
    size_t nsize = ch->q_size ? ch->q_size * 2 : RING_MIN;
    if (nsize > cap || nsize < ch->q_size)
        nsize = cap;
    if (nsize > SIZE_MAX / sizeof(tm2__msg *))
        return TM2_ENOMEM;
    tm2__msg **nq = malloc(nsize * sizeof *nq);
    if (!nq)
        return TM2_ENOMEM;
    for (size_t k = 0, j = ch->q_head; k < ch->q_count; k++) {
        nq[k] = ch->q[j];
        if (++j == ch->q_size)
            j = 0;
    }
    free(ch->q);
    ch->q = nq;
    ch->q_size = nsize;
    ch->q_head = 0;
    return 0;
}

int tm2__mconn_reserve(tm2__mconn *c, size_t len)
{
    if (c->err)
        return c->err;
    size_t budget = c->cfg.max_send_buffer_bytes;
    if (!budget)
        return 0;
    if (len > budget)
        return TM2_ETOOBIG;   /* no amount of waiting makes it fit */
    if (len > budget - c->send_buffered) {
        c->budget_refused = true;
        return TM2_EFULL;
    }
    c->send_buffered += len;
    return 0;
}

/* Gives len admitted bytes back. Whoever was refused since the last release
 * is told from produce (on the glue's thread, where callbacks belong). */
static void release(tm2__mconn *c, size_t len)
{
    if (!c->cfg.max_send_buffer_bytes)
        return;
    c->send_buffered -= len;
    if (c->budget_refused)
        c->budget_notify = true;
}

void tm2__mconn_unreserve(tm2__mconn *c, size_t len) { release(c, len); }

bool tm2__mconn_budget_notify_pending(const tm2__mconn *c) { return c->budget_notify; }

/* Channels whose try_send was refused for budget get on_send_room, as if
 * their queue had been full (a sender driven by that callback would
 * otherwise never hear of the freed budget); waiting senders get
 * on_send_budget. */
static void notify_budget(tm2__mconn *c)
{
    uint32_t chs = c->refused_ch;
    c->refused_ch = 0;
    c->budget_refused = false;
    c->budget_notify = false;
    c->in_cb = true;
    for (size_t i = 0; chs && i < c->n; i++)
        if ((chs >> i & 1u) && c->cb.on_send_room)
            c->cb.on_send_room(c->user, c->ch[i].d.id);
    if (c->cb.on_send_budget)
        c->cb.on_send_budget(c->user);
    c->in_cb = false;
}

size_t tm2__mconn_send_buffered(const tm2__mconn *c) { return c->send_buffered; }

size_t tm2__mconn_recv_buffered(const tm2__mconn *c) { return c->recv_buffered; }

/* The checks every send makes before it takes budget or a queue slot. */
static int admit(tm2__mconn *c, uint8_t id, const tm2__msg *m, chan **out)
{
    if (c->err)
        return c->err;
    chan *ch = lookup(c, id);
    if (!ch)
        return TM2_ECHANNEL;
    if (!m)
        return TM2_EINVAL;
    if (ch->q_count >= ch->d.send_queue_capacity)
        return TM2_EFULL;
    *out = ch;
    return 0;
}

static int enqueue(chan *ch, tm2__msg *m)
{
    if (ch->q_count == ch->q_size) {
        int e = ring_grow(ch);
        if (e)
            return e;
    }
    size_t j = ch->q_head + ch->q_count;
    if (j >= ch->q_size)
        j -= ch->q_size;
    ch->q[j] = tm2__msg_ref(m);
    ch->q_count++;
    return 0;
}

int tm2__mconn_send_reserved(tm2__mconn *c, uint8_t id, tm2__msg *m)
{
    chan *ch;
    int e = admit(c, id, m, &ch);
    return e ? e : enqueue(ch, m);
}

int tm2__mconn_try_send(tm2__mconn *c, uint8_t id, tm2__msg *m)
{
    chan *ch;
    int e = admit(c, id, m, &ch);
    if (e)
        return e;
    if ((e = tm2__mconn_reserve(c, m->len)) != 0) {
        if (e == TM2_EFULL)
            c->refused_ch |= 1u << (unsigned)(ch - c->ch);
        return e;
    }
    if ((e = enqueue(ch, m)) != 0)
        tm2__mconn_unreserve(c, m->len);
    return e;
}

int tm2__mconn_send_room(const tm2__mconn *c, uint8_t id)
{
    const chan *ch = lookup(c, id);
    if (!ch)
        return TM2_ECHANNEL;
    size_t room = ch->d.send_queue_capacity - ch->q_count;
    return room > INT_MAX ? INT_MAX : (int)room;
}

/* recentlySent decays by x0.8 (truncated) on every 2 s tick up to now. The
 * scheduler only reads it when producing, so the ticks are applied lazily. */
static void apply_decay(tm2__mconn *c, uint64_t now)
{
    if (now < c->next_decay)
        return;
    uint64_t ticks = (now - c->next_decay) / STATS_DECAY_MS + 1;
    c->next_decay += ticks * STATS_DECAY_MS;
    for (size_t i = 0; i < c->n; i++) {
        int64_t rs = c->ch[i].recently_sent;
        for (uint64_t t = 0; t < ticks && rs; t++)
            rs = (int64_t)((double)rs * 0.8);
        c->ch[i].recently_sent = rs;
    }
}

static bool data_pending(const tm2__mconn *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->ch[i].sending || c->ch[i].q_count)
            return true;
    return false;
}

/* Moves the head of ch's queue into ch->sending, like the reference's channel
 * scan does; tells the glue when a full queue gains room. */
static void pull(tm2__mconn *c, chan *ch)
{
    bool was_full = ch->q_count == ch->d.send_queue_capacity;
    ch->sending = ch->q[ch->q_head];
    ch->sent = 0;
    if (++ch->q_head == ch->q_size)
        ch->q_head = 0;
    ch->q_count--;
    if (was_full && c->cb.on_send_room) {
        c->in_cb = true;
        c->cb.on_send_room(c->user, ch->d.id);
        c->in_cb = false;
    }
}

/* The reference's choice: among channels with data, the least
 * recentlySent/priority as float32, first registered on ties. */
static chan *select_channel(tm2__mconn *c)
{
    chan *best = NULL;
    float best_ratio = 0;
    for (size_t i = 0; i < c->n; i++) {
        chan *ch = &c->ch[i];
        if (!ch->sending) {
            if (!ch->q_count)
                continue;
            pull(c, ch);
        }
        float ratio = (float)ch->recently_sent / (float)ch->d.priority;
        if (!best || ratio < best_ratio) {
            best = ch;
            best_ratio = ratio;
        }
    }
    return best;
}

bool tm2__mconn_want_produce(tm2__mconn *c, uint64_t now)
{
    if (c->err || c->in_cb)
        return false;
    if (c->pong_owed || c->ping_owed || c->budget_notify)
        return true;
    return data_pending(c) && tm2__flow_blocked_until(&c->send_flow, now) == 0;
}

static size_t put_control(tm2__mconn *c, uint8_t *out, size_t room, bool pong, uint64_t now)
{
    int n = pong ? tm2__packet_encode_pong(out, room) : tm2__packet_encode_ping(out, room);
    if (n < 0)
        return 0;
    tm2__flow_update(&c->send_flow, (size_t)n, now);
    c->flush_now = true;
    return (size_t)n;
}

/* Timed from when the Ping is written, not when it was owed: a write held
 * back by a full socket queue is our delay, not the path's. */
static void ping_written(tm2__mconn *c, uint64_t now)
{
    if (c->pings_out < UINT8_MAX)
        c->pings_out++;
    if (!c->rtt_open) {
        c->rtt_open = true;
        c->ping_sent = (uint32_t)now;
    }
}

static void pong_received(tm2__mconn *c)
{
    if (c->rtt_off)
        return;
    if (!c->pings_out) {
        c->rtt_off = true;
        c->rtt_open = false;
        c->rtt_ms = c->min_rtt_ms = 0;
        return;
    }
    c->pings_out--;
    if (!c->rtt_open)
        return;   /* a later Ping's answer: its time was not kept */
    c->rtt_open = false;
    /* Modulo 2^32: exact for any round trip under 49 days. Under 1 ms reads
     * as 1, so 0 keeps meaning "none". */
    uint32_t rtt = (uint32_t)c->feed_now - c->ping_sent;
    c->rtt_ms = rtt ? rtt : 1;
    if (!c->min_rtt_ms || c->rtt_ms < c->min_rtt_ms)
        c->min_rtt_ms = c->rtt_ms;
}

int tm2__mconn_produce(tm2__mconn *c, uint8_t *out, size_t cap, uint64_t now)
{
    if (c->in_cb)
        return TM2_ESTATE;
    if (c->err)
        return c->err;
    if (cap > INT_MAX)
        cap = INT_MAX;
    apply_decay(c, now);
    if (c->budget_notify)
        notify_budget(c);   /* freed by a sender giving up */
    size_t off = 0;
    if (c->pong_owed) {
        size_t n = put_control(c, out, cap, true, now);
        if (!n)
            return 0;
        off += n;
        c->pong_owed = false;
    }
    if (c->ping_owed) {
        size_t n = put_control(c, out + off, cap - off, false, now);
        if (!n)
            return (int)off;
        off += n;
        c->ping_owed = false;
        ping_written(c, now);
    }
    size_t max_payload = c->cfg.max_packet_payload;
    while (tm2__flow_blocked_until(&c->send_flow, now) == 0) {
        chan *ch = select_channel(c);
        if (!ch)
            break;
        tm2__msg *m = ch->sending;
        size_t left = m->len - ch->sent;
        size_t chunk = left < max_payload ? left : max_payload;
        uint8_t eof = chunk == left;
        int n = tm2__packet_encode_msg(out + off, cap - off, ch->d.id, eof, m->data + ch->sent, chunk);
        if (n < 0)
            break;
        off += (size_t)n;
        ch->sent += chunk;
        ch->recently_sent += n;
        if (eof) {
            ch->sending = NULL;
            /* The message's budget is free once its last packet is out. */
            release(c, m->len);
            tm2__msg_unref(m);
            if (c->budget_notify)
                notify_budget(c);
        }
        tm2__flow_update(&c->send_flow, (size_t)n, now);
        if (!c->unflushed) {
            c->unflushed = true;
            c->unflushed_since = now;
        }
    }
    return (int)off;
}

bool tm2__mconn_flush_due(const tm2__mconn *c, uint64_t now)
{
    return c->flush_now || (c->unflushed && now >= c->unflushed_since + c->cfg.flush_throttle_ms);
}

void tm2__mconn_flushed(tm2__mconn *c)
{
    c->flush_now = false;
    c->unflushed = false;
}

/* ---- receiving ------------------------------------------------------------ */

static void deliver(tm2__mconn *c, uint8_t id, const uint8_t *data, size_t len)
{
    if (!c->cb.on_receive)
        return;
    c->in_cb = true;
    int r = c->cb.on_receive(c->user, id, data ? data : (const uint8_t *)"", len);
    c->in_cb = false;
    if (r)
        fail(c, r < 0 ? r : TM2_EPROTO, "receive handler for channel 0x%02x failed (%d)", id, r);
}

static int reserve(tm2__mconn *c, chan *ch, size_t need)
{
    if (need <= ch->rcap)
        return 0;
    size_t ncap = ch->rcap ? ch->rcap : ch->d.recv_buffer_capacity;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    if (ncap > ch->d.recv_message_capacity)
        ncap = ch->d.recv_message_capacity;   /* need fits: it was checked against it */
    uint8_t *nb = realloc(ch->rbuf, ncap);
    if (!nb)
        return fail(c, TM2_ENOMEM, "no memory for a %zu-byte message on channel 0x%02x", need, ch->d.id);
    ch->rbuf = nb;
    ch->rcap = ncap;
    return 0;
}

static void asm_expired(tm2__mconn *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->ch[i].assembling && c->ch[i].asm_deadline == c->asm_next) {
            fail(c, TM2_ETIMEDOUT,
                 "recv assembly timeout: channel 0x%02x did not complete a message within %u ms",
                 c->ch[i].d.id, c->cfg.recv_assembly_timeout_ms);
            return;
        }
}

static void asm_done(tm2__mconn *c, chan *ch)
{
    ch->assembling = false;
    if (ch->asm_deadline != c->asm_next)
        return;
    c->asm_next = UINT64_MAX;
    for (size_t i = 0; i < c->n; i++)
        if (c->ch[i].assembling && c->ch[i].asm_deadline < c->asm_next)
            c->asm_next = c->ch[i].asm_deadline;
}

static void on_msg(tm2__mconn *c, const tm2__packet *p)
{
    chan *ch = lookup(c, p->channel);
    if (!ch) {
        fail(c, TM2_ECHANNEL, "unknown channel 0x%02x", p->channel);
        return;
    }
    if (p->len > ch->d.recv_message_capacity - ch->rlen) {
        fail(c, TM2_EMSGSIZE, "message on channel 0x%02x over its capacity of %zu bytes",
             p->channel, ch->d.recv_message_capacity);
        return;
    }
    /* Like the reference, every data packet counts, a one-packet message
     * too: it is buffered (in the input) while it is handled. */
    size_t budget = c->cfg.max_recv_buffer_bytes;
    if (budget && p->len > budget - c->recv_buffered) {
        fail(c, TM2_EMSGSIZE, "total receive buffer budget exceeded: %zu > %zu bytes",
             c->recv_buffered + p->len, budget);
        return;
    }
    bool last = p->eof == 1;
    if (last && ch->rlen == 0) {
        if (ch->assembling)
            asm_done(c, ch);   /* empty partial packets came first */
        deliver(c, p->channel, p->data, p->len);
        return;
    }
    if (p->len) {
        if (reserve(c, ch, ch->rlen + p->len))
            return;
        memcpy(ch->rbuf + ch->rlen, p->data, p->len);
        ch->rlen += p->len;
        c->recv_buffered += p->len;
    }
    if (!last && !ch->assembling && c->cfg.recv_assembly_timeout_ms) {
        /* Anchored to the first partial packet: later ones never move it. */
        ch->assembling = true;
        ch->asm_deadline = c->feed_now + c->cfg.recv_assembly_timeout_ms;
        if (ch->asm_deadline < c->asm_next)
            c->asm_next = ch->asm_deadline;
    }
    if (last) {
        size_t len = ch->rlen;
        ch->rlen = 0;
        c->recv_buffered -= len;
        if (ch->assembling)
            asm_done(c, ch);
        deliver(c, p->channel, ch->rbuf, len);
        size_t keep = ch->d.recv_buffer_capacity > RECV_KEEP_MAX ? ch->d.recv_buffer_capacity : RECV_KEEP_MAX;
        if (ch->rcap > keep) {
            free(ch->rbuf);
            ch->rbuf = NULL;
            ch->rcap = 0;
        }
    }
}

static void on_packet(tm2__mconn *c, const tm2__packet *p)
{
    switch (p->type) {
    case TM2__PKT_PING:
        c->pong_owed = true;   /* pings arriving before it is sent share one pong */
        break;
    case TM2__PKT_PONG:
        c->pong_armed = false; /* any pong stops the timer */
        pong_received(c);
        break;
    default:
        on_msg(c, p);
        break;
    }
}

static int bad_packet(tm2__mconn *c, int e)
{
    if (e == TM2_ETOOBIG)
        return fail(c, e, "packet over %zu bytes", c->max_pkt);
    return fail(c, e, "malformed packet: %s", tm2_strerror(e));
}

/* Total length of the staged packet once its prefix is complete, else 0. */
static size_t staged_total(const tm2__mconn *c)
{
    tm2__amino_rd r;
    uint64_t body;
    tm2__amino_rd_init(&r, c->stage, c->stage_len);
    if (tm2__amino_uvarint(&r, &body))
        return 0;
    return (size_t)(r.p - c->stage) + (size_t)body;   /* bounded: the prefix was checked */
}

/* Decodes the fully staged packet. */
static int run_stage(tm2__mconn *c)
{
    tm2__packet p;
    size_t used;
    int e = tm2__packet_decode(c->stage, c->stage_len, c->max_pkt, &p, &used);
    if (e) {
        c->stage_len = c->stage_total = 0;
        return bad_packet(c, e);
    }
    on_packet(c, &p);   /* p points into the stage until it returns */
    c->stage_len = c->stage_total = 0;
    free(c->stage);
    c->stage = NULL;
    return c->err;
}

/* Appends input to the staged packet; returns the bytes taken. */
static size_t stage_more(tm2__mconn *c, const uint8_t *in, size_t len)
{
    size_t taken = 0;
    /* Prefix first, a byte at a time (at most 10), so nothing of the next
     * packet is staged and a bad prefix fails at once. */
    while (!c->stage_total && taken < len) {
        c->stage[c->stage_len++] = in[taken++];
        const uint8_t *body;
        size_t blen, used;
        int e = tm2__amino_sized(c->stage, c->stage_len, c->max_pkt, &body, &blen, &used);
        if (e == 0) {
            run_stage(c);
            return taken;
        }
        if (e != TM2_EAGAIN) {
            bad_packet(c, e);
            return taken;
        }
        c->stage_total = staged_total(c);
        if (!c->stage_total && c->stage_len >= TM2_UVARINT_MAX_LEN) {
            bad_packet(c, TM2_EOVERFLOW);
            return taken;
        }
    }
    if (!c->stage_total)
        return taken;
    if (c->stage_total > c->max_pkt) {
        bad_packet(c, TM2_ETOOBIG);
        return taken;
    }
    size_t k = c->stage_total - c->stage_len;
    if (k > len - taken)
        k = len - taken;
    memcpy(c->stage + c->stage_len, in + taken, k);
    c->stage_len += k;
    taken += k;
    if (c->stage_len == c->stage_total)
        run_stage(c);
    return taken;
}

int tm2__mconn_feed(tm2__mconn *c, const uint8_t *in, size_t len, uint64_t now)
{
    if (c->in_cb)
        return TM2_ESTATE;
    if (c->err)
        return c->err;
    /* A message completing after its deadline is late, even when the glue
     * reads before it runs the timers. */
    if (now >= c->asm_next) {
        asm_expired(c);
        return c->err;
    }
    c->feed_now = now;
    tm2__flow_update(&c->recv_flow, len, now);
    while (len && !c->err) {
        if (c->stage_len) {
            size_t k = stage_more(c, in, len);
            in += k;
            len -= k;
            continue;
        }
        tm2__packet p;
        size_t used;
        int e = tm2__packet_decode(in, len, c->max_pkt, &p, &used);
        if (e == TM2_EAGAIN) {
            /* The rest of the input is the start of one packet (< max_pkt). */
            if (len >= c->max_pkt) {
                bad_packet(c, TM2_ETOOBIG);
                break;
            }
            if (!c->stage && !(c->stage = malloc(c->max_pkt))) {
                fail(c, TM2_ENOMEM, "no memory to stage a packet");
                break;
            }
            memcpy(c->stage, in, len);
            c->stage_len = len;
            c->stage_total = staged_total(c);
            break;
        }
        if (e) {
            bad_packet(c, e);
            break;
        }
        on_packet(c, &p);
        in += used;
        len -= used;
    }
    return c->err;
}

uint64_t tm2__mconn_recv_paused_until(tm2__mconn *c, uint64_t now)
{
    uint64_t t = tm2__flow_blocked_until(&c->recv_flow, now);
    return t > now ? t : 0;
}

/* ---- timers --------------------------------------------------------------- */

static uint64_t min64(uint64_t a, uint64_t b) { return a < b ? a : b; }

uint64_t tm2__mconn_next_deadline(tm2__mconn *c, uint64_t now)
{
    uint64_t d = UINT64_MAX;
    if (c->err)
        return d;
    if (c->cfg.ping_interval_ms)
        d = min64(d, c->next_ping);
    if (c->pong_armed)
        d = min64(d, c->pong_deadline);
    d = min64(d, c->asm_next);
    if (c->unflushed && !c->flush_now)
        d = min64(d, c->unflushed_since + c->cfg.flush_throttle_ms);
    if (data_pending(c)) {
        uint64_t t = tm2__flow_blocked_until(&c->send_flow, now);
        if (t)
            d = min64(d, t);
    }
    uint64_t r = tm2__mconn_recv_paused_until(c, now);
    if (r)
        d = min64(d, r);
    return d;
}

int tm2__mconn_handle_expiry(tm2__mconn *c, uint64_t now)
{
    if (c->in_cb)
        return TM2_ESTATE;
    if (c->err)
        return c->err;
    if (c->pong_armed && now >= c->pong_deadline)
        return fail(c, TM2_EPONG, "pong timeout");
    if (now >= c->asm_next) {
        asm_expired(c);
        return c->err;
    }
    uint64_t iv = c->cfg.ping_interval_ms;
    if (iv && now >= c->next_ping) {
        /* Like a ticker: missed ticks are dropped, the phase is kept. The
         * pong timer starts now rather than when the ping is written, so a
         * peer that stops reading cannot stall us past it. */
        c->next_ping += ((now - c->next_ping) / iv + 1) * iv;
        c->ping_owed = true;
        /* A pong still owed keeps its deadline (it can outlast the interval
         * only when stalls were credited to it). */
        uint64_t d = now + c->cfg.pong_timeout_ms;
        if (!c->pong_armed || d < c->pong_deadline)
            c->pong_deadline = d;
        c->pong_armed = true;
    }
    apply_decay(c, now);
    return 0;
}

void tm2__mconn_credit_stall(tm2__mconn *c, uint64_t ms)
{
    if (c->asm_next != UINT64_MAX) {
        for (size_t i = 0; i < c->n; i++)
            if (c->ch[i].assembling)
                c->ch[i].asm_deadline += ms;
        c->asm_next += ms;
    }
    if (c->pong_armed)
        c->pong_deadline += ms;
}

/* ---- status --------------------------------------------------------------- */

void tm2__mconn_status(tm2__mconn *c, uint64_t now, tm2_mconn_status *st)
{
    memset(st, 0, sizeof *st);
    apply_decay(c, now);
    st->duration_ms = now > c->created ? now - c->created : 0;
    tm2__flow_status(&c->send_flow, now, &st->send);
    tm2__flow_status(&c->recv_flow, now, &st->recv);
    st->n_channels = c->n;
    for (size_t i = 0; i < c->n; i++) {
        const chan *ch = &c->ch[i];
        tm2_channel_status *cs = &st->channels[i];
        cs->id = ch->d.id;
        cs->priority = ch->d.priority;
        cs->send_queue_capacity = ch->d.send_queue_capacity;
        cs->send_queue_size = ch->q_count + (ch->sending ? 1u : 0u);
        cs->recently_sent = ch->recently_sent;
    }
    st->rtt_ms = c->rtt_ms;
    st->min_rtt_ms = c->min_rtt_ms;
}

uint32_t tm2__mconn_min_rtt(const tm2__mconn *c) { return c->min_rtt_ms; }
