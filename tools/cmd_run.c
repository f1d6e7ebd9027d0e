/* streampool run: many threads run one model at once; a scaling table, checked outputs.
 *
 * For each thread count T of --threads, T threads call sp_model_infer (or sp_batcher_infer with
 * --batcher) for --duration seconds, each on its own current stream. Inputs come from a fixed set
 * of REF_ROWS seeded rows whose outputs were computed once, single-threaded, before the runs;
 * every output of the run is compared with its reference row (error = max |y - ref| / max |ref|
 * over the row) and a wrong one (above the dtype's tolerance) or a failed call makes the command
 * exit 1. Latencies go into per-thread log-linear histograms (1/32 relative resolution), merged
 * for p50/p99. Output: a table on stdout (or one JSON document with --json), a progress bar on
 * stderr when it is a terminal, then the allocator's counters.
 *
 * --devices all|0,1,...: one device per index (of the chosen backend), each with its own model
 * and reference; thread i runs on device i mod n (T is the total thread count); each row of the
 * table then has one line per device and a total line, and memory is reported per device.
 */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "streampool.h"

enum {
  REF_ROWS = 64,       /* distinct seeded input rows with reference outputs */
  MAX_RUNS = 16,       /* thread counts in one --threads list               */
  MAX_THREADS = 1024,
  LAT_BUCKETS = 1920,  /* log-linear: 32 per power of two, up to 2^63 ns     */
  MAX_DEVICES = 16,    /* indices in one --devices list                     */
};

typedef struct run_opts {
  const char *backend, *model_path;
  sp_dtype dtype;
  unsigned threads[MAX_RUNS], n_runs;
  unsigned batch;
  double duration_s;
  bool batcher, json, progress;
  bool self_test_wrong; /* corrupt one output, to show the check catches it */
  sp_batcher_config bcfg;
  uint64_t seed;
  unsigned devices[MAX_DEVICES], n_devices; /* --devices; n_devices 0: index 0 only       */
  bool devices_all;                         /* --devices all: every device of the backend */
} run_opts;

typedef struct run_ref {
  unsigned in_f, out_f;
  float *in;    /* [REF_ROWS][in_f]   */
  float *out;   /* [REF_ROWS][out_f]  */
  double tol;
} run_ref;

typedef struct run_fleet { /* the devices of --devices, each with its model and reference */
  unsigned n;
  unsigned index[MAX_DEVICES];
  sp_device *dev[MAX_DEVICES];
  sp_model *m[MAX_DEVICES];
  run_ref ref[MAX_DEVICES];
} run_fleet;

typedef struct run_result {
  unsigned threads;
  uint64_t requests, failures, wrong, batches;
  double seconds, max_err, p50_us, p99_us, speedup;
  char first_error[256];
} run_result;

typedef struct run_shared { /* one row of the table */
  sp_model *m[MAX_DEVICES];         /* per device; thread i uses device i mod n_dev */
  sp_batcher *b[MAX_DEVICES];
  const run_opts *o;
  const run_ref *ref[MAX_DEVICES];
  atomic_bool stop;
  atomic_ullong requests;
  pthread_barrier_t start;
} run_shared;

typedef struct run_thread {
  run_shared *sh;
  unsigned index;
  unsigned dev; /* index into run_shared's per-device arrays */
  pthread_t tid;
  uint64_t requests, failures, wrong;
  double max_err;
  char first_error[256];
  uint64_t lat[LAT_BUCKETS];
} run_thread;

/* ---- latency histogram ---------------------------------------------------------------------- */

static unsigned lat_bucket(uint64_t ns) {
  if (ns < 32) return (unsigned)ns;
  unsigned e = 63u - (unsigned)__builtin_clzll(ns);
  return (e - 4) * 32 + (unsigned)((ns >> (e - 5)) & 31);
}

static double lat_value_us(unsigned idx) { /* bucket midpoint */
  if (idx < 32) return idx / 1000.0;
  unsigned e = idx / 32 + 4, sub = idx % 32;
  double lo = (double)(32 + sub) * ldexp(1.0, (int)e - 5);
  return (lo + ldexp(1.0, (int)e - 5) / 2) / 1000.0;
}

static double lat_quantile(const uint64_t *h, uint64_t total, double q) {
  if (!total) return 0;
  uint64_t want = (uint64_t)ceil(q * (double)total), seen = 0;
  for (unsigned i = 0; i < LAT_BUCKETS; i++)
    if ((seen += h[i]) >= want && h[i]) return lat_value_us(i);
  return lat_value_us(LAT_BUCKETS - 1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- options -------------------------------------------------------------------------------- */

static void run_usage(FILE *f) {
  fprintf(f,
          "usage: streampool run [options]\n"
          "  --backend NAME      host, cuda or auto (default: best available)\n"
          "  --model FILE        safetensors MLP state dict (default: built-in seeded MLP "
          "512-1024-1024-512)\n"
          "  --dtype f32|bf16    weights and activations (default f32)\n"
          "  --threads LIST      thread counts, e.g. 1,2,4,8 (default 1,2,4,8)\n"
          "  --batch N           rows per call (default 1; must be 1 with --batcher)\n"
          "  --duration SECONDS  per thread count (default 3)\n"
          "  --batcher[=on|off]  send single rows through a batcher (default off)\n"
          "  --max-batch N  --max-delay-us N  --workers N   batcher settings (0: defaults)\n"
          "  --clients N         with --batcher: N client threads (same as --threads N)\n"
          "  --seed N            model and input seed (default 1)\n"
          "  --devices all|LIST  device indices, e.g. 0,1: threads spread round-robin, one model\n"
          "                      per device, a row per device and a total (default 0)\n"
          "  --json              one JSON document on stdout instead of the table\n"
          "  --no-progress       no progress bar on stderr\n"
          "  --self-test-wrong-output  corrupt one output to show that the check fails the run\n"
          "Exit status: 0 all outputs correct, 1 a wrong output or a failed call, 2 bad usage.\n");
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out) {
  char *end;
  unsigned long v = strtoul(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) return 0;
  *out = (unsigned)v;
  return 1;
}

/* "all" or distinct indices 0..63, at most MAX_DEVICES. */
static int parse_devices(const char *s, run_opts *o) {
  o->n_devices = 0;
  o->devices_all = !strcmp(s, "all");
  if (o->devices_all) return 1;
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", s);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    unsigned v;
    if (o->n_devices == MAX_DEVICES || !parse_uint(tok, 0, 63, &v)) return 0;
    for (unsigned i = 0; i < o->n_devices; i++)
      if (o->devices[i] == v) return 0;
    o->devices[o->n_devices++] = v;
  }
  return o->n_devices > 0;
}

static int parse_threads(const char *s, run_opts *o) {
  o->n_runs = 0;
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", s);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (o->n_runs == MAX_RUNS || !parse_uint(tok, 1, MAX_THREADS, &o->threads[o->n_runs]))
      return 0;
    o->n_runs++;
  }
  return o->n_runs > 0;
}

enum { OPT_BACKEND = 256, OPT_MODEL, OPT_DTYPE, OPT_THREADS, OPT_BATCH, OPT_DURATION,
       OPT_BATCHER, OPT_MAX_BATCH, OPT_MAX_DELAY, OPT_WORKERS, OPT_CLIENTS, OPT_SEED, OPT_JSON,
       OPT_NO_PROGRESS, OPT_HELP, OPT_SELF_TEST, OPT_DEVICES };

static const struct option run_long_opts[] = {
    {"backend", required_argument, 0, OPT_BACKEND}, {"model", required_argument, 0, OPT_MODEL},
    {"dtype", required_argument, 0, OPT_DTYPE}, {"threads", required_argument, 0, OPT_THREADS},
    {"batch", required_argument, 0, OPT_BATCH}, {"duration", required_argument, 0, OPT_DURATION},
    {"batcher", optional_argument, 0, OPT_BATCHER},
    {"max-batch", required_argument, 0, OPT_MAX_BATCH},
    {"max-delay-us", required_argument, 0, OPT_MAX_DELAY},
    {"workers", required_argument, 0, OPT_WORKERS}, {"clients", required_argument, 0, OPT_CLIENTS},
    {"seed", required_argument, 0, OPT_SEED}, {"json", no_argument, 0, OPT_JSON},
    {"no-progress", no_argument, 0, OPT_NO_PROGRESS}, {"help", no_argument, 0, OPT_HELP},
    {"self-test-wrong-output", no_argument, 0, OPT_SELF_TEST},
    {"devices", required_argument, 0, OPT_DEVICES},
    {0, 0, 0, 0}};

/* One option; 0 ok, 2 bad value. */
static int run_opt(int c, const char *arg, run_opts *o, unsigned *clients) {
  char *end;
  switch (c) {
  case OPT_BACKEND: o->backend = arg; return 0;
  case OPT_MODEL: o->model_path = arg; return 0;
  case OPT_DTYPE:
    if (!strcmp(arg, "f32")) o->dtype = SP_F32;
    else if (!strcmp(arg, "bf16")) o->dtype = SP_BF16;
    else return 2;
    return 0;
  case OPT_THREADS: return parse_threads(arg, o) ? 0 : 2;
  case OPT_BATCH: return parse_uint(arg, 1, 65536, &o->batch) ? 0 : 2;
  case OPT_DURATION:
    o->duration_s = strtod(arg, &end);
    return *arg && !*end && o->duration_s > 0 && o->duration_s <= 3600 ? 0 : 2;
  case OPT_BATCHER:
    if (!arg || !strcmp(arg, "on")) o->batcher = true;
    else if (!strcmp(arg, "off")) o->batcher = false;
    else return 2;
    return 0;
  case OPT_MAX_BATCH: return parse_uint(arg, 0, 65536, &o->bcfg.max_batch) ? 0 : 2;
  case OPT_MAX_DELAY: return parse_uint(arg, 0, 10000000, &o->bcfg.max_delay_us) ? 0 : 2;
  case OPT_WORKERS: return parse_uint(arg, 0, 128, &o->bcfg.workers) ? 0 : 2;
  case OPT_CLIENTS: return parse_uint(arg, 1, MAX_THREADS, clients) ? 0 : 2;
  case OPT_SEED:
    o->seed = strtoull(arg, &end, 10);
    return *arg && !*end ? 0 : 2;
  case OPT_JSON: o->json = true; return 0;
  case OPT_NO_PROGRESS: o->progress = false; return 0;
  case OPT_SELF_TEST: o->self_test_wrong = true; return 0;
  case OPT_DEVICES: return parse_devices(arg, o) ? 0 : 2;
  default: return 2;
  }
}

/* 0 ok, 1 --help shown, 2 bad usage (message printed). */
static int run_parse(int argc, char **argv, run_opts *o) {
  *o = (run_opts){.batch = 1, .duration_s = 3, .progress = true, .seed = 1, .n_runs = 4,
                  .threads = {1, 2, 4, 8}};
  unsigned clients = 0;
  int c, li = -1;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", run_long_opts, &li)) != -1) {
    if (c == 'h' || c == OPT_HELP) {
      run_usage(stdout);
      return 1;
    }
    if (c == '?' || c == ':') {
      fprintf(stderr, "streampool run: unknown option or missing value: '%s'\n\n",
              argv[optind - 1 < argc ? optind - 1 : argc - 1]);
      run_usage(stderr);
      return 2;
    }
    if (run_opt(c, optarg, o, &clients)) {
      fprintf(stderr, "streampool run: bad value '%s' for --%s (see --help)\n",
              optarg ? optarg : "", li >= 0 ? run_long_opts[li].name : "?");
      return 2;
    }
    li = -1;
  }
  if (optind < argc) {
    fprintf(stderr, "streampool run: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (clients) {
    o->threads[0] = clients;
    o->n_runs = 1;
  }
  if (o->batcher && o->batch != 1) {
    fprintf(stderr, "streampool run: --batcher sends single rows: use --batch 1\n");
    return 2;
  }
  if (!isatty(STDERR_FILENO)) o->progress = false;
  return 0;
}

/* ---- reference ------------------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Seeded inputs and their outputs, one row at a time on this thread's stream. */
static sp_status ref_build(sp_model *m, const run_opts *o, run_ref *ref) {
  ref->in_f = sp_model_in_features(m);
  ref->out_f = sp_model_out_features(m);
  ref->tol = o->dtype == SP_BF16 ? 2e-2 : 1e-4;
  ref->in = malloc(sizeof(float) * REF_ROWS * ref->in_f);
  ref->out = malloc(sizeof(float) * REF_ROWS * ref->out_f);
  if (!ref->in || !ref->out) return SP_ERR_HOST_MEMORY;
  uint64_t x = o->seed * 0x100000001B3ull + 7;
  for (size_t i = 0; i < (size_t)REF_ROWS * ref->in_f; i++)
    ref->in[i] = (float)((double)(splitmix(&x) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  for (unsigned r = 0; r < REF_ROWS; r++) {
    sp_status st = sp_model_infer(m, ref->in + (size_t)r * ref->in_f,
                                  ref->out + (size_t)r * ref->out_f, 1);
    if (st != SP_OK) return st;
  }
  return SP_OK;
}

static double row_error(const float *y, const float *want, unsigned n) {
  double scale = 1e-6, err = 0;
  for (unsigned i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
  for (unsigned i = 0; i < n; i++) {
    double d = fabs((double)y[i] - want[i]);
    if (!(d <= err)) err = isnan(d) ? INFINITY : d;
  }
  return err / scale;
}

/* ---- the worker threads --------------------------------------------------------------------- */

static void thread_note_error(run_thread *t, sp_status st) {
  if (!t->failures++)
    snprintf(t->first_error, sizeof(t->first_error), "%s: %s", sp_status_str(st),
             sp_last_error());
}

/* One call of batch rows starting at reference row r0; checks every output row. */
static void thread_call(run_thread *t, float *in, float *out, unsigned r0) {
  const run_shared *sh = t->sh;
  const run_ref *ref = sh->ref[t->dev];
  sp_batcher *b = sh->b[t->dev];
  unsigned batch = sh->o->batch;
  for (unsigned j = 0; j < batch; j++)
    memcpy(in + (size_t)j * ref->in_f, ref->in + (size_t)((r0 + j) % REF_ROWS) * ref->in_f,
           sizeof(float) * ref->in_f);
  uint64_t t0 = now_ns();
  sp_status st = b ? sp_batcher_infer(b, in, out) : sp_model_infer(sh->m[t->dev], in, out, batch);
  uint64_t t1 = now_ns();
  if (st != SP_OK) {
    thread_note_error(t, st);
    return;
  }
  t->lat[lat_bucket(t1 - t0)]++;
  if (sh->o->self_test_wrong && t->index == 0 && t->requests == 3) out[0] += 1.0f;
  for (unsigned j = 0; j < batch; j++) {
    double e = row_error(out + (size_t)j * ref->out_f,
                         ref->out + (size_t)((r0 + j) % REF_ROWS) * ref->out_f, ref->out_f);
    if (e > t->max_err) t->max_err = e;
    if (!(e <= ref->tol)) t->wrong++;
  }
}

static void *thread_main(void *arg) {
  run_thread *t = arg;
  run_shared *sh = t->sh;
  size_t batch = sh->o->batch;
  float *in = malloc(sizeof(float) * batch * sh->ref[t->dev]->in_f);
  float *out = malloc(sizeof(float) * batch * sh->ref[t->dev]->out_f);
  unsigned r = t->index * 7;
  if (in && out) thread_call(t, in, out, r); /* warm-up: binds the stream, fills the cache */
  memset(t->lat, 0, sizeof(t->lat));
  t->requests = 0;
  pthread_barrier_wait(&sh->start);
  while (in && out && !atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    thread_call(t, in, out, r);
    r += (unsigned)batch;
    t->requests++;
    atomic_fetch_add_explicit(&sh->requests, 1, memory_order_relaxed);
  }
  if (!in || !out) t->failures++;
  free(in);
  free(out);
  sp_device *dev = sp_model_device(sh->m[t->dev]);
  sp_stream_release_current(dev);
  return NULL;
}

/* ---- one row of the table ------------------------------------------------------------------- */

static void progress_draw(const run_opts *o, unsigned threads, double elapsed, uint64_t req) {
  int width = 30, fill = (int)(width * fmin(1.0, elapsed / o->duration_s));
  fprintf(stderr, "\r  threads %-4u [%.*s%*s] %5.1f/%.1f s %10llu requests", threads, fill,
          "##############################", width - fill, "", elapsed, o->duration_s,
          (unsigned long long)req);
  fflush(stderr);
}

/* Sleeps through the run, drawing the progress bar; returns the measured seconds. */
static double run_wait(run_shared *sh, unsigned threads) {
  const run_opts *o = sh->o;
  uint64_t t0 = now_ns(), end = t0 + (uint64_t)(o->duration_s * 1e9);
  for (uint64_t t = t0; t < end; t = now_ns()) {
    uint64_t step = end - t < 100000000ull ? end - t : 100000000ull;
    struct timespec ts = {(time_t)(step / 1000000000ull), (long)(step % 1000000000ull)};
    nanosleep(&ts, NULL);
    if (o->progress)
      progress_draw(o, threads, (double)(now_ns() - t0) / 1e9, atomic_load(&sh->requests));
  }
  atomic_store(&sh->stop, true);
  double secs = (double)(now_ns() - t0) / 1e9;
  if (o->progress) fprintf(stderr, "\r\033[K");
  return secs;
}

/* Merges the threads of device dev (-1: all) into res. */
static void run_merge(run_thread *ts, unsigned n, int dev, run_result *res, uint64_t *lat) {
  for (unsigned i = 0; i < n; i++) {
    if (dev >= 0 && ts[i].dev != (unsigned)dev) continue;
    res->requests += ts[i].requests;
    res->failures += ts[i].failures;
    res->wrong += ts[i].wrong;
    res->max_err = fmax(res->max_err, ts[i].max_err);
    if (ts[i].failures && !res->first_error[0])
      snprintf(res->first_error, sizeof(res->first_error), "%s", ts[i].first_error);
    for (unsigned k = 0; k < LAT_BUCKETS; k++) lat[k] += ts[i].lat[k];
  }
  uint64_t total = 0;
  for (unsigned k = 0; k < LAT_BUCKETS; k++) total += lat[k];
  res->p50_us = lat_quantile(lat, total, 0.50);
  res->p99_us = lat_quantile(lat, total, 0.99);
}

/* Starts one batcher per device (with --batcher); on failure destroys those made and says why. */
static int run_batchers(const run_fleet *f, const run_opts *o, run_shared *sh, run_result *res) {
  for (unsigned d = 0; o->batcher && d < f->n; d++) {
    if (sp_batcher_create(f->m[d], &o->bcfg, &sh->b[d]) == SP_OK) continue;
    snprintf(res->first_error, sizeof(res->first_error), "sp_batcher_create: %s",
             sp_last_error());
    res->failures = 1;
    for (unsigned k = 0; k < d; k++) sp_batcher_destroy(sh->b[k]);
    return 1;
  }
  return 0;
}

/* Per-device results (only with several devices), batcher counters, batchers destroyed. */
static void run_per_device(const run_fleet *f, run_shared *sh, run_thread *ts, unsigned threads,
                           run_result *res, run_result *res_dev, uint64_t *lat) {
  for (unsigned d = 0; d < f->n; d++) {
    run_result *rd = &res_dev[d];
    memset(rd, 0, sizeof(*rd));
    rd->threads = threads / f->n + (d < threads % f->n ? 1u : 0u);
    rd->seconds = res->seconds;
    if (f->n > 1) {
      memset(lat, 0, sizeof(*lat) * LAT_BUCKETS);
      run_merge(ts, threads, (int)d, rd, lat);
    }
    if (!sh->b[d]) continue;
    sp_batcher_stats bs;
    if (sp_batcher_stats_get(sh->b[d], &bs) == SP_OK) {
      rd->batches = bs.batches;
      res->batches += bs.batches;
    }
    sp_batcher_destroy(sh->b[d]);
  }
}

static int run_one(const run_fleet *f, const run_opts *o, unsigned threads, run_result *res,
                   run_result *res_dev) {
  memset(res, 0, sizeof(*res));
  res->threads = threads;
  run_shared sh = {.o = o};
  for (unsigned d = 0; d < f->n; d++) {
    sh.m[d] = f->m[d];
    sh.ref[d] = &f->ref[d];
  }
  if (run_batchers(f, o, &sh, res)) return 1;
  run_thread *ts = calloc(threads, sizeof(*ts));
  uint64_t *lat = calloc(LAT_BUCKETS, sizeof(*lat));
  if (!ts || !lat) {
    fprintf(stderr, "streampool run: out of host memory\n");
    exit(1);
  }
  pthread_barrier_init(&sh.start, NULL, threads + 1);
  unsigned started = 0;
  for (; started < threads; started++) {
    ts[started] = (run_thread){.sh = &sh, .index = started, .dev = started % f->n};
    if (pthread_create(&ts[started].tid, NULL, thread_main, &ts[started])) break;
  }
  if (started < threads) { /* cannot happen often; keep the barrier count honest */
    fprintf(stderr, "streampool run: could start only %u threads\n", started);
    exit(1);
  }
  pthread_barrier_wait(&sh.start);
  res->seconds = run_wait(&sh, threads);
  for (unsigned i = 0; i < threads; i++) pthread_join(ts[i].tid, NULL);
  run_merge(ts, threads, -1, res, lat);
  run_per_device(f, &sh, ts, threads, res, res_dev, lat);
  pthread_barrier_destroy(&sh.start);
  free(ts);
  free(lat);
  return res->failures || res->wrong;
}

/* ---- reporting ------------------------------------------------------------------------------ */

static void print_header(const run_fleet *f, const run_opts *o, const char *model_desc) {
  if (f->n == 1)
    printf("streampool run: %s (backend %s)\n", sp_device_name(f->dev[0]),
           sp_device_backend(f->dev[0]));
  else
    printf("streampool run: %u devices (backend %s), threads spread round-robin, one model "
           "each\n", f->n, sp_device_backend(f->dev[0]));
  for (unsigned d = 0; f->n > 1 && d < f->n; d++)
    printf("  device %u: %s\n", f->index[d], sp_device_name(f->dev[d]));
  printf("model: %s, %s, batch %u, %.1f s per thread count, outputs checked against a "
         "single-threaded reference (%d rows, tolerance %g)\n", model_desc,
         o->dtype == SP_BF16 ? "bf16" : "f32", o->batch, o->duration_s, REF_ROWS,
         o->dtype == SP_BF16 ? 2e-2 : 1e-4);
  if (o->batcher)
    printf("batcher: max_batch %u, max_delay_us %u, workers %u (0: defaults 16, 200, 4)\n",
           o->bcfg.max_batch, o->bcfg.max_delay_us, o->bcfg.workers);
  printf("\n%s%8s %12s %12s %9s %9s %8s %10s%s\n", f->n > 1 ? " device " : "", o->batcher ? "clients" : "threads", "requests/s",
         "samples/s", "p50 us", "p99 us", "speedup", "max err", o->batcher ? "  rows/batch" : "");
  fflush(stdout);
}

/* One line; label (a device index or "total") only with several devices. */
static void print_row(const run_opts *o, const run_result *r, const char *label) {
  double rps = r->seconds > 0 ? (double)r->requests / r->seconds : 0;
  if (label) printf("%7s ", label);
  printf("%8u %12.1f %12.1f %9.1f %9.1f %7.2fx %10.2e", r->threads, rps, rps * o->batch,
         r->p50_us, r->p99_us, r->speedup, r->max_err);
  if (o->batcher) printf("  %10.1f", r->batches ? (double)r->requests / (double)r->batches : 0);
  if (r->failures) printf("   %llu FAILED: %s", (unsigned long long)r->failures, r->first_error);
  if (r->wrong) printf("   %llu WRONG outputs", (unsigned long long)r->wrong);
  printf("\n");
  fflush(stdout);
}

static void print_memory(const sp_memory_stats *ms, const char *label) {
  printf("%smemory%s: allocated %.1f MiB (peak %.1f), reserved %.1f MiB (peak %.1f); allocs %llu, "
         "cache hits %llu, backend allocs %llu, cross-stream reuses %llu, deferred frees %llu, "
         "OOM retries %llu\n", label ? "" : "\n", label ? label : "",
         (double)ms->allocated_bytes / 1048576.0,
         (double)ms->allocated_bytes_peak / 1048576.0, (double)ms->reserved_bytes / 1048576.0,
         (double)ms->reserved_bytes_peak / 1048576.0, (unsigned long long)ms->allocs,
         (unsigned long long)ms->cache_hits, (unsigned long long)ms->backend_allocs,
         (unsigned long long)ms->cross_stream_reuses, (unsigned long long)ms->deferred_frees,
         (unsigned long long)ms->oom_retries);
}

static cJSON *json_run(const run_opts *o, const run_result *r) {
  cJSON *j = cJSON_CreateObject();
  double rps = r->seconds > 0 ? (double)r->requests / r->seconds : 0;
  cJSON_AddNumberToObject(j, "threads", r->threads);
  cJSON_AddNumberToObject(j, "requests", (double)r->requests);
  cJSON_AddNumberToObject(j, "seconds", r->seconds);
  cJSON_AddNumberToObject(j, "requests_per_s", rps);
  cJSON_AddNumberToObject(j, "samples_per_s", rps * o->batch);
  cJSON_AddNumberToObject(j, "p50_us", r->p50_us);
  cJSON_AddNumberToObject(j, "p99_us", r->p99_us);
  cJSON_AddNumberToObject(j, "speedup", r->speedup);
  cJSON_AddNumberToObject(j, "max_err", r->max_err);
  cJSON_AddNumberToObject(j, "failures", (double)r->failures);
  cJSON_AddNumberToObject(j, "wrong", (double)r->wrong);
  if (o->batcher) cJSON_AddNumberToObject(j, "batches", (double)r->batches);
  if (r->first_error[0]) cJSON_AddStringToObject(j, "first_error", r->first_error);
  return j;
}

static cJSON *json_memory(const sp_memory_stats *ms) {
  cJSON *mem = cJSON_CreateObject();
  cJSON_AddNumberToObject(mem, "allocated_bytes_peak", (double)ms->allocated_bytes_peak);
  cJSON_AddNumberToObject(mem, "reserved_bytes_peak", (double)ms->reserved_bytes_peak);
  cJSON_AddNumberToObject(mem, "allocs", (double)ms->allocs);
  cJSON_AddNumberToObject(mem, "cache_hits", (double)ms->cache_hits);
  cJSON_AddNumberToObject(mem, "backend_allocs", (double)ms->backend_allocs);
  cJSON_AddNumberToObject(mem, "cross_stream_reuses", (double)ms->cross_stream_reuses);
  return mem;
}

/* With several devices: "devices" [{index, name, memory}] at the top, and per run "devices"
 * [{device, ...row}]. "memory" is device 0's (the only one without --devices). */
static void print_json(const run_fleet *f, const run_opts *o, const char *model_desc,
                       const run_result *res, const run_result *res_dev,
                       const sp_memory_stats *ms, bool ok) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "device", sp_device_name(f->dev[0]));
  cJSON_AddStringToObject(root, "backend", sp_device_backend(f->dev[0]));
  cJSON_AddStringToObject(root, "model", model_desc);
  cJSON_AddStringToObject(root, "dtype", o->dtype == SP_BF16 ? "bf16" : "f32");
  cJSON_AddNumberToObject(root, "batch", o->batch);
  cJSON_AddNumberToObject(root, "duration_s", o->duration_s);
  cJSON_AddNumberToObject(root, "tolerance", o->dtype == SP_BF16 ? 2e-2 : 1e-4);
  cJSON_AddBoolToObject(root, "batcher", o->batcher);
  cJSON *runs = cJSON_AddArrayToObject(root, "runs");
  for (unsigned i = 0; i < o->n_runs; i++) {
    cJSON *run = json_run(o, &res[i]);
    cJSON *per = f->n > 1 ? cJSON_AddArrayToObject(run, "devices") : NULL;
    for (unsigned d = 0; per && d < f->n; d++) {
      cJSON *row = json_run(o, &res_dev[(size_t)i * MAX_DEVICES + d]);
      cJSON_AddNumberToObject(row, "device", f->index[d]);
      cJSON_AddItemToArray(per, row);
    }
    cJSON_AddItemToArray(runs, run);
  }
  cJSON_AddItemToObject(root, "memory", json_memory(&ms[0]));
  cJSON *devs = f->n > 1 ? cJSON_AddArrayToObject(root, "devices") : NULL;
  for (unsigned d = 0; devs && d < f->n; d++) {
    cJSON *dj = cJSON_CreateObject();
    cJSON_AddNumberToObject(dj, "index", f->index[d]);
    cJSON_AddStringToObject(dj, "name", sp_device_name(f->dev[d]));
    cJSON_AddItemToObject(dj, "memory", json_memory(&ms[d]));
    cJSON_AddItemToArray(devs, dj);
  }
  cJSON_AddBoolToObject(root, "ok", ok);
  char *s = cJSON_Print(root);
  if (s) printf("%s\n", s);
  free(s);
  cJSON_Delete(root);
}

/* ---- the command ---------------------------------------------------------------------------- */

/* The device indices of --devices ("all": every device of the backend, at most MAX_DEVICES). */
static sp_status fleet_indices(const run_opts *o, run_fleet *f) {
  if (!o->devices_all) {
    f->n = o->n_devices ? o->n_devices : 1;
    for (unsigned d = 0; d < f->n; d++) f->index[d] = o->n_devices ? o->devices[d] : 0;
    return SP_OK;
  }
  int count = 0;
  sp_status st = sp_device_count(o->backend, &count);
  if (st != SP_OK) return st;
  if (count <= 0) {
    fprintf(stderr, "streampool run: --devices all: backend %s has no device\n",
            o->backend ? o->backend : "auto");
    return SP_ERR_NO_DEVICE;
  }
  f->n = count < MAX_DEVICES ? (unsigned)count : MAX_DEVICES;
  for (unsigned d = 0; d < f->n; d++) f->index[d] = d;
  return SP_OK;
}

/* Opens every device of the fleet with a model each (the same seeded model or file). */
static sp_status open_fleet(const run_opts *o, run_fleet *f, char *desc, size_t n) {
  sp_status st = fleet_indices(o, f);
  if (st != SP_OK) return st; /* f->n is 0: no device to spread threads over */
  unsigned max_t = 1;
  for (unsigned i = 0; i < o->n_runs; i++)
    if (o->threads[i] > max_t) max_t = o->threads[i];
  max_t = (max_t + f->n - 1) / f->n; /* threads per device */
  sp_device_config cfg = {.backend = o->backend};
  if (max_t + 1 + o->bcfg.workers > 32)
    cfg.streams = max_t + 3 + o->bcfg.workers > SP_STREAMS_MAX ? SP_STREAMS_MAX
                                                                : max_t + 3 + o->bcfg.workers;
  static const unsigned dims[] = {512, 1024, 1024, 512};
  for (unsigned d = 0; st == SP_OK && d < f->n; d++) {
    cfg.index = (int)f->index[d];
    st = sp_device_open(&cfg, &f->dev[d]);
    if (st != SP_OK) break;
    if (o->model_path) {
      st = sp_model_load(f->dev[d], o->model_path, o->dtype, &f->m[d]);
      if (st == SP_OK)
        snprintf(desc, n, "%s (in %u, out %u)", o->model_path, sp_model_in_features(f->m[d]),
                 sp_model_out_features(f->m[d]));
    } else {
      st = sp_model_mlp_random(f->dev[d], dims, 4, o->seed, o->dtype, &f->m[d]);
      snprintf(desc, n, "built-in MLP 512-1024-1024-512 (seed %llu)",
               (unsigned long long)o->seed);
    }
  }
  return st;
}

static void fleet_close(run_fleet *f) {
  for (unsigned d = 0; d < MAX_DEVICES; d++) {
    free(f->ref[d].in);
    free(f->ref[d].out);
    sp_model_free(f->m[d]);
    sp_device_close(f->dev[d]);
  }
}

/* Every device's reference outputs, computed on that device. */
static int fleet_refs(run_fleet *f, const run_opts *o) {
  for (unsigned d = 0; d < f->n; d++) {
    if (ref_build(f->m[d], o, &f->ref[d]) != SP_OK) {
      fprintf(stderr, "streampool run: reference pass on device %u failed: %s\n", f->index[d],
              sp_last_error());
      return 1;
    }
    sp_stream_release_current(f->dev[d]); /* the reference pass's stream is not the run's */
  }
  return 0;
}

/* The table: per thread count, a line per device (several devices) and the total. */
static void print_rows(const run_fleet *f, const run_opts *o, const run_result *r,
                       const run_result *rd) {
  char label[16];
  for (unsigned d = 0; f->n > 1 && d < f->n; d++) {
    snprintf(label, sizeof(label), "%u", f->index[d]);
    print_row(o, &rd[d], label);
  }
  print_row(o, r, f->n > 1 ? "total" : NULL);
}

static int run_all(run_fleet *f, const run_opts *o, const char *desc) {
  if (fleet_refs(f, o)) return 1;
  run_result res[MAX_RUNS];
  run_result *res_dev = calloc((size_t)MAX_RUNS * MAX_DEVICES, sizeof(*res_dev));
  if (!res_dev) return 1;
  if (!o->json) print_header(f, o, desc);
  int bad = 0;
  double base = 0, base_dev[MAX_DEVICES] = {0};
  for (unsigned i = 0; i < o->n_runs; i++) {
    run_result *rd = &res_dev[(size_t)i * MAX_DEVICES];
    bad |= run_one(f, o, o->threads[i], &res[i], rd);
    double rps = res[i].seconds > 0 ? (double)res[i].requests / res[i].seconds : 0;
    if (i == 0) base = rps; /* speedup is over the first row: 1 thread in the usual lists */
    res[i].speedup = base > 0 ? rps / base : 0;
    for (unsigned d = 0; d < f->n; d++) {
      double r = rd[d].seconds > 0 ? (double)rd[d].requests / rd[d].seconds : 0;
      if (base_dev[d] == 0) base_dev[d] = r;
      rd[d].speedup = base_dev[d] > 0 ? r / base_dev[d] : 0;
    }
    if (!o->json) print_rows(f, o, &res[i], rd);
  }
  sp_memory_stats ms[MAX_DEVICES];
  memset(ms, 0, sizeof(ms));
  for (unsigned d = 0; d < f->n; d++) sp_memory_stats_get(f->dev[d], &ms[d]);
  if (o->json) print_json(f, o, desc, res, res_dev, ms, !bad);
  else {
    if (f->n > 1) printf("\n");
    for (unsigned d = 0; d < f->n; d++) {
      char label[32];
      snprintf(label, sizeof(label), " (device %u)", f->index[d]);
      print_memory(&ms[d], f->n > 1 ? label : NULL);
    }
    printf("result: %s\n", bad ? "FAILED (a call failed or an output differs from the reference)"
                               : "OK (every output matches the single-threaded reference)");
  }
  free(res_dev);
  return bad ? 1 : 0;
}

int sp_cli_run(int argc, char **argv) {
  run_opts o;
  int rc = run_parse(argc, argv, &o);
  if (rc) return rc == 1 ? 0 : 2;
  run_fleet f;
  memset(&f, 0, sizeof(f));
  char desc[512];
  sp_status st = open_fleet(&o, &f, desc, sizeof(desc));
  if (st != SP_OK) {
    fprintf(stderr, "streampool run: %s: %s\n", sp_status_str(st), sp_last_error());
    fleet_close(&f);
    return st == SP_ERR_INVALID_ARGUMENT ? 2 : 1;
  }
  rc = run_all(&f, &o, desc);
  fleet_close(&f);
  return rc;
}
