#!/usr/bin/env python3
"""Writes a random pi0 / pi0.5 checkpoint folder in openpi's PyTorch layout (spec 6.2).

    python3 make_random_checkpoint.py --arch tiny_pi0|tiny_pi05|pi0|pi05 --out DIR [--seed S] [--dtype bf16|f32]
                                      [--depth N]

DIR gets model.safetensors (openpi's tensor names, including the unused gemma_expert.lm_head that
openpi's converter writes) and config.json with openpi's keys plus the "pirt" block (DESIGN.md), as
src/model/config.cc:config_to_json writes it. It is independent of `pirt make-checkpoint` (which
made tests/data/tiny_*): for trying the reference and compare_openpi.py on any size, e.g. the
canonical widths at `--depth 2`, which fit this machine's memory.

Scales keep activations O(1) through the network: linear weights N(0, 1/fan_in), biases N(0, 0.02^2),
LayerNorm scales 1 + N(0, 0.1^2), RMSNorm offsets N(0, 0.1^2), token embeddings N(0, 1/width) (the
prefix multiplies them by sqrt(width)), adaRMS Dense N(0, 0.25/fan_in) (zero in training inits, trained
values in real checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pi0_reference import (  # noqa: E402
    BF16, EXP, LLM, PROJ, PWE, VIS, Config, GemmaDims, VisionDims, canonical_config, f32_to_bf16_bits,
    write_safetensors,
)


def tiny_config(pi05: bool) -> Config:
    # DESIGN.md "The tiny architecture" (src/model/config.cc:config_tiny).
    return Config(
        arch="pi05" if pi05 else "pi0",
        vision=VisionDims(224, 14, 64, 2, 4, 128),
        llm=GemmaDims(64, 4, 8, 1, 16, 128, 1024),
        expert=GemmaDims(64, 4, 8, 1, 16, 128),
        max_token_len=200 if pi05 else 48,
    )


def config_for(arch: str) -> Config:
    return {"pi0": lambda: canonical_config(False), "pi05": lambda: canonical_config(True),
            "tiny_pi0": lambda: tiny_config(False), "tiny_pi05": lambda: tiny_config(True)}[arch]()


def tensor_shapes(c: Config) -> dict[str, tuple]:
    """Every tensor of openpi's PyTorch checkpoint for config c, with its shape (spec 6.2)."""
    V, L, E = c.vision, c.llm, c.expert
    s = {
        f"{VIS}.embeddings.patch_embedding.weight": (V.width, 3, V.patch, V.patch),
        f"{VIS}.embeddings.patch_embedding.bias": (V.width,),
        f"{VIS}.embeddings.position_embedding.weight": ((V.image_size // V.patch) ** 2, V.width),
        f"{VIS}.post_layernorm.weight": (V.width,),
        f"{VIS}.post_layernorm.bias": (V.width,),
        f"{PROJ}.weight": (L.width, V.width),
        f"{PROJ}.bias": (L.width,),
        f"{PWE}.paligemma.lm_head.weight": (L.vocab, L.width),
        f"{PWE}.gemma_expert.lm_head.weight": (L.vocab, E.width),  # unused; openpi's converter writes it
        f"{LLM}.norm.weight": (L.width,),
        "action_in_proj.weight": (E.width, c.action_dim),
        "action_in_proj.bias": (E.width,),
        "action_out_proj.weight": (c.action_dim, E.width),
        "action_out_proj.bias": (c.action_dim,),
    }
    for i in range(V.depth):
        p = f"{VIS}.encoder.layers.{i}"
        for n in ("layer_norm1", "layer_norm2"):
            s[f"{p}.{n}.weight"] = s[f"{p}.{n}.bias"] = (V.width,)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[f"{p}.self_attn.{n}.weight"] = (V.width, V.width)
            s[f"{p}.self_attn.{n}.bias"] = (V.width,)
        s[f"{p}.mlp.fc1.weight"], s[f"{p}.mlp.fc1.bias"] = (V.mlp, V.width), (V.mlp,)
        s[f"{p}.mlp.fc2.weight"], s[f"{p}.mlp.fc2.bias"] = (V.width, V.mlp), (V.width,)
    for pfx, g, ada in ((LLM, L, False), (EXP, E, c.pi05)):
        for i in range(g.depth):
            p = f"{pfx}.layers.{i}"
            s[f"{p}.self_attn.q_proj.weight"] = (g.heads * g.head_dim, g.width)
            s[f"{p}.self_attn.k_proj.weight"] = (g.kv_heads * g.head_dim, g.width)
            s[f"{p}.self_attn.v_proj.weight"] = (g.kv_heads * g.head_dim, g.width)
            s[f"{p}.self_attn.o_proj.weight"] = (g.width, g.heads * g.head_dim)
            s[f"{p}.mlp.gate_proj.weight"] = (g.mlp, g.width)
            s[f"{p}.mlp.up_proj.weight"] = (g.mlp, g.width)
            s[f"{p}.mlp.down_proj.weight"] = (g.width, g.mlp)
            for n in ("input_layernorm", "post_attention_layernorm"):
                if ada:
                    s[f"{p}.{n}.dense.weight"], s[f"{p}.{n}.dense.bias"] = (3 * g.width, g.width), (3 * g.width,)
                else:
                    s[f"{p}.{n}.weight"] = (g.width,)
    if c.pi05:
        s[f"{EXP}.norm.dense.weight"], s[f"{EXP}.norm.dense.bias"] = (3 * E.width, E.width), (3 * E.width,)
        for n in ("time_mlp_in", "time_mlp_out"):
            s[f"{n}.weight"], s[f"{n}.bias"] = (E.width, E.width), (E.width,)
    else:
        s[f"{EXP}.norm.weight"] = (E.width,)
        s["state_proj.weight"], s["state_proj.bias"] = (E.width, c.action_dim), (E.width,)
        s["action_time_mlp_in.weight"], s["action_time_mlp_in.bias"] = (E.width, 2 * E.width), (E.width,)
        s["action_time_mlp_out.weight"], s["action_time_mlp_out.bias"] = (E.width, E.width), (E.width,)
    return s


def init_tensor(rng: np.random.Generator, name: str, shape: tuple, c: Config) -> np.ndarray:
    def normal(std):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("lm_head.weight"):  # the token embedding (tied) and the unused expert head
        return normal(shape[1] ** -0.5)
    if "position_embedding" in name:
        return normal(shape[1] ** -0.5)
    if "layer_norm" in name or "post_layernorm" in name:  # SigLIP LayerNorm: scale near 1
        return (1.0 + normal(0.1)) if leaf == "weight" else normal(0.1)
    if ("layernorm" in name or name.endswith(".norm.weight")) and ".dense." not in name:
        return normal(0.1)  # Gemma RMSNorm offset, used as (1 + w)
    if ".dense." in name:  # adaRMS modulation
        return normal(0.5 * shape[1] ** -0.5) if leaf == "weight" else normal(0.1)
    if leaf == "bias":
        return normal(0.02)
    fan_in = int(np.prod(shape[1:]))
    return normal(fan_in ** -0.5)


def config_json(c: Config, precision: str) -> dict:
    canonical = c.llm.width == 2048 and c.expert.width == 1024 and c.vision.width == 1152 and c.llm.depth == 18
    return {
        "action_dim": c.action_dim,
        "action_horizon": c.action_horizon,
        "paligemma_variant": "gemma_2b" if canonical else "dummy",
        "action_expert_variant": "gemma_300m" if canonical else "dummy",
        "precision": precision,
        "pirt": c.to_json(),
    }


def make_checkpoint(out_dir: str, arch: str, seed: int = 0, dtype: str = "bf16", depth: int | None = None) -> Config:
    c = config_for(arch)
    if depth:  # e.g. the canonical widths at depth 2: every size-specific constant, a fraction of the memory
        c.vision.depth = c.llm.depth = c.expert.depth = depth
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in sorted(tensor_shapes(c).items()):
        a = init_tensor(rng, name, shape, c)
        tensors[name] = BF16(f32_to_bf16_bits(a)) if dtype == "bf16" else a
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors,
                      metadata={"format": "pt", "made_by": f"make_random_checkpoint.py --arch {arch} --seed {seed}"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_json(c, "bfloat16" if dtype == "bf16" else "float32"), f, indent=2)
        f.write("\n")
    return c


def main():
    ap = argparse.ArgumentParser(description="random pi0/pi0.5 checkpoint in openpi's PyTorch layout")
    ap.add_argument("--arch", required=True, choices=["tiny_pi0", "tiny_pi05", "pi0", "pi05"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--depth", type=int, help="override the depth of SigLIP, the LLM and the expert")
    a = ap.parse_args()
    c = make_checkpoint(a.out, a.arch, a.seed, a.dtype, a.depth)
    print(f"wrote {a.out}: {c.arch}, vision {c.vision.width}x{c.vision.depth}, llm {c.llm.width}x{c.llm.depth}, "
          f"expert {c.expert.width}x{c.expert.depth}")


if __name__ == "__main__":
    main()
