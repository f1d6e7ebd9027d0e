/* streampool check: a model's outputs against expected outputs computed elsewhere (PyTorch,
 * numpy), so the loader and the kernels are cross-checked end to end.
 *
 * Inputs and expected outputs are raw little-endian float32 files, row-major: rows = file size /
 * (4 x features). The error is max |y - want| / max |want| over all outputs; above --tol (default
 * 1e-5 for f32, 1e-2 for bf16) the command exits 1. It prints one line per check.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "streampool.h"

typedef struct check_opts {
  const char *backend, *model, *inputs, *expect;
  sp_dtype dtype;
  double tol;
  unsigned batch;
} check_opts;

static void check_usage(FILE *f) {
  fprintf(f, "usage: streampool check --model FILE.safetensors --inputs IN.f32 --expect OUT.f32\n"
             "                        [--dtype f32|bf16] [--tol X] [--batch N] [--backend NAME]\n"
             "  IN/OUT: raw little-endian float32, row-major. Exit 0 when the relative error\n"
             "  (max |y - expected| / max |expected|) is within --tol (default 1e-5 f32, 1e-2 bf16).\n");
}

/* Reads a whole float32 file; *n floats. */
static float *check_read(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  float *buf = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long size = ftell(f);
    if (size > 0 && size % 4 == 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size)) && fread(buf, 1, (size_t)size, f) == (size_t)size)
      *n = (size_t)size / 4;
    else {
      free(buf);
      buf = NULL;
    }
  }
  fclose(f);
  return buf;
}

static int check_parse(int argc, char **argv, check_opts *o) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'}, {"inputs", required_argument, 0, 'i'},
      {"expect", required_argument, 0, 'e'}, {"dtype", required_argument, 0, 'd'},
      {"tol", required_argument, 0, 't'},    {"batch", required_argument, 0, 'b'},
      {"backend", required_argument, 0, 'B'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  *o = (check_opts){.dtype = SP_F32, .tol = -1, .batch = 16};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'm': o->model = optarg; break;
    case 'i': o->inputs = optarg; break;
    case 'e': o->expect = optarg; break;
    case 'B': o->backend = optarg; break;
    case 't': o->tol = atof(optarg); break;
    case 'b': o->batch = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'd':
      if (!strcmp(optarg, "f32")) o->dtype = SP_F32;
      else if (!strcmp(optarg, "bf16")) o->dtype = SP_BF16;
      else return 2;
      break;
    case 'h': check_usage(stdout); return 1;
    default: check_usage(stderr); return 2;
    }
  }
  if (!o->model || !o->inputs || !o->expect || o->batch == 0) {
    check_usage(stderr);
    return 2;
  }
  if (o->tol < 0) o->tol = o->dtype == SP_BF16 ? 1e-2 : 1e-5;
  return 0;
}

/* Runs every row in batches and returns the relative error, or -1 on a failed call. */
static double check_run(sp_model *m, const check_opts *o, const float *in, const float *want,
                        size_t rows, float *out) {
  unsigned in_f = sp_model_in_features(m), out_f = sp_model_out_features(m);
  for (size_t r = 0; r < rows; r += o->batch) {
    unsigned n = (unsigned)(rows - r < o->batch ? rows - r : o->batch);
    if (sp_model_infer(m, in + r * in_f, out + r * out_f, n) != SP_OK) return -1;
  }
  double scale = 1e-30, err = 0;
  for (size_t i = 0; i < rows * out_f; i++) {
    scale = fmax(scale, fabs(want[i]));
    double d = fabs((double)out[i] - want[i]);
    err = isnan(d) ? INFINITY : fmax(err, d);
  }
  return err / scale;
}

int sp_cli_check(int argc, char **argv) {
  check_opts o;
  int rc = check_parse(argc, argv, &o);
  if (rc) return rc == 1 ? 0 : 2;
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
  if (sp_device_open(&cfg, &dev) || sp_model_load(dev, o.model, o.dtype, &m)) {
    fprintf(stderr, "streampool check: %s\n", sp_last_error());
    goto done;
  }
  unsigned in_f = sp_model_in_features(m), out_f = sp_model_out_features(m);
  size_t rows = n_in / in_f;
  if (n_in % in_f || n_want != rows * out_f) {
    fprintf(stderr, "streampool check: %zu input and %zu expected floats do not make rows of "
                    "%u -> %u features\n", n_in, n_want, in_f, out_f);
    goto done;
  }
  out = malloc(sizeof(float) * n_want);
  double err = out ? check_run(m, &o, in, want, rows, out) : -1;
  if (err < 0) {
    fprintf(stderr, "streampool check: inference failed: %s\n", sp_last_error());
    goto done;
  }
  rc = err <= o.tol ? 0 : 1;
  printf("check %s %s on %s: %zu rows %u -> %u, relative error %.3e (tolerance %.1e): %s\n",
         o.model, o.dtype == SP_BF16 ? "bf16" : "f32", sp_device_name(dev), rows, in_f, out_f,
         err, o.tol, rc ? "FAILED" : "ok");
done:
  free(out);
  sp_model_free(m);
  sp_device_close(dev);
  free(in);
  free(want);
  return rc;
}
