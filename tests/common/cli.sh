# The shared start of the CLI tests (tests/cli/*.sh), sourced with the CLI's path as $1:
# strict pipes, $cli, a temporary folder $tmp removed at exit, fail=0, and `check NAME RC`
# (prints ok/FAILED and sets fail=1 on a non-zero RC). Each test ends with `exit $fail`.
set -uo pipefail
cli=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # name, condition result
  if [ "$2" -ne 0 ]; then echo "FAILED: $1"; fail=1; else echo "ok: $1"; fi
}
