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

#endif /* SP_ALLOC_ALLOC_H */
