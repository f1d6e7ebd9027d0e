/* The fault-injecting backend table; see tu_backend_faults.h.
 *
 * Owns: one wrapped copy of a compiled-in table (wrap_table), the pointer to the real one, the
 * per-slot call counters, the armed slot and the live-object counters. Invariant: a slot of
 * wrap_table is a forwarder exactly when the real table's slot is non-NULL. No lock: counters are
 * atomics; install/arm/disarm happen between the test's steps on its main thread.
 */
#include "tu_backend_faults.h"

#include <stdatomic.h>
#include <string.h>

#include "core/status.h"

static const sp__backend *real; /* the compiled-in table being wrapped; NULL: not installed */
static sp__backend wrap_table;
static atomic_ulong calls[TU_SLOT_COUNT];
static atomic_int armed = -1; /* the armed slot, -1: none */
static atomic_ulong armed_nth;
static atomic_int armed_persist;
static atomic_ulong hits;
static atomic_long live_devices, live_streams, live_events, live_segments, live_pinned, live_graphs;

static const char *const slot_names[TU_SLOT_COUNT] = {
#define TU_SLOT_NAME(name, status) #name,
    TU_FAULT_SLOTS(TU_SLOT_NAME)
#undef TU_SLOT_NAME
};
static const sp_status slot_status[TU_SLOT_COUNT] = {
#define TU_SLOT_STATUS(name, status) status,
    TU_FAULT_SLOTS(TU_SLOT_STATUS)
#undef TU_SLOT_STATUS
};

const char *tu_slot_name(tu_slot slot) { return slot < TU_SLOT_COUNT ? slot_names[slot] : "?"; }
sp_status tu_slot_status(tu_slot slot) { return slot < TU_SLOT_COUNT ? slot_status[slot] : SP_OK; }

/* Counts one call of slot; the status to fail it with, or SP_OK to let it through. */
static sp_status take(tu_slot slot) {
  unsigned long k = atomic_fetch_add(&calls[slot], 1);
  if (atomic_load(&armed) != (int)slot) return SP_OK;
  unsigned long nth = atomic_load(&armed_nth);
  if (k != nth && !(k > nth && atomic_load(&armed_persist))) return SP_OK;
  atomic_fetch_add(&hits, 1);
  return sp__fail(slot_status[slot], "injected fault: backend %s slot %s, call %lu (tu_fault_arm)",
                  real->name, slot_names[slot], k);
}

/* ---- forwarders that fail before acting ---------------------------------------------------- */

#define TU_FORWARD_BEFORE(X)                                                                      \
  X(device_count, (int *count), (count))                                                          \
  X(memory_info, (sp__bdevice * d, size_t * f, size_t * t), (d, f, t))                            \
  X(stream_query, (sp__bstream * s), (s))                                                         \
  X(memcpy_async, (sp__bstream * s, void *dst, const void *src, size_t n), (s, dst, src, n))      \
  X(memset_async, (sp__bstream * s, void *dst, int v, size_t n), (s, dst, v, n))                  \
  X(host_func, (sp__bstream * s, void (*fn)(void *), void *arg), (s, fn, arg))                    \
  X(linear_async, (sp__bstream * s, const sp__linear *op), (s, op))                               \
  X(convert_async,                                                                                \
    (sp__bstream * s, void *dst, sp_dtype dt, const void *src, sp_dtype st, size_t n),            \
    (s, dst, dt, src, st, n))                                                                     \
  X(nn_async, (sp__bstream * s, const sp__nn *op), (s, op))                                       \
  X(event_record, (sp__bevent * e, sp__bstream * s), (e, s))                                      \
  X(stream_wait_event, (sp__bstream * s, sp__bevent * e), (s, e))                                 \
  X(event_query, (sp__bevent * e), (e))                                                           \
  X(event_elapsed_ms, (sp__bevent * a, sp__bevent * b, float *ms), (a, b, ms))                    \
  X(graph_capture_begin, (sp__bstream * s), (s))                                                  \
  X(graph_launch, (sp__bgraph * g, sp__bstream * s), (g, s))                                      \
  X(memcpy_peer_async, (sp__bstream * ds, void *dst, sp__bdevice *sd, const void *src, size_t n), \
    (ds, dst, sd, src, n))                                                                        \
  X(stream_native, (sp__bstream * s, void **out), (s, out))                                       \
  X(stream_wait_native, (sp__bstream * s, void *native), (s, native))                             \
  X(mem_decommit, (sp__bdevice * d, void *seg, size_t off, size_t n), (d, seg, off, n))           \
  X(mem_commit, (sp__bdevice * d, void *seg, size_t off, size_t n), (d, seg, off, n))             \
  X(resident_open, (sp__bdevice * d, const sp__resident_desc *desc, sp__bresident **out),         \
    (d, desc, out))                                                                               \
  X(resident_run, (sp__bresident * r, const float *in, float *out), (r, in, out))

#define TU_DEFINE_BEFORE(name, params, args)       \
  static sp_status fw_##name params {              \
    sp_status fail = take(TU_SLOT_##name);         \
    return fail != SP_OK ? fail : real->name args; \
  }
TU_FORWARD_BEFORE(TU_DEFINE_BEFORE)
#undef TU_DEFINE_BEFORE

/* ---- forwarders that create (counted) -------------------------------------------------------- */

static sp_status fw_device_open(int index, sp__bdevice **out) {
  sp_status st = take(TU_SLOT_device_open);
  if (st == SP_OK && (st = real->device_open(index, out)) == SP_OK)
    atomic_fetch_add(&live_devices, 1);
  return st;
}

static sp_status fw_stream_create(sp__bdevice *d, unsigned index, sp__bstream **out) {
  sp_status st = take(TU_SLOT_stream_create);
  if (st == SP_OK && (st = real->stream_create(d, index, out)) == SP_OK)
    atomic_fetch_add(&live_streams, 1);
  return st;
}

static sp_status fw_event_create(sp__bdevice *d, unsigned flags, sp__bevent **out) {
  sp_status st = take(TU_SLOT_event_create);
  if (st == SP_OK && (st = real->event_create(d, flags, out)) == SP_OK)
    atomic_fetch_add(&live_events, 1);
  return st;
}

static sp_status fw_mem_alloc(sp__bdevice *d, size_t bytes, void **out) {
  sp_status st = take(TU_SLOT_mem_alloc);
  if (st == SP_OK && (st = real->mem_alloc(d, bytes, out)) == SP_OK)
    atomic_fetch_add(&live_segments, 1);
  return st;
}

static sp_status fw_host_alloc_pinned(sp__bdevice *d, size_t bytes, void **out) {
  sp_status st = take(TU_SLOT_host_alloc_pinned);
  if (st == SP_OK && (st = real->host_alloc_pinned(d, bytes, out)) == SP_OK)
    atomic_fetch_add(&live_pinned, 1);
  return st;
}

/* ---- forwarders that act, then may fail ------------------------------------------------------ */

static sp_status fw_stream_sync(sp__bstream *s) {
  sp_status st = real->stream_sync(s);
  return st != SP_OK ? st : take(TU_SLOT_stream_sync);
}

static sp_status fw_event_sync(sp__bevent *e) {
  sp_status st = real->event_sync(e);
  return st != SP_OK ? st : take(TU_SLOT_event_sync);
}

static sp_status fw_mem_free(sp__bdevice *d, void *p) {
  sp_status st = real->mem_free(d, p);
  if (st != SP_OK) return st;
  if (p) atomic_fetch_sub(&live_segments, 1);
  return take(TU_SLOT_mem_free);
}

static sp_status fw_host_free_pinned(sp__bdevice *d, void *p) {
  sp_status st = real->host_free_pinned(d, p);
  if (st != SP_OK) return st;
  if (p) atomic_fetch_sub(&live_pinned, 1);
  return take(TU_SLOT_host_free_pinned);
}

static sp_status fw_graph_capture_end(sp__bstream *s, sp__bgraph **out) {
  sp__bgraph *g = NULL;
  sp_status st = real->graph_capture_end(s, &g);
  if (st != SP_OK) return st;
  sp_status fail = take(TU_SLOT_graph_capture_end);
  if (fail != SP_OK) {
    real->graph_destroy(g);
    return fail;
  }
  atomic_fetch_add(&live_graphs, 1);
  *out = g;
  return SP_OK;
}

/* ---- void slots (counted, never fail) -------------------------------------------------------- */

static void fw_device_close(sp__bdevice *d) {
  real->device_close(d);
  atomic_fetch_sub(&live_devices, 1);
}
static void fw_stream_destroy(sp__bstream *s) {
  real->stream_destroy(s);
  atomic_fetch_sub(&live_streams, 1);
}
static void fw_event_destroy(sp__bevent *e) {
  real->event_destroy(e);
  atomic_fetch_sub(&live_events, 1);
}
static void fw_graph_destroy(sp__bgraph *g) {
  real->graph_destroy(g);
  if (g) atomic_fetch_sub(&live_graphs, 1);
}

/* ---- install ------------------------------------------------------------------------------- */

static int present[TU_SLOT_COUNT];

int tu_slot_present(tu_slot slot) { return slot < TU_SLOT_COUNT && present[slot]; }

sp_status tu_fault_install(const char *backend) {
  tu_fault_uninstall();
  const sp__backend *be = NULL;
  sp_status st = sp__backend_find(backend, &be);
  if (st != SP_OK) return st;
  real = be;
  wrap_table = *be;
#define TU_WRAP(name) \
  if (be->name) wrap_table.name = fw_##name
#define TU_WRAP_STATUS(name, status) \
  TU_WRAP(name);                     \
  present[TU_SLOT_##name] = be->name != NULL;
  TU_FAULT_SLOTS(TU_WRAP_STATUS)
  TU_WRAP(device_close);
  TU_WRAP(stream_destroy);
  TU_WRAP(event_destroy);
  TU_WRAP(graph_destroy);
#undef TU_WRAP_STATUS
#undef TU_WRAP
  atomic_store(&live_devices, 0), atomic_store(&live_streams, 0), atomic_store(&live_events, 0);
  atomic_store(&live_segments, 0), atomic_store(&live_pinned, 0), atomic_store(&live_graphs, 0);
  tu_fault_disarm();
  st = sp__backend_override(&wrap_table);
  if (st != SP_OK) real = NULL;
  return st;
}

void tu_fault_uninstall(void) {
  tu_fault_disarm();
  if (!real) return;
  (void)sp__backend_override(NULL);
  real = NULL;
}

const sp__backend *tu_fault_table(void) { return real ? &wrap_table : NULL; }

void tu_fault_arm(tu_slot slot, unsigned long nth, int persist) {
  atomic_store(&armed, -1);
  for (int i = 0; i < TU_SLOT_COUNT; i++) atomic_store(&calls[i], 0);
  atomic_store(&hits, 0);
  atomic_store(&armed_nth, nth);
  atomic_store(&armed_persist, persist);
  atomic_store(&armed, (int)slot);
}

void tu_fault_disarm(void) { atomic_store(&armed, -1); }

unsigned long tu_fault_hits(void) { return atomic_load(&hits); }

unsigned long tu_fault_calls(tu_slot slot) {
  return slot < TU_SLOT_COUNT ? atomic_load(&calls[slot]) : 0;
}

tu_fault_live tu_fault_live_get(void) {
  tu_fault_live l = {atomic_load(&live_devices), atomic_load(&live_streams),
                     atomic_load(&live_events),  atomic_load(&live_segments),
                     atomic_load(&live_pinned),  atomic_load(&live_graphs)};
  return l;
}
