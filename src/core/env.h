/* Strict parsing of the STREAMPOOL_* environment overrides (internal).
 *
 * A value is all digits (no sign, no spaces, no trailing junk), optionally followed by one of
 * K, M, G (powers of 1024, either case) where the variable allows it; out-of-range and overflowing
 * values are rejected. Every failure is SP_ERR_INVALID_ARGUMENT through sp__fail with a message
 * naming `fn`, the variable and the bad value. Any thread (getenv is read, never written).
 */
#ifndef SP_CORE_ENV_H
#define SP_CORE_ENV_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

/* Parses text as an unsigned number in [min, max] (suffixes allowed when `suffix`). `name` is
 * what the message calls the value (the variable). */
sp_status sp__env_parse_u64(const char *fn, const char *name, const char *text, bool suffix,
                            uint64_t min, uint64_t max, uint64_t *out);

/* Reads variable `name`: *present = false and SP_OK when unset; otherwise parses it as above. */
sp_status sp__env_u64(const char *fn, const char *name, bool suffix, uint64_t min, uint64_t max,
                      uint64_t *out, bool *present);

/* The applied environment of one sp_device_open: the effective config with overrides. */
sp_status sp__env_apply(const char *fn, sp_device_config *cfg);

#endif /* SP_CORE_ENV_H */
