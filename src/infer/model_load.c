/* sp_model_load, sp_model_load_desc: a safetensors file and its description -> an MLP.
 *
 * A model is what its description says; nothing is read from tensor names beyond what the
 * description names. The description is the caller's, else the file's "__metadata__" key
 * "streampool.arch", else a config.json beside the file with that key (both in the text form,
 * parsed by sp_model_desc_parse); a file with none is refused with a message saying how to state
 * one. Each layer takes exactly the tensors its description names ("<linear>.weight" rank 2
 * [out, in], "<linear>.bias" [out] unless no_bias, "<norm>.weight" and "<norm>.bias" [out]);
 * layers chain (in of layer k+1 == out of layer k); every tensor of the file must be taken, and
 * one that is not is named as what it looks like (BatchNorm's buffers, a Conv's rank-4 weight, a
 * bias the description says is absent), so a model that is not what its description says is
 * never run. F32, BF16 and F16 tensors are converted on the host to the model dtype (bf16 rounds
 * to nearest even) before the upload. Owns nothing past the call: the parsed file and any parsed
 * description are freed before returning. No locks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/ops.h"
#include "infer/model.h"
#include "infer/model_desc.h"
#include "infer/safetensors.h"

#define LOAD_KEY "streampool.arch"
#define LOAD_HOW                                                                            \
  "state it as \"" LOAD_KEY                                                                 \
  "\": \"0:linear 1:gelu 2:linear\" in the file's __metadata__ "                            \
  "(scripts/torch_export.py writes it) or in a config.json beside it, or pass it (--arch, " \
  "sp_model_load_desc, Model.load(arch=))"

enum { LOAD_CONFIG_MAX = 1 << 20 }; /* bytes of a sidecar config.json accepted */

typedef struct load_ctx {
  const char *path;
  const sp__safetensors *file;
  const sp_model_desc *desc;
  sp__model_layer *spec;   /* [n_layers]                                       */
  const sp__st_tensor **t; /* [4 * n_layers]: weight, bias, norm weight, norm bias */
  unsigned char *used;     /* [n_tensors]: taken by the description             */
} load_ctx;

/* ---- where the description comes from ------------------------------------------------------ */

/* Parses text (from `where`) into *out; a parse failure names the file and the source. */
static sp_status load_parse(const char *path, const char *where, const char *text,
                            sp_model_desc **out) {
  sp_status st = sp_model_desc_parse(text, out);
  if (st == SP_OK || st == SP_ERR_HOST_MEMORY) return st;
  char msg[512];
  snprintf(msg, sizeof(msg), "%s", sp_last_error());
  return sp__fail(st, "sp_model_load: %s: %s \"" LOAD_KEY "\" is not a valid description: %s", path,
                  where, msg);
}

/* The folder of path + "/config.json" into buf. */
static void load_sidecar_path(const char *path, char *buf, size_t size) {
  const char *slash = strrchr(path, '/');
  if (!slash) snprintf(buf, size, "config.json");
  else snprintf(buf, size, "%.*s/config.json", (int)(slash - path), path);
}

/* Reads at most LOAD_CONFIG_MAX bytes of f as JSON into *out (NULL when it is not JSON). */
static sp_status load_read_json(FILE *f, cJSON **out) {
  char *text = sp__malloc(LOAD_CONFIG_MAX + 1);
  if (!text) return sp__fail(SP_ERR_HOST_MEMORY, "sp_model_load: out of host memory");
  size_t n = fread(text, 1, LOAD_CONFIG_MAX, f);
  text[n] = '\0';
  *out = n < LOAD_CONFIG_MAX ? cJSON_ParseWithLength(text, n) : NULL;
  sp__free(text);
  return SP_OK;
}

/* A config.json beside the file: *out stays NULL when there is none. */
static sp_status load_from_sidecar(const char *path, sp_model_desc **out) {
  char cfg[4096];
  load_sidecar_path(path, cfg, sizeof(cfg));
  FILE *f = fopen(cfg, "rb");
  if (!f) return SP_OK;
  cJSON *j = NULL;
  sp_status rd = load_read_json(f, &j);
  fclose(f);
  if (rd != SP_OK) return rd;
  if (!j)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: %s is not a JSON object of at most %d bytes", path, cfg,
                    LOAD_CONFIG_MAX);
  const cJSON *arch = cJSON_GetObjectItemCaseSensitive(j, LOAD_KEY);
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "model_type");
  sp_status st = SP_OK;
  if (cJSON_IsString(arch) && arch->valuestring) st = load_parse(path, cfg, arch->valuestring, out);
  else if (arch)
    st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                  "sp_model_load: %s: %s: \"" LOAD_KEY "\" is not a string", path, cfg);
  else if (cJSON_IsString(type) && type->valuestring)
    st = sp__fail(
        SP_ERR_INVALID_ARGUMENT,
        "sp_model_load: %s: %s describes a '%.64s' model, not an MLP (%s has no \"" LOAD_KEY
        "\"); for an MLP, %s",
        path, cfg, type->valuestring, cfg, LOAD_HOW);
  cJSON_Delete(j);
  return st;
}

/* The refusal of a file that describes nothing: what it holds, and how to say what it is. */
static sp_status load_refuse_bare(const load_ctx *c) {
  char names[256] = "";
  size_t n = 0;
  for (size_t i = 0; i < c->file->n_tensors && i < 3 && n < sizeof(names); i++)
    n += (size_t)snprintf(names + n, sizeof(names) - n, "%s'%s'", i ? ", " : "",
                          c->file->tensors[i].name);
  return sp__fail(SP_ERR_INVALID_ARGUMENT,
                  "sp_model_load: %s: no architecture given: the file is a bare state dict (%zu "
                  "tensors: %s%s), which does not say its activations, norms or layer order, "
                  "and nothing is guessed; %s",
                  c->path, c->file->n_tensors, names, c->file->n_tensors > 3 ? ", ..." : "",
                  LOAD_HOW);
}

/* The description to use: the caller's, the file's metadata, the sidecar; *owned is what to
 * free. */
static sp_status load_resolve(load_ctx *c, const sp_model_desc *given, sp_model_desc **owned) {
  *owned = NULL;
  if (given) {
    c->desc = given;
    return SP_OK;
  }
  bool not_string = false;
  const char *meta = sp__safetensors_meta(c->file, LOAD_KEY, &not_string);
  if (not_string)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: __metadata__ \"" LOAD_KEY "\" is not a string", c->path);
  sp_status st =
      meta ? load_parse(c->path, "__metadata__", meta, owned) : load_from_sidecar(c->path, owned);
  if (st != SP_OK) return st;
  if (!*owned) return load_refuse_bare(c);
  c->desc = *owned;
  return SP_OK;
}

/* ---- matching tensors to the description -------------------------------------------------- */

static void load_shape(const sp__st_tensor *t, char *buf, size_t size) {
  size_t n = (size_t)snprintf(buf, size, "[");
  for (unsigned r = 0; r < t->rank && n < size; r++)
    n += (size_t)snprintf(buf + n, size - n, "%s%llu", r ? ", " : "",
                          (unsigned long long)t->shape[r]);
  if (n < size) snprintf(buf + n, size - n, "]");
}

/* The tensor "<prefix>.<field>" taken for layer k's role, or an error naming it. */
static sp_status load_take(load_ctx *c, unsigned k, const char *role, const char *prefix,
                           const char *field, unsigned rank, uint64_t rows,
                           const sp__st_tensor **out) {
  char name[SP__ST_NAME_MAX + 16];
  snprintf(name, sizeof(name), "%s.%s", prefix, field);
  const sp__st_tensor *t = sp__safetensors_find(c->file, name);
  if (!t)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer %u: the description's %s '%s' needs tensor '%s', "
                    "which the file does not have",
                    c->path, k, role, prefix, name);
  char shape[96];
  load_shape(t, shape, sizeof(shape));
  if (t->rank >= 3 && rank == 2)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer %u: tensor '%s' %s is rank %u, a convolution's "
                    "weight, not a Linear's: Conv layers are not supported (Linear, LayerNorm and "
                    "activations are)",
                    c->path, k, name, shape, t->rank);
  if (t->rank != rank || t->numel == 0 || (rows && t->shape[0] != rows) ||
      t->shape[0] > (1u << 24) || (rank == 2 && t->shape[1] > (1u << 24)))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer %u: %s tensor '%s' is %s, expected rank %u%s%s "
                    "(sizes 1..%u)",
                    c->path, k, role, name, shape, rank, rows ? " with " : "",
                    rows ? (rank == 2 ? "the outputs first" : "one value per output") : "",
                    1u << 24);
  c->used[t - c->file->tensors] = 1;
  *out = t;
  return SP_OK;
}

static sp_status load_check_names(const load_ctx *c, unsigned k, const sp_mlp_layer *l) {
  size_t max = SP__ST_NAME_MAX - 7;
  if (!l->linear || !l->linear[0] || strlen(l->linear) > max ||
      (l->norm && (!l->norm[0] || strlen(l->norm) > max)))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer %u of the description: a tensor prefix is NULL, "
                    "empty or longer than %zu bytes",
                    c->path, k, max);
  if (!sp__activation_name(l->act))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer %u of the description: activation %d is not an "
                    "sp_activation",
                    c->path, k, (int)l->act);
  if (l->norm && !(l->norm_eps >= 0.0f && l->norm_eps < 1.0f))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: layer %u: LayerNorm eps %g is outside [0, 1) (0: 1e-5)",
                    c->path, k, (double)l->norm_eps);
  return SP_OK;
}

static sp_status load_layer(load_ctx *c, unsigned k) {
  const sp_mlp_layer *l = &c->desc->layers[k];
  sp_status st = load_check_names(c, k, l);
  const sp__st_tensor **t = &c->t[4 * k];
  if (st == SP_OK) st = load_take(c, k, "Linear", l->linear, "weight", 2, 0, &t[0]);
  if (st != SP_OK) return st;
  uint64_t out = t[0]->shape[0], in = t[0]->shape[1];
  if (k > 0 && c->spec[k - 1].out != in)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: dims do not chain: layer %u ('%s') gives %u features, "
                    "layer %u ('%s.weight' [%llu, %llu]) takes %llu",
                    c->path, k - 1, c->desc->layers[k - 1].linear, c->spec[k - 1].out, k, l->linear,
                    (unsigned long long)out, (unsigned long long)in, (unsigned long long)in);
  if (!l->no_bias) st = load_take(c, k, "Linear", l->linear, "bias", 1, out, &t[1]);
  if (st == SP_OK && l->norm) st = load_take(c, k, "LayerNorm", l->norm, "weight", 1, out, &t[2]);
  if (st == SP_OK && l->norm) st = load_take(c, k, "LayerNorm", l->norm, "bias", 1, out, &t[3]);
  if (st != SP_OK) return st;
  c->spec[k] = (sp__model_layer){.in = (unsigned)in,
                                 .out = (unsigned)out,
                                 .act = sp__activation_act(l->act),
                                 .bias = !l->no_bias,
                                 .norm = l->norm != NULL,
                                 .eps = l->norm_eps > 0.0f ? l->norm_eps : 1e-5f};
  return SP_OK;
}

static bool load_ends(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* What an unused tensor looks like, for the message. */
static const char *load_what(const load_ctx *c, const sp__st_tensor *t) {
  if (load_ends(t->name, ".running_mean") || load_ends(t->name, ".running_var") ||
      load_ends(t->name, ".num_batches_tracked"))
    return "a BatchNorm buffer: BatchNorm layers are not supported (Linear, LayerNorm and "
           "activations are)";
  if (t->rank >= 3)
    return "a convolution's weight: Conv layers are not supported (Linear, LayerNorm and "
           "activations are)";
  if (load_ends(t->name, "in_proj_weight") || load_ends(t->name, "in_proj_bias"))
    return "a MultiheadAttention's: attention layers are not supported in an MLP";
  for (unsigned k = 0; k < c->desc->n_layers; k++) {
    const sp_mlp_layer *l = &c->desc->layers[k];
    size_t n = strlen(l->linear);
    if (l->no_bias && !strncmp(t->name, l->linear, n) && !strcmp(t->name + n, ".bias"))
      return "the bias of a Linear the description says has none (drop its :nobias)";
  }
  char w[SP__ST_NAME_MAX + 16];
  size_t n = strlen(t->name);
  if (load_ends(t->name, ".bias")) snprintf(w, sizeof(w), "%.*s.weight", (int)(n - 5), t->name);
  const sp__st_tensor *sib = load_ends(t->name, ".bias") ? sp__safetensors_find(c->file, w) : NULL;
  if (t->rank == 1 && sib && sib->rank == 2)
    return "the bias of a Linear the description does not name";
  if (t->rank == 2 && load_ends(t->name, ".weight"))
    return "the weight of a Linear (or Embedding) the description does not name";
  if (t->rank == 1 && (load_ends(t->name, ".weight") || load_ends(t->name, ".bias")))
    return "a layer the description does not name (a LayerNorm? name it NAME:layernorm)";
  return "not a parameter of any layer the description names";
}

static sp_status load_check_unused(const load_ctx *c) {
  for (size_t i = 0; i < c->file->n_tensors; i++) {
    if (c->used[i]) continue;
    const sp__st_tensor *t = &c->file->tensors[i];
    char shape[96];
    load_shape(t, shape, sizeof(shape));
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: %s: tensor '%s' %s is not used by the description: it is %s; "
                    "every tensor must be used, so a model is never run as something it is not",
                    c->path, t->name, shape, load_what(c, t));
  }
  return SP_OK;
}

/* ---- building ------------------------------------------------------------------------------ */

static sp_status load_fill(void *user, unsigned layer, sp_dtype dt, void *w, void *b, void *g,
                           void *beta) {
  const load_ctx *c = user;
  const sp__st_tensor *const *t = &c->t[4 * layer];
  void *dst[4] = {w, b, g, beta};
  for (unsigned i = 0; i < 4; i++) {
    sp_assert((t[i] == NULL) == (dst[i] == NULL));
    if (t[i]) sp__st_convert(t[i], dt, dst[i]);
  }
  return SP_OK;
}

static sp_status load_match(load_ctx *c) {
  unsigned n = c->desc->n_layers;
  c->spec = sp__calloc(n, sizeof(*c->spec));
  c->t = sp__calloc(4 * (size_t)n, sizeof(*c->t));
  c->used = sp__calloc(c->file->n_tensors + 1, 1);
  if (!c->spec || !c->t || !c->used)
    return sp__fail(SP_ERR_HOST_MEMORY, "sp_model_load: out of host memory");
  for (unsigned k = 0; k < n; k++) {
    sp_status st = load_layer(c, k);
    if (st != SP_OK) return st;
  }
  return load_check_unused(c);
}

static sp_status model_load(sp_device *dev, const char *path, const sp_model_desc *desc,
                            sp_dtype dt, sp_model **out) {
  sp_status st = sp__device_enter(dev, "sp_model_load");
  if (st != SP_OK) return st;
  if (!path || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_model_load: path or out is NULL");
  if ((st = sp__dtype_check(dt, "sp_model_load")) != SP_OK) return st;
  if (desc && (desc->n_layers == 0 || desc->n_layers > 4096 || !desc->layers))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_model_load: the description has %u layers (1..4096) or no layer array",
                    desc->n_layers);
  sp__safetensors *file = NULL;
  st = sp__safetensors_read(path, &file);
  if (st != SP_OK) return st;
  load_ctx c = {.path = path, .file = file};
  sp_model_desc *owned = NULL;
  st = load_resolve(&c, desc, &owned);
  if (st == SP_OK) st = load_match(&c);
  if (st == SP_OK)
    st = sp__model_build(dev, c.spec, c.desc->n_layers, dt, load_fill, &c, "sp_model_load", out);
  sp__free(c.spec);
  sp__free(c.t);
  sp__free(c.used);
  sp_model_desc_free(owned);
  sp__safetensors_free(file);
  return st;
}

/* Both run with cancellation disabled: reading the file and the upload are cancellation points. */
sp_status sp_model_load_desc(sp_device *dev, const char *safetensors_path,
                             const sp_model_desc *desc, sp_dtype dt, sp_model **out) {
  int cancel = sp__cancel_off();
  sp_status st = model_load(dev, safetensors_path, desc, dt, out);
  sp__cancel_restore(cancel);
  return st;
}

sp_status sp_model_load(sp_device *dev, const char *safetensors_path, sp_dtype dt, sp_model **out) {
  return sp_model_load_desc(dev, safetensors_path, NULL, dt, out);
}
