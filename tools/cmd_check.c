/* streampool check: a model's outputs against expected outputs computed elsewhere (PyTorch,
 * numpy), so the loader and the kernels are cross-checked end to end.
 *
 * Inputs and expected outputs are raw little-endian float32 files, row-major: rows = file size /
 * (4 x features). The error is the CLI's one metric (measure.h): per row max |y - want| /
 * max |want| (near-zero rows absolutely at 1e-6), the largest over all rows; above --tol (default
 * the dtype's tolerance of measure.h, the same as `streampool run` checks with: 1e-5 f32, 1e-2
 * bf16, 2e-3 f16) the command exits 1. It prints one line, or one JSON document with --json. Exit
 * status: 0 within tolerance, 1 above it or a failure (message on stderr), 2 bad usage.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "args.h"
#include "cli.h"
#include "measure.h"
#include "model_open.h"
#include "streampool.h"

typedef struct check_opts {
  const char *backend, *model, *arch, *inputs, *expect;
  sp_dtype dtype;
  double tol; /* < 0: the dtype's default */
  unsigned batch;
  bool json;
} check_opts;

static void check_usage(FILE *f) {
  fprintf(f,
          "usage: streampool check --model FILE.safetensors --inputs IN.f32 --expect OUT.f32\n"
          "                        [--dtype f32|bf16|f16] [--tol X] [--batch N] [--backend NAME]\n"
          "                        [--arch TEXT] [--json]\n" SP_CLI_ARCH_USAGE
          "  IN/OUT: raw little-endian float32, row-major. Exit 0 when the relative error\n"
          "  (per row max |y - expected| / max |expected|, the largest over the rows) is within\n"
          "  --tol (default 1e-5 f32, 1e-2 bf16, 2e-3 f16; what `streampool run` checks with).\n"
          "  Prints the chain it built (model: ...) before the result line.\n"
          "  --json: one JSON document on stdout instead of the lines.\n");
}

/* Reads a whole float32 file; *n floats. NULL with a message on stderr when path is not a regular
 * file (opened without blocking, so a FIFO with no writer does not hang; checked on the fd). */
static float *check_read(const char *path, size_t *n) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat sb;
  memset(&sb, 0, sizeof(sb));
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fprintf(stderr, "streampool check: %s %s\n", path,
            S_ISDIR(sb.st_mode) ? "is a directory" : "is not a regular file");
    close(fd);
    return NULL;
  }
  FILE *f = fdopen(fd, "rb");
  if (!f) {
    close(fd);
    return NULL;
  }
  float *buf = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long size = ftell(f);
    if (size > 0 && size % 4 == 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)size)) &&
        fread(buf, 1, (size_t)size, f) == (size_t)size)
      *n = (size_t)size / 4;
    else {
      free(buf);
      buf = NULL;
    }
  }
  fclose(f);
  return buf;
}

enum {
  OPT_MODEL = 256,
  OPT_INPUTS,
  OPT_EXPECT,
  OPT_DTYPE,
  OPT_TOL,
  OPT_BATCH,
  OPT_BACKEND,
  OPT_JSON,
  OPT_ARCH
};

static const struct option check_long_opts[] = {
    {"model", required_argument, 0, OPT_MODEL},     {"inputs", required_argument, 0, OPT_INPUTS},
    {"expect", required_argument, 0, OPT_EXPECT},   {"dtype", required_argument, 0, OPT_DTYPE},
    {"tol", required_argument, 0, OPT_TOL},         {"batch", required_argument, 0, OPT_BATCH},
    {"backend", required_argument, 0, OPT_BACKEND}, {"json", no_argument, 0, OPT_JSON},
    {"arch", required_argument, 0, OPT_ARCH},       {0, 0, 0, 0}};

static const char *check_opt(int c, const char *arg, void *ctx) {
  check_opts *o = ctx;
  switch (c) {
  case OPT_MODEL: o->model = arg; return NULL;
  case OPT_INPUTS: o->inputs = arg; return NULL;
  case OPT_EXPECT: o->expect = arg; return NULL;
  case OPT_BACKEND: return sp_cli_backend(arg, &o->backend);
  case OPT_TOL: return sp_cli_decimal(arg, 0, 1e30, &o->tol);
  case OPT_BATCH: return sp_cli_unsigned(arg, 1, 65536, &o->batch);
  case OPT_DTYPE: return sp_cli_dtype(arg, &o->dtype);
  case OPT_JSON: o->json = true; return NULL;
  case OPT_ARCH: o->arch = arg; return NULL;
  default: return "not an option of check";
  }
}

/* 0 ok, 1 --help shown, 2 bad usage (message printed). */
static int check_parse(int argc, char **argv, check_opts *o) {
  *o = (check_opts){.dtype = SP_F32, .tol = -1, .batch = 16};
  int rc = sp_cli_parse("check", argc, argv, check_long_opts, check_usage, check_opt, o);
  if (rc) return rc;
  if (!o->model || !o->inputs || !o->expect)
    return sp_cli_usage_error("check", "--model, --inputs and --expect are required");
  if (o->tol < 0) o->tol = sp_cli_tolerance(o->dtype);
  return 0;
}

/* Runs every row in batches and returns the largest row error, or -1 on a failed call. */
static double check_run(sp_model *m, const check_opts *o, const float *in, const float *want,
                        size_t rows, float *out) {
  unsigned in_f = sp_model_in_features(m), out_f = sp_model_out_features(m);
  for (size_t r = 0; r < rows; r += o->batch) {
    unsigned n = (unsigned)(rows - r < o->batch ? rows - r : o->batch);
    if (sp_model_infer(m, in + r * in_f, out + r * out_f, n) != SP_OK) return -1;
  }
  double err = 0;
  for (size_t r = 0; r < rows; r++) {
    double e = sp_cli_row_error(out + r * out_f, want + r * out_f, out_f);
    if (!(e <= err)) err = e;
  }
  return err;
}

static void check_report(const check_opts *o, sp_device *dev, const sp_model *m, size_t rows,
                         double err, bool ok) {
  unsigned in_f = sp_model_in_features(m), out_f = sp_model_out_features(m);
  char chain[1024];
  sp_cli_model_chain(m, chain, sizeof(chain));
  if (!o->json) {
    printf("model: %s\n", chain);
    printf("check %s %s on %s: %zu rows %u -> %u, relative error %.3e (tolerance %.1e): %s\n",
           o->model, sp_cli_dtype_name(o->dtype), sp_device_name(dev), rows, in_f, out_f, err,
           o->tol, ok ? "ok" : "FAILED");
    return;
  }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "model", o->model);
  cJSON_AddStringToObject(j, "chain", chain);
  cJSON_AddStringToObject(j, "dtype", sp_cli_dtype_name(o->dtype));
  cJSON_AddStringToObject(j, "backend", sp_device_backend(dev));
  cJSON_AddStringToObject(j, "device", sp_device_name(dev));
  cJSON_AddNumberToObject(j, "rows", (double)rows);
  cJSON_AddNumberToObject(j, "in_features", in_f);
  cJSON_AddNumberToObject(j, "out_features", out_f);
  cJSON_AddNumberToObject(j, "relative_error", err);
  cJSON_AddNumberToObject(j, "tolerance", o->tol);
  cJSON_AddBoolToObject(j, "ok", ok);
  char *text = cJSON_Print(j);
  if (text) printf("%s\n", text);
  free(text);
  cJSON_Delete(j);
}

int sp_cli_check(int argc, char **argv) {
  check_opts o;
  int rc = check_parse(argc, argv, &o);
  if (rc) return rc == 1 ? SP_CLI_OK : SP_CLI_USAGE;
  size_t n_in = 0, n_want = 0;
  float *in = check_read(o.inputs, &n_in), *want = check_read(o.expect, &n_want), *out = NULL;
  sp_device *dev = NULL;
  sp_model *m = NULL;
  sp_device_config cfg = {.backend = o.backend};
  rc = 1;
  if (!in || !want) {
    fprintf(stderr, "streampool check: cannot read %s or %s as float32\n", o.inputs, o.expect);
    goto done;
  }
  if (sp_device_open(&cfg, &dev) || sp_cli_model_open(dev, o.model, o.arch, o.dtype, &m)) {
    fprintf(stderr, "streampool check: %s\n", sp_last_error());
    goto done;
  }
  unsigned in_f = sp_model_in_features(m), out_f = sp_model_out_features(m);
  size_t rows = n_in / in_f;
  if (n_in % in_f || n_want != rows * out_f) {
    fprintf(stderr,
            "streampool check: %zu input and %zu expected floats do not make rows of "
            "%u -> %u features\n",
            n_in, n_want, in_f, out_f);
    goto done;
  }
  out = malloc(sizeof(float) * n_want);
  double err = out ? check_run(m, &o, in, want, rows, out) : -1;
  if (err < 0) {
    fprintf(stderr, "streampool check: inference failed: %s\n", sp_last_error());
    goto done;
  }
  rc = err <= o.tol ? 0 : 1;
  check_report(&o, dev, m, rows, err, rc == 0);
done:
  free(out);
  sp_model_free(m);
  sp_device_close(dev);
  free(in);
  free(want);
  return rc;
}
