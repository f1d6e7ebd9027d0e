/* Host-io plans: per-(owner, stream, key) device blocks, staging and captured graphs (io_plan.h
 * says what a plan holds and who uses it).
 *
 * Owns: the table (one entry per pool stream index, `slots` plans each), every plan's device block
 * (taken with sp_alloc on the plan's stream, freed with the table), its staging (sp__pinned_alloc)
 * and its graph. Every device operation goes through src/core/ops.h.
 *
 * Graphs are captured with sp__graph_capture, on the device's private twin of the plan's pool
 * stream (no other thread submits there), and launched on the pool stream. A graph bakes in the
 * capture stream's scratch (a backend's matmul workspace); every graph of an entry is launched
 * only on that entry's pool stream, so they never run at the same time, and the capture stream
 * itself runs nothing after capturing. Before a capture the forward runs once eagerly on the pool
 * stream on zeroed device input (touching no staging, so the call's own input may land there at
 * once), so that a backend's per-shape choices (made only outside capture) are what the graph
 * records.
 *
 * Invariants: a published plan is immutable except under its mutex (its buffers serve one call at
 * a time); graph == NULL means op by op (graphs off, staging not pinned, or the capture failed:
 * logged once per table). Every buffer a graph touches lives as long as the graph. A slot goes
 * from NULL to a plan once, under the entry's create_mu, and back only in sp__io_plans_destroy;
 * slots fill in order.
 *
 * Locking: entry.create_mu (SP__RANK_PLAN_CREATE) serializes plan creation per stream index
 * (allocator calls and captures are made under it, the device's capture mutex inside: it ranks
 * below every core, allocator and backend lock, src/core/lock.h); plan.mu (SP__RANK_PLAN_RUN)
 * serializes runs of one plan (backend submits and syncs under it). Lookups read the slots with
 * acquire loads: no lock is shared between streams on the hot path.
 */
#include "infer/io_plan.h"

#include <stdatomic.h>
#include <string.h>

#include "alloc/alloc.h"
#include "core/ops.h"

typedef struct io_plan {
  uint64_t key;               /* immutable                                              */
  size_t in_bytes, out_bytes; /* immutable                                              */
  unsigned char *block;       /* device: in | out | workspace; immutable                */
  void *pin_in, *pin_out;     /* host staging (sp__pinned_alloc); immutable             */
  bool pinned_in, pinned_out; /* each staging buffer is pinned (capturable copies)      */
  sp__bgraph *graph;          /* the captured pass, or NULL: op by op; immutable        */
  sp__mutex mu;               /* held for a whole run                                    */
} io_plan;

typedef struct io_entry {
  _Atomic(io_plan *) *plans; /* [slots] of the table's array; set under create_mu */
  sp__mutex create_mu;
} io_entry;

struct sp__io_plans {
  sp_device *dev;           /* immutable                                   */
  unsigned n, slots;        /* entries (the pool size), plans per entry    */
  size_t max_bytes;         /* larger device blocks are never cached       */
  bool graphs;              /* capture passes                              */
  const char *who;          /* the owner's calls, for messages             */
  atomic_bool logged;       /* a capture failure has been logged           */
  io_entry *e;              /* [n]                                         */
  _Atomic(io_plan *) *slot; /* [n * slots]                           */
};

/* Where a plan's parts start in its device block. */
static void *io_out(const io_plan *p) { return p->block + sp__device_part_round(p->in_bytes); }
static void *io_ws(const io_plan *p) {
  return p->block + sp__device_part_round(p->in_bytes) + sp__device_part_round(p->out_bytes);
}

/* ---- the table --------------------------------------------------------------------------- */

sp_status sp__io_plans_create(sp_device *dev, bool graphs, unsigned slots, size_t max_bytes,
                              const char *who, sp__io_plans **out) {
  sp_assert(slots >= 1 && slots <= 64);
  unsigned n = dev->cfg.streams;
  sp__io_plans *t = sp__calloc(1, sizeof(*t));
  io_entry *e = sp__calloc(n, sizeof(*e));
  _Atomic(io_plan *) *slot = sp__calloc((size_t)n * slots, sizeof(*slot));
  if (!t || !e || !slot) goto fail_free;
  for (unsigned i = 0; i < n; i++) {
    e[i].plans = slot + (size_t)i * slots;
    if (sp__mutex_init(&e[i].create_mu, SP__RANK_PLAN_CREATE) != 0) {
      while (i-- > 0) sp__mutex_destroy(&e[i].create_mu);
      goto fail_free;
    }
  }
  *t = (sp__io_plans){.dev = dev,
                      .n = n,
                      .slots = slots,
                      .max_bytes = max_bytes,
                      .graphs = graphs,
                      .who = who,
                      .e = e,
                      .slot = slot};
  atomic_init(&t->logged, false);
  *out = t;
  return SP_OK;
fail_free:
  sp__free(slot);
  sp__free(e);
  sp__free(t);
  return sp__fail(SP_ERR_HOST_MEMORY, "%s: no host memory for the plan table", who);
}

/* Frees p's parts; the stream it ran on is idle. */
static void io_plan_destroy(sp__io_plans *t, io_plan *p) {
  sp__graph_destroy(t->dev, p->graph);
  sp__pinned_free(t->dev, p->pin_in, p->pinned_in);
  sp__pinned_free(t->dev, p->pin_out, p->pinned_out);
  if (p->block) (void)sp_free(t->dev, p->block);
  sp__mutex_destroy(&p->mu);
  sp__free(p);
}

void sp__io_plans_destroy(sp__io_plans *t) {
  if (!t) return;
  for (unsigned i = 0; i < t->n; i++) {
    io_entry *e = &t->e[i];
    if (e->plans[0]) (void)sp__stream_sync(&t->dev->streams[i]); /* buffers idle */
    for (unsigned k = 0; k < t->slots; k++) {
      io_plan *p = atomic_load_explicit(&e->plans[k], memory_order_acquire);
      if (p) io_plan_destroy(t, p);
    }
    sp__mutex_destroy(&e->create_mu);
  }
  sp__free(t->slot);
  sp__free(t->e);
  sp__free(t);
}

/* ---- making a plan ----------------------------------------------------------------------- */

typedef struct io_rec {
  const sp__io_pass *pass;
  const io_plan *p;
} io_rec;

/* The whole pass of p: staging -> device, forward, device -> staging (on c: the capture stream,
 * or the pool stream when op by op). */
static sp_status io_enqueue(const sp__io_pass *pass, const io_plan *p, sp_stream *c) {
  sp_status st = sp__stream_memcpy(c, p->block, p->pin_in, p->in_bytes);
  if (st == SP_OK) st = pass->forward(pass->owner, c, p->block, io_out(p), io_ws(p), p->key);
  if (st == SP_OK) st = sp__stream_memcpy(c, p->pin_out, io_out(p), p->out_bytes);
  return st;
}

static sp_status io_record(sp_stream *c, void *arg) {
  const io_rec *r = arg;
  return io_enqueue(r->pass, r->p, c);
}

/* Captures p's pass after its forward ran once eagerly on s on zeroed device input; a failure
 * leaves p op by op, logged once per table, and never fails the caller's call. */
static void io_plan_capture(sp__io_plans *t, const sp__io_pass *pass, sp_stream *s, io_plan *p) {
  io_rec r = {pass, p};
  sp_status st = sp_memset_async(s, p->block, 0, p->in_bytes);
  if (st == SP_OK) st = pass->forward(pass->owner, s, p->block, io_out(p), io_ws(p), p->key);
  bool eager = st == SP_OK;
  if (eager && sp__graph_capture(s, io_record, &r, &p->graph) == SP_OK) return;
  p->graph = NULL;
  if (!atomic_exchange_explicit(&t->logged, true, memory_order_relaxed))
    sp__log(SP_LOG_WARN, "%s: %s (%s); its passes run op by op", t->who,
            eager ? "graph capture failed" : "the eager pass before a capture failed",
            sp_last_error());
  sp__error_clear(); /* the call itself succeeds */
}

static sp_status io_plan_new(sp__io_plans *t, const sp__io_pass *pass, sp_stream *s, size_t bytes,
                             io_plan **out) {
  io_plan *p = sp__calloc(1, sizeof(*p));
  if (!p) return sp__fail(SP_ERR_HOST_MEMORY, "%s: no host memory for a plan", t->who);
  if (sp__mutex_init(&p->mu, SP__RANK_PLAN_RUN) != 0) {
    sp__free(p);
    return sp__fail(SP_ERR_HOST_MEMORY, "%s: pthread_mutex_init failed", t->who);
  }
  p->key = pass->key;
  p->in_bytes = pass->in_bytes;
  p->out_bytes = pass->out_bytes;
  sp_status st = sp_alloc(t->dev, bytes, s, (void **)&p->block);
  if (st == SP_OK) st = sp__pinned_alloc(t->dev, p->in_bytes, &p->pin_in, &p->pinned_in);
  if (st == SP_OK) st = sp__pinned_alloc(t->dev, p->out_bytes, &p->pin_out, &p->pinned_out);
  if (st != SP_OK) {
    io_plan_destroy(t, p);
    return st;
  }
  if (t->graphs && p->pinned_in && p->pinned_out) io_plan_capture(t, pass, s, p);
  *out = p;
  return SP_OK;
}

static io_plan *io_plan_find(const sp__io_plans *t, io_entry *e, uint64_t key) {
  for (unsigned k = 0; k < t->slots; k++) {
    io_plan *p = atomic_load_explicit(&e->plans[k], memory_order_acquire);
    if (!p) return NULL; /* slots fill in order */
    if (p->key == key) return p;
  }
  return NULL;
}

/* The plan for (s, key), made now if a slot is free; *out NULL when none can be had (no free
 * slot, or no memory for one). */
static sp_status io_plan_get_slow(sp__io_plans *t, io_entry *e, const sp__io_pass *pass,
                                  sp_stream *s, size_t bytes, io_plan **out) {
  sp__mutex_lock(&e->create_mu);
  sp_status st = SP_OK;
  io_plan *p = io_plan_find(t, e, pass->key);
  unsigned k = 0;
  while (!p && k < t->slots && atomic_load_explicit(&e->plans[k], memory_order_relaxed)) k++;
  if (!p && k < t->slots) {
    st = io_plan_new(t, pass, s, bytes, &p);
    if (st == SP_OK) atomic_store_explicit(&e->plans[k], p, memory_order_release);
  }
  sp__mutex_unlock(&e->create_mu);
  if (st == SP_ERR_OUT_OF_MEMORY || st == SP_ERR_LIMIT || st == SP_ERR_HOST_MEMORY) {
    sp__error_clear(); /* the uncached pass needs less; it reports its own failure */
    st = SP_OK;
    p = NULL;
  }
  if (st == SP_OK) *out = p;
  return st;
}

/* ---- running ----------------------------------------------------------------------------- */

/* One pass through p on s; p->mu held. */
static sp_status io_plan_pass(const sp__io_pass *pass, io_plan *p, sp_stream *s, const void *in,
                              void *out) {
  memcpy(p->pin_in, in, p->in_bytes);
  sp_status st = p->graph ? sp__graph_launch(p->graph, s) : io_enqueue(pass, p, s);
  sp_status sync = sp__stream_sync(s); /* also after a failure: copies may still use staging */
  if (st == SP_OK) st = sync;
  if (st == SP_OK) memcpy(out, p->pin_out, p->out_bytes);
  return st;
}

/* A pass no plan serves: one block of `bytes` (input | output | workspace) on s, freed in stream
 * order after the pass; in and out are the caller's host buffers. */
static sp_status io_pass_uncached(sp__io_plans *t, sp_stream *s, const sp__io_pass *pass,
                                  size_t bytes, const void *in, void *out) {
  size_t in_r = sp__device_part_round(pass->in_bytes),
         out_r = sp__device_part_round(pass->out_bytes);
  unsigned char *blk;
  sp_status st = sp_alloc(t->dev, bytes, s, (void **)&blk);
  if (st != SP_OK) return st;
  st = sp__stream_memcpy(s, blk, in, pass->in_bytes);
  if (st == SP_OK)
    st = pass->forward(pass->owner, s, blk, blk + in_r, blk + in_r + out_r, pass->key);
  if (st == SP_OK) st = sp__stream_memcpy(s, out, blk + in_r, pass->out_bytes);
  sp_status fr = sp_free(t->dev, blk);
  sp_status sync = sp__stream_sync(s); /* also when a step failed: copies may reference in */
  if (st != SP_OK) return st;
  return fr != SP_OK ? fr : sync;
}

sp_status sp__io_plan_run(sp__io_plans *t, sp_stream *s, const sp__io_pass *pass, const void *in,
                          void *out) {
  sp_assert(t && s->index < t->n && pass->key != 0);
  io_entry *e = &t->e[s->index];
  io_plan *p = io_plan_find(t, e, pass->key);
  if (SP__UNLIKELY(!p)) {
    size_t bytes = sp__device_part_round(pass->in_bytes) + sp__device_part_round(pass->out_bytes) +
                   pass->ws_bytes;
    sp_status st = bytes <= t->max_bytes ? io_plan_get_slow(t, e, pass, s, bytes, &p) : SP_OK;
    if (st != SP_OK) return st;
    if (!p) return io_pass_uncached(t, s, pass, bytes, in, out);
  }
  sp__mutex_lock(&p->mu);
  sp_status st = io_plan_pass(pass, p, s, in, out);
  sp__mutex_unlock(&p->mu);
  return st;
}
