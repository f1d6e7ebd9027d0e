/* The backend-table contract, run on every compiled backend table (host; cuda when compiled in
 * and a device exists, else "cuda: skipped: no CUDA device" and the host part runs).
 *
 * Goal: any backend behaves as backend.h says: each stream runs its commands in submission order
 * (also when several threads submit to one stream), query/sync tell the truth, destroy drains, an
 * event never recorded is complete, a cross-stream wait really orders work (checked through data;
 * on the host with jitter on), re-recording an event does not move waits already queued, timing
 * events measure and reject what they must, events survive concurrent record/query/wait/sync;
 * devices open and name themselves, segments are aligned and hold data, an impossible request is
 * SP_ERR_OUT_OF_MEMORY, decommitted pages give their memory back and hold data once committed
 * again; Linear matches a double reference (f32, bf16, f16) and f32<->bf16/f16 conversion
 * rounds to nearest even (where the backend has those optional slots).
 * Method: drive the table directly (no core: sp__backend_find gives the table) with a fresh
 * backend device per case. Streams are held with a gate host function (tu_gate) to create pending
 * work deterministically; STREAMPOOL_HOST_JITTER_US makes missing ordering show up as wrong bytes
 * on the host (other backends ignore it). Device memory is read back with memcpy_async, never
 * dereferenced. Every data check prints expected and actual values. Seeded by tu_seed(); sizes
 * shrink under ThreadSanitizer via tu_scale(). Host-only behaviour (argument validation,
 * capacity, environment, several host devices, Linear/convert against the host reference) stays
 * in tests/unit/internal/host_backend.c.
 * SP_CONFORMANCE_BACKEND and SP_REQUIRE_CUDA work as in conformance.h.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "core/dtype.h" /* sp__dtype_name */
#include "testutil.h"
#include "tu_backend.h"

static const sp__backend *B; /* the table the current case runs on */

/* Gates held while copies from pageable host memory are queued behind them open by a timer: a
 * driver may stage such a copy synchronously (CUDA may wait for the stream first), which would
 * otherwise wait for a gate that only the blocked submitting thread can open. */
enum { GATE_TIMER_MS = 30 };

/* ---- helpers ------------------------------------------------------------------------------- */

/* Copies n bytes of device memory at src to host on s and waits. */
static void download(sp__bstream *s, void *host, const void *src, size_t n) {
  SP_CHECK_OK(B->memcpy_async(s, host, src, n));
  SP_CHECK_OK(B->stream_sync(s));
}

/* A flag a host function sets (read by the test thread with atomics). */
static void flag_fn(void *arg) { atomic_store((atomic_int *)arg, 1); }

/* ---- FIFO order ----------------------------------------------------------------------------- */

/* Random memset/memcpy commands on one stream under jitter; the final buffer must equal the same
 * commands applied in order on the host. Also forces the ring to grow with a wrapped head. */
static void test_fifo_order_under_jitter(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "20", 1);
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  enum { N = 4096 };
  unsigned char *dev_buf = NULL, *src = malloc(N * 8), ref[N];
  SP_CHECK_OK(B->mem_alloc(d, N, (void **)&dev_buf));
  tu_rng r = {tu_seed()};
  for (size_t i = 0; i < N * 8; i++) src[i] = (unsigned char)tu_rng_next(&r);
  memset(ref, 0, N);
  SP_CHECK_OK(B->memset_async(s, dev_buf, 0, N));
  tu_gate g;
  tu_gate_init(&g, GATE_TIMER_MS);
  size_t cmds = tu_scale(3000);
  for (size_t i = 0; i < cmds; i++) {
    if (i == 10) SP_CHECK_OK(B->host_func(s, tu_gate_fn, &g)); /* host: the ring grows, wrapped */
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
  tu_gate_open(&g);
  SP_CHECK_OK(B->stream_sync(s));
  SP_CHECK_OK(B->stream_query(s));
  unsigned char got[N];
  download(s, got, dev_buf, N);
  for (size_t i = 0; i < N; i++)
    if (got[i] != ref[i]) fail_msg("byte %zu: expected %u, got %u", i, ref[i], got[i]);
  SP_CHECK_OK(B->mem_free(d, dev_buf));
  B->stream_destroy(s);
  B->device_close(d);
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
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 2);
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
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 0);
  SP_CHECK_OK(B->stream_query(s)); /* fresh: idle */
  SP_CHECK_OK(B->stream_sync(s));
  tu_gate g;
  tu_gate_init(&g, 0);
  atomic_int ran = 0;
  SP_CHECK_OK(B->host_func(s, tu_gate_fn, &g));
  SP_CHECK_OK(B->host_func(s, flag_fn, &ran));
  SP_CHECK_STATUS(B->stream_query(s), SP_ERR_NOT_READY);
  tu_sleep_us(2000);
  assert_int_equal(atomic_load(&ran), 0);
  SP_CHECK_STATUS(B->stream_query(s), SP_ERR_NOT_READY);
  tu_gate_open(&g);
  SP_CHECK_OK(B->stream_sync(s));
  assert_int_equal(atomic_load(&ran), 1);
  SP_CHECK_OK(B->stream_query(s));

  /* destroy drains: every queued copy has landed when it returns (read back on stream s). */
  enum { N = 1 << 16 };
  unsigned char *a = malloc(N), *b = calloc(1, N), *dbuf = NULL;
  SP_CHECK_OK(B->mem_alloc(d, N, (void **)&dbuf));
  memset(a, 0x5a, N);
  sp__bstream *s2 = tu_be_stream(B, d, 3);
  tu_gate g2;
  tu_gate_init(&g2, GATE_TIMER_MS);
  SP_CHECK_OK(B->host_func(s2, tu_gate_fn, &g2));
  for (size_t i = 0; i < N; i += 256) SP_CHECK_OK(B->memcpy_async(s2, dbuf + i, a + i, 256));
  tu_gate_open(&g2);
  B->stream_destroy(s2);
  download(s, b, dbuf, N);
  for (size_t i = 0; i < N; i++)
    if (b[i] != 0x5a) fail_msg("byte %zu after destroy: expected 0x5a, got 0x%02x", i, b[i]);
  /* destroy at every phase of the worker (running, polling for work, asleep) never hangs */
  tu_rng r = {tu_seed()};
  for (unsigned i = 0; i < tu_scale(300); i++) {
    sp__bstream *s3 = tu_be_stream(B, d, 4);
    SP_CHECK_OK(B->memset_async(s3, dbuf, 0x11, 64));
    tu_sleep_us((unsigned)tu_rng_below(&r, i % 3 == 0 ? 60 : 25));
    B->stream_destroy(s3);
    download(s, b, dbuf, 64);
    if (b[0] != 0x11) fail_msg("iteration %u: destroy returned before the memset ran", i);
    SP_CHECK_OK(B->memset_async(s, dbuf, 0, 64));
    SP_CHECK_OK(B->stream_sync(s)); /* the reset lands before the next stream's memset */
  }
  SP_CHECK_OK(B->mem_free(d, dbuf));
  B->stream_destroy(s);
  B->device_close(d);
  free(a);
  free(b);
}

/* ---- events --------------------------------------------------------------------------------- */

static void test_event_query_sync(void **state) {
  (void)state;
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1), *t = tu_be_stream(B, d, 2);
  for (unsigned flags = 0; flags <= SP_EVENT_TIMING; flags++) {
    sp__bevent *e = tu_be_event(B, d, flags);
    SP_CHECK_OK(B->event_query(e)); /* never recorded: complete */
    SP_CHECK_OK(B->event_sync(e));
    SP_CHECK_OK(B->stream_wait_event(t, e));
    SP_CHECK_OK(B->stream_sync(t));
    tu_gate g;
    tu_gate_init(&g, 0);
    SP_CHECK_OK(B->host_func(s, tu_gate_fn, &g));
    SP_CHECK_OK(B->event_record(e, s));
    SP_CHECK_STATUS(B->event_query(e), SP_ERR_NOT_READY);
    tu_gate_open(&g);
    SP_CHECK_OK(B->event_sync(e));
    SP_CHECK_OK(B->event_query(e));
    /* recorded on an idle stream: done at once */
    SP_CHECK_OK(B->event_record(e, s));
    SP_CHECK_OK(B->event_sync(e));
    SP_CHECK_OK(B->event_query(e));
    B->event_destroy(e);
  }
  B->stream_destroy(s);
  B->stream_destroy(t);
  B->device_close(d);
}

/* A waits for B on the device: B's later work must not run before A's recorded work, checked
 * through data, many rounds under jitter, for both event kinds. */
static void test_event_wait_orders_data(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "40", 1);
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *prod = tu_be_stream(B, d, 1), *cons = tu_be_stream(B, d, 2);
  enum { BYTES = 512 };
  size_t rounds = tu_scale(400);
  unsigned char *bufs = NULL, *outs = malloc(rounds * BYTES);
  SP_CHECK_OK(B->mem_alloc(d, rounds * BYTES, (void **)&bufs));
  SP_CHECK_OK(B->memset_async(prod, bufs, 0, rounds * BYTES));
  SP_CHECK_OK(B->stream_sync(prod));
  sp__bevent *ev[2] = {tu_be_event(B, d, 0), tu_be_event(B, d, SP_EVENT_TIMING)};
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
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *a = tu_be_stream(B, d, 1), *b = tu_be_stream(B, d, 2);
  for (unsigned flags = 0; flags <= SP_EVENT_TIMING; flags++) {
    sp__bevent *e = tu_be_event(B, d, flags);
    tu_gate g1, g2;
    tu_gate_init(&g1, 0);
    tu_gate_init(&g2, 0);
    atomic_int ran = 0;
    SP_CHECK_OK(B->host_func(a, tu_gate_fn, &g1));
    SP_CHECK_OK(B->event_record(e, a));      /* mark 1: after g1 */
    SP_CHECK_OK(B->stream_wait_event(b, e)); /* b waits for mark 1 */
    SP_CHECK_OK(B->host_func(b, flag_fn, &ran));
    SP_CHECK_OK(B->host_func(a, tu_gate_fn, &g2));
    SP_CHECK_OK(B->event_record(e, a)); /* mark 2: after g2 */
    tu_sleep_us(3000);
    if (atomic_load(&ran)) fail_msg("b ran past its wait before the recorded work finished");
    SP_CHECK_STATUS(B->stream_query(b), SP_ERR_NOT_READY);
    tu_gate_open(&g1);
    SP_CHECK_OK(B->stream_sync(b)); /* would hang if the wait had moved to mark 2 */
    assert_int_equal(atomic_load(&ran), 1);
    /* Mark 2 pending: only where host functions block their own stream alone. CUDA runs host
     * functions on one driver thread, so g2 (a timed gate there) had to open for b's flag_fn to
     * run, and mark 2 may be done by now. */
    if (!strcmp(B->name, "host")) SP_CHECK_STATUS(B->event_query(e), SP_ERR_NOT_READY);
    tu_gate_open(&g2);
    SP_CHECK_OK(B->stream_sync(a));
    SP_CHECK_OK(B->event_query(e));
    B->event_destroy(e);
  }
  B->stream_destroy(a);
  B->stream_destroy(b);
  B->device_close(d);
}

static void sleep_fn(void *arg) { tu_sleep_us(*(unsigned *)arg); }

static void test_event_elapsed(void **state) {
  (void)state;
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  sp__bevent *t0 = tu_be_event(B, d, SP_EVENT_TIMING), *t1 = tu_be_event(B, d, SP_EVENT_TIMING);
  sp__bevent *plain = tu_be_event(B, d, 0);
  float ms = -1.0f;
  SP_CHECK_STATUS(B->event_elapsed_ms(t0, t1, &ms), SP_ERR_INVALID_ARGUMENT); /* never recorded */
  SP_CHECK_OK(B->event_record(plain, s));
  SP_CHECK_STATUS(B->event_elapsed_ms(plain, t1, &ms), SP_ERR_INVALID_ARGUMENT);
  tu_gate g;
  tu_gate_init(&g, 0);
  unsigned us = 20000;
  SP_CHECK_OK(B->host_func(s, tu_gate_fn, &g));
  SP_CHECK_OK(B->event_record(t0, s));
  SP_CHECK_OK(B->host_func(s, sleep_fn, &us));
  SP_CHECK_OK(B->event_record(t1, s));
  SP_CHECK_STATUS(B->event_elapsed_ms(t0, t1, &ms), SP_ERR_NOT_READY);
  assert_true(ms == -1.0f); /* out-param untouched on failure */
  tu_gate_open(&g);
  SP_CHECK_OK(B->event_sync(t1));
  SP_CHECK_OK(B->event_elapsed_ms(t0, t1, &ms));
  if (ms < 19.0f || ms > 2000.0f) fail_msg("elapsed: expected about 20 ms, got %f", (double)ms);
  if (!strcmp(B->name, "host")) { /* reversed events give a negative time: the host's rule */
    float back = 0;
    SP_CHECK_OK(B->event_elapsed_ms(t1, t0, &back));
    if (back > -19.0f) fail_msg("reverse elapsed: expected about -20 ms, got %f", (double)back);
  }
  /* a timing event destroyed while its marker is queued: the marker must not touch freed memory */
  tu_gate g2;
  tu_gate_init(&g2, 0);
  sp__bevent *doomed = tu_be_event(B, d, SP_EVENT_TIMING);
  SP_CHECK_OK(B->host_func(s, tu_gate_fn, &g2));
  SP_CHECK_OK(B->event_record(doomed, s));
  B->event_destroy(doomed);
  tu_gate_open(&g2);
  SP_CHECK_OK(B->stream_sync(s));
  B->event_destroy(t0);
  B->event_destroy(t1);
  B->event_destroy(plain);
  B->stream_destroy(s);
  B->device_close(d);
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
  sp__bdevice *d = tu_be_device(B, 0);
  race_ctx c[4];
  pthread_t tid[4];
  unsigned char *buf = NULL;
  SP_CHECK_OK(B->mem_alloc(d, 256, (void **)&buf));
  sp__bstream *streams[4];
  for (unsigned i = 0; i < 4; i++) streams[i] = tu_be_stream(B, d, i + 1);
  sp__bevent *events[2] = {tu_be_event(B, d, 0), tu_be_event(B, d, SP_EVENT_TIMING)};
  for (unsigned i = 0; i < 4; i++) {
    c[i] = (race_ctx){{streams[0], streams[1], streams[2], streams[3]},
                      {events[0], events[1]},
                      i,
                      (unsigned)tu_scale(2000),
                      buf};
    pthread_create(&tid[i], NULL, race_worker, &c[i]);
  }
  for (unsigned i = 0; i < 4; i++) pthread_join(tid[i], NULL);
  for (unsigned i = 0; i < 4; i++) SP_CHECK_OK(B->stream_sync(streams[i]));
  assert_int_equal(tu_failures(), 0);
  unsigned want = (unsigned)((tu_scale(2000) - 1) & 0xff);
  unsigned char got[256];
  download(streams[0], got, buf, 256);
  for (unsigned i = 0; i < 256; i++)
    if (got[i] != want) fail_msg("byte %u: expected %u, got %u", i, want, got[i]);
  B->event_destroy(events[0]);
  B->event_destroy(events[1]);
  for (unsigned i = 0; i < 4; i++) B->stream_destroy(streams[i]);
  SP_CHECK_OK(B->mem_free(d, buf));
  B->device_close(d);
}

/* ---- the table, devices, memory -------------------------------------------------------------- */

/* The table passes validation, every device index in range opens and names itself, one past the
 * end (and -1) is SP_ERR_NO_DEVICE, and memory_info is consistent. */
static void test_table_devices(void **state) {
  (void)state;
  assert_int_equal(B->version, SP__BACKEND_VERSION);
  assert_non_null(B->name);
  SP_CHECK_OK(sp__backend_validate(B));
  int count = 0;
  SP_CHECK_OK(B->device_count(&count));
  if (count < 1) fail_msg("%s: %d devices; the runner lists backends with one", B->name, count);
  for (int i = 0; i < count; i++) {
    sp__bdevice *d = tu_be_device(B, i);
    const char *name = B->device_name(d);
    if (!name || !name[0]) fail_msg("%s device %d: empty name", B->name, i);
    size_t f = 0, t = 0;
    SP_CHECK_OK(B->memory_info(d, &f, &t));
    if (t == 0 || f > t) fail_msg("%s device %d: free %zu of total %zu", B->name, i, f, t);
    B->device_close(d);
  }
  sp__bdevice *none = NULL;
  SP_CHECK_STATUS(B->device_open(count, &none), SP_ERR_NO_DEVICE);
  SP_CHECK_STATUS(B->device_open(-1, &none), SP_ERR_NO_DEVICE);
  assert_null(none);
}

/* Segments of assorted sizes are distinct, 256-byte aligned, hold what is written to them, and
 * an impossible request is SP_ERR_OUT_OF_MEMORY (never another status); mem_free(NULL) is a
 * no-op. */
static void test_memory_segments(void **state) {
  (void)state;
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  enum { K = 6 };
  const size_t sizes[K] = {1, 255, 4096, 65537, 1u << 20, 3u << 20};
  unsigned char *p[K] = {NULL}, *host = malloc(3u << 20), *back = malloc(3u << 20);
  for (unsigned k = 0; k < K; k++) {
    SP_CHECK_OK(B->mem_alloc(d, sizes[k], (void **)&p[k]));
    if ((uintptr_t)p[k] % 256) fail_msg("%zu bytes at %p: not 256-byte aligned", sizes[k], p[k]);
    for (size_t i = 0; i < sizes[k]; i++) host[i] = (unsigned char)(i * 31 + k);
    SP_CHECK_OK(B->memcpy_async(s, p[k], host, sizes[k]));
    SP_CHECK_OK(B->stream_sync(s)); /* host is refilled for the next segment */
  }
  for (unsigned k = 0; k < K; k++) {
    download(s, back, p[k], sizes[k]);
    for (size_t i = 0; i < sizes[k]; i++)
      if (back[i] != (unsigned char)(i * 31 + k)) {
        fail_msg("segment %u (%zu bytes) byte %zu: expected %u, got %u", k, sizes[k], i,
                 (unsigned char)(i * 31 + k), back[i]);
        break;
      }
  }
  size_t f = 0, t = 0;
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  void *huge = NULL;
  if (t < SIZE_MAX / 4) SP_CHECK_STATUS(B->mem_alloc(d, t * 2, &huge), SP_ERR_OUT_OF_MEMORY);
  assert_null(huge);
  SP_CHECK_OK(B->mem_free(d, NULL));
  for (unsigned k = 0; k < K; k++) SP_CHECK_OK(B->mem_free(d, p[k]));
  B->stream_destroy(s);
  B->device_close(d);
  free(host);
  free(back);
}

/* Pages of a segment decommitted and committed again (optional slots): the pages around them keep
 * their data, the device's free memory grows by at least the pages' bytes and shrinks back, and
 * the committed pages hold what is written to them. */
static void test_memory_pages(void **state) {
  (void)state;
  if (!B->mem_decommit) {
    printf("[conf_backend] %s: memory_pages: not run: the backend has no mem_decommit slot\n",
           B->name);
    return;
  }
  enum { PAGES = 4 };
  const size_t page = SP__MEM_PAGE, bytes = PAGES * SP__MEM_PAGE;
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  unsigned char *p = NULL, *host = malloc(bytes), *back = malloc(bytes);
  SP_CHECK_OK(B->mem_alloc(d, bytes, (void **)&p));
  for (size_t i = 0; i < bytes; i++) host[i] = (unsigned char)(i * 7 + i / page);
  SP_CHECK_OK(B->memcpy_async(s, p, host, bytes));
  SP_CHECK_OK(B->stream_sync(s));
  /* Free memory is the whole device's, shared with other processes (ctest runs tests in
   * parallel: on the GPU machine another test freed 2 MiB between two readings), so a try whose
   * readings miss is repeated, decommit and commit again, up to 5 times before it counts. */
  size_t f0 = 0, f1 = 0, f2 = 0, t = 0;
  sp_status st = SP_OK;
  bool freed = false, taken = false;
  for (int attempt = 0; attempt < 5 && !(freed && taken); attempt++) {
    SP_CHECK_OK(B->memory_info(d, &f0, &t));
    st = B->mem_decommit(d, p, page, 2 * page); /* pages 1 and 2 */
    if (st != SP_OK) break;
    SP_CHECK_OK(B->memory_info(d, &f1, &t));
    SP_CHECK_OK(B->mem_commit(d, p, page, 2 * page));
    SP_CHECK_OK(B->memory_info(d, &f2, &t));
    freed = f1 >= f0 + 2 * page;
    taken = f2 + 2 * page <= f1;
  }
  if (st == SP_ERR_UNSUPPORTED) { /* allowed: the segment stays whole (checked unchanged) */
    printf("[conf_backend] %s: memory_pages: segments stay whole here: %s\n", B->name,
           sp_last_error());
    download(s, back, p, bytes);
    if (memcmp(back, host, bytes)) fail_msg("%s: an unsupported decommit changed data", B->name);
    SP_CHECK_OK(B->mem_free(d, p));
    B->stream_destroy(s);
    B->device_close(d);
    free(host);
    free(back);
    return;
  }
  SP_CHECK_OK(st);
  if (!freed) fail_msg("%s: free %zu -> %zu after decommitting 4 MiB", B->name, f0, f1);
  if (!taken) fail_msg("%s: free %zu -> %zu after committing 4 MiB", B->name, f1, f2);
  memset(host + page, 0x3c, 2 * page);
  SP_CHECK_OK(B->memcpy_async(s, p + page, host + page, 2 * page));
  download(s, back, p, bytes);
  for (size_t i = 0; i < bytes; i++)
    if (back[i] != host[i]) {
      fail_msg("%s: byte %zu (page %zu): expected %u, got %u", B->name, i, i / page, host[i],
               back[i]);
      break;
    }
  SP_CHECK_OK(B->mem_decommit(d, p, 3 * page, page)); /* freed with a page decommitted */
  SP_CHECK_OK(B->mem_free(d, p));
  B->stream_destroy(s);
  B->device_close(d);
  free(host);
  free(back);
}

/* ---- linear and convert (optional slots) ------------------------------------------------- */

static float rand_float(tu_rng *r) { return (float)((double)tu_rng_below(r, 2000001) / 1e6 - 1.0); }

/* A bf16 or f16 pattern's value by a different method than any backend's: the IEEE formula in
 * double (m significand bits after the point, exponent bias e). Not for NaN; infinity as HUGE_VAL.
 */
static double ref_widen16(uint16_t h, sp_dtype dt) {
  int m = dt == SP_BF16 ? 7 : 10, bias = dt == SP_BF16 ? 127 : 15;
  unsigned emax = dt == SP_BF16 ? 0xffu : 0x1fu, exp = (h & 0x7fffu) >> m,
           man = h & ((1u << m) - 1u);
  double v = exp == emax ? HUGE_VAL
             : exp == 0  ? ldexp((double)man, 1 - bias - m)
                         : ldexp((double)((1u << m) + man), (int)exp - bias - m);
  return (h & 0x8000u) ? -v : v;
}

/* f32 -> bf16 or f16 by a different method than any backend's: a binary search over the ordered
 * positive patterns for f's two neighbours, the nearer in double, ties to the even pattern; past
 * the largest finite value infinity counts as the next power of two, as IEEE rounding has it.
 * Not for NaN. */
static uint16_t ref_round16(float f, sp_dtype dt) {
  uint16_t sign = signbit(f) ? 0x8000u : 0, inf = dt == SP_BF16 ? 0x7f80u : 0x7c00u;
  double a = fabs((double)f), top = dt == SP_BF16 ? ldexp(1.0, 128) : 65536.0;
  if (a >= top) return sign | inf;
  uint16_t lo = 0, hi = inf; /* ref_widen16(lo) <= a < value(hi), value(inf) = top */
  while (hi - lo > 1) {
    uint16_t mid = (uint16_t)((lo + hi) / 2);
    if (ref_widen16(mid, dt) <= a) lo = mid;
    else hi = mid;
  }
  double dl = a - ref_widen16(lo, dt), dh = (hi == inf ? top : ref_widen16(hi, dt)) - a;
  uint16_t pick = dl < dh ? lo : dh < dl ? hi : (lo & 1u) ? hi : lo;
  return sign | pick;
}

static int is_nan16(uint16_t h, sp_dtype dt) {
  return (h & 0x7fffu) > (dt == SP_BF16 ? 0x7f80u : 0x7c00u);
}

static void *upload(sp__bdevice *d, sp__bstream *s, const void *host, size_t bytes) {
  void *p = NULL;
  SP_CHECK_OK(B->mem_alloc(d, bytes, &p));
  SP_CHECK_OK(B->memcpy_async(s, p, host, bytes));
  return p;
}

/* One random Linear on the device against a double reference (bf16, f16: on rounded inputs,
 * converted on the device). Tolerances as conf_matmul.c: f32 5e-5 of sum|x*w| + |b|, bf16 1e-2
 * of the result plus 1e-3 of that sum, plus 4e-3 of |x.w| (the product without the bias):
 * cuBLASLt's bf16 BIAS epilogue may round the product to bf16 before adding the bias, as
 * PyTorch's bf16 addmm does, which costs up to half an ulp of the product (seen on the H200: a
 * 1x1x1 case whose bias cancels most of the product, off by 2.5 ulp of the result). f16 keeps
 * three more bits: the same terms at an eighth (1.25e-3, 1.25e-4, 5e-4). */
static void linear_case_io(sp__bdevice *d, sp__bstream *s, tu_rng *r, sp_dtype dt, unsigned batch,
                           unsigned in, unsigned out, int with_bias, sp__act act, unsigned io) {
  size_t nx = (size_t)batch * in, nw = (size_t)out * in, ny = (size_t)batch * out;
  size_t el = dt == SP_F32 ? 4 : 2;
  float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(out * 4), *y = malloc(ny * 4);
  float *xd = malloc(nx * 4); /* x as the device gets it: not rounded (convert or io rounds it) */
  for (size_t i = 0; i < nx; i++) x[i] = xd[i] = rand_float(r) * 3.0f;
  for (size_t i = 0; i < nw; i++) w[i] = rand_float(r);
  for (size_t i = 0; i < out; i++) b[i] = rand_float(r);
  if (dt != SP_F32) { /* the reference sees exactly the rounded inputs */
    for (size_t i = 0; i < nx; i++) x[i] = (float)ref_widen16(ref_round16(x[i], dt), dt);
    for (size_t i = 0; i < nw; i++) w[i] = (float)ref_widen16(ref_round16(w[i], dt), dt);
    for (size_t i = 0; i < out; i++) b[i] = (float)ref_widen16(ref_round16(b[i], dt), dt);
  }
  float *fx = upload(d, s, xd, nx * 4), *fw = upload(d, s, w, nw * 4);
  float *fb = upload(d, s, b, out * 4);
  void *dx = fx, *dw = fw, *db = fb, *dy = NULL, *fy = NULL;
  SP_CHECK_OK(B->mem_alloc(d, ny * el, &dy));
  if (dt != SP_F32) {
    SP_CHECK_OK(B->mem_alloc(d, nx * 2, &dx));
    SP_CHECK_OK(B->mem_alloc(d, nw * 2, &dw));
    SP_CHECK_OK(B->mem_alloc(d, out * 2, &db));
    SP_CHECK_OK(B->mem_alloc(d, ny * 4, &fy));
    SP_CHECK_OK(B->convert_async(s, dx, dt, fx, SP_F32, nx));
    SP_CHECK_OK(B->convert_async(s, dw, dt, fw, SP_F32, nw));
    SP_CHECK_OK(B->convert_async(s, db, dt, fb, SP_F32, out));
  }
  sp__linear op = {dt,
                   batch,
                   in,
                   out,
                   (io & SP__LINEAR_X_F32) ? (void *)fx : dx,
                   dw,
                   with_bias ? db : NULL,
                   (io & SP__LINEAR_Y_F32) ? fy : dy,
                   act,
                   io};
  /* y starts as NaNs: a linear must write it, never read it (with or without a bias) */
  SP_CHECK_OK(B->memset_async(s, op.y, 0xFF, ny * ((io & SP__LINEAR_Y_F32) ? 4 : el)));
  SP_CHECK_OK(B->linear_async(s, &op));
  if (dt != SP_F32 && !(io & SP__LINEAR_Y_F32))
    SP_CHECK_OK(B->convert_async(s, fy, SP_F32, dy, dt, ny));
  download(s, y, dt != SP_F32 ? fy : dy, ny * 4);
  for (unsigned i = 0; i < batch; i++)
    for (unsigned o = 0; o < out; o++) {
      double prod = 0.0, scale = with_bias ? fabs(b[o]) : 0.0;
      for (unsigned k = 0; k < in; k++) {
        prod += (double)x[(size_t)i * in + k] * w[(size_t)o * in + k];
        scale += fabs((double)x[(size_t)i * in + k] * w[(size_t)o * in + k]);
      }
      double acc = tu_act_ref(act, prod + (with_bias ? b[o] : 0.0));
      double got = y[(size_t)i * out + o];
      double k16 = dt == SP_BF16 ? 1.0 : 0.125; /* f16: an eighth of bf16's terms */
      double tol = dt == SP_F32
                       ? 5e-5 * scale + 1e-7
                       : k16 * (1e-2 * (fabs(acc) + 1e-3 * scale) + 4e-3 * fabs(prod)) + 1e-6;
      if (!(fabs(got - acc) <= tol))
        fail_msg(
            "%s %s linear %ux%ux%u bias=%d act=%d io=%u y[%u,%u]: expected %.9g, got %.9g "
            "(tol %.3g)",
            B->name, sp__dtype_name(dt), batch, in, out, with_bias, (int)act, io, i, o, acc, got,
            tol);
      if (dt != SP_F32 && (float)ref_widen16(ref_round16((float)got, dt), dt) != (float)got)
        fail_msg("%s %s linear io=%u y[%u,%u] = %.9g is not a %s value", B->name,
                 sp__dtype_name(dt), io, i, o, got, sp__dtype_name(dt));
    }
  void *dev_bufs[] = {
      fx, fw, fb, dy, dt != SP_F32 ? dx : NULL, dt != SP_F32 ? dw : NULL, dt != SP_F32 ? db : NULL,
      fy};
  for (unsigned i = 0; i < sizeof(dev_bufs) / sizeof(dev_bufs[0]); i++)
    SP_CHECK_OK(B->mem_free(d, dev_bufs[i]));
  free(x), free(w), free(b), free(y), free(xd);
}

static void linear_case(sp__bdevice *d, sp__bstream *s, tu_rng *r, sp_dtype dt, unsigned batch,
                        unsigned in, unsigned out, int with_bias, sp__act act) {
  linear_case_io(d, s, r, dt, batch, in, out, with_bias, act, 0);
}

/* sp__linear.io (backend.h): f32 x and y beside 16-bit weights, up to the backend's
 * linear_f32_io_rows: every combination of the two flags on random shapes, against the same
 * reference (x rounded as read; y must hold dt values); one row more, or an unknown flag, is
 * SP_ERR_INVALID_ARGUMENT with nothing run. */
static void linear_io_cases(sp__bdevice *d, sp__bstream *s, tu_rng *r) {
  unsigned rows = B->linear_f32_io_rows ? B->linear_f32_io_rows(d) : 0;
  printf("[conf_backend] %s: linear with f32 io: up to %u rows\n", B->name, rows);
  for (unsigned dt = SP_BF16; dt <= SP_F16 && rows; dt++)
    for (unsigned i = 0; i < tu_scale(24); i++) {
      unsigned batch = 1 + (unsigned)tu_rng_below(r, rows < 8 ? rows : 8);
      linear_case_io(d, s, r, (sp_dtype)dt, batch, 1 + (unsigned)tu_rng_below(r, 300),
                     1 + (unsigned)tu_rng_below(r, 70), (int)tu_rng_below(r, 2),
                     (sp__act)tu_rng_below(r, SP__ACT_COUNT), 1 + (unsigned)tu_rng_below(r, 3));
    }
  float *buf = NULL;
  SP_CHECK_OK(B->mem_alloc(d, 4096, (void **)&buf));
  sp__linear bad = {SP_BF16,      rows + 1,        4, 4, buf, buf, NULL, buf + 256,
                    SP__ACT_NONE, SP__LINEAR_X_F32};
  if (rows < 64) assert_int_equal(B->linear_async(s, &bad), SP_ERR_INVALID_ARGUMENT);
  bad.batch = 1;
  bad.io = 1u << 2;
  assert_int_equal(B->linear_async(s, &bad), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(B->stream_sync(s));
  SP_CHECK_OK(B->mem_free(d, buf));
}

static void test_linear(void **state) {
  (void)state;
  if (!B->linear_async || !B->convert_async) {
    printf("[conf_backend] %s: linear: not run: the backend has no linear/convert slot\n", B->name);
    return;
  }
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  tu_rng r = {tu_seed()};
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++) {
    linear_case(d, s, &r, (sp_dtype)dt, 1, 1, 1, 1, SP__ACT_NONE);
    linear_case(d, s, &r, (sp_dtype)dt, 64, 512, 256, 1, SP__ACT_RELU);
    for (unsigned a = 0; a < SP__ACT_COUNT; a++) /* every activation, the encoder's shapes too */
      linear_case(d, s, &r, (sp_dtype)dt, 1 + 7 * (a % 2), 384, 1536 / (1 + 3 * (a % 2)), 1,
                  (sp__act)a);
    /* outputs larger than a backend's scratch (CUDA: 2 Mi f32 elements per stream, through which
     * bf16 with GELU/SiLU/Tanh runs): blocks of rows, and of columns when one row is larger */
    linear_case(d, s, &r, (sp_dtype)dt, 1400, 16, 1536, 1, SP__ACT_GELU_ERF);
    linear_case(d, s, &r, (sp_dtype)dt, 3, 2, 2100000, 1, SP__ACT_SILU);
    for (unsigned i = 0; i < tu_scale(40); i++)
      linear_case(d, s, &r, (sp_dtype)dt, 1 + (unsigned)tu_rng_below(&r, 9),
                  1 + (unsigned)tu_rng_below(&r, 130), 1 + (unsigned)tu_rng_below(&r, 70),
                  (int)tu_rng_below(&r, 2), (sp__act)tu_rng_below(&r, SP__ACT_COUNT));
  }
  linear_io_cases(d, s, &r);
  B->stream_destroy(s);
  B->device_close(d);
}

/* Converts n elements of host src on the device (upload, convert, download). */
static void convert_on_device(sp__bdevice *d, sp__bstream *s, void *dst, sp_dtype dt,
                              const void *src, sp_dtype st, size_t n) {
  size_t din = st == SP_F32 ? 4 : 2, dout = dt == SP_F32 ? 4 : 2;
  void *a = upload(d, s, src, n * din), *b = NULL;
  SP_CHECK_OK(B->mem_alloc(d, n * dout, &b));
  SP_CHECK_OK(B->convert_async(s, b, dt, a, st, n));
  download(s, dst, b, n * dout);
  SP_CHECK_OK(B->mem_free(d, a));
  SP_CHECK_OK(B->mem_free(d, b));
}

typedef struct round_case {
  uint32_t in; /* f32 bits */
  uint16_t want;
} round_case;

static const round_case bf16_cases[] = {
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
};

static const round_case f16_cases[] = {
    {0x3f801000u, 0x3c00}, /* 1 + 2^-11: tie, down to even                  */
    {0x3f803000u, 0x3c02}, /* 1 + 3*2^-11: tie, up to even                  */
    {0x3f801001u, 0x3c01}, /* just above the tie: up                        */
    {0x477fe000u, 0x7bff}, /* 65504, the largest finite                     */
    {0x477fefffu, 0x7bff}, /* just below 65520: down to 65504               */
    {0x477ff000u, 0x7c00}, /* 65520: the tie with 2^16 rounds to +inf       */
    {0xc77ff000u, 0xfc00}, /* -65520 to -inf                                */
    {0x7f7fffffu, 0x7c00}, /* FLT_MAX to +inf                               */
    {0x80000000u, 0x8000}, /* -0                                            */
    {0x33800000u, 0x0001}, /* 2^-24, the smallest subnormal                 */
    {0x33000000u, 0x0000}, /* 2^-25: tie, down to even (0)                  */
    {0x33000001u, 0x0001}, /* just above 2^-25: up                          */
    {0x33c00000u, 0x0002}, /* 3*2^-25: tie between 1 and 2 ulps: even (2)   */
    {0x387fe000u, 0x0400}, /* 2^-14 - 2^-25: tie, up into the normals       */
    {0x387fc000u, 0x03ff}, /* 2^-14 - 2^-24, the largest subnormal          */
    {0x38800000u, 0x0400}, /* 2^-14, the smallest normal                    */
    {0x00000001u, 0x0000}, /* f32's smallest subnormal: 0                   */
};

/* f32 <-> dt (bf16, f16): every dt pattern round-trips through f32 (NaN stays NaN), named rounding
 * cases (ties to even, overflow to infinity, subnormals) and random f32 patterns match the
 * reference. How a NaN's payload and sign come through is the backend's choice (the host's:
 * host_backend.c). */
static void convert_checks(sp__bdevice *d, sp__bstream *s, sp_dtype dt, const round_case *cases,
                           unsigned nc) {
  enum { ALL = 65536 };
  const char *dn = sp__dtype_name(dt);
  uint16_t *h = malloc(ALL * 2), *h2 = malloc(ALL * 2);
  float *f = malloc(ALL * 4);
  for (unsigned i = 0; i < ALL; i++) h[i] = (uint16_t)i;
  convert_on_device(d, s, f, SP_F32, h, dt, ALL);
  for (unsigned i = 0; i < ALL; i++) {
    double want = ref_widen16((uint16_t)i, dt);
    if (is_nan16((uint16_t)i, dt) ? !isnan(f[i]) : (double)f[i] != want)
      fail_msg("%s: %s 0x%04x -> f32: expected %.9g, got %.9g", B->name, dn, i, want, f[i]);
  }
  convert_on_device(d, s, h2, dt, f, SP_F32, ALL);
  for (unsigned i = 0; i < ALL; i++)
    if (is_nan16((uint16_t)i, dt) ? !is_nan16(h2[i], dt) : h2[i] != i)
      fail_msg("%s: %s 0x%04x round-tripped to 0x%04x", B->name, dn, i, h2[i]);
  float cf[24];
  uint16_t ch[24];
  assert_true(nc <= 24);
  for (unsigned i = 0; i < nc; i++) memcpy(&cf[i], &cases[i].in, 4);
  convert_on_device(d, s, ch, dt, cf, SP_F32, nc);
  for (unsigned i = 0; i < nc; i++) {
    if (ch[i] != cases[i].want || ref_round16(cf[i], dt) != cases[i].want)
      fail_msg("%s: f32 0x%08x -> %s: expected 0x%04x, got 0x%04x (reference 0x%04x)", B->name,
               cases[i].in, dn, cases[i].want, ch[i], ref_round16(cf[i], dt));
  }
  tu_rng r = {tu_seed()};
  for (unsigned i = 0; i < ALL; i++) {
    uint32_t u = (uint32_t)tu_rng_next(&r);
    if (dt == SP_F16 && (i & 1)) /* half of them in f16's range, where its rounding happens */
      u = (u & 0x80000000u) | (0x33000000u + (u & 0x7fffffu) + ((u >> 23) % 42u) * 0x800000u);
    memcpy(&f[i], &u, 4);
  }
  convert_on_device(d, s, h, dt, f, SP_F32, ALL);
  for (unsigned i = 0; i < ALL; i++) {
    int nan = isnan(f[i]);
    uint16_t want = nan ? 0 : ref_round16(f[i], dt);
    if (nan ? !is_nan16(h[i], dt) : h[i] != want) {
      uint32_t u;
      memcpy(&u, &f[i], 4);
      fail_msg("%s: f32 0x%08x -> %s: expected %s0x%04x, got 0x%04x", B->name, u, dn,
               nan ? "a NaN, not " : "", want, h[i]);
    }
  }
  free(h), free(h2), free(f);
}

static void test_convert(void **state) {
  (void)state;
  if (!B->convert_async) {
    printf("[conf_backend] %s: convert: not run: the backend has no convert slot\n", B->name);
    return;
  }
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  convert_checks(d, s, SP_BF16, bf16_cases, sizeof(bf16_cases) / sizeof(bf16_cases[0]));
  convert_checks(d, s, SP_F16, f16_cases, sizeof(f16_cases) / sizeof(f16_cases[0]));
  B->stream_destroy(s);
  B->device_close(d);
}

/* ---- the runner: every case on every backend table ------------------------------------------ */

int main(void) {
  static const tu_be_case cases[] = {
      {"table_devices", test_table_devices},
      {"memory_segments", test_memory_segments},
      {"memory_pages", test_memory_pages},
      {"fifo_order_under_jitter", test_fifo_order_under_jitter},
      {"host_func_order", test_host_func_order},
      {"query_sync_destroy", test_query_sync_destroy},
      {"event_query_sync", test_event_query_sync},
      {"event_wait_orders_data", test_event_wait_orders_data},
      {"event_rerecord_semantics", test_event_rerecord_semantics},
      {"event_elapsed", test_event_elapsed},
      {"event_races", test_event_races},
      {"linear", test_linear},
      {"convert", test_convert},
  };
  return tu_be_run_cases("conf_backend", cases, sizeof(cases) / sizeof(cases[0]), &B);
}
