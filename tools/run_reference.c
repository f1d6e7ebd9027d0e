/* streampool run: the reference. REF_ROWS seeded input rows and their outputs, computed one row
 * at a time on the calling thread before any run, per device; the worker threads compare every
 * output with these. No state; called on the main thread only.
 */
#include <stdlib.h>

#include "measure.h"
#include "run.h"

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

sp_status sp_cli_run_ref_build(sp_model *m, const run_opts *o, run_ref *ref) {
  ref->in_f = sp_model_in_features(m);
  ref->out_f = sp_model_out_features(m);
  ref->tol = sp_cli_tolerance(o->dtype);
  ref->in = malloc(sizeof(float) * REF_ROWS * ref->in_f);
  ref->out = malloc(sizeof(float) * REF_ROWS * ref->out_f);
  if (!ref->in || !ref->out) return SP_ERR_HOST_MEMORY;
  uint64_t x = o->seed * 0x100000001B3ull + 7;
  for (size_t i = 0; i < (size_t)REF_ROWS * ref->in_f; i++)
    ref->in[i] = (float)((double)(splitmix(&x) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  for (unsigned r = 0; r < REF_ROWS; r++) {
    sp_status st =
        sp_model_infer(m, ref->in + (size_t)r * ref->in_f, ref->out + (size_t)r * ref->out_f, 1);
    if (st != SP_OK) return st;
  }
  return SP_OK;
}
