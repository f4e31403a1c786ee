/* tm2p2p keys: create or show the node key of a node home. */
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "crypto/node_key.h"
#include "tm2p2p/key.h"
#include "tm2p2p/netaddr.h"

#define KEY_FILE "secrets/node_key.json"

static const char keys_usage[] =
    "usage: tm2p2p keys <command> --home DIR [options]\n"
    "\n"
    "Manages the node key, DIR/" KEY_FILE ", in the format gno nodes use.\n"
    "\n"
    "commands:\n"
    "  gen   create a new random node key and print its node ID\n"
    "  show  print the node ID of the existing node key\n"
    "\n"
    "'tm2p2p keys <command> --help' describes a command.\n";

static const char gen_usage[] =
    "usage: tm2p2p keys gen --home DIR [--force]\n"
    "\n"
    "Creates DIR/" KEY_FILE " (mode 0600; missing directories are created)\n"
    "and prints the new node ID on standard output.\n"
    "\n"
    "  --home DIR   node home directory\n"
    "  --force      replace an existing key file (the old key is lost)\n";

static const char show_usage[] =
    "usage: tm2p2p keys show --home DIR [--json] [--addr HOST:PORT]\n"
    "\n"
    "Prints the node ID of DIR/" KEY_FILE ". Also reads the legacy\n"
    "{\"priv_key\":{\"@type\":...,\"value\":...}} form.\n"
    "\n"
    "  --home DIR         node home directory\n"
    "  --json             print {\"id\":...,\"pub_key_hex\":...,\"pub_key_base64\":...}\n"
    "  --addr HOST:PORT   print the node's canonical NetAddress ID@IP:PORT for that\n"
    "                     dial address instead (host names are resolved)\n";

struct opts {
    const char *home, *addr;
    bool force, json, help;
};

/* Parses argv[1..] of a subcommand; flag_ok names the one boolean flag it
 * takes besides --home. Returns 0 or 2 (usage error, already reported). */
static int parse_opts(const char *cmd, int argc, char **argv, const char *flag_ok, struct opts *o,
                      const char *usage)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            o->help = true;
        } else if (!strcmp(a, "--home")) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "tm2p2p keys %s: --home needs a directory\n", cmd);
                return 2;
            }
            o->home = argv[++i];
        } else if (!strncmp(a, "--home=", 7)) {
            if (!a[7]) {
                fprintf(stderr, "tm2p2p keys %s: --home needs a directory\n", cmd);
                return 2;
            }
            o->home = a + 7;
        } else if (!strcmp(flag_ok, "--json") && !strcmp(a, "--addr")) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "tm2p2p keys %s: --addr needs HOST:PORT\n", cmd);
                return 2;
            }
            o->addr = argv[++i];
        } else if (!strcmp(a, flag_ok)) {
            if (!strcmp(a, "--force"))
                o->force = true;
            else
                o->json = true;
        } else {
            fprintf(stderr, "tm2p2p keys %s: unknown %s '%s'\n\n%s", cmd,
                    a[0] == '-' ? "option" : "argument", a, usage);
            return 2;
        }
    }
    if (o->help)
        return 0;
    if (!o->home) {
        fprintf(stderr, "tm2p2p keys %s: --home DIR is required\n\n%s", cmd, usage);
        return 2;
    }
    return 0;
}

static bool key_path(const char *cmd, const char *home, char *out, size_t cap)
{
    size_t n = strlen(home);
    int len = snprintf(out, cap, "%s%s" KEY_FILE, home, n && home[n - 1] == '/' ? "" : "/");
    if (len < 0 || (size_t)len >= cap) {
        fprintf(stderr, "tm2p2p keys %s: home path too long\n", cmd);
        return false;
    }
    return true;
}

static int cmd_gen(int argc, char **argv)
{
    struct opts o;
    int r = parse_opts("gen", argc, argv, "--force", &o, gen_usage);
    if (r || o.help) {
        if (o.help)
            fputs(gen_usage, stdout);
        return r;
    }
    char path[4096], why[512];
    if (!key_path("gen", o.home, path, sizeof path))
        return 1;
    tm2_node_key key;
    if (tm2_node_key_generate(&key) < 0) {
        fprintf(stderr, "tm2p2p keys gen: no randomness available\n");
        return 1;
    }
    r = tm2__node_key_write(path, &key, o.force, why, sizeof why);
    tm2_id id;
    tm2_node_key_id(&key, &id);
    tm2_node_key_wipe(&key);
    if (r == TM2_EEXIST) {
        fprintf(stderr, "tm2p2p keys gen: %s already exists; use --force to replace it\n", path);
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "tm2p2p keys gen: %s\n", why);
        return 1;
    }
    fprintf(stderr, "wrote %s\n", path);
    printf("%s\n", id.s);
    return 0;
}

static int cmd_show(int argc, char **argv)
{
    struct opts o;
    int r = parse_opts("show", argc, argv, "--json", &o, show_usage);
    if (r || o.help) {
        if (o.help)
            fputs(show_usage, stdout);
        return r;
    }
    char path[4096], why[512];
    if (!key_path("show", o.home, path, sizeof path))
        return 1;
    tm2_netaddr na;
    if (o.addr && (r = tm2_netaddr_parse(o.addr, TM2_NETADDR_NO_ID | TM2_NETADDR_RESOLVE, &na)) < 0) {
        fprintf(stderr, "tm2p2p keys show: --addr '%s': %s\n", o.addr, tm2_strerror(r));
        return 2;
    }
    tm2_node_key key;
    r = tm2_node_key_load(path, &key, why, sizeof why);
    if (r < 0) {
        fprintf(stderr, "tm2p2p keys show: %s\n", why);
        if (r == TM2_ENOTFOUND)
            fprintf(stderr, "(create one with: tm2p2p keys gen --home %s)\n", o.home);
        return 1;
    }
    tm2_id id;
    uint8_t pub[TM2_PUBKEY_SIZE];
    tm2_node_key_id(&key, &id);
    memcpy(pub, tm2_node_key_pubkey(&key), sizeof pub);
    tm2_node_key_wipe(&key);
    char text[TM2_NETADDR_STRLEN] = "";
    if (o.addr) {
        na.id = id;
        tm2_netaddr_format(&na, text, sizeof text);
        r = tm2_netaddr_validate(&na);
        if (r < 0)
            fprintf(stderr, "warning: %s is not dialable (%s)\n", text, tm2_strerror(r));
    }
    if (!o.json) {
        printf("%s\n", o.addr ? text : id.s);
        return 0;
    }
    char hex[2 * TM2_PUBKEY_SIZE + 1];
    char b64[sodium_base64_ENCODED_LEN(TM2_PUBKEY_SIZE, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2hex(hex, sizeof hex, pub, sizeof pub);
    sodium_bin2base64(b64, sizeof b64, pub, sizeof pub, sodium_base64_VARIANT_ORIGINAL);
    printf("{\"id\":\"%s\",\"pub_key_hex\":\"%s\",\"pub_key_base64\":\"%s\"", id.s, hex, b64);
    if (o.addr)
        printf(",\"net_address\":\"%s\"", text);
    printf("}\n");
    return 0;
}

int cli_keys(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "tm2p2p keys: a command is required\n\n%s", keys_usage);
        return 2;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
        fputs(keys_usage, stdout);
        return 0;
    }
    int r;
    if (!strcmp(sub, "gen"))
        r = cmd_gen(argc - 1, argv + 1);
    else if (!strcmp(sub, "show"))
        r = cmd_show(argc - 1, argv + 1);
    else {
        fprintf(stderr, "tm2p2p keys: unknown command '%s'\n\n%s", sub, keys_usage);
        return 2;
    }
    if (fflush(stdout) != 0 && r == 0) {
        perror("tm2p2p keys: standard output");
        return 1;
    }
    return r;
}
