/* The public allocator: sp_alloc, sp_free, sp_record_stream, sp_empty_cache, and the device seam.
 *
 * Owns the policy of where a request is served from: (1) this stream's cache (its front of whole
 * blocks of exactly the size, then its bins, then its front flushed into the bins); (2) a block
 * cached on another stream that is complete (idle, or whose blocks were cached before it was seen
 * idle); (3) unless SP_ALLOC_NO_INFLIGHT_REUSE, a block cached on a busy stream, the allocating
 * stream waiting on the device for an event recorded on the owner; (2) and (3) only from streams
 * no other running thread works on (sp__user_stealable); (3b) the complete free pieces of those
 * idle streams that have a free neighbour moved to this one, merging, and (1) again; (4) unused
 * segments given back when the cache is large (alloc_trim_before_grow), then a new segment; (5) on
 * backend OOM or the memory limit: sync every stream, complete pending frees, release unused
 * segments, retry once; (6) SP_ERR_OUT_OF_MEMORY / SP_ERR_LIMIT with the numbers. Invariants: see
 * block.h (one state per block) and alloc_internal.h (lock ranks). Locking: a front hit takes only
 * the stream's cache lock; a free without other streams takes one map shard lock and the stream's
 * cache lock (plus the segment lock when the block goes to the bins); none is contended when each
 * thread has its own stream. cache_hits counts requests served from the allocating stream's own
 * cache. Events are recorded and waited on, and memory is allocated, with no lock held.
 */
#include "alloc/alloc_internal.h"

#include <string.h>

#include "core/status.h"

/* ---- create / destroy ---- */

sp_status sp__alloc_create(sp_device *dev, sp__allocator **out) {
  sp__allocator *a = sp__aligned_calloc(1, sizeof(*a));
  if (!a) return sp__fail(SP_ERR_HOST_MEMORY, "sp_device_open: no host memory for the allocator");
  a->caches = sp__aligned_calloc(dev->cfg.streams, sizeof(*a->caches));
  if (!a->caches) {
    sp__aligned_free(a);
    return sp__fail(SP_ERR_HOST_MEMORY, "sp_device_open: no host memory for the stream caches");
  }
  a->dev = dev;
  a->n_streams = dev->cfg.streams;
  a->limit = dev->cfg.memory_limit;
  a->inflight_reuse = !(dev->cfg.alloc_flags & SP_ALLOC_NO_INFLIGHT_REUSE);
  a->can_decommit = dev->be->mem_decommit != NULL;
  size_t free_bytes = 0, total = 0;
  if (dev->be->memory_info(dev->bdev, &free_bytes, &total) == SP_OK) a->device_total = total;
  for (unsigned i = 0; i < a->n_streams; i++) sp__spin_init(&a->caches[i].mu, SP__RANK_ALLOC_CACHE);
  sp__spin_init(&a->pending_mu, SP__RANK_ALLOC_PENDING);
  sp__spin_init(&a->seglist_mu, SP__RANK_ALLOC_SEGLIST);
  sp__spin_init(&a->peak_mu, SP__RANK_ALLOC_PEAK);
  sp__ptrmap_init(&a->map);
  sp__mutex_init(&a->commit_mu, SP__RANK_ALLOC_COMMIT);
  sp_status st = sp__history_init(a);
  if (st != SP_OK) {
    sp__mutex_destroy(&a->commit_mu);
    sp__aligned_free(a->caches);
    sp__aligned_free(a);
    return st;
  }
  sp__error_clear();
  *out = a;
  return SP_OK;
}

void sp__alloc_destroy(sp__allocator *a) {
  if (!a) return;
  for (sp__block *b = a->pending; b; b = b->link_next) {
    for (unsigned i = 0; i < b->n_events; i++) (void)sp__event_release(a->dev, b->events[i]);
    sp__free(b->events);
  }
  for (sp__segment *seg = a->segments, *next; seg; seg = next) {
    next = seg->next;
    a->dev->be->mem_free(a->dev->bdev, seg->base);
    for (sp__block *b = seg->first, *bn; b; b = bn) {
      bn = b->next;
      sp__aligned_free(b);
    }
    sp__free(seg->gone);
    sp__aligned_free(seg);
  }
  for (sp__segment *seg = a->seg_spare, *next; seg; seg = next) {
    next = seg->next;
    sp__aligned_free(seg);
  }
  sp__seg_index_destroy(a);
  for (unsigned i = 0; i < a->n_streams; i++) {
    for (sp__block *b = a->caches[i].spare, *bn; b; b = bn) {
      bn = b->link_next;
      sp__aligned_free(b);
    }
  }
  sp__ptrmap_destroy(&a->map);
  sp__history_destroy(a);
  sp__mutex_destroy(&a->commit_mu);
  sp__aligned_free(a->caches);
  sp__aligned_free(a);
}

void sp__alloc_test_disable_pending(sp__allocator *a, bool off) { a->test_no_pending = off; }

/* ---- allocation ---- */

/* Whether stream t has no work in flight (never created, or the backend says idle). */
static bool stream_idle(sp__allocator *a, unsigned t) {
  sp__bstream *bs = sp__stream_peek(&a->dev->streams[t]);
  return !bs || a->dev->be->stream_query(bs) == SP_OK;
}

/* (1) This stream's cache: its front (a block of exactly this size, kept whole), then its bins.
 * flush: on a miss of both, move the front to the bins (merging) and look again. */
static sp__block *take_own(sp__allocator *a, unsigned s, size_t bytes, bool flush) {
  sp__scache *c = &a->caches[s];
  uint64_t me = sp__user_self();
  sp__spin_lock(&c->mu);
  atomic_store_explicit(&c->ops, atomic_load_explicit(&c->ops, memory_order_relaxed) + 1,
                        memory_order_relaxed);
  if (atomic_load_explicit(&c->user, memory_order_relaxed) != me)
    atomic_store_explicit(&c->user, me, memory_order_relaxed);
  sp__block *blk = c->n_front ? sp__front_pop(a, c, bytes) : NULL;
  if (blk) goto unlock;
  blk = sp__bins_find(&c->bins[sp__size_pool(bytes)], bytes, UINT64_MAX);
  if (!blk && flush && c->n_front) {
    sp__front_flush_locked(a, c);
    blk = sp__bins_find(&c->bins[sp__size_pool(bytes)], bytes, UINT64_MAX);
  }
  if (blk) {
    sp__cache_take(a, c, blk, bytes, s, false);
    c->cache_hits++;
  }
unlock:
  sp__spin_unlock(&c->mu);
  return blk;
}

/* Takes a block of at least `bytes` with stamp <= max_stamp from stream t's cache for stream s.
 * complete (t is done with every block under max_stamp): the rest of the block is cached on s, so
 * s's frees merge with it. */
static sp__block *take_from(sp__allocator *a, unsigned t, unsigned s, size_t bytes,
                            uint64_t max_stamp, bool complete) {
  sp__scache *tc = &a->caches[t];
  sp__cache_lock2(a, s, t);
  if (tc->n_front) sp__front_flush_locked(a, tc); /* its front is ordinary cached memory now */
  sp__block *blk = sp__bins_find(&tc->bins[sp__size_pool(bytes)], bytes, max_stamp);
  if (blk) {
    sp__cache_take(a, tc, blk, bytes, s, complete);
    a->caches[s].cross_stream_reuses++;
  }
  sp__cache_unlock2(a, s, t);
  return blk;
}

static bool cache_may_fit(sp__allocator *a, unsigned t, size_t bytes) {
  const sp__scache *c = &a->caches[t];
  return atomic_load_explicit(&c->cached_bytes[sp__size_pool(bytes)], memory_order_relaxed) +
             atomic_load_explicit(&c->front_bytes, memory_order_relaxed) >=
         bytes;
}

/* (2) A block cached on another stream whose work is done. */
static sp__block *take_completed(sp__allocator *a, unsigned s, size_t bytes, bool share) {
  uint64_t me = sp__user_self();
  for (unsigned k = 1; k < a->n_streams; k++) {
    unsigned t = (s + k) % a->n_streams;
    if (!cache_may_fit(a, t, bytes) || (!share && !sp__user_stealable(a, t, me))) continue;
    /* Blocks cached on t before it is seen idle are done with. */
    uint64_t seen = atomic_load_explicit(&a->caches[t].free_seq, memory_order_acquire);
    if (!stream_idle(a, t)) continue;
    sp__block *blk = take_from(a, t, s, bytes, seen, true);
    if (blk) {
      SP__HISTORY(a, SP__HIST_REUSE, (int)s, (int)t, blk->bytes, blk->ptr, blk->seg->base);
      return blk;
    }
  }
  return NULL;
}

/* How a take was counted on the taking stream, besides the allocation (for give_back). */
typedef enum take_kind { TAKE_HIT, TAKE_REUSE } take_kind;

/* Puts back a block taken for s from t's cache (t may be s) that s never used: the take undone,
 * its counters too. */
static void give_back(sp__allocator *a, unsigned t, unsigned s, sp__block *blk, take_kind kind) {
  sp__scache *c = &a->caches[s];
  sp__cache_lock2(a, s, t);
  sp__map_shard *sh = sp__ptrmap_shard(&a->map, blk->ptr);
  sp__spin_lock(&sh->mu);
  sp__ptrmap_remove(sh, blk);
  sp__spin_unlock(&sh->mu);
  c->allocs--;
  if (kind == TAKE_REUSE) c->cross_stream_reuses--;
  else c->cache_hits--;
  atomic_store_explicit(&c->live_bytes,
                        atomic_load_explicit(&c->live_bytes, memory_order_relaxed) - blk->bytes,
                        memory_order_relaxed);
  sp__cache_put(a, t, blk, 0);
  sp__cache_unlock2(a, s, t);
}

/* Makes stream s wait on the device for the work now queued on stream t. */
static sp_status wait_for_stream(sp__allocator *a, unsigned t, unsigned s) {
  sp_device *dev = a->dev;
  sp_event ev;
  sp_status st = sp__event_acquire(dev, 0, &ev);
  if (st != SP_OK) return st;
  st = sp__event_record(dev, ev, &dev->streams[t]);
  if (st == SP_OK) st = sp__stream_wait_event(&dev->streams[s], ev);
  (void)sp__event_release(dev, ev);
  return st;
}

/* (3) A block cached on a busy stream, s waiting on the device for that stream's work. */
static sp__block *take_inflight(sp__allocator *a, unsigned s, size_t bytes, bool share) {
  uint64_t me = sp__user_self();
  for (unsigned k = 1; k < a->n_streams; k++) {
    unsigned t = (s + k) % a->n_streams;
    if (!cache_may_fit(a, t, bytes) || (!share && !sp__user_stealable(a, t, me))) continue;
    sp__block *blk = take_from(a, t, s, bytes, UINT64_MAX, false);
    if (!blk) continue;
    if (wait_for_stream(a, t, s) == SP_OK) {
      SP__HISTORY(a, SP__HIST_REUSE_WAIT, (int)s, (int)t, blk->bytes, blk->ptr, blk->seg->base);
      return blk;
    }
    give_back(a, t, s, blk, TAKE_REUSE);
    return NULL;
  }
  return NULL;
}

static size_t alloc_live_total(sp__allocator *a) {
  size_t sum = 0;
  for (unsigned i = 0; i < a->n_streams; i++)
    sum += atomic_load_explicit(&a->caches[i].live_bytes, memory_order_relaxed);
  return sum;
}

/* Before growing by seg_bytes: when the cache (that could not serve this request) holds more than
 * 1/8 of live + seg_bytes, give back the segments that are wholly cached on idle streams (no sync,
 * no wait), so reserved memory tracks live memory instead of the history of request sizes (on the
 * bench trace: peak reserved / peak allocated 1.15 with a threshold of seg_bytes, 1.07 with 1/8,
 * and fewer backend allocations too, as fewer segments are kept around only to be split). Only
 * segments of the request's pool go (a small segment given back does not make room for a large
 * block, and a thread alternating small and large requests would remap both every time); streams
 * that another running thread works on (not stealable) keep their segments and their fronts. */
static void alloc_trim_before_grow(sp__allocator *a, unsigned s, size_t bytes) {
  size_t seg_bytes = sp__size_segment(bytes);
  sp__spin_lock(&a->seglist_mu);
  size_t reserved = a->reserved, peak = a->reserved_peak;
  sp__spin_unlock(&a->seglist_mu);
  size_t live = alloc_live_total(a);
  if (reserved < live || (reserved - live) * 8 < live + seg_bytes) return;
  uint64_t done[SP_STREAMS_MAX], me = sp__user_self();
  bool keep[SP_STREAMS_MAX];
  for (unsigned i = 0; i < a->n_streams; i++) keep[i] = i != s && !sp__user_stealable(a, i, me);
  for (unsigned i = 0; i < a->n_streams; i++) {
    sp__scache *c = &a->caches[i];
    if (keep[i] || !atomic_load_explicit(&c->front_bytes, memory_order_relaxed)) continue;
    sp__spin_lock(&c->mu);
    sp__front_flush_locked(a, c);
    sp__spin_unlock(&c->mu);
  }
  for (unsigned i = 0; i < a->n_streams; i++) {
    done[i] = atomic_load_explicit(&a->caches[i].free_seq, memory_order_acquire);
    if (!stream_idle(a, i)) done[i] = 0; /* only blocks cached before it ever ran */
  }
  (void)sp__segment_release_unused(a, done, keep, sp__size_pool(bytes));
  /* Free pages go back only when this growth would raise the peak of reserved memory: below
   * it, giving them back and committing them again (a system call each, page faults after) when
   * a block is next taken over them buys nothing the peak shows, and a steady mix of sizes from
   * many threads did that on most misses (bench/alloc mixed sizes at 16 threads on the H200:
   * 456-618 ns a pair against 278-314 ns without decommitting). */
  if (reserved + seg_bytes > peak) (void)sp__pages_decommit(a, done, keep, sp__size_pool(bytes));
}

/* Whether blk (CACHED, its cache's lock held) has a CACHED address neighbour, which is then
 * another stream's (same-stream neighbours are always merged): a piece that can merge. */
static bool adopt_mergeable(sp__block *blk) {
  sp__spin_lock(&blk->seg->mu);
  bool m = (blk->prev && blk->prev->state == SP__BLOCK_CACHED) ||
           (blk->next && blk->next->state == SP__BLOCK_CACHED);
  sp__spin_unlock(&blk->seg->mu);
  return m;
}

/* Moves the blocks of stream t's cache (pool `pool`) cached before `seen` that have a CACHED
 * neighbour to stream s's cache (both locks held), where each merges with its neighbours of s;
 * the bytes moved. Blocks that cannot merge stay: a wholly free segment stays with t, where the
 * trim before growing can give it back (on s, busy, it could not be). */
static size_t adopt_from(sp__allocator *a, unsigned t, unsigned s, unsigned pool, uint64_t seen) {
  sp__bins *bins = &a->caches[t].bins[pool];
  size_t moved = 0;
  for (unsigned bin = 0; bin < SP__BINS; bin++) {
    for (sp__block *blk = bins->heads[bin], *next; blk; blk = next) {
      next = blk->link_next;
      if (blk->stamp > seen || !adopt_mergeable(blk)) continue;
      sp__bins_remove(bins, blk);
      moved += blk->bytes;
      sp__cache_put(a, s, blk, 0);
    }
  }
  atomic_store_explicit(&a->caches[t].cached_bytes[pool], bins->bytes, memory_order_relaxed);
  return moved;
}

/* Before growing: the free pieces of idle streams that no other running thread works on
 * (stealable) come to s, so blocks freed on different streams next to each other in one segment
 * become one block of s; true when anything moved. Without it, memory freed on many streams stays
 * in pieces each too small for the request while the device grows (peak reserved / peak allocated
 * 1.5-1.7 on the 8- and 16-stream traces of bench/alloc). From then on the merged block is s's
 * own cached memory (a later hit counts as s's cache hit, not a cross-stream reuse). */
static bool adopt_completed(sp__allocator *a, unsigned s, size_t bytes) {
  uint64_t me = sp__user_self();
  unsigned pool = sp__size_pool(bytes);
  bool moved = false;
  for (unsigned k = 1; k < a->n_streams; k++) {
    unsigned t = (s + k) % a->n_streams;
    sp__scache *tc = &a->caches[t];
    if (!atomic_load_explicit(&tc->cached_bytes[pool], memory_order_relaxed) &&
        !atomic_load_explicit(&tc->front_bytes, memory_order_relaxed))
      continue;
    if (!sp__user_stealable(a, t, me)) continue;
    uint64_t seen = atomic_load_explicit(&tc->free_seq, memory_order_acquire);
    if (!stream_idle(a, t)) continue;
    sp__cache_lock2(a, s, t);
    if (tc->n_front) sp__front_flush_locked(a, tc);
    moved |= adopt_from(a, t, s, pool, seen) > 0;
    sp__cache_unlock2(a, s, t);
  }
  return moved;
}

/* (2)-(3) from streams no other running thread works on (share false) or any (share true). A
 * running thread's cache is left alone: taking from it whenever a request misses would make its
 * segments and their locks bounce between the threads (sp__user_stealable). */
static sp__block *take_other(sp__allocator *a, unsigned s, size_t bytes, bool share) {
  sp__block *blk = take_completed(a, s, bytes, share);
  if (!blk && a->inflight_reuse) blk = take_inflight(a, s, bytes, share);
  return blk;
}

/* blk (NULL ok), taken for s, once the decommitted pages under it are committed again; NULL when
 * they cannot be (the limit, or the device full: blk goes back to s's cache, the error is set). */
static sp__block *alloc_ready(sp__allocator *a, unsigned s, sp__block *blk, take_kind kind) {
  if (!blk || !blk->commit) return blk;
  alloc_trim_before_grow(a, s, blk->bytes); /* committing grows reserved as a segment would */
  if (sp__pages_commit(a, blk) == SP_OK) return blk;
  give_back(a, s, s, blk, kind);
  return NULL;
}

/* (1)-(4) once: other streams' free blocks (of streams no running thread works on; their pieces
 * merged first if no single one fits) before a new segment, those of any stream only when no new
 * segment can be had (then the error is kept for the caller's retry). */
static sp_status alloc_attempt(sp__allocator *a, unsigned s, size_t bytes, sp__block **out) {
  sp__block *blk = alloc_ready(a, s, take_own(a, s, bytes, true), TAKE_HIT);
  if (!blk) blk = alloc_ready(a, s, take_other(a, s, bytes, false), TAKE_REUSE);
  if (!blk && adopt_completed(a, s, bytes))
    blk = alloc_ready(a, s, take_own(a, s, bytes, false), TAKE_HIT);
  if (blk) {
    *out = blk;
    return SP_OK;
  }
  alloc_trim_before_grow(a, s, bytes);
  sp_status st = sp__segment_create(a, s, bytes, out);
  if (st != SP_ERR_OUT_OF_MEMORY && st != SP_ERR_LIMIT) return st;
  blk = alloc_ready(a, s, take_other(a, s, bytes, true), TAKE_REUSE);
  if (!blk) return st;
  sp__error_clear();
  *out = blk;
  return SP_OK;
}

/* (5) Flush everything and retry once; (6) the final error. */
static sp_status alloc_flush_retry(sp__allocator *a, unsigned s, size_t bytes, size_t rounded,
                                   sp_status why, sp__block **out) {
  uint64_t seen[SP_STREAMS_MAX];
  atomic_fetch_add_explicit(&a->oom_retries, 1, memory_order_relaxed);
  SP__HISTORY(a, SP__HIST_OOM_RETRY, (int)s, -1, rounded, NULL, NULL);
  sp__front_flush_all(a);
  for (unsigned i = 0; i < a->n_streams; i++)
    seen[i] = atomic_load_explicit(&a->caches[i].free_seq, memory_order_acquire);
  sp_status st = sp__device_sync_all(a->dev);
  if (st != SP_OK) return st;
  sp__pending_poll(a, true);
  (void)sp__segment_release_unused(a, seen, NULL, SP__POOLS);
  (void)sp__pages_decommit(a, seen, NULL, SP__POOLS);
  st = alloc_attempt(a, s, rounded, out);
  if (st != SP_ERR_OUT_OF_MEMORY && st != SP_ERR_LIMIT) return st;
  why = st;
  atomic_fetch_add_explicit(&a->ooms, 1, memory_order_relaxed);
  SP__HISTORY(a, SP__HIST_OOM, (int)s, -1, rounded, NULL, NULL);
  sp__spin_lock(&a->seglist_mu);
  size_t reserved = a->reserved;
  sp__spin_unlock(&a->seglist_mu);
  size_t room = a->limit > reserved ? a->limit - reserved : 0;
  return sp__fail(why,
                  "sp_alloc: %s: requested %zu bytes (rounded to 512: %zu) on stream %u; no cached "
                  "block fits and a new segment of at least %zu does not%s; allocated %zu, "
                  "reserved %zu, limit %zu (0: none; %zu left under it), device total %zu",
                  why == SP_ERR_LIMIT ? "memory limit reached" : "out of device memory", bytes,
                  rounded, s, rounded,
                  why == SP_ERR_LIMIT ? " fit under the limit" : " come from the device",
                  alloc_live_total(a), reserved, a->limit, a->limit ? room : 0, a->device_total);
}

static sp_status alloc_slow(sp__allocator *a, unsigned s, size_t bytes, size_t rounded,
                            sp__block **out) {
  sp__pending_poll(a, false);
  sp_status st = alloc_attempt(a, s, rounded, out);
  if (st == SP_ERR_OUT_OF_MEMORY || st == SP_ERR_LIMIT)
    st = alloc_flush_retry(a, s, bytes, rounded, st, out);
  return st;
}

/* Boundary checks of sp_alloc; the rounded size on success. */
static sp_status alloc_check(sp__allocator *a, size_t bytes, void **out, size_t *rounded) {
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_alloc: out is NULL");
  if (bytes == 0) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_alloc: size is 0");
  if (!sp__size_round(bytes, rounded))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_alloc: %zu bytes overflow when rounded to 512",
                    bytes);
  if (a->device_total && *rounded > a->device_total)
    return sp__fail(SP_ERR_OUT_OF_MEMORY,
                    "sp_alloc: requested %zu bytes, more than the device's total %zu", bytes,
                    a->device_total);
  if (a->limit && *rounded > a->limit)
    return sp__fail(SP_ERR_LIMIT,
                    "sp_alloc: requested %zu bytes (rounded to 512: %zu), more "
                    "than the memory limit %zu",
                    bytes, *rounded, a->limit);
  return SP_OK;
}

static _Thread_local unsigned alloc_tl_ops; /* this thread's allocations, to pace pending polls */

sp_status sp_alloc(sp_device *dev, size_t bytes, sp_stream *s, void **out) {
  /* A given stream is checked first; the current stream is resolved (bound on first use) only
   * after the other checks, so a rejected call binds nothing. */
  static const char fn[] = "sp_alloc";
  sp_status st = s ? sp__stream_resolve(dev, s, fn, &s) : sp__device_enter(dev, fn);
  if (st != SP_OK) return st;
  sp__allocator *a = dev->alloc;
  size_t rounded = 0;
  st = alloc_check(a, bytes, out, &rounded);
  if (st == SP_OK && !s) st = sp__stream_resolve(dev, NULL, fn, &s);
  if (st != SP_OK) return st;
  unsigned si = s->index;
  if ((++alloc_tl_ops & 15u) == 0) sp__pending_poll(a, false);
  sp__block *blk = alloc_ready(a, si, take_own(a, si, rounded, false), TAKE_HIT);
  if (!blk) {
    st = alloc_slow(a, si, bytes, rounded, &blk);
    if (st != SP_OK) return st;
  }
  SP__HISTORY(a, SP__HIST_ALLOC, (int)si, -1, blk->bytes, blk->ptr, blk->seg->base);
  sp__alloc_debug_check(a, si);
  *out = blk->ptr;
  return SP_OK;
}

/* ---- free ---- */

/* Records an event on every stream in extra but s that has a backend stream; *events owned by
 * the caller. Nothing changed on failure. No lock held. */
static sp_status free_record(sp__allocator *a, const uint64_t extra[2], unsigned s,
                             sp_event **events, unsigned *n_events) {
  sp_device *dev = a->dev;
  unsigned n = 0,
           want = (unsigned)(__builtin_popcountll(extra[0]) + __builtin_popcountll(extra[1]));
  sp_event *evs = sp__malloc(want * sizeof(*evs));
  if (!evs) return sp__fail(SP_ERR_HOST_MEMORY, "sp_free: no host memory for its events");
  sp_status st = SP_OK;
  for (unsigned t = 0; t < a->n_streams && st == SP_OK; t++) {
    if (t == s || !sp__set_has(extra, t) || !sp__stream_peek(&dev->streams[t])) continue;
    st = sp__event_acquire(dev, 0, &evs[n]);
    if (st != SP_OK) break;
    n++;
    st = sp__event_record(dev, evs[n - 1], &dev->streams[t]);
  }
  if (st != SP_OK || n == 0) {
    for (unsigned i = 0; i < n; i++) (void)sp__event_release(dev, evs[i]);
    sp__free(evs);
    evs = NULL;
    n = 0;
  }
  *events = evs;
  *n_events = n;
  return st;
}

/* Publishes blk (claimed, its events recorded) as PENDING. */
static void free_publish_pending(sp__allocator *a, sp__block *blk, sp_event *events, unsigned n) {
  sp__scache *c = &a->caches[blk->stream];
  sp__spin_lock(&c->mu);
  sp__spin_lock(&a->pending_mu);
  sp__spin_lock(&blk->seg->mu);
  sp__map_shard *sh = sp__ptrmap_shard(&a->map, blk->ptr);
  sp__spin_lock(&sh->mu);
  sp__ptrmap_remove(sh, blk);
  sp__spin_unlock(&sh->mu);
  blk->state = SP__BLOCK_PENDING;
  blk->stamp = sp__cache_stamp(c); /* its own stream's use came before this free */
  blk->events = events;
  blk->n_events = n;
  sp__spin_unlock(&blk->seg->mu);
  blk->link_prev = NULL;
  blk->link_next = a->pending;
  if (a->pending) a->pending->link_prev = blk;
  a->pending = blk;
  a->pending_count++;
  atomic_store_explicit(&a->pending_hint, a->pending_count, memory_order_relaxed);
  sp__spin_unlock(&a->pending_mu);
  c->deferred_frees++;
  sp__cache_count_free(c, blk->bytes);
  sp__spin_unlock(&c->mu);
}

/* Returns blk (claimed) to its stream's cache at once: whole to its front when it fits there,
 * else out of the map and into the bins. */
static void free_to_cache(sp__allocator *a, sp__block *blk, sp__map_shard *sh) {
  sp__scache *c = &a->caches[blk->stream];
  sp__spin_lock(&c->mu);
  sp__cache_count_free(c, blk->bytes);
  if (!sp__front_push(a, c, blk)) {
    sp__spin_lock(&sh->mu);
    sp__ptrmap_remove(sh, blk);
    sp__spin_unlock(&sh->mu);
    sp__cache_put(a, blk->stream, blk, 0);
  }
  sp__spin_unlock(&c->mu);
}

sp_status sp_free(sp_device *dev, void *p) {
  sp_status st = sp__device_enter(dev, "sp_free");
  if (st != SP_OK || !p) return st;
  sp__allocator *a = dev->alloc;
  sp__map_shard *sh = sp__ptrmap_shard(&a->map, p);
  sp__spin_lock(&sh->mu);
  sp__block *blk = sp__ptrmap_find(sh, p);
  if (!blk || atomic_load_explicit(&blk->claimed, memory_order_acquire)) {
    sp__spin_unlock(&sh->mu);
    return sp__fail(SP_ERR_INVALID_HANDLE,
                    "sp_free: pointer %p is not a live block of this device (freed already, "
                    "interior, or from elsewhere)",
                    p);
  }
  atomic_store_explicit(&blk->claimed, true, memory_order_relaxed);
  uint64_t extra[2] = {blk->extra[0], blk->extra[1]};
  unsigned s = blk->stream;
  sp__spin_unlock(&sh->mu);
  extra[s / 64] &= ~(1ull << (s % 64));
  sp_event *events = NULL;
  unsigned n = 0;
  if ((extra[0] | extra[1]) && !a->test_no_pending) {
    st = free_record(a, extra, s, &events, &n);
    if (st != SP_OK) {
      sp__spin_lock(&sh->mu);
      atomic_store_explicit(&blk->claimed, false, memory_order_relaxed);
      sp__spin_unlock(&sh->mu);
      return st;
    }
  }
  /* Recorded before the block is published: its next user's events come after this one. */
  SP__HISTORY(a, n ? SP__HIST_FREE_PENDING : SP__HIST_FREE, (int)s, -1, blk->bytes, blk->ptr,
              blk->seg->base);
  if (n) free_publish_pending(a, blk, events, n);
  else free_to_cache(a, blk, sh);
  sp__alloc_debug_check(a, s);
  return SP_OK;
}

/* ---- record_stream, empty_cache ---- */

sp_status sp_record_stream(sp_device *dev, void *p, sp_stream *s) {
  sp_status st = sp__device_enter(dev, "sp_record_stream");
  if (st == SP_OK) st = sp__stream_enter(s, "sp_record_stream");
  if (st != SP_OK) return st;
  if (s->dev != dev)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_record_stream: stream %u belongs to another "
                    "device",
                    s->index);
  if (!p) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_record_stream: pointer is NULL");
  sp__map_shard *sh = sp__ptrmap_shard(&dev->alloc->map, p);
  sp__spin_lock(&sh->mu);
  sp__block *blk = sp__ptrmap_find(sh, p);
  bool ok = blk && !atomic_load_explicit(&blk->claimed, memory_order_acquire);
  if (ok) sp__set_add(blk->extra, s->index);
  sp__spin_unlock(&sh->mu);
  if (!ok)
    return sp__fail(SP_ERR_INVALID_HANDLE,
                    "sp_record_stream: pointer %p is not a live block of this device", p);
  return SP_OK;
}

sp_status sp_empty_cache(sp_device *dev) {
  sp_status st = sp__device_enter(dev, "sp_empty_cache");
  if (st != SP_OK) return st;
  sp__allocator *a = dev->alloc;
  sp__front_flush_all(a);
  uint64_t seen[SP_STREAMS_MAX];
  for (unsigned i = 0; i < a->n_streams; i++)
    seen[i] = atomic_load_explicit(&a->caches[i].free_seq, memory_order_acquire);
  st = sp__device_sync_all(dev);
  if (st != SP_OK) return st;
  sp__pending_poll(a, true);
  size_t released = sp__segment_release_unused(a, seen, NULL, SP__POOLS);
  released += sp__pages_decommit(a, seen, NULL, SP__POOLS);
  SP__HISTORY(a, SP__HIST_EMPTY_CACHE, -1, -1, released, NULL, NULL);
  sp__alloc_debug_check(a, 0);
  return SP_OK;
}
