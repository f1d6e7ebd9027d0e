#!/usr/bin/env bash
# PyTorch cross-check (GPU machine, or any machine with torch): export a seeded MLP with PyTorch's
# outputs, then `streampool check` our loader and kernels against them:
#   f32 (TF32 off)                 relative error <= 1e-5
#   bf16 (model and input in bf16) relative error <= 1e-2, from the F32 file and from a BF16 file
# for the ReLU MLP, then for GELU + LayerNorm, GELU(tanh), SiLU without bias and Tanh variants
# (each file describes itself; the chain `check` prints must be the exported one)
# usage: scripts/torch_check.sh [BUILD_DIR] [BACKEND]   (backend default: auto = cuda if present)
set -euo pipefail
build=${1:-build}
backend=${2:-auto}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "skipped: no torch for $python"
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$python" "$here/torch_export.py" --out "$dir"
cli="$build/streampool"
io=(--inputs "$dir/inputs.f32" --backend "$backend")
fail=0
"$cli" check --model "$dir/model.safetensors" "${io[@]}" --expect "$dir/out_f32.f32" --dtype f32 --tol 1e-5 || fail=1
"$cli" check --model "$dir/model.safetensors" "${io[@]}" --expect "$dir/out_bf16.f32" --dtype bf16 --tol 1e-2 || fail=1
"$cli" check --model "$dir/model_bf16.safetensors" "${io[@]}" --expect "$dir/out_bf16.f32" --dtype bf16 --tol 1e-2 || fail=1
"$cli" check --model "$dir/model.safetensors" "${io[@]}" --expect "$dir/out_f64.f32" --dtype f32 --tol 1e-5 || fail=1
for variant in "--act gelu --layernorm" "--act gelu_tanh" "--act silu --no-bias" "--act tanh"; do
  v="$dir/variant"
  rm -rf "$v"
  # shellcheck disable=SC2086
  "$python" "$here/torch_export.py" --out "$v" --dims 256,512,512,128 $variant
  vio=(--inputs "$v/inputs.f32" --backend "$backend")
  "$cli" check --model "$v/model.safetensors" "${vio[@]}" --expect "$v/out_f32.f32" --dtype f32 --tol 1e-5 || fail=1
  "$cli" check --model "$v/model.safetensors" "${vio[@]}" --expect "$v/out_bf16.f32" --dtype bf16 --tol 2e-2 || fail=1 # two bf16 runs: 2x
done
[ $fail -eq 0 ] && echo "torch_check: OK" || echo "torch_check: FAILED"
exit $fail
