/* The argument rules of an encoder-layer op (backend.h's sp__nn) and of a linear op's f32 io
 * (sp__linear.io), written once for every backend: each nn_async slot calls sp__nn_op_check and
 * each linear_async slot sp__linear_io_check at submission, so every backend refuses exactly the
 * same ops with SP_ERR_INVALID_ARGUMENT and runs nothing for them. Internal to the library; a
 * backend built as a module (the CUDA one) links its own copy of nn_check.c.
 */
#ifndef SP_BACKEND_NN_CHECK_H
#define SP_BACKEND_NN_CHECK_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest extent of any one dimension of an sp__nn op. */
#define SP__NN_DIM_MAX (1u << 24)

/* SP_OK when op is well formed: a known kind and dtype, every extent in 1..SP__NN_DIM_MAX with
 * their product at most 2^40, every required pointer non-NULL, LayerNorm's eps >= 0 and
 * attention's scale finite. Otherwise SP_ERR_INVALID_ARGUMENT with a message naming fn. Token
 * ids and lengths live in device memory and are not read here (backend.h). Any thread. */
sp_status sp__nn_op_check(const sp__nn *op, const char *fn);

/* SP_OK when op->io holds only SP__LINEAR_* flags and, for a bf16 or f16 op with any, op->batch
 * is at most rows_max (the backend's linear_f32_io_rows for the device). Otherwise
 * SP_ERR_INVALID_ARGUMENT naming fn. Any thread. */
sp_status sp__linear_io_check(const sp__linear *op, unsigned rows_max, const char *fn);

#ifdef __cplusplus
}
#endif

#endif /* SP_BACKEND_NN_CHECK_H */
