#include "tm2p2p/version.h"

#include <sodium.h>
#include <stddef.h>
#include <uv.h>
#if defined(TM2_AEAD_OPENSSL)
#include <openssl/crypto.h>
#endif

#include "tm2_build_commit.h"
#include "tm2p2p/node_info.h"

const char *tm2_version(void) { return TM2_BUILD_VERSION; }

void tm2_build_info_get(tm2_build_info *out)
{
    if (!out)
        return;
    out->version = TM2_BUILD_VERSION;
    out->commit = TM2_BUILD_COMMIT;
    out->protocol = TM2_PROTOCOL_VERSION;
    out->libsodium = sodium_version_string();
#if defined(TM2_AEAD_OPENSSL)
    out->openssl = OpenSSL_version(OPENSSL_VERSION);
#else
    out->openssl = NULL;
#endif
    out->libuv = uv_version_string();
}
