#!/usr/bin/env python3
"""Makes the golden cases the C++ tests compare against (docs/numerics.md says how).

    python3 make_goldens.py [--model DIR] [--out DIR] [--device cpu|cuda] [--only CASE ...]

--model is a folder holding the checkpoints `tiny_pi0/` and `tiny_pi05/` (default tests/data, made by
`pirt make-checkpoint`); --out defaults to tests/data/golden. For every case, --out/<case>/ gets:

  inputs.safetensors   the model-level inputs file of DESIGN.md (noise included)
  actions.safetensors  `actions` F32 [B, H, 32]: the reference run in float64, rounded to f32 (the
                       best estimate of the exact result); `actions_f32`: the same reference run in
                       float32 (what an fp32 implementation of the same math gives, for scale)
  case.json            {"steps", "model", "model_dir", "model_sha256", "batch", "horizon", "about",
                        "max_abs_actions", "max_abs_f32_vs_f64", "tolerance": {"atol", "rtol"}}
  intermediates.safetensors (three_cameras cases only; float32 run): prefix_embs, prefix_positions,
                       kv_cache.{k,v}.<layer> (post-RoPE), suffix_embs.0, suffix_positions, time.<step>,
                       v_t.<step>, adarms_cond.0 (pi0.5): for localising a mismatch.

Images are uint8 noise mapped to [-1, 1] by x/255*2-1 (openpi's Observation.from_dict); an absent
camera is all-zero uint8 (-1.0) with image_mask False, as openpi's robot transforms send it. Every
case reuses the same camera images where it can, so git stores them once (delta compression).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pi0_reference import CAMERAS, Pi0Reference, write_safetensors  # noqa: E402

# The tolerance of docs/numerics.md ("Golden tolerance"), for the fp32 CPU backend:
#   max |actions - golden| <= ATOL + RTOL * max |golden|   (max over the whole [B, H, 32] tensor)
ATOL, RTOL = 1e-5, 2e-5

# row: images (bank seed), absent cameras, valid prompt tokens, and seeds for tokens, state and noise.
CASES = {
    "three_cameras": dict(model="tiny_pi0", steps=10, dump=True,
                          about="B=1, all three cameras, 12 valid prompt tokens",
                          rows=[dict(bank=1, absent=(), ntok=12, seed=11)]),
    "camera_absent": dict(model="tiny_pi0", steps=10,
                          about="B=1, right wrist absent (zeros -> -1.0, mask False), 12 tokens",
                          rows=[dict(bank=1, absent=("right_wrist_0_rgb",), ntok=12, seed=11)]),
    "short_prompt": dict(model="tiny_pi0", steps=10,
                         about="B=1, all cameras, 3 valid prompt tokens",
                         rows=[dict(bank=1, absent=(), ntok=3, seed=12)]),
    "batch2": dict(model="tiny_pi0", steps=10,
                   about="B=2: row 0 all cameras, 12 tokens; row 1 other images, left wrist absent, 7 tokens",
                   rows=[dict(bank=1, absent=(), ntok=12, seed=11),
                         dict(bank=2, absent=("left_wrist_0_rgb",), ntok=7, seed=13)]),
    "steps1": dict(model="tiny_pi0", steps=1,
                   about="B=1, all cameras, 12 tokens, one Euler step",
                   rows=[dict(bank=1, absent=(), ntok=12, seed=11)]),
    "steps10": dict(model="tiny_pi0", steps=10,
                    about="B=1, all cameras, 20 tokens, other state and noise, ten Euler steps",
                    rows=[dict(bank=1, absent=(), ntok=20, seed=14)]),
    "pi05_three_cameras": dict(model="tiny_pi05", steps=10, dump=True,
                               about="pi0.5, B=1, all three cameras, 12 valid tokens of 200",
                               rows=[dict(bank=1, absent=(), ntok=12, seed=11)]),
    "pi05_camera_absent": dict(model="tiny_pi05", steps=10,
                               about="pi0.5, B=1, right wrist absent, 12 valid tokens of 200",
                               rows=[dict(bank=1, absent=("right_wrist_0_rgb",), ntok=12, seed=11)]),
}


def image_bank(bank: int) -> dict[str, np.ndarray]:
    """uint8 [224, 224, 3] noise per camera, fixed by the bank number."""
    rng = np.random.default_rng(1000 + bank)
    return {c: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for c in CAMERAS}


def make_inputs(rows, cfg) -> dict[str, np.ndarray]:
    B, L, H, A = len(rows), cfg.max_token_len, cfg.action_horizon, cfg.action_dim
    out = {}
    for c in CAMERAS:
        imgs, masks = [], []
        for r in rows:
            present = c not in r["absent"]
            u8 = image_bank(r["bank"])[c] if present else np.zeros((224, 224, 3), np.uint8)
            imgs.append(u8.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0))
            masks.append(present)
        out[f"image.{c}"] = np.stack(imgs).astype(np.float32)
        out[f"image_mask.{c}"] = np.array(masks, dtype=np.bool_)
    toks = np.zeros((B, L), np.int32)
    tmask = np.zeros((B, L), np.bool_)
    state = np.zeros((B, A), np.float32)
    noise = np.zeros((B, H, A), np.float32)
    for b, r in enumerate(rows):
        rng = np.random.default_rng(r["seed"])
        n = r["ntok"]
        ids = rng.integers(4, cfg.llm.vocab, n)
        ids[0] = 2  # <bos>, as the tokenizer starts every prompt (spec 8)
        if n > 2 and cfg.llm.vocab > 108:
            ids[-1] = 108  # "\n", pi0's end of prompt
        toks[b, :n], tmask[b, :n] = ids, True
        state[b, :14] = rng.standard_normal(14).astype(np.float32) * 0.5  # a robot state padded to 32
        noise[b] = rng.standard_normal((H, A)).astype(np.float32)
    out.update(tokenized_prompt=toks, tokenized_prompt_mask=tmask, state=state, noise=noise)
    return out


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description="make the golden cases (tests/data/golden)")
    ap.add_argument("--model", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data"),
                    help="folder with tiny_pi0/ and tiny_pi05/ checkpoints (default tests/data)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "golden"),
                    help="output folder (default tests/data/golden)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    a = ap.parse_args()
    repo = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    models = {}  # (name, dtype) -> Pi0Reference

    def model(name, dtype):
        if (name, dtype) not in models:
            models[(name, dtype)] = Pi0Reference.load(os.path.join(a.model, name), a.device, dtype)
        return models[(name, dtype)]

    for case, spec in CASES.items():
        if a.only and case not in a.only:
            continue
        m32, m64 = model(spec["model"], torch.float32), model(spec["model"], torch.float64)
        arrs = make_inputs(spec["rows"], m32.cfg)
        inputs = {k: torch.from_numpy(v) for k, v in arrs.items()}
        noise = inputs["noise"]
        m32.dump = {} if spec.get("dump") else None
        a32 = m32.sample_actions(inputs, noise, spec["steps"]).cpu().numpy().astype(np.float32)
        a64 = m64.sample_actions(inputs, noise, spec["steps"]).cpu().double().numpy()
        g = a64.astype(np.float32)
        d = os.path.join(a.out, case)
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "inputs.safetensors"), arrs)
        write_safetensors(os.path.join(d, "actions.safetensors"), {"actions": g, "actions_f32": a32})
        if m32.dump is not None:
            write_safetensors(os.path.join(d, "intermediates.safetensors"),
                              {k: v.numpy() for k, v in m32.dump.items() if not k.startswith("img_emb.")})
            m32.dump = None
        mdir = os.path.abspath(os.path.join(a.model, spec["model"]))
        max_abs = float(np.abs(a64).max())
        err32 = float(np.abs(a32.astype(np.float64) - a64).max())
        info = {
            "steps": spec["steps"],
            "model": spec["model"],
            "model_dir": os.path.relpath(mdir, repo) if mdir.startswith(repo + os.sep) else mdir,
            "model_sha256": sha256(os.path.join(mdir, "model.safetensors")),
            "batch": len(spec["rows"]),
            "horizon": int(g.shape[1]),
            "about": spec["about"],
            "max_abs_actions": max_abs,
            "max_abs_f32_vs_f64": err32,
            "tolerance": {"atol": ATOL, "rtol": RTOL,
                          "rule": "max|actions - golden| <= atol + rtol * max|golden|"},
        }
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        bound = ATOL + RTOL * max_abs
        print(f"{case:20s} B={len(spec['rows'])} steps={spec['steps']:2d} max|a|={max_abs:.4f} "
              f"f32-vs-f64 max abs {err32:.3e} (bound {bound:.3e}, x{bound / max(err32, 1e-30):.0f})")


if __name__ == "__main__":
    main()
