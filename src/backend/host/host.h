/* The host backend's hooks for tests and for the other layers (internal).
 *
 * The backend itself is the method table sp__host_backend (src/backend/backend.h). This header adds
 * what white-box tests need beyond the table: device-memory fault injection (the bf16 conversions
 * are core/dtype.h's). All functions here: any thread.
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

#endif /* SP_BACKEND_HOST_H */
