/* Pointer -> LIVE block map of one allocator (internal).
 *
 * SP__MAP_SHARDS shards, each a chained hash table (chains through sp__block.map_next) under its
 * own spinlock (SP__RANK_ALLOC_MAP_SHARD), one cache line each. The shard is a group of
 * SP__MAP_GROUP lines chosen by a hash of the pointer's 2 MiB region, and in it the line of the
 * pointer's 512 B unit mod 16.
 * Why both: a thread working on its own stream keeps its own segments, so the shards of its
 * regions stay in its core's cache (hashing every 512 B unit over all shards made each thread
 * touch every shard line over time: with 16 threads nearly every map access was a miss to another
 * core; bench/alloc's mix rows stopped at about half of linear); threads whose blocks do share a
 * segment or region (cross-stream reuse) still spread over 16 lines (measured earlier with the
 * per-unit hash: 2 threads on a shared segment went from 0.5 to 0.85 of linear with spreading).
 * No global lock on sp_free's lookup. 4096 shards (256 groups; 256 KiB per device). Insertions
 * and removals also hold a stream cache lock (the block's), so a holder of every cache lock (the
 * validator) may read the map without the shard locks.
 * Insertion never fails: when growing the table finds no host memory the chains just get longer.
 */
#ifndef SP_ALLOC_PTRMAP_H
#define SP_ALLOC_PTRMAP_H

#include "alloc/block.h"

enum { SP__MAP_SHARDS = 4096, SP__MAP_GROUP = 16 };

typedef struct sp__map_shard {
  _Alignas(64) sp__spin mu; /* SP__RANK_ALLOC_MAP_SHARD; one cache line per shard  */
  unsigned log2;            /* buckets = 1 << log2; mu                              */
  size_t count;             /* blocks in the shard; mu                              */
  sp__block **buckets;      /* mu; points at `one` until the first growth           */
  sp__block *one;           /* the initial single bucket                            */
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
