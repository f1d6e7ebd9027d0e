/* sp_memory_snapshot_json and sp_string_free.
 *
 * Owns nothing. Builds the document {"stats":{...},"segments":[{"address","bytes","pool",
 * "stream","blocks":[{"offset","bytes","state","stream"}]}],"history":{...},"events":[...]} with
 * every allocator lock held (sp__alloc_lock_all), so it is one consistent moment; cJSON allocates
 * host memory under the locks, which is allowed (no backend call). The history's events are read
 * under the same locks (an operation racing the snapshot may have its event in or out) and
 * written as text after the rest (cJSON objects would take ~1 KiB per event). Any thread.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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
#define SP__SNAP_FIELD(f) ok = ok && cJSON_AddNumberToObject(o, #f, (double)m->f)
  bool ok = true;
  SP__SNAP_FIELD(allocated_bytes);
  SP__SNAP_FIELD(allocated_bytes_peak);
  SP__SNAP_FIELD(reserved_bytes);
  SP__SNAP_FIELD(reserved_bytes_peak);
  SP__SNAP_FIELD(allocs);
  SP__SNAP_FIELD(frees);
  SP__SNAP_FIELD(cache_hits);
  SP__SNAP_FIELD(backend_allocs);
  SP__SNAP_FIELD(backend_frees);
  SP__SNAP_FIELD(deferred_frees);
  SP__SNAP_FIELD(cross_stream_reuses);
  SP__SNAP_FIELD(oom_retries);
  SP__SNAP_FIELD(ooms);
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
  bool ok =
      cJSON_AddStringToObject(o, "address", addr) &&
      cJSON_AddNumberToObject(o, "bytes", (double)seg->bytes) &&
      cJSON_AddNumberToObject(o, "committed", (double)(seg->bytes - seg->n_gone * SP__MEM_PAGE)) &&
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

static bool snapshot_history(cJSON *root, const sp__history_info *hi, size_t kept) {
  cJSON *o = cJSON_AddObjectToObject(root, "history");
  char start[24];
  snprintf(start, sizeof(start), "%" PRIu64, hi->start_ns);
  return o && cJSON_AddBoolToObject(o, "enabled", hi->enabled) &&
         cJSON_AddNumberToObject(o, "capacity", (double)hi->capacity) &&
         cJSON_AddNumberToObject(o, "recorded", (double)hi->recorded) &&
         cJSON_AddNumberToObject(o, "dropped", (double)hi->dropped) &&
         cJSON_AddNumberToObject(o, "kept", (double)kept) &&
         cJSON_AddStringToObject(o, "start_ns", start);
}

enum { SNAPSHOT_EVENT_CHARS = 320 }; /* longest event object below, with room to spare */

/* Appends event e as a JSON object at p; returns the characters written. */
static size_t snapshot_event(char *p, const sp__hist_event *e, uint64_t start_ns) {
  char stream[16] = "null", peer[16] = "null", addr[24] = "null", seg[24] = "null";
  if (e->stream >= 0) snprintf(stream, sizeof(stream), "%d", e->stream);
  if (e->peer >= 0) snprintf(peer, sizeof(peer), "%d", e->peer);
  if (e->address) snprintf(addr, sizeof(addr), "\"0x%" PRIxPTR "\"", e->address);
  if (e->segment) snprintf(seg, sizeof(seg), "\"0x%" PRIxPTR "\"", e->segment);
  int n = snprintf(p, SNAPSHOT_EVENT_CHARS,
                   "{\"seq\":%" PRIu64 ",\"t_ns\":%" PRId64
                   ",\"kind\":\"%s\",\"device\":%d,"
                   "\"stream\":%s,\"peer\":%s,\"thread\":%" PRIu32 ",\"bytes\":%" PRIu64
                   ",\"address\":%s,\"segment\":%s}",
                   e->seq, (int64_t)(e->t_ns - start_ns), sp__history_kind_name(e->kind), e->device,
                   stream, peer, e->thread, e->bytes, addr, seg);
  return n > 0 && n < SNAPSHOT_EVENT_CHARS ? (size_t)n : 0;
}

/* The document: cJSON's text of root with ,"events":[...] spliced in before its last brace. */
static char *snapshot_join(const char *txt, const sp__hist_event *ev, size_t n, uint64_t start) {
  size_t len = strlen(txt);
  char *out = sp__malloc(len + 16 + n * (SNAPSHOT_EVENT_CHARS + 1));
  if (!out || len < 2) {
    sp__free(out);
    return NULL;
  }
  memcpy(out, txt, len - 1); /* without the closing brace */
  char *p = out + len - 1;
  memcpy(p, ",\"events\":[", 11);
  p += 11;
  for (size_t i = 0; i < n; i++) {
    if (i) *p++ = ',';
    p += snapshot_event(p, &ev[i], start);
  }
  memcpy(p, "]}", 3);
  return out;
}

static char *snapshot_build(sp__allocator *a) {
  sp__history_info hi;
  (void)sp__history_read(a, NULL, 0, &hi);
  sp__hist_event *ev = hi.capacity ? sp__malloc(hi.capacity * sizeof(*ev)) : NULL;
  cJSON *root = cJSON_CreateObject();
  if (!root || (hi.capacity && !ev)) goto free_events;
  sp__alloc_lock_all(a);
  sp_memory_stats m;
  sp__stats_collect_locked(a, &m);
  bool ok = snapshot_stats(root, &m);
  cJSON *segs = ok ? cJSON_AddArrayToObject(root, "segments") : NULL;
  ok = segs != NULL;
  for (const sp__segment *seg = a->segments; seg && ok; seg = seg->next)
    ok = snapshot_segment(segs, seg);
  size_t n = ev ? sp__history_read(a, ev, hi.capacity, &hi) : 0;
  sp__alloc_unlock_all(a);
  ok = ok && snapshot_history(root, &hi, n);
  char *txt = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  root = NULL;
  char *doc = txt ? snapshot_join(txt, ev, n, hi.start_ns) : NULL;
  cJSON_free(txt);
  sp__free(ev);
  return doc;

free_events:
  cJSON_Delete(root);
  sp__free(ev);
  return NULL;
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
