/* Conformance: model forward passes (linear + bias + ReLU) match a double-precision reference on
 * every backend, in f32 and bf16.
 *
 * Goal: the backend's linear op uses the PyTorch layout (y = x·wᵀ + b, w [out, in]), fuses bias
 * and ReLU correctly, keeps f32 exact to f32 accumulation (no TF32) and bf16 within bf16
 * rounding, for odd shapes and batch sizes, through sp_model_load, sp_model_infer and
 * sp_model_forward, also with several threads running one model at once.
 * Method: a seeded MLP is written as a safetensors file (PyTorch state-dict names "net.0",
 * "net.2", "net.4") in a temporary directory and loaded; outputs are compared with a reference in
 * double computed on the same (for bf16: bf16-rounded) weights and inputs. The tolerance scales
 * with the magnitude bound |W|·|x| + |b| propagated through the layers (f32: 5e-5 of it, bf16:
 * 4e-2), far below what a transposed weight, a lost bias or a missing ReLU produces. The first
 * mismatch prints the row, column, both values and the bound. On CUDA the file checks run again
 * with cuBLASLt and with our GEMV kernel forced (tests/unit/internal/cuda_linear.c checks the two
 * on many more shapes, alignments and batches).
 */
#include <math.h>
#include <stdint.h>

#include "conformance.h"

enum { MM_LAYERS = 3, MM_MAX_BATCH = 33 };
static const unsigned mm_dims[MM_LAYERS + 1] = {37, 96, 61, 19};

typedef struct mm_net {
  float *w[MM_LAYERS], *b[MM_LAYERS]; /* as written to the file (f32 values) */
} mm_net;

static float bf16_round(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return f;
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  memcpy(&f, &u, sizeof(f));
  return f;
}

static uint16_t bf16_bits(float f) {
  uint32_t u;
  f = bf16_round(f);
  memcpy(&u, &f, sizeof(u));
  return (uint16_t)(u >> 16);
}

static float rng_uniform(tu_rng *r, float lo, float hi) {
  return lo + (hi - lo) * (float)((double)(tu_rng_next(r) >> 11) / 9007199254740992.0);
}

/* Weights uniform in +-1/sqrt(in); biases larger (+-0.5) so the bias path matters. With
 * file_bf16 the values are pre-rounded to bf16, as a BF16 file would hold them. */
static void mm_net_make(mm_net *n, uint64_t seed, int file_bf16) {
  tu_rng r = {seed};
  for (unsigned l = 0; l < MM_LAYERS; l++) {
    unsigned in = mm_dims[l], out = mm_dims[l + 1];
    float k = 1.0f / sqrtf((float)in);
    n->w[l] = malloc(sizeof(float) * in * out);
    n->b[l] = malloc(sizeof(float) * out);
    assert_non_null(n->w[l]);
    assert_non_null(n->b[l]);
    for (size_t i = 0; i < (size_t)in * out; i++) {
      float v = rng_uniform(&r, -k, k);
      n->w[l][i] = file_bf16 ? bf16_round(v) : v;
    }
    for (unsigned i = 0; i < out; i++) {
      float v = rng_uniform(&r, -0.5f, 0.5f);
      n->b[l][i] = file_bf16 ? bf16_round(v) : v;
    }
  }
}

static void mm_net_free(mm_net *n) {
  for (unsigned l = 0; l < MM_LAYERS; l++) {
    free(n->w[l]);
    free(n->b[l]);
  }
}

static void put_tensor(FILE *f, const float *v, size_t n, int bf16) {
  for (size_t i = 0; i < n; i++) {
    if (bf16) {
      uint16_t b = bf16_bits(v[i]);
      unsigned char le[2] = {(unsigned char)(b & 0xff), (unsigned char)(b >> 8)};
      fwrite(le, 1, 2, f);
    } else {
      uint32_t u;
      memcpy(&u, &v[i], 4);
      unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                             (unsigned char)(u >> 24)};
      fwrite(le, 1, 4, f);
    }
  }
}

/* Writes n as a safetensors file: 8-byte little-endian header length, JSON header padded with
 * spaces to 8 bytes, then the tensors back to back. */
static void mm_write_safetensors(const char *path, const mm_net *n, int bf16) {
  char header[2048];
  size_t off = 0, es = bf16 ? 2 : 4;
  int len = snprintf(header, sizeof(header),
                     "{\"__metadata__\":{\"format\":\"pt\","
                     "\"streampool.arch\":\"");
  for (unsigned l = 0; l < MM_LAYERS; l++) /* nn.Sequential(Linear, ReLU, ..., Linear) */
    len += snprintf(header + len, sizeof(header) - (size_t)len, "%snet.%u:linear%s", l ? " " : "",
                    2 * l, l + 1 < MM_LAYERS ? " relu" : "");
  len += snprintf(header + len, sizeof(header) - (size_t)len, "\"}");
  for (unsigned l = 0; l < MM_LAYERS; l++) {
    unsigned in = mm_dims[l], out = mm_dims[l + 1];
    size_t wb = (size_t)in * out * es, bb = (size_t)out * es;
    len += snprintf(
        header + len, sizeof(header) - (size_t)len,
        ",\"net.%u.weight\":{\"dtype\":\"%s\",\"shape\":[%u,%u],\"data_offsets\":[%zu,%zu]}"
        ",\"net.%u.bias\":{\"dtype\":\"%s\",\"shape\":[%u],\"data_offsets\":[%zu,%zu]}",
        2 * l, bf16 ? "BF16" : "F32", out, in, off, off + wb, 2 * l, bf16 ? "BF16" : "F32", out,
        off + wb, off + wb + bb);
    off += wb + bb;
  }
  len += snprintf(header + len, sizeof(header) - (size_t)len, "}");
  while (len % 8) header[len++] = ' ';
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  uint64_t hl = (uint64_t)len;
  unsigned char le[8];
  for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hl >> (8 * i));
  fwrite(le, 1, 8, f);
  fwrite(header, 1, (size_t)len, f);
  for (unsigned l = 0; l < MM_LAYERS; l++) {
    put_tensor(f, n->w[l], (size_t)mm_dims[l] * mm_dims[l + 1], bf16);
    put_tensor(f, n->b[l], mm_dims[l + 1], bf16);
  }
  assert_int_equal(fclose(f), 0);
}

/* Reference rows: y (double) and the magnitude bound; rounding to bf16 where the model does. */
static void mm_reference(const mm_net *n, int bf16, const float *x, unsigned batch, double *y,
                         double *mag) {
  enum { W = 128 };
  for (unsigned r = 0; r < batch; r++) {
    double a[W], am[W], t[W], tm[W];
    for (unsigned i = 0; i < mm_dims[0]; i++) {
      float v = x[(size_t)r * mm_dims[0] + i];
      a[i] = bf16 ? bf16_round(v) : v;
      am[i] = fabs(a[i]);
    }
    for (unsigned l = 0; l < MM_LAYERS; l++) {
      unsigned in = mm_dims[l], out = mm_dims[l + 1];
      for (unsigned o = 0; o < out; o++) {
        double bv = bf16 ? bf16_round(n->b[l][o]) : n->b[l][o];
        double s = bv, sm = fabs(bv);
        for (unsigned i = 0; i < in; i++) {
          float wf = n->w[l][(size_t)o * in + i];
          double wv = bf16 ? bf16_round(wf) : wf;
          s += wv * a[i];
          sm += fabs(wv) * am[i];
        }
        if (l + 1 < MM_LAYERS && s < 0) s = 0;
        t[o] = s;
        tm[o] = sm;
      }
      memcpy(a, t, sizeof(double) * out);
      memcpy(am, tm, sizeof(double) * out);
    }
    for (unsigned o = 0; o < mm_dims[MM_LAYERS]; o++) {
      y[(size_t)r * mm_dims[MM_LAYERS] + o] = a[o];
      mag[(size_t)r * mm_dims[MM_LAYERS] + o] = am[o];
    }
  }
}

static void mm_compare(const char *what, const float *got, const double *want, const double *mag,
                       unsigned batch, double tol) {
  unsigned out = mm_dims[MM_LAYERS];
  for (unsigned r = 0; r < batch; r++)
    for (unsigned o = 0; o < out; o++) {
      size_t i = (size_t)r * out + o;
      double bound = tol * mag[i] + 1e-30;
      if (!(fabs((double)got[i] - want[i]) <= bound))
        fail_msg("%s batch %u row %u col %u: got %.9g, want %.9g (|diff| %.3g > bound %.3g)", what,
                 batch, r, o, (double)got[i], want[i], fabs((double)got[i] - want[i]), bound);
    }
}

static void mm_inputs(float *x, size_t n, uint64_t seed) {
  tu_rng r = {seed};
  for (size_t i = 0; i < n; i++) x[i] = rng_uniform(&r, -2.0f, 2.0f);
}

/* Writes the file, loads it as dt, checks infer at several batch sizes. */
static void mm_check_file(sp_device *dev, int file_bf16, sp_dtype dt) {
  mm_net n;
  mm_net_make(&n, tu_seed() ^ 0xC0FFEEu, file_bf16);
  char dir[] = "/tmp/sp_conf_matmul_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof(path), "%s/mlp.safetensors", dir);
  mm_write_safetensors(path, &n, file_bf16);
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_load(dev, path, dt, &m));
  remove(path);
  rmdir(dir);
  assert_int_equal(sp_model_in_features(m), mm_dims[0]);
  assert_int_equal(sp_model_out_features(m), mm_dims[MM_LAYERS]);
  int ref_bf16 = dt == SP_BF16;
  double tol = ref_bf16 ? 4e-2 : 5e-5;
  static const unsigned batches[] = {1, 2, 3, 8, 17, MM_MAX_BATCH};
  float *x = malloc(sizeof(float) * MM_MAX_BATCH * mm_dims[0]);
  float *y = malloc(sizeof(float) * MM_MAX_BATCH * mm_dims[MM_LAYERS]);
  double *want = malloc(sizeof(double) * MM_MAX_BATCH * mm_dims[MM_LAYERS]);
  double *mag = malloc(sizeof(double) * MM_MAX_BATCH * mm_dims[MM_LAYERS]);
  assert_true(x && y && want && mag);
  for (size_t k = 0; k < sizeof(batches) / sizeof(batches[0]); k++) {
    unsigned b = batches[k];
    mm_inputs(x, (size_t)b * mm_dims[0], tu_seed() + k);
    mm_reference(&n, ref_bf16, x, b, want, mag);
    SP_CHECK_OK(sp_model_infer(m, x, y, b));
    char what[64];
    snprintf(what, sizeof(what), "%s file as %s", file_bf16 ? "BF16" : "F32",
             dt == SP_BF16 ? "bf16" : "f32");
    mm_compare(what, y, want, mag, b, tol);
    SP_CHECK_OK(sp_model_infer(m, x, y, b)); /* again: cached plans give the same answer */
    mm_compare(what, y, want, mag, b, tol);
  }
  free(x);
  free(y);
  free(want);
  free(mag);
  sp_model_free(m);
  mm_net_free(&n);
}

static void f32_file_f32_model(sp_device *dev) { mm_check_file(dev, 0, SP_F32); }
static void f32_file_bf16_model(sp_device *dev) { mm_check_file(dev, 0, SP_BF16); }
static void bf16_file_f32_model(sp_device *dev) { mm_check_file(dev, 1, SP_F32); }

/* sp_model_forward with device buffers on explicit streams, several threads, one model. */
typedef struct fwd_arg {
  sp_model *m;
  const mm_net *n;
  int bf16;
  unsigned id, rounds;
} fwd_arg;

static void *fwd_worker(void *v) {
  fwd_arg *a = v;
  sp_device *dev = sp_model_device(a->m);
  sp_stream *s = NULL;
  TU_EXPECT_OK(sp_stream_current(dev, &s));
  unsigned in = mm_dims[0], out = mm_dims[MM_LAYERS], b = 5 + a->id;
  float x[16 * 37], y[16 * 19];
  double want[16 * 19], mag[16 * 19];
  float *dx = NULL, *dy = NULL;
  TU_EXPECT_OK(sp_alloc(dev, sizeof(float) * b * in, s, (void **)&dx));
  TU_EXPECT_OK(sp_alloc(dev, sizeof(float) * b * out, s, (void **)&dy));
  if (!dx || !dy) return NULL;
  double tol = a->bf16 ? 4e-2 : 5e-5;
  for (unsigned r = 0; r < a->rounds; r++) {
    mm_inputs(x, (size_t)b * in, tu_seed() * 1000 + a->id * 100 + r);
    mm_reference(a->n, a->bf16, x, b, want, mag);
    TU_EXPECT_OK(sp_memcpy_async(s, dx, x, sizeof(float) * b * in));
    TU_EXPECT_OK(sp_model_forward(a->m, s, dx, dy, b));
    TU_EXPECT_OK(sp_memcpy_async(s, y, dy, sizeof(float) * b * out));
    TU_EXPECT_OK(sp_stream_sync(s));
    for (size_t i = 0; i < (size_t)b * out; i++) {
      double d = fabs((double)y[i] - want[i]);
      TU_EXPECT(d <= tol * mag[i], "thread %u round %u elem %zu: got %.9g want %.9g (bound %.3g)",
                a->id, r, i, (double)y[i], want[i], tol * mag[i]);
    }
  }
  TU_EXPECT_OK(sp_free(dev, dx));
  TU_EXPECT_OK(sp_free(dev, dy));
  return NULL;
}

static void threads_forward(sp_device *dev) {
  for (int bf = 0; bf < 2; bf++) {
    mm_net n;
    mm_net_make(&n, tu_seed() ^ 0xBEEFu, 0);
    char dir[] = "/tmp/sp_conf_matmul_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/mlp.safetensors", dir);
    mm_write_safetensors(path, &n, 0);
    sp_model *m = NULL;
    SP_CHECK_OK(sp_model_load(dev, path, bf ? SP_BF16 : SP_F32, &m));
    remove(path);
    rmdir(dir);
    enum { T = 4 };
    pthread_t th[T];
    fwd_arg args[T];
    for (unsigned i = 0; i < T; i++) {
      args[i] = (fwd_arg){m, &n, bf, i, (unsigned)tu_scale(20)};
      assert_int_equal(pthread_create(&th[i], NULL, fwd_worker, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    sp_model_free(m);
    mm_net_free(&n);
  }
}

/* On CUDA, the file checks again with each linear implementation forced (STREAMPOOL_CUDA_LINEAR
 * read at device open): cuBLASLt only, then our GEMV kernel only; the plain cases above run the
 * default, the timed choice. Elsewhere there is one implementation: nothing to force. */
static void cuda_forced_linear(sp_device *dev) {
  if (!conf_is_cuda(dev)) return;
  static const char *const modes[] = {"cublaslt", "kernel"};
  for (size_t i = 0; i < 2; i++) {
    setenv("STREAMPOOL_CUDA_LINEAR", modes[i], 1);
    sp_device_config cfg = {.backend = "cuda", .streams = CONF_STREAMS};
    sp_device *d = NULL;
    sp_status st = sp_device_open(&cfg, &d);
    unsetenv("STREAMPOOL_CUDA_LINEAR");
    SP_CHECK_OK(st);
    mm_check_file(d, 0, SP_F32);
    mm_check_file(d, 0, SP_BF16);
    mm_check_file(d, 1, SP_F32);
    sp_device_close(d);
  }
}

int main(void) {
  static const conf_case cases[] = {
      {"f32_file_f32_model", f32_file_f32_model},   {"f32_file_bf16_model", f32_file_bf16_model},
      {"bf16_file_f32_model", bf16_file_f32_model}, {"threads_forward", threads_forward},
      {"cuda_forced_linear", cuda_forced_linear},
  };
  return conf_main("conf_matmul", cases, sizeof(cases) / sizeof(cases[0]));
}
