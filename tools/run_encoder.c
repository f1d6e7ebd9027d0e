/* streampool run --model DIR: the scaling report of a BERT encoder folder, in sentences/s.
 *
 * Sentences: --inputs FILE (one a line, at most ENC_MAX_LINES) or ENC_TEXTS seeded sentences of
 * ENC_TOKENS tokens (bench/sentences.h, the benchmark's generator). Their reference embeddings
 * are computed first, one sentence at a time on the main thread (sp_encoder_embed, n = 1). Rows:
 *   threads  T = each --threads entry: T threads each embed one sentence a call (batch 1);
 *   batched  one thread embeds --batch sentences a call (default ENC_BATCH);
 *   batcher  --clients threads (default ENC_CLIENTS) each send one sentence a call through one
 *            sp_encoder_batcher (--max-batch, --max-tokens, --max-delay-us, --workers).
 * Every embedding of every call is compared with its reference by measure.h's error metric and
 * tolerance; a wrong one or a failed call fails the run (exit 1). Latency is per call (p50/p99
 * from run_latency.c's histograms). Main thread, plus the row's worker threads, which share only
 * enc_shared's atomics and barrier and write their own enc_thread.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bench/sentences.h"
#include "args.h"
#include "cli.h"
#include "measure.h"
#include "run.h"

enum {
  ENC_TEXTS = 256,         /* seeded sentences                                   */
  ENC_TOKENS = 32,         /* tokens per seeded sentence, [CLS] and [SEP] included */
  ENC_BATCH = 32,          /* the batched row's default sentences per call       */
  ENC_CLIENTS = 64,        /* the batcher row's default client threads           */
  ENC_MAX_LINES = 1 << 20, /* --inputs lines read at most                        */
};

typedef struct enc_set {
  char **texts; /* [n], malloc'd */
  unsigned n, dim;
  float *ref; /* [n][dim]: one sentence at a time, main thread */
  double tol;
} enc_set;

typedef struct enc_shared { /* one row */
  sp_device *dev;
  sp_encoder *e;
  sp_encoder_batcher *b; /* the batcher row only */
  const enc_set *set;
  const run_opts *o;
  unsigned batch; /* sentences per call */
  atomic_bool stop;
  pthread_barrier_t start;
} enc_shared;

typedef struct enc_thread {
  enc_shared *sh;
  unsigned index;
  pthread_t tid;
  uint64_t calls, failures, wrong;
  double max_err;
  char first_error[256];
  uint64_t lat[LAT_BUCKETS];
} enc_thread;

typedef struct enc_result {
  const char *mode;
  unsigned threads, batch;
  uint64_t sentences, failures, wrong, passes;
  double seconds, max_err, p50_us, p99_us;
  char first_error[256];
} enc_result;

/* ---- sentences and references ------------------------------------------------------------- */

static int enc_read_inputs(const char *path, enc_set *set) {
  FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
  if (!f) {
    fprintf(stderr, "streampool run: cannot open --inputs %s\n", path);
    return 1;
  }
  char *line = NULL;
  size_t cap = 0, have = 0;
  ssize_t len;
  int oom = 0;
  while (!oom && set->n < ENC_MAX_LINES && (len = getline(&line, &cap, f)) >= 0) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    if (set->n == have) {
      have = have ? have * 2 : 256;
      char **t = realloc(set->texts, have * sizeof(*t));
      if (!t) {
        fprintf(stderr, "streampool run: out of memory reading the sentences (%u read)\n", set->n);
        oom = 1;
        break;
      }
      set->texts = t;
    }
    set->texts[set->n++] = strdup(line);
  }
  free(line);
  if (f != stdin) fclose(f);
  if (oom) return 1;
  if (!set->n) fprintf(stderr, "streampool run: --inputs %s has no line\n", path);
  return set->n ? 0 : 1;
}

static int enc_seeded(sp_encoder *e, uint64_t seed, enc_set *set) {
  const sp_tokenizer *tok = sp_encoder_tokenizer(e);
  set->texts = calloc(ENC_TEXTS, sizeof(*set->texts));
  if (!set->texts) return 1;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  int32_t ids[ENC_TOKENS + 64];
  char buf[1024];
  for (; set->n < ENC_TEXTS; set->n++) {
    if (bench_sentence(tok, ENC_TOKENS, &x, buf, sizeof(buf), ids, ENC_TOKENS + 64)) {
      fprintf(stderr, "streampool run: the seeded sentences: %s\n", sp_last_error());
      return 1;
    }
    set->texts[set->n] = strdup(buf);
  }
  return 0;
}

static int enc_refs(sp_device *dev, sp_encoder *e, sp_dtype dt, enc_set *set) {
  set->dim = sp_encoder_dim(e);
  set->tol = sp_cli_tolerance(dt);
  set->ref = malloc(sizeof(float) * set->n * set->dim);
  if (!set->ref) return 1;
  for (unsigned i = 0; i < set->n; i++) {
    if (!set->texts[i]) {
      fprintf(stderr, "streampool run: out of memory copying sentence %u\n", i);
      return 1;
    }
    const char *t = set->texts[i];
    if (sp_encoder_embed(e, &t, 1, set->ref + (size_t)i * set->dim) != SP_OK) {
      fprintf(stderr, "streampool run: reference embedding of sentence %u failed: %s\n", i,
              sp_last_error());
      return 1;
    }
  }
  sp_stream_release_current(dev); /* the reference pass's stream is not the run's */
  return 0;
}

static void enc_set_free(enc_set *set) {
  for (unsigned i = 0; set->texts && i < set->n; i++) free(set->texts[i]);
  free(set->texts);
  free(set->ref);
}

/* ---- worker threads ----------------------------------------------------------------------- */

static void enc_note_error(enc_thread *t, sp_status st) {
  if (!t->failures++)
    snprintf(t->first_error, sizeof(t->first_error), "%s: %s", sp_status_str(st), sp_last_error());
}

/* One call of sh->batch sentences starting at sentence r0; checks every embedding. */
static void enc_call(enc_thread *t, const char **texts, float *out, unsigned r0) {
  const enc_shared *sh = t->sh;
  const enc_set *set = sh->set;
  for (unsigned j = 0; j < sh->batch; j++) texts[j] = set->texts[(r0 + j) % set->n];
  uint64_t t0 = sp_cli_now_ns();
  sp_status st = sh->b ? sp_encoder_batcher_embed(sh->b, texts[0], out)
                       : sp_encoder_embed(sh->e, texts, sh->batch, out);
  uint64_t t1 = sp_cli_now_ns();
  if (st != SP_OK) {
    enc_note_error(t, st);
    return;
  }
  t->lat[sp_cli_lat_bucket(t1 - t0)]++;
  if (sh->o->self_test_wrong && t->index == 0 && t->calls == 3) out[0] += 1.0f;
  for (unsigned j = 0; j < sh->batch; j++) {
    const float *want = set->ref + (size_t)((r0 + j) % set->n) * set->dim;
    double e = sp_cli_row_error(out + (size_t)j * set->dim, want, set->dim);
    if (e > t->max_err) t->max_err = e;
    if (!(e <= set->tol)) t->wrong++;
  }
}

static void *enc_thread_main(void *arg) {
  enc_thread *t = arg;
  enc_shared *sh = t->sh;
  const char **texts = malloc(sizeof(*texts) * sh->batch);
  float *out = malloc(sizeof(float) * sh->batch * sh->set->dim);
  unsigned r = t->index * 7;
  if (texts && out) enc_call(t, texts, out, r); /* warm-up: binds the stream, makes plans */
  memset(t->lat, 0, sizeof(t->lat));
  pthread_barrier_wait(&sh->start);
  while (texts && out && !atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    enc_call(t, texts, out, r);
    r += sh->batch;
    t->calls++;
  }
  if (!texts || !out) t->failures++;
  free(texts);
  free(out);
  sp_stream_release_current(sh->dev);
  return NULL;
}

/* ---- rows --------------------------------------------------------------------------------- */

static void enc_merge(enc_thread *ts, unsigned n, enc_result *res) {
  uint64_t *lat = calloc(LAT_BUCKETS, sizeof(*lat)), total = 0;
  for (unsigned i = 0; i < n; i++) {
    res->sentences += ts[i].calls * res->batch;
    res->failures += ts[i].failures;
    res->wrong += ts[i].wrong;
    res->max_err = fmax(res->max_err, ts[i].max_err);
    if (ts[i].failures && !res->first_error[0])
      snprintf(res->first_error, sizeof(res->first_error), "%s", ts[i].first_error);
    for (unsigned k = 0; lat && k < LAT_BUCKETS; k++) lat[k] += ts[i].lat[k];
  }
  for (unsigned k = 0; lat && k < LAT_BUCKETS; k++) total += lat[k];
  res->p50_us = lat ? sp_cli_lat_quantile(lat, total, 0.50) : 0;
  res->p99_us = lat ? sp_cli_lat_quantile(lat, total, 0.99) : 0;
  free(lat);
}

static void enc_sleep(double s) {
  struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
  nanosleep(&ts, NULL);
}

/* Runs threads threads for --duration; res->mode, threads and batch are set by the caller. */
static int enc_row(enc_shared *sh, enc_result *res) {
  enc_thread *ts = calloc(res->threads, sizeof(*ts));
  if (!ts) return 1;
  sh->batch = res->batch;
  atomic_store(&sh->stop, false);
  pthread_barrier_init(&sh->start, NULL, res->threads + 1);
  unsigned started = 0;
  for (; started < res->threads; started++) {
    ts[started] = (enc_thread){.sh = sh, .index = started};
    if (pthread_create(&ts[started].tid, NULL, enc_thread_main, &ts[started])) break;
  }
  if (started < res->threads) {
    fprintf(stderr, "streampool run: could start only %u threads\n", started);
    exit(1);
  }
  pthread_barrier_wait(&sh->start);
  uint64_t t0 = sp_cli_now_ns();
  enc_sleep(sh->o->duration_s);
  atomic_store(&sh->stop, true);
  res->seconds = (double)(sp_cli_now_ns() - t0) / 1e9;
  for (unsigned i = 0; i < res->threads; i++) pthread_join(ts[i].tid, NULL);
  enc_merge(ts, res->threads, res);
  pthread_barrier_destroy(&sh->start);
  free(ts);
  return res->failures || res->wrong || !res->sentences;
}

static int enc_batcher_row(enc_shared *sh, enc_result *res) {
  const run_opts *o = sh->o;
  sp_encoder_batcher_config bc = {.max_tokens = o->max_tokens,
                                  .max_batch = o->bcfg.max_batch,
                                  .max_delay_us = o->bcfg.max_delay_us,
                                  .workers = o->bcfg.workers};
  if (sp_encoder_batcher_create(sh->e, &bc, &sh->b) != SP_OK) {
    snprintf(res->first_error, sizeof(res->first_error), "sp_encoder_batcher_create: %s",
             sp_last_error());
    res->failures = 1;
    return 1;
  }
  int bad = enc_row(sh, res);
  sp_batcher_stats bs;
  if (sp_encoder_batcher_stats_get(sh->b, &bs) == SP_OK) res->passes = bs.batches;
  sp_encoder_batcher_destroy(sh->b);
  sh->b = NULL;
  return bad;
}

/* ---- report ------------------------------------------------------------------------------- */

static void enc_print_header(const run_opts *o, sp_device *dev, sp_encoder *e, const enc_set *set) {
  sp_encoder_info in;
  sp_encoder_info_get(e, &in);
  printf("streampool run: %s (backend %s)\n", sp_device_name(dev), sp_device_backend(dev));
  printf("encoder: %s (hidden %u, layers %u, heads %u, max_seq %u, %s pooling%s), %s\n",
         o->model_path, in.hidden, in.layers, in.heads, in.max_seq, in.pooling_cls ? "CLS" : "mean",
         in.normalize ? ", normalized" : "", sp_cli_dtype_name(o->dtype));
  if (o->inputs) printf("sentences: %u from %s", set->n, o->inputs);
  else
    printf("sentences: %u seeded, %d tokens each (seed %llu)", set->n, ENC_TOKENS,
           (unsigned long long)o->seed);
  printf(
      ", %.1f s per row; every embedding checked against the single-threaded one "
      "(tolerance %g)\n",
      o->duration_s, set->tol);
  printf("\n%-8s %8s %6s %12s %9s %9s %8s %10s %11s\n", "mode", "threads", "batch", "sentences/s",
         "p50 us", "p99 us", "speedup", "max err", "texts/pass");
  fflush(stdout);
}

static void enc_print_row(const enc_result *r, double base) {
  double sps = r->seconds > 0 ? (double)r->sentences / r->seconds : 0;
  printf("%-8s %8u %6u %12.1f %9.1f %9.1f %7.2fx %10.2e", r->mode, r->threads, r->batch, sps,
         r->p50_us, r->p99_us, base > 0 ? sps / base : 0, r->max_err);
  if (r->passes) printf(" %11.1f", (double)r->sentences / (double)r->passes);
  if (r->failures) printf("   %llu FAILED: %s", (unsigned long long)r->failures, r->first_error);
  if (r->wrong) printf("   %llu WRONG outputs", (unsigned long long)r->wrong);
  printf("\n");
  fflush(stdout);
}

/* ---- the command -------------------------------------------------------------------------- */

static int enc_rows(enc_shared *sh) {
  const run_opts *o = sh->o;
  int bad = 0;
  double base = 0;
  enc_result r;
  for (unsigned i = 0; i < o->n_runs; i++) {
    r = (enc_result){.mode = "threads", .threads = o->threads[i], .batch = 1};
    bad |= enc_row(sh, &r);
    if (i == 0) base = r.seconds > 0 ? (double)r.sentences / r.seconds : 0;
    enc_print_row(&r, base);
  }
  r = (enc_result){.mode = "batched", .threads = 1, .batch = o->batch_given ? o->batch : ENC_BATCH};
  bad |= enc_row(sh, &r);
  enc_print_row(&r, base);
  r = (enc_result){.mode = "batcher", .threads = o->clients ? o->clients : ENC_CLIENTS, .batch = 1};
  bad |= enc_batcher_row(sh, &r);
  enc_print_row(&r, base);
  return bad;
}

static sp_status enc_open(const run_opts *o, sp_device **dev, sp_encoder **e) {
  unsigned max_t = 1;
  for (unsigned i = 0; i < o->n_runs; i++)
    if (o->threads[i] > max_t) max_t = o->threads[i];
  unsigned want = max_t + 3 + (o->bcfg.workers ? o->bcfg.workers : 4); /* the header's default */
  sp_device_config cfg = {.backend = o->backend};
  if (want > 32) cfg.streams = want > SP_STREAMS_MAX ? SP_STREAMS_MAX : want;
  sp_status st = sp_device_open(&cfg, dev);
  return st == SP_OK ? sp_encoder_load(*dev, o->model_path, o->dtype, e) : st;
}

int sp_cli_run_encoder(const run_opts *o) {
  sp_device *dev = NULL;
  sp_encoder *e = NULL;
  enc_set set = {0};
  sp_status st = enc_open(o, &dev, &e);
  if (st != SP_OK) {
    fprintf(stderr, "streampool run: %s: %s\n", sp_status_str(st), sp_last_error());
    sp_encoder_free(e);
    sp_device_close(dev);
    return st == SP_ERR_INVALID_ARGUMENT ? SP_CLI_USAGE : SP_CLI_FAILED;
  }
  int bad = o->inputs ? enc_read_inputs(o->inputs, &set) : enc_seeded(e, o->seed, &set);
  if (!bad) bad = enc_refs(dev, e, o->dtype, &set);
  if (!bad) {
    enc_shared sh = {.dev = dev, .e = e, .set = &set, .o = o};
    enc_print_header(o, dev, e, &set);
    bad = enc_rows(&sh);
    sp_memory_stats ms;
    if (sp_memory_stats_get(dev, &ms) == SP_OK)
      printf("\nmemory: allocated %.1f MiB (peak %.1f), reserved %.1f MiB (peak %.1f)\n",
             (double)ms.allocated_bytes / 1048576.0, (double)ms.allocated_bytes_peak / 1048576.0,
             (double)ms.reserved_bytes / 1048576.0, (double)ms.reserved_bytes_peak / 1048576.0);
    printf("result: %s\n", bad ? "FAILED (a call failed or an embedding differs from the "
                                 "single-threaded one)"
                               : "OK (every embedding matches the single-threaded one)");
  }
  enc_set_free(&set);
  sp_encoder_free(e);
  sp_device_close(dev);
  return bad ? SP_CLI_FAILED : SP_CLI_OK;
}
