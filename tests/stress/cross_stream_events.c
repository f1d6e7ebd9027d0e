/* Goal: a device-side event wait orders work across streams: with STREAMPOOL_HOST_JITTER_US
 * delaying every host-device command by a seeded random amount, data written on stream A and read
 * on stream B after sp_stream_wait_event is always complete; and the check is sharp enough to see
 * corruption when the wait is left out.
 * Method: 4 threads, each with its own pair of streams (bound through sp_stream_current and
 * sp_stream_set_current) and its own 256 KiB device block. Each round: A fills the block with a
 * round-specific byte (memset, then a memcpy of a seeded 4 KiB head), records an event; B waits on
 * it and copies the block to the host; the host syncs B and checks every byte. The negative control
 * runs the same rounds without the wait and counts corrupted rounds (reported; it fails only if no
 * round ever showed corruption). The control is skipped under TSan, whose job is to flag exactly
 * that race.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { THREADS = 4, BLOCK = 256 << 10, HEAD = 4096 };

typedef struct pair_arg {
  sp_device *dev;
  unsigned rounds;
  int with_wait;
  uint64_t seed;
  unsigned long corrupted; /* rounds whose check failed */
} pair_arg;

static void *pair_worker(void *p) {
  pair_arg *a = p;
  sp_device *dev = a->dev;
  sp_stream *sa = NULL, *sb = NULL;
  TU_EXPECT_OK(sp_stream_current(dev, &sa));
  TU_EXPECT_OK(sp_stream_release_current(dev));
  TU_EXPECT_OK(sp_stream_current(dev, &sb)); /* round-robin: the next pool stream */
  if (!sa || !sb) return NULL;
  TU_EXPECT(sa != sb, "streams A and B are the same (%u)", sp_stream_index(sa));
  unsigned char *head = malloc(HEAD), *out = malloc(BLOCK);
  void *blk = NULL;
  TU_EXPECT_OK(sp_alloc(dev, BLOCK, sa, &blk));
  sp_event ev = {0};
  TU_EXPECT_OK(sp_event_acquire(dev, 0, &ev));
  tu_rng r = {a->seed};
  for (unsigned round = 0; round < a->rounds && blk; round++) {
    unsigned char fill = (unsigned char)(round * 37u + 11u);
    for (int i = 0; i < HEAD; i++) head[i] = (unsigned char)tu_rng_next(&r);
    TU_EXPECT_OK(sp_memset_async(sa, blk, fill, BLOCK));
    TU_EXPECT_OK(sp_memcpy_async(sa, blk, head, HEAD));
    TU_EXPECT_OK(sp_event_record(ev, sa));
    if (a->with_wait) TU_EXPECT_OK(sp_stream_wait_event(sb, ev));
    TU_EXPECT_OK(sp_memcpy_async(sb, out, blk, BLOCK));
    TU_EXPECT_OK(sp_stream_sync(sb));
    TU_EXPECT_OK(sp_stream_sync(sa)); /* head is reused next round */
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < BLOCK; i++) {
      unsigned char want = i < HEAD ? head[i] : fill;
      if (out[i] != want && !bad++) first = i;
    }
    if (bad) {
      a->corrupted++;
      if (a->with_wait)
        tu_fail(__FILE__, __LINE__,
                "round %u: %zu bytes wrong, first at %zu: got 0x%02x, expected"
                " 0x%02x",
                round, bad, first, out[first], first < HEAD ? head[first] : fill);
    }
  }
  TU_EXPECT_OK(sp_event_release(dev, ev));
  TU_EXPECT_OK(sp_free(dev, blk));
  free(head);
  free(out);
  return NULL;
}

static unsigned long run_pairs(int with_wait, unsigned rounds) {
  sp_device_config cfg = {.backend = "host", .streams = 2 * THREADS + 1};
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  pthread_t th[THREADS];
  pair_arg args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (pair_arg){dev, rounds, with_wait, tu_seed() * 31 + (uint64_t)i, 0};
    pthread_create(&th[i], NULL, pair_worker, &args[i]);
  }
  unsigned long corrupted = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    corrupted += args[i].corrupted;
  }
  SP_CHECK_OK(sp_device_sync(dev));
  sp_device_close(dev);
  return corrupted;
}

static void with_wait(void **state) {
  (void)state;
  unsigned rounds = (unsigned)tu_scale(1000);
  unsigned long bad = run_pairs(1, rounds);
  assert_int_equal(tu_failures(), 0);
  printf("with the event wait: %u rounds x %d threads, %lu corrupted\n", rounds, THREADS, bad);
  assert_int_equal(bad, 0);
}

static void without_wait_control(void **state) {
  (void)state;
  if (tu_under_tsan()) {
    printf("negative control not run under TSan (it is a deliberate data race)\n");
    return;
  }
  unsigned rounds = 300;
  unsigned long bad = run_pairs(0, rounds);
  printf("negative control (no wait): %lu of %u rounds corrupted\n", bad, rounds * THREADS);
  assert_int_equal(tu_failures(), 0);
  if (!bad)
    fail_msg("no corruption in %u rounds without the wait: the check is blind", rounds * THREADS);
}

int main(void) {
  char seed[32];
  snprintf(seed, sizeof(seed), "%llu", (unsigned long long)tu_seed());
  setenv("STREAMPOOL_HOST_JITTER_US", "200", 1);
  setenv("STREAMPOOL_HOST_JITTER_SEED", seed, 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(with_wait),
      cmocka_unit_test(without_wait_control),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
