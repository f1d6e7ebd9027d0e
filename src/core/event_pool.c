/* The event pool: pooled, generation-checked events, shared by the public sp_event_* API and the
 * allocator (sp__event_*).
 *
 * Handles: sp_event.id = generation << 32 | (slot index + 1); id 0 is never valid. Each slot has
 * one atomic state word: generation << 32 | pins << 3 | steal << 2 | cached << 1 | live. A slot's
 * first generation is a hash of (device id, index), so a handle from another device almost never
 * matches either.
 *
 * A call on a handle pins the slot: one CAS that checks (generation, live) and adds a pin in the
 * same step, so the check and the action are one atomic unit; it acts on the slot's backend event,
 * then unpins. Release CASes (gen, live) to (gen + 1, free) keeping the pins: every later call
 * through any copy of the handle, and a second release, no longer match and get
 * SP_ERR_INVALID_HANDLE. A slot released while pinned is not recycled: the last unpin recycles
 * it. So a call that began before the release acts on the old event (it is ordered before the
 * release), and a call through a stale copy never reaches the event the slot holds next (issue 14
 * C1). A query, which only reads, pins nothing: it checks the state before and after its read and
 * keeps the answer only if both match the handle (sp__event_query). src/core/event_pool.pml
 * models this protocol, the query, and the former check-then-act one, whose counterexample is the
 * race.
 *
 * Wrap: generations are 32 bits. A slot whose next generation would be its first again (after
 * 2^32 releases) is retired: never recycled, so no old handle is ever accepted again.
 *
 * Storage: slots live in fixed-size chunks that are allocated on demand and published with a
 * release store into a fixed table; chunks never move or shrink until the device closes, so
 * lookups are lock-free (one acquire load of the chunk pointer, one CAS of the state). grow_mu
 * only serializes publishing a new chunk (no backend call under it).
 *
 * Free lists: one tagged-index stack (idstack.h) per flag set (plain, SP_EVENT_TIMING), so a slot's
 * backend event, created on the slot's first acquire, is kept across reuse with the same flags.
 * `stream` is reset at acquire: an event not recorded since its acquire is complete (its backend
 * event may still carry an older recording, which is ignored).
 *
 * Thread caches: in front of the shared stacks each thread keeps up to SP__EVC_MAX free (index,
 * generation) pairs per (device, flag set), in a heap block reached through one initial-exec TLS
 * pointer. A cached slot's state has the `cached` bit. Acquire pops the thread's cache and claims
 * the slot, (generation, cached) to (generation, live) in one step once its backend event exists
 * (else to (generation, free), and live after the event is made): with plain stores behind a hazard
 * word where the system has membarrier, else a CAS ("asymmetric claims" below); release sets
 * `cached` in its CAS when the thread's cache has room. When the shared stack is empty and every
 * slot of the pool has been created, acquire steals: it scans the slots from a rotating cursor for
 * one with the cached bit and claims it against the owner, so the owner's claim of that pair fails
 * (the generation only grows) and it drops the pair. Every free event is therefore reachable until
 * the pool's real capacity is in use (SP_ERR_POOL_EXHAUSTED, naming it; issue 14 W7). Entries are
 * keyed by device id << 1 | flag set; ids are never reused, so an entry of a closed device (whose
 * chunks sp_device_close freed wholesale) never matches again: it is dropped when the thread needs
 * its entry for another device, or at thread exit. The two paths that reach a device other than
 * the caller's, reclaiming an entry and the thread-exit destructor, find the device in the
 * live-device registry and flush to its shared stack under the registry lock, so a device closed
 * meanwhile is never touched.
 *
 * Locking: lock-free except grow_mu (chunk publishing) and the registry lock (lock.h) on the two
 * paths above, on a thread's first cache (joining the list of caches) and on a steal (its hazard
 * scan); callers of sp__event_acquire/release hold no lock (the allocator releases its events
 * after unlocking).
 *
 * Thread safety: any thread. A call racing with the release of its handle either acts on the
 * event before the release or returns SP_ERR_INVALID_HANDLE.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "core/device.h"
#include "core/idstack.h"

enum { SP__EV_CHUNK = 256, SP__EV_CHUNKS_MAX = 1024, SP__EV_CLASSES = 2 };
_Static_assert(SP__EV_CHUNK *SP__EV_CHUNKS_MAX < 0xffffffffu, "slot index + 1 fits 32 bits");
enum { SP__EVC_ENTRIES = 8, SP__EVC_MAX = 32, SP__EVC_BATCH = 16 };
_Static_assert(SP__EVC_BATCH > 0 && SP__EVC_BATCH <= SP__EVC_MAX, "a batch fits the cache");

/* The state word. */
#define SP__EVS_LIVE 1ull
#define SP__EVS_CACHED 2ull
#define SP__EVS_STEAL 4ull /* on a cached slot: a stealer is taking it (asymmetric claims) */
#define SP__EVS_PIN 8ull
#define SP__EVS_PINS 0xfffffff8ull /* pins << 3 */
#define SP__EVS_GEN(s) ((uint32_t)((s) >> 32))

typedef struct sp__event_slot {
  _Atomic uint64_t state;      /* generation << 32 | pins << 3 | steal, cached, live bits */
  uint32_t gen0;               /* first generation; reaching it again retires the slot   */
  _Atomic uint32_t link;       /* free-list link (idstack)                               */
  unsigned flags;              /* SP_EVENT_* of bev; set before the slot's first publish  */
  sp__bevent *bev;             /* backend event, NULL until the slot's first acquire     */
  _Atomic(sp_stream *) stream; /* stream of the last record since acquire, or NULL       */
} sp__event_slot;

struct sp__event_pool {
  _Atomic(sp__event_slot *) chunks[SP__EV_CHUNKS_MAX]; /* published once each             */
  atomic_uint next_index;           /* slots handed out for the first time so far             */
  sp__mutex grow_mu;                /* serializes chunk allocation                            */
  sp__idstack free[SP__EV_CLASSES]; /* by flags: [0] plain, [1] timing                    */
  uint64_t gen_seed;                /* the device id, hashed into first generations           */
  atomic_uint steal_cursor;         /* next slot index the exhaustion scan looks at           */
  atomic_uint retired;              /* slots retired at a generation wrap                     */
  bool asym;                        /* asymmetric claims of cached slots (membarrier); fixed  */
  unsigned cap;                     /* slots it may make: SP__EV_CHUNK * SP__EV_CHUNKS_MAX    */
};

static uint32_t event_gen0(uint64_t seed, uint32_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + index;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (uint32_t)(z ^ (z >> 31));
}

static sp__event_slot *event_slot_at(sp__event_pool *p, uint32_t i) {
  uint32_t c = i / SP__EV_CHUNK;
  if (c >= SP__EV_CHUNKS_MAX) return NULL;
  sp__event_slot *chunk = atomic_load_explicit(&p->chunks[c], memory_order_acquire);
  return chunk ? &chunk[i % SP__EV_CHUNK] : NULL;
}

static _Atomic uint32_t *event_link(void *ctx, uint32_t i) { return &event_slot_at(ctx, i)->link; }

/* ---- asymmetric claims ----
 * A thread claims the pairs of its own cache far more often than anyone steals (only when the
 * pool is exhausted), so with asymmetric claims the owner pays no read-modify-write and the
 * stealer a system call. The owner announces the slot in its hazard word, then loads the state
 * and, if it is still (gen, cached), stores (gen, live) (an acquire, once the slot's backend
 * event exists) or (gen, free); then clears the hazard. A stealer CASes (gen, cached) to (gen,
 * cached | steal), runs membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which puts a full memory
 * barrier into every running thread of the process, and then looks for the slot in every cache's
 * hazard word. That is Dekker's handshake with the owner's half of the fence moved into the
 * stealer: either the owner's load sees the steal mark (an acquire waits for the stealer to
 * settle it, a flush drops the pair), or the stealer sees the hazard and waits for it to clear,
 * after which the state says who won (the owner's store replaced the mark, or the mark is still
 * there and the stealer CASes it to free). src/core/event_pool.pml models the handshake
 * (-DNO_HAZARD_SCAN: two owners). Without membarrier (not Linux, or refused at registration) both
 * sides CAS, as event_claim_cached does; the claim then always leaves the slot free, and a cached
 * acquire goes live on the slow path (reading bev before winning the CAS would race with a
 * stealer). */

static bool evc_heavy_fence(void) {
#if defined(__linux__) && defined(SYS_membarrier)
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return true;
  /* Registration missing (a kernel that does not carry it into a fork child): register
   * (idempotent) and try again. */
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 &&
         syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
  return false;
#endif
}

static pthread_once_t evc_asym_once = PTHREAD_ONCE_INIT;
static bool evc_asym_ok; /* membarrier registered; written once, under the once */

static void evc_asym_init(void) { evc_asym_ok = evc_heavy_fence(); /* registers on the way */ }

bool sp__event_pool_configure(sp_device *dev, bool asymmetric, unsigned capacity) {
  sp__event_pool *p = dev->events;
  sp_assert(atomic_load_explicit(&p->next_index, memory_order_relaxed) == 0);
  sp_assert(capacity >= 1 && capacity <= p->cap);
  p->cap = capacity;
  p->asym = asymmetric && evc_asym_ok;
  return p->asym == asymmetric;
}

uint32_t sp__event_slot_generation(sp_device *dev, uint32_t index) {
  sp__event_slot *slot = event_slot_at(dev->events, index);
  return slot ? SP__EVS_GEN(atomic_load_explicit(&slot->state, memory_order_acquire)) : 0;
}

sp_status sp__event_pool_create(sp_device *dev) {
  sp__event_pool *p = sp__calloc(1, sizeof(*p));
  if (!p) return sp__fail(SP_ERR_HOST_MEMORY, "sp_device_open: no host memory for the event pool");
  if (sp__mutex_init(&p->grow_mu, SP__RANK_EVENT_GROW)) {
    sp__free(p);
    return sp__fail(SP_ERR_HOST_MEMORY, "sp_device_open: cannot initialize the event pool lock");
  }
  for (unsigned c = 0; c < SP__EV_CHUNKS_MAX; c++) atomic_init(&p->chunks[c], NULL);
  atomic_init(&p->next_index, 0);
  for (unsigned k = 0; k < SP__EV_CLASSES; k++) sp__idstack_init(&p->free[k]);
  p->gen_seed = dev->id;
  pthread_once(&evc_asym_once, evc_asym_init);
  p->asym = evc_asym_ok;
  p->cap = (unsigned)SP__EV_CHUNK * SP__EV_CHUNKS_MAX;
  dev->events = p;
  return SP_OK;
}

void sp__event_pool_destroy(sp_device *dev) {
  sp__event_pool *p = dev->events;
  if (!p) return;
  for (unsigned c = 0; c < SP__EV_CHUNKS_MAX; c++) {
    sp__event_slot *chunk = atomic_load_explicit(&p->chunks[c], memory_order_acquire);
    if (!chunk) continue;
    for (unsigned k = 0; k < SP__EV_CHUNK; k++)
      if (chunk[k].bev) dev->be->event_destroy(chunk[k].bev);
    sp__free(chunk);
  }
  sp__mutex_destroy(&p->grow_mu);
  sp__free(p);
  dev->events = NULL;
}

/* Publishes chunk c if it is not there yet. */
static sp_status event_chunk_ensure(sp__event_pool *p, uint32_t c) {
  if (atomic_load_explicit(&p->chunks[c], memory_order_acquire)) return SP_OK;
  sp_status st = SP_OK;
  sp__mutex_lock(&p->grow_mu);
  if (!atomic_load_explicit(&p->chunks[c], memory_order_relaxed)) {
    sp__event_slot *chunk = sp__calloc(SP__EV_CHUNK, sizeof(*chunk));
    if (chunk) {
      for (uint32_t k = 0; k < SP__EV_CHUNK; k++) {
        uint32_t gen = event_gen0(p->gen_seed, c * SP__EV_CHUNK + k);
        chunk[k].gen0 = gen;
        atomic_init(&chunk[k].state, (uint64_t)gen << 32);
        atomic_init(&chunk[k].link, 0);
        atomic_init(&chunk[k].stream, NULL);
      }
      atomic_store_explicit(&p->chunks[c], chunk, memory_order_release);
    } else {
      st = sp__fail(SP_ERR_HOST_MEMORY, "sp_event_acquire: no host memory for more events");
    }
  }
  sp__mutex_unlock(&p->grow_mu);
  return st;
}

/* Up to `want` never-used consecutive slot indices [*first, *first + *count) of one chunk, that
 * chunk published, their flags set. Runs keep one thread's fresh slots off other threads' cache
 * lines. */
static sp_status event_slots_new(sp__event_pool *p, unsigned want, unsigned flags, uint32_t *first,
                                 unsigned *count) {
  const unsigned cap = p->cap;
  unsigned i = atomic_load_explicit(&p->next_index, memory_order_relaxed), n = 0;
  do {
    if (i >= cap) return SP_ERR_POOL_EXHAUSTED; /* every slot made: the caller steals */
    n = want;
    if (n > cap - i) n = cap - i;
    if (n > SP__EV_CHUNK - i % SP__EV_CHUNK) n = SP__EV_CHUNK - i % SP__EV_CHUNK;
  } while (!atomic_compare_exchange_weak_explicit(&p->next_index, &i, i + n, memory_order_relaxed,
                                                  memory_order_relaxed));
  sp_status st = event_chunk_ensure(p, i / SP__EV_CHUNK);
  if (st != SP_OK) return st; /* the indices are lost; only after a host OOM */
  for (unsigned k = 0; k < n; k++) event_slot_at(p, i + k)->flags = flags;
  *first = i;
  *count = n;
  return SP_OK;
}

/* ---- the per-thread cache ---- */

#if defined(__GNUC__)
#define SP__EVC_TLS __attribute__((tls_model("initial-exec")))
#define SP__EVC_NOINLINE __attribute__((noinline))
#else
#define SP__EVC_TLS
#define SP__EVC_NOINLINE
#endif

typedef struct sp__evc_entry {
  uint64_t key;             /* device id << 1 | flag set; 0: unused                   */
  unsigned n;               /* cached pairs, [0, n); the top is [n - 1]               */
  uint64_t id[SP__EVC_MAX]; /* free slots of that device and flag set, each as the handle
                             * it is acquired as: generation << 32 | (index + 1)       */
} sp__evc_entry;

/* hazard comes first: written on every claim, it shares a cache line with this thread's own
 * entries and the rarely written tail of the block before, not with the first entry of a block
 * allocated after this one (another thread's cache). */
typedef struct sp__evc {
  _Atomic(const void *) hazard; /* the cached slot this thread is claiming, or NULL        */
  sp__evc_entry entry[SP__EVC_ENTRIES];
  unsigned victim;             /* round-robin: next entry to evict when all are live      */
  struct sp__evc *prev, *next; /* every thread's cache (registry lock): stealers scan them */
} sp__evc;

static _Thread_local sp__evc *sp__evc_tls SP__EVC_TLS; /* this thread's cache, or NULL   */
static pthread_key_t sp__evc_key;                      /* its destructor: evc_exit   */
static pthread_once_t sp__evc_once = PTHREAD_ONCE_INIT;
static int sp__evc_key_ok; /* written once, under the once   */
static sp__evc *evc_all;   /* registry lock: the list of every live thread's cache        */

static uint64_t evc_key_of(const sp_device *dev, unsigned cls) { return dev->id << 1 | cls; }

/* Caches free slot i of generation gen in e, which has room. */
static inline void evc_push(sp__evc_entry *e, uint32_t i, uint32_t gen) {
  sp_assert(e->n < SP__EVC_MAX);
  e->id[e->n++] = (uint64_t)gen << 32 | (uint64_t)(i + 1);
}

/* Claims cached slot i of generation gen: (gen, cached) -> (gen, free), exclusively the caller's.
 * Fails when a stealer took it first. */
static bool event_claim_cached(sp__event_slot *slot, uint32_t gen) {
  uint64_t want = (uint64_t)gen << 32 | SP__EVS_CACHED;
  return atomic_compare_exchange_strong_explicit(&slot->state, &want, (uint64_t)gen << 32,
                                                 memory_order_acquire, memory_order_relaxed);
}

/* Makes free slot (gen) of the caller's live: its stream reset first (release: a query of a stale
 * handle that reads this NULL fails its re-check, sp__event_query), then the state. */
static inline void event_go_live(sp__event_slot *slot, uint32_t gen) {
  atomic_store_explicit(&slot->stream, NULL, memory_order_release);
  atomic_store_explicit(&slot->state, (uint64_t)gen << 32 | SP__EVS_LIVE, memory_order_release);
}

/* What an owner's claim of one of its cached pairs got. */
typedef enum evc_won {
  EVC_LOST,   /* a stealer took the slot (the pair is stale): drop the pair               */
  EVC_MARKED, /* a stealer is taking it and may yet give it back (its membarrier failed)  */
  EVC_FREE,   /* (gen, free): the caller's alone                                          */
  EVC_LIVE,   /* (gen, live), its stream reset: acquired (the slot's backend event exists) */
} evc_won;

/* The owner's claim of pair (slot, gen) of its cache c (asymmetric when p->asym, else a CAS that
 * leaves the slot free). With acquiring (sp__event_acquire, which holds no lock) a slot whose
 * backend event exists goes live inside the claim, in the same plain store; without (flushes) it
 * gets (gen, free). Once the load has seen (gen, cached) unmarked the slot is the owner's: a mark
 * set after it is overwritten by the store, and the stealer, which waits for the hazard to clear,
 * then fails its CAS from the mark. A marked slot is the stealer's to settle: an acquire waits
 * until the mark is gone and claims the pair again (evc_wait_unmarked), so a slot the stealer had
 * to give back stays in this cache; a flush, which may hold the registry lock, drops it. */
static inline evc_won evc_claim_own(sp__evc *c, const sp__event_pool *p, sp__event_slot *slot,
                                    uint32_t gen, bool acquiring) {
  if (!p->asym) return event_claim_cached(slot, gen) ? EVC_FREE : EVC_LOST;
  const uint64_t want = (uint64_t)gen << 32 | SP__EVS_CACHED;
  atomic_store_explicit(&c->hazard, slot, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst); /* a full fence once a stealer's membarrier runs */
  uint64_t s = atomic_load_explicit(&slot->state, memory_order_acquire);
  evc_won won = s == (want | SP__EVS_STEAL) ? EVC_MARKED : EVC_LOST;
  if (SP__LIKELY(s == want)) {
    if (SP__LIKELY(acquiring && slot->bev)) {
      event_go_live(slot, gen);
      won = EVC_LIVE;
    } else {
      atomic_store_explicit(&slot->state, (uint64_t)gen << 32, memory_order_relaxed);
      won = EVC_FREE;
    }
  }
  atomic_store_explicit(&c->hazard, NULL, memory_order_release);
  return won;
}

/* Waits until the steal mark on cached slot (gen) is gone. */
static SP__EVC_NOINLINE void evc_wait_unmarked(sp__event_slot *slot, uint32_t gen) {
  const uint64_t marked = (uint64_t)gen << 32 | SP__EVS_CACHED | SP__EVS_STEAL;
  for (unsigned tries = 1; atomic_load_explicit(&slot->state, memory_order_relaxed) == marked;
       tries++)
    if (tries % 64 == 0) sched_yield();
}

/* A stealer's claim of cached slot (gen) of p: true if it is now the caller's. */
static bool event_steal_claim(const sp__event_pool *p, sp__event_slot *slot, uint32_t gen) {
  if (!p->asym) return event_claim_cached(slot, gen);
  uint64_t cached = (uint64_t)gen << 32 | SP__EVS_CACHED, marked = cached | SP__EVS_STEAL;
  uint64_t s = cached;
  if (!atomic_compare_exchange_strong_explicit(&slot->state, &s, marked, memory_order_acquire,
                                               memory_order_relaxed))
    return false;
  bool fenced = evc_heavy_fence();
  int fence_errno = fenced ? 0 : errno;
  sp__registry_lock();
  for (sp__evc *c = evc_all; c && fenced; c = c->next)
    for (unsigned tries = 1; atomic_load_explicit(&c->hazard, memory_order_acquire) == slot;
         tries++) { /* its owner is claiming it: a few instructions, unless it was preempted */
      if (tries % 64 == 0) sched_yield();
      if (tries % 4096 == 0) nanosleep(&(struct timespec){0, 50000}, NULL);
    }
  sp__registry_unlock();
  s = marked;
  if (!fenced) { /* cannot tell an owner in flight from none: give the slot back */
    (void)atomic_compare_exchange_strong_explicit(&slot->state, &s, cached, memory_order_relaxed,
                                                  memory_order_relaxed);
    static atomic_bool warned;
    if (!atomic_exchange_explicit(&warned, true, memory_order_relaxed))
      sp__log(SP_LOG_WARN,
              "sp_event_acquire: membarrier failed (%s); events cached by other "
              "threads cannot be taken while it does",
              strerror(fence_errno));
    return false;
  }
  return atomic_compare_exchange_strong_explicit(&slot->state, &s, (uint64_t)gen << 32,
                                                 memory_order_acquire, memory_order_relaxed);
}

/* Moves e's count oldest pairs (the bottom) to the shared stack of p; stolen ones are dropped.
 * c: the calling thread's cache, which holds e. */
static void evc_flush(sp__evc *c, sp__event_pool *p, sp__evc_entry *e, unsigned count) {
  sp_assert(count <= e->n && e->key);
  sp__idstack *free = &p->free[e->key & 1u];
  for (unsigned k = 0; k < count; k++) {
    uint32_t i = (uint32_t)e->id[k] - 1;
    sp__event_slot *slot = event_slot_at(p, i);
    /* acquiring false: the caller may hold the registry lock */
    if (evc_claim_own(c, p, slot, SP__EVS_GEN(e->id[k]), false) == EVC_FREE)
      sp__idstack_push(free, &slot->link, i);
  }
  memmove(e->id, e->id + count, (e->n - count) * sizeof(e->id[0]));
  e->n -= count;
}

/* Thread exit: each entry's indices go back to their device if it is still open. */
static void evc_exit(void *arg) {
  sp__evc *c = arg;
  sp__registry_lock();
  for (unsigned k = 0; k < SP__EVC_ENTRIES; k++) {
    sp__evc_entry *e = &c->entry[k];
    sp_device *dev = e->n ? sp__registry_find_locked(e->key >> 1) : NULL;
    if (dev) evc_flush(c, dev->events, e, e->n);
  }
  if (c->prev) c->prev->next = c->next;
  else evc_all = c->next;
  if (c->next) c->next->prev = c->prev;
  sp__registry_unlock();
  if (sp__evc_tls == c) sp__evc_tls = NULL;
  sp__free(c);
}

static void evc_key_create(void) { sp__evc_key_ok = !pthread_key_create(&sp__evc_key, evc_exit); }

/* This thread's cache, made on first use; NULL without host memory or a pthread key (the caller
 * then uses the shared stacks directly). */
static sp__evc *evc_get(void) {
  if (sp__evc_tls) return sp__evc_tls;
  pthread_once(&sp__evc_once, evc_key_create);
  if (!sp__evc_key_ok) return NULL;
  sp__evc *c = sp__calloc(1, sizeof(*c));
  if (!c) return NULL;
  if (pthread_setspecific(sp__evc_key, c)) {
    sp__free(c);
    return NULL;
  }
  atomic_init(&c->hazard, NULL);
  sp__registry_lock();
  c->next = evc_all;
  if (evc_all) evc_all->prev = c;
  evc_all = c;
  sp__registry_unlock();
  sp__evc_tls = c;
  return c;
}

/* This thread's entry for key, or NULL (the hot path: a TLS load and a short scan). */
static inline sp__evc_entry *evc_find(uint64_t key) {
  sp__evc *c = sp__evc_tls;
  if (SP__UNLIKELY(!c)) return NULL;
  for (unsigned k = 0; k < SP__EVC_ENTRIES; k++)
    if (c->entry[k].key == key) return &c->entry[k];
  return NULL;
}

/* All entries are taken: drops those of closed devices; if none was, evicts one round-robin,
 * giving its indices back to its device. Returns the freed entry. */
static sp__evc_entry *evc_reclaim(sp__evc *c) {
  sp__evc_entry *empty = NULL;
  sp__registry_lock();
  for (unsigned k = 0; k < SP__EVC_ENTRIES; k++) {
    if (sp__registry_find_locked(c->entry[k].key >> 1)) continue;
    c->entry[k].key = 0; /* a closed device's: its slots are gone */
    c->entry[k].n = 0;
    empty = &c->entry[k];
  }
  if (!empty) {
    empty = &c->entry[c->victim++ % SP__EVC_ENTRIES];
    evc_flush(c, sp__registry_find_locked(empty->key >> 1)->events, empty, empty->n);
  }
  sp__registry_unlock();
  return empty;
}

/* A new empty entry for key in this thread's cache, or NULL if the thread has no cache. */
static sp__evc_entry *evc_claim(uint64_t key) {
  sp__evc *c = evc_get();
  if (!c) return NULL;
  sp__evc_entry *e = NULL;
  for (unsigned k = 0; k < SP__EVC_ENTRIES && !e; k++)
    if (!c->entry[k].key) e = &c->entry[k];
  if (!e) e = evc_reclaim(c);
  sp_assert(e->n == 0 || e->key == 0);
  e->key = key;
  e->n = 0;
  return e;
}

/* Claims this thread's cached pair id (the handle it is acquired as) for an acquire, as
 * evc_claim_own with this thread's cache. */
static inline evc_won evc_claim_id(sp__event_pool *p, uint64_t id) {
  return evc_claim_own(sp__evc_tls, p, event_slot_at(p, (uint32_t)id - 1), SP__EVS_GEN(id), true);
}

/* The pool is exhausted but for slots in other threads' caches: claims one cached slot of flag
 * set cls, scanning from a rotating cursor (every created slot at most once). */
static uint32_t event_steal(sp__event_pool *p, unsigned cls) {
  unsigned created = atomic_load_explicit(&p->next_index, memory_order_relaxed);
  unsigned start = atomic_load_explicit(&p->steal_cursor, memory_order_relaxed);
  for (unsigned k = 0; k < created; k++) {
    uint32_t i = (start + k) % created;
    sp__event_slot *slot = event_slot_at(p, i);
    if (!slot) continue; /* its chunk is being published (or failed to be) */
    uint64_t s = atomic_load_explicit(&slot->state, memory_order_acquire); /* flags published */
    if ((s & (SP__EVS_CACHED | SP__EVS_LIVE)) != SP__EVS_CACHED) continue;
    if ((slot->flags & SP_EVENT_TIMING) != cls || !event_steal_claim(p, slot, SP__EVS_GEN(s)))
      continue;
    atomic_store_explicit(&p->steal_cursor, i + 1, memory_order_relaxed);
    return i;
  }
  return SP__IDSTACK_NONE;
}

/* An acquire's way to a slot when its cache has none: fills this thread's entry with up to a batch
 * from the shared stack, else makes never-used slots, else steals from other threads' caches. e:
 * the thread's entry for (dev, cls), or NULL. */
static SP__EVC_NOINLINE sp_status event_take_slow(sp_device *dev, unsigned flags, sp__evc_entry *e,
                                                  uint32_t *out) {
  sp__event_pool *p = dev->events;
  unsigned cls = flags & SP_EVENT_TIMING;
  if (!e) e = evc_claim(evc_key_of(dev, cls));
  uint32_t i = sp__idstack_pop(&p->free[cls], event_link, p);
  if (i != SP__IDSTACK_NONE) {
    /* Popped indices are free and uncached: this thread's alone. Cache up to a batch more. */
    while (e && e->n < SP__EVC_BATCH) {
      uint32_t j = sp__idstack_pop(&p->free[cls], event_link, p);
      if (j == SP__IDSTACK_NONE) break;
      sp__event_slot *slot = event_slot_at(p, j);
      uint32_t gen = SP__EVS_GEN(atomic_load_explicit(&slot->state, memory_order_relaxed));
      atomic_store_explicit(&slot->state, (uint64_t)gen << 32 | SP__EVS_CACHED,
                            memory_order_release);
      evc_push(e, j, gen);
    }
    *out = i;
    return SP_OK;
  }
  unsigned n = 0;
  sp_status st = event_slots_new(p, e ? SP__EVC_BATCH : 1u, flags, &i, &n);
  if (st == SP_OK) {
    sp_assert(n >= 1 && (e ? e->n + n - 1 <= SP__EVC_MAX : n == 1));
    for (unsigned k = n; e && k-- > 1;) { /* i itself is taken; the rest cached, lowest on top */
      sp__event_slot *slot = event_slot_at(p, i + k);
      atomic_store_explicit(&slot->state, (uint64_t)slot->gen0 << 32 | SP__EVS_CACHED,
                            memory_order_release);
      evc_push(e, i + k, slot->gen0);
    }
    *out = i;
    return SP_OK;
  }
  if (st != SP_ERR_POOL_EXHAUSTED) return st;
  i = event_steal(p, cls);
  if (i == SP__IDSTACK_NONE)
    return sp__fail(SP_ERR_POOL_EXHAUSTED,
                    "sp_event_acquire: all %u events of the pool are in use (%u retired at a "
                    "generation wrap)",
                    p->cap - atomic_load(&p->retired), atomic_load(&p->retired));
  *out = i;
  return SP_OK;
}

/* Gives free, uncached, unpinned slot i (flag set cls) back: to this thread's cache, else the
 * shared stack. */
static SP__EVC_NOINLINE void event_put(sp_device *dev, unsigned cls, uint32_t i) {
  sp__event_pool *p = dev->events;
  sp__event_slot *slot = event_slot_at(p, i);
  uint64_t s = atomic_load_explicit(&slot->state, memory_order_relaxed);
  sp_assert(!(s & (SP__EVS_LIVE | SP__EVS_CACHED | SP__EVS_STEAL | SP__EVS_PINS)));
  sp__evc_entry *e = evc_find(evc_key_of(dev, cls));
  if (!e) e = evc_claim(evc_key_of(dev, cls));
  if (!e) {
    sp__idstack_push(&p->free[cls], &slot->link, i);
    return;
  }
  if (e->n == SP__EVC_MAX) evc_flush(sp__evc_tls, p, e, SP__EVC_BATCH);
  atomic_store_explicit(&slot->state, s | SP__EVS_CACHED, memory_order_release);
  evc_push(e, i, SP__EVS_GEN(s));
}

/* A released slot's last user gives it back (event_put), unless its generation wrapped to its
 * first: then it is retired, so no handle of an earlier generation can ever match again. */
static void event_recycle(sp_device *dev, unsigned cls, uint32_t i) {
  sp__event_pool *p = dev->events;
  sp__event_slot *slot = event_slot_at(p, i);
  if (SP__EVS_GEN(atomic_load_explicit(&slot->state, memory_order_relaxed)) == slot->gen0) {
    atomic_fetch_add_explicit(&p->retired, 1, memory_order_relaxed);
    return;
  }
  event_put(dev, cls, i);
}

/* ---- acquire, pin, release ---- */

/* The acquire past its fast path, which popped nothing (won EVC_LOST, id 0) or a pair (id) its
 * claim did not make live (won: lost, marked or free): the rest of this thread's entry e (may be
 * NULL), else event_take_slow; then the slot goes live, its backend event made on the slot's
 * first acquire. */
static SP__EVC_NOINLINE sp_status event_acquire_slow(sp_device *dev, unsigned flags,
                                                     sp__evc_entry *e, evc_won won, uint64_t id,
                                                     sp_event *out) {
  sp__event_pool *p = dev->events;
  for (;;) {
    if (won == EVC_MARKED) {
      evc_wait_unmarked(event_slot_at(p, (uint32_t)id - 1), SP__EVS_GEN(id));
      won = evc_claim_id(p, id);
    } else if (won == EVC_LOST && e && e->n) {
      id = e->id[--e->n];
      won = evc_claim_id(p, id);
    } else {
      break;
    }
  }
  if (won == EVC_LIVE) {
    out->id = id;
    return SP_OK;
  }
  if (won == EVC_LOST) {
    uint32_t i = 0;
    sp_status st = event_take_slow(dev, flags, e, &i);
    if (st != SP_OK) return st;
    uint64_t s = atomic_load_explicit(&event_slot_at(p, i)->state, memory_order_relaxed);
    id = (s >> 32) << 32 | (uint64_t)(i + 1);
  }
  uint32_t i = (uint32_t)id - 1, gen = SP__EVS_GEN(id);
  sp__event_slot *slot = event_slot_at(p, i);
  sp_assert(slot && slot->flags == flags);
  sp_assert(atomic_load_explicit(&slot->state, memory_order_relaxed) == (uint64_t)gen << 32);
  if (!slot->bev) {
    sp_status st = dev->be->event_create(dev->bdev, flags, &slot->bev);
    if (st != SP_OK) {
      /* Back as the next generation, never live: another thread's cache may still hold a stale
       * pair of this one (the slot may have been stolen from it), which must not match. */
      slot->bev = NULL;
      atomic_store_explicit(&slot->state, (uint64_t)(uint32_t)(gen + 1) << 32,
                            memory_order_relaxed);
      event_recycle(dev, flags & SP_EVENT_TIMING, i);
      return st;
    }
  }
  event_go_live(slot, gen);
  out->id = id;
  return SP_OK;
}

/* Fast path: the top pair of this thread's cache, made live inside its claim. */
sp_status sp__event_acquire(sp_device *dev, unsigned flags, sp_event *out) {
  if (flags & ~(unsigned)SP_EVENT_TIMING)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_event_acquire: unknown flags 0x%x", flags);
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_event_acquire: out is NULL");
  sp__evc_entry *e = evc_find(evc_key_of(dev, flags));
  evc_won won = EVC_LOST;
  uint64_t id = 0;
  if (SP__LIKELY(e && e->n)) {
    id = e->id[--e->n];
    won = evc_claim_id(dev->events, id);
    if (SP__LIKELY(won == EVC_LIVE)) {
      out->id = id;
      return SP_OK;
    }
  }
  return event_acquire_slow(dev, flags, e, won, id, out);
}

static sp_status event_stale(const char *fn, sp_event ev) {
  return sp__fail(SP_ERR_INVALID_HANDLE,
                  "%s: event 0x%llx is not a live event of this device (released, stale, never "
                  "acquired or another device's)",
                  fn, (unsigned long long)ev.id);
}

/* The slot handle ev names, or NULL (id 0, or an index never made). */
static inline sp__event_slot *event_slot_of(sp_device *dev, sp_event ev) {
  uint32_t i1 = (uint32_t)ev.id;
  return i1 ? event_slot_at(dev->events, i1 - 1) : NULL;
}

/* The slot's state, pins masked off, while ev is its live handle. */
static inline uint64_t event_live_state(sp_event ev) { return (ev.id >> 32) << 32 | SP__EVS_LIVE; }

/* Pins the live slot of ev (checked and pinned in one CAS), or SP_ERR_INVALID_HANDLE. Every
 * SP_OK is paired with event_slot_unpin. */
static sp_status event_pin(sp_device *dev, sp_event ev, const char *fn, sp__event_slot **out) {
  sp__event_slot *slot = event_slot_of(dev, ev);
  if (SP__UNLIKELY(!slot)) return event_stale(fn, ev);
  uint64_t want = event_live_state(ev);
  uint64_t s = want; /* the common case, unpinned; a failed CAS loads the state */
  do {
    if (SP__UNLIKELY((s & ~SP__EVS_PINS) != want)) return event_stale(fn, ev);
    if (SP__UNLIKELY((s & SP__EVS_PINS) == SP__EVS_PINS))
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: 2^29 calls at once on event 0x%llx", fn,
                      (unsigned long long)ev.id);
  } while (!atomic_compare_exchange_weak_explicit(&slot->state, &s, s + SP__EVS_PIN,
                                                  memory_order_acquire, memory_order_relaxed));
  *out = slot;
  return SP_OK;
}

/* Drops a pin; the last pin of a slot released meanwhile recycles it. */
static void event_slot_unpin(sp_device *dev, sp__event_slot *slot, uint32_t i) {
  uint64_t old = atomic_fetch_sub_explicit(&slot->state, SP__EVS_PIN, memory_order_acq_rel);
  sp_assert(old & SP__EVS_PINS);
  if (SP__UNLIKELY((old & (SP__EVS_PINS | SP__EVS_LIVE)) == SP__EVS_PIN))
    event_recycle(dev, slot->flags & SP_EVENT_TIMING, i);
}

static void event_unpin_ev(sp_device *dev, sp__event_slot *slot, sp_event ev) {
  event_slot_unpin(dev, slot, (uint32_t)ev.id - 1);
}

void sp__event_unpin(sp_device *dev, sp_event ev) {
  event_unpin_ev(dev, event_slot_at(dev->events, (uint32_t)ev.id - 1), ev);
}

/* The release past its fast path: pinned, no room in this thread's cache, a wrap, or a stale
 * handle. cache: the fast path's answer to "room in e (this thread's entry) and no wrap". */
static SP__EVC_NOINLINE sp_status event_release_slow(sp_device *dev, sp_event ev,
                                                     sp__event_slot *slot, sp__evc_entry *e,
                                                     bool cache) {
  static const char fn[] = "sp_event_release";
  uint32_t i = (uint32_t)ev.id - 1, next_gen = (uint32_t)(ev.id >> 32) + 1;
  uint64_t want = event_live_state(ev), s = want, next;
  unsigned cls = slot->flags & SP_EVENT_TIMING;
  do {
    if ((s & ~SP__EVS_PINS) != want) return event_stale(fn, ev);
    next = (uint64_t)next_gen << 32 | (s & SP__EVS_PINS);
    if (cache && !(s & SP__EVS_PINS)) next |= SP__EVS_CACHED;
  } while (!atomic_compare_exchange_weak_explicit(&slot->state, &s, next, memory_order_acq_rel,
                                                  memory_order_relaxed));
  if (next & SP__EVS_CACHED) {
    evc_push(e, i, next_gen);
  } else if (!(next & SP__EVS_PINS)) {
    event_recycle(dev, cls, i);
  } /* else: pinned; the last unpin recycles it */
  return SP_OK;
}

/* Fast path: unpinned, room in this thread's cache, no wrap: cached in the same CAS. */
sp_status sp__event_release(sp_device *dev, sp_event ev) {
  sp__event_slot *slot = event_slot_of(dev, ev);
  if (SP__UNLIKELY(!slot)) return event_stale("sp_event_release", ev);
  uint32_t next_gen = (uint32_t)(ev.id >> 32) + 1;
  sp__evc_entry *e = evc_find(evc_key_of(dev, slot->flags & SP_EVENT_TIMING));
  uint64_t s = event_live_state(ev);
  bool cache = e && e->n < SP__EVC_MAX && next_gen != slot->gen0;
  if (SP__LIKELY(cache) && SP__LIKELY(atomic_compare_exchange_strong_explicit(
                               &slot->state, &s, (uint64_t)next_gen << 32 | SP__EVS_CACHED,
                               memory_order_acq_rel, memory_order_relaxed))) {
    evc_push(e, (uint32_t)ev.id - 1, next_gen);
    return SP_OK;
  }
  return event_release_slow(dev, ev, slot, e, cache);
}

sp_status sp__event_record(sp_device *dev, sp_event ev, sp_stream *s) {
  sp__event_slot *slot = NULL;
  sp__bstream *bs = NULL;
  if (s->dev != dev)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_event_record: stream %u is another device's",
                    s->index);
  sp_status st = sp__stream_backend(s, &bs);
  if (st == SP_OK) st = event_pin(dev, ev, "sp_event_record", &slot);
  if (st != SP_OK) return st;
  st = dev->be->event_record(slot->bev, bs);
  if (st == SP_OK) atomic_store_explicit(&slot->stream, s, memory_order_release);
  event_unpin_ev(dev, slot, ev);
  return st;
}

/* A query only reads, so it pins nothing: it checks the handle, queries the slot's backend event
 * (which lives until the device closes, so this is safe even if the slot was recycled
 * meanwhile) and keeps the answer only if the slot still holds the handle's (generation, live)
 * afterwards. Generations only grow and a wrap retires the slot, so an unchanged state means no
 * release came in between. Orders: whatever the read saw of a later incarnation was published by
 * a release after that incarnation's acquire (its stream reset, its record), which itself came
 * after this handle's release; the acquire fence carries that to the second load, which then
 * cannot see the old state. Two loads instead of a pin's two read-modify-writes. */
sp_status sp__event_query(sp_device *dev, sp_event ev) {
  static const char fn[] = "sp_event_query";
  sp__event_slot *slot = event_slot_of(dev, ev);
  if (SP__UNLIKELY(!slot)) return event_stale(fn, ev);
  uint64_t want = event_live_state(ev);
  if (SP__UNLIKELY((atomic_load_explicit(&slot->state, memory_order_acquire) & ~SP__EVS_PINS) !=
                   want))
    return event_stale(fn, ev);
  sp_status st = SP_OK;
  if (atomic_load_explicit(&slot->stream, memory_order_acquire))
    st = dev->be->event_query(slot->bev);
  atomic_thread_fence(memory_order_acquire); /* the reads above before the re-check */
  if (SP__UNLIKELY((atomic_load_explicit(&slot->state, memory_order_relaxed) & ~SP__EVS_PINS) !=
                   want))
    return event_stale(fn, ev); /* released meanwhile: the answer may be another's */
  return st;
}

sp_status sp__stream_wait_event(sp_stream *s, sp_event ev) {
  sp__event_slot *slot = NULL;
  sp__bstream *bs = NULL;
  sp_status st = sp__stream_backend(s, &bs);
  if (st == SP_OK) st = event_pin(s->dev, ev, "sp_stream_wait_event", &slot);
  if (st != SP_OK) return st;
  if (atomic_load_explicit(&slot->stream, memory_order_acquire))
    st = s->dev->be->stream_wait_event(bs, slot->bev);
  event_unpin_ev(s->dev, slot, ev);
  return st;
}

sp_status sp__event_backend(sp_device *dev, sp_event ev, const char *fn, sp__bevent **out) {
  sp__event_slot *slot = NULL;
  sp_status st = event_pin(dev, ev, fn, &slot);
  if (st != SP_OK) return st;
  *out = atomic_load_explicit(&slot->stream, memory_order_acquire) ? slot->bev : NULL;
  return SP_OK;
}

sp_status sp__event_force_generation(sp_device *dev, sp_event ev, uint32_t gen, sp_event *out) {
  sp__event_slot *slot = NULL;
  sp_status st = event_pin(dev, ev, "sp__event_force_generation", &slot);
  if (st != SP_OK) return st;
  uint64_t s = atomic_load_explicit(&slot->state, memory_order_relaxed);
  if ((s & SP__EVS_PINS) != SP__EVS_PIN) {
    event_unpin_ev(dev, slot, ev);
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp__event_force_generation: event is in use");
  }
  atomic_store_explicit(&slot->state, (uint64_t)gen << 32 | SP__EVS_LIVE, memory_order_release);
  out->id = (uint64_t)gen << 32 | (uint32_t)ev.id;
  return SP_OK;
}

/* ---- public ---- */

sp_status sp_event_acquire(sp_device *dev, unsigned flags, sp_event *out) {
  sp_status st = sp__device_enter(dev, "sp_event_acquire");
  return st != SP_OK ? st : sp__event_acquire(dev, flags, out);
}

sp_status sp_event_release(sp_device *dev, sp_event ev) {
  sp_status st = sp__device_enter(dev, "sp_event_release");
  return st != SP_OK ? st : sp__event_release(dev, ev);
}

sp_status sp_event_record(sp_event ev, sp_stream *s) {
  sp_status st = sp__stream_enter(s, "sp_event_record");
  return st != SP_OK ? st : sp__event_record(s->dev, ev, s);
}

sp_status sp_event_query(sp_device *dev, sp_event ev) {
  sp_status st = sp__device_enter(dev, "sp_event_query");
  return st != SP_OK ? st : sp__event_query(dev, ev);
}

sp_status sp_event_sync(sp_device *dev, sp_event ev) {
  sp__event_slot *slot = NULL;
  sp_status st = sp__device_enter(dev, "sp_event_sync");
  if (st == SP_OK) st = event_pin(dev, ev, "sp_event_sync", &slot);
  if (st != SP_OK) return st;
  if (atomic_load_explicit(&slot->stream, memory_order_acquire)) {
    int cancel = sp__cancel_off();
    st = dev->be->event_sync(slot->bev);
    sp__cancel_restore(cancel);
  }
  event_unpin_ev(dev, slot, ev);
  return st;
}

sp_status sp_stream_wait_event(sp_stream *s, sp_event ev) {
  sp_status st = sp__stream_enter(s, "sp_stream_wait_event");
  return st != SP_OK ? st : sp__stream_wait_event(s, ev);
}

/* Pins a recorded timing event of dev for sp_event_elapsed_ms. */
static sp_status event_timed(sp_device *dev, sp_event ev, const char *which, sp__event_slot **out) {
  static const char fn[] = "sp_event_elapsed_ms";
  sp__event_slot *slot = NULL;
  sp_status st = event_pin(dev, ev, fn, &slot);
  if (st != SP_OK) return st;
  if (!(slot->flags & SP_EVENT_TIMING))
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s event lacks SP_EVENT_TIMING", fn, which);
  else if (!atomic_load_explicit(&slot->stream, memory_order_acquire))
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s event was never recorded", fn, which);
  if (st != SP_OK) {
    event_unpin_ev(dev, slot, ev);
    return st;
  }
  *out = slot;
  return SP_OK;
}

static sp_status event_elapsed_pinned(sp_device *dev, sp__event_slot *a, sp__event_slot *b,
                                      float *ms) {
  if (!dev->be->event_elapsed_ms)
    return sp__fail(SP_ERR_UNSUPPORTED, "sp_event_elapsed_ms: backend %s has no event timing",
                    dev->be->name);
  sp_status st = dev->be->event_query(a->bev);
  if (st == SP_OK) st = dev->be->event_query(b->bev);
  if (st != SP_OK) return st;
  float v = 0.0f;
  st = dev->be->event_elapsed_ms(a->bev, b->bev, &v);
  if (st != SP_OK) return st;
  *ms = v;
  return SP_OK;
}

sp_status sp_event_elapsed_ms(sp_device *dev, sp_event start, sp_event end, float *ms) {
  static const char fn[] = "sp_event_elapsed_ms";
  sp__event_slot *a = NULL, *b = NULL;
  sp_status st = sp__device_enter(dev, fn);
  if (st != SP_OK) return st;
  if (!ms) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: ms is NULL", fn);
  st = event_timed(dev, start, "start", &a);
  if (st != SP_OK) return st;
  st = event_timed(dev, end, "end", &b);
  if (st == SP_OK) {
    st = event_elapsed_pinned(dev, a, b, ms);
    event_unpin_ev(dev, b, end);
  }
  event_unpin_ev(dev, a, start);
  return st;
}

sp_status sp_event_stream(sp_device *dev, sp_event ev, sp_stream **out) {
  sp__event_slot *slot = NULL;
  sp_status st = sp__device_enter(dev, "sp_event_stream");
  if (st != SP_OK) return st;
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_event_stream: out is NULL");
  st = event_pin(dev, ev, "sp_event_stream", &slot);
  if (st != SP_OK) return st;
  sp_stream *s = atomic_load_explicit(&slot->stream, memory_order_acquire);
  event_unpin_ev(dev, slot, ev);
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_event_stream: event was never recorded");
  *out = s;
  return SP_OK;
}
