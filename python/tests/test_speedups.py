"""Goal: the extension module streampool._speedups (model(x) and batcher(row) as one C call
each) computes bit for bit what the ctypes path computes, raises the package's exception with
the library's message for a failed status, takes only plain float32 arrays of the right shape
(anything else returns None, and the package's general path converts or refuses it: never
read past, never misread), and refuses bad arguments with an exception. Where pip could not
build it (no Python or NumPy headers), the package runs the ctypes path and these tests skip
with a line saying so (SP_REQUIRE_SPEEDUPS=1, as CI sets it, makes that a failure).
Method: one model and one batcher, every call once through each path (streampool._ctypes_only()
selects ctypes), outputs compared exactly; the module's
functions called directly with bad handles, shapes, dtypes, layouts and arguments.
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
        fast = ([speedups.model_call(m._handle(), x, DIMS[0], DIMS[-1]) for x in xs],
                [speedups.batcher_call(b._h, r, DIMS[0], DIMS[-1]) for r in rows])
        with sp._ctypes_only():
            slow = [m(x) for x in xs], [b(r) for r in rows]
    for f, s in zip(fast[0] + fast[1], slow[0] + slow[1]):
        assert f is not None and f.dtype == s.dtype and f.shape == s.shape
        assert np.array_equal(f, s)


class _GeneralPathCalled(Exception):
    pass


@needs_ext
def test_model_call_is_one_vectorcall(dev):
    """Model's C half (ModelBase): model(x) on a plain float32 array reaches the library without
    the package's Python path (an instance whose _call raises still answers it, equal to the
    ctypes path); everything else (another shape or dtype, a keyword, a closed model, the fast
    path switched off) goes to _call, which converts, refuses or raises as before."""
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    x = np.random.default_rng(7).standard_normal((3, DIMS[0]), dtype=np.float32)
    with sp._ctypes_only():
        want = m(x)
    general = m._call

    def refuse(*a, **k):
        raise _GeneralPathCalled()
    m._call = refuse
    y = m(x)
    assert y.dtype == np.float32 and np.array_equal(y, want)
    for other in (x.astype(np.float64), x[:, ::2], x.tolist(), x[0]):
        with pytest.raises(_GeneralPathCalled):
            m(other)
    with pytest.raises(_GeneralPathCalled):
        m(x=x)
    speedups.set_fast(False)
    try:
        with pytest.raises(_GeneralPathCalled):
            m(x)
    finally:
        speedups.set_fast(True)
    m._call = general
    assert np.array_equal(m(x=x), want) and np.array_equal(m(np.asfortranarray(x)), want)
    with pytest.raises(sp.InvalidArgumentError, match="float32"):
        m(x.astype(np.float64))
    with pytest.raises(TypeError):
        m(x, x)
    m.close()
    with pytest.raises(sp.InvalidHandleError):
        m(x)
    with pytest.raises(TypeError):
        m._fast_bind(1, 2)
    with pytest.raises(ValueError, match="feature count"):
        m._fast_bind(1, -1, 4)
    with pytest.raises(sp.InvalidHandleError):  # still closed: the refused bind changed nothing
        m(x)


@needs_ext
def test_failed_status_raises_the_library_message(dev):
    """A failed status comes back as the package's exception with the library's message, read on
    the calling thread: a null handle fails the library's own argument check."""
    x = np.zeros((2, DIMS[0]), np.float32)
    with pytest.raises(sp.InvalidArgumentError, match="model"):
        speedups.model_call(0, x, DIMS[0], DIMS[-1])
    with pytest.raises(sp.InvalidArgumentError, match="batcher"):
        speedups.batcher_call(0, x[0], DIMS[0], DIMS[-1])
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    y = speedups.model_call(m._handle(), x, DIMS[0], DIMS[-1])
    assert y.shape == (2, DIMS[-1]) and y.dtype == np.float32 and np.array_equal(y, m(x))


def _not_plain(shape):
    """The plain float32 array of shape `shape`, and inputs of the same values that the fast
    path must not take as they are, each with whether the package's general path converts it
    (True) or refuses it as not float32 (False)."""
    base = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 7
    wide = np.zeros(shape[:-1] + (2 * shape[-1],), np.float32)
    wide[..., ::2] = base
    raw = np.zeros(base.nbytes + 1, np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(shape)
    misaligned[...] = base

    class Sub(np.ndarray):
        pass

    return base, [
        (wide[..., ::2], True),             # strided: copied
        (misaligned, True),                 # unaligned data: copied (the C API takes float *)
        (base.view(Sub), True),             # an ndarray subclass: read as an array
        (base.astype(np.float64), False),   # another dtype: the caller converts
        (base.astype(">f4"), False),        # big-endian float32: likewise
        (base.tolist(), False),             # a list: read as float64, likewise
    ]


def _general_path(call, others, want):
    """call(x) on each non-plain input: want where the package converts it, its float32
    error where it refuses it."""
    for x, converts in others:
        if converts:
            assert np.array_equal(call(x), want)
        else:
            with pytest.raises(sp.InvalidArgumentError, match="float32"):
                call(x)


@needs_ext
def test_model_call_takes_only_plain_arrays(dev):
    """model_call returns None (the package's general path then runs) for anything but a plain
    float32 [batch, in] array, and model(x) gives on each such input what it gives on the plain
    array, or the package's error."""
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    h = m._handle()
    base, others = _not_plain((3, DIMS[0]))
    want = m(base)
    assert np.array_equal(speedups.model_call(h, base, DIMS[0], DIMS[-1]), want)
    wrong = [base[None], base[0], base[:0], np.zeros((3, DIMS[0] - 1), np.float32),
             np.zeros((3, DIMS[0] + 1), np.float32)]  # contiguous, so only the shape check
    for x in [x for x, _ in others] + wrong:
        assert speedups.model_call(h, x, DIMS[0], DIMS[-1]) is None
    _general_path(m, others, want)
    for x in wrong:
        with pytest.raises(sp.InvalidArgumentError):
            m(x)


@needs_ext
def test_batcher_call_takes_only_plain_rows(dev):
    """The same for batcher_call: a plain float32 [in] or [1, in] row, None otherwise."""
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    with sp.Batcher(m) as b:
        base, others = _not_plain((DIMS[0],))
        want = b(base)
        assert np.array_equal(speedups.batcher_call(b._h, base, DIMS[0], DIMS[-1]), want)
        assert np.array_equal(speedups.batcher_call(b._h, base[None], DIMS[0], DIMS[-1]), want)
        wrong = [base[:-1], np.zeros(DIMS[0] + 1, np.float32), base[None, None],
                 np.zeros((2, DIMS[0]), np.float32), np.zeros((1, DIMS[0] - 1), np.float32)]
        for r in [r for r, _ in others] + wrong:
            assert speedups.batcher_call(b._h, r, DIMS[0], DIMS[-1]) is None
        _general_path(b, others, want)
        for r in wrong:
            with pytest.raises(sp.InvalidArgumentError):
                b(r)


class _NoCtypes:
    def __getattr__(self, name):
        raise AssertionError(f"the ctypes path ran ({name}) although the extension is there")


@needs_ext
def test_converted_inputs_go_through_the_extension(dev, monkeypatch):
    """An input the general path converts (strided, unaligned, a subclass) is then run through
    the extension too, never through ctypes, so every call with the extension keeps the GIL
    hand-over gate's protocol (a thread holding a claim frees it in its next call)."""
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    with sp.Batcher(m) as b:
        base, others = _not_plain((1, DIMS[0]))
        want_m, want_b = m(base), b(base)
        with monkeypatch.context() as patch:
            patch.setattr(sp, "lib", _NoCtypes())
            for x, converts in others:
                if converts:
                    assert np.array_equal(m(x), want_m) and np.array_equal(b(x), want_b)


@needs_ext
def test_time_model_calls(dev):
    """The benchmark's C loop: n calls of sp_model_infer, the seconds they took, y written as
    model(x) writes it (per_call 0 and 1; 2 writes a new array per call and leaves y alone);
    bad arrays, counts, per_call values and handles refused."""
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    x = np.ones((2, DIMS[0]), np.float32)
    want = m(x)
    for per_call in (None, 0, 1, 2):
        y = np.zeros((2, DIMS[-1]), np.float32)
        extra = () if per_call is None else (per_call,)
        secs = speedups.time_model_calls(m._handle(), x, y, DIMS[0], DIMS[-1], 3, *extra)
        assert secs > 0
        assert np.array_equal(y, np.zeros_like(y) if per_call == 2 else want), per_call
    for bad in (-1, 3):
        with pytest.raises(ValueError, match="per_call"):
            speedups.time_model_calls(m._handle(), x, y, DIMS[0], DIMS[-1], 1, bad)
    with pytest.raises(sp.InvalidArgumentError):
        speedups.time_model_calls(0, x, y, DIMS[0], DIMS[-1], 1, 2)
    ro = np.zeros((2, DIMS[-1]), np.float32)
    ro.flags.writeable = False
    narrow = np.ones((2, DIMS[0] - 1), np.float32)  # contiguous: only the width is wrong
    for xx, yy, n in ((x, ro, 1), (x, y[:1], 1), (narrow, y, 1), (x, y, 0), (x, y, -1),
                      (x.astype(np.float64), y, 1), (x, y.astype(np.float64), 1)):
        with pytest.raises(ValueError):
            speedups.time_model_calls(m._handle(), xx, yy, DIMS[0], DIMS[-1], n)
    with pytest.raises(sp.InvalidArgumentError):
        speedups.time_model_calls(0, x, y, DIMS[0], DIMS[-1], 1)
    with pytest.raises(TypeError):
        speedups.time_model_calls(m._handle(), x, y, DIMS[0], DIMS[-1])


@needs_ext
def test_bad_arguments(dev):
    m = sp.Model.mlp_random(dev, DIMS, seed=5)
    x = np.zeros((1, DIMS[0]), np.float32)
    with pytest.raises(TypeError):
        speedups.model_call(m._handle(), x)
    with pytest.raises(TypeError):
        speedups.batcher_call(0, x[0], DIMS[0])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="feature count"):
            speedups.model_call(m._handle(), x, bad, DIMS[-1])
        with pytest.raises(ValueError, match="feature count"):
            speedups.batcher_call(0, x[0], DIMS[0], bad)
    with pytest.raises(TypeError):
        speedups.model_call("not a handle", x, DIMS[0], DIMS[-1])
    with pytest.raises(ValueError):
        speedups.bind(0, 0, sp._errors.check)
    with pytest.raises(TypeError, match="callable"):
        speedups.bind(1, 2, None)
    with pytest.raises(RuntimeError):  # bound once, at import, to the library's functions
        speedups.bind(1, 2, sp._errors.check)


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
