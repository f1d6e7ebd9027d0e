/* The sharded pointer map of LIVE blocks (see ptrmap.h for the layout and why).
 *
 * Owns each shard's bucket array. Invariants: a block is in the map exactly while it is LIVE, in
 * the shard sp__ptrmap_shard(ptr) and the bucket of its hash; shard.count is its chain lengths'
 * sum. Locking: every function but init/destroy/shard runs under the shard's spinlock; growth
 * allocates host memory under it (never a backend call).
 */
#include "alloc/ptrmap.h"

#include <string.h>

#include "core/status.h"

static inline uint64_t map_mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

void sp__ptrmap_init(sp__ptrmap *m) {
  memset(m, 0, sizeof(*m));
  for (unsigned i = 0; i < SP__MAP_SHARDS; i++) {
    sp__spin_init(&m->shards[i].mu, SP__RANK_ALLOC_MAP_SHARD);
    m->shards[i].buckets = &m->shards[i].one;
  }
}

void sp__ptrmap_destroy(sp__ptrmap *m) {
  for (unsigned i = 0; i < SP__MAP_SHARDS; i++) {
    sp__map_shard *sh = &m->shards[i];
    if (sh->buckets != &sh->one) sp__free(sh->buckets);
    sh->buckets = &sh->one;
    sh->one = NULL;
    sh->log2 = 0;
    sh->count = 0;
  }
}

sp__map_shard *sp__ptrmap_shard(sp__ptrmap *m, const void *p) {
  uint64_t at = (uint64_t)(uintptr_t)p;
  uint64_t group = map_mix(at >> 21) % (SP__MAP_SHARDS / SP__MAP_GROUP);
  return &m->shards[group * SP__MAP_GROUP + ((at >> 9) & (SP__MAP_GROUP - 1))];
}

static inline size_t map_bucket(const sp__map_shard *sh, const void *p) {
  return (size_t)(map_mix((uint64_t)(uintptr_t)p >> 9) & ((1ull << sh->log2) - 1));
}

/* Doubles the bucket array; on no host memory keeps the old one. */
static void map_grow(sp__map_shard *sh) {
  unsigned log2 = sh->log2 + (sh->log2 ? 1u : 4u);
  sp__block **nb = sp__calloc((size_t)1 << log2, sizeof(*nb));
  if (!nb) return;
  sp__block **old = sh->buckets;
  size_t n_old = (size_t)1 << sh->log2;
  sh->buckets = nb;
  sh->log2 = log2;
  for (size_t i = 0; i < n_old; i++) {
    for (sp__block *b = old[i], *next; b; b = next) {
      next = b->map_next;
      size_t k = map_bucket(sh, b->ptr);
      b->map_next = nb[k];
      nb[k] = b;
    }
  }
  if (old != &sh->one) sp__free(old);
}

void sp__ptrmap_insert(sp__map_shard *sh, sp__block *blk) {
  if (sh->count >= ((size_t)2 << sh->log2)) map_grow(sh);
  size_t k = map_bucket(sh, blk->ptr);
  blk->map_next = sh->buckets[k];
  sh->buckets[k] = blk;
  sh->count++;
}

sp__block *sp__ptrmap_find(sp__map_shard *sh, const void *p) {
  for (sp__block *b = sh->buckets[map_bucket(sh, p)]; b; b = b->map_next)
    if (b->ptr == p) return b;
  return NULL;
}

void sp__ptrmap_remove(sp__map_shard *sh, sp__block *blk) {
  sp__block **pp = &sh->buckets[map_bucket(sh, blk->ptr)];
  while (*pp && *pp != blk) pp = &(*pp)->map_next;
  sp_assert(*pp == blk);
  if (!*pp) return;
  *pp = blk->map_next;
  blk->map_next = NULL;
  sh->count--;
}
