/* WordPiece encoding, step for step as Hugging Face `tokenizers` encodes one BERT sequence:
 *   1. added tokens ("[CLS]", "[SEP]", ... as written) are cut out of the raw text first;
 *   2. BertNormalizer on each piece between them: clean_text (drop controls, whitespace -> ' '),
 *      handle_chinese_chars (' ' around CJK ideographs), strip_accents (NFD, then drop Mn),
 *      lowercase (full per-code-point mapping, no final-sigma rule), in that order;
 *   3. BertPreTokenizer: split on whitespace, each punctuation character a word of its own;
 *   4. WordPiece per word: longer than max_chars_per_word -> [UNK]; else greedy longest match
 *      first, continuation pieces with the prefix; a word with an unmatched rest -> one [UNK];
 *   5. [CLS] ids [SEP], the ids cut to max_len - 2.
 * The Unicode facts come from unicode_tables.c (see scripts/gen_unicode_tables.py for why they
 * are taken from `tokenizers` itself). Invalid UTF-8 is refused before anything is written.
 *
 * Owns: nothing shared; each call works in its own scratch memory. Locking: none; the tokenizer
 * is read-only, so any number of threads may encode with one at once.
 */
#include <string.h>

#include "core/status.h"
#include "infer/tokenizer.h"
#include "infer/unicode.h"

#define TOK_BREAK 0xFFFFFFFFu /* a removed starter: ends a run of marks for NFD ordering */

static const uint32_t tok_break = TOK_BREAK;

typedef struct tok_out { /* ids being produced */
  int32_t *ids;          /* room for every id the text can give, truncation applied at the end */
  size_t n, limit;       /* limit: wordpieces wanted at most (SIZE_MAX: all) */
} tok_out;

static int tok_full(const tok_out *o) { return o->n >= o->limit; }

static const uint32_t *tok_seq(uint16_t off, const uint32_t *self, size_t *n) {
  if (!off) {
    *n = 1;
    return self;
  }
  *n = sp__uprops_seq[off];
  return &sp__uprops_seq[off + 1];
}

/* Step 2 up to lowercase: clean, CJK spacing, NFD without Mn (with TOK_BREAK for removed
 * starters). out NULL: only counts. Returns the count. */
static size_t tok_normalize(const sp_tokenizer *t, const uint32_t *in, size_t n, uint32_t *out) {
  size_t k = 0;
  uint32_t tmp[3];
  for (size_t i = 0; i < n; i++) {
    uint32_t c = in[i];
    const sp__uprops *p = sp__uprops_of(c);
    if (t->clean_text && (p->flags & SP__U_CONTROL)) continue;
    if (t->clean_text && (p->flags & SP__U_CLEANWS)) c = ' ', p = sp__uprops_of(c);
    int cjk = t->handle_chinese_chars && (p->flags & SP__U_CJK);
    size_t m = 1;
    const uint32_t *seq = &c;
    if (t->strip_accents && (p->flags & SP__U_HANGUL)) {
      m = sp__hangul_nfd(c, tmp);
      seq = tmp;
    } else if (t->strip_accents) {
      seq = tok_seq(p->strip, &c, &m);
      if (m == 0 && p->ccc == 0) seq = &tok_break, m = 1;
    }
    if (out) {
      if (cjk) out[k++] = ' ';
      for (size_t j = 0; j < m; j++) out[k++] = seq[j];
      if (cjk) out[k++] = ' ';
    } else {
      k += m + (cjk ? 2 : 0);
    }
  }
  return k;
}

static unsigned tok_ccc(uint32_t c) { return c == TOK_BREAK ? 0 : sp__uprops_of(c)->ccc; }

/* Canonical ordering: a stable sort by combining class of each run of non-starters. */
static void tok_reorder(uint32_t *s, size_t n) {
  for (size_t i = 1; i < n; i++) {
    unsigned ci = tok_ccc(s[i]);
    if (!ci) continue;
    for (size_t j = i; j > 0 && tok_ccc(s[j - 1]) > ci; j--) {
      uint32_t x = s[j];
      s[j] = s[j - 1];
      s[j - 1] = x;
    }
  }
}

typedef struct tok_word { /* the word being gathered in step 3 */
  char *bytes;            /* its UTF-8, the first cap code points */
  size_t *at;             /* byte offset of code point i, i <= min(n, cap) */
  size_t n, cap;          /* code points seen; kept (max_chars_per_word + 1 at most) */
} tok_word;

/* Step 4 on the gathered word; every piece of it or one [UNK], truncated later. */
static void tok_wordpiece(const sp_tokenizer *t, const tok_word *w, tok_out *o) {
  size_t n = w->n;
  if (n > t->max_chars_per_word) {
    o->ids[o->n++] = t->unk_id;
    return;
  }
  size_t first = o->n;
  for (size_t start = 0; start < n;) {
    size_t end = n;
    int32_t id = -1;
    for (; end > start; end--) {
      id = sp__tokenizer_find(t, start > 0, w->bytes + w->at[start], w->at[end] - w->at[start]);
      if (id >= 0) break;
    }
    if (id < 0) {
      o->n = first;
      o->ids[o->n++] = t->unk_id;
      return;
    }
    o->ids[o->n++] = id;
    start = end;
  }
}

static void tok_word_end(const sp_tokenizer *t, tok_word *w, tok_out *o) {
  if (w->n) tok_wordpiece(t, w, o);
  w->n = 0;
}

static void tok_word_add(tok_word *w, uint32_t c) {
  if (w->n < w->cap) w->at[w->n + 1] = w->at[w->n] + sp__utf8_put(c, w->bytes + w->at[w->n]);
  w->n++;
}

/* Steps 2 (lowercase) and 3 over s[0..n), words to step 4; stops after the word that fills o. */
static void tok_words(const sp_tokenizer *t, const uint32_t *s, size_t n, tok_word *w, tok_out *o) {
  for (size_t i = 0; i < n && !tok_full(o); i++) {
    uint32_t c = s[i];
    if (c == TOK_BREAK) continue;
    size_t m = 1;
    const uint32_t *lo = t->lowercase ? tok_seq(sp__uprops_of(c)->lower, &c, &m) : &c;
    for (size_t j = 0; j < m; j++) {
      unsigned f = sp__uprops_of(lo[j])->flags;
      if (f & (SP__U_WS | SP__U_PUNCT)) tok_word_end(t, w, o);
      if (f & SP__U_WS) continue;
      tok_word_add(w, lo[j]);
      if (f & SP__U_PUNCT) tok_word_end(t, w, o);
    }
  }
  tok_word_end(t, w, o);
}

/* The longest special token written at text[byte..], or NULL. */
static const sp__tok_special *tok_special_at(const sp_tokenizer *t, const char *text, size_t len,
                                             size_t byte) {
  const sp__tok_special *best = NULL;
  for (size_t k = 0; k < t->n_special; k++) {
    const sp__tok_special *sp = &t->special[k];
    if (sp->len <= len - byte && !memcmp(text + byte, sp->text, sp->len) &&
        (!best || sp->len > best->len))
      best = sp;
  }
  return best;
}

typedef struct tok_scratch {
  uint32_t *cps, *norm;
  tok_word w;
} tok_scratch;

/* Steps 2-4 on the code points cps[lo..hi). */
static void tok_piece(const sp_tokenizer *t, tok_scratch *sc, size_t lo, size_t hi, tok_out *o) {
  size_t k = tok_normalize(t, sc->cps + lo, hi - lo, sc->norm);
  if (t->strip_accents) tok_reorder(sc->norm, k);
  tok_words(t, sc->norm, k, &sc->w, o);
}

static size_t tok_utf8_len(uint32_t c) {
  return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
}

/* Step 1 and the loop over the pieces between special tokens. */
static void tok_encode(const sp_tokenizer *t, const char *text, size_t len, tok_scratch *sc,
                       size_t n_cps, tok_out *o) {
  size_t byte = 0, piece = 0;
  for (size_t i = 0; i < n_cps && !tok_full(o);) {
    const sp__tok_special *sp = t->n_special ? tok_special_at(t, text, len, byte) : NULL;
    if (!sp) {
      byte += tok_utf8_len(sc->cps[i++]);
      continue;
    }
    tok_piece(t, sc, piece, i, o);
    if (!tok_full(o)) o->ids[o->n++] = sp->id;
    for (size_t end = byte + sp->len; byte < end;) byte += tok_utf8_len(sc->cps[i++]);
    piece = i;
  }
  if (!tok_full(o)) tok_piece(t, sc, piece, n_cps, o);
  if (o->n > o->limit) o->n = o->limit;
}

static sp_status tok_check_args(const sp_tokenizer *tok, const char *utf8, size_t len,
                                size_t max_len, const int32_t *ids_out, const size_t *n_out) {
  if (!tok || (!utf8 && len) || !ids_out || !n_out)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_tokenizer_encode: tok, utf8 (with len > 0), "
                    "ids_out or n_out is NULL");
  if (max_len == 1)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "sp_tokenizer_encode: max_len 1 leaves no room for "
                    "[CLS] and [SEP] (0: no limit, or >= 2)");
  if (len > SIZE_MAX / 64 / (sp__uprops_strip_max + 3) / sp__uprops_lower_max)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_tokenizer_encode: text of %zu bytes is too long",
                    len);
  return SP_OK;
}

/* One allocation for the rest of a call, most aligned first: word offsets[cap + 1],
 * norm[n_norm], ids[n_ids], word bytes[cap * 4]. */
static void *tok_scratch_alloc(const sp_tokenizer *t, size_t n_cps, size_t n_norm, tok_scratch *sc,
                               int32_t **ids) {
  size_t n_low = n_norm * sp__uprops_lower_max, n_ids = n_low + n_cps + 2;
  size_t cap = t->max_chars_per_word < n_low ? t->max_chars_per_word + 1 : n_low + 1;
  size_t bytes =
      (cap + 1) * sizeof(size_t) + n_norm * sizeof(uint32_t) + n_ids * sizeof(int32_t) + cap * 4;
  size_t *mem = sp__malloc(bytes);
  if (!mem) return NULL;
  sc->w = (tok_word){.at = mem, .cap = cap};
  sc->norm = (uint32_t *)(void *)(mem + cap + 1);
  *ids = (int32_t *)(void *)(sc->norm + n_norm);
  sc->w.bytes = (char *)(*ids + n_ids);
  sc->w.at[0] = 0;
  return mem;
}

sp_status sp_tokenizer_encode(const sp_tokenizer *tok, const char *utf8, size_t len, size_t max_len,
                              int32_t *ids_out, size_t capacity, size_t *n_out) {
  sp_status s = tok_check_args(tok, utf8, len, max_len, ids_out, n_out);
  if (s != SP_OK) return s;
  uint32_t *cps = sp__malloc((len ? len : 1) * sizeof(*cps));
  if (!cps) return sp__fail(SP_ERR_HOST_MEMORY, "sp_tokenizer_encode: no host memory");
  size_t bad = 0, n_cps = sp__utf8_decode(utf8, len, cps, &bad);
  if (n_cps == SIZE_MAX) {
    s = sp__fail(SP_ERR_INVALID_ARGUMENT,
                 "sp_tokenizer_encode: text is not valid UTF-8 at byte %zu", bad);
    goto free_cps;
  }
  tok_scratch sc = {.cps = cps};
  int32_t *ids;
  void *mem = tok_scratch_alloc(tok, n_cps, tok_normalize(tok, cps, n_cps, NULL), &sc, &ids);
  if (!mem) {
    s = sp__fail(SP_ERR_HOST_MEMORY, "sp_tokenizer_encode: no host memory for a %zu-byte text",
                 len);
    goto free_cps;
  }
  tok_out o = {.ids = ids + 1, .limit = max_len ? max_len - 2 : SIZE_MAX};
  tok_encode(tok, utf8, len, &sc, n_cps, &o);
  ids[0] = tok->cls_id;
  ids[o.n + 1] = tok->sep_id;
  if (o.n + 2 > capacity) {
    s = sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_tokenizer_encode: %zu ids do not fit in capacity %zu",
                 o.n + 2, capacity);
    goto free_mem;
  }
  memcpy(ids_out, ids, (o.n + 2) * sizeof(*ids));
  *n_out = o.n + 2;
free_mem:
  sp__free(mem);
free_cps:
  sp__free(cps);
  return s;
}
