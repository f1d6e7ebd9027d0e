/* streampool run: one row of the table. Starts the row's batchers (with --batcher) and worker
 * threads, releases them together through a barrier, sleeps through --duration drawing the
 * progress bar, stops and joins them, and merges their counters and histograms into a total and
 * per-device results. Main thread; the workers it starts are run_threads.c's.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "measure.h"
#include "run.h"

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
  uint64_t t0 = sp_cli_now_ns(), end = t0 + (uint64_t)(o->duration_s * 1e9);
  for (uint64_t t = t0; t < end; t = sp_cli_now_ns()) {
    uint64_t step = end - t < 100000000ull ? end - t : 100000000ull;
    struct timespec ts = {(time_t)(step / 1000000000ull), (long)(step % 1000000000ull)};
    nanosleep(&ts, NULL);
    if (o->progress)
      progress_draw(o, threads, (double)(sp_cli_now_ns() - t0) / 1e9, atomic_load(&sh->requests));
  }
  atomic_store(&sh->stop, true);
  double secs = (double)(sp_cli_now_ns() - t0) / 1e9;
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
  res->p50_us = sp_cli_lat_quantile(lat, total, 0.50);
  res->p99_us = sp_cli_lat_quantile(lat, total, 0.99);
}

/* Starts one batcher per device (with --batcher); on failure destroys those made and says why. */
static int run_batchers(const run_fleet *f, const run_opts *o, run_shared *sh, run_result *res) {
  for (unsigned d = 0; o->batcher && d < f->n; d++) {
    if (sp_batcher_create(f->m[d], &o->bcfg, &sh->b[d]) == SP_OK) continue;
    snprintf(res->first_error, sizeof(res->first_error), "sp_batcher_create: %s", sp_last_error());
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

int sp_cli_run_one(const run_fleet *f, const run_opts *o, unsigned threads, run_result *res,
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
    if (pthread_create(&ts[started].tid, NULL, sp_cli_run_thread_main, &ts[started])) break;
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
