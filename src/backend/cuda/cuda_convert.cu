/* Element-type conversion on the device: one grid-stride kernel per (destination, source) pair of
 * f32, bf16 and f16, through f32 (widening is exact; narrowing rounds once to nearest even).
 *
 * With pdl a launch may overlap the kernel before it (cuda_pdl.h): each kernel waits for it before
 * reading src, then lets the next one start. Owns nothing; launches are stream-ordered on the
 * caller's stream. Launch errors are returned (the launch's own result), never read back
 * through cudaGetLastError, so an unrelated earlier error on this thread is not misreported
 * here. No locks.
 */
#include "cuda_convert.h"
#include "cuda_elem.cuh"
#include "cuda_pdl.h"

namespace {

template <typename D, typename S>
__global__ void convert_kernel(D *dst, const S *src, size_t n) {
  sp__pdl_wait();
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    sp__st(dst, i, sp__ld(src, i));
}

constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = 4096; /* grid-stride beyond this: plenty to fill an H100 */

dim3 grid_for(size_t n) {
  size_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return dim3((unsigned)blocks);
}

}  // namespace

extern "C" cudaError_t sp__cuda_convert(cudaStream_t s, int pdl, void *dst, int dst_type,
                                        const void *src, int src_type, size_t n) {
  if (n == 0) return cudaSuccess;
  return sp__elem_dispatch(dst_type, [&](auto d) {
    return sp__elem_dispatch(src_type, [&](auto t) {
      using D = decltype(d);
      using S = decltype(t);
      D *dp = static_cast<D *>(dst);
      const S *sp = static_cast<const S *>(src);
      void *args[] = {&dp, &sp, &n};
      return sp__cuda_launch(reinterpret_cast<const void *>(convert_kernel<D, S>), grid_for(n),
                             dim3(kThreads), args, s, pdl != 0);
    });
  });
}
