/* Conformance: resident forwards (sp_resident_*) give sp_model_forward's results on every backend.
 *
 * Goal: a resident runs the model its description says (every activation, with and without bias,
 * f32, bf16 and f16, widths that are and are not a multiple of 16 bytes, layers wider than one
 * row a warp), takes new in/out pointers on any call, survives its kernel leaving and coming back
 * (CUDA: STREAMPOOL_RESIDENT_IDLE_US=0 makes it leave at every wait, racing the next forward's
 * bell; the launch count shows it did), serializes callers from several threads without mixing
 * their rows, lives beside another resident of another size, and refuses what it cannot run with a
 * message, changing nothing (sp_model_free of its model included). Method: seeded MLPs written as
 * safetensors files with their description, weights, biases and inputs multiples of 2^-12 and 2^-8
 * with at most 8 significant bits, so f32, bf16 and f16 hold them exactly. Each output is checked
 * against a double-precision forward on those values, within 5e-5 (f32) or 4e-2 (16-bit) of the
 * magnitude bound |W|·|x| + |b| carried through the layers, and against sp_model_forward on a
 * device with STREAMPOOL_CUDA_LINEAR=kernel (read by the CUDA backend only): bit for bit on the
 * host always, and on CUDA where the API promises it (every in_features a multiple of 16 bytes of
 * elements, in 16-byte aligned). The first mismatch prints the output index, both values and the
 * bound.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "conformance.h"
#include "tu_safetensors.h"

enum { RS_LAYERS_MAX = 4, RS_ROWS = 6 };

typedef struct rs_net {
  unsigned n_layers, dims[RS_LAYERS_MAX + 1];
  const char *acts[RS_LAYERS_MAX]; /* the description's word after each Linear, "" for none */
  bool bias[RS_LAYERS_MAX];
  float *w[RS_LAYERS_MAX], *b[RS_LAYERS_MAX]; /* b NULL without bias */
} rs_net;

static float rs_value(tu_rng *r, unsigned range, float scale) {
  return (float)((int)tu_rng_below(r, 2 * range + 1) - (int)range) * scale;
}

static void rs_net_make(rs_net *n, uint64_t seed) {
  tu_rng r = {seed};
  for (unsigned l = 0; l < n->n_layers; l++) {
    size_t in = n->dims[l], out = n->dims[l + 1];
    n->w[l] = malloc(sizeof(float) * in * out);
    n->b[l] = n->bias[l] ? malloc(sizeof(float) * out) : NULL;
    assert_non_null(n->w[l]);
    for (size_t i = 0; i < in * out; i++) n->w[l][i] = rs_value(&r, 255, 1.0f / 4096);
    for (size_t i = 0; n->b[l] && i < out; i++) n->b[l][i] = rs_value(&r, 255, 1.0f / 1024);
  }
}

static void rs_net_free(rs_net *n) {
  for (unsigned l = 0; l < n->n_layers; l++) {
    free(n->w[l]);
    free(n->b[l]);
  }
}

/* Writes n with its description to path; 0 on success. */
static int rs_net_write(const rs_net *n, const char *path) {
  tu_st_tensor t[2 * RS_LAYERS_MAX];
  char names[2 * RS_LAYERS_MAX][16], meta[512];
  size_t k = 0, m = (size_t)snprintf(meta, sizeof(meta), "{\"streampool.arch\":\"");
  for (unsigned l = 0; l < n->n_layers; l++) {
    m += (size_t)snprintf(meta + m, sizeof(meta) - m, "%sl%u:linear%s%s%s", l ? " " : "", l,
                          n->bias[l] ? "" : ":nobias", n->acts[l][0] ? " " : "", n->acts[l]);
    uint64_t in = n->dims[l], out = n->dims[l + 1];
    snprintf(names[k], sizeof(names[0]), "l%u.weight", l);
    t[k] = (tu_st_tensor){names[k], "F32", 2, {out, in}, n->w[l], sizeof(float) * in * out};
    k++;
    if (n->bias[l]) {
      snprintf(names[k], sizeof(names[0]), "l%u.bias", l);
      t[k] = (tu_st_tensor){names[k], "F32", 1, {out}, n->b[l], sizeof(float) * out};
      k++;
    }
  }
  snprintf(meta + m, sizeof(meta) - m, "\"}");
  return tu_st_write(path, t, k, meta);
}

static double rs_act(const char *act, double v) {
  if (!strcmp(act, "relu")) return v > 0 ? v : 0;
  if (!strcmp(act, "gelu")) return 0.5 * v * (1 + erf(v / sqrt(2.0)));
  if (!strcmp(act, "gelu_tanh"))
    return 0.5 * v * (1 + tanh(sqrt(2.0 / 3.14159265358979323846) * (v + 0.044715 * v * v * v)));
  if (!strcmp(act, "silu")) return v / (1 + exp(-v));
  if (!strcmp(act, "tanh")) return tanh(v);
  return v;
}

/* y = the forward of x in double; *bound = the largest |W|·|a| + |b| of the last layer. */
static void rs_reference(const rs_net *n, const float *x, double *y, double *bound) {
  unsigned wmax = 0;
  for (unsigned l = 0; l <= n->n_layers; l++) wmax = n->dims[l] > wmax ? n->dims[l] : wmax;
  double *a = calloc(wmax, sizeof(double)), *t = calloc(wmax, sizeof(double));
  double *ba = calloc(wmax, sizeof(double)), *bt = calloc(wmax, sizeof(double));
  assert_true(a && t && ba && bt);
  for (unsigned i = 0; i < n->dims[0]; i++) a[i] = x[i], ba[i] = fabs(x[i]);
  for (unsigned l = 0; l < n->n_layers; l++) {
    unsigned in = n->dims[l], out = n->dims[l + 1];
    for (unsigned o = 0; o < out; o++) {
      double s = n->b[l] ? n->b[l][o] : 0, bs = n->b[l] ? fabs(n->b[l][o]) : 0;
      for (unsigned i = 0; i < in; i++) {
        s += (double)n->w[l][(size_t)o * in + i] * a[i];
        bs += fabs((double)n->w[l][(size_t)o * in + i]) * ba[i];
      }
      t[o] = rs_act(n->acts[l], s);
      bt[o] = 1.2 * bs + 1e-6; /* every activation here is 1.2-Lipschitz */
    }
    memcpy(a, t, sizeof(double) * out);
    memcpy(ba, bt, sizeof(double) * out);
  }
  *bound = 0;
  for (unsigned o = 0; o < n->dims[n->n_layers]; o++) {
    y[o] = a[o];
    if (ba[o] > *bound) *bound = ba[o];
  }
  free(a), free(t), free(ba), free(bt);
}

/* Opens a device of dev's backend with our GEMV forced on CUDA (the host ignores the variable). */
static sp_device *rs_open_kernel_device(sp_device *dev) {
  sp_device_config cfg = {0};
  cfg.backend = sp_device_backend(dev);
  cfg.streams = 2;
  setenv("STREAMPOOL_CUDA_LINEAR", "kernel", 1);
  sp_device *k = NULL;
  sp_status st = sp_device_open(&cfg, &k);
  unsetenv("STREAMPOOL_CUDA_LINEAR");
  SP_CHECK_OK(st);
  return k;
}

static const char *rs_dtype_name(sp_dtype dt) {
  return dt == SP_F32 ? "f32" : dt == SP_BF16 ? "bf16" : "f16";
}

/* Device buffers for RS_ROWS rows of in and out, and one more slot of in offset by 1 float (not
 * 16-byte aligned). */
typedef struct rs_io {
  float *in, *out; /* device */
  size_t in_row, out_row;
} rs_io;

static void rs_io_alloc(sp_device *dev, sp_stream *s, const rs_net *n, rs_io *io) {
  io->in_row = n->dims[0] + 4; /* rows 16-byte aligned for in % 4 == 0 */
  io->out_row = n->dims[n->n_layers];
  SP_CHECK_OK(sp_alloc(dev, sizeof(float) * (io->in_row * (RS_ROWS + 1) + 1), s, (void **)&io->in));
  SP_CHECK_OK(sp_alloc(dev, sizeof(float) * io->out_row * RS_ROWS, s, (void **)&io->out));
}

/* One net on dev in dtype dt: RS_ROWS rows through a resident (rows 0-2 into one out slot, the
 * rest each into its own, row RS_ROWS-1 read from the unaligned in), each checked. */
static void rs_check_net(sp_device *dev, sp_device *kdev, rs_net *n, sp_dtype dt, uint64_t seed) {
  char path[64];
  snprintf(path, sizeof(path), "/tmp/conf_resident_%d.safetensors", (int)getpid());
  rs_net_make(n, seed);
  assert_int_equal(rs_net_write(n, path), 0);
  sp_model *m = NULL, *mk = NULL;
  SP_CHECK_OK(sp_model_load(dev, path, dt, &m));
  SP_CHECK_OK(sp_model_load(kdev, path, dt, &mk));
  unlink(path);
  sp_stream *s, *sk;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  SP_CHECK_OK(sp_stream_current(kdev, &sk));
  rs_io io, iok;
  rs_io_alloc(dev, s, n, &io);
  rs_io_alloc(kdev, sk, n, &iok);
  unsigned in = n->dims[0], outf = n->dims[n->n_layers];
  float *x = calloc((size_t)RS_ROWS * io.in_row, sizeof(float));
  float *got = malloc(sizeof(float) * outf), *want = malloc(sizeof(float) * outf);
  double *ref = malloc(sizeof(double) * outf);
  assert_true(x && got && want && ref);
  tu_rng r = {seed ^ 0x5eed};
  for (size_t i = 0; i < (size_t)RS_ROWS * io.in_row; i++) x[i] = rs_value(&r, 255, 1.0f / 256);
  sp_resident *res = NULL;
  SP_CHECK_OK(sp_resident_open(m, &res));
  bool aligned_widths = true;
  for (unsigned l = 0; l < n->n_layers; l++)
    aligned_widths = aligned_widths && n->dims[l] % (dt == SP_F32 ? 4u : 8u) == 0;
  const bool host = strcmp(sp_device_backend(dev), "host") == 0;
  for (unsigned row = 0; row < RS_ROWS; row++) {
    const bool odd = row + 1 == RS_ROWS; /* in at a 4-byte offset */
    float *din = odd ? io.in + io.in_row * RS_ROWS + 1 : io.in + io.in_row * row;
    float *dout = io.out + io.out_row * (row < 3 ? 0 : row);
    float *kin = iok.in + iok.in_row * row, *kout = iok.out;
    const float *xr = x + io.in_row * row;
    SP_CHECK_OK(sp_memcpy_async(s, din, xr, sizeof(float) * in));
    SP_CHECK_OK(sp_memcpy_async(sk, kin, xr, sizeof(float) * in));
    SP_CHECK_OK(sp_stream_sync(s));
    SP_CHECK_OK(sp_resident_forward(res, din, dout));
    SP_CHECK_OK(sp_model_forward(mk, sk, kin, kout, 1));
    conf_download(s, got, dout, sizeof(float) * outf);
    conf_download(sk, want, kout, sizeof(float) * outf);
    double bound;
    rs_reference(n, xr, ref, &bound);
    const double tol = (dt == SP_F32 ? 5e-5 : 4e-2) * bound;
    const bool bitwise = host || (aligned_widths && !odd);
    for (unsigned o = 0; o < outf; o++) {
      if (!(fabs((double)got[o] - ref[o]) <= tol))
        fail_msg("%s %s row %u out[%u]: resident %.9g, double reference %.9g (bound %g)",
                 sp_device_backend(dev), rs_dtype_name(dt), row, o, (double)got[o], ref[o], tol);
      if (bitwise && memcmp(&got[o], &want[o], sizeof(float)) != 0)
        fail_msg("%s %s row %u out[%u]: resident %.9g, sp_model_forward %.9g (bit for bit)",
                 sp_device_backend(dev), rs_dtype_name(dt), row, o, (double)got[o],
                 (double)want[o]);
    }
  }
  sp_resident_close(res);
  SP_CHECK_OK(sp_free(dev, io.in));
  SP_CHECK_OK(sp_free(dev, io.out));
  SP_CHECK_OK(sp_free(kdev, iok.in));
  SP_CHECK_OK(sp_free(kdev, iok.out));
  sp_model_free(m);
  sp_model_free(mk);
  free(x), free(got), free(want), free(ref);
  rs_net_free(n);
}

static void case_matches_forward(sp_device *dev) {
  sp_device *kdev = rs_open_kernel_device(dev);
  const sp_dtype dts[] = {SP_F32, SP_BF16, SP_F16};
  for (unsigned d = 0; d < 3; d++) {
    rs_net aligned = {3, {64, 128, 96, 16}, {"gelu", "silu", ""}, {true, false, true}, {0}, {0}};
    rs_net odd = {3,  {37, 96, 61, 19}, {"relu", "tanh", "gelu_tanh"}, {true, true, false}, {0},
                  {0}};
    /* 2112 rows: 16 a block on 132 multiprocessors, so each warp computes two */
    rs_net wide = {2, {256, 2112, 24}, {"relu", ""}, {true, true}, {0}, {0}};
    rs_net one = {1, {40, 8}, {"silu"}, {true}, {0}, {0}};
    rs_check_net(dev, kdev, &aligned, dts[d], tu_seed() + d);
    rs_check_net(dev, kdev, &odd, dts[d], tu_seed() + 10 + d);
    rs_check_net(dev, kdev, &wide, dts[d], tu_seed() + 20 + d);
    rs_check_net(dev, kdev, &one, dts[d], tu_seed() + 30 + d);
  }
  SP_CHECK_OK(sp_device_close(kdev));
}

/* ---- leaving and coming back; several callers ---------------------------------------------- */

typedef struct rs_caller {
  sp_resident *res;
  sp_device *dev;
  const float *want; /* [rows][outf]: sp_model_forward's outputs   */
  const float *x;    /* [rows][inf]                                */
  unsigned rows, inf, outf, iters, index;
} rs_caller;

static void *rs_caller_main(void *p) {
  rs_caller *c = p;
  sp_stream *s;
  float *din = NULL, *dout = NULL, *got = malloc(sizeof(float) * c->outf);
  TU_EXPECT_OK(sp_stream_current(c->dev, &s));
  TU_EXPECT_OK(sp_alloc(c->dev, sizeof(float) * c->inf, s, (void **)&din));
  TU_EXPECT_OK(sp_alloc(c->dev, sizeof(float) * c->outf, s, (void **)&dout));
  for (unsigned k = 0; k < c->iters && din && dout && got && tu_failures() == 0; k++) {
    unsigned row = (c->index * 7 + k) % c->rows;
    TU_EXPECT_OK(sp_memcpy_async(s, din, c->x + (size_t)row * c->inf, sizeof(float) * c->inf));
    TU_EXPECT_OK(sp_stream_sync(s));
    TU_EXPECT_OK(sp_resident_forward(c->res, din, dout));
    TU_EXPECT_OK(sp_memcpy_async(s, got, dout, sizeof(float) * c->outf));
    TU_EXPECT_OK(sp_stream_sync(s));
    const float *w = c->want + (size_t)row * c->outf;
    for (unsigned o = 0; o < c->outf; o++)
      if (memcmp(&got[o], &w[o], sizeof(float)) != 0) {
        tu_fail(__FILE__, __LINE__, "caller %u forward %u row %u out[%u]: %.9g, expected %.9g",
                c->index, k, row, o, (double)got[o], (double)w[o]);
        break;
      }
  }
  if (din) TU_EXPECT_OK(sp_free(c->dev, din));
  if (dout) TU_EXPECT_OK(sp_free(c->dev, dout));
  free(got);
  return NULL;
}

/* threads callers share one resident of a seeded model, `iters` forwards each, with
 * STREAMPOOL_RESIDENT_IDLE_US=idle (NULL: unset); every output equals sp_model_forward's (the
 * resident's own first answers are compared with it bit for bit on the host; on CUDA, the
 * expected rows are the resident's when run alone, checked against sp_model_forward within
 * rounding by case_matches_forward). */
static void rs_callers(sp_device *dev, const char *idle, unsigned threads, unsigned iters) {
  enum { ROWS = 8, CALLERS_MAX = 8 };
  const unsigned dims[] = {64, 256, 48};
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_mlp_random(dev, dims, 3, tu_seed(), SP_BF16, &m));
  if (idle) setenv("STREAMPOOL_RESIDENT_IDLE_US", idle, 1);
  sp_resident *res = NULL;
  sp_status st = sp_resident_open(m, &res);
  unsetenv("STREAMPOOL_RESIDENT_IDLE_US");
  SP_CHECK_OK(st);
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  float x[ROWS * 64], want[ROWS * 48], *din, *dout;
  tu_rng r = {tu_seed() ^ 77};
  for (unsigned i = 0; i < ROWS * 64; i++) x[i] = rs_value(&r, 255, 1.0f / 256);
  SP_CHECK_OK(sp_alloc(dev, sizeof(x), s, (void **)&din));
  SP_CHECK_OK(sp_alloc(dev, sizeof(want), s, (void **)&dout));
  SP_CHECK_OK(sp_memcpy_async(s, din, x, sizeof(x)));
  SP_CHECK_OK(sp_model_forward(m, s, din, dout, ROWS)); /* batch ROWS: another kernel, so only */
  float fw[ROWS * 48];                                  /* a tolerance check against it        */
  conf_download(s, fw, dout, sizeof(fw));
  for (unsigned row = 0; row < ROWS; row++) {
    SP_CHECK_OK(sp_resident_forward(res, din + 64 * row, dout + 48 * row));
    if (idle) tu_sleep_us(200); /* let it leave */
  }
  conf_download(s, want, dout, sizeof(want));
  for (unsigned i = 0; i < ROWS * 48; i++)
    if (!(fabsf(want[i] - fw[i]) <= 0.05f * (1 + fabsf(fw[i]))))
      fail_msg("out[%u]: resident %.9g, sp_model_forward at batch %d %.9g", i, (double)want[i],
               (double)fw[i], ROWS);
  rs_caller c[CALLERS_MAX];
  pthread_t th[CALLERS_MAX];
  assert_true(threads <= CALLERS_MAX);
  for (unsigned i = 0; i < threads; i++) {
    c[i] = (rs_caller){res, dev, want, x, ROWS, 64, 48, iters, i};
    assert_int_equal(pthread_create(&th[i], NULL, rs_caller_main, &c[i]), 0);
  }
  for (unsigned i = 0; i < threads; i++) pthread_join(th[i], NULL);
  /* Every forward counted; on CUDA, a launch for each warm-up forward when the kernel leaves
   * between them (idle set), and far fewer launches than forwards when it stays. */
  sp_resident_stats st_ = {0};
  SP_CHECK_OK(sp_resident_stats_get(res, &st_));
  const uint64_t forwards = ROWS + (uint64_t)threads * iters;
  if (st_.forwards != forwards)
    fail_msg("stats: %llu forwards counted, %llu made", (unsigned long long)st_.forwards,
             (unsigned long long)forwards);
  const bool host = strcmp(sp_device_backend(dev), "host") == 0;
  if (host ? st_.launches != 0
           : (st_.launches < 1 || (idle && st_.launches < ROWS) ||
              (!idle && st_.launches > forwards / 4 + 2)))
    fail_msg("%s, idle %s: %llu launches for %llu forwards", sp_device_backend(dev),
             idle ? idle : "default", (unsigned long long)st_.launches,
             (unsigned long long)forwards);
  sp_resident_close(res);
  SP_CHECK_OK(sp_free(dev, din));
  SP_CHECK_OK(sp_free(dev, dout));
  sp_model_free(m);
}

static void case_threads(sp_device *dev) { rs_callers(dev, NULL, 4, (unsigned)tu_scale(400)); }

/* Idle 0: the kernel leaves at every wait, so each forward races its bell against a leaving
 * kernel and most launch it again. */
static void case_leave_and_return(sp_device *dev) {
  rs_callers(dev, "0", 1, (unsigned)tu_scale(300));
  rs_callers(dev, "0", 3, (unsigned)tu_scale(200));
  rs_callers(dev, "50", 2, (unsigned)tu_scale(100));
}

/* ---- two residents at once ---------------------------------------------------------------- */

/* m's output for row x through r, and through sp_model_forward (the same device). */
static void rs_both(sp_device *dev, sp_model *m, sp_resident *r, const float *x, float *got,
                    float *want) {
  unsigned in = sp_model_in_features(m), out = sp_model_out_features(m);
  sp_stream *s;
  float *din, *dout;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  SP_CHECK_OK(sp_alloc(dev, sizeof(float) * in, s, (void **)&din));
  SP_CHECK_OK(sp_alloc(dev, sizeof(float) * out, s, (void **)&dout));
  SP_CHECK_OK(sp_memcpy_async(s, din, x, sizeof(float) * in));
  SP_CHECK_OK(sp_stream_sync(s));
  SP_CHECK_OK(sp_resident_forward(r, din, dout));
  conf_download(s, got, dout, sizeof(float) * out);
  SP_CHECK_OK(sp_model_forward(m, s, din, dout, 1));
  conf_download(s, want, dout, sizeof(float) * out);
  SP_CHECK_OK(sp_free(dev, din));
  SP_CHECK_OK(sp_free(dev, dout));
}

/* A large resident opened first, a small one after: the small one's open must not take from the
 * large one what its (first) launch needs (CUDA: the kernel's shared-memory limit is the
 * function's, shared by both). */
static void case_two_residents(sp_device *dev) {
  const unsigned big[] = {1024, 4096}, small[] = {64, 64};
  const bool host = strcmp(sp_device_backend(dev), "host") == 0;
  sp_model *ma = NULL, *mb = NULL;
  sp_resident *ra = NULL, *rb = NULL;
  SP_CHECK_OK(sp_model_mlp_random(dev, big, 2, tu_seed(), SP_F32, &ma));
  SP_CHECK_OK(sp_model_mlp_random(dev, small, 2, tu_seed() + 1, SP_F32, &mb));
  SP_CHECK_OK(sp_resident_open(ma, &ra));
  SP_CHECK_OK(sp_resident_open(mb, &rb));
  float *x = calloc(1024, sizeof(float)), *got = calloc(4096, sizeof(float));
  float *want = calloc(4096, sizeof(float));
  assert_true(x && got && want);
  tu_rng r = {tu_seed() ^ 3};
  for (unsigned i = 0; i < 1024; i++) x[i] = rs_value(&r, 255, 1.0f / 256);
  for (int round = 0; round < 2; round++) {
    sp_model *m[2] = {mb, ma};
    sp_resident *res[2] = {rb, ra};
    for (int k = 0; k < 2; k++) {
      unsigned out = sp_model_out_features(m[k]);
      rs_both(dev, m[k], res[k], x, got, want);
      for (unsigned o = 0; o < out; o++)
        if (host ? memcmp(&got[o], &want[o], sizeof(float)) != 0
                 : !(fabsf(got[o] - want[o]) <= 1e-4f * (1 + fabsf(want[o]))))
          fail_msg("%s resident %d out[%u]: %.9g, sp_model_forward %.9g", sp_device_backend(dev), k,
                   o, (double)got[o], (double)want[o]);
    }
  }
  sp_resident_close(rb);
  sp_resident_close(ra);
  sp_model_free(ma);
  sp_model_free(mb);
  free(x), free(got), free(want);
}

/* ---- refusals ------------------------------------------------------------------------------ */

static void rs_expect(sp_status got, sp_status want, const char *needle) {
  if (got != want)
    fail_msg("got %s, expected %s: %s", sp_status_str(got), sp_status_str(want), sp_last_error());
  if (!strstr(sp_last_error(), needle))
    fail_msg("message \"%s\" lacks \"%s\"", sp_last_error(), needle);
}

static void case_refusals(sp_device *dev) {
  const unsigned dims[] = {128, 32, 128}; /* 512-byte rows: blocks end where the rows do */
  sp_model *m = NULL;
  sp_resident *res = NULL, *none = NULL;
  SP_CHECK_OK(sp_model_mlp_random(dev, dims, 3, tu_seed(), SP_F32, &m));
  rs_expect(sp_resident_open(NULL, &res), SP_ERR_INVALID_ARGUMENT, "NULL");
  rs_expect(sp_resident_open(m, NULL), SP_ERR_INVALID_ARGUMENT, "NULL");
  setenv("STREAMPOOL_RESIDENT_IDLE_US", "soon", 1);
  rs_expect(sp_resident_open(m, &none), SP_ERR_INVALID_ARGUMENT, "STREAMPOOL_RESIDENT_IDLE_US");
  setenv("STREAMPOOL_RESIDENT_IDLE_US", "", 1);
  rs_expect(sp_resident_open(m, &none), SP_ERR_INVALID_ARGUMENT, "STREAMPOOL_RESIDENT_IDLE_US");
  unsetenv("STREAMPOOL_RESIDENT_IDLE_US");
  assert_null(none);
  SP_CHECK_OK(sp_resident_open(m, &res));
  rs_expect(sp_device_close(dev), SP_ERR_BUSY, "1 resident(s)");
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  float host_in[128] = {0}, host_out[128], *din, *dout;
  SP_CHECK_OK(sp_alloc(dev, sizeof(host_in), s, (void **)&din));
  SP_CHECK_OK(sp_alloc(dev, sizeof(host_out), s, (void **)&dout));
  SP_CHECK_OK(sp_memcpy_async(s, din, host_in, sizeof(host_in)));
  SP_CHECK_OK(sp_stream_sync(s));
  rs_expect(sp_resident_forward(NULL, din, dout), SP_ERR_INVALID_ARGUMENT, "NULL");
  sp_resident_stats stats;
  rs_expect(sp_resident_stats_get(NULL, &stats), SP_ERR_INVALID_ARGUMENT, "NULL");
  rs_expect(sp_resident_stats_get(res, NULL), SP_ERR_INVALID_ARGUMENT, "NULL");
  rs_expect(sp_resident_forward(res, NULL, dout), SP_ERR_INVALID_ARGUMENT, "NULL");
  rs_expect(sp_resident_forward(res, din, NULL), SP_ERR_INVALID_ARGUMENT, "NULL");
  rs_expect(sp_resident_forward(res, host_in, dout), SP_ERR_INVALID_ARGUMENT, "in");
  rs_expect(sp_resident_forward(res, din, host_out), SP_ERR_INVALID_ARGUMENT, "out");
  rs_expect(sp_resident_forward(res, din + 4, dout), SP_ERR_INVALID_ARGUMENT, "in"); /* past end */
  rs_expect(sp_resident_forward(res, din, dout + 1), SP_ERR_INVALID_ARGUMENT, "out");
  SP_CHECK_OK(sp_resident_forward(res, din, dout)); /* the refusals changed nothing */
  sp_model_free(m); /* refused while res is open (logged): m and res still work */
  SP_CHECK_OK(sp_resident_forward(res, din, dout));
  sp_resident_close(res);
  sp_resident_close(NULL);
  SP_CHECK_OK(sp_free(dev, din));
  SP_CHECK_OK(sp_free(dev, dout));
  sp_model_free(m);

  /* A LayerNorm, and more layers than a resident runs. */
  sp_model_desc *desc = NULL;
  SP_CHECK_OK(sp_model_desc_parse("a:linear gelu a_n:layernorm b:linear", &desc));
  rs_net n = {2, {8, 16, 4}, {"", ""}, {true, true}, {0}, {0}};
  rs_net_make(&n, tu_seed());
  char path[64];
  snprintf(path, sizeof(path), "/tmp/conf_resident_ln_%d.safetensors", (int)getpid());
  float g[16], beta[16];
  for (unsigned i = 0; i < 16; i++) g[i] = 1, beta[i] = 0;
  tu_st_tensor t[] = {{"a.weight", "F32", 2, {16, 8}, n.w[0], sizeof(float) * 128},
                      {"a.bias", "F32", 1, {16}, n.b[0], sizeof(float) * 16},
                      {"a_n.weight", "F32", 1, {16}, g, sizeof(g)},
                      {"a_n.bias", "F32", 1, {16}, beta, sizeof(beta)},
                      {"b.weight", "F32", 2, {4, 16}, n.w[1], sizeof(float) * 64},
                      {"b.bias", "F32", 1, {4}, n.b[1], sizeof(float) * 4}};
  assert_int_equal(tu_st_write(path, t, 6, NULL), 0);
  SP_CHECK_OK(sp_model_load_desc(dev, path, desc, SP_F32, &m));
  unlink(path);
  rs_expect(sp_resident_open(m, &none), SP_ERR_UNSUPPORTED, "LayerNorm");
  sp_model_free(m);
  sp_model_desc_free(desc);
  rs_net_free(&n);
  unsigned deep[18];
  for (unsigned i = 0; i < 18; i++) deep[i] = 8;
  SP_CHECK_OK(sp_model_mlp_random(dev, deep, 18, tu_seed(), SP_F32, &m));
  rs_expect(sp_resident_open(m, &none), SP_ERR_UNSUPPORTED, "17 layers");
  sp_model_free(m);
  if (!strcmp(sp_device_backend(dev), "cuda")) { /* 4096 x 8192 f32 is 128 MB of weights */
    const unsigned big[] = {4096, 8192};
    SP_CHECK_OK(sp_model_mlp_random(dev, big, 2, tu_seed(), SP_F32, &m));
    rs_expect(sp_resident_open(m, &none), SP_ERR_UNSUPPORTED, "shared memory");
    sp_model_free(m);
  }
  assert_null(none);
}

int main(void) {
  static const conf_case cases[] = {
      {"matches_forward", case_matches_forward},
      {"threads", case_threads},
      {"leave_and_return", case_leave_and_return},
      {"two_residents", case_two_residents},
      {"refusals", case_refusals},
  };
  return conf_main("conf_resident", cases, sizeof(cases) / sizeof(cases[0]));
}
