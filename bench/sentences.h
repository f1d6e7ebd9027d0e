/* Seeded English-like sentences of a target token count, shared by bench/encoder.c and
 * `streampool run --model DIR` (tools/run_encoder.c), so both measure the same kind of input.
 * A sentence is words drawn by xorshift64* from a fixed list of common words, added while the
 * tokenizer's count ([CLS] and [SEP] included) stays <= tokens: with a BERT uncased vocabulary
 * nearly every sentence has tokens or tokens - 1 ids. The PyTorch peer reads the same sentences
 * from a file (bench/encoder --write-sentences), not from a second copy of this generator.
 * Header-only; no state besides the caller's seed.
 */
#ifndef SP_BENCH_SENTENCES_H
#define SP_BENCH_SENTENCES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "streampool.h"

static const char *const bench_words[] = {
    "the",      "a",        "of",       "and",      "to",       "in",      "is",       "was",
    "for",      "on",       "with",     "as",       "by",       "at",      "from",     "that",
    "it",       "this",     "which",    "or",       "be",       "are",     "an",       "not",
    "new",      "city",     "river",    "music",    "people",   "during",  "after",    "time",
    "first",    "world",    "year",     "school",   "game",     "team",    "state",    "small",
    "large",    "early",    "history",  "village",  "family",   "station", "church",   "water",
    "language", "several",  "between",  "under",    "against",  "known",   "called",   "built",
    "played",   "released", "received", "became",   "although", "because", "however",  "while",
    "region",   "county",   "north",    "south",    "western",  "eastern", "island",   "road",
    "bridge",   "market",   "garden",   "library",  "museum",   "theatre", "festival", "season",
    "album",    "song",     "film",     "novel",    "author",   "company", "product",  "service",
    "computer", "network",  "software", "system",   "engine",   "model",   "energy",   "light",
    "quickly",  "slowly",   "quietly",  "bright",   "dark",     "ancient", "modern",   "famous",
    "general",  "public",   "private",  "local",    "national", "royal",   "original", "final",
    "students", "children", "workers",  "players",  "members",  "leaders", "soldiers", "artists",
    "seven",    "twelve",   "hundred",  "thousand", "million",  "percent", "nearly",   "almost",
};

static inline uint64_t bench_sentence_rand(uint64_t *x) {
  *x ^= *x >> 12;
  *x ^= *x << 25;
  *x ^= *x >> 27;
  return *x * 0x2545F4914F6CDD1Dull;
}

/* Writes into buf (cap bytes) a sentence of at most `tokens` ids under tok, drawing from *seed
 * (nonzero). Returns 0, or -1 when buf is too small for one word or tok refuses the text. */
static inline int bench_sentence(const sp_tokenizer *tok, unsigned tokens, uint64_t *seed,
                                 char *buf, size_t cap, int32_t *ids, size_t ids_cap) {
  size_t len = 0, n = 0, words = sizeof(bench_words) / sizeof(bench_words[0]);
  buf[0] = 0;
  for (;;) {
    const char *w = bench_words[bench_sentence_rand(seed) % words];
    size_t wl = strlen(w), at = len;
    if (len + wl + 2 > cap) return len ? 0 : -1;
    if (len) buf[len++] = ' ';
    memcpy(buf + len, w, wl + 1);
    len += wl;
    if (sp_tokenizer_encode(tok, buf, len, 0, ids, ids_cap, &n) != SP_OK) return -1;
    if (n > tokens) { /* one word too many: drop it */
      buf[at] = 0;
      return at ? 0 : -1;
    }
    if (n == tokens) return 0;
  }
}

#endif /* SP_BENCH_SENTENCES_H */
