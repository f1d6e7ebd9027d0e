#!/usr/bin/env bash
# The correctness half of scripts/gpu-linear.sh alone (no benchmarks): build the two linear tests,
# run them with CUDA required, then under compute-sanitizer memcheck.  Usage: as gpu-linear.sh.
exec env SP_GPU_LINEAR_BENCH=0 bash "$(dirname "$0")/gpu-linear.sh" "$@"
