/* Host encoder ops (sp__nn): LayerNorm, embedding gather, masked multi-head attention, pooling.
 *
 * Owns: the arithmetic the worker runs for SP__HOST_CMD_NN, in plain C. Every element is read as
 * f32 (bf16 widened), the math is f32 with double accumulators where a sum runs over a row (mean,
 * variance, norms, softmax denominators), and each result is rounded once to the op's dtype.
 * Attention keeps one row of scores in the stream's scratch (seq floats); nothing else allocates.
 * Plain loops are enough here: an encoder's time on the host is in its Linears (OpenBLAS).
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
