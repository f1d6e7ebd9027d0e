#!/usr/bin/env bash
# Builds bench/torch/torch_alloc against the installed PyTorch's libc10_cuda.
# Usage: bench/torch/build.sh OUTDIR. Prints "skipped: ..." and exits 0 when PyTorch (with CUDA)
# is absent. CUDA headers: $CUDA_HOME/include (default /usr/local/cuda).
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
tdir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null) || {
  echo "torch_alloc: skipped: PyTorch is not installed for python3"; exit 0; }
if ! ls "$tdir"/lib/libc10_cuda.so >/dev/null 2>&1; then
  echo "torch_alloc: skipped: $tdir/lib has no libc10_cuda.so (a CPU-only PyTorch)"; exit 0
fi
abi=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
cuda=${CUDA_HOME:-/usr/local/cuda}
echo "torch_alloc: torch $(python3 -c 'import torch; print(torch.__version__, torch.version.cuda)') at $tdir, cxx11 abi $abi"
${CXX:-g++} -O2 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI="$abi" \
  -I"$tdir/include" -I"$cuda/include" "$here/torch_alloc.cpp" \
  -L"$tdir/lib" -Wl,-rpath,"$tdir/lib" -lc10_cuda -lc10 -pthread -o "$out/torch_alloc"
echo "torch_alloc: built $out/torch_alloc"
