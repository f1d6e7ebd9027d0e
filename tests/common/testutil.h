/* Shared helpers for streampool tests (public API only).
 *
 * - SP_CHECK_OK(expr): cmocka assertion that a call returned SP_OK, printing the status and
 *   sp_last_error() on failure. Main thread only (cmocka asserts longjmp).
 * - Worker threads must not use cmocka asserts: they record failures with tu_fail(), and the
 *   main thread asserts tu_failures() == 0 after joining (tu_fail prints both values).
 * - tu_scale(n): n, or n/10 under ThreadSanitizer, so stress tests are sized down, not skipped.
 * - tu_seed(): the seed from SP_TEST_SEED (default 12345), printed once so a run can be repeated.
 * - tu_rng: xorshift64* per thread.
 * - A test that cannot run here prints "skipped: <why>" and exits TU_SKIP (77): ctest reports it
 *   skipped. A part that cannot run (no CUDA device) prints "skipped: <why>" and the rest runs.
 * - tu_pattern/tu_fill/tu_first_bad: seeded byte patterns; tu_now_ns: the monotonic clock.
 * - tu_sleep_us; tu_gate: a host function (tu_gate_fn) that holds its stream until opened.
 * - Failing host allocators: tu_host_faults.h. Failing backend slots: internal/tu_backend_faults.h.
 */
#ifndef SP_TESTUTIL_H
#define SP_TESTUTIL_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "streampool.h"

#define SP_CHECK_OK(expr)                                                                        \
  do {                                                                                           \
    sp_status sp_check_st_ = (expr);                                                             \
    if (sp_check_st_ != SP_OK)                                                                   \
      fail_msg("%s returned %s (%d): %s", #expr, sp_status_str(sp_check_st_), (int)sp_check_st_, \
               sp_last_error());                                                                 \
  } while (0)

#define SP_CHECK_STATUS(expr, want)                                                        \
  do {                                                                                     \
    sp_status sp_check_st_ = (expr);                                                       \
    if (sp_check_st_ != (want))                                                            \
      fail_msg("%s returned %s (%d), expected %s: %s", #expr, sp_status_str(sp_check_st_), \
               (int)sp_check_st_, sp_status_str(want), sp_last_error());                   \
  } while (0)

/* Thread-safe failure recording for worker threads. */
void tu_fail(const char *file, int line, const char *fmt, ...);
unsigned long tu_failures(void);
void tu_failures_reset(void);
#define TU_EXPECT(cond, ...)                               \
  do {                                                     \
    if (!(cond)) tu_fail(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
#define TU_EXPECT_OK(expr)                                                            \
  do {                                                                                \
    sp_status tu_st_ = (expr);                                                        \
    if (tu_st_ != SP_OK)                                                              \
      tu_fail(__FILE__, __LINE__, "%s returned %s: %s", #expr, sp_status_str(tu_st_), \
              sp_last_error());                                                       \
  } while (0)

enum { TU_SKIP = 77 };

int tu_under_tsan(void);
size_t tu_scale(size_t n);
/* A bounded race's length in ms: the environment variable var if set, else dflt; a third of it
 * under ThreadSanitizer. */
unsigned long tu_race_ms(const char *var, unsigned long dflt);
uint64_t tu_seed(void);

typedef struct tu_rng {
  uint64_t s;
} tu_rng;
static inline uint64_t tu_rng_next(tu_rng *r) {
  uint64_t x = r->s ? r->s : 0x9E3779B97F4A7C15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->s = x;
  return x * 0x2545F4914F6CDD1Dull;
}
static inline uint64_t tu_rng_below(tu_rng *r, uint64_t n) { return n ? tu_rng_next(r) % n : 0; }

/* Byte i of the pattern for seed; tu_fill writes n of them, tu_first_bad gives the index of the
 * first byte of p that differs, or n. Any thread. */
static inline unsigned char tu_pattern(uint64_t seed, size_t i) {
  uint64_t x = (seed + i) * 0x9E3779B97F4A7C15ull;
  return (unsigned char)(x >> 56);
}
static inline void tu_fill(unsigned char *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = tu_pattern(seed, i);
}
static inline size_t tu_first_bad(const unsigned char *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != tu_pattern(seed, i)) return i;
  return n;
}

/* CLOCK_MONOTONIC in nanoseconds. Any thread. */
unsigned long long tu_now_ns(void);

/* Sleeps at least us microseconds. Any thread. */
void tu_sleep_us(unsigned us);

/* A gate: tu_gate_fn (launched as a host function, or run by a thread) returns once the gate is
 * open, and after at most 20 s in any case, so a broken test fails rather than hangs. With
 * timer_ms > 0 a timer thread opens it after that long (for a test that may itself block while
 * the gate is closed). tu_gate_open opens it and joins the timer. entered is 1 once tu_gate_fn
 * started. init/open: the test's thread; tu_gate_fn: any thread. */
typedef struct tu_gate {
  atomic_int open;    /* 1 once opened                        */
  atomic_int entered; /* 1 once tu_gate_fn started            */
  unsigned timer_ms;  /* >0: a timer thread opens it          */
  pthread_t timer;
  int has_timer;
} tu_gate;
void tu_gate_init(tu_gate *g, unsigned timer_ms); /* no timer thread: a tu_fail */
void tu_gate_fn(void *gate);
void tu_gate_open(tu_gate *g);

/* Opens host device 0 (or `index`: several need STREAMPOOL_HOST_DEVICES) with the given
 * streams/mode (0: defaults), failing the test on error. Main thread only (cmocka asserts). */
sp_device *tu_open_host(unsigned streams, sp_stream_mode mode);
sp_device *tu_open_host_index(int index, unsigned streams, sp_stream_mode mode);

/* Backends compiled in and having a device: fills names[] ("host", then "cuda" if it has a
 * device), returns the count. Conformance tests loop over it. */
int tu_backends(const char *names[4]);

#endif /* SP_TESTUTIL_H */
