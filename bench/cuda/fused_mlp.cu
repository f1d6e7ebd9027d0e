/* bench/fused_mlp: is a whole small MLP in one kernel faster than one kernel a layer? (The
 * question of the small-batch kernel work: "a fused kernel for a whole small MLP, persistent or
 * not, as measured".) Measured, not used by the library (below).
 *
 * Rows, the 512-1024-1024-512 MLP (ReLU between layers) at batch 1, f32 and bf16, each replayed
 * as a CUDA graph from T threads (1 and 16), each thread on its own stream, synced after every
 * forward; forwards/s in total:
 *   - "3 empty kernels": the launch + sync limit of the graph-replay design (bench/linear's row);
 *   - "3 GEMV, PDL": the library's own batch-1 kernel (cuda_gemv.cu, this file compiles it), one
 *     launch a layer with programmatic dependent launch, as the library runs the MLP;
 *   - "fused": one kernel for all three layers. Its blocks take the layers' rows in order (a warp
 *     a row, W warps a block, one 16-byte-load GEMV per warp with the same summation order as
 *     cuda_gemv.cu, so the outputs are bit for bit the library's, which the program checks); a
 *     block of layer l loads its weights, then waits until every block of layer l - 1 has counted
 *     itself done in a per-launch counter (a thread spins on it, then a fence), reads that
 *     layer's output and counts itself done in turn; the last block of the last layer zeroes the
 *     counters for the next launch. A block's layer comes from its blockIdx ("index") or from a
 *     ticket taken at start ("ticket", which makes the wait safe even when blocks are not
 *     scheduled in index order); the layer's input is read per warp from L2 ("direct") or staged
 *     once a block in shared memory ("staged"). With tickets the blocks of earlier layers have
 *     always started before the blocks that wait for them, so the waits cannot deadlock; by index
 *     that rests on the hardware starting blocks in index order (what it does, not what CUDA
 *     promises).
 * (Its former "persistent" row, a kernel staying resident and woken through mapped host memory,
 * measured 104.9-107.9 k forwards/s on one thread on 2026-12-04 and became the library's resident
 * forwards: sp_resident_*, src/backend/cuda/cuda_resident.cu, measured by bench/linear's
 * "resident" rows.)
 *
 * H200, 2026-12-02, `build/bench/fused_mlp 0.5`, forwards/s (f32 1 thread / 16 threads, bf16 1 /
 * 16), every fused variant bit for bit equal to the library's kernels:
 *   3 empty kernels                 113 k / 376 k    108 k / 398 k
 *   3 GEMV, PDL (the library)        73.3 k / 336 k   71.8 k / 364 k
 *   fused, index, staged, W=8 (best) 72.5 k / 274 k   69.8 k / 349 k
 *   fused, the seven others          51-66 k / 238-314 k   52-67 k / 284-361 k
 * (Two runs of the same kernels earlier that morning: the same order, GEMV with PDL 73.7-78.4 k /
 * 367-394 k f32, the best fused variant 73.2-76.0 k / 274-289 k.)
 * So a layer boundary inside one kernel (a grid-wide count and spin) costs about what a PDL
 * launch boundary costs, while the fused kernel's waiting blocks hold multiprocessors that other
 * streams' kernels could use (16 threads: 4-25 % fewer forwards than the per-layer kernels). PDL
 * already overlaps each layer's weight loads with the layer before; the library keeps one kernel a
 * layer.
 *
 * usage: fused_mlp [SECONDS per cell, default 0.5]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <vector>

#include "../bench_thread.h"
#include "backend/cuda/cuda_gemv.cu" /* the library's kernel, and its device helpers */
#include "core/dtype.h"              /* the one f32 -> bf16 rounding */

namespace {

constexpr unsigned kLayers = 3, kXMax = 4096; /* inputs a staged block holds */
const unsigned kDims[kLayers + 1] = {512, 1024, 1024, 512};

struct fused_layer {
  const void *w, *b, *x;
  void *y;
  unsigned in, out, first, blocks; /* first: the layer's first block (index or ticket) */
  int act;
};

struct fused_chain {
  fused_layer l[kLayers];
  unsigned *ctr; /* [0]: tickets taken; [1 + l]: blocks of layer l done */
};

template <typename T, unsigned W, bool TICKET, bool STAGE>
__global__ void __launch_bounds__(32 * W) fused_kernel(const __grid_constant__ fused_chain c) {
  __shared__ unsigned ticket;
  __shared__ __align__(16) T xs[STAGE ? kXMax : 8];
  unsigned id = blockIdx.x;
  if (TICKET) {
    if (threadIdx.x == 0) ticket = atomicAdd(&c.ctr[0], 1u);
    __syncthreads();
    id = ticket;
  }
  unsigned li = 0;
  while (li + 1 < kLayers && id >= c.l[li + 1].first) li++;
  const fused_layer &L = c.l[li];
  const unsigned lane = threadIdx.x & 31u, col = (id - L.first) * W + threadIdx.x / 32;
  constexpr unsigned E = 16 / sizeof(T);
  const unsigned nv = L.in / E;
  const bool active = col < L.out;
  const uint4 *wr = reinterpret_cast<const uint4 *>(static_cast<const T *>(L.w) +
                                                    (size_t)(active ? col : 0) * L.in);
  uint4 head[kHeld]; /* the weights first: they do not depend on the layer before */
#pragma unroll
  for (int p = 0; p < kHeld; p++) {
    const unsigned i = lane + 32u * p;
    head[p] = i < nv ? ld_stream(wr + i) : uint4{};
  }
  if (li > 0) {
    if (threadIdx.x == 0) {
      volatile unsigned *done = c.ctr + li; /* blocks of layer li - 1 done */
      while (*done < c.l[li - 1].blocks) __nanosleep(32);
      __threadfence();
    }
    __syncthreads();
  }
  const uint4 *x = static_cast<const uint4 *>(L.x);
  if (STAGE) {
    for (unsigned i = threadIdx.x; i < nv; i += 32 * W)
      reinterpret_cast<uint4 *>(xs)[i] = sp__ld_l2(x + i);
    __syncthreads();
    x = reinterpret_cast<const uint4 *>(xs);
  }
  float acc = 0.f; /* the order of cuda_gemv.cu at batch 1: the held loads, then the rest */
#pragma unroll
  for (int p = 0; p < kHeld; p++) {
    const unsigned i = lane + 32u * p;
    if (i < nv) {
      float wf[E], xf[E];
      sp__unpack16(head[p], wf, T());
      sp__unpack16(STAGE ? x[i] : sp__ld_l2(x + i), xf, T());
#pragma unroll
      for (unsigned e = 0; e < E; e++) acc = fmaf(wf[e], xf[e], acc);
    }
  }
  for (unsigned i = lane + 32u * kHeld; i < nv; i += 32) {
    float wf[E], xf[E];
    sp__unpack16(ld_stream(wr + i), wf, T());
    sp__unpack16(STAGE ? x[i] : sp__ld_l2(x + i), xf, T());
#pragma unroll
    for (unsigned e = 0; e < E; e++) acc = fmaf(wf[e], xf[e], acc);
  }
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, k);
  if (lane == 0 && active) {
    const T *b = static_cast<const T *>(L.b);
    const float v = acc + (b ? sp__to_f(b[col]) : 0.f);
    static_cast<T *>(L.y)[col] = sp__from_f<T>(sp__cuda_act_apply(v, L.act));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned old = atomicAdd(&c.ctr[1 + li], 1u);
    if (li + 1 == kLayers && old + 1 == L.blocks) /* every block has taken its ticket and is done */
      for (unsigned k = 0; k <= kLayers; k++) c.ctr[k] = 0;
  }
}

/* A row's way of running one forward on a stream. */
enum mode { EMPTY, GEMV_PDL, FUSED };
struct variant {
  mode m;
  unsigned warps;
  bool ticket, staged;
};

struct net {
  bool bf16;
  void *w[kLayers], *b[kLayers], *buf[kLayers + 1];
  unsigned *ctr;
};

void fill(void *d, size_t n, bool bf16, uint64_t &s) {
  std::vector<float> h(n);
  for (float &v : h) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    v = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.1f;
  }
  if (!bf16) {
    cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice);
    return;
  }
  std::vector<uint16_t> hb(n);
  for (size_t i = 0; i < n; i++) hb[i] = sp__f32_to_bf16(h[i]);
  cudaMemcpy(d, hb.data(), n * 2, cudaMemcpyHostToDevice);
}

net make_net(bool bf16, uint64_t seed) {
  net n;
  n.bf16 = bf16;
  const size_t es = bf16 ? 2 : 4;
  for (unsigned l = 0; l < kLayers; l++) {
    cudaMalloc(&n.w[l], (size_t)kDims[l] * kDims[l + 1] * es);
    cudaMalloc(&n.b[l], kDims[l + 1] * es);
    fill(n.w[l], (size_t)kDims[l] * kDims[l + 1], bf16, seed);
    fill(n.b[l], kDims[l + 1], bf16, seed);
  }
  for (unsigned l = 0; l <= kLayers; l++) cudaMalloc(&n.buf[l], 1024 * 4);
  fill(n.buf[0], kDims[0], bf16, seed);
  cudaMalloc(&n.ctr, 64);
  cudaMemset(n.ctr, 0, 64);
  return n;
}

void free_net(net &n) {
  for (unsigned l = 0; l < kLayers; l++) cudaFree(n.w[l]), cudaFree(n.b[l]);
  for (unsigned l = 0; l <= kLayers; l++) cudaFree(n.buf[l]);
  cudaFree(n.ctr);
}

template <typename T>
const void *fused_fn(const variant &v) {
  if (v.warps == 4) {
    if (v.ticket)
      return v.staged ? (const void *)fused_kernel<T, 4, true, true>
                      : (const void *)fused_kernel<T, 4, true, false>;
    return v.staged ? (const void *)fused_kernel<T, 4, false, true>
                    : (const void *)fused_kernel<T, 4, false, false>;
  }
  if (v.ticket)
    return v.staged ? (const void *)fused_kernel<T, 8, true, true>
                    : (const void *)fused_kernel<T, 8, true, false>;
  return v.staged ? (const void *)fused_kernel<T, 8, false, true>
                  : (const void *)fused_kernel<T, 8, false, false>;
}

__global__ void empty_kernel() {}

cudaError_t forward(net &n, const variant &v, cudaStream_t s) {
  if (v.m == EMPTY) {
    for (unsigned i = 0; i < kLayers; i++) empty_kernel<<<1, 32, 0, s>>>();
    return cudaGetLastError();
  }
  if (v.m == GEMV_PDL) {
    for (unsigned l = 0; l < kLayers; l++) {
      cudaError_t e = sp__cuda_gemv(s, 1, 1, n.bf16 ? SP_BF16 : SP_F32, 0, n.buf[l], n.w[l], n.b[l],
                                    n.buf[l + 1], 1, kDims[l], kDims[l + 1],
                                    l + 1 < kLayers ? SP__ACT_RELU : SP__ACT_NONE);
      if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
  }
  fused_chain c = {};
  unsigned first = 0;
  for (unsigned l = 0; l < kLayers; l++) {
    const unsigned blocks = (kDims[l + 1] + v.warps - 1) / v.warps;
    c.l[l] = {n.w[l],       n.b[l],   n.buf[l],
              n.buf[l + 1], kDims[l], kDims[l + 1],
              first,        blocks,   l + 1 < kLayers ? SP__ACT_RELU : SP__ACT_NONE};
    first += blocks;
  }
  c.ctr = n.ctr;
  void *args[] = {&c};
  const void *fn = n.bf16 ? fused_fn<__nv_bfloat16>(v) : fused_fn<float>(v);
  return cudaLaunchKernel(fn, dim3(first), dim3(32 * v.warps), args, 0, s);
}

/* n's output (bytes of it) from the library's kernels on s, which then leave the output buffer
 * zeroed, so a forward compared with it must write every byte. */
std::vector<char> library_output(net &n, cudaStream_t s, size_t bytes) {
  std::vector<char> want(bytes);
  forward(n, {GEMV_PDL, 4, false, false}, s);
  cudaStreamSynchronize(s);
  cudaMemcpy(want.data(), n.buf[kLayers], bytes, cudaMemcpyDeviceToHost);
  cudaMemset(n.buf[kLayers], 0, bytes);
  return want;
}

/* Whether v's forward equals the library's kernels' bit for bit, three launches in a row (the
 * counters reset themselves), with the counters zero after. */
bool check(const variant &v, bool bf16) {
  net n = make_net(bf16, 99);
  cudaStream_t s;
  cudaStreamCreate(&s);
  const size_t bytes = kDims[kLayers] * (bf16 ? 2 : 4);
  std::vector<char> want = library_output(n, s, bytes), got(bytes);
  cudaError_t e = cudaSuccess;
  for (int k = 0; k < 3 && e == cudaSuccess; k++) e = forward(n, v, s);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s);
  unsigned ctr[kLayers + 1];
  cudaMemcpy(got.data(), n.buf[kLayers], bytes, cudaMemcpyDeviceToHost);
  cudaMemcpy(ctr, n.ctr, sizeof(ctr), cudaMemcpyDeviceToHost);
  bool ok = e == cudaSuccess && memcmp(want.data(), got.data(), bytes) == 0;
  for (unsigned k = 0; k <= kLayers; k++) ok = ok && ctr[k] == 0;
  if (!ok)
    fprintf(stderr, "fused_mlp: variant differs from the library's kernels (%s)\n",
            cudaGetErrorString(e));
  cudaStreamDestroy(s);
  free_net(n);
  return ok;
}

struct run_state {
  variant v;
  bool bf16;
  std::atomic<bool> stop{false};
  pthread_barrier_t go;
};
struct run_thread {
  run_state *rs;
  double n;
  bool failed;
};

void *thread_main(void *p) {
  run_thread *t = static_cast<run_thread *>(p);
  run_state *rs = t->rs;
  net n = make_net(rs->bf16, 1234);
  cudaStream_t s;
  cudaGraph_t g;
  cudaGraphExec_t ge = nullptr;
  t->failed = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess ||
              cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess;
  if (!t->failed) {
    cudaError_t e = forward(n, rs->v, s);
    t->failed = cudaStreamEndCapture(s, &g) != cudaSuccess || e != cudaSuccess ||
                cudaGraphInstantiate(&ge, g, 0) != cudaSuccess;
  }
  for (int i = 0; i < 10 && !t->failed; i++)
    t->failed = cudaGraphLaunch(ge, s) != cudaSuccess || cudaStreamSynchronize(s) != cudaSuccess;
  pthread_barrier_wait(&rs->go);
  double k = 0;
  while (!t->failed && !rs->stop.load(std::memory_order_relaxed)) {
    t->failed = cudaGraphLaunch(ge, s) != cudaSuccess || cudaStreamSynchronize(s) != cudaSuccess;
    k++;
  }
  t->n = k;
  if (ge) cudaGraphExecDestroy(ge), cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  free_net(n);
  return nullptr;
}

/* Forwards/s from `threads` threads for `seconds`; -1 on a CUDA failure. */
double rate(const variant &v, bool bf16, unsigned threads, double seconds) {
  run_state rs;
  rs.v = v;
  rs.bf16 = bf16;
  pthread_barrier_init(&rs.go, nullptr, threads + 1);
  std::vector<pthread_t> th(threads);
  std::vector<run_thread> t(threads, run_thread{&rs, 0, false});
  for (unsigned i = 0; i < threads; i++)
    bench_thread_start(&th[i], thread_main, &t[i], "fused_mlp");
  pthread_barrier_wait(&rs.go);
  const auto t0 = std::chrono::steady_clock::now();
  usleep((useconds_t)(seconds * 1e6));
  rs.stop = true;
  double total = 0;
  bool failed = false;
  for (unsigned i = 0; i < threads; i++) {
    pthread_join(th[i], nullptr);
    total += t[i].n;
    failed = failed || t[i].failed;
  }
  pthread_barrier_destroy(&rs.go);
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return failed ? -1 : total / el;
}

}  // namespace

int main(int argc, char **argv) {
  const double seconds = argc > 1 ? atof(argv[1]) : 0.5;
  if (!(seconds > 0 && seconds <= 60)) {
    fprintf(stderr, "usage: fused_mlp [SECONDS per cell, 0 < s <= 60]\n");
    return 2;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    printf("skipped: no CUDA device\n");
    return 0;
  }
  std::vector<std::pair<const char *, variant>> rows = {
      {"3 empty kernels", {EMPTY, 4, false, false}}, {"3 GEMV, PDL", {GEMV_PDL, 4, false, false}}};
  static char names[8][48];
  int k = 0;
  for (int staged = 0; staged < 2; staged++)
    for (int ticket = 0; ticket < 2; ticket++)
      for (unsigned w : {4u, 8u}) {
        snprintf(names[k], sizeof(names[k]), "fused, %s, %s, W=%u", ticket ? "ticket" : "index",
                 staged ? "staged" : "direct", w);
        rows.push_back({names[k++], {FUSED, w, ticket != 0, staged != 0}});
      }
  bool ok = true;
  for (auto &r : rows)
    if (r.second.m == FUSED) ok = check(r.second, false) && check(r.second, true) && ok;
  printf(
      "fused_mlp: MLP 512-1024-1024-512 batch 1, graph replay, %.2f s a cell; every fused variant "
      "%s\n",
      seconds, ok ? "equals the library's kernels bit for bit (f32, bf16)" : "CHECK FAILED");
  printf("%-32s %12s %12s %12s %12s\n", "forwards/s", "f32 1 thr", "f32 16 thr", "bf16 1 thr",
         "bf16 16 thr");
  for (auto &r : rows) {
    printf("%-32s", r.first);
    for (int bf = 0; bf < 2; bf++)
      for (unsigned t : {1u, 16u}) printf(" %12.0f", rate(r.second, bf != 0, t, seconds));
    printf("\n");
    fflush(stdout);
  }
  return ok ? 0 : 1;
}
