/* Goal: the allocated peak's invariants hold at every moment under concurrent use: each stream's
 * live bytes <= its grant, the grants sum to at most allocated_peak, so the total live bytes never
 * pass the peak; sp_memory_stats_reset_peaks running at the same time keeps them, and the public
 * peak is never below the bytes allocated in the same snapshot.
 * Method: waves of short-lived threads (so streams of exited threads become stealable and grants
 * move between streams) on a round-robin host device with 4 streams, 6 threads per wave, each
 * allocating and freeing seeded sizes (512 B..1 MiB, keeping up to 8 blocks, left live at exit and
 * freed by the main thread after the next wave, which runs on shifted streams, so spare grants
 * are taken from streams with live bytes) while a checker thread repeatedly takes every cache lock
 * in index order then peak_mu (the order of sp_memory_stats_reset_peaks) and checks the invariants,
 * and now and then resets the peaks. White-box: reads the allocator's per-stream grants.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc/alloc_internal.h"
#include "core/device.h"
#include "testutil.h"

enum { STREAMS = 4, THREADS = 6, KEEP = 8 };

static sp_device *dev;
static atomic_int stop;
static uint64_t seed;

typedef struct worker {
  unsigned index, wave;
  size_t ops;
  void *left[KEEP]; /* blocks still live when it exits: freed after the next wave */
} worker;

static void *worker_main(void *p) {
  worker *w = p;
  tu_rng rng = {seed * 1000003u + w->wave * 131u + w->index + 1};
  sp_stream *s = &dev->streams[(w->index + w->wave) % STREAMS];
  void *held[KEEP] = {0};
  for (size_t i = 0; i < w->ops; i++) {
    unsigned k = (unsigned)tu_rng_below(&rng, KEEP);
    if (held[k]) {
      TU_EXPECT_OK(sp_free(dev, held[k]));
      held[k] = NULL;
    } else {
      size_t bytes = 512u << tu_rng_below(&rng, 12);
      TU_EXPECT_OK(sp_alloc(dev, bytes, s, &held[k]));
    }
  }
  for (unsigned k = 0; k < KEEP; k++) w->left[k] = held[k];
  return NULL;
}

/* Checks the invariants once, with every cache lock and peak_mu held. */
static void check_once(sp__allocator *a, unsigned long *checks) {
  for (unsigned i = 0; i < a->n_streams; i++) sp__spin_lock(&a->caches[i].mu);
  sp__spin_lock(&a->peak_mu);
  size_t live_sum = 0, grant_sum = 0, peak = a->allocated_peak;
  unsigned bad = UINT32_MAX;
  size_t bad_live = 0, bad_grant = 0;
  for (unsigned i = 0; i < a->n_streams; i++) {
    size_t live = atomic_load_explicit(&a->caches[i].live_bytes, memory_order_relaxed);
    size_t grant = atomic_load_explicit(&a->caches[i].peak_grant, memory_order_relaxed);
    if (live > grant && bad == UINT32_MAX) {
      bad = i;
      bad_live = live;
      bad_grant = grant;
    }
    live_sum += live;
    grant_sum += grant;
  }
  sp__spin_unlock(&a->peak_mu);
  for (unsigned i = a->n_streams; i-- > 0;) sp__spin_unlock(&a->caches[i].mu);
  TU_EXPECT(bad == UINT32_MAX, "stream %u: live %zu > grant %zu", bad, bad_live, bad_grant);
  TU_EXPECT(grant_sum <= peak, "grants sum %zu > peak %zu", grant_sum, peak);
  TU_EXPECT(live_sum <= peak, "live sum %zu > peak %zu", live_sum, peak);
  (*checks)++;
}

static void *checker_main(void *p) {
  unsigned long *checks = p;
  sp__allocator *a = dev->alloc;
  tu_rng rng = {seed * 7 + 3};
  while (!atomic_load(&stop)) {
    check_once(a, checks);
    if (tu_rng_below(&rng, 8) == 0) TU_EXPECT_OK(sp_memory_stats_reset_peaks(dev));
    sp_memory_stats m;
    TU_EXPECT_OK(sp_memory_stats_get(dev, &m));
    TU_EXPECT(m.allocated_bytes_peak >= m.allocated_bytes, "stats: peak %llu < allocated %llu",
              (unsigned long long)m.allocated_bytes_peak, (unsigned long long)m.allocated_bytes);
    sched_yield();
  }
  return NULL;
}

static void test_peak_grants_concurrent(void **state) {
  (void)state;
  seed = tu_seed();
  dev = tu_open_host(STREAMS, SP_STREAMS_ROUND_ROBIN);
  tu_failures_reset();
  unsigned long checks = 0;
  pthread_t chk;
  assert_int_equal(pthread_create(&chk, NULL, checker_main, &checks), 0);
  size_t waves = tu_scale(40), ops = tu_scale(2000);
  worker w[2][THREADS] = {0};
  for (unsigned wave = 0; wave <= waves; wave++) {
    worker *now = w[wave & 1], *prev = w[(wave + 1) & 1];
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS && wave < waves; i++) {
      now[i] = (worker){.index = i, .wave = wave, .ops = ops};
      assert_int_equal(pthread_create(&t[i], NULL, worker_main, &now[i]), 0);
    }
    for (unsigned i = 0; i < THREADS && wave < waves; i++) pthread_join(t[i], NULL);
    for (unsigned i = 0; i < THREADS; i++) /* the wave before: its streams had live blocks */
      for (unsigned k = 0; k < KEEP; k++)
        if (prev[i].left[k]) SP_CHECK_OK(sp_free(dev, prev[i].left[k]));
    memset(prev, 0, sizeof(w[0]));
  }
  atomic_store(&stop, 1);
  pthread_join(chk, NULL);
  check_once(dev->alloc, &checks);
  assert_int_equal(tu_failures(), 0);
  fprintf(stderr, "peak grants: %lu checks over %zu waves\n", checks, waves);
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_peak_grants_concurrent)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
