/* The CUDA backend's own small-batch linear kernel: y = act(x·wᵀ + b) as a GEMV per output row.
 *
 * Design: one warp per output row (four warps a block). Each lane walks the row's weights in
 * 16-byte loads (4 f32 or 8 bf16 a load) and, for every row of the batch chunk, the same stretch
 * of x, accumulating in f32 registers (one accumulator per batch row: R, a compile-time chunk of
 * 1..32 rows, so the weights of a chunk are read once); a butterfly shuffle sums the lanes, and
 * lane r adds the bias, applies ReLU and stores row r's output, rounded to nearest even for bf16.
 * Batches above 32 run in chunks of 32 (the weights are then read once a chunk).
 * Alignment fallback: the 16-byte path needs x and w 16-byte aligned and in_features a multiple
 * of the elements per load (so every row of x and w stays aligned); otherwise a path with one
 * element a lane a step runs. Bias and y need only element alignment.
 *
 * Owns nothing; launches are stream-ordered on the caller's stream, capturable into graphs, and
 * the launch's own error is returned (never read back through cudaGetLastError). No locks.
 */
#include <cuda_bf16.h>
#include <stdint.h>

#include "cuda_gemv.h"

namespace {

constexpr unsigned kWarps = 4; /* output rows (warps) per block */
constexpr unsigned kThreads = 32 * kWarps;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

/* The 16 bytes of q as floats: 4 f32, or 8 bf16 (the low half of each word first). */
__device__ __forceinline__ void unpack(const uint4 &q, float *f, float) {
  f[0] = __uint_as_float(q.x);
  f[1] = __uint_as_float(q.y);
  f[2] = __uint_as_float(q.z);
  f[3] = __uint_as_float(q.w);
}
__device__ __forceinline__ void unpack(const uint4 &q, float *f, __nv_bfloat16) {
  const unsigned u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}

template <typename T, int R, bool VEC>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ b,
                T *__restrict__ y, unsigned batch, unsigned in, unsigned out, int relu) {
  const unsigned row = blockIdx.x * kWarps + threadIdx.x / 32;
  const unsigned lane = threadIdx.x & 31u;
  if (row >= out) return; /* whole warps leave together: the shuffles below see full warps */
  const T *wr = w + (size_t)row * in;
  const float bias = b ? to_f(b[row]) : 0.0f;
  for (unsigned r0 = 0; r0 < batch; r0 += R) {
    const unsigned rows = batch - r0 < (unsigned)R ? batch - r0 : (unsigned)R;
    const T *xr = x + (size_t)r0 * in;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    if (VEC) {
      constexpr unsigned E = 16 / sizeof(T);
      const unsigned nv = in / E;
      const uint4 *wv = reinterpret_cast<const uint4 *>(wr);
#pragma unroll 2
      for (unsigned i = lane; i < nv; i += 32) {
        float wf[E];
        unpack(__ldg(wv + i), wf, T());
#pragma unroll
        for (int r = 0; r < R; r++) {
          if ((unsigned)r < rows) {
            float xf[E];
            unpack(__ldg(reinterpret_cast<const uint4 *>(xr + (size_t)r * in) + i), xf, T());
#pragma unroll
            for (unsigned e = 0; e < E; e++) acc[r] = fmaf(wf[e], xf[e], acc[r]);
          }
        }
      }
    } else {
      for (unsigned i = lane; i < in; i += 32) {
        const float wf = to_f(wr[i]);
#pragma unroll
        for (int r = 0; r < R; r++)
          if ((unsigned)r < rows) acc[r] = fmaf(wf, to_f(xr[(size_t)r * in + i]), acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      float v = acc[r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      acc[r] = v;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (lane == (unsigned)r && (unsigned)r < rows) {
        float v = acc[r] + bias;
        if (relu) v = fmaxf(v, 0.0f);
        y[(size_t)(r0 + r) * out + row] = from_f<T>(v);
      }
    }
  }
}

template <typename T, int R, bool VEC>
cudaError_t launch(cudaStream_t s, const void *x, const void *w, const void *b, void *y,
                   unsigned batch, unsigned in, unsigned out, int relu) {
  const T *xp = static_cast<const T *>(x), *wp = static_cast<const T *>(w),
          *bp = static_cast<const T *>(b);
  T *yp = static_cast<T *>(y);
  void *args[] = {&xp, &wp, &bp, &yp, &batch, &in, &out, &relu};
  dim3 grid((out + kWarps - 1) / kWarps);
  return cudaLaunchKernel(reinterpret_cast<const void *>(gemv_kernel<T, R, VEC>), grid,
                          dim3(kThreads), args, 0, s);
}

template <typename T>
cudaError_t dispatch(cudaStream_t s, const void *x, const void *w, const void *b, void *y,
                     unsigned batch, unsigned in, unsigned out, int relu) {
  constexpr unsigned E = 16 / sizeof(T);
  const bool vec = in % E == 0 && ((uintptr_t)x & 15u) == 0 && ((uintptr_t)w & 15u) == 0;
  if (!vec) {
    if (batch == 1) return launch<T, 1, false>(s, x, w, b, y, batch, in, out, relu);
    return launch<T, 8, false>(s, x, w, b, y, batch, in, out, relu);
  }
  if (batch <= 1) return launch<T, 1, true>(s, x, w, b, y, batch, in, out, relu);
  if (batch <= 2) return launch<T, 2, true>(s, x, w, b, y, batch, in, out, relu);
  if (batch <= 4) return launch<T, 4, true>(s, x, w, b, y, batch, in, out, relu);
  if (batch <= 8) return launch<T, 8, true>(s, x, w, b, y, batch, in, out, relu);
  if (batch <= 16) return launch<T, 16, true>(s, x, w, b, y, batch, in, out, relu);
  return launch<T, 32, true>(s, x, w, b, y, batch, in, out, relu);
}

} // namespace

extern "C" cudaError_t sp__cuda_gemv(cudaStream_t s, int bf16, const void *x, const void *w,
                                     const void *bias, void *y, unsigned batch, unsigned in,
                                     unsigned out, int relu) {
  if (batch == 0 || out == 0) return cudaSuccess;
  return bf16 ? dispatch<__nv_bfloat16>(s, x, w, bias, y, batch, in, out, relu)
              : dispatch<float>(s, x, w, bias, y, batch, in, out, relu);
}
