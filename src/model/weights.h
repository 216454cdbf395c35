// The model's weights as backend tensors, named after openpi's modules. Loaded once from a
// checkpoint (or random weights); fused Q|K|V and gate|up are packed here, at load.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "ops/ops.h"

namespace pirt {

struct LinearW {
  Tensor w;  // [out, in] (PyTorch layout)
  Tensor b;  // [out] or empty
};

struct SiglipLayerW {
  Tensor ln1_w, ln1_b, ln2_w, ln2_b;
  LinearW qkv;        // fused [3W, W] with bias [3W]; empty when not fused
  LinearW q, k, v;    // when not fused
  LinearW out, fc1, fc2;
};

struct GemmaLayerW {
  Tensor attn_norm, ffn_norm;             // RMSNorm (1+w) weights [D]; pi0.5 expert: empty
  LinearW attn_norm_mod, ffn_norm_mod;    // pi0.5 expert: adaRMS Dense [3D, D] + bias
  Tensor qkv;                             // fused [(H + 2 Hkv) Dh, D]; empty when not fused
  Tensor q, k, v;                         // when not fused
  Tensor o;                               // [D, H Dh]
  Tensor gate_up;                         // fused [2F, D]; empty when not fused
  Tensor gate, up;                        // when not fused
  Tensor down;                            // [D, F]
};

struct Weights {
  // SigLIP (PaliGemma vision tower) and the multimodal projector.
  Tensor patch_w, patch_b, pos_emb;
  std::vector<SiglipLayerW> vit;
  Tensor post_ln_w, post_ln_b;
  LinearW projector;
  // Gemma 2B (the prefix) and the action expert (the suffix).
  Tensor embedding;  // [vocab, D]
  std::vector<GemmaLayerW> llm, expert;
  Tensor expert_norm;      // pi0: final RMSNorm weight
  LinearW expert_norm_mod; // pi0.5: final adaRMS Dense
  // The small projections around the expert (fp32 islands, spec section 5).
  LinearW action_in, action_out;
  LinearW state_proj, action_time_in, action_time_out;  // pi0
  // pi0 with fused projections: action_time_mlp_in applied to [action_in_proj(x) | time_emb] is
  // x . (Win_a Wa)^T + (Win_t time_emb + Win_a ba + b_in), so action_in_proj folds into it (computed
  // in double at load): action_time_fold = {Win_a Wa [W, action_dim], Win_a ba + b_in}, and
  // action_time_t = Win_t [W, W], the time half, applied once per step at plan time. action_in and
  // action_time_in stay empty then.
  LinearW action_time_fold;
  Tensor action_time_t;
  LinearW time_in, time_out;                            // pi0.5
};

// Looks up a host tensor by its openpi PyTorch name (throws when absent).
using TensorSource = std::function<const Tensor&(const std::string& name)>;

// Uploads every weight to the backend: big matrices in backend.matrix_dtype(), norms, biases of
// the fp32 islands and the patch embedding in F32 (where openpi's PyTorch model keeps them).
Weights load_weights(const ModelConfig& c, Backend& backend, const TensorSource& get, bool fuse);

}  // namespace pirt
