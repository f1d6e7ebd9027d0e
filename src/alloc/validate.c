/* The whole-structure validator (sp__alloc_validate) and the lock-everything helpers it shares with
 * the snapshot.
 *
 * Owns no state. Checks, with every allocator lock held (rank order of src/core/lock.h: stream
 * caches by index, pending, segment list, each segment in list order under it) except the peak
 * lock (not needed) and the map shards' (the map's membership, chains and counts change only
 * under a stream cache lock too, so holding every cache lock freezes them; locking 4096 shards
 * per check made the fuzz target's per-operation validation 16 times slower): blocks tile each
 * segment; each block is in exactly one state and, for it, in exactly one place (LIVE: the map;
 * CACHED: its stream's bins of its segment's pool, in the right bin; PENDING: the pending list;
 * LIVE with front set counts as cached on its stream: in the map, claimed, in that front once);
 * no two neighbours are CACHED on the same stream; no LIVE or PENDING block lies on a decommitted
 * page unless it is a LIVE block just taken whose pages are being committed (commit.c); the bins',
 * map's and list's counts and the counters (live bytes per stream, reserved: segment bytes less
 * decommitted pages) equal what the walk found.
 */
#include "alloc/alloc_internal.h"

#include <inttypes.h>

#include "core/status.h"

void sp__alloc_lock_all(sp__allocator *a) {
  for (unsigned i = 0; i < a->n_streams; i++) sp__spin_lock(&a->caches[i].mu);
  sp__spin_lock(&a->pending_mu);
  sp__spin_lock(&a->seglist_mu);
  for (sp__segment *seg = a->segments; seg; seg = seg->next) sp__spin_lock(&seg->mu);
}

void sp__alloc_unlock_all(sp__allocator *a) {
  for (sp__segment *seg = a->segments; seg; seg = seg->next) sp__spin_unlock(&seg->mu);
  sp__spin_unlock(&a->seglist_mu);
  sp__spin_unlock(&a->pending_mu);
  for (unsigned i = a->n_streams; i-- > 0;) sp__spin_unlock(&a->caches[i].mu);
}

/* What the segment walk found. */
typedef struct validate_tally {
  size_t live_bytes[SP_STREAMS_MAX], cached_bytes[SP_STREAMS_MAX][SP__POOLS];
  size_t cached_count[SP_STREAMS_MAX][SP__POOLS];
  size_t front_bytes[SP_STREAMS_MAX], front_count[SP_STREAMS_MAX];
  size_t live_count, pending_count, reserved, segments;
} validate_tally;

#define VFAIL(...) return sp__fail(SP_ERR_INVALID_HANDLE, "sp__alloc_validate: " __VA_ARGS__)

static sp_status validate_block(sp__allocator *a, const sp__segment *seg, const sp__block *b,
                                validate_tally *t) {
  if (b->seg != seg) VFAIL("block %p names another segment", (void *)b->ptr);
  if (b->stream >= a->n_streams) VFAIL("block %p has stream %u", (void *)b->ptr, b->stream);
  if (b->bytes == 0 || b->bytes % SP__ALLOC_ROUND)
    VFAIL("block %p has size %zu", (void *)b->ptr, b->bytes);
  switch (b->state) {
  case SP__BLOCK_LIVE: {
    sp__map_shard *sh = sp__ptrmap_shard(&a->map, b->ptr);
    if (sp__ptrmap_find(sh, b->ptr) != b) VFAIL("live block %p is not in the map", (void *)b->ptr);
    t->live_count++;
    if (!b->front) {
      t->live_bytes[b->stream] += b->bytes;
      break;
    }
    if (!atomic_load_explicit(&b->claimed, memory_order_relaxed))
      VFAIL("front-cached block %p is not claimed", (void *)b->ptr);
    t->front_bytes[b->stream] += b->bytes;
    t->front_count[b->stream]++;
    break;
  }
  case SP__BLOCK_CACHED:
    if (b->bin != sp__size_bin(b->bytes))
      VFAIL("cached block %p in bin %u", (void *)b->ptr, b->bin);
    t->cached_bytes[b->stream][seg->pool] += b->bytes;
    t->cached_count[b->stream][seg->pool]++;
    if (b->next && b->next->state == SP__BLOCK_CACHED && b->next->stream == b->stream)
      VFAIL("neighbours %p and %p both cached on stream %u", (void *)b->ptr, (void *)b->next->ptr,
            b->stream);
    break;
  case SP__BLOCK_PENDING:
    if (!b->n_events) VFAIL("pending block %p has no events", (void *)b->ptr);
    t->pending_count++;
    break;
  default: VFAIL("block %p has state %d", (void *)b->ptr, (int)b->state);
  }
  return SP_OK;
}

static sp_status validate_segment(sp__allocator *a, const sp__segment *seg, validate_tally *t) {
  const char *at = seg->base;
  const sp__block *prev = NULL;
  for (const sp__block *b = seg->first; b; prev = b, b = b->next) {
    if (b->ptr != at)
      VFAIL("segment %p: block at %p, expected %p", (void *)seg->base, (void *)b->ptr, (void *)at);
    if (b->prev != prev)
      VFAIL("segment %p: block %p has a wrong prev", (void *)seg->base, (void *)b->ptr);
    sp_status st = validate_block(a, seg, b, t);
    if (st != SP_OK) return st;
    if (b->state != SP__BLOCK_CACHED && !(b->state == SP__BLOCK_LIVE && b->commit) &&
        sp__pages_gone_in(seg, (size_t)(b->ptr - seg->base), b->bytes))
      VFAIL("segment %p: %s block at %p lies on decommitted pages", (void *)seg->base,
            b->state == SP__BLOCK_LIVE ? "a live" : "a pending", (void *)b->ptr);
    at += b->bytes;
  }
  size_t gone = 0;
  for (size_t w = 0; seg->gone && w < (seg->bytes / SP__MEM_PAGE + 63) / 64; w++)
    gone += (size_t)__builtin_popcountll(seg->gone[w]);
  if (gone != seg->n_gone)
    VFAIL("segment %p: %zu decommitted pages marked, %zu counted", (void *)seg->base, gone,
          seg->n_gone);
  if (at != seg->base + seg->bytes)
    VFAIL("segment %p: blocks cover %zu of %zu bytes", (void *)seg->base, (size_t)(at - seg->base),
          seg->bytes);
  t->reserved += seg->bytes - seg->n_gone * SP__MEM_PAGE;
  t->segments++;
  return SP_OK;
}

static sp_status validate_bins(sp__allocator *a, unsigned s, unsigned pool,
                               const validate_tally *t) {
  const sp__bins *bins = &a->caches[s].bins[pool];
  size_t count = 0, bytes = 0;
  for (unsigned bin = 0; bin < SP__BINS; bin++) {
    bool bit = (bins->nonempty[bin / 64] >> (bin % 64)) & 1u;
    if (bit != (bins->heads[bin] != NULL)) VFAIL("stream %u bin %u: bitmap bit wrong", s, bin);
    for (const sp__block *b = bins->heads[bin]; b; b = b->link_next) {
      if (b->state != SP__BLOCK_CACHED || b->stream != s || b->bin != bin || b->seg->pool != pool)
        VFAIL("stream %u bin %u holds block %p (state %d, stream %u, bin %u)", s, bin,
              (void *)b->ptr, (int)b->state, b->stream, b->bin);
      count++;
      bytes += b->bytes;
    }
  }
  if (count != bins->count || bytes != bins->bytes || count != t->cached_count[s][pool] ||
      bytes != t->cached_bytes[s][pool] ||
      bytes != atomic_load_explicit(&a->caches[s].cached_bytes[pool], memory_order_relaxed))
    VFAIL(
        "stream %u pool %u: bins hold %zu blocks / %zu bytes, counted %zu / %zu, segments "
        "have %zu / %zu",
        s, pool, count, bytes, bins->count, bins->bytes, t->cached_count[s][pool],
        t->cached_bytes[s][pool]);
  return SP_OK;
}

/* Stream s's front holds exactly the front-cached blocks the walk found for s, each once. */
static sp_status validate_front(sp__allocator *a, unsigned s, const validate_tally *t) {
  const sp__scache *c = &a->caches[s];
  size_t bytes = 0;
  if (c->n_front > SP__FRONT_MAX) VFAIL("stream %u: %u front blocks", s, c->n_front);
  for (unsigned i = 0; i < c->n_front; i++) {
    const sp__block *b = c->front[i];
    if (b->state != SP__BLOCK_LIVE || !b->front || b->stream != s || b->bytes != c->front_size[i])
      VFAIL("stream %u front %u: block %p (state %d, front %d, stream %u, %zu bytes, listed %zu)",
            s, i, (void *)b->ptr, (int)b->state, (int)b->front, b->stream, b->bytes,
            c->front_size[i]);
    bytes += b->bytes;
  }
  if (c->n_front != t->front_count[s] || bytes != t->front_bytes[s] ||
      bytes != atomic_load_explicit(&c->front_bytes, memory_order_relaxed) ||
      bytes > SP__FRONT_BYTES_MAX)
    VFAIL("stream %u front: %u blocks / %zu bytes (counter %zu), segments have %zu / %zu", s,
          c->n_front, bytes, atomic_load_explicit(&c->front_bytes, memory_order_relaxed),
          t->front_count[s], t->front_bytes[s]);
  return SP_OK;
}

/* The segment index (range.c) holds exactly the linked segments, sorted and not overlapping. */
static sp_status validate_index(sp__allocator *a) {
  size_t n = atomic_load_explicit(&a->index.count, memory_order_relaxed);
  if (n != a->n_segments) VFAIL("segment index holds %zu entries, %zu segments", n, a->n_segments);
  sp__seg_array *arr = atomic_load_explicit(&a->index.array, memory_order_relaxed);
  uintptr_t end = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t base = atomic_load_explicit(&arr->e[i].base, memory_order_relaxed);
    size_t bytes = atomic_load_explicit(&arr->e[i].bytes, memory_order_relaxed);
    const sp__segment *seg = atomic_load_explicit(&arr->e[i].seg, memory_order_relaxed);
    if (base < end) VFAIL("segment index entry %zu at %p overlaps the one before", i, (void *)base);
    if (!seg->linked || (uintptr_t)seg->base != base || seg->bytes != bytes)
      VFAIL("segment index entry %zu (%p, %zu bytes) is not its linked segment", i, (void *)base,
            bytes);
    end = base + bytes;
  }
  return SP_OK;
}

static sp_status validate_totals(sp__allocator *a, const validate_tally *t) {
  for (unsigned s = 0; s < a->n_streams; s++) {
    sp_status fst = validate_front(a, s, t);
    if (fst != SP_OK) return fst;
    size_t live = atomic_load_explicit(&a->caches[s].live_bytes, memory_order_relaxed);
    if (live != t->live_bytes[s])
      VFAIL("stream %u: live_bytes %zu, live blocks hold %zu", s, live, t->live_bytes[s]);
    for (unsigned pool = 0; pool < SP__POOLS; pool++) {
      sp_status st = validate_bins(a, s, pool, t);
      if (st != SP_OK) return st;
    }
  }
  size_t pending = 0;
  for (const sp__block *b = a->pending; b; b = b->link_next) {
    if (b->state != SP__BLOCK_PENDING)
      VFAIL("pending list holds block %p in state %d", (void *)b->ptr, (int)b->state);
    pending++;
  }
  if (pending != a->pending_count || pending != t->pending_count)
    VFAIL("pending: list %zu, count %zu, segments %zu", pending, a->pending_count,
          t->pending_count);
  size_t mapped = 0;
  for (unsigned i = 0; i < SP__MAP_SHARDS; i++) mapped += a->map.shards[i].count;
  if (mapped != t->live_count) VFAIL("map holds %zu blocks, %zu are live", mapped, t->live_count);
  if (t->reserved + a->decommitting != a->reserved || t->segments != a->n_segments)
    VFAIL("reserved %zu in %zu segments, counted %zu (+%zu being decommitted) in %zu", a->reserved,
          a->n_segments, t->reserved, a->decommitting, t->segments);
  return validate_index(a);
}

sp_status sp__alloc_validate(sp__allocator *a) {
  if (!a) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp__alloc_validate: allocator is NULL");
  validate_tally *t = sp__calloc(1, sizeof(*t));
  if (!t) return sp__fail(SP_ERR_HOST_MEMORY, "sp__alloc_validate: no host memory");
  sp__alloc_lock_all(a);
  sp_status st = SP_OK;
  for (sp__segment *seg = a->segments; seg && st == SP_OK; seg = seg->next)
    st = validate_segment(a, seg, t);
  if (st == SP_OK) st = validate_totals(a, t);
  sp__alloc_unlock_all(a);
  sp__free(t);
  return st;
}

enum { SP__VALIDATE_EVERY = 64 };
static _Thread_local unsigned validate_tl_ops;

void sp__alloc_debug_check(sp__allocator *a, unsigned s) {
  (void)s;
  if (sp__debug_level() < 2) return;
  if (++validate_tl_ops % SP__VALIDATE_EVERY) return;
  sp_status st = sp__alloc_validate(a);
  if (st == SP_ERR_HOST_MEMORY) return; /* no room for the tally: not checked, not invalid */
  if (st != SP_OK) sp__log(SP_LOG_ERROR, "%s", sp_last_error());
  sp_assert(st == SP_OK);
}
