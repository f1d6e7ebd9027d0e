#!/usr/bin/env bash
# One command for the GPU machine: build with CUDA, run every test (CUDA conformance must run,
# not skip), run the stress and conformance binaries under compute-sanitizer memcheck and
# racecheck, run the GPU benchmarks. Every log goes to LOGDIR; LOGDIR/summary.txt has one line
# per step. Run from the repository root:  scripts/gpu-check.sh LOGDIR
#
# The GPU machine cannot install packages: scripts/gpu-env.sh unpacks .gpu/debs (from
# scripts/gpu-deps.sh) into a private prefix and points CMake, pkg-config and the loader at it.
# Environment: SP_GPU_JOBS (build jobs, default 16), SP_GPU_SANITIZE=0 skips the
# sanitizer runs (SP_GPU_SAN_TIMEOUT: seconds per run, default 900), SP_GPU_BENCH=0 skips
# benchmarks, SP_GPU_TEST_TIMEOUT (per ctest test, default 300), SP_BENCH_SECONDS (per benchmark cell),
# SP_GPU_BUILD (build dir, default build-gpu), SP_GPU_TESTS=0 skips ctest and the CUDA-only
# conformance run, SP_GPU_SAN_TESTS (test binaries for the sanitizers), SP_GPU_TORCH=0 skips the PyTorch cross-check and
# the PyTorch/libtorch inference baselines, SP_GPU_PYTHON=0 skips the Python package's tests and
# bench/python_threads.py, SP_GPU_CUDA_ARCHS (e.g. 90) builds the CUDA code for those only.
set -uo pipefail
log=${1:?usage: scripts/gpu-check.sh LOGDIR}
mkdir -p "$log" && log=$(cd "$log" && pwd)
root=$(pwd)
[ -f CMakeLists.txt ] && [ -d src/backend ] || { echo "run from the repository root" >&2; exit 2; }
build=${SP_GPU_BUILD:-$root/build-gpu}
jobs=${SP_GPU_JOBS:-16}
. "$root/scripts/gpu-env.sh"

# ---- machine --------------------------------------------------------------------------------------
{ nvidia-smi; nvcc --version; cmake --version; gcc --version; cat /etc/os-release; env | sort; } \
  >"$log/machine.log" 2>&1
note "INFO  $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"

# ---- build ----------------------------------------------------------------------------------------
configure "$build" 600 ${SP_GPU_CUDA_ARCHS:+-DCMAKE_CUDA_ARCHITECTURES=$SP_GPU_CUDA_ARCHS}
step build 1200 cmake --build "$build" -j "$jobs" || { note "RESULT FAIL (build)"; exit 1; }

# ---- all tests; CUDA conformance must not skip --------------------------------------------------
export SP_REQUIRE_CUDA=1
if [ "${SP_GPU_TESTS:-1}" = 1 ]; then
  step ctest 1800 ctest --test-dir "$build" --output-on-failure -j 4 --timeout "${SP_GPU_TEST_TIMEOUT:-300}"
  grep -E "tests passed|Skipped|\*\*\*Failed|Not Run|Timeout" "$log/ctest.log" | sed 's/^/      /' >>"$summary"
  step conformance_cuda_only 900 bash -c "for t in '$build'/tests/conformance_*; do echo \"== \$t\"; SP_CONFORMANCE_BACKEND=cuda \$t || exit 1; done"
  note "INFO  cuda conformance cases passed: $(grep -c 'OK \] cuda/' "$log/conformance_cuda_only.log")"
fi

# ---- benchmarks -----------------------------------------------------------------------------------
if [ "${SP_GPU_BENCH:-1}" = 1 ]; then
  step torch_build 300 bash "$root/bench/torch/build.sh" "$build/bench"
  if [ -x "$build/bench/torch_alloc" ]; then
    step bench_torch_alloc 300 bash -c "'$build/bench/torch_alloc' > '$log/torch_alloc.txt'"
    export SP_TORCH_RESULTS=$log/torch_alloc.txt
  fi
  step bench_gpu_alloc 600 "$build/bench/gpu_alloc"
  # The same host-backend tables as on a developer machine, but with 16 cores for thread scaling.
  STREAMPOOL_BACKEND=host step bench_alloc_host 600 "$build/bench/alloc" --backend host --threads 1,2,4,8,16
  STREAMPOOL_BACKEND=host step bench_streams_host 600 "$build/bench/streams"
  for b in "$build"/bench/*; do
    n=$(basename "$b")
    [ -x "$b" ] && [ -f "$b" ] || continue
    case $n in gpu_alloc|torch_alloc|encoder) continue;; esac  # encoder: needs a model folder (scripts/gpu-encoder-bench.sh)
    STREAMPOOL_BACKEND=cuda step "bench_$n" 600 "$b"
  done
fi

# ---- PyTorch: outputs cross-checked, then the inference comparison in one run -------------------
if [ "${SP_GPU_TORCH:-1}" = 1 ]; then
  step torch_check 600 bash "$root/scripts/torch_check.sh" "$build" cuda
  secs=${SP_BENCH_SECONDS:-2}
  step bench_torch_mlp 900 python3 "$root/bench/torch/torch_mlp.py" --threads 1,2,4,8,16 --duration "$secs" --dtypes f32,bf16
  if step libtorch_build 600 bash "$root/bench/torch/build_libtorch.sh" "$build/bench/libtorch_mlp"; then
    step bench_libtorch_mlp 900 "$build/bench/libtorch_mlp" 1,2,4,8,16 "$secs" f32,bf16
  fi
fi

# ---- the Python package with CUDA: pytest (host and cuda), then bench/python_threads.py ---------
# No pip there: the package is imported from a copy of the checkout's python/streampool in the
# build folder, with the extension module streampool._speedups compiled beside it for this
# python3 where its headers are (else the ctypes path runs; the summary says which), and the
# library this build made (STREAMPOOL_LIBRARY; the CUDA module libstreampool_cuda.so lies beside
# it), using the installed torch and CuPy; pytest from .gpu/pylib (scripts/gpu-deps.sh) if the
# machine has none. SP_GPU_PYTHON=0 skips this.
if [ "${SP_GPU_PYTHON:-1}" = 1 ]; then
  pkg=$build/pypkg
  rm -rf "$pkg" && mkdir -p "$pkg" && cp -r "$root/python/streampool" "$pkg/"
  pyinc=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
  pysuf=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null)
  npinc=$(python3 -c 'import numpy; print(numpy.get_include())' 2>/dev/null)
  if [ -f "$pyinc/Python.h" ] && [ -n "$npinc" ] && cc -O2 -shared -fPIC -I"$pyinc" -I"$npinc" "$root/python/streampool/_speedups.c" \
      -o "$pkg/streampool/_speedups$pysuf" >"$log/python_speedups.log" 2>&1; then
    note "INFO  python binding: extension (streampool._speedups built for $(python3 -V 2>&1))"
  else
    note "INFO  python binding: ctypes (no Python.h or NumPy for python3 here, or the build failed: python_speedups.log)"
  fi
  pyenv=(env PYTHONPATH="$pkg" STREAMPOOL_LIBRARY="$build/libstreampool.so")
  [ -d "$root/.gpu/pylib" ] && pyenv=(env PYTHONPATH="$pkg:$root/.gpu/pylib" STREAMPOOL_LIBRARY="$build/libstreampool.so")
  if "${pyenv[@]}" python3 -c "import pytest, numpy" 2>/dev/null; then
    step python_pytest_host 900 "${pyenv[@]}" STREAMPOOL_TEST_BACKEND=host python3 -m pytest -q -rs -p no:cacheprovider "$root/python/tests"
    step python_pytest_cuda 900 "${pyenv[@]}" STREAMPOOL_TEST_BACKEND=cuda python3 -m pytest -q -rs -p no:cacheprovider "$root/python/tests"
    grep -E "passed|failed|SKIPPED" "$log/python_pytest_cuda.log" | sed 's/^/      /' >>"$summary"
  else
    note "SKIP  python_pytest: no pytest/numpy for python3 here (run scripts/gpu-deps.sh to carry pytest in .gpu/pylib)"
  fi
  if [ "${SP_GPU_BENCH:-1}" = 1 ]; then
    step bench_python_threads 900 "${pyenv[@]}" python3 "$root/bench/python_threads.py" --backend cuda \
      --duration "${SP_BENCH_SECONDS:-2}" --cli "$build/streampool" --json "$log/python_threads.json"
    STREAMPOOL_BACKEND=host step bench_python_threads_host 900 "${pyenv[@]}" python3 "$root/bench/python_threads.py" \
      --backend host --duration "${SP_BENCH_SECONDS:-2}" --cli "$build/streampool"
  fi
fi

# ---- compute-sanitizer ----------------------------------------------------------------------------
if [ "${SP_GPU_SANITIZE:-1}" = 1 ]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck; do
    # The binaries that run device work on CUDA (the other stress tests pin the host backend).
    for t in ${SP_GPU_SAN_TESTS:-"$build"/tests/conformance_* "$build"/tests/stress_infer_plans "$build"/tests/internal_backend_graph}; do
      [ -x "$t" ] || continue
      n=$(basename "$t")
      # racecheck watches shared memory inside kernels: the conformance and graph binaries cover
      # every kernel we launch; the plan stress under racecheck outruns the sanitizer's tracking.
      [ "$tool" = racecheck ] && [ "$n" = stress_infer_plans ] && continue
      # The graph test breaks a capture on purpose: those CUDA API errors are expected results.
      api=(); [ "$n" = internal_backend_graph ] && api=(--report-api-errors no)
      SP_CONFORMANCE_BACKEND=cuda step "sanitizer_${tool}_$n" "${SP_GPU_SAN_TIMEOUT:-900}" \
        "$cs" --tool "$tool" "${api[@]}" --error-exitcode 99 --leak-check no "$t"
    done
  done
fi

[ $failed -eq 0 ] && note "RESULT PASS" || note "RESULT FAIL"
exit $failed
