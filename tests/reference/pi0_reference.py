#!/usr/bin/env python3
"""Independent PyTorch reference of openpi's pi0 / pi0.5 `sample_actions`.

Plain torch: no transformers, no openpi code. Each step cites the openpi function it mirrors
(paths relative to Physical-Intelligence/openpi, spec: shared/spec/openpi.md sections 1-5).
It computes in one dtype throughout (float32 by default, float64 with --dtype float64); it does
NOT emulate openpi's bf16 activations. The goldens in tests/data/golden/ are made with it, and
docs/numerics.md says how its numbers relate to openpi's and what tolerance the C++ backends get.

    python3 pi0_reference.py --model DIR --inputs FILE --out FILE [--steps N]
                             [--device cpu|cuda] [--dtype float32|float64] [--dump FILE]

DIR holds model.safetensors (openpi's PyTorch names, spec 6.2; lerobot's `model.` prefix is
accepted) and config.json (openpi's keys, plus the "pirt" block that gives every dimension; a
config.json without it means the canonical full-size pi0 / pi0.5). FILE is the model-level
inputs file of DESIGN.md; the output holds `actions` F32 [B, H, action_dim].

Works with torch >= 1.13 (CPU or CUDA) and numpy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # models/model.py:IMAGE_KEYS, in this order
MASK_FILL = -2.3819763e38  # models/gemma.py:Attention (big_neg); pi0_pytorch.py:_prepare_attention_masks_4d
RMS_EPS = 1e-6  # models/gemma.py:RMSNorm
LN_EPS = 1e-6  # models/siglip.py (flax LayerNorm eps 1e-6); HF SiglipVisionConfig.layer_norm_eps
ROPE_THETA = 10_000.0  # models/gemma.py:_apply_rope max_wavelength

# Tensor name prefixes of openpi's PyTorch checkpoint (spec 6.2).
PWE = "paligemma_with_expert"
VIS = f"{PWE}.paligemma.model.vision_tower.vision_model"
PROJ = f"{PWE}.paligemma.model.multi_modal_projector.linear"
LLM = f"{PWE}.paligemma.model.language_model"
EXP = f"{PWE}.gemma_expert.model"
EMBED_NAMES = (f"{PWE}.paligemma.lm_head.weight", f"{LLM}.embed_tokens.weight")  # tied; either may be stored
UNUSED_NAMES = (f"{PWE}.gemma_expert.lm_head.weight",)  # random in openpi's converter, never used


# ----------------------------------------------------------------------------------------------
# safetensors, by hand: 8-byte little-endian header length, a JSON header, then the raw bytes.
# ----------------------------------------------------------------------------------------------

_NP_OF_ST = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_ST_OF_NP = {np.dtype(v).str: k for k, v in _NP_OF_ST.items()}


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 is the top half of an f32: shift the 16 bits up."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even f32 -> bf16 bits (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


class BF16:
    """Marks an array of bf16 bits (uint16) for write_safetensors."""

    def __init__(self, bits: np.ndarray):
        self.bits = np.ascontiguousarray(bits, dtype=np.uint16)


def read_safetensors_header(path: str) -> tuple[dict, int]:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


def read_safetensors(path: str, want=None) -> dict[str, np.ndarray]:
    """Returns name -> numpy array (bf16 widened to float32). `want(name)` filters (None: all).
    The file is memory-mapped; arrays are copies only where a conversion happens."""
    header, data_start = read_safetensors_header(path)
    size = os.path.getsize(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > data_start else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or (want is not None and not want(name)):
            continue
        begin, end = info["data_offsets"]
        raw = mm[data_start + begin:data_start + end]
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            arr = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
        elif info["dtype"] in _NP_OF_ST:
            arr = np.frombuffer(raw, dtype=np.dtype(_NP_OF_ST[info["dtype"]]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        out[name] = arr.reshape(shape)
    return out


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> None:
    """tensors: name -> numpy array (or BF16). Names are written sorted, data 8-byte aligned."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name]
        if isinstance(t, BF16):
            dtype, shape, data = "BF16", list(t.bits.shape), t.bits.astype("<u2").tobytes()
        else:
            a = np.asarray(t)  # (tobytes() writes C order; ascontiguousarray would make 0-d arrays 1-d)
            a = a.astype(a.dtype.newbyteorder("<"), copy=False)  # little-endian on disk
            if a.dtype.str not in _ST_OF_NP:
                raise ValueError(f"cannot write dtype {a.dtype} ({name})")
            dtype, shape, data = _ST_OF_NP[a.dtype.str], list(a.shape), a.tobytes()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------------------------
# Config: the "pirt" block of config.json (DESIGN.md), else the canonical sizes (spec 1.1-1.3).
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class VisionDims:
    image_size: int = 224
    patch: int = 14
    width: int = 1152
    depth: int = 27
    heads: int = 16
    mlp: int = 4304


@dataclasses.dataclass
class GemmaDims:
    width: int
    depth: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    vocab: int = 0


@dataclasses.dataclass
class Config:
    arch: str  # "pi0" | "pi05"
    vision: VisionDims
    llm: GemmaDims
    expert: GemmaDims
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 48

    @property
    def pi05(self) -> bool:
        return self.arch == "pi05"

    def to_json(self) -> dict:
        """The "pirt" block (same keys as src/model/config.cc:config_to_json)."""
        d = dataclasses.asdict(self)
        del d["expert"]["vocab"]
        return d


def canonical_config(pi05: bool) -> Config:
    # models/gemma.py:get_config("gemma_2b" / "gemma_300m"); models/siglip.py So400m/14; pi0_config.py.
    return Config(
        arch="pi05" if pi05 else "pi0",
        vision=VisionDims(),
        llm=GemmaDims(2048, 18, 8, 1, 256, 16384, 257152),
        expert=GemmaDims(1024, 18, 8, 1, 256, 4096),
        max_token_len=200 if pi05 else 48,
    )


def strip_prefix(name: str) -> str:
    """lerobot stores every openpi name under `model.` (spec 6.2)."""
    return name[len("model."):] if name.startswith("model.") else name


def load_config(model_dir: str, tensor_names) -> Config:
    names = {strip_prefix(n) for n in tensor_names}
    has_adarms = f"{EXP}.norm.dense.weight" in names  # openpi recognises pi0.5 by its adaRMS tensors
    path = os.path.join(model_dir, "config.json")
    j = {}
    if os.path.exists(path):
        with open(path) as f:
            j = json.load(f)
    if "pirt" in j:
        p = j["pirt"]
        cfg = Config(
            arch=p["arch"],
            vision=VisionDims(**{k: int(p["vision"][k]) for k in dataclasses.asdict(VisionDims())}),
            llm=GemmaDims(**{k: int(v) for k, v in p["llm"].items()}),
            expert=GemmaDims(**{k: int(v) for k, v in p["expert"].items() if k != "vocab"}),
            action_dim=int(p["action_dim"]),
            action_horizon=int(p["action_horizon"]),
            max_token_len=int(p["max_token_len"]),
        )
        if cfg.arch not in ("pi0", "pi05"):
            raise ValueError(f"config.json: pirt.arch must be pi0 or pi05, not {cfg.arch!r}")
        if cfg.pi05 != has_adarms:
            raise ValueError(f"config.json says {cfg.arch} but the adaRMS tensors are {'present' if has_adarms else 'absent'}")
    else:
        cfg = canonical_config(has_adarms)
        cfg.action_dim = int(j.get("action_dim", 32))
        cfg.action_horizon = int(j.get("action_horizon", 50))
        cfg.max_token_len = int(j.get("max_token_len", cfg.max_token_len))
    return cfg


# ----------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------

def make_att_2d_masks(pad: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
    """pi0.py:make_attn_mask / pi0_pytorch.py:make_att_2d_masks (spec 3.2).
    allowed[b, i, j] = cumsum(ar)[j] <= cumsum(ar)[i] and pad[i] and pad[j]."""
    cum = torch.cumsum(ar.to(torch.int64), dim=1)
    return (cum[:, None, :] <= cum[:, :, None]) & pad[:, None, :] & pad[:, :, None]


def posemb_sincos(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """pi0.py:posemb_sincos / pi0_pytorch.py:create_sinusoidal_pos_embedding (spec 4.2).
    Computed in float64 like openpi's PyTorch port (the caller casts); sin first, then cos."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    arg = (1.0 / period * 2 * math.pi)[None, :] * t.to(torch.float64)[:, None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class Pi0Reference:
    # Knobs that measure_floor.py turns to show what a tolerance can detect; leave them as they are.
    gelu_approx = "tanh"  # gemma.py FeedForward and siglip.py MlpBlock: nn.gelu (tanh approximation)
    rms_eps = RMS_EPS

    def __init__(self, cfg: Config, weights: dict, device="cpu", dtype=torch.float32):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.w = weights  # name -> torch tensor (already on device, in dtype)
        self.dump = None  # dict to collect intermediates into, when set
        self._check_shapes()

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, model_dir: str, device="cpu", dtype=torch.float32) -> "Pi0Reference":
        path = os.path.join(model_dir, "model.safetensors")
        header, _ = read_safetensors_header(path)
        names = [n for n in header if n != "__metadata__"]
        cfg = load_config(model_dir, names)
        raw = read_safetensors(path, want=lambda n: strip_prefix(n) not in UNUSED_NAMES)
        weights = {}
        for name, arr in raw.items():
            t = torch.from_numpy(np.array(arr, dtype=np.float64 if dtype == torch.float64 else np.float32))
            weights[strip_prefix(name)] = t.to(device=device, dtype=dtype)
        del raw
        # The tied token embedding (spec 6.2 note): openpi saves lm_head, lerobot also embed_tokens.
        emb = next((weights[n] for n in EMBED_NAMES if n in weights), None)
        if emb is None:
            raise ValueError(f"{path}: no token embedding (looked for {' or '.join(EMBED_NAMES)})")
        weights["embed"] = emb
        return cls(cfg, weights, device, dtype)

    def _check_shapes(self):
        c, w = self.cfg, self.w
        V, L, E = c.vision, c.llm, c.expert

        def need(name, shape):
            if name not in w:
                raise ValueError(f"checkpoint lacks {name}")
            if tuple(w[name].shape) != tuple(shape):
                raise ValueError(f"{name}: shape {tuple(w[name].shape)}, config wants {tuple(shape)}")

        need(f"{VIS}.embeddings.patch_embedding.weight", (V.width, 3, V.patch, V.patch))
        need(f"{VIS}.embeddings.position_embedding.weight", ((V.image_size // V.patch) ** 2, V.width))
        need(f"{VIS}.encoder.layers.{V.depth - 1}.mlp.fc1.weight", (V.mlp, V.width))
        need(f"{PROJ}.weight", (L.width, V.width))
        need("embed", (L.vocab, L.width))
        for pfx, g in ((LLM, L), (EXP, E)):
            need(f"{pfx}.layers.{g.depth - 1}.self_attn.q_proj.weight", (g.heads * g.head_dim, g.width))
            need(f"{pfx}.layers.0.self_attn.k_proj.weight", (g.kv_heads * g.head_dim, g.width))
            need(f"{pfx}.layers.0.mlp.gate_proj.weight", (g.mlp, g.width))
        if (L.depth, L.heads, L.kv_heads, L.head_dim) != (E.depth, E.heads, E.kv_heads, E.head_dim):
            raise ValueError("llm and expert must share depth, heads, kv_heads and head_dim (spec 1.2)")
        need("action_in_proj.weight", (E.width, c.action_dim))
        need("action_out_proj.weight", (c.action_dim, E.width))
        if c.pi05:
            need("time_mlp_in.weight", (E.width, E.width))
            need(f"{EXP}.norm.dense.weight", (3 * E.width, E.width))
        else:
            need("state_proj.weight", (E.width, c.action_dim))
            need("action_time_mlp_in.weight", (E.width, 2 * E.width))

    # -- small helpers ---------------------------------------------------------------------

    def linear(self, x, name, bias=True):
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"] if bias else None)

    def _dump(self, key, value):
        if self.dump is not None:
            self.dump[key] = value.detach().to("cpu").clone()

    # -- SigLIP (models/siglip.py; HF SiglipVisionTransformer; spec 1.3) -------------------

    def embed_image(self, img: torch.Tensor) -> torch.Tensor:
        """[B, 224, 224, 3] in [-1, 1] -> [B, 256, llm width]
        = pi0_pytorch.py:PaliGemmaWithExpertModel.embed_image -> paligemma get_image_features."""
        V = self.cfg.vision
        x = img.permute(0, 3, 1, 2)  # NHWC -> NCHW (Observation.from_dict does this in the torch path)
        # siglip.py: Conv(width, patch, strides=patch, VALID) with bias; HF SiglipVisionEmbeddings.patch_embedding
        x = F.conv2d(x, self.w[f"{VIS}.embeddings.patch_embedding.weight"],
                     self.w[f"{VIS}.embeddings.patch_embedding.bias"], stride=V.patch)
        x = x.flatten(2).transpose(1, 2)  # [B, 256, width], row-major patches (h, then w)
        x = x + self.w[f"{VIS}.embeddings.position_embedding.weight"][None]  # posemb="learn"
        B, T, W = x.shape
        nh, hd = V.heads, V.width // V.heads
        for i in range(V.depth):
            p = f"{VIS}.encoder.layers.{i}"
            # siglip.py:Encoder1DBlock: y = LN(x); y = MHDPA(y); x = x + y
            y = F.layer_norm(x, (W,), self.w[f"{p}.layer_norm1.weight"], self.w[f"{p}.layer_norm1.bias"], LN_EPS)
            q = self.linear(y, f"{p}.self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
            k = self.linear(y, f"{p}.self_attn.k_proj").view(B, T, nh, hd).transpose(1, 2)
            v = self.linear(y, f"{p}.self_attn.v_proj").view(B, T, nh, hd).transpose(1, 2)
            # HF siglip eager_attention_forward: (q @ k^T) * hd^-0.5, softmax, @ v; no mask
            probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * hd ** -0.5, dim=-1)
            a = torch.matmul(probs, v).transpose(1, 2).reshape(B, T, W)
            x = x + self.linear(a, f"{p}.self_attn.out_proj")
            # y = LN(x); y = MlpBlock(y) (Dense, gelu tanh approx, Dense); x = x + y
            y = F.layer_norm(x, (W,), self.w[f"{p}.layer_norm2.weight"], self.w[f"{p}.layer_norm2.bias"], LN_EPS)
            y = self.linear(F.gelu(self.linear(y, f"{p}.mlp.fc1"), approximate=self.gelu_approx), f"{p}.mlp.fc2")
            x = x + y
        # siglip.py: encoder_norm (HF post_layernorm); pool_type="none"
        x = F.layer_norm(x, (W,), self.w[f"{VIS}.post_layernorm.weight"], self.w[f"{VIS}.post_layernorm.bias"], LN_EPS)
        # siglip.py: head Dense (HF multi_modal_projector.linear). No 1/sqrt(width) scaling (openpi removed it).
        return self.linear(x, PROJ)

    # -- Gemma pieces (models/gemma.py; patched HF modeling_gemma.py; spec 1.4) ------------

    def rms_norm(self, x, name, cond=None):
        """gemma.py:RMSNorm / HF GemmaRMSNorm. Plain: rms(x)*(1+w). adaRMS (when the norm has a
        `dense`): (scale, shift, gate) = split3(dense(cond)); rms(x)*(1+scale)+shift, and the gate."""
        var = torch.mean(x * x, dim=-1, keepdim=True)
        n = x * torch.rsqrt(var + self.rms_eps)
        if f"{name}.dense.weight" not in self.w:
            return n * (1.0 + self.w[f"{name}.weight"]), None
        mod = self.linear(cond, f"{name}.dense")[:, None, :]  # [B, 1, 3W], broadcast over tokens
        scale, shift, gate = torch.chunk(mod, 3, dim=-1)
        return n * (1.0 + scale) + shift, gate

    @staticmethod
    def gated_residual(x, y, gate):
        """gemma.py:Block (x + y * gate for adaRMS); HF modeling_gemma._gated_residual."""
        return x + y if gate is None else x + y * gate

    def rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """gemma.py:_apply_rope / HF GemmaRotaryEmbedding + rotate_half: half-split, theta 10000.
        x [B, T, N, D], pos [B, T] int. Angles as HF computes them: inv_freq = 1/theta^(2i/D) in the
        compute dtype, angle = pos * inv_freq."""
        D = x.shape[-1]
        inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, D, 2, device=x.device, dtype=torch.int64).to(self.dtype) / D))
        ang = pos.to(self.dtype)[:, :, None] * inv_freq[None, None, :]  # [B, T, D/2]
        cos, sin = torch.cos(ang)[:, :, None, :], torch.sin(ang)[:, :, None, :]
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    @staticmethod
    def attention(q, k, v, mask):
        """gemma.py:Attention core. q [B,T,N,D] (already scaled), k/v [B,S,K,D], mask [B,T,S] bool.
        Query head h reads KV head h // (N/K) (GQA grouping; MQA for K=1).
        logits -> where(mask, logits, -2.3819763e38) -> softmax over keys -> @ v."""
        B, T, N, D = q.shape
        K = k.shape[2]
        qg = q.reshape(B, T, K, N // K, D)
        logits = torch.einsum("btkgd,bskd->bkgts", qg, k)
        logits = torch.where(mask[:, None, None, :, :], logits, torch.full_like(logits, MASK_FILL))
        probs = torch.softmax(logits, dim=-1)
        out = torch.einsum("bkgts,bskd->btkgd", probs, v)
        return out.reshape(B, T, N * D)

    def gemma_layer(self, pfx, g: GemmaDims, i, x, pos, mask, kv_prefix=None, cond=None):
        """One layer of one expert (gemma.py:Block; gemma_pytorch.py:compute_layer_complete and the
        HF decoder layer for the single-expert passes that sample_actions uses).
        Returns the new hidden state and this layer's post-RoPE (k, v) of x's tokens."""
        p = f"{pfx}.layers.{i}"
        B, T, _ = x.shape
        h, gate = self.rms_norm(x, f"{p}.input_layernorm", cond)  # pre_attention_norm
        q = self.linear(h, f"{p}.self_attn.q_proj", bias=False).view(B, T, g.heads, g.head_dim)
        k = self.linear(h, f"{p}.self_attn.k_proj", bias=False).view(B, T, g.kv_heads, g.head_dim)
        v = self.linear(h, f"{p}.self_attn.v_proj", bias=False).view(B, T, g.kv_heads, g.head_dim)
        q, k = self.rope(q, pos), self.rope(k, pos)
        q = q * g.head_dim ** -0.5  # gemma.py: q *= head_dim**-0.5 (HF scales the logits; equal for D=16, 256)
        if kv_prefix is not None:  # suffix pass: [prefix cache | own tokens], cache first (spec 3.4)
            ks, vs = torch.cat([kv_prefix[0], k], dim=1), torch.cat([kv_prefix[1], v], dim=1)
        else:
            ks, vs = k, v
        a = self.attention(q, ks, vs, mask)
        x = self.gated_residual(x, self.linear(a, f"{p}.self_attn.o_proj", bias=False), gate)
        h, gate = self.rms_norm(x, f"{p}.post_attention_layernorm", cond)  # pre_ffw_norm
        # gemma.py:FeedForward: down(gelu_tanh(gate(h)) * up(h)), no biases (GeGLU)
        y = self.linear(F.gelu(self.linear(h, f"{p}.mlp.gate_proj", bias=False), approximate=self.gelu_approx)
                        * self.linear(h, f"{p}.mlp.up_proj", bias=False), f"{p}.mlp.down_proj", bias=False)
        x = self.gated_residual(x, y, gate)
        return x, (k, v)

    # -- prefix (pi0_pytorch.py:embed_prefix; pi0.py:embed_prefix; spec 3.1-3.3) -----------

    def embed_prefix(self, images, image_masks, tokens, token_mask):
        """[img base 256 | img lwrist 256 | img rwrist 256 | text L]. Every camera is embedded, also
        an absent one (its tokens are padding). Text is E[token] * sqrt(llm width). ar = 0 throughout."""
        embs, pads = [], []
        for cam in CAMERAS:
            e = self.embed_image(images[cam])
            self._dump(f"img_emb.{cam}", e)
            embs.append(e)
            pads.append(image_masks[cam][:, None].expand(e.shape[0], e.shape[1]))
        scale = torch.tensor(math.sqrt(self.cfg.llm.width), dtype=self.dtype)  # Python float applied to the tensor
        embs.append(self.w["embed"][tokens.long()] * scale.to(self.device))
        pads.append(token_mask)
        embs, pads = torch.cat(embs, dim=1), torch.cat(pads, dim=1)
        return embs, pads, torch.zeros_like(pads, dtype=torch.int64)

    def prefix_kv_cache(self, embs, pad, ar):
        """pi0_pytorch.py:sample_actions prefix pass: expert 0 alone, mask from ar cumsum + pads,
        positions cumsum(pad) - 1. Only the per-layer post-RoPE K, V are kept."""
        mask = make_att_2d_masks(pad, ar)
        pos = torch.cumsum(pad.to(torch.int64), dim=1) - 1
        self._dump("prefix_positions", pos.to(torch.int32))
        cache, x = [], embs
        for i in range(self.cfg.llm.depth):
            x, kv = self.gemma_layer(LLM, self.cfg.llm, i, x, pos, mask)
            cache.append(kv)
            self._dump(f"kv_cache.k.{i}", kv[0])
            self._dump(f"kv_cache.v.{i}", kv[1])
        return cache  # the prefix outputs (and the final norm) are not needed

    # -- suffix (pi0_pytorch.py:embed_suffix; pi0.py:embed_suffix; spec 4.3-4.4) -----------

    def embed_suffix(self, state, x_t, t):
        """pi0: [state_proj(state) | action_time_mlp_out(swish(action_time_mlp_in([action_in_proj(x_t), temb])))],
        ar = [1, 1, 0...]. pi0.5: action_in_proj(x_t), ar = [1, 0...], and the adaRMS condition
        swish(time_mlp_out(swish(time_mlp_in(temb)))). temb = posemb_sincos(t) in float64, then cast."""
        B, H, _ = x_t.shape
        temb = self.time_embedding(t)
        a = self.linear(x_t, "action_in_proj")
        if self.cfg.pi05:
            cond = F.silu(self.linear(F.silu(self.linear(temb, "time_mlp_in")), "time_mlp_out"))
            ar = [1] + [0] * (H - 1)
            embs = a
        else:
            cond = None
            state_tok = self.linear(state, "state_proj")[:, None, :]
            u = torch.cat([a, temb[:, None, :].expand(B, H, temb.shape[-1])], dim=-1)  # action first, time second
            act = self.linear(F.silu(self.linear(u, "action_time_mlp_in")), "action_time_mlp_out")
            embs = torch.cat([state_tok, act], dim=1)
            ar = [1, 1] + [0] * (H - 1)
        pad = torch.ones(B, embs.shape[1], dtype=torch.bool, device=self.device)
        ar = torch.tensor(ar, dtype=torch.int64, device=self.device)[None, :].expand(B, -1)
        return embs, pad, ar, cond

    def time_embedding(self, t):
        return posemb_sincos(t, self.cfg.expert.width).to(self.dtype)

    def denoise_step(self, state, prefix_pad, cache, x_t, t):
        """pi0_pytorch.py:denoise_step: suffix-only pass of the action expert over the read-only
        prefix cache; returns v_t = action_out_proj(final_norm(out)[:, -H:])."""
        embs, pad, ar, cond = self.embed_suffix(state, x_t, t)
        B, T, _ = embs.shape
        P = prefix_pad.shape[1]
        mask = torch.cat([prefix_pad[:, None, :].expand(B, T, P), make_att_2d_masks(pad, ar)], dim=2)
        pos = prefix_pad.to(torch.int64).sum(dim=-1, keepdim=True) + torch.cumsum(pad.to(torch.int64), dim=1) - 1
        x = embs
        for i in range(self.cfg.expert.depth):
            x, _ = self.gemma_layer(EXP, self.cfg.expert, i, x, pos, mask, kv_prefix=cache[i], cond=cond)
        x, _ = self.rms_norm(x, f"{EXP}.norm", cond)  # final_norm_1; for adaRMS its gate is unused
        H = x_t.shape[1]
        return self.linear(x[:, -H:], "action_out_proj"), embs, cond, pos

    # -- the sampler (pi0_pytorch.py:sample_actions; pi0.py:sample_actions; spec 4.1) ------

    @torch.no_grad()
    def sample_actions(self, inputs: dict, noise: torch.Tensor, num_steps: int = 10) -> torch.Tensor:
        dev, dt_ = self.device, self.dtype
        images = {c: inputs[f"image.{c}"].to(dev, dt_) for c in CAMERAS}
        masks = {c: inputs[f"image_mask.{c}"].to(dev, torch.bool) for c in CAMERAS}
        tokens = inputs["tokenized_prompt"].to(dev)
        tmask = inputs["tokenized_prompt_mask"].to(dev, torch.bool)
        state = inputs["state"].to(dev, dt_)
        B = state.shape[0]

        embs, pad, ar = self.embed_prefix(images, masks, tokens, tmask)
        self._dump("prefix_embs", embs)
        cache = self.prefix_kv_cache(embs, pad, ar)

        # Euler from t=1 (noise) to t=0: t and dt are float32 scalars and t is accumulated in float32,
        # `while t >= -dt/2` runs exactly num_steps times (spec 4.1). x_t and v_t use the compute dtype.
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32)
        t = torch.tensor(1.0, dtype=torch.float32)
        x_t = noise.to(dev, dt_)
        step = 0
        while t >= -dt / 2:
            v_t, suffix_embs, cond, pos = self.denoise_step(state, pad, cache, x_t, t.expand(B).to(dev))
            if self.dump is not None:
                self._dump(f"time.{step}", t.reshape(1))
                self._dump(f"v_t.{step}", v_t)
                if step == 0:
                    self._dump("suffix_embs.0", suffix_embs)
                    self._dump("suffix_positions", pos.to(torch.int32))
                    if cond is not None:
                        self._dump("adarms_cond.0", cond)
            x_t = x_t + dt.to(dev, dt_) * v_t
            t = t + dt
            step += 1
        return x_t


# ----------------------------------------------------------------------------------------------
# Inputs file (DESIGN.md "Model-level inputs") and the command line.
# ----------------------------------------------------------------------------------------------

def load_inputs(path: str) -> dict[str, torch.Tensor]:
    arrs = read_safetensors(path)
    for c in CAMERAS:
        if f"image.{c}" not in arrs:
            raise ValueError(f"{path}: missing image.{c} (openpi needs all three cameras; mark absent ones with image_mask)")
    for k in ("tokenized_prompt", "tokenized_prompt_mask", "state"):
        if k not in arrs:
            raise ValueError(f"{path}: missing {k}")
    B = arrs["state"].shape[0]
    out = {}
    for k, a in arrs.items():
        a = np.array(a)
        if k.startswith("image.") and a.dtype == np.uint8:  # Observation.from_dict: x/255*2-1
            a = a.astype(np.float32) / 255.0 * 2.0 - 1.0
        out[k] = torch.from_numpy(a)
    for c in CAMERAS:  # preprocess_observation: a missing mask means the camera is present
        out.setdefault(f"image_mask.{c}", torch.ones(B, dtype=torch.bool))
    return out


def run(model_dir, inputs_path, out_path, steps=10, device="cpu", dtype="float32", dump_path=None, seed=0):
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    if device.startswith("cuda"):  # keep fp32 honest on the GPU: no TF32 in matmuls or convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = Pi0Reference.load(model_dir, device=device, dtype=torch_dtype)
    inputs = load_inputs(inputs_path)
    B = inputs["state"].shape[0]
    if "noise" in inputs:
        noise = inputs["noise"]
    else:
        print(f"note: {inputs_path} has no noise; drawing it from numpy seed {seed}", file=sys.stderr)
        shape = (B, model.cfg.action_horizon, model.cfg.action_dim)
        noise = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    if dump_path:
        model.dump = {}
    actions = model.sample_actions(inputs, noise, num_steps=steps)
    write_safetensors(out_path, {"actions": actions.to("cpu", torch.float32).numpy()})
    if dump_path:
        write_safetensors(dump_path, {k: v.numpy() if v.dtype != torch.float64 else v.float().numpy()
                                      for k, v in model.dump.items()})
    return actions


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint folder (model.safetensors + config.json)")
    ap.add_argument("--inputs", required=True, help="model-level inputs safetensors (DESIGN.md)")
    ap.add_argument("--out", required=True, help="output safetensors with `actions`")
    ap.add_argument("--steps", type=int, default=10, help="Euler steps (default 10)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--seed", type=int, default=0, help="numpy seed for noise when the inputs have none")
    ap.add_argument("--dump", help="also write intermediates (image embeddings, KV cache, v_t per step) here")
    a = ap.parse_args(argv)
    if a.steps < 1:
        ap.error("--steps must be >= 1")
    run(a.model, a.inputs, a.out, a.steps, a.device, a.dtype, a.dump, a.seed)


if __name__ == "__main__":
    main()
