/* The one option, list and number parser of the streampool CLI: every subcommand parses its argv
 * with sp_cli_parse and its values with the functions below, so every command has the same
 * grammar and the same errors.
 *
 * Grammar (the library's for STREAMPOOL_* variables, src/core/number.h, shared as code): a count
 * is decimal digits only (no sign, no space, no trailing text; more than 64 bits is refused, not
 * clamped); a byte size may add K, M, G or T (powers of 1024) and B or iB; a decimal is digits
 * with an optional fraction and exponent (1e-5, 0.25, 3), no sign, no inf/nan/hex; a list is
 * comma-separated counts with no empty item (so "1,,2", "2," and ",2" are refused).
 *
 * Errors: a bad flag is a usage error: exit status 2 and one line on stderr naming the flag (and
 * the value), "streampool CMD: bad value 'V' for --FLAG: WHY" or "streampool CMD: unknown option
 * '--FLAG'", then a pointer to --help. --help prints the usage on stdout and exits 0.
 * Single-threaded (getopt's globals; the range message is one static buffer).
 */
#ifndef SP_CLI_ARGS_H
#define SP_CLI_ARGS_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "streampool.h"

/* Exit statuses every subcommand uses. */
enum { SP_CLI_OK = 0, SP_CLI_FAILED = 1, SP_CLI_USAGE = 2 };

/* Sets one option: id is the option's struct option val, arg its value (NULL for a flag, or an
 * optional value left out). Returns NULL when taken, or why the value is bad. */
typedef const char *(*sp_cli_set_fn)(int id, const char *arg, void *ctx);

/* Parses argv[1..argc) (argv[0] is the command's name) against opts (getopt_long's table, ended
 * by a zero entry; "help" is handled here and need not be in it). Positional arguments are
 * refused. Returns 0 when every option was set, 1 when --help was printed to stdout (exit 0),
 * 2 after a usage error was printed to stderr (exit 2). */
int sp_cli_parse(const char *cmd, int argc, char **argv, const struct option *opts,
                 void (*usage)(FILE *f), sp_cli_set_fn set, void *ctx);

/* Prints "streampool CMD: <message>" and the --help pointer on stderr; returns SP_CLI_USAGE.
 * For checks across options made after sp_cli_parse. */
int sp_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Value parsers: NULL on success (and *out written), else why the value is bad. */
const char *sp_cli_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
const char *sp_cli_unsigned(const char *s, unsigned lo, unsigned hi, unsigned *out);
const char *sp_cli_bytes(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
const char *sp_cli_decimal(const char *s, double lo, double hi, double *out);
/* Up to max_n counts in [lo, hi] into out[], *n of them; distinct: no value twice. */
const char *sp_cli_list(const char *s, unsigned lo, unsigned hi, bool distinct, unsigned max_n,
                        unsigned *out, unsigned *n);
const char *sp_cli_dtype(const char *s, sp_dtype *out); /* f32 | bf16 | f16             */
/* A comma-separated list of dtypes, each at most once ("f32,f16"): on[dt] says which. */
const char *sp_cli_dtypes(const char *s, bool on[3]);
const char *sp_cli_backend(const char *s, const char **out); /* host | cuda | auto (-> NULL) */

/* "f32", "bf16" or "f16". */
const char *sp_cli_dtype_name(sp_dtype dt);

#endif /* SP_CLI_ARGS_H */
