/* The elementwise activation kernels of the CUDA backend's linear op (cuda_linear.c runs them after
 * a cuBLASLt matmul whose epilogue has no such activation): in place on f32, and bias + activation
 * + rounding from an f32 matmul result to bf16, so a bf16 output is rounded once, after the
 * activation, as backend.h requires.
 *
 * Owns nothing; grid-stride kernels on the caller's stream, capturable; the launch's own error is
 * returned (never read back through cudaGetLastError). No locks.
 */
#include <cuda_bf16.h>

#include "cuda_act.h"

namespace {

constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = 8192; /* grid-stride beyond this */

dim3 grid_for(size_t n) {
  size_t blocks = (n + kThreads - 1) / kThreads;
  return dim3((unsigned)(blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

__global__ void act_f32_kernel(float *y, size_t n, int act) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = sp__cuda_act_apply(y[i], act);
}

__global__ void bias_act_bf16_kernel(__nv_bfloat16 *y, size_t ldy, const float *__restrict__ src,
                                     const __nv_bfloat16 *__restrict__ bias, unsigned cols,
                                     size_t n, int act) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const size_t r = i / cols, c = i % cols;
    float v = src[i];
    if (bias) v += __bfloat162float(bias[c]);
    y[r * ldy + c] = __float2bfloat16_rn(sp__cuda_act_apply(v, act));
  }
}

}  // namespace

extern "C" cudaError_t sp__cuda_act_f32(cudaStream_t s, float *y, size_t n, int act) {
  if (n == 0 || act == SP__ACT_NONE) return cudaSuccess;
  void *args[] = {&y, &n, &act};
  return cudaLaunchKernel(reinterpret_cast<const void *>(act_f32_kernel), grid_for(n),
                          dim3(kThreads), args, 0, s);
}

extern "C" cudaError_t sp__cuda_bias_act_bf16(cudaStream_t s, void *y, size_t ldy, const float *src,
                                              const void *bias, unsigned rows, unsigned cols,
                                              int act) {
  size_t n = (size_t)rows * cols;
  if (n == 0) return cudaSuccess;
  __nv_bfloat16 *yp = static_cast<__nv_bfloat16 *>(y);
  const __nv_bfloat16 *bp = static_cast<const __nv_bfloat16 *>(bias);
  void *args[] = {&yp, &ldy, &src, &bp, &cols, &n, &act};
  return cudaLaunchKernel(reinterpret_cast<const void *>(bias_act_bf16_kernel), grid_for(n),
                          dim3(kThreads), args, 0, s);
}
