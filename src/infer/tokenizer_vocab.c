/* The tokenizer's vocabulary tables and its UTF-8 coding.
 *
 * Owns: the token arena and the two hash tables of an sp_tokenizer (tokens that start a word;
 * continuation tokens keyed without their prefix), and its list of special tokens. Invariants:
 * each table's capacity is a power of two at least twice its count (linear probing always ends
 * at an empty slot); a slot's bytes lie inside the arena. Locking: none; tables are built by one
 * thread while loading and only read afterwards.
 */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "infer/tokenizer.h"

#define TOK_TOKEN_MAX 4096u /* bytes in one token */

static uint32_t tok_hash(const char *s, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
  return h;
}

sp_tokenizer *sp__tokenizer_new(void) {
  sp_tokenizer *t = sp__calloc(1, sizeof(*t));
  if (!t) return NULL;
  t->clean_text = t->handle_chinese_chars = t->strip_accents = t->lowercase = 1;
  t->max_chars_per_word = 100;
  t->unk_id = t->cls_id = t->sep_id = -1;
  memcpy(t->prefix, "##", 3);
  t->prefix_len = 2;
  return t;
}

static struct sp__tok_slot *tok_probe(const sp_tokenizer *t, const sp__tok_table *tb, const char *s,
                                      size_t len, uint32_t h) {
  for (size_t i = h & tb->mask;; i = (i + 1) & tb->mask) {
    struct sp__tok_slot *sl = &tb->slots[i];
    if (sl->id < 0) return sl;
    if (sl->hash == h && sl->len == len && !memcmp(t->arena + sl->off, s, len)) return sl;
  }
}

static sp_status tok_table_grow(sp_tokenizer *t, sp__tok_table *tb) {
  size_t cap = tb->slots ? (tb->mask + 1) * 2 : 1024;
  struct sp__tok_slot *old = tb->slots;
  size_t old_cap = old ? tb->mask + 1 : 0;
  tb->slots = sp__malloc(cap * sizeof(*tb->slots));
  if (!tb->slots) {
    tb->slots = old;
    return sp__fail(SP_ERR_HOST_MEMORY, "tokenizer: out of host memory for the vocabulary");
  }
  for (size_t i = 0; i < cap; i++) tb->slots[i].id = -1;
  tb->mask = cap - 1;
  for (size_t i = 0; i < old_cap; i++)
    if (old[i].id >= 0) *tok_probe(t, tb, t->arena + old[i].off, old[i].len, old[i].hash) = old[i];
  sp__free(old);
  return SP_OK;
}

static sp_status tok_table_put(sp_tokenizer *t, sp__tok_table *tb, uint32_t off, size_t len,
                               int32_t id) {
  if (2 * (tb->count + 1) > (tb->slots ? tb->mask + 1 : 0)) {
    sp_status s = tok_table_grow(t, tb);
    if (s != SP_OK) return s;
  }
  uint32_t h = tok_hash(t->arena + off, len);
  struct sp__tok_slot *sl = tok_probe(t, tb, t->arena + off, len, h);
  if (sl->id < 0) tb->count++;
  *sl = (struct sp__tok_slot){.hash = h, .off = off, .len = (uint32_t)len, .id = id};
  return SP_OK;
}

static sp_status tok_arena_append(sp_tokenizer *t, const char *s, size_t len, uint32_t *off) {
  if (!t->arena || t->arena_len + len > t->arena_cap) {
    size_t cap = t->arena_cap ? t->arena_cap * 2 : 1u << 18;
    while (cap < t->arena_len + len) cap *= 2;
    if (cap > UINT32_MAX)
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer: vocabulary over 4 GiB");
    char *a = sp__malloc(cap);
    if (!a) return sp__fail(SP_ERR_HOST_MEMORY, "tokenizer: out of host memory for the vocabulary");
    if (t->arena_len) memcpy(a, t->arena, t->arena_len);
    sp__free(t->arena);
    t->arena = a;
    t->arena_cap = cap;
  }
  if (len) memcpy(t->arena + t->arena_len, s, len);
  *off = (uint32_t)t->arena_len;
  t->arena_len += len;
  return SP_OK;
}

sp_status sp__tokenizer_add(sp_tokenizer *t, const char *token, size_t len, int32_t id) {
  sp_assert(t && id >= 0);
  if (len > TOK_TOKEN_MAX)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer: token %d is %zu bytes (at most %u)", id,
                    len, TOK_TOKEN_MAX);
  uint32_t off = 0;
  sp_status s = tok_arena_append(t, token, len, &off);
  if (s == SP_OK) s = tok_table_put(t, &t->words, off, len, id);
  if (s == SP_OK && len >= t->prefix_len && !memcmp(token, t->prefix, t->prefix_len))
    s = tok_table_put(t, &t->pieces, off + (uint32_t)t->prefix_len, len - t->prefix_len, id);
  if (s == SP_OK && (size_t)id + 1 > t->vocab_size) t->vocab_size = (size_t)id + 1;
  return s;
}

int32_t sp__tokenizer_find(const sp_tokenizer *t, int continuation, const char *bytes, size_t len) {
  const sp__tok_table *tb = continuation ? &t->pieces : &t->words;
  if (!tb->slots) return -1;
  return tok_probe(t, tb, bytes, len, tok_hash(bytes, len))->id;
}

sp_status sp__tokenizer_add_special(sp_tokenizer *t, const char *text, int32_t id) {
  if (t->n_special == SP__TOK_SPECIAL_MAX)
    return sp__fail(SP_ERR_UNSUPPORTED, "tokenizer: more than %d added tokens",
                    SP__TOK_SPECIAL_MAX);
  if (!text[0]) return sp__fail(SP_ERR_INVALID_ARGUMENT, "tokenizer: an added token is empty");
  char *copy = sp__strdup(text);
  if (!copy) return sp__fail(SP_ERR_HOST_MEMORY, "tokenizer: out of host memory");
  t->special[t->n_special++] = (sp__tok_special){.text = copy, .len = strlen(copy), .id = id};
  return SP_OK;
}

void sp_tokenizer_free(sp_tokenizer *tok) {
  if (!tok) return;
  for (size_t i = 0; i < tok->n_special; i++) sp__free(tok->special[i].text);
  sp__free(tok->words.slots);
  sp__free(tok->pieces.slots);
  sp__free(tok->arena);
  sp__free(tok);
}

size_t sp_tokenizer_vocab_size(const sp_tokenizer *tok) { return tok ? tok->vocab_size : 0; }

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

size_t sp__utf8_decode(const char *str, size_t len, uint32_t *cps, size_t *bad_offset) {
  const uint8_t *s = (const uint8_t *)str;
  size_t n = 0;
  for (size_t i = 0; i < len;) {
    uint32_t c = s[i];
    size_t k = c < 0x80                 ? 0
               : c >= 0xC2 && c <= 0xDF ? 1
               : c >= 0xE0 && c <= 0xEF ? 2
               : c >= 0xF0 && c <= 0xF4 ? 3
                                        : 4;
    if (k == 4 || k >= len - i) goto bad;
    if (k) c &= 0x3Fu >> k;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xC0) != 0x80) goto bad;
      c = c << 6 | (s[i + j] & 0x3Fu);
    }
    if ((k == 2 && (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF))) ||
        (k == 3 && (c < 0x10000 || c > 0x10FFFF)))
      goto bad;
    cps[n++] = c;
    i += k + 1;
    continue;
  bad:
    *bad_offset = i;
    return SIZE_MAX;
  }
  return n;
}

size_t sp__utf8_put(uint32_t c, char *o) {
  if (c < 0x80) {
    o[0] = (char)c;
    return 1;
  }
  if (c < 0x800) {
    o[0] = (char)(0xC0 | c >> 6);
    o[1] = (char)(0x80 | (c & 0x3F));
    return 2;
  }
  if (c < 0x10000) {
    o[0] = (char)(0xE0 | c >> 12);
    o[1] = (char)(0x80 | (c >> 6 & 0x3F));
    o[2] = (char)(0x80 | (c & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | c >> 18);
  o[1] = (char)(0x80 | (c >> 12 & 0x3F));
  o[2] = (char)(0x80 | (c >> 6 & 0x3F));
  o[3] = (char)(0x80 | (c & 0x3F));
  return 4;
}
