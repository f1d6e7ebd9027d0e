/* Front caches: each stream keeps its last few freed blocks whole, for requests of exactly their
 * size (the common case: a thread allocating the same activation sizes step after step).
 *
 * Owns sp__scache.front / front_size / n_front / front_bytes. A front-cached block stays LIVE in
 * its segment (so no neighbour merges into it and no segment lock is taken), stays in the pointer
 * map with `claimed` set (so sp_free and sp_record_stream of it fail as for any freed pointer), and
 * carries the stamp of its free (so cross-stream users see when its stream is done with it). It is
 * not counted in live_bytes: for stats, the validator and the snapshot it is cached on its stream.
 * So an alloc+free pair of a cached size takes the stream cache lock twice and one map shard lock,
 * with no split, merge or map update. Invariants: at most SP__FRONT_MAX blocks and
 * SP__FRONT_BYTES_MAX bytes per stream, none over SP__FRONT_BLOCK_MAX; only blocks with no other
 * stream to wait for (never PENDING ones) enter; a front block is handed out only to its own
 * stream; anything that needs the blocks as ordinary cached memory (another stream's request, a
 * miss of the bins, trimming, sp_empty_cache, the out-of-memory path) flushes the front to the bins
 * first. Locking: every function runs under the stream cache lock and takes a map shard lock and,
 * through sp__cache_put, the segment lock only when flushing; claimed is cleared
 * with a release store because its readers hold the shard lock, not this one.
 */
#include "alloc/alloc_internal.h"

#include <string.h>

#include "core/status.h"

static void front_set_bytes(sp__scache *c, size_t bytes) {
  atomic_store_explicit(&c->front_bytes, bytes, memory_order_relaxed);
}

/* Removes entry i (lock held) and returns its block. */
static sp__block *front_remove(sp__scache *c, unsigned i) {
  sp__block *blk = c->front[i];
  if (SP__UNLIKELY(i + 1 < c->n_front)) { /* usually the newest is taken: nothing to shift */
    unsigned tail = c->n_front - i - 1;
    memmove(&c->front[i], &c->front[i + 1], tail * sizeof(c->front[0]));
    memmove(&c->front_size[i], &c->front_size[i + 1], tail * sizeof(c->front_size[0]));
  }
  c->n_front--;
  front_set_bytes(c, atomic_load_explicit(&c->front_bytes, memory_order_relaxed) - blk->bytes);
  blk->front = false;
  return blk;
}

/* Turns a block just taken off the front into an ordinary CACHED block of its stream. */
static void front_to_bins(sp__allocator *a, sp__block *blk) {
  sp__map_shard *sh = sp__ptrmap_shard(&a->map, blk->ptr);
  sp__spin_lock(&sh->mu);
  sp__ptrmap_remove(sh, blk);
  sp__spin_unlock(&sh->mu);
  sp__cache_put(a, blk->stream, blk, blk->stamp);
}

sp__block *sp__front_pop(sp__allocator *a, sp__scache *c, size_t bytes) {
  for (unsigned i = c->n_front; i-- > 0;) {
    if (c->front_size[i] != bytes) continue;
    sp__block *blk = front_remove(c, i);
    sp_assert(blk->state == SP__BLOCK_LIVE && blk->bytes == bytes);
    blk->extra[0] = blk->extra[1] = 0;
    atomic_store_explicit(&blk->claimed, false, memory_order_release);
    c->cache_hits++;
    sp__cache_count_alloc(a, blk->stream, bytes, NULL);
    return blk;
  }
  return NULL;
}

bool sp__front_push(sp__allocator *a, sp__scache *c, sp__block *blk) {
  size_t bytes = blk->bytes;
  if (bytes > SP__FRONT_BLOCK_MAX || bytes > SP__FRONT_BYTES_MAX) return false;
  sp_assert(blk->state == SP__BLOCK_LIVE && !blk->front);
  while (c->n_front == SP__FRONT_MAX ||
         atomic_load_explicit(&c->front_bytes, memory_order_relaxed) > SP__FRONT_BYTES_MAX - bytes)
    front_to_bins(a, front_remove(c, 0));
  blk->stamp = sp__cache_stamp(c);
  blk->front = true;
  c->front[c->n_front] = blk;
  c->front_size[c->n_front++] = bytes;
  front_set_bytes(c, atomic_load_explicit(&c->front_bytes, memory_order_relaxed) + bytes);
  return true;
}

void sp__front_flush_locked(sp__allocator *a, sp__scache *c) {
  while (c->n_front) front_to_bins(a, front_remove(c, c->n_front - 1));
}

void sp__front_flush_all(sp__allocator *a) {
  for (unsigned i = 0; i < a->n_streams; i++) {
    sp__scache *c = &a->caches[i];
    if (!atomic_load_explicit(&c->front_bytes, memory_order_relaxed)) continue;
    sp__spin_lock(&c->mu);
    sp__front_flush_locked(a, c);
    sp__spin_unlock(&c->mu);
  }
}
