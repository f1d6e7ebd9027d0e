#!/usr/bin/env bash
# The CUDA encoder kernels (nn_async) and Linear activations on the GPU machine, in one call:
# build (CUDA, sm_90 only) the tests and benchmark they touch; run conf_backend_nn and
# conf_backend (every backend: host and cuda, CUDA required), the CUDA-only run of both, and the
# white-box linear test (both implementations forced, every activation, a captured activation);
# compute-sanitizer memcheck and racecheck on conf_backend_nn (the attention and LayerNorm kernels
# share memory across warps), memcheck on the linear test; then bench/nn (microseconds per op).
# Run from the repository root:  scripts/gpu-nn-check.sh LOGDIR      (e.g. LOGDIR=$OUT)
# The dependency prefix from .gpu/debs: scripts/gpu-env.sh.
# Environment: SP_GPU_JOBS (default 16), SP_GPU_SAN=0 skips the sanitizers, SP_GPU_NN_BENCH=0
# skips bench/nn.
set -uo pipefail
log=${1:?usage: scripts/gpu-nn-check.sh LOGDIR}
mkdir -p "$log" && log=$(cd "$log" && pwd)
root=$(pwd)
[ -f CMakeLists.txt ] && [ -d src/backend ] || { echo "run from the repository root" >&2; exit 2; }
build=$root/build-gpu-nn
. "$root/scripts/gpu-env.sh"
note "INFO  $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
configure "$build" 300 -DCMAKE_CUDA_ARCHITECTURES=90
step build 900 cmake --build "$build" -j "${SP_GPU_JOBS:-16}" --target conformance_conf_backend_nn \
  conformance_conf_backend internal_cuda_linear internal_backend_graph bench_nn \
  || { note "RESULT FAIL (build)"; exit 1; }
export SP_REQUIRE_CUDA=1
t=$build/tests
step conf_backend_nn 600 "$t/conformance_conf_backend_nn"
step conf_backend 600 "$t/conformance_conf_backend"
grep -E "refused|not run" "$log/conf_backend_nn.log" | sed 's/^/      /' >>"$summary"
SP_CONFORMANCE_BACKEND=cuda step conf_backend_nn_cuda_only 300 "$t/conformance_conf_backend_nn"
note "INFO  cuda nn cases passed: $(grep -c 'OK \] cuda/' "$log/conf_backend_nn_cuda_only.log")"
step cuda_linear 600 "$t/internal_cuda_linear"
grep -E "cuda (auto|kernel|cublaslt)" "$log/cuda_linear.log" | sed 's/^/      /' >>"$summary"
step backend_graph 300 "$t/internal_backend_graph"
if [ "${SP_GPU_SAN:-1}" = 1 ]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck; do
    SP_CONFORMANCE_BACKEND=cuda step "${tool}_conf_backend_nn" 900 "$cs" --tool "$tool" \
      --error-exitcode 99 --leak-check no "$t/conformance_conf_backend_nn"
  done
  # conf_backend provokes API errors on purpose (an impossible cudaMalloc, elapsed time of events
  # not recorded or not done): memory errors only, not those.
  SP_CONFORMANCE_BACKEND=cuda step memcheck_conf_backend 900 "$cs" --tool memcheck \
    --report-api-errors no --error-exitcode 99 --leak-check no "$t/conformance_conf_backend"
  step memcheck_cuda_linear 900 "$cs" --tool memcheck --error-exitcode 99 --leak-check no \
    "$t/internal_cuda_linear"
fi
if [ "${SP_GPU_NN_BENCH:-1}" = 1 ]; then
  step bench_nn 300 "$build/bench/nn" && cat "$log/bench_nn.log" >>"$summary"
fi
[ $failed -eq 0 ] && note "RESULT PASS" || note "RESULT FAIL"
exit $failed
