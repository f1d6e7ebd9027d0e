/* White-box helpers for tests that drive a backend table directly (conformance/conf_backend*.c,
 * unit/internal/host_backend.c): open a device, create a stream or an event through `be`, failing
 * the test (cmocka) with the slot's message when the slot fails (any thread); and the runner of
 * the conf_backend suites, which runs every case on every backend table (tu_be_run_cases). */
#ifndef TU_BACKEND_H
#define TU_BACKEND_H

#include <math.h>
#include <string.h>

#include "backend/backend.h"
#include "testutil.h"

static inline sp__bdevice *tu_be_device(const sp__backend *be, int index) {
  sp__bdevice *d = NULL;
  SP_CHECK_OK(be->device_open(index, &d));
  assert_non_null(d);
  return d;
}

static inline sp__bstream *tu_be_stream(const sp__backend *be, sp__bdevice *d, unsigned index) {
  sp__bstream *s = NULL;
  SP_CHECK_OK(be->stream_create(d, index, &s));
  assert_non_null(s);
  return s;
}

static inline sp__bevent *tu_be_event(const sp__backend *be, sp__bdevice *d, unsigned flags) {
  sp__bevent *e = NULL;
  SP_CHECK_OK(be->event_create(d, flags, &e));
  assert_non_null(e);
  return e;
}

/* ---- the table-suite runner ----------------------------------------------------------------- */

typedef struct tu_be_case {
  const char *name;
  void (*fn)(void **state);
} tu_be_case;

typedef struct tu_be_state {
  const char *backend;
  void (*fn)(void **state);
  const sp__backend **table; /* the suite's "current table" variable, set per case */
  char name[96];
} tu_be_state;

static inline int tu_be_setup(void **state) {
  tu_be_state *c = *state;
  unsetenv("STREAMPOOL_HOST_JITTER_US");
  tu_failures_reset();
  if (sp__backend_find(c->backend, c->table) != SP_OK) {
    fprintf(stderr, "%s: %s\n", c->name, sp_last_error());
    return -1;
  }
  return 0;
}

static inline int tu_be_teardown(void **state) {
  tu_be_state *c = *state;
  unsetenv("STREAMPOOL_HOST_JITTER_US");
  *c->table = NULL;
  return 0;
}

static inline void tu_be_run(void **state) {
  tu_be_state *c = *state;
  c->fn(state);
  assert_int_equal(tu_failures(), 0);
}

/* Runs cases[0, n) on every backend tu_backends() gives (SP_CONFORMANCE_BACKEND picks one,
 * SP_REQUIRE_CUDA=1 makes a missing CUDA device a failure, as in conformance.h), as cmocka tests
 * named "<backend>/<case>", with *table set to the backend's table for each. Returns main's
 * exit status. */
static inline int tu_be_run_cases(const char *suite, const tu_be_case *cases, size_t n,
                                  const sp__backend **table) {
  enum { MAX_CASES = 64 };
  (void)tu_seed();
  const char *all[4], *names[4];
  int nb = tu_backends(all), k = 0, have_cuda = 0;
  const char *only = getenv("SP_CONFORMANCE_BACKEND"), *req = getenv("SP_REQUIRE_CUDA");
  for (int i = 0; i < nb; i++) have_cuda |= strcmp(all[i], "cuda") == 0;
  if (req && strcmp(req, "1") == 0 && !have_cuda) {
    fprintf(stderr, "%s: SP_REQUIRE_CUDA=1 but no CUDA device is usable\n", suite);
    return 1;
  }
  if (!have_cuda)
    printf("[%s] cuda: skipped: %s (host runs)\n", suite,
           sp_backend_compiled("cuda") ? "no CUDA device" : "CUDA backend not compiled in");
  for (int i = 0; i < nb; i++)
    if (!only || strcmp(only, all[i]) == 0) names[k++] = all[i];
  if (k == 0) {
    printf("skipped: SP_CONFORMANCE_BACKEND=%s is not available\n", only);
    return TU_SKIP;
  }
  if (n > MAX_CASES) {
    fprintf(stderr, "%s: %zu cases, the runner holds %d\n", suite, n, (int)MAX_CASES);
    return 1;
  }
  static tu_be_state tc[4 * MAX_CASES];
  static struct CMUnitTest tests[4 * MAX_CASES];
  size_t total = 0;
  for (int b = 0; b < k; b++)
    for (size_t i = 0; i < n; i++, total++) {
      tc[total] = (tu_be_state){names[b], cases[i].fn, table, {0}};
      snprintf(tc[total].name, sizeof(tc[total].name), "%s/%s", names[b], cases[i].name);
      tests[total] =
          (struct CMUnitTest){tc[total].name, tu_be_run, tu_be_setup, tu_be_teardown, &tc[total]};
    }
  return _cmocka_run_group_tests(suite, tests, total, NULL, NULL);
}

/* The reference of every sp__act, in double (backend.h's formulas). */
static inline double tu_act_ref(int act, double v) {
  switch (act) {
  case SP__ACT_RELU: return v > 0 ? v : 0.0;
  case SP__ACT_GELU_ERF: return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
  case SP__ACT_GELU_TANH:
    return 0.5 * v * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (v + 0.044715 * v * v * v)));
  case SP__ACT_SILU: return v / (1.0 + exp(-v));
  case SP__ACT_TANH: return tanh(v);
  default: return v;
  }
}

#endif /* TU_BACKEND_H */
