/* Conformance: data handed between streams through events, on every backend.
 *
 * Goal: a consumer stream that waits on a producer's event sees all of the producer's writes,
 * for one pair, for fan-in (one consumer, several producers) and for threads each driving their
 * own pipeline; a missing wait would show up as wrong bytes.
 * Method: each round the producer overwrites a buffer in several steps (memset then patch
 * copies) with a round-specific pattern and records an event; the consumer waits on it, copies
 * the buffer out (device to device) and the host checks every byte. On the host backend the
 * streams run with random per-command delays (STREAMPOOL_HOST_JITTER_US, set here when unset), so
 * producers and consumers really overlap in varying ways.
 */
#include "conformance.h"

enum { XS_BYTES = 32 * 1024 };

/* The producer's writes for round r: memset, then a patch copied from a staged buffer. */
static void produce(sp_stream *s, unsigned char *buf, unsigned char *stage, unsigned r) {
  SP_CHECK_OK(sp_memset_async(s, buf, (int)(r & 0xff), XS_BYTES));
  SP_CHECK_OK(sp_memset_async(s, stage, (int)((r * 7 + 1) & 0xff), XS_BYTES / 2));
  SP_CHECK_OK(sp_memcpy_async(s, buf + XS_BYTES / 4, stage, XS_BYTES / 2));
}

static void expect_round(const unsigned char *out, unsigned r, const char *what) {
  for (size_t i = 0; i < XS_BYTES; i++) {
    unsigned char want = (i >= XS_BYTES / 4 && i < XS_BYTES / 4 + XS_BYTES / 2)
                             ? (unsigned char)((r * 7 + 1) & 0xff)
                             : (unsigned char)(r & 0xff);
    if (out[i] != want)
      fail_msg("%s round %u byte %zu: got 0x%02x, want 0x%02x", what, r, i, out[i], want);
  }
}

static void producer_consumer(sp_device *dev) {
  sp_stream *st[2];
  conf_streams(dev, st, 2);
  sp_stream *p = st[0], *c = st[1];
  unsigned char *buf, *stage, *copy;
  SP_CHECK_OK(sp_alloc(dev, XS_BYTES, p, (void **)&buf));
  SP_CHECK_OK(sp_alloc(dev, XS_BYTES, p, (void **)&stage));
  SP_CHECK_OK(sp_alloc(dev, XS_BYTES, c, (void **)&copy));
  SP_CHECK_OK(sp_record_stream(dev, buf, c));
  sp_event made, used;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &made));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &used));
  unsigned char *out = malloc(XS_BYTES);
  assert_non_null(out);
  unsigned rounds = (unsigned)tu_scale(40);
  for (unsigned r = 1; r <= rounds; r++) {
    SP_CHECK_OK(sp_stream_wait_event(p, used)); /* do not overwrite what c still reads */
    produce(p, buf, stage, r);
    SP_CHECK_OK(sp_event_record(made, p));
    SP_CHECK_OK(sp_stream_wait_event(c, made));
    SP_CHECK_OK(sp_memcpy_async(c, copy, buf, XS_BYTES));
    SP_CHECK_OK(sp_event_record(used, c));
    conf_download(c, out, copy, XS_BYTES);
    expect_round(out, r, "pair");
  }
  free(out);
  SP_CHECK_OK(sp_event_release(dev, made));
  SP_CHECK_OK(sp_event_release(dev, used));
  SP_CHECK_OK(sp_free(dev, buf));
  SP_CHECK_OK(sp_free(dev, stage));
  SP_CHECK_OK(sp_free(dev, copy));
}

/* Four producers each write a quarter; the consumer waits on all four events. */
static void fan_in(sp_device *dev) {
  enum { P = 4, Q = XS_BYTES / P };
  sp_stream *st[P + 1];
  conf_streams(dev, st, P + 1);
  sp_stream *c = st[P];
  unsigned char *buf, *copy;
  SP_CHECK_OK(sp_alloc(dev, XS_BYTES, c, (void **)&buf));
  SP_CHECK_OK(sp_alloc(dev, XS_BYTES, c, (void **)&copy));
  sp_event made[P], used;
  for (int i = 0; i < P; i++) {
    SP_CHECK_OK(sp_event_acquire(dev, 0, &made[i]));
    SP_CHECK_OK(sp_record_stream(dev, buf, st[i]));
  }
  SP_CHECK_OK(sp_event_acquire(dev, 0, &used));
  unsigned char *out = malloc(XS_BYTES);
  assert_non_null(out);
  unsigned rounds = (unsigned)tu_scale(30);
  for (unsigned r = 1; r <= rounds; r++) {
    for (int i = 0; i < P; i++) {
      SP_CHECK_OK(sp_stream_wait_event(st[i], used));
      SP_CHECK_OK(sp_memset_async(st[i], buf + (size_t)i * Q, 0, Q));
      SP_CHECK_OK(sp_memset_async(st[i], buf + (size_t)i * Q, (int)((r + (unsigned)i) & 0xff), Q));
      SP_CHECK_OK(sp_event_record(made[i], st[i]));
    }
    for (int i = 0; i < P; i++) SP_CHECK_OK(sp_stream_wait_event(c, made[i]));
    SP_CHECK_OK(sp_memcpy_async(c, copy, buf, XS_BYTES));
    SP_CHECK_OK(sp_event_record(used, c));
    conf_download(c, out, copy, XS_BYTES);
    for (int i = 0; i < P; i++) {
      size_t bad =
          conf_check_byte(out + (size_t)i * Q, Q, (unsigned char)((r + (unsigned)i) & 0xff));
      if (bad != Q)
        fail_msg("round %u quarter %d byte %zu: got 0x%02x, want 0x%02x", r, i, bad,
                 out[(size_t)i * Q + bad], (r + (unsigned)i) & 0xff);
    }
  }
  free(out);
  for (int i = 0; i < P; i++) SP_CHECK_OK(sp_event_release(dev, made[i]));
  SP_CHECK_OK(sp_event_release(dev, used));
  SP_CHECK_OK(sp_free(dev, buf));
  SP_CHECK_OK(sp_free(dev, copy));
}

/* Threads, each with its own producer and consumer stream (bound per thread), at once. */
typedef struct pipe_arg {
  sp_device *dev;
  unsigned id, rounds;
} pipe_arg;

static void *pipe_worker(void *v) {
  pipe_arg *a = v;
  sp_stream *p = NULL, *c = NULL;
  TU_EXPECT_OK(sp_stream_current(a->dev, &p));
  c = sp_stream_default(a->dev); /* consumer: the default stream, shared by all threads */
  unsigned char *buf = NULL, *copy = NULL;
  TU_EXPECT_OK(sp_alloc(a->dev, XS_BYTES, p, (void **)&buf));
  TU_EXPECT_OK(sp_alloc(a->dev, XS_BYTES, c, (void **)&copy));
  TU_EXPECT_OK(sp_record_stream(a->dev, buf, c));
  unsigned char *out = malloc(XS_BYTES);
  sp_event made, used;
  TU_EXPECT_OK(sp_event_acquire(a->dev, 0, &made));
  TU_EXPECT_OK(sp_event_acquire(a->dev, 0, &used));
  if (!buf || !copy || !out) goto done;
  for (unsigned r = 0; r < a->rounds; r++) {
    unsigned char v1 = (unsigned char)(a->id * 16 + r);
    TU_EXPECT_OK(sp_stream_wait_event(p, used));
    TU_EXPECT_OK(sp_memset_async(p, buf, 0, XS_BYTES));
    TU_EXPECT_OK(sp_memset_async(p, buf, v1, XS_BYTES));
    TU_EXPECT_OK(sp_event_record(made, p));
    TU_EXPECT_OK(sp_stream_wait_event(c, made));
    TU_EXPECT_OK(sp_memcpy_async(c, copy, buf, XS_BYTES));
    TU_EXPECT_OK(sp_event_record(used, c));
    TU_EXPECT_OK(sp_memcpy_async(c, out, copy, XS_BYTES));
    TU_EXPECT_OK(sp_event_sync(a->dev, used)); /* used was recorded before the download */
    TU_EXPECT_OK(sp_stream_sync(c));
    size_t bad = conf_check_byte(out, XS_BYTES, v1);
    TU_EXPECT(bad == XS_BYTES, "thread %u round %u byte %zu: got 0x%02x, want 0x%02x", a->id, r,
              bad, bad < XS_BYTES ? out[bad] : 0, v1);
  }
done:
  free(out);
  TU_EXPECT_OK(sp_event_release(a->dev, made));
  TU_EXPECT_OK(sp_event_release(a->dev, used));
  TU_EXPECT_OK(sp_free(a->dev, buf));
  TU_EXPECT_OK(sp_free(a->dev, copy));
  return NULL;
}

static void threads_pipelines(sp_device *dev) {
  enum { T = 4 };
  pthread_t th[T];
  pipe_arg args[T];
  for (unsigned i = 0; i < T; i++) {
    args[i] = (pipe_arg){dev, i, (unsigned)tu_scale(25)};
    assert_int_equal(pthread_create(&th[i], NULL, pipe_worker, &args[i]), 0);
  }
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
}

int main(void) {
  setenv("STREAMPOOL_HOST_JITTER_US", "30", 0); /* host streams: random delays per command */
  static const conf_case cases[] = {
      {"producer_consumer", producer_consumer},
      {"fan_in", fan_in},
      {"threads_pipelines", threads_pipelines},
  };
  return conf_main("conf_cross_stream", cases, sizeof(cases) / sizeof(cases[0]));
}
