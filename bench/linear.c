/* bench/linear: the small-batch linear choice on the CUDA backend, in one run.
 *
 * Rows: the launch+sync limit of the graph-replay design (a graph of three empty kernels per
 * thread, launched and synced per forward), then the 512-1024-1024-512 MLP through
 * sp_model_forward + sp_stream_sync (graph replay, as bench/infer) with STREAMPOOL_CUDA_LINEAR =
 * cublaslt (cuBLASLt only), kernel (our GEMV only) and auto (the timed choice), f32, bf16 and f16
 * (or --dtypes), at batch 1 on 1 and 16 threads and at batch 8 and 32 (or --batches, each 1..32) on
 * 16 threads; and per dtype the same model through a resident (sp_resident_forward, one caller,
 * batch 1: no launch and no sync a forward). Each row prints forwards/s, rows per second, p50/p99
 * latency and the ratio to the cuBLASLt-only row and to the limit (the resident's: to the
 * one-thread ones). In auto mode the shapes are first run once eagerly (a model built with
 * STREAMPOOL_GRAPHS=0), so the backend times them outside capture; the graphs captured
 * afterwards use the cached choice; `--log debug` prints the library's log on stderr, each timing
 * among it (its two times and the answer). usage: linear [--duration S] [--threads 1,16]
 * [--batches 8,32] [--dtypes f32,bf16,f16] [--log debug]
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "streampool.h"

#ifdef SP_HAVE_CUDA
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include "../tools/args.h"
#include "bench_thread.h"

enum { IN = 512, OUT = 512, MAXT = 64, NBUCKET = 4096 };

typedef struct run_shared {
  sp_model *m;      /* NULL: the empty-graph row                      */
  sp_resident *res; /* set: m's forwards through it (batch 1), no sync */
  unsigned batch;
  CUfunction empty;
  atomic_bool stop;
  pthread_barrier_t go;
} run_shared;

typedef struct run_thread {
  run_shared *sh;
  pthread_t tid;
  uint64_t n, errors;
  uint32_t lat_us[NBUCKET];
} run_thread;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The three driver functions the empty-graph row needs, from libcuda at run time (linking it
 * would stop this program from loading on a machine without the driver). */
static CUresult (*drv_module_load)(CUmodule *, const void *);
static CUresult (*drv_get_function)(CUfunction *, CUmodule, const char *);
static CUresult (*drv_launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                              unsigned, unsigned, CUstream, void **, void **);

static int driver_load(void) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return -1;
  *(void **)&drv_module_load = dlsym(lib, "cuModuleLoadData");
  *(void **)&drv_get_function = dlsym(lib, "cuModuleGetFunction");
  *(void **)&drv_launch = dlsym(lib, "cuLaunchKernel");
  return drv_module_load && drv_get_function && drv_launch ? 0 : -1;
}

/* An empty kernel as PTX, loaded through the driver (this file is C: no nvcc). */
static const char empty_ptx[] =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry sp_bench_empty()\n{\n\tret;\n}\n";

/* One thread of the empty-graph row: its own stream and a graph of three empty kernels. */
static int empty_loop(run_thread *t) {
  run_shared *sh = t->sh;
  cudaStream_t s;
  cudaGraph_t g;
  cudaGraphExec_t ge;
  if (cudaSetDevice(0) != cudaSuccess ||
      cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess)
    return -1;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return -1;
  for (int i = 0; i < 3; i++)
    if (drv_launch(sh->empty, 1, 1, 1, 32, 1, 1, 0, (CUstream)s, NULL, NULL) != CUDA_SUCCESS)
      return -1;
  if (cudaStreamEndCapture(s, &g) != cudaSuccess || cudaGraphInstantiate(&ge, g, 0) != cudaSuccess)
    return -1;
  for (int i = 0; i < 3; i++)
    if (cudaGraphLaunch(ge, s) != cudaSuccess || cudaStreamSynchronize(s) != cudaSuccess) return -1;
  pthread_barrier_wait(&sh->go);
  while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    double t0 = now_s();
    if (cudaGraphLaunch(ge, s) != cudaSuccess || cudaStreamSynchronize(s) != cudaSuccess) {
      t->errors++;
      break;
    }
    unsigned us = (unsigned)((now_s() - t0) * 1e6);
    t->lat_us[us < NBUCKET ? us : NBUCKET - 1]++;
    t->n++;
  }
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  return 0;
}

/* One forward whose output is ready when it returns: the resident's, or forward + sync. */
static sp_status forward_once(run_shared *sh, sp_stream *s, void *dx, void *dy) {
  if (sh->res) return sp_resident_forward(sh->res, dx, dy);
  sp_status st = sp_model_forward(sh->m, s, dx, dy, sh->batch);
  return st == SP_OK ? sp_stream_sync(s) : st;
}

static void forward_loop(run_thread *t) {
  run_shared *sh = t->sh;
  sp_device *dev = sp_model_device(sh->m);
  size_t nx = (size_t)sh->batch * IN, ny = (size_t)sh->batch * OUT;
  float *x = malloc(nx * sizeof(float));
  sp_stream *s = NULL;
  void *dx = NULL, *dy = NULL;
  for (size_t i = 0; x && i < nx; i++) x[i] = (float)(i % 17) / 17.0f - 0.5f;
  if (!x || sp_stream_current(dev, &s) || sp_alloc(dev, nx * sizeof(float), s, &dx) ||
      sp_alloc(dev, ny * sizeof(float), s, &dy) || sp_memcpy_async(s, dx, x, nx * sizeof(float)))
    t->errors++;
  if (!t->errors && sp_stream_sync(s)) t->errors++;
  for (int i = 0; i < 3 && !t->errors; i++) /* warm-up: captures the graph, starts the kernel */
    if (forward_once(sh, s, dx, dy)) t->errors++;
  pthread_barrier_wait(&sh->go);
  while (!t->errors && !atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    double t0 = now_s();
    if (forward_once(sh, s, dx, dy) != SP_OK) t->errors++;
    unsigned us = (unsigned)((now_s() - t0) * 1e6);
    t->lat_us[us < NBUCKET ? us : NBUCKET - 1]++;
    t->n++;
  }
  if (t->errors) fprintf(stderr, "bench thread failed: %s\n", sp_last_error());
  if (dx) sp_free(dev, dx);
  if (dy) sp_free(dev, dy);
  if (s) sp_stream_sync(s);
  sp_stream_release_current(dev);
  free(x);
}

static void *thread_main(void *p) {
  run_thread *t = p;
  if (t->sh->m) {
    forward_loop(t);
  } else if (empty_loop(t) != 0) {
    t->errors++;
    fprintf(stderr, "empty-graph thread: CUDA setup failed\n");
    pthread_barrier_wait(&t->sh->go);
  }
  return NULL;
}

static double pct(const uint64_t *h, uint64_t total, double q) {
  uint64_t want = (uint64_t)ceil(q * (double)total), seen = 0;
  for (unsigned i = 0; i < NBUCKET; i++)
    if ((seen += h[i]) >= want && h[i]) return i + 0.5;
  return NBUCKET;
}

/* One row; returns forwards/s (all threads together). */
static double run_row(run_shared *sh, unsigned threads, double duration, const char *label,
                      double vs_lt, double vs_limit) {
  run_thread *ts = calloc(threads, sizeof(*ts));
  uint64_t *h = calloc(NBUCKET, sizeof(*h)), n = 0, errors = 0;
  if (!ts || !h) exit(1);
  atomic_store(&sh->stop, false);
  pthread_barrier_init(&sh->go, NULL, threads + 1);
  for (unsigned i = 0; i < threads; i++) {
    ts[i].sh = sh;
    bench_thread_start(&ts[i].tid, thread_main, &ts[i], "bench_linear");
  }
  pthread_barrier_wait(&sh->go);
  double t0 = now_s();
  struct timespec d = {(time_t)duration, (long)((duration - floor(duration)) * 1e9)};
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
  char r1[16] = "", r2[16] = "";
  if (vs_lt > 0) snprintf(r1, sizeof(r1), "x%.2f", rate / vs_lt);
  if (vs_limit > 0) snprintf(r2, sizeof(r2), "%.0f%%", 100.0 * rate / vs_limit);
  printf("%-26s %5u %7u %11.0f %11.0f %8.1f %8.1f %9s %8s%s\n", label, sh->batch ? sh->batch : 1,
         threads, rate, rate * (sh->batch ? sh->batch : 1), pct(h, n, 0.5), pct(h, n, 0.99), r1, r2,
         errors ? "  ERRORS" : "");
  fflush(stdout);
  free(ts);
  free(h);
  return rate;
}

static const char *const modes[] = {"cublaslt", "kernel", "auto"};
static const unsigned dims[] = {IN, 1024, 1024, OUT};
#define LINEAR_USAGE                                                                         \
  "usage: linear [--duration S] [--threads 1,16] [--batches 8,32] [--dtypes f32,bf16,f16]\n" \
  "              [--log debug]   (the library's log on stderr: e.g. each auto-mode timing)\n"

static void log_stderr(void *user, sp_log_level level, const char *msg) {
  (void)user;
  (void)level;
  fprintf(stderr, "streampool: %s\n", msg);
}

enum { MAXB = 32, NBATCH = 8 };
static unsigned batches[NBATCH + 1] = {1, 8, 32}; /* batch 1, then the --batches list */
static size_t n_batches = 3;

/* "8,32": 1..NBATCH values of 1..MAXB into batches[1..], in the CLI's list grammar
 * (tools/args.h: no empty item, no sign or space); 0 on success. */
static int parse_batches(const char *v) {
  unsigned n = 0;
  if (sp_cli_list(v, 1, MAXB, false, NBATCH, batches + 1, &n)) return -1;
  n_batches = 1 + n;
  return 0;
}

/* Eager forwards of every benchmarked batch on a model without graphs: the timing happens here,
 * outside capture, and is cached per device for the graphs captured later. */
static int warm_choices(sp_device *dev, sp_dtype dt) {
  setenv("STREAMPOOL_GRAPHS", "0", 1);
  sp_model *m = NULL;
  sp_status st = sp_model_mlp_random(dev, dims, 4, 1, dt, &m);
  unsetenv("STREAMPOOL_GRAPHS");
  if (st != SP_OK) return -1;
  sp_stream *s = NULL;
  void *dx = NULL, *dy = NULL;
  st = sp_stream_current(dev, &s);
  if (st == SP_OK) st = sp_alloc(dev, MAXB * IN * sizeof(float), s, &dx);
  if (st == SP_OK) st = sp_alloc(dev, MAXB * OUT * sizeof(float), s, &dy);
  if (st == SP_OK) st = sp_memset_async(s, dx, 0, MAXB * IN * sizeof(float));
  for (size_t i = 0; i < n_batches && st == SP_OK; i++)
    st = sp_model_forward(m, s, dx, dy, batches[i]);
  if (st == SP_OK) st = sp_stream_sync(s);
  if (dx) sp_free(dev, dx);
  if (dy) sp_free(dev, dy);
  sp_stream_release_current(dev);
  sp_model_free(m);
  return st == SP_OK ? 0 : -1;
}

int main(int argc, char **argv) {
  double duration = 1.0;
  unsigned threads[2] = {1, 16};
  bool dtype_on[3] = {true, true, true};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--threads") &&
             sscanf(argv[i + 1], "%u,%u", &threads[0], &threads[1]) == 2) {
    } else if (!strcmp(argv[i], "--batches") && parse_batches(argv[i + 1]) == 0) {
    } else if (!strcmp(argv[i], "--dtypes") && !sp_cli_dtypes(argv[i + 1], dtype_on)) {
    } else if (!strcmp(argv[i], "--log") && !strcmp(argv[i + 1], "debug")) {
      sp_log_set_hook(log_stderr, NULL, SP_LOG_DEBUG);
    } else {
      fprintf(stderr, LINEAR_USAGE);
      return 2;
    }
  }
  if (argc % 2 == 0 || duration <= 0 || !threads[0] || !threads[1] || threads[0] > MAXT ||
      threads[1] > MAXT) {
    fprintf(stderr, LINEAR_USAGE);
    return 2;
  }
  CUmodule mod;
  run_shared empty = {0};
  if (cudaSetDevice(0) != cudaSuccess || cudaFree(0) != cudaSuccess || driver_load() != 0 ||
      drv_module_load(&mod, empty_ptx) != CUDA_SUCCESS ||
      drv_get_function(&empty.empty, mod, "sp_bench_empty") != CUDA_SUCCESS) {
    fprintf(stderr, "linear: no CUDA device or driver\n");
    return 1;
  }
  printf(
      "bench/linear: MLP 512-1024-1024-512, sp_model_forward + sync (graph replay), %.1f s a "
      "row\n",
      duration);
  printf("%-26s %5s %7s %11s %11s %8s %8s %9s %8s\n", "row", "batch", "threads", "forwards/s",
         "rows/s", "p50 us", "p99 us", "/cublaslt", "/limit");
  double limit[2];
  for (int k = 0; k < 2; k++)
    limit[k] = run_row(&empty, threads[k], duration, "limit: 3 empty kernels", 0, 0);
  int rc = 0;
  for (unsigned dti = SP_F32; dti <= SP_F16; dti++) {
    sp_dtype dt = (sp_dtype)dti;
    if (!dtype_on[dt]) continue;
    double lt[NBATCH + 1][2] = {{0}};
    for (int mi = 0; mi < 3; mi++) {
      setenv("STREAMPOOL_CUDA_LINEAR", modes[mi], 1);
      sp_device_config dc = {.backend = "cuda", .streams = 64};
      sp_device *dev = NULL;
      sp_status st = sp_device_open(&dc, &dev);
      unsetenv("STREAMPOOL_CUDA_LINEAR");
      run_shared sh = {0};
      if (st == SP_OK && mi == 2 && warm_choices(dev, dt) != 0) st = SP_ERR_BACKEND;
      if (st == SP_OK) st = sp_model_mlp_random(dev, dims, 4, 1, dt, &sh.m);
      if (st != SP_OK) {
        fprintf(stderr, "linear: %s: %s\n", modes[mi], sp_last_error());
        if (dev) sp_device_close(dev);
        rc = 1;
        continue;
      }
      for (size_t bi = 0; bi < n_batches; bi++)
        for (int k = 0; k < 2; k++) {
          if (bi > 0 && k == 0) continue; /* batches above 1: the many-thread column only */
          char label[64];
          snprintf(label, sizeof(label), "%s %s", sp_cli_dtype_name(dt), modes[mi]);
          sh.batch = batches[bi];
          double r =
              run_row(&sh, threads[k], duration, label, mi ? lt[bi][k] : 0, bi == 0 ? limit[k] : 0);
          if (mi == 0) lt[bi][k] = r;
        }
      if (mi == 2) { /* the resident: one caller, batch 1, the same model */
        sh.batch = 1;
        st = sp_resident_open(sh.m, &sh.res);
        char label[64];
        snprintf(label, sizeof(label), "%s resident", sp_cli_dtype_name(dt));
        const bool one = threads[0] == 1; /* the ratios need one-thread rows */
        if (st == SP_OK) run_row(&sh, 1, duration, label, one ? lt[0][0] : 0, one ? limit[0] : 0);
        else fprintf(stderr, "linear: resident: %s\n", sp_last_error()), rc = 1;
        sp_resident_close(sh.res);
      }
      sp_model_free(sh.m);
      sp_device_close(dev);
    }
  }
  return rc; /* the module goes with the process */
}
#else
int main(void) {
  printf("bench/linear: skipped: built without the CUDA backend\n");
  return 0;
}
#endif
