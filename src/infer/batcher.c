/* The batcher: single rows from many threads merged into batched forward passes.
 *
 * Owns: the request queue, the worker threads and their buffers (host staging and one device
 * block per worker, max_batch rows of input and output each).
 * A request lives on its caller's stack: sp_batcher_infer queues it and blocks until a worker
 * marks it done. A worker takes up to max_batch queued rows, or what arrived within max_delay_us
 * of the first, stages them into one batch, runs one forward pass on its own stream, copies each
 * row back to its caller and completes it with its own status (an error reaches exactly the rows
 * of the failed pass). Only one worker collects at a time, so batches are not split between
 * workers that both wake up; the others wait until the collector has taken its rows.
 * Invariants: every queued request is answered exactly once; count == length of the queue;
 * after `stopping` no request is accepted and workers exit only once the queue is empty.
 * Locking: b->mu guards head/tail/count/stopping/collecting/ready state; it is never held across
 * a backend call, an allocator call or a completion. Completion is an atomic state word per
 * request with a futex wait (Linux) after a short spin; the waker touches the word last.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "infer/model.h"

enum {
  REQ_PENDING = 0,  /* queued or in a pass                          */
  REQ_DONE = 1,     /* status, msg and out are written              */
  REQ_SLEEPING = 2, /* pending, and the caller sleeps on the word   */
  REQ_SPIN = 200,   /* polls of the state before the caller sleeps  */
  BATCH_MSG = 192,  /* bytes of an error message carried to a caller */
};

typedef struct batch_req {
  struct batch_req *next;      /* queue link, guarded by b->mu      */
  const float *in;             /* caller's row, in_features floats  */
  float *out;                  /* caller's row, out_features floats */
  unsigned long long t_ns;     /* arrival, monotonic                */
  _Atomic uint32_t state;      /* REQ_*                             */
  sp_status status;            /* written before state = REQ_DONE   */
  char msg[BATCH_MSG];         /* sp_last_error of the failed pass  */
} batch_req;

typedef struct batch_worker {
  sp_batcher *b;
  unsigned index;
  pthread_t thread;
  bool started;                /* thread was created               */
  sp_stream *s;                /* its own stream                   */
  float *h_in, *h_out;         /* host staging, max_batch rows     */
  unsigned char *d_buf;        /* device: input rows, output rows  */
  size_t d_out_off;            /* bytes from d_buf to the outputs  */
  batch_req **reqs;            /* the rows of the current pass     */
} batch_worker;

struct sp_batcher {
  sp_model *m;
  unsigned max_batch, max_delay_us, n_workers, in_f, out_f;
  pthread_mutex_t mu;
  pthread_cond_t cv_idle;      /* workers wait here for rows (mu)                 */
  pthread_cond_t cv_collect;   /* the collector waits here for more rows (mu)    */
  pthread_cond_t cv_ready;     /* create waits here for the workers' start (mu)  */
  batch_req *head, *tail;      /* mu                                              */
  unsigned count;              /* mu: queued rows                                 */
  bool stopping, collecting;   /* mu                                              */
  unsigned ready;              /* mu: workers that finished starting              */
  sp_status start_status;      /* mu: the first worker start failure             */
  char start_msg[BATCH_MSG];   /* mu                                              */
  batch_worker *workers;       /* [n_workers]                                     */
  atomic_ullong requests, batches, failed;
};

/* ---- completion ----------------------------------------------------------------------------- */

static void req_wait(batch_req *r) {
  for (int i = 0; i < REQ_SPIN; i++)
    if (atomic_load_explicit(&r->state, memory_order_acquire) == REQ_DONE) return;
  uint32_t expect = REQ_PENDING;
  if (!atomic_compare_exchange_strong(&r->state, &expect, REQ_SLEEPING)) return; /* done */
  while (atomic_load_explicit(&r->state, memory_order_acquire) == REQ_SLEEPING) {
#ifdef __linux__
    syscall(SYS_futex, &r->state, FUTEX_WAIT_PRIVATE, REQ_SLEEPING, NULL, NULL, 0);
#else
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
#endif
  }
}

/* Answers r. r may be gone as soon as the state is REQ_DONE: touch only the word after it. */
static void req_complete(batch_req *r, sp_status st, const char *msg) {
  r->status = st;
  if (st != SP_OK) snprintf(r->msg, sizeof(r->msg), "%s", msg);
  uint32_t old = atomic_exchange(&r->state, REQ_DONE);
#ifdef __linux__
  if (old == REQ_SLEEPING) syscall(SYS_futex, &r->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
#else
  (void)old;
#endif
}

/* ---- the queue ------------------------------------------------------------------------------ */

static void batch_deadline(unsigned long long t_ns, struct timespec *ts) {
  ts->tv_sec = (time_t)(t_ns / 1000000000ull);
  ts->tv_nsec = (long)(t_ns % 1000000000ull);
}

/* Takes the next batch into reqs; 0 when the batcher stops and the queue is empty. */
static unsigned batch_collect(sp_batcher *b, batch_req **reqs) {
  pthread_mutex_lock(&b->mu);
  while (!b->count || b->collecting) {
    if (!b->count && b->stopping) {
      pthread_mutex_unlock(&b->mu);
      return 0;
    }
    pthread_cond_wait(&b->cv_idle, &b->mu);
  }
  b->collecting = true;
  unsigned long long deadline = b->head->t_ns + (unsigned long long)b->max_delay_us * 1000ull;
  while (b->count < b->max_batch && !b->stopping && sp__now_ns() < deadline) {
    struct timespec ts;
    batch_deadline(deadline, &ts);
    pthread_cond_timedwait(&b->cv_collect, &b->mu, &ts);
  }
  unsigned n = 0;
  while (n < b->max_batch && b->head) {
    reqs[n++] = b->head;
    b->head = b->head->next;
  }
  if (!b->head) b->tail = NULL;
  b->count -= n;
  b->collecting = false;
  /* Rows left: the next worker collects them. Stopping: idle workers that waited while this one
   * collected must re-check, or they would sleep through the end. */
  if (b->stopping) pthread_cond_broadcast(&b->cv_idle);
  else if (b->count) pthread_cond_signal(&b->cv_idle);
  pthread_mutex_unlock(&b->mu);
  return n;
}

static sp_status batch_push(sp_batcher *b, batch_req *r) {
  pthread_mutex_lock(&b->mu);
  if (b->stopping) {
    pthread_mutex_unlock(&b->mu);
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_infer: the batcher is being destroyed");
  }
  r->t_ns = sp__now_ns();
  if (b->tail) b->tail->next = r;
  else b->head = r;
  b->tail = r;
  b->count++;
  if (!b->collecting) pthread_cond_signal(&b->cv_idle);
  else if (b->count >= b->max_batch) pthread_cond_signal(&b->cv_collect);
  pthread_mutex_unlock(&b->mu);
  return SP_OK;
}

/* ---- workers -------------------------------------------------------------------------------- */

/* Runs one pass over w->reqs[0, n) and answers every row. */
static void batch_run(batch_worker *w, unsigned n) {
  sp_batcher *b = w->b;
  size_t in_row = (size_t)b->in_f * sizeof(float), out_row = (size_t)b->out_f * sizeof(float);
  for (unsigned j = 0; j < n; j++) memcpy(w->h_in + (size_t)j * b->in_f, w->reqs[j]->in, in_row);
  float *d_in = (float *)w->d_buf, *d_out = (float *)(w->d_buf + w->d_out_off);
  sp_status st = sp_memcpy_async(w->s, d_in, w->h_in, n * in_row);
  if (st == SP_OK) st = sp_model_forward(b->m, w->s, d_in, d_out, n);
  if (st == SP_OK) st = sp_memcpy_async(w->s, w->h_out, d_out, n * out_row);
  sp_status sync = sp_stream_sync(w->s); /* also after a failure: copies use the staging */
  if (st == SP_OK) st = sync;
  const char *msg = st == SP_OK ? "" : sp_last_error();
  /* Counted before any caller is released, so a caller's stats include its own row. */
  atomic_fetch_add_explicit(&b->batches, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&b->requests, n, memory_order_relaxed);
  if (st != SP_OK) atomic_fetch_add_explicit(&b->failed, n, memory_order_relaxed);
  for (unsigned j = 0; j < n; j++) {
    if (st == SP_OK) memcpy(w->reqs[j]->out, w->h_out + (size_t)j * b->out_f, out_row);
    req_complete(w->reqs[j], st, msg);
  }
}

/* The worker's own stream: an exclusive slot, or a distinct pool stream counted from the end of
 * the pool (client threads bind round-robin from its start). */
static sp_status batch_worker_stream(batch_worker *w) {
  sp_device *dev = w->b->m->dev;
  if (dev->cfg.stream_mode == SP_STREAMS_EXCLUSIVE) return sp_stream_current(dev, &w->s);
  unsigned n = dev->cfg.streams;
  unsigned idx = n <= 1 ? 0 : n - 1 - (w->index % (n - 1));
  w->s = &dev->streams[idx];
  return SP_OK;
}

static sp_status batch_worker_init(batch_worker *w) {
  sp_batcher *b = w->b;
  size_t in_b = (size_t)b->max_batch * b->in_f * sizeof(float);
  size_t out_b = (size_t)b->max_batch * b->out_f * sizeof(float);
  sp_status st = batch_worker_stream(w);
  if (st != SP_OK) return st;
  w->h_in = sp__malloc(in_b);
  w->h_out = sp__malloc(out_b);
  w->reqs = sp__calloc(b->max_batch, sizeof(*w->reqs));
  if (!w->h_in || !w->h_out || !w->reqs)
    return sp__fail(SP_ERR_HOST_MEMORY, "sp_batcher_create: out of host memory");
  w->d_out_off = (in_b + 255) & ~(size_t)255;
  return sp_alloc(b->m->dev, w->d_out_off + out_b, w->s, (void **)&w->d_buf);
}

static void batch_worker_fini(batch_worker *w) {
  if (w->d_buf) {
    sp_free(w->b->m->dev, w->d_buf);
    sp_stream_sync(w->s);
  }
  if (w->s && w->b->m->dev->cfg.stream_mode == SP_STREAMS_EXCLUSIVE)
    sp_stream_release_current(w->b->m->dev);
  sp__free(w->h_in);
  sp__free(w->h_out);
  sp__free(w->reqs);
}

static void *batch_worker_main(void *arg) {
  batch_worker *w = arg;
  sp_batcher *b = w->b;
  sp_status st = batch_worker_init(w);
  pthread_mutex_lock(&b->mu);
  if (st != SP_OK && b->start_status == SP_OK) {
    b->start_status = st;
    snprintf(b->start_msg, sizeof(b->start_msg), "%s", sp_last_error());
  }
  b->ready++;
  pthread_cond_broadcast(&b->cv_ready);
  pthread_mutex_unlock(&b->mu);
  unsigned n;
  while (st == SP_OK && (n = batch_collect(b, w->reqs)) > 0) batch_run(w, n);
  batch_worker_fini(w);
  return NULL;
}

/* ---- public --------------------------------------------------------------------------------- */

static sp_status batch_config(const sp_batcher_config *cfg, sp_batcher *b) {
  sp_batcher_config c = cfg ? *cfg : (sp_batcher_config){0};
  b->max_batch = c.max_batch ? c.max_batch : 64;
  b->max_delay_us = c.max_delay_us ? c.max_delay_us : 200;
  b->n_workers = c.workers ? c.workers : 2;
  if (b->max_batch > 65536 || b->n_workers > SP_STREAMS_MAX || b->max_delay_us > 10000000)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_create: max_batch %u (<= 65536), workers "
                    "%u (<= %d) or max_delay_us %u (<= 10 s) out of range", b->max_batch,
                    b->n_workers, SP_STREAMS_MAX, b->max_delay_us);
  return SP_OK;
}

static sp_status batch_init_sync(sp_batcher *b) {
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca)) return sp__fail(SP_ERR_HOST_MEMORY, "sp_batcher_create: condattr");
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int e = pthread_mutex_init(&b->mu, NULL);
  if (!e) e = pthread_cond_init(&b->cv_idle, NULL);
  if (!e) e = pthread_cond_init(&b->cv_collect, &ca);
  if (!e) e = pthread_cond_init(&b->cv_ready, NULL);
  pthread_condattr_destroy(&ca);
  return e ? sp__fail(SP_ERR_HOST_MEMORY, "sp_batcher_create: pthread init failed (%d)", e) : SP_OK;
}

/* Stops the workers after the queue drains and joins them. */
static void batch_stop(sp_batcher *b) {
  pthread_mutex_lock(&b->mu);
  b->stopping = true;
  pthread_cond_broadcast(&b->cv_idle);
  pthread_cond_broadcast(&b->cv_collect);
  pthread_mutex_unlock(&b->mu);
  for (unsigned i = 0; i < b->n_workers; i++)
    if (b->workers[i].started) pthread_join(b->workers[i].thread, NULL);
}

static void batch_free(sp_batcher *b) {
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv_idle);
  pthread_cond_destroy(&b->cv_collect);
  pthread_cond_destroy(&b->cv_ready);
  sp__free(b->workers);
  sp__free(b);
}

/* Starts every worker and waits until each has its stream and buffers. */
static sp_status batch_start(sp_batcher *b) {
  unsigned started = 0;
  sp_status st = SP_OK;
  for (unsigned i = 0; i < b->n_workers; i++) {
    b->workers[i] = (batch_worker){.b = b, .index = i};
    int e = pthread_create(&b->workers[i].thread, NULL, batch_worker_main, &b->workers[i]);
    if (e) {
      st = sp__fail(SP_ERR_HOST_MEMORY, "sp_batcher_create: pthread_create failed (%d)", e);
      break;
    }
    b->workers[i].started = true;
    started++;
  }
  pthread_mutex_lock(&b->mu);
  while (b->ready < started) pthread_cond_wait(&b->cv_ready, &b->mu);
  if (st == SP_OK && b->start_status != SP_OK)
    st = sp__fail(b->start_status, "sp_batcher_create: a worker could not start: %s",
                  b->start_msg);
  pthread_mutex_unlock(&b->mu);
  return st;
}

sp_status sp_batcher_create(sp_model *m, const sp_batcher_config *cfg, sp_batcher **out) {
  if (!m || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_create: model or out is NULL");
  sp_status st = sp__device_enter(m->dev, "sp_batcher_create");
  if (st != SP_OK) return st;
  sp_batcher *b = sp__calloc(1, sizeof(*b));
  if (!b) return sp__fail(SP_ERR_HOST_MEMORY, "sp_batcher_create: out of host memory");
  b->m = m;
  b->in_f = sp_model_in_features(m);
  b->out_f = sp_model_out_features(m);
  st = batch_config(cfg, b);
  if (st == SP_OK) st = batch_init_sync(b);
  if (st != SP_OK) {
    sp__free(b);
    return st;
  }
  b->workers = sp__calloc(b->n_workers, sizeof(*b->workers));
  st = b->workers ? batch_start(b)
                  : sp__fail(SP_ERR_HOST_MEMORY, "sp_batcher_create: out of host memory");
  if (st != SP_OK) {
    if (b->workers) batch_stop(b);
    batch_free(b);
    return st;
  }
  *out = b;
  return SP_OK;
}

sp_status sp_batcher_infer(sp_batcher *b, const float *in, float *out) {
  if (SP__UNLIKELY(!b || !in || !out))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_infer: batcher, in or out is NULL");
  batch_req r;
  r.next = NULL;
  r.in = in;
  r.out = out;
  r.status = SP_OK;
  atomic_init(&r.state, REQ_PENDING);
  sp_status st = batch_push(b, &r);
  if (st != SP_OK) return st;
  req_wait(&r);
  if (r.status != SP_OK) return sp__fail(r.status, "sp_batcher_infer: %s", r.msg);
  return SP_OK;
}

void sp_batcher_destroy(sp_batcher *b) {
  if (!b) return;
  batch_stop(b);
  batch_free(b);
}

sp_status sp_batcher_stats_get(sp_batcher *b, sp_batcher_stats *out) {
  if (!b || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_stats_get: NULL argument");
  out->requests = atomic_load(&b->requests);
  out->batches = atomic_load(&b->batches);
  out->failed = atomic_load(&b->failed);
  pthread_mutex_lock(&b->mu);
  out->queued = b->count;
  pthread_mutex_unlock(&b->mu);
  return SP_OK;
}
