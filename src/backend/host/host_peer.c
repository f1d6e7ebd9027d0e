/* Host peer copies: the memcpy_peer_async slot of the host backend.
 *
 * Owns nothing. Every host device's memory lives in this process's address space, so a copy
 * from another host device is an ordinary memcpy command queued on the destination stream: it
 * runs on that stream's worker, in FIFO order, after any wait command queued before it (which is
 * how the caller orders the source side). The source device is only checked, never touched.
 *
 * Locking: that of sp__host_submit (the destination stream's mu).
 */
#include "backend/host/host_impl.h"

sp_status sp__host_memcpy_peer_async(sp__bstream *dst_stream, void *dst, sp__bdevice *src_dev,
                                     const void *src, size_t bytes) {
  if (!dst_stream || !src_dev)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "host memcpy_peer_async: %s is NULL",
                    dst_stream ? "source device" : "stream");
  return sp__host_memcpy_async(dst_stream, dst, src, bytes);
}
