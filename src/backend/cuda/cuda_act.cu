/* The elementwise activation kernel of the CUDA backend's linear op (cuda_linear.c runs it after a
 * cuBLASLt matmul whose epilogue has no such activation): in place on f32 or bf16 (read widened,
 * activated in f32, rounded back to nearest even).
 *
 * Where y is 16-byte aligned each thread reads and writes 16 bytes at a time (4 f32 or 8 bf16).
 * With pdl the kernel may start before the matmul before it ends; it waits for it first
 * (cuda_pdl.h). Owns nothing; grid-stride kernels on the caller's stream, capturable; the launch's
 * own error is returned (never read back through cudaGetLastError). No locks.
 */
#include <cuda_bf16.h>
#include <stdint.h>

#include "cuda_act.h"
#include "cuda_pdl.h"

namespace {

constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = 8192; /* grid-stride beyond this */

/* Blocks for `threads` threads of kThreads, at most kMaxBlocks (grid-stride beyond). */
dim3 grid_for(size_t threads) {
  size_t blocks = (threads + kThreads - 1) / kThreads;
  return dim3((unsigned)(blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

template <typename T>
__device__ __forceinline__ float load_f(const T *p);
template <>
__device__ __forceinline__ float load_f<float>(const float *p) {
  return *p;
}
template <>
__device__ __forceinline__ float load_f<__nv_bfloat16>(const __nv_bfloat16 *p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ void store_f(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_f(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* y[i] = act(y[i]) for i < n. VEC: y is 16-byte aligned, and whole 16-byte groups are read and
 * written at once (the tail of n past the last whole group element by element). */
template <typename T, bool VEC>
__global__ void act_kernel(T *y, size_t n, int act) {
  sp__pdl_wait();
  constexpr unsigned G = VEC ? 16 / sizeof(T) : 1; /* elements a thread handles at once */
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t grouped = VEC ? n / G * G : 0; /* elements handled G at a time */
  const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if constexpr (VEC) {
    uint4 *yv = reinterpret_cast<uint4 *>(y);
    for (size_t i = first; i < grouped / G; i += stride) {
      uint4 u = yv[i];
      T *t = reinterpret_cast<T *>(&u);
#pragma unroll
      for (unsigned k = 0; k < G; k++) store_f(&t[k], sp__cuda_act_apply(load_f(&t[k]), act));
      yv[i] = u;
    }
  }
  for (size_t i = grouped + first; i < n; i += stride)
    store_f(&y[i], sp__cuda_act_apply(load_f(&y[i]), act));
}

template <typename T>
cudaError_t act_launch(cudaStream_t s, bool pdl, T *y, size_t n, int act) {
  void *args[] = {&y, &n, &act};
  const bool vec = ((uintptr_t)y & 15u) == 0;
  const void *fn = vec ? reinterpret_cast<const void *>(act_kernel<T, true>)
                       : reinterpret_cast<const void *>(act_kernel<T, false>);
  return sp__cuda_launch(fn, grid_for(vec ? (n + 16 / sizeof(T) - 1) / (16 / sizeof(T)) : n),
                         dim3(kThreads), args, s, pdl);
}

}  // namespace

extern "C" cudaError_t sp__cuda_act(cudaStream_t s, bool pdl, void *y, bool bf16, size_t n,
                                    int act) {
  if (n == 0 || act == SP__ACT_NONE) return cudaSuccess;
  return bf16 ? act_launch(s, pdl, static_cast<__nv_bfloat16 *>(y), n, act)
              : act_launch(s, pdl, static_cast<float *>(y), n, act);
}
