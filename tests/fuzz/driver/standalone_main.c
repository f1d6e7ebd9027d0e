/* Runs a libFuzzer target without libFuzzer, as a ctest regression test.
 *
 * Goal: every fuzz target runs in CI on every compiler and sanitizer, not only under clang.
 * Method: feed each file of $SP_FUZZ_CORPUS (if set), then SP_FUZZ_RUNS (default 2000) seeded
 * pseudo-random inputs (seed SP_FUZZ_SEED, default 1), some of them mutations of corpus files;
 * SP_FUZZ_RUNS_MAX (set per test where one input is expensive) caps SP_FUZZ_RUNS.
 * A target reports bugs by crashing or through sanitizers, as under libFuzzer.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng_state;
static uint64_t rng_next(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

enum { FUZZ_MAX_CORPUS = 256, FUZZ_MAX_INPUT = 1 << 16 };

static size_t load_file(const char *path, uint8_t *buf) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  size_t n = fread(buf, 1, FUZZ_MAX_INPUT, f);
  fclose(f);
  return n;
}

int main(void) {
  static uint8_t corpus[FUZZ_MAX_CORPUS][FUZZ_MAX_INPUT];
  static size_t corpus_len[FUZZ_MAX_CORPUS];
  size_t n_corpus = 0;
  const char *dir = getenv("SP_FUZZ_CORPUS");
  if (dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && n_corpus < FUZZ_MAX_CORPUS) {
      if (e->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
      corpus_len[n_corpus] = load_file(path, corpus[n_corpus]);
      LLVMFuzzerTestOneInput(corpus[n_corpus], corpus_len[n_corpus]);
      n_corpus++;
    }
    if (d) closedir(d);
  }
  const char *runs_env = getenv("SP_FUZZ_RUNS");
  const char *seed_env = getenv("SP_FUZZ_SEED");
  const char *max_env = getenv("SP_FUZZ_RUNS_MAX");
  long runs = runs_env ? strtol(runs_env, NULL, 10) : 2000;
  long runs_max = max_env ? strtol(max_env, NULL, 10) : runs;
  if (runs > runs_max) runs = runs_max;
  rng_state = seed_env ? strtoull(seed_env, NULL, 10) : 1;
  if (!rng_state) rng_state = 1;
  static uint8_t buf[FUZZ_MAX_INPUT];
  for (long i = 0; i < runs; i++) {
    size_t n;
    if (n_corpus && (rng_next() & 1)) { /* mutate a corpus entry */
      size_t k = rng_next() % n_corpus;
      n = corpus_len[k];
      memcpy(buf, corpus[k], n);
      for (int m = 0, flips = 1 + (int)(rng_next() % 8); m < flips && n; m++)
        buf[rng_next() % n] = (uint8_t)rng_next();
      if (rng_next() % 4 == 0 && n) n = rng_next() % n; /* truncate */
    } else {
      n = rng_next() % 512;
      for (size_t j = 0; j < n; j++) buf[j] = (uint8_t)rng_next();
    }
    LLVMFuzzerTestOneInput(buf, n);
  }
  printf("fuzz driver: %zu corpus files, %ld random inputs, no crash\n", n_corpus, runs);
  return 0;
}
