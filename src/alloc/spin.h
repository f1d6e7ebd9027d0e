/* A test-and-test-and-set spinlock for the allocator's short critical sections (internal).
 *
 * Critical sections under it are a few dozen instructions (a bin lookup, a split, a hash probe)
 * and never call the backend, so spinning beats a futex round trip; after SP__SPIN_TRIES failed
 * tries the waiter yields the CPU, so an oversubscribed machine (or a preempted holder) does not
 * burn its time slice. Not recursive. Any thread. Each spinlock has a rank of src/core/lock.h,
 * given at init and checked by the lock-order witness at SP_DEBUG >= 1 (a trylock is recorded,
 * not checked); at SP_DEBUG 0 the calls below are the bare atomics.
 */
#ifndef SP_ALLOC_SPIN_H
#define SP_ALLOC_SPIN_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core/lock.h"

enum { SP__SPIN_TRIES = 64 };

typedef struct sp__spin {
  atomic_bool held;
  uint8_t rank; /* sp__lock_rank; immutable after init */
} sp__spin;

static inline void sp__spin_init(sp__spin *l, sp__lock_rank rank) {
  atomic_init(&l->held, false);
  l->rank = (uint8_t)rank;
}

static inline bool sp__spin_try_raw(sp__spin *l) {
  return !atomic_load_explicit(&l->held, memory_order_relaxed) &&
         !atomic_exchange_explicit(&l->held, true, memory_order_acquire);
}

static inline bool sp__spin_trylock(sp__spin *l) {
  if (!sp__spin_try_raw(l)) return false;
  sp__lock_note_acquired(l, l->rank);
  return true;
}

static inline void sp__spin_lock(sp__spin *l) {
  unsigned tries = 0;
  sp__lock_note_acquire(l, l->rank);
  while (!sp__spin_try_raw(l)) {
    if (++tries >= SP__SPIN_TRIES) {
      sched_yield();
      tries = 0;
    }
  }
  sp__lock_note_acquired(l, l->rank);
}

static inline void sp__spin_unlock(sp__spin *l) {
  sp__lock_note_release(l, l->rank);
  atomic_store_explicit(&l->held, false, memory_order_release);
}

#endif /* SP_ALLOC_SPIN_H */
