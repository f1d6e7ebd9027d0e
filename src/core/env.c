/* The STREAMPOOL_* environment overrides read by sp_device_open.
 *
 * Owns the strict number parser and the mapping of each variable onto sp_device_config. It keeps
 * no state and takes no lock; the config it fills is the caller's. Overrides win over the
 * caller's config. A bad value is never ignored: the open fails with the variable and the value
 * named, so a typo in a deployment is found at start-up rather than silently defaulted.
 */
#include "core/env.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

sp_status sp__env_parse_u64(const char *fn, const char *name, const char *text, bool suffix,
                            uint64_t min, uint64_t max, uint64_t *out) {
  const char *p = text;
  uint64_t v = 0;
  if (*p < '0' || *p > '9')
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s='%s' is not a number", fn, name, text);
  for (; *p >= '0' && *p <= '9'; p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s='%s' overflows", fn, name, text);
    v = v * 10 + d;
  }
  unsigned shift = 0;
  if (suffix && *p) {
    switch (*p) {
      case 'k': case 'K': shift = 10; p++; break;
      case 'm': case 'M': shift = 20; p++; break;
      case 'g': case 'G': shift = 30; p++; break;
      default: break;
    }
  }
  if (*p)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s='%s' has trailing characters '%s'%s", fn,
                    name, text, p, suffix ? " (allowed suffixes: K, M, G)" : "");
  if (shift && v > (UINT64_MAX >> shift))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s='%s' overflows", fn, name, text);
  v <<= shift;
  if (v < min || v > max)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s='%s' is out of range [%llu, %llu]", fn, name,
                    text, (unsigned long long)min, (unsigned long long)max);
  *out = v;
  return SP_OK;
}

sp_status sp__env_u64(const char *fn, const char *name, bool suffix, uint64_t min, uint64_t max,
                      uint64_t *out, bool *present) {
  const char *text = getenv(name);
  *present = false;
  if (!text) return SP_OK;
  sp_status st = sp__env_parse_u64(fn, name, text, suffix, min, max, out);
  if (st == SP_OK) *present = true;
  return st;
}

static sp_status sp__env_backend(const char *fn, sp_device_config *cfg) {
  static const char *const known[] = {"auto", "host", "cuda"};
  const char *text = getenv("STREAMPOOL_BACKEND");
  if (!text) return SP_OK;
  for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
    if (!strcmp(text, known[i])) {
      cfg->backend = known[i];
      return SP_OK;
    }
  }
  return sp__fail(SP_ERR_INVALID_ARGUMENT,
                  "%s: STREAMPOOL_BACKEND='%s' is not a backend (auto, host, cuda)", fn, text);
}

static sp_status sp__env_mode(const char *fn, sp_device_config *cfg) {
  const char *text = getenv("STREAMPOOL_STREAM_MODE");
  if (!text) return SP_OK;
  if (!strcmp(text, "round_robin")) {
    cfg->stream_mode = SP_STREAMS_ROUND_ROBIN;
  } else if (!strcmp(text, "exclusive")) {
    cfg->stream_mode = SP_STREAMS_EXCLUSIVE;
  } else {
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: STREAMPOOL_STREAM_MODE='%s' is not round_robin or exclusive", fn, text);
  }
  return SP_OK;
}

sp_status sp__env_apply(const char *fn, sp_device_config *cfg) {
  uint64_t v = 0;
  bool set = false;
  sp_status st = sp__env_backend(fn, cfg);
  if (st == SP_OK) st = sp__env_mode(fn, cfg);
  if (st == SP_OK) st = sp__env_u64(fn, "STREAMPOOL_STREAMS", false, 2, SP_STREAMS_MAX, &v, &set);
  if (st != SP_OK) return st;
  if (set) cfg->streams = (unsigned)v;
  st = sp__env_u64(fn, "STREAMPOOL_SLOT_WAIT_MS", false, 0, UINT_MAX, &v, &set);
  if (st != SP_OK) return st;
  if (set) cfg->slot_wait_ms = (unsigned)v;
  st = sp__env_u64(fn, "STREAMPOOL_MEMORY_LIMIT", true, 0, SIZE_MAX, &v, &set);
  if (st != SP_OK) return st;
  if (set) cfg->memory_limit = (size_t)v;
  return SP_OK;
}
