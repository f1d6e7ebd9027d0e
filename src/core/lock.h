/* Every lock of the library, its rank, and the lock-order witness (internal).
 *
 * The one lock order. A thread takes locks only in increasing rank: while it holds a lock of rank
 * r it may block on a lock of rank > r only. The ranks below are global (infer, allocator, core
 * and backends in one list), so any two locks are ordered, whichever layers they belong to. The
 * exceptions are written in the table and checked like the rule:
 *   same=ASCENDING  several locks of the rank at once, each taken at a higher address than the one
 *                   before (the stream caches: an array, so address order is stream index order);
 *   same=UNDER_PREV several at once only while the lock of the rank just below is held (the
 *                   segment locks, several only under the segment list lock: one thread at a time);
 *   a trylock is never checked (it cannot wait, so it cannot close a cycle), but it is recorded:
 *   locks taken under it must rank above it and above everything held when it was taken.
 * `call` says what a holder may call out to: NONE (memory from the host allocator at most),
 * BACKEND (backend slots and everything below them). sp__lock_assert_call_ok() checks that column
 * at the host backend's entry points, so "which backend calls happen under which locks" is proven
 * by the CI runs, not only written.
 *
 * The witness (SP_DEBUG >= 1), after jemalloc's: each thread keeps a short stack of the locks it
 * holds, sorted by rank, consecutive locks of one same-rank group merged into one entry with a
 * count. Before blocking on a lock its rank is compared with the top entry's (loads only); after
 * taking it, it is pushed (two stores), so no store waits on the lock's atomic. A violation logs
 * a message naming both locks and aborts (a test may install a hook instead). Releases may come
 * in any order. At SP_DEBUG 0 every wrapper is the plain call.
 * Condition waits go through sp__cond_wait / sp__cond_timedwait, which check that the mutex could
 * be re-taken in order there (every other held lock ranks below it).
 *
 * A group's entry counts its members but remembers only the last taken, so after a member's
 * release a new member must still be above that last one (stricter than needed, never looser).
 * Atomic flags used as locks (the allocator's pending_busy, the log setters' flag) are recorded
 * with sp__lock_note_*. Lock-free structures (idstack, event slots, the batcher's inbox and futex
 * words, seqlocks) hold nothing and are not in the table.
 *
 * Adding a lock: give it a line below, at the place its nesting requires (lines are ranks, first
 * taken first), and take it through these wrappers.
 */
#ifndef SP_CORE_LOCK_H
#define SP_CORE_LOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/status.h"

/* X(rank id, name, same-rank rule, what a holder may call) in rank order, outermost first. */
#define SP__LOCK_RANKS(X)                                                                        \
  /* src/infer */                                                                                \
  X(BATCHER_START, "batcher.start_mu", ONE, NONE)         /* workers' start-up; create waits */  \
  X(BATCHER_COLLECT, "batcher.mu", ONE, NONE)             /* the collector role; futex waits */  \
  X(ENCODER_BATCHER, "sp_encoder_batcher.mu", ONE, NONE)  /* queue, flags; condition waits  */   \
  X(ENCODER_REQUEST, "enc_req.mu", ONE, NONE)             /* one text's answer; a leaf      */   \
  X(PLAN_CREATE, "io_entry.create_mu", ONE, BACKEND)      /* allocator + backend calls       */  \
  X(PLAN_RUN, "io_plan.mu", ONE, BACKEND)                 /* a whole run: submit, sync       */  \
  X(RESIDENT_RUN, "sp_resident.mu", ONE, BACKEND)         /* one resident forward            */  \
  X(DEVICE_CAPTURE, "sp_device.capture_mu", ONE, BACKEND) /* graph captures (ops.c)       */     \
  /* src/alloc, outer: the pending-list processor flag (events queried and released under it) */ \
  X(ALLOC_PENDING_BUSY, "sp__allocator.pending_busy", ONE, BACKEND)                              \
  /* src/alloc: page commits and decommits (commit.c); mem_commit/mem_decommit under it */       \
  X(ALLOC_COMMIT, "sp__allocator.commit_mu", ONE, BACKEND)                                       \
  /* src/core */                                                                                 \
  X(REGISTRY, "device registry_mu", ONE, NONE)     /* thread exits, caches, steals    */         \
  X(SLOT_WAIT, "sp__slot_pool.wait_mu", ONE, NONE) /*   ... may be taken under it     */         \
  X(STREAM_CREATE, "sp_device.stream_create_mu", ONE, BACKEND) /* be->stream_create only   */    \
  X(EVENT_GROW, "sp__event_pool.grow_mu", ONE, NONE)    /* chunk publishing                */    \
  X(INTEROP_PINNED, "interop sp__pinned_mu", ONE, NONE) /* pinned buffer records; a leaf   */    \
  /* src/alloc: spinlocks, no call out (no backend, no core event, no wait) */                   \
  X(ALLOC_CACHE, "sp__scache.mu", ASCENDING, NONE) /* stream caches, index order      */         \
  X(ALLOC_PENDING, "sp__allocator.pending_mu", ONE, NONE)                                        \
  X(ALLOC_SEGLIST, "sp__allocator.seglist_mu", ONE, NONE)                                        \
  X(ALLOC_SEGMENT, "sp__segment.mu", UNDER_PREV, NONE) /* several: under seglist_mu only  */     \
  X(ALLOC_MAP_SHARD, "sp__map_shard.mu", ONE, NONE)                                              \
  X(ALLOC_PEAK, "sp__allocator.peak_mu", ONE, NONE)       /* tries cache locks (stats.c)     */  \
  X(ALLOC_HISTORY, "sp__allocator.history_mu", ONE, NONE) /* history enable/disable; a leaf */   \
  /* src/backend/host */                                                                         \
  X(HOST_EVENT, "host sp__bevent.mu", ONE, BACKEND) /* queues a marker (host submit)   */        \
  X(HOST_STREAM, "host sp__bstream.mu", ONE, NONE)  /* the ring; cond waits            */        \
  X(HOST_EVENT_MARK, "host sp__bevent.seq writer", ONE, NONE) /* a mark's rewrite; a leaf */     \
  /* src/backend/cuda (CUDA, cuBLASLt calls under them, nothing of ours; not witnessed) */       \
  X(CUDA_PEER, "cuda cuda_peer_mu", ONE, NONE)                                                   \
  X(CUDA_LT, "cuda sp__bstream.lt_mu", ONE, NONE)                                                \
  X(CUDA_CHOICE, "cuda sp__bdevice.choice_mu", ONE, NONE) /* the timed choices; a leaf   */      \
  X(CUDA_VMM, "cuda vmm_mu", ONE, NONE) /* page-mapped segments' registry; a leaf */             \
  /* src/core/status.c: the log hook setters' flag (a hook may be set from a log callback) */    \
  X(LOG_SETTING, "log hook setting flag", ONE, NONE)

typedef enum sp__lock_rank {
  SP__RANK_NONE = 0,
#define SP__LOCK_RANK_ENUM(id, name, same, call) SP__RANK_##id,
  SP__LOCK_RANKS(SP__LOCK_RANK_ENUM)
#undef SP__LOCK_RANK_ENUM
      SP__RANK_COUNT
} sp__lock_rank;

_Static_assert(SP__RANK_COUNT <= 255, "ranks are stored in a byte");

/* The name of a rank (its table line). Any thread. */
const char *sp__lock_rank_name(unsigned rank);

/* ---- the witness ---- */

/* On at SP_DEBUG >= 1, except in code that defines SP_LOCK_NO_WITNESS before including this
 * header: the CUDA backend, which as a dlopen()ed module reaches the core only through the
 * services of backend/module.h (its two locks are leaves, ranked here but not witnessed). */
#if SP_DEBUG >= 1 && !defined(SP_LOCK_NO_WITNESS)
#define SP__WITNESS_ON 1
#else
#define SP__WITNESS_ON 0
#endif

/* Entries per thread (a same-rank group counts once; the deepest nesting in the library is 5).
 * The state is 136 bytes of initial-exec TLS, so the library stays dlopen-able (ctypes). */
enum { SP__WITNESS_DEPTH = 8 };

/* One held lock, or a group of same-rank locks. `meta` packs rank | order << 8 | group << 16 |
 * n << 32 so that recording an entry is two stores. */
typedef struct sp__witness_entry {
  const void *lock; /* the (last) lock taken                                         */
  uint64_t meta;    /* rank: the lock's; order: checked against (>= rank: trylocks);  */
                    /* group: same-rank group (n counts, `lock` is the last one); n   */
} sp__witness_entry;

typedef struct sp__witness {
  unsigned depth;                         /* entries in use */
  sp__witness_entry e[SP__WITNESS_DEPTH]; /* sorted by order, bottom first */
} sp__witness;
_Static_assert(sizeof(sp__witness) <= 136, "the witness stays small in static TLS");

#define SP__WITNESS_RANK(m) ((unsigned)((m)&0xffu))
#define SP__WITNESS_ORDER(m) ((unsigned)(((m) >> 8) & 0xffu))
#define SP__WITNESS_GROUP(m) ((unsigned)(((m) >> 16) & 0xffu))
#define SP__WITNESS_N(m) ((uint32_t)((m) >> 32))
#define SP__WITNESS_META(rank, order, group, n) \
  ((uint64_t)(rank) | (uint64_t)(order) << 8 | (uint64_t)(group) << 16 | (uint64_t)(n) << 32)

#if defined(__GNUC__)
#define SP__WITNESS_TLS __attribute__((tls_model("initial-exec")))
#else
#define SP__WITNESS_TLS
#endif
extern _Thread_local sp__witness sp__witness_tl SP__WITNESS_TLS;

/* Slow paths (lock.c): same-rank groups, violations, releases below the top, a full stack. */
void sp__witness_check_slow(const sp__witness *w, const void *lock, unsigned rank);
void sp__witness_acquired_slow(sp__witness *w, const void *lock, unsigned rank);
void sp__witness_release_slow(sp__witness *w, const void *lock, unsigned rank);

/* Test hook: called with the message instead of aborting on a violation (NULL: abort). The
 * violating acquisition is then recorded as a trylock would be. Set before the threads start. */
typedef void (*sp__witness_hook_fn)(const char *msg);
void sp__witness_set_hook(sp__witness_hook_fn fn);

/* The locks this thread holds (entries, not locks), for tests. Owner thread. */
unsigned sp__witness_depth(void);

/* Before blocking on `lock` of `rank`: checks the order against what the calling thread holds
 * (loads only, so nothing is stored ahead of the lock's atomic). Any thread (each acts on its own
 * record); `lock` identifies the lock (its address). */
static inline void sp__lock_note_acquire(const void *lock, unsigned rank) {
#if SP__WITNESS_ON
  const sp__witness *w = &sp__witness_tl;
  unsigned d = w->depth;
  if (SP__LIKELY(d == 0 || rank > SP__WITNESS_ORDER(w->e[d - 1].meta))) return;
  sp__witness_check_slow(w, lock, rank);
#else
  (void)lock;
  (void)rank;
#endif
}

/* After taking `lock` (blocking or by a successful try, which is not checked: it did not wait):
 * records it. */
static inline void sp__lock_note_acquired(const void *lock, unsigned rank) {
#if SP__WITNESS_ON
  sp__witness *w = &sp__witness_tl;
  unsigned d = w->depth;
  if (SP__LIKELY(d < SP__WITNESS_DEPTH && (d == 0 || rank > SP__WITNESS_ORDER(w->e[d - 1].meta)))) {
    w->e[d].lock = lock;
    w->e[d].meta = SP__WITNESS_META(rank, rank, 0, 1);
    w->depth = d + 1;
    return;
  }
  sp__witness_acquired_slow(w, lock, rank);
#else
  (void)lock;
  (void)rank;
#endif
}

/* Records that `lock` is released (any order). A lock this thread does not hold is a violation. */
static inline void sp__lock_note_release(const void *lock, unsigned rank) {
#if SP__WITNESS_ON
  sp__witness *w = &sp__witness_tl;
  unsigned d = w->depth;
  if (SP__LIKELY(d && w->e[d - 1].lock == lock && !SP__WITNESS_GROUP(w->e[d - 1].meta))) {
    w->depth = d - 1;
    return;
  }
  sp__witness_release_slow(w, lock, rank);
#else
  (void)lock;
  (void)rank;
#endif
}

/* Asserts that every lock the calling thread holds allows calls out to a backend (`call` column).
 * Called at the host backend's entry points. */
void sp__lock_assert_call_ok_slow(const char *what);
static inline void sp__lock_assert_call_ok(const char *what) {
#if SP__WITNESS_ON
  if (SP__UNLIKELY(sp__witness_tl.depth)) sp__lock_assert_call_ok_slow(what);
#else
  (void)what;
#endif
}

/* ---- mutexes ---- */

/* A pthread mutex with its rank. Externally synchronized init/destroy; lock/unlock any thread. */
typedef struct sp__mutex {
  pthread_mutex_t m;
  unsigned rank;
} sp__mutex;

#define SP__MUTEX_INITIALIZER(r) \
  { PTHREAD_MUTEX_INITIALIZER, SP__RANK_##r }

/* pthread_mutex_init with default attributes; returns its result (0 on success). */
static inline int sp__mutex_init(sp__mutex *mu, sp__lock_rank rank) {
  mu->rank = (unsigned)rank;
  return pthread_mutex_init(&mu->m, NULL);
}

static inline void sp__mutex_destroy(sp__mutex *mu) { pthread_mutex_destroy(&mu->m); }

static inline void sp__mutex_lock(sp__mutex *mu) {
  sp__lock_note_acquire(mu, mu->rank);
  pthread_mutex_lock(&mu->m);
  sp__lock_note_acquired(mu, mu->rank);
}

static inline bool sp__mutex_trylock(sp__mutex *mu) {
  if (pthread_mutex_trylock(&mu->m) != 0) return false;
  sp__lock_note_acquired(mu, mu->rank);
  return true;
}

static inline void sp__mutex_unlock(sp__mutex *mu) {
  sp__lock_note_release(mu, mu->rank);
  pthread_mutex_unlock(&mu->m);
}

/* A wait releases mu and takes it again: checked as a release and a new acquisition. */
static inline void sp__cond_wait_check(sp__mutex *mu) {
  sp__lock_note_release(mu, mu->rank);
  sp__lock_note_acquire(mu, mu->rank);
  sp__lock_note_acquired(mu, mu->rank);
}

static inline int sp__cond_wait(pthread_cond_t *cv, sp__mutex *mu) {
  sp__cond_wait_check(mu);
  return pthread_cond_wait(cv, &mu->m);
}

static inline int sp__cond_timedwait(pthread_cond_t *cv, sp__mutex *mu,
                                     const struct timespec *deadline) {
  sp__cond_wait_check(mu);
  return pthread_cond_timedwait(cv, &mu->m, deadline);
}

#endif /* SP_CORE_LOCK_H */
