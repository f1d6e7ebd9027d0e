/* The host backend's resident forwards (backend.h resident_*): the model's layers run on a stream
 * of the resident's own, one worker thread that nothing else submits to.
 *
 * Owns: sp__bresident: the private stream, the layers' descriptions and two ping-pong buffers of
 * the widest layer (host memory is this device's memory). A run submits one linear a layer
 * (f32 in read and f32 out written by the first and last through sp__linear.io in bf16 and f16,
 * so the results are the model's forward's bit for bit) and syncs the stream. The CPU has no
 * launch to save, so this is the reference the CUDA kernel's results are held to, not a faster
 * path.
 * Locking: none of its own; the core serializes the runs of one resident.
 */
#include <string.h>

#include "backend/host/host_impl.h"
#include "core/dtype.h"

struct sp__bresident {
  sp__bstream *s;                                     /* private; immutable           */
  sp_dtype dtype;                                     /* immutable                    */
  unsigned n_layers;                                  /* immutable                    */
  sp__resident_layer layers[SP__RESIDENT_LAYERS_MAX]; /* immutable                    */
  void *buf[2];                                       /* [widest out] each, in dtype  */
};

sp_status sp__host_resident_open(sp__bdevice *d, const sp__resident_desc *desc,
                                 sp__bresident **out) {
  sp__bresident *r = sp__calloc(1, sizeof(*r));
  if (!r) return sp__fail(SP_ERR_HOST_MEMORY, "host resident_open: out of host memory");
  size_t widest = 1;
  for (unsigned l = 0; l < desc->n_layers; l++)
    if (desc->layers[l].out > widest) widest = desc->layers[l].out;
  r->dtype = desc->dtype;
  r->n_layers = desc->n_layers;
  memcpy(r->layers, desc->layers, desc->n_layers * sizeof(r->layers[0]));
  for (int i = 0; i < 2; i++) r->buf[i] = sp__malloc(widest * sp__dtype_size(desc->dtype));
  sp_status st = SP_OK;
  if (!r->buf[0] || !r->buf[1])
    st = sp__fail(SP_ERR_HOST_MEMORY, "host resident_open: out of host memory");
  if (st == SP_OK) st = sp__host_stream_create(d, 0, &r->s);
  if (st != SP_OK) {
    sp__free(r->buf[0]);
    sp__free(r->buf[1]);
    sp__free(r);
    return st;
  }
  *out = r;
  return SP_OK;
}

sp_status sp__host_resident_run(sp__bresident *r, const float *in, float *out) {
  const bool f32 = r->dtype == SP_F32;
  sp_status st = SP_OK;
  for (unsigned l = 0; l < r->n_layers && st == SP_OK; l++) {
    const sp__resident_layer *L = &r->layers[l];
    const bool first = l == 0, last = l + 1 == r->n_layers;
    sp__linear op = {
        .dtype = r->dtype,
        .batch = 1,
        .in_features = L->in,
        .out_features = L->out,
        .x = first ? (const void *)in : r->buf[(l + 1) % 2],
        .w = L->w,
        .bias = L->bias,
        .y = last ? (void *)out : r->buf[l % 2],
        .act = L->act,
        .io = f32 ? 0u : (first ? SP__LINEAR_X_F32 : 0u) | (last ? SP__LINEAR_Y_F32 : 0u)};
    st = sp__host_linear_async(r->s, &op);
  }
  sp_status sync = sp__host_stream_sync(r->s);
  return st != SP_OK ? st : sync;
}

uint64_t sp__host_resident_launches(const sp__bresident *r) {
  (void)r;
  return 0; /* nothing is launched: the stream's worker runs the layers */
}

void sp__host_resident_close(sp__bresident *r) {
  if (!r) return;
  sp__host_stream_destroy(r->s);
  sp__free(r->buf[0]);
  sp__free(r->buf[1]);
  sp__free(r);
}
