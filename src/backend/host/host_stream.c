/* Host streams: one worker thread per stream draining a FIFO ring of commands.
 *
 * Owns: sp__bstream, its ring and its worker. Submission copies a small command struct into a
 * growable power-of-two ring under the stream's mutex (no allocation per command; the ring doubles
 * when full) and signals the worker only if it sleeps. The worker copies one command out under the
 * mutex, releases it, sleeps a seeded random 0..jitter_us µs (chaos mode), runs the command, then
 * retakes the mutex to publish `completed` and wake waiters, if any, before taking the next one.
 * An idle worker, and a waiter, first poll for HOST_WAIT_SPIN_NS (yielding) before sleeping on a
 * condition variable, which cuts a submit+sync round trip from ~12 us to ~1 us.
 *
 * Several commands (a graph launch) are copied into the ring under one hold of the mutex, so they
 * run back to back in stream order. While the stream is captured (host_graph.c) submissions from
 * the capturing thread are recorded instead of queued, and syncing or querying it is refused.
 *
 * Invariants: completed <= head <= submitted; commands run one at a time in submission order;
 * `completed` only grows and is stored under mu (so a waiter that checks it under mu cannot miss
 * the broadcast); a command that fails while running (a bf16 scratch allocation) records the
 * stream's first async error, which the next stream_sync returns and clears (CUDA-style: the
 * failure surfaces at the next synchronization).
 *
 * Locking: sp__bstream.mu (src/core/lock.h) guards the ring, head, the sleep/stop flags,
 * `waiters` and the async error; no lock is held while a command runs. See host_impl.h for the
 * ranks.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backend/host/host_impl.h"
#include "backend/nn_check.h"

enum { HOST_RING_INITIAL = 64 }; /* commands; a power of two */
/* How long a waiter polls `completed`, and an idle worker polls `submitted`, before sleeping on
 * a condition variable: polling (with sched_yield) saves the sleep/wake round trip (several us)
 * when a stream is driven in a submit-then-sync loop. */
enum { HOST_WAIT_SPIN_NS = 20000 };
_Static_assert((HOST_RING_INITIAL & (HOST_RING_INITIAL - 1)) == 0, "ring size is a power of two");

static uint64_t host_splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* ---- the worker ----------------------------------------------------------------------------- */

static void host_jitter(sp__bstream *s) {
  unsigned max_us = s->dev->jitter_us;
  if (!max_us) return;
  uint64_t x = s->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  s->rng = x;
  uint64_t us = (x * 0x2545f4914f6cdd1dull) % ((uint64_t)max_us + 1);
  if (!us) return;
  struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Runs one command on the worker; a failure's message goes to msg. */
static sp_status host_run(sp__bstream *s, const sp__host_cmd *c, char *msg, size_t msg_size) {
  switch (c->kind) {
  case SP__HOST_CMD_MEMCPY: memmove(c->u.copy.dst, c->u.copy.src, c->u.copy.bytes); return SP_OK;
  case SP__HOST_CMD_MEMSET: memset(c->u.set.dst, c->u.set.value, c->u.set.bytes); return SP_OK;
  case SP__HOST_CMD_FUNC: c->u.func.fn(c->u.func.arg); return SP_OK;
  case SP__HOST_CMD_MARKER: sp__host_marker_run(c->u.marker.event, c->u.marker.gen); return SP_OK;
  case SP__HOST_CMD_WAIT: sp__host_wait_completed(c->u.wait.other, c->u.wait.target); return SP_OK;
  case SP__HOST_CMD_LINEAR: return sp__host_linear_run(s, &c->u.linear, msg, msg_size);
  case SP__HOST_CMD_CONVERT:
    sp__host_convert_run(c->u.convert.dst, c->u.convert.dst_type, c->u.convert.src,
                         c->u.convert.src_type, c->u.convert.n);
    return SP_OK;
  case SP__HOST_CMD_NN: return sp__host_nn_run(s, &c->u.nn, msg, msg_size);
  }
  snprintf(msg, msg_size, "unknown command kind %d", (int)c->kind);
  return SP_ERR_BACKEND;
}

/* Publishes a finished command (mu held): counter, async error, wake-ups. */
static void host_finish_locked(sp__bstream *s, sp_status st, const char *msg) {
  atomic_store_explicit(&s->completed, s->head, memory_order_release);
  if (st != SP_OK && s->async_error == SP_OK) {
    s->async_error = st;
    snprintf(s->async_msg, sizeof(s->async_msg), "host stream %u: %s", s->index, msg);
  }
  if (atomic_load_explicit(&s->waiters, memory_order_relaxed)) pthread_cond_broadcast(&s->done_cv);
}

/* With the ring empty (mu held): polls briefly, with mu released, for a next command, so a
 * stream fed in a loop (submit, sync, submit) skips the sleep/wake round trip. Returns with mu
 * held; the caller re-checks the ring and the stop flag. */
static void host_worker_poll(sp__bstream *s) {
  uint64_t head = s->head;
  sp__mutex_unlock(&s->mu);
  unsigned long long until = sp__now_ns() + HOST_WAIT_SPIN_NS;
  bool got = false;
  do {
    sched_yield();
    got = atomic_load_explicit(&s->submitted, memory_order_relaxed) != head;
  } while (!got && sp__now_ns() < until);
  sp__mutex_lock(&s->mu);
}

static void *host_worker(void *arg) {
  sp__bstream *s = arg;
  char msg[160];
  bool polled = false; /* polled since the last command: the next empty check sleeps */
  sp__mutex_lock(&s->mu);
  for (;;) {
    uint64_t submitted = atomic_load_explicit(&s->submitted, memory_order_relaxed);
    if (s->head == submitted) {
      if (s->stopping) break;
      if (!polled) {
        polled = true;
        host_worker_poll(s); /* mu released meanwhile: re-check everything */
        continue;
      }
      s->sleeping = true;
      sp__cond_wait(&s->work_cv, &s->mu);
      s->sleeping = false;
      continue;
    }
    polled = false;
    sp__host_cmd cmd = s->ring[s->head & (s->cap - 1)];
    s->head++;
    sp__mutex_unlock(&s->mu);
    host_jitter(s);
    msg[0] = '\0';
    sp_status st = host_run(s, &cmd, msg, sizeof(msg));
    sp__mutex_lock(&s->mu);
    host_finish_locked(s, st, msg);
  }
  sp__mutex_unlock(&s->mu);
  return NULL;
}

/* ---- submission and waiting ----------------------------------------------------------------- */

/* Doubles the ring, keeping the queued commands in order (mu held). */
static sp_status host_ring_grow_locked(sp__bstream *s) {
  uint64_t cap = s->cap * 2;
  sp__host_cmd *ring = sp__malloc((size_t)cap * sizeof(*ring));
  if (!ring)
    return sp__fail(SP_ERR_HOST_MEMORY, "host stream %u: cannot grow the command queue to %llu",
                    s->index, (unsigned long long)cap);
  uint64_t end = atomic_load_explicit(&s->submitted, memory_order_relaxed);
  for (uint64_t n = s->head; n < end; n++) ring[n & (cap - 1)] = s->ring[n & (s->cap - 1)];
  sp__free(s->ring);
  s->ring = ring;
  s->cap = cap;
  return SP_OK;
}

/* Copies cmds[0, n) into the ring after the commands already queued (mu held, not capturing). */
static sp_status host_enqueue_locked(sp__bstream *s, const sp__host_cmd *cmds, size_t n) {
  uint64_t first = atomic_load_explicit(&s->submitted, memory_order_relaxed);
  while (SP__UNLIKELY(s->cap - (first - s->head) < n)) {
    sp_status st = host_ring_grow_locked(s);
    if (st != SP_OK) return st;
  }
  for (size_t i = 0; i < n; i++) s->ring[(first + i) & (s->cap - 1)] = cmds[i];
  atomic_store_explicit(&s->submitted, first + n, memory_order_release);
  if (s->sleeping) {
    s->sleeping = false;
    pthread_cond_signal(&s->work_cv);
  }
  return SP_OK;
}

/* Queues (or, while s is captured, records) cmds[0, n) as one unit; *seq (may be NULL, and must
 * be while capturing) is the number of the last one. */
static sp_status host_submit(sp__bstream *s, const sp__host_cmd *cmds, size_t n, uint64_t *seq) {
  sp_assert(s && (cmds || !n));
  sp__lock_assert_call_ok("host stream submit");
  sp__mutex_lock(&s->mu);
  sp_status st;
  if (SP__UNLIKELY(s->stopping)) {
    st = sp__fail(SP_ERR_INVALID_HANDLE, "host stream %u: submission during destroy", s->index);
  } else if (SP__UNLIKELY(sp__host_capturing(s))) {
    sp_assert(!seq);
    st = sp__host_capture_record_locked(s, cmds, n);
  } else {
    st = host_enqueue_locked(s, cmds, n);
    if (st == SP_OK && seq) *seq = atomic_load_explicit(&s->submitted, memory_order_relaxed);
  }
  sp__mutex_unlock(&s->mu);
  return st;
}

sp_status sp__host_submit(sp__bstream *s, const sp__host_cmd *cmd, uint64_t *seq) {
  sp_assert(cmd);
  return host_submit(s, cmd, 1, seq);
}

sp_status sp__host_submit_n(sp__bstream *s, const sp__host_cmd *cmds, size_t n) {
  return n ? host_submit(s, cmds, n, NULL) : SP_OK;
}

void sp__host_wait_completed(sp__bstream *s, uint64_t target) {
  sp__lock_assert_call_ok("host stream/event sync");
  if (sp__host_completed(s) >= target) return;
  unsigned long long until = sp__now_ns() + HOST_WAIT_SPIN_NS;
  do {
    sched_yield();
    if (sp__host_completed(s) >= target) return;
  } while (sp__now_ns() < until);
  sp__mutex_lock(&s->mu);
  atomic_fetch_add_explicit(&s->waiters, 1, memory_order_relaxed);
  while (atomic_load_explicit(&s->completed, memory_order_acquire) < target)
    sp__cond_wait(&s->done_cv, &s->mu);
  atomic_fetch_sub_explicit(&s->waiters, 1, memory_order_relaxed);
  sp__mutex_unlock(&s->mu);
}

/* ---- table slots ---------------------------------------------------------------------------- */

sp_status sp__host_stream_create(sp__bdevice *d, unsigned index, sp__bstream **out) {
  if (!d || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host stream_create: NULL argument");
  sp__lock_assert_call_ok("host stream_create");
  sp__bstream *s = sp__calloc(1, sizeof(*s));
  if (!s) goto fail_host_memory;
  s->ring = sp__malloc(HOST_RING_INITIAL * sizeof(*s->ring));
  if (!s->ring) goto free_stream;
  s->dev = d;
  s->index = index;
  s->cap = HOST_RING_INITIAL;
  s->async_error = SP_OK;
  atomic_init(&s->submitted, 0);
  atomic_init(&s->completed, 0);
  atomic_init(&s->waiters, 0);
  s->rng = host_splitmix64(d->jitter_seed ^
                           host_splitmix64(((uint64_t)(unsigned)d->index << 32) | index));
  if (!s->rng) s->rng = 1;
  sp__mutex_init(&s->mu, SP__RANK_HOST_STREAM);
  pthread_cond_init(&s->work_cv, NULL);
  pthread_cond_init(&s->done_cv, NULL);
  int err = pthread_create(&s->thread, NULL, host_worker, s);
  if (err) goto destroy_sync;
  *out = s;
  return SP_OK;

destroy_sync:
  pthread_cond_destroy(&s->done_cv);
  pthread_cond_destroy(&s->work_cv);
  sp__mutex_destroy(&s->mu);
  sp__free(s->ring);
  sp__free(s);
  return sp__fail(SP_ERR_BACKEND,
                  "host stream_create: cannot start the worker thread of stream "
                  "%u: %s",
                  index, strerror(err));
free_stream:
  sp__free(s);
fail_host_memory:
  return sp__fail(SP_ERR_HOST_MEMORY, "host stream_create: out of host memory (stream %u)", index);
}

void sp__host_stream_destroy(sp__bstream *s) {
  if (!s) return;
  sp__mutex_lock(&s->mu);
  s->stopping = true;
  if (s->sleeping) {
    s->sleeping = false;
    pthread_cond_signal(&s->work_cv);
  }
  sp__mutex_unlock(&s->mu);
  pthread_join(s->thread, NULL); /* the worker drains the ring first */
  sp_assert(sp__host_completed(s) == atomic_load(&s->submitted));
  if (SP__UNLIKELY(sp__host_capturing(s))) {
    (void)SP__HOST_CAPTURE_VIOLATION(NULL, "stream_destroy", "destroying a capturing stream");
    sp__host_capture_discard(s);
  }
  pthread_cond_destroy(&s->done_cv);
  pthread_cond_destroy(&s->work_cv);
  sp__mutex_destroy(&s->mu);
  sp__free(s->scratch);
  sp__free(s->ring);
  sp__free(s);
}

sp_status sp__host_stream_query(sp__bstream *s) {
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host stream_query: stream is NULL");
  sp__lock_assert_call_ok("host stream_query");
  if (SP__UNLIKELY(sp__host_capturing(s)))
    return SP__HOST_CAPTURE_VIOLATION(s, "stream_query", "query of a capturing stream");
  uint64_t submitted = atomic_load_explicit(&s->submitted, memory_order_acquire);
  return sp__host_completed(s) >= submitted ? SP_OK : SP_ERR_NOT_READY;
}

sp_status sp__host_stream_sync(sp__bstream *s) {
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host stream_sync: stream is NULL");
  if (SP__UNLIKELY(sp__host_capturing(s)))
    return SP__HOST_CAPTURE_VIOLATION(s, "stream_sync", "sync of a capturing stream");
  sp__host_wait_completed(s, atomic_load_explicit(&s->submitted, memory_order_acquire));
  sp__mutex_lock(&s->mu);
  sp_status st = s->async_error;
  char msg[sizeof(s->async_msg)];
  if (SP__UNLIKELY(st != SP_OK)) {
    memcpy(msg, s->async_msg, sizeof(msg));
    s->async_error = SP_OK;
  }
  sp__mutex_unlock(&s->mu);
  return st == SP_OK ? SP_OK : sp__fail(st, "%s", msg);
}

sp_status sp__host_memcpy_async(sp__bstream *s, void *dst, const void *src, size_t bytes) {
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host memcpy_async: stream is NULL");
  if (!bytes) return SP_OK;
  if (!dst || !src)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "host memcpy_async: NULL %s with %zu bytes",
                    dst ? "src" : "dst", bytes);
  sp__host_cmd c = {.kind = SP__HOST_CMD_MEMCPY};
  c.u.copy.dst = dst;
  c.u.copy.src = src;
  c.u.copy.bytes = bytes;
  return sp__host_submit(s, &c, NULL);
}

sp_status sp__host_memset_async(sp__bstream *s, void *dst, int value, size_t bytes) {
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host memset_async: stream is NULL");
  if (!bytes) return SP_OK;
  if (!dst)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "host memset_async: NULL dst with %zu bytes", bytes);
  sp__host_cmd c = {.kind = SP__HOST_CMD_MEMSET};
  c.u.set.dst = dst;
  c.u.set.value = (unsigned char)value;
  c.u.set.bytes = bytes;
  return sp__host_submit(s, &c, NULL);
}

sp_status sp__host_host_func(sp__bstream *s, void (*fn)(void *), void *arg) {
  if (!s || !fn)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "host host_func: %s is NULL", s ? "fn" : "stream");
  sp__host_cmd c = {.kind = SP__HOST_CMD_FUNC};
  c.u.func.fn = fn;
  c.u.func.arg = arg;
  return sp__host_submit(s, &c, NULL);
}

sp_status sp__host_linear_async(sp__bstream *s, const sp__linear *op) {
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host linear_async: stream is NULL");
  sp_status st = sp__host_linear_check(op, "host linear_async");
  if (st != SP_OK) return st;
  sp__host_cmd c = {.kind = SP__HOST_CMD_LINEAR};
  c.u.linear = *op;
  return sp__host_submit(s, &c, NULL);
}

sp_status sp__host_convert_async(sp__bstream *s, void *dst, sp_dtype dst_type, const void *src,
                                 sp_dtype src_type, size_t n) {
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host convert_async: stream is NULL");
  sp_status st = sp__host_convert_check(dst, dst_type, src, src_type, n, "host convert_async");
  if (st != SP_OK) return st;
  if (!n) return SP_OK;
  sp__host_cmd c = {.kind = SP__HOST_CMD_CONVERT};
  c.u.convert.dst = dst;
  c.u.convert.src = src;
  c.u.convert.dst_type = dst_type;
  c.u.convert.src_type = src_type;
  c.u.convert.n = n;
  return sp__host_submit(s, &c, NULL);
}

sp_status sp__host_nn_async(sp__bstream *s, const sp__nn *op) {
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host nn_async: stream is NULL");
  sp_status st = sp__nn_op_check(op, "host nn_async");
  if (st != SP_OK) return st;
  sp__host_cmd c = {.kind = SP__HOST_CMD_NN};
  c.u.nn = *op;
  return sp__host_submit(s, &c, NULL);
}
