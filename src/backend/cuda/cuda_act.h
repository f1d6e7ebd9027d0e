/* The activations of a Linear on the device (backend.h's sp__act) and the elementwise kernel that
 * applies them where cuBLASLt's epilogue cannot (cuda_act.cu), callable from C. Internal to
 * src/backend/cuda.
 *
 * sp__cuda_act_apply (CUDA code only) is the one device definition of every activation, used by
 * these kernels and by the GEMV kernel's epilogue (cuda_gemv.cu); each is the host's formula
 * (host_math.c sp__host_act) in f32 with CUDA's accurate erff/tanhf/expf (the build never uses
 * --use_fast_math). Launches are stream-ordered and capturable; each returns its own launch
 * result. No state, no locks.
 */
#ifndef SP_BACKEND_CUDA_ACT_H
#define SP_BACKEND_CUDA_ACT_H

#include <stdbool.h>
#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Stream-ordered, in place: y[i] = act(y[i]) for i < n (act an sp__act value), computed in f32;
 * y holds dtype elements (an sp_dtype; bf16 and f16 read widened and rounded back to nearest
 * even). pdl lets the launch overlap the kernel before it (cuda_pdl.h). */
cudaError_t sp__cuda_act(cudaStream_t s, bool pdl, void *y, int dtype, size_t n, int act);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
extern "C" {
#include "backend/backend.h"
}

/* act(v) in f32 (act an sp__act value), exactly the host's formulas: ReLU keeps NaN and turns -0
 * into +0. */
static __device__ __forceinline__ float sp__cuda_act_apply(float v, int act) {
  switch (act) {
  case SP__ACT_RELU: return (v > 0.0f || v != v) ? v : 0.0f;
  case SP__ACT_GELU_ERF: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
  case SP__ACT_GELU_TANH:
    return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
  case SP__ACT_SILU: return v / (1.0f + expf(-v));
  case SP__ACT_TANH: return tanhf(v);
  default: return v;
  }
}
#endif

#endif /* SP_BACKEND_CUDA_ACT_H */
