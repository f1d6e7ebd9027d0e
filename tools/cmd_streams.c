/* Placeholder until the subcommand lands: keeps the program linking. */
#include <stdio.h>

#include "cli.h"

int sp_cli_streams(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "streampool streams: not built yet\n");
  return 1;
}
