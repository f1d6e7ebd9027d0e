/* The WordPiece tokenizer's inside: configuration, vocabulary tables and the steps of encode,
 * shared by tokenizer_load.c (building one), tokenizer_vocab.c (the token tables) and
 * tokenizer.c (encoding). A loaded sp_tokenizer is immutable: any thread may read it.
 */
#ifndef SP_INFER_TOKENIZER_H
#define SP_INFER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "streampool.h"

#define SP__TOK_SPECIAL_MAX 64 /* added tokens matched in raw text */

/* One open-addressing hash table from token bytes to id. */
typedef struct sp__tok_table {
  struct sp__tok_slot {
    uint32_t hash; /* FNV-1a of the bytes; 0 never (empty marker is id < 0) */
    uint32_t off;  /* bytes in the owner's arena */
    uint32_t len;  /* bytes */
    int32_t id;    /* -1: empty slot */
  } * slots;
  size_t mask; /* capacity - 1, capacity a power of two >= 2 x count */
  size_t count;
} sp__tok_table;

typedef struct sp__tok_special {
  char *text; /* as written in the input; owned */
  size_t len; /* bytes */
  int32_t id;
} sp__tok_special;

struct sp_tokenizer {
  int clean_text, handle_chinese_chars, strip_accents, lowercase; /* BertNormalizer flags */
  size_t max_chars_per_word;                                      /* a longer word is [UNK] */
  int32_t unk_id, cls_id, sep_id;
  size_t vocab_size; /* max id + 1 */
  char *arena;       /* every token's bytes */
  size_t arena_len, arena_cap;
  sp__tok_table words;  /* tokens that start a word */
  sp__tok_table pieces; /* continuation tokens, keyed without their prefix */
  char prefix[16];      /* continuing_subword_prefix, "##" */
  size_t prefix_len;
  sp__tok_special special[SP__TOK_SPECIAL_MAX];
  size_t n_special;
};

/* An empty tokenizer with BertWordPieceTokenizer's defaults (flags on, "##", 100), no tokens.
 * NULL when out of memory. */
sp_tokenizer *sp__tokenizer_new(void);
/* Adds token (len bytes) with id: continuation tokens (starting with the prefix) go to pieces
 * without it, as well as to words. A repeated token takes the new id (as HF's vocab.txt reader).
 * SP_ERR_HOST_MEMORY or SP_ERR_INVALID_ARGUMENT (token too long). */
sp_status sp__tokenizer_add(sp_tokenizer *t, const char *token, size_t len, int32_t id);
/* The id of bytes in words (continuation 0) or pieces (1), or -1. */
int32_t sp__tokenizer_find(const sp_tokenizer *t, int continuation, const char *bytes, size_t len);
/* Adds a special token matched in raw text. SP_ERR_INVALID_ARGUMENT when there are too many. */
sp_status sp__tokenizer_add_special(sp_tokenizer *t, const char *text, int32_t id);

/* Builds a tokenizer from the bytes of a tokenizer.json (json 1) or a vocab.txt (json 0); origin
 * names them in messages. What sp_tokenizer_load does after reading the file. */
sp_status sp__tokenizer_parse(const char *buf, size_t len, int json, const char *origin,
                              sp_tokenizer **out);

/* Decodes len bytes of UTF-8 into cps (room for len code points); returns the count, or sets
 * *bad_offset to the first invalid byte's offset and returns SIZE_MAX. */
size_t sp__utf8_decode(const char *s, size_t len, uint32_t *cps, size_t *bad_offset);
/* Encodes cp as UTF-8 into out (room for 4); returns the byte count. */
size_t sp__utf8_put(uint32_t cp, char *out);

#endif
