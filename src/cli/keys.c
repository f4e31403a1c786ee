#include <stdio.h>

#include "cli/cli.h"

int cli_keys(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "keys: not built yet\n");
    return 1;
}
