/* Allocator statistics: counters summed over stream caches, the exact-when-serial allocated peak,
 * and sp_memory_stats_get / sp_memory_stats_reset_peaks.
 *
 * Owns allocated_peak and the per-stream peak grants. Counters live in each stream's cache, under
 * its lock, so the hot path touches no shared cache line; a read locks every cache in turn and
 * sums, giving an exact, consistent snapshot. The allocated peak: each stream may grow its live
 * bytes up to its grant without the peak lock; the grants sum to at most the peak, so the total
 * cannot pass the peak unseen. A stream passing its grant takes peak_mu (3.6), sums every
 * stream's live bytes, raises the peak, and re-divides the slack (peak - total) among the streams
 * in proportion to what each has needed (its old grant, or its live bytes for the grower). The peak is exact whenever
 * operations do not overlap in time (any single-threaded use); with concurrent allocations it
 * may miss the bytes of allocations racing with that re-division.
 */
#include "alloc/alloc_internal.h"

#include "core/status.h"

static inline size_t stats_live_total(sp__allocator *a) {
  size_t sum = 0;
  for (unsigned i = 0; i < a->n_streams; i++) sum += atomic_load(&a->caches[i].live_bytes);
  return sum;
}

__extension__ typedef unsigned __int128 stats_u128;

void sp__stats_note_growth(sp__allocator *a, unsigned s) {
  size_t live[SP_STREAMS_MAX], weight[SP_STREAMS_MAX], total = 0;
  stats_u128 weights = 0;
  sp__spin_lock(&a->peak_mu);
  for (unsigned i = 0; i < a->n_streams; i++) {
    live[i] = atomic_load_explicit(&a->caches[i].live_bytes, memory_order_relaxed);
    size_t g = atomic_load_explicit(&a->caches[i].peak_grant, memory_order_relaxed);
    weight[i] = (i == s || g < live[i] ? live[i] : g) + 1; /* what each has needed */
    total += live[i];
    weights += weight[i];
  }
  if (total > a->allocated_peak) a->allocated_peak = total;
  /* Re-divide: each keeps its live bytes plus a share of the slack in proportion to what it has
   * needed, so streams that alternate big and small requests do not take grants back and forth. */
  size_t slack = a->allocated_peak - total;
  for (unsigned i = 0; i < a->n_streams; i++)
    atomic_store_explicit(&a->caches[i].peak_grant,
                          live[i] + (size_t)((stats_u128)slack * weight[i] / weights),
                          memory_order_relaxed);
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
