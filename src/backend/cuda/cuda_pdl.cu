/* The one question about the build the device open asks (cuda_pdl.h): were this build's kernels
 * for the current device compiled for compute capability 9.0 or later (the grid-dependency calls
 * and thread-block clusters)? A probe kernel (never launched) carries the build's architectures
 * like every other kernel of the backend; its PTX version says whether sp__pdl_wait() is in it.
 * Owns nothing; no locks.
 */
#include "cuda_pdl.h"

namespace {

__global__ void pdl_probe() { sp__pdl_wait(); }

}  // namespace

extern "C" int sp__cuda_sm90_built(void) {
  cudaFuncAttributes a;
  if (cudaFuncGetAttributes(&a, reinterpret_cast<const void *>(pdl_probe)) != cudaSuccess) {
    (void)cudaGetLastError(); /* not a sticky error: no image for this device means no PDL */
    return 0;
  }
  return a.ptxVersion >= 90;
}
