#!/usr/bin/env bash
# The CUDA encoder kernels (nn_async) and Linear activations on the GPU machine, in one call:
# build (CUDA, sm_90 only) the tests and benchmark they touch; run conf_backend_nn and
# conf_backend (every backend: host and cuda, CUDA required), the CUDA-only run of both, and the
# white-box linear test (both implementations forced, every activation, a captured activation);
# compute-sanitizer memcheck and racecheck on conf_backend_nn (the attention and LayerNorm kernels
# share memory across warps), memcheck on the linear test; then bench/nn (microseconds per op).
# Run from the repository root:  scripts/gpu-nn-check.sh LOGDIR      (e.g. LOGDIR=$OUT)
# The dependency prefix from .gpu/debs is set up exactly as scripts/gpu-check.sh does.
# Environment: SP_GPU_JOBS (default 16), SP_GPU_SAN=0 skips the sanitizers, SP_GPU_NN_BENCH=0
# skips bench/nn.
set -uo pipefail
log=${1:?usage: scripts/gpu-nn-check.sh LOGDIR}
mkdir -p "$log" && log=$(cd "$log" && pwd)
root=$(pwd)
[ -f CMakeLists.txt ] && [ -d src/backend ] || { echo "run from the repository root" >&2; exit 2; }
build=$root/build-gpu-nn
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
note "INFO  $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
step configure 300 cmake -S "$root" -B "$build" "${gen[@]}" -DSP_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES=90 || { note "RESULT FAIL (configure)"; exit 1; }
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
