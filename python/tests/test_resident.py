"""Goal: Resident(model).forward(x, y) gives the model's own forward for one row (the host
backend: bit for bit, being the same kernels; CUDA: within f32 rounding of the NumPy float64
reference), from several threads at once without mixing rows, and refuses what it cannot run
(a LayerNorm model, wrong shapes, a closed resident) with the library's message.
Method: the seeded MLP of conftest as safetensors; rows through forward() against model(x) and
the float64 reference; four threads each forwarding its own rows; bad shapes and models. On CUDA
(STREAMPOOL_TEST_BACKEND=cuda) the arrays are CuPy or torch CUDA arrays, else the test skips.
"""
import threading

import numpy as np
import pytest

import streampool as sp
from conftest import BACKEND, DIMS, reference, rel_err, write_safetensors


def _arrays():
    """(to_device, to_host) for the backend's device arrays."""
    if BACKEND != "cuda":
        return (lambda a: a), (lambda a: a)
    try:
        import cupy as cp
        return cp.asarray, cp.asnumpy
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            return (lambda a: torch.from_numpy(a).cuda()), (lambda t: t.cpu().numpy())
    except ImportError:
        pass
    pytest.skip("skipped: no CuPy or torch with CUDA for device arrays")


def test_matches_model(dev, weights_path, layers):
    to_dev, to_host = _arrays()
    m = sp.Model.load(dev, weights_path)
    r = sp.Resident(m)
    rng = np.random.default_rng(5)
    y = to_dev(np.zeros((1, DIMS[-1]), np.float32))
    for _ in range(3):
        x = rng.standard_normal((1, DIMS[0]), dtype=np.float32)
        r.forward(to_dev(x), y)
        got, want = to_host(y), m(x)
        if BACKEND == "host":
            assert np.array_equal(got, want), "the host resident is the model's forward"
        err = rel_err(got, reference(layers, x))
        assert err <= 1e-5, f"relative error {err:.3g} > 1e-5"
    st = r.stats()
    assert st["forwards"] == 3 and (st["launches"] == 0 if BACKEND == "host" else st["launches"] >= 1)
    r.close()
    r.close()  # idempotent
    with pytest.raises(sp.StreampoolError):
        r.forward(to_dev(np.zeros((1, DIMS[0]), np.float32)),
                  to_dev(np.zeros((1, DIMS[-1]), np.float32)))


def test_threads(dev, weights_path):
    to_dev, to_host = _arrays()
    m = sp.Model.load(dev, weights_path)
    r = sp.Resident(m)
    rows = np.random.default_rng(6).standard_normal((8, DIMS[0]), dtype=np.float32)
    want = m(rows)
    bad = []

    def caller(k):
        y = to_dev(np.zeros((1, DIMS[-1]), np.float32))
        for i in range(50):
            j = (k + i) % len(rows)
            r.forward(to_dev(rows[j:j + 1]), y)
            if rel_err(to_host(y), want[j:j + 1].astype(np.float64)) > 1e-5:
                bad.append((k, i, j))

    ts = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad, f"rows mixed up: {bad[:3]}"
    m.close()  # closes the resident first
    assert r._h is None and m._h is None


def test_refusals(dev, weights_path, tmp_path):
    to_dev, _ = _arrays()
    m = sp.Model.load(dev, weights_path)
    r = sp.Resident(m)
    with pytest.raises(sp.InvalidArgumentError, match=r"forward\(x\): expected"):
        r.forward(to_dev(np.zeros((2, DIMS[0]), np.float32)),
                  to_dev(np.zeros((1, DIMS[-1]), np.float32)))
    with pytest.raises(sp.InvalidArgumentError, match=r"forward\(y\): expected"):
        r.forward(to_dev(np.zeros((1, DIMS[0]), np.float32)), to_dev(np.zeros((1, 3), np.float32)))
    with pytest.raises(sp.InvalidArgumentError, match="Model"):
        sp.Resident("not a model")
    rng = np.random.default_rng(7)
    p = str(tmp_path / "ln.safetensors")
    write_safetensors(p, {"a.weight": rng.standard_normal((8, 4)), "a.bias": np.zeros(8),
                          "n.weight": np.ones(8), "n.bias": np.zeros(8),
                          "b.weight": rng.standard_normal((2, 8)), "b.bias": np.zeros(2)},
                      "a:linear relu n:layernorm b:linear")
    ln = sp.Model.load(dev, p)
    with pytest.raises(sp.UnsupportedError, match="LayerNorm"):
        sp.Resident(ln)
