/* NodeInfo decoder on arbitrary bytes. A decoded value is validated and
 * checked against its peers, then encoded again; that encoding must decode to
 * the same value and re-encode to the same bytes. */
#include <stdlib.h>
#include <string.h>

#include "tm2p2p/node_info.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static bool same_str(const char *a, const char *b)
{
    CHECK(a != NULL && b != NULL);
    return strcmp(a, b) == 0;
}

static bool same(const tm2_node_info *a, const tm2_node_info *b)
{
    if (a->n_versions != b->n_versions || a->has_net_address != b->has_net_address ||
        a->n_channels != b->n_channels)
        return false;
    for (size_t i = 0; i < a->n_versions; i++)
        if (!same_str(a->versions[i].name, b->versions[i].name) ||
            !same_str(a->versions[i].version, b->versions[i].version) ||
            a->versions[i].optional != b->versions[i].optional)
            return false;
    if (a->has_net_address &&
        (!same_str(a->net_address.id.s, b->net_address.id.s) ||
         memcmp(a->net_address.ip, b->net_address.ip, 16) != 0 ||
         a->net_address.port != b->net_address.port))
        return false;
    return same_str(a->network, b->network) && same_str(a->software, b->software) &&
           same_str(a->version, b->version) &&
           (a->n_channels == 0 || memcmp(a->channels, b->channels, a->n_channels) == 0) &&
           same_str(a->moniker, b->moniker) && same_str(a->tx_index, b->tx_index) &&
           same_str(a->rpc_address, b->rpc_address);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * TM2_NODE_INFO_MAX_SIZE)
        return 0;
    /* A private copy, so reads past the end hit the allocator's redzone. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);

    tm2_node_info *ni = NULL;
    size_t used = 0;
    int rc = tm2_node_info_decode(copy, size, &ni, &used);
    if (rc != 0) {
        CHECK(ni == NULL && rc < 0);
        free(copy);
        return 0;
    }
    CHECK(ni != NULL && used >= 1 && used <= size && used <= TM2_NODE_INFO_MAX_SIZE);

    char why[256];
    int vrc = tm2_node_info_validate(ni, why, sizeof why);
    CHECK(vrc == 0 || vrc == TM2_ENODEINFO);
    CHECK(strlen(why) < sizeof why);
    int crc = tm2_node_info_compatible(ni, ni, why, sizeof why);
    CHECK(crc == 0 || crc == TM2_EINCOMPAT);
    /* Anything with a channel is compatible with itself. */
    if (ni->n_channels)
        CHECK(crc == 0);
    for (size_t i = 0; i < ni->n_channels; i++)
        CHECK(tm2_node_info_has_channel(ni, ni->channels[i]));

    /* The canonical encoding drops explicit defaults, shortens non-minimal
     * varints and rewrites the address text; only the size limit may stop
     * it. */
    int need = tm2_node_info_encode(ni, NULL, 0);
    CHECK(need > 0 || need == TM2_ETOOBIG);
    if (need > 0) {
        uint8_t *enc = malloc((size_t)need);
        CHECK(enc != NULL);
        CHECK(tm2_node_info_encode(ni, enc, (size_t)need) == need);
        CHECK(tm2_node_info_encode(ni, enc, (size_t)need - 1) == TM2_ENOSPC);

        tm2_node_info *again = NULL;
        size_t used2 = 0;
        CHECK(tm2_node_info_decode(enc, (size_t)need, &again, &used2) == 0);
        CHECK(used2 == (size_t)need);
        CHECK(same(ni, again));
        CHECK(tm2_node_info_validate(again, NULL, 0) == vrc);

        uint8_t *enc2 = malloc((size_t)need);
        CHECK(enc2 != NULL);
        CHECK(tm2_node_info_encode(again, enc2, (size_t)need) == need);
        CHECK(memcmp(enc, enc2, (size_t)need) == 0);
        free(enc2);
        tm2_node_info_free(again);
        free(enc);
    }
    tm2_node_info_free(ni);
    free(copy);
    return 0;
}
