/* tm2p2p sim: a whole network of real switches in virtual time. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "sim/sim.h"

static const char sim_usage[] =
    "usage: tm2p2p sim [options]\n"
    "\n"
    "Runs a network of tm2p2p nodes (real switches, discovery and a flooding\n"
    "gossip reactor) over a simulated network, on one thread, in virtual time.\n"
    "The same seed gives the same run: the summary's digest of the event trace\n"
    "says so. Shows a progress line in virtual time, then a summary.\n"
    "\n"
    "options:\n"
    "  --nodes N            honest nodes, seeds included [100]\n"
    "  --seeds N            seed nodes (seed mode) [3]\n"
    "  --seed N             random seed of the run [1]\n"
    "  --duration S         virtual seconds [60]\n"
    "  --latency A-Bms      one-way latency per link, from the seed [20-200ms]\n"
    "  --loss P%            segments delayed by a retransmission [0%]\n"
    "  --bandwidth B        bytes per second per link direction, 0 unlimited [0]\n"
    "  --scenario NAME      bootstrap | churn | partition | eclipse | slow [bootstrap]\n"
    "                         churn: a node crashes every --churn-every ms and\n"
    "                           comes back --churn-down ms later\n"
    "                         partition: cut in two halves at a third of the\n"
    "                           run, healed at two thirds\n"
    "                         eclipse: --attackers nodes in two /16s answer\n"
    "                           discovery with their own addresses only\n"
    "                         slow: 200-800 ms, 2% loss, 32 KiB/s links unless\n"
    "                           set otherwise\n"
    "  --max-inbound N      [40]\n"
    "  --max-outbound N     [10]\n"
    "  --attackers N        eclipse attackers [nodes / 5]\n"
    "  --churn-every MS     [1000]\n"
    "  --churn-down MS      [10000]\n"
    "  --gossip-every MS    a gossip message from a random node, 0 none [1000]\n"
    "  --check              check the properties at every event (limits, peers\n"
    "                       counted once); exit 1 on the first violation\n"
    "  --quiet              no progress line\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tm2p2p sim: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

static int parse_u64(const char *flag, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!v || !*v)
        return usage_error("%s needs a value", flag);
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || v[0] == '-' || x < min || x > max)
        return usage_error("%s: '%s' is not a number from %" PRIu64 " to %" PRIu64, flag, v, min,
                           max);
    *out = x;
    return 0;
}

static int parse_u32(const char *flag, const char *v, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t x;
    int r = parse_u64(flag, v, min, max, &x);
    if (!r)
        *out = (uint32_t)x;
    return r;
}

/* "20-200ms", "50ms" or "50". */
static int parse_latency(const char *v, uint32_t *lo, uint32_t *hi)
{
    if (!v || !*v)
        return usage_error("--latency needs a value");
    char *end;
    unsigned long a = strtoul(v, &end, 10), b = a;
    if (end == v)
        return usage_error("--latency: '%s' is not A-Bms", v);
    if (*end == '-') {
        const char *s = end + 1;
        b = strtoul(s, &end, 10);
        if (end == s)
            return usage_error("--latency: '%s' is not A-Bms", v);
    }
    if (strcmp(end, "ms") && *end)
        return usage_error("--latency: '%s' is not A-Bms", v);
    if (a > b || b > 10000)
        return usage_error("--latency: '%s' needs A <= B <= 10000", v);
    *lo = (uint32_t)a;
    *hi = (uint32_t)b;
    return 0;
}

/* "0.5%" or "0.005". */
static int parse_loss(const char *v, double *out)
{
    if (!v || !*v)
        return usage_error("--loss needs a value");
    char *end;
    double x = strtod(v, &end);
    if (end == v)
        return usage_error("--loss: '%s' is not a percentage", v);
    if (*end == '%') {
        x /= 100.0;
        end++;
    }
    if (*end || !(x >= 0.0 && x < 0.5))
        return usage_error("--loss: '%s' must be from 0%% to 50%%", v);
    *out = x;
    return 0;
}

static bool tty;

static void progress(void *user, const tm2__sim_progress *p)
{
    (void)user;
    double speed = p->wall_ms ? (double)p->now_ms / (double)p->wall_ms : 0.0;
    fprintf(stderr,
            "%s[sim t=%5" PRIu64 "s] live %u, at outbound target %u/%u, components %u, "
            "peerings %" PRIu64 ", gossip %" PRIu64 "/%" PRIu64 ", events %" PRIu64 ", %.1fx%s",
            tty ? "\r" : "", p->now_ms / 1000u, p->live, p->at_target, p->live_plain,
            p->components, p->edges, p->gossip_delivered, p->gossip_sent, p->events, speed,
            tty ? "\033[K" : "\n");
    fflush(stderr);
}

static void print_time(const char *what, int64_t ms)
{
    if (ms < 0)
        printf("  %-30s never\n", what);
    else
        printf("  %-30s %.1f s\n", what, (double)ms / 1000.0);
}

static void summary(const tm2__sim_config *c, const tm2__sim_report *r)
{
    printf("sim: %u nodes (%u seeds), seed %" PRIu64 ", scenario %s, %.0f s virtual\n",
           c->nodes, c->seeds, c->seed, tm2__sim_scenario_name(c->scenario),
           (double)c->duration_ms / 1000.0);
    printf("  links                          %u-%u ms, loss %.2f%%, bandwidth %s\n", c->lat_min_ms,
           c->lat_max_ms, c->loss * 100.0, c->bandwidth ? "limited" : "unlimited");
    if (c->bandwidth)
        printf("  bandwidth                      %" PRIu64 " B/s per direction\n", c->bandwidth);
    print_time("connected graph after", r->t_connected_ms);
    print_time("all at outbound target after", r->t_at_target_ms);
    if (c->scenario == TM2__SIM_PARTITION) {
        print_time("split after", r->t_split_ms);
        print_time("healed (one component) at", r->t_healed_ms);
    }
    printf("  live nodes at the end          %u (components %u, peerings %" PRIu64 ")\n",
           r->last.live, r->components, r->last.edges);
    printf("  degree                         min %u, p50 %u, p90 %u, max %u, mean %.1f\n",
           r->deg_min, r->deg_p50, r->deg_p90, r->deg_max, r->deg_mean);
    printf("  degree histogram              ");
    for (unsigned d = 0; d <= TM2__SIM_DEG_MAX; d++)
        if (r->deg_hist[d])
            printf(" %u%s:%u", d, d == TM2__SIM_DEG_MAX ? "+" : "", r->deg_hist[d]);
    printf("\n");
    printf("  diameter                       %u (from %u node%s)\n", r->diameter,
           r->diameter_sources, r->diameter_sources == 1 ? "" : "s");
    double ratio = r->gossip_expected ? (double)r->gossip_delivered / (double)r->gossip_expected : 0;
    printf("  gossip delivered               %" PRIu64 " of %" PRIu64 " (%.2f%%)\n",
           r->gossip_delivered, r->gossip_expected, ratio * 100.0);
    printf("  gossip latency                 p50 %" PRIu64 " ms, p90 %" PRIu64 " ms, p99 %" PRIu64
           " ms, max %" PRIu64 " ms\n",
           r->lat_p50_ms, r->lat_p90_ms, r->lat_p99_ms, r->lat_max_ms);
    for (size_t i = 0; i < r->n_channels; i++)
        printf("  channel 0x%02x sent              %" PRIu64 " msgs, %" PRIu64 " bytes\n",
               r->channels[i].id, r->channels[i].msgs, r->channels[i].bytes);
    if (c->scenario == TM2__SIM_CHURN)
        printf("  crashes, restarts              %" PRIu64 ", %" PRIu64 "\n", r->crashes,
               r->restarts);
    if (c->scenario == TM2__SIM_ECLIPSE)
        printf("  honest outbound peers          %" PRIu64 " of %" PRIu64 " (%.1f%%), %u attackers\n",
               r->outbound_honest, r->outbound_total,
               r->outbound_total ? 100.0 * (double)r->outbound_honest / (double)r->outbound_total : 0.0,
               c->attackers);
    double wall = (double)r->wall_ms / 1000.0;
    printf("  events                         %" PRIu64 " world, %" PRIu64 " switch\n",
           r->world_events, r->switch_events);
    printf("  wall time                      %.1f s (%.1fx real time)\n", wall,
           wall > 0 ? (double)c->duration_ms / 1000.0 / wall : 0.0);
    printf("  memory                         %.1f MiB (%.1f KiB per node)\n",
           (double)r->mem_bytes / 1048576.0,
           (double)r->mem_bytes / 1024.0 / (double)(c->nodes + c->attackers));
    printf("  digest                         ");
    for (int i = 0; i < 32; i++)
        printf("%02x", r->digest[i]);
    printf("\n");
    if (r->violated)
        printf("  PROPERTY VIOLATED (seed %" PRIu64 "): %s\n", c->seed, r->violation);
}

int cli_run_sim(int argc, char **argv)
{
    tm2__sim_config c;
    tm2__sim_config_default(&c);
    bool quiet = false, lat_set = false, loss_set = false, bw_set = false, att_set = false;
    uint64_t duration_s = c.duration_ms / 1000u;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        char name[32];
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name)
            return usage_error("unknown option '%s'", a);
        memcpy(name, a, nl);
        name[nl] = 0;
        if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
            fputs(sim_usage, stdout);
            return 0;
        }
        if (!strcmp(name, "--check")) {
            c.check = true;
            continue;
        }
        if (!strcmp(name, "--quiet")) {
            quiet = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        int r = 0;
        if (!strcmp(name, "--nodes"))
            r = parse_u32(name, v, 2, 100000, &c.nodes);
        else if (!strcmp(name, "--seeds"))
            r = parse_u32(name, v, 1, 1000, &c.seeds);
        else if (!strcmp(name, "--seed"))
            r = parse_u64(name, v, 0, UINT64_MAX, &c.seed);
        else if (!strcmp(name, "--duration"))
            r = parse_u64(name, v, 1, 7u * 86400u, &duration_s);
        else if (!strcmp(name, "--latency"))
            r = parse_latency(v, &c.lat_min_ms, &c.lat_max_ms), lat_set = true;
        else if (!strcmp(name, "--loss"))
            r = parse_loss(v, &c.loss), loss_set = true;
        else if (!strcmp(name, "--bandwidth"))
            r = parse_u64(name, v, 0, UINT64_MAX, &c.bandwidth), bw_set = true;
        else if (!strcmp(name, "--scenario")) {
            if (!v || (c.scenario = tm2__sim_scenario_parse(v)) < 0)
                return usage_error("--scenario: '%s' is not bootstrap, churn, partition, eclipse "
                                   "or slow", v ? v : "");
        } else if (!strcmp(name, "--max-inbound"))
            r = parse_u32(name, v, 1, 100000, &c.max_inbound);
        else if (!strcmp(name, "--max-outbound"))
            r = parse_u32(name, v, 1, 1000, &c.max_outbound);
        else if (!strcmp(name, "--attackers"))
            r = parse_u32(name, v, 0, 100000, &c.attackers), att_set = true;
        else if (!strcmp(name, "--churn-every"))
            r = parse_u32(name, v, 1, 86400000u, &c.churn_every_ms);
        else if (!strcmp(name, "--churn-down"))
            r = parse_u32(name, v, 1, 86400000u, &c.churn_down_ms);
        else if (!strcmp(name, "--gossip-every"))
            r = parse_u32(name, v, 0, 86400000u, &c.gossip_every_ms);
        else
            return usage_error("unknown option '%s'", a);
        if (r)
            return r;
    }
    c.duration_ms = duration_s * 1000u;
    if (c.scenario == TM2__SIM_SLOW) {
        if (!lat_set)
            c.lat_min_ms = 200, c.lat_max_ms = 800;
        if (!loss_set)
            c.loss = 0.02;
        if (!bw_set)
            c.bandwidth = 32 * 1024;
    }
    if (c.scenario == TM2__SIM_ECLIPSE && !att_set)
        c.attackers = c.nodes / 5u;
    if (c.scenario != TM2__SIM_ECLIPSE)
        c.attackers = 0;
    c.cut_at_ms = c.duration_ms / 3u;
    c.heal_at_ms = c.duration_ms * 2u / 3u;
    tty = isatty(STDERR_FILENO);
    if (!quiet) {
        c.progress = progress;
        c.progress_every_ms = tty ? 1000 : 10000;
    }
    tm2__sim_report *rep = malloc(sizeof *rep);
    if (!rep) {
        fprintf(stderr, "tm2p2p sim: out of memory\n");
        return 1;
    }
    char err[256] = "";
    int rc = tm2__sim_run(&c, rep, err, sizeof err);
    if (!quiet && tty)
        fprintf(stderr, "\n");
    if (rc == TM2_EINVAL) {
        free(rep);
        return usage_error("%s", err);
    }
    if (rc < 0) {
        fprintf(stderr, "tm2p2p sim: %s\n", err[0] ? err : tm2_strerror(rc));
        free(rep);
        return 1;
    }
    summary(&c, rep);
    int status = rep->violated ? 1 : 0;
    free(rep);
    return status;
}
