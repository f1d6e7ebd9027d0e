/* Goal: the model-description parser (sp_model_desc_parse) never crashes, reads out of bounds or
 * leaks on any text, and what it accepts holds its invariants: 1..4096 layers, every name
 * non-empty and at most 200 bytes of [A-Za-z0-9_.-], activations valid, eps in (0, 1) where a
 * LayerNorm is and 0 elsewhere; a refusal is SP_ERR_INVALID_ARGUMENT (or SP_ERR_HOST_MEMORY) with
 * a message.
 * Method: bytes -> a NUL-terminated copy -> sp_model_desc_parse. Seeds:
 * tests/fuzz/corpus/model_desc/.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "streampool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int cond) {
  if (!cond) abort();
}

static void fuzz_name(const char *s) {
  size_t n = strlen(s);
  fuzz_check(n >= 1 && n <= 200);
  for (size_t i = 0; i < n; i++)
    fuzz_check(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  sp_model_desc *d = NULL;
  sp_status s = sp_model_desc_parse(text, &d);
  free(text);
  if (s != SP_OK) {
    fuzz_check(s == SP_ERR_INVALID_ARGUMENT || s == SP_ERR_HOST_MEMORY);
    fuzz_check(sp_last_error()[0] != '\0');
    fuzz_check(d == NULL);
    return 0;
  }
  fuzz_check(d->n_layers >= 1 && d->n_layers <= 4096);
  for (unsigned k = 0; k < d->n_layers; k++) {
    const sp_mlp_layer *l = &d->layers[k];
    fuzz_name(l->linear);
    fuzz_check(l->act >= SP_ACT_NONE && l->act <= SP_ACT_TANH);
    if (l->norm) {
      fuzz_name(l->norm);
      fuzz_check(l->norm_eps > 0.0f && l->norm_eps < 1.0f);
    } else {
      fuzz_check(l->norm_eps == 0.0f);
    }
  }
  sp_model_desc_free(d);
  return 0;
}
