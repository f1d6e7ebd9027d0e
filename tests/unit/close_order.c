/* Goal (issue 14): closing a device while a model or batcher of it is alive is refused with
 * SP_ERR_BUSY and a message counting them, the device staying open and usable, instead of freeing
 * what the model and batcher still use (a silent use-after-free when they were freed later);
 * once they are gone the close succeeds. Run under ASan by `make asan`, which catches the old
 * order's invalid reads.
 * Method: a host device with a seeded MLP and a batcher over it; close is tried after each step of
 * the teardown, and the model and batcher are used between the refused closes to show nothing was
 * freed.
 */
#include <string.h>

#include "testutil.h"

static void infer_once(sp_model *m, sp_batcher *b) {
  float in[4] = {1, 2, 3, 4}, out_m[3], out_b[3];
  SP_CHECK_OK(sp_model_infer(m, in, out_m, 1));
  if (!b) return;
  SP_CHECK_OK(sp_batcher_infer(b, in, out_b));
  for (int i = 0; i < 3; i++)
    if (out_m[i] != out_b[i])
      fail_msg("out[%d]: model %g, batcher %g", i, (double)out_m[i], (double)out_b[i]);
}

static void expect_busy(sp_device *dev, const char *counts) {
  SP_CHECK_STATUS(sp_device_close(dev), SP_ERR_BUSY);
  if (!strstr(sp_last_error(), counts))
    fail_msg("message \"%s\" lacks \"%s\"", sp_last_error(), counts);
}

static void test_close_refused_while_alive(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  const unsigned dims[] = {4, 8, 3};
  sp_model *m = NULL, *m2 = NULL;
  sp_batcher *b = NULL;
  SP_CHECK_OK(sp_model_mlp_random(dev, dims, 3, tu_seed(), SP_F32, &m));
  SP_CHECK_OK(sp_model_mlp_random(dev, dims, 3, tu_seed() + 1, SP_BF16, &m2));
  SP_CHECK_OK(sp_batcher_create(m, NULL, &b));
  expect_busy(dev, "2 model(s), 1 batcher(s) and 0 resident(s)");
  infer_once(m, b);
  sp_batcher_destroy(b);
  expect_busy(dev, "2 model(s), 0 batcher(s) and 0 resident(s)");
  infer_once(m, NULL);
  sp_model_free(m);
  expect_busy(dev, "1 model(s)");
  sp_model_free(m2);
  /* A failed build leaves no count behind. */
  const unsigned bad[] = {4, 0, 3};
  sp_model *none = NULL;
  SP_CHECK_STATUS(sp_model_mlp_random(dev, bad, 3, 1, SP_F32, &none), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(sp_device_close(dev));
  SP_CHECK_OK(sp_device_close(NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_close_refused_while_alive)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
