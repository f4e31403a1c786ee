/* tm2p2p version: the release, the commit and the libraries it runs with. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "tm2p2p/version.h"

static const char version_usage[] =
    "usage: tm2p2p version   (or tm2p2p --version)\n"
    "\n"
    "Prints one line each: tm2p2p's release, the git commit it was built from\n"
    "(\"unknown\" outside a git checkout, \"-dirty\" when files had changes), the\n"
    "p2p protocol version it announces, and the libsodium, OpenSSL and libuv it\n"
    "runs with (the shared libraries as loaded, not the headers built against).\n";

static char announced[64];
static pthread_once_t announced_once = PTHREAD_ONCE_INIT;

static void announced_init(void)
{
    tm2_build_info bi;
    tm2_build_info_get(&bi);
    /* Semver build metadata: a short commit is enough to find the tree, and
     * the "v" form matches what gno nodes announce in the same field. */
    size_t hex = strspn(bi.commit, "0123456789abcdef");
    if (hex >= 12)
        snprintf(announced, sizeof announced, "v%s+%.12s%s", bi.version, bi.commit,
                 strstr(bi.commit, "-dirty") ? ".dirty" : "");
    else
        snprintf(announced, sizeof announced, "v%s", bi.version);
}

const char *cli_announced_version(void)
{
    pthread_once(&announced_once, announced_init);
    return announced;
}

int cli_version(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(version_usage, stdout);
            return 0;
        }
        fprintf(stderr, "tm2p2p version: unknown argument '%s'\n", argv[i]);
        return 2;
    }
    tm2_build_info bi;
    tm2_build_info_get(&bi);
    printf("tm2p2p %s\n", bi.version);
    printf("commit %s\n", bi.commit);
    printf("protocol %s\n", bi.protocol);
    printf("libsodium %s\n", bi.libsodium);
    /* OpenSSL's own string names itself ("OpenSSL 3.0.17 1 Jul 2025"). */
    printf("%s\n", bi.openssl ? bi.openssl : "OpenSSL not used");
    printf("libuv %s\n", bi.libuv);
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
}
