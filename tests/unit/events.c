/* Goal: events are pooled, generation-checked handles: a released, stale, never-acquired or
 * foreign handle gets SP_ERR_INVALID_HANDLE from every call and never acts on the recycled event;
 * recording remembers the stream; query/sync/wait/elapsed follow the contract.
 * Method: acquire/release/reacquire the same slot and use the old handle everywhere; gate a stream
 * behind a host function blocked on a flag to observe NOT_READY; time a host function that sleeps;
 * acquire enough events to grow the pool past several chunks and check all ids are distinct.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

static void basic_lifecycle(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event ev = {0};
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev));
  assert_true(ev.id != 0);
  /* Never recorded: complete, no stream. */
  SP_CHECK_OK(sp_event_query(dev, ev));
  SP_CHECK_OK(sp_event_sync(dev, ev));
  sp_stream *s = NULL, *rec = (sp_stream *)(uintptr_t)0x99;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  SP_CHECK_OK(sp_stream_wait_event(s, ev));
  SP_CHECK_STATUS(sp_event_stream(dev, ev, &rec), SP_ERR_INVALID_ARGUMENT);
  assert_ptr_equal(rec, (sp_stream *)(uintptr_t)0x99);
  SP_CHECK_OK(sp_event_record(ev, s));
  SP_CHECK_OK(sp_event_sync(dev, ev));
  SP_CHECK_OK(sp_event_query(dev, ev));
  SP_CHECK_OK(sp_event_stream(dev, ev, &rec));
  assert_ptr_equal(rec, s);
  SP_CHECK_OK(sp_event_record(ev, sp_stream_default(dev))); /* re-record: new stream */
  SP_CHECK_OK(sp_event_stream(dev, ev, &rec));
  assert_ptr_equal(rec, sp_stream_default(dev));
  SP_CHECK_OK(sp_event_release(dev, ev));
  sp_device_close(dev);
}

static void bad_arguments(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event ev = {77};
  SP_CHECK_STATUS(sp_event_acquire(dev, 0x10, &ev), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(ev.id, 77);
  SP_CHECK_STATUS(sp_event_acquire(dev, 0, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_event zero = {0}, junk = {0x123456789abcdefull}, big = {(1ull << 32) | 0xfffffff0u};
  sp_event handles[] = {zero, junk, big};
  for (size_t i = 0; i < 3; i++) {
    SP_CHECK_STATUS(sp_event_release(dev, handles[i]), SP_ERR_INVALID_HANDLE);
    SP_CHECK_STATUS(sp_event_query(dev, handles[i]), SP_ERR_INVALID_HANDLE);
    SP_CHECK_STATUS(sp_event_record(handles[i], sp_stream_default(dev)), SP_ERR_INVALID_HANDLE);
  }
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev));
  SP_CHECK_STATUS(sp_event_record(ev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_wait_event(NULL, ev), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_query(NULL, ev), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_stream(dev, ev, NULL), SP_ERR_INVALID_ARGUMENT);
  float ms = -1;
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, ev, ev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, ev, ev, &ms), SP_ERR_INVALID_ARGUMENT); /* no TIMING */
  assert_true(ms == -1);
  SP_CHECK_OK(sp_event_release(dev, ev));
  sp_device_close(dev);
}

static void stale_handles(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = sp_stream_default(dev);
  sp_event old = {0}, fresh = {0};
  SP_CHECK_OK(sp_event_acquire(dev, 0, &old));
  SP_CHECK_OK(sp_event_record(old, s));
  SP_CHECK_OK(sp_event_release(dev, old));
  SP_CHECK_STATUS(sp_event_release(dev, old), SP_ERR_INVALID_HANDLE); /* double release */
  SP_CHECK_OK(sp_event_acquire(dev, 0, &fresh));
  if ((uint32_t)fresh.id != (uint32_t)old.id)
    fail_msg("expected the freed slot back: old 0x%llx, new 0x%llx", (unsigned long long)old.id,
             (unsigned long long)fresh.id);
  assert_true(fresh.id != old.id);
  sp_stream *rec = NULL;
  float ms = 0;
  SP_CHECK_STATUS(sp_event_release(dev, old), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_record(old, s), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_query(dev, old), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_sync(dev, old), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_stream_wait_event(s, old), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_stream(dev, old, &rec), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, old, fresh, &ms), SP_ERR_INVALID_HANDLE);
  /* The stale calls did not act on the recycled event: it is still never-recorded. */
  SP_CHECK_STATUS(sp_event_stream(dev, fresh, &rec), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(sp_event_release(dev, fresh));
  SP_CHECK_STATUS(sp_event_release(dev, fresh), SP_ERR_INVALID_HANDLE);
  sp_device_close(dev);
}

static void foreign_handles(void **state) {
  (void)state;
  sp_device *a = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_device *b = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event ea = {0}, eb = {0};
  SP_CHECK_OK(sp_event_acquire(a, 0, &ea));
  SP_CHECK_OK(sp_event_acquire(b, 0, &eb));
  SP_CHECK_STATUS(sp_event_query(b, ea), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_record(ea, sp_stream_default(b)), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_stream_wait_event(sp_stream_default(b), ea), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_release(b, ea), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_event_release(a, ea));
  SP_CHECK_OK(sp_event_release(b, eb));
  sp_device_close(b);
  sp_device_close(a);
}

/* ---- pending work ---- */

static atomic_int gate_open;
static void wait_gate(void *arg) {
  (void)arg;
  while (!atomic_load(&gate_open)) {
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
}
static void sleep_20ms(void *arg) {
  (void)arg;
  struct timespec ts = {0, 20000000};
  nanosleep(&ts, NULL);
}

static void not_ready_then_done(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  sp_event ev = {0};
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev));
  atomic_store(&gate_open, 0);
  SP_CHECK_OK(sp_launch_host_func(s, wait_gate, NULL));
  SP_CHECK_OK(sp_event_record(ev, s));
  SP_CHECK_STATUS(sp_event_query(dev, ev), SP_ERR_NOT_READY);
  SP_CHECK_STATUS(sp_stream_query(s), SP_ERR_NOT_READY);
  /* Another stream waiting on ev is held back too. */
  sp_stream *d = sp_stream_default(dev);
  atomic_int flag = 0;
  SP_CHECK_OK(sp_stream_wait_event(d, ev));
  sp_event ev2 = {0};
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev2));
  SP_CHECK_OK(sp_event_record(ev2, d));
  SP_CHECK_STATUS(sp_event_query(dev, ev2), SP_ERR_NOT_READY);
  /* Releasing an event with work pending is allowed. */
  SP_CHECK_OK(sp_event_release(dev, ev2));
  atomic_store(&gate_open, 1);
  SP_CHECK_OK(sp_event_sync(dev, ev));
  SP_CHECK_OK(sp_event_query(dev, ev));
  SP_CHECK_OK(sp_device_sync(dev));
  SP_CHECK_OK(sp_stream_query(d));
  (void)flag;
  SP_CHECK_OK(sp_event_release(dev, ev));
  sp_device_close(dev);
}

static void timing(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  sp_event a = {0}, b = {0}, plain = {0}, unrec = {0};
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &a));
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &b));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &plain));
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &unrec));
  SP_CHECK_OK(sp_event_record(a, s));
  SP_CHECK_OK(sp_event_record(plain, s));
  SP_CHECK_OK(sp_launch_host_func(s, sleep_20ms, NULL));
  SP_CHECK_OK(sp_event_record(b, s));
  float ms = -1;
  sp_status st = sp_event_elapsed_ms(dev, a, b, &ms);
  if (st != SP_OK && st != SP_ERR_NOT_READY) fail_msg("elapsed before sync: %s", sp_status_str(st));
  SP_CHECK_OK(sp_event_sync(dev, b));
  SP_CHECK_OK(sp_event_elapsed_ms(dev, a, b, &ms));
  if (ms < 15.0f || ms > 5000.0f) fail_msg("elapsed %.3f ms around a 20 ms sleep", (double)ms);
  printf("elapsed around a 20 ms host function: %.3f ms\n", (double)ms);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, plain, b, &ms), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, a, unrec, &ms), SP_ERR_INVALID_ARGUMENT);
  sp_event all[] = {a, b, plain, unrec};
  for (int i = 0; i < 4; i++) SP_CHECK_OK(sp_event_release(dev, all[i]));
  sp_device_close(dev);
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

static void pool_grows(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  enum { N = 1500 };
  uint64_t *ids = malloc(N * sizeof(*ids));
  sp_event *evs = malloc(N * sizeof(*evs));
  for (int i = 0; i < N; i++) {
    SP_CHECK_OK(sp_event_acquire(dev, (unsigned)(i & 1) * SP_EVENT_TIMING, &evs[i]));
    ids[i] = evs[i].id;
  }
  qsort(ids, N, sizeof(*ids), cmp_u64);
  for (int i = 1; i < N; i++)
    if (ids[i] == ids[i - 1]) fail_msg("id 0x%llx handed out twice", (unsigned long long)ids[i]);
  for (int i = 0; i < N; i++) SP_CHECK_OK(sp_event_release(dev, evs[i]));
  for (int i = 0; i < N; i++) SP_CHECK_STATUS(sp_event_query(dev, evs[i]), SP_ERR_INVALID_HANDLE);
  /* Unreleased events are reclaimed by close (checked by ASan's leak check). */
  for (int i = 0; i < 10; i++) SP_CHECK_OK(sp_event_acquire(dev, 0, &evs[i]));
  free(ids);
  free(evs);
  sp_device_close(dev);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(basic_lifecycle), cmocka_unit_test(bad_arguments),
      cmocka_unit_test(stale_handles),   cmocka_unit_test(foreign_handles),
      cmocka_unit_test(not_ready_then_done), cmocka_unit_test(timing),
      cmocka_unit_test(pool_grows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
