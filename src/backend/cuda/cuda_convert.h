/* Element-type conversion kernels (cuda_convert.cu), callable from C. Internal to
 * src/backend/cuda. */
#ifndef SP_BACKEND_CUDA_CONVERT_H
#define SP_BACKEND_CUDA_CONVERT_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Stream-ordered: dst[i] = src[i] for i < n, dst_type and src_type sp_dtype values (f32, bf16,
 * f16); narrowing rounds to nearest even (NaN stays NaN, f16 overflows to infinity), widening is
 * exact. pdl != 0 lets the launch overlap the kernel before it (cuda_pdl.h). */
cudaError_t sp__cuda_convert(cudaStream_t s, int pdl, void *dst, int dst_type, const void *src,
                             int src_type, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* SP_BACKEND_CUDA_CONVERT_H */
