/* The CUDA backend's own small-batch linear kernels: y = act(x·wᵀ + b), 1 to 32 rows.
 *
 * GEMV (1 to 8 rows, and forced mode above 32): a warp per O outputs (four warps a block; O = 1
 * at batch 1, 4 up to batch 8, 2 above 32). Each lane walks the O weight rows in 16-byte loads (4
 * f32 or 8 bf16 a load, not cached in L1) and, for every row of the batch chunk, the same stretch
 * of x (cached), accumulating in f32 registers (O x R accumulators, R a compile-time chunk of
 * 1..16 batch rows, so the weights of a chunk are read once); a butterfly shuffle sums the lanes,
 * and lane o*R + r adds the bias, applies the activation (any sp__act, in f32: cuda_act.h) and
 * stores output o of row r, rounded once to nearest even for bf16. Batches above 32 run in chunks
 * of 16 rows (the weights are then read once a chunk).
 * Tile kernel (9 to 32 rows, 16-byte path only): below, at tile_kernel.
 * Alignment fallback: the 16-byte path needs x and w 16-byte aligned and in_features a multiple
 * of the elements per load (so every row of x and w stays aligned); otherwise a path with one
 * element a lane a step runs. Bias and y need only element alignment.
 *
 * Overlap (cuda_pdl.h): each lane loads the head of its weight rows (kHeld 16-byte loads in all,
 * 8 at batch 1: the whole row up to 1024 f32 or 2048 bf16 inputs) into registers before the
 * grid-dependency wait, so with PDL that load runs while the previous layer still computes; x is
 * read and y written only after the wait. The order of the f32 sums is the same either way.
 *
 * Owns nothing; launches are stream-ordered on the caller's stream, capturable into graphs, and
 * the launch's own error is returned (never read back through cudaGetLastError). No locks.
 */
#include <cuda_bf16.h>
#include <stdint.h>

#include "cuda_act.h"
#include "cuda_gemv.h"
#include "cuda_pdl.h"

namespace {

constexpr unsigned kWarps = 4; /* output rows (warps) per block */
constexpr unsigned kThreads = 32 * kWarps;
/* 16-byte weight loads a lane holds in registers before the PDL wait (all its rows together) */
constexpr int kHeld = 8;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
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

/* 16 bytes of weights, read once: not kept in L1, so the rows of x stay there. volatile: without
 * it the compiler treats the asm as free of side effects and hoists the load above the loop's
 * bounds check (compute-sanitizer saw reads past the end of w on the H200, 2026-12-01). */
__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/* The first P 16-byte loads of each of the O weight rows a lane reads (load i = lane + 32p);
 * zeros past the row's end. */
template <typename T, int O, int P>
__device__ __forceinline__ void load_head(uint4 (&head)[O][P], const T *const (&wr)[O],
                                          unsigned lane, unsigned nv) {
#pragma unroll
  for (int p = 0; p < P; p++) {
    const unsigned i = lane + 32u * (unsigned)p;
#pragma unroll
    for (int o = 0; o < O; o++)
      head[o][p] = i < nv ? ld_stream(reinterpret_cast<const uint4 *>(wr[o]) + i) : uint4{};
  }
}

/* acc[o][r] += wf[o] · x[r][E*i .. E*i+E) for the chunk's rows. */
template <typename T, int O, int R, unsigned E>
__device__ __forceinline__ void fma_rows(float (&acc)[O][R], const float (&wf)[O][E], const T *xr,
                                         unsigned in, unsigned i, unsigned rows) {
#pragma unroll
  for (int r = 0; r < R; r++) {
    if ((unsigned)r < rows) {
      float xf[E];
      unpack(__ldg(reinterpret_cast<const uint4 *>(xr + (size_t)r * in) + i), xf, T());
#pragma unroll
      for (int o = 0; o < O; o++)
#pragma unroll
        for (unsigned e = 0; e < E; e++) acc[o][r] = fmaf(wf[o][e], xf[e], acc[o][r]);
    }
  }
}

/* Warp w computes outputs O*w .. O*w+O-1 for every row of the batch, R rows a chunk. */
template <typename T, int O, int R, bool VEC>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ b,
                T *__restrict__ y, unsigned batch, unsigned in, unsigned out, int act) {
  static_assert(O * R <= 32, "one lane stores each output of a chunk");
  const unsigned col0 = (blockIdx.x * kWarps + threadIdx.x / 32) * O;
  const unsigned lane = threadIdx.x & 31u;
  if (col0 >= out) return; /* whole warps leave together: the shuffles below see full warps */
  const T *wr[O];
#pragma unroll
  for (int o = 0; o < O; o++) /* outputs past the end read the last row and store nothing */
    wr[o] = w + (size_t)(col0 + o < out ? col0 + o : out - 1) * in;
  constexpr unsigned E = 16 / sizeof(T);
  constexpr int P = VEC ? kHeld / O : 1; /* 16-byte loads a lane holds per row: the head of it */
  const unsigned nv = in / E;            /* 16-byte loads a row (the VEC path) */
  uint4 head[O][P];
  if (VEC) load_head<T, O, P>(head, wr, lane, nv); /* weights: before the wait (cuda_pdl.h) */
  sp__pdl_wait();
  for (unsigned r0 = 0; r0 < batch; r0 += R) {
    const unsigned rows = batch - r0 < (unsigned)R ? batch - r0 : (unsigned)R;
    const T *xr = x + (size_t)r0 * in;
    float acc[O][R];
#pragma unroll
    for (int o = 0; o < O; o++)
#pragma unroll
      for (int r = 0; r < R; r++) acc[o][r] = 0.0f;
    if (VEC) {
      if (r0 > 0) load_head<T, O, P>(head, wr, lane, nv); /* the next chunk reads them again */
#pragma unroll
      for (int p = 0; p < P; p++) {
        const unsigned i = lane + 32u * (unsigned)p;
        if (i < nv) {
          float wf[O][E];
#pragma unroll
          for (int o = 0; o < O; o++) unpack(head[o][p], wf[o], T());
          fma_rows<T, O, R, E>(acc, wf, xr, in, i, rows);
        }
      }
#pragma unroll 2
      for (unsigned i = lane + 32u * P; i < nv; i += 32) {
        float wf[O][E];
#pragma unroll
        for (int o = 0; o < O; o++)
          unpack(ld_stream(reinterpret_cast<const uint4 *>(wr[o]) + i), wf[o], T());
        fma_rows<T, O, R, E>(acc, wf, xr, in, i, rows);
      }
    } else {
      for (unsigned i = lane; i < in; i += 32) {
        float wf[O];
#pragma unroll
        for (int o = 0; o < O; o++) wf[o] = to_f(wr[o][i]);
#pragma unroll
        for (int r = 0; r < R; r++) {
          if ((unsigned)r < rows) {
            const float xv = to_f(xr[(size_t)r * in + i]);
#pragma unroll
            for (int o = 0; o < O; o++) acc[o][r] = fmaf(wf[o], xv, acc[o][r]);
          }
        }
      }
    }
#pragma unroll
    for (int o = 0; o < O; o++)
#pragma unroll
      for (int r = 0; r < R; r++) {
        float v = acc[o][r];
#pragma unroll
        for (int k = 16; k > 0; k >>= 1) v += __shfl_xor_sync(0xffffffffu, v, k);
        acc[o][r] = v;
      }
#pragma unroll
    for (int o = 0; o < O; o++)
#pragma unroll
      for (int r = 0; r < R; r++) {
        const unsigned col = col0 + (unsigned)o;
        if (lane == (unsigned)(o * R + r) && (unsigned)r < rows && col < out) {
          float v = acc[o][r] + (b ? to_f(b[col]) : 0.0f);
          v = sp__cuda_act_apply(v, act);
          y[(size_t)(r0 + r) * out + col] = from_f<T>(v);
        }
      }
  }
}

/* ---- 9 to 32 rows: the tile kernel --------------------------------------------------------
 * A block of kTileWarps warps computes CB = 256 / R output columns for all R (16 or 32) rows
 * of the batch. Lane l of every warp owns column l % CB and the 8 rows 8 * (l / CB) .. + 7; the
 * warps split in_features into kTileWarps equal slices of 16-byte steps, so each lane holds 8
 * accumulators and, per step, one 16-byte load of its weight row feeds 8 loads of x (L1-cached;
 * the lanes of a row group read the same x, so a load is a broadcast). Then the warps' partial
 * sums meet in shared memory and each (row, column) adds them in warp order, adds the bias,
 * applies the activation and stores: the result does not depend on timing. Weight loads go
 * through L1 here: the CB weight rows a warp reads at a step (8 at R = 32, 16 at R = 16; the
 * lanes of a column read the same 16 bytes) sit in different cache lines, each used over
 * several steps. The first kTileHeld steps of weights are loaded before the PDL
 * wait. Needs the 16-byte path's alignment (dispatch checks it). */
constexpr unsigned kTileWarps = 8;
constexpr int kTileHeld = 8;

template <typename T, unsigned E>
__device__ __forceinline__ void tile_step(float (&acc)[8], const uint4 &wq, const T *x, unsigned in,
                                          unsigned row0, unsigned batch, unsigned v) {
  float wf[E];
  unpack(wq, wf, T());
#pragma unroll
  for (int r = 0; r < 8; r++) {
    if (row0 + (unsigned)r < batch) {
      float xf[E];
      unpack(__ldg(reinterpret_cast<const uint4 *>(x + (size_t)(row0 + r) * in) + v), xf, T());
#pragma unroll
      for (unsigned e = 0; e < E; e++) acc[r] = fmaf(wf[e], xf[e], acc[r]);
    }
  }
}

template <typename T, int R>
__global__ void __launch_bounds__(32 * kTileWarps)
    tile_kernel(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ b,
                T *__restrict__ y, unsigned batch, unsigned in, unsigned out, int act) {
  constexpr unsigned E = 16 / sizeof(T), CB = 32 / (R / 8);
  __shared__ float part[kTileWarps][R][CB];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x & 31u;
  const unsigned c = lane % CB, row0 = 8 * (lane / CB), col = blockIdx.x * CB + c;
  const unsigned nv = in / E, v0 = warp * nv / kTileWarps, v1 = (warp + 1) * nv / kTileWarps;
  /* a column past the end reads the last row and stores nothing */
  const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)(col < out ? col : out - 1) * in);
  uint4 head[kTileHeld];
#pragma unroll
  for (int h = 0; h < kTileHeld; h++) head[h] = v0 + h < v1 ? __ldg(wr + v0 + h) : uint4{};
  sp__pdl_wait();
  float acc[8] = {};
#pragma unroll
  for (int h = 0; h < kTileHeld; h++)
    if (v0 + h < v1) tile_step<T, E>(acc, head[h], x, in, row0, batch, v0 + h);
#pragma unroll 2
  for (unsigned v = v0 + kTileHeld; v < v1; v++)
    tile_step<T, E>(acc, __ldg(wr + v), x, in, row0, batch, v);
#pragma unroll
  for (int r = 0; r < 8; r++) part[warp][row0 + r][c] = acc[r];
  __syncthreads();
  for (unsigned i = threadIdx.x; i < (unsigned)R * CB; i += 32 * kTileWarps) {
    const unsigned r = i / CB, oc = blockIdx.x * CB + i % CB;
    if (r >= batch || oc >= out) continue;
    float v = 0.0f;
#pragma unroll
    for (unsigned k = 0; k < kTileWarps; k++) v += part[k][r][i % CB];
    v += b ? to_f(b[oc]) : 0.0f;
    y[(size_t)r * out + oc] = from_f<T>(sp__cuda_act_apply(v, act));
  }
}

/* Both kernels' parameters: (x, w, bias, y, batch, in, out, act). */
template <typename T>
using linear_kernel = void (*)(const T *, const T *, const T *, T *, unsigned, unsigned, unsigned,
                               int);

template <typename T>
cudaError_t run(linear_kernel<T> k, unsigned blocks, unsigned threads, cudaStream_t s, bool pdl,
                const void *x, const void *w, const void *b, void *y, unsigned batch, unsigned in,
                unsigned out, int act) {
  const T *xp = static_cast<const T *>(x), *wp = static_cast<const T *>(w),
          *bp = static_cast<const T *>(b);
  T *yp = static_cast<T *>(y);
  void *args[] = {&xp, &wp, &bp, &yp, &batch, &in, &out, &act};
  return sp__cuda_launch(reinterpret_cast<const void *>(k), dim3(blocks), dim3(threads), args, s,
                         pdl);
}

template <typename T, int R>
cudaError_t tile_launch(cudaStream_t s, bool pdl, const void *x, const void *w, const void *b,
                        void *y, unsigned batch, unsigned in, unsigned out, int act) {
  constexpr unsigned CB = 32 / (R / 8);
  return run<T>(tile_kernel<T, R>, (out + CB - 1) / CB, 32 * kTileWarps, s, pdl, x, w, b, y, batch,
                in, out, act);
}

template <typename T, int O, int R, bool VEC>
cudaError_t launch(cudaStream_t s, bool pdl, const void *x, const void *w, const void *b, void *y,
                   unsigned batch, unsigned in, unsigned out, int act) {
  constexpr unsigned per_block = kWarps * O;
  return run<T>(gemv_kernel<T, O, R, VEC>, (out + per_block - 1) / per_block, kThreads, s, pdl, x,
                w, b, y, batch, in, out, act);
}

/* Batch 1: a warp per output (the most warps in flight); 2 to 8: 4 outputs a warp, so each load
 * of x feeds 4 rows of weights; 9 to 32: the tile kernel (at 8 rows it was slower than the GEMV
 * on the H200); above (forced mode only: auto runs cuBLASLt there), chunks of 16 rows.
 * Misaligned: the element-wise path. */
template <typename T>
cudaError_t dispatch(cudaStream_t s, bool pdl, const void *x, const void *w, const void *b, void *y,
                     unsigned batch, unsigned in, unsigned out, int act) {
  constexpr unsigned E = 16 / sizeof(T);
  const bool vec = in % E == 0 && ((uintptr_t)x & 15u) == 0 && ((uintptr_t)w & 15u) == 0;
  if (!vec) {
    if (batch == 1) return launch<T, 1, 1, false>(s, pdl, x, w, b, y, batch, in, out, act);
    return launch<T, 4, 8, false>(s, pdl, x, w, b, y, batch, in, out, act);
  }
  if (batch <= 1) return launch<T, 1, 1, true>(s, pdl, x, w, b, y, batch, in, out, act);
  if (batch <= 2) return launch<T, 4, 2, true>(s, pdl, x, w, b, y, batch, in, out, act);
  if (batch <= 4) return launch<T, 4, 4, true>(s, pdl, x, w, b, y, batch, in, out, act);
  if (batch <= 8) return launch<T, 4, 8, true>(s, pdl, x, w, b, y, batch, in, out, act);
  if (batch <= 16) return tile_launch<T, 16>(s, pdl, x, w, b, y, batch, in, out, act);
  if (batch <= 32) return tile_launch<T, 32>(s, pdl, x, w, b, y, batch, in, out, act);
  return launch<T, 2, 16, true>(s, pdl, x, w, b, y, batch, in, out, act);
}

}  // namespace

extern "C" cudaError_t sp__cuda_gemv(cudaStream_t s, int pdl, int bf16, const void *x,
                                     const void *w, const void *bias, void *y, unsigned batch,
                                     unsigned in, unsigned out, int act) {
  if (batch == 0 || out == 0) return cudaSuccess;
  return bf16 ? dispatch<__nv_bfloat16>(s, pdl != 0, x, w, bias, y, batch, in, out, act)
              : dispatch<float>(s, pdl != 0, x, w, bias, y, batch, in, out, act);
}
