#include "model/weights.h"

#include <algorithm>
#include <vector>

namespace pirt {
namespace {

const std::string kVision = "paligemma_with_expert.paligemma.model.vision_tower.vision_model.";
const std::string kLlm = "paligemma_with_expert.paligemma.model.language_model.";
const std::string kExpert = "paligemma_with_expert.gemma_expert.model.";

struct Loader {
  Backend& be;
  const TensorSource& get;

  Tensor f32(const std::string& name) { return be.upload({get(name)}, DType::F32); }
  Tensor mat(const std::string& name) { return be.upload({get(name)}, be.matrix_dtype()); }
  Tensor mat_cat(const std::vector<std::string>& names) {
    std::vector<Tensor> parts;
    for (const auto& n : names) parts.push_back(get(n));
    return be.upload(parts, be.matrix_dtype());
  }
  // A big linear: weight and bias in the matrix dtype.
  LinearW linear(const std::string& prefix) { return {mat(prefix + ".weight"), mat(prefix + ".bias")}; }
  // A small fp32-island linear.
  LinearW linear_f32(const std::string& prefix) { return {f32(prefix + ".weight"), f32(prefix + ".bias")}; }
};

// pi0's action_in_proj folded into action_time_mlp_in (weights.h), in double on the host.
void fold_action_time(Backend& be, const TensorSource& get, Weights& w) {
  const Tensor &wa = get("action_in_proj.weight"), &ba = get("action_in_proj.bias");
  const Tensor &wi = get("action_time_mlp_in.weight"), &bi = get("action_time_mlp_in.bias");
  PIRT_CHECK(wa.shape.rank() == 2 && wi.shape.rank() == 2 && wi.dim(1) == 2 * wa.dim(0) && wi.dim(0) == wa.dim(0) &&
                 ba.numel() == wa.dim(0) && bi.numel() == wi.dim(0),
             "action_in_proj.weight %s and action_time_mlp_in.weight %s do not fit together",
             wa.shape.str().c_str(), wi.shape.str().c_str());
  const int64_t W = wa.dim(0), A = wa.dim(1);
  std::vector<double> a(W * A), b_a(W), acc(A);
  for (int64_t i = 0; i < W * A; ++i) a[i] = load_f32(wa, i);
  for (int64_t k = 0; k < W; ++k) b_a[k] = load_f32(ba, k);
  HostTensor fold(DType::F32, {W, A}), bias(DType::F32, {W}), wt(DType::F32, {W, W});
  for (int64_t i = 0; i < W; ++i) {
    std::fill(acc.begin(), acc.end(), 0.0);
    double b = load_f32(bi, i);
    for (int64_t k = 0; k < W; ++k) {
      const double x = load_f32(wi, i * 2 * W + k);
      for (int64_t j = 0; j < A; ++j) acc[j] += x * a[k * A + j];
      b += x * b_a[k];
      wt.ptr<float>()[i * W + k] = load_f32(wi, i * 2 * W + W + k);
    }
    for (int64_t j = 0; j < A; ++j) fold.ptr<float>()[i * A + j] = static_cast<float>(acc[j]);
    bias.ptr<float>()[i] = static_cast<float>(b);
  }
  w.action_time_fold = {be.upload({fold.view()}, DType::F32), be.upload({bias.view()}, DType::F32)};
  w.action_time_t = be.upload({wt.view()}, DType::F32);
}

GemmaLayerW load_gemma_layer(Loader& ld, const std::string& p, bool adarms, bool fuse) {
  GemmaLayerW l;
  if (adarms) {
    l.attn_norm_mod = ld.linear_f32(p + "input_layernorm.dense");
    l.ffn_norm_mod = ld.linear_f32(p + "post_attention_layernorm.dense");
  } else {
    l.attn_norm = ld.f32(p + "input_layernorm.weight");
    l.ffn_norm = ld.f32(p + "post_attention_layernorm.weight");
  }
  const std::string a = p + "self_attn.", m = p + "mlp.";
  if (fuse) {
    l.qkv = ld.mat_cat({a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"});
    l.gate_up = ld.mat_cat({m + "gate_proj.weight", m + "up_proj.weight"});
  } else {
    l.q = ld.mat(a + "q_proj.weight");
    l.k = ld.mat(a + "k_proj.weight");
    l.v = ld.mat(a + "v_proj.weight");
    l.gate = ld.mat(m + "gate_proj.weight");
    l.up = ld.mat(m + "up_proj.weight");
  }
  l.o = ld.mat(a + "o_proj.weight");
  l.down = ld.mat(m + "down_proj.weight");
  return l;
}

}  // namespace

Weights load_weights(const ModelConfig& c, Backend& backend, const TensorSource& get, bool fuse) {
  Loader ld{backend, get};
  Weights w;
  // SigLIP: patch conv and position embedding run in fp32 (spec 1.3).
  w.patch_w = ld.f32(kVision + "embeddings.patch_embedding.weight");
  w.patch_b = ld.f32(kVision + "embeddings.patch_embedding.bias");
  w.pos_emb = ld.f32(kVision + "embeddings.position_embedding.weight");
  for (int i = 0; i < c.vision.depth; ++i) {
    const std::string p = kVision + "encoder.layers." + std::to_string(i) + ".";
    SiglipLayerW l;
    l.ln1_w = ld.f32(p + "layer_norm1.weight");
    l.ln1_b = ld.f32(p + "layer_norm1.bias");
    l.ln2_w = ld.f32(p + "layer_norm2.weight");
    l.ln2_b = ld.f32(p + "layer_norm2.bias");
    const std::string a = p + "self_attn.";
    if (fuse) {
      l.qkv.w = ld.mat_cat({a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"});
      l.qkv.b = ld.mat_cat({a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"});
    } else {
      l.q = ld.linear(a + "q_proj");
      l.k = ld.linear(a + "k_proj");
      l.v = ld.linear(a + "v_proj");
    }
    l.out = ld.linear(a + "out_proj");
    l.fc1 = ld.linear(p + "mlp.fc1");
    l.fc2 = ld.linear(p + "mlp.fc2");
    w.vit.push_back(l);
  }
  w.post_ln_w = ld.f32(kVision + "post_layernorm.weight");
  w.post_ln_b = ld.f32(kVision + "post_layernorm.bias");
  w.projector = ld.linear("paligemma_with_expert.paligemma.model.multi_modal_projector.linear");

  w.embedding = ld.mat("paligemma_with_expert.paligemma.lm_head.weight");
  for (int i = 0; i < c.llm.depth; ++i)
    w.llm.push_back(load_gemma_layer(ld, kLlm + "layers." + std::to_string(i) + ".", false, fuse));
  for (int i = 0; i < c.expert.depth; ++i)
    w.expert.push_back(load_gemma_layer(ld, kExpert + "layers." + std::to_string(i) + ".", c.pi05(), fuse));
  if (c.pi05())
    w.expert_norm_mod = ld.linear_f32(kExpert + "norm.dense");
  else
    w.expert_norm = ld.f32(kExpert + "norm.weight");

  w.action_out = ld.linear_f32("action_out_proj");
  if (c.pi05()) {
    w.action_in = ld.linear_f32("action_in_proj");
    w.time_in = ld.linear_f32("time_mlp_in");
    w.time_out = ld.linear_f32("time_mlp_out");
  } else {
    w.state_proj = ld.linear_f32("state_proj");
    w.action_time_out = ld.linear_f32("action_time_mlp_out");
    if (fuse) {
      fold_action_time(ld.be, ld.get, w);
    } else {
      w.action_in = ld.linear_f32("action_in_proj");
      w.action_time_in = ld.linear_f32("action_time_mlp_in");
    }
  }
  return w;
}

}  // namespace pirt
