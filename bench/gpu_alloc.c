/* GPU allocator benchmark: alloc+free pairs per second, ours against the CUDA runtime's
 * allocators (and PyTorch's, from bench/torch/torch_alloc's output), 1-16 threads.
 *
 * Each thread owns a non-blocking stream and runs alloc+free pairs back to back for a fixed time
 * (SP_BENCH_SECONDS, default 0.5 s per cell) over one seeded size sequence, 512 B..8 MiB
 * log-uniform, the same sequence for every allocator and in torch_alloc.cpp:
 *   ours             sp_alloc/sp_free on a cuda device, each thread on its own pool stream
 *   cudaMalloc       cudaMalloc/cudaFree
 *   cudaMallocAsync  cudaMallocAsync/cudaFreeAsync on the thread's stream, default mempool with
 *                    cudaMemPoolAttrReleaseThreshold = UINT64_MAX so it caches
 * A warm-up pass over the sequence precedes each cell. ns/pair is per thread (threads x wall /
 * pairs); pairs/s is the aggregate. With SP_TORCH_RESULTS=file (lines "threads pairs_per_s", as
 * torch_alloc prints them) a PyTorch column and our ratio to it are added.
 * Built everywhere; without CUDA (or a device) it prints a "skipped:" line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SP_HAVE_CUDA
int main(void) {
  printf("gpu_alloc: skipped: built without the CUDA backend\n");
  return 0;
}
#else

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "size_mix.h"
#include "streampool.h"
#include "bench_thread.h"

enum { SEQ = 4096, MAX_THREADS = 16, N_KINDS = 3 };
static const unsigned thread_counts[] = {1, 2, 4, 8, 16};
enum { N_TC = sizeof(thread_counts) / sizeof(thread_counts[0]) };
static const char *kind_names[N_KINDS] = {"ours", "cudaMalloc", "cudaMallocAsync"};

static size_t sizes[SEQ];

static void make_sizes(void) { bench_size_mix(sizes, SEQ); }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct cell {
  int kind;
  unsigned threads;
  double seconds;
  sp_device *dev;
  pthread_barrier_t start;
  atomic_int stop;
  atomic_ullong pairs;
  atomic_int errors;
} cell;

static int pair_ours(cell *c, sp_stream *s, size_t n) {
  void *p;
  if (sp_alloc(c->dev, n, s, &p) != SP_OK) return -1;
  return sp_free(c->dev, p) == SP_OK ? 0 : -1;
}

static int pair_cuda(size_t n) {
  void *p;
  if (cudaMalloc(&p, n) != cudaSuccess) return -1;
  return cudaFree(p) == cudaSuccess ? 0 : -1;
}

static int pair_async(cudaStream_t st, size_t n) {
  void *p;
  if (cudaMallocAsync(&p, n, st) != cudaSuccess) return -1;
  return cudaFreeAsync(p, st) == cudaSuccess ? 0 : -1;
}

static int one_pair(cell *c, sp_stream *s, cudaStream_t st, size_t n) {
  switch (c->kind) {
  case 0: return pair_ours(c, s, n);
  case 1: return pair_cuda(n);
  default: return pair_async(st, n);
  }
}

static void *worker(void *arg) {
  cell *c = arg;
  cudaSetDevice(0);
  sp_stream *s = NULL;
  cudaStream_t st = NULL;
  if (c->kind == 0 && sp_stream_current(c->dev, &s) != SP_OK) atomic_fetch_add(&c->errors, 1);
  if (c->kind == 2 && cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess)
    atomic_fetch_add(&c->errors, 1);
  unsigned warm = c->kind == 1 ? 64 : SEQ;
  for (unsigned i = 0; i < warm; i++)
    if (one_pair(c, s, st, sizes[i % SEQ]) != 0) atomic_fetch_add(&c->errors, 1);
  pthread_barrier_wait(&c->start);
  unsigned long long n = 0;
  unsigned i = 0;
  while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
    for (int k = 0; k < 32; k++, i++)
      if (one_pair(c, s, st, sizes[i % SEQ]) != 0) atomic_fetch_add(&c->errors, 1);
    n += 32;
  }
  atomic_fetch_add(&c->pairs, n);
  if (st) {
    cudaStreamSynchronize(st);
    cudaStreamDestroy(st);
  }
  if (s) sp_stream_release_current(c->dev);
  return NULL;
}

/* Runs one cell; returns aggregate pairs/s (0 on error). */
static double run_cell(int kind, unsigned threads, double seconds, sp_device *dev) {
  cell c;
  memset(&c, 0, sizeof(c));
  c.kind = kind;
  c.threads = threads;
  c.seconds = seconds;
  c.dev = dev;
  pthread_barrier_init(&c.start, NULL, threads + 1);
  pthread_t th[MAX_THREADS];
  for (unsigned i = 0; i < threads; i++) bench_thread_start(&th[i], worker, &c, "bench_gpu_alloc");
  pthread_barrier_wait(&c.start);
  double t0 = now_s();
  struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
  nanosleep(&d, NULL);
  atomic_store(&c.stop, 1);
  for (unsigned i = 0; i < threads; i++) pthread_join(th[i], NULL);
  double wall = now_s() - t0;
  pthread_barrier_destroy(&c.start);
  if (atomic_load(&c.errors)) {
    fprintf(stderr, "gpu_alloc: %s, %u threads: %d errors (%s)\n", kind_names[kind], threads,
            atomic_load(&c.errors), sp_last_error());
    return 0;
  }
  return (double)atomic_load(&c.pairs) / wall;
}

static void load_torch(double torch[N_TC]) {
  const char *path = getenv("SP_TORCH_RESULTS");
  FILE *f = path ? fopen(path, "r") : NULL;
  if (!f) return;
  char line[256];
  while (fgets(line, sizeof(line), f)) {
    unsigned t;
    double v;
    if (sscanf(line, "%u %lf", &t, &v) != 2) continue;
    for (int i = 0; i < N_TC; i++)
      if (thread_counts[i] == t) torch[i] = v;
  }
  fclose(f);
}

static double ns_per_pair(double pps, unsigned threads) {
  return pps > 0 ? 1e9 * (double)threads / pps : 0;
}

int main(void) {
  int ndev = 0;
  if (sp_device_count("cuda", &ndev) != SP_OK || ndev == 0) {
    printf("gpu_alloc: skipped: no CUDA device\n");
    return 0;
  }
  const char *sec = getenv("SP_BENCH_SECONDS");
  double seconds = sec ? atof(sec) : 0.5;
  if (seconds <= 0) seconds = 0.5;
  make_sizes();
  sp_device_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.backend = "cuda";
  cfg.streams = 32;
  sp_device *dev = NULL;
  if (sp_device_open(&cfg, &dev) != SP_OK) {
    fprintf(stderr, "gpu_alloc: sp_device_open: %s\n", sp_last_error());
    return 1;
  }
  cudaSetDevice(0);
  cudaMemPool_t pool;
  uint64_t thr = UINT64_MAX;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) != cudaSuccess ||
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr) != cudaSuccess) {
    fprintf(stderr, "gpu_alloc: cannot raise the default mempool's release threshold\n");
    return 1;
  }
  double pps[N_KINDS][N_TC], torch[N_TC];
  memset(torch, 0, sizeof(torch));
  load_torch(torch);
  int have_torch = 0;
  for (int t = 0; t < N_TC; t++) have_torch |= torch[t] > 0;
  for (int t = 0; t < N_TC; t++)
    for (int k = 0; k < N_KINDS; k++) {
      pps[k][t] = run_cell(k, thread_counts[t], k == 1 ? seconds / 2 : seconds, dev);
      if (pps[k][t] == 0) return 1;
    }
  printf("gpu_alloc on %s: alloc+free pairs, sizes 512 B..8 MiB (seeded mix), %.2f s per cell\n",
         sp_device_name(dev), seconds);
  printf("%-7s | %-21s | %-21s | %-21s |%s %-12s | %-12s%s\n", "threads", "ours ns/pair  Mpair/s",
         "cudaMalloc ns  Mpair/s", "mallocAsync ns Mpair/s",
         have_torch ? " torch ns/pair Mpair/s |" : "", "ours/cudaMal", "ours/mAsync",
         have_torch ? " | ours/torch" : "");
  for (int t = 0; t < N_TC; t++) {
    unsigned th = thread_counts[t];
    printf("%-7u | %9.1f %11.3f | %9.1f %11.3f | %9.1f %11.3f |", th, ns_per_pair(pps[0][t], th),
           pps[0][t] / 1e6, ns_per_pair(pps[1][t], th), pps[1][t] / 1e6, ns_per_pair(pps[2][t], th),
           pps[2][t] / 1e6);
    if (have_torch) printf(" %9.1f %11.3f |", ns_per_pair(torch[t], th), torch[t] / 1e6);
    printf(" %11.1fx | %11.1fx", pps[0][t] / pps[1][t], pps[0][t] / pps[2][t]);
    if (have_torch) printf(" | %9.1fx", torch[t] > 0 ? pps[0][t] / torch[t] : 0.0);
    printf("\n");
  }
  sp_memory_stats ms;
  if (sp_memory_stats_get(dev, &ms) == SP_OK)
    printf("ours: reserved peak %zu bytes, backend allocs %llu, cache hits %llu of %llu allocs\n",
           ms.reserved_bytes_peak, (unsigned long long)ms.backend_allocs,
           (unsigned long long)ms.cache_hits, (unsigned long long)ms.allocs);
  sp_device_close(dev);
  return 0;
}
#endif
