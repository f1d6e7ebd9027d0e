/* Programmatic dependent launch (PDL, compute capability 9.0 and up) for the backend's own
 * kernels: one launch helper and the device-side wait (CUDA C++), and the check at device open
 * that the built kernels have it (C). Internal to src/backend/cuda.
 *
 * A kernel launched with pdl set may start while the kernel before it on the stream still runs;
 * it must call sp__pdl_wait() before it reads anything an earlier op wrote or writes anything an
 * earlier op reads (the wait returns once every earlier kernel on the stream has finished and its
 * writes are visible). Before the wait it may only read what no op of a running forward writes: a
 * layer's weights (uploaded and synced at load). Once the wait returns it also lets the next PDL
 * kernel start its own part before its wait, so that part overlaps this kernel's work. The wait
 * does nothing on older devices and in kernels launched without pdl; the ordering then is the
 * stream's. Graph capture records the overlap as programmatic edges, so replays keep it. Kernels
 * that do not follow the protocol (cuBLASLt's) are launched without pdl and wait for the whole of
 * what comes before them.
 */
#ifndef SP_BACKEND_CUDA_PDL_H
#define SP_BACKEND_CUDA_PDL_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Whether the kernels this build runs on the current device were compiled from compute_90 PTX or
 * later, so that they contain the two calls below and the thread-block-cluster code (cuda_gemv.cu's
 * split kernel): 1 or 0. A build for older architectures JIT-compiled on an H100 lacks both, and
 * launching those with pdl would let them read early. Device open asks it once (cuda_pdl.cu). */
int sp__cuda_sm90_built(void);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
/* Waits for the kernel before this one on the stream (all of it, its writes visible), then lets
 * the next PDL kernel start. The same instructions as the runtime's
 * cudaGridDependencySynchronize() and cudaTriggerProgrammaticLaunchCompletion(), which nvcc only
 * offers for compute_90 and up. */
__device__ __forceinline__ void sp__pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Launches fn<<<grid, block, 0, s>>>(args...), allowed to overlap the kernel before it on s when
 * pdl is set (the device's flag: sp__bdevice.pdl), in thread-block clusters of 1 x cluster_y
 * blocks when cluster_y > 1 (only where sp__bdevice.clusters says the device and the build have
 * them). Returns the launch's result. */
static inline cudaError_t sp__cuda_launch(const void *fn, dim3 grid, dim3 block, void **args,
                                          cudaStream_t s, bool pdl, unsigned cluster_y = 1) {
  cudaLaunchAttribute attr[2] = {};
  unsigned n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_y > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = 1;
    attr[n].val.clusterDim.y = cluster_y;
    attr[n++].val.clusterDim.z = 1;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = 0;
  cfg.stream = s;
  cfg.attrs = n ? attr : nullptr;
  cfg.numAttrs = n;
  return cudaLaunchKernelExC(&cfg, fn, args);
}
#endif /* __CUDACC__ */

#endif /* SP_BACKEND_CUDA_PDL_H */
