/* Discovery message decoder on arbitrary bytes. A decoded message is
 * validated and encoded again; that encoding must decode to the same
 * addresses and re-encode to the same bytes. */
#include <stdlib.h>
#include <string.h>

#include "discovery/pex_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
/* Room for more than the reference ever sends, so the limit path and the
 * parse path both run. */
#define CAP (2 * TM2__PEX_MAX_SHARED)

static void same_addrs(const tm2_netaddr *a, const tm2_netaddr *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        CHECK(strcmp(a[i].id.s, b[i].id.s) == 0);
        CHECK(memcmp(a[i].ip, b[i].ip, 16) == 0);
        CHECK(a[i].port == b[i].port);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    /* A private copy, so reads past the end hit the allocator's redzone. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);

    static tm2_netaddr addrs[CAP], again[CAP];
    tm2__pex_msg m;
    int rc = tm2__pex_decode(copy, size, &m, addrs, CAP);
    CHECK(rc <= 0);
    if (rc == TM2_ETOOBIG) {
        CHECK(m.kind == TM2__PEX_RESPONSE && m.n_addrs > CAP);
        /* The count alone is available without an array. */
        tm2__pex_msg m2;
        CHECK(tm2__pex_decode(copy, size, &m2, NULL, 0) == TM2_ETOOBIG);
        CHECK(m2.n_addrs == m.n_addrs);
    }
    if (rc != 0) {
        free(copy);
        return 0;
    }
    CHECK(m.kind == TM2__PEX_REQUEST || m.kind == TM2__PEX_RESPONSE);
    CHECK(m.n_addrs <= CAP);

    uint8_t *enc;
    int need;
    if (m.kind == TM2__PEX_REQUEST) {
        CHECK(m.n_addrs == 0);
        need = TM2__PEX_REQUEST_SIZE;
        enc = malloc((size_t)need);
        CHECK(enc != NULL);
        CHECK(tm2__pex_encode_request(enc, (size_t)need) == need);
    } else {
        int vrc = tm2__pex_response_validate(addrs, m.n_addrs, NULL);
        CHECK(vrc <= 0);
        CHECK((vrc == TM2_EPROTO) == (m.n_addrs == 0));
        need = tm2__pex_encode_response(addrs, m.n_addrs, NULL, 0);
        CHECK(need > 0);
        enc = malloc((size_t)need);
        CHECK(enc != NULL);
        CHECK(tm2__pex_encode_response(addrs, m.n_addrs, enc, (size_t)need) == need);
        CHECK(tm2__pex_encode_response(addrs, m.n_addrs, enc, (size_t)need - 1) == TM2_ENOSPC);
    }

    tm2__pex_msg m2;
    CHECK(tm2__pex_decode(enc, (size_t)need, &m2, again, CAP) == 0);
    CHECK(m2.kind == m.kind && m2.n_addrs == m.n_addrs);
    same_addrs(addrs, again, m.n_addrs);
    if (m.kind == TM2__PEX_RESPONSE) {
        CHECK(tm2__pex_response_validate(again, m2.n_addrs, NULL) ==
              tm2__pex_response_validate(addrs, m.n_addrs, NULL));
        uint8_t *enc2 = malloc((size_t)need);
        CHECK(enc2 != NULL);
        CHECK(tm2__pex_encode_response(again, m2.n_addrs, enc2, (size_t)need) == need);
        CHECK(memcmp(enc, enc2, (size_t)need) == 0);
        free(enc2);
    }
    free(enc);
    free(copy);
    return 0;
}
