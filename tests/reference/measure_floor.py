#!/usr/bin/env python3
"""Measures the fp32 noise floor of the reference (float32 run vs float64 run) and how far some small,
plausible mistakes move the actions, for choosing the golden tolerance (docs/numerics.md).

    python3 measure_floor.py --model DIR [--device cpu|cuda] [--steps 10] [--json OUT] [--no-perturb]
    python3 measure_floor.py --random pi0|pi05|tiny_pi0|tiny_pi05 [--seed 0] ...   (makes the checkpoint first)

Cases: B=1 all cameras and 12 prompt tokens; B=1 right wrist absent. Every number is against the
float64 run of the same inputs: max abs error, relative L2 error, and max|actions|.
Perturbations (each a float32 run with one change):
  rope_jax        RoPE angles as JAX computes them (pos / timescale) instead of HF's pos * inv_freq
  gelu_exact      erf GELU instead of the tanh approximation
  rms_eps_1e-5    RMSNorm eps 1e-5 instead of 1e-6
  bf16_time_emb   time embedding rounded to bf16
  bf16_rope       RoPE cos/sin rounded to bf16 (what HF's bf16 path does)
  bf16_kv         prefix KV cache rounded to bf16
  bf16_residual   the residual stream rounded to bf16 after every Gemma layer (a crude bf16-activation model)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens  # noqa: E402
import pi0_reference as ref  # noqa: E402

CASES = {
    "three_cameras": [dict(bank=1, absent=(), ntok=12, seed=11)],
    "camera_absent": [dict(bank=1, absent=("right_wrist_0_rgb",), ntok=12, seed=11)],
}


def bf16(x):
    return x.to(torch.bfloat16).to(x.dtype)


def perturbed(model: ref.Pi0Reference, kind: str) -> ref.Pi0Reference:
    """A shallow copy of `model` (same weights) with one change."""
    m = ref.Pi0Reference.__new__(ref.Pi0Reference)
    m.__dict__.update(model.__dict__)
    if kind == "gelu_exact":
        m.gelu_approx = "none"
    elif kind == "rms_eps_1e-5":
        m.rms_eps = 1e-5
    elif kind == "bf16_time_emb":
        m.time_embedding = lambda t: bf16(ref.Pi0Reference.time_embedding(m, t))
    elif kind in ("rope_jax", "bf16_rope"):
        def rope(x, pos):
            D = x.shape[-1]
            if kind == "rope_jax":  # gemma.py:_apply_rope
                timescale = ref.ROPE_THETA ** ((2.0 / D) * torch.arange(D // 2, device=x.device, dtype=m.dtype))
                ang = pos.to(m.dtype)[:, :, None] / timescale[None, None, :]
            else:
                inv = 1.0 / (ref.ROPE_THETA ** (torch.arange(0, D, 2, device=x.device).to(m.dtype) / D))
                ang = pos.to(m.dtype)[:, :, None] * inv[None, None, :]
            cos, sin = torch.cos(ang)[:, :, None, :], torch.sin(ang)[:, :, None, :]
            if kind == "bf16_rope":
                cos, sin = bf16(cos), bf16(sin)
            x1, x2 = x[..., : D // 2], x[..., D // 2:]
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        m.rope = rope
    elif kind == "bf16_kv":
        m.prefix_kv_cache = lambda *a: [(bf16(k), bf16(v)) for k, v in ref.Pi0Reference.prefix_kv_cache(m, *a)]
    elif kind == "bf16_residual":
        def layer(*a, **k):
            x, kv = ref.Pi0Reference.gemma_layer(m, *a, **k)
            return bf16(x), kv
        m.gemma_layer = layer
    else:
        raise ValueError(kind)
    return m


PERTURBATIONS = ("rope_jax", "gelu_exact", "rms_eps_1e-5", "bf16_time_emb", "bf16_rope", "bf16_kv", "bf16_residual")


def err(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return {"max_abs": float((a - b).abs().max()), "rel_l2": float((a - b).norm() / b.norm()),
            "max_abs_actions": float(b.abs().max())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", help="checkpoint folder")
    g.add_argument("--random", choices=["pi0", "pi05", "tiny_pi0", "tiny_pi05"], help="make a random checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-perturb", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    mdir = a.model
    if a.random:
        import make_random_checkpoint
        mdir = os.path.join(tempfile.mkdtemp(prefix="pirt_floor_"), a.random)
        t0 = time.time()
        make_random_checkpoint.make_checkpoint(mdir, a.random, a.seed)
        print(f"made {a.random} in {time.time() - t0:.0f} s", flush=True)
    t0 = time.time()
    m32 = ref.Pi0Reference.load(mdir, a.device, torch.float32)
    m64 = ref.Pi0Reference.load(mdir, a.device, torch.float64)
    print(f"loaded {m32.cfg.arch} (llm {m32.cfg.llm.width}x{m32.cfg.llm.depth}) in {time.time() - t0:.0f} s", flush=True)
    out = {"model": mdir, "arch": m32.cfg.arch, "llm_width": m32.cfg.llm.width, "device": a.device,
           "torch": torch.__version__, "steps": a.steps, "cases": {}}
    for case, rows in CASES.items():
        inp = {k: torch.from_numpy(v) for k, v in make_goldens.make_inputs(rows, m32.cfg).items()}
        t0 = time.time()
        a64 = m64.sample_actions(inp, inp["noise"], a.steps)
        a32 = m32.sample_actions(inp, inp["noise"], a.steps)
        r = {"f32_vs_f64": err(a32, a64), "seconds_f32_plus_f64": time.time() - t0}
        print(f"{case}: f32 vs f64 {r['f32_vs_f64']}", flush=True)
        if not a.no_perturb:
            for kind in PERTURBATIONS:
                r[kind] = err(perturbed(m32, kind).sample_actions(inp, inp["noise"], a.steps), a64)
                print(f"  {kind:14s} max abs {r[kind]['max_abs']:.3e}  rel L2 {r[kind]['rel_l2']:.3e}", flush=True)
        out["cases"][case] = r
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
