/* The admission building blocks, without sockets: address groups, the
 * token-bucket table (fixed size, stalest out), the eviction choice, the
 * ban list and the ban file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "switch/bans.h"
#include "switch/evict.h"
#include "common/netgroup.h"
#include "switch/ratelimit.h"
#include "tm2p2p/defaults.h"
#include "tm2p2p/switch.h"
#include "tv.h"

static tm2_netaddr ip(const char *s)
{
    char spec[96];
    snprintf(spec, sizeof spec, strchr(s, ':') ? "[%s]:26656" : "%s:26656", s);
    tm2_netaddr a;
    assert_int_equal(tm2_netaddr_parse(spec, TM2_NETADDR_NO_ID, &a), 0);
    return a;
}

static bool same_group(const char *a, const char *b, int by, bool group_local)
{
    tm2__group_key x, y;
    tm2_netaddr na = ip(a), nb = ip(b);
    tm2__group_key_of(&na, by, group_local, &x);
    tm2__group_key_of(&nb, by, group_local, &y);
    return tm2__group_eq(&x, &y);
}

static void groups(void **state)
{
    (void)state;
    /* Public IPv4: /24 subnets, /16 network groups. */
    assert_true(same_group("8.8.4.4", "8.8.4.200", TM2__BY_SUBNET, false));
    assert_false(same_group("8.8.4.4", "8.8.5.4", TM2__BY_SUBNET, false));
    assert_true(same_group("8.8.4.4", "8.8.200.1", TM2__BY_NETGROUP, false));
    assert_false(same_group("8.8.4.4", "8.9.4.4", TM2__BY_NETGROUP, false));
    assert_false(same_group("8.8.4.4", "8.8.4.5", TM2__BY_IP, false));
    /* IPv6: /48 and /32; a v4-mapped address is grouped as IPv4. */
    assert_true(same_group("2a01:4f8:1:2::1", "2a01:4f8:1:ffff::9", TM2__BY_SUBNET, false));
    assert_false(same_group("2a01:4f8:1:2::1", "2a01:4f8:2:2::1", TM2__BY_SUBNET, false));
    assert_true(same_group("2a01:4f8:1:2::1", "2a01:4f8:9:2::1", TM2__BY_NETGROUP, false));
    assert_false(same_group("2a01:4f8::1", "2a01:4f9::1", TM2__BY_NETGROUP, false));
    assert_true(same_group("::ffff:8.8.4.4", "8.8.4.9", TM2__BY_SUBNET, false));
    assert_false(same_group("8.8.0.0", "0808::", TM2__BY_NETGROUP, false));
    /* Local addresses: one group unless grouped like public ones. */
    assert_true(tm2__addr_is_local(&(tm2_netaddr){.ip = {[10] = 0xff, [11] = 0xff, 127, 0, 0, 1}}));
    tm2_netaddr a = ip("10.1.2.3");
    assert_true(tm2__addr_is_local(&a));
    a = ip("8.8.8.8");
    assert_false(tm2__addr_is_local(&a));
    a = ip("100.64.1.1");
    assert_true(tm2__addr_is_local(&a));
    a = ip("100.128.1.1");
    assert_false(tm2__addr_is_local(&a));
    a = ip("198.19.0.1");
    assert_true(tm2__addr_is_local(&a));
    a = ip("198.20.0.1");
    assert_false(tm2__addr_is_local(&a));
    a = ip("fd00::1");
    assert_true(tm2__addr_is_local(&a));
    assert_true(same_group("127.0.0.1", "192.168.7.7", TM2__BY_IP, false));
    assert_true(same_group("127.0.0.1", "::1", TM2__BY_NETGROUP, false));
    assert_false(same_group("127.0.0.1", "8.8.8.8", TM2__BY_NETGROUP, false));
    assert_false(same_group("127.1.0.1", "127.2.0.1", TM2__BY_NETGROUP, true));
    assert_true(same_group("127.1.0.1", "127.1.9.1", TM2__BY_NETGROUP, true));
    assert_true(same_group("127.0.5.1", "127.0.5.9", TM2__BY_SUBNET, true));
    assert_false(same_group("127.0.5.1", "127.0.6.1", TM2__BY_SUBNET, true));
}

static tm2__group_key key_of(const char *s)
{
    tm2__group_key k;
    tm2_netaddr a = ip(s);
    tm2__group_key_of(&a, TM2__BY_IP, true, &k);
    return k;
}

static void token_buckets(void **state)
{
    (void)state;
    tm2__rate_table t;
    assert_int_equal(tm2__rate_init(&t, 0, NULL), TM2_EINVAL);
    assert_int_equal(tm2__rate_init(&t, 64, NULL), 0);
    tm2__group_key a = key_of("8.8.8.8"), b = key_of("9.9.9.9");
    /* Bursts of 3, then one token per 6 s (10 a minute). */
    uint64_t now = 1000000;
    for (int i = 0; i < 3; i++)
        assert_true(tm2__rate_take(&t, &a, now, 10, 3));
    assert_false(tm2__rate_peek(&t, &a, now, 10, 3));
    assert_false(tm2__rate_take(&t, &a, now, 10, 3));
    assert_true(tm2__rate_take(&t, &b, now, 10, 3));   /* another group is apart */
    assert_false(tm2__rate_take(&t, &a, now + 5999, 10, 3));
    assert_true(tm2__rate_peek(&t, &a, now + 6000, 10, 3));
    assert_true(tm2__rate_take(&t, &a, now + 6000, 10, 3));
    assert_false(tm2__rate_take(&t, &a, now + 6000, 10, 3));
    /* A long pause refills to the burst, no more. */
    now += 3600000;
    for (int i = 0; i < 3; i++)
        assert_true(tm2__rate_take(&t, &a, now, 10, 3));
    assert_false(tm2__rate_take(&t, &a, now, 10, 3));
    /* Rate 0 is no limit; burst 0 refuses. */
    assert_true(tm2__rate_take(&t, &a, now, 0, 0));
    assert_false(tm2__rate_take(&t, &b, now, 10, 0));
    tm2__rate_free(&t);

    /* Fixed size: a flood of new groups costs no memory; the stalest
     * entries go, the busy one (used last) stays. */
    assert_int_equal(tm2__rate_init(&t, 8, NULL), 0);
    assert_int_equal(t.n_sets, 1);
    now = 5000;
    for (int i = 0; i < 3; i++)
        assert_true(tm2__rate_take(&t, &a, now, 1, 3));
    char s[32];
    for (int i = 0; i < 100; i++) {
        snprintf(s, sizeof s, "11.0.%d.%d", i / 250, i % 250 + 1);
        tm2__group_key k = key_of(s);
        assert_true(tm2__rate_take(&t, &k, now + 1 + (uint64_t)i, 1, 3));
        assert_false(tm2__rate_take(&t, &a, now + 1 + (uint64_t)i, 1, 3));
    }
    assert_true(t.evicted > 0);
    tm2__rate_free(&t);
}

static tm2__evict_peer ep(const char *addr, uint64_t seq, uint64_t last_msg, bool cand)
{
    tm2__evict_peer e;
    memset(&e, 0, sizeof e);
    tm2_netaddr a = ip(addr);
    tm2__group_key_of(&a, TM2__BY_NETGROUP, true, &e.group);
    /* A fixed rank per group, for a deterministic test. */
    e.group_rank = (uint64_t)e.group.b[1] << 8 | e.group.b[2];
    e.seq = seq;
    e.last_msg_ms = last_msg;
    e.candidate = cand;
    e.user = (size_t)seq;
    return e;
}

static long victim(tm2__evict_peer *p, size_t n, uint32_t groups, uint32_t active, uint32_t pct)
{
    tm2__evict_params par = {.protect_groups = groups, .protect_active = active,
                             .protect_oldest_pct = pct};
    long v = tm2__evict_select(p, n, &par);
    return v < 0 ? -1 : (long)p[v].user;
}

static void eviction_choice(void **state)
{
    (void)state;
    /* A(1) 20.1, B(2) 20.2 C(3) 20.2 D(4, active) 20.2, E(5) 20.3,
     * F(6) 20.2, G(7) 20.3: three groups protect A, B, E; activity D;
     * a third of the rest by age C; F and G are left, and 20.2 holds the
     * most connections: its youngest candidate, F, goes. */
    tm2__evict_peer p[8];
    size_t n = 0;
    p[n++] = ep("20.1.0.1", 1, 0, true);
    p[n++] = ep("20.2.0.1", 2, 0, true);
    p[n++] = ep("20.2.0.2", 3, 0, true);
    p[n++] = ep("20.2.0.3", 4, 777, true);
    p[n++] = ep("20.3.0.1", 5, 0, true);
    p[n++] = ep("20.2.0.4", 6, 0, true);
    p[n++] = ep("20.3.0.2", 7, 0, true);
    assert_int_equal(victim(p, n, 3, 1, 34), 6);

    /* Without protections: the youngest of the largest group. */
    n = 0;
    p[n++] = ep("20.1.0.1", 1, 0, true);
    p[n++] = ep("20.2.0.1", 2, 0, true);
    p[n++] = ep("20.2.0.2", 3, 0, true);
    p[n++] = ep("20.3.0.1", 4, 0, true);
    assert_int_equal(victim(p, n, 0, 0, 0), 3);
    /* Ties in size go to the group whose youngest is youngest. */
    n = 0;
    p[n++] = ep("20.1.0.1", 1, 0, true);
    p[n++] = ep("20.2.0.1", 2, 0, true);
    p[n++] = ep("20.1.0.2", 3, 0, true);
    p[n++] = ep("20.2.0.2", 4, 0, true);
    assert_int_equal(victim(p, n, 0, 0, 0), 4);
    /* Non-candidates (persistent) count towards their group but never go. */
    n = 0;
    p[n++] = ep("20.1.0.1", 1, 0, false);
    p[n++] = ep("20.1.0.2", 2, 0, false);
    p[n++] = ep("20.1.0.3", 3, 0, true);
    p[n++] = ep("20.2.0.1", 4, 0, true);
    p[n++] = ep("20.2.0.2", 5, 0, true);
    assert_int_equal(victim(p, n, 0, 0, 0), 3);
    /* Everyone protected: nothing goes. */
    n = 0;
    p[n++] = ep("20.1.0.1", 1, 0, true);
    p[n++] = ep("20.2.0.1", 2, 0, true);
    assert_int_equal(victim(p, n, 4, 4, 50), -1);
    n = 0;
    p[n++] = ep("20.1.0.1", 1, 0, false);
    assert_int_equal(victim(p, n, 0, 0, 0), -1);
    assert_int_equal(victim(p, 0, 0, 0, 0), -1);

    /* A flood from one group cannot push out the diverse honest peers:
     * five of them in five groups, thirty flooders in one /16 that came
     * later; default protections. Every eviction hits the flood. */
    tm2__evict_peer big[35];
    n = 0;
    char s[32];
    for (int i = 0; i < 5; i++) {
        snprintf(s, sizeof s, "30.%d.0.1", i + 1);
        big[n++] = ep(s, (uint64_t)i + 1, 0, true);
    }
    for (int i = 0; i < 30; i++) {
        snprintf(s, sizeof s, "66.6.%d.%d", i / 200, i % 200 + 1);
        big[n++] = ep(s, (uint64_t)i + 100, 0, true);
    }
    long v = victim(big, n, 4, 4, 50);
    assert_true(v >= 100);
}

/* One /16 and the other rules off unless asked: the victim is the youngest
 * peer the latency rule (and the rules named) left. */
static tm2__evict_peer ep_rtt(uint64_t seq, uint32_t min_rtt, uint64_t last_msg)
{
    char s[32];
    snprintf(s, sizeof s, "20.2.0.%u", (unsigned)seq);
    tm2__evict_peer e = ep(s, seq, last_msg, true);
    e.min_rtt_ms = min_rtt;
    return e;
}

/* The victim among a fresh copy of set[0..n) (selection marks and reorders). */
static long victim_rtt(const tm2__evict_peer *set, size_t n, uint32_t groups, uint32_t latency,
                       uint32_t active)
{
    tm2__evict_peer p[8];
    memcpy(p, set, n * sizeof *p);
    tm2__evict_params par = {.protect_groups = groups, .protect_latency = latency,
                             .protect_active = active};
    long v = tm2__evict_select(p, n, &par);
    return v < 0 ? -1 : (long)p[v].user;
}

static void eviction_by_latency(void **state)
{
    (void)state;
    /* The two smallest round trips (2, 4) are protected, not the youngest (5). */
    const tm2__evict_peer a[] = {ep_rtt(1, 50, 0), ep_rtt(2, 10, 0), ep_rtt(3, 0, 0),
                                 ep_rtt(4, 20, 0), ep_rtt(5, 30, 0)};
    assert_int_equal(victim_rtt(a, 5, 0, 2, 0), 5);
    assert_int_equal(victim_rtt(a, 5, 0, 3, 0), 3);
    /* Not measured yet is not near: 3 goes however many are protected. */
    assert_int_equal(victim_rtt(a, 5, 0, 10, 0), 3);
    assert_int_equal(victim_rtt(a, 5, 0, UINT32_MAX, 0), 3);
    assert_int_equal(victim_rtt(a, 5, 0, 0, 0), 5);
    /* Equal round trips: the older are protected, in any input order. */
    const tm2__evict_peer b[] = {ep_rtt(3, 10, 0), ep_rtt(1, 10, 0), ep_rtt(2, 10, 0)};
    assert_int_equal(victim_rtt(b, 3, 0, 2, 0), 3);
    /* After the group rule: 1, the group's oldest, does not take one of
     * the two latency places (2 and 5 get them), so 4 goes. */
    const tm2__evict_peer c[] = {ep_rtt(1, 5, 0), ep_rtt(2, 10, 0), ep_rtt(3, 40, 0),
                                 ep_rtt(4, 50, 0), ep_rtt(5, 30, 0)};
    assert_int_equal(victim_rtt(c, 5, 1, 2, 0), 4);
    assert_int_equal(victim_rtt(c, 5, 0, 2, 0), 5);   /* 1 and 2 near, 5 youngest */
    /* Before the activity rule: 4 is protected as near, so the one
     * activity place goes to 5, and 3 is left youngest. */
    const tm2__evict_peer d[] = {ep_rtt(1, 0, 0), ep_rtt(2, 0, 0), ep_rtt(3, 0, 0),
                                 ep_rtt(4, 10, 200), ep_rtt(5, 0, 100)};
    assert_int_equal(victim_rtt(d, 5, 0, 1, 1), 3);
    assert_int_equal(victim_rtt(d, 5, 0, 0, 1), 5);
    /* A flood that answers Pings fastest holds the latency places but
     * still pays for a newcomer: eight near flooders in one /16 among
     * twenty, five honest peers in five groups; default protections. */
    tm2__evict_peer big[25];
    size_t n = 0;
    char s[32];
    for (int i = 0; i < 5; i++) {
        snprintf(s, sizeof s, "30.%d.0.1", i + 1);
        big[n] = ep(s, (uint64_t)i + 1, 0, true);
        big[n++].min_rtt_ms = 80;
    }
    for (int i = 0; i < 20; i++) {
        snprintf(s, sizeof s, "66.6.0.%d", i + 1);
        big[n] = ep(s, (uint64_t)i + 100, 0, true);
        big[n++].min_rtt_ms = i < 8 ? 1 : 0;
    }
    tm2__evict_params def = {TM2_DEFAULT_EVICT_PROTECT_GROUPS, TM2_DEFAULT_EVICT_PROTECT_LATENCY,
                             TM2_DEFAULT_EVICT_PROTECT_ACTIVE,
                             TM2_DEFAULT_EVICT_PROTECT_OLDEST_PCT};
    long v = tm2__evict_select(big, n, &def);
    assert_true(v >= 0 && big[v].seq >= 108);
}

static tm2_ban ban_of(const char *target, int64_t expires, const char *reason)
{
    tm2_ban b;
    memset(&b, 0, sizeof b);
    assert_int_equal(tm2_ban_target_parse(target, &b), 0);
    b.created_unix_ms = 1000;
    b.expires_unix_ms = expires;
    snprintf(b.reason, sizeof b.reason, "%s", reason);
    return b;
}

static void ban_targets(void **state)
{
    (void)state;
    tm2_ban b;
    char out[64];
    assert_int_equal(tm2_ban_target_parse("1.2.3.4", &b), 0);
    assert_true(b.is_ip);
    assert_int_equal(b.ip[10], 0xff);
    assert_int_equal(tm2_ban_target_format(&b, out, sizeof out), 7);
    assert_string_equal(out, "1.2.3.4");
    assert_int_equal(tm2_ban_target_parse("[2001:db8::1]", &b), 0);
    assert_int_equal(tm2_ban_target_format(&b, out, sizeof out), 11);
    assert_string_equal(out, "2001:db8::1");
    assert_int_equal(tm2_ban_target_parse("::1", &b), 0);
    tm2_node_key k;
    tm2_id id;
    uint8_t seed[32] = {7};
    tm2_node_key_from_seed(&k, seed);
    tm2_node_key_id(&k, &id);
    assert_int_equal(tm2_ban_target_parse(id.s, &b), 0);
    assert_false(b.is_ip);
    assert_string_equal(b.id.s, id.s);
    assert_int_equal(tm2_ban_target_format(&b, out, sizeof out), TM2_ID_LEN);
    assert_int_equal(tm2_ban_target_format(&b, out, 10), TM2_ENOSPC);
    assert_int_equal(tm2_ban_target_parse("", &b), TM2_EINVAL);
    assert_int_equal(tm2_ban_target_parse("1.2.3.4:5", &b), TM2_EINVAL);
    assert_int_equal(tm2_ban_target_parse("g1nope", &b), TM2_EINVAL);
    assert_int_equal(tm2_ban_target_parse("[1.2.3.4", &b), TM2_EINVAL);
    assert_int_equal(tm2_ban_target_parse(NULL, &b), TM2_EINVAL);
}

static void ban_list(void **state)
{
    (void)state;
    tm2__bans l;
    assert_int_equal(tm2__bans_init(&l), 0);
    tm2_ban a = ban_of("1.2.3.4", 5000, "flood"), c = ban_of("5.6.7.8", 0, "forever");
    assert_int_equal(tm2__bans_put(&l, &a, 1000), 0);
    assert_int_equal(tm2__bans_put(&l, &c, 1000), 0);
    tm2_netaddr x = ip("1.2.3.4");
    tm2_ban hit;
    assert_true(tm2__bans_has_ip(&l, x.ip, 4999, &hit));
    assert_string_equal(hit.reason, "flood");
    assert_false(tm2__bans_has_ip(&l, x.ip, 5000, NULL));   /* expired */
    /* Renewing keeps the later end. */
    tm2_ban shorter = ban_of("1.2.3.4", 3000, "again");
    assert_int_equal(tm2__bans_put(&l, &shorter, 1000), 0);
    assert_true(tm2__bans_has_ip(&l, x.ip, 4000, &hit));
    assert_string_equal(hit.reason, "again");
    assert_int_equal(atomic_load(&l.total), 3);
    tm2_ban out[4];
    assert_int_equal(tm2__bans_copy(&l, 2000, out, 4), 2);
    assert_int_equal(out[0].expires_unix_ms, 0);         /* "never" first */
    assert_int_equal(tm2__bans_copy(&l, 6000, NULL, 0), 1);
    uint64_t g = tm2__bans_gen(&l);
    assert_int_equal(tm2__bans_del(&l, &c), 0);
    assert_int_equal(tm2__bans_del(&l, &c), TM2_ENOTFOUND);
    assert_true(tm2__bans_gen(&l) != g);
    /* Full: the one that ends first makes room. */
    char s[32];
    for (int i = 0; i < TM2_BANS_MAX + 10; i++) {
        snprintf(s, sizeof s, "9.%d.%d.1", i / 256, i % 256);
        tm2_ban b = ban_of(s, 100000 + i, "");
        assert_int_equal(tm2__bans_put(&l, &b, 2000), 0);
    }
    assert_int_equal(tm2__bans_copy(&l, 2000, NULL, 0), TM2_BANS_MAX);
    x = ip("9.0.0.1");
    assert_false(tm2__bans_has_ip(&l, x.ip, 2000, NULL));
    snprintf(s, sizeof s, "9.%d.%d.1", (TM2_BANS_MAX + 9) / 256, (TM2_BANS_MAX + 9) % 256);
    x = ip(s);
    assert_true(tm2__bans_has_ip(&l, x.ip, 2000, NULL));
    tm2__bans_free(&l);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void ban_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/tm2-bans-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/data/bans.json", dir);
    tm2_ban *got = NULL;
    size_t n = 7;
    char why[256];
    assert_int_equal(tm2_ban_file_load(path, &got, &n, why, sizeof why), TM2_ENOTFOUND);
    assert_int_equal(n, 0);

    tm2_ban b[3] = {ban_of("1.2.3.4", 0, "by hand"), ban_of("2001:db8::7", 99999999999999, "x\"y"),
                    ban_of("8.8.8.8", 1500, "expired")};
    assert_int_equal(tm2_ban_file_save(path, b, 3, 2000, why, sizeof why), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(tm2_ban_file_load(path, &got, &n, why, sizeof why), 0);
    assert_int_equal(n, 2);   /* the expired one was left out */
    assert_true(got[0].is_ip);
    assert_int_equal(got[0].expires_unix_ms, 0);
    assert_string_equal(got[0].reason, "by hand");
    assert_int_equal(got[1].expires_unix_ms, 99999999999999);
    assert_string_equal(got[1].reason, "x\"y");
    assert_int_equal(got[1].created_unix_ms, 1000);
    free(got);

    /* Anything else is not a ban file. */
    static const char *const bad[] = {
        "nope", "[]", "{\"bans\": 3}", "{\"bans\": [1]}", "{\"bans\": [{\"target\": \"x\"}]}",
        "{\"bans\": [{\"target\": \"1.2.3.4\"}]}",
        "{\"bans\": [{\"target\": \"1.2.3.4\", \"expires\": -1}]}",
        "{\"bans\": [{\"target\": \"1.2.3.4\", \"expires\": 1.5}]}",
        "{\"bans\": [{\"target\": \"1.2.3.4\", \"expires\": 0, \"reason\": 7}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i]);
        assert_int_equal(tm2_ban_file_load(path, &got, &n, why, sizeof why), TM2_EDECODE);
        assert_null(got);
    }
    write_file(path, "{\"bans\": [], \"other\": 1}");
    assert_int_equal(tm2_ban_file_load(path, &got, &n, why, sizeof why), 0);
    assert_int_equal(n, 0);
    assert_null(got);
    write_file(path, "{\"bans\": [{\"target\": \"::1\", \"expires\": 0, \"note\": 1}]}");
    assert_int_equal(tm2_ban_file_load(path, &got, &n, why, sizeof why), 0);
    assert_int_equal(n, 1);
    free(got);
    assert_int_equal(tm2_ban_file_load(NULL, &got, &n, why, sizeof why), TM2_EINVAL);
    assert_int_equal(tm2_ban_file_save(path, NULL, 1, 0, why, sizeof why), TM2_EINVAL);

    unlink(path);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/data", dir);
    rmdir(sub);
    rmdir(dir);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(groups),
        cmocka_unit_test(token_buckets),
        cmocka_unit_test(eviction_choice),
        cmocka_unit_test(eviction_by_latency),
        cmocka_unit_test(ban_targets),
        cmocka_unit_test(ban_list),
        cmocka_unit_test(ban_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
