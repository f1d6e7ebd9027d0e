/* Conformance: the caching allocator is safe on every backend.
 *
 * Goal: a block is never handed out again while work that uses it may still run: same-stream
 * reuse is stream-ordered; a block recorded on another stream (sp_record_stream) and freed is
 * not overwritten before that stream's earlier work has read it, whichever stream allocates
 * next; many threads allocating, filling, checking and freeing never see each other's bytes;
 * bad pointers, double frees and the memory limit give their documented statuses.
 * Method: every block is filled with an owner-specific pattern and read back. For the cross-
 * stream case a gate holds the reading stream while the block is freed and reallocated and
 * overwritten on another stream; the gate opens by a timer so an allocator that (wrongly) waits
 * in sp_free cannot deadlock the test, and the bytes the held stream copies out must be the
 * original ones.
 */
#include "conformance.h"

static void same_stream_reuse(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  enum { N = 10000 };
  unsigned char out[N];
  for (unsigned r = 0; r < 50; r++) {
    unsigned char *p;
    SP_CHECK_OK(sp_alloc(dev, N, s, (void **)&p));
    SP_CHECK_OK(sp_memset_async(s, p, (int)r, N));
    SP_CHECK_OK(sp_memcpy_async(s, out, p, N)); /* stream-ordered before the next user */
    SP_CHECK_OK(sp_free(dev, p));
    SP_CHECK_OK(sp_stream_sync(s));
    size_t bad = conf_check_byte(out, N, (unsigned char)r);
    if (bad != N) fail_msg("round %u byte %zu: got 0x%02x, want 0x%02x", r, bad, out[bad], r);
  }
}

/* p is read on `reader` behind a gate, freed, then a same-size block is taken on `writer` and
 * overwritten. The reader's copy must still hold the original bytes. */
static void cross_stream_case(sp_device *dev, sp_stream *owner, sp_stream *reader,
                              sp_stream *writer, size_t n, const char *what) {
  unsigned char *p, *copy, *q;
  SP_CHECK_OK(sp_alloc(dev, n, owner, (void **)&p));
  SP_CHECK_OK(sp_alloc(dev, n, reader, (void **)&copy));
  SP_CHECK_OK(sp_memset_async(owner, p, 0xAB, n));
  sp_event filled;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &filled));
  SP_CHECK_OK(sp_event_record(filled, owner));
  SP_CHECK_OK(sp_stream_wait_event(reader, filled));
  conf_gate g;
  conf_gate_close(&g, reader, 150);
  SP_CHECK_OK(sp_memcpy_async(reader, copy, p, n)); /* held by the gate */
  SP_CHECK_OK(sp_record_stream(dev, p, reader));
  SP_CHECK_OK(sp_free(dev, p));
  SP_CHECK_OK(sp_alloc(dev, n, writer, (void **)&q));
  SP_CHECK_OK(sp_memset_async(writer, q, 0xCD, n));
  conf_gate_open(&g);
  SP_CHECK_OK(sp_device_sync(dev));
  unsigned char *out = malloc(n);
  assert_non_null(out);
  conf_download(reader, out, copy, n);
  size_t bad = conf_check_byte(out, n, 0xAB);
  if (bad != n)
    fail_msg("%s: reader saw byte %zu = 0x%02x, want 0xab (block reused too early%s)", what, bad,
             out[bad], q == p ? ", same address" : "");
  conf_download(writer, out, q, n);
  bad = conf_check_byte(out, n, 0xCD);
  if (bad != n) fail_msg("%s: new block byte %zu = 0x%02x, want 0xcd", what, bad, out[bad]);
  free(out);
  SP_CHECK_OK(sp_event_release(dev, filled));
  SP_CHECK_OK(sp_free(dev, q));
  SP_CHECK_OK(sp_free(dev, copy));
}

static void record_stream_blocks_reuse(sp_device *dev) {
  sp_stream *st[3];
  conf_streams(dev, st, 3);
  static const size_t sizes[] = {4096, 700 * 1024, 3u << 20};
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    cross_stream_case(dev, st[0], st[1], st[0], sizes[k], "writer = owner");
    cross_stream_case(dev, st[0], st[1], st[2], sizes[k], "writer = third stream");
    cross_stream_case(dev, st[0], st[1], st[1], sizes[k], "writer = reader");
  }
}

/* Threads allocate random sizes on their streams, fill, verify, sometimes hand a block to the
 * next thread's stream (record_stream), free. */
typedef struct churn_arg {
  sp_device *dev;
  unsigned id, rounds;
  uint64_t seed;
} churn_arg;

static void *churn_worker(void *v) {
  churn_arg *a = v;
  tu_rng rng = {a->seed};
  sp_stream *s = NULL;
  TU_EXPECT_OK(sp_stream_current(a->dev, &s));
  sp_stream *other = sp_stream_default(a->dev);
  enum { LIVE = 8 };
  unsigned char *blk[LIVE] = {0};
  size_t len[LIVE] = {0};
  unsigned char tag[LIVE] = {0};
  unsigned char *out = malloc(1u << 20);
  if (!out) return NULL;
  for (unsigned r = 0; r < a->rounds; r++) {
    unsigned i = (unsigned)tu_rng_below(&rng, LIVE);
    if (blk[i]) {
      TU_EXPECT_OK(sp_memcpy_async(s, out, blk[i], len[i]));
      TU_EXPECT_OK(sp_stream_sync(s));
      size_t bad = conf_check_byte(out, len[i], tag[i]);
      TU_EXPECT(bad == len[i], "thread %u round %u: block of %zu, byte %zu = 0x%02x, want 0x%02x",
                a->id, r, len[i], bad, bad < len[i] ? out[bad] : 0, tag[i]);
      if (tu_rng_below(&rng, 4) == 0) { /* also read it on another stream, then free */
        TU_EXPECT_OK(sp_record_stream(a->dev, blk[i], other));
        TU_EXPECT_OK(sp_memset_async(other, blk[i], tag[i], len[i]));
      }
      TU_EXPECT_OK(sp_free(a->dev, blk[i]));
      blk[i] = NULL;
      continue;
    }
    len[i] = 1 + (size_t)tu_rng_below(&rng, tu_rng_below(&rng, 8) == 0 ? (1u << 20) : 8192);
    tag[i] = (unsigned char)(a->id * 50 + r);
    if (sp_alloc(a->dev, len[i], s, (void **)&blk[i]) != SP_OK) {
      TU_EXPECT(0, "thread %u: sp_alloc(%zu): %s", a->id, len[i], sp_last_error());
      blk[i] = NULL;
      continue;
    }
    TU_EXPECT_OK(sp_memset_async(s, blk[i], tag[i], len[i]));
  }
  for (unsigned i = 0; i < LIVE; i++) TU_EXPECT_OK(sp_free(a->dev, blk[i]));
  free(out);
  return NULL;
}

static void threads_churn(sp_device *dev) {
  enum { T = 4 };
  pthread_t th[T];
  churn_arg args[T];
  for (unsigned i = 0; i < T; i++) {
    args[i] = (churn_arg){dev, i, (unsigned)tu_scale(400), tu_seed() * 31 + i};
    assert_int_equal(pthread_create(&th[i], NULL, churn_worker, &args[i]), 0);
  }
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  SP_CHECK_OK(sp_device_sync(dev));
  sp_memory_stats ms;
  SP_CHECK_OK(sp_memory_stats_get(dev, &ms));
  if (ms.allocated_bytes != 0)
    fail_msg("allocated_bytes %zu after all frees, want 0", ms.allocated_bytes);
  if (ms.allocs != ms.frees)
    fail_msg("allocs %llu != frees %llu", (unsigned long long)ms.allocs,
             (unsigned long long)ms.frees);
}

static void bad_pointers(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  void *p;
  SP_CHECK_OK(sp_alloc(dev, 1000, s, &p));
  int local;
  SP_CHECK_STATUS(sp_free(dev, &local), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_free(dev, (char *)p + 1), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_record_stream(dev, &local, s), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_free(dev, p));
  SP_CHECK_STATUS(sp_free(dev, p), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_free(dev, NULL));
  void *untouched = &local;
  SP_CHECK_STATUS(sp_alloc(dev, 0, s, &untouched), SP_ERR_INVALID_ARGUMENT);
  assert_ptr_equal(untouched, &local);
}

static void empty_cache_returns_segments(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  void *p[16];
  for (int i = 0; i < 16; i++) SP_CHECK_OK(sp_alloc(dev, (size_t)(i + 1) * 100000, s, &p[i]));
  for (int i = 0; i < 16; i++) SP_CHECK_OK(sp_free(dev, p[i]));
  SP_CHECK_OK(sp_empty_cache(dev));
  sp_memory_stats ms;
  SP_CHECK_OK(sp_memory_stats_get(dev, &ms));
  if (ms.reserved_bytes != 0)
    fail_msg("reserved_bytes %zu after empty_cache with nothing live, want 0", ms.reserved_bytes);
}

/* A device opened with a memory limit refuses to pass it, and recovers after frees. */
static void memory_limit(sp_device *unused) {
  sp_device_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.backend = sp_device_backend(unused);
  cfg.streams = 4;
  cfg.memory_limit = 64u << 20;
  sp_device *dev;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  void *big = (void *)&cfg, *a;
  SP_CHECK_STATUS(sp_alloc(dev, 128u << 20, s, &big), SP_ERR_LIMIT);
  assert_ptr_equal(big, (void *)&cfg);
  SP_CHECK_OK(sp_alloc(dev, 40u << 20, s, &a));
  SP_CHECK_STATUS(sp_alloc(dev, 40u << 20, s, &big), SP_ERR_LIMIT);
  SP_CHECK_OK(sp_free(dev, a));
  SP_CHECK_OK(sp_alloc(dev, 40u << 20, s, &big));
  SP_CHECK_OK(sp_free(dev, big));
  sp_device_close(dev);
}

int main(void) {
  setenv("STREAMPOOL_HOST_JITTER_US", "20", 0);
  static const conf_case cases[] = {
      {"same_stream_reuse", same_stream_reuse},
      {"record_stream_blocks_reuse", record_stream_blocks_reuse},
      {"threads_churn", threads_churn},
      {"bad_pointers", bad_pointers},
      {"empty_cache_returns_segments", empty_cache_returns_segments},
      {"memory_limit", memory_limit},
  };
  return conf_main("conf_alloc", cases, sizeof(cases) / sizeof(cases[0]));
}
