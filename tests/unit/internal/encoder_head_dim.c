/* Goal: an encoder whose attention heads are wider than the backend's attention runs
 * (sp__backend.nn_head_dim_max; CUDA: 128) is refused at sp_encoder_load with SP_ERR_UNSUPPORTED
 * naming both numbers and the backend, taking no device memory and leaving the device usable;
 * not loaded, then failing at its first embed. Method: the host table copied with
 * nn_head_dim_max = 4 and installed with sp__backend_override (the host itself runs any width);
 * tests/fixtures/encoder/tiny_bert has heads of 8 (hidden 32, 4 heads). Without the override the
 * same folder loads and embeds.
 */
#include <string.h>

#include "core/device.h"
#include "testutil.h"

#define TINY SP_TEST_SOURCE_DIR "/fixtures/encoder/tiny_bert"

static sp__backend narrow;

static void test_wide_heads_refused_at_load(void **state) {
  (void)state;
  narrow = sp__host_backend;
  narrow.nn_head_dim_max = 4;
  SP_CHECK_OK(sp__backend_override(&narrow));
  sp_device *dev = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  assert_ptr_equal(dev->be, &narrow);
  sp_encoder *e = NULL;
  SP_CHECK_STATUS(sp_encoder_load(dev, TINY, SP_F32, &e), SP_ERR_UNSUPPORTED);
  assert_null(e);
  const char *msg = sp_last_error();
  if (!strstr(msg, "heads of 8 dimensions") || !strstr(msg, "at most 4") || !strstr(msg, "host"))
    fail_msg("the refusal does not name the widths and the backend: %s", msg);
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_int_equal(m.allocated_bytes, 0);
  SP_CHECK_OK(sp_device_close(dev)); /* nothing of the refused encoder is left alive */
  SP_CHECK_OK(sp__backend_override(NULL));

  dev = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  SP_CHECK_OK(sp_encoder_load(dev, TINY, SP_F32, &e));
  const char *text = "hello world";
  float out[32];
  SP_CHECK_OK(sp_encoder_embed(e, &text, 1, out));
  sp_encoder_free(e);
  SP_CHECK_OK(sp_device_close(dev));
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_wide_heads_refused_at_load)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
