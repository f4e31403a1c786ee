/* The crawl database (src/crawl/store.c): migrations and schema_version,
 * the writer thread's records, loading them back, a newer schema refused,
 * and the subnet-varied answer selection of the seed (src/crawl/select.c). */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crawl/migrations.h"
#include "crawl/select.h"
#include "crawl/store.h"
#include "tv.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/tm2-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int64_t count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static int collect(const crawl_addr_row *row, void *user)
{
    crawl_addr_row *out = user;
    out[0] = *row;
    return 0;
}

static void migrate_write_load(void **state)
{
    (void)state;
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/crawl.db", dir);
    crawl_store *st;
    assert_int_equal(crawl_store_open(path, NULL, NULL, TM2_LOG_ERROR, &st, err, sizeof err), 0);
    assert_true(crawl_n_migrations >= 1);
    assert_int_equal(crawl_store_schema_version(st), crawl_migrations[crawl_n_migrations - 1].version);
    assert_int_equal(crawl_store_start(st, "crawl", "net"), 0);

    const char *addr = "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl@127.0.0.1:26656";
    crawl_op *op = crawl_op_new(CROP_ROUND_BEGIN, 1000);
    op->round = 1;
    crawl_store_post(st, op);
    op = crawl_op_new(CROP_ADDR, 1000);
    snprintf(op->addr, sizeof op->addr, "%s", addr);
    op->status = "new";
    op->what = "seed";
    op->allowed = true;
    crawl_store_post(st, op);
    /* A verified probe with its NodeInfo. */
    static const tm2_version_info vers[2] = {{"p2p", "v1.0.0", false}, {"app", "", true}};
    static const uint8_t ch[2] = {0x50, 0x40};
    tm2_node_info ni = {.versions = vers, .n_versions = 2, .has_net_address = true,
                        .network = "net", .software = "sw", .version = "v1", .channels = ch,
                        .n_channels = 2, .moniker = "m,\"x\"", .tx_index = "off",
                        .rpc_address = "tcp://1.2.3.4:26657"};
    assert_int_equal(tm2_netaddr_parse(addr, 0, &ni.net_address), 0);
    uint8_t buf[1024];
    int n = tm2_node_info_encode(&ni, buf, sizeof buf);
    assert_true(n > 0);
    op = crawl_op_new(CROP_ATTEMPT, 2000);
    snprintf(op->addr, sizeof op->addr, "%s", addr);
    op->status = "reachable";
    op->success = true;
    op->latency_ms = 7;
    size_t used;
    assert_int_equal(tm2_node_info_decode(buf, (size_t)n, &op->ni, &used), 0);
    crawl_store_post(st, op);
    op = crawl_op_new(CROP_EDGE, 2001);
    snprintf(op->addr, sizeof op->addr, "%s", addr);
    snprintf(op->from_id.s, sizeof op->from_id.s, "%s", "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl");
    crawl_store_post(st, op);
    op = crawl_op_new(CROP_MISBEHAVIOR, 2002);
    snprintf(op->addr, sizeof op->addr, "%s", addr);
    op->what = "liar";
    snprintf(op->text, sizeof op->text, "%s", "reason");
    crawl_store_post(st, op);
    op = crawl_op_new(CROP_ROUND_END, 3000);
    op->probed = 1;
    op->reachable = 1;
    crawl_store_post(st, op);
    crawl_store_sync(st);
    crawl_store_stats ss;
    crawl_store_get_stats(st, &ss);
    assert_int_equal(ss.written, 6);
    assert_int_equal(ss.errors, 0);
    crawl_store_close(st);

    /* Read back through a read-only connection. */
    sqlite3 *db = crawl_store_open_ro(path, err, sizeof err);
    assert_non_null(db);
    assert_int_equal(count(db, "SELECT COUNT(*) FROM node WHERE moniker = 'm,\"x\"' AND last_seen = 2000"), 1);
    assert_int_equal(count(db, "SELECT COUNT(*) FROM node_version"), 2);
    assert_int_equal(count(db, "SELECT latency_ms FROM address"), 7);
    assert_int_equal(count(db, "SELECT COUNT(*) FROM edge"), 1);
    assert_int_equal(count(db, "SELECT COUNT(*) FROM misbehavior"), 1);
    assert_int_equal(count(db, "SELECT reachable FROM round WHERE finished_at = 3000"), 1);
    assert_int_equal(count(db, "SELECT COUNT(*) FROM run WHERE finished_at IS NOT NULL"), 1);
    assert_int_equal(count(db, "SELECT COUNT(*) FROM schema_version"), (int64_t)crawl_n_migrations);
    sqlite3_close(db);

    /* Reopened: nothing migrated again, the address loads. */
    assert_int_equal(crawl_store_open(path, NULL, NULL, TM2_LOG_ERROR, &st, err, sizeof err), 0);
    crawl_addr_row row[1];
    memset(row, 0, sizeof row);
    assert_int_equal(crawl_store_load_addrs(st, collect, row), 0);
    assert_string_equal(row[0].addr, addr);
    assert_string_equal(row[0].status, "reachable");
    assert_string_equal(row[0].source, "seed");
    assert_int_equal(row[0].last_success, 2000);
    assert_int_equal(row[0].first_seen, 1000);
    crawl_store_close(st);
    db = crawl_store_open_ro(path, err, sizeof err);
    assert_int_equal(count(db, "SELECT COUNT(*) FROM schema_version"), (int64_t)crawl_n_migrations);
    assert_int_equal(count(db, "PRAGMA journal_mode") == 0, 1);   /* text 'wal' reads as 0 */
    sqlite3_close(db);
}

static void newer_schema_refused(void **state)
{
    (void)state;
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/newer.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE schema_version (version INTEGER NOT NULL, name TEXT "
                                  "NOT NULL, applied_at INTEGER NOT NULL);"
                                  "INSERT INTO schema_version VALUES (999, 'future', 0);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    crawl_store *st = NULL;
    assert_int_equal(crawl_store_open(path, NULL, NULL, TM2_LOG_ERROR, &st, err, sizeof err), TM2_EINVAL);
    assert_null(st);
    assert_non_null(strstr(err, "newer"));
    assert_null(crawl_store_open_ro(path, err, sizeof err));
    /* Not a database at all. */
    snprintf(path, sizeof path, "%s/junk.db", dir);
    FILE *f = fopen(path, "w");
    fputs("this is not sqlite, not at all, definitely not", f);
    fclose(f);
    assert_true(crawl_store_open(path, NULL, NULL, TM2_LOG_ERROR, &st, err, sizeof err) < 0);
    assert_int_equal(crawl_store_open("", NULL, NULL, TM2_LOG_ERROR, &st, err, sizeof err), TM2_EINVAL);
}

static uint32_t counter_rand(void *user, uint32_t n)
{
    uint32_t *x = user;
    *x = *x * 1103515245u + 12345u;
    return *x % n;
}

static void select_varied(void **state)
{
    (void)state;
    /* 40 candidates, 10 in each of 4 /16 subnets. */
    tm2_netaddr c[40];
    for (int i = 0; i < 40; i++) {
        char s[128];
        tm2_node_key k;
        assert_int_equal(tm2_node_key_generate(&k), 0);
        tm2_id id;
        tm2_node_key_id(&k, &id);
        snprintf(s, sizeof s, "%s@%d.%d.1.%d:26656", id.s, 20 + i % 4, 7, i);
        assert_int_equal(tm2_netaddr_parse(s, 0, &c[i]), 0);
    }
    size_t out[30];
    uint32_t seed = 1;
    size_t n = crawl_select(c, 40, 8, out, counter_rand, &seed);
    assert_int_equal(n, 8);
    int per[4] = {0};
    for (size_t i = 0; i < n; i++)
        per[c[out[i]].ip[12] - 20]++;
    for (int g = 0; g < 4; g++)
        assert_int_equal(per[g], 2);
    n = crawl_select(c, 40, 30, out, NULL, NULL);
    assert_int_equal(n, 30);
    memset(per, 0, sizeof per);
    for (size_t i = 0; i < n; i++) {
        per[c[out[i]].ip[12] - 20]++;
        for (size_t j = 0; j < i; j++)
            assert_true(out[i] != out[j]);
    }
    for (int g = 0; g < 4; g++)
        assert_true(per[g] == 7 || per[g] == 8);
    /* One per node ID. */
    for (int i = 1; i < 40; i++)
        c[i].id = c[0].id;
    n = crawl_select(c, 40, 30, out, NULL, NULL);
    assert_int_equal(n, 1);
    assert_int_equal(crawl_select(c, 0, 30, out, NULL, NULL), 0);
    assert_int_equal(crawl_select(c, 40, 0, out, NULL, NULL), 0);
    /* IPv6 /32 subnets differ from IPv4 ones. */
    tm2_netaddr a, b;
    assert_int_equal(tm2_netaddr_parse("[2001:db8:1::1]:1", TM2_NETADDR_NO_ID, &a), 0);
    assert_int_equal(tm2_netaddr_parse("[2001:db8:2::1]:1", TM2_NETADDR_NO_ID, &b), 0);
    assert_int_equal(crawl_subnet_of(&a), crawl_subnet_of(&b));
    assert_int_equal(tm2_netaddr_parse("10.1.2.3:1", TM2_NETADDR_NO_ID, &a), 0);
    assert_int_equal(tm2_netaddr_parse("10.1.9.9:1", TM2_NETADDR_NO_ID, &b), 0);
    assert_int_equal(crawl_subnet_of(&a), crawl_subnet_of(&b));
    assert_int_equal(tm2_netaddr_parse("10.2.2.3:1", TM2_NETADDR_NO_ID, &b), 0);
    assert_true(crawl_subnet_of(&a) != crawl_subnet_of(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(migrate_write_load),
        cmocka_unit_test(newer_schema_refused),
        cmocka_unit_test(select_varied),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
