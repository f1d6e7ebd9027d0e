/* Goal (issue 14 H1): pthread_cancel of a thread blocked in the library never leaves library state
 * locked: after the cancelled thread is gone, the next caller on the same path proceeds. Paths:
 * sp_stream_sync, sp_event_sync, sp_device_sync, sp_model_infer (each blocked behind a held
 * stream) and the exclusive-slot wait of sp_stream_current (all slots owned).
 * Method: per path a victim thread enters the blocking call (then a pthread_testcancel); once it
 * has had 50 ms to block, the main thread cancels it, then lets the stream go (or gives its slot
 * back) from a helper thread, and joins the victim, which must end as PTHREAD_CANCELED (the
 * library defers the cancel to the caller's next cancellation point). A second thread then makes
 * the same call, which must return SP_OK. Every wait is bounded (5 s), so a lock left held by the
 * cancelled thread fails the test instead of hanging it. Not seeded: no random choice is made.
 * Under AddressSanitizer the test turns off ASan's alternate signal stack: at the exit of a
 * cancelled thread ASan tears it down over stack that the forced unwind left poisoned, and
 * reports a stack-buffer-underflow in its own sigaltstack call (a false positive).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "use_sigaltstack=0"; }
#endif

enum { BOUND_MS = 5000 };

static atomic_bool gate_open;

static void gate(void *p) {
  (void)p;
  while (!atomic_load(&gate_open)) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct path {
  const char *name;
  sp_device *dev;
  sp_stream *s;
  sp_event ev;
  sp_model *m;
  sp_status (*call)(struct path *p); /* the blocking call */
  void (*let_go)(struct path *p);    /* unblocks it: opens the gate or gives the slot back */
} path;

typedef struct run {
  path *p;
  atomic_bool entered, done;
  sp_status st;
} run;

static void *victim(void *arg) {
  run *r = arg;
  atomic_store(&r->entered, true);
  r->st = r->p->call(r->p);
  atomic_store(&r->done, true);
  pthread_testcancel(); /* the deferred cancel acts here */
  return NULL;
}

static void *caller(void *arg) {
  run *r = arg;
  r->st = r->p->call(r->p);
  atomic_store(&r->done, true);
  return NULL;
}

static void *let_go_thread(void *arg) {
  path *p = arg;
  p->let_go(p);
  return NULL;
}

/* Joins t within BOUND_MS; 0 on time-out (the thread is left behind, stuck). */
static int join_bounded(pthread_t t, void **ret) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += BOUND_MS / 1000;
  return pthread_timedjoin_np(t, ret, &ts) == 0;
}

static void check_path(path *p) {
  atomic_store(&gate_open, false);
  run v = {.p = p};
  pthread_t tv, tl, tc;
  assert_int_equal(pthread_create(&tv, NULL, victim, &v), 0);
  while (!atomic_load(&v.entered)) sleep_ms(1);
  sleep_ms(50);
  if (atomic_load(&v.done))
    fail_msg("%s: the call did not block (returned %s)", p->name, sp_status_str(v.st));
  assert_int_equal(pthread_cancel(tv), 0);
  sleep_ms(20);
  assert_int_equal(pthread_create(&tl, NULL, let_go_thread, p), 0);
  void *ret = NULL;
  if (!join_bounded(tv, &ret))
    fail_msg("%s: the cancelled thread did not end within %d ms", p->name, BOUND_MS);
  if (!join_bounded(tl, NULL))
    fail_msg(
        "%s: letting the call go deadlocked after the cancel (a library lock was left held "
        "by the cancelled thread)",
        p->name);
  if (ret != PTHREAD_CANCELED) fail_msg("%s: the victim was not cancelled", p->name);
  run c = {.p = p};
  assert_int_equal(pthread_create(&tc, NULL, caller, &c), 0);
  if (!join_bounded(tc, NULL))
    fail_msg(
        "%s: the next caller is still blocked after %d ms (a library lock was left held by "
        "the cancelled thread)",
        p->name, BOUND_MS);
  if (c.st != SP_OK)
    fail_msg("%s: the next caller got %s: %s", p->name, sp_status_str(c.st), sp_last_error());
  printf("%s: cancelled while blocked; the next caller proceeded\n", p->name);
}

static void open_gate(path *p) {
  (void)p;
  atomic_store(&gate_open, true);
}

static sp_status call_stream_sync(path *p) { return sp_stream_sync(p->s); }
static sp_status call_event_sync(path *p) { return sp_event_sync(p->dev, p->ev); }
static sp_status call_device_sync(path *p) { return sp_device_sync(p->dev); }
static sp_status call_infer(path *p) {
  float in[4] = {1, 2, 3, 4}, out[4];
  return sp_model_infer(p->m, in, out, 1);
}

/* The three sync paths and sp_model_infer, each behind a gate on stream 1 (the only pool stream,
 * so every thread's current stream is it). */
static void sync_paths(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  path p = {.dev = dev, .let_go = open_gate};
  SP_CHECK_OK(sp_stream_current(dev, &p.s));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &p.ev));
  const unsigned dims[] = {4, 8, 4};
  SP_CHECK_OK(sp_model_mlp_random(dev, dims, 3, 7, SP_F32, &p.m));
  struct {
    const char *name;
    sp_status (*call)(path *);
  } cases[] = {{"sp_stream_sync", call_stream_sync},
               {"sp_event_sync", call_event_sync},
               {"sp_device_sync", call_device_sync},
               {"sp_model_infer", call_infer}};
  for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
    p.name = cases[k].name;
    p.call = cases[k].call;
    atomic_store(&gate_open, false);
    SP_CHECK_OK(sp_launch_host_func(p.s, gate, NULL));
    SP_CHECK_OK(sp_event_record(p.ev, p.s));
    check_path(&p);
  }
  SP_CHECK_OK(sp_event_release(dev, p.ev));
  sp_model_free(p.m);
  sp_device_close(dev);
}

static sp_status call_slot(path *p) {
  sp_stream *s = NULL;
  return sp_stream_current(p->dev, &s);
}

static sp_device *slot_dev;
static atomic_bool slot_taken, slot_give_back;

/* Owns the only slot until told to give it back. */
static void *slot_owner(void *arg) {
  (void)arg;
  sp_stream *s = NULL;
  TU_EXPECT_OK(sp_stream_current(slot_dev, &s));
  atomic_store(&slot_taken, true);
  while (!atomic_load(&slot_give_back)) sleep_ms(1);
  TU_EXPECT_OK(sp_stream_release_current(slot_dev));
  return NULL;
}

static pthread_t slot_owner_thread;

static void give_slot_back(path *p) {
  (void)p;
  atomic_store(&slot_give_back, true);
  pthread_join(slot_owner_thread, NULL);
}

static void slot_wait_path(void **state) {
  (void)state;
  sp_device_config cfg = {
      .backend = "host", .streams = 2, .stream_mode = SP_STREAMS_EXCLUSIVE, .slot_wait_ms = 30000};
  SP_CHECK_OK(sp_device_open(&cfg, &slot_dev));
  tu_failures_reset();
  assert_int_equal(pthread_create(&slot_owner_thread, NULL, slot_owner, NULL), 0);
  while (!atomic_load(&slot_taken)) sleep_ms(1);
  path p = {.name = "exclusive-slot wait (sp_stream_current)",
            .dev = slot_dev,
            .call = call_slot,
            .let_go = give_slot_back};
  check_path(&p); /* the victim gets the slot, is cancelled, and its exit gives the slot back */
  assert_int_equal(tu_failures(), 0);
  sp_device_close(slot_dev); /* the next caller's thread has exited: its slot is back too */
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(sync_paths),
                                     cmocka_unit_test(slot_wait_path)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
