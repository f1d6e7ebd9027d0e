"""Seeded MLP weights as a safetensors file (a PyTorch nn.Sequential state dict: "0.weight",
"0.bias", "2.weight", ..., ReLU between layers, described in its metadata as streampool requires:
"streampool.arch": "0:linear 1:relu 2:linear ..."), written and read with NumPy alone, and the
float64 reference forward that checks the app's answers. Used by the examples and bench/serve_bench.py."""
from __future__ import annotations

import json
import struct
from typing import Dict, List, Sequence, Tuple

import numpy as np

Layers = List[Tuple[np.ndarray, np.ndarray]]
_F64: Dict[int, Tuple[Layers, Layers]] = {}


def write_layers(path: str, dims: Sequence[int], seed: int = 1) -> Layers:
    """Linear layers dims[0] -> dims[1] -> ..., uniform in +-1/sqrt(in) as PyTorch initializes
    them, saved to path; returns them."""
    rng = np.random.default_rng(seed)
    n = len(dims) - 1
    arch = " ".join(f"{2 * k}:linear" + (f" {2 * k + 1}:relu" if k + 1 < n else "") for k in range(n))
    layers, header, blobs, off = [], {"__metadata__": {"streampool.arch": arch}}, [], 0
    for k in range(len(dims) - 1):
        bound = 1.0 / np.sqrt(dims[k])
        w = rng.uniform(-bound, bound, (dims[k + 1], dims[k])).astype("<f4")
        b = rng.uniform(-bound, bound, (dims[k + 1],)).astype("<f4")
        layers.append((w, b))
        for name, a in ((f"{2 * k}.weight", w), (f"{2 * k}.bias", b)):
            header[name] = {"dtype": "F32", "shape": list(a.shape),
                            "data_offsets": [off, off + a.nbytes]}
            blobs.append(a.tobytes())
            off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return layers


def read_layers(path: str) -> Layers:
    """The layers of a float32 safetensors file written by write_layers (or by PyTorch)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n

    def tensor(name: str) -> np.ndarray:
        t = header[name]
        lo, hi = t["data_offsets"]
        return np.frombuffer(data[base + lo:base + hi], dtype="<f4").reshape(t["shape"])

    ks = sorted(int(k.split(".")[0]) for k in header if k.endswith(".weight") and k[0].isdigit())
    return [(tensor(f"{k}.weight"), tensor(f"{k}.bias")) for k in ks]


def reference(layers: Layers, x: np.ndarray) -> np.ndarray:
    """The float64 forward (the weights converted once per layers list, then cached)."""
    key = id(layers)
    if _F64.get(key, (None,))[0] is not layers:
        _F64[key] = (layers, [(w.astype(np.float64).T.copy(), b.astype(np.float64))
                              for w, b in layers])
    a = np.asarray(x, dtype=np.float64)
    for k, (w, b) in enumerate(_F64[key][1]):
        a = a @ w + b
        if k + 1 < len(layers):
            a = np.maximum(a, 0.0)
    return a


def close_to_reference(layers: Layers, x: np.ndarray, y: np.ndarray, tol: float = 1e-5) -> bool:
    """max |y - ref| / max |ref| <= tol (f32 weights)."""
    ref = reference(layers, x)
    y = np.asarray(y, dtype=np.float64).reshape(ref.shape)
    return float(np.max(np.abs(y - ref)) / max(float(np.max(np.abs(ref))), 1e-30)) <= tol
