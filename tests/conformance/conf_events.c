/* Conformance: events, on every backend.
 *
 * Goal: an event never recorded is complete; a recorded event completes exactly when the work
 * before it has (query NOT_READY while a gate holds the stream, OK after; sync waits); streams
 * waiting on an event see the data written before it; elapsed time needs two completed timing
 * events; re-recording replaces the mark; released handles are stale for every call, also after
 * the pool hands the event out again.
 * Method: gates (host functions that wait until the test opens them) make "pending" a certain
 * state instead of a race; statuses are compared with the documented ones and data read back.
 */
#include "conformance.h"

static void never_recorded_is_complete(sp_device *dev) {
  sp_event e;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &e));
  SP_CHECK_OK(sp_event_query(dev, e));
  SP_CHECK_OK(sp_event_sync(dev, e));
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  SP_CHECK_OK(sp_stream_wait_event(s, e));
  SP_CHECK_OK(sp_stream_sync(s));
  sp_stream *got = NULL;
  SP_CHECK_STATUS(sp_event_stream(dev, e, &got), SP_ERR_INVALID_ARGUMENT);
  assert_null(got);
  SP_CHECK_OK(sp_event_release(dev, e));
}

static void pending_until_work_done(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  sp_event e;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &e));
  conf_gate g;
  conf_gate_close(&g, s, 0);
  SP_CHECK_OK(sp_event_record(e, s));
  SP_CHECK_STATUS(sp_event_query(dev, e), SP_ERR_NOT_READY);
  sp_stream *got = NULL;
  SP_CHECK_OK(sp_event_stream(dev, e, &got));
  assert_ptr_equal(got, s);
  conf_gate_open(&g);
  SP_CHECK_OK(sp_event_sync(dev, e));
  SP_CHECK_OK(sp_event_query(dev, e));
  assert_int_equal(atomic_load(&g.entered), 1);
  SP_CHECK_OK(sp_event_release(dev, e));
}

/* Re-recording replaces the earlier mark: recorded on a held stream, then on an idle one. */
static void rerecord_replaces(sp_device *dev) {
  sp_stream *st[2];
  conf_streams(dev, st, 2);
  sp_event e;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &e));
  conf_gate g;
  conf_gate_close(&g, st[0], 0);
  SP_CHECK_OK(sp_event_record(e, st[0]));
  SP_CHECK_STATUS(sp_event_query(dev, e), SP_ERR_NOT_READY);
  SP_CHECK_OK(sp_stream_sync(st[1]));
  SP_CHECK_OK(sp_event_record(e, st[1]));
  SP_CHECK_OK(sp_event_sync(dev, e));
  SP_CHECK_OK(sp_event_query(dev, e));
  sp_stream *got = NULL;
  SP_CHECK_OK(sp_event_stream(dev, e, &got));
  assert_ptr_equal(got, st[1]);
  conf_gate_open(&g);
  SP_CHECK_OK(sp_stream_sync(st[0]));
  SP_CHECK_OK(sp_event_release(dev, e));
}

/* A consumer stream waits on the producer's event while the producer is held: it must not run. */
static void wait_event_orders_streams(sp_device *dev) {
  sp_stream *st[2];
  conf_streams(dev, st, 2);
  enum { N = 64 * 1024 };
  unsigned char *a, *b;
  SP_CHECK_OK(sp_alloc(dev, N, st[0], (void **)&a));
  SP_CHECK_OK(sp_alloc(dev, N, st[0], (void **)&b));
  SP_CHECK_OK(sp_record_stream(dev, a, st[1]));
  SP_CHECK_OK(sp_record_stream(dev, b, st[1]));
  SP_CHECK_OK(sp_memset_async(st[0], a, 0x01, N));
  SP_CHECK_OK(sp_memset_async(st[0], b, 0x02, N));
  SP_CHECK_OK(sp_stream_sync(st[0]));
  sp_event e, done;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &e));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &done));
  conf_gate g;
  conf_gate_close(&g, st[0], 0);
  SP_CHECK_OK(sp_memset_async(st[0], a, 0x5C, N)); /* runs only after the gate opens */
  SP_CHECK_OK(sp_event_record(e, st[0]));
  SP_CHECK_OK(sp_stream_wait_event(st[1], e));
  SP_CHECK_OK(sp_memcpy_async(st[1], b, a, N)); /* must see 0x5C */
  SP_CHECK_OK(sp_event_record(done, st[1]));
  SP_CHECK_STATUS(sp_event_query(dev, done), SP_ERR_NOT_READY);
  SP_CHECK_STATUS(sp_stream_query(st[1]), SP_ERR_NOT_READY);
  conf_gate_open(&g);
  SP_CHECK_OK(sp_event_sync(dev, done));
  unsigned char *out = malloc(N);
  assert_non_null(out);
  conf_download(st[1], out, b, N);
  size_t bad = conf_check_byte(out, N, 0x5C);
  if (bad != N) fail_msg("byte %zu: got 0x%02x, want 0x5c", bad, out[bad]);
  free(out);
  SP_CHECK_OK(sp_event_release(dev, e));
  SP_CHECK_OK(sp_event_release(dev, done));
  SP_CHECK_OK(sp_free(dev, a));
  SP_CHECK_OK(sp_free(dev, b));
}

static void elapsed_rules(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  sp_event t0, t1, plain, unrec;
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &t0));
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &t1));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &plain));
  SP_CHECK_OK(sp_event_acquire(dev, SP_EVENT_TIMING, &unrec));
  float ms = -1.0f;
  SP_CHECK_OK(sp_event_record(t0, s));
  conf_gate g;
  conf_gate_close(&g, s, 0);
  SP_CHECK_OK(sp_event_record(t1, s));
  SP_CHECK_OK(sp_event_record(plain, s));
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, t0, t1, &ms), SP_ERR_NOT_READY);
  tu_sleep_us(20000);
  conf_gate_open(&g);
  SP_CHECK_OK(sp_stream_sync(s));
  SP_CHECK_OK(sp_event_elapsed_ms(dev, t0, t1, &ms));
  /* the gate held the stream for >= 20 ms between the two marks */
  if (!(ms >= 15.0f && ms < 20000.0f)) fail_msg("elapsed %f ms, want >= 15 (gate held 20 ms)", ms);
  float ms2 = -1.0f;
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, t0, plain, &ms2), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, t0, unrec, &ms2), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_event_elapsed_ms(dev, t0, t1, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_true(ms2 == -1.0f); /* out-parameter untouched on failure */
  SP_CHECK_OK(sp_event_release(dev, t0));
  SP_CHECK_OK(sp_event_release(dev, t1));
  SP_CHECK_OK(sp_event_release(dev, plain));
  SP_CHECK_OK(sp_event_release(dev, unrec));
}

static void stale_handles(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  sp_event e, again;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &e));
  SP_CHECK_OK(sp_event_record(e, s));
  sp_event copy = e;
  SP_CHECK_OK(sp_event_release(dev, e));
  SP_CHECK_STATUS(sp_event_release(dev, copy), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_record(copy, s), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_query(dev, copy), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_sync(dev, copy), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_stream_wait_event(s, copy), SP_ERR_INVALID_HANDLE);
  /* the pool may hand the same event out again: the old handle stays stale */
  SP_CHECK_OK(sp_event_acquire(dev, 0, &again));
  assert_true(again.id != copy.id);
  SP_CHECK_STATUS(sp_event_query(dev, copy), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_release(dev, copy), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_event_query(dev, again));
  sp_event zero = {0};
  SP_CHECK_STATUS(sp_event_query(dev, zero), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_release(dev, zero), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_event_release(dev, again));
  SP_CHECK_OK(sp_stream_sync(s));
}

/* Many acquire/record/release cycles across threads: ids never repeat while live. */
typedef struct churn_arg {
  sp_device *dev;
  unsigned rounds;
} churn_arg;

static void *churn_worker(void *p) {
  churn_arg *a = p;
  sp_stream *s;
  TU_EXPECT_OK(sp_stream_current(a->dev, &s));
  for (unsigned r = 0; r < a->rounds; r++) {
    sp_event e[4];
    for (int i = 0; i < 4; i++) TU_EXPECT_OK(sp_event_acquire(a->dev, 0, &e[i]));
    for (int i = 0; i < 4; i++) TU_EXPECT_OK(sp_event_record(e[i], s));
    TU_EXPECT_OK(sp_event_sync(a->dev, e[3]));
    for (int i = 0; i < 4; i++) {
      sp_status st = sp_event_query(a->dev, e[i]);
      TU_EXPECT(st == SP_OK, "round %u event %d after sync: %s", r, i, sp_status_str(st));
      TU_EXPECT_OK(sp_event_release(a->dev, e[i]));
      st = sp_event_release(a->dev, e[i]);
      TU_EXPECT(st == SP_ERR_INVALID_HANDLE, "second release gave %s", sp_status_str(st));
    }
  }
  return NULL;
}

static void event_churn_threads(sp_device *dev) {
  enum { T = 4 };
  pthread_t th[T];
  churn_arg a = {dev, (unsigned)tu_scale(200)};
  for (int i = 0; i < T; i++) assert_int_equal(pthread_create(&th[i], NULL, churn_worker, &a), 0);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
}

int main(void) {
  static const conf_case cases[] = {
      {"never_recorded_is_complete", never_recorded_is_complete},
      {"pending_until_work_done", pending_until_work_done},
      {"rerecord_replaces", rerecord_replaces},
      {"wait_event_orders_streams", wait_event_orders_streams},
      {"elapsed_rules", elapsed_rules},
      {"stale_handles", stale_handles},
      {"event_churn_threads", event_churn_threads},
  };
  return conf_main("conf_events", cases, sizeof(cases) / sizeof(cases[0]));
}
