/* Goal: a thread working on its own stream keeps its cached memory. Another thread whose stream
 * misses its cache grows a segment of its own instead of taking the running thread's (which would
 * make segments bounce between threads and be given back and remapped), unless that thread has
 * been quiet (no cache operation) for SP__QUIET_NS; then its cached block is reused with no new
 * backend allocation. The peak stays exact in this serial use. (A thread that exited:
 * alloc_front.c.) Method: a worker thread allocates and frees 256 KiB on stream 1, then waits on a
 * gate (alive); the main thread allocates on streams 2 and 3, checking backend allocations,
 * cross-stream reuses and which pointer it got, and that the worker's token reads as alive while it
 * runs.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "alloc/alloc_internal.h"
#include "core/device.h"
#include "testutil.h"

#define KIB ((size_t)1024)

typedef struct owner_arg {
  sp_device *dev;
  void *p;
  atomic_int ready, gate;
} owner_arg;

static void *owner_thread(void *arg) {
  owner_arg *o = arg;
  TU_EXPECT_OK(sp_alloc(o->dev, 256 * KIB, &o->dev->streams[1], &o->p));
  TU_EXPECT_OK(sp_free(o->dev, o->p)); /* cached on stream 1 */
  atomic_store(&o->ready, 1);
  while (!atomic_load(&o->gate)) tu_sleep_us(100);
  return NULL;
}

static void expect_counts(sp_device *dev, unsigned long long backend_allocs,
                          unsigned long long reuses, const char *when) {
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.backend_allocs != backend_allocs || m.cross_stream_reuses != reuses)
    fail_msg("%s: backend allocs %llu (want %llu), cross-stream reuses %llu (want %llu)", when,
             (unsigned long long)m.backend_allocs, backend_allocs,
             (unsigned long long)m.cross_stream_reuses, reuses);
}

static void test_running_thread_keeps_memory(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  owner_arg o = {.dev = dev};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, owner_thread, &o), 0);
  while (!atomic_load(&o.ready)) sched_yield();
  uint64_t owner = atomic_load(&dev->alloc->caches[1].user);
  assert_true(owner != 0 && owner != sp__user_self());
  assert_true(sp__user_alive(owner));

  /* stream 1's thread runs and was just active: stream 2 grows its own segment */
  void *q = NULL, *r = NULL;
  SP_CHECK_OK(sp_alloc(dev, 256 * KIB, &dev->streams[2], &q));
  if (q == o.p) fail_msg("stream 2 got the running thread's block %p", o.p);
  expect_counts(dev, 2, 0, "running owner");
  SP_CHECK_OK(sp__alloc_validate(dev->alloc));

  /* the owner stays quiet past SP__QUIET_NS: stream 3 (q still live) reuses its block */
  tu_sleep_us((unsigned)(2 * SP__QUIET_NS / 1000));
  SP_CHECK_OK(sp_alloc(dev, 256 * KIB, &dev->streams[3], &r));
  if (r == q) fail_msg("stream 3 got a live block %p", q);
  /* stream 2's miss probed stream 1 first; this look, SP__QUIET_NS later, finds no operation */
  if (r != o.p) fail_msg("stream 3 got %p, not the quiet thread's cached block %p", r, o.p);
  expect_counts(dev, 2, 1, "quiet owner");
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.allocated_bytes_peak != 512 * KIB)
    fail_msg("peak %zu, want %zu (two 256 KiB blocks live at once)", m.allocated_bytes_peak,
             512 * KIB);
  SP_CHECK_OK(sp__alloc_validate(dev->alloc));
  SP_CHECK_OK(sp_free(dev, q));
  SP_CHECK_OK(sp_free(dev, r));
  atomic_store(&o.gate, 1);
  pthread_join(t, NULL);
  assert_int_equal(tu_failures(), 0);
  assert_false(sp__user_alive(owner)); /* its exit emptied its slot */
  SP_CHECK_OK(sp_empty_cache(dev));
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.reserved_bytes, 0);
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_running_thread_keeps_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
