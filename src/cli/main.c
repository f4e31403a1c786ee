/* tm2p2p: run a node, a local test network, manage keys, crawl a network, run a seed, manage
 * bans, tell its version. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"node", cli_run_node, "run a p2p node until SIGINT/SIGTERM"},
    {"testnet", cli_run_testnet, "run a local test network on loopback and measure it"},
    {"sim", cli_run_sim, "simulate a whole network of nodes in virtual time, reproducibly"},
    {"keys", cli_keys, "generate or show the node key (node_key.json)"},
    {"version", cli_version, "print the version, the commit and the libraries' versions"},
    {"crawl", cli_run_crawl, "map a TM2 network into SQLite; 'crawl report' prints and exports it"},
    {"seed", cli_run_seed, "run a seed: crawl, keep the book fresh, answer discovery requests"},
    {"status", cli_status, "print a running node's status and peers (its HTTP endpoints)"},
    {"ban", cli_ban, "list, add or remove the bans of a node home (bans.json)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: tm2p2p <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'tm2p2p <command> --help' describes a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version"))
        return cli_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tm2p2p: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
