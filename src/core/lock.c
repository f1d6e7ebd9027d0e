/* The lock-order witness's slow paths and the rank table's names (see lock.h for the rule).
 *
 * Owns the per-thread stack of held locks (sp__witness_tl) and the test hook. Invariants: a
 * thread's entries are sorted by `order`, strictly increasing from the bottom, because every
 * checked acquisition is above the top and a tried or hooked one is recorded at max(its rank, the
 * top's order); removing any entry keeps the order. An entry with n > 1 is a same-rank group (its
 * `lock` is the last taken). Locking: none; the stack is thread-local and the hook an atomic.
 */
#include "core/lock.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Thread_local sp__witness sp__witness_tl SP__WITNESS_TLS;

enum { SAME_ONE, SAME_ASCENDING, SAME_UNDER_PREV };
enum { CALL_NONE, CALL_BACKEND };

static const struct lock_rank_info {
  const char *name;
  unsigned char same, call;
} lock_ranks[SP__RANK_COUNT] = {
    [SP__RANK_NONE] = {"(no lock)", SAME_ONE, CALL_BACKEND},
#define LOCK_RANK_INFO(id, nm, sm, cl) [SP__RANK_##id] = {nm, SAME_##sm, CALL_##cl},
    SP__LOCK_RANKS(LOCK_RANK_INFO)
#undef LOCK_RANK_INFO
};

static _Atomic(sp__witness_hook_fn) witness_hook;

const char *sp__lock_rank_name(unsigned rank) {
  return rank < SP__RANK_COUNT ? lock_ranks[rank].name : "(bad rank)";
}

void sp__witness_set_hook(sp__witness_hook_fn fn) { atomic_store(&witness_hook, fn); }

unsigned sp__witness_depth(void) { return sp__witness_tl.depth; }

/* Reports a violation: to the test hook, else to the log, then abort. */
static void witness_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void witness_fail(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  sp__witness_hook_fn hook = atomic_load(&witness_hook);
  if (hook) {
    hook(msg);
    return;
  }
  sp__log(SP_LOG_ERROR, "%s", msg);
  abort();
}

/* Pushes an entry for lock at max(rank, the top's order): trylocks and hooked violations. */
static void witness_push(sp__witness *w, const void *lock, unsigned rank) {
  unsigned d = w->depth;
  if (d == SP__WITNESS_DEPTH) {
    witness_fail("lock witness: \"%s\" (rank %u) taken with %u lock groups held already (raise "
                 "SP__WITNESS_DEPTH)", sp__lock_rank_name(rank), rank, d);
    return;
  }
  unsigned order = d && w->order[d - 1] > rank ? w->order[d - 1] : rank;
  w->rank[d] = (uint8_t)rank;
  w->order[d] = (uint8_t)order;
  w->group[d] = false;
  w->n[d] = 1;
  w->lock[d] = lock;
  w->depth = d + 1;
}

/* Whether lock may join the top entry t (same rank, taken in order, not a tried entry). */
static bool witness_may_join(const sp__witness *w, unsigned t, const void *lock, unsigned rank) {
  if (w->rank[t] != rank || w->order[t] != rank) return false;
  switch (lock_ranks[rank].same) {
  case SAME_ASCENDING:
    return (uintptr_t)lock > (uintptr_t)w->lock[t];
  case SAME_UNDER_PREV:
    return t > 0 && w->rank[t - 1] == rank - 1 && w->order[t - 1] == rank - 1;
  default:
    return false;
  }
}

void sp__witness_acquire_slow(sp__witness *w, const void *lock, unsigned rank) {
  sp_assert(rank > SP__RANK_NONE && rank < SP__RANK_COUNT);
  unsigned d = w->depth;
  if (d == 0 || rank > w->order[d - 1]) { /* in order; only the stack was full */
    witness_push(w, lock, rank);
    return;
  }
  unsigned t = d - 1;
  if (witness_may_join(w, t, lock, rank)) {
    w->group[t] = true;
    w->n[t]++;
    w->lock[t] = lock;
    return;
  }
  const char *why = w->lock[t] == lock ? "already held by this thread"
                    : w->rank[t] != rank ? "out of rank order"
                    : lock_ranks[rank].same == SAME_ASCENDING
                        ? "same rank, not at a higher address than the last one taken"
                    : lock_ranks[rank].same == SAME_UNDER_PREV
                        ? "same rank, without the lock of the rank below held"
                        : "a second lock of a rank held one at a time";
  witness_fail("lock order violation: taking \"%s\" (rank %u, %p) while holding \"%s\" (rank %u%s, "
               "%p): %s", sp__lock_rank_name(rank), rank, lock, sp__lock_rank_name(w->rank[t]),
               w->rank[t], w->order[t] != w->rank[t] ? ", tried under a higher one" : "",
               w->lock[t], why);
  witness_push(w, lock, rank);
}

void sp__witness_try_acquired(sp__witness *w, const void *lock, unsigned rank) {
  sp_assert(rank > SP__RANK_NONE && rank < SP__RANK_COUNT);
  unsigned d = w->depth;
  if (d && witness_may_join(w, d - 1, lock, rank)) {
    w->group[d - 1] = true;
    w->n[d - 1]++;
    w->lock[d - 1] = lock;
    return;
  }
  witness_push(w, lock, rank);
}

void sp__witness_release_slow(sp__witness *w, const void *lock, unsigned rank) {
  for (unsigned i = w->depth; i-- > 0;) {
    if (w->rank[i] != rank || (!w->group[i] && w->lock[i] != lock)) continue;
    if (--w->n[i]) return; /* a group: one fewer (which one is not tracked) */
    unsigned tail = w->depth - i - 1;
    memmove(&w->rank[i], &w->rank[i + 1], tail * sizeof(w->rank[0]));
    memmove(&w->order[i], &w->order[i + 1], tail * sizeof(w->order[0]));
    memmove(&w->group[i], &w->group[i + 1], tail * sizeof(w->group[0]));
    memmove(&w->n[i], &w->n[i + 1], tail * sizeof(w->n[0]));
    memmove(&w->lock[i], &w->lock[i + 1], tail * sizeof(w->lock[0]));
    w->depth--;
    return;
  }
  witness_fail("lock witness: releasing \"%s\" (rank %u, %p), which this thread does not hold",
               sp__lock_rank_name(rank), rank, lock);
}

void sp__lock_assert_call_ok_slow(const char *what) {
  const sp__witness *w = &sp__witness_tl;
  for (unsigned i = 0; i < w->depth; i++)
    if (lock_ranks[w->rank[i]].call != CALL_BACKEND)
      witness_fail("lock witness: %s called while holding \"%s\" (rank %u, %p), under which no "
                   "backend call is made", what, sp__lock_rank_name(w->rank[i]), w->rank[i],
                   w->lock[i]);
}
