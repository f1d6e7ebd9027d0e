/* Pointer -> LIVE block map of one allocator (internal).
 *
 * SP__MAP_SHARDS shards, each a chained hash table (chains through sp__block.map_next) under its
 * own spinlock (rank 5). The shard is chosen by a hash of the pointer's 512 B unit, so each block
 * has its own shard unless hashes collide: threads whose blocks share a segment or a 2 MiB region
 * (cross-stream reuse puts them there) still rarely touch the same shard's cache line (measured:
 * 2 threads on a shared segment went from 0.5 to 0.85 of linear); no global lock on sp_free's
 * lookup. 4096 shards (256 KiB per device): with 16 threads holding ~8-16 hot blocks each, 256
 * shards put about a third of the blocks in a shard another thread also locks on every free; 4096
 * about 3%.
 * Insertion never fails: when growing the table finds no host memory the chains just get longer.
 */
#ifndef SP_ALLOC_PTRMAP_H
#define SP_ALLOC_PTRMAP_H

#include "alloc/block.h"

enum { SP__MAP_SHARDS = 4096 };

typedef struct sp__map_shard {
  _Alignas(64) sp__spin mu; /* rank 5; one cache line per shard                    */
  unsigned log2;           /* buckets = 1 << log2; mu                              */
  size_t count;            /* blocks in the shard; mu                              */
  sp__block **buckets;     /* mu; points at `one` until the first growth           */
  sp__block *one;          /* the initial single bucket                            */
} sp__map_shard;

typedef struct sp__ptrmap {
  sp__map_shard shards[SP__MAP_SHARDS];
} sp__ptrmap;

void sp__ptrmap_init(sp__ptrmap *m);
void sp__ptrmap_destroy(sp__ptrmap *m); /* frees the tables, not the blocks */

/* The shard holding p; lock it around the calls below. */
sp__map_shard *sp__ptrmap_shard(sp__ptrmap *m, const void *p);
/* Shard lock held. */
void sp__ptrmap_insert(sp__map_shard *sh, sp__block *blk);
sp__block *sp__ptrmap_find(sp__map_shard *sh, const void *p);
void sp__ptrmap_remove(sp__map_shard *sh, sp__block *blk);

#endif /* SP_ALLOC_PTRMAP_H */
