/* `streampool info [--json] [--backend B]`: the backends compiled in, their device counts, and
 * for each device its name, memory and the stream-pool settings a default open gets (after the
 * STREAMPOOL_* environment overrides). Exit status 0, 1 if a device could not be opened (or a
 * STREAMPOOL_* variable is bad), 2 bad usage (an unknown backend included).
 */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "streampool.h"

static const char *const sp_cli_backends[] = {"host", "cuda"};

static const char *sp_cli_mode_name(sp_stream_mode m) {
  return m == SP_STREAMS_EXCLUSIVE ? "exclusive" : "round_robin";
}

static int sp_cli_info_device(const char *backend, int index, int json, int *first) {
  sp_device_config cfg = {.backend = backend, .index = index};
  sp_device *dev = NULL;
  sp_status st = sp_device_open(&cfg, &dev);
  if (st != SP_OK) {
    fprintf(stderr, "streampool info: %s device %d: %s: %s\n", backend, index, sp_status_str(st),
            sp_last_error());
    return 1;
  }
  sp_device_config c;
  size_t free_b = 0, total_b = 0;
  (void)sp_device_config_get(dev, &c);
  (void)sp_device_memory_info(dev, &free_b, &total_b);
  if (json) {
    printf(
        "%s\n    {\"backend\": \"%s\", \"index\": %d, \"name\": \"%s\", \"memory_total\": %zu,"
        " \"memory_free\": %zu, \"streams\": %u, \"stream_mode\": \"%s\", \"slot_wait_ms\": %u,"
        " \"memory_limit\": %zu}",
        *first ? "" : ",", backend, index, sp_device_name(dev), total_b, free_b, c.streams,
        sp_cli_mode_name(c.stream_mode), c.slot_wait_ms, c.memory_limit);
  } else {
    printf("  %s:%d  %s\n", backend, index, sp_device_name(dev));
    printf("    memory       %.1f MiB total, %.1f MiB free\n", (double)total_b / 1048576.0,
           (double)free_b / 1048576.0);
    printf("    stream pool  %u streams (default stream included), %s", c.streams,
           sp_cli_mode_name(c.stream_mode));
    if (c.stream_mode == SP_STREAMS_EXCLUSIVE) printf(", slot wait %u ms", c.slot_wait_ms);
    printf("\n    memory limit ");
    if (c.memory_limit) printf("%zu bytes\n", c.memory_limit);
    else printf("none (the device's memory)\n");
  }
  *first = 0;
  sp_device_close(dev);
  return 0;
}

static void sp_cli_info_usage(FILE *f) {
  fprintf(f,
          "usage: streampool info [--json] [--backend host|cuda|auto]\n"
          "  backends compiled in, their devices, and the stream pool settings a default open\n"
          "  gets (after STREAMPOOL_* overrides); --backend: that backend's devices only.\n");
}

enum { OPT_JSON = 256, OPT_BACKEND };

static const struct option sp_cli_info_opts[] = {{"json", no_argument, 0, OPT_JSON},
                                                 {"backend", required_argument, 0, OPT_BACKEND},
                                                 {0, 0, 0, 0}};

typedef struct sp_cli_info_args {
  int json;
  const char *only; /* NULL: every backend */
} sp_cli_info_args;

static const char *sp_cli_info_opt(int c, const char *arg, void *ctx) {
  sp_cli_info_args *o = ctx;
  if (c == OPT_JSON) o->json = 1;
  else if (c == OPT_BACKEND) return sp_cli_backend(arg, &o->only);
  else return "not an option of info";
  return NULL;
}

int sp_cli_info(int argc, char **argv) {
  sp_cli_info_args o = {0, NULL};
  int prc =
      sp_cli_parse("info", argc, argv, sp_cli_info_opts, sp_cli_info_usage, sp_cli_info_opt, &o);
  if (prc) return prc == 1 ? SP_CLI_OK : SP_CLI_USAGE;
  int json = o.json;
  const char *only = o.only;
  int rc = 0, first = 1;
  if (json) printf("{\"version\": \"%s\", \"devices\": [", sp_version());
  else printf("streampool %s\n\nbackends\n", sp_version());
  int counts[2] = {0, 0};
  for (int b = 0; b < 2; b++) {
    int compiled = sp_backend_compiled(sp_cli_backends[b]);
    if (compiled && sp_device_count(sp_cli_backends[b], &counts[b]) != SP_OK) counts[b] = 0;
    if (!json && compiled)
      printf("  %-5s compiled in, %d device%s\n", sp_cli_backends[b], counts[b],
             counts[b] == 1 ? "" : "s");
    else if (!json && sp_device_count(sp_cli_backends[b], &counts[b]) != SP_OK)
      printf("  %-5s unavailable: %s\n", sp_cli_backends[b], sp_last_error());
  }
  if (!json) printf("\ndevices (a default open, after STREAMPOOL_* overrides)\n");
  for (int b = 0; b < 2; b++) {
    if (only && strcmp(only, sp_cli_backends[b])) continue;
    for (int d = 0; d < counts[b]; d++)
      rc |= sp_cli_info_device(sp_cli_backends[b], d, json, &first);
  }
  if (json) {
    printf("\n  ], \"backends\": {");
    for (int b = 0; b < 2; b++)
      printf("%s\"%s\": {\"compiled\": %s, \"devices\": %d}", b ? ", " : "", sp_cli_backends[b],
             sp_backend_compiled(sp_cli_backends[b]) ? "true" : "false", counts[b]);
    printf("}}\n");
  }
  return rc;
}
