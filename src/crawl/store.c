#include "crawl/store.h"

#include <arpa/inet.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "common/log.h"
#include "common/thread.h"
#include "crawl/migrations.h"
#include "tm2p2p/error.h"

#define BUSY_TIMEOUT_MS 5000
#define BATCH_MAX       2000   /* ops per transaction */

enum stmt_id {
    S_RUN_NETWORK,
    S_ROUND_BEGIN,
    S_ROUND_END,
    S_ADDR,
    S_ATTEMPT,
    S_NODE,
    S_VERSIONS_DEL,
    S_VERSION,
    S_EDGE,
    S_MISB,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_RUN_NETWORK] = "UPDATE run SET network = ?2 WHERE id = ?1",
    [S_ROUND_BEGIN] = "INSERT INTO round(run_id, number, started_at) VALUES(?1, ?2, ?3)",
    [S_ROUND_END] = "UPDATE round SET finished_at = ?2, probed = ?3, reachable = ?4 WHERE id = ?1",
    [S_ADDR] = "INSERT INTO address(addr, node_id, ip, port, source, allowed, status, first_seen) "
               "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
               "ON CONFLICT(addr) DO UPDATE SET allowed = excluded.allowed, status = excluded.status",
    [S_ATTEMPT] = "UPDATE address SET status = ?2, last_attempt = ?3, "
                  "last_success = CASE WHEN ?4 THEN ?3 ELSE last_success END, "
                  "last_failure = CASE WHEN ?4 THEN last_failure ELSE ?3 END, "
                  "failures = ?5, latency_ms = CASE WHEN ?6 >= 0 THEN ?6 ELSE latency_ms END, "
                  "last_error = ?7, auth_id = ?8, claimed_id = ?9 WHERE addr = ?1",
    [S_NODE] = "INSERT INTO node(id, moniker, network, software, version, channels, rpc_address, "
               "tx_index, net_address, first_seen, last_seen) "
               "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10) "
               "ON CONFLICT(id) DO UPDATE SET moniker = excluded.moniker, network = excluded.network, "
               "software = excluded.software, version = excluded.version, channels = excluded.channels, "
               "rpc_address = excluded.rpc_address, tx_index = excluded.tx_index, "
               "net_address = excluded.net_address, last_seen = excluded.last_seen",
    [S_VERSIONS_DEL] = "DELETE FROM node_version WHERE node_id = ?1",
    [S_VERSION] = "INSERT OR REPLACE INTO node_version(node_id, name, version, optional) "
                  "VALUES(?1, ?2, ?3, ?4)",
    [S_EDGE] = "INSERT INTO edge(from_id, to_addr, first_seen, last_seen, last_round) "
               "VALUES(?1, ?2, ?3, ?3, ?4) "
               "ON CONFLICT(from_id, to_addr) DO UPDATE SET last_seen = excluded.last_seen, "
               "last_round = excluded.last_round",
    [S_MISB] = "INSERT INTO misbehavior(at, addr, auth_id, claimed_id, kind, reason) "
               "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
};

struct crawl_store {
    sqlite3 *db;
    sqlite3_stmt *st[S_COUNT];
    int version;
    tm2_log_fn log;
    void *log_user;
    tm2_log_level log_level;

    int64_t run_id;
    int64_t round_id;          /* writer thread: the current round row, 0 before one */

    uv_thread_t thread;
    bool thread_live;
    uv_mutex_t mu;
    uv_cond_t cv;              /* writer: work or stop; syncers: progress */
    crawl_op *head, **tail;
    size_t queued;
    uint64_t posted, done;     /* ops posted / ops handled (written, failed) */
    bool stop;
    crawl_store_stats stats;
    uint64_t drop_logged;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void slog(crawl_store *st, tm2_log_level lv, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void slog(crawl_store *st, tm2_log_level lv, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm2__vlog(st->log, st->log_user, st->log_level, lv, msg, fmt, ap);
    va_end(ap);
}

crawl_op *crawl_op_new(int kind, int64_t at)
{
    crawl_op *op = calloc(1, sizeof *op);
    if (op) {
        op->kind = kind;
        op->at = at;
        op->latency_ms = -1;
    }
    return op;
}

void crawl_op_free(crawl_op *op)
{
    if (!op)
        return;
    tm2_node_info_free(op->ni);
    free(op);
}

/* ---- open and migrate --------------------------------------------------------- */

static int exec_simple(sqlite3 *db, const char *sql, char *err, size_t err_len)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_len, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return TM2_EIO;
    }
    return 0;
}

static int read_version(sqlite3 *db, int *version, char *err, size_t err_len)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &s,
                           NULL) != SQLITE_OK) {
        snprintf(err, err_len, "reading the schema version: %s", sqlite3_errmsg(db));
        return TM2_EIO;
    }
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        *version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (r != SQLITE_ROW) {
        snprintf(err, err_len, "reading the schema version: %s", sqlite3_errmsg(db));
        return TM2_EIO;
    }
    return 0;
}

static int migrate(crawl_store *st, char *err, size_t err_len)
{
    sqlite3 *db = st->db;
    char e[512];
    if (exec_simple(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, "
                        "name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
                    e, sizeof e)) {
        snprintf(err, err_len, "creating schema_version: %s", e);
        return TM2_EIO;
    }
    int have;
    int r = read_version(db, &have, err, err_len);
    if (r)
        return r;
    int newest = crawl_n_migrations ? crawl_migrations[crawl_n_migrations - 1].version : 0;
    if (have > newest) {
        snprintf(err, err_len,
                 "the database has schema version %d, newer than this program's %d", have, newest);
        return TM2_EINVAL;
    }
    for (size_t i = 0; i < crawl_n_migrations; i++) {
        const crawl_migration *m = &crawl_migrations[i];
        if (m->version <= have)
            continue;
        if (exec_simple(db, "BEGIN IMMEDIATE", e, sizeof e)) {
            snprintf(err, err_len, "migration %s: %s", m->name, e);
            return TM2_EIO;
        }
        if (exec_simple(db, m->sql, e, sizeof e)) {
            snprintf(err, err_len, "migration %s: %s", m->name, e);
            exec_simple(db, "ROLLBACK", e, sizeof e);
            return TM2_EIO;
        }
        sqlite3_stmt *s = NULL;
        bool ok = sqlite3_prepare_v2(db, "INSERT INTO schema_version(version, name, applied_at) "
                                         "VALUES(?1, ?2, ?3)",
                                     -1, &s, NULL) == SQLITE_OK;
        if (ok) {
            sqlite3_bind_int(s, 1, m->version);
            sqlite3_bind_text(s, 2, m->name, -1, SQLITE_STATIC);
            sqlite3_bind_int64(s, 3, now_ms());
            ok = sqlite3_step(s) == SQLITE_DONE;
        }
        sqlite3_finalize(s);
        if (!ok || exec_simple(db, "COMMIT", e, sizeof e)) {
            snprintf(err, err_len, "migration %s: %s", m->name, sqlite3_errmsg(db));
            exec_simple(db, "ROLLBACK", e, sizeof e);
            return TM2_EIO;
        }
        slog(st, TM2_LOG_INFO, "crawl database migrated", "version=%d name=%s", m->version,
             m->name);
        have = m->version;
    }
    st->version = have;
    return 0;
}

int crawl_store_open(const char *path, tm2_log_fn log, void *log_user, tm2_log_level log_level,
                     crawl_store **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!path || !path[0]) {
        snprintf(err, err_len, "no database path");
        return TM2_EINVAL;
    }
    crawl_store *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return TM2_ENOMEM;
    }
    st->log = log;
    st->log_user = log_user;
    st->log_level = log_level;
    st->tail = &st->head;
    int r = TM2_EIO;
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, err_len, "cannot open %s: %s", path,
                 st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    char e[512];
    if (exec_simple(st->db, "PRAGMA journal_mode=WAL", e, sizeof e) ||
        exec_simple(st->db, "PRAGMA synchronous=NORMAL", e, sizeof e) ||
        exec_simple(st->db, "PRAGMA foreign_keys=ON", e, sizeof e)) {
        snprintf(err, err_len, "%s: %s", path, e);
        goto fail;
    }
    if ((r = migrate(st, err, err_len)) != 0)
        goto fail;
    for (int i = 0; i < S_COUNT; i++)
        if (sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->st[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, err_len, "preparing a statement: %s", sqlite3_errmsg(st->db));
            r = TM2_EIO;
            goto fail;
        }
    if (uv_mutex_init(&st->mu) != 0) {
        r = TM2_EIO;
        goto fail;
    }
    if (uv_cond_init(&st->cv) != 0) {
        uv_mutex_destroy(&st->mu);
        r = TM2_EIO;
        goto fail;
    }
    *out = st;
    return 0;
fail:
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->st[i]);
    sqlite3_close(st->db);
    free(st);
    return r;
}

int crawl_store_schema_version(const crawl_store *st) { return st->version; }

static const char *col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? (const char *)t : "";
}

int crawl_store_load_addrs(crawl_store *st, int (*fn)(const crawl_addr_row *row, void *user),
                           void *user)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT addr, status, source, allowed, first_seen, "
                           "COALESCE(last_attempt, 0), COALESCE(last_success, 0), "
                           "COALESCE(last_failure, 0), failures, COALESCE(latency_ms, -1) "
                           "FROM address ORDER BY first_seen, addr",
                           -1, &s, NULL) != SQLITE_OK)
        return TM2_EIO;
    int r = 0, step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        crawl_addr_row row;
        memset(&row, 0, sizeof row);
        snprintf(row.addr, sizeof row.addr, "%s", col_text(s, 0));
        snprintf(row.status, sizeof row.status, "%s", col_text(s, 1));
        snprintf(row.source, sizeof row.source, "%s", col_text(s, 2));
        row.allowed = sqlite3_column_int(s, 3) != 0;
        row.first_seen = sqlite3_column_int64(s, 4);
        row.last_attempt = sqlite3_column_int64(s, 5);
        row.last_success = sqlite3_column_int64(s, 6);
        row.last_failure = sqlite3_column_int64(s, 7);
        int64_t f = sqlite3_column_int64(s, 8);
        row.failures = f < 0 ? 0 : f > UINT32_MAX ? UINT32_MAX : (uint32_t)f;
        row.latency_ms = sqlite3_column_int64(s, 9);
        if ((r = fn(&row, user)) != 0)
            break;
    }
    if (!r && step != SQLITE_DONE)
        r = TM2_EIO;
    sqlite3_finalize(s);
    return r;
}

/* ---- the writer ------------------------------------------------------------------- */

static void bind_text(sqlite3_stmt *s, int i, const char *t)
{
    sqlite3_bind_text(s, i, t ? t : "", -1, SQLITE_TRANSIENT);
}

static void bind_opt_text(sqlite3_stmt *s, int i, const char *t)
{
    if (t && t[0])
        sqlite3_bind_text(s, i, t, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static bool run_stmt(crawl_store *st, sqlite3_stmt *s)
{
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (r != SQLITE_DONE) {
        slog(st, TM2_LOG_ERROR, "crawl database write failed", "err=%s",
             sqlite3_errmsg(st->db));
        return false;
    }
    return true;
}

static bool write_node(crawl_store *st, const crawl_op *op)
{
    const tm2_node_info *ni = op->ni;
    char addr[TM2_NETADDR_STRLEN + 1] = "";
    tm2_netaddr_format(&ni->net_address, addr, sizeof addr);
    char ch[2 * TM2_NODE_INFO_MAX_CHANNELS + 1] = "";
    for (size_t i = 0; i < ni->n_channels && i < TM2_NODE_INFO_MAX_CHANNELS; i++)
        snprintf(ch + 2 * i, sizeof ch - 2 * i, "%02x", ni->channels[i]);
    sqlite3_stmt *s = st->st[S_NODE];
    bind_text(s, 1, ni->net_address.id.s);
    bind_text(s, 2, ni->moniker);
    bind_text(s, 3, ni->network);
    bind_text(s, 4, ni->software);
    bind_text(s, 5, ni->version);
    bind_text(s, 6, ch);
    bind_text(s, 7, ni->rpc_address);
    bind_text(s, 8, ni->tx_index);
    bind_text(s, 9, addr);
    sqlite3_bind_int64(s, 10, op->at);
    if (!run_stmt(st, s))
        return false;
    s = st->st[S_VERSIONS_DEL];
    bind_text(s, 1, ni->net_address.id.s);
    if (!run_stmt(st, s))
        return false;
    for (size_t i = 0; i < ni->n_versions; i++) {
        s = st->st[S_VERSION];
        bind_text(s, 1, ni->net_address.id.s);
        bind_text(s, 2, ni->versions[i].name);
        bind_text(s, 3, ni->versions[i].version);
        sqlite3_bind_int(s, 4, ni->versions[i].optional ? 1 : 0);
        if (!run_stmt(st, s))
            return false;
    }
    return true;
}

static bool apply(crawl_store *st, crawl_op *op)
{
    sqlite3_stmt *s;
    switch (op->kind) {
    case CROP_NETWORK:
        s = st->st[S_RUN_NETWORK];
        sqlite3_bind_int64(s, 1, st->run_id);
        bind_text(s, 2, op->text);
        return run_stmt(st, s);
    case CROP_ROUND_BEGIN:
        s = st->st[S_ROUND_BEGIN];
        sqlite3_bind_int64(s, 1, st->run_id);
        sqlite3_bind_int64(s, 2, op->round);
        sqlite3_bind_int64(s, 3, op->at);
        if (!run_stmt(st, s))
            return false;
        st->round_id = sqlite3_last_insert_rowid(st->db);
        return true;
    case CROP_ROUND_END:
        if (!st->round_id)
            return true;
        s = st->st[S_ROUND_END];
        sqlite3_bind_int64(s, 1, st->round_id);
        sqlite3_bind_int64(s, 2, op->at);
        sqlite3_bind_int64(s, 3, op->probed);
        sqlite3_bind_int64(s, 4, op->reachable);
        return run_stmt(st, s);
    case CROP_ADDR: {
        tm2_netaddr a;
        if (tm2_netaddr_parse(op->addr, 0, &a) != 0)
            return false;
        char host[INET6_ADDRSTRLEN] = "";
        if (tm2_netaddr_is_ipv4(&a))
            inet_ntop(AF_INET, a.ip + 12, host, sizeof host);
        else
            inet_ntop(AF_INET6, a.ip, host, sizeof host);
        s = st->st[S_ADDR];
        bind_text(s, 1, op->addr);
        bind_text(s, 2, a.id.s);
        bind_text(s, 3, host);
        sqlite3_bind_int(s, 4, a.port);
        bind_text(s, 5, op->what);
        sqlite3_bind_int(s, 6, op->allowed ? 1 : 0);
        bind_text(s, 7, op->status);
        sqlite3_bind_int64(s, 8, op->at);
        return run_stmt(st, s);
    }
    case CROP_ATTEMPT:
        s = st->st[S_ATTEMPT];
        bind_text(s, 1, op->addr);
        bind_text(s, 2, op->status);
        sqlite3_bind_int64(s, 3, op->at);
        sqlite3_bind_int(s, 4, op->success ? 1 : 0);
        sqlite3_bind_int64(s, 5, op->failures);
        sqlite3_bind_int64(s, 6, op->latency_ms);
        bind_opt_text(s, 7, op->text);
        bind_opt_text(s, 8, op->auth_id.s);
        bind_opt_text(s, 9, op->claimed_id.s);
        if (!run_stmt(st, s))
            return false;
        return op->success && op->ni ? write_node(st, op) : true;
    case CROP_EDGE:
        if (!st->round_id)
            return true;
        s = st->st[S_EDGE];
        bind_text(s, 1, op->from_id.s);
        bind_text(s, 2, op->addr);
        sqlite3_bind_int64(s, 3, op->at);
        sqlite3_bind_int64(s, 4, st->round_id);
        return run_stmt(st, s);
    case CROP_MISBEHAVIOR:
        s = st->st[S_MISB];
        sqlite3_bind_int64(s, 1, op->at);
        bind_text(s, 2, op->addr);
        bind_opt_text(s, 3, op->auth_id.s);
        bind_opt_text(s, 4, op->claimed_id.s);
        bind_text(s, 5, op->what);
        bind_text(s, 6, op->text);
        return run_stmt(st, s);
    default:
        return false;
    }
}

static void writer_main(void *arg)
{
    crawl_store *st = arg;
    uv_mutex_lock(&st->mu);
    for (;;) {
        while (!st->head && !st->stop)
            uv_cond_wait(&st->cv, &st->mu);
        if (!st->head && st->stop)
            break;
        crawl_op *batch = st->head;
        size_t n = 0;
        crawl_op **cut = &st->head;
        while (*cut && n < BATCH_MAX) {
            cut = &(*cut)->next;
            n++;
        }
        st->head = *cut;
        *cut = NULL;
        if (!st->head)
            st->tail = &st->head;
        st->queued -= n;
        uv_mutex_unlock(&st->mu);

        uint64_t ok = 0, bad = 0;
        char e[512];
        bool tx = exec_simple(st->db, "BEGIN IMMEDIATE", e, sizeof e) == 0;
        if (!tx)
            slog(st, TM2_LOG_ERROR, "crawl database: cannot begin a transaction", "err=%s", e);
        for (crawl_op *op = batch; op;) {
            crawl_op *next = op->next;
            if (tx && apply(st, op))
                ok++;
            else
                bad++;
            crawl_op_free(op);
            op = next;
        }
        if (tx && exec_simple(st->db, "COMMIT", e, sizeof e)) {
            slog(st, TM2_LOG_ERROR, "crawl database: commit failed", "err=%s", e);
            exec_simple(st->db, "ROLLBACK", e, sizeof e);
            bad += ok;
            ok = 0;
        }

        uv_mutex_lock(&st->mu);
        st->stats.written += ok;
        st->stats.errors += bad;
        st->done += n;
        uv_cond_broadcast(&st->cv);
    }
    uv_mutex_unlock(&st->mu);
}

int crawl_store_start(crawl_store *st, const char *mode, const char *network)
{
    sqlite3_stmt *s = NULL;
    bool ok = sqlite3_prepare_v2(st->db, "INSERT INTO run(mode, network, started_at) VALUES(?1, ?2, ?3)",
                                 -1, &s, NULL) == SQLITE_OK;
    if (ok) {
        bind_text(s, 1, mode);
        bind_text(s, 2, network);
        sqlite3_bind_int64(s, 3, now_ms());
        ok = sqlite3_step(s) == SQLITE_DONE;
    }
    sqlite3_finalize(s);
    if (!ok) {
        slog(st, TM2_LOG_ERROR, "crawl database: cannot start a run", "err=%s",
             sqlite3_errmsg(st->db));
        return TM2_EIO;
    }
    st->run_id = sqlite3_last_insert_rowid(st->db);
    if (uv_thread_create(&st->thread, writer_main, st) != 0)
        return TM2_EIO;
    tm2__thread_name(st->thread, "tm2p2p-store");
    st->thread_live = true;
    return 0;
}

void crawl_store_post(crawl_store *st, crawl_op *op)
{
    if (!op)
        return;
    if (!st) {
        crawl_op_free(op);
        return;
    }
    op->next = NULL;
    uv_mutex_lock(&st->mu);
    if (!st->thread_live || st->stop || st->queued >= CRAWL_STORE_MAX_QUEUE) {
        st->stats.dropped++;
        bool log_it = st->stats.dropped >= st->drop_logged * 2 + 1;
        if (log_it)
            st->drop_logged = st->stats.dropped;
        uint64_t dropped = st->stats.dropped;
        uv_mutex_unlock(&st->mu);
        if (log_it)
            slog(st, TM2_LOG_WARN, "crawl database: records dropped (writer behind)", "dropped=%llu",
                 (unsigned long long)dropped);
        crawl_op_free(op);
        return;
    }
    *st->tail = op;
    st->tail = &op->next;
    st->queued++;
    st->posted++;
    uv_cond_broadcast(&st->cv);
    uv_mutex_unlock(&st->mu);
}

void crawl_store_sync(crawl_store *st)
{
    if (!st)
        return;
    uv_mutex_lock(&st->mu);
    uint64_t want = st->posted;
    while (st->thread_live && st->done < want)
        uv_cond_wait(&st->cv, &st->mu);
    uv_mutex_unlock(&st->mu);
}

void crawl_store_get_stats(crawl_store *st, crawl_store_stats *out)
{
    uv_mutex_lock(&st->mu);
    *out = st->stats;
    uv_mutex_unlock(&st->mu);
}

void crawl_store_close(crawl_store *st)
{
    if (!st)
        return;
    if (st->thread_live) {
        uv_mutex_lock(&st->mu);
        st->stop = true;
        uv_cond_broadcast(&st->cv);
        uv_mutex_unlock(&st->mu);
        uv_thread_join(&st->thread);
        st->thread_live = false;
    }
    if (st->run_id) {
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(st->db, "UPDATE run SET finished_at = ?2 WHERE id = ?1", -1, &s,
                               NULL) == SQLITE_OK) {
            sqlite3_bind_int64(s, 1, st->run_id);
            sqlite3_bind_int64(s, 2, now_ms());
            sqlite3_step(s);
        }
        sqlite3_finalize(s);
    }
    for (crawl_op *op = st->head; op;) {
        crawl_op *next = op->next;
        crawl_op_free(op);
        op = next;
    }
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->st[i]);
    sqlite3_close(st->db);
    uv_cond_destroy(&st->cv);
    uv_mutex_destroy(&st->mu);
    free(st);
}

sqlite3 *crawl_store_open_ro(const char *path, char *err, size_t err_len)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    int have = 0;
    char e[256];
    if (read_version(db, &have, e, sizeof e)) {
        snprintf(err, err_len, "%s is not a crawl database (%s)", path, e);
        sqlite3_close(db);
        return NULL;
    }
    int newest = crawl_n_migrations ? crawl_migrations[crawl_n_migrations - 1].version : 0;
    if (have != newest) {
        snprintf(err, err_len, "%s has schema version %d, this program reads %d", path, have, newest);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}
