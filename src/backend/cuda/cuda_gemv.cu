/* The CUDA backend's own small-batch linear kernels: y = act(x·wᵀ + b), 1 to 32 rows.
 *
 * GEMV (1 to 4 rows, every batch on the element-wise path, and forced mode above 32): a warp per
 * O outputs (four warps a block; on the 16-byte path O = 1 at batch 1 and, with 16-bit weights,
 * at 2 to 4, else 4 there, and 2 above 32; on the element-wise path 1 at batch 1, else 4). Each
 * lane walks the O weight rows in 16-byte loads (4 f32 or 8 bf16 or f16 a load, not cached in L1)
 * and, for every row of the batch chunk, the same stretch of x (cached), accumulating in f32
 * registers (O x R accumulators, R a compile-time chunk of 1..16 batch rows, so the weights of a
 * chunk are read once); a butterfly shuffle sums the lanes, and lane o*R + r adds the bias, applies
 * the activation (any sp__act, in f32: cuda_act.h) and stores output o of row r, rounded once to
 * nearest even for bf16 and f16. Batches above 32 run in chunks of 16 rows (the weights are then
 * read once a chunk).
 *
 * Split kernel (5 to 32 rows, 16-byte path only): below, at split_kernel.
 *
 * Alignment fallback: the 16-byte path needs x and w 16-byte aligned and in_features a multiple
 * of the elements per load (so every row of x and w stays aligned); otherwise a path with one
 * element a lane a step runs. Bias and y need only element alignment.
 *
 * Overlap (cuda_pdl.h): each lane loads the head of its weight rows (kHeld 16-byte loads in all,
 * all 8 of a warp's one row at one output a warp: the whole row up to 1024 f32 or 2048 bf16/f16
 * inputs) into registers before the grid-dependency wait, so with PDL that load runs while the
 * previous layer still computes; x is read and y written only after the wait. The order of the f32
 * sums is the same either way.
 *
 * Owns nothing; launches are stream-ordered on the caller's stream, capturable into graphs, and
 * the launch's own error is returned (never read back through cudaGetLastError). No locks.
 */
#include <cooperative_groups.h>
#include <stdint.h>

#include <type_traits>

#include "backend/cuda/cuda_select.h"
#include "cuda_act.h"
#include "cuda_elem.cuh"
#include "cuda_gemv.h"
#include "cuda_pdl.h"

namespace {

constexpr unsigned kWarps = 4; /* output rows (warps) per block */
constexpr unsigned kThreads = 32 * kWarps;
/* 16-byte weight loads a lane holds in registers before the PDL wait (all its rows together) */
constexpr int kHeld = 8;

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

/* v as T holds it: f32 x or y beside 16-bit weights (sp__linear.io) is rounded to T on the way
 * in and out, so a fused first or last layer gives exactly what converting would. */
template <typename T, typename TIO>
__device__ __forceinline__ float as_t(float v) {
  if constexpr (std::is_same<T, TIO>::value) return v;
  else return sp__to_f(sp__from_f<T>(v));
}

/* x[E*i .. E*i+E) of row xr as floats (rounded to T): one 16-byte load, or E / 4 of them for f32
 * x beside 16-bit weights. */
template <typename T, typename TX, unsigned E>
__device__ __forceinline__ void load_x(const TX *xr, unsigned i, float (&xf)[E]) {
  constexpr unsigned XE = 16 / sizeof(TX); /* elements a 16-byte load of x holds */
  static_assert(E % XE == 0, "x is f32 or the weights' type");
#pragma unroll
  for (unsigned k = 0; k < E / XE; k++)
    sp__unpack16(__ldg(reinterpret_cast<const uint4 *>(xr + (size_t)E * i) + k), xf + XE * k, TX());
#pragma unroll
  for (unsigned e = 0; e < E; e++) xf[e] = as_t<T, TX>(xf[e]);
}

/* acc[o][r] += wf[o] · x[r][E*i .. E*i+E) for the chunk's rows. */
template <typename T, typename TX, int O, int R, unsigned E>
__device__ __forceinline__ void fma_rows(float (&acc)[O][R], const float (&wf)[O][E], const TX *xr,
                                         unsigned in, unsigned i, unsigned rows) {
#pragma unroll
  for (int r = 0; r < R; r++) {
    if ((unsigned)r < rows) {
      float xf[E];
      load_x<T, TX, E>(xr + (size_t)r * in, i, xf);
#pragma unroll
      for (int o = 0; o < O; o++)
#pragma unroll
        for (unsigned e = 0; e < E; e++) acc[o][r] = fmaf(wf[o][e], xf[e], acc[o][r]);
    }
  }
}

/* Warp w computes outputs O*w .. O*w+O-1 for every row of the batch, R rows a chunk. Weights and
 * bias are T; x is TX and y TY: T, or f32 holding T's values (sp__linear.io). */
template <typename T, typename TX, typename TY, int O, int R, bool VEC>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const TX *__restrict__ x, const T *__restrict__ w, const T *__restrict__ b,
                TY *__restrict__ y, unsigned batch, unsigned in, unsigned out, int act) {
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
    const TX *xr = x + (size_t)r0 * in;
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
          for (int o = 0; o < O; o++) sp__unpack16(head[o][p], wf[o], T());
          fma_rows<T, TX, O, R, E>(acc, wf, xr, in, i, rows);
        }
      }
#pragma unroll 2
      for (unsigned i = lane + 32u * P; i < nv; i += 32) {
        float wf[O][E];
#pragma unroll
        for (int o = 0; o < O; o++)
          sp__unpack16(ld_stream(reinterpret_cast<const uint4 *>(wr[o]) + i), wf[o], T());
        fma_rows<T, TX, O, R, E>(acc, wf, xr, in, i, rows);
      }
    } else {
      for (unsigned i = lane; i < in; i += 32) {
        float wf[O];
#pragma unroll
        for (int o = 0; o < O; o++) wf[o] = sp__to_f(wr[o][i]);
#pragma unroll
        for (int r = 0; r < R; r++) {
          if ((unsigned)r < rows) {
            const float xv = as_t<T, TX>(sp__to_f(xr[(size_t)r * in + i]));
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
          float v = acc[o][r] + (b ? sp__to_f(b[col]) : 0.0f);
          v = as_t<T, TY>(sp__cuda_act_apply(v, act));
          y[(size_t)(r0 + r) * out + col] = sp__from_f<TY>(v);
        }
      }
  }
}

/* ---- 5 to 32 rows: the split-K tile kernel ---------------------------------------------------
 * A block of kSkThreads threads computes a tile of R rows (R = 8, 16 or 32: the batch; rows past
 * it are zeros) by kSkCols output columns over one slice of in_features. On compute capability 9.0
 * the S blocks of a thread-block cluster (1 x S, S <= kSkMaxSplit, chosen from the shape at
 * launch) take the S slices of one tile, and their partial tiles meet in distributed shared
 * memory: each block sums 1/S of the tile's elements over the S slices in rank order (so the
 * result does not depend on timing), adds the bias, applies the activation and stores. Without
 * clusters S = 1. In a block the slice is walked in chunks of kSkK inputs staged in shared memory
 * as f32 (x and w rows as they lie in memory; rows padded to kSkPad floats so the compute loop's
 * 16-byte loads hit distinct banks), double-buffered with one barrier a chunk, so the next
 * chunk's global loads are in flight while this one is computed. Thread (rg, cg) accumulates rows
 * rg + 8i (i < R / 8) by columns cg + 16j (j < 2): at R = 32, per 4 inputs, 6 16-byte shared
 * loads feed 32 FMAs, summed in input order. The first chunk of w is loaded before the PDL wait.
 * Needs the 16-byte path's alignment (dispatch checks it). (It replaced a kernel that read x from
 * L1 per lane: on the H200 that one took 20-70 us for a MiniLM layer's 32-row Linears, profiled
 * with ncu on 2026-12-01.) */
constexpr unsigned kSkThreads = 128, kSkCols = 32, kSkK = 32, kSkPad = kSkK + 4;
constexpr unsigned kSkMaxSplit = 8;
constexpr unsigned kSkTargetBlocks = 256; /* about two a multiprocessor on an H200 (132) */

/* One chunk's global loads of a thread: LX 16-byte loads of x, LW of w. Load l of a matrix is
 * element vector (id % VR) of tile row (id / VR), id = thread + kSkThreads * l (x: when id <
 * R * VR). */
template <typename T, unsigned R>
struct sk_chunk {
  static constexpr unsigned E = 16 / sizeof(T), VR = kSkK / E;
  static constexpr unsigned LX = (R * VR + kSkThreads - 1) / kSkThreads,
                            LW = kSkCols * VR / kSkThreads;
  uint4 x[LX], w[LW];
};

template <typename T, unsigned R>
__device__ __forceinline__ void sk_load_w(sk_chunk<T, R> &c, const T *w, unsigned col0,
                                          unsigned out, unsigned in, unsigned g0, unsigned g1) {
  using C = sk_chunk<T, R>;
#pragma unroll
  for (unsigned l = 0; l < C::LW; l++) {
    const unsigned id = threadIdx.x + kSkThreads * l, col = col0 + id / C::VR, g = g0 + id % C::VR;
    c.w[l] = col < out && g < g1
                 ? ld_stream(reinterpret_cast<const uint4 *>(w + (size_t)col * in) + g)
                 : uint4{};
  }
}

template <typename T, unsigned R>
__device__ __forceinline__ void sk_load_x(sk_chunk<T, R> &c, const T *x, unsigned batch,
                                          unsigned in, unsigned g0, unsigned g1) {
  using C = sk_chunk<T, R>;
#pragma unroll
  for (unsigned l = 0; l < C::LX; l++) {
    const unsigned id = threadIdx.x + kSkThreads * l, r = id / C::VR, g = g0 + id % C::VR;
    c.x[l] = r < batch && g < g1 ? __ldg(reinterpret_cast<const uint4 *>(x + (size_t)r * in) + g)
                                 : uint4{};
  }
}

/* The E floats of q into dst[0..E), 16 bytes a store. */
template <typename T>
__device__ __forceinline__ void sk_put(float *dst, const uint4 &q) {
  constexpr unsigned E = 16 / sizeof(T);
  float f[E];
  sp__unpack16(q, f, T());
#pragma unroll
  for (unsigned e = 0; e < E; e += 4)
    *reinterpret_cast<float4 *>(dst + e) = make_float4(f[e], f[e + 1], f[e + 2], f[e + 3]);
}

template <typename T, unsigned R>
__device__ __forceinline__ void sk_store(const sk_chunk<T, R> &c, float (*xs)[kSkPad],
                                         float (*ws)[kSkPad]) {
  using C = sk_chunk<T, R>;
#pragma unroll
  for (unsigned l = 0; l < C::LX; l++) {
    const unsigned id = threadIdx.x + kSkThreads * l;
    if (id < R * C::VR) sk_put<T>(&xs[id / C::VR][(id % C::VR) * C::E], c.x[l]);
  }
#pragma unroll
  for (unsigned l = 0; l < C::LW; l++) {
    const unsigned id = threadIdx.x + kSkThreads * l;
    sk_put<T>(&ws[id / C::VR][(id % C::VR) * C::E], c.w[l]);
  }
}

__device__ __forceinline__ float dot4(float acc, const float4 &a, const float4 &b) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

template <typename T, unsigned R>
__global__ void __launch_bounds__(kSkThreads)
    split_kernel(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ b,
                 T *__restrict__ y, unsigned batch, unsigned in, unsigned out, int act) {
  using C = sk_chunk<T, R>;
  constexpr unsigned RI = R / 8; /* rows a thread */
  __shared__ __align__(16) float xs[2][R][kSkPad];
  __shared__ __align__(16) float ws[2][kSkCols][kSkPad];
  __shared__ float part[R][kSkCols + 1];
  const unsigned S = gridDim.y, col0 = blockIdx.x * kSkCols;
  const unsigned nv = in / C::E, v0 = blockIdx.y * nv / S, v1 = (blockIdx.y + 1) * nv / S;
  const unsigned chunks = (v1 - v0 + C::VR - 1) / C::VR;
  const unsigned lane = threadIdx.x & 31u, rg = lane & 7u, cg = (threadIdx.x / 32) * 4 + lane / 8;
  C c;
  sk_load_w<T, R>(c, w, col0, out, in, v0, v1); /* weights: before the wait (cuda_pdl.h) */
  sp__pdl_wait();
  sk_load_x<T, R>(c, x, batch, in, v0, v1);
  float acc[RI][2] = {};
  for (unsigned k = 0; k < chunks; k++) {
    const unsigned buf = k & 1u;
    sk_store<T, R>(c, xs[buf], ws[buf]);
    __syncthreads(); /* also: every thread is done with this buffer's chunk before last */
    if (k + 1 < chunks) {
      const unsigned g0 = v0 + (k + 1) * C::VR;
      sk_load_w<T, R>(c, w, col0, out, in, g0, v1);
      sk_load_x<T, R>(c, x, batch, in, g0, v1);
    }
#pragma unroll
    for (unsigned kk = 0; kk < kSkK; kk += 4) {
      float4 xv[RI], wv[2];
#pragma unroll
      for (unsigned i = 0; i < RI; i++)
        xv[i] = *reinterpret_cast<const float4 *>(&xs[buf][rg + 8 * i][kk]);
#pragma unroll
      for (int j = 0; j < 2; j++)
        wv[j] = *reinterpret_cast<const float4 *>(&ws[buf][cg + 16 * j][kk]);
#pragma unroll
      for (unsigned i = 0; i < RI; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) acc[i][j] = dot4(acc[i][j], xv[i], wv[j]);
    }
  }
#pragma unroll
  for (unsigned i = 0; i < RI; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) part[rg + 8 * i][cg + 16 * j] = acc[i][j];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::cluster_group cl = cooperative_groups::this_cluster();
  cl.sync(); /* every block's part is written and visible to the cluster */
  const unsigned q = cl.block_rank();
#else
  if (S != 1) __trap(); /* slices without a cluster to sum them: fail the launch, never answer */
  __syncthreads();
  const unsigned q = 0; /* the launch gives no clusters below 9.0 (sp__bdevice.clusters) */
#endif
  /* the tile's elements this block finishes, each the S partial tiles' sum in rank order */
  const unsigned e1 = (q + 1) * R * kSkCols / S;
  for (unsigned e = q * R * kSkCols / S + threadIdx.x; e < e1; e += kSkThreads) {
    const unsigned r = e / kSkCols, oc = col0 + e % kSkCols;
    if (r >= batch || oc >= out) continue;
    float v = 0.0f;
    for (unsigned k = 0; k < S; k++) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      v += cl.map_shared_rank(&part[0][0], k)[r * (kSkCols + 1) + e % kSkCols];
#else
      v += part[r][e % kSkCols];
#endif
    }
    v += b ? sp__to_f(b[oc]) : 0.0f;
    y[(size_t)r * out + oc] = sp__from_f<T>(sp__cuda_act_apply(v, act));
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cl.sync(); /* no block leaves while another may still read its part */
#endif
}

/* Both kernels' parameters: (x, w, bias, y, batch, in, out, act). */
template <typename T, typename TX, typename TY>
using linear_kernel = void (*)(const TX *, const T *, const T *, TY *, unsigned, unsigned, unsigned,
                               int);

/* Launches k on grid; grid.y > 1 is the split kernel's slices a tile (its S = gridDim.y), which
 * run as one 1 x grid.y cluster a tile. */
template <typename T, typename TX = T, typename TY = T>
cudaError_t run(linear_kernel<T, TX, TY> k, dim3 grid, unsigned threads, cudaStream_t s, bool pdl,
                const void *x, const void *w, const void *b, void *y, unsigned batch, unsigned in,
                unsigned out, int act) {
  const TX *xp = static_cast<const TX *>(x);
  const T *wp = static_cast<const T *>(w), *bp = static_cast<const T *>(b);
  TY *yp = static_cast<TY *>(y);
  void *args[] = {&xp, &wp, &bp, &yp, &batch, &in, &out, &act};
  return sp__cuda_launch(reinterpret_cast<const void *>(k), grid, dim3(threads), args, s, pdl,
                         grid.y);
}

/* The split kernel with S slices a tile: as many as bring the grid near kSkTargetBlocks, at most
 * kSkMaxSplit and one chunk a slice; 1 without clusters. */
template <typename T, unsigned R>
cudaError_t split_launch(cudaStream_t s, bool pdl, bool clusters, const void *x, const void *w,
                         const void *b, void *y, unsigned batch, unsigned in, unsigned out,
                         int act) {
  const unsigned tiles = (out + kSkCols - 1) / kSkCols, chunks = in / kSkK;
  unsigned split = clusters ? (kSkTargetBlocks + tiles - 1) / tiles : 1;
  if (split > kSkMaxSplit) split = kSkMaxSplit;
  if (split > chunks) split = chunks > 0 ? chunks : 1;
  return run<T>(split_kernel<T, R>, dim3(tiles, split), kSkThreads, s, pdl, x, w, b, y, batch, in,
                out, act);
}

template <typename T, typename TX, typename TY, int O, int R, bool VEC>
cudaError_t launch(cudaStream_t s, bool pdl, const void *x, const void *w, const void *b, void *y,
                   unsigned batch, unsigned in, unsigned out, int act) {
  constexpr unsigned per_block = kWarps * O;
  return run<T, TX, TY>(gemv_kernel<T, TX, TY, O, R, VEC>, dim3((out + per_block - 1) / per_block),
                        kThreads, s, pdl, x, w, b, y, batch, in, out, act);
}

/* Batch 1: a warp per output (the most warps in flight); 2 to 4: in f32 4 outputs a warp, so each
 * load of x feeds 4 rows of weights, in bf16 and f16 one (the same MLP at 16 threads, H200,
 * 2026-12-03, one output a warp against four: bf16 at 2 / 3 / 4 rows 428 / 309 / 259 k
 * forwards/s against 337-358 / 270-275 / 239-242 k; f32 358 / 183 / 153 k against 375-381 / 317-319
 * / 279 k); 5 to 32: the split kernel in tiles of 8, 16 or 32 rows (on the H200, MLP
 * 512-1024-1024-512 at 16 threads, 2026-12-01: at 6 and 8 rows it did 254 k forwards/s in f32
 * against the GEMV's 186-192 k and 157 k, at 4 rows 257 k against 267 k, at 2 rows 260 k against
 * 314-321 k; 5 to 8 rows run the same code in either kernel); above (forced mode only: auto runs
 * cuBLASLt there), chunks of 16 rows. Misaligned: the element-wise path. */
template <typename T, typename TX, typename TY>
cudaError_t dispatch(cudaStream_t s, bool pdl, bool clusters, const void *x, const void *w,
                     const void *b, void *y, unsigned batch, unsigned in, unsigned out, int act) {
  constexpr unsigned E = 16 / sizeof(T);
  /* f32 x or y beside 16-bit weights: the GEMV's batches only (SP__CUDA_F32_IO_ROWS) */
  constexpr bool mixed = !std::is_same<TX, T>::value || !std::is_same<TY, T>::value;
  if (mixed && batch > SP__CUDA_F32_IO_ROWS) return cudaErrorInvalidValue;
  const bool vec = in % E == 0 && ((uintptr_t)x & 15u) == 0 && ((uintptr_t)w & 15u) == 0;
  if (!vec) {
    if (batch == 1) return launch<T, TX, TY, 1, 1, false>(s, pdl, x, w, b, y, batch, in, out, act);
    return launch<T, TX, TY, 4, 8, false>(s, pdl, x, w, b, y, batch, in, out, act);
  }
  if (batch <= 1) return launch<T, TX, TY, 1, 1, true>(s, pdl, x, w, b, y, batch, in, out, act);
  constexpr int O = sizeof(T) == 2 ? 1 : 4; /* outputs a warp at 2 to 4 rows (above) */
  if (batch <= 2) return launch<T, TX, TY, O, 2, true>(s, pdl, x, w, b, y, batch, in, out, act);
  if (batch <= 4) return launch<T, TX, TY, O, 4, true>(s, pdl, x, w, b, y, batch, in, out, act);
  if constexpr (!mixed) {
    if (batch <= 8) return split_launch<T, 8>(s, pdl, clusters, x, w, b, y, batch, in, out, act);
    if (batch <= 16) return split_launch<T, 16>(s, pdl, clusters, x, w, b, y, batch, in, out, act);
    if (batch <= 32) return split_launch<T, 32>(s, pdl, clusters, x, w, b, y, batch, in, out, act);
    return launch<T, T, T, 2, 16, true>(s, pdl, x, w, b, y, batch, in, out, act);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

extern "C" cudaError_t sp__cuda_gemv(cudaStream_t s, int pdl, int clusters, int dtype, unsigned io,
                                     const void *x, const void *w, const void *bias, void *y,
                                     unsigned batch, unsigned in, unsigned out, int act) {
  if (batch == 0 || out == 0) return cudaSuccess;
  const bool xf = (io & SP__LINEAR_X_F32) != 0, yf = (io & SP__LINEAR_Y_F32) != 0;
  return sp__elem_dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    const bool p = pdl != 0, c = clusters != 0;
    if (xf && yf) return dispatch<T, float, float>(s, p, c, x, w, bias, y, batch, in, out, act);
    if (xf) return dispatch<T, float, T>(s, p, c, x, w, bias, y, batch, in, out, act);
    if (yf) return dispatch<T, T, float>(s, p, c, x, w, bias, y, batch, in, out, act);
    return dispatch<T, T, T>(s, p, c, x, w, bias, y, batch, in, out, act);
  });
}
