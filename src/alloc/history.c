/* The allocator's event history: an optional ring of the last N allocator events per device.
 *
 * Owns sp__allocator.history (the ring being recorded into, NULL when off), history_rings (every
 * ring made) and history_mu. A ring is an array of `capacity` slots and one atomic ticket counter.
 * Recording takes ticket t = fetch_add(next), then claims slot t % capacity with a CAS of the
 * slot's sequence word from an even value older than t to 2t+1 (odd: being written), stores the
 * fields (relaxed atomics) and publishes 2t+2 with a release store: a seqlock per slot. A writer
 * that finds its slot busy (a writer one lap ahead or behind is in it: the ring is far too small
 * for the rate) drops its event and counts it. Readers take [max(base, next - capacity), next),
 * keep a slot only when its sequence word reads 2t+2 before and after the fields, so a slot being
 * rewritten is skipped, never torn. Invariants: slot t % capacity holds only ticket t's event or
 * none; tickets below `base` (events of an earlier enable of the same ring) are never read.
 * Locking: recording takes no lock (it may run under any allocator lock); enable/disable/destroy
 * take history_mu (a leaf, src/core/lock.h). Rings are never freed before the allocator, so a
 * thread that loaded the pointer just before a disable writes into memory that is still there, and
 * its event is either filtered by the next enable's base or shown, never a crash; a ring of the
 * same size is reused on the next enable, so memory stays bounded by the distinct sizes asked for.
 * The pointer is published with a release store after the ring is initialized; recorders load it
 * relaxed (the hot path) and issue an acquire fence before touching the ring.
 */
#include "alloc/alloc_internal.h"

#include <sys/syscall.h>
#include <unistd.h>

#include "core/env.h"

typedef struct hist_slot {
  _Alignas(64) _Atomic uint64_t seq; /* 2t+1 while ticket t writes, 2t+2 when written; 0: empty */
  _Atomic uint64_t t_ns;
  _Atomic uint64_t meta; /* kind | (stream+1) << 8 | (peer+1) << 20 | thread << 32   */
  _Atomic uint64_t bytes;
  _Atomic uint64_t address;
  _Atomic uint64_t segment;
} hist_slot;

struct sp__history {
  hist_slot *slots;                   /* [capacity]; immutable                                 */
  size_t capacity;                    /* immutable                                              */
  int device;                         /* cfg.index of the device; immutable                     */
  _Alignas(64) _Atomic uint64_t next; /* next ticket                                       */
  _Alignas(64) _Atomic uint64_t base; /* first ticket of the current enable                */
  _Atomic uint64_t dropped;           /* events lost to a busy slot since the enable            */
  _Atomic uint64_t start_ns;          /* sp__now_ns() at the enable                             */
  sp__history *link;                  /* history_rings chain; history_mu                        */
};

static const char *const hist_kind_names[SP__HIST_KINDS] = {
    [SP__HIST_ALLOC] = "alloc",
    [SP__HIST_FREE] = "free",
    [SP__HIST_FREE_PENDING] = "free_pending",
    [SP__HIST_FREE_COMPLETE] = "free_complete",
    [SP__HIST_REUSE] = "reuse",
    [SP__HIST_REUSE_WAIT] = "reuse_wait",
    [SP__HIST_SEGMENT_MAP] = "segment_map",
    [SP__HIST_SEGMENT_UNMAP] = "segment_unmap",
    [SP__HIST_OOM_RETRY] = "oom_retry",
    [SP__HIST_OOM] = "oom",
    [SP__HIST_EMPTY_CACHE] = "empty_cache",
    [SP__HIST_PAGE_DECOMMIT] = "page_decommit",
    [SP__HIST_PAGE_COMMIT] = "page_commit",
};

const char *sp__history_kind_name(unsigned kind) {
  return kind < SP__HIST_KINDS ? hist_kind_names[kind] : "invalid";
}

static _Thread_local uint32_t hist_tl_tid; /* this thread's kernel id, 0 until first looked up */

static uint32_t hist_thread_id(void) {
  if (SP__UNLIKELY(!hist_tl_tid)) hist_tl_tid = (uint32_t)syscall(SYS_gettid);
  return hist_tl_tid;
}

/* Stream indices + 1 fit in 12 bits; -1 (none) is stored as 0. */
_Static_assert(SP_STREAMS_MAX < 0xfff, "stream indices must fit the history's 12 bits");
_Static_assert(SP__HIST_KINDS <= 0xff, "kinds must fit the history's 8 bits");
static uint64_t hist_meta(unsigned kind, int stream, int peer) {
  return (uint64_t)(kind & 0xffu) | (uint64_t)((unsigned)(stream + 1) & 0xfffu) << 8 |
         (uint64_t)((unsigned)(peer + 1) & 0xfffu) << 20 | (uint64_t)hist_thread_id() << 32;
}

void sp__history_add(sp__history *h, unsigned kind, int stream, int peer, size_t bytes,
                     const void *address, const void *segment) {
  atomic_thread_fence(memory_order_acquire); /* pairs with the release store of the pointer */
  uint64_t t = atomic_fetch_add_explicit(&h->next, 1, memory_order_relaxed);
  hist_slot *slot = &h->slots[t % h->capacity];
  uint64_t old = atomic_load_explicit(&slot->seq, memory_order_relaxed);
  if ((old & 1) || old > 2 * t ||
      !atomic_compare_exchange_strong_explicit(&slot->seq, &old, 2 * t + 1, memory_order_relaxed,
                                               memory_order_relaxed)) {
    atomic_fetch_add_explicit(&h->dropped, 1, memory_order_relaxed);
    return;
  }
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&slot->t_ns, sp__now_ns(), memory_order_relaxed);
  atomic_store_explicit(&slot->meta, hist_meta(kind, stream, peer), memory_order_relaxed);
  atomic_store_explicit(&slot->bytes, bytes, memory_order_relaxed);
  atomic_store_explicit(&slot->address, (uint64_t)(uintptr_t)address, memory_order_relaxed);
  atomic_store_explicit(&slot->segment, (uint64_t)(uintptr_t)segment, memory_order_relaxed);
  atomic_store_explicit(&slot->seq, 2 * t + 2, memory_order_release);
}

/* Ticket t's event from its slot, if the slot holds it whole. */
static bool hist_slot_read(const sp__history *h, uint64_t t, sp__hist_event *e) {
  hist_slot *slot = &h->slots[t % h->capacity];
  uint64_t s1 = atomic_load_explicit(&slot->seq, memory_order_acquire);
  if (s1 != 2 * t + 2) return false;
  e->seq = t;
  e->device = h->device;
  e->t_ns = atomic_load_explicit(&slot->t_ns, memory_order_relaxed);
  uint64_t meta = atomic_load_explicit(&slot->meta, memory_order_relaxed);
  e->bytes = atomic_load_explicit(&slot->bytes, memory_order_relaxed);
  e->address = (uintptr_t)atomic_load_explicit(&slot->address, memory_order_relaxed);
  e->segment = (uintptr_t)atomic_load_explicit(&slot->segment, memory_order_relaxed);
  atomic_thread_fence(memory_order_acquire);
  if (atomic_load_explicit(&slot->seq, memory_order_relaxed) != s1) return false;
  e->kind = (unsigned)(meta & 0xffu);
  e->stream = (int)((meta >> 8) & 0xfffu) - 1;
  e->peer = (int)((meta >> 20) & 0xfffu) - 1;
  e->thread = (uint32_t)(meta >> 32);
  return true;
}

size_t sp__history_read(sp__allocator *a, sp__hist_event *out, size_t max, sp__history_info *info) {
  sp__history *h = atomic_load_explicit(&a->history, memory_order_acquire);
  if (info) *info = (sp__history_info){.enabled = h != NULL};
  if (!h) return 0;
  uint64_t end = atomic_load_explicit(&h->next, memory_order_acquire);
  uint64_t base = atomic_load_explicit(&h->base, memory_order_relaxed);
  uint64_t begin = end - base > h->capacity ? end - h->capacity : base;
  if (end - begin > max) begin = end - max;
  size_t n = 0;
  for (uint64_t t = begin; t < end; t++)
    if (hist_slot_read(h, t, &out[n])) n++;
  if (info) {
    info->capacity = h->capacity;
    info->recorded = end - base;
    info->dropped = atomic_load_explicit(&h->dropped, memory_order_relaxed);
    info->start_ns = atomic_load_explicit(&h->start_ns, memory_order_relaxed);
  }
  return n;
}

/* A ring of `entries` slots for a (history_mu held): a kept one of that size, or a new one. */
static sp__history *hist_ring_get(sp__allocator *a, size_t entries) {
  for (sp__history *h = a->history_rings; h; h = h->link)
    if (h->capacity == entries) return h;
  sp__history *h = sp__aligned_calloc(1, sizeof(*h));
  hist_slot *slots = h ? sp__aligned_calloc(entries, sizeof(*slots)) : NULL;
  if (!slots) {
    sp__aligned_free(h);
    return NULL;
  }
  h->slots = slots;
  h->capacity = entries;
  h->device = a->dev->cfg.index;
  h->link = a->history_rings;
  a->history_rings = h;
  return h;
}

sp_status sp__history_set(sp__allocator *a, size_t entries, const char *fn) {
  if (entries > SP__HISTORY_MAX)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %zu entries is more than the most, %zu", fn,
                    entries, SP__HISTORY_MAX);
  sp__mutex_lock(&a->history_mu);
  sp__history *h = entries ? hist_ring_get(a, entries) : NULL;
  if (entries && !h) {
    sp__mutex_unlock(&a->history_mu);
    return sp__fail(SP_ERR_HOST_MEMORY, "%s: no host memory for %zu history entries", fn, entries);
  }
  atomic_store_explicit(&a->history, NULL, memory_order_release);
  if (h) {
    atomic_store_explicit(&h->base, atomic_load_explicit(&h->next, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&h->dropped, 0, memory_order_relaxed);
    atomic_store_explicit(&h->start_ns, sp__now_ns(), memory_order_relaxed);
    atomic_store_explicit(&a->history, h, memory_order_release);
  }
  sp__mutex_unlock(&a->history_mu);
  return SP_OK;
}

sp_status sp__history_init(sp__allocator *a) {
  sp__mutex_init(&a->history_mu, SP__RANK_ALLOC_HISTORY);
  uint64_t n = 0;
  bool set = false;
  sp_status st = sp__env_u64("sp_device_open", "STREAMPOOL_MEMORY_HISTORY", SP__ENV_COUNT, 0,
                             SP__HISTORY_MAX, &n, &set);
  if (st == SP_OK && set && n) st = sp__history_set(a, (size_t)n, "sp_device_open");
  if (st != SP_OK) sp__history_destroy(a);
  return st;
}

void sp__history_destroy(sp__allocator *a) {
  for (sp__history *h = a->history_rings, *next; h; h = next) {
    next = h->link;
    sp__aligned_free(h->slots);
    sp__aligned_free(h);
  }
  a->history_rings = NULL;
  atomic_store_explicit(&a->history, NULL, memory_order_relaxed);
  sp__mutex_destroy(&a->history_mu);
}

sp_status sp_memory_history_enable(sp_device *dev, size_t entries) {
  static const char fn[] = "sp_memory_history_enable";
  sp_status st = sp__device_enter(dev, fn);
  if (st != SP_OK) return st;
  if (!entries)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: entries is 0 (sp_memory_history_disable turns "
                    "the history off)",
                    fn);
  return sp__history_set(dev->alloc, entries, fn);
}

sp_status sp_memory_history_disable(sp_device *dev) {
  static const char fn[] = "sp_memory_history_disable";
  sp_status st = sp__device_enter(dev, fn);
  if (st != SP_OK) return st;
  return sp__history_set(dev->alloc, 0, fn);
}
