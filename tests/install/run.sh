#!/usr/bin/env bash
# Goal: the installed library is usable as a user would use it, where it lands: the installed
# CLI and programs linked through find_package or pkg-config run without LD_LIBRARY_PATH; static
# linking works through CMake (streampool::streampool_static) and pkg-config (--static); the
# shared library links no CUDA library, and with the CUDA module gone (a machine without CUDA)
# it still opens the host backend and says why cuda is unavailable.
# Method: cmake --install the build into a temporary prefix; build tests/install/consumer (a
# copy through device memory) each way and run it with no LD_LIBRARY_PATH entry for the prefix; ldd shows which
# libraries are linked; then move libstreampool_cuda.so away and run the CLI and the consumer.
set -euo pipefail
build=$1; tmp=$2; here=$(cd "$(dirname "$0")" && pwd)
CMAKE=${CMAKE:-cmake}
rm -rf "$tmp"; mkdir -p "$tmp"
"$CMAKE" --install "$build" --prefix "$tmp/prefix" >/dev/null
prefix=$tmp/prefix
libdir=$prefix/lib; [ -e "$libdir/libstreampool.so" ] || libdir=$prefix/lib64
fail() { echo "install_consumer: FAILED: $*"; exit 1; }
# Run as a user would: nothing points the loader at the prefix (an inherited LD_LIBRARY_PATH may
# name where cJSON or OpenBLAS live, as on the GPU machine's private prefix, never this prefix).
case ":${LD_LIBRARY_PATH:-}:" in *":$tmp/"*) fail "LD_LIBRARY_PATH already names $tmp";; esac
norun() { "$@"; }

# The shared library itself links no CUDA library (the CUDA backend is a module).
if ldd "$libdir/libstreampool.so" | grep -E 'libcudart|libcublas|libcuda\.'; then
  fail "libstreampool.so links CUDA libraries"
fi
# The installed CLI.
norun "$prefix/bin/streampool" info >"$tmp/info.txt" 2>&1 || { cat "$tmp/info.txt"; fail "installed streampool info"; }
grep -q "host:0" "$tmp/info.txt" || { cat "$tmp/info.txt"; fail "installed CLI lists no host device"; }

# find_package: shared and static.
"$CMAKE" -S "$here/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
"$CMAKE" --build "$tmp/consumer" >/dev/null
norun "$tmp/consumer/consumer"
norun "$tmp/consumer/consumer_static"
if ldd "$tmp/consumer/consumer_static" | grep -q libstreampool; then fail "consumer_static links libstreampool.so"; fi

# pkg-config: shared (Libs carries the rpath) and static (Libs.private lists the rest).
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c11 -o "$tmp/consumer_pc" "$here/consumer/main.c" $(pkg-config --cflags --libs streampool)
norun "$tmp/consumer_pc"
cc -std=c11 -o "$tmp/consumer_pc_static" "$here/consumer/main.c" \
  $(pkg-config --cflags --libs-only-L streampool) -Wl,-Bstatic -lstreampool -Wl,-Bdynamic \
  $(pkg-config --static --libs streampool)
norun "$tmp/consumer_pc_static"
if ldd "$tmp/consumer_pc_static" | grep -q libstreampool; then fail "consumer_pc_static links libstreampool.so"; fi

# No CUDA at run time: the module hidden, as on a machine where it (or CUDA) is absent.
if [ -e "$libdir/libstreampool_cuda.so" ]; then
  mv "$libdir/libstreampool_cuda.so" "$tmp/libstreampool_cuda.so.hidden"
  norun "$prefix/bin/streampool" info >"$tmp/info_nocuda.txt" 2>&1 || { cat "$tmp/info_nocuda.txt"; fail "CLI without the CUDA module"; }
  grep -q "cuda  unavailable: .*CUDA backend module cannot be loaded" "$tmp/info_nocuda.txt" ||
    { cat "$tmp/info_nocuda.txt"; fail "no clear 'cuda unavailable' message"; }
  grep -q "host:0" "$tmp/info_nocuda.txt" || fail "no host device without the CUDA module"
  norun "$tmp/consumer/consumer"
  if norun "$prefix/bin/streampool" run --backend cuda --duration 0.1 --threads 1 --no-progress >"$tmp/run_nocuda.txt" 2>&1; then
    fail "run --backend cuda succeeded without the CUDA module"
  fi
  grep -q "unavailable" "$tmp/run_nocuda.txt" || { cat "$tmp/run_nocuda.txt"; fail "run --backend cuda: no reason given"; }
  mv "$tmp/libstreampool_cuda.so.hidden" "$libdir/libstreampool_cuda.so"
  echo "install_consumer: without the CUDA module: $(grep 'cuda  unavailable' "$tmp/info_nocuda.txt" | sed 's/^ *//')"
else
  echo "skipped: the no-CUDA-at-run-time case (this build has no CUDA module)"
fi
echo "install_consumer: installed CLI, find_package (shared, static) and pkg-config (shared, static) all ran without LD_LIBRARY_PATH"
