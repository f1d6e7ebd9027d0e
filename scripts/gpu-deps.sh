#!/usr/bin/env bash
# Downloads the Debian packages the build needs on the GPU machine (which cannot install
# packages) into .gpu/debs, for scripts/gpu-check.sh to unpack into a private prefix there.
# Run HERE, from the repository root; .gpu/ is git-ignored and carried to the GPU machine.
# Runtime libraries only where a build or test loads them: cJSON, OpenBLAS (pthread flavour) with
# its Fortran runtime, cmocka, and pkgconf (CMake finds cJSON through pkg-config).
set -euo pipefail
dest=${1:-.gpu/debs}
pkgs=(libcjson1 libcjson-dev
      libopenblas0-pthread libopenblas-pthread-dev libopenblas-dev libopenblas0
      libgfortran5 libquadmath0
      libcmocka0 libcmocka-dev
      pkgconf pkgconf-bin libpkgconf3)
mkdir -p "$dest"
cd "$dest"
rm -f ./*.deb
apt-get download "${pkgs[@]}"
# What else they depend on that is not in the list (libc6, libgcc-s1 and friends are on every
# Debian/Ubuntu system and must not be shadowed, so they are only reported).
for p in "${pkgs[@]}"; do apt-cache depends --no-recommends --no-suggests "$p" 2>/dev/null |
  awk '/Depends:/{print $2}'; done | sort -u | while read -r d; do
  case " ${pkgs[*]} " in *" $d "*) ;; *) echo "not downloaded (assumed present): $d";; esac
done
ls -l
# pytest for the Python package's tests there (the GPU machine has torch and CuPy but no pip):
# pure-Python wheels unpacked into .gpu/pylib, put on PYTHONPATH by scripts/gpu-check.sh.
cd - >/dev/null
pylib=$(dirname "$dest")/pylib
rm -rf "$pylib" && mkdir -p "$pylib"
if python3 -m pip download --quiet --only-binary=:all: --python-version 3.10 -d "$pylib/wheels" \
    pytest exceptiongroup tomli >/dev/null 2>&1; then
  python3 -m pip install --quiet --no-deps --target "$pylib" "$pylib"/wheels/*.whl &&
    rm -rf "$pylib/wheels" && echo "pytest for the GPU machine in $pylib"
else
  echo "pip could not download pytest; the GPU check will skip the Python tests unless pytest is there"
fi
