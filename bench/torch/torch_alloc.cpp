// PyTorch's CUDA caching allocator under the same load as bench/gpu_alloc.c: alloc+free pairs
// (raw_alloc_with_stream / raw_delete) over the same seeded 512 B..8 MiB size sequence, 1-16
// threads, each on its own pool stream, SP_BENCH_SECONDS (default 0.5) per cell after a warm-up
// pass. Prints "threads pairs_per_s" lines (gpu_alloc reads them through SP_TORCH_RESULTS) and a
// human line per cell on stderr. Built by build.sh against the installed torch's libc10_cuda.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include "../size_mix.h"

// Exported by libc10_cuda but declared in no installed header (libtorch_cuda's CUDAHooks.cpp
// declares it the same way).
namespace c10::cuda::_internal {
C10_CUDA_API void setHasPrimaryContext(bool (*func)(c10::DeviceIndex));
}

namespace {

constexpr int kSeq = 4096;
std::vector<size_t> sizes;

void make_sizes() {
  sizes.resize(kSeq);
  bench_size_mix(sizes.data(), kSeq);
}

double run_cell(unsigned threads, double seconds) {
  std::atomic<bool> stop{false};
  std::atomic<unsigned long long> pairs{0};
  std::atomic<unsigned> ready{0};
  std::vector<std::thread> th;
  for (unsigned t = 0; t < threads; t++)
    th.emplace_back([&] {
      c10::cuda::set_device(0);
      cudaStream_t st = c10::cuda::getStreamFromPool(false, 0).stream();
      for (int i = 0; i < kSeq; i++)
        c10::cuda::CUDACachingAllocator::raw_delete(
            c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(sizes[i], st));
      ready++;
      while (ready.load() < threads + 1) std::this_thread::yield();
      unsigned long long n = 0;
      unsigned i = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int k = 0; k < 32; k++, i++)
          c10::cuda::CUDACachingAllocator::raw_delete(
              c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(sizes[i % kSeq], st));
        n += 32;
      }
      pairs += n;
    });
  while (ready.load() < threads) std::this_thread::yield();
  auto t0 = std::chrono::steady_clock::now();
  ready++;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto &t : th) t.join();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return (double)pairs.load() / wall;
}

// libtorch_cuda normally registers this hook; with only libc10_cuda linked, c10 would throw
// "Should never been called". Every thread here makes device 0 current first, which creates its
// primary context (CUDA 12+), so the answer is yes.
bool has_primary_context(c10::DeviceIndex) { return true; }

}  // namespace

int main() {
  c10::cuda::_internal::setHasPrimaryContext(has_primary_context);
  if (c10::cuda::device_count() == 0) {
    std::printf("torch_alloc: skipped: no CUDA device\n");
    return 0;
  }
  const char *sec = std::getenv("SP_BENCH_SECONDS");
  double seconds = sec ? std::atof(sec) : 0.5;
  if (seconds <= 0) seconds = 0.5;
  make_sizes();
  c10::cuda::CUDACachingAllocator::init(c10::cuda::device_count());
  for (unsigned t : {1u, 2u, 4u, 8u, 16u}) {
    double pps = run_cell(t, seconds);
    std::printf("%u %.1f\n", t, pps);
    std::fprintf(stderr, "torch caching allocator: %2u threads: %.1f ns/pair, %.3f M pairs/s\n", t,
                 1e9 * t / pps, pps / 1e6);
    std::fflush(stdout);
  }
  return 0;
}
