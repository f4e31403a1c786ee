/* The simulator at the size: 1,000 nodes (3 seeds) for 10 virtual
 * minutes, seed 7, 20-200 ms links, a gossip message every second. Prints
 * the wall time, the ratio of virtual to wall time (goal: 5 on one core),
 * the simulator's memory per node and what the network did.
 * TM2_SIM_NODES / TM2_SIM_SECONDS shrink it for a quick look.
 *
 * The run is pinned to one CPU, the last this process may use (the first
 * tends to take the interrupts): the goal is for one core, and a thread
 * the scheduler moves between cores starts over with cold private caches
 * each time (on a 2-vCPU VM, pinned runs of 200 virtual seconds were 0-15%
 * faster than unpinned ones next to them). TM2_SIM_PIN=0 leaves it to the
 * scheduler; sim_cpu says which it was (-1: not pinned). */
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "sim/sim.h"

#define SPEEDUP_GOAL 5.0

static uint32_t env_u32(const char *name, uint32_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? (uint32_t)strtoul(v, NULL, 10) : dflt;
}

/* Pins the calling thread to the highest-numbered CPU it may run on;
 * returns it, or -1 when not pinned. */
static int pin_last_cpu(void)
{
    const char *v = getenv("TM2_SIM_PIN");
    cpu_set_t set;
    if ((v && strcmp(v, "0") == 0) || sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    for (int c = CPU_SETSIZE - 1; c >= 0; c--) {
        if (!CPU_ISSET(c, &set))
            continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(c, &one);
        return sched_setaffinity(0, sizeof one, &one) == 0 ? c : -1;
    }
    return -1;
}

int main(void)
{
    int pinned = pin_last_cpu();
    tm2__sim_config c;
    tm2__sim_config_default(&c);
    c.seed = 7;
    c.nodes = env_u32("TM2_SIM_NODES", 1000);
    c.duration_ms = (uint64_t)env_u32("TM2_SIM_SECONDS", 600) * 1000u;
    tm2__sim_report *r = malloc(sizeof *r);
    if (!r)
        DIE("out of memory");
    char err[256] = "";
    double cpu0 = proc_cpu_s();
    int rc = tm2__sim_run(&c, r, err, sizeof err);
    double cpu = proc_cpu_s() - cpu0;
    if (rc < 0)
        DIE("sim: %s", err);
    double wall = (double)r->wall_ms / 1000.0, virt = (double)c.duration_ms / 1000.0;
    double speedup = wall > 0 ? virt / wall : 0;
    printf("sim_cpu: %d\n", pinned);
    printf("sim_nodes: %u nodes\n", c.nodes);
    printf("sim_virtual_seconds: %.0f s\n", virt);
    printf("sim_wall_seconds: %.2f s\n", wall);
    printf("sim_cpu_seconds: %.2f s\n", cpu);
    printf("sim_speedup: %.2f x\n", speedup);
    printf("sim_speedup_goal_ratio: %.2f\n", speedup / SPEEDUP_GOAL);
    printf("sim_node_bytes: %.0f B\n", (double)r->mem_bytes / c.nodes);
    printf("sim_events_per_second: %.0f events/s\n", wall > 0 ? (double)r->world_events / wall : 0);
    printf("sim_connected_seconds: %.1f s\n", r->t_connected_ms < 0 ? -1.0 : r->t_connected_ms / 1000.0);
    printf("sim_at_target_seconds: %.1f s\n", r->t_at_target_ms < 0 ? -1.0 : r->t_at_target_ms / 1000.0);
    printf("sim_gossip_delivery_ratio: %.4f\n",
           r->gossip_expected ? (double)r->gossip_delivered / (double)r->gossip_expected : 0.0);
    printf("sim_gossip_p99_ms: %" PRIu64 " ms\n", r->lat_p99_ms);
    printf("sim_diameter: %u hops\n", r->diameter);
    free(r);
    return 0;
}
