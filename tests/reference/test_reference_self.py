#!/usr/bin/env python3
"""Self-checks of pi0_reference.py: properties that hold if the masking, positions and I/O are right.

    python3 test_reference_self.py [--model DIR]      (or: python3 -m pytest test_reference_self.py)

--model is a checkpoint folder (default tests/data/tiny_pi0 and tiny_pi05 when present, else random
ones made by make_random_checkpoint.py in a temporary folder). About a minute on two CPU cores.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens  # noqa: E402
import make_random_checkpoint  # noqa: E402
import pi0_reference as ref  # noqa: E402

DATA = os.path.join(HERE, "..", "data")
_tmp = None
_models = {}


def model_dir(arch: str) -> str:
    """tests/data/tiny_<arch> when committed, else a random checkpoint of the same sizes."""
    global _tmp
    d = os.path.join(DATA, f"tiny_{arch}")
    if os.path.exists(os.path.join(d, "model.safetensors")):
        return d
    if _tmp is None:
        _tmp = tempfile.mkdtemp(prefix="pirt_ref_selftest_")
    d = os.path.join(_tmp, f"tiny_{arch}")
    if not os.path.exists(d):
        make_random_checkpoint.make_checkpoint(d, f"tiny_{arch}", seed=3)
    return d


def model(arch="pi0", dtype=torch.float64) -> ref.Pi0Reference:
    if (arch, dtype) not in _models:
        _models[(arch, dtype)] = ref.Pi0Reference.load(model_dir(arch), "cpu", dtype)
    return _models[(arch, dtype)]


def inputs_for(m, rows):
    return {k: torch.from_numpy(v) for k, v in make_goldens.make_inputs(rows, m.cfg).items()}


ROW = dict(bank=1, absent=("right_wrist_0_rgb",), ntok=9, seed=5)


# -- masking and positions ------------------------------------------------------------------------

def _actions_with_dropped_prefix(m, inp, steps):
    """Runs the sampler with the absent camera's and the padded text's tokens removed from the prefix
    (spec 3.3 'exact simplification'): positions then count only valid tokens, as before."""
    orig = m.embed_prefix

    def embed_valid_only(*a, **k):
        embs, pad, ar = orig(*a, **k)
        keep = pad[0]  # B = 1
        return embs[:, keep], pad[:, keep], ar[:, keep]

    m.embed_prefix = embed_valid_only
    try:
        return m.sample_actions(inp, inp["noise"], steps)
    finally:
        del m.embed_prefix


def test_dropping_absent_camera_and_padding_is_exact():
    for arch in ("pi0", "pi05"):
        m = model(arch)
        inp = inputs_for(m, [ROW])
        full = m.sample_actions(inp, inp["noise"], 3)
        dropped = _actions_with_dropped_prefix(m, inp, 3)
        err = float((full - dropped).abs().max())
        assert err < 1e-10 * float(full.abs().max()), f"{arch}: dropping masked tokens changed actions by {err}"


def test_masked_contents_do_not_matter():
    """An absent camera's pixels and padded token ids are never seen: actions are bit-identical."""
    m = model("pi0", torch.float32)
    inp = inputs_for(m, [ROW])
    a = m.sample_actions(inp, inp["noise"], 2)
    inp2 = dict(inp)
    inp2["image.right_wrist_0_rgb"] = torch.rand_like(inp["image.right_wrist_0_rgb"]) * 2 - 1
    toks = inp["tokenized_prompt"].clone()
    toks[~inp["tokenized_prompt_mask"]] = 777 % m.cfg.llm.vocab
    inp2["tokenized_prompt"] = toks
    b = m.sample_actions(inp2, inp["noise"], 2)
    assert torch.equal(a, b), f"masked contents leaked: max diff {float((a - b).abs().max())}"


def test_present_contents_do_matter():
    """The converse: a present camera, a valid token and the state (pi0) all change the actions."""
    m = model("pi0", torch.float32)
    row = dict(ROW, absent=())
    inp = inputs_for(m, [row])
    a = m.sample_actions(inp, inp["noise"], 2)
    for key in ("image.right_wrist_0_rgb", "tokenized_prompt", "state"):
        inp2 = dict(inp)
        if key == "tokenized_prompt":
            t = inp[key].clone()
            t[0, 1] = (t[0, 1] + 1) % m.cfg.llm.vocab
            inp2[key] = t
        else:
            inp2[key] = inp[key] + 0.1
        b = m.sample_actions(inp2, inp["noise"], 2)
        assert float((a - b).abs().max()) > 1e-4, f"{key} has no effect"


def test_batch_rows_are_independent():
    m = model("pi0")
    rows = [dict(bank=1, absent=(), ntok=12, seed=11), dict(bank=2, absent=("left_wrist_0_rgb",), ntok=7, seed=13)]
    inp = inputs_for(m, rows)
    both = m.sample_actions(inp, inp["noise"], 2)
    for b, r in enumerate(rows):
        one = inputs_for(m, [r])
        alone = m.sample_actions(one, one["noise"], 2)
        assert float((both[b] - alone[0]).abs().max()) < 1e-12


# -- pieces ---------------------------------------------------------------------------------------

def test_euler_schedule_runs_exactly_n_steps():
    for n in range(1, 25):
        dt = torch.tensor(-1.0 / n, dtype=torch.float32)
        t = torch.tensor(1.0, dtype=torch.float32)
        ts = []
        while t >= -dt / 2:
            ts.append(float(t))
            t = t + dt
        assert len(ts) == n, (n, ts)
        if n == 10:  # spec 4.1: the f32 values fed in at 10 steps, e.g. 0.899999976, last 0.099999927
            assert ts[0] == 1.0 and abs(ts[1] - 0.899999976) < 1e-9 and abs(ts[9] - 0.099999927) < 1e-9, ts


def test_make_att_2d_masks_blocks():
    # pi0 suffix: [state | a0 a1 a2] with ar [1, 1, 0, 0]; the state sees only itself, actions see all.
    pad = torch.ones(1, 4, dtype=torch.bool)
    m = ref.make_att_2d_masks(pad, torch.tensor([[1, 1, 0, 0]]))[0].int().tolist()
    assert m == [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    pad = torch.tensor([[True, False, True]])
    m = ref.make_att_2d_masks(pad, torch.zeros(1, 3, dtype=torch.int64))[0].int().tolist()
    assert m == [[1, 0, 1], [0, 0, 0], [1, 0, 1]]


def test_posemb_sincos_formula():
    t = torch.tensor([0.7, 0.1], dtype=torch.float32)
    e = ref.posemb_sincos(t, 8).numpy()
    frac = np.linspace(0, 1, 4)
    period = 4e-3 * (4.0 / 4e-3) ** frac
    for b in range(2):
        arg = float(t[b]) * 2 * math.pi / period
        assert np.allclose(e[b], np.concatenate([np.sin(arg), np.cos(arg)]), rtol=0, atol=1e-12)


def test_rope_is_relative():
    """q(p+s).k(p'+s) == q(p).k(p'): RoPE depends only on position differences."""
    m = model("pi0")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, 16, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 16, generator=g, dtype=torch.float64)

    def dot(pq, pk):
        return float((m.rope(q, torch.tensor([[pq]])) * m.rope(k, torch.tensor([[pk]]))).sum())

    assert abs(dot(5, 2) - dot(105, 102)) < 1e-10
    assert abs(dot(5, 2) - dot(5, 3)) > 1e-6


def test_safetensors_roundtrip_and_bf16():
    x = np.array([1.0, -2.5, 3.140625, 1e-3, 65504.0], np.float32)
    bits = ref.f32_to_bf16_bits(x)
    back = ref.bf16_bits_to_f32(bits)
    assert np.array_equal(back[:3], x[:3])  # exactly representable in bf16
    assert np.allclose(back, x, rtol=2 ** -8)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        src = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.array([[1, -2]], np.int32),
               "b": np.array([True, False]), "h": ref.BF16(bits), "s": np.float32(2.0).reshape(())}
        ref.write_safetensors(p, src)
        got = ref.read_safetensors(p)
        assert np.array_equal(got["f"], src["f"]) and got["f"].dtype == np.float32
        assert np.array_equal(got["i"], src["i"]) and got["i"].dtype == np.int32
        assert np.array_equal(got["b"], src["b"]) and got["b"].dtype == np.bool_
        assert np.array_equal(got["h"], back) and got["s"].shape == ()


def test_lerobot_prefix_and_embed_tokens_alias():
    """A checkpoint with lerobot's `model.` prefix and the embedding under embed_tokens gives the same actions."""
    src = model_dir("pi0")
    m = model("pi0", torch.float32)
    inp = inputs_for(m, [ROW])
    a = m.sample_actions(inp, inp["noise"], 1)
    raw = ref.read_safetensors(os.path.join(src, "model.safetensors"))
    renamed = {}
    for k, v in raw.items():
        if k == ref.EMBED_NAMES[0]:
            k = ref.EMBED_NAMES[1]
        renamed["model." + k] = np.array(v)
    with tempfile.TemporaryDirectory() as d:
        ref.write_safetensors(os.path.join(d, "model.safetensors"), renamed)
        with open(os.path.join(src, "config.json")) as f, open(os.path.join(d, "config.json"), "w") as g:
            g.write(f.read())
        m2 = ref.Pi0Reference.load(d, "cpu", torch.float32)
        b = m2.sample_actions(inp, inp["noise"], 1)
    assert torch.equal(a, b)


def test_cli_writes_actions():
    m = model("pi0", torch.float32)
    with tempfile.TemporaryDirectory() as d:
        arrs = make_goldens.make_inputs([ROW], m.cfg)
        ref.write_safetensors(os.path.join(d, "in.safetensors"), arrs)
        ref.main(["--model", model_dir("pi0"), "--inputs", os.path.join(d, "in.safetensors"),
                  "--out", os.path.join(d, "out.safetensors"), "--steps", "2"])
        out = ref.read_safetensors(os.path.join(d, "out.safetensors"))["actions"]
        want = m.sample_actions({k: torch.from_numpy(v) for k, v in arrs.items()}, torch.from_numpy(arrs["noise"]), 2)
        assert out.dtype == np.float32 and out.shape == (1, m.cfg.action_horizon, m.cfg.action_dim)
        assert np.array_equal(out, want.numpy())


if __name__ == "__main__":
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            passed += 1
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
