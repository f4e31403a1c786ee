/* Packet decoder on arbitrary bytes, read as a stream of sized packets. Every
 * packet that decodes must re-encode to something that decodes to the same
 * packet, at the size the encoder predicts. */
#include <stdlib.h>
#include <string.h>

#include "conn/packet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same(const tm2__packet *a, const tm2__packet *b)
{
    if (a->type != b->type)
        abort();
    if (a->type != TM2__PKT_MSG)
        return;
    if (a->channel != b->channel || a->eof != b->eof || a->len != b->len)
        abort();
    if (a->len && memcmp(a->data, b->data, a->len) != 0)
        abort();
    if (!a->len && (a->data || b->data))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[2048];
    const size_t max = tm2__packet_max_size(1024);
    while (size) {
        tm2__packet p, q;
        size_t used;
        int e = tm2__packet_decode(data, size, max, &p, &used);
        if (e)
            break;
        if (used == 0 || used > size || used > max)
            abort();
        int n = tm2__packet_encode(&p, out, sizeof out);
        if (n <= 0)
            abort();
        if (p.type == TM2__PKT_MSG && (size_t)n != tm2__packet_msg_size(p.channel, p.eof, p.len))
            abort();
        size_t used2;
        if (tm2__packet_decode(out, (size_t)n, max + 32, &q, &used2) != 0 || used2 != (size_t)n)
            abort();
        same(&p, &q);
        data += used;
        size -= used;
    }
    return 0;
}
