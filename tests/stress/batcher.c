/* Goal: the batcher answers every caller with exactly its own row, under 64 client threads and a
 * host device that delays every command by a random amount (STREAMPOOL_HOST_JITTER_US); destroy
 * finishes requests already accepted; worker start failures and bad arguments are reported.
 * Method: each client row is distinct (seeded random inputs, one per thread and iteration); the
 * reference is one batched sp_model_infer over all rows on the main thread; every output is
 * compared with its own reference row (relative error <= 1e-5), so a row handed to the wrong
 * caller, or read before its pass finished, fails. Counters are checked against the calls made.
 * Callers run once sleeping at once (STREAMPOOL_BATCHER_SPIN_US=0: the queued-sleep and
 * pass-sleep wake paths) and once spinning (200 us: many answers need no futex).
 * Sized down under TSan with tu_scale.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

enum { IN = 32, HID = 64, OUT = 16, CLIENTS = 64 };

static sp_device *dev;
static sp_model *model;
static float *inputs, *refs; /* [rows][IN], [rows][OUT] */
static unsigned per_client;

typedef struct client {
  sp_batcher *b;
  unsigned index, first_row, rows;
  atomic_uint *entered;
} client;

static void make_reference(unsigned rows) {
  tu_rng rng = {tu_seed() * 7 + 1};
  inputs = malloc(sizeof(float) * rows * IN);
  refs = malloc(sizeof(float) * rows * OUT);
  assert_non_null(inputs);
  assert_non_null(refs);
  for (size_t i = 0; i < (size_t)rows * IN; i++)
    inputs[i] = (float)((double)tu_rng_below(&rng, 200001) / 100000.0 - 1.0);
  SP_CHECK_OK(sp_model_infer(model, inputs, refs, rows));
  sp_stream_release_current(dev);
}

static void check_row(unsigned who, unsigned row, const float *y) {
  const float *want = refs + (size_t)row * OUT;
  double scale = 1e-6, err = 0;
  for (unsigned o = 0; o < OUT; o++) scale = fmax(scale, fabs(want[o]));
  for (unsigned o = 0; o < OUT; o++) err = fmax(err, fabs((double)y[o] - want[o]));
  TU_EXPECT(err / scale <= 1e-5, "client %u row %u: out[0] %.8g, its reference %.8g (rel err %.3g)",
            who, row, (double)y[0], (double)want[0], err / scale);
}

static void *client_main(void *p) {
  client *c = p;
  float y[OUT];
  if (c->entered) atomic_fetch_add(c->entered, 1);
  for (unsigned i = 0; i < c->rows; i++) {
    unsigned row = c->first_row + i;
    memset(y, 0xff, sizeof(y)); /* NaN: a row never written fails the check */
    TU_EXPECT_OK(sp_batcher_infer(c->b, inputs + (size_t)row * IN, y));
    check_row(c->index, row, y);
  }
  return NULL;
}

static void run_clients(sp_batcher *b, unsigned rows_each, atomic_uint *entered, pthread_t *t,
                        client *c) {
  for (unsigned i = 0; i < CLIENTS; i++) {
    c[i] = (client){
        .b = b, .index = i, .first_row = i * rows_each, .rows = rows_each, .entered = entered};
    assert_int_equal(pthread_create(&t[i], NULL, client_main, &c[i]), 0);
  }
}

static int setup(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "40", 0);
  dev = tu_open_host(16, SP_STREAMS_ROUND_ROBIN);
  const unsigned dims[] = {IN, HID, OUT};
  if (sp_model_mlp_random(dev, dims, 3, tu_seed(), SP_F32, &model) != SP_OK) return -1;
  per_client = (unsigned)tu_scale(100);
  make_reference(CLIENTS * per_client);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  sp_model_free(model);
  sp_device_close(dev);
  free(inputs);
  free(refs);
  return 0;
}

static void every_caller_gets_its_row(const char *spin_us) {
  setenv("STREAMPOOL_BATCHER_SPIN_US", spin_us, 1); /* read by create; no other thread reads env */
  tu_failures_reset();
  sp_batcher_config cfg = {.max_batch = 16, .max_delay_us = 300, .workers = 3};
  sp_batcher *b;
  SP_CHECK_OK(sp_batcher_create(model, &cfg, &b));
  pthread_t t[CLIENTS];
  client c[CLIENTS];
  run_clients(b, per_client, NULL, t, c);
  for (unsigned i = 0; i < CLIENTS; i++) pthread_join(t[i], NULL);
  sp_batcher_stats st;
  SP_CHECK_OK(sp_batcher_stats_get(b, &st));
  sp_batcher_destroy(b);
  unsetenv("STREAMPOOL_BATCHER_SPIN_US");
  assert_int_equal(tu_failures(), 0);
  if (!st.run_ns || !st.answer_ns)
    fail_msg("stats: run_ns %llu, answer_ns %llu after %llu passes", (unsigned long long)st.run_ns,
             (unsigned long long)st.answer_ns, (unsigned long long)st.batches);
  if (st.requests != (uint64_t)CLIENTS * per_client || st.failed || st.queued)
    fail_msg("stats: requests %llu (want %u), failed %llu, queued %llu",
             (unsigned long long)st.requests, CLIENTS * per_client, (unsigned long long)st.failed,
             (unsigned long long)st.queued);
  if (st.batches == 0 || st.batches > st.requests || st.requests > st.batches * cfg.max_batch)
    fail_msg("stats: %llu batches for %llu rows of at most %u", (unsigned long long)st.batches,
             (unsigned long long)st.requests, cfg.max_batch);
  fprintf(stderr, "batcher (spin %s us): %llu rows in %llu passes (%.1f rows/pass)\n", spin_us,
          (unsigned long long)st.requests, (unsigned long long)st.batches,
          (double)st.requests / (double)st.batches);
}

static void test_every_caller_gets_its_row(void **state) {
  (void)state;
  every_caller_gets_its_row("0");
  every_caller_gets_its_row("200");
}

/* Requests parked behind a long max_delay_us are all answered when destroy starts. */
static void destroy_with_parked_rows(unsigned workers) {
  tu_failures_reset();
  sp_batcher_config cfg = {.max_batch = 1000, .max_delay_us = 5000000, .workers = workers};
  sp_batcher *b;
  SP_CHECK_OK(sp_batcher_create(model, &cfg, &b));
  pthread_t t[CLIENTS];
  client c[CLIENTS];
  atomic_uint entered = 0;
  run_clients(b, 1, &entered, t, c);
  sp_batcher_stats st = {0};
  for (int waited = 0; waited < 20000; waited++) { /* up to 20 s */
    SP_CHECK_OK(sp_batcher_stats_get(b, &st));
    if (st.queued == CLIENTS) break;
    tu_sleep_us(1000);
  }
  if (st.queued != CLIENTS)
    fail_msg("only %llu of %d rows queued", (unsigned long long)st.queued, CLIENTS);
  unsigned long long t0 = (unsigned long long)time(NULL);
  sp_batcher_destroy(b); /* must not wait out the 5 s delay */
  unsigned long long secs = (unsigned long long)time(NULL) - t0;
  for (unsigned i = 0; i < CLIENTS; i++) pthread_join(t[i], NULL);
  assert_int_equal(tu_failures(), 0);
  if (secs >= 4) fail_msg("destroy took %llu s: it waited for max_delay_us", secs);
}

/* With several workers, the idle ones wait while one collects: destroy must wake them all. */
static void test_destroy_finishes_accepted(void **state) {
  (void)state;
  destroy_with_parked_rows(1);
  destroy_with_parked_rows(4);
}

/* Exclusive mode: each worker owns a slot; asking for more workers than slots fails cleanly. */
static void test_exclusive_slots(void **state) {
  (void)state;
  sp_device *ex = tu_open_host(4, SP_STREAMS_EXCLUSIVE); /* 3 slots */
  const unsigned dims[] = {IN, OUT};
  sp_model *m;
  SP_CHECK_OK(sp_model_mlp_random(ex, dims, 2, 3, SP_F32, &m));
  sp_batcher_config cfg = {.workers = 5};
  sp_batcher *b = NULL;
  SP_CHECK_STATUS(sp_batcher_create(m, &cfg, &b), SP_ERR_POOL_EXHAUSTED);
  assert_null(b);
  cfg.workers = 3; /* the failed create gave its slots back */
  SP_CHECK_OK(sp_batcher_create(m, &cfg, &b));
  float x[IN] = {1.0f}, y[OUT], want[OUT];
  SP_CHECK_OK(sp_batcher_infer(b, x, y));
  sp_batcher_destroy(b);
  SP_CHECK_OK(sp_model_infer(m, x, want, 1));
  for (unsigned o = 0; o < OUT; o++)
    if (fabsf(y[o] - want[o]) > 1e-5f * (1 + fabsf(want[o])))
      fail_msg("out[%u]: batcher %g, direct %g", o, (double)y[o], (double)want[o]);
  sp_stream_release_current(ex);
  sp_model_free(m);
  sp_device_close(ex);
}

static void test_bad_arguments(void **state) {
  (void)state;
  sp_batcher *b = NULL;
  sp_batcher_config big = {.max_batch = 1u << 20};
  SP_CHECK_STATUS(sp_batcher_create(NULL, NULL, &b), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_batcher_create(model, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_batcher_create(model, &big, &b), SP_ERR_INVALID_ARGUMENT);
  setenv("STREAMPOOL_BATCHER_SPIN_US", "12x", 1);
  SP_CHECK_STATUS(sp_batcher_create(model, NULL, &b), SP_ERR_INVALID_ARGUMENT);
  setenv("STREAMPOOL_BATCHER_SPIN_US", "100001", 1);
  SP_CHECK_STATUS(sp_batcher_create(model, NULL, &b), SP_ERR_INVALID_ARGUMENT);
  unsetenv("STREAMPOOL_BATCHER_SPIN_US");
  assert_null(b);
  SP_CHECK_OK(sp_batcher_create(model, NULL, &b));
  float x[IN] = {0}, y[OUT];
  SP_CHECK_STATUS(sp_batcher_infer(NULL, x, y), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_batcher_infer(b, NULL, y), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_batcher_stats_get(b, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_batcher_destroy(b);
  sp_batcher_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_caller_gets_its_row),
      cmocka_unit_test(test_destroy_finishes_accepted),
      cmocka_unit_test(test_exclusive_slots),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
