/* Host "pinned" memory: the host backend's host_alloc_pinned / host_free_pinned slots.
 *
 * Owns: pinned buffers. On the host every page is as good for a copy as any other, so a pinned
 * buffer is ordinary aligned host memory; what the slots add is the contract: a header in front
 * (magic, owning device) lets host_free_pinned refuse a pointer it did not hand out (or one freed
 * twice) instead of corrupting the heap, and allocating during a capture breaks the capture
 * contract as raw device allocation does. Like device memory, pinned memory bypasses the library's
 * host-allocation hook: it is the backend's memory, not the library's bookkeeping; it is not
 * counted against the device's capacity.
 *
 * Invariants: a live buffer's header holds HOST_PINNED_MAGIC and its device. Locking: none.
 */
#include <stdlib.h>

#include "backend/host/host_impl.h"

#define HOST_PINNED_MAGIC 0x53505048504e4e44ull /* "SPPHPNND" */

enum { HOST_PINNED_ALIGN = 64 }; /* bytes; also the header's slot */

typedef struct host_pinned_header {
  uint64_t magic;   /* HOST_PINNED_MAGIC while live, 0 after free */
  sp__bdevice *dev; /* the owner                                  */
} host_pinned_header;
_Static_assert(sizeof(host_pinned_header) <= HOST_PINNED_ALIGN, "pinned header fits its slot");

sp_status sp__host_alloc_pinned(sp__bdevice *d, size_t bytes, void **out) {
  if (!d || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host host_alloc_pinned: NULL argument");
  if (bytes == 0) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host host_alloc_pinned: 0 bytes");
  if (SP__UNLIKELY(sp__host_capture_of_thread()))
    return SP__HOST_CAPTURE_VIOLATION(sp__host_capture_of_thread(), "host_alloc_pinned",
                                      "pinned allocation during a capture");
  void *base = NULL;
  if (bytes > SIZE_MAX - HOST_PINNED_ALIGN ||
      posix_memalign(&base, HOST_PINNED_ALIGN, HOST_PINNED_ALIGN + bytes) != 0)
    return sp__fail(SP_ERR_HOST_MEMORY, "host host_alloc_pinned: the system refused %zu bytes",
                    bytes);
  host_pinned_header *h = base;
  h->magic = HOST_PINNED_MAGIC;
  h->dev = d;
  *out = (char *)base + HOST_PINNED_ALIGN;
  return SP_OK;
}

sp_status sp__host_free_pinned(sp__bdevice *d, void *p) {
  if (!d) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host host_free_pinned: device is NULL");
  if (!p) return SP_OK;
  if (SP__UNLIKELY(sp__host_capture_of_thread()))
    return SP__HOST_CAPTURE_VIOLATION(sp__host_capture_of_thread(), "host_free_pinned",
                                      "pinned free during a capture");
  host_pinned_header *h = (host_pinned_header *)((char *)p - HOST_PINNED_ALIGN);
  if ((uintptr_t)p % HOST_PINNED_ALIGN != 0 || h->magic != HOST_PINNED_MAGIC || h->dev != d)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "host host_free_pinned: %p is not a live pinned buffer of host device %d", p,
                    d->index);
  h->magic = 0;
  free(h);
  return SP_OK;
}
