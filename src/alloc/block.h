/* Segments, blocks and free-block bins of the caching allocator (internal).
 *
 * A segment is one backend allocation. Its blocks tile it in address order (prev/next), each in
 * exactly one state: LIVE (handed to the user, in the pointer map), CACHED (free, in the bins of
 * stream `stream`) or PENDING (free, in the pending list until the events of the other streams
 * that used it complete). Two address neighbours CACHED on the same stream are always merged.
 * A LIVE block with `front` set is free, held whole in the front cache of stream `stream`
 * (front.c): for everything but the segment walk it counts as cached on that stream.
 * A segment's whole pages (SP__MEM_PAGE) inside CACHED blocks may be decommitted (commit.c): the
 * backend has their memory back, the addresses stay; a block over such pages is committed again
 * before sp_alloc hands it out, so every LIVE block handed out lies on committed pages.
 *
 * Locking (ranks in alloc_internal.h): a block's prev/next/bytes/state/stream change only under its
 * segment's lock; a CACHED block's bin links under its stream cache's lock; a LIVE block's extra
 * set under its pointer-map shard's lock; claimed is set under that lock and cleared by a front
 * pop under the stream cache lock (hence atomic); front under the stream cache lock. The functions
 * here take no lock: the caller holds what each one names.
 */
#ifndef SP_ALLOC_BLOCK_H
#define SP_ALLOC_BLOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/size_class.h"
#include "alloc/spin.h"
#include "streampool.h"

typedef enum sp__block_state {
  SP__BLOCK_LIVE = 1,
  SP__BLOCK_CACHED = 2,
  SP__BLOCK_PENDING = 3,
} sp__block_state;

typedef struct sp__segment sp__segment;

/* Block and segment structs are 64-byte aligned and padded (allocated with sp__aligned_calloc):
 * each thread writes its own streams' structs on every operation, and structs of different
 * threads sharing a cache line (malloc packs them; a thread's arena can be another's old one)
 * made the segment lock and block fields of two threads on their own streams bounce. */
typedef struct sp__block {
  _Alignas(64) char *ptr;        /* first byte; immutable while the block exists           */
  size_t bytes;                  /* multiple of 512; segment lock                           */
  sp__segment *seg;              /* immutable                                               */
  struct sp__block *prev, *next; /* address neighbours in seg; segment lock        */
  struct sp__block *link_prev, *link_next; /* bin list (CACHED) or pending list (PENDING)  */
  struct sp__block *map_next; /* pointer-map chain while LIVE; shard lock                */
  uint64_t stamp;             /* CACHED: its stream's free_seq when it was cached        */
  uint64_t extra[2];          /* LIVE: streams recorded with sp_record_stream; shard lock */
  sp_event *events;           /* PENDING: events recorded on the extra streams (owned)   */
  unsigned n_events;          /* PENDING: entries of events                              */
  unsigned stream;            /* LIVE: allocating stream; CACHED: the cache holding it   */
  unsigned bin;               /* CACHED: its bin                                         */
  sp__block_state state;      /* segment lock                                            */
  atomic_bool claimed;        /* LIVE: an sp_free owns it, or it is front-cached         */
  bool front;                 /* LIVE: held in stream `stream`'s front cache; cache lock  */
  bool commit; /* LIVE, just taken: it overlaps decommitted pages, which sp_alloc commits first */
} sp__block;

struct sp__segment {
  /* base, bytes, pool and stream are immutable while linked; the struct itself outlives the
   * segment (recycled by segment.c, freed with the allocator), so range.c may lock a stale one. */
  _Alignas(64) char *base; /* backend pointer                                         */
  size_t bytes;
  unsigned pool;            /* SP__POOL_*                                              */
  unsigned stream;          /* the stream that allocated it                            */
  sp__spin mu;              /* SP__RANK_ALLOC_SEGMENT: its blocks' adjacency and states */
  sp__block *first;         /* lowest block; segment lock                              */
  bool linked;              /* in the segment list and index (range.c); mu             */
  sp__segment *prev, *next; /* the allocator's segment list; seglist lock              */
  /* Decommitted pages (commit.c): bit p covers [base + p * SP__MEM_PAGE, + SP__MEM_PAGE). Set
   * only for pages wholly inside CACHED blocks; changed under the allocator's commit_mu and mu
   * both, so either one suffices to read them. NULL: a one-page segment, or a backend without
   * mem_decommit. */
  uint64_t *gone;
  size_t n_gone; /* set bits of gone; their bytes are not counted in reserved */
  bool whole;    /* the backend cannot decommit its pages (SP_ERR_UNSUPPORTED); commit_mu */
};

/* Free blocks of one stream and pool, binned by size (stream cache lock). */
typedef struct sp__bins {
  uint64_t nonempty[SP__BIN_WORDS]; /* bit b: heads[b] != NULL                           */
  sp__block *heads[SP__BINS];       /* doubly linked through link_prev/link_next          */
  size_t bytes;                     /* sum of the blocks' bytes                           */
  size_t count;                     /* number of blocks                                   */
} sp__bins;

/* Zeroed host memory aligned to 64 B, through sp__calloc (NULL on failure or overflow); the raw
 * pointer is kept just before the aligned one. Free with sp__aligned_free (NULL ok). */
void *sp__aligned_calloc(size_t count, size_t bytes);
void sp__aligned_free(void *p);

void sp__bins_insert(sp__bins *b, sp__block *blk);
void sp__bins_remove(sp__bins *b, sp__block *blk);
/* A block of at least `bytes` with stamp <= max_stamp, preferring the smallest; NULL if none. */
sp__block *sp__bins_find(const sp__bins *b, size_t bytes, uint64_t max_stamp);

/* Splits blk (segment lock held) into blk of `bytes` and the remainder rest (a fresh struct the
 * caller provides), which takes blk's state, stream and stamp and is returned. */
void sp__block_split(sp__block *blk, size_t bytes, sp__block *rest);
/* Merges blk's next neighbour into blk (segment lock held); returns the struct no longer used. */
sp__block *sp__block_absorb_next(sp__block *blk);

/* Whether stream index i is in a 128-bit set. */
static inline bool sp__set_has(const uint64_t set[2], unsigned i) {
  return (set[i / 64] >> (i % 64)) & 1u;
}
static inline void sp__set_add(uint64_t set[2], unsigned i) { set[i / 64] |= 1ull << (i % 64); }

#endif /* SP_ALLOC_BLOCK_H */
