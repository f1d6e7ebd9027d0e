/* White-box view of the CUDA backend's linear choice (cuda_linear.c), for tests and benchmarks;
 * free of CUDA headers. Internal to the library. */
#ifndef SP_BACKEND_CUDA_SELECT_H
#define SP_BACKEND_CUDA_SELECT_H

#include "backend/backend.h"

/* The largest batch our GEMV kernel is timed for in auto mode (larger batches: cuBLASLt). */
#define SP__CUDA_GEMV_BATCH_MAX 32u
/* The most rows of a bf16 or f16 linear with f32 x or y (sp__linear.io): the GEMV's batches, where
 * our kernel beats cuBLASLt in 16 bits (docs/PERFORMANCE.md); such ops always run our kernel. */
#define SP__CUDA_F32_IO_ROWS 4u

#ifdef __cplusplus
extern "C" {
#endif

/* What device d (a CUDA backend device) has cached for op's key: 0 nothing yet, 1 cuBLASLt,
 * 2 our kernel. Any thread. */
int sp__cuda_linear_choice(sp__bdevice *d, const sp__linear *op);

#ifdef __cplusplus
}
#endif

#endif /* SP_BACKEND_CUDA_SELECT_H */
