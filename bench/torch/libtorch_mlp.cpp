// libtorch baseline for bench/infer: the 512-1024-1024-512 MLP at batch 1, T C++ threads, each
// with a pool stream (c10::cuda::getStreamFromPool) made current by a CUDAStreamGuard; every
// forward is followed by stream.synchronize(). f32 (TF32 off) and bf16.
// Build: bench/torch/build_libtorch.sh [OUT]; usage: libtorch_mlp [threads,...] [seconds]
// [f32,bf16]
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using clk = std::chrono::steady_clock;

static torch::nn::Sequential build(torch::Dtype dt) {
  torch::manual_seed(1);
  torch::nn::Sequential m(torch::nn::Linear(512, 1024), torch::nn::ReLU(),
                          torch::nn::Linear(1024, 1024), torch::nn::ReLU(),
                          torch::nn::Linear(1024, 512));
  m->eval();
  m->to(torch::Device(torch::kCUDA), dt);
  return m;
}

struct Result {
  double rate, p50_us, p99_us;
};

static Result run(torch::nn::Sequential &model, torch::Dtype dt, int threads, double seconds) {
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::vector<std::vector<double>> lat(threads);
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; i++) {
    ts.emplace_back([&, i] {
      c10::InferenceMode guard_mode;
      auto stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false);
      c10::cuda::CUDAStreamGuard guard(stream);
      auto x = torch::rand({1, 512}, torch::TensorOptions().device(torch::kCUDA).dtype(dt));
      for (int w = 0; w < 3; w++) model->forward(x);
      stream.synchronize();
      ready++;
      while (ready.load() < threads + 1) std::this_thread::yield();
      while (!stop.load(std::memory_order_relaxed)) {
        auto t0 = clk::now();
        auto y = model->forward(x);
        stream.synchronize();
        lat[i].push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
      }
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  auto t0 = clk::now();
  ready++;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  double secs = std::chrono::duration<double>(clk::now() - t0).count();
  for (auto &t : ts) t.join();
  std::vector<double> all;
  for (auto &l : lat) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  size_t n = all.size();
  if (!n) return {0, 0, 0};
  return {n / secs, all[n / 2], all[std::min(n - 1, (size_t)(n * 0.99))]};
}

int main(int argc, char **argv) {
  std::string tlist = argc > 1 ? argv[1] : "1,2,4,8,16";
  double seconds = argc > 2 ? std::atof(argv[2]) : 2.0;
  std::string dtypes = argc > 3 ? argv[3] : "f32,bf16";
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "libtorch_mlp: CUDA not available\n");
    return 1;
  }
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  std::printf("libtorch %s, MLP 512-1024-1024-512, batch 1, %.1f s per row\n", TORCH_VERSION,
              seconds);
  std::printf("%-14s %7s %12s %9s %9s\n", "mode", "threads", "forwards/s", "p50 us", "p99 us");
  for (std::string name : {"f32", "bf16"}) {
    if (dtypes.find(name) == std::string::npos) continue;
    torch::Dtype dt = name == "f32" ? torch::kFloat32 : torch::kBFloat16;
    auto model = build(dt);
    std::stringstream ss(tlist);
    std::string tok;
    while (std::getline(ss, tok, ',')) {
      int t = std::atoi(tok.c_str());
      if (t < 1) continue;
      Result r = run(model, dt, t, seconds);
      std::printf("%-14s %7d %12.0f %9.1f %9.1f\n", ("libtorch " + name).c_str(), t, r.rate,
                  r.p50_us, r.p99_us);
      std::printf(
          "json {\"impl\":\"libtorch\",\"dtype\":\"%s\",\"threads\":%d,"
          "\"forwards_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
          name.c_str(), t, r.rate, r.p50_us, r.p99_us);
      std::fflush(stdout);
    }
  }
  return 0;
}
