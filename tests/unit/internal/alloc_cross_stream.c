/* Cross-stream safety of the caching allocator, with a negative control.
 *
 * Goal: a block freed after sp_record_stream(consumer) is not reused by the producer stream
 * before the consumer's reads ran; and this test is able to see the corruption when that
 * protection is off.
 * Method: host device with STREAMPOOL_HOST_JITTER_US (commands delayed at random, seeded). Each
 * round: the producer allocates a small block and fills it with the round's pattern; the consumer
 * waits on an event recorded after the fill and copies the block to a host slot; the block is
 * recorded on the consumer and freed at once; the producer immediately allocates again (same size)
 * and overwrites that block with 0xEE. Every SLOTS rounds the consumer is synced and each slot must
 * hold its pattern. The negative control (sp__alloc_test_disable_pending, white-box) runs the same
 * rounds and must find mismatches (not under ThreadSanitizer, which reports that race itself).
 * Rounds are tu_scale'd (100,000 normally).
 */
#include <stdlib.h>
#include <string.h>

#include "alloc/alloc.h"
#include "core/device.h"
#include "testutil.h"

enum { BYTES = 1024, SLOTS = 64 };

static unsigned char slots[SLOTS][BYTES];

static unsigned char pattern(size_t round) { return (unsigned char)(1 + round % 200); }

/* Runs rounds; returns the number of slots that did not hold their pattern. */
static size_t run_rounds(sp_device *dev, size_t rounds) {
  sp_stream *prod = &dev->streams[1], *cons = &dev->streams[2];
  sp_event ev[SLOTS];
  for (unsigned i = 0; i < SLOTS; i++) SP_CHECK_OK(sp_event_acquire(dev, 0, &ev[i]));
  size_t bad = 0;
  for (size_t r = 0; r < rounds; r++) {
    unsigned k = (unsigned)(r % SLOTS);
    void *p = NULL, *q = NULL;
    SP_CHECK_OK(sp_alloc(dev, BYTES, prod, &p));
    SP_CHECK_OK(sp_memset_async(prod, p, pattern(r), BYTES));
    SP_CHECK_OK(sp_event_record(ev[k], prod));
    SP_CHECK_OK(sp_stream_wait_event(cons, ev[k]));
    SP_CHECK_OK(sp_memcpy_async(cons, slots[k], p, BYTES));
    SP_CHECK_OK(sp_record_stream(dev, p, cons));
    SP_CHECK_OK(sp_free(dev, p));
    SP_CHECK_OK(sp_alloc(dev, BYTES, prod, &q));
    SP_CHECK_OK(sp_memset_async(prod, q, 0xEE, BYTES));
    SP_CHECK_OK(sp_free(dev, q));
    if (k == SLOTS - 1 || r + 1 == rounds) {
      SP_CHECK_OK(sp_stream_sync(cons));
      for (unsigned i = 0; i <= k; i++) {
        size_t round = r - k + i;
        unsigned char want = pattern(round);
        for (unsigned b = 0; b < BYTES; b++) {
          if (slots[i][b] != want) {
            if (!bad)
              print_message("round %zu byte %u: got 0x%02x, want 0x%02x\n", round, b, slots[i][b],
                            want);
            bad++;
            break;
          }
        }
      }
    }
  }
  SP_CHECK_OK(sp_device_sync(dev));
  for (unsigned i = 0; i < SLOTS; i++) SP_CHECK_OK(sp_event_release(dev, ev[i]));
  SP_CHECK_OK(sp__alloc_validate(dev->alloc));
  return bad;
}

static sp_device *open_jittery(void) {
  setenv("STREAMPOOL_HOST_JITTER_US", "3", 1);
  char seed[32];
  snprintf(seed, sizeof(seed), "%llu", (unsigned long long)tu_seed());
  setenv("STREAMPOOL_HOST_JITTER_SEED", seed, 1);
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  unsetenv("STREAMPOOL_HOST_JITTER_US");
  return dev;
}

static void test_safe(void **state) {
  (void)state;
  sp_device *dev = open_jittery();
  size_t rounds = tu_scale(100000);
  unsigned long long t0 = sp__now_ns();
  size_t bad = run_rounds(dev, rounds);
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  print_message("%zu rounds in %.2f s: %zu corrupted; deferred frees %llu, reserved %zu\n", rounds,
                (double)(sp__now_ns() - t0) / 1e9, bad, (unsigned long long)m.deferred_frees,
                m.reserved_bytes);
  if (bad) fail_msg("%zu of %zu rounds saw their block overwritten, want 0", bad, rounds);
  assert_int_equal(m.allocated_bytes, 0);
  assert_true(m.deferred_frees >= rounds / 2);
  sp_device_close(dev);
}

static void test_negative_control(void **state) {
  (void)state;
  if (tu_under_tsan()) { /* the corruption it provokes is a data race TSan reports as one */
    print_message("negative control not run under ThreadSanitizer (it races on purpose)\n");
    return;
  }
  sp_device *dev = open_jittery();
  sp__alloc_test_disable_pending(dev->alloc, true);
  size_t rounds = tu_scale(5000);
  size_t bad = run_rounds(dev, rounds);
  print_message("negative control: %zu of %zu rounds corrupted\n", bad, rounds);
  if (bad == 0)
    fail_msg(
        "with the pending step off, 0 of %zu rounds were corrupted: the test "
        "cannot see the bug it is for",
        rounds);
  sp__alloc_test_disable_pending(dev->alloc, false);
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_safe),
                                     cmocka_unit_test(test_negative_control)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
