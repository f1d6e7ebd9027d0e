/* The host backend's hooks for tests and for the other layers (internal).
 *
 * The backend itself is the method table sp__host_backend (src/backend/backend.h). This header adds
 * what white-box tests and the model code need beyond the table: device-memory fault injection and
 * the bf16 conversions the backend uses (round to nearest even, NaN kept a NaN). All functions here:
 * any thread.
 */
#ifndef SP_BACKEND_HOST_H
#define SP_BACKEND_HOST_H

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* sp__host_fault_inject's argument that turns injection off (the state at process start). */
#define SP__HOST_FAULT_OFF UINT_MAX

/* Device-memory fault injection for every host device of the process.
 *
 * sp__host_fault_inject(n) with n < SP__HOST_FAULT_OFF: the next n calls of the host backend's
 * mem_alloc (on any host device, from any thread) behave normally; every call after those fails
 * with SP_ERR_OUT_OF_MEMORY ("injected fault"), until injection is turned off. So n = 0 makes the
 * very next call fail, n = 1 lets one more through.
 * sp__host_fault_inject(SP__HOST_FAULT_OFF) turns injection off.
 * A call that fails validation (bytes == 0, NULL out) does not count. mem_free is never affected.
 * Any thread; the countdown is one process-wide atomic. */
void sp__host_fault_inject(unsigned fail_after);

/* How many mem_alloc calls failed because of injection since the process started. Any thread. */
unsigned long sp__host_fault_count(void);

/* bf16 <-> f32. f32 -> bf16 rounds to nearest, ties to even; a NaN stays a NaN (quiet, sign and
 * top payload bits kept); overflow rounds to infinity as IEEE rounding does. */
static inline uint16_t sp__host_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float sp__host_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

#endif /* SP_BACKEND_HOST_H */
