/* The element types of the CUDA backend's kernels (cuda_gemv.cu, cuda_act.cu, cuda_convert.cu,
 * cuda_nn.cu): f32, bf16 and f16 storage, read as f32 and written rounded once to nearest even
 * (__float2bfloat16_rn, __float2half_rn: the host's sp__f32_to_bf16 and sp__f32_to_f16 round
 * the same way, f16 to infinity above 65504). Every kernel is a template over the storage type T;
 * sp__elem_dispatch maps an sp_dtype to it, once per entry point.
 * Device code (the conversions and an L2-only load) and one host dispatcher; no state, no locks.
 */
#ifndef SP_BACKEND_CUDA_ELEM_CUH
#define SP_BACKEND_CUDA_ELEM_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "streampool.h"

__device__ __forceinline__ float sp__to_f(float v) { return v; }
__device__ __forceinline__ float sp__to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float sp__to_f(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T sp__from_f(float v);
template <>
__device__ __forceinline__ float sp__from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 sp__from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half sp__from_f<__half>(float v) {
  return __float2half_rn(v);
}

/* Element i of p as f32; v stored as element i of p. */
template <typename T>
__device__ __forceinline__ float sp__ld(const T *p, size_t i) {
  return sp__to_f(p[i]);
}
template <typename T>
__device__ __forceinline__ void sp__st(T *p, size_t i, float v) {
  p[i] = sp__from_f<T>(v);
}

/* Elements i and i + 1 (i even, p aligned to two elements) in one load or store. */
__device__ __forceinline__ float2 sp__ld2(const float *p, size_t i) {
  return *reinterpret_cast<const float2 *>(p + i);
}
__device__ __forceinline__ float2 sp__ld2(const __nv_bfloat16 *p, size_t i) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p + i));
}
__device__ __forceinline__ float2 sp__ld2(const __half *p, size_t i) {
  return __half22float2(*reinterpret_cast<const __half2 *>(p + i));
}
__device__ __forceinline__ void sp__st2(float *p, size_t i, float a, float b) {
  *reinterpret_cast<float2 *>(p + i) = make_float2(a, b);
}
__device__ __forceinline__ void sp__st2(__nv_bfloat16 *p, size_t i, float a, float b) {
  *reinterpret_cast<__nv_bfloat162 *>(p + i) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ void sp__st2(__half *p, size_t i, float a, float b) {
  *reinterpret_cast<__half2 *>(p + i) = __floats2half2_rn(a, b);
}

/* The 16 bytes of q as floats: 4 f32, or 8 bf16 or f16 (the low half of each word first). */
__device__ __forceinline__ void sp__unpack16(const uint4 &q, float *f, float) {
  f[0] = __uint_as_float(q.x);
  f[1] = __uint_as_float(q.y);
  f[2] = __uint_as_float(q.z);
  f[3] = __uint_as_float(q.w);
}
__device__ __forceinline__ void sp__unpack16(const uint4 &q, float *f, __nv_bfloat16) {
  const unsigned u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void sp__unpack16(const uint4 &q, float *f, __half) {
  const unsigned u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    __half2 h;
    memcpy(&h, &u[i], sizeof(h));
    const float2 v = __half22float2(h);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

/* 16 bytes, or one f32, read from L2 (ld.global.cg), never from a possibly stale L1 line: for
 * memory written while the reading kernel runs (by other blocks of it, or between the forwards of
 * a kernel that stays resident). */
__device__ __forceinline__ uint4 sp__ld_l2(const uint4 *p) {
  uint4 v;
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ float sp__ld_l2(const float *p) {
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

/* Calls f with a value of the storage type of dt (float, __nv_bfloat16, __half); an unknown dt
 * is cudaErrorInvalidValue (the slots refuse it first). */
template <typename F>
cudaError_t sp__elem_dispatch(int dt, F &&f) {
  switch (dt) {
  case SP_F32: return f(float());
  case SP_BF16: return f(__nv_bfloat16());
  case SP_F16: return f(__half());
  default: return cudaErrorInvalidValue;
  }
}

#endif /* SP_BACKEND_CUDA_ELEM_CUH */
