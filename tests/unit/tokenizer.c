/* Goal: each step of the WordPiece tokenizer does what Hugging Face's does: text cleaning,
 * whitespace, CJK spacing, accent stripping (NFD, Mn dropped, marks reordered), lowercasing,
 * punctuation, greedy longest-match with "##", the per-word character limit, special tokens
 * written in the text, [CLS]/[SEP] and truncation; tokenizer.json flags are obeyed and what is not
 * implemented is refused; invalid UTF-8 and bad arguments are refused with nothing written;
 * encoding from many threads at once gives the single-thread ids.
 * Method: a tokenizer.json with a hand-made vocabulary of known ids is written to a temp file and
 * each case's ids are compared with the ids worked out by hand; variants of the file test the
 * flags and refusals. The offline fixture's vocab.txt (all-MiniLM-L6-v2) gives a few known ids
 * and the concurrency check (4 threads x the fixture corpus).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static const char *const VOCAB[] = {
    "[PAD]", "[UNK]",  "[CLS]", "[SEP]",        "[MASK]",       "hello", "world", ",", "!", "un",
    "##aff", "##able", "cafe",  "\xe6\x97\xa5", "\xe6\x9c\xac", "a",     "##b",   "b", "i", "##a",
    "[",     "]",      "sep",   "\xe1\x9c\x95", "x\xe1\x9c\x95"};
#define N_VOCAB (sizeof(VOCAB) / sizeof(VOCAB[0]))

/* Writes a tokenizer.json with VOCAB, normalizer `norm` and added tokens `added`; returns path. */
static char *write_json(const char *norm, const char *added, const char *model_type) {
  static char path[64];
  snprintf(path, sizeof(path), "/tmp/sp_tok_unit_%d.json", (int)getpid());
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f,
          "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":%s,"
          "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},\"post_processor\":"
          "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"[CLS]\","
          "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":"
          "{\"id\":\"[SEP]\",\"type_id\":0}}],\"special_tokens\":{\"[CLS]\":{\"id\":\"[CLS]\","
          "\"ids\":[2],\"tokens\":[\"[CLS]\"]},\"[SEP]\":{\"id\":\"[SEP]\",\"ids\":[3],"
          "\"tokens\":[\"[SEP]\"]}}},\"model\":{\"type\":\"%s\",\"unk_token\":\"[UNK]\","
          "\"continuing_subword_prefix\":\"##\",\"max_input_chars_per_word\":100,\"vocab\":{",
          added, norm, model_type);
  for (size_t i = 0; i < N_VOCAB; i++) fprintf(f, "%s\"%s\":%zu", i ? "," : "", VOCAB[i], i);
  fprintf(f, "}}}");
  fclose(f);
  return path;
}

#define BERT_NORM                                                                           \
  "{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,\"strip_" \
  "accents\":null,\"lowercase\":true}"
#define SPECIALS                                                                              \
  "[{\"id\":1,\"content\":\"[UNK]\",\"special\":true,\"normalized\":false,\"lstrip\":false,"  \
  "\"rstrip\":false,\"single_word\":false},{\"id\":3,\"content\":\"[SEP]\",\"special\":true," \
  "\"normalized\":false,\"lstrip\":false,\"rstrip\":false,\"single_word\":false}]"

static sp_tokenizer *load(const char *norm) {
  sp_tokenizer *t = NULL;
  sp_status s = sp_tokenizer_load(write_json(norm, SPECIALS, "WordPiece"), &t);
  if (s != SP_OK) fail_msg("load: %s", sp_last_error());
  return t;
}

/* Encodes text (len bytes) and compares with want[0..n). */
static void expect_ids(const sp_tokenizer *t, const char *text, size_t len, size_t max_len,
                       const int32_t *want, size_t n) {
  int32_t got[512];
  size_t n_got = 0;
  sp_status s = sp_tokenizer_encode(t, text, len, max_len, got, 512, &n_got);
  if (s != SP_OK) fail_msg("encode '%s': %s", text, sp_last_error());
  int same = n_got == n && !memcmp(got, want, n * sizeof(*got));
  if (!same) {
    char a[1024] = "", b[1024] = "";
    for (size_t i = 0; i < n_got && i < 60; i++) snprintf(a + strlen(a), 16, " %d", got[i]);
    for (size_t i = 0; i < n && i < 60; i++) snprintf(b + strlen(b), 16, " %d", want[i]);
    fail_msg("encode '%s' max_len %zu: got [%s ] want [%s ]", text, max_len, a, b);
  }
}
#define EXPECT(t, text, max_len, ...)                                               \
  do {                                                                              \
    const int32_t w_[] = {__VA_ARGS__};                                             \
    expect_ids(t, text, sizeof(text) - 1, max_len, w_, sizeof(w_) / sizeof(w_[0])); \
  } while (0)

static void steps(void **state) {
  (void)state;
  sp_tokenizer *t = load(BERT_NORM);
  assert_int_equal(sp_tokenizer_vocab_size(t), N_VOCAB);
  EXPECT(t, "", 0, 2, 3);
  EXPECT(t, "hello world", 0, 2, 5, 6, 3);
  /* clean_text: NUL, C0/C1 controls, U+FFFD, format characters dropped inside a word */
  EXPECT(t, "hel\x01l\x00o wor\xe2\x80\x8bld\xc2\x85x\xef\xbf\xbd", 0, 2, 5, 1, 3);
  EXPECT(t, "hel\x7flo", 0, 2, 5, 3);
  /* whitespace: tab, CR, NBSP, ideographic space, U+2028 */
  EXPECT(t, "\thello\r\xc2\xa0\xe3\x80\x80world\xe2\x80\xa8", 0, 2, 5, 6, 3);
  /* CJK: each ideograph its own word */
  EXPECT(t, "hello\xe6\x97\xa5\xe6\x9c\xacworld", 0, 2, 5, 13, 14, 6, 3);
  /* lowercase and accents: precomposed, combining, uppercase */
  EXPECT(t, "Caf\xc3\xa9 CAFE\xcc\x81 HeLLo", 0, 2, 12, 12, 5, 3);
  /* Turkish dotted I: NFD gives I + U+0307 (Mn, dropped), then lowercase: "i" */
  EXPECT(t, "\xc4\xb0", 0, 2, 18, 3);
  EXPECT(t, "I", 0, 2, 18, 3);
  /* punctuation is a word of its own; ASCII symbols count ($ is not in the vocabulary) */
  EXPECT(t, "hello,world!", 0, 2, 5, 7, 6, 8, 3);
  EXPECT(t, "hello$", 0, 2, 5, 1, 3);
  /* WordPiece: greedy longest match, ## continuation, an unmatched rest makes the word [UNK] */
  EXPECT(t, "unaffable ab", 0, 2, 9, 10, 11, 15, 16, 3);
  EXPECT(t, "unaffablez hello", 0, 2, 1, 5, 3);
  /* a spacing mark with a combining class (U+1715) after a removed starter-class Mn is kept */
  EXPECT(t, "x\xe1\x9c\x95", 0, 2, 24, 3);
  sp_tokenizer_free(t);
}

static void word_limit_and_truncation(void **state) {
  (void)state;
  sp_tokenizer *t = load(BERT_NORM);
  char w[102];
  memset(w, 'a', sizeof(w));
  int32_t want[103];
  want[0] = 2;
  want[1] = 15;
  for (int i = 2; i <= 100; i++) want[i] = 19;
  want[101] = 3;
  expect_ids(t, w, 100, 0, want, 102);               /* 100 characters: pieces */
  expect_ids(t, w, 101, 0, (int32_t[]){2, 1, 3}, 3); /* 101: [UNK] */
  EXPECT(t, "hello world hello world", 4, 2, 5, 6, 3);
  EXPECT(t, "hello world", 2, 2, 3);
  EXPECT(t, "unaffable", 4, 2, 9, 10, 3); /* a word cut by truncation keeps its first pieces */
  EXPECT(t, "unaffablez", 3, 2, 1, 3);    /* but a bad word is [UNK] whole */
  EXPECT(t, "hello world", 100, 2, 5, 6, 3);
  /* special tokens as written, counted in the truncation; other spellings are text */
  EXPECT(t, "hello[SEP]world", 0, 2, 5, 3, 6, 3);
  EXPECT(t, "[sep][SEP][UNK]", 0, 2, 20, 22, 21, 3, 1, 3);
  EXPECT(t, "[SEP]hello", 3, 2, 3, 3);
  sp_tokenizer_free(t);
}

static void flags(void **state) {
  (void)state;
  sp_tokenizer *t = load(
      "{\"type\":\"BertNormalizer\",\"clean_text\":false,\"handle_chinese_chars\":false,\"strip_"
      "accents\":false,\"lowercase\":false}");
  EXPECT(t, "HELLO hello", 0, 2, 1, 5, 3);           /* no lowercasing */
  EXPECT(t, "cafe\xcc\x81", 0, 2, 1, 3);             /* accents kept */
  EXPECT(t, "\xe6\x97\xa5\xe6\x9c\xac", 0, 2, 1, 3); /* CJK not split */
  EXPECT(t, "hel\x01lo", 0, 2, 1, 3);                /* controls kept */
  sp_tokenizer_free(t);
  t = load(
      "{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,\"strip_"
      "accents\":false,\"lowercase\":true}");
  EXPECT(t, "CAF\xc3\x89 CAFE", 0, 2, 1, 12, 3); /* lowercase without stripping */
  EXPECT(t, "\xc4\xb0 I", 0, 2, 1, 18, 3);       /* dotted I -> i + U+0307 kept */
  sp_tokenizer_free(t);
}

static void refusals(void **state) {
  (void)state;
  sp_tokenizer *t = NULL;
  assert_int_equal(
      sp_tokenizer_load(write_json("{\"type\":\"Sequence\",\"normalizers\":[]}", "[]", "WordPiece"),
                        &t),
      SP_ERR_UNSUPPORTED);
  assert_non_null(strstr(sp_last_error(), "Sequence"));
  assert_int_equal(sp_tokenizer_load(write_json(BERT_NORM, "[]", "BPE"), &t), SP_ERR_UNSUPPORTED);
  assert_non_null(strstr(sp_last_error(), "BPE"));
  assert_int_equal(
      sp_tokenizer_load(
          write_json(BERT_NORM, "[{\"id\":5,\"content\":\"hello\",\"normalized\":true}]",
                     "WordPiece"),
          &t),
      SP_ERR_UNSUPPORTED);
  assert_non_null(strstr(sp_last_error(), "normalized"));
  assert_int_equal(sp_tokenizer_load("/nonexistent/tokenizer.json", &t), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_tokenizer_load(NULL, &t), SP_ERR_INVALID_ARGUMENT);
  assert_null(t);
  FILE *f = fopen(write_json(BERT_NORM, "[]", "WordPiece"), "w");
  fputs("{\"model\":", f);
  fclose(f);
  assert_int_equal(sp_tokenizer_load(write_json(BERT_NORM, "[]", "WordPiece"), &t), SP_OK);
  sp_tokenizer_free(t);
  char path[64];
  snprintf(path, sizeof(path), "/tmp/sp_tok_unit_%d.json", (int)getpid());
  f = fopen(path, "w");
  fputs("{\"model\":", f);
  fclose(f);
  t = NULL;
  assert_int_equal(sp_tokenizer_load(path, &t), SP_ERR_INVALID_ARGUMENT);
  assert_null(t);
  unlink(path);
  sp_tokenizer_free(NULL);
}

static void bad_input(void **state) {
  (void)state;
  sp_tokenizer *t = load(BERT_NORM);
  static const char *const bad[] = {
      "\xff",     "ab\xc0\x80", "\xed\xa0\x80",         "\xf4\x90\x80\x80",
      "\xe6\x97", "x\x80",      "\xf8\x88\x80\x80\x80", "\xe0\x9f\xbf"};
  static const size_t at[] = {0, 2, 0, 0, 0, 1, 0, 0};
  int32_t ids[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
  size_t n = 12345;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(sp_tokenizer_encode(t, bad[i], strlen(bad[i]), 0, ids, 8, &n),
                     SP_ERR_INVALID_ARGUMENT);
    char want[64];
    snprintf(want, sizeof(want), "UTF-8 at byte %zu", at[i]);
    if (!strstr(sp_last_error(), want))
      fail_msg("case %zu: '%s' lacks '%s'", i, sp_last_error(), want);
  }
  assert_int_equal(sp_tokenizer_encode(t, "hello world", 11, 0, ids, 3, &n),
                   SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "4 ids"));
  assert_int_equal(sp_tokenizer_encode(t, "hello", 5, 1, ids, 8, &n), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_tokenizer_encode(NULL, "hello", 5, 0, ids, 8, &n), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_tokenizer_encode(t, NULL, 5, 0, ids, 8, &n), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_tokenizer_encode(t, "hello", 5, 0, NULL, 8, &n), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_tokenizer_encode(t, "hello", 5, 0, ids, 8, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(n, 12345); /* nothing written on failure */
  for (int i = 0; i < 8; i++) assert_int_equal(ids[i], -7);
  assert_int_equal(sp_tokenizer_encode(t, NULL, 0, 0, ids, 8, &n), SP_OK);
  assert_int_equal(n, 2);
  EXPECT(t, "\xf0\x9f\x98\x80 hello", 0, 2, 1, 5, 3); /* a valid 4-byte sequence */
  sp_tokenizer_free(t);
}

/* ---- the offline fixture: real vocabulary, many threads ------------------------------------- */

#define FIX SP_TEST_SOURCE_DIR "/tokenizer/fixture"

static void fixture_vocab(void **state) {
  (void)state;
  sp_tokenizer *t = NULL;
  if (sp_tokenizer_load(FIX, &t) != SP_OK) fail_msg("%s", sp_last_error());
  assert_int_equal(sp_tokenizer_vocab_size(t), 30522);
  EXPECT(t, "Hello, World!", 0, 101, 7592, 1010, 2088, 999, 102);
  EXPECT(t, "Hello [SEP] World", 0, 101, 7592, 102, 2088, 102);
  sp_tokenizer_free(t);
}

typedef struct job {
  const sp_tokenizer *t;
  char **lines;
  size_t *lens, n;
  int32_t *want; /* n x 256 */
  size_t *n_want;
  int bad;
} job;

static void *encode_all(void *p) {
  job *j = p;
  int32_t ids[256];
  for (size_t i = 0; i < j->n; i++) {
    size_t n = 0;
    if (sp_tokenizer_encode(j->t, j->lines[i], j->lens[i], 256, ids, 256, &n) != SP_OK ||
        n != j->n_want[i] || memcmp(ids, j->want + i * 256, n * sizeof(*ids)))
      j->bad++;
  }
  return NULL;
}

static void threads(void **state) {
  (void)state;
  sp_tokenizer *t = NULL;
  if (sp_tokenizer_load(FIX "/vocab.txt", &t) != SP_OK) fail_msg("%s", sp_last_error());
  FILE *f = fopen(FIX "/corpus.txt", "rb");
  assert_non_null(f);
  job j = {.t = t};
  j.lines = calloc(1000, sizeof(*j.lines));
  j.lens = calloc(1000, sizeof(*j.lens));
  size_t cap = 0;
  ssize_t r;
  while (j.n < 1000 && (r = getline(&j.lines[j.n], &cap, f)) >= 0) {
    j.lens[j.n] = (size_t)r - 1;
    j.n++;
    cap = 0;
  }
  fclose(f);
  j.want = malloc(j.n * 256 * sizeof(*j.want));
  j.n_want = malloc(j.n * sizeof(*j.n_want));
  for (size_t i = 0; i < j.n; i++)
    assert_int_equal(
        sp_tokenizer_encode(t, j.lines[i], j.lens[i], 256, j.want + i * 256, 256, &j.n_want[i]),
        SP_OK);
  job js[4];
  pthread_t th[4];
  for (int k = 0; k < 4; k++) {
    js[k] = j;
    pthread_create(&th[k], NULL, encode_all, &js[k]);
  }
  for (int k = 0; k < 4; k++) {
    pthread_join(th[k], NULL);
    if (js[k].bad)
      fail_msg("thread %d: %d of %zu lines differ from one thread's ids", k, js[k].bad, j.n);
  }
  for (size_t i = 0; i < 1000; i++) free(j.lines[i]); /* getline may fill one past the last */
  free(j.lines);
  free(j.lens);
  free(j.want);
  free(j.n_want);
  sp_tokenizer_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(steps),     cmocka_unit_test(word_limit_and_truncation),
      cmocka_unit_test(flags),     cmocka_unit_test(refusals),
      cmocka_unit_test(bad_input), cmocka_unit_test(fixture_vocab),
      cmocka_unit_test(threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
