/* A lock-free stack of small integer indices (a Treiber stack), used for the free stream slots of
 * exclusive mode (stream_pool.c) and the free events of the event pool (event_pool.c).
 *
 * The nodes are owned by the caller: each index i has one `_Atomic uint32_t` link word that the
 * caller keeps in storage that never moves and is never freed while the stack is in use (a fixed
 * array, or chunks published once). The stack itself is one 64-bit word, updated by CAS:
 *
 *     head = tag << 32 | (top index + 1)        (low word 0: empty)
 *
 * ABA: a pop reads the top's link, then CASes head from (tag, top) to (tag + 1, link). If between
 * the read and the CAS the top were popped, other nodes moved and the same top pushed back, an
 * untagged CAS would succeed with a stale link. Every successful push and pop increments the tag,
 * so the CAS fails unless exactly 2^32 operations happened in between (a wrap no thread can make
 * while another sits between two adjacent instructions). The stale link read itself is harmless:
 * link words stay valid memory and the result is discarded when the CAS fails.
 *
 * Model-checked (with the slot wait and thread-exit return) in src/core/stream_pool.pml.
 *
 * Memory order: push publishes the node's link and everything the pusher wrote before (release);
 * pop acquires it. Any thread; lock-free.
 */
#ifndef SP_CORE_IDSTACK_H
#define SP_CORE_IDSTACK_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct sp__idstack {
  _Atomic uint64_t head; /* tag << 32 | (top + 1); 0 in the low word: empty */
} sp__idstack;

#define SP__IDSTACK_NONE 0xffffffffu /* "no index": the largest index is 2^32 - 2 */

static inline void sp__idstack_init(sp__idstack *st) { atomic_init(&st->head, 0); }

/* Pushes index i whose link word is *link (the caller's node for i). */
static inline void sp__idstack_push(sp__idstack *st, _Atomic uint32_t *link, uint32_t i) {
  uint64_t old = atomic_load_explicit(&st->head, memory_order_relaxed);
  for (;;) {
    atomic_store_explicit(link, (uint32_t)old, memory_order_relaxed); /* below: old top + 1 */
    uint64_t next = ((old >> 32) + 1) << 32 | (uint64_t)(i + 1);
    if (atomic_compare_exchange_weak_explicit(&st->head, &old, next, memory_order_release,
                                              memory_order_relaxed))
      return;
  }
}

/* Pops an index, or returns SP__IDSTACK_NONE when empty. link_of(ctx, i) gives i's link word; it
 * must accept any index ever pushed (a stale top may be read). */
static inline uint32_t sp__idstack_pop(sp__idstack *st,
                                       _Atomic uint32_t *(*link_of)(void *ctx, uint32_t i),
                                       void *ctx) {
  uint64_t old = atomic_load_explicit(&st->head, memory_order_acquire);
  for (;;) {
    uint32_t top1 = (uint32_t)old;
    if (!top1) return SP__IDSTACK_NONE;
    uint32_t below1 = atomic_load_explicit(link_of(ctx, top1 - 1), memory_order_relaxed);
    uint64_t next = ((old >> 32) + 1) << 32 | (uint64_t)below1;
    if (atomic_compare_exchange_weak_explicit(&st->head, &old, next, memory_order_acquire,
                                              memory_order_acquire))
      return top1 - 1;
  }
}

/* Whether the stack looked empty at some instant (a hint; racy by nature). */
static inline int sp__idstack_empty(sp__idstack *st) {
  return (uint32_t)atomic_load_explicit(&st->head, memory_order_acquire) == 0;
}

#endif /* SP_CORE_IDSTACK_H */
