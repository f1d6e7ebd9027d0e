#!/usr/bin/env python3
"""Exports a seeded PyTorch MLP and PyTorch's own outputs, for `streampool check`.

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


def save_safetensors(tensors, path):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    names = {torch.float32: "F32", torch.bfloat16: "BF16"}
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
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
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(a.seed)
    dims = [int(d) for d in a.dims.split(",")]
    layers = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i + 2 < len(dims):
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).eval()
    x = torch.rand(a.rows, dims[0]) * 2 - 1
    sd = model.state_dict()
    save_safetensors(sd, os.path.join(a.out, "model.safetensors"))
    save_safetensors({k: v.to(torch.bfloat16) for k, v in sd.items()}, os.path.join(a.out, "model_bf16.safetensors"))
    write_f32(x, os.path.join(a.out, "inputs.f32"))
    with torch.inference_mode():
        write_f32(model.double()(x.double()), os.path.join(a.out, "out_f64.f32"))
        m = model.float().to(a.device)
        write_f32(m(x.to(a.device)), os.path.join(a.out, "out_f32.f32"))
        mb = m.to(torch.bfloat16)
        write_f32(mb(x.to(a.device, torch.bfloat16)), os.path.join(a.out, "out_bf16.f32"))
    print("torch_export: %s, dims %s, %d rows, device %s, torch %s" % (a.out, a.dims, a.rows, a.device, torch.__version__))


if __name__ == "__main__":
    main()
