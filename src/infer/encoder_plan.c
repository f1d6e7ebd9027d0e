/* Encoder plans: per-(encoder, stream, batch bucket, sequence bucket) buffers, staging and a
 * captured graph for one pass of sp_encoder_embed (the encoder's twin of plan.c).
 *
 * Owns: the encoder's plan table (one entry per pool stream index, ENC_PLANS plans each); every
 * plan's device block (ids | lengths | out | workspace: one allocator block taken on the plan's
 * stream, counted, freed with the table), its staging (sp__pinned_alloc: ids and lengths in, f32
 * rows out) and, where graphs are on for the encoder and the staging is pinned, the whole pass
 * captured once (H2D copy of ids and lengths, the forward, D2H copy of the pooled rows). A pass
 * then costs a memcpy into staging, one graph launch, one stream sync and a memcpy out.
 *
 * Graphs are captured with sp__graph_capture on the device's private twin of the plan's pool
 * stream and launched on the pool stream; every graph of an entry runs only on that entry's
 * stream, so they never run at the same time (they share the capture stream's scratch).
 *
 * Invariants: a published plan is immutable except under its mutex (its buffers serve one call
 * at a time); graph == NULL means op by op (graphs off, staging not pinned, or the capture failed:
 * logged once per table). A slot goes from NULL to a plan once, under the entry's create_mu, and
 * back only in sp__enc_plans_destroy.
 *
 * Locking: entry.create_mu (SP__RANK_PLAN_CREATE) serializes plan creation per stream index
 * (allocator calls and captures under it); plan.mu (SP__RANK_PLAN_RUN) serializes runs of one
 * plan. Lookups are acquire loads: no lock shared between streams on the hot path.
 */
#include <stdatomic.h>
#include <string.h>

#include "alloc/alloc.h"
#include "core/ops.h"
#include "infer/encoder.h"

enum {
  ENC_PLANS = 16,   /* (batch, seq) buckets cached per stream index */
  ENC_PALIGN = 256, /* bytes; each part of a plan's block aligned   */
};
#define ENC_PLAN_BYTES_MAX ((size_t)256 << 20) /* larger passes run uncached */

typedef struct enc_plan {
  unsigned batch, seq;        /* key; immutable                                   */
  size_t in_bytes, out_bytes; /* ids+lengths / pooled rows; immutable             */
  unsigned char *block;       /* device: in | out | workspace; immutable          */
  int32_t *pin_in;            /* host staging (sp__pinned_alloc); immutable       */
  float *pin_out;
  bool pinned_in, pinned_out; /* each staging buffer is pinned (capturable copies) */
  sp__bgraph *graph;          /* the captured pass, or NULL: op by op; immutable  */
  sp__mutex mu;               /* held for a whole run                              */
} enc_plan;

typedef struct enc_entry {
  _Atomic(enc_plan *) plans[ENC_PLANS]; /* NULL until made; set under create_mu */
  sp__mutex create_mu;
} enc_entry;

struct sp__enc_plans {
  unsigned n;         /* entries: the device's pool size */
  atomic_bool logged; /* a capture failure has been logged */
  enc_entry *e;       /* [n] */
};

static size_t enc_pround(size_t n) { return (n + ENC_PALIGN - 1) & ~(size_t)(ENC_PALIGN - 1); }

sp_status sp__enc_plans_create(sp_encoder *enc) {
  struct sp__enc_plans *t = sp__calloc(1, sizeof(*t));
  unsigned n = enc->dev->cfg.streams;
  enc_entry *e = sp__calloc(n, sizeof(*e));
  if (!t || !e) goto fail_free;
  for (unsigned i = 0; i < n; i++)
    if (sp__mutex_init(&e[i].create_mu, SP__RANK_PLAN_CREATE) != 0) {
      while (i-- > 0) sp__mutex_destroy(&e[i].create_mu);
      goto fail_free;
    }
  t->n = n;
  t->e = e;
  atomic_init(&t->logged, false);
  enc->plans = t;
  return SP_OK;
fail_free:
  sp__free(e);
  sp__free(t);
  return sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_load: no host memory for the plan table");
}

/* Frees p's parts; the stream it ran on is idle. */
static void enc_plan_destroy(sp_encoder *enc, enc_plan *p) {
  sp__graph_destroy(enc->dev, p->graph);
  sp__pinned_free(enc->dev, p->pin_in, p->pinned_in);
  sp__pinned_free(enc->dev, p->pin_out, p->pinned_out);
  if (p->block) (void)sp_free(enc->dev, p->block);
  sp__mutex_destroy(&p->mu);
  sp__free(p);
}

void sp__enc_plans_destroy(sp_encoder *enc) {
  struct sp__enc_plans *t = enc->plans;
  if (!t) return;
  for (unsigned i = 0; i < t->n; i++) {
    enc_entry *e = &t->e[i];
    if (e->plans[0]) (void)sp__stream_sync(&enc->dev->streams[i]); /* buffers idle */
    for (unsigned k = 0; k < ENC_PLANS; k++) {
      enc_plan *p = atomic_load_explicit(&e->plans[k], memory_order_acquire);
      if (p) enc_plan_destroy(enc, p);
    }
    sp__mutex_destroy(&e->create_mu);
  }
  sp__free(t->e);
  sp__free(t);
  enc->plans = NULL;
}

/* ---- making a plan ----------------------------------------------------------------------- */

typedef struct enc_rec {
  const sp_encoder *enc;
  const enc_plan *p;
} enc_rec;

/* The forward alone, device input to device output (on c). */
static sp_status enc_plan_forward(const sp_encoder *enc, const enc_plan *p, sp_stream *c) {
  const int32_t *d_ids = (const int32_t *)p->block, *d_len = d_ids + (size_t)p->batch * p->seq;
  float *d_out = (float *)(p->block + enc_pround(p->in_bytes));
  void *ws = p->block + enc_pround(p->in_bytes) + enc_pround(p->out_bytes);
  return sp__encoder_enqueue(enc, c, d_ids, d_len, d_out, p->batch, p->seq, ws);
}

/* The whole pass: staging -> device, forward, device -> staging (on c, or on the pool stream when
 * op by op). */
static sp_status enc_plan_enqueue(const sp_encoder *enc, const enc_plan *p, sp_stream *c) {
  float *d_out = (float *)(p->block + enc_pround(p->in_bytes));
  sp_status st = sp__stream_memcpy(c, p->block, p->pin_in, p->in_bytes);
  if (st == SP_OK) st = enc_plan_forward(enc, p, c);
  if (st == SP_OK) st = sp__stream_memcpy(c, p->pin_out, d_out, p->out_bytes);
  return st;
}

static sp_status enc_plan_record(sp_stream *c, void *arg) {
  const enc_rec *r = arg;
  return enc_plan_enqueue(r->enc, r->p, c);
}

/* Captures p's pass, after running its forward once eagerly on s (ops.h: the backend's per-shape
 * choices are made outside capture) on zeroed device input: ids 0, lengths 0, which the layers
 * count as 1. The eager run touches no staging, so the call's own input may land there at once. */
static void enc_plan_capture(sp_encoder *enc, sp_stream *s, enc_plan *p) {
  enc_rec r = {enc, p};
  sp_status st = sp_memset_async(s, p->block, 0, p->in_bytes);
  if (st == SP_OK) st = enc_plan_forward(enc, p, s);
  if (st == SP_OK && sp__graph_capture(s, enc_plan_record, &r, &p->graph) == SP_OK) return;
  p->graph = NULL;
  if (!atomic_exchange_explicit(&enc->plans->logged, true, memory_order_relaxed))
    sp__log(SP_LOG_WARN, "encoder: graph capture failed (%s); its passes run op by op",
            sp_last_error());
  sp__error_clear(); /* the call itself succeeds */
}

static sp_status enc_plan_new(sp_encoder *enc, sp_stream *s, unsigned batch, unsigned seq,
                              size_t bytes, enc_plan **out) {
  enc_plan *p = sp__calloc(1, sizeof(*p));
  if (!p) return sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_embed: no host memory for a plan");
  if (sp__mutex_init(&p->mu, SP__RANK_PLAN_RUN) != 0) {
    sp__free(p);
    return sp__fail(SP_ERR_HOST_MEMORY, "sp_encoder_embed: pthread_mutex_init failed");
  }
  p->batch = batch;
  p->seq = seq;
  p->in_bytes = ((size_t)batch * seq + batch) * sizeof(int32_t);
  p->out_bytes = (size_t)batch * enc->info.hidden * sizeof(float);
  sp_status st = sp_alloc(enc->dev, bytes, s, (void **)&p->block);
  if (st == SP_OK) st = sp__pinned_alloc(enc->dev, p->in_bytes, (void **)&p->pin_in, &p->pinned_in);
  if (st == SP_OK)
    st = sp__pinned_alloc(enc->dev, p->out_bytes, (void **)&p->pin_out, &p->pinned_out);
  if (st != SP_OK) {
    enc_plan_destroy(enc, p);
    return st;
  }
  if (enc->graphs && p->pinned_in && p->pinned_out) enc_plan_capture(enc, s, p);
  *out = p;
  return SP_OK;
}

static enc_plan *enc_plan_find(enc_entry *e, unsigned batch, unsigned seq) {
  for (unsigned k = 0; k < ENC_PLANS; k++) {
    enc_plan *p = atomic_load_explicit(&e->plans[k], memory_order_acquire);
    if (!p) return NULL; /* slots fill in order */
    if (p->batch == batch && p->seq == seq) return p;
  }
  return NULL;
}

/* The plan for (s, batch, seq), made now if a slot is free; *out NULL when none can be had. */
static sp_status enc_plan_get_slow(sp_encoder *enc, enc_entry *e, sp_stream *s, unsigned batch,
                                   unsigned seq, size_t bytes, enc_plan **out) {
  sp__mutex_lock(&e->create_mu);
  sp_status st = SP_OK;
  enc_plan *p = enc_plan_find(e, batch, seq);
  unsigned k = 0;
  while (!p && k < ENC_PLANS && atomic_load_explicit(&e->plans[k], memory_order_relaxed)) k++;
  if (!p && k < ENC_PLANS) {
    st = enc_plan_new(enc, s, batch, seq, bytes, &p);
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

static sp_status enc_plan_pass(sp_encoder *enc, enc_plan *p, sp_stream *s, const int32_t *in,
                               float *out) {
  memcpy(p->pin_in, in, p->in_bytes);
  sp_status st = p->graph ? sp__graph_launch(p->graph, s) : enc_plan_enqueue(enc, p, s);
  sp_status sync = sp__stream_sync(s); /* also after a failure: copies may still use staging */
  if (st == SP_OK) st = sync;
  if (st == SP_OK) memcpy(out, p->pin_out, p->out_bytes);
  return st;
}

sp_status sp__enc_plan_run(sp_encoder *enc, sp_stream *s, unsigned batch, unsigned seq,
                           const int32_t *in, float *out, bool *handled) {
  sp_assert(enc->plans && s->index < enc->plans->n);
  enc_entry *e = &enc->plans->e[s->index];
  enc_plan *p = enc_plan_find(e, batch, seq);
  *handled = false;
  if (SP__UNLIKELY(!p)) {
    size_t in_b = ((size_t)batch * seq + batch) * sizeof(int32_t);
    size_t out_b = (size_t)batch * enc->info.hidden * sizeof(float);
    size_t bytes =
        enc_pround(in_b) + enc_pround(out_b) + sp__encoder_workspace_bytes(enc, batch, seq);
    sp_status st =
        bytes <= ENC_PLAN_BYTES_MAX ? enc_plan_get_slow(enc, e, s, batch, seq, bytes, &p) : SP_OK;
    if (st != SP_OK || !p) {
      *handled = st != SP_OK;
      return st;
    }
  }
  sp__mutex_lock(&p->mu);
  sp_status st = enc_plan_pass(enc, p, s, in, out);
  sp__mutex_unlock(&p->mu);
  *handled = true;
  return st;
}
