/* Size classes of the caching allocator (internal, pure functions).
 *
 * Requests are rounded up to SP__ALLOC_ROUND (512 B). A rounded request of at most
 * SP__SMALL_MAX (1 MiB) is "small" and carved from SP__SMALL_SEGMENT (2 MiB) segments; a larger
 * one under SP__LARGE_MAX (10 MiB) from SP__LARGE_SEGMENT (20 MiB) segments; anything bigger gets a
 * segment of its own rounded up to SP__HUGE_ROUND (2 MiB). Small and large blocks live in separate
 * pools so small requests never fragment large segments.
 *
 * Free blocks are binned by size in units of 512 B: exact bins below 64 units (32 KiB), then 8
 * sub-bins per power of two (TLSF style), SP__BINS bins in all, found through a bitmap.
 */
#ifndef SP_ALLOC_SIZE_CLASS_H
#define SP_ALLOC_SIZE_CLASS_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SP__ALLOC_ROUND ((size_t)512)
#define SP__SMALL_MAX ((size_t)1 << 20)
#define SP__SMALL_SEGMENT ((size_t)2 << 20)
#define SP__LARGE_MAX ((size_t)10 << 20)
#define SP__LARGE_SEGMENT ((size_t)20 << 20)
#define SP__HUGE_ROUND ((size_t)2 << 20)

enum { SP__POOL_SMALL = 0, SP__POOL_LARGE = 1, SP__POOLS = 2 };
enum { SP__BIN_EXACT = 64, SP__BIN_SUB_LOG2 = 3, SP__BINS = 512, SP__BIN_WORDS = SP__BINS / 64 };

static_assert(SP__SMALL_MAX <= SP__SMALL_SEGMENT, "a small block fits a small segment");
static_assert(SP__LARGE_MAX <= SP__LARGE_SEGMENT, "a large block fits a large segment");
static_assert(SP__SMALL_SEGMENT % SP__ALLOC_ROUND == 0, "segments hold whole units");
static_assert((SP__BIN_EXACT & (SP__BIN_EXACT - 1)) == 0, "exact bins end at a power of two");

/* bytes rounded up to 512; false when that overflows size_t. */
static inline bool sp__size_round(size_t bytes, size_t *out) {
  if (bytes > SIZE_MAX - (SP__ALLOC_ROUND - 1)) return false;
  *out = (bytes + SP__ALLOC_ROUND - 1) & ~(SP__ALLOC_ROUND - 1);
  return true;
}

/* The pool of a rounded request. */
static inline unsigned sp__size_pool(size_t rounded) {
  return rounded <= SP__SMALL_MAX ? SP__POOL_SMALL : SP__POOL_LARGE;
}

/* The segment size for a rounded request that no cached block can serve; 0 on overflow. */
static inline size_t sp__size_segment(size_t rounded) {
  if (rounded <= SP__SMALL_MAX) return SP__SMALL_SEGMENT;
  if (rounded < SP__LARGE_MAX) return SP__LARGE_SEGMENT;
  if (rounded > SIZE_MAX - (SP__HUGE_ROUND - 1)) return 0;
  return (rounded + SP__HUGE_ROUND - 1) & ~(SP__HUGE_ROUND - 1);
}

/* The bin of a block of `bytes` (a multiple of 512, > 0). Every block in a bin above
 * sp__size_bin(r) is at least r bytes; blocks in bin sp__size_bin(r) itself may be smaller. */
static inline unsigned sp__size_bin(size_t bytes) {
  size_t units = bytes / SP__ALLOC_ROUND;
  if (units < SP__BIN_EXACT) return (unsigned)units;
  unsigned f = 63u - (unsigned)__builtin_clzll((unsigned long long)units);
  unsigned sub = (unsigned)(units >> (f - SP__BIN_SUB_LOG2)) & ((1u << SP__BIN_SUB_LOG2) - 1u);
  return SP__BIN_EXACT + ((f - 6u) << SP__BIN_SUB_LOG2) + sub;
}

#endif /* SP_ALLOC_SIZE_CLASS_H */
