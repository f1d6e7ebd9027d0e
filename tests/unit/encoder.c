/* Goal: a BERT encoder computes what PyTorch's BertModel computes for the same folder, in f32,
 * bf16 and f16; a text's embedding does not depend on what shares its pass (padding does not leak);
 * texts are tokenized and truncated as the tokenizer says; mean/CLS pooling and Normalize follow
 * the sentence-transformers modules; everything the loader does not implement is refused with a
 * message naming the field, and a refused load leaves no device memory and no model count
 * behind; bad arguments are refused.
 * Method: tests/fixtures/encoder/tiny_bert is a random 2-layer BERT (hidden 32, 4 heads,
 * intermediate 64, max_seq 32) written with PyTorch by scripts/encoder_fixture.py, with
 * expected.f32: float64 PyTorch mean-pooled embeddings of the id sequences in ids.txt (lengths 1
 * to 32). We embed them one at a time and all in one call (mixed lengths, so passes pad) and
 * require max |ours - ref| / max |ref| <= 2e-5 per row (f32: a GELU tanh instead of erf
 * gives 1.5e-4), cosine >= 0.999 (bf16) and >= 0.9999 (f16), and the mixed call equal to the single
 * ones within 1e-5. Refusals run on copies of the folder with one field changed. 4 threads embed at
 * once and must all match the reference.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define TINY SP_TEST_SOURCE_DIR "/fixtures/encoder/tiny_bert"
enum { H = 32, NSEQ = 12, STRIDE = 32, VOCAB = 64 };

static sp_device *dev;
static sp_encoder *enc, *enc_bf16, *enc_f16;
static int32_t ids[NSEQ * STRIDE];
static uint32_t lens[NSEQ];
static float ref[NSEQ * H];
static char tmp[64];

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b) b[n] = 0;
  if (len) *len = (size_t)n;
  return b;
}

static int spit(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  int ok = fwrite(data, 1, len, f) == len;
  return fclose(f) == 0 && ok ? 0 : -1;
}

static const char *const files[] = {
    "config.json",  "model.safetensors",         "vocab.txt",
    "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"};

/* A fresh copy of the tiny folder at tmp. */
static void copy_tiny(void) {
  char src[512], dst[512];
  snprintf(dst, sizeof(dst), "rm -rf %s && mkdir -p %s/1_Pooling", tmp, tmp);
  assert_int_equal(system(dst), 0);
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    size_t len;
    snprintf(src, sizeof(src), "%s/%s", TINY, files[i]);
    snprintf(dst, sizeof(dst), "%s/%s", tmp, files[i]);
    char *b = slurp(src, &len);
    assert_non_null(b);
    assert_int_equal(spit(dst, b, len), 0);
    free(b);
  }
}

/* In the copy's file, replaces the first `from` with `to`. */
static void edit(const char *file, const char *from, const char *to) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", tmp, file);
  char *b = slurp(path, NULL);
  assert_non_null(b);
  char *at = strstr(b, from);
  if (!at) fail_msg("%s has no '%s'", file, from);
  size_t n = strlen(b) + strlen(to) + 1;
  char *o = malloc(n);
  snprintf(o, n, "%.*s%s%s", (int)(at - b), b, to, at + strlen(from));
  assert_int_equal(spit(path, o, strlen(o)), 0);
  free(o);
  free(b);
}

static int setup(void **state) {
  (void)state;
  snprintf(tmp, sizeof(tmp), "/tmp/sp_encoder_%d", (int)getpid());
  dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  char *txt = slurp(TINY "/ids.txt", NULL);
  size_t len;
  char *raw = slurp(TINY "/expected.f32", &len);
  if (!txt || !raw || len != sizeof(ref)) return -1;
  memcpy(ref, raw, sizeof(ref));
  char *p = txt;
  for (int i = 0; i < NSEQ; i++) {
    while (*p && *p != '\n') {
      long v = strtol(p, &p, 10);
      ids[i * STRIDE + lens[i]++] = (int32_t)v;
      while (*p == ' ') p++;
    }
    p++;
  }
  free(txt);
  free(raw);
  if (sp_encoder_load(dev, TINY, SP_F32, &enc) || sp_encoder_load(dev, TINY, SP_BF16, &enc_bf16) ||
      sp_encoder_load(dev, TINY, SP_F16, &enc_f16)) {
    fprintf(stderr, "load failed: %s\n", sp_last_error());
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  sp_encoder_free(enc);
  sp_encoder_free(enc_bf16);
  sp_encoder_free(enc_f16);
  sp_device_close(dev);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
  return system(cmd) == 0 ? 0 : -1;
}

static double rel_err(const float *y, const float *want) {
  double scale = 1e-9, e = 0;
  for (int i = 0; i < H; i++) scale = fmax(scale, fabs(want[i]));
  for (int i = 0; i < H; i++) e = fmax(e, fabs(y[i] - want[i]));
  return e / scale;
}

static double cosine(const float *a, const float *b) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < H; i++)
    ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
  return ab / sqrt(aa * bb);
}

static void test_matches_pytorch(void **state) {
  (void)state;
  float all[NSEQ * H], one[H];
  double worst_f32 = 0;
  SP_CHECK_OK(sp_encoder_embed_ids(enc, ids, lens, NSEQ, STRIDE, all));
  for (int i = 0; i < NSEQ; i++) {
    SP_CHECK_OK(sp_encoder_embed_ids(enc, ids + i * STRIDE, lens + i, 1, STRIDE, one));
    double e = rel_err(one, ref + i * H), m = rel_err(all + i * H, one);
    worst_f32 = fmax(worst_f32, e);
    if (!(e <= 2e-5)) fail_msg("f32 sequence %d (length %u): error %.3g > 2e-5", i, lens[i], e);
    if (!(m <= 1e-5))
      fail_msg("sequence %d (length %u): mixed pass differs from alone by %.3g", i, lens[i], m);
  }
  printf("f32 worst relative error %.3g (bound 2e-5)\n", worst_f32);
  sp_encoder *const e16[2] = {enc_bf16, enc_f16};
  static const double bound[2] = {0.999, 0.9999};
  for (int k = 0; k < 2; k++) {
    SP_CHECK_OK(sp_encoder_embed_ids(e16[k], ids, lens, NSEQ, STRIDE, all));
    double worst = 1;
    for (int i = 0; i < NSEQ; i++) worst = fmin(worst, cosine(all + i * H, ref + i * H));
    printf("%s worst cosine %.7f (bound %g)\n", k ? "f16" : "bf16", worst, bound[k]);
    assert_true(worst >= bound[k]);
  }
}

static void test_texts(void **state) {
  (void)state;
  const sp_tokenizer *tok = sp_encoder_tokenizer(enc);
  assert_non_null(tok);
  int32_t t[64];
  size_t n = 0;
  SP_CHECK_OK(sp_tokenizer_encode(tok, "w5 w6 w7", 8, 0, t, 64, &n));
  assert_int_equal(n, 5);
  assert_int_equal(t[1], 10);
  /* a text of 40 words: truncated to max_seq 32 ([CLS], 30 words, [SEP]) */
  char longtext[256] = "";
  for (int i = 0; i < 40; i++) snprintf(longtext + strlen(longtext), 8, "w%d ", i % 50);
  const char *texts[3] = {"w5 w6 w7", longtext, ""};
  float out[3 * H], want[H];
  SP_CHECK_OK(sp_encoder_embed(enc, texts, 3, out));
  uint32_t l5 = 5;
  SP_CHECK_OK(sp_encoder_embed_ids(enc, t, &l5, 1, 64, want));
  assert_true(rel_err(out, want) <= 1e-5);
  SP_CHECK_OK(sp_tokenizer_encode(tok, longtext, strlen(longtext), 32, t, 64, &n));
  assert_int_equal(n, 32);
  uint32_t l32 = 32;
  SP_CHECK_OK(sp_encoder_embed_ids(enc, t, &l32, 1, 64, want));
  assert_true(rel_err(out + H, want) <= 1e-5);
  int32_t empty[2] = {2, 3};
  uint32_t l2 = 2;
  SP_CHECK_OK(sp_encoder_embed_ids(enc, empty, &l2, 1, 2, want));
  assert_true(rel_err(out + 2 * H, want) <= 1e-5);
  const char *bad[2] = {"w1", "\xff\xfe"};
  SP_CHECK_STATUS(sp_encoder_embed(enc, bad, 2, out), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "texts[1]"));
  SP_CHECK_OK(sp_encoder_embed(enc, bad, 0, out)); /* nothing to do */
}

/* CLS pooling and Normalize, from the modules: normalized mean rows are ref / |ref|; CLS of a
 * one-token sequence is that token's row, the same as its mean. */
static void test_pooling_modules(void **state) {
  (void)state;
  copy_tiny();
  edit("modules.json", "]",
       ", {\"idx\": 2, \"name\": \"2\", \"path\": \"2_Normalize\", "
       "\"type\": \"sentence_transformers.models.Normalize\"}]");
  sp_encoder *e;
  SP_CHECK_OK(sp_encoder_load(dev, tmp, SP_F32, &e));
  sp_encoder_info info;
  SP_CHECK_OK(sp_encoder_info_get(e, &info));
  assert_int_equal(info.normalize, 1);
  assert_int_equal(info.pooling_cls, 0);
  assert_int_equal(info.max_seq, 32);
  assert_int_equal(info.hidden, H);
  assert_int_equal(info.layers, 2);
  assert_int_equal(info.heads, 4);
  assert_int_equal(info.vocab, VOCAB);
  float out[NSEQ * H];
  SP_CHECK_OK(sp_encoder_embed_ids(e, ids, lens, NSEQ, STRIDE, out));
  for (int i = 0; i < NSEQ; i++) {
    double nr = 0;
    for (int k = 0; k < H; k++) nr += (double)ref[i * H + k] * ref[i * H + k];
    float want[H];
    for (int k = 0; k < H; k++) want[k] = (float)(ref[i * H + k] / sqrt(nr));
    if (!(rel_err(out + i * H, want) <= 1e-4)) fail_msg("normalized row %d differs", i);
  }
  sp_encoder_free(e);
  edit("1_Pooling/config.json", "\"pooling_mode_cls_token\": false",
       "\"pooling_mode_cls_token\": true");
  edit("1_Pooling/config.json", "\"pooling_mode_mean_tokens\": true",
       "\"pooling_mode_mean_tokens\": false");
  SP_CHECK_OK(sp_encoder_load(dev, tmp, SP_F32, &e));
  SP_CHECK_OK(sp_encoder_info_get(e, &info));
  assert_int_equal(info.pooling_cls, 1);
  SP_CHECK_OK(sp_encoder_embed_ids(e, ids, lens, NSEQ, STRIDE, out));
  assert_int_equal(lens[0], 1);
  double nr = 0;
  for (int k = 0; k < H; k++) nr += (double)ref[k] * ref[k];
  float want[H];
  for (int k = 0; k < H; k++) want[k] = (float)(ref[k] / sqrt(nr));
  assert_true(rel_err(out, want) <= 1e-4);
  assert_true(rel_err(out + 4 * H, ref + 4 * H) > 1e-2); /* CLS of 8 tokens is not their mean */
  sp_encoder_free(e);
}

/* Loads the copy and expects SP_ERR_INVALID_ARGUMENT with `word` in the message. */
static void refused(const char *what, const char *word) {
  sp_encoder *e = NULL;
  sp_status st = sp_encoder_load(dev, tmp, SP_F32, &e);
  if (st != SP_ERR_INVALID_ARGUMENT || !strstr(sp_last_error(), word))
    fail_msg("%s: got %s '%s', expected SP_ERR_INVALID_ARGUMENT naming '%s'", what,
             sp_status_str(st), sp_last_error(), word);
  assert_null(e);
  printf("refused (%s): %s\n", what, sp_last_error());
}

static void test_refusals(void **state) {
  (void)state;
  sp_memory_stats before, after;
  SP_CHECK_OK(sp_memory_stats_get(dev, &before));
  struct {
    const char *file, *from, *to, *what, *word;
  } cases[] = {
      {"config.json", "\"model_type\": \"bert\"", "\"model_type\": \"roberta\"", "model_type",
       "model_type"},
      {"config.json", "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\"", "activation",
       "hidden_act"},
      {"config.json", "\"model_type\"",
       "\"position_embedding_type\": \"relative_key\", \"model_type\"", "relative positions",
       "position_embedding_type"},
      {"config.json", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3", "missing tensor",
       "encoder.layer.2"},
      {"config.json", "\"intermediate_size\": 64", "\"intermediate_size\": 48", "bad shape",
       "shape"},
      {"config.json", "\"hidden_size\": 32", "\"hidden_size\": 30", "heads", "num_attention_heads"},
      {"config.json", "\"vocab_size\": 64", "\"vocab_size\": 60", "vocabulary", "vocab_size"},
      {"config.json", "{", "[", "not JSON", "config.json"},
      {"1_Pooling/config.json", "\"pooling_mode_max_tokens\": false",
       "\"pooling_mode_max_tokens\": true", "max pooling", "pooling_mode_max_tokens"},
      {"1_Pooling/config.json", "\"pooling_mode_mean_tokens\": true",
       "\"pooling_mode_mean_tokens\": false", "no pooling", "pooling_mode_mean_tokens"},
      {"modules.json", "]",
       ", {\"path\": \"2_Dense\", \"type\": \"sentence_transformers.models.Dense\"}]",
       "Dense module", "Dense"},
      {"sentence_bert_config.json", "32", "64", "max_seq_length past positions", "max_seq_length"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    copy_tiny();
    edit(cases[i].file, cases[i].from, cases[i].to);
    refused(cases[i].what, cases[i].word);
  }
  char path[512];
  copy_tiny();
  snprintf(path, sizeof(path), "%s/vocab.txt", tmp);
  unlink(path);
  refused("no vocab", "tokenizer");
  copy_tiny();
  snprintf(path, sizeof(path), "%s/config.json", tmp);
  unlink(path);
  refused("no config", "config.json");
  copy_tiny();
  snprintf(path, sizeof(path), "%s/model.safetensors", tmp);
  unlink(path);
  refused("no weights", "model.safetensors");
  sp_encoder *e = NULL;
  SP_CHECK_STATUS(sp_encoder_load(dev, TINY, (sp_dtype)7, &e), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_load(NULL, TINY, SP_F32, &e), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_load(dev, NULL, SP_F32, &e), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_load(dev, TINY, SP_F32, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_null(e);
  SP_CHECK_OK(sp_memory_stats_get(dev, &after));
  if (after.allocated_bytes != before.allocated_bytes)
    fail_msg("refused loads left %zu bytes allocated (before %zu)", after.allocated_bytes,
             before.allocated_bytes);
}

static void test_bad_arguments(void **state) {
  (void)state;
  float out[2 * H];
  int32_t bad_ids[4] = {2, 64, 3, 0};
  uint32_t l3 = 3, l0 = 0, l5 = 5;
  SP_CHECK_STATUS(sp_encoder_embed_ids(enc, bad_ids, &l3, 1, 4, out), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "sequence 0, position 1"));
  SP_CHECK_STATUS(sp_encoder_embed_ids(enc, bad_ids, &l0, 1, 4, out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_embed_ids(enc, bad_ids, &l5, 1, 4, out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_embed_ids(enc, bad_ids, NULL, 1, 4, out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_embed_ids(enc, NULL, &l3, 1, 4, out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_embed_ids(enc, bad_ids, &l3, 1, 0, out), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_embed_ids(NULL, bad_ids, &l3, 1, 4, out), SP_ERR_INVALID_ARGUMENT);
  const char *texts[2] = {"w1", NULL};
  SP_CHECK_STATUS(sp_encoder_embed(enc, texts, 2, out), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "texts[1]"));
  SP_CHECK_STATUS(sp_encoder_embed(enc, texts, 1, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_embed(NULL, texts, 1, out), SP_ERR_INVALID_ARGUMENT);
  sp_encoder_info info;
  SP_CHECK_STATUS(sp_encoder_info_get(NULL, &info), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_info_get(enc, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_encoder_dim(NULL), 0);
  assert_int_equal(sp_encoder_dim(enc), H);
  assert_null(sp_encoder_tokenizer(NULL));
  sp_encoder_free(NULL);
  /* the device refuses to close while an encoder lives */
  sp_device *d2 = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  sp_encoder *e;
  SP_CHECK_OK(sp_encoder_load(d2, TINY, SP_F32, &e));
  SP_CHECK_STATUS(sp_device_close(d2), SP_ERR_BUSY);
  sp_encoder_free(e);
  SP_CHECK_OK(sp_device_close(d2));
}

static void *embed_thread(void *arg) {
  unsigned k = (unsigned)(uintptr_t)arg;
  float out[NSEQ * H];
  for (int it = 0; it < 20; it++) {
    unsigned first = (k + (unsigned)it) % NSEQ, n = NSEQ - first;
    TU_EXPECT_OK(sp_encoder_embed_ids(enc, ids + first * STRIDE, lens + first, n, STRIDE, out));
    for (unsigned i = 0; i < n; i++) {
      double e = rel_err(out + i * H, ref + (first + i) * H);
      TU_EXPECT(e <= 1e-4, "thread %u iteration %d sequence %u: error %.3g", k, it, first + i, e);
    }
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  pthread_t t[4];
  for (uintptr_t i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&t[i], NULL, embed_thread, (void *)i), 0);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_int_equal(tu_failures(), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matches_pytorch), cmocka_unit_test(test_texts),
      cmocka_unit_test(test_pooling_modules), cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_bad_arguments),   cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
