/* Block splitting and merging, and the size bins of free blocks.
 *
 * Owns nothing: these are the pure data-structure steps the allocator composes. Invariants kept
 * here: blocks of a segment tile it (prev->ptr + prev->bytes == ptr); a bin's bitmap bit is set
 * exactly when its list is non-empty; bins.bytes/count are the sums of the lists. Locking: the
 * caller holds the segment lock (split, absorb) or the stream cache lock (bins), as block.h says.
 */
#include "alloc/block.h"

#include "core/status.h"

void *sp__aligned_calloc(size_t count, size_t bytes) {
  if (bytes && count > (SIZE_MAX - 128) / bytes) return NULL;
  char *raw = sp__calloc(1, count * bytes + 64 + sizeof(void *));
  if (!raw) return NULL;
  uintptr_t at = ((uintptr_t)(raw + sizeof(void *)) + 63u) & ~(uintptr_t)63u;
  ((void **)at)[-1] = raw;
  return (void *)at;
}

void sp__aligned_free(void *p) {
  if (p) sp__free(((void **)p)[-1]);
}

void sp__bins_insert(sp__bins *b, sp__block *blk) {
  unsigned bin = sp__size_bin(blk->bytes);
  sp_assert(bin < SP__BINS && blk->state == SP__BLOCK_CACHED);
  blk->bin = bin;
  blk->link_prev = NULL;
  blk->link_next = b->heads[bin];
  if (blk->link_next) blk->link_next->link_prev = blk;
  b->heads[bin] = blk;
  b->nonempty[bin / 64] |= 1ull << (bin % 64);
  b->bytes += blk->bytes;
  b->count++;
}

void sp__bins_remove(sp__bins *b, sp__block *blk) {
  unsigned bin = blk->bin;
  sp_assert(b->count > 0 && b->bytes >= blk->bytes);
  if (blk->link_prev) blk->link_prev->link_next = blk->link_next;
  else b->heads[bin] = blk->link_next;
  if (blk->link_next) blk->link_next->link_prev = blk->link_prev;
  if (!b->heads[bin]) b->nonempty[bin / 64] &= ~(1ull << (bin % 64));
  blk->link_prev = blk->link_next = NULL;
  b->bytes -= blk->bytes;
  b->count--;
}

enum { SP__BIN_SCAN = 16 }; /* blocks looked at per bin before moving up */

/* Whether blk may serve a request of `bytes`: a block of a segment made for one huge request is
 * not cut down for a much smaller one (at most 1/8 of it left over), so the segment goes back to
 * the backend whole once free instead of being pinned by a small tenant. */
static inline bool bins_fit(const sp__block *blk, size_t bytes, uint64_t max_stamp) {
  if (blk->bytes < bytes || blk->stamp > max_stamp) return false;
  return blk->seg->bytes <= SP__LARGE_SEGMENT || blk->bytes - bytes <= blk->bytes / 8;
}

/* The smallest fitting block among the first SP__BIN_SCAN of one bin's list. */
static sp__block *bins_scan(sp__block *blk, size_t bytes, uint64_t max_stamp) {
  sp__block *best = NULL;
  for (unsigned n = 0; blk && n < SP__BIN_SCAN; blk = blk->link_next, n++) {
    if (!bins_fit(blk, bytes, max_stamp)) continue;
    if (!best || blk->bytes < best->bytes) best = blk;
    if (best->bytes == bytes) break;
  }
  return best;
}

/* The next bin >= from whose bitmap bit is set, or SP__BINS. */
static unsigned bins_next(const sp__bins *b, unsigned from) {
  for (unsigned w = from / 64; w < SP__BIN_WORDS; w++) {
    uint64_t bits = b->nonempty[w];
    if (w == from / 64) bits &= ~0ull << (from % 64);
    if (bits) return w * 64 + (unsigned)__builtin_ctzll(bits);
  }
  return SP__BINS;
}

sp__block *sp__bins_find(const sp__bins *b, size_t bytes, uint64_t max_stamp) {
  if (b->bytes < bytes) return NULL;
  for (unsigned bin = bins_next(b, sp__size_bin(bytes)); bin < SP__BINS;
       bin = bins_next(b, bin + 1)) {
    sp__block *blk = bins_scan(b->heads[bin], bytes, max_stamp);
    if (blk) return blk;
  }
  return NULL;
}

void sp__block_split(sp__block *blk, size_t bytes, sp__block *rest) {
  sp_assert(bytes < blk->bytes && bytes % SP__ALLOC_ROUND == 0);
  *rest = (sp__block){.ptr = blk->ptr + bytes,
                      .bytes = blk->bytes - bytes,
                      .seg = blk->seg,
                      .prev = blk,
                      .next = blk->next,
                      .stamp = blk->stamp,
                      .stream = blk->stream,
                      .state = blk->state};
  if (blk->next) blk->next->prev = rest;
  blk->next = rest;
  blk->bytes = bytes;
}

sp__block *sp__block_absorb_next(sp__block *blk) {
  sp__block *n = blk->next;
  sp_assert(n && blk->ptr + blk->bytes == n->ptr);
  blk->bytes += n->bytes;
  blk->next = n->next;
  if (n->next) n->next->prev = blk;
  if (n->stamp > blk->stamp) blk->stamp = n->stamp;
  return n;
}
