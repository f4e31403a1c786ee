/* The node's config.toml reader (TOML parser and schema) on arbitrary text:
 * it returns 0 or -1 with a message naming the input, never leaves a setting
 * NULL or out of its bounds, never leaks; the duration parser gets the same
 * bytes as a string. */
#include <stdlib.h>
#include <string.h>

#include "cli/config_toml.c"
#include "cli/toml.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static void on_warn(void *user, const char *msg)
{
    (void)user;
    CHECK(strncmp(msg, "fuzz:", 5) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    copy[size] = '\0';

    cli_config c;
    if (cli_config_defaults(&c) != 0) {
        free(copy);
        return 0;
    }
    char err[256];
    int rc = cli_config_parse(&c, copy, size, "fuzz", on_warn, NULL, err, sizeof err);
    CHECK(rc == 0 || rc == -1);
    if (rc == -1)
        CHECK(strncmp(err, "fuzz:", 5) == 0 || strstr(err, "out of memory"));
    CHECK(c.moniker && c.node_key_file && c.laddr && c.external_address && c.seeds &&
          c.persistent_peers && c.private_peer_ids && c.addr_book_file);
    CHECK(c.send_rate >= 0 && c.recv_rate >= 0 && c.flush_throttle_timeout_ns >= 0 &&
          c.recv_assembly_timeout_ns >= 0);
    CHECK(c.max_packet_msg_payload_size >= 1 && c.max_packet_msg_payload_size <= TM2_MAX_PACKET_PAYLOAD);
    CHECK(c.max_recv_buffer_bytes == 0 || c.max_recv_buffer_bytes >= TM2_MIN_BUFFER_BYTES);
    CHECK(c.max_send_buffer_bytes == 0 || c.max_send_buffer_bytes >= TM2_MIN_BUFFER_BYTES);
    CHECK(c.evict_protect_groups <= 10000 && c.evict_protect_latency <= 10000 &&
          c.evict_protect_active <= 10000 && c.evict_protect_oldest_pct <= 100);
    cli_config_free(&c);

    int64_t ns = 0;
    (void)cli_parse_duration(copy, &ns);
    free(copy);
    return 0;
}
