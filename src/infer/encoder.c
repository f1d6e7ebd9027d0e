/* The BERT encoder's forward and its public embed calls.
 *
 * Owns: the pass structure of sp_encoder_embed / sp_encoder_embed_ids. Texts are tokenized on the
 * calling thread (sp_tokenizer_encode, truncated to max_seq), in chunks of ENC_CHUNK; a chunk's
 * sequences are ordered by length (longest first) and cut into passes: a pass pads its sequences
 * to the sequence bucket of its longest (8, 16, 32, ... up to max_seq) and its count to a batch
 * bucket (powers of two up to ENC_BATCH_MAX, at most ENC_PASS_TOKENS padded tokens), with
 * padding sequences of length 1. Padding never reaches a real row: attention masks keys past each
 * sequence's length and pooling reads only real rows, so a text's embedding does not depend on
 * what shares its pass. Each pass runs through the plan of (stream, batch, seq) (io_plan.c:
 * buffers kept, the pass one graph where graphs are on) or, when no plan serves it, through one
 * allocator block on the stream taken and freed around the pass.
 * The forward of a pass (sp__encoder_enqueue): embed -> LayerNorm -> per layer [qkv Linear,
 * attention, output Linear, LayerNorm with residual, Linear+GELU, Linear, LayerNorm with residual]
 * -> pool (f32 out, normalized where a Normalize module was loaded). Every device operation goes
 * through src/core/ops.h.
 * Locking: none of its own; an encoder is immutable, plans lock themselves.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/alloc.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "infer/encoder.h"

enum {
  ENC_CHUNK = 1024,       /* texts tokenized at a time                               */
  ENC_BATCH_MAX = 256,    /* sequences per pass                                      */
  ENC_PASS_TOKENS = 8192, /* padded tokens per pass (a longer single text: its own)  */
  ENC_SEQ_MIN = 8,        /* the smallest sequence bucket                            */
};

/* ---- shape ------------------------------------------------------------------------------- */

sp_status sp_encoder_info_get(const sp_encoder *e, sp_encoder_info *out) {
  if (!e || !out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_encoder_info_get: encoder or out is NULL");
  *out = e->info;
  return SP_OK;
}

unsigned sp_encoder_dim(const sp_encoder *e) { return e ? e->info.hidden : 0; }

const sp_tokenizer *sp_encoder_tokenizer(const sp_encoder *e) { return e ? e->tok : NULL; }

unsigned sp__encoder_seq_bucket(const sp_encoder *e, unsigned len) {
  unsigned b = ENC_SEQ_MIN;
  while (b < len) b *= 2;
  return b < e->info.max_seq ? b : e->info.max_seq;
}

/* ---- the forward ------------------------------------------------------------------------- */

size_t sp__encoder_workspace_bytes(const sp_encoder *e, unsigned batch, unsigned seq) {
  size_t rows = (size_t)batch * seq, elt = sp__dtype_size(e->dtype), h = e->info.hidden;
  size_t wide = e->info.intermediate > h ? e->info.intermediate : h;
  return 2 * sp__device_part_round(rows * h * elt) + sp__device_part_round(rows * 3 * h * elt) +
         sp__device_part_round(rows * wide * elt);
}

static sp_status enc_linear(const sp_encoder *e, sp_stream *s, unsigned rows, unsigned in,
                            unsigned out, const void *x, const void *w, const void *b, void *y,
                            sp__act act) {
  sp__linear op = {.dtype = e->dtype,
                   .batch = rows,
                   .in_features = in,
                   .out_features = out,
                   .x = x,
                   .w = w,
                   .bias = b,
                   .y = y,
                   .act = act};
  return sp__stream_linear(s, &op);
}

/* y = LayerNorm(x + residual) (residual NULL: none), in place allowed (y == x). */
static sp_status enc_norm(const sp_encoder *e, sp_stream *s, unsigned rows, void *x,
                          const void *residual, const void *g, const void *b) {
  sp__nn op = {.kind = SP__NN_LAYERNORM, .dtype = e->dtype};
  op.u.norm.rows = rows;
  op.u.norm.cols = e->info.hidden;
  op.u.norm.x = x;
  op.u.norm.residual = residual;
  op.u.norm.gamma = g;
  op.u.norm.beta = b;
  op.u.norm.eps = e->eps;
  op.u.norm.y = x;
  return sp__stream_nn(s, &op);
}

/* One encoder layer: h (in, and out after the swap) and t are [rows, H]; qkv [rows, 3H]; f
 * [rows, max(I, H)], which also holds the attention's output. */
static sp_status enc_layer(const sp_encoder *e, sp_stream *s, const sp__enc_layer *l,
                           unsigned batch, unsigned seq, const int32_t *lengths, void **h, void **t,
                           void *qkv, void *f) {
  unsigned rows = batch * seq, hd = e->info.hidden, in = e->info.intermediate;
  sp_status st = enc_linear(e, s, rows, hd, 3 * hd, *h, l->wqkv, l->bqkv, qkv, SP__ACT_NONE);
  if (st == SP_OK) {
    sp__nn op = {.kind = SP__NN_ATTENTION, .dtype = e->dtype};
    op.u.attention.batch = batch;
    op.u.attention.seq = seq;
    op.u.attention.heads = e->info.heads;
    op.u.attention.head_dim = hd / e->info.heads;
    op.u.attention.lengths = lengths;
    op.u.attention.scale = 1.0f / sqrtf((float)(hd / e->info.heads));
    op.u.attention.qkv = qkv;
    op.u.attention.y = f;
    st = sp__stream_nn(s, &op);
  }
  if (st == SP_OK) st = enc_linear(e, s, rows, hd, hd, f, l->wo, l->bo, *t, SP__ACT_NONE);
  if (st == SP_OK) st = enc_norm(e, s, rows, *t, *h, l->ln1_g, l->ln1_b);
  void *swap = *h;
  *h = *t;
  *t = swap;
  if (st == SP_OK) st = enc_linear(e, s, rows, hd, in, *h, l->w1, l->b1, f, e->act);
  if (st == SP_OK) st = enc_linear(e, s, rows, in, hd, f, l->w2, l->b2, *t, SP__ACT_NONE);
  if (st == SP_OK) st = enc_norm(e, s, rows, *t, *h, l->ln2_g, l->ln2_b);
  swap = *h;
  *h = *t;
  *t = swap;
  return st;
}

sp_status sp__encoder_enqueue(const sp_encoder *e, sp_stream *s, const int32_t *ids,
                              const int32_t *lengths, float *out, unsigned batch, unsigned seq,
                              void *workspace) {
  size_t rows = (size_t)batch * seq, elt = sp__dtype_size(e->dtype), hd = e->info.hidden;
  unsigned char *w = workspace;
  void *h = w, *t = w + sp__device_part_round(rows * hd * elt);
  void *qkv = (unsigned char *)t + sp__device_part_round(rows * hd * elt);
  void *f = (unsigned char *)qkv + sp__device_part_round(rows * 3 * hd * elt);
  sp__nn op = {.kind = SP__NN_EMBED, .dtype = e->dtype};
  op.u.embed.batch = batch;
  op.u.embed.seq = seq;
  op.u.embed.hidden = e->info.hidden;
  op.u.embed.ids = ids;
  op.u.embed.type_ids = NULL; /* token type 0 */
  op.u.embed.word = e->word;
  op.u.embed.pos = e->pos;
  op.u.embed.type = e->type;
  op.u.embed.y = h;
  sp_status st = sp__stream_nn(s, &op);
  if (st == SP_OK) st = enc_norm(e, s, (unsigned)rows, h, NULL, e->emb_g, e->emb_b);
  for (unsigned i = 0; i < e->info.layers && st == SP_OK; i++)
    st = enc_layer(e, s, &e->layers[i], batch, seq, lengths, &h, &t, qkv, f);
  if (st == SP_OK) {
    sp__nn p = {.kind = SP__NN_POOL, .dtype = e->dtype};
    p.u.pool.batch = batch;
    p.u.pool.seq = seq;
    p.u.pool.hidden = e->info.hidden;
    p.u.pool.lengths = lengths;
    p.u.pool.cls = e->info.pooling_cls != 0;
    p.u.pool.normalize = e->info.normalize != 0;
    p.u.pool.x = h;
    p.u.pool.y = out;
    st = sp__stream_nn(s, &p);
  }
  return st;
}

/* ---- passes ------------------------------------------------------------------------------ */

/* The sequences of one chunk: sequence i is ids + i*stride, lengths[i] tokens. */
typedef struct enc_seqs {
  const int32_t *ids;
  size_t stride;
  const uint32_t *lengths;
  size_t n;
} enc_seqs;

/* What one embed call works in (host): ordering, one pass's input and output, sized by
 * enc_scratch_new for the call's chunk (C = min(n, ENC_CHUNK) texts) and its largest pass (B =
 * its batch bucket, at most ENC_BATCH_MAX sequences). */
typedef struct enc_scratch {
  uint32_t *order;  /* [C] */
  int32_t *pass_in; /* ids [min(B * max_seq, ENC_PASS_TOKENS + max_seq)] then lengths [B] */
  float *pass_out;  /* [B * hidden] */
} enc_scratch;

/* Orders idx[0, n) by length, longest first, then by index (insertion into buckets by length:
 * lengths are <= max_seq, a counting sort). */
static void enc_order(const enc_seqs *q, unsigned max_seq, uint32_t *idx, uint32_t *counts) {
  memset(counts, 0, (max_seq + 2) * sizeof(*counts));
  for (size_t i = 0; i < q->n; i++) counts[max_seq - q->lengths[i]]++;
  uint32_t sum = 0;
  for (unsigned k = 0; k <= max_seq; k++) {
    uint32_t c = counts[k];
    counts[k] = sum;
    sum += c;
  }
  for (size_t i = 0; i < q->n; i++) idx[counts[max_seq - q->lengths[i]]++] = (uint32_t)i;
}

/* A plan's forward: d_in holds the batch x seq ids, then the batch lengths; key = batch << 32 |
 * seq. */
static sp_status enc_plan_forward(const void *owner, sp_stream *c, const void *d_in, void *d_out,
                                  void *ws, uint64_t key) {
  unsigned batch = (unsigned)(key >> 32), seq = (unsigned)key;
  const int32_t *ids = d_in;
  return sp__encoder_enqueue(owner, c, ids, ids + (size_t)batch * seq, d_out, batch, seq, ws);
}

/* One pass through the plan for (s, batch, seq), or uncached when no plan serves it
 * (sp__io_plan_run). */
static sp_status enc_pass(sp_encoder *e, sp_stream *s, unsigned batch, unsigned seq,
                          const int32_t *in, float *out) {
  sp__io_pass pass = {.owner = e,
                      .forward = enc_plan_forward,
                      .key = (uint64_t)batch << 32 | seq,
                      .in_bytes = ((size_t)batch * seq + batch) * sizeof(int32_t),
                      .out_bytes = (size_t)batch * e->info.hidden * sizeof(float),
                      .ws_bytes = sp__encoder_workspace_bytes(e, batch, seq)};
  return sp__io_plan_run(e->plans, s, &pass, in, out);
}

static unsigned enc_batch_bucket(unsigned count, unsigned cap) {
  unsigned b = 1;
  while (b < count) b *= 2;
  return b < cap ? b : cap;
}

/* Runs every sequence of q in passes; row i of out gets sequence i's embedding. */
static sp_status enc_run(sp_encoder *e, sp_stream *s, const enc_seqs *q, enc_scratch *w,
                         uint32_t *counts, float *out) {
  enc_order(q, e->info.max_seq, w->order, counts);
  unsigned hd = e->info.hidden;
  size_t next = 0;
  while (next < q->n) {
    unsigned seq = sp__encoder_seq_bucket(e, q->lengths[w->order[next]]);
    unsigned cap = ENC_PASS_TOKENS / seq;
    if (cap < 1) cap = 1;
    if (cap > ENC_BATCH_MAX) cap = ENC_BATCH_MAX;
    unsigned count = (unsigned)(q->n - next < cap ? q->n - next : cap);
    unsigned batch = enc_batch_bucket(count, cap);
    int32_t *ids = w->pass_in, *len = w->pass_in + (size_t)batch * seq;
    memset(ids, 0, (size_t)batch * seq * sizeof(*ids));
    for (unsigned b = 0; b < batch; b++) {
      if (b < count) {
        uint32_t i = w->order[next + b];
        memcpy(ids + (size_t)b * seq, q->ids + i * q->stride, q->lengths[i] * sizeof(*ids));
        len[b] = (int32_t)q->lengths[i];
      } else {
        len[b] = 1; /* a padding sequence: one token (id 0), its row is dropped */
      }
    }
    sp_status st = enc_pass(e, s, batch, seq, w->pass_in, w->pass_out);
    if (st != SP_OK) return st;
    for (unsigned b = 0; b < count; b++)
      memcpy(out + (size_t)w->order[next + b] * hd, w->pass_out + (size_t)b * hd,
             hd * sizeof(float));
    next += count;
  }
  return SP_OK;
}

/* ---- the public calls -------------------------------------------------------------------- */

static sp_status enc_check(sp_encoder *e, const void *a, size_t n, float *out, const char *fn) {
  if (!e) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: encoder is NULL", fn);
  sp_status st = sp__device_enter(e->dev, fn);
  if (st != SP_OK) return st;
  if (n && (!a || !out))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, a ? "out" : "input");
  if (n > SIZE_MAX / sizeof(float) / e->info.hidden)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: n %zu is too large", fn, n);
  return SP_OK;
}

/* Host scratch for one call of n texts, sized for its largest chunk and pass (one text: about
 * 2 KB, not the 1.4 MB of a full chunk); counts has max_seq + 2 entries. */
static sp_status enc_scratch_new(const sp_encoder *e, size_t n, enc_scratch *w, uint32_t **counts,
                                 const char *fn) {
  unsigned chunk = n < ENC_CHUNK ? (unsigned)n : ENC_CHUNK, ms = e->info.max_seq;
  size_t batch = enc_batch_bucket(chunk, ENC_BATCH_MAX); /* no pass has more sequences */
  size_t rows = batch * ms < ENC_PASS_TOKENS + ms ? batch * ms : ENC_PASS_TOKENS + ms;
  w->order = sp__malloc(chunk * sizeof(*w->order));
  w->pass_in = sp__malloc((rows + batch) * sizeof(int32_t));
  w->pass_out = sp__malloc(batch * e->info.hidden * sizeof(float));
  *counts = sp__malloc((e->info.max_seq + 2) * sizeof(**counts));
  if (w->order && w->pass_in && w->pass_out && *counts) return SP_OK;
  sp__free(w->order);
  sp__free(w->pass_in);
  sp__free(w->pass_out);
  sp__free(*counts);
  return sp__fail(SP_ERR_HOST_MEMORY, "%s: out of host memory", fn);
}

static void enc_scratch_free(enc_scratch *w, uint32_t *counts) {
  sp__free(w->order);
  sp__free(w->pass_in);
  sp__free(w->pass_out);
  sp__free(counts);
}

static sp_status enc_embed_texts(sp_encoder *e, sp_stream *s, const char *const *texts, size_t n,
                                 float *out, enc_scratch *w, uint32_t *counts) {
  static const char fn[] = "sp_encoder_embed";
  unsigned ms = e->info.max_seq, chunk = n < ENC_CHUNK ? (unsigned)n : ENC_CHUNK;
  int32_t *ids = sp__malloc((size_t)chunk * ms * sizeof(*ids));
  uint32_t *lengths = sp__malloc(chunk * sizeof(*lengths));
  sp_status st = SP_OK;
  if (!ids || !lengths) st = sp__fail(SP_ERR_HOST_MEMORY, "%s: out of host memory", fn);
  for (size_t base = 0; base < n && st == SP_OK; base += ENC_CHUNK) {
    size_t c = n - base < ENC_CHUNK ? n - base : ENC_CHUNK;
    for (size_t i = 0; i < c && st == SP_OK; i++) {
      const char *t = texts[base + i];
      size_t got = 0;
      if (!t) {
        st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: texts[%zu] is NULL", fn, base + i);
        break;
      }
      st = sp_tokenizer_encode(e->tok, t, strlen(t), ms, ids + i * ms, ms, &got);
      if (st != SP_OK) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", sp_last_error());
        st = sp__fail(st, "%s: texts[%zu]: %s", fn, base + i, msg);
      }
      lengths[i] = (uint32_t)got;
    }
    enc_seqs q = {.ids = ids, .stride = ms, .lengths = lengths, .n = c};
    if (st == SP_OK) st = enc_run(e, s, &q, w, counts, out + base * e->info.hidden);
  }
  sp__free(ids);
  sp__free(lengths);
  return st;
}

static sp_status enc_embed(sp_encoder *e, const char *const *texts, size_t n, float *out) {
  static const char fn[] = "sp_encoder_embed";
  sp_status st = enc_check(e, texts, n, out, fn);
  if (st != SP_OK || n == 0) return st;
  sp_stream *s;
  st = sp_stream_current(e->dev, &s);
  if (st != SP_OK) return st;
  enc_scratch w;
  uint32_t *counts;
  st = enc_scratch_new(e, n, &w, &counts, fn);
  if (st != SP_OK) return st;
  st = enc_embed_texts(e, s, texts, n, out, &w, counts);
  enc_scratch_free(&w, counts);
  return st;
}

static sp_status enc_check_ids(const sp_encoder *e, const int32_t *ids, const uint32_t *lengths,
                               size_t n, size_t stride, const char *fn) {
  if (!lengths) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: lengths is NULL", fn);
  if (stride == 0 || stride > SIZE_MAX / sizeof(int32_t) / n)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: stride %zu is 0 or too large", fn, stride);
  size_t lim = stride < e->info.max_seq ? stride : e->info.max_seq;
  for (size_t i = 0; i < n; i++) {
    if (lengths[i] < 1 || lengths[i] > lim)
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "%s: sequence %zu: length %u is outside 1..%zu (min of stride and max_seq)",
                      fn, i, lengths[i], lim);
    for (uint32_t k = 0; k < lengths[i]; k++) {
      int32_t id = ids[i * stride + k];
      if (id < 0 || (uint32_t)id >= e->info.vocab)
        return sp__fail(SP_ERR_INVALID_ARGUMENT,
                        "%s: sequence %zu, position %u: id %d is outside 0..%u", fn, i, k, id,
                        e->info.vocab - 1);
    }
  }
  return SP_OK;
}

static sp_status enc_embed_ids(sp_encoder *e, const int32_t *ids, const uint32_t *lengths, size_t n,
                               size_t stride, float *out) {
  static const char fn[] = "sp_encoder_embed_ids";
  sp_status st = enc_check(e, ids, n, out, fn);
  if (st != SP_OK || n == 0) return st;
  st = enc_check_ids(e, ids, lengths, n, stride, fn);
  if (st != SP_OK) return st;
  sp_stream *s;
  st = sp_stream_current(e->dev, &s);
  if (st != SP_OK) return st;
  enc_scratch w;
  uint32_t *counts;
  st = enc_scratch_new(e, n, &w, &counts, fn);
  if (st != SP_OK) return st;
  for (size_t base = 0; base < n && st == SP_OK; base += ENC_CHUNK) {
    enc_seqs q = {.ids = ids + base * stride,
                  .stride = stride,
                  .lengths = lengths + base,
                  .n = n - base < ENC_CHUNK ? n - base : ENC_CHUNK};
    st = enc_run(e, s, &q, &w, counts, out + base * e->info.hidden);
  }
  enc_scratch_free(&w, counts);
  return st;
}

/* The public embeds run with cancellation disabled (sp__cancel_off): a plan's mutex is held
 * across its run and the run syncs its stream. */
sp_status sp_encoder_embed(sp_encoder *e, const char *const *texts, size_t n, float *out) {
  int cancel = sp__cancel_off();
  sp_status st = enc_embed(e, texts, n, out);
  sp__cancel_restore(cancel);
  return st;
}

sp_status sp_encoder_embed_ids(sp_encoder *e, const int32_t *ids, const uint32_t *lengths, size_t n,
                               size_t stride, float *out) {
  int cancel = sp__cancel_off();
  sp_status st = enc_embed_ids(e, ids, lengths, n, stride, out);
  sp__cancel_restore(cancel);
  return st;
}
