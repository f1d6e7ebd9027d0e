/* The CUDA backend's encoder-layer kernels (backend.h's sp__nn): LayerNorm, the embedding gather,
 * masked multi-head self-attention and pooling, for f32, bf16 and f16 storage with f32 arithmetic
 * (double where the host backend sums in double: pooling's mean and norm). Each op is one kernel
 * launch on the caller's stream.
 *
 * LayerNorm: a warp per row while the row fits in registers (cols <= 1024: up to 32 values a
 * lane), else a block of 256 threads per row reading it three times; two passes (mean, then the
 * sum of squared deviations) in f32; in pairs of columns (two-element loads and stores) where the
 * row length is even and every array is aligned to two elements. A warp reads its whole row
 * before writing any of it, and in the block kernel each thread rewrites only the elements it
 * read itself, so y may be x.
 *
 * Attention: a block of 4 warps per (sequence, head, tile of 4 x QW queries); the block walks the
 * keys in tiles of 32 held in shared memory as f32 (K padded by one column so the lanes' rows fall
 * in distinct banks). Lane j scores key j of the tile for each of its warp's QW queries; an online
 * softmax (running max and sum, rescaled per tile) gives the tile's weights, which the warp puts
 * in shared memory, and each lane accumulates head_dim/32 output values over the tile's keys, one
 * V load feeding QW FMAs (no shuffles in the inner loops). Masked keys (j >= lengths[b]) are never
 * loaded: they score -inf and weigh 0, so padding cannot reach a result. Any seq (tiles), head_dim
 * up to SP__CUDA_NN_HEAD_DIM_MAX (the slot refuses more). QW is the largest of 8, 4 and 2 (8 only
 * for head_dim <= 96, within 48 KiB of static shared memory) that still gives 256 blocks, so small
 * batches fill the GPU with more, shorter warps (measured: ncu, batch 32 x 32 tokens, QW 4 and 8
 * within 20 % of each other, QW 2 slower).
 *
 * Embedding gather: a block per token row; pooling: a block per sequence. Lengths are clamped to
 * 1..seq exactly as the host backend does. Every kernel loops grid-stride over its rows, so any
 * extent the checker allows runs with a bounded grid.
 *
 * With pdl every kernel may start before the one before it ends (cuda_pdl.h); each waits for it
 * first thing (all it reads may be what that one wrote), then lets the next one start.
 * Owns nothing; no allocation, no sync, capturable; launches return their own error (never read
 * back through cudaGetLastError). No locks.
 */
#include <math.h>
#include <stdint.h>

#include "cuda_elem.cuh"
#include "cuda_nn.h"
#include "cuda_pdl.h"

namespace {

constexpr unsigned kMaxBlocks = 1u << 20; /* grid-stride beyond this many blocks */
constexpr unsigned kBlock = 256;          /* threads of the block-per-row kernels */
constexpr unsigned kLnWarps = 4;          /* rows per block of the warp LayerNorm */
constexpr unsigned kAttnWarps = 4;        /* warps per attention block */
constexpr size_t kAttnFill = 256;         /* fewer blocks than this: small query tiles */

unsigned grid_for(size_t blocks) {
  return (unsigned)(blocks < kMaxBlocks ? (blocks ? blocks : 1) : kMaxBlocks);
}

/* Where a launch goes: the stream, and whether it may overlap the kernel before it (cuda_pdl.h). */
struct queue {
  cudaStream_t stream;
  bool pdl;
};

/* Launches k with args converted to its parameter types (non-deduced here). */
template <typename T>
struct same {
  using type = T;
};
template <typename... P>
cudaError_t launch(void (*k)(P...), unsigned grid, unsigned block, queue s,
                   typename same<P>::type... args) {
  void *argv[] = {static_cast<void *>(&args)...};
  return sp__cuda_launch(reinterpret_cast<const void *>(k), dim3(grid), dim3(block), argv, s.stream,
                         s.pdl);
}

/* Butterfly reductions: every lane ends with the same bits (each step adds commuted pairs). */
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* The sum of v over the block (blockDim.x a multiple of 32), the same in every thread; sh holds
 * 32 values. Every thread of the block must call it. */
template <typename F>
__device__ F block_sum(F v, F *sh) {
  v = warp_sum(v);
  __syncthreads(); /* the previous call's readers of sh are done */
  if ((threadIdx.x & 31u) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  F t = 0;
  for (unsigned w = 0; w < blockDim.x / 32; w++) t += sh[w];
  return t;
}

/* ---- LayerNorm ------------------------------------------------------------------------------ */

/* A warp per row; lane l holds columns l, l + 32, ... (N of them, cols <= 32 N), or with PAIRS
 * (cols even, every array aligned to two elements, N even) the pairs 2l, 2l + 1, then 64 + 2l, ...
 * read and written two at a time. No restrict on x and y: they may be the same array. */
template <typename T, int N, bool PAIRS>
__global__ void __launch_bounds__(32 * kLnWarps)
    layernorm_warp(const T *x, const T *res, const T *__restrict__ g, const T *__restrict__ b, T *y,
                   size_t rows, unsigned cols, float eps) {
  sp__pdl_wait();
  static_assert(!PAIRS || N % 2 == 0, "pairs need an even count");
  constexpr int W = PAIRS ? 2 : 1; /* columns a lane reads and writes at once */
  const unsigned lane = threadIdx.x & 31u;
  /* The column of this lane's value i (with pairs, even cols: value i + 1 is in range with i). */
  auto col = [lane](int i) -> unsigned {
    return PAIRS ? 64u * (unsigned)(i / 2) + 2u * lane + (unsigned)(i & 1) : lane + 32u * i;
  };
  for (size_t row = (size_t)blockIdx.x * kLnWarps + threadIdx.x / 32; row < rows;
       row += (size_t)gridDim.x * kLnWarps) {
    const size_t base = row * cols;
    float v[N], sum = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i += W) {
      const unsigned c = col(i);
      v[i] = v[i + W - 1] = 0.0f;
      if (c >= cols) continue;
      if constexpr (PAIRS) {
        const float2 a = sp__ld2(x, base + c),
                     r = res ? sp__ld2(res, base + c) : make_float2(0.f, 0.f);
        v[i] = a.x + r.x;
        v[i + 1] = a.y + r.y;
      } else {
        v[i] = sp__ld(x, base + c);
        if (res) v[i] += sp__ld(res, base + c);
      }
    }
#pragma unroll
    for (int i = 0; i < N; i++) sum += v[i];
    const float mean = warp_sum(sum) / (float)cols;
    float sq = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
      const float d = v[i] - mean;
      if (col(i) < cols) sq = fmaf(d, d, sq);
    }
    const float inv = 1.0f / sqrtf(warp_sum(sq) / (float)cols + eps);
#pragma unroll
    for (int i = 0; i < N; i += W) {
      const unsigned c = col(i);
      if (c >= cols) continue;
      if constexpr (PAIRS) {
        const float2 gg = sp__ld2(g, c), bb = sp__ld2(b, c);
        sp__st2(y, base + c, (v[i] - mean) * inv * gg.x + bb.x,
                (v[i + 1] - mean) * inv * gg.y + bb.y);
      } else {
        sp__st(y, base + c, (v[i] - mean) * inv * sp__ld(g, c) + sp__ld(b, c));
      }
    }
  }
}

/* A block per row for rows longer than a warp holds; the row is read three times. */
template <typename T>
__global__ void __launch_bounds__(kBlock)
    layernorm_block(const T *x, const T *res, const T *__restrict__ g, const T *__restrict__ b,
                    T *y, size_t rows, unsigned cols, float eps) {
  sp__pdl_wait();
  __shared__ float sh[32];
  for (size_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const size_t base = row * cols;
    float sum = 0.0f;
    for (unsigned c = threadIdx.x; c < cols; c += kBlock)
      sum += sp__ld(x, base + c) + (res ? sp__ld(res, base + c) : 0.0f);
    const float mean = block_sum(sum, sh) / (float)cols;
    float sq = 0.0f;
    for (unsigned c = threadIdx.x; c < cols; c += kBlock) {
      const float d = sp__ld(x, base + c) + (res ? sp__ld(res, base + c) : 0.0f) - mean;
      sq = fmaf(d, d, sq);
    }
    const float inv = 1.0f / sqrtf(block_sum(sq, sh) / (float)cols + eps);
    for (unsigned c = threadIdx.x; c < cols; c += kBlock) {
      const float v = sp__ld(x, base + c) + (res ? sp__ld(res, base + c) : 0.0f);
      sp__st(y, base + c, (v - mean) * inv * sp__ld(g, c) + sp__ld(b, c));
    }
  }
}

/* Whether p is aligned to two elements of T (a pair load). */
template <typename T>
bool pair_aligned(const void *p) {
  return ((uintptr_t)p % (2 * sizeof(T))) == 0;
}

template <typename T, int N>
cudaError_t layernorm_warp_launch(queue s, const sp__nn *op) {
  const size_t rows = op->u.norm.rows;
  const auto &n = op->u.norm;
  const bool pairs = N % 2 == 0 && n.cols % 2 == 0 && pair_aligned<T>(n.x) &&
                     pair_aligned<T>(n.residual) && pair_aligned<T>(n.gamma) &&
                     pair_aligned<T>(n.beta) && pair_aligned<T>(n.y);
  auto k = pairs ? layernorm_warp<T, N, N % 2 == 0> : layernorm_warp<T, N, false>;
  return launch(k, grid_for((rows + kLnWarps - 1) / kLnWarps), 32 * kLnWarps, s,
                static_cast<const T *>(n.x), static_cast<const T *>(n.residual),
                static_cast<const T *>(n.gamma), static_cast<const T *>(n.beta),
                static_cast<T *>(n.y), rows, n.cols, n.eps);
}

template <typename T>
cudaError_t layernorm(queue s, const sp__nn *op) {
  const unsigned cols = op->u.norm.cols;
  if (cols <= 32) return layernorm_warp_launch<T, 1>(s, op);
  if (cols <= 64) return layernorm_warp_launch<T, 2>(s, op);
  if (cols <= 128) return layernorm_warp_launch<T, 4>(s, op);
  if (cols <= 256) return layernorm_warp_launch<T, 8>(s, op);
  if (cols <= 384) return layernorm_warp_launch<T, 12>(s, op); /* MiniLM */
  if (cols <= 512) return layernorm_warp_launch<T, 16>(s, op);
  if (cols <= 768) return layernorm_warp_launch<T, 24>(s, op); /* BERT-base */
  if (cols <= 1024) return layernorm_warp_launch<T, 32>(s, op);
  const size_t rows = op->u.norm.rows;
  return launch(layernorm_block<T>, grid_for(rows), kBlock, s, static_cast<const T *>(op->u.norm.x),
                static_cast<const T *>(op->u.norm.residual),
                static_cast<const T *>(op->u.norm.gamma), static_cast<const T *>(op->u.norm.beta),
                static_cast<T *>(op->u.norm.y), rows, cols, op->u.norm.eps);
}

/* ---- embedding gather ----------------------------------------------------------------------- */

constexpr unsigned kEmbedThreads = 128;

/* A block per token row: y = word[id] + pos[t] + type[ty], added in the host's order. */
template <typename T>
__global__ void __launch_bounds__(kEmbedThreads)
    embed_kernel(const int32_t *__restrict__ ids, const int32_t *__restrict__ types,
                 const T *__restrict__ word, const T *__restrict__ pos, const T *__restrict__ type,
                 T *__restrict__ y, size_t rows, unsigned seq, unsigned hidden) {
  sp__pdl_wait();
  for (size_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const size_t t = row % seq, id = (size_t)ids[row], ty = types ? (size_t)types[row] : 0;
    for (unsigned c = threadIdx.x; c < hidden; c += kEmbedThreads)
      sp__st(y, row * hidden + c,
             sp__ld(word, id * hidden + c) + sp__ld(pos, t * hidden + c) +
                 sp__ld(type, ty * hidden + c));
  }
}

template <typename T>
cudaError_t embed(queue s, const sp__nn *op) {
  const size_t rows = (size_t)op->u.embed.batch * op->u.embed.seq;
  return launch(embed_kernel<T>, grid_for(rows), kEmbedThreads, s, op->u.embed.ids,
                op->u.embed.type_ids, static_cast<const T *>(op->u.embed.word),
                static_cast<const T *>(op->u.embed.pos), static_cast<const T *>(op->u.embed.type),
                static_cast<T *>(op->u.embed.y), rows, op->u.embed.seq, op->u.embed.hidden);
}

/* ---- pooling -------------------------------------------------------------------------------- */

/* A block per sequence: each thread sums its columns over the real tokens in double (as the host
 * does), stores the f32 mean and, when normalizing, scales by the block's 1 / max(norm, 1e-12). */
template <typename T>
__global__ void __launch_bounds__(kBlock)
    pool_kernel(const int32_t *__restrict__ lengths, const T *__restrict__ x, float *__restrict__ y,
                unsigned batch, unsigned seq, unsigned hidden, int cls, int normalize) {
  sp__pdl_wait();
  __shared__ double sh[32];
  for (unsigned b = blockIdx.x; b < batch; b += gridDim.x) {
    const int32_t len = lengths[b];
    const unsigned n = cls ? 1u : (len < 1 ? 1u : ((unsigned)len > seq ? seq : (unsigned)len));
    const T *xb = x + (size_t)b * seq * hidden;
    float *yb = y + (size_t)b * hidden;
    double sq = 0.0;
    for (unsigned c = threadIdx.x; c < hidden; c += kBlock) {
      double sum = 0.0;
      for (unsigned t = 0; t < n; t++) sum += sp__ld(xb, (size_t)t * hidden + c);
      const float m = (float)(sum / (double)n);
      yb[c] = m;
      sq += (double)m * m;
    }
    if (normalize) { /* the same for the whole block */
      const double d = sqrt(block_sum(sq, sh));
      const float inv = (float)(1.0 / (d > 1e-12 ? d : 1e-12));
      for (unsigned c = threadIdx.x; c < hidden; c += kBlock) yb[c] *= inv;
    }
  }
}

template <typename T>
cudaError_t pool(queue s, const sp__nn *op) {
  return launch(pool_kernel<T>, grid_for(op->u.pool.batch), kBlock, s, op->u.pool.lengths,
                static_cast<const T *>(op->u.pool.x), op->u.pool.y, op->u.pool.batch,
                op->u.pool.seq, op->u.pool.hidden, (int)op->u.pool.cls, (int)op->u.pool.normalize);
}

/* ---- attention ------------------------------------------------------------------------------ */

/* N consecutive floats of shared memory at p, 16-byte aligned when N is a multiple of 4 (then read
 * and written as float4). */
template <int N>
__device__ __forceinline__ void lds_n(float (&r)[N], const float *p) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int k = 0; k < N; k += 4) {
      const float4 v = *reinterpret_cast<const float4 *>(p + k);
      r[k] = v.x, r[k + 1] = v.y, r[k + 2] = v.z, r[k + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; k++) r[k] = p[k];
  }
}
template <int N>
__device__ __forceinline__ void sts_n(float *p, const float (&r)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int k = 0; k < N; k += 4)
      *reinterpret_cast<float4 *>(p + k) = make_float4(r[k], r[k + 1], r[k + 2], r[k + 3]);
  } else {
#pragma unroll
    for (int k = 0; k < N; k++) p[k] = r[k];
  }
}

/* Block blk (grid-stride) is query tile blk % qtiles of head (blk / qtiles) % heads of sequence
 * blk / (qtiles * heads). DPL: head_dim values per lane (head_dim <= 32 DPL); QW: queries per
 * warp. Per key tile: lane j scores key j against the warp's QW queries (QW independent sums),
 * the online softmax turns the scores into weights, which the warp writes to ps; then each lane
 * accumulates its output values over the tile's real keys, one V load feeding QW FMAs. */
template <typename T, int DPL, int QW>
__global__ void __launch_bounds__(32 * kAttnWarps)
    attention_kernel(const T *__restrict__ qkv, const int32_t *__restrict__ lengths,
                     T *__restrict__ y, unsigned seq, unsigned heads, unsigned hd, float scale,
                     size_t qtiles, size_t total) {
  sp__pdl_wait();
  constexpr int D = 32 * DPL;         /* head_dim rounded up to whole lanes */
  constexpr int KT = 32;              /* keys per tile: one a lane          */
  constexpr int QT = kAttnWarps * QW; /* queries per block                  */
  static_assert((KT * (D + 1) + KT * D + D * QT + KT * QT) * sizeof(float) <= 48 * 1024,
                "static shared memory of one block");
  /* Queries and weights are stored query-minor, so a warp reads its QW values of one head value
   * (one key) with 16-byte broadcast loads. */
  __shared__ float ks[KT][D + 1];                        /* K of the tile, f32; the pad column
                                                          * spreads the lanes' rows over banks */
  __shared__ float vs[KT][D];                            /* V of the tile                       */
  __shared__ __align__(16) float qs[D][QT];              /* the block's queries                 */
  __shared__ __align__(16) float ps[kAttnWarps][KT][QW]; /* each warp's weights for the tile    */
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  const size_t hidden = (size_t)heads * hd, stride = 3 * hidden;
  for (size_t blk = blockIdx.x; blk < total; blk += gridDim.x) {
    const unsigned qt = (unsigned)(blk % qtiles), h = (unsigned)(blk / qtiles % heads);
    const size_t b = blk / qtiles / heads;
    const int32_t len = lengths[b];
    const unsigned keys = len < 1 ? 1u : ((unsigned)len > seq ? seq : (unsigned)len);
    const T *base = qkv + b * seq * stride + (size_t)h * hd; /* q of token 0, head h */
    const unsigned t0 = qt * QT;
    __syncthreads(); /* the previous block's readers of qs are done */
    for (unsigned e = threadIdx.x; e < (unsigned)(QT * D); e += blockDim.x) {
      const unsigned i = e / D, d = e % D, t = t0 + i;
      qs[d][i] = (t < seq && d < hd) ? sp__ld(base, (size_t)t * stride + d) : 0.0f;
    }
    float m[QW], l[QW], acc[QW][DPL]; /* l: this lane's share of the weights' sum */
#pragma unroll
    for (int i = 0; i < QW; i++) {
      m[i] = -INFINITY;
      l[i] = 0.0f;
#pragma unroll
      for (int k = 0; k < DPL; k++) acc[i][k] = 0.0f;
    }
    for (unsigned j0 = 0; j0 < keys; j0 += KT) {
      const unsigned kn = keys - j0 < (unsigned)KT ? keys - j0 : (unsigned)KT; /* real keys */
      __syncthreads(); /* qs is written; the previous tile's readers are done */
      for (unsigned e = threadIdx.x; e < (unsigned)(KT * D); e += blockDim.x) {
        const unsigned j = e / D, d = e % D;
        const bool real = j < kn && d < hd;
        const size_t at = (size_t)(j0 + j) * stride + d;
        ks[j][d] = real ? sp__ld(base, at + hidden) : 0.0f;
        vs[j][d] = real ? sp__ld(base, at + 2 * hidden) : 0.0f;
      }
      __syncthreads();
      float sc[QW];
#pragma unroll
      for (int i = 0; i < QW; i++) sc[i] = 0.0f;
#pragma unroll 8
      for (int d = 0; d < D; d++) {
        const float kd = ks[lane][d];
        float q[QW];
        lds_n(q, &qs[d][warp * QW]);
#pragma unroll
        for (int i = 0; i < QW; i++) sc[i] = fmaf(q[i], kd, sc[i]);
      }
#pragma unroll
      for (int i = 0; i < QW; i++) {
        const float s = lane < kn ? sc[i] * scale : -INFINITY;
        const float mn = fmaxf(m[i], warp_max(s)); /* finite: the tile has a real key */
        const float corr = expf(m[i] - mn);        /* 0 on the first tile */
        const float p = expf(s - mn);              /* 0 for a masked key */
        l[i] = fmaf(l[i], corr, p);
#pragma unroll
        for (int k = 0; k < DPL; k++) acc[i][k] *= corr;
        m[i] = mn;
        sc[i] = p;
      }
      sts_n(&ps[warp][lane][0], sc);
      __syncwarp();
      for (unsigned j = 0; j < kn; j++) { /* the tile's real keys only: block-uniform bound */
        float v[DPL];
#pragma unroll
        for (int k = 0; k < DPL; k++) v[k] = vs[j][lane + 32 * k];
        float pj[QW];
        lds_n(pj, &ps[warp][j][0]);
#pragma unroll
        for (int i = 0; i < QW; i++)
#pragma unroll
          for (int k = 0; k < DPL; k++) acc[i][k] = fmaf(pj[i], v[k], acc[i][k]);
      }
      __syncwarp(); /* the weights are read before the next tile rewrites them */
    }
#pragma unroll
    for (int i = 0; i < QW; i++) {
      const unsigned t = t0 + warp * QW + i;
      if (t >= seq) continue; /* warp-uniform */
      const float inv = 1.0f / warp_sum(l[i]);
      const size_t out = (b * seq + t) * hidden + (size_t)h * hd;
#pragma unroll
      for (int k = 0; k < DPL; k++) {
        const unsigned d = lane + 32u * k;
        if (d < hd) sp__st(y, out + d, acc[i][k] * inv);
      }
    }
  }
}

template <typename T, int DPL, int QW>
cudaError_t attention_launch(queue s, const sp__nn *op) {
  const unsigned seq = op->u.attention.seq, heads = op->u.attention.heads;
  const size_t qtiles = (seq + kAttnWarps * QW - 1) / (kAttnWarps * QW);
  const size_t total = qtiles * heads * op->u.attention.batch;
  return launch(attention_kernel<T, DPL, QW>, grid_for(total), 32 * kAttnWarps, s,
                static_cast<const T *>(op->u.attention.qkv), op->u.attention.lengths,
                static_cast<T *>(op->u.attention.y), seq, heads, op->u.attention.head_dim,
                op->u.attention.scale, qtiles, total);
}

/* Blocks of QW queries a warp for op. */
size_t attention_blocks(const sp__nn *op, unsigned qw) {
  const size_t qtiles = (op->u.attention.seq + kAttnWarps * qw - 1) / (kAttnWarps * qw);
  return qtiles * op->u.attention.heads * op->u.attention.batch;
}

/* The most queries a warp (8, 4 for head_dim > 96) that still gives kAttnFill blocks, else 2. */
template <typename T, int DPL>
cudaError_t attention_dpl(queue s, const sp__nn *op) {
  constexpr int QW = DPL == 4 ? 4 : 8;
  if (attention_blocks(op, QW) >= kAttnFill) return attention_launch<T, DPL, QW>(s, op);
  if (QW > 4 && attention_blocks(op, 4) >= kAttnFill) return attention_launch<T, DPL, 4>(s, op);
  return attention_launch<T, DPL, 2>(s, op);
}

template <typename T>
cudaError_t attention(queue s, const sp__nn *op) {
  const unsigned hd = op->u.attention.head_dim;
  if (hd <= 32) return attention_dpl<T, 1>(s, op);
  if (hd <= 64) return attention_dpl<T, 2>(s, op);
  if (hd <= 96) return attention_dpl<T, 3>(s, op);
  if (hd <= 128) return attention_dpl<T, 4>(s, op);
  return cudaErrorInvalidValue; /* the slot refuses these first */
}

template <typename T>
cudaError_t run(queue s, const sp__nn *op) {
  switch (op->kind) {
  case SP__NN_LAYERNORM: return layernorm<T>(s, op);
  case SP__NN_EMBED: return embed<T>(s, op);
  case SP__NN_ATTENTION: return attention<T>(s, op);
  case SP__NN_POOL: return pool<T>(s, op);
  default: return cudaErrorInvalidValue; /* the checker refuses these first */
  }
}

}  // namespace

extern "C" cudaError_t sp__cuda_nn(cudaStream_t s, int pdl, const sp__nn *op) {
  const queue q = {s, pdl != 0};
  return sp__elem_dispatch(op->dtype, [&](auto t) { return run<decltype(t)>(q, op); });
}
