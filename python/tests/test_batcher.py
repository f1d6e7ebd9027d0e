"""Goal: Batcher answers each row with what the model computes for it, takes options, reports
stats, and rejects bad rows and options with clear exceptions.
Method: rows through the batcher compared to model(x) on the same rows (the same kernels: exact)
and to the float64 NumPy reference; stats counted; wrong dtype, shape and types; closed batcher.
"""
import numpy as np
import pytest

import streampool as sp
from conftest import DIMS, reference, rel_err


def test_batcher_rows(dev, weights_path, layers):
    m = sp.Model.load(dev, weights_path)
    with sp.Batcher(m, max_batch=8, max_delay_us=50, workers=2) as b:
        x = np.random.default_rng(5).standard_normal((10, DIMS[0]), dtype=np.float32)
        for i in range(10):
            y = b(x[i])
            assert y.shape == (DIMS[-1],)
            assert rel_err(y[None, :], reference(layers, x[i:i + 1])) <= 1e-5
        assert np.allclose(b(x[:1]), m(x[:1])[0], rtol=1e-6, atol=1e-6)
        st = b.stats()
        assert st["requests"] == 11 and st["batches"] >= 1 and st["failed"] == 0
        assert set(st) == {"requests", "batches", "failed", "queued", "fill_ns", "run_ns",
                           "answer_ns"}
    with pytest.raises(sp.InvalidHandleError, match="closed"):
        b(x[0])
    with pytest.raises(sp.InvalidHandleError):
        b.stats()


@pytest.mark.parametrize("row,match", [
    (np.zeros(DIMS[0], np.float64), "float64 is not float32"),
    (np.zeros(DIMS[0] + 1, np.float32), r"expected shape \[64\]"),
    (np.zeros((2, DIMS[0]), np.float32), r"expected shape \[64\]"),
])
def test_batcher_bad_rows(dev, weights_path, row, match):
    m = sp.Model.load(dev, weights_path)
    b = sp.Batcher(m)
    with pytest.raises(sp.InvalidArgumentError, match=match):
        b(row)
    b.close()


def test_batcher_bad_options(dev, weights_path):
    m = sp.Model.load(dev, weights_path)
    with pytest.raises(sp.InvalidArgumentError, match="Model"):
        sp.Batcher("model")
    with pytest.raises(sp.InvalidArgumentError, match="max_batch"):
        sp.Batcher(m, max_batch=-1)
    with pytest.raises(sp.InvalidArgumentError, match="workers must be an int"):
        sp.Batcher(m, workers=1.5)
    m.close()
    with pytest.raises(sp.InvalidHandleError, match="model is closed"):
        sp.Batcher(m)


def test_device_close_closes_batcher(weights_path):
    dev = sp.Device("host")
    b = sp.Batcher(sp.Model.load(dev, weights_path))
    b(np.zeros(DIMS[0], np.float32))
    dev.close()
    assert b._h is None and b.model._h is None
