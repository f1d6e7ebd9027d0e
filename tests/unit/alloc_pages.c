/* Goal (issue 14, fragmentation): the whole free 2 MiB pages of a segment that a live block pins go
 * back to the device (reserved shrinks by exactly those pages), come back when a block over them is
 * allocated (reserved grows by exactly the pages committed, and the block holds what is written to
 * it), never past the memory limit, and the snapshot and the history say so.
 * Method: host devices, one stream. A 3 MiB block pins a 20 MiB large-pool segment; sp_empty_cache
 * must leave 4 MiB reserved (pages 0-1, under the block; pages 2-9 decommitted); an 8 MiB block
 * carved at 3 MiB must commit pages 2-5 (reserved 12 MiB) and read back a full memset. Under a
 * 20 MiB limit with a 10 MiB block elsewhere (reserved 14 MiB), the same 8 MiB request needs 8 MiB
 * of commits where 6 are left: SP_ERR_LIMIT with the numbers, nothing changed (the counters of the
 * refused takes undone), and a 6 MiB request
 * (6 MiB of commits) then succeeds, reaching the limit exactly.
 */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define MIB ((size_t)1024 * 1024)

static sp_device *open_host(size_t limit) {
  sp_device_config cfg = {.backend = "host", .streams = 2, .memory_limit = limit};
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  return dev;
}

static size_t reserved(sp_device *dev) {
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  return m.reserved_bytes;
}

/* Fills n bytes of p with v on s and checks every byte read back. */
static void fill_and_check(sp_stream *s, void *p, size_t n, unsigned char v) {
  unsigned char *back = malloc(n);
  assert_non_null(back);
  memset(back, ~v, n);
  SP_CHECK_OK(sp_memset_async(s, p, v, n));
  SP_CHECK_OK(sp_memcpy_async(s, back, p, n));
  SP_CHECK_OK(sp_stream_sync(s));
  for (size_t i = 0; i < n; i++)
    if (back[i] != v) fail_msg("byte %zu of %zu: 0x%02x, want 0x%02x", i, n, back[i], v);
  free(back);
}

static void test_decommit_and_commit(void **state) {
  (void)state;
  sp_device *dev = open_host(0);
  SP_CHECK_OK(sp_memory_history_enable(dev, 256));
  sp_stream *s = sp_stream_default(dev);
  void *pin = NULL, *big = NULL;
  SP_CHECK_OK(sp_alloc(dev, 3 * MIB, s, &pin));
  assert_int_equal(reserved(dev), 20 * MIB);
  SP_CHECK_OK(sp_empty_cache(dev));
  assert_int_equal(reserved(dev), 4 * MIB); /* pages 2..9 wholly free: decommitted */
  char *json = NULL;
  SP_CHECK_OK(sp_memory_snapshot_json(dev, &json));
  assert_non_null(strstr(json, "\"committed\":4194304"));
  assert_non_null(strstr(json, "\"kind\":\"page_decommit\""));
  sp_string_free(json);

  SP_CHECK_OK(sp_alloc(dev, 8 * MIB, s, &big));
  assert_ptr_equal(big, (char *)pin + 3 * MIB); /* carved from the pinned segment's free pages */
  assert_int_equal(reserved(dev), 12 * MIB);    /* pages 2..5 committed again */
  fill_and_check(s, big, 8 * MIB, 0x5d);
  fill_and_check(s, pin, 3 * MIB, 0xa2);
  SP_CHECK_OK(sp_memory_snapshot_json(dev, &json));
  assert_non_null(strstr(json, "\"kind\":\"page_commit\""));
  sp_string_free(json);

  SP_CHECK_OK(sp_free(dev, big));
  SP_CHECK_OK(sp_free(dev, pin));
  SP_CHECK_OK(sp_empty_cache(dev));
  assert_int_equal(reserved(dev), 0);
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.reserved_bytes_peak, 20 * MIB);
  sp_device_close(dev);
}

static void test_commit_under_limit(void **state) {
  (void)state;
  sp_device *dev = open_host(20 * MIB);
  sp_stream *s = sp_stream_default(dev);
  void *pin = NULL, *other = NULL, *big = NULL;
  SP_CHECK_OK(sp_alloc(dev, 3 * MIB, s, &pin));
  SP_CHECK_OK(sp_empty_cache(dev));
  SP_CHECK_OK(sp_alloc(dev, 10 * MIB, s, &other)); /* a segment of its own */
  assert_int_equal(reserved(dev), 14 * MIB);
  sp_memory_stats before, m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &before));
  SP_CHECK_STATUS(sp_alloc(dev, 8 * MIB, s, &big), SP_ERR_LIMIT);
  assert_non_null(strstr(sp_last_error(), "memory limit"));
  assert_null(big);
  assert_int_equal(reserved(dev), 14 * MIB);
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.allocated_bytes, 13 * MIB);
  assert_true(m.reserved_bytes_peak <= 20 * MIB);
  /* the takes whose commits were refused are undone, counters included */
  assert_int_equal(m.allocs, before.allocs);
  assert_int_equal(m.cache_hits, before.cache_hits);
  assert_int_equal(m.cross_stream_reuses, before.cross_stream_reuses);

  SP_CHECK_OK(sp_alloc(dev, 6 * MIB, s, &big)); /* 6 MiB of commits: exactly what is left */
  assert_int_equal(reserved(dev), 20 * MIB);
  fill_and_check(s, big, 6 * MIB, 0x31);
  SP_CHECK_OK(sp_free(dev, big));
  SP_CHECK_OK(sp_free(dev, other));
  SP_CHECK_OK(sp_free(dev, pin));
  SP_CHECK_OK(sp_empty_cache(dev));
  assert_int_equal(reserved(dev), 0);
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decommit_and_commit),
      cmocka_unit_test(test_commit_under_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
