/* Host-io plans: what a host-in/host-out pass reuses per (owner, stream, shape) (internal).
 *
 * One cache for both callers that run whole passes from host memory: sp_model_infer (plan.c, key
 * = batch) and sp_encoder_embed (encoder.c, key = batch and sequence bucket). A plan owns, for
 * one stream of the owner's device and one key, the device block of the pass (input | output |
 * workspace: one allocator block taken on that stream, counted and bounded like any other, kept
 * for the plan's life), host staging for the input and output (pinned where the backend has pinned
 * memory: sp__pinned_alloc) and, when graphs are on for the owner and both staging buffers are
 * pinned, the whole pass captured once (H2D copy from staging, the forward, D2H copy to staging).
 * A call then costs a memcpy into staging, one graph launch, one stream sync and a memcpy out.
 *
 * A table holds one entry per pool stream index, `slots` keys per entry, made on first use and
 * freed with the table.
 */
#ifndef SP_INFER_IO_PLAN_H
#define SP_INFER_IO_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/device.h"

typedef struct sp__io_plans sp__io_plans;

/* The device part of a pass: the forward alone from d_in to d_out with ws (ws_bytes of the
 * pass) as workspace, enqueued on c; no allocation and no sync, so it can be captured. */
typedef sp_status (*sp__io_forward_fn)(const void *owner, sp_stream *c, const void *d_in,
                                       void *d_out, void *ws, uint64_t key);

/* One pass as the caller describes it; equal keys of one table must mean equal sizes. */
typedef struct sp__io_pass {
  const void *owner;         /* the model or encoder, passed to forward          */
  sp__io_forward_fn forward; /* never NULL                                        */
  uint64_t key;              /* the shape; never 0                                */
  size_t in_bytes, out_bytes, ws_bytes;
} sp__io_pass;

/* An empty table on dev: one entry per pool stream, slots keys each (1..64), passes whose device
 * block would pass max_bytes never cached; graphs: capture passes (the owner's
 * sp__graphs_enabled). who names the owner's calls in messages ("sp_model_infer").
 * SP_ERR_HOST_MEMORY on failure. */
sp_status sp__io_plans_create(sp_device *dev, bool graphs, unsigned slots, size_t max_bytes,
                              const char *who, sp__io_plans **out);

/* Syncs every stream a plan ran on, then frees graphs, staging and device blocks. No run may be
 * under way. NULL ok. */
void sp__io_plans_destroy(sp__io_plans *t);

/* The pass on pool stream s through the plan for (s, pass->key), made on first use: in (in_bytes,
 * host) is copied in, out (out_bytes, host) filled; returns when it is. When no plan serves the
 * call (too large to cache, the entry's slots all taken, no memory for a plan) the pass runs
 * uncached: one allocator block on s (input | output | workspace), freed in stream order after
 * it. Any thread; threads on one plan serialize on its mutex; no lock shared between streams on
 * this path. */
sp_status sp__io_plan_run(sp__io_plans *t, sp_stream *s, const sp__io_pass *pass, const void *in,
                          void *out);

#endif /* SP_INFER_IO_PLAN_H */
