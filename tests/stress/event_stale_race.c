/* Goal: a stale copy of an event handle never acts on the event its slot holds next (issue 14
 * C1): a call through a copy that goes stale while the call runs acts on the old event (it began
 * before the release) or returns SP_ERR_INVALID_HANDLE, never on the recycled one.
 * Method: the owner thread keeps stream B busy (a host function held until the end) and loops:
 * acquire an event (usually the slot it just released, from its thread cache), record it on B,
 * check it is NOT complete (only B's held work is behind it), publish the handle, pause a seeded
 * few instructions, release it. A second thread loops over the published handle: sp_event_record
 * on the idle default stream (7 calls in 8) and sp_event_query (1 in 8). A record through a copy
 * of the previous handle that lands on the new event makes it complete while B is still held,
 * which the owner's check sees (before the new handle is published, so no legitimate call can
 * have touched it). Bounded at SP_STALE_RACE_MS (default 1500 ms, a third under TSan); fails at
 * the first wrong action. Today's check-then-act protocol fails this within milliseconds.
 *
 * The same for queries, which pin nothing (they re-check the handle after reading): the owner
 * records each event on idle stream A when its generation is odd and on held stream B when it is
 * even, so consecutive incarnations of its slot answer a query oppositely (OK, NOT_READY); the
 * second thread only queries the published handle, and an answer that is not the handle's own
 * parity's came from another incarnation. Without the re-check it fails within milliseconds
 * (checked by removing it).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "testutil.h"

static atomic_bool stop, release_b;
static _Atomic uint64_t published;
static atomic_ulong owner_rounds, stale_ok, stale_invalid, wrong_complete;

typedef struct ctx {
  sp_device *dev;
  sp_stream *a, *b; /* a: idle (the default stream); b: held until the end */
  bool parity;      /* the query test: odd generations are recorded on a   */
} ctx;

static void hold_b(void *p) {
  (void)p;
  while (!atomic_load(&release_b)) {
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
  }
}

/* The owner: records each event on B (held: it must stay NOT_READY, so a stale record that
 * lands on it shows) or, in the query test (parity), on idle A when its generation is odd, so
 * consecutive incarnations answer a query oppositely; publishes it, pauses, releases it. */
static void *owner(void *p) {
  ctx *x = p;
  tu_rng r = {tu_seed() ^ (x->parity ? 0xC5 : 0xC1)};
  while (!atomic_load(&stop)) {
    sp_event ev;
    sp_status st = sp_event_acquire(x->dev, 0, &ev);
    if (st != SP_OK) {
      tu_fail(__FILE__, __LINE__, "acquire: %s: %s", sp_status_str(st), sp_last_error());
      break;
    }
    bool on_a = x->parity && ((ev.id >> 32) & 1);
    TU_EXPECT_OK(sp_event_record(ev, on_a ? x->a : x->b));
    st = sp_event_query(x->dev, ev);
    if (st != (on_a ? SP_OK : SP_ERR_NOT_READY)) {
      atomic_fetch_add(&wrong_complete, 1);
      tu_fail(__FILE__, __LINE__, "event 0x%llx recorded on stream %s reports %s%s",
              (unsigned long long)ev.id, on_a ? "A (idle)" : "B (held)", sp_status_str(st),
              on_a ? "" : ": a stale handle acted on it");
      atomic_store(&stop, true);
    }
    atomic_store(&published, ev.id);
    for (unsigned k = (unsigned)tu_rng_below(&r, 8); k; k--)
      atomic_signal_fence(memory_order_seq_cst);
    TU_EXPECT_OK(sp_event_release(x->dev, ev));
    atomic_fetch_add(&owner_rounds, 1);
  }
  return NULL;
}

static void *query_user(void *p) {
  ctx *x = p;
  while (!atomic_load(&stop)) {
    sp_event ev = {atomic_load(&published)};
    if (!ev.id) continue;
    sp_status st = sp_event_query(x->dev, ev), own = (ev.id >> 32) & 1 ? SP_OK : SP_ERR_NOT_READY;
    if (st == own) {
      atomic_fetch_add_explicit(&stale_ok, 1, memory_order_relaxed);
    } else if (st == SP_ERR_INVALID_HANDLE) {
      atomic_fetch_add_explicit(&stale_invalid, 1, memory_order_relaxed);
    } else {
      atomic_fetch_add(&wrong_complete, 1);
      tu_fail(__FILE__, __LINE__, "query of event 0x%llx: %s, its own incarnation answers %s",
              (unsigned long long)ev.id, sp_status_str(st), sp_status_str(own));
      atomic_store(&stop, true);
    }
  }
  return NULL;
}

static void *user(void *p) {
  ctx *x = p;
  for (unsigned i = 0; !atomic_load(&stop); i++) {
    sp_event ev = {atomic_load(&published)};
    if (!ev.id) continue;
    sp_status st = (i & 7) ? sp_event_record(ev, x->a) : sp_event_query(x->dev, ev);
    if (st == SP_ERR_NOT_READY) st = SP_OK;
    if (st == SP_OK) atomic_fetch_add_explicit(&stale_ok, 1, memory_order_relaxed);
    else if (st == SP_ERR_INVALID_HANDLE)
      atomic_fetch_add_explicit(&stale_invalid, 1, memory_order_relaxed);
    else {
      tu_fail(__FILE__, __LINE__, "user: %s: %s", sp_status_str(st), sp_last_error());
      break;
    }
  }
  return NULL;
}

static unsigned long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000ull + (unsigned long long)ts.tv_nsec / 1000000ull;
}

/* Runs the owner and user_fn against each other for SP_STALE_RACE_MS; B is held throughout. */
static void race(bool parity, void *(*user_fn)(void *), const char *what) {
  atomic_store(&stop, false);
  atomic_store(&release_b, false);
  atomic_store(&published, 0);
  atomic_store(&owner_rounds, 0);
  atomic_store(&stale_ok, 0);
  atomic_store(&stale_invalid, 0);
  atomic_store(&wrong_complete, 0);
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  ctx x = {dev, sp_stream_default(dev), NULL, parity};
  SP_CHECK_OK(sp_stream_current(dev, &x.b));
  SP_CHECK_OK(sp_launch_host_func(x.b, hold_b, NULL));
  pthread_t to, tu;
  assert_int_equal(pthread_create(&to, NULL, owner, &x), 0);
  assert_int_equal(pthread_create(&tu, NULL, user_fn, &x), 0);
  unsigned long long end = now_ms() + tu_race_ms("SP_STALE_RACE_MS", 1500);
  while (!atomic_load(&stop) && now_ms() < end) {
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
  }
  atomic_store(&stop, true);
  pthread_join(to, NULL);
  pthread_join(tu, NULL);
  atomic_store(&release_b, true);
  SP_CHECK_OK(sp_stream_sync(x.b));
  printf(
      "%s: owner rounds %lu, stale-copy calls: %lu OK (before the release), %lu invalid "
      "handle\n",
      what, atomic_load(&owner_rounds), atomic_load(&stale_ok), atomic_load(&stale_invalid));
  if (atomic_load(&wrong_complete))
    fail_msg("%s: %lu calls acted on or answered for another incarnation (expected 0)", what,
             atomic_load(&wrong_complete));
  assert_int_equal(tu_failures(), 0);
  sp_device_close(dev);
}

static void stale_handles_never_act(void **state) {
  (void)state;
  race(false, user, "records and queries");
}

static void stale_queries_never_answer_for_another(void **state) {
  (void)state;
  race(true, query_user, "queries");
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {cmocka_unit_test(stale_handles_never_act),
                                     cmocka_unit_test(stale_queries_never_answer_for_another)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
