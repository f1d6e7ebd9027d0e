/* Allocator statistics: counters summed over stream caches, the exact-when-serial allocated peak,
 * and sp_memory_stats_get / sp_memory_stats_reset_peaks.
 *
 * Owns allocated_peak and the per-stream peak grants. Counters live in each stream's cache, under
 * its lock, so the hot path touches no shared cache line; a read locks every cache in turn and
 * sums, giving an exact, consistent snapshot. The allocated peak: each stream may grow its live
 * bytes up to its grant without the peak lock; the grants sum to at most the peak, so the total
 * cannot pass the peak unseen. A stream passing its grant takes peak_mu (3.6), sums every
 * stream's live bytes, raises the peak, and re-divides the grants. The peak is exact whenever
 * operations do not overlap in time (any single-threaded use); with concurrent allocations it
 * may miss the bytes of allocations racing with that re-division.
 */
#include "alloc/alloc_internal.h"

#include "core/status.h"

static size_t stats_live_total(sp__allocator *a) {
  size_t sum = 0;
  for (unsigned i = 0; i < a->n_streams; i++) sum += atomic_load(&a->caches[i].live_bytes);
  return sum;
}

void sp__stats_note_growth(sp__allocator *a, unsigned s) {
  sp__spin_lock(&a->peak_mu);
  size_t total = stats_live_total(a);
  if (total > a->allocated_peak) a->allocated_peak = total;
  size_t others = 0;
  for (unsigned i = 0; i < a->n_streams; i++)
    if (i != s) others += atomic_load(&a->caches[i].peak_grant);
  size_t live_s = atomic_load(&a->caches[s].live_bytes);
  if (others + live_s > a->allocated_peak) { /* take back the grants others no longer use */
    others = 0;
    for (unsigned i = 0; i < a->n_streams; i++) {
      if (i == s) continue;
      size_t g = atomic_load(&a->caches[i].live_bytes);
      atomic_store(&a->caches[i].peak_grant, g);
      others += g;
    }
  }
  size_t grant = a->allocated_peak > others ? a->allocated_peak - others : 0;
  atomic_store(&a->caches[s].peak_grant, grant > live_s ? grant : live_s);
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
  sp__spin_lock(&a->peak_mu);
  a->allocated_peak = 0;
  for (unsigned i = 0; i < a->n_streams; i++) {
    size_t g = atomic_load(&a->caches[i].live_bytes);
    atomic_store(&a->caches[i].peak_grant, g);
    a->allocated_peak += g;
  }
  sp__spin_unlock(&a->peak_mu);
  sp__spin_lock(&a->seglist_mu);
  a->reserved_peak = a->reserved;
  sp__spin_unlock(&a->seglist_mu);
  return SP_OK;
}
