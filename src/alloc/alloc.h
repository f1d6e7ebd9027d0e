/* The caching allocator's seam with the core (internal).
 *
 * The core calls sp__alloc_create at the end of sp_device_open (after streams and events exist)
 * and sp__alloc_destroy at the start of sp_device_close (after sp__device_sync_all): destroy
 * returns every segment to the backend, live blocks included. The public sp_alloc, sp_free,
 * sp_record_stream, sp_empty_cache, sp_memory_stats_* and sp_memory_snapshot_json are defined in
 * src/alloc.
 */
#ifndef SP_ALLOC_ALLOC_H
#define SP_ALLOC_ALLOC_H

#include "core/device.h"

sp_status sp__alloc_create(sp_device *dev, sp__allocator **out);
void sp__alloc_destroy(sp__allocator *a);

/* Whole-structure check (every block in exactly one state, segments tiled, stats consistent).
 * SP_OK, or SP_ERR_INVALID_HANDLE with the first violation in the message.
 * Runs at any debug level when called directly (tests call it); the allocator calls it itself
 * after each operation only when sp__debug_level() >= 2. Any thread. */
sp_status sp__alloc_validate(sp__allocator *a);

/* Test-only negative control (white-box tests; the shared library hides sp__ symbols): with off
 * true, sp_free skips the pending step and caches a block at once even when other streams were
 * recorded on it, so a cross-stream test can show that it detects the resulting corruption.
 * Externally synchronized (set it while no other thread uses the allocator). */
void sp__alloc_test_disable_pending(sp__allocator *a, bool off);

/* Whether [p, p + n) is this device's memory: SP_OK with *is_device true when it lies inside one
 * live block (allocated, not freed), false when it touches no segment of the device (host memory,
 * or another device's); SP_ERR_INVALID_ARGUMENT with a message naming fn and what ("dst", "in")
 * when it touches device memory otherwise (past a block's end, in a freed block, from host memory
 * into a segment, or wrapping around). No backend call; lock-free for host memory, one map-shard
 * lock at a block's start, one segment lock (and a walk of its blocks) inside one. device_first:
 * the caller expects device memory, so a block's start is looked up in the map before the index
 * (one lock, no index search). Any thread. */
sp_status sp__alloc_range(sp__allocator *a, const void *p, size_t n, bool device_first,
                          const char *fn, const char *what, bool *is_device);

/* Whether [p, p + n) overlaps any segment a holds from the backend (live, cached or freed
 * blocks alike): the question "is this another allocator's memory?" of sp__mem_is_foreign. Sets
 * no error; lock-free (the segment index's seqlock). Any thread. */
bool sp__alloc_touches(sp__allocator *a, const void *p, size_t n);

#endif /* SP_ALLOC_ALLOC_H */
