/* Goal: the stream pool and the stream operations behave as the contract says: round-robin
 * assignment 1 + (n mod (size-1)), stable current streams, set/release, exclusive ownership and
 * exhaustion, stream-ordered copies/fills/host functions with the data checked, and every bad input
 * rejected.
 * Method: bind threads one after another and compare indices with the formula; run copies through
 * sp_alloc'd device memory and compare bytes; pass NULL, foreign and zero-sized arguments.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "testutil.h"

typedef struct bind_arg {
  sp_device *dev;
  unsigned index;
  sp_status st;
} bind_arg;

static void *bind_once(void *p) {
  bind_arg *a = p;
  sp_stream *s = NULL;
  a->st = sp_stream_current(a->dev, &s);
  a->index = s ? sp_stream_index(s) : 0;
  return NULL;
}

static unsigned bind_in_thread(sp_device *dev, sp_status *st) {
  bind_arg a = {dev, 0, SP_OK};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, bind_once, &a), 0);
  pthread_join(t, NULL);
  *st = a.st;
  return a.index;
}

static void round_robin_assignment(void **state) {
  (void)state;
  const unsigned size = 5;
  sp_device *dev = tu_open_host(size, SP_STREAMS_ROUND_ROBIN);
  for (unsigned n = 0; n < 12; n++) {
    sp_status st;
    unsigned idx = bind_in_thread(dev, &st);
    SP_CHECK_OK(st);
    unsigned want = 1 + n % (size - 1);
    if (idx != want) fail_msg("binding %u got stream %u, expected %u", n, idx, want);
  }
  sp_device_close(dev);
}

static void current_is_stable(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *a = NULL, *b = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &a));
  SP_CHECK_OK(sp_stream_current(dev, &b));
  assert_ptr_equal(a, b);
  assert_ptr_equal(sp_stream_device(a), dev);
  assert_int_equal(sp_stream_index(a), 1);
  sp_stream *d = sp_stream_default(dev);
  assert_non_null(d);
  assert_int_equal(sp_stream_index(d), 0);
  assert_ptr_equal(sp_stream_device(d), dev);
  /* set_current to the default stream, then release: the next binding is fresh (n = 1 -> 2). */
  SP_CHECK_OK(sp_stream_set_current(dev, d));
  SP_CHECK_OK(sp_stream_current(dev, &b));
  assert_ptr_equal(b, d);
  SP_CHECK_OK(sp_stream_release_current(dev));
  SP_CHECK_OK(sp_stream_release_current(dev)); /* nothing bound: still SP_OK */
  SP_CHECK_OK(sp_stream_current(dev, &b));
  assert_int_equal(sp_stream_index(b), 2);
  sp_device_close(dev);
}

static void set_current_bad(void **state) {
  (void)state;
  sp_device *a = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_device *b = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *sb = sp_stream_default(b), *cur = NULL;
  SP_CHECK_OK(sp_stream_current(a, &cur));
  SP_CHECK_STATUS(sp_stream_set_current(a, sb), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_set_current(a, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_set_current(NULL, sb), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_current(a, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_stream *again = NULL;
  SP_CHECK_OK(sp_stream_current(a, &again));
  assert_ptr_equal(again, cur); /* failed calls changed nothing */
  sp_device_close(b);
  sp_device_close(a);
}

static void exclusive_slots(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(3, SP_STREAMS_EXCLUSIVE); /* slots 1 and 2, wait 0 */
  sp_stream *mine = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &mine));
  sp_status st;
  unsigned other = bind_in_thread(dev, &st); /* takes the other slot, gives it back at exit */
  SP_CHECK_OK(st);
  if (other == sp_stream_index(mine) || other == 0)
    fail_msg("second thread got slot %u, main owns %u", other, sp_stream_index(mine));
  /* Hold both: a thread with mine held and another holder should be refused at once. */
  sp_device *dev2 = dev;
  sp_stream *s2 = NULL;
  SP_CHECK_OK(sp_stream_set_current(dev2, sp_stream_default(dev2))); /* gives mine back */
  SP_CHECK_OK(sp_stream_release_current(dev2));
  SP_CHECK_OK(sp_stream_current(dev2, &s2)); /* slot again */
  assert_int_not_equal(sp_stream_index(s2), 0);
  (void)bind_in_thread(dev, &st);
  SP_CHECK_OK(st); /* one slot still free */
  sp_device_close(dev);
}

/* Goal (issue 14 W6): in exclusive mode sp_stream_set_current never shares a slot: onto a slot
 * another thread owns, or a free slot, it is refused (SP_ERR_INVALID_ARGUMENT) and changes
 * nothing; onto the thread's own slot it is a no-op; onto the default stream it gives the slot
 * back; onto a slot the caller holds by sp_stream_acquire it binds it.
 * Method: a holder thread owns one of two slots while the main thread owns the other; the main
 * thread tries each case and checks what it and a third thread bind afterwards. */
typedef struct holder {
  sp_device *dev;
  sp_stream *s;
  atomic_bool bound, leave;
} holder;

static void *hold_slot(void *p) {
  holder *h = p;
  TU_EXPECT_OK(sp_stream_current(h->dev, &h->s));
  atomic_store(&h->bound, true);
  while (!atomic_load(&h->leave)) sched_yield();
  return NULL;
}

static void exclusive_set_current(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(3, SP_STREAMS_EXCLUSIVE); /* slots 1 and 2, wait 0 */
  holder h = {.dev = dev};
  pthread_t t;
  tu_failures_reset();
  assert_int_equal(pthread_create(&t, NULL, hold_slot, &h), 0);
  while (!atomic_load(&h.bound)) sched_yield();
  sp_stream *theirs = h.s, *mine = NULL, *cur = NULL;
  assert_non_null(theirs);
  SP_CHECK_STATUS(sp_stream_set_current(dev, theirs), SP_ERR_INVALID_ARGUMENT);
  if (!strstr(sp_last_error(), "exclusive"))
    fail_msg("refusal message \"%s\" does not say why", sp_last_error());
  SP_CHECK_OK(sp_stream_current(dev, &mine)); /* the other slot, not theirs */
  if (mine == theirs)
    fail_msg("main thread bound slot %u, which the holder owns", sp_stream_index(mine));
  SP_CHECK_OK(sp_stream_set_current(dev, mine)); /* its own slot: no-op */
  SP_CHECK_OK(sp_stream_current(dev, &cur));
  assert_ptr_equal(cur, mine);
  SP_CHECK_STATUS(sp_stream_set_current(dev, theirs), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(sp_stream_current(dev, &cur));
  assert_ptr_equal(cur, mine); /* unchanged, and still owned: a third thread is refused */
  sp_status st;
  (void)bind_in_thread(dev, &st);
  SP_CHECK_STATUS(st, SP_ERR_POOL_EXHAUSTED);
  SP_CHECK_OK(sp_stream_set_current(dev, sp_stream_default(dev))); /* gives mine back */
  /* mine is a free slot now: setting it would share it with the next binder */
  SP_CHECK_STATUS(sp_stream_set_current(dev, mine), SP_ERR_INVALID_ARGUMENT);
  unsigned other = bind_in_thread(dev, &st);
  SP_CHECK_OK(st);
  assert_int_equal(other, sp_stream_index(mine));
  /* A slot held by sp_stream_acquire is its holder's to bind. */
  sp_stream *extra = NULL;
  SP_CHECK_OK(sp_stream_acquire(dev, &extra));
  SP_CHECK_OK(sp_stream_set_current(dev, extra));
  SP_CHECK_OK(sp_stream_current(dev, &cur));
  assert_ptr_equal(cur, extra);
  SP_CHECK_OK(sp_stream_release_current(dev));
  SP_CHECK_OK(sp_stream_release(dev, extra));
  atomic_store(&h.leave, true);
  pthread_join(t, NULL);
  assert_int_equal(tu_failures(), 0);
  sp_device_close(dev);
}

static void exclusive_exhausted(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(2, SP_STREAMS_EXCLUSIVE); /* one slot */
  sp_stream *s = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  assert_int_equal(sp_stream_index(s), 1);
  sp_status st;
  (void)bind_in_thread(dev, &st);
  SP_CHECK_STATUS(st, SP_ERR_POOL_EXHAUSTED);
  SP_CHECK_OK(sp_stream_release_current(dev));
  (void)bind_in_thread(dev, &st);
  SP_CHECK_OK(st);
  /* that thread exited: its slot is free again */
  SP_CHECK_OK(sp_stream_current(dev, &s));
  assert_int_equal(sp_stream_index(s), 1);
  sp_device_close(dev);
}

static void copies_and_fills(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  enum { N = 1 << 16 };
  unsigned char *src = malloc(N), *dst = malloc(N);
  tu_rng r = {tu_seed()};
  for (size_t i = 0; i < N; i++) src[i] = (unsigned char)tu_rng_next(&r);
  void *d1 = NULL, *d2 = NULL;
  SP_CHECK_OK(sp_alloc(dev, N, s, &d1));
  SP_CHECK_OK(sp_alloc(dev, N, s, &d2));
  SP_CHECK_OK(sp_memcpy_async(s, d1, src, N));
  SP_CHECK_OK(sp_memcpy_async(s, d2, d1, N));
  SP_CHECK_OK(sp_memset_async(s, d2, 0xAB, 100)); /* the first 100 bytes */
  SP_CHECK_OK(sp_memcpy_async(s, dst, d2, N));
  SP_CHECK_OK(sp_stream_sync(s));
  SP_CHECK_OK(sp_stream_query(s));
  for (size_t i = 0; i < N; i++) {
    unsigned char want = i < 100 ? 0xAB : src[i];
    if (dst[i] != want) fail_msg("byte %zu: got 0x%02x, expected 0x%02x", i, dst[i], want);
  }
  SP_CHECK_OK(sp_memcpy_async(s, dst, src, 0)); /* zero bytes: nothing to do */
  SP_CHECK_OK(sp_memset_async(s, NULL, 0, 0));
  SP_CHECK_STATUS(sp_memcpy_async(s, NULL, src, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memcpy_async(s, dst, NULL, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memset_async(s, NULL, 0, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memcpy_async(NULL, dst, src, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_memset_async(NULL, dst, 0, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_sync(NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_stream_query(NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_stream_index(NULL), 0);
  assert_null(sp_stream_device(NULL));
  SP_CHECK_OK(sp_free(dev, d1));
  SP_CHECK_OK(sp_free(dev, d2));
  SP_CHECK_OK(sp_device_sync(dev));
  free(src);
  free(dst);
  sp_device_close(dev);
}

typedef struct order_log {
  atomic_int next;
  int seen[4];
} order_log;
typedef struct order_arg {
  order_log *log;
  int id;
} order_arg;
static void record_order(void *p) {
  order_arg *a = p;
  a->log->seen[atomic_fetch_add(&a->log->next, 1)] = a->id;
}

static void host_funcs_in_order(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = sp_stream_default(dev);
  order_log log = {0};
  order_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (order_arg){&log, i};
    SP_CHECK_OK(sp_launch_host_func(s, record_order, &args[i]));
  }
  SP_CHECK_OK(sp_device_sync(dev));
  assert_int_equal(atomic_load(&log.next), 4);
  for (int i = 0; i < 4; i++)
    if (log.seen[i] != i) fail_msg("host function %d ran at position %d", log.seen[i], i);
  SP_CHECK_STATUS(sp_launch_host_func(s, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_launch_host_func(NULL, record_order, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_device_close(dev);
}

/* A thread may bind on at most 16 open devices; closed devices' bindings are evicted. */
static void many_devices_one_thread(void **state) {
  (void)state;
  enum { N = 17 };
  sp_device *d[N];
  sp_stream *s = NULL;
  for (int i = 0; i < N; i++) d[i] = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  for (int i = 0; i < N - 1; i++) SP_CHECK_OK(sp_stream_current(d[i], &s));
  SP_CHECK_STATUS(sp_stream_current(d[N - 1], &s), SP_ERR_UNSUPPORTED);
  SP_CHECK_OK(sp_stream_release_current(d[0]));
  SP_CHECK_OK(sp_stream_current(d[N - 1], &s));
  for (int i = 0; i < N; i++) sp_device_close(d[i]);
  /* Closed devices leave no binding behind: 16 fresh devices bind again. */
  for (int i = 0; i < N - 1; i++) d[i] = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  for (int i = 0; i < N - 1; i++) SP_CHECK_OK(sp_stream_current(d[i], &s));
  for (int i = 0; i < N - 1; i++) sp_device_close(d[i]);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(round_robin_assignment),  cmocka_unit_test(current_is_stable),
      cmocka_unit_test(set_current_bad),         cmocka_unit_test(exclusive_slots),
      cmocka_unit_test(exclusive_set_current),   cmocka_unit_test(exclusive_exhausted),
      cmocka_unit_test(copies_and_fills),        cmocka_unit_test(host_funcs_in_order),
      cmocka_unit_test(many_devices_one_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
