#!/usr/bin/env bash
# Goal: the installed library is usable as a user would use it.
# Method: cmake --install the build into a temporary prefix, then build and run a tiny program
# against it twice: with find_package(streampool) and with pkg-config.
set -euo pipefail
build=$1; tmp=$2; here=$(cd "$(dirname "$0")" && pwd)
CMAKE=${CMAKE:-cmake}
rm -rf "$tmp"; mkdir -p "$tmp"
"$CMAKE" --install "$build" --prefix "$tmp/prefix" >/dev/null
"$CMAKE" -S "$here/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
"$CMAKE" --build "$tmp/consumer" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/consumer/consumer"
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig:$tmp/prefix/lib64/pkgconfig"
cc -std=c11 -o "$tmp/consumer_pc" "$here/consumer/main.c" $(pkg-config --cflags --libs streampool)
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/consumer_pc"
echo "install_consumer: find_package and pkg-config builds both ran"
