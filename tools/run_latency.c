/* streampool run: the latency histogram. Log-linear buckets, 32 per power of two (1/32
 * relative resolution) up to 2^63 ns; each worker thread fills its own, the row merges them and
 * reads p50/p99 off the merge. No state; any thread.
 */
#include <math.h>

#include "run.h"

unsigned sp_cli_lat_bucket(uint64_t ns) {
  if (ns < 32) return (unsigned)ns;
  unsigned e = 63u - (unsigned)__builtin_clzll(ns);
  return (e - 4) * 32 + (unsigned)((ns >> (e - 5)) & 31);
}

static double lat_value_us(unsigned idx) { /* bucket midpoint */
  if (idx < 32) return idx / 1000.0;
  unsigned e = idx / 32 + 4, sub = idx % 32;
  double lo = (double)(32 + sub) * ldexp(1.0, (int)e - 5);
  return (lo + ldexp(1.0, (int)e - 5) / 2) / 1000.0;
}

double sp_cli_lat_quantile(const uint64_t *h, uint64_t total, double q) {
  if (!total) return 0;
  uint64_t want = (uint64_t)ceil(q * (double)total), seen = 0;
  for (unsigned i = 0; i < LAT_BUCKETS; i++)
    if ((seen += h[i]) >= want && h[i]) return lat_value_us(i);
  return lat_value_us(LAT_BUCKETS - 1);
}
