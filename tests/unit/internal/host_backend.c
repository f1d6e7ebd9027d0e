/* White-box tests of the host backend through its method table (sp__host_backend).
 *
 * Goal: the host device behaves like a real asynchronous device: each stream runs its commands
 * in submission order on its own thread, counters/query/sync/events tell the truth, a cross-stream
 * wait really orders work (checked through data with jitter on), re-recording an event does not
 * move waits already queued, timing events measure, device memory is capacity-bounded with exact
 * OOM, Linear matches a double reference (f32 and bf16), conversions round
 * to nearest even and keep NaN, bad environment values are rejected naming the variable, and
 * several host devices work at once.
 *
 * Method: drive the table directly (no core). Workers are held with a "gate" host function to
 * create pending work deterministically; jitter (STREAMPOOL_HOST_JITTER_US) makes missing
 * ordering show up as wrong bytes. Every data check prints expected and actual values. Seeded by
 * tu_seed(); sizes shrink under ThreadSanitizer via tu_scale().
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#include "backend/backend.h"
#include "core/dtype.h"

static const sp__backend *const B = &sp__host_backend;

/* ---- helpers ------------------------------------------------------------------------------- */

static void env_clear(void) {
  unsetenv("STREAMPOOL_HOST_DEVICES");
  unsetenv("STREAMPOOL_HOST_JITTER_US");
  unsetenv("STREAMPOOL_HOST_JITTER_SEED");
  unsetenv("STREAMPOOL_HOST_MEMORY");
}

static int setup(void **state) {
  (void)state;
  env_clear();
  tu_failures_reset();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  env_clear();
  return 0;
}

static sp__bdevice *dev_open(int index) {
  sp__bdevice *d = NULL;
  SP_CHECK_OK(B->device_open(index, &d));
  assert_non_null(d);
  return d;
}

static sp__bstream *stream_new(sp__bdevice *d, unsigned index) {
  sp__bstream *s = NULL;
  SP_CHECK_OK(B->stream_create(d, index, &s));
  assert_non_null(s);
  return s;
}

static sp__bevent *event_new(sp__bdevice *d, unsigned flags) {
  sp__bevent *e = NULL;
  SP_CHECK_OK(B->event_create(d, flags, &e));
  assert_non_null(e);
  return e;
}

static void sleep_us(unsigned us) {
  struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
  nanosleep(&ts, NULL);
}

/* A gate: a host function that blocks its stream's worker until gate_open. */
typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
} gate;

static void gate_init(gate *g) {
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->open = 0;
}
static void gate_fn(void *arg) {
  gate *g = arg;
  pthread_mutex_lock(&g->mu);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}
static void gate_open(gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}
static void gate_destroy(gate *g) {
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
}

/* A flag a host function sets (read by the test thread with atomics). */
static void flag_fn(void *arg) { atomic_store((atomic_int *)arg, 1); }

/* ---- FIFO order ----------------------------------------------------------------------------- */

/* Random memset/memcpy commands on one stream under jitter; the final buffer must equal the same
 * commands applied in order on the host. Also forces the ring to grow with a wrapped head. */
static void test_fifo_order_under_jitter(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "20", 1);
  sp__bdevice *d = dev_open(0);
  sp__bstream *s = stream_new(d, 1);
  enum { N = 4096 };
  unsigned char *dev_buf = NULL, *src = malloc(N * 8), ref[N];
  SP_CHECK_OK(B->mem_alloc(d, N, (void **)&dev_buf));
  tu_rng r = {tu_seed()};
  for (size_t i = 0; i < N * 8; i++) src[i] = (unsigned char)tu_rng_next(&r);
  memset(ref, 0, N);
  SP_CHECK_OK(B->memset_async(s, dev_buf, 0, N));
  gate g;
  gate_init(&g);
  size_t cmds = tu_scale(3000);
  for (size_t i = 0; i < cmds; i++) {
    if (i == 10) SP_CHECK_OK(B->host_func(s, gate_fn, &g)); /* ring fills behind a wrapped head */
    size_t off = tu_rng_below(&r, N), len = 1 + tu_rng_below(&r, N - off);
    if (tu_rng_below(&r, 2)) {
      int v = (int)tu_rng_below(&r, 256);
      SP_CHECK_OK(B->memset_async(s, dev_buf + off, v, len));
      memset(ref + off, v, len);
    } else {
      size_t so = tu_rng_below(&r, N * 8 - len);
      SP_CHECK_OK(B->memcpy_async(s, dev_buf + off, src + so, len));
      memcpy(ref + off, src + so, len);
    }
  }
  gate_open(&g);
  SP_CHECK_OK(B->stream_sync(s));
  SP_CHECK_OK(B->stream_query(s));
  for (size_t i = 0; i < N; i++)
    if (dev_buf[i] != ref[i]) fail_msg("byte %zu: expected %u, got %u", i, ref[i], dev_buf[i]);
  SP_CHECK_OK(B->mem_free(d, dev_buf));
  B->stream_destroy(s);
  B->device_close(d);
  gate_destroy(&g);
  free(src);
}

/* Host functions run in submission order, including when several threads submit to one stream
 * (each thread's own order is kept; all of them run). */
typedef struct order_log {
  unsigned entries[40000]; /* (thread << 16) | seq, appended by the one worker */
  unsigned n;
} order_log;
typedef struct order_item {
  order_log *log;
  unsigned value;
} order_item;
static void order_fn(void *arg) {
  order_item *it = arg;
  it->log->entries[it->log->n++] = it->value;
}

typedef struct order_thread {
  sp__bstream *s;
  order_item *items;
  unsigned count;
} order_thread;
static void *order_submitter(void *arg) {
  order_thread *t = arg;
  for (unsigned i = 0; i < t->count; i++) TU_EXPECT_OK(B->host_func(t->s, order_fn, &t->items[i]));
  return NULL;
}

static void test_host_func_order(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "5", 1);
  sp__bdevice *d = dev_open(0);
  sp__bstream *s = stream_new(d, 2);
  enum { T = 4 };
  unsigned per = (unsigned)tu_scale(2000);
  order_log *log = calloc(1, sizeof(*log));
  order_item *items = calloc(T * per, sizeof(*items));
  order_thread th[T];
  pthread_t tid[T];
  for (unsigned t = 0; t < T; t++) {
    for (unsigned i = 0; i < per; i++) items[t * per + i] = (order_item){log, (t << 16) | i};
    th[t] = (order_thread){s, items + t * per, per};
    pthread_create(&tid[t], NULL, order_submitter, &th[t]);
  }
  for (unsigned t = 0; t < T; t++) pthread_join(tid[t], NULL);
  SP_CHECK_OK(B->stream_sync(s));
  assert_int_equal(tu_failures(), 0);
  assert_int_equal(log->n, T * per);
  unsigned next[T] = {0};
  for (unsigned i = 0; i < log->n; i++) {
    unsigned t = log->entries[i] >> 16, seq = log->entries[i] & 0xffff;
    if (seq != next[t]) fail_msg("entry %u: thread %u ran seq %u, expected %u", i, t, seq, next[t]);
    next[t]++;
  }
  B->stream_destroy(s);
  B->device_close(d);
  free(items);
  free(log);
}

/* ---- counters, query, sync, destroy --------------------------------------------------------- */

static void test_query_sync_destroy(void **state) {
  (void)state;
  sp__bdevice *d = dev_open(0);
  sp__bstream *s = stream_new(d, 0);
  SP_CHECK_OK(B->stream_query(s)); /* fresh: idle */
  SP_CHECK_OK(B->stream_sync(s));
  gate g;
  gate_init(&g);
  atomic_int ran = 0;
  SP_CHECK_OK(B->host_func(s, gate_fn, &g));
  SP_CHECK_OK(B->host_func(s, flag_fn, &ran));
  SP_CHECK_STATUS(B->stream_query(s), SP_ERR_NOT_READY);
  sleep_us(2000);
  assert_int_equal(atomic_load(&ran), 0);
  SP_CHECK_STATUS(B->stream_query(s), SP_ERR_NOT_READY);
  gate_open(&g);
  SP_CHECK_OK(B->stream_sync(s));
  assert_int_equal(atomic_load(&ran), 1);
  SP_CHECK_OK(B->stream_query(s));

  /* Zero-byte operations are no-ops; bad arguments fail and queue nothing. */
  SP_CHECK_OK(B->memcpy_async(s, NULL, NULL, 0));
  SP_CHECK_STATUS(B->memcpy_async(s, NULL, &ran, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->memset_async(s, NULL, 0, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->host_func(s, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->stream_sync(NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(B->stream_query(s));

  /* destroy drains: every queued copy has landed when it returns. */
  enum { N = 1 << 16 };
  unsigned char *a = malloc(N), *b = calloc(1, N);
  memset(a, 0x5a, N);
  sp__bstream *s2 = stream_new(d, 3);
  gate g2;
  gate_init(&g2);
  SP_CHECK_OK(B->host_func(s2, gate_fn, &g2));
  for (size_t i = 0; i < N; i += 256) SP_CHECK_OK(B->memcpy_async(s2, b + i, a + i, 256));
  gate_open(&g2);
  B->stream_destroy(s2);
  for (size_t i = 0; i < N; i++)
    if (b[i] != 0x5a) fail_msg("byte %zu after destroy: expected 0x5a, got 0x%02x", i, b[i]);
  /* destroy at every phase of the worker (running, polling for work, asleep) never hangs */
  tu_rng r = {tu_seed()};
  for (unsigned i = 0; i < tu_scale(300); i++) {
    sp__bstream *s3 = stream_new(d, 4);
    SP_CHECK_OK(B->memset_async(s3, b, 0x11, 64));
    sleep_us((unsigned)tu_rng_below(&r, i % 3 == 0 ? 60 : 25));
    B->stream_destroy(s3);
    if (b[0] != 0x11) fail_msg("iteration %u: destroy returned before the memset ran", i);
    b[0] = 0;
  }
  B->stream_destroy(s);
  B->device_close(d);
  gate_destroy(&g);
  gate_destroy(&g2);
  free(a);
  free(b);
}

/* ---- events --------------------------------------------------------------------------------- */

static void test_event_query_sync(void **state) {
  (void)state;
  sp__bdevice *d = dev_open(0);
  sp__bstream *s = stream_new(d, 1), *t = stream_new(d, 2);
  for (unsigned flags = 0; flags <= SP_EVENT_TIMING; flags++) {
    sp__bevent *e = event_new(d, flags);
    SP_CHECK_OK(B->event_query(e)); /* never recorded: complete */
    SP_CHECK_OK(B->event_sync(e));
    SP_CHECK_OK(B->stream_wait_event(t, e));
    SP_CHECK_OK(B->stream_sync(t));
    gate g;
    gate_init(&g);
    SP_CHECK_OK(B->host_func(s, gate_fn, &g));
    SP_CHECK_OK(B->event_record(e, s));
    SP_CHECK_STATUS(B->event_query(e), SP_ERR_NOT_READY);
    gate_open(&g);
    SP_CHECK_OK(B->event_sync(e));
    SP_CHECK_OK(B->event_query(e));
    /* recorded on an idle stream: done at once */
    SP_CHECK_OK(B->event_record(e, s));
    SP_CHECK_OK(B->event_sync(e));
    SP_CHECK_OK(B->event_query(e));
    B->event_destroy(e);
    gate_destroy(&g);
  }
  sp__bevent *e = NULL;
  SP_CHECK_STATUS(B->event_create(d, 0x80, &e), SP_ERR_INVALID_ARGUMENT);
  assert_null(e);
  B->stream_destroy(s);
  B->stream_destroy(t);
  B->device_close(d);
}

/* A waits for B on the device: B's later work must not run before A's recorded work, checked
 * through data, many rounds under jitter, for both event kinds. */
static void test_event_wait_orders_data(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "40", 1);
  sp__bdevice *d = dev_open(0);
  sp__bstream *prod = stream_new(d, 1), *cons = stream_new(d, 2);
  enum { BYTES = 512 };
  size_t rounds = tu_scale(400);
  unsigned char *bufs = NULL, *outs = malloc(rounds * BYTES);
  SP_CHECK_OK(B->mem_alloc(d, rounds * BYTES, (void **)&bufs));
  memset(bufs, 0, rounds * BYTES);
  sp__bevent *ev[2] = {event_new(d, 0), event_new(d, SP_EVENT_TIMING)};
  for (size_t i = 0; i < rounds; i++) {
    unsigned char *buf = bufs + i * BYTES;
    SP_CHECK_OK(B->memset_async(prod, buf, (int)(i * 7 + 1) & 0xff, BYTES / 2));
    SP_CHECK_OK(B->memset_async(prod, buf + BYTES / 2, (int)(i * 7 + 2) & 0xff, BYTES / 2));
    sp__bevent *e = ev[i % 2];
    SP_CHECK_OK(B->event_record(e, prod)); /* re-recorded every other round */
    SP_CHECK_OK(B->stream_wait_event(cons, e));
    SP_CHECK_OK(B->memcpy_async(cons, outs + i * BYTES, buf, BYTES));
  }
  SP_CHECK_OK(B->stream_sync(cons));
  for (size_t i = 0; i < rounds; i++)
    for (size_t j = 0; j < BYTES; j++) {
      unsigned want = (unsigned)(i * 7 + (j < BYTES / 2 ? 1 : 2)) & 0xff;
      if (outs[i * BYTES + j] != want)
        fail_msg("round %zu byte %zu: expected %u, got %u", i, j, want, outs[i * BYTES + j]);
    }
  SP_CHECK_OK(B->stream_sync(prod));
  B->event_destroy(ev[0]);
  B->event_destroy(ev[1]);
  SP_CHECK_OK(B->mem_free(d, bufs));
  B->stream_destroy(prod);
  B->stream_destroy(cons);
  B->device_close(d);
  free(outs);
}

/* A wait holds the waiting stream until the recorded work is done; re-recording the event on
 * later (still blocked) work does not move a wait already queued. */
static void test_event_rerecord_semantics(void **state) {
  (void)state;
  sp__bdevice *d = dev_open(0);
  sp__bstream *a = stream_new(d, 1), *b = stream_new(d, 2);
  for (unsigned flags = 0; flags <= SP_EVENT_TIMING; flags++) {
    sp__bevent *e = event_new(d, flags);
    gate g1, g2;
    gate_init(&g1);
    gate_init(&g2);
    atomic_int ran = 0;
    SP_CHECK_OK(B->host_func(a, gate_fn, &g1));
    SP_CHECK_OK(B->event_record(e, a));       /* mark 1: after g1 */
    SP_CHECK_OK(B->stream_wait_event(b, e));  /* b waits for mark 1 */
    SP_CHECK_OK(B->host_func(b, flag_fn, &ran));
    SP_CHECK_OK(B->host_func(a, gate_fn, &g2));
    SP_CHECK_OK(B->event_record(e, a));       /* mark 2: after g2 */
    sleep_us(3000);
    if (atomic_load(&ran)) fail_msg("b ran past its wait before the recorded work finished");
    SP_CHECK_STATUS(B->stream_query(b), SP_ERR_NOT_READY);
    gate_open(&g1);
    SP_CHECK_OK(B->stream_sync(b)); /* would hang if the wait had moved to mark 2 */
    assert_int_equal(atomic_load(&ran), 1);
    SP_CHECK_STATUS(B->event_query(e), SP_ERR_NOT_READY); /* mark 2 pending */
    gate_open(&g2);
    SP_CHECK_OK(B->stream_sync(a));
    SP_CHECK_OK(B->event_query(e));
    B->event_destroy(e);
    gate_destroy(&g1);
    gate_destroy(&g2);
  }
  B->stream_destroy(a);
  B->stream_destroy(b);
  B->device_close(d);
}

static void sleep_fn(void *arg) { sleep_us(*(unsigned *)arg); }

static void test_event_elapsed(void **state) {
  (void)state;
  sp__bdevice *d = dev_open(0);
  sp__bstream *s = stream_new(d, 1);
  sp__bevent *t0 = event_new(d, SP_EVENT_TIMING), *t1 = event_new(d, SP_EVENT_TIMING);
  sp__bevent *plain = event_new(d, 0);
  float ms = -1.0f;
  SP_CHECK_STATUS(B->event_elapsed_ms(t0, t1, &ms), SP_ERR_INVALID_ARGUMENT); /* never recorded */
  SP_CHECK_OK(B->event_record(plain, s));
  SP_CHECK_STATUS(B->event_elapsed_ms(plain, t1, &ms), SP_ERR_INVALID_ARGUMENT);
  gate g;
  gate_init(&g);
  unsigned us = 20000;
  SP_CHECK_OK(B->host_func(s, gate_fn, &g));
  SP_CHECK_OK(B->event_record(t0, s));
  SP_CHECK_OK(B->host_func(s, sleep_fn, &us));
  SP_CHECK_OK(B->event_record(t1, s));
  SP_CHECK_STATUS(B->event_elapsed_ms(t0, t1, &ms), SP_ERR_NOT_READY);
  assert_true(ms == -1.0f); /* out-param untouched on failure */
  gate_open(&g);
  SP_CHECK_OK(B->event_sync(t1));
  SP_CHECK_OK(B->event_elapsed_ms(t0, t1, &ms));
  if (ms < 19.0f || ms > 2000.0f) fail_msg("elapsed: expected about 20 ms, got %f", (double)ms);
  float back = 0;
  SP_CHECK_OK(B->event_elapsed_ms(t1, t0, &back));
  if (back > -19.0f) fail_msg("reverse elapsed: expected about -20 ms, got %f", (double)back);
  /* a timing event destroyed while its marker is queued: the marker must not touch freed memory */
  gate g2;
  gate_init(&g2);
  sp__bevent *doomed = event_new(d, SP_EVENT_TIMING);
  SP_CHECK_OK(B->host_func(s, gate_fn, &g2));
  SP_CHECK_OK(B->event_record(doomed, s));
  B->event_destroy(doomed);
  gate_open(&g2);
  SP_CHECK_OK(B->stream_sync(s));
  B->event_destroy(t0);
  B->event_destroy(t1);
  B->event_destroy(plain);
  B->stream_destroy(s);
  B->device_close(d);
  gate_destroy(&g);
  gate_destroy(&g2);
}

/* Many threads record, query, wait on and sync shared events at once (TSan checks the races). */
typedef struct race_ctx {
  sp__bstream *streams[4];
  sp__bevent *events[2];
  unsigned index, iters;
  unsigned char *buf;
} race_ctx;
static void *race_worker(void *arg) {
  race_ctx *c = arg;
  sp__bstream *mine = c->streams[c->index], *other = c->streams[(c->index + 1) % 4];
  for (unsigned i = 0; i < c->iters; i++) {
    sp__bevent *e = c->events[i % 2];
    TU_EXPECT_OK(B->memset_async(mine, c->buf + c->index * 64, (int)(i & 0xff), 64));
    TU_EXPECT_OK(B->event_record(e, mine));
    TU_EXPECT_OK(B->stream_wait_event(other, e));
    sp_status st = B->event_query(e);
    TU_EXPECT(st == SP_OK || st == SP_ERR_NOT_READY, "event_query: %d", (int)st);
    if (i % 16 == 0) TU_EXPECT_OK(B->event_sync(e));
  }
  return NULL;
}

static void test_event_races(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "3", 1);
  sp__bdevice *d = dev_open(0);
  race_ctx c[4];
  pthread_t tid[4];
  unsigned char *buf = NULL;
  SP_CHECK_OK(B->mem_alloc(d, 256, (void **)&buf));
  sp__bstream *streams[4];
  for (unsigned i = 0; i < 4; i++) streams[i] = stream_new(d, i + 1);
  sp__bevent *events[2] = {event_new(d, 0), event_new(d, SP_EVENT_TIMING)};
  for (unsigned i = 0; i < 4; i++) {
    c[i] = (race_ctx){{streams[0], streams[1], streams[2], streams[3]}, {events[0], events[1]},
                      i, (unsigned)tu_scale(2000), buf};
    pthread_create(&tid[i], NULL, race_worker, &c[i]);
  }
  for (unsigned i = 0; i < 4; i++) pthread_join(tid[i], NULL);
  for (unsigned i = 0; i < 4; i++) SP_CHECK_OK(B->stream_sync(streams[i]));
  assert_int_equal(tu_failures(), 0);
  unsigned want = (unsigned)((tu_scale(2000) - 1) & 0xff);
  for (unsigned i = 0; i < 256; i++)
    if (buf[i] != want) fail_msg("byte %u: expected %u, got %u", i, want, buf[i]);
  B->event_destroy(events[0]);
  B->event_destroy(events[1]);
  for (unsigned i = 0; i < 4; i++) B->stream_destroy(streams[i]);
  SP_CHECK_OK(B->mem_free(d, buf));
  B->device_close(d);
}

/* ---- memory --------------------------------------------------------------------------------- */

static void test_memory_capacity(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_MEMORY", "1M", 1);
  sp__bdevice *d = dev_open(0);
  size_t free_b = 0, total_b = 0;
  SP_CHECK_OK(B->memory_info(d, &free_b, &total_b));
  assert_int_equal(total_b, 1u << 20);
  assert_int_equal(free_b, 1u << 20);
  void *a = NULL, *b = NULL, *c = NULL;
  SP_CHECK_OK(B->mem_alloc(d, 512 << 10, &a));
  assert_int_equal((uintptr_t)a % 256, 0);
  memset(a, 1, 512 << 10);
  SP_CHECK_OK(B->memory_info(d, &free_b, &total_b));
  assert_int_equal(free_b, 512u << 10);
  SP_CHECK_STATUS(B->mem_alloc(d, (512 << 10) + 1, &b), SP_ERR_OUT_OF_MEMORY);
  assert_null(b);
  if (!strstr(sp_last_error(), "out of memory")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_OK(B->mem_alloc(d, 512 << 10, &b)); /* exactly the rest */
  SP_CHECK_OK(B->memory_info(d, &free_b, &total_b));
  assert_int_equal(free_b, 0);
  SP_CHECK_STATUS(B->mem_alloc(d, 1, &c), SP_ERR_OUT_OF_MEMORY);
  SP_CHECK_OK(B->mem_free(d, a));
  SP_CHECK_OK(B->mem_alloc(d, 1000, &c));
  assert_int_equal((uintptr_t)c % 256, 0);
  SP_CHECK_STATUS(B->mem_alloc(d, 0, &a), SP_ERR_INVALID_ARGUMENT);
  int local = 0;
  SP_CHECK_STATUS(B->mem_free(d, &local), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(B->mem_free(d, NULL));
  SP_CHECK_OK(B->mem_free(d, b));
  SP_CHECK_OK(B->mem_free(d, c));
  SP_CHECK_OK(B->memory_info(d, &free_b, &total_b));
  assert_int_equal(free_b, total_b);
  B->device_close(d);
}

/* Threads allocate and free against a small capacity: used bytes never pass it, and all come
 * back. */
typedef struct mem_ctx {
  sp__bdevice *d;
  uint64_t seed;
  unsigned iters;
  unsigned long ooms;
} mem_ctx;
static void *mem_worker(void *arg) {
  mem_ctx *c = arg;
  tu_rng r = {c->seed};
  void *held[8] = {NULL};
  for (unsigned i = 0; i < c->iters; i++) {
    unsigned k = (unsigned)tu_rng_below(&r, 8);
    if (held[k]) {
      TU_EXPECT_OK(B->mem_free(c->d, held[k]));
      held[k] = NULL;
    } else {
      sp_status st = B->mem_alloc(c->d, 1 + tu_rng_below(&r, 20000), &held[k]);
      if (st == SP_ERR_OUT_OF_MEMORY) c->ooms++;
      else TU_EXPECT(st == SP_OK, "mem_alloc: %d %s", (int)st, sp_last_error());
      if (held[k]) memset(held[k], 0xab, 1);
    }
    size_t f = 0, t = 0;
    TU_EXPECT_OK(B->memory_info(c->d, &f, &t));
    TU_EXPECT(f <= t, "free %zu > total %zu", f, t);
  }
  for (unsigned k = 0; k < 8; k++) TU_EXPECT_OK(B->mem_free(c->d, held[k]));
  return NULL;
}

static void test_memory_threads(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_MEMORY", "100K", 1);
  sp__bdevice *d = dev_open(0);
  mem_ctx c[4];
  pthread_t tid[4];
  for (unsigned i = 0; i < 4; i++) {
    c[i] = (mem_ctx){d, tu_seed() + i, (unsigned)tu_scale(20000), 0};
    pthread_create(&tid[i], NULL, mem_worker, &c[i]);
  }
  unsigned long ooms = 0;
  for (unsigned i = 0; i < 4; i++) {
    pthread_join(tid[i], NULL);
    ooms += c[i].ooms;
  }
  assert_int_equal(tu_failures(), 0);
  if (!ooms) fail_msg("expected some OOMs with 4 threads x 8 blocks of <= 20 KB in 100 KB");
  size_t f = 0, t = 0;
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  if (f != t) fail_msg("after freeing everything: free %zu, total %zu", f, t);
  B->device_close(d);
}

/* ---- linear and convert --------------------------------------------------------------------- */

static float rand_float(tu_rng *r) { return (float)((double)tu_rng_below(r, 2000001) / 1e6 - 1.0); }

static float bf16_round(float f) { return sp__bf16_to_f32(sp__f32_to_bf16(f)); }

/* One random Linear on the device against a double reference. */
static void linear_case(sp__bstream *s, tu_rng *r, sp_dtype dt, unsigned batch, unsigned in,
                        unsigned out, int with_bias, int relu) {
  size_t nx = (size_t)batch * in, nw = (size_t)out * in, ny = (size_t)batch * out;
  float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(out * 4), *y = malloc(ny * 4);
  for (size_t i = 0; i < nx; i++) x[i] = rand_float(r) * 3.0f;
  for (size_t i = 0; i < nw; i++) w[i] = rand_float(r);
  for (size_t i = 0; i < out; i++) b[i] = rand_float(r);
  if (dt == SP_BF16) { /* the reference sees exactly the bf16 inputs */
    for (size_t i = 0; i < nx; i++) x[i] = bf16_round(x[i]);
    for (size_t i = 0; i < nw; i++) w[i] = bf16_round(w[i]);
    for (size_t i = 0; i < out; i++) b[i] = bf16_round(b[i]);
  }
  void *dx = x, *dw = w, *db = b, *dy = y;
  uint16_t *hx = NULL, *hw = NULL, *hb = NULL, *hy = NULL;
  if (dt == SP_BF16) {
    hx = malloc(nx * 2), hw = malloc(nw * 2), hb = malloc(out * 2), hy = malloc(ny * 2);
    SP_CHECK_OK(B->convert_async(s, hx, SP_BF16, x, SP_F32, nx));
    SP_CHECK_OK(B->convert_async(s, hw, SP_BF16, w, SP_F32, nw));
    SP_CHECK_OK(B->convert_async(s, hb, SP_BF16, b, SP_F32, out));
    dx = hx, dw = hw, db = hb, dy = hy;
  }
  sp__linear op = {dt, batch, in, out, dx, dw, with_bias ? db : NULL, dy, relu != 0};
  SP_CHECK_OK(B->linear_async(s, &op));
  if (dt == SP_BF16) SP_CHECK_OK(B->convert_async(s, y, SP_F32, hy, SP_BF16, ny));
  SP_CHECK_OK(B->stream_sync(s));
  for (unsigned i = 0; i < batch; i++)
    for (unsigned o = 0; o < out; o++) {
      double acc = with_bias ? b[o] : 0.0, scale = with_bias ? fabs(b[o]) : 0.0;
      for (unsigned k = 0; k < in; k++) {
        acc += (double)x[(size_t)i * in + k] * w[(size_t)o * in + k];
        scale += fabs((double)x[(size_t)i * in + k] * w[(size_t)o * in + k]);
      }
      if (relu && acc < 0) acc = 0;
      double got = y[(size_t)i * out + o];
      double tol = dt == SP_F32 ? 1e-5 * scale + 1e-7 : 1e-2 * (fabs(acc) + 1e-3 * scale) + 1e-6;
      if (!(fabs(got - acc) <= tol))
        fail_msg("%s linear %ux%ux%u bias=%d relu=%d y[%u,%u]: expected %.9g, got %.9g (tol %.3g)",
                 dt == SP_F32 ? "f32" : "bf16", batch, in, out, with_bias, relu, i, o, acc, got,
                 tol);
    }
  free(x), free(w), free(b), free(y), free(hx), free(hw), free(hb), free(hy);
}

static void test_linear(void **state) {
  (void)state;
  sp__bdevice *d = dev_open(0);
  sp__bstream *s = stream_new(d, 1);
  tu_rng r = {tu_seed()};
  for (unsigned dt = 0; dt < 2; dt++) {
    linear_case(s, &r, (sp_dtype)dt, 1, 1, 1, 1, 0);
    linear_case(s, &r, (sp_dtype)dt, 64, 512, 256, 1, 1);
    for (unsigned i = 0; i < tu_scale(40); i++)
      linear_case(s, &r, (sp_dtype)dt, 1 + (unsigned)tu_rng_below(&r, 9),
                  1 + (unsigned)tu_rng_below(&r, 130), 1 + (unsigned)tu_rng_below(&r, 70),
                  (int)tu_rng_below(&r, 2), (int)tu_rng_below(&r, 2));
  }
  /* bad ops are rejected at submission */
  float v = 0;
  sp__linear bad = {SP_F32, 0, 1, 1, &v, &v, NULL, &v, false};
  SP_CHECK_STATUS(B->linear_async(s, &bad), SP_ERR_INVALID_ARGUMENT);
  bad.batch = 1;
  bad.x = NULL;
  SP_CHECK_STATUS(B->linear_async(s, &bad), SP_ERR_INVALID_ARGUMENT);
  bad.x = &v;
  bad.dtype = (sp_dtype)7;
  SP_CHECK_STATUS(B->linear_async(s, &bad), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->linear_async(s, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(B->stream_query(s));
  B->stream_destroy(s);
  B->device_close(d);
}

/* A bf16 Linear whose scratch cannot be allocated reports SP_ERR_HOST_MEMORY at the next sync,
 * once. The scratch comes through the host-allocation hook, which this test makes fail. */
static atomic_int fail_big_mallocs;
static void *hook_malloc(void *u, size_t n) {
  (void)u;
  return atomic_load(&fail_big_mallocs) && n > (1u << 20) ? NULL : malloc(n);
}
static void *hook_calloc(void *u, size_t c, size_t n) {
  (void)u;
  return calloc(c, n);
}
static void hook_free(void *u, void *p) {
  (void)u;
  free(p);
}

static void test_linear_async_error(void **state) {
  (void)state;
  sp_host_allocator hooks = {hook_malloc, hook_calloc, hook_free, NULL};
  sp_host_allocator_set(&hooks);
  sp__bdevice *d = dev_open(0);
  sp__bstream *s = stream_new(d, 1);
  enum { IN = 1024, OUT = 512 };
  uint16_t *x = calloc(IN, 2), *w = calloc((size_t)IN * OUT, 2), *y = calloc(OUT, 2);
  sp__linear op = {SP_BF16, 1, IN, OUT, x, w, NULL, y, false};
  atomic_store(&fail_big_mallocs, 1);
  SP_CHECK_OK(B->linear_async(s, &op));
  SP_CHECK_STATUS(B->stream_sync(s), SP_ERR_HOST_MEMORY);
  if (!strstr(sp_last_error(), "scratch")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_OK(B->stream_sync(s)); /* reported once */
  atomic_store(&fail_big_mallocs, 0);
  SP_CHECK_OK(B->linear_async(s, &op));
  SP_CHECK_OK(B->stream_sync(s));
  B->stream_destroy(s);
  B->device_close(d);
  sp_host_allocator_set(NULL);
  free(x), free(w), free(y);
}

/* Reference f32 -> bf16 by a different method: pick the nearer of the two neighbours in double,
 * ties to the even one. */
static uint16_t ref_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
  uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
  if ((u & 0xffff) == 0) return lo;
  double dl = fabs((double)f - (double)sp__bf16_to_f32(lo));
  double dh = isinf(sp__bf16_to_f32(hi)) && !isinf(f)
                  ? fabs((double)f - ldexp(1.0, 128) * (f < 0 ? -1 : 1))
                  : fabs((double)f - (double)sp__bf16_to_f32(hi));
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo & 1) ? hi : lo;
}

static void test_convert(void **state) {
  (void)state;
  sp__bdevice *d = dev_open(0);
  sp__bstream *s = stream_new(d, 1);
  /* every bf16 pattern round-trips through f32 (NaNs stay NaNs with their sign) */
  enum { ALL = 65536 };
  uint16_t *h = malloc(ALL * 2), *h2 = malloc(ALL * 2);
  float *f = malloc(ALL * 4);
  for (unsigned i = 0; i < ALL; i++) h[i] = (uint16_t)i;
  SP_CHECK_OK(B->convert_async(s, f, SP_F32, h, SP_BF16, ALL));
  SP_CHECK_OK(B->convert_async(s, h2, SP_BF16, f, SP_F32, ALL));
  SP_CHECK_OK(B->stream_sync(s));
  for (unsigned i = 0; i < ALL; i++) {
    int nan = (i & 0x7fff) > 0x7f80;
    if (nan ? !((h2[i] & 0x7fff) > 0x7f80 && (h2[i] & 0x8000) == (i & 0x8000)) : h2[i] != i)
      fail_msg("bf16 0x%04x round-tripped to 0x%04x", i, h2[i]);
  }
  /* named rounding cases */
  struct { uint32_t in; uint16_t want; } cases[] = {
      {0x3f808000u, 0x3f80}, /* 1 + 2^-8: tie, down to even          */
      {0x3f818000u, 0x3f82}, /* 1 + 3*2^-8: tie, up to even          */
      {0x3f808001u, 0x3f81}, /* just above the tie: up               */
      {0x3f807fffu, 0x3f80}, /* just below: down                     */
      {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to +inf               */
      {0xff7fffffu, 0xff80}, /* -FLT_MAX to -inf                     */
      {0x7f800000u, 0x7f80}, /* +inf                                 */
      {0x80000000u, 0x8000}, /* -0                                   */
      {0x00000001u, 0x0000}, /* smallest subnormal: down to 0        */
      {0x00008000u, 0x0000}, /* subnormal tie: even (0)              */
      {0x00018000u, 0x0002}, /* subnormal tie: even (2)              */
      {0x7fc00001u, 0x7fc0}, /* quiet NaN                            */
      {0x7f800001u, 0x7fc0}, /* signalling NaN stays a (quiet) NaN   */
      {0xffc00000u, 0xffc0}, /* negative NaN keeps its sign          */
  };
  enum { NC = sizeof(cases) / sizeof(cases[0]) };
  float cf[NC];
  uint16_t ch[NC];
  for (unsigned i = 0; i < NC; i++) memcpy(&cf[i], &cases[i].in, 4);
  SP_CHECK_OK(B->convert_async(s, ch, SP_BF16, cf, SP_F32, NC));
  SP_CHECK_OK(B->stream_sync(s));
  for (unsigned i = 0; i < NC; i++)
    if (ch[i] != cases[i].want)
      fail_msg("f32 0x%08x -> bf16: expected 0x%04x, got 0x%04x", cases[i].in, cases[i].want,
               ch[i]);
  /* random bit patterns against the reference */
  tu_rng r = {tu_seed()};
  for (unsigned i = 0; i < ALL; i++) {
    uint32_t u = (uint32_t)tu_rng_next(&r);
    memcpy(&f[i], &u, 4);
  }
  SP_CHECK_OK(B->convert_async(s, h, SP_BF16, f, SP_F32, ALL));
  SP_CHECK_OK(B->stream_sync(s));
  for (unsigned i = 0; i < ALL; i++) {
    uint16_t want = ref_bf16(f[i]);
    if (h[i] != want) {
      uint32_t u;
      memcpy(&u, &f[i], 4);
      fail_msg("f32 0x%08x -> bf16: expected 0x%04x, got 0x%04x", u, want, h[i]);
    }
  }
  SP_CHECK_STATUS(B->convert_async(s, NULL, SP_BF16, f, SP_F32, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->convert_async(s, h, (sp_dtype)9, f, SP_F32, 4), SP_ERR_INVALID_ARGUMENT);
  B->stream_destroy(s);
  B->device_close(d);
  free(h), free(h2), free(f);
}

/* ---- environment and several devices ------------------------------------------------------- */

static void expect_env_rejected(const char *var, const char *value, int at_count) {
  setenv(var, value, 1);
  int count = -1;
  sp__bdevice *d = NULL;
  sp_status st = at_count ? B->device_count(&count) : B->device_open(0, &d);
  if (st != SP_ERR_INVALID_ARGUMENT || !strstr(sp_last_error(), var))
    fail_msg("%s=\"%s\": expected SP_ERR_INVALID_ARGUMENT naming it, got %d: %s", var, value,
             (int)st, sp_last_error());
  assert_int_equal(count, -1);
  assert_null(d);
  unsetenv(var);
}

static void test_env_values(void **state) {
  (void)state;
  const char *bad_devices[] = {"0", "17", "abc", "2x", "-1", " 2", "99999999999999999999999"};
  for (unsigned i = 0; i < sizeof(bad_devices) / sizeof(*bad_devices); i++) {
    expect_env_rejected("STREAMPOOL_HOST_DEVICES", bad_devices[i], 1);
    expect_env_rejected("STREAMPOOL_HOST_DEVICES", bad_devices[i], 0);
  }
  const char *bad_jitter[] = {"-1", "abc", "2000000", "5us", "1.5"};
  for (unsigned i = 0; i < sizeof(bad_jitter) / sizeof(*bad_jitter); i++)
    expect_env_rejected("STREAMPOOL_HOST_JITTER_US", bad_jitter[i], 0);
  expect_env_rejected("STREAMPOOL_HOST_JITTER_SEED", "x", 0);
  expect_env_rejected("STREAMPOOL_HOST_JITTER_SEED", "-3", 0);
  const char *bad_mem[] = {"0", "12Q", "1.5G", "G", "-1G", "99999999999T", "4KX"};
  for (unsigned i = 0; i < sizeof(bad_mem) / sizeof(*bad_mem); i++)
    expect_env_rejected("STREAMPOOL_HOST_MEMORY", bad_mem[i], 0);
  struct { const char *text; size_t bytes; } good_mem[] = {
      {"4096", 4096}, {"4K", 4096}, {"4k", 4096}, {"3M", 3u << 20}, {"2G", (size_t)2 << 30},
      {"2GiB", (size_t)2 << 30}, {"5KB", 5120}};
  for (unsigned i = 0; i < sizeof(good_mem) / sizeof(*good_mem); i++) {
    setenv("STREAMPOOL_HOST_MEMORY", good_mem[i].text, 1);
    sp__bdevice *d = dev_open(0);
    size_t f = 0, t = 0;
    SP_CHECK_OK(B->memory_info(d, &f, &t));
    if (t != good_mem[i].bytes)
      fail_msg("STREAMPOOL_HOST_MEMORY=%s: expected %zu, got %zu", good_mem[i].text,
               good_mem[i].bytes, t);
    B->device_close(d);
  }
  expect_env_rejected("STREAMPOOL_HOST_MEMORY", "", 0); /* empty: an error, as for every variable */
  sp__bdevice *d = dev_open(0); /* unset: the default (physical RAM) */
  size_t f = 0, t = 0;
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  assert_true(t > ((size_t)64 << 20));
  const char *name = B->device_name(d);
  if (!name || strncmp(name, "host (", 6) != 0) fail_msg("device name: %s", name ? name : "NULL");
  B->device_close(d);
  int count = 0;
  SP_CHECK_OK(B->device_count(&count));
  assert_int_equal(count, 1);
  SP_CHECK_STATUS(B->device_open(1, &d), SP_ERR_NO_DEVICE);
  SP_CHECK_STATUS(B->device_open(-1, &d), SP_ERR_NO_DEVICE);
}

/* Three host devices at once: separate capacities, streams, and a cross-device event wait. */
static void test_several_devices(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_DEVICES", "3", 1);
  setenv("STREAMPOOL_HOST_MEMORY", "64K", 1);
  setenv("STREAMPOOL_HOST_JITTER_US", "30", 1);
  int count = 0;
  SP_CHECK_OK(B->device_count(&count));
  assert_int_equal(count, 3);
  sp__bdevice *d[3];
  sp__bstream *s[3];
  void *mem[3];
  for (int i = 0; i < 3; i++) {
    d[i] = dev_open(i);
    s[i] = stream_new(d[i], 1);
    SP_CHECK_OK(B->mem_alloc(d[i], 60 << 10, &mem[i])); /* each has its own 64 KB */
  }
  sp__bdevice *none = NULL;
  SP_CHECK_STATUS(B->device_open(3, &none), SP_ERR_NO_DEVICE);
  SP_CHECK_STATUS(B->mem_free(d[1], mem[0]), SP_ERR_INVALID_ARGUMENT); /* wrong device */
  /* chain: device 0 fills, device 1 copies after an event, device 2 copies after another */
  sp__bevent *e0 = event_new(d[0], 0), *e1 = event_new(d[1], SP_EVENT_TIMING);
  unsigned char *out = calloc(1, 4096);
  for (unsigned round = 1; round <= (unsigned)tu_scale(50); round++) {
    SP_CHECK_OK(B->memset_async(s[0], mem[0], (int)round, 4096));
    SP_CHECK_OK(B->event_record(e0, s[0]));
    SP_CHECK_OK(B->stream_wait_event(s[1], e0));
    SP_CHECK_OK(B->memcpy_async(s[1], mem[1], mem[0], 4096));
    SP_CHECK_OK(B->event_record(e1, s[1]));
    SP_CHECK_OK(B->stream_wait_event(s[2], e1));
    SP_CHECK_OK(B->memcpy_async(s[2], out, mem[1], 4096));
    SP_CHECK_OK(B->stream_sync(s[2]));
    for (unsigned i = 0; i < 4096; i++)
      if (out[i] != (unsigned char)round)
        fail_msg("round %u byte %u: expected %u, got %u", round, i, round, out[i]);
  }
  for (int i = 0; i < 3; i++) SP_CHECK_OK(B->stream_sync(s[i]));
  B->event_destroy(e0);
  B->event_destroy(e1);
  for (int i = 0; i < 3; i++) {
    SP_CHECK_OK(B->mem_free(d[i], mem[i]));
    B->stream_destroy(s[i]);
    B->device_close(d[i]);
  }
  free(out);
}

/* The table fills every slot and passes the core's validation. */
static void test_table(void **state) {
  (void)state;
  assert_int_equal(B->version, SP__BACKEND_VERSION);
  assert_string_equal(B->name, "host");
  assert_non_null(B->linear_async);
  assert_non_null(B->convert_async);
  assert_non_null(B->event_elapsed_ms);
  SP_CHECK_OK(sp__backend_validate(B));
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_table, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fifo_order_under_jitter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_host_func_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_query_sync_destroy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_event_query_sync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_event_wait_orders_data, setup, teardown),
      cmocka_unit_test_setup_teardown(test_event_rerecord_semantics, setup, teardown),
      cmocka_unit_test_setup_teardown(test_event_elapsed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_event_races, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_capacity, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_linear, setup, teardown),
      cmocka_unit_test_setup_teardown(test_linear_async_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_convert, setup, teardown),
      cmocka_unit_test_setup_teardown(test_env_values, setup, teardown),
      cmocka_unit_test_setup_teardown(test_several_devices, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
