/* bench/soak: a long soak of random concurrent API calls (a benchmark, not a test).
 *
 * N threads, each with its own seed, run random operations for --seconds on one device with host
 * jitter (STREAMPOOL_HOST_JITTER_US, default 5 here): sp_alloc of 1 B..4 MiB, fills (memset of a
 * per-block byte plus a 16-byte header naming the block, copied from the host), device-to-device
 * copies between the thread's blocks, verification (a download compared byte by byte), frees,
 * cross-stream use (the block is read on the default stream after sp_record_stream, then freed
 * at once: the pending-free path; the read-back must still hold the block's pattern), events
 * (acquire, record, wait, query, sync, release), sp_empty_cache, stats, model inference and the
 * batcher (outputs compared with a reference computed at start), and misuse that must be refused
 * (fills past a block's end, double frees, host-to-host copies, stale events).
 * It prints operations per kind, calls by status (expected refusals apart), and corruptions by
 * content; a healthy library shows 0 corruptions and no unexpected status.
 * Options: --threads N (4)  --seconds S (10)  --seed X (1)  --backend NAME (host)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "streampool.h"
#include "bench_thread.h"

enum { MAX_THREADS = 64, LIVE_MAX = 24, IN = 16, OUT = 8, N_STATUS = 16 };
typedef enum op {
  OP_ALLOC,
  OP_FREE,
  OP_COPY,
  OP_VERIFY,
  OP_CROSS,
  OP_EVENT,
  OP_EMPTY,
  OP_STATS,
  OP_INFER,
  OP_BATCHER,
  OP_MISUSE,
  OP_COUNT
} op;
static const char *const op_names[OP_COUNT] = {
    "alloc+fill",  "free",  "copy d2d",    "verify",        "cross-stream", "events",
    "empty_cache", "stats", "model infer", "batcher infer", "misuse"};

typedef struct block {
  unsigned char *p;
  size_t n;
  unsigned char fill; /* every byte from 16 on; bytes 0..15 name the block */
  uint64_t id;
} block;

typedef struct soak_thread {
  _Alignas(64) unsigned index;
  uint64_t rng;
  unsigned long ops[OP_COUNT];
  unsigned long status[N_STATUS]; /* unexpected calls by -status */
  unsigned long refused, corruptions;
  char first_bad[160];
} soak_thread;

static sp_device *dev;
static sp_model *model;
static sp_batcher *batcher;
static float ref_in[IN], ref_out[OUT];
static atomic_bool stop;
static atomic_ullong next_id = 1;

static uint64_t rnd(soak_thread *t) {
  uint64_t x = t->rng;
  x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
  t->rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}
static size_t below(soak_thread *t, size_t n) { return n ? (size_t)(rnd(t) % n) : 0; }

static void count(soak_thread *t, sp_status st, const char *what) {
  if (st == SP_OK) return;
  int k = -(int)st;
  t->status[k >= 0 && k < N_STATUS ? k : N_STATUS - 1]++;
  if (!t->first_bad[0])
    snprintf(t->first_bad, sizeof(t->first_bad), "%s: %s: %s", what, sp_status_str(st),
             sp_last_error());
}

static void corrupt(soak_thread *t, const char *what, const block *b, size_t at) {
  t->corruptions++;
  if (!t->first_bad[0])
    snprintf(t->first_bad, sizeof(t->first_bad), "%s: block %llu (%zu bytes) wrong at byte %zu",
             what, (unsigned long long)b->id, b->n, at);
}

static void header(const block *b, unsigned char h[16]) {
  memset(h, b->fill, 16);
  memcpy(h, &b->id, sizeof(b->id));
}

/* First wrong byte of host copy h of b, or b->n. */
static size_t check(const block *b, const unsigned char *h) {
  unsigned char hd[16];
  header(b, hd);
  for (size_t i = 0; i < b->n; i++)
    if (h[i] != (i < 16 ? hd[i] : b->fill)) return i;
  return b->n;
}

static bool fill(soak_thread *t, sp_stream *s, block *b) {
  unsigned char hd[16];
  header(b, hd);
  sp_status st = sp_memset_async(s, b->p, b->fill, b->n);
  if (st == SP_OK) st = sp_memcpy_async(s, b->p, hd, b->n < 16 ? b->n : 16);
  if (st == SP_OK) st = sp_stream_sync(s); /* hd is on this stack frame */
  count(t, st, "fill");
  return st == SP_OK;
}

static void verify(soak_thread *t, sp_stream *s, const block *b, sp_stream *on, const char *what) {
  unsigned char *h = malloc(b->n);
  if (!h) return;
  sp_status st = sp_memcpy_async(on, h, b->p, b->n);
  if (st == SP_OK) st = sp_stream_sync(on);
  count(t, st, what);
  size_t at = st == SP_OK ? check(b, h) : b->n;
  if (at != b->n) corrupt(t, what, b, at);
  (void)s;
  free(h);
}

static size_t random_size(soak_thread *t) {
  size_t r = below(t, 100);
  if (r < 70) return 1 + below(t, 64 * 1024);
  if (r < 95) return 1 + below(t, 1024 * 1024);
  return 1 + below(t, 4 * 1024 * 1024);
}

static void op_alloc(soak_thread *t, sp_stream *s, block *live, unsigned *n) {
  if (*n == LIVE_MAX) return;
  block b = {.n = random_size(t),
             .fill = (unsigned char)(1 + below(t, 255)),
             .id = atomic_fetch_add(&next_id, 1)};
  sp_status st = sp_alloc(dev, b.n, s, (void **)&b.p);
  count(t, st, "sp_alloc");
  if (st != SP_OK) return;
  if (fill(t, s, &b)) live[(*n)++] = b;
  else count(t, sp_free(dev, b.p), "sp_free");
}

static void op_free(soak_thread *t, block *live, unsigned *n) {
  if (!*n) return;
  size_t i = below(t, *n);
  count(t, sp_free(dev, live[i].p), "sp_free");
  live[i] = live[--*n];
}

/* Copies a whole block over another of at least its size; the target takes its pattern. */
static void op_copy(soak_thread *t, sp_stream *s, block *live, unsigned n) {
  if (n < 2) return;
  size_t i = below(t, n), j = below(t, n);
  if (i == j || live[j].n < live[i].n) return;
  sp_status st = sp_memcpy_async(s, live[j].p, live[i].p, live[i].n);
  count(t, st, "copy d2d");
  if (st != SP_OK) return;
  /* j now holds i's bytes then its own; re-fill j fully so its pattern stays simple */
  live[j].fill = live[i].fill;
  live[j].id = live[i].id;
  if (live[j].n > live[i].n)
    count(t, sp_memset_async(s, live[j].p + live[i].n, live[j].fill, live[j].n - live[i].n),
          "tail fill");
  if (live[i].n < 16) fill(t, s, &live[j]);
}

/* The block is read on the default stream (never a thread's current stream) after an event of
 * this thread's stream, marked with sp_record_stream and freed at once: the pending-free path. */
static void op_cross(soak_thread *t, sp_stream *s, block *live, unsigned *n) {
  if (!*n) return;
  size_t i = below(t, *n);
  block b = live[i];
  live[i] = live[--*n];
  sp_stream *reader = sp_stream_default(dev);
  sp_event ev;
  count(t, sp_event_acquire(dev, 0, &ev), "event");
  count(t, sp_event_record(ev, s), "record");
  count(t, sp_stream_wait_event(reader, ev), "wait_event");
  unsigned char *h = malloc(b.n);
  if (h) count(t, sp_memcpy_async(reader, h, b.p, b.n), "cross read");
  count(t, sp_record_stream(dev, b.p, reader), "record_stream");
  count(t, sp_free(dev, b.p), "sp_free cross");
  count(t, sp_event_release(dev, ev), "event release");
  /* Other threads may now allocate; the block must not be reused before the read ran. */
  if (h) {
    count(t, sp_stream_sync(reader), "sync reader");
    size_t at = check(&b, h);
    if (at != b.n) corrupt(t, "cross-stream read after free", &b, at);
    free(h);
  }
}

static void op_event(soak_thread *t, sp_stream *s) {
  sp_event ev;
  sp_status st = sp_event_acquire(dev, 0, &ev);
  count(t, st, "event acquire");
  if (st != SP_OK) return;
  count(t, sp_event_record(ev, s), "event record");
  st = sp_event_query(dev, ev);
  if (st != SP_ERR_NOT_READY) count(t, st, "event query");
  if (below(t, 2)) count(t, sp_event_sync(dev, ev), "event sync");
  count(t, sp_event_release(dev, ev), "event release");
}

static void expect_refused(soak_thread *t, sp_status st, sp_status want, const char *what) {
  if (st == want) t->refused++;
  else {
    t->corruptions += st == SP_OK; /* a misuse accepted is a hole, counted with corruptions */
    count(t, st == SP_OK ? SP_ERR_BACKEND : st, what);
  }
}

static void op_misuse(soak_thread *t, sp_stream *s, block *live, unsigned n) {
  unsigned char h[64];
  switch (below(t, 4)) {
  case 0:
    if (n)
      expect_refused(t, sp_memset_async(s, live[0].p, 0, live[0].n + 4096), SP_ERR_INVALID_ARGUMENT,
                     "memset past the end");
    break;
  case 1:
    expect_refused(t, sp_memcpy_async(s, h, h + 32, 16), SP_ERR_INVALID_ARGUMENT, "host to host");
    break;
  case 2: {
    void *p = NULL;
    if (sp_alloc(dev, 100, s, &p) != SP_OK) break;
    count(t, sp_free(dev, p), "sp_free");
    expect_refused(t, sp_free(dev, p), SP_ERR_INVALID_HANDLE, "double free");
    break;
  }
  default: {
    sp_event ev;
    if (sp_event_acquire(dev, 0, &ev) != SP_OK) break;
    count(t, sp_event_release(dev, ev), "event release");
    expect_refused(t, sp_event_record(ev, s), SP_ERR_INVALID_HANDLE, "stale event");
  }
  }
}

static void op_infer(soak_thread *t, bool via_batcher) {
  float y[OUT];
  sp_status st =
      via_batcher ? sp_batcher_infer(batcher, ref_in, y) : sp_model_infer(model, ref_in, y, 1);
  count(t, st, via_batcher ? "batcher infer" : "model infer");
  if (st == SP_OK && memcmp(y, ref_out, sizeof(y))) {
    t->corruptions++;
    if (!t->first_bad[0])
      snprintf(t->first_bad, sizeof(t->first_bad), "%s: output differs from the reference",
               via_batcher ? "batcher" : "model");
  }
}

static void *soak_main(void *arg) {
  soak_thread *t = arg;
  sp_stream *s = NULL;
  count(t, sp_stream_current(dev, &s), "stream");
  if (!s) return NULL;
  block live[LIVE_MAX];
  unsigned n = 0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    size_t r = below(t, 100);
    op o = r < 30   ? OP_ALLOC
           : r < 55 ? OP_FREE
           : r < 63 ? OP_COPY
           : r < 71 ? OP_VERIFY
           : r < 78 ? OP_CROSS
           : r < 85 ? OP_EVENT
           : r < 86 ? OP_EMPTY
           : r < 88 ? OP_STATS
           : r < 92 ? OP_INFER
           : r < 96 ? OP_BATCHER
                    : OP_MISUSE;
    sp_memory_stats m;
    switch (o) {
    case OP_ALLOC: op_alloc(t, s, live, &n); break;
    case OP_FREE: op_free(t, live, &n); break;
    case OP_COPY: op_copy(t, s, live, n); break;
    case OP_VERIFY:
      if (n) verify(t, s, &live[below(t, n)], s, "verify");
      break;
    case OP_CROSS: op_cross(t, s, live, &n); break;
    case OP_EVENT: op_event(t, s); break;
    case OP_EMPTY: count(t, sp_empty_cache(dev), "empty_cache"); break;
    case OP_STATS: count(t, sp_memory_stats_get(dev, &m), "stats"); break;
    case OP_INFER: op_infer(t, false); break;
    case OP_BATCHER: op_infer(t, true); break;
    default: op_misuse(t, s, live, n); break;
    }
    t->ops[o]++;
  }
  for (unsigned i = 0; i < n; i++) {
    verify(t, s, &live[i], s, "final verify");
    count(t, sp_free(dev, live[i].p), "sp_free");
  }
  (void)sp_stream_release_current(dev);
  return NULL;
}

static int fail(const char *what, sp_status st) {
  fprintf(stderr, "soak: %s: %s: %s\n", what, sp_status_str(st), sp_last_error());
  return 1;
}

int main(int argc, char **argv) {
  unsigned threads = 4;
  double seconds = 10;
  uint64_t seed = 1;
  const char *backend = "host";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--threads")) threads = (unsigned)strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--seconds")) seconds = strtod(argv[i + 1], NULL);
    else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--backend")) backend = argv[i + 1];
    else {
      fprintf(stderr, "usage: soak [--threads N] [--seconds S] [--seed X] [--backend NAME]\n");
      return 2;
    }
  }
  if (threads < 1 || threads > MAX_THREADS) threads = 4;
  setenv("STREAMPOOL_HOST_JITTER_US", "5", 0);
  sp_device_config cfg = {.backend = backend, .streams = threads + 4};
  sp_status st = sp_device_open(&cfg, &dev);
  if (st != SP_OK) return fail("open", st);
  const unsigned dims[] = {IN, 32, OUT};
  st = sp_model_mlp_random(dev, dims, 3, seed, SP_F32, &model);
  for (unsigned i = 0; i < IN; i++) ref_in[i] = (float)i / IN - 0.5f;
  if (st == SP_OK) st = sp_model_infer(model, ref_in, ref_out, 1);
  sp_batcher_config bc = {.max_batch = 8, .max_delay_us = 100, .workers = 2};
  if (st == SP_OK) st = sp_batcher_create(model, &bc, &batcher);
  if (st != SP_OK) return fail("model", st);
  soak_thread *ts = calloc(threads, sizeof(*ts));
  pthread_t th[MAX_THREADS];
  for (unsigned i = 0; i < threads; i++) {
    ts[i].index = i;
    ts[i].rng = seed * 0x9E3779B97F4A7C15ull + i + 1;
    bench_thread_start(&th[i], soak_main, &ts[i], "bench_soak");
  }
  struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
  nanosleep(&d, NULL);
  atomic_store(&stop, true);
  unsigned long ops[OP_COUNT] = {0}, status[N_STATUS] = {0}, refused = 0, bad = 0, total = 0;
  for (unsigned i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    for (int k = 0; k < OP_COUNT; k++) ops[k] += ts[i].ops[k], total += ts[i].ops[k];
    for (int k = 0; k < N_STATUS; k++) status[k] += ts[i].status[k];
    refused += ts[i].refused;
    bad += ts[i].corruptions;
  }
  sp_batcher_destroy(batcher);
  sp_model_free(model);
  sp_memory_stats m;
  if (sp_memory_stats_get(dev, &m) != SP_OK) memset(&m, 0, sizeof(m));
  st = sp_device_close(dev);
  printf("streampool %s soak: %s backend, %u threads, %.1f s, seed %llu, host jitter %s us\n\n",
         sp_version(), backend, threads, seconds, (unsigned long long)seed,
         getenv("STREAMPOOL_HOST_JITTER_US"));
  printf("| %-14s | %12s |\n|----------------|--------------|\n", "operation", "count");
  for (int k = 0; k < OP_COUNT; k++) printf("| %-14s | %12lu |\n", op_names[k], ops[k]);
  printf("| %-14s | %12lu |\n\n", "total", total);
  printf("| %-30s | %10s |\n|--------------------------------|------------|\n", "calls by status",
         "count");
  printf("| %-30s | %10lu |\n", "misuse refused (expected)", refused);
  unsigned long unexpected = 0;
  for (int k = 1; k < N_STATUS; k++)
    if (status[k]) {
      printf("| %-30s | %10lu |\n", sp_status_str((sp_status)-k), status[k]);
      unexpected += status[k];
    }
  printf("| %-30s | %10lu |\n\n", "other status (unexpected)", unexpected);
  printf(
      "corruptions by content: %lu; allocator: %llu allocs, %llu deferred frees, %llu "
      "cross-stream reuses, %llu OOM retries; close: %s\n",
      bad, (unsigned long long)m.allocs, (unsigned long long)m.deferred_frees,
      (unsigned long long)m.cross_stream_reuses, (unsigned long long)m.oom_retries,
      sp_status_str(st));
  for (unsigned i = 0; i < threads; i++)
    if (ts[i].first_bad[0]) printf("thread %u first problem: %s\n", i, ts[i].first_bad);
  free(ts);
  return bad || unexpected ? 1 : 0;
}
