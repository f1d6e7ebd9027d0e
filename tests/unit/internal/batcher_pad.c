/* White-box test of the batcher's padding policy: it follows the one "graphs on" decision.
 *
 * Goal: with graphs off (STREAMPOOL_GRAPHS=0 when the model is built, on a backend that has graph
 * slots) a batcher pass of 3 rows runs its linear layers at batch 3, never at a padded size, and
 * launches no graph; with graphs on (the default) the worker captures forwards at the padded sizes
 * 1, 2, 4, 8, 16 (max_batch 16) when it starts (each run once eagerly first), and a 3-row pass
 * replays a graph instead of launching linears. In both modes every caller gets its own row, equal
 * to sp_model_infer's.
 *
 * Method: the host device's backend table is swapped, right after open and before any stream
 * exists, for a copy whose linear_async records each op's batch size and whose graph_launch
 * counts launches. Three callers released together by a barrier (max_delay_us long enough for one
 * pass; retried when the pass was split) make one pass, checked through sp_batcher_stats. Outputs
 * are compared with sp_model_infer (relative 1e-5). Seeded inputs (tu_seed).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "testutil.h"

#include "core/device.h"

enum { IN = 8, HID = 16, OUT = 4, ROWS = 3, MAXB = 16, SIZES = MAXB + 1, TRIES = 5 };

static sp__backend spy;                  /* the host table with two slots wrapped */
static atomic_uint linear_at[SIZES + 1]; /* linear ops per batch size (last: larger) */
static atomic_uint launches;             /* graph launches                           */

static sp_status spy_linear(sp__bstream *s, const sp__linear *op) {
  atomic_fetch_add(&linear_at[op->batch < SIZES ? op->batch : SIZES], 1);
  return sp__host_backend.linear_async(s, op);
}

static sp_status spy_launch(sp__bgraph *g, sp__bstream *s) {
  atomic_fetch_add(&launches, 1);
  return sp__host_backend.graph_launch(g, s);
}

static void counters_reset(void) {
  for (unsigned i = 0; i <= SIZES; i++) atomic_store(&linear_at[i], 0);
  atomic_store(&launches, 0);
}

typedef struct caller {
  sp_batcher *b;
  pthread_barrier_t *go;
  float x[IN], y[OUT];
  sp_status st;
} caller;

static void *caller_main(void *p) {
  caller *c = p;
  pthread_barrier_wait(c->go);
  c->st = sp_batcher_infer(c->b, c->x, c->y);
  return NULL;
}

/* ROWS callers at once until they share one pass; checks their rows against sp_model_infer. */
static void one_pass(sp_model *m, sp_batcher *b) {
  tu_rng rng = {tu_seed() ^ 0x706164ull};
  for (int attempt = 0; attempt < TRIES; attempt++) {
    sp_batcher_stats before, after;
    SP_CHECK_OK(sp_batcher_stats_get(b, &before));
    counters_reset();
    caller c[ROWS];
    pthread_t t[ROWS];
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, ROWS), 0);
    for (int i = 0; i < ROWS; i++) {
      c[i] = (caller){.b = b, .go = &go};
      for (int k = 0; k < IN; k++) c[i].x[k] = (float)tu_rng_below(&rng, 2001) / 1000.0f - 1.0f;
      assert_int_equal(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
    }
    for (int i = 0; i < ROWS; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    SP_CHECK_OK(sp_batcher_stats_get(b, &after));
    for (int i = 0; i < ROWS; i++) {
      SP_CHECK_OK(c[i].st);
      float want[OUT];
      SP_CHECK_OK(sp_model_infer(m, c[i].x, want, 1));
      for (int o = 0; o < OUT; o++)
        if (fabsf(c[i].y[o] - want[o]) > 1e-5f * (1.0f + fabsf(want[o])))
          fail_msg("caller %d out[%d]: batcher %.8g, sp_model_infer %.8g", i, o, (double)c[i].y[o],
                   (double)want[o]);
    }
    if (after.batches - before.batches == 1) return;
    print_message("attempt %d: %llu passes for %d rows, again\n", attempt,
                  (unsigned long long)(after.batches - before.batches), ROWS);
  }
  fail_msg("%d callers never shared one pass in %d attempts", ROWS, TRIES);
}

/* A device whose backend is the spy, a model built with graphs `on`, and a batcher on it. */
static void open_all(const char *graphs, sp_device **dev, sp_model **m, sp_batcher **b) {
  *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  assert_true((*dev)->be == &sp__host_backend);
  assert_null(sp__stream_peek(&(*dev)->streams[0])); /* no backend stream yet: safe to swap */
  (*dev)->be = &spy;
  const unsigned dims[] = {IN, HID, OUT};
  if (graphs) setenv("STREAMPOOL_GRAPHS", graphs, 1);
  sp_status st = sp_model_mlp_random(*dev, dims, 3, 7, SP_F32, m);
  unsetenv("STREAMPOOL_GRAPHS");
  SP_CHECK_OK(st);
  sp_batcher_config cfg = {
      .max_batch = MAXB, .max_delay_us = tu_under_tsan() ? 2000000 : 300000, .workers = 1};
  SP_CHECK_OK(sp_batcher_create(*m, &cfg, b));
}

static void close_all(sp_device *dev, sp_model *m, sp_batcher *b) {
  sp_batcher_destroy(b);
  sp_model_free(m);
  sp_device_close(dev);
}

static void test_no_padding_when_graphs_off(void **state) {
  (void)state;
  sp_device *dev;
  sp_model *m;
  sp_batcher *b;
  open_all("0", &dev, &m, &b);
  one_pass(m, b);
  /* The pass's linears: two layers at exactly 3 rows; sp_model_infer's checks added one row-1
   * forward per caller (also op by op). Nothing else, and no graph. */
  for (unsigned n = 0; n <= SIZES; n++) {
    unsigned got = atomic_load(&linear_at[n]);
    unsigned want = n == ROWS ? 2 : n == 1 ? 2 * ROWS : 0;
    if (got != want)
      fail_msg("graphs off: %u linear ops at batch %u%s, want %u (padding?)", got, n,
               n == SIZES ? "+" : "", want);
  }
  if (atomic_load(&launches)) fail_msg("graphs off: %u graph launches", atomic_load(&launches));
  close_all(dev, m, b);
}

static void test_padding_when_graphs_on(void **state) {
  (void)state;
  counters_reset();
  sp_device *dev;
  sp_model *m;
  sp_batcher *b;
  open_all(NULL, &dev, &m, &b);
  /* Start-up captured one forward per padded size: two linear ops each, run once eagerly and
   * then recorded (src/infer/plan.c runs a pass before capturing it). */
  for (unsigned n = 0; n <= SIZES; n++) {
    unsigned got = atomic_load(&linear_at[n]);
    unsigned want = (n && (n & (n - 1)) == 0 && n <= MAXB) ? 4 : 0;
    if (got != want)
      fail_msg("graphs on: %u linear ops at batch %u captured at start-up, want %u", got, n, want);
  }
  one_pass(m, b);
  if (atomic_load(&linear_at[ROWS]) || atomic_load(&linear_at[4]))
    fail_msg("graphs on: the pass launched linears (%u at 3 rows, %u at 4) instead of a graph",
             atomic_load(&linear_at[ROWS]), atomic_load(&linear_at[4]));
  if (atomic_load(&launches) < 1 + ROWS) /* the pass, and each caller's sp_model_infer check */
    fail_msg("graphs on: %u graph launches, want at least %d", atomic_load(&launches), 1 + ROWS);
  close_all(dev, m, b);
}

int main(void) {
  tu_seed();
  spy = sp__host_backend;
  spy.linear_async = spy_linear;
  spy.graph_launch = spy_launch;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_padding_when_graphs_off),
      cmocka_unit_test(test_padding_when_graphs_on),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
