/* The MLP model as src/infer sees it (internal).
 *
 * An sp_model is immutable after it is built: layers, dims and device weights never change until
 * sp_model_free, so any number of threads may run it at once without a lock. The one exception is
 * its plan table (src/infer/plan.c), which sp_model_infer fills on first use per (stream, batch)
 * under its own per-stream locks.
 *
 * Building goes through sp__model_build: the caller describes the layers (sizes, activation,
 * bias or not, LayerNorm or not) and fills a host staging buffer (weight, bias, LayerNorm weight
 * and bias per layer, those it has, already in the model's dtype); the builder uploads it to
 * blocks from the device's allocator on the default stream and syncs that stream.
 */
#ifndef SP_INFER_MODEL_H
#define SP_INFER_MODEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/device.h"

#include "backend/backend.h"

typedef struct sp__model_layer {
  unsigned in, out; /* features                                              */
  sp__act act;      /* after the Linear (fused into it)                      */
  bool bias;        /* the Linear has a bias                                 */
  bool norm;        /* a LayerNorm over out follows the activation           */
  float eps;        /* the LayerNorm's eps (norm only)                       */
  void *w;          /* device, [out, in] in the model dtype                  */
  void *b;          /* device, [out] in the model dtype; NULL without bias   */
  void *g, *beta;   /* device, [out] each: the LayerNorm's; NULL without one */
} sp__model_layer;

struct sp_model {
  sp_device *dev;               /* owner device; immutable                         */
  sp_dtype dtype;               /* weights and activations                         */
  unsigned n_layers;            /* >= 1                                             */
  unsigned max_dim;             /* the largest feature count of any layer          */
  sp__model_layer *layers;      /* [n_layers]                                       */
  bool norms;                   /* some layer has a LayerNorm: needs nn_async      */
  bool graphs;                  /* graphs on (sp__graphs_enabled at build): plans capture forwards
                                 * and the batcher pads passes to captured sizes              */
  struct sp__plan_table *plans; /* sp_model_infer's cached plans (plan.h); set at build */
  atomic_uint residents; /* open sp_resident of this model: sp_model_free keeps m while > 0 */
};

/* Fills one layer's parameters in the host staging buffer: w is [out, in], b, g and beta are
 * [out] (NULL where the layer has none), all in the model's dtype. Returns SP_OK or a failure that
 * aborts the build. */
typedef sp_status (*sp__model_fill_fn)(void *user, unsigned layer, sp_dtype dt, void *w, void *b,
                                       void *g, void *beta);

/* Builds a model of n_layers layers shaped as spec[0, n_layers) says (in, out, act, bias, norm,
 * eps; the device pointers are ignored); fill writes the parameters. fn names the public function
 * in messages. */
sp_status sp__model_build(sp_device *dev, const sp__model_layer *spec, unsigned n_layers,
                          sp_dtype dt, sp__model_fill_fn fill, void *user, const char *fn,
                          sp_model **out);

/* Whether m's device can run m (Linear, conversions, and LayerNorm where m has one). Any thread. */
sp_status sp__model_check_backend(const sp_model *m, const char *fn);

/* p must hold batch rows of `features` floats inside one live block of m's device, or in device
 * memory of that device that another runtime allocated (a PyTorch or CuPy tensor: the backend
 * knows it; the allocator's own memory is checked block by block): SP_OK, else
 * SP_ERR_INVALID_ARGUMENT naming fn and what ("in", "out"). Any thread. */
sp_status sp__model_check_device_rows(const sp_model *m, const float *p, unsigned features,
                                      unsigned batch, const char *what, const char *fn);

/* Bytes of activation workspace one forward of batch rows needs (256-byte aligned parts). */
size_t sp__model_workspace_bytes(const sp_model *m, unsigned batch);

/* Enqueues one whole forward of batch rows on s (a pool stream or a capture stream): in and out
 * are device f32 rows, workspace holds sp__model_workspace_bytes(m, batch) device bytes; nothing
 * is allocated or freed, so the same calls can be captured into a graph. The caller has checked
 * sp__linear_check for m's dtype. Any thread. */
sp_status sp__model_enqueue(const sp_model *m, sp_stream *s, const float *in, float *out,
                            unsigned batch, void *workspace);

#endif /* SP_INFER_MODEL_H */
