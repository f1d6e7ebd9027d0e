#!/usr/bin/env python3
"""Exports a seeded PyTorch MLP and PyTorch's own outputs, for `streampool check`.

The model is nn.Sequential(Linear, ACT, [LayerNorm,] Linear, ..., Linear) with --act (relu, gelu,
gelu_tanh, silu, tanh, none) between the layers, --layernorm adding a LayerNorm after each hidden
activation and --no-bias dropping the biases. Every file carries its description in the
safetensors "__metadata__" ({"streampool.arch": "0:linear 1:gelu 2:linear"}, from describe():
the model is what the description says, and the loader refuses a state dict without one).

Writes into --out:
  model.safetensors       the nn.Sequential state dict in float32 ("0.weight", "0.bias", "2.*", ...)
  model_bf16.safetensors  the same weights cast to bfloat16 (tests the loader's BF16 path)
  inputs.f32              --rows seeded input rows, raw little-endian float32
  out_f32.f32             PyTorch's float32 outputs with TF32 off
  out_bf16.f32            PyTorch's outputs with the model and inputs in bfloat16, as float32
  out_f64.f32             a float64 CPU reference, as float32 (for diagnosis)
The safetensors files are written by a small writer here (the format is a JSON header and raw
bytes), so the script needs only torch. Runs on CUDA when available (--device to force).
"""
import argparse
import json
import os
import struct

import torch

ACTS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "gelu_tanh": lambda: torch.nn.GELU(approximate="tanh"),
        "silu": torch.nn.SiLU, "tanh": torch.nn.Tanh, "none": torch.nn.Identity}


def describe(seq):
    """The streampool description ("0:linear 1:gelu 2:layernorm:eps=1e-05 3:linear") of an
    nn.Sequential of Linear, ReLU, GELU, SiLU, Tanh, Identity, Dropout and LayerNorm modules;
    ValueError for any other module (it has no description, so it must not be exported as one)."""
    simple = {torch.nn.ReLU: "relu", torch.nn.SiLU: "silu", torch.nn.Tanh: "tanh",
              torch.nn.Identity: "none", torch.nn.Dropout: "dropout"}
    items = []
    for name, mod in seq.named_children():
        if isinstance(mod, torch.nn.Linear):
            items.append(name + ":linear" + ("" if mod.bias is not None else ":nobias"))
        elif isinstance(mod, torch.nn.GELU):
            items.append(name + (":gelu_tanh" if mod.approximate == "tanh" else ":gelu"))
        elif isinstance(mod, torch.nn.LayerNorm) and mod.weight is not None and mod.bias is not None:
            items.append("%s:layernorm:eps=%g" % (name, mod.eps))
        elif type(mod) in simple:
            items.append(name + ":" + simple[type(mod)])
        else:
            raise ValueError("%s: %s has no streampool description" % (name, type(mod).__name__))
    return " ".join(items)


def save_safetensors(tensors, path, arch=None):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    if arch is not None:
        header["__metadata__"]["streampool.arch"] = arch
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype != torch.float32 else t.numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_f32(t, path):
    t.detach().float().contiguous().cpu().numpy().astype("<f4").tofile(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--dims", default="512,1024,1024,512")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--act", default="relu", choices=sorted(ACTS))
    ap.add_argument("--layernorm", action="store_true", help="a LayerNorm after each hidden activation")
    ap.add_argument("--no-bias", action="store_true", help="Linear layers without bias")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(a.seed)
    dims = [int(d) for d in a.dims.split(",")]
    layers = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1], bias=not a.no_bias))
        if i + 2 < len(dims):
            layers.append(ACTS[a.act]())
            if a.layernorm:
                layers.append(torch.nn.LayerNorm(dims[i + 1]))
    model = torch.nn.Sequential(*layers).eval()
    with torch.no_grad():  # LayerNorm starts as the identity affine: make its parameters matter
        for mod in model:
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    arch = describe(model)
    x = torch.rand(a.rows, dims[0]) * 2 - 1
    sd = model.state_dict()
    save_safetensors(sd, os.path.join(a.out, "model.safetensors"), arch)
    save_safetensors({k: v.to(torch.bfloat16) for k, v in sd.items()}, os.path.join(a.out, "model_bf16.safetensors"), arch)
    write_f32(x, os.path.join(a.out, "inputs.f32"))
    with torch.inference_mode():
        write_f32(model.double()(x.double()), os.path.join(a.out, "out_f64.f32"))
        m = model.float().to(a.device)
        write_f32(m(x.to(a.device)), os.path.join(a.out, "out_f32.f32"))
        mb = m.to(torch.bfloat16)
        write_f32(mb(x.to(a.device, torch.bfloat16)), os.path.join(a.out, "out_bf16.f32"))
    print("torch_export: %s, %s, dims %s, %d rows, device %s, torch %s" % (a.out, arch, a.dims, a.rows, a.device, torch.__version__))


if __name__ == "__main__":
    main()
