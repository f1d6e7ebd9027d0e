/* A seeded MLP with known weights for tests (header-only): PyTorch-style uniform(+-1/sqrt(in))
 * weights and biases drawn from one tu_rng, written to a safetensors file as an nn.Sequential
 * state dict ("net.0.weight", "net.0.bias", "net.2.weight", ...), and its double-precision
 * forward (ReLU between layers) as the reference that model outputs are checked against.
 */
#ifndef SP_TU_MLP_H
#define SP_TU_MLP_H

#include <math.h>
#include <string.h>

#include "testutil.h"
#include "tu_safetensors.h"

enum { TU_MLP_LAYERS_MAX = 4, TU_MLP_WIDTH_MAX = 128 };

typedef struct tu_mlp {
  unsigned n_layers;
  unsigned dims[TU_MLP_LAYERS_MAX + 1];
  float w[TU_MLP_LAYERS_MAX][TU_MLP_WIDTH_MAX * TU_MLP_WIDTH_MAX]; /* [out][in] per layer */
  float b[TU_MLP_LAYERS_MAX][TU_MLP_WIDTH_MAX];
} tu_mlp;

/* Fills m: n_layers layers, dims[0..n_layers], weights then bias per layer from seed. */
static inline void tu_mlp_seeded(tu_mlp *m, const unsigned *dims, unsigned n_layers,
                                 uint64_t seed) {
  tu_rng rng = {seed};
  m->n_layers = n_layers;
  memcpy(m->dims, dims, sizeof(unsigned) * (n_layers + 1));
  for (unsigned k = 0; k < n_layers; k++) {
    float bound = 1.0f / sqrtf((float)dims[k]);
    for (unsigned i = 0; i < dims[k] * dims[k + 1]; i++)
      m->w[k][i] = bound * (float)((double)tu_rng_below(&rng, 2001) / 1000.0 - 1.0);
    for (unsigned i = 0; i < dims[k + 1]; i++)
      m->b[k][i] = bound * (float)((double)tu_rng_below(&rng, 2001) / 1000.0 - 1.0);
  }
}

/* Writes m as an F32 safetensors state dict of nn.Sequential(Linear, ReLU, ..., Linear) named
 * "net.0", "net.2", ..., with its description in the metadata ("net.0:linear net.1:relu ...");
 * 0 on success. */
static inline int tu_mlp_write(const tu_mlp *m, const char *path) {
  tu_st_tensor t[2 * TU_MLP_LAYERS_MAX];
  char names[2 * TU_MLP_LAYERS_MAX][32];
  char meta[64 + 32 * TU_MLP_LAYERS_MAX];
  size_t n = (size_t)snprintf(meta, sizeof(meta), "{\"streampool.arch\":\"");
  for (unsigned k = 0; k < m->n_layers; k++)
    n += (size_t)snprintf(meta + n, sizeof(meta) - n, "%snet.%u:linear%s", k ? " " : "", 2 * k,
                          k + 1 < m->n_layers ? " relu" : "");
  snprintf(meta + n, sizeof(meta) - n, "\"}");
  for (unsigned k = 0; k < m->n_layers; k++) {
    unsigned in = m->dims[k], out = m->dims[k + 1];
    snprintf(names[2 * k], sizeof(names[0]), "net.%u.weight", 2 * k);
    snprintf(names[2 * k + 1], sizeof(names[0]), "net.%u.bias", 2 * k);
    t[2 * k] = (tu_st_tensor){names[2 * k], "F32", 2, {out, in}, m->w[k], sizeof(float) * in * out};
    t[2 * k + 1] = (tu_st_tensor){names[2 * k + 1], "F32", 1, {out}, m->b[k], sizeof(float) * out};
  }
  return tu_st_write(path, t, 2 * m->n_layers, meta);
}

/* y[dims[n_layers]] = the forward of one row x[dims[0]] in double precision. */
static inline void tu_mlp_reference(const tu_mlp *m, const float *x, double *y) {
  double a[TU_MLP_WIDTH_MAX], t[TU_MLP_WIDTH_MAX];
  for (unsigned i = 0; i < m->dims[0]; i++) a[i] = x[i];
  for (unsigned k = 0; k < m->n_layers; k++) {
    unsigned in = m->dims[k];
    for (unsigned o = 0; o < m->dims[k + 1]; o++) {
      double s = m->b[k][o];
      for (unsigned i = 0; i < in; i++) s += (double)m->w[k][o * in + i] * a[i];
      t[o] = k + 1 < m->n_layers && s < 0 ? 0 : s;
    }
    memcpy(a, t, sizeof(double) * m->dims[k + 1]);
  }
  memcpy(y, a, sizeof(double) * m->dims[m->n_layers]);
}

#endif /* SP_TU_MLP_H */
