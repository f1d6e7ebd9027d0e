/* The caching allocator, first simple form: no caching yet, every block is its own segment.
 *
 * Owns: the table of live blocks of one device (pointer -> bytes, stream) and the counters.
 * Invariants: every pointer in the table came from be->mem_alloc and is freed exactly once;
 * stats.allocated_bytes is the sum of the table's rounded sizes, reserved the sum of segments.
 * Locking: one mutex (rank 3) guards the table and the stats; it is never held across a backend
 * call. sp_free waits for the block's stream (and streams recorded on it) before returning the
 * memory, so no work can still use it. This file is replaced by the real allocator.
 */
#include "alloc/alloc.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { SP__ALLOC_ROUND = 512 };

typedef struct sp__live {
  void *p;            /* device pointer                   */
  size_t bytes;       /* rounded size                      */
  unsigned stream;    /* allocating stream index           */
  uint64_t extra[2];  /* record_stream bitset (128 streams) */
} sp__live;

struct sp__allocator {
  sp_device *dev;
  pthread_mutex_t mu;    /* rank 3: guards everything below */
  sp__live *live;        /* [n_live], unordered              */
  size_t n_live, cap_live;
  sp_memory_stats stats;
};

sp_status sp__alloc_create(sp_device *dev, sp__allocator **out) {
  sp__allocator *a = sp__calloc(1, sizeof(*a));
  if (!a) return sp__fail(SP_ERR_HOST_MEMORY, "sp_device_open: no host memory for the allocator");
  a->dev = dev;
  pthread_mutex_init(&a->mu, NULL);
  *out = a;
  return SP_OK;
}

void sp__alloc_destroy(sp__allocator *a) {
  if (!a) return;
  for (size_t i = 0; i < a->n_live; i++) a->dev->be->mem_free(a->dev->bdev, a->live[i].p);
  sp__free(a->live);
  pthread_mutex_destroy(&a->mu);
  sp__free(a);
}

sp_status sp__alloc_validate(sp__allocator *a) {
  if (!a) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp__alloc_validate: allocator is NULL");
  pthread_mutex_lock(&a->mu);
  size_t sum = 0;
  for (size_t i = 0; i < a->n_live; i++) sum += a->live[i].bytes;
  sp_status st = SP_OK;
  if (sum != a->stats.allocated_bytes || sum != a->stats.reserved_bytes)
    st = sp__fail(SP_ERR_INVALID_HANDLE, "sp__alloc_validate: live sum %zu, allocated %zu", sum,
                  a->stats.allocated_bytes);
  pthread_mutex_unlock(&a->mu);
  return st;
}

static sp__allocator *alloc_of(sp_device *dev) { return dev->alloc; }

/* Index of p in the table or SIZE_MAX; caller holds a->mu. */
static size_t live_find(sp__allocator *a, const void *p) {
  for (size_t i = 0; i < a->n_live; i++)
    if (a->live[i].p == p) return i;
  return SIZE_MAX;
}

sp_status sp_alloc(sp_device *dev, size_t bytes, sp_stream *s, void **out) {
  sp_status st = sp__device_enter(dev, "sp_alloc");
  if (st != SP_OK) return st;
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_alloc: out is NULL");
  if (bytes == 0) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_alloc: size 0");
  if (bytes > SIZE_MAX - SP__ALLOC_ROUND)
    return sp__fail(SP_ERR_OUT_OF_MEMORY, "sp_alloc: %zu bytes cannot be rounded", bytes);
  st = sp__stream_resolve(dev, s, "sp_alloc", &s);
  if (st != SP_OK) return st;
  size_t rounded = (bytes + SP__ALLOC_ROUND - 1) / SP__ALLOC_ROUND * SP__ALLOC_ROUND;
  sp__allocator *a = alloc_of(dev);
  pthread_mutex_lock(&a->mu);
  size_t limit = dev->cfg.memory_limit;
  bool over = limit && a->stats.reserved_bytes + rounded > limit;
  if (!over && a->n_live == a->cap_live) {
    size_t cap = a->cap_live ? a->cap_live * 2 : 64;
    sp__live *n = sp__calloc(cap, sizeof(*n));
    if (!n) {
      pthread_mutex_unlock(&a->mu);
      return sp__fail(SP_ERR_HOST_MEMORY, "sp_alloc: no host memory for the block table");
    }
    if (a->n_live) memcpy(n, a->live, a->n_live * sizeof(*n));
    sp__free(a->live);
    a->live = n;
    a->cap_live = cap;
  }
  size_t reserved = a->stats.reserved_bytes;
  pthread_mutex_unlock(&a->mu);
  if (over)
    return sp__fail(SP_ERR_LIMIT, "sp_alloc: %zu bytes would pass the memory limit %zu (reserved %zu)",
                    rounded, limit, reserved);
  void *p = NULL;
  st = dev->be->mem_alloc(dev->bdev, rounded, &p);
  if (st != SP_OK) {
    pthread_mutex_lock(&a->mu);
    a->stats.ooms++;
    pthread_mutex_unlock(&a->mu);
    return sp__fail(SP_ERR_OUT_OF_MEMORY,
                    "sp_alloc: out of memory: requested %zu, allocated %zu, reserved %zu, limit %zu",
                    bytes, reserved, reserved, limit);
  }
  pthread_mutex_lock(&a->mu);
  if (a->n_live == a->cap_live) { /* another thread used the slot we made room for */
    size_t cap = a->cap_live * 2;
    sp__live *n = sp__calloc(cap, sizeof(*n));
    if (!n) {
      pthread_mutex_unlock(&a->mu);
      dev->be->mem_free(dev->bdev, p);
      return sp__fail(SP_ERR_HOST_MEMORY, "sp_alloc: no host memory for the block table");
    }
    memcpy(n, a->live, a->n_live * sizeof(*n));
    sp__free(a->live);
    a->live = n;
    a->cap_live = cap;
  }
  a->live[a->n_live++] = (sp__live){p, rounded, s->index, {0, 0}};
  sp_memory_stats *m = &a->stats;
  m->allocs++;
  m->backend_allocs++;
  m->allocated_bytes += rounded;
  m->reserved_bytes += rounded;
  if (m->allocated_bytes > m->allocated_bytes_peak) m->allocated_bytes_peak = m->allocated_bytes;
  if (m->reserved_bytes > m->reserved_bytes_peak) m->reserved_bytes_peak = m->reserved_bytes;
  pthread_mutex_unlock(&a->mu);
  *out = p;
  return SP_OK;
}

sp_status sp_free(sp_device *dev, void *p) {
  sp_status st = sp__device_enter(dev, "sp_free");
  if (st != SP_OK || !p) return st;
  sp__allocator *a = alloc_of(dev);
  pthread_mutex_lock(&a->mu);
  size_t i = live_find(a, p);
  if (i == SIZE_MAX) {
    pthread_mutex_unlock(&a->mu);
    return sp__fail(SP_ERR_INVALID_HANDLE, "sp_free: pointer %p was not allocated by this device "
                    "or was freed already", p);
  }
  sp__live b = a->live[i];
  a->live[i] = a->live[--a->n_live];
  a->stats.frees++;
  a->stats.backend_frees++;
  a->stats.allocated_bytes -= b.bytes;
  a->stats.reserved_bytes -= b.bytes;
  pthread_mutex_unlock(&a->mu);
  /* Simple form: wait for every stream that may use the block, then give it back. */
  for (unsigned k = 0; k < dev->cfg.streams && k < SP_STREAMS_MAX; k++) {
    bool used = k == b.stream || (b.extra[k / 64] >> (k % 64) & 1u);
    sp__bstream *bs = used ? sp__stream_peek(&dev->streams[k]) : NULL;
    if (bs) dev->be->stream_sync(bs);
  }
  dev->be->mem_free(dev->bdev, p);
  return SP_OK;
}

sp_status sp_record_stream(sp_device *dev, void *p, sp_stream *s) {
  sp_status st = sp__device_enter(dev, "sp_record_stream");
  if (st != SP_OK) return st;
  st = sp__stream_enter(s, "sp_record_stream");
  if (st != SP_OK) return st;
  if (s->dev != dev)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_record_stream: stream belongs to another device");
  sp__allocator *a = alloc_of(dev);
  pthread_mutex_lock(&a->mu);
  size_t i = live_find(a, p);
  if (i != SIZE_MAX) a->live[i].extra[s->index / 64] |= 1ull << (s->index % 64);
  pthread_mutex_unlock(&a->mu);
  if (i == SIZE_MAX)
    return sp__fail(SP_ERR_INVALID_HANDLE, "sp_record_stream: pointer %p is not a live block", p);
  return SP_OK;
}

sp_status sp_empty_cache(sp_device *dev) {
  sp_status st = sp__device_enter(dev, "sp_empty_cache");
  if (st != SP_OK) return st;
  return sp__device_sync_all(dev);
}

sp_status sp_memory_stats_get(sp_device *dev, sp_memory_stats *out) {
  sp_status st = sp__device_enter(dev, "sp_memory_stats_get");
  if (st != SP_OK) return st;
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_memory_stats_get: out is NULL");
  sp__allocator *a = alloc_of(dev);
  pthread_mutex_lock(&a->mu);
  *out = a->stats;
  pthread_mutex_unlock(&a->mu);
  return SP_OK;
}

sp_status sp_memory_stats_reset_peaks(sp_device *dev) {
  sp_status st = sp__device_enter(dev, "sp_memory_stats_reset_peaks");
  if (st != SP_OK) return st;
  sp__allocator *a = alloc_of(dev);
  pthread_mutex_lock(&a->mu);
  a->stats.allocated_bytes_peak = a->stats.allocated_bytes;
  a->stats.reserved_bytes_peak = a->stats.reserved_bytes;
  pthread_mutex_unlock(&a->mu);
  return SP_OK;
}

sp_status sp_memory_snapshot_json(sp_device *dev, char **json_out) {
  sp_status st = sp__device_enter(dev, "sp_memory_snapshot_json");
  if (st != SP_OK) return st;
  if (!json_out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_memory_snapshot_json: out is NULL");
  sp__allocator *a = alloc_of(dev);
  cJSON *root = cJSON_CreateObject();
  cJSON *stats = cJSON_AddObjectToObject(root, "stats");
  cJSON *segs = cJSON_AddArrayToObject(root, "segments");
  pthread_mutex_lock(&a->mu);
  cJSON_AddNumberToObject(stats, "allocated_bytes", (double)a->stats.allocated_bytes);
  cJSON_AddNumberToObject(stats, "reserved_bytes", (double)a->stats.reserved_bytes);
  for (size_t i = 0; i < a->n_live; i++) {
    cJSON *seg = cJSON_CreateObject();
    char addr[32];
    snprintf(addr, sizeof(addr), "%p", a->live[i].p);
    cJSON_AddStringToObject(seg, "address", addr);
    cJSON_AddNumberToObject(seg, "bytes", (double)a->live[i].bytes);
    cJSON_AddNumberToObject(seg, "stream", a->live[i].stream);
    cJSON *blocks = cJSON_AddArrayToObject(seg, "blocks");
    cJSON *b = cJSON_CreateObject();
    cJSON_AddNumberToObject(b, "offset", 0);
    cJSON_AddNumberToObject(b, "bytes", (double)a->live[i].bytes);
    cJSON_AddStringToObject(b, "state", "live");
    cJSON_AddNumberToObject(b, "stream", a->live[i].stream);
    cJSON_AddItemToArray(blocks, b);
    cJSON_AddItemToArray(segs, seg);
  }
  pthread_mutex_unlock(&a->mu);
  char *txt = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!txt) return sp__fail(SP_ERR_HOST_MEMORY, "sp_memory_snapshot_json: no host memory");
  char *copy = sp__strdup(txt);
  cJSON_free(txt);
  if (!copy) return sp__fail(SP_ERR_HOST_MEMORY, "sp_memory_snapshot_json: no host memory");
  *json_out = copy;
  return SP_OK;
}

void sp_string_free(char *s) { sp__free(s); }
