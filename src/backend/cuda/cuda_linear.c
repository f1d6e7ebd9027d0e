/* The CUDA backend's linear op: y = act(x·wᵀ + b) through cublasLtMatmul with a fused epilogue.
 *
 * Layout: the op is row-major (PyTorch): y[B,O] = x[B,I]·w[O,I]ᵀ + b[O]. cuBLASLt is
 * column-major, where row-major y is yᵀ [O,B] (ld O), x is xᵀ [I,B] (ld I) and w is wᵀ [I,O]
 * (ld I). So we compute yᵀ = op_T(wᵀ)·xᵀ: A = w with TRANSA = T, B = x, C = D = y, M = O, N = B,
 * K = I, and the bias (length M) is broadcast along columns by the BIAS / RELU_BIAS epilogue.
 * f32 uses CUBLAS_COMPUTE_32F (never FAST_TF32); bf16 stores bf16 and accumulates in f32 with f32
 * scales and a bf16 bias.
 *
 * Owns per stream (lazily, at its first linear op): a cuBLASLt handle, a workspace and a hash
 * table of plans keyed by (dtype, relu, bias, pointer alignment, batch, in, out). A plan holds the
 * descriptors, layouts and the heuristic's algorithm, so a repeated shape costs one attribute set
 * and one cublasLtMatmul call.
 *
 * Locking: s->lt_mu guards the handle, workspace and plans (the bias pointer is written into the
 * cached descriptor just before the matmul, so the whole call holds it). It is a backend lock
 * (rank in src/core/lock.h); nothing else of ours is taken while it is held.
 */
#include <string.h>

#include "cuda_internal.h"

enum { PLAN_DIM_BITS = 19 };
#define PLAN_DIM_MAX ((1u << PLAN_DIM_BITS) - 1u)

static sp_status lt_fail(cublasStatus_t cs, const char *what) {
  return sp__fail(SP_ERR_BACKEND, "cuda: %s: %s (%s)", what, cublasLtGetStatusString(cs),
                  cublasLtGetStatusName(cs));
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

/* 0 when the shape does not fit the key (then the plan is built, used once and destroyed). */
static uint64_t plan_key(const sp__linear *op, unsigned align) {
  if (op->batch > PLAN_DIM_MAX || op->in_features > PLAN_DIM_MAX || op->out_features > PLAN_DIM_MAX)
    return 0;
  uint64_t k = (uint64_t)op->batch;
  k = (k << PLAN_DIM_BITS) | op->in_features;
  k = (k << PLAN_DIM_BITS) | op->out_features;
  k = (k << 4) | log2u(align);
  k = (k << 1) | (op->bias != NULL);
  k = (k << 1) | (op->relu ? 1u : 0u);
  k = (k << 1) | (op->dtype == SP_BF16);
  return k; /* batch >= 1, so never 0 */
}

static void plan_destroy(sp__cuda_plan *p) {
  if (p->c) cublasLtMatrixLayoutDestroy(p->c);
  if (p->b) cublasLtMatrixLayoutDestroy(p->b);
  if (p->a) cublasLtMatrixLayoutDestroy(p->a);
  if (p->desc) cublasLtMatmulDescDestroy(p->desc);
  memset(p, 0, sizeof(*p));
}

static cublasStatus_t plan_describe(sp__cuda_plan *p, const sp__linear *op) {
  cudaDataType_t t = op->dtype == SP_BF16 ? CUDA_R_16BF : CUDA_R_32F;
  cublasStatus_t cs = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (cs != CUBLAS_STATUS_SUCCESS) return cs;
  int32_t opa = CUBLAS_OP_T, opb = CUBLAS_OP_N;
  uint32_t epi = op->bias ? (op->relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                          : (op->relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  int32_t bias_type = (int32_t)t;
  if ((cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa,
                                           sizeof(opa))) != CUBLAS_STATUS_SUCCESS ||
      (cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb,
                                           sizeof(opb))) != CUBLAS_STATUS_SUCCESS ||
      (cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                           sizeof(epi))) != CUBLAS_STATUS_SUCCESS)
    return cs;
  if (op->bias && (cs = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                       &bias_type, sizeof(bias_type))) !=
                      CUBLAS_STATUS_SUCCESS)
    return cs;
  uint64_t m = op->out_features, n = op->batch, k = op->in_features;
  if ((cs = cublasLtMatrixLayoutCreate(&p->a, t, k, m, (int64_t)k)) != CUBLAS_STATUS_SUCCESS ||
      (cs = cublasLtMatrixLayoutCreate(&p->b, t, k, n, (int64_t)k)) != CUBLAS_STATUS_SUCCESS ||
      (cs = cublasLtMatrixLayoutCreate(&p->c, t, m, n, (int64_t)m)) != CUBLAS_STATUS_SUCCESS)
    return cs;
  return CUBLAS_STATUS_SUCCESS;
}

static sp_status plan_build(sp__bstream *s, const sp__linear *op, unsigned align, uint64_t key,
                            sp__cuda_plan *p) {
  memset(p, 0, sizeof(*p));
  cublasLtMatmulPreference_t pref = NULL;
  cublasLtMatmulHeuristicResult_t res;
  int found = 0;
  size_t ws = SP__CUDA_WORKSPACE_BYTES;
  uint32_t al = align;
  cublasStatus_t cs = plan_describe(p, op);
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
  cs = cublasLtMatmulAlgoGetHeuristic(s->lt, p->desc, p->a, p->b, p->c, p->c, pref, 1, &res,
                                      &found);
  if (cs != CUBLAS_STATUS_SUCCESS) goto fail_pref;
  cublasLtMatmulPreferenceDestroy(pref);
  if (found < 1) {
    plan_destroy(p);
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "cuda: linear: cuBLASLt has no algorithm for %s batch %u, %u -> %u, "
                    "pointers aligned to %u bytes",
                    op->dtype == SP_BF16 ? "bf16" : "f32", op->batch, op->in_features,
                    op->out_features, align);
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
static sp_status plan_get(sp__bstream *s, const sp__linear *op, unsigned align, uint64_t key,
                          sp__cuda_plan **out) {
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
  sp_status st = plan_build(s, op, align, key, slot);
  if (st != SP_OK) return st;
  *out = slot;
  return SP_OK;
}

static sp_status linear_run(sp__bstream *s, const sp__linear *op, sp__cuda_plan *p) {
  const float one = 1.0f, zero = 0.0f;
  cublasStatus_t cs;
  if (op->bias) {
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

sp_status sp__cuda_linear_async(sp__bstream *s, const sp__linear *op) {
  if (op->dtype != SP_F32 && op->dtype != SP_BF16)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: linear: unknown dtype %d", (int)op->dtype);
  if (op->batch == 0 || op->out_features == 0) return SP_OK;
  if (op->in_features == 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: linear: in_features is 0");
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  unsigned align = linear_alignment(op);
  uint64_t key = plan_key(op, align);
  sp__mutex_lock(&s->lt_mu);
  st = linear_state_ensure(s);
  if (st != SP_OK) goto unlock;
  if (key) {
    sp__cuda_plan *p = NULL;
    st = plan_get(s, op, align, key, &p);
    if (st == SP_OK) st = linear_run(s, op, p);
  } else {
    sp__cuda_plan once;
    st = plan_build(s, op, align, 1, &once);
    if (st == SP_OK) {
      st = linear_run(s, op, &once);
      plan_destroy(&once);
    }
  }
unlock:
  sp__mutex_unlock(&s->lt_mu);
  return st;
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
