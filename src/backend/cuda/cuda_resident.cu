/* The resident forward's kernel: a whole MLP at batch 1 in one launch that stays on the device
 * (the protocol: cuda_resident.h; the host side: cuda_resident.c).
 *
 * Arithmetic: row o of layer l is the f32 sum over 16-byte steps i = lane, lane + 32, .. of the
 * fmaf of weight and input elements in order, then the butterfly shuffle of cuda_gemv.cu, then
 * + bias, the activation (sp__cuda_act_apply) and one rounding to the dtype; the first layer's f32
 * input is rounded to the dtype as it is staged and the last layer's output is written as f32
 * holding the rounded value. Where in_features is a multiple of 16 bytes of elements this is the
 * library's GEMV at batch 1 exactly (with its f32 io flags), so the outputs are equal bit for bit;
 * other widths are padded with zeros in shared memory (same sum, another order than the GEMV's
 * element-wise path).
 *
 * Memory: weights are read once a launch into shared memory; everything written during a launch
 * (the input between forwards, the layers' outputs) is read with ld.global.cg (L2, never a stale
 * L1 line). Each block fences before it arrives at a barrier and after it has waited; the last
 * block fences system-wide before it writes `done`, so the outputs are visible to the host and to
 * every stream when the host sees it.
 * No state besides the arguments; no locks.
 */
#include <stdint.h>

#include "cuda_act.h"
#include "cuda_elem.cuh"
#include "cuda_resident.h"

namespace {

constexpr unsigned kWarps = SP__CUDA_RESIDENT_WARPS, kThreads = 32 * kWarps;
constexpr unsigned long long kLeaveBit = 1ull << 32; /* in go: leave after this forward */

__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/* Thread 0: this block's arrival number k (from 1) at the grid barrier; with wait, returns once
 * every block has arrived k times (false after wait_ns, with fail set, or when fail is set).
 * Without wait, returns whether this was the last arrival of round k. The clock and fail are looked
 * at every 64 spins, so a spin is one load. */
__device__ bool barrier_arrive(const sp__cuda_resident_args &a, unsigned k, bool wait) {
  __threadfence();
  volatile unsigned *count = &a.words->count, *fail = &a.words->fail;
  const unsigned target = k * gridDim.x, old = atomicAdd(&a.words->count, 1u);
  if (!wait) return old + 1 == target;
  unsigned long long t0 = 0;
  for (unsigned spins = 1; (int)(*count - target) < 0; spins++) {
    if (spins % 64) continue;
    const unsigned long long t = now_ns();
    if (!t0) t0 = t;
    if (*fail || t - t0 > a.wait_ns) {
      atomicExch(&a.words->fail, 1u);
      return false;
    }
  }
  __threadfence();
  return true;
}

/* Block 0, thread 0: waits for a bell value other than last and returns it with its pointers and
 * what to do after it (leave: 0 stay, 1 leave after this forward, 2 leave now: returns last). The
 * clock and fail are read every 16 polls of the bell. */
__device__ unsigned wait_bell(const sp__cuda_resident_args &a, unsigned last, unsigned long long t0,
                              const float *&in, float *&out, unsigned &leave) {
  const unsigned long long idle0 = now_ns();
  leave = 0;
  for (unsigned polls = 1;; polls++) {
    unsigned v = a.ctl->bell;
    if (v == last && (polls % 16 || !*(volatile unsigned *)&a.words->fail)) {
      if (polls % 16) continue;
      const unsigned long long t = now_ns();
      if (t - idle0 < a.idle_ns && t - t0 < a.lease_ns) continue;
      a.ctl->gone = a.launch; /* leaving: one more look at the bell, then go */
      __threadfence_system();
      v = a.ctl->bell;
      leave = 1;
    }
    if (v == last || v == SP__CUDA_RESIDENT_STOP || *(volatile unsigned *)&a.words->fail) {
      leave = 2;
      return last;
    }
    if (v & 1u) { /* the pointers were written before the bell: read them after it */
      __threadfence_system();
      in = a.ctl->in;
      out = a.ctl->out;
    }
    return v;
  }
}

/* Thread 0 of every block: the next forward's value, its pointers (in, out updated when they
 * changed) and what to do after it (as wait_bell). Block 0 takes it from the bell and publishes
 * it in go, | kLeaveBit when the launch ends after that forward; leaving now it publishes
 * last | kLeaveBit, so a block that has not yet run forward `last` (one layer: no barrier makes
 * it) still runs it before it leaves. */
__device__ unsigned next_forward(const sp__cuda_resident_args &a, unsigned last,
                                 unsigned long long t0, const float *&in, float *&out,
                                 unsigned &leave) {
  sp__cuda_resident_words *wd = a.words;
  volatile unsigned long long *go = &wd->go;
  unsigned v;
  if (blockIdx.x == 0) {
    v = wait_bell(a, last, t0, in, out, leave);
    if (leave != 2 && (v & 1u)) {
      wd->in = in;
      wd->out = out;
      __threadfence();
    }
    *go = (unsigned long long)v | (leave ? kLeaveBit : 0ull);
    return v;
  }
  unsigned long long g;
  for (unsigned spins = 1; (unsigned)(g = *go) == last; spins++)
    if ((g & kLeaveBit) || (spins % 64 == 0 && *(volatile unsigned *)&wd->fail)) {
      leave = 2;
      return last;
    }
  v = (unsigned)g;
  leave = (g & kLeaveBit) ? 1u : 0u;
  if (v & 1u) {
    __threadfence();
    in = *(const float *volatile *)&wd->in;
    out = *(float *volatile *)&wd->out;
  }
  return v;
}

/* Layer l's input into xs (in_pad elements of T): the forward's f32 in rounded to T, or layer l-1's
 * output. Ends with __syncthreads. */
template <typename T>
__device__ void stage_input(const sp__cuda_resident_args &a, unsigned l, const float *in, T *xs) {
  constexpr unsigned E = 16 / sizeof(T);
  const sp__cuda_resident_layer &L = a.layer[l];
  if (l > 0) {
    const uint4 *src = static_cast<const uint4 *>(a.layer[l - 1].y);
    for (unsigned i = threadIdx.x; i < L.in_pad / E; i += kThreads)
      reinterpret_cast<uint4 *>(xs)[i] = sp__ld_l2(src + i);
  } else if ((reinterpret_cast<uintptr_t>(in) & 15u) == 0 && L.in % 4 == 0) {
    for (unsigned i = threadIdx.x; i < L.in / 4; i += kThreads) {
      const uint4 q = sp__ld_l2(reinterpret_cast<const uint4 *>(in) + i);
      xs[4 * i] = sp__from_f<T>(__uint_as_float(q.x));
      xs[4 * i + 1] = sp__from_f<T>(__uint_as_float(q.y));
      xs[4 * i + 2] = sp__from_f<T>(__uint_as_float(q.z));
      xs[4 * i + 3] = sp__from_f<T>(__uint_as_float(q.w));
    }
  } else {
    for (unsigned i = threadIdx.x; i < L.in; i += kThreads)
      xs[i] = sp__from_f<T>(sp__ld_l2(in + i));
  }
  if (l == 0)
    for (unsigned i = L.in + threadIdx.x; i < L.in_pad; i += kThreads) xs[i] = sp__from_f<T>(0.0f);
  __syncthreads();
}

/* This block's rows of layer l from the staged input: a warp a row. */
template <typename T>
__device__ void compute_rows(const sp__cuda_resident_args &a, unsigned l, const unsigned char *smem,
                             const T *xs, float *out) {
  constexpr unsigned E = 16 / sizeof(T);
  const sp__cuda_resident_layer &L = a.layer[l];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x & 31u, nv = L.in_pad / E;
  const bool last = l + 1 == a.n_layers;
  for (unsigned r = warp; r < L.rows; r += kWarps) {
    const unsigned row = blockIdx.x * L.rows + r;
    if (row >= L.out) break;
    const uint4 *w = reinterpret_cast<const uint4 *>(smem + L.smem_off) + (size_t)r * nv;
    const uint4 *x = reinterpret_cast<const uint4 *>(xs);
    float acc = 0.f;
    for (unsigned i = lane; i < nv; i += 32) {
      float wf[E], xf[E];
      sp__unpack16(w[i], wf, T());
      sp__unpack16(x[i], xf, T());
#pragma unroll
      for (unsigned e = 0; e < E; e++) acc = fmaf(wf[e], xf[e], acc);
    }
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
    if (lane == 0) {
      const T *b = static_cast<const T *>(L.bias);
      const T y = sp__from_f<T>(sp__cuda_act_apply(acc + (b ? sp__to_f(b[row]) : 0.f), L.act));
      if (last) out[row] = sp__to_f(y);
      else static_cast<T *>(L.y)[row] = y;
    }
  }
}

/* This block's rows of every layer's weights into shared memory, zero-padded to in_pad. */
template <typename T>
__device__ void load_weights(const sp__cuda_resident_args &a, unsigned char *smem) {
  constexpr unsigned E = 16 / sizeof(T);
  for (unsigned l = 0; l < a.n_layers; l++) {
    const sp__cuda_resident_layer &L = a.layer[l];
    T *dst = reinterpret_cast<T *>(smem + L.smem_off);
    const T *w = static_cast<const T *>(L.w);
    for (unsigned r = 0; r < L.rows; r++) {
      const unsigned row = blockIdx.x * L.rows + r;
      if (row >= L.out) break;
      const T *src = w + (size_t)row * L.in;
      T *d = dst + (size_t)r * L.in_pad;
      if (L.in % E == 0 && (reinterpret_cast<uintptr_t>(src) & 15u) == 0) {
        for (unsigned i = threadIdx.x; i < L.in / E; i += kThreads)
          reinterpret_cast<uint4 *>(d)[i] = reinterpret_cast<const uint4 *>(src)[i];
      } else {
        for (unsigned i = threadIdx.x; i < L.in_pad; i += kThreads)
          d[i] = i < L.in ? src[i] : sp__from_f<T>(0.0f);
      }
    }
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    resident_kernel(const __grid_constant__ sp__cuda_resident_args a) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ unsigned s_go, s_leave;
  __shared__ const float *s_in;
  __shared__ float *s_out;
  __shared__ bool s_ok;
  const unsigned long long t0 = now_ns();
  load_weights<T>(a, smem);
  T *xs = reinterpret_cast<T *>(smem + a.x_off);
  unsigned k = 0, last = a.last; /* k: this block's barrier arrivals (thread 0) */
  const float *in = a.in;
  float *out = a.out;
  for (;;) {
    if (threadIdx.x == 0) {
      unsigned leave;
      s_go = next_forward(a, last, t0, in, out, leave);
      s_leave = leave;
      s_in = in;
      s_out = out;
    }
    __syncthreads();
    const unsigned leave = s_leave;
    if (leave == 2) return;
    last = s_go;
    in = s_in;
    out = s_out;
    for (unsigned l = 0; l < a.n_layers; l++) {
      if (l > 0) {
        if (threadIdx.x == 0) s_ok = barrier_arrive(a, ++k, true);
        __syncthreads();
        if (!s_ok) return;
      }
      stage_input<T>(a, l, in, xs);
      compute_rows<T>(a, l, smem, xs, out);
      __syncthreads(); /* xs is read by every warp before the next layer stages into it */
    }
    if (threadIdx.x == 0 && barrier_arrive(a, ++k, false)) { /* the last block: tell the host */
      __threadfence_system();
      a.ctl->done = last;
    }
    if (leave == 1) return;
  }
}

}  // namespace

extern "C" const void *sp__cuda_resident_kernel(int dtype) {
  switch (dtype) {
  case SP_F32: return reinterpret_cast<const void *>(resident_kernel<float>);
  case SP_BF16: return reinterpret_cast<const void *>(resident_kernel<__nv_bfloat16>);
  case SP_F16: return reinterpret_cast<const void *>(resident_kernel<__half>);
  default: return nullptr;
  }
}

extern "C" cudaError_t sp__cuda_resident_launch(const void *fn, const sp__cuda_resident_args *a,
                                                unsigned grid, size_t smem, cudaStream_t s) {
  void *args[] = {const_cast<sp__cuda_resident_args *>(a)};
  return cudaLaunchCooperativeKernel(fn, dim3(grid), dim3(kThreads), args, smem, s);
}
