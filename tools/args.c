/* The CLI's option loop and value parsers (see args.h for the grammar and the errors).
 *
 * Owns: the getopt_long loop every subcommand runs, the usage-error messages, and the strict
 * value parsers. Counts and byte sizes go through the library's own grammar (src/core/number.h,
 * header-only), so `--bytes 64KiB` and `STREAMPOOL_MEMORY_LIMIT=64KiB` read alike. No state
 * beyond getopt's globals and the range-message buffer; single-threaded.
 */
#include "args.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/number.h"

enum { ARGS_MAX_OPTIONS = 64, ARGS_HELP = 0x10000 };

static char args_why[160]; /* the last range message */

int sp_cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "streampool %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n(streampool %s --help lists the options)\n", cmd);
  va_end(ap);
  return SP_CLI_USAGE;
}

/* opts plus --help, into all[] (the caller's table is not required to list --help). */
static int args_table(const struct option *opts, struct option *all) {
  int n = 0;
  for (; opts[n].name && n < ARGS_MAX_OPTIONS - 2; n++) all[n] = opts[n];
  all[n++] = (struct option){"help", no_argument, 0, ARGS_HELP};
  all[n] = (struct option){0, 0, 0, 0};
  return n;
}

int sp_cli_parse(const char *cmd, int argc, char **argv, const struct option *opts,
                 void (*usage)(FILE *f), sp_cli_set_fn set, void *ctx) {
  struct option all[ARGS_MAX_OPTIONS];
  args_table(opts, all);
  int c, li = -1;
  optind = 0; /* glibc: start over (each command parses once, but tests may call twice) */
  opterr = 0;
  while ((c = getopt_long(argc, argv, "+:h", all, &li)) != -1) {
    const char *flag = argv[optind - 1 < argc ? optind - 1 : argc - 1];
    if (c == 'h' || c == ARGS_HELP) {
      usage(stdout);
      return 1;
    }
    if (c == ':') return sp_cli_usage_error(cmd, "option '%s' needs a value", flag);
    if (c == '?') return sp_cli_usage_error(cmd, "unknown option '%s'", flag);
    const char *why = set(c, optarg, ctx);
    if (why)
      return sp_cli_usage_error(cmd, "bad value '%s' for --%s: %s", optarg ? optarg : "",
                                li >= 0 ? all[li].name : "?", why);
    li = -1;
  }
  if (optind < argc) return sp_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  return 0;
}

static const char *args_number(const char *s, bool bytes, uint64_t lo, uint64_t hi, uint64_t *out) {
  sp__number_status st = sp__number_parse(s, bytes, lo, hi, out);
  if (st == SP__NUMBER_OK) return NULL;
  if (st != SP__NUMBER_RANGE) return sp__number_why(st, bytes);
  snprintf(args_why, sizeof(args_why), "out of range [%llu, %llu]", (unsigned long long)lo,
           (unsigned long long)hi);
  return args_why;
}

const char *sp_cli_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  return args_number(s, false, lo, hi, out);
}

const char *sp_cli_bytes(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  return args_number(s, true, lo, hi, out);
}

const char *sp_cli_unsigned(const char *s, unsigned lo, unsigned hi, unsigned *out) {
  uint64_t v = 0;
  const char *why = args_number(s, false, lo, hi, &v);
  if (!why) *out = (unsigned)v;
  return why;
}

/* digits [. digits] [e|E [+|-] digits], at least one digit before the exponent. */
static bool args_decimal_syntax(const char *s) {
  size_t digits = strspn(s, "0123456789");
  s += digits;
  if (*s == '.') {
    size_t frac = strspn(s + 1, "0123456789");
    digits += frac;
    s += 1 + frac;
  }
  if (!digits) return false;
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '+' || *s == '-') s++;
    size_t exp = strspn(s, "0123456789");
    if (!exp) return false;
    s += exp;
  }
  return *s == '\0';
}

const char *sp_cli_decimal(const char *s, double lo, double hi, double *out) {
  if (!*s) return "is empty";
  if (!args_decimal_syntax(s))
    return "is not a decimal number (digits, optional fraction and exponent: 0.5, 1e-5; no sign)";
  double v = strtod(s, NULL);
  if (!isfinite(v) || v < lo || v > hi) {
    snprintf(args_why, sizeof(args_why), "out of range [%g, %g]", lo, hi);
    return args_why;
  }
  *out = v;
  return NULL;
}

const char *sp_cli_list(const char *s, unsigned lo, unsigned hi, bool distinct, unsigned max_n,
                        unsigned *out, unsigned *n) {
  unsigned count = 0, vals[256];
  char item[32];
  if (!*s) return "is empty";
  for (const char *p = s;; p++) {
    size_t len = strcspn(p, ",");
    if (len == 0) return "has an empty item (counts separated by single commas)";
    if (len >= sizeof(item)) return "has an item that is too long";
    if (count == max_n || count == 256) {
      snprintf(args_why, sizeof(args_why), "has more than %u items", max_n);
      return args_why;
    }
    memcpy(item, p, len);
    item[len] = '\0';
    const char *why = sp_cli_unsigned(item, lo, hi, &vals[count]);
    if (why) return why;
    for (unsigned i = 0; distinct && i < count; i++)
      if (vals[i] == vals[count]) return "names an item twice";
    count++;
    p += len;
    if (!*p) break;
  }
  memcpy(out, vals, sizeof(*out) * count);
  *n = count;
  return NULL;
}

const char *sp_cli_dtype(const char *s, sp_dtype *out) {
  if (!strcmp(s, "f32")) *out = SP_F32;
  else if (!strcmp(s, "bf16")) *out = SP_BF16;
  else if (!strcmp(s, "f16")) *out = SP_F16;
  else return "not a dtype (f32, bf16 or f16)";
  return NULL;
}

const char *sp_cli_dtypes(const char *s, bool on[3]) {
  bool seen[3] = {false, false, false};
  for (const char *p = s;; p++) {
    char item[8];
    size_t len = strcspn(p, ",");
    if (len == 0 || len >= sizeof(item)) return "not a list of dtypes (e.g. f32,bf16,f16)";
    memcpy(item, p, len);
    item[len] = 0;
    sp_dtype dt;
    const char *why = sp_cli_dtype(item, &dt);
    if (why) return why;
    if (seen[dt]) return "names a dtype twice";
    seen[dt] = true;
    p += len;
    if (!*p) break;
  }
  memcpy(on, seen, sizeof(seen));
  return NULL;
}

const char *sp_cli_backend(const char *s, const char **out) {
  static const char *const known[] = {"host", "cuda"};
  for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
    if (!strcmp(s, known[i])) {
      *out = known[i];
      return NULL;
    }
  }
  if (strcmp(s, "auto")) return "not a backend (host, cuda or auto)";
  *out = NULL;
  return NULL;
}

const char *sp_cli_dtype_name(sp_dtype dt) {
  return dt == SP_BF16 ? "bf16" : dt == SP_F16 ? "f16" : "f32";
}
