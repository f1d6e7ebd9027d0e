/* sp_model_load: a PyTorch state dict in a safetensors file -> an MLP.
 *
 * What is accepted: every tensor is "<prefix>.weight" (rank 2, [out, in]) or "<prefix>.bias"
 * (rank 1, [out]); each prefix has both. Layers run in increasing order of the prefix's *last run
 * of decimal digits* ("0" < "2" < "10" from nn.Sequential; "fc1" < "fc2"; "net.3" < "net.12"); a
 * prefix without digits (unless it is the only layer), or two prefixes with the same number, is an
 * error. Consecutive layers must chain (in of layer k+1 == out of layer k). Any other tensor is an
 * error rather than being ignored, so a model that is not a plain MLP is never run as one. F32 and
 * BF16 tensors are converted on the host to the model dtype (round to nearest even) before the
 * upload. Owns nothing past the call: the parsed file is freed before returning. No locks.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "infer/model.h"
#include "infer/safetensors.h"

typedef struct load_layer {
  const char *prefix; /* into a tensor name; not NUL-terminated at prefix_len */
  size_t prefix_len;
  uint64_t key; /* the last run of digits in the prefix */
  int has_key;  /* 1: the prefix has digits (a lone layer needs none); 0: none */
  const sp__st_tensor *w, *b;
} load_layer;

typedef struct load_ctx {
  const char *path;
  load_layer *layers;
  size_t n_layers;
} load_ctx;

static int load_layer_cmp(const void *a, const void *b) {
  const load_layer *x = a, *y = b;
  return x->key < y->key ? -1 : (x->key > y->key ? 1 : 0);
}

/* The value of the last run of digits in p[0, len): 1; no digits: 0; a signed run ("-1", "+2":
 * a number that does not order the way it reads) or one of more than 18 digits: -1. */
static int load_prefix_key(const char *p, size_t len, uint64_t *key) {
  size_t end = len;
  while (end > 0 && !isdigit((unsigned char)p[end - 1])) end--;
  if (end == 0) return 0;
  size_t begin = end;
  while (begin > 0 && isdigit((unsigned char)p[begin - 1])) begin--;
  if (end - begin > 18 || (begin > 0 && (p[begin - 1] == '-' || p[begin - 1] == '+'))) return -1;
  uint64_t v = 0;
  for (size_t i = begin; i < end; i++) v = v * 10 + (uint64_t)(p[i] - '0');
  *key = v;
  return 1;
}

static load_layer *load_find_layer(load_ctx *c, const char *prefix, size_t len) {
  for (size_t i = 0; i < c->n_layers; i++)
    if (c->layers[i].prefix_len == len && !memcmp(c->layers[i].prefix, prefix, len))
      return &c->layers[i];
  return NULL;
}

static sp_status load_add_tensor(load_ctx *c, const sp__st_tensor *t) {
  size_t len = strlen(t->name);
  int is_w = len > 7 && !strcmp(t->name + len - 7, ".weight");
  int is_b = len > 5 && !strcmp(t->name + len - 5, ".bias");
  if (!is_w && !is_b)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: tensor '%s' is not a Linear "
                    "'<prefix>.weight' or '<prefix>.bias'",
                    c->path, t->name);
  size_t plen = len - (is_w ? 7 : 5);
  load_layer *l = load_find_layer(c, t->name, plen);
  if (!l) {
    l = &c->layers[c->n_layers++];
    *l = (load_layer){.prefix = t->name, .prefix_len = plen};
    l->has_key = load_prefix_key(t->name, plen, &l->key);
    if (l->has_key < 0)
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "sp_model_load: %s: layer prefix '%.*s': its "
                      "number is signed or longer than 18 digits, so it cannot order the layers",
                      c->path, (int)plen, t->name);
  }
  if (is_w) l->w = t;
  else l->b = t;
  return SP_OK;
}

static sp_status load_check_layer(const load_ctx *c, const load_layer *l, const load_layer *prev) {
  int pl = (int)l->prefix_len;
  if (prev && prev->key == l->key)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layers '%.*s' and '%.*s' have "
                    "the same number %llu: their order is ambiguous",
                    c->path, (int)prev->prefix_len, prev->prefix, pl, l->prefix,
                    (unsigned long long)l->key);
  if (!l->w || !l->b)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer '%.*s': missing "
                    "'%.*s.%s'",
                    c->path, pl, l->prefix, pl, l->prefix, l->w ? "bias" : "weight");
  if (l->w->rank != 2 || l->b->rank != 1)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer '%.*s': weight must be "
                    "rank 2 and bias rank 1 (got %u and %u)",
                    c->path, pl, l->prefix, l->w->rank, l->b->rank);
  uint64_t out = l->w->shape[0], in = l->w->shape[1];
  if (out == 0 || in == 0 || out > (1u << 24) || in > (1u << 24))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer '%.*s': weight shape "
                    "[%llu, %llu] is outside 1..%u",
                    c->path, pl, l->prefix, (unsigned long long)out, (unsigned long long)in,
                    1u << 24);
  if (l->b->shape[0] != out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer '%.*s': bias has %llu "
                    "elements, weight has %llu outputs",
                    c->path, pl, l->prefix, (unsigned long long)l->b->shape[0],
                    (unsigned long long)out);
  if (prev && prev->w->shape[0] != in)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: dims do not chain: layer "
                    "'%.*s' gives %llu features, layer '%.*s' takes %llu",
                    c->path, (int)prev->prefix_len, prev->prefix,
                    (unsigned long long)prev->w->shape[0], pl, l->prefix, (unsigned long long)in);
  return SP_OK;
}

static sp_status load_layers(load_ctx *c, const sp__safetensors *st) {
  if (st->n_tensors == 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_model_load: %s: the file holds no tensors",
                    c->path);
  for (size_t i = 0; i < st->n_tensors; i++) {
    sp_status s = load_add_tensor(c, &st->tensors[i]);
    if (s != SP_OK) return s;
  }
  for (size_t i = 0; i < c->n_layers && c->n_layers > 1; i++)
    if (!c->layers[i].has_key)
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "sp_model_load: %s: layer prefix '%.*s' has no "
                      "number to order the layers by",
                      c->path, (int)c->layers[i].prefix_len, c->layers[i].prefix);
  qsort(c->layers, c->n_layers, sizeof(*c->layers), load_layer_cmp);
  for (size_t i = 0; i < c->n_layers; i++) {
    sp_status s = load_check_layer(c, &c->layers[i], i ? &c->layers[i - 1] : NULL);
    if (s != SP_OK) return s;
  }
  return SP_OK;
}

static float load_elem(const sp__st_tensor *t, size_t i) {
  if (t->dtype == SP_BF16) {
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    return sp__bf16_to_f32(h);
  }
  float f;
  memcpy(&f, t->data + 4 * i, 4);
  return f;
}

static void load_convert(const sp__st_tensor *t, sp_dtype dt, void *dst) {
  if (t->dtype == dt) {
    memcpy(dst, t->data, t->bytes);
    return;
  }
  for (size_t i = 0; i < t->numel; i++) sp__param_store(dst, dt, i, load_elem(t, i));
}

static sp_status load_fill(void *user, unsigned layer, sp_dtype dt, void *w, void *b) {
  const load_ctx *c = user;
  load_convert(c->layers[layer].w, dt, w);
  load_convert(c->layers[layer].b, dt, b);
  return SP_OK;
}

static sp_status load_build(sp_device *dev, load_ctx *c, sp_dtype dt, sp_model **out) {
  unsigned *dims = sp__calloc(c->n_layers + 1, sizeof(*dims));
  if (!dims) return sp__fail(SP_ERR_HOST_MEMORY, "sp_model_load: out of host memory");
  dims[0] = (unsigned)c->layers[0].w->shape[1];
  for (size_t i = 0; i < c->n_layers; i++) dims[i + 1] = (unsigned)c->layers[i].w->shape[0];
  sp_status st =
      sp__model_build(dev, dims, (unsigned)c->n_layers, dt, load_fill, c, "sp_model_load", out);
  sp__free(dims);
  return st;
}

static sp_status model_load(sp_device *dev, const char *safetensors_path, sp_dtype dt,
                            sp_model **out);

/* Runs with cancellation disabled: reading the file and the upload are cancellation points. */
sp_status sp_model_load(sp_device *dev, const char *safetensors_path, sp_dtype dt, sp_model **out) {
  int cancel = sp__cancel_off();
  sp_status st = model_load(dev, safetensors_path, dt, out);
  sp__cancel_restore(cancel);
  return st;
}

static sp_status model_load(sp_device *dev, const char *safetensors_path, sp_dtype dt,
                            sp_model **out) {
  sp_status st = sp__device_enter(dev, "sp_model_load");
  if (st != SP_OK) return st;
  if (!safetensors_path || !out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_model_load: path or out is NULL");
  if (dt != SP_F32 && dt != SP_BF16)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: dtype %d is neither SP_F32 nor "
                    "SP_BF16",
                    (int)dt);
  sp__safetensors *file = NULL;
  st = sp__safetensors_read(safetensors_path, &file);
  if (st != SP_OK) return st;
  load_ctx c = {.path = safetensors_path};
  c.layers = sp__calloc(file->n_tensors + 1, sizeof(*c.layers));
  if (!c.layers) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "sp_model_load: out of host memory");
    goto free_file;
  }
  st = load_layers(&c, file);
  if (st == SP_OK) st = load_build(dev, &c, dt, out);
  sp__free(c.layers);
free_file:
  sp__safetensors_free(file);
  return st;
}
