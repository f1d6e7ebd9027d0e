"""Goal: Device, Stream and the module functions work with good input and raise the right
exception class, carrying the library's message, on bad input; nothing is left open.
Method: open host devices with each option; check info against what was asked; exercise the
allocator through a model and read memory_stats/snapshot/empty_cache; take streams in both
modes until the pool is exhausted; pass wrong types, ranges and closed handles.
"""
import threading

import numpy as np
import pytest

import streampool as sp
from conftest import BACKEND


def test_version_and_backends():
    assert sp.version().count(".") == 2
    assert sp.backend_available("host")
    assert sp.device_count("host") >= 1
    with pytest.raises(sp.InvalidArgumentError, match="backend must be"):
        sp.backend_available("tpu")
    with pytest.raises(sp.InvalidArgumentError):
        sp.device_count("tpu")
    if not sp.backend_available("cuda"):
        with pytest.raises(sp.UnsupportedError, match="cuda"):
            sp.device_count("cuda")


def test_open_info_close():
    with sp.Device("host", streams=8, stream_mode="exclusive", slot_wait_ms=5,
                   memory_limit=1 << 30) as dev:
        info = dev.info
        assert (info.backend, info.index, info.streams, info.stream_mode) == ("host", 0, 8,
                                                                               "exclusive")
        assert info.slot_wait_ms == 5 and info.memory_limit == 1 << 30
        assert info.memory_total >= info.memory_free > 0 and info.name.startswith("host")
        assert "host" in repr(dev)
    assert dev.closed
    dev.close()  # idempotent
    with pytest.raises(sp.InvalidHandleError, match="closed"):
        dev.sync()
    with pytest.raises(sp.InvalidHandleError):
        dev.info


@pytest.mark.parametrize("kwargs,match", [
    ({"backend": "tpu"}, "backend must be"),
    ({"backend": 3}, "backend must be"),
    ({"streams": 1000}, "streams must be in"),
    ({"streams": -1}, "streams must be in"),
    ({"streams": 2.5}, "streams must be an int"),
    ({"stream_mode": "fifo"}, "stream_mode"),
    ({"index": -1}, "index"),
    ({"memory_limit": True}, "memory_limit must be an int"),
])
def test_open_bad_arguments(kwargs, match):
    with pytest.raises(sp.InvalidArgumentError, match=match):
        sp.Device(**kwargs)


def test_open_errors_from_the_library():
    with pytest.raises(sp.NoDeviceError, match="host device 99"):
        sp.Device("host", index=99)
    with pytest.raises(sp.InvalidArgumentError, match="streams") as e:
        sp.Device("host", streams=1)  # the library's own check: a pool needs 2
    assert e.value.status == -1 and e.value.status_name == "invalid argument"
    assert isinstance(e.value, ValueError) and isinstance(e.value, sp.StreampoolError)


def test_env_override_error(monkeypatch):
    monkeypatch.setenv("STREAMPOOL_STREAMS", "lots")
    with pytest.raises(sp.InvalidArgumentError, match="STREAMPOOL_STREAMS"):
        sp.Device("host")


def test_memory_stats_snapshot_empty_cache(dev):
    before = dev.memory_stats()
    assert set(before) >= {"allocated_bytes", "reserved_bytes", "allocs", "frees", "cache_hits"}
    m = sp.Model.mlp_random(dev, [32, 64, 16], seed=3)
    m(np.ones((4, 32), np.float32))
    after = dev.memory_stats()
    assert after["allocs"] > before["allocs"] and after["reserved_bytes"] > 0
    assert after["allocated_bytes_peak"] >= after["allocated_bytes"]
    snap = dev.snapshot()
    assert "stats" in snap and isinstance(snap["segments"], list) and snap["segments"]
    assert all({"address", "bytes", "blocks"} <= set(s) for s in snap["segments"])
    dev.reset_peak_stats()
    m.close()
    dev.empty_cache()
    assert dev.memory_stats()["reserved_bytes"] < after["reserved_bytes"]
    dev.sync()


def test_streams_exclusive_until_exhausted():
    with sp.Device("host", streams=3, stream_mode="exclusive") as dev:  # 2 slots
        with dev.stream() as s:
            assert s.index != 0 and dev.current_stream().index == s.index
            assert s.query() is True
            s.sync()
            with dev.stream() as s2:  # nested: a second slot, this thread now on it
                assert s2.index not in (0, s.index) and dev.current_stream().index == s2.index
                with pytest.raises(sp.PoolExhaustedError, match="exclusive stream slots"):
                    with dev.stream():
                        pass
        with dev.stream() as again:  # both given back at the end of their blocks
            with dev.stream() as again2:
                assert {again.index, again2.index} == {s.index, s2.index}
        cur = dev.current_stream()
        if BACKEND == "host":
            with pytest.raises(sp.UnsupportedError, match="native"):
                cur.native_handle
            with pytest.raises(sp.UnsupportedError):
                cur.wait_native(0)
        with pytest.raises(sp.InvalidArgumentError):
            cur.wait_native(-1)


def test_stream_in_threads_round_robin(dev):
    seen, errors = [], []

    def work():
        try:
            with dev.stream() as s:
                seen.append(s.index)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors and len(seen) == 8 and 0 not in seen


def test_pinned_empty(dev):
    a = dev.pinned_empty((4, 8))
    assert a.shape == (4, 8) and a.dtype == np.float32 and a.flags.c_contiguous
    a[:] = 3.0
    m = sp.Model.mlp_random(dev, [8, 4], seed=1)
    assert np.array_equal(m(a), m(np.full((4, 8), 3.0, np.float32)))
    b = dev.pinned_empty(16, dtype=np.uint8)
    assert b.shape == (16,)
    del a, b  # freed by their finalizers
    with pytest.raises(sp.InvalidArgumentError, match="no elements"):
        dev.pinned_empty((0, 3))


def test_stream_after_close():
    dev = sp.Device("host")
    s = dev.current_stream()
    dev.close()
    with pytest.raises(sp.InvalidHandleError, match="device is closed"):
        s.sync()


def test_memory_history(dev):
    assert dev.snapshot()["events"] == []  # off by default
    dev.memory_history(64)
    m = sp.Model.mlp_random(dev, [32, 64, 16], seed=3)
    m(np.ones((4, 32), np.float32))
    events = dev.snapshot()["events"]
    kinds = {e["kind"] for e in events}
    assert events and "alloc" in kinds, kinds
    assert len(events) <= 64
    dev.memory_history(None)
    assert dev.snapshot()["events"] == []
    for bad in (0, -1, 2**64, 1.5, True, "8"):
        with pytest.raises(sp.InvalidArgumentError, match="memory_history"):
            dev.memory_history(bad)
    with pytest.raises(sp.InvalidArgumentError, match="entries"):
        dev.memory_history(1 << 30)  # above SP_MEMORY_HISTORY_MAX: the library's message
    m.close()
