/* streampool run: its options. The usage text, the option table, and the parsing of argv into
 * run_opts with the CLI's one parser (args.h). A new option is a run_opts field (run.h), a usage
 * line, an entry in run_long_opts and a case in run_opt; checks across options go in
 * sp_cli_run_parse after the loop. No state; single-threaded.
 */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "model_open.h"
#include "run.h"

static void run_usage(FILE *f) {
  fprintf(f,
          "usage: streampool run [options]\n"
          "  --backend NAME      host, cuda or auto (default: best available)\n"
          "  --model FILE        safetensors MLP that describes its layers (__metadata__ or a\n"
          "                      config.json beside it; default: built-in seeded MLP\n"
          "                      512-1024-1024-512, ReLU between layers)\n" SP_CLI_ARCH_USAGE
          "  --model DIR         a BERT encoder folder (config.json, model.safetensors, vocab;\n"
          "                      a folder without config.json is refused as a directory):\n"
          "                      sentences/s at batch 1 per --threads, one thread batched\n"
          "                      (--batch, default 32), the encoder batcher from --clients\n"
          "                      threads (default 64); every embedding checked against the\n"
          "                      single-threaded one\n"
          "  --inputs FILE       with --model DIR: sentences, one a line (default: seeded\n"
          "                      sentences of 32 tokens)\n"
          "  --max-tokens N      with --model DIR: the batcher's padded tokens per pass\n"
          "  --dtype f32|bf16|f16  weights and activations (default f32)\n"
          "  --threads LIST      thread counts, e.g. 1,2,4,8 (default 1,2,4,8)\n"
          "  --batch N           rows per call (default 1; must be 1 with --batcher)\n"
          "  --duration SECONDS  per thread count (default 3)\n"
          "  --batcher[=on|off]  send single rows through a batcher (default off)\n"
          "  --max-batch N  --max-delay-us N  --workers N   batcher settings (0: defaults)\n"
          "  --clients N         with --batcher: N client threads (same as --threads N)\n"
          "  --seed N            model and input seed (default 1)\n"
          "  --devices all|LIST  device indices, e.g. 0,1: threads spread round-robin, one model\n"
          "                      per device, a row per device and a total (default 0)\n"
          "  --json              one JSON document on stdout instead of the table\n"
          "  --snapshot FILE     memory snapshot of device 0 at the end, with its event history:\n"
          "                      FILE.json the JSON, else an HTML page (streampool viewer)\n"
          "  --no-progress       no progress bar on stderr\n"
          "  --self-test-wrong-output  corrupt one output to show that the check fails the run\n"
          "Every output is checked against a single-threaded reference: relative error per row\n"
          "(max |y - ref| / max |ref|) within 1e-5 (f32), 1e-2 (bf16) or 2e-3 (f16).\n"
          "Exit status: 0 all outputs correct, 1 a wrong output or a failed call, 2 bad usage.\n");
}

enum {
  OPT_BACKEND = 256,
  OPT_MODEL,
  OPT_DTYPE,
  OPT_THREADS,
  OPT_BATCH,
  OPT_DURATION,
  OPT_BATCHER,
  OPT_MAX_BATCH,
  OPT_MAX_DELAY,
  OPT_WORKERS,
  OPT_CLIENTS,
  OPT_SEED,
  OPT_JSON,
  OPT_NO_PROGRESS,
  OPT_SELF_TEST,
  OPT_DEVICES,
  OPT_SNAPSHOT,
  OPT_ARCH,
  OPT_INPUTS,
  OPT_MAX_TOKENS
};

static const struct option run_long_opts[] = {
    {"backend", required_argument, 0, OPT_BACKEND},
    {"model", required_argument, 0, OPT_MODEL},
    {"dtype", required_argument, 0, OPT_DTYPE},
    {"threads", required_argument, 0, OPT_THREADS},
    {"batch", required_argument, 0, OPT_BATCH},
    {"duration", required_argument, 0, OPT_DURATION},
    {"batcher", optional_argument, 0, OPT_BATCHER},
    {"max-batch", required_argument, 0, OPT_MAX_BATCH},
    {"max-delay-us", required_argument, 0, OPT_MAX_DELAY},
    {"workers", required_argument, 0, OPT_WORKERS},
    {"clients", required_argument, 0, OPT_CLIENTS},
    {"seed", required_argument, 0, OPT_SEED},
    {"json", no_argument, 0, OPT_JSON},
    {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
    {"self-test-wrong-output", no_argument, 0, OPT_SELF_TEST},
    {"devices", required_argument, 0, OPT_DEVICES},
    {"snapshot", required_argument, 0, OPT_SNAPSHOT},
    {"arch", required_argument, 0, OPT_ARCH},
    {"inputs", required_argument, 0, OPT_INPUTS},
    {"max-tokens", required_argument, 0, OPT_MAX_TOKENS},
    {0, 0, 0, 0}};

typedef struct run_parse_ctx {
  run_opts *o;
  unsigned clients; /* --clients; 0: not given */
} run_parse_ctx;

/* "all" or distinct indices 0..63, at most MAX_DEVICES. */
static const char *run_devices(const char *s, run_opts *o) {
  o->n_devices = 0;
  o->devices_all = !strcmp(s, "all");
  if (o->devices_all) return NULL;
  return sp_cli_list(s, 0, 63, true, MAX_DEVICES, o->devices, &o->n_devices);
}

/* One option: NULL taken, else why its value is bad. */
static const char *run_opt(int c, const char *arg, void *ctx) {
  run_parse_ctx *p = ctx;
  run_opts *o = p->o;
  switch (c) {
  case OPT_BACKEND: return sp_cli_backend(arg, &o->backend);
  case OPT_MODEL: o->model_path = arg; return NULL;
  case OPT_DTYPE: return sp_cli_dtype(arg, &o->dtype);
  case OPT_THREADS:
    return sp_cli_list(arg, 1, MAX_THREADS, false, MAX_RUNS, o->threads, &o->n_runs);
  case OPT_BATCH: o->batch_given = true; return sp_cli_unsigned(arg, 1, 65536, &o->batch);
  case OPT_DURATION: return sp_cli_decimal(arg, 1e-3, 3600, &o->duration_s);
  case OPT_BATCHER:
    if (!arg || !strcmp(arg, "on")) o->batcher = true;
    else if (!strcmp(arg, "off")) o->batcher = false;
    else return "not on or off";
    return NULL;
  case OPT_MAX_BATCH: return sp_cli_unsigned(arg, 0, 65536, &o->bcfg.max_batch);
  case OPT_MAX_DELAY: return sp_cli_unsigned(arg, 0, 10000000, &o->bcfg.max_delay_us);
  case OPT_WORKERS: o->workers_given = true; return sp_cli_unsigned(arg, 0, 128, &o->bcfg.workers);
  case OPT_CLIENTS: return sp_cli_unsigned(arg, 1, MAX_THREADS, &p->clients);
  case OPT_SEED: return sp_cli_count(arg, 0, UINT64_MAX, &o->seed);
  case OPT_JSON: o->json = true; return NULL;
  case OPT_NO_PROGRESS: o->progress = false; return NULL;
  case OPT_SELF_TEST: o->self_test_wrong = true; return NULL;
  case OPT_DEVICES: return run_devices(arg, o);
  case OPT_SNAPSHOT: o->snapshot = arg; return NULL;
  case OPT_ARCH: o->arch = arg; return NULL;
  case OPT_INPUTS: o->inputs = arg; return NULL;
  case OPT_MAX_TOKENS: return sp_cli_unsigned(arg, 0, 1u << 24, &o->max_tokens);
  default: return "not an option of run";
  }
}

bool sp_cli_run_is_encoder_folder(const char *path) {
  struct stat sb;
  char cfg[4096];
  if (!path || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return false;
  int n = snprintf(cfg, sizeof(cfg), "%s/config.json", path);
  return n > 0 && (size_t)n < sizeof(cfg) && stat(cfg, &sb) == 0;
}

int sp_cli_run_parse(int argc, char **argv, run_opts *o) {
  *o = (run_opts){.batch = 1,
                  .duration_s = 3,
                  .progress = true,
                  .seed = 1,
                  .n_runs = 4,
                  .threads = {1, 2, 4, 8}};
  run_parse_ctx ctx = {.o = o};
  int rc = sp_cli_parse("run", argc, argv, run_long_opts, run_usage, run_opt, &ctx);
  if (rc) return rc;
  o->clients = ctx.clients;
  if (sp_cli_run_is_encoder_folder(o->model_path)) { /* an encoder: its own rows (run_encoder.c) */
    if (o->json || o->snapshot || o->n_devices || o->devices_all || o->arch)
      return sp_cli_usage_error("run",
                                "--json, --snapshot, --devices and --arch are for MLP "
                                "models, not an encoder folder");
    if (!isatty(STDERR_FILENO)) o->progress = false;
    return 0;
  }
  if (o->inputs || o->max_tokens)
    return sp_cli_usage_error("run", "--inputs and --max-tokens need --model DIR (an encoder)");
  if (ctx.clients) {
    o->threads[0] = ctx.clients;
    o->n_runs = 1;
  }
  if (o->arch && !o->model_path)
    return sp_cli_usage_error("run", "--arch describes a --model file: give one");
  if (o->batcher && o->batch != 1)
    return sp_cli_usage_error("run", "--batcher sends single rows: use --batch 1");
  if (!isatty(STDERR_FILENO)) o->progress = false;
  return 0;
}
