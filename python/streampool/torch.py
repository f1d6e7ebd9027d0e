"""PyTorch interop: run PyTorch work on a streampool stream.

``streampool.torch.stream(dev)`` binds this thread to a pool stream of dev (as
:meth:`streampool.Device.stream`) and makes that stream PyTorch's current stream for this thread
(``torch.cuda.ExternalStream`` over the stream's cudaStream_t; PyTorch's current stream is per
thread), so PyTorch ops and streampool calls of this thread are ordered on one stream, and
``model.forward(x, y, sync=False)`` needs no synchronization with the tensors' producers.

torch is imported here only, when this module's functions run.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from . import Device
from ._errors import InvalidArgumentError, UnsupportedError

__all__ = ["stream"]


@contextmanager
def stream(dev: Device) -> Iterator[Any]:
    """Context manager: yields the ``torch.cuda.ExternalStream`` that is both this thread's
    streampool stream on dev and its current PyTorch stream (its ``.streampool`` attribute is the
    :class:`streampool.Stream`). Needs a cuda device; UnsupportedError otherwise."""
    if not isinstance(dev, Device):
        raise InvalidArgumentError(f"dev must be a streampool.Device, got {type(dev).__name__}")
    if dev.backend != "cuda":
        raise UnsupportedError(f"streampool.torch.stream needs a cuda device; this one is "
                               f"{dev.backend} (its streams are library threads, not CUDA "
                               f"streams)")
    import torch  # lazily: the package does not need torch otherwise

    with dev.stream() as s:
        ext = torch.cuda.ExternalStream(s.native_handle, device=torch.device("cuda", dev.index))
        ext.streampool = s  # type: ignore[attr-defined]
        with torch.cuda.stream(ext):
            yield ext
