#!/usr/bin/env bash
# The small-batch linear kernels on the GPU machine, in one call: build (CUDA, sm_90 only) the
# tests and benchmarks they touch, run them (CUDA required), compute-sanitizer memcheck on the two
# linear tests, then bench/linear (the empty-graph limit, cuBLASLt-only, kernel-only and auto
# rows) and bench/infer's forward rows (default and with STREAMPOOL_CUDA_LINEAR=kernel).
# Run from the repository root:  scripts/gpu-linear.sh LOGDIR
# The dependency prefix from .gpu/debs is set up exactly as scripts/gpu-check.sh does.
# Environment: SP_GPU_JOBS (default 16), SP_BENCH_SECONDS (per row, default 1), SP_GPU_SAN=0 skips
# the sanitizer, SP_GPU_LINEAR_BENCH=0 skips the benchmarks.
set -uo pipefail
log=${1:?usage: scripts/gpu-linear.sh LOGDIR}
mkdir -p "$log" && log=$(cd "$log" && pwd)
root=$(pwd)
build=$root/build-gpu-linear
summary=$log/summary.txt
: >"$summary"
failed=0
note() { echo "$*" | tee -a "$summary"; }
step() { # step NAME TIMEOUT CMD...
  local name=$1 to=$2; shift 2
  local t0=$SECONDS rc
  timeout "$to" "$@" >"$log/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then note "PASS  $name ($((SECONDS - t0)) s)"
  else note "FAIL  $name rc=$rc ($((SECONDS - t0)) s), see $name.log"; failed=1; fi
  return $rc
}
prefix=$root/.gpu/prefix
multi=x86_64-linux-gnu
if ls "$root"/.gpu/debs/*.deb >/dev/null 2>&1; then
  rm -rf "$prefix" && mkdir -p "$prefix"
  for d in "$root"/.gpu/debs/*.deb; do dpkg -x "$d" "$prefix"; done
  for pc in "$prefix"/usr/lib/$multi/pkgconfig/*.pc "$prefix"/usr/lib/$multi/openblas-pthread/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -i "s|=/usr|=$prefix/usr|g; s|-I/usr|-I$prefix/usr|g; s|-L/usr|-L$prefix/usr|g" "$pc"
  done
  ln -sf openblas-pthread/libopenblas.so.0 "$prefix/usr/lib/$multi/libopenblas.so.0"
  ln -sf openblas-pthread/libopenblas.so "$prefix/usr/lib/$multi/libopenblas.so"
  export PATH=$prefix/usr/bin:$PATH
  [ -x "$prefix/usr/bin/pkg-config" ] || ln -sf pkgconf "$prefix/usr/bin/pkg-config"
  export PKG_CONFIG_LIBDIR=$prefix/usr/lib/$multi/pkgconfig:$prefix/usr/share/pkgconfig:/usr/lib/$multi/pkgconfig:/usr/lib/pkgconfig:/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$prefix/usr/lib/$multi:$prefix/usr/lib/$multi/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CMAKE_PREFIX_PATH=$prefix/usr
  export CMAKE_LIBRARY_PATH=$prefix/usr/lib/$multi/openblas-pthread:$prefix/usr/lib/$multi
  export CMAKE_INCLUDE_PATH=$prefix/usr/include/$multi/openblas-pthread:$prefix/usr/include
fi
export PATH=/usr/local/cuda/bin:$PATH
note "INFO  $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null | head -1)"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
step configure 300 cmake -S "$root" -B "$build" "${gen[@]}" -DSP_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES=90 || { note "RESULT FAIL (configure)"; exit 1; }
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
