/* Secret connection against the reference, over real loopback TCP: tm2p2p
 * dials the reference's sc-echo and the reference dials tm2p2p. The handshake
 * must succeed with each side seeing the other's public key and ID, and 16 MiB
 * sent in random-sized writes must come back byte for byte.
 *
 * The tm2p2p side runs twice: as the sans-I/O core driven by a plain poll()
 * loop (a failure there points at the protocol), and as the libuv stream the
 * mconn layer uses (net/sc_stream.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "conn/secret_conn.h"
#include "net/engine_uv.h"
#include "net/sc_stream.h"
#include "net/sc_stream_uv.h"
#include "polltcp.h"
#include "refproc.h"
#include "tm2p2p/key.h"
#include "tv.h"

#define TOTAL          (16u << 20)
#define MAX_WRITE      (1u << 20)
#define RX_CAP         (256u << 10)
#define LINE_MS        30000
#define HANDSHAKE_MS   15000
#define TRANSFER_MS    150000
#define REF_WATCHDOG   "180s"            /* tm2ref gives up after this; > the above */

typedef struct glue glue;

typedef struct fixture {
    refproc ref;
    glue *g;                       /* the libuv side, when the test uses it */
    int lfd;
    int fd;
    tm2__sc sc;
    bool sc_used;                  /* tm2__sc_init was called */
    tm2_node_key key;
    uint8_t *data;                 /* TOTAL bytes to send */
    uint8_t *tx;                   /* sealed frames of one write */
    uint8_t *rx;                   /* wire bytes read */
    uint8_t *plain;                /* opened plaintext */
    size_t rx_len;                 /* rx bytes not yet opened (left by the handshake) */
    uint64_t rng;
} fixture;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Write sizes from 1 byte to 1 MiB, spread over several scales so that tiny
 * writes (one short frame each) and multi-frame writes both occur. */
static size_t next_write_size(uint64_t *rng)
{
    static const size_t scale[] = {16, 1024, 1025, 64u << 10, MAX_WRITE};
    uint64_t r = splitmix64(rng);
    return 1 + (size_t)((r >> 8) % scale[r % (sizeof scale / sizeof scale[0])]);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    refproc_init(&f->ref);
    f->lfd = f->fd = -1;
    f->data = malloc(TOTAL);
    f->tx = malloc(tm2__sc_sealed_size(MAX_WRITE));
    f->rx = malloc(RX_CAP);
    f->plain = malloc(RX_CAP);
    if (!f->data || !f->tx || !f->rx || !f->plain)
        return -1;

    /* One printed seed drives the data and the write sizes, so a failing run
     * can be repeated with TM2_INTEROP_SEED. */
    const char *env = getenv("TM2_INTEROP_SEED");
    uint64_t seed;
    if (env != NULL)
        seed = strtoull(env, NULL, 0);
    else
        randombytes_buf(&seed, sizeof seed);
    print_message("TM2_INTEROP_SEED=%" PRIu64 "\n", seed);
    uint8_t k[randombytes_SEEDBYTES] = {0};
    memcpy(k, &seed, sizeof seed);
    randombytes_buf_deterministic(f->data, TOTAL, k);
    f->rng = seed;
    *state = f;
    return 0;
}

static void glue_release(glue *g);

static int teardown(void **state)
{
    fixture *f = *state;
    refproc_stop(&f->ref);
    if (f->g != NULL) {
        glue_release(f->g);
        free(f->g);
    }
    if (f->fd >= 0)
        close(f->fd);
    if (f->lfd >= 0)
        close(f->lfd);
    if (f->sc_used)
        tm2__sc_close(&f->sc);
    tm2_node_key_wipe(&f->key);
    free(f->data);
    free(f->tx);
    free(f->rx);
    free(f->plain);
    free(f);
    return 0;
}

static void handshake(fixture *f, uint64_t deadline)
{
    f->sc_used = true;
    assert_int_equal(tm2__sc_init(&f->sc, &f->key, NULL), 0);
    pt_sc_handshake(&f->sc, f->fd, f->rx, RX_CAP, &f->rx_len, deadline);
}

/* Opens len wire bytes in f->rx, checking the plaintext against what was sent. */
static void open_and_check(fixture *f, size_t len, size_t sent, size_t *recvd,
                           crypto_hash_sha256_state *h)
{
    size_t off = 0;
    while (off < len || tm2__sc_open_pending(&f->sc) > 0) {
        size_t used = 0;
        int r = tm2__sc_open(&f->sc, f->rx + off, len - off, &used, f->plain, RX_CAP);
        if (r < 0)
            fail_msg("open failed after %zu bytes: %s", *recvd, tm2_strerror(r));
        assert_true(r > 0 || used > 0 || off == len);
        if (r == 0 && used == 0)
            break;
        off += used;
        if (*recvd + (size_t)r > sent)
            fail_msg("received %zu bytes, more than the %zu sent", *recvd + (size_t)r, sent);
        if (memcmp(f->plain, f->data + *recvd, (size_t)r) != 0)
            fail_msg("echoed bytes differ within [%zu, %zu)", *recvd, *recvd + (size_t)r);
        crypto_hash_sha256_update(h, f->plain, (size_t)r);
        *recvd += (size_t)r;
    }
}

/* Sends TOTAL bytes in random-sized writes while reading the echo; half-closes
 * after the last write and reads until the reference closes. */
static void echo_transfer(fixture *f, uint64_t deadline)
{
    size_t sent = 0, recvd = 0, tx_len = 0, tx_off = 0, writes = 0;
    bool shut = false;
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);

    if (f->rx_len > 0)
        open_and_check(f, f->rx_len, sent, &recvd, &h);

    for (;;) {
        if (tx_off == tx_len && sent < TOTAL) {
            size_t want = next_write_size(&f->rng);
            if (want > TOTAL - sent)
                want = TOTAL - sent;
            size_t used = 0;
            int w = tm2__sc_seal(&f->sc, f->data + sent, want, &used, f->tx,
                                 tm2__sc_sealed_size(MAX_WRITE));
            if (w < 0)
                fail_msg("seal: %s", tm2_strerror(w));
            assert_int_equal(used, want);
            assert_int_equal((size_t)w, tm2__sc_sealed_size(want));
            sent += used;
            tx_len = (size_t)w;
            tx_off = 0;
            writes++;
        }
        if (tx_off == tx_len && sent == TOTAL && !shut) {
            assert_int_equal(shutdown(f->fd, SHUT_WR), 0);
            shut = true;
        }
        struct pollfd p = {.fd = f->fd, .events = (short)(POLLIN | (tx_off < tx_len ? POLLOUT : 0))};
        int r = poll(&p, 1, pt_remaining_ms(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r >= 0);
        if (p.revents & POLLOUT)
            tx_off += pt_send_some(f->fd, f->tx + tx_off, tx_len - tx_off);
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = pt_recv_some(f->fd, f->rx, RX_CAP);
            if (n == 0) {
                int e = tm2__sc_eof(&f->sc);
                if (e != 0)
                    fail_msg("stream ended badly: %s", tm2_strerror(e));
                break;
            }
            if (n > 0)
                open_and_check(f, (size_t)n, sent, &recvd, &h);
        }
    }

    assert_true(shut);
    if (recvd != TOTAL)
        fail_msg("reference closed after echoing %zu of %u bytes", recvd, TOTAL);
    uint8_t want[crypto_hash_sha256_BYTES], got[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(want, f->data, TOTAL);
    crypto_hash_sha256_final(&h, got);
    assert_memory_equal(got, want, sizeof want);
    print_message("%u bytes echoed in %zu writes\n", TOTAL, writes);
}

static void hex32(const uint8_t *b, char out[65])
{
    sodium_bin2hex(out, 65, b, 32);
}

/* Parses "TAG <pub hex> <id>" from the reference into pub and id. */
static void expect_key_line(fixture *f, const char *tag, char pub[65], char id[TM2_ID_LEN + 1])
{
    char line[REFPROC_LINE_MAX];
    char *w[4];
    int n = refproc_expect(&f->ref, tag, line, sizeof line, w, 4, LINE_MS);
    if (n != 3)
        fail_msg("no %s line from the reference", tag);
    assert_int_equal(strlen(w[1]), 64);
    assert_int_equal(strlen(w[2]), TM2_ID_LEN);
    strcpy(pub, w[1]);
    strcpy(id, w[2]);
}

/* The identities both sides report must be each other's: what tm2p2p
 * authenticated (remote_pub, remote_id) is the reference's key, and the
 * reference's REMOTE line is ours. */
static void check_identities(fixture *f, const uint8_t *remote_pub, const char *remote_id,
                             const char *ref_pub, const char *ref_id)
{
    char pub[65];
    hex32(remote_pub, pub);
    assert_string_equal(pub, ref_pub);
    assert_string_equal(remote_id, ref_id);

    char seen_pub[65], seen_id[TM2_ID_LEN + 1];
    expect_key_line(f, "REMOTE", seen_pub, seen_id);
    hex32(tm2_node_key_pubkey(&f->key), pub);
    tm2_id mine;
    tm2_node_key_id(&f->key, &mine);
    assert_string_equal(seen_pub, pub);
    assert_string_equal(seen_id, mine.s);
}

/* The port of the reference's "LISTEN 127.0.0.1:PORT" line. */
static uint16_t expect_listen(fixture *f)
{
    char line[REFPROC_LINE_MAX];
    char *w[3];
    assert_int_equal(refproc_expect(&f->ref, "LISTEN", line, sizeof line, w, 3, LINE_MS), 2);
    char *colon = strrchr(w[1], ':');
    assert_non_null(colon);
    *colon = '\0';
    assert_string_equal(w[1], "127.0.0.1");
    long port = strtol(colon + 1, NULL, 10);
    assert_true(port > 0 && port < 65536);
    return (uint16_t)port;
}

static void finish(fixture *f)
{
    char line[REFPROC_LINE_MAX];
    char *w[3];
    char want[32];
    snprintf(want, sizeof want, "%u", TOTAL);
    assert_int_equal(refproc_expect(&f->ref, "DONE", line, sizeof line, w, 3, LINE_MS), 2);
    assert_string_equal(w[1], want);
    assert_int_equal(refproc_wait(&f->ref, LINE_MS), 0);
}

static void keys(fixture *f, uint8_t c_byte, uint8_t ref_byte, char ref_seed[65])
{
    uint8_t seed[32];
    memset(seed, c_byte, sizeof seed);
    tm2_node_key_from_seed(&f->key, seed);
    memset(seed, ref_byte, sizeof seed);
    hex32(seed, ref_seed);
}

static void core_dials_reference(void **state)
{
    fixture *f = *state;
    char ref_seed[65], ref_pub[65], ref_id[TM2_ID_LEN + 1];
    keys(f, 0x01, 0x02, ref_seed);

    const char *args[] = {"sc-echo", "--listen", "127.0.0.1:0", "--seed", ref_seed,
                          "--timeout", REF_WATCHDOG, NULL};
    refproc_start(&f->ref, args);
    uint16_t port = expect_listen(f);
    expect_key_line(f, "LOCAL", ref_pub, ref_id);

    f->fd = pt_connect_loopback(port);
    handshake(f, tv_now_ms() + HANDSHAKE_MS);
    check_identities(f, tm2__sc_remote_pubkey(&f->sc), tm2__sc_remote_id(&f->sc)->s, ref_pub,
                     ref_id);
    echo_transfer(f, tv_now_ms() + TRANSFER_MS);
    finish(f);
}

static void reference_dials_core(void **state)
{
    fixture *f = *state;
    char ref_seed[65], ref_pub[65], ref_id[TM2_ID_LEN + 1];
    keys(f, 0x03, 0x04, ref_seed);

    uint16_t port;
    f->lfd = pt_listen_loopback(&port);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    const char *args[] = {"sc-echo", "--dial", addr, "--seed", ref_seed,
                          "--timeout", REF_WATCHDOG, NULL};
    refproc_start(&f->ref, args);
    expect_key_line(f, "LOCAL", ref_pub, ref_id);

    f->fd = pt_accept_one(f->lfd, tv_now_ms() + HANDSHAKE_MS);
    handshake(f, tv_now_ms() + HANDSHAKE_MS);
    check_identities(f, tm2__sc_remote_pubkey(&f->sc), tm2__sc_remote_id(&f->sc)->s, ref_pub,
                     ref_id);
    echo_transfer(f, tv_now_ms() + TRANSFER_MS);
    finish(f);
}

/* ---- the libuv glue (net/sc_stream.h) ---------------------------------------
 *
 * The same exchange through the stream API the mconn layer uses. The glue has
 * no half-close, so the end of the test is the last echoed byte: the C side
 * then closes, and the reference sees a clean end of stream at a frame
 * boundary. Callbacks only record what happened; assertions run after the
 * loop stops, so a failure never unwinds through libuv. */

struct glue {
    fixture *f;
    uv_loop_t loop;
    bool loop_ok;
    tm2__uv_engine ue;
    tm2__sc_loop l;
    bool l_ok;
    tm2__sc_stream s;
    bool s_ok;
    uv_tcp_t server;
    bool server_ok;
    uv_connect_t creq;
    uv_timer_t deadline;
    bool deadline_ok;

    int hs_err;                    /* 1 until on_handshake */
    int err;                       /* first failure, 0 if none */
    const char *what;              /* where it failed */
    size_t sent, recvd, writes;
    bool waiting_writable;
    bool finished;                 /* every byte came back */
    bool closed;
    uint8_t remote_pub[TM2_PUBKEY_SIZE];  /* copied at the handshake; the */
    tm2_id remote_id;                     /* session is wiped on close */
    crypto_hash_sha256_state h;
};

static void glue_fail(glue *g, const char *what, int err)
{
    if (g->err == 0) {
        g->err = err;
        g->what = what;
    }
    if (g->s_ok)
        tm2__sc_stream_close(&g->s);
}

static void glue_pump(glue *g)
{
    fixture *f = g->f;
    while (g->sent < TOTAL) {
        size_t want = next_write_size(&f->rng);
        if (want > TOTAL - g->sent)
            want = TOTAL - g->sent;
        int r = tm2__sc_stream_write(&g->s, f->data + g->sent, want);
        if (r == TM2_EFULL) {
            /* The size drawn is dropped; the next one is drawn on resume. */
            g->waiting_writable = true;
            return;
        }
        if (r != 0) {
            glue_fail(g, "write", r);
            return;
        }
        g->sent += want;
        g->writes++;
    }
}

static void glue_on_handshake(tm2__sc_stream *s, int err)
{
    glue *g = s->data;
    g->hs_err = err;
    if (err != 0) {
        glue_fail(g, "handshake", err);
        return;
    }
    memcpy(g->remote_pub, tm2__sc_stream_remote_pubkey(s), TM2_PUBKEY_SIZE);
    g->remote_id = *tm2__sc_stream_remote_id(s);
    glue_pump(g);
}

static void glue_on_read(tm2__sc_stream *s, const uint8_t *data, size_t len)
{
    glue *g = s->data;
    if (g->err != 0)
        return;
    if (g->recvd + len > g->sent || memcmp(data, g->f->data + g->recvd, len) != 0) {
        print_message("echo mismatch within [%zu, %zu), %zu sent\n", g->recvd, g->recvd + len, g->sent);
        glue_fail(g, "echoed bytes differ", TM2_EPROTO);
        return;
    }
    crypto_hash_sha256_update(&g->h, data, len);
    g->recvd += len;
    if (g->recvd == TOTAL) {
        g->finished = true;
        tm2__sc_stream_close(s);
    }
}

static void glue_on_error(tm2__sc_stream *s, int err)
{
    glue_fail(s->data, "session", err);
}

static void glue_on_writable(tm2__sc_stream *s)
{
    glue *g = s->data;
    if (g->waiting_writable && g->err == 0) {
        g->waiting_writable = false;
        glue_pump(g);
    }
}

static void glue_handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* Everything else is closed once the stream is. */
static void glue_on_close(tm2__sc_stream *s)
{
    glue *g = s->data;
    g->closed = true;
    if (g->server_ok && !uv_is_closing((uv_handle_t *)&g->server))
        uv_close((uv_handle_t *)&g->server, glue_handle_closed);
    if (g->deadline_ok && !uv_is_closing((uv_handle_t *)&g->deadline))
        uv_close((uv_handle_t *)&g->deadline, glue_handle_closed);
    if (g->l_ok) {
        tm2__sc_loop_close(&g->l);
        tm2__uv_engine_close(&g->ue);
        g->l_ok = false;
    }
}

static void glue_on_deadline(uv_timer_t *t)
{
    glue *g = t->data;
    glue_fail(g, "deadline", TM2_ETIMEDOUT);
}

static void glue_start_stream(glue *g)
{
    int r = tm2__sc_stream_start(&g->s, &g->f->key, NULL);
    if (r != 0)
        glue_fail(g, "start", r);
}

static void glue_on_connect(uv_connect_t *req, int status)
{
    glue *g = req->data;
    if (status != 0) {
        glue_fail(g, "connect", TM2_EIO);
        return;
    }
    glue_start_stream(g);
}

static void glue_on_connection(uv_stream_t *server, int status)
{
    glue *g = server->data;
    if (status != 0 || uv_accept(server, (uv_stream_t *)tm2__sc_stream_uv_tcp(&g->s)) != 0) {
        glue_fail(g, "accept", TM2_EIO);
        return;
    }
    /* One connection is all this test takes. */
    uv_close((uv_handle_t *)&g->server, glue_handle_closed);
    glue_start_stream(g);
}

/* The glue state lives on the heap, owned by the fixture, so the teardown
 * can still close it after an assertion left the test function. */
static glue *glue_new(fixture *f)
{
    glue *g = calloc(1, sizeof *g);
    assert_non_null(g);
    g->f = f;
    f->g = g;
    g->hs_err = 1;
    crypto_hash_sha256_init(&g->h);
    assert_int_equal(uv_loop_init(&g->loop), 0);
    g->loop_ok = true;
    assert_int_equal(tm2__uv_engine_init(&g->ue, &g->loop), 0);
    assert_int_equal(tm2__sc_loop_init(&g->l, &g->ue.e), 0);
    g->l_ok = true;

    tm2__sc_stream_config cfg = {.handshake_timeout_ms = HANDSHAKE_MS};
    static const tm2__sc_stream_cbs cbs = {
        .on_handshake = glue_on_handshake,
        .on_read = glue_on_read,
        .on_error = glue_on_error,
        .on_writable = glue_on_writable,
        .on_close = glue_on_close,
    };
    tm2__sc_stream_init(&g->s, &g->l, &cfg, &cbs);
    g->s.data = g;
    g->s_ok = true;

    assert_int_equal(uv_timer_init(&g->loop, &g->deadline), 0);
    g->deadline.data = g;
    g->deadline_ok = true;
    assert_int_equal(uv_timer_start(&g->deadline, glue_on_deadline, TRANSFER_MS, 0), 0);
    return g;
}

static void glue_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, glue_handle_closed);
}

/* Closes whatever is still open and ends the loop; used after a normal run
 * and by the teardown when an assertion stopped the test half-way. */
static void glue_release(glue *g)
{
    if (!g->loop_ok)
        return;
    if (g->s_ok && !g->closed)
        tm2__sc_stream_close(&g->s);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    if (g->l_ok) {
        tm2__sc_loop_close(&g->l);
        tm2__uv_engine_close(&g->ue);
        g->l_ok = false;
    }
    uv_walk(&g->loop, glue_walk_close, NULL);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&g->loop) == 0)
        g->loop_ok = false;
}

static void glue_run(glue *g)
{
    uv_run(&g->loop, UV_RUN_DEFAULT);
    glue_release(g);
    assert_false(g->loop_ok);
}

/* After the loop: the exchange completed, identities, hash, and the
 * reference's own account of it. */
static void glue_check(glue *g, const char *ref_pub, const char *ref_id)
{
    fixture *f = g->f;
    if (g->err != 0 && !(g->finished && g->err == TM2_ECLOSED))
        fail_msg("glue: %s failed: %s (sent %zu, echoed %zu)", g->what, tm2_strerror(g->err),
                 g->sent, g->recvd);
    assert_true(g->closed);
    assert_int_equal(g->hs_err, 0);
    assert_true(g->finished);
    assert_int_equal(g->sent, TOTAL);
    assert_int_equal(g->recvd, TOTAL);

    uint8_t want[crypto_hash_sha256_BYTES], got[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(want, f->data, TOTAL);
    crypto_hash_sha256_final(&g->h, got);
    assert_memory_equal(got, want, sizeof want);
    print_message("%u bytes echoed in %zu writes\n", TOTAL, g->writes);

    check_identities(f, g->remote_pub, g->remote_id.s, ref_pub, ref_id);
}

static void glue_dials_reference(void **state)
{
    fixture *f = *state;
    char ref_seed[65], ref_pub[65], ref_id[TM2_ID_LEN + 1];
    keys(f, 0x05, 0x06, ref_seed);

    const char *args[] = {"sc-echo", "--listen", "127.0.0.1:0", "--seed", ref_seed,
                          "--timeout", REF_WATCHDOG, NULL};
    refproc_start(&f->ref, args);
    uint16_t port = expect_listen(f);
    expect_key_line(f, "LOCAL", ref_pub, ref_id);

    glue *g = glue_new(f);
    struct sockaddr_in a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", port, &a), 0);
    g->creq.data = g;
    assert_int_equal(uv_tcp_connect(&g->creq, tm2__sc_stream_uv_tcp(&g->s), (struct sockaddr *)&a,
                                    glue_on_connect), 0);
    glue_run(g);
    glue_check(g, ref_pub, ref_id);
    finish(f);
}

static void reference_dials_glue(void **state)
{
    fixture *f = *state;
    char ref_seed[65], ref_pub[65], ref_id[TM2_ID_LEN + 1];
    keys(f, 0x07, 0x08, ref_seed);

    glue *g = glue_new(f);
    struct sockaddr_in a;
    int alen = sizeof a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
    assert_int_equal(uv_tcp_init(&g->loop, &g->server), 0);
    g->server.data = g;
    g->server_ok = true;
    assert_int_equal(uv_tcp_bind(&g->server, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&g->server, 4, glue_on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&g->server, (struct sockaddr *)&a, &alen), 0);

    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", ntohs(a.sin_port));
    const char *args[] = {"sc-echo", "--dial", addr, "--seed", ref_seed,
                          "--timeout", REF_WATCHDOG, NULL};
    refproc_start(&f->ref, args);
    expect_key_line(f, "LOCAL", ref_pub, ref_id);

    glue_run(g);
    glue_check(g, ref_pub, ref_id);
    finish(f);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(core_dials_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_dials_core, setup, teardown),
        cmocka_unit_test_setup_teardown(glue_dials_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(reference_dials_glue, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
