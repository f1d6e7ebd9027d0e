/* The CUDA backend's linear op: y = act(x·wᵀ + b), through cublasLtMatmul with a fused epilogue or
 * through our own GEMV kernel (cuda_gemv.cu), whichever was timed faster for the shape.
 *
 * Layout: the op is row-major (PyTorch): y[B,O] = x[B,I]·w[O,I]ᵀ + b[O]. cuBLASLt is
 * column-major, where row-major y is yᵀ [O,B] (ld O), x is xᵀ [I,B] (ld I) and w is wᵀ [I,O]
 * (ld I). So we compute yᵀ = op_T(wᵀ)·xᵀ: A = w with TRANSA = T, B = x, C = D = y, M = O, N = B,
 * K = I, and the bias (length M) is broadcast along columns by the BIAS / RELU_BIAS epilogue.
 * f32 uses CUBLAS_COMPUTE_32F (never FAST_TF32); bf16 and f16 store 16 bits and accumulate in f32
 * with f32 scales and a bias of their own type. Our kernel accumulates in f32 too and rounds bf16
 * and f16 outputs to nearest even.
 *
 * Activations (backend.h: in f32, after the bias): ReLU is cuBLASLt's RELU / RELU_BIAS epilogue.
 * The others are not fused: cuBLASLt's GELU epilogue is the tanh approximation only, and it is not
 * used for GELU_TANH either, since nothing here has measured it against the reference. They run
 * as the BIAS epilogue into y, then one in-place activation kernel (cuda_act.cu) that reads y in
 * f32 and writes it back in the op's dtype; in bf16 and f16 y is so rounded twice, after the bias
 * and after the activation, as PyTorch's bf16 Linear then GELU is (until 2026-12-01 the matmul
 * wrote f32 into a per-stream scratch, block by block, to round once: a GELU Linear of 8192 x 384
 * -> 1536 took 115 us against 20 us without the activation on the H200). Our GEMV kernel applies
 * every activation in its own epilogue and rounds once.
 *
 * A bf16 or f16 op with f32 x or y (sp__linear.io: a model's first and last layers, at most
 * SP__CUDA_F32_IO_ROWS rows) always runs our kernel, which reads and writes those as f32; with
 * "cublaslt" forced the slot allows none (linear_f32_io_rows 0), so the model converts instead.
 *
 * Choice (STREAMPOOL_CUDA_LINEAR, read at device_open): "auto" (the default) runs our kernel for
 * batch 1..SP__CUDA_GEMV_BATCH_MAX when it was timed faster than cuBLASLt for that op. The first
 * linear of a choice key on a device, outside graph capture, times both (after a warm-up,
 * TIME_REPS rounds of TIME_RUNS back-to-back runs each, queued behind a busy kernel so the device
 * runs them without launch gaps, as a graph would, each run between two of our kernels when they
 * overlap their launches (PDL); the fastest round counts), which syncs the
 * calling stream once; the answer is cached per device (choice table, keyed by the op's shape,
 * dtype, bias, activation and alignment) and copied into the stream's plan. During capture
 * nothing is timed: the cached choice, else cuBLASLt (src/infer/plan.c runs a pass eagerly before
 * capturing it, so graphs get the timed choice). "cublaslt" or "kernel" force one. (Until
 * 2026-12-01 the timing queued its runs behind a host-function gate, which hung
 * tests/stress/infer_plans on the H200; behind cuda_spin.cu's busy kernel it passes.)
 *
 * Owns per stream (lazily, at its first linear op, or when a capture begins): a cuBLASLt handle,
 * a workspace and a hash table of plans keyed by (dtype, epilogue kind,
 * bias, pointer alignment, batch, in, out): one key per distinct cublasLtMatmul configuration. A
 * plan holds the descriptors, layouts, the heuristic's algorithm and the implementation chosen
 * per activation, so a repeated shape costs one attribute set and one cublasLtMatmul call (plus
 * the activation kernel), or one kernel launch.
 * Owns per device: the choice table (key -> implementation), filled once per key, never emptied
 * before device_close (a full probe run evicts the home slot, which is then timed again).
 *
 * Locking: s->lt_mu guards the handle, workspace and plans (the bias pointer is written into the
 * cached descriptor just before the matmul, so the whole call holds it); a timing runs under it.
 * d->choice_mu guards the device's choice table and is taken inside lt_mu, for a lookup or a store
 * only (never across a timing or a CUDA call). Both are backend locks (ranks CUDA_LT, then
 * CUDA_CHOICE, in src/core/lock.h).
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "backend/nn_check.h"
#include "core/dtype.h"
#include "core/env.h"
#include "cuda_act.h"
#include "cuda_gemv.h"
#include "cuda_internal.h"
#include "cuda_select.h"
#include "cuda_spin.h"

enum {
  PLAN_DIM_BITS = 19,
  ALIGN_CLASSES = 9,  /* log2 of the pointer alignment, 0..8 (capped at 256 bytes)              */
  CHOICE_PROBE = 8,   /* linear probes in the device's choice table before evicting the home slot */
  TIME_RUNS = 10,     /* back-to-back runs of each implementation per timing round              */
  TIME_REPS = 3,      /* timing rounds; the fastest counts                                      */
  TIME_SPIN_US = 600, /* the busy kernel each round queues its runs behind: longer than enqueueing
                       * both sides takes (with PDL up to 5 * TIME_RUNS launches: our kernel twice
                       * a run; cuBLASLt's matmul, its activation kernel and the neighbour) */
};
#define PLAN_DIM_MAX ((1u << PLAN_DIM_BITS) - 1u)

/* How the cuBLASLt path computes an op's epilogue. */
typedef enum lt_epi {
  EPI_PLAIN, /* BIAS or DEFAULT; activations other than ReLU follow in one kernel          */
  EPI_RELU,  /* RELU_BIAS or RELU                                                          */
  EPI_KINDS
} lt_epi;

/* The low bits of a plan key: (epilogue kind, bias, bf16, alignment class) in mixed radix. */
_Static_assert(EPI_KINDS * 2 * 3 * ALIGN_CLASSES <= 128, "the plan key's low part fits 7 bits");
_Static_assert(3 * PLAN_DIM_BITS + 7 == 64, "the plan key uses exactly 64 bits");

static sp_status lt_fail(cublasStatus_t cs, const char *what) {
  return sp__fail(SP_ERR_BACKEND, "cuda: %s: %s (%s)", what, cublasLtGetStatusString(cs),
                  cublasLtGetStatusName(cs));
}

static lt_epi op_epi(const sp__linear *op) {
  return op->act == SP__ACT_RELU ? EPI_RELU : EPI_PLAIN;
}

/* The largest power of two dividing every pointer of op, capped at 256 bytes. */
static unsigned linear_alignment(const sp__linear *op) {
  uintptr_t bits = (uintptr_t)op->x | (uintptr_t)op->w | (uintptr_t)op->y | 256u;
  if (op->bias) bits |= (uintptr_t)op->bias;
  return (unsigned)(bits & (~bits + 1u));
}

static unsigned log2u(unsigned v) {
  unsigned r = 0;
  while (v > 1) {
    v >>= 1;
    r++;
  }
  return r;
}

/* The key of the matmul that computes op (its shape, pointers aligned to align) with epilogue
 * kind epi; bias says whether the op has one (kept in the key even where the epilogue does not
 * add it, so such ops keep their own plans and cached choices). 0 when the shape does not fit
 * the key (then the plan is built, used once and destroyed). */
static uint64_t plan_key(const sp__linear *op, unsigned align, lt_epi epi, bool bias) {
  if (op->batch > PLAN_DIM_MAX || op->in_features > PLAN_DIM_MAX || op->out_features > PLAN_DIM_MAX)
    return 0;
  uint64_t low = epi;
  low = low * 2 + bias;
  low = low * 3 + (unsigned)op->dtype;
  low = low * ALIGN_CLASSES + log2u(align);
  uint64_t k = (uint64_t)op->batch;
  k = (k << PLAN_DIM_BITS) | op->in_features;
  k = (k << PLAN_DIM_BITS) | op->out_features;
  return (k << 7) | low; /* batch >= 1, so never 0 */
}

static void plan_destroy(sp__cuda_plan *p) {
  if (p->c) cublasLtMatrixLayoutDestroy(p->c);
  if (p->b) cublasLtMatrixLayoutDestroy(p->b);
  if (p->a) cublasLtMatrixLayoutDestroy(p->a);
  if (p->desc) cublasLtMatmulDescDestroy(p->desc);
  memset(p, 0, sizeof(*p));
}

static cublasStatus_t plan_describe(sp__cuda_plan *p, const sp__linear *op, lt_epi epi) {
  cudaDataType_t t = op->dtype == SP_BF16  ? CUDA_R_16BF
                     : op->dtype == SP_F16 ? CUDA_R_16F
                                           : CUDA_R_32F;
  cublasStatus_t cs = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (cs != CUBLAS_STATUS_SUCCESS) return cs;
  int32_t opa = CUBLAS_OP_T, opb = CUBLAS_OP_N;
  bool relu = epi == EPI_RELU;
  p->bias = op->bias != NULL;
  uint32_t epilogue = p->bias ? (relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                              : (relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  int32_t bias_type = (int32_t)t;
  if ((cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa,
                                           sizeof(opa))) != CUBLAS_STATUS_SUCCESS ||
      (cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb,
                                           sizeof(opb))) != CUBLAS_STATUS_SUCCESS ||
      (cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                           sizeof(epilogue))) != CUBLAS_STATUS_SUCCESS)
    return cs;
  if (p->bias &&
      (cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                           sizeof(bias_type))) != CUBLAS_STATUS_SUCCESS)
    return cs;
  uint64_t m = op->out_features, n = op->batch, k = op->in_features;
  if ((cs = cublasLtMatrixLayoutCreate(&p->a, t, k, m, (int64_t)k)) != CUBLAS_STATUS_SUCCESS ||
      (cs = cublasLtMatrixLayoutCreate(&p->b, t, k, n, (int64_t)k)) != CUBLAS_STATUS_SUCCESS ||
      (cs = cublasLtMatrixLayoutCreate(&p->c, t, m, n, (int64_t)m)) != CUBLAS_STATUS_SUCCESS)
    return cs;
  return CUBLAS_STATUS_SUCCESS;
}

static sp_status plan_build(sp__bstream *s, const sp__linear *op, unsigned align, lt_epi epi,
                            uint64_t key, sp__cuda_plan *p) {
  memset(p, 0, sizeof(*p));
  cublasLtMatmulPreference_t pref = NULL;
  cublasLtMatmulHeuristicResult_t res;
  int found = 0;
  size_t ws = SP__CUDA_WORKSPACE_BYTES;
  uint32_t al = align;
  cublasStatus_t cs = plan_describe(p, op, epi);
  if (cs != CUBLAS_STATUS_SUCCESS) goto fail_plan;
  if ((cs = cublasLtMatmulPreferenceCreate(&pref)) != CUBLAS_STATUS_SUCCESS) goto fail_plan;
  if ((cs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &ws, sizeof(ws))) != CUBLAS_STATUS_SUCCESS)
    goto fail_pref;
  for (int a = CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES;
       a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES; a++)
    if ((cs = cublasLtMatmulPreferenceSetAttribute(pref, (cublasLtMatmulPreferenceAttributes_t)a,
                                                   &al, sizeof(al))) != CUBLAS_STATUS_SUCCESS)
      goto fail_pref;
  memset(&res, 0, sizeof(res));
  cs =
      cublasLtMatmulAlgoGetHeuristic(s->lt, p->desc, p->a, p->b, p->c, p->c, pref, 1, &res, &found);
  if (cs != CUBLAS_STATUS_SUCCESS) goto fail_pref;
  cublasLtMatmulPreferenceDestroy(pref);
  if (found < 1) {
    plan_destroy(p);
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "cuda: linear: cuBLASLt has no algorithm for %s batch %u, %u -> %u, "
                    "pointers aligned to %u bytes",
                    sp__dtype_name(op->dtype), op->batch, op->in_features, op->out_features, align);
  }
  p->algo = res.algo;
  p->workspace_bytes = res.workspaceSize;
  p->key = key;
  return SP_OK;
fail_pref:
  cublasLtMatmulPreferenceDestroy(pref);
fail_plan:
  plan_destroy(p);
  return lt_fail(cs, "building a matmul plan");
}

/* Creates the stream's handle, workspace and plan table on first use. Called with lt_mu held. */
static sp_status linear_state_ensure(sp__bstream *s) {
  if (SP__LIKELY(s->lt != NULL)) return SP_OK;
  sp__cuda_plan *plans = sp__calloc(SP__CUDA_PLAN_SLOTS, sizeof(*plans));
  if (!plans) return sp__fail(SP_ERR_HOST_MEMORY, "cuda: linear: out of host memory");
  void *ws = NULL;
  cudaError_t e = cudaMalloc(&ws, SP__CUDA_WORKSPACE_BYTES);
  if (e != cudaSuccess) {
    sp__free(plans);
    return sp__cuda_fail(e, "cudaMalloc(cuBLASLt workspace)");
  }
  cublasLtHandle_t lt = NULL;
  cublasStatus_t cs = cublasLtCreate(&lt);
  if (cs != CUBLAS_STATUS_SUCCESS) {
    cudaFree(ws);
    sp__free(plans);
    return lt_fail(cs, "cublasLtCreate");
  }
  s->plans = plans;
  s->workspace = ws;
  s->lt = lt;
  return SP_OK;
}

/* The cached plan for key, building it (and evicting the home slot if the probe run is full). */
static sp_status plan_get(sp__bstream *s, const sp__linear *op, unsigned align, lt_epi epi,
                          uint64_t key, sp__cuda_plan **out) {
  size_t home = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 56) % SP__CUDA_PLAN_SLOTS;
  size_t empty = SIZE_MAX;
  for (size_t i = 0; i < SP__CUDA_PLAN_PROBE; i++) {
    sp__cuda_plan *p = &s->plans[(home + i) % SP__CUDA_PLAN_SLOTS];
    if (p->key == key) {
      *out = p;
      return SP_OK;
    }
    if (p->key == 0 && empty == SIZE_MAX) empty = (home + i) % SP__CUDA_PLAN_SLOTS;
  }
  sp__cuda_plan *slot = &s->plans[empty != SIZE_MAX ? empty : home];
  if (slot->key) plan_destroy(slot);
  sp_status st = plan_build(s, op, align, epi, key, slot);
  if (st != SP_OK) return st;
  *out = slot;
  return SP_OK;
}

/* One cublasLtMatmul of op with plan p: y = x·wᵀ (+ bias and ReLU where p's epilogue has them). */
static sp_status matmul_run(sp__bstream *s, const sp__linear *op, sp__cuda_plan *p) {
  const float one = 1.0f, zero = 0.0f;
  cublasStatus_t cs;
  if (p->bias) {
    const void *bias = op->bias;
    cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                        sizeof(bias));
    if (cs != CUBLAS_STATUS_SUCCESS) return lt_fail(cs, "setting the bias pointer");
  }
  cs = cublasLtMatmul(s->lt, p->desc, &one, op->w, p->a, op->x, p->b, &zero, op->y, p->c, op->y,
                      p->c, &p->algo, s->workspace, p->workspace_bytes, s->stream);
  if (cs != CUBLAS_STATUS_SUCCESS) {
    (void)cudaGetLastError();
    return lt_fail(cs, "cublasLtMatmul");
  }
  return SP_OK;
}

/* The matmul of op (epilogue kind epi; bias: whether the full op has one) through its cached plan,
 * or a plan built for this call alone when the shape does not fit a key. lt_mu held. */
static sp_status matmul(sp__bstream *s, const sp__linear *op, lt_epi epi, bool bias) {
  unsigned align = linear_alignment(op);
  uint64_t key = plan_key(op, align, epi, bias);
  if (key) {
    sp__cuda_plan *p = NULL;
    sp_status st = plan_get(s, op, align, epi, key, &p);
    return st == SP_OK ? matmul_run(s, op, p) : st;
  }
  sp__cuda_plan once;
  sp_status st = plan_build(s, op, align, epi, 1, &once);
  if (st != SP_OK) return st;
  st = matmul_run(s, op, &once);
  plan_destroy(&once);
  return st;
}

/* The cuBLASLt implementation of op (module comment: epilogues and activations). lt_mu held. */
static sp_status linear_run(sp__bstream *s, const sp__linear *op) {
  sp_status st = matmul(s, op, op_epi(op), op->bias != NULL);
  if (st != SP_OK || op->act == SP__ACT_NONE || op->act == SP__ACT_RELU) return st;
  cudaError_t e = sp__cuda_act(s->stream, s->dev->pdl, op->y, (int)op->dtype,
                               (size_t)op->batch * op->out_features, (int)op->act);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "linear activation kernel launch");
}

/* ---- our kernel, the device's choice table, timing -------------------------------------- */

static sp_status gemv_run(sp__bstream *s, const sp__linear *op) {
  cudaError_t e =
      sp__cuda_gemv(s->stream, s->dev->pdl, s->dev->clusters, (int)op->dtype, op->io, op->x, op->w,
                    op->bias, op->y, op->batch, op->in_features, op->out_features, (int)op->act);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "linear kernel launch");
}

static sp_status impl_run(sp__bstream *s, const sp__linear *op, sp__cuda_impl impl) {
  return impl == SP__CUDA_IMPL_KERNEL ? gemv_run(s, op) : linear_run(s, op);
}

sp_status sp__cuda_linear_device_init(sp__bdevice *d) {
  static const char *const modes[] = {"auto", "cublaslt", "kernel"};
  size_t i = SP__CUDA_LINEAR_AUTO;
  sp_status st = sp__env_choice("cuda device_open", "STREAMPOOL_CUDA_LINEAR", modes, 3,
                                "auto, cublaslt or kernel", &i);
  if (st != SP_OK) return st;
  d->linear = (sp__cuda_linear_mode)i;
  memset(d->choice_key, 0, sizeof(d->choice_key));
  memset(d->choice, 0, sizeof(d->choice));
  if (sp__mutex_init(&d->choice_mu, SP__RANK_CUDA_CHOICE) != 0)
    return sp__fail(SP_ERR_BACKEND, "cuda: device_open: pthread_mutex_init failed");
  return SP_OK;
}

void sp__cuda_linear_device_fini(sp__bdevice *d) { sp__mutex_destroy(&d->choice_mu); }

static size_t choice_home(uint64_t key) {
  return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 40) % SP__CUDA_CHOICE_SLOTS;
}

/* The cached implementation for key on d, or NONE. Takes d->choice_mu. */
static sp__cuda_impl choice_find(sp__bdevice *d, uint64_t key) {
  sp__cuda_impl impl = SP__CUDA_IMPL_NONE;
  size_t home = choice_home(key);
  sp__mutex_lock(&d->choice_mu);
  for (size_t i = 0; i < CHOICE_PROBE; i++) {
    size_t k = (home + i) % SP__CUDA_CHOICE_SLOTS;
    if (d->choice_key[k] == key) {
      impl = (sp__cuda_impl)d->choice[k];
      break;
    }
  }
  sp__mutex_unlock(&d->choice_mu);
  return impl;
}

/* Remembers impl for key on d (overwriting a concurrent timing's answer for the same key, or
 * evicting the home slot when the probe run is full). Takes d->choice_mu. */
static void choice_store(sp__bdevice *d, uint64_t key, sp__cuda_impl impl) {
  size_t home = choice_home(key), slot = home, empty = SIZE_MAX;
  sp__mutex_lock(&d->choice_mu);
  for (size_t i = 0; i < CHOICE_PROBE; i++) {
    size_t k = (home + i) % SP__CUDA_CHOICE_SLOTS;
    if (d->choice_key[k] == key) {
      empty = k;
      break;
    }
    if (d->choice_key[k] == 0 && empty == SIZE_MAX) empty = k;
  }
  if (empty != SIZE_MAX) slot = empty;
  d->choice_key[slot] = key;
  d->choice[slot] = (unsigned char)impl;
  sp__mutex_unlock(&d->choice_mu);
}

/* One timing round: both implementations TIME_RUNS times each behind a TIME_SPIN_US busy kernel
 * (order alternating with the round), so they run back to back; their device times in ms. With
 * PDL each run is followed by one run of our kernel, so both sides time the op between two of our
 * kernels, as in a forward of our kernels: a cuBLASLt op (launched without PDL) is charged for the
 * overlap it takes from its neighbours, which timing it alone does not see (measured in
 * docs/PERFORMANCE.md, "Small-batch kernels"). An approximation: the neighbour is this op again
 * (its weights already in L2), and a model's last layer has no neighbour after it. Syncs s. Nothing
 * here waits on the host: another thread's synchronizing call cannot deadlock with the timing
 * (cuda_spin.cu says how a host gate did). */
static sp_status time_round(sp__bstream *s, const sp__linear *op, int round, cudaEvent_t ev[3],
                            float ms[2]) {
  sp__cuda_impl order[2] = {SP__CUDA_IMPL_CUBLASLT, SP__CUDA_IMPL_KERNEL};
  if (round & 1) {
    order[0] = SP__CUDA_IMPL_KERNEL;
    order[1] = SP__CUDA_IMPL_CUBLASLT;
  }
  cudaError_t e = sp__cuda_spin(s->stream, TIME_SPIN_US);
  if (e != cudaSuccess) return sp__cuda_fail(e, "spin kernel launch (linear timing)");
  sp_status st = SP_OK;
  e = cudaEventRecord(ev[0], s->stream);
  for (int k = 0; k < 2 && e == cudaSuccess && st == SP_OK; k++) {
    for (int i = 0; i < TIME_RUNS && st == SP_OK; i++) {
      st = impl_run(s, op, order[k]);
      if (st == SP_OK && s->dev->pdl) st = gemv_run(s, op); /* the neighbour */
    }
    if (st == SP_OK) e = cudaEventRecord(ev[k + 1], s->stream);
  }
  cudaError_t se = cudaStreamSynchronize(s->stream);
  if (st != SP_OK) return st;
  if (e == cudaSuccess) e = se;
  float t[2] = {0, 0};
  if (e == cudaSuccess) e = cudaEventElapsedTime(&t[0], ev[0], ev[1]);
  if (e == cudaSuccess) e = cudaEventElapsedTime(&t[1], ev[1], ev[2]);
  if (e != cudaSuccess) return sp__cuda_fail(e, "linear timing");
  ms[order[0] == SP__CUDA_IMPL_KERNEL] = t[0];
  ms[order[1] == SP__CUDA_IMPL_KERNEL] = t[1];
  return SP_OK;
}

/* Times cuBLASLt (with its activation kernel where there is one) against our kernel on op itself
 * (it is run 2 + 2 * TIME_REPS * TIME_RUNS times, with PDL our kernel as many more; y ends up
 * written by one of them: all compute it). Syncs s. A failure of our kernel only (e.g. no code for
 * this GPU) chooses cuBLASLt; a failure of cuBLASLt is returned. */
static sp_status linear_time(sp__bstream *s, const sp__linear *op, sp__cuda_impl *out) {
  sp_status st = linear_run(s, op); /* warm-up, also loads modules and fills caches */
  if (st != SP_OK) return st;
  if (gemv_run(s, op) != SP_OK) {
    *out = SP__CUDA_IMPL_CUBLASLT;
    return SP_OK;
  }
  cudaEvent_t ev[3] = {NULL, NULL, NULL};
  cudaError_t e = cudaSuccess;
  for (int i = 0; i < 3 && e == cudaSuccess; i++) e = cudaEventCreate(&ev[i]);
  if (e != cudaSuccess) {
    st = sp__cuda_fail(e, "cudaEventCreate (linear timing)");
    goto destroy_events;
  }
  float best[2] = {INFINITY, INFINITY}; /* [cublaslt, kernel] */
  for (int r = 0; r < TIME_REPS && st == SP_OK; r++) {
    float ms[2];
    st = time_round(s, op, r, ev, ms);
    for (int k = 0; k < 2 && st == SP_OK; k++) best[k] = fminf(best[k], ms[k]);
  }
  if (st == SP_OK) {
    *out = best[1] < best[0] ? SP__CUDA_IMPL_KERNEL : SP__CUDA_IMPL_CUBLASLT;
    sp__log(SP_LOG_DEBUG,
            "cuda: linear %u x %u -> %u %s act %d bias %d: cublaslt %.2f us, kernel %.2f us a "
            "run%s: %s",
            op->batch, op->in_features, op->out_features, sp__dtype_name(op->dtype), (int)op->act,
            op->bias != NULL, 1e3 * best[0] / TIME_RUNS, 1e3 * best[1] / TIME_RUNS,
            s->dev->pdl ? " (each followed by our kernel: a pair)" : "",
            *out == SP__CUDA_IMPL_KERNEL ? "kernel" : "cublaslt");
  }
destroy_events:
  for (int i = 0; i < 3; i++)
    if (ev[i]) cudaEventDestroy(ev[i]);
  return st;
}

/* The device's choice-table key of op: 0 when auto mode never chooses for it (batch above
 * SP__CUDA_GEMV_BATCH_MAX, or a dimension above PLAN_DIM_MAX). Unlike a plan key it holds the
 * activation: ops sharing a matmul plan (without activation and with GELU) may choose
 * differently, since the cuBLASLt side of the GELU one has an extra kernel. */
static uint64_t choice_key(const sp__linear *op, unsigned align) {
  _Static_assert(SP__CUDA_GEMV_BATCH_MAX < 64u && SP__ACT_COUNT <= 8,
                 "the choice key's batch and activation fields");
  if (op->batch > SP__CUDA_GEMV_BATCH_MAX || op->in_features > PLAN_DIM_MAX ||
      op->out_features > PLAN_DIM_MAX)
    return 0;
  uint64_t k = (uint64_t)op->batch;
  k = (k << PLAN_DIM_BITS) | op->in_features;
  k = (k << PLAN_DIM_BITS) | op->out_features;
  k = (k << 4) | log2u(align);
  k = (k << 1) | (op->bias != NULL);
  k = (k << 2) | (unsigned)op->dtype;
  return (k << 3) | (unsigned)op->act; /* batch >= 1, so never 0 */
}

/* The implementation for op in auto mode: the stream's cached answer (in the plan of op's
 * matmul, when its shape fits a plan key), the device's, or a timing now; cuBLASLt during capture
 * when nothing is known yet. lt_mu held. */
static sp_status linear_pick(sp__bstream *s, const sp__linear *op, sp__cuda_impl *out) {
  *out = SP__CUDA_IMPL_CUBLASLT;
  unsigned align = linear_alignment(op);
  uint64_t ckey = choice_key(op, align);
  if (!ckey) return SP_OK;
  lt_epi epi = op_epi(op);
  uint64_t pkey = plan_key(op, align, epi, op->bias != NULL);
  sp__cuda_plan *p = NULL;
  if (pkey) {
    sp_status st = plan_get(s, op, align, epi, pkey, &p);
    if (st != SP_OK) return st;
    if (SP__LIKELY(p->impl[op->act] != SP__CUDA_IMPL_NONE)) {
      *out = (sp__cuda_impl)p->impl[op->act];
      return SP_OK;
    }
  }
  sp__cuda_impl impl = choice_find(s->dev, ckey);
  if (impl == SP__CUDA_IMPL_NONE) {
    enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    cudaError_t e = cudaStreamIsCapturing(s->stream, &cap);
    if (e != cudaSuccess) return sp__cuda_fail(e, "cudaStreamIsCapturing");
    if (cap != cudaStreamCaptureStatusNone) return SP_OK; /* never time inside a capture */
    sp_status st = linear_time(s, op, &impl); /* finds p's key again: p stays in its slot */
    if (st != SP_OK) return st;
    choice_store(s->dev, ckey, impl);
  }
  if (p) p->impl[op->act] = (unsigned char)impl;
  *out = impl;
  return SP_OK;
}

int sp__cuda_linear_choice(sp__bdevice *d, const sp__linear *op) {
  uint64_t key = choice_key(op, linear_alignment(op));
  return key ? (int)choice_find(d, key) : SP__CUDA_IMPL_NONE;
}

/* ---- the slot ---------------------------------------------------------------------------- */

sp_status sp__cuda_linear_async(sp__bstream *s, const sp__linear *op) {
  if (!sp__dtype_valid(op->dtype))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: linear: unknown dtype %d", (int)op->dtype);
  if ((unsigned)op->act >= SP__ACT_COUNT)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: linear: unknown activation %d", (int)op->act);
  sp_status st = sp__linear_io_check(op, sp__cuda_linear_f32_io_rows(s->dev), "cuda: linear");
  if (st != SP_OK) return st;
  bool mixed = op->io && op->dtype != SP_F32; /* f32 x or y beside 16-bit weights */
  if (op->batch == 0 || op->out_features == 0) return SP_OK;
  if (op->in_features == 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: linear: in_features is 0");
  st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  if (mixed || s->dev->linear == SP__CUDA_LINEAR_KERNEL) return gemv_run(s, op);
  sp__mutex_lock(&s->lt_mu);
  st = linear_state_ensure(s);
  sp__cuda_impl impl = SP__CUDA_IMPL_CUBLASLT;
  if (st == SP_OK && s->dev->linear == SP__CUDA_LINEAR_AUTO) st = linear_pick(s, op, &impl);
  if (st == SP_OK) st = impl_run(s, op, impl);
  sp__mutex_unlock(&s->lt_mu);
  return st;
}

unsigned sp__cuda_linear_f32_io_rows(sp__bdevice *d) {
  return d->linear == SP__CUDA_LINEAR_CUBLASLT ? 0 : SP__CUDA_F32_IO_ROWS;
}

sp_status sp__cuda_linear_prepare(sp__bstream *s) {
  sp__mutex_lock(&s->lt_mu);
  sp_status st = linear_state_ensure(s);
  sp__mutex_unlock(&s->lt_mu);
  return st;
}

void sp__cuda_linear_release(sp__bstream *s) {
  sp__mutex_lock(&s->lt_mu);
  if (s->plans) {
    for (size_t i = 0; i < SP__CUDA_PLAN_SLOTS; i++)
      if (s->plans[i].key) plan_destroy(&s->plans[i]);
    sp__free(s->plans);
    s->plans = NULL;
  }
  if (s->lt) cublasLtDestroy(s->lt);
  s->lt = NULL;
  if (s->workspace) cudaFree(s->workspace);
  s->workspace = NULL;
  sp__mutex_unlock(&s->lt_mu);
}
