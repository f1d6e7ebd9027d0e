/* The elementwise activation kernel of the CUDA backend's linear op (cuda_linear.c runs it after a
 * cuBLASLt matmul whose epilogue has no such activation): in place on f32 or bf16 (read widened,
 * activated in f32, rounded back to nearest even).
 *
 * With pdl the kernel may start before the matmul before it ends; it waits for it first
 * (cuda_pdl.h). Owns nothing; grid-stride kernels on the caller's stream, capturable; the launch's
 * own error is returned (never read back through cudaGetLastError). No locks.
 */
#include <cuda_bf16.h>

#include "cuda_act.h"
#include "cuda_pdl.h"

namespace {

constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = 8192; /* grid-stride beyond this */

dim3 grid_for(size_t n) {
  size_t blocks = (n + kThreads - 1) / kThreads;
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

template <typename T>
__global__ void act_kernel(T *y, size_t n, int act) {
  sp__pdl_wait();
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    store_f(&y[i], sp__cuda_act_apply(load_f(&y[i]), act));
}

}  // namespace

extern "C" cudaError_t sp__cuda_act(cudaStream_t s, bool pdl, void *y, bool bf16, size_t n,
                                    int act) {
  if (n == 0 || act == SP__ACT_NONE) return cudaSuccess;
  void *args[] = {&y, &n, &act};
  const void *fn = bf16 ? reinterpret_cast<const void *>(act_kernel<__nv_bfloat16>)
                        : reinterpret_cast<const void *>(act_kernel<float>);
  return sp__cuda_launch(fn, grid_for(n), dim3(kThreads), args, s, pdl);
}
