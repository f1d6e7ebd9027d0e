/* Inference plans: per-(model, stream, batch) buffers, staging and captured graphs for
 * sp_model_infer (see plan.h for what a plan holds).
 *
 * Owns: the model's plan table (one entry per pool stream index, PLAN_BATCHES infer plans and
 * FWD_PLANS forward plans each), every infer plan's device block (taken with sp_alloc on the
 * plan's stream, freed with the table), its pinned staging (backend host_alloc_pinned) and its
 * graph; every forward plan's graph and workspace (raw backend memory: a graph's private pool, so
 * sp_model_forward still leaves no allocator block behind); per entry a private capture stream.
 *
 * Why a private capture stream: a pool stream may be shared by several threads (round-robin), and
 * anything another thread submits to a stream while it is being captured would land in the graph
 * instead of running. So graphs are captured on a backend stream no one else sees and launched on
 * the pool stream. A graph bakes in the capture stream's matmul workspace; every graph of an entry
 * is launched only on that entry's pool stream, so they never run at the same time, and the
 * capture stream itself runs nothing after capturing.
 *
 * Invariants: a published plan is immutable except under its mutex (its buffers are used by one
 * call at a time); graph == NULL means op-by-op (no graph slots, no pinned memory,
 * STREAMPOOL_GRAPHS=0 at model build, or the capture failed: remembered, logged once per table).
 * Every buffer a graph touches lives as long as the graph. A slot goes from NULL to a plan once,
 * under the entry's create_mu, and back only in sp__plan_table_destroy.
 *
 * Locking: entry.create_mu serializes plan creation per stream index (allocator and backend calls
 * are made under it: it ranks below every core, allocator and backend lock, src/core/lock.h);
 * plan.mu serializes runs of one plan (backend submits and syncs under it). Lookups read the slots
 * with acquire loads: no lock is shared between streams on the hot path.
 */
#include "infer/plan.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "infer/model.h"

enum {
  PLAN_BATCHES = 6,  /* batch sizes cached per stream index (infer)       */
  FWD_PLANS = 8,     /* (batch, in, out) cached per stream index (forward) */
  PLAN_ALIGN = 256,  /* bytes; each part of a plan's device block aligned */
};
#define PLAN_BYTES_MAX ((size_t)64 << 20) /* larger passes are not cached (uncached path) */

typedef struct sp__plan {
  unsigned batch;              /* rows; immutable                                       */
  size_t in_bytes, out_bytes;  /* f32 input / output bytes; immutable                   */
  unsigned char *block;        /* device: in | out | workspace; immutable               */
  float *d_in, *d_out;         /* inside block; immutable                               */
  float *pin_in, *pin_out;     /* pinned staging, or NULL (user memory used directly)    */
  sp__bgraph *graph;           /* the captured pass, or NULL: op by op; immutable       */
  sp__mutex mu;                /* held for a whole run: the buffers serve one call       */
} sp__plan;

/* A forward plan: sp_model_forward of (batch, in, out) captured once; the graph reads in and
 * writes out at the addresses it was captured with, which are exactly the call's. */
typedef struct sp__fplan {
  unsigned batch;       /* key; immutable                                                   */
  const float *in;      /* key: device input rows; immutable                                */
  float *out;           /* key: device output rows; immutable                               */
  void *ws;             /* activation workspace: raw backend memory, the graph's own pool   */
  sp__bgraph *graph;    /* never NULL; immutable                                            */
} sp__fplan;

typedef struct plan_entry {
  _Atomic(sp__plan *) plans[PLAN_BATCHES]; /* NULL until made; under create_mu to set        */
  _Atomic(sp__fplan *) fwd[FWD_PLANS];     /* the same, for sp_model_forward                 */
  atomic_bool fwd_off;                     /* a forward capture failed: op by op from now on */
  sp__mutex create_mu;                     /* serializes creation for this stream index      */
  sp__bstream *capture;                    /* private capture stream (create_mu), or NULL    */
} plan_entry;

struct sp__plan_table {
  unsigned n;             /* entries: the device's pool size; immutable        */
  bool graphs;            /* capture graphs (STREAMPOOL_GRAPHS, default 1)     */
  atomic_bool logged;     /* a capture failure has been logged                 */
  plan_entry *e;          /* [n]                                               */
};

static size_t plan_round(size_t n) { return (n + PLAN_ALIGN - 1) & ~(size_t)(PLAN_ALIGN - 1); }

/* ---- the table --------------------------------------------------------------------------- */

/* STREAMPOOL_GRAPHS: "1" (default) captures graphs where the backend can, "0" runs plans op by
 * op (for comparison and debugging). */
static sp_status plan_env_graphs(bool *graphs) {
  return sp__env_switch("model build", "STREAMPOOL_GRAPHS", true, graphs);
}

sp_status sp__plan_table_create(const sp_model *m, sp__plan_table **out) {
  bool graphs = true;
  sp_status st = plan_env_graphs(&graphs);
  if (st != SP_OK) return st;
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
  t->graphs = graphs;
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
  const sp__backend *be = m->dev->be;
  if (p->graph) be->graph_destroy(p->graph);
  if (p->pin_in) be->host_free_pinned(m->dev->bdev, p->pin_in);
  if (p->pin_out) be->host_free_pinned(m->dev->bdev, p->pin_out);
  if (p->block) sp_free(m->dev, p->block);
  sp__mutex_destroy(&p->mu);
  sp__free(p);
}

void sp__plan_table_destroy(sp_model *m, sp__plan_table *t) {
  if (!t) return;
  const sp__backend *be = m->dev->be;
  for (unsigned i = 0; i < t->n; i++) {
    plan_entry *e = &t->e[i];
    sp__bstream *bs = sp__stream_peek(&m->dev->streams[i]);
    if (bs && (e->plans[0] || e->fwd[0])) (void)be->stream_sync(bs); /* buffers idle */
    for (unsigned k = 0; k < PLAN_BATCHES; k++) {
      sp__plan *p = atomic_load_explicit(&e->plans[k], memory_order_acquire);
      if (p) plan_destroy(m, p);
    }
    for (unsigned k = 0; k < FWD_PLANS; k++) {
      sp__fplan *f = atomic_load_explicit(&e->fwd[k], memory_order_acquire);
      if (!f) continue;
      be->graph_destroy(f->graph);
      be->mem_free(m->dev->bdev, f->ws);
      sp__free(f);
    }
    if (e->capture) be->stream_destroy(e->capture);
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

/* What a graph records: work submitted to the capture stream c. */
typedef sp_status (*plan_record_fn)(const sp_model *m, sp__bstream *c, const void *arg);

/* Records rec on the entry's capture stream (created on first use; create_mu held). Returns the
 * graph, or NULL after a failure, logged once; a failure never fails the caller's call. */
static sp__bgraph *plan_record(sp_model *m, plan_entry *e, unsigned index, plan_record_fn rec,
                               const void *arg) {
  const sp__backend *be = m->dev->be;
  if (!e->capture && be->stream_create(m->dev->bdev, index, &e->capture) != SP_OK) {
    e->capture = NULL;
    plan_log_capture_failure(m, "no stream to capture graphs on");
    return NULL;
  }
  sp__bstream *c = e->capture;
  if (be->graph_capture_begin(c) != SP_OK) {
    plan_log_capture_failure(m, "graph capture refused");
    return NULL;
  }
  sp_status st = rec(m, c, arg);
  sp__bgraph *g = NULL;
  sp_status end = be->graph_capture_end(c, &g); /* always: leaves capture mode */
  if (st == SP_OK && end == SP_OK) end = be->stream_sync(c); /* the graph's upload */
  if (st != SP_OK || end != SP_OK) {
    be->graph_destroy(g); /* NULL ok */
    plan_log_capture_failure(m, "graph capture failed");
    return NULL;
  }
  return g;
}

/* The whole host-io pass of an infer plan: staging -> device, forward, device -> staging. */
static sp_status plan_record_infer(const sp_model *m, sp__bstream *c, const void *arg) {
  const sp__plan *p = arg;
  const sp__backend *be = m->dev->be;
  unsigned char *ws = p->block + plan_round(p->in_bytes) + plan_round(p->out_bytes);
  sp_status st = be->memcpy_async(c, p->d_in, p->pin_in, p->in_bytes);
  if (st == SP_OK) st = sp__model_enqueue(m, c, p->d_in, p->d_out, p->batch, ws);
  if (st == SP_OK) st = be->memcpy_async(c, p->pin_out, p->d_out, p->out_bytes);
  return st;
}

static sp_status plan_record_forward(const sp_model *m, sp__bstream *c, const void *arg) {
  const sp__fplan *f = arg;
  return sp__model_enqueue(m, c, f->in, f->out, f->batch, f->ws);
}

/* A new plan for (s, batch): device block on s, staging, graph when the backend has them. */
static sp_status plan_new(sp_model *m, plan_entry *e, sp_stream *s, unsigned batch, size_t bytes,
                          sp__plan **out) {
  const sp__backend *be = m->dev->be;
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
  if (be->host_alloc_pinned) {
    st = be->host_alloc_pinned(m->dev->bdev, p->in_bytes, (void **)&p->pin_in);
    if (st == SP_OK) st = be->host_alloc_pinned(m->dev->bdev, p->out_bytes, (void **)&p->pin_out);
    if (st != SP_OK) goto fail_plan;
  }
  if (be->graph_capture_begin && p->pin_in && m->plans->graphs)
    p->graph = plan_record(m, e, s->index, plan_record_infer, p);
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
    st = plan_new(m, e, s, batch, bytes, &p);
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

/* One pass through p on bs; p->mu held. */
static sp_status plan_run(sp_model *m, sp__plan *p, sp__bstream *bs, const float *in, float *out) {
  const sp__backend *be = m->dev->be;
  if (p->pin_in) memcpy(p->pin_in, in, p->in_bytes);
  sp_status st;
  if (p->graph) {
    st = be->graph_launch(p->graph, bs);
  } else {
    unsigned char *ws = p->block + plan_round(p->in_bytes) + plan_round(p->out_bytes);
    st = be->memcpy_async(bs, p->d_in, p->pin_in ? p->pin_in : in, p->in_bytes);
    if (st == SP_OK) st = sp__model_enqueue(m, bs, p->d_in, p->d_out, p->batch, ws);
    if (st == SP_OK) st = be->memcpy_async(bs, p->pin_out ? p->pin_out : out, p->d_out,
                                           p->out_bytes);
  }
  sp_status sync = be->stream_sync(bs); /* also after a failure: copies may still use in/out */
  if (st == SP_OK) st = sync;
  if (st == SP_OK && p->pin_out) memcpy(out, p->pin_out, p->out_bytes);
  return st;
}

sp_status sp__plan_infer(sp_model *m, sp_stream *s, sp__bstream *bs, const float *in, float *out,
                         unsigned batch, bool *handled) {
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
  sp_status st = plan_run(m, p, bs, in, out);
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

/* A captured forward for (batch, in, out) on the entry, made now if a slot is free; NULL when not
 * (no slot, too large, no memory, the capture failed). create_mu held. */
static sp__fplan *fplan_new(sp_model *m, plan_entry *e, unsigned index, const float *in,
                            float *out, unsigned batch) {
  const sp__backend *be = m->dev->be;
  unsigned k = 0;
  while (k < FWD_PLANS && atomic_load_explicit(&e->fwd[k], memory_order_relaxed)) k++;
  size_t bytes = sp__model_workspace_bytes(m, batch);
  if (k == FWD_PLANS || bytes > PLAN_BYTES_MAX) return NULL;
  sp__fplan *f = sp__calloc(1, sizeof(*f));
  if (!f) return NULL;
  *f = (sp__fplan){.batch = batch, .in = in, .out = out};
  if (be->mem_alloc(m->dev->bdev, bytes, &f->ws) != SP_OK) goto free_plan;
  f->graph = plan_record(m, e, index, plan_record_forward, f);
  if (!f->graph) {
    atomic_store_explicit(&e->fwd_off, true, memory_order_relaxed);
    goto free_ws;
  }
  atomic_store_explicit(&e->fwd[k], f, memory_order_release);
  return f;
free_ws:
  be->mem_free(m->dev->bdev, f->ws);
free_plan:
  sp__free(f);
  sp__error_clear(); /* the op-by-op path serves the call */
  return NULL;
}

sp_status sp__plan_forward(sp_model *m, sp_stream *s, sp__bstream *bs, const float *in,
                           float *out, unsigned batch, bool *handled) {
  sp__plan_table *t = m->plans;
  const sp__backend *be = m->dev->be;
  sp_assert(t && s->index < t->n);
  *handled = false;
  if (!t->graphs || !be->graph_launch) return SP_OK;
  plan_entry *e = &t->e[s->index];
  sp__fplan *f = fplan_find(e, in, out, batch);
  if (SP__UNLIKELY(!f)) {
    if (atomic_load_explicit(&e->fwd_off, memory_order_relaxed)) return SP_OK;
    sp__mutex_lock(&e->create_mu);
    f = fplan_find(e, in, out, batch);
    if (!f) f = fplan_new(m, e, s->index, in, out, batch);
    sp__mutex_unlock(&e->create_mu);
    if (!f) return SP_OK;
  }
  *handled = true;
  return be->graph_launch(f->graph, bs);
}
