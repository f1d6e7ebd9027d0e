/* The caching allocator's internal structure, shared by the files of src/alloc (internal).
 *
 * One sp__allocator per device: a stream cache per pool stream, the pending list, the segment
 * list and the pointer map. Locks, in the order of their ranks in src/core/lock.h (the one table;
 * checked at SP_DEBUG >= 1), at most one of each kind except where said:
 *   stream cache locks (sp__scache.mu): several only in increasing stream index (= address)
 *   pending list lock (pending_mu)
 *   segment list lock (seglist_mu)
 *   a segment's lock (sp__segment.mu): several only under seglist_mu (validator, snapshot)
 *   a pointer-map shard lock
 *   the peak lock (peak_mu), under which stream cache locks are only tried (stats.c)
 *   the history lock (history_mu): a leaf taken only by sp_memory_history_enable/disable
 *       and destroy, with no other lock held; recording an event takes no lock (history.c)
 * No backend call (mem_alloc/free, event record/query/wait, stream query/sync) and no core event
 * call is made while any of them is held. pending_busy is a try-flag: whoever sets it processes
 * the pending list, querying and releasing events with no spinlock held; opportunistic callers
 * skip when it is set, sp_empty_cache and the out-of-memory path wait for it, so it is a lock of
 * its own in the table, ranked below the core's locks (event release may take the registry).
 */
#ifndef SP_ALLOC_INTERNAL_H
#define SP_ALLOC_INTERNAL_H

#include <stdatomic.h>

#include "alloc/alloc.h"
#include "alloc/block.h"
#include "alloc/history.h"
#include "alloc/ptrmap.h"

enum { SP__SPARE_MAX = 64 }; /* recycled block structs kept per stream cache */
/* Thread tokens (users.c): table slots for live threads, and the quiet time after which another
 * thread may take cached blocks from a stream whose allocating thread still runs. */
enum { SP__USER_SLOT_BITS = 10, SP__USER_SLOTS = 1 << SP__USER_SLOT_BITS };
#define SP__QUIET_NS ((uint64_t)2000000)
enum { SP__FRONT_MAX = 16 };                   /* blocks held whole in a stream's front cache */
#define SP__FRONT_BLOCK_MAX SP__LARGE_MAX      /* larger blocks (own segments) skip the front */
#define SP__FRONT_BYTES_MAX ((size_t)16 << 20) /* bytes held in one stream's front at most    */

/* The segment index (range.c): linked segments sorted by base, read without a lock. */
typedef struct sp__seg_entry {
  _Atomic uintptr_t base;
  _Atomic size_t bytes;
  _Atomic(sp__segment *) seg;
} sp__seg_entry;
typedef struct sp__seg_array {
  struct sp__seg_array *older; /* the array this one replaced (freed at destroy)         */
  sp__seg_entry e[];
} sp__seg_array;
typedef struct sp__seg_index {
  _Alignas(64) _Atomic unsigned seq; /* odd while a writer (seglist_mu) changes entries  */
  _Atomic(sp__seg_array *) array;    /* NULL until the first segment                     */
  _Atomic size_t count;              /* entries in use                                   */
  size_t cap;                        /* entries allocated; seglist_mu                    */
  size_t promised;                   /* reserved for segments being created; seglist_mu */
} sp__seg_index;

/* Per-stream state; one per pool stream, each on its own cache lines. */
typedef struct sp__scache {
  _Alignas(64) sp__spin mu;  /* SP__RANK_ALLOC_CACHE                                     */
  sp__bins bins[SP__POOLS];  /* CACHED blocks of this stream; mu                          */
  sp__block *spare;          /* recycled block structs (chained by link_next); mu        */
  unsigned n_spare;          /* mu                                                        */
  _Atomic uint64_t free_seq; /* blocks cached here so far (stamps); written under mu      */
  _Atomic size_t cached_bytes[SP__POOLS]; /* bins[p].bytes, for lock-free peeks; under mu    */
  /* Counters (mu): allocations on this stream, frees of blocks allocated on it. */
  uint64_t allocs, frees, cache_hits, deferred_frees, cross_stream_reuses;
  _Atomic uint64_t ops;      /* operations (debug validation, quiet probes); written under mu */
  _Atomic uint64_t user;     /* token of the thread that last allocated here (0: none); mu */
  _Atomic size_t live_bytes; /* LIVE bytes allocated on this stream; written under mu     */
  _Atomic size_t peak_grant; /* live_bytes may grow to this without the peak lock; peak_mu */
  /* Front cache (front.c): recently freed blocks kept whole (LIVE, front set, still mapped), the
   * oldest first; a request of exactly one's size takes it without split, merge or map update. */
  unsigned n_front;                 /* mu                                              */
  size_t front_size[SP__FRONT_MAX]; /* bytes of front[i]; mu                           */
  sp__block *front[SP__FRONT_MAX];  /* mu                                              */
  _Atomic size_t front_bytes;       /* sum of front_size; written under mu             */
  /* Written by other streams' slow paths only (their own cache line): ops when a thread that
   * wanted this stream's cached memory last looked, and when (sp__now_ns). */
  _Alignas(64) _Atomic uint64_t probe_ops;
  _Atomic uint64_t probe_ns;
} sp__scache;

struct sp__allocator {
  sp_device *dev;                 /* immutable                                             */
  unsigned n_streams;             /* dev->cfg.streams; immutable                           */
  size_t limit;                   /* dev->cfg.memory_limit (0: none); immutable            */
  size_t device_total;            /* backend memory_info total at create (0: unknown)      */
  bool inflight_reuse;            /* !(alloc_flags & SP_ALLOC_NO_INFLIGHT_REUSE); immutable */
  bool test_no_pending;           /* test-only negative control: frees skip the pending step */
  sp__scache *caches;             /* [n_streams]; immutable pointer                        */
  _Atomic(sp__history *) history; /* event ring, NULL: off (history.c); read on every op   */
  sp__mutex history_mu;           /* SP__RANK_ALLOC_HISTORY (a leaf)                       */
  sp__history *history_rings;     /* every ring made, kept until destroy; history_mu       */

  _Alignas(64) sp__spin pending_mu; /* SP__RANK_ALLOC_PENDING                             */
  sp__block *pending;               /* PENDING blocks (link_prev/next); pending_mu            */
  size_t pending_count;             /* pending_mu                                             */
  _Atomic size_t pending_hint;      /* pending_count, readable without the lock               */
  atomic_bool pending_busy;         /* try-flag: a thread is processing the pending list (its */
                                    /* rank: SP__RANK_ALLOC_PENDING_BUSY)                     */

  _Alignas(64) sp__spin seglist_mu; /* SP__RANK_ALLOC_SEGLIST                             */
  sp__segment *segments;            /* every segment; seglist_mu                              */
  size_t n_segments;                /* seglist_mu                                             */
  size_t reserved;                  /* bytes of linked segments; seglist_mu                   */
  size_t reserving;                 /* bytes of segments being allocated, not yet linked, and */
                                    /* of pages being committed (commit.c)                    */
  size_t decommitting;              /* bytes of pages picked for decommit, still in reserved */
  size_t reserved_peak;             /* seglist_mu                                             */
  uint64_t backend_allocs, backend_frees; /* seglist_mu                                    */
  _Atomic uint64_t oom_retries, ooms;

  sp__mutex commit_mu; /* SP__RANK_ALLOC_COMMIT: page (de)commits and segment releases (commit.c) */
  bool can_decommit;   /* the backend has mem_decommit / mem_commit; immutable                 */

  _Alignas(64) sp__spin peak_mu; /* SP__RANK_ALLOC_PEAK                                   */
  size_t allocated_peak;         /* peak_mu                                                */

  sp__ptrmap map;         /* LIVE blocks                                            */
  sp__seg_index index;    /* linked segments by base (range.c); written under seglist_mu */
  sp__segment *seg_spare; /* released segment structs for reuse (next); seglist_mu  */
};

/* Records an event when the history is on: off, one relaxed load and a branch. The arguments
 * are evaluated only when on (see sp__history_add). SP_HISTORY_COMPILED_OUT removes it (the
 * baseline of bench/alloc_history). */
#ifndef SP_HISTORY_COMPILED_OUT
#define SP__HISTORY(a, ...)                                                         \
  do {                                                                              \
    sp__history *hist_ = atomic_load_explicit(&(a)->history, memory_order_relaxed); \
    if (SP__UNLIKELY(hist_ != NULL)) sp__history_add(hist_, __VA_ARGS__);           \
  } while (0)
#else
#define SP__HISTORY(a, ...) ((void)0)
#endif

/* ---- thread tokens (users.c) ---- */
/* The calling thread's token (registered on first use; never 0). */
uint64_t sp__user_self(void);
/* Whether the thread of `token` still runs (false also when that is unknown). */
bool sp__user_alive(uint64_t token);
/* Whether stream t's cached memory (and spare peak grant) may go to another stream without memory
 * pressure: its allocating thread is `me`, exited or unknown, or made no cache operation for
 * SP__QUIET_NS as seen by two probes that far apart (this call is a probe). No lock needed. */
bool sp__user_stealable(sp__allocator *a, unsigned t, uint64_t me);

/* ---- stream caches (cache.c) ---- */
/* A block struct from s's spares or host memory; NULL without host memory. s->mu held. */
sp__block *sp__cache_block_new(sp__scache *s);
/* Returns a struct to s's spares (or host memory). s->mu held. */
void sp__cache_block_drop(sp__scache *s, sp__block *blk);
/* Takes blk (CACHED in owner, whose lock is held) for a new LIVE block of `bytes` on stream
 * `stream` (whose cache lock is held too, and may be owner): splits off the rest, maps it, counts
 * the allocation on `stream`. rehome: the rest is cached on `stream` too (blk was complete on its
 * owner, so all of it is free for `stream`), else it stays with owner. */
void sp__cache_take(sp__allocator *a, sp__scache *owner, sp__block *blk, size_t bytes,
                    unsigned stream, bool rehome);
/* Caches blk (not LIVE, not in the map) on stream s (lock held), merging CACHED neighbours of s.
 * stamp: the free_seq value s's work with it was submitted before; 0: take a new one now. */
void sp__cache_put(sp__allocator *a, unsigned s, sp__block *blk, uint64_t stamp);
/* A new stamp of cache c (lock held): free_seq + 1. */
uint64_t sp__cache_stamp(sp__scache *c);
/* Locks the caches of streams i and j (i may equal j) in index order, and the reverse. */
void sp__cache_lock2(sp__allocator *a, unsigned i, unsigned j);
void sp__cache_unlock2(sp__allocator *a, unsigned i, unsigned j);

/* ---- front caches (front.c) ---- */
/* A front-cached block of exactly `bytes` of stream s (lock held) made LIVE for s again and
 * counted as an allocation and cache hit; NULL if none. */
sp__block *sp__front_pop(sp__allocator *a, sp__scache *c, size_t bytes);
/* Keeps blk (LIVE, claimed by an sp_free, no other stream to wait for, already uncounted from
 * live_bytes) whole in its stream's front (lock held), evicting the oldest to the bins when full;
 * false (nothing done) when blk is too large for the front. */
bool sp__front_push(sp__allocator *a, sp__scache *c, sp__block *blk);
/* Moves every block of c's front (lock held) to c's bins (merging) and out of the pointer map. */
void sp__front_flush_locked(sp__allocator *a, sp__scache *c);
/* The same for every stream, each under its own lock in turn. */
void sp__front_flush_all(sp__allocator *a);

/* ---- pending frees (pending.c) ---- */
/* Moves pending blocks whose events all completed to their caches. wait: take the busy flag even
 * if it means waiting, else skip when another thread is at it. */
void sp__pending_poll(sp__allocator *a, bool wait);

/* ---- segments (segment.c) ---- */
/* A new segment for a rounded request of `bytes` on stream s (mem_alloc with no lock held); the
 * request is carved from it and returned LIVE in *out, the rest cached on s.
 * SP_ERR_LIMIT / SP_ERR_OUT_OF_MEMORY / SP_ERR_HOST_MEMORY, with nothing changed. */
sp_status sp__segment_create(sp__allocator *a, unsigned s, size_t bytes, sp__block **out);
/* Returns to the backend every segment whose blocks are all CACHED with stamps <= max_stamp[their
 * stream] and on no stream with keep[stream] set (keep may be NULL), of pool `pool` (SP__POOLS:
 * any); the bytes released. Takes every stream cache lock. */
size_t sp__segment_release_unused(sp__allocator *a, const uint64_t *max_stamp, const bool *keep,
                                  unsigned pool);

/* ---- pages (commit.c) ---- */
/* Decommits the whole pages inside CACHED blocks of pool `pool` (SP__POOLS: any) whose stamps
 * are <= max_stamp[their stream] and whose stream has no keep[stream] set (keep may be NULL);
 * the bytes decommitted (reserved shrinks by as much). Best effort: a backend failure leaves
 * those pages committed and clears the error. No lock held by the caller. */
size_t sp__pages_decommit(sp__allocator *a, const uint64_t *max_stamp, const bool *keep,
                          unsigned pool);
/* Commits the decommitted pages under blk (LIVE, taken by the caller, commit set), under the
 * memory limit; clears blk->commit. SP_ERR_LIMIT / SP_ERR_OUT_OF_MEMORY (blk not usable; pages
 * committed before the failure stay committed and counted). No lock held by the caller. */
sp_status sp__pages_commit(sp__allocator *a, sp__block *blk);
/* Whether [off, off + bytes) of seg (mu held) overlaps a decommitted page. */
bool sp__pages_gone_in(const sp__segment *seg, size_t off, size_t bytes);
/* The bitmap of a new segment of `bytes` (NULL when it has one page or the backend cannot
 * decommit); false without host memory. */
bool sp__pages_bitmap_new(sp__allocator *a, size_t bytes, uint64_t **out);

/* ---- segment index (range.c); the first three with seglist_mu held ---- */
/* Room for one more entry, promised to the caller's segment (host memory under the lock); false
 * without host memory. insert uses a promise, unreserve gives one back. */
bool sp__seg_index_reserve(sp__allocator *a);
void sp__seg_index_unreserve(sp__allocator *a);
void sp__seg_index_insert(sp__allocator *a, sp__segment *seg);
void sp__seg_index_remove(sp__allocator *a, sp__segment *seg);
void sp__seg_index_destroy(sp__allocator *a);

/* ---- stats (stats.c) ---- */
/* After s's live_bytes grew (s->mu held): raises the peak when the total may pass it. */
/* Stream s's live bytes passed its grant (s's cache lock held; `held`, if not NULL, is another
 * cache whose lock the caller also holds, e.g. the owner in a cross-stream take). */
void sp__stats_note_growth(sp__allocator *a, unsigned s, sp__scache *held);
/* The public counters; the caller holds every stream cache lock and seglist_mu. */
void sp__stats_collect_locked(sp__allocator *a, sp_memory_stats *m);

/* ---- validation (validate.c) ---- */
/* At debug level 2, every 64th operation of stream s runs the whole validator (no lock held). */
void sp__alloc_debug_check(sp__allocator *a, unsigned s);
/* Locks / unlocks everything in rank order (validator, snapshot, stats). */
void sp__alloc_lock_all(sp__allocator *a);
void sp__alloc_unlock_all(sp__allocator *a);

/* Counts a new LIVE block of `bytes` on stream s (its cache lock held, and `held`'s if not NULL):
 * allocs, live_bytes and the peak. live_bytes has one writer at a time (the lock), so plain
 * relaxed stores suffice. */
static inline void sp__cache_count_alloc(sp__allocator *a, unsigned s, size_t bytes,
                                         sp__scache *held) {
  sp__scache *c = &a->caches[s];
  c->allocs++;
  size_t live = atomic_load_explicit(&c->live_bytes, memory_order_relaxed) + bytes;
  atomic_store_explicit(&c->live_bytes, live, memory_order_relaxed);
  if (live > atomic_load_explicit(&c->peak_grant, memory_order_relaxed))
    sp__stats_note_growth(a, s, held);
}

/* The reverse for a LIVE block of stream s leaving the user (lock held): frees and live_bytes. */
static inline void sp__cache_count_free(sp__scache *c, size_t bytes) {
  c->frees++;
  atomic_store_explicit(&c->ops, atomic_load_explicit(&c->ops, memory_order_relaxed) + 1,
                        memory_order_relaxed);
  atomic_store_explicit(&c->live_bytes,
                        atomic_load_explicit(&c->live_bytes, memory_order_relaxed) - bytes,
                        memory_order_relaxed);
}

#endif /* SP_ALLOC_INTERNAL_H */
