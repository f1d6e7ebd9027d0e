/* Goal: exclusive mode under churn: no slot leaks, never two live owners of one slot, waits are
 * honoured, exhaustion is reported.
 * Method: 10,000 short-lived threads (a tenth under TSan), up to 12 alive at once, go through a
 * pool of 4 streams (3 slots). Each owner marks its slot owned with an atomic exchange that must
 * find it free, works on its stream, unmarks it, and then gives the slot back one of three ways:
 * sp_stream_release_current, thread exit after sp_stream_current, or thread exit after only an
 * sp_alloc with a NULL stream. Phase A uses slot_wait_ms = 0 (threads retry on
 * SP_ERR_POOL_EXHAUSTED, counted); phase B uses a long wait (exhaustion must not happen).
 * Afterwards 3 threads must get slots with wait 0 and a 4th must be refused. Timed checks: with all
 * slots held a 50 ms waiter fails after >= 45 ms; a 2 s waiter is served when a holder releases.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

enum { STREAMS = 4, SLOTS = STREAMS - 1, ALIVE = 12 };

static atomic_int owner[STREAMS];
static atomic_ulong exhausted, bound, by_release, by_exit, by_alloc;

typedef struct worker_arg {
  sp_device *dev;
  unsigned way; /* 0: release_current, 1: exit, 2: alloc only then exit */
  int expect_no_exhaustion;
} worker_arg;

static sp_status take(sp_device *dev, unsigned way, sp_stream **s) {
  if (way != 2) return sp_stream_current(dev, s);
  void *p = NULL;
  sp_status st = sp_alloc(dev, 256, NULL, &p);
  if (st != SP_OK) return st;
  TU_EXPECT_OK(sp_free(dev, p));
  return sp_stream_current(dev, s); /* bound by sp_alloc: no second acquire */
}

static void noop(void *p) { (void)p; }

static void *worker(void *p) {
  worker_arg *a = p;
  sp_stream *s = NULL;
  sp_status st;
  while ((st = take(a->dev, a->way, &s)) == SP_ERR_POOL_EXHAUSTED) {
    atomic_fetch_add(&exhausted, 1);
    TU_EXPECT(!a->expect_no_exhaustion, "exhausted with a long wait: %s", sp_last_error());
    if (a->expect_no_exhaustion) return NULL;
    sched_yield();
  }
  if (st != SP_OK) {
    tu_fail(__FILE__, __LINE__, "bind: %s: %s", sp_status_str(st), sp_last_error());
    return NULL;
  }
  unsigned idx = sp_stream_index(s);
  TU_EXPECT(idx >= 1 && idx < STREAMS, "slot index %u outside [1, %d)", idx, STREAMS);
  if (idx < 1 || idx >= STREAMS) return NULL;
  int was = atomic_exchange(&owner[idx], 1);
  TU_EXPECT(was == 0, "slot %u had a live owner already", idx);
  atomic_fetch_add(&bound, 1);
  TU_EXPECT_OK(sp_launch_host_func(s, noop, NULL)); /* some work on the owned stream */
  TU_EXPECT_OK(sp_stream_sync(s));
  sp_stream *again = NULL;
  TU_EXPECT_OK(sp_stream_current(a->dev, &again));
  TU_EXPECT(again == s, "current stream changed while owned (%u -> %u)", idx,
            sp_stream_index(again));
  atomic_store(&owner[idx], 0);
  if (a->way == 0) {
    TU_EXPECT_OK(sp_stream_release_current(a->dev));
    atomic_fetch_add(&by_release, 1);
  } else {
    atomic_fetch_add(a->way == 1 ? &by_exit : &by_alloc, 1);
  }
  return NULL;
}

static void churn(sp_device *dev, size_t total, int long_wait) {
  pthread_t th[ALIVE];
  worker_arg args[ALIVE];
  tu_rng r = {tu_seed() + (uint64_t)long_wait};
  for (size_t done = 0; done < total; done += ALIVE) {
    size_t n = total - done < ALIVE ? total - done : ALIVE;
    for (size_t i = 0; i < n; i++) {
      args[i] = (worker_arg){dev, (unsigned)tu_rng_below(&r, 3), long_wait};
      if (pthread_create(&th[i], NULL, worker, &args[i])) fail_msg("pthread_create failed");
    }
    for (size_t i = 0; i < n; i++) pthread_join(th[i], NULL);
  }
}

/* Holders: each takes a slot and keeps it until told to go. */
typedef struct holder {
  sp_device *dev;
  pthread_t t;
  sp_status st;
  unsigned idx;
  atomic_int go, ready;
  unsigned long long waited_ns;
} holder;

static void *hold(void *p) {
  holder *h = p;
  sp_stream *s = NULL;
  unsigned long long t0 = tu_now_ns();
  h->st = sp_stream_current(h->dev, &s);
  h->waited_ns = tu_now_ns() - t0;
  h->idx = s ? sp_stream_index(s) : 0;
  atomic_store(&h->ready, 1);
  while (!atomic_load(&h->go)) tu_sleep_us(200);
  return NULL;
}

static void hold_start(holder *h, sp_device *dev) {
  memset(h, 0, sizeof(*h));
  h->dev = dev;
  pthread_create(&h->t, NULL, hold, h);
  while (!atomic_load(&h->ready)) sched_yield();
}

static void hold_stop(holder *h) {
  atomic_store(&h->go, 1);
  pthread_join(h->t, NULL);
}

static sp_device *open_excl(unsigned wait_ms) {
  sp_device_config cfg = {.backend = "host",
                          .streams = STREAMS,
                          .stream_mode = SP_STREAMS_EXCLUSIVE,
                          .slot_wait_ms = wait_ms};
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  return dev;
}

/* After churn: exactly SLOTS slots are free. Only valid for a wait-0 device. */
static void check_no_leak(sp_device *dev) {
  holder h[SLOTS + 1];
  for (int i = 0; i < SLOTS; i++) {
    hold_start(&h[i], dev);
    if (h[i].st != SP_OK)
      fail_msg("slot %d of %d not free after churn: %s", i + 1, SLOTS, sp_status_str(h[i].st));
  }
  hold_start(&h[SLOTS], dev);
  if (h[SLOTS].st != SP_ERR_POOL_EXHAUSTED)
    fail_msg("a 4th holder got %s, expected SP_ERR_POOL_EXHAUSTED", sp_status_str(h[SLOTS].st));
  for (int i = 0; i <= SLOTS; i++) hold_stop(&h[i]);
}

static void churn_wait0(void **state) {
  (void)state;
  sp_device *dev = open_excl(0);
  size_t total = tu_scale(5000);
  churn(dev, total, 0);
  assert_int_equal(tu_failures(), 0);
  printf(
      "phase A (wait 0): %zu threads, %lu bound (%lu released, %lu by exit, %lu via sp_alloc),"
      " %lu exhaustion reports\n",
      total, atomic_load(&bound), atomic_load(&by_release), atomic_load(&by_exit),
      atomic_load(&by_alloc), atomic_load(&exhausted));
  if (atomic_load(&bound) != total) fail_msg("bound %lu of %zu", atomic_load(&bound), total);
  /* Overlap depends on scheduling (rare under TSan); check_no_leak's 4th holder checks the
   * exhaustion report deterministically. */
  check_no_leak(dev);
  sp_device_close(dev);
}

static void churn_long_wait(void **state) {
  (void)state;
  sp_device *dev = open_excl(20000);
  atomic_store(&bound, 0);
  size_t total = tu_scale(5000);
  churn(dev, total, 1);
  assert_int_equal(tu_failures(), 0);
  printf("phase B (wait 20 s): %zu threads, %lu bound\n", total, atomic_load(&bound));
  if (atomic_load(&bound) != total) fail_msg("bound %lu of %zu", atomic_load(&bound), total);
  /* All 3 free again: three holders each get one without waiting long. */
  holder h[SLOTS];
  for (int i = 0; i < SLOTS; i++) {
    hold_start(&h[i], dev);
    SP_CHECK_OK(h[i].st);
    if (h[i].waited_ns > 1000000000ull) fail_msg("holder %d waited %llu ns", i, h[i].waited_ns);
  }
  for (int i = 0; i < SLOTS; i++) hold_stop(&h[i]);
  sp_device_close(dev);
}

static void waits_honoured(void **state) {
  (void)state;
  sp_device *dev = open_excl(50);
  holder h[SLOTS], w;
  for (int i = 0; i < SLOTS; i++) {
    hold_start(&h[i], dev);
    SP_CHECK_OK(h[i].st);
  }
  hold_start(&w, dev);
  SP_CHECK_STATUS(w.st, SP_ERR_POOL_EXHAUSTED);
  printf("50 ms waiter refused after %.1f ms\n", (double)w.waited_ns / 1e6);
  if (w.waited_ns < 45000000ull)
    fail_msg("refused after %llu ns, before the 50 ms wait", w.waited_ns);
  if (w.waited_ns > 5000000000ull) fail_msg("refused after %llu ns, far past 50 ms", w.waited_ns);
  hold_stop(&w);
  for (int i = 0; i < SLOTS; i++) hold_stop(&h[i]);
  sp_device_close(dev);

  dev = open_excl(2000);
  for (int i = 0; i < SLOTS; i++) hold_start(&h[i], dev);
  memset(&w, 0, sizeof(w));
  w.dev = dev;
  pthread_create(&w.t, NULL, hold, &w);
  tu_sleep_us(50000);
  hold_stop(&h[0]); /* exits: its slot goes to the waiter */
  while (!atomic_load(&w.ready)) sched_yield();
  SP_CHECK_OK(w.st);
  printf("2 s waiter served after %.1f ms (holder left at ~50 ms)\n", (double)w.waited_ns / 1e6);
  if (w.idx != h[0].idx) fail_msg("waiter got slot %u, the freed one was %u", w.idx, h[0].idx);
  if (w.waited_ns < 40000000ull || w.waited_ns > 1900000000ull)
    fail_msg("waiter served after %llu ns", w.waited_ns);
  hold_stop(&w);
  for (int i = 1; i < SLOTS; i++) hold_stop(&h[i]);
  sp_device_close(dev);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(churn_wait0),
      cmocka_unit_test(churn_long_wait),
      cmocka_unit_test(waits_honoured),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
