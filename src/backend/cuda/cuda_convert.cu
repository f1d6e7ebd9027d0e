/* f32 <-> bf16 conversion on the device: one grid-stride kernel per direction.
 *
 * With pdl a launch may overlap the kernel before it (cuda_pdl.h): each kernel waits for it before
 * reading src, then lets the next one start. Owns nothing; launches are stream-ordered on the
 * caller's stream. Launch errors are returned (the launch's own result), never read back
 * through cudaGetLastError, so an unrelated earlier error on this thread is not misreported
 * here. No locks.
 */
#include <cuda_bf16.h>

#include "cuda_convert.h"
#include "cuda_pdl.h"

namespace {

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
  sp__pdl_wait();
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void bf16_to_f32_kernel(float *dst, const __nv_bfloat16 *src, size_t n) {
  sp__pdl_wait();
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = __bfloat162float(src[i]);
}

constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = 4096; /* grid-stride beyond this: plenty to fill an H100 */

dim3 grid_for(size_t n) {
  size_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return dim3((unsigned)blocks);
}

}  // namespace

extern "C" cudaError_t sp__cuda_f32_to_bf16(cudaStream_t s, int pdl, void *dst, const float *src,
                                            size_t n) {
  if (n == 0) return cudaSuccess;
  __nv_bfloat16 *d = static_cast<__nv_bfloat16 *>(dst);
  void *args[] = {&d, &src, &n};
  return sp__cuda_launch(reinterpret_cast<const void *>(f32_to_bf16_kernel), grid_for(n),
                         dim3(kThreads), args, s, pdl != 0);
}

extern "C" cudaError_t sp__cuda_bf16_to_f32(cudaStream_t s, int pdl, float *dst, const void *src,
                                            size_t n) {
  if (n == 0) return cudaSuccess;
  const __nv_bfloat16 *p = static_cast<const __nv_bfloat16 *>(src);
  void *args[] = {&dst, &p, &n};
  return sp__cuda_launch(reinterpret_cast<const void *>(bf16_to_f32_kernel), grid_for(n),
                         dim3(kThreads), args, s, pdl != 0);
}
