/* Segments: getting memory from the backend and giving unused segments back.
 *
 * Owns the segment list, reserved bytes and the memory limit (commit.c changes reserved too, when
 * it decommits and commits pages of a segment). A segment has its size class's size
 * (size_class.h), or when that would pass the memory limit, the request's own size (so a request
 * that fits under the limit is never refused for the size class's rounding alone). Invariants:
 * reserved is the sum of linked segments' committed bytes (bytes less decommitted pages);
 * reserved + reserving never passes the limit
 * (reserving covers the mem_alloc calls under way, so concurrent growth cannot overshoot it); a
 * segment is released only when all its blocks are CACHED with stamps showing their streams
 * finished with them. Locking: the segment list lock guards the list and counters; releasing takes
 * the commit lock and every stream cache lock first (rare: sp_empty_cache, the OOM path and the
 * trim before growing); mem_alloc/mem_free run with no lock held.
 */
#include "alloc/alloc_internal.h"

#include "core/status.h"

/* Reserves a segment for a rounded request of `bytes` under the limit: the size class's segment
 * (sp__size_segment), or when that would pass the limit, one of exactly `bytes` (so any request
 * that fits in what is left gets a segment, and the rest stays free for the next request of either
 * pool; such a segment is wholly unused again as soon as its block is freed). *seg_bytes: the size
 * reserved. SP_ERR_LIMIT naming the numbers when not even `bytes` fits. */
static sp_status segment_reserve(sp__allocator *a, size_t bytes, size_t *seg_bytes) {
  size_t want = sp__size_segment(bytes), got = want;
  sp__spin_lock(&a->seglist_mu);
  size_t held = a->reserved + a->reserving;
  size_t room = !a->limit ? SIZE_MAX : (held < a->limit ? a->limit - held : 0);
  if (want > room) got = bytes;
  bool over = got > room, indexed = !over && sp__seg_index_reserve(a);
  if (indexed) a->reserving += got;
  sp__spin_unlock(&a->seglist_mu);
  if (!over && !indexed)
    return sp__fail(SP_ERR_HOST_MEMORY, "sp_alloc: no host memory for the segment index");
  if (over)
    return sp__fail(SP_ERR_LIMIT,
                    "sp_alloc: %zu bytes (rounded to 512) do not fit under the memory limit %zu: "
                    "reserved %zu leaves %zu (the size class's segment is %zu)",
                    bytes, a->limit, held, room, want);
  *seg_bytes = got;
  return SP_OK;
}

static void segment_unreserve(sp__allocator *a, size_t seg_bytes) {
  sp__spin_lock(&a->seglist_mu);
  a->reserving -= seg_bytes;
  sp__seg_index_unreserve(a);
  sp__spin_unlock(&a->seglist_mu);
}

/* Links seg (seglist_mu held) and turns its reservation into reserved bytes. */
static void segment_link(sp__allocator *a, sp__segment *seg) {
  seg->prev = NULL;
  seg->next = a->segments;
  if (seg->next) seg->next->prev = seg;
  a->segments = seg;
  a->n_segments++;
  sp__seg_index_insert(a, seg);
  a->reserving -= seg->bytes;
  a->reserved += seg->bytes;
  if (a->reserved > a->reserved_peak) a->reserved_peak = a->reserved;
  a->backend_allocs++;
}

static void segment_unlink(sp__allocator *a, sp__segment *seg) {
  if (seg->prev) seg->prev->next = seg->next;
  else a->segments = seg->next;
  if (seg->next) seg->next->prev = seg->prev;
  sp__seg_index_remove(a, seg);
  a->n_segments--;
  a->reserved -= seg->bytes - seg->n_gone * SP__MEM_PAGE;
  a->backend_frees++;
}

/* A segment struct: a recycled one (its lock initialized once, when first allocated: a range
 * check may be spinning on it) or a new one. NULL without host memory. */
static sp__segment *segment_struct_new(sp__allocator *a) {
  sp__spin_lock(&a->seglist_mu);
  sp__segment *seg = a->seg_spare;
  if (seg) a->seg_spare = seg->next;
  sp__spin_unlock(&a->seglist_mu);
  if (seg) return seg;
  seg = sp__aligned_calloc(1, sizeof(*seg));
  if (seg) sp__spin_init(&seg->mu, SP__RANK_ALLOC_SEGMENT);
  return seg;
}

/* Keeps seg (unlinked; NULL ok) for reuse: segment structs are freed only with the allocator. */
static void segment_struct_drop(sp__allocator *a, sp__segment *seg) {
  if (!seg) return;
  sp__spin_lock(&a->seglist_mu);
  seg->prev = NULL;
  seg->next = a->seg_spare;
  a->seg_spare = seg;
  sp__spin_unlock(&a->seglist_mu);
}

sp_status sp__segment_create(sp__allocator *a, unsigned s, size_t bytes, sp__block **out) {
  sp_device *dev = a->dev;
  size_t seg_bytes = 0;
  sp_status st = segment_reserve(a, bytes, &seg_bytes);
  if (st != SP_OK) return st;
  sp__segment *seg = segment_struct_new(a);
  sp__block *blk = sp__aligned_calloc(1, sizeof(*blk));
  uint64_t *gone = NULL;
  if (!seg || !blk || !sp__pages_bitmap_new(a, seg_bytes, &gone)) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "sp_alloc: no host memory for segment bookkeeping");
    goto free_structs;
  }
  void *base = NULL;
  st = dev->be->mem_alloc(dev->bdev, seg_bytes, &base);
  if (st != SP_OK) goto free_structs;
  sp__spin_lock(&seg->mu); /* a range check may hold a stale pointer to a recycled struct */
  seg->base = base;
  seg->bytes = seg_bytes;
  seg->pool = sp__size_pool(bytes);
  seg->stream = s;
  seg->first = blk;
  seg->gone = gone;
  seg->n_gone = 0;
  seg->whole = false;
  seg->linked = true;
  sp__spin_unlock(&seg->mu);
  *blk = (sp__block){
      .ptr = base, .bytes = seg_bytes, .seg = seg, .stream = s, .state = SP__BLOCK_CACHED};
  sp__scache *c = &a->caches[s];
  sp__spin_lock(&c->mu);
  sp__spin_lock(&a->seglist_mu);
  segment_link(a, seg);
  sp__spin_unlock(&a->seglist_mu);
  SP__HISTORY(a, SP__HIST_SEGMENT_MAP, (int)s, -1, seg_bytes, base, base);
  blk->stamp = atomic_load_explicit(&c->free_seq, memory_order_relaxed);
  sp__bins_insert(&c->bins[seg->pool], blk);
  sp__cache_take(a, c, blk, bytes, s, false);
  sp__spin_unlock(&c->mu);
  *out = blk;
  return SP_OK;

free_structs:
  sp__free(gone);
  sp__aligned_free(blk);
  segment_struct_drop(a, seg);
  segment_unreserve(a, seg_bytes);
  return st;
}

/* Whether every block of seg (lock held) is CACHED with a stamp its stream has finished. */
static bool segment_unused(const sp__segment *seg, const uint64_t *max_stamp, const bool *keep) {
  for (const sp__block *b = seg->first; b; b = b->next)
    if (b->state != SP__BLOCK_CACHED || b->stamp > max_stamp[b->stream] ||
        (keep && keep[b->stream]))
      return false;
  return true;
}

/* Takes seg's blocks out of their streams' bins and seg out of the list (every cache lock, the
 * list lock and seg's lock held). */
static void segment_detach(sp__allocator *a, sp__segment *seg) {
  seg->linked = false;
  for (sp__block *b = seg->first; b; b = b->next) {
    sp__scache *c = &a->caches[b->stream];
    sp__bins_remove(&c->bins[seg->pool], b);
    atomic_store_explicit(&c->cached_bytes[seg->pool], c->bins[seg->pool].bytes,
                          memory_order_relaxed);
  }
  segment_unlink(a, seg);
}

size_t sp__segment_release_unused(sp__allocator *a, const uint64_t *max_stamp, const bool *keep,
                                  unsigned pool) {
  sp__segment *dead = NULL;
  sp__mutex_lock(&a->commit_mu); /* no page of a segment released here is being decommitted */
  for (unsigned s = 0; s < a->n_streams; s++) sp__spin_lock(&a->caches[s].mu);
  sp__spin_lock(&a->seglist_mu);
  for (sp__segment *seg = a->segments, *next; seg; seg = next) {
    next = seg->next;
    if (pool != SP__POOLS && seg->pool != pool) continue;
    sp__spin_lock(&seg->mu);
    bool unused = segment_unused(seg, max_stamp, keep);
    if (unused) segment_detach(a, seg);
    sp__spin_unlock(&seg->mu);
    if (!unused) continue;
    seg->next = dead;
    dead = seg;
  }
  sp__spin_unlock(&a->seglist_mu);
  for (unsigned s = a->n_streams; s-- > 0;) sp__spin_unlock(&a->caches[s].mu);
  sp__mutex_unlock(&a->commit_mu);
  size_t released = 0;
  for (sp__segment *seg = dead, *next; seg; seg = next) {
    next = seg->next;
    size_t committed = seg->bytes - seg->n_gone * SP__MEM_PAGE;
    released += committed;
    SP__HISTORY(a, SP__HIST_SEGMENT_UNMAP, (int)seg->stream, -1, committed, seg->base, seg->base);
    a->dev->be->mem_free(a->dev->bdev, seg->base);
    sp__free(seg->gone);
    seg->gone = NULL;
    for (sp__block *b = seg->first, *bn; b; b = bn) {
      bn = b->next;
      sp__aligned_free(b);
    }
    seg->first = NULL;
    segment_struct_drop(a, seg);
  }
  return released;
}
