/* The registry of backends: lookup by name, one-time validation, device counting, and loading
 * the CUDA backend's module at run time.
 *
 * Owns the list of backend tables and a per-table validation state (0 unchecked, 1 valid,
 * 2 invalid) that is computed at most a few times concurrently and then read with acquire loads:
 * validation is pure, so racing first users reach the same answer. No lock.
 * "auto" (or NULL) means CUDA when it is available and has a device, else the host.
 * White-box tests may install one override table (sp__backend_override, an atomic pointer) that
 * lookups return in place of the available table of the same name; production code never does.
 *
 * The CUDA backend is either linked in (the static library: SP_HAVE_CUDA) or, in the shared
 * library (SP_CUDA_MODULE), a module libstreampool_cuda.so beside libstreampool.so (or the path
 * in STREAMPOOL_CUDA_MODULE) that is dlopen()ed once, inside pthread_once, on first use of any
 * backend lookup; libstreampool itself links no CUDA library, so it loads on machines without
 * CUDA, where the module (or libcublasLt, or the driver) is missing: then "cuda" is unavailable
 * and every lookup of it says why (cuda_load_error, written once inside the once-routine).
 */
#include <stdatomic.h>
#include <string.h>

#include "backend/backend.h"
#include "core/status.h"

#ifdef SP_CUDA_MODULE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/module.h"

static pthread_once_t sp__cuda_once = PTHREAD_ONCE_INIT;
static const sp__backend *sp__cuda_loaded; /* written once in the once-routine */
static char sp__cuda_load_error[768];      /* why it is NULL, same                */

static sp_status sp__module_fail(sp_status st, const char *msg) { return sp__fail(st, "%s", msg); }
static void sp__module_log(sp_log_level level, const char *msg) { sp__log(level, "%s", msg); }

static const sp__core_services sp__services = {
    .abi = SP__MODULE_ABI,
    .fail = sp__module_fail,
    .log = sp__module_log,
    .calloc = sp__calloc,
    .free = sp__free,
    .assert_fail = sp__assert_fail,
};

/* The module's path: STREAMPOOL_CUDA_MODULE, else beside this library, else the loader's search. */
static void sp__cuda_module_path(char *buf, size_t n) {
  const char *env = getenv("STREAMPOOL_CUDA_MODULE");
  Dl_info info;
  if (env && *env) {
    snprintf(buf, n, "%s", env);
  } else if (dladdr((const void *)&sp__cuda_once, &info) && info.dli_fname &&
             strchr(info.dli_fname, '/')) {
    const char *slash = strrchr(info.dli_fname, '/');
    snprintf(buf, n, "%.*s/libstreampool_cuda.so", (int)(slash - info.dli_fname), info.dli_fname);
  } else {
    snprintf(buf, n, "libstreampool_cuda.so");
  }
}

static void sp__cuda_load(void) {
  char path[512];
  sp__cuda_module_path(path, sizeof(path));
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *why = dlerror();
    snprintf(sp__cuda_load_error, sizeof(sp__cuda_load_error),
             "the CUDA backend module cannot be loaded (no CUDA on this machine?): %s",
             why ? why : path);
    return;
  }
  sp__backend_module_entry_fn entry = NULL;
  *(void **)&entry = dlsym(h, SP__MODULE_ENTRY);
  const sp__backend *be = entry ? entry(&sp__services) : NULL;
  if (!be) {
    snprintf(sp__cuda_load_error, sizeof(sp__cuda_load_error),
             "%s is not a streampool CUDA module of this version (%s)", path,
             entry ? "services ABI mismatch" : "no " SP__MODULE_ENTRY);
    return; /* never dlclose: a partly used module stays mapped */
  }
  sp__cuda_loaded = be;
}

static const sp__backend *sp__cuda_table(void) {
  pthread_once(&sp__cuda_once, sp__cuda_load);
  return sp__cuda_loaded;
}
#elif defined(SP_HAVE_CUDA)
static const sp__backend *sp__cuda_table(void) { return &sp__cuda_backend; }
#endif

static const char *const sp__backend_names[] = {
#ifdef SP_HAVE_CUDA
    "cuda",
#endif
    "host",
};
enum { SP__BACKENDS = sizeof(sp__backend_names) / sizeof(sp__backend_names[0]) };
static atomic_int sp__backend_state[SP__BACKENDS];
static _Atomic(const sp__backend *) sp__backend_override_table; /* tests only; NULL: none */

/* Backend i's table, or NULL when it is not available (its module did not load). */
static const sp__backend *sp__backend_table(size_t i) {
#ifdef SP_HAVE_CUDA
  if (i == 0) return sp__cuda_table();
#endif
  (void)i;
  return &sp__host_backend;
}

/* The failure for backend i, known by name but unavailable. */
static sp_status sp__backend_unavailable(size_t i) {
#ifdef SP_CUDA_MODULE
  if (i == 0)
    return sp__fail(SP_ERR_UNSUPPORTED, "backend 'cuda' is unavailable: %s", sp__cuda_load_error);
#endif
  return sp__fail(SP_ERR_UNSUPPORTED, "backend '%s' is unavailable", sp__backend_names[i]);
}

sp_status sp__backend_validate(const sp__backend *be) {
  if (!be) return sp__fail(SP_ERR_BACKEND, "backend table is NULL");
  const char *name = be->name ? be->name : "(unnamed)";
  if (be->version != SP__BACKEND_VERSION)
    return sp__fail(SP_ERR_BACKEND, "backend %s: table version %u, the core expects %u", name,
                    be->version, SP__BACKEND_VERSION);
#define SP__REQUIRE(slot) \
  if (!be->slot)          \
  return sp__fail(SP_ERR_BACKEND, "backend %s: required slot %s is NULL", name, #slot)
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
    return sp__fail(SP_ERR_BACKEND,
                    "backend %s: host_alloc_pinned and host_free_pinned must "
                    "be both set or both NULL",
                    name);
  if (!be->stream_native != !be->stream_wait_native)
    return sp__fail(SP_ERR_BACKEND,
                    "backend %s: stream_native and stream_wait_native must be "
                    "both set or both NULL",
                    name);
  int resident =
      !!be->resident_open + !!be->resident_run + !!be->resident_launches + !!be->resident_close;
  if (resident != 0 && resident != 4)
    return sp__fail(SP_ERR_BACKEND, "backend %s: resident slots must be all set or all NULL", name);
  if (!be->mem_decommit != !be->mem_commit)
    return sp__fail(SP_ERR_BACKEND,
                    "backend %s: mem_decommit and mem_commit must be both set or both NULL", name);
  return SP_OK;
}

static sp_status sp__backend_checked(size_t i, const sp__backend **out) {
  const sp__backend *be = sp__backend_table(i);
  if (!be) return sp__backend_unavailable(i);
  int state = atomic_load_explicit(&sp__backend_state[i], memory_order_acquire);
  if (state == 0) {
    state = sp__backend_validate(be) == SP_OK ? 1 : 2;
    atomic_store_explicit(&sp__backend_state[i], state, memory_order_release);
  }
  if (state != 1) return sp__backend_validate(be); /* the message again */
  const sp__backend *o = atomic_load_explicit(&sp__backend_override_table, memory_order_acquire);
  *out = o && !strcmp(o->name, be->name) ? o : be;
  return SP_OK;
}

sp_status sp__backend_override(const sp__backend *be) {
  if (be) {
    sp_status st = sp__backend_validate(be);
    if (st != SP_OK) return st;
    if (!sp_backend_compiled(be->name))
      return sp__fail(SP_ERR_UNSUPPORTED,
                      "sp__backend_override: no available backend is "
                      "named '%s'",
                      be->name);
  }
  atomic_store_explicit(&sp__backend_override_table, be, memory_order_release);
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
    if (!strcmp(sp__backend_names[i], name)) return sp__backend_checked(i, out);
  return sp__fail(SP_ERR_UNSUPPORTED, "backend '%s' is not compiled into this library", name);
}

int sp_backend_compiled(const char *backend) {
  if (!backend) return 0;
  for (size_t i = 0; i < SP__BACKENDS; i++)
    if (!strcmp(sp__backend_names[i], backend)) return sp__backend_table(i) != NULL;
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
