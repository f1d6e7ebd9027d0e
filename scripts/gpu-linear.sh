#!/usr/bin/env bash
# The small-batch linear kernels on the GPU machine, in one call: build (CUDA, sm_90 only) the
# tests and benchmarks they touch, run them (CUDA required), compute-sanitizer memcheck on the two
# linear tests, then bench/linear (the empty-graph limit, cuBLASLt-only, kernel-only and auto
# rows) and bench/infer's forward rows (default and with STREAMPOOL_CUDA_LINEAR=kernel).
# Run from the repository root:  scripts/gpu-linear.sh LOGDIR
# The dependency prefix from .gpu/debs: scripts/gpu-env.sh.
# Environment: SP_GPU_JOBS (default 16), SP_BENCH_SECONDS (per row, default 1), SP_GPU_SAN=0 skips
# the sanitizer, SP_GPU_LINEAR_BENCH=0 skips the benchmarks.
set -uo pipefail
log=${1:?usage: scripts/gpu-linear.sh LOGDIR}
mkdir -p "$log" && log=$(cd "$log" && pwd)
root=$(pwd)
build=$root/build-gpu-linear
. "$root/scripts/gpu-env.sh"
note "INFO  $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null | head -1)"
configure "$build" 300 -DCMAKE_CUDA_ARCHITECTURES=90
step build 600 cmake --build "$build" -j "${SP_GPU_JOBS:-16}" --target internal_cuda_linear \
  conformance_conf_matmul internal_backend_graph bench_linear bench_infer || { note "RESULT FAIL (build)"; exit 1; }
export SP_REQUIRE_CUDA=1
step test_cuda_linear 300 "$build/tests/internal_cuda_linear"
grep -E "cuda (auto|kernel|cublaslt)" "$log/test_cuda_linear.log" | sed 's/^/      /' >>"$summary"
SP_CONFORMANCE_BACKEND=cuda step conf_matmul_cuda 300 "$build/tests/conformance_conf_matmul"
step backend_graph 300 "$build/tests/internal_backend_graph"
secs=${SP_BENCH_SECONDS:-1}
if [ "${SP_GPU_LINEAR_BENCH:-1}" = 1 ]; then
STREAMPOOL_BACKEND=cuda step bench_linear 300 "$build/bench/linear" --duration "$secs"
STREAMPOOL_BACKEND=cuda step bench_infer_default 120 "$build/bench/infer" --modes forward --threads 1,16 --duration "$secs"
STREAMPOOL_BACKEND=cuda STREAMPOOL_CUDA_LINEAR=kernel step bench_infer_kernel 120 "$build/bench/infer" --modes forward --threads 1,16 --duration "$secs"
fi
if [ "${SP_GPU_SAN:-1}" = 1 ]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  step memcheck_cuda_linear 240 "$cs" --tool memcheck --error-exitcode 99 --leak-check no "$build/tests/internal_cuda_linear"
  SP_CONFORMANCE_BACKEND=cuda step memcheck_conf_matmul 180 "$cs" --tool memcheck --error-exitcode 99 --leak-check no "$build/tests/conformance_conf_matmul"
fi
if [ "${SP_GPU_LINEAR_BENCH:-1}" = 1 ]; then
  cat "$log/bench_linear.log" >>"$summary"
  grep -E "forward" "$log/bench_infer_default.log" | sed 's/^/default: /' >>"$summary"
  grep -E "forward" "$log/bench_infer_kernel.log" | sed 's/^/kernel:  /' >>"$summary"
fi
[ $failed -eq 0 ] && note "RESULT PASS" || note "RESULT FAIL"
exit $failed
