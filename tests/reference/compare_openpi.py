#!/usr/bin/env python3
"""Runs openpi's own PyTorch model (PI0Pytorch.sample_actions) on a checkpoint and an inputs file, and
compares its actions with pi0_reference.py (and with a golden, when given).

    python compare_openpi.py --openpi OPENPI_REPO --model DIR --inputs FILE [--steps N]
                             [--precision float32|bfloat16] [--golden actions.safetensors] [--json OUT]
    python compare_openpi.py --openpi OPENPI_REPO --golden-dir tests/data/golden --models DIR [...]

Needs a Python with torch >= 2.x, numpy and transformers==4.53.2 with openpi's
src/openpi/models_pytorch/transformers_replace/* copied over the installed transformers package
(openpi's own install step). None of openpi's code is part of this project: OPENPI_REPO is a checkout
of Physical-Intelligence/openpi made outside the repository. docs/numerics.md records the results.

What is patched around openpi, and why (nothing inside its model math):
- `openpi.models.gemma` (JAX/flax) is replaced by a stub whose get_config returns the checkpoint's
  Gemma sizes: pi0_pytorch.py imports it only for get_config, and JAX is not needed for the torch path.
- `openpi.shared.image_tools` (JAX) is stubbed: it is only used to resize non-224 images.
- openpi's PaliGemmaWithExpertModel fixes SigLIP to So400m and the vocabulary to 257152. For a checkpoint
  of other sizes (the tiny test model) the HF configs are edited at construction to the checkpoint's
  vision width/depth/heads/mlp, projector width and vocabulary. For the canonical sizes nothing changes.
- The weights are loaded with safetensors.torch.load_model(model, path) as openpi's
  BaseModelConfig.load_pytorch does, except that the unused gemma_expert.lm_head may be absent; for bfloat16, to_bfloat16_for_selected_params("bfloat16") follows
  as in policy_config.create_trained_policy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pi0_reference as ref  # noqa: E402


def import_openpi(openpi_repo: str, cfg: ref.Config):
    """Imports openpi's PI0Pytorch with the stubs and size patches described in the module docstring."""
    src = os.path.join(openpi_repo, "src")
    if not os.path.isdir(os.path.join(src, "openpi")):
        raise SystemExit(f"{openpi_repo}: not an openpi checkout (no src/openpi)")
    sys.path.insert(0, src)
    import openpi  # noqa: F401  (real package __init__)
    import openpi.models  # noqa: F401
    import openpi.shared  # noqa: F401

    sizes = {"pirt_llm": cfg.llm, "pirt_expert": cfg.expert}

    def get_config(variant):
        g = sizes[variant]
        return types.SimpleNamespace(width=g.width, depth=g.depth, mlp_dim=g.mlp, num_heads=g.heads,
                                     num_kv_heads=g.kv_heads, head_dim=g.head_dim, lora_configs={})

    gemma_stub = types.ModuleType("openpi.models.gemma")
    gemma_stub.get_config = get_config
    sys.modules["openpi.models.gemma"] = gemma_stub
    image_tools_stub = types.ModuleType("openpi.shared.image_tools")

    def resize_with_pad_torch(*a, **k):
        raise RuntimeError("inputs must already be 224x224")

    image_tools_stub.resize_with_pad_torch = resize_with_pad_torch
    sys.modules["openpi.shared.image_tools"] = image_tools_stub

    from openpi.models_pytorch import gemma_pytorch, pi0_pytorch

    real_paligemma = gemma_pytorch.PaliGemmaForConditionalGeneration
    real_gemma = gemma_pytorch.GemmaForCausalLM

    def paligemma_sized(config):
        v = config.vision_config
        v.hidden_size, v.intermediate_size = cfg.vision.width, cfg.vision.mlp
        v.num_hidden_layers, v.num_attention_heads = cfg.vision.depth, cfg.vision.heads
        v.patch_size, v.image_size = cfg.vision.patch, cfg.vision.image_size
        v.projection_dim = cfg.llm.width
        config.projection_dim = cfg.llm.width
        config.text_config.vocab_size = cfg.llm.vocab
        config._vocab_size = cfg.llm.vocab  # noqa: SLF001
        return real_paligemma(config=config)

    def gemma_sized(config):
        config.vocab_size = cfg.llm.vocab  # the unused expert lm_head as the checkpoint stores it
        return real_gemma(config=config)

    gemma_pytorch.PaliGemmaForConditionalGeneration = paligemma_sized
    gemma_pytorch.GemmaForCausalLM = gemma_sized
    return pi0_pytorch


def openpi_actions(openpi_repo, model_dir, inputs, noise, steps, precision):
    import safetensors.torch

    header, _ = ref.read_safetensors_header(os.path.join(model_dir, "model.safetensors"))
    cfg = ref.load_config(model_dir, [n for n in header if n != "__metadata__"])
    pi0_pytorch = import_openpi(openpi_repo, cfg)
    H = noise.shape[1]
    mcfg = types.SimpleNamespace(pi05=cfg.pi05, paligemma_variant="pirt_llm", action_expert_variant="pirt_expert",
                                 dtype=precision, action_dim=cfg.action_dim, action_horizon=H,
                                 pytorch_compile_mode=None)
    model = pi0_pytorch.PI0Pytorch(mcfg)
    path = os.path.join(model_dir, "model.safetensors")
    # openpi's load_pytorch calls load_model strictly. A pirt-made checkpoint omits the unused
    # gemma_expert.lm_head (random in openpi's converter), so only that one may be missing here.
    missing, unexpected = safetensors.torch.load_model(model, path, strict=False)
    missing = set(missing) - set(ref.UNUSED_NAMES)
    if missing or unexpected:
        raise SystemExit(f"{path}: does not load into openpi's model: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    if precision == "bfloat16":
        model.paligemma_with_expert.to_bfloat16_for_selected_params("bfloat16")
    model.eval()
    # What Policy.infer hands the model after Observation.from_dict: CHW float images in [-1, 1].
    obs = types.SimpleNamespace(
        images={c: inputs[f"image.{c}"].permute(0, 3, 1, 2).contiguous() for c in ref.CAMERAS},
        image_masks={c: inputs[f"image_mask.{c}"] for c in ref.CAMERAS},
        state=inputs["state"], tokenized_prompt=inputs["tokenized_prompt"],
        tokenized_prompt_mask=inputs["tokenized_prompt_mask"], token_ar_mask=None, token_loss_mask=None)
    with torch.no_grad():
        out = model.sample_actions(torch.device("cpu"), obs, noise=noise.clone(), num_steps=steps)
    return out.float().numpy()


def errors(a, b):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return {"max_abs": float(np.abs(a64 - b64).max()),
            "rel_l2": float(np.linalg.norm(a64 - b64) / np.linalg.norm(b64)),
            "max_abs_actions": float(np.abs(b64).max())}


def compare_one(openpi_repo, model_dir, inputs_path, steps, precision, golden=None):
    inputs = ref.load_inputs(inputs_path)
    noise = inputs["noise"]
    ours = {}
    for dt in ("float32", "float64"):
        m = ref.Pi0Reference.load(model_dir, "cpu", getattr(torch, dt))
        ours[dt] = m.sample_actions(inputs, noise, steps).double().numpy()
        del m
    theirs = openpi_actions(openpi_repo, model_dir, inputs, noise, steps, precision)
    res = {"inputs": inputs_path, "model": model_dir, "steps": steps, "openpi_precision": precision,
           "openpi_vs_reference_f32": errors(theirs, ours["float32"]),
           "openpi_vs_reference_f64": errors(theirs, ours["float64"]),
           "reference_f32_vs_f64": errors(ours["float32"], ours["float64"])}
    if golden:
        g = ref.read_safetensors(golden)["actions"]
        res["openpi_vs_golden"] = errors(theirs, g)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--openpi", required=True, help="checkout of Physical-Intelligence/openpi (outside this repo)")
    ap.add_argument("--model", help="checkpoint folder")
    ap.add_argument("--inputs", help="inputs safetensors")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--golden", help="actions.safetensors to compare with too")
    ap.add_argument("--golden-dir", help="run every case of this folder (tests/data/golden)")
    ap.add_argument("--models", help="with --golden-dir: folder holding the checkpoints named in case.json")
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results = []
    if a.golden_dir:
        # Each case runs in a fresh process: openpi is imported with the sizes of that case's model.
        import subprocess
        import tempfile
        for case in sorted(os.listdir(a.golden_dir)):
            d = os.path.join(a.golden_dir, case)
            with open(os.path.join(d, "case.json")) as f:
                info = json.load(f)
            mdir = os.path.join(a.models, info["model"]) if a.models else info["model_dir"]
            with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
                subprocess.run([sys.executable, __file__, "--openpi", a.openpi, "--model", mdir,
                                "--inputs", os.path.join(d, "inputs.safetensors"), "--steps", str(info["steps"]),
                                "--golden", os.path.join(d, "actions.safetensors"), "--precision", a.precision,
                                "--json", tmp.name], check=True, stdout=subprocess.DEVNULL)
                r = json.load(open(tmp.name))[0]
            r["case"] = case
            results.append(r)
    else:
        if not (a.model and a.inputs):
            ap.error("give --model and --inputs, or --golden-dir")
        results.append(compare_one(a.openpi, a.model, a.inputs, a.steps, a.precision, a.golden))
    for r in results:
        o32, o64 = r["openpi_vs_reference_f32"], r["openpi_vs_reference_f64"]
        print(f"{r.get('case', r['inputs'])}: openpi({r['openpi_precision']}) vs reference f32: "
              f"max abs {o32['max_abs']:.3e} rel L2 {o32['rel_l2']:.3e}; vs f64: max abs {o64['max_abs']:.3e} "
              f"rel L2 {o64['rel_l2']:.3e}; reference f32 vs f64 max abs "
              f"{r['reference_f32_vs_f64']['max_abs']:.3e}; max|a| {o64['max_abs_actions']:.3f}"
              + (f"; vs golden max abs {r['openpi_vs_golden']['max_abs']:.3e}" if "openpi_vs_golden" in r else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
