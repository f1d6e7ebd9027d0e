/* Model descriptions (internal): names and the backend activation of an sp_activation.
 * The parser itself is public (sp_model_desc_parse, src/infer/model_desc.c). No state.
 */
#ifndef SP_INFER_MODEL_DESC_H
#define SP_INFER_MODEL_DESC_H

#include "backend/backend.h"
#include "streampool.h"

/* The text-form name of a ("gelu"), or NULL when a is not an sp_activation. */
const char *sp__activation_name(sp_activation a);

/* The backend's activation for a (a valid sp_activation). */
sp__act sp__activation_act(sp_activation a);

#endif /* SP_INFER_MODEL_DESC_H */
