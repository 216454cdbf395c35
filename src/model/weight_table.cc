#include "model/weight_table.h"

namespace pirt {

namespace {

using K = WeightKind;

class TableBuilder {
 public:
  void add(std::string name, Shape shape, WeightKind kind) {
    specs_.push_back(WeightSpec{std::move(name), shape, true, kind});
  }
  // A linear layer: weight [out, in] (PyTorch order) and, if it has one, bias [out].
  void linear(const std::string& name, int64_t out, int64_t in, bool bias) {
    add(name + ".weight", {out, in}, K::Linear);
    if (bias) add(name + ".bias", {out}, K::Bias);
  }
  std::vector<WeightSpec> take() { return std::move(specs_); }

 private:
  std::vector<WeightSpec> specs_;
};

// SigLIP (HF SiglipVisionTransformer names; spec 1.3 and 6.2).
void add_vision(TableBuilder& t, const VisionConfig& v) {
  const std::string V = kVisionPrefix;
  const int64_t W = v.width;
  t.add(V + "embeddings.patch_embedding.weight", {W, 3, v.patch, v.patch}, K::Linear);
  t.add(V + "embeddings.patch_embedding.bias", {W}, K::Bias);
  t.add(V + "embeddings.position_embedding.weight", {v.tokens(), W}, K::PosEmbedding);
  for (int i = 0; i < v.depth; ++i) {
    const std::string L = V + "encoder.layers." + std::to_string(i) + ".";
    t.add(L + "layer_norm1.weight", {W}, K::LayerNormW);
    t.add(L + "layer_norm1.bias", {W}, K::LayerNormB);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"})
      t.linear(L + "self_attn." + proj, W, W, /*bias=*/true);
    t.add(L + "layer_norm2.weight", {W}, K::LayerNormW);
    t.add(L + "layer_norm2.bias", {W}, K::LayerNormB);
    t.linear(L + "mlp.fc1", v.mlp, W, true);
    t.linear(L + "mlp.fc2", W, v.mlp, true);
  }
  t.add(V + "post_layernorm.weight", {W}, K::LayerNormW);
  t.add(V + "post_layernorm.bias", {W}, K::LayerNormB);
}

// One Gemma RMSNorm: a plain offset weight, or (adaRMS, pi0.5 expert) a Dense W -> 3W.
void add_norm(TableBuilder& t, const std::string& name, int64_t W, bool adarms) {
  if (adarms) {
    t.add(name + ".dense.weight", {3 * W, W}, K::AdaRmsW);
    t.add(name + ".dense.bias", {3 * W}, K::AdaRmsB);
  } else {
    t.add(name + ".weight", {W}, K::RmsNorm);
  }
}

// A Gemma trunk (HF GemmaModel names, no biases anywhere; spec 1.4).
void add_gemma(TableBuilder& t, const std::string& prefix, const GemmaConfig& g, bool adarms) {
  const int64_t W = g.width;
  for (int i = 0; i < g.depth; ++i) {
    const std::string L = prefix + "layers." + std::to_string(i) + ".";
    t.linear(L + "self_attn.q_proj", g.q_width(), W, false);
    t.linear(L + "self_attn.k_proj", g.kv_width(), W, false);
    t.linear(L + "self_attn.v_proj", g.kv_width(), W, false);
    t.linear(L + "self_attn.o_proj", W, g.q_width(), false);
    t.linear(L + "mlp.gate_proj", g.mlp, W, false);
    t.linear(L + "mlp.up_proj", g.mlp, W, false);
    t.linear(L + "mlp.down_proj", W, g.mlp, false);
    add_norm(t, L + "input_layernorm", W, adarms);
    add_norm(t, L + "post_attention_layernorm", W, adarms);
  }
  add_norm(t, prefix + "norm", W, adarms);
}

}  // namespace

std::vector<WeightSpec> weight_table(const ModelConfig& c) {
  TableBuilder t;
  add_vision(t, c.vision);
  t.linear(std::string(kProjectorPrefix) + "linear", c.llm.width, c.vision.width, true);
  t.add(kEmbedName, {c.llm.vocab, c.llm.width}, K::Embedding);
  add_gemma(t, kLlmPrefix, c.llm, /*adarms=*/false);
  add_gemma(t, kExpertPrefix, c.expert, /*adarms=*/c.pi05());

  // pi0_pytorch.py: the small projections around the expert.
  const int64_t E = c.expert.width, A = c.action_dim;
  t.linear("action_in_proj", E, A, true);
  t.linear("action_out_proj", A, E, true);
  if (c.pi05()) {
    t.linear("time_mlp_in", E, E, true);
    t.linear("time_mlp_out", E, E, true);
  } else {
    t.linear("state_proj", E, A, true);
    // Input is concat([action_emb, time_emb]): columns [0, E) see the action, [E, 2E) the time.
    t.linear("action_time_mlp_in", E, 2 * E, true);
    t.linear("action_time_mlp_out", E, E, true);
  }
  return t.take();
}

WeightSummary weight_summary(const ModelConfig& c) {
  WeightSummary s;
  for (const WeightSpec& w : weight_table(c)) {
    ++s.tensors;
    s.params += w.shape.numel();
  }
  return s;
}

const char* weight_kind_name(WeightKind k) {
  switch (k) {
    case K::Linear: return "linear";
    case K::Bias: return "bias";
    case K::RmsNorm: return "rmsnorm";
    case K::LayerNormW: return "layernorm.weight";
    case K::LayerNormB: return "layernorm.bias";
    case K::Embedding: return "embedding";
    case K::PosEmbedding: return "position_embedding";
    case K::AdaRmsW: return "adarms.weight";
    case K::AdaRmsB: return "adarms.bias";
  }
  return "?";
}

}  // namespace pirt
