/* What every CLI command measures with: one clock, and one error metric with one tolerance per
 * dtype (run's check against its single-threaded reference and check's against expected files
 * are the same check, so they agree on what "wrong" means).
 *
 * The error of an output row y against its expected row want is
 *     max_i |y_i - want_i| / max(max_i |want_i|, 1e-6)
 * (relative to the row's largest expected value; a row of near-zeros is compared absolutely at
 * 1e-6); a NaN anywhere makes it infinite. A command's error is the largest over its rows. The
 * default tolerance is 1e-5 for f32, 1e-2 for bf16 and 2e-3 for f16 (bf16 keeps 8 significant
 * bits: one rounding step is 2^-8 = 3.9e-3 of a value, and three layers accumulate a few; f16
 * keeps 11: 2^-11 = 4.9e-4 a step).
 * Any thread; no state.
 */
#ifndef SP_CLI_MEASURE_H
#define SP_CLI_MEASURE_H

#include <stddef.h>
#include <stdint.h>

#include "streampool.h"

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t sp_cli_now_ns(void);

/* The error of one row of n outputs, as above. */
double sp_cli_row_error(const float *y, const float *want, size_t n);

/* The default tolerance of sp_cli_row_error for outputs of a dt model. */
double sp_cli_tolerance(sp_dtype dt);

#endif /* SP_CLI_MEASURE_H */
