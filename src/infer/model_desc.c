/* The text form of a model description (include/streampool.h, sp_model_desc_parse): the one
 * parser for the file's "__metadata__", a config.json beside it, the CLI's --arch and Python's
 * arch=.
 *
 * Owns: the sp_model_desc objects it returns, each one allocation holding the struct, its layers
 * and a copy of the text whose items the layers' names point into (so sp_model_desc_free is one
 * free). The parse is a small state machine over items: a Linear opens a layer; an activation,
 * a LayerNorm and dropout attach to the open layer in that order (activation before LayerNorm,
 * at most one of each), since the engine fuses the activation into the Linear. Invariant of a
 * returned description: n_layers >= 1, every name non-empty and at most DESC_NAME_MAX bytes of
 * [A-Za-z0-9_.-], eps in (0, 1) where a LayerNorm is. No locks: a parse touches its own objects.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "infer/model_desc.h"

enum {
  DESC_TEXT_MAX = 64 * 1024, /* bytes of text accepted            */
  DESC_NAME_MAX = 200,       /* bytes of one tensor-name prefix    */
  DESC_LAYERS_MAX = 4096,    /* Linear layers in one description   */
};

#define DESC_ITEMS                                                                            \
  "items: NAME:linear[:nobias], relu|gelu|gelu_tanh|silu|tanh|none, NAME:layernorm[:eps=E], " \
  "dropout; e.g. \"0:linear 1:gelu 2:layernorm 3:linear\""

typedef enum desc_state { DESC_START, DESC_LINEAR, DESC_ACT, DESC_NORM } desc_state;

typedef struct desc_item { /* one item split at ':' (fields NUL-terminated in the copy) */
  unsigned index;          /* 1-based position, for messages */
  char *name, *kind, *opt; /* name and opt NULL when absent  */
} desc_item;

typedef struct desc_parse {
  sp_model_desc *d;
  sp_mlp_layer *layers; /* d->layers, writable */
  desc_state state;
} desc_parse;

static const char *const desc_act_names[] = {
    [SP_ACT_NONE] = "none",           [SP_ACT_RELU] = "relu", [SP_ACT_GELU] = "gelu",
    [SP_ACT_GELU_TANH] = "gelu_tanh", [SP_ACT_SILU] = "silu", [SP_ACT_TANH] = "tanh"};

const char *sp__activation_name(sp_activation a) {
  return (unsigned)a < sizeof(desc_act_names) / sizeof(desc_act_names[0]) ? desc_act_names[a]
                                                                          : NULL;
}

sp__act sp__activation_act(sp_activation a) {
  static const sp__act map[] = {
      [SP_ACT_NONE] = SP__ACT_NONE,     [SP_ACT_RELU] = SP__ACT_RELU,
      [SP_ACT_GELU] = SP__ACT_GELU_ERF, [SP_ACT_GELU_TANH] = SP__ACT_GELU_TANH,
      [SP_ACT_SILU] = SP__ACT_SILU,     [SP_ACT_TANH] = SP__ACT_TANH};
  sp_assert((unsigned)a < sizeof(map) / sizeof(map[0]));
  return map[a];
}

/* Bytes of the separator at p ("->", a space or a comma), 0 for none. */
static size_t desc_sep_len(const char *p) {
  if (p[0] == '-' && p[1] == '>') return 2;
  return isspace((unsigned char)*p) || *p == ',' ? 1 : 0;
}

static int desc_find_act(const char *kind) {
  for (unsigned a = 0; a < sizeof(desc_act_names) / sizeof(desc_act_names[0]); a++)
    if (!strcmp(kind, desc_act_names[a])) return (int)a;
  return -1;
}

static sp_status desc_check_name(const desc_item *it) {
  size_t n = it->name ? strlen(it->name) : 0;
  if (n == 0 || n > DESC_NAME_MAX)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "model description: item %u '%s': a %s needs a tensor-name prefix of "
                    "1..%d bytes before ':' (e.g. \"0:%s\")",
                    it->index, it->kind, it->kind, DESC_NAME_MAX, it->kind);
  for (size_t i = 0; i < n; i++) {
    char c = it->name[i];
    if (!isalnum((unsigned char)c) && c != '_' && c != '.' && c != '-')
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "model description: item %u: name '%s' has '%c'; names are letters, "
                      "digits, '_', '.' and '-'",
                      it->index, it->name, c);
  }
  return SP_OK;
}

static sp_status desc_linear(desc_parse *p, const desc_item *it) {
  sp_status st = desc_check_name(it);
  if (st != SP_OK) return st;
  if (it->opt && strcmp(it->opt, "nobias"))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "model description: item %u: linear option '%s' is unknown (only "
                    "\"nobias\")",
                    it->index, it->opt);
  if (p->d->n_layers == DESC_LAYERS_MAX)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "model description: more than %d Linear layers",
                    DESC_LAYERS_MAX);
  p->layers[p->d->n_layers++] = (sp_mlp_layer){.linear = it->name, .no_bias = it->opt != NULL};
  p->state = DESC_LINEAR;
  return SP_OK;
}

static sp_status desc_act(desc_parse *p, const desc_item *it, int act) {
  static const char *const after[] = {
      [DESC_START] = "before the first Linear",
      [DESC_ACT] = "right after another activation",
      [DESC_NORM] = "after a LayerNorm (activations run fused into the Linear before it)"};
  if (it->opt)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "model description: item %u: %s takes no option",
                    it->index, it->kind);
  if (p->state != DESC_LINEAR)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "model description: item %u '%s': an activation %s is not supported", it->index,
                    it->kind, after[p->state]);
  p->layers[p->d->n_layers - 1].act = (sp_activation)act;
  p->state = DESC_ACT;
  return SP_OK;
}

static sp_status desc_norm(desc_parse *p, const desc_item *it) {
  sp_status st = desc_check_name(it);
  if (st != SP_OK) return st;
  if (p->state != DESC_LINEAR && p->state != DESC_ACT)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "model description: item %u: a LayerNorm %s is not supported", it->index,
                    p->state == DESC_START ? "before the first Linear" : "right after another");
  float eps = 1e-5f;
  if (it->opt) {
    char *end = NULL;
    eps = strncmp(it->opt, "eps=", 4) ? NAN : strtof(it->opt + 4, &end);
    if (!end || end == it->opt + 4 || *end || !(eps > 0.0f && eps < 1.0f))
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "model description: item %u: layernorm option '%s' is not \"eps=E\" with "
                      "E in (0, 1)",
                      it->index, it->opt);
  }
  sp_mlp_layer *l = &p->layers[p->d->n_layers - 1];
  l->norm = it->name;
  l->norm_eps = eps;
  p->state = DESC_NORM;
  return SP_OK;
}

static sp_status desc_item_apply(desc_parse *p, const desc_item *it) {
  if (!strcmp(it->kind, "linear")) return desc_linear(p, it);
  if (!strcmp(it->kind, "layernorm")) return desc_norm(p, it);
  int act = desc_find_act(it->kind);
  if (act >= 0) return desc_act(p, it, act);
  if (!strcmp(it->kind, "dropout")) {
    if (p->state == DESC_START || it->opt)
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "model description: item %u: dropout must follow a Linear and takes no "
                      "option",
                      it->index);
    return SP_OK;
  }
  return sp__fail(SP_ERR_INVALID_ARGUMENT, "model description: item %u: '%s' is unknown (%s)",
                  it->index, it->kind, DESC_ITEMS);
}

/* Splits the NUL-terminated item s at ':' into name, kind, opt. */
static sp_status desc_split(char *s, unsigned index, desc_item *it) {
  char *f[4] = {s, NULL, NULL, NULL};
  unsigned n = 1;
  for (char *c = s; *c; c++)
    if (*c == ':') {
      if (n == 3)
        return sp__fail(SP_ERR_INVALID_ARGUMENT,
                        "model description: item %u: more than three ':' fields", index);
      *c = '\0';
      f[n++] = c + 1;
    }
  *it = (desc_item){.index = index};
  if (n == 1) it->kind = f[0];
  else {
    it->name = f[0];
    it->kind = f[1];
    it->opt = n == 3 ? f[2] : NULL;
  }
  return SP_OK;
}

/* Counts items (an upper bound of the layers) in text. */
static size_t desc_count(const char *t) {
  size_t n = 0;
  for (;;) {
    for (size_t k; (k = desc_sep_len(t)) > 0;) t += k;
    if (!*t) break;
    n++;
    while (*t && !desc_sep_len(t)) t++;
  }
  return n;
}

static sp_status desc_run(desc_parse *p, char *t) {
  unsigned index = 0;
  for (;;) {
    for (size_t k; (k = desc_sep_len(t)) > 0;) t += k;
    if (!*t) break;
    char *item = t;
    while (*t && !desc_sep_len(t)) t++;
    size_t k = desc_sep_len(t);
    if (k) *t = '\0';
    t += k;
    desc_item it = {0};
    sp_status st = desc_split(item, ++index, &it);
    if (st == SP_OK) st = desc_item_apply(p, &it);
    if (st != SP_OK) return st;
  }
  if (p->d->n_layers == 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "model description: no Linear layer (%s)", DESC_ITEMS);
  return SP_OK;
}

sp_status sp_model_desc_parse(const char *text, sp_model_desc **out) {
  if (!text || !out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_model_desc_parse: text or out is NULL");
  size_t len = strnlen(text, DESC_TEXT_MAX + 1);
  if (len > DESC_TEXT_MAX)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "model description: longer than %d bytes",
                    DESC_TEXT_MAX);
  size_t n = desc_count(text);
  size_t head = sizeof(sp_model_desc) + (n + 1) * sizeof(sp_mlp_layer);
  unsigned char *blk = sp__calloc(1, head + len + 1);
  if (!blk) return sp__fail(SP_ERR_HOST_MEMORY, "sp_model_desc_parse: out of host memory");
  desc_parse p = {.d = (sp_model_desc *)blk,
                  .layers = (sp_mlp_layer *)(blk + sizeof(sp_model_desc))};
  p.d->layers = p.layers;
  char *copy = (char *)blk + head;
  memcpy(copy, text, len + 1);
  sp_status st = desc_run(&p, copy);
  if (st != SP_OK) {
    sp__free(blk);
    return st;
  }
  *out = p.d;
  return SP_OK;
}

void sp_model_desc_free(sp_model_desc *desc) { sp__free(desc); }
