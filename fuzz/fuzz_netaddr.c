/* NetAddress parser on arbitrary strings (never with RESOLVE: no DNS). An
 * accepted address must print, and the printed form must parse back to an
 * equal address, with and without its ID. */
#include <stdlib.h>
#include <string.h>

#include "tm2p2p/netaddr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const char *s, unsigned flags)
{
    tm2_netaddr a, b;
    if (tm2_netaddr_parse(s, flags, &a) != 0)
        return;
    char text[TM2_NETADDR_STRLEN], dial[TM2_NETADDR_STRLEN];
    int n = tm2_netaddr_format(&a, text, sizeof text);
    int d = tm2_netaddr_dialstring(&a, dial, sizeof dial);
    if (n <= 0 || d <= 0 || d > n)
        abort();
    if (tm2_netaddr_parse(text, flags, &b) != 0 || !tm2_netaddr_equal(&a, &b) ||
        !tm2_netaddr_same(&a, &b))
        abort();
    if (tm2_netaddr_parse(dial, TM2_NETADDR_NO_ID, &b) != 0 || memcmp(a.ip, b.ip, 16) != 0 ||
        a.port != b.port)
        abort();
    (void)tm2_netaddr_validate(&a);
    (void)tm2_netaddr_is_routable(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    roundtrip(s, 0);
    roundtrip(s, TM2_NETADDR_NO_ID);
    free(s);
    return 0;
}
