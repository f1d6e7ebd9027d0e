/* The STREAMPOOL_* environment variables: one reader for all of them (internal).
 *
 * Every variable, whoever reads it (the device open here, the host backend, the batcher, the
 * model build), goes through these functions, so all of them have one grammar (src/core/number.h):
 * a count is digits only; a byte size adds K/M/G/T (powers of 1024) with an optional B or iB; a
 * switch is 0 or 1; a name is one of a fixed list, exactly. An empty value is an error for every
 * variable (unset it to get the default): a deployment that meant to set a value and produced an
 * empty one is told so at start-up instead of being silently defaulted. Every failure is
 * SP_ERR_INVALID_ARGUMENT through sp__fail with one message format:
 *   "<fn>: <VARIABLE>='<value>' <what is wrong>"
 * Any thread (getenv is read, never written).
 */
#ifndef SP_CORE_ENV_H
#define SP_CORE_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* A numeric variable's kind: digits only, or a byte size with a unit. */
typedef enum sp__env_kind { SP__ENV_COUNT = 0, SP__ENV_BYTES = 1 } sp__env_kind;

/* Parses text (the value of variable `name`) as a number of `kind` in [min, max]. */
sp_status sp__env_parse_u64(const char *fn, const char *name, const char *text, sp__env_kind kind,
                            uint64_t min, uint64_t max, uint64_t *out);

/* Reads variable `name`: unset leaves *out alone and sets *present = false; otherwise parses it
 * as above (*present = true on success). */
sp_status sp__env_u64(const char *fn, const char *name, sp__env_kind kind, uint64_t min,
                      uint64_t max, uint64_t *out, bool *present);

/* Reads a count variable in [min, max], *out = dflt when it is unset. */
sp_status sp__env_u64_or(const char *fn, const char *name, sp__env_kind kind, uint64_t min,
                         uint64_t max, uint64_t dflt, uint64_t *out);

/* Reads a switch (0 or 1), *out = dflt when it is unset. */
sp_status sp__env_switch(const char *fn, const char *name, bool dflt, bool *out);

/* Reads a name variable: exactly one of choices[0..n) (expected lists them for the message);
 * *index is set to the match, and left alone when the variable is unset. */
sp_status sp__env_choice(const char *fn, const char *name, const char *const *choices, size_t n,
                         const char *expected, size_t *index);

/* The applied environment of one sp_device_open: the effective config with overrides. */
sp_status sp__env_apply(const char *fn, sp_device_config *cfg);

#endif /* SP_CORE_ENV_H */
