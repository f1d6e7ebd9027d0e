/* The STREAMPOOL_* environment variables: the one reader, and the mapping of the device's own
 * variables onto sp_device_config.
 *
 * Owns the reading and the messages of every STREAMPOOL_* variable (the grammar itself is
 * src/core/number.h, shared with the CLI); the host backend, the batcher and the model build call
 * in here for theirs. It keeps no state and takes no lock; the config it fills is the caller's.
 * Overrides win over the caller's config. A bad value, the empty one included, is never ignored:
 * the call fails with the variable and the value named, so a typo in a deployment is found at
 * start-up rather than silently defaulted.
 */
#include "core/env.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/number.h"

sp_status sp__env_parse_u64(const char *fn, const char *name, const char *text, sp__env_kind kind,
                            uint64_t min, uint64_t max, uint64_t *out) {
  bool bytes = kind == SP__ENV_BYTES;
  sp__number_status st = sp__number_parse(text, bytes, min, max, out);
  if (st == SP__NUMBER_OK) return SP_OK;
  if (st == SP__NUMBER_RANGE)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s='%s' is out of range [%llu, %llu]", fn, name,
                    text, (unsigned long long)min, (unsigned long long)max);
  return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s='%s' %s%s", fn, name, text,
                  sp__number_why(st, bytes),
                  st == SP__NUMBER_EMPTY ? " (unset it for the default)" : "");
}

sp_status sp__env_u64(const char *fn, const char *name, sp__env_kind kind, uint64_t min,
                      uint64_t max, uint64_t *out, bool *present) {
  const char *text = getenv(name);
  *present = false;
  if (!text) return SP_OK;
  sp_status st = sp__env_parse_u64(fn, name, text, kind, min, max, out);
  if (st == SP_OK) *present = true;
  return st;
}

sp_status sp__env_u64_or(const char *fn, const char *name, sp__env_kind kind, uint64_t min,
                         uint64_t max, uint64_t dflt, uint64_t *out) {
  bool set = false;
  uint64_t v = dflt;
  sp_status st = sp__env_u64(fn, name, kind, min, max, &v, &set);
  if (st == SP_OK) *out = v;
  return st;
}

sp_status sp__env_switch(const char *fn, const char *name, bool dflt, bool *out) {
  uint64_t v = 0;
  sp_status st = sp__env_u64_or(fn, name, SP__ENV_COUNT, 0, 1, dflt ? 1 : 0, &v);
  if (st == SP_OK) *out = v != 0;
  return st;
}

sp_status sp__env_choice(const char *fn, const char *name, const char *const *choices, size_t n,
                         const char *expected, size_t *index) {
  const char *text = getenv(name);
  if (!text) return SP_OK;
  for (size_t i = 0; i < n; i++) {
    if (!strcmp(text, choices[i])) {
      *index = i;
      return SP_OK;
    }
  }
  return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s='%s' %s (expected %s)", fn, name, text,
                  *text ? "is not known" : "is empty", expected);
}

static sp_status env_backend(const char *fn, sp_device_config *cfg) {
  static const char *const known[] = {"auto", "host", "cuda"};
  size_t i = SIZE_MAX;
  sp_status st = sp__env_choice(fn, "STREAMPOOL_BACKEND", known, 3, "auto, host or cuda", &i);
  if (st == SP_OK && i != SIZE_MAX) cfg->backend = known[i];
  return st;
}

static sp_status env_mode(const char *fn, sp_device_config *cfg) {
  static const char *const known[] = {"round_robin", "exclusive"};
  size_t i = SIZE_MAX;
  sp_status st =
      sp__env_choice(fn, "STREAMPOOL_STREAM_MODE", known, 2, "round_robin or exclusive", &i);
  if (st == SP_OK && i != SIZE_MAX)
    cfg->stream_mode = i ? SP_STREAMS_EXCLUSIVE : SP_STREAMS_ROUND_ROBIN;
  return st;
}

sp_status sp__env_apply(const char *fn, sp_device_config *cfg) {
  uint64_t v = 0;
  bool set = false;
  sp_status st = env_backend(fn, cfg);
  if (st == SP_OK) st = env_mode(fn, cfg);
  if (st == SP_OK)
    st = sp__env_u64(fn, "STREAMPOOL_STREAMS", SP__ENV_COUNT, 2, SP_STREAMS_MAX, &v, &set);
  if (st != SP_OK) return st;
  if (set) cfg->streams = (unsigned)v;
  st = sp__env_u64(fn, "STREAMPOOL_SLOT_WAIT_MS", SP__ENV_COUNT, 0, UINT_MAX, &v, &set);
  if (st != SP_OK) return st;
  if (set) cfg->slot_wait_ms = (unsigned)v;
  st = sp__env_u64(fn, "STREAMPOOL_MEMORY_LIMIT", SP__ENV_BYTES, 0, SIZE_MAX, &v, &set);
  if (st != SP_OK) return st;
  if (set) cfg->memory_limit = (size_t)v;
  return SP_OK;
}
