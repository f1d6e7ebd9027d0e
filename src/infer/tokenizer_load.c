/* Loading a WordPiece tokenizer: vocab.txt, Hugging Face tokenizer.json, or a folder of either.
 *
 * Owns: reading the files and checking that the configuration is one that tokenizer.c implements
 * exactly (BertNormalizer or none, BertPreTokenizer, WordPiece, a [CLS] $A [SEP] post-processor,
 * added tokens that are matched as written). Anything else is refused with SP_ERR_UNSUPPORTED
 * naming the field and value, never approximated. Invariant on success: unk, cls and sep ids are
 * set and below vocab_size. Locking: none; a tokenizer is built by one thread before it is shared.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/status.h"
#include "infer/tokenizer.h"

#define TOK_FILE_MAX (256u << 20) /* bytes: a vocabulary file larger than this is refused */

static sp_status tok_read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: cannot open: %s", path,
                    strerror(errno));
  sp_status st = SP_OK;
  long size = -1;
  if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
  if (size < 0 || (unsigned long)size > TOK_FILE_MAX || fseek(f, 0, SEEK_SET) != 0) {
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: cannot size the file, or over %u bytes",
                  path, TOK_FILE_MAX);
    goto close_file;
  }
  *buf = sp__malloc((size_t)size + 1);
  if (!*buf) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "tokenizer %s: no host memory for %ld bytes", path, size);
    goto close_file;
  }
  if (fread(*buf, 1, (size_t)size, f) != (size_t)size) {
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: short read", path);
    sp__free(*buf);
    goto close_file;
  }
  (*buf)[size] = '\0';
  *len = (size_t)size;
close_file:
  fclose(f);
  return st;
}

/* unk/cls/sep by name, all required. */
static sp_status tok_require(sp_tokenizer *t, const char *origin, const char *unk) {
  t->unk_id = sp__tokenizer_find(t, 0, unk, strlen(unk));
  if (t->unk_id < 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "tokenizer %s: the unknown token '%s' is not in the "
                    "vocabulary",
                    origin, unk);
  if (t->cls_id < 0 || t->sep_id < 0 || (size_t)t->cls_id >= t->vocab_size ||
      (size_t)t->sep_id >= t->vocab_size)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "tokenizer %s: [CLS] and [SEP] ids missing or "
                    "outside the vocabulary",
                    origin);
  return SP_OK;
}

/* vocab.txt: token of line i has id i, trailing whitespace trimmed (as HF's reader). */
static sp_status tok_parse_vocab_txt(sp_tokenizer *t, const char *buf, size_t len,
                                     const char *origin) {
  int32_t id = 0;
  for (size_t i = 0; i < len; id++) {
    if (id == INT32_MAX)
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: too many lines", origin);
    const char *nl = memchr(buf + i, '\n', len - i);
    size_t end = nl ? (size_t)(nl - buf) : len, e = end;
    while (e > i && strchr(" \t\r\v\f", buf[e - 1]) && buf[e - 1]) e--;
    sp_status s = sp__tokenizer_add(t, buf + i, e - i, id);
    if (s != SP_OK) return s;
    i = end + 1;
  }
  if (!t->vocab_size)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: empty vocabulary", origin);
  static const char *const special[] = {"[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]"};
  for (size_t k = 0; k < sizeof(special) / sizeof(special[0]); k++) {
    int32_t sid = sp__tokenizer_find(t, 0, special[k], strlen(special[k]));
    if (sid < 0) continue;
    sp_status s = sp__tokenizer_add_special(t, special[k], sid);
    if (s != SP_OK) return s;
  }
  t->cls_id = sp__tokenizer_find(t, 0, "[CLS]", 5);
  t->sep_id = sp__tokenizer_find(t, 0, "[SEP]", 5);
  return tok_require(t, origin, "[UNK]");
}

/* ---- tokenizer.json -------------------------------------------------------------------------- */

static const char *tok_type(const cJSON *obj) {
  const cJSON *ty = cJSON_GetObjectItemCaseSensitive(obj, "type");
  return cJSON_IsString(ty) ? ty->valuestring : "(no type)";
}

static int tok_json_id(const cJSON *j, int32_t *out) {
  if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0) || j->valuedouble >= 2147483647.0 ||
      (double)(int32_t)j->valuedouble != j->valuedouble)
    return 0;
  *out = (int32_t)j->valuedouble;
  return 1;
}

static sp_status tok_json_flag(const cJSON *norm, const char *key, int null_value, int *out,
                               const char *origin) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(norm, key);
  if (!j || cJSON_IsNull(j)) *out = null_value;
  else if (cJSON_IsBool(j)) *out = cJSON_IsTrue(j);
  else
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: normalizer.%s is not a boolean", origin,
                    key);
  return SP_OK;
}

static sp_status tok_json_normalizer(sp_tokenizer *t, const cJSON *root, const char *origin) {
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
  if (!n || cJSON_IsNull(n)) {
    t->clean_text = t->handle_chinese_chars = t->strip_accents = t->lowercase = 0;
    return SP_OK;
  }
  if (strcmp(tok_type(n), "BertNormalizer"))
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "tokenizer %s: normalizer type '%.64s' is not implemented "
                    "(BertNormalizer or null)",
                    origin, tok_type(n));
  sp_status s = tok_json_flag(n, "clean_text", 1, &t->clean_text, origin);
  if (s == SP_OK) s = tok_json_flag(n, "handle_chinese_chars", 1, &t->handle_chinese_chars, origin);
  if (s == SP_OK) s = tok_json_flag(n, "lowercase", 1, &t->lowercase, origin);
  /* strip_accents null means "as lowercase" (BertNormalizer). */
  if (s == SP_OK) s = tok_json_flag(n, "strip_accents", t->lowercase, &t->strip_accents, origin);
  return s;
}

static sp_status tok_json_pieces(const cJSON *root, const char *origin) {
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
  if (!p || strcmp(tok_type(p), "BertPreTokenizer"))
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "tokenizer %s: pre_tokenizer '%.64s' is not implemented "
                    "(BertPreTokenizer)",
                    origin, p ? tok_type(p) : "null");
  return SP_OK;
}

static sp_status tok_json_model(sp_tokenizer *t, const cJSON *root, const char *origin,
                                const char **unk) {
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
  if (!cJSON_IsObject(m) || strcmp(tok_type(m), "WordPiece"))
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "tokenizer %s: model '%.64s' is not implemented (WordPiece)", origin,
                    m ? tok_type(m) : "null");
  const cJSON *u = cJSON_GetObjectItemCaseSensitive(m, "unk_token");
  const cJSON *pre = cJSON_GetObjectItemCaseSensitive(m, "continuing_subword_prefix");
  const cJSON *mx = cJSON_GetObjectItemCaseSensitive(m, "max_input_chars_per_word");
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "vocab");
  int32_t maxc;
  if (!cJSON_IsString(u) || !cJSON_IsString(pre) || strlen(pre->valuestring) >= sizeof(t->prefix) ||
      !tok_json_id(mx, &maxc) || !cJSON_IsObject(v))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "tokenizer %s: model needs unk_token, "
                    "continuing_subword_prefix (< 16 bytes), max_input_chars_per_word and vocab",
                    origin);
  *unk = u->valuestring;
  t->prefix_len = strlen(pre->valuestring);
  memcpy(t->prefix, pre->valuestring, t->prefix_len + 1);
  t->max_chars_per_word = (size_t)maxc;
  for (const cJSON *e = v->child; e; e = e->next) {
    int32_t id;
    if (!tok_json_id(e, &id))
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "tokenizer %s: vocab id of '%.64s' is not a "
                      "non-negative integer",
                      origin, e->string);
    sp_status s = sp__tokenizer_add(t, e->string, strlen(e->string), id);
    if (s != SP_OK) return s;
  }
  return t->vocab_size ? SP_OK
                       : sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: empty vocab", origin);
}

static sp_status tok_json_added(sp_tokenizer *t, const cJSON *root, const char *origin) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
  if (a && !cJSON_IsNull(a) && !cJSON_IsArray(a))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: added_tokens is not an array", origin);
  for (const cJSON *e = a ? a->child : NULL; e; e = e->next) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
    int32_t id;
    if (!cJSON_IsString(c) || !tok_json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id))
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: an added token lacks content or id",
                      origin);
    static const char *const off[] = {"normalized", "lstrip", "rstrip", "single_word"};
    for (size_t k = 0; k < 4; k++)
      if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, off[k])))
        return sp__fail(SP_ERR_UNSUPPORTED,
                        "tokenizer %s: added token '%.64s' has %s true: not "
                        "implemented",
                        origin, c->valuestring, off[k]);
    sp_status s = sp__tokenizer_add_special(t, c->valuestring, id);
    if (s == SP_OK && (size_t)id >= t->vocab_size) t->vocab_size = (size_t)id + 1;
    if (s != SP_OK) return s;
  }
  return SP_OK;
}

/* The id of a TemplateProcessing special token by name, from its special_tokens map. */
static int tok_template_id(const cJSON *pp, const cJSON *piece, int32_t *out) {
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(piece, "SpecialToken");
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(st, "id");
  if (!cJSON_IsString(name)) return 0;
  const cJSON *sp = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(pp, "special_tokens"), name->valuestring);
  const cJSON *ids = cJSON_GetObjectItemCaseSensitive(sp, "ids");
  return cJSON_GetArraySize(ids) == 1 && tok_json_id(ids->child, out);
}

static sp_status tok_json_post(sp_tokenizer *t, const cJSON *root, const char *origin) {
  const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
  const char *ty = pp && !cJSON_IsNull(pp) ? tok_type(pp) : "null";
  int ok = 0;
  if (!strcmp(ty, "TemplateProcessing")) {
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *mid = single && single->child ? single->child->next : NULL;
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(mid, "Sequence");
    const cJSON *seq_id = cJSON_GetObjectItemCaseSensitive(seq, "id");
    ok = cJSON_GetArraySize(single) == 3 && tok_template_id(pp, single->child, &t->cls_id) &&
         cJSON_IsString(seq_id) && !strcmp(seq_id->valuestring, "A") &&
         tok_template_id(pp, mid->next, &t->sep_id);
  } else if (!strcmp(ty, "BertProcessing")) {
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(pp, "cls");
    const cJSON *sep = cJSON_GetObjectItemCaseSensitive(pp, "sep");
    ok = cJSON_GetArraySize(cls) == 2 && cJSON_GetArraySize(sep) == 2 &&
         tok_json_id(cls->child->next, &t->cls_id) && tok_json_id(sep->child->next, &t->sep_id);
  }
  if (!ok)
    return sp__fail(
        SP_ERR_UNSUPPORTED,
        "tokenizer %s: post_processor '%.64s' is not implemented "
        "(BertProcessing, or TemplateProcessing with single = [CLS-like] $A [SEP-like])",
        origin, ty);
  return SP_OK;
}

static sp_status tok_parse_json(sp_tokenizer *t, const char *buf, size_t len, const char *origin) {
  cJSON *root = cJSON_ParseWithLength(buf, len);
  if (!root || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: not a JSON object", origin);
  }
  const char *unk = NULL;
  sp_status s = tok_json_model(t, root, origin, &unk);
  if (s == SP_OK) s = tok_json_normalizer(t, root, origin);
  if (s == SP_OK) s = tok_json_pieces(root, origin);
  if (s == SP_OK) s = tok_json_added(t, root, origin);
  if (s == SP_OK) s = tok_json_post(t, root, origin);
  if (s == SP_OK) s = tok_require(t, origin, unk);
  cJSON_Delete(root);
  return s;
}

sp_status sp__tokenizer_parse(const char *buf, size_t len, int json, const char *origin,
                              sp_tokenizer **out) {
  sp_tokenizer *t = sp__tokenizer_new();
  if (!t) return sp__fail(SP_ERR_HOST_MEMORY, "tokenizer %s: out of host memory", origin);
  sp_status s =
      json ? tok_parse_json(t, buf, len, origin) : tok_parse_vocab_txt(t, buf, len, origin);
  if (s != SP_OK) {
    sp_tokenizer_free(t);
    return s;
  }
  *out = t;
  return SP_OK;
}

static int tok_is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int tok_ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

sp_status sp_tokenizer_load(const char *path, sp_tokenizer **out) {
  if (!path || !out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_tokenizer_load: path or out is NULL");
  struct stat st;
  if (stat(path, &st) != 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: %s", path, strerror(errno));
  char file[4096];
  int json = tok_ends_with(path, ".json");
  if (S_ISDIR(st.st_mode)) {
    int n = snprintf(file, sizeof(file), "%s/tokenizer.json", path);
    json = 1;
    if (n > 0 && (size_t)n < sizeof(file) && !tok_is_file(file)) {
      n = snprintf(file, sizeof(file), "%s/vocab.txt", path);
      json = 0;
    }
    if (n < 0 || (size_t)n >= sizeof(file))
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer %s: path too long", path);
    if (!tok_is_file(file))
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "tokenizer %s: folder has neither tokenizer.json "
                      "nor vocab.txt",
                      path);
    path = file;
  }
  char *buf = NULL;
  size_t len = 0;
  sp_status s = tok_read_file(path, &buf, &len);
  if (s != SP_OK) return s;
  s = sp__tokenizer_parse(buf, len, json, path, out);
  sp__free(buf);
  return s;
}
