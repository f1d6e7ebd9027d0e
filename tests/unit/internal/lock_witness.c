/* Goal: the lock-order witness (src/core/lock.h) catches every kind of violation it claims to and
 * nothing else: a lock taken below a held rank, a second lock of a one-at-a-time rank, same-rank
 * locks out of address order, several segment locks without the segment list lock, a condition
 * wait that re-takes its mutex under a higher lock, a release of a lock not held, a backend call
 * under an allocator lock; while the library's own multi-lock paths (every cache lock, the
 * validator's every-segment walk, the peak lock trying cache locks, stats, snapshot, empty_cache)
 * pass it. Unhooked, a violation aborts the process with a message naming both locks.
 * Method: a hook turns violations into recorded messages, checked for count and for both lock
 * names; the real allocator's and host backend's locks of an open host device are taken directly
 * (white-box), and local locks of given ranks where no library object has them. One child process
 * (fork, before any device exists) commits a violation without the hook and must die of SIGABRT.
 * The whole test suite running at SP_DEBUG >= 1 is the proof that the library keeps the order.
 */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc/alloc_internal.h"
#include "core/device.h"
#include "core/lock.h"
#include "testutil.h"

#if SP_DEBUG >= 1

static unsigned n_reports;
static char last_report[512];

static void hook(const char *msg) {
  n_reports++;
  snprintf(last_report, sizeof(last_report), "%s", msg);
}

static void reports_reset(void) {
  n_reports = 0;
  last_report[0] = '\0';
}

/* Exactly `want` violations since the reset, the last naming a and b (b may be NULL). */
static void expect_reports(unsigned want, const char *a, const char *b) {
  if (n_reports != want)
    fail_msg("violations: got %u, expected %u (last: %s)", n_reports, want, last_report);
  if (a && !strstr(last_report, a)) fail_msg("message lacks \"%s\": %s", a, last_report);
  if (b && !strstr(last_report, b)) fail_msg("message lacks \"%s\": %s", b, last_report);
  reports_reset();
}

static void expect_depth(unsigned want) {
  if (sp__witness_depth() != want)
    fail_msg("held lock entries: got %u, expected %u", sp__witness_depth(), want);
}

static int setup(void **state) {
  (void)state;
  sp__witness_set_hook(hook);
  reports_reset();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  sp__witness_set_hook(NULL);
  return 0;
}

/* Unhooked, a violation logs and aborts (the child takes the event lock under the stream lock). */
static void test_violation_aborts(void **state) {
  (void)state;
  sp__witness_set_hook(NULL);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    sp__mutex hi, lo;
    sp__mutex_init(&hi, SP__RANK_HOST_STREAM);
    sp__mutex_init(&lo, SP__RANK_HOST_EVENT);
    sp__mutex_lock(&hi);
    sp__mutex_lock(&lo);
    _exit(0); /* reached only if the witness missed it */
  }
  sp__witness_set_hook(hook);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) fail_msg("fork/waitpid failed");
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
    fail_msg("child: expected death by SIGABRT, got %s %d", WIFSIGNALED(status) ? "signal" : "exit",
             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/* Mutexes and spinlocks of given ranks: in order passes; below a held rank, a second of a
 * one-at-a-time rank and releasing what is not held are reported, naming both locks; a trylock is
 * not checked but what is taken under it is checked against the higher rank. (The deliberate
 * violations nest at most one real mutex, so ThreadSanitizer's lock-order check stays quiet.) */
static void test_mutex_order(void **state) {
  (void)state;
  sp__mutex reg, st;
  sp__spin ev, st2, wait2;
  assert_int_equal(sp__mutex_init(&reg, SP__RANK_SLOT_WAIT), 0);
  assert_int_equal(sp__mutex_init(&st, SP__RANK_HOST_STREAM), 0);
  sp__spin_init(&ev, SP__RANK_HOST_EVENT);
  sp__spin_init(&st2, SP__RANK_HOST_STREAM);
  sp__spin_init(&wait2, SP__RANK_SLOT_WAIT);
  sp__mutex_lock(&reg);
  sp__spin_lock(&ev);
  sp__mutex_lock(&st);
  expect_reports(0, NULL, NULL);
  expect_depth(3);
  sp__spin_unlock(&ev); /* any release order */
  sp__mutex_unlock(&st);
  sp__mutex_unlock(&reg);
  expect_depth(0);

  sp__mutex_lock(&st);
  sp__spin_lock(&ev);
  expect_reports(1, "host sp__bevent.mu", "host sp__bstream.mu");
  sp__spin_unlock(&ev);
  sp__spin_lock(&st2);
  expect_reports(1, "a second lock of a rank held one at a time", "host sp__bstream.mu");
  sp__spin_unlock(&st2);
  sp__mutex_unlock(&st);
  expect_depth(0);

  assert_true(sp__mutex_trylock(&st)); /* a trylock is not checked, but recorded */
  assert_true(sp__spin_trylock(&ev));
  expect_reports(0, NULL, NULL);
  sp__spin_lock(&wait2); /* blocking under both: checked against the higher */
  expect_reports(1, "sp__slot_pool.wait_mu", "tried under a higher one");
  sp__spin_unlock(&wait2);
  sp__spin_unlock(&ev);
  sp__mutex_unlock(&st);
  expect_depth(0);

  sp__spin flag; /* a spinlock: releasing one not held is harmless to the lock itself */
  sp__spin_init(&flag, SP__RANK_LOG_SETTING);
  sp__spin_unlock(&flag);
  expect_reports(1, "does not hold", "log hook setting flag");
  sp__mutex_destroy(&st);
  sp__mutex_destroy(&reg);
}

/* A condition wait re-takes its mutex: waiting on a lower mutex under a higher lock is reported,
 * waiting with only lower locks held is not. */
static void test_cond_wait(void **state) {
  (void)state;
  sp__mutex lo, outer;
  sp__spin hi;
  pthread_cond_t cv;
  pthread_condattr_t ca;
  assert_int_equal(pthread_condattr_init(&ca), 0);
  assert_int_equal(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC), 0);
  assert_int_equal(pthread_cond_init(&cv, &ca), 0);
  pthread_condattr_destroy(&ca);
  sp__mutex_init(&outer, SP__RANK_BATCHER_START);
  sp__mutex_init(&lo, SP__RANK_SLOT_WAIT);
  sp__spin_init(&hi, SP__RANK_HOST_STREAM);
  struct timespec past;
  clock_gettime(CLOCK_MONOTONIC, &past); /* the waits below time out at once */

  sp__mutex_lock(&outer);
  sp__mutex_lock(&lo);
  (void)sp__cond_timedwait(&cv, &lo, &past);
  expect_reports(0, NULL, NULL);
  expect_depth(2);
  sp__spin_lock(&hi);
  (void)sp__cond_timedwait(&cv, &lo, &past);
  expect_reports(1, "sp__slot_pool.wait_mu", "host sp__bstream.mu");
  sp__spin_unlock(&hi);
  sp__mutex_unlock(&lo);
  sp__mutex_unlock(&outer);
  expect_depth(0);
  pthread_cond_destroy(&cv);
  sp__mutex_destroy(&lo);
  sp__mutex_destroy(&outer);
}

/* The allocator's real locks: cache locks in index order pass, against it are reported; a cache
 * lock tried under peak_mu passes (stats.c), but a blocking lock under that try is checked against
 * peak_mu's rank; taking a cache lock under the pending lock is reported. */
static void test_alloc_locks(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp__allocator *a = dev->alloc;
  sp__spin_lock(&a->caches[1].mu);
  sp__spin_lock(&a->caches[3].mu);
  sp__spin_lock(&a->pending_mu);
  expect_reports(0, NULL, NULL);
  expect_depth(2);
  sp__spin_unlock(&a->pending_mu);
  sp__spin_lock(&a->caches[2].mu); /* below caches[3] */
  expect_reports(1, "not at a higher address", "sp__scache.mu");
  sp__spin_unlock(&a->caches[2].mu);
  sp__spin_unlock(&a->caches[1].mu);
  sp__spin_unlock(&a->caches[3].mu);
  expect_depth(0);

  sp__spin_lock(&a->caches[0].mu);
  sp__spin_lock(&a->peak_mu);
  assert_true(sp__spin_trylock(&a->caches[2].mu));
  expect_reports(0, NULL, NULL);
  sp__spin_lock(&a->seglist_mu);
  expect_reports(1, "sp__allocator.seglist_mu", "tried under a higher one");
  sp__spin_unlock(&a->seglist_mu);
  sp__spin_unlock(&a->caches[2].mu);
  sp__spin_unlock(&a->peak_mu);
  sp__spin_unlock(&a->caches[0].mu);
  expect_depth(0);

  sp__spin_lock(&a->pending_mu);
  sp__spin_lock(&a->caches[0].mu);
  expect_reports(1, "sp__scache.mu", "sp__allocator.pending_mu");
  sp__spin_unlock(&a->caches[0].mu);
  sp__spin_unlock(&a->pending_mu);
  expect_depth(0);
  sp_device_close(dev);
}

/* Several segment locks only under the segment list lock: checked with locks of those ranks. */
static void test_segment_group(void **state) {
  (void)state;
  sp__spin list, seg[3];
  sp__spin_init(&list, SP__RANK_ALLOC_SEGLIST);
  for (unsigned i = 0; i < 3; i++) sp__spin_init(&seg[i], SP__RANK_ALLOC_SEGMENT);
  sp__spin_lock(&list);
  sp__spin_lock(&seg[2]); /* any order under the list lock */
  sp__spin_lock(&seg[0]);
  sp__spin_lock(&seg[1]);
  expect_reports(0, NULL, NULL);
  expect_depth(2);
  for (unsigned i = 0; i < 3; i++) sp__spin_unlock(&seg[i]);
  sp__spin_unlock(&list);
  expect_depth(0);
  sp__spin_lock(&seg[0]);
  sp__spin_lock(&seg[1]);
  expect_reports(1, "without the lock of the rank below held", "sp__segment.mu");
  sp__spin_unlock(&seg[1]);
  sp__spin_unlock(&seg[0]);
  expect_depth(0);
}

/* The library's own multi-lock paths pass and leave nothing held: several segments, pending
 * frees, stats, snapshot (every lock), the validator (every segment), empty_cache. */
static void test_library_paths(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  void *p[6];
  size_t sizes[6] = {512, 4096, (size_t)2 << 20, (size_t)12 << 20, 1024, (size_t)3 << 20};
  for (unsigned i = 0; i < 6; i++)
    SP_CHECK_OK(sp_alloc(dev, sizes[i], &dev->streams[i % 4], &p[i]));
  SP_CHECK_OK(sp_record_stream(dev, p[0], &dev->streams[2]));
  for (unsigned i = 0; i < 6; i += 2) SP_CHECK_OK(sp_free(dev, p[i]));
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  assert_true(m.reserved_bytes >= ((size_t)12 << 20));
  char *json = NULL;
  SP_CHECK_OK(sp_memory_snapshot_json(dev, &json));
  sp_string_free(json);
  SP_CHECK_OK(sp__alloc_validate(dev->alloc));
  SP_CHECK_OK(sp_memory_stats_reset_peaks(dev));
  for (unsigned i = 1; i < 6; i += 2) SP_CHECK_OK(sp_free(dev, p[i]));
  SP_CHECK_OK(sp_empty_cache(dev));
  expect_reports(0, NULL, NULL);
  expect_depth(0);
  sp_device_close(dev);
}

/* A backend call under an allocator lock is reported (the call column); under a lock that allows
 * backend calls (the stream create lock) it is not. */
static void test_backend_call_under_lock(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  sp__bstream *bs = NULL;
  SP_CHECK_OK(sp__stream_backend(&dev->streams[0], &bs));
  sp__spin_lock(&dev->alloc->caches[1].mu);
  (void)dev->be->stream_query(bs);
  expect_reports(1, "host stream_query", "sp__scache.mu");
  sp__spin_unlock(&dev->alloc->caches[1].mu);
  sp__mutex_lock(&dev->stream_create_mu);
  SP_CHECK_OK(dev->be->stream_sync(bs));
  expect_reports(0, NULL, NULL);
  sp__mutex_unlock(&dev->stream_create_mu);
  expect_depth(0);
  sp_device_close(dev);
}

/* Every rank has a name, and they are unique (the table is the documentation). */
static void test_rank_names(void **state) {
  (void)state;
  for (unsigned r = 1; r < SP__RANK_COUNT; r++) {
    const char *n = sp__lock_rank_name(r);
    assert_non_null(n);
    for (unsigned q = 1; q < r; q++)
      if (!strcmp(n, sp__lock_rank_name(q))) fail_msg("ranks %u and %u share the name %s", q, r, n);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_violation_aborts),
      cmocka_unit_test_setup_teardown(test_mutex_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cond_wait, setup, teardown),
      cmocka_unit_test_setup_teardown(test_alloc_locks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_segment_group, setup, teardown),
      cmocka_unit_test_setup_teardown(test_library_paths, setup, teardown),
      cmocka_unit_test_setup_teardown(test_backend_call_under_lock, setup, teardown),
      cmocka_unit_test(test_rank_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* SP_DEBUG < 1 */

int main(void) {
  printf("skipped: the lock witness is compiled out at SP_DEBUG 0\n");
  return TU_SKIP;
}

#endif
