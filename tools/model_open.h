/* --model FILE [--arch TEXT]: loading a model file for a subcommand (model_open.c). */
#ifndef SP_CLI_MODEL_OPEN_H
#define SP_CLI_MODEL_OPEN_H

#include <stddef.h>

#include "streampool.h"

/* The usage lines of --arch, for the subcommands that take --model. */
#define SP_CLI_ARCH_USAGE                                                                        \
  "  --arch TEXT         the model's layers when the file does not describe itself, e.g.\n"      \
  "                      \"0:linear 1:gelu 2:layernorm 3:linear\" (see docs/ARCHITECTURE.md);\n" \
  "                      it overrides the file's __metadata__ / config.json\n"

/* sp_model_load (arch NULL: the file or its config.json describes it) or sp_model_load_desc with
 * arch parsed. The status and sp_last_error() say why it failed. */
sp_status sp_cli_model_open(sp_device *dev, const char *path, const char *arch, sp_dtype dt,
                            sp_model **out);

/* m's chain ("Linear(512->1024) GELU -> ...") in buf, cut with "..." if it does not fit. */
const char *sp_cli_model_chain(const sp_model *m, char *buf, size_t size);

#endif /* SP_CLI_MODEL_OPEN_H */
