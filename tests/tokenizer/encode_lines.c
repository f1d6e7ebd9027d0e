/* Prints the ids of every line of stdin ('\n'-separated bytes) as the tokenizer encodes them, one
 * line of space-separated ids per input line, or "error: <message>" for a line it refuses.
 * Usage: tokenizer_encode_lines TOKENIZER_PATH [MAX_LEN (0: no limit)]
 * The comparison with Hugging Face (compare.py) and the offline fixture test use it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "streampool.h"

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s TOKENIZER_PATH [MAX_LEN]\n", argv[0]);
    return 2;
  }
  size_t max_len = argc == 3 ? strtoul(argv[2], NULL, 10) : 0;
  sp_tokenizer *tok = NULL;
  if (sp_tokenizer_load(argv[1], &tok) != SP_OK) {
    fprintf(stderr, "load: %s\n", sp_last_error());
    return 1;
  }
  char *line = NULL;
  size_t cap = 0, ids_cap = 0;
  int32_t *ids = NULL;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) >= 0) {
    size_t len = (size_t)n;
    if (len && line[len - 1] == '\n') len--;
    size_t need = len * 4 + 2, got = 0;
    if (need > ids_cap) {
      free(ids);
      ids_cap = need;
      ids = malloc(ids_cap * sizeof(*ids));
      if (!ids) return 1;
    }
    if (sp_tokenizer_encode(tok, line, len, max_len, ids, ids_cap, &got) != SP_OK) {
      printf("error: %s\n", sp_last_error());
      continue;
    }
    for (size_t i = 0; i < got; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
  }
  free(line);
  free(ids);
  sp_tokenizer_free(tok);
  return 0;
}
