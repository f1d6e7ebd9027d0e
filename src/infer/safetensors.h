/* The safetensors parser (internal): a file or a memory buffer -> a checked list of tensors.
 *
 * Format: an 8-byte little-endian header length N, N bytes of JSON mapping tensor names to
 * {"dtype","shape","data_offsets":[begin,end]} (plus an optional "__metadata__" object), then the
 * data section; offsets are relative to the data section. Everything is checked: header length
 * (<= the buffer and <= SP__ST_HEADER_MAX), JSON syntax, dtypes (F32, BF16, F16), shapes (rank
 * <= SP__ST_RANK_MAX, element counts without overflow), offsets inside the data section, exactly
 * dtype size x elements long, not overlapping each other, names unique. Any violation gives
 * SP_ERR_INVALID_ARGUMENT with a message naming the problem and the tensor; a torch.save file (a
 * zip archive or a bare pickle) is named as what it is. The "__metadata__" object's string values
 * are kept (sp__safetensors_meta): the model loader reads its architecture from there.
 *
 * Thread safety: a parsed sp__safetensors is immutable; any thread may read it.
 */
#ifndef SP_INFER_SAFETENSORS_H
#define SP_INFER_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "streampool.h"

enum {
  SP__ST_RANK_MAX = 8,                   /* the largest tensor rank accepted           */
  SP__ST_HEADER_MAX = 100 * 1024 * 1024, /* the largest JSON header accepted, bytes    */
  SP__ST_NAME_MAX = 256,                 /* the longest tensor name accepted, bytes    */
};

/* The element types a file may hold (the model's own dtype is an sp_dtype: f32, bf16 or f16). */
typedef enum sp__st_dtype {
  SP__ST_F32 = 0,
  SP__ST_BF16,
  SP__ST_F16,
  SP__ST_I64, /* only with SP__ST_INTEGERS */
  SP__ST_I32, /* only with SP__ST_INTEGERS */
} sp__st_dtype;

/* Parse flags. SP__ST_INTEGERS: I64 and I32 tensors are accepted too (checked like the others):
 * Hugging Face BERT files carry an I64 position_ids buffer that the encoder loader skips. */
enum { SP__ST_INTEGERS = 1u };

typedef struct sp__st_tensor {
  const char *name;                /* NUL-terminated, owned by the sp__safetensors       */
  sp__st_dtype dtype;              /* as the file stores it                               */
  unsigned rank;                   /* 0..SP__ST_RANK_MAX                                  */
  uint64_t shape[SP__ST_RANK_MAX]; /* [0, rank) valid                                     */
  uint64_t numel;                  /* product of shape (1 for rank 0)                    */
  const unsigned char *data;       /* into the parsed buffer; may be unaligned           */
  size_t bytes;                    /* numel x dtype size                                  */
} sp__st_tensor;

typedef struct sp__safetensors {
  size_t n_tensors;
  sp__st_tensor *tensors;  /* in header order                                     */
  char *names;             /* storage for every name                              */
  unsigned char *file_buf; /* the whole file when read by sp__safetensors_read   */
  struct cJSON *meta;      /* the "__metadata__" object (detached), or NULL       */
} sp__safetensors;

/* Bytes of one element of dt. */
static inline size_t sp__st_dtype_size(sp__st_dtype dt) {
  return dt == SP__ST_I64 ? 8u : dt == SP__ST_F32 || dt == SP__ST_I32 ? 4u : 2u;
}

/* Parses buf[0, len) (not copied: tensors point into it; it must outlive *out). origin names the
 * source in messages (a path, or "buffer"). SP_ERR_INVALID_ARGUMENT for anything malformed,
 * SP_ERR_HOST_MEMORY. Any thread. */
sp_status sp__safetensors_parse(const void *buf, size_t len, const char *origin,
                                sp__safetensors **out);

/* sp__safetensors_parse with flags (SP__ST_*). */
sp_status sp__safetensors_parse_flags(const void *buf, size_t len, const char *origin,
                                      unsigned flags, sp__safetensors **out);

/* Reads the file at path with stdio and parses it; the result owns the file's bytes. Also
 * SP_ERR_INVALID_ARGUMENT when the file cannot be opened or read (with errno's text). */
sp_status sp__safetensors_read(const char *path, sp__safetensors **out);

/* sp__safetensors_read with flags (SP__ST_*). */
sp_status sp__safetensors_read_flags(const char *path, unsigned flags, sp__safetensors **out);

/* The tensor called name, or NULL. */
const sp__st_tensor *sp__safetensors_find(const sp__safetensors *st, const char *name);

/* The string value of key in the file's "__metadata__"; NULL when there is no such key. A key
 * whose value is not a string gives *not_string = true (and NULL). Any thread. */
const char *sp__safetensors_meta(const sp__safetensors *st, const char *key, bool *not_string);

/* Element i of t as f32 (exact for the three float dtypes; integers rounded to f32). */
float sp__st_elem(const sp__st_tensor *t, size_t i);

/* Writes t's numel elements to dst as dt (f32, bf16 or f16; a narrowing rounds to nearest even, f16
 * overflowing to infinity above 65504). */
void sp__st_convert(const sp__st_tensor *t, sp_dtype dt, void *dst);

void sp__safetensors_free(sp__safetensors *st); /* NULL ok */

#endif /* SP_INFER_SAFETENSORS_H */
