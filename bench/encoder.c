/* bench/encoder: sentence embeddings of a BERT encoder folder (all-MiniLM-L6-v2 on the GPU run):
 * sentences/s for 1..16 threads each embedding one 32-token sentence a call (batch 1, each thread
 * on its own current stream), one thread batched at 32 and 256, and the encoder batcher from 64
 * client threads, with p50/p99 latency per call; f32 and bf16.
 *
 * Sentences: 256 seeded sentences of 32 tokens (bench/sentences.h) or --inputs FILE (one a line).
 * --write-sentences FILE writes the sentences used, for the PyTorch peer
 * (bench/torch/encoder_threads.py --inputs FILE), which prints the same table shape.
 * Every embedding is checked against the one-at-a-time embedding of the same sentence (relative
 * max error per row, 1e-5 f32 / 1e-2 bf16); the "max err" column shows the worst and a row over
 * the tolerance is marked WRONG (the exit status is 1).
 * usage: encoder --model DIR [--backend NAME] [--duration S] [--threads 1,2,4,8,16]
 *                [--batches 32,256] [--clients 64] [--dtypes f32,bf16] [--inputs FILE]
 *                [--write-sentences FILE] [--max-tokens N] [--max-batch N] [--max-delay-us N]
 *                [--workers N]
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_thread.h"
#include "sentences.h"
#include "streampool.h"

enum { NTEXT = 256, TOKENS = 32, MAXT = 256, NBUCKET = 2048 /* log-linear, 32 per octave */ };

typedef struct bench_cfg {
  const char *backend, *model, *inputs, *write_sentences;
  double duration;
  unsigned threads[16], n_threads, batches[8], n_batches, clients;
  bool dtype_on[2];
  sp_encoder_batcher_config bcfg;
} bench_cfg;

typedef struct bench_shared {
  sp_device *dev;
  sp_encoder *e;
  sp_encoder_batcher *b; /* the batcher row */
  char **texts;
  unsigned n_texts, dim, batch;
  const float *ref; /* [n_texts][dim] */
  double tol;
  atomic_bool stop;
  pthread_barrier_t go;
} bench_shared;

typedef struct bench_thread {
  bench_shared *sh;
  unsigned index;
  pthread_t tid;
  uint64_t calls, errors, wrong;
  double max_err;
  uint64_t lat[NBUCKET];
} bench_thread;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Latency buckets: 32 per power of two of nanoseconds. */
static unsigned lat_bucket(double s) {
  double ns = s * 1e9;
  if (ns < 32) return (unsigned)ns;
  int e = ilogb(ns);
  unsigned k = (unsigned)(e - 4) * 32 + (unsigned)((ns / ldexp(1.0, e) - 1.0) * 32);
  return k < NBUCKET ? k : NBUCKET - 1;
}

static double lat_us(unsigned k) {
  if (k < 32) return k * 1e-3;
  unsigned e = k / 32 + 4, f = k % 32;
  return ldexp(1.0 + (f + 0.5) / 32.0, (int)e) * 1e-3;
}

static double pct(const uint64_t *h, uint64_t total, double q) {
  uint64_t want = (uint64_t)ceil(q * (double)total), seen = 0;
  for (unsigned i = 0; i < NBUCKET; i++)
    if ((seen += h[i]) >= want && h[i]) return lat_us(i);
  return 0;
}

static double row_err(const float *y, const float *want, unsigned n) {
  double scale = 1e-6, err = 0;
  for (unsigned i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
  for (unsigned i = 0; i < n; i++) {
    double d = fabs((double)y[i] - want[i]);
    if (!(d <= err)) err = isnan(d) ? INFINITY : d;
  }
  return err / scale;
}

static void bench_call(bench_thread *t, const char **texts, float *out, unsigned r0) {
  bench_shared *sh = t->sh;
  for (unsigned j = 0; j < sh->batch; j++) texts[j] = sh->texts[(r0 + j) % sh->n_texts];
  sp_status st = sh->b ? sp_encoder_batcher_embed(sh->b, texts[0], out)
                       : sp_encoder_embed(sh->e, texts, sh->batch, out);
  if (st != SP_OK) {
    if (!t->errors++) fprintf(stderr, "encoder: a call failed: %s\n", sp_last_error());
    return;
  }
  for (unsigned j = 0; j < sh->batch; j++) {
    double e = row_err(out + (size_t)j * sh->dim,
                       sh->ref + (size_t)((r0 + j) % sh->n_texts) * sh->dim, sh->dim);
    if (e > t->max_err) t->max_err = e;
    if (!(e <= sh->tol)) t->wrong++;
  }
}

static void *bench_main(void *p) {
  bench_thread *t = p;
  bench_shared *sh = t->sh;
  const char **texts = malloc(sizeof(*texts) * sh->batch);
  float *out = malloc(sizeof(float) * sh->batch * sh->dim);
  unsigned r = t->index * 13;
  if (!texts || !out) t->errors++;
  for (int i = 0; i < 2 && !t->errors; i++) bench_call(t, texts, out, r); /* warm-up */
  pthread_barrier_wait(&sh->go);
  while (!t->errors && !atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    double t0 = now_s();
    bench_call(t, texts, out, r);
    t->lat[lat_bucket(now_s() - t0)]++;
    t->calls++;
    r += sh->batch;
  }
  free(texts);
  free(out);
  sp_stream_release_current(sh->dev);
  return NULL;
}

/* One row: threads threads for the duration; prints it. Returns nonzero on a failure or a wrong
 * embedding. */
static int bench_run(const bench_cfg *c, bench_shared *sh, const char *dn, const char *mode,
                     unsigned threads) {
  bench_thread *ts = calloc(threads, sizeof(*ts));
  uint64_t *h = calloc(NBUCKET, sizeof(*h)), calls = 0, errors = 0, wrong = 0;
  if (!ts || !h) return 1;
  double max_err = 0;
  atomic_store(&sh->stop, false);
  pthread_barrier_init(&sh->go, NULL, threads + 1);
  for (unsigned i = 0; i < threads; i++) {
    ts[i] = (bench_thread){.sh = sh, .index = i};
    bench_thread_start(&ts[i].tid, bench_main, &ts[i], "encoder");
  }
  pthread_barrier_wait(&sh->go);
  double t0 = now_s();
  struct timespec d = {(time_t)c->duration, (long)((c->duration - floor(c->duration)) * 1e9)};
  nanosleep(&d, NULL);
  atomic_store(&sh->stop, true);
  double secs = now_s() - t0;
  for (unsigned i = 0; i < threads; i++) {
    pthread_join(ts[i].tid, NULL);
    calls += ts[i].calls;
    errors += ts[i].errors;
    wrong += ts[i].wrong;
    max_err = fmax(max_err, ts[i].max_err);
    for (unsigned k = 0; k < NBUCKET; k++) h[k] += ts[i].lat[k];
  }
  pthread_barrier_destroy(&sh->go);
  printf("%-5s %-8s %7u %6u %13.0f %9.1f %9.1f %9.1e%s%s\n", dn, mode, threads, sh->batch,
         (double)(calls * sh->batch) / secs, pct(h, calls, 0.5), pct(h, calls, 0.99), max_err,
         errors ? "  ERRORS" : "", wrong ? "  WRONG" : "");
  fflush(stdout);
  free(ts);
  free(h);
  return errors || wrong;
}

static int bench_batcher(const bench_cfg *c, bench_shared *sh, const char *dn) {
  if (sp_encoder_batcher_create(sh->e, &c->bcfg, &sh->b) != SP_OK) {
    fprintf(stderr, "encoder: batcher: %s\n", sp_last_error());
    return 1;
  }
  sh->batch = 1;
  int bad = bench_run(c, sh, dn, "batcher", c->clients);
  sp_batcher_stats bs;
  sp_encoder_batcher_stats_get(sh->b, &bs);
  double per = bs.batches ? 1e-3 / (double)bs.batches : 0; /* ns sums -> us per pass */
  printf(
      "      batcher: max_tokens %u, max_batch %u, max_delay_us %u, workers %u (0: default); "
      "%.1f texts/pass over %llu passes; per pass fill %.1f us, run %.1f us, answer %.1f us\n",
      c->bcfg.max_tokens, c->bcfg.max_batch, c->bcfg.max_delay_us, c->bcfg.workers,
      bs.batches ? (double)bs.requests / (double)bs.batches : 0, (unsigned long long)bs.batches,
      (double)bs.fill_ns * per, (double)bs.run_ns * per, (double)bs.answer_ns * per);
  sp_encoder_batcher_destroy(sh->b);
  sh->b = NULL;
  return bad;
}

/* One reference embedding per sentence, one at a time on this thread. */
static int bench_refs(bench_shared *sh, float *ref) {
  for (unsigned i = 0; i < sh->n_texts; i++) {
    const char *t = sh->texts[i];
    if (sp_encoder_embed(sh->e, &t, 1, ref + (size_t)i * sh->dim) != SP_OK) {
      fprintf(stderr, "encoder: reference of sentence %u: %s\n", i, sp_last_error());
      return 1;
    }
  }
  sp_stream_release_current(sh->dev);
  return 0;
}

static int bench_dtype(const bench_cfg *c, bench_shared *sh, sp_dtype dt) {
  const char *dn = dt == SP_BF16 ? "bf16" : "f32";
  if (sp_encoder_load(sh->dev, c->model, dt, &sh->e) != SP_OK) {
    fprintf(stderr, "encoder: %s load: %s\n", dn, sp_last_error());
    return 1;
  }
  sh->dim = sp_encoder_dim(sh->e);
  sh->tol = dt == SP_BF16 ? 1e-2 : 1e-5;
  float *ref = malloc(sizeof(float) * sh->n_texts * sh->dim);
  int bad = !ref || bench_refs(sh, ref);
  sh->ref = ref;
  for (unsigned i = 0; !bad && i < c->n_threads; i++) {
    sh->batch = 1;
    bad |= bench_run(c, sh, dn, "threads", c->threads[i]);
  }
  for (unsigned i = 0; !bad && i < c->n_batches; i++) {
    sh->batch = c->batches[i];
    bad |= bench_run(c, sh, dn, "batched", 1);
  }
  if (!bad && c->clients) bad |= bench_batcher(c, sh, dn);
  free(ref);
  sp_encoder_free(sh->e);
  sh->e = NULL;
  return bad;
}

/* ---- sentences and arguments --------------------------------------------------------------- */

static int read_lines(const char *path, bench_shared *sh) {
  FILE *f = fopen(path, "r");
  if (!f) return 1;
  char *line = NULL;
  size_t cap = 0, have = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, f)) >= 0) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    if (sh->n_texts == have) {
      have = have ? 2 * have : 256;
      char **t = realloc(sh->texts, have * sizeof(*t));
      if (!t) break;
      sh->texts = t;
    }
    sh->texts[sh->n_texts++] = strdup(line);
  }
  free(line);
  fclose(f);
  return sh->n_texts ? 0 : 1;
}

/* NTEXT seeded 32-token sentences, made with the model's own tokenizer. */
static int seeded_lines(const bench_cfg *c, bench_shared *sh) {
  sp_tokenizer *tok = NULL;
  if (sp_tokenizer_load(c->model, &tok) != SP_OK) return 1;
  sh->texts = calloc(NTEXT, sizeof(*sh->texts));
  uint64_t x = 0x5EED5EEDull;
  int32_t ids[TOKENS + 64];
  char buf[1024];
  int bad = !sh->texts;
  for (; !bad && sh->n_texts < NTEXT; sh->n_texts++) {
    bad = bench_sentence(tok, TOKENS, &x, buf, sizeof(buf), ids, TOKENS + 64);
    if (!bad) sh->texts[sh->n_texts] = strdup(buf);
  }
  sp_tokenizer_free(tok);
  return bad;
}

static int write_lines(const char *path, const bench_shared *sh) {
  FILE *f = fopen(path, "w");
  if (!f) return 1;
  for (unsigned i = 0; i < sh->n_texts; i++) fprintf(f, "%s\n", sh->texts[i]);
  return fclose(f) != 0;
}

static void parse_list(const char *s, unsigned *out, unsigned *n, unsigned max_n, unsigned hi) {
  char buf[128];
  snprintf(buf, sizeof(buf), "%s", s);
  *n = 0;
  for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t && *n < max_n;
       t = strtok_r(NULL, ",", &sv)) {
    unsigned v = (unsigned)strtoul(t, NULL, 10);
    if (v >= 1 && v <= hi) out[(*n)++] = v;
  }
}

static int parse_args(int argc, char **argv, bench_cfg *c) {
  *c = (bench_cfg){.duration = 2,
                   .threads = {1, 2, 4, 8, 16},
                   .n_threads = 5,
                   .batches = {32, 256},
                   .n_batches = 2,
                   .clients = 64,
                   .dtype_on = {true, true}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--backend")) c->backend = v;
    else if (!strcmp(k, "--model")) c->model = v;
    else if (!strcmp(k, "--inputs")) c->inputs = v;
    else if (!strcmp(k, "--write-sentences")) c->write_sentences = v;
    else if (!strcmp(k, "--duration")) c->duration = atof(v);
    else if (!strcmp(k, "--threads")) parse_list(v, c->threads, &c->n_threads, 16, MAXT);
    else if (!strcmp(k, "--batches")) parse_list(v, c->batches, &c->n_batches, 8, 65536);
    else if (!strcmp(k, "--clients")) c->clients = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--max-tokens")) c->bcfg.max_tokens = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--max-batch")) c->bcfg.max_batch = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--max-delay-us")) c->bcfg.max_delay_us = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--workers")) c->bcfg.workers = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "--dtypes")) {
      c->dtype_on[0] = strstr(v, "f32") != NULL;
      c->dtype_on[1] = strstr(v, "bf16") != NULL;
    } else {
      fprintf(stderr, "encoder: unknown option %s\n", k);
      return 2;
    }
  }
  if (argc % 2 == 0 || !c->model || c->duration <= 0 || c->clients > MAXT) {
    fprintf(stderr,
            "usage: encoder --model DIR [--backend NAME] [--duration S] "
            "[--threads 1,2,4,8,16] [--batches 32,256] [--clients 64 (0: none)] "
            "[--dtypes f32,bf16] [--inputs FILE] [--write-sentences FILE] "
            "[--max-tokens N] [--max-batch N] [--max-delay-us N] [--workers N]\n");
    return 2;
  }
  return 0;
}

int main(int argc, char **argv) {
  bench_cfg c;
  if (parse_args(argc, argv, &c)) return 2;
  bench_shared sh = {0};
  if (c.inputs ? read_lines(c.inputs, &sh) : seeded_lines(&c, &sh)) {
    fprintf(stderr, "encoder: no sentences (%s): %s\n", c.inputs ? c.inputs : "seeded",
            sp_last_error());
    return 1;
  }
  if (c.write_sentences && write_lines(c.write_sentences, &sh)) {
    fprintf(stderr, "encoder: cannot write %s\n", c.write_sentences);
    return 1;
  }
  sp_device_config dc = {.backend = c.backend, .streams = 64};
  if (sp_device_open(&dc, &sh.dev) != SP_OK) {
    fprintf(stderr, "encoder: %s\n", sp_last_error());
    return 1;
  }
  printf("bench/encoder: %s, %s, %u sentences (%s), %.1f s per row\n", sp_device_name(sh.dev),
         c.model, sh.n_texts, c.inputs ? c.inputs : "seeded, 32 tokens", c.duration);
  printf("%-5s %-8s %7s %6s %13s %9s %9s %9s\n", "dtype", "mode", "threads", "batch", "sentences/s",
         "p50 us", "p99 us", "max err");
  int rc = 0;
  for (int d = 0; d < 2; d++)
    if (c.dtype_on[d]) rc |= bench_dtype(&c, &sh, d ? SP_BF16 : SP_F32);
  sp_device_close(sh.dev);
  for (unsigned i = 0; i < sh.n_texts; i++) free(sh.texts[i]);
  free(sh.texts);
  return rc;
}
