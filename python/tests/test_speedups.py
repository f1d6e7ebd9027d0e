"""Goal: the extension module streampool._speedups (model(x) and batcher(row) without ctypes)
computes bit for bit what the ctypes path computes, returns the library's status (so the
package raises with the library's message), and refuses buffers of the wrong size, read-only
outputs and bad arguments with an exception instead of reading or writing past them. Where pip
could not build it (no Python headers), the package runs the ctypes path and these tests skip
with a line saying so (SP_REQUIRE_SPEEDUPS=1, as CI sets it, makes that a failure).
Method: one model and one batcher, every call once through each path (the module attribute
streampool._speedups set to None selects ctypes), outputs compared exactly; the module's
functions called directly with bad handles, sizes and buffers.
"""
import os
import sysconfig
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

import streampool as sp
from conftest import DIMS

speedups = sp._speedups
needs_ext = pytest.mark.skipif(speedups is None,
                               reason="skipped: streampool._speedups not built (no Python "
                                      "headers at pip install); the ctypes path ran instead")
#: Whether the extension has the GIL hand-over gate (free-threaded Python's build has none).
has_gate = speedups is not None and not sysconfig.get_config_var("Py_GIL_DISABLED")
needs_gate = pytest.mark.skipif(not has_gate,
                                reason="skipped: no GIL hand-over gate (no extension, or "
                                       "free-threaded Python: no GIL)")


def test_binding_names_the_path():
    assert sp.binding == ("extension" if speedups is not None else "ctypes")
    if os.environ.get("SP_REQUIRE_SPEEDUPS") == "1":  # CI: a build without it is a failure
        assert speedups is not None, "streampool._speedups was not built (python3-dev missing?)"


@needs_ext
def test_same_results_as_ctypes(dev, monkeypatch):
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((b, DIMS[0]), dtype=np.float32) for b in (1, 3, 17)]
    rows = [rng.standard_normal(DIMS[0], dtype=np.float32) for _ in range(4)]
    with sp.Batcher(m) as b:
        fast = [m(x) for x in xs], [b(r) for r in rows]
        monkeypatch.setattr(sp, "_speedups", None)
        slow = [m(x) for x in xs], [b(r) for r in rows]
    for f, s in zip(fast[0] + fast[1], slow[0] + slow[1]):
        assert f.dtype == s.dtype and f.shape == s.shape
        assert np.array_equal(f, s)


@needs_ext
def test_status_and_message(dev):
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    x = np.zeros((2, DIMS[0]), np.float32)
    y = np.empty((2, DIMS[-1]), np.float32)
    assert speedups.model_infer(m._handle(), x, y, 2, DIMS[0], DIMS[-1]) == 0
    st = speedups.model_infer(0, x, y, 2, DIMS[0], DIMS[-1])  # a null model: the C check
    assert st != 0
    with pytest.raises(sp.StreampoolError, match="model"):
        sp._errors.check(st)
    st = speedups.batcher_infer(0, x[0], y[0], DIMS[0], DIMS[-1])
    assert st != 0


@needs_ext
@pytest.mark.parametrize("xs, ys, batch, exc", [
    ((2, DIMS[0]), (1, DIMS[-1]), 2, ValueError),   # y too small for the batch
    ((1, DIMS[0]), (2, DIMS[-1]), 2, ValueError),   # x too small: never read past it
    ((2, DIMS[0]), (2, DIMS[-1]), 0, ValueError),   # batch 0
    ((2, DIMS[0]), (2, DIMS[-1]), -1, OverflowError),
])
def test_bad_sizes(dev, xs, ys, batch, exc):
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    x, y = np.zeros(xs, np.float32), np.full(ys, 7.0, np.float32)
    with pytest.raises(exc):
        speedups.model_infer(m._handle(), x, y, batch, DIMS[0], DIMS[-1])
    assert np.all(y == 7.0)  # nothing written


@needs_ext
@pytest.mark.parametrize("rs, os_, exc", [
    (DIMS[0] - 1, DIMS[-1], ValueError),  # row too short: never read past it
    (DIMS[0], DIMS[-1] - 1, ValueError),  # out too short: never written past it
])
def test_batcher_bad_sizes(dev, rs, os_, exc):
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    with sp.Batcher(m) as b:
        row, out = np.zeros(rs, np.float32), np.full(os_, 7.0, np.float32)
        with pytest.raises(exc):
            speedups.batcher_infer(b._h, row, out, DIMS[0], DIMS[-1])
        assert np.all(out == 7.0)
        ro = np.empty(DIMS[-1], np.float32)
        ro.flags.writeable = False
        with pytest.raises((BufferError, ValueError, TypeError)):
            speedups.batcher_infer(b._h, np.zeros(DIMS[0], np.float32), ro, DIMS[0], DIMS[-1])
        with pytest.raises(ValueError):
            speedups.batcher_infer(b._h, np.zeros(DIMS[0], np.float64)[::2].copy(), out,
                                   DIMS[0], DIMS[-1])


@needs_ext
def test_bad_buffers(dev):
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    x = np.zeros((1, DIMS[0]), np.float32)
    y = np.empty((1, DIMS[-1]), np.float32)
    y.flags.writeable = False
    with pytest.raises((BufferError, ValueError, TypeError)):
        speedups.model_infer(m._handle(), x, y, 1, DIMS[0], DIMS[-1])
    strided = np.zeros((1, 2 * DIMS[0]), np.float32)[:, ::2]
    with pytest.raises((BufferError, ValueError, TypeError)):
        speedups.model_infer(m._handle(), strided, np.empty((1, DIMS[-1]), np.float32), 1,
                             DIMS[0], DIMS[-1])
    with pytest.raises(TypeError):
        speedups.model_infer(m._handle(), "not a buffer", y, 1, DIMS[0], DIMS[-1])
    with pytest.raises(TypeError):
        speedups.model_infer(m._handle(), x)
    with pytest.raises(ValueError):  # float64 of the right byte count: not float32
        speedups.model_infer(m._handle(), np.zeros((1, DIMS[0] // 2), np.float64), y, 1,
                             DIMS[0], DIMS[-1])
    with pytest.raises(ValueError):
        speedups.bind(0, 0)
    with pytest.raises(RuntimeError):  # bound once, at import, to the library's functions
        speedups.bind(1, 2)


@contextmanager
def stale_claim(m, x):
    """A thread that returns from m(x) holding the gate, then waits without calling again (GIL
    released, gate held) until the block ends; the gate is on meanwhile (also under
    STREAMPOOL_GIL_GATE=0) and back as the package set it after."""
    claimed, release = threading.Event(), threading.Event()

    def holder():
        m(x)  # returns holding the gate
        claimed.set()
        release.wait(10)

    speedups.set_gate(True)
    t = threading.Thread(target=holder)
    t.start()
    try:
        assert claimed.wait(10)
        yield
    finally:
        release.set()
        t.join()
        speedups.set_gate(sp.gil_gate)


@needs_gate
def test_gate_holder_that_stops_calling_blocks_no_one(dev):
    """The GIL hand-over gate (_speedups.c): a thread that claimed it coming back from a call and
    then does other things (here: waits, GIL released, gate held) holds another thread up for one
    claim's age (50 us), not longer: that thread's first call takes the gate over (one takeover,
    counted by gate_stats) and its calls then claim a free gate (no give-up, which a gate without
    the takeover would need on every call, 5 ms each). Bounded either way: the holder's wait
    ends, and every wait on the gate gives up after 5 ms."""
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    x = np.ones((1, DIMS[0]), np.float32)
    out = []
    with stale_claim(m, x):
        takeovers0, give_ups0 = speedups.gate_stats()
        t0 = time.perf_counter()
        for _ in range(50):
            out.append(m(x))
        took = time.perf_counter() - t0
        takeovers, give_ups = speedups.gate_stats()
    assert (takeovers - takeovers0, give_ups - give_ups0) == (1, 0)
    assert took < 1.0, f"50 calls took {took:.2f} s while another thread held the gate"
    assert all(np.array_equal(o, out[0]) for o in out)


@needs_ext
def test_gate_stats_arguments():
    takeovers, give_ups = speedups.gate_stats()
    assert takeovers >= 0 and give_ups >= 0
    with pytest.raises(TypeError):
        speedups.gate_stats(1)


@needs_gate
def test_gate_off(dev):
    """set_gate(False) (what STREAMPOOL_GIL_GATE=0 sets at import): the same stale claim as above
    delays no one and is never taken over, since no call consults the gate; back on, the stale
    claim is taken over once."""
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    x = np.ones((1, DIMS[0]), np.float32)
    want = m(x)
    with stale_claim(m, x):
        speedups.set_gate(False)
        before = speedups.gate_stats()
        assert all(np.array_equal(m(x), want) for _ in range(20))
        assert speedups.gate_stats() == before
        speedups.set_gate(True)
        m(x)
        assert speedups.gate_stats()[0] == before[0] + 1
    with pytest.raises(TypeError):
        speedups.set_gate()


@pytest.mark.parametrize("value", ["0", "1", "2", ""])
def test_gil_gate_variable(value):
    """STREAMPOOL_GIL_GATE at import: 0 turns the gate off, 1 (the default) leaves it on where the
    extension has one, anything else fails the import with the variable and the value named."""
    import subprocess
    import sys
    env = dict(os.environ, STREAMPOOL_GIL_GATE=value)
    p = subprocess.run([sys.executable, "-c", "import streampool; print(streampool.gil_gate)"],
                       env=env, capture_output=True, text=True)
    if value not in ("0", "1"):
        assert p.returncode != 0
        assert f"STREAMPOOL_GIL_GATE={value!r}: expected 0 or 1" in p.stderr
        return
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(value == "1" and has_gate)
