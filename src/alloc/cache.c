/* Per-stream caches of free blocks: taking a block out (split + map) and putting one back (merge).
 *
 * Owns the moves between CACHED and LIVE and the spare block structs. Invariants: a CACHED block
 * is in exactly the bins of cache `stream`, of its segment's pool; no two address neighbours are
 * CACHED on the same stream; a LIVE block is in the pointer map and counted in its stream's
 * live_bytes. Locking: the stream cache lock(s) named by each function are held by the caller;
 * these functions take the segment lock and a map shard lock inside them (ranks above it).
 */
#include "alloc/alloc_internal.h"

#include "core/status.h"

sp__block *sp__cache_block_new(sp__scache *s) {
  sp__block *b = s->spare;
  if (b) {
    s->spare = b->link_next;
    s->n_spare--;
    return b;
  }
  return sp__aligned_calloc(1, sizeof(*b));
}

void sp__cache_block_drop(sp__scache *s, sp__block *blk) {
  if (s->n_spare >= SP__SPARE_MAX) {
    sp__aligned_free(blk);
    return;
  }
  blk->link_next = s->spare;
  s->spare = blk;
  s->n_spare++;
}

static void cache_set_bytes(sp__scache *c, unsigned pool) {
  atomic_store_explicit(&c->cached_bytes[pool], c->bins[pool].bytes, memory_order_relaxed);
}

void sp__cache_take(sp__allocator *a, sp__scache *owner, sp__block *blk, size_t bytes,
                    unsigned stream, bool rehome) {
  sp__segment *seg = blk->seg;
  sp_assert(blk->state == SP__BLOCK_CACHED && blk->bytes >= bytes);
  sp__bins_remove(&owner->bins[seg->pool], blk);
  sp__block *rest = blk->bytes > bytes ? sp__cache_block_new(owner) : NULL;
  sp__spin_lock(&seg->mu);
  if (rest) sp__block_split(blk, bytes, rest); /* no struct: the block stays whole */
  blk->commit = sp__pages_gone_in(seg, (size_t)(blk->ptr - seg->base), blk->bytes);
  blk->state = SP__BLOCK_LIVE;
  blk->stream = stream;
  blk->extra[0] = blk->extra[1] = 0;
  blk->front = false;
  atomic_store_explicit(&blk->claimed, false, memory_order_relaxed); /* not yet published */
  sp__map_shard *sh = sp__ptrmap_shard(&a->map, blk->ptr);
  sp__spin_lock(&sh->mu);
  sp__ptrmap_insert(sh, blk);
  sp__spin_unlock(&sh->mu);
  sp__spin_unlock(&seg->mu);
  if (rest && rehome && &a->caches[stream] != owner)
    sp__cache_put(a, stream, rest, 0); /* merges with stream's neighbours */
  else if (rest) sp__bins_insert(&owner->bins[seg->pool], rest);
  cache_set_bytes(owner, seg->pool);
  sp__cache_count_alloc(a, stream, blk->bytes, owner);
}

/* Whether neighbour n can merge into a block being cached on stream s. */
static inline bool cache_mergeable(const sp__block *n, unsigned s) {
  return n && n->state == SP__BLOCK_CACHED && n->stream == s;
}

uint64_t sp__cache_stamp(sp__scache *c) {
  uint64_t stamp = atomic_load_explicit(&c->free_seq, memory_order_relaxed) + 1;
  atomic_store_explicit(&c->free_seq, stamp, memory_order_release);
  return stamp;
}

void sp__cache_put(sp__allocator *a, unsigned s, sp__block *blk, uint64_t stamp) {
  sp__scache *c = &a->caches[s];
  sp__segment *seg = blk->seg;
  sp__bins *bins = &c->bins[seg->pool];
  if (!stamp) stamp = sp__cache_stamp(c);
  sp__spin_lock(&seg->mu);
  blk->state = SP__BLOCK_CACHED;
  blk->stream = s;
  blk->stamp = stamp;
  sp__block *drop[2] = {NULL, NULL};
  if (cache_mergeable(blk->prev, s)) {
    sp__block *p = blk->prev;
    sp__bins_remove(bins, p);
    drop[0] = sp__block_absorb_next(p);
    blk = p;
  }
  if (cache_mergeable(blk->next, s)) {
    sp__bins_remove(bins, blk->next);
    drop[1] = sp__block_absorb_next(blk);
  }
  sp__spin_unlock(&seg->mu);
  sp__bins_insert(bins, blk);
  cache_set_bytes(c, seg->pool);
  for (unsigned i = 0; i < 2; i++)
    if (drop[i]) sp__cache_block_drop(c, drop[i]);
}

void sp__cache_lock2(sp__allocator *a, unsigned i, unsigned j) {
  unsigned lo = i < j ? i : j, hi = i < j ? j : i;
  sp__spin_lock(&a->caches[lo].mu);
  if (hi != lo) sp__spin_lock(&a->caches[hi].mu);
}

void sp__cache_unlock2(sp__allocator *a, unsigned i, unsigned j) {
  sp__spin_unlock(&a->caches[i].mu);
  if (i != j) sp__spin_unlock(&a->caches[j].mu);
}
