/* Out-of-memory paths of the caching allocator under injected and real backend faults.
 *
 * Goal: every OOM path (new segment failing, flush-and-retry, final error) leaves the allocator
 * valid, loses no memory, and reports requested/allocated/reserved/limit; real device exhaustion
 * behaves the same.
 * Method: (1) through the fault-injecting table (tests/common/internal/tu_backend_faults.h), for
 * each N in 0..NMAX: mem_alloc fails from its Nth call on, then a seeded script of allocations
 * (sizes in all three classes, on 3 streams, some recorded on another stream and freed) until the
 * first failure, which must be SP_ERR_OUT_OF_MEMORY with the numbers in its message; then
 * validate, free everything, validate, empty the cache and check reserved == 0 and backend allocs
 * == frees (ASan catches leaks at exit). (2) STREAMPOOL_HOST_MEMORY = 64 MiB: allocate until OOM,
 * check the statistics, free half, allocate again (served after the flush), clean up.
 */
#include <stdlib.h>
#include <string.h>

#include "alloc/alloc.h"
#include "core/device.h"
#include "testutil.h"
#include "tu_backend_faults.h"

#define MIB ((size_t)1024 * 1024)
enum { NMAX = 24, LIVE_MAX = 256 };

static size_t pick_size(tu_rng *r) {
  switch (tu_rng_below(r, 4)) {
  case 0: return 1 + tu_rng_below(r, 64 * 1024);
  case 1: return 1 + tu_rng_below(r, MIB);
  case 2: return MIB + tu_rng_below(r, 8 * MIB);
  default: return 10 * MIB + tu_rng_below(r, 4 * MIB);
  }
}

static void check_clean(sp_device *dev) {
  SP_CHECK_OK(sp__alloc_validate(dev->alloc));
  SP_CHECK_OK(sp_empty_cache(dev));
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.allocated_bytes || m.reserved_bytes || m.backend_allocs != m.backend_frees ||
      m.allocs != m.frees)
    fail_msg("after cleanup: allocated %zu reserved %zu backend %llu/%llu allocs %llu frees %llu",
             m.allocated_bytes, m.reserved_bytes, (unsigned long long)m.backend_allocs,
             (unsigned long long)m.backend_frees, (unsigned long long)m.allocs,
             (unsigned long long)m.frees);
  SP_CHECK_OK(sp__alloc_validate(dev->alloc));
}

static void test_injected(void **state) {
  (void)state;
  SP_CHECK_OK(tu_fault_install("host"));
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  for (unsigned n = 0; n <= NMAX; n++) {
    tu_rng rng = {tu_seed() + n};
    void *live[LIVE_MAX];
    size_t n_live = 0;
    tu_fault_arm(TU_SLOT_mem_alloc, n, 1);
    sp_status st = SP_OK;
    for (unsigned op = 0; op < LIVE_MAX && st == SP_OK; op++) {
      sp_stream *s = &dev->streams[1 + tu_rng_below(&rng, 3)];
      void *p = NULL;
      st = sp_alloc(dev, pick_size(&rng), s, &p);
      if (st != SP_OK) break;
      SP_CHECK_OK(sp_memset_async(s, p, 0x5A, 512));
      if (tu_rng_below(&rng, 3) == 0) { /* used elsewhere, then freed: pending */
        SP_CHECK_OK(sp_record_stream(dev, p, &dev->streams[1 + (sp_stream_index(s) % 3)]));
        SP_CHECK_OK(sp_free(dev, p));
      } else {
        live[n_live++] = p;
      }
    }
    if (st != SP_OK) {
      if (st != SP_ERR_OUT_OF_MEMORY)
        fail_msg("N=%u: status %s: %s", n, sp_status_str(st), sp_last_error());
      const char *msg = sp_last_error();
      if (!strstr(msg, "requested") || !strstr(msg, "allocated") || !strstr(msg, "reserved") ||
          !strstr(msg, "limit"))
        fail_msg("N=%u: OOM message lacks the numbers: %s", n, msg);
    }
    SP_CHECK_OK(sp__alloc_validate(dev->alloc));
    tu_fault_disarm();
    for (size_t i = 0; i < n_live; i++) SP_CHECK_OK(sp_free(dev, live[i]));
    check_clean(dev);
  }
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_true(m.ooms > 0 && m.oom_retries >= m.ooms);
  print_message("injected: %llu OOMs after %llu retries\n", (unsigned long long)m.ooms,
                (unsigned long long)m.oom_retries);
  sp_device_close(dev);
  tu_fault_live live = tu_fault_live_get();
  if (live.segments || live.streams || live.events || live.devices)
    fail_msg("after close: %ld segments, %ld streams, %ld events, %ld devices still live",
             live.segments, live.streams, live.events, live.devices);
  tu_fault_uninstall();
}

static void test_real_exhaustion(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_MEMORY", "67108864", 1);
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  unsetenv("STREAMPOOL_HOST_MEMORY");
  void *live[64];
  size_t n = 0;
  sp_status st = SP_OK;
  while (n < 64 && (st = sp_alloc(dev, 3 * MIB, &dev->streams[1 + n % 3], &live[n])) == SP_OK) n++;
  SP_CHECK_STATUS(st, SP_ERR_OUT_OF_MEMORY);
  print_message("64 MiB device: %zu blocks of 3 MiB before OOM: %s\n", n, sp_last_error());
  assert_true(n >= 3);
  SP_CHECK_OK(sp__alloc_validate(dev->alloc));
  for (size_t i = 0; i < n; i += 2) SP_CHECK_OK(sp_free(dev, live[i]));
  void *again = NULL;
  SP_CHECK_OK(sp_alloc(dev, 3 * MIB, &dev->streams[3], &again)); /* from freed blocks */
  SP_CHECK_OK(sp_free(dev, again));
  for (size_t i = 1; i < n; i += 2) SP_CHECK_OK(sp_free(dev, live[i]));
  /* a request that fits the device only after the cache is flushed */
  SP_CHECK_OK(sp_alloc(dev, 40 * MIB, &dev->streams[2], &again));
  SP_CHECK_OK(sp_free(dev, again));
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_true(m.oom_retries >= 1);
  check_clean(dev);
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_injected),
                                     cmocka_unit_test(test_real_exhaustion)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
