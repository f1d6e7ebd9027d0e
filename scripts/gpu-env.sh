# Sourced by the GPU scripts (gpu-check.sh, gpu-encoder-bench.sh, gpu-linear.sh, gpu-nn-check.sh)
# after they set root (the repository root) and log (their LOGDIR): an empty LOGDIR/summary.txt
# ($summary); note and step (one line per step in the summary, each step's output in
# LOGDIR/NAME.log; step sets failed=1 on a failure); configure BUILD TIMEOUT [CMAKE_ARGS...] (the
# CUDA RelWithDebInfo build tree, Ninja when there is one; the script ends on a failure); then the
# private dependency prefix. The GPU machine cannot install
# packages: .gpu/debs (from scripts/gpu-deps.sh) is unpacked with dpkg -x into .gpu/prefix (never
# into /), and CMake, pkg-config and the loader are pointed at it; without .gpu/debs the system's
# packages are used. CUDA's bin goes on PATH.
summary=$log/summary.txt
: >"$summary"
failed=0
note() { echo "$*" | tee -a "$summary"; }
step() { # step NAME TIMEOUT CMD...: runs CMD with its output in LOGDIR/NAME.log
  local name=$1 to=$2; shift 2
  local t0=$SECONDS rc
  timeout "$to" "$@" >"$log/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then note "PASS  $name ($((SECONDS - t0)) s)"
  else note "FAIL  $name rc=$rc ($((SECONDS - t0)) s), see $name.log"; failed=1; fi
  return $rc
}
configure() { # configure BUILD TIMEOUT [CMAKE_ARGS...]
  local build=$1 to=$2 gen=()
  shift 2
  command -v ninja >/dev/null && gen=(-G Ninja)
  step configure "$to" cmake -S "$root" -B "$build" "${gen[@]}" -DSP_CUDA=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" || { note "RESULT FAIL (configure)"; exit 1; }
}

prefix=$root/.gpu/prefix
multi=x86_64-linux-gnu
if ls "$root"/.gpu/debs/*.deb >/dev/null 2>&1; then
  rm -rf "$prefix" && mkdir -p "$prefix"
  for d in "$root"/.gpu/debs/*.deb; do dpkg -x "$d" "$prefix"; done
  # .pc files name /usr; point them at the prefix.
  for pc in "$prefix"/usr/lib/$multi/pkgconfig/*.pc "$prefix"/usr/lib/$multi/openblas-pthread/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -i "s|=/usr|=$prefix/usr|g; s|-I/usr|-I$prefix/usr|g; s|-L/usr|-L$prefix/usr|g" "$pc"
  done
  # the alternatives symlinks a real install would create
  ln -sf openblas-pthread/libopenblas.so.0 "$prefix/usr/lib/$multi/libopenblas.so.0"
  ln -sf openblas-pthread/libopenblas.so "$prefix/usr/lib/$multi/libopenblas.so"
  export PATH=$prefix/usr/bin:$PATH
  [ -x "$prefix/usr/bin/pkg-config" ] || ln -sf pkgconf "$prefix/usr/bin/pkg-config"
  # LIBDIR, not PATH: a script that sets its own PKG_CONFIG_PATH (tests/install/run.sh) must still
  # find cJSON (streampool.pc requires it) in the search path that replaces pkgconf's default.
  export PKG_CONFIG_LIBDIR=$prefix/usr/lib/$multi/pkgconfig:$prefix/usr/share/pkgconfig:/usr/lib/$multi/pkgconfig:/usr/lib/pkgconfig:/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$prefix/usr/lib/$multi:$prefix/usr/lib/$multi/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CMAKE_PREFIX_PATH=$prefix/usr
  export CMAKE_LIBRARY_PATH=$prefix/usr/lib/$multi/openblas-pthread:$prefix/usr/lib/$multi
  export CMAKE_INCLUDE_PATH=$prefix/usr/include/$multi/openblas-pthread:$prefix/usr/include
  note "INFO  dependencies from .gpu/debs unpacked into $prefix"
else
  note "INFO  no .gpu/debs: using system packages"
fi
export PATH=/usr/local/cuda/bin:$PATH
