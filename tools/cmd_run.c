/* Placeholder until the subcommand lands: keeps the program linking. */
#include <stdio.h>

#include "cli.h"

int sp_cli_run(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "streampool run: not built yet\n");
  return 1;
}
