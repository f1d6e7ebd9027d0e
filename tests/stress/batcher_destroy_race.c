/* Goal: sp_batcher_destroy called the moment the last row is answered, while its callers are
 * still waking up and leaving sp_batcher_infer (spinning, asleep on their own request word, or
 * asleep on a worker's pass counter), never frees what a caller still touches and never loses a
 * caller: every caller returns SP_OK with its own row. Also: many short-lived caller threads.
 * Method: many rounds (seeded): a fresh batcher (1..4 workers, small max_batch, short delay),
 * CALLERS threads that each submit 1..3 distinct rows and exit; the main thread polls
 * sp_batcher_stats until every row is answered (requests is counted before any caller is
 * released) and destroys at once, then joins. Each output is compared with a reference computed
 * by sp_model_infer. Under ThreadSanitizer a touch of the freed batcher is a report; without it
 * the allocator's reuse of the batcher memory would show as wrong rows or hangs.
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

enum { IN = 8, OUT = 4, CALLERS = 24, ROWS_MAX = 3 };

static sp_device *dev;
static sp_model *model;
static float inputs[CALLERS * ROWS_MAX][IN], refs[CALLERS * ROWS_MAX][OUT];

typedef struct caller {
  sp_batcher *b;
  unsigned first, rows;
} caller;

static void *caller_main(void *p) {
  const caller *c = p;
  for (unsigned i = 0; i < c->rows; i++) {
    unsigned row = c->first + i;
    float y[OUT];
    memset(y, 0xff, sizeof(y));
    TU_EXPECT_OK(sp_batcher_infer(c->b, inputs[row], y));
    for (unsigned o = 0; o < OUT; o++)
      TU_EXPECT(fabsf(y[o] - refs[row][o]) <= 1e-5f * (1.0f + fabsf(refs[row][o])),
                "row %u out[%u]: got %.8g, reference %.8g", row, o, (double)y[o],
                (double)refs[row][o]);
  }
  return NULL;
}

static void one_round(tu_rng *rng, unsigned round) {
  sp_batcher_config cfg = {.max_batch = 1u + (unsigned)tu_rng_below(rng, 6),
                           .max_delay_us = 1u + (unsigned)tu_rng_below(rng, 100),
                           .workers = 1u + (unsigned)tu_rng_below(rng, 4)};
  sp_batcher *b;
  SP_CHECK_OK(sp_batcher_create(model, &cfg, &b));
  pthread_t t[CALLERS];
  caller c[CALLERS];
  unsigned total = 0;
  for (unsigned i = 0; i < CALLERS; i++) {
    c[i] = (caller){.b = b, .first = i * ROWS_MAX, .rows = 1u + (unsigned)tu_rng_below(rng, 3)};
    total += c[i].rows;
    assert_int_equal(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
  }
  /* Every row is answered within max_delay_us plus a forward; 20 s means a row was lost. */
  sp_batcher_stats st = {0};
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    SP_CHECK_OK(sp_batcher_stats_get(b, &st));
    if (st.requests >= total) break;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec > 20)
      fail_msg("round %u (max_batch %u, workers %u): %llu of %u rows answered after 20 s", round,
               cfg.max_batch, cfg.workers, (unsigned long long)st.requests, total);
    sched_yield();
  }
  sp_batcher_destroy(b); /* callers may still be leaving sp_batcher_infer */
  for (unsigned i = 0; i < CALLERS; i++) pthread_join(t[i], NULL);
  if (tu_failures())
    fail_msg("round %u (max_batch %u, workers %u): %lu failures", round, cfg.max_batch, cfg.workers,
             tu_failures());
}

static void test_destroy_as_callers_leave(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() * 31 + 7};
  for (unsigned i = 0; i < CALLERS * ROWS_MAX; i++)
    for (unsigned k = 0; k < IN; k++)
      inputs[i][k] = (float)tu_rng_below(&rng, 2001) / 1000.0f - 1.0f;
  SP_CHECK_OK(sp_model_infer(model, &inputs[0][0], &refs[0][0], CALLERS * ROWS_MAX));
  sp_stream_release_current(dev);
  const char *spins[] = {"0", "50"};
  unsigned rounds = (unsigned)tu_scale(300);
  tu_failures_reset();
  for (unsigned r = 0; r < rounds; r++) {
    setenv("STREAMPOOL_BATCHER_SPIN_US", spins[r & 1], 1); /* no other thread reads env now */
    one_round(&rng, r);
  }
  unsetenv("STREAMPOOL_BATCHER_SPIN_US");
}

static int setup(void **state) {
  (void)state;
  dev = tu_open_host(8, SP_STREAMS_ROUND_ROBIN);
  const unsigned dims[] = {IN, 16, OUT};
  return sp_model_mlp_random(dev, dims, 3, tu_seed(), SP_F32, &model) == SP_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  sp_model_free(model);
  sp_device_close(dev);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_destroy_as_callers_leave)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
