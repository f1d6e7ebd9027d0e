/* Inference plans: per-(model, stream, batch) buffers, staging and captured graphs for
 * sp_model_infer (see plan.h for what a plan holds).
 *
 * Owns: the model's plan table (one entry per pool stream index, PLAN_BATCHES infer plans and
 * FWD_PLANS forward plans each), every infer plan's device block (taken with sp_alloc on the
 * plan's stream, freed with the table), its staging (sp__pinned_alloc) and its graph; every
 * forward plan's graph and activation workspace (an allocator block on the plan's stream, the
 * graph's own until the table is freed: counted in sp_memory_stats and bounded by the limit).
 * Every device operation goes through src/core/ops.h.
 *
 * Graphs are captured with sp__graph_capture, on the device's private twin of the plan's pool
 * stream (no other thread submits there), and launched on the pool stream. A graph bakes in the
 * capture stream's matmul workspace; every graph of an entry is launched only on that entry's
 * pool stream, so they never run at the same time, and the capture stream itself runs nothing
 * after capturing. Before a capture the same work runs once eagerly on the pool stream, so that a
 * backend's per-shape choices (made only outside capture) are what the graph records: an infer
 * plan's forward on zeroed device input (no staging touched), a forward plan's as the creating
 * call's own pass (the graph then serves the next calls).
 *
 * Invariants: a published plan is immutable except under its mutex (its buffers are used by one
 * call at a time); graph == NULL means op-by-op (graphs off for the model (sp__graphs_enabled, at
 * build), staging not pinned, or the capture failed: remembered, logged once per table). Every
 * buffer a graph touches lives as long as the graph. A slot goes from NULL to a plan once, under
 * the entry's create_mu, and back only in sp__plan_table_destroy.
 *
 * Locking: entry.create_mu serializes plan creation per stream index (allocator calls and
 * captures are made under it, the device's capture mutex inside: it ranks below every core,
 * allocator and backend lock, src/core/lock.h); plan.mu serializes runs of one plan (backend
 * submits and syncs under it). Lookups read the slots with acquire loads: no lock is shared
 * between streams on the hot path.
 */
#include "infer/plan.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "infer/model.h"

enum {
  PLAN_BATCHES = 6, /* batch sizes cached per stream index (infer)       */
  FWD_PLANS = 8,    /* (batch, in, out) cached per stream index (forward) */
  PLAN_ALIGN = 256, /* bytes; each part of a plan's device block aligned */
};
#define PLAN_BYTES_MAX ((size_t)64 << 20) /* larger passes are not cached (uncached path) */

typedef struct sp__plan {
  unsigned batch;             /* rows; immutable                                       */
  size_t in_bytes, out_bytes; /* f32 input / output bytes; immutable                   */
  unsigned char *block;       /* device: in | out | workspace; immutable               */
  float *d_in, *d_out;        /* inside block; immutable                               */
  float *pin_in, *pin_out;    /* host staging (sp__pinned_alloc); immutable            */
  bool pinned_in, pinned_out; /* each staging buffer is pinned (capturable copies)    */
  sp__bgraph *graph;          /* the captured pass, or NULL: op by op; immutable       */
  sp__mutex mu;               /* held for a whole run: the buffers serve one call       */
} sp__plan;

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
  _Atomic(sp__plan *) plans[PLAN_BATCHES]; /* NULL until made; under create_mu to set        */
  _Atomic(sp__fplan *) fwd[FWD_PLANS];     /* the same, for sp_model_forward                 */
  atomic_bool fwd_off;                     /* a forward capture failed: op by op from now on */
  sp__mutex create_mu;                     /* serializes creation for this stream index      */
} plan_entry;

struct sp__plan_table {
  unsigned n;         /* entries: the device's pool size; immutable        */
  bool graphs;        /* capture graphs: the model's sp__graphs_enabled    */
  atomic_bool logged; /* a capture failure has been logged                 */
  plan_entry *e;      /* [n]                                               */
};

static size_t plan_round(size_t n) { return (n + PLAN_ALIGN - 1) & ~(size_t)(PLAN_ALIGN - 1); }

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
  *out = t;
  return SP_OK;
fail_free:
  sp__free(e);
  sp__free(t);
  return sp__fail(SP_ERR_HOST_MEMORY, "model: no host memory for the plan table");
}

/* Frees p's parts; the stream it ran on is idle. */
static void plan_destroy(sp_model *m, sp__plan *p) {
  sp__graph_destroy(m->dev, p->graph);
  sp__pinned_free(m->dev, p->pin_in, p->pinned_in);
  sp__pinned_free(m->dev, p->pin_out, p->pinned_out);
  if (p->block) sp_free(m->dev, p->block);
  sp__mutex_destroy(&p->mu);
  sp__free(p);
}

void sp__plan_table_destroy(sp_model *m, sp__plan_table *t) {
  if (!t) return;
  for (unsigned i = 0; i < t->n; i++) {
    plan_entry *e = &t->e[i];
    if (e->plans[0] || e->fwd[0]) (void)sp__stream_sync(&m->dev->streams[i]); /* buffers idle */
    for (unsigned k = 0; k < PLAN_BATCHES; k++) {
      sp__plan *p = atomic_load_explicit(&e->plans[k], memory_order_acquire);
      if (p) plan_destroy(m, p);
    }
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

/* ---- making a plan ----------------------------------------------------------------------- */

static void plan_log_capture_failure(sp_model *m, const char *what) {
  sp__plan_table *t = m->plans;
  if (!atomic_exchange_explicit(&t->logged, true, memory_order_relaxed))
    sp__log(SP_LOG_WARN, "model: %s (%s); sp_model_infer runs op by op for the plans concerned",
            what, sp_last_error());
  sp__error_clear(); /* the call itself succeeds */
}

/* Captures rec's work for launching on s (the caller ran it once eagerly on s first); the graph,
 * or NULL after a failure, logged once: a failure never fails the caller's call. create_mu held. */
static sp__bgraph *plan_record(sp_model *m, sp_stream *s, sp__graph_record_fn rec, void *arg) {
  sp__bgraph *g = NULL;
  if (sp__graph_capture(s, rec, arg, &g) != SP_OK) {
    plan_log_capture_failure(m, "graph capture failed");
    return NULL;
  }
  return g;
}

/* What an infer plan's graph records on the capture stream c. */
typedef struct plan_rec_infer {
  const sp_model *m;
  const sp__plan *p;
} plan_rec_infer;

/* The whole host-io pass of an infer plan: staging -> device, forward, device -> staging. */
static sp_status plan_record_infer(sp_stream *c, void *arg) {
  const plan_rec_infer *r = arg;
  const sp__plan *p = r->p;
  unsigned char *ws = p->block + plan_round(p->in_bytes) + plan_round(p->out_bytes);
  sp_status st = sp__stream_memcpy(c, p->d_in, p->pin_in, p->in_bytes);
  if (st == SP_OK) st = sp__model_enqueue(r->m, c, p->d_in, p->d_out, p->batch, ws);
  if (st == SP_OK) st = sp__stream_memcpy(c, p->pin_out, p->d_out, p->out_bytes);
  return st;
}

typedef struct plan_rec_forward {
  const sp_model *m;
  const sp__fplan *f;
} plan_rec_forward;

static sp_status plan_record_forward(sp_stream *c, void *arg) {
  const plan_rec_forward *r = arg;
  return sp__model_enqueue(r->m, c, r->f->in, r->f->out, r->f->batch, r->f->ws);
}

/* A new plan for (s, batch): device block on s, staging, graph when graphs are on. */
static sp_status plan_new(sp_model *m, sp_stream *s, unsigned batch, size_t bytes, sp__plan **out) {
  sp__plan *p = sp__calloc(1, sizeof(*p));
  if (!p) return sp__fail(SP_ERR_HOST_MEMORY, "sp_model_infer: no host memory for a plan");
  if (sp__mutex_init(&p->mu, SP__RANK_PLAN_RUN) != 0) {
    sp__free(p);
    return sp__fail(SP_ERR_HOST_MEMORY, "sp_model_infer: pthread_mutex_init failed");
  }
  p->batch = batch;
  p->in_bytes = (size_t)batch * sp_model_in_features(m) * sizeof(float);
  p->out_bytes = (size_t)batch * sp_model_out_features(m) * sizeof(float);
  sp_status st = sp_alloc(m->dev, bytes, s, (void **)&p->block);
  if (st != SP_OK) goto fail_plan;
  p->d_in = (float *)p->block;
  p->d_out = (float *)(p->block + plan_round(p->in_bytes));
  st = sp__pinned_alloc(m->dev, p->in_bytes, (void **)&p->pin_in, &p->pinned_in);
  if (st == SP_OK)
    st = sp__pinned_alloc(m->dev, p->out_bytes, (void **)&p->pin_out, &p->pinned_out);
  if (st != SP_OK) goto fail_plan;
  if (m->plans->graphs && p->pinned_in && p->pinned_out) { /* captured copies need pinned */
    plan_rec_infer r = {m, p};
    /* The forward once eagerly first (ops.h: the backend's per-shape choices), on zeroed device
     * input: it touches no staging, so the call's own input may land there at once. */
    unsigned char *ws = p->block + plan_round(p->in_bytes) + plan_round(p->out_bytes);
    if (sp_memset_async(s, p->d_in, 0, p->in_bytes) == SP_OK &&
        sp__model_enqueue(m, s, p->d_in, p->d_out, p->batch, ws) == SP_OK)
      p->graph = plan_record(m, s, plan_record_infer, &r);
    else plan_log_capture_failure(m, "the eager pass before a capture failed");
  }
  *out = p;
  return SP_OK;
fail_plan:
  plan_destroy(m, p);
  return st;
}

static sp__plan *plan_find(plan_entry *e, unsigned batch) {
  for (unsigned k = 0; k < PLAN_BATCHES; k++) {
    sp__plan *p = atomic_load_explicit(&e->plans[k], memory_order_acquire);
    if (!p) return NULL; /* slots fill in order */
    if (p->batch == batch) return p;
  }
  return NULL;
}

/* The plan for (s, batch), made now if missing; *out NULL when none can be had (no free slot,
 * or no memory for one). */
static sp_status plan_get_slow(sp_model *m, plan_entry *e, sp_stream *s, unsigned batch,
                               size_t bytes, sp__plan **out) {
  sp__mutex_lock(&e->create_mu);
  sp_status st = SP_OK;
  sp__plan *p = plan_find(e, batch);
  unsigned k = 0;
  while (!p && k < PLAN_BATCHES && atomic_load_explicit(&e->plans[k], memory_order_relaxed)) k++;
  if (!p && k < PLAN_BATCHES) {
    st = plan_new(m, s, batch, bytes, &p);
    if (st == SP_OK) atomic_store_explicit(&e->plans[k], p, memory_order_release);
  }
  sp__mutex_unlock(&e->create_mu);
  if (st == SP_ERR_OUT_OF_MEMORY || st == SP_ERR_LIMIT || st == SP_ERR_HOST_MEMORY) {
    sp__error_clear(); /* the uncached path needs less; it reports its own failure */
    st = SP_OK;
    p = NULL;
  }
  if (st == SP_OK) *out = p;
  return st;
}

/* ---- running ----------------------------------------------------------------------------- */

/* One pass through p on s; p->mu held. */
static sp_status plan_run(sp_model *m, sp__plan *p, sp_stream *s, const float *in, float *out) {
  memcpy(p->pin_in, in, p->in_bytes);
  sp_status st;
  if (p->graph) {
    st = sp__graph_launch(p->graph, s);
  } else {
    unsigned char *ws = p->block + plan_round(p->in_bytes) + plan_round(p->out_bytes);
    st = sp__stream_memcpy(s, p->d_in, p->pin_in, p->in_bytes);
    if (st == SP_OK) st = sp__model_enqueue(m, s, p->d_in, p->d_out, p->batch, ws);
    if (st == SP_OK) st = sp__stream_memcpy(s, p->pin_out, p->d_out, p->out_bytes);
  }
  sp_status sync = sp__stream_sync(s); /* also after a failure: copies may still use staging */
  if (st == SP_OK) st = sync;
  if (st == SP_OK) memcpy(out, p->pin_out, p->out_bytes);
  return st;
}

sp_status sp__plan_infer(sp_model *m, sp_stream *s, const float *in, float *out, unsigned batch,
                         bool *handled) {
  sp_assert(m->plans && s->index < m->plans->n);
  plan_entry *e = &m->plans->e[s->index];
  sp__plan *p = plan_find(e, batch);
  if (SP__UNLIKELY(!p)) {
    size_t in_b = (size_t)batch * sp_model_in_features(m) * sizeof(float);
    size_t out_b = (size_t)batch * sp_model_out_features(m) * sizeof(float);
    size_t bytes = plan_round(in_b) + plan_round(out_b) + sp__model_workspace_bytes(m, batch);
    sp_status st = bytes <= PLAN_BYTES_MAX ? plan_get_slow(m, e, s, batch, bytes, &p) : SP_OK;
    if (st != SP_OK || !p) {
      *handled = st != SP_OK;
      return st;
    }
  }
  sp__mutex_lock(&p->mu);
  sp_status st = plan_run(m, p, s, in, out);
  sp__mutex_unlock(&p->mu);
  *handled = true;
  return st;
}

/* ---- forward plans ------------------------------------------------------------------------ */

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
  f->graph = plan_record(m, s, plan_record_forward, &r);
  if (!f->graph) {
    atomic_store_explicit(&e->fwd_off, true, memory_order_relaxed);
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
