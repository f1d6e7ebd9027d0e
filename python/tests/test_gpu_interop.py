"""Goal: on CUDA, model.forward() consumes torch and CuPy device arrays without copies, through
DLPack and __cuda_array_interface__, and honours the producers' streams: data written on a
producer stream just before the call (behind a long kernel) is what the forward reads; and
streampool.torch.stream(dev) makes our pool stream PyTorch's current stream for the thread, so
torch work and forwards on it are ordered with no sync, from 16 Python threads at once.
Method: each result is compared with the float64 NumPy reference of the same weights (f32,
relative error <= 1e-4: cuBLASLt's f32 GEMM with TF32 off). The producer's data is written
after a spin kernel of ~50 ms on the producer's stream, so a missing stream handshake reads the
old (zero) input and fails. Skips without a CUDA device in the library, torch or CuPy.
"""
import threading

import numpy as np
import pytest

import streampool as sp
from conftest import DIMS, reference, rel_err

TOL = 1e-4


def _cuda_ok() -> bool:
    try:
        return sp.backend_available("cuda") and sp.device_count("cuda") > 0
    except sp.StreampoolError:
        return False


pytestmark = pytest.mark.skipif(not _cuda_ok(), reason="no CUDA device in streampool here")


@pytest.fixture
def cdev():
    with sp.Device("cuda") as d:
        yield d


@pytest.fixture
def torch():
    t = pytest.importorskip("torch")
    if not t.cuda.is_available():
        pytest.skip("torch has no CUDA")
    return t


@pytest.fixture
def cupy():
    return pytest.importorskip("cupy")


def test_torch_dlpack_forward(cdev, torch, layers, weights_path):
    m = sp.Model.load(cdev, weights_path)
    x = torch.randn(7, DIMS[0], device="cuda")
    y = torch.full((7, DIMS[-1]), float("nan"), device="cuda")
    m.forward(x, y)
    assert rel_err(y.cpu().numpy(), reference(layers, x.cpu().numpy())) <= TOL
    with pytest.raises(sp.InvalidArgumentError, match="C-contiguous"):
        m.forward(x.t().contiguous().t(), y)
    with pytest.raises(sp.InvalidArgumentError, match="float32"):
        m.forward(x.double(), y)
    with pytest.raises(sp.InvalidArgumentError, match="CUDA memory"):
        m.forward(x.cpu(), y)  # a host tensor on a cuda device: model(x) is for those


def test_torch_producer_stream_is_waited_for(cdev, torch, layers, weights_path):
    m = sp.Model.load(cdev, weights_path)
    real = torch.randn(4, DIMS[0], device="cuda")
    torch.cuda.synchronize()
    x = torch.zeros(4, DIMS[0], device="cuda")
    y = torch.empty(4, DIMS[-1], device="cuda")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # the producer: x is written ~50 ms from now on `side`
        torch.cuda._sleep(100_000_000)
        x.copy_(real)
        m.forward(x, y)  # DLPack: torch makes our stream wait on `side` first
    assert rel_err(y.cpu().numpy(), reference(layers, real.cpu().numpy())) <= TOL


def test_streampool_torch_stream(cdev, torch, layers, weights_path):
    import streampool.torch as spt
    m = sp.Model.load(cdev, weights_path)
    with spt.stream(cdev) as ext:
        assert torch.cuda.current_stream().cuda_stream == ext.streampool.native_handle
        assert cdev.current_stream().index == ext.streampool.index
        x = torch.randn(3, DIMS[0], device="cuda") * 2  # torch work on our stream
        y = torch.empty(3, DIMS[-1], device="cuda")
        m.forward(x, y, sync=False)  # ordered with torch's work: the same stream
        got = (y + 0).cpu().numpy()
    assert rel_err(got, reference(layers, x.cpu().numpy())) <= TOL
    assert torch.cuda.current_stream().cuda_stream != ext.cuda_stream  # restored


def test_torch_16_threads_on_their_streams(torch, layers, weights_path):
    import streampool.torch as spt
    with sp.Device("cuda", streams=20, stream_mode="exclusive", slot_wait_ms=5000) as dev:
        m = sp.Model.load(dev, weights_path)
        failures, start = [], threading.Barrier(16)

        def work(i):
            try:
                start.wait()
                with spt.stream(dev):
                    g = torch.Generator(device="cuda").manual_seed(i)
                    for it in range(20):
                        x = torch.randn(2, DIMS[0], device="cuda", generator=g)
                        y = torch.empty(2, DIMS[-1], device="cuda")
                        m.forward(x, y, sync=False)
                        err = rel_err(y.cpu().numpy(), reference(layers, x.cpu().numpy()))
                        if err > TOL:
                            failures.append(f"thread {i} call {it}: relative error {err:.3g}")
            except Exception as e:  # noqa: BLE001
                failures.append(f"thread {i}: {type(e).__name__}: {e}")

        ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert not failures, failures[:5]


class CAIOnly:
    """Exposes only __cuda_array_interface__ (CuPy arrays also speak DLPack)."""

    def __init__(self, a):
        self.__cuda_array_interface__ = a.__cuda_array_interface__


def test_cupy_dlpack_and_cai(cdev, cupy, layers, weights_path):
    m = sp.Model.load(cdev, weights_path)
    x = cupy.asarray(np.random.default_rng(6).standard_normal((5, DIMS[0]), dtype=np.float32))
    ref = reference(layers, cupy.asnumpy(x))
    y = cupy.empty((5, DIMS[-1]), dtype=cupy.float32)
    m.forward(x, y)
    assert rel_err(cupy.asnumpy(y), ref) <= TOL
    y2 = cupy.zeros_like(y)
    m.forward(CAIOnly(x), CAIOnly(y2))
    assert rel_err(cupy.asnumpy(y2), ref) <= TOL
    with pytest.raises(sp.InvalidArgumentError, match="float32"):
        m.forward(CAIOnly(x.astype(cupy.float64)), CAIOnly(y2))
    with pytest.raises(sp.InvalidArgumentError, match="C-contiguous"):
        m.forward(CAIOnly(cupy.asfortranarray(x)), CAIOnly(y2))


def test_cupy_cai_stream_is_waited_for(cdev, cupy, layers, weights_path):
    m = sp.Model.load(cdev, weights_path)
    spin = cupy.RawKernel(r'''
extern "C" __global__ void spin(long long cycles) {
  long long t0 = clock64();
  while (clock64() - t0 < cycles) {}
}''', "spin")
    real = cupy.asarray(np.random.default_rng(7).standard_normal((4, DIMS[0]), dtype=np.float32))
    x = cupy.zeros((4, DIMS[0]), dtype=cupy.float32)
    y = cupy.empty((4, DIMS[-1]), dtype=cupy.float32)
    cupy.cuda.Device().synchronize()
    s = cupy.cuda.Stream(non_blocking=True)
    with s:  # the producer: x is written behind a ~50 ms kernel on s; CAI names s
        spin((1,), (1,), (cupy.int64(100_000_000),))
        x[...] = real
        cai_x, cai_y = CAIOnly(x), CAIOnly(y)
    assert cai_x.__cuda_array_interface__.get("stream") == s.ptr
    m.forward(cai_x, cai_y)
    assert rel_err(cupy.asnumpy(y), reference(layers, cupy.asnumpy(real))) <= TOL


def test_cuda_native_handles(cdev):
    s = cdev.current_stream()
    h = s.native_handle
    assert h not in (0, 1, 2)
    with cdev.stream() as s2:
        assert s2.native_handle not in (0, h)
        s2.wait_native(h)
        s2.wait_native(1)  # the legacy default stream
        s2.sync()
    a = cdev.pinned_empty((2, 4))
    a[:] = 1
    assert a.sum() == 8
