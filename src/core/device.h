/* The device and its streams as the other layers see them (internal).
 *
 * A device is opened once and closed once; between the two its fields below are immutable except
 * where a field names its lock or says it is atomic. Streams live in dev->streams[0..streams-1]
 * and are created on the backend lazily (sp__stream_backend), exactly once each.
 *
 * Layers above the core (src/alloc, src/infer) use only what this header declares.
 *
 * Locks: every lock of the library has its rank in the one table of src/core/lock.h (acquired in
 * increasing rank, checked at SP_DEBUG >= 1), which also says under which locks a backend call is
 * made. The capture mutex (ops.c) serializes graph captures on the private streams.
 */
#ifndef SP_CORE_DEVICE_H
#define SP_CORE_DEVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/lock.h"
#include "core/status.h"

typedef struct sp__allocator sp__allocator;   /* src/alloc */
typedef struct sp__event_pool sp__event_pool; /* src/core/event_pool.c */
typedef struct sp__slot_pool sp__slot_pool;   /* src/core/stream_pool.c */

struct sp_stream {
  sp_device *dev;                 /* owner; immutable                                  */
  unsigned index;                 /* 0 = default; immutable                            */
  _Atomic(sp__bstream *) bstream; /* backend stream, NULL until first use              */
};

struct sp_device {
  uint64_t id;                             /* unique per open in this process, never reused     */
  unsigned fork_epoch;                     /* sp__fork_epoch at open; differs in a forked child */
  const sp__backend *be;                   /* immutable                                          */
  sp__bdevice *bdev;                       /* immutable                                          */
  sp_device_config cfg;                    /* effective config (defaults + environment)          */
  char backend_name[16];                   /* cfg.backend points here                            */
  sp__mutex stream_create_mu;              /* serializes lazy backend stream creation            */
  sp_stream streams[SP_STREAMS_MAX];       /* [0, cfg.streams) are in use                        */
  sp_stream privates[SP_STREAMS_MAX];      /* capture twins of streams[] (ops.c), created lazily */
  sp__mutex capture_mu;                    /* serializes graph captures on privates[] (ops.c)    */
  atomic_uint rr_next;                     /* round-robin: bindings so far                        */
  sp__slot_pool *slots;                    /* exclusive mode free slots (stream_pool.c)          */
  sp__event_pool *events;                  /* event_pool.c                                        */
  sp__allocator *alloc;                    /* src/alloc                                           */
  char name[128];                          /* backend's device name, cached at open               */
  sp_device *registry_next;                /* live-device registry link (sp__registry_mu)         */
  atomic_uint models, batchers, residents; /* alive in src/infer; sp_device_close refuses while
                                                any is > 0                                    */
};

/* Incremented in every forked child (pthread_atfork). */
extern atomic_uint sp__fork_epoch;

/* The process-wide registry of live devices, keyed by id (device.c). Thread-exit destructors use
 * it to reach a device only while it is still open: find under the lock, act, unlock. The lock
 * ranks below every device lock (lock.h): a device lock may be taken while holding it. */
void sp__registry_lock(void);
/* Whether [p, p + bytes) touches memory that the allocator of another live device (not dev)
 * holds: such memory is never "foreign" to dev (another sp_device of the same GPU may free and
 * reuse it without ordering against dev's streams). Takes the registry lock. Any thread. */
bool sp__registry_other_owns(const sp_device *dev, const void *p, size_t bytes);
void sp__registry_unlock(void);
sp_device *sp__registry_find_locked(uint64_t id); /* NULL if closed */

/* The boundary check of every public function taking a device: NULL -> SP_ERR_INVALID_ARGUMENT,
 * used in a forked child -> SP_ERR_FORKED. `fn` names the public function in the message. */
static inline sp_status sp__device_enter(const sp_device *dev, const char *fn) {
  if (SP__UNLIKELY(!dev)) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: device is NULL", fn);
  if (SP__UNLIKELY(dev->fork_epoch != atomic_load_explicit(&sp__fork_epoch, memory_order_relaxed)))
    return sp__fail(SP_ERR_FORKED, "%s: device was opened before fork() in the parent process", fn);
  return SP_OK;
}

/* The same for a stream: NULL, forked; also checks the stream's index is in its device's pool. */
sp_status sp__stream_enter(const sp_stream *s, const char *fn);

/* The backend stream of s, created on first use (thread-safe, exactly once). */
sp_status sp__stream_backend(sp_stream *s, sp__bstream **out);

/* Checks dev (sp__device_enter), s (sp__stream_enter; NULL is an error) and that s is dev's. */
sp_status sp__stream_of(sp_device *dev, const sp_stream *s, const char *fn);

/* Resolves s (NULL: this thread's current stream on dev) and checks it belongs to dev. */
sp_status sp__stream_resolve(sp_device *dev, sp_stream *s, const char *fn, sp_stream **out);

/* Whether stream s has been created on the backend (so has work to wait for). */
static inline sp__bstream *sp__stream_peek(sp_stream *s) {
  return atomic_load_explicit(&s->bstream, memory_order_acquire);
}

/* Syncs every created stream of dev, no lock held while waiting. */
sp_status sp__device_sync_all(sp_device *dev);

/* Stream pool (stream_pool.c): exclusive-slot free list and per-thread bindings. */
sp_status sp__slot_pool_create(sp_device *dev); /* sets dev->slots */
void sp__slot_pool_destroy(sp_device *dev);
/* Drops the calling thread's binding for dev (giving back its slot); called by sp_device_close. */
void sp__bindings_forget(sp_device *dev);

/* Frees the pinned host buffers of dev still live (interop.c); called by sp_device_close. */
void sp__interop_device_closing(sp_device *dev);

/* Event pool (event_pool.c). destroy destroys every backend event; streams must be idle. */
sp_status sp__event_pool_create(sp_device *dev); /* sets dev->events */
void sp__event_pool_destroy(sp_device *dev);

/* Events for internal users (the allocator's pending frees): the same pool as sp_event_*. */
sp_status sp__event_acquire(sp_device *dev, unsigned flags, sp_event *out);
sp_status sp__event_release(sp_device *dev, sp_event ev);
sp_status sp__event_record(sp_device *dev, sp_event ev, sp_stream *s);
sp_status sp__event_query(sp_device *dev, sp_event ev); /* SP_OK / SP_ERR_NOT_READY */
sp_status sp__stream_wait_event(sp_stream *s, sp_event ev);
/* The backend event behind live event ev of dev, for waits from another device (peer.c): *out
 * is NULL when ev was not recorded since its acquire (it is complete). SP_ERR_INVALID_HANDLE
 * (message naming fn) for a stale or foreign handle. On SP_OK ev's slot is pinned (a release
 * meanwhile does not recycle it): the caller uses *out, then calls sp__event_unpin(dev, ev). */
sp_status sp__event_backend(sp_device *dev, sp_event ev, const char *fn, sp__bevent **out);
void sp__event_unpin(sp_device *dev, sp_event ev);
/* Tests: dev's event pool claims cached slots asymmetrically (membarrier, the default where the
 * system has it) or with a CAS on both sides (event_pool.c), and makes at most capacity slots
 * (at most its default, 2^18). Only before dev's first event. Returns false if asymmetric claims
 * were asked for and this system cannot make them. */
bool sp__event_pool_configure(sp_device *dev, bool asymmetric, unsigned capacity);
/* Tests: the generation slot index of dev's pool holds now (0 if the slot was never made). */
uint32_t sp__event_slot_generation(sp_device *dev, uint32_t index);
/* Tests only (tests/unit/internal/event_wrap.c), no concurrent use of ev: gives live event ev the
 * generation gen, as if its slot had been recycled that often; *out is the new handle. */
sp_status sp__event_force_generation(sp_device *dev, sp_event ev, uint32_t gen, sp_event *out);

/* Cancellation (issue 14 H1): library calls that can block run with the caller's cancellation
 * disabled, so pthread_cancel never unwinds a thread out of a library wait holding a library lock
 * or leaving a request queued; a pending cancel acts at the caller's next cancellation point after
 * the call returns. off returns the previous state for restore. */
static inline int sp__cancel_off(void) {
  int old = PTHREAD_CANCEL_ENABLE;
  (void)pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
  return old;
}
static inline void sp__cancel_restore(int old) {
  if (old != PTHREAD_CANCEL_DISABLE) (void)pthread_setcancelstate(old, NULL);
}

#endif /* SP_CORE_DEVICE_H */
