/* Conformance: streams run their work in submission order, on every backend.
 *
 * Goal: memcpy (host<->device, device<->device), memset and host functions submitted to one stream
 * take effect in exactly the order they were submitted; query reports busy while work is held
 * back; several threads submitting to one shared stream lose nothing.
 * Method: chains of overlapping writes whose final bytes depend on the order, read back and
 * compared byte by byte with the expected result (first difference printed with both values);
 * host functions append to a log checked for order and observe data copied before them; a gate
 * (a host function that waits) holds the stream while query is checked.
 */
#include "conformance.h"

/* memset, then copies that overwrite parts of it: the final bytes spell out the order. */
static void order_overlapping_writes(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  enum { N = 3 * 4096 + 17 };
  unsigned char *src = malloc(N), *out = malloc(N), *want = malloc(N);
  assert_non_null(src);
  assert_non_null(out);
  assert_non_null(want);
  conf_fill(src, N, tu_seed());
  void *a, *b;
  SP_CHECK_OK(sp_alloc(dev, N, s, &a));
  SP_CHECK_OK(sp_alloc(dev, N, s, &b));
  SP_CHECK_OK(sp_memset_async(s, b, 0x11, N));                     /* b = 11..         */
  SP_CHECK_OK(sp_memcpy_async(s, a, src, N));                      /* a = src          */
  SP_CHECK_OK(sp_memcpy_async(s, b, a, N / 2));                    /* b[0,N/2) = src   */
  SP_CHECK_OK(sp_memset_async(s, (char *)b + N / 4, 0x22, N / 4)); /* b[N/4,N/2) = 22  */
  SP_CHECK_OK(sp_memset_async(s, a, 0x33, N));                     /* a = 33 (after)   */
  SP_CHECK_OK(sp_memcpy_async(s, (char *)b + N - 100, a, 100));    /* tail = 33        */
  conf_download(s, out, b, N);
  memcpy(want, src, N / 2);
  memset(want + N / 2, 0x11, N - N / 2);
  memset(want + N / 4, 0x22, N / 4);
  memset(want + N - 100, 0x33, 100);
  for (size_t i = 0; i < N; i++)
    if (out[i] != want[i]) fail_msg("byte %zu: got 0x%02x, want 0x%02x", i, out[i], want[i]);
  SP_CHECK_OK(sp_free(dev, a));
  SP_CHECK_OK(sp_free(dev, b));
  free(src);
  free(out);
  free(want);
}

/* Many small dependent steps: x[i] = i, then each step copies the previous chunk forward. */
static void order_long_chain(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  enum { CHUNK = 1000, STEPS = 200 };
  unsigned char *buf;
  SP_CHECK_OK(sp_alloc(dev, (size_t)CHUNK * STEPS, s, (void **)&buf));
  SP_CHECK_OK(sp_memset_async(s, buf, 0xA5, CHUNK));
  for (unsigned i = 1; i < STEPS; i++) {
    SP_CHECK_OK(sp_memcpy_async(s, buf + (size_t)i * CHUNK, buf + (size_t)(i - 1) * CHUNK, CHUNK));
    SP_CHECK_OK(sp_memset_async(s, buf + (size_t)i * CHUNK + (i % CHUNK), (int)(i & 0xff), 1));
  }
  unsigned char *out = malloc((size_t)CHUNK * STEPS);
  assert_non_null(out);
  conf_download(s, out, buf, (size_t)CHUNK * STEPS);
  unsigned char want[CHUNK];
  memset(want, 0xA5, CHUNK);
  for (unsigned i = 0; i < STEPS; i++) {
    if (i) want[i % CHUNK] = (unsigned char)(i & 0xff);
    for (unsigned j = 0; j < CHUNK; j++)
      if (out[(size_t)i * CHUNK + j] != want[j])
        fail_msg("step %u byte %u: got 0x%02x, want 0x%02x", i, j, out[(size_t)i * CHUNK + j],
                 want[j]);
  }
  free(out);
  SP_CHECK_OK(sp_free(dev, buf));
}

typedef struct host_log {
  atomic_uint n;
  unsigned order[64];
  const unsigned char *watch; /* host buffer a copy filled before the host function */
  unsigned char watch_want;
  atomic_uint watch_bad;
} host_log;
typedef struct host_step {
  host_log *log;
  unsigned id;
} host_step;

static void host_step_fn(void *arg) {
  host_step *st = arg;
  unsigned k = atomic_fetch_add(&st->log->n, 1);
  if (k < 64) st->log->order[k] = st->id;
  if (st->log->watch && st->id % 2 == 1 && st->log->watch[st->id] != (unsigned char)st->id)
    atomic_fetch_add(&st->log->watch_bad, 1);
}

/* Host functions run in order, after the copies submitted before them. */
static void host_funcs_in_order(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  enum { K = 40 };
  static host_log log;
  static host_step steps[K];
  static unsigned char watch[K];
  memset(&log, 0, sizeof(log));
  memset(watch, 0, sizeof(watch));
  log.watch = watch;
  unsigned char *d;
  SP_CHECK_OK(sp_alloc(dev, K, s, (void **)&d));
  for (unsigned i = 0; i < K; i++) {
    steps[i].log = &log;
    steps[i].id = i;
    if (i % 2 == 1) { /* odd steps: a device write then a copy to watch[i] before the function */
      SP_CHECK_OK(sp_memset_async(s, d + i, (int)i, 1));
      SP_CHECK_OK(sp_memcpy_async(s, watch + i, d + i, 1));
    }
    SP_CHECK_OK(sp_launch_host_func(s, host_step_fn, &steps[i]));
  }
  SP_CHECK_OK(sp_stream_sync(s));
  assert_int_equal(atomic_load(&log.n), K);
  for (unsigned i = 0; i < K; i++)
    if (log.order[i] != i) fail_msg("host function %u ran at position %u", log.order[i], i);
  assert_int_equal(atomic_load(&log.watch_bad), 0);
  SP_CHECK_OK(sp_free(dev, d));
}

/* query: busy while a gate holds the stream, idle after. */
static void query_busy_then_idle(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  SP_CHECK_OK(sp_stream_sync(s));
  SP_CHECK_OK(sp_stream_query(s));
  conf_gate g;
  conf_gate_close(&g, s, 0);
  void *d;
  SP_CHECK_OK(sp_alloc(dev, 4096, s, &d));
  SP_CHECK_OK(sp_memset_async(s, d, 7, 4096));
  SP_CHECK_STATUS(sp_stream_query(s), SP_ERR_NOT_READY);
  conf_gate_open(&g);
  SP_CHECK_OK(sp_stream_sync(s));
  SP_CHECK_OK(sp_stream_query(s));
  assert_int_equal(atomic_load(&g.entered), 1);
  SP_CHECK_OK(sp_free(dev, d));
}

/* Several threads submit to one shared stream: each thread's own sequence stays ordered. */
typedef struct shared_arg {
  sp_device *dev;
  sp_stream *s;
  unsigned char *region; /* this thread's device region */
  unsigned char *host;   /* its host result            */
  unsigned id, rounds;
} shared_arg;

enum { SHARED_BYTES = 512 };

static void *shared_worker(void *p) {
  shared_arg *a = p;
  for (unsigned r = 0; r < a->rounds; r++) {
    TU_EXPECT_OK(sp_memset_async(a->s, a->region, (int)((a->id * 31 + r) & 0xff), SHARED_BYTES));
    TU_EXPECT_OK(sp_memset_async(a->s, a->region + r % SHARED_BYTES, (int)(r & 0xff), 1));
  }
  TU_EXPECT_OK(sp_memcpy_async(a->s, a->host, a->region, SHARED_BYTES));
  TU_EXPECT_OK(sp_stream_sync(a->s));
  unsigned last = a->rounds - 1;
  for (unsigned i = 0; i < SHARED_BYTES; i++) {
    unsigned char want = (unsigned char)((a->id * 31 + last) & 0xff);
    if (i == last % SHARED_BYTES) want = (unsigned char)(last & 0xff);
    TU_EXPECT(a->host[i] == want, "thread %u byte %u: got 0x%02x, want 0x%02x", a->id, i,
              a->host[i], want);
  }
  return NULL;
}

static void shared_stream_threads(sp_device *dev) {
  enum { T = 4 };
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  unsigned char *d;
  SP_CHECK_OK(sp_alloc(dev, (size_t)T * SHARED_BYTES, s, (void **)&d));
  static unsigned char host[T][SHARED_BYTES];
  shared_arg args[T];
  pthread_t th[T];
  for (unsigned i = 0; i < T; i++) {
    args[i] =
        (shared_arg){dev, s, d + (size_t)i * SHARED_BYTES, host[i], i, (unsigned)tu_scale(300)};
    assert_int_equal(pthread_create(&th[i], NULL, shared_worker, &args[i]), 0);
  }
  for (unsigned i = 0; i < T; i++) pthread_join(th[i], NULL);
  SP_CHECK_OK(sp_free(dev, d));
}

/* Odd sizes and offsets, 1 byte to 3 MiB, device to device. */
static void copy_sizes(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  static const size_t sizes[] = {1, 3, 511, 513, 4097, 65535, 1u << 20, 3u << 20};
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    size_t n = sizes[k];
    unsigned char *h = malloc(n + 1), *o = malloc(n + 1);
    assert_non_null(h);
    assert_non_null(o);
    conf_fill(h, n + 1, tu_seed() + k);
    unsigned char *a, *b;
    SP_CHECK_OK(sp_alloc(dev, n + 1, s, (void **)&a));
    SP_CHECK_OK(sp_alloc(dev, n + 1, s, (void **)&b));
    SP_CHECK_OK(sp_memcpy_async(s, a, h, n + 1));
    SP_CHECK_OK(sp_memcpy_async(s, b + 1, a + 1, n)); /* odd offset */
    SP_CHECK_OK(sp_memset_async(s, b, 0xEE, 1));
    conf_download(s, o, b, n + 1);
    if (o[0] != 0xEE) fail_msg("size %zu: byte 0 got 0x%02x, want 0xee", n, o[0]);
    for (size_t i = 1; i <= n; i++)
      if (o[i] != h[i]) fail_msg("size %zu byte %zu: got 0x%02x, want 0x%02x", n, i, o[i], h[i]);
    SP_CHECK_OK(sp_free(dev, a));
    SP_CHECK_OK(sp_free(dev, b));
    free(h);
    free(o);
  }
}

int main(void) {
  static const conf_case cases[] = {
      {"order_overlapping_writes", order_overlapping_writes},
      {"order_long_chain", order_long_chain},
      {"host_funcs_in_order", host_funcs_in_order},
      {"query_busy_then_idle", query_busy_then_idle},
      {"shared_stream_threads", shared_stream_threads},
      {"copy_sizes", copy_sizes},
  };
  return conf_main("conf_streams", cases, sizeof(cases) / sizeof(cases[0]));
}
