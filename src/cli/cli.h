/* The tm2p2p program's subcommands. Each returns the process exit status:
 * 0 success, 1 runtime failure, 2 bad usage. */
#ifndef TM2_CLI_H
#define TM2_CLI_H

int cli_keys(int argc, char **argv);

#endif
