/* Thread tokens: which thread last allocated on a stream, and whether that thread still runs.
 *
 * Owns the process-wide table of live threads' tokens. A thread's token is its unique id (never
 * reused: a 64-bit counter) shifted left by SP__USER_SLOT_BITS, or-ed with the table slot it
 * claimed on first use; its exit (a pthread key destructor) empties the slot. So "the thread of
 * token k still runs" is one load: users[slot(k)] == k. A thread that found the table full gets
 * slot 0 (its liveness unknown: the allocator then treats its streams as it did before tokens).
 * The allocator uses it so that a thread working on its own stream keeps its memory: another
 * thread takes cached blocks (or spare peak grant, stats.c) from that stream only when the owner
 * is the taker itself, exited or went quiet (sp__user_stealable). Locking: none; the table and the
 * counter are atomics, the token itself thread-local; the probe fields of a stream cache are
 * written racily by whoever probes (relaxed atomics: a lost update only delays a steal by one
 * probe).
 */
#include "alloc/alloc_internal.h"

#include <pthread.h>

#include "core/status.h"

static _Atomic uint64_t users[SP__USER_SLOTS]; /* [0] unused: slot 0 means "no slot"    */
static _Atomic uint64_t users_next_id = 1;
static _Thread_local uint64_t user_token; /* 0 until this thread's first use        */
static pthread_key_t users_key;
static pthread_once_t users_once = PTHREAD_ONCE_INIT;
static bool users_key_ok;

static void users_exit(void *arg) {
  uint64_t token = (uint64_t)(uintptr_t)arg;
  unsigned slot = (unsigned)(token & (SP__USER_SLOTS - 1u));
  uint64_t expect = token;
  if (slot) atomic_compare_exchange_strong(&users[slot], &expect, 0);
}

static void users_key_create(void) {
  users_key_ok = pthread_key_create(&users_key, users_exit) == 0;
}

/* Claims a free slot for token bits `id`; 0 when the table is full. */
static unsigned users_claim(uint64_t id, uint64_t *token) {
  for (unsigned i = 1; i < SP__USER_SLOTS; i++) {
    uint64_t expect = 0, want = (id << SP__USER_SLOT_BITS) | i;
    if (atomic_load_explicit(&users[i], memory_order_relaxed) == 0 &&
        atomic_compare_exchange_strong(&users[i], &expect, want)) {
      *token = want;
      return i;
    }
  }
  *token = id << SP__USER_SLOT_BITS;
  return 0;
}

static uint64_t users_register(void) {
  uint64_t id = atomic_fetch_add_explicit(&users_next_id, 1, memory_order_relaxed);
  uint64_t token = 0;
  (void)pthread_once(&users_once, users_key_create);
  /* Without the exit hook a slot would never be emptied: use none (liveness unknown). */
  if (!users_key_ok) return id << SP__USER_SLOT_BITS;
  unsigned slot = users_claim(id, &token);
  if (slot && pthread_setspecific(users_key, (void *)(uintptr_t)token) != 0) {
    atomic_store(&users[slot], 0);
    token = id << SP__USER_SLOT_BITS;
  }
  return token;
}

uint64_t sp__user_self(void) {
  if (SP__UNLIKELY(!user_token)) user_token = users_register();
  return user_token;
}

bool sp__user_alive(uint64_t token) {
  unsigned slot = (unsigned)(token & (SP__USER_SLOTS - 1u));
  return slot && atomic_load_explicit(&users[slot], memory_order_relaxed) == token;
}

/* Whether stream t's cached blocks may go to another stream's request without memory pressure:
 * its allocating thread is the caller, or exited, or has made no cache operation for SP__QUIET_NS
 * (seen by two probes that far apart). Otherwise a thread working on its own stream would see its
 * segments taken whenever its cache is momentarily short, and take them back: the segments and
 * their locks would bounce between threads and be given back and remapped (measured: the mix rows
 * of bench/alloc stopped scaling past one thread). */
bool sp__user_stealable(sp__allocator *a, unsigned t, uint64_t me) {
  sp__scache *c = &a->caches[t];
  uint64_t user = atomic_load_explicit(&c->user, memory_order_relaxed);
  if (!user || user == me || !sp__user_alive(user)) return true;
  uint64_t ops = atomic_load_explicit(&c->ops, memory_order_relaxed), now = sp__now_ns();
  if (atomic_load_explicit(&c->probe_ops, memory_order_relaxed) != ops) {
    atomic_store_explicit(&c->probe_ops, ops, memory_order_relaxed);
    atomic_store_explicit(&c->probe_ns, now, memory_order_relaxed);
    return false;
  }
  return now - atomic_load_explicit(&c->probe_ns, memory_order_relaxed) >= SP__QUIET_NS;
}
