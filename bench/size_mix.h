/* The allocator benchmarks' size sequence, shared by bench/gpu_alloc.c and
 * bench/torch/torch_alloc.cpp so ours and PyTorch's allocator see exactly the same requests:
 * xorshift64* from seed 42; each size is 2^e + (r mod 2^e) for e in 9..22, capped at 8 MiB
 * (512 B .. 8 MiB, mostly small, as activations are). Header-only, C and C++.
 */
#ifndef SP_BENCH_SIZE_MIX_H
#define SP_BENCH_SIZE_MIX_H

#include <stddef.h>
#include <stdint.h>

static inline void bench_size_mix(size_t *sizes, int n) {
  uint64_t x = 42;
  for (int i = 0; i < n; i++) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t r = x * 0x2545F4914F6CDD1Dull;
    unsigned e = 9 + (unsigned)(r % 14);
    size_t s = ((size_t)1 << e) + (size_t)((r >> 8) % ((uint64_t)1 << e));
    sizes[i] = s > ((size_t)8 << 20) ? ((size_t)8 << 20) : s;
  }
}

#endif /* SP_BENCH_SIZE_MIX_H */
