/* Streams: the validated public wrappers over the backend's stream slots, and lazy creation.
 *
 * Owns dev->streams[i].bstream: NULL until the stream's first use, then set exactly once under
 * dev->stream_create_mu (double-checked: an acquire load on the fast path, the backend call and a
 * release store under the lock) and destroyed only by sp_device_close. Binding threads to streams
 * is stream_pool.c's. Every public function here validates its stream (sp__stream_enter: NULL,
 * forked child, a stream that is not its device's) before touching the backend, and the ranges
 * of copies and fills (sp__alloc_range: device memory only inside one live block of this device;
 * memset's dst must be device memory, memcpy needs at least one side in it).
 */
#include "core/device.h"

#include "alloc/alloc.h"

sp_status sp__stream_enter(const sp_stream *s, const char *fn) {
  if (SP__UNLIKELY(!s)) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: stream is NULL", fn);
  sp_status st = sp__device_enter(s->dev, fn);
  if (st != SP_OK) return st;
  if (SP__UNLIKELY(s->index >= s->dev->cfg.streams || &s->dev->streams[s->index] != s))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %p is not a stream of its device", fn,
                    (const void *)s);
  return SP_OK;
}

sp_status sp__stream_backend(sp_stream *s, sp__bstream **out) {
  sp__bstream *bs = sp__stream_peek(s);
  if (SP__LIKELY(bs != NULL)) {
    *out = bs;
    return SP_OK;
  }
  sp_device *dev = s->dev;
  sp_status st = SP_OK;
  sp__mutex_lock(&dev->stream_create_mu);
  bs = atomic_load_explicit(&s->bstream, memory_order_relaxed);
  if (!bs) {
    st = dev->be->stream_create(dev->bdev, s->index, &bs);
    if (st == SP_OK) atomic_store_explicit(&s->bstream, bs, memory_order_release);
  }
  sp__mutex_unlock(&dev->stream_create_mu);
  if (st != SP_OK) return st;
  sp_assert(bs != NULL);
  *out = bs;
  return SP_OK;
}

sp_status sp__stream_of(sp_device *dev, const sp_stream *s, const char *fn) {
  sp_status st = sp__device_enter(dev, fn);
  if (st == SP_OK) st = sp__stream_enter(s, fn);
  if (st != SP_OK) return st;
  if (s->dev != dev)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: stream %u belongs to another device", fn,
                    s->index);
  return SP_OK;
}

sp_status sp__stream_resolve(sp_device *dev, sp_stream *s, const char *fn, sp_stream **out) {
  if (!s) {
    sp_status st = sp__device_enter(dev, fn);
    return st == SP_OK ? sp_stream_current(dev, out) : st;
  }
  sp_status st = sp__stream_of(dev, s, fn);
  if (st == SP_OK) *out = s;
  return st;
}

/* Validation + the backend stream, for the wrappers below. */
static sp_status stream_prepare(sp_stream *s, const char *fn, sp__bstream **bs) {
  sp_status st = sp__stream_enter(s, fn);
  if (st != SP_OK) return st;
  return sp__stream_backend(s, bs);
}

sp_stream *sp_stream_default(sp_device *dev) {
  if (!dev || sp__device_enter(dev, "sp_stream_default") != SP_OK) return NULL;
  return &dev->streams[0];
}

sp_status sp_stream_sync(sp_stream *s) {
  sp_status st = sp__stream_enter(s, "sp_stream_sync");
  if (st != SP_OK) return st;
  sp__bstream *bs = sp__stream_peek(s);
  if (!bs) return SP_OK; /* never used: nothing to wait for */
  int cancel = sp__cancel_off();
  st = s->dev->be->stream_sync(bs);
  sp__cancel_restore(cancel);
  return st;
}

sp_status sp_stream_query(sp_stream *s) {
  sp_status st = sp__stream_enter(s, "sp_stream_query");
  if (st != SP_OK) return st;
  sp__bstream *bs = sp__stream_peek(s);
  return bs ? s->dev->be->stream_query(bs) : SP_OK;
}

unsigned sp_stream_index(const sp_stream *s) { return s ? s->index : 0; }

sp_device *sp_stream_device(const sp_stream *s) { return s ? s->dev : NULL; }

sp_status sp_launch_host_func(sp_stream *s, void (*fn)(void *), void *arg) {
  sp__bstream *bs = NULL;
  if (!fn) {
    sp_status st = sp__stream_enter(s, "sp_launch_host_func");
    return st != SP_OK ? st : sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_launch_host_func: fn is NULL");
  }
  sp_status st = stream_prepare(s, "sp_launch_host_func", &bs);
  if (st != SP_OK) return st;
  return s->dev->be->host_func(bs, fn, arg);
}

sp_status sp_memcpy_async(sp_stream *s, void *dst, const void *src, size_t bytes) {
  sp_status st = sp__stream_enter(s, "sp_memcpy_async");
  if (st != SP_OK) return st;
  if (!bytes) return SP_OK;
  if (!dst || !src)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_memcpy_async: %s is NULL for %zu bytes",
                    !dst ? "dst" : "src", bytes);
  bool dst_dev = false, src_dev = false;
  st = sp__alloc_range(s->dev->alloc, dst, bytes, false, "sp_memcpy_async", "dst", &dst_dev);
  if (st == SP_OK)
    st = sp__alloc_range(s->dev->alloc, src, bytes, false, "sp_memcpy_async", "src", &src_dev);
  if (st != SP_OK) return st;
  if (SP__UNLIKELY(!dst_dev && !src_dev))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_memcpy_async: neither dst %p nor src %p is "
                    "memory of this device (host-to-host copies are memcpy's; another device's "
                    "memory goes through sp_memcpy_peer_async)",
                    dst, src);
  sp__bstream *bs = NULL;
  st = sp__stream_backend(s, &bs);
  if (st != SP_OK) return st;
  return s->dev->be->memcpy_async(bs, dst, src, bytes);
}

sp_status sp_memset_async(sp_stream *s, void *dst, int value, size_t bytes) {
  sp_status st = sp__stream_enter(s, "sp_memset_async");
  if (st != SP_OK) return st;
  if (!bytes) return SP_OK;
  if (!dst)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_memset_async: dst is NULL for %zu bytes", bytes);
  bool dst_dev = false;
  st = sp__alloc_range(s->dev->alloc, dst, bytes, true, "sp_memset_async", "dst", &dst_dev);
  if (st != SP_OK) return st;
  if (SP__UNLIKELY(!dst_dev))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_memset_async: dst %p is not memory of this "
                    "device (host memory, or another device's)",
                    dst);
  sp__bstream *bs = NULL;
  st = sp__stream_backend(s, &bs);
  if (st != SP_OK) return st;
  return s->dev->be->memset_async(bs, dst, value, bytes);
}
