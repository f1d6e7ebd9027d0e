/* Device work for the layers above the core: the one door from src/infer to the backend (internal).
 *
 * src/infer never touches the backend table; it asks for what it needs here, and each optional
 * slot's default is applied in exactly one place below, as ggml-backend.cpp does:
 *   linear_async, convert_async   sp__linear_check: SP_ERR_UNSUPPORTED naming the caller
 *   nn_async                      sp__nn_check: the same, for encoder layers
 *   linear_f32_io_rows            sp__linear_f32_io: none when absent (the model converts)
 *   graph_*                       sp__graphs_enabled: graphs on = slots present and
 *                                 STREAMPOOL_GRAPHS not 0; sp__graph_* assume it said yes
 *   host_alloc/free_pinned        sp__pinned_alloc/free: ordinary host memory when absent or
 *                                 when the backend has none to give
 *   resident_*                    sp__resident_open: SP_ERR_UNSUPPORTED naming the caller
 * Streams are sp_stream handles throughout (pool streams, or the private twin a capture runs on);
 * the backend stream behind one is created on first use. A graph is captured on a private stream
 * the device owns (one per pool index, created on first capture, destroyed by sp_device_close):
 * a pool stream may be shared by several threads, and whatever another thread submitted to it
 * during a capture would land in the graph instead of running.
 *
 * Thread safety: every function here may be called from any thread; the stream rules of
 * backend.h apply (a capture's work comes from the capturing thread only).
 */
#ifndef SP_CORE_OPS_H
#define SP_CORE_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/device.h"

/* Where every part of a device block the layers above carve up starts (weights, workspaces, io
 * plans): 256 bytes, enough for the backends' widest loads and cuBLASLt's alignment. */
enum { SP__DEVICE_PART_ALIGN = 256 };

/* n bytes rounded up to SP__DEVICE_PART_ALIGN. */
static inline size_t sp__device_part_round(size_t n) {
  return (n + SP__DEVICE_PART_ALIGN - 1) & ~(size_t)(SP__DEVICE_PART_ALIGN - 1);
}

/* ---- stream work ---------------------------------------------------------------------------- */

/* dt is an sp_dtype value: SP_OK, or SP_ERR_INVALID_ARGUMENT naming fn and the value. Any thread.
 */
sp_status sp__dtype_check(sp_dtype dt, const char *fn);

/* Whether dev can run linear layers in dtype dt (bf16 and f16 also need conversions): SP_OK, or
 * SP_ERR_UNSUPPORTED with a message naming fn and the backend. Callers of sp__stream_linear and
 * sp__stream_convert check this first. Any thread. */
sp_status sp__linear_check(const sp_device *dev, sp_dtype dt, const char *fn);

/* Whether dev's linear slot takes f32 x or y beside 16-bit weights (sp__linear.io) for an op of
 * batch rows (the backend's linear_f32_io_rows). Any thread. */
bool sp__linear_f32_io(const sp_device *dev, unsigned batch);

/* Whether dev can also run encoder layers (sp__nn) in dtype dt: sp__linear_check, then the
 * nn_async slot. Callers of sp__stream_nn check this first. Any thread. */
sp_status sp__nn_check(const sp_device *dev, sp_dtype dt, const char *fn);

/* Whether dev's attention runs heads of head_dim (the backend's nn_head_dim_max): SP_OK, or
 * SP_ERR_UNSUPPORTED naming fn, the backend and both numbers. Any thread. */
sp_status sp__attention_check(const sp_device *dev, unsigned head_dim, const char *fn);

/* Stream-ordered work on s (backend.h has each operation's contract). Any thread. */
sp_status sp__stream_memcpy(sp_stream *s, void *dst, const void *src, size_t bytes);
sp_status sp__stream_linear(sp_stream *s, const sp__linear *op);
sp_status sp__stream_convert(sp_stream *s, void *dst, sp_dtype dst_type, const void *src,
                             sp_dtype src_type, size_t n);
sp_status sp__stream_nn(sp_stream *s, const sp__nn *op);
/* Waits for s's work; the first failure of an asynchronous command since the last sync is
 * returned here. A stream never used has nothing to wait for (SP_OK). Any thread. */
sp_status sp__stream_sync(sp_stream *s);

/* ---- graphs --------------------------------------------------------------------------------- */

/* The one "graphs on" decision: *on is true when dev's backend has graph slots and
 * STREAMPOOL_GRAPHS is unset or "1"; "0" turns graphs off. Another value (the empty one
 * included): SP_ERR_INVALID_ARGUMENT naming fn and the value (*on untouched). Models call it
 * once, at build. Any thread. */
sp_status sp__graphs_enabled(const sp_device *dev, const char *fn, bool *on);

/* Submits the work to capture to cs (the capture stream); must not sync, query, allocate or use
 * events (backend.h's capture contract). */
typedef sp_status (*sp__graph_record_fn)(sp_stream *cs, void *arg);

/* Captures rec's work as a graph for launching on pool stream s: rec runs on the calling thread
 * against s's private capture stream (same index), whose capture is ended whatever happens and
 * which is synced after (the graph's upload). A backend makes its per-shape choices (the CUDA
 * linear's timed one) only outside capture, so callers run the same work once eagerly on s
 * before capturing it, and the graph records what was chosen.
 * Captures on one device are serialized. Every buffer the work touches must stay allocated, at the
 * same address, until sp__graph_destroy, and host memory it copies must come from sp__pinned_alloc
 * with *pinned true. On success *out is the graph; on failure nothing is left behind and the status
 * says why (rec's own failure first). Only when sp__graphs_enabled said yes. Any thread. */
sp_status sp__graph_capture(sp_stream *s, sp__graph_record_fn rec, void *arg, sp__bgraph **out);

/* Runs g on s, stream-ordered. Graphs captured for one pool stream index must be launched only
 * on that pool stream (they share the capture stream's scratch). Any thread. */
sp_status sp__graph_launch(sp__bgraph *g, sp_stream *s);

/* Frees g (NULL ok); a launch still in flight completes first. The caller keeps g's buffers until
 * the stream it ran on is synced. Any thread. */
void sp__graph_destroy(sp_device *dev, sp__bgraph *g);

/* ---- host memory ---------------------------------------------------------------------------- */

/* bytes (> 0) of host memory that dev's copies use directly: the backend's pinned memory when it
 * has the slots and can give it (*pinned = true: captured copies may use it), else ordinary host
 * memory (*pinned = false: any device copy accepts it, captures do not). SP_ERR_HOST_MEMORY when
 * neither exists, with nothing written. Any thread. */
sp_status sp__pinned_alloc(sp_device *dev, size_t bytes, void **out, bool *pinned);

/* Frees p from sp__pinned_alloc, given the *pinned it returned (NULL ok). Any thread. */
void sp__pinned_free(sp_device *dev, void *p, bool pinned);

/* Whether [p, p + bytes), in none of the allocator's segments, is device memory of dev that another
 * runtime allocated (the backend's mem_is_foreign; absent: never). Memory of another open
 * sp_device (of the same GPU, say) is not foreign: its allocator may reuse it behind dev's back.
 * Any thread. */
bool sp__mem_is_foreign(const sp_device *dev, const void *p, size_t bytes);

/* ---- resident forwards ---------------------------------------------------------------------- */

/* The backend's resident_open on dev (backend.h: desc already checked by the caller), or
 * SP_ERR_UNSUPPORTED naming fn and the backend when it has none. Any thread. */
sp_status sp__resident_open(sp_device *dev, const sp__resident_desc *desc, const char *fn,
                            sp__bresident **out);
/* The backend's resident_run, resident_launches and resident_close for r, opened on dev by
 * sp__resident_open (runs of one r serialized by the caller). */
sp_status sp__resident_run(sp_device *dev, sp__bresident *r, const float *in, float *out);
uint64_t sp__resident_launches(sp_device *dev, const sp__bresident *r);
void sp__resident_close(sp_device *dev, sp__bresident *r);

#endif /* SP_CORE_OPS_H */
