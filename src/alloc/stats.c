/* Allocator statistics: counters summed over stream caches, the allocated peak with per-stream
 * grants, and sp_memory_stats_get / sp_memory_stats_reset_peaks.
 *
 * Owns allocated_peak and the per-stream peak grants. Counters live in each stream's cache, under
 * its lock, so the hot path touches no shared cache line; a read locks every cache in turn and
 * sums, giving an exact, consistent snapshot.
 *
 * The allocated peak. Invariants: every stream's live bytes <= its grant (a grant is lowered only
 * under that stream's cache lock), and the grants sum to at most the peak; so the total never
 * passes the peak unseen, and the peak is never below the true one. A stream passing its grant
 * takes peak_mu and covers the difference, in this order: unassigned slack (peak - sum of
 * grants); then the spare grant (grant - live) of other streams whose cache lock it can *try*
 * (not in an operation now) and that no other running thread works on (sp__user_stealable: the
 * caller's own streams, those of exited threads, quiet ones), just as much as it needs; then, only
 * if that is not enough, the peak rises by the rest. Used one stream at a time, every try succeeds
 * and the peak is exact (what the tests check). With streams allocating concurrently, a busy
 * stream's spare is not taken, so the peak may exceed the true one by at most the busy streams'
 * spare grants; in exchange the grants settle at each stream's working set and the hot path stops
 * taking peak_mu (taking grants back from running streams made every stream come back for more: the
 * lock went global under load; a free lock is not enough to call a stream idle: 16 threads on their
 * own streams still took each other's grants between operations). The try of another stream's cache
 * lock under peak_mu is out of rank order but never waits, so it cannot deadlock (src/core/lock.h:
 * a trylock is recorded by the witness, not checked).
 */
#include "alloc/alloc_internal.h"

#include "core/status.h"

/* Takes up to `need` bytes of c's spare grant if its lock is free, or held by the caller already
 * (held == c); returns what it took. */
static size_t stats_take_spare(sp__scache *c, size_t need, bool held) {
  if (atomic_load_explicit(&c->peak_grant, memory_order_relaxed) == 0) return 0;
  if (!held && !sp__spin_trylock(&c->mu)) return 0;
  size_t grant = atomic_load_explicit(&c->peak_grant, memory_order_relaxed);
  size_t live = atomic_load_explicit(&c->live_bytes, memory_order_relaxed);
  sp_assert(live <= grant);
  size_t take = grant - live < need ? grant - live : need;
  atomic_store_explicit(&c->peak_grant, grant - take, memory_order_relaxed);
  if (!held) sp__spin_unlock(&c->mu);
  return take;
}

void sp__stats_note_growth(sp__allocator *a, unsigned s, sp__scache *held) {
  sp__scache *cs = &a->caches[s];
  uint64_t me = sp__user_self();
  sp__spin_lock(&a->peak_mu);
  size_t live = atomic_load_explicit(&cs->live_bytes, memory_order_relaxed);
  size_t grant = atomic_load_explicit(&cs->peak_grant, memory_order_relaxed);
  if (live > grant) {
    size_t assigned = 0;
    for (unsigned i = 0; i < a->n_streams; i++)
      assigned += atomic_load_explicit(&a->caches[i].peak_grant, memory_order_relaxed);
    sp_assert(assigned <= a->allocated_peak);
    size_t need = live - grant;
    size_t take = a->allocated_peak - assigned < need ? a->allocated_peak - assigned : need;
    need -= take;
    grant += take;
    for (unsigned i = 0; i < a->n_streams && need; i++) {
      bool own = &a->caches[i] == held;
      if (i == s || (!own && !sp__user_stealable(a, i, me))) continue;
      size_t got = stats_take_spare(&a->caches[i], need, own);
      need -= got;
      grant += got;
    }
    a->allocated_peak += need; /* everybody's slack is in use: the peak itself rises */
    atomic_store_explicit(&cs->peak_grant, grant + need, memory_order_relaxed);
  }
  sp__spin_unlock(&a->peak_mu);
}

/* Fills *m from everything; the caller holds every stream cache lock and seglist_mu. */
static void stats_collect(sp__allocator *a, sp_memory_stats *m) {
  *m = (sp_memory_stats){0};
  for (unsigned i = 0; i < a->n_streams; i++) {
    const sp__scache *c = &a->caches[i];
    m->allocated_bytes += atomic_load_explicit(&c->live_bytes, memory_order_relaxed);
    m->allocs += c->allocs;
    m->frees += c->frees;
    m->cache_hits += c->cache_hits;
    m->deferred_frees += c->deferred_frees;
    m->cross_stream_reuses += c->cross_stream_reuses;
  }
  m->reserved_bytes = a->reserved;
  m->reserved_bytes_peak = a->reserved_peak;
  m->backend_allocs = a->backend_allocs;
  m->backend_frees = a->backend_frees;
  m->oom_retries = atomic_load(&a->oom_retries);
  m->ooms = atomic_load(&a->ooms);
  sp__spin_lock(&a->peak_mu);
  m->allocated_bytes_peak = a->allocated_peak;
  sp__spin_unlock(&a->peak_mu);
  if (m->allocated_bytes_peak < m->allocated_bytes) m->allocated_bytes_peak = m->allocated_bytes;
}

void sp__stats_collect_locked(sp__allocator *a, sp_memory_stats *m) { stats_collect(a, m); }

sp_status sp_memory_stats_get(sp_device *dev, sp_memory_stats *out) {
  sp_status st = sp__device_enter(dev, "sp_memory_stats_get");
  if (st != SP_OK) return st;
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_memory_stats_get: out is NULL");
  sp__allocator *a = dev->alloc;
  sp_memory_stats m;
  for (unsigned i = 0; i < a->n_streams; i++) sp__spin_lock(&a->caches[i].mu);
  sp__spin_lock(&a->seglist_mu);
  stats_collect(a, &m);
  sp__spin_unlock(&a->seglist_mu);
  for (unsigned i = a->n_streams; i-- > 0;) sp__spin_unlock(&a->caches[i].mu);
  *out = m;
  return SP_OK;
}

sp_status sp_memory_stats_reset_peaks(sp_device *dev) {
  sp_status st = sp__device_enter(dev, "sp_memory_stats_reset_peaks");
  if (st != SP_OK) return st;
  sp__allocator *a = dev->alloc;
  /* Every cache lock (in index order) then peak_mu: no live count moves while the grants
   * are set to the live bytes, so live <= grant holds afterwards. */
  for (unsigned i = 0; i < a->n_streams; i++) sp__spin_lock(&a->caches[i].mu);
  sp__spin_lock(&a->peak_mu);
  a->allocated_peak = 0;
  for (unsigned i = 0; i < a->n_streams; i++) {
    size_t g = atomic_load(&a->caches[i].live_bytes);
    atomic_store(&a->caches[i].peak_grant, g);
    a->allocated_peak += g;
  }
  sp__spin_unlock(&a->peak_mu);
  for (unsigned i = a->n_streams; i-- > 0;) sp__spin_unlock(&a->caches[i].mu);
  sp__spin_lock(&a->seglist_mu);
  a->reserved_peak = a->reserved;
  sp__spin_unlock(&a->seglist_mu);
  return SP_OK;
}
