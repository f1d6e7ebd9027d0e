/* Interop with other runtimes (issue 10): native stream handles, waits on foreign streams, and
 * pinned host buffers for users (sp_host_alloc_pinned / sp_host_free_pinned).
 *
 * Pinned buffers: each live buffer has a record {ptr, bytes, device id, pinned or not} in one
 * process-wide list under pinned_mu (a leaf lock, ranked in src/core/lock.h: no other lock is
 * taken while holding it, and no backend call is made under it). A buffer comes from
 * sp__pinned_alloc (core/ops.h: the backend's host_alloc_pinned slot; where that slot is NULL or
 * fails, the host allocator, which any device copy accepts: only captured graphs need pinned
 * memory, and users do not capture). The record says which, so the free goes back to where the
 * buffer came from. Allocations are rare and large (staging
 * buffers), so a list searched linearly on free is enough. sp_device_close frees a device's
 * buffers still live (sp__interop_device_closing).
 */
#include <string.h>

#include "core/device.h"
#include "core/ops.h"

typedef struct sp__pinned_rec {
  void *p;                     /* the user's pointer                         */
  size_t bytes;                /* as requested                               */
  uint64_t dev_id;             /* the owning device                          */
  bool pinned;                 /* from the backend slot (else sp__malloc)    */
  struct sp__pinned_rec *next; /* list link (pinned_mu)                      */
} sp__pinned_rec;

static sp__mutex sp__pinned_mu = SP__MUTEX_INITIALIZER(INTEROP_PINNED);
static sp__pinned_rec *sp__pinned_head; /* live buffers of every device (sp__pinned_mu) */

/* ---- native streams ---- */

static sp_status interop_stream(sp_stream *s, const char *fn, sp__bstream **bs) {
  sp_status st = sp__stream_enter(s, fn);
  if (st != SP_OK) return st;
  if (!s->dev->be->stream_native)
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "%s: backend '%s' has no native stream handles (its streams are library "
                    "threads)",
                    fn, s->dev->be->name);
  return sp__stream_backend(s, bs);
}

sp_status sp_stream_native(sp_stream *s, void **out) {
  static const char fn[] = "sp_stream_native";
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
  sp__bstream *bs = NULL;
  sp_status st = interop_stream(s, fn, &bs);
  if (st != SP_OK) return st;
  void *h = NULL;
  st = s->dev->be->stream_native(bs, &h);
  if (st == SP_OK) *out = h;
  return st;
}

sp_status sp_stream_wait_native(sp_stream *s, void *native) {
  static const char fn[] = "sp_stream_wait_native";
  sp__bstream *bs = NULL;
  sp_status st = interop_stream(s, fn, &bs);
  if (st != SP_OK) return st;
  return s->dev->be->stream_wait_native(bs, native);
}

/* ---- pinned host buffers ---- */

sp_status sp_host_alloc_pinned(sp_device *dev, size_t bytes, void **out) {
  static const char fn[] = "sp_host_alloc_pinned";
  sp_status st = sp__device_enter(dev, fn);
  if (st != SP_OK) return st;
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
  if (!bytes) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: bytes is 0", fn);
  sp__pinned_rec *r = sp__calloc(1, sizeof(*r));
  if (!r) return sp__fail(SP_ERR_HOST_MEMORY, "%s: no host memory for the record", fn);
  st = sp__pinned_alloc(dev, bytes, &r->p, &r->pinned);
  if (st != SP_OK) {
    sp__free(r);
    return sp__fail(st, "%s: %zu bytes: neither pinned nor ordinary host memory", fn, bytes);
  }
  r->bytes = bytes;
  r->dev_id = dev->id;
  sp__mutex_lock(&sp__pinned_mu);
  r->next = sp__pinned_head;
  sp__pinned_head = r;
  sp__mutex_unlock(&sp__pinned_mu);
  sp__error_clear(); /* a failed pinned attempt that fell back is not this call's error */
  *out = r->p;
  return SP_OK;
}

static void pinned_release(sp_device *dev, sp__pinned_rec *r) {
  sp__pinned_free(dev, r->p, r->pinned);
  sp__free(r);
}

/* Unlinks p's record if dev_id owns it; NULL if none (*foreign: another device owns p). */
static sp__pinned_rec *pinned_take(void *p, uint64_t dev_id, bool *foreign) {
  sp__pinned_rec *found = NULL;
  sp__mutex_lock(&sp__pinned_mu);
  for (sp__pinned_rec **link = &sp__pinned_head; *link; link = &(*link)->next) {
    if ((*link)->p != p) continue;
    *foreign = (*link)->dev_id != dev_id;
    if (!*foreign) {
      found = *link;
      *link = found->next;
    }
    break;
  }
  sp__mutex_unlock(&sp__pinned_mu);
  return found;
}

sp_status sp_host_free_pinned(sp_device *dev, void *p) {
  static const char fn[] = "sp_host_free_pinned";
  sp_status st = sp__device_enter(dev, fn);
  if (st != SP_OK || !p) return st;
  bool foreign = false;
  sp__pinned_rec *r = pinned_take(p, dev->id, &foreign);
  if (!r)
    return sp__fail(SP_ERR_INVALID_HANDLE, "%s: %p %s", fn, p,
                    foreign ? "was allocated by another device"
                            : "was not returned by sp_host_alloc_pinned, or is freed already");
  pinned_release(dev, r);
  return SP_OK;
}

void sp__interop_device_closing(sp_device *dev) {
  sp__pinned_rec *mine = NULL;
  sp__mutex_lock(&sp__pinned_mu);
  for (sp__pinned_rec **link = &sp__pinned_head; *link;) {
    sp__pinned_rec *r = *link;
    if (r->dev_id != dev->id) {
      link = &r->next;
      continue;
    }
    *link = r->next;
    r->next = mine;
    mine = r;
  }
  sp__mutex_unlock(&sp__pinned_mu);
  while (mine) {
    sp__pinned_rec *next = mine->next;
    pinned_release(dev, mine);
    mine = next;
  }
}
