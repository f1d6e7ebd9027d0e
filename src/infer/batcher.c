/* The batcher: single rows from many threads merged into batched forward passes.
 *
 * Owns: the request queue, the worker threads and their buffers (host staging from
 * sp__pinned_alloc, pinned when the backend has pinned memory, and one device block per worker,
 * max_batch rows of input and output each, zeroed once).
 * A request lives on its caller's stack: sp_batcher_infer queues it and blocks until a worker
 * marks it done. A worker takes up to max_batch queued rows, or what arrived within max_delay_us
 * of the first, stages them into one batch (one memcpy per row), runs one forward pass on its own
 * stream, copies each row back to its caller and completes it with its own status (an error
 * reaches exactly the rows of the failed pass). Only one worker collects at a time, so batches
 * are not split between workers that both wake up; the others wait for the collector role (mu)
 * while the collector gathers. When graphs are on for the model (m->graphs: the one decision of
 * sp__graphs_enabled, made at model build) a pass runs at a padded batch size (the next power of
 * two, at most max_batch) on the worker's fixed device buffers, so sp_model_forward always replays
 * one of a few captured graphs (captured when the worker starts); padding rows hold stale finite
 * data and are never copied back. With graphs off a pass runs at exactly its row count.
 * Intake: a caller pushes its request onto a lock-free stack (inbox) and never takes a lock; the
 * collector (one worker at a time, holding mu) takes the stack whole and appends it, oldest
 * first, to its queue. It sleeps on the futex word qword after publishing how many rows it waits
 * for (want); the push that reaches that count wakes it, so a batch costs one wake-up, not one
 * per row.
 * Completion: a caller spins for spin_ns, then sleeps. While its request is still queued it
 * sleeps on its own state word (the worker wakes it alone); once a worker has taken it, it sleeps
 * on that worker's pass counter `gen`, so the worker wakes all sleepers of a pass with one futex
 * call, and none if all were spinning.
 * Invariants: every pushed request is answered exactly once; count == length of head..tail;
 * after `stopping` no request is accepted; `closed` is set only once no push is in progress, and
 * workers exit only when closed and inbox and queue are empty; a caller touches the batcher only
 * while counted in `callers`, which destroy waits to drain.
 * Locking: mu is the collector role and guards head/tail/count; start_mu guards start-up state
 * (ranks in src/core/lock.h).
 * Neither is held across a backend call, an allocator call or a completion, and callers take
 * neither. Request states, the inbox and the per-worker gen and sleepers words are atomics
 * (sequentially consistent where a sleeper and a waker meet).
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "core/env.h"
#include "core/ops.h"
#include "infer/model.h"

enum {
  REQ_QUEUED = 0,    /* in the queue; the caller may still switch it to REQ_QSLEEP  */
  REQ_QSLEEP = 1,    /* in the queue or a pass; its caller sleeps on the state word */
  REQ_TAKEN = 2,     /* in a worker's pass (r->w set); sleepers use the worker's gen */
  REQ_DONE = 3,      /* status, msg and out are written                             */
  BATCH_MSG = 192,   /* bytes of an error message carried to a caller               */
  BATCH_SPIN_US = 0, /* default time a caller polls before it sleeps (measured:
                      * spinning callers slow the workers when threads outnumber cores) */
};

struct batch_worker;

typedef struct batch_req {
  struct batch_req *next;  /* inbox link (pusher), then queue link (b->mu)      */
  const float *in;         /* caller's row, in_features floats                  */
  float *out;              /* caller's row, out_features floats                 */
  unsigned long long t_ns; /* arrival, monotonic                                */
  struct batch_worker *w;  /* the worker that took it; written before REQ_TAKEN */
  _Atomic uint32_t state;  /* REQ_*                                             */
  sp_status status;        /* written before state = REQ_DONE                   */
  char msg[BATCH_MSG];     /* sp_last_error of the failed pass                  */
} batch_req;

typedef struct batch_worker {
  sp_batcher *b;
  unsigned index;
  pthread_t thread;
  bool started;               /* thread was created                                */
  bool pinned_in, pinned_out; /* h_in / h_out are pinned (sp__pinned_alloc's answer) */
  sp_stream *s;               /* its own stream                                    */
  float *h_in, *h_out;        /* host staging, max_batch rows                      */
  unsigned char *d_buf;       /* device: input rows, output rows                   */
  size_t d_out_off;           /* bytes from d_buf to the outputs                   */
  batch_req **reqs;           /* the rows of the current pass                      */
  _Atomic uint32_t gen;       /* passes completed; futex word of TAKEN sleepers    */
  atomic_uint sleepers;       /* callers asleep (or going to sleep) on gen         */
} batch_worker;

struct sp_batcher {
  sp_model *m;
  sp_device *dev; /* m->dev, kept for destroy (counts dev->batchers)  */
  unsigned max_batch, max_delay_us, n_workers, in_f, out_f;
  bool pad;                   /* passes run at padded sizes (m->graphs)            */
  unsigned long long spin_ns; /* callers poll this long before sleeping            */
  /* Intake, lock-free: callers push onto a stack; the collector takes it whole. */
  _Atomic(batch_req *) inbox; /* pushed requests, newest first                     */
  atomic_int inbox_n;         /* rows pushed and not yet drained (may dip below 0) */
  atomic_uint want;           /* wake the collector at inbox_n >= want; UINT_MAX: no */
  _Atomic uint32_t qword;     /* futex word the collector sleeps on; bumped to wake */
  atomic_uint pushing;        /* callers between the stopping check and their push */
  atomic_bool stopping;       /* no request accepted from now on                   */
  atomic_bool closed;         /* stopping and no push in progress: drain and exit  */
  /* The collector role: one worker at a time holds mu while it gathers a batch. */
  sp__mutex mu;
  batch_req *head, *tail; /* mu: drained rows, oldest first, not yet in a pass */
  unsigned count;         /* mu: length of head..tail                          */
  atomic_uint local_n;    /* count, readable without mu (stats)                */
  /* Start-up. */
  sp__mutex start_mu;
  pthread_cond_t cv_ready;   /* create waits here for the workers' start (start_mu) */
  unsigned ready;            /* start_mu: workers that finished starting          */
  sp_status start_status;    /* start_mu: the first worker start failure          */
  char start_msg[BATCH_MSG]; /* start_mu                                          */
  batch_worker *workers;     /* [n_workers]                                       */
  atomic_uint callers;       /* threads inside sp_batcher_infer                   */
  atomic_ullong requests, batches, failed;
  atomic_ullong fill_ns, run_ns, answer_ns; /* sums over passes (sp_batcher_stats)  */
};

/* ---- completion ----------------------------------------------------------------------------- */

static void batch_futex_wait(_Atomic uint32_t *word, uint32_t val) {
#ifdef __linux__
  syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
  (void)word;
  (void)val;
  struct timespec ts = {0, 20000};
  nanosleep(&ts, NULL);
#endif
}

static void batch_futex_wake(_Atomic uint32_t *word, int n) {
#ifdef __linux__
  syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
#else
  (void)word;
  (void)n;
#endif
}

static inline void batch_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Sleeps on the pass counter of the worker that took r until r is done. The increment of
 * sleepers and the worker's check of it are both seq_cst: either the worker sees this sleeper
 * and wakes gen after bumping it, or this thread sees REQ_DONE. */
static void req_sleep_taken(batch_req *r) {
  batch_worker *w = r->w;
  atomic_fetch_add(&w->sleepers, 1);
  uint32_t g = atomic_load(&w->gen);
  if (atomic_load(&r->state) != REQ_DONE) batch_futex_wait(&w->gen, g);
  atomic_fetch_sub(&w->sleepers, 1);
}

static void req_wait(const sp_batcher *b, batch_req *r) {
  unsigned long long t_end = 0;
  for (unsigned i = 0;; i++) {
    if (atomic_load_explicit(&r->state, memory_order_acquire) == REQ_DONE) return;
    batch_cpu_relax();
    if ((i & 63) != 63) continue;
    unsigned long long now = sp__now_ns();
    if (!t_end) t_end = now + b->spin_ns;
    if (now >= t_end) break;
  }
  for (;;) {
    uint32_t st = atomic_load(&r->state);
    if (st == REQ_DONE) return;
    if (st == REQ_QUEUED) (void)atomic_compare_exchange_strong(&r->state, &st, REQ_QSLEEP);
    else if (st == REQ_QSLEEP) batch_futex_wait(&r->state, REQ_QSLEEP);
    else req_sleep_taken(r);
  }
}

/* Answers r. r may be gone as soon as the state is REQ_DONE: touch only the word after it. */
static void req_complete(batch_req *r, sp_status st, const char *msg) {
  r->status = st;
  if (st != SP_OK) snprintf(r->msg, sizeof(r->msg), "%s", msg);
  uint32_t old = atomic_exchange(&r->state, REQ_DONE);
  if (old == REQ_QSLEEP) batch_futex_wake(&r->state, 1);
}

/* After every request of w's pass is REQ_DONE: one wake for all callers asleep on gen. */
static void batch_wake_pass(batch_worker *w) {
  atomic_fetch_add(&w->gen, 1);
  if (atomic_load(&w->sleepers)) batch_futex_wake(&w->gen, INT_MAX);
}

/* ---- the queue ------------------------------------------------------------------------------ */

/* Marks r as taken by w, unless its caller already sleeps on r's own word (it stays REQ_QSLEEP
 * and is woken alone). */
static void req_take(batch_req *r, batch_worker *w) {
  r->w = w;
  uint32_t expect = REQ_QUEUED;
  (void)atomic_compare_exchange_strong(&r->state, &expect, REQ_TAKEN);
}

static void batch_wake_collector(sp_batcher *b) {
  atomic_fetch_add(&b->qword, 1);
  batch_futex_wake(&b->qword, INT_MAX);
}

/* Moves the inbox to the end of the queue, oldest first. mu held. */
static void batch_drain(sp_batcher *b) {
  batch_req *r = atomic_exchange(&b->inbox, NULL), *first = NULL, *last = r;
  int k = 0;
  for (batch_req *next; r; r = next, k++) { /* reverse: the stack is newest first */
    next = r->next;
    r->next = first;
    first = r;
  }
  if (!k) return;
  atomic_fetch_sub(&b->inbox_n, k);
  if (b->tail) b->tail->next = first;
  else b->head = first;
  b->tail = last;
  b->count += (unsigned)k;
  atomic_store_explicit(&b->local_n, b->count, memory_order_relaxed);
}

/* Sleeps until the inbox holds `target` rows, the batcher closes, or deadline_ns passes (0: no
 * deadline). mu held. The collector publishes want, then reads inbox_n; a pusher adds to inbox_n,
 * then reads want (all seq_cst): one of the two sees the other, so no wake-up is lost. */
static void batch_wait_rows(sp_batcher *b, unsigned target, unsigned long long deadline_ns) {
  uint32_t g = atomic_load(&b->qword);
  atomic_store(&b->want, target);
  int have = atomic_load(&b->inbox_n);
  if ((have < 0 || (unsigned)have < target) && !atomic_load(&b->closed)) {
#ifdef __linux__
    struct timespec rel, *to = NULL;
    if (deadline_ns) {
      unsigned long long now = sp__now_ns(), left = deadline_ns > now ? deadline_ns - now : 0;
      rel.tv_sec = (time_t)(left / 1000000000ull);
      rel.tv_nsec = (long)(left % 1000000000ull);
      to = &rel;
    }
    if (!to || rel.tv_sec || rel.tv_nsec)
      syscall(SYS_futex, &b->qword, FUTEX_WAIT_PRIVATE, g, to, NULL, 0);
#else
    batch_futex_wait(&b->qword, g);
#endif
  }
  atomic_store(&b->want, UINT_MAX);
}

/* Takes the next batch into w->reqs; 0 when the batcher is closed and every row is answered. */
static unsigned batch_collect(sp_batcher *b, batch_worker *w) {
  sp__mutex_lock(&b->mu);
  for (batch_drain(b); !b->count; batch_drain(b)) {
    if (atomic_load(&b->closed) && !atomic_load(&b->inbox)) {
      sp__mutex_unlock(&b->mu);
      return 0;
    }
    batch_wait_rows(b, 1, 0);
  }
  unsigned long long deadline = b->head->t_ns + (unsigned long long)b->max_delay_us * 1000ull;
  while (b->count < b->max_batch && !atomic_load(&b->closed) && sp__now_ns() < deadline) {
    batch_wait_rows(b, b->max_batch - b->count, deadline);
    batch_drain(b);
  }
  atomic_fetch_add_explicit(&b->fill_ns, sp__now_ns() - b->head->t_ns, memory_order_relaxed);
  unsigned n = 0;
  while (n < b->max_batch && b->head) {
    req_take(b->head, w);
    w->reqs[n++] = b->head;
    b->head = b->head->next;
  }
  if (!b->head) b->tail = NULL;
  b->count -= n;
  atomic_store_explicit(&b->local_n, b->count, memory_order_relaxed);
  sp__mutex_unlock(&b->mu);
  return n;
}

/* Pushes r onto the inbox without a lock; wakes the collector when it waits for this row. */
static sp_status batch_push(sp_batcher *b, batch_req *r) {
  atomic_fetch_add(&b->pushing, 1);
  if (atomic_load(&b->stopping)) {
    atomic_fetch_sub(&b->pushing, 1);
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_infer: the batcher is being destroyed");
  }
  r->t_ns = sp__now_ns();
  batch_req *top = atomic_load_explicit(&b->inbox, memory_order_relaxed);
  do r->next = top;
  while (!atomic_compare_exchange_weak_explicit(&b->inbox, &top, r, memory_order_release,
                                                memory_order_relaxed));
  int n = atomic_fetch_add(&b->inbox_n, 1) + 1;
  unsigned want = atomic_load(&b->want);
  if (n > 0 && (unsigned)n >= want && atomic_compare_exchange_strong(&b->want, &want, UINT_MAX))
    batch_wake_collector(b);
  atomic_fetch_sub(&b->pushing, 1);
  return SP_OK;
}

/* ---- workers -------------------------------------------------------------------------------- */

/* The batch size a pass of n rows runs at: n, or with padding the next power of two (at most
 * max_batch), so a few captured forwards serve every pass. */
static unsigned batch_padded(const sp_batcher *b, unsigned n) {
  if (!b->pad) return n;
  unsigned p = 1;
  while (p < n) p <<= 1;
  return p < b->max_batch ? p : b->max_batch;
}

/* Stages, runs and copies back one pass of n rows at batch size `rows` (>= n); syncs w->s. */
static sp_status batch_forward(batch_worker *w, unsigned n, unsigned rows) {
  sp_batcher *b = w->b;
  size_t in_row = (size_t)b->in_f * sizeof(float), out_row = (size_t)b->out_f * sizeof(float);
  float *d_in = (float *)w->d_buf, *d_out = (float *)(w->d_buf + w->d_out_off);
  sp_status st = sp_memcpy_async(w->s, d_in, w->h_in, n * in_row);
  if (st == SP_OK) st = sp_model_forward(b->m, w->s, d_in, d_out, rows);
  if (st == SP_OK) st = sp_memcpy_async(w->s, w->h_out, d_out, n * out_row);
  sp_status sync = sp_stream_sync(w->s); /* also after a failure: copies use the staging */
  return st == SP_OK ? sync : st;
}

/* Runs one pass over w->reqs[0, n) and answers every row. */
static void batch_run(batch_worker *w, unsigned n) {
  sp_batcher *b = w->b;
  size_t in_row = (size_t)b->in_f * sizeof(float), out_row = (size_t)b->out_f * sizeof(float);
  unsigned long long t0 = sp__now_ns();
  for (unsigned j = 0; j < n; j++) memcpy(w->h_in + (size_t)j * b->in_f, w->reqs[j]->in, in_row);
  sp_status st = batch_forward(w, n, batch_padded(b, n));
  const char *msg = st == SP_OK ? "" : sp_last_error();
  unsigned long long t1 = sp__now_ns();
  atomic_fetch_add_explicit(&b->run_ns, t1 - t0, memory_order_relaxed);
  /* Counted before any caller is released, so a caller's stats include its own row. */
  atomic_fetch_add_explicit(&b->batches, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&b->requests, n, memory_order_relaxed);
  if (st != SP_OK) atomic_fetch_add_explicit(&b->failed, n, memory_order_relaxed);
  for (unsigned j = 0; j < n; j++) {
    if (st == SP_OK) memcpy(w->reqs[j]->out, w->h_out + (size_t)j * b->out_f, out_row);
    req_complete(w->reqs[j], st, msg);
  }
  batch_wake_pass(w);
  atomic_fetch_add_explicit(&b->answer_ns, sp__now_ns() - t1, memory_order_relaxed);
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

/* Host staging of bytes: pinned when the backend has it (async copies), else ordinary host
 * memory; *pinned says which, for the free. */
static sp_status batch_host_alloc(batch_worker *w, size_t bytes, float **out, bool *pinned) {
  void *p = NULL;
  sp_status st = sp__pinned_alloc(w->b->m->dev, bytes, &p, pinned);
  if (st == SP_OK) *out = p;
  return st;
}

/* Zeroes the device rows (padding rows must hold finite data) and, with padding, runs every
 * padded size once so its graph is captured before the first caller's pass. */
static sp_status batch_worker_warm(batch_worker *w) {
  sp_batcher *b = w->b;
  size_t out_b = (size_t)b->max_batch * b->out_f * sizeof(float);
  sp_status st = sp_memset_async(w->s, w->d_buf, 0, w->d_out_off + out_b);
  float *d_in = (float *)w->d_buf, *d_out = (float *)(w->d_buf + w->d_out_off);
  for (unsigned rows = 1; b->pad && st == SP_OK; rows <<= 1) {
    unsigned r = rows < b->max_batch ? rows : b->max_batch;
    st = sp_model_forward(b->m, w->s, d_in, d_out, r);
    if (r == b->max_batch) break;
  }
  sp_status sync = sp_stream_sync(w->s);
  return st == SP_OK ? sync : st;
}

static sp_status batch_worker_init(batch_worker *w) {
  sp_batcher *b = w->b;
  size_t in_b = (size_t)b->max_batch * b->in_f * sizeof(float);
  size_t out_b = (size_t)b->max_batch * b->out_f * sizeof(float);
  sp_status st = batch_worker_stream(w);
  if (st != SP_OK) return st;
  st = batch_host_alloc(w, in_b, &w->h_in, &w->pinned_in);
  if (st == SP_OK) st = batch_host_alloc(w, out_b, &w->h_out, &w->pinned_out);
  if (st != SP_OK) return st;
  w->reqs = sp__calloc(b->max_batch, sizeof(*w->reqs));
  if (!w->reqs) return sp__fail(SP_ERR_HOST_MEMORY, "sp_batcher_create: out of host memory");
  w->d_out_off = (in_b + 255) & ~(size_t)255;
  st = sp_alloc(b->m->dev, w->d_out_off + out_b, w->s, (void **)&w->d_buf);
  return st == SP_OK ? batch_worker_warm(w) : st;
}

static void batch_worker_fini(batch_worker *w) {
  if (w->d_buf) {
    sp_free(w->b->m->dev, w->d_buf);
    sp_stream_sync(w->s);
  }
  if (w->s && w->b->m->dev->cfg.stream_mode == SP_STREAMS_EXCLUSIVE)
    sp_stream_release_current(w->b->m->dev);
  sp__pinned_free(w->b->m->dev, w->h_in, w->pinned_in);
  sp__pinned_free(w->b->m->dev, w->h_out, w->pinned_out);
  sp__free(w->reqs);
}

static void *batch_worker_main(void *arg) {
  batch_worker *w = arg;
  sp_batcher *b = w->b;
  sp_status st = batch_worker_init(w);
  sp__mutex_lock(&b->start_mu);
  if (st != SP_OK && b->start_status == SP_OK) {
    b->start_status = st;
    snprintf(b->start_msg, sizeof(b->start_msg), "%s", sp_last_error());
  }
  b->ready++;
  pthread_cond_broadcast(&b->cv_ready);
  sp__mutex_unlock(&b->start_mu);
  unsigned n;
  while (st == SP_OK && (n = batch_collect(b, w)) > 0) batch_run(w, n);
  batch_worker_fini(w);
  return NULL;
}

/* ---- public --------------------------------------------------------------------------------- */

/* STREAMPOOL_BATCHER_SPIN_US: how long a caller polls for its answer before it sleeps
 * (0..100000; default BATCH_SPIN_US). Longer saves wake-ups when cores are free. */
static sp_status batch_env_spin(sp_batcher *b) {
  uint64_t us = 0;
  sp_status st = sp__env_u64_or("sp_batcher_create", "STREAMPOOL_BATCHER_SPIN_US", SP__ENV_COUNT, 0,
                                100000, BATCH_SPIN_US, &us);
  if (st == SP_OK) b->spin_ns = us * 1000ull;
  return st;
}

static sp_status batch_config(const sp_batcher_config *cfg, sp_batcher *b) {
  sp_batcher_config c = cfg ? *cfg : (sp_batcher_config){0};
  /* Defaults from the H100 runs with 64 closed-loop callers: 4 workers of 16 rows keep every
   * caller in a pass (64 rows in flight) and beat 2 x 64 (419 k vs 192 k rows/s f32), because a
   * pass's host side (collect, answer, wake) grows with its rows while the GPU part barely does. */
  b->max_batch = c.max_batch ? c.max_batch : 16;
  b->max_delay_us = c.max_delay_us ? c.max_delay_us : 200;
  b->n_workers = c.workers ? c.workers : 4;
  b->pad = b->m->graphs;
  if (b->max_batch > 65536 || b->n_workers > SP_STREAMS_MAX || b->max_delay_us > 10000000)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_batcher_create: max_batch %u (<= 65536), workers "
                    "%u (<= %d) or max_delay_us %u (<= 10 s) out of range",
                    b->max_batch, b->n_workers, SP_STREAMS_MAX, b->max_delay_us);
  return batch_env_spin(b);
}

static sp_status batch_init_sync(sp_batcher *b) {
  int e = sp__mutex_init(&b->mu, SP__RANK_BATCHER_COLLECT);
  if (e) goto fail;
  e = sp__mutex_init(&b->start_mu, SP__RANK_BATCHER_START);
  if (e) goto destroy_mu;
  e = pthread_cond_init(&b->cv_ready, NULL);
  if (e) goto destroy_start_mu;
  atomic_init(&b->want, UINT_MAX);
  return SP_OK;
destroy_start_mu:
  sp__mutex_destroy(&b->start_mu);
destroy_mu:
  sp__mutex_destroy(&b->mu);
fail:
  return sp__fail(SP_ERR_HOST_MEMORY, "sp_batcher_create: pthread init failed (%d)", e);
}

/* Stops accepting, waits out pushes already past the check (so every accepted row is in the
 * inbox), closes, wakes the collector, and joins the workers once they have answered every row. */
static void batch_stop(sp_batcher *b) {
  atomic_store(&b->stopping, true);
  while (atomic_load(&b->pushing)) sched_yield();
  atomic_store(&b->closed, true);
  batch_wake_collector(b);
  for (unsigned i = 0; i < b->n_workers; i++)
    if (b->workers[i].started) pthread_join(b->workers[i].thread, NULL);
}

static void batch_free(sp_batcher *b) {
  sp__mutex_destroy(&b->mu);
  sp__mutex_destroy(&b->start_mu);
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
  sp__mutex_lock(&b->start_mu);
  while (b->ready < started) sp__cond_wait(&b->cv_ready, &b->start_mu);
  if (st == SP_OK && b->start_status != SP_OK)
    st = sp__fail(b->start_status, "sp_batcher_create: a worker could not start: %s", b->start_msg);
  sp__mutex_unlock(&b->start_mu);
  return st;
}

static sp_status batch_create(sp_model *m, const sp_batcher_config *cfg, sp_batcher **out) {
  if (!m || !out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_create: model or out is NULL");
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
  b->dev = m->dev;
  atomic_fetch_add(&b->dev->batchers, 1); /* undone by sp_batcher_destroy */
  *out = b;
  return SP_OK;
}

static sp_status batch_infer(sp_batcher *b, const float *in, float *out);

/* Runs with cancellation disabled: the request lives on this stack until a worker answers it. */
sp_status sp_batcher_infer(sp_batcher *b, const float *in, float *out) {
  if (SP__UNLIKELY(!b || !in || !out))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_infer: batcher, in or out is NULL");
  sp_status st = sp__device_enter(b->m->dev, "sp_batcher_infer"); /* forked: no workers here */
  if (st != SP_OK) return st;
  int cancel = sp__cancel_off();
  st = batch_infer(b, in, out);
  sp__cancel_restore(cancel);
  return st;
}

static sp_status batch_infer(sp_batcher *b, const float *in, float *out) {
  batch_req r;
  r.next = NULL;
  r.in = in;
  r.out = out;
  r.w = NULL;
  r.status = SP_OK;
  atomic_init(&r.state, REQ_QUEUED);
  atomic_fetch_add(&b->callers, 1);
  sp_status st = batch_push(b, &r);
  if (st == SP_OK) req_wait(b, &r);
  atomic_fetch_sub(&b->callers, 1); /* the last touch of b */
  if (st != SP_OK) return st;
  if (r.status != SP_OK) return sp__fail(r.status, "sp_batcher_infer: %s", r.msg);
  return SP_OK;
}

/* Destroy may run while answered callers are still leaving req_wait (their last touch is a
 * worker's sleepers word): wait until none is inside. */
static void batch_wait_callers(sp_batcher *b) {
  while (atomic_load(&b->callers)) {
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
  }
}

void sp_batcher_destroy(sp_batcher *b) {
  if (!b) return;
  /* In a forked child only forget b: its workers are the parent's threads (issue 14 C3). */
  if (sp__device_enter(b->m->dev, "sp_batcher_destroy") != SP_OK) return;
  sp_device *dev = b->dev;
  int cancel = sp__cancel_off();
  batch_stop(b);
  batch_wait_callers(b);
  batch_free(b);
  atomic_fetch_sub(&dev->batchers, 1);
  sp__cancel_restore(cancel);
}

/* Runs with cancellation disabled: create waits for its workers to start. */
sp_status sp_batcher_create(sp_model *m, const sp_batcher_config *cfg, sp_batcher **out) {
  int cancel = sp__cancel_off();
  sp_status st = batch_create(m, cfg, out);
  sp__cancel_restore(cancel);
  return st;
}

sp_status sp_batcher_stats_get(sp_batcher *b, sp_batcher_stats *out) {
  if (!b || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_batcher_stats_get: NULL argument");
  sp_status st = sp__device_enter(b->m->dev, "sp_batcher_stats_get"); /* forked: stale numbers */
  if (st != SP_OK) return st;
  out->requests = atomic_load(&b->requests);
  out->batches = atomic_load(&b->batches);
  out->failed = atomic_load(&b->failed);
  out->fill_ns = atomic_load(&b->fill_ns);
  out->run_ns = atomic_load(&b->run_ns);
  out->answer_ns = atomic_load(&b->answer_ns);
  int inbox = atomic_load(&b->inbox_n); /* a racy sum: exact once callers and workers rest */
  out->queued = (uint64_t)atomic_load(&b->local_n) + (inbox > 0 ? (uint64_t)inbox : 0);
  return SP_OK;
}
