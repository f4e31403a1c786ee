#include "cli/fdlimit.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/resource.h>

static uint64_t as_u64(rlim_t v)
{
    return v == RLIM_INFINITY ? UINT64_MAX : (uint64_t)v;
}

static void fmt_limit(char *buf, size_t cap, uint64_t v)
{
    if (v == UINT64_MAX)
        snprintf(buf, cap, "unlimited");
    else
        snprintf(buf, cap, "%" PRIu64, v);
}

uint64_t cli_fd_limit_ensure(const cli_log *lg, uint64_t conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    char from[24], to[24], need_s[24];
    if (rl.rlim_cur != rl.rlim_max) {
        rlim_t before = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        /* Refused only where the kernel caps it lower (fs.nr_open): the
         * limit then stays where it was, and the check below says so. */
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            fmt_limit(from, sizeof from, as_u64(before));
            fmt_limit(to, sizeof to, as_u64(rl.rlim_cur));
            cli_log_kv(lg, TM2_LOG_DEBUG, "open-file limit raised", "from", from, "to", to,
                       (const char *)NULL);
        } else {
            rl.rlim_cur = before;
        }
    }
    uint64_t limit = as_u64(rl.rlim_cur);
    uint64_t need = conns > UINT64_MAX - CLI_FD_RESERVE ? UINT64_MAX : conns + CLI_FD_RESERVE;
    if (limit < need) {
        fmt_limit(to, sizeof to, limit);
        snprintf(need_s, sizeof need_s, "%" PRIu64, need);
        cli_log_kv(lg, TM2_LOG_WARN, "open-file limit below what the configuration may use", "limit", to,
                   "need", need_s, "hint", "raise the hard limit (ulimit -Hn, LimitNOFILE=)",
                   (const char *)NULL);
    }
    return limit;
}
