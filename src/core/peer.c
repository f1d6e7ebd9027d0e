/* Cross-device operations: waits on another device's event and peer copies.
 *
 * Owns sp_stream_wait_event_peer, sp_memcpy_peer_async and sp_peer_copy_direct. Each device keeps
 * its own pool, events and allocator (device.c); nothing here adds shared state between devices:
 * these functions only pick, per call, how to order or move data between two open devices.
 *
 * Waits: same device -> the device's own wait. Same backend -> the backend's stream_wait_event
 * with the other device's backend event (host: a wait command on the other stream's counter;
 * cuda: cudaStreamWaitEvent, which takes an event of another device), so the host is not
 * blocked. Different backends -> the calling thread syncs the event (host-side fallback).
 *
 * Copies: same device -> memcpy_async. Same backend with the optional memcpy_peer_async slot ->
 * that slot, stream-ordered on the destination stream. Otherwise a host-staged fallback, correct
 * for any pair of backends: sync the destination stream (so the caller's peer wait has passed),
 * then per chunk of at most PEER_STAGE_BYTES copy source -> host buffer on the source device's
 * default stream, sync it, host buffer -> destination on the destination stream, sync it.
 *
 * Invariants: the caller orders the source side (documented in streampool.h); a failed call
 * changes no library state (a staged copy may have written part of dst).
 *
 * Locking: none of its own. No lock is held across any backend call here.
 */
#include <string.h>

#include "core/device.h"

#define PEER_STAGE_BYTES ((size_t)8 << 20) /* host bounce buffer of the staged fallback, bytes */

/* Same backend table and a peer slot: one device copy. */
static bool peer_direct(const sp_device *dst_dev, const sp_device *src_dev) {
  return dst_dev == src_dev || (dst_dev->be == src_dev->be && dst_dev->be->memcpy_peer_async);
}

int sp_peer_copy_direct(const sp_device *dst_dev, const sp_device *src_dev) {
  if (!dst_dev || !src_dev) return 0;
  return peer_direct(dst_dev, src_dev) ? 1 : 0;
}

sp_status sp_stream_wait_event_peer(sp_stream *s, sp_device *ev_dev, sp_event ev) {
  static const char fn[] = "sp_stream_wait_event_peer";
  sp_status st = sp__stream_enter(s, fn);
  if (st == SP_OK) st = sp__device_enter(ev_dev, fn);
  if (st != SP_OK) return st;
  if (ev_dev == s->dev) return sp__stream_wait_event(s, ev);
  sp__bevent *bev = NULL;
  st = sp__event_backend(ev_dev, ev, fn, &bev); /* pins ev */
  if (st != SP_OK) return st;
  if (!bev) {
    /* never recorded: complete */
  } else if (ev_dev->be != s->dev->be) {
    int cancel = sp__cancel_off();
    st = ev_dev->be->event_sync(bev); /* host-side fallback */
    sp__cancel_restore(cancel);
  } else {
    sp__bstream *bs = NULL;
    st = sp__stream_backend(s, &bs);
    if (st == SP_OK) st = s->dev->be->stream_wait_event(bs, bev);
  }
  sp__event_unpin(ev_dev, ev);
  return st;
}

/* The host-staged copy: correct for any pair of devices; returns when dst holds the bytes. */
static sp_status peer_copy_staged(sp_stream *dst_stream, sp__bstream *dbs, void *dst,
                                  sp_device *src_dev, const void *src, size_t bytes) {
  const sp__backend *dbe = dst_stream->dev->be, *sbe = src_dev->be;
  sp__bstream *sbs = NULL;
  sp_status st = sp__stream_backend(&src_dev->streams[0], &sbs);
  if (st == SP_OK) st = dbe->stream_sync(dbs); /* the caller's waits on dst_stream have passed */
  if (st != SP_OK) return st;
  size_t chunk = bytes < PEER_STAGE_BYTES ? bytes : PEER_STAGE_BYTES;
  unsigned char *buf = sp__malloc(chunk);
  if (!buf)
    return sp__fail(SP_ERR_HOST_MEMORY,
                    "sp_memcpy_peer_async: no host memory for a %zu-byte "
                    "staging buffer",
                    chunk);
  for (size_t off = 0; off < bytes && st == SP_OK; off += chunk) {
    size_t n = bytes - off < chunk ? bytes - off : chunk;
    st = sbe->memcpy_async(sbs, buf, (const unsigned char *)src + off, n);
    if (st == SP_OK) st = sbe->stream_sync(sbs);
    if (st == SP_OK) st = dbe->memcpy_async(dbs, (unsigned char *)dst + off, buf, n);
    if (st == SP_OK) st = dbe->stream_sync(dbs); /* buf is reused by the next chunk */
  }
  sp__free(buf);
  return st;
}

static sp_status peer_copy(sp_stream *dst_stream, void *dst, sp_device *src_dev, const void *src,
                           size_t bytes) {
  static const char fn[] = "sp_memcpy_peer_async";
  sp_status st = sp__stream_enter(dst_stream, fn);
  if (st == SP_OK) st = sp__device_enter(src_dev, fn);
  if (st != SP_OK) return st;
  if (!bytes) return SP_OK;
  if (!dst || !src)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s is NULL for %zu bytes", fn,
                    !dst ? "dst" : "src", bytes);
  sp_device *dst_dev = dst_stream->dev;
  sp__bstream *dbs = NULL;
  st = sp__stream_backend(dst_stream, &dbs);
  if (st != SP_OK) return st;
  if (dst_dev == src_dev) return dst_dev->be->memcpy_async(dbs, dst, src, bytes);
  if (peer_direct(dst_dev, src_dev))
    return dst_dev->be->memcpy_peer_async(dbs, dst, src_dev->bdev, src, bytes);
  return peer_copy_staged(dst_stream, dbs, dst, src_dev, src, bytes);
}

sp_status sp_memcpy_peer_async(sp_stream *dst_stream, void *dst, sp_device *src_dev,
                               const void *src, size_t bytes) {
  int cancel = sp__cancel_off(); /* the staged copy syncs streams */
  sp_status st = peer_copy(dst_stream, dst, src_dev, src, bytes);
  sp__cancel_restore(cancel);
  return st;
}
