/* The MLP: building (seeded or from a filler), weight upload, stream-ordered forward, host infer.
 *
 * Owns: sp_model objects and their weight blocks (allocated on the device's default stream, one
 * block per tensor, freed in sp_model_free). A model is immutable once built, so forward and
 * infer take no lock. A forward takes one workspace block from the allocator on its stream (two
 * ping-pong activation buffers of batch x max_dim elements), enqueues per layer one linear (its
 * activation fused) and, where the layer has one, a LayerNorm in place on its output (plus,
 * for bf16 and f16 models, the input's and output's conversions, or none where the backend's
 * linears read and write f32 rows at that batch: sp__model_enqueue), and frees the workspace in
 * stream order at once.
 * Where graphs are on (m->graphs), sp_model_forward replays a graph captured per (stream, batch,
 * in, out) (plan.c; its workspace block stays with the plan) and enqueues op by op otherwise.
 * sp_model_infer runs through a plan cached per (stream, batch) (plan.c: buffers kept, the pass
 * replayed as one graph where the backend can); when no plan serves the call io_plan.c runs it
 * in one block for input, output and workspace: one allocator round trip, 2 copies, the kernels,
 * one sync.
 * Every device operation goes through src/core/ops.h (the backend table is the core's).
 * Locking: none of its own; the allocator and the backend serialize what they share.
 */
#include "infer/model.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc/alloc.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "infer/plan.h"
#include "infer/safetensors.h"

/* ---- building ---------------------------------------------------------------------------- */

/* Elements of one layer's parameters: weight, then bias, LayerNorm weight and bias if present. */
static size_t model_layer_elems(const sp__model_layer *l) {
  return (size_t)l->out * l->in + (size_t)l->out * ((l->bias ? 1u : 0u) + (l->norm ? 2u : 0u));
}

static size_t model_layer_bytes(const sp__model_layer *l, sp_dtype dt) {
  return model_layer_elems(l) * sp__dtype_size(dt);
}

static void model_free_weights(sp_model *m) {
  for (unsigned i = 0; i < m->n_layers; i++) {
    sp_free(m->dev, m->layers[i].w);
    sp_free(m->dev, m->layers[i].b);
    sp_free(m->dev, m->layers[i].g);
    sp_free(m->dev, m->layers[i].beta);
  }
}

/* One vector of out elements: allocated and copied from *staging (advanced) when present. */
static sp_status model_upload_vec(sp_model *m, bool present, size_t bytes,
                                  const unsigned char **staging, void **dst) {
  if (!present) return SP_OK;
  sp_stream *s0 = sp_stream_default(m->dev);
  sp_status st = sp_alloc(m->dev, bytes, s0, dst);
  if (st == SP_OK) st = sp_memcpy_async(s0, *dst, *staging, bytes);
  *staging += bytes;
  return st;
}

/* Allocates device blocks and enqueues the copies from staging on the default stream. */
static sp_status model_upload(sp_model *m, const unsigned char *staging) {
  sp_stream *s0 = sp_stream_default(m->dev);
  size_t elt = sp__dtype_size(m->dtype);
  sp_status st = SP_OK;
  for (unsigned i = 0; i < m->n_layers && st == SP_OK; i++) {
    sp__model_layer *l = &m->layers[i];
    size_t wb = (size_t)l->out * l->in * elt, vb = (size_t)l->out * elt;
    st = model_upload_vec(m, true, wb, &staging, &l->w);
    if (st == SP_OK) st = model_upload_vec(m, l->bias, vb, &staging, &l->b);
    if (st == SP_OK) st = model_upload_vec(m, l->norm, vb, &staging, &l->g);
    if (st == SP_OK) st = model_upload_vec(m, l->norm, vb, &staging, &l->beta);
  }
  sp_status sync = sp_stream_sync(s0); /* the staging buffer must outlive the copies */
  return st != SP_OK ? st : sync;
}

static sp_status model_fill(sp_model *m, unsigned char *staging, sp__model_fill_fn fill,
                            void *user) {
  size_t elt = sp__dtype_size(m->dtype);
  for (unsigned i = 0; i < m->n_layers; i++) {
    const sp__model_layer *l = &m->layers[i];
    unsigned char *p = staging + (size_t)l->out * l->in * elt, *b = NULL, *g = NULL, *beta = NULL;
    if (l->bias) b = p, p += (size_t)l->out * elt;
    if (l->norm) g = p, beta = p + (size_t)l->out * elt;
    sp_status st = fill(user, i, m->dtype, staging, b, g, beta);
    if (st != SP_OK) return st;
    staging += model_layer_bytes(l, m->dtype);
  }
  return SP_OK;
}

static sp_status model_new(sp_device *dev, const sp__model_layer *spec, unsigned n_layers,
                           sp_dtype dt, const char *fn, size_t *staging_bytes, sp_model **out) {
  sp_model *m = sp__calloc(1, sizeof(*m));
  sp__model_layer *layers = sp__calloc(n_layers, sizeof(*layers));
  if (!m || !layers) {
    sp__free(m);
    sp__free(layers);
    return sp__fail(SP_ERR_HOST_MEMORY, "%s: out of host memory", fn);
  }
  *m = (sp_model){.dev = dev, .dtype = dt, .n_layers = n_layers, .layers = layers};
  size_t total = 0;
  for (unsigned i = 0; i < n_layers; i++) {
    sp__model_layer *l = &layers[i];
    *l = (sp__model_layer){.in = spec[i].in,
                           .out = spec[i].out,
                           .act = spec[i].act,
                           .bias = spec[i].bias,
                           .norm = spec[i].norm,
                           .eps = spec[i].eps};
    total += model_layer_bytes(l, dt);
    if (l->in > m->max_dim) m->max_dim = l->in;
    if (l->out > m->max_dim) m->max_dim = l->out;
    if (l->norm) m->norms = true;
  }
  *staging_bytes = total;
  *out = m;
  return SP_OK;
}

static sp_status model_check_spec(const sp__model_layer *spec, unsigned n_layers, sp_dtype dt,
                                  const char *fn) {
  sp_status st = sp__dtype_check(dt, fn);
  if (st != SP_OK) return st;
  if (!spec || n_layers == 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: need at least one layer", fn);
  uint64_t params = 0;
  for (unsigned i = 0; i < n_layers; i++) {
    const sp__model_layer *l = &spec[i];
    unsigned bad = l->in == 0 || l->in > (1u << 24) ? l->in : l->out;
    if (bad == 0 || bad > (1u << 24))
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: layer %u: size %u is outside 1..%u", fn, i, bad,
                      1u << 24);
    sp_assert(i == 0 || spec[i - 1].out == l->in); /* the callers chain them */
    sp_assert((unsigned)l->act < SP__ACT_COUNT);
    if (l->norm && !(l->eps > 0.0f && l->eps < 1.0f))
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: layer %u: LayerNorm eps %g is outside (0, 1)",
                      fn, i, (double)l->eps);
    params += model_layer_elems(l);
  }
  if (params > ((uint64_t)1 << 40))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %llu parameters is too many", fn,
                    (unsigned long long)params);
  return SP_OK;
}

static sp_status model_build(sp_device *dev, const sp__model_layer *spec, unsigned n_layers,
                             sp_dtype dt, sp__model_fill_fn fill, void *user, const char *fn,
                             sp_model **out);

sp_status sp__model_build(sp_device *dev, const sp__model_layer *spec, unsigned n_layers,
                          sp_dtype dt, sp__model_fill_fn fill, void *user, const char *fn,
                          sp_model **out) {
  int cancel = sp__cancel_off(); /* the upload syncs the default stream */
  sp_status st = model_build(dev, spec, n_layers, dt, fill, user, fn, out);
  sp__cancel_restore(cancel);
  return st;
}

static sp_status model_build(sp_device *dev, const sp__model_layer *spec, unsigned n_layers,
                             sp_dtype dt, sp__model_fill_fn fill, void *user, const char *fn,
                             sp_model **out) {
  sp_status st = sp__device_enter(dev, fn);
  if (st == SP_OK) st = model_check_spec(spec, n_layers, dt, fn);
  if (st != SP_OK) return st;
  sp_model *m = NULL;
  size_t staging_bytes = 0;
  st = model_new(dev, spec, n_layers, dt, fn, &staging_bytes, &m);
  if (st != SP_OK) return st;
  atomic_fetch_add(&dev->models, 1); /* undone by sp_model_free, on every path */
  unsigned char *staging = sp__malloc(staging_bytes);
  if (!staging) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "%s: no host memory for %zu bytes of staging", fn,
                  staging_bytes);
    goto free_model;
  }
  st = model_fill(m, staging, fill, user);
  if (st == SP_OK) st = model_upload(m, staging);
  sp__free(staging);
  if (st == SP_OK && m->norms) st = sp__nn_check(dev, dt, fn);
  if (st == SP_OK) st = sp__graphs_enabled(dev, fn, &m->graphs);
  if (st == SP_OK) st = sp__plan_table_create(m, &m->plans);
  if (st != SP_OK) goto free_model;
  *out = m;
  return SP_OK;
free_model:
  sp_model_free(m);
  return st;
}

/* ---- the seeded model --------------------------------------------------------------------- */

typedef struct model_random {
  uint64_t seed;
  const unsigned *dims;
} model_random;

static uint64_t model_splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* PyTorch's nn.Linear init: weight and bias uniform in [-1/sqrt(in), 1/sqrt(in)). */
static sp_status model_random_fill(void *user, unsigned layer, sp_dtype dt, void *w, void *b,
                                   void *g, void *beta) {
  const model_random *r = user;
  sp_assert(b && !g && !beta);
  (void)g;
  (void)beta;
  unsigned in = r->dims[layer], out = r->dims[layer + 1];
  uint64_t x = r->seed ^ (0xA5A5A5A5ull * (layer + 1));
  float bound = 1.0f / sqrtf((float)in);
  for (size_t i = 0; i < (size_t)in * out; i++) {
    float u = (float)(model_splitmix(&x) >> 40) * (1.0f / 16777216.0f);
    sp__elem_store(w, dt, i, (2.0f * u - 1.0f) * bound);
  }
  for (size_t i = 0; i < out; i++) {
    float u = (float)(model_splitmix(&x) >> 40) * (1.0f / 16777216.0f);
    sp__elem_store(b, dt, i, (2.0f * u - 1.0f) * bound);
  }
  return SP_OK;
}

sp_status sp_model_mlp_random(sp_device *dev, const unsigned *dims, unsigned n_dims, uint64_t seed,
                              sp_dtype dt, sp_model **out) {
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_model_mlp_random: out is NULL");
  if (!dims || n_dims < 2)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_model_mlp_random: need n_dims >= 2 sizes");
  sp__model_layer *spec = sp__calloc(n_dims - 1, sizeof(*spec));
  if (!spec) return sp__fail(SP_ERR_HOST_MEMORY, "sp_model_mlp_random: out of host memory");
  for (unsigned i = 0; i + 1 < n_dims; i++)
    spec[i] = (sp__model_layer){.in = dims[i],
                                .out = dims[i + 1],
                                .bias = true,
                                .act = i + 2 < n_dims ? SP__ACT_RELU : SP__ACT_NONE};
  model_random r = {.seed = seed, .dims = dims};
  sp_status st =
      sp__model_build(dev, spec, n_dims - 1, dt, model_random_fill, &r, "sp_model_mlp_random", out);
  sp__free(spec);
  return st;
}

void sp_model_free(sp_model *m) {
  if (!m) return;
  /* In a forked child only forget m: its device's streams are the parent's (issue 14 H3). */
  if (sp__device_enter(m->dev, "sp_model_free") != SP_OK) return;
  unsigned residents = atomic_load(&m->residents);
  if (residents) { /* its kernels would reload freed weights: refuse, changing nothing */
    sp__log(SP_LOG_ERROR,
            "sp_model_free: %u resident(s) of this model are open; the model is kept (close them "
            "first)",
            residents);
    return;
  }
  int cancel = sp__cancel_off();
  sp__plan_table_destroy(m, m->plans); /* first: its graphs use the weights */
  model_free_weights(m);
  sp__free(m->layers);
  atomic_fetch_sub(&m->dev->models, 1);
  sp__free(m);
  sp__cancel_restore(cancel);
}

static const char *const model_act_names[SP__ACT_COUNT] = {
    [SP__ACT_NONE] = "",          [SP__ACT_RELU] = " ReLU",
    [SP__ACT_GELU_ERF] = " GELU", [SP__ACT_GELU_TANH] = " GELU(tanh)",
    [SP__ACT_SILU] = " SiLU",     [SP__ACT_TANH] = " Tanh"};

size_t sp_model_describe(const sp_model *m, char *buf, size_t size) {
  size_t n = 0;
  char tmp[1];
  if (!buf) size = 0;
  for (unsigned i = 0; m && i < m->n_layers; i++) {
    const sp__model_layer *l = &m->layers[i];
    char *at = n < size ? buf + n : tmp;
    size_t room = n < size ? size - n : 0;
    int k = snprintf(at, room, "%sLinear(%u->%u%s)%s", i ? " -> " : "", l->in, l->out,
                     l->bias ? "" : ", no bias", model_act_names[l->act]);
    n += k > 0 ? (size_t)k : 0;
    if (!l->norm) continue;
    at = n < size ? buf + n : tmp;
    room = n < size ? size - n : 0;
    k = snprintf(at, room, " -> LayerNorm(%u, eps=%g)", l->out, (double)l->eps);
    n += k > 0 ? (size_t)k : 0;
  }
  if (size > 0 && n < size) buf[n] = '\0';
  else if (size > 0) buf[size - 1] = '\0';
  return n;
}

unsigned sp_model_in_features(const sp_model *m) { return m ? m->layers[0].in : 0; }
unsigned sp_model_out_features(const sp_model *m) { return m ? m->layers[m->n_layers - 1].out : 0; }
sp_dtype sp_model_dtype(const sp_model *m) { return m ? m->dtype : SP_F32; }
sp_device *sp_model_device(const sp_model *m) { return m ? m->dev : NULL; }

/* ---- forward ------------------------------------------------------------------------------ */

/* Bytes of one ping-pong activation buffer for batch rows. */
static size_t model_half_bytes(const sp_model *m, unsigned batch) {
  return sp__device_part_round((size_t)batch * m->max_dim * sp__dtype_size(m->dtype));
}

static sp_status model_check_run(const sp_model *m, const void *in, const void *out, unsigned batch,
                                 const char *fn) {
  if (SP__UNLIKELY(!m)) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
  sp_status st = sp__device_enter(m->dev, fn);
  if (st != SP_OK) return st;
  if (SP__UNLIKELY(!in || !out))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: in or out is NULL", fn);
  if (SP__UNLIKELY(batch == 0 || batch > (1u << 24)))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: batch %u is outside 1..%u", fn, batch, 1u << 24);
  return sp__model_check_backend(m, fn);
}

sp_status sp__model_check_backend(const sp_model *m, const char *fn) {
  return m->norms ? sp__nn_check(m->dev, m->dtype, fn) : sp__linear_check(m->dev, m->dtype, fn);
}

size_t sp__model_workspace_bytes(const sp_model *m, unsigned batch) {
  return 2 * model_half_bytes(m, batch);
}

/* The LayerNorm of layer l, in place on its output y (batch rows of l->out). */
static sp_status model_enqueue_norm(const sp_model *m, sp_stream *s, const sp__model_layer *l,
                                    void *y, unsigned batch) {
  sp__nn op = {.kind = SP__NN_LAYERNORM, .dtype = m->dtype};
  op.u.norm.rows = batch;
  op.u.norm.cols = l->out;
  op.u.norm.x = y;
  op.u.norm.gamma = l->g;
  op.u.norm.beta = l->beta;
  op.u.norm.eps = l->eps;
  op.u.norm.y = y;
  return sp__stream_nn(s, &op);
}

sp_status sp__model_enqueue(const sp_model *m, sp_stream *s, const float *in, float *out,
                            unsigned batch, void *workspace) {
  unsigned char *ws = workspace;
  unsigned char *buf[2] = {ws, ws + model_half_bytes(m, batch)};
  unsigned next = 0;
  const void *x = in;
  sp_status st = SP_OK;
  /* A bf16 or f16 model whose backend reads and writes f32 rows in its linears at this batch
   * (sp__linear_f32_io) converts nothing: its first layer reads `in` and its last writes `out`,
   * unless a LayerNorm (in dtype) follows the last or the last is also the first (in may be
   * out). Otherwise the input is converted into buf[0] and the output out of the last buffer. */
  bool narrow = m->dtype != SP_F32, io = narrow && sp__linear_f32_io(s->dev, batch);
  bool y_f32 = io && m->n_layers > 1 && !m->layers[m->n_layers - 1].norm;
  if (narrow && !io) {
    st = sp__stream_convert(s, buf[0], m->dtype, in, SP_F32, (size_t)batch * m->layers[0].in);
    x = buf[0];
    next = 1;
  }
  for (unsigned i = 0; i < m->n_layers && st == SP_OK; i++) {
    const sp__model_layer *l = &m->layers[i];
    bool last = i + 1 == m->n_layers;
    void *y = last && (!narrow || y_f32) ? (void *)out : buf[next];
    sp__linear op = {
        .dtype = m->dtype,
        .batch = batch,
        .in_features = l->in,
        .out_features = l->out,
        .x = x,
        .w = l->w,
        .bias = l->b,
        .y = y,
        .act = l->act,
        .io = (i == 0 && io ? SP__LINEAR_X_F32 : 0u) | (last && y_f32 ? SP__LINEAR_Y_F32 : 0u)};
    st = sp__stream_linear(s, &op);
    if (st == SP_OK && l->norm) st = model_enqueue_norm(m, s, l, y, batch);
    x = y;
    next ^= 1u;
  }
  if (st == SP_OK && narrow && !y_f32)
    st = sp__stream_convert(s, out, SP_F32, x, m->dtype,
                            (size_t)batch * m->layers[m->n_layers - 1].out);
  return st;
}

sp_status sp__model_check_device_rows(const sp_model *m, const float *p, unsigned features,
                                      unsigned batch, const char *what, const char *fn) {
  bool is_device = false;
  size_t bytes = (size_t)batch * features * sizeof(float);
  sp_status st = sp__alloc_range(m->dev->alloc, p, bytes, true, fn, what, &is_device);
  if (st == SP_OK && SP__UNLIKELY(!is_device) && !sp__mem_is_foreign(m->dev, p, bytes))
    st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                  "%s: %s %p (%u rows of %u floats) is not "
                  "memory of the model's device (host memory, or another device's)",
                  fn, what, (const void *)p, batch, features);
  return st;
}

static sp_status model_forward(sp_model *m, sp_stream *s, const float *in, float *out,
                               unsigned batch) {
  static const char fn[] = "sp_model_forward";
  sp_status st = model_check_run(m, in, out, batch, fn);
  if (st == SP_OK) st = sp__stream_enter(s, fn);
  if (st != SP_OK) return st;
  if (SP__UNLIKELY(s->dev != m->dev))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: stream belongs to another device", fn);
  st = sp__model_check_device_rows(m, in, sp_model_in_features(m), batch, "in", fn);
  if (st == SP_OK)
    st = sp__model_check_device_rows(m, out, sp_model_out_features(m), batch, "out", fn);
  if (st != SP_OK) return st;
  bool handled = false;
  st = sp__plan_forward(m, s, in, out, batch, &handled);
  if (SP__LIKELY(handled)) return st;
  void *ws;
  st = sp_alloc(m->dev, sp__model_workspace_bytes(m, batch), s, &ws);
  if (st != SP_OK) return st;
  st = sp__model_enqueue(m, s, in, out, batch, ws);
  sp_status fr = sp_free(m->dev, ws); /* stream-ordered: later work on s runs after the pass */
  return st != SP_OK ? st : fr;
}

static sp_status model_infer(sp_model *m, const float *in, float *out, unsigned batch) {
  static const char fn[] = "sp_model_infer";
  sp_status st = model_check_run(m, in, out, batch, fn);
  if (st != SP_OK) return st;
  sp_stream *s;
  st = sp_stream_current(m->dev, &s);
  if (st != SP_OK) return st;
  return sp__plan_infer(m, s, in, out, batch);
}

/* The public forwards run with cancellation disabled (sp__cancel_off): a plan's mutex is held
 * across its run and the run syncs its stream. */
sp_status sp_model_forward(sp_model *m, sp_stream *s, const float *in, float *out, unsigned batch) {
  int cancel = sp__cancel_off();
  sp_status st = model_forward(m, s, in, out, batch);
  sp__cancel_restore(cancel);
  return st;
}

sp_status sp_model_infer(sp_model *m, const float *in, float *out, unsigned batch) {
  int cancel = sp__cancel_off();
  sp_status st = model_infer(m, in, out, batch);
  sp__cancel_restore(cancel);
  return st;
}
