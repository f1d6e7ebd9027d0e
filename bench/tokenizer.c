/* bench/tokenizer: WordPiece encoding throughput (a table, not a test): lines/s and tokens/s
 * (ids written, [CLS]/[SEP] included) on 1 and 4 threads, each thread encoding every line of
 * the corpus with one shared tokenizer, with truncation at 256 (all-MiniLM-L6-v2's
 * max_seq_length: we stop at the word that fills it, HF cuts after encoding all) and without;
 * beside it, Hugging Face `tokenizers` on the same lines in the same run (encode per line on one
 * thread, and encode_batch on 1 and 4 threads) when a Python with `tokenizers` is found.
 * Usage: tokenizer [TOKENIZER_PATH CORPUS [PYTHON]]
 * Defaults: the offline fixture (tests/tokenizer/fixture: vocab.txt and 400 varied lines) and the
 * venv `make test` builds (build/tokenizer-venv); the Python side needs tokenizer.json's
 * equivalent, so for it the vocab.txt is loaded with BertWordPieceTokenizer's defaults.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "streampool.h"
#include "bench_thread.h"

#define MAX_LEN 256 /* the truncated runs; the others run without a limit */
#define PASSES 40

typedef struct corpus {
  char **lines;
  size_t *lens, n;
} corpus;

typedef struct worker {
  const sp_tokenizer *tok;
  const corpus *c;
  size_t max_len;
  int32_t *ids; /* room for the longest line's ids */
  size_t cap;
  unsigned long long n_ids, bad;
} worker;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int read_corpus(const char *path, corpus *c) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t cap = 0, room = 0;
  char *line = NULL;
  ssize_t r;
  while ((r = getline(&line, &cap, f)) >= 0) {
    if (c->n == room) {
      room = room ? room * 2 : 1024;
      c->lines = realloc(c->lines, room * sizeof(*c->lines));
      c->lens = realloc(c->lens, room * sizeof(*c->lens));
      if (!c->lines || !c->lens) return -1;
    }
    c->lens[c->n] = (size_t)r - (r && line[r - 1] == '\n');
    c->lines[c->n++] = line;
    line = NULL;
    cap = 0;
  }
  free(line);
  fclose(f);
  return 0;
}

static void *work(void *p) {
  worker *w = p;
  for (int pass = 0; pass < PASSES; pass++)
    for (size_t i = 0; i < w->c->n; i++) {
      size_t n = 0;
      if (sp_tokenizer_encode(w->tok, w->c->lines[i], w->c->lens[i], w->max_len, w->ids, w->cap,
                              &n) != SP_OK)
        w->bad++;
      w->n_ids += n;
    }
  return NULL;
}

static void run(const sp_tokenizer *tok, const corpus *c, size_t max_len, int threads) {
  worker w[4] = {{0}};
  pthread_t th[4];
  size_t longest = 0;
  for (size_t i = 0; i < c->n; i++) longest = c->lens[i] > longest ? c->lens[i] : longest;
  for (int k = 0; k < threads; k++) {
    w[k] = (worker){.tok = tok, .c = c, .max_len = max_len, .cap = longest * 4 + 2};
    w[k].ids = malloc(w[k].cap * sizeof(*w[k].ids));
    if (!w[k].ids) exit(1);
  }
  double t0 = now_s();
  for (int k = 0; k < threads; k++) bench_thread_start(&th[k], work, &w[k], "bench_tokenizer");
  unsigned long long ids = 0, bad = 0;
  for (int k = 0; k < threads; k++) {
    pthread_join(th[k], NULL);
    ids += w[k].n_ids;
    bad += w[k].bad;
  }
  for (int k = 0; k < threads; k++) free(w[k].ids);
  double dt = now_s() - t0;
  printf("| streampool sp_tokenizer_encode | %s | %d | %.1f k | %.3f M |%s\n",
         max_len ? "256" : "none", threads, (double)c->n * PASSES * threads / dt / 1e3,
         (double)ids / dt / 1e6, bad ? " (errors!)" : "");
}

int main(int argc, char **argv) {
  const char *tok_path = argc > 2 ? argv[1] : SP_SOURCE_DIR "/tests/tokenizer/fixture/vocab.txt";
  const char *corpus_path =
      argc > 2 ? argv[2] : SP_SOURCE_DIR "/tests/tokenizer/fixture/corpus.txt";
  char py[4096];
  if (argc > 3) snprintf(py, sizeof(py), "%s", argv[3]);
  else snprintf(py, sizeof(py), "%s/tokenizer-venv/bin/python", SP_BINARY_DIR);
  sp_tokenizer *tok = NULL;
  corpus c = {0};
  if (sp_tokenizer_load(tok_path, &tok) != SP_OK) {
    fprintf(stderr, "tokenizer: %s\n", sp_last_error());
    return 1;
  }
  if (read_corpus(corpus_path, &c) != 0 || !c.n) {
    fprintf(stderr, "tokenizer: cannot read corpus %s\n", corpus_path);
    return 1;
  }
  printf("tokenizer: %zu lines x %d passes (Hugging Face: %d), %ld CPUs online, %s\n\n", c.n,
         PASSES, PASSES / 8, sysconf(_SC_NPROCESSORS_ONLN), tok_path);
  printf("| encoder | truncation | threads | lines/s | tokens/s |\n|---|---|---|---|---|\n");
  int have_py = access(py, X_OK) == 0;
  for (int trunc = 1; trunc >= 0; trunc--) {
    run(tok, &c, trunc ? MAX_LEN : 0, 1);
    run(tok, &c, trunc ? MAX_LEN : 0, 4);
    fflush(stdout);
    for (int threads = 1; have_py && threads <= 4; threads *= 4) {
      char cmd[12288];
      snprintf(cmd, sizeof(cmd),
               "RAYON_NUM_THREADS=%d '%s' '%s/bench/tokenizer_hf.py' '%s' '%s' %d %d %d", threads,
               py, SP_SOURCE_DIR, tok_path, corpus_path, trunc ? MAX_LEN : 0, PASSES, threads);
      if (system(cmd) != 0) printf("| Hugging Face tokenizers | - | %d | failed | - |\n", threads);
    }
  }
  if (!have_py) printf("| Hugging Face tokenizers | - | - | skipped: no %s | - |\n", py);
  for (size_t i = 0; i < c.n; i++) free(c.lines[i]);
  free(c.lines);
  free(c.lens);
  sp_tokenizer_free(tok);
  return 0;
}
