/* The busy-wait kernel (cuda_spin.cu), callable from C. Internal to src/backend/cuda. */
#ifndef SP_BACKEND_CUDA_SPIN_H
#define SP_BACKEND_CUDA_SPIN_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Stream-ordered: one thread of one block spins for us microseconds of GPU time, then ends; work
 * queued behind it on s starts after. Returns the launch's result. Any thread. */
cudaError_t sp__cuda_spin(cudaStream_t s, unsigned us);

#ifdef __cplusplus
}
#endif

#endif /* SP_BACKEND_CUDA_SPIN_H */
