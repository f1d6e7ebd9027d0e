"""Exceptions: one class per sp_status, each carrying the library's message (sp_last_error)."""
from __future__ import annotations

from typing import Dict, NoReturn, Type

from ._lib import lib

__all__ = ["StreampoolError", "InvalidArgumentError", "InvalidHandleError", "OutOfMemoryError",
           "LimitError", "PoolExhaustedError", "NotReadyError", "NoDeviceError",
           "UnsupportedError", "BackendError", "ForkedError", "HostMemoryError", "BusyError", "check", "fail"]


class StreampoolError(Exception):
    """A call into libstreampool failed. ``status`` is the sp_status value, ``status_name`` its
    short description, ``message`` the library's detail (or the package's, for arguments it
    rejects before calling the library)."""

    status: int = 0

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message

    @property
    def status_name(self) -> str:
        return lib.sp_status_str(self.status).decode()


class InvalidArgumentError(StreampoolError, ValueError):
    """SP_ERR_INVALID_ARGUMENT: a bad argument (also raised by the package's own checks of
    dtype, shape and contiguity)."""
    status = -1


class InvalidHandleError(StreampoolError):
    """SP_ERR_INVALID_HANDLE: a released, stale or foreign handle or pointer."""
    status = -2


class OutOfMemoryError(StreampoolError, MemoryError):
    """SP_ERR_OUT_OF_MEMORY: device memory exhausted after releasing the cache."""
    status = -3


class LimitError(StreampoolError, MemoryError):
    """SP_ERR_LIMIT: the device's configured memory limit would be passed."""
    status = -4


class PoolExhaustedError(StreampoolError):
    """SP_ERR_POOL_EXHAUSTED: exclusive mode, no free stream slot within the wait."""
    status = -5


class NotReadyError(StreampoolError):
    """SP_ERR_NOT_READY: work still pending."""
    status = -6


class NoDeviceError(StreampoolError):
    """SP_ERR_NO_DEVICE: the backend has no such device."""
    status = -7


class UnsupportedError(StreampoolError):
    """SP_ERR_UNSUPPORTED: the backend is not available here or lacks the feature."""
    status = -8


class BackendError(StreampoolError):
    """SP_ERR_BACKEND: the device API failed; the message has its detail."""
    status = -9


class ForkedError(StreampoolError):
    """SP_ERR_FORKED: a device opened before fork() used in the child."""
    status = -10


class HostMemoryError(StreampoolError, MemoryError):
    """SP_ERR_HOST_MEMORY: host memory allocation failed."""
    status = -11


class BusyError(StreampoolError):
    """SP_ERR_BUSY: still in use (a device closed while a model or batcher of it is alive)."""
    status = -12


_BY_STATUS: Dict[int, Type[StreampoolError]] = {
    c.status: c for c in (InvalidArgumentError, InvalidHandleError, OutOfMemoryError, LimitError,
                          PoolExhaustedError, NotReadyError, NoDeviceError, UnsupportedError,
                          BackendError, ForkedError, HostMemoryError, BusyError)}


def fail(status: int) -> NoReturn:
    """Raises the exception for a failed status, with this thread's sp_last_error()."""
    msg = lib.sp_last_error().decode(errors="replace")
    cls = _BY_STATUS.get(status, StreampoolError)
    raise cls(msg or lib.sp_status_str(status).decode(), status)


def check(status: int) -> None:
    """Raises for any status but SP_OK."""
    if status != 0:
        fail(status)
