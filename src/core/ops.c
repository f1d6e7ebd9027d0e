/* Device work for src/infer: stream operations, graphs on private capture streams, pinned host
 * memory, each optional backend slot's default applied once (see ops.h).
 *
 * Owns: the capture protocol (private stream, begin, record, end, upload sync) and the mapping
 * of each optional slot to its default. The private streams themselves are the device's
 * (dev->privates, created lazily like pool streams, destroyed by sp_device_close).
 *
 * Invariants: a private stream runs nothing but its captures' uploads, and is captured by one
 * thread at a time (dev->capture_mu); sp__stream_linear/convert/nn and sp__graph_* are reached only
 * after their slot was found present (sp__linear_check, sp__nn_check, sp__graphs_enabled), which
 * they assert.
 *
 * Locking: dev->capture_mu is held for a whole capture; it is taken after any infer lock (a
 * plan's create_mu) and before the stream create mutex; no allocator call is made under it (the
 * capture contract forbids allocation), nor is it held while waiting for any other stream.
 */
#include "core/ops.h"

#include "core/dtype.h"
#include "core/env.h"

/* ---- stream work ---------------------------------------------------------------------------- */

sp_status sp__dtype_check(sp_dtype dt, const char *fn) {
  if (SP__LIKELY(sp__dtype_valid(dt))) return SP_OK;
  return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: dtype %d is not SP_F32, SP_BF16 or SP_F16", fn,
                  (int)dt);
}

sp_status sp__linear_check(const sp_device *dev, sp_dtype dt, const char *fn) {
  const sp__backend *be = dev->be;
  if (SP__UNLIKELY(!be->linear_async))
    return sp__fail(SP_ERR_UNSUPPORTED, "%s: backend '%s' has no linear kernel", fn, be->name);
  if (SP__UNLIKELY(dt != SP_F32 && !be->convert_async))
    return sp__fail(SP_ERR_UNSUPPORTED, "%s: backend '%s' cannot convert f32<->%s", fn, be->name,
                    sp__dtype_name(dt));
  return SP_OK;
}

bool sp__linear_f32_io(const sp_device *dev, unsigned batch) {
  const sp__backend *be = dev->be;
  return be->linear_f32_io_rows && batch <= be->linear_f32_io_rows(dev->bdev);
}

sp_status sp__nn_check(const sp_device *dev, sp_dtype dt, const char *fn) {
  sp_status st = sp__linear_check(dev, dt, fn);
  if (st == SP_OK && SP__UNLIKELY(!dev->be->nn_async))
    st = sp__fail(SP_ERR_UNSUPPORTED,
                  "%s: backend '%s' has no encoder layers (LayerNorm, attention)", fn,
                  dev->be->name);
  return st;
}

sp_status sp__attention_check(const sp_device *dev, unsigned head_dim, const char *fn) {
  unsigned max = dev->be->nn_head_dim_max;
  if (max && head_dim > max)
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "%s: attention heads of %u dimensions; backend '%s' runs at most %u", fn,
                    head_dim, dev->be->name, max);
  return SP_OK;
}

sp_status sp__stream_memcpy(sp_stream *s, void *dst, const void *src, size_t bytes) {
  sp__bstream *bs;
  sp_status st = sp__stream_backend(s, &bs);
  return st == SP_OK ? s->dev->be->memcpy_async(bs, dst, src, bytes) : st;
}

sp_status sp__stream_linear(sp_stream *s, const sp__linear *op) {
  sp_assert(s->dev->be->linear_async); /* sp__linear_check said so */
  sp__bstream *bs;
  sp_status st = sp__stream_backend(s, &bs);
  return st == SP_OK ? s->dev->be->linear_async(bs, op) : st;
}

sp_status sp__stream_convert(sp_stream *s, void *dst, sp_dtype dst_type, const void *src,
                             sp_dtype src_type, size_t n) {
  sp_assert(s->dev->be->convert_async); /* sp__linear_check said so */
  sp__bstream *bs;
  sp_status st = sp__stream_backend(s, &bs);
  return st == SP_OK ? s->dev->be->convert_async(bs, dst, dst_type, src, src_type, n) : st;
}

sp_status sp__stream_nn(sp_stream *s, const sp__nn *op) {
  sp_assert(s->dev->be->nn_async); /* sp__nn_check said so */
  sp__bstream *bs;
  sp_status st = sp__stream_backend(s, &bs);
  return st == SP_OK ? s->dev->be->nn_async(bs, op) : st;
}

sp_status sp__stream_sync(sp_stream *s) {
  sp__bstream *bs = sp__stream_peek(s);
  return bs ? s->dev->be->stream_sync(bs) : SP_OK; /* never used: nothing to wait for */
}

/* ---- graphs --------------------------------------------------------------------------------- */

sp_status sp__graphs_enabled(const sp_device *dev, const char *fn, bool *on) {
  bool env_on = true;
  sp_status st = sp__env_switch(fn, "STREAMPOOL_GRAPHS", true, &env_on);
  if (st != SP_OK) return st;
  *on = env_on && dev->be->graph_capture_begin != NULL; /* the table has all four or none */
  return SP_OK;
}

/* Begin, record, end, upload on c (capture_mu held). */
static sp_status graph_capture_on(sp_stream *c, sp__graph_record_fn rec, void *arg,
                                  sp__bgraph **out) {
  const sp__backend *be = c->dev->be;
  sp__bstream *cb;
  sp_status st = sp__stream_backend(c, &cb);
  if (st == SP_OK) st = be->graph_capture_begin(cb);
  if (st != SP_OK) return st;
  sp_status rs = rec(c, arg);
  sp__bgraph *g = NULL;
  sp_status end = be->graph_capture_end(cb, &g);              /* always: leaves capture mode */
  if (rs == SP_OK && end == SP_OK) end = be->stream_sync(cb); /* the graph's upload */
  if (rs != SP_OK || end != SP_OK) {
    if (g) be->graph_destroy(g);
    return rs != SP_OK ? rs : end;
  }
  sp_assert(g != NULL);
  *out = g;
  return SP_OK;
}

sp_status sp__graph_capture(sp_stream *s, sp__graph_record_fn rec, void *arg, sp__bgraph **out) {
  sp_device *dev = s->dev;
  sp_assert(dev->be->graph_capture_begin && s->index < dev->cfg.streams);
  sp_stream *c = &dev->privates[s->index];
  sp__mutex_lock(&dev->capture_mu);
  sp_status st = graph_capture_on(c, rec, arg, out);
  sp__mutex_unlock(&dev->capture_mu);
  return st;
}

sp_status sp__graph_launch(sp__bgraph *g, sp_stream *s) {
  sp_assert(g && s->dev->be->graph_launch);
  sp__bstream *bs;
  sp_status st = sp__stream_backend(s, &bs);
  return st == SP_OK ? s->dev->be->graph_launch(g, bs) : st;
}

void sp__graph_destroy(sp_device *dev, sp__bgraph *g) {
  if (!g) return;
  sp_assert(dev->be->graph_destroy);
  dev->be->graph_destroy(g);
}

/* ---- host memory ---------------------------------------------------------------------------- */

sp_status sp__pinned_alloc(sp_device *dev, size_t bytes, void **out, bool *pinned) {
  sp_assert(bytes > 0);
  void *p = NULL;
  if (dev->be->host_alloc_pinned) { /* the table has both pinned slots or neither */
    if (dev->be->host_alloc_pinned(dev->bdev, bytes, &p) == SP_OK) {
      *out = p;
      *pinned = true;
      return SP_OK;
    }
    sp__error_clear(); /* falls back: the failed attempt is not the caller's error */
  }
  p = sp__malloc(bytes);
  if (!p)
    return sp__fail(SP_ERR_HOST_MEMORY,
                    "%zu bytes of host memory: neither pinned nor ordinary "
                    "host memory is available",
                    bytes);
  *out = p;
  *pinned = false;
  return SP_OK;
}

void sp__pinned_free(sp_device *dev, void *p, bool pinned) {
  if (!p) return;
  if (!pinned) {
    sp__free(p);
    return;
  }
  /* A failed free (a device error) has nothing the caller could undo or retry: the buffer is
   * gone to it either way, and the status is dropped as every free path of the library does. */
  (void)dev->be->host_free_pinned(dev->bdev, p);
}

bool sp__mem_is_foreign(const sp_device *dev, const void *p, size_t bytes) {
  return dev->be->mem_is_foreign && !sp__registry_other_owns(dev, p, bytes) &&
         dev->be->mem_is_foreign(dev->bdev, p, bytes);
}

/* ---- resident forwards ---------------------------------------------------------------------- */

sp_status sp__resident_open(sp_device *dev, const sp__resident_desc *desc, const char *fn,
                            sp__bresident **out) {
  const sp__backend *be = dev->be;
  if (!be->resident_open)
    return sp__fail(SP_ERR_UNSUPPORTED, "%s: backend '%s' has no resident forwards", fn, be->name);
  return be->resident_open(dev->bdev, desc, out);
}

sp_status sp__resident_run(sp_device *dev, sp__bresident *r, const float *in, float *out) {
  sp_assert(dev->be->resident_run);
  return dev->be->resident_run(r, in, out);
}

uint64_t sp__resident_launches(sp_device *dev, const sp__bresident *r) {
  return dev->be->resident_launches(r);
}

void sp__resident_close(sp_device *dev, sp__bresident *r) {
  if (r) dev->be->resident_close(r);
}
