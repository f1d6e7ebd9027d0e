/* Loading a BERT encoder from a Hugging Face folder: config.json, sentence-transformers' modules,
 * the tokenizer, model.safetensors -> an sp_encoder with its weights on the device.
 *
 * Owns: sp_encoder objects from creation to sp_encoder_free (tokenizer, weight block, layer table,
 * plan table) and dev->models, counted up once the object exists and down in sp_encoder_free on
 * every path. Nothing is guessed: every field it reads is checked, anything it does not implement
 * is refused with SP_ERR_INVALID_ARGUMENT naming the file and the field, before any device memory
 * is taken. Weights go through one host staging buffer in the encoder's dtype (converted from the
 * file's F32/BF16/F16 here, Q|K|V fused per layer) and one upload on the default stream, which is
 * synced before the staging is freed.
 * Locking: none; a loading encoder is private to the loading thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "alloc/alloc.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "infer/encoder.h"
#include "infer/safetensors.h"

static const char FN[] = "sp_encoder_load";

enum {
  ENC_JSON_MAX = 16 << 20, /* the largest config file read                           */
  ENC_DIM_MAX = 1 << 16,   /* hidden, intermediate, heads, layers, positions: sanity */
  ENC_VOCAB_MAX = 1 << 22, /* vocabulary rows                                         */
  ENC_PATH_MAX = 4096,
};

/* ---- files ------------------------------------------------------------------------------- */

/* dir/name into buf; SP_ERR_INVALID_ARGUMENT when too long. */
static sp_status enc_path(const char *dir, const char *name, char *buf) {
  int n = snprintf(buf, ENC_PATH_MAX, "%s/%s", dir, name);
  if (n < 0 || n >= ENC_PATH_MAX)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: path %s/%s is too long", FN, dir, name);
  return SP_OK;
}

/* Reads and parses the JSON file dir/name. A missing file: *out NULL and SP_OK when optional,
 * else SP_ERR_INVALID_ARGUMENT. A FIFO or directory is refused (opened without blocking). */
static sp_status enc_read_json(const char *dir, const char *name, bool optional, cJSON **out) {
  char path[ENC_PATH_MAX];
  *out = NULL;
  sp_status st = enc_path(dir, name, path);
  if (st != SP_OK) return st;
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT && optional) return SP_OK;
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: cannot open: %s", FN, path, strerror(errno));
  }
  struct stat sb;
  char *buf = NULL;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > ENC_JSON_MAX) {
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: not a regular file of at most %d bytes", FN,
                  path, ENC_JSON_MAX);
    goto close_file;
  }
  size_t size = (size_t)sb.st_size, got = 0;
  buf = sp__malloc(size + 1);
  if (!buf) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "%s: %s: out of host memory", FN, path);
    goto close_file;
  }
  while (got < size) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: short read", FN, path);
      goto free_buf;
    }
    got += (size_t)r;
  }
  *out = cJSON_ParseWithLength(buf, size);
  if (!*out) st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: not valid JSON", FN, path);
free_buf:
  sp__free(buf);
close_file:
  close(fd);
  return st;
}

/* ---- config.json and sentence-transformers' modules ---------------------------------------- */

/* The integer field key of j in 1..max. */
static sp_status enc_uint(const cJSON *j, const char *file, const char *key, unsigned max,
                          unsigned *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1) || v->valuedouble > max ||
      floor(v->valuedouble) != v->valuedouble)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: \"%s\" is %s, not an integer in 1..%u", FN,
                    file, key,
                    !v                  ? "missing"
                    : cJSON_IsNumber(v) ? "out of range"
                                        : "not a number",
                    max);
  *out = (unsigned)v->valuedouble;
  return SP_OK;
}

/* The string field key of j, NULL when absent; SP_ERR_INVALID_ARGUMENT when not a string. */
static sp_status enc_str(const cJSON *j, const char *file, const char *key, const char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  *out = NULL;
  if (!v || cJSON_IsNull(v)) return SP_OK;
  if (!cJSON_IsString(v) || !v->valuestring)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: \"%s\" is not a string", FN, file, key);
  *out = v->valuestring;
  return SP_OK;
}

static sp_status enc_config_strings(sp_encoder *e, const cJSON *c, const char *f) {
  const char *type = NULL, *act = NULL, *pos = NULL;
  sp_status st = enc_str(c, f, "model_type", &type);
  if (st == SP_OK) st = enc_str(c, f, "hidden_act", &act);
  if (st == SP_OK) st = enc_str(c, f, "position_embedding_type", &pos);
  if (st != SP_OK) return st;
  if (!type || strcmp(type, "bert"))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s: \"model_type\" is %s%s%s; only \"bert\" is "
                    "implemented",
                    FN, f, type ? "\"" : "missing", type ? type : "", type ? "\"" : "");
  if (!act || !strcmp(act, "gelu")) e->act = SP__ACT_GELU_ERF;
  else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"))
    e->act = SP__ACT_GELU_TANH;
  else
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s: \"hidden_act\" \"%s\" is not implemented "
                    "(gelu, gelu_new)",
                    FN, f, act);
  if (pos && strcmp(pos, "absolute"))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s: \"position_embedding_type\" \"%s\" is not "
                    "implemented (absolute)",
                    FN, f, pos);
  return SP_OK;
}

static sp_status enc_config(sp_encoder *e, const char *dir) {
  cJSON *c = NULL;
  sp_status st = enc_read_json(dir, "config.json", false, &c);
  if (st != SP_OK) return st;
  const char *f = "config.json";
  sp_encoder_info *in = &e->info;
  st = enc_config_strings(e, c, f);
  if (st == SP_OK) st = enc_uint(c, f, "hidden_size", ENC_DIM_MAX, &in->hidden);
  if (st == SP_OK) st = enc_uint(c, f, "num_hidden_layers", 1024, &in->layers);
  if (st == SP_OK) st = enc_uint(c, f, "num_attention_heads", 1024, &in->heads);
  if (st == SP_OK) st = enc_uint(c, f, "intermediate_size", ENC_DIM_MAX, &in->intermediate);
  if (st == SP_OK) st = enc_uint(c, f, "max_position_embeddings", ENC_DIM_MAX, &e->max_pos);
  if (st == SP_OK) st = enc_uint(c, f, "vocab_size", ENC_VOCAB_MAX, &in->vocab);
  if (st == SP_OK) {
    e->types = 2; /* BertConfig's default */
    if (cJSON_GetObjectItemCaseSensitive(c, "type_vocab_size"))
      st = enc_uint(c, f, "type_vocab_size", 1024, &e->types);
  }
  const cJSON *eps = cJSON_GetObjectItemCaseSensitive(c, "layer_norm_eps");
  e->eps = 1e-12f;
  if (st == SP_OK && eps) {
    if (!cJSON_IsNumber(eps) || !(eps->valuedouble >= 0) || eps->valuedouble > 1)
      st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s: \"layer_norm_eps\" is not a number in "
                    "[0, 1]",
                    FN, f);
    else e->eps = (float)eps->valuedouble;
  }
  if (st == SP_OK && in->hidden % in->heads)
    st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                  "%s: %s: \"hidden_size\" %u is not a multiple of "
                  "\"num_attention_heads\" %u",
                  FN, f, in->hidden, in->heads);
  in->max_seq = e->max_pos;
  cJSON_Delete(c);
  return st;
}

/* 1_Pooling/config.json (or the folder modules.json names): mean or CLS, nothing else. */
static sp_status enc_pooling(sp_encoder *e, const char *dir, const char *sub) {
  char name[ENC_PATH_MAX];
  int n = snprintf(name, sizeof(name), "%s/config.json", sub);
  if (n < 0 || n >= (int)sizeof(name))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: pooling path %s is too long", FN, sub);
  cJSON *c = NULL;
  sp_status st = enc_read_json(dir, name, false, &c);
  if (st != SP_OK) return st;
  static const char *const other[] = {"pooling_mode_max_tokens",
                                      "pooling_mode_mean_sqrt_len_tokens",
                                      "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"};
  for (size_t i = 0; i < sizeof(other) / sizeof(other[0]) && st == SP_OK; i++)
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, other[i])))
      st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s: \"%s\" is not implemented (mean or CLS "
                    "pooling only)",
                    FN, name, other[i]);
  bool cls = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "pooling_mode_cls_token"));
  bool mean = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "pooling_mode_mean_tokens"));
  if (st == SP_OK && cls == mean)
    st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                  "%s: %s: exactly one of \"pooling_mode_cls_token\" and "
                  "\"pooling_mode_mean_tokens\" must be true",
                  FN, name);
  const cJSON *dim = cJSON_GetObjectItemCaseSensitive(c, "word_embedding_dimension");
  if (st == SP_OK && dim && (!cJSON_IsNumber(dim) || dim->valuedouble != e->info.hidden))
    st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                  "%s: %s: \"word_embedding_dimension\" disagrees with "
                  "config.json's hidden_size %u",
                  FN, name, e->info.hidden);
  e->info.pooling_cls = cls;
  cJSON_Delete(c);
  return st;
}

/* modules.json: Transformer, then Pooling, then optionally Normalize; any other module refused. */
static sp_status enc_modules(sp_encoder *e, const char *dir) {
  cJSON *m = NULL;
  sp_status st = enc_read_json(dir, "modules.json", true, &m);
  if (st != SP_OK) return st;
  if (!m) { /* no sentence-transformers modules: mean pooling when 1_Pooling is there */
    char path[ENC_PATH_MAX];
    st = enc_path(dir, "1_Pooling/config.json", path);
    if (st == SP_OK && access(path, F_OK) == 0) st = enc_pooling(e, dir, "1_Pooling");
    return st;
  }
  bool pooled = false;
  if (!cJSON_IsArray(m)) st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: modules.json: not a list", FN);
  for (const cJSON *it = m->child; it && st == SP_OK && cJSON_IsArray(m); it = it->next) {
    const char *type = NULL, *path = NULL;
    st = enc_str(it, "modules.json", "type", &type);
    if (st == SP_OK) st = enc_str(it, "modules.json", "path", &path);
    if (st != SP_OK) break;
    if (!type) {
      st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: modules.json: a module without \"type\"", FN);
    } else if (!strcmp(type, "sentence_transformers.models.Transformer")) {
      if (path && path[0])
        st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "%s: modules.json: the Transformer module's path "
                      "\"%s\" is not the folder itself",
                      FN, path);
    } else if (!strcmp(type, "sentence_transformers.models.Pooling")) {
      st = enc_pooling(e, dir, path && path[0] ? path : ".");
      pooled = true;
    } else if (!strcmp(type, "sentence_transformers.models.Normalize")) {
      e->info.normalize = 1;
    } else {
      st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: modules.json: module type \"%s\" is not "
                    "implemented (Transformer, Pooling, Normalize)",
                    FN, type);
    }
  }
  if (st == SP_OK && !pooled)
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: modules.json: no Pooling module", FN);
  cJSON_Delete(m);
  return st;
}

static sp_status enc_max_seq(sp_encoder *e, const char *dir) {
  cJSON *c = NULL;
  sp_status st = enc_read_json(dir, "sentence_bert_config.json", true, &c);
  if (st == SP_OK && c && cJSON_GetObjectItemCaseSensitive(c, "max_seq_length"))
    st = enc_uint(c, "sentence_bert_config.json", "max_seq_length", e->max_pos, &e->info.max_seq);
  if (st == SP_OK && e->info.max_seq < 2)
    st = sp__fail(SP_ERR_INVALID_ARGUMENT,
                  "%s: %s: max_seq_length %u: at least 2 tokens are "
                  "needed ([CLS] and [SEP])",
                  FN, c ? "sentence_bert_config.json" : "config.json", e->info.max_seq);
  cJSON_Delete(c);
  return st;
}

static sp_status enc_tokenizer(sp_encoder *e, const char *dir) {
  sp_status st = sp_tokenizer_load(dir, &e->tok);
  if (st != SP_OK) {
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", sp_last_error());
    return sp__fail(st, "%s: %s: tokenizer (tokenizer.json or vocab.txt): %s", FN, dir, msg);
  }
  size_t v = sp_tokenizer_vocab_size(e->tok);
  if (v > e->info.vocab)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s: the tokenizer has %zu tokens, config.json's "
                    "vocab_size is %u",
                    FN, dir, v, e->info.vocab);
  return SP_OK;
}

/* ---- tensors ----------------------------------------------------------------------------- */

/* Where one tensor of the file goes in the weight block. */
typedef struct enc_slot {
  const sp__st_tensor *t[3]; /* the file's tensors, concatenated by rows (3: fused q|k|v) */
  size_t off;                /* bytes into the block                                  */
  size_t numel;              /* elements in the block                                 */
  const void **dst;          /* the encoder's device pointer to set                   */
} enc_slot;

typedef struct enc_build {
  const char *file; /* model.safetensors' path, for messages */
  const sp__safetensors *st;
  const char *prefix; /* "" or "bert." */
  enc_slot *slots;
  size_t n_slots, bytes; /* bytes: the block */
} enc_build;

/* The tensor prefix+name with the given shape (rank 1 or 2; cols 0: rank 1). */
static sp_status enc_tensor(const enc_build *b, const char *name, uint64_t rows, uint64_t cols,
                            const sp__st_tensor **out) {
  char full[SP__ST_NAME_MAX + 16];
  snprintf(full, sizeof(full), "%s%s", b->prefix, name);
  const sp__st_tensor *t = sp__safetensors_find(b->st, full);
  if (!t)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: tensor '%s' is missing", FN, b->file, full);
  unsigned rank = cols ? 2 : 1;
  if (t->dtype != SP__ST_F32 && t->dtype != SP__ST_BF16 && t->dtype != SP__ST_F16)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: tensor '%s' is not F32, BF16 or F16", FN,
                    b->file, full);
  if (t->rank != rank || t->shape[0] != rows || (cols && t->shape[1] != cols))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: %s: tensor '%s' has shape [%llu%s%llu], "
                    "config.json says [%llu%s%llu]",
                    FN, b->file, full, (unsigned long long)(t->rank ? t->shape[0] : 0),
                    t->rank > 1 ? ", " : "", t->rank > 1 ? (unsigned long long)t->shape[1] : 0ull,
                    (unsigned long long)rows, cols ? ", " : "",
                    cols ? (unsigned long long)cols : 0ull);
  *out = t;
  return SP_OK;
}

/* Adds a slot of 1 or 3 tensors (names[i] each rows x cols) for *dst. */
static sp_status enc_add(enc_build *b, const char *const *names, unsigned k, uint64_t rows,
                         uint64_t cols, sp_dtype dt, const void **dst) {
  enc_slot *s = &b->slots[b->n_slots];
  *s = (enc_slot){.off = b->bytes, .dst = dst};
  for (unsigned i = 0; i < k; i++) {
    sp_status st = enc_tensor(b, names[i], rows, cols, &s->t[i]);
    if (st != SP_OK) return st;
    s->numel += s->t[i]->numel;
  }
  b->bytes += sp__device_part_round(s->numel * sp__dtype_size(dt));
  b->n_slots++;
  return SP_OK;
}

static sp_status enc_add1(enc_build *b, const char *name, uint64_t rows, uint64_t cols, sp_dtype dt,
                          const void **dst) {
  return enc_add(b, &name, 1, rows, cols, dt, dst);
}

static sp_status enc_add_layer(enc_build *b, sp_encoder *e, unsigned i) {
  const uint64_t h = e->info.hidden, in = e->info.intermediate;
  sp__enc_layer *l = &e->layers[i];
  char n[12][96];
  static const char *const sfx[12] = {
      "attention.self.query.weight",       "attention.self.key.weight",
      "attention.self.value.weight",       "attention.self.query.bias",
      "attention.self.key.bias",           "attention.self.value.bias",
      "attention.output.dense.weight",     "attention.output.dense.bias",
      "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
      "intermediate.dense.weight",         "intermediate.dense.bias"};
  for (unsigned k = 0; k < 12; k++) snprintf(n[k], sizeof(n[k]), "encoder.layer.%u.%s", i, sfx[k]);
  const char *const qkv_w[3] = {n[0], n[1], n[2]}, *const qkv_b[3] = {n[3], n[4], n[5]};
  sp_dtype dt = e->dtype;
  sp_status st = enc_add(b, qkv_w, 3, h, h, dt, &l->wqkv);
  if (st == SP_OK) st = enc_add(b, qkv_b, 3, h, 0, dt, &l->bqkv);
  if (st == SP_OK) st = enc_add1(b, n[6], h, h, dt, &l->wo);
  if (st == SP_OK) st = enc_add1(b, n[7], h, 0, dt, &l->bo);
  if (st == SP_OK) st = enc_add1(b, n[8], h, 0, dt, &l->ln1_g);
  if (st == SP_OK) st = enc_add1(b, n[9], h, 0, dt, &l->ln1_b);
  if (st == SP_OK) st = enc_add1(b, n[10], in, h, dt, &l->w1);
  if (st == SP_OK) st = enc_add1(b, n[11], in, 0, dt, &l->b1);
  char o[4][96];
  static const char *const osfx[4] = {"output.dense.weight", "output.dense.bias",
                                      "output.LayerNorm.weight", "output.LayerNorm.bias"};
  for (unsigned k = 0; k < 4; k++) snprintf(o[k], sizeof(o[k]), "encoder.layer.%u.%s", i, osfx[k]);
  if (st == SP_OK) st = enc_add1(b, o[0], h, in, dt, &l->w2);
  if (st == SP_OK) st = enc_add1(b, o[1], h, 0, dt, &l->b2);
  if (st == SP_OK) st = enc_add1(b, o[2], h, 0, dt, &l->ln2_g);
  if (st == SP_OK) st = enc_add1(b, o[3], h, 0, dt, &l->ln2_b);
  return st;
}

/* Every tensor the forward needs, checked against config.json, laid out in the block. */
static sp_status enc_plan_tensors(enc_build *b, sp_encoder *e) {
  const uint64_t h = e->info.hidden;
  b->prefix = sp__safetensors_find(b->st, "bert.embeddings.word_embeddings.weight") ? "bert." : "";
  sp_dtype dt = e->dtype;
  sp_status st = enc_add1(b, "embeddings.word_embeddings.weight", e->info.vocab, h, dt, &e->word);
  if (st == SP_OK)
    st = enc_add1(b, "embeddings.position_embeddings.weight", e->max_pos, h, dt, &e->pos);
  if (st == SP_OK)
    st = enc_add1(b, "embeddings.token_type_embeddings.weight", e->types, h, dt, &e->type);
  if (st == SP_OK) st = enc_add1(b, "embeddings.LayerNorm.weight", h, 0, dt, &e->emb_g);
  if (st == SP_OK) st = enc_add1(b, "embeddings.LayerNorm.bias", h, 0, dt, &e->emb_b);
  for (unsigned i = 0; i < e->info.layers && st == SP_OK; i++) st = enc_add_layer(b, e, i);
  return st;
}

/* Fills host staging from the file, uploads it into one block on the default stream, syncs. */
static sp_status enc_upload(sp_encoder *e, const enc_build *b) {
  unsigned char *staging = sp__malloc(b->bytes);
  if (!staging)
    return sp__fail(SP_ERR_HOST_MEMORY, "%s: no host memory for %zu bytes of staging", FN,
                    b->bytes);
  for (size_t i = 0; i < b->n_slots; i++) {
    const enc_slot *s = &b->slots[i];
    unsigned char *p = staging + s->off;
    for (unsigned k = 0; k < 3 && s->t[k]; k++) {
      sp__st_convert(s->t[k], e->dtype, p);
      p += s->t[k]->numel * sp__dtype_size(e->dtype);
    }
  }
  sp_stream *s0 = sp_stream_default(e->dev);
  sp_status st = sp_alloc(e->dev, b->bytes, s0, &e->weights);
  if (st == SP_OK) st = sp_memcpy_async(s0, e->weights, staging, b->bytes);
  sp_status sync = sp_stream_sync(s0); /* the staging must outlive the copy */
  sp__free(staging);
  if (st != SP_OK) return st;
  if (sync != SP_OK) return sync;
  for (size_t i = 0; i < b->n_slots; i++)
    *b->slots[i].dst = (const unsigned char *)e->weights + b->slots[i].off;
  return SP_OK;
}

static sp_status enc_weights(sp_encoder *e, const char *dir) {
  char path[ENC_PATH_MAX];
  sp_status st = enc_path(dir, "model.safetensors", path);
  if (st != SP_OK) return st;
  sp__safetensors *file = NULL;
  st = sp__safetensors_read_flags(path, SP__ST_INTEGERS, &file);
  if (st != SP_OK) return st;
  enc_build b = {.file = path, .st = file};
  b.slots = sp__calloc(5 + 12 * (size_t)e->info.layers, sizeof(*b.slots));
  if (!b.slots) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "%s: out of host memory", FN);
    goto free_file;
  }
  st = enc_plan_tensors(&b, e);
  if (st == SP_OK) st = enc_upload(e, &b);
  sp__free(b.slots);
free_file:
  sp__safetensors_free(file);
  return st;
}

/* ---- the encoder -------------------------------------------------------------------------- */

static sp_status enc_load(sp_device *dev, const char *dir, sp_dtype dt, sp_encoder **out) {
  sp_status st = sp__device_enter(dev, FN);
  if (st != SP_OK) return st;
  if (!dir || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: dir or out is NULL", FN);
  st = sp__dtype_check(dt, FN);
  if (st == SP_OK) st = sp__nn_check(dev, dt, FN);
  if (st != SP_OK) return st;
  sp_encoder *e = sp__calloc(1, sizeof(*e));
  if (!e) return sp__fail(SP_ERR_HOST_MEMORY, "%s: out of host memory", FN);
  e->dev = dev;
  e->dtype = dt;
  atomic_fetch_add(&dev->models, 1); /* undone by sp_encoder_free, on every path */
  st = enc_config(e, dir);
  if (st == SP_OK) st = sp__attention_check(dev, e->info.hidden / e->info.heads, FN);
  if (st == SP_OK) st = enc_modules(e, dir);
  if (st == SP_OK) st = enc_max_seq(e, dir);
  if (st == SP_OK) st = enc_tokenizer(e, dir);
  if (st == SP_OK && !(e->layers = sp__calloc(e->info.layers, sizeof(*e->layers))))
    st = sp__fail(SP_ERR_HOST_MEMORY, "%s: out of host memory", FN);
  if (st == SP_OK) st = enc_weights(e, dir);
  if (st == SP_OK) st = sp__graphs_enabled(dev, FN, &e->graphs);
  if (st == SP_OK)
    st = sp__io_plans_create(dev, e->graphs, SP__ENC_PLANS, SP__ENC_PLAN_BYTES_MAX,
                             "sp_encoder_embed", &e->plans);
  if (st != SP_OK) {
    sp_encoder_free(e);
    return st;
  }
  *out = e;
  return SP_OK;
}

/* Runs with cancellation disabled: reading the files and the upload are cancellation points. */
sp_status sp_encoder_load(sp_device *dev, const char *dir, sp_dtype dt, sp_encoder **out) {
  int cancel = sp__cancel_off();
  sp_status st = enc_load(dev, dir, dt, out);
  sp__cancel_restore(cancel);
  return st;
}

void sp_encoder_free(sp_encoder *e) {
  if (!e) return;
  /* In a forked child only forget e: its device's streams are the parent's. */
  if (sp__device_enter(e->dev, "sp_encoder_free") != SP_OK) return;
  int cancel = sp__cancel_off();
  sp__io_plans_destroy(e->plans); /* first: its graphs use the weights */
  if (e->weights) (void)sp_free(e->dev, e->weights);
  sp_tokenizer_free(e->tok);
  sp__free(e->layers);
  atomic_fetch_sub(&e->dev->models, 1);
  sp__free(e);
  sp__cancel_restore(cancel);
}
