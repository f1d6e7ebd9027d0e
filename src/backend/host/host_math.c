/* Host compute commands: Linear (GEMM + bias + activation) and f32/bf16/f16 conversion.
 *
 * Owns: the arithmetic the worker runs for SP__HOST_CMD_LINEAR and SP__HOST_CMD_CONVERT, and the
 * one-time BLAS set-up. f32 Linear is one OpenBLAS cblas_sgemm into y pre-filled with the bias
 * (beta = 1), or one cblas_sgemv a row at small batches (host_gemv_pays), then the activation
 * (sp__host_act). bf16 and f16 Linear are correct, not fast: x, w and the bias are widened to f32
 * in the stream's scratch buffer, multiplied the same way in f32, activated, and rounded once to
 * the dtype (nearest even). Concurrency comes from the streams: OpenBLAS runs one thread per
 * call.
 *
 * OpenBLAS is loaded with dlopen at the first Linear submitted to a host stream, not linked: a
 * library linked at load time puts its thread-local storage (OpenBLAS: 60 KiB) into every thread's
 * static TLS, so threads with small stacks could not be created in any program using streampool
 * (issue 14 W5); a dlopen()ed library's TLS is allocated per thread on first use. Not at device
 * open either: loading starts OpenBLAS's own pool (a thread per core), and under an address-space
 * cap on a 16-core machine that start hung in OpenBLAS (cli_streams), in programs that never
 * multiply. Without OpenBLAS, Linear is SP_ERR_UNSUPPORTED naming the library and dlerror();
 * everything else works.
 *
 * Invariants: the scratch buffer belongs to the stream's worker (no lock); it only grows.
 * Locking: none here; pthread_once guards the BLAS set-up (every user passes through it first).
 */
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "backend/host/host_impl.h"
#include "backend/nn_check.h"
#include "core/dtype.h"

static pthread_once_t host_blas_once = PTHREAD_ONCE_INIT;
static __typeof__(cblas_sgemm) *host_blas_sgemm; /* NULL: OpenBLAS could not be loaded */
static __typeof__(cblas_sgemv) *host_blas_sgemv; /* set with host_blas_sgemm              */
static char host_blas_error[256];                /* why, when NULL                     */

static void host_blas_setup(void) {
  static const char *const names[] = {"libopenblas.so.0", "libopenblas.so"};
  void *h = NULL;
  for (size_t k = 0; k < sizeof(names) / sizeof(names[0]) && !h; k++)
    h = dlopen(names[k], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(host_blas_error, sizeof(host_blas_error), "%s", dlerror());
    return;
  }
  __typeof__(openblas_set_num_threads) *set_threads = NULL;
  __typeof__(cblas_sgemm) *sgemm = NULL;
  __typeof__(cblas_sgemv) *sgemv = NULL;
  void *sym = dlsym(h, "openblas_set_num_threads"); /* POSIX: data and function pointers match */
  memcpy(&set_threads, &sym, sizeof(sym));
  sym = dlsym(h, "cblas_sgemm");
  memcpy(&sgemm, &sym, sizeof(sym));
  sym = dlsym(h, "cblas_sgemv");
  memcpy(&sgemv, &sym, sizeof(sym));
  if (!set_threads || !sgemm || !sgemv) {
    snprintf(host_blas_error, sizeof(host_blas_error), "libopenblas lacks %s",
             !sgemm   ? "cblas_sgemm"
             : !sgemv ? "cblas_sgemv"
                      : "openblas_set_num_threads");
    return; /* the handle stays open: a library loaded once per process */
  }
  set_threads(1);
  host_blas_sgemv = sgemv;
  host_blas_sgemm = sgemm;
}

void sp__host_blas_init(void) { pthread_once(&host_blas_once, host_blas_setup); }

/* The most rows of a 16-bit linear with f32 x or y (sp__linear.io). Any batch would do (the 16-bit
 * path widens x and rounds y in its scratch anyway); 2, so that CI runs a 16-bit model both
 * ways: fused at 1-2 rows, converting from 3. */
enum { HOST_F32_IO_ROWS = 2 };

sp_status sp__host_linear_check(const sp__linear *op, const char *fn) {
  if (!op) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: op is NULL", fn);
  sp__host_blas_init();
  if (!host_blas_sgemm)
    return sp__fail(SP_ERR_UNSUPPORTED, "%s: OpenBLAS (libopenblas.so.0) could not be loaded: %s",
                    fn, host_blas_error);
  if (!sp__dtype_valid(op->dtype))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: unknown dtype %d", fn, (int)op->dtype);
  if (!op->batch || !op->in_features || !op->out_features)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: empty shape batch=%u in=%u out=%u", fn, op->batch,
                    op->in_features, op->out_features);
  if (op->batch > INT_MAX || op->in_features > INT_MAX || op->out_features > INT_MAX ||
      (size_t)op->batch * op->in_features > SIZE_MAX / 16 ||
      (size_t)op->out_features * op->in_features > SIZE_MAX / 16 ||
      (size_t)op->batch * op->out_features > SIZE_MAX / 16)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: shape batch=%u in=%u out=%u too large", fn,
                    op->batch, op->in_features, op->out_features);
  if ((unsigned)op->act >= SP__ACT_COUNT)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: unknown activation %d", fn, (int)op->act);
  if (!op->x || !op->w || !op->y)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                    !op->x   ? "x"
                    : !op->w ? "w"
                             : "y");
  return sp__linear_io_check(op, HOST_F32_IO_ROWS, fn);
}

unsigned sp__host_linear_f32_io_rows(sp__bdevice *d) {
  (void)d;
  return HOST_F32_IO_ROWS;
}

sp_status sp__host_convert_check(void *dst, sp_dtype dst_type, const void *src, sp_dtype src_type,
                                 size_t n, const char *fn) {
  if (!sp__dtype_valid(dst_type) || !sp__dtype_valid(src_type))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: unknown dtype (dst %d, src %d)", fn,
                    (int)dst_type, (int)src_type);
  if (n && (!dst || !src))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: NULL %s with n=%zu", fn, dst ? "src" : "dst", n);
  if (n > SIZE_MAX / 4) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: n=%zu too large", fn, n);
  return SP_OK;
}

void sp__host_convert_run(void *dst, sp_dtype dst_type, const void *src, sp_dtype src_type,
                          size_t n) {
  if (dst_type == src_type) {
    memmove(dst, src, n * sp__dtype_size(dst_type));
  } else if (dst_type == SP_F32) {
    float *f = dst;
    for (size_t i = 0; i < n; i++) f[i] = sp__elem_load(src, src_type, i);
  } else if (src_type == SP_F32) {
    const float *f = src;
    for (size_t i = 0; i < n; i++) sp__elem_store(dst, dst_type, i, f[i]);
  } else { /* bf16 <-> f16: through f32, element by element (dst and src may overlap exactly) */
    for (size_t i = 0; i < n; i++)
      sp__elem_store(dst, dst_type, i, sp__elem_load(src, src_type, i));
  }
}

/* Small batches are one sgemv a row: sgemm packs w on every call, which costs more than reading
 * it once a row. OpenBLAS 0.3.21, one thread, f32 n x n, dev box 2026-12-03, sgemm against sgemv a
 * row at 2 / 3 / 4 rows: n = 1024 (4 MiB) 339 / 456 / 291 us against 108 / 150 / 223 us; n = 2048
 * 1487 / 2032 / 1361 against 596 / 1180 / 1290; n = 4096 (64 MiB, above the 32 MiB L3) 7836 / 9683
 * / 5774 against 5154 / 6527 / 8700 (at one row 364 against 73 us for n = 1024; at 8 rows sgemm
 * wins). So up to 3 rows always, 4 rows while w fits HOST_GEMV_W4_BYTES. */
enum { HOST_GEMV_ROWS = 3 };
#define HOST_GEMV_W4_BYTES ((size_t)16 << 20)

static bool host_gemv_pays(unsigned batch, unsigned in, unsigned out) {
  return batch <= HOST_GEMV_ROWS ||
         (batch == 4 && (size_t)in * out * sizeof(float) <= HOST_GEMV_W4_BYTES);
}

/* y[b, o] = sum_i x[b, i] * w[o, i] + (y[b, o] if beta else 0), all f32 row-major: one sgemm, or
 * one sgemv a row (host_gemv_pays), which first zeroes y when beta is 0, so y's old contents (a
 * NaN) never matter whatever the BLAS does with beta 0. */
static void host_matmul(const float *x, const float *w, float *y, unsigned batch, unsigned in,
                        unsigned out, float beta) {
  if (host_gemv_pays(batch, in, out)) {
    if (beta == 0.0f) memset(y, 0, (size_t)batch * out * sizeof(*y));
    for (unsigned b = 0; b < batch; b++)
      host_blas_sgemv(CblasRowMajor, CblasNoTrans, (int)out, (int)in, 1.0f, w, (int)in,
                      x + (size_t)b * in, 1, beta, y + (size_t)b * out, 1);
    return;
  }
  host_blas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)batch, (int)out, (int)in, 1.0f, x,
                  (int)in, w, (int)in, beta, y, (int)out);
}

void sp__host_act(float *y, size_t n, sp__act act) {
  switch (act) {
  case SP__ACT_NONE:
  case SP__ACT_COUNT: return;
  case SP__ACT_RELU:
    for (size_t i = 0; i < n; i++)
      if (!(y[i] > 0.0f) && y[i] == y[i]) y[i] = 0.0f; /* NaN stays NaN, -0 becomes +0 */
    return;
  case SP__ACT_GELU_ERF:
    for (size_t i = 0; i < n; i++) y[i] = 0.5f * y[i] * (1.0f + erff(y[i] * 0.70710678118654752f));
    return;
  case SP__ACT_GELU_TANH:
    for (size_t i = 0; i < n; i++) {
      float v = y[i];
      y[i] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    }
    return;
  case SP__ACT_SILU:
    for (size_t i = 0; i < n; i++) y[i] = y[i] / (1.0f + expf(-y[i]));
    return;
  case SP__ACT_TANH:
    for (size_t i = 0; i < n; i++) y[i] = tanhf(y[i]);
    return;
  }
}

static void host_linear_f32(const sp__linear *op) {
  float *y = op->y;
  const float *bias = op->bias;
  size_t out = op->out_features;
  if (bias)
    for (size_t b = 0; b < op->batch; b++) memcpy(y + b * out, bias, out * sizeof(*y));
  host_matmul(op->x, op->w, y, op->batch, op->in_features, op->out_features, bias ? 1.0f : 0.0f);
  sp__host_act(y, (size_t)op->batch * out, op->act);
}

bool sp__host_scratch_reserve(sp__bstream *s, size_t floats) {
  if (s->scratch_floats >= floats) return true;
  float *p = sp__malloc(floats * sizeof(*p));
  if (!p) return false;
  sp__free(s->scratch);
  s->scratch = p;
  s->scratch_floats = floats;
  return true;
}

/* v[0, n) rounded to dt's precision, kept as f32. */
static void host_round_to(float *v, size_t n, sp_dtype dt) {
  for (size_t i = 0; i < n; i++) v[i] = sp__elem_round(dt, v[i]);
}

/* A bf16 or f16 linear: widened into the stream's scratch, f32 GEMM, rounded once into y. Where
 * op->io says so x is read and y written as f32, rounded to dt on the way in and out, exactly as
 * converting them would. */
static sp_status host_linear_16(sp__bstream *s, const sp__linear *op, char *msg, size_t msg_size) {
  size_t nx = (size_t)op->batch * op->in_features, nw = (size_t)op->out_features * op->in_features;
  size_t ny = (size_t)op->batch * op->out_features, out = op->out_features;
  if (!sp__host_scratch_reserve(s, nx + nw + ny)) {
    snprintf(msg, msg_size, "%s linear: cannot allocate %zu bytes of scratch (output not written)",
             sp__dtype_name(op->dtype), (nx + nw + ny) * sizeof(float));
    return SP_ERR_HOST_MEMORY;
  }
  float *x = s->scratch, *w = x + nx, *y = w + nw;
  sp_dtype dt = op->dtype, xt = (op->io & SP__LINEAR_X_F32) ? SP_F32 : dt;
  sp_dtype yt = (op->io & SP__LINEAR_Y_F32) ? SP_F32 : dt;
  sp__host_convert_run(x, SP_F32, op->x, xt, nx);
  if (xt != dt) host_round_to(x, nx, dt);
  sp__host_convert_run(w, SP_F32, op->w, dt, nw);
  if (op->bias)
    for (size_t b = 0; b < op->batch; b++)
      sp__host_convert_run(y + b * out, SP_F32, op->bias, dt, out);
  host_matmul(x, w, y, op->batch, op->in_features, op->out_features, op->bias ? 1.0f : 0.0f);
  sp__host_act(y, ny, op->act);
  if (yt != dt) host_round_to(y, ny, dt);
  sp__host_convert_run(op->y, yt, y, SP_F32, ny);
  return SP_OK;
}

sp_status sp__host_linear_run(sp__bstream *s, const sp__linear *op, char *msg, size_t msg_size) {
  if (op->dtype == SP_F32) {
    host_linear_f32(op);
    return SP_OK;
  }
  return host_linear_16(s, op, msg, msg_size);
}
