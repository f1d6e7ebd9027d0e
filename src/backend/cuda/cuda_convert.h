/* f32 <-> bf16 conversion kernels (cuda_convert.cu), callable from C. Internal to src/backend/cuda.
 */
#ifndef SP_BACKEND_CUDA_CONVERT_H
#define SP_BACKEND_CUDA_CONVERT_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Stream-ordered: dst[i] = (bf16)src[i], round to nearest even (NaN stays NaN). pdl != 0 lets the
 * launch overlap the kernel before it (cuda_pdl.h). */
cudaError_t sp__cuda_f32_to_bf16(cudaStream_t s, int pdl, void *dst, const float *src, size_t n);
/* Stream-ordered: dst[i] = (float)src[i], exact; pdl as above. */
cudaError_t sp__cuda_bf16_to_f32(cudaStream_t s, int pdl, float *dst, const void *src, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* SP_BACKEND_CUDA_CONVERT_H */
