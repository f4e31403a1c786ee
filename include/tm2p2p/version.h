/* Which tm2p2p this is, and which libraries it runs with.
 *
 * Every string returned here is static, lives as long as the process and
 * must not be freed. Safe from any thread, at any time (no state is kept). */
#ifndef TM2P2P_VERSION_H
#define TM2P2P_VERSION_H

#include "tm2p2p/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's release, "MAJOR.MINOR.PATCH" (the CMake project version). */
TM2_API const char *tm2_version(void);

typedef struct tm2_build_info {
    const char *version;    /* tm2_version() */
    /* The git commit the library was built from: 40 hex digits, with
     * "-dirty" appended when tracked files had changes, or "unknown" when it
     * was not built from a git checkout (a source tarball). */
    const char *commit;
    const char *protocol;   /* TM2_PROTOCOL_VERSION: NodeInfo's p2p/bft/abci/blockchain entries */
    /* The shared libraries as loaded at run time (not the headers built
     * against): sodium_version_string(), OpenSSL_version(OPENSSL_VERSION),
     * uv_version_string(). openssl is NULL when frames are sealed with
     * libsodium (built with -DTM2_OPENSSL_AEAD=OFF or without OpenSSL 3). */
    const char *libsodium;
    const char *openssl;
    const char *libuv;
} tm2_build_info;

/* Fills *out. */
TM2_API void tm2_build_info_get(tm2_build_info *out);

#ifdef __cplusplus
}
#endif
#endif
