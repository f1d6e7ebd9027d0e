/* Resident forwards: one caller's batch-1 MLP kept on the device between calls (include/
 * streampool.h, "Resident forwards"; the CUDA kernel: src/backend/cuda/cuda_resident.h).
 *
 * Owns: sp_resident objects: the model they run (not owned: it must outlive them), the
 * backend's resident and the mutex that serializes forwards. Open describes the model's layers to
 * the backend (sp__resident_desc) after refusing what a resident cannot run (LayerNorm, more than
 * SP__RESIDENT_LAYERS_MAX layers); the backend refuses what does not fit its device. The device
 * and the model count open residents (dev->residents, m->residents), so sp_device_close refuses
 * and sp_model_free keeps the model while one is open.
 * Locking: mu (rank RESIDENT_RUN) is held for one forward (the backend's run and the count) and
 * for a read of the counters, nothing else.
 */
#include "core/env.h"
#include "core/ops.h"
#include "infer/model.h"

#define RESIDENT_IDLE_US_DEFAULT 1000u
#define RESIDENT_IDLE_US_MAX 10000000u

struct sp_resident {
  sp_model *m;       /* immutable; outlives r                  */
  sp__bresident *b;  /* the backend's; runs under mu           */
  sp__mutex mu;      /* serializes forwards (rank RESIDENT_RUN) */
  uint64_t forwards; /* answered with SP_OK; under mu          */
};

/* m as a resident model, or SP_ERR_UNSUPPORTED saying why it is not one. */
static sp_status resident_describe(const sp_model *m, sp__resident_layer *layers,
                                   sp__resident_desc *desc) {
  static const char fn[] = "sp_resident_open";
  if (m->n_layers > SP__RESIDENT_LAYERS_MAX)
    return sp__fail(SP_ERR_UNSUPPORTED, "%s: the model has %u layers; a resident runs at most %u",
                    fn, m->n_layers, SP__RESIDENT_LAYERS_MAX);
  for (unsigned i = 0; i < m->n_layers; i++) {
    const sp__model_layer *l = &m->layers[i];
    if (l->norm)
      return sp__fail(SP_ERR_UNSUPPORTED,
                      "%s: layer %u has a LayerNorm; a resident runs Linear layers and their "
                      "activations only (use sp_model_forward)",
                      fn, i);
    layers[i] = (sp__resident_layer){l->in, l->out, l->w, l->b, l->act};
  }
  uint64_t idle = RESIDENT_IDLE_US_DEFAULT;
  sp_status st = sp__env_u64_or(fn, "STREAMPOOL_RESIDENT_IDLE_US", SP__ENV_COUNT, 0,
                                RESIDENT_IDLE_US_MAX, RESIDENT_IDLE_US_DEFAULT, &idle);
  if (st != SP_OK) return st;
  *desc = (sp__resident_desc){m->dtype, m->n_layers, layers, (unsigned)idle};
  return SP_OK;
}

sp_status sp_resident_open(sp_model *m, sp_resident **out) {
  static const char fn[] = "sp_resident_open";
  if (!m || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: model or out is NULL", fn);
  sp_status st = sp__device_enter(m->dev, fn);
  if (st == SP_OK) st = sp__model_check_backend(m, fn);
  sp__resident_layer layers[SP__RESIDENT_LAYERS_MAX];
  sp__resident_desc desc;
  if (st == SP_OK) st = resident_describe(m, layers, &desc);
  if (st != SP_OK) return st;
  sp_resident *r = sp__calloc(1, sizeof(*r));
  if (!r) return sp__fail(SP_ERR_HOST_MEMORY, "%s: out of host memory", fn);
  r->m = m;
  if (sp__mutex_init(&r->mu, SP__RANK_RESIDENT_RUN) != 0) {
    sp__free(r);
    return sp__fail(SP_ERR_HOST_MEMORY, "%s: cannot create a mutex", fn);
  }
  st = sp__resident_open(m->dev, &desc, fn, &r->b);
  if (st != SP_OK) {
    sp__mutex_destroy(&r->mu);
    sp__free(r);
    return st;
  }
  atomic_fetch_add(&m->dev->residents, 1);
  atomic_fetch_add(&m->residents, 1);
  *out = r;
  return SP_OK;
}

sp_status sp_resident_forward(sp_resident *r, const float *in, float *out) {
  static const char fn[] = "sp_resident_forward";
  if (SP__UNLIKELY(!r)) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: resident is NULL", fn);
  const sp_model *m = r->m;
  sp_status st = sp__device_enter(m->dev, fn);
  if (st != SP_OK) return st;
  if (SP__UNLIKELY(!in || !out))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: in or out is NULL", fn);
  st = sp__model_check_device_rows(m, in, sp_model_in_features(m), 1, "in", fn);
  if (st == SP_OK) st = sp__model_check_device_rows(m, out, sp_model_out_features(m), 1, "out", fn);
  if (st != SP_OK) return st;
  int cancel = sp__cancel_off();
  sp__mutex_lock(&r->mu);
  st = sp__resident_run(m->dev, r->b, in, out);
  if (st == SP_OK) r->forwards++;
  sp__mutex_unlock(&r->mu);
  sp__cancel_restore(cancel);
  return st;
}

sp_status sp_resident_stats_get(sp_resident *r, sp_resident_stats *out) {
  static const char fn[] = "sp_resident_stats_get";
  if (!r || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: resident or out is NULL", fn);
  sp_status st = sp__device_enter(r->m->dev, fn);
  if (st != SP_OK) return st;
  sp__mutex_lock(&r->mu);
  *out = (sp_resident_stats){r->forwards, sp__resident_launches(r->m->dev, r->b)};
  sp__mutex_unlock(&r->mu);
  return SP_OK;
}

void sp_resident_close(sp_resident *r) {
  if (!r) return;
  sp_device *dev = r->m->dev;
  /* In a forked child only forget r: its kernel and stream are the parent's. */
  if (sp__device_enter(dev, "sp_resident_close") != SP_OK) return;
  int cancel = sp__cancel_off();
  sp__resident_close(dev, r->b);
  sp__mutex_destroy(&r->mu);
  atomic_fetch_sub(&r->m->residents, 1);
  atomic_fetch_sub(&dev->residents, 1);
  sp__free(r);
  sp__cancel_restore(cancel);
}
