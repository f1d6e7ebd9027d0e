/* Host encoder ops (sp__nn): LayerNorm, embedding gather, masked multi-head attention, pooling.
 *
 * Owns: the arithmetic the worker runs for SP__HOST_CMD_NN, in plain C. Every element is read as
 * f32 (bf16 and f16 widened), the math is f32 with double accumulators where a sum runs over a row
 * (mean, variance, norms, softmax denominators), and each result is rounded once to the op's dtype.
 * Attention widens one head's Q, K and V into the stream's scratch (3 seq x head_dim floats, plus a
 * row of scores); nothing else allocates. Plain loops over contiguous f32 (the dot in eight
 * running sums) keep attention below the Linears (OpenBLAS) for BERT-sized heads.
 *
 * Invariants: ops were validated at submission (sp__nn_op_check, src/backend/nn_check.c), so the
 * worker trusts shapes and pointers; token ids are the caller's to bound (backend.h).
 * Locking: none; the scratch belongs to the stream's worker.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend/host/host_impl.h"
#include "core/dtype.h"

/* ---- the ops -------------------------------------------------------------------------------- */

static void nn_layernorm(const sp__nn *op) {
  sp_dtype dt = op->dtype;
  size_t cols = op->u.norm.cols;
  for (size_t r = 0; r < op->u.norm.rows; r++) {
    size_t base = r * cols;
    double sum = 0.0, sq = 0.0;
    for (size_t c = 0; c < cols; c++) {
      float v = sp__elem_load(op->u.norm.x, dt, base + c);
      if (op->u.norm.residual) v += sp__elem_load(op->u.norm.residual, dt, base + c);
      sum += v;
    }
    double mean = sum / (double)cols;
    for (size_t c = 0; c < cols; c++) {
      float v = sp__elem_load(op->u.norm.x, dt, base + c);
      if (op->u.norm.residual) v += sp__elem_load(op->u.norm.residual, dt, base + c);
      sq += (v - mean) * (v - mean);
    }
    float inv = (float)(1.0 / sqrt(sq / (double)cols + (double)op->u.norm.eps));
    /* Each element is read (again) before it is written: y may be x. */
    for (size_t c = 0; c < cols; c++) {
      float v = sp__elem_load(op->u.norm.x, dt, base + c);
      if (op->u.norm.residual) v += sp__elem_load(op->u.norm.residual, dt, base + c);
      float g = sp__elem_load(op->u.norm.gamma, dt, c), b = sp__elem_load(op->u.norm.beta, dt, c);
      sp__elem_store(op->u.norm.y, dt, base + c, (float)(v - mean) * inv * g + b);
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
        float v = sp__elem_load(op->u.embed.word, dt, id * hidden + c) +
                  sp__elem_load(op->u.embed.pos, dt, t * hidden + c) +
                  sp__elem_load(op->u.embed.type, dt, ty * hidden + c);
        sp__elem_store(op->u.embed.y, dt, row * hidden + c, v);
      }
    }
}

/* The rows [0, n) of one head's slice (part 0: Q, 1: K, 2: V) of sequence b, widened into dst
 * ([n, hd], contiguous). */
static void nn_head_rows(const sp__nn *op, size_t b, size_t h, unsigned part, size_t n,
                         float *dst) {
  size_t seq = op->u.attention.seq, hd = op->u.attention.head_dim;
  size_t hidden = op->u.attention.heads * hd, stride = 3 * hidden;
  for (size_t t = 0; t < n; t++) {
    size_t at = (b * seq + t) * stride + part * hidden + h * hd;
    for (size_t d = 0; d < hd; d++)
      dst[t * hd + d] = sp__elem_load(op->u.attention.qkv, op->dtype, at + d);
  }
}

/* a . b over n floats in eight running sums (so the compiler can keep them in one vector). */
static inline float nn_dot(const float *a, const float *b, size_t n) {
  float part[8] = {0};
  size_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (unsigned i = 0; i < 8; i++) part[i] += a[d + i] * b[d + i];
  for (; d < n; d++) part[0] += a[d] * b[d];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

/* acc += p * v over n floats, in blocks of eight (vectorized at -O2 as nn_dot is). */
static inline void nn_axpy(float *restrict acc, const float *restrict v, float p, size_t n) {
  size_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (unsigned i = 0; i < 8; i++) acc[d + i] += p * v[d + i];
  for (; d < n; d++) acc[d] += p * v[d];
}

/* Per (sequence, head): Q, K and V widened into the stream's scratch once, then for each query
 * row the scaled scores over the first `lengths[b]` keys, their softmax (max subtracted, double
 * denominator) and the weighted sum of V. Every query row is computed, padding rows included. */
static sp_status nn_attention(sp__bstream *s, const sp__nn *op, char *msg, size_t msg_size) {
  size_t seq = op->u.attention.seq, heads = op->u.attention.heads, hd = op->u.attention.head_dim;
  size_t hidden = heads * hd, floats = 3 * seq * hd + seq + hd;
  if (!sp__host_scratch_reserve(s, floats)) {
    snprintf(msg, msg_size, "attention: cannot allocate %zu bytes of scratch (output not written)",
             floats * sizeof(float));
    return SP_ERR_HOST_MEMORY;
  }
  float *q = s->scratch, *k = q + seq * hd, *v = k + seq * hd, *score = v + seq * hd,
        *acc = score + seq;
  for (size_t b = 0; b < op->u.attention.batch; b++) {
    int32_t len = op->u.attention.lengths[b];
    size_t keys = len < 1 ? 1 : ((size_t)len > seq ? seq : (size_t)len);
    for (size_t h = 0; h < heads; h++) {
      nn_head_rows(op, b, h, 0, seq, q);
      nn_head_rows(op, b, h, 1, keys, k);
      nn_head_rows(op, b, h, 2, keys, v);
      for (size_t t = 0; t < seq; t++) {
        float max = -INFINITY;
        for (size_t j = 0; j < keys; j++) {
          score[j] = nn_dot(q + t * hd, k + j * hd, hd) * op->u.attention.scale;
          if (score[j] > max) max = score[j];
        }
        double denom = 0.0;
        for (size_t j = 0; j < keys; j++) {
          score[j] = expf(score[j] - max);
          denom += score[j];
        }
        memset(acc, 0, hd * sizeof(*acc));
        for (size_t j = 0; j < keys; j++) {
          nn_axpy(acc, v + j * hd, (float)(score[j] / denom), hd);
        }
        for (size_t d = 0; d < hd; d++)
          sp__elem_store(op->u.attention.y, op->dtype, (b * seq + t) * hidden + h * hd + d, acc[d]);
      }
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
      for (size_t t = 0; t < n; t++)
        sum += sp__elem_load(op->u.pool.x, dt, (b * seq + t) * hidden + c);
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
