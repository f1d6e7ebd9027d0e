/* Goal: every STREAMPOOL_* override is applied when valid and rejected when not, with
 * SP_ERR_INVALID_ARGUMENT and a message naming the variable and the bad value.
 * Method: for each variable, setenv a table of good values (checking the effective config through
 * sp_device_config_get) and bad values (no digits, sign, spaces, trailing junk, wrong suffix, out of
 * range, overflow), then unsetenv. Overrides win over the caller's config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static sp_device_config open_with_env(const char *var, const char *value) {
  setenv(var, value, 1);
  sp_device_config cfg = {.backend = "host", .streams = 3, .slot_wait_ms = 9};
  sp_device *dev = NULL;
  sp_status st = sp_device_open(&cfg, &dev);
  unsetenv(var);
  if (st != SP_OK)
    fail_msg("%s='%s': open returned %s: %s", var, value, sp_status_str(st), sp_last_error());
  sp_device_config c;
  SP_CHECK_OK(sp_device_config_get(dev, &c));
  /* c.backend points into the device: copy it before the close frees it. */
  static char backend[16];
  snprintf(backend, sizeof(backend), "%s", c.backend);
  c.backend = backend;
  sp_device_close(dev);
  return c;
}

static void expect_rejected(const char *var, const char *value) {
  setenv(var, value, 1);
  sp_device *dev = (sp_device *)(uintptr_t)0x77;
  sp_status st = sp_device_open(NULL, &dev);
  unsetenv(var);
  if (st != SP_ERR_INVALID_ARGUMENT)
    fail_msg("%s='%s': open returned %s, expected SP_ERR_INVALID_ARGUMENT (%s)", var, value,
             sp_status_str(st), sp_last_error());
  assert_ptr_equal(dev, (sp_device *)(uintptr_t)0x77);
  if (!strstr(sp_last_error(), var) || !strstr(sp_last_error(), value))
    fail_msg("%s='%s': message '%s' does not name the variable and the value", var, value,
             sp_last_error());
}

static void streams_var(void **state) {
  (void)state;
  assert_int_equal(open_with_env("STREAMPOOL_STREAMS", "2").streams, 2);
  assert_int_equal(open_with_env("STREAMPOOL_STREAMS", "17").streams, 17);
  assert_int_equal(open_with_env("STREAMPOOL_STREAMS", "128").streams, 128);
  const char *bad[] = {"", "abc", "8x", "-3", "+3", " 8", "8 ", "0", "1", "129", "4K", "0x10",
                       "99999999999999999999999"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_rejected("STREAMPOOL_STREAMS", bad[i]);
}

static void mode_var(void **state) {
  (void)state;
  assert_int_equal(open_with_env("STREAMPOOL_STREAM_MODE", "exclusive").stream_mode,
                   SP_STREAMS_EXCLUSIVE);
  assert_int_equal(open_with_env("STREAMPOOL_STREAM_MODE", "round_robin").stream_mode,
                   SP_STREAMS_ROUND_ROBIN);
  const char *bad[] = {"", "Exclusive", "rr", "exclusive ", "1"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_rejected("STREAMPOOL_STREAM_MODE", bad[i]);
}

static void slot_wait_var(void **state) {
  (void)state;
  assert_int_equal(open_with_env("STREAMPOOL_SLOT_WAIT_MS", "0").slot_wait_ms, 0);
  assert_int_equal(open_with_env("STREAMPOOL_SLOT_WAIT_MS", "250").slot_wait_ms, 250);
  assert_int_equal(open_with_env("STREAMPOOL_SLOT_WAIT_MS", "4294967295").slot_wait_ms,
                   4294967295u);
  const char *bad[] = {"", "1.5", "4294967296", "-1", "10ms", "1K"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_rejected("STREAMPOOL_SLOT_WAIT_MS", bad[i]);
}

static void memory_limit_var(void **state) {
  (void)state;
  assert_int_equal(open_with_env("STREAMPOOL_MEMORY_LIMIT", "123456").memory_limit, 123456);
  assert_int_equal(open_with_env("STREAMPOOL_MEMORY_LIMIT", "5k").memory_limit, 5 << 10);
  assert_int_equal(open_with_env("STREAMPOOL_MEMORY_LIMIT", "64M").memory_limit, 64u << 20);
  assert_int_equal(open_with_env("STREAMPOOL_MEMORY_LIMIT", "2G").memory_limit, 2ull << 30);
  const char *bad[] = {"", "12Q", "1KB", "1 K", "K", "-5M", "1.5G", "18446744073709551615K",
                       "17179869184G", "99999999999999999999"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_rejected("STREAMPOOL_MEMORY_LIMIT", bad[i]);
}

static void backend_var(void **state) {
  (void)state;
  assert_string_equal(open_with_env("STREAMPOOL_BACKEND", "host").backend, "host");
  const char *bad[] = {"", "gpu", "HOST", "host "};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_rejected("STREAMPOOL_BACKEND", bad[i]);
  if (!sp_backend_compiled("cuda")) {
    setenv("STREAMPOOL_BACKEND", "cuda", 1);
    sp_device *dev = NULL;
    sp_status st = sp_device_open(NULL, &dev);
    unsetenv("STREAMPOOL_BACKEND");
    if (st != SP_ERR_UNSUPPORTED)
      fail_msg("STREAMPOOL_BACKEND=cuda without CUDA: %s, expected SP_ERR_UNSUPPORTED",
               sp_status_str(st));
  }
}

/* The environment wins over the caller's config. */
static void env_overrides_config(void **state) {
  (void)state;
  setenv("STREAMPOOL_STREAMS", "5", 1);
  setenv("STREAMPOOL_STREAM_MODE", "exclusive", 1);
  sp_device_config cfg = {.backend = "host", .streams = 40, .stream_mode = SP_STREAMS_ROUND_ROBIN};
  sp_device *dev = NULL;
  sp_status st = sp_device_open(&cfg, &dev);
  unsetenv("STREAMPOOL_STREAMS");
  unsetenv("STREAMPOOL_STREAM_MODE");
  SP_CHECK_OK(st);
  sp_device_config c;
  SP_CHECK_OK(sp_device_config_get(dev, &c));
  assert_int_equal(c.streams, 5);
  assert_int_equal(c.stream_mode, SP_STREAMS_EXCLUSIVE);
  sp_device_close(dev);
}

int main(void) {
  tu_seed();
  const char *vars[] = {"STREAMPOOL_BACKEND", "STREAMPOOL_STREAMS", "STREAMPOOL_STREAM_MODE",
                        "STREAMPOOL_SLOT_WAIT_MS", "STREAMPOOL_MEMORY_LIMIT"};
  for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) unsetenv(vars[i]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(streams_var),      cmocka_unit_test(mode_var),
      cmocka_unit_test(slot_wait_var),    cmocka_unit_test(memory_limit_var),
      cmocka_unit_test(backend_var),      cmocka_unit_test(env_overrides_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
