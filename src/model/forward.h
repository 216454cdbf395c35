// The one forward definition of pi0 / pi0.5 sample_actions, written against the op interface.
//   siglip.cc  - the vision tower (spec 1.3)
//   gemma.cc   - one Gemma layer, shared by the prefix (PaliGemma) and the action expert (spec 1.4-1.5)
//   pi0.cc     - the prefix pass, the KV cache and the flow-matching loop (spec 3-4)
// A Plan holds every buffer of one call shape; nothing is allocated while a call runs, so a
// backend can capture the whole call once (CUDA graphs) and replay it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "ops/ops.h"

namespace pirt {

constexpr float kNormEps = 1e-6f;

// Which prefix tokens one sample keeps, and where each sits (spec 3.1-3.3).
struct PrefixLayout {
  std::vector<int> cameras;       // camera indices whose 256 tokens are in the prefix, in order
  std::vector<int> text;          // indices into tokenized_prompt of the text tokens kept
  std::vector<int32_t> positions; // RoPE positions: cumsum(pad mask) - 1
  std::vector<int32_t> q_block, k_block;  // the block mask (AttentionMask)
  int n_valid = 0;                // valid prefix tokens: where the suffix positions start
  int size() const { return static_cast<int>(positions.size()); }
};

// Buffers of one trunk's layer (Gemma or SigLIP) for T tokens.
struct LayerActs {
  Tensor xn, qkv, q, k, v, attn, y, gu, mlp;  // k, v: SigLIP only (Gemma writes K/V to its cache)
  Tensor q_part, k_part, v_part, qk_part, gate_part, up_part;  // only when projections are not fused
};

struct Plan {
  std::string key;
  int n_cams = 0, n_text = 0, prefix_len = 0, horizon = 0, suffix_len = 0, steps = 0;
  // Inputs, written before each call. Images come as F32 in [-1, 1] (images), or as uint8 (images_u8,
  // images_from_u8 set: the call converts them into images first; a separate graph).
  Tensor images, text_ids, prefix_pos, prefix_qb, prefix_kb;
  Tensor images_u8;
  bool images_from_u8 = false;
  Tensor state, x;  // F32 [1, action_dim], F32 [H, action_dim]: x holds the noise, then the actions
  Tensor suffix_pos, suffix_qb, suffix_kb;
  // SigLIP.
  Tensor vit_x;
  LayerActs vit;
  // The prefix: its hidden states and the per-layer KV cache, [prefix_len + suffix_len, Hkv*Dh]:
  // the prefix fills rows [0, P) once; each action step writes its own K/V after them.
  Tensor h;
  LayerActs pre;
  std::vector<Tensor> K, V;
  // The suffix.
  Tensor time_emb;  // F32 [steps, We]: posemb_sincos(t) of each step (pi0)
  Tensor time_bias; // F32 [steps, We]: pi0 with the folded action_time_mlp_in (weights.h): its bias a step
  Tensor mods;      // F32 [steps, 2*depth+1, 3*We]: adaRMS (scale|shift|gate) of each step (pi0.5)
  Tensor tok, a_emb, cat, u, hs, out_f32, v;
  LayerActs suf;
};

PrefixLayout make_prefix_layout(const ModelConfig& c, const bool* image_mask, const int32_t* ids,
                                const bool* token_mask, int len, bool drop_padding);
std::string plan_key(const PrefixLayout& layout, int horizon, int steps);
// Allocates every buffer for this shape and precomputes what depends only on the step count.
Plan make_plan(const ModelConfig& c, const Weights& w, Backend& be, const PrefixLayout& layout,
               int horizon, int steps, bool fuse);

// Issues the whole call on the backend, reading the plan's input buffers: SigLIP, the prefix,
// then `steps` Euler steps. The result is plan.x.
void sample_actions(const ModelConfig& c, const Weights& w, Backend& be, Plan& plan);

// The pieces, exposed for tests.
void siglip_forward(const ModelConfig& c, const Weights& w, Backend& be, Plan& p, const Tensor& out);
struct GemmaCall {
  const GemmaConfig* cfg;
  const GemmaLayerW* w;
  const LayerActs* a;
  Tensor h;                 // [T, D] residual stream, updated in place
  Tensor positions;         // I32 [T]
  Tensor K, V;              // the layer's cache [>= kv_begin + T, Hkv*Dh]
  int kv_begin = 0;         // where this call's keys go in the cache
  AttentionMask mask;       // [1, T] queries over [1, kv_begin + T] keys
  Tensor mod_attn, mod_ffn; // pi0.5 expert: adaRMS modulations [3D]
  bool kv_only = false;     // compute only what later layers read: this layer's K and V
  // RMSNorm chaining (layers without adaRMS): next_attn_norm, when set, makes this layer also leave
  // the next layer's pre-attention norm of h in a.xn (fused with the down projection on the GPU);
  // xn_ready says the previous layer did so for this one.
  Tensor next_attn_norm;
  bool xn_ready = false;
  // pi0.5 (adaRMS) with a block tail: the modulation of the norm after this layer (the next layer's
  // mod_attn, or the final norm's), in place of next_attn_norm.
  Tensor next_mod;
  // Block-tail chaining (the action expert with fused weights): `tail` runs everything after the
  // attention as Backend::gemma_block_tail, which also computes the next layer's q and K/V rows
  // (into a.q, next_K, next_V) when next_w is set; qkv_ready says the previous layer did so for this
  // one. Needs next_attn_norm (the next layer's pre-attention norm, or the final norm), or with
  // adaRMS (pi0.5) next_mod.
  bool tail = false;
  const GemmaLayerW* next_w = nullptr;
  Tensor next_K, next_V;
  bool qkv_ready = false;
};
void gemma_layer(Backend& be, const GemmaCall& call);
// posemb_sincos(t) of width `dim` (spec 4.2), in float64 then rounded to float32.
void time_embedding(float t, int dim, float* out);

}  // namespace pirt
