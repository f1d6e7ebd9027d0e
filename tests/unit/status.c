/* Goal: the error model works: every status has a distinct string, unknown values are named,
 * sp_last_error is per thread and names the failing function, the log hook receives failures and
 * can be removed, and the version string matches the header's macros.
 * Method: walk the status table; fail a call on one thread and read sp_last_error on another;
 * install a counting log hook, fail a call, remove the hook, fail again. Hooks set while other
 * threads log: one thread flips between two hooks as fast as it can while others fail calls;
 * each hook checks it got its own user pointer (a torn hook would pair one's fn with the other's
 * user).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "testutil.h"

static void strings(void **state) {
  (void)state;
  const sp_status all[] = {
#define X(name, value, text) name,
      SP_STATUS_TABLE(X)
#undef X
  };
  size_t n = sizeof(all) / sizeof(all[0]);
  for (size_t i = 0; i < n; i++) {
    const char *s = sp_status_str(all[i]);
    assert_non_null(s);
    assert_string_not_equal(s, "unknown status");
    for (size_t j = 0; j < i; j++)
      if (!strcmp(s, sp_status_str(all[j]))) fail_msg("statuses %zu and %zu share '%s'", i, j, s);
  }
  assert_string_equal(sp_status_str((sp_status)12345), "unknown status");
  assert_string_equal(sp_status_str(SP_OK), "success");
  char v[32];
  snprintf(v, sizeof(v), "%d.%d.%d", SP_VERSION_MAJOR, SP_VERSION_MINOR, SP_VERSION_PATCH);
  assert_string_equal(sp_version(), v);
}

static void *other_thread(void *p) {
  const char **out = p;
  *out = sp_last_error()[0] ? "set" : "empty";
  return NULL;
}

static void last_error_per_thread(void **state) {
  (void)state;
  SP_CHECK_STATUS(sp_device_open(NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  if (!strstr(sp_last_error(), "sp_device_open"))
    fail_msg("message '%s' does not name sp_device_open", sp_last_error());
  const char *seen = NULL;
  pthread_t t;
  pthread_create(&t, NULL, other_thread, &seen);
  pthread_join(t, NULL);
  assert_string_equal(seen, "empty");
}

typedef struct counter {
  int calls;
  char last[256];
} counter;
static void count_log(void *user, sp_log_level level, const char *msg) {
  counter *c = user;
  (void)level;
  c->calls++;
  snprintf(c->last, sizeof(c->last), "%s", msg);
}

static void log_hook(void **state) {
  (void)state;
  counter c = {0, ""};
  sp_log_set_hook(count_log, &c, SP_LOG_DEBUG);
  SP_CHECK_STATUS(sp_stream_sync(NULL), SP_ERR_INVALID_ARGUMENT);
  if (c.calls < 1) fail_msg("log hook called %d times after a failure", c.calls);
  if (!strstr(c.last, "sp_stream_sync")) fail_msg("logged '%s'", c.last);
  sp_log_set_hook(count_log, &c, SP_LOG_ERROR); /* failures log at DEBUG: filtered out */
  int before = c.calls;
  SP_CHECK_STATUS(sp_stream_sync(NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(c.calls, before);
  sp_log_set_hook(NULL, NULL, SP_LOG_DEBUG);
  SP_CHECK_STATUS(sp_stream_sync(NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(c.calls, before);
}

/* Two hooks whose user pointers name them: a message must reach fn X with X's user. */
static int hook_tag_a = 'a', hook_tag_b = 'b';
static atomic_ulong torn, delivered;
static atomic_bool flipping;
static void hook_a(void *user, sp_log_level level, const char *msg) {
  (void)level, (void)msg;
  if (user != &hook_tag_a) atomic_fetch_add(&torn, 1);
  atomic_fetch_add(&delivered, 1);
}
static void hook_b(void *user, sp_log_level level, const char *msg) {
  (void)level, (void)msg;
  if (user != &hook_tag_b) atomic_fetch_add(&torn, 1);
  atomic_fetch_add(&delivered, 1);
}

static void *flip_hooks(void *arg) {
  (void)arg;
  for (unsigned long i = 0; atomic_load(&flipping); i++)
    sp_log_set_hook(i & 1 ? hook_b : hook_a, i & 1 ? (void *)&hook_tag_b : (void *)&hook_tag_a,
                    SP_LOG_DEBUG);
  return NULL;
}

static void *fail_calls(void *arg) {
  size_t n = *(size_t *)arg;
  for (size_t i = 0; i < n; i++) (void)sp_stream_sync(NULL); /* logs at DEBUG */
  return NULL;
}

static void log_hook_set_while_logging(void **state) {
  (void)state;
  atomic_store(&flipping, true);
  pthread_t flipper, callers[3];
  size_t n = tu_scale(200000);
  assert_int_equal(pthread_create(&flipper, NULL, flip_hooks, NULL), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(pthread_create(&callers[i], NULL, fail_calls, &n), 0);
  for (int i = 0; i < 3; i++) pthread_join(callers[i], NULL);
  atomic_store(&flipping, false);
  pthread_join(flipper, NULL);
  sp_log_set_hook(NULL, NULL, SP_LOG_ERROR);
  if (atomic_load(&torn) != 0)
    fail_msg("%lu of %lu messages reached a hook with the other hook's user pointer",
             atomic_load(&torn), atomic_load(&delivered));
  if (atomic_load(&delivered) == 0) fail_msg("no message reached a hook");
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(strings),
      cmocka_unit_test(last_error_per_thread),
      cmocka_unit_test(log_hook),
      cmocka_unit_test(log_hook_set_while_logging),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
