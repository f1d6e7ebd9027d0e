/* Device ranges: which memory is this device's, and whether a range lies inside one live block.
 *
 * Owns the segment index: every linked segment's [base, base + bytes) in an array sorted by base,
 * written only under the segment list lock (3.3) and read without any lock through a sequence
 * counter (odd while a writer is at it; a reader whose counter changed looks again). Entries are
 * atomics, so a reader racing a writer reads stale values, never torn ones, and discards them.
 * The array grows by doubling; old arrays stay allocated until the allocator is destroyed (their
 * sizes sum to less than the current one), so a reader never touches freed memory. Segment
 * structs are never freed while the allocator lives either (segment.c recycles them), so a
 * reader may lock the segment it found and then check, under its lock, that it is still the
 * linked segment at that base.
 *
 * A range check: the index says whether [p, p + n) touches this device's memory (a lock-free
 * binary search). Outside every segment it is host memory. Inside one: at a block's start the
 * pointer map finds the block (one shard lock, as sp_free); elsewhere the segment's lock is held
 * while its blocks are walked in address order. The range is good when it lies inside one LIVE
 * block that no sp_free has claimed (a front-cached block is free to its owner, so it counts as
 * freed here).
 */
#include "alloc/alloc_internal.h"

#include "core/status.h"

/* ---- the index (writers hold seglist_mu) ---- */

static void index_write_begin(sp__seg_index *x) {
  unsigned s = atomic_load_explicit(&x->seq, memory_order_relaxed);
  atomic_store_explicit(&x->seq, s + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
}

static void index_write_end(sp__seg_index *x) {
  unsigned s = atomic_load_explicit(&x->seq, memory_order_relaxed);
  atomic_store_explicit(&x->seq, s + 1, memory_order_release);
}

static size_t index_lower_bound(sp__seg_entry *e, size_t n, uintptr_t p) { /* first base > p */
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (atomic_load_explicit(&e[mid].base, memory_order_relaxed) <= p) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

bool sp__seg_index_reserve(sp__allocator *a) {
  sp__seg_index *x = &a->index;
  size_t n = atomic_load_explicit(&x->count, memory_order_relaxed);
  if (n + x->promised < x->cap) {
    x->promised++;
    return true;
  }
  size_t cap = x->cap ? 2 * x->cap : 16;
  sp__seg_array *na = sp__calloc(1, sizeof(*na) + cap * sizeof(na->e[0]));
  if (!na) return false;
  sp__seg_array *old = atomic_load_explicit(&x->array, memory_order_relaxed);
  for (size_t i = 0; i < n; i++) {
    atomic_init(&na->e[i].base, atomic_load_explicit(&old->e[i].base, memory_order_relaxed));
    atomic_init(&na->e[i].bytes, atomic_load_explicit(&old->e[i].bytes, memory_order_relaxed));
    atomic_init(&na->e[i].seg, atomic_load_explicit(&old->e[i].seg, memory_order_relaxed));
  }
  na->older = old;
  x->cap = cap;
  x->promised++;
  atomic_store_explicit(&x->array, na, memory_order_release); /* same contents: no seq bump */
  return true;
}

void sp__seg_index_insert(sp__allocator *a, sp__segment *seg) {
  sp__seg_index *x = &a->index;
  size_t n = atomic_load_explicit(&x->count, memory_order_relaxed);
  sp_assert(n < x->cap && x->promised > 0);
  x->promised--;
  sp__seg_entry *e = atomic_load_explicit(&x->array, memory_order_relaxed)->e;
  size_t at = index_lower_bound(e, n, (uintptr_t)seg->base);
  index_write_begin(x);
  for (size_t i = n; i > at; i--) {
    atomic_store_explicit(&e[i].base, atomic_load_explicit(&e[i - 1].base, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&e[i].bytes, atomic_load_explicit(&e[i - 1].bytes, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&e[i].seg, atomic_load_explicit(&e[i - 1].seg, memory_order_relaxed),
                          memory_order_relaxed);
  }
  atomic_store_explicit(&e[at].base, (uintptr_t)seg->base, memory_order_relaxed);
  atomic_store_explicit(&e[at].bytes, seg->bytes, memory_order_relaxed);
  atomic_store_explicit(&e[at].seg, seg, memory_order_relaxed);
  atomic_store_explicit(&x->count, n + 1, memory_order_relaxed);
  index_write_end(x);
}

void sp__seg_index_unreserve(sp__allocator *a) { a->index.promised--; }

void sp__seg_index_remove(sp__allocator *a, sp__segment *seg) {
  sp__seg_index *x = &a->index;
  size_t n = atomic_load_explicit(&x->count, memory_order_relaxed);
  sp__seg_entry *e = atomic_load_explicit(&x->array, memory_order_relaxed)->e;
  size_t at = index_lower_bound(e, n, (uintptr_t)seg->base);
  sp_assert(at > 0 && atomic_load_explicit(&e[at - 1].seg, memory_order_relaxed) == seg);
  if (at == 0) return;
  index_write_begin(x);
  for (size_t i = at - 1; i + 1 < n; i++) {
    atomic_store_explicit(&e[i].base, atomic_load_explicit(&e[i + 1].base, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&e[i].bytes, atomic_load_explicit(&e[i + 1].bytes, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&e[i].seg, atomic_load_explicit(&e[i + 1].seg, memory_order_relaxed),
                          memory_order_relaxed);
  }
  atomic_store_explicit(&x->count, n - 1, memory_order_relaxed);
  index_write_end(x);
}

void sp__seg_index_destroy(sp__allocator *a) {
  for (sp__seg_array *arr = atomic_load_explicit(&a->index.array, memory_order_relaxed), *older;
       arr; arr = older) {
    older = arr->older;
    sp__free(arr);
  }
}

/* What the index says about [p, end): the segment containing p (*seg, with its base and bytes
 * as indexed), or none and the lowest segment base above p (*next_base, UINTPTR_MAX: none). */
typedef struct range_hit {
  sp__segment *seg;
  uintptr_t base, next_base;
  size_t bytes;
} range_hit;

static range_hit index_find(sp__allocator *a, uintptr_t p) {
  sp__seg_index *x = &a->index;
  for (;;) {
    unsigned s1 = atomic_load_explicit(&x->seq, memory_order_acquire);
    range_hit h = {.next_base = UINTPTR_MAX};
    if (!(s1 & 1u)) {
      sp__seg_array *arr = atomic_load_explicit(&x->array, memory_order_acquire);
      size_t n = arr ? atomic_load_explicit(&x->count, memory_order_relaxed) : 0;
      size_t at = n ? index_lower_bound(arr->e, n, p) : 0;
      if (at < n) h.next_base = atomic_load_explicit(&arr->e[at].base, memory_order_relaxed);
      if (at > 0) {
        sp__seg_entry *e = &arr->e[at - 1];
        h.base = atomic_load_explicit(&e->base, memory_order_relaxed);
        h.bytes = atomic_load_explicit(&e->bytes, memory_order_relaxed);
        if (p - h.base < h.bytes) h.seg = atomic_load_explicit(&e->seg, memory_order_relaxed);
      }
    }
    atomic_thread_fence(memory_order_acquire);
    if (!(s1 & 1u) && atomic_load_explicit(&x->seq, memory_order_relaxed) == s1) return h;
    sched_yield();
  }
}

/* ---- the check ---- */

/* The block of seg holding p, checked under seg's lock: its start and bytes and whether it is
 * live. false when seg is no longer the segment at `base` (released meanwhile: look again). */
static bool range_in_segment(sp__segment *seg, uintptr_t base, uintptr_t p, uintptr_t *blk_ptr,
                             size_t *blk_bytes, bool *live) {
  sp__spin_lock(&seg->mu);
  bool same = seg->linked && (uintptr_t)seg->base == base && p - base < seg->bytes;
  if (same) {
    const sp__block *b = seg->first;
    while (b && (uintptr_t)b->ptr + b->bytes <= p) b = b->next;
    sp_assert(b && (uintptr_t)b->ptr <= p);
    *blk_ptr = b ? (uintptr_t)b->ptr : p;
    *blk_bytes = b ? b->bytes : 0;
    *live =
        b && b->state == SP__BLOCK_LIVE && !atomic_load_explicit(&b->claimed, memory_order_acquire);
  }
  sp__spin_unlock(&seg->mu);
  return same;
}

/* At a block's start: the pointer map (as sp_free). false when p starts no mapped block. */
static bool range_at_start(sp__allocator *a, const void *p, size_t *blk_bytes, bool *live) {
  sp__map_shard *sh = sp__ptrmap_shard(&a->map, p);
  sp__spin_lock(&sh->mu);
  const sp__block *b = sp__ptrmap_find(sh, p);
  if (b) {
    *blk_bytes = b->bytes;
    *live = !atomic_load_explicit(&b->claimed, memory_order_acquire);
  }
  sp__spin_unlock(&sh->mu);
  return b != NULL;
}

/* The verdict on [p, p + n) inside the block at blk_ptr (blk_bytes, live or not). */
static sp_status range_verdict(uintptr_t p, size_t n, uintptr_t blk_ptr, size_t blk_bytes,
                               bool live, const char *fn, const char *what) {
  if (!live)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s %p is in a freed block of this device "
                    "(block %p, %zu bytes)",
                    fn, what, (void *)p, (void *)blk_ptr, blk_bytes);
  if (p + n > blk_ptr + blk_bytes)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s %p + %zu bytes passes the end of its "
                    "block (%zu bytes at %p) by %zu bytes",
                    fn, what, (void *)p, n, blk_bytes, (void *)blk_ptr,
                    (size_t)(p + n - blk_ptr - blk_bytes));
  return SP_OK;
}

sp_status sp__alloc_range(sp__allocator *a, const void *ptr, size_t n, bool device_first,
                          const char *fn, const char *what, bool *is_device) {
  uintptr_t p = (uintptr_t)ptr;
  if (n > UINTPTR_MAX - p)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s %p + %zu bytes wraps around the address "
                    "space",
                    fn, what, ptr, n);
  size_t blk_bytes = 0;
  bool live = false;
  if (device_first && range_at_start(a, ptr, &blk_bytes, &live)) { /* the usual case: no index */
    *is_device = true;
    return range_verdict(p, n, p, blk_bytes, live, fn, what);
  }
  for (;;) {
    range_hit h = index_find(a, p);
    if (!h.seg) {
      if (h.next_base < p + n)
        return sp__fail(SP_ERR_INVALID_ARGUMENT,
                        "%s: %s %p + %zu bytes runs from host memory "
                        "into device memory at %p",
                        fn, what, ptr, n, (void *)h.next_base);
      *is_device = false;
      return SP_OK;
    }
    uintptr_t blk_ptr = p;
    if (!(!device_first && range_at_start(a, ptr, &blk_bytes, &live)) &&
        !range_in_segment(h.seg, h.base, p, &blk_ptr, &blk_bytes, &live))
      continue; /* its segment was released meanwhile */
    *is_device = true;
    return range_verdict(p, n, blk_ptr, blk_bytes, live, fn, what);
  }
}

bool sp__alloc_touches(sp__allocator *a, const void *ptr, size_t n) {
  uintptr_t p = (uintptr_t)ptr;
  uintptr_t end = n > UINTPTR_MAX - p ? UINTPTR_MAX : p + n;
  range_hit h = index_find(a, p);
  return h.seg != NULL || h.next_base < end;
}
