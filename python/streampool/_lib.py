"""The C library, loaded once with ctypes, and the prototypes of the functions the package calls.

Every call goes through ``ctypes.CDLL``, which releases the GIL for the duration of the C call:
a model forward or a batcher request runs in C while other Python threads run.

Where the library is found, first match wins:

1. ``STREAMPOOL_LIBRARY``: the path of a ``libstreampool.so`` (e.g. a CMake build folder's, as
   scripts/gpu-check.sh uses it on a machine without pip);
2. the package's own folder (what ``pip install`` puts there).

The CUDA backend is the module ``libstreampool_cuda.so`` beside the library, loaded by the
library itself when CUDA is first asked for; without CUDA the host backend still works.
"""
from __future__ import annotations

import ctypes
import os
from ctypes import (POINTER, Structure, c_char_p, c_float, c_int, c_size_t, c_uint,
                    c_uint64, c_void_p)

__all__ = ["lib", "library_path", "DeviceConfig", "MemoryStats", "BatcherConfig", "BatcherStats",
           "EncoderInfo", "EncoderBatcherConfig"]


def _find() -> str:
    env = os.environ.get("STREAMPOOL_LIBRARY")
    if env:
        if not os.path.isfile(env):
            raise ImportError(f"STREAMPOOL_LIBRARY={env!r} is not a file")
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("libstreampool.so", "libstreampool.so.0"):
        path = os.path.join(here, name)
        if os.path.isfile(path):
            return path
    raise ImportError(
        "libstreampool.so not found beside the streampool package; install the package with "
        "`pip install .` from the checkout, or set STREAMPOOL_LIBRARY to a built libstreampool.so")


library_path: str = _find()
lib = ctypes.CDLL(library_path)


class DeviceConfig(Structure):
    _fields_ = [("backend", c_char_p), ("index", c_int), ("streams", c_uint),
                ("stream_mode", c_int), ("slot_wait_ms", c_uint), ("memory_limit", c_size_t),
                ("alloc_flags", c_uint)]


class MemoryStats(Structure):
    _fields_ = [(n, c_size_t) for n in ("allocated_bytes", "allocated_bytes_peak",
                                        "reserved_bytes", "reserved_bytes_peak")] + \
               [(n, c_uint64) for n in ("allocs", "frees", "cache_hits", "backend_allocs",
                                        "backend_frees", "deferred_frees", "cross_stream_reuses",
                                        "oom_retries", "ooms")]


class BatcherConfig(Structure):
    _fields_ = [("max_batch", c_uint), ("max_delay_us", c_uint), ("workers", c_uint)]


class BatcherStats(Structure):
    _fields_ = [(n, c_uint64) for n in ("requests", "batches", "failed", "queued", "fill_ns",
                                        "run_ns", "answer_ns")]


class ResidentStats(Structure):
    _fields_ = [(n, c_uint64) for n in ("forwards", "launches")]


class EncoderInfo(Structure):
    _fields_ = [(n, c_uint) for n in ("hidden", "layers", "heads", "intermediate", "max_seq",
                                      "vocab")] + [("pooling_cls", c_int), ("normalize", c_int)]


class EncoderBatcherConfig(Structure):
    _fields_ = [(n, c_uint) for n in ("max_tokens", "max_batch", "max_delay_us", "workers")]


def _proto(name: str, restype, *argtypes) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


_st = c_int  # sp_status
_p = c_void_p
_pp = POINTER(c_void_p)
_proto("sp_version", c_char_p)
_proto("sp_status_str", c_char_p, c_int)
_proto("sp_last_error", c_char_p)
_proto("sp_device_open", _st, POINTER(DeviceConfig), _pp)
_proto("sp_device_close", _st, _p)
_proto("sp_device_sync", _st, _p)
_proto("sp_device_backend", c_char_p, _p)
_proto("sp_device_name", c_char_p, _p)
_proto("sp_device_config_get", _st, _p, POINTER(DeviceConfig))
_proto("sp_device_memory_info", _st, _p, POINTER(c_size_t), POINTER(c_size_t))
_proto("sp_device_count", _st, c_char_p, POINTER(c_int))
_proto("sp_backend_compiled", c_int, c_char_p)
_proto("sp_stream_current", _st, _p, _pp)
_proto("sp_stream_set_current", _st, _p, _p)
_proto("sp_stream_release_current", _st, _p)
_proto("sp_stream_acquire", _st, _p, _pp)
_proto("sp_stream_release", _st, _p, _p)
_proto("sp_stream_native", _st, _p, _pp)
_proto("sp_stream_wait_native", _st, _p, _p)
_proto("sp_stream_sync", _st, _p)
_proto("sp_stream_query", _st, _p)
_proto("sp_stream_index", c_uint, _p)
_proto("sp_host_alloc_pinned", _st, _p, c_size_t, _pp)
_proto("sp_host_free_pinned", _st, _p, _p)
_proto("sp_empty_cache", _st, _p)
_proto("sp_memory_stats_get", _st, _p, POINTER(MemoryStats))
_proto("sp_memory_stats_reset_peaks", _st, _p)
_proto("sp_memory_snapshot_json", _st, _p, POINTER(ctypes.POINTER(ctypes.c_char)))
_proto("sp_string_free", None, ctypes.POINTER(ctypes.c_char))
_proto("sp_memory_history_enable", _st, _p, c_size_t)
_proto("sp_memory_history_disable", _st, _p)
_proto("sp_model_load", _st, _p, c_char_p, c_int, _pp)
_proto("sp_model_desc_parse", _st, c_char_p, _pp)
_proto("sp_model_desc_free", None, _p)
_proto("sp_model_load_desc", _st, _p, c_char_p, _p, c_int, _pp)
_proto("sp_model_mlp_random", _st, _p, POINTER(c_uint), c_uint, c_uint64, c_int, _pp)
_proto("sp_model_free", None, _p)
_proto("sp_model_in_features", c_uint, _p)
_proto("sp_model_out_features", c_uint, _p)
_proto("sp_model_dtype", c_int, _p)
_proto("sp_model_forward", _st, _p, _p, _p, _p, c_uint)
_proto("sp_model_infer", _st, _p, _p, _p, c_uint)
_proto("sp_batcher_create", _st, _p, POINTER(BatcherConfig), _pp)
_proto("sp_batcher_infer", _st, _p, _p, _p)
_proto("sp_batcher_destroy", None, _p)
_proto("sp_batcher_stats_get", _st, _p, POINTER(BatcherStats))
_proto("sp_resident_open", _st, _p, _pp)
_proto("sp_resident_forward", _st, _p, _p, _p)
_proto("sp_resident_close", None, _p)
_proto("sp_resident_stats_get", _st, _p, POINTER(ResidentStats))
_proto("sp_alloc", _st, _p, c_size_t, _p, _pp)
_proto("sp_free", _st, _p, _p)
_proto("sp_memcpy_async", _st, _p, _p, _p, c_size_t)
_proto("sp_encoder_load", _st, _p, c_char_p, c_int, _pp)
_proto("sp_encoder_free", None, _p)
_proto("sp_encoder_info_get", _st, _p, POINTER(EncoderInfo))
_proto("sp_encoder_dim", c_uint, _p)
_proto("sp_encoder_embed", _st, _p, POINTER(c_char_p), c_size_t, _p)
_proto("sp_encoder_batcher_create", _st, _p, POINTER(EncoderBatcherConfig), _pp)
_proto("sp_encoder_batcher_embed", _st, _p, c_char_p, _p)
_proto("sp_encoder_batcher_stats_get", _st, _p, POINTER(BatcherStats))
_proto("sp_encoder_batcher_destroy", None, _p)
del c_float
