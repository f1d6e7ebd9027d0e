/* Goal: sp_device_open/close and the device queries do what the contract says on good input and
 * reject every bad input with the documented status, leaving out-parameters untouched and nothing
 * leaked (host-memory failures included).
 * Method: open host devices with valid and invalid configs; compare the effective config; check
 * the backend registry queries; inject host-allocation failures at every allocation of an open
 * through sp_host_allocator_set and count live allocations before and after; check that a device
 * opened at a recycled address never inherits a stale current-stream binding.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "testutil.h"
#include "tu_host_faults.h"

static sp_device *const SENTINEL = (sp_device *)(uintptr_t)0x5151;

static void open_defaults(void **state) {
  (void)state;
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(NULL, &dev));
  sp_device_config c;
  SP_CHECK_OK(sp_device_config_get(dev, &c));
  assert_string_equal(c.backend, sp_device_backend(dev));
  assert_int_equal(c.streams, 32);
  assert_int_equal(c.stream_mode, SP_STREAMS_ROUND_ROBIN);
  assert_int_equal(c.index, 0);
  assert_non_null(sp_device_name(dev));
  assert_true(strlen(sp_device_name(dev)) > 0);
  size_t f = 0, t = 0;
  SP_CHECK_OK(sp_device_memory_info(dev, &f, &t));
  if (f > t) fail_msg("free %zu > total %zu", f, t);
  SP_CHECK_OK(sp_device_sync(dev));
  sp_device_close(dev);
  sp_device_close(NULL);
}

static void open_config_kept(void **state) {
  (void)state;
  sp_device_config cfg = {.backend = "host",
                          .streams = 7,
                          .stream_mode = SP_STREAMS_EXCLUSIVE,
                          .slot_wait_ms = 25,
                          .memory_limit = 1 << 20,
                          .alloc_flags = SP_ALLOC_NO_INFLIGHT_REUSE};
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  sp_device_config c;
  SP_CHECK_OK(sp_device_config_get(dev, &c));
  assert_string_equal(c.backend, "host");
  assert_int_equal(c.streams, 7);
  assert_int_equal(c.stream_mode, SP_STREAMS_EXCLUSIVE);
  assert_int_equal(c.slot_wait_ms, 25);
  assert_int_equal(c.memory_limit, 1 << 20);
  assert_int_equal(c.alloc_flags, SP_ALLOC_NO_INFLIGHT_REUSE);
  assert_string_equal(sp_device_backend(dev), "host");
  sp_device_close(dev);
}

static void expect_open_fails(const sp_device_config *cfg, sp_status want, const char *needle) {
  sp_device *dev = SENTINEL;
  sp_status st = sp_device_open(cfg, &dev);
  if (st != want)
    fail_msg("open returned %s, expected %s (%s)", sp_status_str(st), sp_status_str(want),
             sp_last_error());
  assert_ptr_equal(dev, SENTINEL);
  if (needle && !strstr(sp_last_error(), needle))
    fail_msg("message '%s' does not mention '%s'", sp_last_error(), needle);
}

static void open_bad_config(void **state) {
  (void)state;
  SP_CHECK_STATUS(sp_device_open(NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_device_config c = {.backend = "host"};
  c.streams = 1;
  expect_open_fails(&c, SP_ERR_INVALID_ARGUMENT, "streams");
  c.streams = SP_STREAMS_MAX + 1;
  expect_open_fails(&c, SP_ERR_INVALID_ARGUMENT, "streams");
  c.streams = 0;
  c.stream_mode = (sp_stream_mode)7;
  expect_open_fails(&c, SP_ERR_INVALID_ARGUMENT, "stream_mode");
  c.stream_mode = SP_STREAMS_ROUND_ROBIN;
  c.alloc_flags = 0x80;
  expect_open_fails(&c, SP_ERR_INVALID_ARGUMENT, "alloc_flags");
  c.alloc_flags = 0;
  c.index = 1000;
  expect_open_fails(&c, SP_ERR_NO_DEVICE, "1000");
  c.index = -1;
  expect_open_fails(&c, SP_ERR_NO_DEVICE, "-1");
  c.index = 0;
  c.backend = "tpu";
  expect_open_fails(&c, SP_ERR_INVALID_ARGUMENT, "tpu");
  if (!sp_backend_compiled("cuda")) {
    c.backend = "cuda";
    expect_open_fails(&c, SP_ERR_UNSUPPORTED, "cuda");
  }
  c.backend = "host";
  c.streams = SP_STREAMS_MAX; /* the largest pool is fine */
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&c, &dev));
  sp_device_close(dev);
}

static void null_device_everywhere(void **state) {
  (void)state;
  sp_device_config c;
  size_t f, t;
  sp_event ev = {0};
  sp_stream *s = NULL;
  SP_CHECK_STATUS(sp_device_sync(NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_device_config_get(NULL, &c), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_device_memory_info(NULL, &f, &t), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_current(NULL, &s), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_release_current(NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_acquire(NULL, 0, &ev), SP_ERR_INVALID_ARGUMENT);
  assert_null(sp_device_backend(NULL));
  assert_null(sp_device_name(NULL));
  assert_null(sp_stream_default(NULL));
  sp_device *dev = tu_open_host(0, SP_STREAMS_ROUND_ROBIN);
  SP_CHECK_STATUS(sp_device_config_get(dev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_device_memory_info(dev, NULL, &t), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_device_memory_info(dev, &f, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_device_close(dev);
}

static void registry_queries(void **state) {
  (void)state;
  int n = -1;
  assert_int_equal(sp_backend_compiled("host"), 1);
  assert_int_equal(sp_backend_compiled("tpu"), 0);
  assert_int_equal(sp_backend_compiled(NULL), 0);
  SP_CHECK_OK(sp_device_count("host", &n));
  if (n < 1) fail_msg("host device count %d, expected >= 1", n);
  n = -1;
  SP_CHECK_OK(sp_device_count(NULL, &n));
  if (n < 1) fail_msg("best backend device count %d, expected >= 1", n);
  n = -7;
  SP_CHECK_STATUS(sp_device_count("tpu", &n), SP_ERR_UNSUPPORTED);
  assert_int_equal(n, -7);
  SP_CHECK_STATUS(sp_device_count("host", NULL), SP_ERR_INVALID_ARGUMENT);
#ifndef SP_HAVE_CUDA
  assert_int_equal(sp_backend_compiled("cuda"), 0);
  SP_CHECK_STATUS(sp_device_count("cuda", &n), SP_ERR_UNSUPPORTED);
#endif
}

static void many_open_at_once(void **state) {
  (void)state;
  enum { N = 6 };
  sp_device *d[N];
  for (int i = 0; i < N; i++) d[i] = tu_open_host(2 + (unsigned)i, SP_STREAMS_ROUND_ROBIN);
  for (int i = 0; i < N; i++) {
    sp_stream *s = NULL;
    SP_CHECK_OK(sp_stream_current(d[i], &s));
    assert_ptr_equal(sp_stream_device(s), d[i]);
  }
  for (int i = 0; i < N; i++) sp_device_close(d[N - 1 - i]);
}

/* A binding made on a closed device must not match a new device at the same address. */
static void recycled_address(void **state) {
  (void)state;
  int same_address = 0;
  for (int round = 0; round < 50; round++) {
    sp_device *a = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
    sp_stream *sa = NULL;
    SP_CHECK_OK(sp_stream_current(a, &sa));
    sp_device_close(a);
    sp_device *b = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
    if (b == a) same_address++;
    sp_stream *sb = NULL;
    SP_CHECK_OK(sp_stream_current(b, &sb));
    if (sp_stream_device(sb) != b) fail_msg("round %d: current stream of another device", round);
    sp_device_close(b);
  }
  printf("recycled address seen in %d of 50 rounds\n", same_address);
}

/* ---- host-allocation fault injection ---- */

static void host_memory_faults(void **state) {
  (void)state;
  tu_hostmem_install(); /* tests/common/tu_host_faults.h: the kth allocation fails */
  sp_device_config cfg = {.backend = "host", .streams = 4};
  int k = 0;
  for (; k < 10000; k++) {
    long before = tu_hostmem_live();
    tu_hostmem_arm((unsigned long)k, 0, 0);
    sp_device *dev = SENTINEL;
    sp_status st = sp_device_open(&cfg, &dev);
    tu_hostmem_disarm();
    if (st == SP_OK) {
      sp_device_close(dev);
      if (tu_hostmem_live() != before)
        fail_msg("after a successful open+close: %ld live allocations, expected %ld",
                 tu_hostmem_live(), before);
      break;
    }
    if (st != SP_ERR_HOST_MEMORY)
      fail_msg("allocation %d failed: open returned %s (%s), expected SP_ERR_HOST_MEMORY", k,
               sp_status_str(st), sp_last_error());
    assert_ptr_equal(dev, SENTINEL);
    if (tu_hostmem_live() != before)
      fail_msg("allocation %d failed: %ld live allocations after, %ld before (leak)", k,
               tu_hostmem_live(), before);
  }
  printf("open survives a host-allocation failure at each of its %d allocations\n", k);
  tu_hostmem_uninstall();
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(open_defaults),    cmocka_unit_test(open_config_kept),
      cmocka_unit_test(open_bad_config),  cmocka_unit_test(null_device_everywhere),
      cmocka_unit_test(registry_queries), cmocka_unit_test(many_open_at_once),
      cmocka_unit_test(recycled_address), cmocka_unit_test(host_memory_faults),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
