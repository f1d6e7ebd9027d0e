/* `streampool embed --model DIR [--dtype f32|bf16|f16] [--backend B] [--input FILE|-]
 * [--output FILE.jsonl|FILE.npy|-]`: sentence embeddings of text lines with a BERT-family
 * encoder folder (sp_encoder_load). One line in (UTF-8; a trailing CR is dropped), one embedding
 * out: a JSON array of floats per line (JSONL, "-" is stdout), or one [lines, dim] float32 .npy.
 * Lines are read and embedded EMBED_CHUNK at a time, so input of any length streams through.
 * Exit status 0, 1 on a failure (the model refused, a line not valid UTF-8, I/O), 2 bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "streampool.h"

enum { EMBED_CHUNK = 256, NPY_HEADER = 128 };

typedef struct embed_args {
  const char *model, *backend, *input, *output;
  sp_dtype dtype;
} embed_args;

static void embed_usage(FILE *f) {
  fprintf(f,
          "usage: streampool embed --model DIR [--dtype f32|bf16|f16]\n"
          "                        [--backend host|cuda|auto]\n"
          "                        [--input FILE|-] [--output FILE.jsonl|FILE.npy|-]\n"
          "  sentence embeddings with a Hugging Face BERT folder (config.json, model.safetensors,\n"
          "  vocab.txt or tokenizer.json, sentence-transformers' modules): one line of UTF-8\n"
          "  text in, one embedding out, as JSON arrays one a line (default: stdout) or as one\n"
          "  float32 .npy of shape [lines, dim]. --input defaults to stdin.\n");
}

enum { OPT_MODEL = 256, OPT_DTYPE, OPT_BACKEND, OPT_INPUT, OPT_OUTPUT };

static const struct option embed_opts[] = {
    {"model", required_argument, 0, OPT_MODEL},     {"dtype", required_argument, 0, OPT_DTYPE},
    {"backend", required_argument, 0, OPT_BACKEND}, {"input", required_argument, 0, OPT_INPUT},
    {"output", required_argument, 0, OPT_OUTPUT},   {0, 0, 0, 0}};

static int embed_is_npy(const char *path) {
  size_t n = strlen(path);
  return n > 4 && !strcmp(path + n - 4, ".npy");
}

static const char *embed_opt(int c, const char *arg, void *ctx) {
  embed_args *o = ctx;
  switch (c) {
  case OPT_MODEL: o->model = arg; return *arg ? NULL : "is empty";
  case OPT_DTYPE: return sp_cli_dtype(arg, &o->dtype);
  case OPT_BACKEND: return sp_cli_backend(arg, &o->backend);
  case OPT_INPUT: o->input = arg; return *arg ? NULL : "is empty";
  case OPT_OUTPUT: {
    size_t n = strlen(arg);
    o->output = arg;
    if (!strcmp(arg, "-") || embed_is_npy(arg) || (n > 6 && !strcmp(arg + n - 6, ".jsonl")))
      return NULL;
    return "is not '-', a .jsonl or a .npy file name";
  }
  default: return "not an option of embed";
  }
}

/* The .npy header for rows x dim float32, padded with spaces to NPY_HEADER bytes. */
static int embed_npy_header(FILE *f, size_t rows, unsigned dim) {
  char h[NPY_HEADER];
  memset(h, ' ', sizeof(h));
  memcpy(h, "\x93NUMPY\x01\x00", 8);
  h[8] = (char)(NPY_HEADER - 10);
  h[9] = 0;
  int n = snprintf(h + 10, NPY_HEADER - 10,
                   "{'descr': '<f4', 'fortran_order': False, "
                   "'shape': (%zu, %u), }",
                   rows, dim);
  if (n < 0 || n >= NPY_HEADER - 11) return -1;
  h[10 + n] = ' ';
  h[NPY_HEADER - 1] = '\n';
  return fseek(f, 0, SEEK_SET) == 0 && fwrite(h, 1, sizeof(h), f) == sizeof(h) ? 0 : -1;
}

static int embed_write(FILE *f, int npy, const float *v, size_t rows, unsigned dim) {
  if (npy) return fwrite(v, sizeof(float), rows * dim, f) == rows * dim ? 0 : -1;
  for (size_t r = 0; r < rows; r++) {
    fputc('[', f);
    for (unsigned i = 0; i < dim; i++) fprintf(f, i ? ", %.9g" : "%.9g", (double)v[r * dim + i]);
    if (fputs("]\n", f) < 0) return -1;
  }
  return 0;
}

typedef struct embed_run {
  sp_encoder *enc;
  FILE *in, *out;
  int npy;
  char *lines[EMBED_CHUNK];
  size_t caps[EMBED_CHUNK];
  float *vecs;
  size_t total;
} embed_run;

/* Reads up to EMBED_CHUNK lines into *n (0 at the end); -1 when a line holds a NUL byte (the
 * text would silently end there), with a message. */
static int embed_read(embed_run *r, size_t *n) {
  *n = 0;
  while (*n < EMBED_CHUNK) {
    ssize_t len = getline(&r->lines[*n], &r->caps[*n], r->in);
    if (len < 0) break;
    if (memchr(r->lines[*n], 0, (size_t)len)) {
      fprintf(stderr, "streampool embed: line %zu holds a NUL byte: not a line of text\n",
              r->total + *n + 1);
      return -1;
    }
    if (len && r->lines[*n][len - 1] == '\n') r->lines[*n][--len] = 0;
    if (len && r->lines[*n][len - 1] == '\r') r->lines[*n][--len] = 0;
    (*n)++;
  }
  return 0;
}

static int embed_loop(embed_run *r, unsigned dim) {
  size_t n;
  for (;;) {
    if (embed_read(r, &n) != 0) return SP_CLI_FAILED;
    if (n == 0) break;
    if (sp_encoder_embed(r->enc, (const char *const *)r->lines, n, r->vecs) != SP_OK) {
      fprintf(stderr, "streampool embed: lines %zu..%zu: %s\n", r->total + 1, r->total + n,
              sp_last_error());
      return SP_CLI_FAILED;
    }
    if (embed_write(r->out, r->npy, r->vecs, n, dim) != 0) {
      fprintf(stderr, "streampool embed: writing the output failed\n");
      return SP_CLI_FAILED;
    }
    r->total += n;
  }
  if (ferror(r->in)) {
    fprintf(stderr, "streampool embed: reading the input failed\n");
    return SP_CLI_FAILED;
  }
  if (r->npy && embed_npy_header(r->out, r->total, dim) != 0) {
    fprintf(stderr, "streampool embed: writing the .npy header failed\n");
    return SP_CLI_FAILED;
  }
  return SP_CLI_OK;
}

static int embed_files(embed_run *r, const embed_args *o, unsigned dim) {
  r->in = !o->input || !strcmp(o->input, "-") ? stdin : fopen(o->input, "r");
  if (!r->in) {
    fprintf(stderr, "streampool embed: cannot open --input %s\n", o->input);
    return SP_CLI_FAILED;
  }
  int to_stdout = !o->output || !strcmp(o->output, "-");
  r->out = to_stdout ? stdout : fopen(o->output, "wb");
  int rc = SP_CLI_FAILED;
  if (!r->out) {
    fprintf(stderr, "streampool embed: cannot create --output %s\n", o->output);
    goto close_in;
  }
  r->npy = !to_stdout && embed_is_npy(o->output);
  if (r->npy && embed_npy_header(r->out, 0, dim) != 0) {
    fprintf(stderr, "streampool embed: writing %s failed\n", o->output);
    goto close_out;
  }
  rc = embed_loop(r, dim);
close_out:
  if (!to_stdout && fclose(r->out) != 0 && rc == SP_CLI_OK) {
    fprintf(stderr, "streampool embed: closing %s failed\n", o->output);
    rc = SP_CLI_FAILED;
  }
  if (to_stdout && fflush(stdout) != 0) rc = SP_CLI_FAILED;
close_in:
  if (r->in != stdin) fclose(r->in);
  return rc;
}

int sp_cli_embed(int argc, char **argv) {
  embed_args o = {.dtype = SP_F32};
  int p = sp_cli_parse("embed", argc, argv, embed_opts, embed_usage, embed_opt, &o);
  if (p) return p == 1 ? SP_CLI_OK : SP_CLI_USAGE;
  if (!o.model) return sp_cli_usage_error("embed", "--model DIR is required");
  sp_device_config cfg = {.backend = o.backend};
  sp_device *dev = NULL;
  if (sp_device_open(&cfg, &dev) != SP_OK) {
    fprintf(stderr, "streampool embed: cannot open a device: %s\n", sp_last_error());
    return SP_CLI_FAILED;
  }
  embed_run r = {0};
  int rc = SP_CLI_FAILED;
  if (sp_encoder_load(dev, o.model, o.dtype, &r.enc) != SP_OK) {
    fprintf(stderr, "streampool embed: %s\n", sp_last_error());
    goto close_dev;
  }
  unsigned dim = sp_encoder_dim(r.enc);
  r.vecs = malloc((size_t)EMBED_CHUNK * dim * sizeof(float));
  if (!r.vecs) fprintf(stderr, "streampool embed: out of memory\n");
  else rc = embed_files(&r, &o, dim);
  for (size_t i = 0; i < EMBED_CHUNK; i++) free(r.lines[i]);
  free(r.vecs);
  sp_encoder_free(r.enc);
close_dev:
  sp_device_close(dev);
  return rc;
}
