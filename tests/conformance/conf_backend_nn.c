/* The encoder-layer contract (backend.h's sp__nn and sp__act), on every compiled backend table.
 *
 * Goal: LayerNorm (with and without a residual, in place), the embedding gather, masked multi-head
 * attention and pooling (mean, CLS, normalized or not) give what backend.h says, in f32, bf16 and
 * f16, on the encoder's shapes and on random small ones, against a double-precision reference; the
 * padding of a sequence never reaches a real token's result (padded rows are filled with huge
 * values); an op with a bad argument is refused at submission. Backends without the nn_async slot
 * print "not run" for these cases. The shapes reach every path of the CUDA kernels too: LayerNorm
 * rows of a warp's width and beyond it (block per row), attention with one and many key tiles,
 * head_dim up to 128 and small and large grids (batch 256 x seq 32, BERT-base's seq 512 of
 * head_dim 64), pooling over hidden sizes above a block's width. Attention with head_dim 136 must
 * either be right or be refused with SP_ERR_UNSUPPORTED (a backend's kernel limit: CUDA's is
 * 128).
 * Method: the table is driven directly (as conf_backend.c); inputs are uploaded as f32 and
 * converted on the device for bf16 and f16, and the reference sees exactly the rounded values.
 * Tolerances: f32 1e-5 of the row's scale (plus 1e-6), bf16 1e-2 of it, f16 2e-3 (one rounding
 * of the output, plus f32 arithmetic), where the scale is the largest magnitude the reference
 * meets.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/dtype.h"
#include "testutil.h"
#include "tu_backend.h"

static const sp__backend *B; /* the table the current case runs on */

typedef struct nn_ctx {
  sp__bdevice *d;
  sp__bstream *s;
  void *bufs[32]; /* device buffers of the current op, freed by nn_free_all */
  unsigned n;
  tu_rng r;
} nn_ctx;

static int nn_skip(const char *what) {
  if (B->nn_async && B->convert_async) return 0;
  printf("[conf_backend_nn] %s: %s: not run: the backend has no nn/convert slot\n", B->name, what);
  return 1;
}

static void nn_open(nn_ctx *c) {
  c->d = tu_be_device(B, 0);
  c->s = tu_be_stream(B, c->d, 1);
  c->n = 0;
  c->r = (tu_rng){tu_seed()};
}

static void nn_close(nn_ctx *c) {
  B->stream_destroy(c->s);
  B->device_close(c->d);
}

static void *nn_alloc(nn_ctx *c, size_t bytes) {
  void *p = NULL;
  SP_CHECK_OK(B->mem_alloc(c->d, bytes ? bytes : 1, &p));
  assert_true(c->n < sizeof(c->bufs) / sizeof(c->bufs[0]));
  c->bufs[c->n++] = p;
  return p;
}

static void nn_free_all(nn_ctx *c) {
  SP_CHECK_OK(B->stream_sync(c->s));
  for (unsigned i = 0; i < c->n; i++) SP_CHECK_OK(B->mem_free(c->d, c->bufs[i]));
  c->n = 0;
}

static float nn_rand(nn_ctx *c, float span) {
  return span * (float)((double)tu_rng_below(&c->r, 2000001) / 1e6 - 1.0);
}

/* n random values in [-span, span], rounded to dt's precision in place (the reference's view). */
static float *nn_host(nn_ctx *c, sp_dtype dt, size_t n, float span) {
  float *h = malloc(n * sizeof(*h));
  assert_non_null(h);
  for (size_t i = 0; i < n; i++) {
    h[i] = nn_rand(c, span);
    h[i] = sp__elem_round(dt, h[i]); /* the value dt stores */
  }
  return h;
}

/* A device tensor of dt holding host[0, n). */
static void *nn_upload(nn_ctx *c, sp_dtype dt, const float *host, size_t n) {
  void *f = nn_alloc(c, n * 4);
  SP_CHECK_OK(B->memcpy_async(c->s, f, host, n * 4));
  if (dt == SP_F32) return f;
  void *h = nn_alloc(c, n * 2);
  SP_CHECK_OK(B->convert_async(c->s, h, dt, f, SP_F32, n));
  return h;
}

static void *nn_upload_i32(nn_ctx *c, const int32_t *host, size_t n) {
  void *p = nn_alloc(c, n * 4);
  SP_CHECK_OK(B->memcpy_async(c->s, p, host, n * 4));
  return p;
}

/* Reads n elements of dt at dev into host f32 and waits. */
static void nn_download(nn_ctx *c, sp_dtype dt, const void *dev, size_t n, float *host) {
  const void *src = dev;
  if (dt != SP_F32) {
    void *f = nn_alloc(c, n * 4);
    SP_CHECK_OK(B->convert_async(c->s, f, SP_F32, dev, dt, n));
    src = f;
  }
  SP_CHECK_OK(B->memcpy_async(c->s, host, src, n * 4));
  SP_CHECK_OK(B->stream_sync(c->s));
}

static void nn_expect(const char *what, sp_dtype dt, size_t i, double want, double got,
                      double scale) {
  double tol = (dt == SP_F32 ? 1e-5 : dt == SP_BF16 ? 1e-2 : 2e-3) * scale + 1e-6;
  if (!(fabs(got - want) <= tol))
    fail_msg("%s %s %s [%zu]: expected %.9g, got %.9g (tol %.3g)", B->name, sp__dtype_name(dt),
             what, i, want, got, tol);
}

/* ---- LayerNorm ------------------------------------------------------------------------------ */

static void layernorm_case(nn_ctx *c, sp_dtype dt, unsigned rows, unsigned cols, int residual,
                           int in_place) {
  size_t n = (size_t)rows * cols;
  float *x = nn_host(c, dt, n, 4.0f), *res = nn_host(c, dt, n, 2.0f);
  float *g = nn_host(c, dt, cols, 1.5f), *b = nn_host(c, dt, cols, 0.5f), *y = malloc(n * 4);
  for (size_t i = 0; i < n; i += 7) x[i] += dt == SP_F32 ? 3.0f : 4.0f; /* a non-zero mean */
  void *dx = nn_upload(c, dt, x, n), *dres = residual ? nn_upload(c, dt, res, n) : NULL;
  void *dy = in_place ? dx : nn_alloc(c, n * (dt == SP_F32 ? 4 : 2));
  sp__nn op = {.kind = SP__NN_LAYERNORM, .dtype = dt};
  op.u.norm.rows = rows;
  op.u.norm.cols = cols;
  op.u.norm.x = dx;
  op.u.norm.residual = dres;
  op.u.norm.gamma = nn_upload(c, dt, g, cols);
  op.u.norm.beta = nn_upload(c, dt, b, cols);
  op.u.norm.eps = 1e-12f;
  op.u.norm.y = dy;
  SP_CHECK_OK(B->nn_async(c->s, &op));
  nn_download(c, dt, dy, n, y);
  for (unsigned r = 0; r < rows; r++) {
    double mean = 0, var = 0;
    for (unsigned k = 0; k < cols; k++)
      mean += x[(size_t)r * cols + k] + (residual ? res[(size_t)r * cols + k] : 0.0);
    mean /= cols;
    for (unsigned k = 0; k < cols; k++) {
      double v = x[(size_t)r * cols + k] + (residual ? res[(size_t)r * cols + k] : 0.0) - mean;
      var += v * v;
    }
    var /= cols;
    for (unsigned k = 0; k < cols; k++) {
      size_t i = (size_t)r * cols + k;
      double v = x[i] + (residual ? res[i] : 0.0);
      double want = (v - mean) / sqrt(var + 1e-12) * g[k] + b[k];
      /* scale: a normalized value is O(1) per unit of gamma (cols <= 2 can be exact 0 +- 1) */
      nn_expect("layernorm", dt, i, want, y[i], 4.0 * (fabs(g[k]) + fabs(b[k])) + 1.0);
    }
  }
  nn_free_all(c);
  free(x), free(res), free(g), free(b), free(y);
}

static void test_layernorm(void **state) {
  (void)state;
  if (nn_skip("layernorm")) return;
  nn_ctx c;
  nn_open(&c);
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++) {
    layernorm_case(&c, (sp_dtype)dt, 64, 384, 1, 0); /* MiniLM's hidden size */
    layernorm_case(&c, (sp_dtype)dt, 3, 1024, 0, 1);
    layernorm_case(&c, (sp_dtype)dt, 5, 768, 1, 1);
    layernorm_case(&c, (sp_dtype)dt, 300, 384, 1, 1); /* many rows: MiniLM's batch x seq */
    layernorm_case(&c, (sp_dtype)dt, 3, 3001, 1, 1);  /* longer than a warp holds       */
    layernorm_case(&c, (sp_dtype)dt, 2, 1025, 0, 0);
    layernorm_case(&c, (sp_dtype)dt, 4, 383, 1, 1); /* odd: CUDA reads single columns    */
    layernorm_case(&c, (sp_dtype)dt, 4, 130, 1, 0); /* even: pairs, the last group partial */
    for (unsigned i = 0; i < tu_scale(12); i++)
      layernorm_case(&c, (sp_dtype)dt, 1 + (unsigned)tu_rng_below(&c.r, 9),
                     2 + (unsigned)tu_rng_below(&c.r, 300), (int)tu_rng_below(&c.r, 2),
                     (int)tu_rng_below(&c.r, 2));
  }
  nn_close(&c);
}

/* ---- embedding gather ----------------------------------------------------------------------- */

static void embed_case(nn_ctx *c, sp_dtype dt, unsigned batch, unsigned seq, unsigned hidden,
                       int with_types) {
  enum { VOCAB = 97, TYPES = 2 };
  size_t rows = (size_t)batch * seq, n = rows * hidden;
  float *word = nn_host(c, dt, (size_t)VOCAB * hidden, 1.0f);
  float *pos = nn_host(c, dt, (size_t)seq * hidden, 0.5f);
  float *type = nn_host(c, dt, (size_t)TYPES * hidden, 0.25f), *y = malloc(n * 4);
  int32_t *ids = malloc(rows * 4), *types = malloc(rows * 4);
  for (size_t i = 0; i < rows; i++) {
    ids[i] = (int32_t)tu_rng_below(&c->r, VOCAB);
    types[i] = (int32_t)tu_rng_below(&c->r, TYPES);
  }
  sp__nn op = {.kind = SP__NN_EMBED, .dtype = dt};
  op.u.embed.batch = batch;
  op.u.embed.seq = seq;
  op.u.embed.hidden = hidden;
  op.u.embed.ids = nn_upload_i32(c, ids, rows);
  op.u.embed.type_ids = with_types ? nn_upload_i32(c, types, rows) : NULL;
  op.u.embed.word = nn_upload(c, dt, word, (size_t)VOCAB * hidden);
  op.u.embed.pos = nn_upload(c, dt, pos, (size_t)seq * hidden);
  op.u.embed.type = nn_upload(c, dt, type, (size_t)TYPES * hidden);
  op.u.embed.y = nn_alloc(c, n * (dt == SP_F32 ? 4 : 2));
  SP_CHECK_OK(B->nn_async(c->s, &op));
  nn_download(c, dt, op.u.embed.y, n, y);
  for (size_t row = 0; row < rows; row++)
    for (unsigned k = 0; k < hidden; k++) {
      size_t t = row % seq, ty = with_types ? (size_t)types[row] : 0;
      double want =
          (double)word[(size_t)ids[row] * hidden + k] + pos[t * hidden + k] + type[ty * hidden + k];
      nn_expect("embed", dt, row * hidden + k, want, y[row * hidden + k], 2.0);
    }
  nn_free_all(c);
  free(word), free(pos), free(type), free(y), free(ids), free(types);
}

static void test_embed(void **state) {
  (void)state;
  if (nn_skip("embed")) return;
  nn_ctx c;
  nn_open(&c);
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++) {
    embed_case(&c, (sp_dtype)dt, 4, 32, 384, 0);
    embed_case(&c, (sp_dtype)dt, 2, 7, 64, 1);
    embed_case(&c, (sp_dtype)dt, 256, 32, 384, 1); /* the batcher's largest MiniLM pass */
    for (unsigned i = 0; i < tu_scale(8); i++)
      embed_case(&c, (sp_dtype)dt, 1 + (unsigned)tu_rng_below(&c.r, 5),
                 1 + (unsigned)tu_rng_below(&c.r, 40), 1 + (unsigned)tu_rng_below(&c.r, 200),
                 (int)tu_rng_below(&c.r, 2));
  }
  nn_close(&c);
}

/* ---- attention ------------------------------------------------------------------------------ */

/* may_refuse: SP_ERR_UNSUPPORTED (a backend's kernel limit) is an answer too; nothing is checked.
 */
static void attention_case_or_refusal(nn_ctx *c, sp_dtype dt, unsigned batch, unsigned seq,
                                      unsigned heads, unsigned hd, int may_refuse) {
  size_t hidden = (size_t)heads * hd, rows = (size_t)batch * seq;
  float *qkv = nn_host(c, dt, rows * 3 * hidden, 1.0f), *y = malloc(rows * hidden * 4);
  int32_t *len = malloc(batch * 4);
  for (unsigned b = 0; b < batch; b++) {
    len[b] = b == 0 ? (int32_t)seq : 1 + (int32_t)tu_rng_below(&c->r, seq);
    /* padded keys and values are huge: any leak past the mask shows */
    for (size_t t = (size_t)len[b]; t < seq; t++)
      for (size_t k = hidden; k < 3 * hidden; k++)
        qkv[((size_t)b * seq + t) * 3 * hidden + k] = 1e4f;
  }
  float scale = 1.0f / sqrtf((float)hd);
  sp__nn op = {.kind = SP__NN_ATTENTION, .dtype = dt};
  op.u.attention.batch = batch;
  op.u.attention.seq = seq;
  op.u.attention.heads = heads;
  op.u.attention.head_dim = hd;
  op.u.attention.scale = scale;
  op.u.attention.lengths = nn_upload_i32(c, len, batch);
  op.u.attention.qkv = nn_upload(c, dt, qkv, rows * 3 * hidden);
  op.u.attention.y = nn_alloc(c, rows * hidden * (dt == SP_F32 ? 4 : 2));
  sp_status st = B->nn_async(c->s, &op);
  if (may_refuse && st == SP_ERR_UNSUPPORTED) {
    printf("[conf_backend_nn] %s: attention head_dim %u: refused (%s)\n", B->name, hd,
           sp_last_error());
    nn_free_all(c);
    free(qkv), free(y), free(len);
    return;
  }
  SP_CHECK_OK(st);
  nn_download(c, dt, op.u.attention.y, rows * hidden, y);
  double *p = malloc(seq * sizeof(*p));
  for (unsigned b = 0; b < batch; b++)
    for (unsigned h = 0; h < heads; h++)
      for (unsigned t = 0; t < (unsigned)len[b]; t++) { /* real queries only */
        const float *q = qkv + ((size_t)b * seq + t) * 3 * hidden + (size_t)h * hd;
        double max = -INFINITY, den = 0;
        for (unsigned j = 0; j < (unsigned)len[b]; j++) {
          const float *k = qkv + ((size_t)b * seq + j) * 3 * hidden + hidden + (size_t)h * hd;
          double dot = 0;
          for (unsigned e = 0; e < hd; e++) dot += (double)q[e] * k[e];
          p[j] = dot * scale;
          if (p[j] > max) max = p[j];
        }
        for (unsigned j = 0; j < (unsigned)len[b]; j++) den += (p[j] = exp(p[j] - max));
        for (unsigned e = 0; e < hd; e++) {
          double want = 0;
          for (unsigned j = 0; j < (unsigned)len[b]; j++)
            want += p[j] / den *
                    qkv[((size_t)b * seq + j) * 3 * hidden + 2 * hidden + (size_t)h * hd + e];
          size_t i = ((size_t)b * seq + t) * hidden + (size_t)h * hd + e;
          nn_expect("attention", dt, i, want, y[i], 1.0);
        }
      }
  free(p);
  nn_free_all(c);
  free(qkv), free(y), free(len);
}

static void attention_case(nn_ctx *c, sp_dtype dt, unsigned batch, unsigned seq, unsigned heads,
                           unsigned hd) {
  attention_case_or_refusal(c, dt, batch, seq, heads, hd, 0);
}

static void test_attention(void **state) {
  (void)state;
  if (nn_skip("attention")) return;
  nn_ctx c;
  nn_open(&c);
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++) {
    attention_case(&c, (sp_dtype)dt, 3, 32, 12, 32); /* MiniLM: 12 heads of 32 */
    attention_case(&c, (sp_dtype)dt, 2, 128, 12, 32);
    attention_case(&c, (sp_dtype)dt, 1, 256, 2, 64);
    attention_case(&c, (sp_dtype)dt, 2, 1, 1, 8);
    attention_case(&c, (sp_dtype)dt, 256, 32, 2, 32); /* the batcher's pass: a large grid      */
    attention_case(&c, (sp_dtype)dt, 64, 40, 2, 40);  /* large grid, two key tiles of 32       */
    attention_case(&c, (sp_dtype)dt, 1, 512, 1, 64);  /* BERT-base: seq 512, head_dim 64       */
    attention_case(&c, (sp_dtype)dt, 2, 70, 3, 96);
    attention_case(&c, (sp_dtype)dt, 2, 100, 2, 128); /* the largest head CUDA's kernel takes */
    /* CUDA's queries-per-warp choices at larger grids (the most of 8, 4, 2 giving 256 blocks) */
    attention_case(&c, (sp_dtype)dt, 16, 32, 12, 32); /* 4 a warp: the batcher's MiniLM pass   */
    attention_case(&c, (sp_dtype)dt, 24, 48, 4, 64);  /* 4 a warp, a partial second key tile   */
    attention_case(&c, (sp_dtype)dt, 64, 32, 4, 96);  /* 8 a warp at head_dim 96               */
    attention_case(&c, (sp_dtype)dt, 32, 64, 4, 128); /* 4 a warp at head_dim 128              */
    attention_case_or_refusal(&c, (sp_dtype)dt, 2, 9, 1, 136, 1);
    for (unsigned i = 0; i < tu_scale(8); i++)
      attention_case(&c, (sp_dtype)dt, 1 + (unsigned)tu_rng_below(&c.r, 4),
                     1 + (unsigned)tu_rng_below(&c.r, 70), 1 + (unsigned)tu_rng_below(&c.r, 4),
                     1 + (unsigned)tu_rng_below(&c.r, 80));
  }
  nn_close(&c);
}

/* ---- pooling -------------------------------------------------------------------------------- */

static void pool_case(nn_ctx *c, sp_dtype dt, unsigned batch, unsigned seq, unsigned hidden,
                      int cls, int normalize) {
  size_t rows = (size_t)batch * seq;
  float *x = nn_host(c, dt, rows * hidden, 2.0f), *y = malloc((size_t)batch * hidden * 4);
  int32_t *len = malloc(batch * 4);
  for (unsigned b = 0; b < batch; b++) {
    len[b] = 1 + (int32_t)tu_rng_below(&c->r, seq);
    for (size_t t = (size_t)len[b]; t < seq; t++)
      for (size_t k = 0; k < hidden; k++) x[((size_t)b * seq + t) * hidden + k] = 1e4f;
  }
  sp__nn op = {.kind = SP__NN_POOL, .dtype = dt};
  op.u.pool.batch = batch;
  op.u.pool.seq = seq;
  op.u.pool.hidden = hidden;
  op.u.pool.lengths = nn_upload_i32(c, len, batch);
  op.u.pool.cls = cls;
  op.u.pool.normalize = normalize;
  op.u.pool.x = nn_upload(c, dt, x, rows * hidden);
  op.u.pool.y = nn_alloc(c, (size_t)batch * hidden * 4);
  SP_CHECK_OK(B->nn_async(c->s, &op));
  SP_CHECK_OK(B->memcpy_async(c->s, y, op.u.pool.y, (size_t)batch * hidden * 4));
  SP_CHECK_OK(B->stream_sync(c->s));
  double *want = malloc(hidden * sizeof(*want));
  for (unsigned b = 0; b < batch; b++) {
    unsigned n = cls ? 1 : (unsigned)len[b];
    double norm = 0;
    for (unsigned k = 0; k < hidden; k++) {
      want[k] = 0;
      for (unsigned t = 0; t < n; t++) want[k] += x[((size_t)b * seq + t) * hidden + k];
      want[k] /= n;
      norm += want[k] * want[k];
    }
    norm = sqrt(norm);
    for (unsigned k = 0; k < hidden; k++) {
      double w = normalize ? want[k] / (norm > 1e-12 ? norm : 1e-12) : want[k];
      /* the output is f32 in both dtypes: only the reduction's rounding differs */
      nn_expect(cls ? "pool cls" : "pool mean", SP_F32, (size_t)b * hidden + k, w,
                y[(size_t)b * hidden + k], normalize ? 1.0 : 2.0);
    }
  }
  free(want);
  nn_free_all(c);
  free(x), free(y), free(len);
}

static void test_pool(void **state) {
  (void)state;
  if (nn_skip("pool")) return;
  nn_ctx c;
  nn_open(&c);
  for (unsigned dt = SP_F32; dt <= SP_F16; dt++)
    for (int cls = 0; cls < 2; cls++)
      for (int norm = 0; norm < 2; norm++) {
        pool_case(&c, (sp_dtype)dt, 5, 32, 384, cls, norm);
        pool_case(&c, (sp_dtype)dt, 3, 7, 1000, cls, norm); /* wider than a block */
        if (cls == norm) pool_case(&c, (sp_dtype)dt, 256, 32, 384, cls, norm); /* a full pass */
        pool_case(&c, (sp_dtype)dt, 1 + (unsigned)tu_rng_below(&c.r, 6),
                  1 + (unsigned)tu_rng_below(&c.r, 60), 1 + (unsigned)tu_rng_below(&c.r, 500), cls,
                  norm);
      }
  nn_close(&c);
}

/* ---- refusals -------------------------------------------------------------------------------- */

static void test_refusals(void **state) {
  (void)state;
  if (nn_skip("refusals")) return;
  nn_ctx c;
  nn_open(&c);
  void *buf = nn_alloc(&c, 4096);
  sp__nn op = {.kind = SP__NN_LAYERNORM, .dtype = SP_F32};
  op.u.norm.rows = 1;
  op.u.norm.cols = 0; /* empty */
  op.u.norm.x = op.u.norm.gamma = op.u.norm.beta = op.u.norm.y = buf;
  assert_int_equal(B->nn_async(c.s, &op), SP_ERR_INVALID_ARGUMENT);
  op.u.norm.cols = 4;
  op.u.norm.gamma = NULL;
  assert_int_equal(B->nn_async(c.s, &op), SP_ERR_INVALID_ARGUMENT);
  op.kind = SP__NN_KIND_COUNT;
  assert_int_equal(B->nn_async(c.s, &op), SP_ERR_INVALID_ARGUMENT);
  op = (sp__nn){.kind = SP__NN_ATTENTION, .dtype = (sp_dtype)7};
  assert_int_equal(B->nn_async(c.s, &op), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(B->nn_async(c.s, NULL), SP_ERR_INVALID_ARGUMENT);
  nn_free_all(&c);
  nn_close(&c);
}

int main(void) {
  static const tu_be_case cases[] = {
      {"layernorm", test_layernorm}, {"embed", test_embed},       {"attention", test_attention},
      {"pool", test_pool},           {"refusals", test_refusals},
  };
  return tu_be_run_cases("conf_backend_nn", cases, sizeof(cases) / sizeof(cases[0]), &B);
}
