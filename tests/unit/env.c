/* Goal: every STREAMPOOL_* override is applied when valid and rejected when not, with
 * SP_ERR_INVALID_ARGUMENT and a message naming the variable and the bad value. One grammar for all
 * of them (the device's, the host backend's, the batcher's and the model build's): sizes take
 * K/M/G/T with an optional B or iB (so STREAMPOOL_MEMORY_LIMIT=64MiB works as
 * STREAMPOOL_HOST_MEMORY=64MiB does), counts are digits only (no sign, no space), switches are 0
 * or 1, and an empty value is an error for every variable, in one message format VAR='value'.
 * Method: for each variable, setenv a table of good values (checking the effective config through
 * sp_device_config_get or sp_device_memory_info) and bad values (no digits, sign, spaces, trailing
 * junk, wrong suffix, out of range, overflow, empty), then unsetenv. The batcher's and the model
 * build's variables are checked through sp_batcher_create and sp_model_mlp_random on a small
 * model. Overrides win over the caller's config.
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
  const char *bad[] = {"",
                       "abc",
                       "8x",
                       "-3",
                       "+3",
                       " 8",
                       "8 ",
                       "0",
                       "1",
                       "129",
                       "4K",
                       "0x10",
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
  assert_int_equal(open_with_env("STREAMPOOL_MEMORY_LIMIT", "64MiB").memory_limit, 64u << 20);
  assert_int_equal(open_with_env("STREAMPOOL_MEMORY_LIMIT", "1KB").memory_limit, 1024);
  assert_int_equal(open_with_env("STREAMPOOL_MEMORY_LIMIT", "3T").memory_limit, 3ull << 40);
  assert_int_equal(open_with_env("STREAMPOOL_MEMORY_LIMIT", "512B").memory_limit, 512);
  const char *bad[] = {"",
                       "12Q",
                       "1 K",
                       "K",
                       "-5M",
                       "+5M",
                       " 5M",
                       "1.5G",
                       "1Kb",
                       "1KiBx",
                       "1iB",
                       "18446744073709551615K",
                       "17179869184G",
                       "99999999999999999999"};
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

/* What reads a variable: the device open, the model build or the batcher create. */
typedef enum reader { AT_OPEN, AT_MODEL, AT_BATCHER } reader;

/* Sets var=value, runs the reader on host device 0, unsets var; the reader's status. */
static sp_status read_with_env(const char *var, const char *value, reader at) {
  static const unsigned dims[] = {4, 8, 3};
  setenv(var, value, 1);
  sp_device_config cfg = {.backend = "host"};
  sp_device *dev = NULL;
  sp_model *m = NULL;
  sp_batcher *b = (sp_batcher *)(uintptr_t)0x77;
  sp_status st = sp_device_open(&cfg, &dev);
  if (st == SP_OK && at != AT_OPEN) st = sp_model_mlp_random(dev, dims, 3, 1, SP_F32, &m);
  if (st == SP_OK && at == AT_BATCHER) {
    st = sp_batcher_create(m, NULL, &b);
    if (st == SP_OK) sp_batcher_destroy(b);
    else assert_ptr_equal(b, (sp_batcher *)(uintptr_t)0x77);
  }
  unsetenv(var);
  sp_model_free(m);
  sp_device_close(dev);
  return st;
}

/* The one message format: the variable and the value as VAR='value'. */
static void expect_refused_at(const char *var, const char *value, reader at) {
  sp_status st = read_with_env(var, value, at);
  char want[256];
  snprintf(want, sizeof(want), "%s='%s'", var, value);
  if (st != SP_ERR_INVALID_ARGUMENT || !strstr(sp_last_error(), want))
    fail_msg(
        "%s='%s': got %s, message '%s'; expected SP_ERR_INVALID_ARGUMENT and a message "
        "containing %s",
        var, value, sp_status_str(st), sp_last_error(), want);
}

static size_t host_memory_with_env(const char *value) {
  setenv("STREAMPOOL_HOST_MEMORY", value, 1);
  sp_device_config cfg = {.backend = "host"};
  sp_device *dev = NULL;
  sp_status st = sp_device_open(&cfg, &dev);
  unsetenv("STREAMPOOL_HOST_MEMORY");
  if (st != SP_OK)
    fail_msg("STREAMPOOL_HOST_MEMORY='%s': %s: %s", value, sp_status_str(st), sp_last_error());
  size_t free_b = 0, total_b = 0;
  SP_CHECK_OK(sp_device_memory_info(dev, &free_b, &total_b));
  sp_device_close(dev);
  return total_b;
}

/* The host backend's variables follow the same grammar and message format. */
static void host_vars(void **state) {
  (void)state;
  assert_int_equal(host_memory_with_env("64MiB"), 64u << 20);
  assert_int_equal(host_memory_with_env("64m"), 64u << 20);
  assert_int_equal(host_memory_with_env("5KB"), 5120);
  assert_int_equal(host_memory_with_env("4096"), 4096);
  const char *bad_mem[] = {"", "0", "+4K", " 4K", "4K ", "4Kb", "1.5G", "-1G", "4KX"};
  for (size_t i = 0; i < sizeof(bad_mem) / sizeof(bad_mem[0]); i++)
    expect_refused_at("STREAMPOOL_HOST_MEMORY", bad_mem[i], AT_OPEN);
  const char *bad_count[] = {"", "+2", " 2", "2 ", "0", "17", "2K"};
  for (size_t i = 0; i < sizeof(bad_count) / sizeof(bad_count[0]); i++)
    expect_refused_at("STREAMPOOL_HOST_DEVICES", bad_count[i], AT_OPEN);
  const char *bad_jitter[] = {"", "+5", " 5", "5us", "1000001", "1K"};
  for (size_t i = 0; i < sizeof(bad_jitter) / sizeof(bad_jitter[0]); i++)
    expect_refused_at("STREAMPOOL_HOST_JITTER_US", bad_jitter[i], AT_OPEN);
  const char *bad_seed[] = {"", "+1", "-3", "x", "18446744073709551616"};
  for (size_t i = 0; i < sizeof(bad_seed) / sizeof(bad_seed[0]); i++)
    expect_refused_at("STREAMPOOL_HOST_JITTER_SEED", bad_seed[i], AT_OPEN);
  SP_CHECK_OK(read_with_env("STREAMPOOL_HOST_JITTER_SEED", "18446744073709551615", AT_OPEN));
}

/* STREAMPOOL_BATCHER_SPIN_US (read by sp_batcher_create): digits 0..100000, nothing else. */
static void batcher_spin_var(void **state) {
  (void)state;
  const char *good[] = {"0", "5", "100000"};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
    SP_CHECK_OK(read_with_env("STREAMPOOL_BATCHER_SPIN_US", good[i], AT_BATCHER));
  const char *bad[] = {"", "+5", " 5", "5 ", "-1", "100001", "5K", "0x5", "12x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_refused_at("STREAMPOOL_BATCHER_SPIN_US", bad[i], AT_BATCHER);
}

/* STREAMPOOL_GRAPHS (read by the model build): the switch 0 or 1. */
static void graphs_var(void **state) {
  (void)state;
  SP_CHECK_OK(read_with_env("STREAMPOOL_GRAPHS", "0", AT_MODEL));
  SP_CHECK_OK(read_with_env("STREAMPOOL_GRAPHS", "1", AT_MODEL));
  const char *bad[] = {"", "2", "+1", " 1", "1 ", "on", "yes"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_refused_at("STREAMPOOL_GRAPHS", bad[i], AT_MODEL);
}

/* One rule for an empty value: an error, for every variable, in the one message format. */
static void empty_is_an_error(void **state) {
  (void)state;
  const char *at_open[] = {
      "STREAMPOOL_BACKEND",        "STREAMPOOL_STREAMS",          "STREAMPOOL_STREAM_MODE",
      "STREAMPOOL_SLOT_WAIT_MS",   "STREAMPOOL_MEMORY_LIMIT",     "STREAMPOOL_HOST_DEVICES",
      "STREAMPOOL_HOST_JITTER_US", "STREAMPOOL_HOST_JITTER_SEED", "STREAMPOOL_HOST_MEMORY"};
  for (size_t i = 0; i < sizeof(at_open) / sizeof(at_open[0]); i++)
    expect_refused_at(at_open[i], "", AT_OPEN);
  expect_refused_at("STREAMPOOL_GRAPHS", "", AT_MODEL);
  expect_refused_at("STREAMPOOL_BATCHER_SPIN_US", "", AT_BATCHER);
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
  const char *vars[] = {
      "STREAMPOOL_BACKEND",        "STREAMPOOL_STREAMS",          "STREAMPOOL_STREAM_MODE",
      "STREAMPOOL_SLOT_WAIT_MS",   "STREAMPOOL_MEMORY_LIMIT",     "STREAMPOOL_HOST_DEVICES",
      "STREAMPOOL_HOST_JITTER_US", "STREAMPOOL_HOST_JITTER_SEED", "STREAMPOOL_HOST_MEMORY",
      "STREAMPOOL_GRAPHS",         "STREAMPOOL_BATCHER_SPIN_US"};
  for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) unsetenv(vars[i]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(streams_var),   cmocka_unit_test(mode_var),
      cmocka_unit_test(slot_wait_var), cmocka_unit_test(memory_limit_var),
      cmocka_unit_test(backend_var),   cmocka_unit_test(env_overrides_config),
      cmocka_unit_test(host_vars),     cmocka_unit_test(batcher_spin_var),
      cmocka_unit_test(graphs_var),    cmocka_unit_test(empty_is_an_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
