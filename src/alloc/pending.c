/* Pending frees: blocks freed while other streams may still use them (sp_record_stream).
 *
 * Owns the pending list. Invariants: a PENDING block is in the list exactly once, holds one event
 * per other stream that used it (recorded before it was published) and returns to its stream's
 * cache only after every one of them completed. Locking: pending_mu guards the list;
 * publishing pushes at the head (alloc.c); only the holder of the pending_busy try-flag removes
 * entries, so it can walk the list's link_next chain between short lock holds and query the events
 * with no lock held. Nobody blocks on the flag except sp_empty_cache and the out-of-memory path.
 */
#include "alloc/alloc_internal.h"

#include <sched.h>

#include "core/status.h"

/* SP_OK when every event of blk completed; no lock held (backend queries). */
static bool pending_done(sp__allocator *a, const sp__block *blk) {
  for (unsigned i = 0; i < blk->n_events; i++)
    if (sp__event_query(a->dev, blk->events[i]) != SP_OK) return false;
  return true;
}

/* Moves blk from the pending list to its stream's cache, then releases its events. */
static void pending_complete(sp__allocator *a, sp__block *blk) {
  unsigned s = blk->stream;
  sp_event *events = blk->events;
  unsigned n = blk->n_events;
  sp__spin_lock(&a->caches[s].mu);
  sp__spin_lock(&a->pending_mu);
  if (blk->link_prev) blk->link_prev->link_next = blk->link_next;
  else a->pending = blk->link_next;
  if (blk->link_next) blk->link_next->link_prev = blk->link_prev;
  a->pending_count--;
  atomic_store_explicit(&a->pending_hint, a->pending_count, memory_order_relaxed);
  sp__spin_unlock(&a->pending_mu);
  blk->events = NULL;
  blk->n_events = 0;
  SP__HISTORY(a, SP__HIST_FREE_COMPLETE, (int)s, -1, blk->bytes, blk->ptr, blk->seg->base);
  sp__cache_put(a, s, blk, blk->stamp);
  sp__spin_unlock(&a->caches[s].mu);
  for (unsigned i = 0; i < n; i++) (void)sp__event_release(a->dev, events[i]);
  sp__free(events);
}

void sp__pending_poll(sp__allocator *a, bool wait) {
  if (!wait && !atomic_load_explicit(&a->pending_hint, memory_order_relaxed)) return;
  if (wait) sp__lock_note_acquire(&a->pending_busy, SP__RANK_ALLOC_PENDING_BUSY);
  while (atomic_exchange_explicit(&a->pending_busy, true, memory_order_acquire)) {
    if (!wait) return;
    sched_yield();
  }
  sp__lock_note_acquired(&a->pending_busy, SP__RANK_ALLOC_PENDING_BUSY);
  sp__spin_lock(&a->pending_mu);
  sp__block *blk = a->pending;
  sp__spin_unlock(&a->pending_mu);
  while (blk) {
    /* link_next of a listed block changes only when its successor is removed: by us. */
    sp__block *next = blk->link_next;
    if (pending_done(a, blk)) pending_complete(a, blk);
    blk = next;
  }
  sp__lock_note_release(&a->pending_busy, SP__RANK_ALLOC_PENDING_BUSY);
  atomic_store_explicit(&a->pending_busy, false, memory_order_release);
}
