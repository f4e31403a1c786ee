/* bech32 decoder on arbitrary strings; a decoded value must re-encode to the
 * lowercase input when it used the classic checksum. */
#include <stdlib.h>
#include <string.h>

#include "tm2p2p/bech32.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char hrp[4096];
    uint8_t out[4096];
    size_t n = 0;
    if (tm2_bech32_decode(s, hrp, sizeof hrp, out, sizeof out, &n) == 0) {
        char back[8192];
        int r = tm2_bech32_encode(hrp, out, n, back, sizeof back);
        /* Re-encoding succeeds for every hrp the decoder accepts, and an
         * accepted lowercase string is only ever its own encoding or the
         * bech32m twin of it (same length). */
        if (r < 0 || (size_t)r != strlen(s))
            abort();
    }
    free(s);
    return 0;
}
