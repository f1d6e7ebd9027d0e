/* bench/alloc_history: what the memory history costs the allocator's hot path, as one table.
 *
 * Three rows in one run, same harness: "baseline" is libstreampool_nohist.so, the same sources
 * built with SP_HISTORY_COMPILED_OUT (the allocator as it was before the history: no load, no
 * branch); "off" is libstreampool.so with the history never enabled (the default: one relaxed
 * load and a branch per operation); "on" is libstreampool.so after sp_memory_history_enable(dev,
 * 65536). Both libraries are dlopen'ed (RTLD_LOCAL, each binds to itself), so calls go the same
 * way. Work: alloc+free pairs of 8 sizes that stay in each thread's cache (the front-cache hit,
 * where a fixed cost shows most), T threads each on its own stream of a host device. Each cell
 * is the best of --reps runs of --seconds (rows interleaved per rep, so drift hits all alike);
 * ratios are against the baseline of the same thread count. A CPU column (threads' CPU time per
 * pair) is less disturbed than wall time on a shared machine.
 * Options: --threads 1,2,4  --seconds 0.3  --reps 3.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "streampool.h"
#include "bench_thread.h"

#ifndef SP_LIB_PATH
#define SP_LIB_PATH "libstreampool.so"
#endif
#ifndef SP_NOHIST_LIB_PATH
#define SP_NOHIST_LIB_PATH "libstreampool_nohist.so"
#endif

enum { MAX_THREADS = 64, N_SIZES = 8, ROWS = 3 };

typedef struct lib {
  const char *name, *path;
  void *handle;
  sp_status (*open)(const sp_device_config *, sp_device **);
  void (*close)(sp_device *);
  sp_status (*alloc)(sp_device *, size_t, sp_stream *, void **);
  sp_status (*free)(sp_device *, void *);
  sp_status (*current)(sp_device *, sp_stream **);
  sp_status (*history_enable)(sp_device *, size_t);
  const char *(*last_error)(void);
} lib;

typedef struct worker {
  pthread_t thread;
  const lib *l;
  sp_device *dev;
  double seconds;
  unsigned first;
  unsigned long long pairs;
  double cpu_s;
  int failed;
} worker;

static const size_t sizes[N_SIZES] = {512, 4096, 16384, 65536, 262144, 1 << 20, 3072, 40960};
static pthread_barrier_t start_barrier;

static double clock_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int lib_load(lib *l) {
  l->handle = dlopen(l->path, RTLD_NOW | RTLD_LOCAL);
  if (!l->handle) return fprintf(stderr, "alloc_history: %s\n", dlerror()), 1;
#define SYM(field, name) *(void **)&l->field = dlsym(l->handle, name)
  SYM(open, "sp_device_open");
  SYM(close, "sp_device_close");
  SYM(alloc, "sp_alloc");
  SYM(free, "sp_free");
  SYM(current, "sp_stream_current");
  SYM(history_enable, "sp_memory_history_enable");
  SYM(last_error, "sp_last_error");
#undef SYM
  if (!l->open || !l->close || !l->alloc || !l->free || !l->current || !l->history_enable ||
      !l->last_error)
    return fprintf(stderr, "alloc_history: %s lacks a function\n", l->path), 1;
  return 0;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  sp_stream *s = NULL;
  if (w->l->current(w->dev, &s) != SP_OK) w->failed = 1;
  pthread_barrier_wait(&start_barrier);
  double end = clock_s(CLOCK_MONOTONIC) + w->seconds, cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
  unsigned long long pairs = 0;
  unsigned i = w->first;
  while (!w->failed) {
    for (unsigned k = 0; k < 256; k++, i++) {
      void *p = NULL;
      if (w->l->alloc(w->dev, sizes[i % N_SIZES], s, &p) != SP_OK ||
          w->l->free(w->dev, p) != SP_OK) {
        fprintf(stderr, "alloc_history: %s\n", w->l->last_error());
        w->failed = 1;
        break;
      }
    }
    pairs += 256;
    if (clock_s(CLOCK_MONOTONIC) >= end) break;
  }
  w->pairs = pairs;
  w->cpu_s = clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0;
  return NULL;
}

/* Pairs per second of t threads on dev; CPU ns per pair through *cpu_ns; -1 on failure. */
static double run_pairs(const lib *l, sp_device *dev, unsigned t, double seconds, double *cpu_ns) {
  worker w[MAX_THREADS];
  pthread_barrier_init(&start_barrier, NULL, t);
  for (unsigned i = 0; i < t; i++) {
    w[i] = (worker){.l = l, .dev = dev, .seconds = seconds, .first = i};
    bench_thread_start(&w[i].thread, worker_main, &w[i], "bench_alloc_history");
  }
  unsigned long long pairs = 0;
  double cpu = 0;
  int failed = 0;
  for (unsigned i = 0; i < t; i++) {
    pthread_join(w[i].thread, NULL);
    pairs += w[i].pairs;
    cpu += w[i].cpu_s;
    failed |= w[i].failed;
  }
  pthread_barrier_destroy(&start_barrier);
  *cpu_ns = pairs ? 1e9 * cpu / (double)pairs : 0;
  return failed ? -1 : (double)pairs / seconds;
}

static int parse(int argc, char **argv, unsigned *threads, unsigned *n, double *seconds,
                 unsigned *reps) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      *n = 0;
      for (char *save = NULL, *tok = strtok_r(argv[++i], ",", &save); tok && *n < 16;
           tok = strtok_r(NULL, ",", &save)) {
        unsigned v = (unsigned)strtoul(tok, NULL, 10);
        if (v < 1 || v > MAX_THREADS) return fprintf(stderr, "bad thread count %s\n", tok), 1;
        threads[(*n)++] = v;
      }
    } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
      *seconds = strtod(argv[++i], NULL);
    } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      *reps = (unsigned)strtoul(argv[++i], NULL, 10);
    } else {
      fprintf(stderr, "usage: %s [--threads 1,2,4] [--seconds S] [--reps N]\n", argv[0]);
      return 1;
    }
  }
  return *n == 0 || *seconds <= 0 || *reps == 0;
}

int main(int argc, char **argv) {
  unsigned threads[16] = {1, 2, 4}, n_threads = 3, reps = 3;
  double seconds = 0.3;
  if (parse(argc, argv, threads, &n_threads, &seconds, &reps)) return 2;
  lib libs[2] = {{.name = "compiled out", .path = SP_NOHIST_LIB_PATH},
                 {.name = "streampool", .path = SP_LIB_PATH}};
  if (lib_load(&libs[0]) || lib_load(&libs[1])) return 1;
  static const char *const row_names[ROWS] = {"baseline (compiled out)", "history off",
                                              "history on (65536)"};
  const lib *row_lib[ROWS] = {&libs[0], &libs[1], &libs[1]};
  sp_device *dev[ROWS] = {0};
  sp_device_config cfg = {.backend = "host", .streams = MAX_THREADS + 1};
  for (unsigned r = 0; r < ROWS; r++) {
    if (row_lib[r]->open(&cfg, &dev[r]) != SP_OK ||
        (r == 2 && row_lib[r]->history_enable(dev[r], 65536) != SP_OK)) {
      fprintf(stderr, "alloc_history: %s\n", row_lib[r]->last_error());
      return 1;
    }
  }
  printf(
      "# bench/alloc_history: alloc+free pairs of cached sizes, host device, best of %u x "
      "%.2f s\n\n",
      reps, seconds);
  printf(
      "| threads | row | pairs/s | ns/pair (wall, per thread) | CPU ns/pair | pairs/s vs "
      "baseline | CPU vs baseline |\n|---|---|---|---|---|---|---|\n");
  int failed = 0;
  for (unsigned ti = 0; ti < n_threads; ti++) {
    double best[ROWS] = {0}, cpu[ROWS] = {0};
    for (unsigned k = 0; k < reps; k++) {
      for (unsigned r = 0; r < ROWS; r++) {
        double c = 0, rate = run_pairs(row_lib[r], dev[r], threads[ti], seconds, &c);
        if (rate < 0) failed = 1;
        if (rate > best[r]) best[r] = rate, cpu[r] = c;
      }
    }
    for (unsigned r = 0; r < ROWS; r++)
      printf("| %u | %s | %.3g | %.1f | %.1f | %.3f | %.3f |\n", threads[ti], row_names[r], best[r],
             best[r] > 0 ? 1e9 * threads[ti] / best[r] : 0, cpu[r],
             best[0] > 0 ? best[r] / best[0] : 0, cpu[0] > 0 ? cpu[r] / cpu[0] : 0);
  }
  for (unsigned r = 0; r < ROWS; r++) row_lib[r]->close(dev[r]);
  return failed;
}
