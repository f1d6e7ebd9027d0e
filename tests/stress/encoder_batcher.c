/* Goal: the encoder batcher answers every caller with exactly the embedding of its own text,
 * under 48 client threads sending texts of mixed lengths (many buckets in one pass, truncated
 * texts too) to a host device that delays every command by a random amount
 * (STREAMPOOL_HOST_JITTER_US); a pass never holds more padded tokens than max_tokens; destroy
 * answers every text already accepted without waiting out max_delay_us; bad arguments and bad
 * text are refused on the caller's thread; more workers than exclusive slots fail cleanly.
 * Method: the encoder helper's tiny random BERT fixture (tests/fixtures/encoder/tiny_bert: hidden
 * 32, 2 layers, max_seq 32); TEXTS seeded texts of 2 to 32 tokens (buckets 8, 16 and 32; a few
 * cut at max_seq) made of its words w0..w58 and unknown words; the reference of each is a
 * one-at-a-time sp_encoder_embed on the main thread. Every batcher output is compared with its own
 * reference: relative max error (max |y - ref| / max |ref|) <= 1e-5. Not bit-exact on purpose: a
 * pass runs a text in a larger BLAS product (batch x bucket rows instead of one text's), and BLAS
 * may pick another kernel (another summation order) for another row count; f32 rounding of that
 * order stays near 1e-7, far below 1e-5, while a text answered with another's embedding, a stale or
 * an unwritten row is off by O(1). The largest error seen is printed. The token budget is checked
 * through the counters: with every text in the 32-token bucket and max_tokens 128, no pass may hold
 * more than 4. Sized down under ThreadSanitizer (tu_scale).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

enum { CLIENTS = 48, TEXTS = 512, TEXT_MAX = 1024, MAX_SEQ = 32 };

static const char folder[] = SP_TEST_SOURCE_DIR "/fixtures/encoder/tiny_bert";
static sp_device *dev;
static sp_encoder *enc;
static unsigned dim;
static char texts[TEXTS][TEXT_MAX];
static float *refs; /* [TEXTS][dim] */
static _Atomic double worst;

typedef struct client {
  sp_encoder_batcher *b;
  unsigned index, first, count, stride; /* texts first + k*stride (mod TEXTS), k < count */
  atomic_uint *entered;
} client;

/* A seeded text of n words (one token each): the fixture's words w0..w58, one in four an
 * unknown letter run ([UNK]). */
static void make_text(tu_rng *r, char *out, unsigned n) {
  size_t len = 0;
  for (unsigned w = 0; w < n && len + 16 < TEXT_MAX; w++) {
    if (len) out[len++] = ' ';
    if (tu_rng_below(r, 4)) {
      len += (size_t)snprintf(out + len, TEXT_MAX - len, "w%u", (unsigned)tu_rng_below(r, 59));
    } else {
      for (unsigned k = 1 + (unsigned)tu_rng_below(r, 6); k; k--)
        out[len++] = (char)('a' + tu_rng_below(r, 26));
    }
  }
  out[len] = 0;
}

static void check_text(unsigned who, unsigned t, const float *y) {
  const float *want = refs + (size_t)t * dim;
  double scale = 1e-6, err = 0;
  for (unsigned o = 0; o < dim; o++) scale = fmax(scale, fabs(want[o]));
  for (unsigned o = 0; o < dim; o++) {
    double d = fabs((double)y[o] - want[o]);
    if (!(d <= err)) err = isnan(d) ? INFINITY : d;
  }
  double e = err / scale, w = atomic_load(&worst);
  while (e > w && !atomic_compare_exchange_weak(&worst, &w, e)) {
  }
  TU_EXPECT(e <= 1e-5, "client %u text %u: out[0] %.8g, its reference %.8g (rel err %.3g)", who, t,
            (double)y[0], (double)want[0], e);
}

static void *client_main(void *p) {
  client *c = p;
  float *y = malloc(sizeof(float) * dim);
  TU_EXPECT(y != NULL, "out of memory");
  if (c->entered) atomic_fetch_add(c->entered, 1);
  for (unsigned k = 0; y && k < c->count; k++) {
    unsigned t = (c->first + k * c->stride) % TEXTS;
    memset(y, 0xff, sizeof(float) * dim); /* NaN: a row never written fails the check */
    TU_EXPECT_OK(sp_encoder_batcher_embed(c->b, texts[t], y));
    check_text(c->index, t, y);
  }
  free(y);
  return NULL;
}

static void run_clients(sp_encoder_batcher *b, unsigned count, atomic_uint *entered, pthread_t *t,
                        client *c, unsigned n) {
  for (unsigned i = 0; i < n; i++) {
    c[i] = (client){.b = b,
                    .index = i,
                    .first = i * 37,
                    .count = count,
                    .stride = 1 + 2 * i,
                    .entered = entered};
    assert_int_equal(pthread_create(&t[i], NULL, client_main, &c[i]), 0);
  }
}

static int setup(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_JITTER_US", "40", 0);
  dev = tu_open_host(16, SP_STREAMS_ROUND_ROBIN);
  if (sp_encoder_load(dev, folder, SP_F32, &enc) != SP_OK) {
    fprintf(stderr, "sp_encoder_load: %s\n", sp_last_error());
    return -1;
  }
  dim = sp_encoder_dim(enc);
  sp_encoder_info info;
  if (sp_encoder_info_get(enc, &info) != SP_OK || info.max_seq != MAX_SEQ) return -1;
  tu_rng r = {tu_seed() * 11 + 3};
  for (unsigned i = 0; i < TEXTS; i++) /* 2..32 tokens; some cut at MAX_SEQ */
    make_text(&r, texts[i], (unsigned)tu_rng_below(&r, 40));
  refs = malloc(sizeof(float) * TEXTS * dim);
  if (!refs) return -1;
  for (unsigned i = 0; i < TEXTS; i++) {
    const char *t = texts[i];
    if (sp_encoder_embed(enc, &t, 1, refs + (size_t)i * dim) != SP_OK) return -1;
  }
  sp_stream_release_current(dev);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  sp_encoder_free(enc);
  sp_device_close(dev);
  free(refs);
  return 0;
}

static void test_every_caller_gets_its_text(void **state) {
  (void)state;
  tu_failures_reset();
  unsigned per_client = (unsigned)tu_scale(40);
  sp_encoder_batcher_config cfg = {
      .max_tokens = 256, .max_batch = 32, .max_delay_us = 300, .workers = 3};
  sp_encoder_batcher *b;
  SP_CHECK_OK(sp_encoder_batcher_create(enc, &cfg, &b));
  pthread_t t[CLIENTS];
  client c[CLIENTS];
  unsigned long long t0 = tu_now_ns();
  run_clients(b, per_client, NULL, t, c, CLIENTS);
  for (unsigned i = 0; i < CLIENTS; i++) pthread_join(t[i], NULL);
  double secs = (double)(tu_now_ns() - t0) / 1e9;
  sp_batcher_stats st;
  SP_CHECK_OK(sp_encoder_batcher_stats_get(b, &st));
  sp_encoder_batcher_destroy(b);
  assert_int_equal(tu_failures(), 0);
  uint64_t want = (uint64_t)CLIENTS * per_client;
  if (st.requests != want || st.failed || st.queued)
    fail_msg("stats: requests %llu (want %llu), failed %llu, queued %llu",
             (unsigned long long)st.requests, (unsigned long long)want,
             (unsigned long long)st.failed, (unsigned long long)st.queued);
  if (!st.batches || st.requests > st.batches * cfg.max_batch || !st.run_ns)
    fail_msg("stats: %llu passes for %llu texts of at most %u, run_ns %llu",
             (unsigned long long)st.batches, (unsigned long long)st.requests, cfg.max_batch,
             (unsigned long long)st.run_ns);
  fprintf(stderr,
          "encoder batcher: %llu texts in %llu passes (%.1f texts/pass) in %.2f s; "
          "largest relative error vs one-at-a-time %.3g\n",
          (unsigned long long)st.requests, (unsigned long long)st.batches,
          (double)st.requests / (double)st.batches, secs, atomic_load(&worst));
}

/* Every text in one bucket (17..32 tokens) and max_tokens 128: at most 4 texts a pass. */
static void test_token_budget(void **state) {
  (void)state;
  tu_failures_reset();
  const sp_tokenizer *tok = sp_encoder_tokenizer(enc);
  unsigned pick[TEXTS], n = 0;
  for (unsigned i = 0; i < TEXTS; i++) {
    int32_t ids[MAX_SEQ];
    size_t len = 0;
    SP_CHECK_OK(sp_tokenizer_encode(tok, texts[i], strlen(texts[i]), MAX_SEQ, ids, MAX_SEQ, &len));
    if (len > 16 && len <= 32) pick[n++] = i;
  }
  if (n < 16) fail_msg("only %u seeded texts of 17..32 tokens", n);
  sp_encoder_batcher_config cfg = {
      .max_tokens = 128, .max_batch = 256, .max_delay_us = 2000, .workers = 2};
  sp_encoder_batcher *b;
  SP_CHECK_OK(sp_encoder_batcher_create(enc, &cfg, &b));
  enum { K = 16 };
  pthread_t t[K];
  client c[K];
  for (unsigned i = 0; i < K; i++) { /* text pick[i], count times (stride TEXTS: the same) */
    c[i] = (client){
        .b = b, .index = i, .first = pick[i], .count = (unsigned)tu_scale(20), .stride = TEXTS};
    assert_int_equal(pthread_create(&t[i], NULL, client_main, &c[i]), 0);
  }
  for (unsigned i = 0; i < K; i++) pthread_join(t[i], NULL);
  sp_batcher_stats st;
  SP_CHECK_OK(sp_encoder_batcher_stats_get(b, &st));
  sp_encoder_batcher_destroy(b);
  assert_int_equal(tu_failures(), 0);
  if (st.requests > 4 * st.batches)
    fail_msg("%llu texts of bucket 32 in %llu passes: more than max_tokens 128 / 32 = 4 a pass",
             (unsigned long long)st.requests, (unsigned long long)st.batches);
}

/* Texts parked behind a long max_delay_us are all answered when destroy starts. */
static void destroy_with_parked_texts(unsigned workers) {
  tu_failures_reset();
  sp_encoder_batcher_config cfg = {
      .max_tokens = 1u << 20, .max_batch = 1000, .max_delay_us = 5000000, .workers = workers};
  sp_encoder_batcher *b;
  SP_CHECK_OK(sp_encoder_batcher_create(enc, &cfg, &b));
  pthread_t t[CLIENTS];
  client c[CLIENTS];
  atomic_uint entered = 0;
  run_clients(b, 1, &entered, t, c, CLIENTS);
  sp_batcher_stats st = {0};
  for (int waited = 0; waited < 20000; waited++) { /* up to 20 s */
    SP_CHECK_OK(sp_encoder_batcher_stats_get(b, &st));
    if (st.queued == CLIENTS) break;
    tu_sleep_us(1000);
  }
  if (st.queued != CLIENTS)
    fail_msg("only %llu of %d texts queued", (unsigned long long)st.queued, CLIENTS);
  unsigned long long t0 = tu_now_ns();
  sp_encoder_batcher_destroy(b); /* must not wait out the 5 s delay */
  double secs = (double)(tu_now_ns() - t0) / 1e9;
  for (unsigned i = 0; i < CLIENTS; i++) pthread_join(t[i], NULL);
  assert_int_equal(tu_failures(), 0);
  if (secs >= 4) fail_msg("destroy took %.1f s: it waited for max_delay_us", secs);
}

/* With several workers the idle ones wait while one collects: destroy must wake them all. */
static void test_destroy_answers_accepted(void **state) {
  (void)state;
  destroy_with_parked_texts(1);
  destroy_with_parked_texts(4);
}

/* Exclusive mode: each worker owns a slot; more workers than slots fail cleanly, and the slots
 * come back. */
static void test_exclusive_slots(void **state) {
  (void)state;
  sp_device *ex = tu_open_host(4, SP_STREAMS_EXCLUSIVE); /* 3 slots */
  sp_encoder *e;
  SP_CHECK_OK(sp_encoder_load(ex, folder, SP_F32, &e));
  sp_encoder_batcher_config cfg = {.workers = 5};
  sp_encoder_batcher *b = NULL;
  SP_CHECK_STATUS(sp_encoder_batcher_create(e, &cfg, &b), SP_ERR_POOL_EXHAUSTED);
  assert_null(b);
  cfg.workers = 3;
  SP_CHECK_OK(sp_encoder_batcher_create(e, &cfg, &b));
  float *y = malloc(sizeof(float) * dim);
  assert_non_null(y);
  SP_CHECK_OK(sp_encoder_batcher_embed(b, texts[5], y));
  sp_encoder_batcher_destroy(b);
  check_text(0, 5, y);
  assert_int_equal(tu_failures(), 0);
  free(y);
  sp_encoder_free(e);
  sp_device_close(ex);
}

static void test_bad_arguments(void **state) {
  (void)state;
  sp_encoder_batcher *b = NULL;
  sp_encoder_batcher_config small = {.max_tokens = MAX_SEQ - 1}; /* below max_seq's bucket */
  sp_encoder_batcher_config big = {.max_batch = 1u << 20};
  SP_CHECK_STATUS(sp_encoder_batcher_create(NULL, NULL, &b), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_batcher_create(enc, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_batcher_create(enc, &small, &b), SP_ERR_INVALID_ARGUMENT);
  if (!strstr(sp_last_error(), "max_tokens")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_STATUS(sp_encoder_batcher_create(enc, &big, &b), SP_ERR_INVALID_ARGUMENT);
  assert_null(b);
  SP_CHECK_OK(sp_encoder_batcher_create(enc, NULL, &b));
  float *y = malloc(sizeof(float) * dim);
  assert_non_null(y);
  SP_CHECK_STATUS(sp_encoder_batcher_embed(NULL, "a", y), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_batcher_embed(b, NULL, y), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_batcher_embed(b, "a", NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_batcher_embed(b, "bad \xff utf-8", y), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_encoder_batcher_stats_get(b, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_batcher_stats st;
  SP_CHECK_OK(sp_encoder_batcher_stats_get(b, &st));
  if (st.requests)
    fail_msg("a refused text reached a pass: requests %llu", (unsigned long long)st.requests);
  SP_CHECK_OK(sp_encoder_batcher_embed(b, "", y)); /* [CLS] [SEP] only */
  sp_encoder_batcher_destroy(b);
  sp_encoder_batcher_destroy(NULL);
  const char *empty = "";
  float *want = malloc(sizeof(float) * dim);
  assert_non_null(want);
  SP_CHECK_OK(sp_encoder_embed(enc, &empty, 1, want));
  sp_stream_release_current(dev);
  for (unsigned o = 0; o < dim; o++)
    if (fabsf(y[o] - want[o]) > 1e-5f)
      fail_msg("empty text out[%u]: batcher %g, direct %g", o, (double)y[o], (double)want[o]);
  free(y);
  free(want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_caller_gets_its_text),
      cmocka_unit_test(test_token_budget),
      cmocka_unit_test(test_destroy_answers_accepted),
      cmocka_unit_test(test_exclusive_slots),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
