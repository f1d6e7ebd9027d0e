/* Goal: device-memory failures inside inference reach exactly the calls they concern: a model
 * build, a forward, sp_model_infer and the batcher's pass return SP_ERR_OUT_OF_MEMORY with a
 * message, change nothing, and later calls succeed with correct outputs once memory is back; a
 * failing resident open or forward (the backend's resident slots) likewise.
 * Method: the fault-injecting table (tests/common/internal/tu_backend_faults.h) fails every new
 * segment (mem_alloc from its first call on);
 * the model's hidden layer is wide (3M) so every weight and workspace block needs a segment of its
 * own, and each case empties the cache first, so the request must reach the backend. The batcher
 * case runs a model built with STREAMPOOL_GRAPHS=0, so each pass allocates its workspace (a
 * replayed graph owns its own and would have nothing to fail).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/device.h"
#include "testutil.h"
#include "tu_backend_faults.h"

enum { IN = 4, HID = 3000000, OUT = 3 }; /* every tensor and workspace > 10 MiB */

static sp_device *dev;
static sp_model *model;

static int setup(void **state) {
  (void)state;
  if (tu_fault_install("host") != SP_OK) return -1;
  dev = tu_open_host(8, SP_STREAMS_ROUND_ROBIN);
  const unsigned dims[] = {IN, HID, OUT};
  return sp_model_mlp_random(dev, dims, 3, 5, SP_F32, &model) == SP_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  tu_fault_disarm();
  sp_model_free(model);
  sp_device_close(dev);
  tu_fault_uninstall();
  return 0;
}

static void test_build_fails_cleanly(void **state) {
  (void)state;
  const unsigned dims[] = {IN, HID, OUT};
  sp_model *m = NULL;
  sp_memory_stats before, after;
  SP_CHECK_OK(sp_memory_stats_get(dev, &before));
  SP_CHECK_OK(sp_empty_cache(dev));
  tu_fault_arm(TU_SLOT_mem_alloc, 0, 1);
  SP_CHECK_STATUS(sp_model_mlp_random(dev, dims, 3, 5, SP_F32, &m), SP_ERR_OUT_OF_MEMORY);
  tu_fault_disarm();
  assert_null(m);
  SP_CHECK_OK(sp_memory_stats_get(dev, &after));
  if (after.allocated_bytes != before.allocated_bytes)
    fail_msg("a failed build kept %zu bytes", after.allocated_bytes - before.allocated_bytes);
}

static void test_infer_fails_then_recovers(void **state) {
  (void)state;
  float x[2 * IN] = {0.5f, -1.0f, 0.25f, 2.0f, 1.0f, 1.0f, -1.0f, 0.0f}, y[2 * OUT], ref[2 * OUT];
  SP_CHECK_OK(sp_empty_cache(dev));
  tu_fault_arm(TU_SLOT_mem_alloc, 0, 1);
  sp_status st = sp_model_infer(model, x, y, 2); /* a fresh thread stream: no cached workspace */
  tu_fault_disarm();
  if (st != SP_ERR_OUT_OF_MEMORY)
    fail_msg("infer under injected OOM returned %s: %s", sp_status_str(st), sp_last_error());
  assert_true(strlen(sp_last_error()) > 0);
  SP_CHECK_OK(sp_model_infer(model, x, ref, 2));
  SP_CHECK_OK(sp_model_infer(model, x, y, 2));
  assert_memory_equal(y, ref, sizeof(y));
}

/* A failing resident open leaves no resident counted; a failing forward reports the backend's
 * message and the next forward gives the right answer (the host backend has no state to break). */
static void test_resident_faults(void **state) {
  (void)state;
  const unsigned dims[] = {8, 16, 4};
  sp_model *m = NULL;
  sp_resident *r = NULL;
  SP_CHECK_OK(sp_model_mlp_random(dev, dims, 3, 9, SP_BF16, &m));
  tu_fault_arm(TU_SLOT_resident_open, 0, 0);
  SP_CHECK_STATUS(sp_resident_open(m, &r), SP_ERR_BACKEND);
  assert_null(r);
  assert_non_null(strstr(sp_last_error(), "resident_open"));
  assert_int_equal(atomic_load(&dev->residents), 0);
  SP_CHECK_OK(sp_resident_open(m, &r));
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  float x[8] = {1, -2, 3, -4, 0.5f, 0.25f, -1, 2}, want[4], got[4], *din, *dout;
  SP_CHECK_OK(sp_alloc(dev, sizeof(x), s, (void **)&din));
  SP_CHECK_OK(sp_alloc(dev, sizeof(got), s, (void **)&dout));
  SP_CHECK_OK(sp_memcpy_async(s, din, x, sizeof(x)));
  SP_CHECK_OK(sp_stream_sync(s));
  SP_CHECK_OK(sp_resident_forward(r, din, dout));
  SP_CHECK_OK(sp_memcpy_async(s, want, dout, sizeof(want)));
  SP_CHECK_OK(sp_memset_async(s, dout, 0, sizeof(got)));
  SP_CHECK_OK(sp_stream_sync(s));
  tu_fault_arm(TU_SLOT_resident_run, 0, 0); /* the next forward */
  SP_CHECK_STATUS(sp_resident_forward(r, din, dout), SP_ERR_BACKEND);
  assert_non_null(strstr(sp_last_error(), "resident_run"));
  SP_CHECK_OK(sp_resident_forward(r, din, dout));
  SP_CHECK_OK(sp_memcpy_async(s, got, dout, sizeof(got)));
  SP_CHECK_OK(sp_stream_sync(s));
  assert_memory_equal(got, want, sizeof(got));
  sp_resident_close(r);
  assert_int_equal(atomic_load(&dev->residents), 0);
  SP_CHECK_OK(sp_free(dev, din));
  SP_CHECK_OK(sp_free(dev, dout));
  sp_model_free(m);
}

typedef struct caller {
  sp_batcher *b;
  float x[IN], y[OUT];
  sp_status st;
  char msg[256];
} caller;

static void *caller_main(void *p) {
  caller *c = p;
  c->st = sp_batcher_infer(c->b, c->x, c->y);
  snprintf(c->msg, sizeof(c->msg), "%s", sp_last_error());
  return NULL;
}

static void test_batcher_error_reaches_its_callers(void **state) {
  (void)state;
  /* Graphs off for this model: every pass takes its workspace from the allocator (a replayed
   * graph owns its workspace and would allocate nothing to fail). */
  const unsigned dims[] = {IN, HID, OUT};
  sp_model *m0 = NULL;
  setenv("STREAMPOOL_GRAPHS", "0", 1);
  sp_status built = sp_model_mlp_random(dev, dims, 3, 5, SP_F32, &m0);
  unsetenv("STREAMPOOL_GRAPHS");
  SP_CHECK_OK(built);
  sp_batcher_config cfg = {.max_batch = 4, .max_delay_us = 20000, .workers = 1};
  sp_batcher *b;
  SP_CHECK_OK(sp_batcher_create(m0, &cfg, &b)); /* the worker's io buffers exist now */
  caller c[4];
  pthread_t t[4];
  SP_CHECK_OK(sp_empty_cache(dev));
  tu_fault_arm(TU_SLOT_mem_alloc, 0, 1);
  for (int i = 0; i < 4; i++) {
    c[i] = (caller){.b = b, .x = {(float)i, 1.0f, -1.0f, 0.5f}};
    assert_int_equal(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
  }
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  tu_fault_disarm();
  for (int i = 0; i < 4; i++) {
    if (c[i].st != SP_ERR_OUT_OF_MEMORY)
      fail_msg("caller %d: got %s (%s), want SP_ERR_OUT_OF_MEMORY", i, sp_status_str(c[i].st),
               c[i].msg);
    if (!strstr(c[i].msg, "sp_batcher_infer:"))
      fail_msg("caller %d: message \"%s\" does not come from its call", i, c[i].msg);
  }
  sp_batcher_stats s1;
  SP_CHECK_OK(sp_batcher_stats_get(b, &s1));
  assert_int_equal(s1.failed, 4);
  /* Memory is back: the same batcher answers, and correctly. */
  float want[OUT];
  SP_CHECK_OK(sp_batcher_infer(b, c[2].x, c[2].y));
  SP_CHECK_OK(sp_model_infer(m0, c[2].x, want, 1));
  for (int o = 0; o < OUT; o++)
    if (fabsf(c[2].y[o] - want[o]) > 1e-4f * (1 + fabsf(want[o])))
      fail_msg("out[%d]: batcher %g, direct %g", o, (double)c[2].y[o], (double)want[o]);
  SP_CHECK_OK(sp_batcher_stats_get(b, &s1));
  assert_int_equal(s1.failed, 4);
  sp_batcher_destroy(b);
  sp_model_free(m0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_build_fails_cleanly),
      cmocka_unit_test(test_infer_fails_then_recovers),
      cmocka_unit_test(test_batcher_error_reaches_its_callers),
      cmocka_unit_test(test_resident_faults),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
