/* The conformance harness: each test file lists its cases once and conf_main runs every case on
 * every backend tu_backends() returns (host always; cuda when compiled in and a device exists),
 * on a fresh device per case, as cmocka tests named "<backend>/<case>".
 *
 * Environment: SP_CONFORMANCE_BACKEND=name runs only that backend; SP_REQUIRE_CUDA=1 makes a
 * missing CUDA device a failure (scripts/gpu-check.sh sets it, so CUDA cannot silently skip).
 * Without a CUDA device the host cases still run; the line printed for cuda says "not run"
 * rather than "skipped: " because ctest's skip pattern would mark the whole file skipped and
 * hide the host results.
 *
 * Helpers for cases: conf_streams (k distinct pool streams on one thread), gates (testutil.h's
 * tu_gate launched on a stream, opened by the test or by a timer thread) and pattern fills.
 * Header-only: each conformance test is one executable.
 */
#ifndef SP_CONFORMANCE_H
#define SP_CONFORMANCE_H

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

enum { CONF_STREAMS = 8 }; /* pool size of every device a case gets (default stream included) */

typedef void (*conf_fn)(sp_device *dev);
typedef struct conf_case {
  const char *name;
  conf_fn fn;
} conf_case;

typedef struct conf_state {
  const char *backend;
  conf_fn fn;
  sp_device *dev;
  char name[96];
} conf_state;

/* The backend the current case runs on ("host", "cuda"). */
static inline const char *conf_backend(sp_device *dev) { return sp_device_backend(dev); }
static inline int conf_is_cuda(sp_device *dev) { return strcmp(conf_backend(dev), "cuda") == 0; }

/* k (< CONF_STREAMS) distinct pool streams, bound one after another on this thread
 * (round-robin mode hands out the next pool stream on each new binding). */
static inline void conf_streams(sp_device *dev, sp_stream **out, unsigned k) {
  assert_true(k < CONF_STREAMS);
  for (unsigned i = 0; i < k; i++) {
    SP_CHECK_OK(sp_stream_release_current(dev));
    SP_CHECK_OK(sp_stream_current(dev, &out[i]));
    for (unsigned j = 0; j < i; j++)
      if (out[j] == out[i])
        fail_msg("conf_streams: binding %u gave stream %u again", i, sp_stream_index(out[i]));
  }
}

/* ---- gates: hold a stream in a host function until opened ----------------------------------- */

typedef tu_gate conf_gate; /* testutil.h */

/* Closes s behind a gate. timer_ms > 0: it opens by itself after that long (use this when the
 * test itself might block while the gate is closed, e.g. inside sp_free of a slow allocator). */
static inline void conf_gate_close(conf_gate *g, sp_stream *s, unsigned timer_ms) {
  tu_gate_init(g, timer_ms);
  SP_CHECK_OK(sp_launch_host_func(s, tu_gate_fn, g));
}

static inline void conf_gate_open(conf_gate *g) { tu_gate_open(g); }

/* ---- data ---------------------------------------------------------------------------------- */

/* testutil.h's seeded patterns under the names the cases use. */
static inline unsigned char conf_pattern(uint64_t seed, size_t i) { return tu_pattern(seed, i); }
static inline void conf_fill(unsigned char *p, size_t n, uint64_t seed) { tu_fill(p, n, seed); }
/* Index of the first byte of p that is not conf_pattern(seed, .), or n. */
static inline size_t conf_check(const unsigned char *p, size_t n, uint64_t seed) {
  return tu_first_bad(p, n, seed);
}

static inline size_t conf_check_byte(const unsigned char *p, size_t n, unsigned char v) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != v) return i;
  return n;
}

/* Copies n device bytes at src back to the host on s and waits. */
static inline void conf_download(sp_stream *s, void *host, const void *src, size_t n) {
  SP_CHECK_OK(sp_memcpy_async(s, host, src, n));
  SP_CHECK_OK(sp_stream_sync(s));
}

/* ---- the runner ----------------------------------------------------------------------------- */

static int conf_setup(void **state) {
  conf_state *cs = *state;
  sp_device_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.backend = cs->backend;
  cfg.streams = CONF_STREAMS;
  cfg.stream_mode = SP_STREAMS_ROUND_ROBIN;
  sp_status st = sp_device_open(&cfg, &cs->dev);
  if (st != SP_OK) {
    fprintf(stderr, "%s: sp_device_open: %s: %s\n", cs->name, sp_status_str(st), sp_last_error());
    return -1;
  }
  return 0;
}

static int conf_teardown(void **state) {
  conf_state *cs = *state;
  sp_device_close(cs->dev);
  cs->dev = NULL;
  return 0;
}

static void conf_run(void **state) {
  conf_state *cs = *state;
  tu_failures_reset();
  cs->fn(cs->dev);
  assert_int_equal(tu_failures(), 0);
}

static inline int conf_main(const char *suite, const conf_case *cases, size_t n) {
  (void)tu_seed();
  const char *all[4];
  int nb = tu_backends(all);
  const char *only = getenv("SP_CONFORMANCE_BACKEND");
  const char *req = getenv("SP_REQUIRE_CUDA");
  int have_cuda = 0;
  for (int i = 0; i < nb; i++) have_cuda |= strcmp(all[i], "cuda") == 0;
  if (req && strcmp(req, "1") == 0 && !have_cuda) {
    fprintf(stderr, "%s: SP_REQUIRE_CUDA=1 but no CUDA device is usable\n", suite);
    return 1;
  }
  if (!have_cuda)
    printf("[%s] cuda: skipped: %s (host runs)\n", suite,
           sp_backend_compiled("cuda") ? "no CUDA device" : "CUDA backend not compiled in");
  const char *names[4];
  int k = 0;
  for (int i = 0; i < nb; i++)
    if (!only || strcmp(only, all[i]) == 0) names[k++] = all[i];
  if (k == 0) {
    printf("skipped: SP_CONFORMANCE_BACKEND=%s is not available\n", only);
    return TU_SKIP;
  }
  size_t total = (size_t)k * n;
  conf_state *states = calloc(total, sizeof(*states));
  struct CMUnitTest *tests = calloc(total, sizeof(*tests));
  if (!states || !tests) return 1;
  for (int b = 0; b < k; b++)
    for (size_t c = 0; c < n; c++) {
      conf_state *cs = &states[(size_t)b * n + c];
      cs->backend = names[b];
      cs->fn = cases[c].fn;
      snprintf(cs->name, sizeof(cs->name), "%s/%s", names[b], cases[c].name);
      struct CMUnitTest *t = &tests[(size_t)b * n + c];
      t->name = cs->name;
      t->test_func = conf_run;
      t->setup_func = conf_setup;
      t->teardown_func = conf_teardown;
      t->initial_state = cs;
    }
  int rc = _cmocka_run_group_tests(suite, tests, total, NULL, NULL);
  free(tests);
  free(states);
  return rc;
}

#endif /* SP_CONFORMANCE_H */
