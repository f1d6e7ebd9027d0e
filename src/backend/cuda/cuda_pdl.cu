/* The one question about PDL the device open asks (cuda_pdl.h): were this build's kernels
 * compiled with the grid-dependency calls for the current device? A probe kernel (never
 * launched) carries the build's architectures like every other kernel of the backend; its PTX
 * version says whether sp__pdl_wait() is in it. Owns nothing; no locks.
 */
#include "cuda_pdl.h"

namespace {

__global__ void pdl_probe() { sp__pdl_wait(); }

}  // namespace

extern "C" int sp__cuda_pdl_built(void) {
  cudaFuncAttributes a;
  if (cudaFuncGetAttributes(&a, reinterpret_cast<const void *>(pdl_probe)) != cudaSuccess) {
    (void)cudaGetLastError(); /* not a sticky error: no image for this device means no PDL */
    return 0;
  }
  return a.ptxVersion >= 90;
}
