/* Devices: open and close, the effective configuration, the live-device registry and fork safety.
 *
 * Owns struct sp_device's lifetime. sp_device_open builds a device in a fixed order (config and
 * environment, backend, slot pool, event pool, backend device, allocator last) and undoes exactly
 * what it built on failure; sp_device_close tears down in the reverse order after syncing every
 * stream (the allocator first; pool streams and their private capture twins, ops.c, last), and
 * refuses (SP_ERR_BUSY) while dev->models, dev->batchers or dev->residents, counted by src/infer,
 * is not 0. Device ids come from a process-wide counter and are never reused, so per-thread
 * bindings keyed by id never match a later device at a recycled address.
 *
 * Registry: a mutex-protected list of live devices, so that thread-exit destructors
 * (stream_pool.c) touch a device only while it is open. Its lock ranks below all device locks
 * (src/core/lock.h).
 *
 * Fork: a pthread_atfork child handler increments sp__fork_epoch; every device remembers the
 * epoch it was opened in, and sp__device_enter compares the two (one relaxed load on the hot
 * path, no getpid). The registry lock is held across fork() (prepare/parent/child handlers) so the
 * child never inherits it locked; the child's registry starts empty, as the parent's devices are
 * not the child's.
 */
#include "core/device.h"

#include <stdio.h>
#include <string.h>

#include "alloc/alloc.h"
#include "core/env.h"

atomic_uint sp__fork_epoch;

static sp__mutex sp__registry_mu = SP__MUTEX_INITIALIZER(REGISTRY);
static sp_device *sp__registry_head; /* live devices (sp__registry_mu) */
static _Atomic uint64_t sp__device_next_id = 1;
static pthread_once_t sp__fork_once = PTHREAD_ONCE_INIT;

void sp__registry_lock(void) { sp__mutex_lock(&sp__registry_mu); }
void sp__registry_unlock(void) { sp__mutex_unlock(&sp__registry_mu); }

sp_device *sp__registry_find_locked(uint64_t id) {
  for (sp_device *d = sp__registry_head; d; d = d->registry_next)
    if (d->id == id) return d;
  return NULL;
}

bool sp__registry_other_owns(const sp_device *dev, const void *p, size_t bytes) {
  bool owned = false;
  sp__registry_lock();
  for (sp_device *d = sp__registry_head; d && !owned; d = d->registry_next)
    owned = d != dev && d->alloc && sp__alloc_touches(d->alloc, p, bytes);
  sp__registry_unlock();
  return owned;
}

static void registry_add(sp_device *dev) {
  sp__registry_lock();
  dev->registry_next = sp__registry_head;
  sp__registry_head = dev;
  sp__registry_unlock();
}

static void registry_remove(sp_device *dev) {
  sp__registry_lock();
  for (sp_device **p = &sp__registry_head; *p; p = &(*p)->registry_next) {
    if (*p == dev) {
      *p = dev->registry_next;
      break;
    }
  }
  sp__registry_unlock();
}

static void fork_prepare(void) { sp__registry_lock(); }
static void fork_parent(void) { sp__registry_unlock(); }
static void fork_child(void) {
  sp__registry_head = NULL;
  atomic_fetch_add_explicit(&sp__fork_epoch, 1, memory_order_relaxed);
  sp__registry_unlock();
}
static void fork_install(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* ---- configuration ---- */

static sp_status config_check_caller(const char *fn, const sp_device_config *c) {
  if (c->backend && strcmp(c->backend, "auto") && strcmp(c->backend, "host") &&
      strcmp(c->backend, "cuda"))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: backend '%s' is not auto, host or cuda", fn,
                    c->backend);
  if (c->streams == 1 || c->streams > SP_STREAMS_MAX)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: streams=%u, must be 0 (default 32) or 2..%d", fn,
                    c->streams, (int)SP_STREAMS_MAX);
  if (c->stream_mode != SP_STREAMS_ROUND_ROBIN && c->stream_mode != SP_STREAMS_EXCLUSIVE)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: stream_mode=%d is not a sp_stream_mode", fn,
                    (int)c->stream_mode);
  if (c->alloc_flags & ~(unsigned)SP_ALLOC_NO_INFLIGHT_REUSE)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: alloc_flags=0x%x has unknown bits", fn,
                    c->alloc_flags);
  return SP_OK;
}

/* cfg (may be NULL) + defaults + environment -> *out. */
static sp_status config_effective(const char *fn, const sp_device_config *cfg,
                                  sp_device_config *out) {
  sp_device_config c;
  memset(&c, 0, sizeof(c));
  if (cfg) c = *cfg;
  sp_status st = config_check_caller(fn, &c);
  if (st == SP_OK) st = sp__env_apply(fn, &c);
  if (st != SP_OK) return st;
  if (!c.streams) c.streams = 32;
  if (c.backend && !strcmp(c.backend, "auto")) c.backend = NULL;
  *out = c;
  return SP_OK;
}

static sp_status device_backend_open(const char *fn, const sp_device_config *c,
                                     const sp__backend **be_out) {
  const sp__backend *be = NULL;
  sp_status st = sp__backend_find(c->backend, &be);
  if (st != SP_OK) return st;
  int count = 0;
  st = be->device_count(&count);
  if (st != SP_OK) return st;
  if (c->index < 0 || c->index >= count)
    return sp__fail(SP_ERR_NO_DEVICE, "%s: %s device %d does not exist (%d device%s)", fn, be->name,
                    c->index, count, count == 1 ? "" : "s");
  *be_out = be;
  return SP_OK;
}

/* ---- open / close ---- */

static void device_init_streams(sp_device *dev) {
  for (unsigned i = 0; i < SP_STREAMS_MAX; i++) {
    dev->streams[i].dev = dev;
    dev->streams[i].index = i;
    atomic_init(&dev->streams[i].bstream, NULL);
    dev->privates[i].dev = dev;
    dev->privates[i].index = i;
    atomic_init(&dev->privates[i].bstream, NULL);
  }
}

sp_status sp_device_open(const sp_device_config *cfg, sp_device **out) {
  static const char fn[] = "sp_device_open";
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
  pthread_once(&sp__fork_once, fork_install);
  sp_device_config c;
  const sp__backend *be = NULL;
  sp_status st = config_effective(fn, cfg, &c);
  if (st == SP_OK) st = device_backend_open(fn, &c, &be);
  if (st != SP_OK) return st;

  sp_device *dev = sp__calloc(1, sizeof(*dev));
  if (!dev) return sp__fail(SP_ERR_HOST_MEMORY, "%s: no host memory for the device", fn);
  dev->fork_epoch = atomic_load_explicit(&sp__fork_epoch, memory_order_relaxed);
  dev->id = atomic_fetch_add_explicit(&sp__device_next_id, 1, memory_order_relaxed);
  dev->be = be;
  dev->cfg = c;
  snprintf(dev->backend_name, sizeof(dev->backend_name), "%s", be->name);
  dev->cfg.backend = dev->backend_name;
  atomic_init(&dev->rr_next, 0);
  device_init_streams(dev);
  if (sp__mutex_init(&dev->stream_create_mu, SP__RANK_STREAM_CREATE)) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "%s: pthread_mutex_init failed", fn);
    goto free_dev;
  }
  if (sp__mutex_init(&dev->capture_mu, SP__RANK_DEVICE_CAPTURE)) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "%s: pthread_mutex_init failed", fn);
    goto destroy_mutex;
  }
  st = sp__slot_pool_create(dev);
  if (st != SP_OK) goto destroy_capture_mutex;
  st = sp__event_pool_create(dev);
  if (st != SP_OK) goto destroy_slots;
  st = be->device_open(c.index, &dev->bdev);
  if (st != SP_OK) goto destroy_events;
  const char *name = be->device_name(dev->bdev);
  snprintf(dev->name, sizeof(dev->name), "%s", name ? name : be->name);
  st = sp__alloc_create(dev, &dev->alloc);
  if (st != SP_OK) goto close_bdev;
  registry_add(dev);
  *out = dev;
  return SP_OK;

close_bdev:
  be->device_close(dev->bdev);
destroy_events:
  sp__event_pool_destroy(dev);
destroy_slots:
  sp__slot_pool_destroy(dev);
destroy_capture_mutex:
  sp__mutex_destroy(&dev->capture_mu);
destroy_mutex:
  sp__mutex_destroy(&dev->stream_create_mu);
free_dev:
  sp__free(dev);
  return st;
}

sp_status sp_device_close(sp_device *dev) {
  if (!dev) return SP_OK;
  if (dev->fork_epoch != atomic_load_explicit(&sp__fork_epoch, memory_order_relaxed)) return SP_OK;
  unsigned models = atomic_load(&dev->models), batchers = atomic_load(&dev->batchers);
  unsigned residents = atomic_load(&dev->residents);
  if (models || batchers || residents)
    return sp__fail(SP_ERR_BUSY,
                    "sp_device_close: %u model(s), %u batcher(s) and %u resident(s) of this "
                    "device are still alive; destroy the batchers, close the residents and free "
                    "the models first (the device stays open)",
                    models, batchers, residents);
  int cancel = sp__cancel_off(); /* syncs, and joins the host backend's stream threads */
  registry_remove(dev);
  sp__bindings_forget(dev);
  (void)sp__device_sync_all(dev);
  sp__alloc_destroy(dev->alloc);
  sp__event_pool_destroy(dev);
  for (unsigned i = 0; i < dev->cfg.streams; i++) {
    sp__bstream *bs = sp__stream_peek(&dev->streams[i]);
    if (bs) dev->be->stream_destroy(bs);
    bs = sp__stream_peek(&dev->privates[i]); /* capture streams: idle since their last upload */
    if (bs) dev->be->stream_destroy(bs);
  }
  sp__interop_device_closing(dev);
  dev->be->device_close(dev->bdev);
  sp__slot_pool_destroy(dev);
  sp__mutex_destroy(&dev->capture_mu);
  sp__mutex_destroy(&dev->stream_create_mu);
  sp__free(dev);
  sp__cancel_restore(cancel);
  return SP_OK;
}

sp_status sp__device_sync_all(sp_device *dev) {
  sp_status first = SP_OK;
  int cancel = sp__cancel_off();
  for (unsigned i = 0; i < dev->cfg.streams; i++) {
    sp__bstream *bs = sp__stream_peek(&dev->streams[i]);
    if (!bs) continue;
    sp_status st = dev->be->stream_sync(bs);
    if (st != SP_OK && first == SP_OK) first = st;
  }
  sp__cancel_restore(cancel);
  return first;
}

sp_status sp_device_sync(sp_device *dev) {
  sp_status st = sp__device_enter(dev, "sp_device_sync");
  if (st != SP_OK) return st;
  return sp__device_sync_all(dev);
}

/* ---- queries ---- */

const char *sp_device_backend(const sp_device *dev) { return dev ? dev->backend_name : NULL; }

const char *sp_device_name(const sp_device *dev) { return dev ? dev->name : NULL; }

sp_status sp_device_config_get(const sp_device *dev, sp_device_config *out) {
  sp_status st = sp__device_enter(dev, "sp_device_config_get");
  if (st != SP_OK) return st;
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_device_config_get: out is NULL");
  *out = dev->cfg;
  return SP_OK;
}

sp_status sp_device_memory_info(sp_device *dev, size_t *free_bytes, size_t *total_bytes) {
  sp_status st = sp__device_enter(dev, "sp_device_memory_info");
  if (st != SP_OK) return st;
  if (!free_bytes || !total_bytes)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_device_memory_info: %s is NULL",
                    !free_bytes ? "free_bytes" : "total_bytes");
  size_t f = 0, t = 0;
  st = dev->be->memory_info(dev->bdev, &f, &t);
  if (st != SP_OK) return st;
  *free_bytes = f;
  *total_bytes = t;
  return SP_OK;
}
