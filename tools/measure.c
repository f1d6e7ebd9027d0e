/* The CLI's clock and error metric (see measure.h for the definitions). No state; any thread. */
#include "measure.h"

#include <math.h>
#include <time.h>

uint64_t sp_cli_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double sp_cli_row_error(const float *y, const float *want, size_t n) {
  double scale = 1e-6, err = 0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)y[i] - want[i]);
    if (!(d <= err)) err = isnan(d) ? INFINITY : d;
  }
  return err / scale;
}

double sp_cli_tolerance(sp_dtype dt) { return dt == SP_BF16 ? 1e-2 : dt == SP_F16 ? 2e-3 : 1e-5; }
