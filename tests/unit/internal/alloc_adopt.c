/* Goal: before the device grows, memory freed on several idle streams next to each other in one
 * segment becomes one block of the requesting stream, so a request that fits the free space but
 * no single stream's piece of it is served without a new segment; a stream with work still queued
 * keeps its blocks (the request grows the device instead and never gets memory that work may
 * still touch). Method: one 20 MiB segment split between stream 0 (1.5 MiB, first) and stream 1
 * (the 18.5 MiB after it), both freed; stream 2 asks for 19.5 MiB. Checked through
 * backend_allocs, reserved bytes, the pointer returned and the allocator's validator.
 */
#include <stdint.h>

#include "alloc/alloc_internal.h"
#include "core/device.h"
#include "testutil.h"

#define MIB ((size_t)1 << 20)

static void check_valid(sp_device *dev) { SP_CHECK_OK(sp__alloc_validate(dev->alloc)); }

static sp_memory_stats stats(sp_device *dev) {
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  return m;
}

/* One large segment: x (1.5 MiB) on stream 0 at its base, y (18 MiB) after it on stream 1. */
static void split_segment(sp_device *dev, void **x, void **y) {
  SP_CHECK_OK(sp_alloc(dev, 3 * MIB / 2, &dev->streams[0], x));
  SP_CHECK_OK(sp_alloc(dev, 18 * MIB, &dev->streams[1], y));
  sp_memory_stats m = stats(dev);
  assert_int_equal(m.backend_allocs, 1);
  assert_int_equal(m.reserved_bytes, SP__LARGE_SEGMENT);
  assert_ptr_equal((char *)*x + 3 * MIB / 2, *y); /* y is carved from x's segment */
}

static void test_adopt_merges_idle_streams(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  void *x, *y, *z;
  split_segment(dev, &x, &y);
  SP_CHECK_OK(sp_free(dev, x)); /* kept whole in stream 0's front */
  SP_CHECK_OK(sp_free(dev, y)); /* merged with the 0.5 MiB tail in stream 1's bins */
  check_valid(dev);
  SP_CHECK_OK(sp_alloc(dev, 39 * MIB / 2, &dev->streams[2], &z));
  sp_memory_stats m = stats(dev);
  if (m.backend_allocs != 1)
    fail_msg(
        "19.5 MiB on stream 2 grew the device (%llu backend allocations, reserved %zu) "
        "though streams 0 and 1 had freed 20 MiB next to each other",
        (unsigned long long)m.backend_allocs, m.reserved_bytes);
  assert_ptr_equal(z, x);
  assert_int_equal(m.reserved_bytes, SP__LARGE_SEGMENT);
  check_valid(dev);
  SP_CHECK_OK(sp_free(dev, z));
  check_valid(dev);
  sp_device_close(dev);
}

static void test_busy_stream_keeps_blocks(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  void *x, *y, *z;
  split_segment(dev, &x, &y);
  tu_gate gate;
  tu_gate_init(&gate, 0);
  SP_CHECK_OK(sp_launch_host_func(&dev->streams[1], tu_gate_fn, &gate));
  SP_CHECK_OK(sp_memset_async(&dev->streams[1], y, 0xAA, 18 * MIB)); /* queued behind the gate */
  SP_CHECK_OK(sp_free(dev, x));
  SP_CHECK_OK(sp_free(dev, y));
  SP_CHECK_OK(sp_alloc(dev, 39 * MIB / 2, &dev->streams[2], &z));
  uintptr_t base = (uintptr_t)x, end = base + SP__LARGE_SEGMENT, zp = (uintptr_t)z;
  if (zp < end && zp + 39 * MIB / 2 > base)
    fail_msg("stream 2 got %p inside the segment whose stream 1 still has work queued", z);
  assert_int_equal(stats(dev).backend_allocs, 2);
  check_valid(dev);
  tu_gate_open(&gate);
  SP_CHECK_OK(sp_device_sync(dev));
  SP_CHECK_OK(sp_free(dev, z));
  check_valid(dev);
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_adopt_merges_idle_streams),
      cmocka_unit_test(test_busy_stream_keeps_blocks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
