/* The registry of compiled-in backends: lookup by name, one-time validation, device counting.
 *
 * Owns the list of backend tables and a per-table validation state (0 unchecked, 1 valid,
 * 2 invalid) that is computed at most a few times concurrently and then read with acquire loads:
 * validation is pure, so racing first users reach the same answer. No lock.
 * "auto" (or NULL) means CUDA when it is compiled in and has a device, else the host.
 */
#include <stdatomic.h>
#include <string.h>

#include "backend/backend.h"
#include "core/status.h"

static const sp__backend *const sp__backends[] = {
#ifdef SP_HAVE_CUDA
    &sp__cuda_backend,
#endif
    &sp__host_backend,
};
enum { SP__BACKENDS = sizeof(sp__backends) / sizeof(sp__backends[0]) };
static atomic_int sp__backend_state[SP__BACKENDS];

sp_status sp__backend_validate(const sp__backend *be) {
  if (!be) return sp__fail(SP_ERR_BACKEND, "backend table is NULL");
  const char *name = be->name ? be->name : "(unnamed)";
  if (be->version != SP__BACKEND_VERSION)
    return sp__fail(SP_ERR_BACKEND, "backend %s: table version %u, the core expects %u", name,
                    be->version, SP__BACKEND_VERSION);
#define SP__REQUIRE(slot)                                                                          \
  if (!be->slot) return sp__fail(SP_ERR_BACKEND, "backend %s: required slot %s is NULL", name, #slot)
  SP__REQUIRE(name);
  SP__REQUIRE(device_count);
  SP__REQUIRE(device_open);
  SP__REQUIRE(device_close);
  SP__REQUIRE(device_name);
  SP__REQUIRE(memory_info);
  SP__REQUIRE(stream_create);
  SP__REQUIRE(stream_destroy);
  SP__REQUIRE(stream_query);
  SP__REQUIRE(stream_sync);
  SP__REQUIRE(memcpy_async);
  SP__REQUIRE(memset_async);
  SP__REQUIRE(host_func);
  SP__REQUIRE(event_create);
  SP__REQUIRE(event_destroy);
  SP__REQUIRE(event_record);
  SP__REQUIRE(stream_wait_event);
  SP__REQUIRE(event_query);
  SP__REQUIRE(event_sync);
  SP__REQUIRE(mem_alloc);
  SP__REQUIRE(mem_free);
#undef SP__REQUIRE
  /* Optional groups are all set or all NULL: a half-filled group is a bug in the table. */
  int graph = !!be->graph_capture_begin + !!be->graph_capture_end + !!be->graph_launch +
              !!be->graph_destroy;
  if (graph != 0 && graph != 4)
    return sp__fail(SP_ERR_BACKEND, "backend %s: graph slots must be all set or all NULL", name);
  if (!be->host_alloc_pinned != !be->host_free_pinned)
    return sp__fail(SP_ERR_BACKEND, "backend %s: host_alloc_pinned and host_free_pinned must "
                    "be both set or both NULL", name);
  return SP_OK;
}

static sp_status sp__backend_checked(size_t i, const sp__backend **out) {
  int state = atomic_load_explicit(&sp__backend_state[i], memory_order_acquire);
  if (state == 0) {
    state = sp__backend_validate(sp__backends[i]) == SP_OK ? 1 : 2;
    atomic_store_explicit(&sp__backend_state[i], state, memory_order_release);
  }
  if (state != 1) return sp__backend_validate(sp__backends[i]); /* the message again */
  *out = sp__backends[i];
  return SP_OK;
}

static int sp__backend_has_device(size_t i) {
  const sp__backend *be = NULL;
  int count = 0;
  return sp__backend_checked(i, &be) == SP_OK && be->device_count(&count) == SP_OK && count > 0;
}

sp_status sp__backend_find(const char *name, const sp__backend **out) {
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp__backend_find: out is NULL");
  if (!name || !strcmp(name, "auto")) {
    for (size_t i = 0; i + 1 < SP__BACKENDS; i++)
      if (sp__backend_has_device(i)) return sp__backend_checked(i, out);
    return sp__backend_checked(SP__BACKENDS - 1, out); /* the host: always last */
  }
  for (size_t i = 0; i < SP__BACKENDS; i++)
    if (!strcmp(sp__backends[i]->name, name)) return sp__backend_checked(i, out);
  return sp__fail(SP_ERR_UNSUPPORTED, "backend '%s' is not compiled into this library", name);
}

int sp_backend_compiled(const char *backend) {
  if (!backend) return 0;
  for (size_t i = 0; i < SP__BACKENDS; i++)
    if (!strcmp(sp__backends[i]->name, backend)) return 1;
  return 0;
}

sp_status sp_device_count(const char *backend, int *count) {
  if (!count) return sp__fail(SP_ERR_INVALID_ARGUMENT, "sp_device_count: count is NULL");
  const sp__backend *be = NULL;
  sp_status st = sp__backend_find(backend, &be);
  if (st != SP_OK) return st;
  int n = 0;
  st = be->device_count(&n);
  if (st != SP_OK) return st;
  *count = n;
  return SP_OK;
}
