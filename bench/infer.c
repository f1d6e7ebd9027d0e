/* bench/infer: our forwards/s at batch 1 for 1..16 threads, each on its own stream, f32, bf16 and
 * f16, and the batcher with 64 client threads (rows/s, p50/p99 latency).
 *
 * Modes: "forward" = sp_model_forward on device buffers allocated once per thread, then
 * sp_stream_sync (what PyTorch's model(x) + stream.synchronize() measures); "infer" =
 * sp_model_infer, host in and host out. The model is the 512-1024-1024-512 MLP.
 * The batcher row also prints its settings, rows per pass, and the allocator calls made during
 * the row: on a backend with graphs each pass should replay a captured forward (0 allocations).
 * usage: infer [--backend NAME] [--duration S] [--threads 1,2,4,8,16] [--dtypes f32,bf16,f16]
 *              [--modes forward,infer,batcher] [--clients 64] [--max-batch N] [--max-delay-us N]
 *              [--workers N]
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tools/args.h"
#include "bench_thread.h"
#include "streampool.h"

enum { IN = 512, OUT = 512, MAXT = 256, NBUCKET = 4096 };

typedef struct bench_cfg {
  const char *backend;
  double duration;
  unsigned threads[16], n_threads, clients;
  bool dtype_on[3]; /* by sp_dtype */
  bool mode_on[3];  /* forward, infer, batcher */
  sp_batcher_config bcfg;
} bench_cfg;

typedef struct bench_shared {
  sp_model *m;
  sp_batcher *b;
  int mode; /* 0 forward, 1 infer, 2 batcher */
  atomic_bool stop;
  pthread_barrier_t go;
} bench_shared;

typedef struct bench_thread {
  bench_shared *sh;
  pthread_t tid;
  uint64_t n, errors;
  uint32_t lat_us[NBUCKET]; /* 1 us buckets; the last one holds everything slower */
} bench_thread;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static sp_status bench_once(bench_thread *t, sp_stream *s, float *x, float *y, float *dx,
                            float *dy) {
  bench_shared *sh = t->sh;
  if (sh->mode == 2) return sp_batcher_infer(sh->b, x, y);
  if (sh->mode == 1) return sp_model_infer(sh->m, x, y, 1);
  sp_status st = sp_model_forward(sh->m, s, dx, dy, 1);
  return st == SP_OK ? sp_stream_sync(s) : st;
}

static void *bench_main(void *p) {
  bench_thread *t = p;
  bench_shared *sh = t->sh;
  sp_device *dev = sp_model_device(sh->m);
  float x[IN], y[OUT];
  for (int i = 0; i < IN; i++) x[i] = (float)(i % 17) / 17.0f - 0.5f;
  sp_stream *s = NULL;
  void *dx = NULL, *dy = NULL;
  if (sh->mode == 0 && (sp_stream_current(dev, &s) || sp_alloc(dev, sizeof(x), s, &dx) ||
                        sp_alloc(dev, sizeof(y), s, &dy) || sp_memcpy_async(s, dx, x, sizeof(x))))
    t->errors++;
  for (int i = 0; i < 3 && !t->errors; i++) /* warm-up */
    if (bench_once(t, s, x, y, dx, dy) != SP_OK) t->errors++;
  pthread_barrier_wait(&sh->go);
  while (!t->errors && !atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    double t0 = now_s();
    if (bench_once(t, s, x, y, dx, dy) != SP_OK) t->errors++;
    unsigned us = (unsigned)((now_s() - t0) * 1e6);
    t->lat_us[us < NBUCKET ? us : NBUCKET - 1]++;
    t->n++;
  }
  if (t->errors) fprintf(stderr, "bench thread failed: %s\n", sp_last_error());
  if (dx) sp_free(dev, dx);
  if (dy) sp_free(dev, dy);
  if (s) sp_stream_sync(s);
  sp_stream_release_current(dev);
  return NULL;
}

static double pct(const uint64_t *h, uint64_t total, double q) {
  uint64_t want = (uint64_t)ceil(q * (double)total), seen = 0;
  for (unsigned i = 0; i < NBUCKET; i++)
    if ((seen += h[i]) >= want && h[i]) return i + 0.5;
  return NBUCKET;
}

/* One measurement; prints a row. Returns calls/s (all threads together). */
static double bench_run(const bench_cfg *c, bench_shared *sh, unsigned threads, const char *label) {
  bench_thread *ts = calloc(threads, sizeof(*ts));
  uint64_t *h = calloc(NBUCKET, sizeof(*h)), n = 0, errors = 0;
  atomic_store(&sh->stop, false);
  pthread_barrier_init(&sh->go, NULL, threads + 1);
  for (unsigned i = 0; i < threads; i++) {
    ts[i].sh = sh;
    bench_thread_start(&ts[i].tid, bench_main, &ts[i], "bench_infer");
  }
  pthread_barrier_wait(&sh->go);
  double t0 = now_s();
  struct timespec d = {(time_t)c->duration, (long)((c->duration - floor(c->duration)) * 1e9)};
  nanosleep(&d, NULL);
  atomic_store(&sh->stop, true);
  double secs = now_s() - t0;
  for (unsigned i = 0; i < threads; i++) {
    pthread_join(ts[i].tid, NULL);
    n += ts[i].n;
    errors += ts[i].errors;
    for (unsigned k = 0; k < NBUCKET; k++) h[k] += ts[i].lat_us[k];
  }
  pthread_barrier_destroy(&sh->go);
  double rate = (double)n / secs;
  printf("%-22s %7u %12.0f %9.1f %9.1f%s\n", label, threads, rate, pct(h, n, 0.5), pct(h, n, 0.99),
         errors ? "  ERRORS" : "");
  fflush(stdout);
  free(ts);
  free(h);
  return rate;
}

static void parse_list(const char *s, unsigned *out, unsigned *n) {
  char buf[128];
  snprintf(buf, sizeof(buf), "%s", s);
  *n = 0;
  for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t && *n < 16; t = strtok_r(NULL, ",", &sv)) {
    unsigned v = (unsigned)strtoul(t, NULL, 10);
    if (v >= 1 && v <= MAXT) out[(*n)++] = v;
  }
}

static int parse_args(int argc, char **argv, bench_cfg *c) {
  *c = (bench_cfg){.duration = 2,
                   .threads = {1, 2, 4, 8, 16},
                   .n_threads = 5,
                   .clients = 64,
                   .dtype_on = {true, true, true},
                   .mode_on = {true, true, true}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--backend")) c->backend = v;
    else if (!strcmp(k, "--duration")) c->duration = atof(v);
    else if (!strcmp(k, "--threads")) parse_list(v, c->threads, &c->n_threads);
    else if (!strcmp(k, "--clients")) c->clients = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--max-batch")) c->bcfg.max_batch = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--max-delay-us")) c->bcfg.max_delay_us = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--workers")) c->bcfg.workers = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--modes")) {
      c->mode_on[0] = strstr(v, "forward") != NULL;
      c->mode_on[1] = strstr(v, "infer") != NULL;
      c->mode_on[2] = strstr(v, "batcher") != NULL;
    } else if (!strcmp(k, "--dtypes") && !sp_cli_dtypes(v, c->dtype_on)) {
    } else {
      fprintf(stderr, "infer: unknown option %s\n", k);
      return 2;
    }
  }
  if (argc % 2 == 0 || c->duration <= 0 || !c->n_threads || !c->clients || c->clients > MAXT) {
    fprintf(stderr,
            "usage: infer [--backend NAME] [--duration S] [--threads 1,2,4,8,16] "
            "[--dtypes f32,bf16,f16] [--modes forward,infer,batcher] [--clients 64] "
            "[--max-batch N] [--max-delay-us N] [--workers N]\n");
    return 2;
  }
  return 0;
}

/* The batcher row: c->clients threads, one row per call; then its settings, rows per pass and the
 * allocator calls made during the row (a pass that misses its captured forward allocates). */
static void bench_batcher(const bench_cfg *c, bench_shared *sh, const char *dn) {
  sp_device *dev = sp_model_device(sh->m);
  char label[64];
  sh->mode = 2;
  if (sp_batcher_create(sh->m, &c->bcfg, &sh->b) != SP_OK) {
    fprintf(stderr, "infer: batcher: %s\n", sp_last_error());
    return;
  }
  sp_memory_stats m0 = {0}, m1 = {0};
  sp_memory_stats_get(dev, &m0);
  snprintf(label, sizeof(label), "%s batcher (rows)", dn);
  bench_run(c, sh, c->clients, label);
  sp_memory_stats_get(dev, &m1);
  sp_batcher_stats bs;
  sp_batcher_stats_get(sh->b, &bs);
  double per = bs.batches ? 1e-3 / (double)bs.batches : 0; /* ns sums -> us per pass */
  printf(
      "%-22s max_batch %u, max_delay_us %u, workers %u (0: default); rows/pass %.1f over "
      "%llu passes; allocs during the row %llu\n",
      "", c->bcfg.max_batch, c->bcfg.max_delay_us, c->bcfg.workers,
      bs.batches ? (double)bs.requests / (double)bs.batches : 0, (unsigned long long)bs.batches,
      (unsigned long long)(m1.allocs - m0.allocs));
  printf("%-22s per pass: fill %.1f us, run %.1f us, answer %.1f us\n", "",
         (double)bs.fill_ns * per, (double)bs.run_ns * per, (double)bs.answer_ns * per);
  sp_batcher_destroy(sh->b);
  sh->b = NULL;
}

static int bench_dtype(const bench_cfg *c, sp_device *dev, sp_dtype dt) {
  static const unsigned dims[] = {IN, 1024, 1024, OUT};
  const char *dn = sp_cli_dtype_name(dt);
  bench_shared sh = {0};
  if (sp_model_mlp_random(dev, dims, 4, 1, dt, &sh.m) != SP_OK) {
    fprintf(stderr, "infer: %s model: %s\n", dn, sp_last_error());
    return 1;
  }
  char label[64];
  for (int mode = 0; mode < 2; mode++) {
    double base = 0;
    for (unsigned i = 0; i < c->n_threads && c->mode_on[mode]; i++) {
      sh.mode = mode;
      snprintf(label, sizeof(label), "%s %s", dn, mode ? "infer (host io)" : "forward");
      double r = bench_run(c, &sh, c->threads[i], label);
      if (i == 0) base = r;
      else
        printf("%-22s %7s x%.2f over %u thread(s)\n", "", "", base > 0 ? r / base : 0,
               c->threads[0]);
    }
  }
  if (c->mode_on[2]) bench_batcher(c, &sh, dn);
  sp_model_free(sh.m);
  return 0;
}

int main(int argc, char **argv) {
  bench_cfg c;
  if (parse_args(argc, argv, &c)) return 2;
  sp_device_config dc = {.backend = c.backend, .streams = 64};
  sp_device *dev;
  if (sp_device_open(&dc, &dev) != SP_OK) {
    fprintf(stderr, "infer: %s\n", sp_last_error());
    return 1;
  }
  printf("bench/infer: %s, MLP 512-1024-1024-512, batch 1, %.1f s per row\n", sp_device_name(dev),
         c.duration);
  printf("%-22s %7s %12s %9s %9s\n", "mode", "threads", "calls/s", "p50 us", "p99 us");
  int rc = 0;
  for (unsigned d = SP_F32; d <= SP_F16; d++)
    if (c.dtype_on[d]) rc |= bench_dtype(&c, dev, (sp_dtype)d);
  sp_memory_stats ms;
  if (sp_memory_stats_get(dev, &ms) == SP_OK)
    printf("memory: reserved peak %.1f MiB, allocs %llu, cache hits %llu, backend allocs %llu\n",
           (double)ms.reserved_bytes_peak / 1048576.0, (unsigned long long)ms.allocs,
           (unsigned long long)ms.cache_hits, (unsigned long long)ms.backend_allocs);
  sp_device_close(dev);
  return rc;
}
