/* Internal to src/sim: the world's records, shared by its files. */
#ifndef TM2_SIM_INTERNAL_H
#define TM2_SIM_INTERNAL_H

#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/engine.h"
#include "sim/simnet.h"

#define SIM_NONE UINT32_MAX
#define SIM_RING (UINT32_MAX - 1u)   /* sim_ev.idx of an event in the queue's ring */
#define SIM_RING_MS 65536u           /* the ring's span; a power of two */
#define SIM_SEG_MAX (64u * 1024u)
/* Segments up to this size are blocks of one size kept for reuse: most
 * writes are a sealed frame or two. */
#define SIM_SEG_SMALL 2048u
#define SIM_SEG_SPARE_MAX 4096u
#define SIM_BACKLOG_MAX 128u

/* ---- events ------------------------------------------------------------------ */

enum sim_kind {
    EV_TIMER = 1,
    EV_DEFER,
    EV_WAKER,
    EV_WAKER_CLOSE,
    EV_WORK,
    EV_LISTEN_CONN,
    EV_LISTEN_CLOSE,
    EV_SOCK_CLOSE,
    EV_SYN,            /* a SYN reaches the listening side */
    EV_SYNACK,         /* the dialler learns it is connected */
    EV_REFUSED,        /* the dialler learns it was refused */
    EV_RX,             /* arrivals and deliveries of one direction */
    EV_TX,             /* bytes leave the sender's queue */
};

/* A queue entry lives in the record it is about (a handle's slot, a host,
 * a connection), so scheduling allocates nothing and cancelling is an
 * unlink or a removal by index. */
typedef struct sim_ev {
    uint64_t due;
    uint64_t seq;
    struct sim_ev *next, *prev;   /* in its ring slot */
    uint32_t idx;      /* heap position, SIM_RING, or SIM_NONE when not queued */
    uint32_t host;     /* the host it runs for (trace digest) */
    uint32_t ordinal;  /* timers: their number on the host (trace digest) */
    uint8_t kind;
    uint8_t sub;       /* EV_RX / EV_TX: the direction */
} sim_ev;

/* A far event's key beside it, so ordering reads only the heap's array. */
typedef struct sim_heap_ent {
    uint64_t due, seq;
    sim_ev *ev;
} sim_heap_ent;

typedef struct sim_queue {
    sim_heap_ent *a;           /* far events: a 4-ary heap */
    uint32_t n, cap;
    uint32_t ring_n;           /* events in the ring */
    uint64_t cur;              /* the ring holds due times [cur, cur + SIM_RING_MS) */
    struct { sim_ev *head, *tail; } slot[SIM_RING_MS];
    uint64_t bits[SIM_RING_MS / 64];   /* slots not empty */
} sim_queue;

/* ---- hosts, connections --------------------------------------------------------- */

typedef struct sim_host sim_host;
typedef struct sim_conn sim_conn;
typedef struct sim_listener sim_listener;

struct sim_host {
    tm2__engine eng;
    tm2__simnet *w;
    uint32_t index;
    uint32_t ip;             /* IPv4, host order */
    int group;
    bool crashed;
    uint16_t next_port;      /* ephemeral ports, in order */
    uint32_t next_timer;     /* timer ordinals for the digest */
    /* random bytes: ChaCha20 keyed from (seed, index), block counter */
    uint8_t rkey[crypto_stream_chacha20_KEYBYTES];
    uint64_t rblock;
    uint8_t rbuf[64];
    uint8_t rpos;            /* bytes of rbuf used; 64 = empty */
    /* deferred tasks, in order, run one per event */
    tm2__task *task_head, *task_tail;
    sim_ev defer_ev;
    sim_listener *listeners;
    struct sim_side *socks;  /* attached, open connection ends here */
    uint32_t handles;        /* open sockets, listeners, wakers */
};

/* A run of stream bytes on a link. */
typedef struct sim_seg {
    struct sim_seg *next;
    uint64_t depart;         /* fully serialized onto the link */
    uint64_t arrive;
    uint32_t len, off;       /* off: bytes already delivered */
    uint8_t data[];
} sim_seg;

enum sim_state { S_NONE = 0, S_BACKLOG, S_OPEN, S_CLOSED };

/* One end of a connection. Kept in the connection, not in the socket's
 * slot, because the accepting end exists before its socket does. */
typedef struct sim_side {
    tm2__sock *sock;         /* attached handle until its close callback */
    uint32_t host;           /* host index */
    uint32_t ip;
    uint16_t port;
    uint8_t state;
    bool connected;          /* the dialler's connect completed */
    bool reading;
    bool dead;               /* its host crashed */
    bool ended;              /* on_end was delivered (or never will be) */
    uint8_t idx;             /* 0 or 1: which end */
    struct sim_side *hnext, *hprev; /* in the host's list */
} sim_side;

/* Bytes from side i to side 1 - i. Segments form one list: from head the
 * arrived and unread ones, from pending those still on the wire, from
 * unsent those not yet serialized (a suffix of the wire's). */
typedef struct sim_dir {
    sim_seg *head, *tail, *pending, *unsent;
    uint64_t ready;          /* arrived, unread bytes */
    uint64_t unsent_bytes;
    uint64_t last_arrive;    /* stream order: nothing arrives before this */
    uint64_t tx_free_us;     /* the link is busy serializing until then */
    uint64_t fin_at, rst_at; /* 0 = none */
    bool fin_in, rst_in;     /* arrived */
    bool held;
    uint32_t nseg;           /* segments written (loss draws) */
    uint32_t lat;            /* one-way latency, ms */
    sim_ev rx, tx;
    struct sim_dir *hold_next, *hold_prev;
} sim_dir;

struct sim_conn {
    sim_side side[2];        /* 0 dials, 1 accepts */
    sim_dir dir[2];
    sim_ev ctl;              /* EV_SYN, EV_SYNACK, EV_REFUSED */
    uint64_t ordinal;
    uint32_t dst_ip;         /* the SYN's destination */
    uint16_t dst_port;
    sim_listener *lst;       /* while in a backlog */
    sim_conn *bnext;         /* backlog order */
    sim_conn *wnext, *wprev; /* every connection of the world */
};

struct sim_listener {
    tm2__listener *l;
    sim_host *h;
    uint32_t ip;             /* 0 = any of the host's addresses */
    uint16_t port;
    bool closing;
    uint32_t nbacklog, notify;
    sim_conn *bhead, *btail;
    sim_listener *next;      /* the host's listeners */
    sim_ev ev;               /* EV_LISTEN_CONN, then EV_LISTEN_CLOSE */
};

/* ---- the world ---------------------------------------------------------------- */

struct tm2__simnet {
    tm2__simnet_config cfg;
    uint32_t loss_thr;       /* a draw below this is a loss; 0 = none */
    uint64_t now;
    uint64_t seq;
    uint64_t events;
    sim_queue q;
    sim_host **hosts;
    uint32_t nhosts, cap_hosts, live_hosts;
    uint32_t *by_ip;         /* 198.18.0.0/15 offset -> host index + 1 */
    /* Hosts on loopback addresses (127.G.x.y): open addressing, ip -> host
     * index + 1 (0: the host went; its ip stays as a tombstone). */
    struct sim_loop_slot { uint32_t ip, host1; } *loop_tab;
    uint32_t loop_cap, loop_used;
    bool cut;
    sim_dir *held;
    struct sim_seg *spare_segs;   /* small segment blocks, free */
    uint32_t n_spare_segs;
    sim_conn *conns;
    uint64_t next_conn, conns_live;
    uint64_t bytes_delivered, segments_delivered, conns_opened;
    uint64_t mem;
    tm2__engine scratch;     /* owns the shared scratch buffers */
    uint8_t *rscratch;       /* reads land here, for every host */
    void (*hook)(void *user, tm2__simnet *w);
    void *hook_user;
    crypto_generichash_state trace;
    /* the running event's trace record, filled by its handler */
    uint64_t cur_a, cur_b;
};

static inline bool sim_ip4_of(const tm2_netaddr *a, uint32_t *ip)
{
    if (!tm2_netaddr_is_ipv4(a))
        return false;
    *ip = (uint32_t)a->ip[12] << 24 | (uint32_t)a->ip[13] << 16 | (uint32_t)a->ip[14] << 8 | a->ip[15];
    return true;
}

/* queue.c: the world's event queue. Events are never scheduled before the
 * world's time. push fails only for want of memory. */
int sim_queue_push(sim_queue *q, sim_ev *ev);
void sim_queue_remove(sim_queue *q, sim_ev *ev);
sim_ev *sim_queue_pop(sim_queue *q);
bool sim_queue_next_due(const sim_queue *q, uint64_t *due);
size_t sim_queue_mem(const sim_queue *q);   /* allocated beside it */
void sim_queue_free(sim_queue *q);

/* simnet.c */
void *sim_alloc(tm2__simnet *w, size_t n);
void *sim_calloc(tm2__simnet *w, size_t n);
void sim_free(tm2__simnet *w, void *p, size_t n);
static inline sim_host *sim_host_of(tm2__engine *e) { return (sim_host *)e->data; }
sim_host *sim_host_get(tm2__simnet *w, uint32_t index);
/* The host a connect to ip reaches from host `from` (loopback: itself). */
sim_host *sim_host_by_ip(tm2__simnet *w, sim_host *from, uint32_t ip);
/* Schedules ev at due (not before now) with a fresh sequence number. */
void sim_at(tm2__simnet *w, sim_ev *ev, uint64_t due, uint32_t host, uint8_t kind);
/* Schedules ev at due unless it is already due no later. */
void sim_at_min(tm2__simnet *w, sim_ev *ev, uint64_t due, uint32_t host, uint8_t kind);
void sim_cancel(tm2__simnet *w, sim_ev *ev);
static inline bool sim_queued(const sim_ev *ev) { return ev->idx != SIM_NONE; }
uint64_t sim_mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d);

/* link.c */
extern const tm2__engine_ops sim_ops;
void sim_link_dispatch(tm2__simnet *w, sim_ev *ev);
void sim_link_crash(tm2__simnet *w, sim_host *h);
void sim_link_heal(tm2__simnet *w);
void sim_conn_free_all(tm2__simnet *w);
/* ops of link.c used by the ops table */
int sim_listen(tm2__engine *e, tm2__listener *l, const tm2_netaddr *addr, tm2_netaddr *bound);
int sim_accept(tm2__listener *l, tm2__sock *s, const tm2__sock_cbs *cbs, tm2_netaddr *remote);
void sim_listener_close(tm2__listener *l);
int sim_sock_init(tm2__engine *e, tm2__sock *s, const tm2__sock_cbs *cbs);
int sim_connect(tm2__sock *s, const tm2_netaddr *to, const tm2_netaddr *from);
int sim_read(tm2__sock *s, bool on);
int sim_write(tm2__sock *s, const uint8_t *data, size_t len);
size_t sim_queued_bytes(const tm2__sock *s);
void sim_sock_close(tm2__sock *s);

#endif
