/* Element types on the host side (internal): names, sizes, validity, and the one f32 <-> bf16 and
 * f32 <-> f16 conversion every host-side caller uses (the model loader and builder, the host
 * backend's convert and 16-bit matmul, white-box tests). The CUDA backend converts on the device
 * with its own kernels (src/backend/cuda/cuda_elem.cuh), which round the same way (to nearest
 * even: __float2bfloat16_rn, __float2half_rn). Header-only; any thread; no state.
 */
#ifndef SP_CORE_DTYPE_H
#define SP_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "streampool.h"

/* dt is one of the sp_dtype values. */
static inline bool sp__dtype_valid(sp_dtype dt) {
  return dt == SP_F32 || dt == SP_BF16 || dt == SP_F16;
}

/* Size in bytes of one element of dt (a valid dtype). */
static inline size_t sp__dtype_size(sp_dtype dt) { return dt == SP_F32 ? 4u : 2u; }

/* "f32", "bf16", "f16"; "?" for an invalid value. */
static inline const char *sp__dtype_name(sp_dtype dt) {
  return dt == SP_F32 ? "f32" : dt == SP_BF16 ? "bf16" : dt == SP_F16 ? "f16" : "?";
}

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

/* f32 -> f16: rounds to nearest, ties to even, through f16's subnormals (the smallest is 2^-24);
 * above 65504 (precisely: from 65520 on) rounds to infinity; a NaN stays a NaN (quiet, sign and
 * top payload bits kept). */
static inline uint16_t sp__f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 (and inf): inf */
  if (a >= 0x38800000u) {                                  /* normal in f16: >= 2^-14 */
    uint32_t r = a - 0x38000000u;                          /* rebias the exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
  }
  if (a < 0x33000000u) return (uint16_t)sign; /* below 2^-25: +-0 */
  /* subnormal in f16: value = man * 2^-24; shift the 24-bit significand into place, rounding */
  uint32_t e = a >> 23, man = (a & 0x7fffffu) | 0x800000u, shift = 126u - e; /* 14..25 */
  uint32_t q = man >> shift, rem = man & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) q++;
  return (uint16_t)(sign | q);
}

/* One element of a 16-bit or f32 array as f32 (dt valid). */
static inline float sp__elem_load(const void *p, sp_dtype dt, size_t i) {
  if (dt == SP_F32) {
    float f;
    memcpy(&f, (const unsigned char *)p + 4 * i, 4);
    return f;
  }
  uint16_t h;
  memcpy(&h, (const unsigned char *)p + 2 * i, 2);
  return dt == SP_BF16 ? sp__bf16_to_f32(h) : sp__f16_to_f32(h);
}

/* Stores v as element i of an array of dt (dt valid), rounded to nearest even. */
static inline void sp__elem_store(void *p, sp_dtype dt, size_t i, float v) {
  if (dt == SP_F32) {
    memcpy((unsigned char *)p + 4 * i, &v, 4);
    return;
  }
  uint16_t h = dt == SP_BF16 ? sp__f32_to_bf16(v) : sp__f32_to_f16(v);
  memcpy((unsigned char *)p + 2 * i, &h, 2);
}

/* v as an element of dt holds it: rounded to nearest even for bf16 and f16, v itself for f32. */
static inline float sp__elem_round(sp_dtype dt, float v) {
  unsigned char e[4];
  sp__elem_store(e, dt, 0, v);
  return sp__elem_load(e, dt, 0);
}

#endif /* SP_CORE_DTYPE_H */
