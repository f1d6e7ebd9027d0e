/* Host events: a (stream, target) mark on a stream's monotonic `completed` counter.
 *
 * Owns: sp__bevent. Recording sets stream = s and target = the number of commands submitted to s
 * so far; the event is done when s->completed >= target. A timing event also queues a marker
 * command (and target counts it), which stamps CLOCK_MONOTONIC when it runs on the worker; the
 * marker carries the record's generation, so a marker of an earlier record never stamps a later
 * one. A non-timing record queues nothing. A stream wait copies (stream, target) at enqueue time,
 * so re-recording the event later does not change waits already queued.
 *
 * Invariants: refs = 1 (the owner, until event_destroy) + queued markers; the event is freed when
 * refs reaches 0, so destroying an event whose marker is still queued is safe. stamped implies the
 * current record's marker has run.
 *
 * During a capture of s (host_graph.c) recording an event on s, or making s wait on another
 * stream's event, breaks the capture contract and is refused.
 *
 * Locking: the mark (stream, target) is a seqlock: a record takes its writer side (seq odd, a CAS;
 * ranked in src/core/lock.h, a leaf), rewrites it and publishes seq + 2; query, sync and stream
 * waits read it with loads only and retry while it changes. So a non-timing record is one atomic
 * read-modify-write and a query none. sp__bevent.mu guards gen/stamp: a timing record holds it
 * while it queues its marker (taking the stream's mu, ranked after it) and rewrites the mark.
 * Waiting is done with no event lock held.
 */
#include <sched.h>
#include <time.h>

#include "backend/host/host_impl.h"

enum { MARK_TRIES = 64 }; /* a mark's reader or writer yields after this many tries */

static uint64_t host_clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void host_event_unref(sp__bevent *e) {
  if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1) return;
  sp__mutex_destroy(&e->mu);
  sp__free(e);
}

/* The mark (stream, target), read consistently: seqlock reader, loads only. */
static sp__bstream *host_event_mark(sp__bevent *e, uint64_t *target) {
  for (unsigned tries = 1;; tries++) {
    uint64_t q = atomic_load_explicit(&e->seq, memory_order_acquire);
    sp__bstream *s = atomic_load_explicit(&e->stream, memory_order_relaxed);
    uint64_t t = atomic_load_explicit(&e->target, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire); /* the loads above before the re-check */
    if (!(q & 1) && atomic_load_explicit(&e->seq, memory_order_relaxed) == q) {
      *target = t;
      return s;
    }
    if (tries % MARK_TRIES == 0) sched_yield(); /* the writer may be preempted */
  }
}

/* The seqlock's writer side, one CAS to take it: returns the even sequence it replaced. The new
 * mark is written between host_event_mark_begin and host_event_mark_end. */
static uint64_t host_event_mark_begin(sp__bevent *e) {
  sp__lock_note_acquire(&e->seq, SP__RANK_HOST_EVENT_MARK);
  uint64_t q = atomic_load_explicit(&e->seq, memory_order_relaxed);
  for (unsigned tries = 1;; tries++) {
    if (!(q & 1) && atomic_compare_exchange_weak_explicit(&e->seq, &q, q + 1, memory_order_acquire,
                                                          memory_order_relaxed))
      break;
    if (tries % MARK_TRIES == 0) sched_yield();
    q = atomic_load_explicit(&e->seq, memory_order_relaxed);
  }
  sp__lock_note_acquired(&e->seq, SP__RANK_HOST_EVENT_MARK);
  atomic_thread_fence(memory_order_release); /* seq odd before the new mark */
  return q;
}

static void host_event_mark_end(sp__bevent *e, uint64_t q, sp__bstream *s, uint64_t target) {
  atomic_store_explicit(&e->stream, s, memory_order_relaxed);
  atomic_store_explicit(&e->target, target, memory_order_relaxed);
  sp__lock_note_release(&e->seq, SP__RANK_HOST_EVENT_MARK);
  atomic_store_explicit(&e->seq, q + 2, memory_order_release);
}

sp_status sp__host_event_create(sp__bdevice *d, unsigned flags, sp__bevent **out) {
  if (!d || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host event_create: NULL argument");
  sp__lock_assert_call_ok("host event_create");
  if (flags & ~(unsigned)SP_EVENT_TIMING)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "host event_create: unknown flags 0x%x", flags);
  sp__bevent *e = sp__calloc(1, sizeof(*e));
  if (!e) return sp__fail(SP_ERR_HOST_MEMORY, "host event_create: out of host memory");
  e->dev = d;
  e->flags = flags;
  atomic_init(&e->refs, 1);
  sp__mutex_init(&e->mu, SP__RANK_HOST_EVENT);
  *out = e;
  return SP_OK;
}

void sp__host_event_destroy(sp__bevent *e) {
  if (e) host_event_unref(e);
}

void sp__host_marker_run(sp__bevent *e, uint64_t gen) {
  uint64_t now = host_clock_ns();
  sp__mutex_lock(&e->mu);
  if (e->gen == gen) {
    e->stamp_ns = now;
    e->stamped = true;
  }
  sp__mutex_unlock(&e->mu);
  host_event_unref(e);
}

/* Timing record (e->mu held): queue a marker for generation gen+1, then commit the mark. */
static sp_status host_event_record_timed_locked(sp__bevent *e, sp__bstream *s) {
  uint64_t gen = e->gen + 1, seq;
  sp__host_cmd c = {.kind = SP__HOST_CMD_MARKER};
  c.u.marker.event = e;
  c.u.marker.gen = gen;
  atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
  sp_status st = sp__host_submit(s, &c, &seq);
  if (st != SP_OK) {
    atomic_fetch_sub_explicit(&e->refs, 1, memory_order_relaxed); /* the owner still holds one */
    return st;
  }
  e->gen = gen; /* the marker cannot run before we unlock: it needs e->mu */
  uint64_t q = host_event_mark_begin(e);
  host_event_mark_end(e, q, s, seq);
  e->stamped = false;
  return SP_OK;
}

sp_status sp__host_event_record(sp__bevent *e, sp__bstream *s) {
  if (!e || !s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host event_record: NULL argument");
  sp__lock_assert_call_ok("host event_record");
  if (SP__UNLIKELY(sp__host_capturing(s)))
    return SP__HOST_CAPTURE_VIOLATION(s, "event_record", "event record on a capturing stream");
  if (!(e->flags & SP_EVENT_TIMING)) {
    /* submitted is read inside the writer side, so of two racing records the later mark wins */
    uint64_t q = host_event_mark_begin(e);
    host_event_mark_end(e, q, s, atomic_load_explicit(&s->submitted, memory_order_acquire));
    return SP_OK;
  }
  sp__mutex_lock(&e->mu);
  sp_status st = host_event_record_timed_locked(e, s);
  sp__mutex_unlock(&e->mu);
  return st;
}

sp_status sp__host_stream_wait_event(sp__bstream *s, sp__bevent *e) {
  if (!s || !e) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host stream_wait_event: NULL argument");
  uint64_t target;
  sp__bstream *other = host_event_mark(e, &target);
  /* Never recorded, recorded on s itself (FIFO order suffices) or already done: nothing to do. */
  if (SP__UNLIKELY(sp__host_capturing(s)) && other && other != s)
    return SP__HOST_CAPTURE_VIOLATION(s, "stream_wait_event",
                                      "a capturing stream waits on "
                                      "another stream's event");
  if (!other || other == s || sp__host_completed(other) >= target) return SP_OK;
  sp__host_cmd c = {.kind = SP__HOST_CMD_WAIT};
  c.u.wait.other = other;
  c.u.wait.target = target;
  return sp__host_submit(s, &c, NULL);
}

sp_status sp__host_event_query(sp__bevent *e) {
  if (!e) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host event_query: event is NULL");
  sp__lock_assert_call_ok("host event_query");
  uint64_t target;
  sp__bstream *s = host_event_mark(e, &target);
  return !s || sp__host_completed(s) >= target ? SP_OK : SP_ERR_NOT_READY;
}

sp_status sp__host_event_sync(sp__bevent *e) {
  if (!e) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host event_sync: event is NULL");
  uint64_t target;
  sp__bstream *s = host_event_mark(e, &target);
  if (s) sp__host_wait_completed(s, target);
  return SP_OK;
}

/* The stamp of a timing event: SP_OK, or why there is none. */
static sp_status host_event_stamp(sp__bevent *e, const char *which, uint64_t *ns) {
  if (!(e->flags & SP_EVENT_TIMING))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "host event_elapsed_ms: the %s event was created without SP_EVENT_TIMING",
                    which);
  sp__mutex_lock(&e->mu); /* timing records rewrite the mark under it too */
  sp__bstream *s = atomic_load_explicit(&e->stream, memory_order_relaxed);
  bool done = s && sp__host_completed(s) >= atomic_load_explicit(&e->target, memory_order_relaxed);
  bool stamped = e->stamped;
  *ns = e->stamp_ns;
  sp__mutex_unlock(&e->mu);
  if (!s)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "host event_elapsed_ms: the %s event was never "
                    "recorded",
                    which);
  if (!done || !stamped) return SP_ERR_NOT_READY;
  return SP_OK;
}

sp_status sp__host_event_elapsed_ms(sp__bevent *start, sp__bevent *end, float *ms) {
  if (!start || !end || !ms)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "host event_elapsed_ms: NULL argument");
  uint64_t t0 = 0, t1 = 0; /* written on SP_OK; initialized for -Wmaybe-uninitialized */
  sp_status st = host_event_stamp(start, "start", &t0);
  if (st != SP_OK) return st;
  if ((st = host_event_stamp(end, "end", &t1)) != SP_OK) return st;
  *ms = (float)(((double)t1 - (double)t0) / 1e6);
  return SP_OK;
}
