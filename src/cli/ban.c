/* tm2p2p ban: list, add and remove the bans of a node home (the ban file a
 * node reads when it starts), and the lock that keeps a running node and
 * this command from writing the file at the same time. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/config_toml.h"
#include "tm2p2p/ban.h"
#include "tm2p2p/defaults.h"

static const char ban_usage[] =
    "usage: tm2p2p ban <command> --home DIR [options]\n"
    "\n"
    "Manages the bans of a node home: peer IDs and IP addresses the node refuses\n"
    "(an IP before any handshake, an ID after it) and never dials, each until it\n"
    "expires. The file is DIR/data/bans.json, or p2p.ban_file of DIR/config/config.toml,\n"
    "or --file. A node reads it when it starts and rewrites it as its own list changes,\n"
    "so add and remove refuse to run while a node uses the file: stop the node first\n"
    "(it saves its list when it stops), change the bans, start it again.\n"
    "\n"
    "commands:\n"
    "  list                  print the bans in force (--json: the file's form)\n"
    "  add TARGET            ban TARGET, an IP address or a peer ID\n"
    "      --duration DUR    how long (30m, 1h, 168h, or 'forever'); default\n"
    "                        p2p.ban_duration, 1h\n"
    "      --reason TEXT     why, kept with the ban\n"
    "  remove TARGET         lift the ban on TARGET\n"
    "\n"
    "options:\n"
    "  --home DIR            node home directory (required)\n"
    "  --file FILE           the ban file, relative to DIR (default as above)\n"
    "\n"
    "Exit status: 0 done, 1 failure (a running node, a bad file), 2 bad usage.\n";

int cli_ban_lock(const char *ban_file, int *fd, char *err, size_t err_len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.lock", ban_file);
    /* The directory of the file, made as the node would make it. */
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", ban_file);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1; *p; p++) {
            if (*p != '/')
                continue;
            *p = '\0';
            (void)mkdir(dir, 0755);
            *p = '/';
        }
        (void)mkdir(dir, 0700);
    }
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f < 0) {
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(f);
        if (e == EWOULDBLOCK) {
            snprintf(err, err_len, "%s is in use by a running node (stop it first)", ban_file);
            return 1;
        }
        snprintf(err, err_len, "cannot lock %s: %s", path, strerror(e));
        return -1;
    }
    *fd = f;
    return 0;
}

typedef struct ban_opts {
    const char *home, *file, *duration, *reason, *target;
    bool json, help;
} ban_opts;

__attribute__((format(printf, 2, 3))) static int usage_err(const char *cmd, const char *fmt, ...)
{
    fprintf(stderr, "tm2p2p ban%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'tm2p2p ban --help')\n");
    return 2;
}

static int parse(const char *cmd, int argc, char **argv, ban_opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            o->help = true;
            continue;
        }
        if (!strcmp(a, "--json") && !strcmp(cmd, "list")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--home"))
            slot = &o->home;
        else if (!strcmp(a, "--file"))
            slot = &o->file;
        else if (!strcmp(a, "--duration") && !strcmp(cmd, "add"))
            slot = &o->duration;
        else if (!strcmp(a, "--reason") && !strcmp(cmd, "add"))
            slot = &o->reason;
        if (slot) {
            if (i + 1 >= argc)
                return usage_err(cmd, "%s needs a value", a);
            if (*slot)
                return usage_err(cmd, "%s given twice", a);
            *slot = argv[++i];
            continue;
        }
        if (a[0] == '-' || strcmp(cmd, "list") == 0 || o->target)
            return usage_err(cmd, "unexpected '%s'", a);
        o->target = a;
    }
    if (o->help)
        return 0;
    if (!o->home || !o->home[0])
        return usage_err(cmd, "%s", "--home DIR is required");
    if (strcmp(cmd, "list") != 0 && !o->target)
        return usage_err(cmd, "%s", "a TARGET (an IP address or a peer ID) is required");
    return 0;
}

static void join(char *out, size_t cap, const char *home, const char *p)
{
    if (p[0] == '/')
        snprintf(out, cap, "%s", p);
    else
        snprintf(out, cap, "%s%s%s", home, home[strlen(home) - 1] == '/' ? "" : "/", p);
}

/* The ban file of the home and the configured ban duration. */
static int locate(const char *cmd, const ban_opts *o, char *path, size_t cap, int64_t *dur_ns)
{
    cli_config c;
    if (cli_config_defaults(&c)) {
        fprintf(stderr, "tm2p2p ban %s: out of memory\n", cmd);
        return 1;
    }
    char cfg[4200], err[1024];
    join(cfg, sizeof cfg, o->home, "config/config.toml");
    bool found;
    if (cli_config_load(&c, cfg, &found, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "tm2p2p ban %s: %s\n", cmd, err);
        cli_config_free(&c);
        return 2;
    }
    join(path, cap, o->home, o->file ? o->file : c.ban_file[0] ? c.ban_file : TM2_DEFAULT_BAN_FILE);
    *dur_ns = c.ban_duration_ns;
    cli_config_free(&c);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void utc(int64_t ms, char *out, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int load(const char *cmd, const char *path, tm2_ban **b, size_t *n)
{
    char why[512];
    int r = tm2_ban_file_load(path, b, n, why, sizeof why);
    if (r == TM2_ENOTFOUND) {
        *b = NULL;
        *n = 0;
        return 0;
    }
    if (r) {
        fprintf(stderr, "tm2p2p ban %s: %s\n", cmd, why);
        return 1;
    }
    return 0;
}

static int cmd_list(const ban_opts *o, const char *path)
{
    tm2_ban *b;
    size_t n;
    if (load("list", path, &b, &n))
        return 1;
    int64_t now = now_ms();
    if (o->json) {
        cJSON *root = cJSON_CreateObject();
        cJSON *list = root ? cJSON_AddArrayToObject(root, "bans") : NULL;
        for (size_t i = 0; list && i < n; i++) {
            if (b[i].expires_unix_ms && b[i].expires_unix_ms <= now)
                continue;
            char t[64];
            cJSON *e = cJSON_CreateObject();
            if (!e || tm2_ban_target_format(&b[i], t, sizeof t) < 0 || !cJSON_AddItemToArray(list, e)) {
                cJSON_Delete(e);
                continue;
            }
            cJSON_AddStringToObject(e, "target", t);
            cJSON_AddNumberToObject(e, "created", (double)b[i].created_unix_ms);
            cJSON_AddNumberToObject(e, "expires", (double)b[i].expires_unix_ms);
            cJSON_AddStringToObject(e, "reason", b[i].reason);
        }
        char *text = root ? cJSON_Print(root) : NULL;
        cJSON_Delete(root);
        if (!text) {
            free(b);
            fprintf(stderr, "tm2p2p ban list: out of memory\n");
            return 1;
        }
        printf("%s\n", text);
        free(text);
        free(b);
        return 0;
    }
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i].expires_unix_ms && b[i].expires_unix_ms <= now)
            continue;
        char t[64], until[32] = "never";
        if (tm2_ban_target_format(&b[i], t, sizeof t) < 0)
            continue;
        if (b[i].expires_unix_ms)
            utc(b[i].expires_unix_ms, until, sizeof until);
        printf("%-40s %-5s until %-20s %s\n", t, b[i].is_ip ? "ip" : "id", until, b[i].reason);
        shown++;
    }
    if (!shown)
        fprintf(stderr, "no bans in %s\n", path);
    free(b);
    return 0;
}

static int save(const char *cmd, const char *path, const tm2_ban *b, size_t n)
{
    char why[512];
    if (tm2_ban_file_save(path, b, n, now_ms(), why, sizeof why) != 0) {
        fprintf(stderr, "tm2p2p ban %s: %s\n", cmd, why);
        return 1;
    }
    return 0;
}

static int cmd_change(const char *cmd, const ban_opts *o, const char *path, int64_t def_ns)
{
    tm2_ban target;
    memset(&target, 0, sizeof target);
    if (tm2_ban_target_parse(o->target, &target) != 0)
        return usage_err(cmd, "'%s' is neither an IP address nor a peer ID", o->target);
    int64_t ns = def_ns;
    bool forever = false;
    if (o->duration) {
        forever = !strcmp(o->duration, "forever");
        if (!forever && (cli_parse_duration(o->duration, &ns) || ns <= 0))
            return usage_err(cmd, "--duration: '%s' is not a positive duration (1h, 30m) or forever",
                             o->duration);
    }
    if (!forever && ns <= 0)
        forever = true;   /* the file says 0 (no bans for misbehaviour): a manual one stays */
    if (o->reason && strlen(o->reason) >= TM2_BAN_REASON_LEN)
        return usage_err(cmd, "--reason: longer than %d bytes", TM2_BAN_REASON_LEN - 1);
    char err[4400];
    int lock = -1;
    int r = cli_ban_lock(path, &lock, err, sizeof err);
    if (r) {
        fprintf(stderr, "tm2p2p ban %s: %s\n", cmd, err);
        return 1;
    }
    tm2_ban *b;
    size_t n;
    if (load(cmd, path, &b, &n)) {
        close(lock);
        return 1;
    }
    int64_t now = now_ms();
    size_t at = n;
    for (size_t i = 0; i < n; i++)
        if (b[i].is_ip == target.is_ip &&
            (target.is_ip ? !memcmp(b[i].ip, target.ip, 16) : !strcmp(b[i].id.s, target.id.s)))
            at = i;
    char t[64];
    tm2_ban_target_format(&target, t, sizeof t);
    int status = 0;
    if (!strcmp(cmd, "remove")) {
        if (at == n) {
            fprintf(stderr, "tm2p2p ban remove: %s is not banned\n", t);
            status = 1;
        } else {
            b[at] = b[--n];
            status = save(cmd, path, b, n);
            if (!status)
                fprintf(stderr, "unbanned %s\n", t);
        }
    } else {
        if (at == n) {
            if (n >= TM2_BANS_MAX) {
                fprintf(stderr, "tm2p2p ban add: the file holds %d bans already\n", TM2_BANS_MAX);
                free(b);
                close(lock);
                return 1;
            }
            tm2_ban *nb = realloc(b, (n + 1) * sizeof *nb);
            if (!nb) {
                free(b);
                close(lock);
                fprintf(stderr, "tm2p2p ban add: out of memory\n");
                return 1;
            }
            b = nb;
            n++;
        }
        target.created_unix_ms = now;
        target.expires_unix_ms = forever ? 0 : now + (ns + 999999) / 1000000;
        snprintf(target.reason, sizeof target.reason, "%s", o->reason ? o->reason : "by hand");
        b[at] = target;
        status = save(cmd, path, b, n);
        if (!status) {
            char until[32] = "never";
            if (target.expires_unix_ms)
                utc(target.expires_unix_ms, until, sizeof until);
            fprintf(stderr, "banned %s until %s\n", t, until);
        }
    }
    free(b);
    close(lock);
    return status;
}

int cli_ban(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(ban_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "list") && strcmp(cmd, "add") && strcmp(cmd, "remove"))
        return usage_err(NULL, "unknown command '%s'", cmd);
    ban_opts o;
    int r = parse(cmd, argc - 1, argv + 1, &o);
    if (r)
        return r;
    if (o.help) {
        fputs(ban_usage, stdout);
        return 0;
    }
    char path[4200];
    int64_t def_ns;
    if ((r = locate(cmd, &o, path, sizeof path, &def_ns)) != 0)
        return r;
    if (!strcmp(cmd, "list"))
        return cmd_list(&o, path);
    return cmd_change(cmd, &o, path, def_ns);
}
