/* The one grammar for unsigned numbers given as text: the STREAMPOOL_* environment variables
 * (src/core/env.c) and the streampool CLI's numeric options (tools/args.c) both parse with it.
 *
 * A count is one or more decimal digits and nothing else: no sign, no space, no "0x", no
 * trailing text; a value that does not fit in 64 bits is refused, never clamped. A byte size is
 * a count optionally followed by K, M, G or T (either case, powers of 1024) and then an optional
 * "B" or "iB", or by "B" alone: 64M, 64MB, 64MiB, 64m and 67108864 are the same size. Empty text
 * is its own error. Header-only (static inline) and dependent on nothing else of the library, so
 * that the CLI, a separate program, uses the very same code. Any thread; no state.
 */
#ifndef SP_CORE_NUMBER_H
#define SP_CORE_NUMBER_H

#include <stdbool.h>
#include <stdint.h>

typedef enum sp__number_status {
  SP__NUMBER_OK = 0,
  SP__NUMBER_EMPTY,    /* ""                                                */
  SP__NUMBER_SYNTAX,   /* not digits (with a unit, for sizes)               */
  SP__NUMBER_OVERFLOW, /* more than 64 bits, with the unit applied          */
  SP__NUMBER_RANGE,    /* outside [min, max]                                */
} sp__number_status;

/* The shift of a size unit letter (K 10, M 20, G 30, T 40), 0 if c is not one. */
static inline unsigned sp__number_unit_shift(char c) {
  switch (c) {
  case 'k':
  case 'K': return 10;
  case 'm':
  case 'M': return 20;
  case 'g':
  case 'G': return 30;
  case 't':
  case 'T': return 40;
  default: return 0;
  }
}

/* Parses text as a count (bytes false) or a byte size (bytes true) in [min, max]. Writes *out
 * only on SP__NUMBER_OK. */
static inline sp__number_status sp__number_parse(const char *text, bool bytes, uint64_t min,
                                                 uint64_t max, uint64_t *out) {
  const char *p = text;
  uint64_t v = 0;
  if (!*p) return SP__NUMBER_EMPTY;
  if (*p < '0' || *p > '9') return SP__NUMBER_SYNTAX;
  for (; *p >= '0' && *p <= '9'; p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) return SP__NUMBER_OVERFLOW;
    v = v * 10 + d;
  }
  unsigned shift = bytes ? sp__number_unit_shift(*p) : 0;
  if (shift) p++;
  if (bytes && p[0] == 'B' && !p[1]) p += 1;
  else if (bytes && shift && p[0] == 'i' && p[1] == 'B' && !p[2]) p += 2;
  if (*p) return SP__NUMBER_SYNTAX;
  if (shift && v > (UINT64_MAX >> shift)) return SP__NUMBER_OVERFLOW;
  v <<= shift;
  if (v < min || v > max) return SP__NUMBER_RANGE;
  *out = v;
  return SP__NUMBER_OK;
}

/* What went wrong, as words that follow the quoted value ("'8x' is not a count ..."); for
 * SP__NUMBER_RANGE the caller adds the bounds. Never NULL. */
static inline const char *sp__number_why(sp__number_status st, bool bytes) {
  switch (st) {
  case SP__NUMBER_OK: return "is valid";
  case SP__NUMBER_EMPTY: return "is empty";
  case SP__NUMBER_SYNTAX:
    return bytes ? "is not a byte size (digits, then optionally K, M, G or T and B or iB)"
                 : "is not a count (digits only: no sign, space or suffix)";
  case SP__NUMBER_OVERFLOW: return "does not fit in 64 bits";
  case SP__NUMBER_RANGE: return "is out of range";
  }
  return "is invalid";
}

#endif /* SP_CORE_NUMBER_H */
