/* Host encoder ops (sp__nn): LayerNorm, embedding gather, masked multi-head attention, pooling.
 *
 * Owns: the arithmetic the worker runs for SP__HOST_CMD_NN, in plain C. Every element is read as
 * f32 (bf16 widened), the math is f32 with double accumulators where a sum runs over a row (mean,
 * variance, norms, softmax denominators), and each result is rounded once to the op's dtype.
 * Attention keeps one row of scores in the stream's scratch (seq floats); nothing else allocates.
 * Plain loops are enough here: an encoder's time on the host is in its Linears (OpenBLAS).
 *
 * Invariants: ops were validated at submission (sp__host_nn_check), so the worker trusts shapes
 * and pointers; token ids are the caller's to bound (backend.h).
 * Locking: none; the scratch belongs to the stream's worker.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend/host/host_impl.h"
#include "core/dtype.h"

enum { NN_DIM_MAX = 1u << 24 }; /* any one extent */

static inline float nn_load(const void *p, sp_dtype dt, size_t i) {
  if (dt == SP_BF16) {
    uint16_t h;
    memcpy(&h, (const unsigned char *)p + 2 * i, 2);
    return sp__bf16_to_f32(h);
  }
  float f;
  memcpy(&f, (const unsigned char *)p + 4 * i, 4);
  return f;
}

static inline void nn_store(void *p, sp_dtype dt, size_t i, float v) {
  if (dt == SP_BF16) {
    uint16_t h = sp__f32_to_bf16(v);
    memcpy((unsigned char *)p + 2 * i, &h, 2);
  } else {
    memcpy((unsigned char *)p + 4 * i, &v, 4);
  }
}

/* ---- checks at submission ------------------------------------------------------------------- */

static sp_status nn_dims(const char *fn, const char *what, const unsigned *d, size_t n) {
  uint64_t prod = 1;
  for (size_t i = 0; i < n; i++) {
    if (d[i] == 0 || d[i] > NN_DIM_MAX)
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: extent %u is outside 1..%u", fn, what, d[i],
                      NN_DIM_MAX);
    prod *= d[i];
    if (prod > ((uint64_t)1 << 40))
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: shape too large", fn, what);
  }
  return SP_OK;
}

static sp_status nn_ptrs(const char *fn, const char *what, const void *const *p,
                         const char *const *names, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!p[i]) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: %s is NULL", fn, what, names[i]);
  return SP_OK;
}

sp_status sp__host_nn_check(const sp__nn *op, const char *fn) {
  if (!op) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: op is NULL", fn);
  if (!sp__dtype_valid(op->dtype))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: unknown dtype %d", fn, (int)op->dtype);
  switch (op->kind) {
  case SP__NN_LAYERNORM: {
    const unsigned d[] = {op->u.norm.rows, op->u.norm.cols};
    const void *p[] = {op->u.norm.x, op->u.norm.gamma, op->u.norm.beta, op->u.norm.y};
    const char *const n[] = {"x", "gamma", "beta", "y"};
    sp_status st = nn_dims(fn, "layernorm", d, 2);
    if (st == SP_OK) st = nn_ptrs(fn, "layernorm", p, n, 4);
    if (st == SP_OK && !(op->u.norm.eps >= 0.0f))
      st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: layernorm: eps %g is not >= 0", fn,
                    (double)op->u.norm.eps);
    return st;
  }
  case SP__NN_EMBED: {
    const unsigned d[] = {op->u.embed.batch, op->u.embed.seq, op->u.embed.hidden};
    const void *p[] = {op->u.embed.ids, op->u.embed.word, op->u.embed.pos, op->u.embed.type,
                       op->u.embed.y};
    const char *const n[] = {"ids", "word", "pos", "type", "y"};
    sp_status st = nn_dims(fn, "embed", d, 3);
    return st == SP_OK ? nn_ptrs(fn, "embed", p, n, 5) : st;
  }
  case SP__NN_ATTENTION: {
    const unsigned d[] = {op->u.attention.batch, op->u.attention.seq, op->u.attention.heads,
                          op->u.attention.head_dim, 3};
    const void *p[] = {op->u.attention.lengths, op->u.attention.qkv, op->u.attention.y};
    const char *const n[] = {"lengths", "qkv", "y"};
    sp_status st = nn_dims(fn, "attention", d, 5);
    if (st == SP_OK) st = nn_ptrs(fn, "attention", p, n, 3);
    if (st == SP_OK && !isfinite(op->u.attention.scale))
      st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: attention: scale is not finite", fn);
    return st;
  }
  case SP__NN_POOL: {
    const unsigned d[] = {op->u.pool.batch, op->u.pool.seq, op->u.pool.hidden};
    const void *p[] = {op->u.pool.lengths, op->u.pool.x, op->u.pool.y};
    const char *const n[] = {"lengths", "x", "y"};
    sp_status st = nn_dims(fn, "pool", d, 3);
    return st == SP_OK ? nn_ptrs(fn, "pool", p, n, 3) : st;
  }
  case SP__NN_KIND_COUNT: break;
  }
  return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: unknown op kind %d", fn, (int)op->kind);
}

/* ---- the ops -------------------------------------------------------------------------------- */

static void nn_layernorm(const sp__nn *op) {
  sp_dtype dt = op->dtype;
  size_t cols = op->u.norm.cols;
  for (size_t r = 0; r < op->u.norm.rows; r++) {
    size_t base = r * cols;
    double sum = 0.0, sq = 0.0;
    for (size_t c = 0; c < cols; c++) {
      float v = nn_load(op->u.norm.x, dt, base + c);
      if (op->u.norm.residual) v += nn_load(op->u.norm.residual, dt, base + c);
      sum += v;
    }
    double mean = sum / (double)cols;
    for (size_t c = 0; c < cols; c++) {
      float v = nn_load(op->u.norm.x, dt, base + c);
      if (op->u.norm.residual) v += nn_load(op->u.norm.residual, dt, base + c);
      sq += (v - mean) * (v - mean);
    }
    float inv = (float)(1.0 / sqrt(sq / (double)cols + (double)op->u.norm.eps));
    /* Each element is read (again) before it is written: y may be x. */
    for (size_t c = 0; c < cols; c++) {
      float v = nn_load(op->u.norm.x, dt, base + c);
      if (op->u.norm.residual) v += nn_load(op->u.norm.residual, dt, base + c);
      float g = nn_load(op->u.norm.gamma, dt, c), b = nn_load(op->u.norm.beta, dt, c);
      nn_store(op->u.norm.y, dt, base + c, (float)(v - mean) * inv * g + b);
    }
  }
}

static void nn_embed(const sp__nn *op) {
  sp_dtype dt = op->dtype;
  size_t hidden = op->u.embed.hidden;
  for (size_t b = 0; b < op->u.embed.batch; b++)
    for (size_t t = 0; t < op->u.embed.seq; t++) {
      size_t row = b * op->u.embed.seq + t;
      size_t id = (size_t)op->u.embed.ids[row];
      size_t ty = op->u.embed.type_ids ? (size_t)op->u.embed.type_ids[row] : 0;
      for (size_t c = 0; c < hidden; c++) {
        float v = nn_load(op->u.embed.word, dt, id * hidden + c) +
                  nn_load(op->u.embed.pos, dt, t * hidden + c) +
                  nn_load(op->u.embed.type, dt, ty * hidden + c);
        nn_store(op->u.embed.y, dt, row * hidden + c, v);
      }
    }
}

static sp_status nn_attention(sp__bstream *s, const sp__nn *op, char *msg, size_t msg_size) {
  sp_dtype dt = op->dtype;
  size_t seq = op->u.attention.seq, heads = op->u.attention.heads, hd = op->u.attention.head_dim;
  size_t hidden = heads * hd, stride = 3 * hidden;
  if (!sp__host_scratch_reserve(s, seq + hd)) {
    snprintf(msg, msg_size, "attention: cannot allocate %zu bytes of scratch (output not written)",
             (seq + hd) * sizeof(float));
    return SP_ERR_HOST_MEMORY;
  }
  float *score = s->scratch, *acc = s->scratch + seq;
  for (size_t b = 0; b < op->u.attention.batch; b++) {
    int32_t len = op->u.attention.lengths[b];
    size_t keys = len < 1 ? 1 : ((size_t)len > seq ? seq : (size_t)len);
    const unsigned char *q0 = op->u.attention.qkv;
    for (size_t h = 0; h < heads; h++)
      for (size_t t = 0; t < seq; t++) {
        size_t qrow = (b * seq + t) * stride + h * hd;
        float max = -INFINITY;
        for (size_t j = 0; j < keys; j++) {
          size_t krow = (b * seq + j) * stride + hidden + h * hd;
          float dot = 0.0f;
          for (size_t d = 0; d < hd; d++)
            dot += nn_load(q0, dt, qrow + d) * nn_load(q0, dt, krow + d);
          score[j] = dot * op->u.attention.scale;
          if (score[j] > max) max = score[j];
        }
        double denom = 0.0;
        for (size_t j = 0; j < keys; j++) {
          score[j] = expf(score[j] - max);
          denom += score[j];
        }
        memset(acc, 0, hd * sizeof(*acc));
        for (size_t j = 0; j < keys; j++) {
          size_t vrow = (b * seq + j) * stride + 2 * hidden + h * hd;
          float p = (float)(score[j] / denom);
          for (size_t d = 0; d < hd; d++) acc[d] += p * nn_load(q0, dt, vrow + d);
        }
        for (size_t d = 0; d < hd; d++)
          nn_store(op->u.attention.y, dt, (b * seq + t) * hidden + h * hd + d, acc[d]);
      }
  }
  return SP_OK;
}

static void nn_pool(const sp__nn *op) {
  sp_dtype dt = op->dtype;
  size_t seq = op->u.pool.seq, hidden = op->u.pool.hidden;
  for (size_t b = 0; b < op->u.pool.batch; b++) {
    int32_t len = op->u.pool.lengths[b];
    size_t n = op->u.pool.cls ? 1 : (len < 1 ? 1 : ((size_t)len > seq ? seq : (size_t)len));
    float *y = op->u.pool.y + b * hidden;
    double norm = 0.0;
    for (size_t c = 0; c < hidden; c++) {
      double sum = 0.0;
      for (size_t t = 0; t < n; t++) sum += nn_load(op->u.pool.x, dt, (b * seq + t) * hidden + c);
      y[c] = (float)(sum / (double)n);
      norm += (double)y[c] * y[c];
    }
    if (op->u.pool.normalize) {
      double d = sqrt(norm);
      float inv = (float)(1.0 / (d > 1e-12 ? d : 1e-12));
      for (size_t c = 0; c < hidden; c++) y[c] *= inv;
    }
  }
}

sp_status sp__host_nn_run(sp__bstream *s, const sp__nn *op, char *msg, size_t msg_size) {
  switch (op->kind) {
  case SP__NN_LAYERNORM: nn_layernorm(op); return SP_OK;
  case SP__NN_EMBED: nn_embed(op); return SP_OK;
  case SP__NN_ATTENTION: return nn_attention(s, op, msg, msg_size);
  case SP__NN_POOL: nn_pool(op); return SP_OK;
  case SP__NN_KIND_COUNT: break;
  }
  snprintf(msg, msg_size, "unknown nn op kind %d", (int)op->kind);
  return SP_ERR_BACKEND;
}
