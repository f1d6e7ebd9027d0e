"""Device arrays from other libraries: DLPack and ``__cuda_array_interface__`` (CAI), consumed
without copies, with the producers' stream rules.

DLPack (``__dlpack__(stream=...)``): the consumer names the stream it will use the data on; the
producer (torch, CuPy) makes that stream wait for the array's pending work before returning the
capsule. We pass our pool stream's cudaStream_t. CPU arrays (kDLCPU, e.g. NumPy) take
``stream=None``, as the protocol requires. The capsule is renamed "used_dltensor" when consumed
and its deleter is called when the array is no longer used by us.

CAI (version 3): ``stream`` names the stream the producer's work is on (None: nothing to wait
for; 1 legacy default, 2 per-thread default, else a cudaStream_t); we make our pool stream wait
on it on the device (sp_stream_wait_native), the host is not blocked.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from ctypes import POINTER, Structure, c_int32, c_int64, c_uint8, c_uint16, c_uint64, c_void_p
from typing import Any, Iterator, Optional, Tuple

from ._errors import InvalidArgumentError, check
from ._lib import lib

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
KDL_FLOAT = 2


class _DLDevice(Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class _DLDataType(Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class _DLTensor(Structure):
    _fields_ = [("data", c_void_p), ("device", _DLDevice), ("ndim", c_int32),
                ("dtype", _DLDataType), ("shape", POINTER(c_int64)),
                ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


class _DLManagedTensor(Structure):
    pass


_DELETER = ctypes.PYFUNCTYPE(None, POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", c_void_p),
                             ("deleter", c_void_p)]

_capi = ctypes.pythonapi
_capi.PyCapsule_IsValid.restype = ctypes.c_int
_capi.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capi.PyCapsule_GetPointer.restype = c_void_p
_capi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capi.PyCapsule_SetName.restype = ctypes.c_int
_capi.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]


class DeviceArray:
    """A borrowed float32 C-contiguous 2-D array: ``ptr``, ``shape``, and what keeps it alive.
    ``release()`` gives a DLPack tensor back to its producer (idempotent)."""

    def __init__(self, ptr: int, shape: Tuple[int, ...], managed: Optional[int], keep: Any):
        self.ptr, self.shape, self._managed, self._keep = ptr, shape, managed, keep

    def release(self) -> None:
        if self._managed:
            m = ctypes.cast(self._managed, POINTER(_DLManagedTensor))
            self._managed = None
            if m.contents.deleter:
                _DELETER(m.contents.deleter)(m)
        self._keep = None

    def __enter__(self) -> "DeviceArray":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _check_layout(what: str, shape: Tuple[int, ...], strides: Optional[Tuple[int, ...]],
                  itemsize: int) -> None:
    if len(shape) != 2:
        raise InvalidArgumentError(f"{what}: expected a 2-D array [batch, features], got shape "
                                   f"{tuple(shape)}")
    if strides is None:
        return
    rows, cols = shape
    want = (cols * itemsize, itemsize)
    # Strides of size-1 dimensions do not matter (torch reports arbitrary ones there).
    if (rows > 1 and strides[0] != want[0]) or (cols > 1 and strides[1] != want[1]):
        raise InvalidArgumentError(f"{what}: must be C-contiguous (row-major, no gaps); strides "
                                   f"{tuple(strides)} bytes, expected {want}")


def _from_dlpack(obj: Any, what: str, backend: str, index: int,
                 native_stream: Optional[int]) -> DeviceArray:
    dev_type, dev_id = obj.__dlpack_device__()
    dev_type = int(dev_type)
    if backend == "cuda":
        if dev_type != KDL_CUDA:
            raise InvalidArgumentError(f"{what}: DLPack device type {dev_type} is not CUDA memory "
                                       f"(kDLCUDA = 2); a cuda device's forward() takes device "
                                       f"arrays (use model(x) for host arrays)")
        if int(dev_id) != index:
            raise InvalidArgumentError(f"{what}: array is on cuda:{int(dev_id)}, the model's "
                                       f"device is cuda:{index}")
        cap = obj.__dlpack__(stream=native_stream)
    else:
        if dev_type not in (KDL_CPU, KDL_CUDA_HOST):
            raise InvalidArgumentError(f"{what}: DLPack device type {dev_type}: the host backend's "
                                       f"device memory is host memory, so it takes CPU arrays "
                                       f"(kDLCPU = 1) only")
        cap = obj.__dlpack__()  # CPU: stream must be None
    if not _capi.PyCapsule_IsValid(cap, b"dltensor"):
        raise InvalidArgumentError(f"{what}: __dlpack__ did not return a 'dltensor' capsule")
    addr = _capi.PyCapsule_GetPointer(cap, b"dltensor")
    managed = ctypes.cast(addr, POINTER(_DLManagedTensor))
    _capi.PyCapsule_SetName(cap, b"used_dltensor")  # ours now: we call the deleter
    arr = DeviceArray(0, (), addr, None)
    try:
        t = managed.contents.dl_tensor
        shape = tuple(t.shape[i] for i in range(t.ndim))
        strides = tuple(t.strides[i] * 4 for i in range(t.ndim)) if t.strides else None
        if (t.dtype.code, t.dtype.bits, t.dtype.lanes) != (KDL_FLOAT, 32, 1):
            raise InvalidArgumentError(f"{what}: dtype (code {t.dtype.code}, {t.dtype.bits} bits,"
                                       f" {t.dtype.lanes} lanes) is not float32")
        _check_layout(what, shape, strides, 4)
        arr.ptr = (t.data or 0) + t.byte_offset
        arr.shape = shape
    except BaseException:
        arr.release()
        raise
    return arr


def _from_cai(obj: Any, what: str, backend: str, stream: int, writable: bool) -> DeviceArray:
    cai = obj.__cuda_array_interface__
    if backend != "cuda":
        raise InvalidArgumentError(f"{what}: __cuda_array_interface__ arrays need a cuda device "
                                   f"(this one is {backend})")
    if cai.get("typestr") != "<f4":
        raise InvalidArgumentError(f"{what}: typestr {cai.get('typestr')!r} is not float32 "
                                   f"('<f4')")
    shape = tuple(int(n) for n in cai["shape"])
    strides = cai.get("strides")
    _check_layout(what, shape, tuple(strides) if strides is not None else None, 4)
    ptr, readonly = cai["data"]
    if writable and readonly:
        raise InvalidArgumentError(f"{what}: the output array is read-only")
    producer = cai.get("stream")
    if producer is not None and int(cai.get("version", 0)) >= 3:
        if int(producer) == 0:
            raise InvalidArgumentError(f"{what}: __cuda_array_interface__ stream 0 is "
                                       f"disallowed by the protocol (ambiguous)")
        check(lib.sp_stream_wait_native(stream, int(producer)))
    return DeviceArray(int(ptr or 0), shape, None, obj)


def import_array(obj: Any, what: str, backend: str, index: int, stream: int,
                 native_stream: Optional[int], writable: bool) -> DeviceArray:
    """Borrows obj (a DLPack or CAI object) for use on ``stream`` of a ``backend`` device."""
    if backend == "cuda" and hasattr(obj, "__cuda_array_interface__") and \
            not hasattr(obj, "__dlpack__"):
        return _from_cai(obj, what, backend, stream, writable)
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        return _from_dlpack(obj, what, backend, index, native_stream)
    if hasattr(obj, "__cuda_array_interface__"):
        return _from_cai(obj, what, backend, stream, writable)
    raise InvalidArgumentError(f"{what}: expected a DLPack (__dlpack__) or "
                               f"__cuda_array_interface__ object, got {type(obj).__name__}")


@contextmanager
def import_pair(x: Any, y: Any, backend: str, index: int, stream: int,
                native_stream: Optional[int]) -> Iterator[Tuple[DeviceArray, DeviceArray]]:
    """A forward's x (read) and y (written) borrowed for use on ``stream``, both released after."""
    with import_array(x, "forward(x)", backend, index, stream, native_stream, False) as ax:
        with import_array(y, "forward(y)", backend, index, stream, native_stream, True) as ay:
            yield ax, ay
