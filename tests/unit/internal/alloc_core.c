/* White-box unit tests of the caching allocator.
 *
 * Goal: size rounding and bins, block split/coalesce, exact stats after scripted operations, a
 * snapshot that parses and matches, and every bad input rejected with the allocator unchanged.
 * Method: pure functions checked against hand-computed values; then a host device driven through
 * the public API, comparing sp_memory_stats with what the test did, the snapshot's blocks with the
 * live pointers, and running sp__alloc_validate after each step (including after each bad input).
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <string.h>

#include "alloc/alloc_internal.h"
#include "core/device.h"
#include "testutil.h"

#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)

static void check_valid(sp_device *dev) { SP_CHECK_OK(sp__alloc_validate(dev->alloc)); }

static void test_rounding(void **state) {
  (void)state;
  size_t r = 0;
  assert_true(sp__size_round(1, &r));
  assert_int_equal(r, 512);
  assert_true(sp__size_round(512, &r));
  assert_int_equal(r, 512);
  assert_true(sp__size_round(513, &r));
  assert_int_equal(r, 1024);
  assert_false(sp__size_round(SIZE_MAX, &r));
  assert_false(sp__size_round(SIZE_MAX - 100, &r));
  assert_int_equal(sp__size_pool(MIB), SP__POOL_SMALL);
  assert_int_equal(sp__size_pool(MIB + 512), SP__POOL_LARGE);
  assert_int_equal(sp__size_segment(512), 2 * MIB);
  assert_int_equal(sp__size_segment(MIB), 2 * MIB);
  assert_int_equal(sp__size_segment(MIB + 512), 20 * MIB);
  assert_int_equal(sp__size_segment(10 * MIB - 512), 20 * MIB);
  assert_int_equal(sp__size_segment(10 * MIB), 10 * MIB);
  assert_int_equal(sp__size_segment(11 * MIB + 512), 12 * MIB);
  assert_int_equal(sp__size_segment(SIZE_MAX - 511), 0);
  /* bins are monotonic and within range */
  unsigned prev = 0;
  for (size_t b = 512; b < ((size_t)1 << 40); b += b / 7 + 512) {
    unsigned bin = sp__size_bin(b - b % 512);
    assert_true(bin >= prev && bin < SP__BINS);
    prev = bin;
  }
  assert_true(sp__size_bin(SIZE_MAX & ~(size_t)511) < SP__BINS);
}

static void test_split_coalesce(void **state) {
  (void)state;
  static char mem[8 * 512];
  sp__segment seg = {.base = mem, .bytes = sizeof(mem), .pool = SP__POOL_SMALL};
  sp__block a = {.ptr = mem, .bytes = sizeof(mem), .seg = &seg, .state = SP__BLOCK_CACHED};
  sp__block b, c;
  seg.first = &a;
  sp__block_split(&a, 1024, &b);
  assert_int_equal(a.bytes, 1024);
  assert_ptr_equal(b.ptr, mem + 1024);
  assert_int_equal(b.bytes, sizeof(mem) - 1024);
  assert_ptr_equal(a.next, &b);
  assert_ptr_equal(b.prev, &a);
  sp__block_split(&b, 512, &c);
  assert_ptr_equal(c.prev, &b);
  assert_ptr_equal(b.next, &c);
  assert_int_equal(a.bytes + b.bytes + c.bytes, sizeof(mem));
  c.stamp = 7;
  assert_ptr_equal(sp__block_absorb_next(&b), &c);
  assert_int_equal(b.bytes, sizeof(mem) - 1024);
  assert_int_equal(b.stamp, 7);
  assert_null(b.next);
  assert_ptr_equal(sp__block_absorb_next(&a), &b);
  assert_int_equal(a.bytes, sizeof(mem));
  assert_null(a.next);
  /* bins: find prefers the smallest fit and honours the stamp bound */
  static sp__bins bins;
  sp__block x = {.ptr = mem, .bytes = 4096, .seg = &seg, .state = SP__BLOCK_CACHED, .stamp = 1};
  sp__block y = {
      .ptr = mem + 4096, .bytes = 2048, .seg = &seg, .state = SP__BLOCK_CACHED, .stamp = 5};
  sp__bins_insert(&bins, &x);
  sp__bins_insert(&bins, &y);
  assert_int_equal(bins.bytes, 6144);
  assert_ptr_equal(sp__bins_find(&bins, 1024, UINT64_MAX), &y);
  assert_ptr_equal(sp__bins_find(&bins, 1024, 4), &x);
  assert_null(sp__bins_find(&bins, 8192, UINT64_MAX));
  sp__bins_remove(&bins, &y);
  assert_ptr_equal(sp__bins_find(&bins, 512, UINT64_MAX), &x);
  sp__bins_remove(&bins, &x);
  assert_int_equal(bins.count, 0);
  for (unsigned w = 0; w < SP__BIN_WORDS; w++) assert_int_equal(bins.nonempty[w], 0);
}

static void expect_stats(sp_device *dev, size_t allocated, size_t peak, uint64_t allocs,
                         uint64_t frees) {
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.allocated_bytes != allocated || m.allocated_bytes_peak != peak || m.allocs != allocs ||
      m.frees != frees)
    fail_msg(
        "stats: allocated %zu (want %zu) peak %zu (want %zu) allocs %llu (want %llu) "
        "frees %llu (want %llu)",
        m.allocated_bytes, allocated, m.allocated_bytes_peak, peak, (unsigned long long)m.allocs,
        (unsigned long long)allocs, (unsigned long long)m.frees, (unsigned long long)frees);
}

static void test_stats_exact(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s1 = &dev->streams[1], *s2 = &dev->streams[2];
  void *p[4];
  SP_CHECK_OK(sp_alloc(dev, 1000, s1, &p[0])); /* 1024 */
  SP_CHECK_OK(sp_alloc(dev, 512, s1, &p[1]));  /* 512, same segment */
  expect_stats(dev, 1536, 1536, 2, 0);
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.reserved_bytes, 2 * MIB);
  assert_int_equal(m.backend_allocs, 1);
  assert_int_equal(m.cache_hits, 1);
  assert_ptr_equal((char *)p[1], (char *)p[0] + 1024); /* split in address order */
  SP_CHECK_OK(sp_free(dev, p[0]));
  expect_stats(dev, 512, 1536, 2, 1);
  SP_CHECK_OK(sp_alloc(dev, 1024, s1, &p[2])); /* same-stream reuse at once */
  assert_ptr_equal(p[2], p[0]);
  SP_CHECK_OK(sp_free(dev, p[2]));
  SP_CHECK_OK(sp_free(dev, p[1]));
  check_valid(dev);
  /* both sit whole in stream 1's front; a 1 MiB request misses it and the bins serve it from the
   * segment's rest, leaving the front alone */
  assert_int_equal(dev->alloc->caches[1].n_front, 2);
  SP_CHECK_OK(sp_alloc(dev, MIB, s1, &p[3]));
  assert_ptr_equal(p[3], (char *)p[0] + 1536);
  SP_CHECK_OK(sp_free(dev, p[3]));
  /* once the front is flushed the blocks coalesce: the segment is one block again, 1 MiB fits
   * at its start */
  sp__front_flush_all(dev->alloc);
  assert_int_equal(dev->alloc->caches[1].n_front, 0);
  check_valid(dev);
  SP_CHECK_OK(sp_alloc(dev, MIB, s1, &p[3]));
  assert_ptr_equal(p[3], p[0]);
  SP_CHECK_OK(sp_free(dev, p[3]));
  expect_stats(dev, 0, 1536 > MIB ? 1536 : MIB, 5, 5);
  /* peaks across streams, serially: stream 2 reusing freed bytes does not raise the peak */
  SP_CHECK_OK(sp_memory_stats_reset_peaks(dev));
  SP_CHECK_OK(sp_alloc(dev, 3 * MIB, s1, &p[0]));
  SP_CHECK_OK(sp_free(dev, p[0]));
  SP_CHECK_OK(sp_alloc(dev, 3 * MIB, s2, &p[1]));
  expect_stats(dev, 3 * MIB, 3 * MIB, 7, 6);
  SP_CHECK_OK(sp_alloc(dev, 2 * MIB, s1, &p[2]));
  expect_stats(dev, 5 * MIB, 5 * MIB, 8, 6);
  SP_CHECK_OK(sp_free(dev, p[1]));
  SP_CHECK_OK(sp_free(dev, p[2]));
  check_valid(dev);
  SP_CHECK_OK(sp_empty_cache(dev));
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.reserved_bytes, 0);
  assert_int_equal(m.backend_allocs, m.backend_frees);
  check_valid(dev);
  sp_device_close(dev);
}

static void test_snapshot(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  void *p[3];
  SP_CHECK_OK(sp_alloc(dev, 4096, &dev->streams[1], &p[0]));
  SP_CHECK_OK(sp_alloc(dev, 3 * MIB, &dev->streams[2], &p[1]));
  SP_CHECK_OK(sp_alloc(dev, 512, &dev->streams[1], &p[2]));
  SP_CHECK_OK(sp_free(dev, p[2]));
  char *json = NULL;
  SP_CHECK_OK(sp_memory_snapshot_json(dev, &json));
  cJSON *root = cJSON_Parse(json);
  assert_non_null(root);
  cJSON *segs = cJSON_GetObjectItem(root, "segments");
  assert_int_equal(cJSON_GetArraySize(segs), 2);
  size_t live = 0, cached = 0, total = 0;
  cJSON *seg;
  cJSON_ArrayForEach(seg, segs) {
    size_t seg_bytes = (size_t)cJSON_GetObjectItem(seg, "bytes")->valuedouble, sum = 0;
    cJSON *b;
    cJSON_ArrayForEach(b, cJSON_GetObjectItem(seg, "blocks")) {
      size_t bytes = (size_t)cJSON_GetObjectItem(b, "bytes")->valuedouble;
      assert_int_equal((size_t)cJSON_GetObjectItem(b, "offset")->valuedouble, sum);
      sum += bytes;
      const char *st = cJSON_GetObjectItem(b, "state")->valuestring;
      if (!strcmp(st, "live")) live += bytes;
      else if (!strcmp(st, "cached")) cached += bytes;
      else fail_msg("unexpected state %s", st);
    }
    assert_int_equal(sum, seg_bytes);
    total += seg_bytes;
  }
  assert_int_equal(live, 4096 + 3 * MIB);
  assert_int_equal(total, 22 * MIB);
  assert_int_equal(cached, total - live);
  cJSON *stats = cJSON_GetObjectItem(root, "stats");
  assert_int_equal((size_t)cJSON_GetObjectItem(stats, "allocated_bytes")->valuedouble, live);
  assert_int_equal((size_t)cJSON_GetObjectItem(stats, "reserved_bytes")->valuedouble, total);
  cJSON_Delete(root);
  sp_string_free(json);
  sp_string_free(NULL);
  SP_CHECK_OK(sp_free(dev, p[0]));
  SP_CHECK_OK(sp_free(dev, p[1]));
  sp_device_close(dev);
}

static void test_bad_input(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_device *other = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s1 = &dev->streams[1];
  void *p = NULL, *q = NULL, *untouched = (void *)0x1234;
  SP_CHECK_OK(sp_alloc(dev, 4096, s1, &p));
  SP_CHECK_OK(sp_alloc(other, 4096, &other->streams[1], &q));
  sp_memory_stats before, after;
  SP_CHECK_OK(sp_memory_stats_get(dev, &before));
  void *out = untouched;
  SP_CHECK_STATUS(sp_alloc(NULL, 16, s1, &out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_alloc(dev, 0, s1, &out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_alloc(dev, SIZE_MAX, s1, &out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_alloc(dev, SIZE_MAX / 2, s1, &out), SP_ERR_OUT_OF_MEMORY);
  assert_non_null(strstr(sp_last_error(), "total"));
  SP_CHECK_STATUS(sp_alloc(dev, 16, s1, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_alloc(dev, 16, &other->streams[1], &out), SP_ERR_INVALID_ARGUMENT);
  assert_ptr_equal(out, untouched);
  SP_CHECK_STATUS(sp_free(NULL, p), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(sp_free(dev, NULL));
  SP_CHECK_STATUS(sp_free(dev, (char *)p + 512), SP_ERR_INVALID_HANDLE); /* interior */
  SP_CHECK_STATUS(sp_free(dev, (char *)p + 1), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_free(dev, &before), SP_ERR_INVALID_HANDLE); /* foreign */
  SP_CHECK_STATUS(sp_free(dev, q), SP_ERR_INVALID_HANDLE);       /* other device */
  assert_non_null(strstr(sp_last_error(), "not a live block"));
  SP_CHECK_STATUS(sp_record_stream(dev, (char *)p + 512, s1), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_record_stream(dev, p, &other->streams[1]), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_record_stream(dev, p, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_record_stream(dev, NULL, s1), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memory_stats_get(dev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memory_stats_get(NULL, &after), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memory_snapshot_json(dev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_empty_cache(NULL), SP_ERR_INVALID_ARGUMENT);
  check_valid(dev);
  SP_CHECK_OK(sp_memory_stats_get(dev, &after));
  assert_memory_equal(&before, &after, sizeof(before));
  SP_CHECK_OK(sp_free(dev, p));
  SP_CHECK_STATUS(sp_free(dev, p), SP_ERR_INVALID_HANDLE); /* double free */
  check_valid(dev);
  SP_CHECK_OK(sp_memory_stats_get(dev, &after));
  assert_int_equal(after.frees, 1);
  assert_int_equal(after.allocated_bytes, 0);
  /* memory limit */
  sp_device_config cfg = {.backend = "host", .streams = 4, .memory_limit = 4 * MIB};
  sp_device *lim = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &lim));
  SP_CHECK_STATUS(sp_alloc(lim, 5 * MIB, &lim->streams[1], &out), SP_ERR_LIMIT);
  void *a1, *a2, *a3;
  SP_CHECK_OK(sp_alloc(lim, MIB, &lim->streams[1], &a1));
  SP_CHECK_OK(sp_alloc(lim, MIB, &lim->streams[2], &a2)); /* the rest of stream 1's segment */
  SP_CHECK_OK(sp_alloc(lim, MIB, &lim->streams[3], &a3)); /* a second segment: 4 MiB */
  SP_CHECK_OK(sp_alloc(lim, MIB, &lim->streams[3], &out));
  SP_CHECK_STATUS(sp_alloc(lim, MIB, &lim->streams[3], &out), SP_ERR_LIMIT);
  assert_non_null(strstr(sp_last_error(), "limit"));
  check_valid(lim);
  SP_CHECK_OK(sp_free(lim, a2));
  SP_CHECK_OK(sp_alloc(lim, MIB, &lim->streams[3], &a2)); /* reused from the cache */
  SP_CHECK_OK(sp_free(lim, a2));
  SP_CHECK_OK(sp_free(lim, out));
  SP_CHECK_OK(sp_free(lim, a3));
  SP_CHECK_OK(sp_free(lim, a1));
  SP_CHECK_OK(sp_empty_cache(lim));
  check_valid(lim);
  sp_device_close(lim);
  SP_CHECK_OK(sp_free(other, q));
  sp_device_close(other);
  sp_device_close(dev);
}

typedef struct bind_arg {
  sp_device *dev;
  sp_status st; /* what sp_stream_current returned on the other thread */
} bind_arg;

static void *bind_other(void *p) {
  bind_arg *arg = p;
  sp_stream *s = NULL;
  arg->st = sp_stream_current(arg->dev, &s);
  return NULL;
}

/* A rejected sp_alloc with s NULL binds no current stream: in exclusive mode with one slot, a
 * failed call must not take the slot away from other threads. */
static void test_bad_input_binds_nothing(void **state) {
  (void)state;
  sp_device_config cfg = {.backend = "host", .streams = 2, .stream_mode = SP_STREAMS_EXCLUSIVE};
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  void *untouched = (void *)0x1234, *out = untouched;
  SP_CHECK_STATUS(sp_alloc(dev, 0, NULL, &out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_alloc(dev, 16, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_alloc(dev, SIZE_MAX, NULL, &out), SP_ERR_INVALID_ARGUMENT);
  assert_ptr_equal(out, untouched);
  bind_arg arg = {dev, SP_ERR_BACKEND};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, bind_other, &arg), 0);
  pthread_join(t, NULL);
  if (arg.st != SP_OK)
    fail_msg("another thread could not bind the only slot after rejected sp_alloc calls: %s",
             sp_status_str(arg.st));
  check_valid(dev);
  sp_device_close(dev);
}

/* A block used on another stream is pending after free, then comes back once that stream is done.
 */
static void test_pending(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s1 = &dev->streams[1], *s2 = &dev->streams[2];
  void *p, *q;
  static char host[4096];
  SP_CHECK_OK(sp_alloc(dev, 4096, s1, &p));
  SP_CHECK_OK(sp_memcpy_async(s2, host, p, sizeof(host)));
  SP_CHECK_OK(sp_record_stream(dev, p, s2));
  SP_CHECK_OK(sp_free(dev, p));
  check_valid(dev);
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.deferred_frees, 1);
  assert_int_equal(m.allocated_bytes, 0);
  SP_CHECK_OK(sp_alloc(dev, 4096, s1, &q));
  assert_ptr_not_equal(q, p); /* p is pending (or was, if s2 finished: then it may be reused) */
  SP_CHECK_OK(sp_free(dev, q));
  SP_CHECK_OK(sp_empty_cache(dev));
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.reserved_bytes, 0);
  check_valid(dev);
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rounding),
      cmocka_unit_test(test_split_coalesce),
      cmocka_unit_test(test_stats_exact),
      cmocka_unit_test(test_snapshot),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_pending),
      cmocka_unit_test(test_bad_input_binds_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
