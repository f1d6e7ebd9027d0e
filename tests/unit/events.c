/* Goal: events are pooled, generation-checked handles: a released, stale, never-acquired or
 * foreign handle gets SP_ERR_INVALID_HANDLE from every call and never acts on the recycled event;
 * recording remembers the stream; query/sync/wait/elapsed follow the contract. With the per-thread
 * caches of free events: the same holds across threads, events cached by a thread that exits go
 * back to the pool, and a thread's cache survives devices closing under it and more devices than
 * it has entries.
 * Method: acquire/release/reacquire the same slot and use the old handle everywhere; gate a stream
 * behind a host function blocked on a flag to observe NOT_READY; time a host function that sleeps;
 * acquire enough events to grow the pool past several chunks and check all ids are distinct.
 * Threads churn events (acquire, record, query, hand live events to a neighbour which releases
 * them) while checking that every released handle, whoever released it, stays invalid for every
 * call. Capacity: fill a device's pool until acquire fails, release everything, let threads churn
 * and exit, then fill again: the same count must be reached. One thread cycles through twelve
 * devices (more than its cache's entries) while closing half of them and opening others.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

static void basic_lifecycle(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event ev = {0};
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev));
  assert_true(ev.id != 0);
  /* Never recorded: complete, no stream. */
  SP_CHECK_OK(sp_event_query(dev, ev));
  SP_CHECK_OK(sp_event_sync(dev, ev));
  sp_stream *s = NULL, *rec = (sp_stream *)(uintptr_t)0x99;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  SP_CHECK_OK(sp_stream_wait_event(s, ev));
  SP_CHECK_STATUS(sp_event_stream(dev, ev, &rec), SP_ERR_INVALID_ARGUMENT);
  assert_ptr_equal(rec, (sp_stream *)(uintptr_t)0x99);
  SP_CHECK_OK(sp_event_record(ev, s));
  SP_CHECK_OK(sp_event_sync(dev, ev));
  SP_CHECK_OK(sp_event_query(dev, ev));
  SP_CHECK_OK(sp_event_stream(dev, ev, &rec));
  assert_ptr_equal(rec, s);
  SP_CHECK_OK(sp_event_record(ev, sp_stream_default(dev))); /* re-record: new stream */
  SP_CHECK_OK(sp_event_stream(dev, ev, &rec));
  assert_ptr_equal(rec, sp_stream_default(dev));
  SP_CHECK_OK(sp_event_release(dev, ev));
  sp_device_close(dev);
}

static void bad_arguments(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event ev = {77};
  SP_CHECK_STATUS(sp_event_acquire(dev, 0x10, &ev), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(ev.id, 77);
  SP_CHECK_STATUS(sp_event_acquire(dev, 0, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_event zero = {0}, junk = {0x123456789abcdefull}, big = {(1ull << 32) | 0xfffffff0u};
  sp_event handles[] = {zero, junk, big};
  for (size_t i = 0; i < 3; i++) {
    SP_CHECK_STATUS(sp_event_release(dev, handles[i]), SP_ERR_INVALID_HANDLE);
    SP_CHECK_STATUS(sp_event_query(dev, handles[i]), SP_ERR_INVALID_HANDLE);
    SP_CHECK_STATUS(sp_event_record(handles[i], sp_stream_default(dev)), SP_ERR_INVALID_HANDLE);
  }
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev));
  SP_CHECK_STATUS(sp_event_record(ev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_wait_event(NULL, ev), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_query(NULL, ev), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_stream(dev, ev, NULL), SP_ERR_INVALID_ARGUMENT);
  float ms = -1;
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, ev, ev, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, ev, ev, &ms), SP_ERR_INVALID_ARGUMENT); /* no TIMING */
  assert_true(ms == -1);
  SP_CHECK_OK(sp_event_release(dev, ev));
  sp_device_close(dev);
}

static void stale_handles(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = sp_stream_default(dev);
  sp_event old = {0}, fresh = {0};
  SP_CHECK_OK(sp_event_acquire(dev, 0, &old));
  SP_CHECK_OK(sp_event_record(old, s));
  SP_CHECK_OK(sp_event_release(dev, old));
  SP_CHECK_STATUS(sp_event_release(dev, old), SP_ERR_INVALID_HANDLE); /* double release */
  SP_CHECK_OK(sp_event_acquire(dev, 0, &fresh));
  if ((uint32_t)fresh.id != (uint32_t)old.id)
    fail_msg("expected the freed slot back: old 0x%llx, new 0x%llx", (unsigned long long)old.id,
             (unsigned long long)fresh.id);
  assert_true(fresh.id != old.id);
  sp_stream *rec = NULL;
  float ms = 0;
  SP_CHECK_STATUS(sp_event_release(dev, old), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_record(old, s), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_query(dev, old), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_sync(dev, old), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_stream_wait_event(s, old), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_stream(dev, old, &rec), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, old, fresh, &ms), SP_ERR_INVALID_HANDLE);
  /* The stale calls did not act on the recycled event: it is still never-recorded. */
  SP_CHECK_STATUS(sp_event_stream(dev, fresh, &rec), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(sp_event_release(dev, fresh));
  SP_CHECK_STATUS(sp_event_release(dev, fresh), SP_ERR_INVALID_HANDLE);
  sp_device_close(dev);
}

static void foreign_handles(void **state) {
  (void)state;
  sp_device *a = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_device *b = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event ea = {0}, eb = {0};
  SP_CHECK_OK(sp_event_acquire(a, 0, &ea));
  SP_CHECK_OK(sp_event_acquire(b, 0, &eb));
  SP_CHECK_STATUS(sp_event_query(b, ea), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_record(ea, sp_stream_default(b)), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_stream_wait_event(sp_stream_default(b), ea), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_release(b, ea), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_event_release(a, ea));
  SP_CHECK_OK(sp_event_release(b, eb));
  sp_device_close(b);
  sp_device_close(a);
}

/* ---- pending work ---- */

static void sleep_20ms(void *arg) {
  (void)arg;
  tu_sleep_us(20000);
}

static void not_ready_then_done(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  sp_event ev = {0};
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev));
  tu_gate g;
  tu_gate_init(&g, 0);
  SP_CHECK_OK(sp_launch_host_func(s, tu_gate_fn, &g));
  SP_CHECK_OK(sp_event_record(ev, s));
  SP_CHECK_STATUS(sp_event_query(dev, ev), SP_ERR_NOT_READY);
  SP_CHECK_STATUS(sp_stream_query(s), SP_ERR_NOT_READY);
  /* Another stream waiting on ev is held back too. */
  sp_stream *d = sp_stream_default(dev);
  atomic_int flag = 0;
  SP_CHECK_OK(sp_stream_wait_event(d, ev));
  sp_event ev2 = {0};
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev2));
  SP_CHECK_OK(sp_event_record(ev2, d));
  SP_CHECK_STATUS(sp_event_query(dev, ev2), SP_ERR_NOT_READY);
  /* Releasing an event with work pending is allowed. */
  SP_CHECK_OK(sp_event_release(dev, ev2));
  tu_gate_open(&g);
  SP_CHECK_OK(sp_event_sync(dev, ev));
  SP_CHECK_OK(sp_event_query(dev, ev));
  SP_CHECK_OK(sp_device_sync(dev));
  SP_CHECK_OK(sp_stream_query(d));
  (void)flag;
  SP_CHECK_OK(sp_event_release(dev, ev));
  sp_device_close(dev);
}

static void timing(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  sp_event a = {0}, b = {0}, plain = {0}, unrec = {0};
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &a));
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &b));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &plain));
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &unrec));
  SP_CHECK_OK(sp_event_record(a, s));
  SP_CHECK_OK(sp_event_record(plain, s));
  SP_CHECK_OK(sp_launch_host_func(s, sleep_20ms, NULL));
  SP_CHECK_OK(sp_event_record(b, s));
  float ms = -1;
  sp_status st = sp_event_elapsed_ms(dev, a, b, &ms);
  if (st != SP_OK && st != SP_ERR_NOT_READY) fail_msg("elapsed before sync: %s", sp_status_str(st));
  SP_CHECK_OK(sp_event_sync(dev, b));
  SP_CHECK_OK(sp_event_elapsed_ms(dev, a, b, &ms));
  if (ms < 15.0f || ms > 5000.0f) fail_msg("elapsed %.3f ms around a 20 ms sleep", (double)ms);
  printf("elapsed around a 20 ms host function: %.3f ms\n", (double)ms);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, plain, b, &ms), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, a, unrec, &ms), SP_ERR_INVALID_ARGUMENT);
  sp_event all[] = {a, b, plain, unrec};
  for (int i = 0; i < 4; i++) SP_CHECK_OK(sp_event_release(dev, all[i]));
  sp_device_close(dev);
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

static void pool_grows(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  enum { N = 1500 };
  uint64_t *ids = malloc(N * sizeof(*ids));
  sp_event *evs = malloc(N * sizeof(*evs));
  for (int i = 0; i < N; i++) {
    SP_CHECK_OK(sp_event_acquire(dev, (unsigned)(i & 1) * SP_EVENT_TIMING, &evs[i]));
    ids[i] = evs[i].id;
  }
  qsort(ids, N, sizeof(*ids), cmp_u64);
  for (int i = 1; i < N; i++)
    if (ids[i] == ids[i - 1]) fail_msg("id 0x%llx handed out twice", (unsigned long long)ids[i]);
  for (int i = 0; i < N; i++) SP_CHECK_OK(sp_event_release(dev, evs[i]));
  for (int i = 0; i < N; i++) SP_CHECK_STATUS(sp_event_query(dev, evs[i]), SP_ERR_INVALID_HANDLE);
  /* Unreleased events are reclaimed by close (checked by ASan's leak check). */
  for (int i = 0; i < 10; i++) SP_CHECK_OK(sp_event_acquire(dev, 0, &evs[i]));
  free(ids);
  free(evs);
  sp_device_close(dev);
}

/* ---- across threads (per-thread caches) ---- */

enum { CHURN_THREADS = 4, STALE_RING = 64 };

typedef struct churn_shared {
  sp_device *dev;
  unsigned long iters;
  _Atomic uint64_t mailbox[CHURN_THREADS]; /* a live event handed to thread i, or 0 */
  _Atomic uint64_t stale[STALE_RING];      /* released handles, any thread's        */
  atomic_uint stale_next;
} churn_shared;

typedef struct churn_arg {
  churn_shared *sh;
  unsigned me;
  uint64_t seed;
} churn_arg;

/* A released handle must fail everywhere, whichever thread released it and wherever its slot is. */
static void churn_check_stale(churn_shared *sh, sp_stream *s, sp_event ev) {
  sp_status q = sp_event_query(sh->dev, ev), r = sp_event_release(sh->dev, ev);
  sp_status rec = sp_event_record(ev, s), w = sp_stream_wait_event(s, ev);
  TU_EXPECT(q == SP_ERR_INVALID_HANDLE && r == SP_ERR_INVALID_HANDLE &&
                rec == SP_ERR_INVALID_HANDLE && w == SP_ERR_INVALID_HANDLE,
            "released event 0x%llx: query %s, release %s, record %s, wait %s; expected "
            "SP_ERR_INVALID_HANDLE from each",
            (unsigned long long)ev.id, sp_status_str(q), sp_status_str(r), sp_status_str(rec),
            sp_status_str(w));
}

static void churn_released(churn_shared *sh, sp_stream *s, sp_event ev) {
  churn_check_stale(sh, s, ev);
  unsigned k = atomic_fetch_add(&sh->stale_next, 1) % STALE_RING;
  atomic_store(&sh->stale[k], ev.id);
}

/* Uses a live event handed over by another thread, then releases it. */
static void churn_adopt(churn_shared *sh, sp_stream *s, sp_event ev) {
  sp_status q = sp_event_query(sh->dev, ev);
  TU_EXPECT(q == SP_OK || q == SP_ERR_NOT_READY, "handed-over event 0x%llx: query %s",
            (unsigned long long)ev.id, sp_status_str(q));
  TU_EXPECT_OK(sp_event_record(ev, s));
  TU_EXPECT_OK(sp_event_release(sh->dev, ev));
  churn_released(sh, s, ev);
}

static void *churn_thread(void *p) {
  churn_arg *a = p;
  churn_shared *sh = a->sh;
  tu_rng rng = {a->seed};
  sp_stream *s = NULL;
  TU_EXPECT_OK(sp_stream_current(sh->dev, &s));
  if (!s) return NULL;
  for (unsigned long it = 0; it < sh->iters; it++) {
    sp_event ev = {0};
    unsigned flags = tu_rng_below(&rng, 4) == 0 ? SP_EVENT_TIMING : 0u;
    sp_status st = sp_event_acquire(sh->dev, flags, &ev);
    TU_EXPECT(st == SP_OK, "acquire: %s: %s", sp_status_str(st), sp_last_error());
    if (st != SP_OK) break;
    TU_EXPECT_OK(sp_event_record(ev, s));
    st = sp_event_query(sh->dev, ev);
    TU_EXPECT(st == SP_OK || st == SP_ERR_NOT_READY, "query of a live event: %s",
              sp_status_str(st));
    uint64_t none = 0;
    if (tu_rng_below(&rng, 2) &&
        atomic_compare_exchange_strong(&sh->mailbox[(a->me + 1) % CHURN_THREADS], &none, ev.id)) {
      /* handed over: the neighbour releases it */
    } else {
      TU_EXPECT_OK(sp_event_release(sh->dev, ev));
      churn_released(sh, s, ev);
    }
    uint64_t in = atomic_exchange(&sh->mailbox[a->me], 0);
    if (in) churn_adopt(sh, s, (sp_event){in});
    uint64_t old = atomic_load(&sh->stale[tu_rng_below(&rng, STALE_RING)]);
    if (old) churn_check_stale(sh, s, (sp_event){old});
  }
  TU_EXPECT_OK(sp_stream_sync(s));
  return NULL;
}

static void churn_across_threads(void **state) {
  (void)state;
  static churn_shared sh;
  memset(&sh, 0, sizeof(sh));
  sh.dev = tu_open_host(8, SP_STREAMS_ROUND_ROBIN);
  sh.iters = tu_scale(20000);
  pthread_t th[CHURN_THREADS];
  churn_arg args[CHURN_THREADS];
  tu_failures_reset();
  for (unsigned i = 0; i < CHURN_THREADS; i++) {
    args[i] = (churn_arg){&sh, i, tu_seed() + i};
    assert_int_equal(pthread_create(&th[i], NULL, churn_thread, &args[i]), 0);
  }
  for (unsigned i = 0; i < CHURN_THREADS; i++) pthread_join(th[i], NULL);
  for (unsigned i = 0; i < CHURN_THREADS; i++) { /* events still in mailboxes are live */
    sp_event ev = {atomic_exchange(&sh.mailbox[i], 0)};
    if (ev.id) SP_CHECK_OK(sp_event_release(sh.dev, ev));
    if (ev.id) SP_CHECK_STATUS(sp_event_query(sh.dev, ev), SP_ERR_INVALID_HANDLE);
  }
  for (unsigned k = 0; k < STALE_RING; k++) {
    sp_event ev = {atomic_load(&sh.stale[k])};
    if (ev.id) SP_CHECK_STATUS(sp_event_query(sh.dev, ev), SP_ERR_INVALID_HANDLE);
  }
  assert_int_equal(tu_failures(), 0);
  sp_device_close(sh.dev);
}

/* Acquires plain events until the pool refuses; returns how many (all kept in *evs). */
static size_t fill_pool(sp_device *dev, sp_event **evs, size_t *cap) {
  size_t n = 0;
  for (;;) {
    if (n == *cap) {
      *cap = *cap ? *cap * 2 : 4096;
      *evs = realloc(*evs, *cap * sizeof(**evs));
      assert_non_null(*evs);
    }
    sp_status st = sp_event_acquire(dev, 0, &(*evs)[n]);
    if (st != SP_OK) {
      if (st != SP_ERR_POOL_EXHAUSTED)
        fail_msg("filling the pool: acquire %zu returned %s, expected SP_ERR_POOL_EXHAUSTED: %s", n,
                 sp_status_str(st), sp_last_error());
      char want[64];
      snprintf(want, sizeof(want), "all %zu events", n);
      if (!strstr(sp_last_error(), want))
        fail_msg("exhaustion message \"%s\" does not name the capacity (\"%s\")", sp_last_error(),
                 want);
      return n;
    }
    n++;
  }
}

enum { EXIT_THREADS = 8, EXIT_EVENTS = 40 }; /* 40 > one cache's 32: flushes happen too */

static void *exit_thread(void *p) {
  sp_device *dev = p;
  sp_event evs[EXIT_EVENTS];
  unsigned n = 0;
  for (; n < EXIT_EVENTS; n++) {
    sp_status st = sp_event_acquire(dev, 0, &evs[n]);
    TU_EXPECT(st == SP_OK, "thread acquire %u of %d: %s: %s", n, EXIT_EVENTS, sp_status_str(st),
              sp_last_error());
    if (st != SP_OK) break;
  }
  for (unsigned k = 0; k < n; k++) TU_EXPECT_OK(sp_event_release(dev, evs[k]));
  return NULL; /* its cache (up to 32 free events) goes back at exit */
}

static void thread_exit_returns_cached(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event *evs = NULL;
  size_t cap = 0;
  size_t before = fill_pool(dev, &evs, &cap);
  for (size_t i = 0; i < before; i++) SP_CHECK_OK(sp_event_release(dev, evs[i]));
  tu_failures_reset();
  for (int round = 0; round < 3; round++) {
    pthread_t th[EXIT_THREADS];
    for (int i = 0; i < EXIT_THREADS; i++)
      assert_int_equal(pthread_create(&th[i], NULL, exit_thread, dev), 0);
    for (int i = 0; i < EXIT_THREADS; i++) pthread_join(th[i], NULL);
  }
  assert_int_equal(tu_failures(), 0);
  size_t after = fill_pool(dev, &evs, &cap);
  printf("pool capacity %zu events before %d exited threads' churn, %zu after\n", before,
         3 * EXIT_THREADS, after);
  if (after != before)
    fail_msg(
        "after threads cached events and exited the pool hands out %zu events, %zu before "
        "(%lld lost in dead threads' caches)",
        after, before, (long long)before - (long long)after);
  for (size_t i = 0; i < after; i++) SP_CHECK_OK(sp_event_release(dev, evs[i]));
  free(evs);
  sp_device_close(dev);
}

/* Goal (issue 14 W7): free events in the caches of threads that are alive but idle stay
 * reachable: the pool hands out its whole capacity, then says SP_ERR_POOL_EXHAUSTED.
 * Method: the capacity C is measured by filling a fresh device from one thread. Then 64 threads
 * each acquire and release 40 events (each keeps up to 32 in its cache) and stay alive on a
 * barrier while the main thread fills the pool again: it must get C events. */
enum { LIVE_THREADS = 64 };

typedef struct live_arg {
  sp_device *dev;
  pthread_barrier_t *filled, *done;
} live_arg;

static void *live_thread(void *p) {
  live_arg *a = p;
  exit_thread(a->dev);
  pthread_barrier_wait(a->filled); /* its cache is full of free events now */
  pthread_barrier_wait(a->done);
  return NULL;
}

static void live_threads_caches_reachable(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event *evs = NULL;
  size_t cap = 0;
  size_t capacity = fill_pool(dev, &evs, &cap);
  for (size_t i = 0; i < capacity; i++) SP_CHECK_OK(sp_event_release(dev, evs[i]));
  sp_device_close(dev);
  dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  tu_failures_reset();
  pthread_barrier_t filled, done;
  pthread_barrier_init(&filled, NULL, LIVE_THREADS + 1);
  pthread_barrier_init(&done, NULL, LIVE_THREADS + 1);
  live_arg arg = {dev, &filled, &done};
  pthread_t th[LIVE_THREADS];
  for (int i = 0; i < LIVE_THREADS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, live_thread, &arg), 0);
  pthread_barrier_wait(&filled);
  size_t got = fill_pool(dev, &evs, &cap);
  pthread_barrier_wait(&done);
  for (int i = 0; i < LIVE_THREADS; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&filled);
  pthread_barrier_destroy(&done);
  assert_int_equal(tu_failures(), 0);
  printf("capacity %zu events; with %d live threads holding cached free events: %zu\n", capacity,
         LIVE_THREADS, got);
  if (got != capacity)
    fail_msg(
        "with %d live threads the pool handed out %zu events, its capacity is %zu (%lld "
        "stranded in their caches)",
        LIVE_THREADS, got, capacity, (long long)capacity - (long long)got);
  for (size_t i = 0; i < got; i++) SP_CHECK_OK(sp_event_release(dev, evs[i]));
  free(evs);
  sp_device_close(dev);
}

enum { MANY_DEVICES = 12 }; /* more than a thread cache's entries */

/* Acquires, records and releases a few events of each device in devs[from, to), checking stale. */
static void many_devices_round(sp_device **devs, int from, int to) {
  for (int d = from; d < to; d++) {
    sp_event evs[3] = {{0}};
    for (int k = 0; k < 3; k++) {
      TU_EXPECT_OK(sp_event_acquire(devs[d], k == 2 ? SP_EVENT_TIMING : 0u, &evs[k]));
      TU_EXPECT_OK(sp_event_record(evs[k], sp_stream_default(devs[d])));
    }
    for (int k = 0; k < 3; k++) {
      TU_EXPECT_OK(sp_event_release(devs[d], evs[k]));
      sp_status st = sp_event_query(devs[d], evs[k]);
      TU_EXPECT(st == SP_ERR_INVALID_HANDLE, "device %d: released event 0x%llx: query %s", d,
                (unsigned long long)evs[k].id, sp_status_str(st));
    }
  }
}

static void *many_devices_thread(void *p) {
  sp_device **devs = p;
  for (int r = 0; r < 4; r++) many_devices_round(devs, 0, MANY_DEVICES);
  for (int d = 0; d < MANY_DEVICES / 2; d++) { /* close half under this thread's cache */
    TU_EXPECT_OK(sp_device_sync(devs[d]));
    sp_device_close(devs[d]);
    sp_device_config cfg = {.backend = "host", .streams = 2};
    sp_status st = sp_device_open(&cfg, &devs[d]);
    TU_EXPECT(st == SP_OK, "reopen %d: %s", d, sp_status_str(st));
    if (st != SP_OK) devs[d] = NULL;
  }
  for (int r = 0; r < 4; r++) many_devices_round(devs, 0, MANY_DEVICES);
  return NULL; /* exits with entries of open devices: flushed back to them */
}

static void many_devices_one_thread(void **state) {
  (void)state;
  sp_device *devs[MANY_DEVICES];
  for (int d = 0; d < MANY_DEVICES; d++) devs[d] = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  tu_failures_reset();
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, many_devices_thread, devs), 0);
  pthread_join(th, NULL);
  assert_int_equal(tu_failures(), 0);
  for (int d = 0; d < MANY_DEVICES; d++) { /* the devices still work from another thread */
    assert_non_null(devs[d]);
    sp_event ev = {0};
    SP_CHECK_OK(sp_event_acquire(devs[d], 0, &ev));
    SP_CHECK_OK(sp_event_release(devs[d], ev));
    SP_CHECK_STATUS(sp_event_release(devs[d], ev), SP_ERR_INVALID_HANDLE);
    sp_device_close(devs[d]);
  }
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(basic_lifecycle),
      cmocka_unit_test(bad_arguments),
      cmocka_unit_test(stale_handles),
      cmocka_unit_test(foreign_handles),
      cmocka_unit_test(not_ready_then_done),
      cmocka_unit_test(timing),
      cmocka_unit_test(pool_grows),
      cmocka_unit_test(churn_across_threads),
      cmocka_unit_test(thread_exit_returns_cached),
      cmocka_unit_test(live_threads_caches_reachable),
      cmocka_unit_test(many_devices_one_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
