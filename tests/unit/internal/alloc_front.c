/* White-box tests of the allocator's per-stream front caches (src/alloc/front.c).
 *
 * Goal: a freed block kept whole in its stream's front is reused at once for the same size with
 * exact stats; it counts as cached (snapshot, validator) and as freed (double free and
 * sp_record_stream of it fail, changing nothing); sp_empty_cache flushes it and gives its segment
 * back (the out-of-memory paths are driven by alloc_faults.c); blocks left in the front of a stream
 * whose thread exited are reused by other streams; and a front block of a stream with work in
 * flight is never handed to another stream without a device-side wait (nor at all with
 * SP_ALLOC_NO_INFLIGHT_REUSE). Method: host devices driven through the public API, with the front
 * and the validator inspected directly; the in-flight case holds stream A behind a host function
 * waiting on a gate, so a missing wait shows as B's bytes overwritten by A's later memset, and B
 * being done before the gate opens.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "alloc/alloc_internal.h"
#include "core/device.h"
#include "testutil.h"

#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)

static void check_valid(sp_device *dev) { SP_CHECK_OK(sp__alloc_validate(dev->alloc)); }

static void test_reuse_and_stats(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s1 = &dev->streams[1];
  const sp__scache *c = &dev->alloc->caches[1];
  void *p, *q;
  SP_CHECK_OK(sp_alloc(dev, 64 * KIB, s1, &p));
  SP_CHECK_OK(sp_free(dev, p));
  assert_int_equal(c->n_front, 1);
  check_valid(dev);
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.allocated_bytes != 0 || m.allocs != 1 || m.frees != 1)
    fail_msg("after free: allocated %zu allocs %llu frees %llu, want 0 1 1", m.allocated_bytes,
             (unsigned long long)m.allocs, (unsigned long long)m.frees);
  /* freed: double free and record_stream fail and change nothing */
  SP_CHECK_STATUS(sp_free(dev, p), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_record_stream(dev, p, &dev->streams[2]), SP_ERR_INVALID_HANDLE);
  sp_memory_stats m2;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m2));
  assert_memory_equal(&m, &m2, sizeof(m));
  /* the snapshot shows it cached on stream 1 */
  char *json = NULL;
  SP_CHECK_OK(sp_memory_snapshot_json(dev, &json));
  assert_non_null(strstr(json, "\"state\":\"cached\""));
  assert_null(strstr(json, "\"state\":\"live\""));
  sp_string_free(json);
  /* same size: the same block, a cache hit, no split */
  SP_CHECK_OK(sp_alloc(dev, 64 * KIB - 100, s1, &q));
  assert_ptr_equal(q, p);
  assert_int_equal(c->n_front, 0);
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.allocated_bytes != 64 * KIB || m.allocs != 2 || m.cache_hits != 1 || m.backend_allocs != 1)
    fail_msg("after reuse: allocated %zu allocs %llu hits %llu backend %llu, want %zu 2 1 1",
             m.allocated_bytes, (unsigned long long)m.allocs, (unsigned long long)m.cache_hits,
             (unsigned long long)m.backend_allocs, 64 * KIB);
  /* a live block again: record_stream works on it, and its free becomes pending, not front */
  SP_CHECK_OK(sp_record_stream(dev, q, s1)); /* its own stream: no event needed */
  SP_CHECK_OK(sp_free(dev, q));
  assert_int_equal(c->n_front, 1);
  check_valid(dev);
  /* the front holds at most SP__FRONT_MAX blocks: the oldest go to the bins and merge */
  void *many[SP__FRONT_MAX + 4];
  for (unsigned i = 0; i < SP__FRONT_MAX + 4; i++)
    SP_CHECK_OK(sp_alloc(dev, (i + 1) * 512, s1, &many[i]));
  for (unsigned i = 0; i < SP__FRONT_MAX + 4; i++) SP_CHECK_OK(sp_free(dev, many[i]));
  assert_int_equal(c->n_front, SP__FRONT_MAX);
  check_valid(dev);
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.allocated_bytes, 0);
  assert_int_equal(m.allocs, m.frees);
  sp_device_close(dev);
}

static void test_empty_cache_flushes(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  static const size_t sizes[] = {512, 4 * KIB, 300 * KIB, MIB, 3 * MIB, 9 * MIB};
  void *p[6];
  for (unsigned i = 0; i < 6; i++)
    SP_CHECK_OK(sp_alloc(dev, sizes[i], &dev->streams[1 + i % 3], &p[i]));
  for (unsigned i = 0; i < 6; i++) SP_CHECK_OK(sp_free(dev, p[i]));
  size_t fronted = 0;
  for (unsigned s = 0; s < 4; s++) fronted += dev->alloc->caches[s].n_front;
  assert_int_equal(fronted, 6);
  check_valid(dev);
  SP_CHECK_OK(sp_empty_cache(dev));
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.reserved_bytes != 0 || m.backend_allocs != m.backend_frees)
    fail_msg("after sp_empty_cache: reserved %zu, backend allocs %llu frees %llu", m.reserved_bytes,
             (unsigned long long)m.backend_allocs, (unsigned long long)m.backend_frees);
  for (unsigned s = 0; s < 4; s++) assert_int_equal(dev->alloc->caches[s].n_front, 0);
  check_valid(dev);
  sp_device_close(dev);
}

typedef struct exit_arg {
  sp_device *dev;
  void *p;
  unsigned stream;
} exit_arg;

static void *exiting_thread(void *arg) {
  exit_arg *e = arg;
  sp_stream *s = NULL;
  TU_EXPECT_OK(sp_stream_current(e->dev, &s));
  if (!s) return NULL;
  e->stream = sp_stream_index(s);
  TU_EXPECT_OK(sp_alloc(e->dev, 256 * KIB, s, &e->p));
  TU_EXPECT_OK(sp_free(e->dev, e->p)); /* stays in the front of its stream */
  return NULL;                         /* the thread exits: its exclusive slot is given back */
}

static void test_thread_exit(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_EXCLUSIVE);
  exit_arg e = {.dev = dev};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, exiting_thread, &e), 0);
  pthread_join(t, NULL);
  assert_int_equal(tu_failures(), 0);
  assert_true(e.stream >= 1 && e.stream < 4);
  assert_int_equal(dev->alloc->caches[e.stream].n_front, 1);
  /* another stream's request of that size gets the exited thread's block (its stream is idle),
   * not a new segment */
  unsigned other = e.stream == 3 ? 2 : 3;
  void *q;
  SP_CHECK_OK(sp_alloc(dev, 256 * KIB, &dev->streams[other], &q));
  assert_ptr_equal(q, e.p);
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.backend_allocs != 1 || m.cross_stream_reuses != 1)
    fail_msg("backend allocs %llu (want 1), cross-stream reuses %llu (want 1)",
             (unsigned long long)m.backend_allocs, (unsigned long long)m.cross_stream_reuses);
  assert_int_equal(dev->alloc->caches[e.stream].n_front, 0);
  check_valid(dev);
  SP_CHECK_OK(sp_free(dev, q));
  SP_CHECK_OK(sp_empty_cache(dev));
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.reserved_bytes, 0);
  sp_device_close(dev);
}

/* Stream A is held busy; its front block p (freed after A's queued memset) is requested on B. */
static void run_inflight(unsigned flags) {
  sp_device_config cfg = {.backend = "host", .streams = 4, .alloc_flags = flags};
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  sp_stream *sa = &dev->streams[1], *sb = &dev->streams[2];
  enum { BYTES = 8 * 1024 };
  void *p, *q;
  tu_gate gate;
  tu_gate_init(&gate, 0);
  SP_CHECK_OK(sp_alloc(dev, BYTES, sa, &p));
  SP_CHECK_OK(sp_launch_host_func(sa, tu_gate_fn, &gate));
  SP_CHECK_OK(sp_memset_async(sa, p, 0xAA, BYTES)); /* runs only after the gate opens */
  SP_CHECK_OK(sp_free(dev, p));
  assert_int_equal(dev->alloc->caches[1].n_front, 1);
  SP_CHECK_OK(sp_alloc(dev, BYTES, sb, &q));
  check_valid(dev);
  if (flags & SP_ALLOC_NO_INFLIGHT_REUSE) {
    if (q == p) fail_msg("stream B got A's in-flight block with in-flight reuse off");
  } else if (q == p) {
    SP_CHECK_OK(sp_memset_async(sb, q, 0x55, BYTES));
    tu_sleep_us(20000);
    sp_status st = sp_stream_query(sb);
    if (st != SP_ERR_NOT_READY)
      fail_msg("stream B finished (%s) while A, whose block it reuses, is held", sp_status_str(st));
  }
  tu_gate_open(&gate);
  SP_CHECK_OK(sp_device_sync(dev));
  if (q == p) {
    const unsigned char *b = q;
    for (unsigned i = 0; i < BYTES; i++)
      if (b[i] != 0x55) fail_msg("byte %u is 0x%02x, want 0x55: A's memset ran after B's", i, b[i]);
  }
  print_message("in-flight reuse %s: B %s A's block\n",
                flags & SP_ALLOC_NO_INFLIGHT_REUSE ? "off" : "on", q == p ? "got" : "did not get");
  SP_CHECK_OK(sp_free(dev, q));
  check_valid(dev);
  sp_device_close(dev);
}

static void test_inflight_front_waits(void **state) {
  (void)state;
  run_inflight(0);
  run_inflight(SP_ALLOC_NO_INFLIGHT_REUSE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reuse_and_stats),
      cmocka_unit_test(test_empty_cache_flushes),
      cmocka_unit_test(test_thread_exit),
      cmocka_unit_test(test_inflight_front_waits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
