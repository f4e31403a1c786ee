/* config.toml reader of the tm2p2p program: TOML documents, the [p2p] keys and
 * their defaults and bounds, the file gno v1.7.1 writes, and one test per
 * error rule. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tv.h"

/* The reader is part of the program, not the library: compile it in. */
#include "cli/config_toml.c"
#include "cli/toml.c"

typedef struct warns {
    int n;
    char last[512];
} warns;

static void on_warn(void *user, const char *msg)
{
    warns *w = user;
    w->n++;
    snprintf(w->last, sizeof w->last, "%s", msg);
}

/* Parses text on top of the defaults; returns the parse result, err filled. */
static int parse(cli_config *c, const char *text, char *err, size_t cap, warns *w)
{
    assert_int_equal(cli_config_defaults(c), 0);
    return cli_config_parse(c, text, strlen(text), "config.toml", on_warn, w, err, cap);
}

/* Expects text to fail with an error containing every fragment given. */
static void expect_error(const char *text, const char *frag1, const char *frag2)
{
    cli_config c;
    char err[512];
    warns w = {0};
    int r = parse(&c, text, err, sizeof err, &w);
    if (r != -1)
        fail_msg("accepted: %s", text);
    if (!strstr(err, frag1) || (frag2 && !strstr(err, frag2)))
        fail_msg("error for %s was '%s', wanted '%s' and '%s'", text, err, frag1, frag2 ? frag2 : "");
    cli_config_free(&c);
}

static void defaults(void **state)
{
    (void)state;
    cli_config c;
    assert_int_equal(cli_config_defaults(&c), 0);
    assert_string_equal(c.moniker, "");
    assert_string_equal(c.node_key_file, "secrets/node_key.json");
    assert_string_equal(c.laddr, "tcp://0.0.0.0:26656");
    assert_string_equal(c.external_address, "");
    assert_string_equal(c.seeds, "");
    assert_string_equal(c.persistent_peers, "");
    assert_string_equal(c.private_peer_ids, "");
    assert_string_equal(c.addr_book_file, "config/addrbook.json");
    assert_int_equal(c.max_num_inbound_peers, 40);
    assert_int_equal(c.max_num_outbound_peers, 10);
    assert_int_equal(c.flush_throttle_timeout_ns, 100000000);
    assert_int_equal(c.max_packet_msg_payload_size, 1024);
    assert_int_equal(c.send_rate, 5120000);
    assert_int_equal(c.recv_rate, 5120000);
    assert_int_equal(c.recv_assembly_timeout_ns, 30000000000LL);
    assert_int_equal(c.max_recv_buffer_bytes, 20 << 20);
    assert_int_equal(c.max_send_buffer_bytes, 20 << 20);
    assert_true(c.pex);
    assert_false(c.allow_duplicate_ip);
    assert_false(c.seed_mode);
    assert_false(c.prometheus);
    assert_string_equal(c.prometheus_listen_addr, ":26660");
    assert_string_equal(c.unconditional_peer_ids, "");
    assert_int_equal(c.max_pending_inbound_per_ip, 4);
    assert_int_equal(c.accept_ip_rate, 12);
    assert_int_equal(c.accept_ip_burst, 12);
    assert_int_equal(c.accept_subnet_rate, 60);
    assert_int_equal(c.accept_subnet_burst, 60);
    assert_int_equal(c.max_inbound_per_ip, 4);
    assert_int_equal(c.max_inbound_per_subnet, 8);
    assert_true(c.outbound_diversity);
    assert_true(c.evict_inbound);
    assert_int_equal(c.evict_protect_groups, 4);
    assert_int_equal(c.evict_protect_latency, 8);
    assert_int_equal(c.evict_protect_active, 4);
    assert_int_equal(c.evict_protect_oldest_pct, 50);
    assert_false(c.limit_local_addrs);
    assert_int_equal(c.ban_duration_ns, 3600000000000LL);
    assert_string_equal(c.ban_file, "data/bans.json");
    cli_config_free(&c);
}

/* The admission, eviction and ban keys. */
static void admission_keys(void **state)
{
    (void)state;
    cli_config c;
    char err[512];
    warns w = {0};
    assert_int_equal(parse(&c,
                           "[p2p]\nunconditional_peer_ids = \"g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y\"\n"
                           "max_pending_inbound_per_ip = 2\naccept_ip_rate = 0\naccept_ip_burst = 5\n"
                           "accept_subnet_rate = 100\naccept_subnet_burst = 200\n"
                           "max_inbound_per_ip = 1\nmax_inbound_per_subnet = 0\n"
                           "outbound_diversity = false\nevict_inbound = false\nlimit_local_addrs = true\n"
                           "evict_protect_groups = 0\nevict_protect_latency = 10000\n"
                           "evict_protect_active = 2\nevict_protect_oldest_pct = 100\n"
                           "ban_duration = \"24h\"\nban_file = \"/var/lib/bans.json\"\n",
                           err, sizeof err, &w),
                     0);
    assert_int_equal(w.n, 0);
    assert_string_equal(c.unconditional_peer_ids, "g1m3juzly3yv3l5czeqj2833dhu8hpgklmrxfc5y");
    assert_int_equal(c.max_pending_inbound_per_ip, 2);
    assert_int_equal(c.accept_ip_rate, 0);
    assert_int_equal(c.accept_ip_burst, 5);
    assert_int_equal(c.accept_subnet_rate, 100);
    assert_int_equal(c.accept_subnet_burst, 200);
    assert_int_equal(c.max_inbound_per_ip, 1);
    assert_int_equal(c.max_inbound_per_subnet, 0);
    assert_false(c.outbound_diversity);
    assert_false(c.evict_inbound);
    assert_int_equal(c.evict_protect_groups, 0);
    assert_int_equal(c.evict_protect_latency, 10000);
    assert_int_equal(c.evict_protect_active, 2);
    assert_int_equal(c.evict_protect_oldest_pct, 100);
    assert_true(c.limit_local_addrs);
    assert_int_equal(c.ban_duration_ns, 24 * 3600000000000LL);
    assert_string_equal(c.ban_file, "/var/lib/bans.json");
    cli_config_free(&c);
    expect_error("[p2p]\naccept_ip_rate = -1\n", "p2p.accept_ip_rate", "negative");
    expect_error("[p2p]\naccept_ip_burst = 1000001\n", "p2p.accept_ip_burst", "from 0 to 1000000");
    expect_error("[p2p]\nban_duration = \"-1h\"\n", "p2p.ban_duration", "negative");
    expect_error("[p2p]\nban_file = \"\"\n", "p2p.ban_file", "empty");
    expect_error("[p2p]\nlimit_local_addrs = \"no\"\n", "p2p.limit_local_addrs", "boolean");
    expect_error("[p2p]\nevict_protect_groups = 10001\n", "p2p.evict_protect_groups", "from 0 to 10000");
    expect_error("[p2p]\nevict_protect_latency = -1\n", "p2p.evict_protect_latency", "negative");
    expect_error("[p2p]\nevict_protect_active = 10001\n", "p2p.evict_protect_active", "from 0 to 10000");
    expect_error("[p2p]\nevict_protect_oldest_pct = 101\n", "p2p.evict_protect_oldest_pct", "from 0 to 100");
    expect_error("[p2p]\nevict_protect_oldest_pct = \"50\"\n", "p2p.evict_protect_oldest_pct", "integer");
}

/* An empty file and a file of comments leave every default in place. */
static void empty_keeps_defaults(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    assert_int_equal(parse(&c, "", err, sizeof err, &w), 0);
    assert_string_equal(c.laddr, "tcp://0.0.0.0:26656");
    cli_config_free(&c);
    assert_int_equal(parse(&c, "# only a comment\n\n   \t\n# another\n", err, sizeof err, &w), 0);
    assert_int_equal(c.max_num_outbound_peers, 10);
    assert_true(c.pex);
    cli_config_free(&c);
    assert_int_equal(w.n, 0);
}

/* A file shaped like what gno writes (go-toml: keys sorted, durations as
 * strings, other sections with arrays) loads, and only our keys change. */
static const char gno_like[] =
    "# This is a TOML config file.\n"
    "abci = \"socket\"\n"
    "db_backend = \"goleveldb\"\n"
    "home = \"\"\n"
    "moniker = \"val-01\"\n"
    "node_key_file = \"secrets/node_key.json\"\n"
    "prof_laddr = \"\"\n"
    "\n"
    "[consensus]\n"
    "  home = \"\"\n"
    "  peer_gossip_sleep_duration = \"100ms\"\n"
    "  skip_timeout_commit = false\n"
    "  [consensus.timeouts]\n"
    "    timeout_commit = \"1s\"\n"
    "\n"
    "[mempool]\n"
    "  size = 5000\n"
    "  max_tx_bytes = 1_048_576\n"
    "  ratio = 0.5\n"
    "\n"
    "[p2p]\n"
    "  addr_book_file = \"config/book.json\"\n"
    "  external_address = \"127.0.0.1:36656\"\n"
    "  flush_throttle_timeout = \"10ms\"\n"
    "  home = \"\"\n"
    "  laddr = \"tcp://127.0.0.1:36656\"   # inline comment\n"
    "  max_num_inbound_peers = 80\n"
    "  max_num_outbound_peers = 40\n"
    "  max_packet_msg_payload_size = 2048\n"
    "  persistent_peers = \"g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656\"\n"
    "  pex = false\n"
    "  private_peer_ids = \"g1x36slx9at870e9rd53d2405n80s4ff94dx42dl\"\n"
    "  recv_rate = 0x10\n"
    "  seeds = \"\"\n"
    "  send_rate = 10240000\n"
    "\n"
    "[rpc]\n"
    "  cors_allowed_headers = [\"Origin\", \"Accept\",\n"
    "                          \"Content-Type\", # comment inside an array\n"
    "  ]\n"
    "  cors_allowed_origins = [\"*\"]\n"
    "  laddr = \"tcp://127.0.0.1:26657\"\n"
    "  nested = [[1, 2], [\"a\"], []]\n"
    "  table = { a = 1, b.c = \"x\", d = [true] }\n"
    "\n"
    "[[array.of.tables]]\n"
    "  laddr = 1\n"
    "[[array.of.tables]]\n"
    "  laddr = 2\n";

static void gno_config(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    int r = parse(&c, gno_like, err, sizeof err, &w);
    if (r)
        fail_msg("%s", err);
    assert_string_equal(c.moniker, "val-01");
    assert_string_equal(c.node_key_file, "secrets/node_key.json");
    assert_string_equal(c.addr_book_file, "config/book.json");
    assert_string_equal(c.external_address, "127.0.0.1:36656");
    assert_int_equal(c.flush_throttle_timeout_ns, 10000000);
    assert_string_equal(c.laddr, "tcp://127.0.0.1:36656");
    assert_int_equal(c.max_num_inbound_peers, 80);
    assert_int_equal(c.max_num_outbound_peers, 40);
    assert_int_equal(c.max_packet_msg_payload_size, 2048);
    assert_string_equal(c.persistent_peers, "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656");
    assert_false(c.pex);
    assert_string_equal(c.private_peer_ids, "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl");
    assert_int_equal(c.recv_rate, 16);
    assert_int_equal(c.send_rate, 10240000);
    assert_int_equal(w.n, 0);
    cli_config_free(&c);
}

/* Keys of other tables with our names never touch our settings. */
static void other_tables_ignored(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    assert_int_equal(parse(&c, "[rpc]\nladdr = \"tcp://127.0.0.1:1\"\n[p2p.sub]\npex = 3\n", err,
                           sizeof err, &w), 0);
    assert_string_equal(c.laddr, "tcp://0.0.0.0:26656");
    assert_true(c.pex);
    cli_config_free(&c);
    /* moniker only counts at the top level */
    assert_int_equal(parse(&c, "[rpc]\nmoniker = \"x\"\n", err, sizeof err, &w), 0);
    assert_string_equal(c.moniker, "");
    cli_config_free(&c);
}

static void dotted_and_quoted_keys(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    assert_int_equal(parse(&c, "p2p.laddr = \"tcp://127.0.0.1:1\"\n\"p2p\" . 'pex' = false\n", err, sizeof err, &w), 0);
    assert_string_equal(c.laddr, "tcp://127.0.0.1:1");
    assert_false(c.pex);
    cli_config_free(&c);
    assert_int_equal(parse(&c, "[\"p2p\"]\nseed_mode = true\n", err, sizeof err, &w), 0);
    assert_true(c.seed_mode);
    cli_config_free(&c);
    /* a quoted key with a dot is one key at the top level, not [p2p] laddr */
    assert_int_equal(parse(&c, "\"p2p.laddr\" = \"tcp://127.0.0.1:1\"\n[p2p]\n'seed_mode' = true\n", err,
                           sizeof err, &w), 0);
    assert_string_equal(c.laddr, "tcp://0.0.0.0:26656");
    assert_true(c.seed_mode);
    assert_int_equal(w.n, 0);
    cli_config_free(&c);
    /* [p2p] "laddr.x" is an unknown key of [p2p], not laddr */
    assert_int_equal(parse(&c, "[p2p]\n\"laddr.x\" = \"a\"\n", err, sizeof err, &w), 0);
    assert_string_equal(c.laddr, "tcp://0.0.0.0:26656");
    assert_int_equal(w.n, 1);
    assert_non_null(strstr(w.last, "unknown key p2p.\"laddr.x\""));
    cli_config_free(&c);
}

/* p2p = { ... } is the same table as [p2p]; so are dotted keys. */
static void inline_table(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "[p2p]\nladdr = \"tcp://127.0.0.1:7\"\npex = false\nsend_rate = 9\n",
        "p2p = { laddr = \"tcp://127.0.0.1:7\", pex = false, send_rate = 9 }\n",
        "p2p.laddr = \"tcp://127.0.0.1:7\"\np2p.pex = false\np2p.send_rate = 9\n",
        "[x]\ny = 1\n[p2p]\nladdr = \"tcp://127.0.0.1:7\"\n'pex' = false\n\"send_rate\" = 9\n",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        cli_config c;
        char err[256];
        warns w = {0};
        if (parse(&c, docs[i], err, sizeof err, &w))
            fail_msg("%s: %s", docs[i], err);
        assert_string_equal(c.laddr, "tcp://127.0.0.1:7");
        assert_false(c.pex);
        assert_int_equal(c.send_rate, 9);
        assert_int_equal(w.n, 0);
        cli_config_free(&c);
    }
    /* errors inside an inline [p2p] name the key and the line */
    expect_error("a = 1\np2p = { pex = 1 }\n", "config.toml:2:", "p2p.pex: expected a boolean");
    expect_error("p2p = { send_rate = -1 }\n", "config.toml:1:", "p2p.send_rate: must not be negative");
    /* inline tables are closed once written */
    expect_error("p2p = { pex = true }\n[p2p]\n", "config.toml:2:", "[p2p] defined twice");
    expect_error("p2p = { pex = true }\np2p.seeds = \"\"\n", "config.toml:2:", "inline table");
    expect_error("p2p = {}\n[p2p.sub]\n", "config.toml:2:", "inline table");
}

static void strings(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    assert_int_equal(parse(&c, "moniker = \"a\\\"b\\\\c\\td\\u00e9\\U0001F600\"\n"
                               "[p2p]\nseeds = 'C:\\no\\escapes'\nladdr = \"\"\n", err, sizeof err, &w), 0);
    assert_string_equal(c.moniker, "a\"b\\c\td\xc3\xa9\xf0\x9f\x98\x80");
    assert_string_equal(c.seeds, "C:\\no\\escapes");
    assert_string_equal(c.laddr, "");
    cli_config_free(&c);
}

static void crlf_and_bom(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    assert_int_equal(parse(&c, "\xef\xbb\xbfmoniker = \"m\"\r\n[p2p]\r\npex = false # c\r\n", err,
                           sizeof err, &w), 0);
    assert_string_equal(c.moniker, "m");
    assert_false(c.pex);
    cli_config_free(&c);
    /* line numbers count CRLF lines */
    expect_error("a = 1\r\nb = 2\r\n[p2p]\r\npex = 1\r\n", "config.toml:4:", "p2p.pex");
}

static void integers(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    assert_int_equal(parse(&c, "[p2p]\nsend_rate = +1_000\nrecv_rate = 0o17\nmax_num_inbound_peers = 0b101\n"
                               "max_num_outbound_peers = 0\nmax_packet_msg_payload_size = 65536\n",
                           err, sizeof err, &w), 0);
    assert_int_equal(c.send_rate, 1000);
    assert_int_equal(c.recv_rate, 15);
    assert_int_equal(c.max_num_inbound_peers, 5);
    assert_int_equal(c.max_num_outbound_peers, 0);
    assert_int_equal(c.max_packet_msg_payload_size, 65536);
    cli_config_free(&c);
    assert_int_equal(parse(&c, "[p2p]\nsend_rate = 9223372036854775807\nrecv_rate = 0x7FFF_FFFF_FFFF_FFFF\n", err,
                           sizeof err, &w), 0);
    assert_int_equal(c.send_rate, INT64_MAX);
    assert_int_equal(c.recv_rate, INT64_MAX);
    cli_config_free(&c);
    expect_error("[p2p]\nsend_rate = 9223372036854775808\n", "config.toml:2:", "64 bits");
    expect_error("[p2p]\nsend_rate = 0x8000000000000000\n", "config.toml:2:", "64 bits");
    expect_error("x = -9223372036854775809\n", "config.toml:1:", "64 bits");
    expect_error("[p2p]\nsend_rate = 0123\n", "config.toml:2:", "leading zeros");
    expect_error("[p2p]\nsend_rate = 1__0\n", "config.toml:2:", "'_'");
    expect_error("[p2p]\nsend_rate = _10\n", "config.toml:2:", "'_'");
    expect_error("[p2p]\nsend_rate = 10_\n", "config.toml:2:", "'_'");
    expect_error("[p2p]\nsend_rate = 12ab\n", "config.toml:2:", "bad number");
    expect_error("[p2p]\nsend_rate = -0x10\n", "config.toml:2:", "sign");
}

static void durations(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t ns;
    } good[] = {
        {"0", 0},
        {"100ms", 100000000},
        {"10s", 10000000000LL},
        {"1m30s", 90000000000LL},
        {"1.5s", 1500000000},
        {".5ms", 500000},
        {"2h", 7200000000000LL},
        {"1us", 1000},
        {"1\xc2\xb5s", 1000},
        {"1\xce\xbcs", 1000},
        {"7ns", 7},
        {"+3s", 3000000000LL},
        {"-1s", -1000000000LL},
        {"9223372036854775807ns", INT64_MAX},
        {"-9223372036854775808ns", INT64_MIN},
        {"1h1m1s1ms1us1ns", 3661001001001LL},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t ns = 42;
        if (cli_parse_duration(good[i].s, &ns) != 0)
            fail_msg("rejected %s", good[i].s);
        if (ns != good[i].ns)
            fail_msg("%s -> %lld", good[i].s, (long long)ns);
    }
    static const char *const bad[] = {"", "10", "ms", "1x", "1.s.", ".s", "-", "1s2",
                                      "9223372036854775808ns", "2562048h", "1 s", "1S"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ns = 42;
        if (cli_parse_duration(bad[i], &ns) == 0)
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(ns, 42);
    }
    cli_config c;
    char err[256];
    warns w = {0};
    /* an integer is a count of nanoseconds, like go-toml reads a time.Duration */
    assert_int_equal(parse(&c, "[p2p]\nflush_throttle_timeout = 5000000\n", err, sizeof err, &w), 0);
    assert_int_equal(c.flush_throttle_timeout_ns, 5000000);
    cli_config_free(&c);
    assert_int_equal(parse(&c, "[p2p]\nflush_throttle_timeout = \"0s\"\n", err, sizeof err, &w), 0);
    assert_int_equal(c.flush_throttle_timeout_ns, 0);
    cli_config_free(&c);
}

/* ---- one test per rejection rule ---- */

static void error_wrong_type(void **state)
{
    (void)state;
    expect_error("[p2p]\nmax_num_inbound_peers = \"40\"\n", "p2p.max_num_inbound_peers", "expected an integer");
    expect_error("[p2p]\npex = 1\n", "p2p.pex", "expected a boolean");
    expect_error("[p2p]\nladdr = 26656\n", "p2p.laddr", "expected a string");
    expect_error("[p2p]\nseeds = [\"a\"]\n", "p2p.seeds", "found an array");
    expect_error("[p2p]\nsend_rate = 1.5\n", "p2p.send_rate", "found a float");
    expect_error("[p2p]\nflush_throttle_timeout = true\n", "p2p.flush_throttle_timeout", "duration");
    expect_error("moniker = { a = 1 }\n", "moniker", "found a table");
}

static void error_negative(void **state)
{
    (void)state;
    expect_error("[p2p]\nsend_rate = -1\n", "p2p.send_rate", "negative");
    expect_error("[p2p]\nrecv_rate = -5\n", "p2p.recv_rate", "negative");
    expect_error("[p2p]\nmax_packet_msg_payload_size = -1024\n", "p2p.max_packet_msg_payload_size", "negative");
    expect_error("[p2p]\nmax_num_inbound_peers = -1\n", "p2p.max_num_inbound_peers", "negative");
    expect_error("[p2p]\nmax_num_outbound_peers = -1\n", "p2p.max_num_outbound_peers", "negative");
    expect_error("[p2p]\nflush_throttle_timeout = \"-10ms\"\n", "p2p.flush_throttle_timeout", "negative");
    expect_error("[p2p]\nflush_throttle_timeout = -1\n", "p2p.flush_throttle_timeout", "negative");
    expect_error("[p2p]\nrecv_assembly_timeout = \"-1s\"\n", "p2p.recv_assembly_timeout", "negative");
    expect_error("[p2p]\nmax_recv_buffer_bytes = -1\n", "p2p.max_recv_buffer_bytes", "negative");
    expect_error("[p2p]\nmax_send_buffer_bytes = -1\n", "p2p.max_send_buffer_bytes", "negative");
}

/* The reference's ValidateBasic bounds, and what would fail every peer. */
static void bounds(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    char doc[256];
    snprintf(doc, sizeof doc,
             "[p2p]\nmax_recv_buffer_bytes = %u\nmax_send_buffer_bytes = 0\nrecv_assembly_timeout = \"0s\"\n"
             "max_packet_msg_payload_size = 1\nallow_duplicate_ip = true\n",
             TM2_MIN_BUFFER_BYTES);
    if (parse(&c, doc, err, sizeof err, &w))
        fail_msg("%s", err);
    assert_int_equal(c.max_recv_buffer_bytes, TM2_MIN_BUFFER_BYTES);
    assert_int_equal(c.max_send_buffer_bytes, 0);
    assert_int_equal(c.recv_assembly_timeout_ns, 0);
    assert_int_equal(c.max_packet_msg_payload_size, 1);
    assert_true(c.allow_duplicate_ip);
    cli_config_free(&c);

    expect_error("[p2p]\nmax_recv_buffer_bytes = 1\n", "p2p.max_recv_buffer_bytes", "0 (off) or at least 8454144");
    snprintf(doc, sizeof doc, "[p2p]\nmax_send_buffer_bytes = %u\n", TM2_MIN_BUFFER_BYTES - 1);
    expect_error(doc, "config.toml:2: p2p.max_send_buffer_bytes", "at least 8454144 (got 8454143)");
    expect_error("[p2p]\nmax_packet_msg_payload_size = 0\n", "config.toml:2: p2p.max_packet_msg_payload_size",
                 "from 1 to 65536 (got 0)");
    expect_error("[p2p]\nmax_packet_msg_payload_size = 65537\n", "p2p.max_packet_msg_payload_size", "65536");
    expect_error("[p2p]\nallow_duplicate_ip = \"yes\"\n", "p2p.allow_duplicate_ip", "expected a boolean");
    expect_error("[p2p]\nrecv_assembly_timeout = 1.5\n", "p2p.recv_assembly_timeout", "duration");
}

/* CometBFT's [instrumentation] keys turn on the HTTP endpoints. */
static void instrumentation_keys(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    if (parse(&c, "[instrumentation]\nprometheus = true\nprometheus_listen_addr = \"127.0.0.1:9100\"\n"
                  "namespace = \"cometbft\"\n",
              err, sizeof err, &w))
        fail_msg("%s", err);
    assert_true(c.prometheus);
    assert_string_equal(c.prometheus_listen_addr, "127.0.0.1:9100");
    assert_int_equal(w.n, 0);
    cli_config_free(&c);
    expect_error("[instrumentation]\nprometheus = 1\n", "instrumentation.prometheus", "expected a boolean");
    expect_error("instrumentation = 3\n", "instrumentation", "expected a table");
}

/* The config.toml gno v1.7.1 writes for its defaults reads as our defaults. */
static void upstream_default_file(void **state)
{
    (void)state;
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/upstream_v1.7.1_config.toml", TM2_VECTORS_DIR);
    cli_config c;
    bool found = false;
    warns w = {0};
    assert_int_equal(cli_config_defaults(&c), 0);
    /* start from other values, so every key must come from the file */
    assert_int_equal(cli_config_set_str(&c.laddr, "x"), 0);
    assert_int_equal(cli_config_set_str(&c.addr_book_file, "x"), 0);
    assert_int_equal(cli_config_set_str(&c.external_address, "x"), 0);
    assert_int_equal(cli_config_set_str(&c.seeds, "x"), 0);
    assert_int_equal(cli_config_set_str(&c.persistent_peers, "x"), 0);
    assert_int_equal(cli_config_set_str(&c.private_peer_ids, "x"), 0);
    assert_int_equal(cli_config_set_str(&c.node_key_file, "x"), 0);
    c.max_num_inbound_peers = c.max_num_outbound_peers = 1;
    c.flush_throttle_timeout_ns = c.recv_assembly_timeout_ns = 1;
    c.max_packet_msg_payload_size = c.send_rate = c.recv_rate = 1;
    c.max_recv_buffer_bytes = c.max_send_buffer_bytes = 0;
    c.pex = false;
    c.allow_duplicate_ip = true;
    if (cli_config_load(&c, path, &found, on_warn, &w, err, sizeof err))
        fail_msg("%s", err);
    assert_true(found);
    assert_int_equal(w.n, 0); /* every [p2p] key of the reference is known */
    assert_string_equal(c.moniker, "upstream-default");
    assert_string_equal(c.node_key_file, TM2_DEFAULT_NODE_KEY_FILE);
    assert_string_equal(c.addr_book_file, TM2_DEFAULT_ADDR_BOOK_FILE);
    assert_false(c.allow_duplicate_ip);
    assert_string_equal(c.external_address, "");
    assert_int_equal(c.flush_throttle_timeout_ns, TM2_DEFAULT_FLUSH_THROTTLE_MS * 1000000LL);
    assert_string_equal(c.laddr, TM2_DEFAULT_LISTEN_ADDR);
    assert_int_equal(c.max_num_inbound_peers, TM2_DEFAULT_MAX_INBOUND);
    assert_int_equal(c.max_num_outbound_peers, TM2_DEFAULT_MAX_OUTBOUND);
    assert_int_equal(c.max_packet_msg_payload_size, TM2_DEFAULT_MAX_PACKET_PAYLOAD);
    assert_int_equal(c.max_recv_buffer_bytes, TM2_DEFAULT_MAX_RECV_BUFFER_BYTES);
    assert_int_equal(c.max_send_buffer_bytes, TM2_DEFAULT_MAX_SEND_BUFFER_BYTES);
    assert_string_equal(c.persistent_peers, "");
    assert_true(c.pex);
    assert_string_equal(c.private_peer_ids, "");
    assert_int_equal(c.recv_assembly_timeout_ns, TM2_DEFAULT_RECV_ASSEMBLY_TIMEOUT_MS * 1000000LL);
    assert_int_equal(c.recv_rate, TM2_DEFAULT_RECV_RATE);
    assert_string_equal(c.seeds, "");
    assert_int_equal(c.send_rate, TM2_DEFAULT_SEND_RATE);
    assert_false(c.seed_mode);
    cli_config_free(&c);
}

/* Sections we do not read may use any TOML: multi-line strings, date-times,
 * arrays of tables. */
static void other_sections_any_toml(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    int r = parse(&c, "moniker = \"\"\"\nm\"\"\"\nnote = '''\nraw \\ text'''\n"
                      "when = 1979-05-27T07:32:00-08:00\nday = 1979-05-27\nat = 07:32:00.5\n"
                      "local = 1979-05-27 07:32:00\nf = [inf, -nan, 6.02e+23]\n"
                      "[[x.y]]\nz = 1\n[[x.y]]\nz = 2\n[x.y.w]\n[p2p]\npex = false\n",
                  err, sizeof err, &w);
    if (r)
        fail_msg("%s", err);
    assert_string_equal(c.moniker, "m");
    assert_false(c.pex);
    cli_config_free(&c);
}

static void error_bad_duration(void **state)
{
    (void)state;
    expect_error("[p2p]\nflush_throttle_timeout = \"100\"\n", "p2p.flush_throttle_timeout", "bad duration");
    expect_error("[p2p]\nflush_throttle_timeout = \"fast\"\n", "config.toml:2:", "bad duration \"fast\"");
}

static void error_empty_moniker(void **state)
{
    (void)state;
    expect_error("moniker = \"\"\n", "config.toml:1:", "moniker: must not be empty");
}

static void error_duplicates(void **state)
{
    (void)state;
    expect_error("[p2p]\npex = true\npex = false\n", "config.toml:3:", "p2p.pex: defined twice");
    expect_error("[p2p]\n[rpc]\n[p2p]\n", "config.toml:3:", "table [p2p] defined twice");
    expect_error("p2p.pex = true\n[p2p]\npex = false\n", "config.toml:2:", "[p2p] defined twice");
    expect_error("[p2p]\n[[p2p]]\n", "config.toml:2:", "[[p2p]]");
    expect_error("[[p2p]]\n[p2p]\n", "config.toml:2:", "array of tables");
    expect_error("[[p2p]]\npex = true\n", "config.toml:1:", "p2p: expected a table, found an array");
    expect_error("p2p = 1\n", "config.toml:1:", "p2p: expected a table, found an integer");
    expect_error("[p2p]\nladdr.x = 1\nladdr = \"a\"\n", "config.toml:3:", "p2p.laddr: defined twice");
    expect_error("[rpc]\nx = 1\nx = 2\n", "config.toml:3:", "rpc.x");
}

static void error_syntax(void **state)
{
    (void)state;
    expect_error("[p2p]\nladdr = tcp://0.0.0.0:1\n", "config.toml:2:", "unquoted value 'tcp://0.0.0.0:1'");
    expect_error("[p2p]\nladdr = \"open\n", "config.toml:2:", "unterminated string");
    expect_error("[p2p]\nladdr = \"\"\"x\n\n", "config.toml:4:", "unterminated multi-line");
    expect_error("[p2p]\nladdr = 1979-05-27\n", "config.toml:2:", "p2p.laddr: expected a string, found a local date");
    expect_error("when = 1979-02-29\n", "config.toml:1:", "bad date");
    expect_error("when = 07:32\n", "config.toml:1:", "bad date or time");
    expect_error("\"\"\"k\"\"\" = 1\n", "config.toml:1:", "multi-line string cannot be a key");
    expect_error("a = \"\xff\"\n", "config.toml:1:", "UTF-8");
    expect_error("a = 1\rb = 2\n", "config.toml:1:", "after the value");
    expect_error("[p2p]\npex true\n", "config.toml:2:", "expected '='");
    expect_error("[p2p]\npex =\n", "config.toml:2:", "missing value");
    expect_error("[p2p]\npex = # nothing\n", "config.toml:2:", "missing value");
    expect_error("[p2p]\n= 1\n", "config.toml:2:", "missing key");
    expect_error("[p2p]\npex = true false\n", "config.toml:2:", "after the value");
    expect_error("[p2p]\nladdr = \"a\\qb\"\n", "config.toml:2:", "escape");
    expect_error("[p2p]\nladdr = \"a\\u12\"\n", "config.toml:2:", "\\u escape");
    expect_error("[p2p]\nladdr = \"\\ud800\"\n", "config.toml:2:", "Unicode");
    expect_error("[p2p]\nladdr = \"\\u0000\"\n", "config.toml:2:", "NUL");
    expect_error("[p2p]\nladdr = \"a\x01b\"\n", "config.toml:2:", "control character");
    expect_error("# bell \x07\n", "config.toml:1:", "control character");
    expect_error("[p2p\npex = true\n", "config.toml:1:", "expected ']'");
    expect_error("[[a]\n", "config.toml:1:", "expected ']]'");
    expect_error("[]\n", "config.toml:1:", "missing key");
    expect_error("[p2p] x = 1\n", "config.toml:1:", "after the table header");
    expect_error("a = [1 2]\n", "config.toml:1:", "expected ',' or ']'");
    expect_error("a = [1,\n", "config.toml:2:", "missing value");
    expect_error("a = {b = 1\n", "config.toml:1:", "newline inside an inline table");
    expect_error("a = {b = 1 c = 2}\n", "config.toml:1:", "expected ',' or '}'");
    expect_error("a = {b = 1,}\n", "config.toml:1:", "trailing ','");
    expect_error("a = {b 1}\n", "config.toml:1:", "expected '='");
    expect_error("k!y = 1\n", "config.toml:1:", "expected '=' after key 'k'");
    expect_error("!k = 1\n", "config.toml:1:", "bad character '!'");
    expect_error("a = 1.\n", "config.toml:1:", "bad number");
    expect_error("a = 01.5\n", "config.toml:1:", "leading zeros");
    expect_error("a = 1e400\n", "config.toml:1:", "out of range");
    expect_error("a = 1e\n", "config.toml:1:", "bad number");
}

static void error_nesting(void **state)
{
    (void)state;
    char text[256] = "a = ";
    for (int i = 0; i < TOML_MAX_DEPTH + 2; i++)
        strcat(text, "[");
    strcat(text, "\n");
    expect_error(text, "config.toml:1:", "nested too deeply");
}

static void error_nul_byte(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    assert_int_equal(cli_config_defaults(&c), 0);
    static const char text[] = "moniker = \"a\"\n\0\n";
    assert_int_equal(cli_config_parse(&c, text, sizeof text - 1, "f", NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "NUL"));
    cli_config_free(&c);
}

/* Text ending without a newline, and a value ending the input, parse. */
static void no_final_newline(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    assert_int_equal(parse(&c, "[p2p]\npex = false", err, sizeof err, &w), 0);
    assert_false(c.pex);
    cli_config_free(&c);
    /* not NUL-terminated: the length bounds the parse */
    assert_int_equal(cli_config_defaults(&c), 0);
    const char text[] = {'[', 'p', '2', 'p', ']', '\n', 's', 'e', 'n', 'd', '_', 'r', 'a', 't', 'e',
                         ' ', '=', ' ', '7', '7'};
    assert_int_equal(cli_config_parse(&c, text, 19, "f", NULL, NULL, err, sizeof err), 0);
    assert_int_equal(c.send_rate, 7);
    cli_config_free(&c);
}

static void unknown_p2p_key_warns(void **state)
{
    (void)state;
    cli_config c;
    char err[256];
    warns w = {0};
    assert_int_equal(parse(&c, "[p2p]\nupnp = false\n[mempool]\nsize = 1\n", err, sizeof err, &w), 0);
    assert_int_equal(w.n, 1);
    assert_non_null(strstr(w.last, "config.toml:2:"));
    assert_non_null(strstr(w.last, "p2p.upnp"));
    cli_config_free(&c);
}

static void load_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/tm2-config-toml-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/config.toml", dir);
    cli_config c;
    bool found = true;

    assert_int_equal(cli_config_defaults(&c), 0);
    assert_int_equal(cli_config_load(&c, path, &found, NULL, NULL, err, sizeof err), 0);
    assert_false(found);
    assert_string_equal(c.laddr, "tcp://0.0.0.0:26656");

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[p2p]\nladdr = \"tcp://127.0.0.1:5\"\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(cli_config_load(&c, path, &found, NULL, NULL, err, sizeof err), 0);
    assert_true(found);
    assert_string_equal(c.laddr, "tcp://127.0.0.1:5");

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[p2p]\n\nsend_rate = -1\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(cli_config_load(&c, path, &found, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, ":3: p2p.send_rate"));

    /* over 1 MiB */
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < (1 << 20) / 8 + 1; i++)
        fputs("# xxxxx\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(cli_config_load(&c, path, &found, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "larger than"));
    unlink(path);

    /* a directory */
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(cli_config_load(&c, path, &found, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "directory"));
    rmdir(path);
    rmdir(dir);
    cli_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(empty_keeps_defaults),
        cmocka_unit_test(gno_config),
        cmocka_unit_test(other_tables_ignored),
        cmocka_unit_test(dotted_and_quoted_keys),
        cmocka_unit_test(inline_table),
        cmocka_unit_test(bounds),
        cmocka_unit_test(upstream_default_file),
        cmocka_unit_test(instrumentation_keys),
        cmocka_unit_test(other_sections_any_toml),
        cmocka_unit_test(strings),
        cmocka_unit_test(crlf_and_bom),
        cmocka_unit_test(integers),
        cmocka_unit_test(durations),
        cmocka_unit_test(error_wrong_type),
        cmocka_unit_test(error_negative),
        cmocka_unit_test(error_bad_duration),
        cmocka_unit_test(error_empty_moniker),
        cmocka_unit_test(error_duplicates),
        cmocka_unit_test(error_syntax),
        cmocka_unit_test(error_nesting),
        cmocka_unit_test(error_nul_byte),
        cmocka_unit_test(no_final_newline),
        cmocka_unit_test(unknown_p2p_key_warns),
        cmocka_unit_test(load_file),
        cmocka_unit_test(admission_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
