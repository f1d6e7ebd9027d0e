/* The allocator's event history (src/alloc/history.c).
 *
 * Goal: off by default and then records nothing; on, every kind of event is recorded with the
 * right stream, peer, thread, size and address, in the order of the operations; a ring of N keeps
 * exactly the newest N (wraparound); a new enable starts empty; many threads recording at once
 * lose nothing when the ring is large enough and never produce a torn or out-of-order entry when
 * it wraps (run under ThreadSanitizer in CI); STREAMPOOL_MEMORY_HISTORY turns it on and a bad
 * value fails the open; the snapshot JSON carries the same events.
 * Method: host devices; operations chosen so that each event kind must happen (a block recorded on
 * a busy stream for free_pending, a cached block of an idle or a gated busy stream for reuse and
 * reuse_wait, a memory limit for oom_retry/oom); events read back white-box with sp__history_read
 * and through sp_memory_snapshot_json parsed with cJSON. Thread counts and rounds are tu_scale'd.
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc/alloc_internal.h"
#include "core/device.h"
#include "testutil.h"

enum { MAX_EVENTS = 1 << 16 };
static sp__hist_event events[MAX_EVENTS];

static size_t read_events(sp_device *dev, sp__history_info *info) {
  return sp__history_read(dev->alloc, events, MAX_EVENTS, info);
}

static uint32_t my_tid(void) { return (uint32_t)syscall(SYS_gettid); }

static void expect_event(size_t i, unsigned kind, int stream, int peer, size_t bytes,
                         const void *addr) {
  const sp__hist_event *e = &events[i];
  if (e->kind != kind || e->stream != stream || e->peer != peer || e->bytes != bytes ||
      (addr && e->address != (uintptr_t)addr) || e->thread != my_tid())
    fail_msg(
        "event %zu: got %s stream %d peer %d bytes %llu address %#lx thread %u; want %s "
        "stream %d peer %d bytes %zu address %p thread %u",
        i, sp__history_kind_name(e->kind), e->stream, e->peer, (unsigned long long)e->bytes,
        (unsigned long)e->address, e->thread, sp__history_kind_name(kind), stream, peer, bytes,
        addr, my_tid());
}

static void test_off_records_nothing(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  void *p;
  SP_CHECK_OK(sp_alloc(dev, 4096, &dev->streams[1], &p));
  SP_CHECK_OK(sp_free(dev, p));
  SP_CHECK_OK(sp_empty_cache(dev));
  sp__history_info info;
  assert_int_equal(read_events(dev, &info), 0);
  assert_false(info.enabled);
  /* Enabled, then disabled: nothing reported, nothing recorded after. */
  SP_CHECK_OK(sp_memory_history_enable(dev, 64));
  SP_CHECK_OK(sp_alloc(dev, 4096, &dev->streams[1], &p));
  SP_CHECK_OK(sp_memory_history_disable(dev));
  SP_CHECK_OK(sp_free(dev, p));
  assert_int_equal(read_events(dev, &info), 0);
  assert_false(info.enabled);
  char *json;
  SP_CHECK_OK(sp_memory_snapshot_json(dev, &json));
  cJSON *doc = cJSON_Parse(json);
  assert_non_null(doc);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "events")), 0);
  assert_true(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "history"), "enabled")));
  cJSON_Delete(doc);
  sp_string_free(json);
  sp_device_close(dev);
}

static void test_bad_arguments(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  SP_CHECK_STATUS(sp_memory_history_enable(dev, 0), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memory_history_enable(dev, SP_MEMORY_HISTORY_MAX + 1),
                  SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memory_history_enable(NULL, 8), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memory_history_disable(NULL), SP_ERR_INVALID_ARGUMENT);
  sp__history_info info;
  (void)read_events(dev, &info);
  assert_false(info.enabled);
  sp_device_close(dev);
}

typedef struct gate {
  atomic_int open;
} gate;

static void gate_wait(void *arg) {
  gate *g = arg;
  while (!atomic_load(&g->open)) sched_yield();
}

/* Every kind, in operation order, with its numbers. */
static void test_kinds_and_order(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s1 = &dev->streams[1], *s2 = &dev->streams[2], *s3 = &dev->streams[3];
  SP_CHECK_OK(sp_stream_sync(s3)); /* created, idle */
  SP_CHECK_OK(sp_memory_history_enable(dev, 1024));
  void *p, *q, *r;
  SP_CHECK_OK(sp_alloc(dev, 1000, s1, &p)); /* segment_map, alloc (rounded to 1024) */
  SP_CHECK_OK(sp_free(dev, p));             /* free */
  gate g = {0};
  SP_CHECK_OK(sp_alloc(dev, 1000, s1, &p));
  SP_CHECK_OK(sp_launch_host_func(s2, gate_wait, &g)); /* s2 busy until the gate opens */
  SP_CHECK_OK(sp_record_stream(dev, p, s2));
  SP_CHECK_OK(sp_free(dev, p));                 /* free_pending */
  SP_CHECK_OK(sp_alloc(dev, 2u << 20, s1, &q)); /* a segment of the large pool */
  SP_CHECK_OK(sp_free(dev, q));
  SP_CHECK_OK(sp_alloc(dev, 2u << 20, s3, &r)); /* s1 idle, q's segment unused: reuse */
  SP_CHECK_OK(sp_free(dev, r));
  atomic_store(&g.open, 1);
  SP_CHECK_OK(sp_empty_cache(dev)); /* free_complete, segment_unmap x 2, empty_cache */
  sp__history_info info;
  size_t n = read_events(dev, &info);
  assert_true(info.enabled);
  assert_int_equal(info.capacity, 1024);
  assert_int_equal(info.dropped, 0);
  assert_int_equal(n, info.recorded);
  assert_int_equal(n, 15);
  const size_t small = 2u << 20, large = 20u << 20;
  expect_event(0, SP__HIST_SEGMENT_MAP, 1, -1, small, NULL);
  expect_event(1, SP__HIST_ALLOC, 1, -1, 1024, p);
  assert_int_equal(events[1].segment, events[0].address);
  expect_event(2, SP__HIST_FREE, 1, -1, 1024, p);
  expect_event(3, SP__HIST_ALLOC, 1, -1, 1024, p);
  expect_event(4, SP__HIST_FREE_PENDING, 1, -1, 1024, p);
  expect_event(5, SP__HIST_SEGMENT_MAP, 1, -1, large, NULL);
  expect_event(6, SP__HIST_ALLOC, 1, -1, 2u << 20, q);
  expect_event(7, SP__HIST_FREE, 1, -1, 2u << 20, q);
  expect_event(8, SP__HIST_REUSE, 3, 1, 2u << 20, r);
  expect_event(9, SP__HIST_ALLOC, 3, -1, 2u << 20, r);
  assert_int_equal(events[9].segment, events[5].address);
  expect_event(10, SP__HIST_FREE, 3, -1, 2u << 20, r);
  expect_event(11, SP__HIST_FREE_COMPLETE, 1, -1, 1024, p);
  /* Both segments go back, in the segment list's order. */
  bool large_first = events[12].bytes == large;
  expect_event(12, SP__HIST_SEGMENT_UNMAP, 1, -1, large_first ? large : small,
               (void *)events[large_first ? 5 : 0].address);
  expect_event(13, SP__HIST_SEGMENT_UNMAP, 1, -1, large_first ? small : large,
               (void *)events[large_first ? 0 : 5].address);
  expect_event(14, SP__HIST_EMPTY_CACHE, -1, -1, small + large, NULL);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(events[i].seq, events[0].seq + i);
    assert_int_equal(events[i].device, 0);
    if (i) assert_true(events[i].t_ns >= events[i - 1].t_ns);
  }
  sp_device_close(dev);
}

/* reuse_wait: the owner stream is busy, so the allocating stream waits for it on the device. */
static void test_reuse_wait(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s1 = &dev->streams[1], *s2 = &dev->streams[2];
  SP_CHECK_OK(sp_stream_sync(s2));
  void *p, *q;
  SP_CHECK_OK(sp_alloc(dev, 4096, s1, &p));
  SP_CHECK_OK(sp_free(dev, p));
  gate g = {0};
  SP_CHECK_OK(sp_launch_host_func(s1, gate_wait, &g));
  SP_CHECK_OK(sp_memory_history_enable(dev, 16));
  SP_CHECK_OK(sp_alloc(dev, 4096, s2, &q));
  size_t n = read_events(dev, NULL);
  assert_int_equal(n, 2);
  expect_event(0, SP__HIST_REUSE_WAIT, 2, 1, 4096, q);
  expect_event(1, SP__HIST_ALLOC, 2, -1, 4096, q);
  atomic_store(&g.open, 1);
  SP_CHECK_OK(sp_free(dev, q));
  SP_CHECK_OK(sp_device_sync(dev));
  sp_device_close(dev);
}

static void test_oom(void **state) {
  (void)state;
  sp_device_config cfg = {.backend = "host", .streams = 4, .memory_limit = 4u << 20};
  sp_device *dev;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  SP_CHECK_OK(sp_memory_history_enable(dev, 64));
  void *p[4], *x = NULL;
  for (int i = 0; i < 4; i++) SP_CHECK_OK(sp_alloc(dev, 1u << 20, &dev->streams[1], &p[i]));
  SP_CHECK_STATUS(sp_alloc(dev, 1u << 20, &dev->streams[1], &x), SP_ERR_LIMIT);
  size_t n = read_events(dev, NULL);
  assert_int_equal(n, 8); /* 2 x (segment_map, alloc, alloc), oom_retry, oom */
  expect_event(6, SP__HIST_OOM_RETRY, 1, -1, 1u << 20, NULL);
  expect_event(7, SP__HIST_OOM, 1, -1, 1u << 20, NULL);
  for (int i = 0; i < 4; i++) SP_CHECK_OK(sp_free(dev, p[i]));
  sp_device_close(dev);
}

/* A ring of 8 keeps the newest 8 of many events; a new enable starts empty. */
static void test_wraparound_and_reenable(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  void *p;
  SP_CHECK_OK(sp_alloc(dev, 512, &dev->streams[1], &p)); /* the segment exists before */
  SP_CHECK_OK(sp_free(dev, p));
  SP_CHECK_OK(sp_memory_history_enable(dev, 8));
  void *last = NULL;
  for (int i = 0; i < 101; i++) {
    SP_CHECK_OK(sp_alloc(dev, 512u * (unsigned)(1 + i % 3), &dev->streams[1], &p));
    SP_CHECK_OK(sp_free(dev, p));
    last = p;
  }
  sp__history_info info;
  size_t n = read_events(dev, &info);
  assert_int_equal(info.recorded, 202);
  assert_int_equal(n, 8);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(events[i].seq, events[0].seq + i);
    unsigned want = i % 2 ? SP__HIST_FREE : SP__HIST_ALLOC;
    size_t round = 101 - 4 + i / 2;
    expect_event(i, want, 1, -1, 512u * (1 + round % 3), NULL);
  }
  assert_int_equal(events[n - 1].address, (uintptr_t)last);
  SP_CHECK_OK(sp_memory_history_enable(dev, 8)); /* the same ring, started again */
  assert_int_equal(read_events(dev, &info), 0);
  assert_int_equal(info.recorded, 0);
  SP_CHECK_OK(sp_alloc(dev, 512, &dev->streams[1], &p));
  assert_int_equal(read_events(dev, NULL), 1);
  SP_CHECK_OK(sp_memory_history_enable(dev, 3)); /* another size: a new ring */
  SP_CHECK_OK(sp_free(dev, p));
  assert_int_equal(read_events(dev, &info), 1);
  assert_int_equal(info.capacity, 3);
  expect_event(0, SP__HIST_FREE, 1, -1, 512, p);
  sp_device_close(dev);
}

typedef struct worker {
  pthread_t thread;
  sp_device *dev;
  sp_stream *stream;
  size_t rounds;
  uint32_t tid;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  w->tid = my_tid();
  for (size_t i = 0; i < w->rounds; i++) {
    void *p;
    TU_EXPECT_OK(sp_alloc(w->dev, 512u * (1 + i % 4), w->stream, &p));
    TU_EXPECT_OK(sp_free(w->dev, p));
  }
  return NULL;
}

static void run_workers(sp_device *dev, worker *w, unsigned n, size_t rounds) {
  for (unsigned i = 0; i < n; i++) {
    w[i] = (worker){.dev = dev, .stream = &dev->streams[1 + i], .rounds = rounds};
    assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
  }
  for (unsigned i = 0; i < n; i++) pthread_join(w[i].thread, NULL);
  assert_int_equal(tu_failures(), 0);
}

enum { THREADS = 6 };

/* Large ring: every event of every thread is there, each thread's in its own order. */
static void test_threads_lossless(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(THREADS + 1, SP_STREAMS_ROUND_ROBIN);
  SP_CHECK_OK(sp_memory_history_enable(dev, MAX_EVENTS));
  size_t rounds = tu_scale(4000);
  worker w[THREADS];
  run_workers(dev, w, THREADS, rounds);
  sp__history_info info;
  size_t n = read_events(dev, &info);
  assert_int_equal(info.dropped, 0);
  assert_int_equal(n, info.recorded);
  size_t pairs[THREADS] = {0}, maps = 0, reuses = 0; /* maps: segment maps and unmaps */
  void *open_addr[THREADS] = {0};
  uint64_t last_t[THREADS] = {0};
  for (size_t i = 0; i < n; i++) {
    const sp__hist_event *e = &events[i];
    assert_int_equal(e->seq, events[0].seq + i);
    if (e->kind == SP__HIST_SEGMENT_MAP || e->kind == SP__HIST_SEGMENT_UNMAP) {
      maps++; /* an unmap may come from another thread: it trims a quiet stream's cache */
      continue;
    }
    unsigned k = (unsigned)e->stream - 1;
    assert_true(k < THREADS);
    if (e->thread != w[k].tid)
      fail_msg("event %zu: kind %d on stream %u by thread %llu, not its own %llu", i, (int)e->kind,
               k + 1, (unsigned long long)e->thread, (unsigned long long)w[k].tid);
    if (e->kind == SP__HIST_REUSE || e->kind == SP__HIST_REUSE_WAIT) { /* a quiet peer's cache */
      assert_true(e->peer >= 1 && e->peer <= THREADS && e->peer != e->stream);
      reuses++;
      continue;
    }
    if (e->t_ns < last_t[k])
      fail_msg("thread %u: time %llu after %llu", k, (unsigned long long)e->t_ns,
               (unsigned long long)last_t[k]);
    last_t[k] = e->t_ns;
    if (e->kind == SP__HIST_ALLOC) {
      assert_null(open_addr[k]);
      open_addr[k] = (void *)e->address;
      assert_int_equal(e->bytes, 512u * (1 + pairs[k] % 4));
    } else {
      assert_int_equal(e->kind, SP__HIST_FREE);
      assert_int_equal(e->address, (uintptr_t)open_addr[k]);
      open_addr[k] = NULL;
      pairs[k]++;
    }
  }
  for (unsigned k = 0; k < THREADS; k++) assert_int_equal(pairs[k], rounds);
  assert_int_equal(n, maps + reuses + 2 * THREADS * rounds);
  sp_device_close(dev);
}

/* Small ring, many writers lapping each other: what is read is whole and in ticket order. */
static void test_threads_wrapping(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(THREADS + 1, SP_STREAMS_ROUND_ROBIN);
  SP_CHECK_OK(sp_memory_history_enable(dev, 5));
  worker w[THREADS];
  run_workers(dev, w, THREADS, tu_scale(20000));
  sp__history_info info;
  size_t n = read_events(dev, &info);
  assert_true(n <= 5);
  assert_true(info.recorded >= 2 * THREADS * tu_scale(20000));
  for (size_t i = 0; i < n; i++) {
    const sp__hist_event *e = &events[i];
    if (i) assert_true(e->seq > events[i - 1].seq);
    assert_true(e->seq >= info.recorded - 5);
    assert_true(e->kind == SP__HIST_ALLOC || e->kind == SP__HIST_FREE ||
                e->kind == SP__HIST_SEGMENT_MAP);
    assert_true(e->stream >= 1 && e->stream <= THREADS);
    assert_int_equal(e->thread, w[e->stream - 1].tid);
  }
  print_message("wrapping: %llu recorded, %llu dropped (slot busy), %zu read\n",
                (unsigned long long)info.recorded, (unsigned long long)info.dropped, n);
  sp_device_close(dev);
}

static void test_env(void **state) {
  (void)state;
  setenv("STREAMPOOL_MEMORY_HISTORY", "2048", 1);
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp__history_info info;
  (void)read_events(dev, &info);
  assert_true(info.enabled);
  assert_int_equal(info.capacity, 2048);
  sp_device_close(dev);
  setenv("STREAMPOOL_MEMORY_HISTORY", "12x", 1);
  sp_device_config cfg = {.backend = "host"};
  SP_CHECK_STATUS(sp_device_open(&cfg, &dev), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "STREAMPOOL_MEMORY_HISTORY"));
  setenv("STREAMPOOL_MEMORY_HISTORY", "", 1); /* empty: an error, as for every variable */
  SP_CHECK_STATUS(sp_device_open(&cfg, &dev), SP_ERR_INVALID_ARGUMENT);
  setenv("STREAMPOOL_MEMORY_HISTORY", "0", 1);
  dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  (void)read_events(dev, &info);
  assert_false(info.enabled);
  sp_device_close(dev);
  unsetenv("STREAMPOOL_MEMORY_HISTORY");
}

/* The JSON snapshot has the same events as the ring. */
static void test_snapshot_events(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  SP_CHECK_OK(sp_memory_history_enable(dev, 100));
  void *p;
  SP_CHECK_OK(sp_alloc(dev, 700, &dev->streams[2], &p));
  SP_CHECK_OK(sp_free(dev, p));
  size_t n = read_events(dev, NULL);
  char *json;
  SP_CHECK_OK(sp_memory_snapshot_json(dev, &json));
  cJSON *doc = cJSON_Parse(json);
  assert_non_null(doc);
  cJSON *ev = cJSON_GetObjectItem(doc, "events"), *hist = cJSON_GetObjectItem(doc, "history");
  assert_int_equal(cJSON_GetArraySize(ev), n);
  assert_int_equal(cJSON_GetObjectItem(hist, "kept")->valuedouble, (double)n);
  assert_int_equal(cJSON_GetObjectItem(hist, "capacity")->valuedouble, 100);
  for (size_t i = 0; i < n; i++) {
    cJSON *e = cJSON_GetArrayItem(ev, (int)i);
    assert_string_equal(cJSON_GetObjectItem(e, "kind")->valuestring,
                        sp__history_kind_name(events[i].kind));
    assert_int_equal(cJSON_GetObjectItem(e, "bytes")->valuedouble, (double)events[i].bytes);
    assert_int_equal(cJSON_GetObjectItem(e, "stream")->valuedouble, events[i].stream);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(e, "peer")));
    char addr[32];
    snprintf(addr, sizeof(addr), "0x%lx", (unsigned long)events[i].address);
    assert_string_equal(cJSON_GetObjectItem(e, "address")->valuestring, addr);
    assert_true(cJSON_GetObjectItem(e, "t_ns")->valuedouble >= 0);
  }
  cJSON_Delete(doc);
  sp_string_free(json);
  sp_device_close(dev);
}

int main(void) {
  unsetenv("STREAMPOOL_MEMORY_HISTORY");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_off_records_nothing),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_kinds_and_order),
      cmocka_unit_test(test_reuse_wait),
      cmocka_unit_test(test_oom),
      cmocka_unit_test(test_wraparound_and_reenable),
      cmocka_unit_test(test_threads_lossless),
      cmocka_unit_test(test_threads_wrapping),
      cmocka_unit_test(test_env),
      cmocka_unit_test(test_snapshot_events),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
