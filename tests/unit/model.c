/* Goal: the MLP computes what its weights say, on any stream, at any batch size, in f32, bf16 and
 * f16; sp_model_forward leaves no allocator block behind beyond the workspace a captured forward
 * graph keeps for its buffers (taken by the first call, counted in sp_memory_stats); seeded models
 * are reproducible; bad arguments are refused without side effects. Method: a model with known
 * weights is written to a safetensors file and loaded; outputs of sp_model_infer and
 * sp_model_forward (device buffers from sp_alloc) are compared with a double-precision forward on
 * the host: relative error (max |y - ref| / max |ref| per row) <= 1e-5 for f32, <= 2e-2 for bf16
 * and <= 4e-3 for f16 (an f16 forward that rounded like bf16 would fail it). Batches of 1, 3 and 37
 * rows, 4 threads at once.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tu_mlp.h"

enum { IN = 24, H1 = 40, H2 = 33, OUT = 10, NL = 3, MAXB = 37 };
static const unsigned dims[NL + 1] = {IN, H1, H2, OUT};

static sp_device *dev;
static tu_mlp mlp; /* the known weights and their double-precision forward */
static char path[64];
static sp_model *models[3]; /* by dtype: SP_F32, SP_BF16, SP_F16 */
static const double tols[3] = {1e-5, 2e-2, 4e-3};
static const char *const names[3] = {"f32", "bf16", "f16"};
#define m_f32 models[SP_F32]

static double row_err(const float *y, const double *want) {
  double scale = 1e-6, e = 0;
  for (unsigned o = 0; o < OUT; o++) scale = fmax(scale, fabs(want[o]));
  for (unsigned o = 0; o < OUT; o++) e = fmax(e, fabs(y[o] - want[o]));
  return e / scale;
}

static void fill_inputs(tu_rng *rng, float *x, unsigned rows) {
  for (unsigned i = 0; i < rows * IN; i++)
    x[i] = (float)((double)tu_rng_below(rng, 4001) / 1000.0 - 2.0);
}

static int setup(void **state) {
  (void)state;
  dev = tu_open_host(8, SP_STREAMS_ROUND_ROBIN);
  tu_mlp_seeded(&mlp, dims, NL, tu_seed());
  snprintf(path, sizeof(path), "/tmp/sp_model_%d.safetensors", (int)getpid());
  if (tu_mlp_write(&mlp, path)) return -1;
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++) {
    if (sp_model_load(dev, path, (sp_dtype)dt, &models[dt])) {
      fprintf(stderr, "%s load failed: %s\n", names[dt], sp_last_error());
      return -1;
    }
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++) sp_model_free(models[dt]);
  sp_device_close(dev);
  unlink(path);
  return 0;
}

static void check_rows(const char *what, const float *x, const float *y, unsigned rows,
                       double tol) {
  for (unsigned r = 0; r < rows; r++) {
    double want[OUT];
    tu_mlp_reference(&mlp, x + r * IN, want);
    double e = row_err(y + r * OUT, want);
    if (!(e <= tol))
      fail_msg("%s row %u/%u: relative error %.3g > %.1g (out[0] got %.8g, reference %.8g)", what,
               r, rows, e, tol, (double)y[r * OUT], want[0]);
  }
}

static void test_infer_matches_reference(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() + 11};
  static const unsigned batches[] = {1, 3, MAXB};
  float x[MAXB * IN], y[MAXB * OUT];
  for (unsigned i = 0; i < 3; i++) {
    fill_inputs(&rng, x, batches[i]);
    for (unsigned dt = SP_F32; dt <= SP_F16; dt++) {
      char what[32];
      snprintf(what, sizeof(what), "%s infer", names[dt]);
      assert_int_equal(sp_model_dtype(models[dt]), dt);
      SP_CHECK_OK(sp_model_infer(models[dt], x, y, batches[i]));
      check_rows(what, x, y, batches[i], tols[dt]);
    }
  }
}

/* Device buffers, an explicit non-default stream, and no leaked workspace: once the first call per
 * model has made its forward plan (graphs on), further calls allocate nothing. */
static void test_forward_on_stream(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() + 12};
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  float x[MAXB * IN], y[MAXB * OUT];
  fill_inputs(&rng, x, MAXB);
  void *din, *dout;
  sp_memory_stats before, after;
  SP_CHECK_OK(sp_alloc(dev, sizeof(x), s, &din));
  SP_CHECK_OK(sp_alloc(dev, sizeof(y), s, &dout));
  SP_CHECK_OK(sp_memcpy_async(s, din, x, sizeof(x)));
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++)
    SP_CHECK_OK(sp_model_forward(models[dt], s, din, dout, MAXB));
  SP_CHECK_OK(sp_stream_sync(s));
  SP_CHECK_OK(sp_memory_stats_get(dev, &before));
  for (int rep = 0; rep < 4; rep++) { /* f32, bf16, f16, f32 */
    unsigned dt = (unsigned)rep % 3;
    char what[32];
    snprintf(what, sizeof(what), "%s forward", names[dt]);
    SP_CHECK_OK(sp_model_forward(models[dt], s, din, dout, MAXB));
    SP_CHECK_OK(sp_memcpy_async(s, y, dout, sizeof(y)));
    SP_CHECK_OK(sp_stream_sync(s));
    check_rows(what, x, y, MAXB, tols[dt]);
  }
  SP_CHECK_OK(sp_memory_stats_get(dev, &after));
  if (after.allocated_bytes != before.allocated_bytes)
    fail_msg("forward left blocks behind: allocated %zu bytes before, %zu after",
             before.allocated_bytes, after.allocated_bytes);
  SP_CHECK_OK(sp_free(dev, din));
  SP_CHECK_OK(sp_free(dev, dout));
  SP_CHECK_OK(sp_stream_sync(s));
}

/* A forward whose output is its input (a square MLP, in == out): the first call of a shape makes
 * its graph and must run the pass once, not eagerly and then again from the graph (which would
 * read the already-written output); later calls replay the graph. Checked against the model's
 * own infer on the same rows. */
static void test_forward_in_place(void **state) {
  (void)state;
  enum { SQ = 12, ROWS = 3 };
  const unsigned sq_dims[] = {SQ, 20, SQ};
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_mlp_random(dev, sq_dims, 3, tu_seed() + 5, SP_F32, &m));
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  float x[ROWS * SQ], want[ROWS * SQ], got[ROWS * SQ];
  tu_rng rng = {tu_seed() + 13};
  for (size_t i = 0; i < ROWS * SQ; i++) x[i] = (float)tu_rng_below(&rng, 2001) / 1000.0f - 1.0f;
  SP_CHECK_OK(sp_model_infer(m, x, want, ROWS));
  void *buf;
  SP_CHECK_OK(sp_alloc(dev, sizeof(x), s, &buf));
  for (int call = 0; call < 3; call++) { /* makes the graph, then replays it */
    SP_CHECK_OK(sp_memcpy_async(s, buf, x, sizeof(x)));
    SP_CHECK_OK(sp_model_forward(m, s, buf, buf, ROWS));
    SP_CHECK_OK(sp_memcpy_async(s, got, buf, sizeof(got)));
    SP_CHECK_OK(sp_stream_sync(s));
    for (size_t i = 0; i < ROWS * SQ; i++)
      if (fabsf(got[i] - want[i]) > 1e-5f * (1.0f + fabsf(want[i])))
        fail_msg("call %d: in-place forward y[%zu] = %.9g, infer gives %.9g", call, i,
                 (double)got[i], (double)want[i]);
  }
  SP_CHECK_OK(sp_free(dev, buf));
  sp_model_free(m);
}

typedef struct conc_arg {
  unsigned index;
} conc_arg;

static void *conc_main(void *p) {
  conc_arg *a = p;
  tu_rng rng = {tu_seed() * 31 + a->index};
  float x[4 * IN], y[4 * OUT];
  for (int it = 0; it < 50; it++) {
    unsigned rows = 1 + (unsigned)tu_rng_below(&rng, 4);
    fill_inputs(&rng, x, rows);
    TU_EXPECT_OK(sp_model_infer(m_f32, x, y, rows));
    for (unsigned r = 0; r < rows; r++) {
      double want[OUT];
      tu_mlp_reference(&mlp, x + r * IN, want);
      double e = row_err(y + r * OUT, want);
      TU_EXPECT(e <= 1e-5, "thread %u iteration %d row %u: error %.3g", a->index, it, r, e);
    }
  }
  sp_stream_release_current(dev);
  return NULL;
}

static void test_concurrent_threads(void **state) {
  (void)state;
  pthread_t t[4];
  conc_arg a[4];
  tu_failures_reset();
  for (unsigned i = 0; i < 4; i++) {
    a[i].index = i;
    assert_int_equal(pthread_create(&t[i], NULL, conc_main, &a[i]), 0);
  }
  for (unsigned i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_int_equal(tu_failures(), 0);
}

static void test_random_model_seeded(void **state) {
  (void)state;
  const unsigned d[] = {16, 32, 8};
  sp_model *a, *b2, *c;
  SP_CHECK_OK(sp_model_mlp_random(dev, d, 3, 7, SP_F32, &a));
  SP_CHECK_OK(sp_model_mlp_random(dev, d, 3, 7, SP_F32, &b2));
  SP_CHECK_OK(sp_model_mlp_random(dev, d, 3, 8, SP_F32, &c));
  assert_int_equal(sp_model_in_features(a), 16);
  assert_int_equal(sp_model_out_features(a), 8);
  assert_int_equal(sp_model_dtype(a), SP_F32);
  assert_ptr_equal(sp_model_device(a), dev);
  float x[16], ya[8], yb[8], yc[8];
  for (int i = 0; i < 16; i++) x[i] = (float)i / 8.0f - 1.0f;
  SP_CHECK_OK(sp_model_infer(a, x, ya, 1));
  SP_CHECK_OK(sp_model_infer(b2, x, yb, 1));
  SP_CHECK_OK(sp_model_infer(c, x, yc, 1));
  if (memcmp(ya, yb, sizeof(ya)))
    fail_msg("same seed, different outputs: %g vs %g", (double)ya[0], (double)yb[0]);
  if (!memcmp(ya, yc, sizeof(ya))) fail_msg("seeds 7 and 8 gave identical outputs");
  /* Outputs bounded as PyTorch's init implies: |y| <= sum of |w||h| + |b| stays small. */
  for (int i = 0; i < 8; i++)
    if (!(fabsf(ya[i]) < 4.0f))
      fail_msg("out[%d] = %g: weights not in +-1/sqrt(in)?", i, (double)ya[i]);
  sp_model_free(a);
  sp_model_free(b2);
  sp_model_free(c);
}

static void test_bad_arguments(void **state) {
  (void)state;
  float x[IN], y[OUT];
  memset(x, 0, sizeof(x));
  sp_stream *s = sp_stream_default(dev);
  SP_CHECK_STATUS(sp_model_infer(NULL, x, y, 1), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_infer(m_f32, NULL, y, 1), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_infer(m_f32, x, y, 0), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_forward(m_f32, NULL, x, y, 1), SP_ERR_INVALID_ARGUMENT);
  sp_device *other = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  SP_CHECK_STATUS(sp_model_forward(m_f32, sp_stream_default(other), x, y, 1),
                  SP_ERR_INVALID_ARGUMENT);
  sp_device_close(other);
  (void)s;
  const unsigned d1[] = {4};
  const unsigned d0[] = {4, 0};
  sp_model *m = NULL;
  SP_CHECK_STATUS(sp_model_mlp_random(dev, d1, 1, 1, SP_F32, &m), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_mlp_random(dev, d0, 2, 1, SP_F32, &m), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_mlp_random(NULL, dims, 2, 1, SP_F32, &m), SP_ERR_INVALID_ARGUMENT);
  assert_null(m);
  assert_int_equal(sp_model_in_features(NULL), 0);
  sp_model_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_infer_matches_reference), cmocka_unit_test(test_forward_on_stream),
      cmocka_unit_test(test_concurrent_threads),      cmocka_unit_test(test_random_model_seeded),
      cmocka_unit_test(test_bad_arguments),           cmocka_unit_test(test_forward_in_place),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
