/* bench/alloc: the caching allocator's throughput and fragmentation, as one table.
 *
 * Part 1: alloc+free pairs, sizes a seeded mix of 512 B..8 MiB (mostly small, as activations
 * are), T threads each on its own stream, for --seconds each; ns per pair and aggregate pairs/s,
 * and the same sizes through the C library's malloc/free in the same run, with the ratios.
 * "cached" rows use 8 sizes that stay in each thread's cache; "mix" rows draw from the full range.
 * A CPU column (threads' CPU time per pair) and CPU scaling give the numbers a shared or
 * oversubscribed machine cannot show in wall time.
 * Part 2: replayed inference-like traces (activations for batch sizes 1..2^k, KV-like context
 * buffers growing in steps and restarting, outputs freed on another stream after
 * sp_record_stream): the repo's trace on 8 streams and generated ones with other stream counts,
 * size mixes and lifetimes (seeded, table `traces`), each reporting peak reserved / peak
 * allocated against the aim of 1.15; each trace also runs with other seeds (--trace-seeds N, 3 by
 * default: variant v adds 1000 v to its seed), so the policy is not judged on six runs it was tuned
 * on. Options: --threads 1,2,4,8,16  --seconds 0.5  --backend host|cuda  --traces-only |
 * --pairs-only  --trace-seeds N. Backend-generic: only the public API (the CUDA helper adds
 * cudaMalloc peers in another file).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "streampool.h"
#include "bench_thread.h"
#include "../tools/args.h"

#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)
enum { MAX_THREADS = 64, N_SIZES = 4096 };

typedef struct bench_opts {
  unsigned threads[16], n_threads;
  double seconds;
  const char *backend;
  bool traces_only;  /* skip part 1 */
  bool pairs_only;   /* skip part 2 */
  unsigned variants; /* seeds per trace */
} bench_opts;

typedef struct worker {
  pthread_t thread;
  sp_device *dev;
  sp_stream *stream;
  const size_t *sizes;
  unsigned n_sizes;
  int use_malloc;
  double seconds;
  unsigned long long pairs;
  double cpu_s; /* this thread's CPU time over the run */
  int failed;
} worker;

static pthread_barrier_t start_barrier;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  if (!w->use_malloc && sp_stream_current(w->dev, &w->stream) != SP_OK) { /* its own slot */
    fprintf(stderr, "alloc bench: %s\n", sp_last_error());
    w->failed = 1;
  }
  pthread_barrier_wait(&start_barrier);
  double end = now_s() + w->seconds, cpu0 = cpu_s();
  unsigned long long pairs = 0;
  unsigned i = 0;
  while (!w->failed) {
    for (unsigned k = 0; k < 256; k++, i++) {
      size_t bytes = w->sizes[i % w->n_sizes];
      void *p = NULL;
      if (w->use_malloc) {
        p = malloc(bytes);
        if (!p) w->failed = 1;
        *(volatile char *)p = 1;
        free(p);
      } else {
        if (sp_alloc(w->dev, bytes, w->stream, &p) != SP_OK || sp_free(w->dev, p) != SP_OK) {
          fprintf(stderr, "alloc bench: %s\n", sp_last_error());
          w->failed = 1;
          break;
        }
      }
    }
    pairs += 256;
    if (now_s() >= end) break;
  }
  w->pairs = pairs;
  w->cpu_s = cpu_s() - cpu0;
  return NULL;
}

/* Pairs per second over T threads; ns per pair per thread through *ns, CPU ns per pair (all
 * threads' CPU time / all pairs: unlike wall time, not inflated when other processes share the
 * cores) through *cpu_ns. */
static double run_pairs(sp_device *dev, unsigned t, const size_t *sizes, unsigned n_sizes,
                        int use_malloc, double seconds, double *ns, double *cpu_ns) {
  worker w[MAX_THREADS];
  pthread_barrier_init(&start_barrier, NULL, t);
  for (unsigned i = 0; i < t; i++) {
    w[i] = (worker){.dev = dev,
                    .stream = NULL,
                    .sizes = sizes + (i * 131u) % n_sizes,
                    .n_sizes = n_sizes - (i * 131u) % n_sizes,
                    .use_malloc = use_malloc,
                    .seconds = seconds};
  }
  for (unsigned i = 0; i < t; i++)
    bench_thread_start(&w[i].thread, worker_main, &w[i], "bench_alloc");
  unsigned long long pairs = 0;
  int failed = 0;
  double cpu = 0;
  for (unsigned i = 0; i < t; i++) {
    pthread_join(w[i].thread, NULL);
    pairs += w[i].pairs;
    cpu += w[i].cpu_s;
    failed |= w[i].failed;
  }
  pthread_barrier_destroy(&start_barrier);
  if (failed) return -1;
  double rate = (double)pairs / seconds;
  *ns = 1e9 * t / rate;
  *cpu_ns = pairs ? 1e9 * cpu / (double)pairs : 0;
  return rate;
}

static unsigned make_sizes(size_t *sizes, int cached, uint64_t seed) {
  uint64_t s = seed;
  if (cached) {
    static const size_t few[8] = {512,       4 * KIB, 16 * KIB, 64 * KIB,
                                  256 * KIB, MIB,     2 * MIB,  8 * MIB};
    for (unsigned i = 0; i < 8; i++) sizes[i] = few[i];
    return 8;
  }
  for (unsigned i = 0; i < N_SIZES; i++) {
    unsigned r = (unsigned)(rng_next(&s) % 100);
    size_t hi = r < 70 ? 64 * KIB : r < 95 ? MIB : 8 * MIB;
    sizes[i] = 512 + (size_t)(rng_next(&s) % (hi - 511));
  }
  return N_SIZES;
}

static int part_pairs(sp_device *dev, const bench_opts *o) {
  static size_t sizes[N_SIZES];
  printf(
      "| sizes | threads | streampool ns/pair | streampool pairs/s | streampool CPU ns/pair | "
      "malloc ns/pair | malloc pairs/s | sp/malloc | scaling vs 1 thread | CPU scaling |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n");
  for (int cached = 1; cached >= 0; cached--) {
    unsigned n = make_sizes(sizes, cached, 42);
    double one = 0, cpu_one = 0;
    for (unsigned k = 0; k < o->n_threads; k++) {
      unsigned t = o->threads[k];
      double ns_sp = 0, ns_m = 0, cpu_sp = 0, cpu_m = 0;
      double r_sp = run_pairs(dev, t, sizes, n, 0, o->seconds, &ns_sp, &cpu_sp);
      double r_m = run_pairs(dev, t, sizes, n, 1, o->seconds, &ns_m, &cpu_m);
      if (r_sp < 0 || r_m < 0) return 1;
      if (k == 0) {
        one = r_sp / t;
        cpu_one = cpu_sp;
      }
      /* CPU scaling: T times the 1-thread CPU cost per pair over the T-thread one, as a fraction
       * of T: what the rate would be on T otherwise idle cores */
      printf(
          "| %s | %u | %.1f | %.3g | %.1f | %.1f | %.3g | %.2f | %.2f x (%.2f of T) | %.2f of "
          "T |\n",
          cached ? "cached" : "mix 512B-8MiB", t, ns_sp, r_sp, cpu_sp, ns_m, r_m, r_sp / r_m,
          r_sp / one, r_sp / one / t, cpu_sp > 0 ? cpu_one / cpu_sp : 0);
      fflush(stdout);
    }
  }
  return 0;
}

/* ---- part 2: an inference-like trace ---- */

enum { TRACE_STREAMS_MAX = 16, LAYERS = 4 };

/* One generated inference-like trace: activations for batch sizes 1..2^batch_log2 rows of hidden
 * (and 4 x hidden) floats, a context buffer per stream growing by batch x ctx_step bytes and
 * restarting once in `restart` steps (its lifetime), outputs handed to the next stream. */
typedef struct trace_cfg {
  const char *name;
  unsigned streams, steps, batch_log2, hidden, ctx_step, restart;
  uint64_t seed;
} trace_cfg;

static const trace_cfg traces[] = {
    {"repo (8 streams)", 8, 4000, 9, 4096, 2 * 4096 * 2, 64, 7},
    {"4 streams, long ctx", 4, 4000, 9, 4096, 2 * 4096 * 2, 512, 11},
    {"16 streams, small", 16, 4000, 7, 2048, 2 * 2048 * 2, 64, 13},
    {"8 streams, wide", 8, 3000, 8, 8192, 4096, 32, 17},
    {"2 streams, short ctx", 2, 4000, 9, 4096, 8 * 4096, 8, 19},
    {"12 streams, mixed", 12, 4000, 9, 3072, 3 * 3072, 128, 23},
};
enum { N_TRACES = sizeof(traces) / sizeof(traces[0]) };

static int part_trace(sp_device *dev, const trace_cfg *t, unsigned variant, double *ratio) {
  sp_stream *streams[TRACE_STREAMS_MAX];
  /* round-robin device: each release + bind gives the next pool stream */
  for (unsigned i = 0; i < t->streams; i++) {
    sp_stream_release_current(dev);
    if (sp_stream_current(dev, &streams[i]) != SP_OK) return 1;
  }
  sp_memory_stats_reset_peaks(dev);
  uint64_t rng = t->seed + 1000u * variant; /* variant 0: the trace as first written */
  void *ctx[TRACE_STREAMS_MAX] = {0};
  size_t ctx_bytes[TRACE_STREAMS_MAX] = {0};
  for (unsigned step = 0; step < t->steps; step++) {
    unsigned si = (unsigned)(rng_next(&rng) % t->streams);
    sp_stream *s = streams[si];
    unsigned batch = 1u << (rng_next(&rng) % (t->batch_log2 + 1));
    void *act[LAYERS + 1];
    for (unsigned l = 0; l <= LAYERS; l++) {
      size_t width = l % 2 ? 4 * (size_t)t->hidden : t->hidden;
      if (sp_alloc(dev, (size_t)batch * width * 4, s, &act[l]) != SP_OK) goto fail;
      if (l >= 2) { /* activation two layers back is dead */
        if (sp_free(dev, act[l - 2]) != SP_OK) goto fail;
        act[l - 2] = NULL;
      }
    }
    /* the context buffer of this stream grows by a step; the old one is freed */
    size_t want = ctx_bytes[si] + (size_t)batch * t->ctx_step;
    if (want > 256 * MIB || rng_next(&rng) % t->restart == 0) want = (size_t)batch * t->ctx_step;
    void *nctx = NULL;
    if (sp_alloc(dev, want, s, &nctx) != SP_OK) goto fail;
    if (ctx[si] && sp_free(dev, ctx[si]) != SP_OK) goto fail;
    ctx[si] = nctx;
    ctx_bytes[si] = want;
    /* the output is handed to another stream (a consumer) then freed there */
    sp_stream *other = streams[(si + 1) % t->streams];
    if (sp_record_stream(dev, act[LAYERS], other) != SP_OK) goto fail;
    for (unsigned l = LAYERS - 1; l <= LAYERS; l++)
      if (act[l] && sp_free(dev, act[l]) != SP_OK) goto fail;
  }
  sp_memory_stats m;
  sp_memory_stats_get(dev, &m);
  *ratio = (double)m.reserved_bytes_peak / (double)m.allocated_bytes_peak;
  printf("| %-22s | %u | %u | %u | %.1f MiB | %.1f MiB | %.3f | %s | %llu | %llu | %llu |\n",
         t->name, variant, t->streams, t->steps, (double)m.allocated_bytes_peak / (double)MIB,
         (double)m.reserved_bytes_peak / (double)MIB, *ratio, *ratio <= 1.15 ? "yes" : "NO",
         (unsigned long long)m.cross_stream_reuses, (unsigned long long)m.deferred_frees,
         (unsigned long long)m.backend_allocs);
  for (unsigned i = 0; i < t->streams; i++) sp_free(dev, ctx[i]);
  return 0;
fail:
  fprintf(stderr, "trace %s: %s\n", t->name, sp_last_error());
  return 1;
}

/* Every generated trace, each with `variants` seeds, on a fresh device; the aim is peak reserved /
 * peak allocated <= 1.15. */
static int part_traces(const char *backend, unsigned variants) {
  printf(
      "\n| trace | seed variant | streams | steps | peak allocated | peak reserved | "
      "reserved/allocated | <= 1.15 | cross-stream reuses | deferred frees | backend allocs |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n");
  double worst = 0;
  for (unsigned k = 0; k < variants * N_TRACES; k++) {
    unsigned i = k % N_TRACES;
    sp_device_config cfg = {.backend = backend, .streams = traces[i].streams + 1};
    sp_device *dev = NULL;
    double ratio = 0;
    if (sp_device_open(&cfg, &dev) != SP_OK) {
      fprintf(stderr, "alloc bench: %s\n", sp_last_error());
      return 1;
    }
    int rc = part_trace(dev, &traces[i], k / N_TRACES, &ratio);
    sp_device_close(dev);
    if (rc) return rc;
    if (ratio > worst) worst = ratio;
  }
  printf("\nworst reserved/allocated over the %u traces: %.3f (aim <= 1.15)\n", variants * N_TRACES,
         worst);
  return 0;
}

static int parse(int argc, char **argv, bench_opts *o) {
  static const unsigned def[] = {1, 2, 4, 8, 16};
  memcpy(o->threads, def, sizeof(def));
  o->n_threads = 5;
  o->seconds = 0.5;
  o->traces_only = false;
  o->pairs_only = false;
  o->variants = 3;
  o->backend = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      o->n_threads = 0;
      for (char *tok = strtok(argv[++i], ","); tok && o->n_threads < 16; tok = strtok(NULL, ",")) {
        unsigned t = (unsigned)atoi(tok);
        if (t < 1 || t > MAX_THREADS) return fprintf(stderr, "bad thread count %s\n", tok), 1;
        o->threads[o->n_threads++] = t;
      }
    } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
      o->seconds = atof(argv[++i]);
    } else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
      o->backend = argv[++i];
    } else if (!strcmp(argv[i], "--traces-only")) {
      o->traces_only = true;
    } else if (!strcmp(argv[i], "--pairs-only")) {
      o->pairs_only = true;
    } else if (!strcmp(argv[i], "--trace-seeds") && i + 1 < argc) {
      const char *why = sp_cli_unsigned(argv[++i], 1, 16, &o->variants);
      if (why) return fprintf(stderr, "bad --trace-seeds %s: %s\n", argv[i], why), 1;
    } else {
      fprintf(stderr,
              "usage: %s [--threads 1,2,4] [--seconds S] [--backend host|cuda] [--traces-only | "
              "--pairs-only] [--trace-seeds N]\n",
              argv[0]);
      return 1;
    }
  }
  if (o->traces_only && o->pairs_only)
    return fprintf(stderr, "--traces-only and --pairs-only exclude each other\n"), 1;
  return 0;
}

/* Each pair-bench worker binds its own stream: that device is exclusive with a slot per thread. */
int main(int argc, char **argv) {
  bench_opts o;
  if (parse(argc, argv, &o)) return 2;
  unsigned tmax = 8;
  for (unsigned i = 0; i < o.n_threads; i++) tmax = o.threads[i] > tmax ? o.threads[i] : tmax;
  sp_device_config cfg = {.backend = o.backend,
                          .streams = tmax + 1,
                          .stream_mode = SP_STREAMS_EXCLUSIVE,
                          .slot_wait_ms = 1000};
  sp_device *dev = NULL;
  if (sp_device_open(&cfg, &dev) != SP_OK) {
    fprintf(stderr, "alloc bench: %s\n", sp_last_error());
    return 1;
  }
  printf("# bench/alloc on %s (%s), %.2f s per cell\n\n", sp_device_name(dev),
         sp_device_backend(dev), o.seconds);
  int rc = o.traces_only ? 0 : part_pairs(dev, &o);
  sp_device_close(dev);
  if (!rc && !o.pairs_only) rc = part_traces(o.backend, o.variants);
  return rc;
}
