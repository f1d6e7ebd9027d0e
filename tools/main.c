/* streampool: the command-line program. Dispatches to one subcommand per file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "streampool.h"

typedef struct sp_cli_command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *help;
} sp_cli_command;

static const sp_cli_command sp_cli_commands[] = {
    {"run", sp_cli_run, "parallel inference of a model with a scaling report (the main job)"},
    {"check", sp_cli_check, "a model's outputs against expected outputs (PyTorch, numpy)"},
    {"embed", sp_cli_embed, "sentence embeddings of text lines with a BERT encoder folder"},
    {"info", sp_cli_info, "backends compiled in, devices, stream pool settings"},
    {"streams", sp_cli_streams, "threads copying and checking data on their own streams"},
    {"viewer", sp_cli_viewer, "a memory snapshot JSON as a self-contained HTML page"},
};

static void sp_cli_usage(FILE *f) {
  fprintf(f, "usage: streampool <command> [options]   (streampool <command> --help)\n\n");
  for (size_t i = 0; i < sizeof(sp_cli_commands) / sizeof(sp_cli_commands[0]); i++)
    fprintf(f, "  %-8s %s\n", sp_cli_commands[i].name, sp_cli_commands[i].help);
  fprintf(f, "\nstreampool %s\n", sp_version());
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    sp_cli_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("streampool %s\n", sp_version());
    return 0;
  }
  for (size_t i = 0; i < sizeof(sp_cli_commands) / sizeof(sp_cli_commands[0]); i++)
    if (!strcmp(argv[1], sp_cli_commands[i].name))
      return sp_cli_commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "streampool: unknown command '%s'\n\n", argv[1]);
  sp_cli_usage(stderr);
  return 2;
}
