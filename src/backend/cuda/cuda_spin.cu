/* A kernel that keeps a stream busy for a fixed time: the linear timing (cuda_linear.c) queues its
 * runs behind it so the device executes them back to back, as a graph would, without anything on
 * the host holding the stream. A host-function gate did that before and could deadlock: while the
 * gate held the stream, the timing thread's next launch could wait on the driver for a thread
 * whose synchronizing call (cudaFree, a sync of the shared stream) waited for the gate.
 * Invariants: the kernel reads only the GPU's global timer; it ends by itself after `ns`.
 * Locking: none. */
#include <cuda_runtime.h>

#include "cuda_spin.h"

namespace {

__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

}  // namespace

extern "C" cudaError_t sp__cuda_spin(cudaStream_t s, unsigned us) {
  unsigned long long ns = (unsigned long long)us * 1000ull;
  void *args[] = {&ns};
  return cudaLaunchKernel(reinterpret_cast<const void *>(spin_kernel), dim3(1), dim3(1), args, 0,
                          s); /* its own result, not an earlier call's */
}
