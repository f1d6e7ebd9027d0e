/* The lock-order witness's slow paths and the rank table's names (see lock.h for the rule).
 *
 * Owns the per-thread stack of held locks (sp__witness_tl) and the test hook. Invariants: a
 * thread's entries are sorted by `order`, strictly increasing from the bottom, because an
 * acquisition in order is above the top and a tried or hooked one is recorded at max(its rank,
 * the top's order); removing any entry keeps the order. A group entry (same-rank locks) counts
 * its members in n and names the last one taken. A violation is reported by the check before
 * blocking; the record after taking the lock never reports one again. Locking: none; the stack is
 * thread-local and the hook an atomic.
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
} lock_ranks[SP__RANK_COUNT] = {[SP__RANK_NONE] = {"(no lock)", SAME_ONE, CALL_BACKEND},
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
    witness_fail(
        "lock witness: \"%s\" (rank %u) taken with %u lock groups held already (raise "
        "SP__WITNESS_DEPTH)",
        sp__lock_rank_name(rank), rank, d);
    return;
  }
  unsigned top = d ? SP__WITNESS_ORDER(w->e[d - 1].meta) : 0;
  w->e[d].lock = lock;
  w->e[d].meta = SP__WITNESS_META(rank, top > rank ? top : rank, 0, 1);
  w->depth = d + 1;
}

/* Whether lock may join the top entry t (same rank, taken in order, not a tried entry). */
static bool witness_may_join(const sp__witness *w, unsigned t, const void *lock, unsigned rank) {
  uint64_t m = w->e[t].meta;
  if (SP__WITNESS_RANK(m) != rank || SP__WITNESS_ORDER(m) != rank) return false;
  switch (lock_ranks[rank].same) {
  case SAME_ASCENDING: return (uintptr_t)lock > (uintptr_t)w->e[t].lock;
  case SAME_UNDER_PREV:
    return t > 0 && SP__WITNESS_RANK(w->e[t - 1].meta) == rank - 1 &&
           SP__WITNESS_ORDER(w->e[t - 1].meta) == rank - 1;
  default: return false;
  }
}

void sp__witness_check_slow(const sp__witness *w, const void *lock, unsigned rank) {
  sp_assert(rank > SP__RANK_NONE && rank < SP__RANK_COUNT);
  unsigned t = w->depth - 1;
  if (witness_may_join(w, t, lock, rank)) return;
  uint64_t m = w->e[t].meta;
  unsigned held = SP__WITNESS_RANK(m);
  const char *why = w->e[t].lock == lock ? "already held by this thread"
                    : held != rank       ? "out of rank order"
                    : lock_ranks[rank].same == SAME_ASCENDING
                        ? "same rank, not at a higher address than the last one taken"
                    : lock_ranks[rank].same == SAME_UNDER_PREV
                        ? "same rank, without the lock of the rank below held"
                        : "a second lock of a rank held one at a time";
  witness_fail(
      "lock order violation: taking \"%s\" (rank %u, %p) while holding \"%s\" (rank %u%s, "
      "%p): %s",
      sp__lock_rank_name(rank), rank, lock, sp__lock_rank_name(held), held,
      SP__WITNESS_ORDER(m) != held ? ", tried under a higher one" : "", w->e[t].lock, why);
}

void sp__witness_acquired_slow(sp__witness *w, const void *lock, unsigned rank) {
  sp_assert(rank > SP__RANK_NONE && rank < SP__RANK_COUNT);
  unsigned d = w->depth;
  if (d && witness_may_join(w, d - 1, lock, rank)) {
    uint64_t m = w->e[d - 1].meta;
    w->e[d - 1].meta = SP__WITNESS_META(rank, rank, 1, SP__WITNESS_N(m) + 1);
    w->e[d - 1].lock = lock;
    return;
  }
  witness_push(w, lock, rank);
}

void sp__witness_release_slow(sp__witness *w, const void *lock, unsigned rank) {
  for (unsigned i = w->depth; i-- > 0;) {
    uint64_t m = w->e[i].meta;
    bool group = SP__WITNESS_GROUP(m);
    if (SP__WITNESS_RANK(m) != rank || (!group && w->e[i].lock != lock)) continue;
    if (group && SP__WITNESS_N(m) > 1) { /* one fewer (which one is not tracked) */
      w->e[i].meta = m - ((uint64_t)1 << 32);
      return;
    }
    memmove(&w->e[i], &w->e[i + 1], (w->depth - i - 1) * sizeof(w->e[0]));
    w->depth--;
    return;
  }
  witness_fail("lock witness: releasing \"%s\" (rank %u, %p), which this thread does not hold",
               sp__lock_rank_name(rank), rank, lock);
}

void sp__lock_assert_call_ok_slow(const char *what) {
  const sp__witness *w = &sp__witness_tl;
  for (unsigned i = 0; i < w->depth; i++) {
    unsigned r = SP__WITNESS_RANK(w->e[i].meta);
    if (lock_ranks[r].call != CALL_BACKEND)
      witness_fail(
          "lock witness: %s called while holding \"%s\" (rank %u, %p), under which no "
          "backend call is made",
          what, sp__lock_rank_name(r), r, w->e[i].lock);
  }
}
