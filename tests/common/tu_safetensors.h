/* A tiny safetensors writer for tests (header-only): tensors -> a file the loader reads.
 *
 * tu_st_write lays the tensors out back to back in the order given, with a JSON header padded
 * with spaces to a multiple of 8 as the reference writer does. tu_st_write_raw writes an explicit
 * header string (for malformed cases) and data bytes, with the length field given or computed
 * (header_len == UINT64_MAX: the header's own length).
 */
#ifndef SP_TU_SAFETENSORS_H
#define SP_TU_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tu_st_tensor {
  const char *name;
  const char *dtype; /* "F32", "BF16", ... */
  unsigned rank;
  uint64_t shape[4];
  const void *data;
  size_t bytes;
} tu_st_tensor;

static inline int tu_st_write_raw(const char *path, const char *header, uint64_t header_len,
                                  const void *data, size_t data_len) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t hl = strlen(header);
  uint64_t n = header_len == UINT64_MAX ? hl : header_len;
  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
  int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, hl, f) == hl &&
           (!data_len || fwrite(data, 1, data_len, f) == data_len);
  return fclose(f) == 0 && ok ? 0 : -1;
}

static inline int tu_st_write(const char *path, const tu_st_tensor *t, size_t n,
                              const char *metadata_json) {
  size_t cap = 256 + n * 512, len = 0, off = 0;
  char *h = malloc(cap + 8);
  if (!h) return -1;
  len += (size_t)snprintf(h + len, cap - len, "{");
  if (metadata_json)
    len +=
        (size_t)snprintf(h + len, cap - len, "\"__metadata__\":%s%s", metadata_json, n ? "," : "");
  for (size_t i = 0; i < n; i++) {
    len += (size_t)snprintf(h + len, cap - len, "\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name,
                            t[i].dtype);
    for (unsigned r = 0; r < t[i].rank; r++)
      len += (size_t)snprintf(h + len, cap - len, "%s%llu", r ? "," : "",
                              (unsigned long long)t[i].shape[r]);
    len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}%s", off,
                            off + t[i].bytes, i + 1 < n ? "," : "");
    off += t[i].bytes;
  }
  len += (size_t)snprintf(h + len, cap - len, "}");
  while (len % 8) h[len++] = ' ';
  h[len] = '\0';
  unsigned char *data = malloc(off + 1);
  if (!data) {
    free(h);
    return -1;
  }
  for (size_t i = 0, o = 0; i < n; o += t[i].bytes, i++) memcpy(data + o, t[i].data, t[i].bytes);
  int rc = tu_st_write_raw(path, h, UINT64_MAX, data, off);
  free(data);
  free(h);
  return rc;
}

#endif /* SP_TU_SAFETENSORS_H */
