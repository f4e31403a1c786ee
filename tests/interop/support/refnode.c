#include "refnode.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tv.h"

#define WAIT_MS      20000
#define REF_PEX      "500ms"
#define REF_WATCHDOG "300s"

void sn_key(uint8_t seed_byte, tm2_node_key *key, tm2_id *id)
{
    uint8_t seed[32];
    memset(seed, seed_byte, sizeof seed);
    tm2_node_key_from_seed(key, seed);
    tm2_node_key_id(key, id);
}

/* ---- reference nodes ---------------------------------------------------------- */

void rnode_init(rnode *r)
{
    memset(r, 0, sizeof *r);
    refproc_init(&r->p);
}

void rnode_start_in(rnode *r, const char *const *prefix, uint8_t seed_byte,
                    const char *const *args)
{
    rnode_init(r);
    char seed[65];
    for (int i = 0; i < 32; i++)
        snprintf(seed + 2 * i, 3, "%02x", seed_byte);
    const char *argv[48];
    size_t n = 0;
    for (size_t i = 0; prefix && prefix[i]; i++) {
        assert_true(n < 40);
        argv[n++] = prefix[i];
    }
    if (prefix)
        argv[n++] = TM2REF_PATH;
    const char *fixed[] = {"node", "--seed", seed, "--discovery-interval", REF_PEX,
                           "--peers-interval", "0", "--timeout", REF_WATCHDOG};
    bool chain = false;
    for (size_t i = 0; args && args[i]; i++)
        chain |= strcmp(args[i], "--chain-id") == 0;
    assert_true(n + 9 < 40);
    for (size_t i = 0; i < 9; i++)
        argv[n++] = fixed[i];
    if (!chain) {
        argv[n++] = "--chain-id";
        argv[n++] = SN_CHAIN;
    }
    for (size_t i = 0; args && args[i]; i++) {
        assert_true(n < 47);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    if (prefix)
        refproc_start_cmd(&r->p, argv);
    else
        refproc_start(&r->p, argv);

    char line[REFPROC_LINE_MAX], *w[4];
    int nw = refproc_expect(&r->p, "LISTEN", line, sizeof line, w, 4, WAIT_MS);
    assert_int_equal(nw, 2);
    assert_int_equal(tm2_netaddr_parse(w[1], 0, &r->addr), 0);
    r->id = r->addr.id;
    snprintf(r->addr_s, sizeof r->addr_s, "%s", w[1]);
    tm2_node_key k;
    tm2_id want;
    sn_key(seed_byte, &k, &want);
    assert_string_equal(r->id.s, want.s);
}

void rnode_start(rnode *r, uint8_t seed_byte, const char *const *args)
{
    rnode_start_in(r, NULL, seed_byte, args);
}

void rnode_stop(rnode *r)
{
    refproc_stop(&r->p);
    for (size_t i = 0; i < r->n_hist; i++)
        free(r->hist[i]);
    r->n_hist = 0;
    free(r->last_peers);
    r->last_peers = NULL;
}

/* Reads one more line into the history; false at the deadline or end. */
static bool r_read(rnode *r, uint64_t end)
{
    uint64_t now = tv_now_ms();
    if (now >= end || r->n_hist == SN_MAX_HIST)
        return false;
    char line[REFPROC_LINE_MAX];
    if (refproc_line(&r->p, line, sizeof line, (int)(end - now)) != 0)
        return false;
    if (getenv("TM2_TEST_LOG"))
        fprintf(stderr, "[tm2ref %s] %s\n", r->id.s, line);
    r->hist[r->n_hist] = strdup(line);
    assert_non_null(r->hist[r->n_hist]);
    r->n_hist++;
    return true;
}

static bool matches(const char *l, const char *w0, const char *w1, const char *w2,
                    const char *contains)
{
    char copy[REFPROC_LINE_MAX];
    snprintf(copy, sizeof copy, "%s", l);
    char *save = NULL;
    const char *a = strtok_r(copy, " ", &save);
    const char *b = strtok_r(NULL, " ", &save);
    const char *c = strtok_r(NULL, " ", &save);
    return a && strcmp(a, w0) == 0 && (!w1 || (b && strcmp(b, w1) == 0)) &&
           (!w2 || (c && strcmp(c, w2) == 0)) && (!contains || strstr(l, contains));
}

const char *rnode_wait_from(rnode *r, size_t *from, const char *w0, const char *w1,
                            const char *w2, const char *contains, int timeout_ms)
{
    uint64_t end = tv_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    size_t i = from ? *from : 0;
    for (;;) {
        for (; i < r->n_hist; i++) {
            if (matches(r->hist[i], w0, w1, w2, contains)) {
                if (from)
                    *from = i + 1;
                return r->hist[i];
            }
        }
        if (!r_read(r, end))
            return NULL;
    }
}

bool rnode_next_line(rnode *r, int timeout_ms)
{
    return r_read(r, tv_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0));
}

const char *rnode_wait(rnode *r, const char *w0, const char *w1, const char *w2,
                       const char *contains, int timeout_ms)
{
    return rnode_wait_from(r, NULL, w0, w1, w2, contains, timeout_ms);
}

bool rnode_wait_recv(rnode *r, size_t len, const tm2_id *from, int timeout_ms)
{
    char lens[24];
    snprintf(lens, sizeof lens, "%zu", len);
    return rnode_wait(r, "RECV", "0x70", lens, from->s, timeout_ms) != NULL;
}

int rnode_peers(rnode *r, const tm2_id *id, bool *has, bool *outbound, int timeout_ms)
{
    /* Only SIGUSR1 prints PEERS here (the periodic ones are off), so the
     * first PEERS line after the signal is its answer. */
    size_t from = r->n_hist;
    if (r->p.pid <= 0 || kill(r->p.pid, SIGUSR1) != 0)
        return -1;
    const char *l = rnode_wait_from(r, &from, "PEERS", NULL, NULL, NULL, timeout_ms);
    if (!l)
        return -1;
    free(r->last_peers);
    r->last_peers = strdup(l);
    assert_non_null(r->last_peers);
    int n = atoi(l + strlen("PEERS "));
    if (has)
        *has = false;
    tm2_id pid;
    bool out;
    for (size_t i = 0; rnode_peer_at(r, i, &pid, &out); i++) {
        if (id && strcmp(pid.s, id->s) == 0) {
            if (has)
                *has = true;
            if (outbound)
                *outbound = out;
        }
    }
    return n;
}

bool rnode_peer_at(const rnode *r, size_t i, tm2_id *id, bool *outbound)
{
    if (!r->last_peers)
        return false;
    char copy[REFPROC_LINE_MAX];
    snprintf(copy, sizeof copy, "%s", r->last_peers);
    char *save = NULL;
    strtok_r(copy, " ", &save);   /* PEERS */
    strtok_r(NULL, " ", &save);   /* count */
    char *e = NULL;
    for (size_t k = 0; k <= i; k++)
        if ((e = strtok_r(NULL, " ", &save)) == NULL)
            return false;
    char *colon = strchr(e, ':');
    assert_non_null(colon);
    *colon = '\0';
    assert_true(strlen(e) < sizeof id->s);
    memset(id, 0, sizeof *id);
    memcpy(id->s, e, strlen(e));
    *outbound = strcmp(colon + 1, "out") == 0;
    return true;
}
