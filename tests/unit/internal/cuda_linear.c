/* White-box tests of the CUDA backend's two linear implementations and the choice between them.
 *
 * Goal: cuBLASLt and our GEMV kernel (forced with STREAMPOOL_CUDA_LINEAR=cublaslt / kernel) both
 * compute y = act(x·wᵀ + b) to f32 accuracy (bf16, f16: their rounding) on batch 1..32 (and 33,
 * 64: the kernel's chunking), f32, bf16 and f16, odd shapes (in_features not a multiple of 8, one
 * input, one output, out not a multiple of the kernel's rows per block) and pointers that defeat
 * the 16-byte loads (x and w one element off 16 bytes; y one element off), with and without bias,
 * with ReLU and with every other activation (GELU erf and tanh, SiLU, Tanh: cuBLASLt then runs
 * its activation kernel in place on y, in the op's dtype; our kernel applies them in its epilogue),
 * writing every output element. In auto mode the first eager linear of a key
 * (the activation is part of it: a GELU op does not reuse its shape's ReLU choice) caches a
 * choice per device, a capture of an unseen key times nothing (the choice stays unknown) and its
 * replay is correct, and a later capture uses the cached choice (auto is the default: the case
 * runs with the variable unset); each timing logs, at debug level, its shape, its two times and
 * the answer it cached, which is the faster time. Activations captured in a graph on a fresh stream
 * replay right. A chain of our kernels launched with PDL equals, bit for bit, the same ops synced
 * one by one (pdl_chain). f32 x and y beside 16-bit weights equal converting them, bit for bit
 * (f32_io). A bad STREAMPOOL_CUDA_LINEAR or STREAMPOOL_CUDA_PDL fails device_open with the variable
 * named. Method: drive the CUDA backend's table directly (no core). Seeded inputs; a
 * double-precision reference computed once per (shape, dtype) for 64 rows (batch b checks its first
 * b rows, which are the same computation). Tolerance: 5e-5 (f32), 1e-2 (bf16) or 2e-3 (f16) of the
 * magnitude bound |w|·|x| + |b| (x 1.25 with an activation other than ReLU: their slopes
 * reach 1.13, so the pre-activation error grows by that much at most). The output is poisoned with
 * 0xFF bytes (NaN) before each run, so an element left unwritten fails. Without a CUDA device it
 * prints "skipped" and exits 77 (SP_REQUIRE_CUDA=1: a failure).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tu_backend.h"

#include "backend/backend.h"
#include "core/dtype.h" /* sp__elem_*: the host's rounding, tested in conf_backend */

#ifdef SP_HAVE_CUDA
#include "backend/cuda/cuda_select.h"

enum { ROWS = 64, PAD = 16 }; /* reference rows; spare elements for the misaligned views */

static float rand_unit(tu_rng *r) { return (float)tu_rng_below(r, 2000001) / 1000000.0f - 1.0f; }

/* One shape's host data, device copies and reference. */
typedef struct lin_case {
  unsigned in, out;
  sp_dtype dt;
  float *x, *w, *b;  /* host values (rounded to dt): x [ROWS, in], w [out, in]          */
  double *pre, *mag; /* [ROWS, out]: x·wᵀ and |x|·|w|ᵀ                                 */
  void *dx, *dw, *db, *dy; /* device: dtype elements, PAD spare at the end                  */
  float *got;              /* [ROWS, out] read back as f32                                   */
} lin_case;

static size_t esize(const lin_case *c) { return sp__dtype_size(c->dt); }

/* f32 values -> dt bytes in a host buffer (values already dt's: exact). */
static void *to_dtype(const float *v, size_t n, sp_dtype dt) {
  void *p = malloc(n * sp__dtype_size(dt) + 1);
  assert_non_null(p);
  for (size_t i = 0; i < n; i++) sp__elem_store(p, dt, i, v[i]);
  return p;
}

static void upload(const sp__backend *be, sp__bstream *s, void *dst, const float *v, size_t n,
                   sp_dtype dt) {
  void *h = to_dtype(v, n, dt);
  SP_CHECK_OK(be->memcpy_async(s, dst, h, n * sp__dtype_size(dt)));
  SP_CHECK_OK(be->stream_sync(s));
  free(h);
}

static void *dev_alloc(const sp__backend *be, sp__bdevice *d, size_t bytes) {
  void *p = NULL;
  SP_CHECK_OK(be->mem_alloc(d, bytes, &p));
  return p;
}

static void case_open(const sp__backend *be, sp__bdevice *d, sp__bstream *s, lin_case *c,
                      unsigned in, unsigned out, sp_dtype dt, uint64_t seed) {
  memset(c, 0, sizeof(*c));
  c->in = in;
  c->out = out;
  c->dt = dt;
  tu_rng r = {seed};
  size_t nx = (size_t)ROWS * in, nw = (size_t)out * in, ny = (size_t)ROWS * out;
  c->x = malloc(nx * 4);
  c->w = malloc(nw * 4);
  c->b = malloc((size_t)out * 4);
  c->pre = malloc(ny * sizeof(double));
  c->mag = malloc(ny * sizeof(double));
  c->got = malloc(ny * 4);
  assert_true(c->x && c->w && c->b && c->pre && c->mag && c->got);
  float k = 1.0f / sqrtf((float)in);
  for (size_t i = 0; i < nx; i++) c->x[i] = rand_unit(&r) * 2.0f;
  for (size_t i = 0; i < nw; i++) c->w[i] = rand_unit(&r) * k;
  for (unsigned i = 0; i < out; i++) c->b[i] = rand_unit(&r) * 0.5f;
  for (size_t i = 0; i < nx; i++) c->x[i] = sp__elem_round(dt, c->x[i]);
  for (size_t i = 0; i < nw; i++) c->w[i] = sp__elem_round(dt, c->w[i]);
  for (unsigned i = 0; i < out; i++) c->b[i] = sp__elem_round(dt, c->b[i]);
  for (unsigned row = 0; row < ROWS; row++)
    for (unsigned o = 0; o < out; o++) {
      double sum = 0, m = 0;
      for (unsigned i = 0; i < in; i++) {
        double a = c->x[(size_t)row * in + i], w = c->w[(size_t)o * in + i];
        sum += a * w;
        m += fabs(a * w);
      }
      c->pre[(size_t)row * out + o] = sum;
      c->mag[(size_t)row * out + o] = m;
    }
  size_t es = esize(c);
  c->dx = dev_alloc(be, d, (nx + PAD) * es);
  c->dw = dev_alloc(be, d, (nw + PAD) * es);
  c->db = dev_alloc(be, d, ((size_t)out + PAD) * es);
  c->dy = dev_alloc(be, d, (ny + PAD) * es);
  upload(be, s, c->db, c->b, out, dt);
}

static void case_close(const sp__backend *be, sp__bdevice *d, lin_case *c) {
  void *devs[] = {c->dx, c->dw, c->db, c->dy};
  for (size_t i = 0; i < 4; i++) SP_CHECK_OK(be->mem_free(d, devs[i]));
  free(c->x);
  free(c->w);
  free(c->b);
  free(c->pre);
  free(c->mag);
  free(c->got);
}

/* A view of the case: element offsets of x and w (both, to defeat 16-byte loads) and of y. */
typedef struct lin_view {
  unsigned xw_off, y_off;
  bool bias;
  int act; /* an sp__act, or -1: GELU erf, GELU tanh, SiLU, Tanh in turn by batch */
} lin_view;

static sp__act view_act(const lin_view *v, unsigned batch) {
  return v->act >= 0 ? (sp__act)v->act : (sp__act)(SP__ACT_GELU_ERF + batch % 4);
}

/* x and w uploaded at the view's offset (the same values, shifted). */
static void case_place(const sp__backend *be, sp__bstream *s, lin_case *c, unsigned off) {
  size_t es = esize(c);
  upload(be, s, (unsigned char *)c->dx + off * es, c->x, (size_t)ROWS * c->in, c->dt);
  upload(be, s, (unsigned char *)c->dw + off * es, c->w, (size_t)c->out * c->in, c->dt);
}

static sp__linear case_op(const lin_case *c, const lin_view *v, unsigned batch) {
  size_t es = esize(c);
  return (sp__linear){.dtype = c->dt,
                      .batch = batch,
                      .in_features = c->in,
                      .out_features = c->out,
                      .x = (unsigned char *)c->dx + v->xw_off * es,
                      .w = (unsigned char *)c->dw + v->xw_off * es,
                      .bias = v->bias ? c->db : NULL,
                      .y = (unsigned char *)c->dy + v->y_off * es,
                      .act = view_act(v, batch)};
}

/* Reads back batch rows of y and compares them with the reference. */
static void case_check(const sp__backend *be, sp__bstream *s, lin_case *c, const lin_view *v,
                       unsigned batch, const char *what) {
  size_t n = (size_t)batch * c->out, es = esize(c);
  unsigned char *raw = malloc(n * es + 1);
  assert_non_null(raw);
  SP_CHECK_OK(be->memcpy_async(s, raw, (unsigned char *)c->dy + v->y_off * es, n * es));
  SP_CHECK_OK(be->stream_sync(s));
  for (size_t i = 0; i < n; i++) c->got[i] = sp__elem_load(raw, c->dt, i);
  free(raw);
  sp__act act = view_act(v, batch);
  double tol = (c->dt == SP_BF16  ? 1e-2
                : c->dt == SP_F16 ? 2e-3
                                  : 5e-5) *
               (act == SP__ACT_NONE || act == SP__ACT_RELU ? 1.0 : 1.25);
  for (unsigned row = 0; row < batch; row++)
    for (unsigned o = 0; o < c->out; o++) {
      size_t i = (size_t)row * c->out + o;
      double want = tu_act_ref(act, c->pre[i] + (v->bias ? c->b[o] : 0.0));
      double bound = tol * (c->mag[i] + (v->bias ? fabs(c->b[o]) : 0.0)) + 1e-30;
      double got = c->got[i];
      if (!(fabs(got - want) <= bound))
        fail_msg(
            "%s: %s %ux%u batch %u (x/w off %u, y off %u, bias %d, act %d) row %u col %u: "
            "got %.9g, want %.9g (|diff| %.3g > bound %.3g)",
            what, sp__dtype_name(c->dt), c->in, c->out, batch, v->xw_off, v->y_off, v->bias,
            (int)act, row, o, got, want, fabs(got - want), bound);
    }
}

static void run_checked(const sp__backend *be, sp__bstream *s, lin_case *c, const lin_view *v,
                        unsigned batch, const char *what) {
  size_t es = esize(c);
  SP_CHECK_OK(be->memset_async(s, c->dy, 0xFF, ((size_t)ROWS * c->out + PAD) * es));
  sp__linear op = case_op(c, v, batch);
  SP_CHECK_OK(be->linear_async(s, &op));
  case_check(be, s, c, v, batch, what);
}

/* ---- device handling ------------------------------------------------------------------------ */

static const sp__backend *cuda_table(void) {
  const sp__backend *be = NULL;
  if (sp__backend_find("cuda", &be) != SP_OK) return NULL;
  int n = 0;
  if (be->device_count(&n) != SP_OK || n == 0) return NULL;
  return be;
}

static sp__bdevice *open_with(const sp__backend *be, const char *mode) {
  if (mode) setenv("STREAMPOOL_CUDA_LINEAR", mode, 1);
  else unsetenv("STREAMPOOL_CUDA_LINEAR");
  sp__bdevice *d = NULL;
  sp_status st = be->device_open(0, &d);
  unsetenv("STREAMPOOL_CUDA_LINEAR");
  SP_CHECK_OK(st);
  return d;
}

/* ---- cases ------------------------------------------------------------------------------------
 */

/* The last four: at 5 to 32 rows the split kernel's one slice of partial chunks (40 -> 70) and
 * MiniLM's Linears, in_features split 8 ways (384 -> 1152, 1536 -> 384) and 6 (384 -> 1536). */
static const unsigned shapes[][2] = {
    {1, 1},    {3, 1},   {7, 5},      {8, 1},      {37, 19},     {64, 48},
    {100, 33}, {9, 130}, {1023, 7},   {512, 1024}, {1024, 1024}, {1024, 512},
    {256, 3},  {40, 70}, {384, 1152}, {1536, 384}, {384, 1536},
};

/* Every shape, every dtype, batches 1..32, 33, 64, five views, under one forced mode. */
static void forced_mode(const sp__backend *be, const char *mode) {
  sp__bdevice *d = open_with(be, mode);
  sp__bstream *s = NULL;
  SP_CHECK_OK(be->stream_create(d, 0, &s));
  static const lin_view views[] = {
      {0, 0, true, SP__ACT_RELU},  /* aligned: 16-byte loads where in allows           */
      {1, 0, false, SP__ACT_NONE}, /* x and w one element off: the element-wise path  */
      {0, 1, true, SP__ACT_NONE},  /* y one element off, bias without activation      */
      {0, 0, true, -1},  /* the other activations, by batch, with bias                   */
      {1, 1, false, -1}, /* and without, everything misaligned                           */
  };
  unsigned checked = 0;
  for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++)
    for (unsigned dt = SP_F32; dt <= SP_F16; dt++) {
      lin_case c;
      bool big = shapes[k][0] * shapes[k][1] >= 65536;
      case_open(be, d, s, &c, shapes[k][0], shapes[k][1], (sp_dtype)dt,
                tu_seed() * 131 + k * 3 + dt);
      for (size_t vi = 0; vi < sizeof(views) / sizeof(views[0]); vi++) {
        case_place(be, s, &c, views[vi].xw_off);
        for (unsigned b = 1; b <= 34; b++) {
          unsigned batch = b <= 32 ? b : (b == 33 ? 33 : 64);
          if (big && batch % 8 > 1 && batch % 8 < 7) continue; /* large shapes: fewer sizes */
          run_checked(be, s, &c, &views[vi], batch, mode);
          checked++;
        }
      }
      case_close(be, d, &c);
    }
  print_message("cuda %s: %u (shape, dtype, view, batch) cases checked\n", mode, checked);
  be->stream_destroy(s);
  be->device_close(d);
}

static void forced_cublaslt(void **state) {
  (void)state;
  const sp__backend *be = cuda_table();
  if (be) forced_mode(be, "cublaslt");
}

static void forced_kernel(void **state) {
  (void)state;
  const sp__backend *be = cuda_table();
  if (be) forced_mode(be, "kernel");
}

static const char *choice_name(int c) { return c == 2 ? "kernel" : c == 1 ? "cublaslt" : "none"; }

/* The library's last debug message and how many came (the timing logs one per timed key). */
static char last_log[256];
static unsigned n_logs;

static void log_keep(void *user, sp_log_level level, const char *msg) {
  (void)user;
  if (level != SP_LOG_DEBUG) return;
  snprintf(last_log, sizeof(last_log), "%s", msg);
  n_logs++;
}

/* The timing of op logged its shape, both times and exactly the choice that was cached (ch),
 * the faster of the two. Every sp__fail logs at debug level too (src/core/status.c), so exactly
 * one new message also means the call failed nowhere on the way. */
static void check_timing_log(const sp__linear *op, unsigned logs_before, int ch) {
  char shape[64], answer[16];
  snprintf(shape, sizeof(shape), "cuda: linear %u x %u -> %u %s", op->batch, op->in_features,
           op->out_features, sp__dtype_name(op->dtype));
  snprintf(answer, sizeof(answer), ": %s", choice_name(ch));
  size_t n = strlen(last_log), a = strlen(answer);
  if (n_logs != logs_before + 1 || strncmp(last_log, shape, strlen(shape)) != 0 ||
      !strstr(last_log, ": cublaslt ") || !strstr(last_log, " us, kernel ") || n < a ||
      strcmp(last_log + n - a, answer) != 0)
    fail_msg("timing log (%u new) does not say %s ... %s: \"%s\"", n_logs - logs_before, shape,
             answer, last_log);
  double lt = 0, kt = 0; /* the answer is the faster time (ties to cuBLASLt; printed rounded) */
  if (sscanf(strstr(last_log, ": cublaslt ") + 11, "%lf us, kernel %lf", &lt, &kt) != 2 ||
      !(lt > 0 && kt > 0) || (ch == 2 ? kt > lt : lt > kt))
    fail_msg("timing log's times (cublaslt %g, kernel %g us) do not give its answer: \"%s\"", lt,
             kt, last_log);
}

/* Auto mode: eager calls cache a choice (and log its timing); captures never time; replays are
 * right. */
static void auto_mode(void **state) {
  (void)state;
  const sp__backend *be = cuda_table();
  if (!be) return;
  sp_log_set_hook(log_keep, NULL, SP_LOG_DEBUG);
  sp__bdevice *d = open_with(be, NULL); /* auto is the default: no variable set */
  sp__bstream *s = NULL, *cap = NULL;
  SP_CHECK_OK(be->stream_create(d, 0, &s));
  SP_CHECK_OK(be->stream_create(d, 1, &cap));
  static const lin_view v = {0, 0, true, SP__ACT_RELU}, gelu = {0, 0, true, SP__ACT_GELU_ERF};
  static const unsigned mlp[][2] = {{512, 1024}, {1024, 1024}, {1024, 512}};
  static const unsigned batches[] = {1, 8, 32};
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++)
    for (size_t k = 0; k < 3; k++) {
      lin_case c;
      case_open(be, d, s, &c, mlp[k][0], mlp[k][1], (sp_dtype)dt, tu_seed() * 7 + k + 10 * dt);
      case_place(be, s, &c, 0);
      for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++) {
        sp__linear op = case_op(&c, &v, batches[bi]);
        assert_int_equal(sp__cuda_linear_choice(d, &op), 0);
        unsigned logs = n_logs;
        run_checked(be, s, &c, &v, batches[bi], "auto (timed)");
        int ch = sp__cuda_linear_choice(d, &op);
        if (ch != 1 && ch != 2) fail_msg("no choice cached after an eager call: %d", ch);
        check_timing_log(&op, logs, ch);
        run_checked(be, s, &c, &v, batches[bi], "auto (cached)");
        print_message("cuda auto: %s %ux%u batch %u -> %s\n", sp__dtype_name(c.dt), c.in, c.out,
                      batches[bi], choice_name(ch));
        /* the same shape with GELU is a choice of its own (its cuBLASLt side has one more
         * kernel), timed at its first eager call */
        sp__linear gop = case_op(&c, &gelu, batches[bi]);
        assert_int_equal(sp__cuda_linear_choice(d, &gop), 0);
        run_checked(be, s, &c, &gelu, batches[bi], "auto gelu (timed)");
        ch = sp__cuda_linear_choice(d, &gop);
        if (ch != 1 && ch != 2) fail_msg("no choice cached after an eager GELU call: %d", ch);
        run_checked(be, s, &c, &gelu, batches[bi], "auto gelu (cached)");
      }
      case_close(be, d, &c);
    }
  /* A key first seen inside a capture: cuBLASLt, no timing, right on replay; then an eager call
   * times it and the next capture uses the cached choice. */
  lin_case c;
  case_open(be, d, s, &c, 96, 61, SP_F32, tu_seed() + 99);
  case_place(be, s, &c, 0);
  for (int round = 0; round < 2; round++) {
    sp__linear op = case_op(&c, &v, 5);
    SP_CHECK_OK(be->memset_async(s, c.dy, 0xFF, ((size_t)ROWS * c.out + PAD) * 4));
    SP_CHECK_OK(be->stream_sync(s));
    SP_CHECK_OK(be->graph_capture_begin(cap));
    sp_status st = be->linear_async(cap, &op);
    sp__bgraph *g = NULL;
    SP_CHECK_OK(be->graph_capture_end(cap, &g));
    SP_CHECK_OK(st);
    int ch = sp__cuda_linear_choice(d, &op);
    if (round == 0 && ch != 0) fail_msg("a capture cached a choice (%d): it must not time", ch);
    if (round == 1 && ch == 0) fail_msg("the eager call cached no choice");
    SP_CHECK_OK(be->graph_launch(g, s));
    case_check(be, s, &c, &v, 5, round ? "auto, capture after a choice" : "auto, capture first");
    be->graph_destroy(g);
    if (round == 0) run_checked(be, s, &c, &v, 5, "auto, eager after a capture");
  }
  case_close(be, d, &c);
  be->stream_destroy(cap);
  be->stream_destroy(s);
  be->device_close(d);
  sp_log_set_hook(NULL, NULL, SP_LOG_ERROR);
}

/* cuBLASLt's activation kernel inside a graph: on a stream that never ran a linear (so its
 * cuBLASLt state comes from capture_begin's prepare, never from a cudaMalloc inside the capture),
 * a bf16 and an f16 GELU and an f32 SiLU (all in place on y) captured, replayed twice, right. */
static void captured_activation(void **state) {
  (void)state;
  const sp__backend *be = cuda_table();
  if (!be) return;
  sp__bdevice *d = open_with(be, "cublaslt");
  sp__bstream *s = NULL, *cap = NULL;
  SP_CHECK_OK(be->stream_create(d, 0, &s));
  SP_CHECK_OK(be->stream_create(d, 1, &cap));
  static const lin_view views[] = {{0, 0, true, SP__ACT_GELU_ERF}, {0, 1, false, SP__ACT_SILU}};
  static const sp_dtype dts[] = {SP_BF16, SP_F16, SP_F32};
  for (unsigned k = 0; k < 3; k++) {
    lin_case c;
    const lin_view *v = &views[dts[k] == SP_F32 ? 1 : 0];
    case_open(be, d, s, &c, 384, 1536, dts[k], tu_seed() * 3 + k);
    case_place(be, s, &c, 0);
    SP_CHECK_OK(be->stream_sync(s));
    sp__linear op = case_op(&c, v, 7);
    SP_CHECK_OK(be->graph_capture_begin(cap));
    sp_status st = be->linear_async(cap, &op);
    sp__bgraph *g = NULL;
    SP_CHECK_OK(be->graph_capture_end(cap, &g));
    SP_CHECK_OK(st);
    for (int rep = 0; rep < 2; rep++) {
      SP_CHECK_OK(be->memset_async(s, c.dy, 0xFF, ((size_t)ROWS * c.out + PAD) * esize(&c)));
      SP_CHECK_OK(be->graph_launch(g, s));
      case_check(be, s, &c, v, 7, "cublaslt, captured activation");
    }
    be->graph_destroy(g);
    case_close(be, d, &c);
  }
  be->stream_destroy(cap);
  be->stream_destroy(s);
  be->device_close(d);
}

/* ---- programmatic dependent launch ----------------------------------------------------------
 * Our kernels may start before the kernel before them ends (cuda_pdl.h). A chain of them queued
 * back to back (an f32 -> dtype convert, six layers ping-ponging between two buffers, so each
 * layer also overwrites what the one before it read, at batch 1, 2, 5, 12 and 20: the GEMV at 1,
 * 2 and 5 rows, both tile kernels, the element-wise path for the layer from 37 inputs;
 * the activation kernel right after its matmul is forced_cublaslt's), then a convert back,
 * must give bit for bit what the same ops give with a sync after each (where nothing can
 * overlap), eagerly and replayed from a graph, with PDL on (the default) and off. The buffers are
 * poisoned with NaN first, so a kernel reading its input before the one writing it finished
 * fails. */
enum { CHAIN = 6, CHAIN_W = 1024 };
static const unsigned chain_dims[CHAIN + 1] = {512, 1024, 1024, 512, 1000, 37, 256};

typedef struct chain {
  sp_dtype dt;
  unsigned batch;
  void *w[CHAIN], *b[CHAIN]; /* device weights and bias in dt                            */
  void *in, *out;            /* f32 device input [batch, 512] and output [batch, 256]    */
  void *buf[2];              /* dt, [batch, CHAIN_W] each                                */
} chain;

static void chain_open(const sp__backend *be, sp__bdevice *d, sp__bstream *s, chain *c, sp_dtype dt,
                       unsigned batch, uint64_t seed) {
  memset(c, 0, sizeof(*c));
  c->dt = dt;
  c->batch = batch;
  tu_rng r = {seed};
  for (unsigned k = 0; k < CHAIN; k++) {
    unsigned in = chain_dims[k], out = chain_dims[k + 1];
    float *w = malloc((size_t)in * out * 4), *b = malloc((size_t)out * 4);
    assert_true(w && b);
    float sc = 1.0f / sqrtf((float)in);
    for (size_t i = 0; i < (size_t)in * out; i++) w[i] = sp__elem_round(dt, rand_unit(&r) * sc);
    for (unsigned i = 0; i < out; i++) b[i] = sp__elem_round(dt, rand_unit(&r) * 0.5f);
    c->w[k] = dev_alloc(be, d, (size_t)in * out * sp__dtype_size(dt));
    c->b[k] = dev_alloc(be, d, (size_t)out * sp__dtype_size(dt));
    upload(be, s, c->w[k], w, (size_t)in * out, dt);
    upload(be, s, c->b[k], b, out, dt);
    free(w);
    free(b);
  }
  float *x = malloc((size_t)batch * chain_dims[0] * 4);
  assert_non_null(x);
  for (size_t i = 0; i < (size_t)batch * chain_dims[0]; i++) x[i] = rand_unit(&r);
  c->in = dev_alloc(be, d, (size_t)batch * chain_dims[0] * 4);
  c->out = dev_alloc(be, d, (size_t)batch * chain_dims[CHAIN] * 4);
  upload(be, s, c->in, x, (size_t)batch * chain_dims[0], SP_F32);
  free(x);
  for (int i = 0; i < 2; i++) c->buf[i] = dev_alloc(be, d, (size_t)batch * CHAIN_W * 4);
}

static void chain_close(const sp__backend *be, sp__bdevice *d, chain *c) {
  for (unsigned k = 0; k < CHAIN; k++) {
    SP_CHECK_OK(be->mem_free(d, c->w[k]));
    SP_CHECK_OK(be->mem_free(d, c->b[k]));
  }
  void *rest[] = {c->in, c->out, c->buf[0], c->buf[1]};
  for (size_t i = 0; i < 4; i++) SP_CHECK_OK(be->mem_free(d, rest[i]));
}

/* NaN into both buffers and the output (memsets: no kernel, so nothing overlaps them). */
static void chain_poison(const sp__backend *be, sp__bstream *s, chain *c) {
  for (int i = 0; i < 2; i++)
    SP_CHECK_OK(be->memset_async(s, c->buf[i], 0xFF, (size_t)c->batch * CHAIN_W * 4));
  SP_CHECK_OK(be->memset_async(s, c->out, 0xFF, (size_t)c->batch * chain_dims[CHAIN] * 4));
}

static sp__linear chain_op(const chain *c, unsigned k) {
  return (sp__linear){.dtype = c->dt,
                      .batch = c->batch,
                      .in_features = chain_dims[k],
                      .out_features = chain_dims[k + 1],
                      .x = c->buf[k % 2],
                      .w = c->w[k],
                      .bias = k == 2 ? NULL : c->b[k],
                      .y = c->buf[(k + 1) % 2],
                      .act = k == 1          ? SP__ACT_GELU_ERF
                             : k + 1 < CHAIN ? SP__ACT_RELU
                                             : SP__ACT_NONE};
}

/* Queues the chain on s (sync_each: a sync after every op); the first failure. */
static sp_status chain_queue(const sp__backend *be, sp__bstream *s, const chain *c,
                             bool sync_each) {
  sp_status st =
      be->convert_async(s, c->buf[0], c->dt, c->in, SP_F32, (size_t)c->batch * chain_dims[0]);
  for (unsigned k = 0; k < CHAIN && st == SP_OK; k++) {
    if (sync_each) st = be->stream_sync(s);
    sp__linear op = chain_op(c, k);
    if (st == SP_OK) st = be->linear_async(s, &op);
  }
  if (st == SP_OK && sync_each) st = be->stream_sync(s);
  if (st == SP_OK)
    st = be->convert_async(s, c->out, SP_F32, c->buf[CHAIN % 2], c->dt,
                           (size_t)c->batch * chain_dims[CHAIN]);
  return st;
}

static float *chain_read(const sp__backend *be, sp__bstream *s, chain *c) {
  size_t n = (size_t)c->batch * chain_dims[CHAIN];
  float *h = malloc(n * 4);
  assert_non_null(h);
  SP_CHECK_OK(be->memcpy_async(s, h, c->out, n * 4));
  SP_CHECK_OK(be->stream_sync(s));
  return h;
}

static void chain_same(const float *want, const float *got, const chain *c, const char *what) {
  for (size_t i = 0; i < (size_t)c->batch * chain_dims[CHAIN]; i++)
    if (memcmp(&want[i], &got[i], 4) != 0)
      fail_msg("%s: %s batch %u: element %zu is %.9g, with a sync after each op %.9g", what,
               sp__dtype_name(c->dt), c->batch, i, got[i], want[i]);
}

static void pdl_chain(void **state) {
  (void)state;
  const sp__backend *be = cuda_table();
  if (!be) return;
  static const char *const pdl[] = {"1", "0"};
  static const unsigned batches[] = {1, 2, 5, 12, 20};
  for (size_t p = 0; p < 2; p++) {
    setenv("STREAMPOOL_CUDA_PDL", pdl[p], 1);
    sp__bdevice *d = open_with(be, "kernel");
    unsetenv("STREAMPOOL_CUDA_PDL");
    sp__bstream *s = NULL, *cap = NULL;
    SP_CHECK_OK(be->stream_create(d, 0, &s));
    SP_CHECK_OK(be->stream_create(d, 1, &cap));
    for (unsigned dt = SP_F32; dt <= SP_F16; dt++)
      for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++) {
        chain c;
        chain_open(be, d, s, &c, (sp_dtype)dt, batches[bi], tu_seed() * 11 + bi * 3 + dt);
        chain_poison(be, s, &c);
        SP_CHECK_OK(chain_queue(be, s, &c, true));
        float *want = chain_read(be, s, &c);
        for (size_t i = 0; i < (size_t)c.batch * chain_dims[CHAIN]; i++)
          assert_false(isnan(want[i]));
        for (int rep = 0; rep < 3; rep++) {
          chain_poison(be, s, &c);
          SP_CHECK_OK(chain_queue(be, s, &c, false));
          float *got = chain_read(be, s, &c);
          chain_same(want, got, &c, p == 0 ? "PDL on, eager" : "PDL off, eager");
          free(got);
        }
        SP_CHECK_OK(be->graph_capture_begin(cap));
        sp_status st = chain_queue(be, cap, &c, false);
        sp__bgraph *g = NULL;
        SP_CHECK_OK(be->graph_capture_end(cap, &g));
        SP_CHECK_OK(st);
        for (int rep = 0; rep < 3; rep++) {
          chain_poison(be, s, &c);
          SP_CHECK_OK(be->graph_launch(g, s));
          float *got = chain_read(be, s, &c);
          chain_same(want, got, &c, p == 0 ? "PDL on, graph" : "PDL off, graph");
          free(got);
        }
        be->graph_destroy(g);
        free(want);
        chain_close(be, d, &c);
      }
    be->stream_destroy(cap);
    be->stream_destroy(s);
    be->device_close(d);
  }
}

/* ---- f32 input and output beside 16-bit weights (sp__linear.io) ------------------------------
 * Our kernel reading f32 x (rounding it to the dtype) and writing f32 y (rounded to the dtype)
 * must give bit for bit what converting x in and y out around the same op gives: bf16 and f16,
 * batches 1 to 4, aligned and one element off (the element-wise path), each io combination, with
 * ReLU, GELU and no activation. x is not pre-rounded, so a missing rounding shows. With cublaslt
 * forced the slot allows none (linear_f32_io_rows 0) and refuses such an op. */
static void f32_io_case(const sp__backend *be, sp__bdevice *d, sp__bstream *s, sp_dtype dt,
                        unsigned in, unsigned out, uint64_t seed) {
  enum { B4 = 4 };
  tu_rng r = {seed};
  size_t nx = (size_t)B4 * in + PAD, nw = (size_t)out * in + PAD, ny = (size_t)B4 * out + PAD;
  float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc((size_t)out * 4);
  float *ya = malloc(ny * 4), *yb = malloc(ny * 4);
  assert_true(x && w && b && ya && yb);
  for (size_t i = 0; i < nx; i++) x[i] = rand_unit(&r) * 2.0f;
  for (size_t i = 0; i < nw; i++) w[i] = sp__elem_round(dt, rand_unit(&r) / sqrtf((float)in));
  for (unsigned i = 0; i < out; i++) b[i] = sp__elem_round(dt, rand_unit(&r) * 0.5f);
  size_t es = sp__dtype_size(dt);
  void *fx = dev_alloc(be, d, nx * 4), *fy = dev_alloc(be, d, ny * 4),
       *fya = dev_alloc(be, d, ny * 4);
  void *hx = dev_alloc(be, d, nx * es), *hy = dev_alloc(be, d, ny * es);
  void *hw = dev_alloc(be, d, nw * es), *hb = dev_alloc(be, d, (size_t)out * es);
  upload(be, s, fx, x, nx, SP_F32);
  upload(be, s, hw, w, nw, dt);
  upload(be, s, hb, b, out, dt);
  SP_CHECK_OK(be->convert_async(s, hx, dt, fx, SP_F32, nx));
  static const sp__act acts[] = {SP__ACT_RELU, SP__ACT_GELU_ERF, SP__ACT_NONE};
  for (unsigned batch = 1; batch <= B4; batch++)
    for (unsigned off = 0; off < 2; off++)
      for (unsigned io = 1; io <= 3; io++) {
        sp__act act = acts[(batch + io) % 3];
        sp__linear op = {.dtype = dt,
                         .batch = batch,
                         .in_features = in,
                         .out_features = out,
                         .x = (unsigned char *)hx + off * es,
                         .w = (unsigned char *)hw + off * es,
                         .bias = hb,
                         .y = hy,
                         .act = act};
        SP_CHECK_OK(be->memset_async(s, fya, 0xFF, ny * 4));
        SP_CHECK_OK(be->memset_async(s, fy, 0xFF, ny * 4));
        SP_CHECK_OK(be->linear_async(s, &op)); /* the reference: converted in and out */
        SP_CHECK_OK(be->convert_async(s, fya, SP_F32, hy, dt, (size_t)batch * out));
        op.io = io;
        if (io & SP__LINEAR_X_F32) op.x = (float *)fx + off;
        op.y = (io & SP__LINEAR_Y_F32) ? fy : hy;
        SP_CHECK_OK(be->linear_async(s, &op));
        if (!(io & SP__LINEAR_Y_F32))
          SP_CHECK_OK(be->convert_async(s, fy, SP_F32, hy, dt, (size_t)batch * out));
        SP_CHECK_OK(be->memcpy_async(s, ya, fya, (size_t)batch * out * 4));
        SP_CHECK_OK(be->memcpy_async(s, yb, fy, (size_t)batch * out * 4));
        SP_CHECK_OK(be->stream_sync(s));
        for (size_t i = 0; i < (size_t)batch * out; i++)
          if (memcmp(&ya[i], &yb[i], 4) != 0 || isnan(ya[i]))
            fail_msg("f32 io: %s %ux%u batch %u off %u io %u act %d: y[%zu] %.9g, converted %.9g",
                     sp__dtype_name(dt), in, out, batch, off, io, (int)act, i, yb[i], ya[i]);
      }
  void *devs[] = {fx, fy, fya, hx, hy, hw, hb};
  for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) SP_CHECK_OK(be->mem_free(d, devs[i]));
  free(x), free(w), free(b), free(ya), free(yb);
}

static void f32_io(void **state) {
  (void)state;
  const sp__backend *be = cuda_table();
  if (!be) return;
  sp__bdevice *d = open_with(be, "kernel"); /* the converted reference runs our kernel too */
  sp__bstream *s = NULL;
  SP_CHECK_OK(be->stream_create(d, 0, &s));
  assert_int_equal(be->linear_f32_io_rows(d), SP__CUDA_F32_IO_ROWS);
  static const unsigned io_shapes[][2] = {
      {512, 1024}, {1024, 512}, {37, 19}, {9, 130}, {384, 1536}};
  for (unsigned dt = SP_BF16; dt <= SP_F16; dt++)
    for (size_t k = 0; k < sizeof(io_shapes) / sizeof(io_shapes[0]); k++)
      f32_io_case(be, d, s, (sp_dtype)dt, io_shapes[k][0], io_shapes[k][1], tu_seed() * 17 + k);
  be->stream_destroy(s);
  be->device_close(d);
  d = open_with(be, "cublaslt");
  assert_int_equal(be->linear_f32_io_rows(d), 0);
  SP_CHECK_OK(be->stream_create(d, 0, &s));
  void *buf = dev_alloc(be, d, 4096);
  sp__linear op = {.dtype = SP_BF16,
                   .batch = 1,
                   .in_features = 8,
                   .out_features = 8,
                   .x = buf,
                   .w = buf,
                   .y = (char *)buf + 2048,
                   .io = SP__LINEAR_X_F32};
  SP_CHECK_STATUS(be->linear_async(s, &op), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(be->mem_free(d, buf));
  be->stream_destroy(s);
  be->device_close(d);
}

/* device_open with variable `name` set to `value` fails with SP_ERR_INVALID_ARGUMENT naming it. */
static void expect_open_refused(const sp__backend *be, const char *name, const char *value) {
  setenv(name, value, 1);
  sp__bdevice *d = NULL;
  sp_status st = be->device_open(0, &d);
  unsetenv(name);
  if (st == SP_OK) be->device_close(d);
  SP_CHECK_STATUS(st, SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), name));
}

static void bad_mode(void **state) {
  (void)state;
  const sp__backend *be = cuda_table();
  if (!be) return;
  const char *bad[] = {"", "gemv", "Kernel", "auto ", "1"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_open_refused(be, "STREAMPOOL_CUDA_LINEAR", bad[i]);
  const char *bad_pdl[] = {"", "2", "on", "1 "};
  for (size_t i = 0; i < sizeof(bad_pdl) / sizeof(bad_pdl[0]); i++)
    expect_open_refused(be, "STREAMPOOL_CUDA_PDL", bad_pdl[i]);
}
#endif /* SP_HAVE_CUDA */

int main(void) {
  tu_seed();
  const char *req = getenv("SP_REQUIRE_CUDA");
  int need = req && !strcmp(req, "1");
#ifndef SP_HAVE_CUDA
  printf("skipped: built without the CUDA backend\n");
  return need ? 1 : 77;
#else
  unsetenv("STREAMPOOL_CUDA_LINEAR");
  unsetenv("STREAMPOOL_CUDA_PDL");
  if (!cuda_table()) {
    printf("skipped: no CUDA device\n");
    return need ? 1 : 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(bad_mode),
      cmocka_unit_test(forced_cublaslt),
      cmocka_unit_test(forced_kernel),
      cmocka_unit_test(auto_mode),
      cmocka_unit_test(captured_activation),
      cmocka_unit_test(pdl_chain),
      cmocka_unit_test(f32_io),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
