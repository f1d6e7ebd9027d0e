/* Goal: the safetensors parser never crashes, reads out of bounds or leaks on any input, and what
 * it accepts satisfies its invariants.
 * Method: bytes -> sp__safetensors_parse (memory only, no filesystem). On success every tensor's
 * data lies inside the input, bytes == numel x dtype size, rank <= SP__ST_RANK_MAX, and a lookup
 * by name finds it; the bytes are read (so ASan sees any bad pointer). On failure the status is
 * SP_ERR_INVALID_ARGUMENT with a message. Seeds: tests/fuzz/corpus/safetensors/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "infer/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int cond) {
  if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sp__safetensors *st = NULL;
  sp_status s = sp__safetensors_parse(data, size, "fuzz", &st);
  if (s != SP_OK) {
    fuzz_check(s == SP_ERR_INVALID_ARGUMENT || s == SP_ERR_HOST_MEMORY);
    fuzz_check(sp_last_error()[0] != '\0');
    return 0;
  }
  bool not_string = false;
  const char *arch = sp__safetensors_meta(st, "streampool.arch", &not_string);
  fuzz_check(!(arch && not_string));
  volatile unsigned sum = arch ? (unsigned)strlen(arch) : 0;
  for (size_t i = 0; i < st->n_tensors; i++) {
    const sp__st_tensor *t = &st->tensors[i];
    fuzz_check(t->rank <= SP__ST_RANK_MAX);
    fuzz_check(t->bytes == t->numel * sp__st_dtype_size(t->dtype));
    fuzz_check(t->data >= data && t->data + t->bytes <= data + size);
    fuzz_check(sp__safetensors_find(st, t->name) == t);
    for (size_t b = 0; b < t->bytes; b++) sum += t->data[b];
    if (t->numel) sum += (unsigned)(sp__st_elem(t, t->numel - 1) != 0.0f);
  }
  (void)sum;
  sp__safetensors_free(st);
  return 0;
}
