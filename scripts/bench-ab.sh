#!/usr/bin/env bash
# A/B of the benchmarks between an older tree and this one, in one call on one machine: builds
# both the same way (RelWithDebInfo, SP_DEBUG_LEVEL SP_AB_DEBUG_LEVEL: 0, the release build, by
# default, whatever each tree's own default is; benchmarks only), then runs each
# benchmark SP_AB_ROUNDS times per tree, alternating which tree goes first, so that the machine's
# drift falls on both sides. The host tables (bench/streams; bench/alloc on the host backend, with
# malloc measured in the same run) always; bench/infer on CUDA when a GPU is visible. Every run's
# output is kept (LOGDIR/NAME.TREE.ROUND.log); LOGDIR/summary.txt ends with one row per cell
# (scripts/bench-ab-summary.py: each tree's median and range).
#
# usage: scripts/bench-ab.sh BASE LOGDIR     (from the repository root; BASE: a source directory
#        or a tar of one, e.g. git archive -o .gpu/base.tar REV)
# Environment: SP_AB_DEBUG_LEVEL (0), SP_AB_ROUNDS (3), SP_AB_SECONDS (per infer row, 1; per alloc cell, half of it),
# SP_AB_BENCHES (which of "streams alloc infer" to run; all by default), SP_GPU_JOBS (16), SP_AB_CUDA (1: require the GPU rows, 0: skip them; default: when nvidia-smi
# lists a GPU). On the GPU machine the dependency prefix comes from .gpu/debs (gpu-env.sh).
set -uo pipefail
base=${1:?usage: scripts/bench-ab.sh BASE LOGDIR}
log=${2:?usage: scripts/bench-ab.sh BASE LOGDIR}
mkdir -p "$log" && log=$(cd "$log" && pwd)
root=$(pwd)
[ -f CMakeLists.txt ] && [ -d src/backend ] || { echo "run from the repository root" >&2; exit 2; }
. "$root/scripts/gpu-env.sh"
rounds=${SP_AB_ROUNDS:-3}
secs=${SP_AB_SECONDS:-1}
cuda=${SP_AB_CUDA:-$(nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)}
work=$root/build-ab
mkdir -p "$work"
if [ -f "$base" ]; then
  rm -rf "$work/base-src" && mkdir -p "$work/base-src" && tar -xf "$base" -C "$work/base-src" \
    || { note "RESULT FAIL (cannot unpack $base)"; exit 1; }
  base=$work/base-src
fi
base=$(cd "$base" && pwd) || exit 1
note "INFO  $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
[ "$cuda" = 1 ] && note "INFO  $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
level=${SP_AB_DEBUG_LEVEL:-0}
note "INFO  base $base, new $root, SP_DEBUG_LEVEL $level, $rounds rounds, alternating"

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cuda_flag=OFF
[ "$cuda" = 1 ] && cuda_flag=ON
for tree in base new; do
  src=$root
  [ $tree = base ] && src=$base
  b=$work/$tree
  step "configure_$tree" 300 cmake -S "$src" -B "$b" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSP_DEBUG_LEVEL="$level" -DSP_TESTS=OFF -DSP_CUDA=$cuda_flag -DCMAKE_CUDA_ARCHITECTURES=90 || { note "RESULT FAIL"; exit 1; }
  targets=(bench_streams bench_alloc bench_infer)
  # the CUDA backend as a run-time module (trees since the module split): built beside the library
  cmake --build "$b" --target help 2>/dev/null | grep -qw streampool_cuda && targets+=(streampool_cuda)
  step "build_$tree" 900 cmake --build "$b" -j "${SP_GPU_JOBS:-16}" --target "${targets[@]}" \
    || { note "RESULT FAIL"; exit 1; }
done

alloc_secs=$(awk -v s="$secs" 'BEGIN { print s / 2 }')
declare -A pairs_only # per tree: bench/alloc's flag for skipping the traces, where it has one
for tree in base new; do
  "$work/$tree/bench/alloc" --help 2>&1 | grep -q -- --pairs-only && pairs_only[$tree]=--pairs-only
done
benches=" ${SP_AB_BENCHES:-streams alloc infer} "
run_tree() { # run_tree TREE ROUND
  local tree=$1 r=$2 b=$work/$1
  [[ $benches == *" streams "* ]] && step "streams.$tree.$r" 300 "$b/bench/streams"
  [[ $benches == *" alloc "* ]] &&
    step "alloc.$tree.$r" 300 "$b/bench/alloc" --backend host --threads 1,4,16 --seconds "$alloc_secs" ${pairs_only[$tree]:-}
  if [ "$cuda" = 1 ] && [[ $benches == *" infer "* ]]; then
    STREAMPOOL_BACKEND=cuda step "infer.$tree.$r" 300 "$b/bench/infer" --backend cuda \
      --threads 1,8,16 --duration "$secs"
  fi
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then run_tree base "$r"; run_tree new "$r"
  else run_tree new "$r"; run_tree base "$r"; fi
done

python3 "$root/scripts/bench-ab-summary.py" "$log" >"$log/ab.md" 2>&1 || failed=1
cat "$log/ab.md" >>"$summary"
[ $failed = 0 ] && note "RESULT PASS" || note "RESULT FAIL"
exit $failed
