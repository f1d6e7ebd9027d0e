#!/usr/bin/env bash
# Goal (issue 11 item 1): a model is what its description says, checked against PyTorch's own
# outputs: MLPs with GELU (erf and tanh), SiLU, Tanh, ReLU, Dropout, LayerNorm (default and
# eps=1e-6, after an activation or right after a Linear), Linear without bias and F16 weights,
# described by their safetensors __metadata__ or by a config.json beside the file, match PyTorch
# (f32 within 1e-5 of PyTorch's f32 outputs, bf16 within 1e-2 of PyTorch's bf16 outputs) through
# `streampool check`, which prints the chain it built.
# A mislabelled MLP can no longer pass: the bare state dict of a GELU MLP is refused (exit 1,
# saying how to describe it); described as ReLU with --arch, check against PyTorch's outputs
# fails (exit 1, FAILED); with its true --arch it matches; `run` prints the chain it runs.
# Method: tests/fixtures/mlp/ (written once by scripts/make_mlp_fixtures.py with torch 2.15 and
# safetensors' own writer; CI has no torch), the CLI ($1) on the host backend.
. "$(dirname "$0")/../common/cli.sh" "$1"
fx=$(cd "$(dirname "$0")/../fixtures/mlp" && pwd)
h=(--backend host)

# check_model NAME CHAIN [ARGS...]: f32 and bf16 within the default tolerances, chain printed.
check_model() {
  local name=$1 chain=$2
  shift 2
  for dt in f32 bf16; do
    local want=$fx/$name.out.f32
    [ $dt = bf16 ] && want=$fx/$name.out_bf16.f32
    "$cli" check "${h[@]}" --model "$fx/$name.safetensors" --inputs "$fx/$name.in.f32" \
      --expect "$want" --dtype $dt "$@" >"$tmp/out" 2>&1
    local rc=$?
    [ $rc -eq 0 ] && grep -qF "model: $chain" "$tmp/out" && grep -q ": ok$" "$tmp/out"
    local ok=$?
    [ $ok -eq 0 ] || { echo "  rc $rc:"; sed 's/^/  /' "$tmp/out"; }
    check "$name $dt matches PyTorch ($chain)" $ok
  done
}

check_model gelu "Linear(16->32) GELU -> Linear(32->8)"
check_model gelu_tanh_ln "Linear(16->24) GELU(tanh) -> LayerNorm(24, eps=1e-05) -> Linear(24->8)"
check_model silu_nobias "Linear(16->32, no bias) SiLU -> Linear(32->8, no bias)"
check_model tanh_f16 "Linear(12->20) Tanh -> Linear(20->20) Tanh -> Linear(20->6)"
check_model relu_ln_eps "Linear(16->32) ReLU -> LayerNorm(32, eps=1e-06) -> Linear(32->4)"
check_model linear_ln "Linear(10->16) -> LayerNorm(16, eps=1e-05) -> Linear(16->16) -> Linear(16->3)"

# The Hugging Face folder layout: the description in config.json beside model.safetensors.
"$cli" check "${h[@]}" --model "$fx/hf/model.safetensors" --inputs "$fx/gelu_tanh_ln.in.f32" \
  --expect "$fx/gelu_tanh_ln.out.f32" >"$tmp/out" 2>&1
rc=$?; [ $rc -eq 0 ] && grep -q "GELU(tanh) -> LayerNorm(24" "$tmp/out"
check "described by config.json: matches PyTorch (rc $rc)" $?

# The mislabelled MLP (the bug of issue 11): a GELU MLP's bare state dict.
bare=(--model "$fx/gelu_bare.safetensors" --inputs "$fx/gelu.in.f32" --expect "$fx/gelu.out.f32")
"$cli" check "${h[@]}" "${bare[@]}" >"$tmp/out" 2>"$tmp/err"
rc=$?; [ $rc -eq 1 ] && [ ! -s "$tmp/out" ] && grep -q "no architecture given" "$tmp/err" &&
  grep -q -- "--arch" "$tmp/err" && grep -q "streampool.arch" "$tmp/err"
check "a bare state dict is refused, saying how to describe it (rc $rc)" $?
"$cli" run "${h[@]}" --model "$fx/gelu_bare.safetensors" --duration 0.05 --threads 1 \
  --no-progress >"$tmp/out" 2>"$tmp/err"
rc=$?; [ $rc -ne 0 ] && ! grep -q "result: OK" "$tmp/out" && grep -q "no architecture given" "$tmp/err"
check "run refuses the bare state dict too, no 'result: OK' (rc $rc)" $?
"$cli" check "${h[@]}" "${bare[@]}" --arch "0:linear 1:relu 2:linear" >"$tmp/out" 2>&1
rc=$?; [ $rc -eq 1 ] && grep -q "FAILED" "$tmp/out" && grep -q "model: Linear(16->32) ReLU" "$tmp/out"
check "described as ReLU, it fails against PyTorch (rc $rc)" $?
"$cli" check "${h[@]}" "${bare[@]}" --arch "0:linear 1:gelu 2:linear" >"$tmp/out" 2>&1
rc=$?; [ $rc -eq 0 ] && grep -q ": ok$" "$tmp/out"; check "with its true --arch it matches (rc $rc)" $?
"$cli" check "${h[@]}" --model "$fx/gelu.safetensors" --inputs "$fx/gelu.in.f32" \
  --expect "$fx/gelu.out.f32" --arch "0:linear 1:gelu" >"$tmp/out" 2>&1
rc=$?; [ $rc -eq 1 ] && grep -q "'2.bias' \[8\] is not used by the description: it is the bias of a Linear" "$tmp/out"
check "--arch overrides the metadata; an unused tensor is refused by name (rc $rc)" $?
"$cli" check "${h[@]}" "${bare[@]}" --arch "0:linear 1:bogus 2:linear" >"$tmp/out" 2>&1
rc=$?; [ $rc -eq 1 ] && grep -q "item 2: 'bogus' is unknown" "$tmp/out"
check "a bad --arch is named (rc $rc)" $?

# run prints the chain it runs and checks it against its own single-threaded reference.
"$cli" run "${h[@]}" --model "$fx/gelu_tanh_ln.safetensors" --duration 0.05 --threads 1 \
  --no-progress >"$tmp/out" 2>&1
rc=$?; [ $rc -eq 0 ] && grep -q "model: .*gelu_tanh_ln.safetensors: Linear(16->24) GELU(tanh) -> LayerNorm(24" "$tmp/out"
check "run prints the chain (rc $rc)" $?
"$cli" run "${h[@]}" --duration 0.05 --threads 1 --no-progress >"$tmp/out" 2>&1
grep -q "built-in seeded MLP (seed 1): Linear(512->1024) ReLU -> Linear(1024->1024) ReLU -> Linear(1024->512)" "$tmp/out"
check "run prints the built-in model's chain" $?
"$cli" run "${h[@]}" --arch "0:linear" --duration 0.05 >"$tmp/out" 2>&1
rc=$?; [ $rc -eq 2 ]; check "run --arch without --model is a usage error (rc $rc)" $?

# A torch.save zip file is named as what it is.
printf 'PK\003\004rest-of-a-zip' >"$tmp/model.pt"
"$cli" check "${h[@]}" --model "$tmp/model.pt" --inputs "$fx/gelu.in.f32" --expect "$fx/gelu.out.f32" \
  >"$tmp/out" 2>&1
grep -q "torch.save zip archive" "$tmp/out"; check "a torch.save zip is named" $?
exit $fail
