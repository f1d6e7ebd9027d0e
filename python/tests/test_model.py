"""Goal: Model.load / mlp_random / model(x) / forward compute what NumPy computes in float64
(f32: relative error <= 1e-5; bf16 weights and activations: <= 1e-2, f16: <= 2e-3), accept any array-like
input, and reject bad input with a clear exception, in Python before the C call where the
package can see it (dtype, shape, contiguity) and with the library's message otherwise.
Method: seeded PyTorch-style weights saved as safetensors with NumPy; random batches of 1..33
rows; NumPy arrays through model(x) and through forward() by DLPack (the host backend's device
memory is host memory, so CPU DLPack arrays are device arrays there); bad files, dtypes, shapes,
strides and closed handles.
"""
import numpy as np
import pytest

import streampool as sp
from conftest import BACKEND, DIMS, reference, rel_err, save_layers, write_safetensors


def test_load_matches_numpy(dev, layers, weights_path):
    m = sp.Model.load(dev, weights_path)
    assert (m.in_features, m.out_features, m.dtype) == (DIMS[0], DIMS[-1], "f32")
    rng = np.random.default_rng(1)
    for batch in (1, 2, 7, 33):
        x = rng.standard_normal((batch, DIMS[0]), dtype=np.float32)
        y = m(x)
        assert y.shape == (batch, DIMS[-1]) and y.dtype == np.float32
        err = rel_err(y, reference(layers, x))
        assert err <= 1e-5, f"batch {batch}: relative error {err:.3g} > 1e-5"


@pytest.mark.parametrize("dtype,alias,tol", [("bf16", "bfloat16", 1e-2), ("f16", np.float16, 2e-3)])
def test_load_16bit(dev, layers, weights_path, dtype, alias, tol):
    for name in (dtype, alias):
        m = sp.Model.load(dev, weights_path, dtype=name)
        assert m.dtype == dtype
        x = np.random.default_rng(2).standard_normal((5, DIMS[0]), dtype=np.float32)
        err = rel_err(m(x), reference(layers, x))
        assert err <= tol, f"{dtype} relative error {err:.3g} > {tol}"
        m.close()


def test_array_likes(dev, weights_path, layers):
    m = sp.Model.load(dev, weights_path)
    x = np.random.default_rng(3).standard_normal((3, DIMS[0]), dtype=np.float32)
    ref = m(x)
    with pytest.raises(sp.InvalidArgumentError, match="float64"):
        m(x.tolist())  # Python floats are float64: converting is the caller's choice
    assert np.array_equal(m(memoryview(x)), ref)  # a buffer
    wide = np.zeros((3, 2 * DIMS[0]), np.float32)
    wide[:, ::2] = x
    assert np.array_equal(m(wide[:, ::2]), ref)  # non-contiguous: copied

    class HasArray:
        def __array__(self, dtype=None, copy=None):
            return x

    assert np.array_equal(m(HasArray()), ref)


def test_mlp_random(dev):
    a = sp.Model.mlp_random(dev, [16, 8, 4], seed=7)
    b = sp.Model.mlp_random(dev, [16, 8, 4], seed=7)
    c = sp.Model.mlp_random(dev, [16, 8, 4], seed=8)
    x = np.ones((2, 16), np.float32)
    assert np.array_equal(a(x), b(x)) and not np.array_equal(a(x), c(x))
    assert "16->4" in repr(a)


@pytest.mark.parametrize("dims,match", [([16], "at least two"), ([16, 0], r"dims\[\] must be"),
                                        ([16, "8"], "must be an int")])
def test_mlp_random_bad(dev, dims, match):
    with pytest.raises(sp.InvalidArgumentError, match=match):
        sp.Model.mlp_random(dev, dims)


def test_load_bad(dev, tmp_path, layers):
    with pytest.raises(sp.InvalidArgumentError, match="dtype must be"):
        sp.Model.load(dev, "x", dtype="f8")
    with pytest.raises(sp.InvalidArgumentError, match="Device"):
        sp.Model.load("dev", "x")
    with pytest.raises(sp.StreampoolError, match="no_such_file"):
        sp.Model.load(dev, str(tmp_path / "no_such_file.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(sp.InvalidArgumentError) as e:
        sp.Model.load(dev, str(bad))
    assert e.value.message and "bad.safetensors" in str(e.value) or "JSON" in str(e.value)
    mismatch = tmp_path / "mismatch.safetensors"  # layer 2 expects 128 inputs, gets 5
    write_safetensors(str(mismatch), {"0.weight": layers[0][0], "0.bias": layers[0][1],
                                      "2.weight": np.zeros((4, 5), np.float32),
                                      "2.bias": np.zeros(4, np.float32)}, "0:linear relu 2:linear")
    with pytest.raises(sp.InvalidArgumentError, match="do not chain"):
        sp.Model.load(dev, str(mismatch))


def test_load_description(dev, tmp_path, layers):
    """A bare state dict is refused (nothing is guessed); arch= describes it, and a wrong arch=
    is named."""
    bare = str(tmp_path / "bare.safetensors")
    save_layers(bare, layers, describe=False)
    with pytest.raises(sp.InvalidArgumentError, match="no architecture given"):
        sp.Model.load(dev, bare)
    x = np.random.default_rng(3).uniform(-1, 1, (5, DIMS[0])).astype(np.float32)
    with sp.Model.load(dev, bare, arch="0:linear 1:relu 2:linear 3:relu 4:linear") as m:
        assert rel_err(m(x), reference(layers, x)) <= 1e-5
    with pytest.raises(sp.InvalidArgumentError, match="'bogus' is unknown"):
        sp.Model.load(dev, bare, arch="0:linear bogus")
    with pytest.raises(sp.InvalidArgumentError,
                       match=r"'4\.(weight|bias)' .* is not used by the description"):
        sp.Model.load(dev, bare, arch="0:linear 1:relu 2:linear 3:relu")
    with pytest.raises(sp.InvalidArgumentError, match="arch must be a str"):
        sp.Model.load(dev, bare, arch=3)


@pytest.mark.parametrize("x,match", [
    (np.zeros((2, DIMS[0]), np.float64), "dtype float64 is not float32"),
    (np.zeros((2, DIMS[0] + 1), np.float32), r"expected shape \[batch, 64\]"),
    (np.zeros(DIMS[0], np.float32), r"expected shape \[batch, 64\]"),
    (np.zeros((0, DIMS[0]), np.float32), "batch is 0"),
    (object(), "dtype object is not float32"),
])
def test_call_bad(dev, weights_path, x, match):
    m = sp.Model.load(dev, weights_path)
    with pytest.raises(sp.InvalidArgumentError, match=match):
        m(x)


def test_closed_model(dev, weights_path):
    m = sp.Model.load(dev, weights_path)
    m.close()
    m.close()
    with pytest.raises(sp.InvalidHandleError, match="closed"):
        m(np.zeros((1, DIMS[0]), np.float32))
    with sp.Model.load(dev, weights_path) as m2:
        pass
    assert m2._h is None
    m3 = sp.Model.load(dev, weights_path)
    dev.close()  # closes m3 too
    assert m3._h is None
    with pytest.raises(sp.InvalidHandleError, match="device is closed"):
        sp.Model.load(dev, weights_path)


@pytest.mark.skipif(BACKEND != "host", reason="CPU DLPack arrays are device arrays on host only")
def test_forward_dlpack_host(dev, weights_path, layers):
    m = sp.Model.load(dev, weights_path)
    x = np.random.default_rng(4).standard_normal((6, DIMS[0]), dtype=np.float32)
    y = np.full((6, DIMS[-1]), np.nan, np.float32)
    m.forward(x, y)
    assert rel_err(y, reference(layers, x)) <= 1e-5
    assert np.array_equal(y, m(x))
    y2 = np.zeros_like(y)
    m.forward(x, y2, sync=False)  # the host backend always waits: its inputs are host arrays
    assert np.array_equal(y2, y)


@pytest.mark.skipif(BACKEND != "host", reason="CPU DLPack arrays are device arrays on host only")
@pytest.mark.parametrize("xf,yf,match", [
    (lambda x: x.astype(np.float64), lambda y: y, "forward.x.: dtype .* not float32"),
    (lambda x: np.repeat(x, 2, axis=1)[:, ::2], lambda y: y, "C-contiguous"),
    (lambda x: x, lambda y: y[:, :-1].copy(), r"forward\(y\): expected \[6, 32\]"),
    (lambda x: x[:, :-1].copy(), lambda y: y, r"forward\(x\): expected \[batch, 64\]"),
    (lambda x: x.reshape(-1), lambda y: y, "2-D"),
    (lambda x: x.tolist(), lambda y: y, "DLPack"),
])
def test_forward_bad(dev, weights_path, xf, yf, match):
    m = sp.Model.load(dev, weights_path)
    x = np.zeros((6, DIMS[0]), np.float32)
    y = np.zeros((6, DIMS[-1]), np.float32)
    with pytest.raises(sp.InvalidArgumentError, match=match):
        m.forward(xf(x), yf(y))


@pytest.mark.skipif(BACKEND != "host", reason="host-only check")
def test_forward_readonly_output(dev, weights_path):
    m = sp.Model.load(dev, weights_path)
    y = np.zeros((1, DIMS[-1]), np.float32)
    y.flags.writeable = False
    with pytest.raises((BufferError, sp.InvalidArgumentError)):
        m.forward(np.zeros((1, DIMS[0]), np.float32), y)


def test_call_readonly_and_tiny_inputs(dev, tmp_path):
    """The pointer fast path (a writable buffer of >= 8 bytes) and its fallback agree."""
    layers = [(np.array([[2.0]], np.float32), np.array([0.5], np.float32))]
    p = str(tmp_path / "one.safetensors")
    save_layers(p, layers)
    m = sp.Model.load(dev, p)
    x = np.array([[3.0]], np.float32)  # 4 bytes: below the fast path's 8
    assert m(x)[0, 0] == 6.5
    x2 = np.array([[1.0], [2.0]], np.float32)
    x2.flags.writeable = False
    assert m(x2).tolist() == [[2.5], [4.5]]
    b = sp.Batcher(m)
    assert b(x[0])[0] == 6.5 and b(x2[1])[0] == 4.5
    b.close()
