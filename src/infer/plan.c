/* Inference plans of a model: sp_model_infer's host-io plans (through io_plan.c, key = batch) and
 * sp_model_forward's forward plans (see plan.h for both).
 *
 * Owns: the model's plan table: the host-io plan table (PLAN_BATCHES batch sizes per pool stream
 * index) and one forward-plan entry per pool stream index (FWD_PLANS each), every forward plan's
 * graph and activation workspace (an allocator block on the plan's stream, the graph's own until
 * the table is freed: counted in sp_memory_stats and bounded by the limit). Every device
 * operation goes through src/core/ops.h.
 *
 * A forward plan is captured with sp__graph_capture on the device's private twin of the entry's
 * pool stream and launched on the pool stream (io_plan.c says why that is safe); the creating
 * call's own pass runs eagerly on the pool stream first, so a backend's per-shape choices (made
 * only outside capture) are what the graph records, and the graph serves the next calls.
 *
 * Invariants: a published forward plan is immutable; a slot goes from NULL to a plan once, under
 * the entry's create_mu, and back only in sp__plan_table_destroy; a failed capture turns the
 * entry's forward plans off (logged once per table).
 *
 * Locking: entry.create_mu (SP__RANK_PLAN_CREATE) serializes forward-plan creation per stream
 * index (allocator calls and captures under it); lookups are acquire loads, no lock on the hot
 * path.
 */
#include "infer/plan.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "infer/io_plan.h"
#include "infer/model.h"

enum {
  PLAN_BATCHES = 6, /* batch sizes cached per stream index (infer)       */
  FWD_PLANS = 8,    /* (batch, in, out) cached per stream index (forward) */
};
#define PLAN_BYTES_MAX ((size_t)64 << 20) /* larger passes are not cached (uncached path) */

/* A forward plan: sp_model_forward of (batch, in, out) captured once; the graph reads in and
 * writes out at the addresses it was captured with, which are exactly the call's. */
typedef struct sp__fplan {
  unsigned batch;    /* key; immutable                                                   */
  const float *in;   /* key: device input rows; immutable                                */
  float *out;        /* key: device output rows; immutable                               */
  void *ws;          /* activation workspace: an allocator block on the entry's stream   */
  sp__bgraph *graph; /* never NULL; immutable                                            */
} sp__fplan;

typedef struct plan_entry {
  _Atomic(sp__fplan *) fwd[FWD_PLANS]; /* NULL until made; under create_mu to set        */
  atomic_bool fwd_off;                 /* a forward capture failed: op by op from now on */
  sp__mutex create_mu;                 /* serializes creation for this stream index      */
} plan_entry;

struct sp__plan_table {
  unsigned n;         /* entries: the device's pool size; immutable        */
  bool graphs;        /* capture graphs: the model's sp__graphs_enabled    */
  atomic_bool logged; /* a forward capture failure has been logged         */
  sp__io_plans *io;   /* sp_model_infer's host-io plans                    */
  plan_entry *e;      /* [n]                                               */
};

/* ---- the table --------------------------------------------------------------------------- */

sp_status sp__plan_table_create(const sp_model *m, sp__plan_table **out) {
  sp__plan_table *t = sp__calloc(1, sizeof(*t));
  unsigned n = m->dev->cfg.streams;
  plan_entry *e = sp__calloc(n, sizeof(*e));
  if (!t || !e) goto fail_free;
  for (unsigned i = 0; i < n; i++)
    if (sp__mutex_init(&e[i].create_mu, SP__RANK_PLAN_CREATE) != 0) {
      while (i-- > 0) sp__mutex_destroy(&e[i].create_mu);
      goto fail_free;
    }
  t->n = n;
  t->graphs = m->graphs;
  t->e = e;
  atomic_init(&t->logged, false);
  sp_status st = sp__io_plans_create(m->dev, m->graphs, PLAN_BATCHES, PLAN_BYTES_MAX,
                                     "sp_model_infer", &t->io);
  if (st != SP_OK) {
    for (unsigned i = 0; i < n; i++) sp__mutex_destroy(&e[i].create_mu);
    sp__free(e);
    sp__free(t);
    return st;
  }
  *out = t;
  return SP_OK;
fail_free:
  sp__free(e);
  sp__free(t);
  return sp__fail(SP_ERR_HOST_MEMORY, "model: no host memory for the plan table");
}

void sp__plan_table_destroy(sp_model *m, sp__plan_table *t) {
  if (!t) return;
  sp__io_plans_destroy(t->io);
  for (unsigned i = 0; i < t->n; i++) {
    plan_entry *e = &t->e[i];
    if (e->fwd[0]) (void)sp__stream_sync(&m->dev->streams[i]); /* workspaces idle */
    for (unsigned k = 0; k < FWD_PLANS; k++) {
      sp__fplan *f = atomic_load_explicit(&e->fwd[k], memory_order_acquire);
      if (!f) continue;
      sp__graph_destroy(m->dev, f->graph);
      (void)sp_free(m->dev, f->ws); /* its stream is idle: the block is free at once */
      sp__free(f);
    }
    sp__mutex_destroy(&e->create_mu);
  }
  sp__free(t->e);
  sp__free(t);
}

/* ---- sp_model_infer: host-io plans ----------------------------------------------------- */

static sp_status plan_infer_forward(const void *owner, sp_stream *c, const void *d_in, void *d_out,
                                    void *ws, uint64_t key) {
  return sp__model_enqueue(owner, c, d_in, d_out, (unsigned)key, ws);
}

sp_status sp__plan_infer(sp_model *m, sp_stream *s, const float *in, float *out, unsigned batch) {
  sp__io_pass pass = {.owner = m,
                      .forward = plan_infer_forward,
                      .key = batch,
                      .in_bytes = (size_t)batch * sp_model_in_features(m) * sizeof(float),
                      .out_bytes = (size_t)batch * sp_model_out_features(m) * sizeof(float),
                      .ws_bytes = sp__model_workspace_bytes(m, batch)};
  return sp__io_plan_run(m->plans->io, s, &pass, in, out);
}

/* ---- sp_model_forward: forward plans ----------------------------------------------------- */

typedef struct plan_rec_forward {
  const sp_model *m;
  const sp__fplan *f;
} plan_rec_forward;

static sp_status plan_record_forward(sp_stream *c, void *arg) {
  const plan_rec_forward *r = arg;
  return sp__model_enqueue(r->m, c, r->f->in, r->f->out, r->f->batch, r->f->ws);
}

static sp__fplan *fplan_find(plan_entry *e, const float *in, const float *out, unsigned batch) {
  for (unsigned k = 0; k < FWD_PLANS; k++) {
    sp__fplan *f = atomic_load_explicit(&e->fwd[k], memory_order_acquire);
    if (!f) return NULL; /* slots fill in order */
    if (f->batch == batch && f->in == in && f->out == out) return f;
  }
  return NULL;
}

/* A captured forward for (batch, in, out) on s's entry, made now if a slot is free; NULL when
 * not (no slot, too large, no memory, the capture failed). Making one runs the call's own pass
 * eagerly on s first (ops.h: the backend's per-shape choices), so *ran says whether this call's
 * work is already queued, with *st its status: the caller must not run it again (in may be out).
 * create_mu held. */
static sp__fplan *fplan_new(sp_model *m, plan_entry *e, sp_stream *s, const float *in, float *out,
                            unsigned batch, bool *ran, sp_status *st) {
  *ran = false;
  unsigned k = 0;
  while (k < FWD_PLANS && atomic_load_explicit(&e->fwd[k], memory_order_relaxed)) k++;
  size_t bytes = sp__model_workspace_bytes(m, batch);
  if (k == FWD_PLANS || bytes > PLAN_BYTES_MAX) return NULL;
  sp__fplan *f = sp__calloc(1, sizeof(*f));
  if (!f) return NULL;
  *f = (sp__fplan){.batch = batch, .in = in, .out = out};
  if (sp_alloc(m->dev, bytes, s, &f->ws) != SP_OK) goto free_plan;
  plan_rec_forward r = {m, f};
  *st = plan_record_forward(s, &r); /* the call's pass */
  *ran = true;
  if (*st != SP_OK) goto free_ws;
  if (sp__graph_capture(s, plan_record_forward, &r, &f->graph) != SP_OK) {
    f->graph = NULL;
    atomic_store_explicit(&e->fwd_off, true, memory_order_relaxed);
    if (!atomic_exchange_explicit(&m->plans->logged, true, memory_order_relaxed))
      sp__log(SP_LOG_WARN,
              "model: graph capture failed (%s); sp_model_forward runs op by op on that stream",
              sp_last_error());
    goto free_ws;
  }
  atomic_store_explicit(&e->fwd[k], f, memory_order_release);
  return f;
free_ws:
  (void)sp_free(m->dev, f->ws); /* stream-ordered: after the eager pass, if it ran */
free_plan:
  sp__free(f);
  if (!*ran || *st == SP_OK) sp__error_clear(); /* the call's own failure stays reported */
  return NULL;
}

sp_status sp__plan_forward(sp_model *m, sp_stream *s, const float *in, float *out, unsigned batch,
                           bool *handled) {
  sp__plan_table *t = m->plans;
  sp_assert(t && s->index < t->n);
  *handled = false;
  if (!t->graphs) return SP_OK;
  plan_entry *e = &t->e[s->index];
  sp__fplan *f = fplan_find(e, in, out, batch);
  if (SP__UNLIKELY(!f)) {
    if (atomic_load_explicit(&e->fwd_off, memory_order_relaxed)) return SP_OK;
    bool ran = false;
    sp_status st = SP_OK;
    sp__mutex_lock(&e->create_mu);
    f = fplan_find(e, in, out, batch);
    if (!f) f = fplan_new(m, e, s, in, out, batch, &ran, &st);
    sp__mutex_unlock(&e->create_mu);
    if (ran) { /* this call's pass already ran eagerly */
      *handled = true;
      return st;
    }
    if (!f) return SP_OK;
  }
  *handled = true;
  return sp__graph_launch(f->graph, s);
}
