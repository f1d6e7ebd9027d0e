"""Shared fixtures: a host device, MLP weights written as safetensors with NumPy alone, and the
double-precision NumPy reference forward of the same weights.

The suite runs on the host backend by default (CI has no GPU); STREAMPOOL_TEST_BACKEND=cuda runs
the device-independent tests on CUDA too (scripts/gpu-check.sh). Goal and Method are stated at
the top of each test file.
"""
from __future__ import annotations

import json
import os
import struct
from typing import List, Tuple

import numpy as np
import pytest

import streampool as sp

BACKEND = os.environ.get("STREAMPOOL_TEST_BACKEND", "host")
Layers = List[Tuple[np.ndarray, np.ndarray]]


def linear_params(rng: np.random.Generator, n_in: int, n_out: int):
    bound = 1.0 / np.sqrt(n_in)
    w = rng.uniform(-bound, bound, size=(n_out, n_in)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(n_out,)).astype(np.float32)
    return w, b


def make_layers(dims, seed: int) -> Layers:
    rng = np.random.default_rng(seed)
    return [linear_params(rng, dims[k], dims[k + 1]) for k in range(len(dims) - 1)]


def write_safetensors(path: str, tensors: dict, arch: str = None) -> None:
    """The safetensors format: u64 LE header length, JSON header (name -> dtype, shape,
    data_offsets; "__metadata__" {"streampool.arch": arch} when arch is given), raw little-endian
    data; written with NumPy and the standard library only."""
    header, blobs, off = ({"__metadata__": {"streampool.arch": arch}} if arch else {}), [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def relu_arch(n_layers: int) -> str:
    """The description of nn.Sequential(Linear, ReLU, ..., Linear): "0:linear 1:relu 2:linear"."""
    return " ".join(f"{2 * k}:linear" + (" relu" if k + 1 < n_layers else "") for k in range(n_layers))


def save_layers(path: str, layers: Layers, describe: bool = True) -> None:
    t = {}
    for k, (w, b) in enumerate(layers):  # nn.Sequential names: 0, 2, 4 (ReLUs between)
        t[f"{2 * k}.weight"], t[f"{2 * k}.bias"] = w, b
    write_safetensors(path, t, relu_arch(len(layers)) if describe else None)


def reference(layers: Layers, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    for k, (w, b) in enumerate(layers):
        a = a @ w.astype(np.float64).T + b.astype(np.float64)
        if k + 1 < len(layers):
            a = np.maximum(a, 0.0)
    return a


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    """max |y - ref| / max |ref| (the measure tests/python/crosscheck.py uses)."""
    return float(np.max(np.abs(y.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


DIMS = [64, 128, 96, 32]


@pytest.fixture
def dev():
    with sp.Device(BACKEND) as d:
        yield d


@pytest.fixture(scope="session")
def layers() -> Layers:
    return make_layers(DIMS, 20261201)


@pytest.fixture
def weights_path(tmp_path, layers) -> str:
    p = str(tmp_path / "mlp.safetensors")
    save_layers(p, layers)
    return p
