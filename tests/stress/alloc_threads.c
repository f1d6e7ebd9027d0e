/* Multi-threaded stress of the caching allocator (public API only).
 *
 * Goal: threads allocating, freeing and sharing blocks across streams at once never get
 * overlapping or corrupted blocks, and the counters add up afterwards.
 * Method: 6 threads on a round-robin host device with 5 pool streams (so some threads share a
 * stream), jitter on. Each thread keeps up to 16 blocks; each op (seeded per thread) allocates
 * (512 B..3 MiB) and fills 512 bytes at every MiB of the block and at its end on its stream with a
 * tag byte, or frees one after checking those bytes through stream-ordered copies, sometimes after
 * recording it on another stream that read it; thread 0 also empties the cache now and then, so
 * free pages of segments are decommitted while the others allocate (a page decommitted under a
 * live block would read back as zeros). Failures are recorded with TU_EXPECT and asserted after
 * the join. Sized with tu_scale so it also runs under ThreadSanitizer.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { THREADS = 6, KEEP = 16, CHECK = 512 };

typedef struct held {
  void *p;
  size_t bytes;
  unsigned char tag;
} held;

/* The offset of the k-th probe of a block of `bytes` (k < probes(bytes)): every MiB, then the end.
 */
static size_t probes(size_t bytes) { return (bytes - CHECK) / (1u << 20) + 2; }
static size_t probe_at(size_t bytes, size_t k) {
  return k + 1 < probes(bytes) ? k * (1u << 20) : bytes - CHECK;
}

static sp_device *dev;
static size_t ops_per_thread;
static uint64_t
    seed; /* tu_seed() read once on the main thread (its lazy init is not thread-safe) */

static void check_block(sp_stream *s, const held *h) {
  unsigned char got[CHECK];
  for (size_t k = 0; k < probes(h->bytes); k++) {
    size_t at = probe_at(h->bytes, k);
    TU_EXPECT_OK(sp_memcpy_async(s, got, (char *)h->p + at, CHECK));
    TU_EXPECT_OK(sp_stream_sync(s));
    for (unsigned i = 0; i < CHECK; i++) {
      if (got[i] != h->tag) {
        TU_EXPECT(0, "block %p of %zu byte %zu: 0x%02x, want 0x%02x", h->p, h->bytes, at + i,
                  got[i], h->tag);
        return;
      }
    }
  }
}

static void *worker(void *arg) {
  unsigned id = (unsigned)(size_t)arg;
  tu_rng rng = {seed * 31 + id};
  sp_stream *s = NULL, *other = NULL;
  TU_EXPECT_OK(sp_stream_current(dev, &s));
  other = sp_stream_default(dev);
  held keep[KEEP];
  unsigned n = 0;
  for (size_t op = 0; op < ops_per_thread; op++) {
    if (n < KEEP && (n == 0 || tu_rng_below(&rng, 2))) {
      size_t bytes = 512 + tu_rng_below(&rng, tu_rng_below(&rng, 8) ? 64 * 1024 : 3u << 20);
      held h = {NULL, bytes, (unsigned char)(1 + tu_rng_below(&rng, 250))};
      sp_status st = sp_alloc(dev, bytes, s, &h.p);
      TU_EXPECT(st == SP_OK, "alloc %zu: %s", bytes, sp_last_error());
      if (st != SP_OK) break;
      for (size_t k = 0; k < probes(bytes); k++)
        TU_EXPECT_OK(sp_memset_async(s, (char *)h.p + probe_at(bytes, k), h.tag, CHECK));
      keep[n++] = h;
    } else {
      unsigned i = (unsigned)tu_rng_below(&rng, n);
      held h = keep[i];
      keep[i] = keep[--n];
      check_block(s, &h);
      if (tu_rng_below(&rng, 3) == 0) { /* read on another stream, then freed: pending */
        static unsigned char sink[THREADS][CHECK];
        TU_EXPECT_OK(sp_memcpy_async(other, sink[id], h.p, CHECK));
        TU_EXPECT_OK(sp_record_stream(dev, h.p, other));
      }
      TU_EXPECT_OK(sp_free(dev, h.p));
    }
    if (id == 0 && op % 500 == 499) TU_EXPECT_OK(sp_empty_cache(dev));
  }
  while (n) TU_EXPECT_OK(sp_free(dev, keep[--n].p));
  TU_EXPECT_OK(sp_stream_sync(other));
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "2", 1);
  dev = tu_open_host(6, SP_STREAMS_ROUND_ROBIN);
  unsetenv("STREAMPOOL_HOST_JITTER_US");
  ops_per_thread = tu_scale(6000);
  seed = tu_seed();
  pthread_t t[THREADS];
  for (size_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
  for (size_t i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  assert_int_equal(tu_failures(), 0);
  sp_memory_stats m;
  SP_CHECK_OK(sp_device_sync(dev));
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  print_message("allocs %llu frees %llu deferred %llu cross-stream %llu reserved peak %zu\n",
                (unsigned long long)m.allocs, (unsigned long long)m.frees,
                (unsigned long long)m.deferred_frees, (unsigned long long)m.cross_stream_reuses,
                m.reserved_bytes_peak);
  assert_int_equal(m.allocated_bytes, 0);
  assert_int_equal(m.allocs, m.frees);
  SP_CHECK_OK(sp_empty_cache(dev));
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.reserved_bytes, 0);
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_threads)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
