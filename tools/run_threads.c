/* streampool run: the worker threads. Each calls the model (or the batcher) on its own current
 * stream until run_shared.stop, checks every output row against the reference with the one error
 * metric (measure.h), and records its latencies in its own histogram. A thread writes only its
 * run_thread; it shares with the others only run_shared's atomics and start barrier.
 */
#include <stdlib.h>
#include <string.h>

#include "measure.h"
#include "run.h"

static void thread_note_error(run_thread *t, sp_status st) {
  if (!t->failures++)
    snprintf(t->first_error, sizeof(t->first_error), "%s: %s", sp_status_str(st), sp_last_error());
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
  uint64_t t0 = sp_cli_now_ns();
  sp_status st = b ? sp_batcher_infer(b, in, out) : sp_model_infer(sh->m[t->dev], in, out, batch);
  uint64_t t1 = sp_cli_now_ns();
  if (st != SP_OK) {
    thread_note_error(t, st);
    return;
  }
  t->lat[sp_cli_lat_bucket(t1 - t0)]++;
  if (sh->o->self_test_wrong && t->index == 0 && t->requests == 3) out[0] += 1.0f;
  for (unsigned j = 0; j < batch; j++) {
    double e = sp_cli_row_error(out + (size_t)j * ref->out_f,
                                ref->out + (size_t)((r0 + j) % REF_ROWS) * ref->out_f, ref->out_f);
    if (e > t->max_err) t->max_err = e;
    if (!(e <= ref->tol)) t->wrong++;
  }
}

void *sp_cli_run_thread_main(void *arg) {
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
