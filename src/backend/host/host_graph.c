/* Host graphs: a capturing stream records its commands; a launch submits them as one unit.
 *
 * Owns: sp__bgraph (the device it was captured on and a copy of the recorded commands) and each
 * stream's capture state (host_impl.h). capture_begin switches a stream to recording for the
 * calling thread: from then on sp__host_submit appends that thread's commands to the stream's
 * recording instead of its ring, so nothing runs. capture_end turns the recording into a graph.
 * graph_launch copies the graph's commands into the ring of any stream of the device in one
 * locked step, so they run in stream order with no other submission between them; the graph
 * itself is never referenced by queued work, so graph_destroy may free it at once.
 *
 * The capture contract of backend.h is checked, not trusted: during a capture, stream_sync or
 * stream_query of the stream, event_record on it, a wait on another stream's event, raw or pinned
 * allocation by the capturing thread, submission from another thread and destroying the stream are
 * all violations (sp__host_capture_violation): an assertion failure in debug builds; otherwise the
 * call returns SP_ERR_BACKEND and the capture is broken, so capture_end fails with SP_ERR_BACKEND
 * and leaves nothing behind, as CUDA does for an invalidated capture. A thread captures one stream
 * at a time.
 *
 * Invariants: capturing implies rec_n <= rec_cap and capture_thread is the recording thread;
 * a graph holds no marker or wait commands (events are refused during capture), so it owns no
 * event references. Locking: the capture state is under the stream's mu (rank 2); the thread's
 * current capture is thread-local.
 */
#include <stdio.h>
#include <string.h>

#include "backend/host/host_impl.h"

enum { HOST_REC_INITIAL = 16 }; /* commands; a recording doubles when full */

struct sp__bgraph {
  sp__bdevice *dev;   /* device of the captured stream; immutable */
  sp__host_cmd *cmds; /* [n]; immutable                           */
  size_t n;           /* commands                                 */
};

static _Thread_local sp__bstream *host_tls_capture; /* the stream this thread captures, or NULL */

sp__bstream *sp__host_capture_of_thread(void) { return host_tls_capture; }

/* ---- violations ----------------------------------------------------------------------------- */

static void host_capture_break_locked(sp__bstream *s, const char *fn, const char *what) {
  if (s->rec_error != SP_OK) return; /* the first reason is the one reported */
  s->rec_error = SP_ERR_BACKEND;
  snprintf(s->rec_msg, sizeof(s->rec_msg), "%s: %s", fn, what);
}

sp_status sp__host_capture_violation_locked(sp__bstream *s, const char *fn, const char *what,
                                            const char *file, int line) {
#if SP_DEBUG >= 1
  sp__assert_fail(what, file, line);
#else
  (void)file;
  (void)line;
#endif
  if (s && sp__host_capturing(s)) host_capture_break_locked(s, fn, what);
  return sp__fail(SP_ERR_BACKEND, "host %s: capture contract broken: %s", fn, what);
}

sp_status sp__host_capture_violation(sp__bstream *s, const char *fn, const char *what,
                                     const char *file, int line) {
  if (!s) return sp__host_capture_violation_locked(NULL, fn, what, file, line);
  sp__mutex_lock(&s->mu);
  sp_status st = sp__host_capture_violation_locked(s, fn, what, file, line);
  sp__mutex_unlock(&s->mu);
  return st;
}

/* ---- recording ------------------------------------------------------------------------------ */

static sp_status host_rec_reserve_locked(sp__bstream *s, size_t n) {
  if (s->rec_cap - s->rec_n >= n) return SP_OK;
  size_t cap = s->rec_cap ? s->rec_cap : HOST_REC_INITIAL;
  while (cap - s->rec_n < n) cap *= 2;
  sp__host_cmd *rec = sp__malloc(cap * sizeof(*rec));
  if (!rec)
    return sp__fail(SP_ERR_HOST_MEMORY, "host stream %u: no host memory to record %zu commands",
                    s->index, cap);
  if (s->rec_n) memcpy(rec, s->rec, s->rec_n * sizeof(*rec));
  sp__free(s->rec);
  s->rec = rec;
  s->rec_cap = cap;
  return SP_OK;
}

sp_status sp__host_capture_record_locked(sp__bstream *s, const sp__host_cmd *cmds, size_t n) {
  sp_assert(sp__host_capturing(s));
  if (SP__UNLIKELY(!pthread_equal(s->capture_thread, pthread_self())))
    return sp__host_capture_violation_locked(s, "submit",
                                             "submission to a capturing stream from "
                                             "another thread",
                                             __FILE__, __LINE__);
  sp_status st = host_rec_reserve_locked(s, n);
  if (st != SP_OK) {
    host_capture_break_locked(s, "submit", sp_last_error());
    return st;
  }
  memcpy(s->rec + s->rec_n, cmds, n * sizeof(*cmds));
  s->rec_n += n;
  return SP_OK;
}

/* Leaves capture mode (mu held): hands the recording to the caller, resets the state. */
static sp__host_cmd *host_capture_take_locked(sp__bstream *s, size_t *n, sp_status *err, char *msg,
                                              size_t msg_size) {
  sp__host_cmd *rec = s->rec;
  *n = s->rec_n;
  *err = s->rec_error;
  snprintf(msg, msg_size, "%s", s->rec_msg);
  s->rec = NULL;
  s->rec_n = s->rec_cap = 0;
  s->rec_error = SP_OK;
  s->rec_msg[0] = '\0';
  atomic_store_explicit(&s->capturing, false, memory_order_release);
  return rec;
}

void sp__host_capture_discard(sp__bstream *s) {
  if (!sp__host_capturing(s)) return;
  size_t n;
  sp_status err;
  char msg[sizeof(s->rec_msg)];
  sp__free(host_capture_take_locked(s, &n, &err, msg, sizeof(msg)));
  if (host_tls_capture == s) host_tls_capture = NULL;
}

/* ---- table slots ---------------------------------------------------------------------------- */

sp_status sp__host_graph_capture_begin(sp__bstream *s) {
  static const char fn[] = "graph_capture_begin";
  if (!s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host %s: stream is NULL", fn);
  if (host_tls_capture)
    return SP__HOST_CAPTURE_VIOLATION(host_tls_capture, fn,
                                      "this thread already captures a "
                                      "stream");
  sp__mutex_lock(&s->mu);
  if (sp__host_capturing(s)) {
    sp_status st = sp__host_capture_violation_locked(s, fn, "the stream is already capturing",
                                                     __FILE__, __LINE__);
    sp__mutex_unlock(&s->mu);
    return st;
  }
  s->capture_thread = pthread_self();
  s->rec_n = 0;
  s->rec_error = SP_OK;
  atomic_store_explicit(&s->capturing, true, memory_order_release);
  sp__mutex_unlock(&s->mu);
  host_tls_capture = s;
  return SP_OK;
}

sp_status sp__host_graph_capture_end(sp__bstream *s, sp__bgraph **out) {
  static const char fn[] = "graph_capture_end";
  if (!s || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host %s: NULL argument", fn);
  if (host_tls_capture != s)
    return SP__HOST_CAPTURE_VIOLATION(NULL, fn, "the stream is not captured by this thread");
  host_tls_capture = NULL;
  sp__mutex_lock(&s->mu);
  size_t n;
  sp_status err;
  char msg[sizeof(s->rec_msg)];
  sp__host_cmd *rec = host_capture_take_locked(s, &n, &err, msg, sizeof(msg));
  sp__mutex_unlock(&s->mu);
  if (err != SP_OK) {
    sp__free(rec);
    return sp__fail(SP_ERR_BACKEND, "host %s: the capture of stream %u was invalidated (%s)", fn,
                    s->index, msg);
  }
  sp__bgraph *g = sp__calloc(1, sizeof(*g));
  if (!g) {
    sp__free(rec);
    return sp__fail(SP_ERR_HOST_MEMORY, "host %s: no host memory for the graph", fn);
  }
  g->dev = s->dev;
  g->cmds = rec; /* NULL for an empty capture */
  g->n = n;
  *out = g;
  return SP_OK;
}

sp_status sp__host_graph_launch(sp__bgraph *g, sp__bstream *s) {
  if (!g || !s) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host graph_launch: NULL argument");
  sp_assert(g->dev == s->dev);
  if (g->dev != s->dev)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "host graph_launch: the graph belongs to another "
                    "device");
  return sp__host_submit_n(s, g->cmds, g->n);
}

void sp__host_graph_destroy(sp__bgraph *g) {
  if (!g) return;
  sp__free(g->cmds);
  sp__free(g);
}
