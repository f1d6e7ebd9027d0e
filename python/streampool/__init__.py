"""streampool: many threads, one GPU, from Python.

A thin layer over libstreampool's C API (ctypes). Every call that does work (a model forward, a
batcher request, a sync) is one C call, made with the GIL released, so Python threads run in
parallel at close to the C rate::

    import numpy as np, streampool as sp
    from concurrent.futures import ThreadPoolExecutor

    with sp.Device() as dev:                        # CUDA if present, else the host backend
        model = sp.Model.mlp_random(dev, [512, 1024, 1024, 512], seed=1)
        x = np.random.default_rng(0).standard_normal((16, 1, 512), dtype=np.float32)
        with ThreadPoolExecutor(16) as pool:
            ys = list(pool.map(model, x))           # 16 threads, each its own stream

Thread safety: Device, Model and Batcher methods may be called from any thread, except
``close()`` (and leaving the ``with`` block), which must not run while another thread uses the
object. Errors raise a subclass of :class:`StreampoolError` carrying the library's message.
"""
from __future__ import annotations

import ctypes
import json
import os
import sysconfig
import threading
import weakref
from contextlib import contextmanager
from ctypes import byref, c_int, c_size_t, c_uint, c_void_p
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from . import _interop
from ._errors import (BackendError, ForkedError, HostMemoryError, InvalidArgumentError,
                      InvalidHandleError, LimitError, NoDeviceError, NotReadyError,
                      OutOfMemoryError, PoolExhaustedError, StreampoolError, UnsupportedError,
                      check)
from ._lib import (BatcherConfig, BatcherStats, DeviceConfig, EncoderBatcherConfig, EncoderInfo,
                   MemoryStats, ResidentStats, lib, library_path)

try:  # model(x) and batcher(row) without ctypes, where pip built the extension (_speedups.c)
    from . import _speedups
    _speedups.bind(ctypes.cast(lib.sp_model_infer, c_void_p).value,
                   ctypes.cast(lib.sp_batcher_infer, c_void_p).value, check)
except (ImportError, RuntimeError):  # not built, no NumPy C API, or bound by an earlier import
    _speedups = None  # type: ignore[assignment]

#: How model(x) and batcher(row) reach the library: "extension" (streampool._speedups) or
#: "ctypes". Both release the GIL for the call and compute the same result.
binding: str = "extension" if _speedups is not None else "ctypes"


def _gil_gate_setting() -> bool:
    """STREAMPOOL_GIL_GATE: 1 (the default) or 0, the extension's GIL hand-over gate on or off
    (docs/PYTHON.md); any other value is refused, as the library refuses its own variables."""
    v = os.environ.get("STREAMPOOL_GIL_GATE")
    if v is None or v == "1":
        return True
    if v == "0":
        return False
    raise InvalidArgumentError(f"STREAMPOOL_GIL_GATE={v!r}: expected 0 or 1 (the GIL hand-over "
                               f"gate of model(x) and batcher(row); unset for the default, 1)")


#: Whether model(x) and batcher(row) hand the GIL over through the extension's gate (False on
#: the ctypes path, with STREAMPOOL_GIL_GATE=0, and on free-threaded Python, whose build of the
#: extension has no gate).
gil_gate: bool = (_gil_gate_setting() and _speedups is not None
                  and not sysconfig.get_config_var("Py_GIL_DISABLED"))
if _speedups is not None:
    _speedups.set_gate(gil_gate)

#: Model's C half where the extension is built (model(x) for a plain float32 array as one
#: vectorcall, no Python frame in between), else None.
_ModelBase: Any = _speedups.ModelBase if _speedups is not None else None


@contextmanager
def _ctypes_only() -> Iterator[None]:
    """Within it, model(x) and batcher(row) take the ctypes path, the extension set aside (the
    tests and bench/python_threads.py compare the two). Not for use while other threads call."""
    global _speedups
    ext = _speedups
    _speedups = None
    if ext is not None:
        ext.set_fast(False)
    try:
        yield
    finally:
        _speedups = ext
        if ext is not None:
            ext.set_fast(True)


__all__ = ["Device", "DeviceInfo", "Stream", "Model", "Batcher", "Resident", "Encoder", "EncoderBatcher",
           "version", "device_count", "binding", "gil_gate",
           "backend_available", "library_path", "StreampoolError", "InvalidArgumentError",
           "InvalidHandleError", "OutOfMemoryError", "LimitError", "PoolExhaustedError",
           "NotReadyError", "NoDeviceError", "UnsupportedError", "BackendError", "ForkedError",
           "HostMemoryError"]

__version__ = lib.sp_version().decode()

_DTYPES = {"f32": 0, "float32": 0, "bf16": 1, "bfloat16": 1, "f16": 2, "float16": 2}
_DTYPE_NAMES = {0: "f32", 1: "bf16", 2: "f16"}
_MODES = {None: 0, "round_robin": 0, "exclusive": 1}
_BACKENDS = ("auto", "host", "cuda")


def version() -> str:
    """The C library's version, "MAJOR.MINOR.PATCH"."""
    return __version__


def _backend_arg(backend: Optional[str]) -> Optional[bytes]:
    if backend is None or backend == "auto":
        return None
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    return backend.encode()


def backend_available(backend: str) -> bool:
    """Whether backend ("host", "cuda") is in this library and loads here (for "cuda": its
    module libstreampool_cuda.so and the CUDA libraries it needs)."""
    if backend not in ("host", "cuda"):
        raise InvalidArgumentError(f"backend must be 'host' or 'cuda', got {backend!r}")
    return bool(lib.sp_backend_compiled(backend.encode()))


def device_count(backend: Optional[str] = None) -> int:
    """How many devices backend has (None or "auto": the best available backend). Raises
    UnsupportedError, with the reason, for a backend that is not available."""
    n = c_int(0)
    check(lib.sp_device_count(_backend_arg(backend), byref(n)))
    return n.value


def _uint(name: str, value: Any, lo: int = 0, hi: int = 2**32 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise InvalidArgumentError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def _dtype_arg(dtype: Union[str, Any]) -> int:
    key = dtype if isinstance(dtype, str) else getattr(dtype, "name", None)
    if key is None and dtype in (np.float32, np.float16):
        key = np.dtype(dtype).name
    if key not in _DTYPES:
        raise InvalidArgumentError(f"dtype must be 'f32', 'bf16' or 'f16', got {dtype!r}")
    return _DTYPES[key]


_C = TypeVar("_C", bound="_Closable")


class _Closable:
    """What every handle class (Device, Model, Batcher, Encoder, EncoderBatcher) does with its
    library handle `_h` (None once closed) and its close(): _handle() for the calls, a context
    manager that closes on exit, and a finalizer that closes on garbage collection (dropping
    errors, as a finalizer must). `_kind` names the object in the closed message."""

    _kind = "object"
    _h: Optional[int]

    def _handle(self) -> int:
        h = self._h
        if h is None:
            raise InvalidHandleError(f"the {self._kind} is closed")
        return h

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is and how it was configured (after defaults and STREAMPOOL_* overrides)."""
    backend: str
    index: int
    name: str
    streams: int
    stream_mode: str
    slot_wait_ms: int
    memory_limit: int
    memory_total: int
    memory_free: int


class Stream:
    """A pool stream of a device (from :meth:`Device.stream`). Valid until the device closes."""

    def __init__(self, device: "Device", handle: int) -> None:
        self.device = device
        self.__h = handle

    @property
    def _h(self) -> int:
        self.device._handle()  # raises once the device is closed: the stream is gone with it
        return self.__h

    @property
    def index(self) -> int:
        """0 for the default stream, 1.. for pool streams."""
        return int(lib.sp_stream_index(self._h))

    @property
    def native_handle(self) -> int:
        """The backend's own handle (cuda: the cudaStream_t as an int) for other runtimes.
        Raises UnsupportedError on the host backend, whose streams are library threads."""
        out = c_void_p()
        check(lib.sp_stream_native(self._h, byref(out)))
        return int(out.value or 0)

    def sync(self) -> None:
        """Waits until the work submitted to this stream so far has finished (GIL released)."""
        check(lib.sp_stream_sync(self._h))

    def query(self) -> bool:
        """True when the stream is idle, False while it has work."""
        st = lib.sp_stream_query(self._h)
        if st == NotReadyError.status:
            return False
        check(st)
        return True

    def wait_native(self, native: int) -> None:
        """Later work on this stream runs after the work submitted so far to ``native``, another
        runtime's stream of the same device (cuda: a cudaStream_t as int)."""
        check(lib.sp_stream_wait_native(self._h, _uint("native", native, 0, 2**64 - 1)))

    def __repr__(self) -> str:
        return f"<streampool.Stream {self.index} of {self.device!r}>"


class Device(_Closable):
    """An open device: a GPU ("cuda") or the host CPU acting as one ("host"); "auto" picks CUDA
    when a CUDA device is there. A context manager: leaving the block closes it, and closing
    frees its models and batchers first.

    Args:
        backend: "auto", "host" or "cuda".
        index: device ordinal within the backend.
        streams: pool size including the default stream (0: 32; at most 128).
        stream_mode: None (library default / STREAMPOOL_STREAM_MODE), "round_robin" or
            "exclusive" (each thread owns a stream until it exits).
        slot_wait_ms: exclusive mode: how long a thread waits for a free stream.
        memory_limit: bytes the allocator may hold (0: the device's memory).
    """

    _kind = "device"

    def __init__(self, backend: str = "auto", index: int = 0, *, streams: int = 0,
                 stream_mode: Optional[str] = None, slot_wait_ms: int = 0,
                 memory_limit: int = 0) -> None:
        if stream_mode not in _MODES:
            raise InvalidArgumentError(f"stream_mode must be None, 'round_robin' or 'exclusive', "
                                       f"got {stream_mode!r}")
        cfg = DeviceConfig(backend=_backend_arg(backend), index=_uint("index", index, 0, 2**31 - 1),
                           streams=_uint("streams", streams, 0, 128),
                           stream_mode=_MODES[stream_mode],
                           slot_wait_ms=_uint("slot_wait_ms", slot_wait_ms),
                           memory_limit=_uint("memory_limit", memory_limit, 0, 2**63 - 1))
        h = c_void_p()
        check(lib.sp_device_open(byref(cfg), byref(h)))
        self._h: Optional[int] = h.value
        self._children: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self.backend: str = lib.sp_device_backend(self._h).decode()
        self.index: int = int(index)

    # -- lifetime --
    def _adopt(self, child: Any) -> None:
        with self._lock:
            self._handle()
            self._children.add(child)

    def close(self) -> None:
        """Closes the batchers and models of this device, then the device (waits for all its
        streams). Idempotent. No other thread may be using the device."""
        with self._lock:
            h, self._h = self._h, None
            children = list(self._children)
        if h is None:
            return
        for c in sorted(children, key=lambda c: 0 if isinstance(c, (Batcher, EncoderBatcher,
                                                                    Resident)) else 1):
            c.close()
        lib.sp_device_close(h)

    @property
    def closed(self) -> bool:
        return self._h is None

    def __repr__(self) -> str:
        state = "closed" if self._h is None else lib.sp_device_name(self._h).decode()
        return f"<streampool.Device {self.backend}:{self.index} ({state})>"

    # -- information --
    @property
    def info(self) -> DeviceInfo:
        """The device's name, effective configuration, and memory (total, free) in bytes."""
        h = self._handle()
        cfg = DeviceConfig()
        check(lib.sp_device_config_get(h, byref(cfg)))
        free, total = c_size_t(), c_size_t()
        check(lib.sp_device_memory_info(h, byref(free), byref(total)))
        return DeviceInfo(backend=self.backend, index=cfg.index,
                          name=lib.sp_device_name(h).decode(), streams=cfg.streams,
                          stream_mode="exclusive" if cfg.stream_mode == 1 else "round_robin",
                          slot_wait_ms=cfg.slot_wait_ms, memory_limit=cfg.memory_limit,
                          memory_total=total.value, memory_free=free.value)

    def memory_stats(self) -> Dict[str, int]:
        """The allocator's counters (allocated/reserved bytes and peaks, allocs, frees, cache
        hits, ...), as a dict of ints."""
        s = MemoryStats()
        check(lib.sp_memory_stats_get(self._handle(), byref(s)))
        return {name: int(getattr(s, name)) for name, _ in MemoryStats._fields_}

    def reset_peak_stats(self) -> None:
        """Sets both peaks of memory_stats() to the current values."""
        check(lib.sp_memory_stats_reset_peaks(self._handle()))

    def snapshot(self) -> Dict[str, Any]:
        """The allocator's segments and blocks, parsed from the library's JSON snapshot:
        {"stats": {...}, "segments": [{"address", "bytes", "stream", "blocks": [...]}]}."""
        out = ctypes.POINTER(ctypes.c_char)()
        check(lib.sp_memory_snapshot_json(self._handle(), byref(out)))
        try:
            return json.loads(ctypes.string_at(out).decode())
        finally:
            lib.sp_string_free(out)

    def memory_history(self, entries: Optional[int]) -> None:
        """Starts recording the allocator's events in a ring of the last `entries` events
        (alloc, free, deferred free, cross-stream reuse, segment map/unmap, OOM, empty_cache),
        dropping those recorded so far; None stops recording. snapshot()["events"] holds them
        (docs/ARCHITECTURE.md, "Memory history"); `streampool viewer` draws a saved snapshot."""
        if entries is None:
            check(lib.sp_memory_history_disable(self._handle()))
            return
        if type(entries) is not int or isinstance(entries, bool):
            raise InvalidArgumentError(f"memory_history: entries must be an int or None, got "
                                       f"{type(entries).__name__}")
        if not 1 <= entries < 2**64:
            raise InvalidArgumentError(f"memory_history: entries must be >= 1, got {entries}")
        check(lib.sp_memory_history_enable(self._handle(), entries))

    def empty_cache(self) -> None:
        """Syncs every stream and returns the allocator's unused segments to the device."""
        check(lib.sp_empty_cache(self._handle()))

    def sync(self) -> None:
        """Waits until every stream of the device is idle (GIL released)."""
        check(lib.sp_device_sync(self._handle()))

    # -- streams --
    def current_stream(self) -> Stream:
        """This thread's current stream on the device (bound on first use)."""
        out = c_void_p()
        check(lib.sp_stream_current(self._handle(), byref(out)))
        return Stream(self, out.value)

    @contextmanager
    def stream(self) -> Iterator[Stream]:
        """Binds this thread to a pool stream of its own for the block: in exclusive mode a
        slot nobody else gets until the block ends (waiting up to slot_wait_ms, else
        PoolExhaustedError); in round-robin mode the next round-robin stream (shared, as every
        round-robin stream is). Model calls of this thread inside the block run on it. On exit
        the thread is unbound (its next call binds anew) and the stream is given back."""
        h = self._handle()
        out = c_void_p()
        check(lib.sp_stream_acquire(h, byref(out)))
        s = out.value
        try:
            check(lib.sp_stream_set_current(h, s))
            try:
                yield Stream(self, s)
            finally:
                check(lib.sp_stream_release_current(h))
        finally:
            check(lib.sp_stream_release(h, s))

    # -- pinned host memory --
    def pinned_empty(self, shape: Union[int, Sequence[int]], dtype: Any = np.float32) -> np.ndarray:
        """An uninitialized NumPy array in host memory this device copies at full speed
        (page-locked on CUDA; ordinary host memory on the host backend). Freed when the array
        (and every view of it) is garbage collected, or when the device closes, after which the
        array must not be used."""
        dt = np.dtype(dtype)
        shp = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        n = int(np.prod(shp, dtype=np.int64)) * dt.itemsize
        if n <= 0:
            raise InvalidArgumentError(f"pinned_empty: shape {shp} holds no elements")
        h = self._handle()
        p = c_void_p()
        check(lib.sp_host_alloc_pinned(h, n, byref(p)))
        buf = (ctypes.c_char * n).from_address(p.value)
        arr = np.frombuffer(buf, dtype=dt).reshape(shp)
        weakref.finalize(buf, _free_pinned, weakref.ref(self), p.value)
        return arr


def _free_pinned(dev_ref: "weakref.ref[Device]", p: int) -> None:
    dev = dev_ref()
    if dev is not None and dev._h is not None:
        lib.sp_host_free_pinned(dev._h, p)


_F32 = np.dtype(np.float32)
_vp_from_buffer = c_void_p.from_buffer


def _addr(a: np.ndarray) -> Any:
    """The address of a's data as a ctypes argument: byref over the buffer (about half the cost
    of a.ctypes.data), or a.ctypes.data where the buffer is read-only or under 8 bytes."""
    try:
        return byref(_vp_from_buffer(a))
    except (TypeError, ValueError):
        return a.ctypes.data


def _host_rows(x: Any, features: int, what: str) -> np.ndarray:
    """x as a C-contiguous, aligned float32 [B, features] NumPy array (a copy only if x is not
    one: the C API takes float pointers)."""
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the caller's bad argument
        raise InvalidArgumentError(f"{what}: cannot read {type(x).__name__} as an array: {e}")
    if a.dtype != np.float32:
        raise InvalidArgumentError(f"{what}: dtype {a.dtype} is not float32 (convert with "
                                   f".astype(np.float32))")
    if a.ndim != 2 or a.shape[1] != features:
        raise InvalidArgumentError(f"{what}: expected shape [batch, {features}], got "
                                   f"{list(a.shape)}")
    if a.shape[0] == 0:
        raise InvalidArgumentError(f"{what}: batch is 0")
    if a.shape[0] > 2**32 - 1:
        raise InvalidArgumentError(f"{what}: batch {a.shape[0]} is too large")
    return _plain(a)


def _plain(a: np.ndarray) -> np.ndarray:
    """a, or a C-contiguous copy where a is strided or unaligned (the C API takes float *)."""
    return a if a.flags.c_contiguous and a.flags.aligned else a.copy(order="C")


class Model(*((_ModelBase, _Closable) if _ModelBase else (_Closable,))):  # type: ignore[misc]
    """An MLP on a device: Linear layers with ReLU between them, weights in f32, bf16 or f16
    (the activations and the caller's arrays are float32). Build with :meth:`load` or
    :meth:`mlp_random`. Call it from any number of threads: ``y = model(x)``, x a [batch,
    in_features] float32 array (see :meth:`_call`)."""

    _kind = "model"

    def __init__(self, device: Device, handle: int) -> None:
        self.device = device
        self._h: Optional[int] = handle
        self.in_features: int = int(lib.sp_model_in_features(handle))
        self.out_features: int = int(lib.sp_model_out_features(handle))
        self.dtype: str = _DTYPE_NAMES.get(int(lib.sp_model_dtype(handle)), "?")
        self._residents: "weakref.WeakSet[Resident]" = weakref.WeakSet()
        if _ModelBase:
            self._fast_bind(handle, self.in_features, self.out_features)
        device._adopt(self)

    @classmethod
    def load(cls, device: Device, path: Union[str, "os.PathLike[str]"],
             dtype: Union[str, Any] = "f32",
             arch: Optional[str] = None) -> Union["Model", "Encoder"]:
        """Loads an MLP from a safetensors file holding a PyTorch state dict (tensors F32, BF16
        or F16), converted to dtype ("f32", "bf16" or "f16") on the device. The model is what its
        description says: arch (e.g. "0:linear 1:gelu 2:layernorm 3:linear", the text form of
        include/streampool.h's sp_model_desc_parse), else the file's "__metadata__" key
        "streampool.arch", else a config.json beside the file with that key; a bare state dict
        is refused (InvalidArgumentError saying how to describe it). A folder whose config.json
        says model_type "bert" (and no arch) is an encoder: returns :meth:`Encoder.load` of it."""
        import os
        if arch is None and os.path.isdir(path) and _is_bert_folder(path):
            return Encoder.load(device, path, dtype)
        if not isinstance(device, Device):
            raise InvalidArgumentError(f"device must be a streampool.Device, got "
                                       f"{type(device).__name__}")
        if arch is not None and not isinstance(arch, str):
            raise InvalidArgumentError(f"arch must be a str, got {type(arch).__name__}")
        p = os.fsencode(path)
        dt = _dtype_arg(dtype)
        h = c_void_p()
        if arch is None:
            check(lib.sp_model_load(device._handle(), p, dt, byref(h)))
            return cls(device, h.value)
        desc = c_void_p()
        check(lib.sp_model_desc_parse(arch.encode(), byref(desc)))
        try:
            check(lib.sp_model_load_desc(device._handle(), p, desc, dt, byref(h)))
        finally:
            lib.sp_model_desc_free(desc)
        return cls(device, h.value)

    @classmethod
    def mlp_random(cls, device: Device, dims: Sequence[int], seed: int = 0,
                   dtype: Union[str, Any] = "f32") -> "Model":
        """A seeded MLP dims[0] -> dims[1] -> ... (at least two sizes), weights uniform in
        +-1/sqrt(in) as PyTorch initializes Linear."""
        if not isinstance(device, Device):
            raise InvalidArgumentError(f"device must be a streampool.Device, got "
                                       f"{type(device).__name__}")
        d = [_uint("dims[]", n, 1) for n in dims]
        if len(d) < 2:
            raise InvalidArgumentError(f"dims needs at least two sizes, got {list(dims)}")
        arr = (c_uint * len(d))(*d)
        h = c_void_p()
        check(lib.sp_model_mlp_random(device._handle(), arr, len(d),
                                      _uint("seed", seed, 0, 2**64 - 1), _dtype_arg(dtype),
                                      byref(h)))
        return cls(device, h.value)

    def _call(self, x: Any) -> np.ndarray:
        """y = model(x): x is [batch, in_features] float32 (a NumPy array or any buffer /
        __array__ object; a strided or unaligned one is copied), y a new [batch, out_features]
        float32 NumPy array. Runs on this thread's current stream, as one C call with the GIL
        released (copies in, forward, copies out, sync). With the extension, a plain float32
        array of the right shape goes straight from model(x) to the library (ModelBase); this
        general path takes everything else."""
        h, ext, n_in, n_out = self._h, _speedups, self.in_features, self.out_features
        if h is not None and ext is not None:  # through the extension: one C call
            y = ext.model_call(h, x, n_in, n_out)
            if y is None:  # not a plain float32 array of the right shape: converted or refused
                y = ext.model_call(h, _host_rows(x, n_in, "model(x)"), n_in, n_out)
            if y is not None:
                return y
        if type(x) is np.ndarray and x.dtype is _F32 and x.ndim == 2 and x.shape[1] == n_in and \
                x.flags.c_contiguous and x.flags.aligned and 0 < x.shape[0] < 2**32:
            a = x  # the common case through ctypes, checked in one go
        else:
            a = _host_rows(x, n_in, "model(x)")
        h = self._handle()
        y = np.empty((a.shape[0], self.out_features), dtype=_F32)
        check(lib.sp_model_infer(h, _addr(a), _addr(y), a.shape[0]))
        return y

    def forward(self, x: Any, y: Any, *, sync: bool = True) -> None:
        """y[:] = model(x) on device arrays, without copies: x [batch, in_features] and y
        [batch, out_features], float32, C-contiguous, given as DLPack objects (torch and CuPy
        tensors; NumPy arrays on the host backend, whose device memory is host memory) or
        __cuda_array_interface__ objects.

        Runs on this thread's current stream, after the producers' pending work on x and y (the
        protocols' stream handshake: DLPack's producer makes our stream wait, a CAI stream is
        waited on by ours). sync=True (default) returns when y is written, so any stream or the
        host may read it. sync=False returns once the work is queued: the caller orders later
        use of y (e.g. inside streampool.torch.stream(dev), where PyTorch's current stream is
        this stream) and keeps x and y alive until then."""
        dev = self.device
        s = dev.current_stream()
        native = s.native_handle if dev.backend == "cuda" else None
        with _interop.import_pair(x, y, dev.backend, dev.index, s._h, native) as (ax, ay):
            b = ax.shape[0]
            if ax.shape[1] != self.in_features:
                raise InvalidArgumentError(f"forward(x): expected [batch, {self.in_features}]"
                                           f", got {list(ax.shape)}")
            if tuple(ay.shape) != (b, self.out_features):
                raise InvalidArgumentError(f"forward(y): expected [{b}, "
                                           f"{self.out_features}], got {list(ay.shape)}")
            if b == 0:
                raise InvalidArgumentError("forward: batch is 0")
            if dev.backend != "cuda":
                # Host backend: a CPU array is host memory, which sp_model_forward refuses
                # (only sp_alloc blocks are device memory); sp_model_infer takes host memory
                # on this thread's current stream (s) and waits.
                check(lib.sp_model_infer(self._handle(), ax.ptr, ay.ptr, b))
                return
            check(lib.sp_model_forward(self._handle(), s._h, ax.ptr, ay.ptr, b))
            if sync:
                s.sync()

    if not _ModelBase:  # else ModelBase's vectorcall is model(x), _call its general path
        __call__ = _call

    def close(self) -> None:
        """Closes the model's residents, then frees its weights. Idempotent; no call may be
        running on it."""
        for r in list(self._residents):
            r.close()
        if _ModelBase:
            self._fast_bind(0, 0, 0)
        h, self._h = self._h, None
        if h is not None:
            lib.sp_model_free(h)

    def __repr__(self) -> str:
        return (f"<streampool.Model {self.in_features}->{self.out_features} {self.dtype} on "
                f"{self.device!r}>")


class Batcher(_Closable):
    """Merges single rows from many threads into batched forward passes.

    Args:
        model: the model to run.
        max_batch: rows per pass (0: 16).
        max_delay_us: how long a pass waits for more rows after its first (0: 200).
        workers: worker threads, each with its own stream (0: 4).

    ``batcher(row)`` blocks until that row's answer is there; call it from any number of threads.
    """

    _kind = "batcher"

    def __init__(self, model: Model, max_batch: int = 0, max_delay_us: int = 0,
                 workers: int = 0) -> None:
        if not isinstance(model, Model):
            raise InvalidArgumentError(f"model must be a streampool.Model, got "
                                       f"{type(model).__name__}")
        cfg = BatcherConfig(max_batch=_uint("max_batch", max_batch),
                            max_delay_us=_uint("max_delay_us", max_delay_us),
                            workers=_uint("workers", workers))
        h = c_void_p()
        check(lib.sp_batcher_create(model._handle(), byref(cfg), byref(h)))
        self.model = model
        self._h: Optional[int] = h.value
        self._in, self._out = model.in_features, model.out_features
        model.device._adopt(self)

    def __call__(self, row: Any) -> np.ndarray:
        """The model's output for one row: row is [in_features] (or [1, in_features]) float32;
        returns a new [out_features] float32 array. Blocks with the GIL released."""
        h, ext = self._h, _speedups
        if h is not None and ext is not None:  # through the extension: one C call
            y = ext.batcher_call(h, row, self._in, self._out)
            if y is None:  # not a plain float32 row of the right shape: converted or refused
                y = ext.batcher_call(h, self._row(row), self._in, self._out)
            if y is not None:
                return y
        a = self._row(row)
        h = self._handle()
        y = np.empty(self._out, dtype=_F32)
        check(lib.sp_batcher_infer(h, _addr(a), _addr(y)))
        return y

    def _row(self, row: Any) -> np.ndarray:
        """row as a C-contiguous, aligned float32 [in_features] or [1, in_features] array (a
        copy only if it is not one), or InvalidArgumentError."""
        try:
            a = np.asarray(row)
        except Exception as e:  # noqa: BLE001 - any conversion failure is the caller's bad argument
            raise InvalidArgumentError(f"batcher(row): cannot read {type(row).__name__} as an "
                                       f"array: {e}")
        if a.dtype != _F32:
            raise InvalidArgumentError(f"batcher(row): dtype {a.dtype} is not float32 (convert "
                                       f"with .astype(np.float32))")
        if a.shape != (self._in,) and a.shape != (1, self._in):
            raise InvalidArgumentError(f"batcher(row): expected shape [{self._in}], got "
                                       f"{list(a.shape)}")
        return _plain(a)

    def stats(self) -> Dict[str, int]:
        """requests, batches, failed, queued, and the total fill/run/answer times in ns."""
        s = BatcherStats()
        check(lib.sp_batcher_stats_get(self._handle(), byref(s)))
        return {name: int(getattr(s, name)) for name, _ in BatcherStats._fields_}

    def close(self) -> None:
        """Finishes every accepted request, then stops the workers. Idempotent; no call may
        start during or after it."""
        h, self._h = self._h, None
        if h is not None:
            lib.sp_batcher_destroy(h)


class Resident(_Closable):
    """One caller's batch-1 forwards of ``model`` with the model kept running on the device
    (include/streampool.h, "Resident forwards"): on CUDA a kernel holding the weights in shared
    memory, woken per forward without a launch or a stream sync; 1.24-1.42x a graph-replayed
    ``model.forward`` from one thread. MLPs of Linear layers only (no LayerNorm), at most 16, whose
    weights fit the device's shared memory, else UnsupportedError saying why. Model.close and
    Device.close close it first.

    ``resident.forward(x, y)`` computes one row; calls from several threads are serialized.
    """

    _kind = "resident"

    def __init__(self, model: Model) -> None:
        if not isinstance(model, Model):
            raise InvalidArgumentError(f"model must be a streampool.Model, got "
                                       f"{type(model).__name__}")
        h = c_void_p()
        check(lib.sp_resident_open(model._handle(), byref(h)))
        self.model = model
        self._h: Optional[int] = h.value
        self._stage: Optional[Tuple[int, int]] = None  # host backend: device blocks for x and y
        self._lock = threading.Lock()
        model.device._adopt(self)
        model._residents.add(self)

    def forward(self, x: Any, y: Any) -> None:
        """y[:] = model(x) for one row: x [1, in_features] and y [1, out_features], float32,
        C-contiguous, device arrays as :meth:`Model.forward` takes them
        (DLPack or __cuda_array_interface__; on the host backend NumPy arrays, copied through two
        device blocks of the resident's). Waits for x's producers, returns when y is written (any
        stream or the host may read it). The GIL is released during the forward."""
        m, dev = self.model, self.model.device
        s = dev.current_stream()
        native = s.native_handle if dev.backend == "cuda" else None
        with _interop.import_pair(x, y, dev.backend, dev.index, s._h, native) as (ax, ay):
            for a, n, what in ((ax, m.in_features, "x"), (ay, m.out_features, "y")):
                if tuple(a.shape) != (1, n):
                    raise InvalidArgumentError(f"forward({what}): expected [1, {n}], got "
                                               f"{list(a.shape)}")
            if dev.backend == "cuda":
                s.sync()  # x's producers, which the import ordered before s
                check(lib.sp_resident_forward(self._handle(), ax.ptr, ay.ptr))
                return
            with self._lock:  # the staging blocks are the resident's
                bin_, bout = self._staging(s)
                check(lib.sp_memcpy_async(s._h, bin_, ax.ptr, 4 * m.in_features))
                check(lib.sp_stream_sync(s._h))
                check(lib.sp_resident_forward(self._handle(), bin_, bout))
                check(lib.sp_memcpy_async(s._h, ay.ptr, bout, 4 * m.out_features))
                check(lib.sp_stream_sync(s._h))

    def stats(self) -> Dict[str, int]:
        """forwards (answered) and launches (CUDA: kernel launches; 0 on the host backend)."""
        s = ResidentStats()
        check(lib.sp_resident_stats_get(self._handle(), byref(s)))
        return {name: int(getattr(s, name)) for name, _ in ResidentStats._fields_}

    def _staging(self, s: Stream) -> Tuple[int, int]:
        if self._stage is None:
            dh, bx, by = self.model.device._handle(), c_void_p(), c_void_p()
            check(lib.sp_alloc(dh, 4 * self.model.in_features, s._h, byref(bx)))
            st = lib.sp_alloc(dh, 4 * self.model.out_features, s._h, byref(by))
            if st != 0:
                lib.sp_free(dh, bx)
                check(st)
            self._stage = (int(bx.value), int(by.value))
        return self._stage

    def close(self) -> None:
        """Stops the resident's kernel and frees what it holds. Idempotent; no forward may be
        running on it."""
        h, self._h = self._h, None
        if h is not None:
            lib.sp_resident_close(h)
        stage, self._stage = self._stage, None
        if stage is not None and not self.model.device.closed:
            for p in stage:
                lib.sp_free(self.model.device._handle(), c_void_p(p))


def _is_bert_folder(path: Union[str, "os.PathLike[str]"]) -> bool:
    try:
        with open(os.path.join(os.fsdecode(path), "config.json")) as f:
            return json.load(f).get("model_type") == "bert"
    except (OSError, ValueError, AttributeError):
        return False


def _texts_arg(texts: Any, what: str) -> "ctypes.Array[ctypes.c_char_p]":
    if isinstance(texts, (str, bytes)):
        raise InvalidArgumentError(f"{what}: expected a list of str, got one {type(texts).__name__}"
                                   f" (wrap it in a list)")
    try:
        items = list(texts)
    except TypeError:
        raise InvalidArgumentError(f"{what}: expected a list of str, got "
                                   f"{type(texts).__name__}") from None
    enc = []
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InvalidArgumentError(f"{what}: item {i} is {type(t).__name__}, not str")
        b = t.encode("utf-8", "surrogatepass")
        if b"\0" in b:
            raise InvalidArgumentError(f"{what}: item {i} holds a NUL character")
        enc.append(b)
    return (ctypes.c_char_p * len(enc))(*enc)


class Encoder(_Closable):
    """A BERT-family sentence encoder (all-MiniLM-L6-v2, bge-small, e5-small, ...) loaded from a
    Hugging Face folder as it is (config.json, model.safetensors, vocab.txt / tokenizer.json and
    sentence-transformers' modules.json, 1_Pooling, Normalize). ``enc.embed(texts)`` gives the
    sentence embeddings; call it from any number of threads (each runs on its own stream)."""

    _kind = "encoder"

    def __init__(self, device: Device, handle: int, dtype: int) -> None:
        self.device = device
        self._h: Optional[int] = handle
        inf = EncoderInfo()
        check(lib.sp_encoder_info_get(handle, byref(inf)))
        self.info: Dict[str, Any] = {n: int(getattr(inf, n)) for n, _ in EncoderInfo._fields_}
        self.info["pooling"] = "cls" if inf.pooling_cls else "mean"
        self.info["normalize"] = bool(inf.normalize)
        del self.info["pooling_cls"]
        self.dim: int = int(inf.hidden)
        self.dtype: str = _DTYPE_NAMES.get(dtype, "?")
        self._batchers: "weakref.WeakSet[EncoderBatcher]" = weakref.WeakSet()
        device._adopt(self)

    @classmethod
    def load(cls, device: Device, path: Union[str, "os.PathLike[str]"],
             dtype: Union[str, Any] = "f32") -> "Encoder":
        """Loads the encoder folder at path with weights and activations in dtype ("f32",
        "bf16" or "f16") on the device."""
        if not isinstance(device, Device):
            raise InvalidArgumentError(f"device must be a streampool.Device, got "
                                       f"{type(device).__name__}")
        dt = _dtype_arg(dtype)
        h = c_void_p()
        check(lib.sp_encoder_load(device._handle(), os.fsencode(path), dt, byref(h)))
        return cls(device, h.value, dt)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of texts (a list of str; each truncated to info["max_seq"] tokens as
        sentence-transformers does): a new [len(texts), dim] float32 array. One C call on this
        thread's current stream with the GIL released (tokenize, forward in bounded passes,
        pool, copy back)."""
        arr = _texts_arg(texts, "embed(texts)")
        n = len(arr)
        y = np.empty((n, self.dim), dtype=_F32)
        if n:
            st = lib.sp_encoder_embed(self._handle(), arr, n, _addr(y))
            if st:
                check(st)
        return y

    def close(self) -> None:
        """Closes the encoder's batchers, then frees the encoder. Idempotent; no embed may be
        running on it."""
        for b in list(self._batchers):
            b.close()
        h, self._h = self._h, None
        if h is not None:
            lib.sp_encoder_free(h)

    def __repr__(self) -> str:
        return (f"<streampool.Encoder hidden {self.dim}, {self.info['layers']} layers, "
                f"{self.dtype} on {self.device!r}>")


class EncoderBatcher(_Closable):
    """Merges single texts from many threads into encoder passes under a token budget.

    Args:
        encoder: the encoder to run.
        max_tokens: padded tokens per pass (0: 8192).
        max_batch: texts per pass (0: 16).
        max_delay_us: how long a pass waits for more texts after its first (0: 200).
        workers: passes in flight, each on its own stream (0: 4).

    ``batcher(text)`` blocks until that text's embedding ([dim] float32) is there; call it from
    any number of threads. The text is tokenized on the calling thread.
    """

    _kind = "batcher"

    def __init__(self, encoder: Encoder, max_tokens: int = 0, max_batch: int = 0,
                 max_delay_us: int = 0, workers: int = 0) -> None:
        if not isinstance(encoder, Encoder):
            raise InvalidArgumentError(f"encoder must be a streampool.Encoder, got "
                                       f"{type(encoder).__name__}")
        cfg = EncoderBatcherConfig(max_tokens=_uint("max_tokens", max_tokens),
                                   max_batch=_uint("max_batch", max_batch),
                                   max_delay_us=_uint("max_delay_us", max_delay_us),
                                   workers=_uint("workers", workers))
        h = c_void_p()
        check(lib.sp_encoder_batcher_create(encoder._handle(), byref(cfg), byref(h)))
        self.encoder = encoder
        self._h: Optional[int] = h.value
        self._dim = encoder.dim
        encoder.device._adopt(self)
        encoder._batchers.add(self)

    def __call__(self, text: str) -> np.ndarray:
        """The embedding of one text: a new [dim] float32 array. Blocks with the GIL
        released."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"batcher(text): expected str, got {type(text).__name__}")
        b = text.encode("utf-8", "surrogatepass")
        if b"\0" in b:
            raise InvalidArgumentError("batcher(text): the text holds a NUL character")
        h = self._handle()
        y = np.empty(self._dim, dtype=_F32)
        st = lib.sp_encoder_batcher_embed(h, b, _addr(y))
        if st:
            check(st)
        return y

    def stats(self) -> Dict[str, int]:
        """requests (texts), batches (passes), failed, queued, and the total fill/run/answer
        times in ns."""
        s = BatcherStats()
        check(lib.sp_encoder_batcher_stats_get(self._handle(), byref(s)))
        return {name: int(getattr(s, name)) for name, _ in BatcherStats._fields_}

    def close(self) -> None:
        """Answers every accepted text, then stops the workers. Idempotent; no call may start
        during or after it."""
        h, self._h = self._h, None
        if h is not None:
            lib.sp_encoder_batcher_destroy(h)
