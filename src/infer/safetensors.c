/* The safetensors parser: header length, JSON header (cJSON), dtypes, shapes, offsets.
 *
 * Owns: sp__safetensors objects (tensor table, name storage, and the file's bytes when read from
 * a path). Invariants after a successful parse: every tensor has dtype F32, BF16 or F16 (or I64
 * or I32 when parsed with SP__ST_INTEGERS), rank <=
 * SP__ST_RANK_MAX, numel = product of shape without overflow, bytes = numel x dtype size, its
 * data lies inside the data section, no two tensors with bytes > 0 overlap, names are unique and
 * at most SP__ST_NAME_MAX bytes. Messages name the origin, the problem and the tensor.
 * Locking: none; parsing touches only its own objects.
 */
#include "infer/safetensors.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/status.h"

#define SP__ST_INT_MAX 9007199254740992.0 /* 2^53: the largest exactly representable integer */

typedef struct st_span { /* a tensor's byte range, for the overlap check */
  uint64_t begin, end;
  size_t index;
} st_span;

static int st_span_cmp(const void *a, const void *b) {
  const st_span *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : (x->end > y->end ? 1 : 0);
}

static int st_name_cmp(const void *a, const void *b) {
  const sp__st_tensor *x = *(const sp__st_tensor *const *)a;
  const sp__st_tensor *y = *(const sp__st_tensor *const *)b;
  return strcmp(x->name, y->name);
}

/* A JSON number that is a non-negative integer below 2^53. */
static int st_json_u64(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return 0;
  double d = j->valuedouble;
  if (!(d >= 0.0) || d > SP__ST_INT_MAX || floor(d) != d) return 0;
  *out = (uint64_t)d;
  return 1;
}

static sp_status st_parse_dtype(const cJSON *j, const char *origin, const char *name,
                                unsigned flags, sp__st_dtype *out) {
  if (!cJSON_IsString(j) || !j->valuestring)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: tensor '%s': \"dtype\" missing or "
                    "not a string",
                    origin, name);
  if (!strcmp(j->valuestring, "F32")) *out = SP__ST_F32;
  else if (!strcmp(j->valuestring, "BF16")) *out = SP__ST_BF16;
  else if (!strcmp(j->valuestring, "F16")) *out = SP__ST_F16;
  else if ((flags & SP__ST_INTEGERS) && !strcmp(j->valuestring, "I64")) *out = SP__ST_I64;
  else if ((flags & SP__ST_INTEGERS) && !strcmp(j->valuestring, "I32")) *out = SP__ST_I32;
  else
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: tensor '%s': dtype %.32s is not "
                    "supported (F32, BF16 or F16)",
                    origin, name, j->valuestring);
  return SP_OK;
}

static sp_status st_parse_shape(const cJSON *j, const char *origin, sp__st_tensor *t) {
  if (!cJSON_IsArray(j))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: tensor '%s': \"shape\" missing or "
                    "not an array",
                    origin, t->name);
  int rank = cJSON_GetArraySize(j);
  if (rank > SP__ST_RANK_MAX)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: tensor '%s': rank %d exceeds %d",
                    origin, t->name, rank, SP__ST_RANK_MAX);
  uint64_t numel = 1;
  unsigned r = 0;
  for (const cJSON *d = j->child; d; d = d->next, r++) {
    uint64_t v;
    if (!st_json_u64(d, &v))
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "safetensors %s: tensor '%s': shape[%u] is not a "
                      "non-negative integer",
                      origin, t->name, r);
    if (v && numel > UINT64_MAX / 4 / v)
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "safetensors %s: tensor '%s': element count "
                      "overflows",
                      origin, t->name);
    t->shape[r] = v;
    numel *= v;
  }
  t->rank = r;
  t->numel = numel;
  return SP_OK;
}

static sp_status st_parse_offsets(const cJSON *j, const char *origin, sp__st_tensor *t,
                                  size_t data_len, st_span *span) {
  uint64_t b, e;
  if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != 2 || !st_json_u64(j->child, &b) ||
      !st_json_u64(j->child->next, &e))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: tensor '%s': \"data_offsets\" is "
                    "not [begin, end] of non-negative integers",
                    origin, t->name);
  if (b > e)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: tensor '%s': data_offsets begin "
                    "%llu > end %llu",
                    origin, t->name, (unsigned long long)b, (unsigned long long)e);
  if (e > data_len)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: tensor '%s': data_offsets end "
                    "%llu is past the data section (%zu bytes)",
                    origin, t->name, (unsigned long long)e, data_len);
  t->bytes = (size_t)(t->numel * sp__st_dtype_size(t->dtype));
  if (e - b != t->bytes)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: tensor '%s': data_offsets span "
                    "%llu bytes but shape and dtype need %zu",
                    origin, t->name, (unsigned long long)(e - b), t->bytes);
  span->begin = b;
  span->end = e;
  return SP_OK;
}

static sp_status st_parse_tensor(const cJSON *j, const char *origin, unsigned flags,
                                 sp__st_tensor *t, const unsigned char *data, size_t data_len,
                                 st_span *span) {
  if (!cJSON_IsObject(j))
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: tensor '%s': entry is not an "
                    "object",
                    origin, t->name);
  sp_status st = st_parse_dtype(cJSON_GetObjectItemCaseSensitive(j, "dtype"), origin, t->name,
                                flags, &t->dtype);
  if (st == SP_OK) st = st_parse_shape(cJSON_GetObjectItemCaseSensitive(j, "shape"), origin, t);
  if (st == SP_OK)
    st = st_parse_offsets(cJSON_GetObjectItemCaseSensitive(j, "data_offsets"), origin, t, data_len,
                          span);
  if (st == SP_OK) t->data = data + span->begin;
  return st;
}

/* Duplicate-name and overlap checks over the whole table. */
static sp_status st_check_table(sp__safetensors *s, st_span *spans, const char *origin) {
  const sp__st_tensor **by_name = sp__malloc(s->n_tensors * sizeof(*by_name) + 1);
  if (!by_name) return sp__fail(SP_ERR_HOST_MEMORY, "safetensors %s: out of host memory", origin);
  for (size_t i = 0; i < s->n_tensors; i++) by_name[i] = &s->tensors[i];
  qsort(by_name, s->n_tensors, sizeof(*by_name), st_name_cmp);
  sp_status st = SP_OK;
  for (size_t i = 1; i < s->n_tensors && st == SP_OK; i++)
    if (!strcmp(by_name[i - 1]->name, by_name[i]->name))
      st = sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: tensor '%s' appears twice", origin,
                    by_name[i]->name);
  sp__free(by_name);
  if (st != SP_OK) return st;
  qsort(spans, s->n_tensors, sizeof(*spans), st_span_cmp);
  uint64_t end = 0;
  size_t last = 0;
  for (size_t i = 0; i < s->n_tensors; i++) {
    if (spans[i].begin == spans[i].end) continue; /* empty tensors occupy nothing */
    if (spans[i].begin < end)
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "safetensors %s: tensors '%s' and '%s' overlap "
                      "in the data section",
                      origin, s->tensors[last].name, s->tensors[spans[i].index].name);
    end = spans[i].end;
    last = spans[i].index;
  }
  return SP_OK;
}

/* Counts tensor entries and their name bytes; checks names. */
static sp_status st_count(const cJSON *root, const char *origin, size_t *n, size_t *name_bytes) {
  *n = 0;
  *name_bytes = 0;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (!e->string)
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: header entry without a name",
                      origin);
    size_t len = strlen(e->string);
    if (!strcmp(e->string, "__metadata__")) {
      if (!cJSON_IsObject(e))
        return sp__fail(SP_ERR_INVALID_ARGUMENT,
                        "safetensors %s: \"__metadata__\" is not an "
                        "object",
                        origin);
      continue;
    }
    if (len == 0 || len > SP__ST_NAME_MAX)
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "safetensors %s: a tensor name is empty or "
                      "longer than %d bytes",
                      origin, SP__ST_NAME_MAX);
    (*n)++;
    *name_bytes += len + 1;
  }
  return SP_OK;
}

/* A torch.save file: a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2+, older). A file
 * that reads as safetensors (a header length that fits, then '{') is never one: a header of 640
 * bytes starts with 0x80 0x02, as a pickle does. */
static sp_status st_not_torch_save(const unsigned char *b, size_t len, const char *origin) {
  if (len >= 9 && b[8] == '{') {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (n <= len - 8) return SP_OK;
  }
  const char *what = NULL;
  if (len >= 4 && !memcmp(b, "PK\x03\x04", 4)) what = "a torch.save zip archive (pickled tensors)";
  else if (len >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5)
    what = "a Python pickle (an old-style torch.save file)";
  if (!what) return SP_OK;
  return sp__fail(
      SP_ERR_INVALID_ARGUMENT,
      "safetensors %s: this is %s, not safetensors: export the state dict with "
      "safetensors.torch.save_file(model.state_dict(), path, metadata={\"streampool.arch\":"
      " \"0:linear relu 2:linear\"}) describing its layers (scripts/torch_export.py does "
      "both)",
      origin, what);
}

static sp_status st_header(const unsigned char *b, size_t len, const char *origin,
                           size_t *header_len) {
  sp_status st = st_not_torch_save(b, len, origin);
  if (st != SP_OK) return st;
  if (len < 8)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: %zu bytes is too short for the "
                    "8-byte header length",
                    origin, len);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
  if (n > len - 8 || n > SP__ST_HEADER_MAX || n < 2)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: bad header length %llu (file "
                    "holds %zu bytes after it; at most %d allowed)",
                    origin, (unsigned long long)n, len - 8, SP__ST_HEADER_MAX);
  *header_len = (size_t)n;
  return SP_OK;
}

/* After a successful parse of header[0, len) whose value ended at `end`: only spaces (the
 * format's padding) and JSON whitespace may follow. */
static sp_status st_check_trailing(const char *h, size_t len, const char *end, const char *origin) {
  for (const char *p = end; p < h + len; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "safetensors %s: header has %zu bytes after the "
                      "JSON object (at byte %zu: '%c')",
                      origin, (size_t)(h + len - p), (size_t)(p - h), *p);
  return SP_OK;
}

/* Every number of the (valid JSON) header h[0, len) is written as an integer: cJSON reads "5.0"
 * and "5e0" as the same double as "5", but the format has only integer shapes and offsets (and
 * string metadata). */
static sp_status st_check_integers(const char *h, size_t len, const char *origin) {
  bool in_string = false;
  for (size_t i = 0; i < len; i++) {
    char c = h[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    if (c != '-' && !isdigit((unsigned char)c)) continue;
    size_t j = i;
    bool integer = true;
    while (j < len && strchr("+-0123456789.eE", h[j]) && h[j]) {
      if (h[j] == '.' || h[j] == 'e' || h[j] == 'E') integer = false;
      j++;
    }
    if (!integer)
      return sp__fail(SP_ERR_INVALID_ARGUMENT,
                      "safetensors %s: header number '%.*s' (at byte "
                      "%zu) is not written as an integer",
                      origin, (int)(j - i > 32 ? 32 : j - i), h + i, i);
    i = j - 1;
  }
  return SP_OK;
}

static sp_status st_fill(sp__safetensors *s, const cJSON *root, const char *origin, unsigned flags,
                         const unsigned char *data, size_t data_len, st_span *spans) {
  size_t i = 0;
  char *name = s->names;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (!strcmp(e->string, "__metadata__")) continue;
    size_t len = strlen(e->string);
    memcpy(name, e->string, len + 1);
    s->tensors[i].name = name;
    name += len + 1;
    spans[i].index = i;
    sp_status st = st_parse_tensor(e, origin, flags, &s->tensors[i], data, data_len, &spans[i]);
    if (st != SP_OK) return st;
    i++;
  }
  sp_assert(i == s->n_tensors);
  return st_check_table(s, spans, origin);
}

sp_status sp__safetensors_parse(const void *buf, size_t len, const char *origin,
                                sp__safetensors **out) {
  return sp__safetensors_parse_flags(buf, len, origin, 0, out);
}

sp_status sp__safetensors_parse_flags(const void *buf, size_t len, const char *origin,
                                      unsigned flags, sp__safetensors **out) {
  const unsigned char *b = buf;
  size_t header_len = 0, n = 0, name_bytes = 0;
  if (!origin) origin = "buffer";
  if (!buf && len) return sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: NULL buffer", origin);
  sp_status st = st_header(b, len, origin, &header_len);
  if (st != SP_OK) return st;
  const char *h = (const char *)b + 8, *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(h, header_len, &end, 0);
  if (!root)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "safetensors %s: header is not valid JSON (%zu "
                    "bytes)",
                    origin, header_len);
  st = st_check_trailing(h, header_len, end, origin);
  if (st != SP_OK) goto free_json;
  if (!cJSON_IsObject(root)) {
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: header is not a JSON object", origin);
    goto free_json;
  }
  st = st_count(root, origin, &n, &name_bytes);
  if (st != SP_OK) goto free_json;
  sp__safetensors *s = sp__calloc(1, sizeof(*s));
  st_span *spans = sp__calloc(n + 1, sizeof(*spans));
  if (s) s->tensors = sp__calloc(n + 1, sizeof(*s->tensors));
  if (s) s->names = sp__malloc(name_bytes + 1);
  if (!s || !spans || !s->tensors || !s->names) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "safetensors %s: out of host memory", origin);
    goto free_table;
  }
  s->n_tensors = n;
  st = st_fill(s, root, origin, flags, b + 8 + header_len, len - 8 - header_len, spans);
  if (st == SP_OK) st = st_check_integers(h, header_len, origin);
  if (st != SP_OK) goto free_table;
  s->meta = cJSON_DetachItemFromObjectCaseSensitive(root, "__metadata__");
  sp__free(spans);
  cJSON_Delete(root);
  *out = s;
  return SP_OK;
free_table:
  sp__free(spans);
  sp__safetensors_free(s);
free_json:
  cJSON_Delete(root);
  return st;
}

/* Opens path for reading without blocking (a FIFO with no writer would block a plain open) and
 * checks on the opened descriptor (no window between check and use) that it is a regular file. */
static sp_status st_open_regular(const char *path, int *fd_out, size_t *len) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: cannot open: %s", path,
                    strerror(errno));
  struct stat sb;
  sp_status st = SP_OK;
  if (fstat(fd, &sb) != 0)
    st =
        sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: cannot stat: %s", path, strerror(errno));
  else if (S_ISDIR(sb.st_mode))
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: is a directory", path);
  else if (!S_ISREG(sb.st_mode))
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: is not a regular file", path);
  else if ((uint64_t)sb.st_size >= SIZE_MAX)
    st = sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: %lld bytes is too large", path,
                  (long long)sb.st_size);
  if (st != SP_OK) {
    close(fd);
    return st;
  }
  *fd_out = fd;
  *len = (size_t)sb.st_size;
  return SP_OK;
}

static sp_status st_read_file(const char *path, unsigned char **buf, size_t *len) {
  int fd = -1;
  size_t size = 0, got = 0;
  sp_status st = st_open_regular(path, &fd, &size);
  if (st != SP_OK) return st;
  *buf = sp__malloc(size + 1);
  if (!*buf) {
    st = sp__fail(SP_ERR_HOST_MEMORY, "safetensors %s: no host memory for %zu bytes", path, size);
    goto close_file;
  }
  while (got < size) {
    ssize_t r = read(fd, *buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      st = sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors %s: short read (%zu of %zu bytes)%s%s",
                    path, got, size, r < 0 ? ": " : "", r < 0 ? strerror(errno) : "");
      sp__free(*buf);
      goto close_file;
    }
    got += (size_t)r;
  }
  *len = size;
close_file:
  close(fd);
  return st;
}

sp_status sp__safetensors_read(const char *path, sp__safetensors **out) {
  return sp__safetensors_read_flags(path, 0, out);
}

sp_status sp__safetensors_read_flags(const char *path, unsigned flags, sp__safetensors **out) {
  if (!path) return sp__fail(SP_ERR_INVALID_ARGUMENT, "safetensors: path is NULL");
  unsigned char *buf = NULL;
  size_t len = 0;
  sp_status st = st_read_file(path, &buf, &len);
  if (st != SP_OK) return st;
  sp__safetensors *s = NULL;
  st = sp__safetensors_parse_flags(buf, len, path, flags, &s);
  if (st != SP_OK) {
    sp__free(buf);
    return st;
  }
  s->file_buf = buf;
  *out = s;
  return SP_OK;
}

const sp__st_tensor *sp__safetensors_find(const sp__safetensors *st, const char *name) {
  for (size_t i = 0; st && name && i < st->n_tensors; i++)
    if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
  return NULL;
}

const char *sp__safetensors_meta(const sp__safetensors *st, const char *key, bool *not_string) {
  *not_string = false;
  const cJSON *v = st && st->meta ? cJSON_GetObjectItemCaseSensitive(st->meta, key) : NULL;
  if (!v) return NULL;
  if (!cJSON_IsString(v) || !v->valuestring) {
    *not_string = true;
    return NULL;
  }
  return v->valuestring;
}

float sp__st_elem(const sp__st_tensor *t, size_t i) {
  uint16_t h;
  float f;
  switch (t->dtype) {
  case SP__ST_BF16: memcpy(&h, t->data + 2 * i, 2); return sp__bf16_to_f32(h);
  case SP__ST_F16: memcpy(&h, t->data + 2 * i, 2); return sp__f16_to_f32(h);
  case SP__ST_F32: break;
  case SP__ST_I32: {
    int32_t v;
    memcpy(&v, t->data + 4 * i, 4);
    return (float)v;
  }
  case SP__ST_I64: {
    int64_t v;
    memcpy(&v, t->data + 8 * i, 8);
    return (float)v;
  }
  }
  memcpy(&f, t->data + 4 * i, 4);
  return f;
}

void sp__st_convert(const sp__st_tensor *t, sp_dtype dt, void *dst) {
  if ((t->dtype == SP__ST_F32 && dt == SP_F32) || (t->dtype == SP__ST_BF16 && dt == SP_BF16) ||
      (t->dtype == SP__ST_F16 && dt == SP_F16)) {
    memcpy(dst, t->data, t->bytes);
    return;
  }
  for (size_t i = 0; i < t->numel; i++) sp__elem_store(dst, dt, i, sp__st_elem(t, i));
}

void sp__safetensors_free(sp__safetensors *st) {
  if (!st) return;
  cJSON_Delete(st->meta);
  sp__free(st->tensors);
  sp__free(st->names);
  sp__free(st->file_buf);
  sp__free(st);
}
