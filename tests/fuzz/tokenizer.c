/* Goal: the tokenizer never crashes, reads out of bounds or leaks, on any text and any
 * tokenizer.json / vocab.txt, and what it returns is well formed.
 * Method: the first byte picks the mode. Even: the rest is text, encoded with a small built-in
 * vocabulary at max_len = first byte / 2 (0: no limit). Odd: the rest is parsed as a
 * tokenizer.json (bit 1 clear) or a vocab.txt (set); when accepted, the same bytes and a fixed
 * text are encoded with it. On success: ids[0] is [CLS], the last is [SEP], every id is below
 * the vocabulary size, n <= max_len when limited. On failure: an expected status and a message.
 * Seeds: tests/fuzz/corpus/tokenizer/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "infer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int cond) {
  if (!cond) abort();
}

static const char VOCAB[] =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n,\n!\nun\n##aff\n"
    "##able\ncafe\n\xe6\x97\xa5\na\n##a\n##b\n\xc3\xa9\n##\xcc\x81\n";

static void encode_check(const sp_tokenizer *t, const char *text, size_t len, size_t max_len) {
  size_t cap = len * 4 + 2, n = 0;
  int32_t *ids = malloc(cap * sizeof(*ids));
  fuzz_check(ids != NULL);
  sp_status s = sp_tokenizer_encode(t, text, len, max_len, ids, cap, &n);
  if (s == SP_OK) {
    fuzz_check(n >= 2 && n <= cap && (!max_len || n <= max_len));
    fuzz_check(ids[0] == t->cls_id && ids[n - 1] == t->sep_id);
    for (size_t i = 0; i < n; i++)
      fuzz_check(ids[i] >= 0 && (size_t)ids[i] < sp_tokenizer_vocab_size(t));
  } else {
    fuzz_check(s == SP_ERR_INVALID_ARGUMENT || s == SP_ERR_HOST_MEMORY);
    fuzz_check(sp_last_error()[0] != '\0');
  }
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  sp_tokenizer *t = NULL;
  if (!(data[0] & 1)) {
    fuzz_check(sp__tokenizer_parse(VOCAB, sizeof(VOCAB) - 1, 0, "fuzz", &t) == SP_OK);
    size_t max_len = data[0] / 2u;
    encode_check(t, text, len, max_len == 1 ? 2 : max_len);
    sp_tokenizer_free(t);
    return 0;
  }
  sp_status s = sp__tokenizer_parse(text, len, !(data[0] & 2), "fuzz", &t);
  if (s != SP_OK) {
    fuzz_check(s == SP_ERR_INVALID_ARGUMENT || s == SP_ERR_UNSUPPORTED || s == SP_ERR_HOST_MEMORY);
    fuzz_check(sp_last_error()[0] != '\0');
    return 0;
  }
  encode_check(t, text, len, 0);
  encode_check(t, "Hello, [SEP] wo\xcc\x81rld \xe6\x97\xa5 unaffable!", 31, 8);
  sp_tokenizer_free(t);
  return 0;
}
