/* A fault-injecting backend table for white-box tests (the pattern of SQLite's test_malloc.c).
 *
 * tu_fault_install("host") builds a copy of the compiled-in table whose slots forward to the real
 * ones, and installs it with sp__backend_override, so every later sp_device_open of that backend
 * (by name or by "auto") runs through it. Only slots the real table has are wrapped: an optional
 * slot that is NULL stays NULL, so optional-slot behaviour is the real backend's. Handles are the
 * real backend's own (the wrapper adds no state to them).
 *
 * tu_fault_arm(slot, nth, persist) counts the calls of one status-returning slot from now on:
 * calls 0..nth-1 behave normally, call nth fails (and, with persist, every later call too) with
 * the status the slot documents (TU_FAULT_SLOTS: SP_ERR_OUT_OF_MEMORY for the two allocations,
 * SP_ERR_BACKEND for the rest) and a message through sp__fail naming the slot and the call.
 * How a slot fails, so the failure is one a real backend could produce:
 *   - most slots fail before acting (nothing queued, created or changed);
 *   - stream_sync and event_sync fail after the real wait (the work is done, the error is
 *     reported, as an asynchronous device error is at the next sync);
 *   - mem_free and host_free_pinned fail after the real free (the memory is back; a caller that
 *     frees again would be caught by ASan / the backend's checks);
 *   - graph_capture_end always ends the capture (backend.h): the real one runs, and a graph it
 *     returned is destroyed before the failure is reported.
 * One slot is armed at a time; tu_fault_disarm() stops injecting. Void slots (device_close,
 * stream_destroy, event_destroy, graph_destroy, resident_close) and device_name are forwarded and
 * never fail.
 *
 * Leak accounting: tu_fault_live() counts the backend objects the wrapper saw created and not
 * yet destroyed (devices, streams, events, memory segments, pinned blocks, graphs) since install.
 *
 * Thread safety: the forwarders may be called from any thread (counters are atomic); install,
 * uninstall, arm and disarm are called by the test's main thread while no call is in flight
 * that should see the change half-made (arm between steps, not during them).
 */
#ifndef SP_TU_BACKEND_FAULTS_H
#define SP_TU_BACKEND_FAULTS_H

#include "backend/backend.h"

/* Every status-returning slot of sp__backend: (name, the status an injected failure returns). */
#define TU_FAULT_SLOTS(X)                    \
  X(device_count, SP_ERR_BACKEND)            \
  X(device_open, SP_ERR_BACKEND)             \
  X(memory_info, SP_ERR_BACKEND)             \
  X(stream_create, SP_ERR_BACKEND)           \
  X(stream_query, SP_ERR_BACKEND)            \
  X(stream_sync, SP_ERR_BACKEND)             \
  X(memcpy_async, SP_ERR_BACKEND)            \
  X(memset_async, SP_ERR_BACKEND)            \
  X(host_func, SP_ERR_BACKEND)               \
  X(linear_async, SP_ERR_BACKEND)            \
  X(convert_async, SP_ERR_BACKEND)           \
  X(nn_async, SP_ERR_BACKEND)                \
  X(event_create, SP_ERR_BACKEND)            \
  X(event_record, SP_ERR_BACKEND)            \
  X(stream_wait_event, SP_ERR_BACKEND)       \
  X(event_query, SP_ERR_BACKEND)             \
  X(event_sync, SP_ERR_BACKEND)              \
  X(event_elapsed_ms, SP_ERR_BACKEND)        \
  X(mem_alloc, SP_ERR_OUT_OF_MEMORY)         \
  X(mem_free, SP_ERR_BACKEND)                \
  X(graph_capture_begin, SP_ERR_BACKEND)     \
  X(graph_capture_end, SP_ERR_BACKEND)       \
  X(graph_launch, SP_ERR_BACKEND)            \
  X(host_alloc_pinned, SP_ERR_OUT_OF_MEMORY) \
  X(host_free_pinned, SP_ERR_BACKEND)        \
  X(memcpy_peer_async, SP_ERR_BACKEND)       \
  X(stream_native, SP_ERR_BACKEND)           \
  X(stream_wait_native, SP_ERR_BACKEND)      \
  X(mem_decommit, SP_ERR_BACKEND)            \
  X(mem_commit, SP_ERR_OUT_OF_MEMORY)        \
  X(resident_open, SP_ERR_BACKEND)           \
  X(resident_run, SP_ERR_BACKEND)

typedef enum tu_slot {
#define TU_SLOT_ENUM(name, status) TU_SLOT_##name,
  TU_FAULT_SLOTS(TU_SLOT_ENUM)
#undef TU_SLOT_ENUM
      TU_SLOT_COUNT
} tu_slot;

/* Objects created through the wrapper and not destroyed yet. */
typedef struct tu_fault_live {
  long devices, streams, events, segments, pinned, graphs;
} tu_fault_live;

/* Wraps the compiled-in backend `backend` ("host", "cuda") and overrides it. SP_OK, or the
 * status of the lookup/override. Open devices of that backend keep the real table. */
sp_status tu_fault_install(const char *backend);
/* Removes the override and disarms. Devices opened through the wrapper must be closed first. */
void tu_fault_uninstall(void);

/* The wrapped table (valid while installed), for tests that drive the table directly. */
const sp__backend *tu_fault_table(void);

void tu_fault_arm(tu_slot slot, unsigned long nth, int persist);
void tu_fault_disarm(void);
/* Injected failures since the last arm. */
unsigned long tu_fault_hits(void);
/* Calls of `slot` since the last arm (all slots count while installed). */
unsigned long tu_fault_calls(tu_slot slot);

tu_fault_live tu_fault_live_get(void);

const char *tu_slot_name(tu_slot slot);
sp_status tu_slot_status(tu_slot slot);
/* Whether the real table has the slot (optional slots may be NULL). */
int tu_slot_present(tu_slot slot);

#endif /* SP_TU_BACKEND_FAULTS_H */
