#!/usr/bin/env python3
"""Writes tests/fixtures/mlp/: small PyTorch MLPs with their own outputs, for tests/cli/torch_fixtures.sh.

Run once with torch and safetensors (CI has no torch; the files are committed):
  python scripts/make_mlp_fixtures.py [--out tests/fixtures/mlp]

Each model NAME is an nn.Sequential; NAME.safetensors is its state dict written by
safetensors.torch.save_file (the real library) with the description in "__metadata__"
(scripts/torch_export.py's describe()), NAME.in.f32 holds 32 seeded input rows, NAME.out.f32
PyTorch's float32 outputs (CPU, eval forward) and NAME.out_bf16.f32 its outputs with the model and
the inputs in bfloat16 (what a bf16 run is compared with: bf16 rounding alone moves a LayerNorm
model's outputs by up to 3.5e-2 from float32 in PyTorch too). F16 weights are stored as F16 and
the reference runs them upcast to float32, as the loader does. Besides:
  gelu_bare.safetensors  the gelu model's state dict with no description (refused by the loader)
  hf/model.safetensors + hf/config.json  the layernorm model in a folder, described by config.json
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_export import describe  # noqa: E402

nn = torch.nn
ROWS = 32


def models():
    yield "gelu", nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)), torch.float32
    yield "gelu_tanh_ln", nn.Sequential(nn.Linear(16, 24), nn.GELU(approximate="tanh"), nn.LayerNorm(24),
                                        nn.Linear(24, 8)), torch.float32
    yield "silu_nobias", nn.Sequential(nn.Linear(16, 32, bias=False), nn.SiLU(), nn.Linear(32, 8, bias=False)), \
        torch.float32
    yield "tanh_f16", nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 20), nn.Tanh(), nn.Linear(20, 6)), \
        torch.float16
    yield "relu_ln_eps", nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.LayerNorm(32, eps=1e-6),
                                       nn.Linear(32, 4)), torch.float32
    yield "linear_ln", nn.Sequential(nn.Linear(10, 16), nn.LayerNorm(16), nn.Linear(16, 16), nn.Linear(16, 3)), \
        torch.float32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "mlp"))
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "hf"), exist_ok=True)
    torch.manual_seed(11)
    for name, model, dt in models():
        model = model.eval()
        with torch.no_grad():
            for mod in model:
                if isinstance(mod, nn.LayerNorm):  # away from the identity so the norm's parameters matter
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.5, 0.5)
            sd = {k: v.to(dt).contiguous() for k, v in model.state_dict().items()}
            model.load_state_dict({k: v.float() for k, v in sd.items()})  # the stored weights, exactly
            x = torch.rand(ROWS, model[0].in_features) * 4 - 2
            y = model(x)
            y_bf16 = model.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
            model.float()
        arch = describe(model)
        save_file(sd, os.path.join(a.out, name + ".safetensors"), metadata={"streampool.arch": arch})
        x.numpy().astype("<f4").tofile(os.path.join(a.out, name + ".in.f32"))
        y.numpy().astype("<f4").tofile(os.path.join(a.out, name + ".out.f32"))
        y_bf16.numpy().astype("<f4").tofile(os.path.join(a.out, name + ".out_bf16.f32"))
        if name == "gelu":
            save_file(sd, os.path.join(a.out, "gelu_bare.safetensors"))
        if name == "gelu_tanh_ln":
            save_file(sd, os.path.join(a.out, "hf", "model.safetensors"))
            with open(os.path.join(a.out, "hf", "config.json"), "w") as f:
                json.dump({"model_type": "mlp", "streampool.arch": arch}, f, indent=2)
                f.write("\n")
        print("%-14s %-60s %s" % (name, arch, str(dt).replace("torch.", "")))
    print("torch %s, written to %s" % (torch.__version__, os.path.normpath(a.out)))


if __name__ == "__main__":
    main()
