/* Inference plans: what sp_model_infer and sp_model_forward reuse per (model, stream, shape)
 * (internal).
 *
 * sp_model_infer's plans are host-io plans (io_plan.h), keyed by batch: for one stream of the
 * model's device and one batch size, the device buffers of a host-in/host-out forward, host
 * staging and, when graphs are on for the model and the staging is pinned, the whole forward
 * captured once as a graph (H2D copy from staging, linears and conversions, D2H copy to staging).
 * A call then costs a memcpy into staging, one graph launch, one stream sync and a memcpy out.
 *
 * Forward plans do the same for sp_model_forward's device-io pass, keyed by (batch, in, out):
 * the graph reads and writes the caller's own buffers, so it serves only calls with exactly those
 * pointers; a hit costs one graph launch instead of one launch per op.
 *
 * Plans live in a table owned by the model: one entry per stream index of the device's pool, a
 * few batch sizes per entry, created on first use and freed with the model.
 */
#ifndef SP_INFER_PLAN_H
#define SP_INFER_PLAN_H

#include <stdbool.h>

#include "core/device.h"

typedef struct sp__plan_table sp__plan_table;

/* An empty table for m's device (one entry per pool stream). SP_ERR_HOST_MEMORY on failure.
 * Called once by the model builder. */
sp_status sp__plan_table_create(const sp_model *m, sp__plan_table **out);

/* Syncs every stream a plan ran on, then destroys graphs, staging and device buffers. No
 * sp_model_infer on m may be running. NULL ok. */
void sp__plan_table_destroy(sp_model *m, sp__plan_table *t);

/* Host-in/host-out forward of batch rows on pool stream s through the plan for (s, batch), made
 * on first use, or uncached when no plan serves it (sp__io_plan_run); returns when out is
 * filled. Any thread; threads on one plan serialize on the plan's mutex; no lock shared between
 * streams on this path. */
sp_status sp__plan_infer(sp_model *m, sp_stream *s, const float *in, float *out, unsigned batch);

/* Device-io forward of batch rows on pool stream s: launches the graph captured for exactly
 * (batch, in, out) on s's entry, capturing it on first use (a few per stream; the workspace is an
 * allocator block on s that the graph keeps until the model is freed). Stream-ordered, returns at
 * once. *handled is false (with SP_OK) when no graph serves the call (graphs off for the model,
 * slots all taken, no memory for the workspace, capture failed on this stream): the caller
 * enqueues op by op. Any thread, no lock once made. */
sp_status sp__plan_forward(sp_model *m, sp_stream *s, const float *in, float *out, unsigned batch,
                           bool *handled);

#endif /* SP_INFER_PLAN_H */
