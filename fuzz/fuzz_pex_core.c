/* The discovery reactor's logic (src/discovery/pex_core.c) driven by the
 * fuzzer: peers come and go, send arbitrary or well-formed discovery
 * messages, ticks pass and dials fail, in any order, with the switch's
 * stop calling back into the core or not.
 *
 * Input: one byte of setup (bit 0 seed mode, bits 1-2 max_addrs 30/5/2/1,
 * bit 3 stops remove the peer at once, bit 4 a book path with save ops
 * that model the background writer without touching the disk), then
 * operations, each a byte (value % 8) followed by its arguments. Two IDs
 * are the switch's seeds and two its persistent peers.
 *
 * Invariants beyond "no crash, no leak": every Response we send decodes,
 * holds 1..max_addrs distinct valid addresses and never the asker, a
 * private peer or ourselves; every dial is to a valid address that is not
 * ours, a seed's or a persistent peer's; seeds never enter the book; a
 * stop is asked for a connected peer only, and once, and outside seed mode
 * only for abuse (seeds are kept); after a tick every outbound peer still
 * held whose address the book holds has a live connection mark. Book saves:
 * a generation that waits is never submitted again, generations never go
 * back, every finished write is counted once, and after stop the book is
 * clean. */
#include <stdlib.h>
#include <string.h>

#include "discovery/addrbook.h"
#include "discovery/pex_core.h"
#include "discovery/pex_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

#define N_IDS    40          /* node identities; SELF is the last */
#define SELF     (N_IDS - 1)
#define N_SLOTS  16          /* peers that may be connected at once */
#define SEED_A   30          /* the switch's seeds */
#define SEED_B   31
#define PERS_A   32          /* the switch's persistent peers */
#define PERS_B   33
#define SW_PRIV  12          /* private through the switch's list only */

static tm2_netaddr addrs[N_IDS];
static bool ready;

static void init_ids(void)
{
    for (int i = 0; i < N_IDS; i++) {
        uint8_t seed[32] = {0};
        seed[0] = (uint8_t)i;
        seed[1] = 0xf2;
        tm2_node_key k;
        tm2_node_key_from_seed(&k, seed);
        memset(&addrs[i], 0, sizeof addrs[i]);
        tm2_node_key_id(&k, &addrs[i].id);
        addrs[i].ip[10] = addrs[i].ip[11] = 0xff;
        addrs[i].ip[12] = 127;
        addrs[i].ip[15] = (uint8_t)(i + 1);
        addrs[i].port = (uint16_t)(26000 + i);
        tm2_node_key_wipe(&k);
    }
    ready = true;
}

typedef struct slot {
    bool present;
    bool stop_asked;
    int node;                /* index into addrs */
    bool is_private;
    bool outbound;
} slot;

typedef struct harness {
    slot s[N_SLOTS];
    tm2__pex *x;
    size_t max_addrs;
    bool remove_on_stop;
    bool seed_mode;
    /* The modelled writer: one waiting buffer (latest wins), finished on
     * demand by operation 7. */
    bool waiting;
    uint64_t wait_gen, last_gen;
    uint64_t oks, fails;
    tm2__pex_save_result res;
} harness;

static int node_of_id(const tm2_id *id)
{
    for (int i = 0; i < N_IDS; i++)
        if (strcmp(addrs[i].id.s, id->s) == 0)
            return i;
    return -1;
}

static int h_send(void *user, void *peer, const uint8_t *msg, size_t len)
{
    harness *h = user;
    slot *sl = peer;
    CHECK(sl->present);
    tm2__pex_msg m;
    tm2_netaddr got[TM2__PEX_MAX_SHARED];
    CHECK(tm2__pex_decode(msg, len, &m, got, TM2__PEX_MAX_SHARED) == 0);
    if (m.kind == TM2__PEX_REQUEST)
        return 0;
    CHECK(m.kind == TM2__PEX_RESPONSE);
    CHECK(m.n_addrs >= 1 && m.n_addrs <= h->max_addrs);
    CHECK(tm2__pex_response_validate(got, m.n_addrs, NULL) == 0);
    for (size_t i = 0; i < m.n_addrs; i++) {
        int n = node_of_id(&got[i].id);
        CHECK(n >= 0 && n != SELF && n != SW_PRIV && n != sl->node);
        for (int k = 0; k < N_SLOTS; k++)
            CHECK(!(h->s[k].present && h->s[k].node == n && h->s[k].is_private));
        for (size_t j = i + 1; j < m.n_addrs; j++)
            CHECK(strcmp(got[i].id.s, got[j].id.s) != 0);
    }
    return 0;
}

static bool is_seed_node(int n) { return n == SEED_A || n == SEED_B; }
static bool is_persistent_node(int n) { return n == PERS_A || n == PERS_B; }

static void h_dial(void *user, const tm2_netaddr *a, size_t n)
{
    (void)user;
    CHECK(n > 0);
    for (size_t i = 0; i < n; i++) {
        CHECK(tm2_netaddr_validate(&a[i]) == 0);
        int node = node_of_id(&a[i].id);
        CHECK(node != SELF && !is_seed_node(node) && !is_persistent_node(node));
    }
}

static void h_stop(void *user, void *peer, int reason)
{
    harness *h = user;
    slot *sl = peer;
    (void)reason;
    CHECK(sl->present && !sl->stop_asked);
    CHECK(reason != 0 || h->seed_mode);
    sl->stop_asked = true;
    if (h->remove_on_stop) {
        CHECK(tm2__pex_remove_peer(h->x, sl));
        sl->present = false;
    }
}

static void h_counts(void *user, size_t *in, size_t *out, size_t *dialing)
{
    (void)user;
    *in = *out = 0;
    *dialing = 1;
}

static bool h_is_private(void *user, const tm2_id *id)
{
    (void)user;
    return strcmp(id->s, addrs[SW_PRIV].id.s) == 0;
}

static bool h_is_seed(void *user, const tm2_id *id)
{
    (void)user;
    return is_seed_node(node_of_id(id));
}

static bool h_is_persistent(void *user, const tm2_id *id)
{
    (void)user;
    return is_persistent_node(node_of_id(id));
}

static void check_book(const harness *h, tm2__pex_time t, bool ticked)
{
    tm2__addrbook *b = tm2__pex_book(h->x);
    CHECK(!tm2__addrbook_find(b, &addrs[SEED_A].id) && !tm2__addrbook_find(b, &addrs[SEED_B].id));
    CHECK(tm2__addrbook_check(b) == 0);
    for (size_t i = 0; i < tm2__addrbook_size(b); i++)
        CHECK(tm2__addrbook_at(b, i)->last_connected <= t.unix_s);
    if (!ticked)
        return;
    for (int k = 0; k < N_SLOTS; k++) {
        const slot *sl = &h->s[k];
        if (!sl->present || !sl->outbound || sl->stop_asked)
            continue;
        const tm2__addrbook_entry *e = tm2__addrbook_find(b, &addrs[sl->node].id);
        if (e && tm2_netaddr_equal(&e->addr, &addrs[sl->node]))
            CHECK(tm2__addrbook_connected(e, t.unix_s));
    }
}

static int h_save_submit(void *user, char *text, size_t len, uint64_t gen)
{
    harness *h = user;
    CHECK(text && text[len] == '\0' && len <= TM2__ADDRBOOK_FILE_MAX);
    CHECK(!(h->waiting && gen == h->wait_gen));
    CHECK(gen >= h->last_gen);
    free(text);
    h->last_gen = gen;
    h->waiting = true;
    h->wait_gen = gen;
    return 0;
}

static void h_finish(harness *h, bool ok)
{
    if (!h->waiting)
        return;
    h->waiting = false;
    h->res.gen = h->wait_gen;
    h->res.rc = ok ? 0 : TM2_EIO;
    if (ok) {
        h->res.saves++;
        h->oks++;
    } else {
        h->res.errors++;
        h->res.err = TM2_EIO;
        h->fails++;
    }
}

static void h_save_collect(void *user, tm2__pex_save_result *out)
{
    harness *h = user;
    *out = h->res;
    memset(&h->res, 0, sizeof h->res);
}

static void h_save_drain(void *user) { h_finish(user, true); }

typedef struct rd {
    const uint8_t *p;
    size_t n;
} rd;

static uint8_t take(rd *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        init_ids();
    if (size > 1 << 14)
        return 0;
    rd r = {data, size};
    uint8_t setup = take(&r);
    static const size_t maxes[4] = {30, 5, 2, 1};

    harness h;
    memset(&h, 0, sizeof h);
    h.max_addrs = maxes[(setup >> 1) & 3];
    h.remove_on_stop = setup & 8;
    h.seed_mode = setup & 1;
    tm2_discovery_config cfg = {
        .interval_ms = 1000,
        .max_addrs = (uint32_t)h.max_addrs,
        .seed_mode = h.seed_mode,
        .seed_disconnect_ms = 500,
        .target_outbound = 4,
        .addrbook_max = 16,
    };
    tm2__pex_ops ops = {.user = &h, .send = h_send, .dial = h_dial, .stop = h_stop,
                        .counts = h_counts, .is_private = h_is_private,
                        .is_seed = h_is_seed, .is_persistent = h_is_persistent};
    bool saves = setup & 16;
    if (saves) {
        /* Never created: loading finds no file, and the ops write nothing. */
        cfg.addrbook_path = "/nonexistent-tm2-fuzz/addrbook.json";
        ops.save_submit = h_save_submit;
        ops.save_collect = h_save_collect;
        ops.save_drain = h_save_drain;
    }
    CHECK(tm2__pex_new(&cfg, &ops, 1700000000, &h.x) == 0);
    tm2__pex_time t = {.ms = 1000000, .unix_s = 1700000000};
    tm2__pex_start(h.x, &addrs[SELF].id, t);

    while (r.n) {
        uint8_t op = take(&r) % 8;
        slot *sl = &h.s[take(&r) % N_SLOTS];
        switch (op) {
        case 0:
        case 1: {   /* a peer connects */
            uint8_t f = take(&r);
            int node = take(&r) % N_IDS;
            /* The switch never connects us to ourselves or one ID twice. */
            bool taken = sl->present || node == SELF;
            for (int k = 0; k < N_SLOTS && !taken; k++)
                taken = h.s[k].present && h.s[k].node == node;
            if (taken)
                break;
            tm2__pex_peer_info in;
            memset(&in, 0, sizeof in);
            in.id = addrs[node].id;
            in.addr = addrs[node];
            in.dialled = addrs[node];
            /* The connection's address, or none (the core falls back). */
            if (f & 32) {
                in.remote = addrs[node];
                if (!(f & 1))
                    in.remote.port = (uint16_t)(40000 + node);
            }
            in.outbound = f & 1;
            in.has_channel = f & 2;
            in.is_private = f & 4;
            in.persistent = (f & 8) || is_persistent_node(node);
            in.has_addr = f & 16;
            *sl = (slot){.present = true, .node = node, .is_private = in.is_private,
                         .outbound = in.outbound};
            if (tm2__pex_add_peer(h.x, sl, &in, t) != 0)
                sl->present = false;
            break;
        }
        case 2: {   /* raw bytes from a peer */
            size_t len = take(&r);
            if (len > r.n)
                len = r.n;
            if (sl->present)
                tm2__pex_receive(h.x, sl, r.p, len, t);
            r.p += len;
            r.n -= len;
            break;
        }
        case 3: {   /* a well-formed Request or Response from a peer */
            uint8_t k = take(&r);
            uint8_t buf[4096];
            int len;
            if (k == 0) {
                len = tm2__pex_encode_request(buf, sizeof buf);
            } else {
                tm2_netaddr a[TM2__PEX_MAX_SHARED + 1];
                size_t n = k % (TM2__PEX_MAX_SHARED + 2);
                for (size_t i = 0; i < n; i++)
                    a[i] = addrs[take(&r) % N_IDS];
                len = tm2__pex_encode_response(a, n, buf, sizeof buf);
            }
            CHECK(len > 0);
            if (sl->present)
                tm2__pex_receive(h.x, sl, buf, (size_t)len, t);
            break;
        }
        case 4: {   /* time passes: up to 10 s, or 13 h (marks lapse, are rewritten) */
            uint8_t d = take(&r);
            t.ms += d == 255 ? 13ull * 3600 * 1000 : (uint64_t)d * 40;
            t.unix_s = 1700000000 + (int64_t)((t.ms - 1000000) / 1000);
            tm2__pex_tick(h.x, t);
            check_book(&h, t, true);
            break;
        }
        case 5:     /* a peer goes */
            if (sl->present) {
                CHECK(tm2__pex_remove_peer(h.x, sl));
                sl->present = false;
            }
            break;
        case 6:     /* a dial fails */
            tm2__pex_dial_failed(h.x, &addrs[take(&r) % N_IDS].id, t);
            check_book(&h, t, false);
            break;
        default: {  /* the writer finishes, and stats (read concurrently in real use) */
            unsigned w = (unsigned)(sl - h.s);
            if (w & 1)
                h_finish(&h, !(w & 2));
            tm2_discovery_stats st;
            tm2__pex_stats(h.x, &st);
            CHECK(st.responses_rejected == st.responses_oversized + st.responses_unsolicited +
                                               st.responses_malformed + st.responses_invalid);
            CHECK(st.book_size <= 16);
            break;
        }
        }
    }
    tm2__pex_stop(h.x, t);
    if (saves) {
        tm2_discovery_stats st;
        tm2__pex_stats(h.x, &st);
        CHECK(!h.waiting && h.oks >= 1);
        CHECK(st.book_saves == h.oks && st.book_save_errors == h.fails);
        CHECK(!tm2__addrbook_dirty(tm2__pex_book(h.x)));
    }
    tm2__pex_free(h.x);
    return 0;
}
