/* A test-and-test-and-set spinlock for the allocator's short critical sections (internal).
 *
 * Critical sections under it are a few dozen instructions (a bin lookup, a split, a hash probe)
 * and never call the backend, so spinning beats a futex round trip; after SP__SPIN_TRIES failed
 * tries the waiter yields the CPU, so an oversubscribed machine (or a preempted holder) does not
 * burn its time slice. Not recursive. Any thread.
 */
#ifndef SP_ALLOC_SPIN_H
#define SP_ALLOC_SPIN_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

enum { SP__SPIN_TRIES = 64 };

typedef struct sp__spin {
  atomic_bool held;
} sp__spin;

static inline void sp__spin_init(sp__spin *l) { atomic_init(&l->held, false); }

static inline bool sp__spin_trylock(sp__spin *l) {
  return !atomic_load_explicit(&l->held, memory_order_relaxed) &&
         !atomic_exchange_explicit(&l->held, true, memory_order_acquire);
}

static inline void sp__spin_lock(sp__spin *l) {
  unsigned tries = 0;
  while (!sp__spin_trylock(l)) {
    if (++tries >= SP__SPIN_TRIES) {
      sched_yield();
      tries = 0;
    }
  }
}

static inline void sp__spin_unlock(sp__spin *l) {
  atomic_store_explicit(&l->held, false, memory_order_release);
}

#endif /* SP_ALLOC_SPIN_H */
