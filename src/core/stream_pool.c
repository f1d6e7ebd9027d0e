/* The stream pool: each thread's current stream per device, and exclusive-mode slots.
 *
 * Bindings: a thread-local table of (device id, stream) pairs, searched linearly on every
 * sp_stream_current (the hot path: a few loads, no lock, no atomic RMW). Matching is by device id,
 * which is never reused, so a binding left behind by a closed device never matches a new device
 * at the same address; such stale entries are evicted when the table fills. The table uses the
 * initial-exec TLS model so a lookup is a plain thread-pointer-relative load.
 *
 * Round-robin: the n-th thread to bind on a device gets pool stream 1 + (n mod (size - 1)).
 * Exclusive: a thread takes a slot index in [1, size) from a lock-free tagged-index stack
 * (idstack.h) and owns it until sp_stream_release_current, sp_stream_set_current, or its exit.
 * Stream 0 is never handed out by either mode. sp_stream_set_current may make current only
 * stream 0, the slot the thread owns already, or a slot held by sp_stream_acquire (its holder's
 * to bind), so a slot bound by a thread is never current in another.
 * src/core/stream_pool.pml models the free list and the thread-exit return.
 *
 * Extra streams (sp_stream_acquire/sp_stream_release, issue 10): in exclusive mode a slot popped
 * from the same stack, owned by the caller (not bound to any thread) until released; `acquired`
 * has its bit set meanwhile (set after the pop, cleared by an RMW before the push, so a double
 * release is seen and changes nothing). In round-robin mode the next round-robin stream, shared
 * like every round-robin stream; release only checks it.
 *
 * Waiting for a slot (slow path only): waiters register in `waiters` and sleep on wait_cv under
 * wait_mu (src/core/lock.h). A releaser pushes the slot, then reads `waiters` with an acq_rel RMW
 * and signals under wait_mu only if someone waits; the waiter increments `waiters` (acq_rel RMW)
 * before its pop. The two RMWs are ordered in waiters' modification order: either the releaser's
 * comes later and sees the waiter, or the waiter's comes later and synchronizes with it, so its pop
 * sees the slot. The mutex makes the signal land after the waiter sleeps. The fast path takes no
 * lock.
 *
 * Thread exit: the first binding a thread makes sets a pthread key, whose destructor gives back
 * the thread's owned slots. It reaches each device through the live-device registry (device.c),
 * under the registry lock (ranked before wait_mu), so a device closed meanwhile is never
 * touched.
 */
#include <errno.h>
#include <time.h>

#include "core/device.h"
#include "core/idstack.h"

struct sp__slot_pool {
  sp__idstack free;                      /* free slot indices in [1, size)                  */
  _Atomic uint32_t link[SP_STREAMS_MAX]; /* idstack links, one per slot                    */
  sp__mutex wait_mu;                     /* guards sleeping on wait_cv                      */
  pthread_cond_t wait_cv;                /* signalled when a slot is pushed and waiters > 0 */
  atomic_uint waiters;                   /* threads in the slow path of slot_acquire    */
  _Atomic uint64_t acquired[SP_STREAMS_MAX / 64]; /* bit i: slot i held by sp_stream_acquire */
};

enum { SP__BINDINGS_MAX = 16 };

typedef struct sp__thread_bindings {
  unsigned n;                          /* entries in use                           */
  uint32_t owned;                      /* bit i: entry i owns an exclusive slot    */
  int key_set;                         /* the exit destructor is armed             */
  uint64_t dev_id[SP__BINDINGS_MAX];   /* device ids; never 0 for a used entry     */
  sp_stream *stream[SP__BINDINGS_MAX]; /* the bound stream                         */
} sp__thread_bindings;

#if defined(__GNUC__)
#define SP__TLS_FAST __attribute__((tls_model("initial-exec")))
#define SP__NOINLINE_ATTR __attribute__((noinline))
#else
#define SP__TLS_FAST
#define SP__NOINLINE_ATTR
#endif
static _Thread_local sp__thread_bindings sp__tb SP__TLS_FAST;

static pthread_key_t sp__exit_key;
static pthread_once_t sp__exit_once = PTHREAD_ONCE_INIT;

/* ---- the slot pool ---- */

static _Atomic uint32_t *slot_link(void *ctx, uint32_t i) {
  return &((sp__slot_pool *)ctx)->link[i];
}

sp_status sp__slot_pool_create(sp_device *dev) {
  sp__slot_pool *p = sp__calloc(1, sizeof(*p));
  if (!p) return sp__fail(SP_ERR_HOST_MEMORY, "sp_device_open: no host memory for the slot pool");
  pthread_condattr_t ca;
  int bad = pthread_condattr_init(&ca);
  if (!bad) bad = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (!bad) bad = pthread_cond_init(&p->wait_cv, &ca);
  pthread_condattr_destroy(&ca);
  if (bad) goto free_pool;
  if (sp__mutex_init(&p->wait_mu, SP__RANK_SLOT_WAIT)) goto destroy_cv;
  sp__idstack_init(&p->free);
  atomic_init(&p->waiters, 0);
  for (uint32_t i = dev->cfg.streams - 1; i >= 1; i--) sp__idstack_push(&p->free, &p->link[i], i);
  dev->slots = p;
  return SP_OK;

destroy_cv:
  pthread_cond_destroy(&p->wait_cv);
free_pool:
  sp__free(p);
  return sp__fail(SP_ERR_HOST_MEMORY, "sp_device_open: cannot initialize the slot pool's locks");
}

void sp__slot_pool_destroy(sp_device *dev) {
  sp__slot_pool *p = dev->slots;
  if (!p) return;
  sp__mutex_destroy(&p->wait_mu);
  pthread_cond_destroy(&p->wait_cv);
  sp__free(p);
  dev->slots = NULL;
}

static void slot_release(sp_device *dev, uint32_t i) {
  sp__slot_pool *p = dev->slots;
  sp_assert(i >= 1 && i < dev->cfg.streams);
  sp__idstack_push(&p->free, &p->link[i], i);
  /* An RMW, not a load: ordered against the waiter's increment in waiters' modification order
   * (fences would do too, but ThreadSanitizer does not model them). */
  if (atomic_fetch_add_explicit(&p->waiters, 0, memory_order_acq_rel)) {
    sp__mutex_lock(&p->wait_mu);
    pthread_cond_signal(&p->wait_cv);
    sp__mutex_unlock(&p->wait_mu);
  }
}

static struct timespec deadline_after_ms(unsigned ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

static uint32_t slot_wait(sp_device *dev) {
  sp__slot_pool *p = dev->slots;
  struct timespec deadline = deadline_after_ms(dev->cfg.slot_wait_ms);
  uint32_t i = SP__IDSTACK_NONE;
  int cancel = sp__cancel_off(); /* the timed wait is a cancellation point: never leave wait_mu */
  sp__mutex_lock(&p->wait_mu);
  atomic_fetch_add_explicit(&p->waiters, 1, memory_order_acq_rel);
  for (;;) {
    i = sp__idstack_pop(&p->free, slot_link, p);
    if (i != SP__IDSTACK_NONE) break;
    int rc = sp__cond_timedwait(&p->wait_cv, &p->wait_mu, &deadline);
    if (rc == ETIMEDOUT) {
      i = sp__idstack_pop(&p->free, slot_link, p);
      break;
    }
  }
  atomic_fetch_sub_explicit(&p->waiters, 1, memory_order_relaxed);
  sp__mutex_unlock(&p->wait_mu);
  sp__cancel_restore(cancel);
  return i;
}

static sp_status slot_acquire(sp_device *dev, const char *fn, uint32_t *out) {
  uint32_t i = sp__idstack_pop(&dev->slots->free, slot_link, dev->slots);
  if (i == SP__IDSTACK_NONE && dev->cfg.slot_wait_ms) i = slot_wait(dev);
  if (i == SP__IDSTACK_NONE)
    return sp__fail(SP_ERR_POOL_EXHAUSTED,
                    "%s: all %u exclusive stream slots are owned by other threads (waited %u ms)",
                    fn, dev->cfg.streams - 1, dev->cfg.slot_wait_ms);
  sp_assert(i >= 1 && i < dev->cfg.streams);
  *out = i;
  return SP_OK;
}

/* ---- the per-thread binding table ---- */

static void bindings_remove(sp__thread_bindings *t, unsigned k) {
  unsigned last = t->n - 1;
  uint32_t last_owned = (t->owned >> last) & 1u;
  t->owned &= ~((1u << k) | (1u << last));
  if (k != last) { /* move the last entry into the hole */
    t->dev_id[k] = t->dev_id[last];
    t->stream[k] = t->stream[last];
    t->owned |= last_owned << k;
  }
  t->dev_id[last] = 0;
  t->stream[last] = NULL;
  t->n = last;
}

/* Thread exit: give back every owned slot of a device still open. */
static void bindings_exit(void *arg) {
  (void)arg;
  sp__thread_bindings *t = &sp__tb;
  if (t->owned) {
    sp__registry_lock();
    for (unsigned k = 0; k < t->n; k++) {
      if (!((t->owned >> k) & 1u)) continue;
      sp_device *dev = sp__registry_find_locked(t->dev_id[k]);
      if (dev) slot_release(dev, t->stream[k]->index);
    }
    sp__registry_unlock();
  }
  t->n = 0;
  t->owned = 0;
  t->key_set = 0;
}

static void exit_key_create(void) { (void)pthread_key_create(&sp__exit_key, bindings_exit); }

static sp_status bindings_arm(const char *fn) {
  sp__thread_bindings *t = &sp__tb;
  if (t->key_set) return SP_OK;
  pthread_once(&sp__exit_once, exit_key_create);
  if (pthread_setspecific(sp__exit_key, t))
    return sp__fail(SP_ERR_HOST_MEMORY, "%s: pthread_setspecific failed", fn);
  t->key_set = 1;
  return SP_OK;
}

/* Makes room for one more entry, evicting entries of closed devices. */
static sp_status bindings_room(const char *fn) {
  sp__thread_bindings *t = &sp__tb;
  if (t->n < SP__BINDINGS_MAX) return SP_OK;
  sp__registry_lock();
  for (unsigned k = t->n; k-- > 0;)
    if (!sp__registry_find_locked(t->dev_id[k])) bindings_remove(t, k);
  sp__registry_unlock();
  if (t->n < SP__BINDINGS_MAX) return SP_OK;
  return sp__fail(SP_ERR_UNSUPPORTED, "%s: this thread is bound to %d open devices, the most", fn,
                  (int)SP__BINDINGS_MAX);
}

static int bindings_find(const sp_device *dev) {
  const sp__thread_bindings *t = &sp__tb;
  for (unsigned k = 0; k < t->n; k++)
    if (t->dev_id[k] == dev->id) return (int)k;
  return -1;
}

static void bindings_unbind(sp_device *dev, int k) {
  sp__thread_bindings *t = &sp__tb;
  if ((t->owned >> k) & 1u) slot_release(dev, t->stream[k]->index);
  bindings_remove(t, (unsigned)k);
}

static sp_status bindings_add(sp_device *dev, sp_stream *s, int owned) {
  sp__thread_bindings *t = &sp__tb;
  sp_assert(t->n < SP__BINDINGS_MAX);
  t->dev_id[t->n] = dev->id;
  t->stream[t->n] = s;
  if (owned) t->owned |= 1u << t->n;
  t->n++;
  return SP_OK;
}

void sp__bindings_forget(sp_device *dev) {
  int k = bindings_find(dev);
  if (k >= 0) bindings_unbind(dev, k);
}

/* ---- public ---- */

static SP__NOINLINE_ATTR sp_status stream_bind(sp_device *dev, sp_stream **out) {
  static const char fn[] = "sp_stream_current";
  sp_status st = bindings_arm(fn);
  if (st == SP_OK) st = bindings_room(fn);
  if (st != SP_OK) return st;
  sp_stream *s = NULL;
  int owned = 0;
  if (dev->cfg.stream_mode == SP_STREAMS_EXCLUSIVE) {
    uint32_t i = 0;
    st = slot_acquire(dev, fn, &i);
    if (st != SP_OK) return st;
    s = &dev->streams[i];
    owned = 1;
  } else {
    unsigned n = atomic_fetch_add_explicit(&dev->rr_next, 1, memory_order_relaxed);
    s = &dev->streams[1 + n % (dev->cfg.streams - 1)];
  }
  bindings_add(dev, s, owned);
  *out = s;
  return SP_OK;
}

sp_status sp_stream_current(sp_device *dev, sp_stream **out) {
  if (SP__UNLIKELY(!out))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_stream_current: out is NULL");
  sp_status st = sp__device_enter(dev, "sp_stream_current");
  if (SP__UNLIKELY(st != SP_OK)) return st;
  const sp__thread_bindings *t = &sp__tb;
  uint64_t id = dev->id;
  for (unsigned k = 0; k < t->n; k++) {
    if (t->dev_id[k] == id) {
      *out = t->stream[k];
      return SP_OK;
    }
  }
  return stream_bind(dev, out);
}

sp_status sp_stream_set_current(sp_device *dev, sp_stream *s) {
  static const char fn[] = "sp_stream_set_current";
  sp_status st = sp__stream_of(dev, s, fn);
  if (st != SP_OK) return st;
  int k = bindings_find(dev);
  if (dev->cfg.stream_mode == SP_STREAMS_EXCLUSIVE && s->index != 0) {
    /* A pool stream is an exclusive slot: current only in the thread that owns it, or where its
     * sp_stream_acquire holder binds it; a slot bound by another thread, or free, is refused
     * (issue 14 W6). */
    if (k >= 0 && ((sp__tb.owned >> k) & 1u) && sp__tb.stream[k] == s) return SP_OK;
    uint64_t held =
        atomic_load_explicit(&dev->slots->acquired[s->index / 64], memory_order_relaxed);
    if (!((held >> (s->index % 64)) & 1u))
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "%s: stream %u is an exclusive slot this thread does not own (exclusive "
                      "mode: take a slot with sp_stream_current or sp_stream_acquire, or set the "
                      "default stream)",
                      fn, s->index);
  }
  if (k >= 0) bindings_unbind(dev, k);
  st = bindings_arm(fn);
  if (st == SP_OK) st = bindings_room(fn);
  if (st != SP_OK) return st;
  return bindings_add(dev, s, 0);
}

sp_status sp_stream_release_current(sp_device *dev) {
  sp_status st = sp__device_enter(dev, "sp_stream_release_current");
  if (st != SP_OK) return st;
  sp__bindings_forget(dev);
  return SP_OK;
}

/* ---- extra streams besides the current one ---- */

sp_status sp_stream_acquire(sp_device *dev, sp_stream **out) {
  static const char fn[] = "sp_stream_acquire";
  sp_status st = sp__device_enter(dev, fn);
  if (st != SP_OK) return st;
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
  if (dev->cfg.stream_mode != SP_STREAMS_EXCLUSIVE) {
    unsigned n = atomic_fetch_add_explicit(&dev->rr_next, 1, memory_order_relaxed);
    *out = &dev->streams[1 + n % (dev->cfg.streams - 1)];
    return SP_OK;
  }
  uint32_t i = 0;
  st = slot_acquire(dev, fn, &i);
  if (st != SP_OK) return st;
  atomic_fetch_or_explicit(&dev->slots->acquired[i / 64], 1ull << (i % 64), memory_order_relaxed);
  *out = &dev->streams[i];
  return SP_OK;
}

sp_status sp_stream_release(sp_device *dev, sp_stream *s) {
  static const char fn[] = "sp_stream_release";
  sp_status st = sp__stream_of(dev, s, fn);
  if (st != SP_OK) return st;
  if (s->index == 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: the default stream is never acquired", fn);
  if (dev->cfg.stream_mode != SP_STREAMS_EXCLUSIVE) return SP_OK;
  uint64_t bit = 1ull << (s->index % 64);
  uint64_t was =
      atomic_fetch_and_explicit(&dev->slots->acquired[s->index / 64], ~bit, memory_order_relaxed);
  if (!(was & bit))
    return sp__fail(SP_ERR_INVALID_HANDLE,
                    "%s: stream %u is not held by sp_stream_acquire (released already?)", fn,
                    s->index);
  slot_release(dev, s->index);
  return SP_OK;
}
