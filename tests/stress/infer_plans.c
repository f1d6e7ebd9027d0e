/* Goal: sp_model_infer through its per-(stream, batch) plans (buffers kept, graphs replayed where
 * the backend has them) returns the right rows when many threads call it at once: threads sharing
 * a round-robin stream, threads moving between exclusive slots, f32 and bf16 models,
 * sp_model_forward on fixed device buffers (replayed forward graphs on CUDA), more batch sizes per
 * stream than a plan table caches (the uncached path), inputs changing every call; plans keep their
 * buffers between calls (more bytes allocated after the run than after loading); and freeing the
 * models gives every plan's device memory back.
 *
 * Method: an MLP with seeded known weights is written to safetensors and loaded as f32 and bf16;
 * every output row of every call is compared with a double-precision forward on the host
 * (relative error per row: f32 <= 1e-5, bf16 <= 2e-2), failures print got and want. Runs on every
 * backend with a device (tu_backends). Round-robin: 4 streams, 8 threads (2 per stream), every
 * other call through sp_model_forward on the thread's fixed device buffers (graphs keyed by those
 * pointers where the backend has graphs). Exclusive: 5 slots, 4 threads that give their slot back
 * every few calls. Seeded (tu_seed), sized by
 * tu_scale.
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tu_mlp.h"

enum { IN = 32, H1 = 64, H2 = 48, OUT = 16, NL = 3, MAXB = 64, THREADS = 8 };
static const unsigned dims[NL + 1] = {IN, H1, H2, OUT};
static const unsigned batches[] = {1, 2, 3, 5, 8, 13, 16, 31, 64}; /* more than a table caches */
enum { NBATCH = sizeof(batches) / sizeof(batches[0]) };

static tu_mlp mlp; /* the known weights and their double-precision forward */
static char path[64];

static int write_model(void) {
  tu_mlp_seeded(&mlp, dims, NL, tu_seed() ^ 0x706C616E73ull);
  snprintf(path, sizeof(path), "/tmp/sp_plans_%d.safetensors", (int)getpid());
  return tu_mlp_write(&mlp, path);
}

typedef struct run_ctx {
  const char *backend;
  sp_device *dev;
  sp_model *m[2]; /* f32, bf16 */
  unsigned iters;
  unsigned release_every; /* exclusive: give the slot back after this many calls; 0 never */
  bool forward;           /* also sp_model_forward on per-thread device buffers (odd calls)  */
} run_ctx;

typedef struct worker {
  run_ctx *ctx;
  unsigned index;
  unsigned long rows; /* checked */
} worker;

/* Checks each row of y against the reference; returns the number of bad rows. */
static unsigned check_call(const worker *wk, unsigned it, int bf16, const float *x, const float *y,
                           unsigned rows) {
  unsigned bad = 0;
  double tol = bf16 ? 2e-2 : 1e-5;
  for (unsigned r = 0; r < rows; r++) {
    double want[OUT], scale = 1e-6, err = 0;
    tu_mlp_reference(&mlp, x + r * IN, want);
    unsigned worst = 0;
    for (unsigned o = 0; o < OUT; o++) scale = fmax(scale, fabs(want[o]));
    for (unsigned o = 0; o < OUT; o++) {
      double e = fabs(y[r * OUT + o] - want[o]);
      if (!(e <= err)) {
        err = e;
        worst = o;
      }
    }
    if (!(err / scale <= tol)) {
      if (bad++ < 3)
        tu_fail(__FILE__, __LINE__,
                "%s thread %u call %u %s batch %u row %u: rel. error %.3g > %.0e "
                "(out[%u] got %.8g, want %.8g)",
                wk->ctx->backend, wk->index, it, bf16 ? "bf16" : "f32", rows, r, err / scale, tol,
                worst, (double)y[r * OUT + worst], want[worst]);
    }
  }
  return bad;
}

/* Device-io pass: rows copied in, sp_model_forward, copied out, on the thread's stream. */
static sp_status forward_call(run_ctx *c, sp_model *m, float *dx, float *dy, const float *x,
                              float *y, unsigned rows) {
  sp_stream *s;
  sp_status st = sp_stream_current(c->dev, &s);
  if (st == SP_OK) st = sp_memcpy_async(s, dx, x, sizeof(float) * rows * IN);
  if (st == SP_OK) st = sp_model_forward(m, s, dx, dy, rows);
  if (st == SP_OK) st = sp_memcpy_async(s, y, dy, sizeof(float) * rows * OUT);
  sp_status sync = sp_stream_sync(s);
  return st != SP_OK ? st : sync;
}

static void *worker_main(void *p) {
  worker *wk = p;
  run_ctx *c = wk->ctx;
  tu_rng rng = {tu_seed() * 7919 + wk->index};
  static _Thread_local float x[MAXB * IN], y[MAXB * OUT];
  void *dx = NULL, *dy = NULL; /* fixed per thread: forward graphs are keyed by the pointers */
  if (c->forward) {
    TU_EXPECT_OK(sp_alloc(c->dev, sizeof(x), NULL, &dx));
    TU_EXPECT_OK(sp_alloc(c->dev, sizeof(y), NULL, &dy));
    if (!dx || !dy) return NULL;
  }
  for (unsigned it = 0; it < c->iters; it++) {
    unsigned rows = batches[tu_rng_below(&rng, NBATCH)];
    int bf16 = (int)tu_rng_below(&rng, 2);
    for (unsigned i = 0; i < rows * IN; i++)
      x[i] = (float)((double)tu_rng_below(&rng, 4001) / 1000.0 - 2.0);
    memset(y, 0xFF, sizeof(float) * rows * OUT); /* NaN: a row not written fails */
    bool fwd = c->forward && (it & 1u);
    sp_status st = fwd ? forward_call(c, c->m[bf16], dx, dy, x, y, rows)
                       : sp_model_infer(c->m[bf16], x, y, rows);
    TU_EXPECT(st == SP_OK, "%s thread %u call %u: %s: %s: %s", c->backend, wk->index, it,
              fwd ? "sp_model_forward" : "sp_model_infer", sp_status_str(st), sp_last_error());
    if (st != SP_OK || check_call(wk, it, bf16, x, y, rows)) break;
    wk->rows += rows;
    if (c->release_every && (it + 1) % c->release_every == 0)
      TU_EXPECT_OK(sp_stream_release_current(c->dev));
  }
  if (c->release_every) sp_stream_release_current(c->dev);
  sp_free(c->dev, dx);
  sp_free(c->dev, dy);
  return NULL;
}

static void run_mode(const char *backend, sp_stream_mode mode, unsigned streams, unsigned threads,
                     unsigned release_every, bool forward) {
  sp_device_config cfg = {
      .backend = backend, .streams = streams, .stream_mode = mode, .slot_wait_ms = 20000};
  run_ctx c = {.backend = backend,
               .iters = (unsigned)tu_scale(120),
               .release_every = release_every,
               .forward = forward};
  SP_CHECK_OK(sp_device_open(&cfg, &c.dev));
  sp_memory_stats before, after;
  SP_CHECK_OK(sp_memory_stats_get(c.dev, &before));
  SP_CHECK_OK(sp_model_load(c.dev, path, SP_F32, &c.m[0]));
  SP_CHECK_OK(sp_model_load(c.dev, path, SP_BF16, &c.m[1]));
  sp_memory_stats loaded, ran;
  SP_CHECK_OK(sp_memory_stats_get(c.dev, &loaded));
  pthread_t th[THREADS];
  worker wk[THREADS];
  tu_failures_reset();
  for (unsigned i = 0; i < threads; i++) {
    wk[i] = (worker){.ctx = &c, .index = i};
    assert_int_equal(pthread_create(&th[i], NULL, worker_main, &wk[i]), 0);
  }
  unsigned long rows = 0;
  for (unsigned i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    rows += wk[i].rows;
  }
  SP_CHECK_OK(sp_memory_stats_get(c.dev, &ran));
  sp_model_free(c.m[0]);
  sp_model_free(c.m[1]);
  SP_CHECK_OK(sp_memory_stats_get(c.dev, &after));
  sp_device_close(c.dev);
  print_message("%s %s: %u threads on %u streams, %lu rows checked%s\n", backend,
                mode == SP_STREAMS_EXCLUSIVE ? "exclusive" : "round-robin", threads, streams, rows,
                forward ? " (half through sp_model_forward)" : "");
  assert_int_equal(tu_failures(), 0);
  /* Plans keep their buffers between calls: the cached path was taken. */
  if (ran.allocated_bytes <= loaded.allocated_bytes)
    fail_msg("%s: no plan kept its buffers (%zu bytes allocated after loading, %zu after the run)",
             backend, loaded.allocated_bytes, ran.allocated_bytes);
  if (after.allocated_bytes != before.allocated_bytes)
    fail_msg("%s: models freed but %zu bytes still allocated (%zu before loading)", backend,
             after.allocated_bytes, before.allocated_bytes);
}

static void test_infer_plans(void **state) {
  (void)state;
  const char *names[4];
  int n = tu_backends(names);
  for (int i = 0; i < n; i++) {
    run_mode(names[i], SP_STREAMS_ROUND_ROBIN, 4, THREADS, 0, true);
    run_mode(names[i], SP_STREAMS_EXCLUSIVE, 5, 4, 7, false);
  }
#ifdef SP_HAVE_CUDA
  int cuda = 0;
  if (sp_device_count("cuda", &cuda) == SP_OK && cuda == 0)
    print_message("cuda: skipped: no CUDA device\n");
#endif
}

int main(void) {
  tu_seed();
  if (write_model()) {
    fprintf(stderr, "cannot write %s\n", path);
    return 1;
  }
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_infer_plans)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  unlink(path);
  return rc;
}
