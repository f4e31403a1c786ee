/* Test-network gossip messages on arbitrary bytes: an accepted message's
 * header re-encodes to the same bytes, and the bounded seen-set, fed the
 * IDs found in the input, always reports an ID it was just given. */
#include <stdlib.h>
#include <string.h>

#include "cli/gossip.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > CLI_GOSSIP_HEADER + CLI_GOSSIP_MAX_PAYLOAD + 64)
        return 0;
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);

    cli_gossip_msg m;
    int rc = cli_gossip_decode(copy, size, &m);
    CHECK(rc == 0 || rc == TM2_EPROTO);
    if (rc == 0) {
        CHECK(m.payload_len == size - CLI_GOSSIP_HEADER);
        CHECK(m.hops <= CLI_GOSSIP_MAX_HOPS);
        uint8_t again[CLI_GOSSIP_HEADER];
        cli_gossip_encode_header(&m, again);
        CHECK(memcmp(again, copy, CLI_GOSSIP_HEADER) == 0);
    }

    static cli_gossip *g;
    if (!g) {
        cli_gossip_config cfg = {.origin = 0, .seen_cap = 16, .seconds = 8};
        if (cli_gossip_new(&cfg, &g) != 0)
            abort();
    }
    for (size_t i = 0; i + 12 <= size; i += 12) {
        uint32_t origin = (uint32_t)get_be(copy + i, 4);
        uint64_t seq = get_be(copy + i + 4, 8);
        uint64_t k = msg_key(origin, seq);
        (void)seen_check_insert(g, k);
        CHECK(gen_has(&g->cur, k) || gen_has(&g->old, k));
        CHECK(g->cur.used <= g->cur.max && g->old.used <= g->old.max);
        (void)sec_of(g, seq);
        CHECK(cli_hist_bucket(seq) < CLI_HIST_BUCKETS);
    }
    free(copy);
    return 0;
}
