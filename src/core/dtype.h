/* Element types on the host side (internal): sizes, validity, and the one f32 <-> bf16 conversion
 * every host-side caller uses (the model loader and builder, the host backend's convert and bf16
 * matmul, white-box tests), and f16 -> f32 for F16 files. The CUDA backend converts on the device
 * with its own kernels (src/backend/cuda/cuda_convert.cu), which round the same way
 * (__float2bfloat16_rn). Header-only; any thread; no state.
 */
#ifndef SP_CORE_DTYPE_H
#define SP_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "streampool.h"

/* dt is one of the sp_dtype values. */
static inline bool sp__dtype_valid(sp_dtype dt) { return dt == SP_F32 || dt == SP_BF16; }

/* Size in bytes of one element of dt (a valid dtype). */
static inline size_t sp__dtype_size(sp_dtype dt) { return dt == SP_BF16 ? 2u : 4u; }

/* f32 -> bf16: rounds to nearest, ties to even; a NaN stays a NaN (quiet, sign and top payload
 * bits kept); overflow rounds to infinity as IEEE rounding does. */
static inline uint16_t sp__f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* bf16 -> f32: exact. */
static inline float sp__bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

/* IEEE half (f16) -> f32: exact (subnormals, infinities and NaNs included). */
static inline float sp__f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0x1f) u = sign | 0x7f800000u | (man << 13); /* inf, NaN */
  else if (exp != 0) u = sign | ((exp + 112u) << 23) | (man << 13);
  else if (man == 0) u = sign; /* +-0 */
  else { /* subnormal: normalize */ exp = 113;
    while (!(man & 0x400u)) {
      man <<= 1;
      exp--;
    }
    u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

#endif /* SP_CORE_DTYPE_H */
