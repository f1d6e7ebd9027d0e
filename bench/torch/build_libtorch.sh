#!/usr/bin/env bash
# Builds bench/torch/libtorch_mlp.cpp against the libtorch inside the installed PyTorch (pip or
# conda): headers and libraries from torch's own folder, the CUDA runtime headers from the
# toolkit or from the pip nvidia-* packages, the C++ ABI flag torch was built with.
# usage: bench/torch/build_libtorch.sh [OUT]   (default: build/libtorch_mlp)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/libtorch_mlp}
python=${PYTHON:-python3}
torch_dir=$("$python" -c "import torch, os; print(os.path.dirname(torch.__file__))")
abi=$("$python" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
site=$(dirname "$torch_dir")
inc=(-I"$torch_dir/include" -I"$torch_dir/include/torch/csrc/api/include")
for d in /usr/local/cuda/include "$site"/nvidia/*/include; do
  [ -d "$d" ] && inc+=(-I"$d")
done
# The CUDA runtime the program calls directly (cudaStreamWaitEvent...): the one torch ships with
# (pip nvidia-* packages), else the toolkit's.
cudart=$(ls "$site"/nvidia/*/lib/libcudart.so* /usr/local/cuda/lib64/libcudart.so 2>/dev/null | head -1)
[ -n "$cudart" ] || { echo "build_libtorch: no libcudart found" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
set -x
${CXX:-g++} -O2 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI="$abi" "${inc[@]}" "$here/libtorch_mlp.cpp" \
  -o "$out" -L"$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" \
  -Wl,--no-as-needed -ltorch_cuda -ltorch -Wl,--as-needed -ltorch_cpu -lc10_cuda -lc10 \
  "$cudart" -Wl,-rpath,"$(dirname "$cudart")" -lpthread
