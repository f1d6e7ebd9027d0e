/* The encoder-layer kernels of the CUDA backend (cuda_nn.cu), callable from C. Internal to
 * src/backend/cuda; the nn_async slot (cuda_backend.c) checks the op first. */
#ifndef SP_BACKEND_CUDA_NN_H
#define SP_BACKEND_CUDA_NN_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "backend/backend.h"

/* The largest attention head_dim the attention kernel handles (32 lanes x 4 values a lane). */
#define SP__CUDA_NN_HEAD_DIM_MAX 128u

/* Stream-ordered: runs op (already accepted by sp__nn_op_check; attention's head_dim at most
 * SP__CUDA_NN_HEAD_DIM_MAX) as one kernel launch on s, f32, bf16 or f16 storage, f32 arithmetic;
 * pdl != 0 lets it overlap the kernel before it (cuda_pdl.h). Returns the launch's result.
 * Capturable: no allocation, no sync. Any thread. */
cudaError_t sp__cuda_nn(cudaStream_t s, int pdl, const sp__nn *op);

#ifdef __cplusplus
}
#endif

#endif /* SP_BACKEND_CUDA_NN_H */
