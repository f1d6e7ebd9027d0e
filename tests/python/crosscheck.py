"""Cross-check of the loader and the kernels against files the real safetensors library writes.

Goal: `streampool check` loads state dicts written by safetensors' own writer (the format PyTorch
users hand us), in the order their description ("streampool.arch" in the metadata) gives, with
nn.Sequential ("0", "2", "4") and named-module ("fc1", "fc2", "fc10") names, and computes what
numpy computes in float64: f32 relative error <= 1e-5, bf16 <= 1e-2, f16 <= 2e-3 (16-bit weights
and activations against an exact reference); F16 files load too; a bare state dict is refused.
Method: seeded PyTorch-style weights (uniform +-1/sqrt(in)), 50 seeded input rows, the reference
forward in float64, files as raw little-endian float32. Usage: crosscheck.py CLI WORKDIR.
"""
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import save_file

cli, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
rng = np.random.default_rng(20261124)
failures = 0
passed = 0


def linear_params(n_in, n_out):
    bound = 1.0 / np.sqrt(n_in)
    w = rng.uniform(-bound, bound, size=(n_out, n_in)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(n_out,)).astype(np.float32)
    return w, b


def reference(layers, x):
    a = x.astype(np.float64)
    for k, (w, b) in enumerate(layers):
        a = a @ w.astype(np.float64).T + b.astype(np.float64)
        if k + 1 < len(layers):
            a = np.maximum(a, 0.0)
    return a


def run(name, args, expect_ok=True, expect_text=None):
    global failures, passed
    p = subprocess.run([cli, "check", "--backend", "host"] + args, capture_output=True, text=True)
    text = p.stdout + p.stderr
    ok = (p.returncode == 0) == expect_ok and (expect_text is None or expect_text in text)
    print(("ok: " if ok else "FAILED: ") + name + ": " + text.strip())
    if ok:
        passed += 1
    else:
        failures += 1


def case(name, names, dims, order=None):
    layers = [linear_params(dims[i], dims[i + 1]) for i in range(len(names))]
    tensors = {}
    for i in order or range(len(names)):
        tensors[names[i] + ".weight"] = layers[i][0]
        tensors[names[i] + ".bias"] = layers[i][1]
    model = os.path.join(work, name + ".safetensors")
    arch = " ".join("%s:linear%s" % (n, " relu" if i + 1 < len(names) else "") for i, n in enumerate(names))
    save_file(tensors, model, metadata={"format": "pt", "streampool.arch": arch})
    x = rng.uniform(-1, 1, size=(50, dims[0])).astype(np.float32)
    x.astype("<f4").tofile(os.path.join(work, name + ".in.f32"))
    reference(layers, x).astype("<f4").tofile(os.path.join(work, name + ".out.f32"))
    io = ["--model", model, "--inputs", os.path.join(work, name + ".in.f32"),
          "--expect", os.path.join(work, name + ".out.f32")]
    run(name + " f32", io + ["--dtype", "f32", "--tol", "1e-5"])
    run(name + " bf16", io + ["--dtype", "bf16", "--tol", "1e-2"])
    run(name + " f16", io + ["--dtype", "f16", "--tol", "2e-3"])


case("sequential", ["0", "2", "4"], [64, 128, 96, 32])
case("named", ["fc1", "fc2", "fc10"], [48, 80, 40, 16], order=[2, 0, 1])
case("deep", ["layers.%d" % i for i in range(12)], [16] + [24] * 11 + [8])

# F16: weights exact in f16, so the float64 reference of the stored values is exact.
w16, b16 = (t.astype(np.float16) for t in linear_params(20, 6))
f16 = os.path.join(work, "f16.safetensors")
save_file({"lin.weight": w16, "lin.bias": b16}, f16, metadata={"streampool.arch": "lin:linear"})
x16 = rng.uniform(-1, 1, size=(10, 20)).astype(np.float32)
x16.astype("<f4").tofile(os.path.join(work, "f16.in.f32"))
reference([(w16.astype(np.float32), b16.astype(np.float32))], x16).astype("<f4").tofile(
    os.path.join(work, "f16.out.f32"))
run("F16 weights", ["--model", f16, "--inputs", os.path.join(work, "f16.in.f32"),
                    "--expect", os.path.join(work, "f16.out.f32"), "--tol", "1e-5"])
bare = os.path.join(work, "bare.safetensors")
save_file({"0.weight": w16, "0.bias": b16}, bare)
run("bare state dict refused", ["--model", bare, "--inputs", os.path.join(work, "f16.in.f32"),
                                "--expect", os.path.join(work, "f16.out.f32")],
    expect_ok=False, expect_text="no architecture given")

print("%d passed, %d failed" % (passed, failures))
sys.exit(1 if failures else 0)
