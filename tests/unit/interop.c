/* Goal: the interop calls behave as the header says: sp_stream_acquire gives an extra stream
 * besides the current one (exclusive mode: a slot of its own, counted against the pool, refused
 * when the pool is empty, a double release rejected; round-robin: the next shared stream);
 * sp_stream_native / sp_stream_wait_native say "unsupported" on the host backend with the backend
 * named (and on CUDA give the cudaStream_t, when a device is present); pinned host buffers are
 * usable by copies, freed once, foreign pointers refused, and buffers left live are freed by
 * sp_device_close (ASan would report a leak otherwise); under contention from many threads no
 * stream is ever held by two acquirers at once.
 * Method: exclusive host device of 4 streams (3 slots): bind the current stream, acquire two,
 * check a third acquire fails with SP_ERR_POOL_EXHAUSTED, release, acquire again; round-trip bytes
 * through a pinned buffer and device memory on an acquired stream; pass NULL, foreign and stale
 * arguments and compare statuses and messages. Contention: 8 threads acquire and release 4 slots
 * (waiting for a free one) in a seeded loop, each marking the stream it holds in a per-index
 * atomic owner word; a second owner is a failure printed with both ids.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "testutil.h"

static void acquire_exclusive(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_EXCLUSIVE);
  sp_stream *cur = NULL, *a = NULL, *b = NULL, *c = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &cur));
  SP_CHECK_OK(sp_stream_acquire(dev, &a));
  SP_CHECK_OK(sp_stream_acquire(dev, &b));
  unsigned ia = sp_stream_index(a), ib = sp_stream_index(b), ic = sp_stream_index(cur);
  if (ia == ib || ia == ic || ib == ic || !ia || !ib)
    fail_msg("streams not distinct: current %u, acquired %u and %u", ic, ia, ib);
  SP_CHECK_STATUS(sp_stream_acquire(dev, &c), SP_ERR_POOL_EXHAUSTED);
  assert_null(c);
  assert_non_null(strstr(sp_last_error(), "sp_stream_acquire"));
  /* The current stream is unaffected by the acquired ones. */
  sp_stream *again = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &again));
  assert_ptr_equal(again, cur);
  SP_CHECK_OK(sp_stream_release(dev, a));
  SP_CHECK_STATUS(sp_stream_release(dev, a), SP_ERR_INVALID_HANDLE);
  assert_non_null(strstr(sp_last_error(), "not held"));
  SP_CHECK_STATUS(sp_stream_release(dev, cur), SP_ERR_INVALID_HANDLE); /* bound, not acquired */
  SP_CHECK_OK(sp_stream_acquire(dev, &c));
  assert_int_equal(sp_stream_index(c), ia);
  SP_CHECK_OK(sp_stream_release(dev, b));
  SP_CHECK_OK(sp_stream_release(dev, c));
  sp_device_close(dev);
}

static void acquire_round_robin_and_bad(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_device *other = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = NULL;
  for (unsigned n = 0; n < 6; n++) {
    SP_CHECK_OK(sp_stream_acquire(dev, &s));
    assert_int_equal(sp_stream_index(s), 1 + n % 3);
    SP_CHECK_OK(sp_stream_release(dev, s));
  }
  SP_CHECK_STATUS(sp_stream_acquire(NULL, &s), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_acquire(dev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_release(dev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_release(dev, sp_stream_default(dev)), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "default stream"));
  SP_CHECK_OK(sp_stream_acquire(other, &s));
  SP_CHECK_STATUS(sp_stream_release(dev, s), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "another device"));
  sp_device_close(other);
  sp_device_close(dev);
}

static void native_handles(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = NULL;
  void *h = (void *)0x1;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  SP_CHECK_STATUS(sp_stream_native(s, &h), SP_ERR_UNSUPPORTED);
  assert_ptr_equal(h, (void *)0x1); /* out written only on success */
  assert_non_null(strstr(sp_last_error(), "'host'"));
  SP_CHECK_STATUS(sp_stream_wait_native(s, NULL), SP_ERR_UNSUPPORTED);
  SP_CHECK_STATUS(sp_stream_native(NULL, &h), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_native(s, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_device_close(dev);

  int n = 0;
  if (!sp_backend_compiled("cuda") || sp_device_count("cuda", &n) != SP_OK || n == 0) {
    printf("skipped: native handles on CUDA (no CUDA device)\n");
    return;
  }
  sp_device_config cfg = {.backend = "cuda"};
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  sp_stream *a = NULL, *b = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &a));
  SP_CHECK_OK(sp_stream_acquire(dev, &b));
  void *ha = NULL, *hb = NULL;
  SP_CHECK_OK(sp_stream_native(a, &ha));
  SP_CHECK_OK(sp_stream_native(b, &hb));
  if (!ha || !hb || ha == hb) fail_msg("native handles %p and %p", ha, hb);
  SP_CHECK_OK(sp_stream_wait_native(a, hb));
  SP_CHECK_OK(sp_stream_wait_native(a, NULL)); /* the legacy default stream */
  SP_CHECK_OK(sp_stream_sync(a));
  SP_CHECK_OK(sp_stream_release(dev, b));
  sp_device_close(dev);
}

static void pinned_buffers(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_EXCLUSIVE);
  sp_device *other = tu_open_host(4, SP_STREAMS_EXCLUSIVE);
  enum { N = 1 << 16 };
  unsigned char *in = NULL, *out = NULL;
  void *d = NULL;
  SP_CHECK_OK(sp_host_alloc_pinned(dev, N, (void **)&in));
  SP_CHECK_OK(sp_host_alloc_pinned(dev, N, (void **)&out));
  for (size_t i = 0; i < N; i++) in[i] = (unsigned char)(i * 7u + 3u);
  memset(out, 0, N);
  sp_stream *s = NULL;
  SP_CHECK_OK(sp_stream_acquire(dev, &s));
  SP_CHECK_OK(sp_alloc(dev, N, s, &d));
  SP_CHECK_OK(sp_memcpy_async(s, d, in, N));
  SP_CHECK_OK(sp_memcpy_async(s, out, d, N));
  SP_CHECK_OK(sp_stream_sync(s));
  for (size_t i = 0; i < N; i++)
    if (out[i] != in[i]) fail_msg("byte %zu: got %u, expected %u", i, out[i], in[i]);
  SP_CHECK_OK(sp_free(dev, d));
  SP_CHECK_OK(sp_stream_release(dev, s));

  SP_CHECK_STATUS(sp_host_free_pinned(other, in), SP_ERR_INVALID_HANDLE);
  assert_non_null(strstr(sp_last_error(), "another device"));
  SP_CHECK_OK(sp_host_free_pinned(dev, in));
  SP_CHECK_STATUS(sp_host_free_pinned(dev, in), SP_ERR_INVALID_HANDLE);
  assert_non_null(strstr(sp_last_error(), "freed already"));
  int local = 0;
  SP_CHECK_STATUS(sp_host_free_pinned(dev, &local), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_host_free_pinned(dev, NULL));
  void *p = (void *)0x1;
  SP_CHECK_STATUS(sp_host_alloc_pinned(dev, 0, &p), SP_ERR_INVALID_ARGUMENT);
  assert_ptr_equal(p, (void *)0x1);
  SP_CHECK_STATUS(sp_host_alloc_pinned(dev, 8, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_host_alloc_pinned(NULL, 8, &p), SP_ERR_INVALID_ARGUMENT);
  /* out is left live: sp_device_close frees it (a leak under ASan otherwise). */
  void *kept = NULL;
  SP_CHECK_OK(sp_host_alloc_pinned(other, 100, &kept));
  sp_device_close(dev);
  SP_CHECK_OK(sp_host_free_pinned(other, kept));
  sp_device_close(other);
}

typedef struct churn_arg {
  sp_device *dev;
  unsigned id;
} churn_arg;

static _Atomic unsigned churn_owner[8];

static void *churn(void *p) {
  churn_arg *a = p;
  tu_rng rng = {tu_seed() + a->id};
  size_t rounds = tu_scale(2000);
  for (size_t r = 0; r < rounds; r++) {
    sp_stream *s = NULL;
    sp_status st = sp_stream_acquire(a->dev, &s);
    if (st != SP_OK) {
      tu_fail(__FILE__, __LINE__, "thread %u round %zu: acquire: %s", a->id, r, sp_last_error());
      return NULL;
    }
    unsigned i = sp_stream_index(s), none = 0;
    if (!atomic_compare_exchange_strong(&churn_owner[i], &none, a->id + 1))
      tu_fail(__FILE__, __LINE__, "stream %u held by thread %u and thread %u", i, none - 1, a->id);
    if (tu_rng_below(&rng, 4) == 0) sched_yield();
    atomic_store(&churn_owner[i], 0);
    TU_EXPECT_OK(sp_stream_release(a->dev, s));
  }
  return NULL;
}

static void acquire_contended(void **state) {
  (void)state;
  sp_device_config cfg = {
      .backend = "host", .streams = 5, .stream_mode = SP_STREAMS_EXCLUSIVE, .slot_wait_ms = 10000};
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  enum { T = 8 };
  pthread_t th[T];
  churn_arg args[T];
  tu_failures_reset();
  for (unsigned t = 0; t < T; t++) {
    args[t] = (churn_arg){dev, t};
    assert_int_equal(pthread_create(&th[t], NULL, churn, &args[t]), 0);
  }
  for (unsigned t = 0; t < T; t++) pthread_join(th[t], NULL);
  assert_int_equal(tu_failures(), 0);
  sp_stream *all[4];
  for (unsigned k = 0; k < 4; k++) SP_CHECK_OK(sp_stream_acquire(dev, &all[k])); /* all back */
  for (unsigned k = 0; k < 4; k++) SP_CHECK_OK(sp_stream_release(dev, all[k]));
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(acquire_exclusive), cmocka_unit_test(acquire_round_robin_and_bad),
      cmocka_unit_test(native_handles),    cmocka_unit_test(pinned_buffers),
      cmocka_unit_test(acquire_contended),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
