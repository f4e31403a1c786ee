/* tm2p2p seed: what a seed node does, on the crawler engine. It crawls the
 * network from its seeds and from the nodes that connect to it, re-checks
 * every address each --recheck, and answers each inbound discovery request
 * with up to 30 addresses verified within --fresh (one per node, spread over
 * subnets, never the asker's own), then hangs up. Its book is the crawl
 * database (DIR/crawl.db), so `tm2p2p crawl report --home DIR` reads it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/crawl_cli.h"
#include "tm2p2p/key.h"

static const char seed_usage[] =
    "usage: tm2p2p seed --home DIR --chain-id ID [--seeds ID@HOST:PORT,...] [options]\n"
    "\n"
    "Runs a seed until SIGINT or SIGTERM. Nodes that list it among their seeds\n"
    "connect, ask once for addresses and get up to 30 recently verified, reachable\n"
    "ones (one per node, from as many subnets as there are, never their own);\n"
    "then the seed hangs up. Meanwhile it crawls: every address it heard of (from\n"
    "--seeds, from the nodes' answers, from nodes that connected to it) is\n"
    "re-checked every --recheck; an address is handed out only while its last\n"
    "check succeeded and is at most --fresh old. Its node key is\n"
    "DIR/secrets/node_key.json (created if missing); its book is DIR/crawl.db\n"
    "(`tm2p2p crawl report --home DIR` reads it). The program prints the address\n"
    "it listens on (ID@IP:PORT) on standard output.\n"
    "\n"
    "  --home DIR              key and database (required)\n"
    "  --chain-id ID           the network it serves (required)\n"
    "  --laddr ADDR            listen address [tcp://0.0.0.0:26656]\n"
    "  --external-address IP:PORT  advertised address [the bound one]\n"
    "  --seeds LIST            nodes to start crawling from, ID@HOST:PORT,...\n"
    "  --allow LIST            CIDR blocks that may be dialled, and/or 'public' [public]\n"
    "  --recheck DUR           how often every address is checked again [2m]\n"
    "  --fresh DUR             hand out only addresses verified this recently\n"
    "                          [3 x --recheck]\n"
    "  --serve-timeout DUR     an inbound peer that asks nothing is let go [10s]\n"
    "  --linger DUR            from our answer to the hang-up [200ms]\n"
    "  --max-sessions N        inbound peers served at once [256]\n"
    "  --gone-after DUR, --concurrency N, --per-host N, --host-gap DUR,\n"
    "  --dial-timeout DUR, --handshake-timeout DUR, --ask-timeout DUR,\n"
    "  --max-addrs N, --moniker NAME, --db FILE, --progress,\n"
    "  --log-level LEVEL, --log-format FORMAT, --prometheus-listen-addr ADDR\n"
    "                          as for tm2p2p crawl\n"
    "\n"
    "An address that stops answering leaves the answers at its next failed\n"
    "check (at most --recheck plus the probe's timeouts after it stopped), and in\n"
    "any case --fresh after its last successful one.\n"
    "\n"
    "With --prometheus-listen-addr it serves /metrics: addresses known, reachable\n"
    "and refused, probes, rounds, inbound peers served and answers sent.\n";

int cli_run_seed(int argc, char **argv)
{
    static const char *const allowed[] = {
        "--home", "--db", "--seeds", "--chain-id", "--allow", "--gone-after", "--concurrency",
        "--per-host", "--host-gap", "--dial-timeout", "--handshake-timeout", "--ask-timeout",
        "--max-addrs", "--moniker", "--progress", "--log-level", "--log-format", "--laddr",
        "--external-address", "--recheck", "--fresh", "--serve-timeout", "--linger",
        "--max-sessions", "--prometheus-listen-addr", NULL};
    cli_crawl_flags f;
    memset(&f, 0, sizeof f);
    int r = cli_crawl_parse_flags("seed", argc - 1, argv + 1, allowed, &f);
    if (r)
        return r;
    if (f.help) {
        fputs(seed_usage, stdout);
        return 0;
    }
    cli_crawl_settings *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    int status = cli_crawl_resolve("seed", &f, true, s);
    if (!status) {
        char dir[4200], key_path[4300], err[512];
        snprintf(dir, sizeof dir, "%s/secrets", s->home);
        mkdir(s->home, 0700);
        mkdir(dir, 0700);
        snprintf(key_path, sizeof key_path, "%s/node_key.json", dir);
        if (tm2_node_key_load_or_generate(key_path, &s->cfg.serve_key, err, sizeof err) < 0) {
            cli_log_kv(&s->log, TM2_LOG_ERROR, "cannot load the node key", "file", key_path, "reason",
                       err, (const char *)NULL);
            status = 1;
        } else {
            status = cli_crawl_run("seed", s, true);
        }
    }
    cli_crawl_settings_free(s);
    free(s);
    return status;
}
