/* Fuzz target: byte strings become allocator op scripts checked against a reference model.
 *
 * Goal: no sequence of alloc / free / record_stream / sync / empty_cache on several streams, with
 * bad pointers mixed in, corrupts the allocator or disagrees with a tiny model of it.
 * Method: each op is 3 bytes (opcode, stream, argument). The model holds the live pointers with
 * their rounded sizes; after each op the returned statuses must match the model's expectation
 * (bad pointers: SP_ERR_INVALID_HANDLE), live blocks must not overlap, allocated_bytes must equal
 * the model's sum, and sp__alloc_validate must pass. One host device (64 MiB, 4 streams) is opened
 * per process; every input ends by freeing all its live blocks.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/alloc.h"
#include "core/device.h"
#include "streampool.h"

enum { LIVE_MAX = 64, STREAMS = 4 };

typedef struct model_block {
  char *p;
  size_t bytes;
} model_block;

static sp_device *dev;
static model_block live[LIVE_MAX];
static size_t n_live;

static void die(const char *what) {
  fprintf(stderr, "alloc_ops: %s (last error: %s)\n", what, sp_last_error());
  abort();
}

static size_t model_allocated(void) {
  size_t sum = 0;
  for (size_t i = 0; i < n_live; i++) sum += live[i].bytes;
  return sum;
}

static void check_model(void) {
  sp_memory_stats m;
  if (sp_memory_stats_get(dev, &m) != SP_OK) die("stats");
  if (m.allocated_bytes != model_allocated()) die("allocated_bytes differs from the model");
  if (sp__alloc_validate(dev->alloc) != SP_OK) die("validator");
}

static void op_alloc(unsigned s, uint8_t arg) {
  static const size_t base[4] = {1, 4096, 1u << 20, 3u << 20};
  size_t bytes = base[arg & 3] + (size_t)(arg >> 2) * 997;
  void *p = NULL;
  sp_status st = sp_alloc(dev, bytes, &dev->streams[s], &p);
  if (st == SP_ERR_OUT_OF_MEMORY) return;
  if (st != SP_OK) die("alloc failed");
  size_t rounded = (bytes + 511) & ~(size_t)511;
  for (size_t i = 0; i < n_live; i++)
    if ((char *)p < live[i].p + live[i].bytes && live[i].p < (char *)p + rounded)
      die("overlapping live blocks");
  if (n_live == LIVE_MAX) {
    if (sp_free(dev, p) != SP_OK) die("free of a fresh block");
    return;
  }
  live[n_live++] = (model_block){p, rounded};
  if (sp_memset_async(&dev->streams[s], p, arg, 512) != SP_OK) die("memset");
}

static void op_free(uint8_t arg, int bad) {
  if (!n_live) return;
  size_t i = arg % n_live;
  if (bad) { /* interior pointer, then the real free, then a double free */
    if (live[i].bytes > 512 && sp_free(dev, live[i].p + 512) != SP_ERR_INVALID_HANDLE)
      die("interior free accepted");
  }
  if (sp_free(dev, live[i].p) != SP_OK) die("free of a live block");
  if (bad && sp_free(dev, live[i].p) != SP_ERR_INVALID_HANDLE) die("double free accepted");
  live[i] = live[--n_live];
}

static void op(uint8_t code, uint8_t sbyte, uint8_t arg) {
  unsigned s = sbyte % STREAMS;
  switch (code % 8) {
  case 0:
  case 1:
  case 2: op_alloc(s, arg); break;
  case 3: op_free(arg, 0); break;
  case 4: op_free(arg, 1); break;
  case 5:
    if (n_live && sp_record_stream(dev, live[arg % n_live].p, &dev->streams[s]) != SP_OK)
      die("record_stream of a live block");
    break;
  case 6:
    if ((arg & 1) ? sp_stream_sync(&dev->streams[s]) != SP_OK : sp_empty_cache(dev) != SP_OK)
      die("sync / empty_cache");
    break;
  default: {
    static char foreign[64];
    if (sp_free(dev, foreign + (arg % 32)) != SP_ERR_INVALID_HANDLE) die("foreign free accepted");
    if (sp_record_stream(dev, foreign, &dev->streams[s]) != SP_ERR_INVALID_HANDLE)
      die("foreign record accepted");
  }
  }
  check_model();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dev) {
    setenv("STREAMPOOL_HOST_MEMORY", "67108864", 1);
    sp_device_config cfg = {.backend = "host", .streams = STREAMS};
    if (sp_device_open(&cfg, &dev) != SP_OK) die("open");
    unsetenv("STREAMPOOL_HOST_MEMORY");
  }
  for (size_t i = 0; i + 3 <= size && i < 3 * 400; i += 3) op(data[i], data[i + 1], data[i + 2]);
  while (n_live) op_free(0, 0);
  check_model();
  return 0;
}
