/* The elementwise activation kernel of the CUDA backend's linear op (cuda_linear.c runs it after a
 * cuBLASLt matmul whose epilogue has no such activation): in place on f32, bf16 or f16 (read
 * widened, activated in f32, rounded back to nearest even).
 *
 * Where y is 16-byte aligned each thread reads and writes 16 bytes at a time (4 f32 or 8 bf16 or
 * f16). With pdl the kernel may start before the matmul before it ends; it waits for it first
 * (cuda_pdl.h). Owns nothing; grid-stride kernels on the caller's stream, capturable; the launch's
 * own error is returned (never read back through cudaGetLastError). No locks.
 */
#include <stdint.h>

#include "cuda_act.h"
#include "cuda_elem.cuh"
#include "cuda_pdl.h"

namespace {

constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = 8192; /* grid-stride beyond this */

/* Blocks for `threads` threads of kThreads, at most kMaxBlocks (grid-stride beyond). */
dim3 grid_for(size_t threads) {
  size_t blocks = (threads + kThreads - 1) / kThreads;
  return dim3((unsigned)(blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

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
      for (unsigned k = 0; k < G; k++) sp__st(t, k, sp__cuda_act_apply(sp__ld(t, k), act));
      yv[i] = u;
    }
  }
  for (size_t i = grouped + first; i < n; i += stride)
    sp__st(y, i, sp__cuda_act_apply(sp__ld(y, i), act));
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

extern "C" cudaError_t sp__cuda_act(cudaStream_t s, bool pdl, void *y, int dtype, size_t n,
                                    int act) {
  if (n == 0 || act == SP__ACT_NONE) return cudaSuccess;
  return sp__elem_dispatch(
      dtype, [&](auto t) { return act_launch(s, pdl, static_cast<decltype(t) *>(y), n, act); });
}
