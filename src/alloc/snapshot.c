/* sp_memory_snapshot_json and sp_string_free.
 *
 * Owns nothing. Builds the document {"stats":{...},"segments":[{"address","bytes","pool",
 * "stream","blocks":[{"offset","bytes","state","stream"}]}]} with every allocator lock held
 * (sp__alloc_lock_all), so it is one consistent moment; cJSON allocates host memory under the
 * locks, which is allowed (no backend call). Any thread.
 */
#include <cjson/cJSON.h>
#include <stdio.h>

#include "alloc/alloc_internal.h"
#include "core/status.h"

static const char *snapshot_state(const sp__block *b) {
  if (b->state == SP__BLOCK_LIVE && b->front) return "cached"; /* held whole in a front cache */
  switch (b->state) {
  case SP__BLOCK_LIVE: return "live";
  case SP__BLOCK_CACHED: return "cached";
  case SP__BLOCK_PENDING: return "pending";
  }
  return "invalid";
}

static bool snapshot_stats(cJSON *root, const sp_memory_stats *m) {
  cJSON *o = cJSON_AddObjectToObject(root, "stats");
  if (!o) return false;
#define SP__SNAP_FIELD(f) ok = ok && cJSON_AddNumberToObject(o, #f, (double)m->f);
  bool ok = true;
  SP__SNAP_FIELD(allocated_bytes) SP__SNAP_FIELD(allocated_bytes_peak)
  SP__SNAP_FIELD(reserved_bytes) SP__SNAP_FIELD(reserved_bytes_peak) SP__SNAP_FIELD(allocs)
  SP__SNAP_FIELD(frees) SP__SNAP_FIELD(cache_hits) SP__SNAP_FIELD(backend_allocs)
  SP__SNAP_FIELD(backend_frees) SP__SNAP_FIELD(deferred_frees)
  SP__SNAP_FIELD(cross_stream_reuses) SP__SNAP_FIELD(oom_retries) SP__SNAP_FIELD(ooms)
#undef SP__SNAP_FIELD
  return ok;
}

static bool snapshot_segment(cJSON *segs, const sp__segment *seg) {
  cJSON *o = cJSON_CreateObject();
  if (!o || !cJSON_AddItemToArray(segs, o)) {
    cJSON_Delete(o);
    return false;
  }
  char addr[32];
  snprintf(addr, sizeof(addr), "%p", (void *)seg->base);
  bool ok = cJSON_AddStringToObject(o, "address", addr) &&
            cJSON_AddNumberToObject(o, "bytes", (double)seg->bytes) &&
            cJSON_AddStringToObject(o, "pool", seg->pool == SP__POOL_SMALL ? "small" : "large") &&
            cJSON_AddNumberToObject(o, "stream", seg->stream);
  cJSON *blocks = ok ? cJSON_AddArrayToObject(o, "blocks") : NULL;
  for (const sp__block *b = seg->first; b && blocks; b = b->next) {
    cJSON *bo = cJSON_CreateObject();
    if (!bo || !cJSON_AddItemToArray(blocks, bo)) {
      cJSON_Delete(bo);
      return false;
    }
    if (!cJSON_AddNumberToObject(bo, "offset", (double)(b->ptr - seg->base)) ||
        !cJSON_AddNumberToObject(bo, "bytes", (double)b->bytes) ||
        !cJSON_AddStringToObject(bo, "state", snapshot_state(b)) ||
        !cJSON_AddNumberToObject(bo, "stream", b->stream))
      return false;
  }
  return blocks != NULL;
}

static char *snapshot_build(sp__allocator *a) {
  cJSON *root = cJSON_CreateObject();
  if (!root) return NULL;
  sp__alloc_lock_all(a);
  sp_memory_stats m;
  sp__stats_collect_locked(a, &m);
  bool ok = snapshot_stats(root, &m);
  cJSON *segs = ok ? cJSON_AddArrayToObject(root, "segments") : NULL;
  ok = segs != NULL;
  for (const sp__segment *seg = a->segments; seg && ok; seg = seg->next)
    ok = snapshot_segment(segs, seg);
  sp__alloc_unlock_all(a);
  char *txt = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  if (!txt) return NULL;
  char *copy = sp__strdup(txt);
  cJSON_free(txt);
  return copy;
}

sp_status sp_memory_snapshot_json(sp_device *dev, char **json_out) {
  sp_status st = sp__device_enter(dev, "sp_memory_snapshot_json");
  if (st != SP_OK) return st;
  if (!json_out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_memory_snapshot_json: out is NULL");
  char *txt = snapshot_build(dev->alloc);
  if (!txt) return sp__fail(SP_ERR_HOST_MEMORY, "sp_memory_snapshot_json: no host memory");
  *json_out = txt;
  return SP_OK;
}

void sp_string_free(char *s) { sp__free(s); }
