/* Goal: several host devices open at once are independent (each its own streams, events and
 * allocator; a thread's current stream is per device; closing one leaves the others working;
 * pointers and events of one device are rejected by another), and the cross-device calls
 * sp_stream_wait_event_peer and sp_memcpy_peer_async order and move data as documented, rejecting
 * bad arguments without side effects.
 * Method: STREAMPOOL_HOST_DEVICES=4 (set here). Threads drive streams on three devices at once
 * with seeded patterns checked byte by byte; bindings are compared per device; a device is closed
 * mid-test; foreign pointers and events are passed to the wrong device. The peer wait is shown to
 * be device-side by holding the producer's stream behind a gate (a host function): the waiting
 * call returns at once, the consumer stays busy until the gate opens, then the copy holds the
 * producer's bytes.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

enum { NDEV = 3, THREADS = 6, BYTES = 64 << 10 };

/* ---- several devices at once ---------------------------------------------------------------- */

typedef struct dev_arg {
  sp_device **devs;
  unsigned id, rounds;
  uint64_t seed;
} dev_arg;

/* One round on one device: upload a pattern on this thread's current stream, copy it device to
 * device, download, check. */
static void device_round(sp_device *dev, unsigned char *host, unsigned char *out, uint64_t seed) {
  sp_stream *s = NULL;
  void *a = NULL, *b = NULL;
  TU_EXPECT_OK(sp_stream_current(dev, &s));
  if (!s) return;
  TU_EXPECT(sp_stream_device(s) == dev, "current stream of device %p belongs to %p", (void *)dev,
            (void *)sp_stream_device(s));
  TU_EXPECT_OK(sp_alloc(dev, BYTES, NULL, &a));
  TU_EXPECT_OK(sp_alloc(dev, BYTES, NULL, &b));
  if (!a || !b) goto free_blocks;
  for (size_t i = 0; i < BYTES; i++) host[i] = tu_pattern(seed, i);
  TU_EXPECT_OK(sp_memcpy_async(s, a, host, BYTES));
  TU_EXPECT_OK(sp_memcpy_async(s, b, a, BYTES));
  TU_EXPECT_OK(sp_memcpy_async(s, out, b, BYTES));
  TU_EXPECT_OK(sp_stream_sync(s));
  size_t bad = tu_first_bad(out, BYTES, seed);
  TU_EXPECT(bad == BYTES, "byte %zu: got 0x%02x, want 0x%02x", bad, bad < BYTES ? out[bad] : 0,
            bad < BYTES ? tu_pattern(seed, bad) : 0);
free_blocks:
  TU_EXPECT_OK(sp_free(dev, a));
  TU_EXPECT_OK(sp_free(dev, b));
}

static void *devices_worker(void *p) {
  dev_arg *a = p;
  unsigned char *host = malloc(BYTES), *out = malloc(BYTES);
  TU_EXPECT(host && out, "no host memory");
  tu_rng rng = {a->seed ^ (a->id + 1) * 0x9E3779B97F4A7C15ull};
  sp_stream *first[NDEV];
  for (unsigned d = 0; d < NDEV; d++) TU_EXPECT_OK(sp_stream_current(a->devs[d], &first[d]));
  for (unsigned r = 0; host && out && r < a->rounds; r++) {
    unsigned d = (unsigned)tu_rng_below(&rng, NDEV);
    device_round(a->devs[d], host, out, tu_rng_next(&rng));
  }
  for (unsigned d = 0; d < NDEV; d++) { /* bindings stayed put, per device */
    sp_stream *now = NULL;
    TU_EXPECT_OK(sp_stream_current(a->devs[d], &now));
    TU_EXPECT(now == first[d], "thread %u device %u: current stream changed %u -> %u", a->id, d,
              first[d] ? sp_stream_index(first[d]) : 0u, now ? sp_stream_index(now) : 0u);
  }
  free(host);
  free(out);
  return NULL;
}

static void three_devices_threads(void **state) {
  (void)state;
  sp_device *devs[NDEV];
  for (int d = 0; d < NDEV; d++) devs[d] = tu_open_host_index(d, 8, SP_STREAMS_ROUND_ROBIN);
  tu_failures_reset();
  pthread_t th[THREADS];
  dev_arg args[THREADS];
  for (unsigned i = 0; i < THREADS; i++) {
    args[i] = (dev_arg){devs, i, (unsigned)tu_scale(60), tu_seed()};
    assert_int_equal(pthread_create(&th[i], NULL, devices_worker, &args[i]), 0);
  }
  for (unsigned i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  assert_int_equal(tu_failures(), 0);
  for (int d = 0; d < NDEV; d++) { /* each allocator saw only its own device's traffic */
    sp_memory_stats ms;
    SP_CHECK_OK(sp_memory_stats_get(devs[d], &ms));
    if (ms.allocated_bytes != 0)
      fail_msg("device %d: %zu bytes still allocated", d, ms.allocated_bytes);
    if (ms.allocs != ms.frees)
      fail_msg("device %d: %llu allocs, %llu frees", d, (unsigned long long)ms.allocs,
               (unsigned long long)ms.frees);
  }
  for (int d = 0; d < NDEV; d++) sp_device_close(devs[d]);
}

static void current_stream_per_device(void **state) {
  (void)state;
  sp_device *a = tu_open_host_index(0, 8, SP_STREAMS_ROUND_ROBIN),
            *b = tu_open_host_index(1, 8, SP_STREAMS_ROUND_ROBIN);
  sp_stream *sa = NULL, *sb = NULL, *cur = NULL;
  SP_CHECK_OK(sp_stream_current(a, &sa));
  SP_CHECK_OK(sp_stream_current(b, &sb));
  assert_ptr_equal(sp_stream_device(sa), a);
  assert_ptr_equal(sp_stream_device(sb), b);
  sp_stream *a_default = sp_stream_default(a);
  SP_CHECK_OK(sp_stream_set_current(a, a_default));
  SP_CHECK_OK(sp_stream_current(b, &cur));
  assert_ptr_equal(cur, sb); /* setting a's current leaves b's alone */
  SP_CHECK_OK(sp_stream_current(a, &cur));
  assert_ptr_equal(cur, a_default);
  SP_CHECK_STATUS(sp_stream_set_current(a, sb), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(sp_stream_current(a, &cur));
  assert_ptr_equal(cur, a_default);
  void *p = NULL;
  SP_CHECK_STATUS(sp_alloc(a, 512, sb, &p), SP_ERR_INVALID_ARGUMENT); /* b's stream on a */
  assert_null(p);
  SP_CHECK_OK(sp_stream_release_current(a));
  SP_CHECK_OK(sp_stream_current(b, &cur));
  assert_ptr_equal(cur, sb);
  sp_device_close(a);
  sp_device_close(b);
}

static void close_one_leaves_others(void **state) {
  (void)state;
  sp_device *devs[NDEV];
  void *blk[NDEV];
  for (int d = 0; d < NDEV; d++) {
    devs[d] = tu_open_host_index(d, 4, SP_STREAMS_ROUND_ROBIN);
    SP_CHECK_OK(sp_alloc(devs[d], BYTES, NULL, &blk[d]));
  }
  sp_device_close(devs[1]); /* frees its block with it */
  unsigned char *host = malloc(BYTES), *out = malloc(BYTES);
  assert_true(host && out);
  for (int d = 0; d < NDEV; d += 2) {
    sp_stream *s = NULL;
    uint64_t seed = tu_seed() + (uint64_t)d;
    for (size_t i = 0; i < BYTES; i++) host[i] = tu_pattern(seed, i);
    SP_CHECK_OK(sp_stream_current(devs[d], &s));
    SP_CHECK_OK(sp_memcpy_async(s, blk[d], host, BYTES));
    SP_CHECK_OK(sp_memcpy_async(s, out, blk[d], BYTES));
    SP_CHECK_OK(sp_stream_sync(s));
    size_t bad = tu_first_bad(out, BYTES, seed);
    if (bad != BYTES) fail_msg("device %d after closing device 1: byte %zu differs", d, bad);
    SP_CHECK_OK(sp_free(devs[d], blk[d]));
    sp_event ev;
    SP_CHECK_OK(sp_event_acquire(devs[d], 0, &ev));
    SP_CHECK_OK(sp_event_record(ev, s));
    SP_CHECK_OK(sp_event_sync(devs[d], ev));
    SP_CHECK_OK(sp_event_release(devs[d], ev));
    SP_CHECK_OK(sp_empty_cache(devs[d]));
  }
  sp_device *again = tu_open_host_index(
      1, 4, SP_STREAMS_ROUND_ROBIN); /* the same index opens again beside the others */
  void *p = NULL;
  SP_CHECK_OK(sp_alloc(again, 4096, NULL, &p));
  SP_CHECK_OK(sp_free(again, p));
  sp_device_close(again);
  free(host);
  free(out);
  sp_device_close(devs[0]);
  sp_device_close(devs[2]);
}

static void foreign_handles_rejected(void **state) {
  (void)state;
  sp_device *a = tu_open_host_index(0, 4, SP_STREAMS_ROUND_ROBIN),
            *b = tu_open_host_index(1, 4, SP_STREAMS_ROUND_ROBIN);
  void *p = NULL;
  SP_CHECK_OK(sp_alloc(a, 4096, NULL, &p));
  SP_CHECK_STATUS(sp_free(b, p), SP_ERR_INVALID_HANDLE);
  sp_stream *sb = NULL;
  SP_CHECK_OK(sp_stream_current(b, &sb));
  SP_CHECK_STATUS(sp_record_stream(b, p, sb), SP_ERR_INVALID_HANDLE);
  sp_memory_stats ms;
  SP_CHECK_OK(sp_memory_stats_get(b, &ms));
  assert_int_equal(ms.allocated_bytes, 0);
  SP_CHECK_OK(sp_free(a, p)); /* still live on its own device */
  sp_event ev;
  SP_CHECK_OK(sp_event_acquire(a, 0, &ev));
  SP_CHECK_STATUS(sp_event_query(b, ev), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_release(b, ev), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_stream_wait_event(sb, ev), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_record(ev, sb), SP_ERR_INVALID_HANDLE); /* a's event on b's stream */
  SP_CHECK_OK(sp_event_release(a, ev));
  sp_device_close(a);
  sp_device_close(b);
}

/* ---- cross-device waits and copies ---------------------------------------------------------- */

static void peer_wait_is_device_side(void **state) {
  (void)state;
  sp_device *a = tu_open_host_index(0, 4, SP_STREAMS_ROUND_ROBIN),
            *b = tu_open_host_index(1, 4, SP_STREAMS_ROUND_ROBIN);
  assert_int_equal(sp_peer_copy_direct(b, a), 1);
  sp_stream *sa = NULL, *sb = NULL;
  SP_CHECK_OK(sp_stream_current(a, &sa));
  SP_CHECK_OK(sp_stream_current(b, &sb));
  unsigned char *src = NULL, *dst = NULL, *host = malloc(BYTES), *out = malloc(BYTES);
  assert_true(host && out);
  SP_CHECK_OK(sp_alloc(a, BYTES, sa, (void **)&src));
  SP_CHECK_OK(sp_alloc(b, BYTES, sb, (void **)&dst));
  uint64_t seed = tu_seed();
  for (size_t i = 0; i < BYTES; i++) host[i] = tu_pattern(seed, i);
  SP_CHECK_OK(sp_memset_async(sb, dst, 0, BYTES));
  tu_gate g;
  tu_gate_init(&g, 0);
  SP_CHECK_OK(sp_launch_host_func(sa, tu_gate_fn, &g)); /* a is held here */
  SP_CHECK_OK(sp_memcpy_async(sa, src, host, BYTES));
  sp_event made;
  SP_CHECK_OK(sp_event_acquire(a, 0, &made));
  SP_CHECK_OK(sp_event_record(made, sa));
  unsigned long long t0 = tu_now_ns();
  SP_CHECK_OK(sp_stream_wait_event_peer(sb, a, made));
  SP_CHECK_OK(sp_memcpy_peer_async(sb, dst, a, src, BYTES));
  unsigned long long dt = tu_now_ns() - t0;
  if (dt > 2000000000ull) fail_msg("the peer wait blocked the host for %llu ns", dt);
  tu_sleep_us(20000);
  SP_CHECK_STATUS(sp_stream_query(sb), SP_ERR_NOT_READY); /* b waits for a's gate */
  SP_CHECK_STATUS(sp_event_query(a, made), SP_ERR_NOT_READY);
  tu_gate_open(&g);
  SP_CHECK_OK(sp_memcpy_async(sb, out, dst, BYTES));
  SP_CHECK_OK(sp_stream_sync(sb));
  size_t bad = tu_first_bad(out, BYTES, seed);
  if (bad != BYTES)
    fail_msg("peer copy byte %zu: got 0x%02x, want 0x%02x", bad, out[bad], tu_pattern(seed, bad));
  SP_CHECK_OK(sp_event_query(a, made));
  SP_CHECK_OK(sp_event_release(a, made));
  SP_CHECK_OK(sp_free(a, src));
  SP_CHECK_OK(sp_free(b, dst));
  free(host);
  free(out);
  sp_device_close(a);
  sp_device_close(b);
}

/* Both directions, odd sizes and offsets, host memory as the source, the same device. */
static void peer_copy_shapes(void **state) {
  (void)state;
  sp_device *a = tu_open_host_index(0, 4, SP_STREAMS_ROUND_ROBIN),
            *b = tu_open_host_index(2, 4, SP_STREAMS_ROUND_ROBIN);
  sp_device *devs[2] = {a, b};
  static const size_t sizes[] = {1, 7, 4097, BYTES - 3};
  unsigned char *host = malloc(BYTES), *out = malloc(BYTES);
  assert_true(host && out);
  for (int dir = 0; dir < 3; dir++) {
    sp_device *from = devs[dir == 1], *to = dir == 2 ? from : devs[dir != 1];
    sp_stream *sf = NULL, *st = NULL;
    SP_CHECK_OK(sp_stream_current(from, &sf));
    SP_CHECK_OK(sp_stream_current(to, &st));
    unsigned char *src = NULL, *dst = NULL;
    SP_CHECK_OK(sp_alloc(from, BYTES, sf, (void **)&src));
    SP_CHECK_OK(sp_alloc(to, BYTES, st, (void **)&dst));
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
      size_t n = sizes[k], off = k & 3u;
      uint64_t seed = tu_seed() * 31u + (uint64_t)(dir * 8) + k;
      for (size_t i = 0; i < n; i++) host[i] = tu_pattern(seed, i);
      SP_CHECK_OK(sp_memcpy_async(sf, src + off, host, n));
      sp_event ev;
      SP_CHECK_OK(sp_event_acquire(from, 0, &ev));
      SP_CHECK_OK(sp_event_record(ev, sf));
      SP_CHECK_OK(sp_stream_wait_event_peer(st, from, ev));
      SP_CHECK_OK(sp_memcpy_peer_async(st, dst + 3, from, src + off, n));
      SP_CHECK_OK(sp_memcpy_async(st, out, dst + 3, n));
      SP_CHECK_OK(sp_stream_sync(st));
      size_t bad = tu_first_bad(out, n, seed);
      if (bad != n) fail_msg("dir %d size %zu: byte %zu differs", dir, n, bad);
      SP_CHECK_OK(sp_event_release(from, ev));
      /* host memory as the source of a peer copy */
      memset(out, 0, n);
      SP_CHECK_OK(sp_memcpy_peer_async(st, dst, from, host, n));
      SP_CHECK_OK(sp_memcpy_async(st, out, dst, n));
      SP_CHECK_OK(sp_stream_sync(st));
      if ((bad = tu_first_bad(out, n, seed)) != n)
        fail_msg("dir %d size %zu from host memory: byte %zu differs", dir, n, bad);
    }
    SP_CHECK_OK(sp_stream_sync(sf));
    SP_CHECK_OK(sp_free(from, src));
    SP_CHECK_OK(sp_free(to, dst));
  }
  free(host);
  free(out);
  sp_device_close(a);
  sp_device_close(b);
}

static void peer_bad_arguments(void **state) {
  (void)state;
  sp_device *a = tu_open_host_index(0, 4, SP_STREAMS_ROUND_ROBIN),
            *b = tu_open_host_index(1, 4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *sb = NULL;
  SP_CHECK_OK(sp_stream_current(b, &sb));
  char buf[16] = {0}, dst[16] = {0};
  SP_CHECK_STATUS(sp_memcpy_peer_async(NULL, dst, a, buf, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memcpy_peer_async(sb, dst, NULL, buf, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memcpy_peer_async(sb, NULL, a, buf, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memcpy_peer_async(sb, dst, a, NULL, 4), SP_ERR_INVALID_ARGUMENT);
  if (!strstr(sp_last_error(), "sp_memcpy_peer_async")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_OK(sp_memcpy_peer_async(sb, NULL, a, NULL, 0));
  sp_event ev = {0};
  SP_CHECK_STATUS(sp_stream_wait_event_peer(NULL, a, ev), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_wait_event_peer(sb, NULL, ev), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_wait_event_peer(sb, a, ev), SP_ERR_INVALID_HANDLE); /* id 0 */
  SP_CHECK_OK(sp_event_acquire(a, 0, &ev));
  SP_CHECK_OK(sp_stream_wait_event_peer(sb, a, ev)); /* never recorded: complete */
  SP_CHECK_STATUS(sp_stream_wait_event_peer(sb, b, ev), SP_ERR_INVALID_HANDLE); /* a's, not b's */
  if (!strstr(sp_last_error(), "sp_stream_wait_event")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_OK(sp_event_release(a, ev));
  SP_CHECK_STATUS(sp_stream_wait_event_peer(sb, a, ev), SP_ERR_INVALID_HANDLE); /* stale */
  SP_CHECK_OK(sp_stream_sync(sb));
  assert_int_equal(sp_peer_copy_direct(NULL, a), 0);
  assert_int_equal(sp_peer_copy_direct(a, a), 1);
  sp_device_close(a);
  sp_device_close(b);
}

int main(void) {
  setenv("STREAMPOOL_HOST_DEVICES", "4", 1);
  (void)tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(three_devices_threads),    cmocka_unit_test(current_stream_per_device),
      cmocka_unit_test(close_one_leaves_others),  cmocka_unit_test(foreign_handles_rejected),
      cmocka_unit_test(peer_wait_is_device_side), cmocka_unit_test(peer_copy_shapes),
      cmocka_unit_test(peer_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
