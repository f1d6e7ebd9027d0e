/* The encoder batcher: single texts from many threads merged into passes under a token budget.
 *
 * Owns: the request queue, the worker threads, and per worker the staging of one pass (packed
 * ids, lengths, output rows: host memory, max_batch texts of max_seq ids each).
 * A request lives on its caller's stack: sp_encoder_batcher_embed tokenizes the text on the
 * calling thread (the encoder's tokenizer, truncated to max_seq as sp_encoder_embed does), queues
 * the ids and blocks until a worker marks it done. One worker at a time collects (the `collecting`
 * flag): it waits for the first text, then up to max_delay_us after that text's arrival for the
 * pass to fill, and takes texts oldest first while the pass stays within max_batch texts and
 * max_tokens padded tokens (each text costs its bucket, sp__encoder_seq_bucket: its length rounded
 * up to a power of two, at least 8, at most max_seq; a pass always takes at least one text, and
 * create checks max_tokens >= the bucket of max_seq). The pass runs outside the lock on the
 * worker's own stream (sp_stream_acquire, bound as the worker thread's current stream): its texts
 * grouped by bucket (stable, so arrival order within a bucket), one sp_encoder_embed_ids per bucket
 * at stride = bucket, so a pass computes exactly the padded tokens the budget counted. Each row is
 * copied to its caller and the caller completed with the pass's status (an error reaches exactly
 * the texts of the failed call).
 * Why not the MLP batcher's machinery (src/infer/batcher.c: lock-free inbox, futex words, per-pass
 * wake-ups): that design exists because an MLP pass is microseconds, so intake and wake-up costs
 * dominate. An encoder pass is a whole transformer forward (tens of microseconds to milliseconds)
 * and its cost is tokens, not rows; a mutex and condition variables (one per request) cost
 * microseconds per text, far below a pass, and keep this file small and easy to check. The two
 * share no code: their queues, budgets and completion differ; the lifecycle rules (fork,
 * cancellation, destroy answering every accepted request, stats) are the same and written the same
 * way. Invariants: every queued request is answered exactly once; count == length of head..tail and
 * tokens == the sum of their buckets; after `stopping` no request is accepted; workers exit only
 * when stopping and the queue is empty; a caller touches b only while counted in `callers` (an
 * atomic), which destroy waits to drain.
 * Locking: mu (SP__RANK_ENCODER_BATCHER) guards the queue and the flags; cv_work wakes workers (a
 * text queued, collecting released, stopping); cv_state wakes create (workers started). Each
 * request has its own lock and condition variable (SP__RANK_ENCODER_REQUEST, a leaf, never taken
 * with mu): the worker sets `done` and signals under it, so answering a pass neither takes mu nor
 * wakes callers into a convoy on it (with one lock for all, a pass's woken callers queue
 * behind the answering worker and the next collector). mu is never held across a
 * tokenizer, encoder, backend or allocator call.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/device.h"
#include "core/lock.h"
#include "infer/encoder.h"

enum {
  ENC_MSG = 192,       /* bytes of an error message carried to a caller           */
  ENC_STACK_IDS = 512, /* ids a caller tokenizes into on its stack; more: heap     */
};

typedef struct enc_req {
  struct enc_req *next;    /* queue link (mu)                                       */
  const int32_t *ids;      /* the caller's tokens, [CLS] ... [SEP]                  */
  uint32_t len;            /* tokens, 1 .. max_seq                                  */
  unsigned bucket;         /* padded length this text costs in a pass               */
  float *out;              /* the caller's row, dim floats                          */
  unsigned long long t_ns; /* arrival, monotonic                                    */
  sp__mutex mu;            /* r->mu: guards done (the answer's hand-off) only      */
  bool done;               /* r->mu: status, msg and out are written                */
  pthread_cond_t cv;       /* its caller waits here (r->mu) until done              */
  sp_status status;        /* written before done                                   */
  char msg[ENC_MSG];       /* sp_last_error of the failed call                      */
} enc_req;

typedef struct enc_worker {
  sp_encoder_batcher *b;
  pthread_t thread;
  bool started;   /* thread was created                                    */
  sp_stream *s;   /* its own stream (sp_stream_acquire), its current stream */
  int32_t *ids;   /* staging: max_batch x max_seq ids                      */
  uint32_t *lens; /* staging: max_batch lengths                            */
  float *rows;    /* staging: max_batch x dim outputs                      */
  enc_req **reqs; /* the texts of the current pass, grouped by bucket      */
} enc_worker;

struct sp_encoder_batcher {
  sp_encoder *e;
  sp_device *dev;
  const sp_tokenizer *tok;
  unsigned dim, max_seq;
  unsigned max_tokens, max_batch, max_delay_us, n_workers;
  sp__mutex mu;
  pthread_cond_t cv_work;    /* workers: a text queued, the collector role free, stopping */
  pthread_cond_t cv_state;   /* create: workers started                                   */
  enc_req *head, *tail;      /* mu: queued texts, oldest first                            */
  unsigned count;            /* mu: length of head..tail                                  */
  unsigned long long tokens; /* mu: sum of the queued texts' buckets                    */
  bool collecting;           /* mu: a worker holds the collector role                     */
  bool stopping;             /* mu: no text accepted from now on                          */
  atomic_uint callers;       /* threads inside sp_encoder_batcher_embed                   */
  unsigned ready;            /* mu: workers that finished starting                        */
  sp_status start_status;    /* mu: the first worker start failure                        */
  char start_msg[ENC_MSG];   /* mu                                                        */
  enc_worker *workers;       /* [n_workers]                                               */
  atomic_ullong requests, batches, failed, queued;
  atomic_ullong fill_ns, run_ns, answer_ns; /* sums over passes (sp_batcher_stats)     */
};

static unsigned long long enc_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

/* ---- the queue (mu held) -------------------------------------------------------------------- */

static void enc_push(sp_encoder_batcher *b, enc_req *r) {
  r->next = NULL;
  if (b->tail) b->tail->next = r;
  else b->head = r;
  b->tail = r;
  b->count++;
  b->tokens += r->bucket;
  atomic_store_explicit(&b->queued, b->count, memory_order_relaxed);
}

/* Whether the queue already holds a full pass: max_batch texts or max_tokens padded tokens. */
static bool enc_full(const sp_encoder_batcher *b) {
  return b->count >= b->max_batch || b->tokens >= b->max_tokens;
}

/* Waits on cv_work until deadline_ns (monotonic). */
static void enc_wait_until(sp_encoder_batcher *b, unsigned long long deadline_ns) {
  struct timespec ts = {(time_t)(deadline_ns / 1000000000ull), (long)(deadline_ns % 1000000000ull)};
  (void)sp__cond_timedwait(&b->cv_work, &b->mu, &ts);
}

/* Takes queued texts, oldest first, while the pass stays within max_batch and max_tokens (the
 * first always). */
static unsigned enc_take(sp_encoder_batcher *b, enc_worker *w) {
  unsigned n = 0;
  unsigned long long tok = 0;
  while (b->head && n < b->max_batch && (n == 0 || tok + b->head->bucket <= b->max_tokens)) {
    enc_req *r = b->head;
    b->head = r->next;
    tok += r->bucket;
    w->reqs[n++] = r;
  }
  if (!b->head) b->tail = NULL;
  sp_assert(n >= 1 && n <= b->count && tok <= b->tokens);
  sp_assert(n == 1 || tok <= b->max_tokens);
  b->count -= n;
  b->tokens -= tok;
  atomic_store_explicit(&b->queued, b->count, memory_order_relaxed);
  return n;
}

/* Takes the next pass into w->reqs; 0 when the batcher stops and every text is answered. */
static unsigned enc_collect(sp_encoder_batcher *b, enc_worker *w) {
  sp__mutex_lock(&b->mu);
  while (b->collecting || (!b->head && !b->stopping)) sp__cond_wait(&b->cv_work, &b->mu);
  if (!b->head) { /* stopping and drained */
    sp__mutex_unlock(&b->mu);
    return 0;
  }
  b->collecting = true;
  unsigned long long deadline = b->head->t_ns + (unsigned long long)b->max_delay_us * 1000ull;
  while (!enc_full(b) && !b->stopping && enc_now_ns() < deadline) enc_wait_until(b, deadline);
  atomic_fetch_add_explicit(&b->fill_ns, enc_now_ns() - b->head->t_ns, memory_order_relaxed);
  unsigned n = enc_take(b, w);
  b->collecting = false;
  pthread_cond_broadcast(&b->cv_work); /* the next collector may start */
  sp__mutex_unlock(&b->mu);
  return n;
}

/* ---- workers -------------------------------------------------------------------------------- */

/* Orders w->reqs[0, n) by bucket, stably (arrival order within a bucket): an insertion sort,
 * linear when the pass is one bucket (the common case). */
static void enc_group(enc_worker *w, unsigned n) {
  for (unsigned i = 1; i < n; i++) {
    enc_req *r = w->reqs[i];
    unsigned j = i;
    for (; j > 0 && w->reqs[j - 1]->bucket > r->bucket; j--) w->reqs[j] = w->reqs[j - 1];
    w->reqs[j] = r;
  }
}

/* Packs w->reqs[j0, j1) (one bucket) at stride bucket and embeds them into w->rows[j0..]. */
static sp_status enc_embed_group(enc_worker *w, unsigned j0, unsigned j1) {
  sp_encoder_batcher *b = w->b;
  size_t stride = w->reqs[j0]->bucket;
  sp_assert(j0 < j1 && stride <= b->max_seq);
  for (unsigned j = j0; j < j1; j++) {
    enc_req *r = w->reqs[j];
    sp_assert(r->bucket == stride && r->len >= 1 && r->len <= stride);
    int32_t *dst = w->ids + (size_t)(j - j0) * stride;
    memcpy(dst, r->ids, r->len * sizeof(*dst));
    memset(dst + r->len, 0, (stride - r->len) * sizeof(*dst)); /* padding: id 0, masked */
    w->lens[j - j0] = r->len;
  }
  return sp_encoder_embed_ids(b->e, w->ids, w->lens, j1 - j0, stride,
                              w->rows + (size_t)j0 * b->dim);
}

/* Runs w->reqs[0, n), one sp_encoder_embed_ids per bucket; *failed_at is the first text of the
 * failed group (texts before it have their rows). */
static sp_status enc_forward(enc_worker *w, unsigned n, unsigned *failed_at) {
  for (unsigned j0 = 0, j1; j0 < n; j0 = j1) {
    for (j1 = j0 + 1; j1 < n && w->reqs[j1]->bucket == w->reqs[j0]->bucket;) j1++;
    sp_status st = enc_embed_group(w, j0, j1);
    if (st != SP_OK) {
      *failed_at = j0;
      return st;
    }
  }
  *failed_at = n;
  return SP_OK;
}

/* Runs one pass over w->reqs[0, n) and answers every text. */
static void enc_run(enc_worker *w, unsigned n) {
  sp_encoder_batcher *b = w->b;
  unsigned long long t0 = enc_now_ns();
  enc_group(w, n);
  unsigned ok_n = 0;
  sp_status st = enc_forward(w, n, &ok_n);
  char msg[ENC_MSG] = "";
  if (st != SP_OK) snprintf(msg, sizeof(msg), "%s", sp_last_error());
  unsigned long long t1 = enc_now_ns();
  atomic_fetch_add_explicit(&b->run_ns, t1 - t0, memory_order_relaxed);
  /* Counted before any caller is released, so a caller's stats include its own text. */
  atomic_fetch_add_explicit(&b->batches, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&b->requests, n, memory_order_relaxed);
  if (st != SP_OK) atomic_fetch_add_explicit(&b->failed, n - ok_n, memory_order_relaxed);
  for (unsigned j = 0; j < ok_n; j++)
    memcpy(w->reqs[j]->out, w->rows + (size_t)j * b->dim, b->dim * sizeof(float));
  for (unsigned j = 0; j < n; j++) { /* each caller woken alone, under its own lock */
    enc_req *r = w->reqs[j];
    r->status = j < ok_n ? SP_OK : st;
    if (j >= ok_n) memcpy(r->msg, msg, sizeof(msg));
    sp__mutex_lock(&r->mu);
    r->done = true;
    pthread_cond_signal(&r->cv);
    sp__mutex_unlock(&r->mu); /* r may be gone from here on */
  }
  atomic_fetch_add_explicit(&b->answer_ns, enc_now_ns() - t1, memory_order_relaxed);
}

static sp_status enc_worker_init(enc_worker *w) {
  sp_encoder_batcher *b = w->b;
  sp_status st = sp_stream_acquire(b->dev, &w->s);
  if (st == SP_OK) st = sp_stream_set_current(b->dev, w->s);
  if (st != SP_OK) return st;
  w->ids = sp__calloc((size_t)b->max_batch * b->max_seq, sizeof(*w->ids));
  w->lens = sp__calloc(b->max_batch, sizeof(*w->lens));
  w->rows = sp__calloc((size_t)b->max_batch * b->dim, sizeof(*w->rows));
  w->reqs = sp__calloc(b->max_batch, sizeof(*w->reqs));
  if (!w->ids || !w->lens || !w->rows || !w->reqs)
    return sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_batcher_create: out of host memory");
  return SP_OK;
}

static void enc_worker_fini(enc_worker *w) {
  if (w->s) {
    (void)sp_stream_release_current(w->b->dev);
    (void)sp_stream_release(w->b->dev, w->s);
  }
  sp__free(w->ids);
  sp__free(w->lens);
  sp__free(w->rows);
  sp__free(w->reqs);
}

static void *enc_worker_main(void *arg) {
  enc_worker *w = arg;
  sp_encoder_batcher *b = w->b;
  sp_status st = enc_worker_init(w);
  sp__mutex_lock(&b->mu);
  if (st != SP_OK && b->start_status == SP_OK) {
    b->start_status = st;
    snprintf(b->start_msg, sizeof(b->start_msg), "%s", sp_last_error());
  }
  b->ready++;
  pthread_cond_broadcast(&b->cv_state);
  sp__mutex_unlock(&b->mu);
  unsigned n;
  while (st == SP_OK && (n = enc_collect(b, w)) > 0) enc_run(w, n);
  enc_worker_fini(w);
  return NULL;
}

/* ---- create / destroy ----------------------------------------------------------------------- */

static sp_status enc_config(const sp_encoder_batcher_config *cfg, sp_encoder_batcher *b) {
  sp_encoder_batcher_config c = cfg ? *cfg : (sp_encoder_batcher_config){0};
  b->max_tokens = c.max_tokens ? c.max_tokens : 8192;
  /* Defaults from the H200 runs with 64 closed-loop callers of 32-token sentences (bf16 MiniLM,
   * 2026-12-01): 4 workers of 16 texts gave 101-103 k sentences/s against 75 k for 2 of 256
   * (passes of ~62), 100 k for 6 x 16, 96 k for 8 x 16, 91 k for 8 x 32, 84 k for 8 x 8: a pass's
   * kernels are latency-bound at these sizes, so several small passes in flight beat one large. */
  b->max_batch = c.max_batch ? c.max_batch : 16;
  b->max_delay_us = c.max_delay_us ? c.max_delay_us : 200;
  b->n_workers = c.workers ? c.workers : 4;
  unsigned longest = sp__encoder_seq_bucket(b->e, b->max_seq);
  if (b->max_tokens < longest)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_encoder_batcher_create: max_tokens %u is below %u, the bucket of the "
                    "encoder's max_seq (one longest text must fit a pass)",
                    b->max_tokens, longest);
  if (b->max_batch > 65536 || b->n_workers > SP_STREAMS_MAX || b->max_delay_us > 10000000)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_encoder_batcher_create: max_batch %u (<= 65536), workers %u (<= %d) or "
                    "max_delay_us %u (<= 10 s) out of range",
                    b->max_batch, b->n_workers, SP_STREAMS_MAX, b->max_delay_us);
  return SP_OK;
}

static sp_status enc_init_sync(sp_encoder_batcher *b) {
  pthread_condattr_t ca;
  int e = sp__mutex_init(&b->mu, SP__RANK_ENCODER_BATCHER);
  if (e) goto fail;
  e = pthread_condattr_init(&ca);
  if (e) goto destroy_mu;
  e = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (!e) e = pthread_cond_init(&b->cv_work, &ca);
  if (e) goto destroy_attr;
  e = pthread_cond_init(&b->cv_state, NULL);
  if (e) goto destroy_work;
  pthread_condattr_destroy(&ca);
  return SP_OK;
destroy_work:
  pthread_cond_destroy(&b->cv_work);
destroy_attr:
  pthread_condattr_destroy(&ca);
destroy_mu:
  sp__mutex_destroy(&b->mu);
fail:
  return sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_batcher_create: pthread init failed (%d)", e);
}

/* Stops accepting, wakes the workers and joins them once they have answered every text. */
static void enc_stop(sp_encoder_batcher *b) {
  sp__mutex_lock(&b->mu);
  b->stopping = true;
  pthread_cond_broadcast(&b->cv_work);
  sp__mutex_unlock(&b->mu);
  for (unsigned i = 0; i < b->n_workers; i++)
    if (b->workers[i].started) pthread_join(b->workers[i].thread, NULL);
}

static void enc_free(sp_encoder_batcher *b) {
  sp__mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv_work);
  pthread_cond_destroy(&b->cv_state);
  sp__free(b->workers);
  sp__free(b);
}

/* Starts every worker and waits until each has its stream and staging. */
static sp_status enc_start(sp_encoder_batcher *b) {
  unsigned started = 0;
  sp_status st = SP_OK;
  for (unsigned i = 0; i < b->n_workers; i++) {
    b->workers[i] = (enc_worker){.b = b};
    int e = pthread_create(&b->workers[i].thread, NULL, enc_worker_main, &b->workers[i]);
    if (e) {
      st = sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_batcher_create: pthread_create failed (%d)", e);
      break;
    }
    b->workers[i].started = true;
    started++;
  }
  sp__mutex_lock(&b->mu);
  while (b->ready < started) sp__cond_wait(&b->cv_state, &b->mu);
  if (st == SP_OK && b->start_status != SP_OK)
    st = sp__fail(b->start_status, "sp_encoder_batcher_create: a worker could not start: %s",
                  b->start_msg);
  sp__mutex_unlock(&b->mu);
  return st;
}

static sp_status enc_shape(sp_encoder *e, sp_encoder_batcher *b) {
  sp_encoder_info info;
  sp_status st = sp_encoder_info_get(e, &info);
  if (st != SP_OK) return st;
  b->e = e;
  b->dev = e->dev;
  b->tok = sp_encoder_tokenizer(e);
  b->dim = info.hidden;
  b->max_seq = info.max_seq;
  if (!b->tok || !b->dim || b->max_seq < 2)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_encoder_batcher_create: the encoder has no tokenizer, dim 0 or max_seq "
                    "%u < 2",
                    b->max_seq);
  return SP_OK;
}

static sp_status enc_create(sp_encoder *e, const sp_encoder_batcher_config *cfg,
                            sp_encoder_batcher **out) {
  if (!e || !out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_encoder_batcher_create: encoder or out is NULL");
  sp_status st = sp__device_enter(e->dev, "sp_encoder_batcher_create");
  if (st != SP_OK) return st;
  sp_encoder_batcher *b = sp__calloc(1, sizeof(*b));
  if (!b) return sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_batcher_create: out of host memory");
  st = enc_shape(e, b);
  if (st == SP_OK) st = enc_config(cfg, b);
  if (st == SP_OK) st = enc_init_sync(b);
  if (st != SP_OK) {
    sp__free(b);
    return st;
  }
  b->workers = sp__calloc(b->n_workers, sizeof(*b->workers));
  st = b->workers ? enc_start(b)
                  : sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_batcher_create: out of host memory");
  if (st != SP_OK) {
    if (b->workers) enc_stop(b);
    enc_free(b);
    return st;
  }
  *out = b;
  return SP_OK;
}

/* Runs with cancellation disabled: create waits for its workers to start. */
sp_status sp_encoder_batcher_create(sp_encoder *e, const sp_encoder_batcher_config *cfg,
                                    sp_encoder_batcher **out) {
  int cancel = sp__cancel_off();
  sp_status st = enc_create(e, cfg, out);
  sp__cancel_restore(cancel);
  return st;
}

/* ---- embed ---------------------------------------------------------------------------------- */

/* Queues r and waits until a worker answers it (or refuses it when stopping). */
static sp_status enc_submit(sp_encoder_batcher *b, enc_req *r) {
  sp__mutex_lock(&b->mu);
  if (b->stopping) {
    sp__mutex_unlock(&b->mu);
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_encoder_batcher_embed: the batcher is being destroyed");
  }
  atomic_fetch_add(&b->callers, 1);
  r->t_ns = enc_now_ns();
  enc_push(b, r);
  if (b->count == 1 || enc_full(b)) pthread_cond_broadcast(&b->cv_work);
  sp__mutex_unlock(&b->mu);
  sp__mutex_lock(&r->mu);
  while (!r->done) sp__cond_wait(&r->cv, &r->mu);
  sp__mutex_unlock(&r->mu);
  atomic_fetch_sub(&b->callers, 1); /* the last touch of b */
  if (r->status != SP_OK) return sp__fail(r->status, "sp_encoder_batcher_embed: %s", r->msg);
  return SP_OK;
}

static sp_status enc_embed(sp_encoder_batcher *b, const char *text, float *out) {
  int32_t stack_ids[ENC_STACK_IDS], *ids = stack_ids;
  if (b->max_seq > ENC_STACK_IDS) {
    ids = sp__malloc((size_t)b->max_seq * sizeof(*ids));
    if (!ids) return sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_batcher_embed: out of host memory");
  }
  size_t n = 0;
  sp_status st = sp_tokenizer_encode(b->tok, text, strlen(text), b->max_seq, ids, b->max_seq, &n);
  if (st == SP_OK) {
    enc_req r = {.ids = ids,
                 .len = (uint32_t)n,
                 .bucket = sp__encoder_seq_bucket(b->e, (unsigned)n),
                 .out = out};
    int e = sp__mutex_init(&r.mu, SP__RANK_ENCODER_REQUEST);
    if (!e) {
      e = pthread_cond_init(&r.cv, NULL);
      if (e) sp__mutex_destroy(&r.mu);
    }
    st = e ? sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_batcher_embed: pthread init failed (%d)", e)
           : enc_submit(b, &r);
    if (!e) {
      pthread_cond_destroy(&r.cv);
      sp__mutex_destroy(&r.mu);
    }
  }
  if (ids != stack_ids) sp__free(ids);
  return st;
}

/* Runs with cancellation disabled: the request lives on this stack until a worker answers it. */
sp_status sp_encoder_batcher_embed(sp_encoder_batcher *b, const char *text, float *out) {
  if (SP__UNLIKELY(!b || !text || !out))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_encoder_batcher_embed: batcher, text or out is NULL");
  sp_status st = sp__device_enter(b->dev, "sp_encoder_batcher_embed"); /* forked: no workers */
  if (st != SP_OK) return st;
  int cancel = sp__cancel_off();
  st = enc_embed(b, text, out);
  sp__cancel_restore(cancel);
  return st;
}

void sp_encoder_batcher_destroy(sp_encoder_batcher *b) {
  if (!b) return;
  /* In a forked child only forget b: its workers are the parent's threads. */
  if (sp__device_enter(b->dev, "sp_encoder_batcher_destroy") != SP_OK) return;
  int cancel = sp__cancel_off();
  enc_stop(b);
  while (atomic_load(&b->callers)) { /* answered callers may still be leaving enc_submit */
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
  }
  enc_free(b);
  sp__cancel_restore(cancel);
}

sp_status sp_encoder_batcher_stats_get(sp_encoder_batcher *b, sp_batcher_stats *out) {
  if (!b || !out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_encoder_batcher_stats_get: NULL argument");
  sp_status st = sp__device_enter(b->dev, "sp_encoder_batcher_stats_get");
  if (st != SP_OK) return st;
  out->requests = atomic_load(&b->requests);
  out->batches = atomic_load(&b->batches);
  out->failed = atomic_load(&b->failed);
  out->queued = atomic_load(&b->queued);
  out->fill_ns = atomic_load(&b->fill_ns);
  out->run_ns = atomic_load(&b->run_ns);
  out->answer_ns = atomic_load(&b->answer_ns);
  return SP_OK;
}
