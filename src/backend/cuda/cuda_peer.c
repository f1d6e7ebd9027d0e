/* CUDA peer access and peer copies: the memcpy_peer_async slot of the CUDA backend.
 *
 * Owns: the process-wide table of open CUDA ordinals (how many sp__bdevice each has open) and
 * enabling peer access between them. When device i opens, for every other open ordinal j, access
 * i -> j and j -> i is enabled where cudaDeviceCanAccessPeer says it can be (NVLink or PCIe P2P),
 * so copies between them go directly; where it cannot, nothing is enabled and cudaMemcpyPeerAsync
 * stages through the host by itself. Peer access belongs to the primary contexts, which this
 * backend never destroys, so it is never disabled; closing a device only drops its count.
 *
 * Copies: device -> device of two ordinals uses cudaMemcpyPeerAsync on the destination stream;
 * anything else (a host pointer on either side, one ordinal) uses cudaMemcpyAsync with
 * cudaMemcpyDefault (UVA tells the direction). Both are stream-ordered on the destination stream
 * only; the core's caller orders the source side with an event.
 *
 * Locking: cuda_peer_mu guards cuda_peer_open_count and is held across the enabling calls at
 * open (a backend-internal lock, rank in src/core/lock.h: no core pool or allocator lock is ever
 * held here).
 */
#include "cuda_internal.h"

enum { CUDA_PEER_ORDINALS_MAX = 64 }; /* ordinals tracked for peer enabling */

static sp__mutex cuda_peer_mu = SP__MUTEX_INITIALIZER(CUDA_PEER);
static unsigned cuda_peer_open_count[CUDA_PEER_ORDINALS_MAX]; /* cuda_peer_mu: opens per ordinal */

/* Enables access from ordinal `from` to ordinal `to` if the hardware allows it. Never fails: a
 * pair that cannot be enabled is logged and copies between them are staged by the driver. */
static void cuda_peer_enable(int from, int to) {
  int can = 0;
  cudaError_t e = cudaDeviceCanAccessPeer(&can, from, to);
  if (e != cudaSuccess || !can) {
    (void)cudaGetLastError();
    sp__log(SP_LOG_INFO,
            "cuda: device %d cannot access device %d directly; peer copies between "
            "them are staged through the host",
            from, to);
    return;
  }
  e = cudaSetDevice(from);
  if (e == cudaSuccess) e = cudaDeviceEnablePeerAccess(to, 0);
  if (e == cudaErrorPeerAccessAlreadyEnabled) e = cudaSuccess;
  (void)cudaGetLastError();
  if (e != cudaSuccess)
    sp__log(SP_LOG_WARN, "cuda: enabling peer access %d -> %d failed: %s", from, to,
            cudaGetErrorString(e));
  else sp__log(SP_LOG_DEBUG, "cuda: peer access %d -> %d enabled", from, to);
}

void sp__cuda_peer_open(sp__bdevice *d) {
  int i = d->ordinal;
  if (i < 0 || i >= CUDA_PEER_ORDINALS_MAX) return;
  sp__mutex_lock(&cuda_peer_mu);
  if (cuda_peer_open_count[i]++ == 0) {
    for (int j = 0; j < CUDA_PEER_ORDINALS_MAX; j++) {
      if (j == i || !cuda_peer_open_count[j]) continue;
      cuda_peer_enable(i, j);
      cuda_peer_enable(j, i);
    }
  }
  sp__mutex_unlock(&cuda_peer_mu);
  (void)cudaSetDevice(i); /* leave the opened device current, as device_open does */
  (void)cudaGetLastError();
}

void sp__cuda_peer_close(sp__bdevice *d) {
  int i = d->ordinal;
  if (i < 0 || i >= CUDA_PEER_ORDINALS_MAX) return;
  sp__mutex_lock(&cuda_peer_mu);
  if (cuda_peer_open_count[i]) cuda_peer_open_count[i]--;
  sp__mutex_unlock(&cuda_peer_mu);
}

/* The device ordinal owning p, or -1 for host memory (pageable, pinned or managed). */
static int cuda_peer_ordinal(const void *p) {
  struct cudaPointerAttributes a;
  cudaError_t e = cudaPointerGetAttributes(&a, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return -1;
  }
  return a.type == cudaMemoryTypeDevice ? a.device : -1;
}

sp_status sp__cuda_memcpy_peer_async(sp__bstream *dst_stream, void *dst, sp__bdevice *src_dev,
                                     const void *src, size_t bytes) {
  if (!dst_stream || !src_dev)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: memcpy_peer_async: %s is NULL",
                    dst_stream ? "source device" : "stream");
  if (!bytes) return SP_OK;
  sp_status st = sp__cuda_use_device(dst_stream->dev);
  if (st != SP_OK) return st;
  int dst_ord = cuda_peer_ordinal(dst), src_ord = cuda_peer_ordinal(src);
  cudaError_t e;
  if (dst_ord >= 0 && src_ord >= 0 && dst_ord != src_ord) {
    e = cudaMemcpyPeerAsync(dst, dst_ord, src, src_ord, bytes, dst_stream->stream);
    return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaMemcpyPeerAsync");
  }
  e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, dst_stream->stream);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaMemcpyAsync (peer)");
}
