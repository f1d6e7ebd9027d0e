/* The small-batch linear kernels (cuda_gemv.cu), callable from C. Internal to src/backend/cuda. */
#ifndef SP_BACKEND_CUDA_GEMV_H
#define SP_BACKEND_CUDA_GEMV_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Stream-ordered: y[batch, out] = act(x[batch, in] · w[out, in]ᵀ + bias[out]), row-major, every
 * array of dtype (an sp_dtype: f32, bf16 or f16), f32 accumulation; bias may be NULL; act (an
 * sp__act value) is applied in f32 after the bias, before y is rounded. Any shape and
 * element-aligned pointers (16-byte loads where x and w allow them). pdl != 0 lets the launch
 * overlap the kernel before it on s (cuda_pdl.h: w is read before the wait); clusters != 0 lets 5
 * to 32 rows split in_features over a thread-block cluster (sp__bdevice.clusters: compute
 * capability 9.0+). Returns the launch's result; batch or out 0 launches nothing. io
 * (sp__linear.io) reads x or writes y as f32 beside 16-bit weights, at most SP__CUDA_F32_IO_ROWS
 * rows (more: cudaErrorInvalidValue). */
cudaError_t sp__cuda_gemv(cudaStream_t s, int pdl, int clusters, int dtype, unsigned io,
                          const void *x, const void *w, const void *bias, void *y, unsigned batch,
                          unsigned in, unsigned out, int act);

#ifdef __cplusplus
}
#endif

#endif /* SP_BACKEND_CUDA_GEMV_H */
