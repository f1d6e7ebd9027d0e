#!/usr/bin/env bash
# The encoder benchmark on the GPU machine, in one call (issue 11 item 6): build (CUDA, sm_90) the
# CLI and bench/encoder, run bench/encoder on the carried model folder (f32 and bf16: threads at
# batch 1, one thread batched at 32 and 256, the batcher from 64 clients), `streampool run --model`
# on it (every embedding checked against the single-threaded one), then the PyTorch peer
# (bench/torch/encoder_threads.py) on the very sentences bench/encoder used.
# Run from the repository root:  scripts/gpu-encoder-bench.sh MODEL_DIR [LOGDIR]
#   MODEL_DIR: the bf16 copy of all-MiniLM-L6-v2 (scripts/make-bf16-model.py; ~45 MB, one call
#              carries at most 64 MiB); our f32 rows and torch's f32 rows both cast it up.
#   LOGDIR:    default $OUT (the device machine's returned folder); LOGDIR/summary.txt has one
#              line per step, every step's output is LOGDIR/<step>.log.
# The dependency prefix from .gpu/debs: scripts/gpu-env.sh.
# Environment: SP_GPU_JOBS (default 16), SP_BENCH_SECONDS (per row, default 2), SP_GPU_TORCH=0
# skips the PyTorch peer, SP_GPU_BUILD (default build-gpu-encoder).
set -uo pipefail
model=${1:?usage: scripts/gpu-encoder-bench.sh MODEL_DIR [LOGDIR]}
model=$(cd "$model" && pwd) || exit 2
log=${2:-${OUT:?usage: scripts/gpu-encoder-bench.sh MODEL_DIR [LOGDIR] (or set OUT)}}
mkdir -p "$log" && log=$(cd "$log" && pwd)
root=$(pwd)
[ -f CMakeLists.txt ] && [ -d src/backend ] || { echo "run from the repository root" >&2; exit 2; }
build=${SP_GPU_BUILD:-$root/build-gpu-encoder}
secs=${SP_BENCH_SECONDS:-2}
. "$root/scripts/gpu-env.sh"
note "INFO  $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
note "INFO  model $model ($(du -sh "$model" | cut -f1))"
configure "$build" 300 -DCMAKE_CUDA_ARCHITECTURES=90
step build 900 cmake --build "$build" -j "${SP_GPU_JOBS:-16}" --target bench_encoder streampool_cli streampool_cuda \
  || { note "RESULT FAIL (build)"; exit 1; }
export STREAMPOOL_BACKEND=cuda
step bench_encoder 900 "$build/bench/encoder" --backend cuda --model "$model" --duration "$secs" \
  --write-sentences "$log/sentences.txt"
grep -E "^(f32|bf16) " "$log/bench_encoder.log" | sed 's/^/      /' >>"$summary"
step run_encoder 600 "$build/streampool" run --backend cuda --model "$model" --inputs "$log/sentences.txt" \
  --threads 1,4,16 --duration 1 --no-progress
grep -E "^(threads|batched|batcher|result)" "$log/run_encoder.log" | sed 's/^/      /' >>"$summary"
if [ "${SP_GPU_TORCH:-1}" = 1 ] && [ -s "$log/sentences.txt" ]; then
  step torch_encoder 1200 python3 "$root/bench/torch/encoder_threads.py" --model "$model" \
    --inputs "$log/sentences.txt" --threads 1,2,4,8,16 --batches 32,256 --duration "$secs" --dtypes f32,bf16
  grep -E "^(f32|bf16) " "$log/torch_encoder.log" | sed 's/^/      /' >>"$summary"
fi
[ $failed = 0 ] && note "RESULT PASS" || note "RESULT FAIL"
exit $failed
